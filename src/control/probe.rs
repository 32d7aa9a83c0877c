//! Probing a gateway the way a user feels it: TCP connect, mutual-TLS
//! handshake, and one HTTP round trip.
//!
//! Any HTTP/1.1 forward proxy over mutual TLS can be a gateway. What a probe
//! asks, and what proves the gateway works:
//! - by default, `GET /.well-known/msc/probe` (origin-form): an `msc
//!   gateway` answers it itself with 204 (no egress: the cheap path); any
//!   other proxy answers it with an error of its own (400, 403, 404...).
//!   Either way, a completed handshake followed by a well-formed response
//!   head proves the gateway alive, whatever the status: the latency is the
//!   time from the connect to that head.
//! - with `servers[].probe_url`, that URL is fetched through the gateway
//!   (absolute-form, like a browser's request): the expected status
//!   (`probe_status`) proves it works end to end. A refusal by the
//!   gateway's policy (403, 407, 429, 451) still proves it alive and is
//!   counted so (with a warning): "alive but refusing" is not "down". Any
//!   other status means the gateway cannot serve: [`FailureKind::Broken`],
//!   which fails over but never leads to DIRECT.
//!
//! Certificate failures stay [`FailureKind::Untrusted`] (never DIRECT).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use msc_io::resolve::connect_any;
use msc_io::stream::{HeadReadError, Sink, read_response_head};
use msc_tls::TlsStream;

use crate::config::client::ProbeUrl;
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

/// What a response head's status says about the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The gateway works (an msc gateway's probe answer, or `probe_url`'s
    /// expected status).
    Works,
    /// Alive, and worth a note: a gateway that is not an msc gateway
    /// answering the probe path, or a policy refusing `probe_url`.
    Alive(String),
    /// Reached and authenticated, but it cannot serve `probe_url`.
    Broken(String),
}

/// Statuses with which a proxy refuses a request by policy, not by failure.
const REFUSALS: [u16; 4] = [403, 407, 429, 451];

/// Judges a probe's response status (pure, for tests).
pub fn judge(status: u16, probe_url: Option<&ProbeUrl>) -> Verdict {
    match probe_url {
        None if status == 204 => Verdict::Works,
        None => Verdict::Alive(format!(
            "answered the probe path with {status} (not an msc gateway?): alive, measured by its answer time"
        )),
        Some(u) if status == u.status => Verdict::Works,
        Some(u) if REFUSALS.contains(&status) => Verdict::Alive(format!(
            "refuses probe_url {} with {status} (its policy?): counted as alive, the end-to-end check is inconclusive",
            u.url
        )),
        Some(u) => Verdict::Broken(format!("probe_url {} answered {status} instead of {}", u.url, u.status)),
    }
}

thread_local! {
    /// Per gateway, the last note logged (probes run on the control thread:
    /// a note is logged when it changes, not every probe).
    static NOTES: RefCell<HashMap<usize, String>> = RefCell::new(HashMap::new());
}

fn note(gw: &GatewayRoute, note: Option<&str>) {
    NOTES.with(|n| {
        let mut n = n.borrow_mut();
        match note {
            Some(text) if n.get(&gw.index).map(String::as_str) != Some(text) => {
                // A refused probe_url is a misconfiguration worth a warning;
                // a gateway that is not msc gateway is a fact.
                if gw.probe_url.is_some() {
                    tracing::warn!("gateway {}: {text}", gw.label());
                } else {
                    tracing::info!("gateway {}: {text}", gw.label());
                }
                n.insert(gw.index, text.to_string());
            }
            Some(_) => {}
            None => {
                n.remove(&gw.index);
            }
        }
    });
}

/// The probe's request: the gateway's own probe path, or `probe_url`.
fn request(gw: &GatewayRoute) -> String {
    match &gw.probe_url {
        None => format!(
            "GET {PROBE_PATH} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            gw.server_name.to_str()
        ),
        Some(u) => format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: msc-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            u.url, u.authority
        ),
    }
}

/// One probe: the time from the connect to the response head, or why it failed.
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
    w.write_bytes(request(gw).as_bytes())
        .await
        .map_err(|e| fail(classify_io(&e), format!("request: {e}")))?;
    // probe_url goes on to an origin: allow it a connect's time more.
    let answer = if gw.probe_url.is_some() {
        handshake + connect
    } else {
        handshake
    };
    let head = match read_response_head(&mut r, answer, msc_io::head::Limits::RELAYED).await {
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
    match judge(head.status, gw.probe_url.as_ref()) {
        Verdict::Works => {
            note(gw, None);
            Ok(elapsed)
        }
        Verdict::Alive(why) => {
            note(gw, Some(&why));
            Ok(elapsed)
        }
        Verdict::Broken(why) => {
            note(gw, None);
            Err(fail(Some(Broken), why))
        }
    }
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

    fn url(status: u16) -> ProbeUrl {
        ProbeUrl::parse("http://example.com/health", status).unwrap()
    }

    #[test]
    fn any_answer_proves_a_gateway_alive_without_probe_url() {
        assert_eq!(judge(204, None), Verdict::Works);
        for status in [200, 400, 403, 404, 407, 500, 503] {
            assert!(matches!(judge(status, None), Verdict::Alive(_)), "{status}");
        }
    }

    #[test]
    fn probe_url_expects_its_status_and_tells_refusal_from_failure() {
        assert_eq!(judge(200, Some(&url(200))), Verdict::Works);
        assert_eq!(judge(204, Some(&url(204))), Verdict::Works);
        for refusal in [403, 407, 429, 451] {
            assert!(
                matches!(judge(refusal, Some(&url(200))), Verdict::Alive(_)),
                "{refusal}"
            );
        }
        // The expected status wins even when it is a refusal status.
        assert_eq!(judge(403, Some(&url(403))), Verdict::Works);
        for broken in [200, 302, 404, 500, 502, 503, 504] {
            let Verdict::Broken(why) = judge(broken, Some(&url(204))) else {
                panic!("{broken} must be broken");
            };
            assert!(
                why.contains("http://example.com/health") && why.contains(&broken.to_string()),
                "{why}"
            );
        }
    }

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
