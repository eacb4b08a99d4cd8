//! Each gated call, performed by the supervisor: read the arguments once, resolve from
//! descriptors, ask the judge, act on exactly what was judged, answer.

use super::path::{self, Base, Ctx, Target, PATH_MAX};
use super::raw::{self, ProcPath, R};
use super::{AttrKind, CreateKind, FsOp, Refusal, Shared};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How a call ends.
pub(super) enum Answer {
    /// Return this value.
    Val(i64),
    /// Install this descriptor in the caller and return its number.
    Fd {
        /// The descriptor (closed here after the hand-over, or if the caller is gone).
        fd: OwnedFd,
        /// `O_CLOEXEC` for the caller's copy.
        cloexec: bool,
    },
    /// Finish on a thread of the bounded blocking pool (a FIFO opened for writing).
    Blocking(Box<dyn FnOnce() -> Answer + Send>),
    /// Already answered (a connect), or the caller is gone: nothing to send.
    Done,
    /// Fail with this errno.
    Err(i32),
    /// The judge refused: fail with its errno, record it.
    Refused(Refusal),
}

/// A failure on the way: an errno, a refusal, or a caller that has gone.
pub(super) enum Fail {
    Errno(i32),
    Refused(Refusal),
    Gone,
}

impl From<i32> for Fail {
    fn from(e: i32) -> Fail {
        Fail::Errno(e)
    }
}

pub(super) type Out = Result<Answer, Fail>;

/// Symbolic links followed per call before `ELOOP` (the kernel's limit).
const MAX_HOPS: usize = 40;
/// `O_TMPFILE`'s own bit.
const TMPFILE_BIT: i32 = libc::O_TMPFILE & !libc::O_DIRECTORY;

/// Ask the judge. A judge that panics refuses (fail closed) instead of leaving the call
/// unanswered on a dead worker (with `panic = "abort"` the process ends instead: closed too).
fn judge(sh: &Shared, op: FsOp<'_>) -> Result<(), Fail> {
    let asked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sh.judge.judge(&op)));
    match asked {
        Ok(verdict) => verdict.map_err(Fail::Refused),
        Err(_) => Err(Fail::Refused(Refusal {
            errno: libc::EACCES,
            detail: format!("the write gate's judge failed on {op:?}"),
        })),
    }
}

fn is(st: &libc::stat, kind: u32) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

fn kind_of(st: &libc::stat) -> CreateKind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => CreateKind::Dir,
        libc::S_IFLNK => CreateKind::Symlink,
        libc::S_IFREG => CreateKind::File,
        libc::S_IFSOCK => CreateKind::Socket,
        _ => CreateKind::Node,
    }
}

/// Read path argument `i` (without its NUL). Whoever uses it re-checks that the caller is
/// still the caller (`Ctx::valid`) after resolving it, before acting.
fn read_path(ctx: &Ctx<'_>, i: usize) -> Result<Vec<u8>, Fail> {
    let mut p = Vec::new();
    ctx.read_path(i, &mut p)?;
    p.pop();
    Ok(p)
}

/// Resolve path argument `i` from `dirfd` to its parent and name.
fn name_arg(ctx: &mut Ctx<'_>, dirfd: i32, i: usize) -> Result<Target, Fail> {
    let p = read_path(ctx, i)?;
    let t = path::resolve(ctx, Base::of(dirfd), &p)?;
    if !ctx.valid() {
        return Err(Fail::Gone);
    }
    Ok(t)
}

fn real_of(ctx: &Ctx<'_>, fd: RawFd) -> R<PathBuf> {
    let mut b = Vec::with_capacity(128);
    path::real_path(ctx.self_fd, fd, &mut b)?;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&b)))
}

// ---- opens ------------------------------------------------------------------------------------

/// `open`/`openat`/`creat`: the path is argument `arg` from `dirfd`; `mode` is the caller's
/// mode argument (the filter refused set-id bits in exactly that argument; refused again here).
pub(super) fn open(
    sh: &Shared,
    ctx: &mut Ctx<'_>,
    (dirfd, arg): (i32, usize),
    flags: i32,
    mode: u32,
) -> Out {
    if mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
        return Err(Fail::Errno(libc::EPERM));
    }
    let mut path = read_path(ctx, arg)?;
    let mut base = Base::of(dirfd);
    for _ in 0..MAX_HOPS {
        let t = path::resolve(ctx, base, &path)?;
        if !ctx.valid() {
            return Err(Fail::Gone);
        }
        match open_at(sh, ctx, t, flags, mode)? {
            Step::Done(a) => return Ok(a),
            Step::Follow(dir, target) => {
                base = Base::Dir(dir);
                path = target;
            }
        }
    }
    Err(Fail::Errno(libc::ELOOP))
}

