//! The plain TCP halves: a reader with a pooled buffer that it holds only
//! while bytes are there, and a writer.

use std::io;
use std::ops::Range;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use super::multi::{Got, MultiRecv};
use super::{Peek, Sink, Source, peer_spoke, raw_fd, reset_on_close, wait_data};
use crate::{buf, provided};

/// The reading half of a plain TCP connection, with a pooled buffer.
#[derive(Debug)]
pub struct PlainReader {
    /// Multishot receive (io_uring), if this connection uses it. Declared
    /// before `half`: it must be dropped (cancelled) before the socket is.
    multi: MultiRecv,
    half: OwnedReadHalf<TcpStream>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    /// The socket was seen readable and not read since: skip the next wait.
    readable: bool,
    /// The last read filled its buffer: a bulk transfer, use a big buffer.
    bulk: bool,
    /// An I/O operation that owned the buffer was dropped before it
    /// completed (a relay's abort or idle timeout): the buffer, and any bytes
    /// it held, went with it. The stream is out of step for good; see
    /// [`PlainReader::lend`].
    lost: bool,
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
            multi: MultiRecv::default(),
            half: r,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            readable: false,
            bulk: false,
            lost: false,
        },
        PlainWriter { half: w },
    )
}

/// Closes a plain connection with one system call: the close sends the FIN
/// (or a reset, if unread bytes remain). Dropping the halves separately would
/// first shut the write side down (monoio's write half does so on drop).
pub fn close(r: PlainReader, w: PlainWriter) {
    let PlainReader { multi, half, .. } = r;
    // The armed receive goes first (its cancel is queued before the close).
    drop(multi);
    if let Ok(stream) = half.reunite(w.half) {
        drop(stream);
    }
}

/// Closes a plain connection with a reset: the peer sees a cut, not an end.
pub fn abort(r: PlainReader, w: PlainWriter) {
    let PlainReader { multi, half, .. } = r;
    drop(multi);
    if let Ok(stream) = half.reunite(w.half) {
        reset_on_close(&stream);
        drop(stream);
    }
}

impl PlainReader {
    /// Receives this connection's requests with one armed multishot receive
    /// into the worker's provided buffers, where the runtime has them
    /// (io_uring with `MSC_MULTISHOT=1`; see [`crate::provided`]; otherwise
    /// this changes nothing): a connection waiting for its next request
    /// then holds no buffer and queues no operation per request. Bulk
    /// transfers still read plainly into large buffers.
    pub fn use_multishot(&mut self) {
        self.multi.want();
    }

    /// Waits for the next request on an idle keep-alive connection, as
    /// [`Source::ready`] (cancel-safe, no buffer held while waiting); with
    /// [`PlainReader::use_multishot`], through the armed receive, arming it
    /// anew after a bulk transfer. Its first bytes may then be buffered.
    pub async fn wait_request(&mut self) -> io::Result<()> {
        if self.eof || !self.data().is_empty() || self.readable {
            return Ok(());
        }
        self.multi.idle();
        if self.multi.wanted() && self.fill_multi().await?.is_some() {
            return Ok(());
        }
        self.ready().await
    }

    /// Whether a multishot receive is armed or draining on this connection.
    pub fn multishot_armed(&self) -> bool {
        self.multi.owns_reads()
    }

    /// Reads through the multishot receive: `None` when it is not in use
    /// now (read plainly), else as [`Source::fill`].
    async fn fill_multi(&mut self) -> io::Result<Option<usize>> {
        if self.pos == self.buf.len() {
            // Nothing buffered: wait without pinning a buffer.
            self.release_if_empty();
        }
        match self.multi.next(raw_fd(&self.half)).await? {
            Got::Plain => Ok(None),
            Got::Eof => {
                self.eof = true;
                self.release_if_empty();
                Ok(Some(0))
            }
            Got::Data(chunk) => {
                let n = chunk.len();
                if let Err(e) = self.reserve(n) {
                    // The chunk's bytes cannot be kept: the stream is out
                    // of step for good.
                    self.lost = true;
                    return Err(e);
                }
                self.buf.extend_from_slice(chunk.bytes());
                self.bulk = n == provided::SIZE;
                Ok(Some(n))
            }
        }
    }

