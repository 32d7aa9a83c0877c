//! A table of parked wakers, each with a value, for single-threaded wait
//! primitives (the one-shot [`crate::signal::Signal`], the coarse
//! [`crate::deadline`]s): a waiter holds one slot, which is reused after it
//! is released, so millions of short waits never accumulate wakers.

use std::cell::RefCell;
use std::task::Waker;

#[derive(Debug)]
pub(crate) struct Waiters<T> {
    slots: RefCell<Vec<Option<(T, Waker)>>>,
    free: RefCell<Vec<usize>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
        }
    }
}

impl<T> Waiters<T> {
    /// Parks `waker` with `value` in `slot` (a fresh slot when `None`, or when
    /// the slot's waker was taken); returns the slot used.
    pub(crate) fn register(&self, slot: Option<usize>, value: T, waker: &Waker) -> usize {
        let mut slots = self.slots.borrow_mut();
        let i = match slot.or_else(|| self.free.borrow_mut().pop()) {
            Some(i) => i,
            None => {
                slots.push(None);
                slots.len() - 1
            }
        };
        match &mut slots[i] {
            Some((v, w)) => {
                *v = value;
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
            }
            s => *s = Some((value, waker.clone())),
        }
        i
    }

    /// If `slot` still holds its waiter (not taken), refreshes its waker and
    /// says true.
    pub(crate) fn refresh(&self, slot: usize, waker: &Waker) -> bool {
        match self.slots.borrow_mut().get_mut(slot) {
            Some(Some((_, w))) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            _ => false,
        }
    }

    /// Frees `slot` for reuse.
    pub(crate) fn release(&self, slot: usize) {
        if let Some(s) = self.slots.borrow_mut().get_mut(slot) {
            *s = None;
            self.free.borrow_mut().push(slot);
        }
    }

    /// Takes the wakers of the waiters whose value `pick` selects; their slots
    /// stay reserved until their owners release them.
    pub(crate) fn take_if(&self, mut pick: impl FnMut(&T) -> bool) -> Vec<Waker> {
        let mut out = Vec::new();
        for s in self.slots.borrow_mut().iter_mut() {
            if s.as_ref().is_some_and(|(v, _)| pick(v))
                && let Some((_, w)) = s.take()
            {
                out.push(w);
            }
        }
        out
    }

    /// Slots reserved (parked or taken but not yet released).
    pub(crate) fn reserved(&self) -> usize {
        self.slots.borrow().len() - self.free.borrow().len()
    }

    /// Waiters parked (not taken).
    pub(crate) fn parked(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }
}