enum Step {
    Done(Answer),
    /// The final component is a symbolic link to follow: its directory and its target.
    Follow(OwnedFd, Vec<u8>),
}

/// Open the final component of `t` with the caller's `flags`: create it if missing
/// (`O_CREAT`), follow it if it is a symbolic link (unless `O_NOFOLLOW`), reopen what is there.
fn open_at(sh: &Shared, ctx: &mut Ctx<'_>, t: Target, flags: i32, mode: u32) -> Result<Step, Fail> {
    let creat = flags & libc::O_CREAT != 0;
    let excl = creat && flags & libc::O_EXCL != 0;
    let mut missing = false;
    match open_regular(sh, &t, flags)? {
        Fast::Done(a) => return Ok(Step::Done(a)),
        Fast::Missing if !creat => return Err(Fail::Errno(libc::ENOENT)),
        Fast::Missing => missing = true,
        Fast::Other => {}
    }
    for _ in 0..8 {
        // Just seen missing by `open_regular`: create without looking again (an exclusive
        // create; a name that appeared meanwhile is looked at on the next round).
        if std::mem::take(&mut missing) && creat && !t.dot {
            match create_file(sh, ctx, &t, flags, mode)? {
                Some(a) => return Ok(Step::Done(a)),
                None => continue,
            }
        }
        let probe = raw::openat(
            t.dir.as_raw_fd(),
            &t.name,
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        );
        let f = match probe {
            Err(libc::ENOENT) if creat && !t.dot => match create_file(sh, ctx, &t, flags, mode)? {
                Some(a) => return Ok(Step::Done(a)),
                None => continue, // created meanwhile by someone else: open what is there
            },
            Err(e) => return Err(Fail::Errno(e)),
            Ok(f) => f,
        };
        let st = raw::fstat(f.as_raw_fd())?;
        if is(&st, libc::S_IFLNK) {
            if t.procfs {
                return match path::caller_fd_link(ctx, &t)? {
                    Some(n) => reopen_caller_fd(sh, ctx, n, flags).map(Step::Done),
                    None => Err(Fail::Errno(libc::EACCES)),
                };
            }
            if excl {
                return Err(Fail::Errno(libc::EEXIST));
            }
            if flags & libc::O_NOFOLLOW != 0 {
                return Err(Fail::Errno(libc::ELOOP));
            }
            let mut target = Vec::new();
            raw::readlinkat(f.as_raw_fd(), c"", &mut target, PATH_MAX)?;
            return Ok(Step::Follow(t.dir, target));
        }
        if excl {
            return Err(Fail::Errno(libc::EEXIST));
        }
        let real = if t.dot {
            real_of(ctx, f.as_raw_fd())?
        } else {
            t.path
        };
        return open_existing(sh, ctx, f, &st, &real, flags).map(Step::Done);
    }
    Err(Fail::Errno(libc::EAGAIN))
}

/// The common case, fast: the name is an existing regular file (`fstatat`, not following).
/// Judged by name, opened by name without following, never blocking and without `O_TRUNC`;
/// kept only if it is the very file that was looked at (device and inode), then truncated if
/// asked. `None`: anything else (missing, a link, a FIFO or device, a race) — the careful path
/// decides.
fn open_regular(sh: &Shared, t: &Target, flags: i32) -> Result<Fast, Fail> {
    let rdonly_trunc = flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE == libc::O_RDONLY;
    if t.dot || t.procfs || flags & TMPFILE_BIT != 0 || rdonly_trunc {
        return Ok(Fast::Other);
    }
    let st = match raw::lstatat(t.dir.as_raw_fd(), &t.name) {
        Ok(st) => st,
        Err(libc::ENOENT) => return Ok(Fast::Missing),
        Err(_) => return Ok(Fast::Other),
    };
    if !is(&st, libc::S_IFREG) {
        return Ok(Fast::Other);
    }
    if flags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL {
        return Err(Fail::Errno(libc::EEXIST));
    }
    let trunc = flags & libc::O_TRUNC != 0;
    judge(
        sh,
        FsOp::OpenWrite {
            path: t.path(),
            trunc,
        },
    )?;
    let strip = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC;
    let fl = (flags & !strip) | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK;
    let Ok(fd) = raw::openat(t.dir.as_raw_fd(), &t.name, fl, 0) else {
        return Ok(Fast::Other);
    };
    let now = raw::fstat(fd.as_raw_fd())?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Ok(Fast::Other);
    }
    if trunc {
        raw::ftruncate(fd.as_raw_fd())?;
    }
    if flags & libc::O_NONBLOCK == 0 {
        // The descriptor's status flags are exactly `fl` (just opened here; `open` ignores
        // `O_ASYNC`, which `F_SETFL` would turn on): no `F_GETFL` needed.
        raw::setfl(fd.as_raw_fd(), fl & !(libc::O_NONBLOCK | libc::O_ASYNC))?;
    }
    Ok(Fast::Done(Answer::Fd {
        fd,
        cloexec: flags & libc::O_CLOEXEC != 0,
    }))
}

