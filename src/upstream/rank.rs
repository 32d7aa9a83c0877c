//! Gateway ranking: latency windows, reputation, damping, hysteresis and fail-over.
//!
//! A [`Ranker`] is a deterministic state machine over the evidence the control
//! plane collects about each gateway: probe results, keep-alive results, and
//! the per-worker tunnel-setup histograms and failure counters merged on each
//! tick. It answers which gateway is *current* (the choice for slot 0), the
//! full rank order, the per-slot fail-over lists, and a status view.
//!
//! It must never read the clock, sleep, do I/O, spawn, lock or draw random
//! numbers: every method that depends on time takes `now` (like linkerd's
//! `Ewma::get_at(now)`), so the same calls always give the same answers and
//! tests drive it with a fake clock. Jitter, timers and publishing the routing
//! table belong to the caller.
//!
//! The model, every parameter, the formulas and the availability state
//! machine are described in `docs/ranking.md`.
//!
//! # Thread Safety
//! `Ranker` is `Send` but meant to be owned by the control-plane thread alone;
//! workers see only the immutable routing snapshots built from [`Ranker::slots`].

use std::cmp::Ordering;
use std::fmt;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Reputation is clamped to at least this in the score, so a gateway with no
/// successes gets a large but finite score.
const MIN_SCORE_REPUTATION: f64 = 0.01;

/// Tuning of the ranking. [`Default`] gives the documented defaults.
///
/// [`Ranker::new`] never fails: it replaces every invalid field by its default
/// (see [`RankConfig::validate`] to reject a bad configuration at load time).
#[derive(Debug, Clone, PartialEq)]
pub struct RankConfig {
    /// Length of the sliding latency window (default 60 s).
    pub window: Duration,
    /// Number of slices the window is cut into (default 6, i.e. 10 s each).
    /// The window holds between `(slices - 1) / slices * window` and `window`
    /// of history: a whole slice expires at once.
    pub window_slices: u32,
    /// hdrhistogram precision, 1..=5 (default 3: 0.1 %).
    pub significant_figures: u8,
    /// Largest latency tracked; larger values are clamped to it (default 60 s).
    pub max_latency: Duration,
    /// Latency quantile the score is based on, 0..=1 (default 0.9).
    pub quantile: f64,
    /// Extra cost of a failed attempt in the score, `P` in
    /// `score = L / r + (1 - r) / r * P` (default 20 ms).
    pub failure_penalty: Duration,
    /// A challenger must score below `current * (1 - rel_margin)` (default 0.2).
    pub rel_margin: f64,
    /// ... and below `current - abs_margin` (default 5 ms).
    pub abs_margin: Duration,
    /// ... in this many consecutive [`Ranker::evaluate`] rounds (default 3).
    pub switch_rounds: u32,
    /// Half-life of the evidence behind the reputation (default 30 s).
    pub reputation_half_life: Duration,
    /// Weight the current reputation keeps however long a gateway was silent,
    /// so one sample after a pause cannot swing it (default 10 samples: one
    /// failure costs a healthy gateway at most ~9 %, within `rel_margin`).
    /// Also the weight of the prior (reputation 1.0) at start-up.
    pub reputation_min_weight: f64,
    /// An available gateway whose reputation falls below this becomes
    /// unavailable (default 0.7).
    pub down_threshold: f64,
    /// An unavailable gateway becomes available again only when its reputation
    /// rises above this (default 0.9). Must be above `down_threshold`.
    pub up_threshold: f64,
    /// A traffic merge whose failures are at least this fraction of its
    /// attempts counts as "the data path reports the gateway failing"
    /// (default 0.5). A single [`SampleOutcome::Failed`] from
    /// [`Evidence::Traffic`] always does.
    pub traffic_failover_ratio: f64,
    /// An unavailable gateway is also re-admitted after this many
    /// consecutive successful samples (default 3), without waiting for its
    /// reputation to climb above `up_threshold`. Each time it falls again
    /// within `window` of a re-admission, the count doubles (up to 32×):
    /// the damping against flapping.
    pub readmit_successes: u32,
    /// First re-probe of a gateway after a failure, and the spacing of the
    /// probes that count towards its re-admission (default 1 s; never more
    /// than the caller's probe interval). See [`Ranker::probe_delay`].
    pub recovery_probe_base: Duration,
    /// The re-probe delay doubles after each further failure up to this
    /// (default 4 s; never more than the caller's probe interval).
    pub recovery_probe_max: Duration,
    /// The data path's tunnel set-up latency counts in the score once its
    /// window holds at least this many set-ups (default 10).
    pub traffic_min_samples: u64,
}

impl Default for RankConfig {
    fn default() -> Self {
        RankConfig {
            window: Duration::from_secs(60),
            window_slices: 6,
            significant_figures: 3,
            max_latency: Duration::from_secs(60),
            quantile: 0.9,
            failure_penalty: Duration::from_millis(20),
            rel_margin: 0.2,
            abs_margin: Duration::from_millis(5),
            switch_rounds: 3,
            reputation_half_life: Duration::from_secs(30),
            reputation_min_weight: 10.0,
            down_threshold: 0.7,
            up_threshold: 0.9,
            traffic_failover_ratio: 0.5,
            readmit_successes: 3,
            recovery_probe_base: Duration::from_secs(1),
            recovery_probe_max: Duration::from_secs(4),
            traffic_min_samples: 10,
        }
    }
}

/// A [`RankConfig`] field that is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct RankConfigError {
    /// The field's name.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Longest latency window and largest trackable latency accepted.
const MAX_SPAN: Duration = Duration::from_secs(3600);

impl RankConfig {
    /// Checks every field; the first invalid one is reported.
    pub fn validate(&self) -> Result<(), RankConfigError> {
        self.problems().into_iter().next().map_or(Ok(()), Err)
    }

    fn problems(&self) -> Vec<RankConfigError> {
        let mut out = Vec::new();
        let mut bad = |ok: bool, key: &'static str, reason: &'static str| {
            if !ok {
                out.push(RankConfigError { key, reason });
            }
        };
        bad(self.window <= MAX_SPAN, "window", "must be at most one hour");
        bad(self.window_slices >= 1, "window_slices", "must be at least 1");
        bad(
            self.window_slices >= 1 && self.window / self.window_slices.max(1) >= Duration::from_millis(1),
            "window_slices",
            "each slice (window / window_slices) must be at least 1 ms",
        );
        bad(
            (1..=5).contains(&self.significant_figures),
            "significant_figures",
            "must be 1 to 5",
        );
        bad(
            self.max_latency >= Duration::from_millis(1) && self.max_latency <= MAX_SPAN,
            "max_latency",
            "must be between 1 ms and one hour",
        );
        bad(
            (0.0..=1.0).contains(&self.quantile),
            "quantile",
            "must be between 0 and 1",
        );
        bad(
            self.failure_penalty <= MAX_SPAN,
            "failure_penalty",
            "must be at most one hour",
        );
        bad(
            (0.0..1.0).contains(&self.rel_margin),
            "rel_margin",
            "must be at least 0 and below 1",
        );
        bad(self.abs_margin <= MAX_SPAN, "abs_margin", "must be at most one hour");
        bad(self.switch_rounds >= 1, "switch_rounds", "must be at least 1");
        bad(
            self.reputation_half_life >= Duration::from_millis(1),
            "reputation_half_life",
            "must be at least 1 ms",
        );
        bad(
            self.reputation_min_weight.is_finite() && self.reputation_min_weight >= 0.0,
            "reputation_min_weight",
            "must be a finite number, at least 0",
        );
        bad(
            self.down_threshold > 0.0 && self.down_threshold < 1.0,
            "down_threshold",
            "must be above 0 and below 1",
        );
        bad(
            self.up_threshold > self.down_threshold && self.up_threshold < 1.0,
            "up_threshold",
            "must be above down_threshold and below 1",
        );
        bad(
            self.traffic_failover_ratio > 0.0 && self.traffic_failover_ratio <= 1.0,
            "traffic_failover_ratio",
            "must be above 0 and at most 1",
        );
        bad(
            (1..=1000).contains(&self.readmit_successes),
            "readmit_successes",
            "must be 1 to 1000",
        );
        bad(
            self.recovery_probe_base >= Duration::from_millis(1) && self.recovery_probe_base <= MAX_SPAN,
            "recovery_probe_base",
            "must be between 1 ms and one hour",
        );
        bad(
            self.recovery_probe_max >= self.recovery_probe_base && self.recovery_probe_max <= MAX_SPAN,
            "recovery_probe_max",
            "must be at least recovery_probe_base (1s by default) and at most one hour",
        );
        out
    }

    /// This configuration with every invalid field replaced by its default
    /// (both thresholds together, since they are only valid as a pair).
    fn sanitized(&self) -> RankConfig {
        let mut c = self.clone();
        let d = RankConfig::default();
        for p in self.problems() {
            match p.key {
                "window" | "window_slices" => {
                    c.window = d.window;
                    c.window_slices = d.window_slices;
                }
                "significant_figures" => c.significant_figures = d.significant_figures,
                "max_latency" => c.max_latency = d.max_latency,
                "quantile" => c.quantile = d.quantile,
                "failure_penalty" => c.failure_penalty = d.failure_penalty,
                "rel_margin" => c.rel_margin = d.rel_margin,
                "abs_margin" => c.abs_margin = d.abs_margin,
                "switch_rounds" => c.switch_rounds = d.switch_rounds,
                "reputation_half_life" => c.reputation_half_life = d.reputation_half_life,
                "reputation_min_weight" => c.reputation_min_weight = d.reputation_min_weight,
                "down_threshold" | "up_threshold" => {
                    c.down_threshold = d.down_threshold;
                    c.up_threshold = d.up_threshold;
                }
                "traffic_failover_ratio" => c.traffic_failover_ratio = d.traffic_failover_ratio,
                "readmit_successes" => c.readmit_successes = d.readmit_successes,
                "recovery_probe_base" | "recovery_probe_max" => {
                    c.recovery_probe_base = d.recovery_probe_base;
                    c.recovery_probe_max = d.recovery_probe_max;
                }
                _ => {}
            }
        }
        c
    }
}

/// One probe or keep-alive result, or one tunnel setup seen by the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleOutcome {
    /// Succeeded after this long.
    Ok(Duration),
    /// Failed (refused, reset, timed out, handshake or application error).
    Failed,
}

/// Where a sample comes from. Only [`Evidence::KeepAlive`] and
/// [`Evidence::Traffic`] failures trigger immediate fail-over; a failed
/// [`Evidence::Probe`] only lowers the reputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// The periodic full probe (TCP connect + TLS handshake + application round trip).
    Probe,
    /// The keep-alive probe of a gateway in use.
    KeepAlive,
    /// Real traffic, as reported by the workers.
    Traffic,
}

/// Why the current gateway changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SwitchReason {
    /// The default gateway (index 0) at start-up.
    Startup,
    /// A challenger beat the current gateway by both margins for `rounds`
    /// consecutive evaluation rounds. Scores in milliseconds; `from_score_ms`
    /// is `None` when the old gateway had no latency in the window.
    Better {
        rounds: u32,
        from_score_ms: Option<f64>,
        to_score_ms: f64,
    },
    /// The current gateway failed its keep-alive probe, or the data path
    /// reported it failing: immediate fail-over.
    Failed { source: Evidence },
    /// The current gateway's reputation fell below the down threshold.
    Unavailable { reputation: f64, threshold: f64 },
    /// A gateway became usable while none was current, or while the current
    /// one was marked failed.
    Recovered,
    /// A configuration reload removed the current gateway.
    Removed,
}

/// A change of the current gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub from: Option<usize>,
    /// `None`: no gateway is available any more.
    pub to: Option<usize>,
    pub reason: SwitchReason,
    pub at: Instant,
}

