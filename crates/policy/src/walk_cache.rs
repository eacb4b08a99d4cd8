//! The protected-name walk, with a per-root cache of directory listings.
//!
//! The plan (`resolve`) must find every protected name (`.git`, `.stockade`, ...) at any depth
//! under every writable root on every run. Listing every directory (`getdents64`) dominates the
//! cost of a launch in a large workspace, so the listings are cached between runs in the state
//! directory (`<state_dir>/walk/<sha256 of the canonical root>.bin`) and, on a warm run, a
//! directory is only `lstat`ed (one `statx`, no `getdents`) to check that its listing is still the
//! one that was cached.
//!
//! # What is cached
//!
//! For each directory visited: its identity and version — `(st_dev, st_ino)` and `st_ctime`
//! (seconds and nanoseconds) — the names of its child directories (to recurse without listing it)
//! and the protected names it contains with their type (directory, symlink, other). Ordinary files
//! are not recorded. Only listings are cached: every run still reads each `.git` file and resolves
//! each protected symlink (their contents can change without their directory changing).
//!
//! # Why a cached listing can be trusted
//!
//! A directory's ctime is set by the kernel, from the clock, whenever an entry is created,
//! removed or renamed in it, and whenever its attributes change — including when its mtime is set
//! with `utimensat`. Nothing unprivileged can set ctime to a chosen value, so a directory whose
//! `(dev, ino, ctime)` equals the cached one has had no entry added, removed or renamed since it
//! was listed, with two caveats that are handled:
//!
//! * **Racy ctime.** Timestamps have a granularity (a clock tick, or a second on some
//!   filesystems), so a change made right after the listing, within the same tick, can leave ctime
//!   unchanged. As in git's racy-index rule, a cached entry whose ctime is not at least
//!   [`RACY_WINDOW_NS`] older than the *start* of the walk that recorded it is never trusted: it
//!   is listed again. (The key is taken with `lstat` *before* the listing, so a change between the
//!   two only makes the next run re-list.)
//! * **Filesystems whose ctime is not the kernel's.** On FAT-like filesystems ctime mirrors mtime
//!   (which anyone who may write can set) and on network or FUSE filesystems it comes from a
//!   server, possibly through a stale attribute cache. Listings are only trusted on filesystems
//!   known to keep a real, local ctime (`statfs` type: ext2/3/4, XFS, Btrfs, tmpfs, F2FS, ZFS,
//!   bcachefs, overlayfs); elsewhere every directory is listed on every run, as without a cache.
//!
//! Every directory that is descended into is checked this way, independently of its parent (a
//! change in `a/b` does not touch the ctime of `a`), and by path, so a directory replaced or
//! mounted over since the last run has a different `(dev, ino)` and is re-listed. The cache file
//! itself lives in the state directory, outside every writable root (if the state directory is
//! inside one, the cache is neither read nor written), so the sandboxed command cannot write it.
//! A cache file that cannot be read, has another format version, another root or another set of
//! protected names, fails its checksum or does not parse is treated as absent — a cold walk — and
//! never as "no protected names".
//!
//! # Failing closed
//!
//! A directory below the root that cannot be listed stops the walk ([`ScanError::Dir`]) and so
//! the run: a command can `chmod 000` a directory to hide a repository from the next run's walk.
//! Such a failure is never cached, and a cached listing cannot stand in for it: changing a
//! directory's mode or ACL changes its ctime, so it is listed again (and fails again); a
//! directory under an unlistable one cannot even be `lstat`ed, so it has no key. Directories the
//! user exempted (`filesystem.walk_exempt`) are not descended into, with or without a cache.
//!
//! # Limits
//!
//! * The cache is as trustworthy as the state directory: a run that was given write access to it
//!   (say `--writable ~/.local/state`) could leave a forged cache for later runs, as it could
//!   rewrite the rest of Stockade's state. Only the current run's roots can be checked here.
//! * A root (or NTP) stepping the clock back could let a later change reproduce a ctime already
//!   recorded; a cache whose walk started after "now" is therefore ignored, which covers a clock
//!   that is still behind.
//! * The cache is used on Linux only; elsewhere every run lists every directory.
//!
//! # Writing
//!
//! After a successful walk with no usable cache, or one that listed more than
//! [`REWRITE_AFTER_DIRS`] directories or [`REWRITE_AFTER_ENTRIES`] entries (a rewrite costs more
//! than listing a few directories again; until then, the changed directories are listed on each
//! run), the new cache is written to a temporary file in the same directory and renamed over the
//! old one, so a concurrent run sees
//! either the old or the new file. A crash may leave a truncated file, which fails its checksum.
//! Failure to write is only logged (at debug level). A cache larger than [`MAX_CACHE_BYTES`] is
//! not written, and at most [`MAX_CACHE_FILES`] cache files are kept (the least recently written
//! are removed).
//!
//! # Measurements
//!
//! Release build, the project's 2-core VM (kernel 6.18, ext4, page cache warm, other builds
//! running: load 2–5, so ±30 %), medians of 9 runs, `cargo test --release -p stockade-policy --
//! --ignored --nocapture walk_cache_speed`:
//!
//! | tree | no cache (before) | cold, cache written | warm | warm, one dir changed |
//! |---|---|---|---|---|
//! | 100k files in 1,100 dirs | 34–45 ms | 35–47 ms | 1.3–2.0 ms | 1.7–2.2 ms |
//! | 50k dirs, 2 files each | 270–390 ms | 325–390 ms | 72–95 ms | 72–91 ms |
//!
//! `resolve` as a whole, warm: 1.7–3.2 ms (100k files), 82–104 ms (50k dirs). The cache files are
//! 48 kB and 2.3 MB. A warm walk costs one `lstat` per directory and is bound by it (≈ 1.6 µs
//! each on this VM; the 50k-directory tree has tiny directories, so listing them was only ≈ 4×
//! dearer than `lstat`ing them). A cold walk costs that `lstat` on top of the listing (+3 % and
//! +15 % above). Splitting the walk over 2 threads was measured (raw `lstat`/`getdents` of the
//! 50k directories split in two halves): between no gain and 2.4× depending on what else the 2
//! cores were doing, so it is not done — not a clear win on a shared machine, and it would take
//! a core from the command being launched.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Format version of the cache file; any other version is ignored (cold walk).
pub const FORMAT_VERSION: u32 = 1;

