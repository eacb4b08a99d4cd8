//! Access masks and ACEs as plain data: the vocabulary of every ACL plan.

use crate::sid::Sid;
use serde::{Deserialize, Serialize};

/// File and directory access rights (values from `winnt.h`).
pub mod mask {
    /// Read file data / list a directory.
    pub const FILE_READ_DATA: u32 = 0x1;
    /// Write file data / create a file in a directory (`FILE_ADD_FILE`).
    pub const FILE_WRITE_DATA: u32 = 0x2;
    /// Append file data / create a subdirectory (`FILE_ADD_SUBDIRECTORY`).
    pub const FILE_APPEND_DATA: u32 = 0x4;
    /// Read extended attributes.
    pub const FILE_READ_EA: u32 = 0x8;
    /// Write extended attributes.
    pub const FILE_WRITE_EA: u32 = 0x10;
    /// Execute a file / traverse a directory.
    pub const FILE_EXECUTE: u32 = 0x20;
    /// Delete any child of a directory, whatever the child's own DACL says.
    pub const FILE_DELETE_CHILD: u32 = 0x40;
    /// Read attributes.
    pub const FILE_READ_ATTRIBUTES: u32 = 0x80;
    /// Write attributes.
    pub const FILE_WRITE_ATTRIBUTES: u32 = 0x100;
    /// Delete the object (also needed to rename it).
    pub const DELETE: u32 = 0x1_0000;
    /// Read the security descriptor.
    pub const READ_CONTROL: u32 = 0x2_0000;
    /// Change the DACL.
    pub const WRITE_DAC: u32 = 0x4_0000;
    /// Change the owner.
    pub const WRITE_OWNER: u32 = 0x8_0000;
    /// Wait on the object.
    pub const SYNCHRONIZE: u32 = 0x10_0000;
    /// Generic read (mapped to [`FILE_GENERIC_READ`]).
    pub const GENERIC_READ: u32 = 0x8000_0000;
    /// Generic write (mapped to [`FILE_GENERIC_WRITE`]).
    pub const GENERIC_WRITE: u32 = 0x4000_0000;
    /// Generic execute (mapped to [`FILE_GENERIC_EXECUTE`]).
    pub const GENERIC_EXECUTE: u32 = 0x2000_0000;
    /// Generic all (mapped to [`FILE_ALL_ACCESS`]).
    pub const GENERIC_ALL: u32 = 0x1000_0000;

    /// `FILE_GENERIC_READ`.
    pub const FILE_GENERIC_READ: u32 =
        READ_CONTROL | FILE_READ_DATA | FILE_READ_ATTRIBUTES | FILE_READ_EA | SYNCHRONIZE;
    /// `FILE_GENERIC_WRITE`.
    pub const FILE_GENERIC_WRITE: u32 = READ_CONTROL
        | FILE_WRITE_DATA
        | FILE_WRITE_ATTRIBUTES
        | FILE_WRITE_EA
        | FILE_APPEND_DATA
        | SYNCHRONIZE;
    /// `FILE_GENERIC_EXECUTE`.
    pub const FILE_GENERIC_EXECUTE: u32 =
        READ_CONTROL | FILE_READ_ATTRIBUTES | FILE_EXECUTE | SYNCHRONIZE;
    /// `FILE_ALL_ACCESS`.
    pub const FILE_ALL_ACCESS: u32 = 0x1F_01FF;

    /// What Stockade grants on a writable root: read, write, execute and DELETE of the object,
    /// but **not** `FILE_DELETE_CHILD` (that would let the holder delete a protected child whose
    /// own DACL denies it), nor `WRITE_DAC`/`WRITE_OWNER`.
    pub const SANDBOX_MODIFY: u32 =
        FILE_GENERIC_READ | FILE_GENERIC_WRITE | FILE_GENERIC_EXECUTE | DELETE;

