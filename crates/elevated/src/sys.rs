//! Thin syscall wrappers. Every decision lives elsewhere; this module only talks to the kernel.
//!
//! Rules: one syscall per `unsafe` block, each with a `SAFETY:` comment; every return code goes
//! through [`cvt`] so errors are always `io::Error` built from `errno`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use stockade_linux::sys::CloneArgs;

/// Normalizes a libc return code: `-1` becomes the current `errno` as an `io::Error`.
pub fn cvt<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`] but retries on `EINTR`.
pub fn cvt_retry<T: Copy + PartialEq + From<i8>>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Converts a path to a C string, refusing interior NUL bytes.
pub fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `openat2(dirfd, path, flags, resolve)`: the kernel resolves `path` with the `RESOLVE_*` rules,
/// so a symlink swapped in anywhere along the path fails the open instead of being followed.
pub fn openat2(
    dirfd: Option<BorrowedFd<'_>>,
    path: &Path,
    flags: i32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open_how is a plain C struct of integers for which all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    let dfd = dirfd.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let fd = cvt_retry(|| {
        // SAFETY: `c` is a valid NUL-terminated string and `how` a fully initialised `open_how`
        // that both outlive the call; the size passed is exactly the size of `how`.
        unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dfd,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        }
    })?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `fstat` on a descriptor (works on `O_PATH` descriptors too).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` points to writable memory of the size of `struct stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it fully initialised `st` (it was zeroed before anyway).
    Ok(unsafe { st.assume_init() })
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`.
pub fn fstatat_nofollow(dirfd: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `name` is NUL-terminated, `st` is writable memory of the size of `struct stat`.
    cvt(unsafe {
        libc::fstatat(
            dirfd.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so `st` is initialised (and was zeroed before).
    Ok(unsafe { st.assume_init() })
}

/// Credentials of the process at the other end of a connected unix socket (`SO_PEERCRED`).
/// These are the credentials at `connect()` time and cannot be forged by the peer.
pub fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of `cred`.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    })?;
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short SO_PEERCRED answer",
        ));
    }
    Ok(cred)
}

const MAX_FDS: usize = 3;

/// Sends `data` with `fds` attached as `SCM_RIGHTS` (at most 3 descriptors).
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_FDS || data.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "1..=3 fds and non-empty data",
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
            return Err(io::Error::other("no room for control message"));
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
    let n = cvt_retry(|| {
        // SAFETY: `msg` references `iov` (over `data`) and `cbuf`, all alive during the call.
        unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) }
    })?;
    Ok(n as usize)
}

/// Receives into `buf`, collecting up to 3 descriptors passed with `SCM_RIGHTS`
/// (received close-on-exec). Truncated control data is an error (descriptors may have been lost).
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
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
    let n = cvt_retry(|| {
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
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control data truncated: too many descriptors",
        ));
    }
    Ok((n as usize, fds))
}

/// `getxattr` through `/proc/self/fd/N`, which works for `O_PATH` descriptors and never follows a
/// symlink the caller could swap (the magic link designates the already-open inode).
pub fn fd_getxattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(io::Error::other)?;
    let mut buf = vec![0u8; 512];
    loop {
        // SAFETY: `p` and `name` are NUL-terminated; `buf` is writable for `buf.len()` bytes.
        let r = unsafe {
            libc::getxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        match cvt(r) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 1 << 20 => {
                buf.resize(buf.len() * 4, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `setxattr` through `/proc/self/fd/N` (see [`fd_getxattr`]).
pub fn fd_setxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(io::Error::other)?;
    // SAFETY: `p` and `name` are NUL-terminated; `value` is readable for its length.
    cvt(unsafe {
        libc::setxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    })?;
    Ok(())
}

/// `removexattr` through `/proc/self/fd/N`; a missing attribute is not an error.
pub fn fd_removexattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(io::Error::other)?;
    // SAFETY: `p` and `name` are NUL-terminated strings alive during the call.
    match cvt(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Supplementary groups of `user` (with `gid` as primary), from the group database.
pub fn grouplist(user: &str, gid: u32) -> io::Result<Vec<u32>> {
    let c = CString::new(user).map_err(io::Error::other)?;
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let cap = n;
        // SAFETY: `c` is NUL-terminated, `groups` has room for `n` entries and `n` is writable.
        let r = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if r >= 0 {
            groups.truncate(n as usize);
            return Ok(groups);
        }
        if n <= cap {
            n = cap * 2;
        }
        if n > 65536 {
            return Err(io::Error::other("too many groups"));
        }
    }
}

/// `getpwuid_r`: (name, primary gid, home) of a uid, through NSS in-process (no `getent` spawn on
/// the broker's per-run path).
pub fn getpwuid(uid: u32) -> io::Result<Option<(String, u32, std::path::PathBuf)>> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: passwd is a plain C struct for which all-zero is a valid value.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid: `pw` and `out` are locals, `buf` is writable for its length.
        let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        if r == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        if out.is_null() {
            return Ok(None);
        }
        // SAFETY: on success pw_name and pw_dir point to NUL-terminated strings inside `buf`.
        let name = unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above.
        let home = unsafe { CStr::from_ptr(pw.pw_dir) };
        let home = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(home.to_bytes()));
        return Ok(Some((name, pw.pw_gid, home)));
    }
}

