//! keycell's signer guest. Private keys exist only in this module's linear
//! memory; the host reaches it through the functions in ABI.md and never
//! sees that memory. Rust owns the ABI, the key table, PEM armor and the
//! zeroing of key buffers; BoringSSL (through c/driver.c) does all crypto.

#![no_std]
// Debian's rustc 1.63 has no default handler for allocation failure in
// no_std; fallible paths use try_reserve and answer NO_SPACE, so this handler
// only guards the rest.
#![feature(alloc_error_handler)]

extern crate alloc;

mod pem;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{compiler_fence, Ordering};

// ---------------------------------------------------------------- codes

const BAD_REQUEST: i32 = -1;
const KEY_NOT_FOUND: i32 = -2;
const BAD_KEY: i32 = -3;
const WRONG_KEY_TYPE: i32 = -4;
const BAD_DIGEST_LENGTH: i32 = -5;
const CRYPTO_FAILURE: i32 = -6;
const NO_SPACE: i32 = -7;

const H_SHA1: i32 = 1;
const H_SHA224: i32 = 2;
const H_SHA256: i32 = 3;
const H_SHA384: i32 = 4;
const H_SHA512: i32 = 5;
const H_MD5_SHA1: i32 = 6;

const S_PKCS1: i32 = 1;
const S_PSS: i32 = 2;
const S_ECDSA: i32 = 3;

const FLAG_RAW: u8 = 1;
const FLAG_RS: u8 = 2;

/// Largest key file accepted; RSA-4096 PEM is about 3.3 KiB.
const MAX_KEY_FILE: i32 = 64 * 1024;
/// Keeps the kc_list response (4 + 33 per key) under the host's 64 KiB cap.
const MAX_KEYS: usize = 1024;
/// An RSA-4096 SPKI is 550 bytes.
const SPKI_CAP: usize = 1024;

/// Non-secret marker the isolation tests use to find this module's memory.
#[used]
static TAG: [u8; 16] = *b"keycell.guest.v1";

// ---------------------------------------------------------------- imports

#[link(wasm_import_module = "keycell")]
extern "C" {
    fn in_len() -> i32;
    fn in_read8(off: i32) -> i64;
    fn in_read1(off: i32) -> i32;
    fn out_write8(off: i32, v: i64);
}

extern "C" {
    fn malloc(size: usize) -> *mut u8;
    fn aligned_alloc(align: usize, size: usize) -> *mut u8;
    fn free(p: *mut u8);

    fn kcc_parse_key(der: *const u8, len: usize, form: i32, out: *mut *mut c_void) -> i32;
    fn kcc_generate(spec: i32, out: *mut *mut c_void) -> i32;
    fn kcc_free_key(key: *mut c_void);
    fn kcc_spki(key: *const c_void, out: *mut u8, cap: usize) -> i32;
    fn kcc_hash_len(h: i32) -> i32;
    fn kcc_hash_begin(h: i32);
    fn kcc_hash_update(p: *const u8, n: usize);
    fn kcc_hash_end(out: *mut u8) -> i32;
    fn kcc_sha256(p: *const u8, n: usize, out: *mut u8) -> i32;
    fn kcc_sign(
        key: *const c_void,
        scheme: i32,
        h: i32,
        digest: *const u8,
        digest_len: usize,
        rs_form: i32,
        out: *mut u8,
        cap: usize,
    ) -> i32;

    fn kcc_wipe_stack();

    // Synthesized by the linker. The module's _initialize export is removed
    // with the other non-ABI exports, so the guest runs constructors itself.
    fn __wasm_call_ctors();
}

// ---------------------------------------------------------------- memory

/// Overwrites memory in a way the optimizer may not drop, even right
/// before the memory is freed.
unsafe fn wipe_raw(p: *mut u8, n: usize) {
    for i in 0..n {
        ptr::write_volatile(p.add(i), 0);
    }
    compiler_fence(Ordering::SeqCst);
}

