//! The gateway's egress policy: which addresses and `CONNECT` ports an
//! authenticated client may reach through the gateway.
//!
//! Without it the gateway is an open relay into its own network: loopback
//! (its own ports), RFC 1918 ranges, link-local cloud metadata
//! (169.254.169.254) and so on, on any port, with refused/accepted answers
//! that make a port scanner.
//!
//! The policy is applied to the **resolved** addresses the gateway is about to
//! connect to, never to the spelling of the request target: `127.1`,
//! `2130706433`, `0x7f000001`, `0177.0.0.1` (which `getaddrinfo` accepts),
//! `[::ffff:127.0.0.1]` and names that resolve inside (`localhost`, hosts-file
//! aliases, DNS rebinding) all end up as the same [`IpAddr`]. The check runs
//! on the very addresses handed to `connect` (no second lookup), and before
//! any connection attempt, so an open and a closed port answer alike.
//!
//! Pure: no I/O, no async; the proxy loop calls [`admit`] between resolving
//! and connecting.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::policy::DenyList;

/// `CONNECT` ports admitted when the configuration names none.
pub const DEFAULT_CONNECT_PORTS: [u16; 1] = [443];

/// IPv4 ranges that are not the public Internet, with the name given in logs.
/// Order matters where ranges nest (broadcast inside 240/4).
const INTERNAL_V4: [(Ipv4Net, &str); 16] = [
    (v4(0, 0, 0, 0, 8), "unspecified (\"this network\")"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(10, 0, 0, 0, 8), "private (RFC 1918)"),
    (v4(172, 16, 0, 0, 12), "private (RFC 1918)"),
    (v4(192, 168, 0, 0, 16), "private (RFC 1918)"),
    (v4(100, 64, 0, 0, 10), "shared address space (CGNAT)"),
    (v4(169, 254, 0, 0, 16), "link-local (cloud metadata)"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
];

/// IPv6 ranges that are not the public Internet (forms that embed an IPv4
/// address are judged by that address, see [`embedded_v4`]).
const INTERNAL_V6: [(Ipv6Net, &str); 9] = [
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "NAT64 local use"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique-local"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local (deprecated)"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), len)
}

/// The IPv4 address an IPv6 address stands for, where connecting to it
/// reaches (or may reach) that IPv4 address: IPv4-mapped `::ffff:0:0/96`,
/// IPv4-translated `::ffff:0:0:0/96`, IPv4-compatible `::/96` (deprecated),
/// NAT64 `64:ff9b::/96` and 6to4 `2002::/16`.
pub fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(a) = ip else { return None };
    let s = a.segments();
    let o = a.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // ::/96 minus :: and ::1, which are IPv6's own.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// The kind of internal range `ip` lies in, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    if let Some(inner) = embedded_v4(ip) {
        return classify(IpAddr::V4(inner));
    }
    match ip {
        IpAddr::V4(a) => INTERNAL_V4.iter().find(|(n, _)| n.contains(&a)).map(|(_, k)| *k),
        IpAddr::V6(a) => INTERNAL_V6.iter().find(|(n, _)| n.contains(&a)).map(|(_, k)| *k),
    }
}

/// Which ports `CONNECT` may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectPorts {
    /// Every port (`connect_ports = ["*"]`).
    Any,
    /// Only these (sorted, deduplicated).
    Only(Vec<u16>),
}

/// The egress policy of a gateway (immutable, shared by all workers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    allow: Vec<IpNet>,
    connect_ports: ConnectPorts,
}

impl Default for Egress {
    /// The strict default: every internal range refused, `CONNECT` to 443 only.
    fn default() -> Egress {
        Egress::new(Vec::new(), ConnectPorts::Only(DEFAULT_CONNECT_PORTS.to_vec()))
    }
}

impl Egress {
    /// `allow`: internal ranges re-admitted. `connect_ports`: see [`ConnectPorts`].
    pub fn new(allow: Vec<IpNet>, connect_ports: ConnectPorts) -> Egress {
        let connect_ports = match connect_ports {
            ConnectPorts::Only(mut v) => {
                v.sort_unstable();
                v.dedup();
                ConnectPorts::Only(v)
            }
            any => any,
        };
        Egress {
            allow: allow.into_iter().map(|n| n.trunc()).collect(),
            connect_ports,
        }
    }

