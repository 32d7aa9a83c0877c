//! Host names, proxy endpoints and the character rules that keep admin text
//! from ever being more than data in the PAC.

use std::net::IpAddr;

use crate::error::describe_char;
use crate::net::strip_brackets;

/// RFC 1035 limits, checked on the text form without the trailing dot.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Validates a DNS host name and returns its canonical form: lower case, one
/// trailing dot removed.
///
/// Allowed: ASCII letters, digits, `-`, `_` (common in internal names) and
/// dots between labels. Labels starting with `__` are refused because the PAC
/// looks names up as JavaScript object keys, and old engines give keys such
/// as `__proto__`, `__parent__` or `__count__` special meaning.
pub(crate) fn canonical_host_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty host name".to_owned());
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
    {
        return Err(format!("{} is not allowed in a host name", describe_char(c)));
    }
    let lower = s.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("empty host name".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "host name is {} characters long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (a leading dot or two dots in a row)".to_owned());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "label '{label}' is {} characters long; the limit is {MAX_LABEL_LEN}",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label '{label}' starts or ends with '-'"));
        }
        if label.starts_with("__") {
            return Err(format!(
                "label '{label}' starts with '__', which is reserved (JavaScript object internals)"
            ));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        // Either a malformed IPv4 address or a name no resolver can answer;
        // both are typos worth stopping at load time.
        return Err("ends in a numeric label: not a valid IPv4 address nor a host name".to_owned());
    }
    Ok(name.to_owned())
}

/// A host a browser can be told to connect to: name, IPv4 or IPv6 literal.
/// Rendered as it must appear in a PAC `PROXY` entry (IPv6 in brackets).
pub(crate) fn canonical_proxy_host(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty host".to_owned());
    }
    let inner = strip_brackets(s);
    if inner.contains(':') {
        return match inner.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => Ok(format!("[{v6}]")),
            _ => Err(format!("'{inner}' is not a valid IPv6 address")),
        };
    }
    if inner.len() != s.len() {
        return Err("brackets are only for IPv6 addresses".to_owned());
    }
    if let Ok(v4) = s.parse::<IpAddr>() {
        return Ok(v4.to_string());
    }
    canonical_host_name(s)
}

/// Parses `host:port` (IPv6 as `[addr]:port`) into the canonical
/// `host:port` text of a PAC `PROXY` entry.
pub(crate) fn canonical_host_port(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty entry; expected host:port".to_owned());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("missing ']' after the IPv6 address")?;
        let port = after
            .strip_prefix(':')
            .ok_or("missing ':port' after the IPv6 address")?;
        (&s[..h.len() + 2], port)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or("missing ':port'; expected host:port")?;
        if h.contains(':') {
            return Err("IPv6 addresses need brackets, e.g. [2001:db8::1]:8080".to_owned());
        }
        (h, p)
    };
    let port = parse_port(port)?;
    let host = canonical_proxy_host(host)?;
    Ok(format!("{host}:{port}"))
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port '{p}' is not a number from 1 to 65535"));
    }
    match p.parse::<u32>() {
        Ok(0) => Err("port 0 is not allowed".to_owned()),
        Ok(n) => u16::try_from(n).map_err(|_| format!("port {n} exceeds 65535")),
        Err(_) => Err(format!("port '{p}' is not a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_lowercased_and_lose_one_trailing_dot() {
        assert_eq!(
            canonical_host_name("Intranet.Example.COM.").unwrap(),
            "intranet.example.com"
        );
        assert_eq!(canonical_host_name("a_b-c.x9").unwrap(), "a_b-c.x9");
        assert_eq!(canonical_host_name("wpad").unwrap(), "wpad");
    }

    #[test]
    fn host_names_reject_bad_forms() {
        let err = |s: &str| canonical_host_name(s).unwrap_err();
        assert_eq!(err(""), "empty host name");
        assert_eq!(err("."), "empty host name");
        assert!(err("a..b").contains("empty label"));
        assert!(err(".a.b").contains("empty label"));
        assert!(err("a.b..").contains("empty label"));
        assert!(err("-a.b").contains("starts or ends with '-'"));
        assert!(err("a-.b").contains("starts or ends with '-'"));
        assert!(err("__proto__").contains("reserved"));
        assert!(err("x.__count__.com").contains("reserved"));
        assert!(err("1.2.3").contains("numeric label"));
        assert!(err("999.1.1.1").contains("numeric label"));
        assert!(err(&"a".repeat(64)).contains("limit is 63"));
        assert!(err(&format!("{}.com", "a.".repeat(130))).contains("limit is 253"));
        assert!(err("a b").contains("a space"));
        assert!(err("a\"b").contains("'\"'"));
        assert!(err("a\nb").contains("a newline"));
        assert!(err("a\u{0}b").contains("U+0000"));
        assert!(err("bücher.example").contains("U+00FC"));
        assert!(err("a:b").contains("':'"));
        assert!(err("a/b").contains("'/'"));
        assert!(err("a*b").contains("'*'"));
    }

    #[test]
    fn proxy_hosts_accept_names_and_literals() {
        assert_eq!(canonical_proxy_host("127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(canonical_proxy_host("::1").unwrap(), "[::1]");
        assert_eq!(canonical_proxy_host("[::1]").unwrap(), "[::1]");
        assert_eq!(canonical_proxy_host("Proxy.Corp").unwrap(), "proxy.corp");
        assert!(canonical_proxy_host("").is_err());
        assert!(canonical_proxy_host("[1.2.3.4]").unwrap_err().contains("only for IPv6"));
        assert!(
            canonical_proxy_host("1::2::3")
                .unwrap_err()
                .contains("not a valid IPv6")
        );
        assert!(canonical_proxy_host("127.0.0.1:80").is_err());
    }

    #[test]
    fn host_port_parses_and_canonicalises() {
        assert_eq!(canonical_host_port("Proxy1.corp:8080").unwrap(), "proxy1.corp:8080");
        assert_eq!(canonical_host_port("10.0.0.1:3128").unwrap(), "10.0.0.1:3128");
        assert_eq!(canonical_host_port("[2001:DB8::1]:443").unwrap(), "[2001:db8::1]:443");
        assert_eq!(canonical_host_port("p:65535").unwrap(), "p:65535");
    }

    #[test]
    fn host_port_rejects_bad_forms() {
        let err = |s: &str| canonical_host_port(s).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err("proxy.corp").contains("missing ':port'"));
        assert!(err("proxy.corp:").contains("not a number"));
        assert!(err("proxy.corp:0").contains("port 0"));
        assert!(err("proxy.corp:65536").contains("exceeds 65535"));
        assert!(err("proxy.corp:123456").contains("not a number"));
        assert!(err("proxy.corp:+80").contains("not a number"));
        assert!(err("2001:db8::1:80").contains("brackets"));
        assert!(err("[2001:db8::1]").contains("missing ':port'"));
        assert!(err("[2001:db8::1:80").contains("missing ']'"));
        assert!(err(":80").contains("empty host"));
        assert!(err("a\"b:80").contains("not allowed"));
        assert!(err("p:80; DIRECT").contains("not a number"));
    }
}
