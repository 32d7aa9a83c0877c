//! Test harness: real `msc` processes on 127.0.0.1 ephemeral ports, a fresh
//! PKI per test, readiness by the line each process prints, and curl.
#![allow(dead_code)]
#![allow(
    clippy::disallowed_methods,
    reason = "test harness: bounded polling of child processes and their log files, off any runtime"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use msc::cli::pki::InitOptions;

pub const MSC: &str = env!("CARGO_BIN_EXE_msc");
/// Upper bound for any single wait in the tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running `msc` process; killed (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub ready_line: String,
    /// Stdout lines printed before the ready line.
    pub before_ready: Vec<String>,
    pub stderr_path: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `msc args...` and waits (bounded) for a stdout line containing `ready`.
    pub fn start(args: &[&str], dir: &Path, name: &str) -> Proc {
        Proc::start_env(args, dir, name, &[])
    }

    pub fn start_env(args: &[&str], dir: &Path, name: &str, env: &[(&str, &str)]) -> Proc {
        Proc::start_full(&[], args, dir, name, env)
    }

    /// Starts `wrapper... msc args...` (e.g. `prlimit --nofile=64:64 --`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], dir: &Path, name: &str) -> Proc {
        Proc::start_full(wrapper, args, dir, name, &[])
    }

    fn start_full(wrapper: &[&str], args: &[&str], dir: &Path, name: &str, env: &[(&str, &str)]) -> Proc {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(MSC);
                c
            }
            None => Command::new(MSC),
        };
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null());
        // Instance locks and the control socket's default go to the test's own
        // directory, never the host's runtime dir; nor the host's system bus
        // (tests that need one pass a private bus).
        cmd.env("XDG_RUNTIME_DIR", runtime_dir(dir))
            .env_remove("RUNTIME_DIRECTORY")
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/msc-test-bus");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn msc");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut before_ready = Vec::new();
        let ready_line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("ready") => break l,
                Ok(l) => before_ready.push(l),
                Err(_) => {
                    let _ = child.kill();
                    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    panic!("{name} did not become ready within {WAIT:?}; stderr:\n{err}");
                }
            }
        };
        Proc {
            child,
            ready_line,
            before_ready,
            stderr_path,
            lines: rx,
        }
    }

    /// The first `IP:PORT` after `marker` in the ready line.
    pub fn addr_after(&self, marker: &str) -> SocketAddr {
        let rest = self
            .ready_line
            .split(marker)
            .nth(1)
            .unwrap_or_else(|| panic!("no '{marker}' in {}", self.ready_line));
        let tok = rest
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches([',', ';', ')']);
        tok.parse()
            .unwrap_or_else(|_| panic!("bad address '{tok}' in {}", self.ready_line))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits (bounded) until stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.stderr();
            if s.contains(needle) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("stderr never contained '{needle}':\n{s}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The control API address from a client's ready line.
    pub fn control_addr(&self) -> SocketAddr {
        let rest = self
            .ready_line
            .split("control http://")
            .nth(1)
            .expect("control address in ready line");
        rest.split('/').next().unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit within {WAIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Remaining stdout lines received so far (non-blocking).
    pub fn drain_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A panic inside msc is contained per connection, but it is a bug:
        // every test fails if any process it started logged one.
        let log = self.stderr();
        if !std::thread::panicking() && log.contains("panicked") {
            let _ = self.child.kill();
            panic!("an msc process logged a panic:\n{log}");
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The runtime directory (instance locks) of the processes a test starts in `dir`.
pub fn runtime_dir(dir: &Path) -> PathBuf {
    dir.join("run")
}

/// A port that is free right now (the process under test binds it just after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PKI plus configuration files in a temporary directory.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        msc::cli::pki::init(&InitOptions {
            dir: dir.path().to_path_buf(),
            gateway_listen: "127.0.0.1:0".into(),
            http_port: 0,
            https_port: 0,
            ..InitOptions::default()
        })
        .unwrap();
        // The generated gateway listens on an ephemeral port; the generated
        // client.toml needs a concrete address to be a valid file on its own.
        let c = dir.path().join("client.toml");
        let text = std::fs::read_to_string(&c)
            .unwrap()
            .replace("127.0.0.1:0", "127.0.0.1:8443");
        std::fs::write(&c, text).unwrap();
        Env { dir }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    pub fn p(&self, f: &str) -> String {
        self.path(f).display().to_string()
    }

    pub fn write(&self, f: &str, text: &str) -> PathBuf {
        let p = self.path(f);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn origin(&self) -> (Proc, SocketAddr) {
        let p = Proc::start(&["origin", "--listen", "127.0.0.1:0"], self.dir.path(), "origin");
        let a = p.addr_after("listening on ");
        (p, a)
    }

    /// Starts a gateway with `extra` TOML appended to the generated config
    /// (which already has [tls], [policy] and [log] tables).
    pub fn gateway_with(&self, name: &str, extra_top: &str) -> (Proc, SocketAddr) {
        let base = std::fs::read_to_string(self.path("gateway.toml")).unwrap();
        let text = format!("{extra_top}\n{base}").replace("workers = 0", "workers = 2");
        let f = self.write(&format!("{name}.toml"), &text);
        let p = Proc::start(&["gateway", "--config", f.to_str().unwrap()], self.dir.path(), name);
        let a = p.addr_after("listening on ");
        (p, a)
    }

    pub fn gateway(&self) -> (Proc, SocketAddr) {
        self.gateway_with("gateway", "")
    }

    /// Starts a gateway whose `[egress]` table is `egress` instead of the
    /// generated one (which admits loopback on every port); `""` leaves the
    /// built-in strict defaults. `edit` may change the rest of the file.
    pub fn gateway_egress(&self, name: &str, egress: &str, edit: impl FnOnce(String) -> String) -> (Proc, SocketAddr) {
        let base = std::fs::read_to_string(self.path("gateway.toml")).unwrap();
        let at = base
            .find("[egress]")
            .expect("generated gateway.toml has an [egress] table");
        let text = edit(base[..at].replace("workers = 0", "workers = 2")) + egress;
        let f = self.write(&format!("{name}.toml"), &text);
        let p = Proc::start(&["gateway", "--config", f.to_str().unwrap()], self.dir.path(), name);
        let a = p.addr_after("listening on ");
        (p, a)
    }

    /// Starts a gateway listening on `listen` with `tail` appended (tables).
    pub fn gateway_at(&self, name: &str, listen: &str, tail: &str) -> (Proc, SocketAddr) {
        let base = std::fs::read_to_string(self.path("gateway.toml")).unwrap();
        let text = base
            .replace("workers = 0", "workers = 1")
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{listen}\""))
            + "\n"
            + tail;
        let f = self.write(&format!("{name}.toml"), &text);
        let p = Proc::start(&["gateway", "--config", f.to_str().unwrap()], self.dir.path(), name);
        let a = p.addr_after("listening on ");
        (p, a)
    }

    /// A client config with several gateways (name, address) and extra TOML.
    pub fn multi_client_toml(&self, name: &str, gws: &[(&str, SocketAddr)], extra: &str) -> PathBuf {
        let mut text = format!(
            "workers = 2\n[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n{extra}\n[control]\nlisten = \"127.0.0.1:0\"\n"
        );
        for (n, a) in gws {
            text.push_str(&format!(
                "[[servers]]\nname = \"{n}\"\naddress = \"{a}\"\nserver_name = \"localhost\"\nhttp_port = 0\nhttps_port = 0\n"
            ));
        }
        self.write(&format!("{name}.toml"), &text)
    }

    /// Writes a client config pointing at `gw` with the given TLS files.
    pub fn client_toml(&self, name: &str, gw: SocketAddr, cert: &str, key: &str, extra: &str) -> PathBuf {
        let text = format!(
            "workers = 2\n[tls]\nca = \"ca.pem\"\ncert = \"{cert}\"\nkey = \"{key}\"\n{extra}\n[[servers]]\nname = \"gw1\"\naddress = \"{gw}\"\nserver_name = \"localhost\"\nhttp_port = 0\nhttps_port = 0\n[control]\nlisten = \"127.0.0.1:0\"\n"
        );
        self.write(&format!("{name}.toml"), &text)
    }

    /// Starts a client; returns it and slot 1's http address.
    pub fn client_from(&self, name: &str, cfg: &Path) -> (Proc, SocketAddr) {
        let p = Proc::start(&["run", "--config", cfg.to_str().unwrap()], self.dir.path(), name);
        let a = p.addr_after("slot 1 http ");
        (p, a)
    }

    pub fn client(&self, gw: SocketAddr) -> (Proc, SocketAddr) {
        let cfg = self.client_toml("client-run", gw, "client.pem", "client-key.pem", "");
        self.client_from("client", &cfg)
    }
}

/// Client config fragment: refuse (503) rather than go direct when no
/// gateway is available, so gateway failures stay visible to the browser.
pub const FAIL_CLOSED: &str = "[pac]\nfail_open = false\n";

/// A refused request while the gateway is broken: 502 naming the failure
/// while the control plane still counts the gateway as available, 503 with
/// each gateway's last failure once it does not. Returns the body.
pub fn gateway_refusal(status: u16, head: &str, body: &[u8]) -> String {
    assert!(status == 502 || status == 503, "expected 502 or 503, got {head}");
    String::from_utf8_lossy(body).into_owned()
}

/// A gateway, a client and an origin, all running.
pub struct Chain {
    pub env: Env,
    pub origin: Proc,
    pub origin_addr: SocketAddr,
    pub gateway: Proc,
    pub gateway_addr: SocketAddr,
    pub client: Proc,
    pub proxy: SocketAddr,
}

impl Chain {
    pub fn start() -> Chain {
        let env = Env::new();
        let (origin, origin_addr) = env.origin();
        let (gateway, gateway_addr) = env.gateway();
        let (client, proxy) = env.client(gateway_addr);
        Chain {
            env,
            origin,
            origin_addr,
            gateway,
            gateway_addr,
            client,
            proxy,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.origin_addr)
    }
}

/// Runs curl with a time limit; returns (exit code, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed (the CI script installs it)");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plain TCP client with time limits.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads one HTTP/1.1 response (Content-Length framed, or until close) from `s`.
pub fn read_response(s: &mut impl Read) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert!(
            n == 1,
            "connection closed inside a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = head[9..12].parse().unwrap();
    let len = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap())
    });
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            s.read_exact(&mut body).unwrap();
        }
        None => {
            s.read_to_end(&mut body).unwrap();
        }
    }
    (status, head, body)
}

