//! Descriptor-relative file calls for root code: `openat2` with `RESOLVE_*` rules, `fstat`,
//! ACL extended attributes on `O_PATH` descriptors (through `/proc/self/fd`), descriptor
//! duplication. Root code never resolves a path a caller controls; it works from these.

use crate::{cvt, cvt_retry, SysError, SysResult};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// `openat2(dirfd, path, flags, resolve)`: the kernel resolves `path` with the `RESOLVE_*` rules,
/// so a symlink swapped in anywhere along the path fails the open instead of being followed.
pub fn openat2(
    dirfd: Option<BorrowedFd<'_>>,
    path: &Path,
    flags: i32,
    resolve: u64,
) -> SysResult<OwnedFd> {
    openat2_mode(dirfd, path, flags, 0, resolve)
}

/// [`openat2`] with the `mode` a created file gets (before the umask), for `O_CREAT` opens.
pub fn openat2_mode(
    dirfd: Option<BorrowedFd<'_>>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> SysResult<OwnedFd> {
    let c = crate::cpath(path)?;
    // SAFETY: open_how is a plain C struct of integers for which all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    let dfd = dirfd.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let fd = cvt_retry("openat2", || {
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
pub fn fstat(fd: BorrowedFd<'_>) -> SysResult<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` points to writable memory of the size of `struct stat`.
    cvt("fstat", String::new, unsafe {
        libc::fstat(fd.as_raw_fd(), st.as_mut_ptr())
    })?;
    // SAFETY: fstat succeeded, so it fully initialised `st` (it was zeroed before anyway).
    Ok(unsafe { st.assume_init() })
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`.
pub fn fstatat_nofollow(dirfd: BorrowedFd<'_>, name: &CStr) -> SysResult<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `name` is NUL-terminated, `st` is writable memory of the size of `struct stat`.
    cvt("fstatat", String::new, unsafe {
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

/// `getxattr` through `/proc/self/fd/N`, which works for `O_PATH` descriptors and never follows a
/// symlink the caller could swap (the magic link designates the already-open inode).
pub fn fd_getxattr(fd: BorrowedFd<'_>, name: &CStr) -> SysResult<Option<Vec<u8>>> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| SysError::new("path", io::Error::other(e)))?;
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
        match cvt("fgetxattr", String::new, r) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            Err(e) if e.errno() == Some(libc::ENODATA) => return Ok(None),
            Err(e) if e.errno() == Some(libc::ERANGE) && buf.len() < 1 << 20 => {
                buf.resize(buf.len() * 4, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `setxattr` through `/proc/self/fd/N` (see [`fd_getxattr`]).
pub fn fd_setxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> SysResult<()> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| SysError::new("path", io::Error::other(e)))?;
    // SAFETY: `p` and `name` are NUL-terminated; `value` is readable for its length.
    cvt("setxattr", String::new, unsafe {
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
pub fn fd_removexattr(fd: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| SysError::new("path", io::Error::other(e)))?;
    // SAFETY: `p` and `name` are NUL-terminated strings alive during the call.
    match cvt("removexattr", String::new, unsafe {
        libc::removexattr(p.as_ptr(), name.as_ptr())
    }) {
        Ok(_) => Ok(()),
        Err(e) if e.errno() == Some(libc::ENODATA) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 3)`: a copy of `fd` numbered 3 or above.
pub fn dup_above_stdio(fd: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC with integer arguments; the result is checked.
    let n = cvt("fcntl", String::new, unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3)
    })?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Whether `fd` is an open descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on an integer; no memory is passed.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// `statfs(path)`: the filesystem's magic number (`f_type`, as the kernel's 32-bit value).
pub fn statfs_magic(path: &Path) -> SysResult<u64> {
    let c = crate::cpath(path)?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a NUL-terminated string alive for the call; `buf` is writable memory for one
    // `struct statfs`.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    cvt("statfs", || path.display().to_string(), rc)?;
    // SAFETY: `statfs` returned 0, so it filled `buf`.
    let sf = unsafe { buf.assume_init() };
    // `f_type` is signed on some targets; the magic numbers are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    let magic = (sf.f_type as u64) & 0xFFFF_FFFF;
    Ok(magic)
}

/// `statfs(path)`: the bytes in use on the filesystem (`(f_blocks - f_bfree) * f_bsize`).
pub fn statfs_used_bytes(path: &Path) -> SysResult<u64> {
    let c = crate::cpath(path)?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a NUL-terminated string alive for the call; `buf` is writable memory for one
    // `struct statfs`.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    cvt("statfs", || path.display().to_string(), rc)?;
    // SAFETY: `statfs` returned 0, so it filled `buf`.
    let sf = unsafe { buf.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    let used = (sf.f_blocks as u64).saturating_sub(sf.f_bfree as u64);
    #[allow(clippy::unnecessary_cast)]
    Ok(used.saturating_mul(sf.f_bsize as u64))
}

/// `renameat2(dirfd, old, dirfd, new, RENAME_NOREPLACE)`: rename an entry of one directory
/// (single names, so nothing is resolved beyond the directory descriptor; the last component is
/// never followed), failing with `EEXIST` rather than replacing anything.
pub fn rename_noreplace(dirfd: BorrowedFd<'_>, old: &CStr, new: &CStr) -> SysResult<()> {
    // SAFETY: both names are NUL-terminated strings that outlive the call; the descriptor is open.
    cvt("renameat2", String::new, unsafe {
        libc::renameat2(
            dirfd.as_raw_fd(),
            old.as_ptr(),
            dirfd.as_raw_fd(),
            new.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })?;
    Ok(())
}

/// `fchmod(fd, mode)` on an open (not `O_PATH`) descriptor.
pub fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> SysResult<()> {
    // SAFETY: plain syscall on an open descriptor.
    cvt("fchmod", String::new, unsafe {
        libc::fchmod(fd.as_raw_fd(), mode)
    })?;
    Ok(())
}
