//! Validation and rendering tests that need no PAC engine; evaluation against
//! a real engine lives in `tests/pactester.rs`.

use super::*;

fn spec() -> PacSpec {
    PacSpec {
        bypass: vec![],
        slots: vec![SlotPorts {
            http_port: 3128,
            https_port: 3129,
        }],
        ..PacSpec::default()
    }
}

fn err(s: &PacSpec) -> String {
    Pac::new(s).unwrap_err().to_string()
}

fn with_bypass(entries: &[&str]) -> PacSpec {
    PacSpec {
        bypass: entries.iter().map(|s| (*s).to_owned()).collect(),
        ..spec()
    }
}

fn on_prem(indicator: &str, expected: &[&str], mode: OnPremiseMode) -> PacSpec {
    PacSpec {
        on_premise: Some(OnPremiseSpec {
            indicator_host: indicator.to_owned(),
            expected_addresses: expected.iter().map(|s| (*s).to_owned()).collect(),
            mode,
        }),
        ..spec()
    }
}

#[test]
fn default_spec_is_fail_open_on_loopback_without_slots() {
    let d = PacSpec::default();
    assert!(d.fail_open);
    assert_eq!(d.proxy_host, "127.0.0.1");
    assert_eq!(err(&d), "slots: at least one slot is required");
}

#[test]
fn bypass_errors_name_the_entry() {
    let s = with_bypass(&["a.example", "b.example", "c.example", "10.0.0.0/33"]);
    assert_eq!(err(&s), "bypass[3] '10.0.0.0/33': prefix length 33 exceeds 32");
    let e = Pac::new(&s).unwrap_err();
    assert_eq!(e.field(), "bypass[3]");
    assert_eq!(e.value(), Some("10.0.0.0/33"));
    assert_eq!(e.reason(), "prefix length 33 exceeds 32");
    assert_eq!(err(&with_bypass(&[""])), "bypass[0] '': empty entry");
    assert!(err(&with_bypass(&["ok.example", "10.0.0/8"])).starts_with("bypass[1] '10.0.0/8': "));
    assert!(err(&with_bypass(&["2001:db8::/129"])).ends_with("prefix length 129 exceeds 128"));
}

#[test]
fn injection_attempts_are_rejected_in_every_field() {
    let attacks = [
        r#"evil.com"; alert(1); ""#,
        "evil.com'; alert(1); '",
        "evil.com\n}; function FindProxyForURL(){return \"DIRECT\"}",
        "evil.com\\",
        "</script><script>alert(1)</script>",
        "http://x/</script>",
        "evil.com\u{2028}alert(1)",
        "evil.com\u{0}",
        "evil.com\u{202e}moc",
        "evil\u{ff0e}com",
        "evil.com*/",
    ];
    for a in attacks {
        let e = err(&with_bypass(&[a]));
        assert!(e.starts_with("bypass[0] '"), "{a:?}: {e}");
        // The echo itself is sanitised: one line.
        assert!(!e.contains('\n') && !e.contains('\u{2028}'), "{e}");

        let s = PacSpec {
            proxy_host: a.to_owned(),
            ..spec()
        };
        assert!(err(&s).starts_with("proxy_host '"), "{a:?}");

        let s = on_prem(a, &["10.0.0.1"], OnPremiseMode::Direct);
        assert!(err(&s).starts_with("on_premise.indicator_host '"), "{a:?}");

        let s = on_prem("ind.corp", &[a], OnPremiseMode::Direct);
        assert!(err(&s).starts_with("on_premise.expected_addresses[0] '"), "{a:?}");

        let s = on_prem(
            "ind.corp",
            &["10.0.0.1"],
            OnPremiseMode::Proxies(vec!["ok.corp:1".into(), format!("{a}:80")]),
        );
        assert!(
            err(&s).starts_with("on_premise.mode.proxies[1] '"),
            "{a:?}: {}",
            err(&s)
        );
    }
    // A proxy entry cannot smuggle in extra PAC directives either.
    let s = on_prem(
        "ind.corp",
        &["10.0.0.1"],
        OnPremiseMode::Proxies(vec!["p.corp:80; DIRECT".into()]),
    );
    assert!(err(&s).starts_with("on_premise.mode.proxies[0] "));
}

#[test]
fn slot_and_host_errors() {
    let s = PacSpec {
        slots: vec![],
        ..spec()
    };
    assert_eq!(err(&s), "slots: at least one slot is required");
    let s = PacSpec {
        slots: vec![
            SlotPorts {
                http_port: 1,
                https_port: 2,
            },
            SlotPorts {
                http_port: 3,
                https_port: 0,
            },
        ],
        ..spec()
    };
    assert_eq!(err(&s), "slots[1].https_port: port 0 is not allowed");
    let s = PacSpec {
        slots: vec![SlotPorts {
            http_port: 0,
            https_port: 2,
        }],
        ..spec()
    };
    assert_eq!(err(&s), "slots[0].http_port: port 0 is not allowed");
    for bad in ["", "127.0.0.1:80", "[10.0.0.1]", "a..b", "-x"] {
        let s = PacSpec {
            proxy_host: bad.to_owned(),
            ..spec()
        };
        assert!(err(&s).starts_with("proxy_host '"), "{bad}");
    }
}

