//! Review and apply what sandboxed commands changed in the copy-on-write overlays:
//! `stockade diff`, `apply`, `discard`, `status`, `clean`, and the size recorded after a run
//! (what the cap at the next start reads).
//!
//! The upper layers are written by the sandbox: attacker-controlled data. Every access to them
//! goes through descriptors: `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`
//! from the layer's root, `fstatat(AT_SYMLINK_NOFOLLOW)` per entry; a symlink in the upper is
//! never followed (and never applied). Walks are bounded (entries, depth), file reads are bounded,
//! and every name is escaped before it reaches the terminal.
//!
//! **Stale applies** need no record: `stockade apply` compares the host file's ctime with the
//! creation time of the upper entry (made when overlayfs copied the host file up, or the sandbox
//! created or deleted the name) and refuses, unless `--force`, a host change at or after it (a
//! lost update); see [`stale_reason`].

use crate::text::escape;
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;
use stockade_policy::overlay::OverlayLayer;
use stockade_policy::plan::Plan;
use stockade_sys::fs as sfs;

/// Print a line on stdout. A reader that went away (`stockade diff | head`) ends the output: the
/// review commands stop with `?` and exit 0 (see `is_broken_pipe` in main); the commands that
/// change state ignore it and finish their work.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*).map_err(anyhow::Error::from)
    }};
}

const MAX_ENTRIES: usize = 1_000_000;
const MAX_DEPTH: usize = 256;
/// Largest file `stockade diff PATH` diffs as text, and that `apply` hashes for comparison.
const MAX_TEXT: u64 = 1 << 20;
const RESOLVE: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// What an upper entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, mode: u32 },
    Dir { opaque: bool },
    Symlink,
    Whiteout,
    Other,
}

/// One entry of an upper layer.
#[derive(Debug, Clone)]
pub struct Entry {
    pub rel: PathBuf,
    pub kind: Kind,
}

/// How an entry changes the host path it shadows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
    Replaced,
    /// A directory that exists on the host too (only its contents changed).
    Unchanged,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Modified => "modified",
            Change::Deleted => "deleted",
            Change::Replaced => "replaced",
            Change::Unchanged => "dir",
        }
    }
}

fn open_dir_beneath(dir: BorrowedFd<'_>, name: &Path) -> Result<OwnedFd> {
    sfs::openat2(
        Some(dir),
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        RESOLVE,
    )
    .map_err(|e| anyhow!("{e}"))
}

fn open_root(upper: &Path) -> Result<Option<OwnedFd>> {
    match sfs::openat2(
        None,
        upper,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        libc::RESOLVE_NO_SYMLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(anyhow!("{e}")),
    }
}

fn names(dir: BorrowedFd<'_>) -> Result<Vec<std::ffi::OsString>> {
    let mut v: Vec<_> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    v.sort();
    Ok(v)
}

fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Kind> {
    let c = CString::new(name.as_bytes())?;
    let st = sfs::fstatat_nofollow(dir, &c).map_err(|e| anyhow!("{e}"))?;
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File {
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
        },
        libc::S_IFDIR => Kind::Dir { opaque: false },
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFCHR if st.st_rdev == 0 => Kind::Whiteout,
        _ => Kind::Other,
    })
}

fn is_opaque(fd: BorrowedFd<'_>) -> bool {
    matches!(sfs::fd_getxattr(fd, c"user.overlay.opaque"), Ok(Some(v)) if v.first() == Some(&b'y'))
}

/// Every entry of the upper layer at `upper` (depth-first, parents first).
pub fn walk(upper: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let Some(root) = open_root(upper)? else {
        return Ok(out);
    };
    walk_dir(root.as_fd(), PathBuf::new(), 0, &mut out)
        .with_context(|| format!("reading the upper layer {}", upper.display()))?;
    Ok(out)
}

fn walk_dir(dir: BorrowedFd<'_>, rel: PathBuf, depth: usize, out: &mut Vec<Entry>) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{} is nested deeper than {MAX_DEPTH}", rel.display());
    }
    for name in names(dir)? {
        if out.len() >= MAX_ENTRIES {
            bail!("more than {MAX_ENTRIES} entries");
        }
        let mut kind = kind_at(dir, &name)?;
        let child = rel.join(&name);
        if let Kind::Dir { .. } = kind {
            let fd = open_dir_beneath(dir, Path::new(&name))?;
            kind = Kind::Dir {
                opaque: is_opaque(fd.as_fd()),
            };
            out.push(Entry {
                rel: child.clone(),
                kind,
            });
            walk_dir(fd.as_fd(), child, depth + 1, out)?;
        } else {
            out.push(Entry { rel: child, kind });
        }
    }
    Ok(())
}

