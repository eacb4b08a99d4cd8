//! A model of the Windows access check, used by the tests to show what a plan lets a sandboxed
//! token do, including multi-step attacks (re-ACL then write, rename then recreate). It is a model
//! written from the documented algorithm (Microsoft, "How DACLs Control Access to an Object",
//! "How AccessCheck Works", "Restricted Tokens", "SID Strings: OWNER RIGHTS"; Forshaw, *Windows
//! Security Internals*, ch. 7), not Windows itself:
//!
//! * **Normal pass.** The DACL is walked in order; ACEs that are inherit-only or name a SID the
//!   pass does not hold are skipped. A deny ACE that names any still-wanted, not yet granted bit
//!   denies the whole request; allow ACEs accumulate. No DACL entry grants nothing.
//! * **Owner.** If the object's owner is present in the pass (the user or an enabled group for
//!   the normal pass, a restricting SID for the restricting pass), the pass starts with
//!   `READ_CONTROL | WRITE_DAC` granted, **unless** the DACL has an effective `OWNER RIGHTS`
//!   (`S-1-3-4`) ACE; `OWNER RIGHTS` ACEs match in a pass exactly when the owner is present.
//! * **Restricting pass.** A restricted token is checked again with only its restricting SIDs
//!   (which match allow and deny ACEs). A *write-restricted* token is checked again only when the
//!   request contains a write bit ([`Mapping::write_bits`]: the type's `GENERIC_WRITE` mapping
//!   without the `READ_CONTROL | SYNCHRONIZE` it shares with `GENERIC_READ`) and then the second
//!   pass covers the **whole** request. A request without a write bit (`DELETE`, `WRITE_DAC`,
//!   `WRITE_OWNER`, reads) is decided by the normal pass alone.
//! * Deny-only groups match only deny ACEs.
//! * **Stored inheritance.** An object's DACL is stored: it is computed once, when the object is
//!   created (its parent's inheritable ACEs, with `CREATOR OWNER` replaced by the creator), or
//!   when an inheritable ACE is set on an ancestor through the path (what `SetNamedSecurityInfo`
//!   propagates). Renaming keeps the stored DACL; re-ACLing through a handle
//!   (`SetSecurityInfo`, [`Op::SetDacl`]) changes that object only.
//! * **`CREATOR OWNER`.** An inherited `CREATOR OWNER` ACE becomes an effective ACE for the new
//!   object's owner; on a container that inherits it for propagation, an inherit-only
//!   `CREATOR OWNER` copy is kept as well.
//! * Deleting needs `DELETE` on the object or `FILE_DELETE_CHILD` on its parent (and a directory
//!   must be empty); creating needs `FILE_ADD_FILE` (= `FILE_WRITE_DATA`) or
//!   `FILE_ADD_SUBDIRECTORY` (= `FILE_APPEND_DATA`) on the parent; renaming needs both, and keeps
//!   the moved objects' stored DACLs.
//!
//! Privileges (backup/restore, take ownership) are not modelled: the sandbox tokens are created
//! with `DISABLE_MAX_PRIVILEGE`, which leaves only `SeChangeNotifyPrivilege` (traverse), and
//! traverse checks are not modelled either. An object created where nothing is inheritable gets
//! an empty DACL here (Windows would use the token's default DACL).

use crate::ace::{mask, Ace, AceKind, Inherit};
use crate::path::WinPath;
use crate::sid::Sid;
use std::collections::BTreeMap;

/// An object type's generic mapping (`GENERIC_MAPPING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// `GENERIC_READ` maps to.
    pub read: u32,
    /// `GENERIC_WRITE` maps to.
    pub write: u32,
    /// `GENERIC_EXECUTE` maps to.
    pub execute: u32,
    /// `GENERIC_ALL` maps to.
    pub all: u32,
}

