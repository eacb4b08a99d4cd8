//! A model of the Windows access check for files, used by the tests to show what a plan lets a
//! sandboxed token do. It is a model written from the documented rules, not Windows itself:
//!
//! * A DACL is walked in order; deny ACEs come first in canonical order. An ACE that matches a
//!   SID of the token denies (or grants) the requested bits not already granted (or denied).
//! * The owner implicitly gets `READ_CONTROL | WRITE_DAC`.
//! * A restricted token is checked twice: once with its normal SIDs, once with only its
//!   restricting SIDs; access is granted only if both passes grant it. For a **write-restricted**
//!   token the second pass covers only the write bits of the file type's `GENERIC_WRITE` mapping
//!   ([`WRITE_RESTRICTED_BITS`]); everything else is decided by the normal pass alone. This means
//!   `DELETE`, `WRITE_DAC` and `WRITE_OWNER` are *not* subject to the restricting SIDs, which the
//!   tests make explicit.
//! * Deny-only groups match only deny ACEs.
//! * Inheritance: a child's ACL is its explicit ACEs followed by the inheritable ACEs of its
//!   parent's ACL (container-inherit to directories, object-inherit to files, no-propagate stops
//!   after one level, inherit-only ACEs do not apply to the object that holds them); a
//!   DACL-protected object inherits nothing.
//! * Deleting needs `DELETE` on the object or `FILE_DELETE_CHILD` on its parent; creating needs
//!   `FILE_ADD_FILE` (= `FILE_WRITE_DATA`) or `FILE_ADD_SUBDIRECTORY` (= `FILE_APPEND_DATA`) on the
//!   parent; renaming needs both.
//!
//! Privileges (backup/restore, take ownership) are not modelled: the sandbox tokens are created
//! with `DISABLE_MAX_PRIVILEGE`, which leaves only `SeChangeNotifyPrivilege` (traverse), and
//! traverse checks are not modelled either.

use crate::ace::{mask, Ace, AceKind, Inherit};
use crate::path::WinPath;
use crate::sid::Sid;
use std::collections::BTreeMap;

/// Bits that the restricting-SID pass checks for a write-restricted token: the file type's
/// `GENERIC_WRITE` mapping without the standard rights it shares with `GENERIC_READ`
/// (`READ_CONTROL`, `SYNCHRONIZE`); otherwise a write-restricted process could not open its own
/// profile's files for reading, which it can. This is the model's assumption about the kernel,
/// stated here so that a test on a real host can confirm or refute it.
pub const WRITE_RESTRICTED_BITS: u32 =
    mask::FILE_GENERIC_WRITE & !(mask::READ_CONTROL | mask::SYNCHRONIZE);

/// The security-relevant parts of an access token.
#[derive(Debug, Clone)]
pub struct TokenModel {
    /// User SID.
    pub user: Sid,
    /// Enabled groups (including the logon SID, Everyone, ...).
    pub groups: Vec<Sid>,
    /// Deny-only groups.
    pub deny_only: Vec<Sid>,
    /// Restricting SIDs (empty: not a restricted token).
    pub restricting: Vec<Sid>,
    /// `WRITE_RESTRICTED`: the restricting pass applies to write bits only.
    pub write_restricted: bool,
}

impl TokenModel {
    fn normal_matches(&self, sid: &Sid, kind: AceKind) -> bool {
        *sid == self.user
            || self.groups.contains(sid)
            || (kind == AceKind::Deny && self.deny_only.contains(sid))
    }
}

/// One existing filesystem object.
#[derive(Debug, Clone)]
pub struct Node {
    /// Directory or file.
    pub dir: bool,
    /// Owner SID.
    pub owner: Sid,
    /// Explicit ACEs (without the `INHERITED` flag), in the order they are stored.
    pub explicit: Vec<Ace>,
    /// `SE_DACL_PROTECTED`: inherits nothing from its parent.
    pub protected: bool,
}

/// A set of existing files and directories with their security.
#[derive(Debug, Clone, Default)]
pub struct FsModel {
    nodes: BTreeMap<WinPath, Node>,
}

/// Filesystem operations the tests ask about.
#[derive(Debug, Clone)]
pub enum Op {
    /// Open an existing file or directory with these rights.
    Open(u32),
    /// Create a file at this (non-existing) path.
    CreateFile,
    /// Create a directory at this (non-existing) path.
    CreateDir,
    /// Delete the object.
    Delete,
    /// Rename (move) the object to another path.
    RenameTo(WinPath),
}

