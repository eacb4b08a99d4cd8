//! Reading and writing file and kernel-object DACLs in terms of the model's [`Ace`]s.

use super::sid::{sid_from_psid, OwnedSid, SidError};
use super::{check, wide, Ret, Win32Error};
use crate::ace::{merge_explicit, remove_sid, Ace, AceKind, Inherit, PathAces};
use crate::path::WinPath;
use crate::sid::Sid;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, OwnedHandle};
use windows_sys::Win32::Foundation::LocalFree;
use windows_sys::Win32::Security::Authorization::{
    GetNamedSecurityInfoW, GetSecurityInfo, SetNamedSecurityInfoW, SE_FILE_OBJECT,
    SE_KERNEL_OBJECT, SE_OBJECT_TYPE,
};
use windows_sys::Win32::Security::{
    AddAccessAllowedAceEx, AddAccessDeniedAceEx, GetAce, GetLengthSid,
    GetSecurityDescriptorControl, InitializeAcl, ACE_HEADER, ACL, ACL_REVISION,
    DACL_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
    SE_DACL_PROTECTED, UNPROTECTED_DACL_SECURITY_INFORMATION,
};

/// Why a DACL could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// Reading the security descriptor failed.
    #[error("cannot read the DACL of {path}: {source}")]
    Read {
        /// The object.
        path: String,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// Writing the DACL failed.
    #[error("cannot set the DACL of {path}: {source}; check that you own it or have WRITE_DAC")]
    Write {
        /// The object.
        path: String,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// Building the new ACL failed.
    #[error("cannot build the new DACL for {path}: {source}")]
    Build {
        /// The object.
        path: String,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// A SID could not be converted.
    #[error("SID problem on {path}: {source}")]
    Sid {
        /// The object.
        path: String,
        /// The SID error.
        #[source]
        source: SidError,
    },
    /// A path beneath a writable root is a junction or symbolic link (or another reparse point):
    /// a command could have planted it to redirect Stockade's ACEs elsewhere.
    #[error("{0} is a reparse point (junction or symbolic link) inside a writable root; Stockade does not set ACLs through it. Remove it (it may have been planted by a sandboxed command) and run again")]
    ReparsePoint(String),
    /// The object opened is not the path asked for: a junction or link on the way redirected it.
    #[error("{path} resolves to {actual} (a junction or link on the way, possibly planted by a sandboxed command); Stockade does not set ACLs through it. Remove it and run again")]
    Redirected {
        /// The path asked for.
        path: String,
        /// Where the handle actually points.
        actual: String,
    },
    /// Opening the path for its DACL failed.
    #[error("cannot open {path} to change its DACL: {source}")]
    Open {
        /// The path.
        path: String,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// The object has a NULL DACL (everyone has full access): Stockade will not guess.
    #[error("{0} has a NULL DACL (full access for everyone); give it a real DACL before using it as a sandbox path")]
    NullDacl(String),
    /// An explicit ACE of a kind Stockade does not rewrite (object or callback ACE).
    #[error("{path} has an explicit ACE of type {ace_type} that Stockade cannot preserve; not modifying it")]
    UnsupportedAce {
        /// The object.
        path: String,
        /// ACE type.
        ace_type: u8,
    },
}

/// A DACL as read: ACEs in order, whether it is protected, and ACE types that are not plain
/// allow/deny (counted, not decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dacl {
    /// Allow and deny ACEs, in stored order (inherited ones carry [`Inherit::INHERITED`]).
    pub aces: Vec<Ace>,
    /// `SE_DACL_PROTECTED`.
    pub protected: bool,
    /// Types of other ACEs, with their `INHERITED` flag.
    pub other: Vec<(u8, bool)>,
}

impl Dacl {
    /// The explicit (non-inherited) allow/deny ACEs.
    pub fn explicit(&self) -> Vec<Ace> {
        self.aces
            .iter()
            .filter(|a| !a.inherit.has(Inherit::INHERITED))
            .cloned()
            .collect()
    }
}

/// Owns a security descriptor returned by Get*SecurityInfo (freed with `LocalFree`).
struct OwnedSd(PSECURITY_DESCRIPTOR);

impl Drop for OwnedSd {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the descriptor was allocated with LocalAlloc by Get*SecurityInfo and is
            // freed exactly once here.
            unsafe { LocalFree(self.0) };
        }
    }
}

