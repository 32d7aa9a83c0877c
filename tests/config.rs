//! `msc check-config` and `msc pki init`, through the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn check(file: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(MSC)
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn generated_configs_are_valid() {
    let env = Env::new();
    for f in ["client.toml", "gateway.toml"] {
        let (code, out, err) = check(&env.path(f));
        assert_eq!(code, 0, "{f}: {err}");
        assert!(out.contains("valid"), "{out}");
    }
}

#[test]
fn examples_are_valid() {
    let env = Env::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            // Examples refer to certificate files next to them; check them beside a real PKI.
            let copy = env.path(p.file_name().unwrap().to_str().unwrap());
            std::fs::copy(&p, &copy).unwrap();
            let (code, _, err) = check(&copy);
            assert_eq!(code, 0, "{}: {err}", p.display());
            n += 1;
        }
    }
    assert!(n >= 2, "expected annotated examples in examples/");
}

#[test]
fn errors_name_file_key_and_reason() {
    let env = Env::new();
    let client = std::fs::read_to_string(env.path("client.toml")).unwrap();
    let gateway = std::fs::read_to_string(env.path("gateway.toml")).unwrap();
    let second = "\n[[servers]]\nname = \"gw2\"\naddress = \"127.0.0.1:9\"\nhttp_port = 4000\nhttps_port = 4001\n";
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "c1.toml",
            client.replace("http_port = 0", "http_port = \"x\""),
            "servers[0].http_port",
            "invalid type",
        ),
        (
            "c2.toml",
            client.replace("workers = 0", "wokers = 2"),
            "",
            "unknown field `wokers`",
        ),
        (
            "c3.toml",
            client.replace("http_port = 0", "http_port = 4000") + second,
            "servers[1].http_port",
            "port 4000 is already used by servers[0].http_port",
        ),
        (
            "c4.toml",
            client.clone() + "[timeouts]\nhead = \"ten seconds\"\n",
            "timeouts.head",
            "invalid duration",
        ),
        (
            "c5.toml",
            client.replace("ca = \"ca.pem\"", "ca = \"missing.pem\""),
            "tls.ca",
            "file not found",
        ),
        (
            "c6.toml",
            format!("listen = \"10.0.0.1\"\n{client}"),
            "listen",
            "not a loopback address",
        ),
        (
            "c7.toml",
            client.replace("address = \"127.0.0.1:8443\"", "address = \"nowhere\""),
            "servers[0].address",
            "not HOST:PORT",
        ),
        (
            "c8.toml",
            client.clone() + &second.replace("gw2", "gateway-1"),
            "servers[1].name",
            "'gateway-1' is already used by servers[0]",
        ),
        (
            "c9.toml",
            client.clone() + "[selection]\nreadmit_successes = 0\n",
            "selection.readmit_successes",
            "must be 1 to 1000",
        ),
        (
            "c10.toml",
            client.clone() + "[selection]\nrecovery_probe_max = \"10ms\"\n",
            "selection.recovery_probe_max",
            "must be at least recovery_probe_base",
        ),
        (
            "g1.toml",
            gateway.replace("deny = [", "deny = [\"ok.example\", \"bad host!\", "),
            "policy.deny[1]",
            "not a host name",
        ),
        (
            "g2.toml",
            gateway.replace("listen = \"127.0.0.1:0\"", "listen = \"localhost\""),
            "listen",
            "invalid address",
        ),
        (
            "g3.toml",
            gateway.clone() + "[timeouts]\nidle = \"0s\"\n",
            "timeouts.idle",
            "greater than zero",
        ),
        (
            "g4.toml",
            gateway.replace("[tls]", "[tls\n"),
            "",
            "TOML syntax error at line",
        ),
        (
            "g5.toml",
            gateway.replace("client_ca = \"ca.pem\"", ""),
            "tls",
            "missing field `client_ca`",
        ),
        (
            "g6.toml",
            gateway.replace("allow = [\"127.0.0.0/8\"", "allow = [\"10.0.0.0/8\", \"10.0.0.0/33\""),
            "egress.allow[1]",
            "'10.0.0.0/33' is not a CIDR range",
        ),
        (
            "g7.toml",
            gateway.replace("connect_ports = [\"*\"]", "connect_ports = [443, 70000]"),
            "egress.connect_ports[1]",
            "70000 is not a port",
        ),
        (
            "g8.toml",
            gateway.replace("connect_ports = [\"*\"]", "connect_ports = [443, \"all\"]"),
            "egress.connect_ports[1]",
            "'all' is not a port number or \"*\"",
        ),
        (
            "g9.toml",
            gateway.replace("connect_ports = ", "conect_ports = "),
            "egress.conect_ports",
            "unknown field `conect_ports`",
        ),
    ];
    for (name, text, key, reason) in cases {
        let f = env.write(name, &text);
        let (code, _, err) = check(&f);
        assert_eq!(code, 2, "{name} should be rejected: {err}");
        let err = err.trim();
        let prefix = format!("error: {}: ", f.display());
        assert!(err.starts_with(&prefix), "{name}: {err}");
        let rest = &err[prefix.len()..];
        if !key.is_empty() {
            assert!(
                rest.starts_with(&format!("{key}: ")),
                "{name}: expected key {key}: {err}"
            );
        }
        assert!(rest.contains(reason), "{name}: expected '{reason}': {err}");
    }
}