/// A cached listing is only trusted if the directory's ctime is at least this much older than the
/// start of the walk that recorded it (2 s: more than any timestamp granularity in use).
pub const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// Upper bound on a cache file; larger caches are neither written nor read.
pub const MAX_CACHE_BYTES: u64 = 64 << 20;

/// At most this many cache files (one per writable root) are kept in `<state_dir>/walk/`.
pub const MAX_CACHE_FILES: usize = 128;

/// A loaded cache is rewritten only when the walk listed more than this many directories...
pub const REWRITE_AFTER_DIRS: usize = 32;

/// ... or read more than this many directory entries (until then the few changed directories are
/// simply listed again on each run).
pub const REWRITE_AFTER_ENTRIES: usize = 4096;

const MAGIC: [u8; 8] = *b"STKDWALK";
const HEADER_LEN: usize = 8 + 4 + 8;
const NONE: u32 = u32::MAX;

/// What a protected name found by the walk is (from the directory entry; symlinks not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FoundKind {
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (regular file, socket, ...).
    Other,
}

/// A protected name found under a root.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// Its path (the root joined with the directories leading to it).
    pub path: PathBuf,
    /// The protected name.
    pub name: OsString,
    /// Its type.
    pub kind: FoundKind,
}

/// Counters of one walk (tests and debug logging).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ScanStats {
    /// A usable cache file was loaded.
    pub cache_loaded: bool,
    /// Directories whose cached listing was reused (no `getdents`).
    pub reused: usize,
    /// Directories that were listed.
    pub listed: usize,
    /// A new cache file was written.
    pub written: bool,
}

/// The result of walking one root.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Protected names, in walk order.
    pub found: Vec<Found>,
    /// Directories that vanished while the walk reached them (nothing left to protect there).
    pub warnings: Vec<String>,
    /// Counters.
    pub stats: ScanStats,
}