fn parse(acl: *const ACL, sd: &OwnedSd) -> Result<Dacl, SidError> {
    let mut control: u16 = 0;
    let mut revision: u32 = 0;
    // SAFETY: `sd.0` is a valid security descriptor; both out pointers are valid.
    let ok = unsafe { GetSecurityDescriptorControl(sd.0, &mut control, &mut revision) };
    let protected = ok != 0 && control & SE_DACL_PROTECTED != 0;
    let mut out = parse_acl(acl)?;
    out.protected = protected;
    Ok(out)
}

/// Decodes an ACL. `acl` must be non-null and point at a valid ACL (callers get it from Windows).
pub(crate) fn parse_acl(acl: *const ACL) -> Result<Dacl, SidError> {
    // SAFETY: the caller passes a valid, non-null ACL.
    let count = unsafe { (*acl).AceCount };
    let mut out = Dacl::default();
    for i in 0..count as u32 {
        let mut ace: *mut core::ffi::c_void = std::ptr::null_mut();
        // SAFETY: `acl` is a valid ACL with `count` ACEs; `ace` is a valid out pointer.
        let ok = unsafe { GetAce(acl, i, &mut ace) };
        if ok == 0 {
            continue;
        }
        let header = ace.cast::<ACE_HEADER>();
        // SAFETY: GetAce returned a pointer to an ACE inside the ACL; its header is readable.
        let (ace_type, flags) = unsafe { ((*header).AceType, (*header).AceFlags) };
        let inherited = flags & (Inherit::INHERITED) != 0;
        let kind = match ace_type {
            0 => AceKind::Allow,
            1 => AceKind::Deny,
            other => {
                out.other.push((other, inherited));
                continue;
            }
        };
        // SAFETY: allow/deny ACEs have the mask at offset 4 (after the 4-byte header).
        let mask = unsafe { ace.cast::<u8>().add(4).cast::<u32>().read_unaligned() };
        // SAFETY: allow/deny ACEs have the SID at offset 8 (`SidStart`).
        let psid = unsafe { ace.cast::<u8>().add(8) };
        // SAFETY: `psid` is the SID inside this ACE, inside the DACL that `sd` keeps alive.
        let sid = unsafe { sid_from_psid(psid.cast()) }?;
        out.aces.push(Ace {
            kind,
            sid,
            mask,
            inherit: Inherit(flags),
        });
    }
    Ok(out)
}

/// Reads a file's or directory's DACL (`GetNamedSecurityInfoW`).
pub fn read_path(path: &WinPath) -> Result<Dacl, AclError> {
    let p = path.as_string();
    let w = wide(&p);
    let mut dacl: *mut ACL = std::ptr::null_mut();
    let mut sd = OwnedSd(std::ptr::null_mut());
    // SAFETY: `w` is NUL-terminated; the DACL and descriptor out pointers are valid; the others
    // are null because their information is not requested.
    let rc = unsafe {
        GetNamedSecurityInfoW(
            w.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut dacl,
            std::ptr::null_mut(),
            &mut sd.0,
        )
    };
    check("GetNamedSecurityInfoW", Ret::Code(rc)).map_err(|source| AclError::Read {
        path: p.clone(),
        source,
    })?;
    if dacl.is_null() {
        return Err(AclError::NullDacl(p));
    }
    parse(dacl, &sd).map_err(|source| AclError::Sid { path: p, source })
}

/// Reads a kernel object's DACL through a handle (`GetSecurityInfo`), e.g. a named pipe.
pub fn read_handle(h: BorrowedHandle<'_>, what: &str) -> Result<Dacl, AclError> {
    read_handle_typed(h, SE_KERNEL_OBJECT, what)
}

fn read_handle_typed(
    h: BorrowedHandle<'_>,
    ty: SE_OBJECT_TYPE,
    what: &str,
) -> Result<Dacl, AclError> {
    let mut dacl: *mut ACL = std::ptr::null_mut();
    let mut sd = OwnedSd(std::ptr::null_mut());
    // SAFETY: `h` is an open handle with READ_CONTROL; the out pointers are valid.
    let rc = unsafe {
        GetSecurityInfo(
            h.as_raw_handle(),
            ty,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut dacl,
            std::ptr::null_mut(),
            &mut sd.0,
        )
    };
    check("GetSecurityInfo", Ret::Code(rc)).map_err(|source| AclError::Read {
        path: what.to_string(),
        source,
    })?;
    if dacl.is_null() {
        return Err(AclError::NullDacl(what.to_string()));
    }
    parse(dacl, &sd).map_err(|source| AclError::Sid {
        path: what.to_string(),
        source,
    })
}

