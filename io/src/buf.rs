//! Per-worker pools of I/O buffers, in two sizes.
//!
//! Each worker thread keeps its own free lists (thread-locals: no locks, no
//! sharing). Connections take a buffer only while bytes are in flight and give
//! it back as soon as it is empty, so an idle connection pins no buffer and the
//! steady state allocates nothing. A read that starts from idle takes a small
//! buffer (requests, responses, TLS alerts fit); a reader whose last read
//! filled its buffer takes a large one: bulk transfers move up to 256 KiB
//! (15 TLS records) per system call, which measured 1.23x the throughput of
//! 64 KiB reads at 0.74x the client CPU per GB (perf/copies.md). So a burst
//! of short exchanges, or of connections closing at once, costs 4 KiB per
//! connection in flight, and only bulk transfers take large buffers.

use std::cell::RefCell;

/// Size of bulk read buffers.
pub const BUF_SIZE: usize = 256 * 1024;
/// Size of the buffers a read from idle starts with.
pub const SMALL_SIZE: usize = 4 * 1024;

/// Free buffers kept per worker and size (4 MiB and 1 MiB); beyond this they
/// go back to the allocator, so a burst does not leave memory pinned.
const MAX_FREE: usize = 16;
const MAX_FREE_SMALL: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FREE_SMALL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Takes an empty bulk buffer (capacity at least [`BUF_SIZE`]).
pub fn take() -> Vec<u8> {
    FREE.with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
}

/// Takes an empty small buffer (capacity at least [`SMALL_SIZE`]).
pub fn take_small() -> Vec<u8> {
    FREE_SMALL
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(SMALL_SIZE))
}

/// A buffer for `n` bytes: small when they fit.
pub fn take_for(n: usize) -> Vec<u8> {
    if n <= SMALL_SIZE { take_small() } else { take() }
}

/// Whether `buf` is a small buffer (a candidate for growing into a bulk one).
pub fn is_small(buf: &Vec<u8>) -> bool {
    buf.capacity() < BUF_SIZE
}

/// Returns a buffer to this worker's pool (contents are discarded).
pub fn give(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    if cap < SMALL_SIZE {
        return;
    }
    buf.clear();
    let (list, max) = if cap >= BUF_SIZE {
        (&FREE, MAX_FREE)
    } else {
        (&FREE_SMALL, MAX_FREE_SMALL)
    };
    list.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < max {
            f.push(buf);
        }
    });
}

/// Replaces a small buffer by a bulk one holding the same bytes.
pub fn grow(buf: &mut Vec<u8>) {
    let mut big = take();
    big.extend_from_slice(buf);
    give(std::mem::replace(buf, big));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_by_size() {
        let a = take();
        let pa = a.as_ptr();
        give(a);
        let b = take();
        assert_eq!(b.as_ptr(), pa);
        assert!(b.is_empty() && b.capacity() >= BUF_SIZE);
        let s = take_small();
        assert!(is_small(&s) && s.capacity() >= SMALL_SIZE);
        let ps = s.as_ptr();
        give(s);
        let again = take_for(100);
        assert_eq!(again.as_ptr(), ps);
        drop(again);
        give(Vec::with_capacity(10)); // too small: dropped, not pooled
        let mut g = take_small();
        g.extend_from_slice(b"abc");
        grow(&mut g);
        assert_eq!(&g[..], b"abc");
        assert!(!is_small(&g));
    }
}
