//! One instance: a second `msc run` (or `msc gateway`) with the same
//! configuration file or one of the same ports refuses to start and names
//! the running one's pid.
//!
//! Each key (the canonical configuration path, each fixed TCP port) is an
//! exclusive `flock` on a file in the runtime directory. The kernel drops a
//! process's locks when it dies, however it dies (`kill -9` included), so no
//! stale lock ever blocks a restart; the files themselves stay (they are
//! empty but for the holder's pid) and are reused.
//!
//! Why ports too: the client's slot listeners use `SO_REUSEPORT`, so a second
//! copy of the same user could otherwise bind them and silently take half of
//! the connections.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Where the lock files live: `runtime.dir` from the configuration, else
/// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else
/// `$XDG_RUNTIME_DIR/msc`, else `/run/msc`.
pub fn runtime_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(d) = configured {
        return d.to_path_buf();
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = env("RUNTIME_DIRECTORY") {
        // systemd may list several, separated by ':'; the first is ours.
        let first = d.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        return PathBuf::from(first);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        return d.join("msc");
    }
    PathBuf::from("/run/msc")
}

/// What one lock stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The configuration file (canonical path).
    Config(PathBuf),
    /// A TCP port, with what needs it (`servers[0].http_port`, `listen`...).
    Port { port: u16, what: String },
    /// `msc watchdog` for this configuration (canonical path).
    Supervisor(PathBuf),
}

impl Key {
    fn file_name(&self) -> String {
        match self {
            Key::Config(p) => format!("config-{}.lock", short_hash(p)),
            Key::Port { port, .. } => format!("tcp-{port}.lock"),
            Key::Supervisor(p) => format!("watchdog-{}.lock", short_hash(p)),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Config(p) => write!(f, "the same configuration ({})", p.display()),
            Key::Port { port, what } => write!(f, "port {port} ({what})"),
            Key::Supervisor(p) => write!(f, "a watchdog for the same configuration ({})", p.display()),
        }
    }
}

/// Another msc holds one of the keys.
#[derive(Debug)]
pub struct AlreadyRunning {
    pub key: Key,
    /// The holder's pid, as it wrote it into the lock file.
    pub pid: Option<u32>,
    pub lock: PathBuf,
}

impl fmt::Display for AlreadyRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "another msc is already running")?;
        match self.pid {
            Some(p) => write!(f, " (pid {p})")?,
            None => write!(f, " (pid not yet recorded)")?,
        }
        write!(f, " with {}; lock {}", self.key, self.lock.display())
    }
}

impl std::error::Error for AlreadyRunning {}

/// Held locks; dropping this (or the process dying) releases them.
#[derive(Debug)]
pub struct InstanceLock {
    files: Vec<(PathBuf, File)>,
}

impl InstanceLock {
    /// The lock files held.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }
}

/// The keys of a client: its configuration and every fixed port it binds.
pub fn client_keys(cfg: &crate::config::client::ClientConfig) -> Vec<Key> {
    let mut keys = vec![config_key(&cfg.file)];
    for (i, s) in cfg.servers.iter().enumerate() {
        for (f, p) in [("http_port", Some(s.http_port)), ("https_port", s.https_port)] {
            if let Some(p) = p.filter(|&p| p != 0) {
                keys.push(Key::Port {
                    port: p,
                    what: format!("servers[{i}].{f}"),
                });
            }
        }
    }
    if cfg.control.port() != 0 {
        keys.push(Key::Port {
            port: cfg.control.port(),
            what: "control.listen".into(),
        });
    }
    keys
}

/// The keys of a gateway: its configuration and its listening port.
pub fn gateway_keys(cfg: &crate::config::gateway::GatewayConfig) -> Vec<Key> {
    let mut keys = vec![config_key(&cfg.file)];
    if cfg.listen.port() != 0 {
        keys.push(Key::Port {
            port: cfg.listen.port(),
            what: "listen".into(),
        });
    }
    keys
}

fn config_key(file: &Path) -> Key {
    Key::Config(canonical(file))
}

/// The key of `msc watchdog` for this configuration.
pub fn supervisor_key(file: &Path) -> Key {
    Key::Supervisor(canonical(file))
}

fn canonical(file: &Path) -> PathBuf {
    std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf())
}

fn short_hash(p: &Path) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, p.as_os_str().as_encoded_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes every lock in `dir` (created if missing, mode 0755) or fails on the
/// first one another process holds, naming it. Never blocks.
pub fn acquire(dir: &Path, keys: &[Key]) -> anyhow::Result<InstanceLock> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the runtime directory {} (set runtime.dir, or XDG_RUNTIME_DIR)",
                dir.display()
            )
        })?;
    let mut files = Vec::with_capacity(keys.len());
    for key in keys {
        let path = dir.join(key.file_name());
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("cannot open the instance lock {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(anyhow::Error::new(AlreadyRunning {
                    key: key.clone(),
                    pid: holder_pid(&mut f),
                    lock: path,
                }));
            }
            Err(TryLockError::Error(e)) => {
                return Err(anyhow::Error::new(e).context(format!("cannot lock {}", path.display())));
            }
        }
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())?;
        files.push((path, f));
    }
    Ok(InstanceLock { files })
}

fn holder_pid(f: &mut File) -> Option<u32> {
    let mut s = String::new();
    f.rewind().ok()?;
    f.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_named() {
        let d = tempfile::tempdir().unwrap();
        let keys = [
            Key::Config(PathBuf::from("/x/client.toml")),
            Key::Port {
                port: 3128,
                what: "servers[0].http_port".into(),
            },
        ];
        let held = acquire(d.path(), &keys).unwrap();
        assert_eq!(held.paths().count(), 2);
        // A second open file description conflicts with the first even in
        // one process: flock locks belong to the open file description.
        let e = acquire(d.path(), &keys[1..]).unwrap_err();
        let ar = e.downcast_ref::<AlreadyRunning>().unwrap();
        assert_eq!(ar.pid, Some(std::process::id()));
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        assert!(msg.contains("port 3128 (servers[0].http_port)"), "{msg}");
        drop(held);
        // Released: taken again at once.
        acquire(d.path(), &keys).unwrap();
    }

    #[test]
    fn runtime_dir_prefers_the_configured_one() {
        assert_eq!(runtime_dir(Some(Path::new("/tmp/x"))), PathBuf::from("/tmp/x"));
    }
}