/// `getgrnam_r`: gid of a group name, through NSS in-process.
pub fn getgrnam(name: &str) -> io::Result<Option<u32>> {
    let c = CString::new(name).map_err(io::Error::other)?;
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: group is a plain C struct for which all-zero is a valid value.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `c` is NUL-terminated; `gr`, `out` are locals; `buf` is writable for its length.
        let r =
            unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
        if r == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        return Ok(if out.is_null() { None } else { Some(gr.gr_gid) });
    }
}

/// `pidfd_open(pid)`.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Polls descriptors for readability; returns which were ready. `timeout_ms < 0` waits forever.
pub fn poll_read(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structures.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    match cvt(r) {
        Ok(_) => Ok(pfds.iter().map(|p| p.revents != 0).collect()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(vec![false; pfds.len()]),
        Err(e) => Err(e),
    }
}

/// Polls descriptors (a negative one is ignored) for input; returns each one's `revents`
/// (`POLLIN`, `POLLHUP`, ...). `timeout_ms < 0` waits forever; EINTR counts as nothing ready.
pub fn poll_revents(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<libc::c_short>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structures.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    match cvt(r) {
        Ok(_) => Ok(pfds.iter().map(|p| p.revents).collect()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(vec![0; pfds.len()]),
        Err(e) => Err(e),
    }
}

/// Sends one netlink request to the kernel over a fresh `NETLINK_<protocol>` socket and reads
/// one datagram of replies into `buf` (1 s timeout). Returns the number of bytes received.
pub fn netlink_roundtrip(protocol: libc::c_int, req: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: socket() with integer arguments; the result is checked.
    let fd = cvt(unsafe {
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
    cvt(unsafe {
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
    let n = cvt(unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) })?;
    if n as usize != req.len() {
        return Err(io::Error::other("short netlink send"));
    }
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let n = cvt_retry(|| unsafe {
        libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
    })?;
    Ok(n as usize)
}

/// Closes every descriptor >= 3 except those in `keep` (anything the broker inherited without
/// close-on-exec, such as a socket-activation listener, must not reach the sandbox).
pub fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd >= 3)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 3u32;
    for k in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if k > from {
            // SAFETY: close_range with integer arguments; the kept descriptors lie outside
            // [from, k - 1] and nothing in this process uses the others.
            cvt(unsafe { libc::close_range(from, k - 1, 0) })?;
        }
        from = k.saturating_add(1);
    }
    Ok(())
}

/// `CLONE_INTO_CGROUP` (Linux 5.7): start the child in the cgroup `clone_args.cgroup` names.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What [`spawn_raw`] starts. Everything is prepared before the fork: the child only makes raw
/// syscalls on these values.
pub struct RawSpawn<'a> {
    /// Program to exec.
    pub path: &'a CStr,
    /// NULL-terminated argument vector.
    pub argv: &'a [*const libc::c_char],
    /// NULL-terminated environment.
    pub envp: &'a [*const libc::c_char],
    /// Descriptors that become 0, 1, 2 (each must be >= 3).
    pub stdio: [RawFd; 3],
    /// Descriptors that stay open across exec (-1: none).
    pub keep: [RawFd; 2],
    /// A cgroup v2 directory to start the child in (`CLONE_INTO_CGROUP`), or -1.
    pub cgroup_dir: RawFd,
    /// That cgroup's `cgroup.procs`, written by the child when `CLONE_INTO_CGROUP` is refused,
    /// or -1.
    pub cgroup_procs: RawFd,
}

