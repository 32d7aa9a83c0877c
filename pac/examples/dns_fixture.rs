//! Writes the fixture for `bench/pac/dns-count.sh`: a PAC for a realistic
//! config (1,000 bypass entries of every kind, 2 slots, on-premise indicator)
//! plus URL lists per category and the fake DNS table the counting shim
//! answers from.
//!
//! Usage: `cargo run --release -p msc-pac --example dns_fixture -- OUTDIR`
//!
//! Files: `proxy.pac`, `urls-<category>.txt` (2,000 URLs each),
//! `urls-all.txt` (the 10,000 interleaved), `fake-hosts.txt` (`name address`
//! lines), `indicator.txt` (the indicator name), and `naive.pac`: the same
//! PAC with the bypass step replaced by 1,000 sequential checks using the
//! standard helpers (`==`, `dnsDomainIs`, `shExpMatch`, `isInNet`), the way
//! hand-written PACs do it, to measure what the lookup tables buy.

use std::fmt::Write as _;
use std::path::Path;

use msc_pac::{OnPremiseMode, OnPremiseSpec, Pac, PacSpec, SlotPorts};

const INDICATOR: &str = "onprem-indicator.corp.example";
const PER_CATEGORY: usize = 2000;

fn spec() -> PacSpec {
    let mut bypass = Vec::with_capacity(1000);
    for i in 0..400 {
        bypass.push(format!("host{i}.intra.example.com"));
    }
    for i in 0..250 {
        bypass.push(format!("*.dept{i}.example.org"));
    }
    for i in 0..50 {
        bypass.push(format!("app{i}-*.example.net"));
    }
    for i in 0..50 {
        bypass.push(format!("http://portal{i}.example.com/*"));
    }
    for i in 0..150 {
        bypass.push(format!("45.{i}.0.0/16"));
    }
    for i in 0..100 {
        bypass.push(format!("2001:db8:{i:x}::/48"));
    }
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
            indicator_host: INDICATOR.to_owned(),
            expected_addresses: vec!["10.9.9.9".to_owned()],
            mode: OnPremiseMode::Proxies(vec![
                "proxy1.corp.example:8080".to_owned(),
                "proxy2.corp.example:8080".to_owned(),
            ]),
        }),
        ..PacSpec::default()
    }
}

fn scheme(i: usize) -> &'static str {
    ["http", "https", "https", "wss"][i % 4]
}

/// URL lists by category; every URL is distinct within its list.
fn categories(fake: &mut String) -> Vec<(&'static str, Vec<String>)> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut bypassed = Vec::new();
    let mut nonroutable = Vec::new();
    let mut public = Vec::new();
    for i in 0..PER_CATEGORY {
        let (a, b) = (i / 250, i % 250);
        let s = scheme(i);
        v4.push(match i % 4 {
            0 => format!("{s}://93.184.{a}.{b}/"),
            1 => format!("{s}://10.{a}.{b}.7:8080/"),
            2 => format!("{s}://45.{b}.{a}.1/"),
            _ => format!("{s}://192.168.{a}.{b}/x"),
        });
        v6.push(match i % 4 {
            0 => format!("{s}://[2606:4700:{i:x}::1]/"),
            1 => format!("{s}://[fe80::{i:x}]:8080/"),
            2 => format!("{s}://[2001:db8:{:x}::{i:x}]/", i % 100),
            _ => format!("{s}://[fd00:{i:x}::1]/"),
        });
        bypassed.push(match i % 5 {
            0 => format!("{s}://host{}.intra.example.com/", i % 400),
            1 => format!("{s}://www{i}.dept{}.example.org/", i % 250),
            2 => format!("{s}://dept{}.example.org./", i % 250),
            3 => format!("{s}://app{}-{i}.example.net/", i % 50),
            _ => format!("http://portal{}.example.com/page{i}", i % 50),
        });
        nonroutable.push(if i % 2 == 0 {
            format!("{s}://printer{i}/")
        } else {
            let name = format!("srv{i}.corp.example.net");
            let _ = writeln!(fake, "{name} 10.{a}.{b}.20");
            format!("{s}://{name}/")
        });
        public.push(if i % 2 == 0 {
            let name = format!("www{i}.public.example");
            let _ = writeln!(fake, "{name} 93.184.{a}.{b}");
            format!("{s}://{name}/")
        } else {
            // Never answered by the shim: an unresolvable name.
            format!("{s}://site{i}.nowhere.invalid/")
        });
    }
    vec![
        ("ip-literal-v4", v4),
        ("ip-literal-v6", v6),
        ("bypassed", bypassed),
        ("non-routable-name", nonroutable),
        ("public-name", public),
    ]
}

