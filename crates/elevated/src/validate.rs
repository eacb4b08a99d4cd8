//! Request validation in the broker. Nothing the client says is trusted: the broker re-derives
//! what it must check from the kernel (peer credentials, descriptors) and the rules below.
//!
//! Rules (and why):
//! * The caller must not be a sandbox account (a sandboxed command could otherwise ask for the
//!   online account and escape the network block) and the protocol version must match.
//! * Every path is absolute and lexically clean (no `.`/`..`, no NUL), so what is checked is
//!   exactly what is opened.
//! * A writable root is never a system directory, a top-level directory, the broker's state, or
//!   the caller's home itself: granting a sandbox account write access there would affect
//!   everyone (or everything the caller owns).
//! * The start directory must lie beneath (or be) a writable root or the workspace, never under
//!   `/proc` ([`check_cwd`]). The run's process enters it only after the switch to the sandbox
//!   account **and** Landlock, resolving the base with `openat2(RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS)` and the rest beneath that descriptor (`RESOLVE_BENEATH` too), then
//!   `fchdir`: the account's permissions decide every component (a root-opened descriptor could
//!   start the command inside a tree neither it nor the caller can traverse), and no magic link
//!   (`/proc/<pid>/cwd` of another user's command, same sandbox uid) is ever followed — Landlock
//!   would refuse it anyway once in force, as it confines ptrace-class access to its own domain.
//! * A writable root is opened with `openat2(RESOLVE_NO_SYMLINKS)` (a symlink anywhere in the
//!   path, e.g. swapped in during the request, fails the open) and everything afterwards acts on
//!   that descriptor. It must be a directory the caller owns, or can write by its mode bits with
//!   the caller's own groups. ACLs are then only set on inodes the caller owns (see `grants`).

use crate::protocol::{RunRequest, PROTOCOL_VERSION};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use stockade_policy::system_dirs::{lexical_hit, Relation, Tier};
use stockade_sys as sys;

