//! Client generations: what a configuration reload swaps under running
//! workers without dropping a connection.
//!
//! A *generation* is everything built from one `ClientConfig`: the
//! [`ClientShared`] (routing handle, timeouts, fail-open, listener→slot map,
//! direct relays) plus, on each worker, its tunnel pool (TLS configuration
//! from the credentials), recorder and [`ClientService`]. The control plane
//! publishes a new [`GenSpec`] through [`Live`]; each worker's
//! [`ClientWorker`] notices at the next request head (one relaxed atomic
//! load per request, no lock, no allocation) and builds its service of the
//! new generation. A request in flight, a CONNECT tunnel or a long download
//! finishes on the generation it started with; an idle keep-alive connection
//! stays open and its next request is served by the new generation. The old
//! pool's idle tunnels are closed at once (close_notify); its tunnels in use
//! are retired when their exchange ends.
//!
//! # Thread Safety
//! [`Live`] is `Send + Sync` (shared by the control thread and the
//! workers). [`ClientWorker`] and the services are per worker (`!Send`).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use monoio::net::TcpStream;
use msc_io::worker::Service;

use super::pool::TunnelPool;
use super::{ClientService, ClientShared, Next};
use crate::config::client::{ClientConfig, PoolConfig};
use crate::forward::access::AccessLog;
use crate::forward::policy::DenyList;
use crate::forward::{ProxySettings, ProxyTimeouts};
use crate::upstream::RoutingHandle;
use crate::upstream::feedback::{Feedback, Recorder};

/// How often a busy worker hands its traffic figures to the control plane.
pub const FEEDBACK_PERIOD: Duration = Duration::from_secs(1);

/// What every worker builds its service of one generation from.
#[derive(Debug)]
pub struct GenSpec {
    pub shared: Arc<ClientShared>,
    /// Per worker: its TLS configuration (each has its own ticket cache).
    pub tls: Vec<Arc<rustls::ClientConfig>>,
    pub pool: PoolConfig,
    /// Gateways in this generation (the recorder's and the pool's size).
    pub gateways: usize,
    pub feedback: flume::Sender<Feedback>,
}

/// The current generation, published by the control plane.
#[derive(Debug)]
pub struct Live {
    generation: AtomicU64,
    spec: ArcSwap<GenSpec>,
    /// Per worker: nudged after a publish, so a worker without requests
    /// switches too (and closes the old pool's idle tunnels) at once.
    nudge: Vec<flume::Sender<()>>,
}

impl Live {
    /// The first generation; returns the per-worker nudge receivers for
    /// [`ClientWorker::new`].
    pub fn new(spec: GenSpec, workers: usize) -> (Arc<Live>, Vec<flume::Receiver<()>>) {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..workers).map(|_| flume::bounded(1)).unzip();
        let live = Live {
            generation: AtomicU64::new(spec.shared.generation),
            spec: ArcSwap::from_pointee(spec),
            nudge: tx,
        };
        (Arc::new(live), rx)
    }

    /// The generation number in force.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Makes `spec` the generation every new request uses.
    pub fn publish(&self, spec: GenSpec) {
        let g = spec.shared.generation;
        self.spec.store(Arc::new(spec));
        // After the store: a worker that sees the new number loads (at least) this spec.
        self.generation.store(g, Ordering::Release);
        for n in &self.nudge {
            let _ = n.try_send(());
        }
    }
}

/// The direct relay settings for a generation (`route`: the access-log route).
fn relay(cfg: &ClientConfig, log: &AccessLog, route: &str) -> Arc<ProxySettings> {
    let t = cfg.timeouts;
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
}

/// The [`ClientShared`] of generation `generation` of `cfg`.
/// `listener_slots`: by listener id, the slot it serves.
pub fn shared(
    cfg: &ClientConfig,
    routing: RoutingHandle,
    generation: u64,
    listener_slots: Vec<Option<usize>>,
    log: &AccessLog,
    user: Arc<str>,
) -> ClientShared {
    ClientShared {
        routing,
        generation,
        timeouts: cfg.timeouts,
        fail_open: cfg.fail_open,
        listener_slots,
        on_premise: relay(cfg, log, "direct:on-premise"),
        fail_open_relay: relay(cfg, log, "direct:fail-open:unavailable"),
        fail_open_unreachable_relay: relay(cfg, log, "direct:fail-open:unreachable"),
        disabled_relay: relay(cfg, log, "direct:disabled"),
        user,
        // Requests through a gateway are logged only with `log.requests = "all"`.
        log: if cfg.log_all { log.clone() } else { AccessLog::off() },
    }
}

/// Each worker's TLS configuration for `cfg`'s credentials (this is where a
/// bad certificate, key or CA is found).
pub fn worker_tls(cfg: &ClientConfig, workers: usize) -> anyhow::Result<Vec<Arc<rustls::ClientConfig>>> {
    let creds = msc_tls::config::ClientCreds {
        ca: &cfg.tls.ca,
        cert: &cfg.tls.cert,
        key: &cfg.tls.key,
    };
    (0..workers)
        .map(|_| msc_tls::config::client_config(&creds, 64).map_err(anyhow::Error::from))
        .collect()
}

