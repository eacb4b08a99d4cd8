//! The connect gate: init performs every `connect(2)` of the sandbox on its behalf.
//!
//! # Why
//! A read-only mount does not stop `connect(2)` to a unix socket (it is not a write to the
//! filesystem), Landlock only gained a right for it in ABI 9, and the network namespace does not
//! cover pathname sockets. Without this gate a sandboxed command could reach any socket it can
//! see — `docker.sock` is root on the machine.
//!
//! # How
//! The gate filter ([`crate::seccomp`]) turns each `connect` into a notification. Init:
//! 1. copies the address out of the caller's memory (`process_vm_readv`) — the copy is what is
//!    checked *and* what is used, so a second thread rewriting the buffer changes nothing;
//! 2. takes the caller's socket (`pidfd_getfd`) and re-checks the notification is still live;
//! 3. for a pathname unix address: opens the path `O_PATH` (relative paths from the caller's cwd),
//!    reads where it really is (`/proc/self/fd`), and allows it only beneath a writable root, a
//!    private temp dir, or when listed in `allow_unix_sockets`; then connects through
//!    `/proc/self/fd/N`, so the object checked is the object connected (no symlink swap window);
//! 4. any other address (abstract unix, IP) is connected as given: the network namespace and
//!    Landlock's scoping (init shares the command's Landlock domain) decide those;
//! 5. answers the notification with the result. Blocking sockets are connected on a short-lived
//!    thread so one slow connect cannot stall the supervisor.
//!
//! Init never answers "continue": the kernel would re-read the caller's (mutable) arguments.

use crate::{cvt, cvt_retry, SysError, SysResult};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::notif::{self, Notif};

/// Where sockets may be connected to.
#[derive(Debug, Clone)]
pub struct SocketPolicy {
    /// Directories beneath which any socket is allowed.
    pub roots: Vec<PathBuf>,
    /// Individual sockets allowed anywhere.
    pub sockets: Vec<PathBuf>,
}

impl SocketPolicy {
    /// Is the socket at canonical `path` allowed?
    pub fn allows(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r)) || self.sockets.iter().any(|s| s == path)
    }
}

/// A refused connect, for the denial report.
#[derive(Debug, Clone)]
pub struct Denied {
    /// What was asked for.
    pub target: String,
}