/// The overlay layers of `plan` with their upper dirs.
fn layers(plan: &Plan) -> Vec<(&OverlayLayer, PathBuf)> {
    plan.overlay
        .layers
        .iter()
        .filter_map(|l| plan.overlay.upper(l).map(|u| (l, u)))
        .collect()
}

/// Every entry of every layer, with the host path it shadows.
fn all_entries(plan: &Plan) -> Result<Vec<(Entry, PathBuf)>> {
    let mut v = Vec::new();
    for (l, upper) in layers(plan) {
        for e in walk(&upper)? {
            let host = l.lower.join(&e.rel);
            v.push((e, host));
        }
    }
    Ok(v)
}

fn change_of(e: &Entry, host: &Path) -> Change {
    let host_meta = std::fs::symlink_metadata(host).ok();
    match (e.kind, host_meta) {
        (Kind::Whiteout, Some(_)) => Change::Deleted,
        (Kind::Whiteout, None) => Change::Unchanged,
        (_, None) => Change::Added,
        (Kind::Dir { opaque: true }, Some(_)) => Change::Replaced,
        (Kind::Dir { .. }, Some(m)) if m.is_dir() => Change::Unchanged,
        (Kind::Dir { .. }, Some(_)) => Change::Replaced,
        (_, Some(_)) => Change::Modified,
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File { .. } => "file",
        Kind::Dir { .. } => "dir",
        Kind::Symlink => "symlink",
        Kind::Whiteout => "whiteout",
        Kind::Other => "other",
    }
}

fn shown(p: &Path) -> String {
    escape(&p.to_string_lossy()).into_owned()
}

// ---- the size after a run ---------------------------------------------------------------------

/// How often the size of the upper layers is measured after a run (the walk is linear in what
/// the upper holds, too much for every command of an agent's loop once a cache lives there).
const SIZE_SCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Before a run: what [`record_after_run`] compares with to tell whether the run may have pushed
/// the state over its cap (the bytes in use on the state's filesystem).
pub fn used_before_run(plan: &Plan) -> Option<u64> {
    let state = plan.overlay.state.as_ref()?;
    plan.overlay.max_bytes?;
    stockade_sys::fs::statfs_used_bytes(state).ok()
}

