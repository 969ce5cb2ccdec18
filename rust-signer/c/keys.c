// Keys: parsing private keys in their three DER forms, generating them, and
// their public half. A key crosses to Rust as an opaque EVP_PKEY handle.

#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>

#include "kc.h"

// Spec of a key, or KC_BAD_KEY for anything outside the supported set.
static int key_spec(const EVP_PKEY *pkey) {
  switch (EVP_PKEY_id(pkey)) {
    case EVP_PKEY_RSA: {
      const RSA *rsa = EVP_PKEY_get0_RSA(pkey);
      switch (RSA_bits(rsa)) {
        case 2048:
          return KC_SPEC_RSA_2048;
        case 3072:
          return KC_SPEC_RSA_3072;
        case 4096:
          return KC_SPEC_RSA_4096;
      }
      return KC_BAD_KEY;
    }
    case EVP_PKEY_EC: {
      const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
      switch (EC_GROUP_get_curve_name(EC_KEY_get0_group(ec))) {
        case NID_X9_62_prime256v1:
          return KC_SPEC_ECC_NIST_P256;
        case NID_secp384r1:
          return KC_SPEC_ECC_NIST_P384;
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
  if (form == KC_FORM_PKCS8) {
    pkey = EVP_parse_private_key(&cbs);
  } else if (form == KC_FORM_PKCS1) {
    RSA *rsa = RSA_parse_private_key(&cbs);
    if (rsa != NULL) {
      pkey = EVP_PKEY_new();
      if (pkey == NULL || !EVP_PKEY_assign_RSA(pkey, rsa)) {
        EVP_PKEY_free(pkey);
        RSA_free(rsa);
        pkey = NULL;
      }
    }
  } else if (form == KC_FORM_SEC1) {
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

// Parses a DER private key in the given form, or trying each for KC_FORM_ANY.
// Returns the spec (> 0) and sets *out, or a negative ABI code.
int kcc_parse_key(const uint8_t *der, size_t len, int form, void **out) {
  *out = NULL;
  EVP_PKEY *pkey = NULL;
  if (form == KC_FORM_ANY) {
    for (int f = KC_FORM_PKCS8; f <= KC_FORM_SEC1 && pkey == NULL; f++) {
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
  if (spec >= KC_SPEC_RSA_2048 && spec <= KC_SPEC_RSA_4096) {
    int bits = spec == KC_SPEC_RSA_2048 ? 2048 : spec == KC_SPEC_RSA_3072 ? 3072 : 4096;
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
  } else if (spec == KC_SPEC_ECC_NIST_P256 || spec == KC_SPEC_ECC_NIST_P384) {
    EC_KEY *ec = EC_KEY_new_by_curve_name(
        spec == KC_SPEC_ECC_NIST_P256 ? NID_X9_62_prime256v1 : NID_secp384r1);
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
