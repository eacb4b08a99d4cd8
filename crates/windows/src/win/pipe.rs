//! Pipes: anonymous pipes for stdio, and named pipes whose DACL comes from an SDDL string (the
//! elevated tier's runner channel).

use super::{check, owned, wide, Ret, Win32Error};
use std::os::windows::io::OwnedHandle;
use windows_sys::Win32::Foundation::{LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
use windows_sys::Win32::Storage::FileSystem::{FILE_FLAG_FIRST_PIPE_INSTANCE, PIPE_ACCESS_DUPLEX};
use windows_sys::Win32::System::Pipes::{
    CreateNamedPipeW, CreatePipe, PIPE_NOWAIT, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_TYPE_BYTE, PIPE_WAIT,
};

/// Why a pipe could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// The SDDL string was rejected.
    #[error("invalid pipe security descriptor {sddl:?}: {source}")]
    Sddl {
        /// The SDDL.
        sddl: String,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// Creating the pipe failed.
    #[error("cannot create pipe {name}: {source}")]
    Create {
        /// The pipe name or `anonymous`.
        name: String,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
}

/// An anonymous pipe: (read end, write end), neither inheritable.
pub fn anonymous() -> Result<(OwnedHandle, OwnedHandle), PipeError> {
    let mut r: HANDLE = std::ptr::null_mut();
    let mut w: HANDLE = std::ptr::null_mut();
    let err = |source| PipeError::Create {
        name: "anonymous".into(),
        source,
    };
    // SAFETY: both out pointers are valid; null attributes make non-inheritable handles.
    let ok = unsafe { CreatePipe(&mut r, &mut w, std::ptr::null(), 0) };
    check("CreatePipe", Ret::Bool(ok)).map_err(err)?;
    Ok((
        // SAFETY: `r` comes straight from CreatePipe and nothing else owns or closes it.
        unsafe { owned("CreatePipe", r) }.map_err(err)?,
        // SAFETY: `w` comes straight from CreatePipe and nothing else owns or closes it.
        unsafe { owned("CreatePipe", w) }.map_err(err)?,
    ))
}

/// Creates the first instance of `\\.\pipe\<name>` with the DACL in `sddl`, local clients only.
pub fn named_with_sddl(name: &str, sddl: &str) -> Result<OwnedHandle, PipeError> {
    named(name, sddl, PIPE_WAIT)
}

/// Like [`named_with_sddl`], in `PIPE_NOWAIT` mode so that `ConnectNamedPipe` can be polled.
pub fn named_nowait_with_sddl(name: &str, sddl: &str) -> Result<OwnedHandle, PipeError> {
    named(name, sddl, PIPE_NOWAIT)
}

fn named(name: &str, sddl: &str, wait_mode: u32) -> Result<OwnedHandle, PipeError> {
    let w_sddl = wide(sddl);
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `w_sddl` is NUL-terminated; `sd` is a valid out pointer; the size is not wanted.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            w_sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    check(
        "ConvertStringSecurityDescriptorToSecurityDescriptorW",
        Ret::Bool(ok),
    )
    .map_err(|source| PipeError::Sddl {
        sddl: sddl.to_string(),
        source,
    })?;
    let sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd,
        bInheritHandle: 0,
    };
    let full = format!(r"\\.\pipe\{name}");
    let w_name = wide(&full);
    // SAFETY: `w_name` is NUL-terminated; `sa` points at a valid security descriptor.
    let h = unsafe {
        CreateNamedPipeW(
            w_name.as_ptr(),
            PIPE_ACCESS_DUPLEX | FILE_FLAG_FIRST_PIPE_INSTANCE,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | wait_mode | PIPE_REJECT_REMOTE_CLIENTS,
            1,
            4096,
            4096,
            0,
            &sa,
        )
    };
    // SAFETY: `sd` was allocated with LocalAlloc by the conversion above and is no longer used.
    unsafe { LocalFree(sd) };
    // SAFETY: `h` comes straight from CreateNamedPipeW and nothing else owns or closes it.
    unsafe { owned("CreateNamedPipeW", h) }
        .map_err(|source| PipeError::Create { name: full, source })
}