#[test]
fn on_premise_errors() {
    let e = err(&on_prem("10.1.2.3", &["10.1.2.3"], OnPremiseMode::Direct));
    assert!(
        e.starts_with("on_premise.indicator_host '10.1.2.3': must be a host name"),
        "{e}"
    );
    let e = err(&on_prem("[::1]", &["10.1.2.3"], OnPremiseMode::Direct));
    assert!(e.contains("must be a host name"), "{e}");
    let e = err(&on_prem("", &["10.1.2.3"], OnPremiseMode::Direct));
    assert_eq!(e, "on_premise.indicator_host '': empty host name");
    let e = err(&on_prem("*.corp", &["10.1.2.3"], OnPremiseMode::Direct));
    assert!(e.contains("not allowed in a host name"), "{e}");
    let e = err(&on_prem("ind.corp", &[], OnPremiseMode::Direct));
    assert_eq!(e, "on_premise.expected_addresses: at least one address is required");
    let e = err(&on_prem("ind.corp", &["10.1.2.3", "10.1.2"], OnPremiseMode::Direct));
    assert_eq!(
        e,
        "on_premise.expected_addresses[1] '10.1.2': not an IPv4 or IPv6 address"
    );
    let e = err(&on_prem("ind.corp", &["1.2.3.4"], OnPremiseMode::Proxies(vec![])));
    assert!(e.starts_with("on_premise.mode.proxies: at least one proxy"), "{e}");
    for (bad, why) in [
        ("proxy.corp", "missing ':port'"),
        ("proxy.corp:0", "port 0"),
        ("proxy.corp:70000", "exceeds 65535"),
        ("2001:db8::1:8080", "brackets"),
        (":8080", "empty host"),
    ] {
        let e = err(&on_prem(
            "ind.corp",
            &["1.2.3.4"],
            OnPremiseMode::Proxies(vec![bad.into()]),
        ));
        assert!(e.starts_with("on_premise.mode.proxies[0] '"), "{e}");
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn render_is_deterministic_and_order_free_for_tables() {
    let a = with_bypass(&["b.example", "*.a.example", "a.example", "10.0.0.0/8"]);
    let b = with_bypass(&["10.0.0.0/8", "a.example", "*.a.example", "b.example"]);
    let pa = Pac::new(&a).unwrap().render();
    assert_eq!(pa, Pac::new(&a).unwrap().render());
    assert_eq!(pa, Pac::new(&b).unwrap().render());
}

#[test]
fn duplicate_entries_are_dropped() {
    let p = Pac::new(&with_bypass(&["A.example", "a.example.", "*.b", ".b"])).unwrap();
    assert_eq!(
        p.bypass_rules(),
        &[BypassRule::Host("a.example".into()), BypassRule::Domain("b".into())]
    );
}

#[test]
fn render_emits_only_the_sections_in_use() {
    let p = Pac::new(&spec()).unwrap().render();
    assert!(p.contains("function FindProxyForURL(url, host)"));
    for absent in [
        "mscBHost",
        "mscBDomain",
        "mscBHostGlob",
        "mscBUrlGlob",
        "mscB4",
        "mscB6",
        "mscIndicator",
    ] {
        assert!(!p.contains(absent), "{absent}");
    }
    assert!(p.contains(r#"var mscSlots = "PROXY 127.0.0.1:3128; DIRECT";"#));
    assert!(p.contains(r#"var mscSlotsTls = "PROXY 127.0.0.1:3129; DIRECT";"#));
    assert_eq!(p.matches("dnsResolve(").count(), 1, "only the host lookup");

    let same_ports = PacSpec {
        slots: vec![SlotPorts {
            http_port: 1,
            https_port: 1,
        }],
        fail_open: false,
        ..spec()
    };
    let p = Pac::new(&same_ports).unwrap().render();
    assert!(p.contains(r#"var mscSlots = "PROXY 127.0.0.1:1";"#));
    assert!(!p.contains("mscSlotsTls"));
}

#[test]
fn render_tables_and_proxy_strings() {
    let s = PacSpec {
        bypass: vec![
            "Intranet.Example.com".into(),
            "*.corp.example".into(),
            "wiki*.example".into(),
            "http://intranet.example.com/*".into(),
            "10.1.0.0/16".into(),
            "10.3.0.0/16".into(),
            "10.2.0.0/16".into(),
            "10.5.0.0/16".into(),
            "2001:db8::/32".into(),
        ],
        slots: vec![
            SlotPorts {
                http_port: 8080,
                https_port: 8443,
            },
            SlotPorts {
                http_port: 8081,
                https_port: 8444,
            },
        ],
        proxy_host: "::1".into(),
        on_premise: Some(OnPremiseSpec {
            indicator_host: "Onprem.Corp.".into(),
            expected_addresses: vec!["10.9.9.9".into(), "2001:DB8:0:0::9".into()],
            mode: OnPremiseMode::Proxies(vec!["proxy1.corp:8080".into(), "[::2]:3128".into()]),
        }),
        fail_open: false,
    };
    let p = Pac::new(&s).unwrap().render();
    assert!(p.contains("\"intranet.example.com\": true"), "{p}");
    assert!(p.contains("\"corp.example\": true"));
    assert!(p.contains(r#"new RegExp("^(?:wiki[\\s\\S]*\\.example)$")"#), "{p}");
    // 10.1/16, 10.2/16 and 10.3/16 are adjacent and merge; 10.5/16 is apart.
    assert!(
        p.contains("var mscB4 = [167837696, 168034303, 168099840, 168165375];"),
        "{p}"
    );
    assert!(p.contains("var mscB6 = [32, 8193, 3512, 0, 0, 0, 0, 0, 0];"), "{p}");
    assert!(p.contains(r#"var mscSlots = "PROXY [::1]:8080; PROXY [::1]:8081";"#));
    assert!(p.contains(r#"var mscSlotsTls = "PROXY [::1]:8443; PROXY [::1]:8444";"#));
    assert!(p.contains(r#"var mscIndicator = "onprem.corp";"#));
    assert!(p.contains(r#"var mscOnPremise = "PROXY proxy1.corp:8080; PROXY [::2]:3128";"#));
    assert!(p.contains(r#"if (q === "10.9.9.9" || q === "2001:db8::9") return mscOnPremise;"#));
    assert_eq!(p.matches("dnsResolve(").count(), 2, "host + indicator");

    let direct = on_prem("ind.corp", &["10.9.9.9"], OnPremiseMode::Direct);
    let p = Pac::new(&direct).unwrap().render();
    assert!(p.contains(r#"var mscOnPremise = "DIRECT";"#));

    let open = on_prem("ind.corp", &["10.9.9.9"], OnPremiseMode::Proxies(vec!["p:1".into()]));
    let p = Pac::new(&open).unwrap().render();
    assert!(p.contains(r#"var mscOnPremise = "PROXY p:1; DIRECT";"#));
}

#[test]
fn rendered_text_is_plain_ascii_with_balanced_braces() {
    let s = with_bypass(&[
        "a.example",
        "*.b.example",
        "c*.example",
        "http://d.example/a+b(c)$[d]?*",
        "10.0.0.0/8",
        "fe80::/10",
    ]);
    assert_well_formed(&Pac::new(&s).unwrap().render());
}

/// A crude but useful structural check: plain ASCII, and every brace pairs up
/// outside string literals (the literals themselves escape `{` `}`), so no
/// string literal was ended early.
fn assert_well_formed(p: &str) {
    assert!(p.bytes().all(|b| b == b'\n' || (b' '..=b'~').contains(&b)));
    let mut depth = 0i32;
    let mut in_str = false;
    let mut prev = b' ';
    for b in p.bytes() {
        match b {
            b'"' if prev != b'\\' => in_str = !in_str,
            b'{' if !in_str => depth += 1,
            b'}' if !in_str => depth -= 1,
            _ => {}
        }
        assert!(depth >= 0);
        prev = b;
    }
    assert_eq!(depth, 0);
    assert!(!in_str);
}

/// Every single character in every position of every entry form: either
/// rejected, or rendered into a well-formed script.
#[test]
fn every_character_is_rejected_or_inert() {
    let chars = (0u32..0x80)
        .chain([0x85, 0xa0, 0x2028, 0x2029, 0x200b, 0x202e, 0xfeff, 0xff0e, 0x1f600])
        .filter_map(char::from_u32);
    let mut accepted = 0;
    for c in chars {
        for entry in [
            format!("a{c}b.example"),
            format!("*.a{c}b.example"),
            format!("a{c}*.example"),
            format!("http://x.example/{c}*"),
            format!("{c}"),
            format!("10.0.0.0/{c}"),
        ] {
            if let Ok(p) = Pac::new(&with_bypass(&[&entry])) {
                accepted += 1;
                assert_well_formed(&p.render());
            }
        }
    }
    assert!(accepted > 100, "{accepted}");
}

#[test]
fn thousand_entries_validate_and_render() {
    let entries: Vec<String> = (0..1000)
        .map(|i| match i % 5 {
            0 => format!("host{i}.example.com"),
            1 => format!("*.dom{i}.example"),
            2 => format!("10.{}.{}.0/24", i / 256, i % 256),
            3 => format!("http://intranet{i}.example.com/*"),
            _ => format!("2001:db8:{i:x}::/48"),
        })
        .collect();
    let s = PacSpec {
        bypass: entries,
        ..spec()
    };
    let pac = Pac::new(&s).unwrap();
    assert_eq!(pac.bypass_rules().len(), 1000);
    let text = pac.render();
    assert!(text.len() < 200_000, "{}", text.len());
}