/// Builds a binary ACL from model ACEs (in the given order), 8-byte aligned.
pub fn build(aces: &[Ace]) -> Result<Vec<u64>, Win32Error> {
    let sids: Vec<OwnedSid> = aces
        .iter()
        .map(|a| OwnedSid::new(&a.sid))
        .collect::<Result<_, _>>()
        .map_err(|_| Win32Error {
            call: "ConvertStringSidToSidW",
            code: 1337,
            message: "invalid SID".into(),
        })?;
    let mut size = 8usize;
    for s in &sids {
        // SAFETY: `s` is a valid SID.
        size += 8 + unsafe { GetLengthSid(s.as_psid()) } as usize;
    }
    let size = size.div_ceil(4) * 4;
    let mut buf = vec![0u64; size.div_ceil(8)];
    let acl = buf.as_mut_ptr().cast::<ACL>();
    // SAFETY: `buf` is writable for `size` bytes and 8-byte aligned.
    let ok = unsafe { InitializeAcl(acl, size as u32, ACL_REVISION) };
    check("InitializeAcl", Ret::Bool(ok))?;
    for (a, s) in aces.iter().zip(&sids) {
        let flags = (a.inherit.0 & !Inherit::INHERITED) as u32;
        let ok = match a.kind {
            // SAFETY: `acl` has room for this ACE (sized above); `s` is a valid SID.
            AceKind::Allow => unsafe {
                AddAccessAllowedAceEx(acl, ACL_REVISION, flags, a.mask, s.as_psid())
            },
            // SAFETY: as above.
            AceKind::Deny => unsafe {
                AddAccessDeniedAceEx(acl, ACL_REVISION, flags, a.mask, s.as_psid())
            },
        };
        check("AddAccess*AceEx", Ret::Bool(ok))?;
    }
    Ok(buf)
}

/// Replaces a kernel object's DACL (e.g. a job or pipe) with exactly `aces`.
pub fn write_handle(h: BorrowedHandle<'_>, aces: &[Ace], what: &str) -> Result<(), AclError> {
    use windows_sys::Win32::Security::Authorization::SetSecurityInfo;
    let mut acl = build(aces).map_err(|source| AclError::Build {
        path: what.to_string(),
        source,
    })?;
    // SAFETY: `h` is an open handle with WRITE_DAC; `acl` holds a valid ACL during the call.
    let rc = unsafe {
        SetSecurityInfo(
            h.as_raw_handle(),
            SE_KERNEL_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            acl.as_mut_ptr().cast(),
            std::ptr::null_mut(),
        )
    };
    check("SetSecurityInfo", Ret::Code(rc)).map_err(|source| AclError::Write {
        path: what.to_string(),
        source,
    })
}

/// Replaces a path's explicit ACEs (inherited ones are recomputed by Windows, and inheritable
/// ACEs propagate to existing children), keeping its protection state.
pub fn write_explicit(path: &WinPath, aces: &[Ace], protected: bool) -> Result<(), AclError> {
    let p = path.as_string();
    let mut acl = build(aces).map_err(|source| AclError::Build {
        path: p.clone(),
        source,
    })?;
    let w = wide(&p);
    let info = DACL_SECURITY_INFORMATION
        | if protected {
            PROTECTED_DACL_SECURITY_INFORMATION
        } else {
            UNPROTECTED_DACL_SECURITY_INFORMATION
        };
    // SAFETY: `w` is NUL-terminated and `acl` holds a valid ACL for the duration of the call.
    let rc = unsafe {
        SetNamedSecurityInfoW(
            w.as_ptr().cast_mut(),
            SE_FILE_OBJECT,
            info,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            acl.as_mut_ptr().cast(),
            std::ptr::null_mut(),
        )
    };
    check("SetNamedSecurityInfoW", Ret::Code(rc))
        .map_err(|source| AclError::Write { path: p, source })
}