/// Sends raw bytes and reads one response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = tcp(addr);
    s.write_all(raw).unwrap();
    read_response(&mut s)
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// The bytes `/bytes/N` serves.
pub fn pattern_bytes(n: usize) -> Vec<u8> {
    let p = msc::cli::origin::pattern();
    (0..n).map(|i| p[i % p.len()]).collect()
}

/// What a [`RawOrigin`] does with one request.
pub enum Reply {
    /// Send these bytes and keep the connection for the next request.
    Send(Vec<u8>),
    /// Send these bytes, then close the connection (FIN).
    SendThenClose(Vec<u8>),
    /// Send these bytes, then reset the connection (RST, no FIN).
    SendThenReset(Vec<u8>),
    /// Send these bytes, then hold the connection open without another byte
    /// until the peer goes away (bounded by [`WAIT`]).
    SendThenHold(Vec<u8>),
}

/// A scripted origin for hostile or broken responses: every request it
/// receives (head and `Content-Length` body, exactly as received) is recorded,
/// and `script(head)` decides the answer.
pub struct RawOrigin {
    pub addr: SocketAddr,
    requests: mpsc::Receiver<Vec<u8>>,
}

impl RawOrigin {
    pub fn start(script: impl Fn(&str) -> Reply + Send + Sync + 'static) -> RawOrigin {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let script = std::sync::Arc::new(script);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let (tx, script) = (tx.clone(), script.clone());
                std::thread::spawn(move || raw_origin_conn(s, &tx, &*script));
            }
        });
        RawOrigin { addr, requests: rx }
    }

    /// Requests received so far (each head + body as received).
    pub fn received(&self) -> Vec<String> {
        self.requests
            .try_iter()
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .collect()
    }

    /// Waits (bounded) for the next request.
    pub fn next_request(&self) -> String {
        let r = self.requests.recv_timeout(WAIT).expect("the origin received a request");
        String::from_utf8_lossy(&r).into_owned()
    }

    /// Every request that arrives within `d` (waits the whole of `d`).
    pub fn requests_within(&self, d: Duration) -> Vec<String> {
        let end = Instant::now() + d;
        let mut got = Vec::new();
        while let Ok(r) = self
            .requests
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            got.push(String::from_utf8_lossy(&r).into_owned());
        }
        got
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn raw_origin_conn(mut s: TcpStream, tx: &mpsc::Sender<Vec<u8>>, script: &(dyn Fn(&str) -> Reply + Sync)) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // One request: head, then a Content-Length body if any.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let len = head
            .lines()
            .find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")
                    .map(|v| v.split(',').next().unwrap().trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let request: Vec<u8> = buf.drain(..head_end + len).collect();
        let _ = tx.send(request);
        match script(&head) {
            Reply::Send(b) => {
                if s.write_all(&b).is_err() {
                    return;
                }
            }
            Reply::SendThenClose(b) => {
                let _ = s.write_all(&b);
                return;
            }
            Reply::SendThenReset(b) => {
                let _ = s.write_all(&b);
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                return;
            }
            Reply::SendThenHold(b) => {
                let _ = s.write_all(&b);
                // Until the peer closes or WAIT passes.
                let _ = s.read(&mut chunk);
                return;
            }
        }
    }
}

