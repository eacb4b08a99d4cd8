//! Namespaces the broker's child creates as root before it drops to the sandbox account.
//!
//! The elevated tier exists for machines where *unprivileged* user namespaces are blocked; the
//! broker is root, so it can still give each run a private mount namespace and, offline, a
//! private network namespace — no user namespace involved:
//! * every protected path inside a writable root (`.git` dirs, files and symlinks, gitdirs,
//!   agent config dirs) is bound read-only onto itself, and every directory between the root and
//!   it is bound onto itself too: a mount point cannot be renamed or removed (`EBUSY`), so a
//!   repository cannot be moved aside and replaced by one with forged hooks, which ACLs and
//!   Landlock alone allow (renaming an entry only needs write access to its parent);
//! * offline runs get a network namespace with only loopback up, so servers inside work while
//!   the host's loopback (and everything else) is out of reach — on top of the nftables rules;
//! * every run gets a private IPC namespace: System V shared memory, message queues and
//!   semaphores (and POSIX message queues) created inside are invisible to the host and to
//!   other runs, and vanish with the run's last process; the host's objects are out of reach.
//!
//! Everything that inspects the filesystem happens in [`NsPlan::new`], in the broker;
//! [`NsPlan::apply`] runs in the run's own process ([`crate::runner`]), as root, before it drops
//! to the sandbox account, and makes raw syscalls only.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use stockade_sys as sys;

/// One bind of a path onto itself, identified by the writable root it lies beneath, its path
/// relative to that root and the inode the broker found there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelfBind {
    /// The full path (for messages).
    pub path: PathBuf,
    /// Index of the root in [`NsPlan::roots`].
    pub root: usize,
    /// Path relative to the root (no `..`, no symlink on the way).
    pub rel: PathBuf,
    /// Device the broker found.
    pub dev: u64,
    /// Inode the broker found.
    pub ino: u64,
    /// Read-only (protected) or left as is (a pin).
    pub read_only: bool,
    /// A symbolic link, cloned and mounted without following it.
    pub link: bool,
}

/// Why a run's binds could not be planned.
#[derive(Debug, thiserror::Error)]
#[error("protected path {path}: {source} (it must lie beneath its writable root without symlinks on the way)")]
pub struct PlanError {
    /// The path.
    pub path: PathBuf,
    /// Cause.
    pub source: io::Error,
}

