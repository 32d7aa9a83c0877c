//! Coarse per-worker deadlines for idle connections.
//!
//! A monoio `Sleep` is 640 bytes (its timer entry is cache-line aligned), and
//! a connection waiting for its next request would carry one inline. Here a
//! waiting connection holds a 16-byte future and a slot in this worker's
//! table; one timer task per worker, running only while someone waits, wakes
//! the expired ones. Resolution is [`TICK`]: fine for idle timeouts measured
//! in seconds or minutes.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::waiters::Waiters;

/// Granularity of the deadlines.
pub const TICK: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Table {
    waiters: Waiters<Instant>,
    ticking: Cell<bool>,
    /// When the ticker next looks (while it sleeps).
    next: Cell<Option<Instant>>,
    /// A deadline earlier than `next` arrived: the ticker must look sooner.
    rearm: Cell<bool>,
    ticker: RefCell<Option<Waker>>,
}

thread_local! {
    static TABLE: Table = Table::default();
}

/// Completes once `deadline` has passed (within [`TICK`]).
pub fn sleep_until(deadline: Instant) -> Deadline {
    Deadline { deadline, slot: None }
}

/// Completes once `d` has passed (within [`TICK`]).
pub fn sleep(d: Duration) -> Deadline {
    sleep_until(Instant::now() + d)
}

/// The future of [`sleep_until`].
#[derive(Debug)]
pub struct Deadline {
    deadline: Instant,
    slot: Option<u32>,
}

/// The deadline of [`timeout`] passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `fut` for at most `d` (within [`TICK`]). Unlike a monoio timeout it
/// adds 16 bytes to the future, not a 640-byte timer entry, and costs no
/// timer-wheel insertion: the hot path's per-operation deadlines use it.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut deadline = sleep(d);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut deadline).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Registered and not yet fired (the ticker takes the waker of an
        // expired waiter): still pending, no clock read needed.
        if let Some(i) = self.slot
            && TABLE.with(|t| t.waiters.refresh(i as usize, cx.waker()))
        {
            return Poll::Pending;
        }
        if Instant::now() >= self.deadline {
            self.release();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let slot = self.slot;
        let i = TABLE.with(|t| {
            let i = t.waiters.register(slot.map(|i| i as usize), deadline, cx.waker());
            if !t.ticking.replace(true) {
                monoio::spawn(tick());
            } else if slot.is_none() && t.next.get().is_some_and(|n| deadline + TICK < n) {
                // The ticker sleeps past this deadline: wake it to re-plan.
                t.rearm.set(true);
                if let Some(w) = t.ticker.borrow_mut().take() {
                    w.wake();
                }
            }
            i
        });
        self.slot = u32::try_from(i).ok();
        Poll::Pending
    }
}

impl Deadline {
    fn release(&mut self) {
        if let Some(i) = self.slot.take() {
            // `try_with`: a task dropped while the thread exits finds the
            // table gone, and there is nothing to release then.
            let _ = TABLE.try_with(|t| t.waiters.release(i as usize));
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.release();
    }
}

/// Wakes expired waiters; sleeps until the earliest deadline (at least a
/// tick); ends when nobody waits, so an idle worker has no timer running.
async fn tick() {
    loop {
        let now = Instant::now();
        let (woken, next) = TABLE.with(|t| {
            let mut next: Option<Instant> = None;
            let wake = t.waiters.take_if(|d| {
                if *d <= now {
                    return true;
                }
                next = Some(next.map_or(*d, |n| n.min(*d)));
                false
            });
            if next.is_none() {
                t.ticking.set(false);
            }
            (wake, next)
        });
        // A woken waiter finds its deadline passed and frees its slot itself.
        for w in woken {
            w.wake();
        }
        let Some(next) = next else {
            TABLE.with(|t| t.next.set(None));
            return;
        };
        let wait = next.saturating_duration_since(Instant::now()).max(TICK);
        TABLE.with(|t| {
            t.next.set(Some(Instant::now() + wait));
            t.rearm.set(false);
        });
        // Until the earliest deadline, or sooner if an earlier one arrives.
        let rearmed = std::future::poll_fn(|cx| {
            TABLE.with(|t| {
                if t.rearm.get() {
                    Poll::Ready(())
                } else {
                    *t.ticker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        });
        monoio::select! {
            _ = monoio::time::sleep(wait) => {},
            _ = rearmed => {},
        }
    }
}

/// Waiters currently registered on this worker (for tests).
pub fn waiting() -> usize {
    TABLE.with(|t| t.waiters.parked())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test_all(timer_enabled = true)]
    async fn expires_within_a_tick_and_frees_slots() {
        let t0 = Instant::now();
        sleep(Duration::from_millis(300)).await;
        let e = t0.elapsed();
        assert!(
            e >= Duration::from_millis(300) && e < Duration::from_millis(300) + TICK * 3,
            "{e:?}"
        );
        assert_eq!(waiting(), 0);
        // A dropped wait frees its slot.
        {
            let long = sleep(Duration::from_secs(60));
            let r = monoio::time::timeout(Duration::from_millis(10), long).await;
            assert!(r.is_err());
        }
        assert_eq!(waiting(), 0);
        assert!(std::mem::size_of::<Deadline>() <= 24);
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn an_early_deadline_after_a_late_one_fires_on_time() {
        // The ticker first plans for a minute ahead...
        let mut late = std::pin::pin!(sleep(Duration::from_secs(60)));
        monoio::select! {
            _ = &mut late => panic!("a minute passed"),
            _ = monoio::time::sleep(Duration::from_millis(20)) => {},
        }
        assert_eq!(waiting(), 1);
        // ...then a short deadline arrives and must not wait for it.
        let t0 = Instant::now();
        sleep(Duration::from_millis(300)).await;
        let e = t0.elapsed();
        assert!(e < Duration::from_millis(300) + TICK * 3, "{e:?}");
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn timeout_passes_results_and_expires() {
        assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
        let t0 = Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(timeout(Duration::from_millis(100), never).await, Err(Elapsed));
        let e = t0.elapsed();
        assert!(
            e >= Duration::from_millis(100) && e < Duration::from_millis(100) + TICK * 3,
            "{e:?}"
        );
        // A future that completes after being woken, before the deadline.
        let r = timeout(Duration::from_secs(5), monoio::time::sleep(Duration::from_millis(20))).await;
        assert_eq!(r, Ok(()));
        assert_eq!(waiting(), 0, "slots are freed");
    }
}