/// What the fast path of an open found.
enum Fast {
    /// Opened.
    Done(Answer),
    /// No such name (yet).
    Missing,
    /// Something for the careful path.
    Other,
}

/// `O_CREAT` of a missing name: judged as a creation, created exclusively (`O_EXCL`, never
/// following a link) with the caller's mode and umask. `None`: the name appeared meanwhile
/// and the caller did not ask for `O_EXCL`.
fn create_file(
    sh: &Shared,
    ctx: &mut Ctx<'_>,
    t: &Target,
    flags: i32,
    mode: u32,
) -> Result<Option<Answer>, Fail> {
    let path = t.path();
    judge(
        sh,
        FsOp::Create {
            path,
            kind: CreateKind::File,
        },
    )?;
    let umask = sh.umask(ctx)?;
    let fl = (flags | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NOCTTY) & !libc::O_CLOEXEC;
    match raw::openat(t.dir.as_raw_fd(), &t.name, fl, mode & 0o7777 & !umask) {
        Ok(fd) => {
            sh.judge.created(path, CreateKind::File);
            Ok(Some(Answer::Fd {
                fd,
                cloexec: flags & libc::O_CLOEXEC != 0,
            }))
        }
        Err(libc::EEXIST) if flags & libc::O_EXCL == 0 => Ok(None),
        Err(e) => Err(Fail::Errno(e)),
    }
}

/// The flags a reopen through `/proc/self/fd/N` gets: the caller's, less what was already
/// decided (creation, link following), never making a terminal the supervisor's.
fn reopen_flags(flags: i32) -> i32 {
    let mut f = flags & !(libc::O_NOFOLLOW | libc::O_CLOEXEC) | libc::O_NOCTTY;
    if f & libc::O_CREAT != 0 {
        f &= !(libc::O_CREAT | libc::O_EXCL);
    }
    f
}

/// Open the existing object `f` (an `O_PATH` descriptor) with the caller's `flags`, after
/// judging `real`. The reopen goes through the supervisor's own `/proc/self/fd/N`: exactly the
/// object judged, whatever happens to its name meanwhile.
fn open_existing(
    sh: &Shared,
    ctx: &mut Ctx<'_>,
    f: OwnedFd,
    st: &libc::stat,
    real: &Path,
    flags: i32,
) -> Out {
    if is(st, libc::S_IFCHR) && st.st_rdev == libc::makedev(5, 0) {
        return caller_tty(sh, ctx, flags);
    }
    if flags & TMPFILE_BIT == 0 {
        let trunc = flags & libc::O_TRUNC != 0;
        judge(sh, FsOp::OpenWrite { path: real, trunc })?;
    }
    reopen(ctx, f, st, flags)
}

fn reopen(ctx: &Ctx<'_>, f: OwnedFd, st: &libc::stat, flags: i32) -> Out {
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let fl = reopen_flags(flags);
    let write_only = flags & libc::O_ACCMODE == libc::O_WRONLY;
    if is(st, libc::S_IFIFO) && write_only && flags & libc::O_NONBLOCK == 0 {
        let (listener, id, tid) = (ctx.listener, ctx.n.id, ctx.tid());
        return Ok(Answer::Blocking(Box::new(move || {
            fifo_open(listener, (id, tid), f, fl, cloexec)
        })));
    }
    let fd = raw::openat(ctx.self_fd, ProcPath::fd_num(f.as_raw_fd()).c(), fl, 0)?;
    Ok(Answer::Fd { fd, cloexec })
}

/// The kernel's "restart or `EINTR`" answer for a call a signal interrupted before it did
/// anything (`-ERESTARTSYS`): on the way back to user space the kernel runs the handler and
/// then restarts the call (`SA_RESTART`) or fails it with `EINTR`, exactly as for a blocking
/// open without the gate.
const ERESTARTSYS: i32 = 512;

/// Does thread `tid` have a signal pending that it does not block? A process-wide one counts
/// only in a single-threaded process (in another, a different thread may take it, and the
/// restart answer must never reach user space without a signal to deliver).
fn signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let hex = |key: &str| field(key).and_then(|v| u64::from_str_radix(v, 16).ok());
    let (Some(own), Some(shared), Some(blocked)) = (hex("SigPnd:"), hex("ShdPnd:"), hex("SigBlk:"))
    else {
        return false;
    };
    let single = field("Threads:") == Some("1");
    let pending = if single { own | shared } else { own };
    pending & !blocked != 0
}