/// A child started by [`spawn_raw`]; not reaped until [`RawChild::wait`].
pub struct RawChild {
    /// Its pid.
    pub pid: libc::pid_t,
    /// A pidfd for it.
    pub pidfd: OwnedFd,
    /// Whether the kernel placed it in the cgroup at creation (`CLONE_INTO_CGROUP`).
    pub into_cgroup: bool,
}

impl RawChild {
    /// `SIGKILL` (the pid cannot have been reused: it is not reaped yet).
    pub fn kill(&self) {
        // SAFETY: kill(2) with integer arguments on our own unreaped child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }

    /// Reaps it: `(exit code, terminating signal)`.
    pub fn wait(&self) -> io::Result<(Option<i32>, Option<i32>)> {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local int.
        cvt_retry(|| unsafe { libc::waitpid(self.pid, &mut status, 0) })?;
        Ok(if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            (None, None)
        })
    }
}

/// Starts a process from this multithreaded one: `clone3` (fork-like, with a pidfd and, when
/// possible, directly inside the run's cgroup, which avoids the slow migration of an existing
/// process), then in the child `setsid`, stdio, close-on-exec cleared on `keep`, default
/// `SIGPIPE` and an empty signal mask, and `execve`. The child exits with 126 if any step fails.
pub fn spawn_raw(s: &RawSpawn<'_>) -> io::Result<RawChild> {
    if s.stdio.iter().any(|&fd| fd < 3)
        || s.argv.last() != Some(&std::ptr::null())
        || s.envp.last() != Some(&std::ptr::null())
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let first = if s.cgroup_dir >= 0 {
        clone_child(s, true)
    } else {
        clone_child(s, false)
    };
    let second = match first {
        Err(_) if s.cgroup_dir >= 0 => clone_child(s, false),
        other => other,
    };
    match second {
        // clone3 filtered (some container seccomp profiles answer ENOSYS): plain fork.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => fork_child(s),
        other => other,
    }
}

fn fork_child(s: &RawSpawn<'_>) -> io::Result<RawChild> {
    // SAFETY: fork from a multithreaded process; the child only makes raw syscalls before exec
    // or _exit (other threads' locks may be held in its copy of the address space).
    let pid = cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        let _ = child_exec(s, true);
        // SAFETY: _exit ends the child without running anything of the parent's.
        unsafe { libc::_exit(126) };
    }
    let child_gone = || {
        // SAFETY: kill(2) of our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut st = 0;
        // SAFETY: waitpid writes the status into a local int.
        unsafe { libc::waitpid(pid, &mut st, 0) };
    };
    match pidfd_open(pid) {
        Ok(pidfd) => Ok(RawChild {
            pid,
            pidfd,
            into_cgroup: false,
        }),
        Err(e) => {
            child_gone();
            Err(e)
        }
    }
}

fn clone_child(s: &RawSpawn<'_>, into_cgroup: bool) -> io::Result<RawChild> {
    let mut pidfd: RawFd = -1;
    let mut flags = libc::CLONE_PIDFD as u64;
    if into_cgroup {
        flags |= CLONE_INTO_CGROUP;
    }
    let args = CloneArgs {
        flags,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: if into_cgroup { s.cgroup_dir as u64 } else { 0 },
        ..Default::default()
    };
    // SAFETY: without CLONE_VM and with a zero stack, clone3 behaves like fork: the child gets a
    // copy of the address space and resumes here, where it only makes raw syscalls before exec
    // or _exit (other threads' locks may be held in the copy). `args` is a valid clone_args of
    // the size passed; `pidfd` outlives the call and receives the descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        let _ = child_exec(s, !into_cgroup);
        // SAFETY: _exit ends the child without running anything of the parent's (no atexit
        // handlers, no destructors).
        unsafe { libc::_exit(126) };
    }
    // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor owned by us in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(RawChild {
        pid: ret as libc::pid_t,
        pidfd,
        into_cgroup,
    })
}

