//! Several `msc gateway` instances as one gateway: behind HAProxy in TCP
//! mode (shared session-ticket keys, so TLS resumption works whichever
//! instance answers; killing one loses no request), and behind one name
//! with several addresses.
#![allow(
    clippy::disallowed_methods,
    reason = "test code: bounded polling of child processes and their logs, off any runtime"
)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

fn random_key_line() -> String {
    random_bytes(32).iter().map(|b| format!("{b:02x}")).collect()
}

/// A gateway whose `[tls]` table has `tls_extra`.
fn gateway_tls(env: &Env, name: &str, tls_extra: &str) -> (Proc, SocketAddr) {
    env.gateway_egress(
        name,
        "[egress]\nallow = [\"127.0.0.0/8\"]\nconnect_ports = [\"*\"]\n",
        |t| t.replace("[tls]\n", &format!("[tls]\n{tls_extra}\n")),
    )
}

/// One CONNECT tunnel through the client: each consumes a pooled tunnel, so
/// the pool opens (handshakes) a new one per call.
fn connect_get(proxy: SocketAddr, origin: SocketAddr, n: usize) {
    let mut s = tcp(proxy);
    write!(s, "CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").unwrap();
    let (status, head, _) = read_head_only(&mut s);
    assert_eq!(status, 200, "{head}");
    write!(
        s,
        "GET /bytes/{n} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (status, head, body) = read_response(&mut s);
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, pattern_bytes(n));
}

/// Reads a response head only (a CONNECT's answer has no body).
fn read_head_only(s: &mut impl Read) -> (u16, String, ()) {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "closed in a head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(b[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    (head[9..12].parse().unwrap(), head, ())
}

/// Handshakes and resumptions the client counted (workers report every second).
fn tls_counts(control: SocketAddr, at_least: u64) -> (u64, u64) {
    wait_status(control, &format!("{at_least} handshakes"), WAIT, |s| {
        s["tls"]["handshakes"].as_u64().unwrap_or(0) >= at_least
    });
    // Workers report every second: let a last report in flight arrive.
    std::thread::sleep(Duration::from_millis(1200));
    let s = status(control);
    (
        s["tls"]["handshakes"].as_u64().unwrap(),
        s["tls"]["resumed"].as_u64().unwrap(),
    )
}

const TUNNELS: usize = 120;

/// Two gateways behind HAProxy (round robin), a one-worker client: every
/// CONNECT costs a new pooled tunnel, i.e. a handshake with the next instance.
struct LbRun {
    handshakes: u64,
    resumed: u64,
    gateways: Vec<Proc>,
    client: Proc,
    proxy: SocketAddr,
    origin: SocketAddr,
    // Kept for their drop (killed, temp dirs removed) after the test's end.
    _keep: (Ext, Proc, Env),
}

fn resumption_behind_haproxy(shared_keys: bool) -> LbRun {
    let env = Env::new();
    let (origin, origin_addr) = env.origin();
    let tls_extra = if shared_keys {
        env.write(
            "ticket-keys",
            &format!("# shared by both instances\n{}\n", random_key_line()),
        );
        "ticket_keys = \"ticket-keys\"\nticket_keys_check = \"1s\""
    } else {
        ""
    };
    let (g1, a1) = gateway_tls(&env, "gw1", tls_extra);
    let (g2, a2) = gateway_tls(&env, "gw2", tls_extra);
    let (lb, lb_addr) = haproxy(&[a1, a2]);
    let cfg = env.multi_client_toml("client", &[("lb", lb_addr)], "");
    let cfg_text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("workers = 2", "workers = 1");
    std::fs::write(&cfg, cfg_text).unwrap();
    let (client, proxy) = env.client_from("client", &cfg);
    for _ in 0..TUNNELS {
        connect_get(proxy, origin_addr, 1000);
    }
    let (handshakes, resumed) = tls_counts(client.control_addr(), TUNNELS as u64);
    LbRun {
        handshakes,
        resumed,
        gateways: vec![g1, g2],
        client,
        proxy,
        origin: origin_addr,
        _keep: (lb, origin, env),
    }
}

