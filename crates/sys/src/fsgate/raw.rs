//! The write gate's syscalls, each returning the errno the caller will be answered with. One
//! syscall per `unsafe` block; every return code goes through [`crate::cvt`]. No allocation:
//! paths arrive as `CStr`s built in the workers' reusable buffers.

use crate::cvt;
use crate::notif::errno_of;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub(super) type R<T> = Result<T, i32>;

fn ok(call: &'static str, ret: libc::c_long) -> R<libc::c_long> {
    cvt(call, String::new, ret).map_err(errno_of)
}

fn owned(call: &'static str, ret: libc::c_long) -> R<OwnedFd> {
    let fd = ok(call, ret)?;
    // SAFETY: the kernel just returned this descriptor to this process and nothing owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `/proc/self/fd/<fd>` (or `/proc/<pid>/<what>`) as a C string on the stack.
pub(super) struct ProcPath {
    buf: [u8; 48],
    len: usize,
}

impl ProcPath {
    /// `/proc/self/fd/<fd>`: the supervisor's own descriptor, a magic link to exactly its object.
    pub(super) fn fd(fd: RawFd) -> Self {
        let mut p = ProcPath {
            buf: [0; 48],
            len: 0,
        };
        p.push(b"/proc/self/fd/");
        p.num(fd as u64);
        p
    }

    /// `<fd>` alone: the same magic link relative to the supervisor's held `/proc/self/fd`.
    pub(super) fn fd_num(fd: RawFd) -> Self {
        let mut p = ProcPath {
            buf: [0; 48],
            len: 0,
        };
        p.num(fd as u64);
        p
    }

    /// `/proc/<pid>/<what>`.
    pub(super) fn pid(pid: u32, what: &[u8]) -> Self {
        let mut p = ProcPath {
            buf: [0; 48],
            len: 0,
        };
        p.push(b"/proc/");
        p.num(u64::from(pid));
        p.push(b"/");
        p.push(what);
        p
    }

    fn push(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    fn num(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    pub(super) fn c(&self) -> &CStr {
        // The buffer is zero-filled and `push` never writes its last byte: a NUL follows.
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"")
    }
}

pub(super) fn openat(dir: RawFd, name: &CStr, flags: i32, mode: u32) -> R<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; flags and mode are integers.
    let ret = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    owned("openat", ret as libc::c_long)
}

/// `openat2(dir, path, O_PATH | O_DIRECTORY, RESOLVE_NO_MAGICLINKS)`: a directory, symbolic
/// links followed by the kernel, `/proc/*/fd/*`-style magic links refused (`ELOOP`).
pub(super) fn open_dir(dir: RawFd, path: &CStr) -> R<OwnedFd> {
    // SAFETY: open_how is a plain C struct of integers for which all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `path` is NUL-terminated and `how` a fully initialised open_how, both outliving the
    // call; the size passed is exactly the size of `how`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    owned("openat2", ret)
}

pub(super) fn fstat(fd: RawFd) -> R<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` points to writable memory of the size of `struct stat`.
    let ret = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    ok("fstat", ret as libc::c_long)?;
    // SAFETY: fstat succeeded and filled `st` (it was zeroed before, too).
    Ok(unsafe { st.assume_init() })
}

pub(super) fn fstatfs_type(fd: RawFd) -> R<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `st` points to writable memory of the size of `struct statfs`.
    let ret = unsafe { libc::fstatfs(fd, st.as_mut_ptr()) };
    ok("fstatfs", ret as libc::c_long)?;
    // SAFETY: fstatfs succeeded and filled `st` (zeroed before, too).
    Ok(unsafe { st.assume_init() }.f_type)
}

/// `readlinkat(dir, name)` into `out` (cleared; no NUL appended). `ENAMETOOLONG` when the
/// target does not fit in `cap` bytes.
pub(super) fn readlinkat(dir: RawFd, name: &CStr, out: &mut Vec<u8>, cap: usize) -> R<()> {
    out.clear();
    out.resize(cap, 0);
    // SAFETY: `out` is writable for `cap` bytes; `name` is NUL-terminated.
    let ret = unsafe { libc::readlinkat(dir, name.as_ptr(), out.as_mut_ptr().cast(), cap) };
    let n = ok("readlinkat", ret as libc::c_long)? as usize;
    if n >= cap {
        return Err(libc::ENAMETOOLONG);
    }
    out.truncate(n);
    Ok(())
}

pub(super) fn mkdirat(dir: RawFd, name: &CStr, mode: u32) -> R<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let ret = unsafe { libc::mkdirat(dir, name.as_ptr(), mode) };
    ok("mkdirat", ret as libc::c_long).map(drop)
}

pub(super) fn mknodat(dir: RawFd, name: &CStr, mode: u32, dev: u64) -> R<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let ret = unsafe { libc::mknodat(dir, name.as_ptr(), mode, dev) };
    ok("mknodat", ret as libc::c_long).map(drop)
}

pub(super) fn symlinkat(target: &CStr, dir: RawFd, name: &CStr) -> R<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let ret = unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) };
    ok("symlinkat", ret as libc::c_long).map(drop)
}

pub(super) fn linkat(od: RawFd, on: &CStr, nd: RawFd, nn: &CStr, flags: i32) -> R<()> {
    // SAFETY: both names are NUL-terminated and outlive the call.
    let ret = unsafe { libc::linkat(od, on.as_ptr(), nd, nn.as_ptr(), flags) };
    ok("linkat", ret as libc::c_long).map(drop)
}

pub(super) fn renameat2(od: RawFd, on: &CStr, nd: RawFd, nn: &CStr, flags: u32) -> R<()> {
    // SAFETY: both names are NUL-terminated and outlive the call; flags is an integer.
    let ret = unsafe { libc::renameat2(od, on.as_ptr(), nd, nn.as_ptr(), flags) };
    ok("renameat2", ret as libc::c_long).map(drop)
}

pub(super) fn unlinkat(dir: RawFd, name: &CStr, flags: i32) -> R<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let ret = unsafe { libc::unlinkat(dir, name.as_ptr(), flags) };
    ok("unlinkat", ret as libc::c_long).map(drop)
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH)`: exactly the object `fd` refers to (an
/// `O_PATH` descriptor of a symbolic link changes the link).
pub(super) fn fchown_empty(fd: RawFd, uid: u32, gid: u32) -> R<()> {
    // SAFETY: the empty NUL-terminated path with AT_EMPTY_PATH names `fd` itself.
    let ret = unsafe { libc::fchownat(fd, c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) };
    ok("fchownat", ret as libc::c_long).map(drop)
}

pub(super) fn fchmod(fd: RawFd, mode: u32) -> R<()> {
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::fchmod(fd, mode) };
    ok("fchmod", ret as libc::c_long).map(drop)
}

pub(super) fn chmod(path: &CStr, mode: u32) -> R<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let ret = unsafe { libc::chmod(path.as_ptr(), mode) };
    ok("chmod", ret as libc::c_long).map(drop)
}

