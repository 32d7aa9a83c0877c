//! Byte sources and sinks over monoio's owned-buffer I/O, and the relay.
//!
//! A [`Source`] keeps what it has read in a pooled buffer and lends it to a
//! [`Sink`] by value (monoio I/O takes ownership of buffers), so forwarding
//! never copies: the bytes that were read are the bytes written. A source that
//! is waiting for its peer holds no buffer at all (it waits for readability
//! first), which keeps idle connections cheap.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use crate::buf;
use crate::framing::{BodyTracker, FramingError};
use crate::head::{HeadError, Limits, RequestHead, ResponseHead, find_head_end};
use crate::signal::Signal;

/// Something that reads bytes into its own buffer.
#[allow(
    async_fn_in_trait,
    reason = "single-threaded runtime: these futures are !Send by design"
)]
pub trait Source {
    /// Reads more bytes, appending to [`Source::data`]. Returns how many
    /// arrived; `Ok(0)` means the peer finished sending.
    ///
    /// Not cancel-safe: if the returned future is dropped, buffered bytes may
    /// be lost. Callers close the connection after a timeout.
    async fn fill(&mut self) -> io::Result<usize>;

    /// Bytes read and not yet consumed.
    fn data(&self) -> &[u8];

    /// Drops the first `n` bytes of [`Source::data`].
    fn consume(&mut self, n: usize);

    /// Writes the first `n` bytes of [`Source::data`] to `sink` and consumes them.
    async fn forward<K: Sink>(&mut self, n: usize, sink: &mut K) -> io::Result<()>;

    /// The plain TCP reader behind this source, if it is one (lets a TLS sink
    /// read straight into its record buffer).
    fn as_plain(&mut self) -> Option<&mut PlainReader> {
        None
    }

    /// Waits until the peer has sent something (or closed), holding no
    /// buffer: the cheap way for an idle connection to wait for its next
    /// request. Cancel-safe. Returns at once if bytes are buffered.
    async fn ready(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Data is expected soon (a response to a request just sent): the next
    /// read may hold a buffer while it waits, saving a readiness round trip.
    fn expect_data(&mut self) {}
}

impl<S: Source> Source for &mut S {
    async fn fill(&mut self) -> io::Result<usize> {
        (**self).fill().await
    }

    fn data(&self) -> &[u8] {
        (**self).data()
    }

    fn consume(&mut self, n: usize) {
        (**self).consume(n)
    }

    async fn forward<K: Sink>(&mut self, n: usize, sink: &mut K) -> io::Result<()> {
        (**self).forward(n, sink).await
    }

    fn as_plain(&mut self) -> Option<&mut PlainReader> {
        (**self).as_plain()
    }

    async fn ready(&mut self) -> io::Result<()> {
        (**self).ready().await
    }

    fn expect_data(&mut self) {
        (**self).expect_data()
    }
}

/// After [`Source::ready`]: reads the first bytes of the next message unless
/// some are buffered. False when the peer closed or the read failed. (Reading
/// them before building a request's state means a closing connection costs
/// no request state.)
pub async fn fill_first<S: Source>(src: &mut S) -> bool {
    !src.data().is_empty() || matches!(src.fill().await, Ok(n) if n > 0)
}

/// Something that writes bytes.
#[allow(
    async_fn_in_trait,
    reason = "single-threaded runtime: these futures are !Send by design"
)]
pub trait Sink {
    /// Writes all of `buf[range]` and hands the buffer back.
    async fn write_slice(&mut self, buf: Vec<u8>, range: Range<usize>) -> (io::Result<()>, Vec<u8>);

    /// Writes all of `data` (copies it; for heads and short replies).
    async fn write_bytes(&mut self, data: &[u8]) -> io::Result<()>;

    /// Signals the end of this direction (TCP FIN; for TLS, close_notify first).
    async fn close_write(&mut self) -> io::Result<()>;