/// After a run: record the state's size (what the cap at the next start reads), at most once per
/// [`SIZE_SCAN_EVERY`] — or right away when the state's filesystem filled by more than the room
/// left under the cap during the run (`used_before`), so a run that goes over the cap is told so.
/// Staleness needs no record: `apply` compares the host file's ctime with the upper entry's
/// creation time (see [`stale_reason`]). Returns a warning when the state is now over the cap.
pub fn record_after_run(plan: &Plan, used_before: Option<u64>) -> Result<Option<String>> {
    let Some(state) = &plan.overlay.state else {
        return Ok(None);
    };
    let size_file = state.join(stockade_linux::overlay::SIZE_FILE);
    let recorded = std::fs::read_to_string(&size_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let fresh = std::fs::metadata(&size_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < SIZE_SCAN_EVERY);
    let grew_past_cap = match (used_before, plan.overlay.max_bytes) {
        (Some(before), Some(cap)) => stockade_sys::fs::statfs_used_bytes(state)
            .map(|after| after.saturating_sub(before) > cap.saturating_sub(recorded))
            .unwrap_or(true),
        _ => false,
    };
    if fresh && !grew_past_cap {
        return Ok(None);
    }
    let size: u64 = all_entries(plan)?
        .iter()
        .map(|(e, _)| match e.kind {
            Kind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    let tmp = state.join(format!("{}.new", stockade_linux::overlay::SIZE_FILE));
    std::fs::write(&tmp, size.to_string())?;
    std::fs::rename(&tmp, &size_file)?;
    Ok(plan.overlay.max_bytes.filter(|cap| size > *cap).map(|cap| {
        format!(
            "the copy-on-write state of this workspace ({}) now holds {size} bytes, over \
             filesystem.overlay_max_bytes = {cap}: the next run will refuse to start; review it \
             with `stockade diff`, `stockade apply` what you want, then `stockade clean` (or \
             `stockade discard`), or raise the cap",
            shown(state)
        )
    }))
}

/// The creation time (statx `btime`) of `rel` in `upper`, never following a symlink. The upper
/// entry is created when overlayfs copies the host file up (or when the sandbox creates or
/// deletes the name), and nothing unprivileged can set a creation time.
fn upper_btime(upper: &Path, rel: &Path) -> Result<SystemTime> {
    let root = open_root(upper)?.context("no upper layer")?;
    let fd = sfs::openat2(
        Some(root.as_fd()),
        rel,
        libc::O_PATH | libc::O_NOFOLLOW,
        RESOLVE,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let m = std::fs::File::from(fd).metadata()?;
    m.created().context(
        "the state directory's filesystem records no creation time (statx btime), so a stale \
         apply cannot be told from a fresh one",
    )
}

/// Why applying `rel` would lose an update of the host, if it would: the host file's inode
/// changed (ctime) at or after the moment the upper entry came to be, i.e. someone changed the
/// host version after the sandbox copied (or replaced) it. A host change before that moment was
/// what the sandbox saw, so it is not lost.
fn stale_reason(upper: &Path, rel: &Path, host: &Path) -> Result<Option<String>> {
    let born = upper_btime(upper, rel)?;
    let Ok(h) = std::fs::symlink_metadata(host) else {
        return Ok(None);
    };
    let born_ns = born
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let host_ns = i128::from(h.ctime()) * 1_000_000_000 + i128::from(h.ctime_nsec());
    Ok((host_ns >= born_ns).then(|| {
        "refused: the host version changed since the sandbox copied it (a lost update); compare \
         with `stockade diff`, then pass --force to overwrite it"
            .to_string()
    }))
}

// ---- diff ---------------------------------------------------------------------------------------

/// `stockade diff [PATH]`.
pub fn diff(plan: &Plan, path: Option<&Path>, json: bool) -> Result<()> {
    if let Some(p) = path {
        return diff_one(plan, p);
    }
    let mut rows = Vec::new();
    for (e, host) in all_entries(plan)? {
        let change = change_of(&e, &host);
        if change == Change::Unchanged {
            continue;
        }
        let size = match e.kind {
            Kind::File { size, .. } => Some(size),
            _ => None,
        };
        rows.push((change, e.kind, host, size));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(c, k, h, s)| {
                serde_json::json!({"path": h.to_string_lossy(), "change": c.name(),
                    "kind": kind_name(*k), "size": s})
            })
            .collect();
        let out = serde_json::to_string_pretty(&v)?;
        out!("{}", crate::text::json_for_terminal(&out))?;
        return Ok(());
    }
    if rows.is_empty() {
        out!("no changes outside the writable roots")?;
    }
    for (c, k, h, s) in rows {
        let size = s.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
        out!("{:<9} {:<8} {}{size}", c.name(), kind_name(k), shown(&h))?;
    }
    Ok(())
}

/// Find the layer and relative path of a host path the user named.
fn locate<'p>(plan: &'p Plan, path: &Path) -> Result<(usize, &'p OverlayLayer, PathBuf)> {
    let abs = normalize(path)?;
    // The innermost tree wins (layers are sorted outer first).
    for (i, l) in plan.overlay.layers.iter().enumerate().rev() {
        if let Ok(rel) = abs.strip_prefix(&l.lower) {
            if rel.as_os_str().is_empty() {
                bail!(
                    "{} is the root of an overlaid tree; name a path inside it",
                    shown(&abs)
                );
            }
            return Ok((i, l, rel.to_path_buf()));
        }
    }
    bail!(
        "{} is not inside an overlaid tree of this workspace ({})",
        shown(&abs),
        plan.overlay
            .layers
            .iter()
            .map(|l| shown(&l.lower))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn normalize(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => bail!("{}: `..` is not accepted", shown(path)),
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    // The overlaid trees are canonical: canonicalize the host part that exists (the user's own).
    let mut existing = out.clone();
    let mut tail = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(n), Some(p)) => {
                tail.push(n.to_os_string());
                existing = p.to_path_buf();
            }
            _ => break,
        }
    }
    let mut canon = std::fs::canonicalize(&existing).unwrap_or(existing);
    for n in tail.into_iter().rev() {
        canon.push(n);
    }
    Ok(canon)
}

/// Open `rel` in the upper layer `upper` for reading (a regular file, no symlink anywhere).
fn open_upper_file(upper: &Path, rel: &Path) -> Result<Option<(std::fs::File, u64, u32)>> {
    let Some(root) = open_root(upper)? else {
        return Ok(None);
    };
    let fd = match sfs::openat2(
        Some(root.as_fd()),
        rel,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        RESOLVE,
    ) {
        Ok(fd) => fd,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => bail!("{e}"),
    };
    let st = sfs::fstat(fd.as_fd()).map_err(|e| anyhow!("{e}"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    Ok(Some((
        std::fs::File::from(fd),
        st.st_size as u64,
        st.st_mode & 0o7777,
    )))
}

/// The kind of `rel` in `upper`, never following a symlink.
fn upper_kind(upper: &Path, rel: &Path) -> Result<Option<Kind>> {
    let Some(root) = open_root(upper)? else {
        return Ok(None);
    };
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => return Ok(None),
    };
    let dir = if parent.as_os_str().is_empty() {
        root
    } else {
        match open_dir_beneath(root.as_fd(), parent) {
            Ok(d) => d,
            Err(_) => return Ok(None),
        }
    };
    match kind_at(dir.as_fd(), name) {
        Ok(Kind::Dir { .. }) => {
            let fd = open_dir_beneath(dir.as_fd(), Path::new(name))?;
            Ok(Some(Kind::Dir {
                opaque: is_opaque(fd.as_fd()),
            }))
        }
        Ok(k) => Ok(Some(k)),
        Err(_) => Ok(None),
    }
}

fn read_bounded(f: &mut impl Read, max: u64) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    f.take(max).read_to_end(&mut v)?;
    Ok(v)
}

fn diff_one(plan: &Plan, path: &Path) -> Result<()> {
    let (_, layer, rel) = locate(plan, path)?;
    let upper = plan.overlay.upper(layer).context("no overlay state")?;
    let host = layer.lower.join(&rel);
    let Some(kind) = upper_kind(&upper, &rel)? else {
        out!("{}: unchanged", shown(&host))?;
        return Ok(());
    };
    let e = Entry {
        rel: rel.clone(),
        kind,
    };
    let change = change_of(&e, &host);
    out!("{} {} {}", change.name(), kind_name(kind), shown(&host))?;
    let Kind::File { size, .. } = kind else {
        return Ok(());
    };
    let (mut f, _, _) = open_upper_file(&upper, &rel)?.context("vanished")?;
    let new = read_bounded(&mut f, MAX_TEXT + 1)?;
    let old = match std::fs::symlink_metadata(&host) {
        Ok(m) if m.is_file() => read_bounded(&mut std::fs::File::open(&host)?, MAX_TEXT + 1)?,
        _ => Vec::new(),
    };
    let text =
        |b: &[u8]| b.len() as u64 <= MAX_TEXT && !b.contains(&0) && std::str::from_utf8(b).is_ok();
    if !text(&new) || !text(&old) {
        out!("binary or large file: {} -> {size} bytes", old.len())?;
        return Ok(());
    }
    let (a, b) = (String::from_utf8_lossy(&old), String::from_utf8_lossy(&new));
    for line in crate::linediff::unified(&a, &b) {
        out!("{}", escape(&line))?;
    }
    Ok(())
}

// ---- apply / discard ----------------------------------------------------------------------------

/// Paths a program reads as code or configuration at start: applying them needs `--force`.
const RUNS_PROGRAMS: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".inputrc",
    ".pam_environment",
    ".xprofile",
    ".xinitrc",
    ".gitconfig",
    ".config/git",
    ".config/fish",
    ".config/environment.d",
    ".config/autostart",
    ".config/systemd",
    ".local/bin",
    ".local/share/applications",
    ".cargo/bin",
    ".cargo/config",
    ".cargo/config.toml",
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".config/pip",
    ".pip",
    ".pydistutils.cfg",
    ".config/uv",
    ".condarc",
    ".gemrc",
    ".bunfig.toml",
    ".m2/settings.xml",
    ".gradle/gradle.properties",
    ".gradle/init.d",
    ".config/go/env",
    ".vimrc",
    ".vim",
    ".config/nvim",
    ".emacs",
    ".emacs.d",
    ".config/Code",
    ".vscode",
    ".cursor",
    ".config/zed",
    ".gemini",
    ".aider.conf.yml",
    ".continue",
    ".config/opencode",
    ".ssh",
    ".npm-global/bin",
    ".local/lib/python",
    ".pyenv",
    ".nvm",
    ".rustup",
];

