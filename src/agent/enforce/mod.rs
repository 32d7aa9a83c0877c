//! Proxy-settings enforcement: points every browser and tool on the machine
//! at the client (its PAC for browsers, slot 1 for command-line tools), locks
//! it where the platform can lock, and puts it back when a user changes it.
//!
//! Each backend is one file implementing [`Backend`] (detect / apply /
//! verify / remove). Every path is relative to a root (`/` in production, a
//! temporary directory in tests). What a backend writes is recorded by
//! [`files::Files`] so [`Enforcer::remove_all`] restores the machine exactly.
//! The watchdog calls [`Enforcer::apply_all`] at start and
//! [`Enforcer::check_and_restore`] every [`Enforcer::interval`];
//! `msc enforce` runs the same loop on its own. docs/enforcement.md
//! describes what each backend writes where.
//!
//! Never on the client's data path: backends run external programs
//! (`dconf`, `gsettings`) and write files.

pub mod chromium;
pub mod env;
pub mod files;
pub mod firefox;
pub mod gnome;
pub mod kde;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::ConfigError;
use crate::config::client::ClientConfig;
use crate::config::enforce::{BackendChoice, EnforceConfig, Exception};
use files::Files;

/// What the backends point at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// For browsers and desktops: the client's PAC.
    pub pac_url: String,
    /// For command-line tools (they do not read PAC): slot 1's ports.
    /// `None` when the port is chosen at start-up (then `env` cannot run).
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    /// `no_proxy` entries: loopback plus the PAC bypass entries that have an
    /// equivalent.
    pub no_proxy: Vec<String>,
    /// Bypass entries with no `no_proxy` equivalent (URL and host patterns).
    pub no_proxy_skipped: Vec<String>,
}

impl Settings {
    /// The settings a client configuration implies.
    pub fn from_config(cfg: &ClientConfig) -> Result<Settings, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: cfg.file.clone(),
            key: key.into(),
            reason,
        };
        let pac_url = match &cfg.enforce.pac_url {
            Some(u) => u.clone(),
            None if cfg.control.port() == 0 => {
                return Err(err(
                    "enforce.pac_url",
                    "control.listen has port 0 (chosen at start-up): set a fixed control port or enforce.pac_url"
                        .into(),
                ));
            }
            None => format!("http://{}/proxy.pac", cfg.control),
        };
        let host = match cfg.listen {
            std::net::IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        let slot = &cfg.servers[0];
        let url = |p: u16| (p != 0).then(|| format!("http://{host}:{p}"));
        let mut no_proxy: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let mut skipped = Vec::new();
        for b in &cfg.pac.spec.bypass {
            match msc_pac::parse_bypass(b) {
                Ok(msc_pac::BypassRule::Host(h)) | Ok(msc_pac::BypassRule::Domain(h)) => no_proxy.push(h),
                Ok(msc_pac::BypassRule::Cidr(c)) => no_proxy.push(c.to_string()),
                Ok(_) | Err(_) => skipped.push(b.clone()),
            }
        }
        no_proxy.dedup();
        Ok(Settings {
            pac_url,
            http_proxy: url(slot.http_port),
            // Without an https_port the slot serves https URLs on its HTTP port.
            https_proxy: url(slot.https_port.unwrap_or(slot.http_port)),
            no_proxy,
            no_proxy_skipped: skipped,
        })
    }
}

/// One backend's view of the machine during an operation.
#[derive(Debug)]
pub struct Cx<'a> {
    pub settings: &'a Settings,
    pub files: &'a mut Files,
    /// The exceptions for this backend.
    pub exceptions: &'a [Exception],
}

impl Cx<'_> {
    pub fn root(&self) -> &Path {
        self.files.root()
    }
}

/// One kind of proxy setting. Implementations keep no state of their own:
/// what they changed is in [`Cx::files`].
pub trait Backend: fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether the program this backend configures is installed under `root`.
    fn detect(&self, root: &Path) -> bool;
    /// Writes the settings (idempotent: unchanged files are not rewritten).
    fn apply(&self, cx: &mut Cx<'_>) -> anyhow::Result<()>;
    /// What differs from the applied settings, one line per difference
    /// (empty: all in place).
    fn verify(&self, cx: &mut Cx<'_>) -> anyhow::Result<Vec<String>>;
    /// Undoes [`Backend::apply`]: files msc created deleted, keys it added
    /// removed, what was there before put back.
    fn remove(&self, cx: &mut Cx<'_>) -> anyhow::Result<()>;
}

/// Every backend, in the order they are applied.
pub fn all_backends() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(gnome::Gnome),
        Box::new(kde::Kde),
        Box::new(firefox::Firefox),
        Box::new(chromium::Chromium),
        Box::new(env::Env),
    ]
}

