//! Configuration and the administrator's PAC served by the gateway per
//! identity (docs/fleet.md), with real processes: a gateway with profiles,
//! clients with their own certificates, the PAC they serve checked with
//! pactester (Debian `libpacparser1`).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// Public addresses (IP literals: pactester decides them without DNS).
const PUBLIC_URL: &str = "http://93.184.215.14/";

/// Profiles: alice by name, bob through the group "sales"; no default.
fn profiles_tail(extra: &str) -> String {
    format!(
        "[profiles]\ncheck = \"100ms\"\n{extra}\n[profiles.users]\n\"alice@example.com\" = \"alice.toml\"\n\
         [[profiles.groups]]\nname = \"sales\"\nmembers = [\"bob@example.com\", \"dave@example.com\"]\nprofile = \"sales.toml\"\n"
    )
}

const ALICE: &str = "[pac]\nbypass = [\"*.alice.test\", \"93.184.0.0/16\"]\n[uninstall]\nwarning = \"Ask the IT desk before removing msc.\"\n";
const SALES: &str = "[pac]\nbypass = [\"*.sales.test\"]\nfail_open = false\n";

fn remote(cache: &str) -> String {
    format!("[remote]\nenabled = true\ninterval = \"200ms\"\nfirst_wait = \"5s\"\ncache_dir = \"{cache}\"\n")
}

/// Starts a remote-configured client for the certificate `cert`.
fn client(env: &Env, name: &str, gw: SocketAddr, cert: &str) -> (Proc, SocketAddr) {
    let cfg = env.client_toml(
        &format!("client-{name}"),
        gw,
        &format!("{cert}.pem"),
        &format!("{cert}-key.pem"),
        &remote(&format!("cache-{name}")),
    );
    let p = env.client_from(name, &cfg).0;
    let ctl = p.control_addr();
    (p, ctl)
}

fn remote_status(ctl: SocketAddr) -> serde_json::Value {
    status(ctl)["remote"].clone()
}

