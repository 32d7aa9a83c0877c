//! The user's view of a running client, with real programs: the status page
//! in headless Chromium, `/metrics` through Prometheus's own text parser,
//! the support bundle unpacked with tar, and the tray icon on a private
//! D-Bus session bus read back with busctl.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "test code: bounded polling with sleeps, and a Mutex shared with the stand-in D-Bus watcher"
)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// `GET path` on the control API; the body of a 200.
fn control_get(ctl: SocketAddr, path: &str) -> String {
    let (status, head, body) = exchange(
        ctl,
        format!("GET {path} HTTP/1.1\r\nHost: {ctl}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200, "{path}: {head}");
    String::from_utf8(body).unwrap()
}

fn status_json(ctl: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&control_get(ctl, "/status")).unwrap()
}

/// Polls (bounded) until `f` holds for the status; returns it.
fn wait_status(ctl: SocketAddr, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status_json(ctl);
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "status never showed {what}:\n{s:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn through_proxy(proxy: SocketAddr, url: &str) -> Vec<u8> {
    let (code, body, err) = curl(&["--fail", "--proxy", &format!("http://{proxy}"), url]);
    assert_eq!(code, 0, "curl {url}: {err}");
    body
}

// ---------------------------------------------------------------- page ----

fn chromium() -> &'static str {
    for c in ["chromium-headless-shell", "chromium"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return c;
        }
    }
    panic!("headless Chromium is not installed (test.sh installs chromium-headless-shell)");
}

