//! Worker runtimes: monoio with io_uring, falling back to epoll.
//!
//! io_uring rings are set up with the cheapest task-work mode the kernel
//! accepts (see [`SetupFlags`]); the choice is probed once per process,
//! falls back flag by flag on kernels that refuse one, and is logged once at
//! debug level.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::OnceLock;

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

/// The environment variable that picks the io_uring setup flags: `none`,
/// `coop` or `defer` (the default). A benchmarking knob for A/B runs of one
/// binary (perf/levers.md), not a configuration key; read once per process.
pub const URING_FLAGS_ENV: &str = "MSC_URING_FLAGS";

/// io_uring setup flags for a worker's ring.
///
/// Every ring is created, entered and drained by the one thread that runs its
/// runtime, and monoio reaps completions only when it parks (or submits
/// because its run queue did not empty), so the kernel need not interrupt a
/// worker to run task work (`COOP_TASKRUN`, Linux 5.19), may assume a single
/// submitter (`SINGLE_ISSUER`, 6.0) and may defer task work until the worker
/// waits for completions (`DEFER_TASKRUN`, 6.1, needs `SINGLE_ISSUER`;
/// monoio waits with `IORING_ENTER_GETEVENTS`, which runs it).
///
/// Not used: `TASKRUN_FLAG` (it sets `IORING_SQ_TASKRUN` for a runtime that
/// peeks the completion queue without entering the kernel; neither monoio
/// 0.2 nor io-uring 0.6 reads it) and a registered ring fd (io-uring 0.6 has
/// no `io_uring_enter` with `IORING_ENTER_REGISTERED_RING`, and monoio
/// enters through its own ring handle).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetupFlags {
    pub coop_taskrun: bool,
    pub single_issuer: bool,
    pub defer_taskrun: bool,
}

impl SetupFlags {
    /// monoio's default: the kernel interrupts the worker for task work.
    pub const NONE: SetupFlags = SetupFlags {
        coop_taskrun: false,
        single_issuer: false,
        defer_taskrun: false,
    };
    /// `COOP_TASKRUN | SINGLE_ISSUER`.
    pub const COOP: SetupFlags = SetupFlags {
        coop_taskrun: true,
        single_issuer: true,
        defer_taskrun: false,
    };
    /// `COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN`.
    pub const DEFER: SetupFlags = SetupFlags {
        coop_taskrun: true,
        single_issuer: true,
        defer_taskrun: true,
    };
    /// The default when [`URING_FLAGS_ENV`] is unset.
    pub const DEFAULT: SetupFlags = SetupFlags::DEFER;

    /// From most to fewest flags: each step drops the flag the newest
    /// kernels added, so an older kernel lands on what it supports.
    const LADDER: [SetupFlags; 4] = [
        SetupFlags::DEFER,
        SetupFlags::COOP,
        SetupFlags {
            coop_taskrun: true,
            single_issuer: false,
            defer_taskrun: false,
        },
        SetupFlags::NONE,
    ];

    /// Parses a [`URING_FLAGS_ENV`] value.
    pub fn parse(s: &str) -> Result<SetupFlags, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(SetupFlags::NONE),
            "coop" => Ok(SetupFlags::COOP),
            "defer" => Ok(SetupFlags::DEFER),
            other => Err(format!(
                "{URING_FLAGS_ENV}: unknown value {other:?} (none, coop or defer)"
            )),
        }
    }

    /// Whether every flag of `self` is also in `other`.
    fn within(self, other: SetupFlags) -> bool {
        (!self.coop_taskrun || other.coop_taskrun)
            && (!self.single_issuer || other.single_issuer)
            && (!self.defer_taskrun || other.defer_taskrun)
    }

    /// An io_uring builder with these flags.
    pub fn builder(self) -> io_uring::Builder {
        let mut b = io_uring::IoUring::builder();
        if self.coop_taskrun {
            b.setup_coop_taskrun();
        }
        if self.single_issuer {
            b.setup_single_issuer();
        }
        if self.defer_taskrun {
            b.setup_defer_taskrun();
        }
        b
    }
}

