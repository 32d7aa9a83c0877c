//! Address ranges: CIDR parsing and the non-routable table.
//!
//! The non-routable table is the single source for both [`is_non_routable`]
//! (used natively by the client) and the table emitted into the PAC, so the two
//! cannot drift apart.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 ranges that never leave the site, as (network, prefix length).
///
/// RFC 1918 private space, RFC 6598 shared (carrier-grade NAT) space and the
/// RFC 5735 / RFC 6890 special-use blocks.
pub(crate) const NON_ROUTABLE_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network" (RFC 6890)
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private (RFC 1918)
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space (RFC 6598)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link local
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private (RFC 1918)
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // TEST-NET-1
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private (RFC 1918)
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // TEST-NET-2
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // TEST-NET-3
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, incl. limited broadcast
];

/// IPv6 ranges that never leave the site. IPv4-mapped addresses
/// (`::ffff:a.b.c.d`) are judged by their IPv4 address instead.
pub(crate) const NON_ROUTABLE_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::UNSPECIFIED, 128),                     // `::`, the IPv6 twin of 0.0.0.0/8
    (Ipv6Addr::LOCALHOST, 128),                       // `::1`
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),  // unique local (RFC 4193)
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link local
];

/// True when `ip` is in a range that must not be sent to the gateway: RFC 1918,
/// RFC 6598 `100.64.0.0/10`, the RFC 5735/6890 special-use IPv4 blocks
/// (`0/8`, `127/8`, `169.254/16`, `192.0.0/24`, `192.0.2/24`, `198.18/15`,
/// `198.51.100/24`, `203.0.113/24`, `224/4`, `240/4`), and IPv6 `::`, `::1`,
/// `fc00::/7` and `fe80::/10`. An IPv4-mapped IPv6 address is judged by its
/// IPv4 address. This is the same table the generated PAC uses.
pub fn is_non_routable(ip: IpAddr) -> bool {
    match unmap(ip) {
        IpAddr::V4(v4) => NON_ROUTABLE_V4.iter().any(|&(net, len)| prefix_eq_v4(v4, net, len)),
        IpAddr::V6(v6) => NON_ROUTABLE_V6.iter().any(|&(net, len)| prefix_eq_v6(v6, net, len)),
    }
}

/// IPv4-mapped IPv6 addresses name an IPv4 host, so every range check (here
/// and in the PAC) looks at the IPv4 address.
pub(crate) fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn prefix_eq_v4(a: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = mask32(len);
    u32::from(a) & mask == u32::from(net) & mask
}

fn prefix_eq_v6(a: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = mask128(len);
    u128::from(a) & mask == u128::from(net) & mask
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// An IPv4 or IPv6 network: address plus prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Network address (host bits are always zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `ip` is inside this network. An IPv4-mapped IPv6 address is
    /// compared as its IPv4 address, like everywhere else in this crate.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmap(ip)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => prefix_eq_v4(a, net, self.prefix),
            (IpAddr::V6(net), IpAddr::V6(a)) => prefix_eq_v6(a, net, self.prefix),
            _ => false,
        }
    }

    /// First and last address of an IPv4 network as integers.
    pub(crate) fn v4_bounds(&self) -> Option<(u32, u32)> {
        match self.addr {
            IpAddr::V4(a) => {
                let lo = u32::from(a);
                Some((lo, lo | !mask32(self.prefix)))
            }
            IpAddr::V6(_) => None,
        }
    }

    /// Parses `a.b.c.d/len`, `x:y::z/len`, or a bare address (a /32 or /128
    /// network). Square brackets around an IPv6 address are accepted.
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let (addr_s, len_s) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let inner = strip_brackets(addr_s);
        let addr: IpAddr = inner.parse().map_err(|_| {
            format!("'{inner}' is not an IPv4 or IPv6 address (IPv4 needs four decimal octets without leading zeros)")
        })?;
        if addr.is_ipv4() && inner.len() != addr_s.len() {
            return Err("brackets are only for IPv6 addresses".to_owned());
        }
        // Hosts written as mapped addresses are compared as IPv4 everywhere, so
        // a mapped network could never match anything.
        if let IpAddr::V6(v6) = addr
            && v6.to_ipv4_mapped().is_some()
        {
            return Err("IPv4-mapped IPv6 address; write the IPv4 address instead".to_owned());
        }
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len_s {
            None => max,
            Some(l) => {
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("prefix length '{l}' is not a number from 0 to {max}"));
                }
                let n: u16 = l.parse().map_err(|_| format!("bad prefix length '{l}'"))?;
                if n > u16::from(max) {
                    return Err(format!("prefix length {n} exceeds {max}"));
                }
                u8::try_from(n).map_err(|_| format!("prefix length {n} exceeds {max}"))?
            }
        };
        let net = Cidr { addr, prefix };
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        if masked != addr {
            // Refuse rather than silently widen: a typo in the address would
            // otherwise bypass a different network than the admin meant.
            return Err(format!(
                "host bits set after the /{prefix} prefix; the network is {masked}/{prefix}"
            ));
        }
        Ok(net)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `[x]` -> `x`; anything else unchanged.
