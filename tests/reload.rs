//! Configuration reload of a running client (`msc reload`, SIGHUP) with real
//! processes: gateways, origin and client on loopback, curl and raw
//! keep-alive connections. Nothing in flight is cut; what is new goes
//! through the new configuration; a bad configuration is rejected and the
//! old one keeps serving.
#![allow(
    clippy::disallowed_methods,
    reason = "test: bounded polling of files, ports and the status, off any runtime"
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use msc_tls::pki::{Ca, Validity};

const MIB: usize = 1024 * 1024;

/// One `[[servers]]` entry: name, gateway address, slot http_port (0: any).
type Srv<'a> = (&'a str, SocketAddr, u16);

/// A client config with a control socket this test's user may use.
fn client_text(env: &Env, cert: &str, servers: &[Srv<'_>], extra: &str) -> String {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let mut text = format!(
        "workers = 2\n[tls]\nca = \"ca.pem\"\ncert = \"{cert}.pem\"\nkey = \"{cert}-key.pem\"\n{extra}\n[control]\nlisten = \"127.0.0.1:0\"\nsocket = \"{}\"\ntrusted_users = [\"{uid}\"]\n",
        socket(env).display()
    );
    for (n, a, p) in servers {
        text.push_str(&format!(
            "[[servers]]\nname = \"{n}\"\naddress = \"{a}\"\nserver_name = \"localhost\"\nhttp_port = {p}\n"
        ));
    }
    text
}

fn socket(env: &Env) -> PathBuf {
    env.path("control.sock")
}

fn start_client(env: &Env, text: &str) -> (Proc, SocketAddr, SocketAddr) {
    let f = env.write("client-reload.toml", text);
    let p = Proc::start(&["run", "--config", f.to_str().unwrap()], env.dir.path(), "client");
    let proxy = p.addr_after("slot 1 http ");
    let ctl = p.control_addr();
    (p, proxy, ctl)
}

