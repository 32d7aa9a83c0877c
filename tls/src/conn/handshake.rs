//! The handshake: rustls's unbuffered client or server connection driven
//! over monoio's owned buffers until it can send traffic, then turned into
//! a kernel connection and the traffic secrets the record layer uses.
//! A failed handshake sends rustls's alert before it closes.

use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ClientConfig, HandshakeKind, ServerConfig};
use rustls_pki_types::ServerName;

use super::{Kernel, Leftover, SessionInfo, TlsError, TlsStream};

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
        // Once the handshake is complete rustls is given no more records:
        // only what it still has to send (the server's session tickets).
        // Records behind the peer's Finished stay in `incoming` for the
        // record layer. Fed to rustls, a KeyUpdate(update_requested) there
        // would make it rotate its sending key and queue the KeyUpdate
        // message, which is lost when the connection becomes a kernel
        // connection: our records would then be sealed with a key the peer
        // does not have yet (it answers bad_record_mac).
        let mut nothing = [0u8; 0];
        let input: &mut [u8] = if conn.common().is_handshaking() {
            &mut incoming[..]
        } else {
            &mut nothing
        };
        let UnbufferedStatus { discard, state } = conn.process(input);
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
}
