//! Reading a caller's path once and resolving it the way the *caller* would, from descriptors:
//! the caller context ([`Ctx`]), the rewriting of names that mean "the caller" (`/proc/self`,
//! `/proc/thread-self`, `/dev/fd/N`, `/dev/std*`), and the parent directory resolution that the
//! judge's path comes from.

use super::raw::{self, ProcPath, R};
use crate::notif::{self, Notif};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `PATH_MAX`: the longest path (with its NUL) a call accepts.
pub(super) const PATH_MAX: usize = libc::PATH_MAX as usize;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// A worker's cached pidfd: the last thread it served (a parallel build's threads come back).
/// A pidfd names one process incarnation, so a stale one fails (`ESRCH`) and is replaced; it
/// never reaches a process that reused the number.
#[derive(Default)]
pub(super) struct PidCache {
    tid: u32,
    pidfd: Option<OwnedFd>,
    /// `/proc/<tid>/status` of the same thread, kept open (re-read with `pread`: the kernel
    /// generates it afresh; a descriptor of an exited thread reads nothing, never another's).
    status: Option<(u32, OwnedFd)>,
}

/// One notification being served.
pub(super) struct Ctx<'a> {
    pub(super) listener: RawFd,
    /// The supervisor's `/proc/self/fd` (see [`real_path`]).
    pub(super) self_fd: RawFd,
    pub(super) n: Notif,
    pids: &'a mut PidCache,
    tgid: Option<u32>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(listener: RawFd, self_fd: RawFd, n: Notif, pids: &'a mut PidCache) -> Self {
        Ctx {
            listener,
            self_fd,
            n,
            pids,
            tgid: None,
        }
    }

    pub(super) fn tid(&self) -> u32 {
        self.n.pid
    }

    pub(super) fn arg(&self, i: usize) -> u64 {
        self.n.data.args[i]
    }

    /// `arg(i)` as the `int` the kernel reads (descriptors, flags).
    pub(super) fn int(&self, i: usize) -> i32 {
        self.n.data.args[i] as i32
    }

    /// Is the notification still live (so the pid still names the caller)?
    pub(super) fn valid(&self) -> bool {
        notif::id_valid(self.listener, self.n.id)
    }

    fn pidfd(&mut self) -> R<RawFd> {
        if self.pids.tid != self.tid() || self.pids.pidfd.is_none() {
            self.pids.pidfd = Some(notif::pidfd_open(self.tid())?);
            self.pids.tid = self.tid();
        }
        Ok(self.pids.pidfd.as_ref().map_or(-1, |p| p.as_raw_fd()))
    }

    /// The caller's descriptor `fd`, duplicated here. A cached pidfd of a thread that has
    /// exited (its number since reused) fails and is reopened once.
    pub(super) fn take_fd(&mut self, fd: i32) -> R<OwnedFd> {
        let pidfd = self.pidfd()?;
        let owned_pidfd = |p: RawFd| {
            // SAFETY: `p` is the cached pidfd, open for the duration of this borrow.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(p) }
        };
        match getfd_borrowed(owned_pidfd(pidfd), fd) {
            Err(libc::ESRCH) => {
                self.pids.pidfd = None;
                let pidfd = self.pidfd()?;
                getfd_borrowed(owned_pidfd(pidfd), fd)
            }
            other => other,
        }
    }

    /// The caller's process (thread group) id.
    pub(super) fn tgid(&mut self) -> R<u32> {
        if let Some(t) = self.tgid {
            return Ok(t);
        }
        let t = notif::thread_group(self.tid()).ok_or(libc::ESRCH)? as u32;
        self.tgid = Some(t);
        Ok(t)
    }

    /// The caller's umask as `/proc/<tid>/status` shows it now (its `Umask:` line; the
    /// descriptor is kept per worker for the last thread served: one `pread`, no path walk).
    /// Creations ask [`super::umask::Umasks`], which calls this only when it must.
    pub(super) fn read_umask(&mut self) -> R<u32> {
        let tid = self.tid();
        let mut buf = [0u8; 512];
        for attempt in 0..2 {
            let cached = matches!(&self.pids.status, Some((t, _)) if *t == tid);
            if !cached || attempt == 1 {
                let p = ProcPath::pid(tid, b"status");
                self.pids.status =
                    Some((tid, raw::openat(libc::AT_FDCWD, p.c(), libc::O_RDONLY, 0)?));
            }
            let fd = self.pids.status.as_ref().map_or(-1, |(_, f)| f.as_raw_fd());
            if let Ok(n) = raw::pread(fd, &mut buf) {
                if let Some(m) = umask_line(&buf[..n]) {
                    return Ok(m);
                }
            }
        }
        Err(libc::ESRCH)
    }

    /// The caller's working directory, as an `O_PATH` descriptor.
    pub(super) fn cwd(&self) -> R<OwnedFd> {
        let p = ProcPath::pid(self.tid(), b"cwd");
        raw::openat(libc::AT_FDCWD, p.c(), libc::O_PATH | libc::O_DIRECTORY, 0)
    }

    /// Read the path argument `i` (NUL-terminated, at most `PATH_MAX`) into `out`.
    pub(super) fn read_path(&self, i: usize, out: &mut Vec<u8>) -> R<()> {
        notif::read_remote_cstr(self.tid(), self.arg(i), out, PATH_MAX - 1)
    }
}

