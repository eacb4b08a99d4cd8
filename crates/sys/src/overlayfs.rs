//! Kernel overlayfs through the new mount API: `fsopen("overlay")`, one `fsconfig` per option,
//! `fsmount` into a detached mount the caller attaches with `move_mount`.

use crate::{cvt, SysError, SysResult};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSOPEN_CLOEXEC: u32 = 1;
const FSMOUNT_CLOEXEC: u32 = 1;

fn fsconfig(
    fs: BorrowedFd<'_>,
    cmd: u32,
    key: Option<&CStr>,
    value: Option<&CStr>,
) -> SysResult<()> {
    let key_ptr = key.map_or(std::ptr::null(), CStr::as_ptr);
    let value_ptr = value.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: `fs` is an open fs context; key/value are NUL-terminated strings (or NULL, as the
    // command requires) that outlive the call; the kernel only reads them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key_ptr,
            value_ptr,
            0,
        )
    };
    cvt(
        "fsconfig",
        || {
            format!(
                "overlay {}",
                key.map_or("create".into(), |k| k.to_string_lossy().into_owned())
            )
        },
        ret,
    )
    .map(drop)
}

fn cstr(p: &Path) -> SysResult<CString> {
    crate::cpath(p)
}

/// A detached overlay mount of `lower` (read-only) beneath `upper` (with `work`), mounted with
/// `userxattr` (usable in a user namespace), `volatile`, `nosuid` and `nodev`. Where the kernel refuses (no
/// overlayfs, no unprivileged overlay), the error names the call that failed.
pub fn overlay_mount(lower: &Path, upper: &Path, work: &Path) -> SysResult<OwnedFd> {
    // SAFETY: the name is a NUL-terminated literal; flags are plain integers.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    let fd = cvt("fsopen", || "overlay (is overlayfs available?)".into(), fd)?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let (l, u, w) = (cstr(lower)?, cstr(upper)?, cstr(work)?);
    fsconfig(fs.as_fd(), FSCONFIG_SET_STRING, Some(c"lowerdir"), Some(&l))?;
    fsconfig(fs.as_fd(), FSCONFIG_SET_STRING, Some(c"upperdir"), Some(&u))?;
    fsconfig(fs.as_fd(), FSCONFIG_SET_STRING, Some(c"workdir"), Some(&w))?;
    fsconfig(fs.as_fd(), FSCONFIG_SET_FLAG, Some(c"userxattr"), None)?;
    // No syncfs of the upper's whole filesystem when the sandbox's mount namespace goes away
    // (that flushed every dirty page of, e.g., the root filesystem on each exit). The price: after
    // a crash the upper may miss recent writes; the caller removes the `incompat/volatile` marker
    // overlayfs leaves in the work dir before each mount.
    fsconfig(fs.as_fd(), FSCONFIG_SET_FLAG, Some(c"volatile"), None)?;
    fsconfig(fs.as_fd(), FSCONFIG_CMD_CREATE, None, None).map_err(|e| SysError {
        call: "fsconfig",
        what: format!(
            "overlay lowerdir={} upperdir={}: {}",
            lower.display(),
            upper.display(),
            e.what
        ),
        source: e.source,
    })?;
    let attrs = crate::MOUNT_ATTR_NOSUID | crate::MOUNT_ATTR_NODEV;
    // SAFETY: `fs` is a created fs context; flags and attributes are plain integers.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    let m = cvt("fsmount", || "overlay".into(), m)?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}
