//! Signed code updates: the release manifest, its Ed25519 signature, version
//! order, the atomic install beside the running binary, and the install
//! state the client and `msc watchdog` share.
//!
//! - The administrator signs a release with `msc release sign` (see
//!   [`crate::cli::release`]): the artifact, `manifest.json` (version,
//!   sha256, size, download name, created) and `manifest.sig`, the detached
//!   Ed25519 signature (base64) over the manifest's exact bytes.
//! - The gateway serves them ([`crate::gateway::releases`]); the client's
//!   control plane checks them ([`crate::control::update`]) with the public
//!   key pinned in its configuration and installs the artifact here.
//! - `msc watchdog` runs `<install dir>/current` and rolls back to the
//!   previous binary if a new one does not pass its health check in time;
//!   under systemd `msc launch` ([`crate::agent::launch`]) runs `current`
//!   and the agent beside the client judges the trial.
//!
//! The version of record: a binary installed by the updater runs with the
//! version its signed manifest names (kept in the state file, matched by the
//! binary's path); any other binary runs with its build version.
//!
//! Nothing here hand-rolls cryptography: `ring` signs, verifies and hashes.

use std::cmp::Ordering;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The manifest's file name in a releases directory.
pub const MANIFEST: &str = "manifest.json";
/// The detached signature's file name in a releases directory.
pub const SIGNATURE: &str = "manifest.sig";
/// The gateway document names (under `/.well-known/msc/`).
pub const DOC_MANIFEST: &str = "release/manifest";
pub const DOC_SIGNATURE: &str = "release/manifest.sig";
/// The prefix of the artifact's document name (`release/<file>`).
pub const DOC_PREFIX: &str = "release/";
/// The symlink `msc watchdog` runs, in the install directory.
pub const CURRENT: &str = "current";
/// The state file in the install directory.
pub const STATE: &str = "state.json";
/// The lock `msc launch` holds (and hands to the client it execs) in the
/// install directory: the holder's pid, for the agent that restarts it.
pub const LAUNCH_LOCK: &str = "launch.lock";
/// The largest manifest accepted.
pub const MAX_MANIFEST: usize = 16 * 1024;
/// The largest signature file accepted.
pub const MAX_SIGNATURE: usize = 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A signed release, as `manifest.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: String,
    /// The artifact's SHA-256, lowercase hex.
    pub sha256: String,
    /// The artifact's size in bytes.
    pub size: u64,
    /// The artifact's name in the releases directory (`release/<file>`).
    pub file: String,
    /// When it was signed (RFC 3339).
    pub created: String,
}

impl Manifest {
    /// Parses and checks a manifest's fields.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid: {e}"))?;
        Version::parse(&m.version).map_err(|e| format!("manifest version: {e}"))?;
        if m.sha256.len() != 64
            || !m
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err("manifest sha256: not 64 lowercase hex digits".into());
        }
        if !valid_file_name(&m.file) {
            return Err(format!("manifest file: {:?} is not a plain file name", m.file));
        }
        if m.size == 0 {
            return Err("manifest size: must not be 0".into());
        }
        Ok(m)
    }
}

/// A plain file name: letters, digits, `.`, `_`, `-`; no leading dot.
pub fn valid_file_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A release version: `MAJOR.MINOR.PATCH` (fewer parts allowed, missing ones
/// are 0) with an optional `-pre` suffix, which sorts before the release
/// (semver's rule; pre-release parts compare numerically when both are
/// numbers, else as text). Build metadata (`+...`) is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    nums: [u64; 3],
    pre: Vec<String>,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version, String> {
        let s = s.trim();
        let core_pre = s.split('+').next().unwrap_or(s);
        let (core, pre) = match core_pre.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (core_pre, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return Err(format!("{s:?} is not MAJOR.MINOR.PATCH"));
        }
        let mut nums = [0u64; 3];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?} is not MAJOR.MINOR.PATCH"));
            }
            nums[i] = p.parse().map_err(|_| format!("{s:?}: {p} is too large"))?;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => {
                let ids: Vec<String> = p.split('.').map(str::to_owned).collect();
                if ids
                    .iter()
                    .any(|i| i.is_empty() || !i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                {
                    return Err(format!("{s:?}: bad pre-release part"));
                }
                ids
            }
        };
        Ok(Version { nums, pre })
    }
}

impl Ord for Version {
    fn cmp(&self, o: &Version) -> Ordering {
        self.nums
            .cmp(&o.nums)
            .then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&o.pre) {
                        let c = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if c != Ordering::Equal {
                            return c;
                        }
                    }
                    self.pre.len().cmp(&o.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Version) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Whether `candidate` is newer than `running` (both must parse).
pub fn is_newer(candidate: &str, running: &str) -> Result<bool, String> {
    Ok(Version::parse(candidate)? > Version::parse(running)?)
}

/// A pinned public key (`update.public_key`: base64 of the 32 raw bytes).
pub fn parse_public_key(b64: &str) -> Result<[u8; 32], String> {
    let raw = B64.decode(b64.trim()).map_err(|e| format!("not base64: {e}"))?;
    raw.try_into()
        .map_err(|r: Vec<u8>| format!("an Ed25519 public key is 32 bytes, this is {}", r.len()))
}

/// Verifies `sig` (the signature file: base64 text) over `manifest` with
/// `public_key`, then parses the manifest.
pub fn verify(manifest: &[u8], sig: &[u8], public_key: &[u8; 32]) -> Result<Manifest, String> {
    let sig = std::str::from_utf8(sig)
        .ok()
        .and_then(|s| B64.decode(s.trim()).ok())
        .ok_or("the signature file is not base64")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(manifest, &sig)
        .map_err(|_| "bad signature: the manifest was not signed with the pinned key (update.public_key)")?;
    Manifest::parse(manifest)
}

/// A new signing key: its PKCS#8 document (PEM) and public key (base64).
pub fn generate_key() -> Result<(String, String), String> {
    use ring::signature::KeyPair as _;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "key generation failed")?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| "key generation failed")?;
    Ok((pem(pkcs8.as_ref()), B64.encode(pair.public_key().as_ref())))
}

fn pem(der: &[u8]) -> String {
    let b = B64.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// Loads a signing key written by [`generate_key`].
pub fn load_key(text: &str) -> Result<ring::signature::Ed25519KeyPair, String> {
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = B64.decode(body).map_err(|_| "not a PEM private key")?;
    ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))
}

/// The signature file's text for `manifest`.
pub fn sign(key: &ring::signature::Ed25519KeyPair, manifest: &[u8]) -> String {
    format!("{}\n", B64.encode(key.sign(manifest).as_ref()))
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One installed release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub version: String,
    pub path: PathBuf,
}

/// A rollback `msc watchdog` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// Unix seconds.
    pub at: u64,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The install directory's `state.json`, shared by the client (which
/// installs) and `msc watchdog` (which confirms or rolls back). Written
/// atomically (temporary file, fsync, rename).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// What `current` points at.
    pub current: Option<Installed>,
    /// What ran before it (the rollback target).
    pub previous: Option<Installed>,
    /// `current` was just installed and has not passed a health check yet.
    #[serde(default)]
    pub trial: bool,
    /// How often `msc launch` started `current` during its trial: a second
    /// start means the release stopped before passing its health check
    /// (systemd restarted it), which ends in a rollback.
    #[serde(default)]
    pub trial_launches: u32,
    pub last_rollback: Option<Rollback>,
}

impl State {
    /// The state in `dir` (default if there is none or it is unreadable).
    pub fn load(dir: &Path) -> State {
        match fs::read(dir.join(STATE)) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!("update: {} is not valid ({e}); ignoring it", dir.join(STATE).display());
                State::default()
            }),
            Err(_) => State::default(),
        }
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(dir, STATE, &body, 0o644)
    }

    /// The version of record of the binary at `exe`: the signed manifest's
    /// if the updater installed it (in `dir`), else `None` (a binary from
    /// elsewhere, e.g. the package's, runs with its build version, even if
    /// it was replaced since it was recorded as a previous release).
    pub fn version_of(&self, dir: &Path, exe: &Path) -> Option<&str> {
        let exe = fs::canonicalize(exe).ok()?;
        let dir = fs::canonicalize(dir).ok()?;
        if !exe.starts_with(&dir) {
            return None;
        }
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find(|i| fs::canonicalize(&i.path).ok().as_deref() == Some(exe.as_path()))
            .map(|i| i.version.as_str())
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `dir/name` atomically: a temporary file in `dir`, fsync, `mode`,
/// rename, then fsync of the directory.
pub fn write_atomic(dir: &Path, name: &str, body: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut tmp = tempfile::Builder::new().prefix(".msc-tmp-").tempfile_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Points `dir/current` at `target` atomically (a new symlink renamed over it).
pub fn switch_current(dir: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{CURRENT}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, dir.join(CURRENT))?;
    sync_dir(dir)
}

/// Installs a verified artifact as `dir/msc-<version>` (mode 0755, written
/// atomically), switches `current` to it, and records it in the state with
/// `running` (what runs now) as the previous release, on trial until
/// `msc watchdog` sees it healthy. Returns the installed path.
pub fn install(dir: &Path, m: &Manifest, body: &[u8], running: Installed) -> std::io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    // Absolute: `current` must name its target whatever the working directory.
    let dir = &fs::canonicalize(dir)?;
    let name = format!("msc-{}", m.version);
    write_atomic(dir, &name, body, 0o755)?;
    let path = dir.join(&name);
    let mut st = State::load(dir);
    st.previous = Some(running);
    st.current = Some(Installed {
        version: m.version.clone(),
        path: path.clone(),
    });
    st.trial = true;
    st.trial_launches = 0;
    // The state first: a watchdog that starts `current` must know it is on trial.
    st.save(dir)?;
    switch_current(dir, &path)?;
    // Older releases (neither the new one nor the rollback target) go.
    let keep: Vec<PathBuf> = [Some(&path), st.previous.as_ref().map(|p| &p.path)]
        .into_iter()
        .flatten()
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    for e in fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let old = e.file_name().to_str().is_some_and(|n| n.starts_with("msc-"))
            && fs::canonicalize(&p).is_ok_and(|c| !keep.contains(&c));
        if old && let Err(err) = fs::remove_file(&p) {
            tracing::warn!("update: cannot remove the old release {}: {err}", p.display());
        }
    }
    Ok(path)
}

/// Rolls `dir` back to the previous release (by `msc watchdog`): `current`
/// points at it again and the rollback is recorded. Returns the rollback.
pub fn roll_back(dir: &Path, reason: &str) -> std::io::Result<Option<Rollback>> {
    let mut st = State::load(dir);
    let (Some(cur), Some(prev)) = (st.current.clone(), st.previous.clone()) else {
        return Ok(None);
    };
    switch_current(dir, &prev.path)?;
    let rb = Rollback {
        at: now_secs(),
        from: cur.version,
        to: prev.version.clone(),
        reason: reason.to_owned(),
    };
    st.current = Some(prev);
    st.previous = None;
    st.trial = false;
    st.trial_launches = 0;
    st.last_rollback = Some(rb.clone());
    st.save(dir)?;
    Ok(Some(rb))
}

/// Ends the trial of `current` (it passed its health check).
pub fn confirm(dir: &Path) -> std::io::Result<()> {
    let mut st = State::load(dir);
    if st.trial {
        st.trial = false;
        st.trial_launches = 0;
        st.save(dir)?;
    }
    Ok(())
}

/// The release `dir/current` names, if it may be run: `current` is a
/// symlink to a file inside `dir` that `state.json` records as the current
/// release. Returns its canonical path and the state; else why not (one line).
pub fn launch_target(dir: &Path) -> Result<(PathBuf, State), String> {
    let link = dir.join(CURRENT);
    let target = fs::read_link(&link).map_err(|e| format!("no release installed ({}: {e})", link.display()))?;
    let real = fs::canonicalize(&link)
        .map_err(|e| format!("{} is dangling (-> {}: {e})", link.display(), target.display()))?;
    let root = fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "{} points at {}, outside the install directory",
            link.display(),
            real.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("{} is not a file", real.display()));
    }
    let st = State::load(dir);
    let recorded = st
        .current
        .as_ref()
        .and_then(|c| fs::canonicalize(&c.path).ok())
        .is_some_and(|c| c == real);
    if !recorded {
        return Err(format!(
            "{} is not the current release recorded in {}",
            real.display(),
            dir.join(STATE).display()
        ));
    }
    Ok((real, st))
}

/// The pid of the client `msc launch` started from `dir`, while it runs (it
/// holds [`LAUNCH_LOCK`]; a pid in a lock nobody holds is stale).
pub fn launched_pid(dir: &Path) -> Option<u32> {
    use std::io::Read as _;
    let mut f = fs::File::open(dir.join(LAUNCH_LOCK)).ok()?;
    match f.try_lock_shared() {
        Err(fs::TryLockError::WouldBlock) => {}
        _ => return None,
    }
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_order_like_semver() {
        assert!(v("1.2.10") > v("1.2.9"));
        assert!(v("2.0.0") > v("1.99.99"));
        assert!(v("1.0.0") > v("1.0.0-rc.1"));
        assert!(v("1.0.0-rc.2") > v("1.0.0-rc.1"));
        assert!(v("1.0.0-rc.10") > v("1.0.0-rc.9"));
        assert!(v("1.0.0-beta") > v("1.0.0-alpha"));
        assert!(v("1.0.0-alpha.1") > v("1.0.0-alpha"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(v("1.2.3+build5").cmp(&v("1.2.3")), Ordering::Equal);
        assert!(!is_newer("0.1.0", "0.1.0").unwrap());
        assert!(!is_newer("0.0.9", "0.1.0").unwrap());
        assert!(is_newer("0.1.1", "0.1.0").unwrap());
        for bad in ["", "a.b", "1..2", "1.2.3.4", "1.2.3-", "-1", "1.2.3-a b"] {
            assert!(Version::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    fn manifest(version: &str, body: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&Manifest {
            version: version.into(),
            sha256: sha256_hex(body),
            size: body.len() as u64,
            file: format!("msc-{version}"),
            created: "2026-11-30T00:00:00Z".into(),
        })
        .unwrap()
    }

    #[test]
    fn manifests_verify_only_with_the_pinned_key_and_exact_bytes() {
        let (key, public) = generate_key().unwrap();
        let (_, other_public) = generate_key().unwrap();
        let pair = load_key(&key).unwrap();
        let pk = parse_public_key(&public).unwrap();
        let m = manifest("1.2.3", b"binary");
        let sig = sign(&pair, &m);
        let got = verify(&m, sig.as_bytes(), &pk).unwrap();
        assert_eq!(got.version, "1.2.3");
        assert_eq!(got.size, 6);
        let e = verify(&m, sig.as_bytes(), &parse_public_key(&other_public).unwrap()).unwrap_err();
        assert!(e.contains("bad signature"), "{e}");
        let mut changed = m.clone();
        changed.push(b' ');
        assert!(
            verify(&changed, sig.as_bytes(), &pk)
                .unwrap_err()
                .contains("bad signature")
        );
        assert!(verify(&m, b"!!", &pk).unwrap_err().contains("not base64"));
        assert!(parse_public_key("AAAA").unwrap_err().contains("32 bytes"));
        // Signed but malformed: refused after the signature check.
        let bad = br#"{"version":"1.0","sha256":"x","size":1,"file":"a","created":""}"#;
        assert!(
            verify(bad, sign(&pair, bad).as_bytes(), &pk)
                .unwrap_err()
                .contains("sha256")
        );
        let bad = manifest("1.0.0", b"x");
        let bad = String::from_utf8(bad).unwrap().replace("msc-1.0.0", "../x");
        assert!(Manifest::parse(bad.as_bytes()).unwrap_err().contains("file"));
    }

    #[test]
    fn install_switches_current_atomically_and_rolls_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("releases");
        let old = dir.path().join("msc-old");
        fs::write(&old, b"old").unwrap();
        let running = Installed {
            version: "0.1.0".into(),
            path: old.clone(),
        };
        let m = Manifest::parse(&manifest("0.2.0", b"new binary")).unwrap();
        let p = install(&d, &m, b"new binary", running.clone()).unwrap();
        assert_eq!(p, d.join("msc-0.2.0"));
        assert_eq!(fs::read(&p).unwrap(), b"new binary");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::read_link(d.join(CURRENT)).unwrap(), p);
        let st = State::load(&d);
        assert!(st.trial);
        assert_eq!(st.previous.as_ref(), Some(&running));
        assert_eq!(st.version_of(&d, &d.join(CURRENT)), Some("0.2.0"));
        // The previous binary lives elsewhere: its build version counts.
        assert_eq!(st.version_of(&d, &old), None);
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        // A third release replaces the second; the first (running) one stays.
        let m3 = Manifest::parse(&manifest("0.3.0", b"third")).unwrap();
        let stale = d.join("msc-0.1.5");
        fs::write(&stale, b"stale").unwrap();
        install(&d, &m3, b"third", running.clone()).unwrap();
        assert!(!stale.exists() && !p.exists(), "older releases are removed");
        assert!(old.exists());
        let rb = roll_back(&d, "no health").unwrap().unwrap();
        assert_eq!((rb.from.as_str(), rb.to.as_str()), ("0.3.0", "0.1.0"));
        assert_eq!(fs::read_link(d.join(CURRENT)).unwrap(), old);
        let st = State::load(&d);
        assert!(!st.trial && st.previous.is_none());
        assert_eq!(st.last_rollback.unwrap().reason, "no health");
        // Nothing to roll back to any more.
        assert!(roll_back(&d, "again").unwrap().is_none());
    }
}
