//! The syscall boundary of Stockade's Linux tiers.
//!
//! Both Linux backends — `stockade-linux` (unelevated: namespaces, binds, Landlock, seccomp) and
//! `stockade-elevated` (sandbox accounts and a root broker) — reach the kernel only through this
//! crate: one syscall per `unsafe` block, each with its own `SAFETY:` argument, and every return
//! code normalised by the one [`cvt`] into a [`SysError`] carrying the call's name, so callers
//! add context, never errno plumbing. Callers in `io::Result` contexts keep using `?`
//! (`impl From<SysError> for io::Error` keeps the errno). Nothing here allocates except where a
//! `CString` is built from a path before the call, or a message when a call fails.
//!
//! Modules: [`seccomp`] (the filter assembler), [`fsgate`] (the write gate supervisor), [`sockets`] (the connect gate and descriptor
//! passing), [`pty`], [`net`] (loopback), [`caps`], [`landlock`] (ABI probe, restrict_self),
//! [`fs`] (descriptor-relative file calls for root code), [`ipc`] (System V IPC objects), [`users`], [`spawn`] (the broker's
//! fork/clone3 + exec path and the between-fork-and-exec [`spawn::child`] calls), [`netlink`].
#![cfg(target_os = "linux")]

pub mod caps;
pub mod fs;
pub mod fsgate;
pub mod ipc;
pub mod landlock;
pub mod net;
pub mod netlink;
pub(crate) mod notif;
pub mod overlayfs;
pub mod pty;
pub mod seccomp;
pub mod sockets;
pub mod spawn;
pub mod users;

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A failed syscall: which call, on what, and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{call}({what}): {source}")]
pub struct SysError {
    /// Name of the syscall.
    pub call: &'static str,
    /// What it acted on (a path, a flag set), for the message.
    pub what: String,
    /// The kernel's answer.
    #[source]
    pub source: io::Error,
}

impl SysError {
    /// The raw errno, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// The kind of the kernel's answer.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// A failure of `call` that is not (only) an errno: a refused argument, a short transfer.
    pub fn new(call: &'static str, source: io::Error) -> SysError {
        SysError {
            call,
            what: String::new(),
            source,
        }
    }

    /// `call` failed with the calling thread's current `errno`.
    pub fn last(call: &'static str) -> SysError {
        SysError::new(call, io::Error::last_os_error())
    }
}

/// Result of a syscall wrapper.
pub type SysResult<T> = Result<T, SysError>;

impl From<SysError> for io::Error {
    /// The kernel's answer itself when there is an errno (so `raw_os_error()` and `kind()` are
    /// what the call returned); otherwise an error of the same kind carrying the whole message.
    fn from(e: SysError) -> io::Error {
        if e.source.raw_os_error().is_some() {
            e.source
        } else {
            io::Error::new(e.source.kind(), e)
        }
    }
}

