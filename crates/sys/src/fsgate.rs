//! The write gate: a seccomp user-notification supervisor that performs every write-intent
//! filesystem call of the sandbox on its behalf, after asking a [`Judge`] (the policy, outside
//! this crate) whether the operation touches something protected.
//!
//! # What reaches it
//! The gate filter ([`crate::seccomp::program_with_gate`], installed with
//! [`crate::seccomp::install_gated`]) hands the supervisor: `open`/`openat` with any of
//! `O_CREAT`, `O_TRUNC`, `O_WRONLY`, `O_RDWR`, `O_APPEND`, `O_TMPFILE` (classified by those exact
//! bits in registers; `O_PATH` and plain read-only opens run at full speed, `openat2` is
//! `ENOSYS` so libc falls back), `creat`, `mkdir*`, `mknod*`, `symlink*`, `link*`, `rename*`,
//! `unlink*`, `rmdir`, `truncate`, the chmod/chown/utime/xattr families including their
//! descriptor forms (`fchmod` of a read-only descriptor would otherwise make a hook
//! executable), `bind` (a unix socket bind creates a name) and `connect` (the network gate,
//! [`crate::sockets`], dispatched to its existing logic). Not gated: `ftruncate`, `fallocate`,
//! `write` — they need a descriptor open for writing, and that open was judged (or the
//! descriptor was handed to the command by stockade itself: 0-2 and `--pass-fd`).
//! [`crate::seccomp::program_for_runs`] is the same without `mkdir*` (what runs in
//! `git.mode = "commit"`: an empty directory runs nothing; see that function).
//!
//! # How a call is served
//! [`serve`] starts one worker; more (up to [`ServeConfig::workers`], by default 2 × CPUs, at
//! least 4: a parallel build is not serialised) start only when calls pile up. One thread at a
//! time holds the *lead*: it waits in `SECCOMP_IOCTL_NOTIF_RECV` (the kernel wakes every waiter
//! of a listener, so only one waits there) and, when nothing else is waiting (`poll` of the
//! listener right after the receive: no `POLLIN`), serves the call itself and goes back to
//! `RECV` — no other thread is woken, and with `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` the caller
//! and this thread take turns on the caller's CPU. When another call is already waiting, the
//! lead passes (before the call is served) to an idle worker, or to a new one below the bound,
//! and the worker waits for the lead again once it has answered. Calls that may block for long
//! (a FIFO opened for writing, a blocking connect) go to the blocking pool. Correctness never
//! depends on the lead: two threads in `RECV` would each get a different notification. A call
//! the kernel keeps waiting inside the supervisor (a lease being broken, a hung network
//! filesystem) holds up the calls behind it until it returns, unless they had piled up before
//! it was received. For each notification the worker:
//! 1. reads the path argument(s) **once** (`process_vm_readv`, page by page so a string that
//!    ends just before an unmapped page is read whole, at most `PATH_MAX`; a bad pointer is
//!    answered `EFAULT`), and the other memory arguments (times, xattr values, addresses) once;
//! 2. takes the caller's directory descriptor (`pidfd_getfd`; `AT_FDCWD` is the caller's cwd,
//!    `/proc/<tid>/cwd` opened `O_PATH`), and re-checks `SECCOMP_IOCTL_NOTIF_ID_VALID` after
//!    resolving, so the pid still named the caller when its descriptors were taken;
//! 3. rewrites names that mean "the caller" (see *Traps*), then resolves the **parent
//!    directory itself** (`openat2(RESOLVE_NO_MAGICLINKS)` from that descriptor: symbolic links
//!    along the path are followed by the kernel, as for the caller) and asks the judge with the
//!    parent's real path (`readlink` of the supervisor's own `/proc/self/fd/N`) plus the final
//!    name, as bytes (never `to_str`);
//! 4. if allowed, performs the call relative to that parent descriptor with the caller's exact
//!    semantics (flags, `AT_SYMLINK_NOFOLLOW`, `AT_REMOVEDIR`, `RENAME_*`, the mode with the
//!    caller's umask — `/proc/<tid>/status`, cached exactly by also gating `umask(2)`, see
//!    `fsgate/umask.rs` — and the supervisor's own umask 0 in each worker thread), and answers
//!    with the result, or for opens installs the descriptor with `SECCOMP_IOCTL_NOTIF_ADDFD`
//!    (`O_CLOEXEC` as `newfd_flags`), closes its own copy, and only then answers with the
//!    number — the caller never runs while the supervisor still holds it (an `execve` right
//!    after `close` would fail with `ETXTBSY`; a FIFO would keep a reader).
//!    A hand-over that fails because the caller died closes the descriptor; one that fails
//!    otherwise (`EMFILE`) is answered with that error. It never answers
//!    `SECCOMP_USER_NOTIF_FLAG_CONTINUE`.
//!
//! # Why each time-of-check/time-of-use window is closed
//! * **The path string**: read once into the supervisor's memory; that copy is what is
//!   resolved, judged and used. Another caller thread rewriting the buffer changes nothing.
//! * **The directories**: the judged parent is a descriptor the supervisor holds, and the call
//!   is made relative to it (`mkdirat(P, name)`...): renaming or replacing a directory on the
//!   path after the check cannot redirect the call. Moving *that* directory into a protected
//!   position is itself a rename through the gate, judged (the judge refuses renames into, out
//!   of or of an ancestor of a protected position).
//! * **The final component**: never followed by the kernel on the supervisor's behalf. Opens
//!   look at it without following (`O_PATH | O_NOFOLLOW`, or `fstatat(AT_SYMLINK_NOFOLLOW)` on
//!   the fast path); a symbolic link is read and its target resolved and judged in turn (up to
//!   40 hops, then `ELOOP`) — so a dangling link opened with `O_CREAT` is judged as the creation
//!   of its *target*. Creations use `O_EXCL | O_NOFOLLOW` (a name that appeared meanwhile is
//!   looked at again; the caller's own `O_EXCL` is kept). An existing object is reopened through
//!   the supervisor's `/proc/self/fd/N` of exactly the inode judged, or — fast path for regular
//!   files — opened by name without following, non-blocking and without `O_TRUNC`, kept only if
//!   its device and inode are those looked at, then truncated. Metadata calls act on an
//!   `O_PATH` descriptor of the judged object (`fchownat(fd, "", AT_EMPTY_PATH)`,
//!   `utimensat(fd, "", ..., AT_EMPTY_PATH)`, `chmod`/`truncate`/`setxattr` of
//!   `/proc/self/fd/N`), hard links are made from the descriptor of the judged object.
//! * **Restarts**: the filter is installed with `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, so once
//!   a worker has received a call, only a fatal signal ends the caller's wait; a handled signal
//!   can no longer restart a call the supervisor is performing (without it: `mkdir` twice,
//!   `O_EXCL` failing with `EEXIST`, or a rewritten argument on the restart — tested).
//! * **The pid**: a pid is only used to take descriptors and read memory, and
//!   `NOTIF_ID_VALID` is checked after those steps: a caller that died and whose pid was reused
//!   fails the check and nothing is done. Workers cache one pidfd (a pidfd names one process
//!   incarnation; a stale one fails and is replaced).
//! * **Credentials**: the supervisor is init, confined by the same Landlock domain as the
//!   command, without capabilities, same uid and gid: it cannot do what the caller could not.
//!
//! # Traps (each tested in `crates/sys/tests/fsgate/`)
//! * `/proc/self/...`, `/proc/thread-self/...`, `/dev/fd/N`, `/dev/stdin|stdout|stderr` are
//!   rewritten to the caller's `/proc/<tgid>[/task/<tid>]` before resolution (even spelled
//!   `//dev/./fd/1`); `/proc/<caller>/fd/N` is the caller's descriptor N (taken with
//!   `pidfd_getfd`), reopened with the caller's flags and judged by the real path of what it
//!   refers to (pipes and sockets have none: `echo x > /dev/stdout` works); `/proc/<caller>/cwd`
//!   is the caller's cwd. Anything else that resolves onto procfs must be beneath the caller's
//!   own `/proc/<pid>`: a link `ws/s -> /proc/self` resolved here would name the supervisor, so
//!   `ws/s/mem` is refused (`EACCES`), and magic links along a path are refused (`ELOOP`).
//! * `/dev/tty`: the caller's controlling terminal (the supervisor, a session leader without
//!   one, must never acquire one: every open it makes has `O_NOCTTY`): its device from
//!   `/proc/<tid>/stat`, reopened from the caller's descriptor 0-2 that is that terminal or from
//!   `/dev/pts/N`; no controlling terminal: `ENXIO`, as the kernel says.
//! * A FIFO opened for writing without `O_NONBLOCK` would block a worker until a reader comes:
//!   it is finished on a thread of a bounded blocking pool ([`ServeConfig::blocking`], default
//!   64; beyond, the open fails with `EAGAIN`), which opens non-blocking and retries (1 → 50 ms)
//!   for as long as the caller waits, then clears `O_NONBLOCK`. Blocking connects use the same
//!   pool. The wait itself is killable only (WAIT_KILLABLE_RECV), so the pool thread watches
//!   the caller's pending signals (`/proc/<tid>/status`: its own, and the process's when it has
//!   one thread) and, once one it does not block is pending, answers `-ERESTARTSYS` — the
//!   kernel then runs the handler and restarts the open (`SA_RESTART`) or fails it with
//!   `EINTR`, as without the gate (nothing was opened yet, so the restart repeats nothing;
//!   `crates/cli/tests/gate_redteam.rs`).
//! * Hostile pointers: `EFAULT` answered; a path with no NUL within `PATH_MAX`:
//!   `ENAMETOOLONG`. Thousands of concurrent calls: the pool (tested with 8 threads × 2000
//!   creates). Non-UTF-8 names: bytes throughout. A caller killed mid-call: what was opened for
//!   it is closed. `O_EXCL` without `O_CREAT` is an ordinary write-intent open (hole #1 of the
//!   earlier attempt).
//! * Unix socket `bind`: performed on the caller's socket (`pidfd_getfd`) from the resolved
//!   parent: each worker has its own cwd (`unshare(CLONE_FS)` at start) and `fchdir`s there,
//!   binding the final name with the caller's umask; abstract and IP addresses are bound as
//!   given.
//!
//! # Known differences from the kernel's own behaviour
//! `O_TMPFILE` creates no name and is not judged (its later `linkat` is). A `truncate` beyond
//! the caller's `RLIMIT_FSIZE` fails with `EFBIG` but raises no `SIGXFSZ`. A caller whose
//! descriptor table is full gets `EMFILE` after the file was created. A directory with a
//! default ACL gets the caller's umask applied anyway. Writes to another process's
//! `/proc/<pid>` (not the caller's) are refused. `lsetxattr` on a symbolic link is `EPERM`
//! (user attributes are refused on links by the kernel; the others need capabilities).
//!
//! # Why hand-written
//! No crate supervises seccomp user notifications with `ADDFD`: the `seccomp`/`libseccomp`
//! crates are bindings to the C library (rules, not supervision) and `seccompiler` cannot even
//! express `SECCOMP_RET_USER_NOTIF`. The kernel interface is five ioctls; this module and
//! `notif.rs` hold them, one syscall per `unsafe` block, every return code through
//! [`crate::cvt`].
//!
//! # Cost
//! Measured by `python3 bench/gate_calls.py` (alternating rounds with and without the gate,
//! medians; numbers in `docs/architecture.md`): an intercepted call costs two context switches
//! plus a handful of syscalls in the supervisor (read the path, open the parent, read its real
//! path, look at the final name, act, answer). Reads never reach it.

