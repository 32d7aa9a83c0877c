//! The local control API (loopback only): the PAC file and the status.
//!
//! `GET /proxy.pac` (also `/wpad.dat`): the PAC, with `ETag`,
//! `Cache-Control` and `If-None-Match` support.
//! `GET /status`: JSON for `msc status` and scripts.
//! `GET /health`: 200 once every worker answered the control plane, 503
//! naming the ones that did not (the watchdog's heartbeat; see `health`).
//! `GET /`: the status page (HTML, inline SVG plots, no script, no external
//! asset; see [`super::page`]).
//! `GET /metrics`: Prometheus text format (see [`super::metrics`]).
//! Every request must carry a `Host` naming a loopback address (`localhost`,
//! `127.x.y.z`, `[::1]`, with or without a port): this defeats DNS
//! rebinding, where a web page's own host name is pointed at 127.0.0.1.
//!
//! The listener is read-only (GET and HEAD). Requests a web page makes are
//! refused (403) and counted: an `Origin` other than this listener's own
//! (`http://` + the `Host`), a `Sec-Fetch-Site` other than `same-origin` or
//! `none` (a page on another local port is `same-site`), and script loads.
//! Browsers cannot forge these headers, so no page can read the status or
//! the PAC across origins. State changes are not offered here at all: they
//! go through the control socket ([`super::socket`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;
use msc_io::head::{Method, RequestHead};
use msc_io::stream::{Sink, Source, read_request_head};

use super::State;
use crate::forward::error::ProxyError;
use crate::forward::http::error_reply;

const WHO: &str = "msc-control";

/// Whether a `Host` header value names this machine's loopback.
pub fn loopback_host(h: &str) -> bool {
    let h = h.trim();
    let host = if let Some(rest) = h.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, port)) if port.is_empty() || valid_port(port) => inner,
            _ => return false,
        }
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) if valid_port(&format!(":{port}")) => host,
            Some(_) => return false,
            None => h,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

fn valid_port(p: &str) -> bool {
    p.strip_prefix(':').is_some_and(|d| {
        !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit()) && d.parse::<u16>().is_ok()
    })
}

/// Whether an `Origin` header value is this listener's own origin: `http://`
/// followed by exactly the `Host` the request names.
pub fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .trim()
        .strip_prefix("http://")
        .is_some_and(|o| o.eq_ignore_ascii_case(host.trim()))
}

/// Whether a `Sec-Fetch-Site` value shows a request a web page made on
/// another origin (anything but `same-origin` and `none`, the user's own
/// navigation).
pub fn from_other_site(sec_fetch_site: &str) -> bool {
    !matches!(
        sec_fetch_site.trim().to_ascii_lowercase().as_str(),
        "same-origin" | "none"
    )
}

/// Whether an `If-None-Match` value matches `etag`.
pub fn etag_matches(inm: &str, etag: &str) -> bool {
    inm.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

pub async fn serve(state: Rc<RefCell<State>>, stream: TcpStream) {
    let (mut r, mut w) = msc_io::stream::split(stream);
    loop {
        let head = match read_request_head(
            &mut r,
            Duration::from_secs(30),
            Duration::from_secs(10),
            msc_io::head::Limits::PEER,
        )
        .await
        {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                if let Some(e) = ProxyError::request_head(&e, Duration::from_secs(10)) {
                    let _ = w.write_bytes(&error_reply(e.status, WHO, &e.reason, true)).await;
                }
                return;
            }
        };
        if head.path.str(r.data()).split('?').next() == Some("/health") {
            // Asked now, per request: a wedged worker must show here.
            let pings = state.borrow().pings.clone();
            let h = pings.ask_all(super::health::HEALTH_TIMEOUT).await;
            state.borrow_mut().last_health = Some(h);
        }
        let (reply, keep) = respond(&state, &head, r.data());
        // The control API takes no request bodies: close rather than parse one.
        let has_body = head.headers.values(r.data(), "content-length").next().is_some()
            || head.headers.values(r.data(), "transfer-encoding").next().is_some();
        r.consume(head.len);
        if w.write_bytes(&reply).await.is_err() || !keep || has_body {
            return;
        }
    }
}

