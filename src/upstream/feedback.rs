//! What workers tell the control plane about real traffic.
//!
//! Each worker records into its own [`Recorder`] (no locks; a successful
//! request allocates nothing, a failure's reason is one `String`) and hands the accumulated figures over at most once per
//! period, and only when it has something to report: an idle laptop causes
//! no wake-ups. A tunnel that fails is also reported at once, so the control
//! plane can fail over immediately.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::upstream::FailureKind;

/// Tunnel set-up latency and outcomes for one gateway.
#[derive(Debug, Clone)]
pub struct GatewayTraffic {
    /// TCP connect + TLS handshake, microseconds.
    pub setup_us: Histogram<u64>,
    pub ok: u64,
    pub failed: u64,
    /// Requests relayed through this gateway's tunnels (the CONNECT or
    /// upgrade that opened a byte relay counts as one).
    pub requests: u64,
    /// Body bytes relayed: browser to gateway, gateway to browser.
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl Default for GatewayTraffic {
    fn default() -> GatewayTraffic {
        GatewayTraffic::new()
    }
}

impl GatewayTraffic {
    pub fn new() -> GatewayTraffic {
        GatewayTraffic {
            // 1 µs .. 60 s at 2 significant figures: a few KiB.
            setup_us: Histogram::new_with_bounds(1, 60_000_000, 2).expect("static histogram bounds"),
            ok: 0,
            failed: 0,
            requests: 0,
            bytes_up: 0,
            bytes_down: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.ok == 0 && self.failed == 0 && self.requests == 0
    }
}

/// How requests were routed without a gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirectCounts {
    /// Relayed directly because the laptop is on premise (direct mode).
    pub on_premise: u64,
    /// Relayed directly because no gateway could be used (fail-open).
    pub fail_open: u64,
    /// Of `fail_open`: the data path itself found every gateway of the slot
    /// unreachable (connect refused or timed out), before the control plane
    /// had judged them unavailable. Access-log route
    /// `direct:fail-open:unreachable` (the others: `direct:fail-open:unavailable`).
    pub fail_open_unreachable: u64,
    /// Refused with 503 because no gateway could be used (fail-closed).
    pub fail_closed: u64,
    /// Of `fail_closed`: as `fail_open_unreachable`.
    pub fail_closed_unreachable: u64,
    /// Refused with 503 because a gateway failed authentication or answered
    /// wrongly (never DIRECT, whatever `fail_open` says).
    pub refused_untrusted: u64,
    /// Relayed directly because a trusted user disabled protection (`msc disable`).
    pub disabled: u64,
}

/// Tunnel handshakes and how many resumed a TLS 1.3 session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsCounts {
    pub handshakes: u64,
    pub resumed: u64,
}

/// Requests that found a ready tunnel in the worker's pool (hits) or had to
/// open one on their critical path (misses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolCounts {
    pub hits: u64,
    pub misses: u64,
}

/// A message from a worker.
#[derive(Debug)]
pub enum Feedback {
    /// Accumulated figures since the worker's previous report.
    Report {
        worker: usize,
        /// The client generation (configuration) whose gateway indices
        /// `gateways` follows (see `control::reload`).
        generation: u64,
        gateways: Vec<GatewayTraffic>,
        direct: DirectCounts,
        tls: TlsCounts,
        pool: PoolCounts,
    },
    /// A tunnel to this gateway just failed before any byte was relayed.
    Failed {
        /// As in `Report`.
        generation: u64,
        gateway: usize,
        kind: FailureKind,
        reason: String,
    },
}

#[derive(Debug)]
struct Pending {
    gateways: Vec<GatewayTraffic>,
    direct: DirectCounts,
    tls: TlsCounts,
    pool: PoolCounts,
}

/// A worker's recorder. `!Send`: one per worker thread.
#[derive(Debug)]
pub struct Recorder {
    worker: usize,
    generation: u64,
    tx: flume::Sender<Feedback>,
    pending: RefCell<Pending>,
    scheduled: Cell<bool>,
    period: Duration,
}

