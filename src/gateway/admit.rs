//! Admission control for one gateway worker: how many connections it holds,
//! how many TLS handshakes it runs at once, how many tunnels each identity
//! has open, and the refusal counts it logs once per interval.
//!
//! Everything here is per worker (`Rc`, `Cell`, `RefCell`): the limits cost
//! no lock and no atomic on the data path. A limit of N therefore allows up
//! to N × workers for the whole gateway; SO_REUSEPORT spreads connections
//! over the workers by a hash of the client's address and port, so one
//! client's tunnels land on every worker.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use msc_io::signal::Signal;

use crate::config::gateway::GatewayLimits;

/// How often the refusal counts are logged (per worker).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Refusals logged one by one (with their reason) at the start of each
/// interval; the rest are only counted (and logged one by one at debug).
const INFO_BURST: u32 = 5;

/// Why a connection was closed before it became a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The worker already holds `limits.max_connections` connections, none
    /// of them still waiting for its ClientHello.
    ConnectionCap,
    /// Waiting for its ClientHello when the connection cap was reached: the
    /// oldest such connection makes room for a new one.
    Evicted,
    /// Nothing arrived within `timeouts.first_byte`.
    Silent,
    /// The ClientHello record started but did not complete within `timeouts.first_byte`.
    StalledHello,
    /// The first bytes are not a TLS handshake record.
    NotTls,
    /// The peer closed (or reset) before the handshake completed.
    Closed,
    /// No handshake slot freed up before `timeouts.handshake`.
    NoSlot,
    /// The handshake did not complete within `timeouts.handshake`.
    Timeout,
    /// Missing, expired, or foreign client certificate.
    BadCertificate,
    /// Any other TLS failure (protocol, alert from the client).
    Tls,
    /// The identity already has `limits.max_tunnels_per_identity` tunnels here.
    TunnelCap,
}

impl Refusal {
    const ALL: [Refusal; 11] = [
        Refusal::ConnectionCap,
        Refusal::Evicted,
        Refusal::Silent,
        Refusal::StalledHello,
        Refusal::NotTls,
        Refusal::Closed,
        Refusal::NoSlot,
        Refusal::Timeout,
        Refusal::BadCertificate,
        Refusal::Tls,
        Refusal::TunnelCap,
    ];

    /// The label in the periodic summary.
    pub fn brief(self) -> &'static str {
        match self {
            Refusal::ConnectionCap => "over the connection cap",
            Refusal::Evicted => "evicted before their ClientHello",
            Refusal::Silent => "timed out waiting for first bytes",
            Refusal::StalledHello => "stalled ClientHello",
            Refusal::NotTls => "not TLS",
            Refusal::Closed => "closed by the client",
            Refusal::NoSlot => "no handshake slot",
            Refusal::Timeout => "handshake timed out",
            Refusal::BadCertificate => "bad certificate",
            Refusal::Tls => "other TLS error",
            Refusal::TunnelCap => "over the per-identity tunnel cap",
        }
    }

    /// Classifies a failed handshake.
    pub fn of(e: &msc_tls::TlsError) -> Refusal {
        use msc_tls::TlsError;
        match e {
            TlsError::Timeout => Refusal::Timeout,
            TlsError::Eof | TlsError::Io(_) => Refusal::Closed,
            TlsError::Tls(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
                Refusal::BadCertificate
            }
            _ => Refusal::Tls,
        }
    }
}

/// One worker's limits and counters.
#[derive(Debug)]
pub struct Admission {
    limits: GatewayLimits,
    connections: Rc<Cell<usize>>,
    /// Connections still waiting for their ClientHello, oldest first; an
    /// entry is live while its connection holds the other reference.
    pre_hello: RefCell<VecDeque<Rc<Signal>>>,
    pre_hello_live: Rc<Cell<usize>>,
    slots: Rc<Slots>,
    tunnels: Rc<RefCell<HashMap<Arc<str>, usize>>>,
    report: Rc<RefCell<Report>>,
}

