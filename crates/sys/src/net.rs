//! Network namespace setup: bring up loopback so servers inside the sandbox work.

use crate::SysError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Set `lo` up in the current network namespace.
pub fn loopback_up() -> Result<(), SysError> {
    let fail = |call: &'static str| SysError {
        call,
        what: "lo".into(),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: socket() with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(fail("socket"));
    }
    // SAFETY: `fd` was just returned by socket() and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags into `req`, a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(fail("ioctl(SIOCGIFFLAGS)"));
    }
    // SAFETY: the union field ifru_flags was filled by SIOCGIFFLAGS just above.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags from `req`, a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(fail("ioctl(SIOCSIFFLAGS)"));
    }
    Ok(())
}
