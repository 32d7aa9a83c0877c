//! Real TLS over real sockets on 127.0.0.1: handshake, record layer, resumption,
//! key updates, half-close, and certificate policy — on both monoio drivers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};
use msc_io::stream::{RelayState, Sink, Source, pump};
use msc_tls::config::{ClientCreds, ServerCreds, client_config, server_config};
use msc_tls::pki::{Ca, Validity};
use msc_tls::{ServerName, TlsStream};

const T: Duration = Duration::from_secs(10);

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA").unwrap();
        let other = Ca::new("other CA").unwrap();
        let w = |name: &str, s: &str| std::fs::write(dir.path().join(name), s).unwrap();
        w("ca.pem", &ca.issued.cert_pem);
        w("other-ca.pem", &other.issued.cert_pem);
        let gw = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], Validity::days(1))
            .unwrap();
        w("gw.pem", &gw.cert_pem);
        w("gw-key.pem", &gw.key_pem);
        let bad_gw = other.issue_server(&["localhost".into()], Validity::days(1)).unwrap();
        w("bad-gw.pem", &bad_gw.cert_pem);
        w("bad-gw-key.pem", &bad_gw.key_pem);
        for (name, issuer, validity) in [
            ("client", &ca, Validity::days(1)),
            ("foreign", &other, Validity::days(1)),
            ("expired", &ca, Validity::expired()),
        ] {
            let c = issuer
                .issue_client("alice", Some("alice@example.com"), validity)
                .unwrap();
            w(&format!("{name}.pem"), &c.cert_pem);
            w(&format!("{name}-key.pem"), &c.key_pem);
        }
        Pki { dir }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self, who: &str) -> Arc<rustls::ClientConfig> {
        self.client_with_tickets(who, 8)
    }

    fn client_with_tickets(&self, who: &str, tickets: usize) -> Arc<rustls::ClientConfig> {
        let (cert, key) = (self.p(&format!("{who}.pem")), self.p(&format!("{who}-key.pem")));
        client_config(
            &ClientCreds {
                ca: &self.p("ca.pem"),
                cert: &cert,
                key: &key,
            },
            tickets,
        )
        .unwrap()
    }

    fn server(&self, cert: &str) -> Arc<rustls::ServerConfig> {
        server_config(&ServerCreds {
            cert: &self.p(&format!("{cert}.pem")),
            key: &self.p(&format!("{cert}-key.pem")),
            client_ca: &self.p("ca.pem"),
        })
        .unwrap()
    }
}

fn name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

async fn listen() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Server: accepts `n` connections, echoes each until EOF, reports identity and resumption.
async fn echo_server(l: TcpListener, cfg: Arc<rustls::ServerConfig>, n: usize) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (tcp, _) = l.accept().await.unwrap();
        let tls = TlsStream::accept(cfg.clone(), tcp, T).await.unwrap();
        let id = msc_tls::Identity::from_der(&tls.info().peer_certs[0]);
        out.push((id.principal().to_string(), tls.info().resumed));
        let (mut r, mut w) = tls.split();
        let st = RelayState::new(T);
        pump(&mut r, &mut w, &st).await.result.unwrap();
    }
    out
}

async fn read_all<S: Source>(r: &mut S) -> Vec<u8> {
    let mut got = Vec::new();
    loop {
        if r.data().is_empty() && r.fill().await.unwrap() == 0 {
            break;
        }
        got.extend_from_slice(r.data());
        let n = r.data().len();
        r.consume(n);
    }
    got
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251).to_le_bytes()[0]).collect()
}

#[monoio::test_all(timer_enabled = true)]
async fn echo_resumption_and_key_update() {
    let pki = Pki::new();
    let (l, addr) = listen().await;
    let server = monoio::spawn(echo_server(l, pki.server("gw"), 2));
    let ccfg = pki.client("client");
    let data = pattern(3 * 1024 * 1024 + 17);
    for round in 0..2 {
        let tcp = TcpStream::connect_addr(addr).await.unwrap();
        let tls = TlsStream::connect(ccfg.clone(), name(), tcp, T).await.unwrap();
        assert!(tls.info().suite.starts_with("TLS13_"), "{}", tls.info().suite);
        assert_eq!(tls.info().resumed, round == 1, "second connection resumes");
        let (mut r, mut w) = tls.split();
        if round == 1 {
            w.rotate_key();
        }
        let writer = async {
            for chunk in data.chunks(100_000) {
                w.write_bytes(chunk).await.unwrap();
            }
            w.close_write().await.unwrap();
        };
        let (_, got) = monoio::join!(writer, read_all(&mut r));
        assert_eq!(got.len(), data.len());
        assert!(got == data, "echoed bytes differ");
    }
    let ids = server.await;
    assert_eq!(
        ids,
        vec![
            ("alice@example.com".to_string(), false),
            ("alice@example.com".to_string(), true)
        ]
    );
}