/// A FIFO opened for writing blocks until a reader comes: open it non-blocking (`ENXIO` while
/// there is no reader), retrying with a growing pause (1 → 50 ms) for as long as the caller
/// waits, or until a signal the caller does not block is pending (then the kernel's restart
/// answer, [`ERESTARTSYS`]: the wait is killable only, so the signal would otherwise wait for a
/// reader); then clear `O_NONBLOCK` so the caller gets the blocking descriptor it asked for.
fn fifo_open(listener: RawFd, (id, tid): (u64, u32), f: OwnedFd, fl: i32, cloexec: bool) -> Answer {
    let path = ProcPath::fd(f.as_raw_fd());
    let mut pause = 1;
    loop {
        match raw::openat(libc::AT_FDCWD, path.c(), fl | libc::O_NONBLOCK, 0) {
            Ok(fd) => {
                let cleared = raw::getfl(fd.as_raw_fd())
                    .and_then(|v| raw::setfl(fd.as_raw_fd(), v & !libc::O_NONBLOCK));
                return match cleared {
                    Ok(()) => Answer::Fd { fd, cloexec },
                    Err(e) => Answer::Err(e),
                };
            }
            Err(libc::ENXIO) => {
                if !crate::notif::id_valid(listener, id) {
                    return Answer::Done;
                }
                if signal_pending(tid) {
                    return Answer::Err(ERESTARTSYS);
                }
                raw::sleep_ms(pause);
                pause = (pause * 2).min(50);
            }
            Err(e) => return Answer::Err(e),
        }
    }
}

/// `/proc/self/fd/N`, `/dev/fd/N`, `/dev/stdout`...: the caller's descriptor N, reopened (a new
/// open file description with the caller's flags, as the kernel does for the caller), judged
/// by the real path of what it refers to (pipes and sockets have none).
fn reopen_caller_fd(sh: &Shared, ctx: &mut Ctx<'_>, n: i32, flags: i32) -> Out {
    let g = ctx
        .take_fd(n)
        .map_err(|e| if e == libc::EBADF { libc::ENOENT } else { e })?;
    if !ctx.valid() {
        return Err(Fail::Gone);
    }
    if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 {
        return Err(Fail::Errno(libc::EEXIST));
    }
    let st = raw::fstat(g.as_raw_fd())?;
    let real = real_of(ctx, g.as_raw_fd())?;
    if real.as_os_str().as_bytes().first() == Some(&b'/') {
        return open_existing(sh, ctx, g, &st, &real, flags);
    }
    reopen(ctx, g, &st, flags)
}

/// `/dev/tty`: the caller's controlling terminal (the supervisor has none). Its device number
/// comes from `/proc/<tid>/stat`; it is reopened from whichever of the caller's descriptors
/// 0-2 is that terminal, or from `/dev/pts/N` for a pseudo-terminal; none: `ENXIO`, as the
/// kernel answers a process without a controlling terminal.
fn caller_tty(sh: &Shared, ctx: &mut Ctx<'_>, flags: i32) -> Out {
    let nr = tty_nr(ctx.tid()).ok_or(libc::ESRCH)?;
    if nr == 0 {
        return Err(Fail::Errno(libc::ENXIO));
    }
    let (major, minor) = ((nr >> 8) & 0xfff, (nr & 0xff) | ((nr >> 12) & 0xfff00));
    let dev = libc::makedev(major, minor);
    for fd in 0..3 {
        let Ok(g) = ctx.take_fd(fd) else { continue };
        match raw::fstat(g.as_raw_fd()) {
            Ok(st) if is(&st, libc::S_IFCHR) && st.st_rdev == dev => {
                let real = real_of(ctx, g.as_raw_fd())?;
                judge(
                    sh,
                    FsOp::OpenWrite {
                        path: &real,
                        trunc: false,
                    },
                )?;
                return reopen(ctx, g, &st, flags);
            }
            _ => {}
        }
    }
    if (136..144).contains(&major) {
        let pts = CString::new(format!("/dev/pts/{}", (major - 136) * 256 + minor))
            .map_err(|_| libc::EINVAL)?;
        let g = raw::openat(libc::AT_FDCWD, &pts, libc::O_PATH, 0)?;
        let st = raw::fstat(g.as_raw_fd())?;
        if is(&st, libc::S_IFCHR) && st.st_rdev == dev {
            let real = real_of(ctx, g.as_raw_fd())?;
            judge(
                sh,
                FsOp::OpenWrite {
                    path: &real,
                    trunc: false,
                },
            )?;
            return reopen(ctx, g, &st, flags);
        }
    }
    Err(Fail::Errno(libc::ENXIO))
}

