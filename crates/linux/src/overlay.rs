//! Copy-on-write overlays outside the writable roots (see `stockade_policy::overlay`).
//!
//! Host side, as the caller, before the sandbox starts: [`prepare_host`] creates the workspace's
//! upper and work dirs under Stockade's state (mode 0700; each upper's root gets the mode of the
//! tree it covers, `/tmp`'s 1777) and refuses to start while the state is over
//! `filesystem.overlay_max_bytes` (the size recorded by the last run's scan). Inside, before the
//! lockdown: `mounts::steps` creates one detached overlay per tree (`userxattr`, so it works in
//! the user namespace), attached by the mount plan before the writable roots, the protected paths
//! and the masks go on top.
//!
//! What overlayfs without `redirect_dir` (unavailable unprivileged) does: renaming a directory
//! that exists in the host tree fails with `EXDEV`; `mv` and most tools then copy and delete, so
//! the rename still works, at the cost of a copy. Deleting anything is a whiteout in the upper.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use stockade_policy::plan::Plan;

/// The file (in the workspace's state) holding the size of the upper layers at the last scan.
pub const SIZE_FILE: &str = "size";

/// Why the overlay state could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// A directory could not be created or adjusted.
    #[error("cannot prepare the overlay state {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The state is over its cap.
    #[error(
        "the copy-on-write state of this workspace ({path}) holds {size} bytes, over \
         filesystem.overlay_max_bytes = {cap}: review it with `stockade diff`, then `stockade \
         apply` what you want and `stockade clean` (or `stockade discard`), or raise the cap"
    )]
    OverCap {
        /// The state directory.
        path: PathBuf,
        /// Its recorded size.
        size: u64,
        /// The cap.
        cap: u64,
    },
}

fn mkdir(path: &Path, mode: u32) -> Result<(), OverlayError> {
    let io = |source| OverlayError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io(std::io::Error::other("exists and is not a directory"))),
        Err(_) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)
        }
    }
}

/// How many runs of one workspace can have overlays at the same time (one work-dir slot each).
const WORK_SLOTS: usize = 64;

/// What [`prepare_host`] holds for a run: the work-dir slot it locked. Keep it until the run is
/// over (the sandbox's init inherits the lock too, so it is released when both are gone).
#[derive(Debug, Default)]
pub struct Prepared {
    /// `<state>/work/<k>`: this run's overlayfs work dirs (`<k>/<tree>`).
    pub work: Option<PathBuf>,
    _lock: Option<std::fs::File>,
}

/// Lock a free work-dir slot: concurrent runs of one workspace share its upper layers, but each
/// mount needs a work dir no other mount uses (the next run renames and removes the previous
/// mount's scratch, which would break a run still going).
///
/// The probe starts at a slot that changes from run to run (the process id), so successive runs
/// use different slots. Each mount creates and frees a handful of inodes in its work dir (the
/// scratch dir, volatile's marker, the kernel's tmpfile/xattr/whiteout probes); ext4 without a
/// journal skips inodes freed in the last ~30 s when it allocates, so a single slot's block group
/// fills with freed inodes every allocation walks past (`bench/inode_churn.py` replays the
/// pattern). With `work/` marked `+T` ([`mark_topdir`]) the slots sit in different
/// block groups, and the walk stays short.
fn lock_work_slot(work_root: &Path) -> Result<Prepared, OverlayError> {
    use std::os::fd::AsRawFd;
    let start = std::process::id() as usize;
    for i in 0..WORK_SLOTS {
        let k = (start + i) % WORK_SLOTS;
        let dir = work_root.join(k.to_string());
        let fresh = std::fs::symlink_metadata(&dir).is_err();
        mkdir(&dir, 0o700)?;
        if fresh {
            // the slot's per-tree work dirs (made next) go to different block groups too
            mark_topdir(&dir);
        }
        let io = |source| OverlayError::Io {
            path: dir.clone(),
            source,
        };
        let f = std::fs::File::open(&dir).map_err(io)?;
        let free = stockade_sys::flock_exclusive_nowait(f.as_raw_fd())
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        if free {
            return Ok(Prepared {
                work: Some(dir),
                _lock: Some(f),
            });
        }
    }
    Err(OverlayError::Io {
        path: work_root.to_path_buf(),
        source: std::io::Error::other(format!(
            "{WORK_SLOTS} runs of this workspace already have overlays; wait for one to end"
        )),
    })
}

/// Best effort: `chattr +T` on the work-slot root, so ext4 spreads the slots over block groups
/// (see [`lock_work_slot`]); elsewhere (no inode flags, or a flag we may not set) nothing changes.
fn mark_topdir(dir: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
    {
        let _ = stockade_sys::set_topdir_flag(f.as_raw_fd());
    }
}