impl Mapping {
    /// Maps generic bits to specific rights.
    pub fn map(&self, m: u32) -> u32 {
        let mut out = m & !(mask::GENERIC_READ
            | mask::GENERIC_WRITE
            | mask::GENERIC_EXECUTE
            | mask::GENERIC_ALL);
        if m & mask::GENERIC_READ != 0 {
            out |= self.read;
        }
        if m & mask::GENERIC_WRITE != 0 {
            out |= self.write;
        }
        if m & mask::GENERIC_EXECUTE != 0 {
            out |= self.execute;
        }
        if m & mask::GENERIC_ALL != 0 {
            out |= self.all;
        }
        out
    }

    /// The bits whose presence in a request makes a write-restricted token's restricting SIDs
    /// be consulted: `GENERIC_WRITE`'s mapping without `READ_CONTROL | SYNCHRONIZE` (which
    /// `GENERIC_READ` maps to as well; a write-restricted process opens its profile's files for
    /// reading). This is the model's assumption about the kernel, stated here so that a real-host
    /// probe can confirm or refute it.
    pub fn write_bits(&self) -> u32 {
        self.write & !(mask::READ_CONTROL | mask::SYNCHRONIZE)
    }
}

/// Files and directories.
pub const FILE_MAPPING: Mapping = Mapping {
    read: mask::FILE_GENERIC_READ,
    write: mask::FILE_GENERIC_WRITE,
    execute: mask::FILE_GENERIC_EXECUTE,
    all: mask::FILE_ALL_ACCESS,
};

/// Registry key rights (values from `winnt.h`).
pub mod key {
    /// `KEY_QUERY_VALUE`.
    pub const QUERY_VALUE: u32 = 0x1;
    /// `KEY_SET_VALUE`.
    pub const SET_VALUE: u32 = 0x2;
    /// `KEY_CREATE_SUB_KEY`.
    pub const CREATE_SUB_KEY: u32 = 0x4;
    /// `KEY_ENUMERATE_SUB_KEYS`.
    pub const ENUMERATE_SUB_KEYS: u32 = 0x8;
    /// `KEY_NOTIFY`.
    pub const NOTIFY: u32 = 0x10;
    /// `KEY_READ`.
    pub const READ: u32 =
        crate::ace::mask::READ_CONTROL | QUERY_VALUE | ENUMERATE_SUB_KEYS | NOTIFY;
    /// `KEY_WRITE`.
    pub const WRITE: u32 = crate::ace::mask::READ_CONTROL | SET_VALUE | CREATE_SUB_KEY;
    /// `KEY_ALL_ACCESS`.
    pub const ALL_ACCESS: u32 = 0xF_003F;
}

/// Registry keys.
pub const KEY_MAPPING: Mapping = Mapping {
    read: key::READ,
    write: key::WRITE,
    execute: key::READ,
    all: key::ALL_ACCESS,
};

/// Bits that trigger the restricting pass of a write-restricted token on files.
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
    /// `WRITE_RESTRICTED`: the restricting pass happens only for requests with a write bit.
    pub write_restricted: bool,
}

impl TokenModel {
    fn normal_matches(&self, sid: &Sid, kind: AceKind) -> bool {
        *sid == self.user
            || self.groups.contains(sid)
            || (kind == AceKind::Deny && self.deny_only.contains(sid))
    }

    fn owner_in_normal(&self, owner: &Sid) -> bool {
        *owner == self.user || self.groups.contains(owner)
    }
}

/// One existing filesystem object, as inserted into the model.
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

/// One object as stored: its complete DACL (explicit, then inherited entries).
#[derive(Debug, Clone)]
struct Stored {
    dir: bool,
    owner: Sid,
    dacl: Vec<Ace>,
    protected: bool,
}

impl Stored {
    fn explicit(&self) -> Vec<Ace> {
        self.dacl
            .iter()
            .filter(|a| !a.inherit.has(Inherit::INHERITED))
            .cloned()
            .collect()
    }
}

/// A set of existing files and directories with their stored security.
#[derive(Debug, Clone, Default)]
pub struct FsModel {
    nodes: BTreeMap<WinPath, Stored>,
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
    /// Open with `WRITE_DAC` and replace the object's explicit ACEs (`SetSecurityInfo` on the
    /// handle: this object only, inherited entries kept).
    SetDacl(Vec<Ace>),
}

