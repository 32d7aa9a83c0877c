//! The receiving half: reads ciphertext into a pooled buffer, opens records
//! where they lie and serves their plaintext as a [`Source`]; hands
//! post-handshake messages (session tickets, key updates) to rustls's kernel
//! connection. A record that breaks the rules fails the connection.

use std::io;
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, OwnedReadHalf};
use monoio::net::TcpStream;
use msc_io::buf;
use msc_io::stream::{Peek, Sink, Source, peer_spoke, wait_data};

use super::{Kernel, Shared, invalid};
use crate::record::{self, CT_ALERT, CT_APPLICATION_DATA, CT_HANDSHAKE, HEADER_LEN, MAX_RECORD, RecordKey};

/// The receiving half: decrypts records in place and serves their plaintext.
pub struct TlsReader {
    pub(super) half: OwnedReadHalf<TcpStream>,
    /// Layout: `[.. plain ..][.. unused ..][cipher_start .. len)`; `plain.end <= cipher_start`.
    pub(super) buf: Vec<u8>,
    pub(super) plain: Range<usize>,
    pub(super) cipher_start: usize,
    pub(super) key: RecordKey,
    /// Post-handshake handshake bytes not yet forming a whole message.
    pub(super) hs: Vec<u8>,
    pub(super) eof: bool,
    /// A record failed after earlier records' plaintext was returned: the
    /// error the next fill reports.
    pub(super) failed: Option<io::Error>,
    /// The socket was seen readable and not read since: skip the next wait.
    pub(super) readable: bool,
    /// The last read filled its buffer: a bulk transfer, use a big buffer.
    pub(super) bulk: bool,
    pub(super) shared: Rc<Shared>,
}

