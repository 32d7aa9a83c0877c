//! The control socket: the only way to change the client's state (disable,
//! enable). A Unix stream socket, so the kernel names the caller
//! (`SO_PEERCRED`): a web page cannot reach it, and a local user is checked
//! against `control.trusted_users` / `control.trusted_groups` (root always
//! passes). Anyone who can reach the socket may read the state.
//!
//! Protocol (docs/control.md): one JSON object per line each way. The client
//! sends one request and reads one reply, then the server closes:
//! `{"cmd":"state"}`, `{"cmd":"disable","for":"30m","reason":"TEXT"}`,
//! `{"cmd":"enable"}`, `{"cmd":"reload"}` ->
//! `{"ok":true,"message":"...","state":{...}}` or `{"ok":false,"message":"why"}`.
//!
//! The server runs on its own thread (blocking accept, one short-lived
//! thread per connection, bounded); the decision is made on the control
//! thread, which receives each authenticated request as a [`Command`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::state::ClientState;
use crate::config::client::Trusted;

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The current state (anyone).
    State,
    /// Turn protection off for a while (trusted callers, if the admin allows).
    Disable {
        #[serde(rename = "for")]
        duration: String,
        reason: String,
    },
    /// Turn protection back on (trusted callers).
    Enable,
    /// Re-read the configuration file and apply it (trusted callers); the
    /// reply says what changed, or why it was rejected.
    Reload,
    /// The client's recent log lines (trusted callers: support bundles).
    /// Not on the TCP control API, which any local program can read.
    Logs,
    /// The proxy-settings enforcement's health, reported by `msc watchdog`
    /// after each of its runs (trusted callers: it runs as root):
    /// `failing` is the reason while enforcing fails, `null` once it works.
    Enforcement { failing: Option<String> },
}

impl Request {
    /// Whether the request changes anything or reads the logs (and so
    /// needs a trusted caller).
    pub fn changes_state(&self) -> bool {
        !matches!(self, Request::State)
    }
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// What happened, or why not.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ClientState>,
}

impl Reply {
    pub fn refused(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            message: message.into(),
            state: None,
        }
    }
}

/// Who is on the other end, as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// The user name, or `uid N` if the user database does not know it.
    pub name: String,
    /// `Ok(why)` if trusted, `Err(why not)`.
    pub trust: Result<String, String>,
}

impl Caller {
    /// `alice (uid 1000)` (or `uid 1000` for an unknown user), for logs and the state.
    pub fn label(&self) -> String {
        if self.name.starts_with("uid ") {
            self.name.clone()
        } else {
            format!("{} (uid {})", self.name, self.uid)
        }
    }
}

/// An authenticated request for the control thread.
#[derive(Debug)]
pub struct Command {
    pub req: Request,
    pub caller: Caller,
    pub reply: flume::Sender<Reply>,
}

/// Whether `uid`/`gid` may change the state under `t`: root; a listed user
/// (name or uid); the caller's primary group (from the kernel) or a group
/// the user database lists the user in, when that group is listed.
pub fn trust(uid: u32, gid: u32, t: &Trusted) -> (String, Result<String, String>) {
    use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let name = user.as_ref().map_or_else(|| format!("uid {uid}"), |u| u.name.clone());
    if uid == 0 {
        return (name, Ok("root".into()));
    }
    let uid_s = uid.to_string();
    if let Some(u) = t
        .users
        .iter()
        .find(|u| **u == uid_s || user.as_ref().is_some_and(|x| x.name == **u))
    {
        return (name, Ok(format!("'{u}' is in control.trusted_users")));
    }
    let mut gids = vec![gid];
    if let Some(u) = &user
        && let Ok(c) = std::ffi::CString::new(u.name.clone())
        && let Ok(g) = getgrouplist(&c, u.gid)
    {
        gids.extend(g.into_iter().map(Gid::as_raw));
    }
    for g in &t.groups {
        let id = match g.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => Group::from_name(g).ok().flatten().map(|g| g.gid.as_raw()),
        };
        if id.is_some_and(|id| gids.contains(&id)) {
            return (name, Ok(format!("member of '{g}' (control.trusted_groups)")));
        }
    }
    let who = if user.is_some() {
        format!("{name} (uid {uid})")
    } else {
        name.clone()
    };
    let why =
        format!("{who} is not trusted: neither in control.trusted_users nor in a group of control.trusted_groups");
    (name, Err(why))
}

/// Binds the control socket at `path`. A socket file nobody answers on is a
/// leftover and replaced; one that answers belongs to a running client.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("control.socket: cannot create {}", dir.display()))?;
        // Others must reach the socket to be told whether they are trusted.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control.socket: {} is in use by another process (another msc client?)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("control.socket: cannot remove the stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("control.socket: cannot bind {}", path.display()))?;
    // Anyone may connect; what they may do is decided per caller.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("control.socket: cannot set the mode of {}", path.display()))?;
    Ok(l)
}

