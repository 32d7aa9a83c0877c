//! The client's control plane: one named thread with its own runtime, never
//! a data-path worker. It serves the local control API (PAC, status),
//! evaluates the on/off-premise indicator, merges what workers report, and
//! publishes the routing table workers read (atomically, lock-free for them).

pub mod api;
pub mod fetch;
pub mod health;
pub mod history;
pub mod logring;
pub mod metrics;
pub mod page;
pub mod premise;
pub mod probe;
pub mod reload;
pub mod remote;
pub mod socket;
pub mod state;
pub mod update;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use monoio::blocking::DefaultThreadPool;
use monoio::net::TcpListener;
use serde::Serialize;

use crate::config::client::ClientConfig;
use crate::upstream::feedback::{DirectCounts, Feedback, TlsCounts};
use crate::upstream::rank::{Evidence, GatewayStatus, Ranker, SampleOutcome, Switch, SwitchReason};
use crate::upstream::{Failure, FailureKind, GatewayRoute, Routing, RoutingHandle};
use history::{Counters, History, SwitchRecord};
use premise::PremiseCheck;
use state::{ClientState, EnableCause, Event, Machine};

/// The PAC as served.
#[derive(Debug, Clone)]
pub struct PacDoc {
    pub text: String,
    pub etag: String,
}

impl PacDoc {
    pub fn new(text: String) -> PacDoc {
        let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let etag = format!(
            "\"{}\"",
            d.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        PacDoc { text, etag }
    }
}

/// Renders the PAC for `cfg` with the bound slot ports.
pub fn render_pac(cfg: &ClientConfig, ports: &[(u16, u16)]) -> anyhow::Result<PacDoc> {
    let pac = msc_pac::Pac::new(&cfg.pac_spec(ports)).map_err(|e| anyhow::anyhow!("{}: {e}", cfg.file.display()))?;
    Ok(PacDoc::new(pac.render()))
}

#[derive(Debug, Clone, Default)]
struct Premise {
    last: Option<(PremiseCheck, SystemTime)>,
}

/// Everything the control plane knows. Lives on the control thread only.
#[derive(Debug)]
pub struct State {
    cfg: ClientConfig,
    pub pac: PacDoc,
    pub pac_max_age: Duration,
    routing: RoutingHandle,
    gateways: Vec<Arc<GatewayRoute>>,
    slots: Vec<(SocketAddr, SocketAddr)>,
    premise: Premise,
    direct: DirectCounts,
    tls: TlsCounts,
    workers: usize,
    started: Instant,
    ranker: Ranker,
    /// Per gateway: the last failure seen (probe or data path), until a success.
    last_failure: Vec<Option<Failure>>,
    /// When a local resource error (out of descriptors...) was last logged.
    local_logged: Option<Instant>,
    /// The latest request that went DIRECT: when, and its access-log route.
    last_direct: Option<(Instant, &'static str)>,
    /// When workers last reported requests that found no gateway reachable
    /// (before the control plane judged them unavailable)...
    last_unreachable: Option<Instant>,
    /// ... and when a gateway was last reached (a tunnel or a probe).
    last_reached: Option<Instant>,
    /// When workers last reported a request (through a gateway or DIRECT):
    /// see [`State::at_rest`].
    last_request: Option<Instant>,
    /// Per gateway: wakes its probe loop to re-plan (after a failure seen
    /// elsewhere, its next probe is due on the back-off, not the interval).
    probe_wake: Vec<flume::Sender<()>>,
    /// Asks every worker whether it still runs (`GET /health`, systemd watchdog).
    pub pings: health::WorkerPings,
    /// The answers for the `GET /health` being served (set just before it is rendered).
    pub last_health: Option<health::Health>,
    /// The client state (see [`state`]).
    machine: Machine,
    /// The PAC for normal operation (`pac` is the all-DIRECT one while disabled).
    pac_enabled: PacDoc,
    /// Whether any gateway ever answered a probe.
    answered: bool,
    /// Requests the control API refused because a web page made them.
    refused_web: u64,
    socket: Option<std::path::PathBuf>,
    /// The latest report of `msc watchdog`'s enforcement: when, and why it
    /// fails (`None`: it works).
    enforcement: Option<(Instant, Option<String>)>,
    /// Latency samples and switches for the status page.
    pub history: History,
    counters: Counters,
    /// The client certificate's names and validity (read at start and reload).
    cert: Option<msc_tls::certs::CertSummary>,
    /// Signed code updates: the running release and the last check.
    update: update::UpdateStatus,
    /// Configuration and PAC from the gateway (`None`: `[remote]` disabled).
    remote: Option<remote::Remote>,
    /// The configuration generation in force (0 at start, see [`reload`]).
    generation: u64,
    /// Per earlier generation: its gateway indices as current ones.
    gen_maps: Vec<(u64, Vec<Option<usize>>)>,
    /// What a reload changes on the data path.
    reload: reload::Reloadable,
    reload_state: reload::ReloadState,
    /// Restarts the probe loops (after a reload).
    reprobe: flume::Sender<()>,
    /// Dropping it stops the probe loops of the current generation.
    probe_stop: Option<flume::Sender<()>>,
}

/// The control API's own figures.
#[derive(Debug, Serialize)]
pub struct ApiStatus {
    /// Requests refused because a web page made them (Origin / Sec-Fetch-Site).
    pub refused_web_requests: u64,
    /// The control socket for state changes, if any.
    pub socket: Option<String>,
}

/// A data-path report of unreachable gateways counts in the status for this
/// long, unless a gateway is reached since.
const UNREACHABLE_FRESH: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize)]
pub struct SlotStatus {
    pub slot: usize,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// Gateways this slot tries, in order.
    pub gateways: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PremiseStatus {
    pub configured: bool,
    /// "direct" or "proxies" when configured.
    pub mode: Option<&'static str>,
    pub indicator: Option<String>,
    pub on_premise: bool,
    pub answer: Option<String>,
    pub checked_seconds_ago: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct GatewayInfo {
    pub name: String,
    pub address: String,
    pub resolved: Vec<SocketAddr>,
    #[serde(flatten)]
    pub rank: GatewayStatus,
}

/// The last change of the selected gateway.
#[derive(Debug, Serialize)]
pub struct LastSwitch {
    pub from: Option<String>,
    pub to: Option<String>,
    /// Human-readable reason.
    pub reason: String,
    pub detail: SwitchReason,
    pub seconds_ago: f64,
}

/// The proxy-settings enforcement's latest report.
#[derive(Debug, Serialize)]
pub struct EnforcementStatus {
    /// Why enforcing the proxy settings fails; `null` while it works.
    pub failing: Option<String>,
    pub seconds_ago: f64,
}

/// The latest request relayed DIRECT (unscanned).
#[derive(Debug, Serialize)]
pub struct LastDirect {
    /// Its access-log route: `direct:on-premise`,
    /// `direct:fail-open:unavailable` or `direct:fail-open:unreachable`.
    pub route: &'static str,
    pub seconds_ago: f64,
}

/// The client certificate as the status shows it (never key material).
#[derive(Debug, Clone, Serialize)]
pub struct CertStatus {
    pub subject: String,
    pub issuer: String,
    /// notAfter, seconds since the Unix epoch, and as RFC 3339.
    pub not_after: i64,
    pub not_after_text: String,
    /// Negative once expired.
    pub expires_in_seconds: i64,
}

impl CertStatus {
    fn new(c: &msc_tls::certs::CertSummary, now: SystemTime) -> CertStatus {
        let now_s = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let at = u64::try_from(c.not_after).map_or(SystemTime::UNIX_EPOCH, |s| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s)
        });
        CertStatus {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            not_after: c.not_after,
            not_after_text: humantime::format_rfc3339_seconds(at).to_string(),
            expires_in_seconds: c.not_after.saturating_sub(now_s),
        }
    }
}

