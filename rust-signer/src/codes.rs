//! The codes the guest shares with the host (ABI.md, "Codes") and with the C
//! side. Variants are spelled as the ABI names them, not in Rust's usual case,
//! so that one name reads the same in `src/guest/protocol.ts`, here and in
//! `c/kc.h`; `test/guest_codes_test.ts` reads all three and fails on drift.

/// Declares a `#[repr(u8)]` code enum and its checked conversion from the
/// byte, from a single list, so the two cannot disagree.
macro_rules! codes {
    ($(#[$doc:meta])* pub(crate) enum $name:ident { $($variant:ident = $code:literal,)* }) => {
        $(#[$doc])*
        #[repr(u8)]
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub(crate) enum $name {
            $($variant = $code,)*
        }

        impl $name {
            /// Every variant, in code order.
            #[allow(dead_code)]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The variant with this code, if there is one.
            #[allow(dead_code)]
            pub(crate) fn from_u8(code: u8) -> Option<$name> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// Why an export failed; it returns the code negated (ABI.md, error codes).
    pub(crate) enum Status {
        BAD_REQUEST = 1,
        KEY_NOT_FOUND = 2,
        BAD_KEY = 3,
        WRONG_KEY_TYPE = 4,
        BAD_DIGEST_LENGTH = 5,
        CRYPTO_FAILURE = 6,
        NO_SPACE = 7,
        SEAL_INVALID = 8,
        NO_MASTER_KEY = 9,
        BAD_WRAPPED = 10,
    }
}

impl Status {
    /// What an export returns for this status.
    pub(crate) const fn code(self) -> i32 {
        -(self as i32)
    }
}

codes! {
    /// Key specs, by AWS KMS name.
    pub(crate) enum KeySpec {
        RSA_2048 = 1,
        RSA_3072 = 2,
        RSA_4096 = 3,
        ECC_NIST_P256 = 4,
        ECC_NIST_P384 = 5,
    }
}

impl KeySpec {
    /// The spec a C function answered (a positive return value), if it is one.
    pub(crate) fn from_c(code: i32) -> Option<KeySpec> {
        u8::try_from(code).ok().and_then(KeySpec::from_u8)
    }

    pub(crate) fn is_ec(self) -> bool {
        matches!(self, KeySpec::ECC_NIST_P256 | KeySpec::ECC_NIST_P384)
    }
}

codes! {
    /// Signing algorithms, by AWS KMS name; the last six serve Keyless SSL only.
    pub(crate) enum Algorithm {
        RSASSA_PKCS1_V1_5_SHA_256 = 1,
        RSASSA_PKCS1_V1_5_SHA_384 = 2,
        RSASSA_PKCS1_V1_5_SHA_512 = 3,
        RSASSA_PSS_SHA_256 = 4,
        RSASSA_PSS_SHA_384 = 5,
        RSASSA_PSS_SHA_512 = 6,
        ECDSA_SHA_256 = 7,
        ECDSA_SHA_384 = 8,
        ECDSA_SHA_512 = 9,
        RSASSA_PKCS1_V1_5_SHA_1 = 10,
        RSASSA_PKCS1_V1_5_SHA_224 = 11,
        RSASSA_PKCS1_V1_5_MD5_SHA1 = 12,
        ECDSA_SHA_1 = 13,
        ECDSA_SHA_224 = 14,
        ECDSA_MD5_SHA1 = 15,
    }
}

codes! {
    /// Signature schemes, as `kcc_sign` takes them (`enum kc_scheme` in c/kc.h).
    pub(crate) enum Scheme {
        PKCS1 = 1,
        PSS = 2,
        ECDSA = 3,
    }
}

codes! {
    /// Hash functions, as the C side's EVP_MD table indexes them (`enum kc_hash`).
    pub(crate) enum Hash {
        SHA1 = 1,
        SHA224 = 2,
        SHA256 = 3,
        SHA384 = 4,
        SHA512 = 5,
        MD5_SHA1 = 6,
    }
}

impl Algorithm {
    pub(crate) fn scheme(self) -> Scheme {
        use Algorithm::*;
        match self {
            RSASSA_PKCS1_V1_5_SHA_256
            | RSASSA_PKCS1_V1_5_SHA_384
            | RSASSA_PKCS1_V1_5_SHA_512
            | RSASSA_PKCS1_V1_5_SHA_1
            | RSASSA_PKCS1_V1_5_SHA_224
            | RSASSA_PKCS1_V1_5_MD5_SHA1 => Scheme::PKCS1,
            RSASSA_PSS_SHA_256 | RSASSA_PSS_SHA_384 | RSASSA_PSS_SHA_512 => Scheme::PSS,
            ECDSA_SHA_256 | ECDSA_SHA_384 | ECDSA_SHA_512 | ECDSA_SHA_1 | ECDSA_SHA_224 | ECDSA_MD5_SHA1 => {
                Scheme::ECDSA
            }
        }
    }

    pub(crate) fn hash(self) -> Hash {
        use Algorithm::*;
        match self {
            RSASSA_PKCS1_V1_5_SHA_1 | ECDSA_SHA_1 => Hash::SHA1,
            RSASSA_PKCS1_V1_5_SHA_224 | ECDSA_SHA_224 => Hash::SHA224,
            RSASSA_PKCS1_V1_5_SHA_256 | RSASSA_PSS_SHA_256 | ECDSA_SHA_256 => Hash::SHA256,
            RSASSA_PKCS1_V1_5_SHA_384 | RSASSA_PSS_SHA_384 | ECDSA_SHA_384 => Hash::SHA384,
            RSASSA_PKCS1_V1_5_SHA_512 | RSASSA_PSS_SHA_512 | ECDSA_SHA_512 => Hash::SHA512,
            RSASSA_PKCS1_V1_5_MD5_SHA1 | ECDSA_MD5_SHA1 => Hash::MD5_SHA1,
        }
    }
}

codes! {
    /// DER forms of a private key, as `kcc_parse_key` takes them (`enum kc_form`).
    pub(crate) enum Form {
        ANY = 0,
        PKCS8 = 1,
        PKCS1 = 2,
        SEC1 = 3,
    }
}

codes! {
    /// What a sealed blob is for, bound into its associated data (`enum kc_purpose`).
    pub(crate) enum Purpose {
        SIGNING = 1,
        WRAPPING = 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_converts_back_to_its_variant() {
        for &s in Status::ALL {
            assert_eq!(Status::from_u8(s as u8), Some(s));
        }
        for &s in KeySpec::ALL {
            assert_eq!(KeySpec::from_c(s as i32), Some(s));
        }
        for &a in Algorithm::ALL {
            assert_eq!(Algorithm::from_u8(a as u8), Some(a));
        }
        assert_eq!(KeySpec::from_u8(0), None);
        assert_eq!(KeySpec::from_u8(6), None);
        assert_eq!(KeySpec::from_c(-3), None);
        assert_eq!(KeySpec::from_c(0x103), None);
        assert_eq!(Algorithm::from_u8(16), None);
        assert_eq!(Status::KEY_NOT_FOUND.code(), -2);
    }

    #[test]
    fn ecdsa_algorithms_and_only_they_need_an_ec_key() {
        for &a in Algorithm::ALL {
            let name = alloc::format!("{:?}", a);
            assert_eq!(a.scheme() == Scheme::ECDSA, name.starts_with("ECDSA_"), "{}", name);
            assert_eq!(a.scheme() == Scheme::PSS, name.starts_with("RSASSA_PSS_"), "{}", name);
        }
        assert!(KeySpec::ECC_NIST_P384.is_ec() && !KeySpec::RSA_4096.is_ec());
    }

    #[test]
    fn each_algorithm_hashes_with_the_hash_in_its_name() {
        let by_suffix = [
            ("_SHA_1", Hash::SHA1),
            ("_SHA_224", Hash::SHA224),
            ("_SHA_256", Hash::SHA256),
            ("_SHA_384", Hash::SHA384),
            ("_SHA_512", Hash::SHA512),
            ("_MD5_SHA1", Hash::MD5_SHA1),
        ];
        for &a in Algorithm::ALL {
            let name = alloc::format!("{:?}", a);
            let want = by_suffix.iter().find(|(s, _)| name.ends_with(s)).map(|&(_, h)| h);
            assert_eq!(Some(a.hash()), want, "{}", name);
        }
    }
}