impl Recorder {
    /// A recorder for `worker` whose gateway indices are those of client
    /// generation `generation` (the configuration it was built from).
    pub fn new(
        worker: usize,
        generation: u64,
        gateways: usize,
        tx: flume::Sender<Feedback>,
        period: Duration,
    ) -> Rc<Recorder> {
        Rc::new(Recorder {
            worker,
            generation,
            tx,
            pending: RefCell::new(Pending {
                gateways: (0..gateways).map(|_| GatewayTraffic::new()).collect(),
                direct: DirectCounts::default(),
                tls: TlsCounts::default(),
                pool: PoolCounts::default(),
            }),
            scheduled: Cell::new(false),
            period,
        })
    }

    /// A tunnel to `gw` was set up in `setup`.
    pub fn tunnel_ok(self: &Rc<Self>, gw: usize, setup: Duration) {
        if let Some(g) = self.pending.borrow_mut().gateways.get_mut(gw) {
            let us = u64::try_from(setup.as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, 60_000_000);
            g.setup_us.saturating_record(us);
            g.ok += 1;
        }
        self.schedule();
    }

    /// A tunnel to `gw` could not be set up; reported at once as well.
    pub fn tunnel_failed(self: &Rc<Self>, gw: usize, kind: FailureKind, reason: &str) {
        if let Some(g) = self.pending.borrow_mut().gateways.get_mut(gw) {
            g.failed += 1;
        }
        let _ = self.tx.try_send(Feedback::Failed {
            generation: self.generation,
            gateway: gw,
            kind,
            reason: reason.to_owned(),
        });
        self.schedule();
    }

    /// A tunnel handshake completed (resumed or full).
    pub fn handshake(self: &Rc<Self>, resumed: bool) {
        {
            let mut p = self.pending.borrow_mut();
            p.tls.handshakes += 1;
            p.tls.resumed += u64::from(resumed);
        }
        self.schedule();
    }

    /// A request through a tunnel to `gw` completed (or its relay ended),
    /// with this many body bytes each way.
    pub fn request(self: &Rc<Self>, gw: usize, up: u64, down: u64) {
        if let Some(g) = self.pending.borrow_mut().gateways.get_mut(gw) {
            g.requests += 1;
            g.bytes_up = g.bytes_up.saturating_add(up);
            g.bytes_down = g.bytes_down.saturating_add(down);
        }
        self.schedule();
    }

    /// A request looked for a pooled tunnel: found one (`hit`) or not.
    pub fn pool(self: &Rc<Self>, hit: bool) {
        {
            let mut p = self.pending.borrow_mut();
            p.pool.hits += u64::from(hit);
            p.pool.misses += u64::from(!hit);
        }
        self.schedule();
    }

    /// A request was handled without a gateway.
    pub fn direct(self: &Rc<Self>, f: impl FnOnce(&mut DirectCounts)) {
        f(&mut self.pending.borrow_mut().direct);
        self.schedule();
    }

    fn schedule(self: &Rc<Self>) {
        if self.scheduled.replace(true) {
            return;
        }
        let me = self.clone();
        monoio::spawn(async move {
            monoio::time::sleep(me.period).await;
            me.flush();
        });
    }

    /// Sends what accumulated (if anything) and starts a new period.
    pub fn flush(&self) {
        self.scheduled.set(false);
        let mut p = self.pending.borrow_mut();
        if p.gateways.iter().all(GatewayTraffic::is_empty)
            && p.direct == DirectCounts::default()
            && p.tls == TlsCounts::default()
            && p.pool == PoolCounts::default()
        {
            return;
        }
        let gateways = p.gateways.iter_mut().map(std::mem::take).collect();
        let direct = std::mem::take(&mut p.direct);
        let tls = std::mem::take(&mut p.tls);
        let pool = std::mem::take(&mut p.pool);
        let _ = self.tx.try_send(Feedback::Report {
            worker: self.worker,
            generation: self.generation,
            gateways,
            direct,
            tls,
            pool,
        });
    }
}
