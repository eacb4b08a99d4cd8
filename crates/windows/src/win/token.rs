//! Creating the unelevated tier's restricted token from the caller's token.

use super::sid::{token_logon_sid, token_user, OwnedSid, SidError};
use super::{check, owned, Ret, Win32Error};
use crate::sid::Sid;
use crate::unelevated::{SidRef, TokenPlan};
use std::os::windows::io::{AsHandle, AsRawHandle, OwnedHandle};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Security::{
    AddAccessAllowedAceEx, CreateRestrictedToken, GetLengthSid, InitializeAcl, SetTokenInformation,
    TokenDefaultDacl, ACL, ACL_REVISION, SID_AND_ATTRIBUTES, TOKEN_ADJUST_DEFAULT,
    TOKEN_ASSIGN_PRIMARY, TOKEN_DEFAULT_DACL, TOKEN_DUPLICATE, TOKEN_QUERY,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// Why the restricted token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Opening the caller's own token failed.
    #[error("cannot open Stockade's own process token: {0}")]
    OpenOwn(#[source] Win32Error),
    /// A SID of the plan could not be resolved or converted.
    #[error("cannot prepare the token's SIDs: {0}")]
    Sid(#[from] SidError),
    /// `CreateRestrictedToken` failed.
    #[error("cannot create the restricted token: {0}")]
    Create(#[source] Win32Error),
    /// Setting the default DACL failed.
    #[error("cannot set the restricted token's default DACL (the child could not use its own pipes): {0}")]
    DefaultDacl(#[source] Win32Error),
}

/// The caller's primary token, opened for what restricting it needs.
pub fn own_token() -> Result<OwnedHandle, TokenError> {
    let mut h: HANDLE = std::ptr::null_mut();
    let access = TOKEN_DUPLICATE | TOKEN_QUERY | TOKEN_ASSIGN_PRIMARY | TOKEN_ADJUST_DEFAULT;
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing.
    let me = unsafe { GetCurrentProcess() };
    // SAFETY: `me` is the current-process pseudo-handle; `h` is a valid out pointer.
    let ok = unsafe { OpenProcessToken(me, access, &mut h) };
    check("OpenProcessToken", Ret::Bool(ok)).map_err(TokenError::OpenOwn)?;
    // SAFETY: `h` comes straight from OpenProcessToken and nothing else owns or closes it.
    unsafe { owned("OpenProcessToken", h) }.map_err(TokenError::OpenOwn)
}

/// Resolves the plan's [`SidRef`]s against the caller's token.
pub fn resolve(token: &OwnedHandle, r: &SidRef) -> Result<Sid, SidError> {
    match r {
        SidRef::Fixed(s) => Ok(s.clone()),
        SidRef::LogonSession => token_logon_sid(token.as_handle()),
        SidRef::CurrentUser => token_user(token.as_handle()),
        SidRef::RunSession => Err(SidError::Parse(
            "internal: the run SID was not bound (TokenPlan::bind_run_sid)".into(),
        )),
    }
}

/// Builds an ACL of allow ACEs (no inheritance), returned as an 8-byte-aligned buffer.
pub fn allow_acl(entries: &[(OwnedSid, u32)]) -> Result<Vec<u64>, Win32Error> {
    // ACL header (8) + per ACE: ACE_HEADER (4) + mask (4) + SID.
    let mut size = 8usize;
    for (sid, _) in entries {
        // SAFETY: `sid` holds a valid SID allocated by ConvertStringSidToSidW.
        let len = unsafe { GetLengthSid(sid.as_psid()) } as usize;
        size += 8 + len;
    }
    let size = size.div_ceil(4) * 4;
    let mut buf = vec![0u64; size.div_ceil(8)];
    let acl = buf.as_mut_ptr().cast::<ACL>();
    // SAFETY: `buf` is writable for at least `size` bytes and 8-byte aligned.
    let ok = unsafe { InitializeAcl(acl, size as u32, ACL_REVISION) };
    check("InitializeAcl", Ret::Bool(ok))?;
    for (sid, mask) in entries {
        // SAFETY: `acl` was initialized above with room for this ACE; `sid` is valid.
        let ok = unsafe { AddAccessAllowedAceEx(acl, ACL_REVISION, 0, *mask, sid.as_psid()) };
        check("AddAccessAllowedAceEx", Ret::Bool(ok))?;
    }
    Ok(buf)
}

/// Creates the restricted token the plan describes, with its default DACL set. A
/// [`SidRef::RunSession`] in the plan is bound to a fresh random SID first.
pub fn create_restricted(plan: &TokenPlan) -> Result<OwnedHandle, TokenError> {
    let run = super::random::bytes::<16>()
        .map(crate::sid::Sid::capability_from_random)
        .map_err(TokenError::Create)?;
    create_restricted_bound(&plan.bind_run_sid(&run))
}

/// [`create_restricted`] for a plan whose run SID is already bound.
pub fn create_restricted_bound(plan: &TokenPlan) -> Result<OwnedHandle, TokenError> {
    let base = own_token()?;
    let sids: Vec<OwnedSid> = plan
        .restricting
        .iter()
        .map(|r| resolve(&base, &r.sid).and_then(|s| OwnedSid::new(&s)))
        .collect::<Result<_, _>>()?;
    let entries: Vec<SID_AND_ATTRIBUTES> = sids
        .iter()
        .map(|s| SID_AND_ATTRIBUTES {
            Sid: s.as_psid(),
            Attributes: 0,
        })
        .collect();
    // Groups made deny-only (`SidsToDisable`): a SID the caller's token does not hold is
    // ignored by CreateRestrictedToken, which is what the plan wants (nothing to disable).
    let disable_sids: Vec<OwnedSid> = plan
        .deny_only
        .iter()
        .map(OwnedSid::new)
        .collect::<Result<_, _>>()?;
    let disable: Vec<SID_AND_ATTRIBUTES> = disable_sids
        .iter()
        .map(|s| SID_AND_ATTRIBUTES {
            Sid: s.as_psid(),
            Attributes: 0,
        })
        .collect();
    let mut new_token: HANDLE = std::ptr::null_mut();
    // SAFETY: `base` is an open token with TOKEN_DUPLICATE; `disable` and `entries` point at
    // `disable.len()` / `entries.len()` SID_AND_ATTRIBUTES whose SIDs live in `disable_sids` /
    // `sids` for the duration of the call.
    let ok = unsafe {
        CreateRestrictedToken(
            base.as_raw_handle(),
            plan.flags,
            disable.len() as u32,
            if disable.is_empty() {
                std::ptr::null()
            } else {
                disable.as_ptr()
            },
            0,
            std::ptr::null(),
            entries.len() as u32,
            entries.as_ptr(),
            &mut new_token,
        )
    };
    check("CreateRestrictedToken", Ret::Bool(ok)).map_err(TokenError::Create)?;
    // SAFETY: `new_token` comes straight from CreateRestrictedToken and nothing else owns or closes it.
    let token = unsafe { owned("CreateRestrictedToken", new_token) }.map_err(TokenError::Create)?;

    let dacl_sids: Vec<(OwnedSid, u32)> = plan
        .default_dacl
        .iter()
        .map(|(r, m)| Ok((OwnedSid::new(&resolve(&base, r)?)?, *m)))
        .collect::<Result<_, SidError>>()?;
    let mut acl = allow_acl(&dacl_sids).map_err(TokenError::DefaultDacl)?;
    let info = TOKEN_DEFAULT_DACL {
        DefaultDacl: acl.as_mut_ptr().cast(),
    };
    // SAFETY: `token` is a fresh token with TOKEN_ADJUST_DEFAULT; `info` points at a valid ACL in
    // `acl`, which outlives the call (Windows copies it).
    let ok = unsafe {
        SetTokenInformation(
            token.as_raw_handle(),
            TokenDefaultDacl,
            std::ptr::addr_of!(info).cast(),
            std::mem::size_of::<TOKEN_DEFAULT_DACL>() as u32,
        )
    };
    check("SetTokenInformation(TokenDefaultDacl)", Ret::Bool(ok))
        .map_err(TokenError::DefaultDacl)?;
    Ok(token)
}

/// The token's default DACL, as read back with `GetTokenInformation(TokenDefaultDacl)`.
pub fn default_dacl(token: &OwnedHandle) -> Result<Vec<crate::ace::Ace>, SidError> {
    let buf = super::sid::token_info(token.as_handle(), TokenDefaultDacl, "TokenDefaultDacl")?;
    let info = buf.as_ptr().cast::<TOKEN_DEFAULT_DACL>();
    // SAFETY: the buffer holds a TOKEN_DEFAULT_DACL whose ACL pointer points into the buffer.
    let acl = unsafe { (*info).DefaultDacl };
    if acl.is_null() {
        return Ok(Vec::new());
    }
    Ok(super::acl::parse_acl(acl)?.aces)
}
