//! The session-ticket keys file (`[tls] ticket_keys`): several `msc
//! gateway` instances behind an L4 load balancer read the same file, so a
//! TLS 1.3 session established with one resumes on any other.
//!
//! Format: one key per line, blank lines and `#` comments ignored:
//!
//! ```text
//! # <start, RFC 3339 UTC>  <key: 64 hex digits (32 random bytes)>
//! 2026-11-01T00:00:00Z 6f1c...e2
//! 2026-12-01T00:00:00Z 0b9a...47
//! ```
//!
//! A line with only a key starts at once (`openssl rand -hex 32 > keys`
//! is a valid file). The newest key whose start has passed seals new
//! tickets; every key in the file opens tickets, a superseded one until
//! `ticket_grace` after its successor's start (see
//! [`msc_tls::ticket_keys`]). The file is re-read every
//! `ticket_keys_check`: to rotate, append the next key with a start far
//! enough ahead that every instance has read it, and remove keys older
//! than the grace period at leisure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use msc_tls::ticket_keys::{KEY_LEN, KeySpec, SharedTicketer};

/// Parses a keys file's text; the reason names the line.
pub fn parse(text: &str) -> Result<Vec<KeySpec>, String> {
    let mut keys: Vec<(usize, KeySpec)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (start, key) = match (fields.next(), fields.next(), fields.next()) {
            (Some(k), None, None) => (None, k),
            (Some(s), Some(k), None) => (Some(s), k),
            _ => {
                return Err(format!(
                    "line {n}: expected '[START] KEY', found {} fields",
                    line.split_whitespace().count()
                ));
            }
        };
        let not_before = match start {
            None => SystemTime::UNIX_EPOCH,
            Some(s) => humantime::parse_rfc3339(s)
                .map_err(|_| format!("line {n}: '{s}' is not an RFC 3339 UTC time (e.g. 2026-12-01T00:00:00Z)"))?,
        };
        let secret = unhex(key).ok_or_else(|| {
            format!(
                "line {n}: the key is not {} hex digits ({KEY_LEN} random bytes, e.g. from `openssl rand -hex {KEY_LEN}`)",
                KEY_LEN * 2
            )
        })?;
        if let Some((m, _)) = keys.iter().find(|(_, k)| k.secret == secret) {
            return Err(format!("line {n}: the same key as line {m}"));
        }
        if let Some((m, _)) = keys.iter().find(|(_, k)| k.not_before == not_before) {
            return Err(format!("line {n}: starts at the same time as line {m}"));
        }
        keys.push((n, KeySpec { not_before, secret }));
    }
    if keys.is_empty() {
        return Err("no keys (one line per key: '[START] KEY')".into());
    }
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

fn unhex(s: &str) -> Option<[u8; KEY_LEN]> {
    let b = s.as_bytes();
    if b.len() != KEY_LEN * 2 {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (o, pair) in out.iter_mut().zip(b.chunks(2)) {
        let d = |c: u8| (c as char).to_digit(16);
        *o = u8::try_from(d(pair[0])? * 16 + d(pair[1])?).ok()?;
    }
    Some(out)
}

/// The keys file after one rotation step at `now`: the keys of `current`
/// (a file's text; `None` for a new file) whose grace period has not ended,
/// plus `new` starting at `now + start_in` (at once for a new file). Pure:
/// the caller picks the key and writes the file.
pub fn rotate(
    current: Option<&str>,
    now: SystemTime,
    start_in: Duration,
    grace: Duration,
    new: [u8; KEY_LEN],
) -> Result<String, String> {
    let mut keys = match current {
        Some(t) => parse(t)?,
        None => Vec::new(),
    };
    keys.sort_by_key(|k| k.not_before);
    // A key is dropped once its successor has sealed for `grace`.
    let starts: Vec<SystemTime> = keys.iter().map(|k| k.not_before).collect();
    let mut kept: Vec<KeySpec> = keys
        .into_iter()
        .enumerate()
        .filter(|(i, _)| starts.get(i + 1).is_none_or(|&next| now < next + grace))
        .map(|(_, k)| k)
        .collect();
    let start = if kept.is_empty() { now } else { now + start_in };
    if kept.iter().any(|k| k.secret == new) {
        return Err("the new key is already in the file".into());
    }
    kept.retain(|k| k.not_before != start);
    kept.push(KeySpec {
        not_before: start,
        secret: new,
    });
    let mut out = String::from(
        "# msc gateway session-ticket keys (docs/config.md): START (RFC 3339 UTC) KEY (hex)\n\
         # The newest started key seals tickets; every key listed opens them.\n",
    );
    for k in &kept {
        let hex: String = k.secret.iter().map(|b| format!("{b:02x}")).collect();
        if k.not_before == SystemTime::UNIX_EPOCH {
            out.push_str(&format!("{hex}\n"));
        } else {
            out.push_str(&format!("{} {hex}\n", humantime::format_rfc3339_seconds(k.not_before)));
        }
    }
    // What the gateway will read must parse.
    parse(&out)?;
    Ok(out)
}

/// `msc ticket-keys rotate`: rotates `path` in place (written to a
/// temporary file beside it, mode 0600, then renamed: a gateway never reads
/// half a file). Returns a summary line.
pub fn rotate_file(path: &Path, start_in: Duration, grace: Duration) -> anyhow::Result<String> {
    use anyhow::Context;
    use ring::rand::SecureRandom;
    let current = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut key = [0u8; KEY_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("no randomness for a new key"))?;
    let now = SystemTime::now();
    let text = rotate(current.as_deref(), now, start_in, grace, key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".ticket-keys")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    use std::io::Write;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    // tempfile creates it 0600.
    tmp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    let n = text.lines().filter(|l| !l.starts_with('#')).count();
    Ok(if current.is_none() {
        format!("{}: new file with one key, sealing now", path.display())
    } else {
        format!(
            "{}: {n} keys; the new one starts sealing at {}",
            path.display(),
            humantime::format_rfc3339_seconds(now + start_in)
        )
    })
}

/// Reads and parses a keys file.
pub fn load(path: &Path) -> Result<Vec<KeySpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse(&text)
}

