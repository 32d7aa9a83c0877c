//! Body framing: tracking a chunked body with msc's streaming state machine
//! (fed in 16 KiB reads, as from a socket) against a minimal decoder built
//! on `httparse::parse_chunk_size` that sees the whole body at once, in the
//! same run.
//!
//! Run: `cargo bench -p msc-bench --bench framing`. Figures: `perf/benches.md`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use msc_io::framing::{BodyLen, BodyTracker, response_kind};
use msc_io::head::{Method, ResponseHead};

/// 256 KiB of payload in 4 KiB chunks, delivered in 16 KiB reads.
fn chunked_body() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..64u32 {
        v.extend_from_slice(b"1000\r\n");
        v.extend(std::iter::repeat_n((i % 251) as u8, 4096));
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"0\r\n\r\n");
    v
}

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nDate: Wed, 25 Nov 2026 22:00:00 GMT\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 1024\r\nCache-Control: max-age=60\r\nETag: \"abc123\"\r\nConnection: keep-alive\r\n\r\n";

fn bench(c: &mut Criterion) {
    let body = chunked_body();
    let mut g = c.benchmark_group("framing/chunked_256k");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("httparse_chunk_size_baseline", |b| {
        b.iter(|| {
            let data = black_box(&body);
            let mut pos = 0usize;
            loop {
                let (used, size) = match httparse::parse_chunk_size(&data[pos..]).unwrap() {
                    httparse::Status::Complete(x) => x,
                    httparse::Status::Partial => unreachable!(),
                };
                pos += used;
                if size == 0 {
                    pos += 2;
                    break;
                }
                pos += usize::try_from(size).expect("chunk size fits in memory") + 2;
            }
            black_box(pos)
        })
    });
    g.bench_function("msc_tracker", |b| {
        b.iter(|| {
            let mut t = BodyTracker::new(BodyLen::Chunked);
            let mut used = 0;
            for piece in black_box(&body).chunks(16 * 1024) {
                used += t.advance(piece).unwrap();
            }
            assert!(t.is_done());
            black_box(used)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("framing/response_head");
    g.bench_function("parse_and_classify", |b| {
        b.iter(|| {
            let h = ResponseHead::parse(black_box(RESPONSE)).unwrap().unwrap();
            black_box(response_kind(&h, RESPONSE, Method::Get).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
