//! `msc watchdog --config client.toml`: its own process, off the data path.
//!
//! Where no service manager supervises the client (and in tests), it starts
//! `msc run` as its child and keeps it running:
//! - a child that dies is restarted at once (SIGCHLD wakes the loop; no
//!   polling delay), then with a doubling back-off while it keeps dying
//!   soon after start (a crash loop), up to `watchdog.backoff_max`;
//! - a child that stops answering `GET /health` (which the control plane
//!   answers only after every worker answered) for `watchdog.health_failures`
//!   checks in a row is killed (SIGKILL: a wedged or stopped process handles
//!   nothing else) and restarted;
//! - every restart is logged with its cause;
//! - with `[update]` enabled it runs `install_dir/current` (the release the
//!   client installed, see [`crate::release`]); a release just installed is
//!   on trial: if it does not pass a health check within `update.trial`, or
//!   exits first, `current` is switched back to the previous binary, which
//!   is restarted at once, and the rollback is recorded for the client's
//!   status.
//!
//! Under systemd (the packaged units) the service manager does this itself
//! (`Restart=always`, `WatchdogSec=` fed by the control plane; the unit runs
//! `msc launch`, which execs `current`, see [`super::launch`]) and the
//! watchdog runs the agent's periodic tasks ([`super::AgentTask`]) and
//! follows a release on trial: it confirms it once it answers `GET /health`,
//! or rolls it back after `update.trial` and stops the client (SIGTERM to
//! the pid in the launch lock) so that systemd restarts the previous one.
//!
//! The child gets `MSC_SUPERVISOR_PID` and asks the kernel for SIGTERM when
//! its parent dies, so a killed watchdog never leaves an orphan client behind
//! (which would hold the instance locks against the next watchdog's child).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::client::{ClientConfig, WatchdogSettings};

/// The environment variable naming the supervising watchdog's pid.
pub const SUPERVISOR_ENV: &str = "MSC_SUPERVISOR_PID";

/// A child that ran at least this long before dying was not crash-looping.
const STABLE: Duration = Duration::from_secs(10);
/// First back-off step (the second restart in a row).
const BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Whether `msc watchdog` supervises the client itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Supervise {
    /// Unless a systemd service runs it (systemd then supervises `msc run`).
    Auto,
    Yes,
    No,
}

/// Whether this process is a systemd service on a systemd-booted machine.
pub fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some() && sd_notify::booted().unwrap_or(false)
}

/// The wait before restart number `n` of a crash loop (1 = first death).
pub fn backoff(n: u32, max: Duration) -> Duration {
    if n <= 1 {
        return Duration::ZERO;
    }
    let shift = (n - 2).min(16);
    BACKOFF_MIN.saturating_mul(1 << shift).min(max)
}

/// Called by `msc run` at start: when a watchdog supervises it, die with it.
pub fn follow_supervisor() {
    let Some(pid) = std::env::var(SUPERVISOR_ENV).ok().and_then(|v| v.parse::<i32>().ok()) else {
        return;
    };
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM)) {
        tracing::warn!("cannot follow the watchdog's exit: {e}");
        return;
    }
    // The watchdog may have died before the request above took effect.
    if rustix::process::getppid().map(|p| p.as_raw_pid()) != Some(pid) {
        tracing::warn!("the supervising watchdog (pid {pid}) is gone: stopping");
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM);
    }
}

/// `GET /health` on the client's control API, within `timeout` in all.
pub fn check_health(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if out.len() < 64 * 1024 => out.extend_from_slice(&buf[..n]),
            Ok(_) => break,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("no answer within {timeout:?}"));
            }
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&out);
    let status = text.lines().next().unwrap_or_default();
    if status.starts_with("HTTP/1.1 200") {
        return Ok(());
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    let silent = serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| {
        let ids: Vec<String> = v["workers"]
            .as_array()?
            .iter()
            .filter(|w| w["answered"] == false)
            .map(|w| w["worker"].to_string())
            .collect();
        (!ids.is_empty()).then(|| format!("worker(s) {} did not answer", ids.join(", ")))
    });
    Err(silent.unwrap_or_else(|| format!("answered '{status}'")))
}

