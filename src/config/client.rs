//! The client's configuration (`msc run --config client.toml`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use msc_tls::ServerName;
use serde::Deserialize;

use super::{Check, ConfigError, load_toml, parse_toml};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    workers: usize,
    #[serde(default)]
    runtime: super::RawRuntime,
    #[serde(default = "default_listen")]
    listen: String,
    tls: RawTls,
    #[serde(default)]
    timeouts: RawTimeouts,
    servers: Vec<RawServer>,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    pac: RawPac,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    selection: RawSelection,
    #[serde(default)]
    enforce: super::enforce::RawEnforce,
    #[serde(default)]
    watchdog: RawWatchdog,
    #[serde(default)]
    uninstall: RawUninstall,
    #[serde(default)]
    disable: RawDisable,
    #[serde(default)]
    tray: RawTray,
    #[serde(default)]
    remote: super::remote::RawRemote,
    #[serde(default)]
    update: RawUpdate,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    enabled: Option<bool>,
    public_key: Option<String>,
    interval: Option<String>,
    install_dir: Option<String>,
    trial: Option<String>,
}

/// Signed code updates (`[update]`, docs/fleet.md#releases-and-keys).
#[derive(Clone, Debug)]
pub struct UpdateSettings {
    /// The pinned Ed25519 public key releases must be signed with.
    pub public_key: [u8; 32],
    /// Time between two checks (±20 % at random).
    pub interval: Duration,
    /// Where releases are installed and `current` points (`msc watchdog` runs it).
    pub install_dir: PathBuf,
    /// How long a newly installed release has to pass its first health check
    /// under `msc watchdog` before it is rolled back.
    pub trial: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWatchdog {
    health_interval: Option<String>,
    health_timeout: Option<String>,
    health_failures: Option<u32>,
    start_timeout: Option<String>,
    backoff_max: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUninstall {
    warning: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDisable {
    allowed: Option<bool>,
    max: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTray {
    hidden: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSelection {
    probe_interval: Option<String>,
    keepalive_interval: Option<String>,
    evaluate_interval: Option<String>,
    pinned: Option<bool>,
    quantile: Option<f64>,
    rel_margin: Option<f64>,
    abs_margin: Option<String>,
    switch_rounds: Option<u32>,
    window: Option<String>,
    reputation_half_life: Option<String>,
    down_threshold: Option<f64>,
    up_threshold: Option<f64>,
    failure_penalty: Option<String>,
    readmit_successes: Option<u32>,
    recovery_probe_max: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPool {
    idle: Option<usize>,
    max_idle: Option<usize>,
    idle_lifetime: Option<String>,
    warm_for: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPac {
    #[serde(default)]
    bypass: Vec<String>,
    fail_open: Option<bool>,
    max_age: Option<String>,
    on_premise: Option<RawOnPremise>,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnPremise {
    indicator: String,
    expected: Vec<String>,
    mode: Option<String>,
    #[serde(default)]
    proxies: Vec<String>,
    check_interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    access: Option<String>,
    access_max_mib: Option<u64>,
    requests: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: String,
    cert: String,
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    head: Option<String>,
    idle: Option<String>,
    connect: Option<String>,
    handshake: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    address: String,
    server_name: Option<String>,
    http_port: u16,
    https_port: Option<u16>,
    probe_url: Option<String>,
    probe_status: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    listen: Option<String>,
    socket: Option<String>,
    #[serde(default)]
    trusted_users: Vec<String>,
    #[serde(default)]
    trusted_groups: Vec<String>,
}

/// Who may change the client's state through the control socket (root always may).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trusted {
    /// User names or numeric uids.
    pub users: Vec<String>,
    /// Group names or numeric gids.
    pub groups: Vec<String>,
}

/// Paths of the client's TLS credentials.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Time limits on the client's data path.
#[derive(Clone, Copy, Debug)]
pub struct ClientTimeouts {
    /// From the first byte of a request head to its end (408 after).
    pub head: Duration,
    /// A browser connection or tunnel with no traffic either way is closed after this.
    pub idle: Duration,
    /// TCP connect to a gateway (504 after).
    pub connect: Duration,
    /// TLS handshake with a gateway (504 after).
    pub handshake: Duration,
}

/// One gateway and the local ports (its slot) browsers use to reach it.
#[derive(Clone, Debug)]
pub struct Server {
    pub name: String,
    /// `host:port` as configured.
    pub address: String,
    pub host: String,
    pub port: u16,
    pub server_name: ServerName<'static>,
    pub http_port: u16,
    /// `None`: https URLs use `http_port` too (one listener for the slot).
    pub https_port: Option<u16>,
    /// An end-to-end check fetched through the gateway, instead of the
    /// gateway's own probe endpoint.
    pub probe_url: Option<ProbeUrl>,
}

impl Server {
    /// The port https URLs use: `https_port`, or `http_port` when there is none.
    pub fn https_or_http(&self) -> u16 {
        self.https_port.unwrap_or(self.http_port)
    }
}

/// `servers[].probe_url`: an `http://` URL the probe fetches through the
/// gateway (absolute-form, like a browser's request), and the status that
/// proves the gateway works end to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeUrl {
    /// The URL as configured (the request target).
    pub url: String,
    /// `host[:port]`, for the `Host` field.
    pub authority: String,
    /// The expected status (`probe_status`, default 200).
    pub status: u16,
}

impl ProbeUrl {
    /// Parses `http://host[:port][/path]`; the reason when it is not one.
    pub fn parse(url: &str, status: u16) -> Result<ProbeUrl, String> {
        let url = url.trim();
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(if url.starts_with("https://") {
                format!(
                    "'{url}': only http:// URLs (the probe sends the request itself, as absolute-form, through the gateway)"
                )
            } else {
                format!("'{url}' is not an http:// URL")
            });
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // Without a port, check it as if it had the default one.
        let with_port = if (authority.starts_with('[') && authority.ends_with(']')) || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_string()
        };
        let host_ok = split_host_port(&with_port).is_some();
        if !host_ok || authority.contains('@') {
            return Err(format!("'{url}': '{authority}' is not a host[:port]"));
        }
        if path.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'#') {
            return Err(format!(
                "'{url}': the path has spaces, control or non-ASCII characters or a fragment (percent-encode them)"
            ));
        }
        if !(100..=599).contains(&status) {
            return Err(format!("probe_status {status} is not an HTTP status (100-599)"));
        }
        let target = if path.starts_with('/') {
            format!("http://{authority}{path}")
        } else {
            format!("http://{authority}/{path}")
        };
        Ok(ProbeUrl {
            url: target,
            authority: authority.to_string(),
            status,
        })
    }
}

/// How the control plane measures and chooses gateways.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Every gateway is probed this often (with ±20 % jitter).
    pub probe_interval: Duration,
    /// The gateway in use is also checked this often.
    pub keepalive_interval: Duration,
    /// One damping round this often.
    pub evaluate_interval: Duration,
    /// Slot i always uses gateway i first (as the original product did);
    /// otherwise slot 1 carries the best gateway, slot 2 the second best...
    pub pinned: bool,
    pub rank: crate::upstream::rank::RankConfig,
}

/// Each worker's pool of ready tunnels, per gateway.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// Idle tunnels kept ready while there is demand.
    pub idle_target: usize,
    /// Idle tunnels kept at most (returned tunnels beyond this are closed).
    pub max_idle: usize,
    /// An idle tunnel older than this is closed, not used.
    pub idle_lifetime: Duration,
    /// After this long without a request, the pool stops refilling.
    pub warm_for: Duration,
}

/// The on/off-premise indicator the client evaluates (the same one the PAC uses).
#[derive(Clone, Debug)]
pub struct OnPremise {
    /// A host name that resolves to one of `expected` only on the company network.
    pub indicator: String,
    pub expected: Vec<IpAddr>,
    /// On premise, relay directly (true) or keep tunnelling (on-premise proxies mode).
    pub direct: bool,
    /// How often the client re-evaluates it (also on network changes).
    pub check_interval: Duration,
}

/// PAC settings; the PAC itself is rendered once the slot ports are bound.
#[derive(Clone, Debug)]
pub struct PacSettings {
    /// The rules without slots (filled in from the bound listeners).
    pub spec: msc_pac::PacSpec,
    /// `Cache-Control: max-age` of the served PAC.
    pub max_age: Duration,
    /// `pac.source`: the generated PAC or the administrator's (docs/fleet.md).
    pub source: super::remote::PacSource,
}

/// How `msc watchdog` supervises the client (`[watchdog]`).
#[derive(Clone, Copy, Debug)]
pub struct WatchdogSettings {
    /// Time between two `GET /health` checks.
    pub health_interval: Duration,
    /// A check not answered within this fails.
    pub health_timeout: Duration,
    /// Consecutive failed checks before the client is killed and restarted.
    pub health_failures: u32,
    /// A client that has not printed its ready line by then is restarted.
    pub start_timeout: Duration,
    /// Longest wait between two restarts in a crash loop.
    pub backoff_max: Duration,
}

/// A validated client configuration.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub file: PathBuf,
    pub workers: usize,
    /// The I/O driver of the worker runtimes.
    pub driver: msc_io::runtime::DriverChoice,
    /// `runtime.dir`: where the instance locks live (default: see `agent::instance::runtime_dir`).
    pub runtime_dir: Option<PathBuf>,
    pub listen: IpAddr,
    pub tls: ClientTls,
    pub timeouts: ClientTimeouts,
    pub servers: Vec<Server>,
    pub control: SocketAddr,
    pub pac: PacSettings,
    pub on_premise: Option<OnPremise>,
    /// When no gateway can be used: relay directly (true) or answer 503.
    pub fail_open: bool,
    pub access_log: super::AccessLogTarget,
    /// Log every request (`log.requests = "all"`), not only those that went
    /// DIRECT: the gateway's log is the record of what users visit, and the
    /// laptop keeps none by default.
    pub log_all: bool,
    pub pool: PoolConfig,
    pub selection: Selection,
    /// Proxy-settings enforcement (`[enforce]`, docs/enforcement.md).
    pub enforce: super::enforce::EnforceConfig,
    pub watchdog: WatchdogSettings,
    /// `uninstall.warning`: what the package shows the administrator before removal.
    pub uninstall_warning: Option<String>,
    /// The control socket (state changes, peer credentials checked); `None`: no socket.
    pub socket: Option<PathBuf>,
    /// `control.socket` was set explicitly: failing to serve it stops the start.
    pub socket_required: bool,
    pub trusted: Trusted,
    /// `[disable]`: whether and how long trusted users may turn protection off.
    pub disable: crate::control::state::DisablePolicy,
    /// `[tray] hidden = true`: the administrator hides the tray icon
    /// (`msc tray` then exits at once).
    pub tray_hidden: bool,
    /// `[update]`: signed code updates, if enabled.
    pub update: Option<UpdateSettings>,
    /// `[remote]`: configuration from the gateway (docs/fleet.md).
    pub remote: super::remote::RemoteSettings,
}

impl ClientConfig {
    /// The PAC spec with these slot ports (bound listeners, in slot order).
    pub fn pac_spec(&self, ports: &[(u16, u16)]) -> msc_pac::PacSpec {
        let mut spec = self.pac.spec.clone();
        spec.slots = ports
            .iter()
            .map(|&(http_port, https_port)| msc_pac::SlotPorts { http_port, https_port })
            .collect();
        spec
    }
}

/// Maps a PAC spec field path to the client.toml key it came from.
fn pac_key(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("on_premise.indicator_host") {
        return format!("pac.on_premise.indicator{rest}");
    }
    if let Some(rest) = field.strip_prefix("on_premise.expected_addresses") {
        return format!("pac.on_premise.expected{rest}");
    }
    if let Some(rest) = field.strip_prefix("on_premise.mode.proxies") {
        return format!("pac.on_premise.proxies{rest}");
    }
    if let Some(rest) = field.strip_prefix("slots") {
        return format!("servers{rest}");
    }
    if field == "proxy_host" {
        return "listen".into();
    }
    format!("pac.{field}")
}

pub const DEFAULT_CONTROL_PORT: u16 = 27778;

impl ClientConfig {
    pub fn load(file: &Path) -> Result<ClientConfig, ConfigError> {
        let raw: Raw = load_toml(file)?;
        validate(file, raw)
    }

