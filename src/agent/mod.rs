//! Beside the client and the gateway, never on their data path: what keeps a
//! laptop pointed at `msc run` and keeps it running.
//! - [`instance`]: one instance per configuration and port (kernel-held locks).
//! - [`systemd`]: the service manager's notifications (`READY=1`, `WATCHDOG=1`).
//! - [`watchdog`]: `msc watchdog`, which supervises `msc run` where no service
//!   manager does and runs the agent's periodic tasks.
//! - [`enforce`]: the proxy-settings backends (GNOME, KDE, Firefox, Chromium,
//!   command-line tools) and their check-and-restore loop, one of those tasks.
//! - [`session`]: logind signals (lock, logout, suspend, shutdown) that end a
//!   trusted user's disable.
//! - [`tray`]: the tray icon (`msc tray`).
//!
//! Nothing here may block or slow the client's workers.

pub mod enforce;
pub mod instance;
pub mod launch;
pub mod session;
pub mod systemd;
pub mod tray;
pub mod watchdog;

use std::path::Path;
use std::time::Duration;

/// A periodic job `msc watchdog` runs beside supervision, on its own thread
/// so that a slow run never delays a restart of the client.
pub trait AgentTask: Send {
    /// Shown in logs.
    fn name(&self) -> &str;
    /// Time between two runs (the first run is at start).
    fn period(&self) -> Duration;
    /// One run; errors are logged and the task runs again next period.
    fn run_once(&mut self) -> anyhow::Result<()>;
    /// Called once when the watchdog stops (not on uninstall).
    fn stop(&mut self) {}
}

/// Proxy-settings enforcement as a watchdog task: applies every backend at
/// the first run, then checks and restores drift every `enforce.interval`
/// (each drift is logged by the enforcer). Settings stay in force when the
/// watchdog stops; only `msc enforce --remove` (the package's removal) takes
/// them away.
#[derive(Debug)]
struct EnforceTask {
    enforcer: enforce::Enforcer,
    applied: bool,
    /// The client's control socket: each run's outcome is reported there,
    /// so the client's state says when enforcement fails.
    socket: Option<std::path::PathBuf>,
}

impl EnforceTask {
    fn run(&mut self) -> anyhow::Result<()> {
        if !self.applied {
            let a = self.enforcer.apply_all()?;
            tracing::info!(
                "enforce: applied {:?}, removed {:?}, failed {:?}",
                a.applied,
                a.removed,
                a.failed
            );
            self.applied = true;
            if let Some((b, why)) = a.failed.first() {
                anyhow::bail!("{b}: {why}");
            }
            return Ok(());
        }
        let drift = self.enforcer.check_and_restore();
        match drift.iter().find(|d| !d.restored) {
            Some(d) => anyhow::bail!("{d}"),
            None => Ok(()),
        }
    }
}

impl AgentTask for EnforceTask {
    fn name(&self) -> &str {
        "enforce"
    }

    fn period(&self) -> Duration {
        self.enforcer.interval()
    }

    fn run_once(&mut self) -> anyhow::Result<()> {
        let r = self.run();
        if let Some(path) = &self.socket {
            let failing = r.as_ref().err().map(|e| format!("{e:#}"));
            let req = crate::control::socket::Request::Enforcement { failing };
            // The client may be restarting: the next run reports again.
            if let Err(e) = crate::control::socket::request(path, &req) {
                tracing::debug!("enforce: cannot report to the client: {e:#}");
            }
        }
        r
    }
}

/// The periodic tasks `msc watchdog --config FILE` runs for this client
/// configuration; settings are written under `root` (`/` on a laptop, a
/// temporary directory in tests).
pub fn agent_tasks(
    cfg: &crate::config::client::ClientConfig,
    root: &Path,
) -> Result<Vec<Box<dyn AgentTask>>, crate::config::ConfigError> {
    let enforcer = enforce::Enforcer::new(cfg, root)?;
    Ok(vec![Box::new(EnforceTask {
        enforcer,
        applied: false,
        socket: cfg.socket.clone(),
    })])
}
