//! Configuration documents from the gateway (docs/fleet.md): which client
//! keys an administrator may set centrally, how a document is laid over the
//! local client.toml, and the client's own `[remote]` keys.
//!
//! A document is a TOML file of client.toml keys. It may only set the
//! centrally settable keys ([`CENTRAL`]); any other key (TLS paths, the
//! control API's address and socket, workers, runtime, `[remote]` itself...)
//! is local-only, and a document setting one is rejected naming the key. A
//! document is laid over the local file (tables merged key by key, any other
//! value, arrays included, replaced) and the result is validated exactly like
//! a client.toml: nothing half-valid is ever applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::client::ClientConfig;
use super::{Check, ConfigError};

/// The client.toml keys a gateway document may set. A table listed here may
/// be set whole or key by key; a key not listed (nor under one listed) is
/// local-only.
pub const CENTRAL: &[&str] = &[
    "servers",
    "pac.bypass",
    "pac.fail_open",
    "pac.on_premise",
    "pac.max_age",
    "pac.source",
    "control.trusted_users",
    "control.trusted_groups",
    "disable",
    "enforce",
    "uninstall",
    "tray",
];

/// The largest configuration document a client accepts.
pub const MAX_CONFIG_DOC: usize = 256 << 10;
/// The largest administrator PAC a client (and the gateway) accepts.
pub const MAX_PAC_DOC: usize = 1 << 20;

/// `[remote]` in client.toml (local-only).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemote {
    enabled: Option<bool>,
    interval: Option<String>,
    cache_dir: Option<String>,
    first_wait: Option<String>,
}

/// The client's `[remote]` settings.
#[derive(Clone, Debug)]
pub struct RemoteSettings {
    /// Fetch the configuration (and, with `pac.source = "gateway"`, the PAC)
    /// from the gateway.
    pub enabled: bool,
    /// Time between two fetches (each wait is this ±20 %, the original's
    /// hourly schedule with jitter).
    pub interval: Duration,
    /// Where the last good documents are kept.
    pub cache_dir: PathBuf,
    /// With no cached document, how long the start waits for the first fetch.
    pub first_wait: Duration,
    /// How the running configuration came about (set by
    /// `control::remote::effective`, never read from TOML).
    pub boot: Option<Arc<crate::control::remote::Boot>>,
}

impl RemoteSettings {
    /// The cached configuration document.
    pub fn config_cache(&self) -> PathBuf {
        self.cache_dir.join("remote-config.toml")
    }

    /// The cached administrator PAC.
    pub fn pac_cache(&self) -> PathBuf {
        self.cache_dir.join("remote.pac")
    }
}

/// Where the PAC the client serves comes from (`pac.source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PacSource {
    /// Rendered from the rules in the configuration (the default).
    #[default]
    Generated,
    /// The administrator's PAC, the gateway's `pac` document (the "official
    /// copy"), checked before it is served.
    Gateway,
}

pub(crate) fn pac_source(c: &Check<'_>, v: Option<&str>) -> Result<PacSource, ConfigError> {
    match v.map(str::trim) {
        None | Some("generated") => Ok(PacSource::Generated),
        Some("gateway") => Ok(PacSource::Gateway),
        Some(o) => Err(c.err(
            "pac.source",
            format!("'{o}' is not \"generated\" (the default) or \"gateway\" (the administrator's PAC)"),
        )),
    }
}

pub(crate) fn validate(c: &Check<'_>, raw: RawRemote) -> Result<RemoteSettings, ConfigError> {
    let interval = c.duration_or("remote.interval", &raw.interval, Duration::from_secs(3600))?;
    if interval < Duration::from_millis(100) {
        return Err(c.err("remote.interval", "must be at least 100ms"));
    }
    let first_wait = c.duration_or("remote.first_wait", &raw.first_wait, Duration::from_secs(5))?;
    if first_wait > Duration::from_secs(20) {
        return Err(c.err(
            "remote.first_wait",
            "at most 20s: the client must start (and report ready to the watchdog) without the gateway",
        ));
    }
    let cache_dir = match raw.cache_dir.as_deref().map(str::trim) {
        Some("") => return Err(c.err("remote.cache_dir", "must not be empty")),
        Some(v) => c.relative(v),
        // systemd's StateDirectory=, else beside the configuration file.
        None => std::env::var_os("STATE_DIRECTORY")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| c.file.parent().unwrap_or(Path::new(".")).to_path_buf()),
    };
    Ok(RemoteSettings {
        enabled: raw.enabled.unwrap_or(false),
        interval,
        cache_dir,
        first_wait,
        boot: None,
    })
}

