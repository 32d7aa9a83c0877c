//! The sending half: seals application data, KeyUpdates and close_notify
//! in pooled buffers and writes them as a [`Sink`]; `absorb` reads a plain
//! socket straight into record buffers (up to 15 records per read) and seals
//! them where they lie.

use std::io;
use std::ops::Range;
use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, OwnedWriteHalf};
use monoio::net::TcpStream;
use msc_io::buf;
use msc_io::iov::Slots;
use msc_io::stream::{Sink, Source};

use super::{Shared, invalid};
use crate::record::{CT_ALERT, CT_APPLICATION_DATA, CT_HANDSHAKE, HEADER_LEN, MAX_PLAINTEXT, OVERHEAD, RecordKey};

/// Distance between consecutive full records in a batch.
const RECORD_STRIDE: usize = MAX_PLAINTEXT + OVERHEAD;
/// Room for a KeyUpdate record ahead of a batch.
const KEY_UPDATE_ROOM: usize = OVERHEAD + 5;
/// Plaintext one direct read takes at most: as many whole records as fit a
/// bulk buffer after a KeyUpdate (15 with 256 KiB buffers).
const BATCH_PLAINTEXT: usize = (buf::BUF_SIZE - KEY_UPDATE_ROOM) / RECORD_STRIDE * MAX_PLAINTEXT;

/// Plaintext a direct read into a small buffer takes at most.
const SMALL_PLAINTEXT: usize = buf::SMALL_SIZE - KEY_UPDATE_ROOM - OVERHEAD;

/// The sending half: seals records in a pooled buffer and writes them.
pub struct TlsWriter {
    pub(super) half: OwnedWriteHalf<TcpStream>,
    pub(super) key: RecordKey,
    pub(super) shared: Rc<Shared>,
    pub(super) closed: bool,
}

impl std::fmt::Debug for TlsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsWriter")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl TlsWriter {
    /// Rotates the sending key (TLS 1.3 KeyUpdate) before the next record.
    pub fn rotate_key(&self) {
        self.shared.key_update_requested.set(true);
    }

    /// Whether the next record must follow a KeyUpdate: the peer asked for
    /// one, or this key is close to its limit.
    fn rotation_due(&self) -> bool {
        self.shared.key_update_requested.get() || self.key.seq() >= self.shared.rotate_after
    }

    /// Seals a KeyUpdate into the room reserved at `rec[at..at + KEY_UPDATE_ROOM]`
    /// and switches to the next key. Called only once the records that follow
    /// it are certain to be sent (after the read that fills them), so a read
    /// cancelled meanwhile leaves the key and the pending request untouched.
    fn seal_key_update_at(&mut self, rec: &mut [u8], at: usize) -> io::Result<()> {
        let body = at + HEADER_LEN;
        // KeyUpdate(update_not_requested)
        rec[body..body + 5].copy_from_slice(&[24, 0, 0, 1, 0]);
        self.key.seal_in(rec, at, 5, CT_HANDSHAKE).map_err(invalid)?;
        self.shared.key_update_requested.set(false);
        let (seq, secrets) = self.shared.kernel.borrow_mut().update_tx().map_err(invalid)?;
        self.key = RecordKey::new(&secrets, seq).map_err(invalid)?;
        Ok(())
    }

    /// Appends a sealed KeyUpdate to `rec` and switches to the next key, if
    /// the peer asked for one or this key is close to its limit.
    fn maybe_rotate(&mut self, rec: &mut Vec<u8>) -> io::Result<()> {
        let requested = self.shared.key_update_requested.replace(false);
        if !requested && self.key.seq() < self.shared.rotate_after {
            return Ok(());
        }
        let start = rec.len();
        rec.extend_from_slice(&[0; HEADER_LEN]);
        // KeyUpdate(update_not_requested)
        rec.extend_from_slice(&[24, 0, 0, 1, 0]);
        self.key.seal(rec, start, CT_HANDSHAKE).map_err(invalid)?;
        let (seq, secrets) = self.shared.kernel.borrow_mut().update_tx().map_err(invalid)?;
        self.key = RecordKey::new(&secrets, seq).map_err(invalid)?;
        Ok(())
    }

    /// Seals `data` (any length) as application-data records into `rec`.
    fn seal_into(&mut self, rec: &mut Vec<u8>, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_PLAINTEXT) {
            self.maybe_rotate(rec)?;
            let start = rec.len();
            rec.extend_from_slice(&[0; HEADER_LEN]);
            rec.extend_from_slice(chunk);
            self.key.seal(rec, start, CT_APPLICATION_DATA).map_err(invalid)?;
        }
        Ok(())
    }

    async fn send(&mut self, rec: Vec<u8>) -> io::Result<()> {
        let (res, rec) = self.half.write_all(rec).await;
        buf::give(rec);
        res.map(drop)
    }

    /// Encrypts and sends `data`, copying it into sealed records.
    async fn send_copy(&mut self, data: &[u8]) -> io::Result<()> {
        // Seal up to ~48 KiB per write so large writes take few syscalls.
        const BATCH: usize = 3 * MAX_PLAINTEXT;
        if data.is_empty() {
            return Ok(());
        }
        for part in data.chunks(BATCH) {
            let mut rec = buf::take_for(part.len() + 2 * OVERHEAD);
            if let Err(e) = self.seal_into(&mut rec, part) {
                buf::give(rec);
                return Err(e);
            }
            self.send(rec).await?;
        }
        Ok(())
    }
}

impl Sink for TlsWriter {
    async fn write_slice(&mut self, b: Vec<u8>, range: Range<usize>) -> (io::Result<()>, Vec<u8>) {
        let res = self.send_copy(&b[range]).await;
        (res, b)
    }