struct Rules {
    refused: Vec<(PathBuf, String)>,
    protected_names: Vec<String>,
}

fn rules(plan: &Plan, loaded: &stockade_policy::config::Loaded, home: Option<&Path>) -> Rules {
    let mut refused: Vec<(PathBuf, String)> = Vec::new();
    for e in &loaded.policy.filesystem.deny_read {
        if let Ok(p) = stockade_policy::paths::expand_path(e, home, &plan.workspace) {
            refused.push((normalize(&p).unwrap_or(p), format!("deny_read {e}")));
        }
    }
    for p in plan
        .deny_read
        .iter()
        .chain(&plan.protected)
        .chain(&plan.overlay.protected)
    {
        refused.push((p.path.clone(), p.reason.clone()));
    }
    for m in &plan.overlay.masks {
        refused.push((m.clone(), "Stockade's state".into()));
    }
    if let Some(s) = &plan.overlay.state {
        refused.push((s.clone(), "Stockade's state".into()));
    }
    Rules {
        refused,
        protected_names: loaded.policy.filesystem.protected_names.clone(),
    }
}

fn check_allowed(
    rules: &Rules,
    layer: &OverlayLayer,
    rel: &Path,
    force: bool,
    exec: bool,
) -> Result<()> {
    let host = layer.lower.join(rel);
    for (p, why) in &rules.refused {
        if host.starts_with(p) {
            bail!(
                "{}: refused: it is protected ({})",
                shown(&host),
                escape(why)
            );
        }
    }
    for c in rel.components() {
        let n = c.as_os_str().to_string_lossy();
        if rules.protected_names.iter().any(|p| *p == n) {
            bail!("{}: refused: {n} is a protected name", shown(&host));
        }
    }
    if force {
        return Ok(());
    }
    let home_layer = layer.name == "home";
    if home_layer && RUNS_PROGRAMS.iter().any(|r| rel.starts_with(r)) {
        bail!(
            "{}: it makes programs run (shell, git, editor, agent or package-manager \
             configuration, or a bin directory); review it with `stockade diff` and pass --force \
             to apply it",
            shown(&host)
        );
    }
    if exec {
        bail!(
            "{}: it is executable; review it with `stockade diff` and pass --force to apply it",
            shown(&host)
        );
    }
    Ok(())
}

