//! HTTP/1.1 message framing (RFC 9112 section 6): where a message body ends.
//!
//! A proxy that keeps connections alive across requests must know exactly
//! where each message ends without buffering it. [`BodyTracker`] watches the
//! bytes as they stream past (it never copies or holds them) and says how many
//! belong to the current body. The framing decisions also refuse the
//! request-smuggling shapes (both `Content-Length` and `Transfer-Encoding`,
//! conflicting lengths, bad chunk sizes) instead of guessing.

use std::fmt;

use crate::head::{Headers, Method, RequestHead, ResponseHead, trim};

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLen {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// A framing violation. For requests these are answered with 400; for
/// responses the upstream connection is abandoned (502 if nothing was sent yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    ConflictingLength,
    BadContentLength,
    LengthAndChunked,
    BadTransferEncoding,
    BadChunkSize,
    BadChunkDelimiter,
    TrailerTooLarge,
    /// The peer closed before the body was complete.
    Truncated,
}

impl FramingError {
    pub fn reason(&self) -> &'static str {
        match self {
            FramingError::ConflictingLength => "conflicting Content-Length values",
            FramingError::BadContentLength => "invalid Content-Length",
            FramingError::LengthAndChunked => "both Content-Length and Transfer-Encoding present",
            FramingError::BadTransferEncoding => "unsupported Transfer-Encoding (chunked must be last)",
            FramingError::BadChunkSize => "invalid chunk size",
            FramingError::BadChunkDelimiter => "invalid chunk delimiter",
            FramingError::TrailerTooLarge => "chunked trailer too large",
            FramingError::Truncated => "message body truncated",
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for FramingError {}

/// Body framing shared by requests and responses: CL/TE rules.
fn length_from_headers(h: &Headers, buf: &[u8]) -> Result<Option<BodyLen>, FramingError> {
    let mut te_seen = false;
    let mut chunked_last = false;
    for v in h.values(buf, "transfer-encoding") {
        for coding in v.split(|&b| b == b',') {
            let c = trim(coding);
            if c.is_empty() {
                continue;
            }
            te_seen = true;
            chunked_last = c.eq_ignore_ascii_case(b"chunked");
        }
    }
    let mut length: Option<u64> = None;
    for v in h.values(buf, "content-length") {
        // A list such as "5, 5" is tolerated only when every member agrees.
        for part in v.split(|&b| b == b',') {
            let p = trim(part);
            if p.is_empty() || p.len() > 19 || !p.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::BadContentLength);
            }
            let n = p.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
            match length {
                Some(prev) if prev != n => return Err(FramingError::ConflictingLength),
                _ => length = Some(n),
            }
        }
    }
    match (te_seen, length) {
        (true, Some(_)) => Err(FramingError::LengthAndChunked),
        (true, None) if chunked_last => Ok(Some(BodyLen::Chunked)),
        (true, None) => Err(FramingError::BadTransferEncoding),
        (false, Some(n)) => Ok(Some(BodyLen::Length(n))),
        (false, None) => Ok(None),
    }
}

/// How the body of `req` is delimited. Requests without CL/TE have no body.
pub fn request_body(req: &RequestHead, buf: &[u8]) -> Result<BodyLen, FramingError> {
    match length_from_headers(&req.headers, buf)? {
        Some(BodyLen::Length(0)) | None => Ok(BodyLen::Empty),
        Some(b) => Ok(b),
    }
}

/// What follows a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    /// A 1xx interim response (other than 101): another head follows.
    Interim,
    /// A final response with this body framing.
    Final(BodyLen),
    /// 101 Switching Protocols, or 2xx to CONNECT: the connection becomes a tunnel.
    Upgrade,
}