/// [`Switch`] for the status output: the time as an age, plus human text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchView {
    pub from: Option<usize>,
    pub to: Option<usize>,
    pub reason: SwitchReason,
    pub text: String,
    /// Milliseconds between the switch and the `now` the view was made at.
    pub ago_ms: f64,
}

impl Switch {
    /// A serialisable view, with the switch's age at `now`.
    pub fn view(&self, now: Instant) -> SwitchView {
        SwitchView {
            from: self.from,
            to: self.to,
            reason: self.reason.clone(),
            text: self.to_string(),
            ago_ms: ms(now.saturating_duration_since(self.at)),
        }
    }
}

struct Gw(Option<usize>);

impl fmt::Display for Gw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(i) => write!(f, "gateway {i}"),
            None => f.write_str("no gateway"),
        }
    }
}

impl fmt::Display for Switch {
    /// Human text, e.g. `gateway 0 failed its keep-alive probe: switched to gateway 2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (from, to) = (Gw(self.from), Gw(self.to));
        match &self.reason {
            SwitchReason::Startup => write!(f, "start-up: {to} is the default"),
            SwitchReason::Better {
                rounds,
                from_score_ms,
                to_score_ms,
            } => {
                write!(
                    f,
                    "{to} beat {from} by the margins for {rounds} rounds (score {to_score_ms:.1} ms vs "
                )?;
                match from_score_ms {
                    Some(s) => write!(f, "{s:.1} ms)"),
                    None => f.write_str("no recent latency)"),
                }
            }
            SwitchReason::Failed { source } => {
                match source {
                    Evidence::KeepAlive => write!(f, "{from} failed its keep-alive probe")?,
                    Evidence::Traffic => write!(f, "the data path reported {from} failing")?,
                    Evidence::Probe => write!(f, "{from} failed a probe")?,
                }
                write!(f, ": switched to {to}")
            }
            SwitchReason::Unavailable { reputation, threshold } => {
                write!(
                    f,
                    "{from} became unavailable (reputation {reputation:.2} below {threshold:.2}): switched to {to}"
                )
            }
            SwitchReason::Removed => write!(
                f,
                "the configuration no longer lists the selected gateway: switched to {to}"
            ),
            SwitchReason::Recovered => match self.from {
                None => write!(f, "{to} became available while none was"),
                Some(_) => write!(f, "{to} became usable while {from} was marked failed"),
            },
        }
    }
}

/// A gateway's state in the status view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayState {
    /// The current gateway.
    Selected,
    /// Reputation healthy (not necessarily usable at once: see `failed`).
    Available,
    /// Reputation fell below the down threshold and has not yet risen above the up threshold.
    Unavailable,
}

/// One gateway as the status view shows it. Latencies in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayStatus {
    pub index: usize,
    pub state: GatewayState,
    /// Its last keep-alive or traffic report was a failure and no success has
    /// come since: not eligible as current while another gateway is.
    pub failed: bool,
    /// Probe latency quantiles; `None` when the window holds no probe sample.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The data path's tunnel set-up latency (workers' histograms); `None`
    /// when the window holds no set-up.
    pub traffic_p50_ms: Option<f64>,
    pub traffic_p90_ms: Option<f64>,
    /// The latency the score is based on: the slower of the probe quantile
    /// and (with at least `traffic_min_samples` set-ups) the data path's.
    pub latency_ms: Option<f64>,
    /// The ranking score (lower is better); `None` when unmeasured.
    pub score_ms: Option<f64>,
    pub reputation: f64,
    /// Probe and keep-alive latency samples (successes) in the window.
    pub samples: u64,
    /// Data-path tunnel set-ups in the window.
    pub traffic_samples: u64,
    /// Failures in the window.
    pub failures: u64,
    /// Consecutive rounds this gateway has beaten the current one by the margins.
    pub wins: u32,
    /// Consecutive successful samples since its last failure.
    pub ok_streak: u64,
    /// While unavailable: consecutive successes it needs to be re-admitted.
    pub readmit_after: Option<u64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One slice of the sliding window.
struct Slice {
    /// Absolute slice number (time since the ranker's epoch / slice length).
    number: Option<u64>,
    /// Allocated on first use; reset (not freed) when the slice is reused.
    hist: Option<Histogram<u32>>,
    failures: u64,
}

/// A ring of per-slice histograms; the window at `now` is the merge of the
/// slices whose number lies in `(k - slices, k]`, `k` being `now`'s slice.
struct Window {
    slices: Vec<Slice>,
    /// Newest slice number written.
    latest: Option<u64>,
    high_us: u64,
    sigfig: u8,
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The histograms' counts arrays are far too long to print.
        let slices: Vec<_> = self
            .slices
            .iter()
            .map(|s| (s.number, s.hist.as_ref().map_or(0, Histogram::len), s.failures))
            .collect();
        f.debug_struct("Window")
            .field("slices (number, samples, failures)", &slices)
            .field("latest", &self.latest)
            .finish()
    }
}

/// Latency quantiles of a window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    q: f64,
    samples: u64,
}

impl Window {
    fn new(cfg: &RankConfig, sigfig: u8) -> Window {
        let n = usize::try_from(cfg.window_slices).unwrap_or(1).max(1);
        Window {
            slices: (0..n)
                .map(|_| Slice {
                    number: None,
                    hist: None,
                    failures: 0,
                })
                .collect(),
            latest: None,
            high_us: micros(cfg.max_latency).max(2),
            sigfig,
        }
    }

    fn len(&self) -> u64 {
        self.slices.len() as u64
    }

    /// The slice for slice number `k`, emptied if it held an older one; `None`
    /// if `k` is older than the window (a sample from the past).
    fn slice_mut(&mut self, k: u64) -> Option<&mut Slice> {
        let len = self.len();
        if let Some(latest) = self.latest
            && k.saturating_add(len) <= latest
        {
            return None;
        }
        self.latest = Some(self.latest.map_or(k, |l| l.max(k)));
        let idx = usize::try_from(k % len).unwrap_or(0);
        let (high, sigfig) = (self.high_us, self.sigfig);
        let s = &mut self.slices[idx];
        if s.number != Some(k) {
            // Numbers congruent to k modulo len and within the window are k itself,
            // so this slice holds an expired one.
            s.number = Some(k);
            s.failures = 0;
            if let Some(h) = &mut s.hist {
                h.reset();
            }
        }
        if s.hist.is_none() {
            // Bounds are sanitised: 1 <= 2 <= high, sigfig in 1..=5.
            s.hist = Some(Histogram::new_with_bounds(1, high, sigfig).expect("sanitised histogram bounds"));
        }
        Some(s)
    }

    fn record(&mut self, k: u64, us: u64) {
        if let Some(h) = self.slice_mut(k).and_then(|s| s.hist.as_mut()) {
            h.saturating_record(us);
        }
    }

    fn record_hist(&mut self, k: u64, src: &Histogram<u64>) {
        if src.is_empty() {
            return;
        }
        if let Some(h) = self.slice_mut(k).and_then(|s| s.hist.as_mut()) {
            for v in src.iter_recorded() {
                let n = u32::try_from(v.count_at_value()).unwrap_or(u32::MAX);
                h.saturating_record_n(v.value_iterated_to(), n);
            }
        }
    }

    fn fail(&mut self, k: u64, n: u64) {
        if let Some(s) = self.slice_mut(k) {
            s.failures = s.failures.saturating_add(n);
        }
    }

    fn live(&self, k: u64) -> impl Iterator<Item = &Slice> {
        let oldest = k.saturating_sub(self.len() - 1);
        self.slices
            .iter()
            .filter(move |s| s.number.is_some_and(|n| n >= oldest && n <= k))
    }

    fn failures(&self, k: u64) -> u64 {
        self.live(k).map(|s| s.failures).fold(0, u64::saturating_add)
    }

    fn latency(&self, k: u64, quantile: f64) -> Option<Latency> {
        let mut merged: Option<Histogram<u32>> = None;
        for h in self.live(k).filter_map(|s| s.hist.as_ref()).filter(|h| !h.is_empty()) {
            match &mut merged {
                None => merged = Some(h.clone()),
                // Same bounds and precision: the add is a saturating element-wise sum and cannot fail.
                Some(m) => {
                    let _ = m.add(h);
                }
            }
        }
        let m = merged?;
        let at = |q: f64| m.value_at_quantile(q) as f64 / 1e3;
        Some(Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            q: at(quantile),
            samples: m.len(),
        })
    }
}

/// Exponentially decaying success ratio.
///
/// Evidence weight `w` decays by `2^(-dt / half_life)` but never below
/// `min_weight`; a batch of `s` successes and `f` failures then gives
/// `r' = (r * w + s) / (w + s + f)` and `w' = w + s + f`.
#[derive(Debug, Clone, Copy)]
struct Reputation {
    ratio: f64,
    weight: f64,
    at: Instant,
}

impl Reputation {
    fn new(cfg: &RankConfig, now: Instant) -> Reputation {
        Reputation {
            ratio: 1.0,
            weight: cfg.reputation_min_weight,
            at: now,
        }
    }

    fn update(&mut self, successes: u64, failures: u64, now: Instant, cfg: &RankConfig) {
        let (s, f) = (successes as f64, failures as f64);
        if s + f <= 0.0 {
            return;
        }
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let decay = 0.5f64.powf(dt / cfg.reputation_half_life.as_secs_f64());
        let w = (self.weight * decay).max(cfg.reputation_min_weight);
        self.ratio = ((self.ratio * w + s) / (w + s + f)).clamp(0.0, 1.0);
        self.weight = w + s + f;
        self.at = self.at.max(now);
    }
}

#[derive(Debug)]
struct Gateway {
    /// Probe and keep-alive latencies.
    window: Window,
    /// The data path's tunnel set-up latencies (merged worker histograms).
    traffic: Window,
    reputation: Reputation,
    /// Hysteresis state on the reputation.
    available: bool,
    /// Last keep-alive/traffic report failed, no success since.
    failed: bool,
    /// Consecutive evaluation rounds beating the current gateway.
    wins: u32,
    /// Consecutive successes (any source) since the last failure.
    ok_streak: u64,
    /// Consecutive failures (any source) since the last success.
    fail_streak: u32,
    /// Times it fell again within `window` of being re-admitted, in a row:
    /// each doubles the successes the next re-admission needs.
    flaps: u32,
    /// When it was last re-admitted.
    readmitted_at: Option<Instant>,
}

/// The re-admission count doubles at most this many times (32×).
const MAX_FLAP_DOUBLINGS: u32 = 5;

impl Gateway {
    fn new(cfg: &RankConfig, now: Instant) -> Gateway {
        Gateway {
            window: Window::new(cfg, cfg.significant_figures),
            // Workers record at 2 significant figures: more would add memory, not precision.
            traffic: Window::new(cfg, cfg.significant_figures.min(2)),
            reputation: Reputation::new(cfg, now),
            available: true,
            failed: false,
            wins: 0,
            ok_streak: 0,
            fail_streak: 0,
            flaps: 0,
            readmitted_at: None,
        }
    }

    /// Counts outcomes into the streaks: any failure ends a success streak
    /// (and counts as one more failure in a row, however many it held);
    /// successes without a failure extend it. Only single, timely samples
    /// ([`Ranker::record`]) bring successes here: merged worker reports can
    /// be a second old, and successes from before an outage must not
    /// re-admit a gateway after it.
    fn streaks(&mut self, successes: u64, failures: u64) {
        if failures > 0 {
            self.ok_streak = 0;
            self.fail_streak = self.fail_streak.saturating_add(1);
        } else if successes > 0 {
            self.ok_streak = self.ok_streak.saturating_add(successes);
            self.fail_streak = 0;
        }
    }

