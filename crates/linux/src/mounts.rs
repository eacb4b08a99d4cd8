//! The mount layer: a pure plan of mount steps computed from a [`Plan`], and its executor.
//!
//! # Order, and why
//! 1. **Capture host device nodes** (`/dev/null`, `/dev/zero`, ...) as detached clones — before the
//!    lockdown, because the lockdown makes every mount `nodev` and clones keep their own flags.
//! 2. **Lock down `/`** — one `mount_setattr(AT_RECURSIVE)` makes every mount of the new mount
//!    namespace read-only, `nosuid`, `nodev` and private. Private first: nothing done afterwards
//!    can propagate back to the host, and host mounts made later do not appear (writable) inside.
//!    `nodev` everywhere: a device node planted in the workspace or kept in a chroot is inert.
//! 3. **Capture** — detached clones (`open_tree(OPEN_TREE_CLONE)`) of everything that must later be
//!    attached somewhere: writable roots (made writable on the clone), the directories between a
//!    writable root and each protected path ("pins"), protected paths (made read-only on the
//!    clone), persistent temp dirs, allowed sockets. Capturing before anything is mounted over the
//!    host view means a workspace under `/tmp` is still reachable after `/tmp` is replaced.
//! 4. **New `/dev`, `/tmp`, `/var/tmp`, `/dev/shm`** — fresh tmpfs/devpts, with the captured device
//!    nodes attached. Raw disks and every other host device disappear.
//! 5. **Attach writable roots, then pins, then protected paths on top** — later mounts hide
//!    earlier ones, so protection wins over writability (a `.git` inside the workspace stays
//!    read-only). A mount point cannot be renamed or removed (`EBUSY`), so neither the `.git` nor
//!    any directory above it up to the writable root can be moved aside and replaced by one
//!    holding a forged `.git`.
//! 6. **Masks** for `deny_read` paths: a secret stays hidden even inside a writable root.
//! 7. **`/proc`** of the new pid namespace, mounted read-only (kernel knobs such as `/proc/sys`
//!    cannot be written even when the caller's uid is 0).
//!
//! [`steps`] is pure and unit-tested for this order; [`execute`] performs it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use stockade_policy::plan::{PathKind, Plan};
use stockade_sys::{self as sys, SysError, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// Host device nodes made available in the sandbox's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What a captured clone should become before it is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Clear read-only (writable roots, temp dirs).
    Writable,
    /// Set read-only (protected paths, kernel knobs).
    ReadOnly,
    /// Leave as captured (device nodes).
    AsIs,
    /// A symbolic link itself (a `.git` that is a link), cloned without following it.
    Link,
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
    /// Attach the link clone in `slot` onto the symbolic link at `target` (never following it), so
    /// the link cannot be removed, renamed or replaced.
    AttachLink { slot: usize, target: PathBuf },
    /// Create a detached overlay of `lower` beneath `upper` (see [`crate::overlay`]) into `slot`.
    Overlay {
        slot: usize,
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
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
    /// Overlaid trees (`plan.overlay.layers[].lower`) that were empty when probed: their upper
    /// dir is bound in directly instead of mounting an overlay over nothing (the same view, and
    /// the same upper for `stockade diff`, without overlayfs' per-mount work-dir checks).
    pub empty_lowers: Vec<PathBuf>,
    /// This run's overlayfs work-dir slot (`crate::overlay::Prepared::work`); without it, the
    /// plan's `work/<tree>`.
    pub overlay_work: Option<PathBuf>,
}

impl HostFacts {
    /// Look at the real host.
    pub fn probe(plan: &Plan) -> Self {
        HostFacts {
            devices: DEVICES
                .iter()
                .filter(|d| Path::new("/dev").join(d).exists())
                .map(|d| d.to_string())
                .collect(),
            empty_lowers: plan
                .overlay
                .layers
                .iter()
                .filter(|l| std::fs::read_dir(&l.lower).is_ok_and(|mut rd| rd.next().is_none()))
                .map(|l| l.lower.clone())
                .collect(),
            overlay_work: None,
        }
    }
}

fn within(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

/// The ordered mount steps for `plan` (see the module docs for the order).
pub fn steps(plan: &Plan, host: &HostFacts) -> Vec<Step> {
    let mut b = Builder::default();
    // 2. captures, while the host view is intact
    let slots = capture_all(&mut b, plan, host);
    // 3. fresh /dev, temp dirs
    fresh_dev(&mut b, &slots.dev);
    temp_dirs(&mut b, plan, &slots.temp);
    // 3c. copy-on-write overlays (before the writable roots, which are attached on top)
    for (target, s) in &slots.overlays {
        b.attach(*s, target.clone(), PathKind::Dir);
    }
    for (path, kind, s) in &slots.overlay_protected {
        b.attach(*s, path.clone(), *kind);
    }
    // 4. writable roots, then protection on top
    attach_roots_and_protection(&mut b, &slots);
    // 5. masks
    masks(&mut b, plan);
    // 6. /proc
    b.out.push(Step::Proc {
        target: "/proc".into(),
    });
    b.out
}

/// The steps being assembled, and the next free capture slot.
#[derive(Default)]
struct Builder {
    out: Vec<Step>,
    slot: usize,
}

impl Builder {
    /// Capture `source` into the next slot; returns the slot.
    fn capture(&mut self, source: PathBuf, access: Access) -> usize {
        self.out.push(Step::Capture {
            slot: self.slot,
            source,
            access,
        });
        self.slot += 1;
        self.slot - 1
    }

    fn attach(&mut self, slot: usize, target: PathBuf, kind: PathKind) {
        self.out.push(Step::Attach { slot, target, kind });
    }
}

/// The slots captured in phase 2, by what they become.
struct Slots {
    dev: Vec<(String, usize)>,
    roots: Vec<(PathBuf, usize)>,
    protected: Vec<(PathBuf, PathKind, usize)>,
    pins: Vec<(PathBuf, usize)>,
    links: Vec<(PathBuf, usize)>,
    temp: Vec<(PathBuf, usize)>,
    sockets: Vec<(PathBuf, usize)>,
    overlays: Vec<(PathBuf, usize)>,
    overlay_protected: Vec<(PathBuf, PathKind, usize)>,
}

/// Phase 2: every capture from the host view (and the lockdown, right after the device nodes).
fn capture_all(b: &mut Builder, plan: &Plan, host: &HostFacts) -> Slots {
    let dev = host
        .devices
        .iter()
        .map(|d| {
            (
                d.clone(),
                b.capture(Path::new("/dev").join(d), Access::AsIs),
            )
        })
        .collect();
    // Overlays are created while the upper layers' filesystem is still writable here.
    let overlays = overlay_steps(plan, host, b);
    // Lock down after the device nodes are captured: the lockdown makes every mount `nodev`, and
    // detached clones taken before it keep their own flags.
    b.out.push(Step::LockDownRoot);
    // An upper bound in directly is captured after the lockdown (so it is nosuid and nodev).
    let overlays = overlays
        .into_iter()
        .map(|(target, s)| match s {
            Ok(slot) => (target, slot),
            Err(upper) => (target, b.capture(upper, Access::Writable)),
        })
        .collect();
    let roots = plan
        .writable_roots
        .iter()
        .map(|r| (r.clone(), b.capture(r.clone(), Access::Writable)))
        .collect();
    let protected = plan
        .protected
        .iter()
        .filter(|p| within(&p.path, &plan.writable_roots))
        .map(|p| {
            (
                p.path.clone(),
                p.kind,
                b.capture(p.path.clone(), Access::ReadOnly),
            )
        })
        .collect();
    let link_paths: Vec<PathBuf> = plan
        .protected_symlinks
        .iter()
        .filter(|l| within(l, &plan.writable_roots))
        .cloned()
        .collect();
    let pins = pinned_ancestors(plan, &link_paths)
        .into_iter()
        .map(|a| (a.clone(), b.capture(a, Access::Writable)))
        .collect();
    let links = link_paths
        .into_iter()
        .map(|l| (l.clone(), b.capture(l, Access::Link)))
        .collect();
    let overlay_protected = plan
        .overlay
        .protected
        .iter()
        .map(|p| {
            (
                p.path.clone(),
                p.kind,
                b.capture(p.path.clone(), Access::ReadOnly),
            )
        })
        .collect();
    let temp = match (&plan.temp.private, &plan.temp.persist_dir) {
        (true, Some(dir)) => vec![
            (
                PathBuf::from("/tmp"),
                b.capture(dir.join("tmp"), Access::Writable),
            ),
            (
                PathBuf::from("/var/tmp"),
                b.capture(dir.join("var-tmp"), Access::Writable),
            ),
        ],
        _ => vec![],
    };
    // Allowed unix sockets may live under a directory that is about to be covered (a private
    // /tmp, a masked dir): keep them reachable at the same path.
    let sockets = plan
        .allow_unix_sockets
        .iter()
        .map(|p| (p.clone(), b.capture(p.clone(), Access::AsIs)))
        .collect();
    Slots {
        dev,
        roots,
        protected,
        pins,
        links,
        temp,
        sockets,
        overlays,
        overlay_protected,
    }
}

/// One `Step::Overlay` per layer, each into a new slot; returns (mount target, slot), or (mount
/// target, upper dir to capture after the lockdown) for a layer whose lower was empty.
type OverlaySlot = (PathBuf, Result<usize, PathBuf>);

fn overlay_steps(plan: &Plan, host: &HostFacts, b: &mut Builder) -> Vec<OverlaySlot> {
    let o = &plan.overlay;
    let mut v = Vec::new();
    for layer in &o.layers {
        let work = match &host.overlay_work {
            Some(slot) => Some(slot.join(&layer.name)),
            None => o.work(layer),
        };
        let (Some(upper), Some(work)) = (o.upper(layer), work) else {
            continue;
        };
        if host.empty_lowers.contains(&layer.lower) {
            v.push((layer.lower.clone(), Err(upper)));
            continue;
        }
        b.out.push(Step::Overlay {
            slot: b.slot,
            lower: layer.lower.clone(),
            upper,
            work,
        });
        v.push((layer.lower.clone(), Ok(b.slot)));
        b.slot += 1;
    }
    v
}

/// Every directory between a writable root and a protected path (or protected link), shallowest
/// first, each once. They become mount points too, so none can be renamed away (a mount point
/// is EBUSY) and replaced by one holding a forged `.git`.
fn pinned_ancestors(plan: &Plan, link_paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut ancestors: Vec<PathBuf> = Vec::new();
    let pinned_for = plan
        .protected
        .iter()
        .map(|p| &p.path)
        .chain(link_paths.iter())
        .filter(|p| within(p, &plan.writable_roots));
    for path in pinned_for {
        let Some(root) = plan
            .writable_roots
            .iter()
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
        else {
            continue;
        };
        let mut a = path.parent();
        while let Some(dir) = a {
            if dir == root.as_path() || !dir.starts_with(root) {
                break;
            }
            ancestors.push(dir.to_path_buf());
            a = dir.parent();
        }
    }
    ancestors.sort_by_key(|a| a.components().count());
    ancestors.dedup();
    let mut seen = std::collections::HashSet::new();
    ancestors
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .collect()
}

/// Phase 3a: a fresh `/dev` with the captured device nodes, devpts, shm and the usual links.
fn fresh_dev(b: &mut Builder, dev: &[(String, usize)]) {
    b.out.push(Step::Tmpfs {
        target: "/dev".into(),
        options: "mode=0755,size=64k".into(),
        read_only: false,
    });
    for (name, s) in dev {
        let target = Path::new("/dev").join(name);
        b.out.push(Step::Touch {
            path: target.clone(),
        });
        b.attach(*s, target, PathKind::File);
    }
    for d in ["pts", "shm"] {
        b.out.push(Step::Mkdir {
            path: Path::new("/dev").join(d),
        });
    }
    b.out.push(Step::Devpts {
        target: "/dev/pts".into(),
    });
    b.out.push(Step::Tmpfs {
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
        b.out.push(Step::Symlink {
            target: target.into(),
            link: link.into(),
        });
    }
}

/// Phase 3b: private `/tmp` and `/var/tmp` (fresh, or the persisted ones captured in phase 2).
fn temp_dirs(b: &mut Builder, plan: &Plan, temp: &[(PathBuf, usize)]) {
    if !plan.temp.private || plan.overlay.temp {
        return;
    }
    if temp.is_empty() {
        for t in ["/tmp", "/var/tmp"] {
            b.out.push(Step::Tmpfs {
                target: t.into(),
                options: "mode=1777".into(),
                read_only: false,
            });
        }
    } else {
        for (target, s) in temp {
            b.attach(*s, target.clone(), PathKind::Dir);
        }
    }
}

/// Phase 4: writable roots, the pinned directories and protected paths on top of them, the
/// protected links, then the allowed sockets.
fn attach_roots_and_protection(b: &mut Builder, slots: &Slots) {
    for (root, s) in &slots.roots {
        b.attach(*s, root.clone(), PathKind::Dir);
    }
    for (path, s) in &slots.pins {
        b.attach(*s, path.clone(), PathKind::Dir);
    }
    for (path, kind, s) in &slots.protected {
        b.attach(*s, path.clone(), *kind);
    }
    for (path, s) in &slots.links {
        b.out.push(Step::AttachLink {
            slot: *s,
            target: path.clone(),
        });
    }
    // Allowed sockets, at their own path (a socket inside a `deny_read` directory stays hidden:
    // the mask below wins).
    for (path, s) in &slots.sockets {
        b.attach(*s, path.clone(), PathKind::File);
    }
}

/// Phase 5: `deny_read` masks (an empty read-only tmpfs on a directory, `/dev/null` on a file),
/// and Stockade's own state (other workspaces' upper layers and temp dirs).
fn masks(b: &mut Builder, plan: &Plan) {
    for m in &plan.overlay.masks {
        b.out.push(Step::Tmpfs {
            target: m.clone(),
            options: "mode=000,size=4k".into(),
            read_only: true,
        });
    }
    for m in &plan.deny_read {
        match m.kind {
            PathKind::Dir => b.out.push(Step::Tmpfs {
                target: m.path.clone(),
                options: "mode=000,size=4k".into(),
                read_only: true,
            }),
            PathKind::File => {
                let s = b.capture("/dev/null".into(), Access::ReadOnly);
                b.attach(s, m.path.clone(), PathKind::File);
            }
        }
    }
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
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            0,
            true,
        ),
        Step::Capture {
            slot,
            source,
            access,
        } => {
            let fd = match access {
                Access::Link => sys::open_tree_clone_link(source)?,
                _ => sys::open_tree_clone(source, true)?,
            };
            match access {
                Access::AsIs | Access::Link => {}
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
                // A mask may sit inside an overlay whose upper layer an earlier run wrote: never
                // mount through a symlink planted there.
                ensure_mountpoint(target, PathKind::Dir)?;
            }
            sys::mount_fs(c"tmpfs", target, flags, Some(&data))
        }
        Step::Devpts { target } => sys::mount_fs(
            c"devpts",
            target,
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(c"newinstance,ptmxmode=0666,mode=620"),
        ),
        // Read-only as a whole: kernel knobs (`/proc/sys`, `sysrq-trigger`, `irq`, ...) cannot be
        // written even by a caller whose uid is 0. Writes through `/proc/self/fd/N` still reach
        // their files (those are other mounts); direct writes such as `oom_score_adj` fail.
        Step::Proc { target } => sys::mount_fs(
            c"proc",
            target,
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
            None,
        ),
        Step::Overlay {
            slot,
            lower,
            upper,
            work,
        } => {
            let fd = sys::overlayfs::overlay_mount(lower, upper, work).map_err(|e| SysError {
                call: e.call,
                what: overlay_refusal(lower, &e),
                source: e.source,
            })?;
            if slots.len() <= *slot {
                slots.resize_with(*slot + 1, || None);
            }
            slots[*slot] = Some(fd);
            Ok(())
        }
        Step::Mkdir { path } => sys::mkdir(path, 0o755),
        Step::Touch { path } => sys::touch(path, 0o644),
        Step::Symlink { target, link } => sys::symlink(target, link),
        Step::AttachLink { slot, target } => {
            let fd = take_slot(slots, *slot)?;
            match std::fs::symlink_metadata(target) {
                Ok(m) if m.file_type().is_symlink() => sys::move_mount_to(&fd, target),
                _ => Err(SysError {
                    call: "attach link",
                    what: format!("{} is no longer a symbolic link", target.display()),
                    source: std::io::Error::from_raw_os_error(libc::EINVAL),
                }),
            }
        }
        Step::Attach { slot, target, kind } => {
            let fd = take_slot(slots, *slot)?;
            ensure_mountpoint(target, *kind)?;
            sys::move_mount_to(&fd, target)
        }
    }
}

/// Take the captured clone out of `slot` (each is attached exactly once).
fn take_slot(slots: &mut [Option<OwnedFd>], slot: usize) -> Result<OwnedFd, SysError> {
    slots
        .get_mut(slot)
        .and_then(Option::take)
        .ok_or_else(|| SysError {
            call: "attach",
            what: format!("slot {slot} empty"),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        })
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

/// The reason an overlay of `lower` was refused, with the way out. One cause is common and
/// not the kernel's lack of a feature: something mounted beneath `lower` on the host (a FUSE
/// or tmpfs mount in the home, a mount below `/tmp`). In the sandbox's user namespace such
/// inherited mounts are locked, and overlayfs refuses to clone a lower tree with locked
/// children (`EINVAL`, "failed to clone lowerpath" in the kernel log): those mounts are named.
fn overlay_refusal(lower: &Path, e: &SysError) -> String {
    let beneath = if e.source.raw_os_error() == Some(libc::EINVAL) {
        std::fs::read("/proc/self/mountinfo")
            .map(|m| mounts_beneath(&m, lower))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if beneath.is_empty() {
        return format!(
            "{} (copy-on-write outside the workspace needs overlayfs mountable in a user \
             namespace, Linux 5.11+; to run without it set filesystem.outside_writes = \
             \"deny\" and temp.mode = \"empty\")",
            e.what
        );
    }
    let names: Vec<String> = beneath
        .iter()
        .take(5)
        .map(|p| p.display().to_string().escape_debug().to_string())
        .collect();
    format!(
        "{}: the kernel cannot overlay {} while something is mounted beneath it ({}{}): \
         mounts inherited from the host are locked in the sandbox's user namespace and \
         overlayfs refuses a lower tree with locked mounts. Unmount them, or run without \
         copy-on-write there: filesystem.outside_writes = \"deny\" (the home) or temp.mode = \
         \"empty\" (/tmp, /var/tmp)",
        e.what,
        lower.display(),
        names.join(", "),
        if beneath.len() > 5 { ", ..." } else { "" }
    )
}

/// Mount points strictly beneath `dir` in a `mountinfo` listing (field 5, octal escapes
/// decoded).
fn mounts_beneath(mountinfo: &[u8], dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|f| PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(f))))
        .filter(|p| p != dir && p.starts_with(dir))
        .collect()
}

