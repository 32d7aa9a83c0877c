//! Each worker's pool of ready mutual-TLS tunnels, per gateway.
//!
//! A browser connection takes an idle tunnel instead of waiting for TCP + TLS
//! on its critical path. The pool refills in the background, on the worker,
//! only while there is demand: after `warm_for` without a request nothing is
//! opened, idle tunnels expire after `idle_lifetime`, and an idle laptop
//! makes no handshakes and sets no timers. New tunnels resume the TLS 1.3
//! session (the worker's ticket cache), so refills are cheap.
//!
//! A tunnel is checked before it is handed out: whatever the gateway sent
//! while it sat idle (session tickets, a close) is processed without waiting,
//! and a closed or out-of-step tunnel is discarded.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use msc_io::resolve::connect_any;
use msc_io::stream::Sink;
use msc_tls::{TlsError, TlsReader, TlsStream, TlsWriter};

use crate::config::client::{ClientTimeouts, PoolConfig};
use crate::forward::error::{ProxyError, Retry, Side};
use crate::upstream::feedback::Recorder;
use crate::upstream::{FailureKind, GatewayRoute, classify_io, classify_tls};

/// A tunnel returned this recently is assumed alive (see [`TunnelPool::take`]).
const RECENT: Duration = Duration::from_millis(500);

/// How long a fresh tunnel waits for the gateway's session tickets.
const SETTLE: Duration = Duration::from_millis(250);

/// One mutual-TLS connection to a gateway, split for relaying.
#[derive(Debug)]
pub struct Tunnel {
    pub r: TlsReader,
    pub w: TlsWriter,
    pub gw: usize,
    /// When it was opened or last returned to the pool.
    pub since: Instant,
}

#[derive(Debug, Default)]
struct GwPool {
    idle: VecDeque<Tunnel>,
    opening: usize,
    last_demand: Option<Instant>,
    reaper: bool,
}

/// A worker's tunnel pool. `!Send`: one per worker.
#[derive(Debug)]
pub struct TunnelPool {
    cfg: PoolConfig,
    tls: Arc<rustls::ClientConfig>,
    t: ClientTimeouts,
    recorder: Rc<Recorder>,
    gws: RefCell<Vec<GwPool>>,
    handshakes: Cell<u64>,
    resumed: Cell<u64>,
    /// Closed by a configuration reload: tunnels in use finish, nothing is
    /// pooled or opened in the background any more.
    closed: Cell<bool>,
}

impl TunnelPool {
    pub fn new(
        cfg: PoolConfig,
        tls: Arc<rustls::ClientConfig>,
        t: ClientTimeouts,
        recorder: Rc<Recorder>,
        gateways: usize,
    ) -> Rc<TunnelPool> {
        Rc::new(TunnelPool {
            cfg,
            tls,
            t,
            recorder,
            gws: RefCell::new((0..gateways).map(|_| GwPool::default()).collect()),
            handshakes: Cell::new(0),
            resumed: Cell::new(0),
            closed: Cell::new(false),
        })
    }

    /// (handshakes, of which resumed) since start, on this worker.
    pub fn handshake_counts(&self) -> (u64, u64) {
        (self.handshakes.get(), self.resumed.get())
    }

    /// Idle tunnels per gateway (for tests and status).
    pub fn idle_count(&self, gw: usize) -> usize {
        self.gws.borrow().get(gw).map_or(0, |p| p.idle.len())
    }

