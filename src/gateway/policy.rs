//! The gateway's deny list: exact hosts and `*.domain` suffixes.

use std::collections::HashMap;

/// Hosts the gateway refuses to reach. `*.example.com` blocks example.com and
/// every name under it; `ads.example.com` blocks exactly that host. Matching
/// is case-insensitive and ignores a trailing dot.
#[derive(Clone, Debug, Default)]
pub struct DenyList {
    exact: HashMap<String, String>,
    suffix: HashMap<String, String>,
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
        let ip = body
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok();
        if !(valid_domain(&body) || (!is_suffix && ip)) {
            return Err(format!("'{rule}' is not a host name, IP address or *.domain suffix"));
        }
        let key = if ip {
            body.trim_matches(|c| c == '[' || c == ']').to_string()
        } else {
            body
        };
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
    fn bad_rules() {
        let mut d = DenyList::default();
        for bad in ["", "*.", "a..b", "*.10.0.0.1x!", "exa mple.com", "*", "http://x.com"] {
            assert!(d.add(bad).is_err(), "{bad}");
        }
    }
}
