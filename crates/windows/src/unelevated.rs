//! The unelevated tier's plan: a write-restricted token whose restricting SIDs are per-root
//! capability SIDs, allow ACEs for those SIDs on the writable roots and deny ACEs on protected
//! paths beneath them.
//!
//! What this tier enforces, and what it does not, is decided here and reported from here:
//! * writes (data, append, attributes, EAs, creating children) only where a capability SID is
//!   granted, i.e. beneath writable roots, minus protected paths;
//! * **not** `DELETE`/`WRITE_DAC`/`WRITE_OWNER` on the caller's own files: a write-restricted
//!   token's restricting SIDs are only consulted for `GENERIC_WRITE` bits (see
//!   [`crate::access`]), so a protected path can be renamed away or deleted; reported as a
//!   warning on every run;
//! * **not** `deny_read` (reads are decided by the caller's own SIDs);
//! * **not** the network (only advisory offline variables).

use crate::ace::{mask, Ace, Inherit, PathAces};
use crate::env::sandbox_env;
use crate::input::{Kind, Network, WinPlanInput};
use crate::path::WinPath;
use crate::sid::Sid;
use crate::state::CapabilityStore;
use serde::{Deserialize, Serialize};

/// `CreateRestrictedToken` flags (values from `winnt.h`).
pub mod flags {
    /// `DISABLE_MAX_PRIVILEGE`: drop every privilege except `SeChangeNotifyPrivilege`.
    pub const DISABLE_MAX_PRIVILEGE: u32 = 0x1;
    /// `SANDBOX_INERT`.
    pub const SANDBOX_INERT: u32 = 0x2;
    /// `LUA_TOKEN`: a filtered (non-admin) token.
    pub const LUA_TOKEN: u32 = 0x4;
    /// `WRITE_RESTRICTED`: restricting SIDs apply to write access only.
    pub const WRITE_RESTRICTED: u32 = 0x8;
}

/// A SID in a token plan that is only known when applying (on the real token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "sid", rename_all = "snake_case")]
pub enum SidRef {
    /// A SID known at plan time.
    Fixed(Sid),
    /// The caller's logon-session SID (`S-1-5-5-x-y`), read from its token.
    LogonSession,
    /// The caller's user SID.
    CurrentUser,
    /// A random SID minted for this run only ([`TokenPlan::bind_run_sid`]): the command's own
    /// objects (default DACL) name it instead of the logon SID, so concurrent sandboxes, which
    /// share the logon SID, cannot write each other's pipes, processes and threads.
    RunSession,
}

/// A restricting SID and why it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestrictingSid {
    /// The SID.
    pub sid: SidRef,
    /// Why.
    pub why: String,
}

/// The restricted token to create from the caller's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPlan {
    /// `CreateRestrictedToken` flags.
    pub flags: u32,
    /// Restricting SIDs, in order.
    pub restricting: Vec<RestrictingSid>,
    /// The token's default DACL (for objects the child creates without a security descriptor,
    /// e.g. its own pipes): allow ACEs with these masks.
    pub default_dacl: Vec<(SidRef, u32)>,
    /// Groups of the caller made deny-only in the token (`SidsToDisable`): they still match deny
    /// ACEs but no longer allow ACEs, and cannot be re-enabled.
    #[serde(default)]
    pub deny_only: Vec<Sid>,
}

impl TokenPlan {
    /// The plan with [`SidRef::RunSession`] replaced by `run` (minted per run by the apply layer).
    pub fn bind_run_sid(&self, run: &Sid) -> TokenPlan {
        let bind = |r: &SidRef| match r {
            SidRef::RunSession => SidRef::Fixed(run.clone()),
            other => other.clone(),
        };
        TokenPlan {
            flags: self.flags,
            restricting: self
                .restricting
                .iter()
                .map(|r| RestrictingSid {
                    sid: bind(&r.sid),
                    why: r.why.clone(),
                })
                .collect(),
            default_dacl: self
                .default_dacl
                .iter()
                .map(|(r, m)| (bind(r), *m))
                .collect(),
            deny_only: self.deny_only.clone(),
        }
    }
}