/// Create the state dirs, lock a work-dir slot and check the cap (see the module docs).
pub fn prepare_host(plan: &Plan) -> Result<Prepared, OverlayError> {
    let o = &plan.overlay;
    let Some(state) = &o.state else {
        return Ok(Prepared::default());
    };
    if let Some(cap) = o.max_bytes {
        let size = std::fs::read_to_string(state.join(SIZE_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if size > cap {
            return Err(OverlayError::OverCap {
                path: state.clone(),
                size,
                cap,
            });
        }
    }
    mkdir(state, 0o700)?;
    mkdir(&state.join("upper"), 0o700)?;
    mkdir(&state.join("work"), 0o700)?;
    mark_topdir(&state.join("work"));
    let ws_file = state.join("workspace");
    if !ws_file.exists() {
        std::fs::write(&ws_file, plan.workspace.as_os_str().as_encoded_bytes()).map_err(
            |source| OverlayError::Io {
                path: ws_file.clone(),
                source,
            },
        )?;
    }
    let prepared = lock_work_slot(&state.join("work"))?;
    let Some(slot) = &prepared.work else {
        return Ok(prepared);
    };
    for layer in &o.layers {
        let Some(upper) = o.upper(layer) else {
            continue;
        };
        let work = slot.join(&layer.name);
        let mode = std::fs::metadata(&layer.lower)
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0o700);
        mkdir(&upper, mode)?;
        mkdir(&work, 0o700)?;
        // overlayfs (re)creates `work/work` on every mount; a `volatile` mount leaves a marker in
        // it that would refuse the next mount. Renamed aside here (one rename, within the same
        // parent: no permission on overlayfs' mode-000 dir is needed) and removed by
        // [`sweep_host`] while the sandbox builds itself, off the launch's critical path.
        let scratch = work.join("work");
        let old = work.join(format!("{OLD_PREFIX}{}", unique_suffix()));
        match std::fs::rename(&scratch, &old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                let io = |source| OverlayError::Io {
                    path: scratch.clone(),
                    source,
                };
                make_removable(&scratch);
                std::fs::remove_dir_all(&scratch).map_err(io)?;
            }
        }
    }
    Ok(prepared)
}

/// The name prefix of an earlier mount's scratch dir, renamed aside by [`prepare_host`].
const OLD_PREFIX: &str = "old.";

fn unique_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{t}", std::process::id())
}

/// Remove the scratch dirs [`prepare_host`] renamed aside (and any an interrupted run left).
/// Called by the launcher right after the sandbox is cloned, so it runs while the sandbox sets
/// itself up; best effort (what fails is retried by the next run).
pub fn sweep_host(plan: &Plan, prepared: &Prepared) {
    let Some(slot) = &prepared.work else {
        return;
    };
    for layer in &plan.overlay.layers {
        let work = slot.join(&layer.name);
        let Ok(rd) = std::fs::read_dir(&work) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if !name.as_encoded_bytes().starts_with(OLD_PREFIX.as_bytes()) {
                continue;
            }
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) && !remove_volatile_scratch(&p) {
                make_removable(&p);
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }
}

/// The common case of [`sweep_host`]: the scratch dir a `volatile` mount leaves is exactly
/// `incompat/volatile/dirty` beneath mode-000 dirs; open those up and remove the four entries
/// directly (about ten calls instead of a walk that reads every dir twice). `false` when it
/// looks any different (an interrupted mount, a newer kernel); the caller then walks it.
fn remove_volatile_scratch(dir: &Path) -> bool {
    let incompat = dir.join("incompat");
    let volatile = incompat.join("volatile");
    let open_up = |d: &Path| match std::fs::symlink_metadata(d) {
        Ok(m) if m.is_dir() => {
            m.mode() & 0o700 == 0o700
                || std::fs::set_permissions(
                    d,
                    std::fs::Permissions::from_mode((m.mode() & 0o7777) | 0o700),
                )
                .is_ok()
        }
        _ => false,
    };
    open_up(dir)
        && open_up(&incompat)
        && open_up(&volatile)
        && std::fs::remove_file(volatile.join("dirty")).is_ok()
        && std::fs::remove_dir(&volatile).is_ok()
        && std::fs::remove_dir(&incompat).is_ok()
        && std::fs::remove_dir(dir).is_ok()
}

/// Give every directory beneath `dir` (never through a symlink) `u+rwx`, so that a directory an
/// earlier run made unreadable (`chmod 000`, or overlayfs' own mode-000 `work`) can be removed.
pub fn make_removable(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        seen += 1;
        if seen > 1_000_000 {
            return;
        }
        match std::fs::symlink_metadata(&d) {
            Ok(m) if m.is_dir() => {
                if m.mode() & 0o700 != 0o700 {
                    let _ = std::fs::set_permissions(
                        &d,
                        std::fs::Permissions::from_mode((m.mode() & 0o7777) | 0o700),
                    );
                }
            }
            _ => continue,
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// Where a unix socket may be connected to: the writable paths, minus the overlaid home and
/// `overlay_roots` (never socket roots before they were overlaid). `/tmp` and `/var/tmp` stay
/// socket roots, so servers the command starts there keep working; a host socket seen through
/// their overlay is not reachable anyway: `connect()` finds the socket by the overlay's inode,
/// not the host's, and gets `ECONNREFUSED` (test `host_sockets_behind_the_overlays_stay_unreachable`).
pub fn socket_roots(plan: &Plan, writable: &[PathBuf]) -> Vec<PathBuf> {
    let overlaid = |p: &PathBuf| {
        plan.overlay
            .layers
            .iter()
            .any(|l| &l.lower == p && l.name != "tmp" && l.name != "var-tmp")
    };
    writable.iter().filter(|p| !overlaid(p)).cloned().collect()
}
