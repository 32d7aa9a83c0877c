//! The client's control plane: one named thread with its own runtime, never
//! a data-path worker. It serves the local control API (PAC, status),
//! evaluates the on/off-premise indicator, merges what workers report, and
//! publishes the routing table workers read (atomically, lock-free for them).

pub mod api;
pub mod history;
pub mod logring;
pub mod metrics;
pub mod page;
pub mod premise;
pub mod probe;

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
    /// Latency samples and switches for the status page.
    pub history: History,
    counters: Counters,
    /// The client certificate's names and validity (read at start).
    cert: Option<msc_tls::certs::CertSummary>,
}

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
    /// wrongly: never DIRECT).
    pub traffic: &'static str,
    /// What is wrong, in one line, when traffic is not going through a gateway.
    pub error: Option<String>,
    /// Traffic counters since start (requests, bytes, tunnels, pool, per worker).
    pub counters: Counters,
    /// Recent changes of the selected gateway, newest first.
    pub switches: Vec<SwitchRecord>,
    /// The client certificate (`null` if it could not be read).
    pub certificate: Option<CertStatus>,
    /// The state in one word and why, as the page, the tray and the metrics show it.
    pub summary: Summary,
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
            traffic: traffic_route(&routing, self.cfg.fail_open),
            error: (routing.none_available && !routing.direct_on_premise).then(|| routing.unavailable_reason()),
            counters: Counters {
                switches: self.history.switch_count,
                ..self.counters.clone()
            },
            switches: self.history.switches(),
            certificate: self.cert.as_ref().map(|c| CertStatus::new(c, SystemTime::now())),
            summary: Summary::default(),
        };
        let (state, reason) = page::state_label(&status);
        status.summary = Summary { state, reason };
        status
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

    /// Publishes a new routing table for the workers.
    fn publish(&self) {
        let now = Instant::now();
        self.routing.store(Arc::new(Routing {
            gateways: self.gateways.clone(),
            slots: self.ranker.slots(self.slots.len(), self.cfg.selection.pinned, now),
            direct_on_premise: self.on_premise_direct(),
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

    fn apply(&mut self, fb: Feedback) {
        let now = Instant::now();
        match fb {
            Feedback::Report {
                worker,
                direct,
                tls,
                gateways,
                pool,
            } => {
                self.counters.merge(worker, &gateways, direct, tls, pool);
                self.tls.handshakes += tls.handshakes;
                self.tls.resumed += tls.resumed;
                self.direct.on_premise += direct.on_premise;
                self.direct.fail_open += direct.fail_open;
                self.direct.fail_closed += direct.fail_closed;
                self.direct.refused_untrusted += direct.refused_untrusted;
                // Traffic outcomes feed reputation and fail-over; latency comes
                // from probes so that every gateway is measured the same way.
                // Failures were already reported one by one (`Failed`).
                for (i, g) in gateways.iter().enumerate() {
                    if g.ok > 0 {
                        let sw = self.ranker.merge_outcomes(i, g.ok, 0, now);
                        if sw.is_some() {
                            self.switched(sw);
                        }
                    }
                }
            }
            Feedback::Failed { gateway, kind, reason } => {
                if let Some(g) = self.gateways.get(gateway) {
                    tracing::warn!("gateway {} failed on the data path: {reason}", g.label());
                }
                self.failed(gateway, kind, reason);
                let sw = self
                    .ranker
                    .record(gateway, SampleOutcome::Failed, Evidence::Traffic, now);
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
                SampleOutcome::Failed
            }
        };
        let sw = self.ranker.record(gw, outcome, source, now);
        if sw.is_some() {
            self.switched(sw);
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
}

impl Control {
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
}

/// Binds the control listener and starts the control thread.
pub fn start(inputs: Inputs, pool: DefaultThreadPool) -> anyhow::Result<Control> {
    let listener = std::net::TcpListener::bind(inputs.cfg.control)
        .map_err(|e| crate::ports::explain_bind(inputs.cfg.control, "control.listen", e))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = flume::bounded::<()>(0);
    let (ready_tx, ready_rx) = flume::bounded::<anyhow::Result<()>>(1);
    let thread = std::thread::Builder::new().name("msc-control".into()).spawn(move || {
        let r = msc_io::runtime::block_on(msc_io::runtime::DriverChoice::Auto, Some(pool), move |_| {
            run(inputs, listener, stop_rx, ready_tx)
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
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow::anyhow!("the control plane exited during start-up")),
    }
}

async fn run(
    inputs: Inputs,
    listener: std::net::TcpListener,
    stop: flume::Receiver<()>,
    ready: flume::Sender<anyhow::Result<()>>,
) {
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
    // Read once: a certificate rotated on disk shows after a restart, as it
    // takes effect only then.
    let cert = msc_tls::certs::load_certs(&inputs.cfg.tls.cert)
        .ok()
        .and_then(|c| c.first().and_then(|d| msc_tls::certs::CertSummary::from_der(d)));
    let state = Rc::new(RefCell::new(State {
        pac_max_age: inputs.cfg.pac.max_age,
        cfg: inputs.cfg,
        pac: inputs.pac,
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
        history: History::new(n_gateways),
        counters: Counters::new(n_gateways, workers),
        cert,
    }));
    state.borrow().publish();

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
    let _ = ready.send(Ok(()));
    drop(ready);

    loop {
        monoio::select! {
            fb = feedback.recv_async() => match fb {
                Ok(fb) => state.borrow_mut().apply(fb),
                Err(_) => break,
            },
            _ = stop.recv_async() => break,
        }
    }
}

/// Probes every gateway now and then periodically (with jitter), checks the
/// selected one more often, and runs the damping rounds. Sleeps in between:
/// no busy loops, and nothing runs more often than configured.
fn start_probing(state: &Rc<RefCell<State>>, stop: &flume::Receiver<()>) {
    let (cfg, gateways) = {
        let st = state.borrow();
        (st.cfg.clone(), st.gateways.clone())
    };
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
        let tls = tls.clone();
        let (host, port) = (s.host.clone(), s.port);
        let gw = gateways[i].clone();
        let mut jitter = probe::Jitter::new(seed ^ ((i as u64 + 1) * 0x9E37_79B9));
        let interval = sel.probe_interval;
        monoio::spawn(async move {
            // The first probe runs at once, in parallel for every gateway.
            loop {
                let addrs = probe::resolve(host.clone(), port).await;
                st.borrow_mut().set_addrs(i, addrs.clone());
                let res = probe::probe(&gw, &addrs, tls.clone(), t.connect, t.handshake).await;
                st.borrow_mut().probed(i, res, Evidence::Probe);
                monoio::select! {
                    _ = monoio::time::sleep(jitter.around(interval)) => {},
                    _ = stop.recv_async() => return,
                }
            }
        });
    }
    // Keep-alive: the selected gateway, more often.
    let st = state.clone();
    let stop2 = stop.clone();
    let tls2 = tls.clone();
    monoio::spawn(async move {
        loop {
            monoio::select! {
                _ = monoio::time::sleep(sel.keepalive_interval) => {},
                _ = stop2.recv_async() => return,
            }
            let cur = st.borrow().ranker.current();
            let Some(i) = cur else { continue };
            let gw = st.borrow().gateways[i].clone();
            let res = probe::probe(&gw, &gw.addrs, tls2.clone(), t.connect, t.handshake).await;
            st.borrow_mut().probed(i, res, Evidence::KeepAlive);
        }
    });
    // Damping rounds; republish every round (slots below the first may move).
    let st = state.clone();
    let stop3 = stop.clone();
    monoio::spawn(async move {
        loop {
            monoio::select! {
                _ = monoio::time::sleep(sel.evaluate_interval) => {},
                _ = stop3.recv_async() => return,
            }
            let mut s = st.borrow_mut();
            let sw = s.ranker.evaluate(Instant::now());
            s.switched(sw);
        }
    });
}

/// Where browser traffic goes under `routing` (see [`Status::traffic`]).
fn traffic_route(routing: &Routing, fail_open: bool) -> &'static str {
    if routing.direct_on_premise {
        "direct:on-premise"
    } else if !routing.none_available {
        "gateway"
    } else if !routing.direct_permitted {
        "refused:untrusted"
    } else if fail_open {
        "direct:fail-open"
    } else {
        "refused:fail-closed"
    }
}