    /// Moves up to `max` bytes from `src` to this sink, reading if `src` has
    /// nothing buffered. Returns how many moved; 0 means `src` reached EOF.
    async fn absorb<S: Source>(&mut self, src: &mut S, max: usize) -> io::Result<usize>
    where
        Self: Sized,
    {
        if src.data().is_empty() && src.fill().await? == 0 {
            return Ok(0);
        }
        let n = src.data().len().min(max);
        src.forward(n, self).await?;
        Ok(n)
    }
}

/// The stream behind a read half, for operations on its file descriptor only.
fn stream_of(half: &OwnedReadHalf<TcpStream>) -> &TcpStream {
    // SAFETY: monoio runtimes are single-threaded and `OwnedReadHalf` is
    // `!Send`; the `Rc<UnsafeCell<TcpStream>>` is shared only with the write
    // half on this thread. We take a shared reference for fd-level operations
    // (a poll op, a non-blocking peek), the same access monoio's own
    // `OwnedReadHalf::peer_addr` performs; they never touch the stream's
    // read/write state.
    unsafe { &*half.0.get() }
}

impl<K: Sink> Sink for &mut K {
    async fn write_slice(&mut self, buf: Vec<u8>, range: Range<usize>) -> (io::Result<()>, Vec<u8>) {
        (**self).write_slice(buf, range).await
    }

    async fn write_bytes(&mut self, data: &[u8]) -> io::Result<()> {
        (**self).write_bytes(data).await
    }

    async fn close_write(&mut self) -> io::Result<()> {
        (**self).close_write().await
    }

    async fn absorb<S: Source>(&mut self, src: &mut S, max: usize) -> io::Result<usize> {
        (**self).absorb(src, max).await
    }
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

/// The reading half of a plain TCP connection, with a pooled buffer.
#[derive(Debug)]
pub struct PlainReader {
    half: OwnedReadHalf<TcpStream>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    /// The socket was seen readable and not read since: skip the next wait.
    readable: bool,
    /// The last read filled its buffer: a bulk transfer, use a big buffer.
    bulk: bool,
}

/// The writing half of a plain TCP connection.
#[derive(Debug)]
pub struct PlainWriter {
    half: OwnedWriteHalf<TcpStream>,
}

/// Splits a TCP stream into a pooled-buffer reader and a writer.
pub fn split(stream: TcpStream) -> (PlainReader, PlainWriter) {
    let (r, w) = stream.into_split();
    (
        PlainReader {
            half: r,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            readable: false,
            bulk: false,
        },
        PlainWriter { half: w },
    )
}

/// Closes a plain connection with one system call: the close sends the FIN
/// (or a reset, if unread bytes remain). Dropping the halves separately would
/// first shut the write side down (monoio's write half does so on drop).
pub fn close(r: PlainReader, w: PlainWriter) {
    if let Ok(stream) = r.half.reunite(w.half) {
        drop(stream);
    }
}

/// Makes the next close of `stream` a reset (RST) rather than a FIN: the
/// way to tell a peer that what it received is incomplete.
pub fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the fd belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
}

/// Closes a plain connection with a reset: the peer sees a cut, not an end.
pub fn abort(r: PlainReader, w: PlainWriter) {
    if let Ok(stream) = r.half.reunite(w.half) {
        reset_on_close(&stream);
        drop(stream);
    }
}

impl PlainReader {
    /// Whether the peer has finished sending.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Reads straight into `b` (used by TLS to read plaintext into its record
    /// buffer). Only valid when nothing is buffered.
    pub async fn read_direct<B: IoBufMut>(&mut self, mut b: B) -> monoio::BufResult<usize, B> {
        match self.direct_ready().await {
            Err(e) => return (Err(e), b),
            Ok(false) => return (Ok(0), b),
            Ok(true) => {}
        }
        let want = b.bytes_total();
        let (res, b) = self.half.read(b).await;
        self.note_direct(&res, want);
        (res, b)
    }

