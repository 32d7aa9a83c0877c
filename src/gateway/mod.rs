//! The gateway (`msc gateway`): terminates mutual TLS, identifies the user
//! from the client certificate, then serves the tunnel with the forward proxy
//! loop in [`crate::forward`] (policy, CONNECT, absolute-form with keep-alive on
//! both sides). Runs on the same thread-per-core engine as the client.

pub mod admit;
pub mod docs;
pub mod profiles;
pub mod releases;
pub mod tickets;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use msc_io::stream::{Sink, Source};
use msc_tls::{Identity, TlsStream};

use crate::config::gateway::{GatewayConfig, GatewayLimits};
use crate::forward::access::AccessLog;
use crate::forward::{Ended, Peer, Proxy, ProxySettings, ProxyTimeouts};
use admit::{Admission, Refusal};
use msc_io::worker::Service;

pub use crate::forward::PROBE_PATH;

/// Settings every gateway worker shares (immutable).
#[derive(Debug)]
pub struct GatewayShared {
    pub tls: Arc<rustls::ServerConfig>,
    /// The shared session-ticket keys, when configured (reloaded in place).
    pub tickets: Option<Arc<msc_tls::ticket_keys::SharedTicketer>>,
    pub handshake: Duration,
    pub first_byte: Duration,
    pub limits: GatewayLimits,
    pub proxy: Arc<ProxySettings>,
}

impl GatewayShared {
    pub fn new(cfg: &GatewayConfig, log: AccessLog) -> Result<GatewayShared, msc_tls::SetupError> {
        let tickets = match &cfg.tls.tickets {
            None => None,
            Some(t) => Some(Arc::new(
                msc_tls::ticket_keys::SharedTicketer::new(t.keys.clone(), t.lifetime, t.grace).map_err(|e| {
                    msc_tls::SetupError::File {
                        path: t.file.clone(),
                        reason: e.to_string(),
                    }
                })?,
            )),
        };
        let tls = msc_tls::config::server_config_with(
            &msc_tls::config::ServerCreds {
                cert: &cfg.tls.cert,
                key: &cfg.tls.key,
                client_ca: &cfg.tls.client_ca,
            },
            tickets.clone().map(|t| t as Arc<dyn rustls::server::ProducesTickets>),
        )?;
        let t = cfg.timeouts;
        Ok(GatewayShared {
            tls,
            tickets,
            handshake: t.handshake,
            first_byte: t.first_byte,
            limits: fit_fd_limit(cfg),
            proxy: Arc::new(ProxySettings {
                who: "msc-gateway",
                via: "1.1 msc-gateway",
                deny: cfg.deny.clone(),
                egress: Some(cfg.egress.clone()),
                timeouts: ProxyTimeouts {
                    head: t.head,
                    idle: t.idle,
                    connect: t.connect,
                },
                log,
                probe: true,
                probe_delay: cfg.probe_delay,
                route: None,
                request_limits: msc_io::head::Limits::RELAYED,
                docs: Some(Arc::new(docs::for_gateway(cfg).map_err(|e| {
                    msc_tls::SetupError::File {
                        path: cfg.file.clone(),
                        reason: format!("cannot start serving the profiles: {e}"),
                    }
                })?)),
            }),
        })
    }
}

/// The connection cap only protects the accept loop if it is reached before
/// the process runs out of file descriptors (a tunnel can hold two: client
/// and origin). A cap the open-file limit cannot honour is lowered (and
/// logged): past it, `accept` fails (EMFILE) and new clients wait in the
/// backlog behind the flood.
fn fit_fd_limit(cfg: &GatewayConfig) -> GatewayLimits {
    let mut limits = cfg.limits;
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return limits;
    };
    let workers = cfg.workers.max(1) as u64;
    let fit = usize::try_from(soft.saturating_sub(256) / 2 / workers)
        .unwrap_or(usize::MAX)
        .max(1);
    if limits.max_connections > fit {
        tracing::info!(
            "limits.max_connections lowered from {} to {fit} per worker: the open-file limit is {soft} \
             ({} workers, up to two descriptors per tunnel)",
            limits.max_connections,
            cfg.workers
        );
        limits.max_connections = fit;
    }
    limits
}

/// One worker's gateway service.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<GatewayShared>,
    proxy: Proxy,
    admit: Admission,
}

impl Gateway {
    pub fn new(shared: Arc<GatewayShared>) -> Gateway {
        let proxy = Proxy::new(shared.proxy.clone());
        let admit = Admission::new(shared.limits);
        Gateway { shared, proxy, admit }
    }
}