/// The client's state in one word and why (see [`page::state_label`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// `enabled`, `connection_pending` or `error`.
    pub state: &'static str,
    pub reason: String,
}

/// `GET /status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// The client state (`enabled`, `disabled`, `connection_pending`, `error`).
    pub state: ClientState,
    pub uptime_seconds: f64,
    pub workers: usize,
    pub fail_open: bool,
    pub premise: PremiseStatus,
    pub slots: Vec<SlotStatus>,
    pub gateways: Vec<GatewayInfo>,
    /// The selected gateway (`null` when none is available).
    pub selected: Option<String>,
    pub last_switch: Option<LastSwitch>,
    /// Requests handled without a gateway since start.
    pub direct: DirectCounts,
    /// Tunnel handshakes since start, and how many resumed a session.
    pub tls: TlsCounts,
    /// Where browser traffic goes right now: `gateway`, `direct:on-premise`,
    /// `direct:fail-open` (no gateway reachable), `refused:fail-closed`, or
    /// `refused:untrusted` (a gateway failed authentication or answered
    /// wrongly: never DIRECT). "No gateway reachable" is either the control
    /// plane's judgement or, in the first seconds of an outage, the workers'
    /// report that their requests found no gateway reachable.
    pub traffic: &'static str,
    /// What is wrong, in one line, when traffic is not going through a gateway.
    pub error: Option<String>,
    /// The latest request that went DIRECT, if any did.
    pub last_direct: Option<LastDirect>,
    /// The proxy-settings enforcement as `msc watchdog` last reported it
    /// (`null`: no report: no watchdog, or enforcement switched off).
    pub enforcement: Option<EnforcementStatus>,
    pub api: ApiStatus,
    /// Traffic counters since start (requests, bytes, tunnels, pool, per worker).
    pub counters: Counters,
    /// Recent changes of the selected gateway, newest first.
    pub switches: Vec<SwitchRecord>,
    /// The client certificate (`null` if it could not be read).
    pub certificate: Option<CertStatus>,
    /// The state in one word and why, as the page, the tray and the metrics show it.
    pub summary: Summary,
    /// Signed code updates: running version, last check and result, last rollback.
    pub update: update::UpdateStatus,
    /// Configuration from the gateway (`null` unless `[remote]` is enabled).
    pub remote: Option<remote::RemoteStatus>,
    /// Configuration reloads (`msc reload`, SIGHUP).
    pub reload: reload::ReloadStatus,
}

