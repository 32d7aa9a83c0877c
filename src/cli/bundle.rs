//! `msc support-bundle [--config FILE] [--out FILE]`: one `.tar.gz` with what
//! support needs to understand a client, and nothing secret.
//!
//! Contents (every file under one `msc-support-TIMESTAMP/` folder; see
//! `MANIFEST.txt` inside): versions, OS, kernel and io_uring availability,
//! the configuration with secrets redacted, certificate subjects, issuers
//! and validity (never key material: the key file is described by path,
//! size and mode only), the running client's status JSON, PAC and recent log
//! lines, gateway name resolution, the switch history and the enforcement
//! state.
//!
//! What the running client says comes from its read-only control API; a
//! client that is not running is noted, and the rest is still collected.
//! Every text file passes through [`scrub`] before it is written: PEM
//! blocks and secret-looking values never reach the archive.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

use crate::config::client::{ClientConfig, DEFAULT_CONTROL_PORT};

/// Key names whose values are never copied (matched case-insensitively,
/// as substrings). `key` alone is a path (`tls.key`) and is kept.
const SECRET_KEYS: [&str; 12] = [
    "token",
    "password",
    "passwd",
    "secret",
    "passphrase",
    "credential",
    "apikey",
    "api_key",
    "private",
    "auth",
    "cookie",
    "bearer",
];

pub const REDACTED: &str = "<redacted>";

fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| k.contains(s))
}

/// A string that looks like a credential rather than a name or a path: long,
/// one word, no path or domain separators, letters and digits mixed.
fn looks_like_token(v: &str) -> bool {
    v.len() >= 24
        && !v.contains(['/', '.', ' ', ':'])
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'='))
        && v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes().any(|b| b.is_ascii_alphabetic())
}

/// `scheme://user:password@host` with the password replaced.
fn strip_userinfo(v: &str) -> String {
    let Some(i) = v.find("://") else { return v.to_string() };
    let rest = &v[i + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{user}:{REDACTED}@{}", &v[..i + 3], &rest[at + 1..])
        }
        None => v.to_string(),
    }
}

fn redact_value(key: &str, v: &mut toml::Value) {
    if secret_key(key) {
        *v = toml::Value::String(REDACTED.into());
        return;
    }
    match v {
        toml::Value::String(s) => {
            if s.contains("-----BEGIN") || looks_like_token(s) {
                *s = REDACTED.into();
            } else if s.contains("://") && s.contains('@') {
                *s = strip_userinfo(s);
            }
        }
        toml::Value::Array(a) => {
            for x in a {
                redact_value(key, x);
            }
        }
        toml::Value::Table(t) => {
            for (k, x) in t.iter_mut() {
                redact_value(k, x);
            }
        }
        _ => {}
    }
}

/// The configuration text with secret-like values replaced by
/// [`REDACTED`]. Text that is not TOML is not copied at all (it could be
/// anything).
pub fn redact_config(text: &str) -> String {
    match text.parse::<toml::Table>() {
        Ok(mut t) => {
            for (k, v) in t.iter_mut() {
                redact_value(k, v);
            }
            let body = toml::to_string_pretty(&t).unwrap_or_else(|e| format!("# cannot print: {e}\n"));
            format!(
                "# The client configuration, re-printed with the values of secret-like keys\n# (token, password, secret, private, auth...) and token-like strings replaced\n# by {REDACTED}. Comments are not kept. Key *paths* are kept; key files are not.\n{body}"
            )
        }
        Err(e) => {
            // Not the error's Display: it quotes the offending line, which
            // may be the secret.
            let line = e
                .span()
                .map_or(0, |s| text[..s.start.min(text.len())].lines().count().max(1));
            let msg: String = e.message().lines().map(|l| format!("# {l}\n")).collect();
            format!("# The configuration is not valid TOML (line {line}); it is not included.\n{msg}")
        }
    }
}

