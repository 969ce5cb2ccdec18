//! The key exports: load, generate, look up, list and drop keys in the
//! guest's cache, and its counters.

use crate::abi::{init, read_id, read_public, read_secret_byte, request_len, respond, StackWipe};
use crate::boring::{kcc_generate, kcc_parse_key, kcc_seal, kcc_sha256, kcc_spki, Key};
use crate::cache::{Cache, KeyId, DEFAULT_CACHE_BYTES};
use crate::codes::{Form, KeySpec, Purpose, Status};
use crate::memory::{try_vec, Secret};
use crate::{pem, seal};
use alloc::vec::Vec;
use core::ptr;

/// Largest key file accepted; RSA-4096 PEM is about 3.3 KiB.
const MAX_KEY_FILE: usize = 64 * 1024;
/// Keeps the kc_list response (4 + 33 per key) under the host's 64 KiB cap.
const MAX_LISTED: usize = (64 * 1024 - 4) / 33;
/// An RSA-4096 SPKI is 550 bytes.
const SPKI_CAP: usize = 1024;
/// A sealed RSA-4096 PKCS#8 is about 2.4 KiB.
pub(crate) const SEALED_CAP: usize = 4096;

/// Non-secret marker the isolation tests use to find this module's memory.
#[used]
static TAG: [u8; 16] = *b"keycell.guest.v1";

static mut CACHE: Option<Cache<Key>> = None;

pub(crate) fn cache() -> &'static mut Cache<Key> {
    // Single-threaded module: exports never run concurrently or re-enter.
    unsafe { (*ptr::addr_of_mut!(CACHE)).get_or_insert_with(|| Cache::new(DEFAULT_CACHE_BYTES)) }
}

/// SPKI and id (SHA-256 of the SPKI) of a key.
pub(crate) fn identify(key: &Key) -> Result<(Vec<u8>, KeyId), i32> {
    let mut spki = [0u8; SPKI_CAP];
    let n = unsafe { kcc_spki(key.as_ptr(), spki.as_mut_ptr(), spki.len()) };
    if n <= 0 {
        return Err(if n < 0 { n } else { Status::BAD_KEY.code() });
    }
    let spki = &spki[..n as usize];
    let mut id = [0u8; 32];
    unsafe { kcc_sha256(spki.as_ptr(), spki.len(), id.as_mut_ptr()) };
    let mut v = try_vec(spki.len()).ok_or(Status::NO_SPACE.code())?;
    v.extend_from_slice(spki);
    Ok((v, id))
}

/// Caches a new key (or keeps the identical key already cached) and
/// answers its record followed by its sealed blob when a master key is set.
pub(crate) fn answer_new_key(spec: KeySpec, key: Key) -> i32 {
    let (spki, id) = match identify(&key) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let c = cache();
    if c.touch(&id).is_none() {
        c.insert(id, spec, key, spki);
    } else {
        drop(key);
    }
    let e = match c.get(&id) {
        Some(e) => e,
        None => return Status::NO_SPACE.code(),
    };
    let mut sealed = [0u8; SEALED_CAP];
    let mut sealed_len = 0usize;
    if seal::has_master() {
        let n = unsafe {
            kcc_seal(
                e.key.as_ptr(),
                Purpose::SIGNING as i32,
                e.spec as i32,
                id.as_ptr(),
                sealed.as_mut_ptr(),
                sealed.len(),
            )
        };
        if n < 0 {
            return n;
        }
        sealed_len = n as usize;
    }
    respond(&[&[e.spec as u8], &id, &e.spki, &sealed[..sealed_len]])
}

/// Answers a cached key's record: `spec || id || spki`.
pub(crate) fn record(id: &KeyId) -> i32 {
    match cache().get(id) {
        Some(e) => respond(&[&[e.spec as u8], id, &e.spki]),
        None => Status::KEY_NOT_FOUND.code(),
    }
}