/// What the watchdog runs.
#[derive(Debug)]
pub struct Options {
    pub config: PathBuf,
    pub cfg: ClientConfig,
    pub supervise: Supervise,
    /// The `msc` binary to run (this one).
    pub msc: PathBuf,
    /// `--log` for the child.
    pub log: String,
}

enum Event {
    Signal(i32),
    Line(u64, String),
    Health(u64, Result<(), String>),
}

struct Running {
    child: Child,
    generation: u64,
    started: Instant,
    /// The control API, once the child printed its ready line.
    control: Option<SocketAddr>,
    failures: u32,
    checking: bool,
    next_check: Instant,
    /// A newly installed release on trial: its version and the time by
    /// which it must pass a health check (else it is rolled back).
    trial: Option<(String, Instant)>,
}

/// Runs until SIGTERM or SIGINT; returns the exit status for `main`.
pub fn run(opts: Options, tasks: Vec<Box<dyn super::AgentTask>>) -> anyhow::Result<std::process::ExitCode> {
    use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
    let dir = super::instance::runtime_dir(opts.cfg.runtime_dir.as_deref());
    let _lock = super::instance::acquire(&dir, &[super::instance::supervisor_key(&opts.cfg.file)])?;
    let supervise = match opts.supervise {
        Supervise::Yes => true,
        Supervise::No => false,
        Supervise::Auto => !under_systemd(),
    };
    let (tx, rx) = mpsc::channel::<Event>();
    // Signals first: a child that dies at once must still wake the loop.
    let mut signals = signal_hook::iterator::Signals::new([SIGCHLD, SIGINT, SIGTERM])?;
    let sig_tx = tx.clone();
    std::thread::Builder::new()
        .name("msc-wd-signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if sig_tx.send(Event::Signal(s)).is_err() {
                    return;
                }
            }
        })?;
    let (tasks_stop, tasks_thread) = start_tasks(tasks)?;
    crate::agent::systemd::ready("watchdog running");
    let code = if supervise {
        tracing::info!(
            "watchdog: supervising `msc run --config {}` (health every {:?})",
            opts.config.display(),
            opts.cfg.watchdog.health_interval
        );
        supervise_loop(&opts, &tx, &rx)?
    } else {
        follow_loop(&opts, &rx);
        std::process::ExitCode::SUCCESS
    };
    drop(tasks_stop);
    if let Some(t) = tasks_thread {
        let _ = t.join();
    }
    Ok(code)
}

