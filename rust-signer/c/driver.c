// The C side of the guest: every cryptographic operation goes through
// BoringSSL here, so the Rust side never touches key material except as
// opaque handles and DER bytes it zeroes itself.

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/md5.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

// Error codes shared with the ABI (rust-signer/ABI.md).
#define KC_BAD_KEY (-3)
#define KC_WRONG_KEY_TYPE (-4)
#define KC_BAD_DIGEST_LENGTH (-5)
#define KC_CRYPTO_FAILURE (-6)
#define KC_NO_SPACE (-7)

// Key specs, as in the ABI.
#define SPEC_RSA_2048 1
#define SPEC_RSA_3072 2
#define SPEC_RSA_4096 3
#define SPEC_P256 4
#define SPEC_P384 5

// Hash identifiers shared with lib.rs.
#define H_SHA1 1
#define H_SHA224 2
#define H_SHA256 3
#define H_SHA384 4
#define H_SHA512 5
#define H_MD5_SHA1 6

// Signature schemes shared with lib.rs.
#define S_PKCS1 1
#define S_PSS 2
#define S_ECDSA 3

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

// Spec of a key, or KC_BAD_KEY for anything outside the supported set.
static int key_spec(const EVP_PKEY *pkey) {
  switch (EVP_PKEY_id(pkey)) {
    case EVP_PKEY_RSA: {
      const RSA *rsa = EVP_PKEY_get0_RSA(pkey);
      switch (RSA_bits(rsa)) {
        case 2048:
          return SPEC_RSA_2048;
        case 3072:
          return SPEC_RSA_3072;
        case 4096:
          return SPEC_RSA_4096;
      }
      return KC_BAD_KEY;
    }
    case EVP_PKEY_EC: {
      const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
      switch (EC_GROUP_get_curve_name(EC_KEY_get0_group(ec))) {
        case NID_X9_62_prime256v1:
          return SPEC_P256;
        case NID_secp384r1:
          return SPEC_P384;
      }
      return KC_BAD_KEY;
    }
  }
  return KC_BAD_KEY;
}

static EVP_PKEY *parse_form(const uint8_t *der, size_t len, int form) {
  CBS cbs;
  CBS_init(&cbs, der, len);
  EVP_PKEY *pkey = NULL;
  if (form == 1) {
    pkey = EVP_parse_private_key(&cbs);
  } else if (form == 2) {
    RSA *rsa = RSA_parse_private_key(&cbs);
    if (rsa != NULL) {
      pkey = EVP_PKEY_new();
      if (pkey == NULL || !EVP_PKEY_assign_RSA(pkey, rsa)) {
        EVP_PKEY_free(pkey);
        RSA_free(rsa);
        pkey = NULL;
      }
    }
  } else if (form == 3) {
    // A NULL group makes the parser insist on the curve being named inside
    // the key, which OpenSSL always writes.
    EC_KEY *ec = EC_KEY_parse_private_key(&cbs, NULL);
    if (ec != NULL) {
      pkey = EVP_PKEY_new();
      if (pkey == NULL || !EVP_PKEY_assign_EC_KEY(pkey, ec)) {
        EVP_PKEY_free(pkey);
        EC_KEY_free(ec);
        pkey = NULL;
      }
    }
  }
  if (pkey != NULL && CBS_len(&cbs) != 0) {
    EVP_PKEY_free(pkey);
    pkey = NULL;
  }
  return pkey;
}

// Parses a DER private key. form: 1 PKCS#8, 2 PKCS#1, 3 SEC1, 0 try each.
// Returns the spec (> 0) and sets *out, or a negative ABI code.
int kcc_parse_key(const uint8_t *der, size_t len, int form, void **out) {
  *out = NULL;
  EVP_PKEY *pkey = NULL;
  if (form == 0) {
    for (int f = 1; f <= 3 && pkey == NULL; f++) {
      pkey = parse_form(der, len, f);
    }
  } else {
    pkey = parse_form(der, len, form);
  }
  ERR_clear_error();
  if (pkey == NULL) {
    return KC_BAD_KEY;
  }
  int spec = key_spec(pkey);
  if (spec < 0) {
    EVP_PKEY_free(pkey);
    return spec;
  }
  *out = pkey;
  return spec;
}