fn load() -> i32 {
    let n = request_len();
    if n == 0 {
        return Status::BAD_REQUEST.code();
    }
    if n > MAX_KEY_FILE {
        return Status::BAD_KEY.code();
    }
    let mut file = match Secret::with_capacity(n) {
        Some(s) => s,
        None => return Status::NO_SPACE.code(),
    };
    for off in 0..n {
        match read_secret_byte(off) {
            Some(b) => file.push(b),
            None => return Status::BAD_REQUEST.code(),
        }
    }
    let pem;
    let (der, form) = if pem::looks_like_pem(file.bytes()) {
        pem = match pem::decode(file.bytes()) {
            Some(p) => p,
            None => return Status::BAD_KEY.code(),
        };
        (pem.1.bytes(), pem.0)
    } else if file.bytes().first() == Some(&0x30) {
        // DER SEQUENCE: any of the three forms; BoringSSL tells which.
        (file.bytes(), Form::ANY)
    } else {
        return Status::BAD_KEY.code();
    };
    match Key::make(Status::BAD_KEY, |out| unsafe { kcc_parse_key(der.as_ptr(), der.len(), form as i32, out) }) {
        Ok((spec, key)) => answer_new_key(spec, key),
        Err(code) => code,
    }
}

#[no_mangle]
pub extern "C" fn kc_load() -> i32 {
    init();
    let _wipe = StackWipe;
    load()
}

/// kc_generate's spec byte for an RSA-4096 key wrapping key (0x80 | RSA_4096).
const WRAPPING_KEY_SPEC: u8 = 0x80 | KeySpec::RSA_4096 as u8;

#[no_mangle]
pub extern "C" fn kc_generate() -> i32 {
    init();
    let _wipe = StackWipe;
    if request_len() != 1 {
        return Status::BAD_REQUEST.code();
    }
    let mut spec = [0u8; 1];
    read_public(0, &mut spec);
    if spec[0] == WRAPPING_KEY_SPEC {
        return seal::generate_wrapping_key();
    }
    let spec = match KeySpec::from_u8(spec[0]) {
        Some(s) => s,
        None => return Status::BAD_REQUEST.code(),
    };
    match Key::make(Status::CRYPTO_FAILURE, |out| unsafe { kcc_generate(spec as i32, out) }) {
        Ok((spec, key)) => answer_new_key(spec, key),
        Err(code) => code,
    }
}

#[no_mangle]
pub extern "C" fn kc_public_key() -> i32 {
    init();
    if request_len() != 32 {
        return Status::BAD_REQUEST.code();
    }
    let id = read_id();
    if cache().touch(&id).is_none() {
        return Status::KEY_NOT_FOUND.code();
    }
    record(&id)
}

#[no_mangle]
pub extern "C" fn kc_drop() -> i32 {
    init();
    let _wipe = StackWipe;
    if request_len() != 32 {
        return Status::BAD_REQUEST.code();
    }
    if cache().remove(&read_id()) {
        0
    } else {
        Status::KEY_NOT_FOUND.code()
    }
}

#[no_mangle]
pub extern "C" fn kc_list() -> i32 {
    init();
    if request_len() != 0 {
        return Status::BAD_REQUEST.code();
    }
    // Most recently used first, as many as fit in one response.
    let c = cache();
    let count = core::cmp::min(c.len(), MAX_LISTED);
    let mut out = match try_vec(4 + 33 * count) {
        Some(v) => v,
        None => return Status::NO_SPACE.code(),
    };
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (spec, id) in c.most_recent_first().take(count) {
        out.push(spec as u8);
        out.extend_from_slice(id);
    }
    respond(&[&out])
}

#[no_mangle]
pub extern "C" fn kc_tag() -> i32 {
    init();
    if request_len() != 0 {
        return Status::BAD_REQUEST.code();
    }
    // Volatile reads keep the tag a real data-segment object instead of
    // constants folded into code.
    let mut tag = [0u8; 16];
    for (i, b) in tag.iter_mut().enumerate() {
        *b = unsafe { ptr::read_volatile(TAG.as_ptr().add(i)) };
    }
    respond(&[&tag])
}

#[no_mangle]
pub extern "C" fn kc_trap() -> i32 {
    core::arch::wasm32::unreachable()
}

/// Answers `keys (u32) || accounted bytes (u64) || budget (u64) ||
/// evictions (u64) || linear memory bytes (u64)`, all little-endian.
#[no_mangle]
pub extern "C" fn kc_stats() -> i32 {
    init();
    if request_len() != 0 {
        return Status::BAD_REQUEST.code();
    }
    let c = cache();
    let (bytes, budget, evictions) = c.counters();
    let memory = (core::arch::wasm32::memory_size(0) as u64) * 65536;
    respond(&[
        &(c.len() as u32).to_le_bytes(),
        &bytes.to_le_bytes(),
        &budget.to_le_bytes(),
        &evictions.to_le_bytes(),
        &memory.to_le_bytes(),
    ])
}
