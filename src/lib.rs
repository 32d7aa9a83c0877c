//! msc: the mobile security client and its gateway.
//!
//! - [`client`]: the client's data path (`msc run`), one service per worker.
//! - [`gateway`]: the server side (`msc gateway`).
//! - [`worker`]: the thread-per-core engine both run on.
//! - [`config`]: configuration files, raw and validated.
//! - [`upstream`]: the routing table workers read.
//! - [`app`]: process assembly; [`pki`], [`demo`], [`origin`]: the tools around them.
//!
//! The data path never blocks, locks or allocates per chunk; anything that
//! does (config, resolution of gateway names, logging I/O) lives elsewhere.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod demo;
#[cfg(any(fuzzing, test))]
pub mod fuzz;
pub mod gateway;
pub mod http;
pub mod origin;
pub mod pki;
pub mod ports;
pub mod proxy;
pub mod status;
pub mod upstream;
pub mod worker;