int kcc_generate(int spec, void **out) {
  *out = NULL;
  EVP_PKEY *pkey = EVP_PKEY_new();
  if (pkey == NULL) {
    return KC_NO_SPACE;
  }
  int ok = 0;
  if (spec >= SPEC_RSA_2048 && spec <= SPEC_RSA_4096) {
    int bits = spec == SPEC_RSA_2048 ? 2048 : spec == SPEC_RSA_3072 ? 3072 : 4096;
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    if (rsa != NULL && e != NULL && BN_set_word(e, RSA_F4) &&
        RSA_generate_key_ex(rsa, bits, e, NULL) &&
        EVP_PKEY_assign_RSA(pkey, rsa)) {
      rsa = NULL;
      ok = 1;
    }
    RSA_free(rsa);
    BN_free(e);
  } else if (spec == SPEC_P256 || spec == SPEC_P384) {
    EC_KEY *ec = EC_KEY_new_by_curve_name(
        spec == SPEC_P256 ? NID_X9_62_prime256v1 : NID_secp384r1);
    if (ec != NULL && EC_KEY_generate_key(ec) &&
        EVP_PKEY_assign_EC_KEY(pkey, ec)) {
      ec = NULL;
      ok = 1;
    }
    EC_KEY_free(ec);
  }
  ERR_clear_error();
  if (!ok || key_spec(pkey) != spec) {
    EVP_PKEY_free(pkey);
    return KC_CRYPTO_FAILURE;
  }
  *out = pkey;
  return spec;
}

void kcc_free_key(void *key) { EVP_PKEY_free((EVP_PKEY *)key); }

// Writes the SubjectPublicKeyInfo into out; returns its length or a
// negative ABI code.
int kcc_spki(const void *key, uint8_t *out, size_t cap) {
  CBB cbb;
  if (!CBB_init_fixed(&cbb, out, cap)) {
    return KC_NO_SPACE;
  }
  size_t len;
  if (!EVP_marshal_public_key(&cbb, (const EVP_PKEY *)key) ||
      !CBB_finish(&cbb, NULL, &len)) {
    CBB_cleanup(&cbb);
    ERR_clear_error();
    return KC_CRYPTO_FAILURE;
  }
  return (int)len;
}

static union {
  SHA_CTX sha1;
  SHA256_CTX sha256;
  SHA512_CTX sha512;
  struct {
    MD5_CTX md5;
    SHA_CTX sha1;
  } md5_sha1;
} g_hash;
static int g_hash_id;

int kcc_hash_len(int h) {
  switch (h) {
    case H_SHA1:
      return SHA_DIGEST_LENGTH;
    case H_SHA224:
      return SHA224_DIGEST_LENGTH;
    case H_SHA256:
      return SHA256_DIGEST_LENGTH;
    case H_SHA384:
      return SHA384_DIGEST_LENGTH;
    case H_SHA512:
      return SHA512_DIGEST_LENGTH;
    case H_MD5_SHA1:
      return MD5_DIGEST_LENGTH + SHA_DIGEST_LENGTH;
  }
  return 0;
}

// Incremental hashing lets RAW messages stream in through the import
// without being buffered whole in guest memory.
void kcc_hash_begin(int h) {
  g_hash_id = h;
  switch (h) {
    case H_SHA1:
      SHA1_Init(&g_hash.sha1);
      break;
    case H_SHA224:
      SHA224_Init(&g_hash.sha256);
      break;
    case H_SHA256:
      SHA256_Init(&g_hash.sha256);
      break;
    case H_SHA384:
      SHA384_Init(&g_hash.sha512);
      break;
    case H_SHA512:
      SHA512_Init(&g_hash.sha512);
      break;
    case H_MD5_SHA1:
      MD5_Init(&g_hash.md5_sha1.md5);
      SHA1_Init(&g_hash.md5_sha1.sha1);
      break;
  }
}

void kcc_hash_update(const uint8_t *p, size_t n) {
  switch (g_hash_id) {
    case H_SHA1:
      SHA1_Update(&g_hash.sha1, p, n);
      break;
    case H_SHA224:
      SHA224_Update(&g_hash.sha256, p, n);
      break;
    case H_SHA256:
      SHA256_Update(&g_hash.sha256, p, n);
      break;
    case H_SHA384:
      SHA384_Update(&g_hash.sha512, p, n);
      break;
    case H_SHA512:
      SHA512_Update(&g_hash.sha512, p, n);
      break;
    case H_MD5_SHA1:
      MD5_Update(&g_hash.md5_sha1.md5, p, n);
      SHA1_Update(&g_hash.md5_sha1.sha1, p, n);
      break;
  }
}