impl State {
    pub fn status(&self) -> Status {
        let routing = self.routing.load();
        let premise = match &self.cfg.on_premise {
            None => PremiseStatus {
                configured: false,
                mode: None,
                indicator: None,
                on_premise: false,
                answer: None,
                checked_seconds_ago: None,
            },
            Some(op) => PremiseStatus {
                configured: true,
                mode: Some(if op.direct { "direct" } else { "proxies" }),
                indicator: Some(op.indicator.clone()),
                on_premise: self.premise.last.as_ref().is_some_and(|(c, _)| c.on_premise),
                answer: self.premise.last.as_ref().map(|(c, _)| c.answer.clone()),
                checked_seconds_ago: self
                    .premise
                    .last
                    .as_ref()
                    .and_then(|(_, t)| t.elapsed().ok())
                    .map(|d| d.as_secs_f64()),
            },
        };
        let mut status = Status {
            version: env!("CARGO_PKG_VERSION"),
            state: self.machine.state().clone(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            workers: self.workers,
            fail_open: self.cfg.fail_open,
            premise,
            slots: self
                .slots
                .iter()
                .enumerate()
                .map(|(i, (http, https))| SlotStatus {
                    slot: i + 1,
                    http: *http,
                    https: *https,
                    gateways: routing.for_slot(i).map(|g| g.name.to_string()).collect(),
                })
                .collect(),
            gateways: self
                .gateways
                .iter()
                .zip(self.ranker.status(Instant::now()))
                .map(|(g, rank)| GatewayInfo {
                    name: g.name.to_string(),
                    address: g.address.clone(),
                    resolved: g.addrs.clone(),
                    rank,
                })
                .collect(),
            selected: self.ranker.current().map(|i| self.name(i)),
            last_switch: self.ranker.last_switch().map(|sw| {
                let v = sw.view(Instant::now());
                LastSwitch {
                    from: sw.from.map(|i| self.name(i)),
                    to: sw.to.map(|i| self.name(i)),
                    reason: v.text,
                    detail: v.reason,
                    seconds_ago: v.ago_ms / 1000.0,
                }
            }),
            direct: self.direct,
            tls: self.tls,
            traffic: traffic_route(&routing, self.cfg.fail_open, self.data_path_unreachable()),
            error: self.traffic_error(&routing),
            last_direct: self.last_direct.map(|(at, route)| LastDirect {
                route,
                seconds_ago: at.elapsed().as_secs_f64(),
            }),
            enforcement: self.enforcement.as_ref().map(|(at, failing)| EnforcementStatus {
                failing: failing.clone(),
                seconds_ago: at.elapsed().as_secs_f64(),
            }),
            api: ApiStatus {
                refused_web_requests: self.refused_web,
                socket: self.socket.as_ref().map(|p| p.display().to_string()),
            },
            counters: Counters {
                switches: self.history.switch_count,
                ..self.counters.clone()
            },
            switches: self.history.switches(),
            certificate: self.cert.as_ref().map(|c| CertStatus::new(c, SystemTime::now())),
            summary: Summary::default(),
            update: self.update.clone(),
            remote: self.remote.as_ref().map(remote::Remote::status),
            reload: self.reload_state.view(SystemTime::now()),
        };
        let (state, reason) = page::state_label(&status);
        status.summary = Summary { state, reason };
        status
    }

    /// Whether workers recently found no gateway reachable and none was reached since.
    fn data_path_unreachable(&self) -> bool {
        self.last_unreachable
            .is_some_and(|t| t.elapsed() < UNREACHABLE_FRESH && self.last_reached.is_none_or(|r| r < t))
    }

    fn traffic_error(&self, routing: &Routing) -> Option<String> {
        if routing.direct_on_premise || routing.disabled {
            None
        } else if routing.none_available {
            Some(routing.unavailable_reason())
        } else if self.data_path_unreachable() {
            Some(format!(
                "requests found no gateway reachable: {}",
                routing.unavailable_reason()
            ))
        } else {
            None
        }
    }

    /// The client state, for the status page, the tray and the metrics.
    pub fn client_state(&self) -> &ClientState {
        self.machine.state()
    }

    /// Counts a request the control API refused because a web page made it.
    pub fn refused_web_request(&mut self) {
        self.refused_web += 1;
    }

    /// Feeds the state machine; logs a change, and on a disable or enable
    /// swaps the PAC and republishes the routing.
    pub fn event(&mut self, ev: Event) {
        let was_disabled = self.machine.disabled().is_some();
        let Some(t) = self.machine.apply(ev, SystemTime::now()) else {
            return;
        };
        let disabled = self.machine.disabled().is_some();
        match (&t.to, &t.enabled_because) {
            (ClientState::Disabled { .. }, _) => tracing::warn!(
                "client state: {}: browser traffic goes DIRECT, unscanned; the PAC says DIRECT",
                t.to
            ),
            (_, Some(cause)) => tracing::warn!("protection re-enabled: {cause}; client state: {}", t.to),
            (ClientState::Error { .. }, _) => tracing::warn!("client state: {}", t.to),
            _ => tracing::info!("client state: {}", t.to),
        }
        if disabled != was_disabled || disabled {
            self.pac = if disabled {
                PacDoc::new(DISABLED_PAC.into())
            } else {
                self.pac_enabled.clone()
            };
            self.publish_routing();
        }
    }

    /// Re-judges connectivity for the state machine from the ranking.
    fn connectivity(&mut self) {
        let routing = self.routing.load_full();
        let ev = if routing.direct_on_premise || (self.answered && self.ranker.current().is_some()) {
            Event::GatewayAnswered
        } else if self.ranker.current().is_none() {
            let direct =
                !routing.disabled && !routing.direct_on_premise && routing.direct_permitted && self.cfg.fail_open;
            Event::NoGateway {
                direct,
                reason: routing.unavailable_reason(),
            }
        } else {
            return;
        };
        self.event(ev);
    }

    /// Answers a control-socket command (the caller is authenticated, and
    /// trusted if the command changes anything).
    fn command(&mut self, cmd: socket::Command) {
        let socket::Command { req, caller, reply } = cmd;
        let r = match req {
            socket::Request::State => Ok("current state".to_string()),
            socket::Request::Logs => {
                let mut body = String::new();
                match logring::global() {
                    Some(ring) => {
                        for l in ring.lines() {
                            body.push_str(&l);
                            body.push('\n');
                        }
                    }
                    None => body.push_str("(this process keeps no log lines in memory)\n"),
                }
                Ok(body)
            }
            socket::Request::Disable { duration, reason } => {
                match state::check_disable(self.cfg.disable, &duration, &reason, &caller.label(), SystemTime::now()) {
                    Ok(d) => {
                        tracing::warn!(
                            "protection disabled by {} (pid {}; {}) for {duration}: {}",
                            caller.label(),
                            caller.pid,
                            caller.trust.as_deref().unwrap_or("?"),
                            d.reason
                        );
                        self.event(Event::Disable(d));
                        Ok(format!("protection disabled for {}", duration.trim()))
                    }
                    Err(why) => {
                        tracing::warn!("control socket: refused to disable for {}: {why}", caller.label());
                        Err(why)
                    }
                }
            }
            socket::Request::Enforcement { failing } => {
                if let Some(why) = &failing {
                    tracing::warn!("proxy-settings enforcement fails ({}): {why}", caller.label());
                }
                self.enforcement = Some((Instant::now(), failing.clone()));
                self.event(Event::Enforcement(failing));
                Ok("enforcement state recorded".to_string())
            }
            socket::Request::Reload => {
                tracing::info!("reload requested by {} (pid {})", caller.label(), caller.pid);
                reload::reload_file(self).map(|a| a.to_string())
            }
            socket::Request::Enable => {
                if self.machine.disabled().is_some() {
                    self.event(Event::Enable(EnableCause::User(caller.label())));
                    Ok("protection enabled".to_string())
                } else {
                    Ok("protection was not disabled".to_string())
                }
            }
        };
        let _ = reply.send(match r {
            Ok(message) => socket::Reply {
                ok: true,
                message,
                state: Some(self.machine.state().clone()),
            },
            Err(message) => socket::Reply {
                ok: false,
                message,
                state: Some(self.machine.state().clone()),
            },
        });
    }

    fn on_premise_direct(&self) -> bool {
        self.cfg.on_premise.as_ref().is_some_and(|op| op.direct)
            && self.premise.last.as_ref().is_some_and(|(c, _)| c.on_premise)
    }

    fn name(&self, i: usize) -> String {
        self.gateways
            .get(i)
            .map_or_else(|| format!("#{i}"), |g| g.name.to_string())
    }

    /// Publishes a new routing table for the workers, and re-judges the state.
    fn publish(&mut self) {
        self.publish_routing();
        self.connectivity();
    }

    fn publish_routing(&self) {
        let now = Instant::now();
        self.routing.store(Arc::new(Routing {
            gateways: self.gateways.clone(),
            slots: self.ranker.slots(self.slots.len(), self.cfg.selection.pinned, now),
            direct_on_premise: self.on_premise_direct(),
            disabled: self.machine.disabled().is_some(),
            none_available: self.ranker.current().is_none(),
            direct_permitted: self.last_failure.iter().flatten().all(|f| f.kind.permits_direct()),
            last_failure: self.last_failure.clone(),
        }));
    }

    /// Records a gateway's failure; an authentication failure is logged
    /// loudly (it is what interception looks like).
    fn failed(&mut self, gw: usize, kind: FailureKind, reason: String) {
        if kind == FailureKind::Untrusted
            && self
                .last_failure
                .get(gw)
                .is_some_and(|f| f.as_ref().is_none_or(|f| f.kind != kind))
        {
            tracing::error!(
                "gateway {} could not be authenticated ({reason}): it is never used, and no request falls back to DIRECT because of it",
                self.name(gw)
            );
        }
        if let Some(f) = self.last_failure.get_mut(gw) {
            *f = Some(Failure {
                kind,
                reason: reason.into(),
            });
        }
    }

    /// An error this machine raised (out of descriptors...): logged at most
    /// every 10 s, held against no gateway.
    fn local_error(&mut self, what: &str) {
        if self.local_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            self.local_logged = Some(Instant::now());
            tracing::warn!("{what}: a local resource is exhausted; not held against any gateway");
        }
    }

