//! The gateway's configuration (`msc gateway --config gateway.toml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use super::AccessLogTarget;
use super::{Check, ConfigError, load_toml, parse_toml};
use crate::gateway::policy::DenyList;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    workers: usize,
    #[serde(default)]
    runtime: super::RawRuntime,
    listen: String,
    tls: RawTls,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    probe: RawProbe,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    max_handshakes: Option<usize>,
    max_tunnels_per_identity: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    delay: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
    client_ca: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    handshake: Option<String>,
    first_byte: Option<String>,
    head: Option<String>,
    idle: Option<String>,
    connect: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    access: Option<String>,
}

/// Paths of the gateway's TLS credentials.
#[derive(Clone, Debug)]
pub struct GatewayTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// Time limits on the gateway's data path.
#[derive(Clone, Copy, Debug)]
pub struct GatewayTimeouts {
    pub handshake: Duration,
    /// From accept until the client's first TLS record (its ClientHello) is complete.
    pub first_byte: Duration,
    pub head: Duration,
    pub idle: Duration,
    pub connect: Duration,
}

/// A validated gateway configuration.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub file: PathBuf,
    pub workers: usize,
    /// The I/O driver of the worker runtimes.
    pub driver: msc_io::runtime::DriverChoice,
    pub listen: SocketAddr,
    pub tls: GatewayTls,
    pub deny: DenyList,
    pub timeouts: GatewayTimeouts,
    pub access_log: AccessLogTarget,
    /// Extra delay before answering probes (simulates a distant gateway in tests and demos).
    pub probe_delay: Option<Duration>,
    pub limits: GatewayLimits,
}

/// Flood limits, each per worker thread (so the data path stays lock-free).
#[derive(Clone, Copy, Debug)]
pub struct GatewayLimits {
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub max_tunnels_per_identity: usize,
}

impl GatewayConfig {
    pub fn load(file: &Path) -> Result<GatewayConfig, ConfigError> {
        validate(file, load_toml(file)?)
    }

    pub fn from_text(file: &Path, text: &str) -> Result<GatewayConfig, ConfigError> {
        validate(file, parse_toml(file, text)?)
    }
}

fn validate(file: &Path, raw: Raw) -> Result<GatewayConfig, ConfigError> {
    let c = Check { file };
    let workers = c.workers(raw.workers)?;
    let listen = c.socket_addr("listen", &raw.listen)?;
    let tls = GatewayTls {
        cert: c.file("tls.cert", &raw.tls.cert)?,
        key: c.file("tls.key", &raw.tls.key)?,
        client_ca: c.file("tls.client_ca", &raw.tls.client_ca)?,
    };
    let mut deny = DenyList::default();
    for (i, rule) in raw.policy.deny.iter().enumerate() {
        deny.add(rule)
            .map_err(|reason| c.err(format!("policy.deny[{i}]"), reason))?;
    }
    let t = &raw.timeouts;
    let d = |key: &str, v: &Option<String>, default: Duration| c.duration_or(key, v, default);
    let timeouts = GatewayTimeouts {
        handshake: d("timeouts.handshake", &t.handshake, Duration::from_secs(10))?,
        first_byte: d("timeouts.first_byte", &t.first_byte, Duration::from_secs(2))?,
        head: d("timeouts.head", &t.head, Duration::from_secs(30))?,
        idle: d("timeouts.idle", &t.idle, Duration::from_secs(300))?,
        connect: d("timeouts.connect", &t.connect, Duration::from_secs(10))?,
    };
    if timeouts.first_byte > timeouts.handshake {
        return Err(c.err("timeouts.first_byte", "must not exceed timeouts.handshake"));
    }
    let l = &raw.limits;
    let n = |key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(c.err(key, "must be at least 1")),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let limits = GatewayLimits {
        max_connections: n("limits.max_connections", l.max_connections, 10_000)?,
        max_handshakes: n("limits.max_handshakes", l.max_handshakes, 256)?,
        max_tunnels_per_identity: n("limits.max_tunnels_per_identity", l.max_tunnels_per_identity, 512)?,
    };
    let access_log = c.access_log("log.access", raw.log.access.as_deref())?;
    let probe_delay = match &raw.probe.delay {
        Some(v) => Some(c.duration("probe.delay", v)?),
        None => None,
    };
    let driver = c.driver(raw.runtime.driver.as_deref())?;
    Ok(GatewayConfig {
        file: file.to_path_buf(),
        workers,
        driver,
        listen,
        tls,
        deny,
        timeouts,
        access_log,
        probe_delay,
        limits,
    })
}
