//! Readiness without a buffer: waiting for a socket to become readable, a
//! one-byte peek to tell data from an end or a reset, and resets on close.

use std::cell::Cell;
use std::io;
use std::time::Duration;

use monoio::io::OwnedReadHalf;
use monoio::net::TcpStream;

/// The stream behind a read half, for operations on its file descriptor only.
fn stream_of(half: &OwnedReadHalf<TcpStream>) -> &TcpStream {
    // SAFETY: monoio runtimes are single-threaded and `OwnedReadHalf` is
    // `!Send`; the `Rc<UnsafeCell<TcpStream>>` is shared only with the write
    // half on this thread, whose methods take `&mut TcpStream` from the same
    // cell (as monoio's own halves do for both directions). The shared
    // reference made here is used only synchronously, before any await:
    // `peek` reads the raw fd; `TcpStream::readable` (monoio 0.2.4, pinned
    // with `=` in Cargo.toml so an upgrade re-checks this) clones the
    // stream's `SharedFd` into its poll op when first polled and then
    // awaits only that op. So the reference is never read while the write
    // half's `&mut` exists, though the `readable` future keeps it alive.
    unsafe { &*half.0.get() }
}

thread_local! {
    /// This thread's runtime reports exact readiness (io_uring poll ops).
    static EXACT_READINESS: Cell<bool> = const { Cell::new(false) };
}

/// Declares whether this thread's runtime reports exact readiness (set by
/// [`crate::runtime::block_on`]: true on io_uring, false on epoll, whose
/// cached readiness can be stale).
pub fn set_exact_readiness(exact: bool) {
    EXACT_READINESS.set(exact);
}

/// What a non-blocking one-byte peek says about a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// Bytes are waiting.
    Data,
    /// The socket has failed (a reset): the OS error code. A peek consumes
    /// a pending socket error, so the read after it would only see an end
    /// of file; the error must be reported from here, or a reset (a cut
    /// transfer) would pass for a clean close.
    Failed(i32),
    /// The peer closed (FIN) with nothing before it.
    Eof,
    /// Nothing yet: the readiness that woke us was stale.
    Empty,
}

/// The file descriptor of the socket behind a read half.
pub(super) fn raw_fd(half: &OwnedReadHalf<TcpStream>) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    stream_of(half).as_raw_fd()
}

/// Peeks one byte without blocking and without taking a buffer.
pub fn peek(half: &OwnedReadHalf<TcpStream>) -> Peek {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let stream = stream_of(half);
    // SAFETY: the fd belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match sock.recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(0) => Peek::Eof,
        Ok(_) => Peek::Data,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Peek::Empty,
        Err(e) => Peek::Failed(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Waits until the peer has sent bytes or closed, holding no buffer, and
/// says which. The epoll driver's cheap readiness check can be stale (it
/// stays set until a read sees EAGAIN); a peek confirms it, and a stale one
/// is followed by a strict wait, so a reader never parks a buffer in a read
/// that has nothing to return.
///
/// On io_uring a poll completes only when the socket is readable now (data,
/// FIN or error), so the peek (a syscall) is skipped there and an EOF is
/// reported as [`Peek::Data`]: the read that follows returns 0.
pub async fn wait_data(half: &OwnedReadHalf<TcpStream>) -> io::Result<Peek> {
    if EXACT_READINESS.get() {
        stream_of(half).readable(false).await?;
        return Ok(Peek::Data);
    }
    let mut strict = false;
    loop {
        stream_of(half).readable(!strict).await?;
        match peek(half) {
            Peek::Empty => strict = true,
            Peek::Failed(code) => return Err(io::Error::from_raw_os_error(code)),
            p => return Ok(p),
        }
    }
}

/// Whether the peer has sent anything (data or FIN) or reset the connection,
/// checked without blocking. An idle pooled connection for which this is true
/// must not be reused: it was closed, or it is out of sync.
pub fn peer_spoke(half: &OwnedReadHalf<TcpStream>) -> bool {
    peek(half) != Peek::Empty
}

/// Makes the next close of `stream` a reset (RST) rather than a FIN: the
/// way to tell a peer that what it received is incomplete.
pub fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the fd belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
}
