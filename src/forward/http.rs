//! Small HTTP/1.1 helpers shared by the client and the gateway: canned
//! replies with a one-line reason, and the proxy's head rewriting.

use std::io::Write;

use msc_io::head::{Headers, RequestHead};

/// The standard reason phrase for the statuses msc itself produces.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A complete plain-text reply whose body is `reason` on one line. `who`
/// names the component answering (`msc-client`, `msc-gateway`), so a user can
/// tell which hop failed; so does the `Proxy-Status` field (RFC 9209), by
/// which the client tells the gateway's own answers (an origin failed) from
/// what an origin sent.
pub fn error_reply(status: u16, who: &str, reason: &str, close: bool) -> Vec<u8> {
    let body = format!("{who}: {reason}\n");
    let mut out = Vec::with_capacity(200 + body.len() * 2);
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nProxy-Status: {who}; details=\"{}\"\r\n{}\r\n",
        reason_phrase(status),
        body.len(),
        sf_string(reason),
        if close { "Connection: close\r\n" } else { "" },
    );
    out.extend_from_slice(body.as_bytes());
    out
}

/// The inside of a structured-field string (RFC 8941): printable ASCII,
/// with `"` and `\` escaped; anything else becomes `?`.
fn sf_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                o.push('\\');
                o.push(c);
            }
            ' '..='~' => o.push(c),
            _ => o.push('?'),
        }
    }
    o
}

/// Escapes text for inclusion in HTML.
pub fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The 403 block page naming the policy rule that matched.
pub fn block_page(host: &str, rule: &str, close: bool) -> Vec<u8> {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Blocked by policy</title></head>\n\
         <body><h1>Access blocked</h1>\n<p>Access to <b>{}</b> is blocked by the security policy \
         (rule <code>{}</code>).</p>\n<p>Contact your administrator if you need this site.</p></body></html>\n",
        html_escape(host),
        html_escape(rule)
    );
    let mut out = Vec::with_capacity(200 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Msc-Policy-Rule: {}\r\n{}\r\n",
        body.len(),
        rule,
        if close { "Connection: close\r\n" } else { "" },
    );
    out.extend_from_slice(body.as_bytes());
    out
}

/// Header fields that describe one hop only and are never forwarded.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "upgrade",
    "proxy-authenticate",
];

/// Fields that decide where a message ends (and, for `Host`, what it is
/// for). `Connection` naming one of them never removes it: the next hop would
/// then frame the message differently from this one, and the body would be
/// read there as another request (a desync that shifts responses between
/// users of a pooled tunnel).
const NEVER_HOP_BY_HOP: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Whether a header must not be forwarded: a standard hop-by-hop field, or
/// one the message's `Connection` header lists (framing fields excepted).
pub fn is_hop_by_hop(name: &[u8], headers: &Headers, buf: &[u8]) -> bool {
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes())) {
        return true;
    }
    if NEVER_HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes())) {
        return false;
    }
    let Ok(n) = std::str::from_utf8(name) else {
        return true;
    };
    headers.has_token(buf, "connection", n) || headers.has_token(buf, "proxy-connection", n)
}

