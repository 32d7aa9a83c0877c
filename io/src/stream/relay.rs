//! Relaying both directions of a connection: when one fails the other
//! stops, and idleness means no bytes in either direction.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{Sink, Source};
use crate::signal::Signal;

/// Shared state of the two directions of one relay: when one fails the other
/// is stopped, and idleness is judged on both directions together.
#[derive(Debug)]
pub struct RelayState {
    failed: Signal,
    last_activity: Cell<Instant>,
    idle: Duration,
}

impl RelayState {
    pub fn new(idle: Duration) -> Rc<RelayState> {
        Rc::new(RelayState {
            failed: Signal::new(),
            last_activity: Cell::new(Instant::now()),
            idle,
        })
    }

    /// Marks the relay failed and wakes the other direction.
    pub fn fail(&self) {
        self.failed.fire();
    }

    /// Records activity (restarts the idle clock).
    pub fn touch(&self) {
        self.last_activity.set(Instant::now());
    }

    /// Runs `fut` unless the relay fails first; the idle timer restarts while
    /// the other direction is active.
    pub async fn guard<T>(&self, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        let mut fut = std::pin::pin!(fut);
        loop {
            let since = self.last_activity.get().elapsed();
            let wait = self.idle.saturating_sub(since).max(Duration::from_millis(1));
            let guarded = Aborted {
                state: self,
                fut: fut.as_mut(),
                slot: None,
            };
            match crate::deadline::timeout(wait, guarded).await {
                Ok(r) => return r,
                Err(_) if self.last_activity.get().elapsed() >= self.idle => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
                }
                Err(_) => continue,
            }
        }
    }
}

/// A guarded operation: fails as soon as the relay fails. While pending it
/// holds one waiter slot of the failure signal, released when it completes
/// or is dropped.
struct Aborted<'a, F> {
    state: &'a RelayState,
    fut: Pin<&'a mut F>,
    slot: Option<usize>,
}

impl<F> Drop for Aborted<'_, F> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.state.failed.release(i);
        }
    }
}

impl<T, F: Future<Output = io::Result<T>>> Future for Aborted<'_, F> {
    type Output = io::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.state.failed.is_fired() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "other direction failed",
            )));
        }
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                let slot = self.slot;
                self.slot = Some(self.state.failed.register(slot, cx.waker()));
                Poll::Pending
            }
        }
    }
}

/// Copies `src` to `sink` until `src` ends, then closes `sink`'s direction.
/// Returns the bytes moved, and how it ended.
pub async fn pump<S: Source, K: Sink>(src: &mut S, sink: &mut K, state: &RelayState) -> Moved {
    let mut total = 0u64;
    let res: io::Result<()> = async {
        loop {
            let n = state.guard(sink.absorb(src, usize::MAX)).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
            state.touch();
        }
        state.guard(sink.close_write()).await
    }
    .await;
    if res.is_err() {
        state.fail();
    }
    Moved {
        bytes: total,
        result: res,
    }
}

/// What one direction of a relay moved, and how it ended.
#[derive(Debug)]
pub struct Moved {
    pub bytes: u64,
    pub result: io::Result<()>,
}

/// Relays both directions until both have ended (half-close is propagated:
/// each direction's end closes the matching write side). Returns what moved
/// a→b and b→a; if one direction fails the other is stopped.
pub async fn relay<A: Source, AK: Sink, B: Source, BK: Sink>(
    a: &mut A,
    a_sink: &mut AK,
    b: &mut B,
    b_sink: &mut BK,
    idle: Duration,
) -> (Moved, Moved) {
    let state = RelayState::new(idle);
    monoio::join!(pump(a, b_sink, &state), pump(b, a_sink, &state))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use monoio::net::TcpStream;

    use super::*;
    use crate::stream::{close, split};

    /// Two loopback connections (a, b) relayed to each other: bytes arrive
    /// exactly both ways, and a half-close on one side reaches the other.
    #[monoio::test_all(timer_enabled = true)]
    async fn relays_both_ways_and_propagates_half_close() {
        let la = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let lb = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(la.local_addr().unwrap()).await.unwrap();
        let b = TcpStream::connect(lb.local_addr().unwrap()).await.unwrap();
        let (mut pa, _) = la.accept().unwrap();
        let (mut pb, _) = lb.accept().unwrap();
        let up: Vec<u8> = (0..300_000u32).map(|i| i.to_le_bytes()[0]).collect();
        let down: Vec<u8> = (0..200_000u32).map(|i| (i * 7).to_le_bytes()[1]).collect();
        let (up2, down2) = (up.clone(), down.clone());
        // The peers run on plain threads: write everything, half-close, read to the end.
        let ta = std::thread::spawn(move || {
            pa.write_all(&up2).unwrap();
            pa.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            pa.read_to_end(&mut got).unwrap();
            got
        });
        let tb = std::thread::spawn(move || {
            pb.write_all(&down2).unwrap();
            pb.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            pb.read_to_end(&mut got).unwrap();
            got
        });
        let (mut ar, mut aw) = split(a);
        let (mut br, mut bw) = split(b);
        let (ab, ba) = relay(&mut ar, &mut aw, &mut br, &mut bw, Duration::from_secs(10)).await;
        assert!(ab.result.is_ok() && ba.result.is_ok(), "{ab:?} {ba:?}");
        assert_eq!((ab.bytes, ba.bytes), (up.len() as u64, down.len() as u64));
        close(ar, aw);
        close(br, bw);
        assert!(tb.join().unwrap() == up, "a -> b bytes differ");
        assert!(ta.join().unwrap() == down, "b -> a bytes differ");
    }

    /// Idle means no bytes in either direction: a relay with traffic one way
    /// only is not idle.
    #[monoio::test_all(timer_enabled = true)]
    async fn one_way_traffic_is_not_idle() {
        let state = RelayState::new(Duration::from_millis(100));
        let started = Instant::now();
        // The other direction touches the clock every 30 ms for 300 ms.
        let waiting = state.guard(async {
            monoio::time::sleep(Duration::from_millis(300)).await;
            Ok(())
        });
        let ticking = async {
            while started.elapsed() < Duration::from_millis(300) {
                monoio::time::sleep(Duration::from_millis(30)).await;
                state.touch();
            }
        };
        let (r, ()) = monoio::join!(waiting, ticking);
        assert!(r.is_ok(), "{r:?}");
        // Without traffic, the same wait is idle.
        let r = state
            .guard(async {
                monoio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            })
            .await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
