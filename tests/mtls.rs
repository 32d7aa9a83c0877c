//! Mutual-TLS policy between the client and the gateway, with real
//! certificates: wrong CA, expired and missing client certificates are
//! refused by the gateway; a gateway certificate from another CA is refused
//! by the client with a 502 that says why.

mod common;

use common::*;
use msc_tls::pki::{Ca, Validity};

/// Writes a client certificate from `ca` (or a fresh foreign CA) into the env.
fn write_client_cert(env: &Env, name: &str, user: &str, foreign: bool, validity: Validity) {
    let ca = if foreign {
        Ca::new("some other CA").unwrap()
    } else {
        Ca::from_pem(
            &std::fs::read_to_string(env.path("ca.pem")).unwrap(),
            &std::fs::read_to_string(env.path("ca-key.pem")).unwrap(),
        )
        .unwrap()
    };
    let c = ca
        .issue_client(user, Some(&format!("{user}@example.com")), validity)
        .unwrap();
    env.write(&format!("{name}.pem"), &c.cert_pem);
    env.write(&format!("{name}-key.pem"), &c.key_pem);
}

fn curl_via_gateway(env: &Env, gw: std::net::SocketAddr, url: &str, cert: Option<&str>) -> (i32, String) {
    let proxy = format!("https://{gw}");
    let ca = env.p("ca.pem");
    let mut args: Vec<String> = vec!["--proxy".into(), proxy, "--proxy-cacert".into(), ca];
    if let Some(c) = cert {
        args.extend([
            "--proxy-cert".into(),
            env.p(&format!("{c}.pem")),
            "--proxy-key".into(),
            env.p(&format!("{c}-key.pem")),
        ]);
    }
    args.push(url.into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = curl(&refs);
    (code, err)
}

#[test]
fn gateway_refuses_foreign_expired_and_missing_client_certificates() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (gw, gw_addr) = env.gateway();
    let url = format!("http://{origin}/");
    write_client_cert(&env, "foreign", "mallory", true, Validity::days(1));
    write_client_cert(&env, "expired", "mallory", false, Validity::expired());
    // The same CA, valid: accepted (the control case that proves the others fail for their reason).
    write_client_cert(&env, "valid", "bob", false, Validity::days(1));
    let (code, err) = curl_via_gateway(&env, gw_addr, &url, Some("valid"));
    assert_eq!(code, 0, "{err}");

    for (cert, expect) in [
        (Some("foreign"), "UnknownIssuer"),
        (Some("expired"), "certificate expired"),
        (None, "no certificates"),
    ] {
        let (code, err) = curl_via_gateway(&env, gw_addr, &url, cert);
        assert_ne!(code, 0, "{cert:?} must be refused; curl said: {err}");
        // The gateway says why with a TLS alert, not a bare close.
        assert!(err.contains("alert"), "{cert:?}: curl said: {err}");
        gw.wait_stderr(expect);
    }
    // Only the valid request reached the origin.
    let log = gw.stderr();
    assert_eq!(log.matches(&format!("GET http://{origin}/ 200")).count(), 1, "{log}");
    assert!(log.contains("bob@example.com GET"), "{log}");
    assert!(!log.contains("mallory@example.com GET"), "{log}");
}

#[test]
fn client_with_a_foreign_certificate_gets_a_clear_refusal() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (gw, gw_addr) = env.gateway();
    write_client_cert(&env, "foreign", "mallory", true, Validity::days(1));
    let cfg = env.client_toml("client-foreign", gw_addr, "foreign.pem", "foreign-key.pem", FAIL_CLOSED);
    let (_c, proxy) = env.client_from("client-foreign", &cfg);
    let (status, head, body) = exchange(
        proxy,
        format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
    );
    let text = gateway_refusal(status, &head, &body);
    assert!(
        text.contains("msc-client: ") && text.contains("gateway 'gw1'") && text.contains("certificate"),
        "{text}"
    );
    gw.wait_stderr("UnknownIssuer");
}

#[test]
fn client_refuses_a_gateway_certificate_from_another_ca() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    // The gateway presents a certificate the client's CA did not sign.
    let other = Ca::new("impostor CA").unwrap();
    let cert = other
        .issue_server(&["localhost".into(), "127.0.0.1".into()], Validity::days(1))
        .unwrap();
    env.write("impostor.pem", &cert.cert_pem);
    env.write("impostor-key.pem", &cert.key_pem);
    let base = std::fs::read_to_string(env.path("gateway.toml")).unwrap();
    env.write(
        "gateway.toml",
        &base
            .replace("cert = \"gateway.pem\"", "cert = \"impostor.pem\"")
            .replace("key = \"gateway-key.pem\"", "key = \"impostor-key.pem\""),
    );
    let (_g, gw_addr) = env.gateway();
    let cfg = env.client_toml("client-impostor", gw_addr, "client.pem", "client-key.pem", FAIL_CLOSED);
    let (_c, proxy) = env.client_from("client-impostor", &cfg);
    for url in [format!("http://{origin}/"), format!("{origin}")] {
        let (status, head, body) = if url.starts_with("http") {
            exchange(
                proxy,
                format!("GET {url} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
            )
        } else {
            exchange(
                proxy,
                format!("CONNECT {url} HTTP/1.1\r\nHost: {url}\r\n\r\n").as_bytes(),
            )
        };
        let text = gateway_refusal(status, &head, &body);
        assert!(
            text.contains("gateway 'gw1'") && text.contains("UnknownIssuer"),
            "{text}"
        );
    }
}

#[test]
fn wrong_server_name_is_refused() {
    let env = Env::new();
    let (_o, origin) = env.origin();
    let (_g, gw_addr) = env.gateway();
    let cfg = env.client_toml("client-sni", gw_addr, "client.pem", "client-key.pem", FAIL_CLOSED);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("server_name = \"localhost\"", "server_name = \"gateway.example.com\"");
    std::fs::write(&cfg, text).unwrap();
    let (_c, proxy) = env.client_from("client-sni", &cfg);
    let (status, _, body) = exchange(
        proxy,
        format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
    );
    let text = gateway_refusal(status, "", &body);
    assert!(
        text.contains("certificate not valid for name \"gateway.example.com\""),
        "{text}"
    );
}
