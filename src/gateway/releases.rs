//! The gateway's releases provider (`releases.dir`): serves the signed
//! release in that directory, as `msc release sign` wrote it, to every
//! authenticated client:
//! - `release/manifest` (`manifest.json`), `release/manifest.sig`;
//! - `release/<file>`: the artifact the current manifest names, and only it.
//!
//! Bodies are kept in memory and re-read only when a file's modification
//! time, size or inode changes, so a request costs a `stat`, not a read;
//! the gateway asks providers on its blocking pool, off the worker threads.
//! `msc release sign` replaces files by rename (a new inode each time).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::docs::{Doc, Provider, Refused};
use crate::release::{DOC_MANIFEST, DOC_PREFIX, DOC_SIGNATURE, MANIFEST, SIGNATURE};

/// Per file: (modification time, size, inode) and the body as served.
type Cache = HashMap<String, ((SystemTime, u64, u64), Doc)>;

/// Serves `dir`'s signed release.
///
/// # Thread Safety
/// Shared by every worker: the cache is an immutable map swapped whole
/// (arc-swap); two workers missing at once both read the file, harmlessly.
#[derive(Debug)]
pub struct Releases {
    dir: PathBuf,
    cache: ArcSwap<Cache>,
}

impl Releases {
    pub fn new(dir: PathBuf) -> Releases {
        Releases {
            dir,
            cache: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    fn file(&self, name: &str, content_type: &'static str) -> Result<Doc, Refused> {
        let path = self.dir.join(name);
        let missing = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Refused {
                    status: 404,
                    reason: format!("no release {name} on this gateway"),
                }
            } else {
                tracing::warn!("releases: cannot read {}: {e}", path.display());
                Refused {
                    status: 503,
                    reason: format!("release {name} unreadable on this gateway"),
                }
            }
        };
        let meta = std::fs::metadata(&path).map_err(missing)?;
        // The inode too: a file replaced by rename within one tick of the
        // file-system clock, with the same size, is still seen as changed.
        let key = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
            std::os::unix::fs::MetadataExt::ino(&meta),
        );
        if let Some((k, doc)) = self.cache.load().get(name)
            && *k == key
        {
            return Ok(doc.clone());
        }
        let body = std::fs::read(&path).map_err(missing)?;
        let doc = Doc::new(body, content_type);
        let entry = (key, doc.clone());
        self.cache.rcu(|c| {
            let mut c = (**c).clone();
            c.insert(name.to_owned(), entry.clone());
            c
        });
        Ok(doc)
    }
}

impl Provider for Releases {
    fn get(&self, name: &str, _user: &str) -> Option<Result<Doc, Refused>> {
        let rest = name.strip_prefix(DOC_PREFIX)?;
        Some(match name {
            DOC_MANIFEST => self.file(MANIFEST, "application/json"),
            DOC_SIGNATURE => self.file(SIGNATURE, "text/plain"),
            _ => {
                // Only the artifact the current manifest names.
                let named = self
                    .file(MANIFEST, "application/json")
                    .ok()
                    .and_then(|m| crate::release::Manifest::parse(&m.body).ok())
                    .is_some_and(|m| m.file == rest);
                if named {
                    self.file(rest, "application/octet-stream")
                } else {
                    Err(Refused {
                        status: 404,
                        reason: format!("no release {rest} on this gateway"),
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn serves_the_manifest_its_signature_and_only_the_named_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let r = Releases::new(dir.path().to_path_buf());
        assert_eq!(r.get(DOC_MANIFEST, "u").unwrap().unwrap_err().status, 404);
        assert!(r.get("config", "u").is_none());
        let body = b"artifact".to_vec();
        let m = crate::release::Manifest {
            version: "1.0.0".into(),
            sha256: crate::release::sha256_hex(&body),
            size: 8,
            file: "msc-1.0.0".into(),
            created: "now".into(),
        };
        std::fs::write(dir.path().join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        std::fs::write(dir.path().join("msc-1.0.0"), &body).unwrap();
        std::fs::write(dir.path().join("key.pem"), b"secret").unwrap();
        let a = r.get("release/msc-1.0.0", "u").unwrap().unwrap();
        assert_eq!(&*a.body, b"artifact");
        assert_eq!(r.get("release/key.pem", "u").unwrap().unwrap_err().status, 404);
        // Cached until the file changes.
        let again = r.get("release/msc-1.0.0", "u").unwrap().unwrap();
        assert!(Arc::ptr_eq(&a.body, &again.body));
        std::fs::write(dir.path().join("msc-1.0.0"), b"artifact, longer").unwrap();
        let changed = r.get("release/msc-1.0.0", "u").unwrap().unwrap();
        assert_eq!(&*changed.body, b"artifact, longer");
    }
}