/// What the unelevated tier does for one run.
#[derive(Debug, Clone, Serialize)]
pub struct UnelevatedPlan {
    /// The token.
    pub token: TokenPlan,
    /// ACEs to add, roots first, then protected paths (parents before children).
    pub acl: Vec<PathAces>,
    /// Writable roots with their capability SIDs.
    pub roots: Vec<(WinPath, Sid)>,
    /// Protected paths that need no ACE because they are outside every writable root.
    pub protected_outside_roots: Vec<WinPath>,
    /// The command's environment.
    pub env: Vec<(String, String)>,
    /// Protected paths missing at plan time; the backend checks after the run whether the
    /// command created them.
    pub check_after_run: Vec<WinPath>,
    /// What this tier does not enforce for this plan, in words for the user.
    pub warnings: Vec<String>,
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum UnelevatedPlanError {
    /// A writable root has no capability SID in the store.
    #[error(
        "writable root {0} has no capability SID; call CapabilityStore::ensure (and save) first"
    )]
    MissingCapability(WinPath),
    /// Nothing would be writable and nothing readable-only matters: the tier still works, but an
    /// empty restricting list would make the token unrestricted for writes.
    #[error("internal: the restricting SID list would be empty, which would not restrict writes")]
    EmptyRestricting,
}

/// Options of the unelevated tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnelevatedOptions {
    /// Put Everyone in the restricting SIDs. Needed in practice for the child to start (system
    /// DLLs, the null device and many system objects grant Everyone rather than a user); the cost
    /// is that anything whose DACL grants *Everyone* write access is writable from the sandbox.
    pub restrict_with_everyone: bool,
    /// Lock the DACLs of protected paths (and of their parents, this object only) against the
    /// command: an allow of `WRITE_DAC | WRITE_OWNER` for Authenticated Users *followed by* a deny
    /// of the same to you, and Authenticated Users deny-only in the command's token (see
    /// [`metadata_guards`], [`lock_escape_group`]). This is what stops "re-ACL then write /
    /// rename / delete" on protected paths. On by default. Costs: the command loses whatever
    /// is granted to Authenticated Users only (for example `mkdir C:\x`); the protected paths'
    /// DACLs are in a non-canonical order until `stockade clean` (Explorer's Security tab offers
    /// to reorder them, which would lock you out too; editors that insist on canonical order may
    /// refuse to edit them), and only a
    /// token of yours holding Authenticated Users enabled (every normal logon) can change them.
    pub lock_protected_dacls: bool,
}

impl Default for UnelevatedOptions {
    fn default() -> Self {
        UnelevatedOptions {
            restrict_with_everyone: true,
            lock_protected_dacls: true,
        }
    }
}

