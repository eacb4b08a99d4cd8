//! The write gate's judge: which write-intent operations of the sandboxed command touch
//! something that makes a program run later outside the sandbox.
//!
//! The mechanism (`stockade_sys::fsgate`, a seccomp user-notification supervisor) asks
//! [`Protector::check`] about every write-intent call *before* it performs the call itself, with
//! absolute real paths (the parent resolved by the kernel from a descriptor, the final name
//! appended). This module only decides; it is platform-neutral std code. One [`Protector`] per
//! run (nothing is cached across runs), shared by every supervisor thread.
//!
//! # Rules
//!
//! Paths that are not beneath a writable root are allowed (Landlock and the mounts decide
//! there). Beneath one:
//!
//! 1. **Any-depth names** other than `.git` (`filesystem.protected_names` entries without `/`,
//!    e.g. a user's `.hg`): the entry and everything beneath it, at any depth: every operation
//!    refused.
//! 2. **Root-scoped names** (entries with a `/`: `/.mcp.json`, `/.vscode/tasks.json`, ...; the
//!    list and what runs from each are [`crate::model::WHAT_RUNS`]) at the workspace root, at
//!    each writable root and at the root of every repository (a directory holding a `.git`
//!    entry, also one created during the run), never deeper: creating, writing, removing,
//!    renaming from or onto, linking, changing metadata of the entry or anything beneath it is
//!    refused, whether or not it existed at launch; so is moving, removing or replacing a
//!    directory between the root and the entry (`.vscode` for `.vscode/tasks.json`).
//! 3. **Gitdirs that existed at launch** — a `.git` directory (any depth), the gitdir a `.git`
//!    file or symlink names, a bare repository (a directory holding `HEAD`, `objects/` and
//!    `refs/`), and the common directory of any of them; "existed at launch" means its birth
//!    time (`statx` btime) is older than the run's start, or unknown:
//!    * `git.mode = "read-only"`: every operation at or beneath it is refused.
//!    * `"commit"`: exactly what makes git run code or redirects it is refused —
//!      [`gitmeta::GITDIR_FIXED`] (`config`, `config.worktree`, `hooks/`, `info/attributes`,
//!      `commondir`, `gitdir`, `objects/info/alternates`, ...) at or beneath, in the gitdir and in
//!      every `modules/**/` directory that existed at launch, [`gitmeta::WORKTREE_FIXED`] in
//!      every `worktrees/<name>/` that existed at launch; and moving or removing the gitdir or
//!      a directory holding such an entry (`info/`, `objects/info/`, `worktrees/<name>/`). The
//!      rest (objects, refs, index, logs, `packed-refs`, rebase state, new worktrees and
//!      submodules) is writable — except that a gitdir known by its shape only (a `.git`
//!      file's gitdir, a bare repository; not snapshotted) cannot have its `HEAD` removed or
//!      renamed away, nor its `objects`/`refs` moved or removed: unshaped in one run, its hooks
//!      would be unrecognised in the next.
//!    * `"commit"`, for a repository the launch did not snapshot (everything below a writable
//!      root's top level, found lazily): objects that existed at launch (loose objects and
//!      `objects/pack/pack-*` files born before the run) cannot be removed, renamed, renamed
//!      onto, truncated or opened for writing, nor can `objects/pack` or `objects/xx` be
//!      renamed; new objects can. Cost for `git gc`/`prune`/`repack` there: the new pack is
//!      written, the old packs and unreachable loose objects stay (git warns `unable to unlink`),
//!      so the store does not shrink until gc runs on the host; history is never lost. Ref
//!      values of such a repository are not recorded: a deleted branch's commits stay in the
//!      store (`git fsck --lost-found`).
//!    * The `.git` entry of a launch repository itself (directory, file or symlink) cannot be
//!      written, removed or replaced in either mode; a new `.git` (nested `git init`, a
//!      prepared directory renamed to `.git`) can: a gitdir born during the run is the post-run
//!      check's (issue 12 item 3; [`Protector::git_relevant`] says which created names its log
//!      needs).
//! 4. **Paths a launch repository's configuration names** ([`gitmeta::protected_paths`]:
//!    `core.hooksPath`, includes, `core.fsmonitor`, `core.sshCommand`, `credential.helper`,
//!    drivers and filters, ..., also from the user's and the system's configuration), wherever
//!    they point inside a writable root: the path and everything beneath it refused for every
//!    operation; its ancestors below the repository root (or below the writable root, for a
//!    path outside the work tree) cannot be moved, removed or replaced. A protected symlink's
//!    target is protected too. The repository's own work tree root and its ancestors below the
//!    writable root cannot be moved once the judge has looked at it (nor can the root being
//!    renamed, whose `.git` the rename's own probe finds).
//! 5. **Hard links**: linking *from* a protected path is refused; writing to or changing the
//!    metadata of a regular file with more than one link is refused when its inode is one of the
//!    protected files (fixed entries, hooks, config-named files; a protected directory's
//!    entries up to 256) of a launch repository the judge has looked at.
//!
//! # Why this is sound
//!
//! * Complete mediation is the mechanism's: every name-creating, name-removing and
//!   content-changing call reaches [`Protector::check`] first, with the *resolved* path (a
//!   symlinked ancestor such as `ws/link -> ws/.git` arrives as `ws/.git/...`).
//! * Names are compared as bytes, never through UTF-8. A path that is not absolute and
//!   normalised (`.`, `..`, `//`) is refused, not guessed at.
//! * Repositories are found lazily: each call probes the directories between its writable root
//!   and the target (`.git` entry; bare markers) — no walk at launch. The probes are cached by
//!   path for the run, and a cache entry can go stale only when a directory gains or loses a
//!   `.git`, `HEAD`, `objects` or `refs` entry, or when a directory is moved. Inside the sandbox
//!   both happen only through calls that reach `check` first: a create, remove, link or rename
//!   whose final name is one of those marks its parent directory, and every rename marks its
//!   source and destination subtree, "probe live" *before* the call is performed and for the
//!   rest of the run. A lookup consults the marks before the cache, so a probe that raced with
//!   the call and cached the old state is never used afterwards. Marks are bounded
//!   (65,536); beyond that the cache is off for the run (slower, still sound). Repositories the
//!   *host* creates between runs are found by the next run (a fresh `Protector`; nothing is
//!   cached across runs).
//! * Launch status is the gitdir's birth time, which no unprivileged call can set and which a
//!   rename keeps: a moved launch repository stays a launch repository; a copy is a new one
//!   (post-run check). A directory that becomes a repository during the run by gaining
//!   `HEAD`/`objects`/`refs` is judged by the post-run check (those creations are
//!   [`Protector::git_relevant`]); if it is older than the run it is treated as a launch gitdir
//!   from then on (stricter).
//! * A launch repository's protected set is read from its configuration the first time a call
//!   touches its tree; the configuration is itself protected, so it cannot change under the
//!   cache. A configuration that cannot be read refuses every write beneath the repository.
//!
//! # Limits
//!
//! * A repository below a writable root's top that no call has touched yet is unknown to the
//!   judge: what its configuration names *outside its own work tree* (an absolute or `../`
//!   `core.hooksPath`, an include elsewhere) is not protected until a call beneath the
//!   repository loads it, and a hard link the host made to one of its protected files (or to
//!   any repository's protected file, from outside the repositories looked at) is not
//!   recognised. Relative paths inside the work tree (the usual `.husky/_`, `tools/fsm.sh`) are
//!   always found, because the repository root is an ancestor of the target.
//! * Moving a directory that (unknown to the judge) holds a launch repository is allowed; the
//!   repository is re-derived at its new path (live probes below the rename's destination), so
//!   only its absolute config-named paths (above) are affected.
//! * A repository the host creates in the workspace *while* a run is going on may be missed in
//!   directories the run already looked at.
//! * On a filesystem without birth times every gitdir counts as existing at launch: a nested
//!   `git init` there cannot write its `config`/`hooks` in commit mode.
//! * Submodule gitdirs are matched by suffix (`modules/<any>/config`), so a submodule branch or
//!   ref named like a fixed entry (`refs/heads/config`) cannot be written either.
//!
//! * Names are compared byte for byte. In a case-folding directory (ext4 `casefold`, which the
//!   owner can set on an *empty* directory of a filesystem made with that feature) `.GIT` or
//!   `.Claude` is what host tools open as `.git`/`.claude`; only new directories can be made
//!   so, which makes such a repository one created during the run (post-run check), but a
//!   root-scoped or any-depth agent config in such a directory is not recognised.
//! * Cost to workflows: a tree holding a launch repository cannot be removed inside (its
//!   `config`, `hooks/` and, unless snapshotted, objects stay), a known launch repository cannot
//!   be moved, `git worktree remove`/`prune` of a launch worktree fails; a package that ships a
//!   `.claude`/`.codex`/`.agents`/`.stockade` directory cannot be unpacked (those names are
//!   any-depth; `/.claude` instead makes one root-scoped).
//! * A directory that holds `HEAD`, `objects/` and `refs/` counts as a bare repository even if it
//!   is an ordinary directory that happens to (its `config` and `hooks/` are then protected).
//!
//! # Using it (the adapter in the Linux tier)
//!
//! Build it on the host before launch — [`Protector::new`] reads the user's git configuration,
//! which `deny_read` masks inside — from [`ProtectorInput::from_plan`] (the plan, the policy's
//! `filesystem.protected_names`, the run's start time taken before the command starts), and
//! share it (`Arc`) with every supervisor thread. Call [`Protector::check`] before performing
//! each write-intent call; refuse with an errno of the adapter's choice (`EROFS` keeps the
//! messages of the read-only mounts, e.g. git's "Read-only file system") and report the
//! [`Denial`] (its `Display` is the one-line message). Record created names for which
//! [`Protector::git_relevant`] holds for the post-run check.
//!
//! # Cost
//!
//! Measured with `cargo test --release -p stockade-policy --lib -- --ignored --nocapture
//! protect_bench` (2-core shared VM, ext4, a repository at the root, target at depth 10,
//! warm cache; median of 200 batch means; six runs, while other builds shared the machine):
//! create 0.7–1.1 µs, open-for-write 2.7–3.6 µs (one `lstat` for the link count), rename
//! 8.1–10.7 µs (an `lstat` of both names, two live-probe marks; 5.4 µs when the names repeat),
//! create in `.git/objects` 1.0–1.5 µs, a refused hook 1.0–1.7 µs; the first call of a run,
//! which loads the repository's protected set, 0.34–0.5 ms (once per repository).