fn supervise_loop(
    opts: &Options,
    tx: &mpsc::Sender<Event>,
    rx: &mpsc::Receiver<Event>,
) -> anyhow::Result<std::process::ExitCode> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let ws: WatchdogSettings = opts.cfg.watchdog;
    let mut generation = 0u64;
    let mut in_a_row = 0u32;
    let mut restarts = 0u64;
    let mut child: Option<Running> = None;
    let mut restart_at: Option<Instant> = Some(Instant::now());
    loop {
        // Start (or restart) when due.
        if child.is_none() && restart_at.is_some_and(|t| Instant::now() >= t) {
            restart_at = None;
            generation += 1;
            let (program, trial) = program(opts);
            match spawn(opts, &program, generation, tx) {
                Ok(c) => {
                    println!("msc watchdog: client started (pid {})", c.id());
                    let _ = std::io::stdout().flush();
                    if let Some((v, _)) = &trial {
                        tracing::info!(
                            "watchdog: release {v} is on trial: it must pass its health check within {:?}",
                            opts.cfg.update.as_ref().map(|u| u.trial).unwrap_or_default()
                        );
                    }
                    child = Some(Running {
                        trial,
                        child: c,
                        generation,
                        started: Instant::now(),
                        control: None,
                        failures: 0,
                        checking: false,
                        next_check: Instant::now(),
                    });
                }
                Err(e) => {
                    in_a_row += 1;
                    let d = backoff(in_a_row.max(2), ws.backoff_max);
                    tracing::error!("watchdog: cannot start the client: {e:#}; retrying in {d:?}");
                    restart_at = Some(Instant::now() + d);
                }
            }
        }
        // Health check when due.
        if let Some(c) = child.as_mut()
            && let Some(addr) = c.control
            && !c.checking
            && Instant::now() >= c.next_check
        {
            c.checking = true;
            let (g, t, timeout) = (c.generation, tx.clone(), ws.health_timeout);
            std::thread::Builder::new()
                .name("msc-wd-health".into())
                .spawn(move || {
                    let _ = t.send(Event::Health(g, check_health(addr, timeout)));
                })?;
        }
        let next = [
            restart_at,
            child.as_ref().and_then(|c| c.control.map(|_| c.next_check)),
            child.as_ref().map(|c| c.started + ws.start_timeout),
            child.as_ref().and_then(|c| c.trial.as_ref().map(|t| t.1)),
        ]
        .into_iter()
        .flatten()
        .min();
        let wait = next.map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(Instant::now()).min(Duration::from_secs(1))
        });
        let mut kill_cause: Option<String> = None;
        match rx.recv_timeout(wait) {
            Ok(Event::Signal(s)) if s == SIGTERM || s == SIGINT => {
                tracing::info!("watchdog: signal {s}: stopping the client");
                if let Some(mut c) = child.take() {
                    stop_child(&mut c.child);
                }
                return Ok(std::process::ExitCode::SUCCESS);
            }
            Ok(Event::Signal(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("watchdog event channel closed"),
            Ok(Event::Line(g, line)) => {
                if let Some(c) = child.as_mut().filter(|c| c.generation == g)
                    && c.control.is_none()
                    && line.contains("msc client ready")
                    && let Some(a) = control_addr(&line)
                {
                    c.control = Some(a);
                    c.next_check = Instant::now() + ws.health_interval;
                }
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
            Ok(Event::Health(g, res)) => {
                if let Some(c) = child.as_mut().filter(|c| c.generation == g) {
                    c.checking = false;
                    c.next_check = Instant::now() + ws.health_interval;
                    match res {
                        Ok(()) => {
                            c.failures = 0;
                            if let Some((v, _)) = c.trial.take() {
                                confirm_release(opts, &v);
                            }
                        }
                        Err(e) => {
                            c.failures += 1;
                            tracing::warn!(
                                "watchdog: client (pid {}) health check failed ({}/{}): {e}",
                                c.child.id(),
                                c.failures,
                                ws.health_failures
                            );
                            if c.failures >= ws.health_failures {
                                kill_cause = Some(format!(
                                    "did not answer GET /health {} times in a row (last: {e})",
                                    c.failures
                                ));
                            }
                        }
                    }
                }
            }
        }
        if let Some(c) = child.as_ref()
            && c.control.is_none()
            && c.started.elapsed() >= ws.start_timeout
        {
            kill_cause = Some(format!("was not ready within {:?}", ws.start_timeout));
        }
        if let Some(c) = child.as_ref()
            && let Some((_, by)) = &c.trial
            && Instant::now() >= *by
        {
            kill_cause = Some(format!(
                "did not pass its health check within {:?}",
                opts.cfg.update.as_ref().map(|u| u.trial).unwrap_or_default()
            ));
        }
        if let Some(cause) = kill_cause
            && let Some(c) = child.as_mut()
        {
            let _ = c.child.kill();
            let _ = c.child.wait();
            let pid = c.child.id();
            let ran = c.started.elapsed();
            if let Some((v, _)) = c.trial.take() {
                child = None;
                roll_back(opts, &v, &format!("pid {pid} {cause}"));
                (in_a_row, restarts) = (0, restarts + 1);
                restart_at = Some(Instant::now());
                continue;
            }
            child = None;
            (in_a_row, restarts) = (next_in_a_row(in_a_row, ran), restarts + 1);
            let d = backoff(in_a_row, ws.backoff_max);
            tracing::warn!(
                "watchdog: restarting the client: pid {pid} {cause}; killed; restart #{restarts} in {d:?} ({in_a_row} in a row)"
            );
            restart_at = Some(Instant::now() + d);
            continue;
        }
        // Reap: SIGCHLD woke us, or a periodic check.
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.child.try_wait()
        {
            let pid = c.child.id();
            let ran = c.started.elapsed();
            if let Some((v, _)) = c.trial.take() {
                child = None;
                roll_back(
                    opts,
                    &v,
                    &format!(
                        "pid {pid} {} after {ran:.1?}, before passing its health check",
                        describe(status)
                    ),
                );
                (in_a_row, restarts) = (0, restarts + 1);
                restart_at = Some(Instant::now());
                continue;
            }
            child = None;
            (in_a_row, restarts) = (next_in_a_row(in_a_row, ran), restarts + 1);
            let d = backoff(in_a_row, ws.backoff_max);
            tracing::warn!(
                "watchdog: restarting the client: pid {pid} {} after {ran:.1?}; restart #{restarts} in {d:?} ({in_a_row} in a row)",
                describe(status)
            );
            restart_at = Some(Instant::now() + d);
        }
    }
}

/// Deaths in a row: reset by a child that ran [`STABLE`].
fn next_in_a_row(in_a_row: u32, ran: Duration) -> u32 {
    if ran >= STABLE { 1 } else { in_a_row + 1 }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended ({status})"),
    }
}