/// The inheritable ACEs of `parent` as a new child gets them (`owner`: the child's owner, which
/// replaces `CREATOR OWNER`).
pub fn inherit_from(parent: &[Ace], dir: bool, owner: &Sid) -> Vec<Ace> {
    let co = Sid::creator_owner();
    let mut out = Vec::new();
    let mut push = |kind, sid: Sid, m: u32, flags: u8| {
        out.push(Ace {
            kind,
            sid,
            mask: m,
            inherit: Inherit(flags | Inherit::INHERITED),
        })
    };
    for ace in parent {
        let f = ace.inherit;
        let effective_sid = if ace.sid == co {
            owner.clone()
        } else {
            ace.sid.clone()
        };
        if !dir {
            if f.has(Inherit::OBJECT) {
                push(ace.kind, effective_sid, ace.mask, 0);
            }
            continue;
        }
        if f.has(Inherit::CONTAINER) {
            if f.has(Inherit::NO_PROPAGATE) {
                push(ace.kind, effective_sid, ace.mask, 0);
            } else if ace.sid == co {
                push(ace.kind, effective_sid, ace.mask, 0);
                push(
                    ace.kind,
                    co.clone(),
                    ace.mask,
                    (f.0 & (Inherit::OBJECT | Inherit::CONTAINER)) | Inherit::INHERIT_ONLY,
                );
            } else {
                push(
                    ace.kind,
                    ace.sid.clone(),
                    ace.mask,
                    f.0 & (Inherit::OBJECT | Inherit::CONTAINER),
                );
            }
        } else if f.has(Inherit::OBJECT) && !f.has(Inherit::NO_PROPAGATE) {
            push(
                ace.kind,
                ace.sid.clone(),
                ace.mask,
                Inherit::OBJECT | Inherit::INHERIT_ONLY,
            );
        }
    }
    out
}

impl FsModel {
    /// An empty model (no root: every access to anything is denied until nodes are added).
    pub fn new() -> FsModel {
        FsModel::default()
    }

    /// Adds or replaces an object; its inherited entries are computed from its parent now and
    /// stored (insert parents first).
    pub fn insert(&mut self, path: WinPath, node: Node) {
        let mut dacl = node.explicit;
        if !node.protected {
            if let Some(pd) = path.parent().and_then(|p| self.nodes.get(&p)) {
                dacl.extend(inherit_from(&pd.dacl, node.dir, &node.owner));
            }
        }
        crate::ace::canonical_order(&mut dacl);
        self.nodes.insert(
            path,
            Stored {
                dir: node.dir,
                owner: node.owner,
                dacl,
                protected: node.protected,
            },
        );
    }

    /// True if the object exists in the model.
    pub fn exists(&self, path: &WinPath) -> bool {
        self.nodes.contains_key(path)
    }

    /// The object's owner.
    pub fn owner(&self, path: &WinPath) -> Option<&Sid> {
        self.nodes.get(path).map(|n| &n.owner)
    }

    /// Adds explicit ACEs to an existing object, in canonical order, and propagates inheritable
    /// entries to the existing objects beneath (what applying a plan with
    /// `SetNamedSecurityInfo` does).
    pub fn add_explicit(&mut self, path: &WinPath, aces: &[Ace]) -> bool {
        let Some(n) = self.nodes.get(path) else {
            return false;
        };
        let mut explicit = n.explicit();
        explicit.extend(aces.iter().cloned());
        crate::ace::order_explicit(&mut explicit);
        self.set_explicit_named(path, explicit);
        true
    }

    /// The object's explicit ACEs.
    pub fn explicit_of(&self, path: &WinPath) -> Option<Vec<Ace>> {
        self.nodes.get(path).map(|n| n.explicit())
    }

    /// The object's stored DACL.
    pub fn stored_dacl(&self, path: &WinPath) -> Option<&[Ace]> {
        self.nodes.get(path).map(|n| n.dacl.as_slice())
    }

