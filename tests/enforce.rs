//! Proxy-settings enforcement (docs/enforcement.md) against temporary roots
//! and real programs: dconf/gsettings on a private session bus, a dconf lock
//! seen through a private mount namespace, and headless Chromium and Firefox
//! that pick up the policies msc writes and load pages through client ->
//! gateway. Nothing here writes to the host's /etc, home or dconf.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Daemon, Env, MSC, Proc, browser_output};
use msc::agent::enforce::{Drift, Enforcer, Settings};
use msc::config::enforce::{BackendChoice, EnforceConfig, Exception};

const PAC: &str = "http://127.0.0.1:27778/proxy.pac";

fn settings() -> Settings {
    Settings {
        pac_url: PAC.into(),
        http_proxy: Some("http://127.0.0.1:3128".into()),
        https_proxy: Some("http://127.0.0.1:3129".into()),
        no_proxy: vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "corp.example".into(),
        ],
        no_proxy_skipped: vec![],
    }
}

fn only(backend: &str) -> EnforceConfig {
    EnforceConfig {
        backends: BackendChoice::List(vec![backend.into()]),
        ..EnforceConfig::default()
    }
}

/// Every file and directory under `root` with its content.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else if e.file_type().unwrap().is_file() {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            } else {
                // A socket (a session bus).
                out.insert(rel, None);
            }
        }
    }
    out
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// apply -> verify clean -> `edit` (a user's change) -> check_and_restore
/// reports and restores it -> remove leaves the root exactly as before.
fn cycle(backend: &str, root: &Path, edit: impl FnOnce(&Path), check: impl Fn(&Path)) -> Vec<Drift> {
    let before = snapshot(root);
    let e = Enforcer::with_settings(only(backend), settings(), root);
    let a = e.apply_all().unwrap();
    assert_eq!(a.applied, vec![backend], "{a:?}");
    assert!(a.failed.is_empty(), "{a:?}");
    check(root);
    assert_eq!(e.check_and_restore(), vec![], "nothing drifted yet");
    // Applying again changes nothing.
    let applied = snapshot(root);
    e.apply_all().unwrap();
    assert_eq!(snapshot(root), applied, "apply is idempotent");
    edit(root);
    let drifts = e.check_and_restore();
    assert!(!drifts.is_empty(), "the edit was not noticed");
    assert!(drifts.iter().all(|d| d.backend == backend && d.restored), "{drifts:?}");
    check(root);
    assert_eq!(e.check_and_restore(), vec![], "restored in one pass");
    assert_eq!(e.remove_all().unwrap(), vec![backend]);
    assert_eq!(snapshot(root), before, "removal leaves the root as it was");
    drifts
}

#[test]
fn chromium_policy_applied_restored_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Another managed policy of the administrator's stays untouched.
    write(
        root,
        "etc/chromium/policies/managed/other.json",
        "{\"HomepageLocation\": \"https://intranet\"}\n",
    );
    let check = |root: &Path| {
        for f in [
            "etc/chromium/policies/managed/msc.json",
            "etc/opt/chrome/policies/managed/msc.json",
        ] {
            let v: serde_json::Value = serde_json::from_str(&read(root, f)).unwrap();
            assert_eq!(v["ProxyMode"], "pac_script");
            assert_eq!(v["ProxyPacUrl"], PAC);
        }
    };
    let drifts = cycle(
        "chromium",
        root,
        |root| {
            write(
                root,
                "etc/chromium/policies/managed/msc.json",
                "{\"ProxyMode\": \"direct\"}",
            );
            std::fs::remove_file(root.join("etc/opt/chrome/policies/managed/msc.json")).unwrap();
        },
        check,
    );
    let text: Vec<String> = drifts.iter().map(|d| d.to_string()).collect();
    assert!(text.iter().any(|d| d.contains("ProxyMode was \"direct\"")), "{text:?}");
    assert!(
        text.iter()
            .any(|d| d.contains("/etc/opt/chrome/policies/managed/msc.json: missing")),
        "{text:?}"
    );
}

