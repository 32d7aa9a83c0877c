//! msc-io: the engine under the client and the gateway.
//!
//! Pooled buffers, sans-IO HTTP head parsing and message framing, byte
//! sources/sinks over monoio's owned-buffer I/O, the relay, listeners, worker
//! runtimes and non-blocking name resolution.
//!
//! This crate must never know about configuration files, TLS policy, or
//! gateway ranking; it moves and frames bytes. Its little `unsafe` is
//! confined to fd-level helpers in [`stream`] (readiness wait and peek on a
//! split stream, and the multishot receive's submission), the
//! provided-buffer ring's memory in [`provided`], the netlink address in
//! [`netwatch`] and the two kernel TLS socket options in [`ktls`], each
//! with a `// SAFETY:` comment and a test.
// Unused dependencies fail the lint run (tests see dev-dependencies too, hence not(test)).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]
#![warn(unreachable_pub)]

pub mod buf;
pub mod deadline;
pub mod framing;
#[cfg(any(fuzzing, test))]
pub mod fuzz;
pub mod head;
pub mod iov;
pub mod ktls;
pub mod listen;
pub mod netwatch;
pub mod provided;
pub mod resolve;
pub mod runtime;
pub mod signal;
pub mod stream;
mod waiters;
pub mod worker;

pub use framing::{BodyLen, BodyTracker, FramingError, ResponseKind};
pub use head::{Form, HeadError, Method, RequestHead, ResponseHead, Span};
pub use runtime::Driver;
pub use stream::{PlainReader, PlainWriter, Sink, Source};
