// What BoringSSL expects of the platform, on a guest that has none: its
// entropy comes from the host through an import, its error text is
// formatted without stdio, and the stack it leaves behind is wiped.

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

__attribute__((import_module("keycell"), import_name("rand8")))
extern uint64_t keycell_rand8(void);

// BoringSSL built with __TRUSTY__ has no OS entropy source of its own; the
// host's CSPRNG is the only one, and it is pulled 8 bytes at a time so the
// host never writes into guest memory.
void CRYPTO_sysrand(uint8_t *out, size_t requested) {
  while (requested > 0) {
    uint64_t v = keycell_rand8();
    size_t n = requested < 8 ? requested : 8;
    for (size_t i = 0; i < n; i++) {
      out[i] = (uint8_t)(v >> (8 * i));
    }
    out += n;
    requested -= n;
    v = 0;
    __asm__ __volatile__("" : : "r"(&v) : "memory");
  }
}

void CRYPTO_sysrand_for_seed(uint8_t *out, size_t requested) {
  CRYPTO_sysrand(out, requested);
}

// wasi-libc's vsnprintf drags in stdio and with it fd_write/fd_seek/fd_close
// imports. BoringSSL only formats error-detail text, with integers and
// strings, so this subset replaces it.
static void put_ch(char *s, size_t n, size_t *pos, char c) {
  if (*pos + 1 < n) {
    s[*pos] = c;
  }
  (*pos)++;
}

int vsnprintf(char *restrict s, size_t n, const char *restrict fmt,
              va_list ap) {
  size_t pos = 0;
  for (const char *p = fmt; *p != '\0'; p++) {
    if (*p != '%') {
      put_ch(s, n, &pos, *p);
      continue;
    }
    p++;
    int zero = 0, width = 0, longs = 0, size_t_arg = 0;
    if (*p == '0') {
      zero = 1;
      p++;
    }
    while (*p >= '0' && *p <= '9') {
      width = width * 10 + (*p - '0');
      p++;
    }
    while (*p == 'l') {
      longs++;
      p++;
    }
    if (*p == 'z') {
      size_t_arg = 1;
      p++;
    }
    char c = *p;
    if (c == '\0') {
      break;
    }
    if (c == '%') {
      put_ch(s, n, &pos, '%');
    } else if (c == 'c') {
      put_ch(s, n, &pos, (char)va_arg(ap, int));
    } else if (c == 's') {
      const char *str = va_arg(ap, const char *);
      if (str == NULL) {
        str = "(null)";
      }
      for (; *str != '\0'; str++) {
        put_ch(s, n, &pos, *str);
      }
    } else if (c == 'd' || c == 'i' || c == 'u' || c == 'x' || c == 'X') {
      unsigned long long v;
      int neg = 0;
      if (c == 'd' || c == 'i') {
        long long sv = longs >= 2   ? va_arg(ap, long long)
                       : longs == 1 ? va_arg(ap, long)
                       : size_t_arg ? (long long)va_arg(ap, size_t)
                                    : va_arg(ap, int);
        neg = sv < 0;
        v = neg ? 0ull - (unsigned long long)sv : (unsigned long long)sv;
      } else {
        v = longs >= 2   ? va_arg(ap, unsigned long long)
            : longs == 1 ? va_arg(ap, unsigned long)
            : size_t_arg ? va_arg(ap, size_t)
                         : va_arg(ap, unsigned);
      }
      unsigned base = (c == 'x' || c == 'X') ? 16 : 10;
      const char *digits =
          c == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
      char buf[24];
      int len = 0;
      do {
        buf[len++] = digits[v % base];
        v /= base;
      } while (v != 0);
      if (neg) {
        if (zero) {
          put_ch(s, n, &pos, '-');
        } else {
          buf[len++] = '-';
        }
        width--;
      }
      for (int i = len; i < width; i++) {
        put_ch(s, n, &pos, zero ? '0' : ' ');
      }
      while (len > 0) {
        put_ch(s, n, &pos, buf[--len]);
      }
    } else {
      // Anything else (floats, pointers) is never used by the error paths
      // compiled in; print the conversion literally rather than guess.
      put_ch(s, n, &pos, '%');
      put_ch(s, n, &pos, c);
    }
  }
  if (n > 0) {
    s[pos < n ? pos : n - 1] = '\0';
  }
  return (int)pos;
}

// BoringSSL keeps bignum temporaries and key schedules in stack frames, and
// the shadow stack lives in linear memory. Called at the end of each export
// that touched a key, this overwrites the region those deeper frames used.
// 64 KiB is well past the deepest path (RSA-4096 keygen) and costs a few
// microseconds. It also keeps this file in the link: the Rust side calls it,
// so the definitions above win over wasi-libc's.
__attribute__((noinline)) void kcc_wipe_stack(void) {
  uint8_t buf[64 * 1024];
  explicit_bzero(buf, sizeof(buf));
}
