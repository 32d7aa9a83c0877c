//! Evaluates generated PACs with pactester (Debian `libpacparser1`), an
//! engine that shares no code with this crate, and checks the exact string
//! `FindProxyForURL` returns for every rule.
//!
//! How pactester (pacparser 1.3.6) is driven, and what we rely on:
//! - `pactester -p FILE -f LIST` reads one URL per line, skips leading blanks,
//!   cuts each line at the first space/tab/CR/LF, echoes `#` lines, and prints
//!   `URL : RESULT` per URL. It derives `host` itself: the text after `://` up
//!   to the next `/`, `:` or end. So `http://[fe80::1]/` gets host `[fe80`
//!   (cut at the first ':'), which the PAC must recover from the URL. A URL
//!   whose host it cannot derive is *silently skipped*, so we count lines.
//! - `pactester -p FILE -u URL -h HOST` passes `host` verbatim; we use it for
//!   browser-style hosts (`fe80::1` without brackets, or `[fe80::1]`).
//! - pacparser calls the lower-case `findProxyForURL(url, host)` wrapper,
//!   which calls our `FindProxyForURL`; a JavaScript error is printed on stderr
//!   and the exit status is 1, so both are checked.
//! - `dnsResolve` uses getaddrinfo and returns IPv4 only (`dnsResolve("::1")`
//!   is null). getaddrinfo also accepts inet_aton shorthand, so the dotted
//!   *name* `127.1` resolves to 127.0.0.1 without DNS traffic: that is how we
//!   exercise "a resolved address in a non-routable range" (`localhost` itself
//!   has no dot, so the plain-name rule decides it before any lookup).
//!
//! If pactester is missing these tests fail: CI installs it with
//! `apt-get install libpacparser1`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use msc_pac::{OnPremiseMode, OnPremiseSpec, Pac, PacSpec, SlotPorts, is_non_routable};

/// pactester evaluates thousands of URLs per second; anything near this means
/// a DNS lookup is hanging, which must fail the test rather than stall CI.
const PACTESTER_TIMEOUT: Duration = Duration::from_secs(120);

fn pactester_bin() -> String {
    let bin = std::env::var("PACTESTER").unwrap_or_else(|_| "pactester".to_owned());
    match Command::new(&bin).arg("-v").output() {
        Ok(o) if o.status.success() => bin,
        Ok(o) => panic!(
            "'{bin} -v' failed ({}): {}. Install it with: apt-get install libpacparser1",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "pactester not found ({e}). These tests need the real PAC engine: \
             apt-get install libpacparser1 (or set PACTESTER=/path/to/pactester)"
        ),
    }
}

