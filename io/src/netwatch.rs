//! Network change notifications (Linux rtnetlink), without polling.
//!
//! A small thread blocks in `recv` on a NETLINK_ROUTE socket subscribed to
//! link, address and route changes, and calls back on each batch of events.
//! It costs nothing while the network is stable, which matters on laptops.

use std::io;
use std::mem::MaybeUninit;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn netlink_socket() -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(libc::NETLINK_ROUTE)),
    )?;
    let groups = (libc::RTMGRP_LINK
        | libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_ROUTE) as u32;
    let family = libc::sa_family_t::try_from(libc::AF_NETLINK).map_err(io::Error::other)?;
    let nl_len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_nl>()).map_err(io::Error::other)?;
    // SAFETY: `try_init` hands us zeroed storage of `sockaddr_storage` size;
    // we write a `sockaddr_nl`, which is smaller, and report its exact length.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let nl = storage.cast::<libc::sockaddr_nl>();
            (*nl).nl_family = family;
            (*nl).nl_pid = 0;
            (*nl).nl_groups = groups;
            *len = nl_len;
            Ok(())
        })
    }?;
    sock.bind(&addr)?;
    Ok(sock)
}

/// Calls `changed` (from a background thread) whenever links, addresses or
/// routes change. Bursts are coalesced: at most one call per `quiet` period.
pub fn watch(quiet: Duration, changed: impl Fn() + Send + 'static) -> io::Result<JoinHandle<()>> {
    let sock = netlink_socket()?;
    std::thread::Builder::new().name("netwatch".into()).spawn(move || {
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let mut last: Option<Instant> = None;
        loop {
            match sock.recv(&mut buf) {
                Ok(0) => return,
                Ok(_) => {
                    if last.is_none_or(|t| t.elapsed() >= quiet) {
                        last = Some(Instant::now());
                        changed();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ENOBUFS: events were lost; that is itself a change.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed(),
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_socket_opens_or_fails_cleanly() {
        // Sandboxes may not offer rtnetlink; either way this must not panic.
        match netlink_socket() {
            Ok(s) => assert!(s.local_addr().is_ok()),
            Err(e) => eprintln!("rtnetlink unavailable here: {e}"),
        }
    }
}