use crate::gitmeta::{self, ProtectedEntry, GITDIR_FIXED, WORKTREE_FIXED};
use crate::model::{GitMode, NameScope, ProtectedName};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// What a name-creating call creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKind {
    /// A regular file (`open` with `O_CREAT` of a missing name).
    File,
    /// A directory (`mkdir`).
    Dir,
    /// A symbolic link (the link's own name).
    Symlink,
    /// A device node or FIFO (`mknod`).
    Node,
    /// A unix socket (`bind`).
    Socket,
}

/// Which metadata a call changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// `chmod`.
    Mode,
    /// `chown`.
    Owner,
    /// `utime*`.
    Times,
    /// `setxattr`/`removexattr`.
    Xattr,
    /// `truncate`/`ftruncate`.
    Truncate,
}

/// One write-intent operation, as the supervisor resolved it: absolute real paths (the parent
/// resolved by the kernel, the final name appended; never followed through a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// A new name.
    Create {
        /// The name created.
        path: &'a Path,
        /// What it is.
        kind: CreateKind,
    },
    /// An existing object opened for writing (also `O_APPEND`).
    OpenWrite {
        /// The object.
        path: &'a Path,
        /// With `O_TRUNC`.
        trunc: bool,
    },
    /// `unlink`/`rmdir`.
    Remove {
        /// The name removed.
        path: &'a Path,
        /// `rmdir` (or `AT_REMOVEDIR`).
        dir: bool,
    },
    /// `rename*`.
    Rename {
        /// The old name.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
        /// `RENAME_EXCHANGE`: both names stay, their objects swap.
        exchange: bool,
    },
    /// A hard link.
    Link {
        /// The existing object.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
    },
    /// A metadata change, path- or fd-based.
    SetAttr {
        /// The object.
        path: &'a Path,
        /// What changes.
        what: AttrKind,
    },
}

/// Why an operation was refused: one line for stderr, fields for the JSON result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The path the operation named that was refused (absolute).
    pub path: PathBuf,
    /// The same for a terminal: relative to the workspace when inside it, control characters
    /// escaped.
    pub shown: String,
    /// `create`, `write`, `remove`, `rename`, `link`, `chmod`, ...
    pub action: &'static str,
    /// Which protected entry, and what would run from it.
    pub reason: String,
    /// How the user allows it.
    pub remedy: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused: {} {} — {}; {}",
            self.action,
            escape_str(&self.shown),
            escape_str(&self.reason),
            escape_str(&self.remedy)
        )
    }
}

