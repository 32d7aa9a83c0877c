//! Where each slot's traffic goes: the routing table workers read.
//!
//! The control plane builds a [`Routing`] and publishes it atomically; data
//! path workers `load()` it per connection (lock-free, no contention).

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use msc_tls::ServerName;

/// One gateway as the data path needs it.
#[derive(Debug)]
pub struct GatewayRoute {
    pub index: usize,
    pub name: Arc<str>,
    /// `host:port` as configured, for messages.
    pub address: String,
    /// Resolved addresses, tried in order (empty: not resolvable right now).
    pub addrs: Vec<SocketAddr>,
    pub server_name: ServerName<'static>,
    /// What the control plane's probe fetches (`None`: the gateway's own
    /// probe endpoint). Not used by the data path.
    pub probe_url: Option<crate::config::client::ProbeUrl>,
}

impl GatewayRoute {
    /// `'name' (address)`, for log lines and error pages.
    pub fn label(&self) -> String {
        format!("'{}' ({})", self.name, self.address)
    }
}

/// Why an attempt to use a gateway failed, as far as failing open goes.
///
/// Only [`FailureKind::Unreachable`] may ever lead to DIRECT (and only with
/// `fail_open`): a gateway that answers but cannot be authenticated looks
/// exactly like a man in the middle, and one that answers wrongly is broken,
/// not absent. Errors this machine raised itself (out of descriptors,
/// memory, local ports) are no failure of the gateway at all and are never
/// reported (see [`is_local`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No answer: name not resolvable, connection refused, timed out or
    /// reset, closed before or during the TLS handshake.
    Unreachable,
    /// The gateway's certificate failed verification (unknown CA, wrong
    /// name, expired), it refused ours, or TLS itself failed.
    Untrusted,
    /// Reached and authenticated, but its answers are not what a gateway
    /// sends (a malformed or unexpected response).
    Broken,
}

impl FailureKind {
    /// Whether this failure permits fail-open (DIRECT).
    pub fn permits_direct(self) -> bool {
        self == FailureKind::Unreachable
    }
}

/// A gateway's last failure: what kind, and the one-line reason.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: Arc<str>,
}

/// Whether an I/O error was raised by this machine rather than the network
/// or the gateway: it must not count against any gateway.
pub fn is_local(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// The kind of a failed TLS handshake with a gateway; `None` for local errors.
pub fn classify_tls(e: &msc_tls::TlsError) -> Option<FailureKind> {
    use msc_tls::TlsError;
    match e {
        TlsError::Io(e) if is_local(e) => None,
        TlsError::Io(_) | TlsError::Eof | TlsError::Timeout => Some(FailureKind::Unreachable),
        TlsError::Tls(_) | TlsError::Record(_) => Some(FailureKind::Untrusted),
    }
}

/// The kind of an I/O error on an established tunnel; `None` for local errors.
pub fn classify_io(e: &std::io::Error) -> Option<FailureKind> {
    if is_local(e) {
        None
    } else if e.kind() == std::io::ErrorKind::InvalidData {
        // The TLS layer refused a record or received an alert.
        Some(FailureKind::Untrusted)
    } else {
        Some(FailureKind::Unreachable)
    }
}

/// An immutable routing decision: for each slot, the gateways to try in order.
#[derive(Debug)]
pub struct Routing {
    pub gateways: Vec<Arc<GatewayRoute>>,
    pub slots: Vec<Vec<usize>>,
    /// On premise in "direct" mode: relay requests directly, no tunnel.
    pub direct_on_premise: bool,
    /// A trusted user disabled protection (`msc disable`): relay every
    /// request directly, counted, until the control plane re-enables.
    pub disabled: bool,
    /// The control plane judges no gateway usable: apply the fail-open/closed policy.
    pub none_available: bool,
    /// Every gateway that is down failed only by being unreachable, so the
    /// fail-open policy may apply. False as soon as one failed
    /// authentication or answered wrongly: then requests are refused.
    pub direct_permitted: bool,
    /// Per gateway, the last failure the control plane saw (cleared by a success).
    pub last_failure: Vec<Option<Failure>>,
}

impl Routing {
    /// Why no gateway is usable, for the browser: each gateway's last failure.
    pub fn unavailable_reason(&self) -> String {
        let parts: Vec<String> = self
            .gateways
            .iter()
            .map(|g| match self.last_failure.get(g.index).and_then(Option::as_ref) {
                Some(f) => format!("gateway {}: {}", g.label(), f.reason),
                None => format!("gateway {}: unavailable", g.label()),
            })
            .collect();
        parts.join("; ")
    }
}

impl Routing {
    /// Gateways to try for `slot`, best first.
    pub fn for_slot(&self, slot: usize) -> impl Iterator<Item = &Arc<GatewayRoute>> {
        self.slots
            .get(slot)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.gateways.get(i))
    }
}

/// The published routing table.
pub type RoutingHandle = Arc<ArcSwap<Routing>>;
