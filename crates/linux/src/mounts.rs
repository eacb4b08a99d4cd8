//! The mount layer: a pure plan of mount steps computed from a [`Plan`], and its executor.
//!
//! # Order, and why
//! 1. **Lock down `/`** — one `mount_setattr(AT_RECURSIVE)` makes every mount of the new mount
//!    namespace read-only, `nosuid` and private. Private first: nothing done afterwards can
//!    propagate back to the host, and host mounts made later do not appear (writable) inside.
//! 2. **Capture** — detached clones (`open_tree(OPEN_TREE_CLONE)`) of everything that must later be
//!    attached somewhere: host device nodes, writable roots (made writable on the clone), protected
//!    paths (made read-only on the clone), persistent temp dirs. Capturing before anything is
//!    mounted over the host view means a workspace under `/tmp` is still reachable even after `/tmp`
//!    is replaced.
//! 3. **New `/dev`, `/tmp`, `/var/tmp`, `/dev/shm`** — fresh tmpfs/devpts, with the captured device
//!    nodes attached. Raw disks and every other host device disappear.
//! 4. **Attach writable roots**, then **protected paths on top** — later mounts hide earlier ones, so
//!    protection wins over writability (a `.git` inside the workspace stays read-only, and being a
//!    mount point it cannot be renamed or removed either).
//! 5. **Masks** for `deny_read` paths last: a secret stays hidden even inside a writable root.
//! 6. **`/proc`** of the new pid namespace, with its kernel knobs (`/proc/sys`, ...) bound read-only.
//!
//! [`steps`] is pure and unit-tested for this order; [`execute`] performs it.

use crate::sys::{
    self, SysError, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use stockade_policy::plan::{PathKind, Plan};

/// Host device nodes made available in the sandbox's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Kernel interfaces under `/proc` kept read-only.
const PROC_READ_ONLY: &[&str] = &[
    "sys",
    "sysrq-trigger",
    "irq",
    "bus",
    "fs",
    "acpi",
    "scsi",
    "driver",
    "tty",
];

/// What a captured clone should become before it is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Clear read-only (writable roots, temp dirs).
    Writable,
    /// Set read-only (protected paths, kernel knobs).
    ReadOnly,
    /// Leave as captured (device nodes).
    AsIs,
}

/// One mount step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make every mount read-only, nosuid and private, recursively.
    LockDownRoot,
    /// Clone the tree at `source` into slot `slot`, adjusting its access.
    Capture {
        slot: usize,
        source: PathBuf,
        access: Access,
    },
    /// Mount a fresh tmpfs.
    Tmpfs {
        target: PathBuf,
        options: String,
        read_only: bool,
    },
    /// Mount a new devpts instance.
    Devpts { target: PathBuf },
    /// Mount a new proc for the pid namespace.
    Proc { target: PathBuf },
    /// Create a directory (inside a fresh tmpfs).
    Mkdir { path: PathBuf },
    /// Create an empty file (a bind target inside a fresh tmpfs).
    Touch { path: PathBuf },
    /// Create a symlink.
    Symlink { target: PathBuf, link: PathBuf },
    /// Attach the clone in `slot` at `target`; create the mount point (dir or file) if missing.
    Attach {
        slot: usize,
        target: PathBuf,
        kind: PathKind,
    },
}

/// Facts about the host the steps depend on (kept outside so planning stays pure).
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Device names from [`DEVICES`] that exist on the host.
    pub devices: Vec<String>,
    /// Entries of [`PROC_READ_ONLY`] that exist in `/proc`.
    pub proc_read_only: Vec<String>,
}

impl HostFacts {
    /// Look at the real host.
    pub fn probe() -> Self {
        HostFacts {
            devices: DEVICES
                .iter()
                .filter(|d| Path::new("/dev").join(d).exists())
                .map(|d| d.to_string())
                .collect(),
            proc_read_only: PROC_READ_ONLY
                .iter()
                .filter(|p| Path::new("/proc").join(p).exists())
                .map(|p| p.to_string())
                .collect(),
        }
    }
}