/// `path` for a terminal: lossy UTF-8 with every control character escaped.
fn escape_path(path: &Path) -> String {
    escape_str(&path.to_string_lossy())
}

/// `s` with every control character (C0, DEL, C1, bidi controls, line separators) written as
/// `\u{XX}`: a path the command chose can never carry a terminal control sequence.
fn escape_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control()
            || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// What a [`Protector`] is built from (see [`ProtectorInput::from_plan`]).
#[derive(Debug, Clone)]
pub struct ProtectorInput {
    /// Canonical writable roots.
    pub writable_roots: Vec<PathBuf>,
    /// Canonical workspace.
    pub workspace: PathBuf,
    /// `git.mode`.
    pub git_mode: GitMode,
    /// `filesystem.protected_names`, parsed.
    pub names: Vec<ProtectedName>,
    /// Common directories whose history the launch snapshotted (their objects need no
    /// protection from the gate).
    pub snapshotted: Vec<PathBuf>,
    /// When the run started: objects and gitdirs born before it existed at launch.
    pub run_start: SystemTime,
}

impl ProtectorInput {
    /// The input for `plan`, with the policy's `filesystem.protected_names` entries.
    pub fn from_plan(
        plan: &crate::plan::Plan,
        protected_names: &[String],
        run_start: SystemTime,
    ) -> Result<ProtectorInput, ProtectError> {
        let names = crate::model::parse_protected_names(protected_names)
            .map_err(|(entry, reason)| ProtectError::BadName { entry, reason })?;
        Ok(ProtectorInput {
            writable_roots: plan.writable_roots.clone(),
            workspace: plan.workspace.clone(),
            git_mode: plan.git_mode,
            names,
            snapshotted: plan.git_repos.iter().map(|r| r.common.clone()).collect(),
            run_start,
        })
    }
}

/// Why a [`Protector`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    /// A `filesystem.protected_names` entry does not parse.
    #[error("filesystem.protected_names entry {entry:?} is invalid: {reason}")]
    BadName {
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The user's git configuration could not be read.
    #[error(transparent)]
    GitMeta(#[from] crate::gitmeta::GitMetaError),
}

/// Final names whose creation, removal or renaming can make a directory a repository (or stop
/// it being one): the directory holding them is never answered from the cache again.
const GIT_MARKERS: &[&[u8]] = &[b".git", b"HEAD", b"objects", b"refs"];

/// Most directories whose probe results are cached (then the cache starts over).
const MAX_CACHED_DIRS: usize = 1 << 17;
/// Most directories marked "probe live" (renames, git markers); beyond it the cache is off for
/// the rest of the run (sound, slower).
const MAX_HOT_MARKS: usize = 1 << 16;
/// Most entries of one protected directory (a hooks directory) whose inodes are recorded.
const MAX_DIR_ENTRIES: usize = 256;

/// A small, fast, non-cryptographic hasher (FxHash) for path bytes: the keys are chosen by the
/// sandboxed command, which can at worst slow down its own supervisor.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<Fx>>;

/// A gitdir found by a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Gitdir {
    /// Its real path.
    path: PathBuf,
    /// It existed when the run started (its birth time is older, or unknown). A gitdir born
    /// during the run is the post-run check's (issue 12 item 3), not the gate's.
    launch: bool,
}

/// What a probe of one directory found (cached by path; see the module doc for why a cache
/// entry can never hide a repository).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DirInfo {
    /// It holds a `.git` entry (directory, file or symlink): a repository's work tree root.
    dot_git: bool,
    /// That `.git` entry existed when the run started.
    dot_git_launch: bool,
    /// The `.git` entry is a file or symlink: the gitdir it names (if usable).
    pointed: Option<Gitdir>,
    /// The `.git` entry is a directory: whether it existed at launch.
    dot_git_dir: Option<Gitdir>,
    /// The directory itself looks like a bare repository (`HEAD`, `objects/`, `refs/`).
    bare: Option<Gitdir>,
}

/// Live-probe marks on a path.
#[derive(Debug, Clone, Copy, Default)]
struct Hot {
    /// The directory itself is probed live (a git marker was created, removed or renamed in it).
    dir: bool,
    /// It and everything beneath it are probed live (a rename's source or destination).
    subtree: bool,
}

/// A path protected because a repository's configuration names it (or a fixed entry of one).
#[derive(Debug, Clone)]
struct Named {
    reason: Arc<str>,
    /// The entry itself (for an ancestor mark, the protected entry it is an ancestor of).
    entry: PathBuf,
}

/// What a repository that existed at launch contributes, computed once per gitdir.
#[derive(Debug)]
struct RepoData {
    /// Why its protected set could not be computed (then every write beneath its work tree is
    /// refused).
    error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    dirs: FxMap<Arc<DirInfo>>,
    hot: FxMap<Hot>,
    cache_off: bool,
    /// Repositories whose protected set is loaded, by (work tree, gitdir): a gitdir used from
    /// another work tree (a `.git` file naming it) protects paths relative to that one too.
    repos: HashMap<(PathBuf, PathBuf), Arc<RepoData>>,
    /// Config-named and fixed protected paths (at or beneath is refused).
    named: FxMap<Named>,
    /// Strict ancestors of protected entries and of launch repositories (below the repository
    /// root, or the writable root): no rename or removal.
    ancestors: FxMap<Named>,
    /// Gitdirs named by `.git` files and symlinks, and their common directories.
    gitdirs: FxMap<bool>,
    /// (dev, inode) of the protected files of every launch repository looked at.
    inodes: HashMap<(u64, u64), Named>,
}

/// How an operation uses one of its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Create,
    Write { trunc: bool },
    Remove { dir: bool },
    RenameFrom,
    RenameTo,
    LinkFrom,
    Attr(AttrKind),
}

impl Act {
    /// Moving or removing this path would move or remove what is beneath it.
    fn moves(self) -> bool {
        matches!(self, Act::Remove { .. } | Act::RenameFrom | Act::RenameTo)
    }

    fn word(self) -> &'static str {
        match self {
            Act::Create => "create",
            Act::Write { trunc: true } => "truncate",
            Act::Write { trunc: false } => "write",
            Act::Remove { .. } => "remove",
            Act::RenameFrom => "rename",
            Act::RenameTo => "rename onto",
            Act::LinkFrom => "hard-link",
            Act::Attr(AttrKind::Mode) => "chmod",
            Act::Attr(AttrKind::Owner) => "chown",
            Act::Attr(AttrKind::Times) => "set times of",
            Act::Attr(AttrKind::Xattr) => "set extended attributes of",
            Act::Attr(AttrKind::Truncate) => "truncate",
        }
    }
}

