//! Server selection end to end: three gateways on loopback, one slow, one
//! killed and restarted, with new browser connections flowing throughout.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// New browser connections, one after another, until stopped (bounded).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(proxy: SocketAddr, origin: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut errors = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let req =
                    format!("GET http://{origin}/bytes/2000 HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
                let r = std::panic::catch_unwind(|| exchange(proxy, req.as_bytes()));
                match r {
                    Ok((200, _, body)) if body == pattern_bytes(2000) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, head, body)) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{status} {head} {}", String::from_utf8_lossy(&body)));
                    }
                    Err(_) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        errors.push("connection failed".into());
                    }
                }
                #[expect(clippy::disallowed_methods, reason = "test: pacing the load generator")]
                std::thread::sleep(Duration::from_millis(15));
            }
            errors
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.thread.take().unwrap().join().unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

const FAST: &str = "[selection]\nprobe_interval = \"250ms\"\nkeepalive_interval = \"150ms\"\nevaluate_interval = \"150ms\"\nswitch_rounds = 2\n";

#[test]
fn moves_to_the_fast_gateway_fails_over_and_readmits_after_recovery() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (_ga, a) = env.gateway_at("gw-a", "127.0.0.1:0", "[probe]\ndelay = \"120ms\"\n");
    let (gb, b) = env.gateway_at("gw-b", "127.0.0.1:0", "");
    let (gc, c) = env.gateway_at("gw-c", "127.0.0.1:0", "");
    let cfg = env.multi_client_toml("client-sel", &[("slow", a), ("b", b), ("c", c)], FAST);
    let (client, proxy) = env.client_from("client-sel", &cfg);
    let ctl = client.control_addr();
    // Browsing works from the first second, through the default gateway.
    assert_eq!(status(ctl)["selected"], "slow");
    let load = Load::start(proxy, origin);

    // The client leaves the slow default for a fast one, by clear margin.
    let v = wait_status(ctl, "a fast gateway selected", Duration::from_secs(20), |v| {
        v["selected"] == "b" || v["selected"] == "c"
    });
    assert_eq!(v["last_switch"]["detail"]["kind"], "better", "{v:#}");
    let fast = v["selected"].as_str().unwrap().to_string();
    let other = if fast == "b" { "c" } else { "b" };
    assert!(gw(&v, "slow")["p90_ms"].as_f64().unwrap() > 100.0, "{v:#}");

    // Kill the selected gateway: the client moves to the other fast one at once.
    let (mut killed, killed_addr) = if fast == "b" { (gb, b) } else { (gc, c) };
    let t_kill = Instant::now();
    killed.child.kill().unwrap();
    let _ = killed.child.wait();
    let v = wait_status(ctl, "fail-over", Duration::from_secs(5), |v| v["selected"] == other);
    let failover = t_kill.elapsed();
    assert!(
        gw(&v, &fast)["failed"] == true || gw(&v, &fast)["state"] == "unavailable",
        "{v:#}"
    );
    wait_status(ctl, "killed gateway marked unavailable", Duration::from_secs(20), |v| {
        gw(v, &fast)["state"] == "unavailable"
    });

    // Restart it on the same address: re-admitted only after sustained health.
    let (_back, _) = env.gateway_at(&format!("gw-{fast}-again"), &killed_addr.to_string(), "");
    let t_back = Instant::now();
    let first = status(ctl);
    assert_eq!(
        gw(&first, &fast)["state"],
        "unavailable",
        "not re-admitted at once: {first:#}"
    );
    let v = wait_status(ctl, "re-admission", Duration::from_secs(40), |v| {
        gw(v, &fast)["state"] != "unavailable"
    });
    let readmitted_after = t_back.elapsed();
    // Three good probes in a row, at least 0.8 x 250 ms apart (the probe
    // interval caps the recovery back-off), after the restart.
    assert!(
        readmitted_after > Duration::from_millis(350),
        "re-admitted too soon: {readmitted_after:?}"
    );
    assert_eq!(gw(&v, &fast)["failed"], false);

    let (ok, failed, errors) = load.finish();
    assert!(ok > 50, "load too small to mean anything: {ok}");
    assert_eq!(failed, 0, "new connections failed: {errors:?}");
    eprintln!(
        "fail-over observed in status after {failover:?}; re-admitted after {readmitted_after:?}; {ok} requests ok"
    );
    // The switch was logged with its reason.
    client.wait_stderr("gateway switch:");
}

/// A client with one gateway that is then killed, once the control plane
/// has seen it go. Returns (client, proxy, origin address, origin, env).
fn no_gateway_case(fail_open: bool) -> (Proc, SocketAddr, SocketAddr, Proc, Env) {
    let env = Env::new();
    let (o, origin) = env.origin();
    let (mut g, gw_addr) = env.gateway_at("gw-only", "127.0.0.1:0", "");
    let extra = format!("{FAST}[pac]\nfail_open = {fail_open}\n");
    let cfg = env.multi_client_toml("client-nogw", &[("only", gw_addr)], &extra);
    let (client, proxy) = env.client_from("client-nogw", &cfg);
    let ctl = client.control_addr();
    // Works through the gateway first.
    let (status_code, _, body) = exchange(
        proxy,
        format!("GET http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_code, 200);
    assert!(String::from_utf8_lossy(&body).contains("msc-gateway"));
    g.child.kill().unwrap();
    let _ = g.child.wait();
    wait_status(ctl, "no gateway available", Duration::from_secs(20), |v| {
        v["selected"].is_null()
    });
    (client, proxy, origin, o, env)
}

#[test]
fn fail_open_relays_directly_when_no_gateway_is_available() {
    let (client, proxy, origin, _o, _env) = no_gateway_case(true);
    let (status_code, _, body) = exchange(
        proxy,
        format!("GET http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_code, 200);
    let echo = String::from_utf8_lossy(&body);
    assert!(
        echo.contains("Via: 1.1 msc-client") && !echo.contains("msc-gateway"),
        "{echo}"
    );
    let (code, got, err) = curl(&[
        "-p",
        "-x",
        &format!("http://{proxy}"),
        &format!("http://{origin}/bytes/3000"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(got, pattern_bytes(3000));
    client.wait_stderr(&format!("GET http://{origin}/echo 200 0"));
    client.wait_stderr("direct:fail-open");
    let v = wait_status(
        client.control_addr(),
        "fail-open counted",
        Duration::from_secs(5),
        |v| v["direct"]["fail_open"].as_u64().unwrap_or(0) >= 2,
    );
    assert_eq!(v["fail_open"], true);
}

#[test]
fn fail_closed_answers_503_when_no_gateway_is_available() {
    let (client, proxy, origin, _o, _env) = no_gateway_case(false);
    let (status_code, _, body) = exchange(
        proxy,
        format!("GET http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_code, 503);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("no gateway is available") && text.contains("fail-closed"),
        "{text}"
    );
    let (status_code, _, _) = exchange(
        proxy,
        format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_code, 503);
    wait_status(
        client.control_addr(),
        "fail-closed counted",
        Duration::from_secs(5),
        |v| v["direct"]["fail_closed"].as_u64().unwrap_or(0) >= 2,
    );
}
