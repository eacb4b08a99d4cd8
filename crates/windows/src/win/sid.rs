//! SIDs between their string form ([`Sid`]) and Win32 `PSID`s, and token SID queries.

use super::{check, wide, Ret, Win32Error};
use crate::sid::Sid;
use std::os::windows::io::{AsRawHandle, BorrowedHandle};
use windows_sys::Win32::Foundation::{LocalFree, ERROR_INSUFFICIENT_BUFFER};
use windows_sys::Win32::Security::Authorization::{ConvertSidToStringSidW, ConvertStringSidToSidW};
use windows_sys::Win32::Security::{
    GetTokenInformation, IsValidSid, TokenGroups, TokenRestrictedSids, TokenUser, PSID,
    SID_AND_ATTRIBUTES, TOKEN_GROUPS, TOKEN_INFORMATION_CLASS, TOKEN_USER,
};

/// Why a SID could not be converted or read.
#[derive(Debug, thiserror::Error)]
pub enum SidError {
    /// Win32 refused the SID string or the conversion.
    #[error("cannot convert SID {sid}: {source}")]
    Convert {
        /// The SID.
        sid: String,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// The system produced a string that is not a SID.
    #[error("Windows returned an unparsable SID string {0:?}")]
    Parse(String),
    /// Reading token information failed.
    #[error("cannot read {what} from the token: {source}")]
    Token {
        /// Which information class.
        what: &'static str,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// The token has no logon-session SID (e.g. a service token).
    #[error("the token has no logon-session SID; run Stockade from an interactive session")]
    NoLogonSid,
}

/// A SID allocated by `ConvertStringSidToSidW` (freed with `LocalFree`).
pub struct OwnedSid(PSID);

impl OwnedSid {
    /// Converts a [`Sid`].
    pub fn new(sid: &Sid) -> Result<OwnedSid, SidError> {
        let w = wide(&sid.to_string());
        let mut psid: PSID = std::ptr::null_mut();
        // SAFETY: `w` is a NUL-terminated UTF-16 string; `psid` is a valid out pointer.
        let ok = unsafe { ConvertStringSidToSidW(w.as_ptr(), &mut psid) };
        check("ConvertStringSidToSidW", Ret::Bool(ok)).map_err(|source| SidError::Convert {
            sid: sid.to_string(),
            source,
        })?;
        let owned = OwnedSid(psid);
        // SAFETY: `psid` was just allocated by ConvertStringSidToSidW.
        let valid = unsafe { IsValidSid(owned.0) };
        check("IsValidSid", Ret::Bool(valid)).map_err(|source| SidError::Convert {
            sid: sid.to_string(),
            source,
        })?;
        Ok(owned)
    }

    /// The raw pointer (valid while `self` lives).
    pub fn as_psid(&self) -> PSID {
        self.0
    }
}

impl Drop for OwnedSid {
    fn drop(&mut self) {
        // SAFETY: the pointer came from ConvertStringSidToSidW, which allocates with LocalAlloc,
        // and is freed exactly once here.
        unsafe { LocalFree(self.0) };
    }
}

/// Reads a SID that Windows owns.
///
/// # Safety
/// `psid` must point at a valid binary SID that stays alive for the duration of the call.
pub unsafe fn sid_from_psid(psid: PSID) -> Result<Sid, SidError> {
    let mut s: *mut u16 = std::ptr::null_mut();
    // SAFETY: the caller guarantees `psid` points at a valid SID; `s` is a valid out pointer.
    let ok = unsafe { ConvertSidToStringSidW(psid, &mut s) };
    check("ConvertSidToStringSidW", Ret::Bool(ok)).map_err(|source| SidError::Convert {
        sid: "<binary>".into(),
        source,
    })?;
    let mut len = 0usize;
    // SAFETY: `s` is a NUL-terminated string allocated by ConvertSidToStringSidW; we stop at the NUL.
    while unsafe { *s.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `s` points at `len` initialized u16 values (scanned above).
    let text = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(s, len) });
    // SAFETY: `s` was allocated with LocalAlloc by ConvertSidToStringSidW and is freed once.
    unsafe { LocalFree(s.cast()) };
    Sid::parse(&text).map_err(|_| SidError::Parse(text))
}

/// Reads a variable-length token information class into an 8-byte-aligned buffer.
pub fn token_info(
    token: BorrowedHandle<'_>,
    class: TOKEN_INFORMATION_CLASS,
    what: &'static str,
) -> Result<Vec<u64>, SidError> {
    let mut needed = 0u32;
    // SAFETY: a null buffer of length 0 asks for the needed size, written to `needed`.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            class,
            std::ptr::null_mut(),
            0,
            &mut needed,
        )
    };
    if ok == 0 {
        let e = check("GetTokenInformation", Ret::Bool(ok)).err();
        if let Some(e) = e {
            if e.code != ERROR_INSUFFICIENT_BUFFER {
                return Err(SidError::Token { what, source: e });
            }
        }
    }
    let mut buf = vec![0u64; (needed as usize).div_ceil(8).max(1)];
    let len = (buf.len() * 8) as u32;
    // SAFETY: `buf` is writable for `len` bytes and aligned for every TOKEN_* structure.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            class,
            buf.as_mut_ptr().cast(),
            len,
            &mut needed,
        )
    };
    check("GetTokenInformation", Ret::Bool(ok))
        .map_err(|source| SidError::Token { what, source })?;
    Ok(buf)
}

