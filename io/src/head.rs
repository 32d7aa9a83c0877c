//! Sans-IO parsing of HTTP/1.x request and response heads, with limits.
//!
//! The parser never copies: a parsed head is a set of [`Span`]s (offsets) into
//! the caller's buffer, so the bytes that arrived are the bytes that are
//! forwarded. httparse does the tokenising; this module adds the proxy's view:
//! which request-target form was used, where the authority is, and the limits
//! that keep a hostile peer from costing memory or time.

use std::fmt;

/// Largest head (request line or status line + headers + blank line) accepted.
pub const MAX_HEAD_LEN: usize = 64 * 1024;
/// Most header fields accepted in one head.
pub const MAX_HEADERS: usize = 100;

/// What msc's own hop may add to a head that met [`Limits::PEER`] (`Via`,
/// `Connection: close`), so the next msc hop never refuses what the first
/// one accepted.
const RELAY_SLACK_LEN: usize = 1024;
const RELAY_SLACK_HEADERS: usize = 8;

/// The size limits a head must fit in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_len: usize,
    pub max_headers: usize,
}

impl Limits {
    /// Heads from a browser or an origin: [`MAX_HEAD_LEN`] and [`MAX_HEADERS`].
    pub const PEER: Limits = Limits {
        max_len: MAX_HEAD_LEN,
        max_headers: MAX_HEADERS,
    };

    /// Heads relayed by the other msc hop (client -> gateway requests,
    /// gateway -> client responses): a head that met [`Limits::PEER`] plus
    /// the few fields a hop adds. A web page or an origin can therefore never
    /// make one hop send what the next refuses (which would look like a
    /// failing gateway).
    pub const RELAYED: Limits = Limits {
        max_len: MAX_HEAD_LEN + RELAY_SLACK_LEN,
        max_headers: MAX_HEADERS + RELAY_SLACK_HEADERS,
    };
}

/// The httparse array: room for the largest limit.
const PARSE_HEADERS: usize = MAX_HEADERS + RELAY_SLACK_HEADERS;

/// A byte range into the buffer a head was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn of(base: &[u8], part: &[u8]) -> Span {
        // Both slices come from the same buffer: httparse hands out sub-slices of it.
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Span::new(start, start + part.len())
    }

    fn new(start: usize, end: usize) -> Span {
        debug_assert!(end <= Limits::RELAYED.max_len * 2);
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    /// The bytes of this span in `buf` (the buffer the head was parsed from).
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    /// The span as text; heads are ASCII-validated by httparse for the parts we expose.
    pub fn str<'a>(&self, buf: &'a [u8]) -> &'a str {
        std::str::from_utf8(self.get(buf)).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Request methods the proxy treats specially; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Connect,
    Get,
    Head,
    Post,
    Put,
    Options,
    Other,
}