impl fmt::Display for SetupFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.coop_taskrun, "coop_taskrun"),
            (self.single_issuer, "single_issuer"),
            (self.defer_taskrun, "defer_taskrun"),
        ];
        let mut any = false;
        for (on, name) in names {
            if on {
                f.write_str(if any { "+" } else { "" })?;
                f.write_str(name)?;
                any = true;
            }
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// The first set on the ladder, at or below `requested`, that `try_build`
/// accepts, and the refusals on the way. Falls back to [`SetupFlags::NONE`]
/// without trying it: with no flags, monoio's own detection decides.
fn negotiate(
    requested: SetupFlags,
    mut try_build: impl FnMut(SetupFlags) -> io::Result<()>,
) -> (SetupFlags, Vec<(SetupFlags, io::Error)>) {
    let mut refused = Vec::new();
    for flags in SetupFlags::LADDER {
        if !flags.within(requested) {
            continue;
        }
        if flags == SetupFlags::NONE {
            break;
        }
        match try_build(flags) {
            Ok(()) => return (flags, refused),
            Err(e) => refused.push((flags, e)),
        }
    }
    (SetupFlags::NONE, refused)
}

/// The io_uring setup flags this process's rings use: those asked for with
/// [`URING_FLAGS_ENV`] (default [`SetupFlags::DEFAULT`]), less any the
/// kernel refuses. Probed once with a small throwaway ring; an unknown
/// variable value is an error.
pub fn uring_setup() -> io::Result<SetupFlags> {
    static SETUP: OnceLock<Result<SetupFlags, String>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let requested = match std::env::var(URING_FLAGS_ENV) {
                Ok(v) => SetupFlags::parse(&v)?,
                Err(_) => SetupFlags::DEFAULT,
            };
            if !monoio::utils::detect_uring() {
                tracing::debug!("io_uring not in use: setup flags not probed");
                return Ok(SetupFlags::NONE);
            }
            let (flags, refused) = negotiate(requested, |f| f.builder().build(8).map(drop));
            let refused: Vec<String> = refused.iter().map(|(f, e)| format!("{f}: {e}")).collect();
            tracing::debug!(
                "io_uring setup flags: {flags} (asked for {requested}{}{})",
                if refused.is_empty() { "" } else { "; kernel refused " },
                refused.join(", ")
            );
            Ok(flags)
        })
        .clone()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Builds a runtime on the current thread with the chosen driver, timers,
/// and `pool` for `spawn_blocking`, and runs `f` to completion on it.
pub fn block_on<F, Fut>(choice: DriverChoice, pool: Option<DefaultThreadPool>, f: F) -> io::Result<Fut::Output>
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future,
{
    let flags = match choice {
        DriverChoice::Epoll => SetupFlags::NONE,
        DriverChoice::Auto | DriverChoice::IoUring => uring_setup()?,
    };
    block_on_with(choice, flags, pool, f)
}

/// As [`block_on`], with io_uring rings set up with `flags` (which the
/// kernel must accept).
pub fn block_on_with<F, Fut>(
    choice: DriverChoice,
    flags: SetupFlags,
    pool: Option<DefaultThreadPool>,
    f: F,
) -> io::Result<Fut::Output>
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future,
{
    match choice {
        DriverChoice::Auto => {
            let mut rt = with_pool(
                RuntimeBuilder::<FusionDriver>::new()
                    .with_entries(URING_ENTRIES)
                    .uring_builder(flags.builder())
                    .enable_timer(),
                pool,
            )
            .build()?;
            let driver = match &rt {
                FusionRuntime::Uring(_) => Driver::IoUring,
                FusionRuntime::Legacy(_) => Driver::Epoll,
            };
            crate::stream::set_exact_readiness(driver == Driver::IoUring);
            Ok(rt.block_on(with_ring(driver, f)))
        }
        DriverChoice::IoUring => {
            let mut rt = with_pool(
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(URING_ENTRIES)
                    .uring_builder(flags.builder())
                    .enable_timer(),
                pool,
            )
            .build()
            .map_err(|e| io::Error::new(e.kind(), format!("io_uring is not available: {e}")))?;
            crate::stream::set_exact_readiness(true);
            Ok(rt.block_on(with_ring(Driver::IoUring, f)))
        }
        DriverChoice::Epoll => {
            let mut rt = with_pool(RuntimeBuilder::<LegacyDriver>::new().enable_timer(), pool).build()?;
            crate::stream::set_exact_readiness(false);
            Ok(rt.block_on(f(Driver::Epoll)))
        }
    }
}