    /// Logs a change of the selected gateway and publishes the new routing.
    fn switched(&mut self, sw: Option<Switch>) {
        if let Some(sw) = sw {
            let from = sw.from.map_or_else(|| "none".to_string(), |i| self.name(i));
            let to = sw
                .to
                .map_or_else(|| "none (no gateway available)".to_string(), |i| self.name(i));
            tracing::info!("gateway switch: {from} -> {to}: {sw}");
            let rec = History::record(
                sw.from.map(|i| self.name(i)),
                sw.to.map(|i| self.name(i)),
                history::name_gateways(&sw.to_string(), |i| self.name(i)),
                SystemTime::now(),
            );
            self.history.switched(rec);
        }
        self.publish();
    }

    /// No request for `pool.warm_for` (or none yet): the client is at
    /// rest, and the control plane's own timers slow down to the probe
    /// interval (the keep-alive check of the selected gateway pauses, as the
    /// regular probes cover it; damping rounds run at the probes' pace), so
    /// an idle laptop is woken rarely. The first request ends it: the data
    /// path reports it within a second, and a failure it meets wakes the
    /// probes at once.
    fn at_rest(&self) -> bool {
        self.last_request.is_none_or(|t| t.elapsed() >= self.cfg.pool.warm_for)
    }

    fn apply(&mut self, fb: Feedback) {
        let now = Instant::now();
        match fb {
            Feedback::Report {
                worker,
                generation,
                direct,
                tls,
                gateways,
                pool,
            } => {
                let gateways = self.current_traffic(generation, gateways);
                self.counters.merge(worker, &gateways, direct, tls, pool);
                self.tls.handshakes += tls.handshakes;
                self.tls.resumed += tls.resumed;
                self.direct.on_premise += direct.on_premise;
                self.direct.fail_open += direct.fail_open;
                self.direct.fail_open_unreachable += direct.fail_open_unreachable;
                self.direct.fail_closed += direct.fail_closed;
                self.direct.fail_closed_unreachable += direct.fail_closed_unreachable;
                self.direct.refused_untrusted += direct.refused_untrusted;
                self.direct.disabled += direct.disabled;
                let route = if direct.fail_open_unreachable > 0 {
                    Some("direct:fail-open:unreachable")
                } else if direct.fail_open > 0 {
                    Some("direct:fail-open:unavailable")
                } else if direct.on_premise > 0 {
                    Some("direct:on-premise")
                } else if direct.disabled > 0 {
                    Some("direct:disabled")
                } else {
                    None
                };
                if let Some(route) = route {
                    self.last_direct = Some((now, route));
                }
                let direct_requests = direct.on_premise
                    + direct.fail_open
                    + direct.fail_closed
                    + direct.refused_untrusted
                    + direct.disabled;
                if direct_requests > 0 || gateways.iter().any(|g| g.requests > 0) {
                    self.last_request = Some(now);
                }
                if direct.fail_open_unreachable + direct.fail_closed_unreachable > 0 {
                    self.last_unreachable = Some(now);
                } else if gateways.iter().any(|g| g.ok > 0) {
                    self.last_reached = Some(now);
                }
                // Tunnel set-up latencies go into each gateway's traffic
                // window (see docs/ranking.md, Score); failures were already
                // reported one by one (`Failed`).
                for (i, g) in gateways.iter().enumerate() {
                    if g.ok > 0 {
                        let sw = self.ranker.merge_traffic(i, &g.setup_us, 0, now);
                        if sw.is_some() {
                            self.switched(sw);
                        }
                    }
                }
            }
            Feedback::Failed {
                generation,
                gateway,
                kind,
                reason,
            } => {
                // A gateway removed by a reload since: nothing to attribute.
                let Some(gateway) = self.current_index(generation, gateway) else {
                    return;
                };
                if let Some(g) = self.gateways.get(gateway) {
                    tracing::warn!("gateway {} failed on the data path: {reason}", g.label());
                }
                self.failed(gateway, kind, reason);
                let sw = self
                    .ranker
                    .record(gateway, SampleOutcome::Failed, Evidence::Traffic, now);
                self.wake_probe(gateway);
                self.switched(sw);
            }
        }
    }

