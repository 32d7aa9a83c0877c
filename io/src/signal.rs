//! A one-shot, single-threaded broadcast signal (e.g. "this worker is
//! stopping", "the other direction failed").
//!
//! Waiting costs one slot in a [`Waiters`] table, freed when the wait
//! completes or is dropped, so millions of short waits never accumulate wakers.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::waiters::Waiters;

/// Fires once; every current and future [`Signal::wait`] then completes.
#[derive(Debug, Default)]
pub struct Signal {
    fired: Cell<bool>,
    waiters: Waiters<()>,
}

impl Signal {
    pub fn new() -> Signal {
        Signal::default()
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Fires the signal and wakes every waiter.
    pub fn fire(&self) {
        if self.fired.replace(true) {
            return;
        }
        for w in self.waiters.take_if(|_| true) {
            w.wake();
        }
    }

    /// Completes when the signal fires.
    pub fn wait(&self) -> Wait<'_> {
        Wait { sig: self, slot: None }
    }

    /// Registers (or refreshes) `waker` in `slot`; returns the slot used.
    pub(crate) fn register(&self, slot: Option<usize>, waker: &Waker) -> usize {
        self.waiters.register(slot, (), waker)
    }

    pub(crate) fn release(&self, slot: usize) {
        self.waiters.release(slot);
    }

    /// Slots in use (for tests).
    pub fn waiters(&self) -> usize {
        self.waiters.reserved()
    }
}

/// The future of [`Signal::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    sig: &'a Signal,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.sig.is_fired() {
            if let Some(i) = self.slot.take() {
                self.sig.release(i);
            }
            return Poll::Ready(());
        }
        let slot = self.slot;
        self.slot = Some(self.sig.register(slot, cx.waker()));
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.sig.release(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test_all(timer_enabled = true)]
    async fn waits_are_released_and_fire_wakes_all() {
        let s = std::rc::Rc::new(Signal::new());
        // Many short waits that never complete: slots are reused, not accumulated.
        for _ in 0..1000 {
            let w = s.wait();
            let mut w = std::pin::pin!(w);
            let waker = futures_waker();
            let mut cx = Context::from_waker(&waker);
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(s.waiters(), 0);
        let s2 = s.clone();
        let a = monoio::spawn(async move { s2.wait().await });
        let s3 = s.clone();
        let b = monoio::spawn(async move { s3.wait().await });
        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert_eq!(s.waiters(), 2);
        s.fire();
        a.await;
        b.await;
        assert_eq!(s.waiters(), 0);
        s.wait().await; // already fired: immediate
    }

    fn futures_waker() -> Waker {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        Waker::from(std::sync::Arc::new(Noop))
    }
}