/// Runs pactester with `args`, bounded in time; returns stdout, failing on a
/// non-zero exit or anything on stderr (JavaScript errors land there).
#[expect(
    clippy::disallowed_methods,
    reason = "test-only polling of a child process on the test thread, not a runtime worker"
)]
fn run_pactester(args: &[&str]) -> String {
    let mut child = Command::new(pactester_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pactester");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait pactester").is_some() {
            break;
        }
        if start.elapsed() > PACTESTER_TIMEOUT {
            let _ = child.kill();
            panic!("pactester {args:?} exceeded {PACTESTER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("pactester output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "pactester {args:?}: {}\nstderr: {stderr}\nstdout: {stdout}",
        out.status
    );
    stdout
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create temp file");
    f.write_all(text.as_bytes()).expect("write temp file");
    p.to_str().expect("utf-8 temp path").to_owned()
}

/// Evaluates many URLs in one pactester process (`-f`); host derived by
/// pactester from each URL.
fn eval_urls(pac: &str, urls: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let pac_path = write_file(dir.path(), "proxy.pac", pac);
    let list = write_file(dir.path(), "urls.txt", &(urls.join("\n") + "\n"));
    let out = run_pactester(&["-p", &pac_path, "-f", &list]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        urls.len(),
        "pactester skipped URLs it could not parse:\n{out}"
    );
    lines
        .iter()
        .zip(urls)
        .map(|(line, url)| {
            let rest = line
                .strip_prefix(url)
                .and_then(|r| r.strip_prefix(" : "))
                .unwrap_or_else(|| panic!("unexpected pactester line for {url}: {line}"));
            rest.to_owned()
        })
        .collect()
}

/// One URL with an explicit `host` argument, as a browser would pass it.
fn eval_with_host(pac: &str, url: &str, host: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let pac_path = write_file(dir.path(), "proxy.pac", pac);
    let out = run_pactester(&["-p", &pac_path, "-u", url, "-h", host]);
    out.trim_end_matches('\n').to_owned()
}

/// Appended to a PAC under test: replaces the engine's `dnsResolve` with a
/// fixed table and makes `FindProxyForURL` report the names it looked up, as
/// `RESULT | name,name`. Hermetic (no resolver traffic, no 5 s resolver
/// retries) and it counts lookups per call exactly. Only the engine's DNS is
/// replaced; the generated code runs unchanged.
fn with_fake_dns(pac: &str, answers: &[(&str, &str)]) -> String {
    let table: Vec<String> = answers.iter().map(|(n, a)| format!("\"{n}\": \"{a}\"")).collect();
    format!(
        "{pac}\n// --- test harness ---\n\
         var mscTestDns = {{{}}};\n\
         var mscTestLog = [];\n\
         dnsResolve = function (h) {{\n\
         \x20 mscTestLog.push(h);\n\
         \x20 var r = mscTestDns[h];\n\
         \x20 return typeof r === \"string\" ? r : null;\n\
         }};\n\
         var mscTestInner = FindProxyForURL;\n\
         FindProxyForURL = function (url, host) {{\n\
         \x20 mscTestLog = [];\n\
         \x20 var r = mscTestInner(url, host);\n\
         \x20 return r + \" | \" + mscTestLog.join(\",\");\n\
         }};\n",
        table.join(", ")
    )
}

/// Splits a harness result into the PAC's answer and the names it resolved.
fn split_logged(s: &str) -> (String, Vec<String>) {
    let (r, names) = s.split_once(" | ").expect("harness output");
    let names = names.split(',').filter(|n| !n.is_empty()).map(str::to_owned).collect();
    (r.to_owned(), names)
}

/// `(url, explicit host or None for pactester's own, expected result)`.
type Case = (&'static str, Option<&'static str>, &'static str);

/// Evaluates all cases (batched where possible) and reports every mismatch
/// at once, so one run shows the whole picture.
fn check(name: &str, spec: &PacSpec, cases: &[Case]) -> usize {
    let pac = Pac::new(spec).unwrap_or_else(|e| panic!("{name}: {e}")).render();
    let batch: Vec<&str> = cases.iter().filter(|c| c.1.is_none()).map(|c| c.0).collect();
    let mut batch_results = eval_urls(&pac, &batch).into_iter();
    let mut failures = Vec::new();
    for &(url, host, want) in cases {
        let got = match host {
            None => batch_results.next().expect("one result per batched URL"),
            Some(h) => eval_with_host(&pac, url, h),
        };
        if got != want {
            failures.push(format!("  {url} (host {host:?}): got '{got}', want '{want}'"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases wrong:\n{}\n--- PAC ---\n{pac}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

const HTTP2: &str = "PROXY 127.0.0.1:8080; PROXY 127.0.0.1:8081; DIRECT";
const TLS2: &str = "PROXY 127.0.0.1:8443; PROXY 127.0.0.1:8444; DIRECT";

fn two_slots() -> Vec<SlotPorts> {
    vec![
        SlotPorts {
            http_port: 8080,
            https_port: 8443,
        },
        SlotPorts {
            http_port: 8081,
            https_port: 8444,
        },
    ]
}

fn main_spec() -> PacSpec {
    PacSpec {
        bypass: [
            "intranet.example.com",
            "*.corp.example",
            "wiki*.example.net",
            "http://portal.example.org/*",
            // Public ranges, so DIRECT here can only come from the bypass rule.
            "8.8.4.0/24",
            "2001:db8::/32",
        ]
        .map(String::from)
        .to_vec(),
        slots: two_slots(),
        ..PacSpec::default()
    }
}

#[test]
fn pactester_is_installed() {
    let out = Command::new(pactester_bin()).arg("-v").output().unwrap();
    assert!(!out.stdout.is_empty());
}

#[test]
fn rules_in_order_against_pactester() {
    let cases: &[Case] = &[
        // 1. Bypass: exact host, case and trailing dot, with ports.
        ("http://intranet.example.com/", None, "DIRECT"),
        ("http://INTRANET.Example.COM./x", None, "DIRECT"),
        ("https://intranet.example.com:8443/", None, "DIRECT"),
        ("http://x.intranet.example.com/", None, HTTP2),
        // Suffix: the bare domain too, never a look-alike.
        ("http://corp.example/", None, "DIRECT"),
        ("http://a.b.corp.example:81/", None, "DIRECT"),
        ("https://CORP.EXAMPLE./", None, "DIRECT"),
        ("http://notcorp.example/", None, HTTP2),
        ("http://corp.example.invalid/", None, HTTP2),
        // Host glob.
        ("http://wiki1.example.net/", None, "DIRECT"),
        ("http://wiki.eu.example.net/", None, "DIRECT"),
        ("http://mywiki.example.net/", None, HTTP2),
        // URL pattern: case-insensitive, scheme and port are part of it.
        ("http://portal.example.org/app/x?y=1", None, "DIRECT"),
        ("HTTP://PORTAL.EXAMPLE.ORG/", None, "DIRECT"),
        ("https://portal.example.org/", None, TLS2),
        ("http://portal.example.org:8080/", None, HTTP2),
        // CIDR v4 and v6 (public ranges).
        ("http://8.8.4.4/", None, "DIRECT"),
        ("https://8.8.4.255:443/", None, "DIRECT"),
        ("http://8.8.8.8/", None, HTTP2),
        ("http://[2001:db8::1]/", None, "DIRECT"),
        ("http://[2001:DB8:0:0::abcd]:8080/x", None, "DIRECT"),
        ("http://[2001:db9::1]/", None, HTTP2),
        ("wss://[2001:db9::1]/", None, TLS2),
        ("http://[2001:db8::1]/", Some("2001:db8::1"), "DIRECT"),
        ("http://[2001:db8::1]/", Some("[2001:db8::1]"), "DIRECT"),
        // 2. Non-routable IPv4 literals, each range and its neighbours.
        ("http://0.1.2.3/", None, "DIRECT"),
        ("http://10.0.0.1/", None, "DIRECT"),
        ("http://10.255.255.255:8080/", None, "DIRECT"),
        ("http://100.64.0.1/", None, "DIRECT"),
        ("http://100.127.255.255/", None, "DIRECT"),
        ("http://100.63.255.255/", None, HTTP2),
        ("http://100.128.0.1/", None, HTTP2),
        ("http://127.0.0.1:8080/", None, "DIRECT"),
        ("http://169.254.169.254/latest", None, "DIRECT"),
        ("http://172.16.0.1/", None, "DIRECT"),
        ("http://172.31.255.254/", None, "DIRECT"),
        ("http://172.32.0.1/", None, HTTP2),
        ("http://192.0.0.8/", None, "DIRECT"),
        ("http://192.0.2.1/", None, "DIRECT"),
        ("http://192.168.1.1/", None, "DIRECT"),
        ("http://198.18.0.1/", None, "DIRECT"),
        ("http://198.19.255.255/", None, "DIRECT"),
        ("http://198.51.100.10/", None, "DIRECT"),
        ("http://203.0.113.5/", None, "DIRECT"),
        ("http://224.0.0.251/", None, "DIRECT"),
        ("http://239.255.255.250/", None, "DIRECT"),
        ("http://240.0.0.1/", None, "DIRECT"),
        ("http://255.255.255.255/", None, "DIRECT"),
        ("http://127.0.0.1./", None, "DIRECT"),
        ("https://1.1.1.1/", None, TLS2),
        // An octet over 255 is a broken literal: no DNS, not in any range.
        ("http://999.1.1.1/", None, HTTP2),
        // Non-routable IPv6 literals (pactester passes "[fe80" etc.).
        ("http://[::1]/", None, "DIRECT"),
        ("http://[::1]:8080/", None, "DIRECT"),
        ("http://[fe80::1]:8080/", None, "DIRECT"),
        ("http://[febf::1]/", None, "DIRECT"),
        ("http://[fc00::1]/", None, "DIRECT"),
        ("http://[fd12:3456::1]/", None, "DIRECT"),
        ("http://[::ffff:192.168.0.1]/", None, "DIRECT"),
        ("http://[::ffff:8.8.8.8]/", None, HTTP2),
        ("http://[2606:4700::1111]/", None, HTTP2),
        ("https://[2606:4700::1111]:443/", None, TLS2),
        ("http://[fec0::1]/", None, HTTP2),
        ("http://[fe80::1]/", Some("fe80::1"), "DIRECT"),
        ("http://[fe80::1]/", Some("[fe80::1]"), "DIRECT"),
        ("http://[2606:4700::1]/", Some("2606:4700::1"), HTTP2),
        // Plain host names (no dot), also after the trailing dot is cut.
        ("http://localhost/", None, "DIRECT"),
        ("http://localhost./", None, "DIRECT"),
        ("http://intranet/", None, "DIRECT"),
        ("https://WPAD:8443/", None, "DIRECT"),
        // Dotted names resolved by the system into non-routable ranges.
        ("http://127.1/", None, "DIRECT"),
        ("http://10.1:8080/", None, "DIRECT"),
        ("http://0x7f.0.0.1/", None, "DIRECT"),
        ("http://0177.0.0.1/", None, "DIRECT"),
        // 4. Everything else goes to the slots; the scheme picks the port.
        ("http://unknown-host.invalid/", None, HTTP2),
        ("https://unknown-host.invalid/", None, TLS2),
        ("HTTPS://Upper.INVALID./", None, TLS2),
        ("ws://chat.invalid/socket", None, HTTP2),
        ("wss://chat.invalid/socket", None, TLS2),
        ("WSS://chat.invalid/socket", None, TLS2),
        ("ftp://files.invalid/", None, HTTP2),
        ("http://unknown-host.invalid:8443/", None, HTTP2),
        ("https://unknown-host.invalid:80/", None, TLS2),
    ];
    let n = check("main", &main_spec(), cases);
    assert!(n >= 60, "keep at least 60 cases, have {n}");
}

#[test]
fn fail_closed_single_slot_and_ipv6_proxy_host() {
    let closed = PacSpec {
        slots: vec![SlotPorts {
            http_port: 3128,
            https_port: 3128,
        }],
        fail_open: false,
        ..main_spec()
    };
    check(
        "fail-closed",
        &closed,
        &[
            ("http://unknown-host.invalid/", None, "PROXY 127.0.0.1:3128"),
            ("https://unknown-host.invalid/", None, "PROXY 127.0.0.1:3128"),
            ("http://10.0.0.1/", None, "DIRECT"),
            ("http://intranet.example.com/", None, "DIRECT"),
        ],
    );
    let v6 = PacSpec {
        proxy_host: "::1".into(),
        slots: vec![
            SlotPorts {
                http_port: 1,
                https_port: 2,
            },
            SlotPorts {
                http_port: 3,
                https_port: 4,
            },
            SlotPorts {
                http_port: 5,
                https_port: 6,
            },
        ],
        ..PacSpec::default()
    };
    check(
        "ipv6-proxy-host",
        &v6,
        &[
            (
                "http://unknown-host.invalid/",
                None,
                "PROXY [::1]:1; PROXY [::1]:3; PROXY [::1]:5; DIRECT",
            ),
            (
                "wss://unknown-host.invalid/",
                None,
                "PROXY [::1]:2; PROXY [::1]:4; PROXY [::1]:6; DIRECT",
            ),
        ],
    );
}

fn with_on_premise(indicator: &str, expected: &[&str], mode: OnPremiseMode, open: bool) -> PacSpec {
    PacSpec {
        on_premise: Some(OnPremiseSpec {
            indicator_host: indicator.to_owned(),
            expected_addresses: expected.iter().map(|s| (*s).to_owned()).collect(),
            mode,
        }),
        fail_open: open,
        ..main_spec()
    }
}

#[test]
fn on_and_off_premise() {
    let corp = || OnPremiseMode::Proxies(vec!["proxy1.corp:8080".into(), "proxy2.corp:8080".into()]);
    // `localhost` resolves to 127.0.0.1 here, so it simulates an indicator.
    let on_direct = with_on_premise("localhost", &["127.0.0.1"], OnPremiseMode::Direct, true);
    check(
        "on-premise direct",
        &on_direct,
        &[
            ("http://unknown-host.invalid/", None, "DIRECT"),
            ("https://8.8.8.8/", None, "DIRECT"),
            ("http://10.0.0.1/", None, "DIRECT"),
        ],
    );
    let on_proxies = with_on_premise("localhost", &["10.9.9.9", "127.0.0.1"], corp(), true);
    check(
        "on-premise proxies",
        &on_proxies,
        &[
            (
                "http://unknown-host.invalid/",
                None,
                "PROXY proxy1.corp:8080; PROXY proxy2.corp:8080; DIRECT",
            ),
            (
                "https://[2606:4700::1]/",
                None,
                "PROXY proxy1.corp:8080; PROXY proxy2.corp:8080; DIRECT",
            ),
            // Earlier rules still win on premise.
            ("http://intranet.example.com/", None, "DIRECT"),
            ("http://192.168.0.1/", None, "DIRECT"),
            ("http://printer/", None, "DIRECT"),
        ],
    );
    let on_closed = with_on_premise("localhost", &["127.0.0.1"], corp(), false);
    check(
        "on-premise proxies fail-closed",
        &on_closed,
        &[(
            "http://unknown-host.invalid/",
            None,
            "PROXY proxy1.corp:8080; PROXY proxy2.corp:8080",
        )],
    );
    // Resolves, but not to the expected address: off premise.
    let off = with_on_premise("localhost", &["10.9.9.9"], corp(), true);
    check(
        "off-premise (wrong address)",
        &off,
        &[
            ("http://unknown-host.invalid/", None, HTTP2),
            ("https://unknown-host.invalid/", None, TLS2),
        ],
    );
    // Does not resolve at all: off premise.
    let gone = with_on_premise("onprem-indicator.invalid", &["10.9.9.9"], OnPremiseMode::Direct, true);
    check(
        "off-premise (indicator unresolvable)",
        &gone,
        &[
            ("http://unknown-host.invalid/", None, HTTP2),
            ("wss://unknown-host.invalid/", None, TLS2),
        ],
    );
}

/// A large mixed list: every entry kind, checked against the native rules and
/// the non-routable table as an oracle (URLs chosen to need no DNS verdict).
#[test]
fn thousand_entry_bypass_list() {
    let mut bypass = Vec::new();
    for i in 0..1000u32 {
        bypass.push(match i % 6 {
            0 => format!("host{i}.example.com"),
            1 => format!("*.dom{i}.example"),
            2 => format!("93.{}.{}.0/24", i / 256, i % 256),
            3 => format!("http://intranet{i}.example.org/*"),
            4 => format!("2001:db8:{i:x}::/48"),
            _ => format!("app{i}-*.example.net"),
        });
    }
    let spec = PacSpec {
        bypass,
        slots: two_slots(),
        ..PacSpec::default()
    };
    let pac = Pac::new(&spec).unwrap();
    let text = pac.render();
    assert_eq!(text, Pac::new(&spec).unwrap().render(), "deterministic");

    let mut urls: Vec<String> = Vec::new();
    for i in (0..1000u32).step_by(7) {
        urls.push(match i % 6 {
            0 => format!("http://HOST{i}.example.com./"),
            1 => format!("https://a.b.dom{i}.example/x"),
            2 => format!("http://93.{}.{}.77:8080/", i / 256, i % 256),
            3 => format!("http://intranet{i}.example.org/path"),
            4 => format!("https://[2001:db8:{i:x}:1::5]/"),
            _ => format!("http://app{i}-eu.example.net/"),
        });
        // Near misses of each kind.
        urls.push(match i % 6 {
            0 => format!("http://xhost{i}.example.com/"),
            1 => format!("https://dom{i}.example.invalid/"),
            2 => format!("http://93.{}.{}.1/", 4 + i / 256, i % 256),
            3 => format!("https://intranet{i}.example.org/path"),
            4 => format!("https://[2001:db9:{i:x}::5]/"),
            _ => format!("http://app{i}.example.net/"),
        });
    }
    urls.push("http://10.20.30.40/".into());
    urls.push("http://[fe80::2]/".into());
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    // Nothing resolves: the verdicts below must come from text alone.
    let logged = eval_urls(&with_fake_dns(&text, &[]), &url_refs);

    let mut direct = 0;
    for (url, logged) in urls.iter().zip(&logged) {
        let (got, lookups) = split_logged(logged);
        let host = pactester_host(url);
        let bypassed = pac.bypass_rules().iter().any(|r| r.matches(url, host));
        let literal_nr = literal_ip(url).is_some_and(is_non_routable);
        let want = if bypassed || literal_nr {
            "DIRECT"
        } else if url.starts_with("https:") {
            TLS2
        } else {
            HTTP2
        };
        assert_eq!(got, want, "{url}");
        // Bypassed hosts and literals never reach DNS; other names once.
        let want_lookups = usize::from(want != "DIRECT" && literal_ip(url).is_none());
        assert_eq!(lookups.len(), want_lookups, "{url}: {lookups:?}");
        direct += usize::from(want == "DIRECT");
    }
    // One hit per near miss, plus the two non-routable literals.
    assert_eq!(direct, (urls.len() - 2) / 2 + 2);
}

/// The host pactester derives: after `://`, up to `/`, `:` or the end.
fn pactester_host(url: &str) -> &str {
    let rest = &url[url.find("://").expect("url") + 3..];
    let end = rest.find(['/', ':']).unwrap_or(rest.len());
    &rest[..end]
}

fn literal_ip(url: &str) -> Option<std::net::IpAddr> {
    let rest = &url[url.find("://").expect("url") + 3..];
    if let Some(v6) = rest.strip_prefix('[') {
        return v6[..v6.find(']')?].parse().ok();
    }
    let end = rest.find(['/', ':']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Valid-but-awkward admin text still yields a script that parses and runs.
#[test]
fn awkward_valid_entries_parse_and_match() {
    let spec = PacSpec {
        bypass: [
            "http://odd.example/a+b(c)$[d];e&f=%20,~!@*",
            "*://*.odd.example/?x*",
            "_srv._tcp.example",
            "a?c.example",
            "*.xn--bcher-kva.example",
            "0.0.0.0/0",
        ]
        .map(String::from)
        .to_vec(),
        slots: two_slots(),
        ..PacSpec::default()
    };
    check(
        "awkward",
        &spec,
        &[
            ("http://odd.example/a+b(c)$[d];e&f=%20,~!@/tail", None, "DIRECT"),
            ("http://odd.example/aab(c)$[d];e&f=%20,~!@/tail", None, HTTP2),
            ("https://w.odd.example/?xyz", None, "DIRECT"),
            ("https://w.odd.example/x", None, TLS2),
            ("http://_srv._tcp.example/", None, "DIRECT"),
            ("http://abc.example/", None, "DIRECT"),
            ("http://ac.example/", None, HTTP2),
            ("http://shop.xn--bcher-kva.example/", None, "DIRECT"),
            // 0.0.0.0/0 covers every IPv4 literal, but no name and no IPv6.
            ("http://8.8.8.8/", None, "DIRECT"),
            ("http://[2606:4700::1]/", None, HTTP2),
        ],
    );
}

/// Which names each call resolves: none for literals, bypassed hosts and
/// plain names; the host at most once, and the indicator at most once, only
/// when no earlier rule decided. Also covers resolved addresses in IPv6 and
/// IPv4-mapped form (engines other than pacparser may return those).
#[test]
fn dns_lookups_are_minimal_and_resolved_ranges_apply() {
    const IND: &str = "onprem-indicator.corp.example";
    let corp = OnPremiseMode::Proxies(vec!["proxy1.corp:8080".into()]);
    let spec = with_on_premise(IND, &["10.9.9.9"], corp, true);
    let pac = Pac::new(&spec).unwrap().render();
    let answers = [
        ("printer.corp.example.net", "10.1.2.3"),
        ("cgnat.example.net", "100.64.1.1"),
        ("linklocal.example.net", "169.254.0.5"),
        ("www.public.example", "93.184.216.34"),
        ("v6private.example", "fd00::1"),
        ("v6public.example", "2606:4700::1111"),
        ("mapped.example", "::ffff:10.0.0.1"),
        ("garbage.example", "not-an-address"),
    ];
    let off = |name: &str| -> String { format!("{name}|{IND}") };
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        // (url, want result, want lookups joined by '|')
        ("http://8.8.8.8/", HTTP2, IND),
        ("https://[2606:4700::1]:443/", TLS2, IND),
        ("http://999.1.1.1/", HTTP2, IND),
        ("http://10.1.2.3/", "DIRECT", ""),
        ("http://[fe80::1]/", "DIRECT", ""),
        ("http://8.8.4.4/", "DIRECT", ""),
        ("http://[2001:db8::5]/", "DIRECT", ""),
        ("http://intranet.example.com/", "DIRECT", ""),
        ("http://a.corp.example/", "DIRECT", ""),
        ("http://wiki9.example.net/", "DIRECT", ""),
        ("http://portal.example.org/x", "DIRECT", ""),
        ("http://printer/", "DIRECT", ""),
        ("http://printer.corp.example.net/", "DIRECT", "printer.corp.example.net"),
        ("http://PRINTER.Corp.Example.NET./", "DIRECT", "printer.corp.example.net"),
        ("http://cgnat.example.net/", "DIRECT", "cgnat.example.net"),
        ("http://linklocal.example.net/", "DIRECT", "linklocal.example.net"),
        ("http://v6private.example/", "DIRECT", "v6private.example"),
        ("http://mapped.example/", "DIRECT", "mapped.example"),
        ("http://www.public.example/", HTTP2, &off("www.public.example")),
        ("https://v6public.example/", TLS2, &off("v6public.example")),
        ("http://garbage.example/", HTTP2, &off("garbage.example")),
        ("wss://nowhere.invalid/", TLS2, &off("nowhere.invalid")),
    ];
    let urls: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let got = eval_urls(&with_fake_dns(&pac, &answers), &urls);
    for ((url, want, want_dns), logged) in cases.iter().zip(&got) {
        let (r, names) = split_logged(logged);
        assert_eq!(&r, want, "{url}");
        assert_eq!(names.join("|"), *want_dns, "{url}");
    }

    // On premise: the same calls, with the indicator answering as expected.
    let on = [("printer.corp.example.net", "10.1.2.3"), (IND, "10.9.9.9")];
    let got = eval_urls(
        &with_fake_dns(&pac, &on),
        &[
            "http://8.8.8.8/",
            "https://www.public.example/",
            "http://printer.corp.example.net/",
        ],
    );
    let got: Vec<(String, Vec<String>)> = got.iter().map(|s| split_logged(s)).collect();
    let onp = "PROXY proxy1.corp:8080; DIRECT";
    assert_eq!(got[0], (onp.to_owned(), vec![IND.to_owned()]));
    assert_eq!(
        got[1],
        (onp.to_owned(), vec!["www.public.example".to_owned(), IND.to_owned()])
    );
    assert_eq!(
        got[2],
        ("DIRECT".to_owned(), vec!["printer.corp.example.net".to_owned()])
    );
}

/// Every entry the validator accepts, with each ASCII character (and some
/// notorious Unicode ones) in each position of each form, goes into one PAC:
/// pactester must load it and run it without a JavaScript error.
#[test]
fn all_accepted_odd_characters_load_in_pactester() {
    let mut bypass = Vec::new();
    let chars = (0u32..0x80)
        .chain([0x85, 0x2028, 0x2029, 0x200b, 0x202e, 0xfeff])
        .filter_map(char::from_u32);
    for c in chars {
        for entry in [
            format!("a{c}b.example"),
            format!("*.a{c}b.example"),
            format!("a{c}*.example"),
            format!("http://x.example/{c}*"),
            format!("{c}"),
        ] {
            // A lone "*" or "?" would bypass everything and hide the checks.
            if entry.len() > 1 && msc_pac::parse_bypass(&entry).is_ok() {
                bypass.push(entry);
            }
        }
    }
    assert!(bypass.len() > 100, "{}", bypass.len());
    let spec = PacSpec {
        bypass,
        slots: two_slots(),
        ..PacSpec::default()
    };
    check(
        "odd characters",
        &spec,
        &[
            ("http://x.example/(z", None, "DIRECT"),
            ("http://x.example/$", None, "DIRECT"),
            ("http://x.example/[a]", None, "DIRECT"),
            ("http://a_b.example/", None, "DIRECT"),
            ("http://w.a-b.example/", None, "DIRECT"),
            ("http://unknown-host.invalid/", None, HTTP2),
        ],
    );
}
