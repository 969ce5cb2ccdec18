//! keycell's signer guest. Private keys exist only in this module's linear
//! memory; the host reaches it through the functions in ABI.md and never
//! sees that memory. Rust owns the ABI, the key cache, PEM armor and the
//! zeroing of key buffers; BoringSSL (through c/, behind `boring`) does all
//! crypto.
//!
//! Modules by job: `abi` (imports, request and response), `memory` (the
//! zeroing allocator and `Secret`), `codes` (the codes shared with the host
//! and the C side), `pem`, `cache`, `keys` (load, generate, list, drop),
//! `sign` (signing, and verifying with a public key), `seal` (master key,
//! sealed blobs, wrapped imports). Everything that calls into C builds for
//! wasm32 only; `codes`, `memory`, `pem` and `cache` also build on the host,
//! for `cargo test`.

#![cfg_attr(target_arch = "wasm32", no_std)]
// Debian's rustc 1.63 needs this (unstable) for no_std + alloc; see memory.rs.
#![cfg_attr(target_arch = "wasm32", feature(alloc_error_handler))]
// On the host only the testable half is built, and the rest of it unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

extern crate alloc;

mod cache;
mod codes;
mod memory;
mod pem;

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(target_arch = "wasm32")]
mod boring;
#[cfg(target_arch = "wasm32")]
mod keys;
#[cfg(target_arch = "wasm32")]
mod seal;
#[cfg(target_arch = "wasm32")]
mod sign;

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