/// `stockade apply PATH...`.
pub fn apply(
    plan: &Plan,
    loaded: &stockade_policy::config::Loaded,
    home: Option<&Path>,
    paths: &[PathBuf],
    force: bool,
) -> Result<()> {
    plan.overlay
        .state
        .as_ref()
        .context("this workspace has no overlay state")?;
    let rules = rules(plan, loaded, home);
    // Check every path before changing anything.
    let mut todo = Vec::new();
    for p in paths {
        let (_, layer, rel) = locate(plan, p)?;
        let upper = plan.overlay.upper(layer).context("no overlay state")?;
        let kind = upper_kind(&upper, &rel)?.with_context(|| {
            format!(
                "{}: no change recorded for it",
                shown(&layer.lower.join(&rel))
            )
        })?;
        let entries: Vec<(PathBuf, Kind)> = match kind {
            Kind::Dir { .. } => {
                let mut v = vec![(rel.clone(), kind)];
                let root = open_root(&upper)?.context("no upper")?;
                let dir = open_dir_beneath(root.as_fd(), &rel)?;
                let mut sub = Vec::new();
                walk_dir(dir.as_fd(), rel.clone(), 0, &mut sub)?;
                v.extend(sub.into_iter().map(|e| (e.rel, e.kind)));
                v
            }
            k => vec![(rel.clone(), k)],
        };
        for (r, k) in entries {
            let exec = matches!(k, Kind::File { mode, .. } if mode & 0o111 != 0);
            check_allowed(&rules, layer, &r, force, exec)?;
            if matches!(k, Kind::Symlink | Kind::Other) {
                bail!(
                    "{}: a {} in the upper layer is not applied (copy it by hand if you mean it)",
                    shown(&layer.lower.join(&r)),
                    kind_name(k)
                );
            }
            let host = layer.lower.join(&r);
            let is_unchanged_dir = matches!(k, Kind::Dir { opaque: false })
                && std::fs::symlink_metadata(&host).is_ok();
            if !force && !is_unchanged_dir {
                if let Some(why) = stale_reason(&upper, &r, &host)? {
                    bail!("{}: {why}", shown(&host));
                }
            }
            todo.push((upper.clone(), r, k, host));
        }
    }
    for (upper, rel, kind, host) in todo {
        apply_entry(&upper, &rel, kind, &host)?;
        let _ = out!("applied {}", shown(&host));
    }
    for p in paths {
        let (_, layer, rel) = locate(plan, p)?;
        let upper = plan.overlay.upper(layer).context("no overlay state")?;
        remove_in_upper(&upper, &rel)?;
    }
    Ok(())
}

