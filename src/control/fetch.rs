//! Fetching a gateway document (`GET /.well-known/msc/<name>`, see
//! [`crate::gateway::docs`]) over a fresh mutual-TLS connection, from the
//! control thread: configuration, the administrator's PAC, releases.
//!
//! The gateways are asked best first (the routing table's order for slot
//! 1, then every other gateway); the first that answers decides, unless it
//! cannot be reached. A body is read exactly: its `Content-Length` must be
//! present and within the caller's limit, and a short body is an error,
//! never a shorter document.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use msc_io::resolve::connect_any;
use msc_io::stream::{HeadReadError, Sink, Source, read_response_head};
use msc_tls::TlsStream;

use crate::gateway::docs::DOCS_PREFIX;
use crate::upstream::{GatewayRoute, Routing};

/// A document as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The gateway's copy still has the tag we sent.
    NotModified,
    Doc {
        body: Vec<u8>,
        /// The gateway's tag for it, if it sent one.
        etag: Option<String>,
        /// Which gateway served it (its label).
        from: String,
    },
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No gateway could be reached (or none is configured).
    Unreachable(String),
    /// A gateway answered with an error status (e.g. 404: it serves no such
    /// document): status and the gateway's one-line reason.
    Status { status: u16, reason: String, from: String },
    /// The answer was malformed, truncated or over the limit.
    Bad(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(r) => write!(f, "no gateway reachable: {r}"),
            FetchError::Status { status, reason, from } => write!(f, "gateway {from} answered {status}: {reason}"),
            FetchError::Bad(r) => write!(f, "{r}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Limits of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// The largest body accepted.
    pub max_body: usize,
    pub connect: Duration,
    pub handshake: Duration,
    /// The whole exchange after the handshake (head and body).
    pub transfer: Duration,
}

/// Gateways in the order to ask them: slot 1's order, then the rest.
pub fn order(routing: &Routing) -> Vec<Arc<GatewayRoute>> {
    let mut out: Vec<Arc<GatewayRoute>> = routing.for_slot(0).cloned().collect();
    for g in &routing.gateways {
        if !out.iter().any(|o| o.index == g.index) {
            out.push(g.clone());
        }
    }
    out
}

/// Fetches document `name` from the first gateway of `gateways` that can be
/// reached. `etag`: the tag of the copy we have (sent as `If-None-Match`).
pub async fn fetch(
    gateways: &[Arc<GatewayRoute>],
    tls: Arc<rustls::ClientConfig>,
    name: &str,
    etag: Option<&str>,
    limits: FetchLimits,
) -> Result<Fetched, FetchError> {
    let mut unreachable = Vec::new();
    for gw in gateways {
        let addrs = match crate::config::client::split_host_port(&gw.address) {
            Some((host, port)) if gw.addrs.is_empty() => crate::control::probe::resolve(host, port).await,
            _ => gw.addrs.clone(),
        };
        match fetch_from(gw, &addrs, tls.clone(), name, etag, limits).await {
            Err(FetchError::Unreachable(r)) => unreachable.push(format!("{}: {r}", gw.label())),
            other => return other,
        }
    }
    if unreachable.is_empty() {
        unreachable.push("no gateway configured".into());
    }
    Err(FetchError::Unreachable(unreachable.join("; ")))
}

/// Fetches document `name` from one gateway.
pub async fn fetch_from(
    gw: &GatewayRoute,
    addrs: &[SocketAddr],
    tls: Arc<rustls::ClientConfig>,
    name: &str,
    etag: Option<&str>,
    limits: FetchLimits,
) -> Result<Fetched, FetchError> {
    let unreachable = |r: String| FetchError::Unreachable(r);
    if addrs.is_empty() {
        return Err(unreachable("address not resolvable".into()));
    }
    let tcp = connect_any(addrs, limits.connect)
        .await
        .map_err(|e| unreachable(format!("connect: {e}")))?;
    let tls = TlsStream::connect(tls, gw.server_name.clone(), tcp, limits.handshake)
        .await
        .map_err(|e| unreachable(format!("TLS: {e}")))?;
    let deadline = Instant::now() + limits.transfer;
    let (mut r, mut w) = tls.split();
    let mut req = format!(
        "GET {DOCS_PREFIX}{name} HTTP/1.1\r\nHost: {}\r\nUser-Agent: msc-client/{}\r\nAccept: */*\r\nConnection: close\r\n",
        gw.server_name.to_str(),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(e) = etag {
        req.push_str(&format!("If-None-Match: {e}\r\n"));
    }
    req.push_str("\r\n");
    w.write_bytes(req.as_bytes())
        .await
        .map_err(|e| unreachable(format!("request: {e}")))?;
    let head = match read_response_head(&mut r, limits.transfer, msc_io::head::Limits::RELAYED).await {
        Ok(Some(h)) => h,
        Ok(None) => return Err(unreachable("closed without answering".into())),
        Err(HeadReadError::Timeout) => return Err(unreachable("no answer in time".into())),
        Err(HeadReadError::Truncated) => return Err(unreachable("answer truncated".into())),
        Err(HeadReadError::Head(e)) => return Err(FetchError::Bad(format!("{}: bad answer: {e}", gw.label()))),
        Err(HeadReadError::Io(e)) => return Err(unreachable(format!("answer: {e}"))),
    };
    let data = r.data();
    let header = |n: &str| {
        head.headers
            .values(data, n)
            .next()
            .map(|v| String::from_utf8_lossy(v).trim().to_owned())
    };
    let status = head.status;
    let new_etag = header("etag");
    let length = header("content-length");
    r.consume(head.len);
    let from = gw.label();
    if status == 304 {
        return Ok(Fetched::NotModified);
    }
    let length: Option<usize> = length.as_deref().and_then(|l| l.parse().ok());
    if status != 200 {
        // The reason: the body of an error reply (one line), if small.
        let mut reason = String::new();
        if let Some(n) = length.filter(|&n| n <= 4096)
            && let Ok(b) = read_exact(&mut r, n, deadline).await
        {
            reason = String::from_utf8_lossy(&b)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
        }
        return Err(FetchError::Status { status, reason, from });
    }
    let Some(n) = length else {
        return Err(FetchError::Bad(format!("{from}: answer without Content-Length")));
    };
    if n > limits.max_body {
        return Err(FetchError::Bad(format!(
            "{from}: document {name} is {n} bytes, over the limit of {}",
            limits.max_body
        )));
    }
    let body = read_exact(&mut r, n, deadline)
        .await
        .map_err(|e| FetchError::Bad(format!("{from}: document {name}: {e}")))?;
    let _ = monoio::time::timeout(Duration::from_secs(1), w.close_write()).await;
    Ok(Fetched::Doc {
        body,
        etag: new_etag,
        from,
    })
}

/// Reads exactly `n` body bytes by `deadline`; a short body is an error.
async fn read_exact<S: Source>(r: &mut S, n: usize, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(n.min(1 << 20));
    while body.len() < n {
        if r.data().is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match monoio::time::timeout(left, r.fill()).await {
                Err(_) => return Err(format!("timed out after {} of {n} bytes", body.len())),
                Ok(Err(e)) => return Err(format!("cut after {} of {n} bytes: {e}", body.len())),
                Ok(Ok(0)) => return Err(format!("truncated: {} of {n} bytes", body.len())),
                Ok(Ok(_)) => {}
            }
        }
        let take = r.data().len().min(n - body.len());
        body.extend_from_slice(&r.data()[..take]);
        r.consume(take);
    }
    Ok(body)
}