impl Method {
    fn classify(m: &str) -> Method {
        match m {
            "CONNECT" => Method::Connect,
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// The request-target form (RFC 9112 section 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `CONNECT host:port`
    Authority,
    /// `GET http://host[:port]/path`
    Absolute,
    /// `GET /path` (what a server gets; a proxy only answers its own endpoints this way)
    Origin,
    /// `OPTIONS *`
    Asterisk,
}

/// One header field, as spans into the head buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

/// Header spans kept inline for typical heads (browsers send 10-20 fields);
/// more spill to the heap. Small on purpose: a parsed head is held in
/// connection futures, whose size every idle connection pays.
const INLINE_HEADERS: usize = 24;

/// The header spans of a parsed head.
#[derive(Clone, Debug, Default)]
pub struct Headers {
    items: smallvec::SmallVec<[HeaderSpan; INLINE_HEADERS]>,
}

impl Headers {
    pub fn as_slice(&self) -> &[HeaderSpan] {
        &self.items
    }

    fn fill(&mut self, base: &[u8], parsed: &[httparse::Header<'_>]) {
        self.items.clear();
        self.items.extend(parsed.iter().map(|h| HeaderSpan {
            name: Span::of(base, h.name.as_bytes()),
            value: Span::of(base, h.value),
        }));
    }

    /// Values of every field named `name` (ASCII case-insensitive), in order.
    pub fn values<'a>(&'a self, buf: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.as_slice()
            .iter()
            .filter(move |h| h.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |h| h.value.get(buf))
    }

    /// Whether a comma-separated field (e.g. `Connection`) lists `token`.
    pub fn has_token(&self, buf: &[u8], name: &str, token: &str) -> bool {
        self.values(buf, name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Why a head was refused. Each maps to an HTTP status and a one-line reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head did not end within [`MAX_HEAD_LEN`] bytes.
    TooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    TooManyHeaders,
    /// Not HTTP/1.x syntax; the reason says what was wrong.
    Malformed(&'static str),
    /// A request target the proxy cannot use; the reason says why.
    BadTarget(&'static str),
}

impl HeadError {
    /// The HTTP status a proxy answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Malformed(_) | HeadError::BadTarget(_) => 400,
        }
    }

    /// A one-line, human-readable reason (safe to put in a response body).
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "request head larger than 64 KiB",
            HeadError::TooManyHeaders => "more than 100 header fields",
            HeadError::Malformed(r) | HeadError::BadTarget(r) => r,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HeadError {}

fn map_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed("malformed request: invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("malformed request: invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("malformed request: invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("malformed response: invalid status"),
        httparse::Error::Token => HeadError::Malformed("malformed request: invalid method or token"),
        httparse::Error::Version => HeadError::Malformed("malformed request: not HTTP/1.0 or HTTP/1.1"),
    }
}

/// The head's length from httparse's answer, with the size limit applied:
/// `Ok(None)` means read more.
fn head_len(
    parsed: httparse::Result<usize>,
    buf: &[u8],
    limits: Limits,
    fields: usize,
) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n > limits.max_len => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(_)) if fields > limits.max_headers => Err(HeadError::TooManyHeaders),
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_len => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(map_httparse(e)),
    }
}

/// Finds the end of a head (`\r\n\r\n`, or the bare-LF form httparse tolerates)
/// scanning from `from`, so a head arriving in pieces is not re-tokenised on
/// every read.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while i < buf.len() {
        match memchr_nl(&buf[i..]) {
            None => return None,
            Some(off) => {
                let p = i + off;
                // "\n\n" or "\n\r\n"
                if buf.get(p + 1) == Some(&b'\n') {
                    return Some(p + 2);
                }
                if buf.get(p + 1) == Some(&b'\r') && buf.get(p + 2) == Some(&b'\n') {
                    return Some(p + 3);
                }
                i = p + 1;
            }
        }
    }
    None
}

fn memchr_nl(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

/// A parsed request head: spans into the buffer it came from.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// Length of the head, including the blank line.
    pub len: usize,
    pub method: Method,
    pub method_span: Span,
    pub target: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub form: Form,
    /// Host from the request target (brackets stripped for IPv6 literals).
    /// Empty for origin- and asterisk-form.
    pub host: Span,
    /// Port from the request target, or the scheme default.
    pub port: u16,
    /// For absolute-form: the path and query (`/` when the URL had none). For
    /// origin-form: the target itself.
    pub path: Span,
    pub headers: Headers,
}

impl RequestHead {
    /// Parses a request head from the start of `buf`.
    ///
    /// `Ok(None)`: incomplete, read more (unless `buf` already holds
    /// [`MAX_HEAD_LEN`] bytes, which yields [`HeadError::TooLarge`]).
    pub fn parse(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        RequestHead::parse_within(buf, Limits::PEER)
    }

