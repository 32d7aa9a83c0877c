//! A TLS 1.3 ticket store deep enough for bursts of new tunnels.
//!
//! rustls's `ClientSessionMemoryCache` keeps at most 8 tickets per server.
//! A worker that opens tunnels faster than the gateway's tickets arrive (a
//! browser opening 64 CONNECT tunnels at once, each of which consumes a
//! pooled tunnel) runs dry after 8 handshakes, and every further one is a
//! full handshake: two ECDSA signatures and a certificate chain check more,
//! on both ends (measured: 44 % resumed under such a load). This store keeps
//! up to `per_server` tickets per gateway name; each ticket is still handed
//! out at most once, as RFC 8446 and rustls's trait ask, newest first.
//!
//! One store per worker: its mutex is never contended (rustls's own cache
//! locks the same way), and it is touched only during handshakes.

use std::collections::{HashMap, VecDeque};
use std::fmt;
#[expect(
    clippy::disallowed_types,
    reason = "rustls's ClientSessionStore must be Sync; one store per worker, so this lock is never contended, and only handshakes take it (rustls's own cache locks the same way)"
)]
use std::sync::{Mutex, MutexGuard};

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls_pki_types::ServerName;

/// Server names remembered at most (gateways of one deployment; when more
/// appear, the store starts afresh rather than growing without bound).
const MAX_SERVERS: usize = 64;

#[derive(Default)]
struct Server {
    kx_hint: Option<NamedGroup>,
    /// Oldest first.
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// TLS 1.3 tickets (and key-exchange hints) per server name.
pub struct TicketStore {
    per_server: usize,
    #[expect(clippy::disallowed_types, reason = "see the import")]
    servers: Mutex<HashMap<ServerName<'static>, Server>>,
}

impl TicketStore {
    /// A store that keeps up to `per_server` tickets for each server name.
    pub fn new(per_server: usize) -> TicketStore {
        TicketStore {
            per_server: per_server.max(1),
            #[expect(clippy::disallowed_types, reason = "see the import")]
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// Tickets held for `name`.
    pub fn tickets(&self, name: &ServerName<'_>) -> usize {
        self.lock().get(name).map_or(0, |s| s.tls13.len())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ServerName<'static>, Server>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every edit is a single push or pop), so a poisoned lock is used as is.
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn edit(&self, name: ServerName<'static>, f: impl FnOnce(&mut Server)) {
        let mut servers = self.lock();
        if !servers.contains_key(&name) && servers.len() >= MAX_SERVERS {
            servers.clear();
        }
        f(servers.entry(name).or_default());
    }
}

impl fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketStore")
            .field("per_server", &self.per_server)
            .field("servers", &self.lock().len())
            .finish()
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.edit(name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.lock().get(name).and_then(|s| s.kx_hint)
    }

    // TLS 1.2 is never negotiated (both ends are TLS 1.3 only).
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let max = self.per_server;
        self.edit(name, |s| {
            if s.tls13.len() >= max {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.lock().get_mut(name).and_then(|s| s.tls13.pop_back())
    }
}
