//! Persistent, incremental ACL grants on writable roots, and their removal.
//!
//! A grant walks a writable root once, adding named-user ACL entries for the sandbox accounts
//! (and default entries so new files inherit them). The result is recorded in `grants.json`;
//! a later run on the same root (same device/inode, same owner, same accounts, no new protected
//! paths, root ACL intact) does not walk again. The walk:
//! * never follows symlinks (`openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`, acting on
//!   `O_PATH` descriptors), never leaves the root's filesystem (`RESOLVE_NO_XDEV`);
//! * touches only directories and regular files **owned by the caller**: setting an ACL is an
//!   owner's privilege, so the broker never grants anything the caller could not grant itself
//!   (a hard link to someone else's file is skipped);
//! * gives `.git` (dirs and files, found by the broker itself) and the client's protected paths
//!   read-only entries, recursively.

use crate::acl::{self, Treatment};
use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use stockade_sys as sys;

const ACCESS: &CStr = c"system.posix_acl_access";
const DEFAULT: &CStr = c"system.posix_acl_default";

/// Resolution flags for every open below a root.
pub const RESOLVE_WALK: u64 = libc::RESOLVE_BENEATH
    | libc::RESOLVE_NO_SYMLINKS
    | libc::RESOLVE_NO_MAGICLINKS
    | libc::RESOLVE_NO_XDEV;

/// One granted root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Canonical root path.
    pub root: PathBuf,
    /// Device of the root when granted.
    pub dev: u64,
    /// Inode of the root when granted.
    pub ino: u64,
    /// Uid of the user the grant was made for (the root's owner / caller).
    pub owner_uid: u32,
    /// That user's primary gid.
    pub owner_gid: u32,
    /// The caller's grant group (named group entries point to it).
    pub grant_gid: u32,
    /// Protected paths (absolute) given read-only entries.
    pub protected: Vec<PathBuf>,
    /// `deny_read` paths given empty entries.
    pub denied: Vec<PathBuf>,
    /// Inodes changed by the last walk.
    pub inodes: u64,
    /// Directories got default (inherited) entries ([`GrantParams::inherit`]); records written
    /// before this field existed did.
    #[serde(default = "default_true")]
    pub inherit: bool,
}

fn default_true() -> bool {
    true
}

/// A per-caller grant group: the sandbox process gets it as a supplementary group only when it
/// runs for that caller, so ACL grants of one user are useless to runs for another user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerGroup {
    /// Caller uid.
    pub uid: u32,
    /// Group name (`<prefix>-u<uid>`).
    pub name: String,
    /// Gid.
    pub gid: u32,
}

/// `grants.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsFile {
    /// Format version.
    pub format: u32,
    /// Granted roots.
    pub grants: Vec<GrantRecord>,
    /// `deny_read` paths given empty entries, with the uid they were granted for.
    #[serde(default)]
    pub denied: Vec<PathBuf>,
    /// Per-caller grant groups the broker created (removed by uninstall).
    #[serde(default)]
    pub groups: Vec<CallerGroup>,
    /// Caller-owned ancestors of roots given search-only (`--x`) entries so the sandbox can reach
    /// the roots by absolute path (e.g. through a 0700 home directory).
    #[serde(default)]
    pub traverse: Vec<PathBuf>,
}

/// Grant failures.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// I/O on a path.
    #[error("granting access on {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// grants.json unreadable.
    #[error("grant record {path} is unreadable: {source}; fix or remove it")]
    Record {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A `.git` file's `gitdir:` line is longer than the broker reads.
    #[error("{path}: its `gitdir:` line is longer than {MAX_GITFILE} bytes, so the gitdir it names cannot be protected; git writes a short `gitdir: <path>` line, fix or remove the file")]
    GitfileTooLong {
        /// The `.git` file.
        path: PathBuf,
    },
    /// The filesystem does not support POSIX ACLs.
    #[error("{path}: the filesystem does not support POSIX ACLs (mount it with acl, or use the unelevated tier)")]
    Unsupported {
        /// Path.
        path: PathBuf,
    },
}