/// The octal value of the `Umask:` line of a status file.
fn umask_line(status: &[u8]) -> Option<u32> {
    let at = status.windows(6).position(|w| w == b"Umask:")?;
    let mut v = 0u32;
    let mut digits = 0;
    for &b in status[at + 6..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
    {
        match b {
            b'0'..=b'7' if digits < 6 => {
                v = v * 8 + u32::from(b - b'0');
                digits += 1;
            }
            _ => break,
        }
    }
    (digits > 0).then_some(v)
}

fn getfd_borrowed(pidfd: std::os::fd::BorrowedFd<'_>, fd: i32) -> R<OwnedFd> {
    // SAFETY: pidfd_getfd duplicates descriptor `fd` of the target into this process; flags 0.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0u32) };
    let got = crate::cvt("pidfd_getfd", String::new, ret).map_err(notif::errno_of)?;
    // SAFETY: `got` is a new descriptor owned by this process.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(got as RawFd) })
}

/// Where a relative path starts.
pub(super) enum Base {
    /// The caller's working directory (`AT_FDCWD`).
    Cwd,
    /// The caller's descriptor.
    Caller(i32),
    /// A directory the supervisor holds (the parent of a symbolic link being followed).
    Dir(OwnedFd),
}

impl Base {
    /// The `dirfd` argument of an `*at` call.
    pub(super) fn of(dirfd: i32) -> Base {
        if dirfd == libc::AT_FDCWD {
            Base::Cwd
        } else {
            Base::Caller(dirfd)
        }
    }
}

/// A resolved name: its parent directory (held open) and its final component.
pub(super) struct Target {
    /// The parent directory, `O_PATH`.
    pub(super) dir: OwnedFd,
    /// The final component as the kernel gets it (trailing slashes kept), NUL-terminated.
    pub(super) name: CString,
    /// The final component is `.` or `..` (or absent: the directory itself).
    pub(super) dot: bool,
    /// The real path of the parent plus the final component: what the judge sees.
    pub(super) path: PathBuf,
    /// The parent is on procfs (then it is beneath the caller's own `/proc/<pid>`).
    pub(super) procfs: bool,
}

impl Target {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// Split `path` (no NUL) at its last component: (parent part, final component with trailing
/// slashes). An empty parent means the base directory itself; `/` alone gives the root and ".".
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    let core_len = path.len() - path.iter().rev().take_while(|&&b| b == b'/').count();
    if core_len == 0 {
        return (b"/", b".");
    }
    match path[..core_len].iter().rposition(|&b| b == b'/') {
        None => (b"", path),
        Some(0) => (b"/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
    }
}

/// The components of `path` with the byte offset just after each.
fn components(path: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < path.len() && path[at] == b'/' {
            at += 1;
        }
        if at >= path.len() {
            return None;
        }
        let start = at;
        while at < path.len() && path[at] != b'/' {
            at += 1;
        }
        Some((&path[start..at], at))
    })
    .filter(|(c, _)| *c != b".")
}