    /// What Stockade denies on a protected path: every right that changes it, its children or its
    /// security. `READ_CONTROL` and `SYNCHRONIZE` are left out so that reading stays possible.
    pub const PROTECT_DENY: u32 = FILE_WRITE_DATA
        | FILE_APPEND_DATA
        | FILE_WRITE_EA
        | FILE_WRITE_ATTRIBUTES
        | FILE_DELETE_CHILD
        | DELETE
        | WRITE_DAC
        | WRITE_OWNER;

    /// Read rights denied on `deny_read` paths (elevated tier only).
    pub const READ_DENY: u32 = FILE_READ_DATA | FILE_READ_EA | FILE_EXECUTE;

    /// Maps generic bits to file-specific rights (the file object type's generic mapping).
    pub fn map_generic(m: u32) -> u32 {
        let mut out = m & !(GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE | GENERIC_ALL);
        if m & GENERIC_READ != 0 {
            out |= FILE_GENERIC_READ;
        }
        if m & GENERIC_WRITE != 0 {
            out |= FILE_GENERIC_WRITE;
        }
        if m & GENERIC_EXECUTE != 0 {
            out |= FILE_GENERIC_EXECUTE;
        }
        if m & GENERIC_ALL != 0 {
            out |= FILE_ALL_ACCESS;
        }
        out
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AceKind {
    /// `ACCESS_DENIED_ACE_TYPE`.
    Deny,
    /// `ACCESS_ALLOWED_ACE_TYPE`.
    Allow,
}

/// ACE inheritance flags (values from `winnt.h`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Inherit(pub u8);

impl Inherit {
    /// Applies to this object only.
    pub const NONE: Inherit = Inherit(0);
    /// `OBJECT_INHERIT_ACE`: files beneath inherit it.
    pub const OBJECT: u8 = 0x1;
    /// `CONTAINER_INHERIT_ACE`: directories beneath inherit it.
    pub const CONTAINER: u8 = 0x2;
    /// `NO_PROPAGATE_INHERIT_ACE`: only immediate children inherit it.
    pub const NO_PROPAGATE: u8 = 0x4;
    /// `INHERIT_ONLY_ACE`: does not apply to this object itself.
    pub const INHERIT_ONLY: u8 = 0x8;
    /// `INHERITED_ACE`: the ACE was inherited (set by the system, never by a plan).
    pub const INHERITED: u8 = 0x10;
    /// Container and object inherit: the whole tree beneath.
    pub const TREE: Inherit = Inherit(Self::OBJECT | Self::CONTAINER);

    /// True if the flag is set.
    pub fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }
}

/// One access control entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ace {
    /// Allow or deny.
    pub kind: AceKind,
    /// Trustee.
    pub sid: Sid,
    /// Access mask (may contain generic bits in inheritable ACEs).
    pub mask: u32,
    /// Inheritance flags.
    pub inherit: Inherit,
}

impl Ace {
    /// An allow ACE.
    pub fn allow(sid: Sid, mask: u32, inherit: Inherit) -> Ace {
        Ace {
            kind: AceKind::Allow,
            sid,
            mask,
            inherit,
        }
    }
    /// A deny ACE.
    pub fn deny(sid: Sid, mask: u32, inherit: Inherit) -> Ace {
        Ace {
            kind: AceKind::Deny,
            sid,
            mask,
            inherit,
        }
    }
}

/// Sorts ACEs into the order Stockade writes and Windows then stores: explicit, then inherited
/// (inheritance appends the parent's inheritable ACEs in the parent's order); within each, the
/// DACL lock's escape allow ([`is_lock_escape`]) first, then denies, then allows. Without a lock
/// ACE this is the canonical order (`SetEntriesInAcl`'s), stable within each group.
pub fn canonical_order(aces: &mut [Ace]) {
    aces.sort_by_key(|a| (a.inherit.has(Inherit::INHERITED), rank(a)));
}

fn rank(a: &Ace) -> u8 {
    if is_lock_escape(a) {
        0
    } else if a.kind == AceKind::Deny {
        1
    } else {
        2
    }
}

