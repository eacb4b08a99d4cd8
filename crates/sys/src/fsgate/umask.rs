//! The callers' umasks without reading `/proc/<tid>/status` for every creation.
//!
//! A creation needs the caller's umask, which only `/proc/<tid>/status` shows, and the kernel
//! generates that whole file on every read (≈ 8–10 µs, a third of a creation's cost). The gate
//! filter also hands over `umask(2)` itself (answered `CONTINUE`: its one argument is an
//! integer in a register, nothing to re-read), so a cached value can be trusted exactly when
//! no `umask` call happened since it was read:
//! * on receipt of a `umask` call, `inflight` is raised *before* the call is let through;
//!   it is lowered, and `gen` bumped, only once the caller's status shows the new mask (the
//!   kernel has applied it). While any is in flight, the cache is not used (a creation then
//!   reads the status, which shows the applied value once the `umask` call has returned);
//! * an entry is stored only if no `umask` was in flight and `gen` did not move from before
//!   the read to after it, and it is used only while `gen` is unchanged: so it never predates
//!   a `umask` that has returned;
//! * the entry holds a pidfd of the thread, opened *before* the read and checked alive after
//!   it and at every use: a thread number reused by another process never finds the old value.
//!
//! Without `PIDFD_THREAD` (Linux < 6.9), or if a `umask` is not seen applied within ≈ 100 ms,
//! caching is switched off for good and every creation reads the status (correct, slower).
//! At most [`MAX_ENTRIES`] entries (each one pidfd); beyond, the cache starts over.

use super::raw::R;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

const MAX_ENTRIES: usize = 512;
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

struct Entry {
    pidfd: OwnedFd,
    mask: u32,
    gen: u64,
}

/// The supervisor's knowledge of the callers' umasks.
#[derive(Default)]
pub(crate) struct Umasks {
    gen: AtomicU64,
    inflight: AtomicUsize,
    disabled: AtomicBool,
    cache: Mutex<HashMap<u32, Entry>>,
}

/// A pidfd of thread `tid` only (`PIDFD_THREAD`), never the thread group's.
fn pidfd_thread(tid: u32) -> R<OwnedFd> {
    // SAFETY: pidfd_open with integer arguments; the result is checked.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, tid as libc::pid_t, PIDFD_THREAD) };
    let fd = crate::cvt("pidfd_open", String::new, ret).map_err(crate::notif::errno_of)?;
    // SAFETY: a new descriptor returned by pidfd_open, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Has the thread behind `pidfd` exited (a pidfd polls readable then)?
fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    match crate::poll_once(&mut p, 0) {
        Ok(_) => p[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
        Err(_) => true,
    }
}

impl Umasks {
    /// The umask of thread `tid`; `read` reads it from the thread's status.
    pub(crate) fn get(&self, tid: u32, read: impl FnOnce() -> R<u32>) -> R<u32> {
        if !self.disabled.load(SeqCst) && self.inflight.load(SeqCst) == 0 {
            let gen = self.gen.load(SeqCst);
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = cache.get(&tid) {
                if e.gen == gen && !exited(&e.pidfd) {
                    return Ok(e.mask);
                }
            }
        }
        let (i0, g0) = (self.inflight.load(SeqCst), self.gen.load(SeqCst));
        let pidfd = if self.disabled.load(SeqCst) {
            None
        } else {
            match pidfd_thread(tid) {
                Ok(p) => Some(p),
                Err(libc::EINVAL) => {
                    self.disabled.store(true, SeqCst);
                    None
                }
                Err(_) => None,
            }
        };
        let mask = read()?;
        if let Some(pidfd) = pidfd {
            let quiet = i0 == 0 && self.inflight.load(SeqCst) == 0 && self.gen.load(SeqCst) == g0;
            if quiet && !exited(&pidfd) {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= MAX_ENTRIES {
                    cache.clear();
                }
                cache.insert(
                    tid,
                    Entry {
                        pidfd,
                        mask,
                        gen: g0,
                    },
                );
            }
        }
        Ok(mask)
    }

    /// A `umask(new)` call was received: `let_through` answers it `CONTINUE`; `read` reads the
    /// caller's current umask. Returns once the kernel has applied it (or the caller is gone).
    pub(crate) fn changing(
        &self,
        new: u32,
        let_through: impl FnOnce(),
        mut read: impl FnMut() -> R<u32>,
    ) {
        self.inflight.fetch_add(1, SeqCst);
        let_through();
        let mut seen = false;
        for i in 0..2000u32 {
            match read() {
                Ok(m) if m == new => {
                    seen = true;
                    break;
                }
                Err(_) => {
                    seen = true; // the caller is gone: nothing to wait for
                    break;
                }
                Ok(_) if i < 20 => std::thread::yield_now(),
                Ok(_) => std::thread::sleep(std::time::Duration::from_micros(50)),
            }
        }
        if !seen {
            self.disabled.store(true, SeqCst);
        }
        self.gen.fetch_add(1, SeqCst);
        self.inflight.fetch_sub(1, SeqCst);
    }
}