/// In the cloned child: raw syscalls only.
fn child_exec(s: &RawSpawn<'_>, join_procs: bool) -> io::Result<()> {
    child::setsid()?;
    if join_procs && s.cgroup_procs >= 0 {
        child::join_cgroup(s.cgroup_procs)?;
    }
    for (target, &fd) in s.stdio.iter().enumerate() {
        dup2(fd, target as RawFd)?;
    }
    for &fd in s.keep.iter().filter(|&&fd| fd >= 0) {
        child::clear_cloexec(fd)?;
    }
    // SAFETY: restoring the default disposition of SIGPIPE (the Rust runtime ignores it, and an
    // ignored disposition survives exec).
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid sigset_t to initialise.
    cvt(unsafe { libc::sigemptyset(&mut empty) })?;
    // SAFETY: sets this thread's mask from a valid, initialised set; no old mask requested.
    cvt(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) })?;
    // SAFETY: `path` is NUL-terminated; `argv` and `envp` are NULL-terminated arrays of pointers
    // to NUL-terminated strings that the parent keeps alive (the child has its own copy).
    unsafe { libc::execve(s.path.as_ptr(), s.argv.as_ptr(), s.envp.as_ptr()) };
    Err(io::Error::last_os_error())
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 3)`: a copy of `fd` numbered 3 or above.
pub fn dup_above_stdio(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC with integer arguments; the result is checked.
    let n = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Whether `fd` is an open descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on an integer; no memory is passed.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// `dup2(from, to)`.
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    cvt(unsafe { libc::dup2(from, to) })?;
    Ok(())
}

/// Parent pid of this process.
pub fn getppid() -> libc::pid_t {
    // SAFETY: getppid cannot fail and has no arguments.
    unsafe { libc::getppid() }
}

/// `prctl(PR_SET_DUMPABLE, 0)`: processes of the same uid cannot ptrace this one, read its
/// memory or take its descriptors, and its `/proc` entries belong to root.
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })?;
    Ok(())
}

/// `landlock_restrict_self(ruleset, 0)`: enforces a ruleset built elsewhere (needs
/// `no_new_privs`).
pub fn landlock_restrict_self(ruleset: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall with a descriptor and a zero flags word; no memory is passed.
    cvt(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) })?;
    Ok(())
}

/// Ends this process with signal `sig`, as its child did (default disposition, then `kill`).
/// Returns only if the signal did not terminate it (e.g. `SIGCHLD`).
pub fn die_by_signal(sig: libc::c_int) {
    // SAFETY: resetting a signal's disposition to the default; no handler memory is involved.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
    // SAFETY: kill(2) of this very process with a signal number taken from a wait status.
    unsafe { libc::kill(std::process::id() as libc::pid_t, sig) };
}

/// Real uid of this process.
pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail and has no arguments.
    unsafe { libc::getuid() }
}

/// Effective uid of this process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and has no arguments.
    unsafe { libc::geteuid() }
}

/// Process-setup operations, usable between fork and exec (the broker's forked child and the
/// run's process, [`crate::runner`]): each makes one raw syscall on data prepared beforehand,
/// never allocates, and reports errors as `io::Error` built from `errno` (which does not
/// allocate).
pub mod child {
    use super::cvt;
    use std::io;

    /// Writes `0` to an open `cgroup.procs`: moves the calling process into that cgroup.
    pub fn join_cgroup(procs_fd: i32) -> io::Result<()> {
        let b = b"0";
        // SAFETY: writes 1 byte from a static buffer to a descriptor we own.
        cvt(unsafe { libc::write(procs_fd, b.as_ptr() as *const libc::c_void, 1) })?;
        Ok(())
    }

    /// Replaces the supplementary groups.
    pub fn setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
        // SAFETY: `groups` is a valid array of `groups.len()` gids.
        cvt(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
        Ok(())
    }

    /// Sets real, effective and saved gid.
    pub fn setresgid(gid: libc::gid_t) -> io::Result<()> {
        // SAFETY: plain syscall with integer arguments.
        cvt(unsafe { libc::setresgid(gid, gid, gid) })?;
        Ok(())
    }

    /// Sets real, effective and saved uid.
    pub fn setresuid(uid: libc::uid_t) -> io::Result<()> {
        // SAFETY: plain syscall with integer arguments.
        cvt(unsafe { libc::setresuid(uid, uid, uid) })?;
        Ok(())
    }

    /// Returns (real, effective, saved) uid.
    pub fn getresuid() -> io::Result<(u32, u32, u32)> {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: the three pointers are to distinct writable locals.
        cvt(unsafe { libc::getresuid(&mut r, &mut e, &mut s) })?;
        Ok((r, e, s))
    }

    /// Returns (real, effective, saved) gid.
    pub fn getresgid() -> io::Result<(u32, u32, u32)> {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: the three pointers are to distinct writable locals.
        cvt(unsafe { libc::getresgid(&mut r, &mut e, &mut s) })?;
        Ok((r, e, s))
    }

    /// Number of supplementary groups and the first one (into a caller-provided buffer).
    pub fn getgroups(buf: &mut [libc::gid_t]) -> io::Result<usize> {
        // SAFETY: `buf` is writable for `buf.len()` gids.
        let n = cvt(unsafe { libc::getgroups(buf.len() as libc::c_int, buf.as_mut_ptr()) })?;
        Ok(n as usize)
    }

    /// Attempts `setuid(0)`; returns true if it (wrongly) succeeded.
    pub fn can_regain_root() -> bool {
        // SAFETY: plain syscall with an integer argument; success is what we are testing for.
        unsafe { libc::setuid(0) == 0 }
    }

    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: exec can never grant privileges again (setuid bits,
    /// file capabilities are ignored).
    pub fn no_new_privs() -> io::Result<()> {
        // SAFETY: plain prctl with integer arguments.
        cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        Ok(())
    }

    /// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the command dies if the broker thread that forked it dies.
    pub fn pdeathsig() -> io::Result<()> {
        // SAFETY: plain prctl with integer arguments.
        cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
        Ok(())
    }

    /// `setrlimit(resource, value, value)`.
    pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `lim` is a valid rlimit structure alive during the call.
        cvt(unsafe { libc::setrlimit(resource, &lim) })?;
        Ok(())
    }

    /// Marks every descriptor >= 3 close-on-exec, so only stdin/stdout/stderr reach the command.
    pub fn cloexec_from_3() -> io::Result<()> {
        // SAFETY: plain syscall with integer arguments.
        cvt(unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) })?;
        Ok(())
    }

    /// `chdir(path)`, with the caller's (dropped) credentials.
    pub fn chdir(path: &std::ffi::CStr) -> io::Result<()> {
        // SAFETY: `path` is a valid NUL-terminated string alive during the call.
        cvt(unsafe { libc::chdir(path.as_ptr()) })?;
        Ok(())
    }

    /// `fchdir(fd)`.
    pub fn fchdir(fd: i32) -> io::Result<()> {
        // SAFETY: plain syscall with an integer argument.
        cvt(unsafe { libc::fchdir(fd) })?;
        Ok(())
    }

    /// `unshare(CLONE_NEWUSER)` (probe only).
    pub fn unshare_user() -> io::Result<()> {
        // SAFETY: plain syscall with a constant flag.
        cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER) })?;
        Ok(())
    }

    /// Clears close-on-exec on `fd`, so it reaches the program this process execs next.
    pub fn clear_cloexec(fd: i32) -> io::Result<()> {
        // SAFETY: F_SETFD with integer arguments; no memory is passed.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) })?;
        Ok(())
    }

    /// `setsid()`: a new session so the command cannot reach the caller's terminal job control.
    pub fn setsid() -> io::Result<()> {
        // SAFETY: plain syscall without arguments.
        cvt(unsafe { libc::setsid() })?;
        Ok(())
    }
}