/// How the response to a request with `method` is delimited (RFC 9112 6.3).
pub fn response_kind(resp: &ResponseHead, buf: &[u8], method: Method) -> Result<ResponseKind, FramingError> {
    let s = resp.status;
    if s == 101 || (method == Method::Connect && (200..300).contains(&s)) {
        return Ok(ResponseKind::Upgrade);
    }
    if (100..200).contains(&s) {
        return Ok(ResponseKind::Interim);
    }
    if method == Method::Head || s == 204 || s == 304 {
        // Headers may still carry CL/TE describing the would-be body; refuse
        // the smuggling shapes all the same.
        length_from_headers(&resp.headers, buf)?;
        return Ok(ResponseKind::Final(BodyLen::Empty));
    }
    Ok(ResponseKind::Final(match length_from_headers(&resp.headers, buf)? {
        Some(BodyLen::Length(0)) => BodyLen::Empty,
        Some(b) => b,
        None => BodyLen::UntilClose,
    }))
}

/// Most bytes accepted in a chunk-size line (size + extensions) or in all trailers.
const MAX_CHUNK_LINE: u32 = 4096;
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits; `digits` counts them.
    Size {
        size: u64,
        digits: u8,
    },
    /// After `;`: extensions, up to CR.
    Ext {
        size: u64,
    },
    /// Expect LF after the size line's CR.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Expect LF ending a trailer line.
    TrailerLf,
    /// Expect LF ending the final empty line.
    EndLf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Tracks one message body as its bytes stream past.
#[derive(Clone, Debug)]
pub struct BodyTracker {
    state: State,
    line: u32,
    trailers: u32,
}

