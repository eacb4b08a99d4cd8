//! Account database lookups (reentrant `getpwuid_r`/`getgrnam_r`/`getgrouplist`) and the
//! process's ids.

use crate::{SysError, SysResult};
use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;

/// Supplementary groups of `user` (with `gid` as primary), from the group database.
pub fn grouplist(user: &str, gid: u32) -> SysResult<Vec<u32>> {
    let c = CString::new(user).map_err(|e| SysError::new("getgrouplist", io::Error::other(e)))?;
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
            return Err(SysError::new(
                "getgrouplist",
                io::Error::other("too many groups"),
            ));
        }
    }
}

/// `getpwuid_r`: (name, primary gid, home) of a uid, through NSS in-process (no `getent` spawn on
/// the broker's per-run path).
pub fn getpwuid(uid: u32) -> SysResult<Option<(String, u32, std::path::PathBuf)>> {
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
            return Err(SysError::new("getpwuid_r", io::Error::from_raw_os_error(r)));
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
pub fn getgrnam(name: &str) -> SysResult<Option<u32>> {
    let c = CString::new(name).map_err(|e| SysError::new("getgrnam_r", io::Error::other(e)))?;
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
            return Err(SysError::new("getgrnam_r", io::Error::from_raw_os_error(r)));
        }
        return Ok(if out.is_null() { None } else { Some(gr.gr_gid) });
    }
}

/// Parent pid of this process.
pub fn getppid() -> libc::pid_t {
    // SAFETY: getppid cannot fail and has no arguments.
    unsafe { libc::getppid() }
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

/// `getgid()`: the real group id (cannot fail).
pub fn getgid() -> u32 {
    // SAFETY: getgid cannot fail and has no arguments.
    unsafe { libc::getgid() }
}

/// Runs `f` with this *thread's* filesystem credentials switched to `uid`, `gid` and `groups`
/// (raw `setgroups`, `setfsgid`, `setfsuid`: Linux keeps credentials per thread, and the raw
/// calls change only the calling thread), then switches back to root's. While `f` runs, path
/// lookups and opens are checked against the caller's permissions (a root thread loses
/// `CAP_DAC_OVERRIDE` and friends with a non-zero fsuid), so nothing the caller could not open
/// is reached. Only for a root thread; fails (and `f` does not run) if a switch cannot be
/// verified.
pub fn with_fs_creds<T>(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> T) -> SysResult<T> {
    let fail = |what: &'static str| SysError::new(what, io::Error::from_raw_os_error(libc::EPERM));
    set_thread_groups(groups)?;
    // SAFETY: setfsgid takes an integer and changes only this thread's filesystem gid.
    unsafe { libc::setfsgid(gid) };
    // SAFETY: as above for the filesystem uid.
    unsafe { libc::setfsuid(uid) };
    // setfsuid/setfsgid return the previous value and cannot report failure: read them back.
    // SAFETY: an invalid id (-1) changes nothing and returns the current value.
    let now_uid = unsafe { libc::setfsuid(u32::MAX) } as u32;
    // SAFETY: as above.
    let now_gid = unsafe { libc::setfsgid(u32::MAX) } as u32;
    let result = if now_uid == uid && now_gid == gid {
        Ok(f())
    } else {
        Err(fail("setfsuid"))
    };
    // SAFETY: back to root's filesystem ids (this thread runs as root).
    unsafe { libc::setfsuid(0) };
    // SAFETY: as above.
    unsafe { libc::setfsgid(0) };
    set_thread_groups(&[])?;
    // SAFETY: as above, reading back.
    let back = unsafe { libc::setfsuid(u32::MAX) } as u32;
    if back != 0 {
        return Err(fail("setfsuid"));
    }
    result
}

/// Raw `setgroups(2)` of the calling thread only (glibc's wrapper changes every thread).
fn set_thread_groups(groups: &[u32]) -> SysResult<()> {
    // SAFETY: `groups` is a valid array of `groups.len()` gids that outlives the call; the kernel
    // only reads it.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    crate::cvt("setgroups", String::new, ret).map(drop)
}