/// The judge. `Send + Sync`: one per run, shared by every supervisor thread.
#[derive(Debug)]
pub struct Protector {
    roots: Vec<PathBuf>,
    /// Where root-scoped names apply besides repository roots: the writable roots and the
    /// workspace.
    anchors: Vec<PathBuf>,
    workspace: PathBuf,
    mode: GitMode,
    /// `.git` is in `protected_names`.
    git: bool,
    /// Other any-depth names.
    any_depth: Vec<ProtectedName>,
    /// Root-scoped names.
    rooted: Vec<ProtectedName>,
    snapshotted: Vec<PathBuf>,
    run_start: SystemTime,
    /// What the user's and the system's git configuration name (relative to a work tree, or
    /// absolute).
    user_entries: Vec<ProtectedEntry>,
    state: RwLock<State>,
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn path_of(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// `rel` (components joined by `/`) is `name` or beneath it.
fn at_or_beneath(rel: &[u8], name: &[u8]) -> bool {
    rel.starts_with(name) && (rel.len() == name.len() || rel[name.len()] == b'/')
}

/// `rel` is a strict ancestor of `name` (`rel` empty: the root itself).
fn strict_ancestor(rel: &[u8], name: &[u8]) -> bool {
    rel.is_empty() || (name.len() > rel.len() && at_or_beneath(name, rel))
}

/// Born before `start` (or birth time unknown: treated as existing at launch, fail closed).
fn born_before(m: &fs::Metadata, start: SystemTime) -> bool {
    match m.created() {
        Ok(t) => t < start,
        Err(_) => true,
    }
}

/// A path the judge can reason about: absolute, no empty, `.` or `..` component.
fn normal(p: &[u8]) -> bool {
    p.first() == Some(&b'/')
        && (p.len() == 1
            || (p.last() != Some(&b'/')
                && p[1..]
                    .split(|&b| b == b'/')
                    .all(|c| !c.is_empty() && c != b"." && c != b"..")))
}

fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20)
}

/// The bytes of the prefix of `b` that ends at `end` (`0`: the root directory `/`).
fn prefix(b: &[u8], end: usize) -> &[u8] {
    if end == 0 {
        b"/"
    } else {
        &b[..end]
    }
}

/// The part of `b` after the prefix ending at `end` (empty when it is `b` itself).
fn rest(b: &[u8], end: usize) -> &[u8] {
    if end >= b.len() {
        &[]
    } else {
        &b[end + 1..]
    }
}

/// Which entry of `list` the gitdir-relative `rel` is at or beneath (`true`), or a strict
/// ancestor of (`false`).
fn match_fixed<'l>(rel: &[u8], list: &'l [(&str, &str)]) -> Option<(&'l str, &'l str, bool)> {
    let mut ancestor = None;
    for (entry, why) in list {
        let e = entry.as_bytes();
        if at_or_beneath(rel, e) {
            return Some((entry, why, true));
        }
        if ancestor.is_none() && strict_ancestor(rel, e) {
            ancestor = Some((*entry, *why, false));
        }
    }
    ancestor
}

/// Read a `.git` file's `gitdir: PATH` line (bounded), as bytes.
fn read_gitfile(file: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut buf = Vec::new();
    fs::File::open(file)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut buf)
        .ok()?;
    let line = buf.split(|&b| b == b'\n').next()?;
    let p = line.strip_prefix(b"gitdir:")?.trim_ascii();
    (!p.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(p)))
}

/// `p` as a real path: the longest existing prefix canonicalized, the rest appended (with `.`
/// components dropped).
fn real(p: &Path) -> PathBuf {
    let mut tail = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(c) = fs::canonicalize(cur) {
            let mut out = c;
            for t in tail.iter().rev() {
                out.push(t);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                cur = parent;
            }
            _ => return p.components().collect(),
        }
    }
}

impl Protector {
    /// Build the judge for one run. Reads the user's and the system's git configuration (do it
    /// before entering the sandbox, where `deny_read` masks `~/.gitconfig`).
    pub fn new(input: ProtectorInput) -> Result<Protector, ProtectError> {
        let user_entries = gitmeta::user_config_paths()?;
        Ok(Protector::with_user_entries(input, user_entries))
    }

    /// [`Protector::new`] with what the user's git configuration names given (tests, or a
    /// caller that read it already).
    pub fn with_user_entries(input: ProtectorInput, user_entries: Vec<ProtectedEntry>) -> Self {
        let git = input
            .names
            .iter()
            .any(|n| n.scope == NameScope::AnyDepth && n.path == ".git");
        let any_depth = input
            .names
            .iter()
            .filter(|n| n.scope == NameScope::AnyDepth && n.path != ".git")
            .cloned()
            .collect();
        let rooted = input
            .names
            .iter()
            .filter(|n| n.scope == NameScope::Root)
            .cloned()
            .collect();
        let mut anchors = input.writable_roots.clone();
        if !anchors.contains(&input.workspace)
            && input
                .writable_roots
                .iter()
                .any(|r| input.workspace.starts_with(r))
        {
            anchors.push(input.workspace.clone());
        }
        Protector {
            roots: input.writable_roots,
            anchors,
            workspace: input.workspace,
            mode: input.git_mode,
            git,
            any_depth,
            rooted,
            snapshotted: input.snapshotted,
            run_start: input.run_start,
            user_entries,
            state: RwLock::new(State::default()),
        }
    }

    /// Whether `op` may go ahead. Call it before performing the operation, for every
    /// write-intent call (it also keeps the cache honest: see the module doc).
    pub fn check(&self, op: &Op<'_>) -> Result<(), Denial> {
        match *op {
            Op::Create { path, .. } => {
                self.mark_marker(path);
                self.judge(path, Act::Create)
            }
            Op::OpenWrite { path, trunc } => {
                // A `.git` file rewritten can name another gitdir.
                self.mark_marker(path);
                let act = Act::Write { trunc };
                self.judge(path, act)?;
                self.link_check(path, act)
            }
            Op::Remove { path, dir } => {
                self.mark_marker(path);
                self.judge(path, Act::Remove { dir })
            }
            Op::Rename { from, to, exchange } => {
                self.mark(from, true);
                self.mark(to, true);
                self.mark_marker(from);
                self.mark_marker(to);
                self.judge(from, Act::RenameFrom)?;
                self.judge(to, Act::RenameTo)?;
                if exchange {
                    self.judge(from, Act::RenameTo)?;
                    self.judge(to, Act::RenameFrom)?;
                }
                Ok(())
            }
            Op::Link { from, to } => {
                self.mark_marker(to);
                self.judge(from, Act::LinkFrom)?;
                self.judge(to, Act::Create)
            }
            Op::SetAttr { path, what } => {
                let act = Act::Attr(what);
                self.judge(path, act)?;
                self.link_check(path, act)
            }
        }
    }

