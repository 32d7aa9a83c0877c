//! The service manager's notification socket (`sd_notify`), when
//! `NOTIFY_SOCKET` is set: `READY=1` once msc listens, `STOPPING=1` on a stop
//! request, and `WATCHDOG=1` from the client's control plane, sent only after
//! every worker answered (see `control::health`). Without `NOTIFY_SOCKET`
//! every call here does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    // Never unset the environment: other threads read it too.
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// `READY=1`, with a one-line status.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (systemd's
/// `WatchdogSec=`), when the service manager asks for it for this process.
///
/// As libsystemd's `sd_watchdog_enabled`: `WATCHDOG_PID`, when set, must be
/// this process (the crate's version also requires it to be set).
pub fn watchdog_period() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