/// `utimensat(fd, "", times, AT_EMPTY_PATH)`; `None` sets both times to now.
pub(super) fn utimens_empty(fd: RawFd, times: Option<&[libc::timespec; 2]>) -> R<()> {
    let t = times.map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: the empty NUL-terminated path with AT_EMPTY_PATH names `fd` itself; `t` is NULL or
    // points at two timespecs that outlive the call.
    let ret = unsafe { libc::utimensat(fd, c"".as_ptr(), t, libc::AT_EMPTY_PATH) };
    ok("utimensat", ret as libc::c_long).map(drop)
}

/// `ftruncate(fd, 0)` (an open's `O_TRUNC`, applied once the file is known to be the one judged).
pub(super) fn ftruncate(fd: RawFd) -> R<()> {
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::ftruncate(fd, 0) };
    ok("ftruncate", ret as libc::c_long).map(drop)
}

/// The soft `RLIMIT_FSIZE` of process `pid` (`prlimit`, reading only).
pub(super) fn fsize_limit(pid: u32) -> R<u64> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a NULL new limit only writes the current one into `old`.
    let ret = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            std::ptr::null(),
            &mut old,
        )
    };
    ok("prlimit", ret as libc::c_long)?;
    Ok(old.rlim_cur)
}

pub(super) fn truncate(path: &CStr, len: i64) -> R<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let ret = unsafe { libc::truncate(path.as_ptr(), len) };
    ok("truncate", ret as libc::c_long).map(drop)
}