/// Refuses if any component of `path` beneath the writable root containing it is a reparse
/// point (checked without following it), so that no ACE is ever set through a junction or link a
/// sandboxed command planted. Missing components are fine (nothing to follow).
pub fn refuse_reparse(path: &WinPath, roots: &[WinPath]) -> Result<(), AclError> {
    use windows_sys::Win32::Storage::FileSystem::{
        GetFileAttributesW, FILE_ATTRIBUTE_REPARSE_POINT, INVALID_FILE_ATTRIBUTES,
    };
    let is_reparse = |c: &WinPath| {
        let w = wide(&c.as_string());
        // SAFETY: `w` is NUL-terminated; GetFileAttributesW does not follow the final link.
        let a = unsafe { GetFileAttributesW(w.as_ptr()) };
        a != INVALID_FILE_ATTRIBUTES && a & FILE_ATTRIBUTE_REPARSE_POINT != 0
    };
    match crate::path::reparse_on_the_way(path, roots, is_reparse) {
        Some(c) => Err(AclError::ReparsePoint(c.as_string())),
        None => Ok(()),
    }
}

/// True if `p` is a directory (not a link) with nothing in it.
pub fn is_empty_dir(p: &WinPath) -> bool {
    let s = p.as_string();
    std::fs::symlink_metadata(&s).is_ok_and(|m| m.is_dir() && !m.file_type().is_symlink())
        && std::fs::read_dir(&s).is_ok_and(|mut d| d.next().is_none())
}

