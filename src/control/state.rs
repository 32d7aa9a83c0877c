//! The client's state as its user sees it: one state machine, a pure
//! function of events and the clock (`now` is always an argument), so every
//! transition is tested without threads or timers.
//!
//! The state is derived from facts the machine keeps: whether a gateway
//! answered, the client certificate's expiry, the enforcement backends'
//! health, and a trusted user's disable. Precedence, highest first:
//! `Disabled` (the user chose it), `Error` (something the user must know:
//! expired certificate, no gateway and traffic going DIRECT or refused,
//! enforcement failing, certificate expiring soon), `ConnectionPending`
//! (starting: no gateway answered yet), `Enabled`.
//!
//! Other parts read it through [`ClientState`] (`Display` for one line,
//! serde for `/status`, [`ClientState::kind`] for icons and metrics).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// What the client is doing, as shown by `msc status`, `/status`, the status
/// page, the tray and the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClientState {
    /// Traffic goes through a gateway (or DIRECT on premise, by policy).
    Enabled,
    /// A trusted user turned protection off: the PAC says DIRECT and the
    /// client relays DIRECT, until `until` or the next screen lock, logout,
    /// suspend or shutdown.
    Disabled {
        #[serde(with = "rfc3339")]
        until: SystemTime,
        reason: String,
        /// Who: `user name (uid N)`.
        by: String,
    },
    /// Starting: no gateway has answered yet.
    ConnectionPending { why: String },
    /// Something the user must know about.
    Error { reason: String },
}

impl ClientState {
    /// A short stable label: `enabled`, `disabled`, `connection_pending`, `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientState::Enabled => "enabled",
            ClientState::Disabled { .. } => "disabled",
            ClientState::ConnectionPending { .. } => "connection_pending",
            ClientState::Error { .. } => "error",
        }
    }
}

impl fmt::Display for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientState::Enabled => f.write_str("enabled"),
            ClientState::Disabled { until, reason, by } => write!(
                f,
                "disabled by {by} until {}: {reason}",
                humantime::format_rfc3339_seconds(*until)
            ),
            ClientState::ConnectionPending { why } => write!(f, "connection pending: {why}"),
            ClientState::Error { reason } => write!(f, "error: {reason}"),
        }
    }
}

/// A trusted user's disable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disable {
    pub until: SystemTime,
    pub reason: String,
    pub by: String,
}

/// Why protection came back on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnableCause {
    /// `msc enable` by this caller.
    User(String),
    /// The disable's time was up.
    TimeUp,
    /// logind: a session was locked.
    ScreenLock,
    /// logind: a session was removed (logout).
    Logout,
    /// logind: the machine is about to suspend.
    Suspend,
    /// logind: the machine is about to shut down.
    Shutdown,
}

impl fmt::Display for EnableCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnableCause::User(by) => write!(f, "enabled by {by}"),
            EnableCause::TimeUp => f.write_str("the disable period is over"),
            EnableCause::ScreenLock => f.write_str("the screen was locked"),
            EnableCause::Logout => f.write_str("a session ended (logout)"),
            EnableCause::Suspend => f.write_str("the machine is suspending"),
            EnableCause::Shutdown => f.write_str("the machine is shutting down"),
        }
    }
}

/// An input to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client (re)started: no gateway has answered yet.
    Started,
    /// A gateway answered (or the laptop is on premise with direct access).
    GatewayAnswered,
    /// Every gateway was tried and none can be used; `direct`: traffic goes
    /// DIRECT (fail-open), else it is refused.
    NoGateway {
        direct: bool,
        reason: String,
    },
    /// The client certificate's `notAfter`.
    Certificate {
        not_after: SystemTime,
    },
    /// The proxy-settings enforcement: `Some(reason)` while it fails.
    Enforcement(Option<String>),
    Disable(Disable),
    Enable(EnableCause),
    /// Time passed: ends an expired disable, re-judges certificate expiry.
    Tick,
}

