//! The TLS connection on monoio: rustls's unbuffered API drives the
//! handshake over owned buffers, then [`crate::record`] protects the traffic
//! in place in the reader's and writer's own buffers.

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use msc_io::buf;
use msc_io::iov::Slots;
use msc_io::stream::{Peek, Sink, Source, peer_spoke, wait_data};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ClientConfig, ConnectionTrafficSecrets, HandshakeKind, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::record::{
    self, CT_ALERT, CT_APPLICATION_DATA, CT_HANDSHAKE, HEADER_LEN, MAX_PLAINTEXT, MAX_RECORD, OVERHEAD, RecordError,
    RecordKey,
};

/// Distance between consecutive full records in a batch.
const RECORD_STRIDE: usize = MAX_PLAINTEXT + OVERHEAD;
/// Room for a KeyUpdate record ahead of a batch.
const KEY_UPDATE_ROOM: usize = OVERHEAD + 5;
/// Plaintext one direct read takes at most: as many whole records as fit a
/// bulk buffer after a KeyUpdate (15 with 256 KiB buffers).
const BATCH_PLAINTEXT: usize = (buf::BUF_SIZE - KEY_UPDATE_ROOM) / RECORD_STRIDE * MAX_PLAINTEXT;

/// Plaintext a direct read into a small buffer takes at most.
const SMALL_PLAINTEXT: usize = buf::SMALL_SIZE - KEY_UPDATE_ROOM - OVERHEAD;

/// Why a TLS connection could not be set up or continued.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("peer closed the connection during the TLS handshake")]
    Eof,
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("{0}")]
    Record(#[from] RecordError),
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        match e {
            TlsError::Io(e) => e,
            TlsError::Timeout => io::Error::new(io::ErrorKind::TimedOut, e.to_string()),
            TlsError::Eof => io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string()),
            e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        }
    }
}

/// What the handshake established.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The peer's certificate chain, end-entity first (empty if none was sent).
    pub peer_certs: Vec<CertificateDer<'static>>,
    /// Whether the session was resumed from a ticket.
    pub resumed: bool,
    /// Negotiated cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub suite: String,
}

enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn suite(&self) -> rustls::SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        }
    }

    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }

    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }
}

/// State both halves of one connection need.
struct Shared {
    kernel: RefCell<Kernel>,
    /// The peer asked us to update our sending key (KeyUpdate, update_requested).
    key_update_requested: Cell<bool>,
    /// Records we may seal under one key before rotating it.
    rotate_after: u64,
}

