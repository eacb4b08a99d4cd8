//! Host-side git protection around a run (Linux): the history snapshot taken before it starts
//! ([`snapshot`]) and the check of what it left in repositories once every process of the run is
//! gone ([`post_run`]). See `docs/git.md`.
//!
//! Every file the check reads or changes is opened relative to a descriptor of its writable root
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: a symlink the
//! command planted is never followed, it is renamed aside like any other offending entry.

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use stockade_policy::backend::CreatedLog;
use stockade_policy::gitmeta;
use stockade_policy::model::{GitMode, NameScope};
use stockade_policy::plan::{find_git_markers, find_git_markers_below, GitMarker, Plan};
use stockade_sys::fs as sfs;

const RESOLVE: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
const MAX_READ: u64 = 1 << 20;
/// See [`Checker::ctime_new`]: well above a kernel tick (at most 10 ms).
const CTIME_SLACK_NS: i128 = 50_000_000;
/// Runs whose refs a snapshot store keeps (older ones are removed; objects are kept).
const KEEP_RUNS: usize = 50;

/// One thing the post-run check neutralised (or could not check).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `git-neutralised` or `git-unchecked`.
    pub kind: &'static str,
    /// The offending path.
    pub path: String,
    /// What was wrong.
    pub what: String,
    /// What was done about it.
    pub action: String,
    /// How the user keeps it anyway.
    pub remedy: String,
}

/// A history snapshot taken before the run.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    /// The repository's common directory.
    pub repo: String,
    /// The snapshot store (a bare repository).
    pub store: String,
    /// This run's id: its refs are under `refs/stockade/<run>/` in the store.
    pub run: String,
    /// Refs recorded.
    pub refs: usize,
    /// Object and pack files copied into the store by this run (the rest were there already).
    pub copied: usize,
    /// How to restore every ref of this run.
    pub restore: String,
    /// Whether the repository had `HEAD`, `objects` and `refs` when the snapshot was taken: only
    /// a repository that was whole at launch is put back after the run (a `.git` that never was
    /// a repository is not turned into one).
    pub intact_at_launch: bool,
}

/// A run id: seconds since the epoch and our pid, unique on this machine.
pub fn run_id() -> String {
    let s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{s}-{}", std::process::id())
}

fn io_ctx<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.with_context(what)
}

/// Copy every object and pack of each launch repository (in `git.mode = "commit"`) into a
/// per-repository store in the state directory (only files the store does not have yet; `copy`
/// becomes `copy_file_range`, a reflink where the filesystem can), and record every ref's value
/// under `refs/stockade/<run>/`. A failure stops the run: history would not be recoverable.
pub fn snapshot(plan: &Plan, state_dir: &Path, run: &str) -> Result<Vec<SnapshotInfo>> {
    if plan.git_mode != GitMode::Commit {
        return Ok(Vec::new());
    }
    let mut commons: Vec<&Path> = plan.git_repos.iter().map(|r| r.common.as_path()).collect();
    commons.sort();
    commons.dedup();
    let mut out = Vec::new();
    let state = fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    if let Some(r) = plan.writable_roots.iter().find(|r| state.starts_with(r)) {
        // Only with --allow-dangerous-roots (the plan refuses it otherwise): a snapshot there
        // could be destroyed by the command too, so none is taken, and the user is told.
        eprintln!(
            "stockade: warning: no git history snapshot: the state directory {} is inside the \
             writable root {} (--allow-dangerous-roots), where the command could destroy it \
             too; history the command destroys is lost",
            crate::text::escape(&state.display().to_string()),
            crate::text::escape(&r.display().to_string())
        );
        return Ok(Vec::new());
    }
    for common in commons {
        let store = store_path(state_dir, common);
        let info = snapshot_one(plan, common, &store, run).with_context(|| {
            format!(
                "cannot snapshot the history of {} into {} (git.mode = \"commit\" needs it so \
                 nothing the command does can lose a commit); free space or set git.mode = \
                 \"read-only\"",
                common.display(),
                store.display()
            )
        })?;
        out.push(info);
    }
    Ok(out)
}

