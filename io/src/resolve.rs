//! Name resolution that never blocks a worker.
//!
//! `getaddrinfo` is blocking, so lookups run on the shared blocking pool
//! (`monoio::spawn_blocking`) and each worker caches answers for a short time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long a successful answer is reused.
const TTL_OK: Duration = Duration::from_secs(30);
/// How long a failure is remembered (so a bad name cannot hammer the resolver).
const TTL_ERR: Duration = Duration::from_secs(5);
/// Entries kept per worker.
const MAX_ENTRIES: usize = 4096;

type Answer = Result<Vec<SocketAddr>, (io::ErrorKind, String)>;

/// A per-worker resolver with a small cache.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: RefCell<HashMap<(String, u16), (Instant, Answer)>>,
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// Resolves `host:port`. IP literals are answered without any lookup.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = (host.to_ascii_lowercase(), port);
        if let Some((at, ans)) = self.cache.borrow().get(&key) {
            let ttl = if ans.is_ok() { TTL_OK } else { TTL_ERR };
            if at.elapsed() < ttl {
                return to_result(ans.clone());
            }
        }
        let name = key.0.clone();
        let ans: Answer = match monoio::spawn_blocking(move || lookup(&name, port)).await {
            Ok(a) => a,
            Err(_) => Err((io::ErrorKind::Other, "resolver thread failed".into())),
        };
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= MAX_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, (at, _)| now.duration_since(*at) < TTL_OK);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), ans.clone()));
        to_result(ans)
    }
}

fn to_result(a: Answer) -> io::Result<Vec<SocketAddr>> {
    a.map_err(|(k, m)| io::Error::new(k, m))
}

#[expect(clippy::disallowed_methods, reason = "runs on the blocking pool, never on a worker")]
fn lookup(host: &str, port: u16) -> Answer {
    use std::net::ToSocketAddrs;
    match (host, port).to_socket_addrs() {
        Ok(it) => {
            let mut v: Vec<SocketAddr> = it.collect();
            // Prefer IPv4 first for predictable behaviour on dual-stack loopback setups.
            v.sort_by_key(|a| a.is_ipv6());
            if v.is_empty() {
                Err((io::ErrorKind::NotFound, format!("no addresses for {host}")))
            } else {
                Ok(v)
            }
        }
        Err(e) => Err((io::ErrorKind::NotFound, format!("cannot resolve {host}: {e}"))),
    }
}

/// Connects to the first of `addrs` that accepts, all within `timeout`.
pub async fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> io::Result<monoio::net::TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        match monoio::time::timeout(left, monoio::net::TcpStream::connect_addr(*a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }
    Err(last)
}
