//! One read into several separate ranges of one buffer (`readv`).
//!
//! The TLS sender reads plaintext straight into the places where it will be
//! sealed as records, leaving room between them for each record's header,
//! content type and tag: many records per system call instead of one, and
//! still no copy (see perf/copies.md).

use monoio::buf::IoVecBufMut;

/// Most ranges one read fills.
pub const MAX_SLOTS: usize = 64;

/// A buffer and the equally spaced ranges of its spare capacity that one
/// `readv` fills, in order.
pub struct Slots {
    buf: Vec<u8>,
    first: usize,
    size: usize,
    stride: usize,
    total: usize,
    /// On the heap: monoio moves the operation (and so `self`) after it
    /// has queued the submission entry that points at these iovecs.
    iov: Box<[libc::iovec]>,
    filled: usize,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("first", &self.first)
            .field("size", &self.size)
            .field("stride", &self.stride)
            .field("total", &self.total)
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl Slots {
    /// Ranges of `size` bytes, `stride` apart, the first at `first`, holding
    /// `total` bytes in all (the last range is shorter when `total` is not a
    /// multiple of `size`). They must lie in `buf`'s spare capacity.
    ///
    /// # Panics
    /// When `first < buf.len()`, `size` is 0 or larger than `stride`,
    /// `total` is 0, the last range ends beyond the capacity, or more than
    /// [`MAX_SLOTS`] ranges would be needed.
    pub fn strided(mut buf: Vec<u8>, first: usize, size: usize, stride: usize, total: usize) -> Slots {
        assert!(
            size > 0 && size <= stride && total > 0 && first >= buf.len(),
            "bad slots"
        );
        let count = total.div_ceil(size);
        assert!(count <= MAX_SLOTS, "too many slots");
        let end = first + (count - 1) * stride + (total - (count - 1) * size);
        assert!(end <= buf.capacity(), "slots beyond capacity");
        let base = buf.as_mut_ptr();
        let iov = (0..count)
            .map(|i| libc::iovec {
                // `wrapping_add` keeps this safe code; the offsets are within
                // the allocation (checked above), so the pointers are in bounds.
                iov_base: base.wrapping_add(first + i * stride).cast(),
                iov_len: size.min(total - i * size),
            })
            .collect();
        Slots {
            buf,
            first,
            size,
            stride,
            total,
            iov,
            filled: 0,
        }
    }

    /// The bytes the ranges hold in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// After the read: the buffer, its length extended to the end of the
    /// bytes read (every byte between the old length and that end which the
    /// read did not write, i.e. the gaps before and between ranges, is zero),
    /// and the number of bytes read. The ranges fill in order, so every range
    /// before the last one written is full.
    pub fn finish(mut self) -> (Vec<u8>, usize) {
        let n = self.filled.min(self.total);
        if n == 0 {
            return (self.buf, 0);
        }
        let last = (n - 1) / self.size;
        let end = self.first + last * self.stride + (n - last * self.size);
        let old = self.buf.len();
        let spare = self.buf.spare_capacity_mut();
        // The gaps: before the first range, and after each full range.
        for b in &mut spare[..self.first - old] {
            b.write(0);
        }
        for i in 0..last {
            let gap = self.first + i * self.stride + self.size - old;
            for b in &mut spare[gap..gap + (self.stride - self.size)] {
                b.write(0);
            }
        }
        // SAFETY: bytes from the old length up to `end` are initialised: the
        // gaps were just zeroed, and the ranges hold the `n` bytes the kernel
        // reported, which readv writes to the ranges in order (every range
        // before range `last` is full, range `last` holds the rest). `end` is
        // within the capacity (checked in `strided`).
        unsafe { self.buf.set_len(end) };
        (self.buf, n)
    }
}

// SAFETY: the iovecs point into `buf`'s heap allocation, which does not move
// while `Slots` exists (the Vec is never grown or reallocated here), and each
// covers spare capacity within that allocation (checked in `strided`), so the
// kernel writes only there. The iovec array itself is boxed, so its address
// stays valid when monoio moves `self` between queuing the operation and
// submitting it. `set_init` only records the count; `finish` uses it.
unsafe impl IoVecBufMut for Slots {
    fn write_iovec_ptr(&mut self) -> *mut libc::iovec {
        self.iov.as_mut_ptr()
    }

    fn write_iovec_len(&mut self) -> usize {
        self.iov.len()
    }

    unsafe fn set_init(&mut self, n: usize) {
        self.filled = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};

    #[monoio::test_all]
    async fn readv_fills_slots_in_order_and_zeroes_gaps() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let data: Vec<u8> = (1..=250u8).cycle().take(25).collect();
        let send = data.clone();
        let writer = monoio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(send).await.0.unwrap();
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        writer.await;
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"ab");
        // Ranges of 10 bytes, 13 apart, from 5; 25 bytes fill two and a half.
        let slots = Slots::strided(buf, 5, 10, 13, 40);
        let (res, slots) = c.readv(slots).await;
        assert_eq!(res.unwrap(), 25, "loopback delivers the 25 bytes in one read");
        let (buf, n) = slots.finish();
        assert_eq!(n, 25);
        assert_eq!(buf.len(), 36);
        assert_eq!(&buf[..5], b"ab\0\0\0");
        assert_eq!(&buf[5..15], &data[..10]);
        assert_eq!(&buf[15..18], &[0, 0, 0]);
        assert_eq!(&buf[18..28], &data[10..20]);
        assert_eq!(&buf[28..31], &[0, 0, 0]);
        assert_eq!(&buf[31..36], &data[20..25]);
    }

    #[test]
    #[should_panic(expected = "bad slots")]
    fn slots_start_after_the_data() {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"abc");
        let _ = Slots::strided(buf, 2, 10, 12, 20);
    }

    #[test]
    #[should_panic(expected = "beyond capacity")]
    fn slots_stay_within_capacity() {
        let buf = Vec::with_capacity(16);
        let cap = buf.capacity();
        let _ = Slots::strided(buf, 0, cap, cap, cap + 1);
    }

    #[test]
    fn a_read_of_nothing_leaves_the_buffer_alone() {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"xy");
        let (buf, n) = Slots::strided(buf, 5, 10, 13, 20).finish();
        assert_eq!((buf.as_slice(), n), (&b"xy"[..], 0));
    }
}