/// The snapshot store of the repository whose common directory is `common`:
/// `<state_dir>/git/<first 16 hex digits of the SHA-256 of its path>`.
pub fn store_path(state_dir: &Path, common: &Path) -> PathBuf {
    let digest = Sha256::digest(common.as_os_str().as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    state_dir.join("git").join(hex)
}

fn snapshot_one(plan: &Plan, common: &Path, store: &Path, run: &str) -> Result<SnapshotInfo> {
    init_store(store, common)?;
    let copied = copy_objects(common, store)?;
    // Refs: HEAD of the repository and of each of its linked worktrees, pseudo-refs, packed and
    // loose refs.
    let mut refs: Vec<(String, String)> = Vec::new();
    for r in plan.git_repos.iter().filter(|r| r.common == common) {
        if r.gitdir != r.common {
            let wt = r.gitdir.file_name().unwrap_or_default().to_string_lossy();
            if let Some(v) = read_sha(&r.gitdir.join("HEAD")) {
                refs.push((format!("worktrees/{wt}/HEAD"), v));
            }
        }
    }
    for pseudo in [
        "HEAD",
        "ORIG_HEAD",
        "FETCH_HEAD",
        "MERGE_HEAD",
        "CHERRY_PICK_HEAD",
    ] {
        if let Some(v) = read_sha(&common.join(pseudo)) {
            refs.push((pseudo.into(), v));
        }
    }
    if let Some(text) = read_nofollow(&common.join("packed-refs"), 256 << 20) {
        for l in text.lines() {
            if l.starts_with('#') || l.starts_with('^') {
                continue;
            }
            if let Some((sha, name)) = l.split_once(' ') {
                if is_sha(sha) && !refs.iter().any(|(n, _)| n == name) {
                    refs.push((name.to_string(), sha.to_string()));
                }
            }
        }
    }
    loose_refs(&common.join("refs"), "refs", &mut refs, 0);
    // A symbolic HEAD (`ref: refs/heads/main`) is recorded with the value it resolves to.
    let mut heads = vec![("HEAD".to_string(), common.join("HEAD"))];
    for r in plan
        .git_repos
        .iter()
        .filter(|r| r.common == common && r.gitdir != r.common)
    {
        let wt = r.gitdir.file_name().unwrap_or_default().to_string_lossy();
        heads.push((format!("worktrees/{wt}/HEAD"), r.gitdir.join("HEAD")));
    }
    for (name, file) in heads {
        let target = read_nofollow(&file, 4096)
            .and_then(|t| t.strip_prefix("ref:").map(|r| r.trim().to_string()));
        if let Some(t) = target {
            if let Some(v) = refs.iter().find(|(n, _)| *n == t).map(|(_, v)| v.clone()) {
                refs.push((name, v));
            }
        }
    }
    // Agents run many commands between two commits: when every ref, HEAD and the reftable are
    // what the newest recorded run saw, that run's refs already restore this state, so nothing
    // is written (one small read instead of a directory of files created and one pruned).
    let fingerprint = ref_fingerprint(&refs, common);
    let last_path = store.join("stockade-last");
    if let Some((last_run, last_fp)) = fs::read_to_string(&last_path).ok().and_then(|t| {
        t.split_once('\n')
            .map(|(a, b)| (a.to_string(), b.to_string()))
    }) {
        if last_fp == fingerprint && store.join("stockade-runs").join(&last_run).is_dir() {
            return Ok(snapshot_info(common, store, &last_run, refs.len(), copied));
        }
    }
    let base = store.join("refs/stockade").join(run);
    for (name, sha) in &refs {
        let p = base.join(name);
        if let Some(d) = p.parent() {
            io_ctx(fs::create_dir_all(d), || d.display().to_string())?;
        }
        io_ctx(fs::write(&p, format!("{sha}\n")), || {
            p.display().to_string()
        })?;
    }
    if common.join("reftable").is_dir() {
        let dst = store.join("reftable-runs").join(run);
        io_ctx(fs::create_dir_all(&dst), || dst.display().to_string())?;
        for f in read_dir_sorted(&common.join("reftable")) {
            copy_if_new(&f, &dst.join(f.file_name().unwrap_or_default()))?;
        }
    }
    let raw = store.join("stockade-runs").join(run);
    io_ctx(fs::create_dir_all(&raw), || raw.display().to_string())?;
    if let Some(head) = read_nofollow(&common.join("HEAD"), 4096) {
        io_ctx(fs::write(raw.join("HEAD"), head), || {
            raw.display().to_string()
        })?;
    }
    prune_runs(&store.join("refs/stockade"));
    prune_runs(&store.join("stockade-runs"));
    // Written last: a crash before this line leaves the previous fingerprint, so the next run
    // records its refs again.
    let tmp = store.join(format!("stockade-last.tmp-{}", std::process::id()));
    io_ctx(fs::write(&tmp, format!("{run}\n{fingerprint}")), || {
        tmp.display().to_string()
    })?;
    io_ctx(fs::rename(&tmp, &last_path), || {
        last_path.display().to_string()
    })?;
    Ok(snapshot_info(common, store, run, refs.len(), copied))
}

fn snapshot_info(
    common: &Path,
    store: &Path,
    run: &str,
    refs: usize,
    copied: usize,
) -> SnapshotInfo {
    SnapshotInfo {
        intact_at_launch: repo_intact(common),
        repo: common.display().to_string(),
        store: store.display().to_string(),
        run: run.to_string(),
        refs,
        copied,
        restore: format!(
            "git fetch --update-head-ok {} '+refs/stockade/{run}/refs/*:refs/*'",
            store.display()
        ),
    }
}

/// `HEAD`, `objects` and `refs` are there (not followed through a symlink).
fn repo_intact(common: &Path) -> bool {
    fs::symlink_metadata(common.join("HEAD")).is_ok_and(|m| m.is_file())
        && is_real_dir(&common.join("objects"))
        && is_real_dir(&common.join("refs"))
}

/// Everything a run's recorded refs stand for: each ref's value, the raw `HEAD` (symbolic or
/// not) and the reftable's file names and sizes (reftable files are never rewritten in place).
fn ref_fingerprint(refs: &[(String, String)], common: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut lines: Vec<String> = refs.iter().map(|(n, v)| format!("{v} {n}")).collect();
    lines.sort();
    lines.dedup();
    let mut out = lines.join("\n");
    out.push_str("\nHEAD ");
    out.push_str(&read_nofollow(&common.join("HEAD"), 4096).unwrap_or_default());
    for f in read_dir_sorted(&common.join("reftable")) {
        let size = fs::symlink_metadata(&f).map(|m| m.size()).unwrap_or(0);
        out.push_str(&format!("\nreftable {} {size}", f.display()));
    }
    out
}

/// Copy the object directories' new files into the store. A directory whose `(inode, ctime)` is
/// the one recorded after the last complete snapshot has had no entry added or removed since
/// (the kernel sets ctime on every change; nothing unprivileged can set it back), so the store
/// already holds all its files and it is not listed again. A file rewritten in place does not
/// matter: the store keeps the copy made before. Directories changed within the last 2 seconds
/// are not recorded (a change in the same clock tick would not show).
fn copy_objects(common: &Path, store: &Path) -> Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let cache_path = store.join("stockade-dirs");
    let old: std::collections::HashMap<String, String> = fs::read_to_string(&cache_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let mut new = String::new();
    let mut copied = 0;
    for e in read_dir_sorted(&common.join("objects")) {
        let name = e
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let is_fan = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
        let Ok(m) = fs::symlink_metadata(&e) else {
            continue;
        };
        if !(is_fan || name == "pack") || !m.is_dir() {
            continue;
        }
        let key = format!("{}:{}.{}", m.ino(), m.ctime(), m.ctime_nsec());
        let settled = m.ctime() < now - 2;
        if old.get(&name) == Some(&key) && settled {
            new.push_str(&format!("{name} {key}\n"));
            continue;
        }
        let dst_dir = store.join("objects").join(&name);
        io_ctx(fs::create_dir_all(&dst_dir), || {
            dst_dir.display().to_string()
        })?;
        for f in read_dir_sorted(&e) {
            let fname = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name == "pack"
                && !(fname.starts_with("pack-")
                    && (fname.ends_with(".pack") || fname.ends_with(".idx")))
            {
                continue;
            }
            if copy_if_new(&f, &dst_dir.join(&fname))? {
                copied += 1;
            }
        }
        if settled {
            new.push_str(&format!("{name} {key}\n"));
        }
    }
    let tmp = cache_path.with_extension(format!("tmp-{}", std::process::id()));
    if fs::write(&tmp, new).is_ok() {
        let _ = fs::rename(&tmp, &cache_path);
    }
    Ok(copied)
}

fn init_store(store: &Path, common: &Path) -> Result<()> {
    if store.join("HEAD").exists() {
        return Ok(());
    }
    for d in ["objects/pack", "refs/heads", "refs/stockade"] {
        let p = store.join(d);
        io_ctx(fs::create_dir_all(&p), || p.display().to_string())?;
    }
    let format = read_nofollow(&common.join("config"), gitmeta::MAX_CONFIG_BYTES).and_then(|t| {
        gitmeta::parse_config(&t)
            .into_iter()
            .find(|e| e.key == "extensions.objectformat")
            .and_then(|e| e.value)
    });
    let mut cfg = String::from("[core]\n\trepositoryformatversion = ");
    match &format {
        Some(f) => cfg.push_str(&format!(
            "1\n\tbare = true\n[extensions]\n\tobjectformat = {f}\n"
        )),
        None => cfg.push_str("0\n\tbare = true\n"),
    }
    cfg.push_str("[gc]\n\tauto = 0\n\tpruneExpire = never\n");
    io_ctx(fs::write(store.join("config"), cfg), || {
        store.display().to_string()
    })?;
    io_ctx(
        fs::write(store.join("HEAD"), "ref: refs/heads/stockade-snapshot\n"),
        || store.display().to_string(),
    )?;
    Ok(())
}

fn prune_runs(dir: &Path) {
    let mut runs: Vec<(u64, PathBuf)> = read_dir_sorted(dir)
        .into_iter()
        .filter_map(|p| {
            let secs = p.file_name()?.to_str()?.split('-').next()?.parse().ok()?;
            Some((secs, p))
        })
        .collect();
    runs.sort();
    while runs.len() > KEEP_RUNS {
        let (_, p) = runs.remove(0);
        let _ = fs::remove_dir_all(p);
    }
}

/// Read a small repository file without following a symlink at its end (a previous run could
/// have replaced `HEAD` or `packed-refs` by a link to a secret, which would then be copied into
/// the state directory). `None` if it is not a regular file or cannot be read.
fn read_nofollow(p: &Path, max: u64) -> Option<String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn is_real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_sha(p: &Path) -> Option<String> {
    let t = read_nofollow(p, 4096)?;
    let first = t.split_whitespace().next()?;
    is_sha(first).then(|| first.to_string())
}

fn loose_refs(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>, depth: usize) {
    if depth > 32 {
        return;
    }
    for p in read_dir_sorted(dir) {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let name = format!(
            "{prefix}/{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        );
        if m.is_dir() {
            loose_refs(&p, &name, out, depth + 1);
        } else if m.is_file() {
            if let Some(v) = read_sha(&p) {
                out.retain(|(n, _)| *n != name);
                out.push((name, v));
            }
        }
    }
}

/// Copy `src` (a regular file, never followed if a link) to `dst` unless `dst` already has the
/// same size (object and pack names are their content's hash). Written to a temporary name,
/// then renamed.
fn copy_if_new(src: &Path, dst: &Path) -> Result<bool> {
    let Ok(m) = fs::symlink_metadata(src) else {
        return Ok(false);
    };
    if !m.is_file() {
        return Ok(false);
    }
    if fs::metadata(dst).is_ok_and(|d| d.len() == m.len()) {
        return Ok(false);
    }
    let mut from = io_ctx(
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src),
        || src.display().to_string(),
    )?;
    let tmp = dst.with_extension(format!("tmp-{}", std::process::id()));
    let mut to = io_ctx(
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o444)
            .open(&tmp),
        || tmp.display().to_string(),
    )?;
    io_ctx(std::io::copy(&mut from, &mut to), || {
        src.display().to_string()
    })?;
    io_ctx(fs::rename(&tmp, dst), || dst.display().to_string())?;
    Ok(true)
}