/// wasi-libc's malloc, zeroing every block on the way out so that no freed
/// buffer keeps key bytes, whichever code path dropped it.
struct ZeroingMalloc;

unsafe impl GlobalAlloc for ZeroingMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= 8 {
            malloc(layout.size())
        } else {
            let size = (layout.size() + layout.align() - 1) & !(layout.align() - 1);
            aligned_alloc(layout.align(), size)
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        wipe_raw(p, layout.size());
        free(p)
    }
}

#[global_allocator]
static ALLOCATOR: ZeroingMalloc = ZeroingMalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[alloc_error_handler]
fn alloc_error(_: Layout) -> ! {
    core::arch::wasm32::unreachable()
}

/// A byte buffer that held key material: fixed capacity (it never
/// reallocates, which would leave a copy behind) and zeroed on drop.
pub(crate) struct Secret(Vec<u8>);

impl Secret {
    pub(crate) fn with_capacity(n: usize) -> Option<Secret> {
        let mut v = Vec::new();
        v.try_reserve_exact(n).ok()?;
        Some(Secret(v))
    }

    pub(crate) fn push(&mut self, b: u8) {
        if self.0.len() < self.0.capacity() {
            self.0.push(b);
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let cap = self.0.capacity();
        unsafe { wipe_raw(self.0.as_mut_ptr(), cap) };
    }
}

fn try_vec(n: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    Some(v)
}

// ---------------------------------------------------------------- request/response

fn init() {
    static mut DONE: bool = false;
    unsafe {
        if !DONE {
            DONE = true;
            __wasm_call_ctors();
        }
    }
}

/// Held for the length of an export that handles key material; on the way
/// out it clears the stack below, where BoringSSL's frames were.
struct StackWipe;

impl Drop for StackWipe {
    fn drop(&mut self) {
        unsafe { kcc_wipe_stack() };
    }
}

fn request_len() -> usize {
    let n = unsafe { in_len() };
    if n < 0 {
        0
    } else {
        n as usize
    }
}

/// Reads non-secret request bytes `off..off+out.len()`.
fn read_public(off: usize, out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let v = unsafe { in_read8((off + i * 8) as i32) }.to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Writes the response and returns its length, as every export does.
fn respond(parts: &[&[u8]]) -> i32 {
    let mut off = 0usize;
    let mut word = [0u8; 8];
    let mut fill = 0usize;
    for part in parts {
        for &b in part.iter() {
            word[fill] = b;
            fill += 1;
            if fill == 8 {
                unsafe { out_write8(off as i32, i64::from_le_bytes(word)) };
                off += 8;
                fill = 0;
            }
        }
    }
    if fill > 0 {
        for b in word[fill..].iter_mut() {
            *b = 0;
        }
        unsafe { out_write8(off as i32, i64::from_le_bytes(word)) };
    }
    (off + fill) as i32
}

// ---------------------------------------------------------------- key table

struct Entry {
    id: [u8; 32],
    spec: u8,
    key: *mut c_void,
    spki: Vec<u8>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        // EVP_PKEY_free ends in OPENSSL_free, which cleanses every block.
        unsafe { kcc_free_key(self.key) };
    }
}

static mut TABLE: Vec<Entry> = Vec::new();

fn table() -> &'static mut Vec<Entry> {
    // Single-threaded module: exports never run concurrently or re-enter.
    unsafe { &mut *ptr::addr_of_mut!(TABLE) }
}

fn find(id: &[u8; 32]) -> Option<usize> {
    table().iter().position(|e| &e.id == id)
}

fn record(e: &Entry) -> i32 {
    respond(&[&[e.spec], &e.id, &e.spki])
}