    /// Every object's path.
    pub fn paths(&self) -> Vec<WinPath> {
        self.nodes.keys().cloned().collect()
    }

    /// Replaces an object's explicit ACEs through its path (re-propagating inheritance beneath
    /// it, as `SetNamedSecurityInfo` does).
    pub fn replace_explicit(&mut self, path: &WinPath, explicit: Vec<Ace>) -> bool {
        if !self.exists(path) {
            return false;
        }
        self.set_explicit_named(path, explicit);
        true
    }

    /// Replaces an object's explicit ACEs and re-propagates inheritance beneath it.
    fn set_explicit_named(&mut self, path: &WinPath, explicit: Vec<Ace>) {
        self.set_explicit_here(path, explicit);
        let below: Vec<WinPath> = self
            .nodes
            .keys()
            .filter(|k| *k != path && k.starts_with(path))
            .cloned()
            .collect();
        // BTreeMap order puts parents before children.
        for k in below {
            let Some(n) = self.nodes.get(&k) else {
                continue;
            };
            let explicit = n.explicit();
            self.set_explicit_here(&k, explicit);
        }
    }

    fn set_explicit_here(&mut self, path: &WinPath, explicit: Vec<Ace>) {
        let parent_dacl = path
            .parent()
            .and_then(|p| self.nodes.get(&p))
            .map(|p| p.dacl.clone());
        let Some(n) = self.nodes.get_mut(path) else {
            return;
        };
        let mut dacl = explicit;
        if !n.protected {
            if let Some(pd) = parent_dacl {
                dacl.extend(inherit_from(&pd, n.dir, &n.owner));
            }
        }
        crate::ace::canonical_order(&mut dacl);
        n.dacl = dacl;
    }

    /// The full stored DACL of an object (explicit, then inherited), including inherit-only
    /// entries. A non-existing object gets the DACL it would be created with by `creator`.
    pub fn dacl_for(&self, path: &WinPath, dir: bool, creator: &Sid) -> Vec<Ace> {
        if let Some(n) = self.nodes.get(path) {
            return n.dacl.clone();
        }
        let mut out = path
            .parent()
            .and_then(|p| self.nodes.get(&p))
            .map(|p| inherit_from(&p.dacl, dir, creator))
            .unwrap_or_default();
        crate::ace::canonical_order(&mut out);
        out
    }

    /// [`FsModel::dacl_for`] with the object's own owner (or an unknown creator).
    pub fn acl(&self, path: &WinPath, dir: bool) -> Vec<Ace> {
        let owner = self
            .nodes
            .get(path)
            .map(|n| n.owner.clone())
            .unwrap_or_else(Sid::creator_owner);
        self.dacl_for(path, dir, &owner)
    }

    fn is_dir(&self, path: &WinPath) -> bool {
        self.nodes.get(path).is_some_and(|n| n.dir)
    }

    /// Would `token` be granted `desired` on the existing object at `path`?
    pub fn check(&self, token: &TokenModel, path: &WinPath, desired: u32) -> bool {
        match self.nodes.get(path) {
            Some(n) => access_check(token, &n.dacl, &n.owner, desired),
            None => false,
        }
    }

    /// Would `token` be allowed to perform `op` on `path`? (Nothing changes.)
    pub fn allowed(&self, token: &TokenModel, path: &WinPath, op: &Op) -> bool {
        match op {
            Op::Open(m) => self.check(token, path, *m),
            Op::CreateFile => self.can_create(token, path, false),
            Op::CreateDir => self.can_create(token, path, true),
            Op::Delete => self.can_delete(token, path),
            Op::RenameTo(to) => {
                let dir = self.is_dir(path);
                self.can_remove_name(token, path)
                    && !to.starts_with(path)
                    && self.can_create(token, to, dir)
            }
            Op::SetDacl(_) => self.check(token, path, mask::WRITE_DAC),
        }
    }