/// Plain socket -> TLS sender reading straight into record buffers (up to
/// 15 records per readv), with varying limits per call and a key update
/// midway: the TLS peer receives exactly the bytes sent.
#[monoio::test_all(timer_enabled = true)]
async fn plain_to_tls_batches_are_byte_exact() {
    let pki = Pki::new();
    let (l, addr) = listen().await;
    let scfg = pki.server("gw");
    let server = monoio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let tls = TlsStream::accept(scfg, tcp, T).await.unwrap();
        let (mut r, _w) = tls.split();
        read_all(&mut r).await
    });
    // The plain source: a loopback pair fed in uneven writes.
    let (pl, paddr) = listen().await;
    let data = pattern(5 * 1024 * 1024 + 4097);
    let feed = data.clone();
    let feeder = monoio::spawn(async move {
        let mut s = TcpStream::connect_addr(paddr).await.unwrap();
        let mut at = 0;
        for size in [1usize, 16_384, 16_385, 49_152, 49_153, 100_000, 7].iter().cycle() {
            if at == feed.len() {
                break;
            }
            let end = (at + size).min(feed.len());
            let (r, _) = monoio::io::AsyncWriteRentExt::write_all(&mut s, feed[at..end].to_vec()).await;
            r.unwrap();
            at = end;
        }
    });
    let (src, _) = pl.accept().await.unwrap();
    let (mut plain, _pw) = msc_io::stream::split(src);
    let tcp = TcpStream::connect_addr(addr).await.unwrap();
    let tls = TlsStream::connect(pki.client("client"), name(), tcp, T).await.unwrap();
    let (_r, mut w) = tls.split();
    let mut sent = 0;
    for (i, max) in [usize::MAX, 16_385, 49_153, 1, 32_768, 49_152, 16_384]
        .iter()
        .cycle()
        .enumerate()
    {
        if i == 40 {
            w.rotate_key();
        }
        let n = w.absorb(&mut plain, *max).await.unwrap();
        assert!(n <= *max);
        if n == 0 {
            break;
        }
        sent += n;
    }
    w.close_write().await.unwrap();
    feeder.await;
    assert_eq!(sent, data.len());
    let got = server.await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ");
}

/// Records that arrived together are returned together: one fill yields
/// the plaintext of every complete record buffered (contiguous, in order),
/// and a close_notify that came with them ends the stream afterwards.
#[monoio::test_all(timer_enabled = true)]
async fn buffered_records_come_out_in_one_fill() {
    let pki = Pki::new();
    let (l, addr) = listen().await;
    let scfg = pki.server("gw");
    let data = pattern(3 * 16 * 1024);
    let send = data.clone();
    let server = monoio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let tls = TlsStream::accept(scfg, tcp, T).await.unwrap();
        let (_r, mut w) = tls.split();
        // Three full records in one write, then close_notify.
        w.write_bytes(&send).await.unwrap();
        w.close_write().await.unwrap();
    });
    let tcp = TcpStream::connect_addr(addr).await.unwrap();
    let tls = TlsStream::connect(pki.client("client"), name(), tcp, T).await.unwrap();
    let (mut r, _w) = tls.split();
    // Everything is in the socket before the first read.
    server.await;
    let first = r.fill().await.unwrap();
    assert_eq!(first, data.len(), "one fill returns all three records");
    assert!(r.data() == &data[..], "plaintext differs");
    r.consume(first);
    assert_eq!(r.fill().await.unwrap(), 0, "close_notify ends the stream");
}