#[test]
fn run_refuses_an_invalid_config_with_exit_code_2() {
    let env = Env::new();
    let f = env.write("bad.toml", "workers = 1\n");
    let out = Command::new(MSC)
        .args(["run", "--config", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("missing field"), "{err}");
}

#[test]
fn pki_init_writes_private_keys_0600_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("pki");
    let run = |extra: &[&str]| {
        Command::new(MSC)
            .args(["pki", "init", "--dir", d.to_str().unwrap(), "--user", "carol"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in msc::cli::pki::FILES {
        let meta = std::fs::metadata(d.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
        let mode = meta.permissions().mode() & 0o777;
        if f.ends_with("-key.pem") {
            assert_eq!(mode, 0o600, "{f}");
        } else {
            assert_eq!(mode & 0o077, 0o044, "{f} should be world-readable, is {mode:o}");
        }
    }
    let id = msc_tls::Identity::from_der(&msc_tls::certs::load_certs(&d.join("client.pem")).unwrap()[0]);
    assert_eq!(id.common_name.as_deref(), Some("carol"));
    assert_eq!(id.emails, vec!["carol@example.com".to_string()]);
    let before = std::fs::read(d.join("ca.pem")).unwrap();
    let out = run(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read(d.join("ca.pem")).unwrap(), before, "nothing overwritten");
    assert!(run(&["--force"]).status.success());
    assert_ne!(std::fs::read(d.join("ca.pem")).unwrap(), before);
    // The generated pair is usable as is.
    for f in ["client.toml", "gateway.toml"] {
        let (code, _, err) = check(&d.join(f));
        assert_eq!(code, 0, "{err}");
    }
}

/// Start-up errors in files a config names are configuration errors too:
/// exit status 2, printed once, naming the file and the reason.
#[test]
fn unusable_credentials_exit_2_once() {
    let env = Env::new();
    let other = Env::new();
    let gateway = std::fs::read_to_string(env.path("gateway.toml")).unwrap();
    std::fs::write(env.path("garbage.pem"), "not a certificate\n").unwrap();
    std::fs::create_dir(env.path("keydir")).unwrap();
    std::fs::copy(other.path("gateway-key.pem"), env.path("other-key.pem")).unwrap();
    let cases = [
        (
            "bad-cert.toml",
            gateway.replace("\"gateway.pem\"", "\"garbage.pem\""),
            "garbage.pem",
        ),
        (
            "mismatch.toml",
            gateway.replace("\"gateway-key.pem\"", "\"other-key.pem\""),
            "other-key.pem",
        ),
        (
            "dir-key.toml",
            gateway.replace("\"gateway-key.pem\"", "\"keydir\""),
            "is a directory",
        ),
    ];
    for (name, text, needle) in cases {
        let f = env.write(name, &text);
        let out = Command::new("timeout")
            .args(["20", MSC, "gateway", "--config", f.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        assert_eq!(err.matches("error").count(), 1, "{name}: printed once: {err}");
    }
}

/// The keys of issue 14: `probe_url`/`probe_status`, an optional
/// `https_port`, and the gateway's shared session-ticket keys.
#[test]
fn probe_https_port_and_ticket_key_settings() {
    let env = Env::new();
    let client = std::fs::read_to_string(env.path("client.toml")).unwrap();
    let gateway = std::fs::read_to_string(env.path("gateway.toml")).unwrap();
    let server = |extra: &str| client.replace("https_port = 0\n", &format!("{extra}\n"));
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    env.write(
        "keys-ok",
        &format!("# comment\n{key}\n2030-01-01T00:00:00Z {}\n", key.replace("00", "ff")),
    );
    env.write("keys-bad", "2030-01-01 nope\n");
    let tls = |extra: &str| gateway.replace("[tls]\n", &format!("[tls]\n{extra}\n"));
    for (name, text) in [
        ("ok-c1.toml", server("")),
        (
            "ok-c2.toml",
            server("probe_url = \"http://example.com/health\"\nprobe_status = 204"),
        ),
        (
            "ok-c3.toml",
            server("https_port = 0\nprobe_url = \"http://[::1]:8080\""),
        ),
        (
            "ok-g1.toml",
            tls("ticket_keys = \"keys-ok\"\nticket_lifetime = \"2h\"\nticket_grace = \"3h\""),
        ),
    ] {
        let f = env.write(name, &text);
        let (code, _, err) = check(&f);
        assert_eq!(code, 0, "{name}: {err}");
    }
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "c1.toml",
            server("probe_status = 204"),
            "servers[0].probe_status",
            "only used with probe_url",
        ),
        (
            "c2.toml",
            server("probe_url = \"https://example.com/\""),
            "servers[0].probe_url",
            "only http:// URLs",
        ),
        (
            "c3.toml",
            server("probe_url = \"http://bad host/\""),
            "servers[0].probe_url",
            "is not a host[:port]",
        ),
        (
            "c4.toml",
            server("probe_url = \"http://example.com/\"\nprobe_status = 99"),
            "servers[0].probe_status",
            "not an HTTP status",
        ),
        (
            "c5.toml",
            client
                .replace("http_port = 0", "http_port = 4000")
                .replace("https_port = 0", "https_port = 4000"),
            "servers[0].https_port",
            "leave https_port out",
        ),
        (
            "g1.toml",
            tls("ticket_lifetime = \"1h\""),
            "tls.ticket_lifetime",
            "only used with tls.ticket_keys",
        ),
        (
            "g2.toml",
            tls("ticket_keys = \"missing\""),
            "tls.ticket_keys",
            "not found",
        ),
        (
            "g3.toml",
            tls("ticket_keys = \"keys-bad\""),
            "tls.ticket_keys",
            "line 1: '2030-01-01' is not an RFC 3339 UTC time",
        ),
        (
            "g4.toml",
            tls("ticket_keys = \"keys-ok\"\nticket_lifetime = \"8days\""),
            "tls.ticket_lifetime",
            "between 1s and 7 days",
        ),
    ];
    for (name, text, key, reason) in cases {
        let f = env.write(name, &text);
        let (code, _, err) = check(&f);
        assert_eq!(code, 2, "{name} should be rejected: {err}");
        let err = err.trim();
        let rest = err
            .strip_prefix(&format!("error: {}: ", f.display()))
            .unwrap_or_else(|| panic!("{name}: {err}"));
        assert!(
            rest.starts_with(&format!("{key}: ")),
            "{name}: expected key {key}: {err}"
        );
        assert!(rest.contains(reason), "{name}: expected '{reason}': {err}");
    }
}
