//! Listener sockets: one SO_REUSEPORT socket per worker and port.
//!
//! The kernel spreads incoming connections across the sockets, so each
//! worker accepts on its own socket and no accept lock is shared.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Opens `count` listening sockets on `addr` with SO_REUSEPORT. When the port
/// is 0 the first socket picks a free port and the others join it.
///
/// TCP_NODELAY is set on the listening sockets: Linux copies it to every
/// accepted connection, which saves a `setsockopt` per connection.
pub fn reuseport_listeners(addr: SocketAddr, count: usize, backlog: i32) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        sock.bind(&addr.into())?;
        sock.listen(backlog)?;
        if addr.port() == 0
            && let Some(a) = sock.local_addr()?.as_socket()
        {
            addr = a;
        }
        out.push(sock.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_an_ephemeral_port() {
        let ls = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }

    #[test]
    fn accepted_connections_inherit_nodelay() {
        let ls = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
        let l = &ls[0];
        l.set_nonblocking(false).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _) = l.accept().unwrap();
        assert!(a.nodelay().unwrap(), "accepted socket has TCP_NODELAY");
    }
}
