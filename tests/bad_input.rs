//! Bad input gets a clear status with a one-line reason, and never disturbs
//! the next connection.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

fn assert_still_serving(proxy: SocketAddr, origin: SocketAddr) {
    let (status, head, body) = exchange(
        proxy,
        format!("GET http://{origin}/bytes/1000 HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, pattern_bytes(1000));
}

/// One-line reason body, as `msc-client: ...` or `msc-gateway: ...`.
fn one_line(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(body).into_owned();
    assert!(
        t.ends_with('\n') && t.trim_end().lines().count() == 1,
        "not one line: {t:?}"
    );
    t.trim_end().to_string()
}

#[test]
fn malformed_heads_get_400_and_the_next_connection_works() {
    let c = Chain::start();
    let cases: Vec<(&[u8], &str)> = vec![
        (b"GARBAGE\r\n\r\n", "malformed"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "malformed"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "this is a proxy"),
        (b"GET /x HTTP/1.1\r\n\r\n", "this is a proxy"),
        (b"CONNECT example.com HTTP/1.1\r\n\r\n", "bad CONNECT target"),
        (b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n", "bad CONNECT target"),
        (b"GET ftp://example.com/ HTTP/1.1\r\n\r\n", "scheme"),
        (b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n", "user information"),
        (b"GET http://exa mple.com/ HTTP/1.1\r\n\r\n", "malformed"),
        (b"GET http://example.com/ HTTP/2.0\r\n\r\n", "HTTP/1.0 or HTTP/1.1"),
        (
            b"GET http://example.com/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "header name",
        ),
    ];
    for (raw, reason) in cases {
        let (status, head, body) = exchange(c.proxy, raw);
        assert_eq!(status, 400, "{:?} -> {head}", String::from_utf8_lossy(raw));
        let line = one_line(&body);
        assert!(
            line.starts_with("msc-client: ") && line.contains(reason),
            "{:?} -> {line}",
            String::from_utf8_lossy(raw)
        );
        assert_still_serving(c.proxy, c.origin_addr);
    }
}

#[test]
fn oversized_heads_get_431() {
    let c = Chain::start();
    let mut big = format!("GET http://{}/ HTTP/1.1\r\n", c.origin_addr).into_bytes();
    // Few, large fields: the size limit, not the field-count limit, must trip.
    while big.len() < 70 * 1024 {
        big.extend_from_slice(format!("X-Filler: {}\r\n", "a".repeat(4000)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let mut s = tcp(c.proxy);
    // The proxy may answer and close before reading everything; ignore write errors.
    let _ = s.write_all(&big);
    let (status, _, body) = read_response(&mut s);
    assert_eq!(status, 431);
    assert!(one_line(&body).contains("64 KiB"));
    let mut many = format!("GET http://{}/ HTTP/1.1\r\n", c.origin_addr);
    for i in 0..101 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (status, _, body) = exchange(c.proxy, many.as_bytes());
    assert_eq!(status, 431);
    assert!(one_line(&body).contains("100 header fields"));
    assert_still_serving(c.proxy, c.origin_addr);
}

#[test]
fn a_slow_head_gets_408_without_disturbing_others() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (_g, gw) = env.gateway();
    let cfg = env.client_toml(
        "client-slow",
        gw,
        "client.pem",
        "client-key.pem",
        "[timeouts]\nhead = \"400ms\"\n",
    );
    let (_c, proxy) = env.client_from("client-slow", &cfg);
    let mut slow = tcp(proxy);
    let t0 = Instant::now();
    slow.write_all(format!("GET http://{origin}/ HTTP/1.1\r\nHost: ").as_bytes())
        .unwrap();
    // While the slow head is pending, another connection is served normally.
    assert_still_serving(proxy, origin);
    let (status, _, body) = read_response(&mut slow);
    assert_eq!(status, 408);
    assert!(one_line(&body).contains("400ms"));
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "408 came too early: {:?}",
        t0.elapsed()
    );
    // An idle connection that never sends a byte is closed quietly, not answered with 408.
    let mut idle = tcp(proxy);
    let mut buf = [0u8; 16];
    let _ = idle.set_read_timeout(Some(Duration::from_millis(900)));
    match idle.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("idle connection got {:?}", String::from_utf8_lossy(&buf[..n])),
    }
}

fn smuggling_cases(o: SocketAddr) -> Vec<(String, &'static str)> {
    vec![
        (
            format!(
                "POST http://{o}/sha256 HTTP/1.1\r\nHost: {o}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            "both Content-Length and Transfer-Encoding",
        ),
        (
            format!(
                "POST http://{o}/sha256 HTTP/1.1\r\nHost: {o}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            ),
            "conflicting Content-Length",
        ),
        (
            format!("POST http://{o}/sha256 HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
            "Transfer-Encoding",
        ),
        (
            format!(
                "POST http://{o}/sha256 HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            ),
            "invalid chunk size",
        ),
    ]
}

#[test]
fn request_smuggling_shapes_get_400_from_the_client() {
    let c = Chain::start();
    for (raw, reason) in smuggling_cases(c.origin_addr) {
        let (status, head, body) = exchange(c.proxy, raw.as_bytes());
        assert_eq!(status, 400, "{raw:?} -> {head}");
        let line = one_line(&body);
        assert!(line.starts_with("msc-client: ") && line.contains(reason), "{line}");
    }
    // No request completed at the origin (a chunked body is streamed, so the
    // gateway may have seen the head of the last one, never a whole request).
    let log = c.gateway.stderr();
    assert!(!log.contains("/sha256 200"), "{log}");
    assert!(log.matches("/sha256").count() <= 1, "{log}");
    assert_still_serving(c.proxy, c.origin_addr);
}

/// The gateway refuses them as well, for clients that talk to it directly
/// (openssl s_client as a real mutual-TLS client).
#[test]
fn request_smuggling_shapes_get_400_from_the_gateway() {
    let c = Chain::start();
    for (raw, reason) in smuggling_cases(c.origin_addr) {
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-ign_eof",
                "-connect",
                &c.gateway_addr.to_string(),
            ])
            .args([
                "-cert",
                &c.env.p("client.pem"),
                "-key",
                &c.env.p("client-key.pem"),
                "-CAfile",
                &c.env.p("ca.pem"),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(raw.as_bytes()).unwrap();
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        let _ = child.wait();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{raw:?} -> {text}");
        assert!(text.contains("msc-gateway: ") && text.contains(reason), "{text}");
    }
    assert!(!c.gateway.stderr().contains("/sha256 200"));
}

#[test]
fn unreachable_gateway_and_origin_errors_name_the_failure() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    // A port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = env.client_toml("client-dead", dead, "client.pem", "client-key.pem", FAIL_CLOSED);
    let (_c, proxy) = env.client_from("client-dead", &cfg);
    let (status, head, body) = exchange(
        proxy,
        format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
    );
    let line = one_line(gateway_refusal(status, &head, &body).as_bytes());
    assert!(
        line.contains(&format!("gateway 'gw1' ({dead})")) && line.contains("refused"),
        "{line}"
    );

    // Through a working chain, an origin that refuses connections: 502 from the gateway.
    let c = Chain::start();
    let (status, _, body) = exchange(
        c.proxy,
        format!("GET http://{dead}/ HTTP/1.1\r\nHost: {dead}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 502);
    let line = one_line(&body);
    assert!(line.starts_with("msc-gateway: cannot connect to 127.0.0.1:"), "{line}");
    let (status, _, body) = exchange(
        c.proxy,
        b"GET http://no-such-host.invalid/ HTTP/1.1\r\nHost: no-such-host.invalid\r\n\r\n",
    );
    assert_eq!(status, 502);
    assert!(one_line(&body).contains("cannot resolve no-such-host.invalid"));
    let (status, _, _) = exchange(
        c.proxy,
        format!("CONNECT {dead} HTTP/1.1\r\nHost: {dead}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 502);
}

/// A "gateway" that completes TCP but never speaks TLS: the handshake times
/// out and the browser is told so (504, or 503 with the same reason once the
/// control plane has judged the gateway unavailable).
#[test]
fn silent_gateway_times_out_with_504() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    // The kernel completes connections into the backlog; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let extra = format!("[timeouts]\nhandshake = \"300ms\"\n{FAIL_CLOSED}");
    let cfg = env.client_toml("client-silent", addr, "client.pem", "client-key.pem", &extra);
    let (_c, proxy) = env.client_from("client-silent", &cfg);
    let (status, head, body) = exchange(
        proxy,
        format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
    );
    assert!(status == 504 || status == 503, "{head}");
    let line = one_line(&body);
    assert!(
        line.contains(&format!("gateway 'gw1' ({addr})")) && line.contains("timed out"),
        "{line}"
    );
    drop(silent);
}

#[test]
fn gateway_answers_its_probe_only_to_authenticated_clients() {
    let c = Chain::start();
    let env = &c.env;
    let proxy = format!("https://{}", c.gateway_addr);
    let url = format!("https://{}/.well-known/msc/probe", c.gateway_addr);
    let (code, out, err) = curl(&[
        "--cacert",
        &env.p("ca.pem"),
        "--cert",
        &env.p("client.pem"),
        "--key",
        &env.p("client-key.pem"),
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "204");
    let (code, _, _) = curl(&["--cacert", &env.p("ca.pem"), &url]);
    assert_ne!(code, 0, "a client without a certificate must not reach the probe");
    let _ = proxy;
    // A gateway document that does not exist: 404 with a one-line reason.
    let doc = format!("https://{}/.well-known/msc/no-such-doc", c.gateway_addr);
    let (code, out, err) = curl(&[
        "--cacert",
        &env.p("ca.pem"),
        "--cert",
        &env.p("client.pem"),
        "--key",
        &env.p("client-key.pem"),
        "-sS",
        "-w",
        " %{http_code}",
        &doc,
    ]);
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.ends_with(" 404") && out.contains("no document \"no-such-doc\""),
        "{out}"
    );
}