impl Admission {
    pub fn new(limits: GatewayLimits) -> Admission {
        Admission {
            limits,
            connections: Rc::default(),
            pre_hello: RefCell::default(),
            pre_hello_live: Rc::default(),
            slots: Rc::new(Slots {
                free: Cell::new(limits.max_handshakes),
                waiters: RefCell::default(),
            }),
            tunnels: Rc::default(),
            report: Rc::default(),
        }
    }

    /// Counts a new connection. At the cap, the oldest connection still
    /// waiting for its ClientHello is told to close and makes room (the
    /// count may exceed the cap until it has); `None` (close the new one
    /// now) if every connection is past its ClientHello.
    ///
    /// Silent and stalled connections are cheap to drop and are what a
    /// flood consists of; a legitimate client sends its ClientHello within
    /// one round trip, so it is only evicted if a whole cap's worth of
    /// connections arrives within that round trip.
    pub fn connection(&self) -> Option<ConnectionGuard> {
        let n = self.connections.get();
        if n >= self.limits.max_connections && !self.evict_oldest_pre_hello() {
            return None;
        }
        self.connections.set(n + 1);
        Some(ConnectionGuard(self.connections.clone()))
    }

    fn evict_oldest_pre_hello(&self) -> bool {
        let mut q = self.pre_hello.borrow_mut();
        while let Some(w) = q.pop_front() {
            if Rc::strong_count(&w) > 1 {
                w.fire();
                return true;
            }
        }
        false
    }

    /// Marks a connection as waiting for its ClientHello until the guard is
    /// dropped; [`PreHello::evicted`] completes if it must make room.
    pub fn pre_hello(&self) -> PreHello {
        let sig = Rc::new(Signal::new());
        let mut q = self.pre_hello.borrow_mut();
        // Entries of connections that moved on stay until an eviction pops
        // them; prune them before they outnumber the live ones.
        if q.len() >= 2 * self.pre_hello_live.get() + 64 {
            q.retain(|w| Rc::strong_count(w) > 1);
        }
        q.push_back(sig.clone());
        self.pre_hello_live.set(self.pre_hello_live.get() + 1);
        PreHello {
            sig,
            live: self.pre_hello_live.clone(),
        }
    }

    /// Connections this worker holds now.
    pub fn connections(&self) -> usize {
        self.connections.get()
    }

    /// Waits (up to `wait`, first come first served) for a handshake slot.
    pub async fn handshake_slot(&self, wait: Duration) -> Option<SlotGuard> {
        Slots::acquire(&self.slots, wait).await
    }

    /// Counts a tunnel for `identity`; `None` over the per-identity cap.
    /// Counts a tunnel for `identity` (the principal the access log shows,
    /// shared, so counting allocates nothing), or `None` at the cap.
    pub fn tunnel(&self, identity: &Arc<str>) -> Option<TunnelGuard> {
        let mut map = self.tunnels.borrow_mut();
        let n = map.entry(identity.clone()).or_insert(0);
        if *n >= self.limits.max_tunnels_per_identity {
            return None;
        }
        *n += 1;
        Some(TunnelGuard {
            map: self.tunnels.clone(),
            identity: identity.clone(),
        })
    }

    pub fn max_tunnels_per_identity(&self) -> usize {
        self.limits.max_tunnels_per_identity
    }

    /// Records a refusal: the first few of an interval are logged with
    /// their reason at info, every one at debug, and the counts once per
    /// [`REPORT_INTERVAL`].
    pub fn refused(&self, peer: SocketAddr, why: Refusal, detail: &dyn fmt::Display) {
        let start_ticker = {
            let mut r = self.report.borrow_mut();
            r.counts[why as usize] += 1;
            let loud = r.logged < INFO_BURST;
            if loud {
                r.logged += 1;
                tracing::info!("TLS handshake from {peer} refused ({}): {detail}", why.brief());
            } else {
                tracing::debug!("TLS handshake from {peer} refused ({}): {detail}", why.brief());
            }
            !std::mem::replace(&mut r.ticking, true)
        };
        if start_ticker {
            monoio::spawn(report_loop(self.report.clone()));
        }
    }
}

