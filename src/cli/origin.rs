//! A small built-in HTTP/1.1 origin server: the page `msc demo` serves, and a
//! well-behaved origin for tests and benchmarks (`msc origin`).
//!
//! Endpoints (GET unless noted; HEAD works wherever GET does):
//! - `/`: a short HTML page.
//! - `/bytes/N`: N bytes of a fixed pseudo-random pattern ([`pattern`]), Content-Length framed.
//! - `/chunked/N`: the same bytes, chunked.
//! - `/close/N`: the same bytes, delimited by closing the connection.
//! - `/status/CODE`: an empty response with that status.
//! - `/delay/MS`: a short text after MS milliseconds (at most 60 s).
//! - `/echo`: the request head as received, as text.
//! - `/upgrade` with `Connection: upgrade`: `101 Switching Protocols`, then echoes raw bytes.
//! - any method with a body, `/sha256`: reads the body; answers `sha256=HEX bytes=N`.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::LazyLock;
use std::time::Duration;

use monoio::net::TcpStream;
use msc_io::framing::{BodyLen, BodyTracker, request_body};
use msc_io::head::{Method, RequestHead};
use msc_io::stream::{PlainReader, PlainWriter, Sink, Source, read_request_head};

use msc_io::worker::Service;

use crate::forward::error::ProxyError;

const BLOCK: usize = 64 * 1024;

/// The repeating 64 KiB block behind `/bytes/N`: byte `i` of a response is
/// `pattern()[i % 65536]`.
pub fn pattern() -> &'static [u8] {
    static P: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32).to_le_bytes()[0]
            })
            .collect()
    });
    &P
}

const PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>msc demo origin</title></head>\n\
<body><h1>Hello from the msc demo origin</h1>\n<p>If you can read this through the proxy, the request \
travelled browser &rarr; msc client &rarr; mutual TLS &rarr; msc gateway &rarr; this origin.</p></body></html>\n";

/// One worker's origin service.
#[derive(Debug, Default)]
pub struct Origin;

impl Service for Origin {
    async fn serve(self: Rc<Self>, _listener: usize, stream: TcpStream, _peer: SocketAddr) {
        let (mut r, mut w) = msc_io::stream::split(stream);
        let _ = serve_conn(&mut r, &mut w).await;
        let _ = w.close_write().await;
    }
}

