//! One read into several separate ranges of one buffer (`readv`).
//!
//! The TLS sender reads plaintext straight into the places where it will be
//! sealed as records, leaving room between them for each record's header,
//! content type and tag: up to [`MAX_SLOTS`] records per system call instead
//! of one, and still no copy (see perf/copies.md).

use std::ops::Range;

use monoio::buf::IoVecBufMut;

/// Most ranges one read fills.
pub const MAX_SLOTS: usize = 4;

/// A buffer and the ranges of its spare capacity one `readv` fills, in order.
pub struct Slots {
    buf: Vec<u8>,
    slots: [Range<usize>; MAX_SLOTS],
    count: usize,
    /// On the heap: monoio moves the operation (and so `self`) after it
    /// has queued the submission entry that points at these iovecs.
    iov: Box<[libc::iovec; MAX_SLOTS]>,
    filled: usize,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("slots", &&self.slots[..self.count])
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl Slots {
    /// Ranges `slots` of `buf`'s spare capacity, to be filled in order. They
    /// must be non-empty, ascending, non-overlapping, start at or after
    /// `buf.len()` and end within its capacity.
    ///
    /// # Panics
    /// When they are not, or there are more than [`MAX_SLOTS`] or none.
    pub fn new(mut buf: Vec<u8>, slots: &[Range<usize>]) -> Slots {
        assert!(!slots.is_empty() && slots.len() <= MAX_SLOTS, "1..={MAX_SLOTS} slots");
        let mut from = buf.len();
        for s in slots {
            assert!(
                s.start >= from && s.start < s.end && s.end <= buf.capacity(),
                "bad slot {s:?}"
            );
            from = s.end;
        }
        let base = buf.as_mut_ptr();
        let mut iov = Box::new(
            [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_SLOTS],
        );
        let mut ranges: [Range<usize>; MAX_SLOTS] = Default::default();
        for (i, s) in slots.iter().enumerate() {
            // `wrapping_add` keeps this safe code; the offsets are within the
            // allocation (checked above), so the pointers are in bounds.
            iov[i] = libc::iovec {
                iov_base: base.wrapping_add(s.start).cast(),
                iov_len: s.len(),
            };
            ranges[i] = s.clone();
        }
        Slots {
            buf,
            slots: ranges,
            count: slots.len(),
            iov,
            filled: 0,
        }
    }

    /// After the read: the buffer, its length extended to the end of the
    /// bytes read (every byte between the old length and that end which the
    /// read did not write, i.e. the gaps between slots, is zero), and how
    /// many bytes each slot received (zeros after the last one written).
    pub fn finish(mut self) -> (Vec<u8>, [usize; MAX_SLOTS]) {
        let mut got = [0; MAX_SLOTS];
        let mut left = self.filled;
        let mut end = self.buf.len();
        for (i, s) in self.slots[..self.count].iter().enumerate() {
            if left == 0 {
                break;
            }
            let n = left.min(s.len());
            got[i] = n;
            left -= n;
            // The gap before this slot: zero it so every byte is initialised.
            let len = end - self.buf.len();
            let spare = self.buf.spare_capacity_mut();
            for b in &mut spare[len..len + (s.start - end)] {
                b.write(0);
            }
            end = s.start + n;
        }
        // SAFETY: bytes from the old length up to `end` are initialised: the
        // gaps were just zeroed, and each slot's first `got[i]` bytes were
        // written by the read (the kernel reported `filled` bytes, which
        // readv places in the slots in order). `end` is within the capacity
        // (checked in `new`).
        unsafe { self.buf.set_len(end) };
        (self.buf, got)
    }
}

// SAFETY: the iovecs point into `buf`'s heap allocation, which does not move
// while `Slots` exists (the Vec is never grown or reallocated here), and each
// covers spare capacity within that allocation (checked in `new`), so the
// kernel writes only there. The iovec array itself is boxed, so its address
// stays valid when monoio moves `self` between queuing the operation and
// submitting it. `set_init` only records the count; `finish` uses it.
unsafe impl IoVecBufMut for Slots {
    fn write_iovec_ptr(&mut self) -> *mut libc::iovec {
        self.iov.as_mut_ptr()
    }

    fn write_iovec_len(&mut self) -> usize {
        self.count
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
        // Slots of 10 bytes with gaps of 3; 25 bytes fill two and a half.
        let slots = Slots::new(buf, &[5..15, 18..28, 31..41, 44..54]);
        let mut total = 0;
        let (res, slots) = c.readv(slots).await;
        total += res.unwrap();
        assert_eq!(total, 25, "loopback delivers the 25 bytes in one read");
        let (buf, got) = slots.finish();
        assert_eq!(got, [10, 10, 5, 0]);
        assert_eq!(buf.len(), 36);
        assert_eq!(&buf[..5], b"ab\0\0\0");
        assert_eq!(&buf[5..15], &data[..10]);
        assert_eq!(&buf[15..18], &[0, 0, 0]);
        assert_eq!(&buf[18..28], &data[10..20]);
        assert_eq!(&buf[28..31], &[0, 0, 0]);
        assert_eq!(&buf[31..36], &data[20..25]);
    }

    #[test]
    #[should_panic(expected = "bad slot")]
    fn slots_must_ascend() {
        let _ = Slots::new(Vec::with_capacity(64), &[10..20, 5..8]);
    }

    #[test]
    #[should_panic(expected = "bad slot")]
    fn slots_stay_within_capacity() {
        let buf = Vec::with_capacity(16);
        let cap = buf.capacity();
        let _ = Slots::new(buf, &[0..cap + 1]);
    }
}
