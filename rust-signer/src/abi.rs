//! The host side of the ABI (ABI.md): the guest pulls its request through
//! the `keycell` imports and pushes its response, and never hands the host
//! a pointer into its memory.

use crate::boring::kcc_wipe_stack;
use crate::cache::KeyId;
use crate::memory::try_vec;
use alloc::vec::Vec;

#[link(wasm_import_module = "keycell")]
extern "C" {
    fn in_len() -> i32;
    fn in_read8(off: i32) -> i64;
    fn in_read1(off: i32) -> i32;
    fn out_write8(off: i32, v: i64);
    fn out_write1(off: i32, b: i32);
}

extern "C" {
    // Synthesized by the linker. The module's _initialize export is removed
    // with the other non-ABI exports, so the guest runs constructors itself.
    fn __wasm_call_ctors();
}

/// Runs once, at the start of the first export called.
pub(crate) fn init() {
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
pub(crate) struct StackWipe;

impl Drop for StackWipe {
    fn drop(&mut self) {
        unsafe { kcc_wipe_stack() };
    }
}

pub(crate) fn request_len() -> usize {
    let n = unsafe { in_len() };
    if n < 0 {
        0
    } else {
        n as usize
    }
}

/// Request byte `off` for secret input, or None past the end. Each byte
/// crosses as a small integer, which is no heap object on the host side.
pub(crate) fn read_secret_byte(off: usize) -> Option<u8> {
    let b = unsafe { in_read1(off as i32) };
    u8::try_from(b).ok()
}

/// Reads non-secret request bytes `off..off+out.len()`.
pub(crate) fn read_public(off: usize, out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let v = unsafe { in_read8((off + i * 8) as i32) }.to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// The key id that starts most requests.
pub(crate) fn read_id() -> KeyId {
    let mut id = [0u8; 32];
    read_public(0, &mut id);
    id
}

/// Reads non-secret request bytes `off..len` into a new buffer.
pub(crate) fn read_rest(off: usize) -> Option<Vec<u8>> {
    read_span(off, request_len().checked_sub(off)?)
}

/// Reads non-secret request bytes `off..off+n` into a new buffer; None when
/// it cannot be allocated.
pub(crate) fn read_span(off: usize, n: usize) -> Option<Vec<u8>> {
    let mut v = try_vec(n)?;
    v.resize(n, 0);
    read_public(off, &mut v);
    Some(v)
}

pub(crate) fn u64_at(off: usize) -> u64 {
    let mut b = [0u8; 8];
    read_public(off, &mut b);
    u64::from_le_bytes(b)
}

/// Writes the response and returns its length, as every export does.
pub(crate) fn respond(parts: &[&[u8]]) -> i32 {
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

/// Writes a response byte by byte; for the master key's one trip out, so
/// that no byte of it becomes a host-side BigInt.
pub(crate) fn respond_bytewise(parts: &[&[u8]]) -> i32 {
    let mut off = 0i32;
    for part in parts {
        for &b in part.iter() {
            unsafe { out_write1(off, b as i32) };
            off += 1;
        }
    }
    off
}
