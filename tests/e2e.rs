//! End-to-end: curl and raw TCP clients through a real client, a real
//! gateway (mutual TLS) and a real origin, all on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};

use common::*;

#[test]
fn get_through_the_chain() {
    let c = Chain::start();
    let (code, body, err) = curl(&["-x", &format!("http://{}", c.proxy), &c.url("/")]);
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&body).contains("Hello from the msc demo origin"));
    // The origin sees origin-form with the gateway's Via; the client's Via and
    // proxy hop-by-hop fields are gone.
    let (code, body, err) = curl(&[
        "-x",
        &format!("http://{}", c.proxy),
        "-H",
        "Proxy-Connection: keep-alive",
        &c.url("/echo"),
    ]);
    assert_eq!(code, 0, "{err}");
    let echo = String::from_utf8_lossy(&body);
    assert!(echo.starts_with("GET /echo HTTP/1.1\r\n"), "{echo}");
    assert!(
        echo.contains("Via: 1.1 msc-client") && echo.contains("Via: 1.1 msc-gateway"),
        "{echo}"
    );
    assert!(!echo.to_ascii_lowercase().contains("proxy-connection"), "{echo}");
    // One access-log line per request, with the user from the certificate.
    let log = c
        .gateway
        .wait_stderr(&format!("alice@example.com GET http://{}/echo 200 ", c.origin_addr));
    let line = log.lines().find(|l| l.contains("/echo 200")).unwrap();
    let cols: Vec<&str> = line.split(' ').collect();
    assert_eq!(cols.len(), 8, "{line}");
    assert!(cols[0].ends_with('Z') && cols[0].contains('T'), "{line}");
    assert!(cols[6].parse::<u64>().unwrap() > 100, "bytes down: {line}");
    assert!(cols[7].parse::<f64>().is_ok(), "duration: {line}");
}