/// The running socket server.
#[derive(Debug)]
pub struct SocketServer {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SocketServer {
    /// Stops accepting and removes the socket file.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept. If that fails (the file was removed), the
        // thread stays parked in accept until the process exits: it is not
        // joined, so stopping never hangs.
        if UnixStream::connect(&self.path).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// At most this many connections are served at once; more are closed.
const MAX_CONNS: usize = 16;
/// The longest request line.
const MAX_LINE: u64 = 4096;

/// Serves `listener` on a new thread; requests go to the control thread on `tx`.
pub fn serve(
    listener: UnixListener,
    path: PathBuf,
    trusted: Trusted,
    tx: flume::Sender<Command>,
) -> std::io::Result<SocketServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let trusted = Arc::new(trusted);
    let active = Arc::new(AtomicUsize::new(0));
    let thread = std::thread::Builder::new()
        .name("msc-control-sock".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (trusted, tx, active) = (trusted.clone(), tx.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("msc-control-conn".into())
                    .spawn(move || {
                        handle(conn, &trusted, &tx);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    tracing::warn!("control socket: cannot start a thread for a connection");
                }
            }
        })?;
    Ok(SocketServer {
        path,
        stop,
        thread: Some(thread),
    })
}

fn handle(conn: UnixStream, trusted: &Trusted, tx: &flume::Sender<Command>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let reply = match answer(&conn, trusted, tx) {
        Ok(r) | Err(r) => r,
    };
    let mut line = serde_json::to_string(&reply).unwrap_or_else(|_| "{\"ok\":false}".into());
    line.push('\n');
    let mut w = &conn;
    let _ = w.write_all(line.as_bytes());
}

fn answer(conn: &UnixStream, trusted: &Trusted, tx: &flume::Sender<Command>) -> Result<Reply, Reply> {
    let cred = nix::sys::socket::getsockopt(conn.as_raw_fd(), nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| Reply::refused(format!("cannot identify the caller: {e}")))?;
    let (uid, gid) = (cred.uid(), cred.gid());
    let mut line = String::new();
    BufReader::new(conn.take(MAX_LINE))
        .read_line(&mut line)
        .map_err(|e| Reply::refused(format!("cannot read the request: {e}")))?;
    if !line.ends_with('\n') {
        return Err(Reply::refused(format!(
            "the request must be one JSON line of at most {MAX_LINE} bytes"
        )));
    }
    let req: Request = serde_json::from_str(line.trim())
        .map_err(|e| Reply::refused(format!("bad request: {e} (see docs/control.md, \"Control socket\")")))?;
    let (name, trust) = trust(uid, gid, trusted);
    let caller = Caller {
        uid,
        gid,
        pid: cred.pid(),
        name,
        trust,
    };
    if req.changes_state()
        && let Err(why) = &caller.trust
    {
        tracing::warn!(
            "control socket: refused {:?} from {} (pid {}): {why}",
            req,
            caller.label(),
            caller.pid
        );
        return Err(Reply::refused(format!("refused: {why}")));
    }
    let (rtx, rrx) = flume::bounded(1);
    tx.send(Command {
        req,
        caller,
        reply: rtx,
    })
    .map_err(|_| Reply::refused("the client is stopping"))?;
    rrx.recv_timeout(Duration::from_secs(30))
        .map_err(|_| Reply::refused("the control plane did not answer"))
}

/// Sends one request to the socket at `path` and reads the reply (the CLI side).
pub fn request(path: &Path, req: &Request) -> anyhow::Result<Reply> {
    let mut s = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot connect to the control socket {} (is the client running? see control.socket)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(40)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(s.take(1 << 20)).read_line(&mut answer)?;
    serde_json::from_str(answer.trim()).with_context(|| format!("malformed answer from {}: {answer:?}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let r: Request = serde_json::from_str(r#"{"cmd":"disable","for":"30m","reason":"x"}"#).unwrap();
        assert_eq!(
            r,
            Request::Disable {
                duration: "30m".into(),
                reason: "x".into()
            }
        );
        assert_eq!(serde_json::to_string(&Request::Enable).unwrap(), r#"{"cmd":"enable"}"#);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"disable","for":"30m"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
        assert!(!Request::State.changes_state() && Request::Enable.changes_state());
    }

    #[test]
    fn root_is_trusted_and_lists_are_checked() {
        let none = Trusted::default();
        assert!(trust(0, 0, &none).1.is_ok());
        let (name, t) = trust(65534, 65534, &none);
        assert!(t.unwrap_err().contains("not trusted"), "{name}");
        let by_uid = Trusted {
            users: vec!["65534".into()],
            groups: vec![],
        };
        assert!(trust(65534, 65534, &by_uid).1.is_ok());
        assert!(trust(65533, 65534, &by_uid).1.is_err());
        let by_gid = Trusted {
            users: vec![],
            groups: vec!["4242".into()],
        };
        assert!(trust(65533, 4242, &by_gid).1.is_ok());
        assert!(trust(65533, 4243, &by_gid).1.is_err());
    }
}