fn within(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

/// The ordered mount steps for `plan` (see the module docs for the order).
pub fn steps(plan: &Plan, host: &HostFacts) -> Vec<Step> {
    let mut out = vec![Step::LockDownRoot];
    let mut slot = 0usize;
    let mut capture = |out: &mut Vec<Step>, source: PathBuf, access| {
        out.push(Step::Capture {
            slot,
            source,
            access,
        });
        slot += 1;
        slot - 1
    };

    // 2. captures, while the host view is intact
    let dev_slots: Vec<(String, usize)> = host
        .devices
        .iter()
        .map(|d| {
            (
                d.clone(),
                capture(&mut out, Path::new("/dev").join(d), Access::AsIs),
            )
        })
        .collect();
    let root_slots: Vec<(PathBuf, usize)> = plan
        .writable_roots
        .iter()
        .map(|r| (r.clone(), capture(&mut out, r.clone(), Access::Writable)))
        .collect();
    let protected_slots: Vec<(PathBuf, PathKind, usize)> = plan
        .protected
        .iter()
        .filter(|p| within(&p.path, &plan.writable_roots))
        .map(|p| {
            (
                p.path.clone(),
                p.kind,
                capture(&mut out, p.path.clone(), Access::ReadOnly),
            )
        })
        .collect();
    let temp_slots: Vec<(PathBuf, usize)> = match (&plan.temp.private, &plan.temp.persist_dir) {
        (true, Some(dir)) => vec![
            (
                PathBuf::from("/tmp"),
                capture(&mut out, dir.join("tmp"), Access::Writable),
            ),
            (
                PathBuf::from("/var/tmp"),
                capture(&mut out, dir.join("var-tmp"), Access::Writable),
            ),
        ],
        _ => vec![],
    };

    // Allowed unix sockets may live under a directory that is about to be covered (a private
    // /tmp, a masked dir): keep them reachable at the same path.
    let socket_slots: Vec<(PathBuf, usize)> = plan
        .allow_unix_sockets
        .iter()
        .map(|p| (p.clone(), capture(&mut out, p.clone(), Access::AsIs)))
        .collect();

    // 3. fresh /dev, temp dirs
    out.push(Step::Tmpfs {
        target: "/dev".into(),
        options: "mode=0755,size=64k".into(),
        read_only: false,
    });
    for (name, s) in &dev_slots {
        let target = Path::new("/dev").join(name);
        out.push(Step::Touch {
            path: target.clone(),
        });
        out.push(Step::Attach {
            slot: *s,
            target,
            kind: PathKind::File,
        });
    }
    for d in ["pts", "shm"] {
        out.push(Step::Mkdir {
            path: Path::new("/dev").join(d),
        });
    }
    out.push(Step::Devpts {
        target: "/dev/pts".into(),
    });
    out.push(Step::Tmpfs {
        target: "/dev/shm".into(),
        options: "mode=1777".into(),
        read_only: false,
    });
    for (target, link) in [
        ("pts/ptmx", "/dev/ptmx"),
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        out.push(Step::Symlink {
            target: target.into(),
            link: link.into(),
        });
    }
    if plan.temp.private {
        if temp_slots.is_empty() {
            for t in ["/tmp", "/var/tmp"] {
                out.push(Step::Tmpfs {
                    target: t.into(),
                    options: "mode=1777".into(),
                    read_only: false,
                });
            }
        } else {
            for (target, s) in &temp_slots {
                out.push(Step::Attach {
                    slot: *s,
                    target: target.clone(),
                    kind: PathKind::Dir,
                });
            }
        }
    }

    // 4. writable roots, then protection on top
    for (root, s) in &root_slots {
        out.push(Step::Attach {
            slot: *s,
            target: root.clone(),
            kind: PathKind::Dir,
        });
    }
    for (path, kind, s) in &protected_slots {
        out.push(Step::Attach {
            slot: *s,
            target: path.clone(),
            kind: *kind,
        });
    }

    // Allowed sockets, at their own path (a socket inside a `deny_read` directory stays hidden:
    // the mask below wins).
    for (path, s) in &socket_slots {
        out.push(Step::Attach {
            slot: *s,
            target: path.clone(),
            kind: PathKind::File,
        });
    }

    // 5. masks
    for m in &plan.deny_read {
        match m.kind {
            PathKind::Dir => out.push(Step::Tmpfs {
                target: m.path.clone(),
                options: "mode=000,size=4k".into(),
                read_only: true,
            }),
            PathKind::File => {
                let s = capture(&mut out, "/dev/null".into(), Access::ReadOnly);
                out.push(Step::Attach {
                    slot: s,
                    target: m.path.clone(),
                    kind: PathKind::File,
                });
            }
        }
    }

    // 6. /proc
    out.push(Step::Proc {
        target: "/proc".into(),
    });
    for p in &host.proc_read_only {
        let path = Path::new("/proc").join(p);
        let s = capture(&mut out, path.clone(), Access::ReadOnly);
        let kind = if p == "sysrq-trigger" {
            PathKind::File
        } else {
            PathKind::Dir
        };
        out.push(Step::Attach {
            slot: s,
            target: path,
            kind,
        });
    }
    out
}

/// A failed mount step.
#[derive(Debug, thiserror::Error)]
#[error("mount step {step} failed: {source}")]
pub struct MountError {
    /// The step, rendered.
    pub step: String,
    /// The syscall failure.
    #[source]
    pub source: SysError,
}

/// Perform `steps` in the current (new, private) mount namespace.
pub fn execute(steps: &[Step]) -> Result<(), MountError> {
    let mut slots: Vec<Option<OwnedFd>> = Vec::new();
    for step in steps {
        run_step(step, &mut slots).map_err(|source| MountError {
            step: format!("{step:?}"),
            source,
        })?;
    }
    Ok(())
}

fn run_step(step: &Step, slots: &mut Vec<Option<OwnedFd>>) -> Result<(), SysError> {
    match step {
        Step::LockDownRoot => sys::mount_setattr(
            libc::AT_FDCWD,
            c"/",
            true,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
            0,
            true,
        ),
        Step::Capture {
            slot,
            source,
            access,
        } => {
            let fd = sys::open_tree_clone(source, true)?;
            match access {
                Access::AsIs => {}
                Access::ReadOnly => {
                    sys::mount_setattr(fd.as_raw_fd(), c"", true, MOUNT_ATTR_RDONLY, 0, false)?
                }
                Access::Writable => {
                    // Clearing read-only fails for the whole tree if a submount was read-only on
                    // the host (locked): then only the root of the clone becomes writable.
                    if let Err(e) =
                        sys::mount_setattr(fd.as_raw_fd(), c"", true, 0, MOUNT_ATTR_RDONLY, false)
                    {
                        if e.errno() != Some(libc::EPERM) {
                            return Err(e);
                        }
                        tracing::warn!(
                            "{}: a submount is read-only on the host and stays so",
                            source.display()
                        );
                        sys::mount_setattr(
                            fd.as_raw_fd(),
                            c"",
                            false,
                            0,
                            MOUNT_ATTR_RDONLY,
                            false,
                        )?;
                    }
                }
            }
            if slots.len() <= *slot {
                slots.resize_with(*slot + 1, || None);
            }
            slots[*slot] = Some(fd);
            Ok(())
        }
        Step::Tmpfs {
            target,
            options,
            read_only,
        } => {
            let data = std::ffi::CString::new(options.as_str()).map_err(|_| SysError {
                call: "tmpfs options",
                what: options.clone(),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
            let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
            if *read_only {
                flags |= libc::MS_RDONLY | libc::MS_NOEXEC;
            }
            sys::mount_fs(c"tmpfs", target, flags, Some(&data))
        }
        Step::Devpts { target } => sys::mount_fs(
            c"devpts",
            target,
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(c"newinstance,ptmxmode=0666,mode=620"),
        ),
        Step::Proc { target } => sys::mount_fs(
            c"proc",
            target,
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        ),
        Step::Mkdir { path } => sys::mkdir(path, 0o755),
        Step::Touch { path } => sys::touch(path, 0o644),
        Step::Symlink { target, link } => sys::symlink(target, link),
        Step::Attach { slot, target, kind } => {
            let fd = slots
                .get_mut(*slot)
                .and_then(Option::take)
                .ok_or_else(|| SysError {
                    call: "attach",
                    what: format!("slot {slot} empty"),
                    source: std::io::Error::from_raw_os_error(libc::EINVAL),
                })?;
            ensure_mountpoint(target, *kind)?;
            sys::move_mount_to(&fd, target)
        }
    }
}

/// Make sure `target` exists as a mount point of `kind`, creating what is missing (only possible
/// inside a fresh tmpfs or the private temp dir: on the read-only host view creation fails, which
/// is the right answer). Every target is canonical, so a symlink on the way means someone planted
/// it (e.g. in a persisted `/tmp` by an earlier run): refused rather than followed.
fn ensure_mountpoint(target: &Path, kind: PathKind) -> Result<(), SysError> {
    let refuse = |p: &Path| {
        SysError {
        call: "mount point",
        what: format!("{} is a symlink; refusing to mount through it (`stockade clean` resets a workspace's private /tmp)", p.display()),
        source: std::io::Error::from_raw_os_error(libc::ELOOP),
    }
    };
    let mut prefix = PathBuf::new();
    let parts: Vec<_> = target.components().collect();
    for (i, part) in parts.iter().enumerate() {
        prefix.push(part);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&prefix) {
            Ok(m) if m.file_type().is_symlink() => return Err(refuse(&prefix)),
            Ok(_) => {}
            Err(_) if last && kind == PathKind::File => sys::touch(&prefix, 0o644)?,
            Err(_) => sys::mkdir(&prefix, 0o755)?,
        }
    }
    Ok(())
}

/// Unused-flag guard: keep the mount attribute constants referenced for documentation.
#[allow(dead_code)]
const _ATTRS: u64 = MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;

#[cfg(test)]
mod tests {
    use super::*;
    use stockade_policy::model::{LimitsPolicy, NetworkMode};
    use stockade_policy::plan::{PlannedPath, TempPlan};

    fn plan() -> Plan {
        Plan {
            workspace: "/tmp/ws".into(),
            cwd: "/tmp/ws".into(),
            writable_roots: vec!["/tmp/ws".into(), "/home/u/cache".into()],
            protected: vec![
                PlannedPath {
                    path: "/tmp/ws/.git".into(),
                    kind: PathKind::Dir,
                    reason: ".git".into(),
                },
                PlannedPath {
                    path: "/tmp/ws/sub/.git".into(),
                    kind: PathKind::File,
                    reason: ".git".into(),
                },
                PlannedPath {
                    path: "/elsewhere/gitdir".into(),
                    kind: PathKind::Dir,
                    reason: "gitdir".into(),
                },
            ],
            protected_missing: vec![],
            deny_read: vec![
                PlannedPath {
                    path: "/home/u/.ssh".into(),
                    kind: PathKind::Dir,
                    reason: "deny".into(),
                },
                PlannedPath {
                    path: "/home/u/.netrc".into(),
                    kind: PathKind::File,
                    reason: "deny".into(),
                },
            ],
            allow_unix_sockets: vec![],
            network: NetworkMode::Off,
            allowed_domains: vec![],
            env: vec![],
            env_removed: vec![],
            limits: LimitsPolicy::default(),
            temp: TempPlan {
                private: true,
                persist_dir: Some("/home/u/.local/state/stockade/tmp/ab".into()),
            },
            protected_symlinks: vec![],
            warnings: vec![],
        }
    }

    fn host() -> HostFacts {
        HostFacts {
            devices: vec!["null".into(), "tty".into()],
            proc_read_only: vec!["sys".into()],
        }
    }

    fn index(steps: &[Step], pred: impl Fn(&Step) -> bool) -> usize {
        steps.iter().position(pred).expect("step present")
    }

    #[test]
    fn lockdown_comes_first() {
        assert_eq!(steps(&plan(), &host())[0], Step::LockDownRoot);
    }

    #[test]
    fn every_capture_precedes_every_covering_mount() {
        let s = steps(&plan(), &host());
        let first_cover = index(&s, |s| matches!(s, Step::Tmpfs { .. }));
        let last_host_capture = s
            .iter()
            .rposition(|s| matches!(s, Step::Capture { source, .. } if !source.starts_with("/proc") && source != Path::new("/dev/null")))
            .unwrap();
        assert!(last_host_capture < first_cover, "{s:#?}");
    }

    #[test]
    fn protection_is_attached_after_writable_roots_and_masks_last_before_proc() {
        let s = steps(&plan(), &host());
        let root = index(
            &s,
            |s| matches!(s, Step::Attach { target, .. } if target == Path::new("/tmp/ws")),
        );
        let git = index(
            &s,
            |s| matches!(s, Step::Attach { target, .. } if target == Path::new("/tmp/ws/.git")),
        );
        let sub = index(
            &s,
            |s| matches!(s, Step::Attach { target, .. } if target == Path::new("/tmp/ws/sub/.git")),
        );
        let tmp = index(
            &s,
            |s| matches!(s, Step::Attach { target, .. } if target == Path::new("/tmp")),
        );
        let mask = index(
            &s,
            |s| matches!(s, Step::Tmpfs { target, .. } if target == Path::new("/home/u/.ssh")),
        );
        let proc_ = index(&s, |s| matches!(s, Step::Proc { .. }));
        assert!(
            tmp < root,
            "private /tmp must be in place before a workspace under /tmp is attached"
        );
        assert!(root < git && git < sub);
        assert!(sub < mask && mask < proc_);
    }

    #[test]
    fn protected_paths_outside_writable_roots_are_not_remounted() {
        let s = steps(&plan(), &host());
        assert!(!s.iter().any(|s| matches!(s, Step::Capture { source, .. } if source == Path::new("/elsewhere/gitdir"))));
    }

    #[test]
    fn writable_roots_are_captured_writable_and_protected_read_only() {
        let s = steps(&plan(), &host());
        assert!(s.contains(&Step::Capture {
            slot: 2,
            source: "/tmp/ws".into(),
            access: Access::Writable
        }));
        assert!(s.iter().any(|s| matches!(s, Step::Capture { source, access: Access::ReadOnly, .. } if source == Path::new("/tmp/ws/.git"))));
    }

    #[test]
    fn read_only_plan_has_no_writable_capture() {
        let mut p = plan();
        p.writable_roots.clear();
        p.temp.private = false;
        let s = steps(&p, &host());
        assert!(!s.iter().any(|s| matches!(
            s,
            Step::Capture {
                access: Access::Writable,
                ..
            }
        )));
        assert!(!s
            .iter()
            .any(|s| matches!(s, Step::Tmpfs { target, .. } if target == Path::new("/tmp"))));
    }

    #[test]
    fn fresh_temp_without_persistence() {
        let mut p = plan();
        p.temp.persist_dir = None;
        let s = steps(&p, &host());
        assert!(s
            .iter()
            .any(|s| matches!(s, Step::Tmpfs { target, .. } if target == Path::new("/tmp"))));
    }

    #[test]
    fn every_attach_uses_a_captured_slot_once() {
        let s = steps(&plan(), &host());
        let mut captured = std::collections::HashSet::new();
        let mut used = std::collections::HashSet::new();
        for st in &s {
            match st {
                Step::Capture { slot, .. } => assert!(captured.insert(*slot)),
                Step::Attach { slot, .. } => {
                    assert!(captured.contains(slot), "attach before capture: {st:?}");
                    assert!(used.insert(*slot), "slot attached twice: {st:?}");
                }
                _ => {}
            }
        }
        assert_eq!(captured, used);
    }
}