    async fn write_bytes(&mut self, data: &[u8]) -> io::Result<()> {
        self.send_copy(data).await
    }

    async fn close_write(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let mut rec = buf::take_small();
        rec.extend_from_slice(&[0; HEADER_LEN]);
        // close_notify (level warning)
        rec.extend_from_slice(&[1, 0]);
        if let Err(e) = self.key.seal(&mut rec, 0, CT_ALERT) {
            buf::give(rec);
            return Err(invalid(e));
        }
        self.send(rec).await?;
        self.half.shutdown().await
    }

    /// Reads plaintext straight into a record buffer, seals it in place and
    /// sends it: no copy between the plain socket and the TLS socket.
    async fn absorb<S: Source>(&mut self, src: &mut S, max: usize) -> io::Result<usize> {
        let Some(plain) = src.as_plain().filter(|p| p.data().is_empty()) else {
            if src.data().is_empty() && src.fill().await? == 0 {
                return Ok(0);
            }
            let n = src.data().len().min(max);
            src.forward(n, self).await?;
            return Ok(n);
        };
        // Wait for the peer first: an idle direction must not pin a buffer.
        plain.ready().await?;
        if plain.is_eof_now() {
            // A FIN seen without a buffer: nothing to seal.
            return Ok(0);
        }
        // A small buffer unless the last read filled its request: a closing
        // or quiet connection (on io_uring its FIN shows up as a read of 0)
        // costs 4 KiB for a moment, a bulk transfer switches to big batches
        // after its first read.
        let bulk = plain.is_bulk();
        let mut rec = if bulk { buf::take() } else { buf::take_small() };
        // Room for a KeyUpdate, sealed only after the read (below): the read
        // may be cancelled (an idle relay, the other direction ending), and
        // the key must not have moved on without the KeyUpdate on the wire.
        let rotate = self.rotation_due();
        if rotate {
            rec.resize(KEY_UPDATE_ROOM, 0);
        }
        let start = rec.len();
        let want = max.min(if bulk { BATCH_PLAINTEXT } else { SMALL_PLAINTEXT });
        let (res, mut rec) = if want <= MAX_PLAINTEXT {
            rec.extend_from_slice(&[0; HEADER_LEN]);
            let from = start + HEADER_LEN;
            debug_assert!(rec.capacity() >= from + want + OVERHEAD);
            let (res, slice) = plain.read_direct(rec.slice_mut(from..from + want)).await;
            (res, slice.into_inner())
        } else {
            // Many records' worth in one readv, each record's plaintext
            // where it will be sealed.
            let slots = Slots::strided(rec, start + HEADER_LEN, MAX_PLAINTEXT, RECORD_STRIDE, want);
            let (res, slots) = plain.read_direct_v(slots).await;
            let (mut rec, got) = slots.finish();
            match res {
                Ok(n) if n > 0 => {
                    // Every record but the last is full and sealed where it
                    // lies; the last one ends the buffer and seals below.
                    debug_assert_eq!(n, got);
                    if rotate && let Err(e) = self.seal_key_update_at(&mut rec, 0) {
                        buf::give(rec);
                        return Err(e);
                    }
                    for i in 0..(n - 1) / MAX_PLAINTEXT {
                        let at = start + i * RECORD_STRIDE;
                        if let Err(e) = self.key.seal_in(&mut rec, at, MAX_PLAINTEXT, CT_APPLICATION_DATA) {
                            buf::give(rec);
                            return Err(invalid(e));
                        }
                    }
                    (Ok(n), rec)
                }
                other => (other, rec),
            }
        };
        let last_start = match &res {
            Ok(n) if *n > MAX_PLAINTEXT => start + (n - 1) / MAX_PLAINTEXT * RECORD_STRIDE,
            _ => start,
        };
        let n = match res {
            Ok(0) => {
                // EOF: nothing to seal; a pending KeyUpdate stays pending.
                buf::give(rec);
                return Ok(0);
            }
            Ok(n) => {
                // The single-record path: the KeyUpdate goes ahead of it now.
                // (The many-record path sealed it before its full records.)
                if rotate
                    && want <= MAX_PLAINTEXT
                    && let Err(e) = self.seal_key_update_at(&mut rec, 0)
                {
                    buf::give(rec);
                    return Err(e);
                }
                n
            }
            Err(e) => {
                buf::give(rec);
                return Err(e);
            }
        };
        if let Err(e) = self.key.seal(&mut rec, last_start, CT_APPLICATION_DATA) {
            buf::give(rec);
            return Err(invalid(e));
        }
        self.send(rec).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;

    #[test]
    fn buffers_fit_a_sealed_record() {
        const { assert!(buf::BUF_SIZE >= HEADER_LEN * 2 + 5 + MAX_PLAINTEXT + OVERHEAD * 2) };
    }

    #[test]
    fn small_buffers_fit_a_sealed_record_after_a_key_update() {
        const { assert!(SMALL_PLAINTEXT >= 4000) };
        const { assert!(buf::SMALL_SIZE >= KEY_UPDATE_ROOM + HEADER_LEN + SMALL_PLAINTEXT + 1 + record::TAG_LEN) };
    }

    #[test]
    fn buffers_fit_a_sealed_batch_after_a_key_update() {
        const { assert!(BATCH_PLAINTEXT >= 3 * MAX_PLAINTEXT) };
        const { assert!(buf::BUF_SIZE >= KEY_UPDATE_ROOM + BATCH_PLAINTEXT / MAX_PLAINTEXT * RECORD_STRIDE) };
        const { assert!(msc_io::iov::MAX_SLOTS >= BATCH_PLAINTEXT / MAX_PLAINTEXT) };
    }
}
