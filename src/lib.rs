//! msc: the mobile security client and its gateway.
//!
//! Data path (worker threads, on msc-io's thread-per-core engine):
//! - [`client`]: `msc run`: browser connections, the tunnel pool, the exchange.
//! - [`gateway`]: `msc gateway`: the mutual-TLS front and admission limits.
//! - [`forward`]: the HTTP forward-proxy loop both sides share: framing,
//!   policy (deny list, egress), the access log.
//!
//! The contract between them and the control plane:
//! - [`upstream`]: the routing table workers read, the feedback they write,
//!   and the pure ranking.
//!
//! Off the data path:
//! - [`agent`]: beside the client: proxy-settings enforcement.
//! - [`control`]: the control-plane thread: probes, ranking rounds, the
//!   control API (PAC, status).
//! - [`config`]: configuration files, raw and validated.
//! - [`app`]: process assembly (listeners, threads, signals); [`ports`]:
//!   who holds a port msc needs.
//! - [`cli`]: the commands and tools (`pki`, `demo`, `origin`, `status`,
//!   `enforce`, `disable`/`enable`, `support-bundle`, `ticket-keys`,
//!   `release`).
//! - [`release`]: signed code updates: manifest, signature, version order,
//!   atomic install and rollback state.
//! - [`agent`]: beside the client: one instance per configuration and port,
//!   service-manager notifications, `msc watchdog`, proxy-settings
//!   enforcement, session events (logind), the tray icon.
//!
//! The data path never blocks, locks or allocates per chunk; anything that
//! does (config, resolution of gateway names, logging I/O) lives elsewhere.
// Unused dependencies fail the lint run (tests see dev-dependencies too, hence not(test)).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]
#![warn(unreachable_pub)]
#![forbid(unsafe_code)]

// The allocator is the binary's (src/main.rs); a package-level dependency all the same.
use mimalloc as _;

pub mod agent;
pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod forward;
#[cfg(any(fuzzing, test))]
pub mod fuzz;
pub mod gateway;
pub mod ports;
pub mod release;
pub mod upstream;
