//! The gateway's configuration (`msc gateway --config gateway.toml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use super::AccessLogTarget;
use super::{Check, ConfigError, load_toml, parse_toml};
use crate::forward::egress::{ConnectPorts, DEFAULT_CONNECT_PORTS, Egress};
use crate::forward::policy::DenyList;

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
    egress: RawEgress,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    probe: RawProbe,
    #[serde(default)]
    limits: RawLimits,
    profiles: Option<crate::gateway::profiles::RawProfiles>,
    #[serde(default)]
    releases: RawReleases,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReleases {
    dir: Option<String>,
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
    ticket_keys: Option<String>,
    ticket_lifetime: Option<String>,
    ticket_grace: Option<String>,
    ticket_keys_check: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow: Vec<String>,
    connect_ports: Option<Vec<RawPort>>,
}

/// A port number, or `"*"` for every port.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Text(String),
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
    access_max_mib: Option<u64>,
}

/// Paths of the gateway's TLS credentials.
#[derive(Clone, Debug)]
pub struct GatewayTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// Session-ticket keys shared with other instances (`None`: a random
    /// key of this process's own).
    pub tickets: Option<TicketKeys>,
}

/// `[tls] ticket_keys` and its settings.
#[derive(Clone, Debug)]
pub struct TicketKeys {
    pub file: PathBuf,
    /// The keys as read at load (the file is re-read while running).
    pub keys: Vec<msc_tls::ticket_keys::KeySpec>,
    /// Announced to clients: how long a ticket may be used.
    pub lifetime: Duration,
    /// How long a superseded key still opens tickets after its successor started.
    pub grace: Duration,
    /// How often the file is re-read.
    pub check: Duration,
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
    /// `runtime.dir`: where the instance locks live (default: see `agent::instance::runtime_dir`).
    pub runtime_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    pub tls: GatewayTls,
    pub deny: DenyList,
    /// Internal address ranges re-admitted and CONNECT ports (`[egress]`).
    pub egress: Egress,
    pub timeouts: GatewayTimeouts,
    pub access_log: AccessLogTarget,
    /// Extra delay before answering probes (simulates a distant gateway in tests and demos).
    pub probe_delay: Option<Duration>,
    pub limits: GatewayLimits,
    /// `releases.dir`: the signed release served to clients (`msc release sign --out`).
    pub releases_dir: Option<PathBuf>,
    /// `[profiles]`: configuration documents per identity and the
    /// administrator's PAC (docs/fleet.md).
    pub profiles: Option<crate::gateway::profiles::ProfileSettings>,
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
        tickets: ticket_keys(&c, &raw.tls)?,
    };
    let mut deny = DenyList::default();
    for (i, rule) in raw.policy.deny.iter().enumerate() {
        deny.add(rule)
            .map_err(|reason| c.err(format!("policy.deny[{i}]"), reason))?;
    }
    let egress = egress(&c, &raw.egress)?;
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
    let access_log = c.access_log("log.access", raw.log.access.as_deref(), raw.log.access_max_mib)?;
    let probe_delay = match &raw.probe.delay {
        Some(v) => Some(c.duration("probe.delay", v)?),
        None => None,
    };
    let driver = c.driver(raw.runtime.driver.as_deref())?;
    let runtime_dir = c.runtime_dir(raw.runtime.dir.as_deref())?;
    let profiles = match raw.profiles {
        Some(p) => Some(crate::gateway::profiles::validate(&c, p, &tls)?),
        None => None,
    };
    let releases_dir = match raw.releases.dir.as_deref().map(str::trim) {
        None => None,
        Some("") => return Err(c.err("releases.dir", "must not be empty (omit it to serve no releases)")),
        Some(v) => {
            let p = c.relative(v);
            if !p.is_dir() {
                return Err(c.err("releases.dir", format!("'{}' is not a directory", p.display())));
            }
            Some(p)
        }
    };
    Ok(GatewayConfig {
        file: file.to_path_buf(),
        runtime_dir,
        workers,
        driver,
        listen,
        tls,
        deny,
        egress,
        timeouts,
        access_log,
        probe_delay,
        limits,
        releases_dir,
        profiles,
    })
}

fn ticket_keys(c: &Check<'_>, raw: &RawTls) -> Result<Option<TicketKeys>, ConfigError> {
    let Some(v) = &raw.ticket_keys else {
        for (key, set) in [
            ("tls.ticket_lifetime", raw.ticket_lifetime.is_some()),
            ("tls.ticket_grace", raw.ticket_grace.is_some()),
            ("tls.ticket_keys_check", raw.ticket_keys_check.is_some()),
        ] {
            if set {
                return Err(c.err(key, "only used with tls.ticket_keys"));
            }
        }
        return Ok(None);
    };
    let file = c.file("tls.ticket_keys", v)?;
    let keys = crate::gateway::tickets::load(&file)
        .map_err(|reason| c.err("tls.ticket_keys", format!("{}: {reason}", file.display())))?;
    let lifetime = c.duration_or(
        "tls.ticket_lifetime",
        &raw.ticket_lifetime,
        Duration::from_secs(6 * 3600),
    )?;
    if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(7 * 24 * 3600) {
        return Err(c.err("tls.ticket_lifetime", "must be between 1s and 7 days (RFC 8446)"));
    }
    let grace = c.duration_or("tls.ticket_grace", &raw.ticket_grace, lifetime)?;
    let check = c.duration_or("tls.ticket_keys_check", &raw.ticket_keys_check, Duration::from_secs(60))?;
    if check < Duration::from_millis(100) {
        return Err(c.err("tls.ticket_keys_check", "must be at least 100ms"));
    }
    Ok(Some(TicketKeys {
        file,
        keys,
        lifetime,
        grace,
        check,
    }))
}

fn egress(c: &Check<'_>, raw: &RawEgress) -> Result<Egress, ConfigError> {
    let mut allow = Vec::with_capacity(raw.allow.len());
    for (i, v) in raw.allow.iter().enumerate() {
        let v = v.trim();
        // A bare address is its own /32 or /128.
        let net = v
            .parse::<ipnet::IpNet>()
            .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                c.err(
                    format!("egress.allow[{i}]"),
                    format!("'{v}' is not a CIDR range (e.g. \"10.20.0.0/16\", \"fd00::/8\")"),
                )
            })?;
        allow.push(net);
    }
    let ports = match &raw.connect_ports {
        None => ConnectPorts::Only(DEFAULT_CONNECT_PORTS.to_vec()),
        Some(list) => {
            let mut ports = Vec::with_capacity(list.len());
            let mut any = false;
            for (i, p) in list.iter().enumerate() {
                match p {
                    RawPort::Text(s) if s.trim() == "*" => any = true,
                    RawPort::Number(n) => match u16::try_from(*n) {
                        Ok(p) if p != 0 => ports.push(p),
                        _ => {
                            let reason = format!("{n} is not a port (1-65535)");
                            return Err(c.err(format!("egress.connect_ports[{i}]"), reason));
                        }
                    },
                    RawPort::Text(s) => {
                        return Err(c.err(
                            format!("egress.connect_ports[{i}]"),
                            format!("'{s}' is not a port number or \"*\" (every port)"),
                        ));
                    }
                }
            }
            if any {
                ConnectPorts::Any
            } else {
                ConnectPorts::Only(ports)
            }
        }
    };
    Ok(Egress::new(allow, ports))
}
