//! A request head the client already took from the browser's stream, put
//! back in front of it.
//!
//! When a tunnel fails before the gateway answered and no gateway can be
//! reached for the retry, the request gets the fail-open/closed policy. To
//! relay it DIRECT, the direct proxy must read it again from the start: a
//! [`Replay`] serves the head first, then whatever the browser sends next,
//! in order, as one [`Source`].

use std::io;

use msc_io::stream::{PlainReader, Sink, Source};

/// `head`, then the rest of `inner`.
#[derive(Debug)]
pub struct Replay<'a> {
    /// Bytes still to be served before `inner`'s: the head, plus anything
    /// moved from `inner` while the head was not yet consumed.
    buf: Vec<u8>,
    pos: usize,
    inner: &'a mut PlainReader,
}

impl<'a> Replay<'a> {
    pub fn new(head: Vec<u8>, inner: &'a mut PlainReader) -> Replay<'a> {
        Replay {
            buf: head,
            pos: 0,
            inner,
        }
    }

    fn replaying(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Whether every replayed byte was consumed (the stream alone is left).
    pub fn is_drained(&self) -> bool {
        !self.replaying()
    }
}

impl Source for Replay<'_> {
    async fn fill(&mut self) -> io::Result<usize> {
        if !self.replaying() {
            return self.inner.fill().await;
        }
        // More is wanted while replayed bytes remain: append what the
        // browser sent (buffered already, or read now) behind them.
        if self.inner.data().is_empty() && self.inner.fill().await? == 0 {
            return Ok(0);
        }
        let more = self.inner.data();
        let n = more.len();
        self.buf.extend_from_slice(more);
        self.inner.consume(n);
        Ok(n)
    }

    fn data(&self) -> &[u8] {
        if self.replaying() {
            &self.buf[self.pos..]
        } else {
            self.inner.data()
        }
    }

    fn consume(&mut self, n: usize) {
        if self.replaying() {
            self.pos = (self.pos + n).min(self.buf.len());
            if !self.replaying() {
                self.buf = Vec::new();
                self.pos = 0;
            }
        } else {
            self.inner.consume(n);
        }
    }

    async fn forward<K: Sink>(&mut self, n: usize, sink: &mut K) -> io::Result<()> {
        if !self.replaying() {
            return self.inner.forward(n, sink).await;
        }
        let end = (self.pos + n).min(self.buf.len());
        sink.write_bytes(&self.buf[self.pos..end]).await?;
        self.consume(end - self.pos);
        Ok(())
    }

    fn as_plain(&mut self) -> Option<&mut PlainReader> {
        if self.replaying() { None } else { self.inner.as_plain() }
    }

    async fn ready(&mut self) -> io::Result<()> {
        if self.replaying() {
            Ok(())
        } else {
            self.inner.ready().await
        }
    }

    fn expect_data(&mut self) {
        if !self.replaying() {
            self.inner.expect_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use monoio::net::TcpStream;
    use msc_io::stream::{close, split};

    use super::*;

    /// The head comes first, then what the browser had sent already, then
    /// what it sends later; forwarding moves the same bytes in order.
    #[monoio::test_all(timer_enabled = true)]
    async fn serves_the_head_then_the_stream_in_order() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let out = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let o = TcpStream::connect(out.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let (mut sinkp, _) = out.accept().unwrap();
        let (mut r, w) = split(c);
        let (or, mut ow) = split(o);
        // Already buffered behind the (consumed) head: the start of the next request.
        peer.write_all(b"NEXT").unwrap();
        while r.data().len() < 4 {
            assert!(r.fill().await.unwrap() > 0);
        }
        {
            let mut rp = Replay::new(b"HEAD\r\n".to_vec(), &mut r);
            rp.ready().await.unwrap();
            assert_eq!(rp.data(), b"HEAD\r\n");
            assert!(rp.as_plain().is_none());
            // Buffered bytes move behind the head without a read.
            assert_eq!(rp.fill().await.unwrap(), 4);
            assert_eq!(rp.data(), b"HEAD\r\nNEXT");
            rp.consume(2);
            rp.forward(6, &mut ow).await.unwrap();
            assert_eq!(rp.data(), b"XT");
            // Then a real read, still behind the replayed bytes.
            peer.write_all(b" more").unwrap();
            while rp.data().len() < 7 {
                assert!(rp.fill().await.unwrap() > 0);
            }
            assert_eq!(rp.data(), b"XT more");
            rp.consume(7);
            // Drained: the stream itself from now on.
            assert!(rp.as_plain().is_some());
            peer.write_all(b"!").unwrap();
            drop(peer);
            while rp.data().is_empty() {
                if rp.fill().await.unwrap() == 0 {
                    break;
                }
            }
            assert_eq!(rp.data(), b"!");
            rp.forward(1, &mut ow).await.unwrap();
            assert_eq!(rp.fill().await.unwrap(), 0);
        }
        ow.close_write().await.unwrap();
        let mut got = Vec::new();
        sinkp.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"AD\r\nNE!");
        close(or, ow);
        close(r, w);
    }
}
