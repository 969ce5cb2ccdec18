//! Memory that held key material: the zeroing allocator every Rust buffer
//! goes through in the guest, and `Secret`, the buffer for key bytes.

use alloc::vec::Vec;
use core::ptr;
use core::sync::atomic::{compiler_fence, Ordering};

/// Overwrites memory in a way the optimizer may not drop, even right
/// before the memory is freed.
pub(crate) unsafe fn wipe_raw(p: *mut u8, n: usize) {
    for i in 0..n {
        ptr::write_volatile(p.add(i), 0);
    }
    compiler_fence(Ordering::SeqCst);
}

#[cfg(target_arch = "wasm32")]
mod zeroing_malloc {
    use super::wipe_raw;
    use core::alloc::{GlobalAlloc, Layout};

    extern "C" {
        fn malloc(size: usize) -> *mut u8;
        fn aligned_alloc(align: usize, size: usize) -> *mut u8;
        fn free(p: *mut u8);
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

    // Debian's rustc 1.63 has no default handler for allocation failure in
    // no_std; fallible paths use try_reserve and answer NO_SPACE, so this
    // handler only guards the rest.
    #[alloc_error_handler]
    fn alloc_error(_: Layout) -> ! {
        core::arch::wasm32::unreachable()
    }
}

/// A byte buffer that held key material: fixed capacity (it never
/// reallocates, which would leave a copy behind) and zeroed on drop.
pub(crate) struct Secret(Vec<u8>);

impl Secret {
    pub(crate) fn with_capacity(n: usize) -> Option<Secret> {
        try_vec(n).map(Secret)
    }

    /// Appends a byte; past the capacity the byte is dropped rather than
    /// the buffer moved.
    pub(crate) fn push(&mut self, b: u8) {
        if self.0.len() < self.0.capacity() {
            self.0.push(b);
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let cap = self.0.capacity();
        unsafe { wipe_raw(self.0.as_mut_ptr(), cap) };
    }
}

/// An empty vector with room for `n` bytes, or None when that much memory
/// is not to be had (the caller answers NO_SPACE instead of trapping).
pub(crate) fn try_vec(n: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_keeps_its_capacity_and_drops_what_overflows() {
        let mut s = Secret::with_capacity(3).unwrap();
        let cap = s.0.capacity();
        for b in 0..(cap as u8 + 2) {
            s.push(b);
        }
        assert_eq!(s.bytes().len(), cap);
        assert_eq!(s.0.capacity(), cap);
    }

    #[test]
    fn wipe_raw_zeroes_the_range_only() {
        let mut b = [7u8; 8];
        unsafe { wipe_raw(b.as_mut_ptr().add(2), 4) };
        assert_eq!(b, [7, 7, 0, 0, 0, 0, 7, 7]);
    }
}
