//! Test helpers: connected pairs over loopback.

use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};
use rustls_pki_types::ServerName;

use super::TlsStream;
use crate::config::{ClientCreds, ServerCreds, client_config, server_config};
use crate::pki::{Ca, Validity};

const T: Duration = Duration::from_secs(10);

/// A client and a server connected over loopback, mutual TLS.
pub(crate) async fn connected_pair() -> (TlsStream, TlsStream) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA").unwrap();
    let gw = ca.issue_server(&["localhost".into()], Validity::days(1)).unwrap();
    let client = ca.issue_client("alice", None, Validity::days(1)).unwrap();
    let p = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca_pem = p("ca.pem", &ca.issued.cert_pem);
    let scfg = server_config(&ServerCreds {
        cert: &p("gw.pem", &gw.cert_pem),
        key: &p("gw-key.pem", &gw.key_pem),
        client_ca: &ca_pem,
    })
    .unwrap();
    let ccfg = client_config(
        &ClientCreds {
            ca: &ca_pem,
            cert: &p("c.pem", &client.cert_pem),
            key: &p("c-key.pem", &client.key_pem),
        },
        1,
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = monoio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        TlsStream::accept(scfg, tcp, T).await.unwrap()
    });
    let tcp = TcpStream::connect_addr(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let client = TlsStream::connect(ccfg, name, tcp, T).await.unwrap();
    (client, server.await)
}

/// A client and a server connection that completed a TLS 1.3 handshake in
/// memory with `suite` only (server authentication only), secrets
/// extractable.
pub(crate) fn memory_pair_with_suite(
    suite: rustls::SupportedCipherSuite,
) -> (rustls::ClientConnection, rustls::ServerConnection) {
    use std::sync::Arc;

    use crate::certs::{load_certs, load_key};

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA").unwrap();
    let gw = ca.issue_server(&["localhost".into()], Validity::days(1)).unwrap();
    let p = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..rustls::crypto::ring::default_provider()
    });
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&p("ca.pem", &ca.issued.cert_pem)).unwrap() {
        roots.add(c).unwrap();
    }
    let mut ccfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ccfg.enable_secret_extraction = true;
    let mut scfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            load_certs(&p("gw.pem", &gw.cert_pem)).unwrap(),
            load_key(&p("gw-key.pem", &gw.key_pem)).unwrap(),
        )
        .unwrap();
    scfg.enable_secret_extraction = true;
    let name = ServerName::try_from("localhost").unwrap();
    let mut c = rustls::ClientConnection::new(Arc::new(ccfg), name).unwrap();
    let mut s = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
    let mut buf = Vec::new();
    for _ in 0..10 {
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        s.read_tls(&mut &buf[..]).unwrap();
        s.process_new_packets().unwrap();
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        c.read_tls(&mut &buf[..]).unwrap();
        c.process_new_packets().unwrap();
    }
    assert!(!c.is_handshaking() && !s.is_handshaking());
    (c, s)
}
