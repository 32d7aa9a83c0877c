//! Assembling processes: listeners, worker threads and their services for
//! the client, the gateway and the built-in origin. Used by the CLI commands
//! and by `msc demo`, which runs all three in one process.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use monoio::blocking::DefaultThreadPool;

use crate::client::generation::{ClientWorker, GenSpec, Live};
use crate::config::client::ClientConfig;
use crate::config::gateway::GatewayConfig;
use crate::control::Control;
use crate::forward::access::AccessLog;
use crate::gateway::{Gateway, GatewayShared};
use crate::upstream::feedback::Feedback;
use crate::upstream::{GatewayRoute, Routing, RoutingHandle};
use msc_io::worker::{ListenerControl, Workers};

/// How long open connections may finish after a stop request.
pub const GRACE: Duration = Duration::from_secs(5);
const BACKLOG: i32 = 1024;

/// Threads for blocking work (name resolution): shared by all workers.
pub fn blocking_pool() -> DefaultThreadPool {
    DefaultThreadPool::new(4)
}

/// Opens `workers` SO_REUSEPORT sockets for each address; returns them
/// grouped per worker, and the bound addresses (port 0 becomes a real port).
/// `what(i)` names address `i` for the error when its port is taken.
pub fn listeners(
    addrs: &[SocketAddr],
    workers: usize,
    what: impl Fn(usize) -> String,
) -> anyhow::Result<(Vec<Vec<std::net::TcpListener>>, Vec<SocketAddr>)> {
    let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let socks = msc_io::listen::reuseport_listeners(*a, workers, BACKLOG)
            .map_err(|e| crate::ports::explain_bind(*a, &what(i), e))?;
        bound.push(socks[0].local_addr()?);
        for (w, s) in socks.into_iter().enumerate() {
            per_worker[w].push(s);
        }
    }
    Ok((per_worker, bound))
}

/// A running gateway.
#[derive(Debug)]
pub struct RunningGateway {
    pub workers: Workers,
    pub addr: SocketAddr,
    log: Option<JoinHandle<()>>,
    /// Re-reads the ticket keys file (stops when dropped).
    tickets: Option<crate::gateway::tickets::Reloader>,
}

impl RunningGateway {
    pub fn stop(self) {
        self.workers.stop();
        drop(self.tickets);
        drop(self.log);
    }
}

pub fn start_gateway(cfg: &GatewayConfig, pool: &DefaultThreadPool) -> anyhow::Result<RunningGateway> {
    let (log, log_thread) = AccessLog::start(&cfg.access_log).context("cannot open the access log")?;
    let shared = Arc::new(GatewayShared::new(cfg, log)?);
    let tickets = match (&cfg.tls.tickets, &shared.tickets) {
        (Some(t), Some(sealer)) => {
            tracing::info!(
                "session tickets: {} shared keys from {}, sealing with key {}",
                t.keys.len(),
                t.file.display(),
                sealer.sealing_id(std::time::SystemTime::now())
            );
            Some(
                crate::gateway::tickets::watch(t.file.clone(), sealer.clone(), t.check)
                    .context("cannot start the ticket-keys reload thread")?,
            )
        }
        _ => None,
    };
    let (socks, bound) = listeners(&[cfg.listen], cfg.workers, |_| "listen".into())?;
    let workers = Workers::start("gateway", cfg.driver, socks, pool.clone(), GRACE, move |_, _| {
        Ok(Rc::new(Gateway::new(shared.clone())))
    })?;
    Ok(RunningGateway {
        workers,
        addr: bound[0],
        log: log_thread,
        tickets,
    })
}

/// A running client: workers and their control plane.
#[derive(Debug)]
pub struct RunningClient {
    pub workers: Workers,
    /// Per slot: the bound (http, https) addresses at start.
    pub slots: Vec<(SocketAddr, SocketAddr)>,
    /// The first generation's routing (a reload publishes a new one).
    pub routing: RoutingHandle,
    pub control: Control,
    log: Option<JoinHandle<()>>,
}

impl RunningClient {
    pub fn stop(self) {
        self.workers.stop();
        self.control.stop();
        drop(self.log);
    }
}

/// The routing table before any measurement: slot i uses gateway i.
pub fn initial_routing(cfg: &ClientConfig) -> Routing {
    let gateways = cfg
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Arc::new(GatewayRoute {
                index: i,
                name: s.name.as_str().into(),
                address: s.address.clone(),
                addrs: crate::control::probe::resolve_blocking(&s.host, s.port),
                server_name: s.server_name.clone(),
                probe_url: s.probe_url.clone(),
            })
        })
        .collect();
    Routing {
        gateways,
        slots: (0..cfg.servers.len()).map(|i| vec![i]).collect(),
        direct_on_premise: false,
        disabled: false,
        none_available: false,
        direct_permitted: true,
        last_failure: vec![None; cfg.servers.len()],
    }
}

