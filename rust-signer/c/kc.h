// What the C files share with each other and with the Rust side. The codes
// mirror rust-signer/src/codes.rs (and, for statuses and key specs, the
// host's src/guest/protocol.ts); test/guest_codes_test.ts checks they agree.

#ifndef KC_H
#define KC_H

#include <stddef.h>
#include <stdint.h>

// Statuses, negated as the ABI returns them (Status in codes.rs).
enum kc_status {
  KC_BAD_REQUEST = -1,
  KC_KEY_NOT_FOUND = -2,
  KC_BAD_KEY = -3,
  KC_WRONG_KEY_TYPE = -4,
  KC_BAD_DIGEST_LENGTH = -5,
  KC_CRYPTO_FAILURE = -6,
  KC_NO_SPACE = -7,
  KC_SEAL_INVALID = -8,
  KC_NO_MASTER_KEY = -9,
  KC_BAD_WRAPPED = -10,
};

// Key specs (KeySpec in codes.rs).
enum kc_key_spec {
  KC_SPEC_RSA_2048 = 1,
  KC_SPEC_RSA_3072 = 2,
  KC_SPEC_RSA_4096 = 3,
  KC_SPEC_ECC_NIST_P256 = 4,
  KC_SPEC_ECC_NIST_P384 = 5,
};

// Hash functions: indexes into the EVP_MD table in sign.c (Hash in codes.rs).
enum kc_hash {
  KC_HASH_SHA1 = 1,
  KC_HASH_SHA224 = 2,
  KC_HASH_SHA256 = 3,
  KC_HASH_SHA384 = 4,
  KC_HASH_SHA512 = 5,
  KC_HASH_MD5_SHA1 = 6,
};

// Signature schemes (Scheme in codes.rs).
enum kc_scheme {
  KC_SCHEME_PKCS1 = 1,
  KC_SCHEME_PSS = 2,
  KC_SCHEME_ECDSA = 3,
};

// DER forms of a private key (Form in codes.rs); ANY tries each.
enum kc_form {
  KC_FORM_ANY = 0,
  KC_FORM_PKCS8 = 1,
  KC_FORM_PKCS1 = 2,
  KC_FORM_SEC1 = 3,
};

// What a sealed blob is for (Purpose in codes.rs).
enum kc_purpose {
  KC_PURPOSE_SIGNING = 1,
  KC_PURPOSE_WRAPPING = 2,
};

// keys.c, also used by seal.c to parse what it opens or unwraps.
int kcc_parse_key(const uint8_t *der, size_t len, int form, void **out);
void kcc_free_key(void *key);

#endif