// out must hold 64 bytes. Returns the digest length.
int kcc_hash_end(uint8_t *out) {
  switch (g_hash_id) {
    case H_SHA1:
      SHA1_Final(out, &g_hash.sha1);
      break;
    case H_SHA224:
      SHA224_Final(out, &g_hash.sha256);
      break;
    case H_SHA256:
      SHA256_Final(out, &g_hash.sha256);
      break;
    case H_SHA384:
      SHA384_Final(out, &g_hash.sha512);
      break;
    case H_SHA512:
      SHA512_Final(out, &g_hash.sha512);
      break;
    case H_MD5_SHA1:
      MD5_Final(out, &g_hash.md5_sha1.md5);
      SHA1_Final(out + MD5_DIGEST_LENGTH, &g_hash.md5_sha1.sha1);
      break;
    default:
      return 0;
  }
  int len = kcc_hash_len(g_hash_id);
  OPENSSL_cleanse(&g_hash, sizeof(g_hash));
  return len;
}

int kcc_sha256(const uint8_t *p, size_t n, uint8_t out[32]) {
  SHA256(p, n, out);
  return 32;
}

static int hash_nid(int h) {
  switch (h) {
    case H_SHA1:
      return NID_sha1;
    case H_SHA224:
      return NID_sha224;
    case H_SHA256:
      return NID_sha256;
    case H_SHA384:
      return NID_sha384;
    case H_SHA512:
      return NID_sha512;
    case H_MD5_SHA1:
      return NID_md5_sha1;
  }
  return NID_undef;
}

static const EVP_MD *hash_md(int h) {
  switch (h) {
    case H_SHA1:
      return EVP_sha1();
    case H_SHA224:
      return EVP_sha224();
    case H_SHA256:
      return EVP_sha256();
    case H_SHA384:
      return EVP_sha384();
    case H_SHA512:
      return EVP_sha512();
    case H_MD5_SHA1:
      return EVP_md5_sha1();
  }
  return NULL;
}

// Signs a digest. Returns the signature length or a negative ABI code.
// out must hold at least 512 bytes (RSA-4096; ECDSA P-384 DER is 104).
int kcc_sign(const void *key, int scheme, int h, const uint8_t *digest,
             size_t digest_len, int rs_form, uint8_t *out, size_t cap) {
  const EVP_PKEY *pkey = (const EVP_PKEY *)key;
  int id = EVP_PKEY_id(pkey);
  if ((scheme == S_ECDSA) != (id == EVP_PKEY_EC)) {
    return KC_WRONG_KEY_TYPE;
  }
  if ((int)digest_len != kcc_hash_len(h)) {
    return KC_BAD_DIGEST_LENGTH;
  }
  int ret = KC_CRYPTO_FAILURE;
  if (scheme == S_PKCS1) {
    RSA *rsa = EVP_PKEY_get0_RSA(pkey);
    unsigned out_len;
    if (RSA_size(rsa) <= cap &&
        RSA_sign(hash_nid(h), digest, (unsigned)digest_len, out, &out_len,
                 rsa)) {
      ret = (int)out_len;
    }
  } else if (scheme == S_PSS) {
    RSA *rsa = EVP_PKEY_get0_RSA(pkey);
    size_t out_len;
    // Salt length equal to the hash length, as the ABI (and JOSE/KMS) say.
    if (RSA_sign_pss_mgf1(rsa, &out_len, out, cap, digest, digest_len,
                          hash_md(h), NULL, (int)digest_len)) {
      ret = (int)out_len;
    }
  } else if (scheme == S_ECDSA) {
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
    if (rs_form) {
      size_t n = BN_num_bytes(EC_GROUP_get0_order(EC_KEY_get0_group(ec)));
      ECDSA_SIG *sig = ECDSA_do_sign(digest, digest_len, ec);
      if (sig != NULL && 2 * n <= cap &&
          BN_bn2bin_padded(out, n, sig->r) &&
          BN_bn2bin_padded(out + n, n, sig->s)) {
        ret = (int)(2 * n);
      }
      ECDSA_SIG_free(sig);
    } else {
      unsigned out_len;
      if (ECDSA_size(ec) <= cap &&
          ECDSA_sign(0, digest, digest_len, out, &out_len, ec)) {
        ret = (int)out_len;
      }
    }
  }
  ERR_clear_error();
  return ret;
}

// BoringSSL keeps bignum temporaries and key schedules in stack frames, and
// the shadow stack lives in linear memory. Called at the end of each export
// that touched a key, this overwrites the region those deeper frames used.
// 64 KiB is well past the deepest path (RSA-4096 keygen) and costs a few
// microseconds.
__attribute__((noinline)) void kcc_wipe_stack(void) {
  uint8_t buf[64 * 1024];
  explicit_bzero(buf, sizeof(buf));
}

// ---------------------------------------------------------------- sealing
//
// A sealed key is `version (1) || purpose (1) || spec (1) || nonce (12) ||
// AES-256-GCM(PKCS#8 DER) || tag (16)` under the master key, with
// `"keycell.seal.v1" || purpose || spec || id (32)` as associated data, so a
// blob opens only for the id, purpose and spec it was sealed for.