fn control_addr(line: &str) -> Option<SocketAddr> {
    line.split("control http://").nth(1)?.split('/').next()?.parse().ok()
}

/// The binary to start: the install directory's `current` when updates are
/// enabled and one was installed, else this `msc`; and, when `current` was
/// just installed, its version (it starts on trial).
fn program(opts: &Options) -> (PathBuf, Option<(String, Instant)>) {
    let Some(u) = &opts.cfg.update else {
        return (opts.msc.clone(), None);
    };
    let current = u.install_dir.join(crate::release::CURRENT);
    if !current.exists() {
        return (opts.msc.clone(), None);
    }
    let st = crate::release::State::load(&u.install_dir);
    let trial = st
        .current
        .filter(|_| st.trial)
        .map(|c| (c.version, Instant::now() + u.trial));
    (current, trial)
}

/// A release on trial answered its health check: the update is complete.
fn confirm_release(opts: &Options, version: &str) {
    if let Some(u) = &opts.cfg.update {
        confirm_release_in(&u.install_dir, version);
    }
}

/// Ends the trial of `version` in `dir` (both supervisors).
pub fn confirm_release_in(dir: &Path, version: &str) {
    match crate::release::confirm(dir) {
        Ok(()) => tracing::info!("watchdog: release {version} passed its health check: update complete"),
        Err(e) => tracing::error!(
            "watchdog: release {version} is healthy but {} cannot be updated: {e}",
            dir.join(crate::release::STATE).display()
        ),
    }
}

/// A release on trial failed: point `current` back at the previous one
/// and record why (the client reports it in its status).
fn roll_back(opts: &Options, version: &str, cause: &str) {
    if let Some(u) = &opts.cfg.update {
        roll_back_release(&u.install_dir, version, cause);
    }
}

/// Rolls `dir` back from `version` (this watchdog, the agent beside
/// systemd, and `msc launch`): one log line, the rollback in `state.json`.
pub fn roll_back_release(dir: &Path, version: &str, cause: &str) {
    match crate::release::roll_back(dir, cause) {
        Ok(Some(rb)) => tracing::error!(
            "watchdog: rolled back release {} to {}: {}; restarting the previous release",
            rb.from,
            rb.to,
            rb.reason
        ),
        Ok(None) => tracing::error!("watchdog: release {version} failed ({cause}) and there is no previous release"),
        Err(e) => tracing::error!("watchdog: release {version} failed ({cause}) and the rollback failed: {e}"),
    }
}