/// A change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: ClientState,
    pub to: ClientState,
    /// Set when a disable ended.
    pub enabled_because: Option<EnableCause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Connectivity {
    Starting,
    Gateway,
    NoGateway { direct: bool, reason: String },
}

/// How long before the client certificate's expiry the state turns to `Error`.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The state machine. Lives on the control thread.
#[derive(Debug, Clone)]
pub struct Machine {
    connectivity: Connectivity,
    cert_not_after: Option<SystemTime>,
    enforcement: Option<String>,
    disabled: Option<Disable>,
    warn_before: Duration,
    state: ClientState,
}

impl Default for Machine {
    fn default() -> Machine {
        Machine::new(EXPIRY_WARNING)
    }
}

impl Machine {
    /// A machine that has just started; the certificate turns the state to
    /// `Error` `warn_before` its expiry.
    pub fn new(warn_before: Duration) -> Machine {
        Machine {
            connectivity: Connectivity::Starting,
            cert_not_after: None,
            enforcement: None,
            disabled: None,
            warn_before,
            state: ClientState::ConnectionPending {
                why: "starting: no gateway has answered yet".into(),
            },
        }
    }

    pub fn state(&self) -> &ClientState {
        &self.state
    }

    /// The active disable, if any (the data path relays DIRECT while set).
    pub fn disabled(&self) -> Option<&Disable> {
        self.disabled.as_ref()
    }

    /// When the machine next needs a [`Event::Tick`] (the end of a disable).
    pub fn next_deadline(&self) -> Option<SystemTime> {
        self.disabled.as_ref().map(|d| d.until)
    }

    /// Applies `ev` at `now`; returns the transition if the state changed.
    pub fn apply(&mut self, ev: Event, now: SystemTime) -> Option<Transition> {
        let mut enabled_because = None;
        match ev {
            Event::Started => self.connectivity = Connectivity::Starting,
            Event::GatewayAnswered => self.connectivity = Connectivity::Gateway,
            Event::NoGateway { direct, reason } => self.connectivity = Connectivity::NoGateway { direct, reason },
            Event::Certificate { not_after } => self.cert_not_after = Some(not_after),
            Event::Enforcement(r) => self.enforcement = r,
            Event::Disable(d) => {
                if d.until > now {
                    self.disabled = Some(d);
                }
            }
            Event::Enable(cause) => {
                if self.disabled.take().is_some() {
                    enabled_because = Some(cause);
                }
            }
            Event::Tick => {}
        }
        if self.disabled.as_ref().is_some_and(|d| d.until <= now) {
            self.disabled = None;
            enabled_because = Some(EnableCause::TimeUp);
        }
        let to = self.derive(now);
        if to == self.state {
            return None;
        }
        let from = std::mem::replace(&mut self.state, to.clone());
        Some(Transition {
            from,
            to,
            enabled_because,
        })
    }

    fn derive(&self, now: SystemTime) -> ClientState {
        if let Some(d) = &self.disabled {
            return ClientState::Disabled {
                until: d.until,
                reason: d.reason.clone(),
                by: d.by.clone(),
            };
        }
        let mut errors = Vec::new();
        let mut soon = None;
        if let Some(na) = self.cert_not_after {
            let date = humantime::format_rfc3339_seconds(na);
            if na <= now {
                errors.push(format!(
                    "the client certificate expired at {date}: gateways refuse it; ask for a new one"
                ));
            } else if let Ok(left) = na.duration_since(now)
                && left <= self.warn_before
            {
                let days = left.as_secs() / 86_400;
                let hours = (left.as_secs() % 86_400) / 3600;
                soon = Some(format!(
                    "the client certificate expires at {date} (in {days}d {hours}h); ask for a new one"
                ));
            }
        }
        if let Connectivity::NoGateway { direct, reason } = &self.connectivity {
            errors.push(if *direct {
                format!("no gateway is reachable: traffic goes DIRECT, unscanned (fail-open): {reason}")
            } else {
                format!("no gateway can be used: requests are refused: {reason}")
            });
        }
        if let Some(r) = &self.enforcement {
            errors.push(format!("the browser proxy settings cannot be enforced: {r}"));
        }
        errors.extend(soon);
        if !errors.is_empty() {
            return ClientState::Error {
                reason: errors.join("; "),
            };
        }
        match self.connectivity {
            Connectivity::Starting => ClientState::ConnectionPending {
                why: "starting: no gateway has answered yet".into(),
            },
            _ => ClientState::Enabled,
        }
    }
}