#include <openssl/aead.h>
#include <openssl/aes.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define KC_SEAL_INVALID (-8)
#define KC_NO_MASTER_KEY (-9)
#define KC_BAD_WRAPPED (-10)

#define SEAL_VERSION 1
#define SEAL_HEADER 15
#define SEAL_TAG 16
#define MASTER_KEY_BYTES 32

static uint8_t g_master[MASTER_KEY_BYTES];
static int g_has_master;
// The master key being rotated away from: it only opens blobs, never seals.
static uint8_t g_previous[MASTER_KEY_BYTES];
static int g_has_previous;

static const char kSealLabel[] = "keycell.seal.v1";
static const char kMasterIdLabel[] = "keycell.master-key-id.v1";

static void seal_aad(uint8_t aad[15 + 2 + 32], int purpose, int spec,
                     const uint8_t id[32]) {
  memcpy(aad, kSealLabel, 15);
  aad[15] = (uint8_t)purpose;
  aad[16] = (uint8_t)spec;
  memcpy(aad + 17, id, 32);
}

// A master key's public name: HMAC-SHA-256(master, label). Lets the host
// tell a wrong master key from a right one without the key leaving the guest.
static void master_id(const uint8_t master[32], uint8_t out[32]) {
  unsigned len = 32;
  HMAC(EVP_sha256(), master, MASTER_KEY_BYTES,
       (const uint8_t *)kMasterIdLabel, sizeof(kMasterIdLabel) - 1, out, &len);
}

// Generates a master key into the guest; copies it to out (for its one trip
// to the key file) and writes its id after it. Refuses when one is set.
int kcc_master_new(uint8_t key_out[32], uint8_t id_out[32]) {
  if (g_has_master) {
    return -1;
  }
  if (!RAND_bytes(g_master, MASTER_KEY_BYTES)) {
    return KC_CRYPTO_FAILURE;
  }
  g_has_master = 1;
  memcpy(key_out, g_master, MASTER_KEY_BYTES);
  master_id(g_master, id_out);
  return 0;
}

int kcc_master_set(const uint8_t key[32], uint8_t id_out[32]) {
  memcpy(g_master, key, MASTER_KEY_BYTES);
  g_has_master = 1;
  master_id(g_master, id_out);
  return 0;
}

// Sets the previous master key, which opens blobs when the master key does
// not (while they are resealed), and writes its id.
int kcc_master_set_previous(const uint8_t key[32], uint8_t id_out[32]) {
  memcpy(g_previous, key, MASTER_KEY_BYTES);
  g_has_previous = 1;
  master_id(g_previous, id_out);
  return 0;
}

// Seals a key; returns the blob's length or a negative ABI code.
int kcc_seal(const void *key, int purpose, int spec, const uint8_t id[32],
             uint8_t *out, size_t cap) {
  if (!g_has_master) {
    return KC_NO_MASTER_KEY;
  }
  CBB cbb;
  uint8_t *der = NULL;
  size_t der_len = 0;
  if (!CBB_init(&cbb, 2048)) {
    return KC_NO_SPACE;
  }
  if (!EVP_marshal_private_key(&cbb, (const EVP_PKEY *)key) ||
      !CBB_finish(&cbb, &der, &der_len)) {
    CBB_cleanup(&cbb);
    ERR_clear_error();
    return KC_CRYPTO_FAILURE;
  }
  int ret = KC_NO_SPACE;
  if (SEAL_HEADER + der_len + SEAL_TAG <= cap) {
    EVP_AEAD_CTX ctx;
    uint8_t aad[49];
    size_t sealed_len;
    out[0] = SEAL_VERSION;
    out[1] = (uint8_t)purpose;
    out[2] = (uint8_t)spec;
    seal_aad(aad, purpose, spec, id);
    ret = KC_CRYPTO_FAILURE;
    if (RAND_bytes(out + 3, 12) &&
        EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), g_master,
                          MASTER_KEY_BYTES, SEAL_TAG, NULL)) {
      if (EVP_AEAD_CTX_seal(&ctx, out + SEAL_HEADER, &sealed_len,
                            cap - SEAL_HEADER, out + 3, 12, der, der_len, aad,
                            sizeof(aad))) {
        ret = (int)(SEAL_HEADER + sealed_len);
      }
      EVP_AEAD_CTX_cleanup(&ctx);
    }
  }
  OPENSSL_cleanse(der, der_len);
  OPENSSL_free(der);
  ERR_clear_error();
  return ret;
}