/// Takes ownership of a fresh BoringSSL key and files it, or returns the
/// record of the identical key already loaded.
fn insert(key: *mut c_void, spec: i32) -> i32 {
    let mut spki = [0u8; SPKI_CAP];
    let n = unsafe { kcc_spki(key, spki.as_mut_ptr(), spki.len()) };
    if n <= 0 {
        unsafe { kcc_free_key(key) };
        return if n < 0 { n } else { BAD_KEY };
    }
    let spki = &spki[..n as usize];
    let mut id = [0u8; 32];
    unsafe { kcc_sha256(spki.as_ptr(), spki.len(), id.as_mut_ptr()) };
    if let Some(i) = find(&id) {
        unsafe { kcc_free_key(key) };
        return record(&table()[i]);
    }
    let t = table();
    if t.len() >= MAX_KEYS || t.try_reserve(1).is_err() {
        unsafe { kcc_free_key(key) };
        return NO_SPACE;
    }
    let mut v = match try_vec(spki.len()) {
        Some(v) => v,
        None => {
            unsafe { kcc_free_key(key) };
            return NO_SPACE;
        }
    };
    v.extend_from_slice(spki);
    t.push(Entry { id, spec: spec as u8, key, spki: v });
    record(&t[t.len() - 1])
}

fn read_id() -> [u8; 32] {
    let mut id = [0u8; 32];
    read_public(0, &mut id);
    id
}

// ---------------------------------------------------------------- exports

fn load() -> i32 {
    let n = unsafe { in_len() };
    if n <= 0 {
        return BAD_REQUEST;
    }
    if n > MAX_KEY_FILE {
        return BAD_KEY;
    }
    let mut file = match Secret::with_capacity(n as usize) {
        Some(s) => s,
        None => return NO_SPACE,
    };
    for off in 0..n {
        let b = unsafe { in_read1(off) };
        if !(0..=255).contains(&b) {
            return BAD_REQUEST;
        }
        file.push(b as u8);
    }
    let pem;
    let (der, form) = if pem::looks_like_pem(file.bytes()) {
        pem = match pem::decode(file.bytes()) {
            Some(p) => p,
            None => return BAD_KEY,
        };
        (pem.1.bytes(), pem.0)
    } else if file.bytes().first() == Some(&0x30) {
        // DER SEQUENCE: any of the three forms; BoringSSL tells which.
        (file.bytes(), 0)
    } else {
        return BAD_KEY;
    };
    let mut key: *mut c_void = ptr::null_mut();
    let spec = unsafe { kcc_parse_key(der.as_ptr(), der.len(), form, &mut key) };
    if spec < 0 || key.is_null() {
        return if spec < 0 { spec } else { BAD_KEY };
    }
    insert(key, spec)
}

#[no_mangle]
pub extern "C" fn kc_load() -> i32 {
    init();
    let _wipe = StackWipe;
    load()
}

#[no_mangle]
pub extern "C" fn kc_generate() -> i32 {
    init();
    let _wipe = StackWipe;
    if request_len() != 1 {
        return BAD_REQUEST;
    }
    let mut spec = [0u8; 1];
    read_public(0, &mut spec);
    let spec = spec[0] as i32;
    if !(1..=5).contains(&spec) {
        return BAD_REQUEST;
    }
    let mut key: *mut c_void = ptr::null_mut();
    let r = unsafe { kcc_generate(spec, &mut key) };
    if r < 0 || key.is_null() {
        return if r < 0 { r } else { CRYPTO_FAILURE };
    }
    insert(key, spec)
}

#[no_mangle]
pub extern "C" fn kc_public_key() -> i32 {
    init();
    if request_len() != 32 {
        return BAD_REQUEST;
    }
    match find(&read_id()) {
        Some(i) => record(&table()[i]),
        None => KEY_NOT_FOUND,
    }
}

#[no_mangle]
pub extern "C" fn kc_drop() -> i32 {
    init();
    let _wipe = StackWipe;
    if request_len() != 32 {
        return BAD_REQUEST;
    }
    match find(&read_id()) {
        Some(i) => {
            drop(table().swap_remove(i));
            0
        }
        None => KEY_NOT_FOUND,
    }
}