/// What the admin configuration allows for `msc disable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisablePolicy {
    pub allowed: bool,
    pub max: Duration,
}

/// The longest accepted reason, in characters.
pub const MAX_REASON: usize = 200;

/// Checks a disable request from a caller already known to be trusted:
/// permitted by the admin, a duration within the maximum, a reason.
pub fn check_disable(
    policy: DisablePolicy,
    duration: &str,
    reason: &str,
    by: &str,
    now: SystemTime,
) -> Result<Disable, String> {
    if !policy.allowed {
        return Err("disabling is not permitted by the administrator ([disable] allowed = false)".into());
    }
    let d = humantime::parse_duration(duration.trim())
        .map_err(|e| format!("invalid duration '{duration}': {e} (examples: 10m, 1h)"))?;
    if d.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    if d > policy.max {
        return Err(format!(
            "{} is longer than the maximum the administrator allows ({})",
            humantime::format_duration(d),
            humantime::format_duration(policy.max)
        ));
    }
    let reason = reason.trim();
    if reason.is_empty() {
        return Err("a reason is required (--reason TEXT); it is logged".into());
    }
    if reason.chars().count() > MAX_REASON {
        return Err(format!("the reason is longer than {MAX_REASON} characters"));
    }
    if reason.chars().any(char::is_control) {
        return Err("the reason must be one line of text (no control characters)".into());
    }
    Ok(Disable {
        until: now + d,
        reason: reason.to_string(),
        by: by.to_string(),
    })
}