#[test]
fn each_user_gets_their_profile_and_an_unchanged_one_is_304() {
    let env = Env::new();
    env.issue_client("bob", "bob");
    env.issue_client("carol", "carol");
    env.write("alice.toml", ALICE);
    env.write("sales.toml", SALES);
    let (gw_proc, gw) = env.gateway_at("gw", "127.0.0.1:0", &profiles_tail(""));
    let (_a, alice) = client(&env, "alice", gw, "client");
    let (_b, bob) = client(&env, "bob", gw, "bob");

    // Fetched before the start: the first PAC already has the profile.
    for ctl in [alice, bob] {
        let r = remote_status(ctl);
        assert_eq!(r["source"], "gateway", "{r:#}");
        assert_eq!(r["config"]["last_error"], serde_json::Value::Null, "{r:#}");
    }
    let pac_a = served_pac(alice);
    let pac_b = served_pac(bob);
    assert_eq!(pactester(&pac_a, "http://www.alice.test/"), "DIRECT");
    assert_eq!(pactester(&pac_a, PUBLIC_URL), "DIRECT");
    assert!(pactester(&pac_b, PUBLIC_URL).starts_with("PROXY 127.0.0.1:"), "{pac_b}");
    assert_eq!(pactester(&pac_b, "http://www.sales.test/"), "DIRECT");
    assert!(pactester(&pac_a, "http://www.sales.test/").starts_with("PROXY"));
    // The sales profile is fail-closed: no trailing DIRECT for bob.
    assert!(!pactester(&pac_b, PUBLIC_URL).contains("DIRECT"), "{pac_b}");
    assert_eq!(status(bob)["fail_open"], false);

    // The next fetches send the tag and get 304.
    let etag = remote_status(alice)["config"]["etag"].clone();
    let s = wait_status(alice, "a 304", WAIT, |v| {
        v["remote"]["config"]["not_modified"].as_u64() >= Some(2)
    });
    assert_eq!(s["remote"]["config"]["last_result"], "not-modified");
    assert_eq!(s["remote"]["config"]["etag"], etag);
    assert!(s["remote"]["config"]["from"].as_str().unwrap().contains("gw1"));
    // So does the status page.
    let (code, _, page) = exchange(alice, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let page = String::from_utf8_lossy(&page);
    assert_eq!(code, 200);
    assert!(
        page.contains(r#"<table id="remote">"#) && page.contains("from the gateway"),
        "{page}"
    );
    // The gateway's access log shows them.
    let log = gw_proc.wait_stderr("/.well-known/msc/config 304");
    assert!(
        log.lines()
            .any(|l| l.contains("alice@example.com") && l.contains("GET /.well-known/msc/config 304")),
        "{log}"
    );

    // No profile for carol and no default: 404, the local file, visibly.
    let (_c, carol) = client(&env, "carol", gw, "carol");
    let r = remote_status(carol);
    assert_eq!(r["source"], "local", "{r:#}");
    let e = r["config"]["last_error"].as_str().unwrap();
    assert!(
        e.contains("404") && e.contains("no configuration profile for carol@example.com"),
        "{e}"
    );
    assert!(pactester(&served_pac(carol), PUBLIC_URL).starts_with("PROXY"));
    // `msc status` says so too.
    let text = msc::cli::status::render(&status(carol).to_string()).unwrap();
    assert!(text.contains("configuration: the local file only"), "{text}");
    assert!(
        text.contains("no configuration profile for carol@example.com"),
        "{text}"
    );
    let text = msc::cli::status::render(&status(alice).to_string()).unwrap();
    assert!(text.contains("configuration: from the gateway (ETag \""), "{text}");
}

#[test]
fn a_client_restarted_offline_starts_with_the_cached_configuration() {
    let env = Env::new();
    env.write("alice.toml", ALICE);
    env.write("sales.toml", SALES);
    let (mut gw_proc, gw) = env.gateway_at("gw", "127.0.0.1:0", &profiles_tail(""));
    let (mut a, alice) = client(&env, "alice", gw, "client");
    assert_eq!(remote_status(alice)["source"], "gateway");
    let cache: PathBuf = env.path("cache-alice").join("remote-config.toml");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the cache is private");
    }
    a.terminate();
    gw_proc.terminate();

    // Other commands of this client read the cached central settings too.
    let out = std::process::Command::new(MSC)
        .args(["uninstall-warning", "--config", env.p("client-alice.toml").as_str()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Ask the IT desk before removing msc."
    );

    // Gateway gone: the same configuration starts at once, from the cache.
    let cfg = env.path("client-alice.toml");
    let t0 = std::time::Instant::now();
    let p = Proc::start(
        &["run", "--config", cfg.to_str().unwrap()],
        env.dir.path(),
        "alice-again",
    );
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "the start waited for the gateway"
    );
    let ctl = p.control_addr();
    let r = remote_status(ctl);
    assert_eq!(r["source"], "cache", "{r:#}");
    assert!(r["config"]["etag"].is_string(), "{r:#}");
    assert_eq!(pactester(&served_pac(ctl), "http://www.alice.test/"), "DIRECT");
    // It keeps trying, and says why it cannot fetch.
    let s = wait_status(ctl, "a failed fetch", WAIT, |v| {
        v["remote"]["config"]["last_result"] == "failed"
    });
    assert!(
        s["remote"]["config"]["last_error"]
            .as_str()
            .unwrap()
            .contains("no gateway reachable"),
        "{s:#}"
    );
    assert_eq!(s["remote"]["source"], "cache");
}

#[test]
fn broken_profiles_are_rejected_and_the_previous_one_stays() {
    let env = Env::new();
    env.write("alice.toml", ALICE);
    env.write("sales.toml", SALES);
    env.issue_client("bob", "bob");
    let (gw_proc, gw) = env.gateway_at("gw", "127.0.0.1:0", &profiles_tail(""));
    let (_a, alice) = client(&env, "alice", gw, "client");
    let etag = remote_status(alice)["config"]["etag"].clone();
    assert!(etag.is_string());

    let fetches = |ctl| remote_status(ctl)["config"]["fetches"].as_u64().unwrap();
    for (bad, reason) in [
        ("workers = 8\n[pac]\nbypass = [\"x.test\"]\n", "workers: is local-only"),
        ("[tls]\ncert = \"/etc/ssl/x.pem\"\n", "tls: is local-only"),
        ("[pac\nbypass = [\"x.test\"]\n", "TOML syntax error at line 1"),
        ("[pac]\nbypass = [\"not a host!\"]\n", "pac.bypass[0]"),
    ] {
        env.write("alice.toml", bad);
        let log = gw_proc.wait_stderr(reason);
        let line = log.lines().rev().find(|l| l.contains(reason)).unwrap();
        assert!(
            line.contains("profile rejected") && line.contains("alice.toml") && line.contains("previous version"),
            "{line}"
        );
        // Two more rounds on the client: still the previous document.
        let n = fetches(alice);
        let s = wait_status(alice, "two more fetches", WAIT, |v| {
            v["remote"]["config"]["fetches"].as_u64().unwrap() >= n + 2
        });
        assert_eq!(s["remote"]["config"]["etag"], etag, "{s:#}");
        assert_eq!(s["remote"]["config"]["last_result"], "not-modified");
        assert_eq!(pactester(&served_pac(alice), "http://www.alice.test/"), "DIRECT");
    }

    // Valid for the gateway, invalid for this client (its slot would take
    // bob's control port): bob rejects it, naming the key, and keeps his.
    let ctl_port = free_port();
    let bob_cfg = env.client_toml("client-bob", gw, "bob.pem", "bob-key.pem", &remote("cache-bob"));
    let text = std::fs::read_to_string(&bob_cfg).unwrap();
    std::fs::write(&bob_cfg, text.replace("127.0.0.1:0", &format!("127.0.0.1:{ctl_port}"))).unwrap();
    let bob_proc = env.client_from("bob", &bob_cfg).0;
    let bob = bob_proc.control_addr();
    let bob_etag = remote_status(bob)["config"]["etag"].clone();
    env.write(
        "sales.toml",
        &format!(
            "[[servers]]\nname = \"gw1\"\naddress = \"{gw}\"\nserver_name = \"localhost\"\nhttp_port = {ctl_port}\n"
        ),
    );
    let s = wait_status(bob, "the document rejected", WAIT, |v| {
        v["remote"]["config"]["last_result"] == "rejected"
    });
    let e = s["remote"]["config"]["last_error"].as_str().unwrap();
    assert!(
        e.contains("config from gateway 'gw1'") && e.contains("control.listen") && e.contains("already used"),
        "{e}"
    );
    assert_eq!(s["remote"]["config"]["etag"], bob_etag);
    assert_eq!(s["remote"]["restart_needed"], false);
    bob_proc.wait_stderr("configuration from the gateway rejected");
    assert_eq!(pactester(&served_pac(bob), "http://www.sales.test/"), "DIRECT");

    // A good new version replaces it and applies at once, without a
    // restart: a new configuration generation (a hot reload).
    let generation = status(alice)["reload"]["generation"].as_u64().unwrap();
    env.write("alice.toml", "[pac]\nbypass = [\"*.new.test\"]\n");
    let s = wait_status(alice, "the new profile", WAIT, |v| {
        v["remote"]["config"]["etag"] != etag && v["remote"]["config"]["last_result"] == "applied"
    });
    assert_eq!(s["remote"]["restart_needed"], false, "{}", s["reload"]);
    assert!(
        s["reload"]["generation"].as_u64().unwrap() > generation,
        "{}",
        s["reload"]
    );
    let pac = served_pac(alice);
    assert_eq!(pactester(&pac, "http://www.new.test/"), "DIRECT");
    assert!(pactester(&pac, "http://www.alice.test/").starts_with("PROXY"), "{pac}");

    // A gateway does not start with a broken profile: file, key, reason.
    env.write("alice.toml", "workers = 1\n");
    let out = std::process::Command::new(MSC)
        .args(["check-config", env.p("gw.toml").as_str()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("gw.toml")
            && err.contains("profiles.users.\"alice@example.com\"")
            && err.contains("workers: is local-only"),
        "{err}"
    );
}

/// The administrator's PAC, naming this client's slot port.
fn company_pac(port: u16) -> String {
    format!(
        "// Company PAC (the official copy)\nfunction FindProxyForURL(url, host) {{\n  if (dnsDomainIs(host, \".intra.test\")) {{ return \"DIRECT\"; }}\n  return \"PROXY 127.0.0.1:{port}\";\n}}\n"
    )
}

#[test]
fn the_administrators_pac_is_served_checked_and_kept_offline() {
    let env = Env::new();
    let port = free_port();
    env.write("alice.toml", "[pac]\nsource = \"gateway\"\n");
    env.write("sales.toml", SALES);
    let good = company_pac(port);
    env.write("company.pac", &good);
    let (mut gw_proc, gw) = env.gateway_at("gw", "127.0.0.1:0", &profiles_tail("pac = \"company.pac\""));
    let cfg = env.write(
        "client-alice.toml",
        &format!(
            "workers = 2\n[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n{}\n[[servers]]\nname = \"gw1\"\naddress = \"{gw}\"\nserver_name = \"localhost\"\nhttp_port = {port}\n[control]\nlisten = \"127.0.0.1:0\"\n",
            remote("cache-alice")
        ),
    );
    let (mut a, _) = env.client_from("alice", &cfg);
    let ctl = a.control_addr();
    wait_status(ctl, "the administrator's PAC", WAIT, |v| {
        v["remote"]["pac_source"] == "gateway"
    });
    let pac = served_pac(ctl);
    assert_eq!(pac, good, "served as the official copy, byte for byte");
    assert_eq!(pactester(&pac, "http://www.intra.test/"), "DIRECT");
    assert_eq!(pactester(&pac, PUBLIC_URL), format!("PROXY 127.0.0.1:{port}"));
    let text = msc::cli::status::render(&status(ctl).to_string()).unwrap();
    assert!(text.contains("PAC: the administrator's, from the gateway"), "{text}");
    let etag = remote_status(ctl)["pac"]["etag"].clone();
    // A reload (SIGHUP) re-renders the client's own PAC: the administrator's
    // stays the one served.
    let generation = status(ctl)["reload"]["generation"].as_u64().unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_status(ctl, "the reload", WAIT, |v| {
        v["reload"]["generation"].as_u64().unwrap() > generation
    });
    assert_eq!(served_pac(ctl), good, "still the official copy after a reload");

    // A PAC that never names this client's proxy: the gateway serves it, the
    // client refuses it (it would send traffic around the scanner).
    env.write("company.pac", &company_pac(1));
    let s = wait_status(ctl, "the foreign PAC refused", WAIT, |v| {
        v["remote"]["pac"]["last_result"] == "rejected"
    });
    let e = s["remote"]["pac"]["last_error"].as_str().unwrap();
    assert!(e.contains("never names one of this client's proxy addresses"), "{e}");
    assert_eq!(s["remote"]["pac"]["etag"], etag);
    assert_eq!(served_pac(ctl), good);
    a.wait_stderr("administrator PAC from gateway");

    // Broken or oversized: refused by the gateway, which keeps the previous.
    for (bad, reason) in [
        (
            "function FindProxyForURL(url, host) { return \"DIRECT\";".to_string(),
            "never closed",
        ),
        (
            format!("{}//{}", company_pac(port), "x".repeat(1 << 20)),
            "over the limit",
        ),
        ("<html>not a PAC</html>".to_string(), "unterminated regular expression"),
    ] {
        env.write("company.pac", &bad);
        gw_proc.wait_stderr(reason);
        assert_eq!(served_pac(ctl), good);
    }
    // A good new version replaces the one served.
    let newer = company_pac(port).replace(".intra.test", ".intranet.test");
    env.write("company.pac", &newer);
    let s = wait_status(ctl, "the new PAC", WAIT, |v| {
        v["remote"]["pac"]["last_result"] == "applied" && v["remote"]["pac"]["etag"] != etag
    });
    assert_eq!(served_pac(ctl), newer, "{s:#}");

    // Offline restart: the cached PAC is served.
    a.terminate();
    gw_proc.terminate();
    let (a2, _) = env.client_from("alice-again", &cfg);
    let ctl = a2.control_addr();
    let r = remote_status(ctl);
    assert_eq!(r["source"], "cache", "{r:#}");
    assert_eq!(r["pac_source"], "gateway", "{r:#}");
    assert_eq!(served_pac(ctl), newer);
}