/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`: how every path beneath a
/// writable root is resolved, in the broker and in the run's process.
const BENEATH: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// Opens `rel` beneath `root` without following anything (the final component itself if it is a
/// symbolic link) and returns the descriptor with its device, inode and whether it is a link.
fn open_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<(OwnedFd, u64, u64, bool)> {
    let fd = sys::fs::openat2(Some(root), rel, libc::O_PATH | libc::O_NOFOLLOW, BENEATH)?;
    let st = sys::fs::fstat(fd.as_fd())?;
    let link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    Ok((fd, st.st_dev, st.st_ino, link))
}

/// The id mapping of the writable roots' idmapped binds: inside a run, the caller's files
/// appear owned by the caller's sandbox account, and what the account creates is stored as the
/// caller's (uid and group).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    /// The caller's sandbox account (this run's uid).
    pub sandbox_uid: u32,
    /// The caller.
    pub caller_uid: u32,
    /// The sandbox group (the run's primary gid).
    pub sandbox_gid: u32,
    /// The caller's primary group.
    pub caller_gid: u32,
    /// The caller's grant group, mapped onto itself so the ACL grants keep their meaning.
    pub grant_gid: u32,
    /// The caller's other groups, each mapped onto itself: the kernel refuses any write to an
    /// inode whose owner or group the mount does not map, so without them a file of the caller's
    /// in a shared-group directory could not be written. The account is not a member of them,
    /// so it gains no group permission and cannot `chgrp` to them.
    #[serde(default)]
    pub extra_gids: Vec<u32>,
}

impl IdMap {
    /// `uid_map` of the mapping user namespace. An idmapped mount reads an on-disk id as an id
    /// *inside* the namespace and shows the id outside: the caller's uid inside, the sandbox
    /// account's outside (and a file the account creates is stored as the caller's). Pure.
    pub fn uid_map(&self) -> String {
        format!("{} {} 1\n", self.caller_uid, self.sandbox_uid)
    }
    /// `gid_map`: the caller's group inside ↔ the sandbox group outside, the grant group onto
    /// itself. `None` when the ranges would overlap (then the run is refused). Pure.
    pub fn gid_map(&self) -> Option<String> {
        let (s, c, g) = (self.sandbox_gid, self.caller_gid, self.grant_gid);
        if s == g || c == g {
            return None;
        }
        let mut m = format!("{c} {s} 1\n{g} {g} 1\n");
        let mut extra: Vec<u32> = self
            .extra_gids
            .iter()
            .copied()
            .filter(|x| ![s, c, g].contains(x))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        // The kernel takes at most 340 lines.
        for x in extra.into_iter().take(300) {
            m.push_str(&format!("{x} {x} 1\n"));
        }
        Some(m)
    }
}

/// A writable root to bind idmapped onto itself, identified by what the broker validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdmappedRoot {
    /// The root's canonical path.
    pub path: PathBuf,
    /// Device and inode the broker validated (the run's process refuses anything else).
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

/// What the child must do, computed in the broker (it travels to the run's process in its
/// specification).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NsPlan {
    /// Writable roots bound idmapped onto themselves (outermost only: a nested root is inside
    /// its parent's idmapped bind already), before every other bind.
    pub idmapped: Vec<IdmappedRoot>,
    /// The mapping of those binds.
    pub idmap: Option<IdMap>,
    /// The writable roots the binds lie beneath (path, device, inode as validated).
    pub roots: Vec<IdmappedRoot>,
    /// Binds in order: pins (shallowest first), then protected paths.
    pub binds: Vec<SelfBind>,
    /// Create a network namespace with only loopback.
    pub private_net: bool,
}

/// The roots that need their own idmapped bind: those not beneath another of them. Pure.
pub fn outermost(roots: &[(PathBuf, u64, u64)]) -> Vec<IdmappedRoot> {
    let mut v: Vec<IdmappedRoot> = roots
        .iter()
        .filter(|(p, _, _)| !roots.iter().any(|(q, _, _)| q != p && p.starts_with(q)))
        .map(|(p, d, i)| IdmappedRoot {
            path: p.clone(),
            dev: *d,
            ino: *i,
        })
        .collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v.dedup();
    v
}

impl NsPlan {
    /// Plan the binds for `protected` paths inside `roots` (others need nothing: they are not
    /// writable by the sandbox account in the first place). Every path is opened beneath its
    /// root's validated descriptor with [`BENEATH`] rules — root resolves no path the caller
    /// controls — and recorded by device and inode; a protected path that does not exist needs
    /// no bind, one reached through a symlink is refused.
    pub fn new(
        roots: &[(PathBuf, u64, u64, BorrowedFd<'_>)],
        protected: &[PathBuf],
        private_net: bool,
    ) -> Result<NsPlan, PlanError> {
        let mut pins: Vec<SelfBind> = Vec::new();
        let mut prot: Vec<SelfBind> = Vec::new();
        for p in protected {
            let Some((ri, (rpath, _, _, rfd))) = roots
                .iter()
                .enumerate()
                .filter(|(_, r)| p.starts_with(&r.0) && p != &r.0)
                .max_by_key(|(_, r)| r.0.as_os_str().len())
            else {
                continue;
            };
            let Ok(rel) = p.strip_prefix(rpath) else {
                continue;
            };
            let err = |source| PlanError {
                path: p.clone(),
                source,
            };
            let (_fd, dev, ino, link) = match open_beneath(rfd.as_fd(), rel) {
                Ok(v) => v,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(err(e)),
            };
            prot.push(SelfBind {
                path: p.clone(),
                root: ri,
                rel: rel.to_path_buf(),
                dev,
                ino,
                read_only: true,
                link,
            });
            let mut a = rel.parent();
            while let Some(dir) = a.filter(|d| !d.as_os_str().is_empty()) {
                let (_fd, dev, ino, _) = open_beneath(rfd.as_fd(), dir).map_err(err)?;
                pins.push(SelfBind {
                    path: rpath.join(dir),
                    root: ri,
                    rel: dir.to_path_buf(),
                    dev,
                    ino,
                    read_only: false,
                    link: false,
                });
                a = dir.parent();
            }
        }
        let key = |b: &SelfBind| (b.path.components().count(), b.path.clone());
        pins.sort_by_key(key);
        pins.dedup();
        prot.sort_by_key(key);
        prot.dedup();
        pins.extend(prot);
        Ok(NsPlan {
            roots: roots
                .iter()
                .map(|(path, dev, ino, _)| IdmappedRoot {
                    path: path.clone(),
                    dev: *dev,
                    ino: *ino,
                })
                .collect(),
            binds: pins,
            private_net,
            ..NsPlan::default()
        })
    }

    /// The namespaces [`NsPlan::apply`] creates: always mount and IPC, network when offline.
    /// Pure.
    pub fn clone_flags(&self) -> libc::c_int {
        let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC;
        if self.private_net {
            flags |= libc::CLONE_NEWNET;
        }
        flags
    }

    /// In the run's process, as root: new namespaces, the idmapped binds of the writable roots,
    /// the other binds, loopback up. Returns why the roots are not idmapped when the kernel
    /// refuses root a user namespace (`user.max_user_namespaces=0`, a seccomp filter): the run
    /// then proceeds with files owned by the caller's own sandbox account, and says so. Any
    /// other failure is an error.
    pub fn apply(&self, userns: Option<BorrowedFd<'_>>) -> io::Result<Option<String>> {
        sys::unshare(self.clone_flags())?;
        sys::mount_setattr(libc::AT_FDCWD, c"/", true, 0, 0, true)?;
        let mut no_idmap = None;
        if self.idmap.is_some() && !self.idmapped.is_empty() {
            match userns {
                Some(u) => self.bind_idmapped(u)?,
                None => {
                    no_idmap =
                        Some("root cannot create the user namespace the idmapping needs".into())
                }
            }
        }
        let mut root_fds = Vec::with_capacity(self.roots.len());
        for r in &self.roots {
            root_fds.push(open_root(r)?);
        }
        for b in &self.binds {
            let root = root_fds
                .get(b.root)
                .ok_or_else(|| io::Error::other("bind of an unknown root"))?;
            self_bind(root.as_fd(), b).map_err(|e| {
                io::Error::new(e.kind(), format!("bind of {}: {e}", b.path.display()))
            })?;
        }
        if self.private_net {
            sys::net::loopback_up()?;
        }
        Ok(no_idmap)
    }

    fn bind_idmapped(&self, userns: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
        for r in &self.idmapped {
            idmapped_bind(r, userns).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "idmapped bind of {} (MOUNT_ATTR_IDMAP; the filesystem must support idmapped mounts, Linux 5.12+): {e}",
                        r.path.display()
                    ),
                )
            })?;
        }
        Ok(())
    }
}

/// Opens a writable root in the run's mount namespace with `RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS` and checks it is the directory the broker validated.
fn open_root(r: &IdmappedRoot) -> io::Result<OwnedFd> {
    const NO_LINKS: u64 = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let fd = sys::fs::openat2(None, &r.path, libc::O_PATH | libc::O_DIRECTORY, NO_LINKS)?;
    let st = sys::fs::fstat(fd.as_fd())?;
    if (st.st_dev, st.st_ino) != (r.dev, r.ino) {
        return Err(io::Error::other(format!(
            "{} was replaced since the broker validated it",
            r.path.display()
        )));
    }
    Ok(fd)
}

/// Binds a writable root onto itself through the mapping user namespace; the clone, its
/// attributes and the attachment all go through descriptors.
fn idmapped_bind(r: &IdmappedRoot, userns: BorrowedFd<'_>) -> io::Result<()> {
    let target = open_root(r)?;
    let tree = sys::open_tree_fd(target.as_fd(), true)?;
    sys::mount_setattr_idmap(
        tree.as_fd(),
        userns,
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
    )?;
    sys::move_mount_fd(tree.as_fd(), target.as_fd())?;
    Ok(())
}

/// One bind onto itself, from descriptors only: the path is opened beneath the root with
/// [`BENEATH`] rules (a final symlink itself, never its target), must be the inode the broker
/// planned, is cloned with `open_tree(fd, "", AT_EMPTY_PATH)`, made read-only when protected,
/// and attached with `move_mount(…, MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)`.
fn self_bind(root: BorrowedFd<'_>, b: &SelfBind) -> io::Result<()> {
    let (fd, dev, ino, link) = open_beneath(root, &b.rel)?;
    if (dev, ino, link) != (b.dev, b.ino, b.link) {
        return Err(io::Error::other(
            "replaced since the broker planned the bind",
        ));
    }
    let tree = sys::open_tree_fd(fd.as_fd(), !link)?;
    if b.read_only && !link {
        sys::mount_setattr(
            tree.as_raw_fd(),
            c"",
            true,
            sys::MOUNT_ATTR_RDONLY,
            0,
            false,
        )?;
    }
    sys::move_mount_fd(tree.as_fd(), fd.as_fd())?;
    Ok(())
}

/// The hidden first argument of the short-lived process that only holds the user namespace an
/// idmapped bind maps through ([`mapping_userns`]): it waits for end of input and exits.
pub const HOLD_ARG: &str = "__elevated-userns";

/// A user namespace holding only the mapping `m` (its owner is root), for `MOUNT_ATTR_IDMAP`: a
/// helper process (this executable with [`HOLD_ARG`]) unshares a user namespace and waits; the
/// broker, root outside, writes its `uid_map` and `gid_map`, opens `/proc/PID/ns/user`, and lets
/// the helper exit. The broker keeps the descriptor (one helper per mapping, not per run) and
/// hands it to each run's process with its specification.
pub fn mapping_userns(m: &crate::ns::IdMap) -> io::Result<OwnedFd> {
    let gid_map = m
        .gid_map()
        .ok_or_else(|| io::Error::other("the caller's group overlaps the sandbox groups"))?;
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg(HOLD_ARG)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the closure runs in the forked child of a possibly multithreaded process; it makes
    // one raw syscall through stockade-sys and allocates nothing (its error is an OS errno), so
    // it is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| sys::spawn::child::unshare_user().map_err(io::Error::from));
    }
    let mut helper = cmd.spawn()?;
    let pid = helper.id();
    let res = (|| -> io::Result<OwnedFd> {
        sys::write_file(
            std::path::Path::new(&format!("/proc/{pid}/uid_map")),
            m.uid_map().as_bytes(),
        )?;
        sys::write_file(
            std::path::Path::new(&format!("/proc/{pid}/gid_map")),
            gid_map.as_bytes(),
        )?;
        Ok(OwnedFd::from(std::fs::File::open(format!(
            "/proc/{pid}/ns/user"
        ))?))
    })();
    drop(helper.stdin.take());
    let _ = helper.kill();
    let _ = helper.wait();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idmap_maps_the_caller_on_disk_to_the_account_in_view() {
        let m = IdMap {
            sandbox_uid: 1_879_048_192,
            caller_uid: 1000,
            sandbox_gid: 995,
            caller_gid: 1000,
            grant_gid: 994,
            extra_gids: vec![27, 995, 1000, 27],
        };
        assert_eq!(m.uid_map(), "1000 1879048192 1\n");
        assert_eq!(
            m.gid_map().as_deref(),
            Some("1000 995 1\n994 994 1\n27 27 1\n"),
            "other groups onto themselves, never one that is already mapped"
        );
        let clash = IdMap {
            caller_gid: 994,
            ..m.clone()
        };
        assert_eq!(clash.gid_map(), None);
        let roots = [
            (PathBuf::from("/w/b"), 1, 2),
            (PathBuf::from("/w"), 1, 1),
            (PathBuf::from("/x"), 1, 3),
            (PathBuf::from("/wx"), 1, 4),
        ];
        let o: Vec<PathBuf> = outermost(&roots).into_iter().map(|r| r.path).collect();
        assert_eq!(o, vec![PathBuf::from("/w"), "/wx".into(), "/x".into()]);
    }

    #[test]
    fn pins_every_directory_between_root_and_protected_path_then_protects() {
        let dir = std::env::temp_dir().join(format!("stockade-ns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b/.git")).unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("via")).unwrap();
        let rfd = sys::fs::openat2(None, &dir, libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        let st = sys::fs::fstat(rfd.as_fd()).unwrap();
        let roots = [(dir.clone(), st.st_dev, st.st_ino, rfd.as_fd())];
        let plan = NsPlan::new(
            &roots,
            &[
                dir.join(".git"),
                dir.join("a/b/.git"),
                dir.join("missing/.git"),
                PathBuf::from("/elsewhere/.git"),
            ],
            true,
        )
        .unwrap();
        // A protected path reached through a symlink is refused, never resolved by root.
        assert!(NsPlan::new(&roots, &[dir.join("via/passwd")], false).is_err());
        assert!(plan
            .binds
            .iter()
            .all(|b| b.root == 0 && b.rel.is_relative()));
        let got: Vec<(String, bool)> = plan
            .binds
            .iter()
            .map(|b| {
                (
                    b.path
                        .to_string_lossy()
                        .trim_start_matches(dir.to_str().unwrap())
                        .to_string(),
                    b.read_only,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/a".into(), false),
                ("/a/b".into(), false),
                ("/.git".into(), true),
                ("/a/b/.git".into(), true)
            ]
        );
        assert!(plan.private_net);
        assert_eq!(
            plan.clone_flags(),
            libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET
        );
        let online = NsPlan::new(&[], &[], false).unwrap();
        assert_eq!(
            online.clone_flags(),
            libc::CLONE_NEWNS | libc::CLONE_NEWIPC,
            "every run, online too, gets its own IPC namespace"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
