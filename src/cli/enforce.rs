//! `msc enforce`: the proxy-settings enforcement loop on its own (the
//! watchdog runs the same library calls), or one pass, or the removal.

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;

use crate::agent::enforce::Enforcer;

/// What one invocation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Apply, then check and restore every interval until SIGTERM/SIGINT.
    Loop,
    /// Apply (or, switched off, remove) once and exit.
    Once,
    /// Remove everything msc applied and exit.
    Remove,
}

pub fn run(config: &Path, root: &Path, mode: Mode) -> anyhow::Result<ExitCode> {
    // `enforce.*` may be set centrally (docs/fleet.md).
    let cfg = match crate::control::remote::cached(config) {
        Ok(c) => c,
        Err(e) => return Ok(super::config_error(e)),
    };
    let enforcer = match Enforcer::new(&cfg, root) {
        Ok(e) => e,
        Err(e) => return Ok(super::config_error(e)),
    };
    if mode == Mode::Remove {
        let removed = enforcer.remove_all()?;
        println!("msc enforce: removed {}", list(&removed));
        return Ok(ExitCode::SUCCESS);
    }
    let a = enforcer.apply_all()?;
    let mut line = if enforcer.enabled() {
        format!("msc enforce ready: applied {}", list(&a.applied))
    } else {
        "msc enforce ready: switched off (enforce.enabled = false), nothing applied".to_string()
    };
    if !a.removed.is_empty() {
        line.push_str(&format!("; removed {}", list(&a.removed)));
    }
    for (b, e) in &a.failed {
        line.push_str(&format!("; {b} FAILED: {e}"));
    }
    if mode == Mode::Loop {
        line.push_str(&format!("; checking every {:?}", enforcer.interval()));
    }
    super::ready(&line);
    if mode == Mode::Once {
        return Ok(if a.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    std::thread::spawn(move || {
        if let Some(s) = signals.forever().next() {
            let _ = tx.send(s);
        }
    });
    loop {
        match rx.recv_timeout(enforcer.interval()) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Each drift is logged by the enforcer.
                enforcer.check_and_restore();
            }
            // Settings stay in force when the loop stops: only --remove
            // (the package's removal) takes them away.
            Ok(sig) => {
                tracing::info!("signal {sig}: stopping; settings stay in force");
                return Ok(ExitCode::SUCCESS);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn list(v: &[&str]) -> String {
    if v.is_empty() { "nothing".into() } else { v.join(", ") }
}