/// Loads `grants.json` (empty when absent).
pub fn load(path: &Path) -> io::Result<GrantsFile> {
    match std::fs::read(path) {
        Ok(d) => {
            serde_json::from_slice(&d).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(GrantsFile {
            format: 1,
            ..Default::default()
        }),
        Err(e) => Err(e),
    }
}

/// Stores `grants.json` atomically (root-only readable: it lists users' directories).
pub fn store(path: &Path, g: &GrantsFile) -> io::Result<()> {
    let d = serde_json::to_vec_pretty(g).map_err(io::Error::other)?;
    write_atomic(path, &d, 0o600)
}

/// What to do for a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantAction {
    /// Already granted and intact: no walk.
    Skip,
    /// Granted, but these protected paths are new: walk only them.
    Protect(Vec<PathBuf>),
    /// Walk the whole root.
    Full,
}

/// Identity of a requested grant.
#[derive(Debug, Clone)]
pub struct GrantKey<'a> {
    /// Canonical root.
    pub root: &'a Path,
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Caller uid.
    pub owner_uid: u32,
    /// The caller's grant group.
    pub grant_gid: u32,
    /// Protected paths under this root.
    pub protected: &'a [PathBuf],
    /// Whether directories get default entries now (a change means a new walk).
    pub inherit: bool,
}

/// Decides whether a root needs walking. Pure. `root_acl_intact`: the root directory's ACL still
/// holds the sandbox entries (a user running `setfacl -b` forces a new walk).
pub fn decide(
    existing: Option<&GrantRecord>,
    key: &GrantKey<'_>,
    root_acl_intact: bool,
) -> GrantAction {
    let Some(e) = existing else {
        return GrantAction::Full;
    };
    if e.dev != key.dev
        || e.ino != key.ino
        || e.owner_uid != key.owner_uid
        || e.grant_gid != key.grant_gid
        || e.inherit != key.inherit
        || !root_acl_intact
    {
        return GrantAction::Full;
    }
    let new: Vec<PathBuf> = key
        .protected
        .iter()
        .filter(|p| !e.protected.contains(p))
        .cloned()
        .collect();
    if new.is_empty() {
        GrantAction::Skip
    } else {
        GrantAction::Protect(new)
    }
}

/// Relative path of `p` under `root`, if it is strictly beneath it and has only normal components.
pub fn relative_beneath(root: &Path, p: &Path) -> Option<PathBuf> {
    let rel = p.strip_prefix(root).ok()?;
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(rel.to_path_buf())
}

/// Most bytes of a `.git` file the broker reads (git itself writes one short `gitdir: <path>`
/// line). The file belongs to the caller: reading it whole would let a 1 GiB sparse file
/// inflate the broker's memory for every user.
pub const MAX_GITFILE: usize = 4096;

/// Why a `.git` file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitfileTooLong;

/// Parses the start of a `.git` file (`gitdir: <path>`, at most [`MAX_GITFILE`] + 1 bytes of
/// it) into the gitdir path, resolved against `dir`. Not a gitdir pointer: `Ok(None)`. A
/// `gitdir:` line longer than [`MAX_GITFILE`] bytes: refused (what it names cannot be known
/// without reading further). Pure.
pub fn parse_gitfile_head(head: &[u8], dir: &Path) -> Result<Option<PathBuf>, GitfileTooLong> {
    let first = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    if first.len() > MAX_GITFILE && head.starts_with(b"gitdir:") {
        return Err(GitfileTooLong);
    }
    let end = first.len().min(MAX_GITFILE);
    Ok(parse_gitfile(&first[..end], dir))
}

/// Parses a `.git` file (`gitdir: <path>`) into the gitdir path, resolved against `dir`.
pub fn parse_gitfile(content: &[u8], dir: &Path) -> Option<PathBuf> {
    let s = std::str::from_utf8(content).ok()?;
    let line = s.lines().next()?.trim();
    let p = line.strip_prefix("gitdir:")?.trim();
    if p.is_empty() {
        return None;
    }
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    };
    Some(normalize_lexically(&joined))
}

