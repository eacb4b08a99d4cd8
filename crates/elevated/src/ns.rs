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

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use stockade_sys as sys;

/// One bind of a path onto itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelfBind {
    /// The path (NUL-terminated for the child).
    pub path: CString,
    /// Read-only (protected) or left as is (a pin).
    pub read_only: bool,
    /// A symbolic link, cloned and mounted without following it.
    pub link: bool,
}

/// What the child must do, computed in the broker (it travels to the run's process in its
/// specification).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NsPlan {
    /// Binds in order: pins (shallowest first), then protected paths.
    pub binds: Vec<SelfBind>,
    /// Create a network namespace with only loopback.
    pub private_net: bool,
}

impl NsPlan {
    /// Plan the binds for `protected` paths inside `roots` (others need nothing: they are not
    /// writable by the sandbox account in the first place).
    pub fn new(roots: &[PathBuf], protected: &[PathBuf], private_net: bool) -> NsPlan {
        let mut pins: Vec<PathBuf> = Vec::new();
        let mut prot: Vec<(PathBuf, bool)> = Vec::new();
        for p in protected {
            let Some(root) = roots
                .iter()
                .filter(|r| p.starts_with(r) && p != *r)
                .max_by_key(|r| r.as_os_str().len())
            else {
                continue;
            };
            let Ok(meta) = std::fs::symlink_metadata(p) else {
                continue;
            };
            prot.push((p.clone(), meta.file_type().is_symlink()));
            let mut a = p.parent();
            while let Some(dir) = a {
                if dir == root.as_path() || !dir.starts_with(root) {
                    break;
                }
                pins.push(dir.to_path_buf());
                a = dir.parent();
            }
        }
        pins.sort_by_key(|p| (p.components().count(), p.clone()));
        pins.dedup();
        prot.sort_by_key(|(p, _)| (p.components().count(), p.clone()));
        prot.dedup();
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        let mut binds: Vec<SelfBind> = pins
            .iter()
            .filter_map(|p| {
                c(p).map(|path| SelfBind {
                    path,
                    read_only: false,
                    link: false,
                })
            })
            .collect();
        binds.extend(prot.iter().filter_map(|(p, link)| {
            c(p).map(|path| SelfBind {
                path,
                read_only: true,
                link: *link,
            })
        }));
        NsPlan { binds, private_net }
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

    /// In the run's process, as root: new namespaces, the binds, loopback up. Raw syscalls only.
    pub fn apply(&self) -> io::Result<()> {
        sys::unshare(self.clone_flags())?;
        sys::mount_setattr(libc::AT_FDCWD, c"/", true, 0, 0, true)?;
        for b in &self.binds {
            self_bind(b)?;
        }
        if self.private_net {
            sys::net::loopback_up()?;
        }
        Ok(())
    }
}

fn self_bind(b: &SelfBind) -> io::Result<()> {
    let fd = sys::open_tree_self(&b.path, b.link)?;
    if b.read_only && !b.link {
        sys::mount_setattr(fd.as_raw_fd(), c"", true, sys::MOUNT_ATTR_RDONLY, 0, false)?;
    }
    sys::move_mount_c(&fd, &b.path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_every_directory_between_root_and_protected_path_then_protects() {
        let dir = std::env::temp_dir().join(format!("stockade-ns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b/.git")).unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        let plan = NsPlan::new(
            std::slice::from_ref(&dir),
            &[
                dir.join(".git"),
                dir.join("a/b/.git"),
                dir.join("missing/.git"),
                PathBuf::from("/elsewhere/.git"),
            ],
            true,
        );
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
        let online = NsPlan::new(&[], &[], false);
        assert_eq!(
            online.clone_flags(),
            libc::CLONE_NEWNS | libc::CLONE_NEWIPC,
            "every run, online too, gets its own IPC namespace"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