/// An established TLS connection, ready to split into a reader and a writer.
pub struct TlsStream {
    tcp: TcpStream,
    rx: RecordKey,
    tx: RecordKey,
    /// Ciphertext that arrived with the end of the handshake.
    pending: Vec<u8>,
    /// Plaintext that arrived during the handshake (server: client data sent with Finished).
    early: Vec<u8>,
    /// The peer's close_notify arrived with the handshake.
    peer_closed: bool,
    shared: Rc<Shared>,
    info: SessionInfo,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// What the handshake left behind for the record layer.
struct Leftover {
    /// Ciphertext received after the handshake.
    pending: Vec<u8>,
    /// Plaintext rustls already decrypted.
    early: Vec<u8>,
    /// The peer's close_notify came with the handshake.
    peer_closed: bool,
}

/// What the handshake needs from either side's unbuffered connection.
trait Unbuffered {
    type Data;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn common(&self) -> &rustls::CommonState;
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error>;
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &rustls::CommonState {
        self
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (s, k) = self.dangerous_into_kernel_connection()?;
        Ok((s, Kernel::Client(k)))
    }
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &rustls::CommonState {
        self
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (s, k) = self.dangerous_into_kernel_connection()?;
        Ok((s, Kernel::Server(k)))
    }
}

enum Step {
    Again,
    Read,
    Done,
}

/// Drives a handshake to completion. On return `incoming` holds any bytes
/// received after the handshake and `early` any plaintext that came with it.
async fn drive<C: Unbuffered>(
    conn: &mut C,
    tcp: &mut TcpStream,
    incoming: &mut Vec<u8>,
    early: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> Result<(), TlsError> {
    let mut outgoing: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let UnbufferedStatus { discard, state } = conn.process(&mut incoming[..]);
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                incoming.drain(..discard);
                send_alert(conn, tcp, incoming).await;
                return Err(e.into());
            }
        };
        let step = match state {
            ConnectionState::EncodeTlsData(mut s) => {
                let used = outgoing.len();
                outgoing.resize(outgoing.capacity().max(used + 4096), 0);
                loop {
                    match s.encode(&mut outgoing[used..]) {
                        Ok(n) => {
                            outgoing.truncate(used + n);
                            break;
                        }
                        Err(EncodeError::InsufficientSize(e)) => outgoing.resize(used + e.required_size, 0),
                        Err(EncodeError::AlreadyEncoded) => {
                            outgoing.truncate(used);
                            break;
                        }
                    }
                }
                Step::Again
            }
            ConnectionState::TransmitTlsData(s) => {
                let (res, back) = tcp.write_all(std::mem::take(&mut outgoing)).await;
                outgoing = back;
                outgoing.clear();
                res?;
                s.done();
                Step::Again
            }
            ConnectionState::BlockedHandshake => Step::Read,
            ConnectionState::WriteTraffic(_) => Step::Done,
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    early.extend_from_slice(rec?.payload);
                }
                Step::Again
            }
            // The peer sent its data and close_notify right behind its
            // Finished (a half-close): the handshake still completes.
            ConnectionState::PeerClosed => {
                *peer_closed = true;
                Step::Again
            }
            ConnectionState::Closed => return Err(TlsError::Eof),
            _ => {
                return Err(TlsError::Tls(rustls::Error::General(
                    "unexpected TLS state during handshake".into(),
                )));
            }
        };
        incoming.drain(..discard);
        match step {
            Step::Again => {}
            Step::Done => return Ok(()),
            Step::Read => {
                if incoming.capacity() - incoming.len() < 4096 {
                    incoming.reserve(16 * 1024);
                }
                let len = incoming.len();
                let cap = incoming.capacity();
                let (res, slice) = tcp.read(std::mem::take(incoming).slice_mut(len..cap)).await;
                *incoming = slice.into_inner();
                if res? == 0 {
                    return Err(TlsError::Eof);
                }
            }
        }
    }
}

/// After a handshake error rustls has queued a fatal alert (e.g.
/// `certificate_required`, `unknown_ca`); send it so the peer learns why,
/// rather than seeing a bare close. rustls hands a queued message out before
/// it looks at the input again, so this is one call on the same (remaining)
/// input, as the unbuffered API requires.
async fn send_alert<C: Unbuffered>(conn: &mut C, tcp: &mut TcpStream, incoming: &mut [u8]) {
    let mut out = vec![0u8; 512];
    let n = match conn.process(incoming).state {
        Ok(ConnectionState::EncodeTlsData(mut e)) => e.encode(&mut out).unwrap_or(0),
        _ => 0,
    };
    if n > 0 {
        out.truncate(n);
        let _ = monoio::time::timeout(Duration::from_secs(1), tcp.write_all(out)).await;
    }
}

fn suite_name(s: rustls::SupportedCipherSuite) -> String {
    format!("{:?}", s.suite())
}

fn confidentiality_limit(s: rustls::SupportedCipherSuite) -> u64 {
    // Rotate well before the suite's limit (2^24.5 records for AES-GCM).
    let limit = s.tls13().map_or(1 << 23, |t| t.common.confidentiality_limit);
    (limit / 2).min(1 << 23)
}

impl TlsStream {
    /// Connects as a client over `tcp`, verifying the server as `server_name`.
    pub async fn connect(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream, TlsError> {
        let conn = UnbufferedClientConnection::new(config, server_name)?;
        TlsStream::handshake(conn, tcp, timeout).await
    }

    /// Accepts a client over `tcp` (the configuration decides whether a client
    /// certificate is required).
    pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream, timeout: Duration) -> Result<TlsStream, TlsError> {
        TlsStream::accept_after(config, tcp, Vec::new(), timeout).await
    }