    /// [`RequestHead::parse`] with explicit limits.
    pub fn parse_within(buf: &[u8], limits: Limits) -> Result<Option<RequestHead>, HeadError> {
        let mut raw = [httparse::EMPTY_HEADER; PARSE_HEADERS];
        let mut req = httparse::Request::new(&mut raw);
        let parsed = req.parse(buf);
        let fields = req.headers.len();
        let Some(len) = head_len(parsed, buf, limits, fields)? else {
            return Ok(None);
        };
        let method_str = req.method.unwrap_or("");
        let target_str = req.path.unwrap_or("");
        let minor_version = req.version.unwrap_or(1);
        let method = Method::classify(method_str);
        let target = Span::of(buf, target_str.as_bytes());
        let mut head = RequestHead {
            len,
            method,
            method_span: Span::of(buf, method_str.as_bytes()),
            target,
            minor_version,
            form: Form::Origin,
            host: Span::default(),
            port: 0,
            path: target,
            headers: Headers::default(),
        };
        head.headers.fill(buf, req.headers);
        let t = target_str.as_bytes();
        if method == Method::Connect {
            let (host, port) =
                parse_authority(t, None).map_err(|_| HeadError::BadTarget("bad CONNECT target: expected host:port"))?;
            head.form = Form::Authority;
            head.host = offset(host, target.start);
            head.port = port;
        } else if t == b"*" {
            head.form = Form::Asterisk;
        } else if t.first() == Some(&b'/') {
            head.form = Form::Origin;
        } else {
            let (host, port, path) = parse_absolute(t)?;
            head.form = Form::Absolute;
            head.host = offset(host, target.start);
            head.port = port;
            head.path = match path {
                Some(p) => offset(p, target.start),
                None => Span::new(target.end as usize, target.end as usize),
            };
        }
        Ok(Some(head))
    }

    pub fn host<'a>(&self, buf: &'a [u8]) -> &'a str {
        self.host.str(buf)
    }

    /// Whether the client asked to close after this exchange.
    pub fn wants_close(&self, buf: &[u8]) -> bool {
        let h = &self.headers;
        if self.minor_version == 0 {
            !(h.has_token(buf, "connection", "keep-alive") || h.has_token(buf, "proxy-connection", "keep-alive"))
        } else {
            h.has_token(buf, "connection", "close") || h.has_token(buf, "proxy-connection", "close")
        }
    }
}

fn offset(r: (usize, usize), base: u32) -> Span {
    Span::new(base as usize + r.0, base as usize + r.1)
}

/// Splits `host:port` (or `[v6]:port`) into the host's range within `a`
/// (brackets excluded) and the port. `default_port` applies when no port is
/// given; with `None` the port is required.
fn parse_authority(a: &[u8], default_port: Option<u16>) -> Result<((usize, usize), u16), ()> {
    if a.is_empty() || a.contains(&b'@') {
        return Err(());
    }
    let (host, rest) = if a[0] == b'[' {
        let close = a.iter().position(|&b| b == b']').ok_or(())?;
        let inner = &a[1..close];
        if inner.is_empty() || !inner.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(());
        }
        if std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
            .is_none()
        {
            return Err(());
        }
        ((1, close), &a[close + 1..])
    } else {
        let end = a.iter().position(|&b| b == b':').unwrap_or(a.len());
        let host = &a[..end];
        if host.is_empty() || !host.iter().all(|&b| is_host_char(b)) {
            return Err(());
        }
        ((0, end), &a[end..])
    };
    let port = match rest {
        [] => default_port.ok_or(())?,
        [b':', digits @ ..] => parse_port(digits).ok_or(())?,
        _ => return Err(()),
    };
    Ok((host, port))
}

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

fn parse_port(d: &[u8]) -> Option<u16> {
    if d.is_empty() || d.len() > 5 || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: u32 = d.iter().fold(0, |acc, &b| acc * 10 + u32::from(b - b'0'));
    u16::try_from(v).ok().filter(|&p| p != 0)
}

