//! Worker runtimes: monoio with io_uring, falling back to epoll.

use std::fmt;
use std::future::Future;
use std::io;

use monoio::blocking::DefaultThreadPool;
use monoio::{FusionDriver, FusionRuntime, RuntimeBuilder};

/// Which I/O driver a runtime runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// Submission queue entries per io_uring instance.
const URING_ENTRIES: u32 = 1024;

/// Builds a runtime on the current thread (io_uring when the kernel allows it,
/// else epoll; `MONOIO_FORCE_LEGACY_DRIVER=1` forces epoll), with timers and
/// `pool` for `spawn_blocking`, and runs `f` to completion on it.
pub fn block_on<F, Fut>(pool: Option<DefaultThreadPool>, f: F) -> io::Result<Fut::Output>
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future,
{
    let mut builder = RuntimeBuilder::<FusionDriver>::new()
        .with_entries(URING_ENTRIES)
        .enable_timer();
    if let Some(pool) = pool {
        builder = builder.attach_thread_pool(Box::new(pool));
    }
    let mut rt = builder.build()?;
    let driver = match &rt {
        FusionRuntime::Uring(_) => Driver::IoUring,
        FusionRuntime::Legacy(_) => Driver::Epoll,
    };
    Ok(rt.block_on(f(driver)))
}
