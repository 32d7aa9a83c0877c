//! The TLS connection on monoio. rustls's unbuffered API drives the
//! handshake over owned buffers (`handshake`); the stream it yields holds
//! the traffic keys rustls hands over and splits into a [`TlsReader`]
//! (`reader`) and a [`TlsWriter`] (`writer`), which protect records in
//! place in their own buffers with [`crate::record`]. rustls keeps the
//! post-handshake state (session tickets, key updates) in a kernel
//! connection both halves share.
//!
//! This module assembles the stream and holds what the parts share; it
//! never reads or writes records itself.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use monoio::io::Splitable;
use monoio::net::TcpStream;
use msc_io::buf;
use rustls::ConnectionTrafficSecrets;
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls_pki_types::CertificateDer;

use crate::record::{RecordError, RecordKey};

mod handshake;
mod reader;
#[cfg(test)]
pub(crate) mod testing;
mod writer;

pub use reader::TlsReader;
pub use writer::TlsWriter;

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

impl TlsStream {
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

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
