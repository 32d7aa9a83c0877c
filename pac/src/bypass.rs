//! Admin bypass entries: parsing into [`BypassRule`] and native matching that
//! gives the same answers as the generated PAC.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::describe_char;
use crate::name::canonical_host_name;
use crate::net::{Cidr, unmap};

/// Longest accepted entry. Real patterns are far shorter; the cap keeps a
/// pasted blob from inflating every browser's PAC.
pub const MAX_ENTRY_LEN: usize = 2048;

/// Most `*` wildcards in one pattern (after runs are collapsed). Glob matching
/// in PAC engines backtracks, so each extra `*` multiplies the worst case.
pub const MAX_WILDCARDS: usize = 6;

/// One parsed bypass entry. Matching is case-insensitive throughout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BypassRule {
    /// `intranet.example.com`: exactly this host name.
    Host(String),
    /// `*.example.com` or `.example.com`: the domain itself and every name
    /// under it (`example.com`, `a.b.example.com`), never `badexample.com`.
    Domain(String),
    /// A host glob such as `intranet*.corp` or `192.168.*`: `*` matches any
    /// run of characters (including none and dots), `?` exactly one; matched
    /// against the whole host (IPv6 without brackets), also for IP literals.
    HostPattern(String),
    /// Anything containing `://`, e.g. `http://intranet.example.com/*`: a glob
    /// with the same wildcards, matched against the whole URL.
    UrlPattern(String),
    /// `10.1.0.0/16`, `2001:db8::/32`, or a bare address (`/32` or `/128`):
    /// matched against IP-literal hosts only; never triggers a DNS lookup.
    Cidr(Cidr),
}

/// Parses one admin bypass entry. The error is the reason only; [`Pac::new`]
/// (crate::Pac::new) adds which entry it was.
///
/// Which form an entry takes is decided in this order: contains `://` -> URL
/// pattern; contains `/` or is an IP address (IPv6 optionally in brackets) ->
/// CIDR; starts with `*.` or `.` and has no other wildcard -> domain; contains
/// `*` or `?` -> host pattern; otherwise -> exact host name.
pub fn parse_bypass(entry: &str) -> Result<BypassRule, String> {
    if entry.is_empty() {
        return Err("empty entry".to_owned());
    }
    if entry.len() > MAX_ENTRY_LEN {
        return Err(format!(
            "entry is {} bytes long; the limit is {MAX_ENTRY_LEN}",
            entry.len()
        ));
    }
    // One gate for every form: after it no entry holds a character that could
    // end a JavaScript string or comment, start an HTML tag, or hide in the
    // text (controls, spaces, non-ASCII look-alikes). Rendering escapes again.
    if let Some(c) = entry.chars().find(|&c| !is_pattern_char(c)) {
        let why = match c {
            '{' | '}' | '|' | '^' => " (browsers percent-encode it in URLs, so it could never match)",
            _ => "",
        };
        return Err(format!("{} is not allowed{why}", describe_char(c)));
    }
    let lower = entry.to_ascii_lowercase();

    if lower.contains("://") {
        return url_pattern(&lower);
    }
    let bare = lower.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    if lower.contains('/') || lower.parse::<IpAddr>().is_ok() || bare.is_some() {
        return Cidr::parse(&lower).map(BypassRule::Cidr);
    }
    let domain = lower
        .strip_prefix("*.")
        .or_else(|| lower.strip_prefix('.'))
        .filter(|rest| !rest.contains(['*', '?']));
    if let Some(d) = domain {
        return canonical_host_name(d).map(BypassRule::Domain);
    }
    if lower.contains(['*', '?']) {
        return host_pattern(&lower);
    }
    if let Some((h, p)) = lower.rsplit_once(':')
        && !h.contains(':')
        && !p.is_empty()
        && p.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "ports are not matched by host entries; use a URL pattern such as 'http://{h}:{p}/*'"
        ));
    }
    if lower.contains(':') {
        return Cidr::parse(&lower).map(BypassRule::Cidr);
    }
    canonical_host_name(&lower).map(BypassRule::Host)
}

/// Printable ASCII except what would break out of a JS string (`"` `'` `\`),
/// template (`` ` ``) or HTML context (`<` `>`), and what browsers never leave
/// raw in a URL (`{` `}` `|` `^`).
fn is_pattern_char(c: char) -> bool {
    matches!(c, '!'..='~') && !matches!(c, '"' | '\'' | '\\' | '`' | '<' | '>' | '{' | '}' | '|' | '^')
}