/// Removes the placeholders of `created` ([`crate::placeholder`]) that lie beneath `roots` and
/// are still empty, deepest first, after checking every component beneath the root for reparse
/// points; `RemoveDirectoryW` leaves a directory that is not empty alone. Returns how many went.
pub fn remove_empty_placeholders(
    created: &[WinPath],
    roots: &[WinPath],
) -> Result<usize, AclError> {
    let mine: Vec<WinPath> = created
        .iter()
        .filter(|p| roots.iter().any(|r| p.starts_with(r) && *p != r))
        .cloned()
        .collect();
    let mut removed = 0;
    for d in crate::placeholder::removal_order(&mine) {
        refuse_reparse(&d, roots)?;
        if is_empty_dir(&d) && std::fs::remove_dir(d.as_string()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Opens `path` for `READ_CONTROL | WRITE_DAC` without following a final reparse point, refuses
/// a reparse point, and checks that the object opened is exactly `path`
/// (`GetFinalPathNameByHandleW`), so that no junction or link on the way — even one swapped in
/// after [`refuse_reparse`] looked — redirects the ACEs set through this handle.
pub fn open_for_dacl(path: &WinPath) -> Result<OwnedHandle, AclError> {
    open_checked(path, true)
}

/// [`open_for_dacl`], or with `READ_CONTROL` only when `write` is false.
fn open_checked(path: &WinPath, write: bool) -> Result<OwnedHandle, AclError> {
    use windows_sys::Win32::Storage::FileSystem::{
        CreateFileW, GetFileInformationByHandle, GetFinalPathNameByHandleW,
        BY_HANDLE_FILE_INFORMATION, FILE_ATTRIBUTE_REPARSE_POINT, FILE_FLAG_BACKUP_SEMANTICS,
        FILE_FLAG_OPEN_REPARSE_POINT, FILE_NAME_NORMALIZED, FILE_SHARE_DELETE, FILE_SHARE_READ,
        FILE_SHARE_WRITE, OPEN_EXISTING, READ_CONTROL, WRITE_DAC,
    };
    let p = path.as_string();
    let w = wide(&p);
    let open_err = |source| AclError::Open {
        path: p.clone(),
        source,
    };
    // SAFETY: `w` is NUL-terminated; no security attributes or template; OPEN_EXISTING with
    // FILE_FLAG_OPEN_REPARSE_POINT opens a final link itself, not its target.
    let h = unsafe {
        CreateFileW(
            w.as_ptr(),
            if write {
                READ_CONTROL | WRITE_DAC
            } else {
                READ_CONTROL
            },
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            std::ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: `h` comes straight from CreateFileW and nothing else owns or closes it.
    let h = unsafe { super::owned("CreateFileW", h) }.map_err(open_err)?;
    // SAFETY: plain data; all-zero is valid.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: `h` is an open file handle; `info` is writable.
    let ok = unsafe { GetFileInformationByHandle(h.as_raw_handle(), &mut info) };
    check("GetFileInformationByHandle", Ret::Bool(ok)).map_err(open_err)?;
    if info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(AclError::ReparsePoint(p));
    }
    let mut buf = vec![0u16; 1024];
    // SAFETY: `h` is open; `buf` is writable for its length in characters.
    let n = unsafe {
        GetFinalPathNameByHandleW(
            h.as_raw_handle(),
            buf.as_mut_ptr(),
            buf.len() as u32,
            FILE_NAME_NORMALIZED,
        )
    };
    if n == 0 || n as usize >= buf.len() {
        check("GetFinalPathNameByHandleW", Ret::Bool(0)).map_err(open_err)?;
    }
    let actual = String::from_utf16_lossy(&buf[..n as usize]);
    match WinPath::parse(&actual) {
        Ok(a) if a == *path => Ok(h),
        _ => Err(AclError::Redirected { path: p, actual }),
    }
}

fn write_explicit_handle(
    h: BorrowedHandle<'_>,
    path: &WinPath,
    aces: &[Ace],
    protected: bool,
) -> Result<(), AclError> {
    use windows_sys::Win32::Security::Authorization::SetSecurityInfo;
    let p = path.as_string();
    let mut acl = build(aces).map_err(|source| AclError::Build {
        path: p.clone(),
        source,
    })?;
    let info = DACL_SECURITY_INFORMATION
        | if protected {
            PROTECTED_DACL_SECURITY_INFORMATION
        } else {
            UNPROTECTED_DACL_SECURITY_INFORMATION
        };
    // SAFETY: `h` is open with WRITE_DAC; `acl` holds a valid ACL for the duration of the call.
    // SetSecurityInfo propagates inheritable ACEs to existing children, like the named form.
    let rc = unsafe {
        SetSecurityInfo(
            h.as_raw_handle(),
            SE_FILE_OBJECT,
            info,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            acl.as_mut_ptr().cast(),
            std::ptr::null_mut(),
        )
    };
    check("SetSecurityInfo", Ret::Code(rc)).map_err(|source| AclError::Write { path: p, source })
}

/// Reads, changes and writes a path's explicit ACEs through one verified handle
/// ([`open_for_dacl`]). `change` returns the new explicit ACEs, or `None` to write nothing.
fn modify_explicit(
    path: &WinPath,
    change: impl FnOnce(&[Ace]) -> Option<Vec<Ace>>,
) -> Result<bool, AclError> {
    use std::os::windows::io::AsHandle;
    // Without WRITE_DAC (a DACL that denies it to this token, e.g. the DACL lock for a token
    // without Authenticated Users enabled) a path whose ACEs are already in place still passes;
    // one that needs a change fails with the access error.
    let (h, denied) = match open_checked(path, true) {
        Ok(h) => (h, None),
        // ERROR_ACCESS_DENIED (5).
        Err(AclError::Open { path: p, source }) if source.code == 5 => (
            open_checked(path, false)?,
            Some(AclError::Open { path: p, source }),
        ),
        Err(e) => return Err(e),
    };
    let current = read_handle_typed(h.as_handle(), SE_FILE_OBJECT, &path.as_string())?;
    let unknown = current.other.iter().find(|(_, inherited)| !inherited);
    match (change(&current.explicit()), unknown, denied) {
        (None, _, _) => Ok(false),
        (Some(_), _, Some(e)) => Err(e),
        // Writing would drop an ACE type the model does not know: refuse instead.
        (Some(_), Some((t, _)), None) => Err(AclError::UnsupportedAce {
            path: path.as_string(),
            ace_type: *t,
        }),
        (Some(new), None, None) => {
            write_explicit_handle(h.as_handle(), path, &new, current.protected).map(|_| true)
        }
    }
}

/// Applies one entry of a plan: merges its ACEs into the path's explicit ACEs, through a handle
/// that is checked to be the path itself ([`open_for_dacl`]). Returns false if they were already
/// there (nothing written).
pub fn apply(entry: &PathAces) -> Result<bool, AclError> {
    modify_explicit(&entry.path, |cur| merge_explicit(cur, &entry.aces))
}

/// Undoes one entry of a plan: removes exactly its ACEs from the path's explicit ACEs (through a
/// verified handle). Returns false if none was there.
pub fn unapply(entry: &PathAces) -> Result<bool, AclError> {
    modify_explicit(&entry.path, |cur| {
        crate::ace::unmerge_explicit(cur, &entry.aces)
    })
}

/// Removes every explicit ACE for `sid` from a path (through a verified handle). Returns false if
/// there was none.
pub fn revoke(path: &WinPath, sid: &Sid) -> Result<bool, AclError> {
    modify_explicit(path, |cur| {
        let kept = remove_sid(cur, sid);
        (kept.len() != cur.len()).then_some(kept)
    })
}
