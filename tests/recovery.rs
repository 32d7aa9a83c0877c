//! Fail-safe behaviour around a gateway outage, end to end with real
//! processes: one gateway, killed with SIGKILL and restarted on the same
//! port. The very next requests get the configured policy (DIRECT with
//! fail-open, marked and counted; 503 with fail-closed), never a 502, and
//! requests go through the gateway again within seconds of its restart.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// The re-admission target (issue 14): back via the gateway within this long of its restart.
const BACK_WITHIN: Duration = Duration::from_secs(10);

struct OneGateway {
    env: Env,
    _origin: Proc,
    origin: SocketAddr,
    gateway: Proc,
    gw_addr: SocketAddr,
    client: Proc,
    proxy: SocketAddr,
}

/// Origin, one gateway and a client with default selection settings (the
/// control plane probes every 30 s and checks the gateway in use every 5 s,
/// so in the first requests after a kill it has not noticed yet).
fn one_gateway(fail_open: bool) -> OneGateway {
    let env = Env::new();
    let (origin_proc, origin) = env.origin();
    let (gateway, gw_addr) = env.gateway_at("gw-only", "127.0.0.1:0", "");
    let cfg = env.multi_client_toml(
        "client-rec",
        &[("only", gw_addr)],
        &format!("[pac]\nfail_open = {fail_open}\n"),
    );
    let (client, proxy) = env.client_from("client-rec", &cfg);
    OneGateway {
        env,
        _origin: origin_proc,
        origin,
        gateway,
        gw_addr,
        client,
        proxy,
    }
}