/// ACEs a plan puts on one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathAces {
    /// The path.
    pub path: crate::path::WinPath,
    /// Directory or file (decides whether inheritance flags make sense).
    pub kind: crate::input::Kind,
    /// The explicit ACEs to add (merged into the existing DACL; existing ACEs are kept).
    pub aces: Vec<Ace>,
    /// Why.
    pub reason: String,
}

/// The explicit ACEs `existing` (an object's explicit ACEs, without `INHERITED`) should become so
/// that every ACE of `planned` is present exactly once, in canonical order (deny before allow).
/// Returns `None` if nothing needs to change (applying a plan twice is a no-op).
/// Explicit ACEs for the same SID and kind with a different mask or inheritance are replaced:
/// the plan owns the ACEs of its SIDs.
pub fn merge_explicit(existing: &[Ace], planned: &[Ace]) -> Option<Vec<Ace>> {
    let owned = |e: &Ace| planned.iter().any(|p| p.sid == e.sid && p.kind == e.kind);
    let mut have: Vec<&Ace> = existing.iter().filter(|e| owned(e)).collect();
    let mut want: Vec<&Ace> = planned.iter().collect();
    have.sort();
    want.sort();
    if have == want {
        return None;
    }
    let mut out: Vec<Ace> = existing.iter().filter(|e| !owned(e)).cloned().collect();
    out.extend(planned.iter().cloned());
    order_explicit(&mut out);
    Some(out)
}

/// The group through which *you* keep `WRITE_DAC | WRITE_OWNER` on locked protected paths while
/// the command does not (the unelevated tier's DACL lock, `unelevated::metadata_guards`):
/// Authenticated Users (`S-1-5-11`), enabled in every normal logon's token (interactive, RDP,
/// SSH, batch) and stable across logons (unlike the logon SID), made deny-only in the command's
/// token (`unelevated::TokenPlan::deny_only`). A deny-only group matches deny ACEs only and
/// cannot be re-enabled (`CreateRestrictedToken`, `AdjustTokenGroups`).
pub fn lock_escape_group() -> Sid {
    Sid::authenticated_users()
}

/// The rights the DACL lock is about.
pub const LOCK_MASK: u32 = mask::WRITE_DAC | mask::WRITE_OWNER;

/// True for the allow ACE of the unelevated tier's DACL lock: `WRITE_DAC | WRITE_OWNER` for
/// [`lock_escape_group`], which must precede the deny of the same to the caller.
pub fn is_lock_escape(a: &Ace) -> bool {
    a.kind == AceKind::Allow && a.sid == lock_escape_group() && a.mask == LOCK_MASK
}

/// Orders explicit ACEs: the lock's escape allow first ([`is_lock_escape`]), then denies, then
/// the other allows (the canonical order otherwise); stable within each class.
pub fn order_explicit(aces: &mut [Ace]) {
    aces.sort_by_key(rank);
}

