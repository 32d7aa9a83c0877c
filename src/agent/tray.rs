//! `msc tray --config client.toml`: the tray icon, a freedesktop
//! StatusNotifierItem (the `ksni` crate, on the session bus) beside the
//! running client.
//!
//! It reads the client's state from `GET /status` on the read-only control
//! API every few seconds and shows it: an icon per state, the reason in the
//! tooltip. Its menu opens the status page, disables or enables protection
//! (by running `msc disable` / `msc enable`, which decide who may), collects
//! a support bundle, and shows the version and copyright.
//!
//! The tray changes nothing itself and holds no privilege. When the
//! administrator's configuration says `[tray] hidden = true` it exits at once
//! (status 0) with a log line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use ksni::blocking::TrayMethods;
use ksni::menu::{StandardItem, SubMenu};
use ksni::{MenuItem, ToolTip};

/// Shown in About.
pub const COPYRIGHT: &str = "Copyright © 2026 the msc authors. Licensed under the Apache License 2.0.";

/// What the tray shows; refreshed from `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// `enabled`, `disabled`, `connection_pending` or `error`.
    pub state: String,
    pub reason: String,
}

impl View {
    /// From the status JSON (`summary.state`, `summary.reason`).
    pub fn from_status(json: &str) -> View {
        let v: serde_json::Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => {
                return View {
                    state: "error".into(),
                    reason: format!("the client's status is unreadable: {e}"),
                };
            }
        };
        let s = &v["summary"];
        View {
            state: s["state"].as_str().unwrap_or("error").to_string(),
            reason: s["reason"]
                .as_str()
                .unwrap_or("the client reported no state")
                .to_string(),
        }
    }

    fn unreachable(addr: SocketAddr, e: &anyhow::Error) -> View {
        View {
            state: "error".into(),
            reason: format!("the msc client does not answer on {addr}: {e:#}"),
        }
    }
}

/// The freedesktop icon name for a state.
pub fn icon_for(state: &str) -> &'static str {
    match state {
        "enabled" => "security-high",
        "connection_pending" => "security-medium",
        "disabled" => "security-low",
        _ => "dialog-error",
    }
}

/// A human title for a state.
pub fn title_for(state: &str) -> &'static str {
    match state {
        "enabled" => "Protected",
        "connection_pending" => "Connecting",
        "disabled" => "Protection disabled",
        _ => "Error",
    }
}

#[derive(Debug)]
struct MscTray {
    view: View,
    control: SocketAddr,
    config: PathBuf,
    exe: PathBuf,
}

/// Starts `program args` without waiting; a thread reaps it and logs how it
/// ended (the menu must never block on it).
fn run_detached(what: &'static str, program: &Path, args: &[String]) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match cmd.spawn() {
        Ok(child) => {
            let _ = std::thread::Builder::new()
                .name("msc-tray-action".into())
                .spawn(move || match child.wait_with_output() {
                    Ok(o) if o.status.success() => tracing::info!("{what}: done"),
                    Ok(o) => tracing::warn!(
                        "{what}: failed ({}): {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => tracing::warn!("{what}: {e}"),
                });
        }
        Err(e) => tracing::warn!("{what}: cannot run {}: {e}", program.display()),
    }
}

impl MscTray {
    fn msc(&self, what: &'static str, args: &[&str]) {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push("--config".into());
        a.push(self.config.display().to_string());
        run_detached(what, &self.exe, &a);
    }

    fn bundle_path() -> PathBuf {
        let dir = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
        let ts = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace([':', '-'], "");
        dir.join(format!("msc-support-{}.tar.gz", ts.trim_end_matches('Z')))
    }
}

impl ksni::Tray for MscTray {
    fn id(&self) -> String {
        "msc".into()
    }

    fn title(&self) -> String {
        format!("msc: {}", title_for(&self.view.state))
    }

    fn category(&self) -> ksni::Category {
        ksni::Category::SystemServices
    }

    fn status(&self) -> ksni::Status {
        if self.view.state == "error" {
            ksni::Status::NeedsAttention
        } else {
            ksni::Status::Active
        }
    }

    fn icon_name(&self) -> String {
        icon_for(&self.view.state).into()
    }

    fn attention_icon_name(&self) -> String {
        icon_for("error").into()
    }

    fn tool_tip(&self) -> ToolTip {
        ToolTip {
            icon_name: icon_for(&self.view.state).into(),
            icon_pixmap: Vec::new(),
            title: format!("msc: {}", title_for(&self.view.state)),
            description: self.view.reason.clone(),
        }
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        run_detached(
            "open the status page",
            Path::new("xdg-open"),
            &[format!("http://{}/", self.control)],
        );
    }

