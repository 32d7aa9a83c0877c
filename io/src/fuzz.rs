//! Fuzz harnesses for the sans-IO parsers: request and response heads, body
//! framing and the chunked decoder.
//!
//! Each `fuzz_*` function takes arbitrary bytes, must never panic, and asserts
//! the invariants that are cheap to check (spans inside the head, a head no
//! longer than its input, a tracker that never claims more bytes than it was
//! given, the same answer however the bytes are split). The cargo-fuzz
//! targets in `fuzz/fuzz_targets/` are one-line calls to these; the tests
//! below run them over seeds and mutations in plain `cargo test`.
//!
//! Compiled only for `cargo fuzz` (`--cfg fuzzing`) and tests, so normal
//! builds carry none of it.

use crate::framing::{self, BodyLen, BodyTracker, FramingError, ResponseKind};
use crate::head::{Form, HeadError, Headers, Limits, Method, RequestHead, ResponseHead, Span};

fn check_span(s: Span, head_len: usize) {
    assert!(s.start <= s.end, "span {s:?} is reversed");
    assert!(s.end as usize <= head_len, "span {s:?} ends past the head ({head_len})");
}

fn check_headers(h: &Headers, head_len: usize) {
    for f in h.as_slice() {
        check_span(f.name, head_len);
        check_span(f.value, head_len);
        assert!(!f.name.is_empty(), "empty header name");
    }
}

fn check_request(head: &RequestHead, data: &[u8], limits: Limits) {
    assert!(head.len <= data.len(), "head len {} > input {}", head.len, data.len());
    assert!(head.len <= limits.max_len);
    assert!(head.headers.as_slice().len() <= limits.max_headers);
    for s in [head.method_span, head.target, head.host, head.path] {
        check_span(s, head.len);
    }
    check_headers(&head.headers, head.len);
    assert!(head.minor_version <= 1);
    let t = head.target;
    match head.form {
        Form::Authority | Form::Absolute => {
            // Host and path point into the target.
            assert!(
                head.host.start >= t.start && head.host.end <= t.end,
                "host outside target"
            );
            assert!(
                head.path.start >= t.start && head.path.end <= t.end,
                "path outside target"
            );
            assert!(head.port != 0, "authority without a port");
            let _ = head.host(data);
        }
        Form::Origin => assert_eq!(head.path, t),
        Form::Asterisk => assert_eq!(t.get(data), b"*"),
    }
    if head.method == Method::Connect {
        assert_eq!(head.form, Form::Authority);
    }
    let _ = head.wants_close(data);
    let body = framing::request_body(head, data);
    assert!(
        !matches!(body, Ok(BodyLen::UntilClose)),
        "a request body never runs until close"
    );
    assert!(
        !matches!(body, Ok(BodyLen::Length(0))),
        "an empty request body is Empty"
    );
}

fn same_outcome<T>(a: &Result<Option<T>, HeadError>, b: &Result<Option<T>, HeadError>) -> bool {
    match (a, b) {
        (Ok(Some(_)), Ok(Some(_))) | (Ok(None), Ok(None)) => true,
        (Err(x), Err(y)) => x == y,
        _ => false,
    }
}

/// Request heads: `parse`, and `parse_within` with both limits.
pub fn fuzz_request_head(data: &[u8]) {
    let peer = RequestHead::parse_within(data, Limits::PEER);
    assert!(
        same_outcome(&RequestHead::parse(data), &peer),
        "parse differs from parse_within(PEER)"
    );
    let relayed = RequestHead::parse_within(data, Limits::RELAYED);
    if let Ok(Some(h)) = &peer {
        check_request(h, data, Limits::PEER);
        // What one hop accepts, the next must accept too, as the same head.
        match &relayed {
            Ok(Some(r)) => assert_eq!((r.len, r.target, r.form), (h.len, h.target, h.form)),
            other => panic!("PEER accepted a head that RELAYED refuses: {other:?}"),
        }
    }
    if let Ok(Some(h)) = &relayed {
        check_request(h, data, Limits::RELAYED);
    }
    if let Ok(None) = &peer {
        assert!(data.len() < Limits::PEER.max_len, "incomplete at the size limit");
    }
}

fn check_response(head: &ResponseHead, data: &[u8], limits: Limits) {
    assert!(head.len <= data.len(), "head len {} > input {}", head.len, data.len());
    assert!(head.len <= limits.max_len);
    assert!(head.headers.as_slice().len() <= limits.max_headers);
    check_headers(&head.headers, head.len);
    assert!(head.minor_version <= 1);
    assert!(head.status <= 999);
    let _ = head.wants_close(data);
}

const METHODS: [Method; 7] = [
    Method::Get,
    Method::Head,
    Method::Connect,
    Method::Post,
    Method::Put,
    Method::Options,
    Method::Other,
];