    /// Consecutive successes an unavailable gateway needs to be re-admitted.
    fn readmit_after(&self, cfg: &RankConfig) -> u64 {
        u64::from(cfg.readmit_successes) << self.flaps.min(MAX_FLAP_DOUBLINGS)
    }

    /// Availability after new evidence: down below `down_threshold`; back
    /// above `up_threshold`, or after `readmit_after` successes in a row.
    /// A gateway re-admitted by its streak starts on probation: its
    /// reputation is raised to `up_threshold` with the least weight, so a
    /// few failures take it out again.
    fn apply_hysteresis(&mut self, cfg: &RankConfig, now: Instant) {
        let r = self.reputation.ratio;
        if self.available && r < cfg.down_threshold {
            self.available = false;
            let flapped = self
                .readmitted_at
                .is_some_and(|t| now.saturating_duration_since(t) < cfg.window);
            self.flaps = if flapped { self.flaps.saturating_add(1) } else { 0 };
        } else if !self.available && (r > cfg.up_threshold || self.ok_streak >= self.readmit_after(cfg)) {
            self.available = true;
            self.readmitted_at = Some(now);
            if r <= cfg.up_threshold {
                self.reputation.ratio = cfg.up_threshold;
                self.reputation.weight = cfg.reputation_min_weight;
            }
        }
    }

    fn eligible(&self) -> bool {
        self.available && !self.failed
    }
}

/// What the ranking needs of a gateway at some `now`.
#[derive(Debug, Clone, Copy)]
struct View {
    /// The probe window's quantiles.
    latency: Option<Latency>,
    /// The traffic window's quantiles.
    traffic: Option<Latency>,
    /// The latency the score uses, in ms.
    used: Option<f64>,
    score: Option<f64>,
}