fn url_pattern(lower: &str) -> Result<BypassRule, String> {
    let (scheme, rest) = lower.split_once("://").unwrap_or((lower, ""));
    if scheme.is_empty() {
        return Err("URL pattern has no scheme before '://' (use '*://' for any)".to_owned());
    }
    if let Some(c) = scheme
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '*' | '?')))
    {
        return Err(format!("{} is not allowed in a URL scheme", describe_char(c)));
    }
    if rest.is_empty() {
        return Err("URL pattern has nothing after '://'".to_owned());
    }
    let p = collapse_stars(lower);
    check_wildcards(&p)?;
    Ok(BypassRule::UrlPattern(p))
}

fn host_pattern(lower: &str) -> Result<BypassRule, String> {
    if let Some(c) = lower
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '*' | '?')))
    {
        return Err(format!(
            "{} is not allowed in a host pattern (URL patterns need '://')",
            describe_char(c)
        ));
    }
    let p = collapse_stars(lower.strip_suffix('.').unwrap_or(lower));
    if p.is_empty() {
        return Err("empty host pattern".to_owned());
    }
    check_wildcards(&p)?;
    Ok(BypassRule::HostPattern(p))
}

/// `**` means the same as `*` but costs more in a backtracking matcher.
fn collapse_stars(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if !(c == '*' && out.ends_with('*')) {
            out.push(c);
        }
    }
    out
}

fn check_wildcards(p: &str) -> Result<(), String> {
    let stars = p.matches('*').count();
    if stars > MAX_WILDCARDS {
        return Err(format!(
            "{stars} '*' wildcards; at most {MAX_WILDCARDS} are allowed (each one slows matching in every browser)"
        ));
    }
    Ok(())
}

impl BypassRule {
    /// True when this rule sends the request `DIRECT`, exactly as the PAC
    /// decides it. `url` and `host` are what a browser passes to
    /// `FindProxyForURL`; `host` is lower-cased and loses a trailing dot, and a
    /// bracketed IPv6 host (`[fe80::1]`, or the truncated `[fe80` some
    /// engines pass) is taken from the URL.
    pub fn matches(&self, url: &str, host: &str) -> bool {
        let h = normalize_host(url, host);
        match self {
            BypassRule::Host(name) => h == *name,
            BypassRule::Domain(d) => {
                h == *d || (h.len() > d.len() && h.ends_with(d.as_str()) && h.as_bytes()[h.len() - d.len() - 1] == b'.')
            }
            BypassRule::HostPattern(p) => glob_match(p, &h),
            BypassRule::UrlPattern(p) => glob_match(p, &url.to_lowercase()),
            BypassRule::Cidr(c) => match host_literal(&h) {
                HostKind::V4(a) => c.contains(IpAddr::V4(a)),
                HostKind::V6(a) => c.contains(IpAddr::V6(a)),
                HostKind::BadLiteral | HostKind::Name => false,
            },
        }
    }
}

/// The host as the PAC sees it after its first few lines: lower case, IPv6
/// brackets removed (falling back to the URL when the engine cut the host at
/// the first ':'), one trailing dot removed.
pub(crate) fn normalize_host(url: &str, host: &str) -> String {
    let mut h = host.to_lowercase();
    if h.starts_with('[') {
        h = match h.find(']') {
            Some(e) => h[1..e].to_owned(),
            None => match url.find('[').and_then(|i| url[i..].find(']').map(|e| (i, i + e))) {
                Some((i, e)) => url[i + 1..e].to_lowercase(),
                None => h[1..].to_owned(),
            },
        };
    }
    if h.ends_with('.') {
        h.pop();
    }
    h
}

/// How the PAC classifies a normalized host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKind {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// Looks like an IP literal (four dotted numbers, or contains ':') but is
    /// not a valid one: never sent to DNS, never in any range.
    BadLiteral,
    Name,
}

