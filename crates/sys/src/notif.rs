//! Seccomp user notification, the supervisor's side: receive, answer, hand over a descriptor
//! (`SECCOMP_IOCTL_NOTIF_ADDFD`, then the answer once the supervisor closed its copy), check a notification is still
//! live, read the caller's memory once (`process_vm_readv`) and take its descriptors
//! (`pidfd_getfd`). Shared by the connect gate ([`crate::sockets`]) and the write gate
//! ([`crate::fsgate`]). Errors are errno values: each becomes the caller's answer.

use crate::{cvt, SysError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct SeccompData {
    pub(crate) nr: i32,
    pub(crate) arch: u32,
    pub(crate) instruction_pointer: u64,
    pub(crate) args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct Notif {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) flags: u32,
    pub(crate) data: SeccompData,
}

#[repr(C)]
#[derive(Default)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct NotifAddfd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
const SECCOMP_IOCTL_NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;
const SECCOMP_IOCTL_NOTIF_ADDFD: libc::c_ulong = 0x4018_2103;
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: libc::c_ulong = 1;

/// Ask the kernel to wake the supervisor on the notifying thread's CPU and to switch back to
/// the caller the same way when it is answered (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, Linux
/// 6.6): caller and supervisor take turns, so a cross-CPU wake-up (an IPI to a CPU that may be
/// idle, the larger part of a round trip on a VM) is saved per call. Only a speed-up: on an
/// older kernel (`EINVAL`) the gate works the same, slower.
pub(crate) fn set_sync_wakeup(listener: RawFd) -> Result<(), i32> {
    // SAFETY: SET_FLAGS takes the flag word by value (not a pointer) and changes only how the
    // listener wakes its waiters.
    let ret = unsafe {
        libc::ioctl(
            listener,
            SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    cvt("ioctl(NOTIF_SET_FLAGS)", String::new, ret)
        .map(drop)
        .map_err(errno_of)
}

/// The errno of a failed call (`EIO` if it has none).
pub(crate) fn errno_of(e: SysError) -> i32 {
    e.errno().unwrap_or(libc::EIO)
}

/// Wait for the next notification into `n`.
pub(crate) fn recv(listener: RawFd, n: &mut Notif) -> Result<(), i32> {
    *n = Notif::default();
    // SAFETY: RECV fills `n`, a zeroed seccomp_notif of the size encoded in the ioctl number.
    let ret = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, n as *mut Notif) };
    cvt("ioctl(NOTIF_RECV)", String::new, ret)
        .map(drop)
        .map_err(errno_of)
}

/// Answer notification `id`: the call returns `val`, or fails with `err` when non-zero.
/// `Err(ENOENT)`: the caller is gone (or was interrupted).
pub(crate) fn respond(listener: RawFd, id: u64, val: i64, err: i32) -> Result<(), i32> {
    let resp = NotifResp {
        id,
        val: if err == 0 { val } else { 0 },
        error: -err,
        flags: 0,
    };
    // SAFETY: SEND reads a seccomp_notif_resp from the pointer; `resp` lives across the call.
    let ret = unsafe {
        libc::ioctl(
            listener,
            SECCOMP_IOCTL_NOTIF_SEND,
            &resp as *const NotifResp,
        )
    };
    cvt("ioctl(NOTIF_SEND)", String::new, ret)
        .map(drop)
        .map_err(errno_of)
}

const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;

/// Let the call run in the kernel as made (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). Only for calls
/// whose arguments are all in registers and checked already: the kernel reads the caller's
/// memory again after this, so never for a path-based call.
pub(crate) fn respond_continue(listener: RawFd, id: u64) -> Result<(), i32> {
    let resp = NotifResp {
        id,
        val: 0,
        error: 0,
        flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE,
    };
    // SAFETY: SEND reads a seccomp_notif_resp from the pointer; `resp` lives across the call.
    let ret = unsafe {
        libc::ioctl(
            listener,
            SECCOMP_IOCTL_NOTIF_SEND,
            &resp as *const NotifResp,
        )
    };
    cvt("ioctl(NOTIF_SEND)", String::new, ret)
        .map(drop)
        .map_err(errno_of)
}

/// Install a duplicate of `fd` in the caller without answering the call (the caller stays
/// blocked); returns the caller's descriptor number. The write gate closes its own copy and then
/// answers with [`respond`], so the caller never runs while the supervisor still holds the
/// descriptor (an `execve` of the file just written would fail with `ETXTBSY`, a FIFO would
/// keep a reader). `Err(ENOENT)`: the caller is gone.
pub(crate) fn addfd(listener: RawFd, id: u64, fd: RawFd, cloexec: bool) -> Result<i32, i32> {
    let add = NotifAddfd {
        id,
        flags: 0,
        srcfd: fd as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: ADDFD reads a seccomp_notif_addfd from the pointer; `add` lives across the call;
    // `fd` is an open descriptor of this process (the kernel duplicates it into the caller).
    let ret = unsafe {
        libc::ioctl(
            listener,
            SECCOMP_IOCTL_NOTIF_ADDFD,
            &add as *const NotifAddfd,
        )
    };
    cvt("ioctl(NOTIF_ADDFD)", String::new, ret).map_err(errno_of)
}

/// Is notification `id` still waiting for its answer (the caller alive and not interrupted)?
/// Checked after reading the caller's memory and taking its descriptors: until then the pid
/// could have been reused by another process.
pub(crate) fn id_valid(listener: RawFd, id: u64) -> bool {
    // SAFETY: ID_VALID reads a u64 id from the pointer; `id` lives across the call.
    unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id as *const u64) == 0 }
}