    fn menu(&self) -> Vec<MenuItem<Self>> {
        let disabled = self.view.state == "disabled";
        vec![
            StandardItem {
                label: "Open status page".into(),
                icon_name: "web-browser".into(),
                activate: Box::new(|t: &mut Self| {
                    run_detached(
                        "open the status page",
                        Path::new("xdg-open"),
                        &[format!("http://{}/", t.control)],
                    );
                }),
                ..Default::default()
            }
            .into(),
            MenuItem::Separator,
            StandardItem {
                label: "Disable protection for 30 minutes".into(),
                visible: !disabled,
                activate: Box::new(|t: &mut Self| {
                    t.msc(
                        "disable protection",
                        &["disable", "--for", "30m", "--reason", "requested from the tray icon"],
                    );
                }),
                ..Default::default()
            }
            .into(),
            StandardItem {
                label: "Enable protection".into(),
                visible: disabled,
                activate: Box::new(|t: &mut Self| t.msc("enable protection", &["enable"])),
                ..Default::default()
            }
            .into(),
            StandardItem {
                label: "Collect support info".into(),
                activate: Box::new(|t: &mut Self| {
                    let out = MscTray::bundle_path();
                    tracing::info!("collecting support info into {}", out.display());
                    let control = t.control.to_string();
                    t.msc(
                        "collect support info",
                        &[
                            "support-bundle",
                            "--control",
                            &control,
                            "--out",
                            &out.display().to_string(),
                        ],
                    );
                }),
                ..Default::default()
            }
            .into(),
            MenuItem::Separator,
            SubMenu {
                label: "About".into(),
                submenu: vec![
                    StandardItem {
                        label: format!("msc {}", env!("CARGO_PKG_VERSION")),
                        enabled: false,
                        ..Default::default()
                    }
                    .into(),
                    StandardItem {
                        label: COPYRIGHT.into(),
                        enabled: false,
                        ..Default::default()
                    }
                    .into(),
                ],
                ..Default::default()
            }
            .into(),
        ]
    }

    fn watcher_offline(&self, reason: ksni::OfflineReason) -> bool {
        // Keep running: the panel (the watcher) may start after us or restart.
        tracing::info!("no tray host on the session bus ({reason:?}); the icon appears when one starts");
        true
    }

    fn watcher_online(&self) {
        tracing::info!("tray host appeared: icon registered");
    }
}

/// How `msc tray` runs.
#[derive(Debug, Clone)]
pub struct TrayOptions {
    pub config: PathBuf,
    /// The control API address, if not the configuration's `control.listen`.
    pub control: Option<SocketAddr>,
    /// How often `/status` is read.
    pub interval: Duration,
}

fn fetch(addr: SocketAddr) -> View {
    match crate::cli::status::get(addr, "/status") {
        Ok(body) => View::from_status(&body),
        Err(e) => View::unreachable(addr, &e),
    }
}

/// Runs the tray until SIGINT/SIGTERM (or the bus goes away). `ready` is
/// called once the icon is on the bus, with its bus name and first view.
pub fn run(opts: &TrayOptions, ready: impl FnOnce(&str, &View)) -> anyhow::Result<()> {
    // `tray.hidden` may be set centrally (docs/fleet.md).
    let cfg = crate::control::remote::cached(&opts.config)?;
    if cfg.tray_hidden {
        tracing::info!(
            "the tray icon is hidden by the administrator ([tray] hidden = true in {}); exiting",
            opts.config.display()
        );
        return Ok(());
    }
    let control = opts.control.unwrap_or(cfg.control);
    let view = fetch(control);
    let tray = MscTray {
        view: view.clone(),
        control,
        config: std::fs::canonicalize(&opts.config).unwrap_or_else(|_| opts.config.clone()),
        exe: std::env::current_exe().context("cannot find the msc executable")?,
    };
    let handle = tray
        .assume_sni_available(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot put the tray icon on the session bus: {e}"))?;
    let name = format!("org.kde.StatusNotifierItem-{}-1", std::process::id());
    ready(&name, &view);

    let (stop_tx, stop_rx) = mpsc::channel::<i32>();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    std::thread::Builder::new()
        .name("msc-tray-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = stop_tx.send(sig);
            }
        })?;
    let mut last = view;
    loop {
        match stop_rx.recv_timeout(opts.interval) {
            Ok(sig) => {
                tracing::info!("signal {sig}: removing the tray icon");
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if handle.is_closed() {
            anyhow::bail!("the tray service stopped (session bus gone?)");
        }
        let view = fetch(control);
        if view != last {
            tracing::info!("state: {} ({})", view.state, view.reason);
            let v = view.clone();
            handle.update(move |t: &mut MscTray| t.view = v);
            last = view;
        }
    }
    handle.shutdown().wait();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_from_status_json() {
        let v = View::from_status(r#"{"summary":{"state":"enabled","reason":"protected"}}"#);
        assert_eq!(v.state, "enabled");
        assert_eq!(v.reason, "protected");
        assert_eq!(View::from_status("not json").state, "error");
        assert_eq!(View::from_status("{}").state, "error");
    }

    #[test]
    fn every_state_has_its_own_icon() {
        let states = ["enabled", "connection_pending", "disabled", "error"];
        let icons: std::collections::HashSet<_> = states.iter().map(|s| icon_for(s)).collect();
        assert_eq!(icons.len(), states.len());
        assert_eq!(icon_for("something new"), icon_for("error"));
    }
}