fn apply_entry(upper: &Path, rel: &Path, kind: Kind, host: &Path) -> Result<()> {
    match kind {
        Kind::Whiteout => match std::fs::symlink_metadata(host) {
            Ok(m) if m.is_dir() => {
                std::fs::remove_dir_all(host).with_context(|| format!("removing {}", shown(host)))
            }
            Ok(_) => {
                std::fs::remove_file(host).with_context(|| format!("removing {}", shown(host)))
            }
            Err(_) => Ok(()),
        },
        Kind::Dir { opaque } => {
            if opaque && std::fs::symlink_metadata(host).is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(host)
                    .with_context(|| format!("replacing {}", shown(host)))?;
            }
            if !host.is_dir() {
                std::fs::create_dir_all(host)
                    .with_context(|| format!("creating {}", shown(host)))?;
            }
            Ok(())
        }
        Kind::File { .. } => {
            let (mut f, _, mode) = open_upper_file(upper, rel)?
                .with_context(|| format!("{}: vanished from the upper layer", shown(host)))?;
            let parent = host.parent().context("no parent")?;
            std::fs::create_dir_all(parent)?;
            let tmp = parent.join(format!(".stockade-apply.{}", std::process::id()));
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .with_context(|| format!("creating {}", shown(&tmp)))?;
            std::io::copy(&mut f, &mut out)?;
            out.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
            out.sync_all()?;
            std::fs::rename(&tmp, host).with_context(|| format!("writing {}", shown(host)))?;
            Ok(())
        }
        Kind::Symlink | Kind::Other => bail!("not applied"),
    }
}

/// Remove `rel` (and below) from the upper layer, never following a symlink on the way.
fn remove_in_upper(upper: &Path, rel: &Path) -> Result<()> {
    let Some(root) = open_root(upper)? else {
        return Ok(());
    };
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => bail!("{}: not a path inside the layer", shown(rel)),
    };
    let dir = if parent.as_os_str().is_empty() {
        root
    } else {
        match open_dir_beneath(root.as_fd(), parent) {
            Ok(d) => d,
            Err(_) => return Ok(()),
        }
    };
    // Through the descriptor's magic link: `name` is looked up in the verified directory, and a
    // symlink named `name` is removed itself (remove_dir_all does not follow it).
    let p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    let r = match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => {
            stockade_linux::overlay::make_removable(&p);
            std::fs::remove_dir_all(&p)
        }
        Ok(_) => std::fs::remove_file(&p),
        Err(_) => Ok(()),
    };
    r.with_context(|| format!("removing {} from the upper layer", shown(rel)))
}

/// `stockade discard [PATH...]`.
pub fn discard(plan: &Plan, paths: &[PathBuf]) -> Result<()> {
    if paths.is_empty() {
        return clean_state(plan);
    }
    for p in paths {
        let (_, layer, rel) = locate(plan, p)?;
        let upper = plan.overlay.upper(layer).context("no overlay state")?;
        remove_in_upper(&upper, &rel)?;
        let _ = out!("discarded {}", shown(&layer.lower.join(&rel)));
    }
    Ok(())
}

/// Remove a workspace's overlay state entirely.
pub fn clean_state(plan: &Plan) -> Result<()> {
    let Some(state) = &plan.overlay.state else {
        let _ = out!("no overlay state (outside_writes = \"deny\" and temp.mode != \"overlay\")");
        return Ok(());
    };
    remove_state_dir(state)?;
    Ok(())
}