/// Copies the end-to-end header fields of a head: hop-by-hop fields (and
/// `Host` when `skip_host`) are left out; `keep` may keep some back in.
/// `Content-Length` goes out once with a single value: repeated fields or a
/// list such as `3, 3` were accepted only because every value agreed
/// ([`msc_io::framing`]), and the next hop must not have to agree again.
pub fn copy_end_to_end(headers: &Headers, buf: &[u8], skip_host: bool, keep: &[&str], out: &mut Vec<u8>) {
    let mut length_written = false;
    for h in headers.as_slice() {
        let name = h.name.get(buf);
        let kept = keep.iter().any(|k| name.eq_ignore_ascii_case(k.as_bytes()));
        if (skip_host && name.eq_ignore_ascii_case(b"host")) || (is_hop_by_hop(name, headers, buf) && !kept) {
            continue;
        }
        let mut value = h.value.get(buf);
        if name.eq_ignore_ascii_case(b"content-length") {
            if length_written {
                continue;
            }
            length_written = true;
            value = value.split(|&b| b == b',').next().unwrap_or(value).trim_ascii();
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes `Connection: upgrade` and the `Upgrade` field of `headers`, if any.
pub fn write_upgrade(headers: &Headers, buf: &[u8], out: &mut Vec<u8>) {
    if let Some(u) = headers.values(buf, "upgrade").next() {
        out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
        out.extend_from_slice(u);
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes `host[:port]` as an HTTP authority (IPv6 in brackets, default port omitted).
pub fn write_authority(out: &mut Vec<u8>, host: &str, port: u16, default_port: u16) {
    if host.contains(':') {
        let _ = write!(out, "[{host}]");
    } else {
        out.extend_from_slice(host.as_bytes());
    }
    if port != default_port {
        let _ = write!(out, ":{port}");
    }
}

/// Builds the origin-form request a gateway sends to an origin for an
/// absolute-form proxy request: path-only target, `Host` from the URL,
/// hop-by-hop fields removed (except an upgrade handshake), `Via` added.
pub fn origin_request(head: &RequestHead, buf: &[u8], upgrade: bool, via: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method_span.get(buf));
    out.push(b' ');
    let path = head.path.get(buf);
    if path.first() != Some(&b'/') {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    write_authority(out, head.host(buf), head.port, 80);
    out.extend_from_slice(b"\r\n");
    copy_end_to_end(&head.headers, buf, true, &[], out);
    if upgrade {
        write_upgrade(&head.headers, buf, out);
    }
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(via.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Copies a request head for the next hop unchanged except for one added
/// `Via` field (the client's view: the gateway sees what the browser sent).
pub fn with_via(head: &[u8], via: &str, out: &mut Vec<u8>) {
    // The head ends with an empty line: "\r\n\r\n" (or a bare "\n\n").
    let cut = if head.ends_with(b"\r\n\r\n") {
        head.len() - 2
    } else {
        head.len() - 1
    };
    out.extend_from_slice(&head[..cut]);
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(via.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_absolute_to_origin_form() {
        let s = "GET http://Example.com:8080/a?b HTTP/1.1\r\nHost: wrong\r\nProxy-Connection: keep-alive\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nAccept: */*\r\n\r\n";
        let h = RequestHead::parse(s.as_bytes()).unwrap().unwrap();
        let mut out = Vec::new();
        origin_request(&h, s.as_bytes(), false, "1.1 msc-gateway", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a?b HTTP/1.1\r\nHost: Example.com:8080\r\nAccept: */*\r\nVia: 1.1 msc-gateway\r\n\r\n"
        );
        let s = "GET http://[::1] HTTP/1.1\r\n\r\n";
        let h = RequestHead::parse(s.as_bytes()).unwrap().unwrap();
        let mut out = Vec::new();
        origin_request(&h, s.as_bytes(), false, "1.1 msc-gateway", &mut out);
        assert!(out.starts_with(b"GET / HTTP/1.1\r\nHost: [::1]\r\n"));
    }

    #[test]
    fn connection_never_removes_framing_fields() {
        for (req, framing) in [
            (
                "POST http://a/ HTTP/1.1\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n",
                "Content-Length: 5\r\n",
            ),
            (
                "POST http://a/ HTTP/1.1\r\nConnection: close, transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding: chunked\r\n",
            ),
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
                "Content-Length: 3\r\nVia",
            ),
        ] {
            let h = RequestHead::parse(req.as_bytes()).unwrap().unwrap();
            let mut out = Vec::new();
            origin_request(&h, req.as_bytes(), false, "1.1 msc-gateway", &mut out);
            let out = String::from_utf8(out).unwrap();
            assert!(out.contains(framing), "{req:?} -> {out:?}");
            assert!(!out.to_ascii_lowercase().contains("connection"), "{out:?}");
            assert_eq!(
                out.matches("Content-Length").count(),
                usize::from(framing.contains("Length"))
            );
        }
    }

    #[test]
    fn via_is_appended() {
        let mut out = Vec::new();
        with_via(b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n", "1.1 msc", &mut out);
        assert_eq!(out, b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nVia: 1.1 msc\r\n\r\n");
    }

    #[test]
    fn replies_are_well_formed() {
        let r = String::from_utf8(error_reply(502, "msc-client", "gateway 'a' unreachable", true)).unwrap();
        assert!(r.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(r.ends_with("\r\n\r\nmsc-client: gateway 'a' unreachable\n"));
        let r = String::from_utf8(error_reply(502, "msc-gateway", "bad \"x\"\u{e9}", false)).unwrap();
        assert!(
            r.contains("\r\nProxy-Status: msc-gateway; details=\"bad \\\"x\\\"?\"\r\n"),
            "{r}"
        );
        let p = String::from_utf8(block_page("<x>", "*.x", false)).unwrap();
        assert!(p.contains("&lt;x&gt;") && p.contains("*.x"));
    }
}