    /// Like [`PlainReader::read_direct`], into several ranges of one buffer
    /// with a single `readv` (the TLS sender fills up to three records' worth
    /// of plaintext per system call this way).
    pub async fn read_direct_v(&mut self, slots: crate::iov::Slots) -> monoio::BufResult<usize, crate::iov::Slots> {
        match self.direct_ready().await {
            Err(e) => return (Err(e), slots),
            Ok(false) => return (Ok(0), slots),
            Ok(true) => {}
        }
        let want = slots.total();
        let (res, slots) = self.half.readv(slots).await;
        self.note_direct(&res, want);
        (res, slots)
    }

    /// After a direct read of up to `want` bytes: EOF, and whether the next
    /// read should be a bulk one (this one filled its request).
    fn note_direct(&mut self, res: &io::Result<usize>, want: usize) {
        match res {
            Ok(0) => self.eof = true,
            Ok(n) => self.bulk = *n == want,
            Err(_) => {}
        }
    }

    /// Whether the last read filled its buffer or request: more is coming
    /// in bulk, read it with a big buffer.
    pub fn is_bulk(&self) -> bool {
        self.bulk
    }

    /// Before a read with nothing buffered: waits for data without holding a
    /// buffer in a read. False when the peer has finished.
    async fn direct_ready(&mut self) -> io::Result<bool> {
        debug_assert!(self.data().is_empty());
        if self.eof {
            return Ok(false);
        }
        if !std::mem::take(&mut self.readable) && wait_data(&self.half).await? == Peek::Eof {
            self.eof = true;
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether the peer has finished: a FIN already read, or (after
    /// [`Source::ready`]) one waiting with no data before it. Takes no buffer.
    pub fn is_eof_now(&self) -> bool {
        self.eof && self.data().is_empty()
    }

    /// Whether this idle connection's peer has closed it or sent unexpected
    /// bytes (see [`peer_spoke`]).
    pub fn is_stale(&self) -> bool {
        self.eof || !self.data().is_empty() || peer_spoke(&self.half)
    }

    fn release_if_empty(&mut self) {
        if self.pos == self.buf.len() && self.buf.capacity() > 0 {
            buf::give(std::mem::take(&mut self.buf));
            self.pos = 0;
        }
    }
}

impl Source for PlainReader {
    async fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if self.pos == self.buf.len() {
            // Nothing buffered: wait without pinning a buffer.
            self.release_if_empty();
            if !self.direct_ready().await? {
                return Ok(0);
            }
            if self.buf.capacity() == 0 {
                self.buf = if self.bulk { buf::take() } else { buf::take_small() };
            }
        } else if self.buf.len() == self.buf.capacity() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos.., 0);
                self.buf.truncate(self.buf.len() - self.pos);
                self.pos = 0;
            } else if buf::is_small(&self.buf) {
                buf::grow(&mut self.buf);
            } else {
                return Err(io::Error::other("read buffer full"));
            }
        }
        let len = self.buf.len();
        let cap = self.buf.capacity();
        let (res, slice) = self.half.read(std::mem::take(&mut self.buf).slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        let n = res?;
        self.bulk = n == cap - len;
        if n == 0 {
            self.eof = true;
            self.release_if_empty();
        }
        Ok(n)
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(self.pos + n <= self.buf.len());
        self.pos += n;
        self.release_if_empty();
    }

    async fn forward<K: Sink>(&mut self, n: usize, sink: &mut K) -> io::Result<()> {
        let range = self.pos..self.pos + n;
        let (res, b) = sink.write_slice(std::mem::take(&mut self.buf), range).await;
        self.buf = b;
        res?;
        self.consume(n);
        Ok(())
    }

    fn as_plain(&mut self) -> Option<&mut PlainReader> {
        Some(self)
    }