    /// Why `ip` is refused (the internal range's kind), or `None` if it may
    /// be reached. An allow-list entry admits an address in it, and an
    /// IPv6 form whose embedded IPv4 address is in it.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        let kind = classify(ip)?;
        let inner = embedded_v4(ip).map(IpAddr::V4);
        let allowed = self
            .allow
            .iter()
            .any(|n| n.contains(&ip) || inner.is_some_and(|i| n.contains(&i)));
        (!allowed).then_some(kind)
    }

    /// Whether `CONNECT` may reach `port`.
    pub fn connect_port_allowed(&self, port: u16) -> bool {
        match &self.connect_ports {
            ConnectPorts::Any => true,
            ConnectPorts::Only(v) => v.binary_search(&port).is_ok(),
        }
    }

    /// The one-line reason for a refused `CONNECT` port.
    pub fn port_refusal(&self, port: u16) -> String {
        let allowed = match &self.connect_ports {
            ConnectPorts::Any => "any".to_string(),
            ConnectPorts::Only(v) if v.is_empty() => "none".to_string(),
            ConnectPorts::Only(v) => v.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
        };
        format!("CONNECT to port {port} is not allowed (egress policy; CONNECT ports: {allowed})")
    }
}

impl fmt::Display for Egress {
    /// One line for the start-up log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("internal address ranges refused")?;
        if !self.allow.is_empty() {
            let allow: Vec<String> = self.allow.iter().map(IpNet::to_string).collect();
            write!(f, " except {}", allow.join(", "))?;
        }
        match &self.connect_ports {
            ConnectPorts::Any => f.write_str("; CONNECT to any port"),
            ConnectPorts::Only(v) if v.is_empty() => f.write_str("; CONNECT refused"),
            ConnectPorts::Only(v) => {
                let v: Vec<String> = v.iter().map(u16::to_string).collect();
                write!(f, "; CONNECT to ports {}", v.join(", "))
            }
        }
    }
}

/// Why the gateway will not connect to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A resolved address matched an IP rule of the deny list.
    Denied { host: String, ip: IpAddr, rule: String },
    /// Every resolved address is internal and not re-admitted.
    Internal {
        host: String,
        ip: IpAddr,
        kind: &'static str,
    },
}

impl fmt::Display for Refusal {
    /// The reply's one line. It names the host as the client wrote it, not
    /// the resolved address, so internal DNS answers are not disclosed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Denied { host, rule, .. } => {
                write!(f, "destination {host} is blocked by the security policy (rule {rule})")
            }
            Refusal::Internal { host, .. } => {
                write!(f, "destination {host} is an internal address (egress policy)")
            }
        }
    }
}

