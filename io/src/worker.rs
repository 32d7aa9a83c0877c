//! The thread-per-core engine shared by the client and the gateway.
//!
//! Each worker is an OS thread running its own monoio runtime. It owns one
//! SO_REUSEPORT socket per listening port and every connection it accepts;
//! nothing on the data path is shared between workers or locked.
//!
//! # Thread Safety
//! [`Workers`] lives on the thread that started the engine. The per-worker
//! [`Service`] is created inside its worker thread (it is `!Send`: `Rc`,
//! `RefCell`); only the factory closure crosses threads.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Driver;
use crate::signal::Signal;
use futures_util::FutureExt;
use monoio::blocking::DefaultThreadPool;
use monoio::net::{TcpListener, TcpStream};

thread_local! {
    static STOPPING: Rc<Signal> = Rc::new(Signal::new());
}

/// Fires when this worker stops accepting: connections idle between
/// requests close at once, busy ones finish within the grace period.
pub fn stopping() -> Rc<Signal> {
    STOPPING.with(Rc::clone)
}

/// A listener's stable number: the position of its socket in the lists
/// given to [`Workers::start`], or the number given to [`ListenerControl::add`].
pub type ListenerId = usize;

/// A change to a running worker's set of listening sockets.
#[derive(Debug)]
pub enum ListenerCmd {
    /// Start accepting on this socket (one of an SO_REUSEPORT group).
    Add(ListenerId, std::net::TcpListener),
    /// Stop accepting on listener `id`; its socket closes once dropped.
    /// Connections accepted on it go on.
    Remove(ListenerId),
}

/// Adds and removes listening sockets on running workers (hot reload).
///
/// # Thread Safety
/// `Send + Sync + Clone`: one channel per worker; commands are applied on
/// each worker's own thread, in order.
#[derive(Debug, Clone)]
pub struct ListenerControl {
    workers: Vec<flume::Sender<ListenerCmd>>,
}

impl ListenerControl {
    /// A control for `workers` workers and the receivers to give
    /// [`Workers::start_dynamic`] (in worker order).
    pub fn new(workers: usize) -> (ListenerControl, Vec<flume::Receiver<ListenerCmd>>) {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..workers).map(|_| flume::unbounded()).unzip();
        (ListenerControl { workers: tx }, rx)
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Starts accepting on `socks` (one per worker, in worker order) as
    /// listener `id`. The sockets already listen: connections queue in their
    /// backlog until each worker's accept loop takes them.
    pub fn add(&self, id: ListenerId, socks: Vec<std::net::TcpListener>) -> io::Result<()> {
        if socks.len() != self.workers.len() {
            return Err(io::Error::other(format!(
                "{} sockets for {} workers",
                socks.len(),
                self.workers.len()
            )));
        }
        for (tx, s) in self.workers.iter().zip(socks) {
            tx.send(ListenerCmd::Add(id, s))
                .map_err(|_| io::Error::other("a worker has stopped"))?;
        }
        Ok(())
    }

    /// Stops accepting on listener `id` on every worker.
    pub fn remove(&self, id: ListenerId) {
        for tx in &self.workers {
            let _ = tx.send(ListenerCmd::Remove(id));
        }
    }
}

/// What a worker does with each accepted connection.
pub trait Service: 'static {
    /// Serves one connection accepted on listener `listener` (its [`ListenerId`]).
    fn serve(
        self: Rc<Self>,
        listener: usize,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + 'static;
}

/// Running workers. Dropping the stop handle (via [`Workers::stop`]) makes
/// them stop accepting and drain.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<JoinHandle<io::Result<()>>>,
    stop: Option<flume::Sender<()>>,
    pub driver: Driver,
}

impl Workers {
    /// Starts one worker per entry of `listeners` (each entry: that worker's
    /// sockets, one per port). `make` builds the worker's service on its own
    /// thread. Returns once every worker has started its runtime.
    pub fn start<S, F>(
        label: &str,
        driver_choice: crate::runtime::DriverChoice,
        listeners: Vec<Vec<std::net::TcpListener>>,
        pool: DefaultThreadPool,
        grace: Duration,
        make: F,
    ) -> io::Result<Workers>
    where
        S: Service,
        F: Fn(usize, Driver) -> io::Result<Rc<S>> + Send + Sync + 'static,
    {
        let n = listeners.len();
        let (_control, commands) = ListenerControl::new(n);
        Workers::start_dynamic(label, driver_choice, listeners, commands, pool, grace, make)
    }

