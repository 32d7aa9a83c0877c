//! TLS traffic protection over an in-memory pair: msc's in-place record layer
//! (seal into the buffer the plaintext was read into, open where the
//! ciphertext landed) against rustls's own buffered connection moving the same
//! bytes client -> server, in the same run, same suite (TLS13_AES_256_GCM).
//!
//! The second group opens a 256 KiB read of 15 records as the connection's
//! reader does, its plaintexts gathered into one run: opened in place then
//! moved (the old way) against decrypted straight to their place (ring's
//! `open_within`, `RecordKey::open_to`), same run.
//!
//! Run: `cargo bench -p msc-bench --bench record`. Figures: `perf/benches.md`,
//! `perf/levers.md` (with instruction counts under callgrind).

use std::hint::black_box;
use std::io::{Read, Write};
use std::ops::Range;
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

/// Records in one bulk read (as `tls/src/conn/reader.rs` receives them).
const BATCH: usize = 15;

fn batch_key() -> RecordKey {
    let key: [u8; 32] = std::array::from_fn(|i| i.to_le_bytes()[0]);
    let iv: [u8; 12] = std::array::from_fn(|i| (i * 5).to_le_bytes()[0]);
    RecordKey::from_raw(&ring::aead::AES_256_GCM, &key, iv, 0).unwrap()
}

/// 15 full records back to back, as one socket read leaves them.
fn sealed_batch() -> Vec<u8> {
    let mut tx = batch_key();
    let mut wire = Vec::with_capacity(BATCH * (MAX_PLAINTEXT + OVERHEAD));
    for i in 0..BATCH {
        let start = wire.len();
        wire.extend_from_slice(&[0; HEADER_LEN]);
        wire.extend(std::iter::repeat_n(u8::try_from(i).unwrap(), MAX_PLAINTEXT));
        tx.seal(&mut wire, start, CT_APPLICATION_DATA).unwrap();
    }
    wire
}

/// Opens every record in place, then moves each plaintext after the
/// previous one. Returns where the plaintext run lies.
#[inline(never)]
fn open_batch_memmove(buf: &mut [u8], rx: &mut RecordKey) -> Range<usize> {
    let (mut at, mut plain) = (0, 0..0);
    while at < buf.len() {
        let n = complete_record(&buf[at..]).unwrap().unwrap();
        let (_, r) = rx.open(&mut buf[at..at + n]).unwrap();
        let r = at + r.start..at + r.end;
        if plain.is_empty() {
            plain = r;
        } else {
            let len = r.len();
            buf.copy_within(r, plain.end);
            plain.end += len;
        }
        at += n;
    }
    plain
}

/// Opens every record straight to the end of the plaintext before it.
#[inline(never)]
fn open_batch_within(buf: &mut [u8], rx: &mut RecordKey) -> Range<usize> {
    let (mut at, mut plain) = (0, 0..0);
    while at < buf.len() {
        let n = complete_record(&buf[at..]).unwrap().unwrap();
        let dst = if plain.is_empty() { at + HEADER_LEN } else { plain.end };
        let (_, r) = rx.open_to(buf, at..at + n, dst).unwrap();
        if plain.is_empty() {
            plain = r;
        } else {
            plain.end = r.end;
        }
        at += n;
    }
    plain
}

fn bench_batch(c: &mut Criterion) {
    let wire = sealed_batch();
    let mut g = c.benchmark_group("record/open_15_records_gathered");
    g.throughput(Throughput::Bytes((BATCH * MAX_PLAINTEXT) as u64));
    let mut buf = wire.clone();
    type OpenBatch = fn(&mut [u8], &mut RecordKey) -> Range<usize>;
    let variants: [(&str, OpenBatch); 2] = [
        ("open_then_memmove", open_batch_memmove),
        ("open_within", open_batch_within),
    ];
    for (name, f) in variants {
        let mut run = 0..0;
        g.bench_function(name, |b| {
            b.iter(|| {
                // Stands in for the socket read (the same in both).
                buf.copy_from_slice(&wire);
                let mut rx = batch_key();
                run = f(&mut buf, &mut rx);
                assert_eq!(run.len(), BATCH * MAX_PLAINTEXT);
                black_box(&buf[run.clone()]);
            })
        });
        // Exact bytes: record i's plaintext is byte i, in order.
        for (i, chunk) in buf[run].chunks(MAX_PLAINTEXT).enumerate() {
            assert!(
                chunk.iter().all(|&x| usize::from(x) == i),
                "{name}: record {i} misplaced"
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench, bench_batch);
criterion_main!(benches);
