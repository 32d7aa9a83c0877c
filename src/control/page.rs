//! The status page (`GET /` on the control API): one self-contained HTML
//! document with inline CSS and server-side SVG plots. No script, no
//! external asset, no web font: it renders the same with no network at all,
//! and its `Content-Security-Policy` forbids loading anything.
//!
//! It reloads itself every [`REFRESH_SECONDS`] (`<meta http-equiv=refresh>`).

use std::fmt::Write as _;
use std::time::SystemTime;

use super::Status;
use super::history::{History, SAMPLE_SPAN, Sample};

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 5;
/// A client certificate expiring within this many seconds puts the client in
/// the `error` state (it still works, but someone must renew it).
pub const CERT_WARN_SECONDS: i64 = 14 * 24 * 3600;

/// The client's state in one word (`enabled`, `connection_pending`,
/// `error`) and why, from what the status says.
///
/// The one place the state is derived for the page, the metrics and the tray
/// (through `Status::summary`).
pub fn state_label(s: &Status) -> (&'static str, String) {
    // The state machine (`super::state`) decides the state; what follows
    // only words an enabled client's situation (through which gateway).
    use super::state::ClientState;
    match &s.state {
        ClientState::Enabled => {}
        ClientState::Disabled { .. } => return ("disabled", s.state.to_string()),
        ClientState::ConnectionPending { why } => return ("connection_pending", why.clone()),
        ClientState::Error { reason } => return ("error", reason.clone()),
    }
    let (_, text) = situation(s);
    ("enabled", text)
}

/// What the status says about where traffic goes, in words.
fn situation(s: &Status) -> (&'static str, String) {
    let err = s.error.as_deref().unwrap_or("no reason recorded");
    if let Some(c) = &s.certificate
        && c.expires_in_seconds <= 0
    {
        return (
            "error",
            format!(
                "the client certificate expired on {}: gateways refuse it; it must be renewed",
                c.not_after_text
            ),
        );
    }
    match s.traffic {
        "gateway" => {
            if !s.gateways.iter().any(|g| g.rank.samples > 0) {
                return (
                    "connection_pending",
                    "connecting: no gateway has answered yet".to_string(),
                );
            }
            if let Some(c) = &s.certificate
                && c.expires_in_seconds < CERT_WARN_SECONDS
            {
                return (
                    "error",
                    format!(
                        "the client certificate expires in {} days ({}): renew it",
                        c.expires_in_seconds / 86_400,
                        c.not_after_text
                    ),
                );
            }
            let via = s.selected.as_deref().unwrap_or("?");
            ("enabled", format!("protected: traffic goes through gateway {via}"))
        }
        "direct:on-premise" => (
            "enabled",
            "on the company network: traffic goes DIRECT, as the policy says".to_string(),
        ),
        "direct:fail-open" => (
            "error",
            format!("no gateway is reachable: traffic goes DIRECT, unscanned (fail-open): {err}"),
        ),
        "refused:fail-closed" => (
            "error",
            format!("no gateway is reachable: requests are refused (fail-closed): {err}"),
        ),
        "refused:untrusted" => (
            "error",
            format!("a gateway failed authentication: requests are refused, never sent DIRECT: {err}"),
        ),
        other => ("error", format!("traffic: {other}")),
    }
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    crate::forward::http::html_escape(s)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:.1} ms"))
}

/// Whole seconds of a non-negative time (0 for negative or NaN).
fn whole_secs(secs: f64) -> u64 {
    std::time::Duration::try_from_secs_f64(secs.max(0.0)).map_or(0, |d| d.as_secs())
}

