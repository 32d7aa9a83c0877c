//! The gateway's deny list: exact hosts, `*.domain` suffixes and IP
//! addresses (matched by address after resolution, see [`DenyList::matches_addr`]).

use std::collections::HashMap;
use std::net::IpAddr;

/// Hosts the gateway refuses to reach. `*.example.com` blocks example.com and
/// every name under it; `ads.example.com` blocks exactly that host. Matching
/// is case-insensitive and ignores a trailing dot. An IP rule also blocks
/// every name and spelling that resolves to that address.
#[derive(Clone, Debug, Default)]
pub struct DenyList {
    exact: HashMap<String, String>,
    suffix: HashMap<String, String>,
    /// IP rules by canonical address (IPv4-mapped IPv6 folded to IPv4).
    addrs: HashMap<IpAddr, String>,
}

/// Lower-cases and strips one trailing dot.
pub fn normalize_host(h: &str) -> String {
    let h = h.strip_suffix('.').unwrap_or(h);
    h.to_ascii_lowercase()
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl DenyList {
    /// Adds a rule; the error says why it is not a valid rule.
    pub fn add(&mut self, rule: &str) -> Result<(), String> {
        let r = rule.trim();
        let (is_suffix, body) = match r.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, r),
        };
        let body = normalize_host(body);
        let addr = body.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().ok();
        let ip = addr.is_some();
        if !(valid_domain(&body) || (!is_suffix && ip)) {
            return Err(format!("'{rule}' is not a host name, IP address or *.domain suffix"));
        }
        let key = if ip {
            body.trim_matches(|c| c == '[' || c == ']').to_string()
        } else {
            body
        };
        if let Some(a) = addr {
            self.addrs.insert(a.to_canonical(), r.to_string());
        }
        if is_suffix {
            self.suffix.insert(key, r.to_string());
        } else {
            self.exact.insert(key, r.to_string());
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.suffix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The IP rule (as written) that blocks the resolved address `ip`, if
    /// any: the check that catches `http://167838211/`, `127.1`-style
    /// spellings and names resolving to a denied address. IPv6 forms that
    /// embed an IPv4 address (mapped, NAT64, 6to4) match a rule for it.
    pub fn matches_addr(&self, ip: IpAddr) -> Option<&str> {
        if self.addrs.is_empty() {
            return None;
        }
        let inner = super::egress::embedded_v4(ip).map(IpAddr::V4);
        self.addrs
            .get(&ip.to_canonical())
            .or_else(|| inner.and_then(|i| self.addrs.get(&i)))
            .map(String::as_str)
    }

    /// The rule (as written) that blocks `host`, if any. Checks the host and
    /// each parent domain: cost grows with the number of labels, not rules.
    pub fn matches(&self, host: &str) -> Option<&str> {
        if self.is_empty() {
            return None;
        }
        let h = normalize_host(host);
        if let Some(r) = self.exact.get(&h) {
            return Some(r);
        }
        let mut rest = h.as_str();
        loop {
            if let Some(r) = self.suffix.get(rest) {
                return Some(r);
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_suffix() {
        let mut d = DenyList::default();
        d.add("*.Blocked.example").unwrap();
        d.add("ads.example.com").unwrap();
        d.add("10.1.2.3").unwrap();
        assert_eq!(d.matches("blocked.example"), Some("*.Blocked.example"));
        assert_eq!(d.matches("a.b.BLOCKED.example."), Some("*.Blocked.example"));
        assert_eq!(d.matches("notblocked.example"), None);
        assert_eq!(d.matches("ads.example.com"), Some("ads.example.com"));
        assert_eq!(d.matches("x.ads.example.com"), None);
        assert_eq!(d.matches("10.1.2.3"), Some("10.1.2.3"));
        assert_eq!(d.matches("example.com"), None);
    }

    #[test]
    fn ip_rules_match_by_address() {
        let mut d = DenyList::default();
        d.add("10.1.2.3").unwrap();
        d.add("[2001:db8::7]").unwrap();
        d.add("::ffff:10.9.9.9").unwrap();
        d.add("ads.example.com").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(d.matches_addr(ip("10.1.2.3")), Some("10.1.2.3"));
        assert_eq!(d.matches_addr(ip("::ffff:10.1.2.3")), Some("10.1.2.3"));
        assert_eq!(d.matches_addr(ip("64:ff9b::a01:203")), Some("10.1.2.3"));
        assert_eq!(d.matches_addr(ip("2001:db8::7")), Some("[2001:db8::7]"));
        assert_eq!(d.matches_addr(ip("10.9.9.9")), Some("::ffff:10.9.9.9"));
        assert_eq!(d.matches_addr(ip("10.1.2.4")), None);
        assert_eq!(DenyList::default().matches_addr(ip("10.1.2.3")), None);
    }

    #[test]
    fn bad_rules() {
        let mut d = DenyList::default();
        for bad in ["", "*.", "a..b", "*.10.0.0.1x!", "exa mple.com", "*", "http://x.com"] {
            assert!(d.add(bad).is_err(), "{bad}");
        }
    }
}