/// Under systemd: wait for SIGTERM/SIGINT while following a release on
/// trial (the agent tasks run on their own thread).
fn follow_loop(opts: &Options, rx: &mpsc::Receiver<Event>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    tracing::info!("watchdog: the service manager supervises the client; running the agent tasks only");
    let mut update = opts.cfg.update.as_ref();
    if let Some(u) = update {
        if opts.cfg.control.port() == 0 {
            // No fixed address to ask: judging a trial would roll back a good release.
            tracing::warn!(
                "watchdog: control.listen has no fixed port: releases on trial are not judged here (a crash loop is still rolled back by `msc launch`)"
            );
            update = None;
        } else {
            tracing::info!(
                "watchdog: following releases on trial in {} (health within {:?})",
                u.install_dir.display(),
                u.trial
            );
        }
    }
    println!("msc watchdog ready: following the service manager");
    let _ = std::io::stdout().flush();
    let tick = opts.cfg.watchdog.health_interval.min(Duration::from_secs(1));
    let mut trial: Option<SystemdTrial> = None;
    loop {
        match rx.recv_timeout(tick) {
            Ok(Event::Signal(s)) if s == SIGTERM || s == SIGINT => return,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if let Some(u) = update {
            follow_trial(opts, u, &mut trial);
        }
    }
}

/// A release on trial under systemd, as the agent follows it.
struct SystemdTrial {
    version: String,
    path: PathBuf,
    /// Rolled back unless healthy by then.
    by: Instant,
}

/// One look at the install directory under systemd: a release on trial is
/// confirmed once the client answering `GET /health` is that release (the
/// one that installed it may still be stopping), or rolled back when
/// `update.trial` passes first; the client is then stopped (SIGTERM to the
/// pid in the launch lock) and systemd's `Restart=always` starts the
/// launcher, which runs the previous release.
fn follow_trial(opts: &Options, u: &crate::config::client::UpdateSettings, trial: &mut Option<SystemdTrial>) {
    let dir = &u.install_dir;
    let st = crate::release::State::load(dir);
    let Some(cur) = st.current.filter(|_| st.trial) else {
        *trial = None;
        return;
    };
    if trial
        .as_ref()
        .is_none_or(|t| t.version != cur.version || t.path != cur.path)
    {
        tracing::info!(
            "watchdog: release {} is on trial: it must pass its health check within {:?}",
            cur.version,
            u.trial
        );
        *trial = Some(SystemdTrial {
            version: cur.version.clone(),
            path: cur.path.clone(),
            by: Instant::now() + u.trial,
        });
    }
    let Some(t) = trial.as_ref() else { return };
    let ctl = opts.cfg.control;
    let healthy = check_health(ctl, opts.cfg.watchdog.health_timeout).is_ok()
        && running_version(ctl).as_deref() == Some(t.version.as_str());
    if healthy {
        confirm_release_in(dir, &t.version);
        *trial = None;
        return;
    }
    if Instant::now() < t.by {
        return;
    }
    let pid = crate::release::launched_pid(dir);
    let who = pid.map_or_else(|| "the client".to_owned(), |p| format!("pid {p}"));
    roll_back_release(
        dir,
        &t.version,
        &format!("{who} did not pass its health check within {:?}", u.trial),
    );
    *trial = None;
    match pid {
        Some(p) => {
            let res = rustix::process::Pid::from_raw(p.try_into().unwrap_or(0))
                .ok_or(rustix::io::Errno::SRCH)
                .and_then(|p| rustix::process::kill_process(p, rustix::process::Signal::TERM));
            match res {
                Ok(()) => tracing::info!("watchdog: stopped the client (pid {p}); the service manager restarts it"),
                Err(e) => tracing::error!(
                    "watchdog: cannot stop the client (pid {p}): {e}; it runs the previous release at its next start"
                ),
            }
        }
        None => tracing::warn!("watchdog: no launched client runs; it runs the previous release at its next start"),
    }
}

/// The version of record the client at `ctl` reports (`GET /status`).
fn running_version(ctl: SocketAddr) -> Option<String> {
    let body = crate::cli::status::fetch(ctl).ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["update"]["running_version"].as_str().map(str::to_owned)
}

fn spawn(
    opts: &Options,
    program: &std::path::Path,
    generation: u64,
    tx: &mpsc::Sender<Event>,
) -> anyhow::Result<Child> {
    let mut c = Command::new(program)
        .arg("--log")
        .arg(&opts.log)
        .arg("run")
        .arg("--config")
        .arg(&opts.config)
        .env(SUPERVISOR_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    if let Some(out) = c.stdout.take() {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("msc-wd-stdout".into())
            .spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(Event::Line(generation, line)).is_err() {
                        return;
                    }
                }
            })?;
    }
    Ok(c)
}