#[test]
fn shared_ticket_keys_resume_across_instances_behind_haproxy() {
    let LbRun {
        handshakes: h,
        resumed: r,
        gateways: mut gws,
        client,
        proxy,
        origin,
        _keep,
    } = resumption_behind_haproxy(true);
    let rate = r as f64 / h as f64;
    eprintln!("shared keys: {r} of {h} handshakes resumed ({:.1} %)", rate * 100.0);
    assert!(rate >= 0.95, "{r} of {h} handshakes resumed");
    // Both instances served tunnels (HAProxy alternates).
    for g in &gws {
        assert!(
            g.stderr().contains("CONNECT"),
            "an instance got no tunnel:\n{}",
            g.stderr()
        );
    }

    // Killing one instance loses no request: sequential requests on
    // pooled tunnels; after 60, the instance that carried the last one is
    // killed (SIGKILL), the requests go on.
    let get = |i: usize| {
        let (code, out, err) = curl(&[
            "-x",
            &format!("http://{proxy}"),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{origin}/bytes/{}", 100 + i),
        ]);
        (code == 0 && out == b"200")
            .then_some(())
            .ok_or_else(|| format!("{i}: curl {code} {} {err}", String::from_utf8_lossy(&out)))
    };
    let mut lost = Vec::new();
    for i in 0..60 {
        lost.extend(get(i).err());
    }
    assert!(lost.is_empty(), "requests lost before any kill: {lost:#?}");
    let last = format!("http://{origin}/bytes/159 ");
    let deadline = Instant::now() + WAIT;
    let carrier = loop {
        if let Some(i) = gws.iter().position(|g| g.stderr().contains(&last)) {
            break i;
        }
        assert!(Instant::now() < deadline, "no instance logged the last request");
        std::thread::sleep(Duration::from_millis(20));
    };
    gws[carrier].child.kill().unwrap();
    let _ = gws[carrier].child.wait();
    for i in 60..200 {
        lost.extend(get(i).err());
    }
    assert!(
        lost.is_empty(),
        "requests lost after killing the instance carrying them: {lost:#?}"
    );
    // The survivor carried the rest.
    let survivor = gws[1 - carrier].wait_stderr(&format!("http://{origin}/bytes/299 "));
    assert!(survivor.contains(&format!("http://{origin}/bytes/160 ")), "{survivor}");
    let s = status(client.control_addr());
    assert_eq!(s["direct"]["fail_open"].as_u64(), Some(0), "{s:#}");
}

/// The control: without shared keys, an instance cannot open the other's
/// tickets and most handshakes are full ones (so the count above can fail).
#[test]
fn without_shared_keys_instances_do_not_resume_each_others_sessions() {
    let run = resumption_behind_haproxy(false);
    let (h, r) = (run.handshakes, run.resumed);
    let rate = r as f64 / h as f64;
    eprintln!("own keys: {r} of {h} handshakes resumed ({:.1} %)", rate * 100.0);
    assert!(rate < 0.8, "{r} of {h} handshakes resumed without shared keys");
}

/// A rotated keys file is picked up while running: tickets sealed with the
/// old key still open (grace period), new ones use the new key.
#[test]
fn ticket_keys_rotate_while_running() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let keys = env.path("ticket-keys");
    let rotate = |start_in: &str| {
        let out = std::process::Command::new(MSC)
            .args(["ticket-keys", "rotate", "--start-in", start_in, "--grace", "1h"])
            .arg(&keys)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        rotate("1h").contains("new file with one key"),
        "a new file seals at once"
    );
    let (gw, gw_addr) = gateway_tls(
        &env,
        "gw",
        "ticket_keys = \"ticket-keys\"\nticket_keys_check = \"200ms\"",
    );
    gw.wait_stderr("session tickets: 1 shared keys");
    let cfg = env.multi_client_toml("client", &[("gw", gw_addr)], "");
    let (client, proxy) = env.client_from("client", &cfg);
    for _ in 0..20 {
        connect_get(proxy, origin, 10);
    }
    let (h1, r1) = tls_counts(client.control_addr(), 20);
    // The next key starts now; the old one stays for the grace period.
    assert!(rotate("0s").contains("2 keys"));
    let log = gw.wait_stderr("ticket keys reloaded");
    let sealing = |line: &str| line.rsplit("sealing with key ").next().unwrap().trim().to_string();
    let first = log
        .lines()
        .find(|l| l.contains("session tickets: 1 shared keys"))
        .unwrap();
    let reload = log.lines().find(|l| l.contains("ticket keys reloaded")).unwrap();
    assert!(reload.contains("2 keys"), "{log}");
    assert_ne!(sealing(first), sealing(reload), "the new key seals:\n{log}");
    for _ in 0..20 {
        connect_get(proxy, origin, 10);
    }
    let (h2, r2) = tls_counts(client.control_addr(), h1 + 20);
    // Tickets sealed with the old key resumed after the rotation.
    assert!(
        r2 - r1 >= (h2 - h1) * 9 / 10,
        "after rotation: {} of {} resumed",
        r2 - r1,
        h2 - h1
    );
    // A bad file is refused and the keys in use stay.
    std::fs::write(&keys, "not a key\n").unwrap();
    gw.wait_stderr("keeping the keys in use");
    for _ in 0..10 {
        connect_get(proxy, origin, 10);
    }
    let (h3, r3) = tls_counts(client.control_addr(), h2 + 10);
    assert!(
        r3 - r2 >= (h3 - h2) * 9 / 10,
        "after a bad file: {} of {} resumed",
        r3 - r2,
        h3 - h2
    );
}

