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

use crate::client::pool::TunnelPool;
use crate::client::{ClientService, ClientShared};
use crate::config::client::ClientConfig;
use crate::config::gateway::GatewayConfig;
use crate::control::Control;
use crate::forward::access::AccessLog;
use crate::forward::policy::DenyList;
use crate::forward::{ProxySettings, ProxyTimeouts};
use crate::gateway::{Gateway, GatewayShared};
use crate::upstream::feedback::{Feedback, Recorder};
use crate::upstream::{GatewayRoute, Routing, RoutingHandle};
use msc_io::worker::Workers;

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
    /// Per slot: the bound (http, https) addresses.
    pub slots: Vec<(SocketAddr, SocketAddr)>,
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

/// How often a busy worker hands its traffic figures to the control plane.
const FEEDBACK_PERIOD: Duration = Duration::from_secs(1);

pub fn start_client(cfg: &ClientConfig, pool: &DefaultThreadPool) -> anyhow::Result<RunningClient> {
    let creds = msc_tls::config::ClientCreds {
        ca: &cfg.tls.ca,
        cert: &cfg.tls.cert,
        key: &cfg.tls.key,
    };
    // Validate credentials once up front so errors surface before any thread starts.
    msc_tls::config::client_config(&creds, 1)?;
    let user: Arc<str> = msc_tls::certs::load_certs(&cfg.tls.cert)?
        .first()
        .map(|c| msc_tls::Identity::from_der(c).principal().to_owned())
        .unwrap_or_else(|| "-".into())
        .into();
    let initial = initial_routing(cfg);
    let gateways = initial.gateways.clone();
    let routing: RoutingHandle = Arc::new(ArcSwap::from_pointee(initial));
    // One listener per configured port: a slot without `https_port` serves
    // https URLs on its http_port (its PAC entry names that port for both).
    let mut addrs = Vec::new();
    // Per listener: (slot, which key).
    let mut listener_slots: Vec<(usize, &'static str)> = Vec::new();
    for (i, s) in cfg.servers.iter().enumerate() {
        addrs.push(SocketAddr::new(cfg.listen, s.http_port));
        listener_slots.push((i, "http_port"));
        if let Some(p) = s.https_port {
            addrs.push(SocketAddr::new(cfg.listen, p));
            listener_slots.push((i, "https_port"));
        }
    }
    let (socks, bound) = listeners(&addrs, cfg.workers, |i| {
        let (slot, key) = listener_slots[i];
        format!("servers[{slot}].{key}")
    })?;
    let mut slots: Vec<(SocketAddr, SocketAddr)> = Vec::with_capacity(cfg.servers.len());
    for (&a, &(slot, key)) in bound.iter().zip(&listener_slots) {
        if key == "http_port" {
            debug_assert_eq!(slots.len(), slot);
            slots.push((a, a));
        } else if let Some(s) = slots.get_mut(slot) {
            s.1 = a;
        }
    }
    let listener_slots: Vec<usize> = listener_slots.iter().map(|&(slot, _)| slot).collect();
    let ports: Vec<(u16, u16)> = slots.iter().map(|(h, s)| (h.port(), s.port())).collect();
    let pac = crate::control::render_pac(cfg, &ports)?;

    let (log, log_thread) = AccessLog::start(&cfg.access_log).context("cannot open the access log")?;
    let t = cfg.timeouts;
    let relay = |route: &str| {
        Arc::new(ProxySettings {
            who: "msc-client",
            via: "1.1 msc-client",
            deny: DenyList::default(),
            // Direct access to intranet addresses is legitimate on premise.
            egress: None,
            timeouts: ProxyTimeouts {
                head: t.head,
                idle: t.idle,
                connect: t.connect,
            },
            log: log.clone(),
            probe: false,
            probe_delay: None,
            route: Some(route.into()),
            request_limits: msc_io::head::Limits::PEER,
            docs: None,
        })
    };
    let shared = Arc::new(ClientShared {
        routing: routing.clone(),
        timeouts: t,
        fail_open: cfg.fail_open,
        listener_slots,
        on_premise: relay("direct:on-premise"),
        fail_open_relay: relay("direct:fail-open:unavailable"),
        fail_open_unreachable_relay: relay("direct:fail-open:unreachable"),
        disabled_relay: relay("direct:disabled"),
        user,
        // Requests through a gateway are logged only with `log.requests = "all"`.
        log: if cfg.log_all { log.clone() } else { AccessLog::off() },
    });
    let (fb_tx, fb_rx) = flume::unbounded::<Feedback>();
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
        },
        pool.clone(),
    )?;
    let tls = cfg.tls.clone();
    let n_gateways = gateways.len();
    let pool_cfg = cfg.pool;
    let workers = Workers::start("client", cfg.driver, socks, pool.clone(), GRACE, move |i, _| {
        // Each worker has its own TLS configuration, hence its own ticket cache.
        let creds = msc_tls::config::ClientCreds {
            ca: &tls.ca,
            cert: &tls.cert,
            key: &tls.key,
        };
        let c = msc_tls::config::client_config(&creds, 64).map_err(|e| std::io::Error::other(e.to_string()))?;
        // Answers the control plane's liveness pings while this runtime runs.
        if let Some(r) = responders.get(i) {
            r.clone().spawn();
        }
        let recorder = Recorder::new(i, n_gateways, fb_tx.clone(), FEEDBACK_PERIOD);
        let pool = TunnelPool::new(pool_cfg, c, t, recorder.clone(), n_gateways);
        // Warm up towards slot 1's gateway so the first request finds a tunnel.
        if let Some(gw) = shared.routing.load().for_slot(0).next() {
            pool.warm(gw);
        }
        Ok(Rc::new(ClientService::new(shared.clone(), recorder, pool)))
    })?;
    Ok(RunningClient {
        workers,
        slots,
        routing,
        control,
        log: log_thread,
    })
}

/// Blocks until SIGINT or SIGTERM.
pub fn wait_for_signal() -> anyhow::Result<i32> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    Ok(signals.forever().next().unwrap_or(SIGTERM))
}

/// Raises the open-file limit to the hard limit: a proxy holds two sockets
/// per connection.
pub fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
}