/// The supervisor end of the gate.
pub struct Gate {
    listener: OwnedFd,
    policy: SocketPolicy,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl Gate {
    /// Wrap a listener received from the command process.
    pub fn new(listener: OwnedFd, policy: SocketPolicy) -> Self {
        Gate { listener, policy }
    }

    /// The listener, for polling.
    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Receive and answer one notification. Returns a denial when one was refused by policy.
    pub fn handle_one(&self) -> Option<Denied> {
        let mut n = Notif::default();
        notif::recv(self.fd(), &mut n).ok()?;
        if n.data.nr != libc::SYS_connect as i32 {
            respond(self.fd(), n.id, libc::ENOSYS);
            return None;
        }
        handle_connect(self.fd(), &self.policy, &n, &|run| {
            std::thread::Builder::new()
                .name("connect".into())
                .spawn(run)
                .is_ok()
        })
    }
}

/// Decide and answer one `connect` notification `n` on `listener`. A blocking socket is
/// connected by `spawn_blocking` (which answers `false` when it cannot take the work: the call
/// then fails with `EAGAIN`), a non-blocking one here.
pub(crate) fn handle_connect(
    listener: RawFd,
    policy: &SocketPolicy,
    n: &Notif,
    spawn_blocking: &dyn Fn(Box<dyn FnOnce() + Send>) -> bool,
) -> Option<Denied> {
    match decide(listener, policy, n) {
        Decision::Answer(err) => {
            respond(listener, n.id, err);
            None
        }
        Decision::Deny(what) => {
            respond(listener, n.id, libc::EACCES);
            Some(Denied { target: what })
        }
        Decision::Connect {
            sock,
            addr,
            path_fd,
        } => {
            let id = n.id;
            let blocking = is_blocking(&sock);
            let run = move || {
                let err = do_connect(&sock, &addr);
                drop(path_fd);
                respond(listener, id, err);
            };
            if blocking {
                if !spawn_blocking(Box::new(run)) {
                    respond(listener, id, libc::EAGAIN);
                }
            } else {
                run();
            }
            None
        }
    }
}

fn decide(listener: RawFd, policy: &SocketPolicy, n: &Notif) -> Decision {
    let fd = n.data.args[0] as i32;
    let len = (n.data.args[2] as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    let mut buf = vec![0u8; len];
    if len > 0 && notif::read_remote(n.pid, n.data.args[1], &mut buf).is_err() {
        return Decision::Answer(libc::EFAULT);
    }
    if !notif::id_valid(listener, n.id) {
        return Decision::Answer(libc::EINTR);
    }
    let sock = match take_fd(n.pid, fd) {
        Ok(s) => s,
        Err(e) => return Decision::Answer(e),
    };
    if !notif::id_valid(listener, n.id) {
        return Decision::Answer(libc::EINTR);
    }
    if len < 2 {
        return Decision::Connect {
            sock,
            addr: buf,
            path_fd: None,
        };
    }
    let family = u16::from_ne_bytes([buf[0], buf[1]]) as i32;
    if family != libc::AF_UNIX || len <= 2 || buf[2] == 0 {
        return Decision::Connect {
            sock,
            addr: buf,
            path_fd: None,
        };
    }
    // pathname unix socket
    let raw = &buf[2..];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let path = Path::new(std::ffi::OsStr::from_bytes(&raw[..end]));
    let shown = path.display().to_string();
    let opened = match open_path(n.pid, path) {
        Ok(f) => f,
        Err(e) => return Decision::Answer(e),
    };
    let real = match std::fs::read_link(format!("/proc/self/fd/{}", opened.as_raw_fd())) {
        Ok(p) => p,
        Err(_) => return Decision::Deny(shown),
    };
    if !policy.allows(&real) {
        return Decision::Deny(if real == path {
            shown
        } else {
            format!("{shown} (-> {})", real.display())
        });
    }
    let via = format!("/proc/self/fd/{}", opened.as_raw_fd());
    let mut addr = vec![0u8; 2];
    addr[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    addr.extend_from_slice(via.as_bytes());
    addr.push(0);
    Decision::Connect {
        sock,
        addr,
        path_fd: Some(opened),
    }
}

enum Decision {
    Answer(i32),
    Deny(String),
    Connect {
        sock: OwnedFd,
        addr: Vec<u8>,
        path_fd: Option<OwnedFd>,
    },
}

fn respond(listener: RawFd, id: u64, err: i32) {
    // A failure (the caller was interrupted and the notification is gone) needs no handling.
    let _ = notif::respond(listener, id, 0, err);
}

fn take_fd(pid: u32, fd: i32) -> Result<OwnedFd, i32> {
    let pidfd = notif::pidfd_open(pid)?;
    let sock = notif::getfd(&pidfd, fd)?;
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_TYPE writes an int into `ty`; `len` holds its size.
    if unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    } < 0
    {
        return Err(libc::ENOTSOCK);
    }
    Ok(sock)
}

fn open_path(pid: u32, path: &Path) -> Result<OwnedFd, i32> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        PathBuf::from(format!("/proc/{pid}/cwd")).join(path)
    };
    let c = CString::new(full.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: `c` is a valid NUL-terminated path; O_PATH opens without reading anything.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` is the descriptor just returned, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn is_blocking(sock: &OwnedFd) -> bool {
    // SAFETY: F_GETFL on an open descriptor; no pointers.
    let fl = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_GETFL) };
    fl >= 0 && fl & libc::O_NONBLOCK == 0
}

fn do_connect(sock: &OwnedFd, addr: &[u8]) -> i32 {
    // SAFETY: `addr` is a valid buffer of `addr.len()` bytes holding a sockaddr; `sock` is open.
    let ret = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    };
    if ret < 0 {
        errno()
    } else {
        0
    }
}

/// Send `fd` over a unix stream socket, with one byte of data (command → init): one
/// [`send_with_fds`].
pub fn send_fd(chan: RawFd, fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller passes a socket descriptor it keeps open for the duration of the call.
    let sock = unsafe { BorrowedFd::borrow_raw(chan) };
    send_with_fds(sock, &[0], &[fd])?;
    Ok(())
}

/// Receive one descriptor sent with [`send_fd`]; `Ok(None)` if the peer closed without sending.
pub fn recv_fd(chan: RawFd) -> io::Result<Option<OwnedFd>> {
    // SAFETY: the caller passes a socket descriptor it keeps open for the duration of the call.
    let sock = unsafe { BorrowedFd::borrow_raw(chan) };
    let mut byte = [0u8; 1];
    let (_, fds) = recv_with_fds(sock, &mut byte)?;
    Ok(fds.into_iter().next())
}

/// A connected pair of unix stream sockets (close-on-exec).
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

// ---- descriptor passing for the broker protocol --------------------------------------------
/// Credentials of the process at the other end of a connected unix socket (`SO_PEERCRED`).
/// These are the credentials at `connect()` time and cannot be forged by the peer.
pub fn peer_cred(sock: BorrowedFd<'_>) -> SysResult<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of `cred`.
    cvt("getsockopt", String::new, unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    })?;
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(SysError::new(
            "getsockopt",
            io::Error::new(io::ErrorKind::InvalidData, "short SO_PEERCRED answer"),
        ));
    }
    Ok(cred)
}

const MAX_FDS: usize = 3;

/// Sends `data` with `fds` attached as `SCM_RIGHTS` (at most 3 descriptors).
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> SysResult<usize> {
    if fds.len() > MAX_FDS || data.is_empty() {
        return Err(SysError::new(
            "sendmsg",
            io::Error::new(io::ErrorKind::InvalidInput, "1..=3 fds and non-empty data"),
        ));
    }
    // Space for a cmsg header and MAX_FDS ints, aligned like cmsghdr.
    let mut cbuf = [0u64; 8];
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is a pure computation on an integer.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: msg_control points to `cbuf` (64 bytes >= space) so the first header is in bounds.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        if cmsg.is_null() {
            return Err(SysError::new(
                "sendmsg",
                io::Error::other("no room for control message"),
            ));
        }
        // SAFETY: `cmsg` points into `cbuf`, which is large enough for a header plus 3 fds.
        unsafe {
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg) as *mut RawFd,
                fds.len(),
            );
        }
    }
    let n = cvt_retry("sendmsg", || {
        // SAFETY: `msg` references `iov` (over `data`) and `cbuf`, all alive during the call.
        unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) }
    })?;
    Ok(n as usize)
}

/// Receives into `buf`, collecting up to 3 descriptors passed with `SCM_RIGHTS`
/// (received close-on-exec). Truncated control data is an error (descriptors may have been lost).
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<(usize, Vec<OwnedFd>)> {
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = cvt_retry("recvmsg", || {
        // SAFETY: `msg` references `iov` (over `buf`) and `cbuf`, both alive and writable.
        unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) }
    })?;
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR only reads its control fields.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points to a header the kernel wrote inside `cbuf`.
        let (level, ty, len) = unsafe {
            (
                (*cmsg).cmsg_level,
                (*cmsg).cmsg_type,
                (*cmsg).cmsg_len as usize,
            )
        };
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is a pure computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(header) / std::mem::size_of::<RawFd>();
            // SAFETY: `cmsg` is a valid header inside `cbuf`; CMSG_DATA points just after it.
            let data = unsafe { libc::CMSG_DATA(cmsg) } as *const RawFd;
            for i in 0..count {
                // SAFETY: the kernel wrote `count` descriptors after the header, inside `cbuf`;
                // read_unaligned because CMSG_DATA need not be aligned for i32 reads in general.
                let fd = unsafe { std::ptr::read_unaligned(data.add(i)) };
                // SAFETY: the kernel installed this descriptor in our table for us; we own it now.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: `msg` and `cmsg` are valid; CMSG_NXTHDR returns null past the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(SysError::new(
            "recvmsg",
            io::Error::new(
                io::ErrorKind::InvalidData,
                "control data truncated: too many descriptors",
            ),
        ));
    }
    Ok((n as usize, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_policy_allows_beneath_roots_and_listed_sockets_only() {
        let p = SocketPolicy {
            roots: vec!["/ws".into(), "/tmp".into()],
            sockets: vec!["/run/user/1000/ssh-agent.sock".into()],
        };
        assert!(p.allows(Path::new("/ws/app.sock")));
        assert!(p.allows(Path::new("/tmp/x/y.sock")));
        assert!(p.allows(Path::new("/run/user/1000/ssh-agent.sock")));
        assert!(!p.allows(Path::new("/run/docker.sock")));
        assert!(
            !p.allows(Path::new("/wsx/app.sock")),
            "prefix of a name is not beneath"
        );
        assert!(!p.allows(Path::new("/run/user/1000/other.sock")));
    }
}
