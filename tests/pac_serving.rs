//! The PAC as the client serves it, `msc pac`, `msc status`, and the client's
//! behaviour on premise.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::*;

fn get(addr: SocketAddr, path: &str, host: &str, extra: &str) -> (u16, String, Vec<u8>) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Two ports that are free right now (the client binds them just after).
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

#[test]
fn served_pac_has_type_etag_cache_and_refuses_foreign_hosts() {
    let env = Env::new();
    let (_g, gw) = env.gateway();
    let cfg = env.client_toml(
        "client-pac",
        gw,
        "client.pem",
        "client-key.pem",
        "[pac]\nbypass = [\"*.corp.example\", \"10.0.0.0/8\"]\nmax_age = \"2m\"\n",
    );
    let (c, proxy) = env.client_from("client-pac", &cfg);
    let ctl = c.control_addr();
    let host = ctl.to_string();
    let (status, head, body) = get(ctl, "/proxy.pac", &host, "");
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/x-ns-proxy-autoconfig"));
    assert_eq!(header(&head, "cache-control"), Some("max-age=120"));
    let etag = header(&head, "etag").expect("ETag").to_string();
    let pac = String::from_utf8(body).unwrap();
    assert!(pac.contains("function FindProxyForURL(url, host)"), "{pac}");
    assert!(
        pac.contains(&format!("PROXY 127.0.0.1:{}", proxy.port())),
        "slot port in PAC"
    );
    assert!(pac.contains("corp.example"));
    // Conditional GET.
    let (status, head, body) = get(ctl, "/proxy.pac", "localhost", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(status, 304, "{head}");
    assert!(body.is_empty());
    assert_eq!(header(&head, "etag"), Some(etag.as_str()));
    let (status, _, _) = get(ctl, "/proxy.pac", "[::1]", "If-None-Match: \"other\"\r\n");
    assert_eq!(status, 200);
    // DNS-rebinding defence: a page whose own name points at 127.0.0.1.
    for bad in [
        "evil.example",
        &format!("evil.example:{}", ctl.port()),
        "127.0.0.1.nip.example",
        "10.0.0.1",
    ] {
        let (status, _, body) = get(ctl, "/proxy.pac", bad, "");
        assert_eq!(status, 403, "Host {bad}");
        assert!(String::from_utf8_lossy(&body).contains("loopback"));
    }
    let (status, _, _) = exchange(ctl, b"GET /proxy.pac HTTP/1.0\r\n\r\n");
    assert_eq!(status, 403, "no Host header");
    let (status, _, _) = get(ctl, "/nope", &host, "");
    assert_eq!(status, 404);
    // HEAD: headers only.
    let mut s = tcp(ctl);
    use std::io::{Read, Write};
    s.write_all(format!("HEAD /proxy.pac HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\n"), "{text}");
}

#[test]
fn msc_pac_prints_exactly_what_is_served() {
    let env = Env::new();
    let (_g, gw) = env.gateway();
    let (h, s) = free_ports();
    let cfg = env.client_toml(
        "client-fixed",
        gw,
        "client.pem",
        "client-key.pem",
        "[pac]\nbypass = [\"intranet.example\"]\nfail_open = false\n",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("http_port = 0", &format!("http_port = {h}"))
        .replace("https_port = 0", &format!("https_port = {s}"));
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(MSC)
        .args(["pac", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let (c, _) = env.client_from("client-fixed", &cfg);
    let ctl = c.control_addr();
    let (status, _, body) = get(ctl, "/proxy.pac", "localhost", "");
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(body).unwrap(), printed);
    assert!(printed.contains(&format!("PROXY 127.0.0.1:{h}")) && printed.contains(&format!("PROXY 127.0.0.1:{s}")));
    // Fail-closed: no "; DIRECT" after the slot list.
    assert!(!printed.contains(&format!("PROXY 127.0.0.1:{h}; DIRECT")));
}

#[test]
fn on_premise_direct_mode_relays_without_the_gateway() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (gw, gw_addr) = env.gateway();
    // "localhost" resolves to 127.0.0.1 here: on premise.
    let on = "[pac.on_premise]\nindicator = \"localhost\"\nexpected = [\"127.0.0.1\", \"::1\"]\nmode = \"direct\"\n";
    let cfg = env.client_toml("client-onprem", gw_addr, "client.pem", "client-key.pem", on);
    let (c, proxy) = env.client_from("client-onprem", &cfg);
    let (code, body, err) = curl(&["-x", &format!("http://{proxy}"), &format!("http://{origin}/echo")]);
    assert_eq!(code, 0, "{err}");
    let echo = String::from_utf8_lossy(&body);
    assert!(!echo.contains("msc-gateway"), "went through the gateway: {echo}");
    let (code, body, err) = curl(&[
        "-p",
        "-x",
        &format!("http://{proxy}"),
        &format!("http://{origin}/bytes/5000"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, pattern_bytes(5000));
    c.wait_stderr(&format!("GET http://{origin}/echo 200"));
    let log = c.wait_stderr(&format!("CONNECT {origin} 200"));
    for l in log.lines().filter(|l| l.contains(&origin.to_string())) {
        assert!(l.ends_with(" direct:on-premise"), "{l}");
    }
    assert!(!gw.stderr().contains(&origin.to_string()), "the gateway saw traffic");
    let out = Command::new(MSC)
        .args(["status", "--control", &c.control_addr().to_string(), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["premise"]["on_premise"], true, "{v}");
    assert_eq!(v["premise"]["mode"], "direct");
    let human = Command::new(MSC)
        .args(["status", "--control", &c.control_addr().to_string()])
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("network: ON premise"), "{human}");

    // Off premise (the indicator answers something else): tunnelled as usual.
    let off = "[pac.on_premise]\nindicator = \"localhost\"\nexpected = [\"10.9.9.9\"]\n";
    let cfg = env.client_toml("client-offprem", gw_addr, "client.pem", "client-key.pem", off);
    let (c2, proxy2) = env.client_from("client-offprem", &cfg);
    let (code, body, _) = curl(&["-x", &format!("http://{proxy2}"), &format!("http://{origin}/echo")]);
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&body).contains("Via: 1.1 msc-gateway"));
    let v: serde_json::Value = serde_json::from_str(&msc::cli::status::fetch(c2.control_addr()).unwrap()).unwrap();
    assert_eq!(v["premise"]["on_premise"], false, "{v}");
}
