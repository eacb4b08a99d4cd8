//! A desktop per elevated run: the command's windows live on it, not on the user's, so it
//! cannot send the user's windows messages, read their input or inject keystrokes (window
//! messages do not cross desktops). The job's UI limits (see [`super::job::Job::restrict_ui`])
//! cover the clipboard, global atoms and handles of other processes' windows.

use super::{check, Ret, Win32Error};
use crate::win::random;
use windows_sys::Win32::Foundation::LocalFree;
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
use windows_sys::Win32::System::StationsAndDesktops::{
    CloseDesktop, CreateDesktopW, GetProcessWindowStation, GetUserObjectInformationW, HDESK,
    UOI_NAME,
};

/// Why a desktop could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    /// The security descriptor did not parse.
    #[error("invalid desktop security descriptor {sddl:?}: {source}")]
    Sddl {
        /// The SDDL.
        sddl: String,
        /// The error.
        #[source]
        source: Win32Error,
    },
    /// `CreateDesktopW` or a query failed.
    #[error("cannot create the run's desktop: {0}")]
    Create(#[source] Win32Error),
}

/// An owned desktop, closed on drop.
pub struct Desktop {
    handle: HDESK,
    /// `window-station\desktop`, for `STARTUPINFO::lpDesktop`.
    pub full_name: String,
}

impl Drop for Desktop {
    fn drop(&mut self) {
        // SAFETY: `handle` came from CreateDesktopW and is closed exactly once here.
        unsafe { CloseDesktop(self.handle) };
    }
}

fn window_station_name() -> Result<String, Win32Error> {
    // SAFETY: returns the calling process's window station handle (not to be closed).
    let ws = unsafe { GetProcessWindowStation() };
    if ws.is_null() {
        check("GetProcessWindowStation", Ret::Bool(0))?;
    }
    let mut buf = [0u16; 256];
    let mut needed = 0u32;
    // SAFETY: `ws` is a valid window-station handle; `buf` is writable for its size in bytes.
    let ok = unsafe {
        GetUserObjectInformationW(
            ws,
            UOI_NAME,
            buf.as_mut_ptr().cast(),
            (buf.len() * 2) as u32,
            &mut needed,
        )
    };
    check("GetUserObjectInformationW(UOI_NAME)", Ret::Bool(ok))?;
    let len = buf.iter().position(|c| *c == 0).unwrap_or(buf.len());
    Ok(String::from_utf16_lossy(&buf[..len]))
}

impl Desktop {
    /// Creates `stockade-<random>` on the process's window station with the DACL in `sddl`.
    pub fn create(sddl: &str) -> Result<Desktop, DesktopError> {
        let tag = random::bytes::<8>()
            .map(u64::from_le_bytes)
            .map_err(DesktopError::Create)?;
        let name = format!("stockade-{tag:016x}");
        let station = window_station_name().map_err(DesktopError::Create)?;
        let w_sddl = super::wide(sddl);
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `w_sddl` is NUL-terminated; `sd` is a valid out pointer; no size wanted.
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
        .map_err(|source| DesktopError::Sddl {
            sddl: sddl.to_string(),
            source,
        })?;
        let sa = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: sd,
            bInheritHandle: 0,
        };
        let w_name = super::wide(&name);
        // GENERIC_ALL for the creator; what the command may do is decided by the DACL.
        // SAFETY: `w_name` is NUL-terminated; no device/devmode; `sa` holds a valid descriptor.
        let h = unsafe {
            CreateDesktopW(
                w_name.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                0,
                0x1000_0000,
                &sa,
            )
        };
        // SAFETY: `sd` was allocated by the conversion above and is no longer used.
        unsafe { LocalFree(sd) };
        if h.is_null() {
            check("CreateDesktopW", Ret::Bool(0)).map_err(DesktopError::Create)?;
        }
        Ok(Desktop {
            handle: h,
            full_name: format!("{station}\\{name}"),
        })
    }
}
