//! `--report FILE`: where a report may be written and how it is opened. The file is opened before
//! the command starts, from a directory outside every tree the command can change, without
//! following symlinks, so nothing the command does can redirect it.

use crate::text::escape;
use anyhow::{bail, Context, Result};
use std::path::{Component, Path, PathBuf};
use stockade_policy::plan::Plan;

/// Trees the command may change: its writable roots and the host directory behind its `/tmp`.
fn changeable(plan: &Plan) -> impl Iterator<Item = &Path> {
    plan.writable_roots
        .iter()
        .map(PathBuf::as_path)
        .chain(plan.temp.persist_dir.as_deref())
        .chain(plan.overlay.state.as_deref())
}

/// Where `--report FILE` will be written: the canonical directory and the file name. Refused when
/// the directory lies in a tree the command can change, or when the path passes through a
/// symlink inside such a tree (one a previous command could have planted).
pub fn report_location(path: &Path, plan: &Plan, cwd: &Path) -> Result<(PathBuf, PathBuf)> {
    let shown = || escape(&path.display().to_string()).into_owned();
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let name = match abs.components().next_back() {
        Some(Component::Normal(n)) => PathBuf::from(n),
        _ => bail!("--report {}: the path must end in a file name", shown()),
    };
    let inside = |p: &Path| {
        changeable(plan)
            .find(|r| p.starts_with(r))
            .map(Path::to_path_buf)
    };
    let mut dir = PathBuf::from("/");
    for c in abs.parent().unwrap_or(Path::new("/")).components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                dir.pop();
            }
            Component::Normal(n) => {
                let next = dir.join(n);
                if let Some(r) = inside(&dir) {
                    let link = std::fs::symlink_metadata(&next)
                        .map(|m| m.file_type().is_symlink())
                        .unwrap_or(false);
                    if link {
                        bail!(
                            "--report {}: {} is a symbolic link inside the writable root {}, which the command could have planted; write the report outside every writable root",
                            shown(),
                            escape(&next.display().to_string()),
                            escape(&r.display().to_string())
                        );
                    }
                }
                dir = std::fs::canonicalize(&next).with_context(|| {
                    format!("--report {}: cannot resolve {}", shown(), next.display())
                })?;
            }
        }
    }
    if let Some(r) = inside(&dir) {
        bail!(
            "--report {}: it is inside {}, which the sandboxed command can change (it could replace the report with a link to one of your files); write the report outside every writable root",
            shown(),
            escape(&r.display().to_string())
        );
    }
    Ok((dir, name))
}

/// Open (create or truncate) the report file before the command starts, without following any
/// symlink: `openat2(RESOLVE_NO_SYMLINKS)` on the canonical directory, then `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS` for the name. Nothing the command does later can redirect it.
#[cfg(target_os = "linux")]
pub fn open_report(path: &Path, plan: &Plan, cwd: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsFd;
    let (dir, name) = report_location(path, plan, cwd)?;
    let shown = escape(&path.display().to_string()).into_owned();
    let no_links = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let dfd =
        openat2(None, &dir, libc::O_PATH | libc::O_DIRECTORY, 0, no_links).with_context(|| {
            format!(
                "--report {shown}: cannot open the directory {}",
                dir.display()
            )
        })?;
    let fd = openat2(
        Some(dfd.as_fd()),
        &name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0o666,
        no_links | libc::RESOLVE_BENEATH,
    )
    .with_context(|| format!("--report {shown}: cannot open it without following symlinks"))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().context("--report: fstat")?;
    if !meta.is_file() {
        bail!("--report {shown}: not a regular file");
    }
    Ok(file)
}

#[cfg(not(target_os = "linux"))]
pub fn open_report(path: &Path, plan: &Plan, cwd: &Path) -> Result<std::fs::File> {
    let (dir, name) = report_location(path, plan, cwd)?;
    let full = dir.join(name);
    if std::fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!("--report {}: it is a symbolic link", full.display());
    }
    std::fs::File::create(&full).with_context(|| format!("cannot create {}", full.display()))
}

/// `openat2(2)` relative to `dir` (or the current directory), with `O_CLOEXEC` added.
#[cfg(target_os = "linux")]
pub fn openat2(
    dir: Option<std::os::fd::BorrowedFd<'_>>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> std::io::Result<std::os::fd::OwnedFd> {
    Ok(stockade_sys::fs::openat2_mode(
        dir, path, flags, mode, resolve,
    )?)
}
