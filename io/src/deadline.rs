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

/// Granularity of the deadlines.
pub const TICK: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Table {
    slots: RefCell<Vec<Option<(Instant, Waker)>>>,
    free: RefCell<Vec<usize>>,
    ticking: Cell<bool>,
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

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.release();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let slot = self.slot;
        let i = TABLE.with(|t| {
            let mut slots = t.slots.borrow_mut();
            let i = match slot {
                Some(i) => i as usize,
                None => match t.free.borrow_mut().pop() {
                    Some(i) => i,
                    None => {
                        slots.push(None);
                        slots.len() - 1
                    }
                },
            };
            match &mut slots[i] {
                Some((_, w)) if w.will_wake(cx.waker()) => {}
                s => *s = Some((deadline, cx.waker().clone())),
            }
            if !t.ticking.replace(true) {
                monoio::spawn(tick());
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
            TABLE.with(|t| {
                if let Some(s) = t.slots.borrow_mut().get_mut(i as usize) {
                    *s = None;
                    t.free.borrow_mut().push(i as usize);
                }
            });
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
            let mut wake = Vec::new();
            let mut next: Option<Instant> = None;
            for s in t.slots.borrow_mut().iter_mut() {
                match s {
                    Some((d, _)) if *d <= now => {
                        if let Some((_, w)) = s.take() {
                            wake.push(w);
                        }
                    }
                    Some((d, _)) => next = Some(next.map_or(*d, |n: Instant| n.min(*d))),
                    None => {}
                }
            }
            if next.is_none() {
                t.ticking.set(false);
            }
            (wake, next)
        });
        // A woken waiter finds its deadline passed and frees its slot itself.
        for w in woken {
            w.wake();
        }
        let Some(next) = next else { return };
        let wait = next.saturating_duration_since(Instant::now()).max(TICK);
        monoio::time::sleep(wait).await;
    }
}

/// Waiters currently registered on this worker (for tests).
pub fn waiting() -> usize {
    TABLE.with(|t| t.slots.borrow().iter().filter(|s| s.is_some()).count())
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
}