/// The directory holding walk caches, `<state_dir>/walk` made canonical, or `None` if caching
/// must not be used: the state directory is relative, or it is (or is inside) a writable root,
/// where the sandboxed command could write the cache.
pub(crate) fn cache_dir(state_dir: &Path, roots: &[PathBuf]) -> Option<PathBuf> {
    if !state_dir.is_absolute() {
        return None;
    }
    let dir = canonical_prefix(&state_dir.join("walk"))?;
    if roots.iter().any(|r| dir.starts_with(r)) {
        tracing::debug!(
            "walk cache disabled: {} is inside a writable root",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

/// The cache file of `root` (canonical) in `dir` (from [`cache_dir`]).
pub(crate) fn cache_file(dir: &Path, root: &Path) -> PathBuf {
    let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.bin"))
}

/// `p` with its longest existing prefix canonicalized (the rest appended as is; `..` refused).
fn canonical_prefix(p: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(c) = fs::canonicalize(cur) {
            let mut out = c;
            for comp in rest.iter().rev() {
                out.push(comp);
            }
            return Some(out);
        }
        let name = cur.file_name()?;
        rest.push(name.to_os_string());
        cur = cur.parent()?;
    }
}

/// Why a walk stopped: a directory under the root could not be (completely) listed, so a
/// protected name in it could not be seen. The walk fails closed: a command can make a directory
/// unlistable (`chmod 000`) to hide a repository from the next run's walk.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// The root itself could not be listed.
    Root(io::Error),
    /// A directory below the root could not be listed (or its listing not finished).
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Walk `root` (canonical, a directory) for `names`, reusing and refreshing the cache in
/// `cache` if given. Symlinks are never followed, protected directories are not descended into,
/// nor are the directories in `skip`. Fails if any directory that is descended into cannot be
/// listed (one that vanished meanwhile is only reported in [`Scan::warnings`]); nothing is
/// cached then.
pub(crate) fn scan(
    root: &Path,
    names: &[OsString],
    cache: Option<&Path>,
    skip: &[PathBuf],
) -> Result<Scan, ScanError> {
    scan_at(root, names, cache, skip, now_ns())
}

/// [`scan`] with the walk's start time given (nanoseconds since the epoch), for tests.
pub(crate) fn scan_at(
    root: &Path,
    names: &[OsString],
    cache: Option<&Path>,
    skip: &[PathBuf],
    start_ns: i128,
) -> Result<Scan, ScanError> {
    let mut sorted_names: Vec<&[u8]> = names.iter().map(|n| n.as_encoded_bytes()).collect();
    sorted_names.sort();
    sorted_names.dedup();
    let root_bytes = root.as_os_str().as_encoded_bytes();
    let old = cache
        .and_then(|f| load(f, root_bytes, &sorted_names))
        .filter(|o| {
            // The clock went back since the cache was written: a later change could then get a
            // ctime already seen, so the cache is not trusted.
            let ok = o.start_ns <= start_ns;
            if !ok {
                tracing::debug!("walk cache written in the future (clock changed?), ignored");
            }
            ok
        });
    let mut scan = Scan::default();
    scan.stats.cache_loaded = old.is_some();
    let caching = cache.is_some();
    let mut new = Snapshot::new(start_ns);
    let mut fs_trust = FsTrust::default();
    let mut by_id: Option<HashMap<(u64, u64), u32>> = None;
    let mut entries_read = 0usize;

    let mut stack = vec![Item {
        path: root.to_path_buf(),
        old: if old.is_some() { 0 } else { NONE },
        parent_entry: NONE,
    }];
    let mut first = true;
    while let Some(item) = stack.pop() {
        let is_root = std::mem::take(&mut first);
        // The key is taken before the listing: a change in between only makes the next run list
        // the directory again.
        let key = if caching {
            fs::symlink_metadata(&item.path)
                .ok()
                .and_then(|m| dir_key(&m, &item.path, &mut fs_trust))
        } else {
            None
        };
        let idx = new.dirs.len();
        if let Some(e) = new.entries.get_mut(item.parent_entry as usize) {
            e.child = u32::try_from(idx).unwrap_or(NONE);
        }
        let first_entry = new.entries.len();
        let mut old_idx = item.old;
        let reusable = match (&old, key) {
            (Some(o), Some(k)) => {
                let same = |d: &DirRec| d.key.is_some_and(|dk| (dk.dev, dk.ino) == (k.dev, k.ino));
                if !o.dirs.get(old_idx as usize).is_some_and(same) {
                    // Moved (or its parent's record was not usable): find it by identity.
                    let by_id = by_id.get_or_insert_with(|| o.index_by_id());
                    old_idx = by_id.get(&(k.dev, k.ino)).copied().unwrap_or(NONE);
                }
                o.dirs
                    .get(old_idx as usize)
                    .filter(|d| d.key == Some(k) && k.ctime_ns() < o.start_ns - RACY_WINDOW_NS)
                    .map(|d| (o, d))
            }
            _ => None,
        };
        let mut key = key;
        if let Some((o, d)) = reusable {
            scan.stats.reused += 1;
            for e in o.entries.get(d.first..d.first + d.count).unwrap_or(&[]) {
                let name = o.name(e);
                let eidx = new.push_entry(e.kind, name);
                visit(
                    &item.path,
                    e.kind,
                    name,
                    e.child,
                    eidx,
                    skip,
                    &mut stack,
                    &mut scan.found,
                );
            }
        } else {
            scan.stats.listed += 1;
            let rd = match fs::read_dir(&item.path) {
                Ok(rd) => rd,
                Err(e) if is_root => return Err(ScanError::Root(e)),
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(ScanError::Dir {
                        path: item.path,
                        source: e,
                    })
                }
                Err(e) => {
                    scan.warnings.push(format!(
                        "{} vanished while it was searched for protected names: {}",
                        item.path.display(),
                        crate::io_reason(&e)
                    ));
                    new.dirs.push(DirRec {
                        key: None,
                        first: first_entry,
                        count: 0,
                    });
                    continue;
                }
            };
            // Child directories of the old listing, to carry the hint for their records over.
            let old_children: HashMap<&[u8], u32> = match &old {
                Some(o) => o
                    .dirs
                    .get(old_idx as usize)
                    .and_then(|d| o.entries.get(d.first..d.first + d.count))
                    .unwrap_or(&[])
                    .iter()
                    .filter(|e| e.kind == EntryKind::SubDir)
                    .map(|e| (o.name(e), e.child))
                    .collect(),
                None => HashMap::new(),
            };
            for ent in rd {
                entries_read += 1;
                let ent = match ent {
                    Ok(ent) => ent,
                    Err(e) => {
                        return Err(ScanError::Dir {
                            path: item.path,
                            source: e,
                        })
                    }
                };
                let Ok(ft) = ent.file_type() else {
                    // Skipped, as without a cache; but the listing is then not a complete one.
                    key = None;
                    continue;
                };
                let name = ent.file_name();
                let name = name.as_encoded_bytes();
                let kind = if sorted_names.binary_search(&name).is_ok() {
                    EntryKind::Protected(if ft.is_symlink() {
                        FoundKind::Symlink
                    } else if ft.is_dir() {
                        FoundKind::Dir
                    } else {
                        FoundKind::Other
                    })
                } else if ft.is_dir() {
                    EntryKind::SubDir
                } else {
                    continue;
                };
                let hint = old_children.get(name).copied().unwrap_or(NONE);
                let eidx = if caching {
                    new.push_entry(kind, name)
                } else {
                    NONE
                };
                visit(
                    &item.path,
                    kind,
                    name,
                    hint,
                    eidx,
                    skip,
                    &mut stack,
                    &mut scan.found,
                );
            }
        }
        new.dirs.push(DirRec {
            key,
            first: first_entry,
            count: new.entries.len() - first_entry,
        });
    }

    if let Some(file) = cache {
        // Rewriting costs more than listing a few directories again (ext4 flushes a file renamed
        // over another: ≈ 2 ms for 50 kB), so a cache that is still mostly right is kept until
        // enough has changed.
        if old.is_none()
            || scan.stats.listed > REWRITE_AFTER_DIRS
            || entries_read > REWRITE_AFTER_ENTRIES
        {
            match store(file, &new, root_bytes, &sorted_names) {
                Ok(true) => scan.stats.written = true,
                Ok(false) => {}
                Err(e) => tracing::debug!("could not write walk cache {}: {e}", file.display()),
            }
        }
    }
    tracing::debug!(
        root = %root.display(),
        reused = scan.stats.reused,
        listed = scan.stats.listed,
        written = scan.stats.written,
        "protected-name walk"
    );
    Ok(scan)
}

/// A directory waiting to be walked.
struct Item {
    path: PathBuf,
    /// Index of this directory's record in the old snapshot (a hint only: the record is used only
    /// if its key matches the directory's).
    old: u32,
    /// Index of the parent's entry for this directory in the new snapshot.
    parent_entry: u32,
}

/// Handle one recorded entry of `dir`: recurse into a child directory or report a protected name.
#[allow(clippy::too_many_arguments)]
fn visit(
    dir: &Path,
    kind: EntryKind,
    name: &[u8],
    hint: u32,
    eidx: u32,
    skip: &[PathBuf],
    stack: &mut Vec<Item>,
    found: &mut Vec<Found>,
) {
    let name = os_str(name);
    let path = dir.join(name);
    match kind {
        EntryKind::SubDir => {
            if !skip.contains(&path) {
                stack.push(Item {
                    path,
                    old: hint,
                    parent_entry: eidx,
                });
            }
        }
        EntryKind::Protected(kind) => found.push(Found {
            path,
            name: name.to_os_string(),
            kind,
        }),
    }
}

#[cfg(unix)]
fn os_str(b: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(b)
}

#[cfg(not(unix))]
fn os_str(b: &[u8]) -> &OsStr {
    // SAFETY: every name handled here came from `OsStr::as_encoded_bytes` in this process (a
    // directory entry, or a cache file, which is never read on this platform).
    unsafe { OsStr::from_encoded_bytes_unchecked(b) }
}

fn now_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// A directory's identity and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirKey {
    dev: u64,
    ino: u64,
    ctime_sec: i64,
    ctime_nsec: u32,
}