/// The client certificate's principal, for the access log.
pub fn user(cfg: &ClientConfig) -> anyhow::Result<Arc<str>> {
    Ok(msc_tls::certs::load_certs(&cfg.tls.cert)?
        .first()
        .map(|c| msc_tls::Identity::from_der(c).principal().to_owned())
        .unwrap_or_else(|| "-".into())
        .into())
}

/// A worker's service: a thin holder of its current generation's
/// [`ClientService`].
#[derive(Debug)]
pub struct ClientWorker {
    index: usize,
    live: Arc<Live>,
    current: RefCell<Rc<ClientService>>,
    seen: Cell<u64>,
}

impl ClientWorker {
    /// Builds worker `index`'s service of the current generation; runs on
    /// the worker's runtime (it spawns the task that follows `nudge`).
    pub fn new(index: usize, live: Arc<Live>, nudge: flume::Receiver<()>) -> Rc<ClientWorker> {
        let spec = live.spec.load_full();
        let svc = build(index, &spec);
        let w = Rc::new(ClientWorker {
            index,
            seen: Cell::new(spec.shared.generation),
            live,
            current: RefCell::new(svc),
        });
        let weak: Weak<ClientWorker> = Rc::downgrade(&w);
        monoio::spawn(async move {
            while nudge.recv_async().await.is_ok() {
                let Some(w) = weak.upgrade() else { return };
                w.current();
            }
        });
        w
    }

    /// The service of the newest generation (switching to it if needed).
    pub fn current(&self) -> Rc<ClientService> {
        if self.live.generation.load(Ordering::Relaxed) != self.seen.get() {
            let spec = self.live.spec.load_full();
            if spec.shared.generation != self.seen.get() {
                let new = build(self.index, &spec);
                let old = self.current.replace(new);
                old.pool().close();
                self.seen.set(spec.shared.generation);
            }
        }
        self.current.borrow().clone()
    }
}

fn build(index: usize, spec: &GenSpec) -> Rc<ClientService> {
    let recorder = Recorder::new(
        index,
        spec.shared.generation,
        spec.gateways,
        spec.feedback.clone(),
        FEEDBACK_PERIOD,
    );
    let tls = spec.tls.get(index).or_else(|| spec.tls.first()).cloned();
    let tls = tls.expect("one TLS configuration per worker");
    let pool = TunnelPool::new(spec.pool, tls, spec.shared.timeouts, recorder.clone(), spec.gateways);
    // Warm up towards slot 1's gateway so the first request finds a tunnel.
    if let Some(gw) = spec.shared.routing.load().for_slot(0).next() {
        pool.warm(gw);
    }
    Rc::new(ClientService::new(spec.shared.clone(), recorder, pool))
}

impl Service for ClientWorker {
    /// The connection's own future stays small (it is what an idle
    /// keep-alive connection costs): it only waits for the next request's
    /// first byte, holding no buffer, and handles each request in a boxed
    /// future that exists while the request does. Each request is served by
    /// the generation current when its first byte arrived.
    async fn serve(self: Rc<Self>, listener: usize, stream: TcpStream, peer: SocketAddr) {
        let (mut br, mut bw) = msc_io::stream::split(stream);
        // One armed multishot receive per browser connection, where the
        // worker has a provided-buffer ring (io_uring with MSC_MULTISHOT=1;
        // off by default: perf/levers.md).
        br.use_multishot();
        let stop = msc_io::worker::stopping();
        let mut svc = self.current();
        // A later generation without this listener (its port was changed)
        // keeps the slot the connection was accepted for.
        let mut slot = svc.shared.slot_of(listener).unwrap_or(0);
        let mut cut = false;
        loop {
            // Idle too long, stopping, or the socket failed: close quietly.
            let idle = msc_io::deadline::sleep(svc.t.idle);
            let ready = monoio::select! {
                r = br.wait_request() => r,
                _ = idle => break,
                _ = stop.wait() => break,
            };
            // The first bytes (or the FIN: a closing connection then costs no
            // request state) before the request's future is built.
            if ready.is_err() || !msc_io::stream::fill_first(&mut br).await {
                break;
            }
            let now = self.current();
            if !Rc::ptr_eq(&now, &svc) {
                svc = now;
                if let Some(s) = svc.shared.slot_of(listener) {
                    slot = s;
                }
            }
            let request = Box::pin(svc.request(&mut br, &mut bw, slot, peer));
            match request.await {
                Next::KeepAlive => {}
                Next::Close => break,
                Next::Abort => {
                    cut = true;
                    break;
                }
                Next::Tunnel(u) => {
                    cut = Box::pin(svc.relay_tunnel(&mut br, &mut bw, *u)).await;
                    break;
                }
            }
        }
        if cut {
            msc_io::stream::abort(br, bw);
        } else {
            msc_io::stream::close(br, bw);
        }
    }
}
