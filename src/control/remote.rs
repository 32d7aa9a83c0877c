//! Configuration and the administrator's PAC from the gateway
//! (docs/fleet.md), on the control thread.
//!
//! At start ([`effective`]): the local client.toml, with the last good
//! document from the on-disk cache laid over it, so the client starts
//! offline with it; with no cache, the start waits (bounded by
//! `remote.first_wait`) for a first fetch. Then, every `remote.interval`
//! (±20 %), the documents are fetched again with `If-None-Match`. A new
//! configuration is validated completely (laid over the local file and
//! checked as a client.toml), written to the cache atomically (a 0600
//! temporary file renamed over the old one), and only then applied. A new
//! administrator PAC is checked ([`check_pac`]) before it replaces the one
//! served. Anything refused leaves what runs untouched, and says why in the
//! log and in `GET /status` (`remote`).

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::fetch::{self, FetchError, FetchLimits, Fetched};
use super::{PacDoc, State};
use crate::config::ConfigError;
use crate::config::client::ClientConfig;
use crate::config::remote::{MAX_CONFIG_DOC, MAX_PAC_DOC, PacSource, overlay};

/// Where the running configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A document the gateway served (this run).
    Gateway,
    /// The last good document, from the on-disk cache.
    Cache,
    /// The local file alone (no document yet, or none for this user).
    Local,
}

/// How the configuration a client started with came about.
#[derive(Debug, Clone)]
pub struct Boot {
    pub source: Source,
    pub doc: Option<Cached>,
    pub last_error: Option<String>,
    /// When the start fetched (or tried to).
    pub fetched: Option<SystemTime>,
}

/// A document as kept on disk: its tag, who served it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    pub etag: Option<String>,
    pub from: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
    #[serde(skip)]
    pub body: Vec<u8>,
}

/// The first line of a cache file: the metadata, after this marker.
const MARK: &str = "msc-remote-cache ";

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

impl Cached {
    /// Reads a cache file written by [`Cached::write`] (`None`: absent or
    /// not one).
    pub fn read(path: &Path) -> Option<Cached> {
        let bytes = std::fs::read(path).ok()?;
        let nl = bytes.iter().position(|&b| b == b'\n')?;
        let first = std::str::from_utf8(&bytes[..nl]).ok()?;
        let json = first.split_once(MARK)?.1;
        let mut c: Cached = serde_json::from_str(json).ok()?;
        c.body = bytes[nl + 1..].to_vec();
        Some(c)
    }

