//! Multishot io_uring operations and the ring's submitter (msc patch; see
//! MSC-PATCH.md at the crate root). monoio 0.2 completes each operation
//! once; a multishot operation (a multishot receive with provided buffers,
//! say) completes many times until one completion comes without
//! `IORING_CQE_F_MORE`.

use std::{
    cell::UnsafeCell,
    io,
    rc::Rc,
    task::{Context, Poll},
};

use super::UringInner;
use crate::driver::{Inner, CURRENT};

/// A multishot operation on this thread's io_uring runtime.
///
/// Its completions queue in the driver until taken with
/// [`Multishot::poll_next`]. Dropping it cancels the operation; completions
/// nobody took, and any that arrive later, go to the `orphan` function
/// given at submission (to give a provided buffer back, for example).
pub struct Multishot {
    inner: Rc<UnsafeCell<UringInner>>,
    index: usize,
}

impl std::fmt::Debug for Multishot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multishot").field("index", &self.index).finish()
    }
}

fn uring() -> io::Result<Rc<UnsafeCell<UringInner>>> {
    if !CURRENT.is_set() {
        return Err(io::Error::other("not inside a monoio runtime"));
    }
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => Ok(this.clone()),
        #[allow(unreachable_patterns)]
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the runtime does not use io_uring",
        )),
    })
}

impl Multishot {
    /// Submits `sqe` (its user data is replaced) as a multishot operation
    /// on the current runtime. Fails on a runtime that is not io_uring.
    ///
    /// # Safety
    /// Whatever `sqe` points to (file descriptor, buffer group) must stay
    /// valid until the operation's last completion, which may come after
    /// this value is dropped.
    pub unsafe fn submit(
        sqe: io_uring::squeue::Entry,
        orphan: fn(io::Result<u32>, u32),
    ) -> io::Result<Multishot> {
        let inner = uring()?;
        let index = UringInner::submit_multishot(&inner, sqe, orphan)?;
        Ok(Multishot { inner, index })
    }

    /// The next completion (result and CQE flags); `None` once the last one
    /// has been taken.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(io::Result<u32>, u32)>> {
        UringInner::poll_multishot(&self.inner, self.index, cx)
    }

    /// Whether [`Multishot::poll_next`] would return at once.
    pub fn is_ready(&self) -> bool {
        UringInner::multishot_ready(&self.inner, self.index)
    }

    /// Asks the kernel to stop the operation. Completions already posted
    /// stay queued; the last one follows.
    pub fn cancel(&self) {
        // SAFETY: pushes an AsyncCancel for this operation's user data.
        unsafe { UringInner::cancel_op(&self.inner, self.index) }
    }
}

impl Drop for Multishot {
    fn drop(&mut self) {
        UringInner::drop_multishot(&self.inner, self.index);
    }
}

/// Runs `f` with the current io_uring runtime's submitter (to register a
/// provided-buffer ring, say). `None` outside an io_uring runtime.
pub fn with_submitter<R>(f: impl FnOnce(io_uring::Submitter<'_>) -> R) -> Option<R> {
    let inner = uring().ok()?;
    // SAFETY: single-threaded runtime; no other borrow of the ring is live
    // while `f` runs (it gets only the submitter).
    let inner = unsafe { &*inner.get() };
    Some(f(inner.uring.submitter()))
}