mod ops;
mod path;
mod raw;
mod umask;

use crate::notif::{self, Notif};
use crate::sockets::SocketPolicy;
use ops::{Answer, Fail, Times};
use path::{Ctx, PidCache};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the supervisor asks the judge. Paths are absolute, as the supervisor sees them (the real
/// path of the resolved parent directory, read from the supervisor's own `/proc/self/fd/N`, plus
/// the final name, as bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp<'a> {
    /// A new name: open `O_CREAT` of a missing name, mkdir, mknod, symlink (the link's name),
    /// unix socket bind, the target name of a dangling symlink opened with `O_CREAT`.
    Create {
        /// The name created.
        path: &'a Path,
        /// What is created.
        kind: CreateKind,
    },
    /// An open for writing of an existing object (`O_WRONLY`, `O_RDWR`, `O_APPEND`, `O_TRUNC`).
    OpenWrite {
        /// The object opened (symbolic links resolved).
        path: &'a Path,
        /// `O_TRUNC` was asked for.
        trunc: bool,
    },
    /// unlink / rmdir.
    Remove {
        /// The name removed.
        path: &'a Path,
        /// `rmdir` / `AT_REMOVEDIR`.
        dir: bool,
    },
    /// rename, renameat, renameat2.
    Rename {
        /// The name moved.
        from: &'a Path,
        /// Where to.
        to: &'a Path,
        /// `RENAME_EXCHANGE`: both names change their object.
        exchange: bool,
        /// `RENAME_NOREPLACE`.
        noreplace: bool,
    },
    /// A hard link (`link`, `linkat`): `to` is the new name of the object at `from`.
    Link {
        /// The existing object.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
    },
    /// chmod/chown/utime/xattr/truncate, path- or descriptor-based.
    SetAttr {
        /// The object changed (its real path).
        path: &'a Path,
        /// Which attribute.
        what: AttrKind,
    },
}