/// Remove one `<state_dir>/ws/<hash>` (the overlay's work dirs hold a mode-000 `work`).
pub fn remove_state_dir(state: &Path) -> Result<()> {
    if !state.exists() {
        let _ = out!("nothing to clean ({} does not exist)", shown(state));
        return Ok(());
    }
    stockade_linux::overlay::make_removable(state);
    std::fs::remove_dir_all(state).with_context(|| format!("cannot remove {}", shown(state)))?;
    let _ = out!("removed {}", shown(state));
    Ok(())
}

fn du(dir: &Path) -> (u64, u64) {
    let entries = walk(dir).unwrap_or_default();
    let bytes = entries
        .iter()
        .map(|e| match e.kind {
            Kind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    (entries.len() as u64, bytes)
}

/// `stockade status`: the size of this workspace's state and of all of Stockade's state.
pub fn status(plan: &Plan, state_dir: &Path, json: bool) -> Result<()> {
    let mut layers_out = Vec::new();
    for (l, upper) in layers(plan) {
        let (files, bytes) = du(&upper);
        layers_out.push((l.lower.clone(), files, bytes));
    }
    let (ws_files, ws_bytes) = plan.overlay.state.as_deref().map(du).unwrap_or((0, 0));
    let (all_files, all_bytes) = {
        let a = du(&state_dir.join("ws"));
        let b = du(&state_dir.join("tmp"));
        (a.0 + b.0, a.1 + b.1)
    };
    if json {
        let v = serde_json::json!({
            "workspace": plan.workspace.to_string_lossy(),
            "state": plan.overlay.state.as_ref().map(|s| s.to_string_lossy()),
            "layers": layers_out.iter().map(|(l, f, b)| serde_json::json!({"tree": l.to_string_lossy(), "files": f, "bytes": b})).collect::<Vec<_>>(),
            "workspace_bytes": ws_bytes, "workspace_files": ws_files,
            "all_bytes": all_bytes, "all_files": all_files,
            "max_bytes": plan.overlay.max_bytes,
        });
        out!(
            "{}",
            crate::text::json_for_terminal(&serde_json::to_string_pretty(&v)?)
        )?;
        return Ok(());
    }
    out!("workspace {}", shown(&plan.workspace))?;
    for (l, f, b) in &layers_out {
        out!("  overlay {:<40} {f} files, {b} bytes", shown(l))?;
    }
    out!(
        "  total   {ws_files} files, {ws_bytes} bytes (cap {})",
        plan.overlay
            .max_bytes
            .map(|c| format!("{c} bytes"))
            .unwrap_or_else(|| "none".into())
    )?;
    out!(
        "all workspaces: {all_files} files, {all_bytes} bytes under {} (`stockade clean --all` removes them)",
        shown(state_dir)
    )?;
    Ok(())
}

// ---- commands -----------------------------------------------------------------------------------

fn load_ws(
    workspace: Option<PathBuf>,
    caller: &crate::Caller,
) -> Result<(stockade_policy::config::Loaded, Plan)> {
    let args = crate::PolicyArgs::for_workspace(workspace);
    crate::load(&args, caller)
}

use std::process::ExitCode;

/// `stockade diff`.
pub fn cmd_diff(
    workspace: Option<PathBuf>,
    json: bool,
    path: Option<&Path>,
    caller: &crate::Caller,
) -> Result<ExitCode> {
    let (_, plan) = load_ws(workspace, caller)?;
    diff(&plan, path, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `stockade apply`.
pub fn cmd_apply(
    workspace: Option<PathBuf>,
    force: bool,
    paths: &[PathBuf],
    caller: &crate::Caller,
) -> Result<ExitCode> {
    let (loaded, plan) = load_ws(workspace, caller)?;
    apply(&plan, &loaded, caller.home.as_deref(), paths, force)?;
    Ok(ExitCode::SUCCESS)
}

/// `stockade discard`.
pub fn cmd_discard(
    workspace: Option<PathBuf>,
    paths: &[PathBuf],
    caller: &crate::Caller,
) -> Result<ExitCode> {
    let (_, plan) = load_ws(workspace, caller)?;
    discard(&plan, paths)?;
    Ok(ExitCode::SUCCESS)
}

/// `stockade status`.
pub fn cmd_status(
    workspace: Option<PathBuf>,
    json: bool,
    caller: &crate::Caller,
) -> Result<ExitCode> {
    let (_, plan) = load_ws(workspace, caller)?;
    status(&plan, &caller.state_dir, json)?;
    Ok(ExitCode::SUCCESS)
}