pub(super) fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> R<()> {
    // SAFETY: both strings are NUL-terminated; `value` is readable for its length.
    let ret = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    ok("setxattr", ret as libc::c_long).map(drop)
}

pub(super) fn fsetxattr(fd: RawFd, name: &CStr, value: &[u8], flags: i32) -> R<()> {
    // SAFETY: `name` is NUL-terminated; `value` is readable for its length.
    let ret =
        unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), flags) };
    ok("fsetxattr", ret as libc::c_long).map(drop)
}

pub(super) fn removexattr(path: &CStr, name: &CStr) -> R<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let ret = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    ok("removexattr", ret as libc::c_long).map(drop)
}

pub(super) fn fremovexattr(fd: RawFd, name: &CStr) -> R<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let ret = unsafe { libc::fremovexattr(fd, name.as_ptr()) };
    ok("fremovexattr", ret as libc::c_long).map(drop)
}

pub(super) fn bind(fd: RawFd, addr: &[u8]) -> R<()> {
    // SAFETY: `addr` is a readable buffer of `addr.len()` bytes holding a sockaddr.
    let ret = unsafe { libc::bind(fd, addr.as_ptr().cast(), addr.len() as libc::socklen_t) };
    ok("bind", ret as libc::c_long).map(drop)
}

pub(super) fn fchdir(fd: RawFd) -> R<()> {
    // SAFETY: integer argument only; changes this thread's own (unshared) cwd.
    let ret = unsafe { libc::fchdir(fd) };
    ok("fchdir", ret as libc::c_long).map(drop)
}

/// Set this thread's umask (its `fs_struct` is private after `unshare(CLONE_FS)`).
pub(super) fn umask(mask: u32) -> u32 {
    // SAFETY: integer argument only; umask cannot fail.
    unsafe { libc::umask(mask) }
}

/// `pread(fd, buf, 0)`: the number of bytes read.
pub(super) fn pread(fd: RawFd, buf: &mut [u8]) -> R<usize> {
    // SAFETY: `buf` is writable for its length.
    let ret = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    ok("pread", ret as libc::c_long).map(|n| n as usize)
}

pub(super) fn getfl(fd: RawFd) -> R<i32> {
    // SAFETY: F_GETFL on a descriptor number; no pointers.
    let ret = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    ok("fcntl", ret as libc::c_long).map(|v| v as i32)
}

pub(super) fn setfl(fd: RawFd, fl: i32) -> R<()> {
    // SAFETY: F_SETFL with an integer argument on a descriptor number.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
    ok("fcntl", ret as libc::c_long).map(drop)
}

/// Has the listener hung up (no process holds the filter any more)?
pub(super) fn hung_up(fd: BorrowedFd<'_>) -> bool {
    revents(fd) & libc::POLLHUP != 0
}

/// Is a notification waiting to be received on the listener (`POLLIN`, not blocking)?
pub(super) fn readable(fd: BorrowedFd<'_>) -> bool {
    revents(fd) & libc::POLLIN != 0
}

/// The listener's poll events now (`POLLIN` asked, without blocking); none if `poll` fails.
fn revents(fd: BorrowedFd<'_>) -> libc::c_short {
    let mut p = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    match crate::poll_once(&mut p, 0) {
        Ok(_) => p[0].revents,
        Err(_) => 0,
    }
}

/// Sleep `ms` milliseconds (the blocking-open retry loop).
pub(super) fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(super) fn lstatat(dir: RawFd, name: &CStr) -> R<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `name` is NUL-terminated; `st` points to writable memory of the size of `stat`.
    let ret = unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    ok("fstatat", ret as libc::c_long)?;
    // SAFETY: fstatat succeeded and filled `st` (zeroed before, too).
    Ok(unsafe { st.assume_init() })
}