/// What a [`FsOp::Create`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device node or FIFO (`mknod`).
    Node,
    /// A unix socket (`bind`).
    Socket,
}

/// Which attribute a [`FsOp::SetAttr`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// chmod family.
    Mode,
    /// chown family.
    Owner,
    /// utime family.
    Times,
    /// setxattr / removexattr family.
    Xattr,
    /// truncate (path-based).
    Truncate,
}

/// The judge's refusal: the caller gets `errno`, the denial record gets `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The errno the call fails with (`EACCES`, `EPERM`, ...).
    pub errno: i32,
    /// One line for the denial record.
    pub detail: String,
}

/// The policy side of the gate (implemented outside this crate).
pub trait Judge: Send + Sync {
    /// May `op` happen?
    fn judge(&self, op: &FsOp<'_>) -> Result<(), Refusal>;
    /// Called after a successful creation, rename into place or link (for the post-run log).
    fn created(&self, _path: &Path, _kind: CreateKind) {}
}

/// A refused operation, for the denial report.
#[derive(Debug, Clone)]
pub enum Denial {
    /// A refused `connect` (the network gate).
    Connect(crate::sockets::Denied),
    /// A refused filesystem operation, with the judge's refusal.
    Fs(Refusal),
}

/// How many threads serve the listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// At most this many threads serve calls ([`default_workers`] when unsure). One starts with
    /// [`serve`]; another only when calls pile up (see *How a call is served*).
    pub workers: usize,
    /// Extra threads for calls that may block for long (a FIFO opened for writing, a blocking
    /// connect); beyond that many at once such a call fails with `EAGAIN`.
    pub blocking: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            workers: default_workers(),
            blocking: 64,
        }
    }
}