impl std::fmt::Debug for TlsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReader")
            .field("plain", &self.plain)
            .field("cipher_start", &self.cipher_start)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl TlsReader {
    /// Processes what the peer sent while this connection sat idle (session
    /// tickets, key updates), without waiting for anything. Returns whether
    /// the connection is still usable: no application data arrived, and the
    /// peer has not closed it.
    pub async fn refresh_idle(&mut self) -> io::Result<bool> {
        if self.failed.is_some() {
            return Ok(false);
        }
        loop {
            while !self.buf.is_empty() {
                match self.open_one()? {
                    Some(0) if self.eof => return Ok(false),
                    Some(0) => {}
                    // Application data on an idle tunnel: it is out of step.
                    Some(_) => return Ok(false),
                    None => break,
                }
            }
            if self.eof {
                return Ok(false);
            }
            if !peer_spoke(&self.half) {
                self.release_if_idle();
                return Ok(true);
            }
            // Bytes or an EOF are waiting: this read completes at once.
            self.readable = false;
            if self.buf.capacity() == 0 {
                self.buf = buf::take_small();
                self.plain = 0..0;
                self.cipher_start = 0;
            }
            self.make_room();
            let len = self.buf.len();
            let cap = self.buf.capacity();
            let (res, slice) = self.half.read(std::mem::take(&mut self.buf).slice_mut(len..cap)).await;
            self.buf = slice.into_inner();
            if res? == 0 {
                return Ok(false);
            }
        }
    }

    /// Right after a handshake: waits up to `wait` for the server's first
    /// post-handshake flight (its session tickets) and processes it, so the
    /// next connection can resume. Holds no buffer while waiting.
    pub async fn settle(&mut self, wait: Duration) -> io::Result<bool> {
        match monoio::time::timeout(wait, wait_data(&self.half)).await {
            Ok(Ok(_)) => self.refresh_idle().await,
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(true),
        }
    }

    fn release_if_idle(&mut self) {
        if self.plain.is_empty() && self.cipher_start == self.buf.len() && self.buf.capacity() > 0 {
            buf::give(std::mem::take(&mut self.buf));
            self.plain = 0..0;
            self.cipher_start = 0;
        }
    }

    /// Decrypts the next buffered record, if complete. Returns the number of
    /// plaintext bytes it added, `None` if more ciphertext is needed.
    fn open_one(&mut self) -> io::Result<Option<usize>> {
        let Some(len) = record::complete_record(&self.buf[self.cipher_start..]).map_err(invalid)? else {
            return Ok(None);
        };
        let at = self.cipher_start;
        // With no plaintext pending, the record opens where it lies. Behind
        // pending plaintext (the records before it in this read, or a head
        // the consumer kept), it decrypts straight to the end of that
        // plaintext, over the 22 bytes of record overhead in between, in the
        // same pass: data() stays contiguous without a memmove.
        let dst = if self.plain.is_empty() {
            at + HEADER_LEN
        } else {
            self.plain.end
        };
        let (ct, r) = self.key.open_to(&mut self.buf, at..at + len, dst).map_err(invalid)?;
        self.cipher_start += len;
        match ct {
            CT_APPLICATION_DATA => {
                let n = r.len();
                if self.plain.is_empty() {
                    self.plain = r;
                } else {
                    self.plain.end = r.end;
                }
                Ok(Some(n))
            }
            CT_HANDSHAKE => {
                self.hs.extend_from_slice(&self.buf[r]);
                self.handle_handshake()?;
                Ok(Some(0))
            }
            CT_ALERT => {
                let a = &self.buf[r];
                match a {
                    [_, 0] => {
                        self.eof = true;
                        Ok(Some(0))
                    }
                    // user_canceled precedes a close_notify; nothing to do.
                    [_, 90] => Ok(Some(0)),
                    [_, d] => Err(invalid(format!("peer sent TLS alert {}", alert_name(*d)))),
                    _ => Err(invalid("malformed TLS alert")),
                }
            }
            other => Err(invalid(format!("unexpected TLS content type {other}"))),
        }
    }

    /// Opens the further complete records already buffered, appending their
    /// plaintext to `plain` (each decrypted 22 bytes of record overhead
    /// earlier than it lies, per record before it), so the consumer writes
    /// one run per read instead of one per record. An error is kept for the next fill, after the
    /// plaintext before it has been delivered. Returns the bytes added.
    fn open_more(&mut self) -> usize {
        let mut added = 0;
        while !self.eof && self.cipher_start < self.buf.len() {
            match self.open_one() {
                Ok(Some(n)) => added += n,
                Ok(None) => break,
                Err(e) => {
                    self.failed = Some(e);
                    break;
                }
            }
        }
        added
    }

    fn handle_handshake(&mut self) -> io::Result<()> {
        let mut used = 0;
        while let [typ, a, b, c, rest @ ..] = &self.hs[used..] {
            let len = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
            if rest.len() < len {
                break;
            }
            let body = &rest[..len];
            match *typ {
                // NewSessionTicket: store it so the next connection resumes.
                4 => match &mut *self.shared.kernel.borrow_mut() {
                    Kernel::Client(k) => k.handle_new_session_ticket(body).map_err(invalid)?,
                    Kernel::Server(_) => return Err(invalid("client sent a NewSessionTicket")),
                },
                // KeyUpdate
                24 => {
                    let requested = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(invalid("malformed KeyUpdate")),
                    };
                    // RFC 8446 section 5.1: a message that changes keys
                    // ends its record; bytes after it would be read under
                    // the wrong key (rustls refuses this the same way).
                    if used + 4 + len != self.hs.len() {
                        return Err(invalid("KeyUpdate not at the end of its record (unexpected_message)"));
                    }
                    let (seq, secrets) = self.shared.kernel.borrow_mut().update_rx().map_err(invalid)?;
                    self.key = RecordKey::new(&secrets, seq).map_err(invalid)?;
                    if requested {
                        self.shared.key_update_requested.set(true);
                    }
                }
                t => {
                    return Err(invalid(format!("unexpected post-handshake message type {t}")));
                }
            }
            used += 4 + len;
        }
        self.hs.drain(..used);
        if self.hs.len() > 64 * 1024 {
            return Err(invalid("post-handshake message too large"));
        }
        Ok(())
    }

    /// Makes room for the next read: in a small buffer, for the rest of the
    /// pending record (growing into a bulk buffer if it cannot fit); in a
    /// bulk buffer, for at least one whole record.
    fn make_room(&mut self) {
        if buf::is_small(&self.buf) {
            let pending = &self.buf[self.cipher_start..];
            let record = match pending {
                [_, _, _, a, b, ..] => HEADER_LEN + usize::from(u16::from_be_bytes([*a, *b])),
                _ => HEADER_LEN,
            };
            let need = record.saturating_sub(pending.len()).max(1);
            if self.buf.capacity() - self.buf.len() >= need {
                return;
            }
            self.compact();
            if self.buf.capacity() - self.buf.len() >= need {
                return;
            }
            buf::grow(&mut self.buf);
            return;
        }
        if self.buf.capacity() - self.buf.len() >= MAX_RECORD {
            return;
        }
        self.compact();
        if self.buf.capacity() - self.buf.len() < MAX_RECORD {
            // Only when a consumer holds a large unconsumed plaintext (a big head).
            self.buf.reserve(MAX_RECORD);
        }
    }

    /// Moves unconsumed plaintext and pending ciphertext to the front.
    fn compact(&mut self) {
        let plen = self.plain.len();
        let cipher = self.cipher_start..self.buf.len();
        let clen = cipher.len();
        if self.plain.start > 0 || self.cipher_start > self.plain.end {
            self.buf.copy_within(self.plain.clone(), 0);
            self.buf.copy_within(cipher, plen);
            self.buf.truncate(plen + clen);
            self.plain = 0..plen;
            self.cipher_start = plen;
        }
    }
}

fn alert_name(d: u8) -> String {
    let name = match d {
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        80 => "internal_error",
        109 => "missing_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        _ => return format!("#{d}"),
    };
    name.to_string()
}