fn number(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Names that mean "the caller" rewritten to the caller's own: `/proc/self` → `/proc/<tgid>`,
/// `/proc/thread-self` → `/proc/<tgid>/task/<tid>`, `/dev/fd` → `/proc/<tgid>/fd`,
/// `/dev/stdin|stdout|stderr` → `/proc/<tgid>/fd/0|1|2`; the rest of the path is kept verbatim.
/// Then `/proc/<caller>/fd/<N>/rest` becomes `rest` relative to the caller's descriptor N, and
/// `/proc/<caller>/cwd/rest` `rest` relative to its cwd. Relative paths are left alone.
pub(super) fn rewrite(ctx: &mut Ctx<'_>, base: Base, path: &[u8]) -> R<(Base, Vec<u8>)> {
    if path.first() != Some(&b'/') {
        return Ok((base, path.to_vec()));
    }
    let mut comps = components(path);
    let (first, second) = (comps.next(), comps.next());
    let (Some((c1, _)), Some((c2, end2))) = (first, second) else {
        return Ok((base, path.to_vec()));
    };
    let rest = &path[end2..];
    let mut out: Vec<u8> = Vec::with_capacity(path.len() + 32);
    let fd_of_std = |c: &[u8]| match c {
        b"stdin" => Some(0u8),
        b"stdout" => Some(1),
        b"stderr" => Some(2),
        _ => None,
    };
    match (c1, c2) {
        (b"proc", b"self") => {
            let t = ctx.tgid()?;
            out.extend_from_slice(format!("/proc/{t}").as_bytes());
        }
        (b"proc", b"thread-self") => {
            let t = ctx.tgid()?;
            out.extend_from_slice(format!("/proc/{t}/task/{}", ctx.tid()).as_bytes());
        }
        (b"dev", b"fd") => {
            let t = ctx.tgid()?;
            out.extend_from_slice(format!("/proc/{t}/fd").as_bytes());
        }
        (b"dev", s) if fd_of_std(s).is_some() => {
            let t = ctx.tgid()?;
            let n = fd_of_std(s).unwrap_or(0);
            out.extend_from_slice(format!("/proc/{t}/fd/{n}").as_bytes());
        }
        (b"proc", _) => return caller_proc(ctx, base, path),
        _ => return Ok((base, path.to_vec())),
    }
    out.extend_from_slice(rest);
    caller_proc(ctx, base, &out)
}

/// `/proc/<caller>/fd/<N>/rest` and `/proc/<caller>/cwd/rest` (with `<caller>` the caller's
/// tid or tgid, optionally `/task/<tid>` after it) as `rest` from that descriptor.
fn caller_proc(ctx: &mut Ctx<'_>, base: Base, path: &[u8]) -> R<(Base, Vec<u8>)> {
    let mut comps = components(path);
    let keep = |base| Ok((base, path.to_vec()));
    let Some((b"proc", _)) = comps.next() else {
        return keep(base);
    };
    let Some(pid) = comps.next().and_then(|(c, _)| number(c)) else {
        return keep(base);
    };
    if pid != ctx.tid() && pid != ctx.tgid()? {
        return keep(base);
    }
    let mut next = comps.next();
    if let Some((b"task", _)) = next {
        match comps.next().and_then(|(c, _)| number(c)) {
            Some(t) if t == ctx.tid() => next = comps.next(),
            _ => return keep(base),
        }
    }
    match next {
        Some((b"fd", _)) => match comps.next() {
            Some((n, end)) if end < path.len() => match number(n) {
                Some(fd) => Ok((Base::Caller(fd as i32), relative(&path[end..]))),
                None => keep(base),
            },
            _ => keep(base),
        },
        Some((b"cwd", end)) => Ok((Base::Cwd, relative(&path[end..]))),
        _ => keep(base),
    }
}

/// `/rest` as `rest` (or `.` when nothing but slashes is left).
fn relative(rest: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = &rest[rest.iter().take_while(|&&b| b == b'/').count()..];
    if trimmed.is_empty() {
        if rest.is_empty() {
            b".".to_vec()
        } else {
            b"./".to_vec()
        }
    } else {
        trimmed.to_vec()
    }
}

/// The real path of the supervisor's descriptor `fd` (its `/proc/self/fd/N`, read relative to
/// `self_fd`, the supervisor's `/proc/self/fd` held open: the same magic link without the walk
/// of `/proc/self` per call), into `out`.
pub(super) fn real_path(self_fd: RawFd, fd: RawFd, out: &mut Vec<u8>) -> R<()> {
    raw::readlinkat(self_fd, ProcPath::fd_num(fd).c(), out, PATH_MAX)
}

fn cstring(b: &[u8]) -> R<CString> {
    CString::new(b).map_err(|_| libc::EINVAL)
}

/// Resolve `path` (from `base`, after [`rewrite`]) to its parent directory and final name.
/// Symbolic links in the parent part are followed by the kernel (magic links refused); a parent
/// on procfs must be beneath the caller's own `/proc/<pid>` (else `EACCES`: a link to
/// `/proc/self` resolved here would name the supervisor).
pub(super) fn resolve(ctx: &mut Ctx<'_>, base: Base, path: &[u8]) -> R<Target> {
    if path.is_empty() {
        return Err(libc::ENOENT);
    }
    let (base, path) = rewrite(ctx, base, path)?;
    let (parent, name) = split(&path);
    let dir = open_parent(ctx, base, parent)?;
    let mut real = Vec::with_capacity(128);
    real_path(ctx.self_fd, dir.as_raw_fd(), &mut real)?;
    let procfs = raw::fstatfs_type(dir.as_raw_fd())? == PROC_SUPER_MAGIC;
    if procfs && !beneath_caller_proc(ctx, &real)? {
        return Err(libc::EACCES);
    }
    let bare = &name[..name.len() - name.iter().rev().take_while(|&&b| b == b'/').count()];
    let dot = bare == b"." || bare == b"..";
    if real.last() != Some(&b'/') {
        real.push(b'/');
    }
    real.extend_from_slice(bare);
    Ok(Target {
        dir,
        name: cstring(name)?,
        dot,
        path: PathBuf::from(OsStr::from_bytes(&real)),
        procfs,
    })
}

/// Do two raw paths of a two-name call, from the same directory argument, name the same parent
/// directory with no rewriting involved? Then the second is a [`sibling`] of the first
/// (`rename("tmp", "file")`, the common atomic-write pattern): one resolution, not two.
pub(super) fn same_parent(a: &[u8], b: &[u8]) -> bool {
    !a.is_empty() && !b.is_empty() && !rewritten(a) && !rewritten(b) && split(a).0 == split(b).0
}

/// Might [`rewrite`] change `path`? Exactly the absolute paths it looks at: `/proc/...`,
/// `/dev/fd/...` and `/dev/stdin|stdout|stderr` (however spelled: `//dev/./fd`); `/dev/shm/x`
/// and relative paths are never rewritten.
fn rewritten(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut comps = components(path);
    match (comps.next(), comps.next()) {
        (Some((b"proc", _)), _) => true,
        (Some((b"dev", _)), Some((c, _))) => {
            matches!(c, b"fd" | b"stdin" | b"stdout" | b"stderr")
        }
        _ => false,
    }
}

/// The final name of `path` in the directory of `first` (see [`same_parent`]).
pub(super) fn sibling(first: &Target, path: &[u8]) -> R<Target> {
    let (_, name) = split(path);
    let bare = &name[..name.len() - name.iter().rev().take_while(|&&b| b == b'/').count()];
    let parent = first.path.parent().ok_or(libc::EINVAL)?;
    if first.dot {
        return Err(libc::EINVAL);
    }
    Ok(Target {
        dir: first
            .dir
            .try_clone()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EMFILE))?,
        name: cstring(name)?,
        dot: bare == b"." || bare == b"..",
        path: parent.join(OsStr::from_bytes(bare)),
        procfs: first.procfs,
    })
}