    /// As [`Workers::start`], and each worker also applies the
    /// [`ListenerCmd`]s from its receiver in `commands` (see
    /// [`ListenerControl::new`]) while it runs.
    pub fn start_dynamic<S, F>(
        label: &str,
        driver_choice: crate::runtime::DriverChoice,
        listeners: Vec<Vec<std::net::TcpListener>>,
        commands: Vec<flume::Receiver<ListenerCmd>>,
        pool: DefaultThreadPool,
        grace: Duration,
        make: F,
    ) -> io::Result<Workers>
    where
        S: Service,
        F: Fn(usize, Driver) -> io::Result<Rc<S>> + Send + Sync + 'static,
    {
        if commands.len() != listeners.len() {
            return Err(io::Error::other("one listener command channel per worker is needed"));
        }
        let make = Arc::new(make);
        let (stop_tx, stop_rx) = flume::bounded::<()>(0);
        let (ready_tx, ready_rx) = flume::unbounded::<io::Result<Driver>>();
        let mut threads = Vec::new();
        let n = listeners.len();
        for (i, (socks, commands)) in listeners.into_iter().zip(commands).enumerate() {
            let make = make.clone();
            let stop = stop_rx.clone();
            let ready = ready_tx.clone();
            let pool = pool.clone();
            let t = std::thread::Builder::new()
                .name(format!("{label}-w{i}"))
                .spawn(move || {
                    let ready2 = ready.clone();
                    let res = crate::runtime::block_on(driver_choice, Some(pool), move |driver| async move {
                        let svc = match make(i, driver) {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
                                return Err(e);
                            }
                        };
                        run_worker(svc, socks, commands, stop, grace, ready, driver).await
                    });
                    match res {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready2.send(Err(io::Error::new(e.kind(), format!("cannot start runtime: {e}"))));
                            Err(e)
                        }
                    }
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut driver = Driver::IoUring;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(d)) => driver = d,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a worker exited during start-up")),
            }
        }
        Ok(Workers {
            threads,
            stop: Some(stop_tx),
            driver,
        })
    }

    /// Stops accepting, lets open connections finish (up to the grace
    /// period), and waits for the workers to exit.
    pub fn stop(mut self) {
        self.stop.take();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("worker stopped with an error: {e}"),
                Err(_) => tracing::error!("worker thread panicked"),
            }
        }
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }
}