fn groups_of(buf: &[u64]) -> Vec<SID_AND_ATTRIBUTES> {
    let tg = buf.as_ptr().cast::<TOKEN_GROUPS>();
    // SAFETY: GetTokenInformation filled `buf` with a TOKEN_GROUPS; reading its count is in bounds.
    let count = unsafe { (*tg).GroupCount } as usize;
    // SAFETY: `Groups` is followed by `count` entries inside `buf` (the size Windows asked for).
    let first = unsafe { std::ptr::addr_of!((*tg).Groups).cast::<SID_AND_ATTRIBUTES>() };
    // SAFETY: `first` points at `count` initialized SID_AND_ATTRIBUTES inside `buf`.
    unsafe { std::slice::from_raw_parts(first, count) }.to_vec()
}

/// The token's user SID.
pub fn token_user(token: BorrowedHandle<'_>) -> Result<Sid, SidError> {
    let buf = token_info(token, TokenUser, "TokenUser")?;
    let tu = buf.as_ptr().cast::<TOKEN_USER>();
    // SAFETY: the buffer holds a TOKEN_USER whose SID points inside the same buffer.
    let psid = unsafe { (*tu).User.Sid };
    // SAFETY: `psid` points into `buf`, which GetTokenInformation filled and which outlives the call.
    unsafe { sid_from_psid(psid) }
}

/// The token's groups (SID and attribute flags).
pub fn token_groups(token: BorrowedHandle<'_>) -> Result<Vec<(Sid, u32)>, SidError> {
    let buf = token_info(token, TokenGroups, "TokenGroups")?;
    groups_of(&buf)
        .iter()
        .map(|g| {
            // SAFETY: `g.Sid` points into `buf` (filled by GetTokenInformation), alive here.
            let sid = unsafe { sid_from_psid(g.Sid) }?;
            Ok((sid, g.Attributes))
        })
        .collect()
}

/// The token's logon-session SID.
pub fn token_logon_sid(token: BorrowedHandle<'_>) -> Result<Sid, SidError> {
    token_groups(token)?
        .into_iter()
        .find(|(_, attr)| attr & SE_GROUP_LOGON_ID == SE_GROUP_LOGON_ID)
        .map(|(s, _)| s)
        .ok_or(SidError::NoLogonSid)
}

/// The token's restricting SIDs (empty for an unrestricted token).
pub fn token_restricted_sids(token: BorrowedHandle<'_>) -> Result<Vec<Sid>, SidError> {
    let buf = token_info(token, TokenRestrictedSids, "TokenRestrictedSids")?;
    groups_of(&buf)
        .iter()
        // SAFETY: `g.Sid` points into `buf` (filled by GetTokenInformation), alive here.
        .map(|g| unsafe { sid_from_psid(g.Sid) })
        .collect()
}

/// `SE_GROUP_LOGON_ID` (winnt.h).
const SE_GROUP_LOGON_ID: u32 = 0xC000_0000;

/// The restricting SIDs as reported by `TokenGroupsAndPrivileges` (a second source, for hosts
/// where `TokenRestrictedSids` is not implemented).
pub fn token_restricted_sids_via_groups_and_privileges(
    token: BorrowedHandle<'_>,
) -> Result<Vec<Sid>, SidError> {
    use windows_sys::Win32::Security::{TokenGroupsAndPrivileges, TOKEN_GROUPS_AND_PRIVILEGES};
    let buf = token_info(token, TokenGroupsAndPrivileges, "TokenGroupsAndPrivileges")?;
    let t = buf.as_ptr().cast::<TOKEN_GROUPS_AND_PRIVILEGES>();
    // SAFETY: the buffer holds a TOKEN_GROUPS_AND_PRIVILEGES filled by GetTokenInformation.
    let (count, first) = unsafe { ((*t).RestrictedSidCount as usize, (*t).RestrictedSids) };
    if count == 0 || first.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: `first` points at `count` SID_AND_ATTRIBUTES inside the same buffer.
    let list = unsafe { std::slice::from_raw_parts(first, count) };
    list.iter()
        // SAFETY: `g.Sid` points into `buf` (filled by GetTokenInformation), alive here.
        .map(|g| unsafe { sid_from_psid(g.Sid) })
        .collect()
}
