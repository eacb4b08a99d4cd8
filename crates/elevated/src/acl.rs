//! POSIX ACLs in their kernel xattr form (`system.posix_acl_access` / `_default`), and the pure
//! decisions of which entries a path gets. No syscalls here.

/// `ACL_USER_OBJ`.
pub const TAG_USER_OBJ: u16 = 0x01;
/// `ACL_USER`.
pub const TAG_USER: u16 = 0x02;
/// `ACL_GROUP_OBJ`.
pub const TAG_GROUP_OBJ: u16 = 0x04;
/// `ACL_GROUP`.
pub const TAG_GROUP: u16 = 0x08;
/// `ACL_MASK`.
pub const TAG_MASK: u16 = 0x10;
/// `ACL_OTHER`.
pub const TAG_OTHER: u16 = 0x20;
const VERSION: u32 = 2;
const UNDEFINED_ID: u32 = u32::MAX;

/// A named-user entry to set: (uid, rwx bits).
pub type UserPerm = (u32, u16);

/// Read.
pub const R: u16 = 4;
/// Write.
pub const W: u16 = 2;
/// Execute/search.
pub const X: u16 = 1;

/// One ACL entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Tag (`TAG_*`).
    pub tag: u16,
    /// Qualifier (uid/gid) for `TAG_USER`/`TAG_GROUP`, else `u32::MAX`.
    pub id: u32,
    /// `rwx` bits.
    pub perm: u16,
}

