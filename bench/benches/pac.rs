//! PAC generation cost: validating a 1,000-entry bypass list and rendering the
//! script, the work the control plane does on every config (re)load.
//!
//! Run: `cargo bench -p msc-bench --bench pac`. Figures live in `perf/pac.md`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use msc_pac::{OnPremiseMode, OnPremiseSpec, Pac, PacSpec, SlotPorts, parse_bypass};

/// 1,000 entries mixing every accepted form in realistic proportions.
fn spec() -> PacSpec {
    let bypass = (0..1000u32)
        .map(|i| match i % 10 {
            0..=3 => format!("host{i}.intra.example.com"),
            4 | 5 => format!("*.dept{i}.example.org"),
            6 => format!("app{i}-*.example.net"),
            7 => format!("http://portal{i}.example.com/*"),
            8 => format!("45.{}.{}.0/24", i / 256, i % 256),
            _ => format!("2001:db8:{i:x}::/48"),
        })
        .collect();
    PacSpec {
        bypass,
        slots: vec![
            SlotPorts {
                http_port: 3128,
                https_port: 3129,
            },
            SlotPorts {
                http_port: 3138,
                https_port: 3139,
            },
        ],
        on_premise: Some(OnPremiseSpec {
            indicator_host: "onprem-indicator.corp.example".into(),
            expected_addresses: vec!["10.9.9.9".into()],
            mode: OnPremiseMode::Proxies(vec!["proxy1.corp.example:8080".into()]),
        }),
        ..PacSpec::default()
    }
}

fn bench(c: &mut Criterion) {
    let spec = spec();
    let mut g = c.benchmark_group("pac_1000_bypass");
    g.bench_function("new_and_render", |b| {
        b.iter(|| Pac::new(black_box(&spec)).expect("valid").render())
    });
    g.bench_function("new", |b| b.iter(|| Pac::new(black_box(&spec)).expect("valid")));
    let pac = Pac::new(&spec).expect("valid");
    g.bench_function("render", |b| b.iter(|| black_box(&pac).render()));
    g.finish();

    // Native evaluation of the same rules, as the client may do per request.
    let rules: Vec<_> = spec.bypass.iter().map(|e| parse_bypass(e).expect("valid")).collect();
    c.bench_function("bypass_matches_1000_rules_miss", |b| {
        b.iter(|| {
            rules
                .iter()
                .any(|r| r.matches(black_box("https://www.example.invalid/"), "www.example.invalid"))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