/// Per-interval refusal counts.
#[derive(Debug, Default)]
struct Report {
    counts: [u64; Refusal::ALL.len()],
    logged: u32,
    ticking: bool,
}

impl Report {
    /// The summary line for the counts so far (None if there were none),
    /// and a fresh interval.
    fn take(&mut self) -> Option<String> {
        let counts = std::mem::take(&mut self.counts);
        self.logged = 0;
        summary(&counts)
    }
}

fn summary(counts: &[u64; Refusal::ALL.len()]) -> Option<String> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let parts: Vec<String> = Refusal::ALL
        .iter()
        .filter(|r| counts[**r as usize] > 0)
        .map(|r| format!("{} {}", counts[*r as usize], r.brief()))
        .collect();
    Some(format!(
        "{total} TLS handshakes refused in the last {}s ({})",
        REPORT_INTERVAL.as_secs(),
        parts.join(", ")
    ))
}

/// Logs the counts every interval while there are refusals; stops after a
/// quiet interval (the next refusal starts it again).
async fn report_loop(report: Rc<RefCell<Report>>) {
    loop {
        monoio::time::sleep(REPORT_INTERVAL).await;
        let mut r = report.borrow_mut();
        match r.take() {
            Some(line) => tracing::info!("{line}"),
            None => {
                r.ticking = false;
                return;
            }
        }
    }
}

/// Releases a connection count.
#[derive(Debug)]
pub struct ConnectionGuard(Rc<Cell<usize>>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A connection waiting for its ClientHello (see [`Admission::pre_hello`]).
#[derive(Debug)]
pub struct PreHello {
    sig: Rc<Signal>,
    live: Rc<Cell<usize>>,
}

impl PreHello {
    /// Completes when this connection must close to make room.
    pub async fn evicted(&self) {
        self.sig.wait().await;
    }
}

impl Drop for PreHello {
    fn drop(&mut self) {
        self.live.set(self.live.get() - 1);
    }
}

/// Releases a tunnel count.
#[derive(Debug)]
pub struct TunnelGuard {
    map: Rc<RefCell<HashMap<Arc<str>, usize>>>,
    identity: Arc<str>,
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        let mut map = self.map.borrow_mut();
        if let Some(n) = map.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.identity);
            }
        }
    }
}

/// A counting semaphore with a FIFO of waiters; a released slot is handed
/// straight to the oldest live waiter.
#[derive(Debug)]
struct Slots {
    free: Cell<usize>,
    /// A waiter is live while it holds the other reference to its signal.
    waiters: RefCell<VecDeque<Rc<Signal>>>,
}

impl Slots {
    async fn acquire(this: &Rc<Slots>, wait: Duration) -> Option<SlotGuard> {
        // A release hands its slot to a live waiter before it counts it as
        // free, so a free slot means nobody is queued ahead of us.
        if this.free.get() > 0 {
            this.free.set(this.free.get() - 1);
            return Some(SlotGuard(this.clone()));
        }
        let sig = Rc::new(Signal::new());
        {
            let mut q = this.waiters.borrow_mut();
            // Waiters that gave up leave a dead entry; prune them before the
            // queue grows past what can be live.
            if q.len() >= 1024 && q.len().is_power_of_two() {
                q.retain(|w| Rc::strong_count(w) > 1);
            }
            q.push_back(sig.clone());
        }
        let mut waiting = Waiting {
            sig,
            slots: this.clone(),
            taken: false,
        };
        let _ = monoio::time::timeout(wait, waiting.sig.wait()).await;
        if waiting.sig.is_fired() {
            waiting.taken = true;
            return Some(SlotGuard(this.clone()));
        }
        None
    }