fn cmp_score(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The ranking state of a set of gateways, indexed `0..gateways`.
///
/// Invariants after every call: `current()` is `Some` iff some gateway is
/// available, and then it is an available one; if it is marked failed, no
/// other available gateway is unfailed.
#[derive(Debug)]
pub struct Ranker {
    cfg: RankConfig,
    epoch: Instant,
    slice: Duration,
    gateways: Vec<Gateway>,
    current: Option<usize>,
    last_switch: Option<Switch>,
}

impl Ranker {
    /// A ranker for `gateways` gateways; gateway 0 is current at once (before
    /// any sample), recorded as a [`SwitchReason::Startup`] switch. Invalid
    /// configuration fields are replaced by their defaults.
    pub fn new(gateways: usize, cfg: RankConfig, now: Instant) -> Ranker {
        let cfg = cfg.sanitized();
        let slice = cfg.window / cfg.window_slices;
        let current = (gateways > 0).then_some(0);
        Ranker {
            gateways: (0..gateways).map(|_| Gateway::new(&cfg, now)).collect(),
            current,
            last_switch: current.map(|_| Switch {
                from: None,
                to: current,
                reason: SwitchReason::Startup,
                at: now,
            }),
            cfg,
            epoch: now,
            slice,
        }
    }

    /// The configuration in force (after sanitising).
    pub fn config(&self) -> &RankConfig {
        &self.cfg
    }

    /// Records one sample. A failure from [`Evidence::KeepAlive`] or
    /// [`Evidence::Traffic`] marks the gateway failed until its next success;
    /// if it is the current one and another gateway is eligible, the switch
    /// happens in this call and is returned. Any call that makes the current
    /// gateway unavailable (or makes one available when none was) also
    /// switches at once. Unknown `gw` indices are ignored.
    pub fn record(&mut self, gw: usize, outcome: SampleOutcome, source: Evidence, now: Instant) -> Option<Switch> {
        let k = self.slice_of(now);
        let cfg = &self.cfg;
        let g = self.gateways.get_mut(gw)?;
        let failed_now = match outcome {
            SampleOutcome::Ok(d) => {
                if source == Evidence::Traffic {
                    g.traffic.record(k, micros(d));
                } else {
                    g.window.record(k, micros(d));
                }
                g.reputation.update(1, 0, now, cfg);
                g.streaks(1, 0);
                g.failed = false;
                false
            }
            SampleOutcome::Failed => {
                g.window.fail(k, 1);
                g.reputation.update(0, 1, now, cfg);
                g.streaks(0, 1);
                let hard = source != Evidence::Probe;
                g.failed |= hard;
                hard
            }
        };
        g.apply_hysteresis(cfg, now);
        let cause = (failed_now && self.current == Some(gw)).then_some(source);
        self.enforce(now, cause)
    }

    /// Merges what the workers saw on real traffic since the last tick: a
    /// histogram of successful tunnel-setup latencies in microseconds (its
    /// count is the number of successes) and a failure count. The latencies
    /// go into the gateway's traffic window (not the probe window: see
    /// `docs/ranking.md`, *Score*). Values beyond
    /// `max_latency` are clamped. If failures are at least
    /// `traffic_failover_ratio` of the attempts, this is a failure report as
    /// in [`Ranker::record`] with [`Evidence::Traffic`]; otherwise any success
    /// clears a failed mark.
    pub fn merge_traffic(
        &mut self,
        gw: usize,
        latencies_us: &Histogram<u64>,
        failures: u64,
        now: Instant,
    ) -> Option<Switch> {
        let k = self.slice_of(now);
        let g = self.gateways.get_mut(gw)?;
        g.traffic.record_hist(k, latencies_us);
        self.merge_outcomes(gw, latencies_us.len(), failures, now)
    }

    /// Like [`Ranker::merge_traffic`] with counts only: the outcomes feed the
    /// reputation, the streaks and fail-over; no latency is recorded.
    pub fn merge_outcomes(&mut self, gw: usize, successes: u64, failures: u64, now: Instant) -> Option<Switch> {
        let k = self.slice_of(now);
        let cfg = &self.cfg;
        let g = self.gateways.get_mut(gw)?;
        if failures > 0 {
            g.window.fail(k, failures);
        }
        g.reputation.update(successes, failures, now, cfg);
        // A worker's batch may be a second old: its successes may predate an
        // outage, so only its failures count in the streaks (see `streaks`).
        g.streaks(0, failures);
        let attempts = successes.saturating_add(failures) as f64;
        let failing = failures > 0 && failures as f64 >= cfg.traffic_failover_ratio * attempts;
        if failing {
            g.failed = true;
        } else if successes > 0 {
            g.failed = false;
        }
        g.apply_hysteresis(cfg, now);
        let cause = (failing && self.current == Some(gw)).then_some(Evidence::Traffic);
        self.enforce(now, cause)
    }

    /// One damping round: every eligible gateway with latency in the window
    /// that beats the current score by both margins gains a win, every other
    /// gateway's count resets; once some gateway has `switch_rounds` wins, the
    /// best-scoring such gateway becomes current. An unmeasured current is
    /// beaten by any measured challenger; an unmeasured challenger never wins.
    pub fn evaluate(&mut self, now: Instant) -> Option<Switch> {
        if let Some(s) = self.enforce(now, None) {
            return Some(s);
        }
        let c = self.current?;
        let views = self.views(now);
        let cur = views[c].score;
        let (rel, abs) = (self.cfg.rel_margin, ms(self.cfg.abs_margin));
        let beats = |s: Option<f64>| match (s, cur) {
            (Some(b), Some(c)) => b < c * (1.0 - rel) && b < c - abs,
            (Some(_), None) => true,
            (None, _) => false,
        };
        for (i, g) in self.gateways.iter_mut().enumerate() {
            g.wins = if i != c && g.eligible() && beats(views[i].score) {
                g.wins.saturating_add(1)
            } else {
                0
            };
        }
        let rounds = self.cfg.switch_rounds;
        let winner = (0..self.gateways.len())
            .filter(|&i| self.gateways[i].wins >= rounds)
            .min_by(|&a, &b| cmp_score(views[a].score, views[b].score).then(a.cmp(&b)))?;
        let reason = SwitchReason::Better {
            rounds: self.gateways[winner].wins,
            from_score_ms: cur,
            to_score_ms: views[winner].score.unwrap_or(f64::INFINITY),
        };
        Some(self.switch(Some(winner), reason, now))
    }

    /// Follows a change of the gateway list (a configuration reload):
    /// `old_of_new[i]` is new gateway `i`'s index before, `None` for a new
    /// one. Surviving gateways keep their windows, reputation, streaks and
    /// availability; new ones start fresh (available, unmeasured); removed
    /// ones are forgotten. The current gateway stays current if it survives;
    /// if it was removed, the best usable one becomes current and the
    /// switch is returned.
    pub fn remap(&mut self, old_of_new: &[Option<usize>], now: Instant) -> Option<Switch> {
        let mut old: Vec<Option<Gateway>> = std::mem::take(&mut self.gateways).into_iter().map(Some).collect();
        let cfg = &self.cfg;
        self.gateways = old_of_new
            .iter()
            .map(|o| {
                o.and_then(|i| old.get_mut(i).and_then(Option::take))
                    .unwrap_or_else(|| Gateway::new(cfg, now))
            })
            .collect();
        let new_of_old = |i: usize| old_of_new.iter().position(|&o| o == Some(i));
        let was = self.current;
        self.current = was.and_then(new_of_old);
        if let Some(s) = &mut self.last_switch {
            s.from = s.from.and_then(new_of_old);
            s.to = s.to.and_then(new_of_old);
        }
        for g in &mut self.gateways {
            g.wins = 0;
        }
        if was.is_some() && self.current.is_none() {
            let views = self.views(now);
            let to = self
                .best(&views, Gateway::eligible)
                .or_else(|| self.best(&views, |g| g.available));
            let mut sw = self.switch(to, SwitchReason::Removed, now);
            sw.from = None;
            self.last_switch = Some(sw.clone());
            return Some(sw);
        }
        self.enforce(now, None)
    }

    /// The current gateway (slot 0's choice); `None` iff no gateway is available.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// All gateways, best first: the current one, then the other available
    /// unfailed ones by score, then available failed ones by score, then
    /// unavailable ones by score. Within a group, unmeasured gateways come
    /// after measured ones, and ties go to the lower index.
    pub fn order(&self, now: Instant) -> Vec<usize> {
        self.order_with(&self.views(now))
    }

    /// For each of `slots` slots, the gateways to try in order: the slot's
    /// own choice, then every other gateway in [`Ranker::order`].
    ///
    /// Default (`pinned == false`): slot `k` chooses the `k`-th usable gateway
    /// in rank order (usable: the current one and the available unfailed
    /// ones); slots beyond the number usable choose the best (the current
    /// one). If no gateway is available, slot `k` chooses `order[k % n]`.
    /// Pinned: slot `k` chooses gateway `k` whatever its state (slots beyond
    /// the gateway count fall back to the default choice).
    pub fn slots(&self, slots: usize, pinned: bool, now: Instant) -> Vec<Vec<usize>> {
        let order = self.order(now);
        let n = order.len();
        if n == 0 {
            return vec![Vec::new(); slots];
        }
        let usable = order
            .iter()
            .take_while(|&&i| self.current == Some(i) || self.gateways[i].eligible())
            .count();
        (0..slots)
            .map(|k| {
                let choice = if pinned && k < n {
                    k
                } else if usable == 0 {
                    order[k % n]
                } else if k < usable {
                    order[k]
                } else {
                    order[0]
                };
                let mut list = Vec::with_capacity(n);
                list.push(choice);
                list.extend(order.iter().copied().filter(|&i| i != choice));
                list
            })
            .collect()
    }

    /// Every gateway's state, latency quantiles, score and reputation at `now`.
    pub fn status(&self, now: Instant) -> Vec<GatewayStatus> {
        let k = self.slice_of(now);
        self.views(now)
            .into_iter()
            .zip(&self.gateways)
            .enumerate()
            .map(|(i, (v, g))| GatewayStatus {
                index: i,
                state: if self.current == Some(i) {
                    GatewayState::Selected
                } else if g.available {
                    GatewayState::Available
                } else {
                    GatewayState::Unavailable
                },
                failed: g.failed,
                p50_ms: v.latency.map(|l| l.p50),
                p90_ms: v.latency.map(|l| l.p90),
                p99_ms: v.latency.map(|l| l.p99),
                traffic_p50_ms: v.traffic.map(|l| l.p50),
                traffic_p90_ms: v.traffic.map(|l| l.p90),
                latency_ms: v.used,
                score_ms: v.score,
                reputation: g.reputation.ratio,
                samples: v.latency.map_or(0, |l| l.samples),
                traffic_samples: v.traffic.map_or(0, |l| l.samples),
                failures: g.window.failures(k),
                wins: g.wins,
                ok_streak: g.ok_streak,
                readmit_after: (!g.available).then(|| g.readmit_after(&self.cfg)),
            })
            .collect()
    }

    /// The last change of the current gateway (the start-up choice until then).
    pub fn last_switch(&self) -> Option<&Switch> {
        self.last_switch.as_ref()
    }

    /// How long to wait before probing `gw` again, for a caller whose
    /// regular period is `interval` (jitter is the caller's):
    /// - after a failure: `recovery_probe_base`, doubling with each further
    ///   failure in a row, up to `recovery_probe_max`;
    /// - after a success while it is still not usable (unavailable, or
    ///   marked failed): `recovery_probe_base`, so the successes that
    ///   re-admit it come in quick succession;
    /// - otherwise `interval`.
    ///
    /// Neither delay exceeds `interval`. Unknown indices get `interval`.
    pub fn probe_delay(&self, gw: usize, interval: Duration) -> Duration {
        let Some(g) = self.gateways.get(gw) else {
            return interval;
        };
        let base = self.cfg.recovery_probe_base.min(interval);
        let cap = self.cfg.recovery_probe_max.min(interval).max(base);
        if g.fail_streak > 0 {
            let doublings = (g.fail_streak - 1).min(16);
            base.saturating_mul(1 << doublings).min(cap)
        } else if !g.eligible() {
            base
        } else {
            interval
        }
    }

    fn slice_of(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since / self.slice.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    fn views(&self, now: Instant) -> Vec<View> {
        let k = self.slice_of(now);
        let p = ms(self.cfg.failure_penalty);
        self.gateways
            .iter()
            .map(|g| {
                let latency = g.window.latency(k, self.cfg.quantile);
                let traffic = g.traffic.latency(k, self.cfg.quantile);
                // The slower of the two views: set-ups are a subset of a
                // probe's work, so on a healthy path the probe is the slower
                // and traffic changes nothing; set-ups slower than probes are
                // what users feel. Traffic never makes a gateway look faster
                // than its probes, so being in use cannot favour a gateway.
                let busy = traffic.filter(|t| t.samples >= self.cfg.traffic_min_samples);
                let used = match (latency, busy) {
                    (Some(l), Some(t)) => Some(l.q.max(t.q)),
                    (l, t) => l.or(t).map(|l| l.q),
                };
                let r = g.reputation.ratio.max(MIN_SCORE_REPUTATION);
                View {
                    latency,
                    traffic,
                    used,
                    score: used.map(|l| l / r + (1.0 - r) / r * p),
                }
            })
            .collect()
    }

    fn group(&self, i: usize) -> u8 {
        let g = &self.gateways[i];
        if self.current == Some(i) {
            0
        } else if g.eligible() {
            1
        } else if g.available {
            2
        } else {
            3
        }
    }

    fn order_with(&self, views: &[View]) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.gateways.len()).collect();
        idx.sort_by(|&a, &b| {
            self.group(a)
                .cmp(&self.group(b))
                .then_with(|| cmp_score(views[a].score, views[b].score))
                .then(a.cmp(&b))
        });
        idx
    }

    /// The best gateway by score among those `pick` accepts.
    fn best(&self, views: &[View], pick: impl Fn(&Gateway) -> bool) -> Option<usize> {
        (0..self.gateways.len())
            .filter(|&i| pick(&self.gateways[i]))
            .min_by(|&a, &b| cmp_score(views[a].score, views[b].score).then(a.cmp(&b)))
    }

    /// Restores the invariants on `current` after the evidence changed;
    /// `cause` is set when this call reported a hard failure of the current
    /// gateway.
    fn enforce(&mut self, now: Instant, cause: Option<Evidence>) -> Option<Switch> {
        match self.current {
            Some(c) if self.gateways[c].eligible() => None,
            Some(c) if self.gateways[c].available => {
                // Failed but still reputable: leave it only for an eligible gateway.
                let views = self.views(now);
                let to = self.best(&views, Gateway::eligible)?;
                let reason = cause.map_or(SwitchReason::Recovered, |source| SwitchReason::Failed { source });
                Some(self.switch(Some(to), reason, now))
            }
            Some(c) => {
                let views = self.views(now);
                let to = self
                    .best(&views, Gateway::eligible)
                    .or_else(|| self.best(&views, |g| g.available));
                let reason = cause.map_or(
                    SwitchReason::Unavailable {
                        reputation: self.gateways[c].reputation.ratio,
                        threshold: self.cfg.down_threshold,
                    },
                    |source| SwitchReason::Failed { source },
                );
                Some(self.switch(to, reason, now))
            }
            None => {
                if !self.gateways.iter().any(|g| g.available) {
                    return None;
                }
                let views = self.views(now);
                let to = self
                    .best(&views, Gateway::eligible)
                    .or_else(|| self.best(&views, |g| g.available));
                Some(self.switch(to, SwitchReason::Recovered, now))
            }
        }
    }

    fn switch(&mut self, to: Option<usize>, reason: SwitchReason, now: Instant) -> Switch {
        let s = Switch {
            from: self.current,
            to,
            reason,
            at: now,
        };
        self.current = to;
        for g in &mut self.gateways {
            g.wins = 0;
        }
        self.last_switch = Some(s.clone());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: all times are offsets from one base instant.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Clock {
            Clock(Instant::now())
        }
        fn s(&self, secs: f64) -> Instant {
            self.0 + Duration::from_secs_f64(secs)
        }
    }

    fn ms_d(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ok(r: &mut Ranker, gw: usize, latency_ms: u64, at: Instant) -> Option<Switch> {
        r.record(gw, SampleOutcome::Ok(ms_d(latency_ms)), Evidence::Probe, at)
    }

    fn fail(r: &mut Ranker, gw: usize, source: Evidence, at: Instant) -> Option<Switch> {
        r.record(gw, SampleOutcome::Failed, source, at)
    }

    /// `n` probe samples of `latency_ms` for each `(gw, latency_ms)`.
    fn feed(r: &mut Ranker, at: Instant, n: usize, lat: &[(usize, u64)]) {
        for _ in 0..n {
            for &(gw, l) in lat {
                assert_eq!(ok(r, gw, l, at), None);
            }
        }
    }

    fn hist(values_us: &[(u64, u64)]) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        for &(v, n) in values_us {
            h.record_n(v, n).expect("record");
        }
        h
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= b * 0.01)
    }

    /// One-second windows make "the latency of this round" easy to steer.
    fn per_second() -> RankConfig {
        RankConfig {
            window: Duration::from_secs(1),
            window_slices: 1,
            ..RankConfig::default()
        }
    }

    #[test]
    fn startup_selects_gateway_zero_before_any_sample() {
        let c = Clock::new();
        let r = Ranker::new(3, RankConfig::default(), c.s(0.0));
        assert_eq!(r.current(), Some(0));
        let s = r.last_switch().expect("start-up switch");
        assert_eq!(
            (s.from, s.to, &s.reason, s.at),
            (None, Some(0), &SwitchReason::Startup, c.s(0.0))
        );
        assert_eq!(r.order(c.s(0.0)), vec![0, 1, 2]);
        let st = r.status(c.s(0.0));
        assert_eq!(st[0].state, GatewayState::Selected);
        assert_eq!(st[1].state, GatewayState::Available);
        assert_eq!((st[1].p90_ms, st[1].samples, st[1].reputation), (None, 0, 1.0));
    }

    #[test]
    fn remap_keeps_each_surviving_gateways_state_by_identity() {
        let c = Clock::new();
        let mut r = Ranker::new(3, RankConfig::default(), c.s(0.0));
        // 0: fast, 1: slow, 2: failed and unavailable.
        feed(&mut r, c.s(1.0), 20, &[(0, 5), (1, 80)]);
        for _ in 0..20 {
            fail(&mut r, 2, Evidence::Probe, c.s(1.0));
        }
        let before = r.status(c.s(1.0));
        assert_eq!(before[2].state, GatewayState::Unavailable);
        // Reload: 2 first, a new gateway, then 0; 1 removed.
        assert_eq!(r.remap(&[Some(2), None, Some(0)], c.s(2.0)), None);
        let after = r.status(c.s(2.0));
        assert_eq!(after.len(), 3);
        // The current gateway (old 0) stays current under its new index.
        assert_eq!(r.current(), Some(2));
        assert_eq!(after[2].state, GatewayState::Selected);
        assert_eq!(after[2].samples, before[0].samples);
        assert_eq!(after[2].p50_ms, before[0].p50_ms);
        // Old 2 keeps its failures and reputation; the new one starts fresh.
        assert_eq!(after[0].state, GatewayState::Unavailable);
        assert_eq!(after[0].reputation, before[2].reputation);
        assert_eq!((after[1].samples, after[1].reputation), (0, 1.0));
        assert_eq!(after[1].state, GatewayState::Available);
        // Samples land on the gateway now at that index.
        assert_eq!(ok(&mut r, 1, 7, c.s(2.0)), None);
        assert_eq!(r.status(c.s(2.0))[1].samples, 1);
        let sw = r.last_switch().expect("start-up switch, re-mapped");
        assert_eq!(sw.to, Some(2));
    }

    #[test]
    fn remap_removing_the_current_gateway_switches_to_the_best_remaining() {
        let c = Clock::new();
        let mut r = Ranker::new(3, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(1.0), 20, &[(0, 5), (1, 80), (2, 20)]);
        assert_eq!(r.current(), Some(0));
        // Old 0 removed; old 1 and 2 swap places.
        let sw = r.remap(&[Some(2), Some(1)], c.s(2.0)).expect("a switch");
        assert_eq!((sw.from, sw.to, &sw.reason), (None, Some(0), &SwitchReason::Removed));
        assert_eq!(r.current(), Some(0));
        assert!(sw.to_string().contains("no longer lists"), "{sw}");
        assert_eq!(r.slots(2, false, c.s(2.0)), vec![vec![0, 1], vec![1, 0]]);
    }

    #[test]
    fn zero_gateways_is_harmless() {
        let c = Clock::new();
        let mut r = Ranker::new(0, RankConfig::default(), c.s(0.0));
        assert_eq!(r.current(), None);
        assert_eq!(r.last_switch(), None);
        assert_eq!(r.evaluate(c.s(1.0)), None);
        assert_eq!(ok(&mut r, 0, 5, c.s(1.0)), None);
        assert!(r.order(c.s(1.0)).is_empty());
        assert_eq!(r.slots(2, false, c.s(1.0)), vec![Vec::<usize>::new(), Vec::new()]);
        assert!(r.status(c.s(1.0)).is_empty());
    }

    #[test]
    fn unknown_gateway_index_is_ignored() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        assert_eq!(fail(&mut r, 7, Evidence::KeepAlive, c.s(1.0)), None);
        assert_eq!(r.merge_traffic(9, &hist(&[(1000, 1)]), 3, c.s(1.0)), None);
        assert_eq!(r.current(), Some(0));
    }

    /// Runs `rounds` one-second rounds of noisy probes (uniform mean ± spread
    /// ms, `fail_per_mille` probe failures) and counts switches.
    fn noisy(means: &[u64], spread: u64, fail_per_mille: u64, rounds: u32, seed: u64) -> (usize, Ranker) {
        let c = Clock::new();
        let mut r = Ranker::new(means.len(), RankConfig::default(), c.s(0.0));
        // Seeded: the noise is deterministic.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let mut switches = 0;
        for round in 0..rounds {
            let at = c.s(f64::from(round));
            for (gw, &m) in means.iter().enumerate() {
                let outcome = if rand::Rng::random_range(&mut rng, 0..1000) < fail_per_mille {
                    SampleOutcome::Failed
                } else {
                    SampleOutcome::Ok(Duration::from_micros(rand::Rng::random_range(
                        &mut rng,
                        (m - spread) * 1000..(m + spread) * 1000,
                    )))
                };
                switches += usize::from(r.record(gw, outcome, Evidence::Probe, at).is_some());
            }
            switches += usize::from(r.evaluate(at).is_some());
        }
        (switches, r)
    }

    #[test]
    fn noise_around_equal_means_never_switches() {
        let (switches, r) = noisy(&[20, 20], 5, 0, 1000, 1);
        assert_eq!(switches, 0);
        assert_eq!(r.current(), Some(0));
        assert_eq!(r.last_switch().map(|s| &s.reason), Some(&SwitchReason::Startup));
    }

    #[test]
    fn noise_with_three_gateways_and_sporadic_probe_failures_never_switches() {
        for seed in 1..=5 {
            let (switches, _) = noisy(&[20, 20, 21], 5, 10, 1000, seed);
            assert_eq!(switches, 0, "seed {seed}");
        }
    }

    #[test]
    fn clearly_better_gateway_wins_in_exactly_the_configured_rounds() {
        for rounds in [1, 3, 5] {
            let c = Clock::new();
            let cfg = RankConfig {
                switch_rounds: rounds,
                ..RankConfig::default()
            };
            let mut r = Ranker::new(2, cfg, c.s(0.0));
            feed(&mut r, c.s(0.0), 10, &[(0, 50), (1, 20)]);
            for round in 1..rounds {
                assert_eq!(r.evaluate(c.s(f64::from(round))), None, "round {round} of {rounds}");
                assert_eq!(r.current(), Some(0));
                assert_eq!(r.status(c.s(f64::from(round)))[1].wins, round);
            }
            let s = r.evaluate(c.s(f64::from(rounds))).expect("switch");
            assert_eq!((s.from, s.to, s.at), (Some(0), Some(1), c.s(f64::from(rounds))));
            match s.reason {
                SwitchReason::Better {
                    rounds: n,
                    from_score_ms,
                    to_score_ms,
                } => {
                    assert_eq!(n, rounds);
                    assert!(close(from_score_ms, 50.0) && close(Some(to_score_ms), 20.0));
                }
                other => panic!("unexpected reason {other:?}"),
            }
            assert_eq!(r.current(), Some(1));
            assert_eq!(r.last_switch(), Some(&s));
            // The old gateway does not come straight back.
            assert_eq!(r.evaluate(c.s(f64::from(rounds) + 1.0)), None);
        }
    }

    #[test]
    fn challenger_that_stops_winning_resets_its_count() {
        let c = Clock::new();
        let mut r = Ranker::new(2, per_second(), c.s(0.0));
        // gateway 1's latency per round: wins, wins, loses, then wins again.
        let series = [20, 20, 60, 20, 20, 20];
        for (round, &l1) in (0u32..).zip(&series) {
            let at = c.s(f64::from(round) + 0.5);
            feed(&mut r, at, 10, &[(0, 50), (1, l1)]);
            let s = r.evaluate(at);
            let wins = r.status(at)[1].wins;
            match round {
                0 | 1 => assert_eq!((s.is_none(), wins), (true, round + 1)),
                2 => assert_eq!((s.is_none(), wins), (true, 0)),
                3 | 4 => assert_eq!((s.is_none(), wins), (true, round - 2)),
                _ => assert_eq!(s.map(|s| s.to), Some(Some(1)), "third win in a row after the reset"),
            }
        }
    }

    #[test]
    fn margins_are_both_required() {
        let c = Clock::new();
        // Relative gain 50 % but only 1 ms: the absolute margin holds it back.
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 2), (1, 1)]);
        for round in 1..20 {
            assert_eq!(r.evaluate(c.s(f64::from(round))), None);
        }
        // 10 ms better but only 10 %: the relative margin holds it back.
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 100), (1, 90)]);
        for round in 1..20 {
            assert_eq!(r.evaluate(c.s(f64::from(round))), None);
        }
        // Both margins met (100 -> 79).
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 100), (1, 79)]);
        let switched: Vec<_> = (1..5).map(|i| r.evaluate(c.s(f64::from(i))).is_some()).collect();
        assert_eq!(switched, vec![false, false, true, false]);
    }

    #[test]
    fn several_challengers_count_independently_and_the_best_wins() {
        let c = Clock::new();
        let mut r = Ranker::new(3, per_second(), c.s(0.0));
        // Gateways 1 and 2 both beat 0 every round but take turns being the best.
        for round in 0..3 {
            let at = c.s(f64::from(round) + 0.5);
            let (a, b) = if round % 2 == 0 { (20, 22) } else { (22, 20) };
            feed(&mut r, at, 10, &[(0, 100), (1, a), (2, b)]);
            let s = r.evaluate(at);
            if round < 2 {
                assert_eq!(s, None);
            } else {
                assert_eq!(
                    s.map(|s| s.to),
                    Some(Some(1)),
                    "both have 3 wins; 1 scores best this round"
                );
            }
        }
    }

    #[test]
    fn unmeasured_current_is_beaten_by_a_measured_gateway_but_not_vice_versa() {
        let c = Clock::new();
        let mut r = Ranker::new(3, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 5, &[(2, 30)]);
        assert_eq!(r.order(c.s(0.0)), vec![0, 2, 1], "current, measured, unmeasured");
        assert_eq!(r.evaluate(c.s(1.0)), None);
        assert_eq!(r.evaluate(c.s(2.0)), None);
        let s = r.evaluate(c.s(3.0)).expect("switch");
        assert_eq!(s.to, Some(2));
        assert!(matches!(
            s.reason,
            SwitchReason::Better {
                from_score_ms: None,
                ..
            }
        ));
        assert!(s.to_string().contains("no recent latency"), "{s}");
        // Now 2 is current and measured; unmeasured 0 and 1 never win.
        for round in 4..20 {
            assert_eq!(r.evaluate(c.s(f64::from(round))), None);
        }
    }

    #[test]
    fn reputation_follows_the_documented_formula() {
        let c = Clock::new();
        let mut r = Ranker::new(1, RankConfig::default(), c.s(0.0));
        // Prior: ratio 1, weight 10. One failure: (1 * 10 + 0) / (10 + 1) = 10/11.
        fail(&mut r, 0, Evidence::Probe, c.s(0.0));
        let r1 = 10.0 / 11.0;
        assert!((r.status(c.s(0.0))[0].reputation - r1).abs() < 1e-12);
        // Weight 11 decays to 5.5 after one half-life, floored at 10: (r1 * 10 + 1) / 11.
        ok(&mut r, 0, 10, c.s(30.0));
        let r2 = (r1 * 10.0 + 1.0) / 11.0;
        assert!((r.status(c.s(30.0))[0].reputation - r2).abs() < 1e-12);
        // Weight 11 at once: a batch of 100 successes and 100 failures at the same instant.
        r.merge_traffic(0, &hist(&[(10_000, 100)]), 100, c.s(30.0));
        let r3 = (r2 * 11.0 + 100.0) / 211.0;
        assert!((r.status(c.s(30.0))[0].reputation - r3).abs() < 1e-12);
        // Above the floor the weight decays: 211 halves to 105.5 after 30 s.
        ok(&mut r, 0, 10, c.s(60.0));
        let r4 = (r3 * 105.5 + 1.0) / 106.5;
        assert!((r.status(c.s(60.0))[0].reputation - r4).abs() < 1e-9);
        // Silence does not change the ratio, only the weight behind it.
        assert_eq!(r.status(c.s(10_000.0))[0].reputation, r.status(c.s(60.0))[0].reputation);
    }

    #[test]
    fn reputation_penalises_the_score() {
        let c = Clock::new();
        let mut r = Ranker::new(3, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 20, &[(0, 40), (1, 20), (2, 20)]);
        fail(&mut r, 1, Evidence::Probe, c.s(0.0));
        fail(&mut r, 1, Evidence::Probe, c.s(0.0));
        let st = r.status(c.s(0.0));
        let rep = st[1].reputation;
        let expect = 20.0 / rep + (1.0 - rep) / rep * 20.0;
        assert!(close(st[1].score_ms, expect), "{:?} vs {expect}", st[1].score_ms);
        assert!(close(st[2].score_ms, 20.0));
        assert_eq!(r.order(c.s(0.0)), vec![0, 2, 1]);
    }

    #[test]
    fn flapping_gateway_goes_unavailable_and_stays_out_while_it_flaps() {
        let c = Clock::new();
        let cfg = RankConfig::default();
        let mut r = Ranker::new(2, cfg, c.s(0.0));
        let mut t = 0.0;
        // Gateway 1 alternates success and failure on its probes every 5 s.
        let mut went_down = None;
        for i in 0..40 {
            t += 5.0;
            ok(&mut r, 0, 20, c.s(t));
            if i % 2 == 0 {
                ok(&mut r, 1, 15, c.s(t));
            } else {
                fail(&mut r, 1, Evidence::Probe, c.s(t));
            }
            assert_eq!(r.evaluate(c.s(t)), None, "a flapping gateway never takes over");
            if went_down.is_none() && r.status(c.s(t))[1].state == GatewayState::Unavailable {
                went_down = Some(i);
            }
        }
        assert!(went_down.is_some_and(|i| i < 20), "down after {went_down:?} probes");
        // Never two successes in a row: it stays out, whatever its latency.
        let st = r.status(c.s(t));
        assert_eq!(st[1].state, GatewayState::Unavailable);
        assert_eq!(st[1].readmit_after, Some(3));
        assert_eq!(r.order(c.s(t)), vec![0, 1]);
    }

    #[test]
    fn healthy_again_is_readmitted_after_three_good_probes_and_flapping_doubles_that() {
        let c = Clock::new();
        let cfg = RankConfig::default();
        let (window, down) = (cfg.window.as_secs_f64(), cfg.down_threshold);
        let mut r = Ranker::new(1, cfg, c.s(0.0));
        ok(&mut r, 0, 10, c.s(0.0));
        let mut t = 0.0;
        // Dead: fails until unavailable (current becomes none).
        let mut down_at = None;
        while down_at.is_none() {
            t += 1.0;
            if let Some(s) = fail(&mut r, 0, Evidence::Probe, c.s(t)) {
                assert_eq!(s.to, None);
                down_at = Some(t);
            }
            assert!(t < 60.0, "never went down");
        }
        // Dead for a while longer: the reputation sinks towards 0.
        for _ in 0..10 {
            t += 1.0;
            fail(&mut r, 0, Evidence::Probe, c.s(t));
        }
        assert!(r.status(c.s(t))[0].reputation < 0.5);
        // Back: two good probes are not enough, the third re-admits at once.
        for expect in [1, 2] {
            t += 1.0;
            assert_eq!(ok(&mut r, 0, 10, c.s(t)), None);
            let st = r.status(c.s(t));
            assert_eq!((st[0].state, st[0].ok_streak), (GatewayState::Unavailable, expect));
        }
        t += 1.0;
        let s = ok(&mut r, 0, 10, c.s(t)).expect("re-admitted");
        assert_eq!((s.from, s.to, &s.reason), (None, Some(0), &SwitchReason::Recovered));
        let st = r.status(c.s(t));
        assert_eq!(st[0].readmit_after, None);
        // On probation: the reputation starts at the up threshold, and three
        // failures in a row take it out again.
        assert!((st[0].reputation - 0.9).abs() < 0.02, "{}", st[0].reputation);
        let mut fails = 0;
        while r.current().is_some() {
            t += 1.0;
            fail(&mut r, 0, Evidence::Probe, c.s(t));
            fails += 1;
            assert!(fails < 10);
        }
        assert_eq!(fails, 3, "down {down} reached after {fails} failures");
        // It fell within the window of its re-admission: now it needs 6.
        assert_eq!(r.status(c.s(t))[0].readmit_after, Some(6));
        for _ in 0..5 {
            t += 1.0;
            assert_eq!(ok(&mut r, 0, 10, c.s(t)), None);
        }
        t += 1.0;
        assert!(ok(&mut r, 0, 10, c.s(t)).is_some(), "back after 6");
        // Falls again at once: 12. A failure in the middle restarts the count.
        while r.current().is_some() {
            t += 1.0;
            fail(&mut r, 0, Evidence::Probe, c.s(t));
        }
        assert_eq!(r.status(c.s(t))[0].readmit_after, Some(12));
        for _ in 0..11 {
            t += 1.0;
            ok(&mut r, 0, 10, c.s(t));
        }
        t += 1.0;
        fail(&mut r, 0, Evidence::Probe, c.s(t));
        for _ in 0..11 {
            t += 1.0;
            assert_eq!(ok(&mut r, 0, 10, c.s(t)), None);
        }
        t += 1.0;
        assert!(ok(&mut r, 0, 10, c.s(t)).is_some(), "back after 12 in a row");
        // Healthy for longer than the window, then down again: the count is back to 3.
        t += window + 1.0;
        ok(&mut r, 0, 10, c.s(t));
        while r.current().is_some() {
            t += 1.0;
            fail(&mut r, 0, Evidence::Probe, c.s(t));
        }
        assert_eq!(r.status(c.s(t))[0].readmit_after, Some(3));
    }

    #[test]
    fn late_traffic_successes_do_not_readmit() {
        let c = Clock::new();
        let mut r = Ranker::new(1, RankConfig::default(), c.s(0.0));
        for i in 0..8 {
            fail(&mut r, 0, Evidence::Traffic, c.s(f64::from(i) * 0.1));
        }
        assert_eq!(r.current(), None);
        // A worker's report of set-ups from before the outage arrives late.
        assert_eq!(r.merge_traffic(0, &hist(&[(1_000, 6)]), 0, c.s(1.0)), None);
        let st = r.status(c.s(1.0));
        assert_eq!((st[0].state, st[0].ok_streak), (GatewayState::Unavailable, 0));
        // Failures in a report do end a streak.
        ok(&mut r, 0, 1, c.s(2.0));
        r.merge_traffic(0, &hist(&[]), 1, c.s(2.5));
        assert_eq!(r.status(c.s(2.5))[0].ok_streak, 0);
        assert_eq!(r.probe_delay(0, Duration::from_secs(30)), Duration::from_secs(1));
    }

    #[test]
    fn probe_delay_backs_off_after_failures_and_hurries_re_admission() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        let every = Duration::from_secs(30);
        let secs = |r: &Ranker| r.probe_delay(0, every).as_secs_f64();
        assert_eq!(secs(&r), 30.0, "healthy: the regular interval");
        assert_eq!(r.probe_delay(7, every), every, "unknown index");
        let mut delays = Vec::new();
        for i in 0..8 {
            fail(&mut r, 0, Evidence::Probe, c.s(f64::from(i)));
            delays.push(secs(&r));
        }
        assert_eq!(delays, vec![1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]);
        assert_eq!(r.status(c.s(8.0))[0].state, GatewayState::Unavailable);
        // Succeeding but not yet re-admitted: the base spacing.
        ok(&mut r, 0, 10, c.s(9.0));
        assert_eq!(secs(&r), 1.0);
        ok(&mut r, 0, 10, c.s(10.0));
        ok(&mut r, 0, 10, c.s(11.0));
        assert_eq!(r.status(c.s(11.0))[0].state, GatewayState::Available);
        assert_eq!(secs(&r), 30.0, "re-admitted: the regular interval again");
        // A keep-alive failure marks the current gateway failed; a success clears it.
        fail(&mut r, 1, Evidence::KeepAlive, c.s(12.0));
        assert_eq!(r.probe_delay(1, every), Duration::from_secs(1));
        ok(&mut r, 1, 10, c.s(13.0));
        assert_eq!(r.probe_delay(1, every), every);
        // Never longer than the caller's interval.
        for i in 0..5 {
            fail(&mut r, 1, Evidence::Probe, c.s(14.0 + f64::from(i)));
        }
        assert_eq!(r.probe_delay(1, Duration::from_millis(250)), Duration::from_millis(250));
        assert_eq!(r.probe_delay(1, Duration::from_secs(3)), Duration::from_secs(3));
    }

    #[test]
    fn one_failed_probe_does_not_hand_over_to_an_equal_gateway() {
        for interval in [1.0, 5.0, 10.0, 30.0] {
            let c = Clock::new();
            let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
            for i in 0..60 {
                let at = c.s(f64::from(i) * interval);
                if i == 20 {
                    assert_eq!(fail(&mut r, 0, Evidence::Probe, at), None);
                } else {
                    ok(&mut r, 0, 20, at);
                }
                ok(&mut r, 1, 20, at);
                assert_eq!(r.evaluate(at), None, "probe interval {interval} s, probe {i}");
            }
        }
    }

    #[test]
    fn current_gateway_whose_reputation_falls_is_left_at_once() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 3, &[(0, 20), (1, 40)]);
        // Probe failures do not fail over by themselves, but the reputation drop does.
        let mut switch = None;
        for i in 1..10 {
            if let Some(s) = fail(&mut r, 0, Evidence::Probe, c.s(f64::from(i))) {
                switch = Some(s);
                break;
            }
            assert_eq!(r.current(), Some(0));
        }
        let s = switch.expect("switch");
        assert_eq!((s.from, s.to), (Some(0), Some(1)));
        assert!(matches!(s.reason, SwitchReason::Unavailable { threshold, .. } if threshold == 0.7));
        assert!(s.to_string().contains("became unavailable"), "{s}");
        assert_eq!(r.current(), Some(1));
    }

    #[test]
    fn keepalive_or_traffic_failure_of_current_fails_over_in_the_same_call() {
        for source in [Evidence::KeepAlive, Evidence::Traffic] {
            let c = Clock::new();
            let mut r = Ranker::new(3, RankConfig::default(), c.s(0.0));
            feed(&mut r, c.s(0.0), 10, &[(0, 10), (1, 40), (2, 30)]);
            let s = fail(&mut r, 0, source, c.s(1.0)).expect("immediate fail-over");
            assert_eq!(
                (s.from, s.to, &s.reason),
                (Some(0), Some(2), &SwitchReason::Failed { source })
            );
            assert_eq!(r.current(), Some(2));
            assert_eq!(r.last_switch(), Some(&s));
            let st = r.status(c.s(1.0));
            assert!(st[0].failed && st[0].state == GatewayState::Available);
            assert_eq!(
                r.order(c.s(1.0)),
                vec![2, 1, 0],
                "the failed gateway ranks after the unfailed ones"
            );
        }
    }

    #[test]
    fn probe_failure_or_failure_of_another_gateway_does_not_fail_over() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 10), (1, 40)]);
        assert_eq!(fail(&mut r, 0, Evidence::Probe, c.s(1.0)), None);
        assert_eq!(fail(&mut r, 1, Evidence::KeepAlive, c.s(1.0)), None);
        assert_eq!(r.current(), Some(0));
        assert!(r.status(c.s(1.0))[1].failed);
        assert_eq!(
            r.slots(2, false, c.s(1.0)),
            vec![vec![0, 1], vec![0, 1]],
            "failed 1 gets no slot"
        );
    }

    #[test]
    fn failed_gateway_needs_a_success_and_then_the_damping_to_return() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 10), (1, 40)]);
        assert!(fail(&mut r, 0, Evidence::KeepAlive, c.s(1.0)).is_some());
        assert_eq!(r.current(), Some(1));
        // Still failed: faster, but it does not accumulate wins.
        for i in 2..6 {
            assert_eq!(r.evaluate(c.s(f64::from(i))), None);
            assert_eq!(r.status(c.s(f64::from(i)))[0].wins, 0);
        }
        // A success clears the mark; it must still win three rounds.
        assert_eq!(ok(&mut r, 0, 10, c.s(6.0)), None);
        assert!(!r.status(c.s(6.0))[0].failed);
        assert_eq!(r.evaluate(c.s(7.0)), None);
        assert_eq!(r.evaluate(c.s(8.0)), None);
        let s = r.evaluate(c.s(9.0)).expect("back by damping");
        assert_eq!(s.to, Some(0));
        assert!(matches!(s.reason, SwitchReason::Better { rounds: 3, .. }));
    }

    #[test]
    fn failure_of_the_only_usable_gateway_keeps_it_until_another_recovers() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 10), (1, 40)]);
        assert!(fail(&mut r, 0, Evidence::KeepAlive, c.s(1.0)).is_some());
        // Both failed: stay where we are (still available), do not ping-pong.
        assert_eq!(fail(&mut r, 1, Evidence::KeepAlive, c.s(2.0)), None);
        assert_eq!(r.current(), Some(1));
        assert_eq!(fail(&mut r, 1, Evidence::KeepAlive, c.s(2.5)), None);
        // Gateway 0 succeeds: it is usable and the current one is not, so switch at once.
        let s = ok(&mut r, 0, 10, c.s(3.0)).expect("switch");
        assert_eq!((s.from, s.to, &s.reason), (Some(1), Some(0), &SwitchReason::Recovered));
        assert!(s.to_string().contains("marked failed"), "{s}");
        // A single gateway that fails its keep-alive stays current.
        let mut r = Ranker::new(1, RankConfig::default(), c.s(0.0));
        assert_eq!(fail(&mut r, 0, Evidence::KeepAlive, c.s(1.0)), None);
        assert_eq!(r.current(), Some(0));
    }

    #[test]
    fn no_gateway_available_then_recovery() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 2, &[(0, 10), (1, 40)]);
        let mut t = 0.0;
        let mut to_none = None;
        for _ in 0..20 {
            t += 1.0;
            fail(&mut r, 1, Evidence::Probe, c.s(t));
            if let Some(s) = fail(&mut r, 0, Evidence::Probe, c.s(t))
                && s.to.is_none()
            {
                to_none = Some(s);
            }
        }
        let s = to_none.expect("switch to none");
        assert!(matches!(s.reason, SwitchReason::Unavailable { .. }));
        assert!(s.to_string().contains("no gateway"), "{s}");
        assert_eq!(r.current(), None);
        assert_eq!(r.evaluate(c.s(t)), None);
        let mut order = r.order(c.s(t));
        order.sort_unstable();
        assert_eq!(order, vec![0, 1], "order still lists every gateway");
        let slots = r.slots(3, false, c.s(t));
        let first = r.order(c.s(t));
        assert_eq!(
            slots.iter().map(|s| s[0]).collect::<Vec<_>>(),
            vec![first[0], first[1], first[0]]
        );
        // Sustained successes on 1 bring it back; the first one that crosses the up threshold switches.
        let mut back = None;
        for _ in 0..100 {
            t += 1.0;
            if let Some(s) = ok(&mut r, 1, 40, c.s(t)) {
                back = Some(s);
                break;
            }
        }
        let s = back.expect("recovered");
        assert_eq!((s.from, s.to, &s.reason), (None, Some(1), &SwitchReason::Recovered));
        assert_eq!(r.current(), Some(1));
    }

    #[test]
    fn window_forgets_old_samples() {
        let c = Clock::new();
        let mut r = Ranker::new(1, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 100, &[(0, 80)]);
        fail(&mut r, 0, Evidence::Probe, c.s(0.0));
        let st = r.status(c.s(59.9));
        assert!(close(st[0].p90_ms, 80.0));
        assert_eq!((st[0].samples, st[0].failures), (100, 1));
        // Slice 0 (0-10 s) leaves the 6-slice window when slice 6 (60-70 s) starts.
        let st = r.status(c.s(60.0));
        assert_eq!(
            (st[0].p90_ms, st[0].score_ms, st[0].samples, st[0].failures),
            (None, None, 0, 0)
        );
        feed(&mut r, c.s(61.0), 10, &[(0, 20)]);
        let st = r.status(c.s(61.0));
        assert!(close(st[0].p50_ms, 20.0) && close(st[0].p99_ms, 20.0));
        assert_eq!(st[0].samples, 10);
        // A slice is reused only after it expired, and then starts empty.
        feed(&mut r, c.s(125.0), 1, &[(0, 5)]);
        assert_eq!(r.status(c.s(125.0))[0].samples, 1);
    }

    #[test]
    fn window_mixes_slices_and_drops_samples_older_than_the_window() {
        let c = Clock::new();
        let mut r = Ranker::new(1, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(5.0), 50, &[(0, 10)]);
        feed(&mut r, c.s(25.0), 50, &[(0, 30)]);
        let st = r.status(c.s(30.0));
        assert_eq!(st[0].samples, 100);
        assert!(close(st[0].p90_ms, 30.0) && close(st[0].p50_ms, 10.0));
        // Time moves on to 100 s, then a late sample stamped 5 s arrives: dropped.
        feed(&mut r, c.s(100.0), 1, &[(0, 50)]);
        ok(&mut r, 0, 999, c.s(5.0));
        let st = r.status(c.s(100.0));
        assert_eq!(st[0].samples, 1);
        assert!(close(st[0].p99_ms, 50.0));
    }

    #[test]
    fn merged_traffic_counts_when_slower_than_probes() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 20), (1, 30)]);
        assert!(close(r.status(c.s(0.0))[0].score_ms, 20.0));
        // Workers saw 1000 tunnel setups at 80 ms and 2 failures: no
        // fail-over, the probe quantiles stay, the score takes the slower view.
        assert_eq!(r.merge_traffic(0, &hist(&[(80_000, 1000)]), 2, c.s(1.0)), None);
        let st = r.status(c.s(1.0));
        assert!(close(st[0].p50_ms, 20.0) && close(st[0].p90_ms, 20.0));
        assert!(close(st[0].traffic_p50_ms, 80.0) && close(st[0].traffic_p90_ms, 80.0));
        assert!(close(st[0].latency_ms, 80.0));
        assert_eq!(
            (st[0].samples, st[0].traffic_samples, st[0].failures, st[0].failed),
            (10, 1000, 2, false)
        );
        assert!(st[0].reputation < 1.0 && st[0].reputation > 0.99);
        let rep = st[0].reputation;
        assert!(close(st[0].score_ms, 80.0 / rep + (1.0 - rep) / rep * 20.0));
        // Set-ups faster than the probes change nothing: being in use never
        // makes a gateway look better than its probes.
        assert_eq!(r.merge_traffic(1, &hist(&[(2_000, 500)]), 0, c.s(1.0)), None);
        let st = r.status(c.s(1.0));
        assert!(close(st[1].latency_ms, 30.0) && close(st[1].score_ms, 30.0));
        // Values beyond max_latency are clamped, not rejected.
        let mut big = Histogram::<u64>::new(3).expect("histogram");
        big.record_n(3_600_000_000, 5000).expect("record");
        assert_eq!(r.merge_traffic(1, &big, 0, c.s(1.0)), None);
        assert!(
            r.status(c.s(1.0))[1]
                .traffic_p90_ms
                .is_some_and(|p| (59_000.0..61_000.0).contains(&p))
        );
        // An empty merge changes nothing.
        assert_eq!(
            r.merge_traffic(1, &Histogram::new(3).expect("histogram"), 0, c.s(1.0)),
            None
        );
        assert_eq!(r.status(c.s(1.0))[1].traffic_samples, 5500);
    }

    #[test]
    fn few_setups_do_not_count_and_traffic_alone_gives_a_score() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 5, &[(0, 20)]);
        // Nine slow set-ups (a few cold handshakes) are below traffic_min_samples.
        r.merge_traffic(0, &hist(&[(200_000, 9)]), 0, c.s(1.0));
        let st = r.status(c.s(1.0));
        assert!(close(st[0].latency_ms, 20.0), "{:?}", st[0].latency_ms);
        r.merge_traffic(0, &hist(&[(200_000, 1)]), 0, c.s(1.0));
        assert!(close(r.status(c.s(1.0))[0].latency_ms, 200.0));
        // A gateway its probes cannot measure but traffic can is ranked by traffic.
        r.merge_traffic(1, &hist(&[(40_000, 50)]), 0, c.s(1.0));
        let st = r.status(c.s(1.0));
        assert_eq!(st[1].p90_ms, None);
        assert!(close(st[1].score_ms, 40.0));
        // Traffic leaves the window like probes do.
        let st = r.status(c.s(61.0));
        assert_eq!((st[0].traffic_samples, st[0].traffic_p90_ms), (0, None));
    }

    #[test]
    fn data_path_slower_than_probes_hands_over_by_the_damping() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        let mut switches = Vec::new();
        for i in 0..10 {
            let t = c.s(f64::from(i));
            // Both probe at 20 ms; the data path to gateway 0 (in use) takes 60 ms.
            feed(&mut r, t, 1, &[(0, 20), (1, 22)]);
            if r.current() == Some(0) {
                r.merge_traffic(0, &hist(&[(60_000, 20)]), 0, t);
            }
            if let Some(s) = r.evaluate(t) {
                switches.push((i, s));
            }
        }
        assert_eq!(switches.len(), 1, "{switches:?}");
        let (round, s) = &switches[0];
        assert_eq!((*round, s.to), (2, Some(1)));
        assert!(matches!(s.reason, SwitchReason::Better { rounds: 3, .. }));
        // Gateway 0 keeps its slow data path in the window: no switch back
        // while that lasts, although its probes are faster.
        assert!(close(r.status(c.s(9.0))[0].latency_ms, 60.0));
    }

    #[test]
    fn failing_traffic_merge_fails_over_and_a_healthy_one_clears_the_mark() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 20), (1, 30)]);
        // 6 failures out of 10 attempts >= 0.5: the data path reports it failing.
        let s = r
            .merge_traffic(0, &hist(&[(20_000, 4)]), 6, c.s(1.0))
            .expect("fail-over");
        assert_eq!(
            (s.to, &s.reason),
            (
                Some(1),
                &SwitchReason::Failed {
                    source: Evidence::Traffic
                }
            )
        );
        assert!(s.to_string().contains("data path"), "{s}");
        assert!(r.status(c.s(1.0))[0].failed);
        // A mostly healthy merge for gateway 0 clears it.
        assert_eq!(r.merge_traffic(0, &hist(&[(20_000, 9)]), 1, c.s(2.0)), None);
        assert!(!r.status(c.s(2.0))[0].failed);
    }

    #[test]
    fn slots_by_rank_and_pinned() {
        let c = Clock::new();
        let mut r = Ranker::new(3, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 30), (1, 10), (2, 20)]);
        // Before any switch, current (0) still comes first.
        assert_eq!(r.order(c.s(0.0)), vec![0, 1, 2]);
        for i in 1..=3 {
            r.evaluate(c.s(f64::from(i)));
        }
        let now = c.s(3.0);
        assert_eq!(r.current(), Some(1));
        assert_eq!(r.order(now), vec![1, 2, 0]);
        assert_eq!(
            r.slots(3, false, now),
            vec![vec![1, 2, 0], vec![2, 1, 0], vec![0, 1, 2]]
        );
        assert_eq!(r.slots(3, true, now), vec![vec![0, 1, 2], vec![1, 2, 0], vec![2, 1, 0]]);
        // More slots than gateways: extra ones take the best in default mode and when pinned.
        assert_eq!(r.slots(4, true, now)[3], vec![1, 2, 0]);
        // Gateway 2 becomes unavailable: it keeps its pinned slot but loses its ranked one.
        for i in 0..20 {
            fail(&mut r, 2, Evidence::Probe, c.s(3.0 + f64::from(i) * 0.05));
        }
        let now = c.s(4.0);
        assert_eq!(r.status(now)[2].state, GatewayState::Unavailable);
        assert_eq!(r.order(now), vec![1, 0, 2]);
        assert_eq!(
            r.slots(3, false, now),
            vec![vec![1, 0, 2], vec![0, 1, 2], vec![1, 0, 2]]
        );
        assert_eq!(r.slots(3, true, now), vec![vec![0, 1, 2], vec![1, 0, 2], vec![2, 1, 0]]);
        assert_eq!(r.slots(0, false, now), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn status_and_switch_serialise() {
        let c = Clock::new();
        let mut r = Ranker::new(2, RankConfig::default(), c.s(0.0));
        feed(&mut r, c.s(0.0), 10, &[(0, 20), (1, 30)]);
        fail(&mut r, 0, Evidence::KeepAlive, c.s(1.0));
        let st = serde_json::to_value(r.status(c.s(2.0))).expect("json");
        assert_eq!(st[0]["state"], "available");
        assert_eq!(st[0]["failed"], true);
        assert_eq!(st[1]["state"], "selected");
        assert_eq!(st[1]["samples"], 10);
        assert!(st[1]["p90_ms"].as_f64().is_some_and(|p| (p - 30.0).abs() < 0.1));
        assert!(st[0]["reputation"].as_f64().is_some_and(|p| p < 1.0));
        let v = r.last_switch().expect("switch").view(c.s(2.5));
        let j = serde_json::to_value(&v).expect("json");
        assert_eq!(j["from"], 0);
        assert_eq!(j["to"], 1);
        assert_eq!(j["reason"]["kind"], "failed");
        assert_eq!(j["reason"]["source"], "keep_alive");
        assert_eq!(
            j["text"],
            "gateway 0 failed its keep-alive probe: switched to gateway 1"
        );
        assert!((v.ago_ms - 1500.0).abs() < 1e-6);
    }

    #[test]
    fn switch_texts() {
        let c = Clock::new();
        let s = |from, to, reason| Switch {
            from,
            to,
            reason,
            at: c.s(0.0),
        };
        let cases = [
            (
                s(None, Some(0), SwitchReason::Startup),
                "start-up: gateway 0 is the default",
            ),
            (
                s(
                    Some(0),
                    Some(2),
                    SwitchReason::Better {
                        rounds: 3,
                        from_score_ms: Some(31.04),
                        to_score_ms: 14.2,
                    },
                ),
                "gateway 2 beat gateway 0 by the margins for 3 rounds (score 14.2 ms vs 31.0 ms)",
            ),
            (
                s(
                    Some(1),
                    None,
                    SwitchReason::Unavailable {
                        reputation: 0.62,
                        threshold: 0.7,
                    },
                ),
                "gateway 1 became unavailable (reputation 0.62 below 0.70): switched to no gateway",
            ),
            (
                s(None, Some(1), SwitchReason::Recovered),
                "gateway 1 became available while none was",
            ),
        ];
        for (sw, text) in cases {
            assert_eq!(sw.to_string(), text);
        }
    }

    #[test]
    fn invalid_config_is_reported_and_replaced_by_defaults() {
        assert_eq!(RankConfig::default().validate(), Ok(()));
        let bad = RankConfig {
            window_slices: 0,
            quantile: f64::NAN,
            down_threshold: 0.9,
            up_threshold: 0.8,
            reputation_min_weight: f64::INFINITY,
            significant_figures: 9,
            ..RankConfig::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.key), Err("window_slices"));
        assert_eq!(
            bad.validate().map_err(|e| e.to_string()),
            Err("window_slices: must be at least 1".to_owned())
        );
        let keys: Vec<_> = bad.problems().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"quantile") && keys.contains(&"up_threshold") && keys.contains(&"significant_figures"));
        let c = Clock::new();
        let r = Ranker::new(2, bad, c.s(0.0));
        assert_eq!(r.config(), &RankConfig::default());
        assert_eq!(r.config().validate(), Ok(()));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Sample {
                gw: usize,
                latency_ms: Option<u32>,
                source: Evidence,
            },
            Merge {
                gw: usize,
                latencies_ms: Vec<u32>,
                failures: u8,
            },
            Evaluate,
            Advance(u32),
            Rewind(u16),
        }

        fn source() -> impl Strategy<Value = Evidence> {
            prop_oneof![
                Just(Evidence::Probe),
                Just(Evidence::KeepAlive),
                Just(Evidence::Traffic)
            ]
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0usize..6, proptest::option::weighted(0.7, 0u32..200_000), source())
                    .prop_map(|(gw, latency_ms, source)| Op::Sample { gw, latency_ms, source }),
                1 => (0usize..6, proptest::collection::vec(0u32..500, 0..20), any::<u8>())
                    .prop_map(|(gw, latencies_ms, failures)| Op::Merge { gw, latencies_ms, failures }),
                2 => Just(Op::Evaluate),
                2 => (0u32..30_000).prop_map(Op::Advance),
                1 => any::<u16>().prop_map(Op::Rewind),
            ]
        }

        fn config() -> impl Strategy<Value = RankConfig> {
            (1u32..4, 1u32..5, 0.0f64..0.5, 0u64..10, 0.5f64..0.95).prop_map(
                |(window_s, switch_rounds, rel_margin, abs_ms, down)| RankConfig {
                    window: Duration::from_secs(u64::from(window_s) * 10),
                    window_slices: window_s,
                    switch_rounds,
                    rel_margin,
                    abs_margin: Duration::from_millis(abs_ms),
                    down_threshold: down,
                    up_threshold: (down + 0.04).min(0.99),
                    significant_figures: 2,
                    ..RankConfig::default()
                },
            )
        }

        fn is_permutation(v: &[usize], n: usize) -> bool {
            let mut s = v.to_vec();
            s.sort_unstable();
            s == (0..n).collect::<Vec<_>>()
        }

        fn check(r: &Ranker, now: Instant) -> Result<(), TestCaseError> {
            let n = r.gateways.len();
            let any_available = r.gateways.iter().any(|g| g.available);
            prop_assert_eq!(
                r.current().is_some(),
                any_available,
                "current is None iff none available"
            );
            if let Some(c) = r.current() {
                prop_assert!(r.gateways[c].available, "current {} is unavailable", c);
                if r.gateways[c].failed {
                    prop_assert!(
                        !r.gateways.iter().any(Gateway::eligible),
                        "failed current while another is usable"
                    );
                }
            }
            let order = r.order(now);
            prop_assert!(is_permutation(&order, n), "order {:?}", order);
            if let Some(c) = r.current() {
                prop_assert_eq!(order[0], c);
            }
            // Available gateways come before unavailable ones.
            let first_down = order.iter().position(|&i| !r.gateways[i].available).unwrap_or(n);
            prop_assert!(order[first_down..].iter().all(|&i| !r.gateways[i].available));
            for pinned in [false, true] {
                let slots = r.slots(n + 1, pinned, now);
                prop_assert_eq!(slots.len(), n + 1);
                for s in &slots {
                    prop_assert!(is_permutation(s, n), "slot {:?}", s);
                }
                if !pinned && any_available {
                    prop_assert!(slots.iter().all(|s| r.gateways[s[0]].available));
                }
            }
            let st = r.status(now);
            prop_assert_eq!(st.len(), n);
            prop_assert!(serde_json::to_string(&st).is_ok());
            prop_assert!(st.iter().all(|g| (0.0..=1.0).contains(&g.reputation)));
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn invariants_hold_for_any_sequence(
                n in 0usize..5,
                cfg in config(),
                ops in proptest::collection::vec(op(), 0..120),
            ) {
                let base = Instant::now() + Duration::from_secs(1000);
                let mut now = base;
                let mut r = Ranker::new(n, cfg, now);
                check(&r, now)?;
                for op in ops {
                    let before = r.current();
                    let sw = match op {
                        Op::Sample { gw, latency_ms, source } => {
                            let outcome = latency_ms.map_or(SampleOutcome::Failed, |l| SampleOutcome::Ok(Duration::from_millis(u64::from(l))));
                            r.record(gw, outcome, source, now)
                        }
                        Op::Merge { gw, latencies_ms, failures } => {
                            let mut h = Histogram::<u64>::new(3).expect("histogram");
                            for l in latencies_ms {
                                h.record(u64::from(l) * 1000).expect("record");
                            }
                            r.merge_traffic(gw, &h, u64::from(failures), now)
                        }
                        Op::Evaluate => r.evaluate(now),
                        Op::Advance(d) => { now += Duration::from_millis(u64::from(d)); None }
                        Op::Rewind(d) => { now -= Duration::from_millis(u64::from(d)); None }
                    };
                    match &sw {
                        Some(s) => {
                            prop_assert_eq!(s.from, before);
                            prop_assert_eq!(s.to, r.current());
                            prop_assert_ne!(s.from, s.to);
                            prop_assert_eq!(r.last_switch(), Some(s));
                        }
                        None => prop_assert_eq!(r.current(), before),
                    }
                    check(&r, now)?;
                }
            }

            #[test]
            fn damping_switches_at_most_once_to_a_gateway_nobody_beats(
                lat in proptest::collection::vec(1u64..500, 2..5),
            ) {
                // Steady latencies, healthy gateways: the only possible switch is one
                // damped improvement at the third round, to the best challenger.
                let base = Instant::now();
                let cfg = RankConfig::default();
                let (rel, abs) = (cfg.rel_margin, ms(cfg.abs_margin));
                let mut r = Ranker::new(lat.len(), cfg, base);
                let beats = |s: f64, c: f64| s < c * (1.0 - rel) && s < c - abs;
                let mut switches = Vec::new();
                let mut first_scores = Vec::new();
                for round in 0..10u64 {
                    let now = base + Duration::from_secs(round);
                    for (gw, &l) in lat.iter().enumerate() {
                        r.record(gw, SampleOutcome::Ok(Duration::from_millis(l)), Evidence::Probe, now);
                    }
                    if round == 0 {
                        first_scores = r.status(now).iter().map(|g| g.score_ms.expect("measured")).collect();
                    }
                    if let Some(s) = r.evaluate(now) {
                        switches.push((round, s));
                    }
                }
                let scores: Vec<f64> = r.status(base + Duration::from_secs(9)).iter().map(|g| g.score_ms.expect("measured")).collect();
                prop_assert_eq!(&scores, &first_scores);
                let c = r.current().expect("current");
                prop_assert!(!scores.iter().any(|&s| beats(s, scores[c])), "current {} is beaten: {:?}", c, scores);
                let zero_beaten = scores.iter().any(|&s| beats(s, scores[0]));
                prop_assert_eq!(switches.len(), usize::from(zero_beaten));
                if let Some((round, s)) = switches.first() {
                    prop_assert_eq!(*round, 2);
                    let damped = matches!(s.reason, SwitchReason::Better { rounds: 3, .. });
                    prop_assert!(damped);
                    let best = scores.iter().copied().fold(f64::INFINITY, f64::min);
                    prop_assert_eq!(scores[c], best);
                }
            }

            #[test]
            fn readmission_takes_the_streak_or_the_reputation_and_flapping_doubles_it(
                readmit in 1u32..6,
                ops in proptest::collection::vec((proptest::bool::weighted(0.6), 0u32..20_000), 0..300),
            ) {
                // One gateway, probe samples only. Whenever it comes back, the
                // successes since its last failure reached the count it needed
                // (or its reputation rose above up_threshold); whenever it falls
                // within `window` of coming back, the count doubles (up to 32x).
                let cfg = RankConfig { readmit_successes: readmit, ..RankConfig::default() };
                let (up, window) = (cfg.up_threshold, cfg.window);
                let base = Instant::now();
                let mut now = base;
                let mut r = Ranker::new(1, cfg, now);
                let mut last_back: Option<Instant> = None;
                let mut last_need = u64::from(readmit);
                for (good, advance) in ops {
                    now += Duration::from_millis(u64::from(advance));
                    let before = r.status(now)[0].clone();
                    let outcome = if good { SampleOutcome::Ok(Duration::from_millis(10)) } else { SampleOutcome::Failed };
                    r.record(0, outcome, Evidence::Probe, now);
                    let after = r.status(now)[0].clone();
                    let was_down = before.state == GatewayState::Unavailable;
                    let is_down = after.state == GatewayState::Unavailable;
                    if was_down && !is_down {
                        prop_assert!(good, "re-admitted on a failure");
                        let need = before.readmit_after.expect("unavailable has a count");
                        prop_assert!(
                            after.ok_streak >= need || after.reputation > up,
                            "back after {} successes, needed {}, reputation {}", after.ok_streak, need, after.reputation
                        );
                        last_back = Some(now);
                    }
                    if !was_down && is_down {
                        prop_assert!(!good, "taken out on a success");
                        let need = after.readmit_after.expect("unavailable has a count");
                        let flapped = last_back.is_some_and(|t| now.saturating_duration_since(t) < window);
                        let expect = if flapped { (last_need * 2).min(u64::from(readmit) << 5) } else { u64::from(readmit) };
                        prop_assert_eq!(need, expect);
                        last_need = need;
                    }
                    prop_assert_eq!(r.current().is_none(), is_down);
                }
            }

            #[test]
            fn any_config_is_sanitised_without_panic(
                window_ms in any::<u32>(),
                slices in any::<u32>(),
                sigfig in any::<u8>(),
                quantile in any::<f64>(),
                rel in any::<f64>(),
                down in any::<f64>(),
                up in any::<f64>(),
                weight in any::<f64>(),
                ratio in any::<f64>(),
                half_life_ms in any::<u32>(),
                max_ms in any::<u32>(),
            ) {
                let cfg = RankConfig {
                    window: Duration::from_millis(u64::from(window_ms)),
                    window_slices: slices % 100_000,
                    significant_figures: sigfig,
                    quantile,
                    rel_margin: rel,
                    down_threshold: down,
                    up_threshold: up,
                    reputation_min_weight: weight,
                    traffic_failover_ratio: ratio,
                    reputation_half_life: Duration::from_millis(u64::from(half_life_ms)),
                    max_latency: Duration::from_millis(u64::from(max_ms)),
                    ..RankConfig::default()
                };
                let base = Instant::now();
                let mut r = Ranker::new(2, cfg, base);
                prop_assert_eq!(r.config().validate(), Ok(()));
                r.record(0, SampleOutcome::Ok(Duration::MAX), Evidence::Probe, base);
                r.record(1, SampleOutcome::Failed, Evidence::Traffic, base + Duration::from_secs(1));
                r.evaluate(base + Duration::from_secs(2));
                check(&r, base + Duration::from_secs(2))?;
            }
        }
    }
}
