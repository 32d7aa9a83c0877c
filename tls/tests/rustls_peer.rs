//! Our TlsStream (reader and writer) against a plain rustls connection over
//! a real socket: random records both ways (plaintext 0..=2^14 bytes), key
//! updates from either side interleaved (ours: KeyUpdate(update_not_requested);
//! rustls's: KeyUpdate(update_requested), which our writer must answer), session
//! tickets, and close_notify both ways — with us as client and as server, on
//! every TLS 1.3 suite, on both monoio drivers.

use std::io::{self, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use monoio::net::TcpStream;
use msc_io::stream::{Sink, Source};
use msc_tls::config::{ClientCreds, ServerCreds, client_config, server_config};
use msc_tls::pki::{Ca, Validity};
use msc_tls::{ServerName, TlsStream, record};
use proptest::prelude::*;
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{cipher_suite, default_provider};

const T: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
enum Op {
    /// We write one record of this length; the rustls peer reads it.
    ToPeer(usize),
    /// The rustls peer writes one record of this length; we read it.
    FromPeer(usize),
    /// Our writer rotates its key before its next record.
    OurKeyUpdate,
    /// The rustls peer rotates its key and asks us to rotate ours.
    PeerKeyUpdate,
}

struct Setup {
    _dir: tempfile::TempDir,
    ours_client: Arc<rustls::ClientConfig>,
    ours_server: Arc<rustls::ServerConfig>,
    /// rustls peers limited to one suite each.
    peer_servers: Vec<Arc<rustls::ServerConfig>>,
    peer_clients: Vec<Arc<rustls::ClientConfig>>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA").unwrap();
        let gw = ca.issue_server(&["localhost".into()], Validity::days(1)).unwrap();
        let client = ca.issue_client("alice", None, Validity::days(1)).unwrap();
        let p = |name: &str, pem: &str| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let (ca_pem, gw_pem, gw_key) = (
            p("ca.pem", &ca.issued.cert_pem),
            p("gw.pem", &gw.cert_pem),
            p("gw-key.pem", &gw.key_pem),
        );
        let (c_pem, c_key) = (p("c.pem", &client.cert_pem), p("c-key.pem", &client.key_pem));
        let ours_client = client_config(
            &ClientCreds {
                ca: &ca_pem,
                cert: &c_pem,
                key: &c_key,
            },
            8,
        )
        .unwrap();
        let ours_server = server_config(&ServerCreds {
            cert: &gw_pem,
            key: &gw_key,
            client_ca: &ca_pem,
        })
        .unwrap();
        let load = msc_tls::certs::load_certs;
        let mut roots = rustls::RootCertStore::empty();
        for c in load(&ca_pem).unwrap() {
            roots.add(c).unwrap();
        }
        let suites = [
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        let provider = |s| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![s],
                ..default_provider()
            })
        };
        let peer_servers = suites
            .iter()
            .map(|s| {
                let cfg = rustls::ServerConfig::builder_with_provider(provider(*s))
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(load(&gw_pem).unwrap(), msc_tls::certs::load_key(&gw_key).unwrap())
                    .unwrap();
                Arc::new(cfg)
            })
            .collect();
        let peer_clients = suites
            .iter()
            .map(|s| {
                let cfg = rustls::ClientConfig::builder_with_provider(provider(*s))
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .with_root_certificates(roots.clone())
                    .with_client_auth_cert(load(&c_pem).unwrap(), msc_tls::certs::load_key(&c_key).unwrap())
                    .unwrap();
                Arc::new(cfg)
            })
            .collect();
        Setup {
            _dir: dir,
            ours_client,
            ours_server,
            peer_servers,
            peer_clients,
        }
    })
}

fn payload(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + salt * 7).to_le_bytes()[0]).collect()
}

fn flush(conn: &mut rustls::Connection, sock: &mut std::net::TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    Ok(())
}