    fn release(&self) {
        let next = {
            let mut q = self.waiters.borrow_mut();
            loop {
                match q.pop_front() {
                    Some(w) if Rc::strong_count(&w) > 1 => break Some(w),
                    Some(_) => {}
                    None => break None,
                }
            }
        };
        match next {
            Some(w) => w.fire(),
            None => self.free.set(self.free.get() + 1),
        }
    }
}

/// A queued wait for a slot. Dropped after the slot was handed over but
/// before it was taken (a timeout at the same moment, or the connection
/// task dropped), it passes the slot on.
struct Waiting {
    sig: Rc<Signal>,
    slots: Rc<Slots>,
    taken: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.sig.is_fired() && !self.taken {
            self.slots.release();
        }
    }
}

/// A handshake slot, released on drop.
#[derive(Debug)]
pub struct SlotGuard(Rc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn limits(conns: usize, handshakes: usize, tunnels: usize) -> GatewayLimits {
        GatewayLimits {
            max_connections: conns,
            max_handshakes: handshakes,
            max_tunnels_per_identity: tunnels,
        }
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn slots_are_handed_to_waiters_in_order_and_a_timeout_gives_up() {
        let a = Admission::new(limits(10, 1, 1));
        let held = a.handshake_slot(Duration::from_millis(1)).await.unwrap();
        // Full: a short wait gives up, and leaves nothing behind.
        assert!(a.handshake_slot(Duration::from_millis(10)).await.is_none());
        let a = Rc::new(a);
        let (a1, a2) = (a.clone(), a.clone());
        let first =
            monoio::spawn(async move { a1.handshake_slot(Duration::from_secs(5)).await.map(|_| Instant::now()) });
        let second =
            monoio::spawn(async move { a2.handshake_slot(Duration::from_secs(5)).await.map(|_| Instant::now()) });
        monoio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let (t1, t2) = (first.await.unwrap(), second.await.unwrap());
        assert!(t1 <= t2);
        // Both released: the slot is free again.
        assert!(a.handshake_slot(Duration::from_millis(1)).await.is_some());
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn at_the_cap_the_oldest_connection_waiting_for_its_hello_makes_room() {
        let a = Admission::new(limits(2, 1, 1));
        let c1 = a.connection().unwrap();
        let w1 = a.pre_hello();
        let c2 = a.connection().unwrap();
        let w2 = a.pre_hello();
        // Full: the third evicts the first, not the second.
        let c3 = a.connection().unwrap();
        assert!(w1.sig.is_fired() && !w2.sig.is_fired());
        w1.evicted().await;
        drop((w1, c1));
        // The second moved past its ClientHello: nothing left to evict.
        drop(w2);
        assert!(a.connection().is_none());
        drop((c2, c3));
        assert_eq!(a.connections(), 0);
    }

    #[test]
    fn the_tunnel_cap_counts_per_identity() {
        let a = Admission::new(limits(10, 1, 2));
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let t1 = a.tunnel(&alice).unwrap();
        let _t2 = a.tunnel(&alice).unwrap();
        assert!(a.tunnel(&alice).is_none());
        assert!(a.tunnel(&bob).is_some());
        drop(t1);
        assert!(a.tunnel(&alice).is_some());
    }

    #[test]
    fn summary_lists_nonzero_counts_in_order() {
        let mut c = [0u64; Refusal::ALL.len()];
        assert_eq!(summary(&c), None);
        c[Refusal::BadCertificate as usize] = 2;
        c[Refusal::Silent as usize] = 7;
        assert_eq!(
            summary(&c).unwrap(),
            "9 TLS handshakes refused in the last 10s (7 timed out waiting for first bytes, 2 bad certificate)"
        );
    }
}