impl DirKey {
    fn ctime_ns(&self) -> i128 {
        self.ctime_sec as i128 * 1_000_000_000 + self.ctime_nsec as i128
    }
}

/// The key of a directory whose listing may be cached, or `None` (not a directory, or a
/// filesystem whose ctime cannot be trusted).
#[cfg(unix)]
fn dir_key(meta: &fs::Metadata, path: &Path, trust: &mut FsTrust) -> Option<DirKey> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_dir() || !trust.trusted(meta.dev(), path) {
        return None;
    }
    Some(DirKey {
        dev: meta.dev(),
        ino: meta.ino(),
        ctime_sec: meta.ctime(),
        ctime_nsec: u32::try_from(meta.ctime_nsec()).ok()?,
    })
}

#[cfg(not(unix))]
fn dir_key(_meta: &fs::Metadata, _path: &Path, _trust: &mut FsTrust) -> Option<DirKey> {
    None
}

/// Which devices hold a filesystem with a trustworthy ctime (one `statfs` per device).
#[derive(Default)]
struct FsTrust {
    seen: Vec<(u64, bool)>,
}

// Only consulted where directory keys exist (unix).
#[cfg_attr(not(unix), allow(dead_code))]
impl FsTrust {
    fn trusted(&mut self, dev: u64, path: &Path) -> bool {
        if let Some(&(_, ok)) = self.seen.iter().find(|(d, _)| *d == dev) {
            return ok;
        }
        let ok = fs_keeps_ctime(path);
        if !ok {
            tracing::debug!(
                "walk cache not used below {}: filesystem type not known to keep a local ctime",
                path.display()
            );
        }
        self.seen.push((dev, ok));
        ok
    }
}