    async fn ready(&mut self) -> io::Result<()> {
        if self.eof || !self.data().is_empty() || self.readable {
            return Ok(());
        }
        match wait_data(&self.half).await? {
            Peek::Eof => self.eof = true,
            _ => self.readable = true,
        }
        Ok(())
    }

    fn expect_data(&mut self) {
        self.readable = true;
    }
}

impl PlainWriter {
    /// Writes an owned buffer completely.
    pub async fn write_owned<B: monoio::buf::IoBuf>(&mut self, b: B) -> monoio::BufResult<usize, B> {
        self.half.write_all(b).await
    }
}

impl Sink for PlainWriter {
    async fn write_slice(&mut self, buf: Vec<u8>, range: Range<usize>) -> (io::Result<()>, Vec<u8>) {
        use monoio::buf::IoBuf;
        let (res, slice) = self.half.write_all(buf.slice(range)).await;
        (res.map(drop), slice.into_inner())
    }

    async fn write_bytes(&mut self, data: &[u8]) -> io::Result<()> {
        let mut b = buf::take_for(data.len());
        let mut res = Ok(());
        for chunk in data.chunks(b.capacity()) {
            b.clear();
            b.extend_from_slice(chunk);
            let (r, back) = self.half.write_all(b).await;
            b = back;
            if let Err(e) = r {
                res = Err(e);
                break;
            }
        }
        buf::give(b);
        res
    }

    async fn close_write(&mut self) -> io::Result<()> {
        self.half.shutdown().await
    }
}

/// Shared state of the two directions of one relay: when one fails the other
/// is stopped, and idleness is judged on both directions together.
#[derive(Debug)]
pub struct RelayState {
    failed: Signal,
    last_activity: Cell<Instant>,
    idle: Duration,
}

impl RelayState {
    pub fn new(idle: Duration) -> Rc<RelayState> {
        Rc::new(RelayState {
            failed: Signal::new(),
            last_activity: Cell::new(Instant::now()),
            idle,
        })
    }

    /// Marks the relay failed and wakes the other direction.
    pub fn fail(&self) {
        self.failed.fire();
    }

    /// Records activity (restarts the idle clock).
    pub fn touch(&self) {
        self.last_activity.set(Instant::now());
    }

    /// Runs `fut` unless the relay fails first; the idle timer restarts while
    /// the other direction is active.
    pub async fn guard<T>(&self, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        let mut fut = std::pin::pin!(fut);
        loop {
            let since = self.last_activity.get().elapsed();
            let wait = self.idle.saturating_sub(since).max(Duration::from_millis(1));
            let guarded = Aborted {
                state: self,
                fut: fut.as_mut(),
                slot: None,
            };
            match crate::deadline::timeout(wait, guarded).await {
                Ok(r) => return r,
                Err(_) if self.last_activity.get().elapsed() >= self.idle => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
                }
                Err(_) => continue,
            }
        }
    }
}

/// A guarded operation: fails as soon as the relay fails. While pending it
/// holds one waiter slot of the failure signal, released when it completes
/// or is dropped.
struct Aborted<'a, F> {
    state: &'a RelayState,
    fut: Pin<&'a mut F>,
    slot: Option<usize>,
}

impl<F> Drop for Aborted<'_, F> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.state.failed.release(i);
        }
    }
}

impl<T, F: Future<Output = io::Result<T>>> Future for Aborted<'_, F> {
    type Output = io::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.state.failed.is_fired() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "other direction failed",
            )));
        }
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                let slot = self.slot;
                self.slot = Some(self.state.failed.register(slot, cx.waker()));
                Poll::Pending
            }
        }
    }
}

