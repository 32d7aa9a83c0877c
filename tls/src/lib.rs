//! msc-tls: mutual TLS for the tunnel between client and gateway.
//!
//! - [`config`]: rustls client/server configurations (TLS 1.3 only, the
//!   configured CAs only, client certificates required by the gateway).
//! - [`certs`]: PEM loading with errors that name the file, and the identity
//!   (CN, SAN e-mail/URI) a certificate carries.
//! - [`conn`]: the handshake, driven by rustls's unbuffered API on monoio's
//!   owned buffers; then the connection splits into a reader and a writer.
//! - [`tickets`]: a TLS 1.3 ticket store deep enough for bursts of tunnels.
//! - [`ticket_keys`]: session-ticket keys shared by gateway instances
//!   behind a load balancer (rotation with a grace period).
//! - [`record`]: TLS 1.3 record protection in place. rustls 0.23's unbuffered
//!   API copies every record's plaintext into a fresh `Vec`; taking the
//!   traffic secrets through rustls's kernel-TLS interface and sealing/opening
//!   records where they lie removes that copy and allocation per record (see
//!   perf/copies.md). rustls still owns the handshake, session tickets and key
//!   updates.
//!
//! - [`ktls`]: kernel TLS crypto state built from the same secrets
//!   (detection and socket options in `msc_io::ktls`; not wired yet, see
//!   perf/ktls.md).
//!
//! This crate must never read configuration files of its own or decide
//! routing; it is given paths and sockets.
// Unused dependencies fail the lint run (tests see dev-dependencies too, hence not(test)).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]
#![warn(unreachable_pub)]
#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod certs;
pub mod config;
pub mod conn;
#[cfg(any(fuzzing, test))]
pub mod fuzz;
pub mod ktls;
pub mod pki;
pub mod record;
pub mod ticket_keys;
pub mod tickets;

pub use certs::Identity;
pub use conn::{SessionInfo, TlsError, TlsReader, TlsStream, TlsWriter, abort};
pub use rustls;
pub use rustls_pki_types::ServerName;

/// A TLS set-up problem found while loading credentials.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
}