#[allow(clippy::type_complexity)] // (host range, port, path range) is clearer than a one-off struct here
fn parse_absolute(t: &[u8]) -> Result<((usize, usize), u16, Option<(usize, usize)>), HeadError> {
    let sep = t.windows(3).position(|w| w == b"://").ok_or(HeadError::BadTarget(
        "bad request target: expected an absolute URL (http://host/path)",
    ))?;
    let scheme = &t[..sep];
    if scheme.eq_ignore_ascii_case(b"https") {
        return Err(HeadError::BadTarget(
            "absolute-form https URLs are not supported: use CONNECT for https",
        ));
    }
    if !scheme.eq_ignore_ascii_case(b"http") {
        return Err(HeadError::BadTarget(
            "unsupported URL scheme: only http is proxied in absolute form",
        ));
    }
    let auth_start = sep + 3;
    let rest = &t[auth_start..];
    let auth_len = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let auth = &rest[..auth_len];
    if auth.contains(&b'@') {
        return Err(HeadError::BadTarget("URLs with user information are not accepted"));
    }
    let ((hs, he), port) = parse_authority(auth, Some(80))
        .map_err(|_| HeadError::BadTarget("bad request target: invalid host or port in URL"))?;
    let path_start = auth_start + auth_len;
    let path = if path_start < t.len() {
        if t[path_start] == b'#' {
            return Err(HeadError::BadTarget("bad request target: fragment in URL"));
        }
        Some((path_start, t.len()))
    } else {
        None
    };
    Ok(((auth_start + hs, auth_start + he), port, path))
}

/// A parsed response head.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub minor_version: u8,
    pub headers: Headers,
}

impl ResponseHead {
    /// Parses a response head from the start of `buf`; `Ok(None)` means read more.
    pub fn parse(buf: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
        ResponseHead::parse_within(buf, Limits::PEER)
    }

    /// [`ResponseHead::parse`] with explicit limits.
    pub fn parse_within(buf: &[u8], limits: Limits) -> Result<Option<ResponseHead>, HeadError> {
        let mut raw = [httparse::EMPTY_HEADER; PARSE_HEADERS];
        let mut resp = httparse::Response::new(&mut raw);
        let parsed = resp.parse(buf);
        let fields = resp.headers.len();
        let Some(len) = head_len(parsed, buf, limits, fields)? else {
            return Ok(None);
        };
        let mut head = ResponseHead {
            len,
            status: resp.code.unwrap_or(0),
            minor_version: resp.version.unwrap_or(1),
            headers: Headers::default(),
        };
        head.headers.fill(buf, resp.headers);
        Ok(Some(head))
    }