/// Last line of defence for every text file in the bundle: PEM blocks are
/// dropped whole (a certificate in a log line is not worth the risk of a
/// key), and `name=value` / `name: value` pairs whose name looks secret
/// have their value replaced.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_pem = false;
    for line in text.split_inclusive('\n') {
        if line.contains("-----BEGIN") {
            in_pem = !line.contains("-----END");
            out.push_str(REDACTED);
            out.push_str(" (PEM block removed)\n");
            continue;
        }
        if in_pem {
            if line.contains("-----END") {
                in_pem = false;
            }
            continue;
        }
        out.push_str(&scrub_line(line));
    }
    out
}

/// Names that, followed by `:` in free text (`Authorization: ...`,
/// `password: ...`), introduce a secret. After `=` or as a quoted JSON key,
/// any [`SECRET_KEYS`] substring does.
const SECRET_HEADERS: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "password",
    "token",
    "secret",
];

fn scrub_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(pos) = rest.find(['=', ':']) {
        let (before, after) = rest.split_at(pos);
        let sep = &after[..1];
        let after = &after[1..];
        let quoted = before.ends_with('"');
        let bare = before.trim_end_matches('"');
        let name_start = bare
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |i| i + 1);
        let name = &bare[name_start..];
        let secret = !name.is_empty()
            && if sep == "=" || quoted {
                secret_key(name)
            } else {
                SECRET_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h))
            };
        out.push_str(before);
        out.push_str(sep);
        if secret {
            let value = after.trim_start_matches([' ', '"']);
            out.push_str(&after[..after.len() - value.len()]);
            // An `Authorization: Bearer xyz` value is two words.
            let skip_scheme = ["Bearer ", "Basic ", "Digest "]
                .iter()
                .find(|p| value.starts_with(*p))
                .map_or(0, |p| p.len());
            let end = value[skip_scheme..]
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | ',' | ';' | '}' | ']'))
                .map_or(value.len(), |e| e + skip_scheme);
            if end > 0 {
                out.push_str(REDACTED);
            }
            rest = &value[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What to collect and where to write it.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    /// The client configuration (for the control address, servers and
    /// certificate paths).
    pub config: Option<PathBuf>,
    /// The control API address, if not the configuration's `control.listen`.
    pub control: Option<SocketAddr>,
    /// The archive to write; default `msc-support-TIMESTAMP.tar.gz` in the
    /// current directory.
    pub out: Option<PathBuf>,
}

/// One file of the bundle.
#[derive(Debug)]
struct Entry {
    name: &'static str,
    what: &'static str,
    text: String,
}

#[expect(
    clippy::disallowed_methods,
    reason = "a command-line tool: blocking name resolution is fine here, never on a worker"
)]
fn resolve_now(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| e.to_string())
}

fn io_uring_state() -> String {
    let mut o = String::new();
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(v) => {
            let _ = writeln!(o, "kernel.io_uring_disabled = {}", v.trim());
        }
        Err(_) => o.push_str("kernel.io_uring_disabled: not present (older kernel: io_uring not restricted)\n"),
    }
    let probe = msc_io::runtime::block_on(msc_io::runtime::DriverChoice::IoUring, None, |_| async {});
    match probe {
        Ok(()) => o.push_str("io_uring: available (a ring was set up for this check)\n"),
        Err(e) => {
            let _ = writeln!(o, "io_uring: NOT available ({e}); workers use epoll");
        }
    }
    if std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some() {
        o.push_str("MONOIO_FORCE_LEGACY_DRIVER is set in this environment (forces epoll)\n");
    }
    o
}