/// One setting found changed (and put back, unless `restored` is false).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub backend: &'static str,
    pub what: String,
    pub restored: bool,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.restored { "restored" } else { "NOT restored" };
        write!(f, "{}: {}: {r}", self.backend, self.what)
    }
}

/// The outcome of [`Enforcer::apply_all`].
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Backends now in force.
    pub applied: Vec<&'static str>,
    /// Backends removed (switch off, exception, no longer selected).
    pub removed: Vec<&'static str>,
    /// Backends that failed, with why.
    pub failed: Vec<(&'static str, String)>,
}

/// Applies, checks and removes the proxy settings under one root.
///
/// # Thread Safety
/// `Send + Sync`, but calls must not overlap (they share the state file
/// under the root): one loop owns it (the watchdog's, or `msc enforce`'s).
#[derive(Debug)]
pub struct Enforcer {
    cfg: EnforceConfig,
    settings: Settings,
    root: PathBuf,
    backends: Vec<Box<dyn Backend>>,
}

impl Enforcer {
    /// The enforcer for a client configuration, writing under `root`.
    pub fn new(cfg: &ClientConfig, root: &Path) -> Result<Enforcer, ConfigError> {
        let settings = Settings::from_config(cfg)?;
        let e = Enforcer::with_settings(cfg.enforce.clone(), settings, root);
        if e.selected().iter().any(|b| b.name() == "env") && e.settings.http_proxy.is_none() {
            return Err(ConfigError {
                file: cfg.file.clone(),
                key: "servers[0].http_port".into(),
                reason: "0 (chosen at start-up) cannot be written into http_proxy: set a fixed port, or leave \
                         env out of enforce.backends"
                    .into(),
            });
        }
        Ok(e)
    }

