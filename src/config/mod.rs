//! Configuration in two stages: raw serde structs as written in TOML, then
//! validated types the rest of the program uses. Every problem is reported as
//! `FILE: KEY: REASON`.

pub mod client;
pub mod enforce;
pub mod gateway;
pub mod remote;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// `[runtime]`, shared by both configuration kinds.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    pub(crate) driver: Option<String>,
    /// Where the instance locks live (see `agent::instance`).
    pub(crate) dir: Option<String>,
}

pub use crate::forward::access::AccessLogTarget;

/// The size at which an access log file rotates unless `log.access_max_mib` says otherwise.
const DEFAULT_ACCESS_LOG_MIB: u64 = 64;

/// A configuration problem: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Collects errors against one file.
pub(crate) struct Check<'a> {
    file: &'a Path,
}

impl Check<'_> {
    /// `v` as a path: relative paths are relative to the configuration
    /// file's directory.
    pub(crate) fn relative(&self, v: &str) -> PathBuf {
        let p = Path::new(v);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    pub(crate) fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Parses a duration such as `10s`, `500ms` or `5m`.
    pub(crate) fn duration(&self, key: &str, v: &str) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(v.trim())
            .map_err(|e| self.err(key, format!("invalid duration '{v}': {e} (examples: 500ms, 10s, 5m)")))?;
        if d.is_zero() {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(d)
    }

    /// [`Check::duration`] for an optional key, with a default.
    pub(crate) fn duration_or(
        &self,
        key: &str,
        v: &Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            Some(s) => self.duration(key, s),
            None => Ok(default),
        }
    }

    /// `runtime.dir`: a directory for the instance locks, relative to the
    /// configuration file's directory unless absolute; created at start.
    pub(crate) fn runtime_dir(&self, v: Option<&str>) -> Result<Option<PathBuf>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        if v.trim().is_empty() {
            return Err(self.err("runtime.dir", "must not be empty"));
        }
        Ok(Some(self.relative(v.trim())))
    }

    /// Resolves a path relative to the configuration file's directory and
    /// checks that it exists.
    pub(crate) fn file(&self, key: &str, v: &str) -> Result<PathBuf, ConfigError> {
        if v.trim().is_empty() {
            return Err(self.err(key, "must not be empty"));
        }
        let p = self.relative(v);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(p),
            Ok(m) if m.is_dir() => Err(self.err(key, format!("is a directory, not a file: {}", p.display()))),
            Ok(_) => Err(self.err(key, format!("not a regular file: {}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(self.err(key, format!("file not found: {}", p.display())))
            }
            Err(e) => Err(self.err(key, format!("cannot read {}: {e}", p.display()))),
        }
    }

    pub(crate) fn socket_addr(&self, key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
        v.trim().parse().map_err(|_| {
            self.err(
                key,
                format!("invalid address '{v}': expected IP:PORT, e.g. 127.0.0.1:8443"),
            )
        })
    }

    /// Parses an access-log target: "-"/"stderr", "off", or a file path
    /// (relative to the config file) in an existing directory.
    pub(crate) fn access_log(
        &self,
        key: &str,
        v: Option<&str>,
        max_mib: Option<u64>,
    ) -> Result<AccessLogTarget, ConfigError> {
        let max_bytes = match max_mib {
            None => DEFAULT_ACCESS_LOG_MIB << 20,
            Some(0) => return Err(self.err("log.access_max_mib", "must be at least 1")),
            Some(m) if m > 1 << 20 => return Err(self.err("log.access_max_mib", "at most 1048576 (1 TiB)")),
            Some(m) => m << 20,
        };
        Ok(match v.map(str::trim) {
            None | Some("-") | Some("stderr") => AccessLogTarget::Stderr,
            Some("off") => AccessLogTarget::Off,
            Some("") => return Err(self.err(key, "must not be empty (use \"-\" for stderr or \"off\")")),
            Some(p) => {
                let path = self.relative(p);
                if let Some(dir) = path.parent()
                    && !dir.as_os_str().is_empty()
                    && !dir.is_dir()
                {
                    return Err(self.err(key, format!("directory not found: {}", dir.display())));
                }
                AccessLogTarget::File { path, max_bytes }
            }
        })
    }

    /// Parses `runtime.driver`: "auto" (default), "io_uring" or "epoll".
    pub(crate) fn driver(&self, v: Option<&str>) -> Result<msc_io::runtime::DriverChoice, ConfigError> {
        use msc_io::runtime::DriverChoice;
        Ok(match v.map(str::trim) {
            None | Some("auto") => DriverChoice::Auto,
            Some("io_uring") => DriverChoice::IoUring,
            Some("epoll") => DriverChoice::Epoll,
            Some(o) => {
                return Err(self.err(
                    "runtime.driver",
                    format!("'{o}' is not \"auto\", \"io_uring\" or \"epoll\""),
                ));
            }
        })
    }

    pub(crate) fn workers(&self, v: usize) -> Result<usize, ConfigError> {
        match v {
            0 => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
            1..=256 => Ok(v),
            _ => Err(self.err(
                "workers",
                format!("{v} is too many (at most 256; 0 means one per core)"),
            )),
        }
    }
}

/// Reads and deserialises a TOML file; syntax and type errors name the key.
pub(crate) fn load_toml<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    parse_toml(file, &text)
}

pub(crate) fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(file, text, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let mut reason = inner.message().to_string();
        if let Some(line) = inner.span().map(|s| line_of(text, s.start)) {
            reason = format!("{reason} (line {line})");
        }
        ConfigError {
            file: file.to_path_buf(),
            key: if key == "." { String::new() } else { key },
            reason,
        }
    })
}

fn syntax_error(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start));
    ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        reason: match line {
            Some(l) => format!("TOML syntax error at line {l}: {}", e.message()),
            None => format!("TOML syntax error: {}", e.message()),
        },
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Which kind of configuration a file holds, guessed from its keys, for
/// `msc check-config`.
#[derive(Debug)]
pub enum AnyConfig {
    Client(Box<client::ClientConfig>),
    Gateway(Box<gateway::GatewayConfig>),
}

/// Loads a file as a client configuration if it has `[[servers]]`, else as a
/// gateway configuration.
pub fn load_any(file: &Path) -> Result<AnyConfig, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    let table: toml::Table = text.parse().map_err(|e| syntax_error(file, &text, &e))?;
    if table.contains_key("servers") {
        client::ClientConfig::from_text(file, &text).map(|c| AnyConfig::Client(Box::new(c)))
    } else if table.contains_key("listen") || table.contains_key("policy") {
        gateway::GatewayConfig::from_text(file, &text).map(|g| AnyConfig::Gateway(Box::new(g)))
    } else {
        Err(ConfigError {
            file: file.to_path_buf(),
            key: String::new(),
            reason: "neither a client configuration ([[servers]]) nor a gateway configuration (listen = ...)".into(),
        })
    }
}