/// Computes the unelevated plan. Every writable root (including the temp dir) must have a SID in
/// `caps`.
pub fn plan(
    input: &WinPlanInput,
    caps: &CapabilityStore,
    opts: UnelevatedOptions,
    user: &Sid,
) -> Result<UnelevatedPlan, UnelevatedPlanError> {
    let roots: Vec<(WinPath, Sid)> = input
        .effective_roots()
        .into_iter()
        .map(|r| match caps.sid_for(&r) {
            Some(s) => Ok((r, s.clone())),
            None => Err(UnelevatedPlanError::MissingCapability(r)),
        })
        .collect::<Result<_, _>>()?;

    let mut restricting: Vec<RestrictingSid> = roots
        .iter()
        .map(|(r, s)| RestrictingSid {
            sid: SidRef::Fixed(s.clone()),
            why: format!("capability of writable root {r}"),
        })
        .collect();
    restricting.push(RestrictingSid {
        sid: SidRef::LogonSession,
        why: "logon session: your window station and desktop".into(),
    });
    restricting.push(RestrictingSid {
        sid: SidRef::RunSession,
        why: "this run: the objects the command creates itself (default DACL)".into(),
    });
    if opts.restrict_with_everyone {
        restricting.push(RestrictingSid {
            sid: SidRef::Fixed(Sid::everyone()),
            why: "Everyone: system objects and the null device the child needs to start".into(),
        });
    }
    if restricting.is_empty() {
        return Err(UnelevatedPlanError::EmptyRestricting);
    }

    let token = TokenPlan {
        flags: flags::WRITE_RESTRICTED | flags::DISABLE_MAX_PRIVILEGE | flags::LUA_TOKEN,
        restricting,
        default_dacl: own_objects_default_dacl(),
        deny_only: if opts.lock_protected_dacls {
            vec![lock_escape_group()]
        } else {
            Vec::new()
        },
    };

    let mut acl: Vec<PathAces> = roots
        .iter()
        .map(|(r, s)| PathAces {
            path: r.clone(),
            kind: Kind::Dir,
            aces: vec![Ace::allow(s.clone(), mask::SANDBOX_MODIFY, Inherit::TREE)],
            reason: "writable root".into(),
        })
        .collect();

    let mut protected = input.protected.clone();
    protected.sort_by(|a, b| a.path.cmp(&b.path));
    protected.dedup_by(|a, b| a.path == b.path);
    let mut outside = Vec::new();
    for p in &protected {
        let sids: Vec<&Sid> = roots
            .iter()
            .filter(|(r, _)| p.path.starts_with(r))
            .map(|(_, s)| s)
            .collect();
        if sids.is_empty() {
            outside.push(p.path.clone());
            continue;
        }
        let inherit = match p.kind {
            Kind::Dir => Inherit::TREE,
            Kind::File => Inherit::NONE,
        };
        acl.push(PathAces {
            path: p.path.clone(),
            kind: p.kind,
            aces: sids
                .into_iter()
                .map(|s| Ace::deny(s.clone(), mask::PROTECT_DENY, inherit))
                .collect(),
            reason: p.reason.clone(),
        });
    }
    // Missing protected files below a directory (`.vscode\tasks.json`): no new files there for
    // the sandbox (FILE_ADD_FILE is a write bit, so the restricting pass sees the deny).
    for d in &input.no_new_files {
        let sids: Vec<&Sid> = roots
            .iter()
            .filter(|(r, _)| d.path.starts_with(r) && d.path != *r)
            .map(|(_, s)| s)
            .collect();
        if sids.is_empty() {
            continue;
        }
        acl.push(PathAces {
            path: d.path.clone(),
            kind: Kind::Dir,
            aces: sids
                .into_iter()
                .map(|s| {
                    Ace::deny(
                        s.clone(),
                        mask::FILE_WRITE_DATA | mask::FILE_APPEND_DATA,
                        Inherit::NONE,
                    )
                })
                .collect(),
            reason: d.reason.clone(),
        });
    }
    let mut guarded = protected.clone();
    guarded.extend(input.no_new_files_chain());
    acl.extend(metadata_guards(
        &guarded,
        &input.protected_ancestors(),
        user,
        opts.lock_protected_dacls,
    ));

    let mut warnings = vec![
        "unelevated tier: write confinement is a guardrail, not a boundary: the command runs as you, and a write-restricted token does not restrict DELETE, WRITE_DAC or WRITE_OWNER, so it can delete any file you may delete, move such files into a writable root, and re-ACL (then write) any object you own outside the guarded paths (protected paths, their parents, and the directories between the root and a nested protected path) -- autostart places included (HKCU\\...\\Run, the Startup folder) -- reach your other processes' tokens, and ask services that act for you (Task Scheduler, COM servers, the shell) to start programs outside the sandbox (not modelled; whether a write-restricted caller is refused is unverified); use the elevated tier (`stockade setup`) for a boundary".to_string(),
        if opts.lock_protected_dacls {
            "protected paths: writing into them, renaming, deleting and re-ACLing them (and re-ACLing their parents) are denied to the command (DACL lock: Authenticated Users is deny-only in its token); files inside protected directories can be deleted; a command that takes over another process of yours (its unrestricted token) gets round every guard".to_string()
        } else {
            "protected paths: writes into them are denied and renaming or deleting them needs a re-ACL first, but with lock_protected_dacls off a command can re-ACL them (WRITE_DAC through your own full control) and then do either; files inside protected directories can be deleted".to_string()
        },
        "the command shares your desktop and can interact with your windows (no UI isolation in this tier)".to_string(),
    ];
    if input.network == Network::Off {
        warnings.push("network off is NOT enforced in the unelevated tier: only offline proxy variables are set; use the elevated tier (`stockade setup`) to block it".into());
    }
    for d in &input.deny_read {
        warnings.push(format!("deny_read {} is NOT enforced in the unelevated tier (reads use the caller's own rights)", d.path));
    }
    for l in &input.protected_symlinks {
        warnings.push(format!("protected symlink {l}: its target is protected, the link itself is not (ACLs set by path follow links)"));
    }
    let check_after_run: Vec<WinPath> = input
        .protected_missing
        .iter()
        .filter(|p| input.root_of(p).is_some())
        .cloned()
        .collect();
    for m in &check_after_run {
        let guarded = m
            .parent()
            .is_some_and(|d| input.no_new_files.iter().any(|x| x.path == d));
        if guarded {
            if opts.lock_protected_dacls {
                warnings.push(format!("protected path {m} does not exist yet: the command may create no new entry in its directory, nor re-ACL it first (DACL lock; checked after the run)"));
            } else {
                warnings.push(format!("protected path {m} does not exist yet: the command may create no new entry in its directory (a guardrail: a re-ACL first gets round it; checked after the run)"));
            }
        } else {
            warnings.push(format!("protected path {m} does not exist; ACLs cannot stop its creation (no placeholder for it: checked after the run)"));
        }
    }

    let env = sandbox_env(&input.env, input.temp_dir.as_ref(), input.network, true);
    Ok(UnelevatedPlan {
        token,
        acl,
        roots,
        protected_outside_roots: outside,
        env,
        check_after_run,
        warnings,
    })
}