#[test]
fn firefox_policy_merged_restored_removed_keeping_other_policies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // An existing policies.json with other policies and a Proxy of its own,
    // and a firefox-esr installation whose distribution dir gets one too.
    let existing = "{\n  \"policies\": {\n    \"DisableTelemetry\": true,\n    \"Proxy\": {\"Mode\": \"system\", \"UseProxyForDNS\": true}\n  }\n}\n";
    write(root, "etc/firefox/policies/policies.json", existing);
    std::fs::create_dir_all(root.join("usr/lib/firefox-esr")).unwrap();
    let check = |root: &Path| {
        for f in [
            "etc/firefox/policies/policies.json",
            "usr/lib/firefox-esr/distribution/policies.json",
        ] {
            let v: serde_json::Value = serde_json::from_str(&read(root, f)).unwrap();
            let p = &v["policies"]["Proxy"];
            assert_eq!(p["Mode"], "autoConfig", "{f}");
            assert_eq!(p["AutoConfigURL"], PAC, "{f}");
            assert_eq!(p["Locked"], true, "{f}");
        }
        let v: serde_json::Value = serde_json::from_str(&read(root, "etc/firefox/policies/policies.json")).unwrap();
        assert_eq!(v["policies"]["DisableTelemetry"], true, "other policies kept");
        assert_eq!(v["policies"]["Proxy"]["UseProxyForDNS"], true, "other Proxy keys kept");
    };
    let drifts = cycle(
        "firefox",
        root,
        |root| {
            let f = "etc/firefox/policies/policies.json";
            let t = read(root, f).replace("\"Locked\": true", "\"Locked\": false");
            write(root, f, &t);
        },
        check,
    );
    assert_eq!(drifts.len(), 1, "{drifts:?}");
    assert!(drifts[0].what.contains("policies.Proxy.Locked was false"), "{drifts:?}");
}

#[test]
fn kde_kiosk_lock_applied_restored_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let existing = "[General]\nfoo=bar\n\n[Proxy Settings]\nProxyType=0\nNoProxyFor=intranet\n";
    write(root, "etc/xdg/kioslaverc", existing);
    let check = |root: &Path| {
        let t = read(root, "etc/xdg/kioslaverc");
        assert!(t.contains("[Proxy Settings][$i]\n"), "{t}");
        assert!(t.contains("\nProxyType=2\n"), "{t}");
        assert!(t.contains(&format!("\nProxy Config Script={PAC}\n")), "{t}");
        assert!(
            t.contains("NoProxyFor=intranet") && t.contains("[General]\nfoo=bar"),
            "{t}"
        );
    };
    let drifts = cycle(
        "kde",
        root,
        |root| {
            let t = read(root, "etc/xdg/kioslaverc")
                .replace("[Proxy Settings][$i]", "[Proxy Settings]")
                .replace("ProxyType=2", "ProxyType=1");
            write(root, "etc/xdg/kioslaverc", &t);
        },
        check,
    );
    assert_eq!(drifts.len(), 2, "{drifts:?}");
    // A fresh root: the file is created and removed again.
    let fresh = tempfile::tempdir().unwrap();
    cycle(
        "kde",
        fresh.path(),
        |root| std::fs::remove_file(root.join("etc/xdg/kioslaverc")).unwrap(),
        |root| {
            let t = read(root, "etc/xdg/kioslaverc");
            assert_eq!(
                t,
                format!("[Proxy Settings][$i]\nProxyType=2\nProxy Config Script={PAC}\n")
            );
        },
    );
}

fn sh_env(script: &str, var: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!(". '{script}'; printf '%s' \"${{{var}-unset}}\"")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn env_variables_applied_restored_removed_and_user_exception() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "etc/profile.d/other.sh", "export EDITOR=vi\n");
    let check = |root: &Path| {
        let script = root.join("etc/profile.d/msc-proxy.sh");
        let script = script.to_str().unwrap();
        assert_eq!(sh_env(script, "http_proxy"), "http://127.0.0.1:3128");
        assert_eq!(sh_env(script, "HTTP_PROXY"), "http://127.0.0.1:3128");
        assert_eq!(sh_env(script, "https_proxy"), "http://127.0.0.1:3129");
        assert_eq!(sh_env(script, "no_proxy"), "localhost,127.0.0.1,::1,corp.example");
        let d = read(root, "etc/environment.d/90-msc-proxy.conf");
        assert!(
            d.contains("\nhttps_proxy=http://127.0.0.1:3129\n") && d.contains("\nNO_PROXY=localhost,"),
            "{d}"
        );
    };
    let drifts = cycle(
        "env",
        root,
        |root| {
            write(
                root,
                "etc/profile.d/msc-proxy.sh",
                "export http_proxy=http://127.0.0.1:8888\n",
            )
        },
        check,
    );
    assert_eq!(drifts[0].what, "/etc/profile.d/msc-proxy.sh: content changed");

    // An exception for the user running this test: the script skips them,
    // environment.d (no per-user form) is not written.
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let mut cfg = only("env");
    cfg.exceptions.push(Exception {
        backend: "env".into(),
        user: Some(me.trim().into()),
        reason: "debugging proxy".into(),
    });
    let e = Enforcer::with_settings(cfg, settings(), root);
    e.apply_all().unwrap();
    let script = root.join("etc/profile.d/msc-proxy.sh");
    assert_eq!(sh_env(script.to_str().unwrap(), "http_proxy"), "unset");
    assert!(read(root, "etc/profile.d/msc-proxy.sh").contains("debugging proxy"));
    assert!(!root.join("etc/environment.d").exists());
    // The developer's own proxy in their shell is theirs: no drift.
    assert_eq!(e.check_and_restore(), vec![]);
    e.remove_all().unwrap();
    assert!(!root.join("etc/profile.d/msc-proxy.sh").exists());
}

