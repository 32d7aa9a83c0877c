//! `GET /metrics`: the status in the Prometheus text exposition format
//! (version 0.0.4). Names follow the Prometheus conventions: an `msc_`
//! prefix, base units (`_seconds`, `_bytes`), `_total` on counters, and the
//! labels `gateway`, `worker`, `route`, `reason`, `state`, `direction`.
//!
//! Everything comes from [`Status`]: the control plane's own view plus what
//! workers reported over the feedback channel (at most a second old).

use std::fmt::Write as _;

use super::Status;

/// `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every state `msc_state` reports (one series each, 1 for the current one).
pub const STATES: [&str; 4] = ["enabled", "disabled", "connection_pending", "error"];

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// Formats a sample value (Prometheus floats: `NaN`, `+Inf`).
fn val(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample; `labels` as (name, value) pairs.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, lv)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(lv));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", val(v));
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], v);
    }
}

/// The metrics page for `s`.
pub fn render(s: &Status) -> String {
    let mut o = Out(String::with_capacity(8 * 1024));
    let c = &s.counters;
    let names: Vec<&str> = s.gateways.iter().map(|g| g.name.as_str()).collect();

    o.family("msc_build_info", "gauge", "Always 1; the version as a label.");
    o.sample("msc_build_info", &[("version", s.version)], 1.0);
    o.one(
        "msc_uptime_seconds",
        "gauge",
        "Seconds since the client started.",
        s.uptime_seconds,
    );
    o.one("msc_workers", "gauge", "Worker threads.", s.workers as f64);
    o.one(
        "msc_fail_open",
        "gauge",
        "1 if requests go DIRECT when no gateway is available (fail-open), 0 if they are refused.",
        f64::from(u8::from(s.fail_open)),
    );
    o.family(
        "msc_state",
        "gauge",
        "The client's state: 1 for the current one (enabled, disabled, connection_pending, error).",
    );
    for st in STATES {
        o.sample(
            "msc_state",
            &[("state", st)],
            f64::from(u8::from(s.summary.state == st)),
        );
    }
    o.family(
        "msc_traffic_route",
        "gauge",
        "Where browser traffic goes now: 1 for the current route.",
    );
    for r in [
        "gateway",
        "direct:on-premise",
        "direct:fail-open",
        "refused:fail-closed",
        "refused:untrusted",
    ] {
        o.sample(
            "msc_traffic_route",
            &[("route", r)],
            f64::from(u8::from(s.traffic == r)),
        );
    }

    o.family(
        "msc_gateway_selected",
        "gauge",
        "1 for the gateway slot 1 uses (the best one), else 0.",
    );
    for n in &names {
        let sel = s.selected.as_deref() == Some(*n);
        o.sample("msc_gateway_selected", &[("gateway", n)], f64::from(u8::from(sel)));
    }
    o.family(
        "msc_gateway_available",
        "gauge",
        "1 if the gateway's reputation is above the availability threshold and it is not marked failed.",
    );
    for g in &s.gateways {
        let up = g.rank.state != crate::upstream::rank::GatewayState::Unavailable && !g.rank.failed;
        o.sample(
            "msc_gateway_available",
            &[("gateway", &g.name)],
            f64::from(u8::from(up)),
        );
    }
    o.family(
        "msc_gateway_latency_seconds",
        "gauge",
        "Probe latency quantiles over the ranking window (absent while unmeasured).",
    );
    for g in &s.gateways {
        for (q, v) in [("0.5", g.rank.p50_ms), ("0.9", g.rank.p90_ms), ("0.99", g.rank.p99_ms)] {
            if let Some(v) = v {
                o.sample(
                    "msc_gateway_latency_seconds",
                    &[("gateway", &g.name), ("quantile", q)],
                    v / 1e3,
                );
            }
        }
    }
    o.family(
        "msc_gateway_reputation",
        "gauge",
        "Decaying success ratio of the gateway (0..1).",
    );
    for g in &s.gateways {
        o.sample("msc_gateway_reputation", &[("gateway", &g.name)], g.rank.reputation);
    }
    o.family(
        "msc_gateway_window_samples",
        "gauge",
        "Successful latency samples in the ranking window.",
    );
    for g in &s.gateways {
        o.sample(
            "msc_gateway_window_samples",
            &[("gateway", &g.name)],
            g.rank.samples as f64,
        );
    }
    o.family(
        "msc_gateway_window_failures",
        "gauge",
        "Failures in the ranking window.",
    );
    for g in &s.gateways {
        o.sample(
            "msc_gateway_window_failures",
            &[("gateway", &g.name)],
            g.rank.failures as f64,
        );
    }

    o.family(
        "msc_requests_total",
        "counter",
        "Requests by route: through a gateway, DIRECT (on premise, fail-open) or refused.",
    );
    let through: u64 = c.gateways.iter().map(|g| g.requests).sum();
    for (route, v) in [
        ("gateway", through),
        ("direct:on-premise", s.direct.on_premise),
        ("direct:fail-open", s.direct.fail_open),
        ("refused:fail-closed", s.direct.fail_closed),
        ("refused:untrusted", s.direct.refused_untrusted),
    ] {
        o.sample("msc_requests_total", &[("route", route)], v as f64);
    }
    o.family(
        "msc_direct_requests_total",
        "counter",
        "Requests relayed DIRECT, without a gateway, by reason.",
    );
    let d = &s.direct;
    for (reason, v) in [
        ("on_premise", d.on_premise),
        ("fail_open", d.fail_open),
        ("disabled", d.disabled),
    ] {
        o.sample("msc_direct_requests_total", &[("reason", reason)], v as f64);
    }
    o.family(
        "msc_refused_requests_total",
        "counter",
        "Requests refused (503) because no gateway could be used, by reason.",
    );
    for (reason, v) in [
        ("fail_closed", d.fail_closed),
        ("untrusted_gateway", d.refused_untrusted),
    ] {
        o.sample("msc_refused_requests_total", &[("reason", reason)], v as f64);
    }
    o.family(
        "msc_gateway_requests_total",
        "counter",
        "Requests relayed through each gateway.",
    );
    for (n, g) in names.iter().zip(&c.gateways) {
        o.sample("msc_gateway_requests_total", &[("gateway", n)], g.requests as f64);
    }
    o.family(
        "msc_gateway_bytes_total",
        "counter",
        "Bytes relayed through each gateway (direction: up = to the gateway, down = to the browser, response heads included).",
    );
    for (n, g) in names.iter().zip(&c.gateways) {
        o.sample(
            "msc_gateway_bytes_total",
            &[("gateway", n), ("direction", "up")],
            g.bytes_up as f64,
        );
        o.sample(
            "msc_gateway_bytes_total",
            &[("gateway", n), ("direction", "down")],
            g.bytes_down as f64,
        );
    }
    o.family(
        "msc_tunnels_opened_total",
        "counter",
        "Mutual-TLS tunnels opened to each gateway.",
    );
    for (n, g) in names.iter().zip(&c.gateways) {
        o.sample("msc_tunnels_opened_total", &[("gateway", n)], g.tunnels_opened as f64);
    }
    o.family(
        "msc_tunnel_failures_total",
        "counter",
        "Tunnels to each gateway that could not be opened.",
    );
    for (n, g) in names.iter().zip(&c.gateways) {
        o.sample("msc_tunnel_failures_total", &[("gateway", n)], g.tunnel_failures as f64);
    }
    o.one(
        "msc_tls_handshakes_total",
        "counter",
        "Tunnel TLS handshakes completed.",
        s.tls.handshakes as f64,
    );
    o.one(
        "msc_tls_handshakes_resumed_total",
        "counter",
        "Tunnel TLS handshakes that resumed a TLS 1.3 session.",
        s.tls.resumed as f64,
    );
    o.one(
        "msc_pool_hits_total",
        "counter",
        "Requests that found a ready tunnel in their worker's pool.",
        c.pool.hits as f64,
    );
    o.one(
        "msc_pool_misses_total",
        "counter",
        "Requests that had to open a tunnel on their critical path.",
        c.pool.misses as f64,
    );
    o.one(
        "msc_gateway_switches_total",
        "counter",
        "Changes of the selected gateway since start.",
        c.switches as f64,
    );

    o.family(
        "msc_worker_requests_total",
        "counter",
        "Requests each worker relayed through gateways.",
    );
    for w in &c.workers {
        o.sample(
            "msc_worker_requests_total",
            &[("worker", &w.worker.to_string())],
            w.requests as f64,
        );
    }
    o.family(
        "msc_worker_requests_without_gateway_total",
        "counter",
        "Requests each worker handled without a gateway (DIRECT or refused).",
    );
    for w in &c.workers {
        o.sample(
            "msc_worker_requests_without_gateway_total",
            &[("worker", &w.worker.to_string())],
            w.without_gateway as f64,
        );
    }
    o.family(
        "msc_worker_bytes_total",
        "counter",
        "Bytes each worker relayed through gateways, by direction.",
    );
    for w in &c.workers {
        let id = w.worker.to_string();
        o.sample(
            "msc_worker_bytes_total",
            &[("worker", &id), ("direction", "up")],
            w.bytes_up as f64,
        );
        o.sample(
            "msc_worker_bytes_total",
            &[("worker", &id), ("direction", "down")],
            w.bytes_down as f64,
        );
    }
    o.family("msc_worker_pool_hits_total", "counter", "Pool hits per worker.");
    for w in &c.workers {
        o.sample(
            "msc_worker_pool_hits_total",
            &[("worker", &w.worker.to_string())],
            w.pool.hits as f64,
        );
    }
    o.family("msc_worker_pool_misses_total", "counter", "Pool misses per worker.");
    for w in &c.workers {
        o.sample(
            "msc_worker_pool_misses_total",
            &[("worker", &w.worker.to_string())],
            w.pool.misses as f64,
        );
    }
    o.family(
        "msc_worker_tls_handshakes_total",
        "counter",
        "Tunnel TLS handshakes per worker.",
    );
    for w in &c.workers {
        o.sample(
            "msc_worker_tls_handshakes_total",
            &[("worker", &w.worker.to_string())],
            w.tls.handshakes as f64,
        );
    }
    o.family(
        "msc_worker_tls_handshakes_resumed_total",
        "counter",
        "Resumed tunnel TLS handshakes per worker.",
    );
    for w in &c.workers {
        o.sample(
            "msc_worker_tls_handshakes_resumed_total",
            &[("worker", &w.worker.to_string())],
            w.tls.resumed as f64,
        );
    }
    if let Some(cert) = &s.certificate {
        o.one(
            "msc_client_certificate_expiry_timestamp_seconds",
            "gauge",
            "notAfter of the client certificate, seconds since the Unix epoch.",
            cert.not_after as f64,
        );
    }
    o.one(
        "msc_config_generation",
        "gauge",
        "The configuration generation in force: 0 at start, +1 per applied reload.",
        s.reload.generation as f64,
    );
    o.one(
        "msc_config_reload_failed",
        "gauge",
        "1 if the last configuration reload was rejected (the previous configuration still runs), else 0.",
        if s.reload.result == Some("rejected") { 1.0 } else { 0.0 },
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn special_floats() {
        assert_eq!(val(f64::NAN), "NaN");
        assert_eq!(val(f64::INFINITY), "+Inf");
        assert_eq!(val(0.25), "0.25");
        assert_eq!(val(3.0), "3");
    }
}