/// `msc reload`: (exit code, stdout, stderr).
fn msc_reload(env: &Env) -> (i32, String, String) {
    let out = Command::new(MSC)
        .args(["reload", "--socket", socket(env).to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` as the client's configuration and reloads; asserts success.
fn reload_ok(env: &Env, text: &str, generation: u64) -> String {
    env.write("client-reload.toml", text);
    let (code, out, err) = msc_reload(env);
    assert_eq!(code, 0, "msc reload failed: {out}{err}");
    assert!(
        out.contains(&format!("configuration generation {generation} applied")),
        "{out}"
    );
    out
}

/// A rate-limited download of `/bytes/N` through `proxy` in the background;
/// returns once bytes arrive. Join it for (curl exit code, stderr).
fn download(
    env: &Env,
    proxy: SocketAddr,
    url: String,
    name: &str,
) -> (PathBuf, std::thread::JoinHandle<(i32, String)>) {
    let out = env.path(name);
    let out2 = out.clone();
    let proxy = format!("http://{proxy}");
    let t = std::thread::spawn(move || {
        let (code, _, err) = curl(&["-x", &proxy, "--limit-rate", "25M", "-o", out2.to_str().unwrap(), &url]);
        (code, err)
    });
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < MIB as u64 {
        assert!(Instant::now() < deadline, "the download did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (out, t)
}

fn check_download(path: &Path, t: std::thread::JoinHandle<(i32, String)>, n: usize) {
    let (code, err) = t.join().unwrap();
    assert_eq!(code, 0, "download failed: {err}");
    let got = std::fs::read(path).unwrap();
    assert_eq!(got.len(), n);
    assert_eq!(sha256_hex(&got), sha256_hex(&pattern_bytes(n)), "download bytes differ");
}

/// One keep-alive request on `s`; returns the status.
fn keepalive_get(s: &mut TcpStream, origin: SocketAddr) -> u16 {
    s.write_all(format!("GET http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .unwrap();
    let (status, head, _) = read_response(s);
    assert!(!head.to_ascii_lowercase().contains("connection: close"), "{head}");
    status
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// Waits (bounded) until `p`'s log has at least `n` lines with `needle`.
fn wait_count(p: &Proc, needle: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while count(&p.stderr(), needle) < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} '{needle}' lines:\n{}",
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_under_load_cuts_nothing_and_new_requests_use_the_new_gateway() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (gwa, a) = env.gateway_with("gwa", "");
    let (gwb, b) = env.gateway_with("gwb", "");
    let pinned = "[selection]\npinned = true\n";
    let (client, proxy, ctl) = start_client(&env, &client_text(&env, "client", &[("a", a, 0)], pinned));

    let n = 50 * MIB;
    let (file, dl) = download(&env, proxy, format!("http://{origin}/bytes/{n}"), "dl.bin");
    let mut ka = tcp(proxy);
    for _ in 0..50 {
        assert_eq!(keepalive_get(&mut ka, origin), 200);
    }
    // Gateway b added first (pinned: slot 1 uses it), a kept second.
    let out = reload_ok(
        &env,
        &client_text(&env, "client", &[("b", b, 0), ("a", a, 0)], pinned),
        1,
    );
    assert!(out.contains("added b"), "{out}");
    let v = status(ctl);
    assert_eq!(v["reload"]["generation"], 1, "{v:#}");
    assert_eq!(v["reload"]["result"], "applied", "{v:#}");
    assert_eq!(v["gateways"][0]["name"], "b", "{v:#}");
    // The same keep-alive connection: its next requests use generation 1.
    for _ in 0..50 {
        assert_eq!(keepalive_get(&mut ka, origin), 200);
    }
    drop(ka);
    check_download(&file, dl, n);
    // The gateways write their access logs asynchronously: wait for the lines.
    let echo = format!("GET http://{origin}/echo 200 ");
    wait_count(&gwb, &echo, 50);
    wait_count(&gwa, &echo, 50);
    // The download ran on generation 0 (gateway a) to its end.
    gwa.wait_stderr(&format!("GET http://{origin}/bytes/{n} 200 "));
    assert_eq!(
        count(&gwb.stderr(), &echo),
        50,
        "gateway b served the requests after the reload"
    );
    assert_eq!(
        count(&gwa.stderr(), &echo),
        50,
        "gateway a served the requests before it"
    );
    client.wait_stderr("reload: configuration generation 1 applied");
}

#[test]
fn a_bad_configuration_is_rejected_and_the_old_one_keeps_serving() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (_gw, g) = env.gateway();
    let good = client_text(&env, "client", &[("g", g, 0)], "");
    let (client, proxy, ctl) = start_client(&env, &good);
    let file = env.p("client-reload.toml");
    let url = format!("http://{origin}/");
    let get = || {
        let (code, _, err) = curl(&["-x", &format!("http://{proxy}"), "-f", &url]);
        assert_eq!(code, 0, "{err}");
    };
    get();
    // A port another program holds (a plain socket: no SO_REUSEPORT sharing).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let bad = [
        // An unknown key.
        (format!("bogus_key = 1\n{good}"), "bogus_key"),
        // A certificate file that does not exist.
        (
            good.replace("cert = \"client.pem\"", "cert = \"missing.pem\""),
            "missing.pem",
        ),
        // A port another program holds.
        (
            good.replace("http_port = 0", &format!("http_port = {held_port}")),
            "servers[0].http_port",
        ),
    ];
    for (text, what) in bad {
        env.write("client-reload.toml", &text);
        let (code, out, err) = msc_reload(&env);
        assert_eq!(code, 1, "must be rejected: {out}{err}");
        assert!(err.contains(&file) && err.contains(what), "{err}");
        let v = status(ctl);
        assert_eq!(v["reload"]["result"], "rejected", "{v:#}");
        assert_eq!(v["reload"]["generation"], 0, "{v:#}");
        assert!(v["reload"]["error"].as_str().unwrap().contains(what), "{v:#}");
        let log = client.wait_stderr("reload rejected (still running generation 0)");
        assert!(
            log.lines().any(|l| l.contains("reload rejected") && l.contains(what)),
            "{log}"
        );
        let out = Command::new(MSC)
            .args(["status", "--control", &ctl.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("configuration: generation 0, last reload rejected") && text.contains(what),
            "{text}"
        );
        let (_, metrics, _) = curl(&[&format!("http://{ctl}/metrics")]);
        let metrics = String::from_utf8_lossy(&metrics);
        assert!(metrics.contains("\nmsc_config_reload_failed 1\n"), "{metrics}");
        get();
    }
    drop(held);
    // Fixed: applied.
    reload_ok(
        &env,
        &good.replace("workers = 2", "workers = 2\n[timeouts]\nidle = \"61s\""),
        1,
    );
    let v = status(ctl);
    assert_eq!(v["reload"]["result"], "applied", "{v:#}");
    assert!(v["reload"]["error"].is_null(), "{v:#}");
    let (_, metrics, _) = curl(&[&format!("http://{ctl}/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("\nmsc_config_reload_failed 0\n") && metrics.contains("\nmsc_config_generation 1\n"),
        "{metrics}"
    );
    get();
}

#[test]
fn a_port_change_binds_the_new_port_first_and_the_old_download_finishes() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (_gw, g) = env.gateway();
    let (p1, p2) = (free_port(), free_port());
    let (_client, proxy, ctl) = start_client(&env, &client_text(&env, "client", &[("g", g, p1)], ""));
    assert_eq!(proxy.port(), p1);
    let pac = |ctl: SocketAddr| {
        let (code, out, err) = curl(&["-i", &format!("http://{ctl}/proxy.pac")]);
        assert_eq!(code, 0, "{err}");
        let text = String::from_utf8_lossy(&out).into_owned();
        let etag = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("etag:")
                    .then(|| l[5..].trim().to_string())
            })
            .unwrap();
        (etag, text)
    };
    let (etag1, pac1) = pac(ctl);
    assert!(pac1.contains(&format!("127.0.0.1:{p1}")), "{pac1}");

    let n = 50 * MIB;
    let (file, dl) = download(&env, proxy, format!("http://{origin}/bytes/{n}"), "dl.bin");
    reload_ok(&env, &client_text(&env, "client", &[("g", g, p2)], ""), 1);
    // The new port accepts at once and serves.
    let (code, _, err) = curl(&[
        "-x",
        &format!("http://127.0.0.1:{p2}"),
        "-f",
        &format!("http://{origin}/"),
    ]);
    assert_eq!(code, 0, "{err}");
    // The old one stops accepting (bounded wait: each worker drops its socket).
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], p1))).is_ok() {
        assert!(Instant::now() < deadline, "old port {p1} still accepts");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The download accepted on it finishes, bytes exact.
    check_download(&file, dl, n);
    let (etag2, pac2) = pac(ctl);
    assert_ne!(etag1, etag2);
    assert!(
        pac2.contains(&format!("127.0.0.1:{p2}")) && !pac2.contains(&format!("127.0.0.1:{p1}")),
        "{pac2}"
    );
    let v = status(ctl);
    assert_eq!(v["slots"][0]["http"], format!("127.0.0.1:{p2}"), "{v:#}");
}

/// Reads a response head (CONNECT: no body follows).
fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed inside a head");
        buf.push(byte[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn a_new_certificate_is_used_by_new_tunnels_while_an_open_tunnel_keeps_working() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (gw, g) = env.gateway();
    let ca = Ca::from_pem(
        &std::fs::read_to_string(env.path("ca.pem")).unwrap(),
        &std::fs::read_to_string(env.path("ca-key.pem")).unwrap(),
    )
    .unwrap();
    let bob = ca
        .issue_client("bob", Some("bob@example.com"), Validity::days(1))
        .unwrap();
    env.write("bob.pem", &bob.cert_pem);
    env.write("bob-key.pem", &bob.key_pem);
    let (_client, proxy, ctl) = start_client(&env, &client_text(&env, "client", &[("g", g, 0)], ""));

    // A CONNECT tunnel through the alice tunnel, used before and after.
    let mut t = tcp(proxy);
    t.write_all(format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .unwrap();
    assert!(read_head(&mut t).starts_with("HTTP/1.1 200"));
    let inner = format!("GET /echo HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    t.write_all(inner.as_bytes()).unwrap();
    assert_eq!(read_response(&mut t).0, 200);

    reload_ok(&env, &client_text(&env, "bob", &[("g", g, 0)], ""), 1);
    let v = status(ctl);
    assert!(v["certificate"]["subject"].as_str().unwrap().contains("bob"), "{v:#}");
    let (code, _, err) = curl(&["-x", &format!("http://{proxy}"), "-f", &format!("http://{origin}/")]);
    assert_eq!(code, 0, "{err}");
    gw.wait_stderr(&format!("bob@example.com GET http://{origin}/ 200"));
    // The open tunnel still works (it drains on the old credentials).
    t.write_all(inner.as_bytes()).unwrap();
    assert_eq!(read_response(&mut t).0, 200);
    drop(t);
    gw.wait_stderr(&format!("alice@example.com CONNECT {origin} 200"));
}

#[test]
fn sighup_reloads_through_the_same_path() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (_gwa, a) = env.gateway_with("gwa", "");
    let (gwb, b) = env.gateway_with("gwb", "");
    let (client, proxy, ctl) = start_client(&env, &client_text(&env, "client", &[("a", a, 0)], ""));
    let hup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &client.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    // A rejected one first.
    env.write("client-reload.toml", "bogus = 1\n");
    hup();
    wait_status(ctl, "a rejected reload", WAIT, |v| v["reload"]["result"] == "rejected");
    // Then gateway a replaced by b.
    env.write("client-reload.toml", &client_text(&env, "client", &[("b", b, 0)], ""));
    hup();
    let v = wait_status(ctl, "generation 1", WAIT, |v| v["reload"]["generation"] == 1);
    assert_eq!(v["gateways"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["gateways"][0]["name"], "b", "{v:#}");
    let (code, _, err) = curl(&["-x", &format!("http://{proxy}"), "-f", &format!("http://{origin}/")]);
    assert_eq!(code, 0, "{err}");
    gwb.wait_stderr(&format!("GET http://{origin}/ 200"));
    client.wait_stderr("SIGHUP: reloading the configuration");
}
