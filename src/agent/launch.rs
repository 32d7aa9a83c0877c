//! `msc launch --config client.toml`: what the packaged `msc.service` runs.
//!
//! It replaces itself (exec: same pid, so systemd's main pid, `Type=notify`
//! and `WatchdogSec=` see the client) with `msc run --config FILE`, from:
//! - `update.install_dir/current` when `[update]` is enabled and `current`
//!   is a release the updater installed ([`crate::release::launch_target`]:
//!   a symlink to a file inside the install directory that `state.json`
//!   records as current);
//! - else this binary (the package's), with one log line saying why.
//!
//! A release on trial that is started a second time stopped before passing
//! its health check (systemd's `Restart=always` brought the launcher back):
//! it is rolled back here, before anything runs, so a crash loop of a new
//! release ends at its second start. A release that runs but never becomes
//! healthy is rolled back by the agent (`msc watchdog` beside systemd, see
//! [`super::watchdog`]), which finds the client's pid in the lock the
//! launcher holds and hands on across exec ([`crate::release::LAUNCH_LOCK`]).

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::release;

/// Set for the client a launcher started: it may install releases (the
/// launcher runs `current`, the launcher and the agent roll back).
pub const LAUNCHED_ENV: &str = "MSC_LAUNCHED";

/// Execs the client; returns only on failure.
pub fn launch(config: &Path, log: &str) -> anyhow::Result<std::process::ExitCode> {
    let this = std::env::current_exe()?;
    let cfg = match crate::control::remote::cached(config) {
        Ok(c) => Some(c),
        Err(e) => {
            // `msc run` reports the error properly (and exits with status 2).
            tracing::warn!(
                "launch: cannot read the configuration ({e}); running {}",
                this.display()
            );
            None
        }
    };
    let Some(u) = cfg.and_then(|c| c.update) else {
        return Err(exec(&this, config, log, None));
    };
    let dir = u.install_dir;
    let lock = match hold_lock(&dir) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(
                "launch: cannot hold {} ({e}); a release on trial cannot be restarted by the agent",
                dir.join(release::LAUNCH_LOCK).display()
            );
            None
        }
    };
    // At most two rounds: a rollback changes `current` once.
    for _ in 0..2 {
        match release::launch_target(&dir) {
            Ok((target, mut st)) => {
                let version = st.current.as_ref().map(|c| c.version.clone()).unwrap_or_default();
                if st.trial && st.trial_launches >= 1 {
                    let cause = format!(
                        "release {version} stopped before passing its health check (started {} time(s) on trial; restarted by the service manager)",
                        st.trial_launches
                    );
                    super::watchdog::roll_back_release(&dir, &version, &cause);
                    continue;
                }
                if st.trial {
                    st.trial_launches += 1;
                    if let Err(e) = st.save(&dir) {
                        tracing::error!("launch: cannot record the trial start in {}: {e}", dir.display());
                    }
                    tracing::info!("launch: starting release {version} ({}) on trial", target.display());
                } else {
                    tracing::info!("launch: starting release {version} ({})", target.display());
                }
                return Err(exec(&target, config, log, lock));
            }
            Err(why) => {
                tracing::info!("launch: {why}; running {}", this.display());
                return Err(exec(&this, config, log, lock));
            }
        }
    }
    tracing::error!(
        "launch: {} changed twice while starting; running {}",
        dir.display(),
        this.display()
    );
    Err(exec(&this, config, log, lock))
}

/// Takes the launch lock (waiting a bounded time for a client that is
/// still stopping), writes this pid, and keeps it open across exec.
fn hold_lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::Seek as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(release::LAUNCH_LOCK);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)?;
    let deadline = Instant::now() + crate::app::GRACE + Duration::from_secs(1);
    let (_t, r) = std::sync::mpsc::channel::<()>();
    loop {
        match f.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                // A bounded pause, off any runtime (nothing else runs yet).
                let _ = r.recv_timeout(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                anyhow::bail!("another client holds it (pid {:?})", release::launched_pid(dir))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{}", std::process::id())?;
    // Kept open by the client after exec: the lock lives as long as it runs.
    rustix::io::fcntl_setfd(&f, rustix::io::FdFlags::empty())?;
    Ok(f)
}

fn exec(program: &Path, config: &Path, log: &str, lock: Option<std::fs::File>) -> anyhow::Error {
    let args: [OsString; 4] = ["--log".into(), log.into(), "run".into(), "--config".into()];
    let err = Command::new(program)
        .args(args)
        .arg(config)
        .env(LAUNCHED_ENV, "1")
        .exec();
    drop(lock);
    anyhow::anyhow!("cannot run {}: {err}", PathBuf::from(program).display())
}
