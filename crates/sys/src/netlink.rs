//! One request/answer exchange on a netlink socket (the nftables generation probe).

use crate::{cvt, cvt_retry, SysError, SysResult};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sends one netlink request to the kernel over a fresh `NETLINK_<protocol>` socket and reads
/// one datagram of replies into `buf` (1 s timeout). Returns the number of bytes received.
pub fn netlink_roundtrip(protocol: libc::c_int, req: &[u8], buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: socket() with integer arguments; the result is checked.
    let fd = cvt("socket", String::new, unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO reads a timeval of the size passed; `tv` lives across the call.
    cvt("setsockopt", String::new, unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    // SAFETY: `req` is a valid buffer of `req.len()` bytes; an unconnected netlink socket sends
    // to the kernel (port id 0).
    let n = cvt("send", String::new, unsafe {
        libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0)
    })?;
    if n as usize != req.len() {
        return Err(SysError::new(
            "send",
            io::Error::other("short netlink send"),
        ));
    }
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let n = cvt_retry("recv", || unsafe {
        libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
    })?;
    Ok(n as usize)
}
