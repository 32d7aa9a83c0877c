//! msc-pac: turns proxy rules into Proxy Auto-Configuration (PAC) text.
//!
//! The client publishes the result to browsers, whose `FindProxyForURL(url,
//! host)` then decides, in order:
//!
//! 1. admin **bypass** list -> `DIRECT` (exact hosts, `*.domain` suffixes, host
//!    and URL globs, IPv4/IPv6 CIDR ranges for IP-literal hosts);
//! 2. **non-routable** destinations -> `DIRECT` (plain names, and literal or
//!    resolved addresses in private / special-use ranges, see
//!    [`is_non_routable`]);
//! 3. **on premise** (indicator name resolves to an expected address) ->
//!    `DIRECT` or the configured on-premise proxies;
//! 4. otherwise the client's local **slots** in rank order, using each slot's
//!    `http_port` or `https_port` by URL scheme;
//! 5. **fail open** appends `; DIRECT`, fail closed does not.
//!
//! The generated script calls `dnsResolve` at most once for the request host
//! (only when rules 1 and 2 could not decide by text) and at most once for the
//! indicator. IP literals are recognised by text and never resolved.
//!
//! What this crate must never do: perform IO, resolve names, spawn or block
//! (it is called from the control plane and from tests alike); depend on other
//! workspace crates; or let admin-written text become code in the script (all
//! strings are validated and then emitted through one escaping function).
// Unused dependencies fail the lint run (tests see dev-dependencies too, hence not(test)).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]
#![warn(unreachable_pub)]
#![forbid(unsafe_code)]

mod bypass;
mod error;
#[cfg(any(fuzzing, test))]
pub mod fuzz;
mod name;
mod net;
mod render;

pub use bypass::{BypassRule, MAX_ENTRY_LEN, MAX_WILDCARDS, parse_bypass};
pub use error::PacError;
pub use net::{Cidr, is_non_routable};

use std::collections::HashSet;
use std::net::IpAddr;

/// Proxy rules as an admin wrote them; [`Pac::new`] validates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacSpec {
    /// Entries sent `DIRECT`; see [`parse_bypass`] for the accepted forms.
    pub bypass: Vec<String>,
    /// The client's local listeners in rank order (slot 1 first).
    pub slots: Vec<SlotPorts>,
    /// Where the slots listen; usually `127.0.0.1`.
    pub proxy_host: String,
    pub on_premise: Option<OnPremiseSpec>,
    /// Append `; DIRECT` to proxy lists so browsers still work when no proxy
    /// answers.
    pub fail_open: bool,
}

impl Default for PacSpec {
    /// No rules, no slots (so not yet valid), `127.0.0.1`, fail open.
    fn default() -> Self {
        PacSpec {
            bypass: Vec::new(),
            slots: Vec::new(),
            proxy_host: "127.0.0.1".to_owned(),
            on_premise: None,
            fail_open: true,
        }
    }
}

/// Ports of one local slot: `http_port` serves `http:`/`ws:` (and any other
/// scheme), `https_port` serves `https:`/`wss:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotPorts {
    pub http_port: u16,
    pub https_port: u16,
}

/// How to tell that the device is on the corporate network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnPremiseSpec {
    /// A name that only resolves (to one of `expected_addresses`) on premise.
    pub indicator_host: String,
    /// On premise when `dnsResolve(indicator_host)` returns one of these.
    pub expected_addresses: Vec<String>,
    pub mode: OnPremiseMode,
}

/// What on-premise requests (that no earlier rule decided) use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnPremiseMode {
    /// Go `DIRECT`.
    Direct,
    /// Use these `host:port` proxies in order (implicit proxy mode).
    Proxies(Vec<String>),
}

/// A validated spec, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pac {
    bypass: Vec<BypassRule>,
    slots: Vec<Slot>,
    on_premise: Option<OnPremise>,
    fail_open: bool,
}

/// A slot's two endpoints as they appear after `PROXY `.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    http: String,
    https: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OnPremise {
    indicator: String,
    /// Canonical address text, compared with `dnsResolve`'s string result.
    expected: Vec<String>,
    /// What the PAC returns on premise.
    reply: String,
}

