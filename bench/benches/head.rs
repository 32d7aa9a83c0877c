//! Request-head parsing: msc's parser (httparse plus the proxy's target
//! checks, spans into the buffer) against bare `httparse::Request::parse` on
//! the same bytes, in the same run. The ratio is msc's overhead.
//!
//! Run: `cargo bench -p msc-bench --bench head`. Figures: `perf/benches.md`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use msc_io::head::{MAX_HEADERS, RequestHead};

const BROWSER_GET: &[u8] = b"GET http://www.example.com/assets/app.js?v=12345 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: http://www.example.com/index.html\r\n\
Proxy-Connection: keep-alive\r\n\
Cookie: session=0123456789abcdef0123456789abcdef; theme=dark; consent=yes\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\
Priority: u=2\r\n\r\n";

const CONNECT: &[u8] = b"CONNECT www.example.com:443 HTTP/1.1\r\n\
Host: www.example.com:443\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0\r\n\
Proxy-Connection: keep-alive\r\n\r\n";

fn bench(c: &mut Criterion) {
    for (name, head) in [("browser_get", BROWSER_GET), ("connect", CONNECT)] {
        let mut g = c.benchmark_group(format!("head/{name}"));
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function("httparse_baseline", |b| {
            b.iter(|| {
                let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut r = httparse::Request::new(&mut hs);
                black_box(r.parse(black_box(head)).unwrap());
            })
        });
        g.bench_function("msc", |b| {
            b.iter(|| black_box(RequestHead::parse(black_box(head)).unwrap()))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