fn respond(state: &Rc<RefCell<State>>, head: &RequestHead, buf: &[u8]) -> (Vec<u8>, bool) {
    let close = head.wants_close(buf);
    let host = head
        .headers
        .values(buf, "host")
        .next()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let host = match host.as_deref() {
        Some(h) if loopback_host(h) => h,
        _ => {
            return (
                error_reply(
                    403,
                    WHO,
                    "the Host header must name a loopback address (localhost, 127.0.0.1, [::1])",
                    true,
                ),
                false,
            );
        }
    };
    // A web page may try to load the PAC (or the status) as a script to
    // learn the proxy set-up; browsers label such requests, PAC fetchers
    // and command-line tools do not.
    let fetch = |name: &str| {
        head.headers
            .values(buf, name)
            .next()
            .map(|v| v.trim_ascii().to_ascii_lowercase())
    };
    let origin = head
        .headers
        .values(buf, "origin")
        .next()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    if origin.is_some_and(|o| !same_origin(&o, host))
        || fetch("sec-fetch-site").is_some_and(|v| from_other_site(&String::from_utf8_lossy(&v)))
        || fetch("sec-fetch-dest").as_deref() == Some(b"script".as_slice())
    {
        state.borrow_mut().refused_web_request();
        return (
            error_reply(
                403,
                WHO,
                "the control API does not answer requests made by web pages",
                true,
            ),
            false,
        );
    }
    if !matches!(head.method, Method::Get | Method::Head) {
        return (error_reply(405, WHO, "only GET and HEAD are supported", close), !close);
    }
    let head_only = head.method == Method::Head;
    let path = head.path.str(buf);
    let path = path.split('?').next().unwrap_or("");
    let st = state.borrow();
    // Never sniffed into something executable.
    let conn = if close {
        "X-Content-Type-Options: nosniff\r\nConnection: close\r\n"
    } else {
        "X-Content-Type-Options: nosniff\r\n"
    };
    let mut out = match path {
        "/proxy.pac" | "/wpad.dat" => {
            let pac = &st.pac;
            let inm = head
                .headers
                .values(buf, "if-none-match")
                .next()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let cache = format!("Cache-Control: max-age={}\r\n", st.pac_max_age.as_secs());
            if inm.is_some_and(|v| etag_matches(&v, &pac.etag)) {
                format!("HTTP/1.1 304 Not Modified\r\nETag: {}\r\n{cache}{conn}\r\n", pac.etag).into_bytes()
            } else {
                let mut o = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-ns-proxy-autoconfig\r\nContent-Length: {}\r\nETag: {}\r\n{cache}{conn}\r\n",
                    pac.text.len(),
                    pac.etag
                )
                .into_bytes();
                if !head_only {
                    o.extend_from_slice(pac.text.as_bytes());
                }
                o
            }
        }
        "/status" => {
            let mut body = serde_json::to_vec_pretty(&st.status()).unwrap_or_default();
            body.push(b'\n');
            ok("application/json", "", &body, conn, head_only)
        }
        "/health" => match &st.last_health {
            Some(h) => {
                let body = serde_json::to_vec(h).unwrap_or_default();
                let status = if h.ok { "200 OK" } else { "503 Service Unavailable" };
                let mut o = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{conn}\r\n",
                    body.len() + 1
                )
                .into_bytes();
                if !head_only {
                    o.extend_from_slice(&body);
                    o.push(b'\n');
                }
                o
            }
            None => error_reply(503, WHO, "workers not asked yet", close),
        },
        "/" => {
            let body = super::page::render(&st.status(), &st.history, std::time::SystemTime::now());
            ok(
                "text/html; charset=utf-8",
                PAGE_HEADERS,
                body.as_bytes(),
                conn,
                head_only,
            )
        }
        "/metrics" => {
            let body = super::metrics::render(&st.status());
            ok(super::metrics::CONTENT_TYPE, "", body.as_bytes(), conn, head_only)
        }
        _ => error_reply(
            404,
            WHO,
            "unknown path (try /, /status, /metrics, /health or /proxy.pac)",
            close,
        ),
    };
    if head_only && out.is_empty() {
        out = Vec::new();
    }
    (out, !close)
}

/// The status page may load nothing at all (everything is inline) and may
/// not be framed.
const PAGE_HEADERS: &str = "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n";

/// A `200 OK` with `body` (omitted for HEAD), never cached.
fn ok(ctype: &str, extra: &str, body: &[u8], conn: &str, head_only: bool) -> Vec<u8> {
    let mut o = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{extra}{conn}\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        o.extend_from_slice(body);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:27778",
            "localhost.",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:27778",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:27778",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "[::2]",
            "[::1]x",
            "127.0.0.1:notaport",
            "127.0.0.1:99999",
            "",
            "[fe80::1]:80",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn origins() {
        assert!(same_origin("http://127.0.0.1:27778", "127.0.0.1:27778"));
        assert!(same_origin("http://LOCALHOST:27778", "localhost:27778"));
        for bad in [
            "http://127.0.0.1:8000",
            "https://127.0.0.1:27778",
            "null",
            "http://evil.example",
            "http://127.0.0.1:27778.evil.example",
            "",
        ] {
            assert!(!same_origin(bad, "127.0.0.1:27778"), "{bad}");
        }
        assert!(!from_other_site("same-origin") && !from_other_site("None"));
        for s in ["same-site", "cross-site", "", "whatever"] {
            assert!(from_other_site(s), "{s}");
        }
    }

    #[test]
    fn if_none_match() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", \"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