#[test]
fn post_10_mib_random_body() {
    let c = Chain::start();
    let data = random_bytes(10 * 1024 * 1024);
    let f = c.env.write("body.bin", "");
    std::fs::write(&f, &data).unwrap();
    let (code, body, err) = curl(&[
        "-x",
        &format!("http://{}", c.proxy),
        "--data-binary",
        &format!("@{}", f.display()),
        &c.url("/sha256"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&body).trim(),
        format!("sha256={} bytes={}", sha256_hex(&data), data.len())
    );
    // Chunked upload (no Content-Length) is framed and forwarded exactly too.
    let (code, body, err) = curl(&[
        "-x",
        &format!("http://{}", c.proxy),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", f.display()),
        &c.url("/sha256"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&body).trim(),
        format!("sha256={} bytes={}", sha256_hex(&data), data.len())
    );
}

/// CONNECT carrying 50 MiB of random bytes each way at the same time; each
/// side half-closes when done and checks what it received.
#[test]
fn connect_50_mib_both_directions() {
    let c = Chain::start();
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let taddr = target.local_addr().unwrap();
    const N: usize = 50 * 1024 * 1024;
    let down = random_bytes(N);
    let down_sha = sha256_hex(&down);
    let server = std::thread::spawn(move || {
        let (s, _) = target.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut r = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut s = s;
            s.write_all(&down).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::with_capacity(N);
        r.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got
    });
    let up = random_bytes(N);
    let mut s = tcp(c.proxy);
    write!(s, "CONNECT {taddr} HTTP/1.1\r\nHost: {taddr}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1);
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    let mut w = s.try_clone().unwrap();
    let up2 = up.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&up2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(N);
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), N);
    assert_eq!(sha256_hex(&got), down_sha, "download differs");
    let received = server.join().unwrap();
    assert_eq!(received.len(), N);
    assert_eq!(sha256_hex(&received), sha256_hex(&up), "upload differs");
}

#[test]
fn two_hundred_concurrent_connections() {
    let c = Chain::start();
    let proxy = c.proxy;
    let origin = c.origin_addr;
    let threads: Vec<_> = (0..200)
        .map(|i| {
            std::thread::spawn(move || {
                let len = 1000 + i * 37;
                let req = if i % 2 == 0 {
                    format!("GET http://{origin}/bytes/{len} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n")
                } else {
                    format!("GET http://{origin}/chunked/{len} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n")
                };
                let (status, head, body) = exchange(proxy, req.as_bytes());
                assert_eq!(status, 200, "{head}");
                if i % 2 == 0 {
                    assert_eq!(body, pattern_bytes(len));
                } else {
                    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"));
                    assert!(body.ends_with(b"0\r\n\r\n"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// 100 requests on one browser connection, alternating between two origins
/// (different hosts), with bodies of every framing.
#[test]
fn one_hundred_requests_on_one_keep_alive_connection() {
    let c = Chain::start();
    let (_o2, origin2) = c.env.origin();
    let mut s = tcp(c.proxy);
    for i in 0..100usize {
        let host = if i % 2 == 0 {
            c.origin_addr.to_string()
        } else {
            format!("localhost:{}", origin2.port())
        };
        let len = i * 101;
        let (req, want_len) = match i % 4 {
            0 => (
                format!("GET http://{host}/bytes/{len} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                Some(len),
            ),
            1 => (
                format!("HEAD http://{host}/bytes/{len} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                None,
            ),
            2 => (
                format!("POST http://{host}/sha256 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc"),
                None,
            ),
            _ => (
                format!("GET http://{host}/status/204 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                None,
            ),
        };
        s.write_all(req.as_bytes()).unwrap();
        // Read the head, then exactly the framed body.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1, "request {i}: connection closed");
            head.push(b[0]);
        }
        let h = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(!h.contains("connection: close"), "request {i}: {h}");
        match i % 4 {
            0 => {
                let mut body = vec![0u8; len];
                s.read_exact(&mut body).unwrap();
                assert_eq!(body, pattern_bytes(len), "request {i}");
            }
            1 => assert!(h.contains(&format!("content-length: {len}")), "HEAD {i}: {h}"),
            2 => {
                let n: usize = h
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                let mut body = vec![0u8; n];
                s.read_exact(&mut body).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&body).trim(),
                    format!("sha256={} bytes=3", sha256_hex(b"abc"))
                );
            }
            _ => assert!(h.starts_with("http/1.1 204"), "{h}"),
        }
        assert!(want_len.is_none_or(|l| l == len));
    }
}

#[test]
fn close_delimited_and_chunked_responses_arrive_exactly() {
    let c = Chain::start();
    for path in ["/close/300000", "/chunked/300000", "/bytes/300000"] {
        let (code, body, err) = curl(&["-x", &format!("http://{}", c.proxy), &c.url(path)]);
        assert_eq!(code, 0, "{path}: {err}");
        assert_eq!(body, pattern_bytes(300000), "{path}");
    }
}

#[test]
fn policy_blocks_plain_and_connect() {
    let c = Chain::start();
    let (code, body, _) = curl(&[
        "-x",
        &format!("http://{}", c.proxy),
        "-w",
        "%{http_code}",
        "http://www.blocked.example/x",
    ]);
    assert_eq!(code, 0);
    let text = String::from_utf8_lossy(&body);
    assert!(text.ends_with("403"), "{text}");
    assert!(
        text.contains("Access blocked") && text.contains("*.blocked.example"),
        "{text}"
    );
    let (status, head, body) = exchange(
        c.proxy,
        b"CONNECT blocked.example:443 HTTP/1.1\r\nHost: blocked.example:443\r\n\r\n",
    );
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("X-Msc-Policy-Rule: blocked.example"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("blocked.example"));
    c.gateway.wait_stderr("CONNECT blocked.example:443 403");
}

#[test]
fn curl_as_https_proxy_client_against_the_gateway() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (_g, gw) = env.gateway();
    let base = [
        "--proxy-cacert",
        &env.p("ca.pem"),
        "--proxy-cert",
        &env.p("client.pem"),
        "--proxy-key",
        &env.p("client-key.pem"),
    ]
    .map(String::from);
    let proxy = format!("https://{gw}");
    let url = format!("http://{origin}/bytes/12345");
    let mut args: Vec<&str> = vec!["--proxy", &proxy];
    args.extend(base.iter().map(String::as_str));
    args.push(&url);
    let (code, body, err) = curl(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, pattern_bytes(12345));
    args.insert(0, "-p"); // CONNECT through the HTTPS proxy
    let (code, body, err) = curl(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, pattern_bytes(12345));
}

#[test]
fn demo_starts_serves_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Proc::start(&["demo"], dir.path(), "demo");
    assert_eq!(demo.ready_line, "ready");
    // The demo prints what to type before "ready": run exactly that.
    let lines = demo.before_ready.clone();
    let try_line = lines
        .iter()
        .find(|l| l.trim_start().starts_with("curl -x ") && !l.contains("blocked"))
        .unwrap_or_else(|| panic!("no curl line in {lines:?}"));
    let args: Vec<&str> = try_line.split_whitespace().skip(1).collect();
    let (code, body, err) = curl(&args);
    assert_eq!(code, 0, "{try_line}: {err}");
    assert!(String::from_utf8_lossy(&body).contains("Hello from the msc demo origin"));
    let connect_line = lines.iter().find(|l| l.contains("curl -p -x")).unwrap();
    let args: Vec<&str> = connect_line
        .split('#')
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    let (code, body, err) = curl(&args);
    assert_eq!(code, 0, "{connect_line}: {err}");
    assert!(String::from_utf8_lossy(&body).contains("Hello from the msc demo origin"));
    let status = demo.terminate();
    assert!(status.success(), "demo exit status {status}");
}

#[test]
fn client_and_gateway_exit_cleanly_on_sigterm() {
    let mut c = Chain::start();
    let (code, _, err) = curl(&["-x", &format!("http://{}", c.proxy), &c.url("/")]);
    assert_eq!(code, 0, "{err}");
    assert!(c.client.terminate().success());
    assert!(c.gateway.terminate().success());
}