/// The comparison PAC described in the module docs. Built by splicing a
/// sequential bypass function into the real renderer's output for the same
/// spec without bypass entries, so everything else is identical.
fn naive_pac(spec: &PacSpec) -> String {
    let without = PacSpec {
        bypass: Vec::new(),
        ..spec.clone()
    };
    let base = Pac::new(&without).expect("valid spec").render();
    let marker = "  // 1. Admin bypass list.\n";
    assert!(base.contains(marker), "renderer changed; update naive_pac");
    let mut f = String::from("function mscNaiveBypass(url, h, n, g) {\n");
    for e in &spec.bypass {
        let line = if let Some(d) = e.strip_prefix("*.") {
            format!("  if (h === \"{d}\" || dnsDomainIs(h, \".{d}\")) return true;\n")
        } else if e.contains("://") {
            format!("  if (shExpMatch(url, \"{e}\")) return true;\n")
        } else if e.contains('*') {
            format!("  if (shExpMatch(h, \"{e}\")) return true;\n")
        } else if let Some((net, len)) = e.split_once('/') {
            let len: u32 = len.parse().expect("prefix");
            if net.contains(':') {
                // No standard helper for IPv6 ranges: same check as the real PAC.
                let a: std::net::Ipv6Addr = net.parse().expect("v6");
                let g: Vec<String> = a.segments().iter().map(u16::to_string).collect();
                format!(
                    "  if (g !== null && mscIn6(g, [{len}, {}])) return true;\n",
                    g.join(", ")
                )
            } else {
                let mask = std::net::Ipv4Addr::from(u32::MAX << (32 - len));
                format!("  if (n >= 0 && isInNet(h, \"{net}\", \"{mask}\")) return true;\n")
            }
        } else {
            format!("  if (h === \"{e}\") return true;\n")
        };
        f.push_str(&line);
    }
    f.push_str("  return false;\n}\n");
    base.replace(
        marker,
        &format!("{marker}  if (mscNaiveBypass(url, h, n, g)) return \"DIRECT\";\n"),
    ) + &f
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: dns_fixture OUTDIR");
    let out = Path::new(&out);
    std::fs::create_dir_all(out).expect("create OUTDIR");
    let spec = spec();
    let pac = Pac::new(&spec).expect("valid spec").render();
    std::fs::write(out.join("proxy.pac"), pac).expect("write proxy.pac");
    std::fs::write(out.join("naive.pac"), naive_pac(&spec)).expect("write naive.pac");

    let mut fake = String::new();
    let cats = categories(&mut fake);
    let mut all = String::new();
    for i in 0..PER_CATEGORY {
        for (_, urls) in &cats {
            all.push_str(&urls[i]);
            all.push('\n');
        }
    }
    for (name, urls) in &cats {
        let text = urls.join("\n") + "\n";
        std::fs::write(out.join(format!("urls-{name}.txt")), text).expect("write urls");
    }
    std::fs::write(out.join("urls-all.txt"), all).expect("write urls-all.txt");
    std::fs::write(out.join("fake-hosts.txt"), fake).expect("write fake-hosts.txt");
    std::fs::write(out.join("indicator.txt"), format!("{INDICATOR}\n")).expect("write indicator");
}
