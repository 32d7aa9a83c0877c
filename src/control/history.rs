//! What the control plane remembers for the status page, `/metrics` and the
//! support bundle: a bounded ring of latency samples per gateway, the recent
//! gateway switches, and the traffic counters workers report.
//!
//! Everything here lives on the control thread; workers only send their
//! per-period figures over the feedback channel (no shared state, no locks).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::upstream::feedback::{DirectCounts, GatewayTraffic, PoolCounts, TlsCounts};

/// How far back the latency plots reach.
pub const SAMPLE_SPAN: Duration = Duration::from_secs(30 * 60);
/// Samples kept per gateway at most, whatever the probe interval.
pub const MAX_SAMPLES: usize = 720;
/// Gateway switches kept.
pub const MAX_SWITCHES: usize = 32;

/// One probe result: when, and the latency in milliseconds (`None`: failed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub ms: Option<f64>,
}

/// One change of the selected gateway, for the status output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchRecord {
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Human-readable reason.
    pub reason: String,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `text` with every `gateway N` (an index, as the ranking prints it)
/// replaced by `gateway NAME`.
pub fn name_gateways(text: &str, name: impl Fn(usize) -> String) -> String {
    const W: &str = "gateway ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(W) {
        out.push_str(&rest[..at + W.len()]);
        rest = &rest[at + W.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(i) => out.push_str(&name(i)),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// The latency rings and the switch history.
#[derive(Debug)]
pub struct History {
    samples: Vec<VecDeque<Sample>>,
    switches: VecDeque<SwitchRecord>,
    /// Switches since start (the ring forgets old ones).
    pub switch_count: u64,
}

impl History {
    pub fn new(gateways: usize) -> History {
        History {
            samples: vec![VecDeque::new(); gateways],
            switches: VecDeque::new(),
            switch_count: 0,
        }
    }

    /// Records a probe result for gateway `gw` at `now`, forgetting samples
    /// older than [`SAMPLE_SPAN`] and beyond [`MAX_SAMPLES`].
    pub fn sample(&mut self, gw: usize, latency: Option<Duration>, now: SystemTime) {
        let Some(ring) = self.samples.get_mut(gw) else { return };
        let at = unix(now);
        ring.push_back(Sample {
            at,
            ms: latency.map(|d| d.as_secs_f64() * 1e3),
        });
        let oldest = at - SAMPLE_SPAN.as_secs_f64();
        while ring.len() > MAX_SAMPLES || ring.front().is_some_and(|s| s.at < oldest) {
            ring.pop_front();
        }
    }

    /// The samples of gateway `gw`, oldest first.
    /// Follows a change of the gateway list (see `Ranker::remap`).
    pub fn remap(&mut self, old_of_new: &[Option<usize>]) {
        let mut old: Vec<VecDeque<Sample>> = std::mem::take(&mut self.samples);
        self.samples = old_of_new
            .iter()
            .map(|o| o.and_then(|i| old.get_mut(i).map(std::mem::take)).unwrap_or_default())
            .collect();
    }

    pub fn samples(&self, gw: usize) -> impl Iterator<Item = &Sample> {
        self.samples.get(gw).into_iter().flatten()
    }

    pub fn switched(&mut self, rec: SwitchRecord) {
        self.switch_count += 1;
        self.switches.push_back(rec);
        while self.switches.len() > MAX_SWITCHES {
            self.switches.pop_front();
        }
    }

    /// Recent switches, newest first.
    pub fn switches(&self) -> Vec<SwitchRecord> {
        self.switches.iter().rev().cloned().collect()
    }

    /// A switch record stamped `now`.
    pub fn record(from: Option<String>, to: Option<String>, reason: String, now: SystemTime) -> SwitchRecord {
        SwitchRecord {
            at: unix(now),
            from,
            to,
            reason,
        }
    }
}

/// Traffic through one gateway since start, summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GatewayCounters {
    pub requests: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Tunnels opened (TCP + TLS handshake completed).
    pub tunnels_opened: u64,
    /// Tunnels that could not be opened.
    pub tunnel_failures: u64,
}

/// One worker's figures since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkerCounters {
    pub worker: usize,
    /// Requests through gateways.
    pub requests: u64,
    /// Requests handled without a gateway (DIRECT or refused).
    pub without_gateway: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub pool: PoolCounts,
    pub tls: TlsCounts,
}

/// Counters since start (`Status::counters`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Per gateway, in configuration order.
    pub gateways: Vec<GatewayCounters>,
    /// Per worker, in worker order.
    pub workers: Vec<WorkerCounters>,
    pub pool: PoolCounts,
    /// Changes of the selected gateway since start.
    pub switches: u64,
}

impl Counters {
    pub fn new(gateways: usize, workers: usize) -> Counters {
        Counters {
            gateways: vec![GatewayCounters::default(); gateways],
            workers: (0..workers)
                .map(|worker| WorkerCounters {
                    worker,
                    ..WorkerCounters::default()
                })
                .collect(),
            pool: PoolCounts::default(),
            switches: 0,
        }
    }

    /// Follows a change of the gateway list (see `Ranker::remap`).
    pub fn remap(&mut self, old_of_new: &[Option<usize>]) {
        let old = std::mem::take(&mut self.gateways);
        self.gateways = old_of_new
            .iter()
            .map(|o| o.and_then(|i| old.get(i).cloned()).unwrap_or_default())
            .collect();
    }