/// `HH:MM:SS` UTC of a Unix time.
fn clock(at: f64) -> String {
    let s = whole_secs(at) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn ago(secs: f64) -> String {
    let s = whole_secs(secs);
    if s < 120 {
        format!("{s} s ago")
    } else if s < 7200 {
        format!("{} min ago", s / 60)
    } else {
        format!("{} h ago", s / 3600)
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The smallest of 1, 2, 5 × 10^k at or above `v` (at least 1).
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 1.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Plot geometry.
const W: f64 = 640.0;
const H: f64 = 170.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 24.0;

/// The time axis: from the oldest sample within [`SAMPLE_SPAN`] (a young
/// client's plot is not squeezed against its right edge), at least
/// [`MIN_SPAN`] seconds.
fn span_of(samples: &[Sample], now: f64) -> f64 {
    let max = SAMPLE_SPAN.as_secs_f64();
    let oldest = samples
        .iter()
        .map(|s| now - s.at)
        .filter(|age| *age <= max)
        .fold(0.0f64, f64::max);
    (oldest * 1.05).clamp(MIN_SPAN, max)
}

/// The shortest time axis, seconds.
pub const MIN_SPAN: f64 = 10.0;

fn axis_label(secs_ago: f64) -> String {
    if secs_ago < 0.5 {
        "now".into()
    } else if secs_ago < 120.0 {
        format!("−{secs_ago:.0} s")
    } else {
        format!("−{:.0} min", secs_ago / 60.0)
    }
}

/// One gateway's latency over (up to) the last [`SAMPLE_SPAN`] as an SVG
/// element: a line through successful probes, red marks at failed ones.
pub fn plot(name: &str, samples: &[Sample], now: f64) -> String {
    let span = span_of(samples, now);
    let start = now - span;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let visible = || samples.iter().filter(move |s| s.at >= start);
    let max = visible().filter_map(|s| s.ms).fold(0.0f64, f64::max);
    let top = nice_ceiling(max * 1.1);
    let x = |t: f64| LEFT + ((t - start) / span).clamp(0.0, 1.0) * pw;
    let y = |v: f64| TOP + ph - (v / top).clamp(0.0, 1.0) * ph;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="plot" data-gateway="{n}" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="probe latency of gateway {n}">"#,
        n = esc(name)
    );
    let _ = write!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fbfbfd" stroke="#c8c8d0"/>"##
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = top * frac;
        let yy = y(v);
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e2e2ea"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{} ms</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            if top < 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        );
    }
    for i in 0..4 {
        let label = axis_label(span * (3 - i) as f64 / 3.0);
        let xx = LEFT + pw * i as f64 / 3.0;
        let anchor = match i {
            0 => "start",
            3 => "end",
            _ => "middle",
        };
        let _ = write!(
            o,
            r##"<text x="{xx:.1}" y="{:.1}" font-size="11" text-anchor="{anchor}" fill="#555">{label}</text>"##,
            H - 6.0
        );
    }
    let pts: Vec<(f64, f64)> = visible().filter_map(|s| s.ms.map(|v| (x(s.at), y(v)))).collect();
    if pts.len() > 1 {
        o.push_str(r##"<polyline class="latency" fill="none" stroke="#2b6cb0" stroke-width="1.5" points=""##);
        for (i, (px, py)) in pts.iter().enumerate() {
            if i > 0 {
                o.push(' ');
            }
            let _ = write!(o, "{px:.1},{py:.1}");
        }
        o.push_str(r#""/>"#);
    }
    for (px, py) in &pts {
        let _ = write!(
            o,
            r##"<circle class="ok" cx="{px:.1}" cy="{py:.1}" r="2" fill="#2b6cb0"/>"##
        );
    }
    for s in visible().filter(|s| s.ms.is_none()) {
        let _ = write!(
            o,
            r##"<line class="failed" x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#c53030" stroke-width="1.5"><title>probe failed at {2} UTC</title></line>"##,
            x(s.at),
            TOP + ph,
            clock(s.at)
        );
    }
    if visible().next().is_none() {
        let _ = write!(
            o,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#777">no probe results yet</text>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    o.push_str("</svg>");
    o
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1a202c;background:#f4f5f8}\
main{max-width:1000px;margin:0 auto;padding:16px 24px}\
h1{font-size:20px;margin:8px 0}h2{font-size:16px;margin:24px 0 8px}\
.state{padding:12px 16px;border-radius:6px;margin:12px 0;border:1px solid}\
.state b{font-size:18px;margin-right:8px}\
.enabled{background:#e6f4ea;border-color:#34a853}\
.connection_pending{background:#fff8e1;border-color:#f9a825}\
.disabled{background:#eceff1;border-color:#78909c}\
.error{background:#fdecea;border-color:#d93025}\
table{border-collapse:collapse;background:#fff;margin:4px 0}\
th,td{border:1px solid #dde;padding:4px 10px;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.gw{background:#fff;border:1px solid #dde;border-radius:6px;padding:8px 12px;margin:8px 0}\
.muted{color:#666;font-size:12px}";

fn row(o: &mut String, label: &str, value: &str) {
    let _ = write!(
        o,
        r#"<tr><th>{}</th><td class="n">{}</td></tr>"#,
        esc(label),
        esc(value)
    );
}

/// The whole page for `status`, with plots from `history`, at `now`.
pub fn render(status: &Status, history: &History, now: SystemTime) -> String {
    let now_s = unix(now);
    let (state, reason) = state_label(status);
    let title = match state {
        "enabled" => "Enabled",
        "connection_pending" => "Connecting",
        "disabled" => "Disabled",
        _ => "Error",
    };
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}"><meta name="viewport" content="width=device-width"><title>msc: {title}</title><style>{STYLE}</style></head><body><main>"#
    );
    let _ = write!(
        o,
        r#"<h1>msc client {}</h1><div id="state" class="state {state}" data-state="{state}"><b>{title}</b><span id="reason">{}</span></div>"#,
        esc(status.version),
        esc(&reason)
    );
    let _ = write!(
        o,
        r#"<p class="muted">Up {}, {} workers, {}. Updated {} UTC; this page reloads every {REFRESH_SECONDS} s.</p>"#,
        ago(status.uptime_seconds).trim_end_matches(" ago"),
        status.workers,
        if status.fail_open {
            "fail-open policy"
        } else {
            "fail-closed policy"
        },
        clock(now_s)
    );

    o.push_str(r#"<h2>Gateways</h2><table id="gateways"><tr><th>Gateway</th><th>State</th><th>p50</th><th>p90</th><th>p99</th><th>Reputation</th><th>Samples</th><th>Failures</th><th>Address</th></tr>"#);
    for g in &status.gateways {
        let state = format!(
            "{}{}",
            serde_json::to_value(g.rank.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            if g.rank.failed { " (failed)" } else { "" }
        );
        let _ = write!(
            o,
            r#"<tr data-gateway="{n}"><td>{n}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.3}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td></tr>"#,
            esc(&state),
            ms(g.rank.p50_ms),
            ms(g.rank.p90_ms),
            ms(g.rank.p99_ms),
            g.rank.reputation,
            g.rank.samples,
            g.rank.failures,
            esc(&g.address),
            n = esc(&g.name),
        );
    }
    o.push_str("</table>");

    o.push_str(r#"<h2>Probe latency (up to the last 30 minutes)</h2><div id="plots">"#);
    for (i, g) in status.gateways.iter().enumerate() {
        let samples: Vec<Sample> = history.samples(i).copied().collect();
        let _ = write!(
            o,
            r#"<div class="gw"><div><b>{}</b> <span class="muted">{} probe results; red: failed probes</span></div>{}</div>"#,
            esc(&g.name),
            samples.len(),
            plot(&g.name, &samples, now_s)
        );
    }
    o.push_str("</div>");

    o.push_str(r#"<h2>Recent gateway switches</h2>"#);
    if status.switches.is_empty() {
        o.push_str(r#"<p id="switches" class="muted">None since start.</p>"#);
    } else {
        o.push_str(r#"<table id="switches"><tr><th>When (UTC)</th><th>From</th><th>To</th><th>Reason</th></tr>"#);
        for s in &status.switches {
            let _ = write!(
                o,
                "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                clock(s.at),
                ago(now_s - s.at),
                esc(s.from.as_deref().unwrap_or("none")),
                esc(s.to.as_deref().unwrap_or("none")),
                esc(&s.reason)
            );
        }
        o.push_str("</table>");
    }

    let c = &status.counters;
    o.push_str(r#"<h2>Requests by route</h2><table id="routes">"#);
    for (g, gc) in status.gateways.iter().zip(&c.gateways) {
        row(&mut o, &format!("gateway {}", g.name), &gc.requests.to_string());
    }
    let d = &status.direct;
    row(&mut o, "DIRECT: on premise", &d.on_premise.to_string());
    row(&mut o, "DIRECT: fail-open (no gateway)", &d.fail_open.to_string());
    row(&mut o, "refused: fail-closed (no gateway)", &d.fail_closed.to_string());
    row(&mut o, "refused: untrusted gateway", &d.refused_untrusted.to_string());
    o.push_str("</table>");

    let (up, down) = c
        .gateways
        .iter()
        .fold((0u64, 0u64), |(u, d), g| (u + g.bytes_up, d + g.bytes_down));
    let opened: u64 = c.gateways.iter().map(|g| g.tunnels_opened).sum();
    let failed: u64 = c.gateways.iter().map(|g| g.tunnel_failures).sum();
    let t = &status.tls;
    o.push_str(r#"<h2>Counters</h2><table id="counters">"#);
    row(&mut o, "bytes sent through gateways", &bytes(up));
    row(&mut o, "bytes received through gateways", &bytes(down));
    row(&mut o, "tunnels opened", &opened.to_string());
    row(&mut o, "tunnels that failed to open", &failed.to_string());
    row(&mut o, "TLS handshakes", &t.handshakes.to_string());
    let pct = if t.handshakes > 0 {
        100.0 * t.resumed as f64 / t.handshakes as f64
    } else {
        0.0
    };
    row(&mut o, "handshakes resumed", &format!("{} ({pct:.0} %)", t.resumed));
    row(&mut o, "requests served by a pooled tunnel", &c.pool.hits.to_string());
    row(&mut o, "requests that opened a tunnel", &c.pool.misses.to_string());
    row(&mut o, "gateway switches", &c.switches.to_string());
    o.push_str("</table>");

    o.push_str(r#"<h2>Client certificate</h2>"#);
    match &status.certificate {
        Some(cert) => {
            o.push_str(r#"<table id="certificate">"#);
            row(&mut o, "subject", &cert.subject);
            row(&mut o, "issuer", &cert.issuer);
            let left = cert.expires_in_seconds;
            let when = if left <= 0 {
                format!("{} (EXPIRED)", cert.not_after_text)
            } else {
                format!("{} (in {} days)", cert.not_after_text, left / 86_400)
            };
            row(&mut o, "expires", &when);
            o.push_str("</table>");
        }
        None => o.push_str(r#"<p id="certificate">The client certificate could not be read.</p>"#),
    }
    if let Some(r) = &status.remote {
        remote_section(&mut o, r);
    }
    o.push_str(
        r#"<p class="muted">Read-only. Machine-readable: <a href="/status">/status</a> (JSON), <a href="/metrics">/metrics</a> (Prometheus).</p></main></body></html>"#,
    );
    o
}

/// Configuration from the gateway (docs/fleet.md).
fn remote_section(o: &mut String, r: &super::remote::RemoteStatus) {
    use super::remote::Source;
    o.push_str(r#"<h2>Configuration from the gateway</h2><table id="remote">"#);
    let source = match r.source {
        Source::Gateway => "from the gateway",
        Source::Cache => "the cached gateway document (the gateway was not reachable at start)",
        Source::Local => "the local file only",
    };
    row(o, "configuration", source);
    let doc = |o: &mut String, what: &str, d: &super::remote::DocStatus| {
        row(
            o,
            &format!("{what} in use"),
            &format!(
                "ETag {} from {} ({})",
                d.etag.as_deref().unwrap_or("-"),
                d.from.as_deref().unwrap_or("-"),
                d.fetched_at.as_deref().unwrap_or("-")
            ),
        );
        row(
            o,
            &format!("{what}: last fetch"),
            &format!(
                "{} ({})",
                d.last_result.unwrap_or("none yet"),
                d.last_fetch_at.as_deref().unwrap_or("-")
            ),
        );
        if let Some(e) = &d.last_error {
            row(o, &format!("{what}: last error"), e);
        }
    };
    doc(o, "document", &r.config);
    row(o, "PAC served", r.pac_source);
    if let Some(p) = &r.pac {
        doc(o, "administrator PAC", p);
    }
    if r.restart_needed {
        row(o, "pending", "settings beyond the PAC apply at the next start");
    }
    o.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(4.1), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn plot_draws_successes_and_failures_within_its_box() {
        let now = 10_000.0;
        let samples = [
            Sample {
                at: now - 1700.0,
                ms: Some(4.0),
            },
            Sample {
                at: now - 900.0,
                ms: None,
            },
            Sample {
                at: now - 10.0,
                ms: Some(8.0),
            },
            // Older than the span: not drawn.
            Sample {
                at: now - 4000.0,
                ms: Some(1000.0),
            },
        ];
        let svg = plot("gw<1>", &samples, now);
        assert!(svg.starts_with("<svg class=\"plot\" data-gateway=\"gw&lt;1&gt;\""));
        assert_eq!(svg.matches("<circle class=\"ok\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"failed\"").count(), 1);
        assert!(svg.contains("<polyline"));
        // The axis is scaled to the visible samples (8 ms -> 10 ms); the
        // sample older than the span is not drawn, and nothing is drawn
        // outside the plot.
        assert!(svg.contains(">10 ms<"), "{svg}");
        for n in svg.split(['"', ',', ' ']).filter_map(|t| t.parse::<f64>().ok()) {
            assert!((0.0..=W).contains(&n), "{n} outside the plot in {svg}");
        }
        assert!(svg.contains(">−30 min<") && svg.contains(">now<"), "full span: {svg}");
        let empty = plot("g", &[], now);
        assert!(empty.contains("no probe results yet"));
        assert!(empty.contains(">−10 s<"), "{empty}");
        // A young client: the axis spans its samples, not 30 minutes.
        let young = plot(
            "g",
            &[Sample {
                at: now - 200.0,
                ms: Some(1.0),
            }],
            now,
        );
        assert!(young.contains(">−4 min<") && !young.contains("30 min"), "{young}");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
