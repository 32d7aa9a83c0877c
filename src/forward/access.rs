//! The access log: one line per request (the gateway's record of who
//! visited what; the client's, by default, only of what went DIRECT).
//!
//! Workers hand finished records to a dedicated writer thread through a
//! bounded channel and never block on it (if the writer falls behind, records
//! are dropped and counted). The writer formats the timestamp and does the
//! blocking writes.
//!
//! Line format (space separated):
//! `TIME USER METHOD TARGET STATUS BYTES_UP BYTES_DOWN DURATION_MS`
//! e.g. `2026-11-25T22:30:00.123Z alice@example.com GET http://example.com/ 200 0 612 3.2`

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Where access log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stderr,
    /// A file, rotated when it reaches `max_bytes`: the full file becomes
    /// `PATH.1` (replacing the previous one) and a new file starts, so the
    /// log never takes more than twice `max_bytes`.
    File {
        path: std::path::PathBuf,
        max_bytes: u64,
    },
    Off,
}

/// One request, as a worker saw it.
#[derive(Debug)]
pub struct Record {
    pub at: SystemTime,
    pub user: Arc<str>,
    pub method: String,
    pub target: String,
    pub status: u16,
    pub up: u64,
    pub down: u64,
    pub duration: Duration,
    /// How the request was routed, when the log distinguishes routes (client).
    pub route: Option<Arc<str>>,
}

/// A cheap, cloneable handle to the access log.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: Option<flume::Sender<Record>>,
    dropped: Arc<AtomicU64>,
}

const CAPACITY: usize = 64 * 1024;

impl AccessLog {
    /// A log that discards everything.
    pub fn off() -> AccessLog {
        AccessLog {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts the writer thread for `target`.
    pub fn start(target: &AccessLogTarget) -> io::Result<(AccessLog, Option<JoinHandle<()>>)> {
        let out = match target {
            AccessLogTarget::Off => return Ok((AccessLog::off(), None)),
            AccessLogTarget::Stderr => Out::Stderr(io::stderr()),
            AccessLogTarget::File { path, max_bytes } => Out::File(Rotating::open(path.clone(), *max_bytes)?),
        };
        let (tx, rx) = flume::bounded::<Record>(CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let d2 = dropped.clone();
        let h = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out, d2))?;
        Ok((AccessLog { tx: Some(tx), dropped }, Some(h)))
    }

    /// Whether records are written anywhere (callers skip building them if not).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a record; never blocks.
    pub fn log(&self, r: Record) {
        if let Some(tx) = &self.tx
            && tx.try_send(r).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An access log file that rotates at a size bound.
struct Rotating {
    path: std::path::PathBuf,
    max_bytes: u64,
    file: std::fs::File,
    written: u64,
}

impl Rotating {
    fn open(path: std::path::PathBuf, max_bytes: u64) -> io::Result<Rotating> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let written = file.metadata().map_or(0, |m| m.len());
        Ok(Rotating {
            path,
            max_bytes,
            file,
            written,
        })
    }

    /// Moves the full file aside (`PATH.1`) and starts a new one.
    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        *self = Rotating::open(self.path.clone(), self.max_bytes)?;
        Ok(())
    }
}

impl Write for Rotating {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            // A failed rotation keeps appending: losing lines is worse.
            if let Err(e) = self.rotate() {
                tracing::warn!("access log {}: cannot rotate: {e}", self.path.display());
                self.written = 0;
            }
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Out {
    Stderr(io::Stderr),
    File(Rotating),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Stderr(s) => s.write(buf),
            Out::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Stderr(s) => s.flush(),
            Out::File(f) => f.flush(),
        }
    }
}

fn writer(rx: flume::Receiver<Record>, mut out: Out, dropped: Arc<AtomicU64>) {
    let mut line = String::with_capacity(256);
    let mut reported = 0;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(r) = next {
            line.clear();
            format_record(&r, &mut line);
            let _ = out.write_all(line.as_bytes());
            next = rx.try_recv().ok();
        }
        let d = dropped.load(Ordering::Relaxed);
        if d != reported {
            let _ = writeln!(out, "# access log: {} records dropped (writer too slow)", d - reported);
            reported = d;
        }
        let _ = out.flush();
    }
}

/// Formats one line (with trailing newline).
pub fn format_record(r: &Record, line: &mut String) {
    use std::fmt::Write as _;
    let t = time::OffsetDateTime::from(r.at);
    let _ = write!(
        line,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} {} {} {} {} {} {:.1}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond(),
        r.user,
        r.method,
        r.target,
        r.status,
        r.up,
        r.down,
        r.duration.as_secs_f64() * 1000.0,
    );
    if let Some(route) = &r.route {
        line.push(' ');
        line.push_str(route);
    }
    line.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_at_their_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut f = Rotating::open(path.clone(), 1000).unwrap();
        // The writer hands over one whole line per write.
        let mut line = vec![b'x'; 99];
        line.push(b'\n');
        for _ in 0..35 {
            f.write_all(&line).unwrap();
        }
        f.flush().unwrap();
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("access.log.1")).unwrap().len();
        assert!(now <= 1000 && old <= 1000, "{now} {old}");
        assert_eq!((now + old) % 100, 0, "lines are never split across files");
        // Only one old file is kept: the log never exceeds twice the bound.
        assert!(!dir.path().join("access.log.2").exists());
        // Reopening continues the current file's count.
        let f2 = Rotating::open(path.clone(), 1000).unwrap();
        assert_eq!(f2.written, now);
    }

    #[test]
    fn line_format() {
        let r = Record {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_110_000_123),
            user: "alice@example.com".into(),
            method: "GET".into(),
            target: "http://example.com/".into(),
            status: 200,
            up: 0,
            down: 612,
            duration: Duration::from_micros(3210),
            route: None,
        };
        let mut s = String::new();
        format_record(&r, &mut s);
        assert_eq!(
            s,
            "2025-11-25T22:33:20.123Z alice@example.com GET http://example.com/ 200 0 612 3.2\n"
        );
    }
}