    /// Makes room for `n` more bytes after the buffered ones: moves the
    /// unread bytes to the front, then grows a small buffer into a bulk one;
    /// an error when even that leaves too little room.
    fn reserve(&mut self, n: usize) -> io::Result<()> {
        if self.buf.capacity() == 0 {
            self.buf = buf::take_for(n);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < n && self.pos > 0 {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < n && buf::is_small(&self.buf) {
            buf::grow(&mut self.buf);
        }
        if self.buf.capacity() - self.buf.len() < n {
            return Err(io::Error::other("read buffer full"));
        }
        Ok(())
    }

    /// Whether the peer has finished sending.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Reads straight into `b` (used by TLS to read plaintext into its record
    /// buffer). Only valid when nothing is buffered.
    pub async fn read_direct<B: IoBufMut>(&mut self, mut b: B) -> monoio::BufResult<usize, B> {
        debug_assert!(
            !self.multi.owns_reads(),
            "a direct read while a multishot receive is armed"
        );
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
    /// with a single `readv` (the TLS sender fills up to 15 records' worth
    /// of plaintext per system call this way).
    pub async fn read_direct_v(&mut self, slots: crate::iov::Slots) -> monoio::BufResult<usize, crate::iov::Slots> {
        debug_assert!(
            !self.multi.owns_reads(),
            "a direct read while a multishot receive is armed"
        );
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
        self.lost || self.eof || !self.data().is_empty() || self.multi.has_news() || peer_spoke(&self.half)
    }

    /// Takes the buffer for an I/O operation that owns it until it completes,
    /// leaving a consistent state behind: if the operation's future is
    /// dropped first (cancelled), the buffer is gone, `data()` is empty
    /// rather than slicing out of bounds, and every later read fails.
    /// [`PlainReader::give_back`] undoes it when the operation completes.
    fn lend(&mut self) -> (Vec<u8>, usize) {
        self.lost = true;
        (std::mem::take(&mut self.buf), std::mem::replace(&mut self.pos, 0))
    }

    fn give_back(&mut self, b: Vec<u8>, pos: usize) {
        self.buf = b;
        self.pos = pos;
        self.lost = false;
    }

    fn lost_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            "an earlier read or write on this connection was cancelled midway",
        )
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
        if self.lost {
            return Err(PlainReader::lost_error());
        }
        if self.eof {
            return Ok(0);
        }
        if self.multi.wanted()
            && let Some(n) = self.fill_multi().await?
        {
            return Ok(n);
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
        } else {
            // Full: move the unread bytes to the front, or grow.
            self.reserve(1)?;
        }
        let len = self.buf.len();
        let cap = self.buf.capacity();
        let (b, pos) = self.lend();
        let (res, slice) = self.half.read(b.slice_mut(len..cap)).await;
        self.give_back(slice.into_inner(), pos);
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
        if self.lost {
            return Err(PlainReader::lost_error());
        }
        let range = self.pos..self.pos + n;
        let (b, pos) = self.lend();
        let (res, b) = sink.write_slice(b, range).await;
        self.give_back(b, pos);
        res?;
        self.consume(n);
        Ok(())
    }

    fn as_plain(&mut self) -> Option<&mut PlainReader> {
        // An armed multishot receive owns the incoming bytes: reads go
        // through `fill`.
        if self.multi.owns_reads() { None } else { Some(self) }
    }

    async fn ready(&mut self) -> io::Result<()> {
        if self.eof || !self.data().is_empty() || self.readable {
            return Ok(());
        }
        // An armed receive owns the incoming bytes: wait through it.
        if self.multi.owns_reads() && self.fill_multi().await?.is_some() {
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

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

    /// A read cancelled while it owns the buffer (a relay's abort or idle
    /// timeout) leaves the reader consistent and failed, never slicing out
    /// of bounds later.
    #[monoio::test_all(timer_enabled = true)]
    async fn a_cancelled_read_leaves_a_failed_reader() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"abcdef").unwrap();
        let (mut r, w) = split(c);
        let mut got = 0;
        while got < 6 {
            got += r.fill().await.unwrap();
        }
        r.consume(2);
        // Nothing more comes: the next read waits, owning the buffer, and is dropped.
        let cancelled = monoio::time::timeout(Duration::from_millis(20), r.fill()).await;
        assert!(cancelled.is_err(), "the read should still have been waiting");
        assert!(r.data().is_empty());
        assert!(r.is_stale());
        assert!(r.fill().await.is_err());
        drop(s);
        close(r, w);
    }
}
