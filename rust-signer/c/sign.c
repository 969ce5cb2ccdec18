// Hashing, signing and verifying. Every hash-dependent step (digest length,
// streaming hash, the NID for PKCS#1 v1.5, the MGF1 hash for PSS) reads the
// one EVP_MD table below, so a signature verifies under the same rules it was
// made by.

#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "kc.h"

// The hash function of a kc_hash, or NULL for a value that is not one.
static const EVP_MD *hash_md(int h) {
  static const EVP_MD *(*const kMds[])(void) = {
      [KC_HASH_SHA1] = EVP_sha1,     [KC_HASH_SHA224] = EVP_sha224,
      [KC_HASH_SHA256] = EVP_sha256, [KC_HASH_SHA384] = EVP_sha384,
      [KC_HASH_SHA512] = EVP_sha512, [KC_HASH_MD5_SHA1] = EVP_md5_sha1,
  };
  if (h < 0 || (size_t)h >= sizeof(kMds) / sizeof(kMds[0]) || kMds[h] == NULL) {
    return NULL;
  }
  return kMds[h]();
}

int kcc_hash_len(int h) {
  const EVP_MD *md = hash_md(h);
  return md == NULL ? 0 : (int)EVP_MD_size(md);
}

// Incremental hashing lets RAW messages stream in through the import
// without being buffered whole in guest memory. Zero-initialized, as
// EVP_MD_CTX_init leaves it.
static EVP_MD_CTX g_hash;
static int g_hash_started;

// Returns 0, or a negative ABI code.
int kcc_hash_begin(int h) {
  const EVP_MD *md = hash_md(h);
  g_hash_started = md != NULL && EVP_DigestInit_ex(&g_hash, md, NULL);
  ERR_clear_error();
  return g_hash_started ? 0 : KC_NO_SPACE;
}

void kcc_hash_update(const uint8_t *p, size_t n) {
  if (g_hash_started) {
    EVP_DigestUpdate(&g_hash, p, n);
  }
}

// out must hold EVP_MAX_MD_SIZE (64) bytes. Returns the digest length, or 0
// when no hash was begun.
int kcc_hash_end(uint8_t *out) {
  unsigned len = 0;
  if (g_hash_started) {
    EVP_DigestFinal_ex(&g_hash, out, &len);
  }
  g_hash_started = 0;
  EVP_MD_CTX_cleanup(&g_hash);
  return (int)len;
}

// The wide guest (built with OPENSSL_64_BIT: 64-bit limbs whose products are
// V8's experimental i64.mul_wide_u) verifies each ECDSA signature with the
// key's public point before it leaves, so a wrong product in the signing
// arithmetic answers KC_CRYPTO_FAILURE instead of a bad signature. RSA needs
// nothing here: BoringSSL's private transform already checks its result with
// the public exponent (rsa_impl.c, after Boneh, DeMillo and Lipton). The
// 32-bit guest compiles as before.
#if defined(OPENSSL_64_BIT)
#define KC_CHECK_ECDSA_SIG(d, n, sig, ec) ECDSA_do_verify(d, n, sig, ec)
#define KC_CHECK_ECDSA_DER(d, n, der, len, ec) ECDSA_verify(0, d, n, der, len, ec)
#else
#define KC_CHECK_ECDSA_SIG(d, n, sig, ec) 1
#define KC_CHECK_ECDSA_DER(d, n, der, len, ec) 1
#endif

int kcc_sha256(const uint8_t *p, size_t n, uint8_t out[32]) {
  SHA256(p, n, out);
  return SHA256_DIGEST_LENGTH;
}

// Signs a digest. Returns the signature length or a negative ABI code.
// out must hold at least 512 bytes (RSA-4096; ECDSA P-384 DER is 104).
// digest is read only when digest_len is the hash's length: any other length
// is KC_BAD_DIGEST_LENGTH, so a caller need not read a DIGEST of that length.
int kcc_sign(const void *key, int scheme, int h, const uint8_t *digest,
             size_t digest_len, int rs_form, uint8_t *out, size_t cap) {
  const EVP_PKEY *pkey = (const EVP_PKEY *)key;
  const EVP_MD *md = hash_md(h);
  if ((scheme == KC_SCHEME_ECDSA) != (EVP_PKEY_id(pkey) == EVP_PKEY_EC)) {
    return KC_WRONG_KEY_TYPE;
  }
  if (md == NULL || digest_len != EVP_MD_size(md)) {
    return KC_BAD_DIGEST_LENGTH;
  }
  int ret = KC_CRYPTO_FAILURE;
  if (scheme == KC_SCHEME_PKCS1) {
    RSA *rsa = EVP_PKEY_get0_RSA(pkey);
    unsigned out_len;
    if (RSA_size(rsa) <= cap &&
        RSA_sign(EVP_MD_type(md), digest, (unsigned)digest_len, out, &out_len,
                 rsa)) {
      ret = (int)out_len;
    }
  } else if (scheme == KC_SCHEME_PSS) {
    RSA *rsa = EVP_PKEY_get0_RSA(pkey);
    size_t out_len;
    // Salt length equal to the hash length, as the ABI (and JOSE/KMS) say.
    if (RSA_sign_pss_mgf1(rsa, &out_len, out, cap, digest, digest_len, md,
                          NULL, (int)digest_len)) {
      ret = (int)out_len;
    }
  } else if (scheme == KC_SCHEME_ECDSA) {
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
    if (rs_form) {
      size_t n = BN_num_bytes(EC_GROUP_get0_order(EC_KEY_get0_group(ec)));
      ECDSA_SIG *sig = ECDSA_do_sign(digest, digest_len, ec);
      if (sig != NULL && 2 * n <= cap &&
          KC_CHECK_ECDSA_SIG(digest, digest_len, sig, ec) &&
          BN_bn2bin_padded(out, n, sig->r) &&
          BN_bn2bin_padded(out + n, n, sig->s)) {
        ret = (int)(2 * n);
      }
      ECDSA_SIG_free(sig);
    } else {
      unsigned out_len;
      if (ECDSA_size(ec) <= cap &&
          ECDSA_sign(0, digest, digest_len, out, &out_len, ec) &&
          KC_CHECK_ECDSA_DER(digest, digest_len, out, out_len, ec)) {
        ret = (int)out_len;
      }
    }
  }
  ERR_clear_error();
  return ret;
}