async fn run_worker<S: Service>(
    svc: Rc<S>,
    socks: Vec<std::net::TcpListener>,
    commands: flume::Receiver<ListenerCmd>,
    stop: flume::Receiver<()>,
    grace: Duration,
    ready: flume::Sender<io::Result<Driver>>,
    driver: Driver,
) -> io::Result<()> {
    let active = Rc::new(Cell::new(0usize));
    // Per listener: dropping its sender stops its accept loop.
    let mut loops: std::collections::HashMap<ListenerId, flume::Sender<()>> = std::collections::HashMap::new();
    let mut handles = Vec::new();
    let start = |id: ListenerId, s: std::net::TcpListener, handles: &mut Vec<monoio::task::JoinHandle<()>>| {
        let l = TcpListener::from_std(s)?;
        let (own_tx, own_rx) = flume::bounded::<()>(0);
        handles.push(monoio::spawn(accept_loop(
            id,
            l,
            svc.clone(),
            stop.clone(),
            own_rx,
            active.clone(),
        )));
        io::Result::Ok(own_tx)
    };
    for (id, s) in socks.into_iter().enumerate() {
        let tx = start(id, s, &mut handles)?;
        loops.insert(id, tx);
    }
    let _ = ready.send(Ok(driver));
    drop(ready);
    // Listener changes until the stop; a closed command channel (no
    // `ListenerControl` kept) leaves only the stop to wait for.
    let mut commands_open = true;
    loop {
        let cmd = if commands_open {
            monoio::select! {
                c = commands.recv_async() => c.ok(),
                _ = stop.recv_async() => break,
            }
        } else {
            let _ = stop.recv_async().await;
            break;
        };
        match cmd {
            None => commands_open = false,
            Some(ListenerCmd::Add(id, s)) => match start(id, s, &mut handles) {
                Ok(tx) => {
                    loops.insert(id, tx);
                }
                Err(e) => tracing::warn!("cannot accept on a new listener: {e}"),
            },
            Some(ListenerCmd::Remove(id)) => {
                loops.remove(&id);
            }
        }
    }
    drop(loops);
    for l in handles {
        l.await;
    }
    stopping().fire();
    // Drain: bounded by the grace period.
    let deadline = Instant::now() + grace;
    while active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

struct Active(Rc<Cell<usize>>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A removed listener waits this long for each connection still in its backlog.
const DRAIN_WAIT: Duration = Duration::from_millis(1);
/// At most this many connections are taken from a removed listener's backlog.
const DRAIN_MAX: usize = 1024;

async fn accept_loop<S: Service>(
    li: usize,
    l: TcpListener,
    svc: Rc<S>,
    stop: flume::Receiver<()>,
    own: flume::Receiver<()>,
    active: Rc<Cell<usize>>,
) {
    let mut last_warn: Option<Instant> = None;
    let mut failures = 0u64;
    // After a removal: connections already in this socket's backlog are
    // taken (and served) before it closes, at most a backlog's worth.
    let mut draining: Option<usize> = None;
    loop {
        let accepted = match draining {
            Some(0) => break,
            Some(ref mut left) => {
                *left -= 1;
                match monoio::time::timeout(DRAIN_WAIT, l.accept()).await {
                    Ok(Ok(c)) => Ok(c),
                    _ => break,
                }
            }
            None => monoio::select! {
                r = l.accept() => r,
                _ = stop.recv_async() => break,
                _ = own.recv_async() => {
                    // The whole worker stopping drops these too: no draining then.
                    if stop.is_disconnected() {
                        break;
                    }
                    draining = Some(DRAIN_MAX);
                    continue;
                },
            },
        };
        match accepted {
            Ok((stream, peer)) => {
                // TCP_NODELAY comes from the listener (io::listen).
                active.set(active.get() + 1);
                let guard = Active(active.clone());
                let fut = svc.clone().serve(li, stream, peer);
                monoio::spawn(async move {
                    let _guard = guard;
                    if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
                        tracing::error!("connection handler from {peer} panicked; connection dropped");
                    }
                });
            }
            Err(e) => {
                // At most one line per 5 s, with the count of the ones in between.
                failures += 1;
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!("accept failed: {e} ({failures} accept failures since the last report)");
                    last_warn = Some(Instant::now());
                    failures = 0;
                }
                // Out of file descriptors or memory: back off instead of
                // spinning (the backlog keeps the connections meanwhile).
                // Anything else concerns one connection: go on at once.
                let resource = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if resource {
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::disallowed_methods,
        reason = "test: bounded polling of a port from the test thread, off any runtime"
    )]
    use super::*;
    use std::io::{Read, Write};

    /// Writes the listener id, then echoes one line-less chunk and closes.
    struct Tag;

    impl Service for Tag {
        async fn serve(self: Rc<Self>, listener: usize, stream: TcpStream, _peer: SocketAddr) {
            use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
            let mut s = stream;
            let (r, _) = s.write_all(format!("{listener}\n").into_bytes()).await;
            if r.is_err() {
                return;
            }
            let (r, buf) = s.read(Vec::with_capacity(64)).await;
            if matches!(r, Ok(n) if n > 0) {
                let _ = s.write_all(buf).await;
            }
        }
    }

    fn id_of(s: &mut std::net::TcpStream) -> String {
        let mut b = [0u8; 8];
        let n = s.read(&mut b).unwrap();
        String::from_utf8_lossy(&b[..n]).trim().to_string()
    }

    #[test]
    fn listeners_are_added_and_removed_while_running_and_accepted_connections_go_on() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let first = crate::listen::reuseport_listeners(any, 2, 64).unwrap();
        let old = first[0].local_addr().unwrap();
        let (control, commands) = ListenerControl::new(2);
        let workers = Workers::start_dynamic(
            "test",
            crate::runtime::DriverChoice::Auto,
            first.into_iter().map(|s| vec![s]).collect(),
            commands,
            DefaultThreadPool::new(1),
            Duration::from_millis(500),
            |_, _| Ok(Rc::new(Tag)),
        )
        .unwrap();
        let mut held = std::net::TcpStream::connect(old).unwrap();
        held.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(id_of(&mut held), "0");

        // Added: accepting at once (the sockets listen before the workers take them).
        let added = crate::listen::reuseport_listeners(any, 2, 64).unwrap();
        let new = added[0].local_addr().unwrap();
        control.add(7, added).unwrap();
        let mut c = std::net::TcpStream::connect(new).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(id_of(&mut c), "7");

        // Removed: the old port stops accepting; its accepted connection goes on.
        control.remove(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(old).is_ok() {
            assert!(Instant::now() < deadline, "the removed listener still accepts");
            std::thread::sleep(Duration::from_millis(10));
        }
        held.write_all(b"still here").unwrap();
        let mut echo = Vec::new();
        held.read_to_end(&mut echo).unwrap();
        assert_eq!(echo, b"still here");
        // A wrong socket count is refused, not half applied.
        assert!(control.add(8, Vec::new()).is_err());
        workers.stop();
    }
}