    /// Performs `op` if [`FsModel::allowed`]; returns whether it happened.
    pub fn perform(&mut self, token: &TokenModel, path: &WinPath, op: &Op) -> bool {
        if !self.allowed(token, path, op) {
            return false;
        }
        match op {
            Op::Open(_) => {}
            Op::CreateFile | Op::CreateDir => {
                let dir = matches!(op, Op::CreateDir);
                let dacl = self.dacl_for(path, dir, &token.user);
                self.nodes.insert(
                    path.clone(),
                    Stored {
                        dir,
                        owner: token.user.clone(),
                        dacl,
                        protected: false,
                    },
                );
            }
            Op::Delete => {
                self.nodes.remove(path);
            }
            Op::RenameTo(to) => {
                let moved: Vec<WinPath> = self
                    .nodes
                    .keys()
                    .filter(|k| k.starts_with(path))
                    .cloned()
                    .collect();
                for k in moved {
                    let Some(n) = self.nodes.remove(&k) else {
                        continue;
                    };
                    let rel = k.as_string()[path.as_string().len()..].to_string();
                    let dest = WinPath::parse(&format!("{}{rel}", to.as_string()));
                    if let Ok(d) = dest {
                        self.nodes.insert(d, n);
                    }
                }
            }
            Op::SetDacl(aces) => {
                let mut explicit = aces.clone();
                crate::ace::order_explicit(&mut explicit);
                self.set_explicit_here(path, explicit);
            }
        }
        true
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
        self.is_dir(&parent) && self.check(token, &parent, right)
    }

    fn can_delete(&self, token: &TokenModel, path: &WinPath) -> bool {
        if !self.exists(path) {
            return false;
        }
        if self.is_dir(path) && self.nodes.keys().any(|k| k != path && k.starts_with(path)) {
            // A directory must be empty to be deleted (renaming a full one is fine).
            return false;
        }
        self.can_unlink(token, path)
    }

    fn can_unlink(&self, token: &TokenModel, path: &WinPath) -> bool {
        if self.check(token, path, mask::DELETE) {
            return true;
        }
        path.parent()
            .is_some_and(|p| self.exists(&p) && self.check(token, &p, mask::FILE_DELETE_CHILD))
    }

