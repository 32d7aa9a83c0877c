//! Kernel TLS at the socket level: is it available here, and the two
//! `setsockopt` calls that hand a connection's record protection to the
//! kernel (`TCP_ULP` "tls", then `SOL_TLS` `TLS_TX` / `TLS_RX` with a
//! `struct tls12_crypto_info_*`, built by `msc_tls::ktls`).
//!
//! Nothing on the data path calls [`enable`] yet (perf/ktls.md says what is
//! left to wire, behind a configuration key that stays off until it can be
//! tested on a kernel with `CONFIG_TLS`); [`available`] is what the wiring
//! would consult, once per process.
//!
//! Constants not in the `libc` crate come from `include/uapi/linux/tls.h`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

/// `setsockopt(SOL_TLS, TLS_TX, ...)`: the sending direction (linux/tls.h).
pub const TLS_TX: libc::c_int = 1;
/// `setsockopt(SOL_TLS, TLS_RX, ...)`: the receiving direction (linux/tls.h).
pub const TLS_RX: libc::c_int = 2;

/// Why kernel TLS cannot be used on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kernel TLS unavailable: {}", self.0)
    }
}

/// Whether this kernel offers kernel TLS, probed once per process (see
/// [`detect`]).
pub fn available() -> &'static Result<(), Unavailable> {
    static KTLS: OnceLock<Result<(), Unavailable>> = OnceLock::new();
    KTLS.get_or_init(|| {
        let r = detect();
        match &r {
            Ok(()) => tracing::debug!("kernel TLS available"),
            Err(e) => tracing::debug!("{e}"),
        }
        r
    })
}

/// Probes kernel TLS: attaches the "tls" upper-layer protocol to a connected
/// loopback TCP socket (the only definitive test: the module may load on
/// demand even when `/proc/sys/net/ipv4/tcp_available_ulp` does not list it
/// yet). `ENOENT` means the kernel has no TLS ULP (`CONFIG_TLS` unset, or the
/// module cannot load). Blocking; call it off the workers.
pub fn detect() -> Result<(), Unavailable> {
    let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|s| s.split_whitespace().any(|u| u == "tls"))
        .unwrap_or(false);
    let probe = || -> io::Result<io::Result<()>> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let c = std::net::TcpStream::connect(l.local_addr()?)?;
        let _s = l.accept()?;
        Ok(set_tls_ulp(c.as_raw_fd()))
    };
    match probe() {
        Err(e) => Err(Unavailable(format!("cannot open a loopback probe connection: {e}"))),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => Err(Unavailable(format!(
            "the kernel has no TLS upper-layer protocol (CONFIG_TLS unset or module tls not loadable; \
             tcp_available_ulp {} tls): setsockopt(TCP_ULP, \"tls\"): {e}",
            if listed { "lists" } else { "does not list" }
        ))),
        Ok(Err(e)) => Err(Unavailable(format!("setsockopt(TCP_ULP, \"tls\"): {e}"))),
    }
}

/// Attaches the "tls" upper-layer protocol to a connected TCP socket: the
/// first step of handing it to kernel TLS.
pub fn set_tls_ulp(fd: RawFd) -> io::Result<()> {
    const NAME: &[u8] = b"tls";
    // SAFETY: `NAME` is a valid buffer of the given length for the duration
    // of the call; the kernel copies it and validates `fd` (EBADF/ENOTSOCK).
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_ULP,
            NAME.as_ptr().cast(),
            socklen(NAME.len())?,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs one direction's crypto state (`TLS_TX` or `TLS_RX`) on a socket
/// that has the "tls" ULP. `info` is the kernel's `struct
/// tls12_crypto_info_*` for the suite, byte for byte (`msc_tls::ktls`).
pub fn set_crypto_info(fd: RawFd, direction: libc::c_int, info: &[u8]) -> io::Result<()> {
    if direction != TLS_TX && direction != TLS_RX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "direction must be TLS_TX or TLS_RX",
        ));
    }
    // SAFETY: `info` is a valid buffer of the given length for the duration
    // of the call; the kernel copies it and checks its length against the
    // cipher type it names (EINVAL otherwise).
    let r = unsafe { libc::setsockopt(fd, libc::SOL_TLS, direction, info.as_ptr().cast(), socklen(info.len())?) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Hands a connected TCP socket's record protection to the kernel: the ULP,
/// then the sending and the receiving crypto state. If the ULP or `TLS_TX`
/// is refused, the socket passes bytes through unchanged (a ULP without
/// crypto state does nothing) and the caller keeps protecting records
/// itself. If `TLS_RX` is refused after `TLS_TX` was installed, the sending
/// side already belongs to the kernel: the caller must close the connection.
pub fn enable(fd: RawFd, tx: &[u8], rx: &[u8]) -> io::Result<()> {
    set_tls_ulp(fd)?;
    set_crypto_info(fd, TLS_TX, tx)?;
    set_crypto_info(fd, TLS_RX, rx)
}

fn socklen(n: usize) -> io::Result<libc::socklen_t> {
    libc::socklen_t::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option too long"))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// What the kernel's build configuration says, when it says it.
    fn config_tls() -> Option<bool> {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "zcat /proc/config.gz 2>/dev/null | grep -E '^(# )?CONFIG_TLS[ =]'",
            ])
            .output()
            .ok()?;
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if line.is_empty() {
            return None;
        }
        Some(line == "CONFIG_TLS=y" || line == "CONFIG_TLS=m")
    }

    /// Detection agrees with the kernel's configuration: on a kernel built
    /// without CONFIG_TLS (this machine's) it reports unavailable, saying why.
    #[test]
    fn detection_agrees_with_the_kernel_config() {
        let got = detect();
        match config_tls() {
            Some(false) => {
                let e = got
                    .clone()
                    .expect_err("CONFIG_TLS is unset, detection must say unavailable");
                assert!(e.0.contains("no TLS upper-layer protocol"), "{e}");
                assert!(e.0.contains("No such file or directory"), "{e}");
                assert!(e.to_string().starts_with("kernel TLS unavailable: "), "{e}");
            }
            Some(true) => assert_eq!(got, Ok(())),
            None => {
                // No /proc/config.gz: the ULP list must agree once probed.
                let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
                assert_eq!(
                    got.is_ok(),
                    listed.split_whitespace().any(|u| u == "tls"),
                    "{got:?} vs {listed}"
                );
            }
        }
        assert_eq!(available(), &got, "the cached probe agrees");
    }

    /// A failed attempt leaves the connection as it was: plain bytes still
    /// flow both ways (the caller then protects records itself). Where
    /// kernel TLS exists, the ULP attaches and the crypto state is refused
    /// for a malformed `info` instead.
    #[test]
    fn a_failed_enable_leaves_the_socket_usable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let bogus = [0u8; 4];
        let e = enable(c.as_raw_fd(), &bogus, &bogus).expect_err("a 4-byte crypto info is never accepted");
        if available().is_err() {
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
            // Without the ULP, SOL_TLS options are not there at all.
            let e = set_crypto_info(c.as_raw_fd(), TLS_TX, &bogus).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT), "{e}");
        }
        c.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        s.write_all(b"pong").unwrap();
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
        let e = set_crypto_info(c.as_raw_fd(), 9, &bogus).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
