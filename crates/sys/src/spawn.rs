//! The broker's process calls: `clone3` into a cgroup (or `fork`) and exec with everything
//! prepared beforehand, pidfds, `poll`, descriptor hygiene, and [`child`]: the calls usable
//! between fork and exec.

use crate::{cvt, cvt_retry, dup2, SysError, SysResult};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `pidfd_open(pid)`.
pub fn pidfd_open(pid: libc::pid_t) -> SysResult<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = cvt("pidfd_open", String::new, unsafe {
        libc::syscall(libc::SYS_pidfd_open, pid, 0)
    })?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Polls descriptors for readability; returns which were ready. `timeout_ms < 0` waits forever.
pub fn poll_read(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> SysResult<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    match crate::poll_once(&mut pfds, timeout_ms) {
        Ok(_) => Ok(pfds.iter().map(|p| p.revents != 0).collect()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(vec![false; pfds.len()]),
        Err(e) => Err(e),
    }
}

/// Polls descriptors (a negative one is ignored) for input; returns each one's `revents`
/// (`POLLIN`, `POLLHUP`, ...). `timeout_ms < 0` waits forever; EINTR counts as nothing ready.
pub fn poll_revents(fds: &[RawFd], timeout_ms: i32) -> SysResult<Vec<libc::c_short>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    match crate::poll_once(&mut pfds, timeout_ms) {
        Ok(_) => Ok(pfds.iter().map(|p| p.revents).collect()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(vec![0; pfds.len()]),
        Err(e) => Err(e),
    }
}

/// Closes every descriptor >= 3 except those in `keep` (anything the broker inherited without
/// close-on-exec, such as a socket-activation listener, must not reach the sandbox).
pub fn close_fds_except(keep: &[RawFd]) -> SysResult<()> {
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
            cvt("close_range", String::new, unsafe {
                libc::close_range(from, k - 1, 0)
            })?;
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
        let _ = crate::kill(self.pid, libc::SIGKILL);
    }

    /// Reaps it: `(exit code, terminating signal)`.
    pub fn wait(&self) -> SysResult<(Option<i32>, Option<i32>)> {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local int.
        cvt_retry("waitpid", || unsafe {
            libc::waitpid(self.pid, &mut status, 0)
        })?;
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
pub fn spawn_raw(s: &RawSpawn<'_>) -> SysResult<RawChild> {
    if s.stdio.iter().any(|&fd| fd < 3)
        || s.argv.last() != Some(&std::ptr::null())
        || s.envp.last() != Some(&std::ptr::null())
    {
        return Err(SysError::new(
            "spawn",
            io::Error::from_raw_os_error(libc::EINVAL),
        ));
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
        Err(e) if e.errno() == Some(libc::ENOSYS) => fork_child(s),
        other => other,
    }
}

fn fork_child(s: &RawSpawn<'_>) -> SysResult<RawChild> {
    // SAFETY: fork from a multithreaded process; the child only makes raw syscalls before exec
    // or _exit (other threads' locks may be held in its copy of the address space).
    let pid = cvt("fork", String::new, unsafe { libc::fork() })?;
    if pid == 0 {
        let _ = child_exec(s, true);
        // SAFETY: _exit ends the child without running anything of the parent's.
        unsafe { libc::_exit(126) };
    }
    let child_gone = || {
        let _ = crate::kill(pid, libc::SIGKILL);
        let _ = crate::waitpid(pid, false);
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

fn clone_child(s: &RawSpawn<'_>, into_cgroup: bool) -> SysResult<RawChild> {
    let mut pidfd: RawFd = -1;
    let (flags, cgroup) = if into_cgroup {
        (CLONE_INTO_CGROUP, s.cgroup_dir as u64)
    } else {
        (0, 0)
    };
    // SAFETY: without CLONE_VM and with a zero stack, clone3 behaves like fork: the child gets a
    // copy of the address space and resumes here, where it only makes raw syscalls before exec
    // or _exit (other threads' locks may be held in the copy). `pidfd` outlives the call and
    // receives the descriptor.
    let ret = unsafe { crate::clone3_pidfd(flags, cgroup, &mut pidfd) };
    if ret < 0 {
        return Err(SysError::last("clone3"));
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
fn child_exec(s: &RawSpawn<'_>, join_procs: bool) -> SysResult<()> {
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
        return Err(SysError::last("signal"));
    }
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid sigset_t to initialise.
    cvt("sigemptyset", String::new, unsafe {
        libc::sigemptyset(&mut empty)
    })?;
    // SAFETY: sets this thread's mask from a valid, initialised set; no old mask requested.
    cvt("sigprocmask", String::new, unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut())
    })?;
    // SAFETY: `path` is NUL-terminated; `argv` and `envp` are NULL-terminated arrays of pointers
    // to NUL-terminated strings that the parent keeps alive (the child has its own copy).
    unsafe { libc::execve(s.path.as_ptr(), s.argv.as_ptr(), s.envp.as_ptr()) };
    Err(SysError::last("execve"))
}

/// `prctl(PR_SET_DUMPABLE, 0)`: processes of the same uid cannot ptrace this one, read its
/// memory or take its descriptors, and its `/proc` entries belong to root.
pub fn set_not_dumpable() -> SysResult<()> {
    // SAFETY: plain prctl with integer arguments.
    cvt("prctl", String::new, unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)
    })?;
    Ok(())
}

/// Ends this process with signal `sig`, as its child did (default disposition, then `kill`).
/// Returns only if the signal did not terminate it (e.g. `SIGCHLD`).
pub fn die_by_signal(sig: libc::c_int) {
    // SAFETY: resetting a signal's disposition to the default; no handler memory is involved.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
    let _ = crate::kill(std::process::id() as libc::pid_t, sig);
}

/// Process-setup operations, usable between fork and exec (the broker's forked child and the
/// run's process, [`crate::runner`]): each makes one raw syscall on data prepared beforehand,
/// never allocates, and reports errors as `io::Error` built from `errno` (which does not
/// allocate).
pub mod child {
    use crate::{cvt, SysResult};

    pub use crate::{clear_cloexec, setsid};

    /// Writes `0` to an open `cgroup.procs`: moves the calling process into that cgroup.
    pub fn join_cgroup(procs_fd: i32) -> SysResult<()> {
        let b = b"0";
        // SAFETY: writes 1 byte from a static buffer to a descriptor we own.
        cvt("write", String::new, unsafe {
            libc::write(procs_fd, b.as_ptr() as *const libc::c_void, 1)
        })?;
        Ok(())
    }

    /// Replaces the supplementary groups.
    pub fn setgroups(groups: &[libc::gid_t]) -> SysResult<()> {
        // SAFETY: `groups` is a valid array of `groups.len()` gids.
        cvt("setgroups", String::new, unsafe {
            libc::setgroups(groups.len(), groups.as_ptr())
        })?;
        Ok(())
    }

    /// Sets real, effective and saved gid.
    pub fn setresgid(gid: libc::gid_t) -> SysResult<()> {
        // SAFETY: plain syscall with integer arguments.
        cvt("setresgid", String::new, unsafe {
            libc::setresgid(gid, gid, gid)
        })?;
        Ok(())
    }

    /// Sets real, effective and saved uid.
    pub fn setresuid(uid: libc::uid_t) -> SysResult<()> {
        // SAFETY: plain syscall with integer arguments.
        cvt("setresuid", String::new, unsafe {
            libc::setresuid(uid, uid, uid)
        })?;
        Ok(())
    }

    /// Returns (real, effective, saved) uid.
    pub fn getresuid() -> SysResult<(u32, u32, u32)> {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: the three pointers are to distinct writable locals.
        cvt("getresuid", String::new, unsafe {
            libc::getresuid(&mut r, &mut e, &mut s)
        })?;
        Ok((r, e, s))
    }

    /// Returns (real, effective, saved) gid.
    pub fn getresgid() -> SysResult<(u32, u32, u32)> {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: the three pointers are to distinct writable locals.
        cvt("getresgid", String::new, unsafe {
            libc::getresgid(&mut r, &mut e, &mut s)
        })?;
        Ok((r, e, s))
    }

    /// Number of supplementary groups and the first one (into a caller-provided buffer).
    pub fn getgroups(buf: &mut [libc::gid_t]) -> SysResult<usize> {
        // SAFETY: `buf` is writable for `buf.len()` gids.
        let n = cvt("getgroups", String::new, unsafe {
            libc::getgroups(buf.len() as libc::c_int, buf.as_mut_ptr())
        })?;
        Ok(n as usize)
    }

    /// Attempts `setuid(0)`; returns true if it (wrongly) succeeded.
    pub fn can_regain_root() -> bool {
        // SAFETY: plain syscall with an integer argument; success is what we are testing for.
        unsafe { libc::setuid(0) == 0 }
    }

    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: exec can never grant privileges again (setuid bits,
    /// file capabilities are ignored).
    pub fn no_new_privs() -> SysResult<()> {
        // SAFETY: plain prctl with integer arguments.
        cvt("prctl", String::new, unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        })?;
        Ok(())
    }

    /// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the command dies if the broker thread that forked it dies.
    pub fn pdeathsig() -> SysResult<()> {
        // SAFETY: plain prctl with integer arguments.
        cvt("prctl", String::new, unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0)
        })?;
        Ok(())
    }

    /// `setrlimit(resource, value, value)`.
    pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> SysResult<()> {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `lim` is a valid rlimit structure alive during the call.
        cvt("setrlimit", String::new, unsafe {
            libc::setrlimit(resource, &lim)
        })?;
        Ok(())
    }

    /// Marks every descriptor >= 3 close-on-exec, so only stdin/stdout/stderr reach the command.
    pub fn cloexec_from_3() -> SysResult<()> {
        // SAFETY: plain syscall with integer arguments.
        cvt("close_range", String::new, unsafe {
            libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int)
        })?;
        Ok(())
    }

    /// `chdir(path)`, with the caller's (dropped) credentials.
    pub fn chdir(path: &std::ffi::CStr) -> SysResult<()> {
        // SAFETY: `path` is a valid NUL-terminated string alive during the call.
        cvt("chdir", String::new, unsafe { libc::chdir(path.as_ptr()) })?;
        Ok(())
    }

    /// `fchdir(fd)`.
    pub fn fchdir(fd: i32) -> SysResult<()> {
        // SAFETY: plain syscall with an integer argument.
        cvt("fchdir", String::new, unsafe { libc::fchdir(fd) })?;
        Ok(())
    }

    /// `unshare(CLONE_NEWUSER)` (the probe, and the elevated tier's mapping user namespace).
    pub fn unshare_user() -> SysResult<()> {
        // SAFETY: plain syscall with a constant flag.
        cvt("unshare", String::new, unsafe {
            libc::unshare(libc::CLONE_NEWUSER)
        })?;
        Ok(())
    }
}
