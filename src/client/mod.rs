//! The client's data path (`msc run`): a loopback forward proxy whose every
//! connection goes through a mutual-TLS tunnel to a gateway.
//!
//! Per connection: read and check the first request head, open a tunnel to
//! the slot's gateway, send the head on (with a `Via` field), then relay both
//! directions until both ends are done. Further requests on a keep-alive
//! browser connection ride the same tunnel; the gateway parses them.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::net::TcpStream;
use msc_io::head::{Form, RequestHead};
use msc_io::resolve::connect_any;
use msc_io::stream::{HeadReadError, PlainReader, PlainWriter, Sink, Source, read_request_head, relay};
use msc_tls::{TlsError, TlsStream};

use crate::config::client::ClientTimeouts;
use crate::control::feedback::Recorder;
use crate::http::{error_reply, with_via};
use crate::proxy::{Peer, Proxy, ProxySettings};
use crate::upstream::{GatewayRoute, RoutingHandle};
use crate::worker::Service;

const WHO: &str = "msc-client";
const VIA: &str = "1.1 msc-client";

/// What every client worker shares (immutable).
#[derive(Debug)]
pub struct ClientShared {
    pub routing: RoutingHandle,
    pub timeouts: ClientTimeouts,
    /// When no gateway can be used: relay directly (true) or answer 503.
    pub fail_open: bool,
    /// The direct relay used on premise.
    pub on_premise: Arc<ProxySettings>,
    /// The direct relay used when failing open.
    pub fail_open_relay: Arc<ProxySettings>,
    /// This client's identity (certificate principal), for the access log.
    pub user: Arc<str>,
}

/// One worker's client service.
#[derive(Debug)]
pub struct ClientService {
    /// This worker's TLS configuration (its own session-ticket cache).
    tls: Arc<rustls::ClientConfig>,
    shared: Arc<ClientShared>,
    t: ClientTimeouts,
    recorder: Rc<Recorder>,
    on_premise: Proxy,
    fail_open: Proxy,
}

impl ClientService {
    pub fn new(tls: Arc<rustls::ClientConfig>, shared: Arc<ClientShared>, recorder: Rc<Recorder>) -> ClientService {
        ClientService {
            tls,
            t: shared.timeouts,
            on_premise: Proxy::new(shared.on_premise.clone()),
            fail_open: Proxy::new(shared.fail_open_relay.clone()),
            shared,
            recorder,
        }
    }

    /// Serves the connection without a gateway, starting with `head`.
    async fn direct(&self, proxy: &Proxy, r: PlainReader, w: PlainWriter, head: RequestHead) {
        let mut peer = Peer {
            r,
            w,
            user: self.shared.user.clone(),
        };
        proxy.serve(&mut peer, Some(head)).await;
        let _ = peer.w.close_write().await;
    }
}

/// Why no tunnel could be opened: the status and the one-line reason.
struct OpenError {
    status: u16,
    reason: String,
}

impl ClientService {
    async fn open(&self, gw: &GatewayRoute) -> Result<TlsStream, OpenError> {
        let t = self.t;
        if gw.addrs.is_empty() {
            return Err(OpenError {
                status: 502,
                reason: format!("gateway {}: address could not be resolved", gw.label()),
            });
        }
        let tcp = connect_any(&gw.addrs, t.connect).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                OpenError {
                    status: 504,
                    reason: format!(
                        "gateway {} did not accept a connection within {}",
                        gw.label(),
                        humantime::format_duration(t.connect)
                    ),
                }
            } else {
                OpenError {
                    status: 502,
                    reason: format!("gateway {} unreachable: {e}", gw.label()),
                }
            }
        })?;
        TlsStream::connect(self.tls.clone(), gw.server_name.clone(), tcp, t.handshake)
            .await
            .map_err(|e| match e {
                TlsError::Timeout => OpenError {
                    status: 504,
                    reason: format!(
                        "TLS handshake with gateway {} timed out after {}",
                        gw.label(),
                        humantime::format_duration(t.handshake)
                    ),
                },
                e => OpenError {
                    status: 502,
                    reason: format!("TLS handshake with gateway {} failed: {e}", gw.label()),
                },
            })
    }
}