/// Response heads with both limits, then `response_kind` for the request
/// method chosen by the first byte.
pub fn fuzz_response_head(data: &[u8]) {
    let Some((&sel, data)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(sel) % METHODS.len()];
    let peer = ResponseHead::parse_within(data, Limits::PEER);
    assert!(
        same_outcome(&ResponseHead::parse(data), &peer),
        "parse differs from parse_within(PEER)"
    );
    let relayed = ResponseHead::parse_within(data, Limits::RELAYED);
    if let Ok(Some(h)) = &peer {
        check_response(h, data, Limits::PEER);
        match &relayed {
            Ok(Some(r)) => assert_eq!((r.len, r.status), (h.len, h.status)),
            other => panic!("PEER accepted a head that RELAYED refuses: {other:?}"),
        }
        match framing::response_kind(h, data, method) {
            Ok(ResponseKind::Upgrade) => {
                assert!(h.status == 101 || (method == Method::Connect && (200..300).contains(&h.status)));
            }
            Ok(ResponseKind::Interim) => assert!((100..200).contains(&h.status)),
            Ok(ResponseKind::Final(len)) => {
                if method == Method::Head || h.status == 204 || h.status == 304 {
                    assert_eq!(len, BodyLen::Empty, "bodiless response given a body");
                }
                assert_ne!(len, BodyLen::Length(0));
                feed(len, &data[h.len..], 7);
            }
            Err(_) => {}
        }
    }
    if let Ok(Some(h)) = &relayed {
        check_response(h, data, Limits::RELAYED);
    }
}

/// What a tracker made of a whole stream.
#[derive(Debug, PartialEq, Eq)]
struct Fed {
    consumed: usize,
    payload: Vec<u8>,
    done: bool,
    result: Result<(), FramingError>,
}

/// Feeds `body` to a fresh tracker in pieces whose sizes follow `seed`
/// (0: all at once), checking the per-call invariants.
fn feed_split(len: BodyLen, body: &[u8], seed: u64) -> Fed {
    let mut t = BodyTracker::new(len);
    let mut fed = Fed {
        consumed: 0,
        payload: Vec::new(),
        done: t.is_done(),
        result: Ok(()),
    };
    let mut rng = seed;
    let mut at = 0;
    while at < body.len() && !t.is_done() {
        let piece = if seed == 0 {
            body.len() - at
        } else {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            1 + usize::try_from(rng >> 59).unwrap_or(0).min(body.len() - at - 1)
        };
        let chunk = &body[at..at + piece];
        let before = fed.payload.len();
        let hint = t.remaining_hint();
        match t.advance_with(chunk, |p| fed.payload.extend_from_slice(p)) {
            Ok(n) => {
                assert!(n <= chunk.len(), "tracker consumed {n} of {}", chunk.len());
                assert!(fed.payload.len() - before <= n, "more payload than bytes consumed");
                if n < chunk.len() {
                    assert!(t.is_done(), "stopped early without finishing the body");
                }
                if let (Some(h), BodyLen::Length(_)) = (hint, len) {
                    assert!(n as u64 <= h, "consumed past Content-Length");
                }
                at += n;
                fed.consumed += n;
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) => {
                fed.result = Err(e);
                break;
            }
        }
    }
    fed.done = t.is_done();
    if let BodyLen::Length(n) = len {
        assert!(fed.consumed as u64 <= n);
        assert_eq!(fed.done, fed.consumed as u64 == n);
    }
    if fed.result.is_ok() {
        let eof = t.clone().on_eof();
        assert_eq!(
            eof.is_ok(),
            fed.done || t.until_close(),
            "on_eof disagrees with the state"
        );
    }
    fed
}

/// Feeds `body` whole and split; both must agree.
fn feed(len: BodyLen, body: &[u8], seed: u64) {
    let whole = feed_split(len, body, 0);
    let split = feed_split(len, body, seed | 1);
    match (&whole.result, &split.result) {
        (Ok(()), Ok(())) => assert_eq!(whole, split, "splitting the input changed the outcome"),
        (Err(a), Err(b)) => assert_eq!(a, b, "splitting the input changed the error"),
        _ => panic!("splitting the input changed the outcome: {whole:?} vs {split:?}"),
    }
    // `skip` within the hint is the same as `advance` over those bytes.
    let mut a = BodyTracker::new(len);
    let mut b = BodyTracker::new(len);
    if let Some(h) = a.remaining_hint() {
        let n = usize::try_from(h).unwrap_or(usize::MAX).min(body.len());
        assert_eq!(a.advance(&body[..n]), Ok(n));
        b.skip(n);
        assert_eq!((a.is_done(), a.remaining_hint()), (b.is_done(), b.remaining_hint()));
    }
}