/// Normalise a C-style return value: negative means failure with `errno`. The one place a
/// return code becomes an error; `what` is only called on failure (so a caller between fork and
/// exec passes `String::new`, which does not allocate).
pub fn cvt<T: Copy + PartialOrd + From<i8>>(
    call: &'static str,
    what: impl FnOnce() -> String,
    ret: T,
) -> SysResult<T> {
    if ret < T::from(0) {
        Err(SysError {
            call,
            what: what(),
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(ret)
    }
}

/// [`cvt`], retrying while the call is interrupted (`EINTR`).
pub fn cvt_retry<T: Copy + PartialOrd + From<i8>>(
    call: &'static str,
    mut f: impl FnMut() -> T,
) -> SysResult<T> {
    loop {
        match cvt(call, String::new, f()) {
            Err(e) if e.source.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Path to a NUL-terminated C string (paths with interior NUL cannot exist on Linux).
pub fn cpath(p: &Path) -> SysResult<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SysError {
        call: "path",
        what: format!("{p:?}"),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

fn show(p: &Path) -> impl FnOnce() -> String + '_ {
    move || format!("{}", p.display())
}

// ---- mount API ------------------------------------------------------------------------------------

/// `struct mount_attr` for `mount_setattr(2)`.
#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Read-only mount attribute.
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// No set-uid mount attribute.
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// No device files mount attribute.
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
/// No exec mount attribute.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// Change mount attributes of the mount at `dirfd`/`path` (recursively when `recursive`), and set
/// its propagation to private when `private`.
pub fn mount_setattr(
    dirfd: RawFd,
    path: &CStr,
    recursive: bool,
    set: u64,
    clr: u64,
    private: bool,
) -> SysResult<()> {
    let mut flags = if recursive { AT_RECURSIVE } else { 0 };
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: if private { libc::MS_PRIVATE } else { 0 },
        userns_fd: 0,
    };
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call; `attr` is a
    // properly sized, initialised `struct mount_attr` that the kernel only reads; the size passed
    // is its exact size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    cvt("mount_setattr", || format!("{path:?}"), ret).map(drop)
}

/// Clone the mount tree at `path` into a detached mount (`open_tree(OPEN_TREE_CLONE)`).
pub fn open_tree_clone(path: &Path, recursive: bool) -> SysResult<OwnedFd> {
    open_tree_clone_flags(path, if recursive { AT_RECURSIVE } else { 0 })
}

/// Clone a symbolic link itself (not its target) into a detached mount.
pub fn open_tree_clone_link(path: &Path) -> SysResult<OwnedFd> {
    open_tree_clone_flags(path, libc::AT_SYMLINK_NOFOLLOW as libc::c_uint)
}

fn open_tree_clone_flags(path: &Path, extra: libc::c_uint) -> SysResult<OwnedFd> {
    let c = cpath(path)?;
    open_tree_clone_c(&c, extra).map_err(|e| SysError {
        what: path.display().to_string(),
        ..e
    })
}

/// A path bound onto itself, prepared as a C string (the elevated tier's run process, which
/// only makes raw calls on data the broker computed): recursive, or the link itself.
pub fn open_tree_self(path: &CStr, link: bool) -> SysResult<OwnedFd> {
    open_tree_clone_c(
        path,
        if link {
            libc::AT_SYMLINK_NOFOLLOW as libc::c_uint
        } else {
            AT_RECURSIVE
        },
    )
}

fn open_tree_clone_c(c: &CStr, extra: libc::c_uint) -> SysResult<OwnedFd> {
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | extra;
    // SAFETY: `c` is a valid NUL-terminated path; flags are valid open_tree flags; the kernel
    // returns a new descriptor we take ownership of below.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    let fd = cvt("open_tree", String::new, ret)?;
    // SAFETY: `fd` is a freshly returned, owned, open descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attach a detached mount `fd` at `target`.
pub fn move_mount_to(fd: &OwnedFd, target: &Path) -> SysResult<()> {
    let c = cpath(target)?;
    move_mount_c(fd, &c).map_err(|e| SysError {
        what: target.display().to_string(),
        ..e
    })
}

/// [`move_mount_to`] with the target already a C string.
pub fn move_mount_c(fd: &OwnedFd, target: &CStr) -> SysResult<()> {
    let empty = c"";
    // SAFETY: `fd` is an open detached-mount descriptor; both strings are NUL-terminated and live
    // across the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    cvt("move_mount", String::new, ret).map(drop)
}

/// Idmapped mount attribute (`MOUNT_ATTR_IDMAP`).
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x0000_0040;

/// Clone the tree at what `fd` refers to (a directory, a file, or with an `O_PATH | O_NOFOLLOW`
/// descriptor a symbolic link itself) into a detached mount: `open_tree(fd, "",
/// OPEN_TREE_CLONE | AT_EMPTY_PATH [| AT_RECURSIVE])`. No path is resolved.
pub fn open_tree_fd(fd: BorrowedFd<'_>, recursive: bool) -> SysResult<OwnedFd> {
    let mut flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `fd` is an open descriptor for the duration of the call; the path is the empty
    // NUL-terminated string (AT_EMPTY_PATH: the descriptor itself); the kernel returns a new
    // descriptor we take ownership of below.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    let fd = cvt("open_tree", String::new, ret)?;
    // SAFETY: `fd` is a freshly returned, owned, open descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Make the detached mount tree `fd` idmapped through the user namespace `userns` (and set the
/// attributes `set`), recursively: `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE,
/// {MOUNT_ATTR_IDMAP | set, userns})`.
pub fn mount_setattr_idmap(fd: BorrowedFd<'_>, userns: BorrowedFd<'_>, set: u64) -> SysResult<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE;
    // SAFETY: `fd` and `userns` are open descriptors for the call; the path is the empty
    // NUL-terminated string; `attr` is a properly sized, initialised `struct mount_attr` that the
    // kernel only reads, and the size passed is its exact size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    cvt("mount_setattr", || "MOUNT_ATTR_IDMAP".into(), ret).map(drop)
}

/// Attach the detached mount `fd` on the directory the descriptor `target` refers to:
/// `move_mount(fd, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)`. No path
/// is resolved.
pub fn move_mount_fd(fd: BorrowedFd<'_>, target: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: both descriptors are open for the call; both paths are the empty NUL-terminated
    // string (the descriptors themselves).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    cvt("move_mount", String::new, ret).map(drop)
}

/// `unshare(flags)`: new namespaces for the calling process.
pub fn unshare(flags: libc::c_int) -> SysResult<()> {
    // SAFETY: unshare with integer flags; affects only the calling process.
    let ret = unsafe { libc::unshare(flags) };
    cvt("unshare", String::new, ret).map(drop)
}

/// `flock(fd, LOCK_EX)`, waiting (retried on `EINTR`).
pub fn flock_exclusive(fd: RawFd) -> SysResult<()> {
    // SAFETY: flock on a descriptor number with a constant operation; no memory is passed.
    cvt_retry("flock", || unsafe { libc::flock(fd, libc::LOCK_EX) }).map(drop)
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file description holds a lock.
pub fn flock_exclusive_nowait(fd: RawFd) -> SysResult<bool> {
    // SAFETY: flock on a descriptor number with constant operations; no memory is passed.
    match cvt_retry("flock", || unsafe {
        libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB)
    }) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// ext4's "top of a directory hierarchy" inode flag (`chattr +T`, `FS_TOPDIR_FL`).
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Mark the directory `fd` as the top of a hierarchy (`chattr +T`) unless it already is: ext4's
/// Orlov allocator then spreads its subdirectories (and the inodes made in them) over block
/// groups instead of packing them into the parent's. Filesystems without inode flags refuse
/// (`ENOTTY`, `EOPNOTSUPP`); the caller treats that as nothing to do.
pub fn set_topdir_flag(fd: RawFd) -> SysResult<()> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int (the kernel's flags word) to `flags`, which lives
    // through the call.
    let ret = unsafe { libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut flags as *mut libc::c_int) };
    cvt("ioctl(FS_IOC_GETFLAGS)", String::new, ret)?;
    if flags & FS_TOPDIR_FL != 0 {
        return Ok(());
    }
    flags |= FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int from `flags`, which lives through the call.
    let ret = unsafe { libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &flags as *const libc::c_int) };
    cvt("ioctl(FS_IOC_SETFLAGS)", String::new, ret).map(drop)
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`: changes exactly the inode `fd` refers to.
pub fn fchown_fd(fd: RawFd, uid: libc::uid_t, gid: libc::gid_t) -> SysResult<()> {
    // SAFETY: `c""` is a valid empty NUL-terminated string; with AT_EMPTY_PATH the kernel acts on
    // the descriptor's own inode (an O_PATH descriptor works).
    let ret = unsafe {
        libc::fchownat(
            fd,
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    cvt("fchownat", String::new, ret).map(drop)
}

/// Classic `mount(2)` of a new filesystem (`fstype`) at `target` with `data` options.
pub fn mount_fs(
    fstype: &CStr,
    target: &Path,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    let t = cpath(target)?;
    let data_ptr = data.map_or(std::ptr::null(), |d| d.as_ptr());
    // SAFETY: all pointers are valid NUL-terminated strings (or NULL for data) that outlive the
    // call; the kernel only reads them.
    let ret = unsafe {
        libc::mount(
            fstype.as_ptr(),
            t.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_ptr.cast(),
        )
    };
    cvt(
        "mount",
        || format!("{fstype:?} on {}", target.display()),
        ret as libc::c_long,
    )
    .map(drop)
}

// ---- files ----------------------------------------------------------------------------------------

/// `mkdir(2)`; an existing directory is not an error.
pub fn mkdir(path: &Path, mode: libc::mode_t) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let ret = unsafe { libc::mkdir(c.as_ptr(), mode) };
    match cvt("mkdir", show(path), ret as libc::c_long) {
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
        other => other.map(drop),
    }
}

/// Create an empty regular file (a bind-mount target); an existing file is not an error.
pub fn touch(path: &Path, mode: libc::mode_t) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path; flags and mode are plain integers.
    let ret = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    };
    let fd = cvt("open", show(path), ret as libc::c_long)?;
    // SAFETY: `fd` is the descriptor just returned and owned here; it is closed exactly once.
    drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    Ok(())
}

/// `symlink(2)`.
pub fn symlink(target: &Path, link: &Path) -> SysResult<()> {
    let t = cpath(target)?;
    let l = cpath(link)?;
    // SAFETY: both are valid NUL-terminated strings.
    let ret = unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) };
    cvt("symlink", show(link), ret as libc::c_long).map(drop)
}

/// `chdir(2)`.
pub fn chdir(path: &Path) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let ret = unsafe { libc::chdir(c.as_ptr()) };
    cvt("chdir", show(path), ret as libc::c_long).map(drop)
}

/// Write `data` to an existing file (used for `/proc/self/{uid_map,gid_map,setgroups}`).
pub fn write_file(path: &Path, data: &[u8]) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let ret = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    let fd = cvt("open", show(path), ret as libc::c_long)? as RawFd;
    // SAFETY: `fd` was just returned by open and is owned here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `data` is a valid readable buffer of `data.len()` bytes; `owned` is open.
    let n = unsafe { libc::write(owned.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    let n = cvt("write", show(path), n as libc::c_long)?;
    if n as usize != data.len() {
        return Err(SysError {
            call: "write",
            what: format!("{} (short write)", path.display()),
            source: io::Error::from_raw_os_error(libc::EIO),
        });
    }
    Ok(())
}

// ---- process --------------------------------------------------------------------------------------

/// `struct clone_args` for `clone3(2)` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
#[allow(missing_docs)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// Outcome of [`clone3_fork`] on each side.
pub enum Forked {
    /// In the parent: the child's pid and a pidfd for it.
    Parent {
        /// Child pid as seen by the parent.
        pid: libc::pid_t,
        /// pidfd referring to the child.
        pidfd: OwnedFd,
    },
    /// In the child.
    Child,
}

/// Raw fork-like `clone3` with `CLONE_PIDFD | flags`, SIGCHLD on exit and `cgroup` (a descriptor
/// when `flags` has `CLONE_INTO_CGROUP`, else 0); the new pidfd is stored in `pidfd`. Returns the
/// syscall's result: the child's pid in the parent, 0 in the child, -1 with errno on failure.
///
/// # Safety
/// As `fork`: the child resumes in a copy of the caller's address space with only the calling
/// thread, so what it may do before exec or `_exit` is the caller's contract to keep.
pub(crate) unsafe fn clone3_pidfd(flags: u64, cgroup: u64, pidfd: &mut RawFd) -> libc::c_long {
    let args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup,
        ..Default::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed, living across the call; without
    // CLONE_VM and with a zero stack clone3 does not share memory with the child, and the rest
    // (fork semantics) is this function's contract with its caller.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    }
}

/// Fork-like `clone3` into new namespaces (`flags` are `CLONE_NEW*`), with a pidfd for the parent.
///
/// The caller must be single-threaded: like `fork`, only the calling thread continues in the child.
pub fn clone3_fork(ns_flags: u64) -> SysResult<Forked> {
    let mut pidfd: RawFd = -1;
    // SAFETY: without CLONE_VM and with a zero stack, clone3 behaves like fork: the child gets a
    // copy of this (single-threaded, per the caller's contract) address space and resumes here.
    // `pidfd` outlives the call and receives the fd.
    let ret = unsafe { clone3_pidfd(ns_flags, 0, &mut pidfd) };
    let pid = cvt("clone3", || format!("flags {ns_flags:#x}"), ret)?;
    if pid == 0 {
        Ok(Forked::Child)
    } else {
        // SAFETY: with CLONE_PIDFD the kernel stored a new, owned pidfd in `pidfd` on success.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok(Forked::Parent {
            pid: pid as libc::pid_t,
            pidfd,
        })
    }
}

/// Plain `fork(2)`. Caller must be single-threaded.
pub fn fork() -> SysResult<libc::pid_t> {
    // SAFETY: the caller guarantees the process is single-threaded, so the child's copy of the
    // address space (including allocator state) is consistent.
    let ret = unsafe { libc::fork() };
    cvt("fork", String::new, ret as libc::c_long).map(|p| p as libc::pid_t)
}

/// `prctl(option, arg2, 0, 0, 0)`.
pub fn prctl(
    option: libc::c_int,
    arg2: libc::c_ulong,
    what: &'static str,
) -> SysResult<libc::c_int> {
    // SAFETY: prctl with integer arguments only; no pointers are passed.
    let ret = unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    cvt("prctl", || what.to_string(), ret as libc::c_long).map(|r| r as libc::c_int)
}

/// `setsid(2)`.
pub fn setsid() -> SysResult<()> {
    // SAFETY: no arguments.
    let ret = unsafe { libc::setsid() };
    cvt("setsid", String::new, ret as libc::c_long).map(drop)
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> SysResult<()> {
    // SAFETY: pointer and length describe the bytes of `name`.
    let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    cvt("sethostname", || name.to_string(), ret as libc::c_long).map(drop)
}

/// `close(2)` of a descriptor this process holds as a raw number (used where the owner is a
/// copy in a forked child that exits without running destructors).
pub fn close_raw(fd: RawFd) {
    // SAFETY: closing a descriptor number; the caller never uses `fd` again in this process.
    unsafe { libc::close(fd) };
}

/// `SIGPIPE` back to its default disposition (Rust ignores it at startup, and an ignored
/// disposition survives exec).
pub fn default_sigpipe() {
    // SAFETY: restoring the default disposition of a signal is always sound.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// `setrlimit(resource, limit)`; `name` names the limit in the error.
pub fn setrlimit(
    resource: libc::__rlimit_resource_t,
    limit: &libc::rlimit,
    name: &'static str,
) -> SysResult<()> {
    // SAFETY: setrlimit reads a valid rlimit struct; lowering limits needs no privilege.
    let ret = unsafe { libc::setrlimit(resource, limit) };
    cvt("setrlimit", || name.to_string(), ret).map(drop)
}

/// `close_range(first, ~0, 0)`: close every descriptor from `first` up.
pub fn close_from(first: u32) -> SysResult<()> {
    // SAFETY: integer arguments only; closing descriptors the process owns.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    cvt("close_range", || first.to_string(), ret).map(drop)
}

/// Clear `FD_CLOEXEC` on `fd` so it survives exec (for `--pass-fd`).
pub fn clear_cloexec(fd: RawFd) -> SysResult<()> {
    // SAFETY: F_SETFD with an integer argument on a descriptor number; an invalid fd yields EBADF.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    cvt("fcntl(F_SETFD)", String::new, ret as libc::c_long).map(drop)
}

/// `dup2(2)`.
pub fn dup2(from: RawFd, to: RawFd) -> SysResult<()> {
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::dup2(from, to) };
    cvt("dup2", String::new, ret as libc::c_long).map(drop)
}

/// A pipe with both ends close-on-exec: (read, write).
pub fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    cvt("pipe2", String::new, ret as libc::c_long)?;
    // SAFETY: both descriptors were just created by pipe2 and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Write all of `buf` to `fd`, retrying on EINTR; errors are ignored by design (best-effort
/// reporting from a child that is about to exit).
pub fn write_all_best_effort(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// `kill(2)`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> SysResult<()> {
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::kill(pid, sig) };
    cvt("kill", || format!("{pid} sig {sig}"), ret as libc::c_long).map(drop)
}

/// `pidfd_send_signal(2)`.
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: libc::c_int) -> SysResult<()> {
    // SAFETY: `pidfd` is an open pidfd; info is NULL (kernel fills defaults); flags 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    cvt("pidfd_send_signal", || sig.to_string(), ret).map(drop)
}

/// `_exit(2)`: leave without running destructors or atexit handlers (child side of a fork).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Block `set` in this thread and return the previous mask.
pub fn block_signals(set: &libc::sigset_t) -> SysResult<libc::sigset_t> {
    // SAFETY: an all-zero sigset_t is a valid value that sigprocmask overwrites.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` and `old` are valid sigset_t values.
    let ret = unsafe { libc::sigprocmask(libc::SIG_BLOCK, set, &mut old) };
    cvt("sigprocmask", String::new, ret as libc::c_long)?;
    Ok(old)
}

/// Set this thread's signal mask to `set`.
pub fn set_sigmask(set: &libc::sigset_t) -> SysResult<()> {
    // SAFETY: `set` is a valid sigset_t; the old mask is not requested.
    let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, set, std::ptr::null_mut()) };
    cvt("sigprocmask", String::new, ret as libc::c_long).map(drop)
}

/// Build a sigset from signal numbers.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid, writable storage for a sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: `set` was initialised by sigemptyset; `s` is a signal number (invalid ones are
        // rejected by the call with EINVAL, which is harmless here).
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// An empty sigset.
pub fn empty_sigset() -> libc::sigset_t {
    sigset(&[])
}

/// A `signalfd` for `set` (which must already be blocked).
pub fn signalfd(set: &libc::sigset_t) -> SysResult<OwnedFd> {
    // SAFETY: `set` is a valid sigset_t; -1 asks for a new descriptor.
    let ret = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC) };
    let fd = cvt("signalfd", String::new, ret as libc::c_long)?;
    // SAFETY: `fd` is a freshly created, owned descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Read one `signalfd_siginfo` (blocking). Returns (signal, sender pid, si_code).
pub fn read_signalfd(fd: &OwnedFd) -> SysResult<(i32, u32, i32)> {
    // SAFETY: an all-zero signalfd_siginfo is valid storage for the kernel to fill.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is writable storage of exactly the size passed.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            std::mem::size_of::<libc::signalfd_siginfo>(),
        )
    };
    cvt("read(signalfd)", String::new, n as libc::c_long)?;
    Ok((info.ssi_signo as i32, info.ssi_pid, info.ssi_code))
}