    /// Writes atomically: a temporary file (mode 0600) in the same
    /// directory, flushed, renamed over `path`. `comment` starts a comment
    /// line in the document's language (`#`, `//`).
    pub fn write(&self, path: &Path, comment: &str) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut t = tempfile::NamedTempFile::new_in(dir)?;
        let meta = serde_json::to_string(self).map_err(std::io::Error::other)?;
        t.write_all(format!("{comment} {MARK}{meta}\n").as_bytes())?;
        t.write_all(&self.body)?;
        t.as_file().sync_all()?;
        t.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn doc_label(what: &str, from: &str) -> PathBuf {
    PathBuf::from(format!("{what} from gateway {from}"))
}

/// The configuration `msc run` starts with (and what a reload reads): the
/// local file `file`, with the cached gateway document laid over it; with
/// `[remote]` enabled and no usable cache, a first fetch bounded by
/// `remote.first_wait`. Only the local file's own errors fail this: a bad
/// or missing document leaves the local configuration, visibly.
pub fn effective(file: &Path) -> Result<ClientConfig, ConfigError> {
    let local_text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    let local = ClientConfig::from_text(file, &local_text)?;
    if !local.remote.enabled {
        return Ok(local);
    }
    if let Some(cfg) = with_cache(file, &local_text, &local) {
        tracing::info!(
            "configuration: {} with the cached document from gateway {}",
            file.display(),
            cfg.remote
                .boot
                .as_ref()
                .and_then(|b| b.doc.as_ref())
                .map_or("?", |d| d.from.as_str()),
        );
        return Ok(cfg);
    }
    let cache = local.remote.config_cache();
    let mut cfg = local.clone();
    let started = SystemTime::now();
    let boot = match first_fetch(&local) {
        Ok(Fetched::Doc { body, etag, from }) => {
            let label = doc_label("config", &from);
            match std::str::from_utf8(&body)
                .map_err(|_| ConfigError {
                    file: label.clone(),
                    key: String::new(),
                    reason: "not UTF-8".into(),
                })
                .and_then(|t| overlay(file, &local_text, &label, t))
            {
                Ok(c) => {
                    let doc = Cached {
                        etag,
                        from,
                        at: unix(started),
                        body,
                    };
                    if let Err(e) = doc.write(&cache, "#") {
                        tracing::error!("cannot write the configuration cache {}: {e}", cache.display());
                    }
                    tracing::info!(
                        "configuration: {} with the document from gateway {} (ETag {})",
                        file.display(),
                        doc.from,
                        doc.etag.as_deref().unwrap_or("none")
                    );
                    cfg = c;
                    Boot {
                        source: Source::Gateway,
                        doc: Some(doc),
                        last_error: None,
                        fetched: Some(started),
                    }
                }
                Err(e) => local_boot(format!("configuration from the gateway rejected: {e}"), started),
            }
        }
        Ok(Fetched::NotModified) => local_boot("the gateway answered 304 to a request without a tag".into(), started),
        Err(e) => local_boot(e, started),
    };
    cfg.remote.boot = Some(Arc::new(boot));
    Ok(cfg)
}

/// The configuration other commands of this client use (`msc watchdog`,
/// `msc enforce`, `msc tray`...): the local file with the cached document
/// laid over it, if `[remote]` is enabled and the cache can be read; never
/// a fetch.
pub fn cached(file: &Path) -> Result<ClientConfig, ConfigError> {
    let local_text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    let local = ClientConfig::from_text(file, &local_text)?;
    if !local.remote.enabled {
        return Ok(local);
    }
    Ok(with_cache(file, &local_text, &local).unwrap_or(local))
}

/// `local` with the cached document laid over it, if there is a usable one.
fn with_cache(file: &Path, local_text: &str, local: &ClientConfig) -> Option<ClientConfig> {
    let cache = local.remote.config_cache();
    let c = Cached::read(&cache)?;
    let label = PathBuf::from(format!("{} (cached from gateway {})", cache.display(), c.from));
    match overlay(file, local_text, &label, &c.text()) {
        Ok(mut cfg) => {
            tracing::debug!(
                "cached configuration document from gateway {} (fetched {}, ETag {})",
                c.from,
                rfc3339(c.at),
                c.etag.as_deref().unwrap_or("none")
            );
            cfg.remote.boot = Some(Arc::new(Boot {
                source: Source::Cache,
                doc: Some(c),
                last_error: None,
                fetched: None,
            }));
            Some(cfg)
        }
        Err(e) => {
            tracing::warn!("the cached configuration is not usable with this client.toml ({e}): ignored");
            None
        }
    }
}

fn local_boot(why: String, at: SystemTime) -> Boot {
    tracing::warn!("configuration: the local file only: {why}");
    Boot {
        source: Source::Local,
        doc: None,
        last_error: Some(why),
        fetched: Some(at),
    }
}

/// The first fetch, before any runtime runs, within `remote.first_wait`.
fn first_fetch(cfg: &ClientConfig) -> Result<Fetched, String> {
    let creds = msc_tls::config::ClientCreds {
        ca: &cfg.tls.ca,
        cert: &cfg.tls.cert,
        key: &cfg.tls.key,
    };
    let tls = msc_tls::config::client_config(&creds, 1).map_err(|e| e.to_string())?;
    let gateways = crate::app::initial_routing(cfg).gateways;
    let limits = limits(cfg, MAX_CONFIG_DOC);
    let wait = cfg.remote.first_wait;
    let pool = monoio::blocking::DefaultThreadPool::new(1);
    let r = msc_io::runtime::block_on(msc_io::runtime::DriverChoice::Auto, Some(pool), |_| async move {
        monoio::time::timeout(wait, fetch::fetch(&gateways, tls, "config", None, limits)).await
    })
    .map_err(|e| format!("cannot start a runtime for the first fetch: {e}"))?;
    match r {
        Err(_) => Err(format!("no answer from a gateway within remote.first_wait ({wait:?})")),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

fn limits(cfg: &ClientConfig, max_body: usize) -> FetchLimits {
    FetchLimits {
        max_body,
        connect: cfg.timeouts.connect,
        handshake: cfg.timeouts.handshake,
        transfer: Duration::from_secs(10),
    }
}

/// One document's state, as `GET /status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DocStatus {
    /// The tag of the document in use (`null`: none).
    pub etag: Option<String>,
    /// The gateway that served it.
    pub from: Option<String>,
    /// When it was fetched (RFC 3339).
    pub fetched_at: Option<String>,
    /// The latest fetch: when, and `applied`, `not-modified`, `rejected`
    /// or `failed`.
    pub last_fetch_at: Option<String>,
    pub last_result: Option<&'static str>,
    /// Why the latest fetch or document failed (`null` once one succeeds).
    pub last_error: Option<String>,
    pub fetches: u64,
    pub not_modified: u64,
}

impl DocStatus {
    fn from_cached(c: &Cached) -> DocStatus {
        DocStatus {
            etag: c.etag.clone(),
            from: Some(c.from.clone()),
            fetched_at: Some(rfc3339(c.at)),
            ..DocStatus::default()
        }
    }

    fn result(&mut self, result: &'static str, error: Option<String>) {
        self.last_fetch_at = Some(rfc3339(unix(SystemTime::now())));
        self.last_result = Some(result);
        self.last_error = error;
        self.fetches += 1;
        if result == "not-modified" {
            self.not_modified += 1;
        }
    }

    fn took(&mut self, c: &Cached) {
        self.etag = c.etag.clone();
        self.from = Some(c.from.clone());
        self.fetched_at = Some(rfc3339(c.at));
    }
}

/// `remote` in `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteStatus {
    /// Where the running configuration came from: `gateway`, `cache`, `local`.
    pub source: Source,
    pub config: DocStatus,
    /// Where the served PAC comes from: `generated` or `gateway`.
    pub pac_source: &'static str,
    /// The administrator's PAC (`null` unless `pac.source = "gateway"`).
    pub pac: Option<DocStatus>,
    /// A configuration was applied whose settings beyond the PAC take
    /// effect at the next start.
    pub restart_needed: bool,
}

/// The remote state on the control thread.
#[derive(Debug)]
pub struct Remote {
    status: RemoteStatus,
    /// The configuration last applied (the local file and the document).
    cfg: ClientConfig,
    /// The administrator's PAC in use, if any.
    pac: Option<Cached>,
}

impl Remote {
    pub fn status(&self) -> RemoteStatus {
        self.status.clone()
    }
}

/// Checks what a PAC must be before anyone serves it: at most
/// [`MAX_PAC_DOC`] bytes, UTF-8, JavaScript whose brackets, strings,
/// comments and regular expressions are well formed, and which defines
/// `FindProxyForURL`. A structural check, not a JavaScript parser.
pub fn check_pac_structure(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_PAC_DOC {
        return Err(format!("{} bytes, over the limit of {MAX_PAC_DOC}", bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 ({e})"))?;
    let idents = scan_js(text)?;
    let defines = idents
        .windows(2)
        .any(|w| (w[0] == "function" && w[1] == "FindProxyForURL") || (w[0] == "FindProxyForURL" && w[1] == "="));
    if !defines {
        return Err("does not define function FindProxyForURL(url, host)".into());
    }
    Ok(())
}

/// [`check_pac_structure`], and fail-safe: the PAC must name one of this
/// client's proxy addresses (`slots`), else it would send every browser
/// around the scanner.
pub fn check_pac(bytes: &[u8], slots: &[(SocketAddr, SocketAddr)]) -> Result<(), String> {
    check_pac_structure(bytes)?;
    let text = String::from_utf8_lossy(bytes);
    let names = |a: &SocketAddr| text.contains(&a.to_string());
    if !slots.iter().any(|(h, s)| names(h) || names(s)) {
        let mine: Vec<String> = slots.iter().map(|(h, _)| h.to_string()).collect();
        return Err(format!(
            "never names one of this client's proxy addresses ({}): it would send traffic around the scanner",
            mine.join(", ")
        ));
    }
    Ok(())
}

/// Walks JavaScript source: skips comments, strings, template literals and
/// regular expression literals, checks that brackets pair up, and returns
/// the identifiers and keywords in order (`=` kept, for `X = function`).
fn scan_js(src: &str) -> Result<Vec<&str>, String> {
    let b = src.as_bytes();
    let line = |i: usize| b[..i].iter().filter(|&&c| c == b'\n').count() + 1;
    let mut out: Vec<&str> = Vec::new();
    let mut stack: Vec<(u8, usize)> = Vec::new();
    // Whether a '/' here starts a regular expression (no value before it).
    let mut regex_ok = true;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..]
                    .find("*/")
                    .ok_or_else(|| format!("unterminated comment from line {}", line(i)))?;
                i += 2 + end + 2;
            }
            b'"' | b'\'' | b'`' => {
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(format!("unterminated string from line {}", line(start))),
                        Some(b'\\') => i += 2,
                        Some(b'\n') if c != b'`' => {
                            return Err(format!("unterminated string on line {}", line(start)));
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                regex_ok = false;
            }
            b'/' if regex_ok => {
                let start = i;
                i += 1;
                let mut class = false;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => {
                            return Err(format!("unterminated regular expression on line {}", line(start)));
                        }
                        Some(b'\\') => i += 2,
                        Some(b'[') => {
                            class = true;
                            i += 1;
                        }
                        Some(b']') => {
                            class = false;
                            i += 1;
                        }
                        Some(b'/') if !class => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                regex_ok = false;
            }
            b'(' | b'[' | b'{' => {
                stack.push((c, i));
                i += 1;
                regex_ok = true;
            }
            b')' | b']' | b'}' => {
                let want = match c {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                match stack.pop() {
                    Some((o, _)) if o == want => {}
                    Some((o, at)) => {
                        return Err(format!(
                            "'{}' on line {} closes '{}' from line {}",
                            c as char,
                            line(i),
                            o as char,
                            line(at)
                        ));
                    }
                    None => return Err(format!("unbalanced '{}' on line {}", c as char, line(i))),
                }
                i += 1;
                // `(a) / b`, `x[1] / 2`: division; after a block: a regex.
                regex_ok = c == b'}';
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                    i += 1;
                }
                let word = &src[start..i];
                regex_ok = matches!(
                    word,
                    "return" | "typeof" | "case" | "do" | "else" | "in" | "of" | "new" | "delete" | "void" | "throw"
                );
                out.push(word);
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                regex_ok = false;
            }
            _ => {
                if c == b'=' && b.get(i + 1) != Some(&b'=') && i > 0 && b[i - 1] != b'=' && b[i - 1] != b'!' {
                    out.push("=");
                }
                i += 1;
                regex_ok = true;
            }
        }
    }
    if let Some((o, at)) = stack.pop() {
        return Err(format!("'{}' from line {} is never closed", o as char, line(at)));
    }
    Ok(out)
}

/// Starts remote configuration on the control thread: the status, the
/// cached administrator PAC, and the refresh loop (first round at once).
pub(super) fn start(state: &Rc<RefCell<State>>, stop: &flume::Receiver<()>) {
    let cfg = state.borrow().cfg.clone();
    if !cfg.remote.enabled {
        return;
    }
    let boot = cfg.remote.boot.clone().unwrap_or_else(|| {
        Arc::new(Boot {
            source: Source::Local,
            doc: None,
            last_error: None,
            fetched: None,
        })
    });
    let mut config = boot.doc.as_ref().map(DocStatus::from_cached).unwrap_or_default();
    if let Some(at) = boot.fetched {
        config.last_fetch_at = Some(rfc3339(unix(at)));
        config.fetches = 1;
        config.last_result = Some(if boot.source == Source::Gateway {
            "applied"
        } else {
            "failed"
        });
    }
    config.last_error = boot.last_error.clone();
    let remote = Remote {
        status: RemoteStatus {
            source: boot.source,
            config,
            pac_source: "generated",
            pac: None,
            restart_needed: false,
        },
        cfg: cfg.clone(),
        pac: None,
    };
    {
        let mut st = state.borrow_mut();
        st.remote = Some(remote);
        if cfg.pac.source == PacSource::Gateway {
            let cached = Cached::read(&cfg.remote.pac_cache());
            st.use_pac_source(&cfg, cached);
        }
    }
    let creds = msc_tls::config::ClientCreds {
        ca: &cfg.tls.ca,
        cert: &cfg.tls.cert,
        key: &cfg.tls.key,
    };
    let tls = match msc_tls::config::client_config(&creds, 1) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("remote configuration disabled: {e}");
            return;
        }
    };
    let st = state.clone();
    let stop = stop.clone();
    let mut jitter = super::probe::Jitter::new(unix(SystemTime::now()) ^ 0x5eed_c0f1);
    monoio::spawn(async move {
        loop {
            round(&st, &tls).await;
            let wait = jitter.around(cfg.remote.interval);
            monoio::select! {
                _ = monoio::time::sleep(wait) => {},
                _ = stop.recv_async() => return,
            }
        }
    });
}