/// A gateway name with several addresses (a temporary hosts file
/// bind-mounted over /etc/hosts in the client's own mount namespace):
/// traffic and probes use whichever address answers; with the first one's
/// instance killed, requests go on through the second.
#[test]
fn gateway_name_with_several_addresses() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (mut g1, a1) = env.gateway_at("gw-a", "127.0.0.1:0", "");
    let port = a1.port();
    let (mut g2, _a2) = env.gateway_at("gw-b", &format!("127.0.0.3:{port}"), "");
    let hosts = env.write(
        "hosts",
        "127.0.0.1 localhost\n127.0.0.3 gw.msc.test\n127.0.0.1 gw.msc.test\n",
    );
    let cfg = env.write(
        "client.toml",
        &format!(
            "workers = 1\n[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n\
             [pac]\nfail_open = false\n\
             [control]\nlisten = \"127.0.0.1:0\"\n\
             [[servers]]\nname = \"gw\"\naddress = \"gw.msc.test:{port}\"\nserver_name = \"localhost\"\nhttp_port = 0\n"
        ),
    );
    // `unshare -rm`: a user and mount namespace of the client's own (no
    // privileges needed, nothing changes for the host).
    let script = format!("mount --bind {} /etc/hosts && exec \"$0\" \"$@\"", hosts.display());
    let client = Proc::start_wrapped(
        &["unshare", "--map-root-user", "--mount", "sh", "-c", &script],
        &["run", "--config", cfg.to_str().unwrap()],
        env.dir.path(),
        "client",
    );
    let proxy = client.addr_after("slot 1 http ");
    let ctl = client.control_addr();
    let s = wait_status(ctl, "both addresses resolved", WAIT, |s| {
        s["gateways"][0]["resolved"].as_array().is_some_and(|a| a.len() == 2)
            && s["gateways"][0]["samples"].as_u64().unwrap_or(0) > 0
    });
    let first = s["gateways"][0]["resolved"][0].as_str().unwrap().to_string();
    let get = |i: usize| {
        let (code, out, err) = curl(&[
            "-x",
            &format!("http://{proxy}"),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{origin}/bytes/{i}"),
        ]);
        assert_eq!(code, 0, "{err}");
        String::from_utf8_lossy(&out).into_owned()
    };
    assert_eq!(get(1), "200");
    // Kill the instance on the address tried first: the other carries on.
    let (victim, survivor) = if first.starts_with("127.0.0.1:") {
        (&mut g1, &g2)
    } else {
        (&mut g2, &g1)
    };
    let first_log = victim.wait_stderr(&format!("http://{origin}/bytes/1 "));
    assert!(
        first_log.contains(" 200 "),
        "the first address carried the request:\n{first_log}"
    );
    victim.child.kill().unwrap();
    let _ = victim.child.wait();
    let deadline = Instant::now() + WAIT;
    for i in 0..20 {
        assert_eq!(get(100 + i), "200", "request {i} with the first address dead");
    }
    assert!(Instant::now() < deadline);
    let log = survivor.wait_stderr(&format!("http://{origin}/bytes/119 "));
    assert!(log.contains(&format!("http://{origin}/bytes/100 ")), "{log}");
    // Probes too: the gateway stays available.
    let s = status(ctl);
    assert_eq!(s["traffic"], "gateway", "{s:#}");
}

/// Without `https_port`, a slot has one listener: https URLs (CONNECT) use
/// the http port, and the PAC names it for both schemes.
#[test]
fn https_port_left_out_serves_both_schemes_on_http_port() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (_gw, gw_addr) = env.gateway();
    let cfg = env.write(
        "client.toml",
        &format!(
            "workers = 1\n[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\n\
             [[servers]]\nname = \"gw\"\naddress = \"{gw_addr}\"\nserver_name = \"localhost\"\nhttp_port = 0\n"
        ),
    );
    let (client, proxy) = env.client_from("client", &cfg);
    let https = client.addr_after("https ");
    assert_eq!(https, proxy, "{}", client.ready_line);
    let (code, pac, err) = curl(&[&format!("http://{}/proxy.pac", client.control_addr())]);
    assert_eq!(code, 0, "{err}");
    let pac = String::from_utf8_lossy(&pac);
    assert!(pac.contains(&format!("PROXY {proxy}")), "{pac}");
    assert!(!pac.contains("mscSlotsTls"), "one port for both schemes:\n{pac}");
    connect_get(proxy, origin, 5000);
    let s = status(client.control_addr());
    assert_eq!(s["slots"][0]["https"], s["slots"][0]["http"], "{s:#}");
}