/// Twice the number of CPUs, at least 4: enough that a parallel build is not serialised.
pub fn default_workers() -> usize {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * n).max(4)
}

/// A failure to start serving.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A worker thread could not be started or prepared.
    #[error("write gate: {0}")]
    Start(String),
}

/// The running supervisor: its worker threads (started on demand, so the list grows).
pub struct Supervisor {
    threads: Arc<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl Supervisor {
    /// Wait until every worker has finished (every process holding the filter is gone). A worker
    /// records any worker it starts before it can finish itself, so the list is whole once the
    /// last one joined has ended.
    pub fn join(self) {
        loop {
            let next = self.threads.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match next {
                Some(t) => drop(t.join()),
                None => return,
            }
        }
    }
}

/// Where refusals go (connect and filesystem alike).
pub type Sink = Arc<dyn Fn(Denial) + Send + Sync>;

/// Serve `listener` with up to `cfg.workers` threads until every process holding the filter is
/// gone: one starts now, more when calls pile up. `connect` notifications are decided by
/// `connect` exactly as [`crate::sockets::Gate`] does. Returns at once; [`Supervisor::join`]
/// waits for the end. Each worker thread unshares its filesystem context
/// (`unshare(CLONE_FS)`: its own cwd for unix socket binds, umask 0 so the caller's umask is
/// the only one applied); the rest of the process is not affected.
pub fn serve(
    listener: OwnedFd,
    judge: Arc<dyn Judge>,
    connect: SocketPolicy,
    sink: Sink,
    cfg: ServeConfig,
) -> Result<Supervisor, GateError> {
    // Best effort (a speed-up only; see `notif::set_sync_wakeup`).
    let _ = notif::set_sync_wakeup(listener.as_raw_fd());
    // This process's own descriptor directory, opened here (by the process that serves: a
    // descriptor inherited across a fork would name the parent's table).
    let self_fd = raw::openat(
        libc::AT_FDCWD,
        c"/proc/self/fd",
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| GateError::Start(format!("opening /proc/self/fd: errno {e}")))?;
    let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = Arc::new(Shared {
        listener,
        self_fd,
        judge,
        connect,
        sink,
        blocking: AtomicUsize::new(0),
        max_blocking: cfg.blocking,
        max_workers: cfg.workers.max(1),
        lead: std::sync::Mutex::new(Lead {
            taken: true,
            idle: 0,
            started: 1,
        }),
        lead_cv: std::sync::Condvar::new(),
        threads: Arc::clone(&threads),
        umasks: umask::Umasks::default(),
    });
    shared.start_worker(0)?;
    Ok(Supervisor { threads })
}

/// Who serves: one thread at a time holds the lead (waits in `NOTIF_RECV`, then serves what it
/// received); the others wait for it (see *How a call is served*).
struct Lead {
    /// A thread holds the lead.
    taken: bool,
    /// Threads waiting for the lead.
    idle: usize,
    /// Worker threads started (at most `max_workers`).
    started: usize,
}

/// What every worker shares.
pub(crate) struct Shared {
    listener: OwnedFd,
    /// `/proc/self/fd` of this process (`O_PATH`): real paths and reopens of the supervisor's
    /// own descriptors without walking `/proc/self` each time.
    self_fd: OwnedFd,
    judge: Arc<dyn Judge>,
    connect: SocketPolicy,
    sink: Sink,
    blocking: AtomicUsize,
    max_blocking: usize,
    max_workers: usize,
    lead: std::sync::Mutex<Lead>,
    lead_cv: std::sync::Condvar,
    threads: Arc<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>>,
    umasks: umask::Umasks,
}

impl Shared {
    fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Start worker `i`, which begins holding the lead (its `Lead` entry is counted already).
    fn start_worker(self: &Arc<Self>, i: usize) -> Result<(), GateError> {
        let sh = Arc::clone(self);
        let t = std::thread::Builder::new()
            .name(format!("gate-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || worker(&sh))
            .map_err(|e| GateError::Start(format!("starting worker thread {i}: {e}")))?;
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t);
        Ok(())
    }

    fn lead(&self) -> std::sync::MutexGuard<'_, Lead> {
        self.lead.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give up the lead while serving a call: to a waiting thread, or to a new one while fewer
    /// than `max_workers` run; at the bound, to whichever thread finishes first.
    fn hand_on(self: &Arc<Self>) {
        let mut l = self.lead();
        l.taken = false;
        if l.idle > 0 {
            self.lead_cv.notify_one();
            return;
        }
        if l.started >= self.max_workers {
            return;
        }
        l.started += 1;
        l.taken = true;
        let i = l.started - 1;
        drop(l);
        if self.start_worker(i).is_err() {
            // No thread: the lead goes back to whoever finishes first.
            let mut l = self.lead();
            l.started -= 1;
            l.taken = false;
            self.lead_cv.notify_one();
        }
    }

    /// Wait for the lead (after serving a call without it).
    fn take_lead(&self) {
        let mut l = self.lead();
        l.idle += 1;
        while l.taken {
            l = self.lead_cv.wait(l).unwrap_or_else(|e| e.into_inner());
        }
        l.idle -= 1;
        l.taken = true;
    }

    /// Give up the lead for good (this worker ends): the next one sees the end in turn.
    fn leave(&self) {
        let mut l = self.lead();
        l.taken = false;
        self.lead_cv.notify_one();
    }

    /// The caller's umask (see [`umask`]).
    fn umask(&self, ctx: &mut Ctx<'_>) -> Result<u32, i32> {
        self.umasks.get(ctx.tid(), || ctx.read_umask())
    }

    /// Send `a` as the answer to notification `id`.
    fn answer(self: &Arc<Self>, id: u64, a: Answer) {
        let fd = self.fd();
        match a {
            Answer::Val(v) => drop(notif::respond(fd, id, v, 0)),
            Answer::Err(e) => drop(notif::respond(fd, id, 0, e)),
            Answer::Refused(r) => {
                let _ = notif::respond(fd, id, 0, r.errno);
                (self.sink)(Denial::Fs(r));
            }
            // Installed in the caller, this copy closed, and only then answered: the caller
            // never runs while the supervisor still holds the descriptor (`ETXTBSY` for an
            // `execve` right after `close`, a FIFO reader that outlives the caller's). ENOENT:
            // the caller died or was killed meanwhile. Any other error (EMFILE: the caller's
            // table is full) is the answer, as the kernel would have failed the open.
            Answer::Fd { fd: f, cloexec } => match notif::addfd(fd, id, f.as_raw_fd(), cloexec) {
                Ok(n) => {
                    drop(f);
                    let _ = notif::respond(fd, id, i64::from(n), 0);
                }
                Err(libc::ENOENT) => {}
                Err(e) => {
                    drop(f);
                    let _ = notif::respond(fd, id, 0, e);
                }
            },
            Answer::Blocking(run) => self.blocking_run(id, run),
            Answer::Done => {}
        }
    }

    /// Run `run` on a thread of its own, at most `max_blocking` at once (beyond: `EAGAIN`).
    fn blocking_run(self: &Arc<Self>, id: u64, run: Box<dyn FnOnce() -> Answer + Send>) {
        if !self.spawn_blocking(Box::new({
            let sh = Arc::clone(self);
            move || {
                let a = run();
                sh.answer(id, a);
            }
        })) {
            let _ = notif::respond(self.fd(), id, 0, libc::EAGAIN);
        }
    }

    /// Start `work` on a blocking-pool thread; `false` when the pool is full.
    fn spawn_blocking(self: &Arc<Self>, work: Box<dyn FnOnce() + Send>) -> bool {
        if self.blocking.fetch_add(1, Ordering::SeqCst) >= self.max_blocking {
            self.blocking.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        let sh = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name("gate-blocking".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                work();
                sh.blocking.fetch_sub(1, Ordering::SeqCst);
            });
        if started.is_err() {
            self.blocking.fetch_sub(1, Ordering::SeqCst);
        }
        started.is_ok()
    }
}

fn worker(sh: &Arc<Shared>) {
    // A private cwd and umask for this thread only. Failing that, unix socket binds are
    // answered EPERM (see `ops::bind`'s use of the cwd) and creations still apply the caller's
    // umask explicitly.
    let private_fs = crate::unshare(libc::CLONE_FS).is_ok();
    if private_fs {
        raw::umask(0);
    }
    let mut pids = PidCache::default();
    let mut n = Notif::default();
    // This thread holds the lead: it was started holding it, or took it in `take_lead`.
    loop {
        match notif::recv(sh.fd(), &mut n) {
            Ok(()) => {}
            Err(libc::EINTR) => continue,
            // ENOENT: a notification withdrawn (its caller interrupted) or no filter user left.
            Err(_) if raw::hung_up(sh.listener.as_fd()) => return sh.leave(),
            Err(libc::ENOENT) => continue,
            Err(_) => return sh.leave(),
        }
        // Another call is already waiting: someone else receives it while this one is served.
        // Otherwise this thread serves the call and goes back to RECV itself, and no other
        // thread is woken (with the synchronous wake-up the caller and this thread just take
        // turns on one CPU).
        let piled_up = raw::readable(sh.listener.as_fd());
        if piled_up {
            sh.hand_on();
        }
        let mut ctx = Ctx::new(sh.fd(), sh.self_fd.as_raw_fd(), n, &mut pids);
        let a = dispatch(sh, &mut ctx, private_fs);
        sh.answer(n.id, a);
        if piled_up {
            sh.take_lead();
        }
    }
}

/// Decide one notification.
#[allow(non_upper_case_globals)]
fn dispatch(sh: &Arc<Shared>, ctx: &mut Ctx<'_>, private_fs: bool) -> Answer {
    use libc::*;
    if ctx.n.data.nr == SYS_connect as i32 {
        let deny =
            crate::sockets::handle_connect(sh.fd(), &sh.connect, &ctx.n, &|w| sh.spawn_blocking(w));
        if let Some(d) = deny {
            (sh.sink)(Denial::Connect(d));
        }
        return Answer::Done;
    }
    if ctx.n.data.nr == SYS_umask as i32 {
        let (fd, id, new) = (sh.fd(), ctx.n.id, ctx.int(0) as u32 & 0o777);
        let cont = || {
            let _ = notif::respond_continue(fd, id);
        };
        sh.umasks.changing(new, cont, || ctx.read_umask());
        return Answer::Done;
    }
    let a = |i| ctx.int(i);
    let out = match ctx.n.data.nr as libc::c_long {
        SYS_open => ops::open(sh, ctx, (AT_FDCWD, 0), a(1), ctx.arg(2) as u32),
        SYS_openat => ops::open(sh, ctx, (a(0), 1), a(2), ctx.arg(3) as u32),
        // creat(path, mode): the mode is the second argument.
        SYS_creat => ops::open(
            sh,
            ctx,
            (AT_FDCWD, 0),
            O_CREAT | O_WRONLY | O_TRUNC,
            ctx.arg(1) as u32,
        ),
        SYS_mkdir => ops::mkdir(sh, ctx, AT_FDCWD, 0),
        SYS_mkdirat => ops::mkdir(sh, ctx, a(0), 1),
        SYS_mknod => ops::mknod(sh, ctx, AT_FDCWD, 0),
        SYS_mknodat => ops::mknod(sh, ctx, a(0), 1),
        SYS_symlink => ops::symlink(sh, ctx, AT_FDCWD, 1),
        SYS_symlinkat => ops::symlink(sh, ctx, a(1), 2),
        SYS_link => ops::link(sh, ctx, (AT_FDCWD, 0), (AT_FDCWD, 1), 0),
        SYS_linkat => ops::link(sh, ctx, (a(0), 1), (a(2), 3), a(4)),
        SYS_rename => ops::rename(sh, ctx, (AT_FDCWD, 0), (AT_FDCWD, 1), 0),
        SYS_renameat => ops::rename(sh, ctx, (a(0), 1), (a(2), 3), 0),
        SYS_renameat2 => ops::rename(sh, ctx, (a(0), 1), (a(2), 3), a(4) as u32),
        SYS_unlink => ops::unlink(sh, ctx, AT_FDCWD, 0, 0),
        SYS_unlinkat => ops::unlink(sh, ctx, a(0), 1, a(2)),
        SYS_rmdir => ops::unlink(sh, ctx, AT_FDCWD, 0, AT_REMOVEDIR),
        SYS_truncate => ops::truncate(sh, ctx),
        SYS_chmod => ops::chmod(sh, ctx, AT_FDCWD, Some(0), a(1) as u32, 0),
        SYS_fchmod => ops::chmod(sh, ctx, a(0), None, a(1) as u32, 0),
        SYS_fchmodat => ops::chmod(sh, ctx, a(0), Some(1), a(2) as u32, 0),
        SYS_fchmodat2 => ops::chmod(sh, ctx, a(0), Some(1), a(2) as u32, a(3)),
        SYS_chown => ops::chown(sh, ctx, AT_FDCWD, Some(0), (a(1) as u32, a(2) as u32), 0),
        SYS_lchown => ops::chown(
            sh,
            ctx,
            AT_FDCWD,
            Some(0),
            (a(1) as u32, a(2) as u32),
            AT_SYMLINK_NOFOLLOW,
        ),
        SYS_fchown => ops::chown(sh, ctx, a(0), None, (a(1) as u32, a(2) as u32), 0),
        SYS_fchownat => ops::chown(sh, ctx, a(0), Some(1), (a(2) as u32, a(3) as u32), a(4)),
        SYS_utime => ops::utime(sh, ctx, AT_FDCWD, 0, Times::Utimbuf, 0),
        SYS_utimes => ops::utime(sh, ctx, AT_FDCWD, 0, Times::Timeval, 0),
        SYS_futimesat => ops::utime(sh, ctx, a(0), 1, Times::Timeval, 0),
        SYS_utimensat => ops::utime(sh, ctx, a(0), 1, Times::Timespec, a(3)),
        SYS_setxattr | SYS_lsetxattr | SYS_fsetxattr => {
            let set = Some((ctx.arg(2), ctx.arg(3) as usize, a(4)));
            let path = (ctx.n.data.nr as c_long != SYS_fsetxattr).then_some(0);
            ops::xattr(sh, ctx, path, ctx.n.data.nr as c_long == SYS_setxattr, set)
        }
        SYS_removexattr | SYS_lremovexattr | SYS_fremovexattr => {
            let path = (ctx.n.data.nr as c_long != SYS_fremovexattr).then_some(0);
            ops::xattr(
                sh,
                ctx,
                path,
                ctx.n.data.nr as c_long == SYS_removexattr,
                None,
            )
        }
        SYS_bind if private_fs => ops::bind(sh, ctx),
        SYS_bind => Err(Fail::Errno(EPERM)),
        _ => Err(Fail::Errno(ENOSYS)),
    };
    match out {
        Ok(a) => a,
        Err(Fail::Errno(e)) => Answer::Err(e),
        Err(Fail::Refused(r)) => Answer::Refused(r),
        Err(Fail::Gone) => Answer::Done,
    }
}
