//! Fuzz harness for bypass-rule validation and the spec checks of
//! [`crate::Pac::new`].
//!
//! Input: UTF-8 text, one bypass entry per line. Every entry is parsed and,
//! when valid, matched against the first two lines as URL and host; the
//! whole list must validate as a spec exactly when every entry parses, and a
//! valid spec must render. The lines are also tried as proxy host, on-premise
//! indicator, expected addresses and proxies. The cargo-fuzz target
//! `fuzz/fuzz_targets/pac_bypass.rs` is a one-line call.
//!
//! Compiled only for `cargo fuzz` (`--cfg fuzzing`) and tests.

use crate::{OnPremiseMode, OnPremiseSpec, Pac, PacSpec, SlotPorts, parse_bypass};

pub fn fuzz_bypass(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let url = lines.first().copied().unwrap_or("");
    let host = lines.get(1).copied().unwrap_or("");
    let mut all_valid = true;
    for line in &lines {
        match parse_bypass(line) {
            Ok(rule) => {
                let _ = rule.matches(url, host);
                let _ = rule.matches(line, line);
                assert_eq!(parse_bypass(line), Ok(rule), "parsing is not deterministic");
            }
            Err(reason) => {
                assert!(!reason.is_empty(), "empty reason for {line:?}");
                all_valid = false;
            }
        }
    }
    let slots = vec![SlotPorts {
        http_port: 3128,
        https_port: 3129,
    }];
    let spec = PacSpec {
        bypass: lines.iter().map(|s| (*s).to_owned()).collect(),
        slots: slots.clone(),
        ..PacSpec::default()
    };
    match Pac::new(&spec) {
        Ok(pac) => {
            assert!(all_valid, "Pac::new accepted an entry parse_bypass refuses");
            assert!(pac.bypass_rules().len() <= lines.len());
            let script = pac.render();
            assert!(script.contains("FindProxyForURL"));
        }
        Err(e) => {
            assert!(!all_valid, "Pac::new refused entries that all parse: {e}");
            let _ = e.to_string();
        }
    }

    // The other admin-written strings.
    let spec = PacSpec {
        bypass: Vec::new(),
        slots,
        proxy_host: url.to_owned(),
        on_premise: Some(OnPremiseSpec {
            indicator_host: host.to_owned(),
            expected_addresses: lines.iter().skip(2).take(2).map(|s| (*s).to_owned()).collect(),
            mode: if lines.len() > 4 {
                OnPremiseMode::Proxies(lines[4..].iter().map(|s| (*s).to_owned()).collect())
            } else {
                OnPremiseMode::Direct
            },
        }),
        fail_open: data.len().is_multiple_of(2),
    };
    match Pac::new(&spec) {
        Ok(pac) => {
            let _ = pac.render();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: &[&str] = &[
        "http://intranet.example.com/*\nintranet.example.com\n*.example.com\n.corp\nintranet*.corp\n192.168.*\n10.1.0.0/16\n2001:db8::/32\n[fe80::1]\n127.0.0.1",
        "127.0.0.1\nwpad.corp\n10.0.0.1\n::1\nproxy.corp:8080\n[2001:db8::2]:3128",
        "a?b*c*d*e*f*g*h\n*.\n.\n*\n/\n::/0\n1.2.3.4/33\nhttp://\n</script>\n\"'\\",
    ];

    #[test]
    fn bypass_seeds_and_mutations() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x2545_F491_4F6C_DD1D);
        let mut next = move || rand::Rng::random::<u64>(&mut rng);
        let pick = |r: u64, n: usize| usize::try_from(r % (n as u64).max(1)).unwrap_or(0);
        const CHARS: &[char] = &[
            '*', '?', '.', ':', '/', '[', ']', '\n', '0', 'f', '%', ' ', 'é', '\u{0}', '<', '"',
        ];
        for s in SEEDS {
            fuzz_bypass(s.as_bytes());
        }
        for _ in 0..3000 {
            let mut v: Vec<char> = SEEDS[pick(next(), SEEDS.len())].chars().collect();
            for _ in 0..1 + pick(next(), 4) {
                let r = next();
                let at = pick(r >> 8, v.len() + 1);
                match r % 3 {
                    0 => v.insert(at, CHARS[pick(r >> 32, CHARS.len())]),
                    1 if at < v.len() => {
                        v.remove(at);
                    }
                    _ => v.truncate(at),
                }
            }
            fuzz_bypass(v.into_iter().collect::<String>().as_bytes());
        }
        fuzz_bypass(&[0xff, b'\n']);
        fuzz_bypass("x".repeat(crate::MAX_ENTRY_LEN + 1).as_bytes());
    }
}