/// `SystemTime` as an RFC 3339 string (UTC, seconds).
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }

    fn disable(until: u64) -> Event {
        Event::Disable(Disable {
            until: at(until),
            reason: "vendor portal".into(),
            by: "alice (uid 1000)".into(),
        })
    }

    fn running() -> Machine {
        let mut m = Machine::default();
        m.apply(
            Event::Certificate {
                not_after: at(365 * 86_400),
            },
            at(0),
        );
        m.apply(Event::GatewayAnswered, at(0));
        assert_eq!(m.state(), &ClientState::Enabled);
        m
    }

    #[test]
    fn starts_pending_then_enabled_when_a_gateway_answers() {
        let mut m = Machine::default();
        assert_eq!(m.state().kind(), "connection_pending");
        // A certificate far from expiry changes nothing.
        assert_eq!(
            m.apply(
                Event::Certificate {
                    not_after: at(365 * 86_400)
                },
                at(0)
            ),
            None
        );
        let t = m.apply(Event::GatewayAnswered, at(1)).unwrap();
        assert_eq!(t.from.kind(), "connection_pending");
        assert_eq!(t.to, ClientState::Enabled);
        assert_eq!(t.enabled_because, None);
        // The same fact again is no transition.
        assert_eq!(m.apply(Event::GatewayAnswered, at(2)), None);
        // A restart (reload) is pending again.
        assert_eq!(m.apply(Event::Started, at(3)).unwrap().to.kind(), "connection_pending");
    }

    #[test]
    fn no_gateway_is_an_error_saying_direct_or_refused() {
        let mut m = Machine::default();
        let t = m
            .apply(
                Event::NoGateway {
                    direct: true,
                    reason: "gw1: connection refused".into(),
                },
                at(0),
            )
            .unwrap();
        let ClientState::Error { reason } = &t.to else {
            panic!("{:?}", t.to)
        };
        assert!(
            reason.contains("DIRECT") && reason.contains("gw1: connection refused"),
            "{reason}"
        );
        let t = m
            .apply(
                Event::NoGateway {
                    direct: false,
                    reason: "gw1: bad certificate".into(),
                },
                at(1),
            )
            .unwrap();
        assert!(t.to.to_string().contains("refused"), "{}", t.to);
        assert_eq!(m.apply(Event::GatewayAnswered, at(2)).unwrap().to, ClientState::Enabled);
    }

    #[test]
    fn certificate_expiring_soon_then_expired() {
        let mut m = running();
        // 10 days left: within the 14-day warning.
        let t = m
            .apply(
                Event::Certificate {
                    not_after: at(10 * 86_400),
                },
                at(0),
            )
            .unwrap();
        let s = t.to.to_string();
        assert!(
            s.starts_with("error: the client certificate expires at") && s.contains("in 10d 0h"),
            "{s}"
        );
        // Time passes: the text follows the clock (a tick re-judges it).
        let t = m.apply(Event::Tick, at(9 * 86_400)).unwrap();
        assert!(t.to.to_string().contains("in 1d 0h"), "{}", t.to);
        let t = m.apply(Event::Tick, at(10 * 86_400)).unwrap();
        assert!(t.to.to_string().contains("expired at"), "{}", t.to);
        // A renewed certificate clears it.
        let t = m
            .apply(
                Event::Certificate {
                    not_after: at(400 * 86_400),
                },
                at(10 * 86_400),
            )
            .unwrap();
        assert_eq!(t.to, ClientState::Enabled);
    }

    #[test]
    fn enforcement_failing_and_recovering() {
        let mut m = running();
        let t = m
            .apply(Event::Enforcement(Some("dconf: permission denied".into())), at(0))
            .unwrap();
        assert_eq!(
            t.to,
            ClientState::Error {
                reason: "the browser proxy settings cannot be enforced: dconf: permission denied".into()
            }
        );
        assert_eq!(
            m.apply(Event::Enforcement(None), at(1)).unwrap().to,
            ClientState::Enabled
        );
    }

    #[test]
    fn several_errors_are_listed_most_serious_first() {
        let mut m = running();
        m.apply(Event::Enforcement(Some("kde: no kioslaverc".into())), at(0));
        m.apply(Event::Certificate { not_after: at(86_400) }, at(0));
        let t = m
            .apply(
                Event::NoGateway {
                    direct: true,
                    reason: "gw1: timed out".into(),
                },
                at(0),
            )
            .unwrap();
        let s = t.to.to_string();
        let (a, b, c) = (
            s.find("no gateway").unwrap(),
            s.find("enforced").unwrap(),
            s.find("expires at").unwrap(),
        );
        assert!(a < b && b < c, "{s}");
        m.apply(Event::Tick, at(86_400));
        let s = m.state().to_string();
        assert!(s.find("expired at").unwrap() < s.find("no gateway").unwrap(), "{s}");
    }

    #[test]
    fn disable_and_enable_by_user() {
        let mut m = running();
        let t = m.apply(disable(1800), at(0)).unwrap();
        assert_eq!(
            t.to,
            ClientState::Disabled {
                until: at(1800),
                reason: "vendor portal".into(),
                by: "alice (uid 1000)".into()
            }
        );
        assert!(m.disabled().is_some());
        assert_eq!(m.next_deadline(), Some(at(1800)));
        // Disabled hides errors: the user chose DIRECT.
        assert_eq!(
            m.apply(
                Event::NoGateway {
                    direct: true,
                    reason: "x".into()
                },
                at(5)
            ),
            None
        );
        let t = m
            .apply(Event::Enable(EnableCause::User("root (uid 0)".into())), at(10))
            .unwrap();
        assert_eq!(t.enabled_because, Some(EnableCause::User("root (uid 0)".into())));
        // Back to what the facts say (the gateway is gone meanwhile).
        assert_eq!(t.to.kind(), "error");
        assert!(m.disabled().is_none());
        assert_eq!(m.next_deadline(), None);
        // Enabling when not disabled is no transition and names no cause.
        assert_eq!(m.apply(Event::Enable(EnableCause::ScreenLock), at(11)), None);
    }

    #[test]
    fn disable_again_replaces_the_period() {
        let mut m = running();
        m.apply(disable(1800), at(0));
        let t = m.apply(disable(60), at(1)).unwrap();
        assert!(matches!(t.to, ClientState::Disabled { until, .. } if until == at(60)));
    }

    #[test]
    fn disable_ends_when_time_is_up() {
        let mut m = running();
        m.apply(disable(60), at(0));
        assert_eq!(m.apply(Event::Tick, at(59)), None);
        let t = m.apply(Event::Tick, at(60)).unwrap();
        assert_eq!(t.to, ClientState::Enabled);
        assert_eq!(t.enabled_because, Some(EnableCause::TimeUp));
        // Any event past the deadline ends it too (a late tick is not needed).
        m.apply(disable(120), at(60));
        let t = m.apply(Event::GatewayAnswered, at(500)).unwrap();
        assert_eq!(t.enabled_because, Some(EnableCause::TimeUp));
        // A disable that is already over does nothing.
        assert_eq!(m.apply(disable(10), at(600)), None);
    }

    #[test]
    fn each_session_event_enables() {
        for cause in [
            EnableCause::ScreenLock,
            EnableCause::Logout,
            EnableCause::Suspend,
            EnableCause::Shutdown,
        ] {
            let mut m = running();
            m.apply(disable(1800), at(0));
            let t = m.apply(Event::Enable(cause.clone()), at(1)).unwrap();
            assert_eq!(t.to, ClientState::Enabled);
            assert_eq!(t.enabled_because, Some(cause));
        }
    }

    #[test]
    fn serde_and_display() {
        let s = ClientState::Disabled {
            until: at(0),
            reason: "r".into(),
            by: "alice (uid 1000)".into(),
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["kind"], "disabled");
        assert_eq!(j["until"], "2027-01-15T08:00:00Z");
        assert_eq!(serde_json::from_value::<ClientState>(j).unwrap(), s);
        assert_eq!(
            s.to_string(),
            "disabled by alice (uid 1000) until 2027-01-15T08:00:00Z: r"
        );
        let e = serde_json::to_value(ClientState::ConnectionPending { why: "w".into() }).unwrap();
        assert_eq!(e, serde_json::json!({"kind": "connection_pending", "why": "w"}));
        assert_eq!(
            serde_json::to_value(ClientState::Enabled).unwrap(),
            serde_json::json!({"kind": "enabled"})
        );
    }

    #[test]
    fn disable_rules() {
        let p = DisablePolicy {
            allowed: true,
            max: Duration::from_secs(3600),
        };
        let d = check_disable(p, "30m", "  vendor portal ", "alice", at(0)).unwrap();
        assert_eq!((d.until, d.reason.as_str()), (at(1800), "vendor portal"));
        assert!(check_disable(p, "1h", "r", "a", at(0)).is_ok());
        let e = check_disable(p, "61m", "r", "a", at(0)).unwrap_err();
        assert!(e.contains("longer than the maximum") && e.contains("1h"), "{e}");
        assert!(
            check_disable(p, "30m", " ", "a", at(0))
                .unwrap_err()
                .contains("reason is required")
        );
        assert!(
            check_disable(p, "30m", "a\nb", "a", at(0))
                .unwrap_err()
                .contains("one line")
        );
        assert!(check_disable(p, "30m", &"x".repeat(201), "a", at(0)).is_err());
        assert!(
            check_disable(p, "soon", "r", "a", at(0))
                .unwrap_err()
                .contains("invalid duration")
        );
        assert!(check_disable(p, "0s", "r", "a", at(0)).is_err());
        let off = DisablePolicy { allowed: false, ..p };
        assert!(
            check_disable(off, "1m", "r", "a", at(0))
                .unwrap_err()
                .contains("not permitted")
        );
    }
}
