//! `[enforce]` in client.toml: whether and how `msc enforce` (and the
//! watchdog's enforcement loop) keeps the machine's proxy settings pointed at
//! the client. See docs/enforcement.md.

use std::time::Duration;

use serde::Deserialize;

use super::{Check, ConfigError};

/// The backends msc knows, in the order they are applied.
pub const BACKENDS: &[&str] = &["gnome", "kde", "firefox", "chromium", "env"];

/// Backends whose settings are per user (the others are machine-wide locks).
const PER_USER: &[&str] = &["env"];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnforce {
    enabled: Option<bool>,
    interval: Option<String>,
    backends: Option<Vec<String>>,
    pac_url: Option<String>,
    #[serde(default)]
    exceptions: Vec<RawException>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawException {
    backend: String,
    user: Option<String>,
    reason: String,
}

/// An administrator-approved exception: msc leaves this backend (or, for
/// `env`, this user) alone and removes what it had written there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    pub backend: String,
    /// `None`: the whole backend.
    pub user: Option<String>,
    /// Why (logged when the exception takes effect).
    pub reason: String,
}

/// Which backends run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// Every backend whose program is installed (its detect step).
    Auto,
    /// Exactly these, whether or not their program is installed.
    List(Vec<String>),
}

/// A validated `[enforce]` table.
#[derive(Clone, Debug)]
pub struct EnforceConfig {
    /// The administrator's switch: `false` = msc applies nothing and removes
    /// what it applied before.
    pub enabled: bool,
    /// How often the settings are re-checked (and drift restored).
    pub interval: Duration,
    pub backends: BackendChoice,
    /// The PAC URL to enforce; `None` = the client's control API
    /// (`http://<control.listen>/proxy.pac`).
    pub pac_url: Option<String>,
    pub exceptions: Vec<Exception>,
}

impl Default for EnforceConfig {
    fn default() -> Self {
        EnforceConfig {
            enabled: true,
            interval: Duration::from_secs(15),
            backends: BackendChoice::Auto,
            pac_url: None,
            exceptions: Vec::new(),
        }
    }
}

fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 32
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !u.starts_with('-')
}

pub(crate) fn validate(c: &Check<'_>, raw: RawEnforce) -> Result<EnforceConfig, ConfigError> {
    let mut e = EnforceConfig {
        enabled: raw.enabled.unwrap_or(true),
        interval: c.duration_or("enforce.interval", &raw.interval, Duration::from_secs(15))?,
        ..EnforceConfig::default()
    };
    if e.interval < Duration::from_secs(1) {
        return Err(c.err("enforce.interval", "must be at least 1s"));
    }
    if let Some(list) = raw.backends {
        let mut names = Vec::new();
        for (i, b) in list.iter().enumerate() {
            let b = b.trim();
            if b == "auto" && list.len() == 1 {
                names.clear();
                break;
            }
            if !BACKENDS.contains(&b) {
                return Err(c.err(
                    format!("enforce.backends[{i}]"),
                    format!("'{b}' is not one of {} (or [\"auto\"] alone)", BACKENDS.join(", ")),
                ));
            }
            if !names.iter().any(|n| n == b) {
                names.push(b.to_string());
            }
        }
        if !names.is_empty() {
            e.backends = BackendChoice::List(names);
        } else if !list.iter().any(|b| b.trim() == "auto") {
            return Err(c.err(
                "enforce.backends",
                "empty: list backends, use [\"auto\"], or set enabled = false",
            ));
        }
    }
    if let Some(u) = raw.pac_url {
        let t = u.trim();
        if !(t.starts_with("http://") || t.starts_with("https://") || t.starts_with("file://"))
            || t.len() <= "http://".len()
            || t.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'\'' || b == b'"')
        {
            return Err(c.err(
                "enforce.pac_url",
                format!("'{u}' is not an http://, https:// or file:// URL (without quotes or spaces)"),
            ));
        }
        e.pac_url = Some(t.to_string());
    }
    for (i, x) in raw.exceptions.into_iter().enumerate() {
        let key = |f: &str| format!("enforce.exceptions[{i}].{f}");
        let backend = x.backend.trim().to_string();
        if !BACKENDS.contains(&backend.as_str()) {
            return Err(c.err(
                key("backend"),
                format!("'{backend}' is not one of {}", BACKENDS.join(", ")),
            ));
        }
        if x.reason.trim().is_empty() {
            return Err(c.err(key("reason"), "say why (it is logged when the exception applies)"));
        }
        if let Some(u) = &x.user {
            if !PER_USER.contains(&backend.as_str()) {
                return Err(c.err(
                    key("user"),
                    format!(
                        "{backend} settings are machine-wide (a lock no single user can escape): \
                         an exception applies to the whole backend; remove `user`"
                    ),
                ));
            }
            if !valid_user(u) {
                return Err(c.err(key("user"), format!("'{u}' is not a valid user name")));
            }
        }
        e.exceptions.push(Exception {
            backend,
            user: x.user,
            reason: x.reason.trim().to_string(),
        });
    }
    Ok(e)
}