impl FsModel {
    /// An empty model (no root: every access to anything is denied until nodes are added).
    pub fn new() -> FsModel {
        FsModel::default()
    }

    /// Adds or replaces an object.
    pub fn insert(&mut self, path: WinPath, node: Node) {
        self.nodes.insert(path, node);
    }

    /// True if the object exists in the model.
    pub fn exists(&self, path: &WinPath) -> bool {
        self.nodes.contains_key(path)
    }

    /// Adds explicit ACEs to an existing object, in canonical order (what applying a plan does).
    pub fn add_explicit(&mut self, path: &WinPath, aces: &[Ace]) -> bool {
        match self.nodes.get_mut(path) {
            Some(n) => {
                n.explicit.extend(aces.iter().cloned());
                // Explicit deny before explicit allow, each group in insertion order.
                n.explicit.sort_by_key(|a| a.kind == AceKind::Allow);
                true
            }
            None => false,
        }
    }

    /// The full ACL an object has (explicit, then inherited), including inherit-only entries.
    /// A non-existing object gets the ACL it would be created with.
    pub fn acl(&self, path: &WinPath, dir: bool) -> Vec<Ace> {
        let node = self.nodes.get(path);
        let mut out: Vec<Ace> = node.map(|n| n.explicit.clone()).unwrap_or_default();
        if node.is_some_and(|n| n.protected) {
            return out;
        }
        let Some(parent) = path.parent() else {
            return out;
        };
        let parent_acl = self.acl(&parent, true);
        for ace in parent_acl {
            let f = ace.inherit;
            let inherited_flags = if dir {
                if f.has(Inherit::CONTAINER) {
                    if f.has(Inherit::NO_PROPAGATE) {
                        Some(0)
                    } else {
                        Some(f.0 & (Inherit::OBJECT | Inherit::CONTAINER))
                    }
                } else if f.has(Inherit::OBJECT) && !f.has(Inherit::NO_PROPAGATE) {
                    Some(Inherit::OBJECT | Inherit::INHERIT_ONLY)
                } else {
                    None
                }
            } else if f.has(Inherit::OBJECT) {
                Some(0)
            } else {
                None
            };
            if let Some(flags) = inherited_flags {
                let owner = node.map(|n| n.owner.clone());
                let sid = match (&ace.sid, owner) {
                    (s, Some(o)) if *s == Sid::creator_owner() => o,
                    (s, _) => s.clone(),
                };
                out.push(Ace {
                    kind: ace.kind,
                    sid,
                    mask: ace.mask,
                    inherit: Inherit(flags | Inherit::INHERITED),
                });
            }
        }
        // Canonical: explicit deny, explicit allow, inherited deny, inherited allow.
        crate::ace::canonical_order(&mut out);
        out
    }

    fn owner_of(&self, path: &WinPath, creator: &Sid) -> Sid {
        self.nodes
            .get(path)
            .map(|n| n.owner.clone())
            .unwrap_or_else(|| creator.clone())
    }

    fn is_dir(&self, path: &WinPath) -> bool {
        self.nodes.get(path).is_some_and(|n| n.dir)
    }

    /// Would `token` be granted `desired` on `path`?
    pub fn check(&self, token: &TokenModel, path: &WinPath, desired: u32) -> bool {
        let dir = self.is_dir(path);
        let acl = self.acl(path, dir);
        let owner = self.owner_of(path, &token.user);
        access_check(token, &acl, &owner, desired)
    }

    /// Would `token` be allowed to perform `op` on `path`?
    pub fn allowed(&self, token: &TokenModel, path: &WinPath, op: &Op) -> bool {
        match op {
            Op::Open(m) => self.exists(path) && self.check(token, path, *m),
            Op::CreateFile => self.can_create(token, path, false),
            Op::CreateDir => self.can_create(token, path, true),
            Op::Delete => self.can_delete(token, path),
            Op::RenameTo(to) => {
                let dir = self.is_dir(path);
                self.can_delete(token, path) && self.can_create(token, to, dir)
            }
        }
    }