/// `waitpid(pid, WNOHANG or 0)`: `Ok(None)` when nothing changed.
pub fn waitpid(pid: libc::pid_t, nohang: bool) -> SysResult<Option<(libc::pid_t, libc::c_int)>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid int for the kernel to fill.
        let ret =
            unsafe { libc::waitpid(pid, &mut status, if nohang { libc::WNOHANG } else { 0 }) };
        match cvt("waitpid", || pid.to_string(), ret as libc::c_long) {
            Ok(0) => return Ok(None),
            Ok(p) => return Ok(Some((p as libc::pid_t, status))),
            Err(e) if e.errno() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `poll(2)` on `fds` (events set by the caller); returns the number ready. Retries on EINTR.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> SysResult<usize> {
    loop {
        match poll_once(fds, timeout_ms) {
            Err(e) if e.errno() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// One `poll(2)` on `fds`: the number ready, or the error (`EINTR` included).
pub fn poll_once(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> SysResult<usize> {
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd structs.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    cvt("poll", String::new, ret as libc::c_long).map(|n| n as usize)
}

/// `read(2)` into `buf`, retrying on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    loop {
        // SAFETY: `buf` is valid writable storage of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match cvt("read", String::new, n as libc::c_long) {
            Err(e) if e.errno() == Some(libc::EINTR) => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// `execve(2)`: returns only on failure.
pub fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> SysError {
    // SAFETY: `argv` and `envp` are NULL-terminated arrays of pointers to NUL-terminated strings
    // that the caller keeps alive across the call; on success the call does not return.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    SysError {
        call: "execve",
        what: format!("{path:?}"),
        source: io::Error::last_os_error(),
    }
}

/// Bytes of an `OsStr`, for building C strings.
pub fn os_bytes(s: &OsStr) -> &[u8] {
    s.as_bytes()
}
