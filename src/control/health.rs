//! Worker liveness: the control plane asks every worker and waits for each
//! answer, so a wedged worker (a thread stuck in a blocking call or a busy
//! loop, or one that has died) shows, while the control thread itself keeps
//! answering.
//!
//! Each worker runs a tiny responder task on its own runtime: it answers a
//! ping only if that runtime still schedules tasks. Used by `GET /health` and
//! by the systemd watchdog feed (`WATCHDOG=1` only after every worker answered).
//!
//! # Thread Safety
//! [`WorkerPings`] is `Send + Sync` (flume senders) and lives on the control
//! thread; each [`Responder`] moves into its worker at start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long `GET /health` waits for the workers.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Pings queued per worker before it counts as not answering.
const QUEUE: usize = 4;

type Reply = flume::Sender<()>;

/// The control plane's side: one channel per worker.
#[derive(Clone, Debug, Default)]
pub struct WorkerPings {
    workers: Arc<[flume::Sender<Reply>]>,
}

/// A worker's side: answers pings while its runtime runs.
#[derive(Clone, Debug)]
pub struct Responder(flume::Receiver<Reply>);

/// `n` workers' channels.
pub fn channels(n: usize) -> (WorkerPings, Vec<Responder>) {
    let (tx, rx): (Vec<_>, Vec<_>) = (0..n).map(|_| flume::bounded(QUEUE)).unzip();
    (
        WorkerPings { workers: tx.into() },
        rx.into_iter().map(Responder).collect(),
    )
}

impl Responder {
    /// Spawns the responder on the current (worker) runtime.
    pub fn spawn(self) {
        monoio::spawn(async move {
            while let Ok(reply) = self.0.recv_async().await {
                let _ = reply.send(());
            }
        });
    }
}

/// One worker's answer.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerHealth {
    pub worker: usize,
    pub answered: bool,
    /// Round trip, when it answered.
    pub ms: Option<f64>,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Every worker answered within the time limit.
    pub ok: bool,
    pub workers: Vec<WorkerHealth>,
}

impl Health {
    /// The workers that did not answer, for logs: "1, 3".
    pub fn silent(&self) -> String {
        self.workers
            .iter()
            .filter(|w| !w.answered)
            .map(|w| w.worker.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl WorkerPings {
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Asks every worker at once; waits at most `timeout` for all answers.
    pub async fn ask_all(&self, timeout: Duration) -> Health {
        let start = Instant::now();
        let asks = self.workers.iter().enumerate().map(|(i, w)| {
            let (tx, rx) = flume::bounded::<()>(1);
            // A full queue means earlier pings are still unanswered.
            let sent = w.try_send(tx).is_ok();
            async move {
                let answered = sent && matches!(monoio::time::timeout(timeout, rx.recv_async()).await, Ok(Ok(())));
                WorkerHealth {
                    worker: i,
                    answered,
                    ms: answered.then(|| start.elapsed().as_secs_f64() * 1000.0),
                }
            }
        });
        let workers = futures_util::future::join_all(asks).await;
        Health {
            ok: workers.iter().all(|w| w.answered),
            workers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real worker threads, each with its own runtime; one is wedged by a
    /// blocking call in a task, as a bug on the data path would.
    #[test]
    fn a_wedged_worker_shows() {
        let (pings, responders) = channels(2);
        let (wedge_tx, wedge_rx) = flume::bounded::<()>(1);
        let (stop_tx, stop_rx) = flume::bounded::<()>(0);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let mut release_rx = Some(release_rx);
        let mut threads = Vec::new();
        for (i, r) in responders.into_iter().enumerate() {
            let wedge_rx = wedge_rx.clone();
            let stop_rx = stop_rx.clone();
            let release = if i == 1 { release_rx.take() } else { None };
            threads.push(std::thread::spawn(move || {
                msc_io::runtime::block_on(msc_io::runtime::DriverChoice::Auto, None, move |_| async move {
                    r.spawn();
                    if let Some(release) = release {
                        // Worker 1 blocks its thread once told to.
                        let _ = wedge_rx.recv_async().await;
                        let _ = release.recv_timeout(Duration::from_secs(20));
                    }
                    let _ = stop_rx.recv_async().await;
                })
                .unwrap();
            }));
        }
        let check = |pings: &WorkerPings| {
            let p = pings.clone();
            std::thread::spawn(move || {
                msc_io::runtime::block_on(msc_io::runtime::DriverChoice::Auto, None, move |_| async move {
                    p.ask_all(Duration::from_millis(300)).await
                })
                .unwrap()
            })
            .join()
            .unwrap()
        };
        let h = check(&pings);
        assert!(h.ok, "{h:?}");
        wedge_tx.send(()).unwrap();
        let h = check(&pings);
        assert!(!h.ok, "{h:?}");
        assert!(h.workers[0].answered && !h.workers[1].answered, "{h:?}");
        assert_eq!(h.silent(), "1");
        // Released: it answers again.
        release_tx.send(()).unwrap();
        let h = check(&pings);
        assert!(h.ok, "{h:?}");
        drop(stop_tx);
        for t in threads {
            t.join().unwrap();
        }
    }
}
