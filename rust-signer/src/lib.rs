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

use alloc::collections::BTreeMap;
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
const SEAL_INVALID: i32 = -8;
const NO_MASTER_KEY: i32 = -9;
const BAD_WRAPPED: i32 = -10;

/// kc_generate's spec byte for an RSA-4096 key wrapping key (0x80 | RSA_4096).
const WRAPPING_KEY_SPEC: u8 = 0x83;
/// Seal purposes, bound into the blob's associated data.
const PURPOSE_SIGNING: i32 = 1;
const PURPOSE_WRAPPING: i32 = 2;

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
const MAX_LISTED: usize = (64 * 1024 - 4) / 33;
/// An RSA-4096 SPKI is 550 bytes.
const SPKI_CAP: usize = 1024;
/// A sealed RSA-4096 PKCS#8 is about 2.4 KiB.
const SEALED_CAP: usize = 4096;
/// Largest sealed blob or wrapped key accepted.
const MAX_BLOB: usize = 64 * 1024;
/// Cache budget until the host sets one: 64 MiB.
const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

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
    fn out_write1(off: i32, b: i32);
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

    fn kcc_master_new(key_out: *mut u8, id_out: *mut u8) -> i32;
    fn kcc_master_set(key: *const u8, id_out: *mut u8) -> i32;
    fn kcc_master_set_previous(key: *const u8, id_out: *mut u8) -> i32;
    fn kcc_seal(key: *const c_void, purpose: i32, spec: i32, id: *const u8, out: *mut u8, cap: usize) -> i32;
    fn kcc_unseal(blob: *const u8, len: usize, purpose: i32, id: *const u8, out: *mut *mut c_void) -> i32;
    fn kcc_unwrap(wrapping_key: *const c_void, wrapped: *const u8, len: usize, out: *mut *mut c_void) -> i32;

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

// ---------------------------------------------------------------- key cache

/// Guest bytes a parsed key holds, by spec: BoringSSL's structures and
/// bignums (for RSA also the Montgomery contexts built on first use) plus
/// allocator overhead. P-256, P-384 and RSA-2048 checked against kc_stats'
/// memory growth over many keys (bench/keys); RSA-3072/4096 scaled from
/// RSA-2048 by modulus size. The budget is about memory, so these err high.
fn key_cost(spec: u8) -> u64 {
    match spec {
        1 => 6 * 1024 + 256,
        2 => 9 * 1024 + 512,
        3 => 12 * 1024 + 512,
        4 => 768,
        5 => 1024,
        _ => 8 * 1024,
    }
}

/// The entry itself, its SPKI, and two B-tree slots.
const ENTRY_OVERHEAD: u64 = 192;

struct Entry {
    spec: u8,
    key: *mut c_void,
    spki: Vec<u8>,
    tick: u64,
    cost: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        // EVP_PKEY_free ends in OPENSSL_free, which cleanses every block.
        unsafe { kcc_free_key(self.key) };
    }
}

/// Unsealed keys, least recently used evicted first once their accounted
/// bytes pass the budget. Eviction frees (and so zeroes) the key; its
/// sealed blob stays in the host's store, so it can come back.
struct Cache {
    keys: BTreeMap<[u8; 32], Entry>,
    order: BTreeMap<u64, [u8; 32]>,
    tick: u64,
    bytes: u64,
    budget: u64,
    evictions: u64,
}

static mut CACHE: Option<Cache> = None;
static mut HAS_MASTER: bool = false;

fn cache() -> &'static mut Cache {
    // Single-threaded module: exports never run concurrently or re-enter.
    unsafe {
        (*ptr::addr_of_mut!(CACHE)).get_or_insert_with(|| Cache {
            keys: BTreeMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            budget: DEFAULT_CACHE_BYTES,
            evictions: 0,
        })
    }
}

fn has_master() -> bool {
    unsafe { HAS_MASTER }
}