/// Field 7 (`tty_nr`) of `/proc/<tid>/stat`.
fn tty_nr(tid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after
        .split_whitespace()
        .nth(4)?
        .parse::<i64>()
        .ok()
        .map(|v| v as u32)
}

// ---- names ------------------------------------------------------------------------------------

/// `mkdir`/`mkdirat`.
pub(super) fn mkdir(sh: &Shared, ctx: &mut Ctx<'_>, dirfd: i32, arg: usize) -> Out {
    let mode = ctx.arg(arg + 1) as u32;
    let t = name_arg(ctx, dirfd, arg)?;
    if !t.dot {
        judge(
            sh,
            FsOp::Create {
                path: t.path(),
                kind: CreateKind::Dir,
            },
        )?;
    }
    let umask = sh.umask(ctx)?;
    raw::mkdirat(t.dir.as_raw_fd(), &t.name, mode & 0o7777 & !umask)?;
    sh.judge.created(t.path(), CreateKind::Dir);
    Ok(Answer::Val(0))
}

/// `mknod`/`mknodat`.
pub(super) fn mknod(sh: &Shared, ctx: &mut Ctx<'_>, dirfd: i32, arg: usize) -> Out {
    let mode = ctx.arg(arg + 1) as u32;
    let dev = ctx.arg(arg + 2);
    let t = name_arg(ctx, dirfd, arg)?;
    let ty = mode & libc::S_IFMT;
    let kind = if ty == 0 || ty == libc::S_IFREG {
        CreateKind::File
    } else {
        CreateKind::Node
    };
    if !t.dot {
        judge(
            sh,
            FsOp::Create {
                path: t.path(),
                kind,
            },
        )?;
    }
    let umask = sh.umask(ctx)?;
    raw::mknodat(
        t.dir.as_raw_fd(),
        &t.name,
        ty | (mode & 0o7777 & !umask),
        dev,
    )?;
    sh.judge.created(t.path(), kind);
    Ok(Answer::Val(0))
}

/// `symlink`/`symlinkat`: the link's content is copied, never resolved; its name is judged.
pub(super) fn symlink(sh: &Shared, ctx: &mut Ctx<'_>, dirfd: i32, arg: usize) -> Out {
    let target = read_path(ctx, 0)?;
    let target = CString::new(target).map_err(|_| libc::EINVAL)?;
    let t = name_arg(ctx, dirfd, arg)?;
    if !t.dot {
        judge(
            sh,
            FsOp::Create {
                path: t.path(),
                kind: CreateKind::Symlink,
            },
        )?;
    }
    raw::symlinkat(&target, t.dir.as_raw_fd(), &t.name)?;
    sh.judge.created(t.path(), CreateKind::Symlink);
    Ok(Answer::Val(0))
}

/// `unlink`/`unlinkat`/`rmdir`.
pub(super) fn unlink(sh: &Shared, ctx: &mut Ctx<'_>, dirfd: i32, arg: usize, flags: i32) -> Out {
    let t = name_arg(ctx, dirfd, arg)?;
    if !t.dot {
        let dir = flags & libc::AT_REMOVEDIR != 0;
        judge(
            sh,
            FsOp::Remove {
                path: t.path(),
                dir,
            },
        )?;
    }
    raw::unlinkat(t.dir.as_raw_fd(), &t.name, flags)?;
    Ok(Answer::Val(0))
}

/// `rename`/`renameat`/`renameat2`: both names judged, the rename made between the two parent
/// descriptors that were resolved.
pub(super) fn rename(
    sh: &Shared,
    ctx: &mut Ctx<'_>,
    a: (i32, usize),
    b: (i32, usize),
    flags: u32,
) -> Out {
    let (pa, pb) = (read_path(ctx, a.1)?, read_path(ctx, b.1)?);
    let from = path::resolve(ctx, Base::of(a.0), &pa)?;
    let to = if a.0 == b.0 && !from.dot && path::same_parent(&pa, &pb) {
        path::sibling(&from, &pb)?
    } else {
        path::resolve(ctx, Base::of(b.0), &pb)?
    };
    if !ctx.valid() {
        return Err(Fail::Gone);
    }
    if !from.dot && !to.dot {
        judge(
            sh,
            FsOp::Rename {
                from: from.path(),
                to: to.path(),
                exchange: flags & libc::RENAME_EXCHANGE != 0,
                noreplace: flags & libc::RENAME_NOREPLACE != 0,
            },
        )?;
    }
    raw::renameat2(
        from.dir.as_raw_fd(),
        &from.name,
        to.dir.as_raw_fd(),
        &to.name,
        flags,
    )?;
    if let Ok(st) = raw::lstatat(to.dir.as_raw_fd(), &to.name) {
        sh.judge.created(to.path(), kind_of(&st));
    }
    if flags & libc::RENAME_EXCHANGE != 0 {
        if let Ok(st) = raw::lstatat(from.dir.as_raw_fd(), &from.name) {
            sh.judge.created(from.path(), kind_of(&st));
        }
    }
    Ok(Answer::Val(0))
}

