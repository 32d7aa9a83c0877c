//! `msc status`: asks a running client's control API and prints the answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Fetches `GET /status` (blocking; the CLI is not a worker).
pub fn fetch(addr: SocketAddr) -> anyhow::Result<String> {
    Ok(get(addr, "/status")?.trim_end().to_string())
}

/// Fetches `GET path` from the control API at `addr`; the body of a `200`.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("no msc client answers on {addr} (is it running? see control.listen)"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed answer from {addr}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr} answered: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// The client state in one line, from its JSON form (see `control::state::ClientState`).
fn state_line(s: &Value) -> String {
    match serde_json::from_value::<crate::control::state::ClientState>(s.clone()) {
        Ok(crate::control::state::ClientState::Disabled { until, reason, by }) => {
            let left = until
                .duration_since(std::time::SystemTime::now())
                .map_or_else(|_| "0s".into(), |d| ago(d.as_secs_f64()));
            format!(
                "DISABLED by {by} until {} ({left} left): {reason}",
                humantime::format_rfc3339_seconds(until)
            )
        }
        Ok(crate::control::state::ClientState::Enabled) => "ENABLED".into(),
        Ok(crate::control::state::ClientState::ConnectionPending { why }) => format!("CONNECTION PENDING: {why}"),
        Ok(crate::control::state::ClientState::Error { reason }) => format!("ERROR: {reason}"),
        Err(_) => "unknown (an older client?)".into(),
    }
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.1}ms"))
}

fn ago(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs_f64(secs.clamp(0.0, 1e9).floor())).to_string()
}

/// The `remote` object (configuration from the gateway), if enabled.
fn remote_lines(o: &mut String, r: &Value) {
    use std::fmt::Write as _;
    if r.is_null() {
        return;
    }
    let c = &r["config"];
    let source = match r["source"].as_str().unwrap_or("?") {
        "gateway" => "from the gateway",
        "cache" => "from the cached gateway document (offline start)",
        "local" => "the local file only",
        s => s,
    };
    let _ = writeln!(
        o,
        "configuration: {source} (ETag {}, from {}, fetched {}); last fetch {}: {}{}",
        c["etag"].as_str().unwrap_or("-"),
        c["from"].as_str().unwrap_or("-"),
        c["fetched_at"].as_str().unwrap_or("-"),
        c["last_fetch_at"].as_str().unwrap_or("never"),
        c["last_result"].as_str().unwrap_or("-"),
        if r["restart_needed"].as_bool() == Some(true) {
            "; settings beyond the PAC apply at the next start"
        } else {
            ""
        }
    );
    if let Some(e) = c["last_error"].as_str() {
        let _ = writeln!(o, "  why: {e}");
    }
    let p = &r["pac"];
    if !p.is_null() {
        let _ = writeln!(
            o,
            "PAC: {} (administrator's ETag {}, from {}); last fetch {}: {}",
            if r["pac_source"] == "gateway" {
                "the administrator's, from the gateway"
            } else {
                "generated (no acceptable administrator PAC yet)"
            },
            p["etag"].as_str().unwrap_or("-"),
            p["from"].as_str().unwrap_or("-"),
            p["last_fetch_at"].as_str().unwrap_or("never"),
            p["last_result"].as_str().unwrap_or("-"),
        );
        if let Some(e) = p["last_error"].as_str() {
            let _ = writeln!(o, "  why: {e}");
        }
    }
}