pub fn start_client(cfg: &ClientConfig, pool: &DefaultThreadPool) -> anyhow::Result<RunningClient> {
    // Credentials first so errors surface before any thread starts; each
    // worker has its own TLS configuration, hence its own ticket cache.
    let tls = crate::client::generation::worker_tls(cfg, cfg.workers)?;
    let user = crate::client::generation::user(cfg)?;
    let initial = initial_routing(cfg);
    let gateways = initial.gateways.clone();
    let routing: RoutingHandle = Arc::new(ArcSwap::from_pointee(initial));
    // One listener per configured port: a slot without `https_port` serves
    // https URLs on its http_port (its PAC entry names that port for both).
    let wanted = slot_listeners(cfg);
    let addrs: Vec<SocketAddr> = wanted.iter().map(|w| w.2).collect();
    let (socks, bound) = listeners(&addrs, cfg.workers, |i| {
        let (slot, key, _) = wanted[i];
        format!("servers[{slot}].{key}")
    })?;
    let listener_info: Vec<crate::control::reload::Listener> = wanted
        .iter()
        .zip(&bound)
        .enumerate()
        .map(
            |(id, (&(slot, key, requested), &bound))| crate::control::reload::Listener {
                id,
                slot,
                key,
                requested,
                bound,
            },
        )
        .collect();
    let slots = crate::control::reload::slot_addrs(&listener_info, cfg.servers.len());
    let listener_slots = crate::control::reload::listener_slots(&listener_info);
    let ports: Vec<(u16, u16)> = slots.iter().map(|(h, s)| (h.port(), s.port())).collect();
    let pac = crate::control::render_pac(cfg, &ports)?;

    let (log, log_thread) = AccessLog::start(&cfg.access_log).context("cannot open the access log")?;
    let shared = Arc::new(crate::client::generation::shared(
        cfg,
        routing.clone(),
        0,
        listener_slots,
        &log,
        user,
    ));
    let (fb_tx, fb_rx) = flume::unbounded::<Feedback>();
    let (live, nudges) = Live::new(
        GenSpec {
            shared,
            tls,
            pool: cfg.pool,
            gateways: gateways.len(),
            feedback: fb_tx.clone(),
        },
        cfg.workers,
    );
    let (listener_control, commands) = ListenerControl::new(cfg.workers);
    let (pings, responders) = crate::control::health::channels(cfg.workers);
    // The control plane first: its first on-premise evaluation happens before
    // any browser connection is accepted.
    let control = crate::control::start(
        crate::control::Inputs {
            cfg: cfg.clone(),
            routing: routing.clone(),
            gateways: gateways.clone(),
            slots: slots.clone(),
            feedback: fb_rx,
            workers: cfg.workers,
            pac,
            pings,
            reload: crate::control::reload::Reloadable {
                listeners: listener_control,
                live: live.clone(),
                feedback: fb_tx,
                bound: listener_info.clone(),
                next_id: listener_info.len(),
                log,
            },
        },
        pool.clone(),
    )?;
    let workers = Workers::start_dynamic(
        "client",
        cfg.driver,
        socks,
        commands,
        pool.clone(),
        GRACE,
        move |i, _| {
            // Answers the control plane's liveness pings while this runtime runs.
            if let Some(r) = responders.get(i) {
                r.clone().spawn();
            }
            let nudge = nudges.get(i).cloned().unwrap_or_else(|| flume::bounded(1).1);
            Ok(ClientWorker::new(i, live.clone(), nudge))
        },
    )?;
    Ok(RunningClient {
        workers,
        slots,
        routing,
        control,
        log: log_thread,
    })
}

/// The listeners `cfg`'s slots need: (slot, key, address), slot by slot.
pub fn slot_listeners(cfg: &ClientConfig) -> Vec<(usize, &'static str, SocketAddr)> {
    let mut out = Vec::new();
    for (i, s) in cfg.servers.iter().enumerate() {
        out.push((i, "http_port", SocketAddr::new(cfg.listen, s.http_port)));
        if let Some(p) = s.https_port {
            out.push((i, "https_port", SocketAddr::new(cfg.listen, p)));
        }
    }
    out
}

/// Blocks until SIGINT or SIGTERM.
pub fn wait_for_signal() -> anyhow::Result<i32> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    Ok(signals.forever().next().unwrap_or(SIGTERM))
}

/// SIGINT, SIGTERM and SIGHUP, caught from now on: register before the ready
/// line, so a SIGHUP sent as soon as it shows reloads instead of killing.
pub fn client_signals() -> anyhow::Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    Ok(signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?)
}

/// Blocks until SIGINT or SIGTERM; calls `hup` on each SIGHUP (configuration reload).
pub fn wait_for_signal_or(signals: &mut signal_hook::iterator::Signals, hup: impl Fn()) -> i32 {
    use signal_hook::consts::{SIGHUP, SIGTERM};
    for sig in signals.forever() {
        if sig == SIGHUP {
            tracing::info!("SIGHUP: reloading the configuration");
            hup();
        } else {
            return sig;
        }
    }
    SIGTERM
}

/// Raises the open-file limit to the hard limit: a proxy holds two sockets
/// per connection.
pub fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
}