    pub fn from_text(file: &Path, text: &str) -> Result<ClientConfig, ConfigError> {
        validate(file, parse_toml(file, text)?)
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Splits `host:port` / `[v6]:port`.
pub(crate) fn split_host_port(v: &str) -> Option<(String, u16)> {
    let v = v.trim();
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        v.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let ok_host = !host.is_empty()
        && (host.parse::<IpAddr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    ok_host.then(|| (host.to_string(), port))
}

fn validate(file: &Path, raw: Raw) -> Result<ClientConfig, ConfigError> {
    let c = Check { file };
    let workers = c.workers(raw.workers)?;
    let listen: IpAddr = raw
        .listen
        .trim()
        .parse()
        .map_err(|_| c.err("listen", format!("'{}' is not an IP address", raw.listen)))?;
    if !listen.is_loopback() {
        return Err(c.err(
            "listen",
            format!("{listen} is not a loopback address: the client only listens on 127.0.0.0/8 or ::1"),
        ));
    }
    let tls = ClientTls {
        ca: c.file("tls.ca", &raw.tls.ca)?,
        cert: c.file("tls.cert", &raw.tls.cert)?,
        key: c.file("tls.key", &raw.tls.key)?,
    };
    let t = &raw.timeouts;
    let d = |key: &str, v: &Option<String>, default: Duration| c.duration_or(key, v, default);
    let timeouts = ClientTimeouts {
        head: d("timeouts.head", &t.head, Duration::from_secs(10))?,
        idle: d("timeouts.idle", &t.idle, Duration::from_secs(300))?,
        connect: d("timeouts.connect", &t.connect, Duration::from_secs(5))?,
        handshake: d("timeouts.handshake", &t.handshake, Duration::from_secs(5))?,
    };
    if raw.servers.is_empty() {
        return Err(c.err("servers", "at least one [[servers]] entry is required"));
    }
    let mut servers: Vec<Server> = Vec::with_capacity(raw.servers.len());
    let mut ports: Vec<(u16, String)> = Vec::new();
    for (i, s) in raw.servers.into_iter().enumerate() {
        let key = |f: &str| format!("servers[{i}].{f}");
        if !valid_name(&s.name) {
            return Err(c.err(
                key("name"),
                format!("'{}' is not a valid name (letters, digits, '-', '_', '.')", s.name),
            ));
        }
        if let Some(j) = servers.iter().position(|o| o.name == s.name) {
            return Err(c.err(key("name"), format!("'{}' is already used by servers[{j}]", s.name)));
        }
        let (host, port) = split_host_port(&s.address).ok_or_else(|| {
            c.err(
                key("address"),
                format!("'{}' is not HOST:PORT (e.g. gw1.example.com:443)", s.address),
            )
        })?;
        let sni = s.server_name.clone().unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(sni.clone())
            .map_err(|_| c.err(key("server_name"), format!("'{sni}' is not a valid TLS server name")))?;
        if s.https_port.is_some_and(|p| p != 0 && p == s.http_port) {
            return Err(c.err(
                key("https_port"),
                format!(
                    "port {} is already used by {}: leave https_port out to serve https URLs on http_port",
                    s.http_port,
                    key("http_port")
                ),
            ));
        }
        for (f, p) in [("http_port", Some(s.http_port)), ("https_port", s.https_port)] {
            let Some(p) = p else { continue };
            if p == 0 {
                // 0 asks the OS for a free port (used by `msc demo`).
                continue;
            }
            if let Some((_, other)) = ports.iter().find(|(q, _)| *q == p) {
                return Err(c.err(key(f), format!("port {p} is already used by {other}")));
            }
            ports.push((p, key(f)));
        }
        let probe_url = match (&s.probe_url, s.probe_status) {
            (None, None) => None,
            (None, Some(_)) => return Err(c.err(key("probe_status"), "only used with probe_url")),
            (Some(u), status) => {
                let status = status.unwrap_or(200);
                if !(100..=599).contains(&status) {
                    return Err(c.err(key("probe_status"), format!("{status} is not an HTTP status (100-599)")));
                }
                Some(ProbeUrl::parse(u, status).map_err(|reason| c.err(key("probe_url"), reason))?)
            }
        };
        servers.push(Server {
            name: s.name,
            address: s.address,
            host,
            port,
            server_name,
            http_port: s.http_port,
            https_port: s.https_port,
            probe_url,
        });
    }
    let control = match raw.control.listen {
        None => SocketAddr::new(listen, DEFAULT_CONTROL_PORT),
        Some(v) => {
            let a = c.socket_addr("control.listen", &v)?;
            if !a.ip().is_loopback() {
                return Err(c.err("control.listen", format!("{a} is not a loopback address")));
            }
            a
        }
    };
    if let Some((_, other)) = ports.iter().find(|(q, _)| *q == control.port() && control.port() != 0) {
        return Err(c.err(
            "control.listen",
            format!("port {} is already used by {other}", control.port()),
        ));
    }
    let fail_open = raw.pac.fail_open.unwrap_or(true);
    let max_age = c.duration_or("pac.max_age", &raw.pac.max_age, Duration::from_secs(300))?;
    let pac_source = super::remote::pac_source(&c, raw.pac.source.as_deref())?;
    let mut on_premise = None;
    let mut pac_premise = None;
    if let Some(op) = raw.pac.on_premise {
        let direct = match op.mode.as_deref().map(str::trim) {
            None | Some("direct") => true,
            Some("proxies") => false,
            Some(m) => return Err(c.err("pac.on_premise.mode", format!("'{m}' is not \"direct\" or \"proxies\""))),
        };
        if direct && !op.proxies.is_empty() {
            return Err(c.err("pac.on_premise.proxies", "only used with mode = \"proxies\""));
        }
        let check_interval = c.duration_or(
            "pac.on_premise.check_interval",
            &op.check_interval,
            Duration::from_secs(60),
        )?;
        let mut expected = Vec::new();
        for (i, a) in op.expected.iter().enumerate() {
            expected.push(a.trim().parse::<IpAddr>().map_err(|_| {
                c.err(
                    format!("pac.on_premise.expected[{i}]"),
                    format!("'{a}' is not an IP address"),
                )
            })?);
        }
        pac_premise = Some(msc_pac::OnPremiseSpec {
            indicator_host: op.indicator.clone(),
            expected_addresses: op.expected.clone(),
            mode: if direct {
                msc_pac::OnPremiseMode::Direct
            } else {
                msc_pac::OnPremiseMode::Proxies(op.proxies.clone())
            },
        });
        on_premise = Some(OnPremise {
            indicator: op.indicator.trim().trim_end_matches('.').to_ascii_lowercase(),
            expected,
            direct,
            check_interval,
        });
    }
    let spec = msc_pac::PacSpec {
        bypass: raw.pac.bypass,
        slots: Vec::new(),
        proxy_host: listen.to_string(),
        on_premise: pac_premise,
        fail_open,
    };
    // Validate the PAC rules now, with stand-in ports where the OS picks them.
    let mut probe = spec.clone();
    probe.slots = servers
        .iter()
        .map(|s| msc_pac::SlotPorts {
            http_port: s.http_port.max(1),
            https_port: s.https_or_http().max(1),
        })
        .collect();
    msc_pac::Pac::new(&probe).map_err(|e| {
        let reason = match e.value() {
            Some(v) => format!("'{v}': {}", e.reason()),
            None => e.reason().to_string(),
        };
        c.err(pac_key(e.field()), reason)
    })?;
    let access_log = c.access_log("log.access", raw.log.access.as_deref(), raw.log.access_max_mib)?;
    let log_all = match raw.log.requests.as_deref().map(str::trim) {
        None | Some("direct") => false,
        Some("all") => true,
        Some(v) => {
            return Err(c.err(
                "log.requests",
                format!("'{v}' is not \"direct\" (only requests that went DIRECT, the default) or \"all\""),
            ));
        }
    };
    let rp = &raw.pool;
    let pool = PoolConfig {
        idle_target: rp.idle.unwrap_or(2),
        max_idle: rp.max_idle.unwrap_or(128),
        idle_lifetime: c.duration_or("pool.idle_lifetime", &rp.idle_lifetime, Duration::from_secs(60))?,
        warm_for: c.duration_or("pool.warm_for", &rp.warm_for, Duration::from_secs(300))?,
    };
    if pool.idle_target > 64 {
        return Err(c.err("pool.idle", format!("{} is too many (at most 64)", pool.idle_target)));
    }
    if pool.max_idle < pool.idle_target {
        return Err(c.err(
            "pool.max_idle",
            format!("must be at least pool.idle ({})", pool.idle_target),
        ));
    }
    let selection = selection(&c, &raw.selection)?;
    let socket = control_socket(&c, raw.control.socket.as_deref())?;
    for (key, list) in [
        ("control.trusted_users", &raw.control.trusted_users),
        ("control.trusted_groups", &raw.control.trusted_groups),
    ] {
        for (i, n) in list.iter().enumerate() {
            if !valid_account(n) {
                return Err(c.err(
                    format!("{key}[{i}]"),
                    format!("'{n}' is not a user/group name or a numeric id"),
                ));
            }
        }
    }
    let trusted = Trusted {
        users: raw.control.trusted_users,
        groups: raw.control.trusted_groups,
    };
    let disable = crate::control::state::DisablePolicy {
        allowed: raw.disable.allowed.unwrap_or(false),
        max: c.duration_or("disable.max", &raw.disable.max, Duration::from_secs(3600))?,
    };
    let driver = c.driver(raw.runtime.driver.as_deref())?;
    let enforce = super::enforce::validate(&c, raw.enforce)?;
    let runtime_dir = c.runtime_dir(raw.runtime.dir.as_deref())?;
    let w = &raw.watchdog;
    let wd = |key: &str, v: &Option<String>, default: Duration| c.duration_or(&format!("watchdog.{key}"), v, default);
    let watchdog = WatchdogSettings {
        health_interval: wd("health_interval", &w.health_interval, Duration::from_secs(1))?,
        health_timeout: wd("health_timeout", &w.health_timeout, Duration::from_secs(3))?,
        health_failures: match w.health_failures {
            Some(0) => return Err(c.err("watchdog.health_failures", "must be at least 1")),
            Some(n) => n,
            None => 2,
        },
        start_timeout: wd("start_timeout", &w.start_timeout, Duration::from_secs(30))?,
        backoff_max: wd("backoff_max", &w.backoff_max, Duration::from_secs(30))?,
    };
    if watchdog.health_timeout <= crate::control::health::HEALTH_TIMEOUT {
        return Err(c.err(
            "watchdog.health_timeout",
            format!(
                "must be longer than the {:?} the client waits for its workers",
                crate::control::health::HEALTH_TIMEOUT
            ),
        ));
    }
    let uninstall_warning = match raw.uninstall.warning {
        Some(t) if t.trim().is_empty() => {
            return Err(c.err("uninstall.warning", "must not be empty (omit it for the default text)"));
        }
        t => t,
    };
    let update = update_settings(&c, raw.update)?;
    let remote = super::remote::validate(&c, raw.remote)?;
    if pac_source == super::remote::PacSource::Gateway && !remote.enabled {
        return Err(c.err(
            "pac.source",
            "\"gateway\" needs remote.enabled = true (the administrator's PAC comes from the gateway)",
        ));
    }
    Ok(ClientConfig {
        file: file.to_path_buf(),
        update,
        runtime_dir,
        workers,
        driver,
        listen,
        tls,
        timeouts,
        servers,
        control,
        pac: PacSettings {
            spec,
            max_age,
            source: pac_source,
        },
        on_premise,
        fail_open,
        access_log,
        log_all,
        pool,
        selection,
        enforce,
        watchdog,
        uninstall_warning,
        socket_required: raw.control.socket.as_deref().is_some_and(|s| !s.trim().is_empty()),
        socket,
        trusted,
        disable,
        tray_hidden: raw.tray.hidden.unwrap_or(false),
        remote,
    })
}

fn update_settings(c: &Check<'_>, u: RawUpdate) -> Result<Option<UpdateSettings>, ConfigError> {
    let interval = c.duration_or("update.interval", &u.interval, Duration::from_secs(3600))?;
    let trial = c.duration_or("update.trial", &u.trial, Duration::from_secs(60))?;
    if u.enabled != Some(true) {
        return Ok(None);
    }
    let public_key = match u.public_key.as_deref() {
        None => {
            return Err(c.err(
                "update.public_key",
                "required when update.enabled (the base64 key `msc release keygen` printed)",
            ));
        }
        Some(k) => crate::release::parse_public_key(k).map_err(|e| c.err("update.public_key", e))?,
    };
    let install_dir = match u.install_dir.as_deref().map(str::trim) {
        None | Some("") => {
            return Err(c.err(
                "update.install_dir",
                "required when update.enabled (a directory the client may write, beside its binary)",
            ));
        }
        Some(v) => c.relative(v),
    };
    Ok(Some(UpdateSettings {
        public_key,
        interval,
        install_dir,
        trial,
    }))
}

/// A POSIX-ish account name (letters, digits, `_`, `-`, `.`, a trailing `$`) or a number.
fn valid_account(n: &str) -> bool {
    let body = n.strip_suffix('$').unwrap_or(n);
    !body.is_empty()
        && n.len() <= 64
        && !body.starts_with('-')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `control.socket`: a path, `""` for none; by default `$RUNTIME_DIRECTORY/control.sock`
/// (systemd's `RuntimeDirectory=`), else `$XDG_RUNTIME_DIR/msc/control.sock`, else none.
fn control_socket(c: &Check<'_>, v: Option<&str>) -> Result<Option<PathBuf>, ConfigError> {
    match v.map(str::trim) {
        Some("") => Ok(None),
        Some(v) => {
            let p = c.relative(v);
            if p.file_name().is_none() {
                return Err(c.err("control.socket", format!("'{}' names no file", p.display())));
            }
            // sockaddr_un holds 108 bytes including the terminating NUL.
            if p.as_os_str().len() > 107 {
                return Err(c.err(
                    "control.socket",
                    format!("'{}' is longer than a Unix socket path may be (107 bytes)", p.display()),
                ));
            }
            Ok(Some(p))
        }
        None => Ok(default_socket()),
    }
}

/// The control socket's default path (see [`control_socket`]).
pub fn default_socket() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("RUNTIME_DIRECTORY")
        .map(|d| d.join("control.sock"))
        .or_else(|| env("XDG_RUNTIME_DIR").map(|d| d.join("msc").join("control.sock")))
}

fn selection(c: &Check<'_>, r: &RawSelection) -> Result<Selection, ConfigError> {
    let d = |key: &str, v: &Option<String>, default: Duration| c.duration_or(&format!("selection.{key}"), v, default);
    let base = crate::upstream::rank::RankConfig::default();
    let rank = crate::upstream::rank::RankConfig {
        quantile: r.quantile.unwrap_or(base.quantile),
        rel_margin: r.rel_margin.unwrap_or(base.rel_margin),
        abs_margin: d("abs_margin", &r.abs_margin, base.abs_margin)?,
        switch_rounds: r.switch_rounds.unwrap_or(base.switch_rounds),
        window: d("window", &r.window, base.window)?,
        reputation_half_life: d(
            "reputation_half_life",
            &r.reputation_half_life,
            base.reputation_half_life,
        )?,
        down_threshold: r.down_threshold.unwrap_or(base.down_threshold),
        up_threshold: r.up_threshold.unwrap_or(base.up_threshold),
        failure_penalty: d("failure_penalty", &r.failure_penalty, base.failure_penalty)?,
        readmit_successes: r.readmit_successes.unwrap_or(base.readmit_successes),
        recovery_probe_max: d("recovery_probe_max", &r.recovery_probe_max, base.recovery_probe_max)?,
        ..base
    };
    rank.validate()
        .map_err(|e| c.err(format!("selection.{}", e.key), e.reason))?;
    let s = Selection {
        probe_interval: d("probe_interval", &r.probe_interval, Duration::from_secs(30))?,
        keepalive_interval: d("keepalive_interval", &r.keepalive_interval, Duration::from_secs(5))?,
        evaluate_interval: d("evaluate_interval", &r.evaluate_interval, Duration::from_secs(5))?,
        pinned: r.pinned.unwrap_or(false),
        rank,
    };
    for (k, v) in [
        ("probe_interval", s.probe_interval),
        ("keepalive_interval", s.keepalive_interval),
        ("evaluate_interval", s.evaluate_interval),
    ] {
        if v < Duration::from_millis(100) {
            return Err(c.err(format!("selection.{k}"), "must be at least 100ms"));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::ProbeUrl;

    #[test]
    fn probe_url_parses_into_target_and_host() {
        let u = ProbeUrl::parse("http://example.com", 204).unwrap();
        assert_eq!(
            (u.url.as_str(), u.authority.as_str(), u.status),
            ("http://example.com/", "example.com", 204)
        );
        let u = ProbeUrl::parse(" http://[::1]:8080/health?x=1 ", 200).unwrap();
        assert_eq!(
            (u.url.as_str(), u.authority.as_str()),
            ("http://[::1]:8080/health?x=1", "[::1]:8080")
        );
        let u = ProbeUrl::parse("http://10.0.0.1:81?q", 200).unwrap();
        assert_eq!(u.url, "http://10.0.0.1:81/?q");
        for bad in [
            "https://example.com/",
            "ftp://example.com/",
            "example.com/health",
            "http:///x",
            "http://user@example.com/",
            "http://example.com:0/",
            "http://example.com:99999/",
            "http://exa mple.com/",
            "http://example.com/a b",
            "http://example.com/é",
            "http://example.com/#frag",
        ] {
            assert!(ProbeUrl::parse(bad, 200).is_err(), "{bad}");
        }
    }

    #[test]
    fn update_keys_are_checked_only_when_enabled() {
        use super::{Check, RawUpdate, update_settings};
        let file = std::path::Path::new("/etc/msc/client.toml");
        let c = Check { file };
        let raw = |enabled: bool, key: Option<&str>, dir: Option<&str>| RawUpdate {
            enabled: Some(enabled),
            public_key: key.map(str::to_owned),
            interval: Some("30m".into()),
            install_dir: dir.map(str::to_owned),
            trial: None,
        };
        assert!(update_settings(&c, raw(false, None, None)).unwrap().is_none());
        let e = update_settings(&c, raw(true, None, Some("r"))).unwrap_err();
        assert_eq!(e.key, "update.public_key");
        let e = update_settings(&c, raw(true, Some("AAAA"), Some("r"))).unwrap_err();
        assert!(e.key == "update.public_key" && e.reason.contains("32 bytes"), "{e}");
        let key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
        let e = update_settings(&c, raw(true, Some(key), None)).unwrap_err();
        assert_eq!(e.key, "update.install_dir");
        let u = update_settings(&c, raw(true, Some(key), Some("releases")))
            .unwrap()
            .unwrap();
        assert_eq!(u.install_dir, std::path::Path::new("/etc/msc/releases"));
        assert_eq!(u.interval, std::time::Duration::from_secs(1800));
        assert_eq!(u.trial, std::time::Duration::from_secs(60));
        let mut bad = raw(false, None, None);
        bad.interval = Some("soon".into());
        assert_eq!(update_settings(&c, bad).unwrap_err().key, "update.interval");
    }
}
