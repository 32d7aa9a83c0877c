//! Worker runtimes: monoio with io_uring, falling back to epoll.

use std::fmt;
use std::future::Future;
use std::io;

use monoio::blocking::DefaultThreadPool;
use monoio::{FusionDriver, FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

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

/// Which driver to run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, else epoll
    /// (`MONOIO_FORCE_LEGACY_DRIVER=1` forces epoll).
    #[default]
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll.
    Epoll,
}

/// Submission queue entries per io_uring instance.
const URING_ENTRIES: u32 = 1024;

/// Builds a runtime on the current thread with the chosen driver, timers,
/// and `pool` for `spawn_blocking`, and runs `f` to completion on it.
pub fn block_on<F, Fut>(choice: DriverChoice, pool: Option<DefaultThreadPool>, f: F) -> io::Result<Fut::Output>
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future,
{
    match choice {
        DriverChoice::Auto => {
            let mut rt = with_pool(
                RuntimeBuilder::<FusionDriver>::new()
                    .with_entries(URING_ENTRIES)
                    .enable_timer(),
                pool,
            )
            .build()?;
            let driver = match &rt {
                FusionRuntime::Uring(_) => Driver::IoUring,
                FusionRuntime::Legacy(_) => Driver::Epoll,
            };
            crate::stream::set_exact_readiness(driver == Driver::IoUring);
            Ok(rt.block_on(f(driver)))
        }
        DriverChoice::IoUring => {
            let mut rt = with_pool(
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(URING_ENTRIES)
                    .enable_timer(),
                pool,
            )
            .build()
            .map_err(|e| io::Error::new(e.kind(), format!("io_uring is not available: {e}")))?;
            crate::stream::set_exact_readiness(true);
            Ok(rt.block_on(f(Driver::IoUring)))
        }
        DriverChoice::Epoll => {
            let mut rt = with_pool(RuntimeBuilder::<LegacyDriver>::new().enable_timer(), pool).build()?;
            crate::stream::set_exact_readiness(false);
            Ok(rt.block_on(f(Driver::Epoll)))
        }
    }
}

/// Attaches `pool` (if any) for `spawn_blocking`.
fn with_pool<D>(b: RuntimeBuilder<D>, pool: Option<DefaultThreadPool>) -> RuntimeBuilder<D> {
    match pool {
        Some(p) => b.attach_thread_pool(Box::new(p)),
        None => b,
    }
}
