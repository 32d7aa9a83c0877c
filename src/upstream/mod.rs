//! Where each slot's traffic goes: the routing table workers read.
//!
//! The control plane builds a [`Routing`] and publishes it atomically; data
//! path workers `load()` it per connection (lock-free, no contention).

pub mod rank;

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
}

impl GatewayRoute {
    /// `'name' (address)`, for log lines and error pages.
    pub fn label(&self) -> String {
        format!("'{}' ({})", self.name, self.address)
    }
}

/// An immutable routing decision: for each slot, the gateways to try in order.
#[derive(Debug)]
pub struct Routing {
    pub gateways: Vec<Arc<GatewayRoute>>,
    pub slots: Vec<Vec<usize>>,
    /// On premise in "direct" mode: relay requests directly, no tunnel.
    pub direct_on_premise: bool,
    /// The control plane judges no gateway usable: apply the fail-open/closed policy.
    pub none_available: bool,
    /// Per gateway, the last failure the control plane saw (cleared by a success).
    pub last_failure: Vec<Option<Arc<str>>>,
}

impl Routing {
    /// Why no gateway is usable, for the browser: each gateway's last failure.
    pub fn unavailable_reason(&self) -> String {
        let parts: Vec<String> = self
            .gateways
            .iter()
            .map(|g| match self.last_failure.get(g.index).and_then(Option::as_ref) {
                Some(r) => format!("gateway {}: {r}", g.label()),
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
