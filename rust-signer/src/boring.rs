//! The C side (c/*.c, declared in c/kc.h), where BoringSSL does every cryptographic operation.
//! Functions answer a non-negative result or a negated `Status`; keys cross
//! as opaque `EVP_PKEY` handles, which `Key` owns.

use crate::codes::{KeySpec, Status};
use core::ffi::c_void;
use core::ptr::{self, NonNull};

extern "C" {
    pub(crate) fn kcc_parse_key(der: *const u8, len: usize, form: i32, out: *mut *mut c_void) -> i32;
    pub(crate) fn kcc_generate(spec: i32, out: *mut *mut c_void) -> i32;
    fn kcc_free_key(key: *mut c_void);
    pub(crate) fn kcc_spki(key: *const c_void, out: *mut u8, cap: usize) -> i32;
    pub(crate) fn kcc_hash_len(h: i32) -> i32;
    pub(crate) fn kcc_hash_begin(h: i32) -> i32;
    pub(crate) fn kcc_hash_update(p: *const u8, n: usize);
    pub(crate) fn kcc_hash_end(out: *mut u8) -> i32;
    pub(crate) fn kcc_sha256(p: *const u8, n: usize, out: *mut u8) -> i32;
    pub(crate) fn kcc_sign(
        key: *const c_void,
        scheme: i32,
        h: i32,
        digest: *const u8,
        digest_len: usize,
        rs_form: i32,
        out: *mut u8,
        cap: usize,
    ) -> i32;

    pub(crate) fn kcc_verify(
        spki: *const u8,
        spki_len: usize,
        scheme: i32,
        h: i32,
        digest: *const u8,
        digest_len: usize,
        rs_form: i32,
        sig: *const u8,
        sig_len: usize,
    ) -> i32;

    pub(crate) fn kcc_wipe_stack();

    pub(crate) fn kcc_master_new(key_out: *mut u8, id_out: *mut u8) -> i32;
    pub(crate) fn kcc_master_set(key: *const u8, id_out: *mut u8) -> i32;
    pub(crate) fn kcc_master_set_previous(key: *const u8, id_out: *mut u8) -> i32;
    pub(crate) fn kcc_seal(key: *const c_void, purpose: i32, spec: i32, id: *const u8, out: *mut u8, cap: usize)
        -> i32;
    pub(crate) fn kcc_unseal(blob: *const u8, len: usize, purpose: i32, id: *const u8, out: *mut *mut c_void) -> i32;
    pub(crate) fn kcc_unwrap(wrapping_key: *const c_void, wrapped: *const u8, len: usize, out: *mut *mut c_void)
        -> i32;
}

/// A BoringSSL key the guest owns. Dropping it frees the key through
/// EVP_PKEY_free, which ends in OPENSSL_free, which cleanses every block.
pub(crate) struct Key(NonNull<c_void>);

impl Key {
    /// Calls a C function that makes a key, answering its spec through the
    /// return value and the key through `out`. A failure's status passes
    /// through; `otherwise` is answered for the impossible rest (no key, or a
    /// spec the guest does not know, in which case the key is freed).
    pub(crate) fn make(otherwise: Status, f: impl FnOnce(*mut *mut c_void) -> i32) -> Result<(KeySpec, Key), i32> {
        let mut raw: *mut c_void = ptr::null_mut();
        let r = f(&mut raw);
        if r < 0 {
            return Err(r);
        }
        let key = NonNull::new(raw).map(Key).ok_or(otherwise.code())?;
        let spec = KeySpec::from_c(r).ok_or(otherwise.code())?;
        Ok((spec, key))
    }

    pub(crate) fn as_ptr(&self) -> *const c_void {
        self.0.as_ptr()
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        unsafe { kcc_free_key(self.0.as_ptr()) };
    }
}