/// SIGTERM, then SIGKILL after the client's grace period and a second.
fn stop_child(c: &mut Child) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(c), rustix::process::Signal::TERM);
    let deadline = Instant::now() + crate::app::GRACE + Duration::from_secs(1);
    let (t, r) = mpsc::channel::<()>();
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        // A bounded pause without sleeping a runtime thread (this is not one).
        let _ = r.recv_timeout(Duration::from_millis(20));
    }
    drop(t);
    let _ = c.kill();
    let _ = c.wait();
}

/// Runs the agent tasks on one thread, each every its period, until the
/// returned sender is dropped.
fn start_tasks(
    tasks: Vec<Box<dyn super::AgentTask>>,
) -> std::io::Result<(mpsc::Sender<()>, Option<std::thread::JoinHandle<()>>)> {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    if tasks.is_empty() {
        return Ok((stop_tx, None));
    }
    let t = std::thread::Builder::new()
        .name("msc-agent-tasks".into())
        .spawn(move || {
            run_tasks(tasks, &stop_rx);
        })?;
    Ok((stop_tx, Some(t)))
}

/// The task loop: every task at once, then each every its period.
pub fn run_tasks(mut tasks: Vec<Box<dyn super::AgentTask>>, stop: &mpsc::Receiver<()>) {
    let mut due: Vec<Instant> = vec![Instant::now(); tasks.len()];
    loop {
        for (t, d) in tasks.iter_mut().zip(due.iter_mut()) {
            if Instant::now() >= *d {
                if let Err(e) = t.run_once() {
                    tracing::warn!("{}: {e:#}", t.name());
                }
                *d = Instant::now() + t.period();
            }
        }
        let next = due.iter().min().copied().unwrap_or_else(Instant::now);
        match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    for t in &mut tasks {
        t.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(30);
        assert_eq!(backoff(1, max), Duration::ZERO);
        assert_eq!(backoff(2, max), Duration::from_millis(250));
        assert_eq!(backoff(3, max), Duration::from_millis(500));
        assert_eq!(backoff(4, max), Duration::from_secs(1));
        assert_eq!(backoff(12, max), max);
        assert_eq!(backoff(u32::MAX, max), max);
        assert_eq!(next_in_a_row(5, Duration::from_secs(11)), 1);
        assert_eq!(next_in_a_row(5, Duration::from_secs(1)), 6);
    }

    #[test]
    fn reads_the_control_address_from_the_ready_line() {
        let l = "msc client ready: 2 workers, driver io_uring; slot 1 http 127.0.0.1:1 https 127.0.0.1:2 -> gateway gw1; control http://127.0.0.1:40001/proxy.pac";
        assert_eq!(control_addr(l), Some("127.0.0.1:40001".parse().unwrap()));
        assert_eq!(control_addr("msc client ready"), None);
    }

    struct Counter(std::sync::Arc<std::sync::atomic::AtomicU32>, mpsc::Sender<u32>);

    impl super::super::AgentTask for Counter {
        fn name(&self) -> &str {
            "counter"
        }
        fn period(&self) -> Duration {
            Duration::from_millis(20)
        }
        fn run_once(&mut self) -> anyhow::Result<()> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let _ = self.1.send(n);
            anyhow::ensure!(n != 2, "the second run fails; the loop goes on");
            Ok(())
        }
    }

    #[test]
    fn agent_tasks_run_every_period_until_stopped() {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (runs_tx, runs_rx) = mpsc::channel();
        let (stop, t) = start_tasks(vec![Box::new(Counter(count.clone(), runs_tx))]).unwrap();
        for want in 1..=4 {
            assert_eq!(runs_rx.recv_timeout(Duration::from_secs(5)).unwrap(), want);
        }
        drop(stop);
        t.unwrap().join().unwrap();
        // The thread has ended: no run after the stop.
        let after = count.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(runs_rx.try_iter().count() + 4, after as usize);
    }
}
