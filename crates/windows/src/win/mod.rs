//! The Win32 layer: applies plans computed by the pure modules. The only `cfg(windows)` code.
//!
//! Rules: one Win32 call per `unsafe` block, each with a `SAFETY:` comment; every return code goes
//! through [`check`]; handles are owned by `std::os::windows::io::OwnedHandle` and closed on drop.

pub mod accounts;
pub mod acl;
pub mod desktop;
pub mod firewall;
pub mod job;
pub mod pipe;
pub mod process;
pub mod pty;
pub mod random;
pub mod runner;
pub mod secrets;
pub mod setup;
pub mod sid;
pub mod token;
pub mod wfp;

use windows_sys::Win32::Foundation::{GetLastError, HANDLE, INVALID_HANDLE_VALUE};

/// A failed Win32 call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {message} (code {code:#x})")]
pub struct Win32Error {
    /// The function that failed.
    pub call: &'static str,
    /// The error code (Win32 error, HRESULT or NTSTATUS, as returned).
    pub code: u32,
    /// The system's message for it.
    pub message: String,
}

impl Win32Error {
    fn new(call: &'static str, code: u32) -> Win32Error {
        let message = std::io::Error::from_raw_os_error(code as i32).to_string();
        Win32Error {
            call,
            code,
            message,
        }
    }
}

/// The ways Win32 functions report failure.
#[derive(Debug, Clone, Copy)]
pub enum Ret {
    /// `BOOL`: zero means failure; the error is `GetLastError()`.
    Bool(i32),
    /// `WIN32_ERROR` / `LSTATUS` / `NET_API_STATUS` returned directly: zero is success.
    Code(u32),
    /// `HRESULT`: negative means failure.
    HResult(i32),
    /// `NTSTATUS`: negative means failure.
    NtStatus(i32),
    /// A handle: null or `INVALID_HANDLE_VALUE` means failure; the error is `GetLastError()`.
    Handle(HANDLE),
}

fn last_error() -> u32 {
    // SAFETY: GetLastError only reads the calling thread's last-error value.
    unsafe { GetLastError() }
}

/// The one place return codes are normalized.
pub fn check(call: &'static str, ret: Ret) -> Result<(), Win32Error> {
    match ret {
        Ret::Bool(0) => Err(Win32Error::new(call, last_error())),
        Ret::Bool(_) => Ok(()),
        Ret::Code(0) => Ok(()),
        Ret::Code(c) => Err(Win32Error::new(call, c)),
        Ret::HResult(h) | Ret::NtStatus(h) if h < 0 => Err(Win32Error::new(call, h as u32)),
        Ret::HResult(_) | Ret::NtStatus(_) => Ok(()),
        Ret::Handle(h) if h.is_null() || h == INVALID_HANDLE_VALUE => {
            Err(Win32Error::new(call, last_error()))
        }
        Ret::Handle(_) => Ok(()),
    }
}

/// Takes ownership of a handle a successful call returned (null or `INVALID_HANDLE_VALUE` is
/// reported as `call`'s failure).
///
/// # Safety
/// `h` must be null, `INVALID_HANDLE_VALUE`, or a handle just returned by `call` that nothing
/// else owns or will close.
pub unsafe fn owned(
    call: &'static str,
    h: HANDLE,
) -> Result<std::os::windows::io::OwnedHandle, Win32Error> {
    use std::os::windows::io::FromRawHandle;
    check(call, Ret::Handle(h))?;
    // SAFETY: `h` is valid (checked above) and, by this function's contract, owned by nobody else.
    Ok(unsafe { std::os::windows::io::OwnedHandle::from_raw_handle(h) })
}

/// NUL-terminated UTF-16.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// True when running under Wine (ntdll exports `wine_get_version`).
pub fn running_under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
    let name = wide("ntdll.dll");
    // SAFETY: `name` is a valid NUL-terminated UTF-16 string that outlives the call.
    let ntdll = unsafe { GetModuleHandleW(name.as_ptr()) };
    if ntdll.is_null() {
        return false;
    }
    // SAFETY: `ntdll` is a loaded module handle and the name is a NUL-terminated ANSI string.
    let f = unsafe { GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()) };
    f.is_some()
}

#[cfg(feature = "policy")]
pub mod run;

/// A failed Win32 step of a run.
#[derive(Debug, thiserror::Error)]
pub enum WinRunError {
    /// Applying an ACE failed.
    #[error(transparent)]
    Acl(#[from] acl::AclError),
    /// The restricted token could not be made.
    #[error(transparent)]
    Token(#[from] token::TokenError),
    /// The job object failed.
    #[error(transparent)]
    Job(#[from] job::JobError),
    /// Starting or waiting failed.
    #[error(transparent)]
    Spawn(#[from] process::SpawnError),
    /// The pseudo console failed.
    #[error(transparent)]
    Pty(#[from] pty::PtyError),
    /// The elevated tier's runner failed.
    #[error(transparent)]
    Runner(#[from] runner::RunnerError),
    /// Reading the elevated tier's installation failed.
    #[error(transparent)]
    Setup(#[from] setup::WinSetupError),
    /// A SID could not be read.
    #[error(transparent)]
    Sid(#[from] sid::SidError),
    /// The system RNG failed.
    #[error("cannot get random bytes for a capability SID: {0}")]
    Random(#[source] Win32Error),
}
