//! Configuration profiles the gateway serves its clients (docs/fleet.md):
//! the `config` document chosen by the identity in the client certificate
//! (a user's own profile, else the first group listing the user, else the
//! default), and the administrator's PAC as the `pac` document.
//!
//! Every file is checked when the gateway starts (a broken one stops the
//! start, naming file, key and reason). A thread re-reads files whose
//! modification time or size changed; a broken new version is logged and
//! the previous good one keeps being served. Workers read an immutable
//! snapshot (arc-swap): no lock on the data path. Tags come from content.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Deserialize;

use super::docs::{Doc, Provider, Refused};
use crate::config::remote::check_profile;
use crate::config::{Check, ConfigError};

/// `[profiles]` in gateway.toml.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfiles {
    default: Option<String>,
    #[serde(default)]
    users: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    groups: Vec<RawGroup>,
    pac: Option<String>,
    check: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    name: String,
    members: Vec<String>,
    profile: String,
}

/// A group of identities sharing a profile.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    /// Certificate principals (e-mail, else CN, else URI), compared exactly.
    pub members: Vec<String>,
    pub profile: PathBuf,
}

/// Validated `[profiles]`.
#[derive(Clone, Debug)]
pub struct ProfileSettings {
    pub default: Option<PathBuf>,
    /// Principal -> profile file.
    pub users: Vec<(String, PathBuf)>,
    pub groups: Vec<Group>,
    /// The administrator's PAC, served as `pac` to every client.
    pub pac: Option<PathBuf>,
    /// How often files are checked for changes.
    pub check: Duration,
    /// The documents as read at load (`None` for none configured).
    loaded: Arc<Snapshot>,
    /// Stand-in certificate files profiles are validated with.
    stand_in: [PathBuf; 3],
}

impl ProfileSettings {
    /// Every profile file, each once.
    fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        let all = self
            .default
            .iter()
            .chain(self.users.iter().map(|(_, p)| p))
            .chain(self.groups.iter().map(|g| &g.profile));
        for p in all {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }

    /// The profile file for `user`, if any.
    fn profile_for(&self, user: &str) -> Option<&Path> {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_path())
            .or_else(|| {
                self.groups
                    .iter()
                    .find(|g| g.members.iter().any(|m| m == user))
                    .map(|g| g.profile.as_path())
            })
            .or(self.default.as_deref())
    }
}

/// One file as last read.
#[derive(Clone, Debug)]
struct Loaded {
    /// The last good version (every file is good at start, or the
    /// gateway does not start).
    doc: Doc,
    /// Modification time and size when last looked at (good or not).
    seen: (Option<SystemTime>, u64),
}

#[derive(Clone, Debug, Default)]
struct Snapshot {
    files: HashMap<PathBuf, Loaded>,
}

fn stamp(p: &Path) -> (Option<SystemTime>, u64) {
    std::fs::metadata(p).map_or((None, 0), |m| (m.modified().ok(), m.len()))
}