#[test]
fn switch_off_and_backend_exception_remove_what_was_applied() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let two = EnforceConfig {
        backends: BackendChoice::List(vec!["chromium".into(), "kde".into()]),
        ..EnforceConfig::default()
    };
    let e = Enforcer::with_settings(two.clone(), settings(), root);
    e.apply_all().unwrap();
    assert!(root.join("etc/xdg/kioslaverc").exists());
    // An approved exception for KDE: msc takes its lock away and leaves the
    // file alone from then on.
    let mut ex = two.clone();
    ex.exceptions.push(Exception {
        backend: "kde".into(),
        user: None,
        reason: "kiosk test machine".into(),
    });
    let e = Enforcer::with_settings(ex, settings(), root);
    assert_eq!(e.check_and_restore(), vec![]);
    assert!(
        !root.join("etc/xdg/kioslaverc").exists(),
        "exception: kde settings removed"
    );
    write(root, "etc/xdg/kioslaverc", "[Proxy Settings]\nProxyType=1\n");
    assert_eq!(e.check_and_restore(), vec![], "an excepted backend is not fought");
    assert_eq!(read(root, "etc/xdg/kioslaverc"), "[Proxy Settings]\nProxyType=1\n");
    assert!(root.join("etc/chromium/policies/managed/msc.json").exists());
    // The admin switch off: everything msc applied goes, nothing else.
    let off = EnforceConfig { enabled: false, ..two };
    let e = Enforcer::with_settings(off, settings(), root);
    let a = e.apply_all().unwrap();
    assert_eq!(a.removed, vec!["chromium"]);
    assert!(a.applied.is_empty());
    assert!(!root.join("etc/chromium").exists());
    assert!(!root.join("var").exists(), "no state left");
    assert_eq!(read(root, "etc/xdg/kioslaverc"), "[Proxy Settings]\nProxyType=1\n");
}