/// Body framing. First byte: mode. Mode 0 feeds the rest to a chunked
/// decoder; mode 1 to a `Content-Length` body of the next two bytes' length;
/// otherwise the rest is a request (even) or response (odd) head followed by
/// its body, framed as the head says. Bodies are fed whole and in splits
/// chosen by the mode byte.
pub fn fuzz_body_framing(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let seed = u64::from(mode).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    match mode % 4 {
        0 => feed(BodyLen::Chunked, rest, seed),
        1 if rest.len() >= 2 => feed(
            BodyLen::Length(u64::from(u16::from_be_bytes([rest[0], rest[1]]))),
            &rest[2..],
            seed,
        ),
        1 => {}
        2 => {
            if let Ok(Some(h)) = RequestHead::parse(rest)
                && let Ok(len) = framing::request_body(&h, rest)
            {
                feed(len, &rest[h.len..], seed);
            }
        }
        _ => {
            let method = METHODS[usize::from(mode >> 2) % METHODS.len()];
            if let Ok(Some(h)) = ResponseHead::parse(rest)
                && let Ok(ResponseKind::Final(len)) = framing::response_kind(&h, rest, method)
            {
                feed(len, &rest[h.len..], seed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic mutations of the seeds: bit flips, byte sets, splices,
    /// truncations and duplications, so the tests reach past the first line.
    pub(crate) fn mutations(seeds: &[&[u8]], count: usize, mut f: impl FnMut(&[u8])) {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x2545_F491_4F6C_DD1D);
        let mut next = move || rand::Rng::random::<u64>(&mut rng);
        for s in seeds {
            f(s);
        }
        let pick = |r: u64, n: usize| usize::try_from(r % (n as u64).max(1)).unwrap_or(0);
        for _ in 0..count {
            let mut v = seeds[pick(next(), seeds.len())].to_vec();
            for _ in 0..1 + pick(next(), 4) {
                let r = next();
                let at = pick(r >> 8, v.len() + 1);
                match r % 6 {
                    0 if !v.is_empty() => {
                        let i = at.min(v.len() - 1);
                        v[i] ^= 1 << (r >> 40 & 7);
                    }
                    1 if !v.is_empty() => {
                        let i = at.min(v.len() - 1);
                        const BYTES: &[u8] = b"\r\n :;0aF9,\t\0\x7f-/";
                        v[i] = BYTES[pick(r >> 40, BYTES.len())];
                    }
                    2 => v.truncate(at),
                    3 => {
                        let other = seeds[pick(r >> 32, seeds.len())];
                        let from = pick(r >> 44, other.len() + 1);
                        v.splice(at..at, other[from..].iter().copied());
                    }
                    4 => v.insert(at, r.to_le_bytes()[6]),
                    _ => {
                        let end = (at + pick(r >> 36, 32)).min(v.len());
                        let dup = v[at..end].to_vec();
                        v.splice(at..at, dup);
                    }
                }
            }
            f(&v);
        }
    }

    const REQUESTS: &[&[u8]] = &[
        b"GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Connection: keep-alive\r\n\r\n",
        b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n",
        b"POST http://[::1]:8080 HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\nX: y\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nx",
        b"GET http://a:65535 HTTP/1.1\nConnection: close\n\n",
        b"PUT http://user@h/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];

    const RESPONSES: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nuntil close",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ];

    #[test]
    fn request_head_seeds_and_mutations() {
        mutations(REQUESTS, 20_000, fuzz_request_head);
    }

    #[test]
    fn response_head_seeds_and_mutations() {
        let with_method: Vec<Vec<u8>> = RESPONSES
            .iter()
            .enumerate()
            .map(|(i, r)| [&[u8::try_from(i).unwrap_or(0)][..], r].concat())
            .collect();
        let seeds: Vec<&[u8]> = with_method.iter().map(Vec::as_slice).collect();
        mutations(&seeds, 20_000, fuzz_response_head);
    }

    #[test]
    fn body_framing_seeds_and_mutations() {
        let mut owned: Vec<Vec<u8>> = vec![
            b"\x00a\r\n0123456789\r\n0\r\n\r\n".to_vec(),
            b"\x04ffffffffffffff\r\n".to_vec(),
            b"\x08000;ext=\"x\"\r\nTrailer: 1\r\n\r\n".to_vec(),
            b"\x01\x00\x05hello, extra".to_vec(),
        ];
        for (i, r) in REQUESTS.iter().enumerate() {
            owned.push([&[2 + 4 * u8::try_from(i).unwrap_or(0)][..], r].concat());
        }
        for (i, r) in RESPONSES.iter().enumerate() {
            owned.push([&[3 + 4 * u8::try_from(i).unwrap_or(0)][..], r].concat());
        }
        let seeds: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        mutations(&seeds, 20_000, fuzz_body_framing);
    }

    #[test]
    fn oversized_inputs() {
        let mut big = b"GET http://a/ HTTP/1.1\r\n".to_vec();
        big.resize(Limits::RELAYED.max_len + 10, b'a');
        fuzz_request_head(&big);
        let mut many = b"\0HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..120 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        fuzz_response_head(&many);
    }
}
