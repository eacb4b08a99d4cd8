//! Dropping every capability before exec.
//!
//! Inside its user namespace the sandbox starts with a full capability set (that is how it could
//! mount). Those must all go before the command runs, or it could remount its read-only views:
//! the bounding set is emptied (so no exec can regain them), securebits make uid 0 ordinary and
//! are locked, ambient caps are cleared, and finally the effective/permitted/inheritable sets are
//! zeroed. Must run after every privileged setup step and after Landlock (which wants either
//! `no_new_privs` or `CAP_SYS_ADMIN`).

use crate::{self as sys, SysError};

const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drop all capabilities for good (see module docs).
pub fn drop_all() -> Result<(), SysError> {
    // Bounding set: drop until the kernel says the capability number is out of range.
    for cap in 0..64 {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap, "PR_CAPBSET_DROP") {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    sys::prctl(
        libc::PR_SET_SECUREBITS,
        SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_NO_SETUID_FIXUP
            | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
        "PR_SET_SECUREBITS",
    )?;
    // PR_CAP_AMBIENT_CLEAR_ALL takes its sub-command in arg2.
    sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        "PR_CAP_AMBIENT_CLEAR_ALL",
    )?;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads a v3 header and an array of two cap data structs, both valid here.
    let ret =
        unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if ret < 0 {
        return Err(SysError {
            call: "capset",
            what: "all zero".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