impl Source for TlsReader {
    async fn fill(&mut self) -> io::Result<usize> {
        loop {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            if self.eof {
                return Ok(0);
            }
            if !self.buf.is_empty()
                && let Some(n) = self.open_one()?
            {
                if n > 0 {
                    return Ok(n + self.open_more());
                }
                continue;
            }
            if self.plain.is_empty() && self.cipher_start == self.buf.len() {
                // Nothing buffered: wait without pinning a buffer.
                self.release_if_idle();
                if !std::mem::take(&mut self.readable) && wait_data(&self.half).await? == Peek::Eof {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS peer closed the connection without close_notify",
                    ));
                }
                if self.buf.capacity() == 0 {
                    self.buf = if self.bulk { buf::take() } else { buf::take_small() };
                }
            }
            self.make_room();
            let len = self.buf.len();
            let cap = self.buf.capacity();
            let (res, slice) = self.half.read(std::mem::take(&mut self.buf).slice_mut(len..cap)).await;
            self.buf = slice.into_inner();
            let n = res?;
            self.bulk = n == cap - len && !buf::is_small(&self.buf) || n > buf::SMALL_SIZE / 2;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS peer closed the connection without close_notify",
                ));
            }
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.plain.clone()]
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.plain.len());
        self.plain.start += n;
        if self.plain.is_empty() {
            self.plain = self.cipher_start..self.cipher_start;
            self.release_if_idle();
        }
    }

    async fn ready(&mut self) -> io::Result<()> {
        if self.eof || !self.plain.is_empty() || self.cipher_start < self.buf.len() || self.readable {
            return Ok(());
        }
        // On data, the next fill reads at once; on a close it peeks again
        // and reports the EOF without taking a buffer.
        if wait_data(&self.half).await? == Peek::Data {
            self.readable = true;
        }
        Ok(())
    }

    fn expect_data(&mut self) {
        self.readable = true;
    }

    async fn forward<K: Sink>(&mut self, n: usize, sink: &mut K) -> io::Result<()> {
        let range = self.plain.start..self.plain.start + n;
        let (res, b) = sink.write_slice(std::mem::take(&mut self.buf), range).await;
        self.buf = b;
        res?;
        self.consume(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use monoio::io::AsyncWriteRentExt;

    use super::*;
    use crate::conn::testing::connected_pair;

    /// A KeyUpdate followed by more handshake bytes in the same record is a
    /// protocol error, even when the sender then really uses the keys those
    /// bytes ask for.
    #[monoio::test_all(timer_enabled = true)]
    async fn key_update_must_end_its_record() {
        let (client, server) = connected_pair().await;
        let (_cr, mut w) = client.split();
        let (mut r, _sw) = server.split();
        let mut rec = vec![0u8; HEADER_LEN];
        // Two KeyUpdate(update_not_requested) messages in one record.
        rec.extend_from_slice(&[24, 0, 0, 1, 0, 24, 0, 0, 1, 0]);
        w.key.seal(&mut rec, 0, CT_HANDSHAKE).unwrap();
        for _ in 0..2 {
            let (seq, secrets) = w.shared.kernel.borrow_mut().update_tx().unwrap();
            w.key = RecordKey::new(&secrets, seq).unwrap();
        }
        let (res, _) = w.half.write_all(rec).await;
        res.unwrap();
        w.write_bytes(b"after").await.unwrap();
        let e = r
            .fill()
            .await
            .expect_err("a KeyUpdate not ending its record must fail the connection");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("KeyUpdate not at the end"), "{e}");
        // The failure sticks.
        assert!(r.fill().await.is_err());
    }

    /// A KeyUpdate split over two records, ending the second one, is fine.
    #[monoio::test_all(timer_enabled = true)]
    async fn key_update_fragmented_to_a_record_end_is_accepted() {
        let (client, server) = connected_pair().await;
        let (_cr, mut w) = client.split();
        let (mut r, _sw) = server.split();
        let mut recs = Vec::new();
        for part in [&[24u8, 0, 0][..], &[1, 0]] {
            let start = recs.len();
            recs.extend_from_slice(&[0; HEADER_LEN]);
            recs.extend_from_slice(part);
            w.key.seal(&mut recs, start, CT_HANDSHAKE).unwrap();
        }
        let (seq, secrets) = w.shared.kernel.borrow_mut().update_tx().unwrap();
        w.key = RecordKey::new(&secrets, seq).unwrap();
        let (res, _) = w.half.write_all(recs).await;
        res.unwrap();
        w.write_bytes(b"after").await.unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            assert_ne!(r.fill().await.unwrap(), 0, "early end");
            got.extend_from_slice(r.data());
            r.consume(r.data().len());
        }
        assert_eq!(got, b"after");
    }

    #[test]
    fn alert_names() {
        assert_eq!(alert_name(48), "unknown_ca");
        assert_eq!(alert_name(200), "#200");
    }
}
