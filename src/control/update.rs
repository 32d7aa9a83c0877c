//! The client's update check (`[update]`): on the control thread, every
//! `update.interval` (with jitter), fetches the signed release manifest from
//! the best gateway over the mutual-TLS tunnel, verifies it with the pinned
//! key, refuses anything not newer than the running release (or a release
//! that was rolled back here), downloads the artifact (at most the signed
//! size), checks size and SHA-256, installs it beside the current binary
//! ([`crate::release::install`]) and asks to be restarted into it: it stops
//! itself, and `msc watchdog` (or, under systemd, `Restart=always` and
//! `msc launch`) starts `current`, now the new release.
//!
//! Installing needs a supervisor that runs `current` and rolls back a
//! release that does not become healthy: `msc watchdog`, or the packaged
//! service's `msc launch` with the agent (`msc watchdog` beside systemd,
//! [`crate::agent::launch`]); a client run any other way only reports what
//! it would install.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::State;
use super::fetch::{self, FetchLimits, Fetched};
use crate::config::client::{ClientConfig, UpdateSettings};
use crate::release::{self, DOC_MANIFEST, DOC_PREFIX, DOC_SIGNATURE, Installed, Manifest, Rollback};

/// The `update` object of `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateStatus {
    pub enabled: bool,
    /// The version of record of the running binary: its signed manifest's if
    /// the updater installed it, else the build version.
    pub running_version: String,
    /// The running binary.
    pub running_path: Option<PathBuf>,
    /// When the last check ended (Unix seconds).
    pub last_check: Option<u64>,
    /// What it found, in one line.
    pub last_result: Option<String>,
    /// The last rollback `msc watchdog` did, if any.
    pub last_rollback: Option<Rollback>,
}

impl UpdateStatus {
    /// Read at start: which release runs, and the last rollback.
    pub fn at_start(cfg: &ClientConfig) -> UpdateStatus {
        let exe = std::env::current_exe().ok();
        let build = env!("CARGO_PKG_VERSION").to_owned();
        let Some(u) = &cfg.update else {
            return UpdateStatus {
                enabled: false,
                running_version: build,
                running_path: exe,
                last_check: None,
                last_result: None,
                last_rollback: None,
            };
        };
        let st = release::State::load(&u.install_dir);
        let running_version = exe
            .as_deref()
            .and_then(|e| st.version_of(&u.install_dir, e))
            .map_or(build, str::to_owned);
        if let Some(rb) = &st.last_rollback {
            tracing::info!(
                "update: release {} was rolled back to {} ({})",
                rb.from,
                rb.to,
                rb.reason
            );
        }
        UpdateStatus {
            enabled: true,
            running_version,
            running_path: exe,
            last_check: None,
            last_result: None,
            last_rollback: st.last_rollback,
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Nothing to do (one line: why).
    Nothing(String),
    /// A release refused (signature, hash, size, version...).
    Refused(String),
    /// The check could not be made (no gateway, no release served...).
    Failed(String),
    /// Installed at this path: restart into it.
    Installed(Manifest, PathBuf),
}

/// Starts the periodic check if `[update]` is enabled.
pub fn start(state: &Rc<RefCell<State>>, stop: &flume::Receiver<()>) {
    let cfg = state.borrow().cfg.clone();
    let Some(u) = cfg.update.clone() else { return };
    let creds = msc_tls::config::ClientCreds {
        ca: &cfg.tls.ca,
        cert: &cfg.tls.cert,
        key: &cfg.tls.key,
    };
    let tls = match msc_tls::config::client_config(&creds, 4) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("update checks disabled: {e}");
            return;
        }
    };
    let st = state.clone();
    let stop = stop.clone();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(11, |d| u64::from(d.subsec_nanos()));
    monoio::spawn(async move {
        let mut jitter = super::probe::Jitter::new(seed);
        // The first check soon after start, then every interval.
        let mut wait = jitter.around(u.interval.min(Duration::from_secs(10)));
        let mut last_logged: Option<Outcome> = None;
        loop {
            monoio::select! {
                _ = monoio::time::sleep(wait) => {},
                _ = stop.recv_async() => return,
            }
            wait = jitter.around(u.interval);
            let (gateways, running) = {
                let s = st.borrow();
                (fetch::order(&s.routing.load()), s.update.clone())
            };
            let outcome = check(&u, &cfg, &gateways, tls.clone(), &running).await;
            let line = match &outcome {
                Outcome::Nothing(r) => r.clone(),
                Outcome::Refused(r) => format!("refused: {r}"),
                Outcome::Failed(r) => format!("check failed: {r}"),
                Outcome::Installed(m, p) => format!("installed {} as {}", m.version, p.display()),
            };
            {
                let mut s = st.borrow_mut();
                s.update.last_check = Some(release::now_secs());
                s.update.last_result = Some(line.clone());
            }
            // One line per change of outcome, not one per check.
            if last_logged.as_ref() != Some(&outcome) {
                match &outcome {
                    Outcome::Nothing(_) => tracing::info!("update: {line}"),
                    Outcome::Refused(r) => tracing::warn!("update refused: {r}; nothing installed"),
                    Outcome::Failed(r) => tracing::warn!("update check failed: {r}"),
                    Outcome::Installed(m, p) => tracing::warn!(
                        "update: installed release {} ({} bytes, sha256 {}) as {}; restarting into it",
                        m.version,
                        m.size,
                        m.sha256,
                        p.display()
                    ),
                }
                last_logged = Some(outcome.clone());
            }
            if let Outcome::Installed(..) = outcome {
                // The same path as SIGTERM from outside: the main thread stops
                // the client gracefully and `msc watchdog` starts `current`.
                let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM);
                return;
            }
        }
    });
}