    /// [`TlsStream::accept`] for a connection whose first bytes the caller
    /// has already read (`read`, e.g. the complete ClientHello record): a
    /// server can wait for a client's first flight holding no TLS state.
    pub async fn accept_after(
        config: Arc<ServerConfig>,
        tcp: TcpStream,
        read: Vec<u8>,
        timeout: Duration,
    ) -> Result<TlsStream, TlsError> {
        let conn = UnbufferedServerConnection::new(config)?;
        TlsStream::handshake_from(conn, tcp, read, timeout).await
    }

    async fn handshake<C: Unbuffered>(conn: C, tcp: TcpStream, timeout: Duration) -> Result<TlsStream, TlsError> {
        TlsStream::handshake_from(conn, tcp, Vec::new(), timeout).await
    }

    async fn handshake_from<C: Unbuffered>(
        mut conn: C,
        mut tcp: TcpStream,
        mut incoming: Vec<u8>,
        timeout: Duration,
    ) -> Result<TlsStream, TlsError> {
        incoming.reserve(16 * 1024);
        let mut early = Vec::new();
        let mut peer_closed = false;
        let driven = drive(&mut conn, &mut tcp, &mut incoming, &mut early, &mut peer_closed);
        match monoio::time::timeout(timeout, driven).await {
            Ok(r) => r?,
            Err(_) => return Err(TlsError::Timeout),
        }
        let common = conn.common();
        let info = SessionInfo {
            peer_certs: common.peer_certificates().map(<[_]>::to_vec).unwrap_or_default(),
            resumed: common.handshake_kind() == Some(HandshakeKind::Resumed),
            suite: common.negotiated_cipher_suite().map(suite_name).unwrap_or_default(),
        };
        let (secrets, kernel) = conn.into_kernel()?;
        let limit = confidentiality_limit(kernel.suite());
        let rest = Leftover {
            pending: incoming,
            early,
            peer_closed,
        };
        TlsStream::assemble(tcp, secrets, kernel, limit, rest, info)
    }

    fn assemble(
        tcp: TcpStream,
        secrets: rustls::ExtractedSecrets,
        kernel: Kernel,
        rotate_after: u64,
        rest: Leftover,
        info: SessionInfo,
    ) -> Result<TlsStream, TlsError> {
        let Leftover {
            pending,
            early,
            peer_closed,
        } = rest;
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        Ok(TlsStream {
            tcp,
            rx: RecordKey::new(&rx, rx_seq)?,
            tx: RecordKey::new(&tx, tx_seq)?,
            pending,
            early,
            peer_closed,
            shared: Rc::new(Shared {
                kernel: RefCell::new(kernel),
                key_update_requested: Cell::new(false),
                rotate_after,
            }),
            info,
        })
    }

    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Splits into a reader (a [`Source`] of plaintext) and a writer (a [`Sink`]).
    pub fn split(self) -> (TlsReader, TlsWriter) {
        let (r, w) = self.tcp.into_split();
        // Plaintext from the handshake goes first; it sits before any pending
        // ciphertext, which keeps the reader's layout invariant.
        let mut buf = Vec::new();
        let mut plain = 0..0;
        if !self.early.is_empty() || !self.pending.is_empty() {
            buf = buf::take();
            buf.extend_from_slice(&self.early);
            plain = 0..self.early.len();
            buf.extend_from_slice(&self.pending);
        }
        let cipher_start = plain.end;
        (
            TlsReader {
                half: r,
                buf,
                plain,
                cipher_start,
                key: self.rx,
                hs: Vec::new(),
                eof: self.peer_closed,
                failed: None,
                readable: false,
                bulk: false,
                shared: self.shared.clone(),
            },
            TlsWriter {
                half: w,
                key: self.tx,
                shared: self.shared,
                closed: false,
            },
        )
    }
}

/// Closes a TLS connection with a TCP reset and no close_notify: the peer
/// sees the cut as a cut (a truncation attack and a crash look the same to
/// it, and neither is a clean end).
pub fn abort(r: TlsReader, w: TlsWriter) {
    let TlsReader { half: rh, buf, .. } = r;
    let TlsWriter { half: wh, .. } = w;
    if buf.capacity() > 0 {
        buf::give(buf);
    }
    if let Ok(stream) = rh.reunite(wh) {
        msc_io::stream::reset_on_close(&stream);
        drop(stream);
    }
}