/// Renders the status JSON as a human-readable report.
pub fn render(json: &str) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let v: Value = serde_json::from_str(json).context("status is not JSON")?;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "msc client {}, up {}, {} workers, {}",
        v["version"].as_str().unwrap_or("?"),
        ago(v["uptime_seconds"].as_f64().unwrap_or(0.0)),
        v["workers"],
        if v["fail_open"].as_bool() == Some(true) {
            "fail-open"
        } else {
            "fail-closed"
        }
    );
    let _ = writeln!(o, "state: {}", state_line(&v["state"]));
    let u = &v["update"];
    if u["enabled"].as_bool() == Some(true) {
        let _ = writeln!(
            o,
            "updates: running release {}; last check: {}",
            u["running_version"].as_str().unwrap_or("?"),
            u["last_result"].as_str().unwrap_or("none yet")
        );
        if let Some(rb) = u.get("last_rollback").filter(|r| !r.is_null()) {
            let _ = writeln!(
                o,
                "  rolled back: release {} to {}: {}",
                rb["from"].as_str().unwrap_or("?"),
                rb["to"].as_str().unwrap_or("?"),
                rb["reason"].as_str().unwrap_or("?")
            );
        }
    }
    let traffic = match v["traffic"].as_str().unwrap_or("?") {
        "gateway" => "through the gateway".to_string(),
        "direct:disabled" => "DIRECT, UNSCANNED: protection is disabled by a trusted user".to_string(),
        "direct:on-premise" => "DIRECT (on premise)".to_string(),
        "direct:fail-open" => "DIRECT, UNSCANNED: no gateway is reachable (fail-open)".to_string(),
        "refused:fail-closed" => "refused: no gateway is reachable (fail-closed)".to_string(),
        "refused:untrusted" => {
            "refused: a gateway failed authentication or answered wrongly (never DIRECT)".to_string()
        }
        t => t.to_string(),
    };
    let _ = writeln!(o, "traffic: {traffic}");
    if let Some(e) = v["error"].as_str() {
        let _ = writeln!(o, "  why: {e}");
    }
    if let Some(d) = v.get("last_direct").filter(|d| !d.is_null()) {
        let _ = writeln!(
            o,
            "last request sent DIRECT (unscanned): {} ago ({})",
            ago(d["seconds_ago"].as_f64().unwrap_or(0.0)),
            d["route"].as_str().unwrap_or("?"),
        );
    }
    let p = &v["premise"];
    if p["configured"].as_bool() == Some(true) {
        let _ = writeln!(
            o,
            "network: {} (indicator {} -> {}; mode {}; checked {} ago)",
            if p["on_premise"].as_bool() == Some(true) {
                "ON premise"
            } else {
                "off premise"
            },
            p["indicator"].as_str().unwrap_or("?"),
            p["answer"].as_str().unwrap_or("not checked yet"),
            p["mode"].as_str().unwrap_or("?"),
            ago(p["checked_seconds_ago"].as_f64().unwrap_or(0.0)),
        );
    } else {
        let _ = writeln!(o, "network: no on-premise indicator configured");
    }
    remote_lines(&mut o, &v["remote"]);
    for s in v["slots"].as_array().into_iter().flatten() {
        let gws: Vec<&str> = s["gateways"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let _ = writeln!(
            o,
            "slot {}: http {} https {} -> {}",
            s["slot"],
            s["http"].as_str().unwrap_or("?"),
            s["https"].as_str().unwrap_or("?"),
            gws.join(", ")
        );
    }
    let _ = writeln!(
        o,
        "{:<14} {:<12} {:>9} {:>9} {:>9} {:>10} {:>8}  ADDRESS",
        "GATEWAY", "STATE", "P50", "P90", "P99", "REPUTATION", "SAMPLES"
    );
    for g in v["gateways"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "{:<14} {:<12} {:>9} {:>9} {:>9} {:>10} {:>8}  {}",
            g["name"].as_str().unwrap_or("?"),
            g["state"].as_str().unwrap_or("-"),
            ms(&g["p50_ms"]),
            ms(&g["p90_ms"]),
            ms(&g["p99_ms"]),
            g["reputation"].as_f64().map_or("-".into(), |r| format!("{r:.3}")),
            g["samples"].as_u64().map_or("-".into(), |n| n.to_string()),
            g["address"].as_str().unwrap_or("?"),
        );
    }
    if let Some(sw) = v.get("last_switch").filter(|s| !s.is_null()) {
        let _ = writeln!(
            o,
            "last switch: {} -> {} ({}), {} ago",
            sw["from"].as_str().unwrap_or("none"),
            sw["to"].as_str().unwrap_or("none"),
            sw["reason"].as_str().unwrap_or("?"),
            ago(sw["seconds_ago"].as_f64().unwrap_or(0.0)),
        );
    }
    let t = &v["tls"];
    let (h, r) = (
        t["handshakes"].as_u64().unwrap_or(0),
        t["resumed"].as_u64().unwrap_or(0),
    );
    let pct = if h > 0 { 100.0 * r as f64 / h as f64 } else { 0.0 };
    let _ = writeln!(o, "tunnels: {h} TLS handshakes, {r} resumed ({pct:.0}%)");
    let d = &v["direct"];
    let _ = writeln!(
        o,
        "without a gateway: {} on premise, {} failed open ({} because no gateway could be reached at connect), {} refused (fail-closed; {} at connect), {} refused (untrusted gateway), {} while disabled",
        d["on_premise"],
        d["fail_open"],
        d["fail_open_unreachable"],
        d["fail_closed"],
        d["fail_closed_unreachable"],
        d["refused_untrusted"],
        d["disabled"]
    );
    let r = &v["reload"];
    if let Some(result) = r["result"].as_str() {
        let _ = write!(
            o,
            "configuration: generation {}, last reload {} {} ago",
            r["generation"],
            result,
            ago(r["last_attempt_seconds_ago"].as_f64().unwrap_or(0.0))
        );
        if let Some(e) = r["error"].as_str() {
            let _ = write!(o, ": {e}");
        }
        let restart: Vec<&str> = r["restart_needed"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !restart.is_empty() {
            let _ = write!(o, "; restart needed: {}", restart.join(", "));
        }
        let _ = writeln!(o);
    }
    Ok(o)
}