/// After the run: a launch repository the run destroyed (no longer a git directory: `HEAD`,
/// `objects/` or `refs/` gone, as after `rm -rf .git/*`) is put back from this run's snapshot —
/// objects copied back, every ref and `HEAD` rewritten. Returns what was restored.
pub fn restore_destroyed(snapshots: &[SnapshotInfo], started: SystemTime) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in snapshots {
        let common = Path::new(&s.repo);
        match repair_objects(common, Path::new(&s.store), started) {
            Ok(0) => {}
            Ok(n) => out.push(Finding {
                kind: "git-restored",
                path: common.join("objects").display().to_string(),
                what: format!(
                    "the run overwrote {n} object or pack file(s) that existed at launch"
                ),
                action: "each put back from the snapshot".into(),
                remedy: format!("the snapshot stays available: {}", s.restore),
            }),
            Err(e) => out.push(Finding {
                kind: "git-restored",
                path: common.join("objects").display().to_string(),
                what: "object or pack files that existed at launch may have been overwritten"
                    .into(),
                action: format!("could NOT be checked or put back ({e:#})"),
                remedy: format!("the snapshot stays available: {}", s.restore),
            }),
        }
        if !s.intact_at_launch || repo_intact(common) || !is_real_dir(common) {
            continue;
        }
        let action = match restore_one(common, Path::new(&s.store), &s.run) {
            Ok(n) => format!("restored from the snapshot of this run ({n} files copied back, every ref and HEAD rewritten)"),
            Err(e) => format!("could NOT be restored ({e:#}); restore by hand: git init, then {}", s.restore),
        };
        out.push(Finding {
            kind: "git-restored",
            path: s.repo.clone(),
            what: "the run destroyed the repository (HEAD, objects or refs removed)".into(),
            action,
            remedy: format!("the snapshot stays available: {}", s.restore),
        });
    }
    out
}