    pub fn with_settings(cfg: EnforceConfig, settings: Settings, root: &Path) -> Enforcer {
        Enforcer {
            cfg,
            settings,
            root: root.to_path_buf(),
            backends: all_backends(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.cfg.interval
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The backends that should be in force now (none when switched off).
    pub fn selected(&self) -> Vec<&dyn Backend> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        self.backends
            .iter()
            .map(|b| &**b)
            .filter(|b| match &self.cfg.backends {
                BackendChoice::Auto => b.detect(&self.root),
                BackendChoice::List(l) => l.iter().any(|n| n == b.name()),
            })
            .filter(|b| self.whole_exception(b.name()).is_none())
            .collect()
    }

    fn whole_exception(&self, backend: &str) -> Option<&Exception> {
        self.cfg
            .exceptions
            .iter()
            .find(|x| x.backend == backend && x.user.is_none())
    }

    fn exceptions_for(&self, backend: &str) -> Vec<Exception> {
        self.cfg
            .exceptions
            .iter()
            .filter(|x| x.backend == backend)
            .cloned()
            .collect()
    }

    /// Removes what msc applied for backends no longer selected.
    fn retire(&self, files: &mut Files, selected: &[&dyn Backend], out: &mut Applied) {
        for b in &self.backends {
            if !files.is_applied(b.name()) || selected.iter().any(|s| s.name() == b.name()) {
                continue;
            }
            let why = if !self.cfg.enabled {
                "enforcement switched off (enforce.enabled = false)".to_string()
            } else if let Some(x) = self.whole_exception(b.name()) {
                format!("exception: {}", x.reason)
            } else {
                "no longer selected".to_string()
            };
            let ex = self.exceptions_for(b.name());
            let mut cx = Cx {
                settings: &self.settings,
                files,
                exceptions: &ex,
            };
            match b.remove(&mut cx) {
                Ok(()) => {
                    tracing::info!("enforce: {}: removed ({why})", b.name());
                    files.set_applied(b.name(), false);
                    out.removed.push(b.name());
                }
                Err(e) => {
                    tracing::error!("enforce: {}: removal failed: {e:#}", b.name());
                    out.failed.push((b.name(), format!("{e:#}")));
                }
            }
        }
    }

    /// Applies every selected backend; removes what msc applied for the
    /// others (switch off, exception). A failing backend does not stop the rest.
    pub fn apply_all(&self) -> anyhow::Result<Applied> {
        let mut files = Files::load(&self.root)?;
        let selected = self.selected();
        let mut out = Applied::default();
        self.retire(&mut files, &selected, &mut out);
        for b in &selected {
            let ex = self.exceptions_for(b.name());
            let mut cx = Cx {
                settings: &self.settings,
                files: &mut files,
                exceptions: &ex,
            };
            let r = b.apply(&mut cx);
            // Recorded even on failure: a half-applied backend is removed too.
            files.set_applied(b.name(), true);
            match r {
                Ok(()) => out.applied.push(b.name()),
                Err(e) => {
                    tracing::error!("enforce: {}: cannot apply: {e:#}", b.name());
                    out.failed.push((b.name(), format!("{e:#}")));
                }
            }
        }
        files.save()?;
        Ok(out)
    }

    /// Verifies every selected backend and re-applies where anything
    /// drifted; one log line per drift (which backend, what changed).
    pub fn check_and_restore(&self) -> Vec<Drift> {
        let mut files = match Files::load(&self.root) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("enforce: {e:#}");
                return vec![Drift {
                    backend: "state",
                    what: format!("{e:#}"),
                    restored: false,
                }];
            }
        };
        let selected = self.selected();
        let mut drifts = Vec::new();
        let mut retired = Applied::default();
        self.retire(&mut files, &selected, &mut retired);
        for b in &selected {
            let ex = self.exceptions_for(b.name());
            let mut cx = Cx {
                settings: &self.settings,
                files: &mut files,
                exceptions: &ex,
            };
            let found = match b.verify(&mut cx) {
                Ok(f) => f,
                Err(e) => vec![format!("cannot verify: {e:#}")],
            };
            if found.is_empty() {
                continue;
            }
            let restored = match b.apply(&mut cx) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!("enforce: {}: cannot restore: {e:#}", b.name());
                    false
                }
            };
            files.set_applied(b.name(), true);
            for what in found {
                let d = Drift {
                    backend: b.name(),
                    what,
                    restored,
                };
                tracing::warn!("enforce: drift: {d}");
                drifts.push(d);
            }
        }
        if let Err(e) = files.save() {
            tracing::error!("enforce: {e:#}");
        }
        drifts
    }

    /// Removes everything msc applied, whatever the configuration says now.
    pub fn remove_all(&self) -> anyhow::Result<Vec<&'static str>> {
        let mut files = Files::load(&self.root)?;
        let mut removed = Vec::new();
        let mut failed = Vec::new();
        for b in self.backends.iter().rev() {
            if !files.is_applied(b.name()) {
                continue;
            }
            let ex = self.exceptions_for(b.name());
            let mut cx = Cx {
                settings: &self.settings,
                files: &mut files,
                exceptions: &ex,
            };
            match b.remove(&mut cx) {
                Ok(()) => {
                    files.set_applied(b.name(), false);
                    removed.push(b.name());
                }
                Err(e) => failed.push(format!("{}: {e:#}", b.name())),
            }
        }
        files.save()?;
        if !failed.is_empty() {
            anyhow::bail!("removal incomplete: {}", failed.join("; "));
        }
        Ok(removed)
    }
}

/// Runs a helper program with a time limit (coreutils `timeout`): a wedged
/// session bus must not stall the loop. Returns stdout; an error names the
/// command and carries its stderr.
pub(crate) fn run(
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    as_user: Option<(u32, u32)>,
) -> anyhow::Result<String> {
    let mut c = Command::new("timeout");
    c.arg("10");
    if let Some((uid, gid)) = as_user {
        c.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--reset-env",
            "env",
        ]);
        for (k, v) in envs {
            c.arg(format!("{k}={v}"));
        }
    } else {
        c.envs(envs.iter().copied());
    }
    c.arg(program).args(args);
    c.stdin(Stdio::null());
    let out = c
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether any of these root-relative paths exists.
pub(crate) fn any_exists(root: &Path, rels: &[&str]) -> bool {
    rels.iter().any(|r| root.join(r).exists())
}
