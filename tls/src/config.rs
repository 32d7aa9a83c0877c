//! rustls configurations for both ends of the mutual-TLS tunnel.
//!
//! Both ends speak TLS 1.3 only and trust exactly the CA files they are given,
//! never the system roots. Secret extraction is enabled because, once rustls
//! has completed the handshake, the record layer in [`crate::record`] takes
//! over encryption (see the crate docs for why).

use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::SetupError;
use crate::certs::{load_certs, load_key};
use crate::tickets::TicketStore;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(path: &Path) -> Result<RootCertStore, SetupError> {
    let mut store = RootCertStore::empty();
    for c in load_certs(path)? {
        store.add(c).map_err(|e| SetupError::File {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// Paths of the client side's credentials.
#[derive(Clone, Debug)]
pub struct ClientCreds<'a> {
    /// CA that must have signed every gateway certificate.
    pub ca: &'a Path,
    /// This client's certificate chain and key.
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Builds the client configuration: the gateway is verified against `ca`
/// only, and the client presents `cert`. `sessions` is how many TLS 1.3
/// tickets are kept per gateway name ([`TicketStore`]); build one
/// configuration per worker so resumption needs no lock shared between cores.
pub fn client_config(creds: &ClientCreds<'_>, sessions: usize) -> Result<Arc<ClientConfig>, SetupError> {
    let roots = roots(creds.ca)?;
    let chain = load_certs(creds.cert)?;
    let key = load_key(creds.key)?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(SetupError::Tls)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| SetupError::File {
            path: creds.key.to_path_buf(),
            reason: format!("key does not match certificate {}: {e}", creds.cert.display()),
        })?;
    cfg.enable_secret_extraction = true;
    cfg.resumption = Resumption::store(Arc::new(TicketStore::new(sessions)));
    Ok(Arc::new(cfg))
}

/// TLS 1.3 session tickets the gateway sends after each handshake (rustls's
/// default is 2): enough that a client's ticket store refills faster than a
/// burst of new tunnels drains it. Each costs one small AEAD seal.
pub const TICKETS_PER_HANDSHAKE: usize = 4;

/// Paths of the gateway's credentials.
#[derive(Clone, Debug)]
pub struct ServerCreds<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    /// CA that must have signed every client certificate.
    pub client_ca: &'a Path,
}

/// Builds the gateway configuration: a client certificate chaining to
/// `client_ca` is required; stateless session tickets let any worker resume
/// a session another worker established. Each handshake sends
/// [`TICKETS_PER_HANDSHAKE`] tickets, so a client that opens tunnels in a
/// burst keeps resuming (each resumption consumes one ticket).
pub fn server_config(creds: &ServerCreds<'_>) -> Result<Arc<ServerConfig>, SetupError> {
    server_config_with(creds, None)
}

/// [`server_config`] with the given ticket sealer (`None`: rustls's own,
/// a random key per process that rotates every 6 hours). Gateways behind a
/// load balancer share one ([`crate::ticket_keys::SharedTicketer`]) so any
/// instance resumes another's sessions.
pub fn server_config_with(
    creds: &ServerCreds<'_>,
    ticketer: Option<Arc<dyn rustls::server::ProducesTickets>>,
) -> Result<Arc<ServerConfig>, SetupError> {
    let roots = Arc::new(roots(creds.client_ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| SetupError::File {
            path: creds.client_ca.to_path_buf(),
            reason: format!("cannot verify clients with this CA: {e}"),
        })?;
    let chain = load_certs(creds.cert)?;
    let key = load_key(creds.key)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(SetupError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| SetupError::File {
            path: creds.key.to_path_buf(),
            reason: format!("key does not match certificate {}: {e}", creds.cert.display()),
        })?;
    cfg.enable_secret_extraction = true;
    cfg.ticketer = match ticketer {
        Some(t) => t,
        None => rustls::crypto::ring::Ticketer::new().map_err(SetupError::Tls)?,
    };
    cfg.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    Ok(Arc::new(cfg))
}
