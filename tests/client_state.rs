//! The user's view of the client: its state, who may change it, and the
//! automatic re-enable. Real components: `msc` processes, a second and third
//! uid through `setpriv`, a private `dbus-daemon` with a stand-in for logind
//! (zbus, owning `org.freedesktop.login1`), headless Chromium.
#![allow(
    clippy::disallowed_methods,
    reason = "test: bounded polling of the client's status between steps, off any runtime"
)]
mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn status(ctl: SocketAddr) -> Value {
    let (code, body, err) = curl(&[&format!("http://{ctl}/status")]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_slice(&body).unwrap()
}

/// Waits (bounded) until the client state's kind is `kind`.
fn wait_state(ctl: SocketAddr, kind: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(ctl);
        if s["state"]["kind"] == kind {
            return s;
        }
        assert!(Instant::now() < deadline, "state never became {kind}: {}", s["state"]);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A copy of the msc binary any uid can run (the checkout may not be readable by others).
struct Bin {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn public_msc() -> Bin {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("msc");
    std::fs::copy(MSC, &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Bin { _dir: dir, path }
}

/// Runs `msc args` as `uid`/`gid` (None: as this process); returns (exit code, stdout, stderr).
fn msc_as(bin: &Path, ids: Option<(u32, u32)>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = match ids {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args).stdin(Stdio::null());
    // The copy was just written: a process another test thread forks in that
    // moment holds the write descriptor until it execs, and exec'ing the copy
    // then fails with ETXTBSY. Bounded retry.
    let mut tries = 0;
    let out = loop {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => break r.expect("setpriv (util-linux) is installed"),
        }
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory other uids can enter (the control socket lives there).
fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn disable_config(sock: &Path) -> String {
    format!(
        "[pac]\nfail_open = false\n[disable]\nallowed = true\nmax = \"1h\"\n[control]\nlisten = \"127.0.0.1:0\"\nsocket = \"{}\"\ntrusted_users = [\"65533\"]\ntrusted_groups = [\"4242\"]\n",
        sock.display()
    )
}

/// A client config with the given tail, pointing at `gw`.
fn client_config(env: &Env, gw: SocketAddr, tail: &str) -> PathBuf {
    let text = format!(
        "workers = 2\n[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n[[servers]]\nname = \"gw1\"\naddress = \"{gw}\"\nserver_name = \"localhost\"\nhttp_port = 0\nhttps_port = 0\n{tail}"
    );
    env.write("client-state.toml", &text)
}

#[test]
fn disable_rules_uids_pac_and_direct_relay() {
    let env = Env::new();
    let (_origin, origin_addr) = env.origin();
    let (mut gateway, gw_addr) = env.gateway();
    let sockdir = open_dir();
    let sock = sockdir.path().join("control.sock");
    let cfg = client_config(&env, gw_addr, &disable_config(&sock));
    let (client, proxy) = env.client_from("client", &cfg);
    let ctl = client.control_addr();
    let bin = public_msc();
    let s = sock.to_str().unwrap();

    let st = wait_state(ctl, "enabled");
    assert_eq!(st["api"]["socket"], s);
    let (_, pac_before, _) = curl(&["-i", &format!("http://{ctl}/proxy.pac")]);
    let pac_before = String::from_utf8_lossy(&pac_before).into_owned();
    assert!(pac_before.contains("PROXY"), "{pac_before}");

    // `msc status`, human and JSON, shows the state.
    let (code, out, err) = msc_as(&bin.path, None, &["status", "--control", &ctl.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state: ENABLED"), "{out}");
    let (_, out, _) = msc_as(&bin.path, None, &["status", "--json", "--control", &ctl.to_string()]);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["state"], serde_json::json!({"kind": "enabled"}));

    // An untrusted uid: refused by the kernel-reported identity, nothing changes.
    let disable = ["disable", "--socket", s, "--for", "10m", "--reason", "vendor portal"];
    let (code, _, err) = msc_as(&bin.path, Some((65534, 65534)), &disable);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused") && err.contains("not trusted"), "{err}");
    let (code, _, err) = msc_as(&bin.path, Some((65534, 65534)), &["enable", "--socket", s]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(status(ctl)["state"]["kind"], "enabled");
    // The refusal is logged with the uid.
    client.wait_stderr("control socket: refused Disable");

    // Trusted (root), but over the maximum, or without a reason.
    let (code, _, err) = msc_as(
        &bin.path,
        None,
        &["disable", "--socket", s, "--for", "2h", "--reason", "x"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("longer than the maximum"), "{err}");
    let (code, _, err) = msc_as(
        &bin.path,
        None,
        &["disable", "--socket", s, "--for", "10m", "--reason", "  "],
    );
    assert_eq!(code, 1);
    assert!(err.contains("reason is required"), "{err}");
    assert_eq!(status(ctl)["state"]["kind"], "enabled");

    // A trusted uid (control.trusted_users) disables.
    let (code, out, err) = msc_as(&bin.path, Some((65533, 65533)), &disable);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state: disabled by uid 65533"), "{out}");
    let st = wait_state(ctl, "disabled");
    assert_eq!(st["state"]["by"], "uid 65533");
    assert_eq!(st["state"]["reason"], "vendor portal");
    assert_eq!(st["traffic"], "direct:disabled");
    let log = client.wait_stderr("protection disabled by uid 65533");
    assert!(log.contains("vendor portal"), "the reason is logged: {log}");
    let (_, out, _) = msc_as(&bin.path, None, &["status", "--control", &ctl.to_string()]);
    assert!(
        out.contains("state: DISABLED by uid 65533") && out.contains("left): vendor portal"),
        "{out}"
    );

    // The PAC says DIRECT, with a new ETag.
    let (_, pac, _) = curl(&["-i", &format!("http://{ctl}/proxy.pac")]);
    let pac = String::from_utf8_lossy(&pac).into_owned();
    assert!(pac.contains("return \"DIRECT\"") && !pac.contains("PROXY"), "{pac}");
    let etag = |t: &str| {
        t.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("etag:"))
            .map(str::to_owned)
    };
    assert_ne!(etag(&pac), etag(&pac_before));

    // The client relays DIRECT: with the gateway gone, requests still work, counted.
    gateway.terminate();
    let url = format!("http://{origin_addr}/bytes/1000");
    let (code, body, err) = curl(&["-x", &format!("http://{proxy}"), &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 1000);
    let deadline = Instant::now() + WAIT;
    while status(ctl)["direct"]["disabled"] != 1 {
        assert!(Instant::now() < deadline, "the DIRECT request was never counted");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A member of a trusted group (its primary group, from the kernel) enables.
    let (code, out, err) = msc_as(&bin.path, Some((65532, 4242)), &["enable", "--socket", s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("protection enabled"), "{out}");
    let st = status(ctl);
    assert_ne!(st["state"]["kind"], "disabled");
    assert!(client.stderr().contains("protection re-enabled: enabled by uid 65532"));
    // Back to tunnels only: the gateway is down and the policy is fail-closed.
    let (_, pac, _) = curl(&[&format!("http://{ctl}/proxy.pac")]);
    assert!(String::from_utf8_lossy(&pac).contains("PROXY"));
    let (_, out, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &format!("http://{proxy}"),
        &url,
    ]);
    assert_ne!(
        String::from_utf8_lossy(&out),
        "200",
        "after enable nothing may go DIRECT"
    );
}

#[test]
fn disable_ends_when_its_time_is_up() {
    let env = Env::new();
    let (_gateway, gw_addr) = env.gateway();
    let sockdir = open_dir();
    let sock = sockdir.path().join("c.sock");
    let cfg = client_config(&env, gw_addr, &disable_config(&sock));
    let (client, _) = env.client_from("client", &cfg);
    let ctl = client.control_addr();
    wait_state(ctl, "enabled");
    let bin = public_msc();
    let s = sock.to_str().unwrap();
    let (code, _, err) = msc_as(
        &bin.path,
        None,
        &["disable", "--socket", s, "--for", "1s", "--reason", "short"],
    );
    assert_eq!(code, 0, "{err}");
    let st = status(ctl);
    assert_eq!(st["state"]["kind"], "disabled", "{st}");
    wait_state(ctl, "enabled");
    client.wait_stderr("protection re-enabled: the disable period is over");
}

#[test]
fn disable_not_permitted_by_default() {
    let env = Env::new();
    let (_gateway, gw_addr) = env.gateway();
    let sockdir = open_dir();
    let sock = sockdir.path().join("c.sock");
    let tail = format!("[control]\nlisten = \"127.0.0.1:0\"\nsocket = \"{}\"\n", sock.display());
    let cfg = client_config(&env, gw_addr, &tail);
    let (client, _) = env.client_from("client", &cfg);
    let bin = public_msc();
    let (code, _, err) = msc_as(
        &bin.path,
        None,
        &[
            "disable",
            "--config",
            cfg.to_str().unwrap(),
            "--for",
            "1m",
            "--reason",
            "r",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("not permitted by the administrator"), "{err}");
    assert_eq!(status(client.control_addr())["state"]["kind"], "enabled");
}

type Bus = PrivateBus;

fn private_bus() -> Bus {
    PrivateBus::start()
}

/// The stand-in for logind: owns `org.freedesktop.login1` and emits its signals.
struct Logind {
    conn: zbus::blocking::Connection,
}

impl Logind {
    fn start(bus: &Bus) -> Logind {
        let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .name("org.freedesktop.login1")
            .unwrap()
            .build()
            .unwrap();
        Logind { conn }
    }

    fn manager<B: serde::Serialize + zbus::zvariant::DynamicType>(&self, member: &str, body: &B) {
        self.conn
            .emit_signal(
                None::<&str>,
                "/org/freedesktop/login1",
                "org.freedesktop.login1.Manager",
                member,
                body,
            )
            .unwrap();
    }

    fn lock(conn: &zbus::blocking::Connection) {
        conn.emit_signal(
            None::<&str>,
            "/org/freedesktop/login1/session/_31",
            "org.freedesktop.login1.Session",
            "Lock",
            &(),
        )
        .unwrap();
    }
}

#[test]
fn logind_signals_re_enable() {
    let bus = private_bus();
    let logind = Logind::start(&bus);
    let env = Env::new();
    let (_gateway, gw_addr) = env.gateway();
    let sockdir = open_dir();
    let sock = sockdir.path().join("c.sock");
    let cfg = client_config(&env, gw_addr, &disable_config(&sock));
    let client = Proc::start_env(
        &["run", "--config", cfg.to_str().unwrap()],
        env.dir.path(),
        "client",
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    let ctl = client.control_addr();
    client.wait_stderr("session events: watching logind");
    wait_state(ctl, "enabled");
    let bin = public_msc();
    let s = sock.to_str().unwrap();
    let disable = || {
        let (code, _, err) = msc_as(
            &bin.path,
            None,
            &["disable", "--socket", s, "--for", "30m", "--reason", "test"],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(status(ctl)["state"]["kind"], "disabled");
    };
    let count = |what: &str| client.stderr().matches(what).count();

    // Not believed: a Lock from a connection that does not own logind's
    // name, and PrepareForSleep(false) (resuming). Then the real Lock.
    disable();
    let spoofer = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .unwrap();
    Logind::lock(&spoofer);
    // A round trip: the bus has dispatched the spoofed signal before this returns.
    zbus::blocking::fdo::DBusProxy::new(&spoofer).unwrap().get_id().unwrap();
    logind.manager("PrepareForSleep", &(false,));
    Logind::lock(&logind.conn);
    wait_state(ctl, "enabled");
    client.wait_stderr("protection re-enabled: the screen was locked");
    assert_eq!(count("logind: "), 1, "{}", client.stderr());

    let mut seen = 1;
    for (what, emit) in [
        (
            "a session ended (logout)",
            Box::new(|| {
                logind.manager(
                    "SessionRemoved",
                    &(
                        "31",
                        zbus::zvariant::ObjectPath::try_from("/org/freedesktop/login1/session/_31").unwrap(),
                    ),
                )
            }) as Box<dyn Fn()>,
        ),
        (
            "the machine is suspending",
            Box::new(|| logind.manager("PrepareForSleep", &(true,))),
        ),
        (
            "the machine is shutting down",
            Box::new(|| logind.manager("PrepareForShutdown", &(true,))),
        ),
    ] {
        disable();
        emit();
        wait_state(ctl, "enabled");
        client.wait_stderr(&format!("protection re-enabled: {what}"));
        seen += 1;
        assert_eq!(count("logind: "), seen, "{}", client.stderr());
    }
}

#[test]
fn web_pages_cannot_read_or_change_anything() {
    let chain = Chain::start();
    let ctl = chain.client.control_addr();
    wait_state(ctl, "enabled");
    let before = status(ctl)["api"]["refused_web_requests"].as_u64().unwrap();

    // The server refuses by Origin and Sec-Fetch-Site; tools without them are served.
    let url = format!("http://{ctl}/status");
    let code = |extra: &[&str]| {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        let (_, out, _) = curl(&args);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert_eq!(code(&[]), "200");
    assert_eq!(code(&["-H", &format!("Origin: http://{ctl}")]), "200");
    assert_eq!(code(&["-H", "Origin: http://127.0.0.1:1"]), "403");
    assert_eq!(code(&["-H", "Origin: null"]), "403");
    assert_eq!(code(&["-H", "Sec-Fetch-Site: same-site"]), "403");
    assert_eq!(status(ctl)["api"]["refused_web_requests"].as_u64().unwrap(), before + 3);

    // A page on another local port, in a real browser.
    let page = format!(
        r#"<!doctype html><html><body><pre id="out">running</pre><script>
const out = [];
async function run() {{
  try {{
    const r = await fetch('http://{ctl}/status');
    out.push('read:' + r.status + ':' + (await r.text()).slice(0, 30));
  }} catch (e) {{ out.push('status-failed:' + e.name); }}
  try {{
    const r = await fetch('http://{ctl}/status', {{mode: 'no-cors'}});
    out.push('no-cors:' + r.type + ':' + (await r.text()).length);
  }} catch (e) {{ out.push('no-cors-failed:' + e.name); }}
  try {{
    await fetch('http://{ctl}/disable', {{method: 'POST', mode: 'no-cors',
      body: '{{"cmd":"disable","for":"30m","reason":"web"}}'}});
    out.push('post-sent');
  }} catch (e) {{ out.push('post-failed:' + e.name); }}
  document.getElementById('out').textContent = out.join(' ');
}}
run();
</script></body></html>"#
    );
    let page_origin = RawOrigin::start(move |_| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
            page.len()
        )
        .into_bytes();
        r.extend_from_slice(page.as_bytes());
        Reply::Send(r)
    });
    let profile = tempfile::tempdir().unwrap();
    let out = browser_output(
        Command::new("chromium-headless-shell")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-proxy-server",
                "--no-first-run",
                "--virtual-time-budget=10000",
                "--timeout=15000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(page_origin.url("/page.html")),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    // What the page's script found, as its DOM shows it.
    let shown = dom
        .split("<pre id=\"out\">")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("no result in the DOM: {dom}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        shown, "status-failed:TypeError no-cors:opaque:0 post-sent",
        "the page could read the status: {dom}"
    );
    // The requests reached the control API and were refused there (not only
    // hidden by the browser), and nothing changed.
    let st = status(ctl);
    assert!(
        st["api"]["refused_web_requests"].as_u64().unwrap() >= before + 3 + 3,
        "{}",
        st["api"]
    );
    assert_eq!(st["state"]["kind"], "enabled");
}