fn open_parent(ctx: &mut Ctx<'_>, base: Base, parent: &[u8]) -> R<OwnedFd> {
    let absolute = parent.first() == Some(&b'/');
    let from: OwnedFd = match base {
        _ if absolute => {
            return raw::open_dir(libc::AT_FDCWD, &cstring(parent)?);
        }
        // `cwd()` is already an `O_PATH | O_DIRECTORY` descriptor of exactly that directory:
        // reopening it as "." would give the same (one `openat2` and one `close` per call
        // of a relative single name saved).
        Base::Cwd if parent.is_empty() => return ctx.cwd(),
        Base::Cwd => ctx.cwd()?,
        Base::Caller(fd) => ctx.take_fd(fd)?,
        Base::Dir(d) => d,
    };
    if parent.is_empty() {
        // The base itself must be a directory (the kernel's ENOTDIR for a file dirfd).
        return raw::open_dir(from.as_raw_fd(), c".");
    }
    raw::open_dir(from.as_raw_fd(), &cstring(parent)?)
}

/// Is `real` (a procfs path) `/proc/<tid or tgid of the caller>` or beneath?
fn beneath_caller_proc(ctx: &mut Ctx<'_>, real: &[u8]) -> R<bool> {
    let mut comps = components(real);
    let (Some((b"proc", _)), Some((pid, _))) = (comps.next(), comps.next()) else {
        return Ok(false);
    };
    match number(pid) {
        Some(p) => Ok(p == ctx.tid() || p == ctx.tgid()?),
        None => Ok(false),
    }
}