impl Pac {
    /// Validates `spec`. The first invalid entry is reported with its path
    /// (e.g. `bypass[3]`, `slots[1].https_port`, `on_premise.indicator_host`)
    /// and the reason. Duplicate bypass entries are dropped, not rejected.
    pub fn new(spec: &PacSpec) -> Result<Pac, PacError> {
        let mut bypass = Vec::with_capacity(spec.bypass.len());
        let mut seen = HashSet::with_capacity(spec.bypass.len());
        for (i, entry) in spec.bypass.iter().enumerate() {
            let rule = parse_bypass(entry).map_err(|r| PacError::with_value(format!("bypass[{i}]"), entry, r))?;
            if seen.insert(rule.clone()) {
                bypass.push(rule);
            }
        }

        let host = name::canonical_proxy_host(&spec.proxy_host)
            .map_err(|r| PacError::with_value("proxy_host", &spec.proxy_host, r))?;
        if spec.slots.is_empty() {
            return Err(PacError::new("slots", "at least one slot is required"));
        }
        let mut slots = Vec::with_capacity(spec.slots.len());
        for (i, s) in spec.slots.iter().enumerate() {
            for (field, port) in [("http_port", s.http_port), ("https_port", s.https_port)] {
                if port == 0 {
                    return Err(PacError::new(format!("slots[{i}].{field}"), "port 0 is not allowed"));
                }
            }
            slots.push(Slot {
                http: format!("{host}:{}", s.http_port),
                https: format!("{host}:{}", s.https_port),
            });
        }

        let on_premise = match &spec.on_premise {
            None => None,
            Some(op) => Some(validate_on_premise(op, spec.fail_open)?),
        };

        Ok(Pac {
            bypass,
            slots,
            on_premise,
            fail_open: spec.fail_open,
        })
    }

    /// The PAC script. Deterministic: the same spec always gives the same
    /// bytes.
    pub fn render(&self) -> String {
        render::render(self)
    }

    /// The parsed bypass rules (duplicates removed, in spec order), for
    /// evaluating the same rules natively with [`BypassRule::matches`].
    pub fn bypass_rules(&self) -> &[BypassRule] {
        &self.bypass
    }
}

fn validate_on_premise(op: &OnPremiseSpec, fail_open: bool) -> Result<OnPremise, PacError> {
    const IND: &str = "on_premise.indicator_host";
    if op.indicator_host.parse::<IpAddr>().is_ok() || net::strip_brackets(&op.indicator_host) != op.indicator_host {
        return Err(PacError::with_value(
            IND,
            &op.indicator_host,
            "must be a host name: an IP address resolves to itself everywhere",
        ));
    }
    let indicator =
        name::canonical_host_name(&op.indicator_host).map_err(|r| PacError::with_value(IND, &op.indicator_host, r))?;

    if op.expected_addresses.is_empty() {
        return Err(PacError::new(
            "on_premise.expected_addresses",
            "at least one address is required",
        ));
    }
    let mut expected: Vec<String> = Vec::with_capacity(op.expected_addresses.len());
    for (i, a) in op.expected_addresses.iter().enumerate() {
        let ip: IpAddr = a.parse().map_err(|_| {
            PacError::with_value(
                format!("on_premise.expected_addresses[{i}]"),
                a,
                "not an IPv4 or IPv6 address",
            )
        })?;
        // dnsResolve returns canonical text (RFC 5952 for IPv6), so compare
        // against the canonical form, not what the admin typed.
        let canon = ip.to_string();
        if !expected.contains(&canon) {
            expected.push(canon);
        }
    }

    let reply = match &op.mode {
        OnPremiseMode::Direct => "DIRECT".to_owned(),
        OnPremiseMode::Proxies(list) => {
            if list.is_empty() {
                return Err(PacError::new(
                    "on_premise.mode.proxies",
                    "at least one proxy is required (or use Direct)",
                ));
            }
            let mut canon = Vec::with_capacity(list.len());
            for (i, p) in list.iter().enumerate() {
                canon.push(
                    name::canonical_host_port(p)
                        .map_err(|r| PacError::with_value(format!("on_premise.mode.proxies[{i}]"), p, r))?,
                );
            }
            render::proxy_list(canon.iter().map(String::as_str), fail_open)
        }
    };
    Ok(OnPremise {
        indicator,
        expected,
        reply,
    })
}

#[cfg(test)]
mod tests;
