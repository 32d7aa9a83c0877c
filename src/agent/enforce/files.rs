//! What enforcement changed, so that removal restores exactly what was there.
//!
//! Every file a backend writes goes through [`Files`]: before the first write
//! its original content (or its absence) is recorded in a state file under
//! the root (`var/lib/msc/enforce/state.json`), and every directory created
//! for it is recorded too. Removal writes the original back (or deletes the
//! file) and removes the directories msc created once they are empty; when
//! nothing is left to restore, the state file and its directories go too.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where the state lives, relative to the root.
pub const STATE: &str = "var/lib/msc/enforce/state.json";

/// A file's content before msc first wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "text", rename_all = "lowercase")]
pub enum Original {
    Absent,
    Text(String),
    /// Present but not kept (a generated binary file such as a compiled
    /// dconf database): restored by regenerating it.
    Binary,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Root-relative path -> its content before msc.
    #[serde(default)]
    originals: BTreeMap<String, Original>,
    /// Directories msc created (root-relative), in creation order.
    #[serde(default)]
    dirs: Vec<String>,
    /// Settings outside files (a user's GNOME value before msc): key -> value
    /// (`None`: was unset).
    #[serde(default)]
    values: BTreeMap<String, Option<String>>,
    /// Backends currently applied.
    #[serde(default)]
    applied: BTreeSet<String>,
}

impl State {
    fn is_empty(&self) -> bool {
        self.originals.is_empty() && self.values.is_empty() && self.applied.is_empty()
    }
}

/// Files under one root, and the record of what msc changed there.
#[derive(Debug)]
pub struct Files {
    root: PathBuf,
    state: State,
}

impl Files {
    /// Loads the state under `root` (none yet: empty).
    pub fn load(root: &Path) -> anyhow::Result<Files> {
        let p = root.join(STATE);
        let state = match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t).with_context(|| format!("{}: not a valid state file", p.display()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        Ok(Files {
            root: root.to_path_buf(),
            state,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The file's text; `None` if it does not exist.
    pub fn read(&self, rel: &str) -> anyhow::Result<Option<String>> {
        read_opt(&self.path(rel))
    }

    /// Records the file's current content as its original, unless already recorded.
    pub fn remember(&mut self, rel: &str) -> anyhow::Result<()> {
        if self.state.originals.contains_key(rel) {
            return Ok(());
        }
        let o = match std::fs::read(self.path(rel)) {
            Ok(b) => match String::from_utf8(b) {
                Ok(t) => Original::Text(t),
                Err(_) => Original::Binary,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Original::Absent,
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path(rel).display())),
        };
        self.state.originals.insert(rel.to_string(), o);
        Ok(())
    }

    /// Records that a generated file existed (or not), without keeping its bytes.
    pub fn remember_generated(&mut self, rel: &str) {
        if !self.state.originals.contains_key(rel) {
            let o = if self.path(rel).exists() {
                Original::Binary
            } else {
                Original::Absent
            };
            self.state.originals.insert(rel.to_string(), o);
        }
    }

    /// Recorded files (root-relative) for which `pick` is true.
    pub fn recorded(&self, pick: impl Fn(&str) -> bool) -> Vec<String> {
        self.state.originals.keys().filter(|k| pick(k)).cloned().collect()
    }

    pub fn original(&self, rel: &str) -> Option<&Original> {
        self.state.originals.get(rel)
    }

    /// Writes `text` (recording the original first, creating directories);
    /// returns whether the file changed.
    pub fn write(&mut self, rel: &str, text: &str) -> anyhow::Result<bool> {
        self.remember(rel)?;
        if self.read(rel)?.as_deref() == Some(text) {
            return Ok(false);
        }
        let p = self.path(rel);
        self.create_parents(&p)?;
        write_atomic(&p, text.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
        Ok(true)
    }

    /// Puts the file back as it was before msc (deleting it if it did not
    /// exist) and forgets it. A file never recorded is left alone.
    pub fn restore(&mut self, rel: &str) -> anyhow::Result<()> {
        let p = self.path(rel);
        match self.state.originals.get(rel) {
            None => {}
            Some(Original::Absent) => remove_file(&p)?,
            Some(Original::Text(t)) if read_opt(&p)?.as_deref() != Some(t.as_str()) => {
                let t = t.clone();
                self.create_parents(&p)?;
                write_atomic(&p, t.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
            }
            Some(Original::Text(_)) => {}
            // Regenerated by its backend.
            Some(Original::Binary) => {}
        }
        self.state.originals.remove(rel);
        self.prune_dirs();
        Ok(())
    }

    /// Forgets a file without touching it (its backend restored it).
    pub fn forget(&mut self, rel: &str) {
        self.state.originals.remove(rel);
        self.prune_dirs();
    }

    pub fn value(&self, key: &str) -> Option<&Option<String>> {
        self.state.values.get(key)
    }

    pub fn set_value(&mut self, key: &str, v: Option<String>) {
        self.state.values.entry(key.to_string()).or_insert(v);
    }

    pub fn forget_value(&mut self, key: &str) {
        self.state.values.remove(key);
    }

    /// Keys of saved values starting with `prefix`.
    pub fn values_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.state
            .values
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn is_applied(&self, backend: &str) -> bool {
        self.state.applied.contains(backend)
    }

    pub fn applied(&self) -> Vec<String> {
        self.state.applied.iter().cloned().collect()
    }

    pub fn set_applied(&mut self, backend: &str, on: bool) {
        if on {
            self.state.applied.insert(backend.to_string());
        } else {
            self.state.applied.remove(backend);
        }
    }

    /// Writes the state; with nothing left to restore, deletes it and the
    /// directories msc created.
    pub fn save(&mut self) -> anyhow::Result<()> {
        let p = self.path(STATE);
        if self.state.is_empty() {
            remove_file(&p)?;
            self.prune_dirs();
            return Ok(());
        }
        self.create_parents(&p)?;
        let text = serde_json::to_string_pretty(&self.state)? + "\n";
        write_atomic(&p, text.as_bytes()).with_context(|| format!("writing {}", p.display()))
    }

    fn create_parents(&mut self, p: &Path) -> anyhow::Result<()> {
        let Some(parent) = p.parent() else { return Ok(()) };
        let mut missing = Vec::new();
        let mut d = parent;
        while !d.exists() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(up) => d = up,
                None => break,
            }
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
            if let Ok(rel) = d.strip_prefix(&self.root) {
                self.state.dirs.push(rel.display().to_string());
            }
        }
        Ok(())
    }

    /// Removes the directories msc created that are now empty (deepest first).
    fn prune_dirs(&mut self) {
        let mut keep = Vec::new();
        for rel in self.state.dirs.iter().rev() {
            let p = self.root.join(rel);
            if std::fs::remove_dir(&p).is_err() && p.exists() {
                keep.push(rel.clone());
            }
        }
        keep.reverse();
        self.state.dirs = keep;
    }
}

pub fn read_opt(p: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(p) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

pub fn remove_file(p: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

/// Write to a temporary sibling, then rename: a reader (a browser starting)
/// never sees half a policy file. Mode 0644: browsers run as the users.
fn write_atomic(p: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = p.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".msc-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(p).map_err(|e| e.error)?;
    Ok(())
}