    pub fn wants_close(&self, buf: &[u8]) -> bool {
        if self.minor_version == 0 {
            !self.headers.has_token(buf, "connection", "keep-alive")
        } else {
            self.headers.has_token(buf, "connection", "close")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<Option<RequestHead>, HeadError> {
        RequestHead::parse(s.as_bytes())
    }

    #[test]
    fn absolute_form() {
        let s = "GET http://Example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let h = req(s).unwrap().unwrap();
        assert_eq!(h.form, Form::Absolute);
        assert_eq!(h.len, s.len());
        assert_eq!(h.host(s.as_bytes()), "Example.com");
        assert_eq!(h.port, 8080);
        assert_eq!(h.path.str(s.as_bytes()), "/a/b?c=d");
        assert_eq!(h.headers.as_slice().len(), 1);
    }

    #[test]
    fn absolute_without_path_or_port() {
        let s = "GET http://example.com HTTP/1.1\r\n\r\n";
        let h = req(s).unwrap().unwrap();
        assert_eq!(h.port, 80);
        assert!(h.path.is_empty());
        let s = "GET http://example.com?q HTTP/1.1\r\n\r\n";
        let h = req(s).unwrap().unwrap();
        assert_eq!(h.path.str(s.as_bytes()), "?q");
    }

    #[test]
    fn connect_forms() {
        let s = "CONNECT example.com:443 HTTP/1.1\r\n\r\n";
        let h = req(s).unwrap().unwrap();
        assert_eq!((h.form, h.port), (Form::Authority, 443));
        assert_eq!(h.host(s.as_bytes()), "example.com");
        let s = "CONNECT [::1]:8443 HTTP/1.1\r\n\r\n";
        let h = req(s).unwrap().unwrap();
        assert_eq!(h.host(s.as_bytes()), "::1");
        for bad in [
            "CONNECT example.com HTTP/1.1\r\n\r\n",
            "CONNECT example.com:0 HTTP/1.1\r\n\r\n",
            "CONNECT example.com:65536 HTTP/1.1\r\n\r\n",
            "CONNECT :443 HTTP/1.1\r\n\r\n",
            "CONNECT user@example.com:443 HTTP/1.1\r\n\r\n",
            "CONNECT [zz]:443 HTTP/1.1\r\n\r\n",
            "CONNECT http://example.com/ HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(req(bad).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn origin_and_asterisk_forms_are_reported() {
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n").unwrap().unwrap().form, Form::Origin);
        assert_eq!(req("OPTIONS * HTTP/1.1\r\n\r\n").unwrap().unwrap().form, Form::Asterisk);
    }

    #[test]
    fn bad_targets() {
        for bad in [
            "GET https://example.com/ HTTP/1.1\r\n\r\n",
            "GET ftp://example.com/ HTTP/1.1\r\n\r\n",
            "GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
            "GET http:///x HTTP/1.1\r\n\r\n",
            "GET http://exa mple.com/ HTTP/1.1\r\n\r\n",
            "GET example.com HTTP/1.1\r\n\r\n",
        ] {
            let e = req(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
        }
    }

    #[test]
    fn partial_and_limits() {
        assert!(req("GET http://a/ HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let mut big = String::from("GET http://a/ HTTP/1.1\r\n");
        while big.len() < MAX_HEAD_LEN {
            big.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let e = req(&big).unwrap_err();
        assert_eq!(e.status(), 431);
        let mut many = String::from("GET http://a/ HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(req(&many).unwrap_err(), HeadError::TooManyHeaders);
        // What one msc hop accepted and added a field to, the next accepts.
        let mut hundred = String::from("GET http://a/ HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS {
            hundred.push_str(&format!("X-{i}: v\r\n"));
        }
        assert!(req(&format!("{hundred}\r\n")).unwrap().is_some());
        let relayed = format!("{hundred}Via: 1.1 msc-client\r\n\r\n");
        assert_eq!(req(&relayed).unwrap_err(), HeadError::TooManyHeaders);
        assert!(
            RequestHead::parse_within(relayed.as_bytes(), Limits::RELAYED)
                .unwrap()
                .is_some()
        );
        assert_eq!(req("\x16\x03\x01\x02\x00\x01\r\n\r\n").unwrap_err().status(), 400);
    }

    #[test]
    fn head_end_scan() {
        let b = b"GET / HTTP/1.1\r\nA: b\r\n\r\nBODY";
        assert_eq!(find_head_end(b, 0), Some(b.len() - 4));
        assert_eq!(find_head_end(b, 20), Some(b.len() - 4));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nX", 0), Some(16));
    }

    #[test]
    fn keep_alive_rules() {
        let s = "GET http://a/ HTTP/1.0\r\n\r\n";
        assert!(req(s).unwrap().unwrap().wants_close(s.as_bytes()));
        let s = "GET http://a/ HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n";
        assert!(!req(s).unwrap().unwrap().wants_close(s.as_bytes()));
        let s = "GET http://a/ HTTP/1.1\r\nConnection: foo, Close\r\n\r\n";
        assert!(req(s).unwrap().unwrap().wants_close(s.as_bytes()));
    }

    #[test]
    fn response_head() {
        let s = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        let h = ResponseHead::parse(s.as_bytes()).unwrap().unwrap();
        assert_eq!(h.status, 204);
        assert!(h.wants_close(s.as_bytes()));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = RequestHead::parse(&data);
            let _ = ResponseHead::parse(&data);
            let _ = find_head_end(&data, 0);
        }

        #[test]
        fn spans_stay_in_bounds(host in "[a-z0-9.-]{1,40}", port in 1u16.., path in "/[a-zA-Z0-9/?=&]{0,40}") {
            let s = format!("GET http://{host}:{port}{path} HTTP/1.1\r\n\r\n");
            if let Ok(Some(h)) = RequestHead::parse(s.as_bytes()) {
                proptest::prop_assert_eq!(h.host(s.as_bytes()), host.as_str());
                proptest::prop_assert_eq!(h.port, port);
                proptest::prop_assert_eq!(h.path.str(s.as_bytes()), path.as_str());
            }
        }
    }
}