/// Runs `f` with this thread's provided-buffer ring registered with the
/// runtime (io_uring only; see [`crate::provided`]).
async fn with_ring<F, Fut>(driver: Driver, f: F) -> Fut::Output
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future,
{
    struct Installed;
    impl Drop for Installed {
        fn drop(&mut self) {
            crate::provided::uninstall();
        }
    }
    let _ring = (driver == Driver::IoUring && crate::provided::install(crate::provided::ENTRIES)).then_some(Installed);
    f(driver).await
}

/// Attaches `pool` (if any) for `spawn_blocking`.
fn with_pool<D>(b: RuntimeBuilder<D>, pool: Option<DefaultThreadPool>) -> RuntimeBuilder<D> {
    match pool {
        Some(p) => b.attach_thread_pool(Box::new(p)),
        None => b,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn einval() -> io::Error {
        io::Error::from_raw_os_error(libc::EINVAL)
    }

    #[test]
    fn refused_flags_fall_back_one_at_a_time() {
        // A 6.0 kernel: no DEFER_TASKRUN.
        let mut tried = Vec::new();
        let (got, refused) = negotiate(SetupFlags::DEFER, |f| {
            tried.push(f);
            if f.defer_taskrun { Err(einval()) } else { Ok(()) }
        });
        assert_eq!(got, SetupFlags::COOP);
        assert_eq!(tried, [SetupFlags::DEFER, SetupFlags::COOP]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, SetupFlags::DEFER);
        assert_eq!(refused[0].1.raw_os_error(), Some(libc::EINVAL));

        // A 5.19 kernel: COOP_TASKRUN only.
        let (got, refused) = negotiate(SetupFlags::DEFER, |f| {
            if f.single_issuer || f.defer_taskrun {
                Err(einval())
            } else {
                Ok(())
            }
        });
        assert_eq!(got.to_string(), "coop_taskrun");
        assert_eq!(refused.len(), 2);

        // Nothing accepted (an old kernel, or io_uring refused altogether):
        // no flags, and monoio's own detection decides the driver.
        let (got, refused) = negotiate(SetupFlags::DEFER, |_| Err(einval()));
        assert_eq!(got, SetupFlags::NONE);
        assert_eq!(refused.len(), 3);

        // Never more than asked for; `none` probes nothing.
        let mut tried = Vec::new();
        let (got, _) = negotiate(SetupFlags::COOP, |f| {
            tried.push(f);
            Ok(())
        });
        assert_eq!((got, tried.len()), (SetupFlags::COOP, 1));
        let (got, refused) = negotiate(SetupFlags::NONE, |_| panic!("nothing to probe"));
        assert_eq!((got, refused.len()), (SetupFlags::NONE, 0));
    }

    #[test]
    fn knob_values() {
        assert_eq!(SetupFlags::parse("none"), Ok(SetupFlags::NONE));
        assert_eq!(SetupFlags::parse(" Coop "), Ok(SetupFlags::COOP));
        assert_eq!(SetupFlags::parse("defer"), Ok(SetupFlags::DEFER));
        let e = SetupFlags::parse("sqpoll").unwrap_err();
        assert!(e.contains("MSC_URING_FLAGS") && e.contains("sqpoll"), "{e}");
        assert_eq!(
            SetupFlags::DEFER.to_string(),
            "coop_taskrun+single_issuer+defer_taskrun"
        );
        assert_eq!(SetupFlags::NONE.to_string(), "none");
    }

    /// The real kernel: a throwaway ring with each set either builds or is
    /// refused with an error, and kernels from 6.1 on take them all.
    #[test]
    fn this_kernel_takes_the_flags_it_supports() {
        let (flags, refused) = negotiate(SetupFlags::DEFER, |f| f.builder().build(8).map(drop));
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if version >= (6, 1) && uring_available() {
            assert_eq!(flags, SetupFlags::DEFER, "refused: {refused:?}");
        }
    }

    fn uring_available() -> bool {
        io_uring::IoUring::new(2).is_ok()
    }

    /// Other threads (the control plane, the blocking pool) wake a parked
    /// worker through monoio's eventfd, whatever the ring's flags: a
    /// deferred task-work ring still runs the eventfd read's completion
    /// when the worker waits with GETEVENTS.
    #[test]
    fn other_threads_wake_a_parked_worker_with_every_flag_set() {
        for flags in SetupFlags::LADDER {
            for choice in [DriverChoice::IoUring, DriverChoice::Epoll] {
                if choice == DriverChoice::Epoll && flags != SetupFlags::NONE {
                    continue;
                }
                let pool = DefaultThreadPool::new(1);
                let res = block_on_with(choice, flags, Some(pool), |_| async move {
                    let (tx, rx) = flume::bounded::<u32>(1);
                    let (about_to_wait, waiting) = std::sync::mpsc::channel::<()>();
                    let sender = std::thread::spawn(move || {
                        waiting.recv().unwrap();
                        // Not readiness: gives the worker time to park, so the
                        // send below has to wake it through the eventfd.
                        #[expect(clippy::disallowed_methods, reason = "test thread, not a worker")]
                        std::thread::sleep(Duration::from_millis(50));
                        tx.send(7).unwrap();
                    });
                    let t = Instant::now();
                    about_to_wait.send(()).unwrap();
                    // Without a working wake-up the worker sleeps until this timer.
                    let got = monoio::time::timeout(Duration::from_secs(5), rx.recv_async()).await;
                    let from_thread = t.elapsed();
                    sender.join().unwrap();
                    let t = Instant::now();
                    let blocking = monoio::time::timeout(
                        Duration::from_secs(5),
                        monoio::spawn_blocking(|| {
                            #[expect(clippy::disallowed_methods, reason = "runs on the blocking pool")]
                            std::thread::sleep(Duration::from_millis(50));
                            11
                        }),
                    )
                    .await;
                    (got, from_thread, blocking, t.elapsed())
                })
                .unwrap();
                let (got, from_thread, blocking, from_pool) = res;
                assert_eq!(got.ok().and_then(Result::ok), Some(7), "{flags} {choice:?}");
                assert!(
                    from_thread < Duration::from_secs(3),
                    "{flags} {choice:?}: {from_thread:?}"
                );
                assert_eq!(blocking.ok().and_then(Result::ok), Some(11), "{flags} {choice:?}");
                assert!(from_pool < Duration::from_secs(3), "{flags} {choice:?}: {from_pool:?}");
            }
        }
    }

    /// Sockets work on a deferred-task-work ring: a loopback echo.
    #[test]
    fn loopback_io_on_every_flag_set() {
        use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
        for flags in SetupFlags::LADDER {
            block_on_with(DriverChoice::IoUring, flags, None, |_| async move {
                let l = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap();
                let server = monoio::spawn(async move {
                    let (mut s, _) = l.accept().await.unwrap();
                    let (r, b) = s.read_exact(vec![0u8; 5]).await;
                    r.unwrap();
                    let (r, _) = s.write_all(b).await;
                    r.unwrap();
                });
                let mut c = monoio::net::TcpStream::connect(addr).await.unwrap();
                let (r, _) = c.write_all(b"hello".to_vec()).await;
                r.unwrap();
                let (r, b) = c.read_exact(vec![0u8; 5]).await;
                r.unwrap();
                assert_eq!(b, b"hello", "{flags}");
                server.await;
            })
            .unwrap();
        }
    }
}
