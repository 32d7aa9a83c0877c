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
    /// so one sample after a pause cannot swing it (default 4 samples).
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
    /// [`Source::Traffic`] always does.
    pub traffic_failover_ratio: f64,
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
            reputation_min_weight: 4.0,
            down_threshold: 0.7,
            up_threshold: 0.9,
            traffic_failover_ratio: 0.5,
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
        bad(
            self.window <= MAX_SPAN,
            "window",
            "must be at most one hour",
        );
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

/// Where a sample comes from. Only [`Source::KeepAlive`] and
/// [`Source::Traffic`] failures trigger immediate fail-over; a failed
/// [`Source::Probe`] only lowers the reputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
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
    Failed { source: Source },
    /// The current gateway's reputation fell below the down threshold.
    Unavailable { reputation: f64, threshold: f64 },
    /// A gateway became usable while none was current, or while the current
    /// one was marked failed.
    Recovered,
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
                write!(f, "{to} beat {from} by the margins for {rounds} rounds (score {to_score_ms:.1} ms vs ")?;
                match from_score_ms {
                    Some(s) => write!(f, "{s:.1} ms)"),
                    None => f.write_str("no recent latency)"),
                }
            }
            SwitchReason::Failed { source } => {
                match source {
                    Source::KeepAlive => write!(f, "{from} failed its keep-alive probe")?,
                    Source::Traffic => write!(f, "the data path reported {from} failing")?,
                    Source::Probe => write!(f, "{from} failed a probe")?,
                }
                write!(f, ": switched to {to}")
            }
            SwitchReason::Unavailable { reputation, threshold } => {
                write!(
                    f,
                    "{from} became unavailable (reputation {reputation:.2} below {threshold:.2}): switched to {to}"
                )
            }
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
    /// `None` when the window holds no latency sample.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The ranking score (lower is better); `None` when unmeasured.
    pub score_ms: Option<f64>,
    pub reputation: f64,
    /// Latency samples (successes) in the window.
    pub samples: u64,
    /// Failures in the window.
    pub failures: u64,
    /// Consecutive rounds this gateway has beaten the current one by the margins.
    pub wins: u32,
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
    fn new(cfg: &RankConfig) -> Window {
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
            sigfig: cfg.significant_figures,
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
    window: Window,
    reputation: Reputation,
    /// Hysteresis state on the reputation.
    available: bool,
    /// Last keep-alive/traffic report failed, no success since.
    failed: bool,
    /// Consecutive evaluation rounds beating the current gateway.
    wins: u32,
}

impl Gateway {
    fn apply_hysteresis(&mut self, cfg: &RankConfig) {
        let r = self.reputation.ratio;
        if self.available && r < cfg.down_threshold {
            self.available = false;
        } else if !self.available && r > cfg.up_threshold {
            self.available = true;
        }
    }

    fn eligible(&self) -> bool {
        self.available && !self.failed
    }
}

/// What the ranking needs of a gateway at some `now`.
#[derive(Debug, Clone, Copy)]
struct View {
    latency: Option<Latency>,
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
            gateways: (0..gateways)
                .map(|_| Gateway {
                    window: Window::new(&cfg),
                    reputation: Reputation::new(&cfg, now),
                    available: true,
                    failed: false,
                    wins: 0,
                })
                .collect(),
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

    /// Records one sample. A failure from [`Source::KeepAlive`] or
    /// [`Source::Traffic`] marks the gateway failed until its next success;
    /// if it is the current one and another gateway is eligible, the switch
    /// happens in this call and is returned. Any call that makes the current
    /// gateway unavailable (or makes one available when none was) also
    /// switches at once. Unknown `gw` indices are ignored.
    pub fn record(&mut self, gw: usize, outcome: SampleOutcome, source: Source, now: Instant) -> Option<Switch> {
        let k = self.slice_of(now);
        let cfg = &self.cfg;
        let g = self.gateways.get_mut(gw)?;
        let failed_now = match outcome {
            SampleOutcome::Ok(d) => {
                g.window.record(k, micros(d));
                g.reputation.update(1, 0, now, cfg);
                g.failed = false;
                false
            }
            SampleOutcome::Failed => {
                g.window.fail(k, 1);
                g.reputation.update(0, 1, now, cfg);
                let hard = source != Source::Probe;
                g.failed |= hard;
                hard
            }
        };
        g.apply_hysteresis(cfg);
        let cause = (failed_now && self.current == Some(gw)).then_some(source);
        self.enforce(now, cause)
    }

    /// Merges what the workers saw on real traffic since the last tick: a
    /// histogram of successful tunnel-setup latencies in microseconds (its
    /// count is the number of successes) and a failure count. Values beyond
    /// `max_latency` are clamped. If failures are at least
    /// `traffic_failover_ratio` of the attempts, this is a failure report as
    /// in [`Ranker::record`] with [`Source::Traffic`]; otherwise any success
    /// clears a failed mark.
    pub fn merge_traffic(
        &mut self,
        gw: usize,
        latencies_us: &Histogram<u64>,
        failures: u64,
        now: Instant,
    ) -> Option<Switch> {
        let k = self.slice_of(now);
        let cfg = &self.cfg;
        let g = self.gateways.get_mut(gw)?;
        let successes = latencies_us.len();
        g.window.record_hist(k, latencies_us);
        if failures > 0 {
            g.window.fail(k, failures);
        }
        g.reputation.update(successes, failures, now, cfg);
        let attempts = successes.saturating_add(failures) as f64;
        let failing = failures > 0 && failures as f64 >= cfg.traffic_failover_ratio * attempts;
        if failing {
            g.failed = true;
        } else if successes > 0 {
            g.failed = false;
        }
        g.apply_hysteresis(cfg);
        let cause = (failing && self.current == Some(gw)).then_some(Source::Traffic);
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
                score_ms: v.score,
                reputation: g.reputation.ratio,
                samples: v.latency.map_or(0, |l| l.samples),
                failures: g.window.failures(k),
                wins: g.wins,
            })
            .collect()
    }

    /// The last change of the current gateway (the start-up choice until then).
    pub fn last_switch(&self) -> Option<&Switch> {
        self.last_switch.as_ref()
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
                let r = g.reputation.ratio.max(MIN_SCORE_REPUTATION);
                View {
                    latency,
                    score: latency.map(|l| l.q / r + (1.0 - r) / r * p),
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
    fn enforce(&mut self, now: Instant, cause: Option<Source>) -> Option<Switch> {
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