/// Mirrors the PAC's literal detection: `d.d.d.d` with canonical decimal
/// octets (no leading zeros: resolvers would read those as octal, so such
/// hosts count as names), or anything with a ':' as IPv6 (zone suffix `%...`
/// ignored). Mapped IPv6 becomes IPv4.
pub(crate) fn host_literal(h: &str) -> HostKind {
    if h.contains(':') {
        let no_zone = h.split('%').next().unwrap_or(h);
        return match no_zone.parse::<Ipv6Addr>() {
            Ok(a) => match unmap(IpAddr::V6(a)) {
                IpAddr::V4(v4) => HostKind::V4(v4),
                IpAddr::V6(v6) => HostKind::V6(v6),
            },
            Err(_) => HostKind::BadLiteral,
        };
    }
    let parts: Vec<&str> = h.split('.').collect();
    let canonical = |p: &&str| {
        p == &"0" || ((1..=3).contains(&p.len()) && !p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if parts.len() != 4 || !parts.iter().all(canonical) {
        return HostKind::Name;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        match p.parse::<u8>() {
            Ok(v) => *o = v,
            Err(_) => return HostKind::BadLiteral,
        }
    }
    HostKind::V4(Ipv4Addr::from(octets))
}

/// Shell-style glob: `*` any run of characters, `?` exactly one; everything
/// else literal. Linear-space, and worst case O(len(p) * len(s)) thanks to the
/// single backtrack point (a later `*` subsumes earlier ones).
pub(crate) fn glob_match(p: &str, s: &str) -> bool {
    let p: Vec<char> = p.chars().collect();
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> BypassRule {
        parse_bypass(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        parse_bypass(s).unwrap_err()
    }

    #[test]
    fn forms_are_recognised() {
        assert_eq!(
            rule("Intranet.Example.com."),
            BypassRule::Host("intranet.example.com".into())
        );
        assert_eq!(rule("wiki"), BypassRule::Host("wiki".into()));
        assert_eq!(rule("*.Example.com"), BypassRule::Domain("example.com".into()));
        assert_eq!(rule(".example.com."), BypassRule::Domain("example.com".into()));
        assert_eq!(rule("intranet*.corp"), BypassRule::HostPattern("intranet*.corp".into()));
        assert_eq!(rule("192.168.*"), BypassRule::HostPattern("192.168.*".into()));
        assert_eq!(
            rule("*.*.example.com"),
            BypassRule::HostPattern("*.*.example.com".into())
        );
        assert_eq!(rule("a?c.example."), BypassRule::HostPattern("a?c.example".into()));
        assert_eq!(
            rule("HTTP://Intranet.example.com/*"),
            BypassRule::UrlPattern("http://intranet.example.com/*".into())
        );
        assert_eq!(rule("*://x/**a"), BypassRule::UrlPattern("*://x/*a".into()));
        for (s, c) in [
            ("10.1.0.0/16", "10.1.0.0/16"),
            ("10.1.2.3", "10.1.2.3/32"),
            ("2001:DB8::/32", "2001:db8::/32"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("[2001:db8::1]", "2001:db8::1/128"),
        ] {
            match rule(s) {
                BypassRule::Cidr(x) => assert_eq!(x.to_string(), c),
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_entries_are_rejected_with_reasons() {
        assert_eq!(err(""), "empty entry");
        assert_eq!(err("10.0.0.0/33"), "prefix length 33 exceeds 32");
        assert!(err("10.0.0.0/8/8").contains("not a number"));
        assert!(err("10.0.0/8").contains("not an IPv4"));
        assert!(err("intranet/8").contains("not an IPv4"));
        assert!(err("10.1.2.3/16").contains("host bits"));
        assert!(err("[10.0.0.1]").contains("brackets are only for IPv6"));
        assert!(err("1::2::3").contains("not an IPv4 or IPv6"));
        assert!(err("*.").contains("empty host name"));
        assert!(err(".").contains("empty host name"));
        assert!(err("*.a..b").contains("empty label"));
        assert!(err("host.example:8080").contains("URL pattern"));
        assert!(err("://x").contains("no scheme"));
        assert!(err("http://").contains("nothing after"));
        assert!(err("ht_tp://x/*").contains("URL scheme"));
        assert!(err("a/b*c?d").contains("not an IPv4"));
        assert!(err("a*b%").contains("host pattern"));
        assert!(err("*a*b*c*d*e*f*g").contains("7 '*' wildcards"));
        assert!(err(&"a".repeat(MAX_ENTRY_LEN + 1)).contains("limit is 2048"));
        assert!(err("*.1.2").contains("numeric label"));
        assert!(err("__proto__").contains("reserved"));
    }

    #[test]
    fn injection_attempts_are_rejected() {
        for s in [
            r#"evil.com"; alert(1); ""#,
            "evil.com'; alert(1); '",
            "evil.com\nalert(1)",
            "evil.com\r",
            "evil.com\\",
            "evil.com\\\"",
            "http://x/</script><script>alert(1)</script>",
            "http://x/*`${alert(1)}`",
            "evil.com\u{2028}alert(1)",
            "evil.com\u{2029}",
            "evil.com\u{0}",
            "evil\u{200b}.com",
            "evil.com\u{202e}",
            "ｅvil.com",
            "evil。com",
            "evil.com */ alert(1); /*",
            "evil.com\t",
            " evil.com",
            "http://x/{a}",
            "http://x/a|b",
        ] {
            let e = parse_bypass(s).expect_err(s);
            assert!(e.contains("not allowed"), "{s:?}: {e}");
        }
    }

    #[test]
    fn exact_and_domain_matching() {
        let h = rule("intranet.example.com");
        assert!(h.matches("http://x/", "intranet.example.com"));
        assert!(h.matches("http://x/", "INTRANET.Example.com."));
        assert!(!h.matches("http://x/", "a.intranet.example.com"));
        let d = rule("*.example.com");
        for host in ["example.com", "Example.COM.", "a.example.com", "a.b.example.com"] {
            assert!(d.matches("http://x/", host), "{host}");
        }
        for host in ["badexample.com", "example.com.evil", "com", "xample.com"] {
            assert!(!d.matches("http://x/", host), "{host}");
        }
    }

    #[test]
    fn pattern_matching() {
        let p = rule("intranet*.corp");
        assert!(p.matches("http://x/", "intranet.corp"));
        assert!(p.matches("http://x/", "intranet-2.eu.corp"));
        assert!(!p.matches("http://x/", "xintranet.corp"));
        let ip = rule("192.168.*");
        assert!(ip.matches("http://x/", "192.168.4.5"));
        assert!(!ip.matches("http://x/", "192.169.4.5"));
        let q = rule("a?c.example");
        assert!(q.matches("http://x/", "abc.example"));
        assert!(!q.matches("http://x/", "ac.example"));
        let u = rule("http://intranet.example.com/*");
        assert!(u.matches("http://intranet.example.com/a/b?c", "intranet.example.com"));
        assert!(u.matches("HTTP://INTRANET.example.com/", "intranet.example.com"));
        assert!(!u.matches("https://intranet.example.com/", "intranet.example.com"));
        assert!(!u.matches("http://intranet.example.com:8080/", "intranet.example.com"));
        let v6 = rule("http://[fe80::1]/*");
        assert!(v6.matches("http://[fe80::1]/x", "[fe80"));
        let special = rule("http://x/a+b(c)$[d]*");
        assert!(special.matches("http://x/a+b(c)$[d]/e", "x"));
        assert!(!special.matches("http://x/aab(c)$[d]/e", "x"));
    }

    #[test]
    fn cidr_matching_uses_literals_only() {
        let v4 = rule("10.1.0.0/16");
        assert!(v4.matches("http://10.1.2.3/", "10.1.2.3"));
        assert!(v4.matches("http://10.1.2.3./", "10.1.2.3."));
        assert!(v4.matches("http://[::ffff:10.1.2.3]/", "[::ffff:10.1.2.3]"));
        assert!(!v4.matches("http://10.2.0.1/", "10.2.0.1"));
        assert!(!v4.matches("http://x/", "10.1.example"));
        let v6 = rule("2001:db8::/32");
        assert!(v6.matches("http://[2001:db8::5]:8080/", "[2001"));
        assert!(v6.matches("http://[2001:DB8::5]/", "2001:db8::5"));
        assert!(v6.matches("http://[2001:db8::5]/", "[2001:db8::5]"));
        assert!(!v6.matches("http://[2001:db9::5]/", "[2001"));
        assert!(!v6.matches("http://10.1.2.3/", "10.1.2.3"));
    }

    #[test]
    fn host_literal_mirrors_the_pac() {
        assert_eq!(host_literal("10.1.2.3"), HostKind::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(host_literal("0.0.0.0"), HostKind::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(host_literal("0177.0.0.1"), HostKind::Name);
        assert_eq!(host_literal("10.01.2.3"), HostKind::Name);
        assert_eq!(host_literal("0x7f.0.0.1"), HostKind::Name);
        assert_eq!(host_literal("999.1.2.3"), HostKind::BadLiteral);
        assert_eq!(host_literal("1.2.3"), HostKind::Name);
        assert_eq!(host_literal("1.2.3.4.5"), HostKind::Name);
        assert_eq!(host_literal("1234.1.1.1"), HostKind::Name);
        assert_eq!(host_literal("fe80::1%eth0"), HostKind::V6("fe80::1".parse().unwrap()));
        assert_eq!(host_literal("::ffff:1.2.3.4"), HostKind::V4(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(host_literal("fe80:::1"), HostKind::BadLiteral);
        assert_eq!(host_literal("example.com"), HostKind::Name);
    }

    #[test]
    fn normalize_host_handles_brackets_case_and_dot() {
        assert_eq!(normalize_host("http://A/", "Example.COM."), "example.com");
        assert_eq!(normalize_host("http://[FE80::1]:80/", "[fe80"), "fe80::1");
        assert_eq!(normalize_host("http://[fe80::1]/", "[fe80::1]"), "fe80::1");
        assert_eq!(normalize_host("http://x/", "[fe80"), "fe80");
        assert_eq!(normalize_host("http://x/", ""), "");
    }

    #[test]
    fn glob_semantics() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*", "a"));
        assert!(glob_match("*b", "aab"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("??", "ab"));
        assert!(!glob_match("??", "a"));
        assert!(!glob_match("a", "ab"));
        assert!(glob_match("a.b", "a.b"));
        assert!(!glob_match("a.b", "axb"));
        // Pathological for naive backtracking; this is quadratic at worst.
        let s = "a".repeat(5000);
        assert!(!glob_match("*a*a*a*a*a*b", &s));
    }
}