    /// Whether a created `path` matters to the post-run git check: beneath a `.git`, or named
    /// like a file that makes a directory a (bare) repository or makes git run code.
    pub fn git_relevant(path: &Path) -> bool {
        const NAMES: &[&[u8]] = &[
            b".git",
            b"HEAD",
            b"objects",
            b"refs",
            b"config",
            b"config.worktree",
            b"commondir",
            b"gitdir",
            b"hooks",
            b"attributes",
            b"alternates",
        ];
        let b = bytes(path);
        let mut comps = b.split(|&c| c == b'/').rev();
        let last = comps.next().unwrap_or_default();
        let parent = comps.next().unwrap_or_default();
        NAMES.contains(&last) || parent == b"hooks" || b.split(|&c| c == b'/').any(|c| c == b".git")
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn root_of(&self, b: &[u8]) -> Option<&PathBuf> {
        self.roots.iter().find(|r| {
            let rb = bytes(r);
            rb == b"/" || at_or_beneath(b, rb)
        })
    }

    /// Mark `p` (a rename's source or destination: `subtree`) or its parent (a git marker
    /// created or removed in it) to be probed live from now on.
    fn mark(&self, p: &Path, subtree: bool) {
        let target = if subtree { Some(p) } else { p.parent() };
        let Some(target) = target else { return };
        let b = bytes(target);
        if self.root_of(b).is_none() {
            return;
        }
        let mut st = self.write();
        if st.cache_off {
            return;
        }
        if !st.hot.contains_key(b) && st.hot.len() >= MAX_HOT_MARKS {
            st.cache_off = true;
            return;
        }
        let h = st.hot.entry(b.into()).or_default();
        h.dir |= !subtree;
        h.subtree |= subtree;
    }

    fn mark_marker(&self, p: &Path) {
        let name = p.file_name().map(OsStr::as_bytes).unwrap_or_default();
        if GIT_MARKERS.contains(&name) {
            self.mark(p, false);
        }
    }

    fn deny(&self, path: &Path, act: Act, reason: String, remedy: String) -> Denial {
        let shown = match path.strip_prefix(&self.workspace) {
            Ok(r) if !r.as_os_str().is_empty() => r,
            _ => path,
        };
        Denial {
            path: path.to_path_buf(),
            shown: escape_path(shown),
            action: act.word(),
            reason,
            remedy,
        }
    }

    fn git_remedy(&self) -> String {
        match self.mode {
            GitMode::ReadOnly => "git.mode is \"read-only\"; allow commits from your user config \
                                  (~/.config/stockade/config.toml) with [git] mode = \"commit\""
                .into(),
            GitMode::Commit => "it stays read-only in a repository that existed at launch; make \
                                this change on the host, outside Stockade (see docs/git.md)"
                .into(),
        }
    }

    /// The probe results of the directories `prefix(b, e)` for each `e` in `ends` (cached
    /// unless marked hot).
    fn infos(&self, b: &[u8], ends: &[usize], act: Act) -> Result<Vec<Arc<DirInfo>>, Denial> {
        let mut out: Vec<Option<Arc<DirInfo>>> = Vec::with_capacity(ends.len());
        let mut cacheable = Vec::with_capacity(ends.len());
        {
            let st = self.read();
            let mut hot_subtree = st.cache_off;
            for &e in ends {
                let p = prefix(b, e);
                let h = st.hot.get(p).copied().unwrap_or_default();
                hot_subtree |= h.subtree;
                let live = hot_subtree || h.dir;
                cacheable.push(!live);
                out.push(if live { None } else { st.dirs.get(p).cloned() });
            }
        }
        let mut fresh = Vec::new();
        for (i, &e) in ends.iter().enumerate() {
            if out[i].is_none() {
                let p = path_of(prefix(b, e));
                // The operation's own path (moved or removed): only a directory can hold a
                // repository (one `lstat` instead of two probes for a file).
                let own_non_dir =
                    e == b.len() && !fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
                let info = Arc::new(if own_non_dir {
                    DirInfo::default()
                } else {
                    self.probe(p)
                        .map_err(|e| self.unexaminable(path_of(b), p, act, &e))?
                });
                if cacheable[i] {
                    fresh.push((e, info.clone()));
                }
                out[i] = Some(info);
            }
        }
        if !fresh.is_empty() {
            let mut st = self.write();
            if st.dirs.len() + fresh.len() > MAX_CACHED_DIRS {
                st.dirs.clear();
            }
            for (e, info) in fresh {
                st.dirs.insert(prefix(b, e).into(), info);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn unexaminable(&self, path: &Path, dir: &Path, act: Act, e: &io::Error) -> Denial {
        self.deny(
            path,
            act,
            format!(
                "the gate cannot examine {} for a repository ({}), so nothing beneath it is \
                 written",
                escape_path(dir),
                crate::io_reason(e)
            ),
            "make it readable and searchable (chmod u+rx)".into(),
        )
    }

    /// One directory: its `.git` entry and whether it is a bare repository.
    fn probe(&self, dir: &Path) -> Result<DirInfo, io::Error> {
        let mut info = DirInfo::default();
        let dg = dir.join(".git");
        match fs::symlink_metadata(&dg) {
            Ok(m) => {
                info.dot_git = true;
                info.dot_git_launch = born_before(&m, self.run_start);
                if m.is_dir() {
                    info.dot_git_dir = Some(Gitdir {
                        path: dg,
                        launch: info.dot_git_launch,
                    });
                } else {
                    let target = if m.file_type().is_symlink() {
                        fs::canonicalize(&dg).ok()
                    } else {
                        read_gitfile(&dg).and_then(|t| fs::canonicalize(dir.join(t)).ok())
                    };
                    info.pointed = target.and_then(|t| {
                        let m = fs::metadata(&t).ok().filter(|m| m.is_dir())?;
                        Some(Gitdir {
                            launch: born_before(&m, self.run_start),
                            path: t,
                        })
                    });
                }
            }
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(e),
        }
        match fs::symlink_metadata(dir.join("HEAD")) {
            Ok(h) if !h.is_dir() => {
                let is_dir = |n: &str| fs::metadata(dir.join(n)).is_ok_and(|m| m.is_dir());
                if is_dir("objects") && is_dir("refs") {
                    let launch = fs::symlink_metadata(dir)
                        .map(|m| born_before(&m, self.run_start))
                        .unwrap_or(true);
                    info.bare = Some(Gitdir {
                        path: dir.to_path_buf(),
                        launch,
                    });
                }
            }
            Ok(_) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(info)
    }
}

/// A gitdir in a path's chain: where its prefix ends, and whether it existed at launch.
struct ChainGitdir {
    end: usize,
    launch: bool,
}

impl Protector {
    /// Judge one path of an operation.
    fn judge(&self, path: &Path, act: Act) -> Result<(), Denial> {
        let b = bytes(path);
        // First: `/elsewhere/../ws/.git` is lexically outside the roots.
        if !normal(b) {
            return Err(self.deny(
                path,
                act,
                "the gate was given a path that is not absolute and normalised".into(),
                "this is a Stockade bug; please report it".into(),
            ));
        }
        let Some(root) = self.root_of(b) else {
            return Ok(()); // Landlock and the mounts decide outside the writable roots.
        };
        let rb = bytes(root);
        let base = if rb == b"/" { 0 } else { rb.len() };
        // ends[j]: where the j-th prefix (the root, ..., the path itself) ends.
        let mut ends = Vec::with_capacity(16);
        ends.push(base);
        ends.extend((base + 1..b.len()).filter(|&i| b[i] == b'/'));
        if b.len() > base {
            ends.push(b.len());
        }
        let k = ends.len() - 1;
        let comp = |j: usize| &b[ends[j - 1] + 1..ends[j]];

        // Any-depth names other than `.git`: the entry and everything beneath it.
        for j in 1..=k {
            if let Some(n) = self.any_depth.iter().find(|n| comp(j) == n.path.as_bytes()) {
                return Err(self.deny(
                    path,
                    act,
                    format!(
                        "{} is a protected name{}",
                        n.entry,
                        n.what_runs().map(|w| format!(": {w}")).unwrap_or_default()
                    ),
                    name_remedy(n),
                ));
            }
        }

        // The directories probed: the strict ancestors, and the path itself when moving it
        // would move what it holds.
        let probed = if act.moves() { k + 1 } else { k };
        let infos = self.infos(b, &ends[..probed], act)?;

        // Repositories and gitdirs in the chain.
        let mut gitdirs: Vec<ChainGitdir> = Vec::new();
        let mut repo_roots: Vec<usize> = Vec::new();
        for (j, info) in infos.iter().enumerate() {
            if info.dot_git {
                repo_roots.push(ends[j]);
                let gd = info.dot_git_dir.as_ref().or(info.pointed.as_ref());
                if let Some(g) = gd.filter(|g| g.launch && self.git) {
                    self.load(path_of(prefix(b, ends[j])), &g.path, path, act)?;
                }
            }
            if let Some(g) = info.bare.as_ref().filter(|_| self.git) {
                if g.launch {
                    self.load(&g.path, &g.path, path, act)?;
                }
                gitdirs.push(ChainGitdir {
                    end: ends[j],
                    launch: g.launch,
                });
            }
        }
        if self.git {
            for j in 1..=k {
                if comp(j) != b".git" {
                    continue;
                }
                let parent = &infos[j - 1];
                if j == k {
                    // The `.git` entry itself (a directory, a `gitdir:` file or a symlink).
                    if parent.dot_git && parent.dot_git_launch {
                        return Err(self.deny(
                            path,
                            act,
                            "the .git entry of a repository that existed at launch".into(),
                            self.git_remedy(),
                        ));
                    }
                } else if let Some(g) = &parent.dot_git_dir {
                    if !gitdirs.iter().any(|c| c.end == ends[j]) {
                        gitdirs.push(ChainGitdir {
                            end: ends[j],
                            launch: g.launch,
                        });
                    }
                }
            }
            let st = self.read();
            for &e in &ends {
                if let Some(&launch) = st.gitdirs.get(prefix(b, e)) {
                    if !gitdirs.iter().any(|c| c.end == e) {
                        gitdirs.push(ChainGitdir { end: e, launch });
                    }
                }
            }
        }

        // A directory can gain an (empty) `.git` without a judged call: the run's filter does
        // not hand `mkdir` to the gate (an empty directory runs nothing). So where a root-scoped
        // name would start below a directory the cached probes call no repository root, that
        // directory is probed afresh — rare (only paths through such a name), and the cache can
        // then never hide a repository root from the rooted rule.
        let fresh: Vec<usize> = ends[..k]
            .iter()
            .copied()
            .filter(|e| !repo_roots.contains(e))
            .filter(|&e| {
                let rel = rest(b, e);
                self.rooted.iter().any(|n| {
                    let nb = n.path.as_bytes();
                    at_or_beneath(rel, nb)
                        || (act.moves() && !rel.is_empty() && strict_ancestor(rel, nb))
                })
            })
            .filter(|&e| fs::symlink_metadata(path_of(prefix(b, e)).join(".git")).is_ok())
            .collect();
        repo_roots.extend(fresh);
        self.rooted_rule(path, b, &repo_roots, act)?;

        // Gitdirs that existed at launch.
        for g in gitdirs.iter().filter(|g| g.launch) {
            let gp = path_of(prefix(b, g.end));
            let rel = rest(b, g.end);
            if self.mode == GitMode::ReadOnly {
                return Err(self.deny(
                    path,
                    act,
                    format!("inside the git metadata {}", escape_path(gp)),
                    self.git_remedy(),
                ));
            }
            self.gitdir_rules(path, gp, rel, act)?;
        }

        self.named_rule(path, b, &ends, act)
    }

    /// The commit-mode rules inside the launch gitdir `g`: its fixed code-running entries
    /// (also in `worktrees/*/` and `modules/**/`), and, when the launch did not snapshot it,
    /// its objects.
    fn gitdir_rules(&self, path: &Path, g: &Path, rel: &[u8], act: Act) -> Result<(), Denial> {
        let refuse = |entry: &str, why: &str| {
            self.deny(
                path,
                act,
                format!("{entry} of {}: {why}", escape_path(g)),
                self.git_remedy(),
            )
        };
        if let Some((entry, why, at)) = match_fixed(rel, GITDIR_FIXED) {
            if at || act.moves() {
                return Err(refuse(entry, why));
            }
        }
        // What makes a gitdir known without its `.git` name (a separate or bare gitdir is
        // recognised by `HEAD`, `objects/`, `refs/`): not moved away or removed (git itself
        // only renames onto `HEAD`). Else one run unshapes it, a later run writes its hooks
        // unrecognised, and a third restores the shape. A `.git` is known by its name, and a
        // snapshotted gitdir that lost its shape is restored right after the run.
        let by_shape =
            g.file_name() != Some(OsStr::new(".git")) && !self.snapshotted.iter().any(|s| s == g);
        let unshapes = by_shape
            && match rel {
                b"objects" | b"refs" => act.moves(),
                b"HEAD" => matches!(act, Act::RenameFrom | Act::Remove { .. }),
                _ => false,
            };
        if unshapes {
            return Err(refuse(
                std::str::from_utf8(rel).unwrap_or("HEAD"),
                "marks the directory as a gitdir (HEAD, objects, refs); moving it away would \
                 hide the gitdir's hooks and config from the gate",
            ));
        }
        let comps: Vec<&[u8]> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split(|&c| c == b'/').collect()
        };
        let old = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| born_before(&m, self.run_start));
        let join = |n: usize| {
            let mut p = g.to_path_buf();
            for c in &comps[..n] {
                p.push(OsStr::from_bytes(c));
            }
            p
        };
        match comps.first().copied() {
            // `worktrees/` and `modules/` hold the pointer files and configs of the linked
            // worktrees and submodules that existed at launch: not moved or replaced whole.
            Some(b"worktrees" | b"modules") if comps.len() == 1 && act.moves() && old(&join(1)) => {
                return Err(refuse(
                    if comps[0] == b"modules" {
                        "modules"
                    } else {
                        "worktrees"
                    },
                    "holds the gitdirs of submodules or linked worktrees (their config, hooks \
                     and pointer files)",
                ));
            }
            Some(b"worktrees") if comps.len() >= 2 && old(&join(2)) => {
                let sub = rest(rel, b"worktrees".len() + 1 + comps[1].len());
                if let Some((entry, why, at)) = match_fixed(sub, WORKTREE_FIXED) {
                    if at || act.moves() {
                        return Err(refuse(entry, why));
                    }
                }
            }
            Some(b"modules") => {
                // Module names may hold `/`: every split is a candidate module gitdir.
                let mut end = b"modules".len();
                for j in 2..=comps.len() {
                    end += 1 + comps[j - 1].len();
                    let sub = rest(rel, end);
                    if let Some((entry, why, at)) = match_fixed(sub, GITDIR_FIXED) {
                        if (at || act.moves()) && old(&join(j)) {
                            return Err(refuse(entry, why));
                        }
                    }
                }
            }
            Some(b"objects") if !self.snapshotted.iter().any(|s| s == g) => {
                self.history(path, g, &comps, act)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Objects that existed at launch in a repository the launch did not snapshot: no removal,
    /// rename (from or onto), truncation or write.
    fn history(&self, path: &Path, g: &Path, comps: &[&[u8]], act: Act) -> Result<(), Denial> {
        let hex = |c: &[u8]| c.iter().all(u8::is_ascii_hexdigit);
        let object = comps.len() == 3
            && ((comps[1].len() == 2 && hex(comps[1]) && hex(comps[2]))
                || (comps[1] == b"pack" && comps[2].starts_with(b"pack-")));
        let dir =
            comps.len() == 2 && (comps[1] == b"pack" || (comps[1].len() == 2 && hex(comps[1])));
        let applies = match act {
            // A hard link out of `objects/` would make the object writable under another name.
            Act::Remove { .. }
            | Act::Write { .. }
            | Act::Attr(AttrKind::Truncate)
            | Act::LinkFrom => object,
            Act::RenameFrom | Act::RenameTo => object || dir,
            _ => false,
        };
        if !applies {
            return Ok(());
        }
        match fs::symlink_metadata(path) {
            Ok(m) if born_before(&m, self.run_start) => Err(self.deny(
                path,
                act,
                format!(
                    "an object that existed at launch in {} (history of a repository the launch \
                     did not snapshot stays read-only; new objects are writable)",
                    escape_path(g)
                ),
                "run git gc / prune / repack on the host, outside Stockade".into(),
            )),
            _ => Ok(()),
        }
    }
}

fn name_remedy(n: &ProtectedName) -> String {
    format!(
        "allow it from your user config (~/.config/stockade/config.toml) with [filesystem] \
         protected_names = [\"!{}\"]",
        n.entry
    )
}

impl Protector {
    /// Root-scoped names at the workspace, each writable root and each repository root in the
    /// chain (`repo_roots`: where their prefixes of `b` end).
    fn rooted_rule(
        &self,
        path: &Path,
        b: &[u8],
        repo_roots: &[usize],
        act: Act,
    ) -> Result<(), Denial> {
        let anchors = self
            .anchors
            .iter()
            .map(|a| bytes(a))
            .filter(|a| *a == b"/" || at_or_beneath(b, a))
            .map(|a| if a == b"/" { 0 } else { a.len() });
        for e in anchors.chain(repo_roots.iter().copied()) {
            if e >= b.len() {
                continue; // the anchor itself
            }
            let rel = rest(b, e);
            for n in &self.rooted {
                let nb = n.path.as_bytes();
                if at_or_beneath(rel, nb) {
                    let what = n.what_runs().unwrap_or("a protected name");
                    return Err(self.deny(
                        path,
                        act,
                        format!(
                            "{} at {}: {what}",
                            n.entry,
                            escape_path(path_of(prefix(b, e)))
                        ),
                        name_remedy(n),
                    ));
                }
                if act.moves() && strict_ancestor(rel, nb) {
                    return Err(self.deny(
                        path,
                        act,
                        format!(
                            "it holds the protected {} (moving it would let it be replaced)",
                            n.entry
                        ),
                        name_remedy(n),
                    ));
                }
            }
        }

        Ok(())
    }

    /// Paths the configuration of a launch repository names, and their ancestors.
    fn named_rule(&self, path: &Path, b: &[u8], ends: &[usize], act: Act) -> Result<(), Denial> {
        let st = self.read();
        for &e in ends {
            if let Some(n) = st.named.get(prefix(b, e)) {
                return Err(self.deny(path, act, n.reason.to_string(), self.git_remedy()));
            }
        }
        if act.moves() {
            if let Some(n) = st.ancestors.get(b) {
                return Err(self.deny(
                    path,
                    act,
                    format!(
                        "it holds {} ({}); moving it would let that be replaced",
                        escape_path(&n.entry),
                        n.reason
                    ),
                    self.git_remedy(),
                ));
            }
        }
        Ok(())
    }
}

/// What loading one launch repository adds to the shared state.
#[derive(Default)]
struct Loaded {
    named: Vec<(PathBuf, Named)>,
    ancestors: Vec<(PathBuf, Named)>,
    inodes: Vec<((u64, u64), Named)>,
    gitdirs: Vec<(PathBuf, bool)>,
}

impl Protector {
    /// Load (once per gitdir) what the launch repository `gitdir` (work tree `worktree`)
    /// protects; refuse `act` on `path` if its configuration cannot be read.
    fn load(&self, worktree: &Path, gitdir: &Path, path: &Path, act: Act) -> Result<(), Denial> {
        let key = (worktree.to_path_buf(), gitdir.to_path_buf());
        let known = self.read().repos.get(&key).cloned();
        let data = match known {
            Some(d) => d,
            None => {
                let (data, add) = self.compute(worktree, gitdir);
                let mut st = self.write();
                for (p, n) in add.named {
                    st.named.insert(bytes(&p).into(), n);
                }
                for (p, n) in add.ancestors {
                    st.ancestors.entry(bytes(&p).into()).or_insert(n);
                }
                for (i, n) in add.inodes {
                    st.inodes.entry(i).or_insert(n);
                }
                for (p, launch) in add.gitdirs {
                    st.gitdirs.insert(bytes(&p).into(), launch);
                }
                st.repos
                    .entry(key)
                    .or_insert_with(|| Arc::new(data))
                    .clone()
            }
        };
        match &data.error {
            Some(e) => Err(self.deny(
                path,
                act,
                format!(
                    "the git configuration of {} cannot be read ({e}), so what it runs is unknown",
                    escape_path(gitdir)
                ),
                "make it readable (or remove what it includes) and run again".into(),
            )),
            None => Ok(()),
        }
    }

    fn compute(&self, worktree: &Path, gitdir: &Path) -> (RepoData, Loaded) {
        let mut add = Loaded::default();
        let entries = match gitmeta::repo_protected_paths(worktree, gitdir) {
            Ok(v) => v,
            Err(e) => {
                return (
                    RepoData {
                        error: Some(e.to_string()),
                    },
                    add,
                )
            }
        };
        let user = self.user_entries.iter().map(|e| ProtectedEntry {
            path: worktree.join(&e.path),
            reason: e.reason.clone(),
        });
        for e in entries.into_iter().chain(user) {
            self.register(&e.path, Arc::from(e.reason.as_str()), worktree, &mut add);
        }
        // The repository itself: no moving it (or a directory holding it) away.
        if let Some(root) = self.root_of(bytes(worktree)) {
            let why: Arc<str> = Arc::from(format!(
                "the repository {} that existed at launch",
                escape_path(worktree)
            ));
            for a in worktree
                .ancestors()
                .take_while(|a| a.starts_with(root) && *a != root)
            {
                add.ancestors.push((
                    a.to_path_buf(),
                    Named {
                        reason: why.clone(),
                        entry: worktree.to_path_buf(),
                    },
                ));
            }
        }
        if gitdir != worktree.join(".git") && gitdir != worktree {
            add.gitdirs.push((gitdir.to_path_buf(), true));
        }
        if let Some(common) = gitmeta::commondir(gitdir).and_then(|c| fs::canonicalize(c).ok()) {
            add.gitdirs.push((common, true));
        }
        (RepoData { error: None }, add)
    }

    /// One protected path of a launch repository: it (at or beneath), its ancestors below the
    /// repository root (or the writable root), its inode, a symlink's target, a directory's
    /// entries' inodes (bounded).
    fn register(&self, entry: &Path, reason: Arc<str>, worktree: &Path, add: &mut Loaded) {
        let own = match (entry.parent(), entry.file_name()) {
            (Some(parent), Some(name)) => real(parent).join(name),
            _ => real(entry),
        };
        let named = |p: &Path| Named {
            reason: reason.clone(),
            entry: p.to_path_buf(),
        };
        let limit = if own.starts_with(worktree) {
            Some(worktree.to_path_buf())
        } else {
            self.root_of(bytes(&own)).cloned()
        };
        // A named directory that is (or holds) a writable root (`core.worktree = /ws`, a hooks
        // path of `.`) cannot be protected whole without making the root read-only: its
        // entries (each hook name) are listed on their own; the plan warns about it.
        let holds_root = self.roots.iter().any(|r| r.starts_with(&own));
        if let Some(limit) = limit.as_ref().filter(|_| !holds_root) {
            if self.root_of(bytes(&own)).is_some() {
                add.named.push((own.clone(), named(&own)));
                for a in own
                    .ancestors()
                    .skip(1)
                    .take_while(|a| a.starts_with(limit) && a != limit)
                {
                    add.ancestors.push((a.to_path_buf(), named(&own)));
                }
            }
        }
        let Ok(m) = fs::symlink_metadata(&own) else {
            return;
        };
        let target = |p: &Path, add: &mut Loaded| {
            if let Ok(t) = fs::canonicalize(p) {
                if self.root_of(bytes(&t)).is_some() {
                    add.named.push((t.clone(), named(p)));
                }
                if let Ok(tm) = fs::metadata(&t) {
                    if tm.is_file() {
                        add.inodes.push(((tm.dev(), tm.ino()), named(p)));
                    }
                }
            }
        };
        if m.file_type().is_symlink() {
            target(&own, add);
        } else if m.is_file() {
            add.inodes.push(((m.dev(), m.ino()), named(&own)));
        } else if m.is_dir() {
            let Ok(rd) = fs::read_dir(&own) else { return };
            for d in rd.flatten().take(MAX_DIR_ENTRIES) {
                let p = d.path();
                match fs::symlink_metadata(&p) {
                    Ok(dm) if dm.file_type().is_symlink() => target(&p, add),
                    Ok(dm) if dm.is_file() => add.inodes.push(((dm.dev(), dm.ino()), named(&p))),
                    _ => {}
                }
            }
        }
    }

    /// A write through a hard link to a protected file of a launch repository looked at.
    fn link_check(&self, path: &Path, act: Act) -> Result<(), Denial> {
        if self.root_of(bytes(path)).is_none() || self.read().inodes.is_empty() {
            return Ok(());
        }
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && m.nlink() > 1 => {
                match self.read().inodes.get(&(m.dev(), m.ino())) {
                    Some(n) => Err(self.deny(
                        path,
                        act,
                        format!("a hard link to {} ({})", escape_path(&n.entry), n.reason),
                        self.git_remedy(),
                    )),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "protect_tests.rs"]
mod tests;