/// Copy `buf.len()` bytes at `addr` in process `pid` into `buf`; `EFAULT` unless all arrive.
pub(crate) fn read_remote(pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), i32> {
    if read_some(pid, addr, buf)? != buf.len() {
        return Err(libc::EFAULT);
    }
    Ok(())
}

/// One `process_vm_readv`: how many bytes arrived (a short count at an unmapped page).
fn read_some(pid: u32, addr: u64, buf: &mut [u8]) -> Result<usize, i32> {
    if buf.is_empty() {
        return Ok(0);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, writable for its length; `remote` is only read by the
    // kernel from the other process (checked there); counts are 1.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    match cvt("process_vm_readv", String::new, n) {
        Ok(n) => Ok(n as usize),
        Err(_) => Err(libc::EFAULT),
    }
}

const PAGE: u64 = 4096;

/// Read the NUL-terminated string at `addr` in process `pid` into `out` (cleared first; the NUL
/// is kept as the last byte). Reads page by page, so a string ending just before an unmapped
/// page is read whole, and at most `max` bytes before the NUL (`ENAMETOOLONG` beyond, `EFAULT`
/// for a bad pointer). `out` keeps its capacity between calls (no allocation once warm).
pub(crate) fn read_remote_cstr(
    pid: u32,
    addr: u64,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), i32> {
    out.clear();
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let mut at = addr;
    loop {
        let room = max + 1 - out.len();
        let to_page_end = (PAGE - at % PAGE) as usize;
        let want = to_page_end.min(room);
        let start = out.len();
        out.resize(start + want, 0);
        let got = read_some(pid, at, &mut out[start..])?;
        out.truncate(start + got);
        if let Some(nul) = out[start..].iter().position(|&b| b == 0) {
            out.truncate(start + nul + 1);
            return Ok(());
        }
        if got < want {
            return Err(libc::EFAULT);
        }
        if out.len() > max {
            return Err(libc::ENAMETOOLONG);
        }
        at += got as u64;
    }
}

/// A pidfd for thread `tid` (`PIDFD_THREAD`, Linux 6.9; before that the thread-group leader's,
/// which shares the descriptor table — all `pidfd_getfd` needs).
pub(crate) fn pidfd_open(tid: u32) -> Result<OwnedFd, i32> {
    // SAFETY: pidfd_open with integer arguments; the result is checked.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, tid as libc::pid_t, PIDFD_THREAD) };
    let fd = match cvt("pidfd_open", String::new, ret) {
        Ok(fd) => fd,
        Err(e) if e.errno() == Some(libc::EINVAL) => {
            let tgid = thread_group(tid).ok_or(libc::ESRCH)?;
            // SAFETY: pidfd_open with integer arguments; the result is checked.
            let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0u32) };
            cvt("pidfd_open", String::new, ret).map_err(|_| libc::ESRCH)?
        }
        Err(_) => return Err(libc::ESRCH),
    };
    // SAFETY: `fd` was just returned by pidfd_open and is owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Duplicate descriptor `fd` of the process behind `pidfd` into this process.
pub(crate) fn getfd(pidfd: &OwnedFd, fd: i32) -> Result<OwnedFd, i32> {
    // SAFETY: pidfd_getfd duplicates descriptor `fd` of the target into this process; flags 0.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0u32) };
    let got = cvt("pidfd_getfd", String::new, ret).map_err(errno_of)?;
    // SAFETY: `got` is a new descriptor owned by this process.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// The thread group (process) of thread `tid`, from `/proc/<tid>/status`.
pub(crate) fn thread_group(tid: u32) -> Option<libc::pid_t> {
    status_field(tid, "Tgid:").and_then(|v| v.parse().ok())
}

/// A field of `/proc/<tid>/status`, trimmed.
pub(crate) fn status_field(tid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
}