/// A burst of new tunnels keeps resuming: the gateway sends several tickets
/// per handshake and the client keeps more than rustls's default cache (8
/// per server), so twelve handshakes in a row without reading any tickets
/// all resume once a few earlier connections delivered theirs.
#[monoio::test_all(timer_enabled = true)]
async fn burst_of_handshakes_all_resume() {
    const WARM: usize = 4;
    const BURST: usize = 12;
    let pki = Pki::new();
    let (l, addr) = listen().await;
    let scfg = pki.server("gw");
    let server = monoio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..WARM + BURST {
            let (tcp, _) = l.accept().await.unwrap();
            held.push(TlsStream::accept(scfg.clone(), tcp, T).await.unwrap());
        }
        held.iter().map(|t| t.info().resumed).collect::<Vec<_>>()
    });
    let ccfg = pki.client_with_tickets("client", 64);
    // Warm-up: each connection reads the tickets that follow its handshake.
    for i in 0..WARM {
        let tcp = TcpStream::connect_addr(addr).await.unwrap();
        let tls = TlsStream::connect(ccfg.clone(), name(), tcp, T).await.unwrap();
        assert_eq!(tls.info().resumed, i > 0);
        let (mut r, _w) = tls.split();
        assert!(r.settle(T).await.unwrap(), "tunnel {i} usable after its tickets");
    }
    // (WARM - 1) resumptions consumed one ticket each; WARM handshakes sent
    // TICKETS_PER_HANDSHAKE each.
    const { assert!(WARM * msc_tls::config::TICKETS_PER_HANDSHAKE - (WARM - 1) >= BURST) };
    let mut held = Vec::new();
    for i in 0..BURST {
        let tcp = TcpStream::connect_addr(addr).await.unwrap();
        let tls = TlsStream::connect(ccfg.clone(), name(), tcp, T).await.unwrap();
        assert!(tls.info().resumed, "burst handshake {i} resumed");
        held.push(tls);
    }
    let resumed = server.await;
    assert_eq!(resumed.iter().filter(|r| **r).count(), WARM - 1 + BURST, "{resumed:?}");
}

async fn handshake_pair(
    scfg: Arc<rustls::ServerConfig>,
    ccfg: Arc<rustls::ClientConfig>,
) -> (Result<TlsStream, String>, Result<Vec<u8>, String>) {
    let (l, addr) = listen().await;
    let server = monoio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        TlsStream::accept(scfg, tcp, T).await.map_err(|e| e.to_string())
    });
    // The client's view: TLS 1.3 clients finish before the server judges their
    // certificate, so a rejection shows up on the first read.
    let client = async {
        let tcp = TcpStream::connect_addr(addr).await.unwrap();
        let tls = TlsStream::connect(ccfg, name(), tcp, T)
            .await
            .map_err(|e| e.to_string())?;
        let (mut r, mut w) = tls.split();
        w.write_bytes(b"ping").await.map_err(|e| e.to_string())?;
        match r.fill().await {
            Ok(_) => Ok(r.data().to_vec()),
            Err(e) => Err(e.to_string()),
        }
    };
    let c = client.await;
    (server.await, c)
}

#[monoio::test_all(timer_enabled = true)]
async fn client_certificate_policy() {
    let pki = Pki::new();
    for who in ["foreign", "expired"] {
        let (s, c) = handshake_pair(pki.server("gw"), pki.client(who)).await;
        let e = s.expect_err(who);
        assert!(e.contains("invalid peer certificate"), "{who}: {e}");
        assert!(c.is_err(), "{who}: client must not get data");
    }
    // No certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    for c in msc_tls::certs::load_certs(&pki.p("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let mut anon = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anon.enable_secret_extraction = true;
    let (s, c) = handshake_pair(pki.server("gw"), Arc::new(anon)).await;
    let e = s.expect_err("anonymous");
    assert!(
        e.contains("NoCertificatesPresented") || e.contains("certificate"),
        "{e}"
    );
    assert!(c.is_err());
}

#[monoio::test_all(timer_enabled = true)]
async fn server_from_another_ca_is_refused() {
    let pki = Pki::new();
    let (_, c) = handshake_pair(pki.server("bad-gw"), pki.client("client")).await;
    let e = c.expect_err("client must refuse");
    assert!(
        e.contains("invalid peer certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );
}

#[test]
fn credentials_errors_name_the_file() {
    let pki = Pki::new();
    let missing = Path::new("/nonexistent/ca.pem");
    let e = client_config(
        &ClientCreds {
            ca: missing,
            cert: &pki.p("client.pem"),
            key: &pki.p("client-key.pem"),
        },
        1,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/ca.pem: "), "{e}");
    let e = client_config(
        &ClientCreds {
            ca: &pki.p("ca.pem"),
            cert: &pki.p("client.pem"),
            key: &pki.p("gw-key.pem"),
        },
        1,
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
}
