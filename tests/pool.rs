//! Pooled tunnels and HTTP-aware reuse, end to end: tunnels outlive browser
//! connections, resume TLS sessions, are checked before use, and CONNECT and
//! upgrades are never returned to the pool.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Waits (bounded) until the client has reported at least `n` handshakes.
fn tls_counts(ctl: SocketAddr, at_least: u64) -> (u64, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v: Value = serde_json::from_str(&msc::cli::status::fetch(ctl).unwrap()).unwrap();
        let h = v["tls"]["handshakes"].as_u64().unwrap();
        let r = v["tls"]["resumed"].as_u64().unwrap();
        if h >= at_least || Instant::now() > deadline {
            return (h, r);
        }
        #[expect(clippy::disallowed_methods, reason = "test: bounded polling of the status endpoint")]
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_close(proxy: SocketAddr, origin: SocketAddr, n: usize) {
    let (status, head, body) = exchange(
        proxy,
        format!("GET http://{origin}/bytes/{n} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, pattern_bytes(n));
}

#[test]
fn tunnels_outlive_browser_connections_and_resume() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (_g, gw) = env.gateway();
    let cfg = env.client_toml("client-pool", gw, "client.pem", "client-key.pem", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("workers = 2", "workers = 1");
    std::fs::write(&cfg, text).unwrap();
    let (c, proxy) = env.client_from("client-pool", &cfg);
    let ctl = c.control_addr();
    // 60 requests, each on a new browser connection that closes after it.
    for i in 0..60 {
        get_close(proxy, origin, 1000 + i);
    }
    let (handshakes, resumed) = tls_counts(ctl, 2);
    // Without pooling that would be 60 handshakes.
    assert!(
        handshakes <= 6,
        "tunnels were not reused: {handshakes} handshakes for 60 requests"
    );
    assert!(handshakes >= 2, "the pool keeps 2 tunnels ready");
    // CONNECTs consume tunnels: the refills resume the TLS 1.3 session.
    for _ in 0..6 {
        let (code, _, err) = curl(&[
            "-p",
            "-x",
            &format!("http://{proxy}"),
            &format!("http://{origin}/bytes/10"),
        ]);
        assert_eq!(code, 0, "{err}");
    }
    // Each CONNECT used up one tunnel; at most the 2 idle ones existed before.
    let (h2, r2) = tls_counts(ctl, handshakes + 4);
    assert!(h2 >= handshakes + 4, "{h2} handshakes after {handshakes}");
    // The warm-up tunnel made at start-up is the only full handshake
    // expected (a request racing the warm-up may add one more).
    assert!(r2 + 2 >= h2 && r2 > resumed, "{r2} of {h2} handshakes resumed");
}

#[test]
fn connect_and_upgrade_tunnels_are_not_reused() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (_g, gw) = env.gateway();
    let cfg = env.client_toml("client-connect", gw, "client.pem", "client-key.pem", "");
    let (c, proxy) = env.client_from("client-connect", &cfg);
    let ctl = c.control_addr();
    for _ in 0..5 {
        let (code, body, err) = curl(&[
            "-p",
            "-x",
            &format!("http://{proxy}"),
            &format!("http://{origin}/bytes/100"),
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(body, pattern_bytes(100));
    }
    // Each CONNECT consumed a tunnel for good: at least 5 handshakes.
    let (h, _) = tls_counts(ctl, 5);
    assert!(h >= 5, "CONNECT tunnels must not return to the pool: {h} handshakes");

    // An upgrade through absolute-form: 101, then raw bytes both ways.
    let mut s = tcp(proxy);
    write!(
        s,
        "GET http://{origin}/upgrade HTTP/1.1\r\nHost: {origin}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1);
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: echo"), "{head}");
    let payload = random_bytes(200_000);
    let mut w = s.try_clone().unwrap();
    let p2 = payload.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&p2).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "upgraded stream differs");
}

/// The gateway closes idle tunnels (its idle timeout is shorter than the
/// client's pool lifetime): the client must notice, discard them, and no
/// request may fail.
#[test]
fn tunnels_closed_by_the_gateway_are_discarded_without_failures() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let base = std::fs::read_to_string(env.path("gateway.toml")).unwrap();
    let gw_cfg = env.write(
        "gateway-short.toml",
        &(base.replace("workers = 0", "workers = 1") + "\n[timeouts]\nidle = \"300ms\"\n"),
    );
    let g = Proc::start(
        &["--log", "debug", "gateway", "--config", gw_cfg.to_str().unwrap()],
        env.dir.path(),
        "gateway-short",
    );
    let gw = g.addr_after("listening on ");
    let cfg = env.client_toml(
        "client-stale",
        gw,
        "client.pem",
        "client-key.pem",
        "[pool]\nidle = 3\nidle_lifetime = \"10m\"\n",
    );
    let (c, proxy) = env.client_from("client-stale", &cfg);
    for round in 0..3 {
        get_close(proxy, origin, 500);
        // Wait until the gateway has closed idle tunnels (it says so).
        let before = g.stderr().matches("closed").count();
        let deadline = Instant::now() + WAIT;
        while g.stderr().matches("closed").count() < before + 2 {
            assert!(Instant::now() < deadline, "gateway never closed idle tunnels");
            #[expect(clippy::disallowed_methods, reason = "test: bounded wait for a log line")]
            std::thread::sleep(Duration::from_millis(20));
        }
        // Every pooled tunnel is now dead; these requests must all succeed.
        for i in 0..10 {
            get_close(proxy, origin, 100 + i + round);
        }
    }
    let _ = c;
}

/// A gateway restarted on the same address: every pooled tunnel is dead.
#[test]
fn gateway_restart_loses_no_request() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (mut g, gw) = env.gateway_at("gw-r1", "127.0.0.1:0", "");
    let cfg = env.client_toml(
        "client-restart",
        gw,
        "client.pem",
        "client-key.pem",
        "[pool]\nidle = 4\n",
    );
    let (_c, proxy) = env.client_from("client-restart", &cfg);
    for i in 0..20 {
        get_close(proxy, origin, 200 + i);
    }
    g.child.kill().unwrap();
    let _ = g.child.wait();
    let (_g2, _) = env.gateway_at("gw-r2", &gw.to_string(), "");
    for i in 0..20 {
        get_close(proxy, origin, 300 + i);
    }
}