/// An existing object, resolved the way the call would (`follow`: a final symbolic link is
/// followed), held as an `O_PATH` descriptor (or the caller's descriptor for
/// `/proc/self/fd/N`), with its real path and status.
struct Object {
    fd: OwnedFd,
    path: PathBuf,
    st: libc::stat,
}

fn object(ctx: &mut Ctx<'_>, base: Base, path: Vec<u8>, follow: bool) -> Result<Object, Fail> {
    let (mut base, mut path) = (base, path);
    for _ in 0..MAX_HOPS {
        let t = path::resolve(ctx, base, &path)?;
        let f = raw::openat(
            t.dir.as_raw_fd(),
            &t.name,
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )?;
        let st = raw::fstat(f.as_raw_fd())?;
        if is(&st, libc::S_IFLNK) {
            if t.procfs {
                let n = path::caller_fd_link(ctx, &t)?.ok_or(libc::EACCES)?;
                let fd = ctx
                    .take_fd(n)
                    .map_err(|e| if e == libc::EBADF { libc::ENOENT } else { e })?;
                if !ctx.valid() {
                    return Err(Fail::Gone);
                }
                let st = raw::fstat(fd.as_raw_fd())?;
                let path = real_of(ctx, fd.as_raw_fd())?;
                return Ok(Object { fd, path, st });
            }
            if follow {
                let mut target = Vec::new();
                raw::readlinkat(f.as_raw_fd(), c"", &mut target, PATH_MAX)?;
                base = Base::Dir(t.dir);
                path = target;
                continue;
            }
        }
        let path = if t.dot {
            real_of(ctx, f.as_raw_fd())?
        } else {
            t.path
        };
        if !ctx.valid() {
            return Err(Fail::Gone);
        }
        return Ok(Object { fd: f, path, st });
    }
    Err(Fail::Errno(libc::ELOOP))
}

/// The object a metadata call acts on: the caller's descriptor `dirfd` itself when `path_arg`
/// is `None` (an fd-based call), or an empty path with `AT_EMPTY_PATH` (or, for `utimensat`,
/// a NULL path); else the path from `dirfd`.
fn target_object(
    ctx: &mut Ctx<'_>,
    dirfd: i32,
    path_arg: Option<usize>,
    flags: i32,
) -> Result<Object, Fail> {
    let fd_based = |ctx: &mut Ctx<'_>| -> Result<Object, Fail> {
        let fd = ctx.take_fd(dirfd)?;
        if !ctx.valid() {
            return Err(Fail::Gone);
        }
        let st = raw::fstat(fd.as_raw_fd())?;
        let path = real_of(ctx, fd.as_raw_fd())?;
        Ok(Object { fd, path, st })
    };
    let Some(i) = path_arg else {
        return fd_based(ctx);
    };
    let p = read_path(ctx, i)?;
    if p.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        return fd_based(ctx);
    }
    object(
        ctx,
        Base::of(dirfd),
        p,
        flags & libc::AT_SYMLINK_NOFOLLOW == 0,
    )
}

/// Judge a metadata change of `o` (objects without a filesystem path — pipes, sockets — have
/// nothing to protect).
fn judge_attr(sh: &Shared, o: &Object, what: AttrKind) -> Result<(), Fail> {
    if o.path.as_os_str().as_bytes().first() != Some(&b'/') {
        return Ok(());
    }
    judge(
        sh,
        FsOp::SetAttr {
            path: &o.path,
            what,
        },
    )
}