/// Why a request was refused. Messages say what and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Protocol mismatch.
    #[error("protocol version {got} is not supported (broker speaks {want}); use the same stockade version for the CLI and the broker")]
    Version {
        /// Client version.
        got: u32,
        /// Broker version.
        want: u32,
    },
    /// Caller is a sandbox account.
    #[error("uid {0} is a sandbox account: sandboxed commands cannot start other sandboxes")]
    SandboxCaller(u32),
    /// Malformed path.
    #[error("{what} {path:?} must be an absolute path without `.`/`..` components")]
    BadPath {
        /// Which field.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// Forbidden root.
    #[error("writable root {path:?} is refused: {why}")]
    ForbiddenRoot {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Root cannot be opened safely.
    #[error("writable root {path:?} cannot be opened without following symlinks: {why}; pass its canonical path")]
    Unresolvable {
        /// The path.
        path: PathBuf,
        /// Cause.
        why: String,
    },
    /// Caller lacks write access.
    #[error("writable root {path:?} is owned by uid {owner} and not writable by you (uid {caller}); the broker only grants what you could write yourself")]
    NotYours {
        /// The path.
        path: PathBuf,
        /// Owner.
        owner: u32,
        /// Caller uid.
        caller: u32,
    },
    /// The start directory is refused.
    #[error("start directory (cwd) {path:?} is refused: {why}")]
    BadCwd {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Bad command or environment.
    #[error("{0}")]
    Malformed(String),
}

/// Where a run starts: `base` (a writable root or the workspace) and `rel` beneath it. Decided
/// by [`check_cwd`] in the broker, entered by the run's process (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CwdPlan {
    /// The full start directory (for messages).
    pub path: PathBuf,
    /// The writable root or workspace it lies beneath.
    pub base: PathBuf,
    /// The rest, relative to `base` (empty: `base` itself).
    pub rel: PathBuf,
    /// Device and inode `base` had when the broker validated it (a writable root); the run's
    /// process refuses a different directory at that path.
    pub base_id: Option<(u64, u64)>,
}

/// Checks the start directory against the writable roots (`(path, dev, ino)`) and the
/// workspace, and splits it into base and rest. Pure; `cwd` and `workspace` are clean absolute
/// paths ([`check_shape`]).
pub fn check_cwd(
    cwd: &Path,
    workspace: &Path,
    roots: &[(PathBuf, u64, u64)],
) -> Result<CwdPlan, Refusal> {
    let refuse = |why: &str| Refusal::BadCwd {
        path: cwd.to_path_buf(),
        why: why.to_string(),
    };
    if cwd.starts_with("/proc") || workspace.starts_with("/proc") {
        return Err(refuse(
            "it is under /proc (a magic link into another process is never followed)",
        ));
    }
    let root = roots
        .iter()
        .filter(|(r, _, _)| cwd.starts_with(r))
        .max_by_key(|(r, _, _)| r.components().count());
    let (base, base_id) = match root {
        Some((r, dev, ino)) => (r.clone(), Some((*dev, *ino))),
        None if cwd.starts_with(workspace) => (workspace.to_path_buf(), None),
        None => return Err(refuse(
            "it is outside the workspace and every writable root; start from inside your workspace",
        )),
    };
    let rel = cwd
        .strip_prefix(&base)
        .map(Path::to_path_buf)
        .map_err(|_| refuse("it is not beneath its base"))?;
    Ok(CwdPlan {
        path: cwd.to_path_buf(),
        base,
        rel,
        base_id,
    })
}

/// Whether `p` is lexically clean and absolute.
pub fn clean_absolute(p: &Path) -> bool {
    p.is_absolute()
        && !p.as_os_str().as_encoded_bytes().contains(&0)
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Why a (clean, absolute) path may not be a writable root, if it may not. Pure.
pub fn forbidden_root(p: &Path, caller_home: Option<&Path>) -> Option<String> {
    let n = p.components().count();
    if n <= 2 {
        return Some("it is `/` or a top-level directory shared by the whole system".into());
    }
    // The list both tiers share (stockade_policy::system_dirs), as written: the broker
    // resolves no links, and every path it acts on is opened without following any.
    match lexical_hit(p, Tier::Broker) {
        Some((d, Relation::AncestorOf)) => {
            return Some(format!(
                "it is an ancestor of the system directory {}",
                d.display()
            ))
        }
        Some((d, _)) => return Some(format!("it is inside the system directory {}", d.display())),
        None => {}
    }
    if caller_home == Some(p) {
        return Some("it is your home directory itself; pick a project directory inside it".into());
    }
    None
}

/// Shape checks on a request (no filesystem access). Pure.
pub fn check_shape(req: &RunRequest, caller_uid: u32, sandbox_uids: &[u32]) -> Result<(), Refusal> {
    if req.version != PROTOCOL_VERSION {
        return Err(Refusal::Version {
            got: req.version,
            want: PROTOCOL_VERSION,
        });
    }
    if sandbox_uids.contains(&caller_uid) {
        return Err(Refusal::SandboxCaller(caller_uid));
    }
    let fields: [(&'static str, &[PathBuf]); 3] = [
        ("writable root", &req.writable_roots),
        ("protected path", &req.protected),
        ("deny_read path", &req.deny_read),
    ];
    for (what, list) in fields {
        for p in list {
            if !clean_absolute(p) {
                return Err(Refusal::BadPath {
                    what,
                    path: p.clone(),
                });
            }
        }
    }
    for (what, p) in [("cwd", &req.cwd), ("workspace", &req.workspace)] {
        if !clean_absolute(p) {
            return Err(Refusal::BadPath {
                what,
                path: p.clone(),
            });
        }
    }
    if req.writable_roots.len() > 64 || req.protected.len() > 4096 || req.deny_read.len() > 4096 {
        return Err(Refusal::Malformed("too many paths in the request".into()));
    }
    if req.program.is_empty()
        || req.program.contains('\0')
        || req.args.iter().any(|a| a.contains('\0'))
    {
        return Err(Refusal::Malformed(
            "program must be non-empty; no NUL bytes in program or arguments".into(),
        ));
    }
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(Refusal::Malformed(format!(
                "invalid environment variable name {k:?}"
            )));
        }
    }
    Ok(())
}

/// Whether `caller` may write a directory with this owner/mode, by mode bits alone. Pure.
pub fn mode_allows_write(
    st_uid: u32,
    st_gid: u32,
    mode: u32,
    caller_uid: u32,
    caller_groups: &[u32],
) -> bool {
    if st_uid == caller_uid {
        return mode & 0o300 == 0o300;
    }
    if caller_groups.contains(&st_gid) {
        return mode & 0o030 == 0o030;
    }
    mode & 0o003 == 0o003
}

/// A writable root that passed validation, with the descriptor everything acts on.
#[derive(Debug)]
pub struct ValidatedRoot {
    /// Canonical path (as requested; it resolved without symlinks).
    pub path: PathBuf,
    /// `O_PATH` descriptor of the directory.
    pub fd: OwnedFd,
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Whether the caller owns it (ACLs are only set on caller-owned inodes).
    pub owned: bool,
}

/// Opens and checks one writable root for `caller_uid` (with `caller_groups`).
pub fn open_root(
    path: &Path,
    caller_uid: u32,
    caller_groups: &[u32],
    caller_home: Option<&Path>,
) -> Result<ValidatedRoot, Refusal> {
    if !clean_absolute(path) {
        return Err(Refusal::BadPath {
            what: "writable root",
            path: path.to_path_buf(),
        });
    }
    if let Some(why) = forbidden_root(path, caller_home) {
        return Err(Refusal::ForbiddenRoot {
            path: path.to_path_buf(),
            why,
        });
    }
    let fd = sys::fs::openat2(
        None,
        path,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| Refusal::Unresolvable {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let st = sys::fs::fstat(fd.as_fd()).map_err(|e| Refusal::Unresolvable {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Refusal::ForbiddenRoot {
            path: path.to_path_buf(),
            why: "not a directory".into(),
        });
    }
    let owned = st.st_uid == caller_uid;
    if !owned && !mode_allows_write(st.st_uid, st.st_gid, st.st_mode, caller_uid, caller_groups) {
        return Err(Refusal::NotYours {
            path: path.to_path_buf(),
            owner: st.st_uid,
            caller: caller_uid,
        });
    }
    if !owned && st.st_mode & libc::S_ISVTX != 0 {
        return Err(Refusal::ForbiddenRoot {
            path: path.to_path_buf(),
            why: "it is a shared sticky directory (like /tmp) that you do not own".into(),
        });
    }
    Ok(ValidatedRoot {
        path: path.to_path_buf(),
        fd,
        dev: st.st_dev,
        ino: st.st_ino,
        owned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockade_policy::model::LimitsPolicy;
    use stockade_policy::NetworkMode;

    fn req() -> RunRequest {
        RunRequest {
            version: PROTOCOL_VERSION,
            network: NetworkMode::Off,
            workspace: "/home/u/ws".into(),
            cwd: "/home/u/ws".into(),
            writable_roots: vec!["/home/u/ws".into()],
            protected: vec![],
            deny_read: vec![],
            allow_unix_sockets: vec![],
            program: "true".into(),
            args: vec![],
            env: vec![],
            limits: LimitsPolicy::default(),
            timeout_ms: None,
        }
    }

    #[test]
    fn system_and_top_level_dirs_are_refused() {
        let home = Path::new("/home/u");
        for p in [
            "/",
            "/etc",
            "/tmp",
            "/home",
            "/etc/ssh",
            "/usr/local/src",
            "/var/lib/stockade",
            "/proc/self",
            "/root/x",
            "/home/u",
        ] {
            assert!(
                forbidden_root(Path::new(p), Some(home)).is_some(),
                "{p} must be refused"
            );
        }
        for p in [
            "/home/u/ws",
            "/srv/build/x",
            "/tmp/work",
            "/var/tmp/x",
            "/opt/proj/a",
        ] {
            assert!(
                forbidden_root(Path::new(p), Some(home)).is_none(),
                "{p} must be allowed"
            );
        }
    }

    /// The one deliberate behaviour change of sharing one list of system directories between
    /// the tiers (`stockade_policy::system_dirs`): where the unelevated tier's check
    /// (`dangerous_root_reason`) and the broker's (`forbidden_root`) disagreed, the stricter
    /// verdict now holds for both. Each path below was allowed by exactly one tier before
    /// (measured against both old checks); the controls were allowed by both and still are.
    #[test]
    fn verdicts_that_changed_when_the_lists_merged() {
        use stockade_policy::plan::dangerous_root_reason;
        let user = Path::new("/home/u");
        let root = Path::new("/root");
        // Allowed by the unelevated tier before, refused by the broker: now refused by both.
        let unelevated_changed = [
            "/run/user/1000/x",
            "/usr/local/src",
            "/usr/local/src/proj",
            "/usr/src/linux",
            "/var/backups",
            "/var/backups/x",
            "/var/cache/x",
            "/var/lib/x",
            "/var/lib/jenkins/ws",
            "/var/log/x",
            "/var/mail/x",
            "/var/spool/x",
            "/snap",
            "/snap/x",
        ];
        // Allowed by the broker before, refused by the unelevated tier: now refused by both.
        let broker_changed = ["/var/run"];
        for p in unelevated_changed.iter().chain(&broker_changed) {
            let p = Path::new(p);
            assert!(
                dangerous_root_reason(p, Some(user)).is_some(),
                "{p:?} (unelevated)"
            );
            assert!(forbidden_root(p, Some(user)).is_some(), "{p:?} (broker)");
        }
        // Kept on purpose (see stockade_policy::system_dirs): inside /root, the unelevated
        // tier allows writable roots, the broker refuses them.
        assert!(dangerous_root_reason(Path::new("/root/proj"), Some(root)).is_none());
        assert!(dangerous_root_reason(Path::new("/root/proj"), Some(user)).is_none());
        assert!(forbidden_root(Path::new("/root/proj"), Some(root)).is_some());
        // Controls: allowed by both before and after.
        for p in [
            "/home/u/ws",
            "/opt/proj/a",
            "/srv/build/x",
            "/var/tmp/x",
            "/var/www/site",
            "/mnt/x",
            "/media/u/x",
        ] {
            let p = Path::new(p);
            assert!(
                dangerous_root_reason(p, Some(user)).is_none(),
                "{p:?} (unelevated)"
            );
            assert!(forbidden_root(p, Some(user)).is_none(), "{p:?} (broker)");
        }
    }

    #[test]
    fn clean_paths() {
        assert!(clean_absolute(Path::new("/a/b")));
        assert!(!clean_absolute(Path::new("a/b")));
        assert!(!clean_absolute(Path::new("/a/../etc")));
        assert!(
            !clean_absolute(Path::new("/a/./b")) || Path::new("/a/./b").components().count() == 3
        );
    }

    #[test]
    fn shape() {
        assert_eq!(check_shape(&req(), 1000, &[900, 901]), Ok(()));
        assert_eq!(
            check_shape(&req(), 900, &[900, 901]),
            Err(Refusal::SandboxCaller(900))
        );
        let mut r = req();
        r.version = 2;
        assert!(matches!(
            check_shape(&r, 1000, &[]),
            Err(Refusal::Version { .. })
        ));
        let mut r = req();
        r.writable_roots.push("/home/u/ws/../../../etc".into());
        assert!(matches!(
            check_shape(&r, 1000, &[]),
            Err(Refusal::BadPath { .. })
        ));
        let mut r = req();
        r.env.push(("A=B".into(), "x".into()));
        assert!(matches!(
            check_shape(&r, 1000, &[]),
            Err(Refusal::Malformed(_))
        ));
        let mut r = req();
        r.cwd = "relative".into();
        assert!(matches!(
            check_shape(&r, 1000, &[]),
            Err(Refusal::BadPath { what: "cwd", .. })
        ));
    }

    #[test]
    fn cwd_lies_beneath_a_root_or_the_workspace_and_never_in_proc() {
        let ws = Path::new("/home/u/ws");
        let roots = vec![
            (PathBuf::from("/home/u/ws"), 1, 2),
            (PathBuf::from("/home/u/ws/sub/inner"), 1, 3),
            (PathBuf::from("/srv/cache"), 4, 5),
        ];
        let c = check_cwd(Path::new("/home/u/ws/sub/inner/x"), ws, &roots).unwrap();
        assert_eq!(
            (c.base.as_path(), c.rel.as_path(), c.base_id),
            (
                Path::new("/home/u/ws/sub/inner"),
                Path::new("x"),
                Some((1, 3))
            ),
            "the deepest root is the base"
        );
        let c = check_cwd(Path::new("/srv/cache"), ws, &roots).unwrap();
        assert_eq!(c.rel, PathBuf::new());
        // A read-only workspace (no writable roots): the workspace is the base, unpinned.
        let c = check_cwd(Path::new("/home/u/ws/a"), ws, &[]).unwrap();
        assert_eq!((c.base.as_path(), c.base_id), (ws, None));
        for bad in [
            "/proc/1234/cwd",
            "/proc/self/root/home/u/ws",
            "/home/u",
            "/etc",
            "/srv/cachex",
        ] {
            assert!(
                matches!(
                    check_cwd(Path::new(bad), ws, &roots),
                    Err(Refusal::BadCwd { .. })
                ),
                "{bad} must be refused"
            );
        }
        // A workspace under /proc is no base either.
        assert!(check_cwd(Path::new("/proc/99/cwd/x"), Path::new("/proc/99/cwd"), &[]).is_err());
    }

    #[test]
    fn write_by_mode_bits() {
        assert!(mode_allows_write(1000, 1000, 0o700, 1000, &[1000]));
        assert!(!mode_allows_write(1000, 1000, 0o500, 1000, &[1000]));
        assert!(mode_allows_write(0, 50, 0o770, 1000, &[50]));
        assert!(
            !mode_allows_write(0, 50, 0o757, 1000, &[50]),
            "group class applies, not other"
        );
        assert!(mode_allows_write(0, 0, 0o777, 1000, &[1000]));
        assert!(!mode_allows_write(0, 0, 0o755, 1000, &[1000]));
    }

    #[test]
    fn real_open_refuses_symlinks_and_foreign_dirs() {
        let base = std::env::temp_dir().join(format!("stockade-validate-{}", std::process::id()));
        let real = base.join("real");
        std::fs::create_dir_all(&real).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let me = sys::users::getuid();
        assert!(open_root(&real, me, &[], None).is_ok());
        assert!(matches!(
            open_root(&link, me, &[], None),
            Err(Refusal::Unresolvable { .. })
        ));
        // Someone else (uid me+12345) asking for a directory they neither own nor can write.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            open_root(&real, me + 12345, &[], None),
            Err(Refusal::NotYours { .. })
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
