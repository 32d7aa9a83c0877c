//! Multishot receive with provided buffers, for a [`super::PlainReader`]
//! that waits for requests (io_uring only; see [`crate::provided`]).
//!
//! One armed receive serves a connection's requests: no readiness wait, no
//! read to queue, and no buffer held while the connection is idle. When a
//! receive fills a whole provided buffer the peer is sending in bulk (an
//! upload, a tunnel): the multishot receive is cancelled, what it had
//! already received is drained in order, and the reader goes back to its
//! plain reads into its own large buffer until the connection is idle again.

use std::future::poll_fn;
use std::io;
use std::os::fd::RawFd;

use monoio::uring_ext::Multishot;

use crate::provided::{self, Chunk};

/// What the next receive brought.
#[derive(Debug)]
pub(super) enum Got {
    /// Bytes, to be copied out at once.
    Data(Chunk),
    /// The peer finished sending.
    Eof,
    /// Multishot receive is not in use right now: read the plain way.
    Plain,
}

#[derive(Debug, Default)]
enum State {
    /// Not used on this connection (not asked for, or no ring on this thread).
    #[default]
    Off,
    /// Wanted; armed at the next wait.
    Idle,
    /// Armed.
    Armed(Multishot),
    /// Cancelled after a bulk receive: taking what it received, until its
    /// last completion.
    Draining(Multishot),
    /// Bulk transfer under way: plain reads until the connection is idle.
    Bulk,
}

/// A connection's multishot receive.
#[derive(Debug, Default)]
pub(super) struct MultiRecv {
    state: State,
}

impl MultiRecv {
    /// Turns multishot receives on for this connection, if this thread's
    /// runtime has a provided-buffer ring.
    pub(super) fn want(&mut self) {
        if matches!(self.state, State::Off) && provided::active() {
            self.state = State::Idle;
        }
    }

    /// Whether reads must come through [`MultiRecv::next`] (an armed or
    /// draining receive owns the socket's incoming bytes).
    pub(super) fn owns_reads(&self) -> bool {
        matches!(self.state, State::Armed(_) | State::Draining(_))
    }

    /// Whether a completion is waiting (the peer sent something).
    pub(super) fn has_news(&self) -> bool {
        match &self.state {
            State::Armed(m) | State::Draining(m) => m.is_ready(),
            _ => false,
        }
    }

    /// The connection is idle again: after a bulk transfer, multishot
    /// receives may resume.
    pub(super) fn idle(&mut self) {
        if matches!(self.state, State::Bulk) {
            self.state = State::Idle;
        }
    }

    /// Whether this connection uses multishot receives at all.
    pub(super) fn wanted(&self) -> bool {
        !matches!(self.state, State::Off)
    }