/// One round: the configuration, then (if the configuration says so) the
/// administrator's PAC.
async fn round(st: &Rc<RefCell<State>>, tls: &Arc<rustls::ClientConfig>) {
    let (gateways, cfg, etag) = {
        let s = st.borrow();
        let Some(r) = &s.remote else { return };
        (
            fetch::order(&s.routing.load()),
            r.cfg.clone(),
            r.status.config.etag.clone(),
        )
    };
    let res = fetch::fetch(
        &gateways,
        tls.clone(),
        "config",
        etag.as_deref(),
        limits(&cfg, MAX_CONFIG_DOC),
    )
    .await;
    let t0 = SystemTime::now();
    match res {
        Ok(Fetched::NotModified) => st.borrow_mut().remote_config(|r| {
            r.status.config.result("not-modified", None);
            if r.status.source == Source::Cache {
                // The gateway confirms the cached document is current.
                r.status.source = Source::Gateway;
            }
        }),
        Ok(Fetched::Doc { body, etag, from }) => {
            let doc = Cached {
                etag,
                from,
                at: unix(t0),
                body,
            };
            match validate_config(&cfg.file, &doc) {
                Err(e) => {
                    tracing::error!("configuration from the gateway rejected: {e}; keeping the running configuration");
                    st.borrow_mut()
                        .remote_config(|r| r.status.config.result("rejected", Some(e.to_string())));
                }
                Ok(new) => {
                    let cache = cfg.remote.config_cache();
                    if let Err(e) = doc.write(&cache, "#") {
                        // Applied anyway (it is valid), but a restart offline
                        // would not find it: say so.
                        tracing::error!("cannot write the configuration cache {}: {e}", cache.display());
                    }
                    tracing::info!(
                        "configuration from gateway {} (ETag {}) validated and cached: applying it",
                        doc.from,
                        doc.etag.as_deref().unwrap_or("none")
                    );
                    let mut s = st.borrow_mut();
                    s.remote_config(|r| {
                        r.status.config.took(&doc);
                        r.status.config.result("applied", None);
                        r.status.source = Source::Gateway;
                    });
                    apply_config(&mut s, new);
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            match &e {
                FetchError::Status { status: 404, .. } => {
                    tracing::warn!("configuration: {msg}; keeping the running configuration")
                }
                _ => tracing::info!("configuration fetch failed: {msg}"),
            }
            st.borrow_mut()
                .remote_config(|r| r.status.config.result("failed", Some(msg)));
        }
    }
    let pac_wanted = st
        .borrow()
        .remote
        .as_ref()
        .is_some_and(|r| r.cfg.pac.source == PacSource::Gateway);
    if pac_wanted {
        round_pac(st, tls, &gateways).await;
    }
}

fn validate_config(file: &Path, doc: &Cached) -> Result<ClientConfig, ConfigError> {
    let label = doc_label("config", &doc.from);
    let text = std::str::from_utf8(&doc.body).map_err(|_| ConfigError {
        file: label.clone(),
        key: String::new(),
        reason: "not UTF-8".into(),
    })?;
    let local = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    let mut cfg = overlay(file, &local, &label, text)?;
    // `[remote]` is local-only: what the running loop uses stays.
    cfg.remote.boot = None;
    Ok(cfg)
}

async fn round_pac(
    st: &Rc<RefCell<State>>,
    tls: &Arc<rustls::ClientConfig>,
    gateways: &[Arc<crate::upstream::GatewayRoute>],
) {
    let (cfg, etag, slots) = {
        let s = st.borrow();
        let Some(r) = &s.remote else { return };
        (
            r.cfg.clone(),
            r.pac.as_ref().and_then(|p| p.etag.clone()),
            s.slots.clone(),
        )
    };
    let res = fetch::fetch(gateways, tls.clone(), "pac", etag.as_deref(), limits(&cfg, MAX_PAC_DOC)).await;
    let mut s = st.borrow_mut();
    match res {
        Ok(Fetched::NotModified) => s.remote_pac(|p| p.result("not-modified", None)),
        Ok(Fetched::Doc { body, etag, from }) => {
            let doc = Cached {
                etag,
                from,
                at: unix(SystemTime::now()),
                body,
            };
            match check_pac(&doc.body, &slots) {
                Err(why) => {
                    let why = format!("administrator PAC from gateway {} refused: {why}", doc.from);
                    tracing::error!("{why}; still serving the previous PAC");
                    s.remote_pac(|p| p.result("rejected", Some(why)));
                }
                Ok(()) => {
                    let cache = cfg.remote.pac_cache();
                    if let Err(e) = doc.write(&cache, "//") {
                        tracing::error!("cannot write the PAC cache {}: {e}", cache.display());
                    }
                    tracing::info!(
                        "administrator PAC from gateway {} (ETag {}) checked and cached: serving it",
                        doc.from,
                        doc.etag.as_deref().unwrap_or("none")
                    );
                    s.remote_pac(|p| {
                        p.took(&doc);
                        p.result("applied", None);
                    });
                    s.serve_admin_pac(doc);
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::info!("administrator PAC fetch failed: {msg}");
            s.remote_pac(|p| p.result("failed", Some(msg)));
        }
    }
}

/// Applies a validated configuration from the gateway to the running
/// client: THE one call site. Until live reload (`control::reload`) is
/// wired here, it applies what the control plane serves on its own (the
/// PAC: bypass list, fail-open and on-premise rules, or the switch to the
/// administrator's PAC) and marks the rest for the next start (it is
/// cached, so the next start uses it).
fn apply_config(st: &mut State, cfg: ClientConfig) {
    // Validated as a whole configuration already; the reload checks what
    // only the running client can (credentials load, ports bind).
    if let Err(e) = super::reload::apply(st, cfg) {
        tracing::error!("configuration from the gateway not applied: {e}; keeping the running configuration");
        st.remote_config(|r| r.status.config.result("rejected", Some(e)));
        return;
    }
    let restart = !st.reload_state.restart_needed.is_empty();
    st.remote_config(|r| r.status.restart_needed = restart);
}

/// After any reload (`msc reload`, SIGHUP, a new document): what this
/// module keeps follows the configuration in force, and the administrator's
/// PAC stays served if the configuration asks for it (the reload rendered
/// the generated one).
pub(super) fn after_reload(st: &mut State) {
    let cfg = st.cfg.clone();
    if cfg.pac.source == PacSource::Gateway {
        let cached = st
            .remote
            .as_ref()
            .and_then(|r| r.pac.clone())
            .or_else(|| Cached::read(&cfg.remote.pac_cache()));
        st.use_pac_source(&cfg, cached);
    }
    if let Some(r) = &mut st.remote {
        r.cfg = cfg;
    }
}

impl State {
    fn remote_config(&mut self, f: impl FnOnce(&mut Remote)) {
        if let Some(r) = &mut self.remote {
            f(r);
        }
    }

    fn remote_pac(&mut self, f: impl FnOnce(&mut DocStatus)) {
        if let Some(p) = self.remote.as_mut().and_then(|r| r.status.pac.as_mut()) {
            f(p);
        }
    }

    /// Serves the PAC `cfg` asks for: the generated one, or the
    /// administrator's (`cached`, if it passes the checks; until one does,
    /// the generated one, which always names this client's proxies).
    fn use_pac_source(&mut self, cfg: &ClientConfig, cached: Option<Cached>) {
        let generated = || {
            let ports: Vec<(u16, u16)> = self.slots.iter().map(|(h, s)| (h.port(), s.port())).collect();
            super::render_pac(cfg, &ports)
        };
        if cfg.pac.source == PacSource::Generated {
            match generated() {
                Ok(p) => self.set_served_pac(p),
                Err(e) => tracing::error!("cannot render the PAC: {e:#}"),
            }
            if let Some(r) = &mut self.remote {
                r.status.pac_source = "generated";
                r.status.pac = None;
                r.pac = None;
            }
            return;
        }
        if let Some(r) = &mut self.remote {
            r.status.pac.get_or_insert_with(DocStatus::default);
        }
        match cached {
            Some(c) => match check_pac(&c.body, &self.slots) {
                Ok(()) => {
                    self.remote_pac(|p| p.took(&c));
                    self.serve_admin_pac(c);
                }
                Err(why) => {
                    let why = format!("the cached administrator PAC is refused: {why}");
                    tracing::error!("{why}; serving the generated PAC");
                    self.remote_pac(|p| p.last_error = Some(why));
                }
            },
            None => {
                if let Ok(p) = generated() {
                    self.set_served_pac(p);
                }
            }
        }
    }

    fn serve_admin_pac(&mut self, c: Cached) {
        self.set_served_pac(PacDoc::new(c.text()));
        if let Some(r) = &mut self.remote {
            r.status.pac_source = "gateway";
            r.pac = Some(c);
        }
    }

    /// Replaces the PAC served in normal operation (while disabled, the
    /// all-DIRECT one stays until protection is enabled again).
    fn set_served_pac(&mut self, p: PacDoc) {
        if self.machine.disabled().is_none() {
            self.pac = p.clone();
        }
        self.pac_enabled = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(port: u16) -> Vec<(SocketAddr, SocketAddr)> {
        let a: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        vec![(a, a)]
    }

    const GOOD: &str = "// company PAC\nfunction FindProxyForURL(url, host) {\n  if (/^intra\\./.test(host) || shExpMatch(host, \"*.corp\")) return \"DIRECT\";\n  var a = [1, 2]; var b = (a[0] + 4) / 2;\n  return \"PROXY 127.0.0.1:3128; PROXY 127.0.0.1:3129\";\n}\n";

    #[test]
    fn good_pacs_pass_and_foreign_ones_are_refused() {
        check_pac(GOOD.as_bytes(), &slots(3128)).unwrap();
        check_pac(GOOD.as_bytes(), &slots(3129)).unwrap();
        let e = check_pac(GOOD.as_bytes(), &slots(4000)).unwrap_err();
        assert!(e.contains("never names") && e.contains("127.0.0.1:4000"), "{e}");
        check_pac_structure(b"var FindProxyForURL = function(u, h) { return 'DIRECT'; };").unwrap();
    }

    #[test]
    fn broken_oversized_and_non_utf8_pacs_are_refused() {
        for (pac, why) in [
            (
                "function FindProxyForURL(url, host) { return \"DIRECT\";",
                "never closed",
            ),
            (
                "function FindProxyForURL(url, host) { return \"DIRECT; }",
                "unterminated string",
            ),
            ("function FindProxyForURL(url, host) { return x) }", "closes"),
            ("function FindProxyForURL(url, host) { /* }", "unterminated comment"),
            (
                "function FindProxy(url, host) { return \"DIRECT\"; }",
                "does not define",
            ),
            ("var x = 1; // function FindProxyForURL", "does not define"),
            ("<html>FindProxyForURL</html>", "regular expression"),
        ] {
            let e = check_pac_structure(pac.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{pac}: {e}");
        }
        let e = check_pac_structure(&[0xff, 0xfe]).unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
        let big = format!("{GOOD}//{}", "x".repeat(MAX_PAC_DOC));
        assert!(
            check_pac_structure(big.as_bytes())
                .unwrap_err()
                .contains("over the limit")
        );
    }

    #[test]
    fn caches_round_trip_atomically_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("remote-config.toml");
        let c = Cached {
            etag: Some("\"abc\"".into()),
            from: "'gw1' (127.0.0.1:1)".into(),
            at: 1_700_000_000,
            body: b"[pac]\nbypass = [\"a.test\"]\n".to_vec(),
        };
        c.write(&p, "#").unwrap();
        let back = Cached::read(&p).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.body, c.body);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Still a valid TOML document with the header.
        let t: toml::Table = std::fs::read_to_string(&p).unwrap().parse().unwrap();
        assert!(t.contains_key("pac"));
        assert!(Cached::read(&dir.path().join("none")).is_none());
        std::fs::write(&p, "no header\n").unwrap();
        assert!(Cached::read(&p).is_none());
    }
}
