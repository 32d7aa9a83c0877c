//! Configuration reload (`msc reload`, SIGHUP, the remote configuration):
//! validate a new `ClientConfig` completely, then apply it to the running
//! client without dropping a connection.
//!
//! Validation ([`prepare`]) builds everything that can fail before anything
//! changes: every check of `ClientConfig::load` (done by the caller), the
//! TLS credentials loaded into one rustls configuration per worker, new slot
//! ports bound (SO_REUSEPORT sockets, listening), the PAC rendered. A
//! rejected configuration leaves the running one untouched; the reason is
//! logged on one line (file, key, reason) and shown in `GET /status`
//! (`reload`).
//!
//! Applying ([`commit`]) re-maps the control plane's per-gateway state by
//! gateway identity (name + address: ranking windows, reputation, history,
//! counters, last failures), publishes a new routing table and a new client
//! generation to the workers (see `client::generation`), starts accepting on
//! new ports before it stops accepting on the ports no longer configured,
//! restarts the probe loops, and swaps the PAC. Keys that cannot change
//! while running keep their old values and are reported as "restart needed".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::{PacDoc, State};
use crate::client::generation::{self, GenSpec, Live};
use crate::config::ConfigError;
use crate::config::client::ClientConfig;
use crate::forward::access::AccessLog;
use crate::upstream::feedback::{Feedback, GatewayTraffic};
use crate::upstream::rank::Ranker;
use crate::upstream::{GatewayRoute, Routing};
use msc_io::worker::{ListenerControl, ListenerId};

/// One listening port of the running client.
#[derive(Debug, Clone)]
pub struct Listener {
    pub id: ListenerId,
    pub slot: usize,
    /// `http_port` or `https_port`.
    pub key: &'static str,
    /// As configured (port 0: any free port).
    pub requested: SocketAddr,
    pub bound: SocketAddr,
}

/// Per slot, the bound (http, https) addresses (https = http without its own listener).
pub fn slot_addrs(listeners: &[Listener], slots: usize) -> Vec<(SocketAddr, SocketAddr)> {
    let unspecified = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut out = vec![(unspecified, unspecified); slots];
    for l in listeners.iter().filter(|l| l.key == "http_port") {
        if let Some(s) = out.get_mut(l.slot) {
            *s = (l.bound, l.bound);
        }
    }
    for l in listeners.iter().filter(|l| l.key == "https_port") {
        if let Some(s) = out.get_mut(l.slot) {
            s.1 = l.bound;
        }
    }
    out
}

/// By listener id, the slot it serves.
pub fn listener_slots(listeners: &[Listener]) -> Vec<Option<usize>> {
    let n = listeners.iter().map(|l| l.id + 1).max().unwrap_or(0);
    let mut out = vec![None; n];
    for l in listeners {
        out[l.id] = Some(l.slot);
    }
    out
}

/// What the control plane needs to change the running data path.
#[derive(Debug)]
pub struct Reloadable {
    pub listeners: ListenerControl,
    pub live: Arc<Live>,
    pub feedback: flume::Sender<Feedback>,
    /// The listeners in force.
    pub bound: Vec<Listener>,
    /// The next listener id.
    pub next_id: ListenerId,
    /// The access log (its target is fixed until restart).
    pub log: AccessLog,
}

/// The last reload, for `GET /status`.
#[derive(Debug, Clone, Default)]
pub struct ReloadState {
    pub generation: u64,
    pub last_attempt: Option<SystemTime>,
    pub applied: Option<bool>,
    pub error: Option<String>,
    pub changed: Vec<String>,
    pub restart_needed: Vec<String>,
}