/// Copies `src` to `sink` until `src` ends, then closes `sink`'s direction.
/// Returns the bytes moved, and how it ended.
pub async fn pump<S: Source, K: Sink>(src: &mut S, sink: &mut K, state: &RelayState) -> Moved {
    let mut total = 0u64;
    let res: io::Result<()> = async {
        loop {
            let n = state.guard(sink.absorb(src, usize::MAX)).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
            state.touch();
        }
        state.guard(sink.close_write()).await
    }
    .await;
    if res.is_err() {
        state.fail();
    }
    Moved {
        bytes: total,
        result: res,
    }
}

/// What one direction of a relay moved, and how it ended.
#[derive(Debug)]
pub struct Moved {
    pub bytes: u64,
    pub result: io::Result<()>,
}

/// Relays both directions until both have ended (half-close is propagated:
/// each direction's end closes the matching write side). Returns what moved
/// a→b and b→a; if one direction fails the other is stopped.
pub async fn relay<A: Source, AK: Sink, B: Source, BK: Sink>(
    a: &mut A,
    a_sink: &mut AK,
    b: &mut B,
    b_sink: &mut BK,
    idle: Duration,
) -> (Moved, Moved) {
    let state = RelayState::new(idle);
    monoio::join!(pump(a, b_sink, &state), pump(b, a_sink, &state))
}

/// Why reading a head failed.
#[derive(Debug)]
pub enum HeadReadError {
    /// The peer sent something that is not an acceptable head.
    Head(HeadError),
    /// The head did not complete in time (408).
    Timeout,
    /// The peer closed in the middle of a head.
    Truncated,
    Io(io::Error),
}

impl From<io::Error> for HeadReadError {
    fn from(e: io::Error) -> Self {
        HeadReadError::Io(e)
    }
}

/// Reads until `src.data()` starts with a complete head and parses it with
/// `parse`. `idle` bounds the wait for the first byte (a keep-alive
/// connection between requests), `head` bounds the time from the first byte
/// to the end of the head. `Ok(None)`: the peer closed cleanly before a byte.
pub async fn read_head<S: Source, H>(
    src: &mut S,
    idle: Duration,
    head: Duration,
    limits: Limits,
    parse: impl Fn(&[u8], Limits) -> Result<Option<H>, HeadError>,
) -> Result<Option<H>, HeadReadError> {
    let mut scanned = 0;
    let mut deadline: Option<Instant> = None;
    loop {
        // Empty lines before a message are ignored (RFC 9112 section 2.2):
        // they must never be taken, or forwarded, as its first line.
        if scanned == 0 {
            let blank = leading_blank_lines(src.data());
            if blank > 0 {
                src.consume(blank);
                if src.data().is_empty() {
                    deadline = None;
                }
            }
        }
        let data = src.data();
        if !data.is_empty() {
            if let Some(end) = find_head_end(data, scanned) {
                return match parse(&data[..end], limits) {
                    Ok(Some(h)) => Ok(Some(h)),
                    Ok(None) => Err(HeadReadError::Head(HeadError::Malformed("malformed head"))),
                    Err(e) => Err(HeadReadError::Head(e)),
                };
            }
            // Refuse garbage early instead of waiting for 64 KiB of it.
            if let Err(e) = parse(data, limits) {
                return Err(HeadReadError::Head(e));
            }
            if data.len() >= limits.max_len {
                return Err(HeadReadError::Head(HeadError::TooLarge));
            }
            scanned = data.len();
        }
        let limit = match deadline {
            None if src.data().is_empty() => idle,
            None => {
                let d = Instant::now() + head;
                deadline = Some(d);
                head
            }
            Some(d) => d.saturating_duration_since(Instant::now()),
        };
        let had = src.data().len();
        match crate::deadline::timeout(limit, src.fill()).await {
            Err(_) => {
                return if had == 0 && deadline.is_none() {
                    // Idle keep-alive connection expired: a quiet close, not a 408.
                    Ok(None)
                } else {
                    Err(HeadReadError::Timeout)
                };
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(0)) => {
                return if src.data().is_empty() {
                    Ok(None)
                } else {
                    Err(HeadReadError::Truncated)
                };
            }
            Ok(Ok(_)) => {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + head);
                }
            }
        }
    }
}

