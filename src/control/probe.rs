//! Probing a gateway the way a user feels it: TCP connect, TLS handshake,
//! and an application round trip the gateway answers itself (no egress).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use msc_io::resolve::connect_any;
use msc_io::stream::{HeadReadError, Sink, read_response_head};
use msc_tls::TlsStream;

use crate::forward::PROBE_PATH;
use crate::upstream::{FailureKind, GatewayRoute, classify_io, classify_tls};

/// Why a probe failed: the kind (`None`: a local error such as running out
/// of descriptors, which says nothing about the gateway) and a reason.
#[derive(Debug)]
pub struct ProbeError {
    pub kind: Option<FailureKind>,
    pub reason: String,
}

fn fail(kind: Option<FailureKind>, reason: impl Into<String>) -> ProbeError {
    ProbeError {
        kind,
        reason: reason.into(),
    }
}

/// One probe: the whole exchange's duration, or why it failed.
pub async fn probe(
    gw: &GatewayRoute,
    addrs: &[SocketAddr],
    tls: Arc<rustls::ClientConfig>,
    connect: Duration,
    handshake: Duration,
) -> Result<Duration, ProbeError> {
    use FailureKind::{Broken, Unreachable};
    if addrs.is_empty() {
        return Err(fail(Some(Unreachable), "address not resolvable"));
    }
    let t0 = Instant::now();
    let tcp = connect_any(addrs, connect)
        .await
        .map_err(|e| fail(classify_io(&e).map(|_| Unreachable), format!("connect: {e}")))?;
    let tls = TlsStream::connect(tls, gw.server_name.clone(), tcp, handshake)
        .await
        .map_err(|e| fail(classify_tls(&e), format!("TLS: {e}")))?;
    let (mut r, mut w) = tls.split();
    let req = format!(
        "GET {PROBE_PATH} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        gw.server_name.to_str()
    );
    w.write_bytes(req.as_bytes())
        .await
        .map_err(|e| fail(classify_io(&e), format!("request: {e}")))?;
    let head = match read_response_head(&mut r, handshake, msc_io::head::Limits::RELAYED).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(fail(
                Some(Unreachable),
                "closed without answering (client certificate refused?)",
            ));
        }
        Err(HeadReadError::Timeout) => return Err(fail(Some(Unreachable), "no answer in time")),
        Err(HeadReadError::Head(e)) => return Err(fail(Some(Broken), format!("bad answer: {e}"))),
        Err(HeadReadError::Truncated) => return Err(fail(Some(Unreachable), "answer truncated")),
        Err(HeadReadError::Io(e)) => return Err(fail(classify_io(&e), format!("answer: {e}"))),
    };
    let elapsed = t0.elapsed();
    let _ = monoio::time::timeout(Duration::from_secs(1), w.close_write()).await;
    if head.status != 204 {
        return Err(fail(
            Some(Broken),
            format!("probe answered {} instead of 204", head.status),
        ));
    }
    Ok(elapsed)
}

/// Resolves a gateway's address on the blocking pool.
pub async fn resolve(host: String, port: u16) -> Vec<SocketAddr> {
    monoio::spawn_blocking(move || resolve_blocking(&host, port))
        .await
        .unwrap_or_default()
}

/// Resolves a gateway address on the calling (non-worker) thread.
#[expect(
    clippy::disallowed_methods,
    reason = "start-up and control thread only, never a worker"
)]
pub fn resolve_blocking(host: &str, port: u16) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    match (host, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            tracing::warn!("cannot resolve gateway address {host}:{port}: {e}");
            Vec::new()
        }
    }
}

/// A small deterministic-per-process PRNG for probe jitter (no security use).
#[derive(Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    /// `d` scaled by a factor in [0.8, 1.2).
    pub fn around(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let f = 0.8 + (self.0 % 4000) as f64 / 10_000.0;
        d.mul_f64(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut j = Jitter::new(42);
        let base = Duration::from_secs(30);
        for _ in 0..10_000 {
            let d = j.around(base);
            assert!(d >= Duration::from_secs(24) && d < Duration::from_secs(36), "{d:?}");
        }
    }
}
