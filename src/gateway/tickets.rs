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