pub(crate) fn strip_brackets(s: &str) -> &str {
    s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s)
}

/// Non-routable IPv4 ranges as sorted, merged `(first, last)` integer pairs:
/// the form the PAC binary-searches.
pub(crate) fn non_routable_v4_intervals() -> Vec<(u32, u32)> {
    merge_intervals(
        NON_ROUTABLE_V4
            .iter()
            .map(|&(net, len)| {
                let lo = u32::from(net);
                (lo, lo | !mask32(len))
            })
            .collect(),
    )
}

/// Sorts and merges overlapping or adjacent intervals so a lookup is a single
/// binary search over disjoint ranges.
pub(crate) fn merge_intervals(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_routable_covers_every_listed_range_edge() {
        for s in [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.0.1",
            "172.16.0.0",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.2.200",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf:ffff::1",
            "::ffff:10.1.2.3",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_non_routable(ip(s)), "{s} should be non-routable");
        }
    }

    #[test]
    fn routable_neighbours_are_routable() {
        for s in [
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
            "8.8.8.8",
            "::2",
            "2001:db8::1",
            "2606:4700::1111",
            "fbff:ffff::1",
            "fec0::1",
            "ff02::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_non_routable(ip(s)), "{s} should be routable");
        }
    }

    #[test]
    fn cidr_parse_accepts_v4_v6_bare_and_bracketed() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.0")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains(ip("2001:db8:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("10.1.0.0")));
        assert_eq!(Cidr::parse("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(Cidr::parse("[2001:db8::1]").unwrap().to_string(), "2001:db8::1/128");
        assert_eq!(Cidr::parse("[2001:db8::]/48").unwrap().prefix(), 48);
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().prefix(), 0);
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001::1")));
    }

    #[test]
    fn cidr_parse_rejects_malformed() {
        let err = |s: &str| Cidr::parse(s).unwrap_err();
        assert_eq!(err("10.0.0.0/33"), "prefix length 33 exceeds 32");
        assert_eq!(err("2001:db8::/129"), "prefix length 129 exceeds 128");
        assert!(err("10.0.0.0/").contains("not a number"));
        assert!(err("10.0.0.0/-1").contains("not a number"));
        assert!(err("10.0.0.0/+8").contains("not a number"));
        assert!(err("10.0.0.0/0008").contains("not a number"));
        assert!(err("10.0.0/8").contains("not an IPv4 or IPv6 address"));
        assert!(err("010.0.0.0/8").contains("not an IPv4 or IPv6 address"));
        assert!(err("256.0.0.0/8").contains("not an IPv4 or IPv6 address"));
        assert!(err("10.1.2.3/16").contains("host bits set"));
        assert!(err("10.1.2.3/16").contains("10.1.0.0/16"));
        assert!(err("2001:db8::1/32").contains("2001:db8::/32"));
        assert!(err("::ffff:10.0.0.1").contains("IPv4-mapped"));
        assert!(err("fe80::1%eth0").contains("not an IPv4 or IPv6 address"));
    }

    #[test]
    fn v4_intervals_are_sorted_disjoint_and_cover_the_table() {
        let iv = non_routable_v4_intervals();
        for w in iv.windows(2) {
            assert!(w[0].1 < w[1].0);
        }
        for &(net, len) in NON_ROUTABLE_V4 {
            let lo = u32::from(net);
            let hi = lo | !mask32(len);
            assert!(iv.iter().any(|&(a, b)| a <= lo && hi <= b));
        }
        // 224/4 and 240/4 are adjacent and merge into one interval.
        assert!(iv.contains(&(u32::from(Ipv4Addr::new(224, 0, 0, 0)), u32::MAX)));
    }

    #[test]
    fn merge_handles_adjacent_overlapping_and_max() {
        assert_eq!(
            merge_intervals(vec![(5, 9), (0, 3), (4, 4), (8, 20), (30, u32::MAX), (25, 31)]),
            vec![(0, 20), (25, u32::MAX)]
        );
    }
}