    fn can_create(&self, token: &TokenModel, path: &WinPath, dir: bool) -> bool {
        if self.exists(path) {
            return false;
        }
        let Some(parent) = path.parent() else {
            return false;
        };
        let right = if dir {
            mask::FILE_APPEND_DATA
        } else {
            mask::FILE_WRITE_DATA
        };
        self.exists(&parent) && self.check(token, &parent, right)
    }

    fn can_delete(&self, token: &TokenModel, path: &WinPath) -> bool {
        if !self.exists(path) {
            return false;
        }
        if self.check(token, path, mask::DELETE) {
            return true;
        }
        path.parent()
            .is_some_and(|p| self.exists(&p) && self.check(token, &p, mask::FILE_DELETE_CHILD))
    }

    /// "Can the token change this path?" in the sense the policy means: write data to it if it
    /// exists (or create it if it does not).
    pub fn can_write(&self, token: &TokenModel, path: &WinPath) -> bool {
        if self.exists(path) {
            let m = if self.is_dir(path) {
                mask::FILE_WRITE_DATA
            } else {
                mask::FILE_WRITE_DATA | mask::FILE_APPEND_DATA
            };
            self.check(token, path, m)
        } else {
            self.can_create(token, path, false)
        }
    }
}

/// One pass over a DACL: the subset of `desired` the matching ACEs grant.
fn evaluate(
    aces: &[Ace],
    matches: impl Fn(&Sid, AceKind) -> bool,
    desired: u32,
    owner: bool,
) -> u32 {
    let mut granted = 0u32;
    let mut denied = 0u32;
    let owner_rights_ace = aces
        .iter()
        .any(|a| a.sid == Sid::new(3, &[4]).unwrap_or_else(|_| Sid::everyone()));
    if owner && !owner_rights_ace {
        granted |= desired & (mask::READ_CONTROL | mask::WRITE_DAC);
    }
    for ace in aces {
        if ace.inherit.has(Inherit::INHERIT_ONLY) || !matches(&ace.sid, ace.kind) {
            continue;
        }
        let m = mask::map_generic(ace.mask) & desired;
        match ace.kind {
            AceKind::Deny => denied |= m & !granted,
            AceKind::Allow => granted |= m & !denied,
        }
    }
    granted
}