/// Runs headless Chromium with no usable network beyond 127.0.0.1: every
/// other host name fails to resolve, and no proxy is used.
fn headless(profile: &Path, extra: &[&str], url: &str) -> std::process::Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(extra)
        .arg(url)
        .env("HOME", profile)
        .stdin(Stdio::null());
    let out = browser_output(&mut cmd);
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn status_page_renders_offline_in_headless_chromium() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (mut g1, gw1) = env.gateway_with("gw-a", "");
    let (_g2, gw2) = env.gateway_with("gw-b", "");
    let cfg = env.multi_client_toml(
        "client-page",
        &[("gw1", gw1), ("gw2", gw2)],
        "[selection]\nprobe_interval = \"200ms\"\nkeepalive_interval = \"200ms\"\n",
    );
    let (c, proxy) = env.client_from("client-page", &cfg);
    let ctl = c.control_addr();
    // A few probe results per gateway, so each plot draws a line.
    wait_status(ctl, "enabled, with samples of both gateways", |s| {
        s["summary"]["state"] == "enabled"
            && s["gateways"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["samples"].as_u64().unwrap_or(0) >= 3)
    });
    for i in 0..3 {
        through_proxy(proxy, &format!("http://{origin}/bytes/{}", 1000 * (i + 1)));
    }
    wait_status(ctl, "three requests counted", |s| {
        s["counters"]["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["requests"].as_u64().unwrap())
            .sum::<u64>()
            == 3
    });

    // gw1 goes away: a switch with its reason, and failed probes in its plot.
    g1.terminate();
    wait_status(ctl, "a switch to gw2 and failed probes of gw1", |s| {
        s["selected"] == "gw2"
            && s["switches"].as_array().is_some_and(|a| !a.is_empty())
            && s["gateways"][0]["failures"].as_u64().unwrap_or(0) >= 2
    });

    let url = format!("http://{ctl}/");
    // The page itself: inline only, locked down by its headers.
    let (status, head, body) = exchange(
        ctl,
        format!("GET / HTTP/1.1\r\nHost: {ctl}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(head.contains("Content-Security-Policy: default-src 'none'"), "{head}");
    let html = String::from_utf8(body).unwrap();
    for external in ["src=", "https://", "<script", "@import", "url("] {
        assert!(!html.contains(external), "the page references {external}:\n{html}");
    }
    assert!(html.contains(r#"<meta http-equiv="refresh" content="5">"#));

    let profile = tempfile::tempdir().unwrap();
    let out = headless(profile.path(), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains(r#"id="state" class="state enabled" data-state="enabled""#),
        "{dom}"
    );
    let switches = &dom[dom.find("<table id=\"switches\"").expect("a switch table")..];
    let switches = &switches[..switches.find("</table>").unwrap()];
    assert!(
        switches.contains("<td>gw1</td><td>gw2</td>") && switches.contains("switched to gateway gw2"),
        "the switch and its reason: {switches}"
    );
    assert!(dom.contains("protected: traffic goes through gateway gw2"), "{dom}");
    assert_eq!(
        dom.matches("<svg class=\"plot\"").count(),
        2,
        "one plot per gateway:\n{dom}"
    );
    for g in ["gw1", "gw2"] {
        let at = dom
            .find(&format!("<svg class=\"plot\" data-gateway=\"{g}\""))
            .unwrap_or_else(|| panic!("no plot for {g}:\n{dom}"));
        let svg = &dom[at..at + dom[at..].find("</svg>").unwrap()];
        assert!(
            svg.contains("<polyline class=\"latency\""),
            "{g}'s plot has no line: {svg}"
        );
        if g == "gw1" {
            assert!(
                svg.contains("class=\"failed\""),
                "gw1's failed probes are marked: {svg}"
            );
        }
        assert!(
            dom.contains(&format!("<tr data-gateway=\"{g}\">")),
            "{g} in the gateway table"
        );
    }
    // Counters after real traffic, and the certificate's expiry.
    let routes = &dom[dom.find("id=\"routes\"").unwrap()..];
    let gw_rows: u64 = ["gateway gw1", "gateway gw2"]
        .iter()
        .map(|r| {
            let at = routes.find(r).unwrap();
            let cell = &routes[at..];
            let v = cell.split("<td class=\"n\">").nth(1).unwrap();
            v[..v.find('<').unwrap()].parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(gw_rows, 3, "requests by route: {routes}");
    assert!(dom.contains("id=\"certificate\""));
    assert!(dom.contains("CN=alice"), "{dom}");
    assert!(dom.contains("(in 36"), "expiry in about a year: {dom}");

    let shot = profile.path().join("status-page.png");
    headless(
        profile.path(),
        &[
            "--hide-scrollbars",
            "--window-size=1100,1500",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    // `MSC_SCREENSHOT_TO=docs/status-page.png cargo test ...` refreshes the
    // screenshot in the docs; tests never write into the checkout otherwise.
    if let Some(to) = std::env::var_os("MSC_SCREENSHOT_TO") {
        std::fs::write(to, &png).unwrap();
    }
}

// ------------------------------------------------------------- metrics ----

/// A python3 that has prometheus_client (Debian's package installs it for
/// the system python).
fn python_with_prometheus() -> &'static str {
    for p in ["/usr/bin/python3", "python3"] {
        if Command::new(p)
            .args(["-c", "import prometheus_client.parser"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return p;
        }
    }
    panic!("python3 with prometheus_client is not installed (test.sh installs python3-prometheus-client)");
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;

/// Parses exposition text with prometheus_client; family name -> (type, samples).
fn parse_metrics(text: &str) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new(python_with_prometheus())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `family`'s sample named `sample` whose labels include `labels`.
fn value(m: &serde_json::Value, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    let f = &m[family];
    assert!(!f.is_null(), "no family {family}");
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == sample && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .unwrap_or_else(|| panic!("no {sample}{labels:?} in {f}"))[2]
        .as_f64()
        .unwrap()
}

#[test]
fn metrics_parse_with_prometheus_client_after_real_traffic() {
    let chain = Chain::start();
    let ctl = chain.client.control_addr();
    wait_status(ctl, "enabled", |s| s["summary"]["state"] == "enabled");
    let mut down = 0;
    for n in [1000usize, 20_000, 300_000, 5, 64] {
        down += through_proxy(chain.proxy, &chain.url(&format!("/bytes/{n}"))).len();
    }
    assert_eq!(down, 321_069);
    let deadline = Instant::now() + WAIT;
    let (text, m) = loop {
        let (status, head, body) = exchange(
            ctl,
            format!("GET /metrics HTTP/1.1\r\nHost: {ctl}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(status, 200);
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
        let text = String::from_utf8(body).unwrap();
        let m = parse_metrics(&text);
        if value(
            &m,
            "msc_gateway_requests",
            "msc_gateway_requests_total",
            &[("gateway", "gw1")],
        ) >= 5.0
        {
            break (text, m);
        }
        assert!(Instant::now() < deadline, "requests never counted:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Types and conventions, as Prometheus reads them.
    for (family, kind) in [
        ("msc_build_info", "gauge"),
        ("msc_state", "gauge"),
        ("msc_uptime_seconds", "gauge"),
        ("msc_requests", "counter"),
        ("msc_direct_requests", "counter"),
        ("msc_refused_requests", "counter"),
        ("msc_gateway_requests", "counter"),
        ("msc_gateway_bytes", "counter"),
        ("msc_tunnels_opened", "counter"),
        ("msc_tunnel_failures", "counter"),
        ("msc_tls_handshakes", "counter"),
        ("msc_tls_handshakes_resumed", "counter"),
        ("msc_pool_hits", "counter"),
        ("msc_pool_misses", "counter"),
        ("msc_gateway_switches", "counter"),
        ("msc_worker_requests", "counter"),
        ("msc_worker_pool_hits", "counter"),
        ("msc_worker_pool_misses", "counter"),
        ("msc_worker_bytes", "counter"),
        ("msc_gateway_latency_seconds", "gauge"),
        ("msc_gateway_reputation", "gauge"),
        ("msc_client_certificate_expiry_timestamp_seconds", "gauge"),
    ] {
        assert_eq!(m[family]["type"], kind, "{family} in\n{text}");
    }
    let v = |f: &str, s: &str, l: &[(&str, &str)]| value(&m, f, s, l);
    assert_eq!(v("msc_state", "msc_state", &[("state", "enabled")]), 1.0);
    assert_eq!(v("msc_state", "msc_state", &[("state", "error")]), 0.0);
    assert_eq!(v("msc_requests", "msc_requests_total", &[("route", "gateway")]), 5.0);
    assert_eq!(
        v("msc_requests", "msc_requests_total", &[("route", "direct:fail-open")]),
        0.0
    );
    assert_eq!(
        v(
            "msc_direct_requests",
            "msc_direct_requests_total",
            &[("reason", "fail_open")]
        ),
        0.0
    );
    assert_eq!(
        v(
            "msc_gateway_requests",
            "msc_gateway_requests_total",
            &[("gateway", "gw1")]
        ),
        5.0
    );
    let bytes_down = v(
        "msc_gateway_bytes",
        "msc_gateway_bytes_total",
        &[("gateway", "gw1"), ("direction", "down")],
    );
    assert!(
        bytes_down >= down as f64 && bytes_down < down as f64 + 5.0 * 1024.0,
        "{bytes_down} bytes down for {down} body bytes (plus five response heads)"
    );
    let hits = v("msc_pool_hits", "msc_pool_hits_total", &[]);
    let misses = v("msc_pool_misses", "msc_pool_misses_total", &[]);
    assert_eq!(hits + misses, 5.0, "every request took a pooled tunnel or opened one");
    assert!(hits >= 1.0, "the warmed pool served requests");
    let handshakes = v("msc_tls_handshakes", "msc_tls_handshakes_total", &[]);
    assert!(handshakes >= 1.0);
    assert!(v("msc_tunnels_opened", "msc_tunnels_opened_total", &[("gateway", "gw1")]) >= 1.0);
    // Per worker: the two workers' figures add up to the totals.
    let per_worker = |f: &str, s: &str| -> f64 {
        m[f]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x[0] == s)
            .map(|x| x[2].as_f64().unwrap())
            .sum()
    };
    assert_eq!(m["msc_worker_requests"]["samples"].as_array().unwrap().len(), 2);
    assert_eq!(per_worker("msc_worker_requests", "msc_worker_requests_total"), 5.0);
    assert_eq!(per_worker("msc_worker_pool_hits", "msc_worker_pool_hits_total"), hits);
    assert_eq!(
        per_worker("msc_worker_tls_handshakes", "msc_worker_tls_handshakes_total"),
        handshakes
    );
    let p50 = v(
        "msc_gateway_latency_seconds",
        "msc_gateway_latency_seconds",
        &[("gateway", "gw1"), ("quantile", "0.5")],
    );
    assert!(p50 > 0.0 && p50 < 1.0, "probe p50 {p50} s on loopback");
    let expiry = v(
        "msc_client_certificate_expiry_timestamp_seconds",
        "msc_client_certificate_expiry_timestamp_seconds",
        &[],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now + 300.0 * 86_400.0, "the test PKI issues for a year");
}

// -------------------------------------------------------------- bundle ----

/// The base64 body lines of a PEM file.
fn pem_body(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn support_bundle_lists_its_contents_and_holds_no_secrets() {
    let chain = Chain::start();
    let ctl = chain.client.control_addr();
    wait_status(ctl, "enabled", |s| s["summary"]["state"] == "enabled");
    // A visited URL with a token in it: never logged, never bundled.
    through_proxy(chain.proxy, &chain.url("/echo/x?token=SECRETTOKEN4242"));
    let cfg = chain.env.path("client-run.toml");
    let out = chain.env.path("bundle.tar.gz");
    let run = Command::new(MSC)
        .args(["support-bundle", "--config"])
        .arg(&cfg)
        // The client's control socket (log lines) is in the test's runtime dir.
        .env("XDG_RUNTIME_DIR", runtime_dir(chain.env.dir.path()))
        .args(["--control", &ctl.to_string()])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.starts_with(&format!("wrote {}", out.display())), "{stdout}");

    let list = Command::new("tar").arg("tzf").arg(&out).output().unwrap();
    assert!(list.status.success());
    let names: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .collect();
    for want in [
        "MANIFEST.txt",
        "config.toml",
        "system.txt",
        "status.json",
        "proxy.pac",
        "logs.txt",
        "metrics.txt",
        "certificates.txt",
        "resolution.txt",
        "switches.json",
        "enforcement.txt",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        assert!(stdout.contains(want), "the command lists {want}: {stdout}");
    }
    let dir = chain.env.path("unpacked");
    std::fs::create_dir(&dir).unwrap();
    assert!(
        Command::new("tar")
            .arg("xzf")
            .arg(&out)
            .arg("-C")
            .arg(&dir)
            .status()
            .unwrap()
            .success()
    );
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    assert_eq!(files.len(), names.len());
    let key_lines = pem_body(&chain.env.path("client-key.pem"));
    let key_body: String = key_lines.concat();
    assert!(key_lines.len() >= 2 && key_body.len() > 100);
    let mut all = HashMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!text.contains("PRIVATE KEY"), "{name} mentions a private key:\n{text}");
        assert!(
            !text.contains("SECRETTOKEN4242"),
            "{name} holds the visited URL's token:\n{text}"
        );
        assert!(!text.contains(&key_body), "{name} holds the key");
        for l in &key_lines {
            assert!(!text.contains(l.as_str()), "{name} holds a line of the key: {l}");
        }
        // Not even a 16-character piece of the key's base64.
        for w in key_body.as_bytes().chunks(16) {
            let piece = std::str::from_utf8(w).unwrap();
            assert!(!text.contains(piece), "{name} holds a piece of the key: {piece}");
        }
        all.insert(name, text);
    }
    // And what is there says something useful.
    let status: serde_json::Value = serde_json::from_str(&all["status.json"]).unwrap();
    assert_eq!(status["summary"]["state"], "enabled");
    assert!(
        all["certificates.txt"].contains("subject: O=msc, CN=alice"),
        "{}",
        all["certificates.txt"]
    );
    assert!(all["certificates.txt"].contains("not after:"));
    assert!(all["certificates.txt"].contains("contents never included"));
    assert!(
        all["config.toml"].contains("client-key.pem"),
        "key paths are kept: {}",
        all["config.toml"]
    );
    assert!(all["proxy.pac"].contains("FindProxyForURL"));
    assert!(all["system.txt"].contains("io_uring:"), "{}", all["system.txt"]);
    assert!(all["system.txt"].contains("kernel:"));
    assert!(all["resolution.txt"].contains("gw1"), "{}", all["resolution.txt"]);
    assert!(all["switches.json"].contains("\"recent\""));
    // No watchdog runs here: the client has had no enforcement report.
    assert!(
        all["enforcement.txt"].starts_with("no report"),
        "{}",
        all["enforcement.txt"]
    );
    assert!(all["metrics.txt"].contains("msc_requests_total"));
    assert!(
        all["logs.txt"].lines().any(|l| l.contains("INFO")),
        "recent log lines: {}",
        all["logs.txt"]
    );
}

// ---------------------------------------------------------------- tray ----

/// The tray's properties, read back from a private bus.
trait Sni {
    fn property(&self, name: &str, prop: &str) -> String;
    fn wait_property(&self, name: &str, prop: &str, want: &str) -> String;
}

impl Sni for PrivateBus {
    fn property(&self, name: &str, prop: &str) -> String {
        self.busctl(&[
            "get-property",
            name,
            "/StatusNotifierItem",
            "org.kde.StatusNotifierItem",
            prop,
        ])
        .trim()
        .to_string()
    }

    /// Polls (bounded) until property `prop` contains `want`.
    fn wait_property(&self, name: &str, prop: &str, want: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.property(name, prop);
            if v.contains(want) {
                return v;
            }
            assert!(Instant::now() < deadline, "{prop} never contained {want:?}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The stand-in `org.kde.StatusNotifierWatcher` a desktop panel provides:
/// records who registered.
struct Watcher {
    items: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    fn register_status_notifier_item(&self, service: &str) {
        self.items.lock().unwrap().push(service.to_string());
    }

    fn register_status_notifier_host(&self, _service: &str) {}

    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        self.items.lock().unwrap().clone()
    }

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }
}

/// The dbusmenu layout as JSON: (id, label, visible, enabled) per item, depth first.
fn menu_items(bus: &PrivateBus, name: &str) -> Vec<(i64, String, bool, bool)> {
    let raw = bus.busctl(&[
        "--json=short",
        // The layout's depth is -1: no more options after this.
        "--",
        "call",
        name,
        "/MenuBar",
        "com.canonical.dbusmenu",
        "GetLayout",
        "iias",
        "0",
        "-1",
        "0",
    ]);
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    fn walk(node: &serde_json::Value, out: &mut Vec<(i64, String, bool, bool)>) {
        // A node is [id, {props}, [children as variants]].
        let id = node[0].as_i64().unwrap();
        let props = &node[1];
        let label = props["label"]["data"].as_str().unwrap_or("").to_string();
        let visible = props["visible"]["data"].as_bool().unwrap_or(true);
        let enabled = props["enabled"]["data"].as_bool().unwrap_or(true);
        if id != 0 {
            out.push((id, label, visible, enabled));
        }
        for c in node[2].as_array().into_iter().flatten() {
            walk(&c["data"], out);
        }
    }
    let mut out = Vec::new();
    walk(&v["data"][1], &mut out);
    out
}

#[test]
fn tray_icon_on_a_private_session_bus() {
    let chain = Chain::start();
    let ctl = chain.client.control_addr();
    let bus = PrivateBus::start();
    let items = Arc::new(Mutex::new(Vec::new()));
    let _watcher = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.kde.StatusNotifierWatcher")
        .unwrap()
        .serve_at("/StatusNotifierWatcher", Watcher { items: items.clone() })
        .unwrap()
        .build()
        .unwrap();
    wait_status(ctl, "enabled", |s| s["summary"]["state"] == "enabled");

    let cfg = chain.env.p("client-run.toml");
    let home = chain.env.path("home");
    std::fs::create_dir(&home).unwrap();
    let mut tray = Proc::start_env(
        &[
            "tray",
            "--config",
            &cfg,
            "--control",
            &ctl.to_string(),
            "--interval",
            "200ms",
        ],
        chain.env.dir.path(),
        "tray",
        &[
            ("DBUS_SESSION_BUS_ADDRESS", bus.address.as_str()),
            ("HOME", home.to_str().unwrap()),
        ],
    );
    assert!(tray.ready_line.contains("state enabled"), "{}", tray.ready_line);
    let name = tray
        .ready_line
        .split("bus name ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // Registered with the panel's watcher under that name.
    let deadline = Instant::now() + WAIT;
    while !items.lock().unwrap().contains(&name) {
        assert!(
            Instant::now() < deadline,
            "never registered: {:?}",
            items.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(bus.busctl(&["list", "--no-pager"]).contains(&name));

    // Properties as a panel reads them.
    assert_eq!(bus.property(&name, "Id"), r#"s "msc""#);
    assert_eq!(bus.property(&name, "Category"), r#"s "SystemServices""#);
    assert_eq!(bus.property(&name, "Status"), r#"s "Active""#);
    assert_eq!(bus.property(&name, "IconName"), r#"s "security-high""#);
    assert_eq!(bus.property(&name, "Title"), r#"s "msc: Protected""#);
    let tip = bus.property(&name, "ToolTip");
    assert!(
        tip.contains("msc: Protected") && tip.contains("protected: traffic goes through gateway gw1"),
        "{tip}"
    );

    // The menu.
    let menu = menu_items(&bus, &name);
    let labels: Vec<&str> = menu.iter().map(|m| m.1.as_str()).collect();
    for want in [
        "Open status page",
        "Disable protection for 30 minutes",
        "Enable protection",
        "Collect support info",
        "About",
    ] {
        assert!(labels.contains(&want), "{want} not in {labels:?}");
    }
    let item = |label: &str| menu.iter().find(|m| m.1 == label).unwrap().clone();
    assert!(
        item("Disable protection for 30 minutes").2,
        "Disable is shown while enabled"
    );
    assert!(!item("Enable protection").2, "Enable is hidden while enabled");
    let version = format!("msc {}", env!("CARGO_PKG_VERSION"));
    assert!(!item(&version).3, "About lines are labels: {menu:?}");
    assert!(labels.iter().any(|l| l.starts_with("Copyright ©")), "{labels:?}");

    // "Collect support info" runs the real bundle command into $HOME.
    let (collect, ..) = item("Collect support info");
    bus.busctl(&[
        "call",
        &name,
        "/MenuBar",
        "com.canonical.dbusmenu",
        "Event",
        "isvu",
        &collect.to_string(),
        "clicked",
        "s",
        "",
        "0",
    ]);
    let deadline = Instant::now() + WAIT;
    let bundle = loop {
        let found = std::fs::read_dir(&home).unwrap().find_map(|e| {
            let p = e.unwrap().path();
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            (n.starts_with("msc-support-") && n.ends_with(".tar.gz")).then_some(p)
        });
        if let Some(p) = found
            && tray.stderr().contains("collect support info: done")
        {
            break p;
        }
        assert!(Instant::now() < deadline, "no bundle in {home:?}:\n{}", tray.stderr());
        std::thread::sleep(Duration::from_millis(50));
    };
    let list = Command::new("tar").arg("tzf").arg(&bundle).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("status.json"));

    // The client goes away: the icon says so.
    let mut client = chain.client;
    client.terminate();
    bus.wait_property(&name, "IconName", "dialog-error");
    assert_eq!(bus.property(&name, "Status"), r#"s "NeedsAttention""#);
    let tip = bus.property(&name, "ToolTip");
    assert!(tip.contains("does not answer"), "{tip}");

    assert!(tray.terminate().success());
    let deadline = Instant::now() + WAIT;
    while bus.busctl(&["list", "--no-pager"]).contains(&name) {
        assert!(Instant::now() < deadline, "the icon stayed on the bus after exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tray_hidden_by_the_administrator() {
    let env = Env::new();
    let cfg = env.client_toml(
        "client-hidden",
        "127.0.0.1:9".parse().unwrap(),
        "client.pem",
        "client-key.pem",
        "[tray]\nhidden = true\n",
    );
    let bus = PrivateBus::start();
    let before = bus.busctl(&["list", "--no-pager"]);
    let out = Command::new(MSC)
        .args(["tray", "--config"])
        .arg(&cfg)
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("hidden by the administrator"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
    assert!(!before.contains("StatusNotifierItem"));
    assert!(!bus.busctl(&["list", "--no-pager"]).contains("StatusNotifierItem"));
}