/// What the command's token gives the objects the command creates (its processes, threads,
/// pipes; files only where the parent has nothing to inherit): the user read/write/execute but
/// not `WRITE_DAC`/`WRITE_OWNER`, the same for `OWNER RIGHTS` (so owning them adds nothing),
/// SYSTEM and this run's SID everything. Another sandbox of the same user (a different run SID)
/// can then neither write them directly (restricting pass) nor re-ACL them first (normal pass)
/// (`attacks::concurrent_sandboxes_*`). The cost: the command cannot change the DACLs of its own
/// kernel objects.
pub fn own_objects_default_dacl() -> Vec<(SidRef, u32)> {
    let rwx = mask::GENERIC_READ | mask::GENERIC_WRITE | mask::GENERIC_EXECUTE;
    vec![
        (SidRef::CurrentUser, rwx),
        (SidRef::Fixed(Sid::owner_rights()), rwx),
        (SidRef::Fixed(Sid::local_system()), mask::GENERIC_ALL),
        (SidRef::RunSession, mask::GENERIC_ALL),
    ]
}

/// Reason prefix of the ACEs that stop metadata attacks on protected paths.
pub const GUARD_REASON: &str = "metadata guard";

pub use crate::ace::{lock_escape_group, LOCK_MASK};

/// ACEs against metadata attacks on protected paths, for the caller's own SID (these are decided
/// by the normal pass, which the sandbox shares with the caller):
/// * an `OWNER RIGHTS` allow of `READ_CONTROL` on the path (and, for a directory, everything
///   beneath it): the owner's implicit `WRITE_DAC` is gone;
/// * with `lock_dacls` ([`UnelevatedOptions::lock_protected_dacls`], the default), on the path
///   (and beneath it) and on its parent (this object only, with its own `OWNER RIGHTS`
///   `READ_CONTROL` ACE so that owning it gives nothing either): an allow of
///   `WRITE_DAC | WRITE_OWNER` for [`lock_escape_group`] placed *before* a deny of the same for
///   the caller. The access check walks ACEs in order and a deny stops only bits not granted
///   yet, so your own token (the group enabled) gets both rights from the allow, while the
///   command's (the group deny-only, which skips allow ACEs) reaches the deny: no re-ACL of
///   the path, and no re-ACL of the parent to undo the delete-child guard;
/// * a deny of `DELETE` for the caller on the path itself and of `FILE_DELETE_CHILD` on its
///   parent: it cannot be renamed away (and recreated) or deleted.
///
/// Cost to the real user, who holds the same SID: they cannot delete or rename a protected path
/// until `stockade clean` removes these ACEs; writing into it (git itself, `config.lock` then
/// rename) is unaffected; with the lock, the DACLs are non-canonical until clean (see the
/// option). Without `lock_dacls` a command can re-ACL a protected path through your own full
/// control and then undo the rest.
pub fn metadata_guards(
    protected: &[crate::input::PlannedWinPath],
    ancestors: &[crate::input::PlannedWinPath],
    user: &Sid,
    lock_dacls: bool,
) -> Vec<PathAces> {
    use std::collections::BTreeMap;
    let mut per_path: BTreeMap<WinPath, (Kind, Vec<Ace>)> = BTreeMap::new();
    let mut add = |path: &WinPath, kind: Kind, ace: Ace| {
        let e = per_path.entry(path.clone()).or_insert((kind, Vec::new()));
        if e.0 == Kind::File {
            e.0 = kind;
        }
        if let Some(x) =
            e.1.iter_mut()
                .find(|x| x.sid == ace.sid && x.kind == ace.kind && x.inherit == ace.inherit)
        {
            x.mask |= ace.mask;
        } else {
            e.1.push(ace);
        }
    };
    let lock = |add: &mut dyn FnMut(&WinPath, Kind, Ace), path: &WinPath, kind, inherit| {
        // No implicit WRITE_DAC for the owner (you, and so the command) either.
        add(
            path,
            kind,
            Ace::allow(Sid::owner_rights(), mask::READ_CONTROL, inherit),
        );
        add(
            path,
            kind,
            Ace::allow(lock_escape_group(), LOCK_MASK, inherit),
        );
        add(path, kind, Ace::deny(user.clone(), LOCK_MASK, inherit));
    };
    // Neither deleted nor renamed: DELETE denied on `path`, FILE_DELETE_CHILD on its parent
    // (this object only), the parent's DACL locked too.
    let no_removal = |add: &mut dyn FnMut(&WinPath, Kind, Ace), path: &WinPath, kind| {
        add(
            path,
            kind,
            Ace::deny(user.clone(), mask::DELETE, Inherit::NONE),
        );
        if let Some(parent) = path.parent() {
            add(
                &parent,
                Kind::Dir,
                Ace::deny(user.clone(), mask::FILE_DELETE_CHILD, Inherit::NONE),
            );
            if lock_dacls {
                lock(add, &parent, Kind::Dir, Inherit::NONE);
            }
        }
    };
    for p in protected {
        let inherit = match p.kind {
            Kind::Dir => Inherit::TREE,
            Kind::File => Inherit::NONE,
        };
        add(
            &p.path,
            p.kind,
            Ace::allow(Sid::owner_rights(), mask::READ_CONTROL, inherit),
        );
        if lock_dacls {
            lock(&mut add, &p.path, p.kind, inherit);
        }
        no_removal(&mut add, &p.path, p.kind);
    }
    // Ancestors of protected paths below the root (`sub` of `sub\.git`): this object only, no
    // delete or rename (DELETE here, FILE_DELETE_CHILD on the parent) and no re-ACL of either.
    for a in ancestors {
        add(
            &a.path,
            Kind::Dir,
            Ace::allow(Sid::owner_rights(), mask::READ_CONTROL, Inherit::NONE),
        );
        if lock_dacls {
            lock(&mut add, &a.path, Kind::Dir, Inherit::NONE);
        }
        no_removal(&mut add, &a.path, Kind::Dir);
    }
    per_path
        .into_iter()
        .map(|(path, (kind, mut aces))| {
            crate::ace::order_explicit(&mut aces);
            PathAces {
                path,
                kind,
                aces,
                reason: format!("{GUARD_REASON}: no re-ACL, rename or delete of protected paths"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