/// `existing` without the ACEs of `planned` (one copy each): cleanup of ACEs for SIDs the plan
/// does not own alone (the caller's own SID, `OWNER RIGHTS`). An existing ACE of the same kind,
/// SID and inheritance whose mask is a subset of the planned one counts as that ACE: the plan
/// may have grown since it was applied (a guard merged with another once a protected file
/// appeared beside it), and [`merge_explicit`] replaced such ACEs when applying anyway.
pub fn remove_aces(existing: &[Ace], planned: &[Ace]) -> Vec<Ace> {
    let mut left: Vec<&Ace> = planned.iter().collect();
    let same = |p: &Ace, e: &Ace| {
        p.kind == e.kind && p.sid == e.sid && p.inherit == e.inherit && e.mask & !p.mask == 0
    };
    existing
        .iter()
        .filter(|e| match left.iter().position(|p| same(p, e)) {
            Some(i) => {
                left.remove(i);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

/// `existing` without any ACE for `sid` (uninstall / cleanup).
pub fn remove_sid(existing: &[Ace], sid: &Sid) -> Vec<Ace> {
    existing.iter().filter(|e| e.sid != *sid).cloned().collect()
}

/// The explicit ACEs `existing` should become to undo a plan entry that added `planned`
/// (cleanup); `None` if none of them is there.
pub fn unmerge_explicit(existing: &[Ace], planned: &[Ace]) -> Option<Vec<Ace>> {
    let kept = remove_aces(existing, planned);
    (kept.len() != existing.len()).then_some(kept)
}

/// ACEs of `planned` that are not among the explicit ACEs of `actual` (read back after applying).
pub fn missing_explicit(actual: &[Ace], planned: &[Ace]) -> Vec<Ace> {
    planned
        .iter()
        .filter(|p| {
            !actual
                .iter()
                .any(|a| !a.inherit.has(Inherit::INHERITED) && a == *p)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> Sid {
        Sid::new(5, &[21, 1, 2, 3, n]).expect("sid")
    }

    /// The DACL lock's escape allow is written first (before every deny, existing ones included),
    /// the rest in canonical order; inherited copies keep it first among the inherited ACEs.
    #[test]
    fn merge_puts_the_lock_escape_before_every_deny() {
        let escape = Ace::allow(lock_escape_group(), LOCK_MASK, Inherit::TREE);
        let existing = vec![
            Ace::deny(s(2), mask::PROTECT_DENY, Inherit::TREE),
            Ace::allow(s(1), mask::FILE_ALL_ACCESS, Inherit::TREE),
        ];
        let planned = vec![Ace::deny(s(1), LOCK_MASK, Inherit::TREE), escape.clone()];
        let merged = merge_explicit(&existing, &planned).expect("changes");
        assert_eq!(merged[0], escape);
        assert_eq!(merged[1].kind, AceKind::Deny);
        assert_eq!(merged[2].kind, AceKind::Deny);
        assert_eq!(merged[3], existing[1]);
        assert_eq!(merge_explicit(&merged, &planned), None);
        // Another allow of the same group with other rights is not the escape: canonical.
        let mut other = vec![
            Ace::deny(s(1), mask::DELETE, Inherit::NONE),
            Ace::allow(lock_escape_group(), mask::READ_CONTROL, Inherit::NONE),
        ];
        order_explicit(&mut other);
        assert_eq!(other[0].kind, AceKind::Deny);
        let mut inherited = vec![
            Ace::deny(s(1), LOCK_MASK, Inherit(Inherit::INHERITED)),
            Ace::allow(lock_escape_group(), LOCK_MASK, Inherit(Inherit::INHERITED)),
            Ace::deny(s(3), mask::DELETE, Inherit::NONE),
        ];
        canonical_order(&mut inherited);
        assert_eq!(inherited[0].sid, s(3));
        assert!(is_lock_escape(&inherited[1]));
    }

    #[test]
    fn merge_is_idempotent_and_canonical() {
        let existing = vec![Ace::allow(s(1), mask::FILE_ALL_ACCESS, Inherit::TREE)];
        let planned = vec![
            Ace::deny(s(2), mask::PROTECT_DENY, Inherit::TREE),
            Ace::allow(s(3), mask::SANDBOX_MODIFY, Inherit::TREE),
        ];
        let merged = merge_explicit(&existing, &planned).expect("changes");
        assert_eq!(merged[0], planned[0]);
        assert_eq!(merged.len(), 3);
        assert_eq!(merge_explicit(&merged, &planned), None);
        // A stale ACE for a planned SID (other mask) is replaced, not duplicated.
        let stale = vec![Ace::allow(s(3), mask::FILE_ALL_ACCESS, Inherit::TREE)];
        assert_eq!(
            merge_explicit(&stale, &planned[1..]),
            Some(planned[1..].to_vec())
        );
        assert!(missing_explicit(&merged, &planned).is_empty());
        assert_eq!(missing_explicit(&existing, &planned), planned);
        assert_eq!(remove_sid(&merged, &s(2)).len(), 2);
    }
}