    /// A probe result.
    fn probed(&mut self, gw: usize, res: Result<Duration, probe::ProbeError>, source: Evidence) {
        let now = Instant::now();
        if matches!(source, Evidence::Probe | Evidence::KeepAlive) {
            let latency = match &res {
                Ok(d) => Some(Some(*d)),
                Err(probe::ProbeError { kind: None, .. }) => None,
                Err(_) => Some(None),
            };
            if let Some(l) = latency {
                self.history.sample(gw, l, SystemTime::now());
            }
        }
        let outcome = match res {
            Ok(d) => {
                if let Some(f) = self.last_failure.get_mut(gw) {
                    *f = None;
                }
                self.last_reached = Some(now);
                if !self.answered {
                    self.answered = true;
                    // Reported below even when the ranking does not switch.
                    let sw = self.ranker.record(gw, SampleOutcome::Ok(d), source, now);
                    self.switched(sw);
                    return;
                }
                SampleOutcome::Ok(d)
            }
            Err(probe::ProbeError { kind: None, reason }) => {
                self.local_error(&format!("probe of gateway {}: {reason}", self.name(gw)));
                return;
            }
            Err(probe::ProbeError {
                kind: Some(kind),
                reason,
            }) => {
                tracing::info!("probe of gateway {} failed: {reason}", self.name(gw));
                self.failed(gw, kind, format!("probe failed: {reason}"));
                if source != Evidence::Probe {
                    self.wake_probe(gw);
                }
                SampleOutcome::Failed
            }
        };
        let sw = self.ranker.record(gw, outcome, source, now);
        if sw.is_some() {
            self.switched(sw);
        }
    }

    /// Has `gw`'s probe loop re-plan its next probe now.
    fn wake_probe(&self, gw: usize) {
        if let Some(w) = self.probe_wake.get(gw) {
            let _ = w.try_send(());
        }
    }

    /// Replaces a gateway's resolved addresses (control thread re-resolves names).
    fn set_addrs(&mut self, gw: usize, addrs: Vec<SocketAddr>) {
        let Some(old) = self.gateways.get(gw) else { return };
        if old.addrs == addrs || addrs.is_empty() {
            return;
        }
        tracing::info!("gateway {} now resolves to {addrs:?}", old.label());
        self.gateways[gw] = Arc::new(GatewayRoute {
            index: old.index,
            name: old.name.clone(),
            address: old.address.clone(),
            addrs,
            server_name: old.server_name.clone(),
            probe_url: old.probe_url.clone(),
        });
        self.publish();
    }

    fn set_premise(&mut self, check: PremiseCheck) {
        let was = self.premise.last.as_ref().map(|(c, _)| c.on_premise);
        if was != Some(check.on_premise) {
            tracing::info!(
                "network: {} (indicator answered: {})",
                if check.on_premise { "on premise" } else { "off premise" },
                check.answer
            );
        }
        let changed = was != Some(check.on_premise);
        self.premise.last = Some((check, SystemTime::now()));
        if changed {
            self.publish();
        }
    }
}

/// The running control plane.
#[derive(Debug)]
pub struct Control {
    pub addr: SocketAddr,
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    socket: Option<socket::SocketServer>,
    feed: StateFeed,
    reload: reload::ReloadHandle,
}

impl Control {
    pub fn stop(mut self) {
        if let Some(s) = self.socket.take() {
            s.stop();
        }
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// A handle other threads use to reload the configuration (SIGHUP).
    pub fn reload_handle(&self) -> reload::ReloadHandle {
        self.reload.clone()
    }

    /// A handle other threads use to feed the client state.
    pub fn feed(&self) -> StateFeed {
        self.feed.clone()
    }

    /// The control socket's path, if one is served.
    pub fn socket_path(&self) -> Option<&std::path::Path> {
        self.socket.as_ref().map(|s| s.path.as_path())
    }
}

/// Feeds the client state machine from other threads: the session watcher
/// (re-enable on lock, logout, suspend, shutdown) and the enforcement loop.
///
/// # Thread Safety
/// `Send + Sync + Clone`: a channel to the control thread; events are applied
/// there in order.
#[derive(Debug, Clone)]
pub struct StateFeed {
    tx: flume::Sender<Event>,
}

impl StateFeed {
    /// The enforcement backends' health: `Some(reason)` while enforcing the
    /// browser proxy settings fails, `None` once it works.
    pub fn enforcement(&self, failing: Option<String>) {
        let _ = self.tx.send(Event::Enforcement(failing));
    }

    /// Ends a disable (a session event); does nothing if not disabled.
    pub fn enable(&self, cause: EnableCause) {
        let _ = self.tx.send(Event::Enable(cause));
    }