/// For a symbolic link found in a procfs directory: if the target is `/proc/<caller>/fd/<N>`
/// (or `.../task/<tid>/fd/<N>`), the caller's descriptor number N.
pub(super) fn caller_fd_link(ctx: &mut Ctx<'_>, t: &Target) -> R<Option<i32>> {
    let real = t.path.as_os_str().as_bytes();
    let mut comps = components(real);
    let (Some((b"proc", _)), Some((pid, _))) = (comps.next(), comps.next()) else {
        return Ok(None);
    };
    match number(pid) {
        Some(p) if p == ctx.tid() || p == ctx.tgid()? => {}
        _ => return Ok(None),
    }
    let mut next = comps.next();
    if let Some((b"task", _)) = next {
        comps.next();
        next = comps.next();
    }
    match (next, comps.next(), comps.next()) {
        (Some((b"fd", _)), Some((n, _)), None) => Ok(number(n).map(|n| n as i32)),
        _ => Ok(None),
    }
}

/// The bytes of a C string without its NUL.
pub(super) fn bytes(c: &CStr) -> &[u8] {
    c.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_trailing_slashes_on_the_name() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"/c"), (&b"/"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(split(b"a/dir//"), (&b"a"[..], &b"dir//"[..]));
        assert_eq!(split(b"///"), (&b"/"[..], &b"."[..]));
        assert_eq!(split(b"a/.."), (&b"a"[..], &b".."[..]));
    }

    #[test]
    fn components_skip_empty_and_dot() {
        let c: Vec<&[u8]> = components(b"//proc/./self//fd/1").map(|(c, _)| c).collect();
        assert_eq!(c, vec![&b"proc"[..], b"self", b"fd", b"1"]);
    }

    #[test]
    fn numbers_are_decimal_only() {
        assert_eq!(number(b"12"), Some(12));
        assert_eq!(number(b"1a"), None);
        assert_eq!(number(b""), None);
        assert_eq!(number(b"99999999999"), None);
    }

    #[test]
    fn umask_line_is_parsed_as_octal() {
        assert_eq!(umask_line(b"Name:\tx\nUmask:\t0027\nState:"), Some(0o027));
        assert_eq!(umask_line(b"Umask:\t0777\n"), Some(0o777));
        assert_eq!(umask_line(b"Name:\tx\n"), None);
        assert_eq!(umask_line(b"Umask:\t\n"), None);
    }

    #[test]
    fn same_parent_only_without_rewriting() {
        assert!(same_parent(b"a", b"b"));
        assert!(same_parent(b"d/a", b"d/b"));
        assert!(same_parent(b"/x/a", b"/x/b"));
        assert!(!same_parent(b"d/a", b"e/b"));
        assert!(!same_parent(b"/proc/self/fd/3", b"/proc/self/fd/3/"));
        assert!(!same_parent(b"//dev/fd/3/a", b"//dev/fd/3/b"));
        assert!(!same_parent(b"", b"b"));
        assert!(same_parent(b"/dev/shm/a", b"/dev/shm/b"));
        assert!(!same_parent(b"/dev/stdout", b"/dev/stderr"));
        assert!(!same_parent(b"/dev/./fd/3/a", b"/dev/fd/3/b"));
        assert!(!same_parent(b"//proc/self/a", b"//proc/self/b"));
        assert!(same_parent(b"proc/a", b"proc/b"));
    }

    #[test]
    fn relative_rest() {
        assert_eq!(relative(b"/x/y"), b"x/y".to_vec());
        assert_eq!(relative(b""), b".".to_vec());
        assert_eq!(relative(b"//"), b"./".to_vec());
    }
}
