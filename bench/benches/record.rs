//! TLS traffic protection over an in-memory pair: msc's in-place record layer
//! (seal into the buffer the plaintext was read into, open where the
//! ciphertext landed) against rustls's own buffered connection moving the same
//! bytes client -> server, in the same run, same suite (TLS13_AES_256_GCM).
//!
//! Run: `cargo bench -p msc-bench --bench record`. Figures: `perf/benches.md`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use msc_tls::config::{ClientCreds, ServerCreds, client_config, server_config};
use msc_tls::pki::{Ca, Validity};
use msc_tls::record::{CT_APPLICATION_DATA, HEADER_LEN, MAX_PLAINTEXT, OVERHEAD, RecordKey, complete_record};

const TOTAL: usize = 1024 * 1024;

fn pair() -> (rustls::ClientConnection, rustls::ServerConnection, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("bench CA").unwrap();
    let gw = ca.issue_server(&["localhost".into()], Validity::days(1)).unwrap();
    let cl = ca.issue_client("bench", None, Validity::days(1)).unwrap();
    let w = |n: &str, s: &str| std::fs::write(dir.path().join(n), s).unwrap();
    w("ca.pem", &ca.issued.cert_pem);
    w("gw.pem", &gw.cert_pem);
    w("gw-key.pem", &gw.key_pem);
    w("cl.pem", &cl.cert_pem);
    w("cl-key.pem", &cl.key_pem);
    let p = |n: &str| dir.path().join(n);
    let ccfg = client_config(
        &ClientCreds {
            ca: &p("ca.pem"),
            cert: &p("cl.pem"),
            key: &p("cl-key.pem"),
        },
        4,
    )
    .unwrap();
    let scfg = server_config(&ServerCreds {
        cert: &p("gw.pem"),
        key: &p("gw-key.pem"),
        client_ca: &p("ca.pem"),
    })
    .unwrap();
    let mut c = rustls::ClientConnection::new(ccfg, "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(scfg).unwrap();
    let mut buf = Vec::new();
    for _ in 0..10 {
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
    (c, s, dir)
}

fn bench(c: &mut Criterion) {
    let data = vec![0x5au8; TOTAL];
    let mut g = c.benchmark_group("record/1MiB_client_to_server");
    g.throughput(Throughput::Bytes(TOTAL as u64));

    let (mut cl, mut sv, _dir) = pair();
    let suite = format!("{:?}", cl.negotiated_cipher_suite().unwrap().suite());
    assert_eq!(suite, "TLS13_AES_256_GCM_SHA384");
    let mut wire = Vec::with_capacity(TOTAL + TOTAL / 8);
    let mut out = vec![0u8; MAX_PLAINTEXT];
    g.bench_function("rustls_buffered_baseline", |b| {
        b.iter(|| {
            for chunk in data.chunks(MAX_PLAINTEXT) {
                cl.writer().write_all(chunk).unwrap();
                wire.clear();
                while cl.wants_write() {
                    cl.write_tls(&mut wire).unwrap();
                }
                let mut rd = &wire[..];
                while !rd.is_empty() {
                    sv.read_tls(&mut rd).unwrap();
                    sv.process_new_packets().unwrap();
                }
                let mut got = 0;
                while got < chunk.len() {
                    got += sv.reader().read(&mut out).unwrap();
                }
            }
            black_box(&out);
        })
    });

    let key: [u8; 32] = std::array::from_fn(|i| i.to_le_bytes()[0]);
    let iv: [u8; 12] = std::array::from_fn(|i| (i * 3).to_le_bytes()[0]);
    let mut tx = RecordKey::from_raw(&ring::aead::AES_256_GCM, &key, iv, 0).unwrap();
    let mut rx = RecordKey::from_raw(&ring::aead::AES_256_GCM, &key, iv, 0).unwrap();
    // Plaintext as a socket read would leave it: straight in the record buffer.
    let mut rec: Vec<u8> = Vec::with_capacity(HEADER_LEN + MAX_PLAINTEXT + OVERHEAD);
    g.bench_function("msc_in_place", |b| {
        b.iter(|| {
            for chunk in data.chunks(MAX_PLAINTEXT) {
                rec.clear();
                rec.extend_from_slice(&[0; HEADER_LEN]);
                // Stands in for the socket read into the buffer (a kernel copy in msc).
                rec.extend_from_slice(chunk);
                tx.seal(&mut rec, 0, CT_APPLICATION_DATA).unwrap();
                let n = complete_record(&rec).unwrap().unwrap();
                let (ct, range) = rx.open(&mut rec[..n]).unwrap();
                assert_eq!(ct, CT_APPLICATION_DATA);
                black_box(&rec[range]);
            }
        })
    });
    g.finish();
    let _ = Arc::new(());
}

criterion_group!(benches, bench);
criterion_main!(benches);