/// Removes `.` and resolves `..` lexically (used only to decide what to *protect*).
pub fn normalize_lexically(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Statistics of one walk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Inodes seen.
    pub seen: u64,
    /// Inodes whose ACL changed.
    pub changed: u64,
    /// Inodes skipped (not owned by the caller, other filesystem, special files, symlinks).
    pub skipped: u64,
}

fn io_at<E: Into<io::Error>>(path: &Path) -> impl FnOnce(E) -> GrantError + '_ {
    move |source| {
        let source: io::Error = source.into();
        if source.raw_os_error() == Some(libc::EOPNOTSUPP) {
            GrantError::Unsupported {
                path: path.to_path_buf(),
            }
        } else {
            GrantError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

fn read_acl(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<acl::Entry>>> {
    match sys::fs::fd_getxattr(fd, name)? {
        None => Ok(None),
        Some(b) => acl::decode(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

/// Adds entries to one inode; returns whether anything changed.
fn add_entries(
    fd: BorrowedFd<'_>,
    st: &libc::stat,
    access: &[acl::Named],
    default: &[acl::Named],
) -> io::Result<bool> {
    let mut changed = false;
    let cur = read_acl(fd, ACCESS)?.unwrap_or_else(|| acl::from_mode(st.st_mode));
    let new = acl::with_named(&cur, access);
    if new != cur {
        sys::fs::fd_setxattr(fd, ACCESS, &acl::encode(&new))?;
        changed = true;
    }
    if !default.is_empty() {
        let cur = read_acl(fd, DEFAULT)?;
        let new = acl::default_with(cur.as_deref(), st.st_mode, default);
        if Some(&new) != cur.as_ref() {
            sys::fs::fd_setxattr(fd, DEFAULT, &acl::encode(&new))?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Removes the named entries `(tag, id)` from one inode; returns whether anything changed.
fn remove_entries(fd: BorrowedFd<'_>, st: &libc::stat, which: &[(u16, u32)]) -> io::Result<bool> {
    let mut changed = false;
    if let Some(cur) = read_acl(fd, ACCESS)? {
        let new = acl::without_named(&cur, which);
        if new != cur {
            sys::fs::fd_setxattr(fd, ACCESS, &acl::encode(&new))?;
            changed = true;
        }
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        if let Some(cur) = read_acl(fd, DEFAULT)? {
            let new = acl::without_named(&cur, which);
            if new != cur {
                if acl::is_minimal(&new) {
                    sys::fs::fd_removexattr(fd, DEFAULT)?;
                } else {
                    sys::fs::fd_setxattr(fd, DEFAULT, &acl::encode(&new))?;
                }
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// Visitor decision for an inode met during a walk.
struct Item<'a> {
    fd: BorrowedFd<'a>,
    st: &'a libc::stat,
    path: &'a Path,
    name: &'a OsStr,
    read_only: bool,
}

/// Depth-first walk below `root_fd` (inclusive), on descriptors only. `visit` returns whether a
/// directory's subtree is read-only. Directories not owned by `only_uid` (when set) are not
/// entered: their content is not the caller's to grant.
fn walk(
    root_fd: BorrowedFd<'_>,
    root_path: &Path,
    root_read_only: bool,
    only_uid: Option<u32>,
    stats: &mut WalkStats,
    visit: &mut dyn FnMut(&Item<'_>) -> io::Result<bool>,
) -> Result<(), GrantError> {
    let root_st = sys::fs::fstat(root_fd).map_err(io_at(root_path))?;
    let root_own = root_fd.try_clone_to_owned().map_err(io_at(root_path))?;
    let ro = visit(&Item {
        fd: root_fd,
        st: &root_st,
        path: root_path,
        name: OsStr::new(""),
        read_only: root_read_only,
    })
    .map_err(io_at(root_path))?;
    stats.seen += 1;
    let mut stack: Vec<(OwnedFd, PathBuf, bool)> = vec![(root_own, root_path.to_path_buf(), ro)];
    while let Some((dfd, dpath, dro)) = stack.pop() {
        let listing = match std::fs::read_dir(format!("/proc/self/fd/{}", dfd.as_raw_fd())) {
            Ok(l) => l,
            Err(_) => {
                stats.skipped += 1;
                continue;
            }
        };
        for ent in listing {
            let Ok(ent) = ent else {
                stats.skipped += 1;
                continue;
            };
            let name = ent.file_name();
            let path = dpath.join(&name);
            stats.seen += 1;
            let fd = match sys::fs::openat2(
                Some(dfd.as_fd()),
                Path::new(&name),
                libc::O_PATH | libc::O_NOFOLLOW,
                RESOLVE_WALK,
            ) {
                Ok(fd) => fd,
                Err(_) => {
                    // Vanished, another filesystem (EXDEV), or a symlink raced in: not ours.
                    stats.skipped += 1;
                    continue;
                }
            };
            let st = sys::fs::fstat(fd.as_fd()).map_err(io_at(&path))?;
            let fmt = st.st_mode & libc::S_IFMT;
            if (fmt != libc::S_IFDIR && fmt != libc::S_IFREG)
                || only_uid.is_some_and(|u| st.st_uid != u)
            {
                stats.skipped += 1;
                continue;
            }
            let sub_ro = visit(&Item {
                fd: fd.as_fd(),
                st: &st,
                path: &path,
                name: &name,
                read_only: dro,
            })
            .map_err(io_at(&path))?;
            if fmt == libc::S_IFDIR {
                stack.push((fd, path, sub_ro));
            }
        }
    }
    Ok(())
}

/// Parameters of a grant.
pub struct GrantParams<'a> {
    /// Validated root descriptor (directory, owned or writable by the caller).
    pub root_fd: BorrowedFd<'a>,
    /// Its canonical path.
    pub root: &'a Path,
    /// Caller.
    pub caller_uid: u32,
    /// The caller's grant group.
    pub grant_gid: u32,
    /// Protected paths beneath the root (absolute).
    pub protected: &'a [PathBuf],
    /// Give directories default (inherited) entries. Not needed when runs bind the roots
    /// idmapped (what a run creates is the caller's): without them new files get the mode the
    /// command's umask leaves.
    pub inherit: bool,
}

/// Grants the sandbox accounts access below one root (full walk or only `subset` of protected
/// paths). Returns stats and any gitdirs found in `.git` files (to protect too).
pub fn apply_root(
    p: &GrantParams<'_>,
    subset: Option<&[PathBuf]>,
    progress: &mut dyn FnMut(u64),
) -> Result<(WalkStats, Vec<PathBuf>), GrantError> {
    let mut stats = WalkStats::default();
    let mut gitdirs = Vec::new();
    let protected = p.protected;
    let caller = p.caller_uid;
    let gid = p.grant_gid;
    let mut changed = 0u64;
    let mut bad_gitfile: Option<PathBuf> = None;
    let mut visit = |it: &Item<'_>| -> io::Result<bool> {
        let is_dir = it.st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let ro =
            it.read_only || it.name == OsStr::new(".git") || protected.iter().any(|x| x == it.path);
        if it.name == OsStr::new(".git") && !is_dir {
            if let (Ok(head), Some(dir)) = (read_head(it.fd, MAX_GITFILE + 1), it.path.parent()) {
                match parse_gitfile_head(&head, dir) {
                    Ok(Some(g)) => gitdirs.push(g),
                    Ok(None) => {}
                    Err(GitfileTooLong) => {
                        bad_gitfile = Some(it.path.to_path_buf());
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "gitdir line too long",
                        ));
                    }
                }
            }
        }
        if it.st.st_uid == caller {
            let t = if ro {
                Treatment::ReadOnly
            } else {
                Treatment::Writable
            };
            let exec = it.st.st_mode & 0o111 != 0;
            let (a, mut d) = acl::entries_for(t, is_dir, exec, gid, caller);
            if !p.inherit {
                d.clear();
            }
            if add_entries(it.fd, it.st, &a, &d)? {
                changed += 1;
            }
        }
        if changed % 1024 == 1023 {
            progress(changed + 1);
        }
        Ok(ro)
    };
    let walked = walk_all(p, subset, &mut stats, &mut visit);
    if let Some(path) = bad_gitfile {
        return Err(GrantError::GitfileTooLong { path });
    }
    walked?;
    stats.changed = changed;
    Ok((stats, gitdirs))
}

/// The walk of [`apply_root`]: the whole root, or only `subset`.
fn walk_all(
    p: &GrantParams<'_>,
    subset: Option<&[PathBuf]>,
    stats: &mut WalkStats,
    visit: &mut dyn FnMut(&Item<'_>) -> io::Result<bool>,
) -> Result<(), GrantError> {
    let caller = p.caller_uid;
    match subset {
        None => walk(p.root_fd, p.root, false, Some(caller), stats, visit)?,
        Some(paths) => {
            for path in paths {
                let Some(rel) = relative_beneath(p.root, path) else {
                    continue;
                };
                let Ok(fd) = sys::fs::openat2(
                    Some(p.root_fd),
                    &rel,
                    libc::O_PATH | libc::O_NOFOLLOW,
                    RESOLVE_WALK,
                ) else {
                    continue;
                };
                let st = sys::fs::fstat(fd.as_fd()).map_err(io_at(path))?;
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK || st.st_uid != caller {
                    continue;
                }
                walk(fd.as_fd(), path, true, Some(caller), stats, visit)?;
            }
        }
    }
    Ok(())
}

/// At most `max` bytes from the start of the regular file behind the `O_PATH` descriptor `fd`
/// (reopened read-only through `/proc/self/fd`, so no path is resolved again).
fn read_head(fd: BorrowedFd<'_>, max: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let mut buf = Vec::with_capacity(max);
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Gives `deny_read` paths (owned by the caller, beneath nothing in particular) an empty entry for
/// each sandbox uid, so "other" permission bits do not let the sandbox read them.
pub fn deny_paths(paths: &[PathBuf], caller_uid: u32, grant_gid: u32) -> Vec<PathBuf> {
    let mut done = Vec::new();
    for p in paths {
        let Ok(fd) = sys::fs::openat2(
            None,
            p,
            libc::O_PATH | libc::O_NOFOLLOW,
            libc::RESOLVE_NO_SYMLINKS,
        ) else {
            continue;
        };
        let Ok(st) = sys::fs::fstat(fd.as_fd()) else {
            continue;
        };
        let fmt = st.st_mode & libc::S_IFMT;
        if st.st_uid != caller_uid || (fmt != libc::S_IFDIR && fmt != libc::S_IFREG) {
            continue;
        }
        let (a, _) = acl::entries_for(
            Treatment::Denied,
            fmt == libc::S_IFDIR,
            false,
            grant_gid,
            caller_uid,
        );
        if add_entries(fd.as_fd(), &st, &a, &[]).is_ok() {
            done.push(p.clone());
        }
    }
    done
}

/// Gives the caller-owned ancestors of `root` (nearest first, stopping at the first one the caller
/// does not own) a search-only entry for each sandbox uid, keeping any permission already there.
/// Returns the ancestors changed.
pub fn traverse_ancestors(root: &Path, caller_uid: u32, grant_gid: u32) -> Vec<PathBuf> {
    let mut done = Vec::new();
    let mut cur = root.parent();
    while let Some(dir) = cur {
        if dir.parent().is_none() {
            break;
        }
        let Ok(fd) = sys::fs::openat2(
            None,
            dir,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            libc::RESOLVE_NO_SYMLINKS,
        ) else {
            break;
        };
        let Ok(st) = sys::fs::fstat(fd.as_fd()) else {
            break;
        };
        if st.st_uid != caller_uid {
            break;
        }
        let cur_acl = match read_acl(fd.as_fd(), ACCESS) {
            Ok(a) => a.unwrap_or_else(|| acl::from_mode(st.st_mode)),
            Err(_) => break,
        };
        let have = cur_acl
            .iter()
            .find(|e| e.tag == acl::TAG_GROUP && e.id == grant_gid)
            .map_or(0, |e| e.perm);
        let want = [(acl::TAG_GROUP, grant_gid, have | acl::X)];
        let new = acl::with_named(&cur_acl, &want);
        if new != cur_acl && sys::fs::fd_setxattr(fd.as_fd(), ACCESS, &acl::encode(&new)).is_ok() {
            done.push(dir.to_path_buf());
        }
        cur = dir.parent();
    }
    done
}

/// Whether the root directory's access ACL still holds the writable entries for every uid.
pub fn root_acl_intact(root_fd: BorrowedFd<'_>, grant_gid: u32) -> bool {
    match read_acl(root_fd, ACCESS) {
        Ok(Some(a)) => acl::has_named(&a, acl::TAG_GROUP, grant_gid, acl::R | acl::W | acl::X),
        _ => false,
    }
}

/// Removes every recorded grant: the entries for `uids` on every inode below each root (whoever
/// owns it), the entries on denied paths, and gives files the sandbox created back to the owner.
/// Returns one line per root.
pub fn revoke_all(grants_path: &Path, sandbox_uids: &[u32]) -> Result<Vec<String>, GrantError> {
    let g = load(grants_path).map_err(|source| GrantError::Record {
        path: grants_path.to_path_buf(),
        source,
    })?;
    let mut lines = Vec::new();
    for r in &g.grants {
        // The owner's own named entries were added by the grant too (default ACLs, inherited by
        // files the sandbox created); they are redundant once those files are given back.
        let mut all: Vec<(u16, u32)> =
            vec![(acl::TAG_USER, r.owner_uid), (acl::TAG_GROUP, r.grant_gid)];
        all.extend(sandbox_uids.iter().map(|u| (acl::TAG_USER, *u)));
        all.extend(g.groups.iter().map(|c| (acl::TAG_GROUP, c.gid)));
        all.sort_unstable();
        all.dedup();
        let Ok(fd) = sys::fs::openat2(
            None,
            &r.root,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            libc::RESOLVE_NO_SYMLINKS,
        ) else {
            lines.push(format!("{}: gone, nothing to revoke", r.root.display()));
            continue;
        };
        let st = sys::fs::fstat(fd.as_fd()).map_err(io_at(&r.root))?;
        if st.st_dev != r.dev || st.st_ino != r.ino {
            lines.push(format!(
                "{}: replaced by another directory since the grant; left untouched",
                r.root.display()
            ));
            continue;
        }
        let mut stats = WalkStats::default();
        let mut changed = 0u64;
        let (ou, og) = (r.owner_uid, r.owner_gid);
        let sandbox: Vec<u32> = sandbox_uids.iter().copied().filter(|u| *u != ou).collect();
        walk(fd.as_fd(), &r.root, false, None, &mut stats, &mut |it| {
            if remove_entries(it.fd, it.st, &all)? {
                changed += 1;
            }
            if sandbox.contains(&it.st.st_uid) {
                sys::fchown_fd(it.fd.as_raw_fd(), ou, og)?;
            }
            Ok(false)
        })?;
        for d in &r.denied {
            if let Ok(dfd) = sys::fs::openat2(
                None,
                d,
                libc::O_PATH | libc::O_NOFOLLOW,
                libc::RESOLVE_NO_SYMLINKS,
            ) {
                if let Ok(st) = sys::fs::fstat(dfd.as_fd()) {
                    let _ = remove_entries(dfd.as_fd(), &st, &all);
                }
            }
        }
        lines.push(format!(
            "revoked ACL entries on {} ({} inodes)",
            r.root.display(),
            changed
        ));
    }
    let mut global: Vec<(u16, u32)> = g.groups.iter().map(|c| (acl::TAG_GROUP, c.gid)).collect();
    global.extend(g.grants.iter().map(|r| (acl::TAG_GROUP, r.grant_gid)));
    global.extend(sandbox_uids.iter().map(|u| (acl::TAG_USER, *u)));
    for d in g.denied.iter().chain(g.traverse.iter()) {
        let Ok(dfd) = sys::fs::openat2(
            None,
            d,
            libc::O_PATH | libc::O_NOFOLLOW,
            libc::RESOLVE_NO_SYMLINKS,
        ) else {
            continue;
        };
        if let Ok(st) = sys::fs::fstat(dfd.as_fd()) {
            if remove_entries(dfd.as_fd(), &st, &global).unwrap_or(false) {
                lines.push(format!("revoked entries on {}", d.display()));
            }
        }
    }
    Ok(lines)
}

/// Path bytes helper for messages.
pub fn display(p: &Path) -> String {
    String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> GrantRecord {
        GrantRecord {
            root: "/home/u/ws".into(),
            dev: 1,
            ino: 2,
            owner_uid: 1000,
            owner_gid: 1000,
            grant_gid: 900,
            protected: vec!["/home/u/ws/.git".into()],
            denied: vec![],
            inodes: 10,
            inherit: false,
        }
    }

    #[test]
    fn decide_skips_unchanged_root() {
        let r = rec();
        let prot = vec![PathBuf::from("/home/u/ws/.git")];
        let key = GrantKey {
            root: &r.root,
            dev: 1,
            ino: 2,
            owner_uid: 1000,
            grant_gid: 900,
            protected: &prot,
            inherit: false,
        };
        assert_eq!(decide(Some(&r), &key, true), GrantAction::Skip);
        let inherit_now = GrantKey {
            inherit: true,
            ..key.clone()
        };
        assert_eq!(
            decide(Some(&r), &inherit_now, true),
            GrantAction::Full,
            "idmap no longer available: walk again with default entries"
        );
        assert_eq!(
            decide(Some(&r), &key, false),
            GrantAction::Full,
            "ACL removed by hand: walk again"
        );
        assert_eq!(decide(None, &key, true), GrantAction::Full);
        let key2 = GrantKey {
            ino: 3,
            ..key.clone()
        };
        assert_eq!(
            decide(Some(&r), &key2, true),
            GrantAction::Full,
            "directory replaced"
        );
        let key3 = GrantKey {
            owner_uid: 1001,
            ..key.clone()
        };
        assert_eq!(decide(Some(&r), &key3, true), GrantAction::Full);
        let prot2 = vec![
            PathBuf::from("/home/u/ws/.git"),
            PathBuf::from("/home/u/ws/.agent"),
        ];
        let key4 = GrantKey {
            protected: &prot2,
            ..key
        };
        assert_eq!(
            decide(Some(&r), &key4, true),
            GrantAction::Protect(vec!["/home/u/ws/.agent".into()])
        );
    }

    #[test]
    fn relative_paths() {
        let r = Path::new("/a/b");
        assert_eq!(
            relative_beneath(r, Path::new("/a/b/c/d")),
            Some(PathBuf::from("c/d"))
        );
        assert_eq!(relative_beneath(r, Path::new("/a/b")), None);
        assert_eq!(relative_beneath(r, Path::new("/a/bc")), None);
        assert_eq!(relative_beneath(r, Path::new("/a/b/../x")), None);
    }

    #[test]
    fn gitfile() {
        assert_eq!(
            parse_gitfile(b"gitdir: ../.git/worktrees/x\n", Path::new("/w/sub")),
            Some("/w/.git/worktrees/x".into())
        );
        assert_eq!(
            parse_gitfile(b"gitdir: /abs/gd", Path::new("/w")),
            Some("/abs/gd".into())
        );
        assert_eq!(parse_gitfile(b"nonsense", Path::new("/w")), None);
    }

    #[test]
    fn gitfile_head_is_bounded() {
        let w = Path::new("/w");
        assert_eq!(
            parse_gitfile_head(b"gitdir: /abs/gd\nrest", w),
            Ok(Some("/abs/gd".into()))
        );
        // A sparse file reads as NUL bytes: not a pointer, nothing to protect.
        assert_eq!(parse_gitfile_head(&[0u8; MAX_GITFILE + 1], w), Ok(None));
        // A pointer line that does not end within the bound is refused...
        let mut long = b"gitdir: /".to_vec();
        long.resize(MAX_GITFILE + 1, b'a');
        assert_eq!(parse_gitfile_head(&long, w), Err(GitfileTooLong));
        // ...one that just fits is not.
        let mut fits = b"gitdir: /".to_vec();
        fits.resize(MAX_GITFILE, b'a');
        fits.push(b'\n');
        assert!(matches!(parse_gitfile_head(&fits, w), Ok(Some(_))));
    }
}