fn get_echo(proxy: SocketAddr, origin: SocketAddr) -> (u16, String) {
    let (code, _, body) = exchange(
        proxy,
        format!("GET http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn via_gateway(echo: &str) -> bool {
    echo.contains("msc-gateway")
}

/// Works through the gateway, with tunnels pooled; returns a browser
/// connection that has carried one request through the gateway (keep-alive).
fn warm_up(c: &OneGateway) -> std::net::TcpStream {
    for _ in 0..3 {
        let (code, echo) = get_echo(c.proxy, c.origin);
        assert_eq!(code, 200);
        assert!(via_gateway(&echo), "{echo}");
    }
    let mut s = tcp(c.proxy);
    let o = c.origin;
    s.write_all(format!("GET http://{o}/echo HTTP/1.1\r\nHost: {o}\r\n\r\n").as_bytes())
        .unwrap();
    let (code, _, body) = read_response(&mut s);
    assert_eq!(code, 200);
    assert!(via_gateway(&String::from_utf8_lossy(&body)));
    s
}

fn kill(p: &mut Proc) {
    p.child.kill().unwrap();
    let _ = p.child.wait();
}

#[test]
fn killed_gateway_fail_open_the_very_next_requests_go_direct_marked_never_502() {
    let mut c = one_gateway(true);
    let ctl = c.client.control_addr();
    let mut keep = warm_up(&c);
    // The data path's tunnel set-up latencies reach the ranking.
    let v = wait_status(ctl, "traffic latency merged", WAIT, |v| {
        gw(v, "only")["traffic_samples"].as_u64().unwrap_or(0) >= 1
    });
    assert!(gw(&v, "only")["traffic_p90_ms"].as_f64().is_some(), "{v:#}");
    assert_eq!(v["traffic"], "gateway");
    assert!(v["last_direct"].is_null(), "{v:#}");

    kill(&mut c.gateway);
    // The browser connection that used the gateway a moment ago: its next
    // request finds the pooled tunnel dead, the retry finds the gateway
    // unreachable, and the request goes DIRECT.
    let o = c.origin;
    keep.write_all(format!("GET http://{o}/echo HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let (code, _, body) = read_response(&mut keep);
    let echo = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "{echo}");
    assert!(!via_gateway(&echo) && echo.contains("Via: 1.1 msc-client"), "{echo}");
    assert_eq!(
        echo.matches("Via:").count(),
        1,
        "one Via, not the tunnel's and the relay's: {echo}"
    );
    // New connections, GET and a POST with a body, one after another.
    for i in 0..15 {
        let (code, echo) = get_echo(c.proxy, c.origin);
        assert_eq!(code, 200, "request {i} after the kill: {echo}");
        assert!(!via_gateway(&echo), "{echo}");
    }
    let body = random_bytes(100_000);
    let file = c.env.path("post.bin");
    std::fs::write(&file, &body).unwrap();
    let (code, got, err) = curl(&[
        "-x",
        &format!("http://{}", c.proxy),
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{o}/sha256"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("sha256={} bytes=100000\n", sha256_hex(&body))
    );

    // Marked in the access log, counted, and the status says so plainly.
    c.client.wait_stderr("direct:fail-open:unreachable");
    let v = wait_status(ctl, "DIRECT requests counted", WAIT, |v| {
        v["direct"]["fail_open"].as_u64().unwrap_or(0) >= 16
    });
    assert!(v["direct"]["fail_open_unreachable"].as_u64().unwrap() >= 1, "{v:#}");
    assert_eq!(v["direct"]["fail_closed"], 0);
    assert_eq!(v["traffic"], "direct:fail-open", "{v:#}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains(&c.gw_addr.to_string())),
        "{v:#}"
    );
    assert!(
        v["last_direct"]["route"]
            .as_str()
            .is_some_and(|r| r.starts_with("direct:fail-open:")),
        "{v:#}"
    );
    let text = msc::cli::status::render(&v.to_string()).unwrap();
    assert!(text.contains("DIRECT, UNSCANNED"), "{text}");
    assert!(text.contains("last request sent DIRECT"), "{text}");
    assert!(!c.client.stderr().contains(" 502 "), "{}", c.client.stderr());
}

#[test]
fn killed_gateway_fail_closed_the_very_next_requests_get_503_never_502() {
    let mut c = one_gateway(false);
    let ctl = c.client.control_addr();
    let mut keep = warm_up(&c);
    kill(&mut c.gateway);
    let o = c.origin;
    keep.write_all(format!("GET http://{o}/echo HTTP/1.1\r\nHost: {o}\r\n\r\n").as_bytes())
        .unwrap();
    let (code, _, body) = read_response(&mut keep);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("fail-closed"), "{text}");
    for i in 0..15 {
        let (code, text) = get_echo(c.proxy, c.origin);
        assert_eq!(code, 503, "request {i} after the kill: {text}");
        assert!(text.contains("fail-closed") && !text.contains("Via:"), "{text}");
    }
    let (code, _, _) = exchange(c.proxy, format!("CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n\r\n").as_bytes());
    assert_eq!(code, 503);
    let v = wait_status(ctl, "refusals counted", WAIT, |v| {
        v["direct"]["fail_closed"].as_u64().unwrap_or(0) >= 17
    });
    assert!(v["direct"]["fail_closed_unreachable"].as_u64().unwrap() >= 1, "{v:#}");
    assert_eq!(
        (&v["direct"]["fail_open"], &v["last_direct"]),
        (&0.into(), &serde_json::Value::Null)
    );
    assert_eq!(v["traffic"], "refused:fail-closed", "{v:#}");
    // Nothing went DIRECT, so nothing is in the client's access log.
    assert!(!c.client.stderr().contains("direct:"), "{}", c.client.stderr());
}

/// Kills the gateway, keeps it down until the control plane has judged it
/// unavailable (with requests flowing, which is how it notices fastest)
/// and a few seconds more, restarts it on the same port, and measures how
/// long until a request goes through it again. Every answer meanwhile is the
/// configured policy's, never a 502.
#[expect(
    clippy::disallowed_methods,
    reason = "test: paces its requests during a deliberate outage; every loop is bounded"
)]
fn back_after_restart(fail_open: bool) -> Duration {
    let mut c = one_gateway(fail_open);
    let ctl = c.client.control_addr();
    drop(warm_up(&c));
    kill(&mut c.gateway);
    let policy = |code: u16, text: &str| {
        if fail_open {
            assert_eq!(code, 200, "{text}");
            assert!(!via_gateway(text), "{text}");
        } else {
            assert_eq!(code, 503, "{text}");
        }
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, text) = get_echo(c.proxy, c.origin);
        policy(code, &text);
        if status(ctl)["selected"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "never judged unavailable: {:#}", status(ctl));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Down for a few more seconds: the re-probe back-off grows meanwhile.
    let down_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < down_until {
        let (code, text) = get_echo(c.proxy, c.origin);
        policy(code, &text);
        std::thread::sleep(Duration::from_millis(250));
    }
    let (back_gw, _) = c.env.gateway_at("gw-only-again", &c.gw_addr.to_string(), "");
    let restarted = Instant::now();
    loop {
        let (code, text) = get_echo(c.proxy, c.origin);
        if code == 200 && via_gateway(&text) {
            break;
        }
        policy(code, &text);
        assert!(
            restarted.elapsed() < BACK_WITHIN,
            "not back through the gateway within {BACK_WITHIN:?}: {:#}\nrestarted gateway:\n{}\nclient:\n{}",
            status(ctl),
            back_gw.stderr(),
            c.client.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = restarted.elapsed();
    let v = wait_status(ctl, "gateway selected", WAIT, |v| v["selected"] == "only");
    assert_eq!(v["traffic"], "gateway", "{v:#}");
    assert!(v["error"].is_null(), "{v:#}");
    assert!(!c.client.stderr().contains(" 502 "), "{}", c.client.stderr());
    back
}

#[test]
fn restarted_gateway_carries_requests_again_within_seconds_fail_open() {
    let back = back_after_restart(true);
    eprintln!("fail-open: back through the gateway {back:?} after its restart");
}

#[test]
fn restarted_gateway_carries_requests_again_within_seconds_fail_closed() {
    let back = back_after_restart(false);
    eprintln!("fail-closed: back through the gateway {back:?} after its restart");
}