/// Applies the deny list's IP rules and the egress policy to the resolved
/// `addrs` of `host`, before any connection attempt.
///
/// - A resolved address that an IP rule of `deny` names refuses the whole
///   name: the administrator blocked that server, whatever it is called.
/// - Addresses the egress policy refuses are removed; the others are kept
///   (a public name with a stray internal record still works, and the
///   internal address is never dialled). Only when none is left is the
///   request refused.
pub fn admit(deny: &DenyList, egress: Option<&Egress>, host: &str, addrs: &mut Vec<SocketAddr>) -> Result<(), Refusal> {
    if let Some((ip, rule)) = addrs
        .iter()
        .find_map(|a| deny.matches_addr(a.ip()).map(|r| (a.ip(), r)))
    {
        return Err(Refusal::Denied {
            host: host.to_string(),
            ip,
            rule: rule.to_string(),
        });
    }
    let Some(e) = egress else { return Ok(()) };
    let mut first = None;
    addrs.retain(|a| match e.refuses(a.ip()) {
        Some(kind) => {
            first.get_or_insert((a.ip(), kind));
            false
        }
        None => true,
    });
    match first {
        Some((ip, kind)) if addrs.is_empty() => Err(Refusal::Internal {
            host: host.to_string(),
            ip,
            kind,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges() {
        for (a, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.7", "documentation"),
            ("2001:db8::1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("64:ff9b:1::1", "NAT64"),
        ] {
            let k = classify(ip(a)).unwrap_or_else(|| panic!("{a} should be internal"));
            assert!(k.contains(kind), "{a}: {k}");
        }
    }

    #[test]
    fn public_addresses() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "11.0.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(classify(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn ipv6_forms_embedding_internal_ipv4() {
        for a in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:a00:1::1",
        ] {
            assert!(classify(ip(a)).is_some(), "{a}");
        }
        assert_eq!(embedded_v4(ip("::ffff:127.0.0.1")), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(embedded_v4(ip("2002:a00:1::")), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(embedded_v4(ip("::1")), None);
        assert_eq!(embedded_v4(ip("::")), None);
    }

    /// The legacy spellings `getaddrinfo` accepts all become 127.0.0.1 after
    /// resolution; the policy only ever sees that.
    #[test]
    #[expect(clippy::disallowed_methods, reason = "test thread, not a worker")]
    fn legacy_spellings_resolve_to_loopback() {
        use std::net::ToSocketAddrs;
        let e = Egress::default();
        for s in [
            "127.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.0.1",
            "0",
            "localhost",
        ] {
            let addrs: Vec<SocketAddr> = (s, 80).to_socket_addrs().unwrap().collect();
            assert!(!addrs.is_empty(), "{s}");
            for a in addrs {
                assert!(e.refuses(a.ip()).is_some(), "{s} -> {a}");
            }
        }
    }

    #[test]
    fn allow_list_readmits() {
        let e = Egress::new(
            vec![net("10.20.0.0/16"), net("127.0.0.1/32"), net("fd00::/8")],
            ConnectPorts::Only(vec![443]),
        );
        assert_eq!(e.refuses(ip("10.20.3.4")), None);
        assert_eq!(e.refuses(ip("::ffff:10.20.3.4")), None);
        assert_eq!(e.refuses(ip("64:ff9b::10.20.3.4")), None);
        assert!(e.refuses(ip("10.21.0.1")).is_some());
        assert_eq!(e.refuses(ip("127.0.0.1")), None);
        assert!(e.refuses(ip("127.0.0.2")).is_some());
        assert!(e.refuses(ip("::1")).is_some());
        assert_eq!(e.refuses(ip("fd12::1")), None);
        assert!(e.refuses(ip("fc00::1")).is_some());
        assert!(e.refuses(ip("169.254.169.254")).is_some());
        assert_eq!(e.refuses(ip("8.8.8.8")), None);
        // Host bits in an entry are ignored (10.1.2.3/16 is 10.1.0.0/16).
        let e = Egress::new(vec![net("10.1.2.3/16")], ConnectPorts::Any);
        assert_eq!(e.refuses(ip("10.1.200.1")), None);
        // Everything re-admitted: the way to switch the address check off.
        let e = Egress::new(vec![net("0.0.0.0/0"), net("::/0")], ConnectPorts::Any);
        for a in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1"] {
            assert_eq!(e.refuses(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn connect_ports() {
        let e = Egress::default();
        assert!(e.connect_port_allowed(443));
        assert!(!e.connect_port_allowed(22));
        assert!(!e.connect_port_allowed(80));
        assert!(e.port_refusal(22).contains("port 22") && e.port_refusal(22).contains("443"));
        let e = Egress::new(Vec::new(), ConnectPorts::Only(vec![8443, 443, 8443]));
        assert!(e.connect_port_allowed(8443) && e.connect_port_allowed(443) && !e.connect_port_allowed(8080));
        assert!(e.port_refusal(1).ends_with("443, 8443)"));
        assert!(Egress::new(Vec::new(), ConnectPorts::Any).connect_port_allowed(22));
        assert!(!Egress::new(Vec::new(), ConnectPorts::Only(vec![])).connect_port_allowed(443));
        assert_eq!(
            Egress::default().to_string(),
            "internal address ranges refused; CONNECT to ports 443"
        );
        assert_eq!(
            Egress::new(vec![net("127.0.0.0/8"), net("::1/128")], ConnectPorts::Any).to_string(),
            "internal address ranges refused except 127.0.0.0/8, ::1/128; CONNECT to any port"
        );
    }

    fn sa(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 80)
    }

    #[test]
    fn admit_filters_and_refuses() {
        let deny = DenyList::default();
        let e = Egress::default();
        // Only internal: refused, naming the host as written.
        let mut v = vec![sa("127.0.0.1"), sa("::1")];
        let r = admit(&deny, Some(&e), "localhost", &mut v).unwrap_err();
        assert_eq!(
            r.to_string(),
            "destination localhost is an internal address (egress policy)"
        );
        // Mixed: the internal address is dropped, never dialled.
        let mut v = vec![sa("10.0.0.1"), sa("93.184.215.14")];
        admit(&deny, Some(&e), "example.com", &mut v).unwrap();
        assert_eq!(v, vec![sa("93.184.215.14")]);
        // No policy (the client's direct relay): untouched.
        let mut v = vec![sa("127.0.0.1")];
        admit(&deny, None, "localhost", &mut v).unwrap();
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn deny_rules_match_by_address() {
        let mut deny = DenyList::default();
        deny.add("10.1.2.3").unwrap();
        deny.add("2001:db8::7").unwrap();
        // Whatever the name (167838211, a DNS name), the address decides,
        // and one denied address refuses the whole name.
        for (host, addrs) in [
            ("167838211", vec![sa("10.1.2.3")]),
            ("intranet.example", vec![sa("93.184.215.14"), sa("10.1.2.3")]),
            ("::ffff:10.1.2.3", vec![sa("::ffff:10.1.2.3")]),
            ("v6.example", vec![sa("2001:db8::7")]),
        ] {
            let mut v = addrs;
            let r = admit(&deny, None, host, &mut v).unwrap_err();
            assert!(matches!(r, Refusal::Denied { .. }), "{host}");
            assert!(r.to_string().contains(host), "{r}");
        }
        let mut v = vec![sa("10.1.2.4")];
        admit(&deny, None, "other", &mut v).unwrap();
    }
}
