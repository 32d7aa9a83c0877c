//! The gateway's egress policy end to end: a real client and gateway (mutual
//! TLS), origins on 127.0.0.1. With the built-in (strict) defaults every
//! spelling of a loopback destination is refused with 403 before any
//! connection is attempted; an allow list re-admits it; IP rules of the deny
//! list match by resolved address.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

/// A TCP listener on 127.0.0.1 that counts the connections it accepts (and
/// answers each with a tiny response): proof that a refused request never
/// reached it.
struct Counter {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Counter {
    fn start() -> Counter {
        Counter::start_on("127.0.0.1")
    }

    fn start_on(ip: &str) -> Counter {
        let l = TcpListener::bind((ip, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let n = accepted.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            }
        });
        Counter { addr, accepted }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(proxy: SocketAddr, target: &str) -> (u16, String) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, _, body) = exchange(proxy, req.as_bytes());
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn connect(proxy: SocketAddr, authority: &str) -> (u16, String) {
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    let (status, _, body) = exchange(proxy, req.as_bytes());
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn strict_defaults_refuse_every_spelling_of_loopback() {
    let env = Env::new();
    let origin = Counter::start();
    let (gateway, gw) = env.gateway_egress("gateway", "", |t| t);
    let (_client, proxy) = env.client(gw);
    let p = origin.port();
    let shut = closed_port();
    for host in [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::1]",
        "localhost",
        "0",
        "0.0.0.0",
    ] {
        for port in [p, shut] {
            let target = format!("http://{host}:{port}/");
            let (status, body) = get(proxy, &target);
            assert_eq!(status, 403, "{target}: {body}");
            let host = host.trim_matches(['[', ']']);
            assert_eq!(
                body,
                format!("msc-gateway: destination {host} is an internal address (egress policy)\n"),
                "{target}"
            );
        }
    }
    // curl (which normalises some spellings itself) sees the same.
    for url in [
        format!("http://127.0.0.1:{p}/"),
        format!("http://localhost:{p}/"),
        format!("http://2130706433:{p}/"),
    ] {
        let (code, body, err) = curl(&["-x", &format!("http://{proxy}"), "-w", "\n%{http_code}", &url]);
        assert_eq!(code, 0, "{err}");
        let out = String::from_utf8_lossy(&body);
        assert!(out.ends_with("\n403"), "{url}: {out}");
        assert!(out.contains("is an internal address (egress policy)"), "{url}: {out}");
    }
    // Link-local cloud metadata and RFC 1918: refused before any connect,
    // so no 504 after the connect timeout.
    for target in ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1:22/"] {
        let (status, body) = get(proxy, target);
        assert_eq!(status, 403, "{target}: {body}");
    }
    // CONNECT: a port other than 443 is refused whatever the address ...
    for port in [p, shut] {
        let (status, body) = connect(proxy, &format!("127.0.0.1:{port}"));
        assert_eq!(status, 403, "{body}");
        assert_eq!(
            body,
            format!("msc-gateway: CONNECT to port {port} is not allowed (egress policy; CONNECT ports: 443)\n")
        );
    }
    // ... and 443 on an internal address still is.
    let (status, body) = connect(proxy, "127.1:443");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("destination 127.1 is an internal address (egress policy)"),
        "{body}"
    );
    let (code, out, err) = curl(&[
        "-p",
        "-x",
        &format!("http://{proxy}"),
        "-w",
        "%{http_connect}",
        &format!("http://127.0.0.1:{p}/"),
    ]);
    assert_ne!(code, 0, "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "403");

    assert_eq!(origin.count(), 0, "a refused request reached the origin");
    // Refusals are logged like any request.
    gateway.wait_stderr(&format!("alice@example.com GET http://2130706433:{p}/ 403 "));
    gateway.wait_stderr(&format!("alice@example.com CONNECT 127.0.0.1:{p} 403 "));
}

#[test]
fn allow_list_readmits_ranges_and_ports() {
    let env = Env::new();
    let origin = Counter::start();
    let p = origin.port();
    let (_gateway, gw) = env.gateway_egress(
        "gateway",
        &format!("[egress]\nallow = [\"127.0.0.1/32\"]\nconnect_ports = [443, {p}]\n"),
        |t| t,
    );
    let (_client, proxy) = env.client(gw);
    for target in [
        format!("http://127.0.0.1:{p}/"),
        format!("http://127.1:{p}/"),
        format!("http://2130706433:{p}/"),
        format!("http://[::ffff:127.0.0.1]:{p}/"),
    ] {
        let (status, body) = get(proxy, &target);
        assert_eq!((status, body.as_str()), (200, "ok"), "{target}");
    }
    let reached = origin.count();
    assert_eq!(reached, 4);
    // Outside the allowed /32, and CONNECT ports not listed: still refused.
    let (status, body) = get(proxy, &format!("http://127.0.0.2:{p}/"));
    assert_eq!(status, 403, "{body}");
    let (status, _) = connect(proxy, &format!("127.0.0.1:{}", closed_port()));
    assert_eq!(status, 403);
    assert_eq!(origin.count(), reached);
    // CONNECT to a listed port on an allowed address works (curl through the tunnel).
    let (code, body, err) = curl(&[
        "-p",
        "-x",
        &format!("http://{proxy}"),
        &format!("http://127.0.0.1:{p}/"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, b"ok");
}

#[test]
fn deny_rules_match_the_resolved_address() {
    let env = Env::new();
    let origin = Counter::start();
    let other = Counter::start_on("127.0.0.2");
    let p = origin.port();
    // Loopback admitted by the egress policy, but denied by IP rules.
    let (gateway, gw) = env.gateway_egress(
        "gateway",
        "[egress]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\nconnect_ports = [\"*\"]\n",
        |t| t.replace("deny = [", "deny = [\"127.0.0.1\", \"::1\", \"10.1.2.3\", "),
    );
    let (_client, proxy) = env.client(gw);
    for (host, rule) in [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("[::1]", "::1"),
    ] {
        let target = format!("http://{host}:{p}/");
        let (status, body) = get(proxy, &target);
        assert_eq!(status, 403, "{target}: {body}");
        // The canonical spelling matches by name (HTML block page), the
        // others by resolved address (one-line reply): same rule either way.
        assert!(
            body.contains(&format!("(rule {rule})")) || body.contains(&format!("(rule <code>{rule}</code>)")),
            "{target}: {body}"
        );
    }
    // 10.1.2.3 spelled in decimal: blocked before any connection attempt.
    let (status, body) = get(proxy, "http://167838211/");
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        "msc-gateway: destination 167838211 is blocked by the security policy (rule 10.1.2.3)\n"
    );
    let (status, body) = connect(proxy, &format!("2130706433:{p}"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(origin.count(), 0, "a denied request reached the origin");
    // A loopback address no rule names still works.
    let (status, body) = get(proxy, &format!("http://127.0.0.2:{}/", other.port()));
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(other.count(), 1);
    gateway.wait_stderr("alice@example.com GET http://167838211/ 403 ");
}
