//! The client's recent log lines, kept in memory for the support bundle
//! (`GET /logs` on the control API).
//!
//! A second `tracing` fmt layer (no colours) writes into a
//! `tracing_appender::non_blocking` writer whose background thread is the
//! only writer of the ring: a worker that logs only queues the formatted
//! line (lock-free), exactly as for stderr. The ring keeps the last
//! [`DEFAULT_LINES`] lines, each cut at [`MAX_LINE`] bytes.
//!
//! # Thread Safety
//! [`LogRing`] is shared by the log writer thread and the control thread
//! (readers); its lock is never taken on a worker.

#![expect(
    clippy::disallowed_types,
    reason = "the ring's lock is taken by the log writer thread and the control thread only, never by a worker"
)]

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, OnceLock};

/// Lines kept.
pub const DEFAULT_LINES: usize = 1000;
/// Longer lines are cut (with a marker).
pub const MAX_LINE: usize = 2048;

/// A bounded ring of log lines.
#[derive(Debug)]
pub struct LogRing {
    lines: std::sync::Mutex<VecDeque<String>>,
    cap: usize,
}

static GLOBAL: OnceLock<Arc<LogRing>> = OnceLock::new();

impl LogRing {
    pub fn new(cap: usize) -> LogRing {
        LogRing {
            lines: std::sync::Mutex::new(VecDeque::with_capacity(cap.min(64))),
            cap: cap.max(1),
        }
    }

    /// Appends one line (without its newline), dropping the oldest beyond the cap.
    pub fn push(&self, line: &str) {
        let mut line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" [...]");
        }
        let mut l = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if l.len() >= self.cap {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        let l = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        l.iter().cloned().collect()
    }
}

/// Makes `ring` the process's log ring (the first call wins) and returns it.
pub fn install(ring: LogRing) -> Arc<LogRing> {
    GLOBAL.get_or_init(|| Arc::new(ring)).clone()
}

/// The process's log ring, if logging into one was set up.
pub fn global() -> Option<&'static LogRing> {
    GLOBAL.get().map(|r| &**r)
}

/// An `io::Write` that splits what it is given into lines for a ring.
#[derive(Debug)]
pub struct RingWriter {
    ring: Arc<LogRing>,
    partial: Vec<u8>,
}

impl RingWriter {
    pub fn new(ring: Arc<LogRing>) -> RingWriter {
        RingWriter {
            ring,
            partial: Vec::new(),
        }
    }
}

impl Write for RingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for chunk in buf.split_inclusive(|&b| b == b'\n') {
            if chunk.ends_with(b"\n") {
                self.partial.extend_from_slice(chunk);
                self.ring.push(&String::from_utf8_lossy(&self.partial));
                self.partial.clear();
            } else if self.partial.len() < MAX_LINE * 2 {
                self.partial.extend_from_slice(chunk);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_cut_to_size() {
        let ring = Arc::new(LogRing::new(3));
        let mut w = RingWriter::new(ring.clone());
        w.write_all(b"one\ntwo\nthr").unwrap();
        w.write_all(b"ee\nfour\n").unwrap();
        assert_eq!(ring.lines(), ["two", "three", "four"]);
        let long = "é".repeat(MAX_LINE);
        ring.push(&long);
        let last = ring.lines().pop().unwrap();
        assert!(last.ends_with(" [...]") && last.len() <= MAX_LINE + 6, "{}", last.len());
    }
}