/// `statfs` magic numbers of filesystems whose ctime is kept by the local kernel.
#[cfg(target_os = "linux")]
const TRUSTED_FS: &[u64] = &[
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0xF2F5_2010, // f2fs
    0x2FC1_2FC1, // zfs
    0xCA45_1A4E, // bcachefs
    0x794C_7630, // overlayfs
];

#[cfg(target_os = "linux")]
fn fs_keeps_ctime(path: &Path) -> bool {
    stockade_sys::fs::statfs_magic(path).is_ok_and(|magic| TRUSTED_FS.contains(&magic))
}

#[cfg(not(target_os = "linux"))]
fn fs_keeps_ctime(_path: &Path) -> bool {
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    /// A child directory that is not protected (descended into).
    SubDir,
    /// A protected name.
    Protected(FoundKind),
}

impl EntryKind {
    fn code(self) -> u8 {
        match self {
            EntryKind::SubDir => 0,
            EntryKind::Protected(FoundKind::Dir) => 1,
            EntryKind::Protected(FoundKind::Symlink) => 2,
            EntryKind::Protected(FoundKind::Other) => 3,
        }
    }

    fn from_code(c: u8) -> Option<EntryKind> {
        Some(match c {
            0 => EntryKind::SubDir,
            1 => EntryKind::Protected(FoundKind::Dir),
            2 => EntryKind::Protected(FoundKind::Symlink),
            3 => EntryKind::Protected(FoundKind::Other),
            _ => return None,
        })
    }
}

struct DirRec {
    /// `None`: never reused (incomplete listing, untrusted filesystem, ...).
    key: Option<DirKey>,
    first: usize,
    count: usize,
}

