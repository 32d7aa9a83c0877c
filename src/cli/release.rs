//! `msc release keygen` and `msc release sign`: the administrator's side of
//! signed code updates (see [`crate::release`] and docs/fleet.md#releases-and-keys).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::release::{MANIFEST, Manifest, SIGNATURE, Version, write_atomic};

/// Writes a new Ed25519 signing key (PKCS#8, mode 0600) to `out` (which must
/// not exist) and returns the public key (base64) for `update.public_key`.
pub fn keygen(out: &Path) -> anyhow::Result<String> {
    let (private, public) = crate::release::generate_key().map_err(anyhow::Error::msg)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {} (an existing key is never overwritten)", out.display()))?;
    f.write_all(private.as_bytes())?;
    f.sync_all()?;
    Ok(public)
}

/// What `msc release sign` wrote.
#[derive(Debug)]
pub struct Signed {
    pub manifest: Manifest,
    pub artifact: PathBuf,
}

/// Signs `binary` as release `version` into `out`: the artifact as
/// `msc-<version>`, then `manifest.json` and its signature `manifest.sig`.
pub fn sign(key: &Path, version: &str, binary: &Path, out: &Path) -> anyhow::Result<Signed> {
    Version::parse(version).map_err(|e| anyhow::anyhow!("--version: {e}"))?;
    let key_text = fs::read_to_string(key).with_context(|| format!("cannot read the key {}", key.display()))?;
    if let Ok(meta) = fs::metadata(key) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: the signing key {} is readable by other users (mode {:o}); it should be 0600",
                key.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    let pair = crate::release::load_key(&key_text).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let body = fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    anyhow::ensure!(!body.is_empty(), "{} is empty", binary.display());
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let file = format!("msc-{version}");
    anyhow::ensure!(
        crate::release::valid_file_name(&file),
        "--version {version:?} makes no plain file name"
    );
    let manifest = Manifest {
        version: version.to_owned(),
        sha256: crate::release::sha256_hex(&body),
        size: body.len() as u64,
        file: file.clone(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let text = serde_json::to_vec_pretty(&manifest)?;
    // Check what we wrote parses as the client will parse it.
    Manifest::parse(&text).map_err(anyhow::Error::msg)?;
    write_atomic(out, &file, &body, 0o644)?;
    let sig = crate::release::sign(&pair, &text);
    // The signature first, then the manifest it signs: a reader between the
    // two sees a mismatch (refused, retried next check), never a new
    // manifest without its artifact.
    write_atomic(out, SIGNATURE, sig.as_bytes(), 0o644)?;
    write_atomic(out, MANIFEST, &text, 0o644)?;
    Ok(Signed {
        artifact: out.join(file),
        manifest,
    })
}