async fn serve_conn(r: &mut PlainReader, w: &mut PlainWriter) -> io::Result<()> {
    let idle = Duration::from_secs(120);
    let stop = msc_io::worker::stopping();
    loop {
        let next = monoio::select! {
            h = read_request_head(r, idle, Duration::from_secs(30), msc_io::head::Limits::PEER) => h,
            _ = stop.wait() => return Ok(()),
        };
        let head = match next {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(e) => {
                let Some(e) = ProxyError::request_head(&e, Duration::from_secs(30)) else {
                    return Ok(());
                };
                let reply = simple(e.status, "text/plain", e.reason.as_bytes(), true);
                return w.write_bytes(&reply).await;
            }
        };
        let data = r.data();
        let close = head.wants_close(data) || head.minor_version == 0;
        let body = match request_body(&head, data) {
            Ok(b) => b,
            Err(e) => {
                return w
                    .write_bytes(&simple(400, "text/plain", e.reason().as_bytes(), true))
                    .await;
            }
        };
        let path = head.path.str(data).to_owned();
        let head_upgrade = head.headers.has_token(data, "connection", "upgrade");
        let echo = data[..head.len].to_vec();
        let method = head.method;
        r.consume(head.len);
        // Read (and hash) any request body first.
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut n = 0u64;
        if body != BodyLen::Empty {
            let mut t = BodyTracker::new(body);
            if data_expect_continue(&head, &echo) {
                w.write_bytes(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            while !t.is_done() {
                if r.data().is_empty() && r.fill().await? == 0 {
                    return Ok(());
                }
                let used = match t.advance_with(r.data(), |p| {
                    ctx.update(p);
                    n += p.len() as u64;
                }) {
                    Ok(u) => u,
                    Err(e) => {
                        return w
                            .write_bytes(&simple(400, "text/plain", e.reason().as_bytes(), true))
                            .await;
                    }
                };
                r.consume(used);
            }
        }
        let keep = !close;
        let head_only = method == Method::Head;
        let (kind, arg) = match path.trim_start_matches('/').split_once('/') {
            Some((k, a)) => (k.to_owned(), a.to_owned()),
            None => (path.trim_start_matches('/').to_owned(), String::new()),
        };
        let num = arg.parse::<u64>().ok();
        match (kind.as_str(), num) {
            ("sha256", _) => {
                let hex: String = ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
                let text = format!("sha256={hex} bytes={n}\n");
                w.write_bytes(&simple(200, "text/plain", text.as_bytes(), !keep))
                    .await?;
            }
            ("" | "index.html", _) => {
                w.write_bytes(&maybe_head(
                    simple(200, "text/html; charset=utf-8", PAGE.as_bytes(), !keep),
                    head_only,
                ))
                .await?
            }
            ("upgrade", _) if head_upgrade => {
                // A minimal protocol switch: after 101, echo raw bytes until EOF.
                w.write_bytes(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
                    .await?;
                loop {
                    if r.data().is_empty() && r.fill().await? == 0 {
                        return Ok(());
                    }
                    let n = r.data().len();
                    r.forward(n, w).await?;
                }
            }
            ("echo", _) => {
                w.write_bytes(&maybe_head(simple(200, "text/plain", &echo, !keep), head_only))
                    .await?
            }
            ("status", Some(code)) if (200..600).contains(&code) => {
                let reply = format!(
                    "HTTP/1.1 {code} Status\r\nContent-Length: 0\r\n{}\r\n",
                    if keep { "" } else { "Connection: close\r\n" }
                );
                w.write_bytes(reply.as_bytes()).await?;
            }
            ("delay", Some(ms)) => {
                monoio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
                w.write_bytes(&simple(200, "text/plain", b"delayed\n", !keep)).await?;
            }
            ("bytes", Some(len)) => {
                let h = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n{}\r\n",
                    if keep { "" } else { "Connection: close\r\n" }
                );
                w.write_bytes(h.as_bytes()).await?;
                if !head_only {
                    send_pattern(w, len, false).await?;
                }
            }
            ("chunked", Some(len)) => {
                let h = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n{}\r\n",
                    if keep { "" } else { "Connection: close\r\n" }
                );
                w.write_bytes(h.as_bytes()).await?;
                if !head_only {
                    send_pattern(w, len, true).await?;
                    w.write_bytes(b"0\r\n\r\n").await?;
                }
            }
            ("close", Some(len)) => {
                w.write_bytes(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                )
                .await?;
                if !head_only {
                    send_pattern(w, len, false).await?;
                }
                return Ok(());
            }
            _ => w.write_bytes(&simple(404, "text/plain", b"not found\n", !keep)).await?,
        }
        if !keep {
            return Ok(());
        }
    }
}

fn data_expect_continue(head: &RequestHead, buf: &[u8]) -> bool {
    head.headers.has_token(buf, "expect", "100-continue")
}

fn maybe_head(mut reply: Vec<u8>, head_only: bool) -> Vec<u8> {
    if head_only && let Some(end) = msc_io::head::find_head_end(&reply, 0) {
        reply.truncate(end);
    }
    reply
}

fn simple(status: u16, ctype: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{}\r\n",
        crate::forward::http::reason_phrase(status),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Streams `len` pattern bytes, optionally as chunks (one per 64 KiB block).
async fn send_pattern(w: &mut PlainWriter, len: u64, chunked: bool) -> io::Result<()> {
    let p: &'static [u8] = pattern();
    let mut left = len;
    let mut off = 0usize;
    while left > 0 {
        let n = usize::try_from(left.min((BLOCK - off) as u64)).unwrap_or(BLOCK);
        if chunked {
            w.write_bytes(format!("{n:x}\r\n").as_bytes()).await?;
        }
        let (res, _) = w.write_owned(&p[off..off + n]).await;
        res?;
        if chunked {
            w.write_bytes(b"\r\n").await?;
        }
        left -= n as u64;
        off = (off + n) % BLOCK;
    }
    Ok(())
}

/// Starts the built-in origin.
pub fn start_origin(
    addr: SocketAddr,
    workers: usize,
    pool: &monoio::blocking::DefaultThreadPool,
) -> anyhow::Result<(msc_io::worker::Workers, SocketAddr)> {
    let (socks, bound) = crate::app::listeners(&[addr], workers, |_| "--listen".into())?;
    let w = msc_io::worker::Workers::start(
        "origin",
        msc_io::runtime::DriverChoice::Auto,
        socks,
        pool.clone(),
        Duration::from_millis(200),
        |_, _| Ok(Rc::new(Origin)),
    )?;
    Ok((w, bound[0]))
}
