//! A ring of provided buffers for multishot receives (io_uring only).
//!
//! With a provided-buffer ring the kernel picks the buffer when data
//! arrives, not when the read is queued: a connection waiting for its next
//! request holds no buffer, yet one armed multishot receive replaces the
//! readiness wait and the read that followed it (two operations per
//! request, see [`crate::stream::wait_data`]). Each worker registers one
//! small ring with its io_uring runtime ([`install`], called by
//! [`crate::runtime`]); a receive's bytes are copied out of the ring buffer
//! at once and the buffer goes straight back ([`Chunk`]), so the ring only
//! has to cover the completions in flight, not the connections.
//!
//! Off by default ([`DEFAULT_ON`]): it cut the submissions per request
//! but did not win CPU or requests/s in the A/B (perf/levers.md).
//! `MSC_MULTISHOT=1` turns it on; with it off no ring is registered and no
//! memory is mapped.
//!
//! The memory is mapped once per worker thread and never unmapped: the
//! kernel may write into it until the ring it was registered with is torn
//! down, which can finish after the runtime value is dropped. Untouched
//! pages cost nothing resident.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// Size of each provided buffer: a browser's request head fits; a read
/// that fills one is treated as the start of a bulk transfer.
pub const SIZE: usize = SIZE_U32 as usize;
/// [`SIZE`] as the ring entry's length field.
const SIZE_U32: u32 = 4096;
/// Buffers per worker (a power of two).
pub const ENTRIES: u16 = 64;
/// The buffer group id of the ring.
pub const BGID: u16 = 0x6d73;
/// Benchmarking knob: `1`/`on` or `0`/`off` turns multishot receives on or
/// off regardless of the default ([`DEFAULT_ON`]).
pub const MULTISHOT_ENV: &str = "MSC_MULTISHOT";

/// One thread's ring memory: the ring entries (one page) and the buffers.
struct Ring {
    base: *mut BufRingEntry,
    bufs: *mut u8,
    /// Entries registered with the current runtime (a power of two, at most
    /// [`ENTRIES`]).
    entries: Cell<u16>,
    /// The next tail (buffers given to the kernel, wrapping).
    tail: Cell<u16>,
}

thread_local! {
    static RING: Cell<Option<&'static Ring>> = const { Cell::new(None) };
    /// The ring is registered with this thread's current runtime.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// Receives that found the ring empty (ENOBUFS) on this thread.
    static DRY: Cell<u64> = const { Cell::new(0) };
    /// Receives into provided buffers on this thread.
    static RECEIVED: Cell<u64> = const { Cell::new(0) };
    /// This thread's setting, overriding the process's (tests).
    static THREAD_ON: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Turns multishot receives on or off for this thread, overriding
/// [`MULTISHOT_ENV`] (tests). Takes effect for rings installed after it.
pub fn set_thread_enabled(on: bool) {
    THREAD_ON.set(Some(on));
}

/// How many receives on this thread landed in provided buffers.
pub fn received_count() -> u64 {
    RECEIVED.get()
}

/// How many receives on this thread found the ring empty (and fell back to
/// a plain read).
pub fn dry_count() -> u64 {
    DRY.get()
}

pub(crate) fn note_dry() {
    DRY.set(DRY.get() + 1);
}

/// Off by default: multishot receives cut the submissions per keep-alive
/// request from 5 to 3 but did not win requests/s or CPU per request in
/// bench/ab.sh on the machine of record (perf/levers.md).
pub const DEFAULT_ON: bool = false;

/// Whether provided-buffer receives are enabled: this thread's setting
/// ([`set_thread_enabled`]), else [`MULTISHOT_ENV`] (read once), else
/// [`DEFAULT_ON`].
pub fn enabled() -> bool {
    if let Some(on) = THREAD_ON.get() {
        return on;
    }
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| match std::env::var(MULTISHOT_ENV).as_deref() {
        Ok("1" | "on") => true,
        Ok("0" | "off") => false,
        _ => DEFAULT_ON,
    })
}

/// Whether this thread's runtime has a registered ring.
pub fn active() -> bool {
    ACTIVE.get()
}

fn ring() -> io::Result<&'static Ring> {
    if let Some(r) = RING.get() {
        return Ok(r);
    }
    let page = 4096;
    let len = page + ENTRIES as usize * SIZE;
    // SAFETY: a fresh private anonymous mapping; no existing memory is
    // touched. It is never unmapped (see the module docs).
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let r: &'static Ring = Box::leak(Box::new(Ring {
        base: mem.cast(),
        // SAFETY: within the mapping of `len` bytes.
        bufs: unsafe { mem.cast::<u8>().add(page) },
        entries: Cell::new(0),
        tail: Cell::new(0),
    }));
    RING.set(Some(r));
    Ok(r)
}