/// Bytes of empty lines (`\r\n` or a bare `\n`) at the start of `data`. A
/// lone trailing `\r` is left: it may be the start of `\r\n`.
fn leading_blank_lines(data: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match data.get(i..) {
            Some([b'\n', ..]) => i += 1,
            Some([b'\r', b'\n', ..]) => i += 2,
            _ => return i,
        }
    }
}

/// [`read_head`] for requests.
pub async fn read_request_head<S: Source>(
    src: &mut S,
    idle: Duration,
    head: Duration,
    limits: Limits,
) -> Result<Option<RequestHead>, HeadReadError> {
    read_head(src, idle, head, limits, RequestHead::parse_within).await
}

/// [`read_head`] for responses.
pub async fn read_response_head<S: Source>(
    src: &mut S,
    wait: Duration,
    limits: Limits,
) -> Result<Option<ResponseHead>, HeadReadError> {
    read_head(src, wait, wait, limits, ResponseHead::parse_within).await
}

/// Why forwarding a message body stopped.
#[derive(Debug)]
pub enum BodyError {
    /// The bytes violate HTTP framing (bad chunk, truncated body).
    Framing(FramingError),
    Io(io::Error),
}

impl From<io::Error> for BodyError {
    fn from(e: io::Error) -> Self {
        BodyError::Io(e)
    }
}

impl From<FramingError> for BodyError {
    fn from(e: FramingError) -> Self {
        BodyError::Framing(e)
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Framing(e) => e.fmt(f),
            BodyError::Io(e) => e.fmt(f),
        }
    }
}

/// Forwards exactly one message body from `src` to `sink`, as `tracker`
/// delimits it; bytes after the body stay in `src`. Length-delimited stretches
/// move without inspection (and through a TLS sink's zero-copy path); only
/// chunk framing is looked at. Returns the bytes moved.
pub async fn forward_body<S: Source, K: Sink>(
    src: &mut S,
    sink: &mut K,
    tracker: &mut BodyTracker,
    state: &RelayState,
) -> Result<u64, BodyError> {
    let mut total = 0u64;
    let res: Result<(), BodyError> = async {
        while !tracker.is_done() {
            let bulk = tracker
                .remaining_hint()
                .map(|r| usize::try_from(r).unwrap_or(usize::MAX));
            let bulk = if tracker.until_close() { Some(usize::MAX) } else { bulk };
            if let Some(max) = bulk {
                let n = state.guard(sink.absorb(src, max)).await?;
                if n == 0 {
                    tracker.on_eof()?;
                    break;
                }
                tracker.skip(n);
                total += n as u64;
                state.touch();
                continue;
            }
            if src.data().is_empty() && state.guard(src.fill()).await? == 0 {
                tracker.on_eof()?;
                break;
            }
            let n = tracker.advance(src.data())?;
            if n > 0 {
                state.guard(src.forward(n, sink)).await?;
                total += n as u64;
                state.touch();
            }
        }
        Ok(())
    }
    .await;
    match res {
        Ok(()) => Ok(total),
        Err(e) => {
            state.fail();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A peer's reset after some bytes must surface as an error, never as a
    /// clean end of file (a cut transfer would pass for a complete one).
    #[monoio::test_all(timer_enabled = true)]
    async fn a_reset_is_an_error_not_an_end() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.write_all(&[7u8; 3000]).unwrap();
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
        let (mut r, w) = split(c);
        let mut got = 0;
        let end = loop {
            match r.fill().await {
                Ok(0) => break Ok(got),
                Ok(n) => {
                    got += n;
                    r.consume(n);
                }
                Err(e) => break Err(e),
            }
        };
        assert!(end.is_err(), "a reset was read as a clean end after {end:?} bytes");
        close(r, w);
    }
}