/// Reads and checks a profile: the reason names file, key and why.
fn load_profile(p: &Path, stand_in: &[PathBuf; 3]) -> Result<Doc, ConfigError> {
    let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
        file: p.to_path_buf(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    check_profile(p, &text, [&stand_in[0], &stand_in[1], &stand_in[2]])?;
    Ok(Doc::new(text.into_bytes(), "application/toml"))
}

/// Reads and checks the administrator's PAC (what the gateway can check
/// without knowing the client: size, UTF-8, its structure).
fn load_pac(p: &Path) -> Result<Doc, ConfigError> {
    let err = |reason: String| ConfigError {
        file: p.to_path_buf(),
        key: String::new(),
        reason,
    };
    let bytes = std::fs::read(p).map_err(|e| err(format!("cannot read: {e}")))?;
    crate::control::remote::check_pac_structure(&bytes).map_err(err)?;
    Ok(Doc::new(bytes, "application/x-ns-proxy-autoconfig"))
}

fn load(path: &Path, is_pac: bool, stand_in: &[PathBuf; 3]) -> Result<Loaded, ConfigError> {
    let seen = stamp(path);
    let doc = if is_pac {
        load_pac(path)?
    } else {
        load_profile(path, stand_in)?
    };
    Ok(Loaded { doc, seen })
}

pub(crate) fn validate(
    c: &Check<'_>,
    raw: RawProfiles,
    tls: &crate::config::gateway::GatewayTls,
) -> Result<ProfileSettings, ConfigError> {
    let key_err = |key: String, e: ConfigError| c.err(key, e.to_string());
    let mut users = Vec::new();
    for (u, f) in &raw.users {
        if u.trim().is_empty() {
            return Err(c.err("profiles.users", "an empty user name"));
        }
        users.push((u.clone(), c.file(&format!("profiles.users.\"{u}\""), f)?));
    }
    let mut groups = Vec::new();
    for (i, g) in raw.groups.into_iter().enumerate() {
        if g.name.trim().is_empty() {
            return Err(c.err(format!("profiles.groups[{i}].name"), "must not be empty"));
        }
        if g.members.is_empty() {
            return Err(c.err(format!("profiles.groups[{i}].members"), "lists nobody"));
        }
        let profile = c.file(&format!("profiles.groups[{i}].profile"), &g.profile)?;
        groups.push(Group {
            name: g.name,
            members: g.members,
            profile,
        });
    }
    let default = match &raw.default {
        Some(f) => Some(c.file("profiles.default", f)?),
        None => None,
    };
    let pac = match &raw.pac {
        Some(f) => Some(c.file("profiles.pac", f)?),
        None => None,
    };
    let check = c.duration_or("profiles.check", &raw.check, Duration::from_secs(5))?;
    if check < Duration::from_millis(100) {
        return Err(c.err("profiles.check", "must be at least 100ms"));
    }
    let stand_in = [tls.client_ca.clone(), tls.cert.clone(), tls.key.clone()];
    let mut s = ProfileSettings {
        default,
        users,
        groups,
        pac,
        check,
        loaded: Arc::default(),
        stand_in,
    };
    let mut snap = Snapshot::default();
    for f in s.files() {
        let key = if s.default.as_ref() == Some(&f) {
            "profiles.default".to_string()
        } else if let Some((u, _)) = s.users.iter().find(|(_, p)| *p == f) {
            format!("profiles.users.\"{u}\"")
        } else {
            let i = s.groups.iter().position(|g| g.profile == f).unwrap_or(0);
            format!("profiles.groups[{i}].profile")
        };
        let l = load(&f, false, &s.stand_in).map_err(|e| key_err(key, e))?;
        snap.files.insert(f, l);
    }
    if let Some(p) = &s.pac {
        let l = load(p, true, &s.stand_in).map_err(|e| key_err("profiles.pac".into(), e))?;
        snap.files.insert(p.clone(), l);
    }
    s.loaded = Arc::new(snap);
    Ok(s)
}

/// The `config` and `pac` documents.
///
/// # Thread Safety
/// `Send + Sync`: workers read the current snapshot lock-free; one thread
/// (ended when this is dropped) publishes new ones.
#[derive(Debug)]
pub struct Profiles {
    settings: ProfileSettings,
    snap: Arc<ArcSwap<Snapshot>>,
    /// Dropping it ends the re-reading thread.
    _stop: flume::Sender<()>,
}

impl Profiles {
    /// Serves `settings` and starts re-reading its files.
    pub fn start(settings: &ProfileSettings) -> std::io::Result<Profiles> {
        let snap = Arc::new(ArcSwap::new(settings.loaded.clone()));
        let (tx, rx) = flume::bounded::<()>(1);
        let (s, published) = (settings.clone(), snap.clone());
        std::thread::Builder::new().name("profiles".into()).spawn(move || {
            // recv_timeout is the pause between checks; the sender's drop ends the loop.
            while let Err(flume::RecvTimeoutError::Timeout) = rx.recv_timeout(s.check) {
                if let Some(next) = recheck(&s, &published.load()) {
                    published.store(Arc::new(next));
                }
            }
        })?;
        Ok(Profiles {
            settings: settings.clone(),
            snap,
            _stop: tx,
        })
    }
}

/// A new snapshot if any file changed (a broken new version keeps the
/// previous good document, and is logged once per change).
fn recheck(s: &ProfileSettings, cur: &Snapshot) -> Option<Snapshot> {
    let mut next: Option<Snapshot> = None;
    let mut files: Vec<(PathBuf, bool)> = s.files().into_iter().map(|f| (f, false)).collect();
    if let Some(p) = &s.pac {
        files.push((p.clone(), true));
    }
    for (f, is_pac) in files {
        let Some(old) = cur.files.get(&f) else { continue };
        let now = stamp(&f);
        if now == old.seen {
            continue;
        }
        let what = if is_pac { "administrator PAC" } else { "profile" };
        let mut l = old.clone();
        l.seen = now;
        match load(&f, is_pac, &s.stand_in) {
            Ok(new) if new.doc.etag == old.doc.etag => {}
            Ok(new) => {
                tracing::info!("{what} {} reloaded (ETag {})", f.display(), new.doc.etag);
                l = new;
            }
            Err(e) => tracing::error!(
                "{what} rejected: {e}; still serving the previous version (ETag {})",
                old.doc.etag
            ),
        }
        next.get_or_insert_with(|| cur.clone()).files.insert(f, l);
    }
    next
}

impl Provider for Profiles {
    fn get(&self, name: &str, user: &str) -> Option<Result<Doc, Refused>> {
        let snap = self.snap.load();
        let file = match name {
            "config" => match self.settings.profile_for(user) {
                Some(f) => f,
                None => {
                    return Some(Err(Refused {
                        status: 404,
                        reason: format!("no configuration profile for {user} and no default profile"),
                    }));
                }
            },
            "pac" => match &self.settings.pac {
                Some(f) => f.as_path(),
                None => {
                    return Some(Err(Refused {
                        status: 404,
                        reason: "no administrator PAC on this gateway (profiles.pac)".into(),
                    }));
                }
            },
            _ => return None,
        };
        Some(snap.files.get(file).map(|l| l.doc.clone()).ok_or_else(|| Refused {
            status: 503,
            reason: "profile not loaded".into(),
        }))
    }
}