/// Parses a document and checks that it sets only centrally settable keys.
/// `label` names the document in errors (e.g. "gateway gw1: config").
pub fn parse_document(label: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let err = |key: String, reason: String| ConfigError {
        file: label.to_path_buf(),
        key,
        reason,
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1);
        err(
            String::new(),
            match line {
                Some(l) => format!("TOML syntax error at line {l}: {}", e.message()),
                None => format!("TOML syntax error: {}", e.message()),
            },
        )
    })?;
    check_central(&table, "").map_err(|key| {
        err(
            key,
            "is local-only: a configuration from the gateway may not set it (see docs/config.md, Remote configuration)"
                .into(),
        )
    })?;
    Ok(table)
}

/// The first key of `t` (under `prefix`) that is not centrally settable.
fn check_central(t: &toml::Table, prefix: &str) -> Result<(), String> {
    for (k, v) in t {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if CENTRAL.contains(&path.as_str()) {
            continue;
        }
        let parent = CENTRAL.iter().any(|c| c.starts_with(&format!("{path}.")));
        match v {
            toml::Value::Table(inner) if parent => check_central(inner, &path)?,
            _ => return Err(path),
        }
    }
    Ok(())
}

/// Lays `doc` over `base`: tables merge key by key, anything else replaces.
pub fn merge(base: &mut toml::Table, doc: &toml::Table) {
    for (k, v) in doc {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(d)) => merge(b, d),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The configuration `doc_text` (labelled `label`) makes of the local file
/// `file` (whose text is `local_text`): parsed, checked for local-only keys,
/// merged and validated completely. Errors in the merged result are
/// reported against the document (the local file alone is valid).
pub fn overlay(file: &Path, local_text: &str, label: &Path, doc_text: &str) -> Result<ClientConfig, ConfigError> {
    let doc = parse_document(label, doc_text)?;
    let mut base: toml::Table = local_text.parse().map_err(|e: toml::de::Error| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        reason: format!("TOML syntax error: {}", e.message()),
    })?;
    merge(&mut base, &doc);
    ClientConfig::from_text(file, &base.to_string()).map_err(|e| ConfigError {
        file: label.to_path_buf(),
        ..e
    })
}