impl Cache {
    /// Looks a key up and marks it most recently used.
    fn touch(&mut self, id: &[u8; 32]) -> Option<&Entry> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.keys.get_mut(id)?;
        self.order.remove(&e.tick);
        e.tick = tick;
        self.order.insert(tick, *id);
        Some(e)
    }

    fn remove(&mut self, id: &[u8; 32]) -> bool {
        match self.keys.remove(id) {
            Some(e) => {
                self.order.remove(&e.tick);
                self.bytes -= e.cost;
                true
            }
            None => false,
        }
    }

    fn evict_for(&mut self, cost: u64) {
        while self.bytes + cost > self.budget {
            let oldest = match self.order.iter().next() {
                Some((_, id)) => *id,
                None => return,
            };
            self.remove(&oldest);
            self.evictions += 1;
        }
    }

    fn insert(&mut self, id: [u8; 32], spec: u8, key: *mut c_void, spki: Vec<u8>) {
        let cost = key_cost(spec) + spki.len() as u64 + ENTRY_OVERHEAD;
        self.evict_for(cost);
        self.tick += 1;
        self.bytes += cost;
        self.order.insert(self.tick, id);
        self.keys.insert(id, Entry { spec, key, spki, tick: self.tick, cost });
    }
}

/// SPKI and id (SHA-256 of the SPKI) of a BoringSSL key.
fn identify(key: *const c_void) -> Result<(Vec<u8>, [u8; 32]), i32> {
    let mut spki = [0u8; SPKI_CAP];
    let n = unsafe { kcc_spki(key, spki.as_mut_ptr(), spki.len()) };
    if n <= 0 {
        return Err(if n < 0 { n } else { BAD_KEY });
    }
    let spki = &spki[..n as usize];
    let mut id = [0u8; 32];
    unsafe { kcc_sha256(spki.as_ptr(), spki.len(), id.as_mut_ptr()) };
    let mut v = try_vec(spki.len()).ok_or(NO_SPACE)?;
    v.extend_from_slice(spki);
    Ok((v, id))
}

/// Takes ownership of a fresh BoringSSL key, caches it (or keeps the
/// identical key already cached) and answers its record followed by its
/// sealed blob when a master key is set.
fn insert(key: *mut c_void, spec: i32) -> i32 {
    let (spki, id) = match identify(key) {
        Ok(x) => x,
        Err(code) => {
            unsafe { kcc_free_key(key) };
            return code;
        }
    };
    let c = cache();
    if c.touch(&id).is_some() {
        unsafe { kcc_free_key(key) };
    } else {
        c.insert(id, spec as u8, key, spki);
    }
    let e = match c.keys.get(&id) {
        Some(e) => e,
        None => return NO_SPACE,
    };
    let mut sealed = [0u8; SEALED_CAP];
    let mut sealed_len = 0usize;
    if has_master() {
        let n = unsafe { kcc_seal(e.key, PURPOSE_SIGNING, e.spec as i32, id.as_ptr(), sealed.as_mut_ptr(), sealed.len()) };
        if n < 0 {
            return n;
        }
        sealed_len = n as usize;
    }
    respond(&[&[e.spec], &id, &e.spki, &sealed[..sealed_len]])
}

fn record(id: &[u8; 32]) -> i32 {
    match cache().keys.get(id) {
        Some(e) => respond(&[&[e.spec], id, &e.spki]),
        None => KEY_NOT_FOUND,
    }
}

fn read_id() -> [u8; 32] {
    let mut id = [0u8; 32];
    read_public(0, &mut id);
    id
}

/// Reads non-secret request bytes `off..len` into a new buffer.
fn read_rest(off: usize) -> Option<Vec<u8>> {
    let n = request_len().checked_sub(off)?;
    let mut v = try_vec(n)?;
    v.resize(n, 0);
    read_public(off, &mut v);
    Some(v)
}

fn u64_at(off: usize) -> u64 {
    let mut b = [0u8; 8];
    read_public(off, &mut b);
    u64::from_le_bytes(b)
}

/// Writes a response byte by byte; for the master key's one trip out, so
/// that no byte of it becomes a host-side BigInt.
fn respond_bytewise(parts: &[&[u8]]) -> i32 {
    let mut off = 0i32;
    for part in parts {
        for &b in part.iter() {
            unsafe { out_write1(off, b as i32) };
            off += 1;
        }
    }
    off
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
    if spec[0] == WRAPPING_KEY_SPEC {
        return generate_wrapping_key();
    }
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
    let id = read_id();
    if cache().touch(&id).is_none() {
        return KEY_NOT_FOUND;
    }
    record(&id)
}

#[no_mangle]
pub extern "C" fn kc_drop() -> i32 {
    init();
    let _wipe = StackWipe;
    if request_len() != 32 {
        return BAD_REQUEST;
    }
    if cache().remove(&read_id()) {
        0
    } else {
        KEY_NOT_FOUND
    }
}

