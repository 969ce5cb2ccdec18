// Sealing: the master key, sealed blobs and wrapped imports.
//
// A sealed key is `version (1) || purpose (1) || spec (1) || nonce (12) ||
// AES-256-GCM(PKCS#8 DER) || tag (16)` under the master key, with
// `"keycell.seal.v1" || purpose || spec || id (32)` as associated data, so a
// blob opens only for the id, purpose and spec it was sealed for.

#include <string.h>

#include <openssl/aead.h>
#include <openssl/aes.h>
#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "kc.h"

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
    return KC_BAD_REQUEST;
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
    int got = kcc_parse_key(der, der_len, KC_FORM_PKCS8, &key);
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
      int spec = kcc_parse_key(der, der_len, KC_FORM_PKCS8, &key);
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
