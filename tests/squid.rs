//! A third-party HTTPS forward proxy as gateway: squid (squid-openssl) with
//! an `https_port` that requires a client certificate from the test CA. The
//! client must use it like an `msc gateway` (probes, pooled tunnels,
//! absolute-form requests, CONNECT), fail over between it and an `msc
//! gateway`, and never send a request DIRECT.
//!
//! squid runs as a child of each test (foreground, `-N`), with its
//! configuration, pid file and logs in a private temporary directory; as
//! `nobody` when the tests run as root. Readiness: its port accepts.
#![allow(
    clippy::disallowed_methods,
    reason = "test code: bounded polling of child processes and their logs, off any runtime"
)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

fn proxy_url(p: SocketAddr) -> String {
    format!("http://{p}")
}

/// The client's DIRECT counters are all zero and traffic goes to a gateway.
fn assert_nothing_direct(control: SocketAddr) {
    let s = status(control);
    let d = &s["direct"];
    for k in ["on_premise", "fail_open"] {
        assert_eq!(d[k].as_u64(), Some(0), "requests went DIRECT ({k}): {s:#}");
    }
}

fn gateway_state(s: &serde_json::Value, name: &str) -> String {
    s["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .map(|g| g["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Waits until `name` has been probed successfully (at least one sample).
fn wait_probed(control: SocketAddr, name: &str) -> serde_json::Value {
    wait_status(control, &format!("a good probe of {name}"), WAIT, |s| {
        s["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == name && g["samples"].as_u64().unwrap_or(0) > 0)
    })
}

/// Squid's access-log lines whose URL contains `needle`.
fn squid_lines(squid: &Ext, needle: &str) -> Vec<String> {
    squid.access_log().into_iter().filter(|l| l.contains(needle)).collect()
}

/// Waits (bounded) until squid logged `n` lines containing `needle` (it
/// writes a line when a transaction ends).
fn wait_squid_lines(squid: &Ext, needle: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let l = squid_lines(squid, needle);
        if l.len() >= n || Instant::now() > deadline {
            return l;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn squid_as_gateway_carries_get_post_connect_with_pooled_tunnels() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (squid, squid_addr) = squid(&env, "");
    let cfg = env.multi_client_toml("client", &[("squid", squid_addr)], "");
    let (client, proxy) = env.client_from("client", &cfg);
    let ctl = client.control_addr();
    // squid answers the msc probe path with an error of its own: alive.
    let s = wait_probed(ctl, "squid");
    assert_eq!(s["traffic"], "gateway", "{s:#}");
    assert_eq!(gateway_state(&s, "squid"), "selected", "{s:#}");
    let px = proxy_url(proxy);

    // GET, keep-alive: 20 requests on one browser connection.
    let urls: Vec<String> = (0..20).map(|i| format!("http://{origin}/bytes/{}", 1000 + i)).collect();
    let mut args: Vec<&str> = vec!["-x", &px, "-w", "%{http_code}\n"];
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    let (code, out, err) = curl(&args);
    assert_eq!(code, 0, "{err}");
    let codes = String::from_utf8_lossy(&out);
    assert_eq!(codes.lines().filter(|l| *l == "200").count(), 20, "{codes}");
    let (code, body, err) = curl(&["-x", &px, &format!("http://{origin}/bytes/200000")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, pattern_bytes(200_000));

    // The 20 requests went through squid, on few pooled tunnels (squid logs
    // each request with the tunnel's client port).
    let lines = wait_squid_lines(&squid, &format!("http://{origin}/bytes/10"), 20);
    assert_eq!(lines.len(), 20, "{lines:#?}");
    let tunnels: HashSet<&str> = lines.iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert!(
        tunnels.len() <= 4,
        "20 requests should reuse a few pooled tunnels, squid saw {} connections: {lines:#?}",
        tunnels.len()
    );

    // 10 MiB POST (absolute-form, through squid to the origin).
    let post = random_bytes(10 << 20);
    let post_file = env.write("post.bin", "");
    std::fs::write(&post_file, &post).unwrap();
    let (code, body, err) = curl(&[
        "-x",
        &px,
        "--data-binary",
        &format!("@{}", post_file.display()),
        &format!("http://{origin}/sha256"),
    ]);
    assert_eq!(code, 0, "{err}");
    let want = format!("sha256={} bytes={}\n", sha256_hex(&post), post.len());
    assert_eq!(String::from_utf8_lossy(&body), want);

    // 50 MiB each way inside a CONNECT tunnel through squid.
    let big = random_bytes(50 << 20);
    let big_file = env.write("up.bin", "");
    std::fs::write(&big_file, &big).unwrap();
    let (code, body, err) = curl(&[
        "-p",
        "-x",
        &px,
        "--data-binary",
        &format!("@{}", big_file.display()),
        &format!("http://{origin}/sha256"),
    ]);
    assert_eq!(code, 0, "{err}");
    let want = format!("sha256={} bytes={}\n", sha256_hex(&big), big.len());
    assert_eq!(String::from_utf8_lossy(&body), want, "upload through CONNECT");
    let n = 50 << 20;
    let (code, body, err) = curl(&["-p", "-x", &px, &format!("http://{origin}/bytes/{n}")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), n);
    assert_eq!(
        sha256_hex(&body),
        sha256_hex(&pattern_bytes(n)),
        "download through CONNECT"
    );

    let connects = wait_squid_lines(&squid, "CONNECT", 2);
    assert_eq!(connects.len(), 2, "both tunnels went through squid: {connects:#?}");
    assert_eq!(squid_lines(&squid, "POST").len(), 1);
    assert_nothing_direct(ctl);
    // Tunnels to squid resume TLS sessions too (its tickets work with ours).
    let s = wait_status(ctl, "resumed handshakes", WAIT, |s| {
        s["tls"]["resumed"].as_u64().unwrap_or(0) > 0
    });
    assert!(s["tls"]["handshakes"].as_u64().unwrap() >= 3, "{s:#}");
}

/// Servers `[victim, survivor]`, slot 1 pinned to the victim: once the
/// victim is killed, every request goes through the survivor; none DIRECT
/// (fail_open is on: the default).
fn failover(kill_squid: bool) {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (mut squid, squid_addr) = squid(&env, "");
    let (mut gw, gw_addr) = env.gateway();
    let servers = if kill_squid {
        [("squid", squid_addr), ("msc", gw_addr)]
    } else {
        [("msc", gw_addr), ("squid", squid_addr)]
    };
    let cfg = env.multi_client_toml(
        "client",
        &servers,
        "[selection]\npinned = true\nkeepalive_interval = \"300ms\"\n",
    );
    let (client, proxy) = env.client_from("client", &cfg);
    let ctl = client.control_addr();
    wait_probed(ctl, "squid");
    wait_probed(ctl, "msc");
    let px = proxy_url(proxy);
    let get = |path: &str| {
        let (code, out, err) = curl(&["-x", &px, "-i", &format!("http://{origin}{path}")]);
        assert_eq!(code, 0, "{err}");
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.get(9..12).unwrap_or_default().to_string();
        if status != "200" {
            eprintln!("{path}: {out}");
        }
        status
    };
    // Before: slot 1 uses the victim.
    assert_eq!(get("/bytes/11"), "200");
    // squid logs when a transaction ends: wait for whichever carried it.
    if kill_squid {
        assert_eq!(
            wait_squid_lines(&squid, "/bytes/11", 1).len(),
            1,
            "slot 1 goes to squid"
        );
    } else {
        gw.wait_stderr(&format!("http://{origin}/bytes/11 "));
        assert!(
            squid_lines(&squid, "/bytes/11").is_empty(),
            "slot 1 goes to the msc gateway"
        );
    }

    if kill_squid {
        squid.kill();
    } else {
        gw.child.kill().unwrap();
        let _ = gw.child.wait();
    }
    for i in 0..30 {
        assert_eq!(
            get(&format!("/bytes/{}", 2000 + i)),
            "200",
            "request {i} after the kill"
        );
    }
    // They went through the survivor.
    if kill_squid {
        let log = gw.wait_stderr(&format!("http://{origin}/bytes/2029"));
        let n = log
            .lines()
            .filter(|l| l.contains(&format!("http://{origin}/bytes/20")))
            .count();
        assert_eq!(n, 30, "the msc gateway carried every request:\n{log}");
    } else {
        let lines = wait_squid_lines(&squid, &format!("http://{origin}/bytes/20"), 30);
        assert_eq!(lines.len(), 30, "squid carried every request: {lines:#?}");
    }
    let s = wait_status(ctl, "the survivor selected", WAIT, |s| {
        s["selected"].as_str() == Some(servers[1].0)
    });
    assert_eq!(s["traffic"], "gateway", "{s:#}");
    assert_nothing_direct(ctl);
}

#[test]
fn failover_from_squid_to_msc_gateway() {
    failover(true);
}

#[test]
fn failover_from_msc_gateway_to_squid() {
    failover(false);
}

/// `probe_url`: the expected status proves the gateway works end to end;
/// a policy refusal (403 from squid's `http_access deny`) still proves it
/// alive; a gateway that cannot reach the URL (squid's 503) is broken, which
/// fails it over but never leads to DIRECT, even with fail_open.
#[test]
fn probe_url_tells_refusal_from_failure() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let dead = format!("127.0.0.1:{}", free_port());
    let (_squid, squid_addr) = squid(
        &env,
        "acl probe_denied url_regex /status/200$\nhttp_access deny probe_denied\n",
    );
    let client_with = |name: &str, url: &str, status: u16| {
        let text = format!(
            "workers = 1\n[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n\
             [selection]\nprobe_interval = \"200ms\"\nkeepalive_interval = \"200ms\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\n\
             [[servers]]\nname = \"squid\"\naddress = \"{squid_addr}\"\nserver_name = \"localhost\"\nhttp_port = 0\n\
             probe_url = \"{url}\"\nprobe_status = {status}\n"
        );
        let f = env.write(&format!("{name}.toml"), &text);
        env.client_from(name, &f)
    };

    // Expected status: works.
    let (ok, _) = client_with("ok", &format!("http://{origin}/status/204"), 204);
    let s = wait_probed(ok.control_addr(), "squid");
    assert_eq!(s["traffic"], "gateway", "{s:#}");

    // Refused by squid's policy (403): alive, and said so.
    let (refused, proxy) = client_with("refused", &format!("http://{origin}/status/200"), 200);
    let s = wait_probed(refused.control_addr(), "squid");
    assert_eq!(s["traffic"], "gateway", "{s:#}");
    refused.wait_stderr("refuses probe_url");
    let (code, out, err) = curl(&[
        "-x",
        &format!("http://{proxy}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{origin}/bytes/5"),
    ]);
    assert_eq!((code, String::from_utf8_lossy(&out).as_ref()), (0, "200"), "{err}");

    // squid cannot reach the URL (503): broken, never DIRECT.
    let (broken, proxy) = client_with("broken", &format!("http://{dead}/health"), 200);
    let ctl = broken.control_addr();
    let s = wait_status(ctl, "squid unavailable", WAIT, |s| s["traffic"] != "gateway");
    assert_eq!(s["traffic"], "refused:untrusted", "{s:#}");
    let e = s["error"].as_str().unwrap_or_default();
    assert!(e.contains("probe_url") && e.contains("instead of 200"), "{s:#}");
    let (code, out, err) = curl(&[
        "-x",
        &format!("http://{proxy}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{origin}/bytes/5"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(
        String::from_utf8_lossy(&out),
        "200",
        "a broken gateway must not lead to DIRECT"
    );
    assert_nothing_direct(ctl);
}