async fn answer(w: &mut PlainWriter, status: u16, reason: &str) {
    let _ = w.write_bytes(&error_reply(status, WHO, reason, true)).await;
    let _ = w.close_write().await;
}

impl Service for ClientService {
    async fn serve(self: Rc<Self>, listener: usize, stream: TcpStream, peer: SocketAddr) {
        // Listeners come in pairs per slot: http_port, https_port.
        let slot = listener / 2;
        let t = self.t;
        let (mut br, mut bw) = msc_io::stream::split(stream);
        let head = match read_request_head(&mut br, t.idle, t.head).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(HeadReadError::Head(e)) => return answer(&mut bw, e.status(), e.reason()).await,
            Err(HeadReadError::Timeout) => {
                let reason = format!(
                    "request head not received within {}",
                    humantime::format_duration(t.head)
                );
                return answer(&mut bw, 408, &reason).await;
            }
            Err(_) => return,
        };
        if matches!(head.form, Form::Origin | Form::Asterisk) {
            return answer(
                &mut bw,
                400,
                "this is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port",
            )
            .await;
        }
        let routing = self.shared.routing.load_full();
        if routing.direct_on_premise {
            self.recorder.direct(|d| d.on_premise += 1);
            return self.direct(&self.on_premise, br, bw, head).await;
        }
        // The slot's gateway first, then the others (connect-time fail-over):
        // nothing has been sent to the browser yet.
        let mut opened = None;
        let mut last: Option<OpenError> = None;
        if !routing.none_available {
            for gw in routing.for_slot(slot) {
                let t0 = Instant::now();
                match self.open(gw).await {
                    Ok(tls) => {
                        self.recorder.tunnel_ok(gw.index, t0.elapsed());
                        opened = Some((gw.clone(), tls));
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("{peer}: {}", e.reason);
                        self.recorder.tunnel_failed(gw.index, &e.reason);
                        last = Some(e);
                    }
                }
            }
        }
        let Some((gw, tls)) = opened else {
            if routing.none_available {
                if self.shared.fail_open {
                    self.recorder.direct(|d| d.fail_open += 1);
                    return self.direct(&self.fail_open, br, bw, head).await;
                }
                self.recorder.direct(|d| d.fail_closed += 1);
                return answer(
                    &mut bw,
                    503,
                    "no gateway is available and the policy is fail-closed: direct access is not allowed",
                )
                .await;
            }
            let e = last.unwrap_or(OpenError {
                status: 502,
                reason: "no gateway is configured for this port".into(),
            });
            return answer(&mut bw, e.status, &e.reason).await;
        };
        let (mut gr, mut gwr) = tls.split();
        let mut up = Vec::with_capacity(head.len + VIA.len() + 8);
        with_via(&br.data()[..head.len], VIA, &mut up);
        br.consume(head.len);
        if let Err(e) = gwr.write_bytes(&up).await {
            let reason = format!("gateway {} closed the tunnel: {e}", gw.label());
            return answer(&mut bw, 502, &reason).await;
        }
        let (sent, got) = relay(&mut br, &mut bw, &mut gr, &mut gwr, t.idle).await;
        if got.bytes == 0
            && let Err(e) = &got.result
        {
            // Nothing reached the browser yet, so it can still get a clear answer.
            let reason = format!(
                "gateway {} closed the tunnel before answering (is this client's certificate accepted?): {e}",
                gw.label()
            );
            tracing::warn!("{peer}: {reason}");
            self.recorder.tunnel_failed(gw.index, &reason);
            answer(&mut bw, 502, &reason).await;
        }
        tracing::trace!("{peer}: done, {} bytes up, {} down", sent.bytes, got.bytes);
    }
}