/// A complete response with `body` and `Content-Length`.
pub fn ok_response(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// The path of a request head (`GET /x HTTP/1.1` -> `/x`).
pub fn request_path(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("")
}

/// A blocking mutual-TLS connection to a gateway with the Env's client certificate.
pub fn mtls(env: &Env, gw: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let cfg = msc_tls::config::client_config(
        &msc_tls::config::ClientCreds {
            ca: &env.path("ca.pem"),
            cert: &env.path("client.pem"),
            key: &env.path("client-key.pem"),
        },
        4,
    )
    .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    rustls::StreamOwned::new(conn, tcp(gw))
}

impl Env {
    /// Starts a gateway (the generated config) under `wrapper` (for example
    /// `unshare -m -- sh -c '...' ...` for a private mount namespace).
    pub fn gateway_wrapped(&self, name: &str, wrapper: &[&str]) -> (Proc, SocketAddr) {
        let base = std::fs::read_to_string(self.path("gateway.toml")).unwrap();
        let f = self.write(&format!("{name}.toml"), &base.replace("workers = 0", "workers = 2"));
        let p = Proc::start_wrapped(
            wrapper,
            &["gateway", "--config", f.to_str().unwrap()],
            self.dir.path(),
            name,
        );
        let a = p.addr_after("listening on ");
        (p, a)
    }
}

/// A third-party program (not msc) started for a test, ready once its
/// output (stdout and stderr, merged) shows a line containing a marker;
/// killed on drop.
pub struct Daemon {
    pub child: Child,
    pub ready_line: String,
}

impl Daemon {
    pub fn start(cmd: &mut Command, ready: &str) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?} (is it installed? test.sh installs it): {e}"));
        let (tx, rx) = mpsc::channel();
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            // Reads to the end even when nobody listens any more: a closed
            // pipe would kill the program (SIGPIPE) at its next log line.
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        let ready_line = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains(ready) => break l,
                Ok(l) => seen.push(l),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "{cmd:?} did not print '{ready}' within {WAIT:?}; output:\n{}",
                        seen.join("\n")
                    );
                }
            }
        };
        Daemon { child, ready_line }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client's `GET /status`, parsed.