// Opens a blob's ciphertext under one master key into der (cap bytes).
static int open_under(const uint8_t master[32], uint8_t *der, size_t *der_len,
                      size_t cap, const uint8_t *blob, const uint8_t aad[49]) {
  EVP_AEAD_CTX ctx;
  int ok = 0;
  if (EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), master, MASTER_KEY_BYTES,
                        SEAL_TAG, NULL)) {
    ok = EVP_AEAD_CTX_open(&ctx, der, der_len, cap, blob + 3, 12,
                           blob + SEAL_HEADER, cap, aad, 49);
    EVP_AEAD_CTX_cleanup(&ctx);
  }
  return ok;
}

// Opens a blob sealed for (id, purpose) and parses the key in it, under the
// master key or, failing that, the previous master key. Returns
// the spec and sets *out, or a negative ABI code: KC_SEAL_INVALID for a blob
// that is corrupt, truncated, sealed under another master key or for
// another id or purpose.
int kcc_unseal(const uint8_t *blob, size_t len, int purpose,
               const uint8_t id[32], void **out) {
  *out = NULL;
  if (!g_has_master) {
    return KC_NO_MASTER_KEY;
  }
  if (len < SEAL_HEADER + SEAL_TAG || blob[0] != SEAL_VERSION ||
      blob[1] != purpose) {
    return KC_SEAL_INVALID;
  }
  int spec = blob[2];
  size_t cap = len - SEAL_HEADER;
  uint8_t *der = OPENSSL_malloc(cap);
  if (der == NULL) {
    return KC_NO_SPACE;
  }
  uint8_t aad[49];
  size_t der_len = 0;
  int ret = KC_SEAL_INVALID;
  seal_aad(aad, purpose, spec, id);
  if (open_under(g_master, der, &der_len, cap, blob, aad) ||
      (g_has_previous &&
       open_under(g_previous, der, &der_len, cap, blob, aad))) {
    void *key = NULL;
    int got = kcc_parse_key(der, der_len, 1, &key);
    if (got == spec) {
      *out = key;
      ret = spec;
    } else {
      kcc_free_key(key);
    }
  }
  OPENSSL_cleanse(der, cap);
  OPENSSL_free(der);
  ERR_clear_error();
  return ret;
}

// RSA-4096 wrapping keys: the OAEP ciphertext is the first 512 bytes.
#define WRAP_RSA_BYTES 512

// Unwraps a key wrapped as Vault Transit BYOK does: RSA-OAEP-SHA-256 (MGF1
// SHA-256) over an ephemeral AES-256 key, then RFC 5649 AES key wrap with
// padding over the PKCS#8 DER. Returns the spec and sets *out, or
// KC_BAD_WRAPPED for anything that does not unwrap to a supported key.
int kcc_unwrap(const void *wrapping_key, const uint8_t *wrapped, size_t len,
               void **out) {
  *out = NULL;
  if (len <= WRAP_RSA_BYTES + 8 || len > WRAP_RSA_BYTES + 65536) {
    return KC_BAD_WRAPPED;
  }
  EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new((EVP_PKEY *)wrapping_key, NULL);
  if (pctx == NULL) {
    return KC_NO_SPACE;
  }
  uint8_t aes_key[WRAP_RSA_BYTES];
  size_t aes_len = sizeof(aes_key);
  int ret = KC_BAD_WRAPPED;
  size_t kw_len = len - WRAP_RSA_BYTES;
  uint8_t *der = OPENSSL_malloc(kw_len);
  size_t der_len = 0;
  if (der != NULL && EVP_PKEY_decrypt_init(pctx) &&
      EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) &&
      EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha256()) &&
      EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) &&
      EVP_PKEY_decrypt(pctx, aes_key, &aes_len, wrapped, WRAP_RSA_BYTES) &&
      aes_len == 32) {
    AES_KEY kek;
    if (AES_set_decrypt_key(aes_key, 256, &kek) == 0 &&
        AES_unwrap_key_padded(&kek, der, &der_len, kw_len,
                              wrapped + WRAP_RSA_BYTES, kw_len)) {
      void *key = NULL;
      int spec = kcc_parse_key(der, der_len, 1, &key);
      if (spec > 0) {
        *out = key;
        ret = spec;
      }
    }
    OPENSSL_cleanse(&kek, sizeof(kek));
  }
  OPENSSL_cleanse(aes_key, sizeof(aes_key));
  if (der != NULL) {
    OPENSSL_cleanse(der, kw_len);
    OPENSSL_free(der);
  }
  EVP_PKEY_CTX_free(pctx);
  ERR_clear_error();
  return ret;
}