/// Reads plaintext from the rustls peer: `Ok(0)` only after close_notify.
fn peer_read(conn: &mut rustls::Connection, sock: &mut std::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match conn.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if conn.complete_io(sock)? == (0, 0) {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The rustls side of a script, on a blocking socket.
fn peer(mut conn: rustls::Connection, mut sock: std::net::TcpStream, ops: &[Op]) -> io::Result<()> {
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::ToPeer(len) => {
                let mut got = vec![0u8; *len];
                let mut at = 0;
                while at < got.len() {
                    match peer_read(&mut conn, &mut sock, &mut got[at..])? {
                        0 => return Err(io::Error::other("early close_notify")),
                        n => at += n,
                    }
                }
                assert!(got == payload(*len, i), "op {i}: bytes differ at the rustls peer");
            }
            Op::FromPeer(len) => {
                io::Write::write_all(&mut conn.writer(), &payload(*len, i))?;
                flush(&mut conn, &mut sock)?;
            }
            Op::PeerKeyUpdate => {
                conn.refresh_traffic_keys().map_err(io::Error::other)?;
                flush(&mut conn, &mut sock)?;
            }
            Op::OurKeyUpdate => {}
        }
    }
    // Our close_notify, then ours.
    let mut rest = [0u8; 64];
    assert_eq!(peer_read(&mut conn, &mut sock, &mut rest)?, 0, "close_notify expected");
    conn.send_close_notify();
    flush(&mut conn, &mut sock)
}

/// Our side of a script.
async fn ours(tls: TlsStream, ops: &[Op]) {
    let (mut r, mut w) = tls.split();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::ToPeer(len) => w.write_bytes(&payload(*len, i)).await.unwrap(),
            Op::FromPeer(len) => {
                let want = payload(*len, i);
                let mut got = Vec::with_capacity(*len);
                while got.len() < *len {
                    if r.data().is_empty() {
                        assert_ne!(r.fill().await.unwrap(), 0, "op {i}: early end");
                    }
                    let n = r.data().len().min(*len - got.len());
                    got.extend_from_slice(&r.data()[..n]);
                    r.consume(n);
                }
                assert!(got == want, "op {i}: bytes differ at our reader");
            }
            Op::OurKeyUpdate => w.rotate_key(),
            Op::PeerKeyUpdate => {}
        }
    }
    w.close_write().await.unwrap();
    assert!(r.data().is_empty());
    assert_eq!(r.fill().await.unwrap(), 0, "the peer's close_notify ends the stream");
}

async fn run(we_are_client: bool, suite: usize, ops: Vec<Op>) {
    let s = setup();
    // The client side connects to a listener the server side owns.
    let (std_listener, our_listener) = if we_are_client {
        (Some(TcpListener::bind("127.0.0.1:0").unwrap()), None)
    } else {
        (None, Some(monoio::net::TcpListener::bind("127.0.0.1:0").unwrap()))
    };
    let addr = match (&std_listener, &our_listener) {
        (Some(l), _) => l.local_addr().unwrap(),
        (_, Some(l)) => l.local_addr().unwrap(),
        _ => unreachable!(),
    };
    let peer_ops = ops.clone();
    let peer_thread = std::thread::spawn(move || {
        let (sock, conn): (_, rustls::Connection) = match std_listener {
            Some(l) => (
                l.accept().unwrap().0,
                rustls::ServerConnection::new(s.peer_servers[suite].clone())
                    .unwrap()
                    .into(),
            ),
            None => {
                let name = ServerName::try_from("localhost").unwrap();
                (
                    std::net::TcpStream::connect(addr).unwrap(),
                    rustls::ClientConnection::new(s.peer_clients[suite].clone(), name)
                        .unwrap()
                        .into(),
                )
            }
        };
        sock.set_read_timeout(Some(T)).unwrap();
        peer(conn, sock, &peer_ops)
    });
    let tls = match our_listener {
        None => {
            let tcp = TcpStream::connect_addr(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            TlsStream::connect(s.ours_client.clone(), name, tcp, T).await.unwrap()
        }
        Some(l) => {
            let (tcp, _) = l.accept().await.unwrap();
            TlsStream::accept(s.ours_server.clone(), tcp, T).await.unwrap()
        }
    };
    ours(tls, &ops).await;
    peer_thread.join().unwrap().unwrap();
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..=record::MAX_PLAINTEXT,
        1 => Just(0),
        1 => Just(record::MAX_PLAINTEXT),
        1 => 1..64usize,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => len().prop_map(Op::ToPeer),
        4 => len().prop_map(Op::FromPeer),
        1 => Just(Op::OurKeyUpdate),
        1 => Just(Op::PeerKeyUpdate),
    ]
}

fn on_both_drivers(f: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f());
    if monoio::utils::detect_uring() {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn records_interoperate_with_a_rustls_peer(
        we_are_client in any::<bool>(),
        suite in 0..3usize,
        ops in prop::collection::vec(op(), 1..12),
    ) {
        on_both_drivers(|| Box::pin(run(we_are_client, suite, ops.clone())));
    }
}