    /// A ready tunnel to `gw` from the pool, if one is usable. Records demand
    /// and refills the pool in the background. A tunnel idle for less than
    /// [`RECENT`] is handed out without the (syscall) check unless `check`:
    /// a request without a body that finds it dead is retried on a fresh one.
    pub async fn take(self: &Rc<Self>, gw: &Arc<GatewayRoute>, check: bool) -> Option<Tunnel> {
        if let Some(p) = self.gws.borrow_mut().get_mut(gw.index) {
            p.last_demand = Some(Instant::now());
        }
        let mut found = None;
        loop {
            // Most recently used first: the oldest ones expire unused.
            let Some(mut t) = self.gws.borrow_mut().get_mut(gw.index).and_then(|p| p.idle.pop_back()) else {
                break;
            };
            let idle = t.since.elapsed();
            if idle >= self.cfg.idle_lifetime {
                retire(t);
                continue;
            }
            if !check && idle < RECENT {
                found = Some(t);
                break;
            }
            match t.r.refresh_idle().await {
                Ok(true) => {
                    found = Some(t);
                    break;
                }
                _ => {
                    tracing::debug!("discarding a stale tunnel to {}", gw.label());
                    retire(t);
                }
            }
        }
        self.refill(gw);
        found
    }

    /// Retires every idle tunnel (close_notify) and stops pooling: the
    /// configuration this pool was built from was replaced. Tunnels in use
    /// are retired when their exchange ends.
    pub fn close(&self) {
        self.closed.set(true);
        let idle: Vec<Tunnel> = self
            .gws
            .borrow_mut()
            .iter_mut()
            .flat_map(|p| p.idle.drain(..))
            .collect();
        for t in idle {
            retire(t);
        }
    }

    /// Returns a tunnel whose last exchange completed cleanly.
    pub fn put(self: &Rc<Self>, mut t: Tunnel) {
        if self.closed.get() {
            retire(t);
            return;
        }
        t.since = Instant::now();
        let gw = t.gw;
        let mut gws = self.gws.borrow_mut();
        let Some(p) = gws.get_mut(gw) else { return };
        if p.idle.len() >= self.cfg.max_idle {
            drop(gws);
            retire(t);
            return;
        }
        p.idle.push_back(t);
        let reap = !p.reaper;
        p.reaper = true;
        drop(gws);
        if reap {
            self.schedule_reaper(gw);
        }
    }

    /// Opens a new tunnel now (on the caller's critical path).
    pub async fn open(&self, gw: &GatewayRoute) -> Result<Tunnel, ProxyError> {
        let t0 = Instant::now();
        let res = self.connect(gw).await;
        match &res {
            Ok(_) => self.recorder.tunnel_ok(gw.index, t0.elapsed()),
            Err(e) => {
                if let Some(kind) = e.against_upstream() {
                    self.recorder.tunnel_failed(gw.index, kind, &e.reason);
                }
            }
        }
        res
    }

    async fn connect(&self, gw: &GatewayRoute) -> Result<Tunnel, ProxyError> {
        let t = self.t;
        // Nothing of a request is sent before the tunnel is up: a failure
        // to open one may always be retried (on another gateway).
        let up = |status, label, reason: String, kind| {
            ProxyError::new(Side::Upstream, status, label, reason)
                .fault(kind)
                .retry(Retry::Safe)
        };
        if gw.addrs.is_empty() {
            let reason = format!("gateway {}: address could not be resolved", gw.label());
            return Err(up(502, "gateway_unresolved", reason, Some(FailureKind::Unreachable)));
        }
        let tcp = connect_any(&gw.addrs, t.connect).await.map_err(|e| {
            if classify_io(&e).is_none() {
                let reason = format!("this computer is out of resources for new connections ({e}); try again shortly");
                ProxyError::new(Side::Local, 503, "local_resources", reason)
            } else if e.kind() == std::io::ErrorKind::TimedOut {
                let reason = format!(
                    "gateway {} did not accept a connection within {}",
                    gw.label(),
                    humantime::format_duration(t.connect)
                );
                up(504, "gateway_connect_timeout", reason, Some(FailureKind::Unreachable))
            } else {
                let reason = format!("gateway {} unreachable: {e}", gw.label());
                up(502, "gateway_unreachable", reason, Some(FailureKind::Unreachable))
            }
        })?;
        let tls = TlsStream::connect(self.tls.clone(), gw.server_name.clone(), tcp, t.handshake)
            .await
            .map_err(|e| match e {
                TlsError::Timeout => {
                    let reason = format!(
                        "TLS handshake with gateway {} timed out after {}",
                        gw.label(),
                        humantime::format_duration(t.handshake)
                    );
                    up(504, "gateway_handshake_timeout", reason, Some(FailureKind::Unreachable))
                }
                e => {
                    let reason = format!("TLS handshake with gateway {} failed: {e}", gw.label());
                    match classify_tls(&e) {
                        None => ProxyError::new(Side::Local, 503, "local_resources", reason),
                        kind => up(502, "gateway_handshake_failed", reason, kind),
                    }
                }
            })?;
        self.handshakes.set(self.handshakes.get() + 1);
        if tls.info().resumed {
            self.resumed.set(self.resumed.get() + 1);
        }
        self.recorder.handshake(tls.info().resumed);
        let (r, w) = tls.split();
        Ok(Tunnel {
            r,
            w,
            gw: gw.index,
            since: Instant::now(),
        })
    }

