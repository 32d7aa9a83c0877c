//! The client's control plane: one named thread with its own runtime, never
//! a data-path worker. It serves the local control API (PAC, status),
//! evaluates the on/off-premise indicator, merges what workers report, and
//! publishes the routing table workers read (atomically, lock-free for them).

pub mod api;
pub mod feedback;
pub mod premise;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use monoio::blocking::DefaultThreadPool;
use monoio::net::TcpListener;
use serde::Serialize;

use crate::config::client::ClientConfig;
use crate::upstream::{GatewayRoute, Routing, RoutingHandle};
use feedback::{DirectCounts, Feedback, TlsCounts};
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
    /// Requests handled without a gateway since start.
    pub direct: DirectCounts,
    /// Tunnel handshakes since start, and how many resumed a session.
    pub tls: TlsCounts,
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
        Status {
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
                .map(|g| GatewayInfo {
                    name: g.name.to_string(),
                    address: g.address.clone(),
                    resolved: g.addrs.clone(),
                })
                .collect(),
            direct: self.direct,
            tls: self.tls,
        }
    }

    fn on_premise_direct(&self) -> bool {
        self.cfg.on_premise.as_ref().is_some_and(|op| op.direct)
            && self.premise.last.as_ref().is_some_and(|(c, _)| c.on_premise)
    }

    /// Publishes a new routing table for the workers.
    fn publish(&self) {
        let n = self.gateways.len();
        let slots = (0..self.slots.len())
            .map(|i| {
                // Slot i's own gateway first, then the others for connect-time fail-over.
                let first = i.min(n.saturating_sub(1));
                let mut order = vec![first];
                order.extend((0..n).filter(|&g| g != first));
                order
            })
            .collect();
        self.routing.store(Arc::new(Routing {
            gateways: self.gateways.clone(),
            slots,
            direct_on_premise: self.on_premise_direct(),
            none_available: false,
        }));
    }

    fn apply(&mut self, fb: Feedback) {
        match fb {
            Feedback::Report { direct, tls, .. } => {
                self.tls.handshakes += tls.handshakes;
                self.tls.resumed += tls.resumed;
                self.direct.on_premise += direct.on_premise;
                self.direct.fail_open += direct.fail_open;
                self.direct.fail_closed += direct.fail_closed;
            }
            Feedback::Failed { gateway, reason } => {
                if let Some(g) = self.gateways.get(gateway) {
                    tracing::warn!("gateway {} failed on the data path: {reason}", g.label());
                }
            }
        }
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
        .with_context(|| format!("cannot listen on {} (control.listen)", inputs.cfg.control))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = flume::bounded::<()>(0);
    let (ready_tx, ready_rx) = flume::bounded::<anyhow::Result<()>>(1);
    let thread = std::thread::Builder::new().name("msc-control".into()).spawn(move || {
        let r = msc_io::runtime::block_on(Some(pool), move |_| run(inputs, listener, stop_rx, ready_tx));
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
        workers: inputs.workers,
        started: Instant::now(),
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
                    tracing::warn!("control API accept failed: {e}");
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