struct Entry {
    kind: EntryKind,
    /// Index of the child directory's record, or [`NONE`].
    child: u32,
    name_off: usize,
    name_len: usize,
}

/// All recorded directories of one root, in walk order (the root first). Entry names are ranges
/// of `names` (an arena while walking, the file's bytes once loaded).
struct Snapshot {
    start_ns: i128,
    dirs: Vec<DirRec>,
    entries: Vec<Entry>,
    names: Vec<u8>,
}

impl Snapshot {
    fn new(start_ns: i128) -> Snapshot {
        Snapshot {
            start_ns,
            dirs: Vec::new(),
            entries: Vec::new(),
            names: Vec::new(),
        }
    }

    fn name(&self, e: &Entry) -> &[u8] {
        self.names
            .get(e.name_off..e.name_off + e.name_len)
            .unwrap_or(&[])
    }

    /// Record index by `(dev, ino)`, to find a directory that moved.
    fn index_by_id(&self) -> HashMap<(u64, u64), u32> {
        self.dirs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some(((d.key?.dev, d.key?.ino), u32::try_from(i).ok()?)))
            .collect()
    }

    fn push_entry(&mut self, kind: EntryKind, name: &[u8]) -> u32 {
        let name_off = self.names.len();
        self.names.extend_from_slice(name);
        self.entries.push(Entry {
            kind,
            child: NONE,
            name_off,
            name_len: name.len(),
        });
        u32::try_from(self.entries.len() - 1).unwrap_or(NONE)
    }
}