/// Malformed ACL xattr.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed POSIX ACL attribute: {0}")]
pub struct AclFormatError(pub &'static str);

/// Decodes the xattr value.
pub fn decode(b: &[u8]) -> Result<Vec<Entry>, AclFormatError> {
    if b.len() < 4 || !(b.len() - 4).is_multiple_of(8) {
        return Err(AclFormatError("bad length"));
    }
    if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != VERSION {
        return Err(AclFormatError("unknown version"));
    }
    Ok(b[4..]
        .chunks_exact(8)
        .map(|c| Entry {
            tag: u16::from_le_bytes([c[0], c[1]]),
            perm: u16::from_le_bytes([c[2], c[3]]),
            id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// Encodes entries (sorting them in the order the kernel requires: by tag, then id).
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut e = entries.to_vec();
    e.sort_by_key(|x| (x.tag, x.id));
    let mut out = Vec::with_capacity(4 + 8 * e.len());
    out.extend_from_slice(&VERSION.to_le_bytes());
    for x in e {
        out.extend_from_slice(&x.tag.to_le_bytes());
        out.extend_from_slice(&x.perm.to_le_bytes());
        out.extend_from_slice(&x.id.to_le_bytes());
    }
    out
}

/// The minimal ACL equivalent to permission bits `mode`.
pub fn from_mode(mode: u32) -> Vec<Entry> {
    vec![
        Entry {
            tag: TAG_USER_OBJ,
            id: UNDEFINED_ID,
            perm: ((mode >> 6) & 7) as u16,
        },
        Entry {
            tag: TAG_GROUP_OBJ,
            id: UNDEFINED_ID,
            perm: ((mode >> 3) & 7) as u16,
        },
        Entry {
            tag: TAG_OTHER,
            id: UNDEFINED_ID,
            perm: (mode & 7) as u16,
        },
    ]
}

/// Recomputes the mask as the union of the group class (named users, owning group, named
/// groups), as `setfacl` does; drops it when there are no named entries.
fn fix_mask(mut acl: Vec<Entry>) -> Vec<Entry> {
    acl.retain(|e| e.tag != TAG_MASK);
    let named = acl.iter().any(|e| e.tag == TAG_USER || e.tag == TAG_GROUP);
    if named {
        let m = acl
            .iter()
            .filter(|e| matches!(e.tag, TAG_USER | TAG_GROUP_OBJ | TAG_GROUP))
            .fold(0, |a, e| a | e.perm);
        acl.push(Entry {
            tag: TAG_MASK,
            id: UNDEFINED_ID,
            perm: m,
        });
    }
    acl.sort_by_key(|x| (x.tag, x.id));
    acl
}

/// A named entry to set: (tag `TAG_USER`/`TAG_GROUP`, uid/gid, rwx bits).
pub type Named = (u16, u32, u16);

/// `acl` with each named entry set (replacing an existing entry with the same tag and id).
pub fn with_named(acl: &[Entry], named: &[Named]) -> Vec<Entry> {
    let mut out: Vec<Entry> = acl
        .iter()
        .filter(|e| !named.iter().any(|(t, id, _)| *t == e.tag && *id == e.id))
        .copied()
        .collect();
    for (tag, id, perm) in named {
        out.push(Entry {
            tag: *tag,
            id: *id,
            perm: *perm,
        });
    }
    fix_mask(out)
}

/// `acl` without the named entries `(tag, id)`, never wider than before for the group class:
/// the old mask (the group bits `ls` showed, narrowed by any `chmod` meanwhile) still bounds the
/// new one, and when no named entry is left the mask is folded into the owning group's entry
/// (its effective rights, `group_obj & mask`), so the mode comes back exactly as it was.
pub fn without_named(acl: &[Entry], which: &[(u16, u32)]) -> Vec<Entry> {
    let old_mask = acl.iter().find(|e| e.tag == TAG_MASK).map(|e| e.perm);
    let mut out = fix_mask(
        acl.iter()
            .filter(|e| !which.contains(&(e.tag, e.id)))
            .copied()
            .collect(),
    );
    if let Some(m) = old_mask {
        let named = out.iter().any(|e| e.tag == TAG_USER || e.tag == TAG_GROUP);
        for e in out.iter_mut() {
            if (named && e.tag == TAG_MASK) || (!named && e.tag == TAG_GROUP_OBJ) {
                e.perm &= m;
            }
        }
    }
    out
}

/// `acl` with a named-user entry `(uid, perm)` for each pair (replacing any existing one).
pub fn with_users(acl: &[Entry], users: &[UserPerm]) -> Vec<Entry> {
    let named: Vec<Named> = users.iter().map(|(u, p)| (TAG_USER, *u, *p)).collect();
    with_named(acl, &named)
}

/// `acl` without named-user entries for `uids`.
pub fn without_users(acl: &[Entry], uids: &[u32]) -> Vec<Entry> {
    let which: Vec<(u16, u32)> = uids.iter().map(|u| (TAG_USER, *u)).collect();
    without_named(acl, &which)
}

/// Whether the ACL is just the permission bits (no named entries).
pub fn is_minimal(acl: &[Entry]) -> bool {
    !acl.iter()
        .any(|e| matches!(e.tag, TAG_USER | TAG_GROUP | TAG_MASK))
}

/// Whether `acl` grants exactly `perm` to the named entry (`tag`, `id`) and the mask does not
/// cut it.
pub fn has_named(acl: &[Entry], tag: u16, id: u32, perm: u16) -> bool {
    let mask = acl.iter().find(|e| e.tag == TAG_MASK).map_or(7, |e| e.perm);
    acl.iter()
        .any(|e| e.tag == tag && e.id == id && e.perm == perm && perm & mask == perm)
}

/// Whether `acl` grants exactly `perm` to named user `uid` (and the mask does not cut it).
pub fn has_user(acl: &[Entry], uid: u32, perm: u16) -> bool {
    has_named(acl, TAG_USER, uid, perm)
}

/// What a path gets, decided from where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Beneath a writable root, not protected: sandbox accounts read/write.
    Writable,
    /// A protected path (`.git`, agent config, ...) or beneath one: sandbox accounts read-only.
    ReadOnly,
    /// A `deny_read` path: sandbox accounts get an explicit empty entry (overrides "other").
    Denied,
}

/// Entries to add for one inode. `exec` is whether any x bit is set on a regular file.
///
/// Access is granted to the caller's **grant group** (`grant_gid`, a per-caller group the broker
/// adds to the sandbox process only when it runs for that caller), never to the shared sandbox
/// uids: a run for another user, as the same account, gets nothing from these entries.
///
/// Returns `(access entries, default entries)`; default entries only for directories. The caller
/// (the workspace owner) gets a default entry so files the sandbox creates stay editable by them.
pub fn entries_for(
    t: Treatment,
    is_dir: bool,
    exec: bool,
    grant_gid: u32,
    caller_uid: u32,
) -> (Vec<Named>, Vec<Named>) {
    let x = if is_dir || exec { X } else { 0 };
    let perm = match t {
        Treatment::Writable => R | W | x,
        Treatment::ReadOnly => R | x,
        Treatment::Denied => 0,
    };
    let access = vec![(TAG_GROUP, grant_gid, perm)];
    let default = match (is_dir, t) {
        (true, Treatment::Writable) => vec![
            (TAG_GROUP, grant_gid, R | W | X),
            (TAG_USER, caller_uid, R | W | X),
        ],
        (true, Treatment::ReadOnly) => vec![(TAG_GROUP, grant_gid, R | X)],
        _ => Vec::new(),
    };
    (access, default)
}

/// Default ACL to set on a directory: the existing default (or one derived from the directory's
/// mode if there is none) plus `users`.
pub fn default_with(
    existing_default: Option<&[Entry]>,
    dir_mode: u32,
    named: &[Named],
) -> Vec<Entry> {
    let base = match existing_default {
        Some(d) if !d.is_empty() => d.to_vec(),
        _ => from_mode(dir_mode),
    };
    with_named(&base, named)
}

/// Formats an ACL like `getfacl` (for messages and tests).
pub fn to_text(acl: &[Entry]) -> String {
    acl.iter()
        .map(|e| {
            let p = format!(
                "{}{}{}",
                if e.perm & R != 0 { 'r' } else { '-' },
                if e.perm & W != 0 { 'w' } else { '-' },
                if e.perm & X != 0 { 'x' } else { '-' }
            );
            match e.tag {
                TAG_USER_OBJ => format!("user::{p}"),
                TAG_USER => format!("user:{}:{p}", e.id),
                TAG_GROUP_OBJ => format!("group::{p}"),
                TAG_GROUP => format!("group:{}:{p}", e.id),
                TAG_MASK => format!("mask::{p}"),
                _ => format!("other::{p}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_order() {
        let acl = with_users(&from_mode(0o750), &[(1001, R | W | X), (999, R)]);
        let b = encode(&acl);
        assert_eq!(decode(&b).unwrap(), acl);
        assert_eq!(
            to_text(&acl),
            "user::rwx,user:999:r--,user:1001:rwx,group::r-x,mask::rwx,other::---"
        );
        assert!(decode(&b[..5]).is_err());
        let mut bad = b.clone();
        bad[0] = 1;
        assert_eq!(decode(&bad), Err(AclFormatError("unknown version")));
    }

    #[test]
    fn removing_the_grants_restores_the_mode_exactly() {
        for mode in [0o644, 0o600, 0o755, 0o750, 0o664, 0o640] {
            let base = from_mode(mode);
            let granted = with_named(&base, &[(TAG_GROUP, 994, R | W | X), (TAG_USER, 7, R)]);
            assert_eq!(
                without_named(&granted, &[(TAG_GROUP, 994), (TAG_USER, 7)]),
                base,
                "{mode:o}"
            );
        }
        // A chmod g-w while granted narrowed the mask: the fold keeps it narrowed.
        let mut g = with_named(&from_mode(0o664), &[(TAG_GROUP, 994, R | W)]);
        g.iter_mut()
            .filter(|e| e.tag == TAG_MASK)
            .for_each(|e| e.perm = R);
        assert_eq!(without_named(&g, &[(TAG_GROUP, 994)]), from_mode(0o644));
        // Named entries left: the mask never widens past the old one.
        let mut g = with_named(
            &from_mode(0o640),
            &[(TAG_GROUP, 994, R | W), (TAG_USER, 5, R | W)],
        );
        g.iter_mut()
            .filter(|e| e.tag == TAG_MASK)
            .for_each(|e| e.perm = R);
        let left = without_named(&g, &[(TAG_GROUP, 994)]);
        assert_eq!(
            left.iter().find(|e| e.tag == TAG_MASK).map(|e| e.perm),
            Some(R)
        );
    }

    #[test]
    fn replace_and_remove_users_recomputes_mask() {
        let a = with_users(&from_mode(0o640), &[(5, R | W)]);
        let a = with_users(&a, &[(5, R)]);
        assert_eq!(
            to_text(&a),
            "user::rw-,user:5:r--,group::r--,mask::r--,other::---"
        );
        let b = without_users(&a, &[5]);
        assert!(is_minimal(&b));
        assert_eq!(b, from_mode(0o640));
        assert!(has_user(&a, 5, R));
        assert!(!has_user(&a, 5, R | W));
    }

    #[test]
    fn treatments() {
        let (a, d) = entries_for(Treatment::Writable, true, false, 50, 1000);
        assert_eq!(a, vec![(TAG_GROUP, 50, 7)]);
        assert_eq!(d, vec![(TAG_GROUP, 50, 7), (TAG_USER, 1000, 7)]);
        let (a, d) = entries_for(Treatment::Writable, false, false, 50, 1000);
        assert_eq!(a, vec![(TAG_GROUP, 50, 6)]);
        assert!(d.is_empty());
        let (a, _) = entries_for(Treatment::Writable, false, true, 50, 1000);
        assert_eq!(a, vec![(TAG_GROUP, 50, 7)]);
        let (a, d) = entries_for(Treatment::ReadOnly, true, false, 50, 1000);
        assert_eq!(a, vec![(TAG_GROUP, 50, 5)]);
        assert_eq!(
            d,
            vec![(TAG_GROUP, 50, 5)],
            "protected dirs: new files stay read-only"
        );
        let (a, d) = entries_for(Treatment::Denied, true, false, 50, 1000);
        assert_eq!(a, vec![(TAG_GROUP, 50, 0)]);
        assert!(d.is_empty());
    }

    #[test]
    fn group_entries_and_removal() {
        let a = with_named(
            &from_mode(0o700),
            &[(TAG_GROUP, 50, R | X), (TAG_USER, 7, R)],
        );
        assert_eq!(
            to_text(&a),
            "user::rwx,user:7:r--,group::---,group:50:r-x,mask::r-x,other::---"
        );
        assert!(has_named(&a, TAG_GROUP, 50, R | X));
        let b = without_named(&a, &[(TAG_GROUP, 50), (TAG_USER, 7)]);
        assert_eq!(b, from_mode(0o700));
    }

    #[test]
    fn default_acl_derived_from_mode() {
        let d = default_with(None, 0o755, &[(TAG_GROUP, 10, 7)]);
        assert_eq!(
            to_text(&d),
            "user::rwx,group::r-x,group:10:rwx,mask::rwx,other::r-x"
        );
    }
}