/// `link`/`linkat`: the object (followed with `AT_SYMLINK_FOLLOW`) and the new name are judged;
/// the link is made from the descriptor of exactly that object.
pub(super) fn link(
    sh: &Shared,
    ctx: &mut Ctx<'_>,
    a: (i32, usize),
    b: (i32, usize),
    flags: i32,
) -> Out {
    let follow = if flags & libc::AT_SYMLINK_FOLLOW != 0 {
        0
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    let o = target_object(ctx, a.0, Some(a.1), (flags & libc::AT_EMPTY_PATH) | follow)?;
    let to = name_arg(ctx, b.0, b.1)?;
    if is(&o.st, libc::S_IFDIR) {
        return Err(Fail::Errno(libc::EPERM));
    }
    if !to.dot {
        judge(
            sh,
            FsOp::Link {
                from: &o.path,
                to: to.path(),
            },
        )?;
    }
    let (nd, nn) = (to.dir.as_raw_fd(), &to.name);
    match raw::linkat(o.fd.as_raw_fd(), c"", nd, nn, libc::AT_EMPTY_PATH) {
        Err(libc::ENOENT | libc::EPERM) if !is(&o.st, libc::S_IFLNK) => {
            let via = ProcPath::fd(o.fd.as_raw_fd());
            raw::linkat(libc::AT_FDCWD, via.c(), nd, nn, libc::AT_SYMLINK_FOLLOW)?
        }
        other => other?,
    }
    sh.judge.created(to.path(), kind_of(&o.st));
    Ok(Answer::Val(0))
}

/// `truncate`.
pub(super) fn truncate(sh: &Shared, ctx: &mut Ctx<'_>) -> Out {
    let len = ctx.arg(1) as i64;
    let o = target_object(ctx, libc::AT_FDCWD, Some(0), 0)?;
    judge_attr(sh, &o, AttrKind::Truncate)?;
    // The caller's RLIMIT_FSIZE, which the kernel would have applied to the caller's own call
    // (without the SIGXFSZ the kernel also sends).
    if len > 0 && (len as u64) > raw::fsize_limit(ctx.tid())? {
        return Err(Fail::Errno(libc::EFBIG));
    }
    raw::truncate(ProcPath::fd(o.fd.as_raw_fd()).c(), len)?;
    Ok(Answer::Val(0))
}

/// The chmod family; `path_arg` `None` for `fchmod`.
pub(super) fn chmod(
    sh: &Shared,
    ctx: &mut Ctx<'_>,
    dirfd: i32,
    path_arg: Option<usize>,
    mode: u32,
    flags: i32,
) -> Out {
    let o = target_object(ctx, dirfd, path_arg, flags)?;
    if is(&o.st, libc::S_IFLNK) {
        return Err(Fail::Errno(libc::EOPNOTSUPP));
    }
    judge_attr(sh, &o, AttrKind::Mode)?;
    if path_arg.is_none() {
        raw::fchmod(o.fd.as_raw_fd(), mode)?;
    } else {
        raw::chmod(ProcPath::fd(o.fd.as_raw_fd()).c(), mode)?;
    }
    Ok(Answer::Val(0))
}

/// The chown family.
pub(super) fn chown(
    sh: &Shared,
    ctx: &mut Ctx<'_>,
    dirfd: i32,
    path_arg: Option<usize>,
    ids: (u32, u32),
    flags: i32,
) -> Out {
    let o = target_object(ctx, dirfd, path_arg, flags)?;
    judge_attr(sh, &o, AttrKind::Owner)?;
    raw::fchown_empty(o.fd.as_raw_fd(), ids.0, ids.1)?;
    Ok(Answer::Val(0))
}

/// How a utime-family call passes its times.
#[derive(Clone, Copy)]
pub(super) enum Times {
    /// `struct utimbuf` (`utime`).
    Utimbuf,
    /// `struct timeval[2]` (`utimes`, `futimesat`).
    Timeval,
    /// `struct timespec[2]` (`utimensat`).
    Timespec,
}

fn read_times(ctx: &Ctx<'_>, addr: u64, how: Times) -> Result<Option<[libc::timespec; 2]>, Fail> {
    if addr == 0 {
        return Ok(None);
    }
    let mut b = [0u8; 32];
    let len = if matches!(how, Times::Utimbuf) {
        16
    } else {
        32
    };
    crate::notif::read_remote(ctx.tid(), addr, &mut b[..len])?;
    let w = |i: usize| i64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let ts = |sec: i64, nsec: i64| libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    Ok(Some(match how {
        Times::Utimbuf => [ts(w(0), 0), ts(w(1), 0)],
        Times::Timespec => [ts(w(0), w(1)), ts(w(2), w(3))],
        Times::Timeval => {
            if [w(1), w(3)].iter().any(|&u| !(0..1_000_000).contains(&u)) {
                return Err(Fail::Errno(libc::EINVAL));
            }
            [ts(w(0), w(1) * 1000), ts(w(2), w(3) * 1000)]
        }
    }))
}

/// The utime family: `utimensat` with a NULL path acts on `dirfd` itself.
pub(super) fn utime(
    sh: &Shared,
    ctx: &mut Ctx<'_>,
    dirfd: i32,
    path_arg: usize,
    how: Times,
    flags: i32,
) -> Out {
    let times = read_times(ctx, ctx.arg(path_arg + 1), how)?;
    let fd_based = matches!(how, Times::Timespec | Times::Timeval) && ctx.arg(path_arg) == 0;
    let p = if fd_based { None } else { Some(path_arg) };
    let o = target_object(ctx, dirfd, p, flags)?;
    judge_attr(sh, &o, AttrKind::Times)?;
    raw::utimens_empty(o.fd.as_raw_fd(), times.as_ref())?;
    Ok(Answer::Val(0))
}

/// `XATTR_NAME_MAX` and `XATTR_SIZE_MAX`.
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 65536;

/// The setxattr/removexattr families: `set` carries (value address, size, flags); `path_arg`
/// `None` for the f* forms; `follow` false for the l* forms.
pub(super) fn xattr(
    sh: &Shared,
    ctx: &mut Ctx<'_>,
    path_arg: Option<usize>,
    follow: bool,
    set: Option<(u64, usize, i32)>,
) -> Out {
    let name_at = ctx.arg(1);
    let mut name = Vec::new();
    crate::notif::read_remote_cstr(ctx.tid(), name_at, &mut name, XATTR_NAME_MAX).map_err(|e| {
        if e == libc::ENAMETOOLONG {
            libc::ERANGE
        } else {
            e
        }
    })?;
    let name = CStr::from_bytes_with_nul(&name)
        .map_err(|_| libc::EINVAL)?
        .to_owned();
    let mut value = Vec::new();
    if let Some((addr, size, _)) = set {
        if size > XATTR_SIZE_MAX {
            return Err(Fail::Errno(libc::E2BIG));
        }
        value.resize(size, 0);
        crate::notif::read_remote(ctx.tid(), addr, &mut value)?;
    }
    let nofollow = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // The f* forms act on descriptor arg 0; the path forms resolve from the cwd (their arg 0 is
    // the path pointer, not a directory descriptor).
    let dirfd = if path_arg.is_some() {
        libc::AT_FDCWD
    } else {
        ctx.int(0)
    };
    let o = target_object(ctx, dirfd, path_arg, nofollow)?;
    if is(&o.st, libc::S_IFLNK) {
        // user.* attributes are refused on links by the kernel; the others need capabilities.
        return Err(Fail::Errno(libc::EPERM));
    }
    judge_attr(sh, &o, AttrKind::Xattr)?;
    let fd = o.fd.as_raw_fd();
    let via = ProcPath::fd(fd);
    match (set, path_arg) {
        (Some((_, _, fl)), None) => raw::fsetxattr(fd, &name, &value, fl)?,
        (Some((_, _, fl)), Some(_)) => raw::setxattr(via.c(), &name, &value, fl)?,
        (None, None) => raw::fremovexattr(fd, &name)?,
        (None, Some(_)) => raw::removexattr(via.c(), &name)?,
    }
    Ok(Answer::Val(0))
}

/// `bind`: a pathname unix socket creates a name, judged like any creation and bound from the
/// resolved parent (this worker's private cwd, `unshare(CLONE_FS)`, moved there) with the
/// caller's umask; other addresses are bound as given, on the caller's socket.
pub(super) fn bind(sh: &Shared, ctx: &mut Ctx<'_>) -> Out {
    let len = ctx.arg(2) as usize;
    if len > std::mem::size_of::<libc::sockaddr_storage>() {
        return Err(Fail::Errno(libc::EINVAL));
    }
    let mut addr = vec![0u8; len];
    crate::notif::read_remote(ctx.tid(), ctx.arg(1), &mut addr)?;
    let sock = ctx.take_fd(ctx.int(0))?;
    if !ctx.valid() {
        return Err(Fail::Gone);
    }
    let family = if len >= 2 {
        u16::from_ne_bytes([addr[0], addr[1]])
    } else {
        0
    };
    if family != libc::AF_UNIX as u16 || len <= 2 || addr[2] == 0 {
        raw::bind(sock.as_raw_fd(), &addr)?;
        return Ok(Answer::Val(0));
    }
    let raw_path = &addr[2..];
    let end = raw_path
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(raw_path.len());
    let t = path::resolve(ctx, Base::Cwd, &raw_path[..end])?;
    if !t.dot {
        judge(
            sh,
            FsOp::Create {
                path: t.path(),
                kind: CreateKind::Socket,
            },
        )?;
    }
    let name = path::bytes(&t.name);
    if name.len() > 107 {
        return Err(Fail::Errno(libc::ENAMETOOLONG));
    }
    let mut local = vec![0u8; 2 + name.len() + 1];
    local[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    local[2..2 + name.len()].copy_from_slice(name);
    let umask = sh.umask(ctx)?;
    raw::fchdir(t.dir.as_raw_fd())?;
    raw::umask(umask);
    let r = raw::bind(sock.as_raw_fd(), &local);
    raw::umask(0);
    r?;
    sh.judge.created(t.path(), CreateKind::Socket);
    Ok(Answer::Val(0))
}
