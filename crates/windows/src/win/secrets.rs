//! DPAPI (user scope) for the sandbox accounts' passwords.

use super::{check, Ret, Win32Error};
use windows_sys::Win32::Foundation::LocalFree;
use windows_sys::Win32::Security::Cryptography::{
    CryptProtectData, CryptUnprotectData, CRYPTPROTECT_UI_FORBIDDEN, CRYPT_INTEGER_BLOB,
};

fn blob_out(b: &CRYPT_INTEGER_BLOB) -> Vec<u8> {
    if b.pbData.is_null() {
        return Vec::new();
    }
    // SAFETY: DPAPI returned `cbData` bytes at `pbData`.
    let v = unsafe { std::slice::from_raw_parts(b.pbData, b.cbData as usize) }.to_vec();
    // SAFETY: `pbData` was allocated with LocalAlloc by DPAPI and is freed once.
    unsafe { LocalFree(b.pbData.cast()) };
    v
}

/// Encrypts `data` for the current user.
pub fn protect(data: &[u8]) -> Result<Vec<u8>, Win32Error> {
    let input = CRYPT_INTEGER_BLOB {
        cbData: data.len() as u32,
        pbData: data.as_ptr().cast_mut(),
    };
    let mut out = CRYPT_INTEGER_BLOB {
        cbData: 0,
        pbData: std::ptr::null_mut(),
    };
    // SAFETY: `input` describes `data`, which outlives the call; `out` is a valid out blob.
    let ok = unsafe {
        CryptProtectData(
            &input,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            CRYPTPROTECT_UI_FORBIDDEN,
            &mut out,
        )
    };
    check("CryptProtectData", Ret::Bool(ok))?;
    Ok(blob_out(&out))
}

/// Decrypts what [`protect`] produced for the same user.
pub fn unprotect(data: &[u8]) -> Result<Vec<u8>, Win32Error> {
    let input = CRYPT_INTEGER_BLOB {
        cbData: data.len() as u32,
        pbData: data.as_ptr().cast_mut(),
    };
    let mut out = CRYPT_INTEGER_BLOB {
        cbData: 0,
        pbData: std::ptr::null_mut(),
    };
    // SAFETY: as in `protect`; no description is requested.
    let ok = unsafe {
        CryptUnprotectData(
            &input,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            CRYPTPROTECT_UI_FORBIDDEN,
            &mut out,
        )
    };
    check("CryptUnprotectData", Ret::Bool(ok))?;
    Ok(blob_out(&out))
}