#[no_mangle]
pub extern "C" fn kc_list() -> i32 {
    init();
    if request_len() != 0 {
        return BAD_REQUEST;
    }
    // Most recently used first, as many as fit in one response.
    let c = cache();
    let count = core::cmp::min(c.keys.len(), MAX_LISTED);
    let mut out = match try_vec(4 + 33 * count) {
        Some(v) => v,
        None => return NO_SPACE,
    };
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (_, id) in c.order.iter().rev().take(count) {
        if let Some(e) = c.keys.get(id) {
            out.push(e.spec);
            out.extend_from_slice(id);
        }
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
    let (spec, key) = match cache().touch(&id) {
        Some(e) => (e.spec, e.key),
        None => return KEY_NOT_FOUND,
    };
    if (scheme == S_ECDSA) != is_ec_spec(spec) {
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
        kcc_sign(key, scheme, h, digest.as_ptr(), hlen, rs, sig.as_mut_ptr(), sig.len())
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

// ---------------------------------------------------------------- sealing exports

/// An RSA-4096 key for wrapped imports: sealed for the wrapping purpose
/// and handed out at once, never cached, so it can wrap but never sign.
fn generate_wrapping_key() -> i32 {
    if !has_master() {
        return NO_MASTER_KEY;
    }
    let mut key: *mut c_void = ptr::null_mut();
    let r = unsafe { kcc_generate(3, &mut key) };
    if r < 0 || key.is_null() {
        return if r < 0 { r } else { CRYPTO_FAILURE };
    }
    let result = identify(key).and_then(|(spki, id)| {
        let mut sealed = [0u8; SEALED_CAP];
        let n = unsafe { kcc_seal(key, PURPOSE_WRAPPING, 3, id.as_ptr(), sealed.as_mut_ptr(), sealed.len()) };
        if n < 0 {
            return Err(n);
        }
        Ok(respond(&[&[3], &id, &spki, &sealed[..n as usize]]))
    });
    unsafe { kcc_free_key(key) };
    result.unwrap_or_else(|code| code)
}

fn set_budget(bytes: u64) {
    let c = cache();
    c.budget = bytes;
    c.evict_for(0);
}

/// Request: `cache_bytes (u64 LE)`. Generates the master key inside the
/// guest and answers it (written byte by byte, for the host to store in
/// its key file) followed by its 32-byte id. Refused once a master key is set.
#[no_mangle]
pub extern "C" fn kc_master_new() -> i32 {
    init();
    let _wipe = StackWipe;
    if request_len() != 8 || has_master() {
        return BAD_REQUEST;
    }
    let budget = u64_at(0);
    let mut key = [0u8; 32];
    let mut id = [0u8; 32];
    let r = unsafe { kcc_master_new(key.as_mut_ptr(), id.as_mut_ptr()) };
    if r < 0 {
        return r;
    }
    unsafe { HAS_MASTER = true };
    set_budget(budget);
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
        return BAD_REQUEST;
    }
    let budget = u64_at(0);
    let id = match with_master_key_at(8, kcc_master_set) {
        Some(id) => id,
        None => return BAD_REQUEST,
    };
    unsafe { HAS_MASTER = true };
    set_budget(budget);
    respond(&[&id])
}

/// Reads a 32-byte master key from request offset `off` with in_read1 only,
/// hands it to `set` and wipes the copy; answers the key's id, or None for a
/// byte out of range.
fn with_master_key_at(off: i32, set: unsafe extern "C" fn(*const u8, *mut u8) -> i32) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    let mut ok = true;
    for (i, b) in key.iter_mut().enumerate() {
        let v = unsafe { in_read1(off + i as i32) };
        ok &= (0..=255).contains(&v);
        *b = v as u8;
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
        return NO_MASTER_KEY;
    }
    if request_len() != 32 {
        return BAD_REQUEST;
    }
    match with_master_key_at(0, kcc_master_set_previous) {
        Some(id) => respond(&[&id]),
        None => BAD_REQUEST,
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
        return NO_MASTER_KEY;
    }
    let n = request_len();
    if n <= 34 || n - 32 > MAX_BLOB {
        return BAD_REQUEST;
    }
    let id = read_id();
    let blob = match read_rest(32) {
        Some(b) => b,
        None => return NO_SPACE,
    };
    let purpose = blob[1] as i32;
    if purpose != PURPOSE_SIGNING && purpose != PURPOSE_WRAPPING {
        return SEAL_INVALID;
    }
    let mut key: *mut c_void = ptr::null_mut();
    let spec = unsafe { kcc_unseal(blob.as_ptr(), blob.len(), purpose, id.as_ptr(), &mut key) };
    if spec < 0 || key.is_null() {
        return if spec < 0 { spec } else { SEAL_INVALID };
    }
    let mut sealed = [0u8; SEALED_CAP];
    let n = unsafe { kcc_seal(key, purpose, spec, id.as_ptr(), sealed.as_mut_ptr(), sealed.len()) };
    unsafe { kcc_free_key(key) };
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
        return BAD_REQUEST;
    }
    let id = read_id();
    if cache().touch(&id).is_some() {
        return record(&id);
    }
    let blob = match read_rest(32) {
        Some(b) => b,
        None => return NO_SPACE,
    };
    let mut key: *mut c_void = ptr::null_mut();
    let spec = unsafe { kcc_unseal(blob.as_ptr(), blob.len(), PURPOSE_SIGNING, id.as_ptr(), &mut key) };
    if spec < 0 || key.is_null() {
        return if spec < 0 { spec } else { SEAL_INVALID };
    }
    match identify(key) {
        // The associated data already binds the id; this also catches a
        // blob sealed for one id around another key.
        Ok((spki, got)) if got == id => {
            cache().insert(id, spec as u8, key, spki);
            record(&id)
        }
        _ => {
            unsafe { kcc_free_key(key) };
            SEAL_INVALID
        }
    }
}