/// Put back every pack file of the snapshot store that the run changed in place
/// (another size, or a ctime from the run and other content; git itself only ever adds, removes
/// or touches such files, never rewrites them). Returns how many were put back.
fn repair_objects(common: &Path, store: &Path, started: SystemTime) -> Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let started = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let mut n = 0;
    if !is_real_dir(&common.join("objects")) {
        return Ok(0);
    }
    // Packs only (few files): a loose object overwritten in place stays recoverable from the
    // store, and checking thousands of them after every run would cost more than the run.
    {
        let dir = store.join("objects/pack");
        for f in read_dir_sorted(&dir) {
            let fname = f.file_name().unwrap_or_default().to_owned();
            let dst = common.join("objects/pack").join(&fname);
            let (Ok(sm), Ok(dm)) = (fs::symlink_metadata(&f), fs::symlink_metadata(&dst)) else {
                continue;
            };
            let ctime = i128::from(dm.ctime()) * 1_000_000_000 + i128::from(dm.ctime_nsec());
            let changed = !dm.is_file()
                || dm.len() != sm.len()
                || (ctime >= started && !same_content(&f, &dst));
            if changed {
                let _ = fs::remove_file(&dst);
                copy_if_new(&f, &dst)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn same_content(a: &Path, b: &Path) -> bool {
    let open = |p: &Path| {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
    };
    let (Ok(a), Ok(b)) = (open(a), open(b)) else {
        return false;
    };
    let (mut a, mut b) = (std::io::BufReader::new(a), std::io::BufReader::new(b));
    let mut ba = vec![0u8; 1 << 16];
    let mut bb = vec![0u8; 1 << 16];
    loop {
        let na = match a.read(&mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if b.read_exact(&mut bb[..na]).is_err() {
            return false;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return b.read(&mut bb[..1]).is_ok_and(|n| n == 0);
        }
    }
}

fn restore_one(common: &Path, store: &Path, run: &str) -> Result<usize> {
    let mut n = 0;
    for d in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
        let p = common.join(d);
        io_ctx(fs::create_dir_all(&p), || p.display().to_string())?;
    }
    for dir in read_dir_sorted(&store.join("objects")) {
        let name = dir.file_name().unwrap_or_default().to_owned();
        let dst = common.join("objects").join(&name);
        io_ctx(fs::create_dir_all(&dst), || dst.display().to_string())?;
        for f in read_dir_sorted(&dir) {
            if copy_if_new(&f, &dst.join(f.file_name().unwrap_or_default()))? {
                n += 1;
            }
        }
    }
    let base = store.join("refs/stockade").join(run);
    let mut refs = Vec::new();
    loose_refs(&base.join("refs"), "refs", &mut refs, 0);
    for (name, sha) in refs {
        let p = common.join(&name);
        if let Some(d) = p.parent() {
            io_ctx(fs::create_dir_all(d), || d.display().to_string())?;
        }
        let _ = fs::remove_file(&p);
        io_ctx(fs::write(&p, format!("{sha}\n")), || {
            p.display().to_string()
        })?;
    }
    let head = fs::read(store.join("stockade-runs").join(run).join("HEAD"))
        .unwrap_or_else(|_| b"ref: refs/heads/main\n".to_vec());
    let _ = fs::remove_file(common.join("HEAD"));
    io_ctx(fs::write(common.join("HEAD"), head), || {
        common.display().to_string()
    })?;
    Ok(n)
}

/// A writable root, opened once.
struct Root {
    path: PathBuf,
    fd: OwnedFd,
}

struct Checker<'a> {
    plan: &'a Plan,
    roots: Vec<Root>,
    run: String,
    started: i128,
    findings: Vec<Finding>,
    /// Gitdirs already judged.
    seen: Vec<PathBuf>,
    /// The plan was made for the write gate: repositories that existed at launch anywhere below
    /// a root were guarded per call, not found by a launch walk, so only what changed during the
    /// run (ctime) is judged — an untouched hook or config of a repository the user already had
    /// is theirs, not the run's.
    only_new: bool,
}

/// After the run (every process of it gone): neutralise what it left that would make git run
/// code or redirect it — in repositories it created (nested `git init`, `init --template`,
/// `worktree add`, an embedded bare repository) and, in launch repositories, protected entries
/// that did not exist at launch and rebase/sequencer todo lines that run commands.
///
/// With the write gate's complete created-log (`created`), only what the log names is examined
/// (plus the launch repositories), so the check costs what the run created, not what the
/// workspace holds; without one (no gate, or the log overflowed) every writable root is walked.
pub fn post_run(
    plan: &Plan,
    state_dir: &Path,
    run: &str,
    started: SystemTime,
    created: Option<&CreatedLog>,
) -> Vec<Finding> {
    let started = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let mut c = Checker {
        plan,
        roots: Vec::new(),
        run: run.to_string(),
        started,
        findings: Vec::new(),
        seen: plan.git_repos.iter().map(|r| r.gitdir.clone()).collect(),
        only_new: plan.write_gate,
    };
    for r in &plan.writable_roots {
        match sfs::openat2(
            None,
            r,
            libc::O_PATH | libc::O_DIRECTORY,
            RESOLVE & !libc::RESOLVE_BENEATH,
        ) {
            Ok(fd) => c.roots.push(Root {
                path: r.clone(),
                fd,
            }),
            Err(e) => c.unchecked(r, &format!("cannot open the writable root: {e}")),
        }
    }
    c.launch_repos();
    match created {
        Some(log) if log.complete => c.check_logged(log),
        _ => {
            for r in plan.writable_roots.clone() {
                match find_git_markers(&r, state_dir) {
                    Ok(markers) => {
                        for m in markers {
                            c.marker(&m);
                        }
                    }
                    Err(e) => c.unchecked(&r, &e.to_string()),
                }
            }
        }
    }
    c.findings
}

impl Checker<'_> {
    /// Examine what the write gate logged: created `.git`/`HEAD` entries like the walk's
    /// markers, directories moved into place by walking just them, and creations beneath an
    /// existing `.git` (todo files, worktrees, modules, config, hooks) one by one.
    fn check_logged(&mut self, log: &CreatedLog) {
        for dir in &log.subtrees {
            // Only a directory brings contents along; a file moved into place is judged by its
            // name below, like a created one.
            let is_dir = self
                .lstat(dir)
                .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            if !is_dir {
                continue;
            }
            match find_git_markers_below(dir) {
                Ok(markers) => {
                    for m in markers {
                        self.marker(&m);
                    }
                }
                // Gone again (renamed on, removed): nothing left there to check.
                Err(_) if self.lstat(dir).is_none() => {}
                Err(e) => self.unchecked(dir, &e.to_string()),
            }
        }
        let mut gitdirs: Vec<PathBuf> = Vec::new();
        for p in log.paths.iter().chain(&log.subtrees) {
            let Some(st) = self.lstat(p) else {
                continue;
            };
            let name = p.file_name().unwrap_or_default();
            // What completes a bare repository around a `HEAD` that may be older than the run
            // (left by an earlier one): judge the `HEAD` beside it as if it were created now.
            let beside = ["objects", "refs", "config", "config.worktree", "commondir"];
            if beside.iter().any(|n| name == *n) {
                if let Some(head) = p.parent().map(|d| d.join("HEAD")) {
                    if let Some(hs) = self.lstat(&head) {
                        let fmt = hs.st_mode & libc::S_IFMT;
                        self.marker(&GitMarker {
                            path: head,
                            name: "HEAD".into(),
                            is_dir: fmt == libc::S_IFDIR,
                            is_symlink: fmt == libc::S_IFLNK,
                        });
                    }
                }
            }
            if name == ".git" || name == "HEAD" {
                let fmt = st.st_mode & libc::S_IFMT;
                self.marker(&GitMarker {
                    path: p.clone(),
                    name: name.to_os_string(),
                    is_dir: fmt == libc::S_IFDIR,
                    is_symlink: fmt == libc::S_IFLNK,
                });
            }
            if let Some(gitdir) = enclosing_gitdir(p) {
                if !gitdirs.contains(&gitdir) {
                    gitdirs.push(gitdir.clone());
                    // In commit mode `mkdir` is not judged, so a `git init`'s `.git` itself is
                    // not in the log, only what was created in it: judge it as a `.git` marker
                    // (its work tree's root-level configs included).
                    if gitdir.file_name() == Some(std::ffi::OsStr::new(".git"))
                        && self
                            .lstat(&gitdir)
                            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                    {
                        self.marker(&GitMarker {
                            path: gitdir.clone(),
                            name: ".git".into(),
                            is_dir: true,
                            is_symlink: false,
                        });
                    }
                }
                self.created_in_gitdir(&gitdir, p);
            }
        }
        for g in gitdirs {
            // A gitdir judged whole (created during the run, or a launch repository's) is done.
            if !self.seen.contains(&g) {
                self.todos(&g);
                self.modules(&g.join("modules"), 0);
            }
        }
    }

    /// One entry created during the run beneath `gitdir`, a `.git` that was not itself created
    /// by the run (those are judged whole).
    fn created_in_gitdir(&mut self, gitdir: &Path, p: &Path) {
        if self.seen.contains(&gitdir.to_path_buf()) {
            return;
        }
        let Ok(rel) = p.strip_prefix(gitdir) else {
            return;
        };
        let parts: Vec<&std::ffi::OsStr> = rel.iter().collect();
        match parts.as_slice() {
            [n] if *n == "config" || *n == "config.worktree" => self.judge_config(p),
            [h, _] if *h == "hooks" => self.judge_hook(p),
            [w, x, ..] if *w == "worktrees" => {
                let wt = gitdir.join(w).join(x);
                if !self.seen.contains(&wt) && self.lstat(&wt).is_some() {
                    self.seen.push(wt.clone());
                    let common = fs::canonicalize(gitdir).unwrap_or_else(|_| gitdir.into());
                    self.judge_gitdir(&wt, Some(&common));
                }
            }
            [i, a] if *i == "info" && *a == "attributes" => self.created_redirect(
                p,
                "attributes select filter/diff/merge drivers, which run programs",
            ),
            [o, i, a] if *o == "objects" && *i == "info" && *a == "alternates" => {
                self.created_redirect(p, "makes git read objects from another repository")
            }
            [c] if *c == "commondir" => self.created_redirect(
                p,
                "commondir created during the run redirects git to another directory",
            ),
            _ => {}
        }
    }

    fn created_redirect(&mut self, p: &Path, why: &str) {
        let action = self.rename_aside(p);
        self.neutralised(p, format!("created during the run: {why}"), action);
    }

    /// One hook created during the run: executable (or not a regular file) is neutralised.
    fn judge_hook(&mut self, h: &Path) {
        if !self.changed(h) {
            return;
        }
        let name = h.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".sample") || name.contains(".stockade-neutralised-") {
            return;
        }
        let Some(st) = self.lstat(h) else {
            return;
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG if st.st_mode & 0o111 != 0 => {
                let action = match self.chmod_x(h) {
                    Ok(()) => "made non-executable (chmod a-x)".to_string(),
                    Err(e) => self.rename_aside(h) + &format!(" (chmod failed: {e})"),
                };
                self.neutralised(h, "executable hook created during the run".into(), action);
            }
            libc::S_IFREG => {}
            _ => {
                let action = self.rename_aside(h);
                self.neutralised(h, "hook that is not a regular file".into(), action);
            }
        }
    }
}

