//! Randomness from the system RNG (`BCryptGenRandom`).

use super::{check, Ret, Win32Error};
use windows_sys::Win32::Security::Cryptography::{
    BCryptGenRandom, BCRYPT_USE_SYSTEM_PREFERRED_RNG,
};

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], Win32Error> {
    let mut buf = [0u8; N];
    // SAFETY: `buf` is writable for N bytes; a null algorithm handle is allowed with
    // BCRYPT_USE_SYSTEM_PREFERRED_RNG.
    let st = unsafe {
        BCryptGenRandom(
            std::ptr::null_mut(),
            buf.as_mut_ptr(),
            N as u32,
            BCRYPT_USE_SYSTEM_PREFERRED_RNG,
        )
    };
    check("BCryptGenRandom", Ret::NtStatus(st))?;
    Ok(buf)
}