#[test]
fn enforce_config_errors_name_the_key() {
    let env = Env::new();
    for (extra, key, reason) in [
        (
            "[enforce]\nbackends = [\"chromium\", \"netscape\"]\n",
            "enforce.backends[1]",
            "'netscape' is not one of",
        ),
        (
            "[enforce]\n[[enforce.exceptions]]\nbackend = \"firefox\"\nuser = \"bob\"\nreason = \"x\"\n",
            "enforce.exceptions[0].user",
            "machine-wide",
        ),
        (
            "[enforce]\n[[enforce.exceptions]]\nbackend = \"env\"\nreason = \" \"\n",
            "enforce.exceptions[0].reason",
            "say why",
        ),
        ("[enforce]\ninterval = \"10ms\"\n", "enforce.interval", "at least 1s"),
        (
            "[enforce]\npac_url = \"ftp://x\"\n",
            "enforce.pac_url",
            "not an http://",
        ),
        // Slot 1's port is chosen at start-up: nothing to put in http_proxy.
        (
            "[enforce]\nbackends = [\"env\"]\npac_url = \"http://127.0.0.1:1/p\"\n",
            "servers[0].http_port",
            "0 (chosen at start-up)",
        ),
    ] {
        let cfg = env.client_toml(
            "bad",
            "127.0.0.1:8443".parse().unwrap(),
            "client.pem",
            "client-key.pem",
            extra,
        );
        let root = tempfile::tempdir().unwrap();
        let out = Command::new(MSC)
            .args(["enforce", "--once", "--config", cfg.to_str().unwrap(), "--root"])
            .arg(root.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(
            err.contains(&format!("bad.toml: {key}: ")) && err.contains(reason),
            "{extra}: {err}"
        );
        assert!(snapshot(root.path()).is_empty(), "nothing written on a bad config");
    }
}

fn run_ok(c: &mut Command) -> Output {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{c:?}: {e} (test.sh installs it)"));
    assert!(
        out.status.success(),
        "{c:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// gsettings/dconf reading a compiled database directly (a dconf profile
/// naming the file), without any session bus.
fn gsettings_file_db(root: &Path, args: &[&str]) -> String {
    let profile = root.join("../test-profile");
    std::fs::write(
        &profile,
        format!("file-db:{}\n", root.join("etc/dconf/db/local").display()),
    )
    .unwrap();
    let out = run_ok(
        Command::new("gsettings")
            .args(args)
            .env("DCONF_PROFILE", &profile)
            .env("GSETTINGS_BACKEND", "dconf")
            .env_remove("DBUS_SESSION_BUS_ADDRESS"),
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn gnome_dconf_db_and_lock_applied_restored_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // The administrator's own profile, with another system database.
    write(&root, "etc/dconf/profile/user", "user-db:user\nsystem-db:site\n");
    let check = |root: &Path| {
        let p = read(root, "etc/dconf/profile/user");
        assert_eq!(p, "user-db:user\nsystem-db:site\nsystem-db:local\n");
        assert!(read(root, "etc/dconf/db/local.d/locks/00-msc").contains("/system/proxy/mode\n"));
        // What GSettings programs read from the compiled database: the values, locked.
        let get = |k: &str| gsettings_file_db(root, &["get", "org.gnome.system.proxy", k]);
        assert_eq!(get("mode"), "'auto'");
        assert_eq!(get("autoconfig-url"), format!("'{PAC}'"));
        for k in ["mode", "autoconfig-url"] {
            assert_eq!(
                gsettings_file_db(root, &["writable", "org.gnome.system.proxy", k]),
                "false",
                "{k} locked"
            );
        }
    };
    let drifts = cycle(
        "gnome",
        &root,
        |root| {
            let f = "etc/dconf/db/local.d/00-msc";
            write(root, f, &read(root, f).replace("mode='auto'", "mode='none'"));
        },
        check,
    );
    assert!(
        drifts
            .iter()
            .any(|d| d.what == "/etc/dconf/db/local.d/00-msc: content changed"),
        "{drifts:?}"
    );
    assert!(
        drifts
            .iter()
            .any(|d| d.what.contains("etc/dconf/db/local: missing or older")),
        "{drifts:?}"
    );
}

/// A private session bus (dbus-daemon with dconf-service activated on
/// demand) for a throwaway home, listening where msc looks for logged-in
/// users: `<root>/run/user/<uid>/bus`.
struct Session {
    vars: Vec<(String, String)>,
    _daemon: Daemon,
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

impl Session {
    fn vars(dir: &Path, root: &Path) -> Vec<(String, String)> {
        let home = dir.join("home");
        let runtime = root.join(format!("run/user/{}", uid()));
        vec![
            ("HOME".into(), home.display().to_string()),
            ("XDG_CONFIG_HOME".into(), home.join(".config").display().to_string()),
            ("XDG_RUNTIME_DIR".into(), runtime.display().to_string()),
            (
                "DBUS_SESSION_BUS_ADDRESS".into(),
                format!("unix:path={}", runtime.join("bus").display()),
            ),
            ("GSETTINGS_BACKEND".into(), "dconf".into()),
        ]
    }

    fn start(dir: &Path, root: &Path) -> Session {
        let vars = Session::vars(dir, root);
        std::fs::create_dir_all(dir.join("home/.config")).unwrap();
        let runtime = root.join(format!("run/user/{}", uid()));
        std::fs::create_dir_all(&runtime).unwrap();
        let mut c = Command::new("dbus-daemon");
        c.args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!("--address=unix:path={}", runtime.join("bus").display()))
            .envs(vars.iter().map(|(k, v)| (k, v)));
        let d = Daemon::start(&mut c, "unix:path=");
        Session { vars, _daemon: d }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c
    }

    fn get(&self, key: &str) -> String {
        let out = run_ok(self.cmd("gsettings").args(["get", "org.gnome.system.proxy", key]));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn set(&self, key: &str, value: &str) {
        run_ok(
            self.cmd("gsettings")
                .args(["set", "org.gnome.system.proxy", key, value]),
        );
    }
}

#[test]
fn gnome_logged_in_user_set_through_session_bus_and_drift_restored_within_a_period() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = Session::start(dir.path(), &root);
    // The user's own setting before msc.
    s.set("mode", "manual");
    let env = Env::new();
    let cfg = env.client_toml(
        "enforce",
        "127.0.0.1:8443".parse().unwrap(),
        "client.pem",
        "client-key.pem",
        &format!("[enforce]\nbackends = [\"gnome\"]\ninterval = \"1s\"\npac_url = \"{PAC}\"\n"),
    );
    let root_s = root.display().to_string();
    let args = ["enforce", "--config", cfg.to_str().unwrap(), "--root", root_s.as_str()];
    let vars: Vec<(&str, &str)> = s.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut p = Proc::start_env(&args, env.dir.path(), "enforce", &vars);
    assert!(p.ready_line.contains("applied gnome"), "{}", p.ready_line);
    assert_eq!(s.get("mode"), "'auto'");
    assert_eq!(s.get("autoconfig-url"), format!("'{PAC}'"));
    // The user changes it back: restored within one period, one log line.
    s.set("mode", "none");
    let log = p.wait_stderr("drift: gnome:");
    let line = log.lines().find(|l| l.contains("drift: gnome:")).unwrap();
    assert!(
        line.contains(&format!(
            "uid {}: org.gnome.system.proxy mode was 'none': restored",
            uid()
        )),
        "{line}"
    );
    assert_eq!(s.get("mode"), "'auto'", "{}", p.stderr());
    assert!(p.terminate().success());
    // Removal: the user's own value back, the key msc added unset again.
    let mut rm = Command::new(MSC);
    rm.args([
        "enforce",
        "--remove",
        "--config",
        cfg.to_str().unwrap(),
        "--root",
        &root_s,
    ])
    .envs(vars.iter().copied());
    let out = run_ok(&mut rm);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed gnome"));
    assert_eq!(s.get("mode"), "'manual'");
    assert_eq!(s.get("autoconfig-url"), "''");
    let left: Vec<PathBuf> = snapshot(&root).into_keys().filter(|p| !p.starts_with("run")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Runs `script` in a private mount namespace (`unshare -m`): mounts made
/// there are invisible to the host.
fn in_namespace(script: &str, args: &[&str], vars: &[(String, String)]) -> Output {
    let mut c = Command::new("timeout");
    c.args(["120", "unshare", "-m", "--", "sh", "-c", script, "sh"])
        .args(args)
        .envs(vars.iter().map(|(k, v)| (k, v)));
    run_ok(&mut c)
}

#[test]
fn gnome_lock_holds_against_the_user_through_the_real_etc_dconf() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc/dconf")).unwrap();
    assert!(
        Path::new("/etc/dconf").is_dir(),
        "/etc/dconf missing (libdconf1, installed with dconf-gsettings-backend by test.sh)"
    );
    let env = Env::new();
    let cfg = env.client_toml(
        "enforce",
        "127.0.0.1:8443".parse().unwrap(),
        "client.pem",
        "client-key.pem",
        &format!("[enforce]\nbackends = [\"gnome\"]\npac_url = \"{PAC}\"\n"),
    );
    let runtime = root.join(format!("run/user/{}", uid()));
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::create_dir_all(dir.path().join("home/.config")).unwrap();
    // Inside the namespace /etc/dconf is the temporary root's; a session bus
    // for the user; msc applies; the user tries to change the setting.
    let script = r#"
set -e
mount --bind "$1/etc/dconf" /etc/dconf
dbus-daemon --session --nofork --nopidfile --address="$DBUS_SESSION_BUS_ADDRESS" --print-address=1 > "$3/bus.addr" &
bus=$!
trap 'kill $bus 2>/dev/null || true' EXIT
i=0
while [ ! -s "$3/bus.addr" ]; do i=$((i+1)); [ $i -lt 400 ] || { echo "no bus"; exit 9; }; sleep 0.05; done
gsettings set org.gnome.system.proxy mode manual
"$MSC" enforce --once --config "$2" --root "$1"
echo "mode=$(gsettings get org.gnome.system.proxy mode)"
echo "url=$(gsettings get org.gnome.system.proxy autoconfig-url)"
echo "writable=$(gsettings writable org.gnome.system.proxy mode)"
gsettings set org.gnome.system.proxy mode none 2>"$3/set.err" && echo "user set: accepted" || echo "user set: refused"
echo "after=$(gsettings get org.gnome.system.proxy mode)"
"$MSC" enforce --remove --config "$2" --root "$1"
echo "removed=$(gsettings get org.gnome.system.proxy mode)"
echo "writable-after=$(gsettings writable org.gnome.system.proxy mode)"
"#;
    let mut vars = Session::vars(dir.path(), &root);
    vars.push(("MSC".into(), MSC.into()));
    let out = in_namespace(
        script,
        &[
            &root.display().to_string(),
            cfg.to_str().unwrap(),
            &dir.path().display().to_string(),
        ],
        &vars,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "mode='auto'\n".to_string(),
        format!("url='{PAC}'\n"),
        "writable=false\n".into(),
        "after='auto'\n".into(),
        // The user's value from before msc, and the key writable again.
        "removed='manual'\n".into(),
        "writable-after=true\n".into(),
    ] {
        assert!(
            text.contains(&want),
            "no '{}' in:\n{text}\n{}",
            want.trim(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let left: Vec<PathBuf> = snapshot(&root)
        .into_keys()
        .filter(|p| !p.starts_with("run") && p != Path::new("etc") && p != Path::new("etc/dconf"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Origin (http), a TLS origin (openssl s_server), a gateway that alone can
/// resolve `origin.msc.test` (its own mount namespace with an /etc/hosts
/// entry: the browser cannot resolve it, so its PAC sends it to the proxy
/// and a browser that ignored the policy could not load the page), a client,
/// and `msc enforce --once` with `backend` into a temporary root.
struct BrowserChain {
    env: Env,
    _origin: Proc,
    origin_port: u16,
    _tls_origin: Daemon,
    tls_port: u16,
    gateway: Proc,
    _client: Proc,
    root: PathBuf,
}

const HOST: &str = "origin.msc.test";

impl BrowserChain {
    fn start(backend: &str, prepare_root: impl FnOnce(&Path)) -> BrowserChain {
        let env = Env::new();
        let (origin, origin_addr) = env.origin();
        let tls_origin = Daemon::start(
            Command::new("openssl").args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-www",
                "-cert",
                &env.p("gateway.pem"),
                "-key",
                &env.p("gateway-key.pem"),
            ]),
            "ACCEPT",
        );
        let tls_port: u16 = tls_origin
            .ready_line
            .rsplit(':')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let hosts = env.write("hosts", &format!("127.0.0.1 localhost\n127.0.0.1 {HOST}\n"));
        let hosts = hosts.to_str().unwrap();
        let (gateway, gw) = env.gateway_wrapped(
            "gateway",
            &[
                "unshare",
                "-m",
                "--",
                "sh",
                "-c",
                "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
                hosts,
            ],
        );
        let (client, _) = env.client(gw);
        let pac_url = format!("http://{}/proxy.pac", client.control_addr());
        let cfg = env.client_toml(
            "enforce",
            gw,
            "client.pem",
            "client-key.pem",
            &format!("[enforce]\nbackends = [\"{backend}\"]\npac_url = \"{pac_url}\"\n"),
        );
        let root = env.path("root");
        std::fs::create_dir_all(&root).unwrap();
        prepare_root(&root);
        let out = run_ok(
            Command::new(MSC)
                .args(["enforce", "--once", "--config", cfg.to_str().unwrap(), "--root"])
                .arg(&root),
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("applied {backend}")));
        BrowserChain {
            env,
            _origin: origin,
            origin_port: origin_addr.port(),
            _tls_origin: tls_origin,
            tls_port,
            gateway,
            _client: client,
            root,
        }
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.origin_port)
    }

    fn https_url(&self) -> String {
        format!("https://{HOST}:{}/", self.tls_port)
    }
}

/// Headless Chromium with no proxy flags, in a mount namespace where
/// `/etc/chromium` is `policy_etc` (its managed policies). Returns the DOM.
fn chromium_dump(policy_etc: &Path, profile: &Path, url: &str) -> String {
    assert!(
        Path::new("/etc/chromium").is_dir(),
        "/etc/chromium missing: is chromium installed (test.sh installs it)?"
    );
    let script = "mount --bind \"$1\" /etc/chromium && shift && exec chromium --headless --no-sandbox --disable-gpu \
                  --ignore-certificate-errors --no-first-run --user-data-dir=\"$1\" --dump-dom \"$2\"";
    let mut c = Command::new("timeout");
    c.args(["120", "unshare", "-m", "--", "sh", "-c", script, "sh"]).args([
        &policy_etc.display().to_string(),
        &profile.display().to_string(),
        url,
    ]);
    let out = browser_output(&mut c);
    assert!(
        out.status.success(),
        "{c:?}: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn headless_chromium_obeys_the_managed_policy_for_http_and_https() {
    let c = BrowserChain::start("chromium", |_| {});
    let policy_etc = c.root.join("etc/chromium");
    assert!(policy_etc.join("policies/managed/msc.json").exists());
    let profile = c.env.path("chromium-profile");
    // http: a GET through client -> gateway to the origin.
    let url = c.http_url("/");
    let dom = chromium_dump(&policy_etc, &profile, &url);
    assert!(dom.contains("Hello from the msc demo origin"), "{url}: {dom}");
    let log = c.gateway.wait_stderr(&format!("GET {url} 200"));
    assert!(log.contains("alice@example.com GET"), "{log}");
    // https: a CONNECT through client -> gateway to the TLS origin.
    let dom = chromium_dump(&policy_etc, &profile, &c.https_url());
    assert!(dom.contains("s_server"), "{dom}");
    c.gateway.wait_stderr(&format!("CONNECT {HOST}:{} 200", c.tls_port));
    // Control: the same browser without msc's policy cannot load the page
    // (the name resolves only at the gateway).
    let empty = c.env.path("no-policy");
    std::fs::create_dir_all(&empty).unwrap();
    let dom = chromium_dump(&empty, &c.env.path("chromium-profile-2"), &c.http_url("/direct"));
    assert!(!dom.contains("Hello from the msc demo origin"), "{dom}");
    assert!(!c.gateway.stderr().contains("/direct"));
}

#[test]
fn headless_firefox_obeys_the_enterprise_policy() {
    assert!(
        Path::new("/usr/lib/firefox-esr/distribution").exists(),
        "firefox-esr missing (test.sh installs it)"
    );
    // Debian's firefox-esr reads policies.json from its distribution dir:
    // the root gets a firefox-esr installation so msc writes one there.
    let c = BrowserChain::start("firefox", |root| {
        std::fs::create_dir_all(root.join("usr/lib/firefox-esr")).unwrap();
    });
    let dist = c.root.join("usr/lib/firefox-esr/distribution");
    assert!(dist.join("policies.json").exists());
    let profile = c.env.path("firefox-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let shot = c.env.path("shot.png");
    let url = c.http_url("/firefox");
    let script = "mount --bind \"$1\" /usr/lib/firefox-esr/distribution && exec firefox-esr --headless --no-remote \
                  --profile \"$2\" --screenshot \"$3\" \"$4\"";
    in_namespace(
        script,
        &[
            &dist.display().to_string(),
            &profile.display().to_string(),
            &shot.display().to_string(),
            &url,
        ],
        &[("HOME".into(), c.env.p("home"))],
    );
    c.gateway.wait_stderr(&format!("GET {url} 404"));
    assert!(shot.exists(), "firefox wrote no screenshot");
    // https: the CONNECT reaches the gateway. The page is Firefox's
    // certificate warning (the test origin's certificate is for localhost),
    // on which a screenshot never completes: Firefox is stopped once the
    // gateway has logged the tunnel.
    let mut ff = Command::new("timeout")
        .args(["120", "unshare", "-m", "--", "sh", "-c", script, "sh"])
        .args([
            &dist.display().to_string(),
            &profile.display().to_string(),
            &c.env.p("shot-https.png"),
            &c.https_url(),
        ])
        .env("HOME", c.env.p("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let connected = std::panic::catch_unwind(|| {
        c.gateway.wait_stderr(&format!("CONNECT {HOST}:{} 200", c.tls_port));
    });
    let _ = Command::new("kill").args(["-TERM", &ff.id().to_string()]).status();
    let _ = ff.wait();
    assert!(connected.is_ok(), "no CONNECT at the gateway:\n{}", c.gateway.stderr());
}

#[test]
fn settings_from_config_translate_the_bypass_list_to_no_proxy() {
    let env = Env::new();
    let text = std::fs::read_to_string(env.path("client.toml"))
        .unwrap()
        .replace("http_port = 0", "http_port = 3128")
        .replace("https_port = 0", "https_port = 3129")
        .replace(
        "[[servers]]",
        "[pac]\nbypass = [\"intranet.example\", \"*.corp.example\", \"10.0.0.0/8\", \"http://wiki.example/*\", \"build-*.example\"]\n\n[[servers]]",
    );
    let cfg = msc::config::client::ClientConfig::from_text(&env.path("client.toml"), &text).unwrap();
    let s = Settings::from_config(&cfg).unwrap();
    assert_eq!(s.pac_url, "http://127.0.0.1:27778/proxy.pac");
    assert_eq!(s.http_proxy.as_deref(), Some("http://127.0.0.1:3128"));
    assert_eq!(s.https_proxy.as_deref(), Some("http://127.0.0.1:3129"));
    assert_eq!(
        s.no_proxy,
        [
            "localhost",
            "127.0.0.1",
            "::1",
            "intranet.example",
            "corp.example",
            "10.0.0.0/8"
        ]
    );
    assert_eq!(s.no_proxy_skipped, ["http://wiki.example/*", "build-*.example"]);
}

/// msc runs as root; a logged-in user's session is another uid's bus, and
/// msc reads and writes it as that user (setpriv, the user's home from the
/// password database). A private mount namespace supplies the user
/// (`/etc/passwd` bound over with one more entry).
#[test]
fn gnome_session_of_another_uid_is_set_as_that_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = t.join("root");
    let uid = 4242;
    let runtime = root.join(format!("run/user/{uid}"));
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::create_dir_all(t.join("home")).unwrap();
    for p in [&runtime, &t.join("home")] {
        run_ok(Command::new("chown").arg(format!("{uid}:{uid}")).arg(p));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap()
        + &format!("mscuser:x:{uid}:{uid}::{}:/bin/sh\n", t.join("home").display());
    std::fs::write(t.join("passwd"), passwd).unwrap();
    let env = Env::new();
    let cfg = env.client_toml(
        "enforce",
        "127.0.0.1:8443".parse().unwrap(),
        "client.pem",
        "client-key.pem",
        &format!("[enforce]\nbackends = [\"gnome\"]\ninterval = \"1s\"\npac_url = \"{PAC}\"\n"),
    );
    let script = r#"
set -e
T="$1"; R="$2"; CFG="$3"; U=4242
mount --bind "$T/passwd" /etc/passwd
BUS="unix:path=$R/run/user/$U/bus"
as_user() {
  setpriv --reuid=$U --regid=$U --clear-groups env -i HOME="$T/home" PATH="$PATH" \
    XDG_RUNTIME_DIR="$R/run/user/$U" DBUS_SESSION_BUS_ADDRESS="$BUS" GSETTINGS_BACKEND=dconf "$@"
}
setpriv --reuid=$U --regid=$U --clear-groups env -i HOME="$T/home" PATH="$PATH" XDG_RUNTIME_DIR="$R/run/user/$U" \
  dbus-daemon --session --nofork --nopidfile --address="$BUS" --print-address=1 > "$T/bus.addr" 2>/dev/null &
bus=$!
loop=
trap 'kill $bus $loop 2>/dev/null || true' EXIT
i=0
while [ ! -s "$T/bus.addr" ]; do i=$((i+1)); [ $i -lt 400 ] || { echo "no bus"; exit 9; }; sleep 0.05; done
as_user gsettings set org.gnome.system.proxy mode manual
"$MSC" enforce --config "$CFG" --root "$R" > "$T/enforce.out" 2> "$T/enforce.err" &
loop=$!
i=0
while ! grep -q ready "$T/enforce.out"; do i=$((i+1)); [ $i -lt 400 ] || { echo "no ready"; exit 9; }; sleep 0.05; done
echo "mode=$(as_user gsettings get org.gnome.system.proxy mode)"
as_user gsettings set org.gnome.system.proxy mode none
i=0
while ! grep -q "drift: gnome" "$T/enforce.err"; do i=$((i+1)); [ $i -lt 400 ] || { echo "no drift line"; exit 9; }; sleep 0.05; done
grep "drift: gnome" "$T/enforce.err"
echo "restored=$(as_user gsettings get org.gnome.system.proxy mode)"
kill $loop; wait $loop || true
loop=
"$MSC" enforce --remove --config "$CFG" --root "$R" > /dev/null
echo "removed=$(as_user gsettings get org.gnome.system.proxy mode)"
echo "owner=$(stat -c %u "$T/home/.config/dconf/user")"
"#;
    let vars = vec![("MSC".to_string(), MSC.to_string())];
    let out = in_namespace(
        script,
        &[
            &t.display().to_string(),
            &root.display().to_string(),
            cfg.to_str().unwrap(),
        ],
        &vars,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "mode='auto'\n".to_string(),
        format!("uid {uid}: org.gnome.system.proxy mode was 'none': restored"),
        "restored='auto'\n".into(),
        "removed='manual'\n".into(),
        // The user's own database, still theirs.
        format!("owner={uid}\n"),
    ] {
        assert!(
            text.contains(&want),
            "no '{}' in:\n{text}\n{}",
            want.trim(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