pub fn status(ctl: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&msc::cli::status::fetch(ctl).unwrap()).unwrap()
}

/// The status entry of the gateway named `name`.
pub fn gw<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap()
}

/// Polls the status (bounded) until `cond` holds; returns that status.
pub fn wait_status(
    ctl: SocketAddr,
    what: &str,
    limit: Duration,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = status(ctl);
        if cond(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; status: {v:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until `addr` accepts connections; panics with `what`'s
/// log if `child` exits first or the wait runs out.
pub fn wait_port(child: &mut Child, addr: SocketAddr, what: &str, log: &Path) {
    let deadline = Instant::now() + WAIT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        let exited = child.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not accept on {addr} (exit: {exited:?}); its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finds a third-party program on PATH or in the sbin directories (Debian
/// puts squid and haproxy there); fails clearly when it is not installed.
pub fn program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(["/usr/sbin", "/sbin", "/usr/local/sbin"]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: apt-get install {package} (test.sh installs it)");
}

/// A third-party process (squid, haproxy): killed on drop.
pub struct Ext {
    pub child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Ext {
    /// Kills it now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Ext {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` as an unprivileged user when the tests run as root (squid
/// refuses to run as root, and its files then live in a directory that
/// user owns); as is otherwise.
fn unprivileged(cmd: &Path, dir: &Path) -> Command {
    use std::os::unix::fs::MetadataExt;
    // The directory was just created by this process: its owner is our uid.
    let root = std::fs::metadata(dir).unwrap().uid() == 0;
    if root {
        for e in walk(dir) {
            std::os::unix::fs::lchown(&e, Some(65534), Some(65534)).unwrap();
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Squid (squid-openssl) as an HTTPS forward proxy requiring a client
/// certificate from `env`'s CA, serving the Env's gateway certificate: a
/// stand-in for a corporate gateway that is not `msc gateway`. Its config,
/// pid file and logs live in a private temporary directory; it runs in the
/// foreground (`-N`) as a child of the test. `extra` is added before the
/// access rules (acls, `http_access deny ...`).
///
/// `sslcontext=` matters: without a session-id context, OpenSSL refuses to
/// resume a session whose client certificate it verified (an
/// `internal_error` alert on the client's next, resumed, handshake).
pub fn squid(env: &Env, extra: &str) -> (Ext, SocketAddr) {
    squid_at(env, free_port(), extra)
}

/// [`squid`] on a given port (to restart it where it was).
pub fn squid_at(env: &Env, port: u16, extra: &str) -> (Ext, SocketAddr) {
    let bin = program("squid", "squid-openssl");
    let tmp = tempfile::Builder::new().prefix("msc-squid").tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["ca.pem", "gateway.pem", "gateway-key.pem"] {
        std::fs::copy(env.path(f), dir.join(f)).unwrap();
    }
    let d = dir.display();
    let conf = format!(
        "https_port 127.0.0.1:{port} tls-cert={d}/gateway.pem tls-key={d}/gateway-key.pem \
         clientca={d}/ca.pem tls-cafile={d}/ca.pem sslcontext=msc-test \
         options=NO_SSLv3,NO_TLSv1,NO_TLSv1_1\n\
         pid_filename {d}/squid.pid\n\
         cache_log {d}/cache.log\n\
         logformat msc %>a:%>p %rm %ru %>Hs %<st\n\
         access_log stdio:{d}/access.log msc\n\
         cache deny all\n\
         cache_mem 8 MB\n\
         coredump_dir {d}\n\
         netdb_filename none\n\
         visible_hostname msc-test-squid\n\
         shutdown_lifetime 0 seconds\n\
         max_filedescriptors 4096\n\
         dns_timeout 2 seconds\n\
         acl CONNECT method CONNECT\n\
         {extra}\n\
         http_access allow all\n"
    );
    std::fs::write(dir.join("squid.conf"), conf).unwrap();
    let log = dir.join("cache.log");
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    let mut cmd = unprivileged(&bin, &dir);
    cmd.args(["-N", "-d", "1", "-f"])
        .arg(dir.join("squid.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut child = cmd.spawn().expect("spawn squid");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_port(&mut child, addr, "squid", &dir.join("stderr"));
    (
        Ext {
            child,
            dir,
            log,
            _tmp: tmp,
        },
        addr,
    )
}

impl Ext {
    /// Squid's access log lines (format `msc`: client ip:port, method, URL, status, bytes).
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// HAProxy in TCP mode in front of `backends`, round robin, with retries
/// and redispatch (a connection refused by a dead instance goes to another).
pub fn haproxy(backends: &[SocketAddr]) -> (Ext, SocketAddr) {
    let bin = program("haproxy", "haproxy");
    let tmp = tempfile::Builder::new().prefix("msc-haproxy").tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let port = free_port();
    let mut conf = format!(
        "global\n  maxconn 4096\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n  retries 3\n  option redispatch\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
         backend be\n  balance roundrobin\n"
    );
    for (i, b) in backends.iter().enumerate() {
        conf.push_str(&format!("  server g{i} {b} check inter 500ms fall 1 rise 1\n"));
    }
    std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
    let log = dir.join("stderr");
    let mut child = Command::new(bin)
        .args(["-db", "-f"])
        .arg(dir.join("haproxy.cfg"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn haproxy");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_port(&mut child, addr, "haproxy", &log);
    (
        Ext {
            child,
            dir,
            log,
            _tmp: tmp,
        },
        addr,
    )
}

/// A private D-Bus bus: a `dbus-daemon` with its own configuration and
/// socket in a temporary directory (tests never use the host's buses);
/// ready once it prints its address; killed on drop.
pub struct PrivateBus {
    child: Child,
    pub address: String,
    pub dir: tempfile::TempDir,
}

impl PrivateBus {
    pub fn start() -> PrivateBus {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus");
        let config = dir.path().join("session.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            // It complains that it cannot raise its descriptor limit: harmless here.
            .stderr(std::fs::File::create(dir.path().join("dbus-daemon.stderr")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("dbus-daemon is installed (test.sh installs dbus-daemon)");
        // Ready when it prints its address.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {address:?}");
        PrivateBus { child, address, dir }
    }

    /// `busctl --address=<this bus> args...`; its stdout.
    pub fn busctl(&self, args: &[&str]) -> String {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .expect("busctl is installed");
        assert!(
            out.status.success(),
            "busctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a headless browser (`cmd` fully set up) and returns its output. The
/// browser itself crashes now and then on a loaded 2-core machine (SIGSEGV at
/// start-up, seen in CI): one killed by a signal (no exit code, or 128 + the
/// signal from a wrapper such as `sh -c exec` or `timeout`, but not 124, a
/// timeout) is run again, at most twice more. A page that fails to render
/// still fails the caller's assertions.
pub fn browser_output(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null());
    let mut out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (test.sh installs it)"));
    for _ in 0..2 {
        if out.status.code().is_some_and(|c| c <= 128) {
            break;
        }
        eprintln!("browser killed by a signal ({}), running it again", out.status);
        out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    }
    out
}

impl Env {
    /// Issues a client certificate for `user` (`user@example.com`) from the
    /// test CA into `NAME.pem` / `NAME-key.pem`.
    pub fn issue_client(&self, name: &str, user: &str) {
        let ca = msc_tls::pki::Ca::from_pem(
            &std::fs::read_to_string(self.path("ca.pem")).unwrap(),
            &std::fs::read_to_string(self.path("ca-key.pem")).unwrap(),
        )
        .unwrap();
        let c = ca
            .issue_client(
                user,
                Some(&format!("{user}@example.com")),
                msc_tls::pki::Validity::days(1),
            )
            .unwrap();
        self.write(&format!("{name}.pem"), &c.cert_pem);
        self.write(&format!("{name}-key.pem"), &c.key_pem);
    }
}

/// The PAC a client serves (`GET /proxy.pac` on its control API).
pub fn served_pac(ctl: SocketAddr) -> String {
    let (status, head, body) = exchange(
        ctl,
        b"GET /proxy.pac HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}");
    String::from_utf8(body).unwrap()
}

/// What pactester (Debian `libpacparser1`) says `pac` returns for `url`;
/// fails clearly when pactester is missing or reports a script error.
pub fn pactester(pac: &str, url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("proxy.pac");
    std::fs::write(&f, pac).unwrap();
    let out = Command::new("pactester")
        .args(["-p", f.to_str().unwrap(), "-u", url])
        .output()
        .unwrap_or_else(|e| panic!("pactester not found ({e}): apt-get install libpacparser1 (test.sh installs it)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "pactester failed ({}): {stderr}\n{pac}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