// Whether a parsed public key is one kcc_verify takes: RSA whose signatures
// fit the 512 bytes the guest buffers (the largest it makes, RSA-4096), so
// that no valid signature is ever answered invalid for its length, or EC on
// one of the two curves the guest signs with.
static int verifiable_key(const EVP_PKEY *pkey) {
  switch (EVP_PKEY_id(pkey)) {
    case EVP_PKEY_RSA:
      return RSA_bits(EVP_PKEY_get0_RSA(pkey)) <= 4096;
    case EVP_PKEY_EC: {
      int nid = EC_GROUP_get_curve_name(
          EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(pkey)));
      return nid == NID_X9_62_prime256v1 || nid == NID_secp384r1;
    }
    default:
      return 0;
  }
}

// The fixed-width r || s form: each half is as wide as the group order, and
// ECDSA_do_verify rejects an r or s of 0 or not below the order.
static int ecdsa_verify_rs(const uint8_t *digest, size_t digest_len,
                           const uint8_t *sig, size_t sig_len,
                           const EC_KEY *ec) {
  size_t n = BN_num_bytes(EC_GROUP_get0_order(EC_KEY_get0_group(ec)));
  if (sig_len != 2 * n) {
    return 0;
  }
  ECDSA_SIG *s = ECDSA_SIG_new();
  int ok = s != NULL && BN_bin2bn(sig, n, s->r) != NULL &&
           BN_bin2bn(sig + n, n, s->s) != NULL &&
           ECDSA_do_verify(digest, digest_len, s, ec);
  ECDSA_SIG_free(s);
  return ok;
}

// Verifies a signature over a digest with a public key given as
// SubjectPublicKeyInfo DER (RSA up to 4096 bits, or EC on P-256 or P-384),
// under the rules kcc_sign signs by. spki, digest and sig stay the caller's
// and are only read; the key parsed from spki is freed before returning.
// digest is read only when digest_len is the hash's length, so a caller may
// pass the length of a DIGEST it left unread and get KC_BAD_DIGEST_LENGTH in
// its turn. Returns 1 (valid), 0 (invalid, including any malformed
// signature), or KC_BAD_KEY, KC_WRONG_KEY_TYPE, KC_BAD_DIGEST_LENGTH, checked
// in that order.
int kcc_verify(const uint8_t *spki, size_t spki_len, int scheme, int h,
               const uint8_t *digest, size_t digest_len, int rs_form,
               const uint8_t *sig, size_t sig_len) {
  const EVP_MD *md = hash_md(h);
  CBS cbs;
  CBS_init(&cbs, spki, spki_len);
  EVP_PKEY *pkey = EVP_parse_public_key(&cbs);
  int ret = 0;
  if (pkey == NULL || CBS_len(&cbs) != 0 || !verifiable_key(pkey)) {
    ret = KC_BAD_KEY;
  } else if ((scheme == KC_SCHEME_ECDSA) !=
             (EVP_PKEY_id(pkey) == EVP_PKEY_EC)) {
    ret = KC_WRONG_KEY_TYPE;
  } else if (md == NULL || digest_len != EVP_MD_size(md)) {
    ret = KC_BAD_DIGEST_LENGTH;
  } else if (scheme == KC_SCHEME_PKCS1) {
    ret = RSA_verify(EVP_MD_type(md), digest, digest_len, sig, sig_len,
                     EVP_PKEY_get0_RSA(pkey)) == 1;
  } else if (scheme == KC_SCHEME_PSS) {
    ret = RSA_verify_pss_mgf1(EVP_PKEY_get0_RSA(pkey), digest, digest_len, md,
                              NULL, (int)digest_len, sig, sig_len) == 1;
  } else if (scheme == KC_SCHEME_ECDSA) {
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
    ret = rs_form ? ecdsa_verify_rs(digest, digest_len, sig, sig_len, ec) != 0
                  : ECDSA_verify(0, digest, digest_len, sig, sig_len, ec) == 1;
  }
  EVP_PKEY_free(pkey);
  ERR_clear_error();
  return ret;
}