    /// Any other event.
    pub fn send(&self, ev: Event) {
        let _ = self.tx.send(ev);
    }
}

/// The client certificate's `notAfter` (the first certificate in the file).
pub fn cert_not_after(path: &std::path::Path) -> anyhow::Result<SystemTime> {
    let certs = msc_tls::certs::load_certs(path)?;
    let der = certs
        .first()
        .ok_or_else(|| anyhow::anyhow!("{}: no certificate", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: cannot parse the certificate: {e}", path.display()))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// What the control plane starts from.
#[derive(Debug)]
pub struct Inputs {
    pub cfg: ClientConfig,
    pub routing: RoutingHandle,
    pub gateways: Vec<Arc<GatewayRoute>>,
    pub slots: Vec<(SocketAddr, SocketAddr)>,
    pub feedback: flume::Receiver<Feedback>,
    pub workers: usize,
    pub pac: PacDoc,
    /// The workers' liveness channels (see [`health`]).
    pub pings: health::WorkerPings,
    /// What a reload changes on the data path.
    pub reload: reload::Reloadable,
}

/// How long a fixed control port that is "in use" is retried at start-up.
/// A client killed with SIGKILL releases sockets its io_uring operations hold
/// only when the kernel tears the ring down, a little after the process is
/// gone: a restart (the watchdog's) must not fail on that. A port another
/// live program holds stays in use and fails after this bound.
const CONTROL_BIND_RETRY: Duration = Duration::from_secs(2);

#[allow(
    clippy::disallowed_methods,
    reason = "start-up, before any runtime runs: a bounded wait for the kernel to release a dead process's socket"
)]
fn bind_control(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let t0 = Instant::now();
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && addr.port() != 0
                    && t0.elapsed() < CONTROL_BIND_RETRY =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// Binds the control listener and starts the control thread.
pub fn start(inputs: Inputs, pool: DefaultThreadPool) -> anyhow::Result<Control> {
    let listener = bind_control(inputs.cfg.control)
        .map_err(|e| crate::ports::explain_bind(inputs.cfg.control, "control.listen", e))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (cmd_tx, cmd_rx) = flume::unbounded::<socket::Command>();
    let (ev_tx, ev_rx) = flume::unbounded::<Event>();
    let keep_ev = ev_tx.clone();
    let (reload_tx, reload_rx) = flume::unbounded::<reload::ReplyTo>();
    let keep_reload = reload_tx.clone();
    let feed = StateFeed { tx: ev_tx };
    let socket = match &inputs.cfg.socket {
        None => {
            tracing::info!("no control socket (control.socket): msc disable/enable are unavailable");
            None
        }
        Some(path) => match socket::bind(path) {
            Ok(l) => Some(socket::serve(
                l,
                path.clone(),
                inputs.cfg.trusted.clone(),
                cmd_tx.clone(),
            )?),
            Err(e) if !inputs.cfg.socket_required => {
                tracing::warn!("{e:#}; msc disable/enable are unavailable");
                None
            }
            Err(e) => {
                return Err(e.context(crate::config::ConfigError {
                    file: inputs.cfg.file.clone(),
                    key: "control.socket".into(),
                    reason: "cannot be served".into(),
                }));
            }
        },
    };
    match cert_not_after(&inputs.cfg.tls.cert) {
        Ok(not_after) => feed.send(Event::Certificate { not_after }),
        Err(e) => tracing::warn!("client certificate expiry unknown: {e:#}"),
    }
    if inputs.cfg.disable.allowed {
        crate::agent::session::watch(feed.clone());
    }
    let socket_path = socket.as_ref().map(|s: &socket::SocketServer| s.path.clone());
    let (stop_tx, stop_rx) = flume::bounded::<()>(0);
    let (ready_tx, ready_rx) = flume::bounded::<anyhow::Result<()>>(1);
    let thread = std::thread::Builder::new().name("msc-control".into()).spawn(move || {
        let r = msc_io::runtime::block_on(msc_io::runtime::DriverChoice::Auto, Some(pool), move |_| {
            run(
                inputs,
                listener,
                Channels {
                    stop: stop_rx,
                    cmds: cmd_rx,
                    events: ev_rx,
                    reloads: reload_rx,
                    socket: socket_path,
                    _keep: (cmd_tx, keep_ev, keep_reload),
                },
                ready_tx,
            )
        });
        if let Err(e) = r {
            tracing::error!("control plane runtime failed: {e}");
        }
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Control {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            socket,
            feed,
            reload: reload::ReloadHandle { tx: reload_tx },
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow::anyhow!("the control plane exited during start-up")),
    }
}

/// What the control thread listens to besides the workers.
struct Channels {
    stop: flume::Receiver<()>,
    cmds: flume::Receiver<socket::Command>,
    events: flume::Receiver<Event>,
    /// Reload requests from other threads (SIGHUP), each with its reply.
    reloads: flume::Receiver<reload::ReplyTo>,
    socket: Option<std::path::PathBuf>,
    /// Senders kept so the receivers above never report "disconnected".
    _keep: (
        flume::Sender<socket::Command>,
        flume::Sender<Event>,
        flume::Sender<reload::ReplyTo>,
    ),
}

async fn run(inputs: Inputs, listener: std::net::TcpListener, ch: Channels, ready: flume::Sender<anyhow::Result<()>>) {
    let Channels {
        stop,
        cmds,
        events,
        reloads,
        socket,
        _keep,
    } = ch;
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let feedback = inputs.feedback;
    let n_gateways = inputs.gateways.len();
    let ranker = Ranker::new(n_gateways, inputs.cfg.selection.rank.clone(), Instant::now());
    let workers = inputs.workers;
    // Read again by a reload (a rotated certificate takes effect then).
    let cert = msc_tls::certs::load_certs(&inputs.cfg.tls.cert)
        .ok()
        .and_then(|c| c.first().and_then(|d| msc_tls::certs::CertSummary::from_der(d)));
    let update_status = update::UpdateStatus::at_start(&inputs.cfg);
    let (reprobe_tx, reprobe_rx) = flume::unbounded::<()>();
    let state = Rc::new(RefCell::new(State {
        pac_max_age: inputs.cfg.pac.max_age,
        cfg: inputs.cfg,
        pac: inputs.pac.clone(),
        routing: inputs.routing,
        gateways: inputs.gateways,
        slots: inputs.slots,
        premise: Premise::default(),
        direct: DirectCounts::default(),
        tls: TlsCounts::default(),
        workers,
        started: Instant::now(),
        ranker,
        last_failure: vec![None; n_gateways],
        local_logged: None,
        last_direct: None,
        last_unreachable: None,
        last_reached: None,
        last_request: None,
        probe_wake: Vec::new(),
        pings: inputs.pings,
        last_health: None,
        machine: Machine::default(),
        pac_enabled: inputs.pac,
        answered: false,
        refused_web: 0,
        socket,
        enforcement: None,
        history: History::new(n_gateways),
        counters: Counters::new(n_gateways, workers),
        cert,
        update: update_status,
        remote: None,
        generation: 0,
        gen_maps: Vec::new(),
        reload: inputs.reload,
        reload_state: reload::ReloadState::default(),
        reprobe: reprobe_tx,
        probe_stop: None,
    }));
    state.borrow_mut().publish();

    let st = state.clone();
    let stop2 = stop.clone();
    monoio::spawn(async move {
        loop {
            let accepted = monoio::select! {
                r = listener.accept() => r,
                _ = stop2.recv_async() => return,
            };
            match accepted {
                Ok((s, peer)) => {
                    let fut = api::serve(st.clone(), s);
                    monoio::spawn(async move {
                        use futures_util::FutureExt;
                        if std::panic::AssertUnwindSafe(fut).catch_unwind().await.is_err() {
                            tracing::error!("control API handler for {peer} panicked");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and similar: back off, and say so
                    // once per episode rather than ten times a second.
                    st.borrow_mut().local_error(&format!("control API accept failed: {e}"));
                    monoio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    let op = state.borrow().cfg.on_premise.clone();
    if let Some(op) = op {
        // First evaluation before reporting ready, so the first requests see it.
        let c = premise::check(&op).await;
        state.borrow_mut().set_premise(c);
        let (net_tx, net_rx) = flume::bounded::<()>(1);
        if let Err(e) = msc_io::netwatch::watch(Duration::from_secs(1), move || {
            let _ = net_tx.try_send(());
        }) {
            tracing::info!(
                "network change notifications unavailable ({e}); re-checking every {:?}",
                op.check_interval
            );
        }
        let st = state.clone();
        let stop3 = stop.clone();
        monoio::spawn(async move {
            loop {
                monoio::select! {
                    _ = monoio::time::sleep(op.check_interval) => {},
                    r = net_rx.recv_async() => {
                        if r.is_ok() {
                            tracing::debug!("network changed: re-evaluating the on-premise indicator");
                        } else {
                            // No watcher: fall back to the timer alone.
                            monoio::time::sleep(op.check_interval).await;
                        }
                    },
                    _ = stop3.recv_async() => return,
                }
                let c = premise::check(&op).await;
                st.borrow_mut().set_premise(c);
            }
        });
    }
    start_probing(&state, &stop);
    remote::start(&state, &stop);
    let st = state.clone();
    let stop4 = stop.clone();
    monoio::spawn(async move {
        loop {
            monoio::select! {
                r = reprobe_rx.recv_async() => if r.is_err() { return },
                _ = stop4.recv_async() => return,
            }
            start_probing(&st, &stop4);
        }
    });
    feed_systemd_watchdog(&state, &stop);
    update::start(&state, &stop);
    let _ = ready.send(Ok(()));
    drop(ready);

    loop {
        // Wake for the end of a disable; otherwise once a minute (certificate expiry).
        let tick = state
            .borrow()
            .machine
            .next_deadline()
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .map_or(Duration::from_secs(60), |d| d.min(Duration::from_secs(60)));
        monoio::select! {
            fb = feedback.recv_async() => match fb {
                Ok(fb) => state.borrow_mut().apply(fb),
                Err(_) => break,
            },
            c = cmds.recv_async() => if let Ok(c) = c {
                state.borrow_mut().command(c);
            },
            e = events.recv_async() => if let Ok(e) = e {
                state.borrow_mut().event(e);
            },
            r = reloads.recv_async() => if let Ok(reply) = r {
                let res = reload::reload_file(&mut state.borrow_mut()).map(|a| a.to_string());
                let _ = reply.send(res);
            },
            _ = monoio::time::sleep(tick) => state.borrow_mut().event(Event::Tick),
            _ = stop.recv_async() => break,
        }
    }
}

/// When the service manager runs a watchdog (`WatchdogSec=`): every half
/// period, asks every worker and sends `WATCHDOG=1` only if all answered, so
/// a wedged worker gets the client restarted even though this thread runs.
fn feed_systemd_watchdog(state: &Rc<RefCell<State>>, stop: &flume::Receiver<()>) {
    let Some(period) = crate::agent::systemd::watchdog_period() else {
        return;
    };
    let pings = state.borrow().pings.clone();
    let stop = stop.clone();
    monoio::spawn(async move {
        let mut silent_logged = false;
        loop {
            let h = pings.ask_all(period.min(health::HEALTH_TIMEOUT)).await;
            if h.ok {
                crate::agent::systemd::watchdog();
                silent_logged = false;
            } else if !silent_logged {
                tracing::error!(
                    "worker(s) {} did not answer: the service manager's watchdog is no longer fed",
                    h.silent()
                );
                silent_logged = true;
            }
            monoio::select! {
                _ = monoio::time::sleep(period) => {},
                _ = stop.recv_async() => return,
            }
        }
    });
}

/// Probes every gateway now and then periodically (with jitter), checks the
/// selected one more often, and runs the damping rounds. Sleeps in between:
/// no busy loops, and nothing runs more often than configured.
fn start_probing(state: &Rc<RefCell<State>>, stop: &flume::Receiver<()>) {
    // This generation's loops end with `gen_stop` (a reload replaces it) or
    // the control plane's stop; a result that arrives after a reload is
    // dropped (its gateway index may mean another gateway now).
    let (gen_stop_tx, gen_stop) = flume::bounded::<()>(0);
    let (cfg, gateways, generation) = {
        let mut st = state.borrow_mut();
        st.probe_stop = Some(gen_stop_tx);
        st.probe_wake.clear();
        (st.cfg.clone(), st.gateways.clone(), st.generation)
    };
    let current = move |st: &Rc<RefCell<State>>| st.borrow().generation == generation;
    let creds = msc_tls::config::ClientCreds {
        ca: &cfg.tls.ca,
        cert: &cfg.tls.cert,
        key: &cfg.tls.key,
    };
    let tls = match msc_tls::config::client_config(&creds, 16) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("probes disabled: {e}");
            return;
        }
    };
    let sel = cfg.selection.clone();
    let t = cfg.timeouts;
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(7, |d| u64::from(d.subsec_nanos()));
    for (i, s) in cfg.servers.iter().enumerate() {
        let st = state.clone();
        let stop = stop.clone();
        let gen_stop = gen_stop.clone();
        let tls = tls.clone();
        let (host, port) = (s.host.clone(), s.port);
        let gw = gateways[i].clone();
        let mut jitter = probe::Jitter::new(seed ^ ((i as u64 + 1) * 0x9E37_79B9));
        let interval = sel.probe_interval;
        let (wake_tx, wake) = flume::bounded::<()>(1);
        state.borrow_mut().probe_wake.push(wake_tx);
        monoio::spawn(async move {
            // The first probe runs at once, in parallel for every gateway.
            loop {
                let addrs = probe::resolve(host.clone(), port).await;
                if !current(&st) {
                    return;
                }
                st.borrow_mut().set_addrs(i, addrs.clone());
                let res = probe::probe(&gw, &addrs, tls.clone(), t.connect, t.handshake).await;
                if !current(&st) {
                    return;
                }
                st.borrow_mut().probed(i, res, Evidence::Probe);
                let last = Instant::now();
                // The regular interval while healthy; after a failure, and
                // while a gateway works its way back, a short back-off
                // (docs/ranking.md, Probe schedule). A failure seen by the
                // data path or the keep-alive wakes the loop to re-plan.
                loop {
                    let next = jitter.around(st.borrow().ranker.probe_delay(i, interval));
                    let wait = (last + next).saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        break;
                    }
                    monoio::select! {
                        _ = monoio::time::sleep(wait) => break,
                        w = wake.recv_async() => if w.is_err() { return },
                        _ = stop.recv_async() => return,
                        _ = gen_stop.recv_async() => return,
                    }
                }
            }
        });
    }
    // Keep-alive: the selected gateway, more often.
    let st = state.clone();
    let stop2 = stop.clone();
    let gen_stop2 = gen_stop.clone();
    let tls2 = tls.clone();
    monoio::spawn(async move {
        loop {
            let wait = if st.borrow().at_rest() {
                sel.keepalive_interval.max(sel.probe_interval)
            } else {
                sel.keepalive_interval
            };
            monoio::select! {
                _ = monoio::time::sleep(wait) => {},
                _ = stop2.recv_async() => return,
                _ = gen_stop2.recv_async() => return,
            }
            if st.borrow().at_rest() {
                // The regular probes check every gateway meanwhile.
                continue;
            }
            let cur = st.borrow().ranker.current();
            let Some(i) = cur else { continue };
            let gw = st.borrow().gateways[i].clone();
            let res = probe::probe(&gw, &gw.addrs, tls2.clone(), t.connect, t.handshake).await;
            if !current(&st) {
                return;
            }
            st.borrow_mut().probed(i, res, Evidence::KeepAlive);
        }
    });
    // Damping rounds; republish every round (slots below the first may move).
    let st = state.clone();
    let stop3 = stop.clone();
    monoio::spawn(async move {
        loop {
            let wait = if st.borrow().at_rest() {
                sel.evaluate_interval.max(sel.probe_interval)
            } else {
                sel.evaluate_interval
            };
            monoio::select! {
                _ = monoio::time::sleep(wait) => {},
                _ = stop3.recv_async() => return,
                _ = gen_stop.recv_async() => return,
            }
            let mut s = st.borrow_mut();
            let sw = s.ranker.evaluate(Instant::now());
            s.switched(sw);
        }
    });
}

/// Where browser traffic goes under `routing` (see [`Status::traffic`]);
/// `unreachable`: the data path recently found no gateway reachable.
fn traffic_route(routing: &Routing, fail_open: bool, unreachable: bool) -> &'static str {
    if routing.disabled {
        "direct:disabled"
    } else if routing.direct_on_premise {
        "direct:on-premise"
    } else if !routing.none_available && !unreachable {
        "gateway"
    } else if !routing.direct_permitted {
        "refused:untrusted"
    } else if fail_open {
        "direct:fail-open"
    } else {
        "refused:fail-closed"
    }
}

/// The PAC served while a trusted user disabled protection.
const DISABLED_PAC: &str = "// msc: protection is disabled by a trusted user (msc disable); everything goes DIRECT.\nfunction FindProxyForURL(url, host) {\n  return \"DIRECT\";\n}\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(none_available: bool, direct_permitted: bool, on_premise: bool) -> Routing {
        Routing {
            gateways: Vec::new(),
            slots: Vec::new(),
            direct_on_premise: on_premise,
            none_available,
            direct_permitted,
            last_failure: Vec::new(),
            disabled: false,
        }
    }

    /// The status says DIRECT as soon as requests find no gateway reachable,
    /// before the control plane judges them unavailable, but never when a
    /// gateway failed authentication.
    #[test]
    fn traffic_route_reflects_the_data_path_and_never_says_direct_when_untrusted() {
        let cases = [
            // (none_available, direct_permitted, on_premise, fail_open, unreachable, expected)
            (false, true, false, true, false, "gateway"),
            (false, true, false, true, true, "direct:fail-open"),
            (false, true, false, false, true, "refused:fail-closed"),
            (true, true, false, true, false, "direct:fail-open"),
            (true, true, false, false, false, "refused:fail-closed"),
            (true, false, false, true, false, "refused:untrusted"),
            (false, false, false, true, true, "refused:untrusted"),
            (true, true, true, false, true, "direct:on-premise"),
        ];
        for (none, permitted, premise, open, unreachable, want) in cases {
            assert_eq!(
                traffic_route(&routing(none, permitted, premise), open, unreachable),
                want,
                "{none} {permitted} {premise} {open} {unreachable}"
            );
        }
    }
}