    /// Could `token` rename the (possibly non-empty) object at `path` away, i.e. delete its name?
    pub fn can_remove_name(&self, token: &TokenModel, path: &WinPath) -> bool {
        self.exists(path) && self.can_unlink(token, path)
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

/// One pass over a DACL: true if `desired` is granted completely. `present` says whether the
/// pass holds a SID (for an ACE kind); `owner_present` whether the object's owner is among them.
fn pass(
    aces: &[Ace],
    mapping: &Mapping,
    present: impl Fn(&Sid, AceKind) -> bool,
    owner_present: bool,
    desired: u32,
) -> bool {
    let owner_rights = Sid::owner_rights();
    let has_owner_rights_ace = aces
        .iter()
        .any(|a| a.sid == owner_rights && !a.inherit.has(Inherit::INHERIT_ONLY));
    let mut granted = 0u32;
    if owner_present && !has_owner_rights_ace {
        granted |= desired & (mask::READ_CONTROL | mask::WRITE_DAC);
    }
    for ace in aces {
        if granted == desired {
            break;
        }
        if ace.inherit.has(Inherit::INHERIT_ONLY) {
            continue;
        }
        let matches = if ace.sid == owner_rights {
            owner_present
        } else {
            present(&ace.sid, ace.kind)
        };
        if !matches {
            continue;
        }
        let m = mapping.map(ace.mask) & desired & !granted;
        match ace.kind {
            AceKind::Deny if m != 0 => return false,
            AceKind::Deny => {}
            AceKind::Allow => granted |= m,
        }
    }
    granted == desired
}

/// The access check on a file object: true if every bit of `desired` is granted to `token` by
/// `acl` (an object owned by `owner`).
pub fn access_check(token: &TokenModel, acl: &[Ace], owner: &Sid, desired: u32) -> bool {
    access_check_typed(token, acl, owner, desired, &FILE_MAPPING)
}

/// The access check for an object type with `mapping`.
pub fn access_check_typed(
    token: &TokenModel,
    acl: &[Ace],
    owner: &Sid,
    desired: u32,
    mapping: &Mapping,
) -> bool {
    let desired = mapping.map(desired);
    if desired == 0 {
        return true;
    }
    if !pass(
        acl,
        mapping,
        |s, k| token.normal_matches(s, k),
        token.owner_in_normal(owner),
        desired,
    ) {
        return false;
    }
    if token.restricting.is_empty() {
        return true;
    }
    if token.write_restricted && desired & mapping.write_bits() == 0 {
        return true;
    }
    pass(
        acl,
        mapping,
        |s, _| token.restricting.contains(s),
        token.restricting.contains(owner),
        desired,
    )
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

    fn plain(user: &Sid, groups: &[Sid]) -> TokenModel {
        TokenModel {
            user: user.clone(),
            groups: groups.to_vec(),
            deny_only: vec![],
            restricting: vec![],
            write_restricted: false,
        }
    }

    /// Microsoft, "How DACLs Control Access to an Object": ACE 1 denies Andrew read, write and
    /// execute; ACE 2 allows Group A write; ACE 3 allows Everyone read and execute.
    /// Thread A (Andrew) is denied by ACE 1 although ACEs 2 and 3 would grant; thread B (a
    /// member of Group A) gets write from ACE 2 and read/execute from ACE 3. And "DACLs and
    /// ACEs": deny User X read/write/execute, allow Group A read/write, allow Everyone execute:
    /// members of Group A accumulate read, write and execute; User X (in Group A) is denied.
    #[test]
    fn documented_how_dacls_control_access_example() {
        let andrew = sid("S-1-5-21-7-7-7-1101");
        let other = sid("S-1-5-21-7-7-7-1102");
        let group_a = sid("S-1-5-21-7-7-7-2001");
        let rwx = mask::GENERIC_READ | mask::GENERIC_WRITE | mask::GENERIC_EXECUTE;
        let acl = vec![
            Ace::deny(andrew.clone(), rwx, Inherit::NONE),
            Ace::allow(group_a.clone(), mask::GENERIC_WRITE, Inherit::NONE),
            Ace::allow(
                Sid::everyone(),
                mask::GENERIC_READ | mask::GENERIC_EXECUTE,
                Inherit::NONE,
            ),
        ];
        let owner = Sid::local_system();
        let a = plain(&andrew, &[group_a.clone(), Sid::everyone()]);
        let b = plain(&other, &[group_a.clone(), Sid::everyone()]);
        let want = mask::FILE_WRITE_DATA | mask::FILE_READ_DATA | mask::FILE_EXECUTE;
        assert!(!access_check(&a, &acl, &owner, want));
        assert!(!access_check(&a, &acl, &owner, mask::FILE_READ_DATA));
        assert!(access_check(&b, &acl, &owner, want));
        // Order matters: the same ACEs with the deny last no longer stop Andrew.
        let reordered = vec![acl[1].clone(), acl[2].clone(), acl[0].clone()];
        assert!(access_check(&a, &reordered, &owner, want));
        // Neither allow ACE alone grants all three to thread B.
        assert!(!access_check(&b, &acl[1..2], &owner, want));
        assert!(!access_check(&b, &acl[2..], &owner, want));

        // "DACLs and ACEs".
        let user_x = sid("S-1-5-21-7-7-7-1103");
        let acl = vec![
            Ace::deny(user_x.clone(), rwx, Inherit::NONE),
            Ace::allow(
                group_a.clone(),
                mask::GENERIC_READ | mask::GENERIC_WRITE,
                Inherit::NONE,
            ),
            Ace::allow(Sid::everyone(), mask::GENERIC_EXECUTE, Inherit::NONE),
        ];
        let member = plain(&other, &[group_a.clone(), Sid::everyone()]);
        let x = plain(&user_x, &[group_a, Sid::everyone()]);
        assert!(access_check(&member, &acl, &owner, want));
        assert!(!access_check(&x, &acl, &owner, mask::FILE_EXECUTE));
    }

    /// Microsoft, "Owner Rights" / `S-1-3-4`: an (effective) OWNER RIGHTS ACE replaces the
    /// owner's implicit READ_CONTROL | WRITE_DAC with the rights it names; an inherit-only one
    /// does not apply to the object that holds it.
    #[test]
    fn documented_owner_rights() {
        let u = sid("S-1-5-21-1-2-3-1001");
        let t = plain(&u, &[]);
        assert!(access_check(
            &t,
            &[],
            &u,
            mask::WRITE_DAC | mask::READ_CONTROL
        ));
        assert!(!access_check(&t, &[], &u, mask::FILE_READ_DATA));
        let or = vec![Ace::allow(
            Sid::owner_rights(),
            mask::READ_CONTROL | mask::FILE_READ_DATA,
            Inherit::NONE,
        )];
        assert!(!access_check(&t, &or, &u, mask::WRITE_DAC));
        assert!(access_check(
            &t,
            &or,
            &u,
            mask::READ_CONTROL | mask::FILE_READ_DATA
        ));
        // Not the owner: the OWNER RIGHTS ACE grants nothing.
        let stranger = plain(&sid("S-1-5-21-1-2-3-1002"), &[]);
        assert!(!access_check(&stranger, &or, &u, mask::READ_CONTROL));
        let io = vec![Ace::allow(
            Sid::owner_rights(),
            mask::READ_CONTROL,
            Inherit(Inherit::TREE.0 | Inherit::INHERIT_ONLY),
        )];
        assert!(access_check(&t, &io, &u, mask::WRITE_DAC));
        // A deny for OWNER RIGHTS applies to the owner.
        let deny = vec![
            Ace::deny(Sid::owner_rights(), mask::WRITE_DAC, Inherit::NONE),
            Ace::allow(u.clone(), mask::FILE_ALL_ACCESS, Inherit::NONE),
        ];
        assert!(!access_check(&t, &deny, &u, mask::WRITE_DAC));
        assert!(access_check(&t, &deny, &u, mask::FILE_WRITE_DATA));
    }

    /// Restricted tokens. Microsoft, "Restricted Tokens": "the system performs two access
    /// checks: one using the token's enabled SIDs, and another using the list of restricting
    /// SIDs. Access is granted only if both access checks allow the requested access rights."
    /// `CreateRestrictedToken`, `WRITE_RESTRICTED`: "restricting SIDs that are considered only
    /// when evaluating write access". Forshaw, *Windows Security Internals* ch. 7 (restricted
    /// and write-restricted tokens): the second check runs once the request has a write bit and
    /// then covers the whole request; the owner's implicit rights count in a pass only if the
    /// owner SID is present in that pass (for the restricting pass: a restricting SID).
    #[test]
    fn documented_restricted_token_passes() {
        let u = sid("S-1-5-21-1-2-3-1001");
        let cap = sid("S-1-5-21-9-9-9-9");
        let acl = vec![
            Ace::allow(u.clone(), mask::FILE_ALL_ACCESS, Inherit::NONE),
            Ace::allow(cap.clone(), mask::FILE_GENERIC_WRITE, Inherit::NONE),
        ];
        let wr = TokenModel {
            restricting: vec![cap.clone()],
            write_restricted: true,
            ..plain(&u, &[])
        };
        // No write bit: the normal pass alone decides (the metadata gap).
        assert!(access_check(&wr, &acl, &u, mask::WRITE_DAC));
        assert!(access_check(&wr, &acl, &u, mask::DELETE));
        assert!(access_check(&wr, &acl, &u, mask::FILE_READ_DATA));
        // A write bit: the whole request goes through the restricting pass.
        assert!(access_check(&wr, &acl, &u, mask::FILE_WRITE_DATA));
        assert!(!access_check(
            &wr,
            &acl,
            &u,
            mask::FILE_WRITE_DATA | mask::DELETE
        ));
        assert!(!access_check(
            &wr,
            &acl,
            &u,
            mask::FILE_WRITE_DATA | mask::WRITE_DAC
        ));
        assert!(!access_check(
            &wr,
            &acl,
            &u,
            mask::FILE_WRITE_DATA | mask::FILE_READ_DATA
        ));
        // Owner rights in the restricting pass only for an owner among the restricting SIDs.
        let w_rc = mask::FILE_WRITE_DATA | mask::WRITE_DAC;
        assert!(!access_check(&wr, &acl, &u, w_rc));
        // Owned by the capability: the restricting pass has the owner's WRITE_DAC (the normal
        // pass gets it from the allow ACE for the user).
        assert!(access_check(&wr, &acl, &cap, w_rc));
        // Fully restricted: reads need the restricting SIDs too.
        let full = TokenModel {
            write_restricted: false,
            ..wr.clone()
        };
        assert!(!access_check(&full, &acl, &u, mask::FILE_READ_DATA));
        assert!(!access_check(&full, &acl, &u, mask::WRITE_DAC));
        assert!(access_check(&full, &acl, &u, mask::FILE_WRITE_DATA));
    }

    /// Microsoft, "ACE Inheritance Rules" / "Creator Owner": a `CREATOR OWNER` ACE inherited by
    /// a file becomes an ACE for the file's owner; a subdirectory gets that effective ACE plus an
    /// inherit-only `CREATOR OWNER` copy that keeps propagating. Inheritance is stored: a file
    /// moved elsewhere keeps what it inherited where it was created.
    #[test]
    fn documented_creator_owner_and_stored_inheritance() {
        let creator = sid("S-1-5-21-1-2-3-1001");
        let parent = vec![Ace::allow(
            Sid::creator_owner(),
            mask::GENERIC_ALL,
            Inherit::TREE,
        )];
        let file = inherit_from(&parent, false, &creator);
        assert_eq!(file.len(), 1);
        assert_eq!(file[0].sid, creator);
        assert_eq!(file[0].inherit, Inherit(Inherit::INHERITED));
        let dir = inherit_from(&parent, true, &creator);
        assert_eq!(dir.len(), 2);
        assert_eq!(dir[0].sid, creator);
        assert!(!dir[0].inherit.has(Inherit::INHERIT_ONLY));
        assert_eq!(dir[1].sid, Sid::creator_owner());
        assert!(
            dir[1].inherit.has(Inherit::INHERIT_ONLY) && dir[1].inherit.has(Inherit::CONTAINER)
        );
        // Grandchild through the inherit-only copy: its own creator only (the effective ACE for
        // the first creator is not inheritable).
        let other = sid("S-1-5-21-1-2-3-1002");
        let grand = inherit_from(&dir, false, &other);
        assert_eq!(
            grand.iter().map(|a| a.sid.clone()).collect::<Vec<_>>(),
            vec![other]
        );

        // Stored: a file created under a grant keeps it after moving out from under it.
        let p = |s: &str| WinPath::parse(s).expect("path");
        let mut fs = FsModel::new();
        for (path, explicit) in [
            (
                r"C:\a",
                vec![Ace::allow(
                    creator.clone(),
                    mask::FILE_ALL_ACCESS,
                    Inherit::TREE,
                )],
            ),
            (
                r"C:\b",
                vec![Ace::allow(
                    creator.clone(),
                    mask::FILE_GENERIC_READ | mask::FILE_WRITE_DATA,
                    Inherit::NONE,
                )],
            ),
        ] {
            fs.insert(
                p(path),
                Node {
                    dir: true,
                    owner: creator.clone(),
                    explicit,
                    protected: true,
                },
            );
        }
        let t = plain(&creator, &[]);
        assert!(fs.perform(&t, &p(r"C:\a\f"), &Op::CreateFile));
        assert!(fs.perform(&t, &p(r"C:\a\f"), &Op::RenameTo(p(r"C:\b\f"))));
        // A file created in C:\b directly would inherit nothing; the moved one kept full access.
        assert!(fs.check(&t, &p(r"C:\b\f"), mask::FILE_WRITE_DATA));
        assert!(fs.dacl_for(&p(r"C:\b\g"), false, &creator).is_empty());
    }
}