/// The receiving half: decrypts records in place and serves their plaintext.
pub struct TlsReader {
    half: OwnedReadHalf<TcpStream>,
    /// Layout: `[.. plain ..][.. unused ..][cipher_start .. len)`; `plain.end <= cipher_start`.
    buf: Vec<u8>,
    plain: Range<usize>,
    cipher_start: usize,
    key: RecordKey,
    /// Post-handshake handshake bytes not yet forming a whole message.
    hs: Vec<u8>,
    eof: bool,
    /// A record failed after earlier records' plaintext was returned: the
    /// error the next fill reports.
    failed: Option<io::Error>,
    /// The socket was seen readable and not read since: skip the next wait.
    readable: bool,
    /// The last read filled its buffer: a bulk transfer, use a big buffer.
    bulk: bool,
    shared: Rc<Shared>,
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

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
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
        let (ct, r) = self.key.open(&mut self.buf[at..at + len]).map_err(invalid)?;
        self.cipher_start += len;
        let r = at + r.start..at + r.end;
        match ct {
            CT_APPLICATION_DATA => {
                let n = r.len();
                if self.plain.is_empty() {
                    // The common case: the plaintext stays where it was decrypted.
                    self.plain = r;
                } else if n > 0 {
                    // The consumer kept earlier plaintext (e.g. a head split
                    // over records): append so data() stays contiguous.
                    self.buf.copy_within(r, self.plain.end);
                    self.plain.end += n;
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
    /// plaintext to `plain` (a move of each by the 22 bytes of record
    /// overhead before it), so the consumer writes one run per read instead
    /// of one per record. An error is kept for the next fill, after the
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

    /// Makes room for at least one whole record after the ciphertext.
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

/// The sending half: seals records in a pooled buffer and writes them.
pub struct TlsWriter {
    half: OwnedWriteHalf<TcpStream>,
    key: RecordKey,
    shared: Rc<Shared>,
    closed: bool,
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
        if let Err(e) = self.maybe_rotate(&mut rec) {
            buf::give(rec);
            return Err(e);
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
                // EOF; a pending KeyUpdate still goes out with close_notify later.
                rec.truncate(start);
                if start > 0 {
                    self.send(rec).await?;
                } else {
                    buf::give(rec);
                }
                return Ok(0);
            }
            Ok(n) => n,
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
    use crate::config::{ClientCreds, ServerCreds, client_config, server_config};
    use crate::pki::{Ca, Validity};
    use monoio::net::TcpListener;

    const T: Duration = Duration::from_secs(10);

    /// A client and a server connected over loopback, mutual TLS.
    async fn connected_pair() -> (TlsStream, TlsStream) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA").unwrap();
        let gw = ca.issue_server(&["localhost".into()], Validity::days(1)).unwrap();
        let client = ca.issue_client("alice", None, Validity::days(1)).unwrap();
        let p = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let ca_pem = p("ca.pem", &ca.issued.cert_pem);
        let scfg = server_config(&ServerCreds {
            cert: &p("gw.pem", &gw.cert_pem),
            key: &p("gw-key.pem", &gw.key_pem),
            client_ca: &ca_pem,
        })
        .unwrap();
        let ccfg = client_config(
            &ClientCreds {
                ca: &ca_pem,
                cert: &p("c.pem", &client.cert_pem),
                key: &p("c-key.pem", &client.key_pem),
            },
            1,
        )
        .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = monoio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            TlsStream::accept(scfg, tcp, T).await.unwrap()
        });
        let tcp = TcpStream::connect_addr(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let client = TlsStream::connect(ccfg, name, tcp, T).await.unwrap();
        (client, server.await)
    }

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
            let n = r.fill().await.unwrap();
            got.extend_from_slice(r.data());
            r.consume(n.min(r.data().len()));
        }
        assert_eq!(got, b"after");
    }

    #[test]
    fn alert_names() {
        assert_eq!(alert_name(48), "unknown_ca");
        assert_eq!(alert_name(200), "#200");
    }

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