impl Service for Gateway {
    async fn serve(self: Rc<Self>, _listener: usize, mut stream: TcpStream, peer: SocketAddr) {
        let start = Instant::now();
        let Some(_conn) = self.admit.connection() else {
            // Closing at once keeps the accept queue moving; legitimate
            // clients behind a flood are not left waiting in the backlog.
            let n = self.admit.connections();
            self.admit
                .refused(peer, Refusal::ConnectionCap, &format_args!("{n} connections open"));
            return;
        };
        // Until the ClientHello record is complete the connection holds no
        // TLS state and no handshake slot: a silent or stalled client costs
        // a socket and this task, for at most timeouts.first_byte.
        let waiting = self.admit.pre_hello();
        let hello = monoio::select! {
            r = read_hello(&mut stream, start + self.shared.first_byte) => r,
            _ = waiting.evicted() => Err((Refusal::Evicted, "made room for a new connection at limits.max_connections".into())),
        };
        drop(waiting);
        let hello = match hello {
            Ok(h) => h,
            Err((why, detail)) => {
                self.admit.refused(peer, why, &detail);
                return;
            }
        };
        let budget = self.shared.handshake.saturating_sub(start.elapsed());
        let Some(slot) = self.admit.handshake_slot(budget).await else {
            self.admit.refused(peer, Refusal::NoSlot, &"all handshake slots busy");
            return;
        };
        // Boxed in its own statement: the handshake state is large and short-lived.
        let budget = self.shared.handshake.saturating_sub(start.elapsed());
        let handshake = Box::pin(TlsStream::accept_after(self.shared.tls.clone(), stream, hello, budget));
        let res = handshake.await;
        drop(slot);
        let tls = match res {
            Ok(tls) => tls,
            Err(e) => {
                self.admit.refused(peer, Refusal::of(&e), &e);
                return;
            }
        };
        // Boxed: the tunnel's state is much larger than what a connection
        // needs until its handshake completes, and a flood's connections
        // never get this far.
        Box::pin(self.tunnel(tls, peer)).await;
    }
}

impl Gateway {
    async fn tunnel(&self, tls: TlsStream, peer: SocketAddr) {
        let id = tls
            .info()
            .peer_certs
            .first()
            .map(|c| Identity::from_der(c))
            .unwrap_or_default();
        tracing::debug!("tunnel from {peer}: {id} (resumed: {})", tls.info().resumed);
        let (r, w) = tls.split();
        let mut c = Peer {
            r,
            w,
            user: id.principal().into(),
        };
        let Some(_tunnel) = self.admit.tunnel(&c.user) else {
            let max = self.admit.max_tunnels_per_identity();
            let reason = format!("too many tunnels for {} (limit {max} per gateway worker)", c.user);
            self.admit.refused(peer, Refusal::TunnelCap, &reason);
            refuse_tunnel(&mut c, &reason, self.shared.proxy.timeouts.head).await;
            return;
        };
        match self.proxy.serve(&mut c, None).await {
            Ended::Clean => {
                let _ = c.w.close_write().await;
            }
            // No close_notify: the client must see the cut as a cut.
            Ended::Abort => {
                msc_tls::abort(c.r, c.w);
                tracing::debug!("tunnel from {peer} aborted after a cut response");
                return;
            }
        }
        tracing::debug!("tunnel from {peer} ({}) closed", c.user);
    }
}

/// The largest first record accepted: 2^14 plaintext bytes (RFC 8446
/// 5.1) plus the slack rustls itself allows.
const MAX_HELLO_RECORD: usize = (1 << 14) + 2048;

/// Reads the client's first TLS record (the ClientHello) by `deadline`.
/// Waits for readability before each read, so a connection that says
/// nothing holds no buffer, and one that stalls holds only what it sent.
async fn read_hello(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, (Refusal, String)> {
    let mut buf: Vec<u8> = Vec::new();
    let mut need = 5;
    let late = |got: usize, need: usize| {
        if got == 0 {
            (Refusal::Silent, "no bytes before timeouts.first_byte".to_string())
        } else {
            (
                Refusal::StalledHello,
                format!("ClientHello incomplete ({got} of {need} bytes) at timeouts.first_byte"),
            )
        }
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, stream.readable(false)).await {
            Err(_) => return Err(late(buf.len(), need)),
            Ok(Err(e)) => return Err((Refusal::Closed, e.to_string())),
            Ok(Ok(())) => {}
        }
        let len = buf.len();
        buf.reserve_exact(need - len);
        let left = deadline.saturating_duration_since(Instant::now());
        let read = stream.read(std::mem::take(&mut buf).slice_mut(len..need));
        let (res, slice) = match monoio::time::timeout(left, read).await {
            Ok(r) => r,
            // The read was cancelled with the buffer: nothing to keep.
            Err(_) => return Err(late(len, need)),
        };
        buf = slice.into_inner();
        match res {
            Ok(0) => return Err((Refusal::Closed, "closed before its ClientHello".into())),
            Ok(_) => {}
            Err(e) => return Err((Refusal::Closed, e.to_string())),
        }
        if need == 5 && buf.len() == 5 {
            // TLSPlaintext header: handshake(22), legacy version 3.x, length.
            let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if buf[0] != 22 || buf[1] != 3 || len == 0 || len > MAX_HELLO_RECORD {
                return Err((Refusal::NotTls, "the first bytes are not a TLS handshake record".into()));
            }
            need = 5 + len;
        } else if buf.len() == need {
            return Ok(buf);
        }
    }
}

/// Answers the tunnel's first request with 429 and closes it. The request is
/// read first, and the close waits (briefly) for the client's, so the answer
/// is not lost to a reset.
async fn refuse_tunnel<R: Source, W: Sink>(c: &mut Peer<R, W>, reason: &str, head: Duration) {
    let _ = monoio::time::timeout(head, msc_io::stream::fill_first(&mut c.r)).await;
    let body = format!("msc-gateway: {reason}\n");
    let reply = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if c.w.write_bytes(reply.as_bytes()).await.is_err() {
        return;
    }
    let _ = c.w.close_write().await;
    let drain = async {
        loop {
            match c.r.fill().await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let n = c.r.data().len();
                    c.r.consume(n);
                }
            }
        }
    };
    let _ = monoio::time::timeout(Duration::from_secs(1), drain).await;
}