/// Checks a configuration profile on the gateway: central keys only, and
/// valid as a client configuration once laid over a stand-in client
/// (the gateway's own certificate files stand in for the client's, a
/// stand-in server for a profile that names none).
pub fn check_profile(file: &Path, text: &str, stand_in_tls: [&Path; 3]) -> Result<(), ConfigError> {
    let doc = parse_document(file, text)?;
    let mut base = toml::Table::new();
    let mut tls = toml::Table::new();
    for (k, p) in ["ca", "cert", "key"].iter().zip(stand_in_tls) {
        tls.insert((*k).into(), toml::Value::String(p.display().to_string()));
    }
    base.insert("tls".into(), toml::Value::Table(tls));
    let mut server = toml::Table::new();
    server.insert("name".into(), "stand-in".into());
    server.insert("address".into(), "127.0.0.1:1".into());
    server.insert("http_port".into(), toml::Value::Integer(1));
    base.insert("servers".into(), toml::Value::Array(vec![toml::Value::Table(server)]));
    // Checked against no control socket of this machine.
    let mut control = toml::Table::new();
    control.insert("socket".into(), "".into());
    base.insert("control".into(), toml::Value::Table(control));
    // A client that fetches documents (`pac.source = "gateway"` needs it).
    let mut remote = toml::Table::new();
    remote.insert("enabled".into(), toml::Value::Boolean(true));
    base.insert("remote".into(), toml::Value::Table(remote));
    merge(&mut base, &doc);
    ClientConfig::from_text(file, &base.to_string()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any regular file stands in for the certificates here.
    const ANY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");

    fn local() -> String {
        format!(
            "[tls]\nca = \"{ANY_FILE}\"\ncert = \"{ANY_FILE}\"\nkey = \"{ANY_FILE}\"\n[[servers]]\nname = \"gw1\"\naddress = \"127.0.0.1:8443\"\nhttp_port = 3128\n[pac]\nbypass = [\"local.test\"]\n"
        )
    }

    #[test]
    fn only_central_keys_may_be_set() {
        let l = Path::new("doc");
        for (doc, key) in [
            ("workers = 4", "workers"),
            ("[tls]\ncert = \"x\"", "tls"),
            ("[control]\nlisten = \"127.0.0.1:1\"", "control.listen"),
            ("[control]\nsocket = \"\"", "control.socket"),
            ("[remote]\nenabled = false", "remote"),
            ("[runtime]\ndriver = \"epoll\"", "runtime"),
            ("listen = \"127.0.0.2\"", "listen"),
            ("[pac]\nbypass = []\nfoo = 1", "pac.foo"),
            ("pac = 3", "pac"),
        ] {
            let e = parse_document(l, doc).unwrap_err();
            assert_eq!(e.key, key, "{doc}");
            assert!(e.reason.contains("local-only"), "{e}");
        }
        for ok in [
            "[pac]\nbypass = [\"a.test\"]\nfail_open = false\nsource = \"gateway\"",
            "[control]\ntrusted_users = [\"alice\"]",
            "[tray]\nhidden = true\n[uninstall]\nwarning = \"no\"\n[disable]\nallowed = true\n[enforce]\nenabled = false",
            "[[servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nhttp_port = 2",
        ] {
            parse_document(l, ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn overlay_merges_tables_and_replaces_lists_and_validates() {
        let f = Path::new("/etc/msc/client.toml");
        let l = Path::new("gateway gw1: config");
        let c = overlay(f, &local(), l, "[pac]\nbypass = [\"central.test\"]\nfail_open = false").unwrap();
        assert_eq!(c.pac.spec.bypass, vec!["central.test".to_string()]);
        assert!(!c.fail_open);
        assert_eq!(c.file, f);
        assert_eq!(c.servers[0].http_port, 3128);
        // Invalid once merged: reported against the document.
        let e = overlay(f, &local(), l, "[pac]\nfail_open = \"yes\"").unwrap_err();
        assert_eq!(e.file, l);
        assert!(e.key.contains("fail_open"), "{e}");
        let e = overlay(f, &local(), l, "[pac\nbypass = 1").unwrap_err();
        assert!(e.reason.contains("TOML syntax error at line 1"), "{e}");
        let e = overlay(f, &local(), l, "[pac]\nsource = \"elsewhere\"").unwrap_err();
        assert_eq!(e.key, "pac.source");
        // The administrator's PAC needs a client that fetches documents.
        let e = overlay(f, &local(), l, "[pac]\nsource = \"gateway\"").unwrap_err();
        assert!(e.reason.contains("remote.enabled"), "{e}");
        let fetching = format!("{}[remote]\nenabled = true\n", local());
        overlay(f, &fetching, l, "[pac]\nsource = \"gateway\"").unwrap();
    }

    #[test]
    fn profiles_are_checked_against_a_stand_in_client() {
        let f = Path::new("alice.toml");
        let tls = [Path::new(ANY_FILE); 3];
        check_profile(f, "[pac]\nbypass = [\"*.alice.test\"]\nsource = \"gateway\"", tls).unwrap();
        let e = check_profile(f, "[pac]\nbypass = [\"bad host name!\"]", tls).unwrap_err();
        assert!(e.key.starts_with("pac.bypass"), "{e}");
        let e = check_profile(f, "[[servers]]\nname = \"x\"\naddress = \"nope\"\nhttp_port = 1", tls).unwrap_err();
        assert_eq!(e.key, "servers[0].address", "{e}");
        assert_eq!(check_profile(f, "workers = 1", tls).unwrap_err().key, "workers");
    }
}