/// A fast 64-bit checksum against truncated or corrupted files (not against forgery: the file is
/// out of the sandbox's reach).
fn checksum(b: &[u8]) -> u64 {
    const K: u64 = 0x9FB2_1C65_1E98_DF25;
    let mut h: u64 = 0x243F_6A88_85A3_08D3 ^ (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
    h ^= h >> 32;
    h.wrapping_mul(K) ^ (h >> 29)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Option<()> {
    out.extend_from_slice(&u32::try_from(b.len()).ok()?.to_le_bytes());
    out.extend_from_slice(b);
    Some(())
}

fn serialize(s: &Snapshot, root: &[u8], names: &[&[u8]]) -> Option<Vec<u8>> {
    let mut out =
        Vec::with_capacity(HEADER_LEN + s.dirs.len() * 33 + s.entries.len() * 9 + s.names.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // checksum, filled in below
    let start_sec = i64::try_from(s.start_ns.div_euclid(1_000_000_000)).ok()?;
    let start_nsec = s.start_ns.rem_euclid(1_000_000_000) as u32;
    out.extend_from_slice(&start_sec.to_le_bytes());
    out.extend_from_slice(&start_nsec.to_le_bytes());
    put_bytes(&mut out, root)?;
    out.extend_from_slice(&u32::try_from(names.len()).ok()?.to_le_bytes());
    for n in names {
        put_bytes(&mut out, n)?;
    }
    out.extend_from_slice(&u32::try_from(s.dirs.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&u32::try_from(s.entries.len()).ok()?.to_le_bytes());
    for d in &s.dirs {
        let k = d.key.unwrap_or(DirKey {
            dev: 0,
            ino: 0,
            ctime_sec: 0,
            ctime_nsec: 0,
        });
        out.push(u8::from(d.key.is_some()));
        out.extend_from_slice(&k.dev.to_le_bytes());
        out.extend_from_slice(&k.ino.to_le_bytes());
        out.extend_from_slice(&k.ctime_sec.to_le_bytes());
        out.extend_from_slice(&k.ctime_nsec.to_le_bytes());
        out.extend_from_slice(&u32::try_from(d.count).ok()?.to_le_bytes());
    }
    for e in &s.entries {
        out.push(e.kind.code());
        out.extend_from_slice(&e.child.to_le_bytes());
        put_bytes(&mut out, s.name(e))?;
        if out.len() as u64 > MAX_CACHE_BYTES {
            return None;
        }
    }
    if out.len() as u64 > MAX_CACHE_BYTES {
        return None;
    }
    let sum = checksum(&out[HEADER_LEN..]);
    out[12..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    Some(out)
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.arr().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.arr().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.arr().map(i64::from_le_bytes)
    }
    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
}

/// Parse a cache file for `root` and `names`; `None` if it is not one (any error).
fn parse(buf: Vec<u8>, root: &[u8], names: &[&[u8]]) -> Option<Snapshot> {
    let mut r = Reader { b: &buf, pos: 0 };
    if r.take(8)? != MAGIC || r.u32()? != FORMAT_VERSION {
        return None;
    }
    let sum = r.u64()?;
    if checksum(buf.get(HEADER_LEN..)?) != sum {
        return None;
    }
    let start_sec = r.i64()?;
    let start_nsec = r.u32()?;
    if start_nsec >= 1_000_000_000 {
        return None;
    }
    if r.bytes()? != root {
        return None;
    }
    let n = r.len()?;
    if n != names.len() {
        return None;
    }
    for want in names {
        if r.bytes()? != *want {
            return None;
        }
    }
    let ndirs = r.len()?;
    let nentries = r.len()?;
    // Each record takes at least 33 bytes and each entry 9: refuse counts the file cannot hold
    // before allocating for them.
    let rest = buf.len() - r.pos;
    if ndirs.checked_mul(33)? > rest || nentries.checked_mul(9)? > rest {
        return None;
    }
    let mut dirs = Vec::with_capacity(ndirs);
    let mut first = 0usize;
    for _ in 0..ndirs {
        let valid = r.u8()?;
        let key = DirKey {
            dev: r.u64()?,
            ino: r.u64()?,
            ctime_sec: r.i64()?,
            ctime_nsec: r.u32()?,
        };
        let count = r.len()?;
        let key = match valid {
            0 => None,
            1 => Some(key),
            _ => return None,
        };
        dirs.push(DirRec { key, first, count });
        first = first.checked_add(count)?;
    }
    if first != nentries {
        return None;
    }
    let mut entries = Vec::with_capacity(nentries);
    for _ in 0..nentries {
        let kind = EntryKind::from_code(r.u8()?)?;
        let child = r.u32()?;
        if child != NONE && child as usize >= ndirs {
            return None;
        }
        let name_len = r.len()?;
        let name_off = r.pos;
        r.take(name_len)?;
        entries.push(Entry {
            kind,
            child,
            name_off,
            name_len,
        });
    }
    if r.pos != buf.len() || dirs.is_empty() {
        return None;
    }
    Some(Snapshot {
        start_ns: start_sec as i128 * 1_000_000_000 + start_nsec as i128,
        dirs,
        entries,
        names: buf,
    })
}

fn load(file: &Path, root: &[u8], names: &[&[u8]]) -> Option<Snapshot> {
    let mut opts = fs::OpenOptions::new();
    opts.read(true);
    // Not through a symlink (defence in depth: nothing in the state directory should be one).
    #[cfg(target_os = "linux")]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
    let f = match opts.open(file) {
        Ok(f) => f,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!("walk cache {} not readable: {e}", file.display());
            }
            return None;
        }
    };
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let len = meta.len();
    if len > MAX_CACHE_BYTES {
        tracing::debug!("walk cache {} too large, ignored", file.display());
        return None;
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).ok()?);
    f.take(MAX_CACHE_BYTES).read_to_end(&mut buf).ok()?;
    let s = parse(buf, root, names);
    if s.is_none() {
        tracing::debug!(
            "walk cache {} unusable (other version, root or names, or corrupt), ignored",
            file.display()
        );
    }
    s
}

static TMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Write the snapshot atomically. `Ok(false)`: too large, not written.
fn store(file: &Path, s: &Snapshot, root: &[u8], names: &[&[u8]]) -> io::Result<bool> {
    let Some(bytes) = serialize(s, root, names) else {
        tracing::debug!("walk cache for {} too large, not written", file.display());
        return Ok(false);
    };
    let dir = file
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "cache file has no parent"))?;
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let res = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| fs::rename(&tmp, file));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    prune(dir);
    Ok(true)
}

/// Keep at most [`MAX_CACHE_FILES`] cache files, and no temporary file older than an hour.
fn prune(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, PathBuf)> = Vec::new();
    let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
    for ent in rd.flatten() {
        let Ok(mtime) = ent.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        let name = ent.file_name();
        let name = name.as_encoded_bytes();
        if name.starts_with(b".tmp-") {
            if mtime < hour_ago {
                let _ = fs::remove_file(ent.path());
            }
        } else if name.ends_with(b".bin") {
            files.push((mtime, ent.path()));
        }
    }
    if files.len() > MAX_CACHE_FILES {
        files.sort();
        for (_, p) in &files[..files.len() - MAX_CACHE_FILES] {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(all(test, unix))]
#[path = "walk_cache_tests.rs"]
mod tests;
