//! One HTTP message part at a time: a head (with limits and time bounds) or
//! exactly one body, as its framing delimits it.

use std::io;
use std::time::{Duration, Instant};

use super::{RelayState, Sink, Source};
use crate::framing::{BodyTracker, FramingError};
use crate::head::{HeadError, Limits, RequestHead, ResponseHead, find_head_end};

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
    use std::io::{Read, Write};

    use monoio::net::TcpStream;

    use super::*;
    use crate::framing::BodyLen;
    use crate::head::Form;
    use crate::stream::{Sink, close, split};

    /// Heads arriving in pieces, after empty lines, with a chunked body that
    /// is forwarded exactly and no further.
    #[monoio::test_all(timer_enabled = true)]
    #[expect(
        clippy::disallowed_methods,
        reason = "the peer is a plain thread, not a runtime: its pauses make the head arrive in pieces"
    )]
    async fn reads_a_head_and_forwards_exactly_one_body() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let out = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let o = TcpStream::connect(out.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let (mut sinkp, _) = out.accept().unwrap();
        let body = "5\r\nhello\r\n0\r\n\r\n";
        let t = std::thread::spawn(move || {
            for part in [
                "\r\nPOST http://a/ HT",
                "TP/1.1\r\nTransfer-Encoding: chunked\r\n",
                "\r\n",
                body,
                "NEXT",
            ] {
                peer.write_all(part.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            peer
        });
        let (mut r, w) = split(c);
        let (or, mut ow) = split(o);
        let head = read_request_head(&mut r, Duration::from_secs(5), Duration::from_secs(5), Limits::PEER)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.form, Form::Absolute);
        let len = crate::framing::request_body(&head, r.data()).unwrap();
        assert_eq!(len, BodyLen::Chunked);
        r.consume(head.len);
        let state = RelayState::new(Duration::from_secs(5));
        let mut tracker = BodyTracker::new(len);
        let n = forward_body(&mut r, &mut ow, &mut tracker, &state).await.unwrap();
        assert_eq!(n, body.len() as u64);
        // An awaited shutdown: on io_uring a close completes only when the
        // runtime runs, and the blocking read below holds this thread.
        ow.close_write().await.unwrap();
        let mut got = Vec::new();
        sinkp.read_to_end(&mut got).unwrap();
        close(or, ow);
        assert_eq!(got, body.as_bytes());
        let _peer = t.join().unwrap();
        // What follows the body stays for the next message.
        while r.data().len() < 4 {
            r.fill().await.unwrap();
        }
        assert_eq!(r.data(), b"NEXT");
        close(r, w);
    }

    /// A head that does not complete in time is a timeout; one over the
    /// limits is refused without waiting for the rest.
    #[monoio::test_all(timer_enabled = true)]
    async fn slow_and_oversized_heads() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = l.accept().unwrap();
        peer.write_all(b"GET http://a/ HTTP/1.1\r\nX: 1\r\n").unwrap();
        let (mut r, w) = split(c);
        let e = read_request_head(&mut r, Duration::from_secs(5), Duration::from_millis(50), Limits::PEER).await;
        assert!(matches!(e, Err(HeadReadError::Timeout)), "{e:?}");
        close(r, w);
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        peer.write_all(format!("GET http://a/ HTTP/1.1\r\n{many}\r\n").as_bytes())
            .unwrap();
        let (mut r, w) = split(c);
        let e = read_request_head(&mut r, Duration::from_secs(5), Duration::from_secs(5), Limits::PEER).await;
        assert!(
            matches!(e, Err(HeadReadError::Head(HeadError::TooManyHeaders))),
            "{e:?}"
        );
        close(r, w);
    }
}