/// The access check: true if every bit of `desired` is granted to `token` by `acl` (an object
/// owned by `owner`).
pub fn access_check(token: &TokenModel, acl: &[Ace], owner: &Sid, desired: u32) -> bool {
    let desired = mask::map_generic(desired);
    let owner_normal = token.normal_matches(owner, AceKind::Allow);
    let normal = evaluate(
        acl,
        |s, k| token.normal_matches(s, k),
        desired,
        owner_normal,
    );
    if normal != desired {
        return false;
    }
    if token.restricting.is_empty() {
        return true;
    }
    let rdesired = if token.write_restricted {
        desired & WRITE_RESTRICTED_BITS
    } else {
        desired
    };
    if rdesired == 0 {
        return true;
    }
    let owner_restricted = token.restricting.contains(owner);
    let restricted = evaluate(
        acl,
        |s, _| token.restricting.contains(s),
        rdesired,
        owner_restricted,
    );
    restricted == rdesired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> Sid {
        Sid::parse(s).expect("test sid")
    }

    #[test]
    fn deny_first_and_restricted_intersection() {
        let alice = sid("S-1-5-21-1-2-3-1001");
        let cap = sid("S-1-5-21-9-9-9-9");
        let acl = vec![
            Ace::allow(alice.clone(), mask::FILE_ALL_ACCESS, Inherit::NONE),
            Ace::allow(cap.clone(), mask::FILE_GENERIC_READ, Inherit::NONE),
        ];
        let plain = TokenModel {
            user: alice.clone(),
            groups: vec![],
            deny_only: vec![],
            restricting: vec![],
            write_restricted: false,
        };
        assert!(access_check(&plain, &acl, &alice, mask::FILE_WRITE_DATA));
        let restricted = TokenModel {
            restricting: vec![cap.clone()],
            write_restricted: true,
            ..plain.clone()
        };
        assert!(!access_check(
            &restricted,
            &acl,
            &alice,
            mask::FILE_WRITE_DATA
        ));
        assert!(access_check(
            &restricted,
            &acl,
            &alice,
            mask::FILE_READ_DATA
        ));
        // Fully restricted (not write-restricted): reads also need the restricting SIDs.
        let full = TokenModel {
            write_restricted: false,
            ..restricted.clone()
        };
        assert!(access_check(&full, &acl, &alice, mask::FILE_READ_DATA));
        assert!(!access_check(&full, &acl, &alice, mask::FILE_EXECUTE));
        // A deny ACE for the restricting SID wins even after an allow for it.
        let mut acl2 = vec![Ace::deny(cap.clone(), mask::FILE_WRITE_DATA, Inherit::NONE)];
        acl2.extend(acl.clone());
        acl2.push(Ace::allow(cap, mask::FILE_ALL_ACCESS, Inherit::NONE));
        assert!(!access_check(
            &restricted,
            &acl2,
            &alice,
            mask::FILE_WRITE_DATA
        ));
        assert!(access_check(
            &restricted,
            &acl2,
            &alice,
            mask::FILE_APPEND_DATA
        ));
    }

    #[test]
    fn deny_only_groups_match_only_deny() {
        let u = sid("S-1-5-21-1-2-3-1001");
        let admins = Sid::administrators();
        let t = TokenModel {
            user: u.clone(),
            groups: vec![],
            deny_only: vec![admins.clone()],
            restricting: vec![],
            write_restricted: false,
        };
        assert!(!access_check(
            &t,
            &[Ace::allow(
                admins.clone(),
                mask::FILE_ALL_ACCESS,
                Inherit::NONE
            )],
            &Sid::local_system(),
            mask::FILE_READ_DATA
        ));
        let acl = vec![
            Ace::deny(admins, mask::FILE_READ_DATA, Inherit::NONE),
            Ace::allow(u.clone(), mask::FILE_ALL_ACCESS, Inherit::NONE),
        ];
        assert!(!access_check(&t, &acl, &u, mask::FILE_READ_DATA));
    }

    #[test]
    fn inheritance_rules() {
        let u = sid("S-1-5-21-1-2-3-1001");
        let p = |s: &str| WinPath::parse(s).expect("test path");
        let mut fs = FsModel::new();
        fs.insert(
            p(r"C:\d"),
            Node {
                dir: true,
                owner: u.clone(),
                explicit: vec![
                    Ace::allow(u.clone(), mask::FILE_READ_DATA, Inherit(Inherit::CONTAINER)),
                    Ace::allow(u.clone(), mask::FILE_WRITE_DATA, Inherit(Inherit::OBJECT)),
                    Ace::allow(
                        u.clone(),
                        mask::DELETE,
                        Inherit(Inherit::OBJECT | Inherit::CONTAINER | Inherit::NO_PROPAGATE),
                    ),
                ],
                protected: true,
            },
        );
        fs.insert(
            p(r"C:\d\sub"),
            Node {
                dir: true,
                owner: u.clone(),
                explicit: vec![],
                protected: false,
            },
        );
        fs.insert(
            p(r"C:\d\sub\f"),
            Node {
                dir: false,
                owner: u.clone(),
                explicit: vec![],
                protected: false,
            },
        );
        fs.insert(
            p(r"C:\d\sub\g"),
            Node {
                dir: true,
                owner: u.clone(),
                explicit: vec![],
                protected: true,
            },
        );
        let t = TokenModel {
            user: u,
            groups: vec![],
            deny_only: vec![],
            restricting: vec![],
            write_restricted: false,
        };
        assert!(fs.check(&t, &p(r"C:\d\sub"), mask::FILE_READ_DATA));
        assert!(!fs.check(&t, &p(r"C:\d\sub"), mask::FILE_WRITE_DATA)); // object-inherit only: inherit-only on dirs
        assert!(fs.check(&t, &p(r"C:\d\sub"), mask::DELETE)); // no-propagate: immediate child only
        assert!(fs.check(&t, &p(r"C:\d\sub\f"), mask::FILE_WRITE_DATA)); // passed down through sub
        assert!(!fs.check(&t, &p(r"C:\d\sub\f"), mask::FILE_READ_DATA)); // container-inherit only
        assert!(!fs.check(&t, &p(r"C:\d\sub\f"), mask::DELETE));
        assert!(!fs.check(&t, &p(r"C:\d\sub\g"), mask::FILE_READ_DATA)); // protected DACL inherits nothing
    }
}