    /// Waits for the next receive on `fd`. Cancel-safe: a completion is
    /// taken only when this returns.
    pub(super) async fn next(&mut self, fd: RawFd) -> io::Result<Got> {
        // At most two passes: Idle arms, then a completion returns.
        loop {
            let m = match &mut self.state {
                State::Off | State::Bulk => return Ok(Got::Plain),
                State::Idle => {
                    let sqe = io_uring::opcode::RecvMulti::new(io_uring::types::Fd(fd), provided::BGID).build();
                    // SAFETY: the fd belongs to the reader's socket, which
                    // the reader keeps open until this receive is dropped
                    // (it drops the receive first, and the kernel holds its
                    // own reference to the file while the receive is
                    // armed); the buffer group is this thread's ring, whose
                    // memory is never freed.
                    match unsafe { Multishot::submit(sqe, provided::orphan) } {
                        Ok(m) => self.state = State::Armed(m),
                        Err(e) => {
                            tracing::debug!("multishot receive not armed: {e}");
                            self.state = State::Off;
                            return Ok(Got::Plain);
                        }
                    }
                    continue;
                }
                State::Armed(m) | State::Draining(m) => m,
            };
            let Some((res, flags)) = poll_fn(|cx| m.poll_next(cx)).await else {
                // Ended and drained (its last completion was taken earlier;
                // not expected, as taking it ends the state).
                self.ended();
                return Ok(Got::Plain);
            };
            let draining = matches!(self.state, State::Draining(_));
            let chunk =
                io_uring::cqueue::buffer_select(flags).map(|bid| Chunk::new(bid, *res.as_ref().unwrap_or(&0) as usize));
            if !io_uring::cqueue::more(flags) {
                self.ended();
            }
            match res {
                Ok(0) => return Ok(Got::Eof),
                Ok(n) => {
                    let Some(chunk) = chunk else {
                        return Err(io::Error::other(format!("a receive of {n} bytes without a buffer")));
                    };
                    if chunk.len() == provided::SIZE {
                        // A full buffer: bulk data follows. Stop and drain
                        // the receive, then read plainly.
                        match std::mem::take(&mut self.state) {
                            State::Armed(m) => {
                                m.cancel();
                                self.state = State::Draining(m);
                            }
                            // The kernel ended it with this completion.
                            State::Idle => self.state = State::Bulk,
                            s => self.state = s,
                        }
                    }
                    return Ok(Got::Data(chunk));
                }
                // The ring ran dry: read the plain way this time, re-arm at
                // the next wait.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    provided::note_dry();
                    return Ok(Got::Plain);
                }
                // Our own cancel (after a bulk receive): drained, now Bulk.
                Err(e) if draining && e.raw_os_error() == Some(libc::ECANCELED) => return Ok(Got::Plain),
                Err(e) => return Err(e),
            }
        }
    }

    /// The receive posted its last completion (it was taken: nothing is
    /// queued behind it).
    fn ended(&mut self) {
        self.state = match std::mem::take(&mut self.state) {
            State::Draining(_) => State::Bulk,
            State::Armed(_) => State::Idle,
            s => s,
        };
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use monoio::net::TcpStream;

    use super::super::{PlainReader, PlainWriter, Source, close, split};
    use crate::provided;
    use crate::runtime::{DriverChoice, block_on};

    /// Runs `f` on an io_uring runtime built the way workers build theirs
    /// (with the provided-buffer ring registered), multishot receives on.
    fn on_uring<Fut: std::future::Future<Output = ()>>(f: impl FnOnce() -> Fut) {
        provided::set_thread_enabled(true);
        block_on(DriverChoice::IoUring, None, |_| f()).expect("io_uring runtime");
    }

    /// Waits for the next request; whether it came in a provided buffer.
    async fn wait_via_ring(r: &mut PlainReader) -> bool {
        let before = provided::received_count();
        r.wait_request().await.unwrap();
        provided::received_count() > before
    }

    /// A connection over loopback: our reader (multishot asked for) and
    /// writer, and the peer's blocking socket.
    async fn conn() -> (PlainReader, PlainWriter, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().unwrap();
        let (mut r, w) = split(c);
        r.use_multishot();
        (r, w, s)
    }

    /// Reads until `want` bytes are buffered, consuming nothing.
    async fn read_n(r: &mut PlainReader, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        for _ in 0..10_000 {
            got.extend_from_slice(r.data());
            let k = r.data().len();
            r.consume(k);
            if got.len() >= want {
                break;
            }
            let n = r.fill().await.expect("read");
            assert!(n > 0, "early end after {} of {want} bytes", got.len());
        }
        got
    }

    #[test]
    fn requests_arrive_through_one_armed_receive() {
        on_uring(|| async {
            assert!(crate::provided::active(), "the worker runtime registers a ring");
            let (mut r, w, mut s) = conn().await;
            for i in 0..20u8 {
                let msg = vec![b'a' + i; 100 + i as usize * 50];
                s.write_all(&msg).unwrap();
                assert!(
                    wait_via_ring(&mut r).await,
                    "request {i}: not received into a provided buffer"
                );
                assert!(r.multishot_armed(), "request {i}: not read through the armed receive");
                assert!(r.as_plain().is_none());
                let got = read_n(&mut r, msg.len()).await;
                assert_eq!(got, msg, "request {i}");
            }
            drop(s);
            r.wait_request().await.unwrap();
            assert!(r.is_eof_now());
            close(r, w);
        });
    }

    /// A bulk send (an upload, a huge head) stops the multishot receive:
    /// what it took is drained in order, then plain reads take the rest;
    /// every byte arrives exactly. Once idle, requests use it again.
    #[test]
    fn a_bulk_send_drains_in_order_then_reads_plainly() {
        on_uring(|| async {
            let (mut r, w, s) = conn().await;
            let total = 3 * 1024 * 1024 + 123;
            let data: Vec<u8> = (0..total)
                .map(|i| u8::try_from((i * 7 + i / 4096) % 251).unwrap())
                .collect();
            let sent = data.clone();
            let writer = std::thread::spawn(move || {
                let mut s = s;
                let mut off = 0;
                let mut step = 1;
                while off < sent.len() {
                    let n = (step * 997 % 70_000 + 1).min(sent.len() - off);
                    s.write_all(&sent[off..off + n]).unwrap();
                    off += n;
                    step += 1;
                }
                s
            });
            r.wait_request().await.unwrap();
            let got = read_n(&mut r, total).await;
            let mut s = writer.join().unwrap();
            assert_eq!(got.len(), total);
            assert!(got == data, "bytes differ");
            assert!(!r.multishot_armed(), "a bulk transfer reads plainly");
            assert!(r.as_plain().is_some());
            // Idle again: the next request comes through a receive armed anew.
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            assert!(wait_via_ring(&mut r).await);
            assert_eq!(read_n(&mut r, 18).await, b"GET / HTTP/1.1\r\n\r\n");
            close(r, w);
        });
    }

    /// A reset while armed is an error, never a clean end (a cut transfer
    /// must not pass for a complete one); a FIN is an end.
    #[test]
    fn a_reset_is_an_error_and_a_fin_an_end() {
        on_uring(|| async {
            let (mut r, w, mut s) = conn().await;
            s.write_all(b"abc").unwrap();
            assert!(wait_via_ring(&mut r).await);
            assert_eq!(read_n(&mut r, 3).await, b"abc");
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
            drop(s);
            let mut end = Ok(0);
            for _ in 0..10 {
                end = r.fill().await;
                if !matches!(end, Ok(n) if n > 0) {
                    break;
                }
            }
            assert!(end.is_err(), "a reset was read as {end:?}");
            close(r, w);

            let (mut r, w, s) = conn().await;
            drop(s);
            r.wait_request().await.unwrap();
            assert!(r.is_eof_now());
            assert_eq!(r.fill().await.unwrap(), 0);
            close(r, w);
        });
    }

    /// Waiting for a request is cancel-safe (the client selects it against
    /// its idle timer): a wait dropped before anything arrived loses nothing.
    #[test]
    fn an_abandoned_wait_loses_nothing() {
        on_uring(|| async {
            let (mut r, w, mut s) = conn().await;
            for round in 0..3 {
                let waited = monoio::time::timeout(Duration::from_millis(5), r.wait_request()).await;
                assert!(waited.is_err(), "round {round}: nothing was sent yet");
                assert!(!r.is_stale(), "round {round}: nothing arrived");
            }
            s.write_all(b"hello").unwrap();
            // The peer spoke: an idle check sees it before it is read.
            let mut seen = false;
            for _ in 0..200 {
                if r.is_stale() {
                    seen = true;
                    break;
                }
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(seen, "bytes waiting in the armed receive count as the peer speaking");
            r.wait_request().await.unwrap();
            assert_eq!(read_n(&mut r, 5).await, b"hello");
            close(r, w);
        });
    }

    /// When the ring runs dry (more connections receive at once than it
    /// has buffers), the receive ends with ENOBUFS; the reader falls back
    /// to a plain read and every connection gets its bytes.
    #[test]
    fn a_dry_ring_falls_back_to_plain_reads() {
        on_uring(|| async {
            // A ring of 2 buffers for 8 connections.
            assert!(crate::provided::install(2));
            let mut conns = Vec::new();
            for _ in 0..8 {
                conns.push(conn().await);
            }
            // Arm every receive (each waits briefly, sees nothing).
            for (r, _, _) in conns.iter_mut() {
                let _ = monoio::time::timeout(Duration::from_millis(1), r.wait_request()).await;
            }
            for round in 0..3u8 {
                for (i, (_, _, s)) in (0u8..).zip(conns.iter_mut()) {
                    s.write_all(&[round * 16 + i; 3000]).unwrap();
                }
                for (i, (r, _, _)) in (0u8..).zip(conns.iter_mut()) {
                    r.wait_request().await.unwrap();
                    assert_eq!(
                        read_n(r, 3000).await,
                        vec![round * 16 + i; 3000],
                        "round {round} conn {i}"
                    );
                }
            }
            assert!(
                crate::provided::dry_count() > 0,
                "the ring never ran dry: the test tests nothing"
            );
            for (r, w, _) in conns {
                close(r, w);
            }
        });
    }

    /// Closing a connection whose receive is armed sends the FIN at once:
    /// the armed receive (which holds the socket in the kernel) is
    /// cancelled before the close.
    #[test]
    fn close_while_armed_ends_the_connection() {
        on_uring(|| async {
            let (mut r, w, mut s) = conn().await;
            s.write_all(b"x").unwrap();
            r.wait_request().await.unwrap();
            assert!(r.multishot_armed());
            close(r, w);
            // The peer reads on its own thread; this runtime waits for its
            // answer (and submits the cancel and the close meanwhile).
            let (tx, rx) = flume::bounded(1);
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut b = [0u8; 8];
                let _ = tx.send(std::io::Read::read(&mut s, &mut b).map_err(|e| e.kind()));
            });
            let n = rx.recv_async().await.expect("the peer's reader answers");
            assert_eq!(n, Ok(0), "the peer sees an end, not a timeout or data");
        });
    }

    /// On epoll there is no ring: asking for multishot changes nothing.
    #[test]
    fn epoll_reads_plainly() {
        block_on(DriverChoice::Epoll, None, |_| async {
            assert!(!crate::provided::active());
            let (mut r, w, mut s) = conn().await;
            s.write_all(b"plain").unwrap();
            r.wait_request().await.unwrap();
            assert!(!r.multishot_armed());
            assert_eq!(read_n(&mut r, 5).await, b"plain");
            close(r, w);
        })
        .unwrap();
    }
}