    /// Marks demand for `gw` and starts the background refill: used at
    /// start-up so the first browser connection already finds a tunnel.
    pub fn warm(self: &Rc<Self>, gw: &Arc<GatewayRoute>) {
        if let Some(p) = self.gws.borrow_mut().get_mut(gw.index) {
            p.last_demand = Some(Instant::now());
        }
        self.refill(gw);
    }

    /// Opens tunnels in the background, one after another, until
    /// `idle_target` are idle, while the gateway has seen demand recently.
    /// Each new tunnel takes the gateway's session tickets before the next is
    /// opened, so all but the first resume.
    fn refill(self: &Rc<Self>, gw: &Arc<GatewayRoute>) {
        {
            let mut gws = self.gws.borrow_mut();
            let Some(p) = gws.get_mut(gw.index) else { return };
            if p.opening > 0 || !self.wants_more(p) {
                return;
            }
            p.opening = 1;
        }
        let me = self.clone();
        let gw = gw.clone();
        monoio::spawn(async move {
            loop {
                match me.open(&gw).await {
                    Ok(mut t) => {
                        // Take the session tickets now so the next handshake resumes.
                        if matches!(t.r.settle(SETTLE).await, Ok(true)) {
                            me.put(t);
                        } else {
                            retire(t);
                        }
                    }
                    Err(e) => {
                        tracing::debug!("background tunnel: {}", e.reason);
                        break;
                    }
                }
                let more = me.gws.borrow().get(gw.index).is_some_and(|p| me.wants_more(p));
                if !more {
                    break;
                }
            }
            if let Some(p) = me.gws.borrow_mut().get_mut(gw.index) {
                p.opening = 0;
            }
        });
    }

    fn wants_more(&self, p: &GwPool) -> bool {
        if self.closed.get() {
            return false;
        }
        let warm = p.last_demand.is_some_and(|d| d.elapsed() < self.cfg.warm_for);
        warm && p.idle.len() < self.cfg.idle_target
    }

    /// Closes expired idle tunnels; runs only while the pool holds some.
    fn schedule_reaper(self: &Rc<Self>, gw: usize) {
        let me = self.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(me.cfg.idle_lifetime).await;
                let mut expired = Vec::new();
                {
                    let mut gws = me.gws.borrow_mut();
                    let Some(p) = gws.get_mut(gw) else { return };
                    while p
                        .idle
                        .front()
                        .is_some_and(|t| t.since.elapsed() >= me.cfg.idle_lifetime)
                    {
                        if let Some(t) = p.idle.pop_front() {
                            expired.push(t);
                        }
                    }
                    if p.idle.is_empty() {
                        p.reaper = false;
                    }
                }
                for t in expired {
                    retire(t);
                }
                let done = me.gws.borrow().get(gw).is_none_or(|p| !p.reaper);
                if done {
                    return;
                }
            }
        });
    }
}

/// Closes a tunnel politely (close_notify) in the background.
pub fn retire(t: Tunnel) {
    let Tunnel { r, mut w, .. } = t;
    monoio::spawn(async move {
        let _ = monoio::time::timeout(Duration::from_secs(2), w.close_write()).await;
        drop(r);
    });
}
