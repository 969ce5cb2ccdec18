//! Sealing: the master key (made, loaded, or kept as the previous one during
//! a rotation), opening sealed keys into the cache, resealing them under a
//! new master key, and wrapped imports (ABI.md, "Sealing and the key cache").

use crate::abi::{
    init, read_id, read_public, read_rest, read_secret_byte, request_len, respond, respond_bytewise, u64_at, StackWipe,
};
use crate::boring::{
    kcc_generate, kcc_master_new, kcc_master_set, kcc_master_set_previous, kcc_seal, kcc_unseal, kcc_unwrap, Key,
};
use crate::codes::{KeySpec, Purpose, Status};
use crate::keys::{answer_new_key, cache, identify, record, SEALED_CAP};
use crate::memory::wipe_raw;

/// Largest sealed blob or wrapped key accepted.
const MAX_BLOB: usize = 64 * 1024;

static mut HAS_MASTER: bool = false;

pub(crate) fn has_master() -> bool {
    unsafe { HAS_MASTER }
}

/// An RSA-4096 key for wrapped imports: sealed for the wrapping purpose
/// and handed out at once, never cached, so it can wrap but never sign.
pub(crate) fn generate_wrapping_key() -> i32 {
    if !has_master() {
        return Status::NO_MASTER_KEY.code();
    }
    let spec = KeySpec::RSA_4096;
    let key = match Key::make(Status::CRYPTO_FAILURE, |out| unsafe { kcc_generate(spec as i32, out) }) {
        Ok((_, key)) => key,
        Err(code) => return code,
    };
    let result = identify(&key).and_then(|(spki, id)| {
        let mut sealed = [0u8; SEALED_CAP];
        let n = unsafe {
            kcc_seal(
                key.as_ptr(),
                Purpose::WRAPPING as i32,
                spec as i32,
                id.as_ptr(),
                sealed.as_mut_ptr(),
                sealed.len(),
            )
        };
        if n < 0 {
            return Err(n);
        }
        Ok(respond(&[&[spec as u8], &id, &spki, &sealed[..n as usize]]))
    });
    result.unwrap_or_else(|code| code)
}

/// Request: `cache_bytes (u64 LE)`. Generates the master key inside the
/// guest and answers it (written byte by byte, for the host to store in
/// its key file) followed by its 32-byte id. Refused once a master key is set.
#[no_mangle]
pub extern "C" fn kc_master_new() -> i32 {
    init();
    let _wipe = StackWipe;
    if request_len() != 8 || has_master() {
        return Status::BAD_REQUEST.code();
    }
    let budget = u64_at(0);
    let mut key = [0u8; 32];
    let mut id = [0u8; 32];
    let r = unsafe { kcc_master_new(key.as_mut_ptr(), id.as_mut_ptr()) };
    if r < 0 {
        return r;
    }
    unsafe { HAS_MASTER = true };
    cache().set_budget(budget);
    let n = respond_bytewise(&[&key, &id]);
    unsafe { wipe_raw(key.as_mut_ptr(), key.len()) };
    n
}

/// Request: `cache_bytes (u64 LE) || master key (32)`, the key read with
/// in_read1 only. Answers the master key's id.
#[no_mangle]
pub extern "C" fn kc_master_load() -> i32 {
    init();
    let _wipe = StackWipe;
    if request_len() != 40 {
        return Status::BAD_REQUEST.code();
    }
    let budget = u64_at(0);
    let id = match with_master_key_at(8, kcc_master_set) {
        Some(id) => id,
        None => return Status::BAD_REQUEST.code(),
    };
    unsafe { HAS_MASTER = true };
    cache().set_budget(budget);
    respond(&[&id])
}

/// Reads a 32-byte master key from request offset `off` with in_read1 only,
/// hands it to `set` and wipes the copy; answers the key's id, or None for a
/// byte out of range.
fn with_master_key_at(off: usize, set: unsafe extern "C" fn(*const u8, *mut u8) -> i32) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    let mut ok = true;
    for (i, b) in key.iter_mut().enumerate() {
        let v = read_secret_byte(off + i);
        ok &= v.is_some();
        *b = v.unwrap_or(0);
    }
    let mut id = [0u8; 32];
    if ok {
        unsafe { set(key.as_ptr(), id.as_mut_ptr()) };
    }
    unsafe { wipe_raw(key.as_mut_ptr(), key.len()) };
    ok.then(|| id)
}

/// Request: `master key (32)`, read with in_read1 only: the master key that
/// blobs are being rotated away from. Blobs that the master key does not open
/// are then tried under it; it never seals. Answers its id. Needs a master
/// key.
#[no_mangle]
pub extern "C" fn kc_master_previous() -> i32 {
    init();
    let _wipe = StackWipe;
    if !has_master() {
        return Status::NO_MASTER_KEY.code();
    }
    if request_len() != 32 {
        return Status::BAD_REQUEST.code();
    }
    match with_master_key_at(0, kcc_master_set_previous) {
        Some(id) => respond(&[&id]),
        None => Status::BAD_REQUEST.code(),
    }
}

