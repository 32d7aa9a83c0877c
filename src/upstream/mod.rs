//! The data <-> control contract: what workers read and what they write.
//!
//! - [`routing`]: the routing table the control plane publishes and workers
//!   read per connection (lock-free);
//! - [`feedback`]: the per-worker recorder workers write traffic outcomes to,
//!   handed to the control plane on a tick;
//! - [`rank`]: the pure ranking the control plane runs on both.

pub mod feedback;
pub mod rank;
pub mod routing;

pub use routing::*;