/// The thread that re-reads the keys file; stops when dropped.
#[derive(Debug)]
pub struct Reloader {
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Re-reads `path` every `every`; a changed file replaces the keys, a bad
/// one is logged and the keys in use stay.
pub fn watch(path: PathBuf, tickets: Arc<SharedTicketer>, every: Duration) -> std::io::Result<Reloader> {
    let (tx, rx) = flume::bounded::<()>(1);
    let mut last = std::fs::read(&path).ok();
    let thread = std::thread::Builder::new().name("ticket-keys".into()).spawn(move || {
        // recv_timeout is the pause between checks; the sender's drop ends the loop.
        while let Err(flume::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
            let now = std::fs::read(&path).ok();
            if now.is_none() || now == last {
                if now.is_none() && last.is_some() {
                    tracing::error!("ticket keys: cannot read {}: keeping the keys in use", path.display());
                    last = None;
                }
                continue;
            }
            last = now;
            let text = String::from_utf8_lossy(last.as_deref().unwrap_or_default()).into_owned();
            match parse(&text).and_then(|k| {
                let n = k.len();
                tickets.set_keys(k).map(|()| n).map_err(|e| e.to_string())
            }) {
                Ok(n) => tracing::info!(
                    "ticket keys reloaded from {}: {n} keys, sealing with key {}",
                    path.display(),
                    tickets.sealing_id(SystemTime::now())
                ),
                Err(e) => tracing::error!("ticket keys: {}: {e}: keeping the keys in use", path.display()),
            }
        }
    })?;
    Ok(Reloader {
        stop: Some(tx),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "FFEEDDCCBBAA99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn parses_keys_with_and_without_start() {
        let text = format!("# keys\n\n{K1}\n2026-12-01T00:00:00Z {K2}  # next\n");
        let keys = parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].not_before, SystemTime::UNIX_EPOCH);
        assert_eq!(keys[0].secret[31], 0x1f);
        assert_eq!(keys[1].secret[0], 0xff);
        assert_eq!(
            keys[1].not_before,
            humantime::parse_rfc3339("2026-12-01T00:00:00Z").unwrap()
        );
    }

    #[test]
    fn rotation_adds_a_key_ahead_and_drops_keys_past_their_grace() {
        let h = Duration::from_secs(3600);
        let t0 = humantime::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        // A new file: one key, sealing at once.
        let f1 = rotate(None, t0, h, 6 * h, [1; KEY_LEN]).unwrap();
        let k1 = parse(&f1).unwrap();
        assert_eq!(k1.len(), 1);
        assert_eq!(k1[0].not_before, t0);
        // Rotation: the next key starts an hour ahead; the old one stays.
        let f2 = rotate(Some(&f1), t0 + 24 * h, h, 6 * h, [2; KEY_LEN]).unwrap();
        let k2 = parse(&f2).unwrap();
        assert_eq!(k2.len(), 2, "{f2}");
        assert_eq!(k2[1].not_before, t0 + 25 * h);
        // Within the grace period after key 2 started, key 1 is kept...
        let f3 = rotate(Some(&f2), t0 + 30 * h, h, 6 * h, [3; KEY_LEN]).unwrap();
        assert_eq!(parse(&f3).unwrap().len(), 3, "{f3}");
        // ... and dropped after it.
        let f4 = rotate(Some(&f3), t0 + 32 * h, h, 6 * h, [4; KEY_LEN]).unwrap();
        let k4 = parse(&f4).unwrap();
        assert!(k4.iter().all(|k| k.secret != [1; KEY_LEN]), "{f4}");
        assert_eq!(k4.last().unwrap().secret, [4; KEY_LEN]);
        // A file of bare keys (start: at once) rotates too.
        let bare = format!("{K1}\n");
        let f5 = rotate(Some(&bare), t0, h, 6 * h, [5; KEY_LEN]).unwrap();
        assert!(f5.contains(K1) && parse(&f5).unwrap().len() == 2, "{f5}");
        assert!(
            rotate(Some("junk\n"), t0, h, h, [6; KEY_LEN])
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, want) in [
            ("", "no keys"),
            ("# only a comment\n", "no keys"),
            ("abcd\n", "line 1: the key is not 64 hex digits"),
            (&format!("\n{}zz\n", &K1[..62]), "line 2: the key is not 64 hex"),
            (&format!("yesterday {K1}\n"), "line 1: 'yesterday' is not an RFC 3339"),
            (&format!("{K1}\n{K1}\n"), "line 2: the same key as line 1"),
            (&format!("{K1}\n{K2}\n"), "line 2: starts at the same time as line 1"),
            (&format!("a b {K1}\n"), "line 1: expected '[START] KEY', found 3 fields"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
