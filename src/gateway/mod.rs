//! The gateway (`msc gateway`): terminates mutual TLS, identifies the user
//! from the client certificate, then serves the tunnel with the forward proxy
//! loop in [`crate::proxy`] (policy, CONNECT, absolute-form with keep-alive on
//! both sides). Runs on the same thread-per-core engine as the client.

pub mod access;
pub mod egress;
pub mod policy;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;
use msc_io::stream::Sink;
use msc_tls::{Identity, TlsStream};

use crate::config::gateway::GatewayConfig;
use crate::proxy::{Ended, Peer, Proxy, ProxySettings, ProxyTimeouts};
use crate::worker::Service;
use access::AccessLog;

pub use crate::proxy::PROBE_PATH;

/// Settings every gateway worker shares (immutable).
#[derive(Debug)]
pub struct GatewayShared {
    pub tls: Arc<rustls::ServerConfig>,
    pub handshake: Duration,
    pub proxy: Arc<ProxySettings>,
}

impl GatewayShared {
    pub fn new(cfg: &GatewayConfig, log: AccessLog) -> Result<GatewayShared, msc_tls::SetupError> {
        let tls = msc_tls::config::server_config(&msc_tls::config::ServerCreds {
            cert: &cfg.tls.cert,
            key: &cfg.tls.key,
            client_ca: &cfg.tls.client_ca,
        })?;
        let t = cfg.timeouts;
        Ok(GatewayShared {
            tls,
            handshake: t.handshake,
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
            }),
        })
    }
}

/// One worker's gateway service.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<GatewayShared>,
    proxy: Proxy,
}

impl Gateway {
    pub fn new(shared: Arc<GatewayShared>) -> Gateway {
        let proxy = Proxy::new(shared.proxy.clone());
        Gateway { shared, proxy }
    }
}

impl Service for Gateway {
    async fn serve(self: Rc<Self>, _listener: usize, stream: TcpStream, peer: SocketAddr) {
        // Boxed in its own statement: the handshake state is large and short-lived.
        let handshake = Box::pin(TlsStream::accept(
            self.shared.tls.clone(),
            stream,
            self.shared.handshake,
        ));
        let tls = match handshake.await {
            Ok(tls) => tls,
            Err(e) => {
                tracing::info!("TLS handshake from {peer} refused: {e}");
                return;
            }
        };
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