async fn check(
    u: &UpdateSettings,
    cfg: &ClientConfig,
    gateways: &[Arc<crate::upstream::GatewayRoute>],
    tls: Arc<rustls::ClientConfig>,
    running: &UpdateStatus,
) -> Outcome {
    let t = cfg.timeouts;
    let limits = |max_body: usize, transfer: Duration| FetchLimits {
        max_body,
        connect: t.connect,
        handshake: t.handshake,
        transfer,
    };
    let get = |name: &'static str, max: usize| {
        let tls = tls.clone();
        async move {
            match fetch::fetch(gateways, tls, name, None, limits(max, Duration::from_secs(10))).await {
                Ok(Fetched::Doc { body, .. }) => Ok(body),
                Ok(Fetched::NotModified) => Err(format!("{name}: unexpected 304")),
                Err(e) => Err(format!("{name}: {e}")),
            }
        }
    };
    let manifest = match get(DOC_MANIFEST, release::MAX_MANIFEST).await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e),
    };
    let sig = match get(DOC_SIGNATURE, release::MAX_SIGNATURE).await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e),
    };
    let m = match release::verify(&manifest, &sig, &u.public_key) {
        Ok(m) => m,
        Err(e) => return Outcome::Refused(e),
    };
    match release::is_newer(&m.version, &running.running_version) {
        Ok(true) => {}
        Ok(false) if m.version == running.running_version => {
            return Outcome::Nothing(format!("up to date: release {} is the running one", m.version));
        }
        Ok(false) => {
            return Outcome::Refused(format!(
                "release {} is not newer than the running {} (no downgrade)",
                m.version, running.running_version
            ));
        }
        Err(e) => return Outcome::Refused(format!("cannot compare versions: {e}")),
    }
    if let Some(rb) = running.last_rollback.as_ref().filter(|rb| rb.from == m.version) {
        return Outcome::Refused(format!(
            "release {} was rolled back here ({}); it is not installed again",
            m.version, rb.reason
        ));
    }
    let Ok(size) = usize::try_from(m.size) else {
        return Outcome::Refused(format!("release {} is too large ({} bytes)", m.version, m.size));
    };
    let name = format!("{DOC_PREFIX}{}", m.file);
    // A generous transfer bound: 60 s plus a second per MiB.
    let transfer = Duration::from_secs(60 + m.size / (1 << 20));
    let body = match fetch::fetch(gateways, tls.clone(), &name, None, limits(size, transfer)).await {
        Ok(Fetched::Doc { body, .. }) => body,
        Ok(Fetched::NotModified) => return Outcome::Failed(format!("{name}: unexpected 304")),
        Err(fetch::FetchError::Bad(e)) => return Outcome::Refused(format!("download of release {}: {e}", m.version)),
        Err(e) => return Outcome::Failed(format!("{name}: {e}")),
    };
    if body.len() != size {
        return Outcome::Refused(format!(
            "download of release {} is {} bytes, the signed size is {size} (truncated or altered)",
            m.version,
            body.len()
        ));
    }
    let got = release::sha256_hex(&body);
    if got != m.sha256 {
        return Outcome::Refused(format!(
            "download of release {} has sha256 {got}, the signed one is {} (altered)",
            m.version, m.sha256
        ));
    }
    if std::env::var_os(crate::agent::watchdog::SUPERVISOR_ENV).is_none()
        && std::env::var_os(crate::agent::launch::LAUNCHED_ENV).is_none()
    {
        return Outcome::Nothing(format!(
            "release {} is available and verified, but this client does not run under `msc watchdog` or `msc launch`, which run installed releases and roll them back: not installing",
            m.version
        ));
    }
    let Some(path) = running.running_path.clone() else {
        return Outcome::Failed("the running binary's path is unknown".into());
    };
    let prev = Installed {
        version: running.running_version.clone(),
        path,
    };
    match release::install(&u.install_dir, &m, &body, prev) {
        Ok(p) => Outcome::Installed(m, p),
        Err(e) => Outcome::Failed(format!(
            "cannot install release {} in {}: {e}",
            m.version,
            u.install_dir.display()
        )),
    }
}