#[no_mangle]
pub extern "C" fn kc_list() -> i32 {
    init();
    if request_len() != 0 {
        return BAD_REQUEST;
    }
    let t = table();
    let count = (t.len() as u32).to_le_bytes();
    let mut out = match try_vec(4 + 33 * t.len()) {
        Some(v) => v,
        None => return NO_SPACE,
    };
    out.extend_from_slice(&count);
    for e in t.iter() {
        out.push(e.spec);
        out.extend_from_slice(&e.id);
    }
    respond(&[&out])
}

/// Signature scheme and hash of an ABI algorithm code.
fn algorithm(alg: u8) -> Option<(i32, i32)> {
    Some(match alg {
        1 => (S_PKCS1, H_SHA256),
        2 => (S_PKCS1, H_SHA384),
        3 => (S_PKCS1, H_SHA512),
        4 => (S_PSS, H_SHA256),
        5 => (S_PSS, H_SHA384),
        6 => (S_PSS, H_SHA512),
        7 => (S_ECDSA, H_SHA256),
        8 => (S_ECDSA, H_SHA384),
        9 => (S_ECDSA, H_SHA512),
        10 => (S_PKCS1, H_SHA1),
        11 => (S_PKCS1, H_SHA224),
        12 => (S_PKCS1, H_MD5_SHA1),
        13 => (S_ECDSA, H_SHA1),
        14 => (S_ECDSA, H_SHA224),
        15 => (S_ECDSA, H_MD5_SHA1),
        _ => return None,
    })
}

fn is_ec_spec(spec: u8) -> bool {
    spec == 4 || spec == 5
}

#[no_mangle]
pub extern "C" fn kc_sign() -> i32 {
    init();
    let _wipe = StackWipe;
    let n = request_len();
    if n < 34 {
        return BAD_REQUEST;
    }
    let mut head = [0u8; 34];
    read_public(0, &mut head);
    let (scheme, h) = match algorithm(head[32]) {
        Some(a) => a,
        None => return BAD_REQUEST,
    };
    let flags = head[33];
    if flags & !(FLAG_RAW | FLAG_RS) != 0 {
        return BAD_REQUEST;
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&head[..32]);
    let i = match find(&id) {
        Some(i) => i,
        None => return KEY_NOT_FOUND,
    };
    let e = &table()[i];
    if (scheme == S_ECDSA) != is_ec_spec(e.spec) {
        return WRONG_KEY_TYPE;
    }
    let hlen = unsafe { kcc_hash_len(h) } as usize;
    let msg_len = n - 34;
    let mut digest = [0u8; 64];
    if flags & FLAG_RAW != 0 {
        // Stream the message through the hash in chunks so a large RAW
        // message never needs a buffer of its size.
        let mut chunk = [0u8; 4096];
        unsafe { kcc_hash_begin(h) };
        let mut off = 0usize;
        while off < msg_len {
            let take = core::cmp::min(chunk.len(), msg_len - off);
            read_public(34 + off, &mut chunk[..take]);
            unsafe { kcc_hash_update(chunk.as_ptr(), take) };
            off += take;
        }
        if unsafe { kcc_hash_end(digest.as_mut_ptr()) } as usize != hlen {
            return CRYPTO_FAILURE;
        }
    } else {
        if msg_len != hlen {
            return BAD_DIGEST_LENGTH;
        }
        read_public(34, &mut digest[..hlen]);
    }
    let mut sig = [0u8; 512];
    let rs = (flags & FLAG_RS != 0) as i32;
    let len = unsafe {
        kcc_sign(e.key, scheme, h, digest.as_ptr(), hlen, rs, sig.as_mut_ptr(), sig.len())
    };
    if len < 0 {
        return len;
    }
    respond(&[&sig[..len as usize]])
}

#[no_mangle]
pub extern "C" fn kc_tag() -> i32 {
    init();
    if request_len() != 0 {
        return BAD_REQUEST;
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