impl BodyTracker {
    pub fn new(len: BodyLen) -> BodyTracker {
        let state = match len {
            BodyLen::Empty | BodyLen::Length(0) => State::Done,
            BodyLen::Length(n) => State::Length(n),
            BodyLen::Chunked => State::Chunked(Chunk::Size { size: 0, digits: 0 }),
            BodyLen::UntilClose => State::UntilClose,
        };
        BodyTracker {
            state,
            line: 0,
            trailers: 0,
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the body ends only when the peer closes.
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Bytes still expected for a `Content-Length` body, for sizing reads.
    pub fn remaining_hint(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Chunked(Chunk::Data { left }) => Some(left),
            _ => None,
        }
    }

    /// Accounts for `n` body bytes moved without being inspected. Only valid
    /// within [`BodyTracker::remaining_hint`] (or for close-delimited bodies).
    pub fn skip(&mut self, n: usize) {
        let n = n as u64;
        self.state = match self.state {
            State::Length(left) if n >= left => State::Done,
            State::Length(left) => State::Length(left - n),
            State::Chunked(Chunk::Data { left }) if n >= left => State::Chunked(Chunk::DataCr),
            State::Chunked(Chunk::Data { left }) => State::Chunked(Chunk::Data { left: left - n }),
            s => s,
        };
    }

    /// The peer closed its side: fine for a close-delimited body, an error otherwise.
    pub fn on_eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(FramingError::Truncated),
        }
    }

    /// Consumes body bytes from the front of `data`; returns how many belong
    /// to this body. Fewer than `data.len()` means the body ended inside `data`.
    pub fn advance(&mut self, data: &[u8]) -> Result<usize, FramingError> {
        self.advance_with(data, |_| {})
    }

    /// Like [`BodyTracker::advance`], and hands each run of payload bytes
    /// (the body without chunk framing) to `payload`.
    pub fn advance_with(&mut self, data: &[u8], mut payload: impl FnMut(&[u8])) -> Result<usize, FramingError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => break,
                State::UntilClose => {
                    payload(&data[i..]);
                    return Ok(data.len());
                }
                State::Length(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len() - i);
                    payload(&data[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { State::Done } else { State::Length(left) };
                }
                State::Chunked(Chunk::Data { left }) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len() - i);
                    payload(&data[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = State::Chunked(if left == 0 { Chunk::DataCr } else { Chunk::Data { left } });
                }
                State::Chunked(c) => {
                    let b = data[i];
                    i += 1;
                    self.state = self.chunk_byte(c, b)?;
                }
            }
        }
        Ok(i)
    }

    fn chunk_byte(&mut self, c: Chunk, b: u8) -> Result<State, FramingError> {
        let next = match c {
            Chunk::Size { size, digits } => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(FramingError::BadChunkSize);
                }
                match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // 16 hex digits would overflow a u64 length check below.
                        if digits >= 15 {
                            return Err(FramingError::BadChunkSize);
                        }
                        let v = (b as char).to_digit(16).unwrap_or(0);
                        Chunk::Size {
                            size: size * 16 + u64::from(v),
                            digits: digits + 1,
                        }
                    }
                    b';' if digits > 0 => Chunk::Ext { size },
                    b'\r' if digits > 0 => Chunk::SizeLf { size },
                    _ => return Err(FramingError::BadChunkSize),
                }
            }
            Chunk::Ext { size } => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(FramingError::BadChunkSize);
                }
                match b {
                    b'\r' => Chunk::SizeLf { size },
                    b'\n' => return Err(FramingError::BadChunkDelimiter),
                    _ => Chunk::Ext { size },
                }
            }
            Chunk::SizeLf { size } => {
                if b != b'\n' {
                    return Err(FramingError::BadChunkDelimiter);
                }
                self.line = 0;
                if size == 0 {
                    Chunk::TrailerStart
                } else {
                    Chunk::Data { left: size }
                }
            }
            Chunk::Data { .. } => unreachable!("data is consumed in bulk by advance"),
            Chunk::DataCr => {
                if b != b'\r' {
                    return Err(FramingError::BadChunkDelimiter);
                }
                Chunk::DataLf
            }
            Chunk::DataLf => {
                if b != b'\n' {
                    return Err(FramingError::BadChunkDelimiter);
                }
                Chunk::Size { size: 0, digits: 0 }
            }
            Chunk::TrailerStart => match b {
                b'\r' => Chunk::EndLf,
                b'\n' => return Err(FramingError::BadChunkDelimiter),
                _ => self.trailer_byte()?,
            },
            Chunk::Trailer => match b {
                b'\r' => Chunk::TrailerLf,
                b'\n' => return Err(FramingError::BadChunkDelimiter),
                _ => self.trailer_byte()?,
            },
            Chunk::TrailerLf => {
                if b != b'\n' {
                    return Err(FramingError::BadChunkDelimiter);
                }
                Chunk::TrailerStart
            }
            Chunk::EndLf => {
                if b != b'\n' {
                    return Err(FramingError::BadChunkDelimiter);
                }
                return Ok(State::Done);
            }
        };
        Ok(State::Chunked(next))
    }

    fn trailer_byte(&mut self) -> Result<Chunk, FramingError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(FramingError::TrailerTooLarge);
        }
        Ok(Chunk::Trailer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{RequestHead, ResponseHead};

    fn req_body(s: &str) -> Result<BodyLen, FramingError> {
        let h = RequestHead::parse(s.as_bytes()).unwrap().unwrap();
        request_body(&h, s.as_bytes())
    }

    #[test]
    fn request_framing_and_smuggling_shapes() {
        assert_eq!(req_body("GET http://a/ HTTP/1.1\r\n\r\n"), Ok(BodyLen::Empty));
        assert_eq!(
            req_body("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(BodyLen::Length(5))
        );
        assert_eq!(
            req_body("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(BodyLen::Length(5))
        );
        assert_eq!(
            req_body("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(BodyLen::Chunked)
        );
        for (s, e) in [
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                FramingError::LengthAndChunked,
            ),
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                FramingError::ConflictingLength,
            ),
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
                FramingError::ConflictingLength,
            ),
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                FramingError::BadContentLength,
            ),
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
                FramingError::BadContentLength,
            ),
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length:\r\n\r\n",
                FramingError::BadContentLength,
            ),
            (
                "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                FramingError::BadTransferEncoding,
            ),
        ] {
            assert_eq!(req_body(s), Err(e), "{s}");
        }
    }

    fn resp_kind(s: &str, m: Method) -> ResponseKind {
        let h = ResponseHead::parse(s.as_bytes()).unwrap().unwrap();
        response_kind(&h, s.as_bytes(), m).unwrap()
    }

    #[test]
    fn response_framing() {
        use ResponseKind::*;
        assert_eq!(
            resp_kind("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", Method::Get),
            Final(BodyLen::Length(3))
        );
        assert_eq!(
            resp_kind("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", Method::Head),
            Final(BodyLen::Empty)
        );
        assert_eq!(
            resp_kind("HTTP/1.1 204 No Content\r\n\r\n", Method::Get),
            Final(BodyLen::Empty)
        );
        assert_eq!(
            resp_kind("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", Method::Get),
            Final(BodyLen::Empty)
        );
        assert_eq!(resp_kind("HTTP/1.1 100 Continue\r\n\r\n", Method::Post), Interim);
        assert_eq!(
            resp_kind("HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::Get),
            Upgrade
        );
        assert_eq!(resp_kind("HTTP/1.1 200 OK\r\n\r\n", Method::Connect), Upgrade);
        assert_eq!(
            resp_kind("HTTP/1.1 200 OK\r\n\r\n", Method::Get),
            Final(BodyLen::UntilClose)
        );
        assert_eq!(
            resp_kind("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::Get),
            Final(BodyLen::Chunked)
        );
    }

    fn track_all(len: BodyLen, data: &[u8], step: usize) -> Result<(usize, bool), FramingError> {
        let mut t = BodyTracker::new(len);
        let mut used = 0;
        for piece in data.chunks(step.max(1)) {
            let n = t.advance(piece)?;
            used += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((used, t.is_done()))
    }

    #[test]
    fn chunked_tracking_any_split() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        let mut data = body.to_vec();
        data.extend_from_slice(b"NEXT REQUEST");
        for step in 1..=data.len() {
            assert_eq!(
                track_all(BodyLen::Chunked, &data, step),
                Ok((body.len(), true)),
                "step {step}"
            );
        }
    }

    #[test]
    fn length_tracking() {
        assert_eq!(track_all(BodyLen::Length(4), b"abcdefg", 3), Ok((4, true)));
        assert_eq!(track_all(BodyLen::Length(10), b"abc", 3), Ok((3, false)));
        let mut t = BodyTracker::new(BodyLen::Length(10));
        t.advance(b"abc").unwrap();
        assert_eq!(t.on_eof(), Err(FramingError::Truncated));
        let mut t = BodyTracker::new(BodyLen::UntilClose);
        assert_eq!(t.advance(b"abc"), Ok(3));
        assert_eq!(t.on_eof(), Ok(()));
        assert!(t.is_done());
    }

    #[test]
    fn bad_chunks() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b" 5\r\nhello\r\n",
            b"0x5\r\nhello\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"fffffffffffffffff\r\n",
            b"-1\r\n",
            b"5 \r\nhello\r\n",
        ] {
            assert!(
                track_all(BodyLen::Chunked, bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn tracker_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), step in 1usize..64) {
            let _ = track_all(BodyLen::Chunked, &data, step);
        }

        #[test]
        fn chunked_roundtrip(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300), 0..8), step in 1usize..97) {
            let mut enc = Vec::new();
            for c in &chunks {
                enc.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                enc.extend_from_slice(c);
                enc.extend_from_slice(b"\r\n");
            }
            enc.extend_from_slice(b"0\r\n\r\n");
            let total = enc.len();
            enc.extend_from_slice(b"GET");
            proptest::prop_assert_eq!(track_all(BodyLen::Chunked, &enc, step), Ok((total, true)));
            let mut t = BodyTracker::new(BodyLen::Chunked);
            let mut decoded = Vec::new();
            for piece in enc.chunks(step) {
                let n = t.advance_with(piece, |p| decoded.extend_from_slice(p)).unwrap();
                if n < piece.len() {
                    break;
                }
            }
            proptest::prop_assert_eq!(decoded, chunks.concat());
        }
    }
}
