//! Beside the client: what reacts to the desktop session and the system.
//!
//! - [`session`]: logind signals (lock, logout, suspend, shutdown) that end a
//!   trusted user's disable.

pub mod session;