/// Request: `spec (1) || wrapping key id (32) || sealed wrapping key length
/// (u32 LE) || sealed wrapping key || wrapped key`. Unwraps the key inside
/// the guest, caches it and answers its record and sealed blob.
#[no_mangle]
pub extern "C" fn kc_import() -> i32 {
    init();
    let _wipe = StackWipe;
    if !has_master() {
        return NO_MASTER_KEY;
    }
    let n = request_len();
    if n < 37 || n > 2 * MAX_BLOB {
        return BAD_REQUEST;
    }
    let mut head = [0u8; 37];
    read_public(0, &mut head);
    let spec = head[0] as i32;
    if !(1..=5).contains(&spec) {
        return BAD_REQUEST;
    }
    let mut wrapping_id = [0u8; 32];
    wrapping_id.copy_from_slice(&head[1..33]);
    let wlen = u32::from_le_bytes([head[33], head[34], head[35], head[36]]) as usize;
    if wlen > MAX_BLOB || 37 + wlen > n {
        return BAD_REQUEST;
    }
    let rest = match read_rest(37) {
        Some(b) => b,
        None => return NO_SPACE,
    };
    let (wblob, wrapped) = rest.split_at(wlen);
    let mut wrapping: *mut c_void = ptr::null_mut();
    let wspec = unsafe { kcc_unseal(wblob.as_ptr(), wblob.len(), PURPOSE_WRAPPING, wrapping_id.as_ptr(), &mut wrapping) };
    if wspec < 0 || wrapping.is_null() {
        return if wspec < 0 { wspec } else { SEAL_INVALID };
    }
    let mut key: *mut c_void = ptr::null_mut();
    let got = unsafe { kcc_unwrap(wrapping, wrapped.as_ptr(), wrapped.len(), &mut key) };
    unsafe { kcc_free_key(wrapping) };
    if got < 0 || key.is_null() {
        return if got < 0 { got } else { BAD_WRAPPED };
    }
    if got != spec {
        unsafe { kcc_free_key(key) };
        return BAD_WRAPPED;
    }
    insert(key, spec)
}

/// Answers `keys (u32) || accounted bytes (u64) || budget (u64) ||
/// evictions (u64) || linear memory bytes (u64)`, all little-endian.
#[no_mangle]
pub extern "C" fn kc_stats() -> i32 {
    init();
    if request_len() != 0 {
        return BAD_REQUEST;
    }
    let c = cache();
    let memory = (core::arch::wasm32::memory_size(0) as u64) * 65536;
    respond(&[
        &(c.keys.len() as u32).to_le_bytes(),
        &c.bytes.to_le_bytes(),
        &c.budget.to_le_bytes(),
        &c.evictions.to_le_bytes(),
        &memory.to_le_bytes(),
    ])
}