/// `\040`-style escapes of `mountinfo` decoded; anything else kept as is.
fn unescape_octal(f: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        let oct = f
            .get(i + 1..i + 4)
            .filter(|d| f[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(f[i]);
                i += 1;
            }
        }
    }
    out
}

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
            git_mode: stockade_policy::model::GitMode::ReadOnly,
            git_repos: vec![],
            warnings: vec![],
            overlay: Default::default(),
            write_gate: false,
            protected_names: vec![],
            windows_lock_protected_dacls: true,
        }
    }

    fn host() -> HostFacts {
        HostFacts {
            empty_lowers: vec![],
            overlay_work: None,
            devices: vec!["null".into(), "tty".into()],
        }
    }

    fn attach_at(steps: &[Step], target: &str) -> usize {
        index(
            steps,
            |s| matches!(s, Step::Attach { target: t, .. } if t == Path::new(target)),
        )
    }

    fn index(steps: &[Step], pred: impl Fn(&Step) -> bool) -> usize {
        steps.iter().position(pred).expect("step present")
    }

    #[test]
    fn only_device_captures_precede_the_lockdown() {
        let s = steps(&plan(), &host());
        let lock = index(&s, |s| matches!(s, Step::LockDownRoot));
        assert!(s[..lock]
            .iter()
            .all(|s| matches!(s, Step::Capture { source, access: Access::AsIs, .. } if source.starts_with("/dev"))));
        assert_eq!(lock, host().devices.len());
    }

    #[test]
    fn directories_between_root_and_protected_paths_are_pinned_before_protection() {
        let s = steps(&plan(), &host());
        let root = attach_at(&s, "/tmp/ws");
        let pin = attach_at(&s, "/tmp/ws/sub");
        let sub = attach_at(&s, "/tmp/ws/sub/.git");
        assert!(root < pin && pin < sub);
        // the writable root itself and paths outside roots are not pinned again
        let pins: Vec<_> = s
            .iter()
            .filter(|s| matches!(s, Step::Capture { access: Access::Writable, source, .. } if source.starts_with("/tmp/ws")))
            .collect();
        assert_eq!(pins.len(), 2, "{pins:?}");
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
        let root = attach_at(&s, "/tmp/ws");
        let git = attach_at(&s, "/tmp/ws/.git");
        let sub = attach_at(&s, "/tmp/ws/sub/.git");
        let tmp = attach_at(&s, "/tmp");
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
        assert!(s.iter().any(|s| matches!(s, Step::Capture { source, access: Access::Writable, .. } if source == Path::new("/tmp/ws"))));
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
    fn overlays_are_made_before_the_lockdown_and_attached_beneath_roots_and_masks() {
        use stockade_policy::overlay::{OverlayLayer, OverlayPlan};
        let mut p = plan();
        p.overlay = OverlayPlan {
            layers: vec![
                OverlayLayer {
                    lower: "/home/u".into(),
                    name: "home".into(),
                },
                OverlayLayer {
                    lower: "/tmp".into(),
                    name: "tmp".into(),
                },
            ],
            state: Some("/state/ws/ab".into()),
            masks: vec!["/state/ws".into()],
            protected: vec![PlannedPath {
                path: "/home/u/.claude".into(),
                kind: PathKind::Dir,
                reason: "x".into(),
            }],
            max_bytes: None,
            temp: true,
        };
        let s = steps(&p, &host());
        let lock = index(&s, |s| matches!(s, Step::LockDownRoot));
        let ov = index(
            &s,
            |s| matches!(s, Step::Overlay { lower, upper, .. } if lower == Path::new("/home/u") && upper == Path::new("/state/ws/ab/upper/home")),
        );
        assert!(ov < lock);
        let home = attach_at(&s, "/home/u");
        let tmp = attach_at(&s, "/tmp");
        let root = attach_at(&s, "/home/u/cache");
        let claude = attach_at(&s, "/home/u/.claude");
        let ssh = index(
            &s,
            |s| matches!(s, Step::Tmpfs { target, .. } if target == Path::new("/home/u/.ssh")),
        );
        let state = index(
            &s,
            |s| matches!(s, Step::Tmpfs { target, .. } if target == Path::new("/state/ws")),
        );
        assert!(home < root && tmp < attach_at(&s, "/tmp/ws") && home < claude && claude < ssh);
        assert!(home < state);
        // the overlay replaces the private tmpfs /tmp
        assert!(!s
            .iter()
            .any(|s| matches!(s, Step::Tmpfs { target, .. } if target == Path::new("/tmp"))));
    }

    #[test]
    fn an_empty_lower_binds_its_upper_instead_of_an_overlay() {
        use stockade_policy::overlay::{OverlayLayer, OverlayPlan};
        let mut p = plan();
        p.overlay = OverlayPlan {
            layers: vec![
                OverlayLayer {
                    lower: "/tmp".into(),
                    name: "tmp".into(),
                },
                OverlayLayer {
                    lower: "/var/tmp".into(),
                    name: "var-tmp".into(),
                },
            ],
            state: Some("/state/ws/ab".into()),
            temp: true,
            ..Default::default()
        };
        let mut h = host();
        h.empty_lowers = vec!["/var/tmp".into()];
        let s = steps(&p, &h);
        assert!(s
            .iter()
            .any(|s| matches!(s, Step::Overlay { lower, .. } if lower == Path::new("/tmp"))));
        assert!(!s
            .iter()
            .any(|s| matches!(s, Step::Overlay { lower, .. } if lower == Path::new("/var/tmp"))));
        let cap = index(
            &s,
            |s| matches!(s, Step::Capture { source, access: Access::Writable, .. } if source == Path::new("/state/ws/ab/upper/var-tmp")),
        );
        let lock = index(&s, |s| matches!(s, Step::LockDownRoot));
        assert!(lock < cap && cap < attach_at(&s, "/var/tmp"));
        assert!(!s
            .iter()
            .any(|s| matches!(s, Step::Tmpfs { target, .. } if target == Path::new("/var/tmp"))));
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

    #[test]
    fn mounts_beneath_a_lower_are_named_with_escapes_decoded() {
        let info = b"22 1 254:0 / / rw - ext4 /dev/vda rw\n\
            30 22 0:40 / /root/my\\040shm rw - tmpfs tmpfs rw\n\
            31 22 0:41 / /root rw - tmpfs tmpfs rw\n\
            32 22 0:42 / /rootx rw - tmpfs tmpfs rw\n\
            33 22 0:43 / /tmp/a rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mounts_beneath(info, Path::new("/root")),
            vec![PathBuf::from("/root/my shm")]
        );
        assert_eq!(
            mounts_beneath(info, Path::new("/tmp")),
            vec![PathBuf::from("/tmp/a")]
        );
        assert!(mounts_beneath(info, Path::new("/var/tmp")).is_empty());
        assert_eq!(unescape_octal(b"a\\011b\\9c\\"), b"a\tb\\9c\\".to_vec());
    }
}