fn system_info() -> String {
    let mut o = String::new();
    let _ = writeln!(o, "msc (this command) {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(o, "target {}-{}", std::env::consts::ARCH, std::env::consts::OS);
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    match read("/etc/os-release") {
        Ok(t) => {
            for l in t
                .lines()
                .filter(|l| ["PRETTY_NAME=", "VERSION_ID=", "ID="].iter().any(|k| l.starts_with(k)))
            {
                let _ = writeln!(o, "os {l}");
            }
        }
        Err(e) => {
            let _ = writeln!(o, "os: /etc/os-release unreadable ({e})");
        }
    }
    for (what, p) in [
        ("kernel", "/proc/sys/kernel/osrelease"),
        ("kernel build", "/proc/version"),
    ] {
        match read(p) {
            Ok(v) => {
                let _ = writeln!(o, "{what}: {v}");
            }
            Err(e) => {
                let _ = writeln!(o, "{what}: unreadable ({e})");
            }
        }
    }
    o.push_str(&io_uring_state());
    o
}

fn describe_certs(label: &str, path: &Path, o: &mut String) {
    let _ = writeln!(o, "[{label}] {}", path.display());
    match msc_tls::certs::load_certs(path) {
        Ok(certs) => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            for (i, der) in certs.iter().enumerate() {
                match msc_tls::certs::CertSummary::from_der(der) {
                    Some(c) => {
                        let when = |t: i64| {
                            u64::try_from(t).map_or_else(
                                |_| t.to_string(),
                                |s| {
                                    humantime::format_rfc3339_seconds(
                                        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s),
                                    )
                                    .to_string()
                                },
                            )
                        };
                        let left = c.not_after.saturating_sub(now);
                        let _ = writeln!(
                            o,
                            "  #{i} subject: {}\n      issuer: {}\n      serial: {}\n      not before: {}\n      not after: {} ({})",
                            c.subject,
                            c.issuer,
                            c.serial,
                            when(c.not_before),
                            when(c.not_after),
                            if left <= 0 {
                                "EXPIRED".to_string()
                            } else {
                                format!("{} days left", left / 86_400)
                            }
                        );
                    }
                    None => {
                        let _ = writeln!(o, "  #{i}: not a parsable X.509 certificate");
                    }
                }
            }
        }
        Err(e) => {
            let _ = writeln!(o, "  cannot read: {e}");
        }
    }
}

fn describe_key(path: &Path, o: &mut String) {
    use std::os::unix::fs::MetadataExt;
    let _ = writeln!(o, "[tls.key] {}", path.display());
    match std::fs::metadata(path) {
        Ok(m) => {
            let _ = writeln!(
                o,
                "  {} bytes, mode {:04o}, owner uid {} (contents never included){}",
                m.len(),
                m.mode() & 0o7777,
                m.uid(),
                if m.mode() & 0o077 != 0 {
                    "; WARNING: readable by group or others"
                } else {
                    ""
                }
            );
        }
        Err(e) => {
            let _ = writeln!(o, "  cannot stat: {e}");
        }
    }
}

/// Asks the running client's control API for `path`.
/// The client's log ring, over the control socket: it is served only to
/// trusted callers (root, `control.trusted_users`/`trusted_groups`).
fn logs_from_socket(cfg: Option<&ClientConfig>) -> String {
    let Some(path) = cfg.and_then(|c| c.socket.clone()) else {
        return "not available: no control socket (give --config; see control.socket)\n".to_string();
    };
    match crate::control::socket::request(&path, &crate::control::socket::Request::Logs) {
        Ok(r) if r.ok => r.message,
        Ok(r) => format!(
            "not available: {} (the log lines are served to trusted users only)\n",
            r.message
        ),
        Err(e) => format!("not available: {e:#}\n"),
    }
}

