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