impl Ring {
    /// Hands buffer `bid` to the kernel.
    fn push(&self, bid: u16) {
        let t = self.tail.get();
        let mask = self.entries.get() - 1;
        // SAFETY: `t & mask` < entries ≤ ENTRIES, within the ring page (16
        // bytes per entry); the kernel reads an entry only once the tail
        // (published below with release ordering) has passed it, and this
        // thread is the ring's only writer.
        unsafe {
            let e = &mut *self.base.add((t & mask) as usize);
            e.set_addr(self.bufs.add(bid as usize * SIZE) as u64);
            e.set_len(SIZE_U32);
            e.set_bid(bid);
        }
        self.tail.set(t.wrapping_add(1));
    }

    /// Makes the pushed entries visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail shares entry 0's reserved field, a u16 the kernel
        // reads atomically; 2-byte aligned within the ring page.
        let tail = unsafe { &*(BufRingEntry::tail(self.base).cast::<AtomicU16>()) };
        tail.store(self.tail.get(), Ordering::Release);
    }
}

/// Registers this thread's ring (`entries` buffers, a power of two up to
/// [`ENTRIES`]) with the current io_uring runtime. False (and multishot
/// receives stay off on this thread) when disabled, on another driver, or
/// when the kernel refuses.
pub fn install(entries: u16) -> bool {
    if ACTIVE.replace(false) {
        // Registered already with this runtime (a test resizing it): no
        // receive may be armed on the old ring.
        let _ = monoio::uring_ext::with_submitter(|s| s.unregister_buf_ring(BGID));
    }
    if !enabled() || !entries.is_power_of_two() || entries > ENTRIES {
        return false;
    }
    let r = match ring() {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("provided-buffer ring: no memory: {e}");
            return false;
        }
    };
    r.entries.set(entries);
    r.tail.set(0);
    for bid in 0..entries {
        r.push(bid);
    }
    r.publish();
    // SAFETY: the ring memory lives for the rest of the process and holds
    // `entries` initialised entries; the runtime owning the submitter is the
    // one this thread runs.
    let res = monoio::uring_ext::with_submitter(|s| unsafe { s.register_buf_ring(r.base as u64, entries, BGID) });
    match res {
        Some(Ok(())) => {
            ACTIVE.set(true);
            true
        }
        Some(Err(e)) => {
            tracing::debug!("provided-buffer ring refused by the kernel: {e}");
            false
        }
        None => false,
    }
}

/// The runtime this thread's ring was registered with is ending.
pub fn uninstall() {
    ACTIVE.set(false);
}

/// A received chunk in a provided buffer. Its bytes must be copied out; the
/// buffer goes back to the kernel when the chunk is dropped.
#[derive(Debug)]
pub struct Chunk {
    bid: u16,
    len: usize,
}

impl Chunk {
    /// The chunk for a completion that selected buffer `bid` with `len` bytes.
    pub(crate) fn new(bid: u16, len: usize) -> Chunk {
        RECEIVED.set(RECEIVED.get() + 1);
        Chunk {
            bid,
            len: len.min(SIZE),
        }
    }

    /// The bytes received.
    pub fn bytes(&self) -> &[u8] {
        match RING.get() {
            // SAFETY: the kernel wrote `len` (≤ SIZE) bytes into buffer
            // `bid` and handed it to us; it is not given back (so not
            // rewritten) before this chunk is dropped, which the borrow
            // of `self` outlives.
            Some(r) if self.bid < ENTRIES => unsafe {
                std::slice::from_raw_parts(r.bufs.add(self.bid as usize * SIZE), self.len)
            },
            _ => &[],
        }
    }

    /// Number of bytes received.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        give_back(self.bid);
    }
}

/// Returns buffer `bid` to the kernel (if the ring is still registered).
pub(crate) fn give_back(bid: u16) {
    if !ACTIVE.get() {
        return;
    }
    if let Some(r) = RING.get()
        && bid < r.entries.get()
    {
        r.push(bid);
        r.publish();
    }
}

/// The orphan function of multishot receives: a completion nobody will
/// take gives its buffer back.
pub(crate) fn orphan(_res: io::Result<u32>, flags: u32) {
    if let Some(bid) = io_uring::cqueue::buffer_select(flags) {
        give_back(bid);
    }
}
