//! Who holds a port msc needs.
//!
//! A local user who binds msc's control port (or a slot port) before msc
//! starts could serve browsers a PAC of their own (everything DIRECT) or
//! read their traffic. msc refuses to start in that case and names the
//! holder, from the kernel's socket table (`/proc/net/tcp`, `/proc/net/tcp6`).

use std::fmt;
use std::net::SocketAddr;

/// A port msc must listen on is held by another process.
#[derive(Debug)]
pub struct PortHeld {
    pub addr: SocketAddr,
    /// What needed it (`control.listen`, `slot 1 http_port`...).
    pub what: String,
    /// The uid owning the listening socket, when the socket table shows one.
    pub uid: Option<u32>,
    /// That uid's name, from `/etc/passwd`.
    pub user: Option<String>,
    /// Whether that uid is another user than msc's own (possible squatting).
    pub other_user: bool,
}

impl fmt::Display for PortHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot listen on {} ({}): the port is already in use",
            self.addr, self.what
        )?;
        match (self.uid, &self.user) {
            (Some(uid), Some(u)) => write!(f, " by a process of uid {uid} ({u})")?,
            (Some(uid), None) => write!(f, " by a process of uid {uid}")?,
            _ => {}
        }
        if self.other_user {
            write!(
                f,
                "; another user holding msc's port could serve browsers a proxy configuration of their own: \
                 msc must start at boot, before users log in (see docs/security.md)"
            )?;
        } else {
            write!(f, "; is another msc already running?")?;
        }
        Ok(())
    }
}

impl std::error::Error for PortHeld {}

/// Explains a failed bind: for "address in use", who holds the port.
pub fn explain_bind(addr: SocketAddr, what: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() != std::io::ErrorKind::AddrInUse {
        return anyhow::Error::new(e).context(format!("cannot listen on {addr} ({what})"));
    }
    let uid = listener_uid(addr.port());
    let me = std::fs::metadata("/proc/self").ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    anyhow::Error::new(PortHeld {
        addr,
        what: what.to_string(),
        uid,
        user: uid.and_then(user_name),
        other_user: matches!((uid, me), (Some(u), Some(m)) if u != m),
    })
}

/// The uid of a socket listening on `port` (any local address), from the
/// kernel's TCP tables.
pub fn listener_uid(port: u16) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|t| {
        let text = std::fs::read_to_string(t).ok()?;
        text.lines().skip(1).find_map(|line| listening_uid_in(line, port))
    })
}

/// One line of `/proc/net/tcp{,6}`: the uid, if it is a listener on `port`.
fn listening_uid_in(line: &str, port: u16) -> Option<u32> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
    let local = cols.get(1)?;
    let state = cols.get(3)?;
    let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
    // 0A = TCP_LISTEN
    (p == port && *state == "0A").then(|| cols.get(7)?.parse().ok())?
}

/// A uid's name from `/etc/passwd`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_socket_table() {
        let line = "   1: 0100007F:6CA2 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listening_uid_in(line, 0x6CA2), Some(1000));
        assert_eq!(listening_uid_in(line, 27778), None);
        let established = line.replace(" 0A ", " 01 ");
        assert_eq!(listening_uid_in(&established, 0x6CA2), None);
    }

    #[test]
    fn finds_a_real_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").unwrap().uid()
        };
        assert_eq!(listener_uid(port), Some(me));
        let e = explain_bind(
            l.local_addr().unwrap(),
            "control.listen",
            std::io::Error::from(std::io::ErrorKind::AddrInUse),
        );
        let held = e.downcast_ref::<PortHeld>().unwrap();
        assert!(!held.other_user);
        assert!(e.to_string().contains("another msc"), "{e}");
    }
}
