//! Per-worker pool of fixed-size I/O buffers.
//!
//! Each worker thread keeps its own free list (a thread-local: no locks, no
//! sharing). Connections take a buffer only while bytes are in flight and give
//! it back as soon as it is empty, so an idle connection pins no buffer and the
//! steady state allocates nothing.

use std::cell::RefCell;

/// Size of relay read buffers: large enough that a busy transfer moves 64 KiB
/// per syscall, small enough to stay cache-friendly.
pub const BUF_SIZE: usize = 64 * 1024;

/// Free buffers kept per worker (4 MiB); beyond this they go back to the
/// allocator, so a burst of connections does not leave memory pinned.
const MAX_FREE: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Takes an empty buffer with capacity of at least [`BUF_SIZE`].
pub fn take() -> Vec<u8> {
    FREE.with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
}

/// Returns a buffer to this worker's pool (contents are discarded).
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() < BUF_SIZE {
        return;
    }
    buf.clear();
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < MAX_FREE {
            f.push(buf);
        }
    });
}

/// Buffers currently free in this worker's pool (for stats and tests).
pub fn free_count() -> usize {
    FREE.with(|f| f.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers() {
        let a = take();
        let pa = a.as_ptr();
        give(a);
        let b = take();
        assert_eq!(b.as_ptr(), pa);
        assert!(b.is_empty());
        assert!(b.capacity() >= BUF_SIZE);
        give(Vec::with_capacity(10)); // too small: dropped, not pooled
        assert_eq!(free_count(), 0);
    }
}