/// `GET /status` → `reload`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// The configuration generation in force: 0 at start, +1 per applied reload.
    pub generation: u64,
    /// When the last reload was attempted (Unix seconds), `null`: never.
    pub last_attempt: Option<u64>,
    pub last_attempt_seconds_ago: Option<f64>,
    /// `applied`, `rejected`, or `null` (never attempted).
    pub result: Option<&'static str>,
    /// Why the last attempt was rejected (`file: key: reason`).
    pub error: Option<String>,
    /// Keys the last applied reload changed.
    pub changed: Vec<String>,
    /// Changed keys that take effect only after a restart (the old values stay in force).
    pub restart_needed: Vec<String>,
}

impl ReloadState {
    pub fn view(&self, now: SystemTime) -> ReloadStatus {
        ReloadStatus {
            generation: self.generation,
            last_attempt: self
                .last_attempt
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            last_attempt_seconds_ago: self
                .last_attempt
                .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64()),
            result: self.applied.map(|a| if a { "applied" } else { "rejected" }),
            error: self.error.clone(),
            changed: self.changed.clone(),
            restart_needed: self.restart_needed.clone(),
        }
    }
}

/// What an applied reload changed.
#[derive(Debug, Clone)]
pub struct Applied {
    pub generation: u64,
    pub changed: Vec<String>,
    pub restart_needed: Vec<String>,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration generation {} applied", self.generation)?;
        if self.changed.is_empty() {
            f.write_str(" (nothing changed)")?;
        } else {
            write!(f, "; changed: {}", self.changed.join(", "))?;
        }
        if !self.restart_needed.is_empty() {
            write!(
                f,
                "; restart needed: {} (running with the old values)",
                self.restart_needed.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Re-reads the configuration file the client runs with, with the cached
/// gateway document laid over it ([`super::remote::cached`]: no fetch), and
/// applies it.
pub fn reload_file(st: &mut State) -> Result<Applied, String> {
    let file = st.cfg.file.clone();
    match super::remote::cached(&file) {
        Ok(cfg) => apply(st, cfg),
        Err(e) => finish(st, Err(e)),
    }
}

/// Applies a validated configuration to the running client (on the control
/// thread): Ok(what changed) or Err(why it was rejected; nothing changed).
pub fn apply(st: &mut State, cfg: ClientConfig) -> Result<Applied, String> {
    let r = prepare(st, cfg).map(|p| commit(st, p));
    if r.is_ok() {
        // The administrator's PAC, if the configuration asks for it.
        super::remote::after_reload(st);
    }
    finish(st, r)
}

fn finish(st: &mut State, r: Result<Applied, ConfigError>) -> Result<Applied, String> {
    st.reload_state.last_attempt = Some(SystemTime::now());
    match r {
        Ok(a) => {
            tracing::info!("reload: {a}");
            if !a.restart_needed.is_empty() {
                tracing::warn!(
                    "reload: restart needed: {} (running with the old values)",
                    a.restart_needed.join(", ")
                );
            }
            let rs = &mut st.reload_state;
            rs.generation = a.generation;
            rs.applied = Some(true);
            rs.error = None;
            rs.changed = a.changed.clone();
            rs.restart_needed = a.restart_needed.clone();
            Ok(a)
        }
        Err(e) => {
            let why = e.to_string();
            tracing::warn!(
                "reload rejected (still running generation {}): {why}",
                st.reload_state.generation
            );
            st.reload_state.applied = Some(false);
            st.reload_state.error = Some(why.clone());
            Err(why)
        }
    }
}

/// Everything built and checked before anything changes.
struct Prepared {
    cfg: ClientConfig,
    tls: Vec<Arc<rustls::ClientConfig>>,
    user: Arc<str>,
    cert: Option<msc_tls::certs::CertSummary>,
    /// New gateway i's index before (`None`: new).
    old_of_new: Vec<Option<usize>>,
    gateways: Vec<Arc<GatewayRoute>>,
    listeners: Vec<Listener>,
    /// New listeners: id and one socket per worker.
    add: Vec<(ListenerId, Vec<std::net::TcpListener>)>,
    remove: Vec<ListenerId>,
    next_id: ListenerId,
    slots: Vec<(SocketAddr, SocketAddr)>,
    pac: PacDoc,
    changed: Vec<String>,
    restart_needed: Vec<String>,
}

fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// A gateway's identity across reloads.
fn same_gateway(a: &crate::config::client::Server, b: &crate::config::client::Server) -> bool {
    a.name == b.name && a.address == b.address
}

fn prepare(st: &State, mut cfg: ClientConfig) -> Result<Prepared, ConfigError> {
    let old = &st.cfg;
    let err = |key: &str, reason: String| ConfigError {
        file: cfg.file.clone(),
        key: key.into(),
        reason,
    };
    // Not live: keep the old values, say so.
    let mut restart_needed = Vec::new();
    if cfg.workers != old.workers {
        restart_needed.push("workers".to_string());
        cfg.workers = old.workers;
    }
    if cfg.driver != old.driver {
        restart_needed.push("runtime.driver".into());
        cfg.driver = old.driver;
    }
    if cfg.runtime_dir != old.runtime_dir {
        restart_needed.push("runtime.dir".into());
        cfg.runtime_dir = old.runtime_dir.clone();
    }
    if cfg.listen != old.listen {
        restart_needed.push("listen".into());
        cfg.listen = old.listen;
        cfg.pac.spec.proxy_host = old.pac.spec.proxy_host.clone();
    }
    if cfg.control != old.control {
        restart_needed.push("control.listen".into());
        cfg.control = old.control;
    }
    if cfg.socket != old.socket {
        restart_needed.push("control.socket".into());
        cfg.socket = old.socket.clone();
        cfg.socket_required = old.socket_required;
    }
    if cfg.trusted != old.trusted {
        restart_needed.push("control.trusted_users/trusted_groups".into());
        cfg.trusted = old.trusted.clone();
    }
    if differs(&cfg.access_log, &old.access_log) {
        restart_needed.push("log.access".into());
        cfg.access_log = old.access_log.clone();
    }
    if cfg.remote.enabled != old.remote.enabled {
        restart_needed.push("remote.enabled".into());
        cfg.remote.enabled = old.remote.enabled;
        if !cfg.remote.enabled {
            cfg.pac.source = crate::config::remote::PacSource::Generated;
        }
    }
    if differs(&cfg.on_premise, &old.on_premise) || differs(&cfg.pac.spec.on_premise, &old.pac.spec.on_premise) {
        restart_needed.push("pac.on_premise".into());
        cfg.on_premise = old.on_premise.clone();
        cfg.pac.spec.on_premise = old.pac.spec.on_premise.clone();
    }

    // Credentials: one rustls configuration per worker, as the workers use them.
    let tls = generation::worker_tls(&cfg, cfg.workers).map_err(|e| err("tls", format!("{e:#}")))?;
    let user = generation::user(&cfg).map_err(|e| err("tls.cert", format!("{e:#}")))?;
    let cert = msc_tls::certs::load_certs(&cfg.tls.cert)
        .ok()
        .and_then(|c| c.first().and_then(|d| msc_tls::certs::CertSummary::from_der(d)));

    // Gateways by identity: survivors keep their resolved addresses.
    let old_of_new: Vec<Option<usize>> = cfg
        .servers
        .iter()
        .map(|s| old.servers.iter().position(|o| same_gateway(o, s)))
        .collect();
    let gateways: Vec<Arc<GatewayRoute>> = cfg
        .servers
        .iter()
        .zip(&old_of_new)
        .enumerate()
        .map(|(i, (s, o))| {
            let addrs = o
                .and_then(|j| st.gateways.get(j))
                .map(|g| g.addrs.clone())
                .unwrap_or_else(|| super::probe::resolve_blocking(&s.host, s.port));
            Arc::new(GatewayRoute {
                index: i,
                name: s.name.as_str().into(),
                address: s.address.clone(),
                addrs,
                server_name: s.server_name.clone(),
                probe_url: s.probe_url.clone(),
            })
        })
        .collect();

    // Listeners: keep those whose address is unchanged, bind the new ones.
    let prev = &st.reload.bound;
    let mut claimed = vec![false; prev.len()];
    let mut listeners = Vec::new();
    let mut add = Vec::new();
    let mut next_id = st.reload.next_id;
    for (slot, key, addr) in crate::app::slot_listeners(&cfg) {
        let reuse = prev.iter().enumerate().position(|(k, l)| {
            !claimed[k]
                && ((l.requested == addr && (addr.port() != 0 || (l.slot == slot && l.key == key)))
                    || (addr.port() != 0 && l.bound == addr))
        });
        if let Some(k) = reuse {
            claimed[k] = true;
            listeners.push(Listener {
                id: prev[k].id,
                slot,
                key,
                requested: addr,
                bound: prev[k].bound,
            });
            continue;
        }
        let what = format!("servers[{slot}].{key}");
        let (socks, bound) =
            crate::app::listeners(&[addr], cfg.workers, |_| what.clone()).map_err(|e| err(&what, format!("{e:#}")))?;
        let id = next_id;
        next_id += 1;
        add.push((id, socks.into_iter().flatten().collect::<Vec<_>>()));
        listeners.push(Listener {
            id,
            slot,
            key,
            requested: addr,
            bound: bound[0],
        });
    }
    let remove: Vec<ListenerId> = prev
        .iter()
        .zip(&claimed)
        .filter(|(_, c)| !**c)
        .map(|(l, _)| l.id)
        .collect();
    let slots = slot_addrs(&listeners, cfg.servers.len());
    let ports: Vec<(u16, u16)> = slots.iter().map(|(h, s)| (h.port(), s.port())).collect();
    let pac = super::render_pac(&cfg, &ports).map_err(|e| err("pac", format!("{e:#}")))?;

    // What changed (for the log and the status).
    let mut changed = Vec::new();
    let names = |c: &ClientConfig| {
        c.servers
            .iter()
            .map(|s| format!("{} ({})", s.name, s.address))
            .collect::<Vec<_>>()
    };
    if differs(&cfg.servers, &old.servers) {
        let (before, after) = (names(old), names(&cfg));
        let added: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
        let removed: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
        let mut what = Vec::new();
        if !added.is_empty() {
            what.push(format!(
                "added {}",
                added.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if !removed.is_empty() {
            what.push(format!(
                "removed {}",
                removed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if !add.is_empty() || !remove.is_empty() {
            what.push("ports".into());
        }
        if what.is_empty() {
            what.push("order or settings".into());
        }
        changed.push(format!("servers ({})", what.join("; ")));
    }
    if differs(&cfg.tls, &old.tls) || differs(&cert, &st.cert) {
        changed.push("tls".into());
    }
    if pac.etag != st.pac_enabled.etag {
        changed.push("pac".into());
    } else if cfg.pac.max_age != old.pac.max_age {
        changed.push("pac.max_age".into());
    }
    if cfg.fail_open != old.fail_open {
        changed.push("pac.fail_open".into());
    }
    if differs(&cfg.timeouts, &old.timeouts) {
        changed.push("timeouts".into());
    }
    if differs(&cfg.pool, &old.pool) {
        changed.push("pool".into());
    }
    if differs(&cfg.selection, &old.selection) {
        changed.push("selection".into());
    }
    if cfg.log_all != old.log_all {
        changed.push("log.requests".into());
    }
    if differs(&cfg.disable, &old.disable) {
        changed.push("disable".into());
    }
    Ok(Prepared {
        cfg,
        tls,
        user,
        cert,
        old_of_new,
        gateways,
        listeners,
        add,
        remove,
        next_id,
        slots,
        pac,
        changed,
        restart_needed,
    })
}

/// How many earlier generations' feedback is still attributed (older is dropped).
const GENERATIONS_KEPT: usize = 16;

/// Records that generation `outgoing` ends: `new_of_old[j]` is its gateway
/// `j`'s index in the next generation. Every kept map then translates an
/// earlier generation's index into the next generation's.
fn follow(maps: &mut Vec<(u64, Vec<Option<usize>>)>, outgoing: u64, new_of_old: Vec<Option<usize>>) {
    for (_, m) in maps.iter_mut() {
        for i in m.iter_mut() {
            *i = i.and_then(|j| new_of_old.get(j).copied().flatten());
        }
    }
    maps.push((outgoing, new_of_old));
    if maps.len() > GENERATIONS_KEPT {
        maps.remove(0);
    }
}

fn commit(st: &mut State, p: Prepared) -> Applied {
    let now = Instant::now();
    let generation = st.generation + 1;
    let n = p.gateways.len();
    let old_n = st.gateways.len();
    let new_of_old: Vec<Option<usize>> = (0..old_n)
        .map(|j| p.old_of_new.iter().position(|&o| o == Some(j)))
        .collect();

    // Control-plane state follows the gateways by identity.
    let sw = if differs(&p.cfg.selection.rank, &st.cfg.selection.rank) {
        // New windows and thresholds: the ranking starts afresh.
        st.ranker = Ranker::new(n, p.cfg.selection.rank.clone(), now);
        None
    } else {
        st.ranker.remap(&p.old_of_new, now)
    };
    st.history.remap(&p.old_of_new);
    st.counters.remap(&p.old_of_new);
    let mut old_failures = std::mem::take(&mut st.last_failure);
    st.last_failure = p
        .old_of_new
        .iter()
        .map(|o| o.and_then(|j| old_failures.get_mut(j).and_then(Option::take)))
        .collect();
    // Feedback from earlier generations' recorders: indices mapped to the new ones.
    follow(&mut st.gen_maps, st.generation, new_of_old);
    st.gateways = p.gateways;
    st.slots = p.slots;
    st.pac_max_age = p.cfg.pac.max_age;
    st.pac_enabled = p.pac;
    if st.machine.disabled().is_none() {
        st.pac = st.pac_enabled.clone();
    }
    let not_after = super::cert_not_after(&p.cfg.tls.cert).ok();
    st.cert = p.cert;
    st.cfg = p.cfg;
    st.generation = generation;
    // A routing table of this generation only: requests of the old one
    // still running keep the indices they started with.
    st.routing = Arc::new(ArcSwap::from_pointee(Routing {
        gateways: Vec::new(),
        slots: Vec::new(),
        direct_on_premise: false,
        disabled: false,
        none_available: true,
        direct_permitted: false,
        last_failure: Vec::new(),
    }));
    st.publish_routing();
    // After the new routing handle: an event may republish the routing.
    if let Some(not_after) = not_after {
        st.event(super::state::Event::Certificate { not_after });
    }
    st.switched(sw);

    // The data path: the new generation, then the new ports, then the old
    // ports close (connections accepted on them go on).
    let shared = generation::shared(
        &st.cfg,
        st.routing.clone(),
        generation,
        listener_slots(&p.listeners),
        &st.reload.log,
        p.user,
    );
    st.reload.live.publish(GenSpec {
        shared: Arc::new(shared),
        tls: p.tls,
        pool: st.cfg.pool,
        gateways: n,
        feedback: st.reload.feedback.clone(),
    });
    for (id, socks) in p.add {
        if let Err(e) = st.reload.listeners.add(id, socks) {
            tracing::error!("reload: cannot start accepting on a new port: {e}");
        }
    }
    for id in p.remove {
        st.reload.listeners.remove(id);
    }
    for l in &p.listeners {
        if !st.reload.bound.iter().any(|b| b.id == l.id) {
            tracing::info!("slot {} {} now listens on {}", l.slot + 1, l.key, l.bound);
        }
    }
    st.reload.bound = p.listeners;
    st.reload.next_id = p.next_id;
    // Probe loops of the new gateway list (the old ones stop).
    let _ = st.reprobe.try_send(());
    Applied {
        generation,
        changed: p.changed,
        restart_needed: p.restart_needed,
    }
}

impl State {
    /// Gateway `gw` of generation `generation` as an index of the current
    /// one (`None`: removed since, or too old).
    pub(super) fn current_index(&self, generation: u64, gw: usize) -> Option<usize> {
        if generation == self.generation {
            return Some(gw);
        }
        self.gen_maps
            .iter()
            .find(|(g, _)| *g == generation)
            .and_then(|(_, m)| m.get(gw).copied().flatten())
    }

    /// A worker report's per-gateway figures in the current indices.
    pub(super) fn current_traffic(&self, generation: u64, gateways: Vec<GatewayTraffic>) -> Vec<GatewayTraffic> {
        if generation == self.generation {
            return gateways;
        }
        let mut out: Vec<GatewayTraffic> = (0..self.gateways.len()).map(|_| GatewayTraffic::new()).collect();
        for (i, t) in gateways.into_iter().enumerate() {
            if let Some(j) = self.current_index(generation, i)
                && let Some(o) = out.get_mut(j)
            {
                *o = t;
            }
        }
        out
    }
}

/// Asks the control thread to re-read the configuration and apply it; used
/// by SIGHUP in `msc run` (the control socket's `reload` command takes the
/// same path on the control thread).
///
/// # Thread Safety
/// `Send + Sync + Clone`: a channel to the control thread.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    pub(super) tx: flume::Sender<ReplyTo>,
}

/// Where the control thread sends a reload's outcome.
pub type ReplyTo = flume::Sender<Result<String, String>>;

impl ReloadHandle {
    /// Re-reads `effective(file)` and applies it; returns the summary or why
    /// it was rejected (the running configuration then stays).
    pub fn reload(&self) -> Result<String, String> {
        let (tx, rx) = flume::bounded(1);
        self.tx
            .send(tx)
            .map_err(|_| "the control plane has stopped".to_string())?;
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .map_err(|_| "the control plane did not answer".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(id: usize, slot: usize, key: &'static str, port: u16) -> Listener {
        let a = SocketAddr::from(([127, 0, 0, 1], port));
        Listener {
            id,
            slot,
            key,
            requested: a,
            bound: a,
        }
    }

    #[test]
    fn feedback_of_earlier_generations_follows_the_gateways() {
        let mut maps = Vec::new();
        // Generation 0: [a, b]; 1: [b, c, a]; 2: [c, a] (b removed).
        follow(&mut maps, 0, vec![Some(2), Some(0)]);
        follow(&mut maps, 1, vec![None, Some(0), Some(1)]);
        let find = |g: u64, i: usize| {
            maps.iter()
                .find(|(x, _)| *x == g)
                .and_then(|(_, m)| m.get(i).copied().flatten())
        };
        // Generation 0's a (index 0) is a in generation 2 (index 1); its b is gone.
        assert_eq!((find(0, 0), find(0, 1)), (Some(1), None));
        // Generation 1's b is gone, c is 0, a is 1.
        assert_eq!((find(1, 0), find(1, 1), find(1, 2)), (None, Some(0), Some(1)));
        // Bounded: the oldest generations are dropped.
        for g in 2..40 {
            follow(&mut maps, g, vec![Some(0), Some(1)]);
        }
        assert_eq!(maps.len(), GENERATIONS_KEPT);
        assert!(maps.iter().all(|(g, _)| *g >= 40 - GENERATIONS_KEPT as u64));
    }

    #[test]
    fn slots_and_listener_ids() {
        let ls = [
            l(3, 0, "http_port", 1000),
            l(1, 0, "https_port", 1001),
            l(4, 1, "http_port", 2000),
        ];
        let s = slot_addrs(&ls, 2);
        assert_eq!((s[0].0.port(), s[0].1.port()), (1000, 1001));
        assert_eq!((s[1].0.port(), s[1].1.port()), (2000, 2000));
        assert_eq!(listener_slots(&ls), vec![None, Some(0), None, Some(0), Some(1)]);
    }
}