    /// Adds one worker report.
    pub fn merge(
        &mut self,
        worker: usize,
        gateways: &[GatewayTraffic],
        direct: DirectCounts,
        tls: TlsCounts,
        pool: PoolCounts,
    ) {
        let mut requests = 0;
        let (mut up, mut down) = (0u64, 0u64);
        for (c, g) in self.gateways.iter_mut().zip(gateways) {
            c.requests += g.requests;
            c.bytes_up = c.bytes_up.saturating_add(g.bytes_up);
            c.bytes_down = c.bytes_down.saturating_add(g.bytes_down);
            c.tunnels_opened += g.ok;
            c.tunnel_failures += g.failed;
            requests += g.requests;
            up = up.saturating_add(g.bytes_up);
            down = down.saturating_add(g.bytes_down);
        }
        self.pool.hits += pool.hits;
        self.pool.misses += pool.misses;
        if self.workers.len() <= worker {
            let n = self.workers.len();
            self.workers.extend((n..=worker).map(|worker| WorkerCounters {
                worker,
                ..WorkerCounters::default()
            }));
        }
        let w = &mut self.workers[worker];
        w.requests += requests;
        w.without_gateway += direct.on_premise + direct.fail_open + direct.fail_closed + direct.refused_untrusted;
        w.bytes_up = w.bytes_up.saturating_add(up);
        w.bytes_down = w.bytes_down.saturating_add(down);
        w.pool.hits += pool.hits;
        w.pool.misses += pool.misses;
        w.tls.handshakes += tls.handshakes;
        w.tls.resumed += tls.resumed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_follows_gateways_by_their_old_index() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = History::new(2);
        h.sample(0, Some(Duration::from_millis(5)), t0);
        h.sample(1, None, t0);
        h.sample(1, None, t0);
        h.remap(&[None, Some(1), Some(0)]);
        assert_eq!(h.samples(0).count(), 0);
        assert_eq!(h.samples(1).count(), 2);
        assert_eq!(h.samples(2).count(), 1);
        let mut c = Counters::new(2, 1);
        c.gateways[0].requests = 7;
        c.gateways[1].requests = 9;
        c.remap(&[Some(1), None]);
        assert_eq!(c.gateways.len(), 2);
        assert_eq!((c.gateways[0].requests, c.gateways[1].requests), (9, 0));
    }

    #[test]
    fn samples_are_bounded_by_age_and_count() {
        let mut h = History::new(2);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // One a second for an hour: only the last 30 minutes stay, capped.
        for i in 0..3600u64 {
            h.sample(0, Some(Duration::from_millis(i % 50)), t0 + Duration::from_secs(i));
        }
        let s: Vec<_> = h.samples(0).collect();
        assert_eq!(s.len(), MAX_SAMPLES);
        assert_eq!(s.last().unwrap().at, unix(t0 + Duration::from_secs(3599)));
        // Sparse samples: the age bound applies.
        for i in 0..100u64 {
            h.sample(1, None, t0 + Duration::from_secs(i * 60));
        }
        let s: Vec<_> = h.samples(1).collect();
        assert_eq!(s.len(), 31, "30 minutes of one-a-minute samples, both ends included");
        assert!(s.iter().all(|x| x.ms.is_none()));
        // Unknown gateways are ignored.
        h.sample(7, None, t0);
        assert_eq!(h.samples(7).count(), 0);
    }

    #[test]
    fn switch_text_names_gateways() {
        let names = ["gw-a", "gw-b"];
        let n = |i: usize| names.get(i).map_or_else(|| format!("#{i}"), |s| s.to_string());
        assert_eq!(
            name_gateways("gateway 0 failed its keep-alive probe: switched to gateway 1", n),
            "gateway gw-a failed its keep-alive probe: switched to gateway gw-b"
        );
        assert_eq!(
            name_gateways("no gateway available; gateway 12", n),
            "no gateway available; gateway #12"
        );
    }

    #[test]
    fn switches_newest_first_and_bounded() {
        let mut h = History::new(1);
        for i in 0..40 {
            h.switched(History::record(
                None,
                Some(format!("g{i}")),
                format!("r{i}"),
                SystemTime::now(),
            ));
        }
        let s = h.switches();
        assert_eq!(s.len(), MAX_SWITCHES);
        assert_eq!(s[0].to.as_deref(), Some("g39"));
        assert_eq!(h.switch_count, 40);
    }

    #[test]
    fn counters_sum_per_gateway_and_per_worker() {
        let mut c = Counters::new(2, 2);
        let mut g = vec![GatewayTraffic::new(), GatewayTraffic::new()];
        g[1].requests = 3;
        g[1].bytes_up = 10;
        g[1].bytes_down = 100;
        g[1].ok = 2;
        g[0].failed = 1;
        let direct = DirectCounts {
            fail_open: 2,
            ..DirectCounts::default()
        };
        let tls = TlsCounts {
            handshakes: 2,
            resumed: 1,
        };
        let pool = PoolCounts { hits: 2, misses: 1 };
        c.merge(1, &g, direct, tls, pool);
        c.merge(3, &g, DirectCounts::default(), TlsCounts::default(), pool);
        assert_eq!(c.gateways[1].requests, 6);
        assert_eq!(c.gateways[1].bytes_down, 200);
        assert_eq!(c.gateways[1].tunnels_opened, 4);
        assert_eq!(c.gateways[0].tunnel_failures, 2);
        assert_eq!(c.pool, PoolCounts { hits: 4, misses: 2 });
        assert_eq!(c.workers.len(), 4, "a worker index beyond the count grows the list");
        assert_eq!(c.workers[1].requests, 3);
        assert_eq!(c.workers[1].without_gateway, 2);
        assert_eq!(c.workers[1].tls, tls);
        assert_eq!(c.workers[3].bytes_up, 10);
        assert_eq!(c.workers[0], WorkerCounters::default());
    }
}
