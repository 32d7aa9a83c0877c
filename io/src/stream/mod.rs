//! Byte sources and sinks over monoio's owned-buffer I/O, and the relay.
//!
//! A [`Source`] keeps what it has read in a pooled buffer and lends it to a
//! [`Sink`] by value (monoio I/O takes ownership of buffers), so forwarding
//! never copies: the bytes that were read are the bytes written. A source that
//! is waiting for its peer holds no buffer at all (it waits for readability
//! first), which keeps idle connections cheap.
//!
//! - [`ready`]: waiting for readability without a buffer, peeks, resets;
//! - [`plain`]: the plain TCP halves ([`PlainReader`], [`PlainWriter`]);
//! - [`multi`]: multishot receive with provided buffers for a plain reader;
//! - [`relay`]: both directions of a connection at once, with one idle rule;
//! - [`message`]: one HTTP head or body at a time, with limits.

mod message;
mod multi;
mod plain;
mod ready;
mod relay;

use std::io;
use std::ops::Range;

pub use message::*;
pub use plain::*;
pub use ready::*;
pub use relay::*;

/// Something that reads bytes into its own buffer.
#[allow(
    async_fn_in_trait,
    reason = "single-threaded runtime: these futures are !Send by design"
)]
pub trait Source {
    /// Reads more bytes, appending to [`Source::data`]. Returns how many
    /// arrived; `Ok(0)` means the peer finished sending.
    ///
    /// Not cancel-safe: if the returned future is dropped, buffered bytes may
    /// be lost. Callers close the connection after a timeout.
    async fn fill(&mut self) -> io::Result<usize>;

    /// Bytes read and not yet consumed.
    fn data(&self) -> &[u8];

    /// Drops the first `n` bytes of [`Source::data`].
    fn consume(&mut self, n: usize);

    /// Writes the first `n` bytes of [`Source::data`] to `sink` and consumes them.
    async fn forward<K: Sink>(&mut self, n: usize, sink: &mut K) -> io::Result<()>;

    /// The plain TCP reader behind this source, if it is one (lets a TLS sink
    /// read straight into its record buffer).
    fn as_plain(&mut self) -> Option<&mut PlainReader> {
        None
    }

    /// Waits until the peer has sent something (or closed), holding no
    /// buffer: the cheap way for an idle connection to wait for its next
    /// request. Cancel-safe. Returns at once if bytes are buffered.
    async fn ready(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Data is expected soon (a response to a request just sent): the next
    /// read may hold a buffer while it waits, saving a readiness round trip.
    fn expect_data(&mut self) {}
}

impl<S: Source> Source for &mut S {
    async fn fill(&mut self) -> io::Result<usize> {
        (**self).fill().await
    }

    fn data(&self) -> &[u8] {
        (**self).data()
    }

    fn consume(&mut self, n: usize) {
        (**self).consume(n)
    }

    async fn forward<K: Sink>(&mut self, n: usize, sink: &mut K) -> io::Result<()> {
        (**self).forward(n, sink).await
    }

    fn as_plain(&mut self) -> Option<&mut PlainReader> {
        (**self).as_plain()
    }

    async fn ready(&mut self) -> io::Result<()> {
        (**self).ready().await
    }

    fn expect_data(&mut self) {
        (**self).expect_data()
    }
}

/// After [`Source::ready`]: reads the first bytes of the next message unless
/// some are buffered. False when the peer closed or the read failed. (Reading
/// them before building a request's state means a closing connection costs
/// no request state.)
pub async fn fill_first<S: Source>(src: &mut S) -> bool {
    !src.data().is_empty() || matches!(src.fill().await, Ok(n) if n > 0)
}

/// Something that writes bytes.
#[allow(
    async_fn_in_trait,
    reason = "single-threaded runtime: these futures are !Send by design"
)]
pub trait Sink {
    /// Writes all of `buf[range]` and hands the buffer back.
    async fn write_slice(&mut self, buf: Vec<u8>, range: Range<usize>) -> (io::Result<()>, Vec<u8>);

    /// Writes all of `data` (copies it; for heads and short replies).
    async fn write_bytes(&mut self, data: &[u8]) -> io::Result<()>;

    /// Signals the end of this direction (TCP FIN; for TLS, close_notify first).
    async fn close_write(&mut self) -> io::Result<()>;

    /// Moves up to `max` bytes from `src` to this sink, reading if `src` has
    /// nothing buffered. Returns how many moved; 0 means `src` reached EOF.
    async fn absorb<S: Source>(&mut self, src: &mut S, max: usize) -> io::Result<usize>
    where
        Self: Sized,
    {
        if src.data().is_empty() && src.fill().await? == 0 {
            return Ok(0);
        }
        let n = src.data().len().min(max);
        src.forward(n, self).await?;
        Ok(n)
    }
}

impl<K: Sink> Sink for &mut K {
    async fn write_slice(&mut self, buf: Vec<u8>, range: Range<usize>) -> (io::Result<()>, Vec<u8>) {
        (**self).write_slice(buf, range).await
    }

    async fn write_bytes(&mut self, data: &[u8]) -> io::Result<()> {
        (**self).write_bytes(data).await
    }

    async fn close_write(&mut self) -> io::Result<()> {
        (**self).close_write().await
    }

    async fn absorb<S: Source>(&mut self, src: &mut S, max: usize) -> io::Result<usize> {
        (**self).absorb(src, max).await
    }
}