/// The `.git` directory `p` lies beneath (the innermost `.git` component), if any.
fn enclosing_gitdir(p: &Path) -> Option<PathBuf> {
    let mut cur = p.parent();
    while let Some(d) = cur {
        if d.file_name().is_some_and(|n| n == ".git") {
            return Some(d.to_path_buf());
        }
        cur = d.parent();
    }
    None
}

const REMEDY: &str = "review it; if you trust it, rename it back (or chmod +x the hook) yourself on the host — a sandboxed run never leaves behind git metadata that runs code (docs/git.md)";

impl Checker<'_> {
    fn unchecked(&mut self, path: &Path, why: &str) {
        self.findings.push(Finding {
            kind: "git-unchecked",
            path: path.display().to_string(),
            what: format!("repositories below it could not be checked: {why}"),
            action: "nothing changed; the next run refuses to start until it can be listed".into(),
            remedy: "fix the directory's permissions, then inspect any .git below it".into(),
        });
    }

    fn neutralised(&mut self, path: &Path, what: String, action: String) {
        self.findings.push(Finding {
            kind: "git-neutralised",
            path: path.display().to_string(),
            what,
            action,
            remedy: REMEDY.into(),
        });
    }

    fn root_of(&self, p: &Path) -> Option<(usize, PathBuf)> {
        self.roots
            .iter()
            .enumerate()
            .filter(|(_, r)| p.starts_with(&r.path))
            .max_by_key(|(_, r)| r.path.as_os_str().len())
            .map(|(i, r)| (i, p.strip_prefix(&r.path).unwrap_or(p).to_path_buf()))
    }

    /// `lstat` of `p` without following anything (through its writable root).
    fn lstat(&self, p: &Path) -> Option<libc::stat> {
        let (i, rel) = self.root_of(p)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = CString::new(rel.file_name()?.as_bytes()).ok()?;
        let dir = self.open_dir(i, parent).ok()?;
        sfs::fstatat_nofollow(dir.as_fd(), &name).ok()
    }

    fn open_dir(&self, i: usize, rel: &Path) -> std::io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        Ok(sfs::openat2(
            Some(self.roots[i].fd.as_fd()),
            rel,
            libc::O_PATH | libc::O_DIRECTORY,
            RESOLVE,
        )?)
    }

    fn read(&self, p: &Path) -> Option<String> {
        let (i, rel) = self.root_of(p)?;
        let fd = sfs::openat2(
            Some(self.roots[i].fd.as_fd()),
            &rel,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            RESOLVE,
        )
        .ok()?;
        let st = sfs::fstat(fd.as_fd()).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        let mut buf = Vec::new();
        fs::File::from(fd)
            .take(MAX_READ)
            .read_to_end(&mut buf)
            .ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Rename `p` aside to `<name>.stockade-neutralised-<run>`; the new name, or why not.
    fn rename_aside(&self, p: &Path) -> String {
        let Some((i, rel)) = self.root_of(p) else {
            return "left alone: it is outside every writable root".into();
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let Some(name) = rel.file_name() else {
            return "left alone: no name".into();
        };
        let new = format!(
            "{}.stockade-neutralised-{}",
            name.to_string_lossy(),
            self.run
        );
        let r = self.open_dir(i, parent).and_then(|d| {
            let old = CString::new(name.as_bytes())?;
            let newc = CString::new(new.as_bytes())?;
            Ok(sfs::rename_noreplace(d.as_fd(), &old, &newc)?)
        });
        match r {
            Ok(()) => format!("renamed to {new}"),
            Err(e) => format!("could NOT be renamed aside ({e}): remove it before using git here"),
        }
    }

    /// Write `data` as a new file `p` (which must not exist).
    fn write_new(&self, p: &Path, data: &[u8]) -> std::io::Result<()> {
        let (i, rel) = self
            .root_of(p)
            .ok_or_else(|| std::io::Error::other("outside the writable roots"))?;
        let fd = sfs::openat2_mode(
            Some(self.roots[i].fd.as_fd()),
            &rel,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o644,
            RESOLVE,
        )?;
        fs::File::from(fd).write_all(data)
    }

    /// Whether `p` is the run's to judge: always without the gate; with it, only when it
    /// changed during the run ([`Checker::only_new`]).
    fn changed(&self, p: &Path) -> bool {
        !self.only_new || self.ctime_new(p)
    }

    /// Changed during the run. File times come from the kernel's coarse clock, which lags the
    /// precise one by up to a tick, so a change right after `started` can carry an earlier
    /// ctime: anything within [`CTIME_SLACK_NS`] before the start counts as new (more is judged,
    /// never less).
    fn ctime_new(&self, p: &Path) -> bool {
        self.lstat(p).is_some_and(|st| {
            i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec)
                >= self.started - CTIME_SLACK_NS
        })
    }

    fn launch_repos(&mut self) {
        let plan = self.plan;
        if plan.git_mode != GitMode::Commit {
            return;
        }
        let mut commons = Vec::new();
        for repo in &plan.git_repos {
            for w in &repo.missing {
                if self.lstat(&w.path).is_some() {
                    let action = self.rename_aside(&w.path);
                    self.neutralised(
                        &w.path,
                        format!(
                            "created during the run where git metadata is protected: {}",
                            w.reason
                        ),
                        action,
                    );
                }
            }
            self.todos(&repo.gitdir);
            if !commons.contains(&repo.common) {
                commons.push(repo.common.clone());
            }
        }
        for common in commons {
            self.todos(&common);
            for wt in read_dir_sorted(&common.join("worktrees")) {
                if !self.seen.contains(&wt) && self.ctime_new(&wt) {
                    self.seen.push(wt.clone());
                    self.judge_gitdir(&wt, Some(&common));
                } else {
                    self.todos(&wt);
                }
            }
            self.modules(&common.join("modules"), 0);
        }
    }

    fn modules(&mut self, dir: &Path, depth: usize) {
        if depth > gitmeta::MAX_MODULE_DEPTH {
            return;
        }
        for d in read_dir_sorted(dir) {
            if !is_real_dir(&d) {
                continue;
            }
            if d.join("HEAD").exists() {
                if self.ctime_new(&d.join("HEAD")) || self.ctime_new(&d.join("config")) {
                    self.judge_gitdir(&d, None);
                }
            } else {
                self.modules(&d, depth + 1);
            }
        }
    }

    fn marker(&mut self, m: &stockade_policy::plan::GitMarker) {
        let launch_wt = |p: &Path| {
            self.plan
                .git_repos
                .iter()
                .any(|r| p.parent() == Some(r.worktree.as_path()))
        };
        if m.name == ".git" {
            if launch_wt(&m.path) || self.plan.protected_symlinks.contains(&m.path) {
                return;
            }
            if m.is_symlink && !self.changed(&m.path) {
                return;
            }
            if let Some(root) = m.path.parent() {
                self.root_configs(root);
            }
            if m.is_symlink {
                let action = self.rename_aside(&m.path);
                self.neutralised(
                    &m.path,
                    "a .git symlink created during the run redirects git to another directory"
                        .into(),
                    action,
                );
            } else if m.is_dir {
                if !self.seen.contains(&m.path) {
                    self.seen.push(m.path.clone());
                    self.judge_gitdir(&m.path.clone(), None);
                }
            } else {
                self.gitfile(&m.path);
            }
            return;
        }
        // HEAD: an embedded bare repository (HEAD, objects/, refs/ and no .git name).
        let Some(dir) = m.path.parent().map(Path::to_path_buf) else {
            return;
        };
        // What git accepts (setup.c `is_git_directory`): `HEAD` a file or a symbolic link into
        // `refs/`, `objects` and `refs` anything searchable (symbolic links to directories
        // too), or both taken from the directory a `commondir` file names. Any entry of those
        // names counts here: judging a directory that git would reject costs nothing.
        let exists = |n: &str| self.lstat(&dir.join(n)).is_some();
        let shaped = (exists("objects") && exists("refs")) || exists("commondir");
        if m.is_dir
            || dir.file_name().is_some_and(|n| n == ".git")
            || self.seen.contains(&dir)
            || self.plan.git_repos.iter().any(|r| r.common == dir)
            || !shaped
        {
            return;
        }
        let touched = [
            "HEAD",
            "config",
            "hooks",
            "config.worktree",
            "info",
            "commondir",
        ]
        .iter()
        .any(|n| self.ctime_new(&dir.join(n)));
        if touched {
            self.seen.push(dir.clone());
            self.judge_gitdir(&dir, None);
        }
    }

    /// The root-scoped protected names (`/.mcp.json`, `.vscode/tasks.json`, ...) at the root
    /// of a repository the run created: the gate refuses them there only once the directory is
    /// a repository, so those written before its `.git` appeared (`git init` after writing
    /// them, a prepared directory renamed to `.git`) are put aside here — if they were created
    /// or changed during the run (earlier ones are the user's).
    fn root_configs(&mut self, root: &Path) {
        let Ok(names) = stockade_policy::model::parse_protected_names(&self.plan.protected_names)
        else {
            return;
        };
        for n in names.iter().filter(|n| n.scope == NameScope::Root) {
            let p = root.join(&n.path);
            if self.lstat(&p).is_some() && self.changed_during_run(&p, 0) {
                let action = self.rename_aside(&p);
                self.neutralised(
                    &p,
                    format!(
                        "{} written during the run at the root of a repository the run created \
                         (tools run what it names outside the sandbox)",
                        n.entry
                    ),
                    action,
                );
            }
        }
    }

    /// `p` (or, for a directory, anything beneath it, bounded: past the bound it counts as
    /// changed) was created or changed during the run.
    fn changed_during_run(&self, p: &Path, depth: usize) -> bool {
        const MAX_ENTRIES: usize = 1000;
        if self.ctime_new(p) {
            return true;
        }
        let is_dir = self
            .lstat(p)
            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        if !is_dir {
            return false;
        }
        if depth >= 8 {
            return true;
        }
        let entries = read_dir_sorted(p);
        entries.len() > MAX_ENTRIES
            || entries
                .iter()
                .any(|e| self.changed_during_run(e, depth + 1))
    }

    /// A `.git` file created during the run: its gitdir must be inside a writable root (it is
    /// then judged like any created gitdir), or the file is renamed aside.
    fn gitfile(&mut self, file: &Path) {
        if !self.changed(file) {
            return;
        }
        let Some(text) = self.read(file) else {
            return;
        };
        let Some(target) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("gitdir:"))
            .map(str::trim)
        else {
            return;
        };
        let base = file.parent().unwrap_or(Path::new("/"));
        let gitdir = normalize(&base.join(target));
        // Git resolves the gitdir through symbolic links; a lexical check could be led
        // anywhere by one (`gitdir: l` with `l -> /elsewhere`). A gitdir that a link takes
        // somewhere else, or that resolves outside the writable roots, is not judged: the file
        // is put aside.
        if let Ok(real) = fs::canonicalize(base.join(target)) {
            if real != gitdir || self.root_of(&real).is_none() {
                let action = self.rename_aside(file);
                self.neutralised(
                    file,
                    format!(
                        "a .git file created during the run points git at {} through a symbolic \
                         link (or outside the writable roots)",
                        real.display()
                    ),
                    action,
                );
                return;
            }
        }
        let common = self
            .plan
            .git_repos
            .iter()
            .find(|r| gitdir.starts_with(r.common.join("worktrees")))
            .map(|r| r.common.clone());
        if self.root_of(&gitdir).is_none() {
            let action = self.rename_aside(file);
            self.neutralised(
                file,
                format!(
                    "a .git file created during the run points git at {}, outside the writable roots",
                    gitdir.display()
                ),
                action,
            );
            return;
        }
        if !self.seen.contains(&gitdir) && self.lstat(&gitdir).is_some() {
            self.seen.push(gitdir.clone());
            self.judge_gitdir(&gitdir, common.as_deref());
        }
    }

    /// Judge a gitdir created (or changed) during the run.
    fn judge_gitdir(&mut self, dir: &Path, common: Option<&Path>) {
        for name in ["config", "config.worktree"] {
            self.judge_config(&dir.join(name));
        }
        self.judge_hooks(&dir.join("hooks"));
        for (name, why) in [
            (
                "info/attributes",
                "attributes select filter/diff/merge drivers, which run programs",
            ),
            (
                "objects/info/alternates",
                "makes git read objects from another repository",
            ),
        ] {
            let p = dir.join(name);
            if self.lstat(&p).is_some() && self.changed(&p) {
                let action = self.rename_aside(&p);
                self.neutralised(&p, format!("created during the run: {why}"), action);
            }
        }
        let cd = dir.join("commondir");
        if self.lstat(&cd).is_some() && self.changed(&cd) {
            let target = self.read(&cd).map(|t| normalize(&dir.join(t.trim())));
            let ok = match (target, common) {
                (Some(t), Some(c)) => fs::canonicalize(&t).is_ok_and(|t| t == c),
                _ => false,
            };
            if !ok {
                let action = self.rename_aside(&cd);
                self.neutralised(
                    &cd,
                    "commondir created during the run points outside this repository".into(),
                    action,
                );
            }
        }
        let gd = dir.join("gitdir");
        if self.lstat(&gd).is_some() && self.changed(&gd) {
            let inside = self
                .read(&gd)
                .is_some_and(|t| self.root_of(&normalize(&dir.join(t.trim()))).is_some());
            if !inside {
                let action = self.rename_aside(&gd);
                self.neutralised(
                    &gd,
                    "gitdir file created during the run points outside the writable roots".into(),
                    action,
                );
            }
        }
        self.todos(dir);
    }

    fn judge_config(&mut self, p: &Path) {
        if !self.changed(p) {
            return;
        }
        let Some(text) = self.read(p) else {
            if self
                .lstat(p)
                .is_some_and(|st| st.st_mode & libc::S_IFMT != libc::S_IFREG)
            {
                let action = self.rename_aside(p);
                self.neutralised(p, "a git config that is not a regular file".into(), action);
            }
            return;
        };
        let bad = gitmeta::judge_config(&text);
        if bad.is_empty() {
            return;
        }
        let keys: Vec<String> = bad.iter().map(|e| e.key.replace('\0', "")).collect();
        let mut action = self.rename_aside(p);
        if action.starts_with("renamed") {
            let safe: Vec<gitmeta::ConfigEntry> = gitmeta::parse_config(&text)
                .into_iter()
                .filter(|e| gitmeta::key_is_safe(&e.key))
                .collect();
            match self.write_new(p, render_config(&safe).as_bytes()) {
                Ok(()) => {
                    action.push_str("; a config with only the safe keys written in its place")
                }
                Err(e) => {
                    action.push_str(&format!("; the safe keys could not be written back ({e})"))
                }
            }
        }
        self.neutralised(
            p,
            format!(
                "git config written during the run sets keys outside the safe set (they run programs, include files or redirect git): {}",
                keys.join(", ")
            ),
            action,
        );
    }

    fn judge_hooks(&mut self, dir: &Path) {
        let Some(st) = self.lstat(dir) else {
            return;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            let action = self.rename_aside(dir);
            self.neutralised(
                dir,
                "hooks is not a directory (a link elsewhere?)".into(),
                action,
            );
            return;
        }
        for h in read_dir_sorted(dir) {
            self.judge_hook(&h);
        }
    }

    fn chmod_x(&self, p: &Path) -> std::io::Result<()> {
        let (i, rel) = self
            .root_of(p)
            .ok_or_else(|| std::io::Error::other("outside the writable roots"))?;
        let fd = sfs::openat2(
            Some(self.roots[i].fd.as_fd()),
            &rel,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            RESOLVE,
        )?;
        let st = sfs::fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(std::io::Error::other("not a regular file"));
        }
        sfs::fchmod(fd.as_fd(), st.st_mode & 0o7666)?;
        Ok(())
    }

    /// Rebase/sequencer todo lists with `exec`/`x` lines: they would run at the user's next
    /// `git rebase --continue`. The lines are commented out (the original is kept aside).
    fn todos(&mut self, gitdir: &Path) {
        for rel in ["rebase-merge/git-rebase-todo", "sequencer/todo"] {
            let p = gitdir.join(rel);
            let Some(text) = self.read(&p) else {
                continue;
            };
            let exec = gitmeta::todo_exec_lines(&text);
            if exec.is_empty() || !self.ctime_new(&p) {
                continue;
            }
            let mut action = self.rename_aside(&p);
            if action.starts_with("renamed") {
                let fixed: String = text
                    .lines()
                    .map(|l| {
                        if exec.iter().any(|e| e == l) {
                            format!("# stockade: removed (it would run a command): {l}\n")
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect();
                match self.write_new(&p, fixed.as_bytes()) {
                    Ok(()) => {
                        action.push_str("; the todo without its exec lines written in its place")
                    }
                    Err(e) => action.push_str(&format!("; could not write the todo back ({e})")),
                }
            }
            self.neutralised(
                &p,
                format!(
                    "todo left by the run runs commands at the next `git rebase --continue`: {}",
                    exec.join(" | ")
                ),
                action,
            );
        }
    }
}

/// `a/./b/../c` → `a/c`, without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Render config entries back to git's format.
fn render_config(entries: &[gitmeta::ConfigEntry]) -> String {
    let mut out = String::new();
    let mut current = String::new();
    for e in entries {
        let Some((head, name)) = e.key.rsplit_once('.') else {
            continue;
        };
        if head != current {
            match head.split_once('.') {
                Some((s, sub)) => out.push_str(&format!(
                    "[{s} \"{}\"]\n",
                    sub.replace('\\', "\\\\").replace('"', "\\\"")
                )),
                None => out.push_str(&format!("[{head}]\n")),
            }
            current = head.to_string();
        }
        match &e.value {
            None => out.push_str(&format!("\t{name}\n")),
            Some(v)
                if !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-_./:*@~^=,".contains(&b)) =>
            {
                out.push_str(&format!("\t{name} = {v}\n"))
            }
            Some(v) => out.push_str(&format!(
                "\t{name} = \"{}\"\n",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
                    .replace('\t', "\\t")
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_config_parses_back_to_the_same_entries() {
        let t = "[core]\n\tbare = false\n[remote \"o.r\\\"g\"]\n\turl = \"a b\\\\c\"\n\tfetch = x\n[branch \"main\"]\n\tremote = o\n";
        let e = gitmeta::parse_config(t);
        assert_eq!(gitmeta::parse_config(&render_config(&e)), e);
    }

    /// The post-run check with the gate's created-log: a complete log is all it examines; an
    /// incomplete one (overflow, or no end record) falls back to walking every writable root.
    #[test]
    fn a_complete_log_is_what_is_examined_an_incomplete_one_walks() {
        let base = std::env::temp_dir().join(format!("gitcheck-log-{}", std::process::id()));
        let ws = base.join("ws");
        let home = base.join("home");
        fs::create_dir_all(&home).unwrap();
        let started = SystemTime::now();
        // A repository "created during the run" three levels down, with a hostile config.
        let dotgit = ws.join("p/q/r/.git");
        for d in ["objects", "refs/heads", "hooks"] {
            fs::create_dir_all(dotgit.join(d)).unwrap();
        }
        fs::write(dotgit.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let config = dotgit.join("config");
        let hostile = "[core]\n\tfsmonitor = touch /tmp/x\n";
        let policy = stockade_policy::config::default_policy().unwrap();
        let ws = fs::canonicalize(&ws).unwrap();
        let dotgit = ws.join("p/q/r/.git");
        let plan = stockade_policy::plan::resolve(
            &policy,
            &stockade_policy::plan::PlanRequest {
                workspace: ws.clone(),
                cwd: ws.clone(),
                home: Some(home.clone()),
                env: vec![],
                state_dir: home.join("state"),
                write_gate: true,
            },
        )
        .unwrap();
        let state = home.join("state");
        let hit = |f: &[Finding]| f.iter().any(|f| f.path.ends_with("p/q/r/.git/config"));
        let log = |paths: Vec<PathBuf>, complete| CreatedLog {
            paths,
            subtrees: vec![],
            complete,
        };
        // Complete and empty: nothing examined, nothing found.
        fs::write(&config, hostile).unwrap();
        let f = post_run(&plan, &state, "t1", started, Some(&log(vec![], true)));
        assert!(!hit(&f), "{f:?}");
        assert_eq!(fs::read_to_string(&config).unwrap(), hostile);
        // Complete, naming the created .git: found.
        let f = post_run(
            &plan,
            &state,
            "t2",
            started,
            Some(&log(vec![dotgit.clone()], true)),
        );
        assert!(hit(&f), "{f:?}");
        // Incomplete and empty: the walk finds it anyway.
        fs::write(&config, hostile).unwrap();
        let f = post_run(&plan, &state, "t3", started, Some(&log(vec![], false)));
        assert!(hit(&f), "{f:?}");
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