fn from_client(addr: SocketAddr, path: &str) -> String {
    match crate::cli::status::get(addr, path) {
        Ok(body) => body,
        Err(e) => format!("not available: {e:#}\n"),
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace([':', '-'], "")
        .trim_end_matches('Z')
        .replace('T', "-")
}

/// Collects everything and writes the archive; returns its path and the
/// names of the files in it.
pub fn create(opts: &BundleOptions) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let mut entries = Vec::new();
    let mut notes = String::new();
    let cfg = match &opts.config {
        Some(f) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
            entries.push(Entry {
                name: "config.toml",
                what: "the client configuration, secrets redacted",
                text: redact_config(&text),
            });
            match ClientConfig::load(f) {
                Ok(c) => Some(c),
                Err(e) => {
                    let _ = writeln!(notes, "configuration error: {e}");
                    None
                }
            }
        }
        None => {
            notes.push_str("no configuration given (--config): config.toml, certificates and resolution are missing\n");
            None
        }
    };
    let control = opts.control.unwrap_or_else(|| {
        cfg.as_ref().map_or_else(
            || SocketAddr::from(([127, 0, 0, 1], DEFAULT_CONTROL_PORT)),
            |c| c.control,
        )
    });

    entries.push(Entry {
        name: "system.txt",
        what: "versions, OS, kernel and io_uring availability",
        text: system_info(),
    });

    let status = from_client(control, "/status");
    let status_json: Option<serde_json::Value> = serde_json::from_str(&status).ok();
    entries.push(Entry {
        name: "status.json",
        what: "the running client's GET /status",
        text: status.clone(),
    });
    entries.push(Entry {
        name: "proxy.pac",
        what: "the PAC the running client serves",
        text: from_client(control, "/proxy.pac"),
    });
    entries.push(Entry {
        name: "logs.txt",
        what: "the running client's recent log lines (in-memory ring; visited URLs are not logged)",
        text: logs_from_socket(cfg.as_ref()),
    });
    entries.push(Entry {
        name: "metrics.txt",
        what: "the running client's GET /metrics",
        text: from_client(control, "/metrics"),
    });

    if let Some(c) = &cfg {
        let mut o = String::new();
        describe_certs("tls.cert", &c.tls.cert, &mut o);
        describe_certs("tls.ca", &c.tls.ca, &mut o);
        describe_key(&c.tls.key, &mut o);
        entries.push(Entry {
            name: "certificates.txt",
            what: "certificate subjects, issuers and validity; the key file by path, size and mode only",
            text: o,
        });
        let mut o = String::new();
        for s in &c.servers {
            let now = match resolve_now(&s.host, s.port) {
                Ok(a) => format!("{a:?}"),
                Err(e) => format!("FAILED: {e}"),
            };
            let _ = writeln!(o, "{} ({}): resolves now to {now}", s.name, s.address);
            let client_view = status_json
                .as_ref()
                .and_then(|v| v["gateways"].as_array())
                .and_then(|g| g.iter().find(|g| g["name"] == s.name.as_str()))
                .map(|g| g["resolved"].to_string());
            if let Some(v) = client_view {
                let _ = writeln!(o, "    the running client uses {v}");
            }
        }
        entries.push(Entry {
            name: "resolution.txt",
            what: "gateway name resolution, now and as the running client sees it",
            text: o,
        });
    }
    let switches = status_json.as_ref().map_or_else(
        || "not available: the client did not answer\n".to_string(),
        |v| {
            let mut s = serde_json::to_string_pretty(&serde_json::json!({
                "last_switch": v["last_switch"],
                "recent": v["switches"],
            }))
            .unwrap_or_default();
            s.push('\n');
            s
        },
    );
    entries.push(Entry {
        name: "switches.json",
        what: "gateway switch history (newest first)",
        text: switches,
    });
    entries.push(Entry {
        name: "enforcement.txt",
        what: "proxy-settings enforcement state",
        text: match status_json.as_ref().map(|s| &s["enforcement"]) {
            Some(e) if !e.is_null() => format!("{}\n", serde_json::to_string_pretty(e).unwrap_or_default()),
            Some(_) => "no report: msc watchdog (which enforces the proxy settings) has not reported to this client, or enforcement is switched off\n".to_string(),
            None => "not available: the client's status could not be read\n".to_string(),
        },
    });
    if !notes.is_empty() {
        entries.push(Entry {
            name: "notes.txt",
            what: "problems met while collecting",
            text: notes,
        });
    }
    let mut manifest = format!(
        "msc support bundle, made {} by msc {}\n\n",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        env!("CARGO_PKG_VERSION")
    );
    for e in &entries {
        let _ = writeln!(manifest, "{:<18} {}", e.name, e.what);
    }
    manifest.push_str(
        "\nNever included: private keys, key file contents, secret-like configuration values,\nvisited URLs (the client does not log them by default).\n",
    );
    entries.insert(
        0,
        Entry {
            name: "MANIFEST.txt",
            what: "this list",
            text: manifest,
        },
    );

    let ts = timestamp();
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("msc-support-{ts}.tar.gz")));
    let dir = format!("msc-support-{ts}");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut names = Vec::new();
    for e in &entries {
        let body = scrub(&e.text);
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        let path = format!("{dir}/{}", e.name);
        tar.append_data(&mut h, &path, body.as_bytes())
            .with_context(|| format!("cannot write {}", out.display()))?;
        names.push(path);
    }
    let mut gz = tar.into_inner().context("cannot finish the archive")?;
    gz.flush()?;
    gz.finish().context("cannot finish the archive")?;
    Ok((out, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_secrets_are_redacted_paths_kept() {
        let text = r#"
workers = 2
[tls]
ca = "ca.pem"
cert = "client.pem"
key = "/etc/msc/client-key.pem"
[update]
token = "tok-1234567890"
url = "https://user:hunter2@updates.example/feed"
[auth]
user = "alice"
[[servers]]
name = "gw1"
address = "gw1.example:443"
blob = "AbCdEf0123456789AbCdEf0123456789"
pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----"
"#;
        let r = redact_config(text);
        for secret in [
            "tok-1234567890",
            "hunter2",
            "alice",
            "AbCdEf0123456789",
            "PRIVATE KEY",
            "MIIEvQ",
        ] {
            assert!(!r.contains(secret), "{secret} leaked:\n{r}");
        }
        for kept in [
            "/etc/msc/client-key.pem",
            "gw1.example:443",
            "https://user:",
            "updates.example/feed",
        ] {
            assert!(r.contains(kept), "{kept} missing:\n{r}");
        }
        let back: toml::Table = r.parse().expect("still TOML");
        assert_eq!(back["update"]["token"].as_str(), Some(REDACTED));
        assert!(redact_config("not = [toml").starts_with("# The configuration is not valid TOML"));
        assert!(!redact_config("x = \"secret_value\" y").contains("secret_value"));
    }

    #[test]
    fn scrub_removes_pem_blocks_and_secret_pairs() {
        let t = "a line\n-----BEGIN PRIVATE KEY-----\nMIIabc\n-----END PRIVATE KEY-----\nGET /x?token=abc123&q=1 password: p4ss \"api_key\": \"zz9\"\nauthorization=Bearer-xyz done\nProxy-Authorization: Basic dXNlcjpw\n";
        let s = scrub(t);
        for secret in [
            "PRIVATE KEY",
            "MIIabc",
            "abc123",
            "p4ss",
            "zz9",
            "Bearer-xyz",
            "dXNlcjpw",
        ] {
            assert!(!s.contains(secret), "{secret} leaked:\n{s}");
        }
        assert!(s.contains("a line\n"));
        assert!(s.contains("q=1"));
        assert!(s.contains(" done"));
        // Ordinary text passes unchanged.
        let plain = "2026-01-01T00:00:00Z INFO gateway switch: gw1 -> gw2: reason x=1\n";
        assert_eq!(scrub(plain), plain);
        let reason = "{\"reason\": \"a gateway failed authentication: requests are refused\"}\n";
        assert_eq!(scrub(reason), reason);
    }

    #[test]
    fn tokens_are_told_from_names_and_paths() {
        assert!(looks_like_token("ghp_0123456789abcdefABCDEF0123"));
        assert!(!looks_like_token("gateway-frankfurt-1"));
        assert!(!looks_like_token("/etc/msc/keys/client-0123456789abcdef.pem"));
        assert!(!looks_like_token("gw1.example.com:443"));
    }
}