/// Request: `id (32) || sealed blob` (a signing or wrapping key's). Opens the
/// blob under the master key or the previous one and answers it sealed anew
/// under the master key, for the same id, purpose and spec. Caches nothing.
#[no_mangle]
pub extern "C" fn kc_reseal() -> i32 {
    init();
    let _wipe = StackWipe;
    if !has_master() {
        return Status::NO_MASTER_KEY.code();
    }
    let n = request_len();
    if n <= 34 || n - 32 > MAX_BLOB {
        return Status::BAD_REQUEST.code();
    }
    let id = read_id();
    let blob = match read_rest(32) {
        Some(b) => b,
        None => return Status::NO_SPACE.code(),
    };
    let purpose = match Purpose::from_u8(blob[1]) {
        Some(p) => p,
        None => return Status::SEAL_INVALID.code(),
    };
    let (spec, key) = match Key::make(Status::SEAL_INVALID, |out| unsafe {
        kcc_unseal(blob.as_ptr(), blob.len(), purpose as i32, id.as_ptr(), out)
    }) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut sealed = [0u8; SEALED_CAP];
    let n =
        unsafe { kcc_seal(key.as_ptr(), purpose as i32, spec as i32, id.as_ptr(), sealed.as_mut_ptr(), sealed.len()) };
    drop(key);
    if n < 0 {
        return n;
    }
    respond(&[&sealed[..n as usize]])
}

/// Request: `id (32) || sealed blob`. Opens the blob inside the guest and
/// caches the key; answers its record.
#[no_mangle]
pub extern "C" fn kc_unseal() -> i32 {
    init();
    let _wipe = StackWipe;
    let n = request_len();
    if n <= 32 || n - 32 > MAX_BLOB {
        return Status::BAD_REQUEST.code();
    }
    let id = read_id();
    if cache().touch(&id).is_some() {
        return record(&id);
    }
    let blob = match read_rest(32) {
        Some(b) => b,
        None => return Status::NO_SPACE.code(),
    };
    let (spec, key) = match Key::make(Status::SEAL_INVALID, |out| unsafe {
        kcc_unseal(blob.as_ptr(), blob.len(), Purpose::SIGNING as i32, id.as_ptr(), out)
    }) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match identify(&key) {
        // The associated data already binds the id; this also catches a
        // blob sealed for one id around another key.
        Ok((spki, got)) if got == id => {
            cache().insert(id, spec, key, spki);
            record(&id)
        }
        _ => Status::SEAL_INVALID.code(),
    }
}

/// `spec (1) || wrapping key id (32) || sealed wrapping key length (u32 LE)`.
const IMPORT_HEAD: usize = 37;

/// Request: `spec (1) || wrapping key id (32) || sealed wrapping key length
/// (u32 LE) || sealed wrapping key || wrapped key`. Unwraps the key inside
/// the guest, caches it and answers its record and sealed blob.
#[no_mangle]
pub extern "C" fn kc_import() -> i32 {
    init();
    let _wipe = StackWipe;
    if !has_master() {
        return Status::NO_MASTER_KEY.code();
    }
    let n = request_len();
    if n < IMPORT_HEAD || n > 2 * MAX_BLOB {
        return Status::BAD_REQUEST.code();
    }
    let mut head = [0u8; IMPORT_HEAD];
    read_public(0, &mut head);
    let spec = match KeySpec::from_u8(head[0]) {
        Some(s) => s,
        None => return Status::BAD_REQUEST.code(),
    };
    let mut wrapping_id = [0u8; 32];
    wrapping_id.copy_from_slice(&head[1..33]);
    let wlen = u32::from_le_bytes([head[33], head[34], head[35], head[36]]) as usize;
    if wlen > MAX_BLOB || IMPORT_HEAD + wlen > n {
        return Status::BAD_REQUEST.code();
    }
    let rest = match read_rest(IMPORT_HEAD) {
        Some(b) => b,
        None => return Status::NO_SPACE.code(),
    };
    let (wblob, wrapped) = rest.split_at(wlen);
    let wrapping = match Key::make(Status::SEAL_INVALID, |out| unsafe {
        kcc_unseal(wblob.as_ptr(), wblob.len(), Purpose::WRAPPING as i32, wrapping_id.as_ptr(), out)
    }) {
        Ok((_, key)) => key,
        Err(code) => return code,
    };
    let unwrapped = Key::make(Status::BAD_WRAPPED, |out| unsafe {
        kcc_unwrap(wrapping.as_ptr(), wrapped.as_ptr(), wrapped.len(), out)
    });
    drop(wrapping);
    match unwrapped {
        Ok((got, key)) if got == spec => answer_new_key(spec, key),
        Ok(_) => Status::BAD_WRAPPED.code(),
        Err(code) => code,
    }
}
