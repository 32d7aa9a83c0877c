//! Signed code updates end to end: keys from `msc release keygen`, releases
//! signed with `msc release sign`, a real gateway serving them over mutual
//! TLS, a real client checking every 200 ms, under a real `msc watchdog`
//! where an install (and a rollback) happens; and the same under systemd:
//! `msc launch` run by a stand-in for systemd (`Restart=always`) with the
//! agent (`msc watchdog` following the service manager) beside it.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "test code: bounded polling of child processes, off any runtime; the stand-in supervisor's pid list is shared with its thread"
)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BUILD: &str = env!("CARGO_PKG_VERSION");

/// Runs `msc args` to completion; returns stdout (panics on failure).
fn msc(env: &Env, args: &[&str]) -> String {
    let out = Command::new(MSC)
        .args(args)
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "msc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A new signing key in `name`; returns its public key.
fn keygen(env: &Env, name: &str) -> String {
    let public = msc(env, &["release", "keygen", "--out", &env.p(name)]);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(env.path(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is private");
    public.trim().to_owned()
}

/// Signs `binary` as `version` with `key` into the served directory `rel`.
fn sign(env: &Env, key: &str, version: &str, binary: &Path) {
    let out = msc(
        env,
        &[
            "release",
            "sign",
            "--key",
            &env.p(key),
            "--version",
            version,
            "--binary",
            binary.to_str().unwrap(),
            "--out",
            &env.p("rel"),
        ],
    );
    assert!(out.contains(&format!("signed release {version}")), "{out}");
}

/// A client checking for updates every 200 ms, installing into `installed`.
fn update_client(env: &Env, gw: SocketAddr, public: &str, control: u16, trial: &str) -> PathBuf {
    let text = format!(
        "workers = 1\n[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n\
         [update]\nenabled = true\npublic_key = \"{public}\"\ninterval = \"200ms\"\ninstall_dir = \"installed\"\ntrial = \"{trial}\"\n\
         [watchdog]\nhealth_interval = \"200ms\"\n[enforce]\nenabled = false\n\
         [[servers]]\nname = \"gw1\"\naddress = \"{gw}\"\nserver_name = \"localhost\"\nhttp_port = 0\nhttps_port = 0\n\
         [control]\nlisten = \"127.0.0.1:{control}\"\n"
    );
    env.write("client-update.toml", &text)
}

fn start_watchdog(env: &Env, cfg: &Path) -> Proc {
    let root = env.path("root");
    Proc::start(
        &[
            "watchdog",
            "--supervise",
            "yes",
            "--config",
            cfg.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
        ],
        env.dir.path(),
        "watchdog",
    )
}

/// The client pids the watchdog reported so far (kept across calls in `seen`).
fn pids(wd: &Proc, seen: &mut Vec<String>) -> Vec<u32> {
    if seen.is_empty() {
        seen.extend(wd.before_ready.iter().cloned());
    }
    seen.extend(wd.drain_lines());
    seen.iter()
        .filter_map(|l| l.split("client started (pid ").nth(1)?.split(')').next()?.parse().ok())
        .collect()
}

/// Polls `GET /status` (bounded) until `cond`; the client may be restarting.
fn poll_status(ctl: SocketAddr, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Ok(v) = msc::cli::status::fetch(ctl).map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap()) {
            if cond(&v) {
                return v;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces a served file as an administrator's tools would: a new file
/// renamed over it.
fn replace(path: &Path, body: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn exe(pid: u32) -> PathBuf {
    std::fs::canonicalize(format!("/proc/{pid}/exe")).unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_signed_newer_release_is_installed_and_runs_under_the_watchdog() {
    let env = Env::new();
    let public = keygen(&env, "release-key.pem");
    // The new release: this very binary, signed as a newer version.
    sign(&env, "release-key.pem", "99.0.0", Path::new(MSC));
    let (_g, gw) = env.gateway_at("gateway", "127.0.0.1:0", "[releases]\ndir = \"rel\"\n");
    let control = free_port();
    let cfg = update_client(&env, gw, &public, control, "10s");
    let ctl: SocketAddr = format!("127.0.0.1:{control}").parse().unwrap();
    let t0 = Instant::now();
    let wd = start_watchdog(&env, &cfg);
    let mut seen = Vec::new();
    let first = pids(&wd, &mut seen)[0];
    assert_eq!(exe(first), std::fs::canonicalize(MSC).unwrap());

    let v = poll_status(ctl, "release 99.0.0 running", |v| {
        v["update"]["running_version"] == "99.0.0"
    });
    eprintln!(
        "watchdog start to the new release answering its status: {:?} (first check after ~200 ms, a {} MiB download)",
        t0.elapsed(),
        std::fs::metadata(MSC).unwrap().len() >> 20
    );
    let installed = std::fs::canonicalize(env.path("installed/msc-99.0.0")).unwrap();
    assert_eq!(
        v["update"]["running_path"].as_str().map(PathBuf::from),
        Some(installed.clone())
    );
    wd.wait_stderr("update: installed release 99.0.0");
    wd.wait_stderr("release 99.0.0 passed its health check: update complete");
    let now = *pids(&wd, &mut seen).last().unwrap();
    assert_ne!(now, first);
    assert!(!alive(first), "the old client is gone");
    assert_eq!(exe(now), installed, "the running client is the installed release");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(MSC).unwrap());
    assert_eq!(std::fs::canonicalize(env.path("installed/current")).unwrap(), installed);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("installed/state.json")).unwrap()).unwrap();
    assert_eq!(state["trial"], false);
    assert_eq!(state["previous"]["version"], BUILD);
    // The new release checks again and finds itself current.
    poll_status(ctl, "the next check", |v| {
        v["update"]["last_result"]
            .as_str()
            .is_some_and(|r| r.contains("up to date: release 99.0.0"))
    });
    assert_eq!(*pids(&wd, &mut seen).last().unwrap(), now, "no further restart");
}

#[test]
fn bad_releases_are_refused_with_a_reason_and_change_nothing() {
    let env = Env::new();
    let public = keygen(&env, "release-key.pem");
    keygen(&env, "other-key.pem");
    let newer = env.path("newer-msc");
    std::fs::write(&newer, b"#!/bin/sh\nexit 0\n").unwrap();
    // Signed with another key.
    sign(&env, "other-key.pem", "99.0.0", &newer);
    let (_g, gw) = env.gateway_at("gateway", "127.0.0.1:0", "[releases]\ndir = \"rel\"\n");
    let cfg = update_client(&env, gw, &public, free_port(), "10s");
    let (client, _) = env.client_from("client", &cfg);
    let pid = client.child.id();
    let ctl = client.control_addr();
    let unchanged = |what: &str| {
        assert!(alive(pid), "{what}: the client still runs");
        assert!(
            !env.path("installed/current").exists() && !env.path("installed/msc-99.0.0").exists(),
            "{what}: nothing installed"
        );
        let v = status(ctl);
        assert_eq!(v["update"]["running_version"], BUILD, "{what}");
    };

    client.wait_stderr("update refused: bad signature: the manifest was not signed with the pinned key");
    unchanged("wrong signature");
    let v = status(ctl);
    assert!(
        v["update"]["last_result"]
            .as_str()
            .unwrap()
            .starts_with("refused: bad signature"),
        "{v:#}"
    );

    // Altered after signing: same size, one byte changed.
    sign(&env, "release-key.pem", "99.0.0", &newer);
    let mut body = std::fs::read(env.path("rel/msc-99.0.0")).unwrap();
    body[3] ^= 1;
    replace(&env.path("rel/msc-99.0.0"), &body);
    client.wait_stderr("the signed one is");
    assert!(client.stderr().contains("(altered); nothing installed"));
    unchanged("wrong hash");

    // Truncated: the gateway serves fewer bytes than the manifest signs.
    sign(&env, "release-key.pem", "99.0.1", &newer);
    let body = std::fs::read(env.path("rel/msc-99.0.1")).unwrap();
    replace(&env.path("rel/msc-99.0.1"), &body[..body.len() / 2]);
    client.wait_stderr(&format!(
        "download of release 99.0.1 is {} bytes, the signed size is {}",
        body.len() / 2,
        body.len()
    ));
    unchanged("truncated");

    // Older than the running build, then the same version.
    sign(&env, "release-key.pem", "0.0.1", &newer);
    client.wait_stderr(&format!(
        "update refused: release 0.0.1 is not newer than the running {BUILD} (no downgrade)"
    ));
    unchanged("older");
    sign(&env, "release-key.pem", BUILD, &newer);
    client.wait_stderr(&format!("up to date: release {BUILD} is the running one"));
    unchanged("same version");

    // A good release, but no `msc watchdog` to install and roll back: reported only.
    sign(&env, "release-key.pem", "99.0.2", &newer);
    client.wait_stderr("release 99.0.2 is available and verified, but this client does not run under `msc watchdog`");
    unchanged("unsupervised");
}

/// A gateway serving release 99.0.0, signed correctly but never serving
/// anything (`sleep 60`), and a client configuration with a 2 s trial.
/// Returns the gateway (keep it), the configuration, the control address and
/// the trial.
fn broken_release(env: &Env) -> (Proc, PathBuf, SocketAddr, Duration) {
    let public = keygen(env, "release-key.pem");
    let broken = env.path("broken-msc");
    std::fs::write(&broken, b"#!/bin/sh\nexec sleep 60\n").unwrap();
    sign(env, "release-key.pem", "99.0.0", &broken);
    let (g, gw) = env.gateway_at("gateway", "127.0.0.1:0", "[releases]\ndir = \"rel\"\n");
    let control = free_port();
    let cfg = update_client(env, gw, &public, control, "2s");
    let ctl: SocketAddr = format!("127.0.0.1:{control}").parse().unwrap();
    (g, cfg, ctl, Duration::from_secs(2))
}

#[test]
fn a_release_that_never_becomes_healthy_is_rolled_back_in_time() {
    let env = Env::new();
    let (_g, cfg, ctl, trial) = broken_release(&env);
    let wd = start_watchdog(&env, &cfg);
    let mut seen = Vec::new();

    wd.wait_stderr("release 99.0.0 is on trial");
    let t0 = Instant::now();
    let log = wd.wait_stderr("watchdog: rolled back release 99.0.0 to");
    let took = t0.elapsed();
    assert!(took < trial + Duration::from_secs(2), "rolled back after {took:?}");
    assert!(log.contains(&format!("rolled back release 99.0.0 to {BUILD}: pid")));
    assert!(log.contains("did not pass its health check within 2s"), "{log}");
    eprintln!("rollback {took:?} after the trial began (bound {trial:?})");
    let msc = std::fs::canonicalize(MSC).unwrap();
    assert_eq!(std::fs::canonicalize(env.path("installed/current")).unwrap(), msc);

    let v = poll_status(ctl, "the rollback reported", |v| {
        !v["update"]["last_rollback"].is_null()
    });
    let rb = &v["update"]["last_rollback"];
    assert_eq!(rb["from"], "99.0.0");
    assert_eq!(rb["to"], BUILD);
    assert!(
        rb["reason"].as_str().unwrap().contains("did not pass its health check"),
        "{rb}"
    );
    assert_eq!(v["update"]["running_version"], BUILD);
    let now = *pids(&wd, &mut seen).last().unwrap();
    assert_eq!(exe(now), msc, "the previous release runs again");
    // The rolled-back release is not installed again.
    wd.wait_stderr("release 99.0.0 was rolled back here");
    assert_eq!(*pids(&wd, &mut seen).last().unwrap(), now);
}

#[test]
fn release_tools_refuse_bad_input_with_a_reason() {
    let env = Env::new();
    keygen(&env, "k.pem");
    let run = |args: &[&str]| {
        let out = Command::new(MSC)
            .args(args)
            .current_dir(env.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&["release", "keygen", "--out", &env.p("k.pem")]);
    assert!(!ok && err.contains("an existing key is never overwritten"), "{err}");
    let sign = |key: &str, version: &str, binary: &str| {
        run(&[
            "release",
            "sign",
            "--key",
            key,
            "--version",
            version,
            "--binary",
            binary,
            "--out",
            &env.p("rel"),
        ])
    };
    let (ok, err) = sign(&env.p("k.pem"), "banana", MSC);
    assert!(
        !ok && err.contains("--version") && err.contains("MAJOR.MINOR.PATCH"),
        "{err}"
    );
    let (ok, err) = sign(&env.p("client.pem"), "1.0.0", MSC);
    assert!(
        !ok && (err.contains("not an Ed25519 PKCS#8 key") || err.contains("not a PEM private key")),
        "{err}"
    );
    let (ok, err) = sign(&env.p("k.pem"), "1.0.0", &env.p("missing"));
    assert!(!ok && err.contains("cannot read"), "{err}");
    assert!(!env.path("rel/manifest.json").exists(), "nothing signed");
}

/// A copy of this msc at `to` (a hard link when it can be: same bytes, and
/// `/proc/PID/exe` names the path it was started by).
fn install_copy(to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if std::fs::hard_link(MSC, to).is_err() {
        std::fs::copy(MSC, to).unwrap();
    }
}

/// Records `path` as the current release `version` in `dir`'s state.json.
fn record_current(dir: &Path, version: &str, path: &Path) {
    let st = msc::release::State {
        current: Some(msc::release::Installed {
            version: version.into(),
            path: path.to_path_buf(),
        }),
        ..Default::default()
    };
    st.save(dir).unwrap();
}

fn point_current(dir: &Path, target: &Path) {
    let link = dir.join("current");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn the_launcher_runs_the_installed_release_only_when_it_is_valid() {
    let env = Env::new();
    let public = keygen(&env, "release-key.pem");
    let (_g, gw) = env.gateway_at("gateway", "127.0.0.1:0", "");
    let control = free_port();
    let cfg = update_client(&env, gw, &public, control, "10s");
    let ctl: SocketAddr = format!("127.0.0.1:{control}").parse().unwrap();
    let dir = env.path("installed");
    let msc = std::fs::canonicalize(MSC).unwrap();
    // One launch: which binary runs (by /proc/PID/exe, same pid as the
    // launcher: it execs) and what the launcher said.
    let launch = |name: &str| {
        let p = Proc::start(&["launch", "--config", cfg.to_str().unwrap()], env.dir.path(), name);
        let exe = exe(p.child.id());
        let version = status(ctl)["update"]["running_version"].as_str().unwrap().to_owned();
        let log = p.stderr();
        drop(p);
        (exe, version, log)
    };

    let (e, v, log) = launch("launch-missing");
    assert_eq!((e, v.as_str()), (msc.clone(), BUILD));
    assert!(log.contains("launch: no release installed"), "{log}");
    assert!(
        log.contains(&format!("; running {MSC}")) || log.contains("; running /"),
        "{log}"
    );

    let installed = dir.join("msc-99.0.0");
    install_copy(&installed);
    record_current(&dir, "99.0.0", &installed);
    point_current(&dir, &installed);
    let (e, v, log) = launch("launch-valid");
    assert_eq!(e, installed, "{log}");
    assert_eq!(v, "99.0.0");
    assert!(log.contains("launch: starting release 99.0.0"), "{log}");

    point_current(&dir, &dir.join("msc-gone"));
    let (e, v, log) = launch("launch-dangling");
    assert_eq!((e, v.as_str()), (msc.clone(), BUILD));
    assert!(log.contains("current is dangling"), "{log}");

    point_current(&dir, &msc);
    let (e, _, log) = launch("launch-outside");
    assert_eq!(e, msc);
    assert!(log.contains("outside the install directory"), "{log}");

    let other = dir.join("msc-98.0.0");
    install_copy(&other);
    point_current(&dir, &other);
    let (e, v, log) = launch("launch-unrecorded");
    assert_eq!((e, v.as_str()), (msc.clone(), BUILD));
    assert!(log.contains("is not the current release recorded in"), "{log}");
}

/// The stand-in for systemd, which cannot run as PID 1 here: it runs
/// msc.service's `ExecStart=msc launch --config FILE` with the variables
/// systemd sets, and, like `Restart=always` with a short `RestartSec=`,
/// starts it again whenever it exits (at most `RESTARTS` times).
struct StandIn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pids: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    stderr: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandIn {
    const RESTARTS: usize = 8;

    fn start(env: &Env, cfg: &Path) -> StandIn {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = env.path("service.stderr");
        let (s, p, e, dir, cfg) = (
            stop.clone(),
            pids.clone(),
            stderr.clone(),
            env.dir.path().to_path_buf(),
            cfg.to_path_buf(),
        );
        let thread = std::thread::spawn(move || {
            for _ in 0..=Self::RESTARTS {
                let log = std::fs::OpenOptions::new().create(true).append(true).open(&e).unwrap();
                let mut child = Command::new(MSC)
                    .args(["launch", "--config", cfg.to_str().unwrap()])
                    .current_dir(&dir)
                    .env("XDG_RUNTIME_DIR", runtime_dir(&dir))
                    .env_remove("RUNTIME_DIRECTORY")
                    .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/msc-test-bus")
                    .env("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap();
                p.lock().unwrap().push(child.id());
                loop {
                    if s.load(Ordering::SeqCst) {
                        let _ = child.kill();
                        let _ = child.wait();
                        return;
                    }
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // RestartSec=, shortened.
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        StandIn {
            stop,
            pids,
            stderr,
            thread: Some(thread),
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.pids.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.stderr();
            if s.contains(needle) {
                return s;
            }
            assert!(Instant::now() < deadline, "no '{needle}' in the service's log:\n{s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let log = self.stderr();
        if !std::thread::panicking() && log.contains("panicked") {
            panic!("the service logged a panic:\n{log}");
        }
    }
}

/// `msc watchdog` as msc-watchdog.service runs it: systemd's variables set,
/// following the service manager; returns it and its notify socket.
fn start_agent(env: &Env, cfg: &Path) -> (Proc, std::os::unix::net::UnixDatagram) {
    let sock_path = env.path("agent-notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    let root = env.path("root");
    let agent = Proc::start_env(
        &[
            "watchdog",
            "--supervise",
            "no",
            "--config",
            cfg.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
        ],
        env.dir.path(),
        "agent",
        &[
            ("INVOCATION_ID", "fedcba9876543210fedcba9876543210"),
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ],
    );
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    (agent, sock)
}

#[test]
fn under_systemd_a_good_release_is_installed_launched_and_confirmed() {
    let env = Env::new();
    let public = keygen(&env, "release-key.pem");
    sign(&env, "release-key.pem", "99.0.0", Path::new(MSC));
    let (_g, gw) = env.gateway_at("gateway", "127.0.0.1:0", "[releases]\ndir = \"rel\"\n");
    let control = free_port();
    let cfg = update_client(&env, gw, &public, control, "10s");
    let ctl: SocketAddr = format!("127.0.0.1:{control}").parse().unwrap();
    let (agent, _sock) = start_agent(&env, &cfg);
    let service = StandIn::start(&env, &cfg);

    poll_status(ctl, "release 99.0.0 running", |v| {
        v["update"]["running_version"] == "99.0.0"
    });
    agent.wait_stderr("release 99.0.0 passed its health check: update complete");
    let log = service.wait_stderr("launch: starting release 99.0.0");
    assert!(log.contains("launch: no release installed"), "{log}");
    assert!(log.contains("update: installed release 99.0.0"), "{log}");
    assert!(log.contains("on trial"), "{log}");
    let installed = std::fs::canonicalize(env.path("installed/msc-99.0.0")).unwrap();
    let pids = service.pids();
    assert_eq!(pids.len(), 2, "one restart, into the new release: {pids:?}");
    assert_eq!(exe(pids[1]), installed, "the service runs the installed release");
    assert_eq!(
        msc::release::launched_pid(&env.path("installed")),
        Some(pids[1]),
        "the client holds the launch lock"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("installed/state.json")).unwrap()).unwrap();
    assert_eq!(state["trial"], false);
    assert_eq!(state["previous"]["version"], BUILD);
    assert!(!agent.stderr().contains("rolled back"));
}

#[test]
fn under_systemd_a_release_that_never_becomes_healthy_is_rolled_back_in_time() {
    let env = Env::new();
    let (_g, cfg, ctl, trial) = broken_release(&env);
    let (agent, _sock) = start_agent(&env, &cfg);
    let service = StandIn::start(&env, &cfg);

    agent.wait_stderr("release 99.0.0 is on trial");
    let t0 = Instant::now();
    let log = agent.wait_stderr("watchdog: rolled back release 99.0.0 to");
    let took = t0.elapsed();
    assert!(took < trial + Duration::from_secs(2), "rolled back after {took:?}");
    assert!(
        log.contains(&format!("rolled back release 99.0.0 to {BUILD}: pid")),
        "{log}"
    );
    assert!(log.contains("did not pass its health check within 2s"), "{log}");
    eprintln!("rollback {took:?} after the trial began (bound {trial:?})");
    let sleeper = service.pids()[1];
    agent.wait_stderr(&format!("stopped the client (pid {sleeper})"));

    let v = poll_status(ctl, "the rollback reported", |v| {
        !v["update"]["last_rollback"].is_null()
    });
    assert_eq!(v["update"]["last_rollback"]["from"], "99.0.0");
    assert_eq!(v["update"]["running_version"], BUILD);
    let msc = std::fs::canonicalize(MSC).unwrap();
    let pids = service.pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert_eq!(exe(pids[2]), msc, "the previous binary runs again");
    assert!(!alive(sleeper));
    assert_eq!(std::fs::canonicalize(env.path("installed/current")).unwrap(), msc);
    // The rolled-back release is not installed again.
    service.wait_stderr("release 99.0.0 was rolled back here");
    assert_eq!(service.pids().len(), 3);
}

#[test]
fn under_systemd_a_crash_looping_release_is_rolled_back_at_its_second_start() {
    let env = Env::new();
    let public = keygen(&env, "release-key.pem");
    let broken = env.path("broken-msc");
    std::fs::write(&broken, b"#!/bin/sh\necho 'this release crashes' >&2\nexit 70\n").unwrap();
    sign(&env, "release-key.pem", "99.0.0", &broken);
    let (_g, gw) = env.gateway_at("gateway", "127.0.0.1:0", "[releases]\ndir = \"rel\"\n");
    let control = free_port();
    // A long trial: the crash loop, not the agent's deadline, ends it.
    let cfg = update_client(&env, gw, &public, control, "60s");
    let ctl: SocketAddr = format!("127.0.0.1:{control}").parse().unwrap();
    let service = StandIn::start(&env, &cfg);

    let log = service.wait_stderr("watchdog: rolled back release 99.0.0 to");
    assert!(log.contains("this release crashes"), "{log}");
    assert!(
        log.contains("release 99.0.0 stopped before passing its health check (started 1 time(s) on trial"),
        "{log}"
    );
    let v = poll_status(ctl, "the previous release back", |v| {
        !v["update"]["last_rollback"].is_null()
    });
    assert_eq!(v["update"]["running_version"], BUILD);
    let pids = service.pids();
    assert_eq!(pids.len(), 3, "installer, crashed release, previous release: {pids:?}");
    assert_eq!(exe(pids[2]), std::fs::canonicalize(MSC).unwrap());
}

#[test]
fn under_systemd_the_agent_confirms_only_the_release_on_trial_answering() {
    let env = Env::new();
    let public = keygen(&env, "release-key.pem");
    let (_g, gw) = env.gateway_at("gateway", "127.0.0.1:0", "");
    let control = free_port();
    let cfg = update_client(&env, gw, &public, control, "1s");
    // The client that installed a release still answers (it has not stopped
    // yet, or the new one never came up): it is not the release on trial.
    let (client, _) = env.client_from("client", &cfg);
    let dir = env.path("installed");
    let installed = dir.join("msc-99.0.0");
    install_copy(&installed);
    let st = msc::release::State {
        current: Some(msc::release::Installed {
            version: "99.0.0".into(),
            path: installed.clone(),
        }),
        previous: Some(msc::release::Installed {
            version: BUILD.into(),
            path: std::fs::canonicalize(MSC).unwrap(),
        }),
        trial: true,
        ..Default::default()
    };
    st.save(&dir).unwrap();
    point_current(&dir, &installed);
    let (agent, _sock) = start_agent(&env, &cfg);
    let log = agent.wait_stderr("watchdog: rolled back release 99.0.0 to");
    assert!(!log.contains("passed its health check"), "{log}");
    assert!(
        log.contains(&format!(
            "rolled back release 99.0.0 to {BUILD}: the client did not pass its health check within 1s"
        )),
        "{log}"
    );
    agent.wait_stderr("no launched client runs");
    assert_eq!(
        std::fs::canonicalize(dir.join("current")).unwrap(),
        std::fs::canonicalize(MSC).unwrap()
    );
    assert_eq!(status(client.control_addr())["update"]["running_version"], BUILD);
}
