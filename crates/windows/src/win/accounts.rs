//! Local accounts and groups for the elevated tier (NetApi32), the logon-screen registry value,
//! and SID lookup by name.

use super::sid::sid_from_psid;
use super::{check, wide, Ret, Win32Error};
use crate::sid::Sid;
use std::collections::BTreeSet;
use windows_sys::Win32::NetworkManagement::NetManagement::{
    NetApiBufferFree, NetLocalGroupAdd, NetLocalGroupAddMembers, NetLocalGroupDel,
    NetLocalGroupGetMembers, NetUserAdd, NetUserDel, NetUserSetInfo, LOCALGROUP_INFO_1,
    LOCALGROUP_MEMBERS_INFO_3, MAX_PREFERRED_LENGTH, UF_DONT_EXPIRE_PASSWD, UF_PASSWD_CANT_CHANGE,
    UF_SCRIPT, USER_INFO_1, USER_INFO_1003, USER_PRIV_USER,
};
use windows_sys::Win32::Security::LookupAccountNameW;
use windows_sys::Win32::System::Registry::{
    RegCloseKey, RegCreateKeyExW, RegDeleteKeyValueW, RegGetValueW, RegSetValueExW, HKEY,
    HKEY_LOCAL_MACHINE, KEY_SET_VALUE, REG_DWORD, REG_OPTION_NON_VOLATILE, RRF_RT_REG_DWORD,
};

/// Where hidden accounts are listed (value = account name, DWORD 0 = hidden).
pub const USERLIST_KEY: &str =
    r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon\SpecialAccounts\UserList";

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {name}: {source}; `stockade setup` must run elevated (it re-launches itself through UAC)")]
pub struct AccountError {
    /// What was attempted.
    pub action: &'static str,
    /// Account or group.
    pub name: String,
    /// The failed call.
    #[source]
    pub source: Win32Error,
}

fn err<'a>(action: &'static str, name: &'a str) -> impl FnOnce(Win32Error) -> AccountError + 'a {
    move |source| AccountError {
        action,
        name: name.to_string(),
        source,
    }
}

/// Creates a local group.
pub fn create_group(name: &str, comment: &str) -> Result<(), AccountError> {
    let mut n = wide(name);
    let mut c = wide(comment);
    let info = LOCALGROUP_INFO_1 {
        lgrpi1_name: n.as_mut_ptr(),
        lgrpi1_comment: c.as_mut_ptr(),
    };
    let mut parm = 0u32;
    // SAFETY: `info` points at NUL-terminated strings that outlive the call.
    let rc = unsafe {
        NetLocalGroupAdd(
            std::ptr::null(),
            1,
            std::ptr::addr_of!(info).cast(),
            &mut parm,
        )
    };
    check("NetLocalGroupAdd", Ret::Code(rc)).map_err(err("create group", name))
}

/// Creates a local user that cannot change its password, whose password never expires.
pub fn create_user(name: &str, password: &str, comment: &str) -> Result<(), AccountError> {
    let mut n = wide(name);
    let mut p = wide(password);
    let mut c = wide(comment);
    let info = USER_INFO_1 {
        usri1_name: n.as_mut_ptr(),
        usri1_password: p.as_mut_ptr(),
        usri1_password_age: 0,
        usri1_priv: USER_PRIV_USER,
        usri1_home_dir: std::ptr::null_mut(),
        usri1_comment: c.as_mut_ptr(),
        usri1_flags: UF_SCRIPT | UF_DONT_EXPIRE_PASSWD | UF_PASSWD_CANT_CHANGE,
        usri1_script_path: std::ptr::null_mut(),
    };
    let mut parm = 0u32;
    // SAFETY: `info` points at NUL-terminated strings that outlive the call.
    let rc = unsafe {
        NetUserAdd(
            std::ptr::null(),
            1,
            std::ptr::addr_of!(info).cast(),
            &mut parm,
        )
    };
    p.iter_mut().for_each(|c| *c = 0);
    check("NetUserAdd", Ret::Code(rc)).map_err(err("create account", name))
}

/// Sets a new password.
pub fn set_password(name: &str, password: &str) -> Result<(), AccountError> {
    let n = wide(name);
    let mut p = wide(password);
    let info = USER_INFO_1003 {
        usri1003_password: p.as_mut_ptr(),
    };
    let mut parm = 0u32;
    // SAFETY: `n` and the password are NUL-terminated and outlive the call.
    let rc = unsafe {
        NetUserSetInfo(
            std::ptr::null(),
            n.as_ptr(),
            1003,
            std::ptr::addr_of!(info).cast(),
            &mut parm,
        )
    };
    p.iter_mut().for_each(|c| *c = 0);
    check("NetUserSetInfo", Ret::Code(rc)).map_err(err("set the password of", name))
}

/// Adds a local account to a local group.
pub fn add_member(group: &str, account: &str) -> Result<(), AccountError> {
    let g = wide(group);
    let mut a = wide(account);
    let info = LOCALGROUP_MEMBERS_INFO_3 {
        lgrmi3_domainandname: a.as_mut_ptr(),
    };
    // SAFETY: `g` and `info`'s string are NUL-terminated and outlive the call; one entry.
    let rc = unsafe {
        NetLocalGroupAddMembers(
            std::ptr::null(),
            g.as_ptr(),
            3,
            std::ptr::addr_of!(info).cast(),
            1,
        )
    };
    check("NetLocalGroupAddMembers", Ret::Code(rc)).map_err(err("add a member to", group))
}

/// Names of a local group's members (`DOMAIN\name` reduced to `name`).
pub fn members(group: &str) -> Result<BTreeSet<String>, AccountError> {
    let g = wide(group);
    let mut buf: *mut u8 = std::ptr::null_mut();
    let (mut read, mut total, mut resume) = (0u32, 0u32, 0usize);
    // SAFETY: `g` is NUL-terminated; all out pointers are valid; Windows allocates `buf`.
    let rc = unsafe {
        NetLocalGroupGetMembers(
            std::ptr::null(),
            g.as_ptr(),
            3,
            &mut buf,
            MAX_PREFERRED_LENGTH,
            &mut read,
            &mut total,
            &mut resume,
        )
    };
    let result =
        check("NetLocalGroupGetMembers", Ret::Code(rc)).map_err(err("list the members of", group));
    let mut out = BTreeSet::new();
    if result.is_ok() && !buf.is_null() {
        let entries = buf.cast::<LOCALGROUP_MEMBERS_INFO_3>();
        for i in 0..read as usize {
            // SAFETY: Windows returned `read` entries in `buf`.
            let p = unsafe { (*entries.add(i)).lgrmi3_domainandname };
            let mut len = 0usize;
            // SAFETY: `p` is a NUL-terminated string inside `buf`; we stop at the NUL.
            while unsafe { *p.add(len) } != 0 {
                len += 1;
            }
            // SAFETY: `p` points at `len` initialized u16 values.
            let s = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) });
            out.insert(s.rsplit('\\').next().unwrap_or_default().to_string());
        }
    }
    if !buf.is_null() {
        // SAFETY: `buf` was allocated by NetLocalGroupGetMembers and is freed once.
        unsafe { NetApiBufferFree(buf.cast()) };
    }
    result.map(|_| out)
}

/// Deletes a local user.
pub fn delete_user(name: &str) -> Result<(), AccountError> {
    let n = wide(name);
    // SAFETY: `n` is NUL-terminated.
    let rc = unsafe { NetUserDel(std::ptr::null(), n.as_ptr()) };
    check("NetUserDel", Ret::Code(rc)).map_err(err("delete account", name))
}

/// Deletes a local group.
pub fn delete_group(name: &str) -> Result<(), AccountError> {
    let n = wide(name);
    // SAFETY: `n` is NUL-terminated.
    let rc = unsafe { NetLocalGroupDel(std::ptr::null(), n.as_ptr()) };
    check("NetLocalGroupDel", Ret::Code(rc)).map_err(err("delete group", name))
}

/// The SID of a local account or group, `None` if it does not exist.
pub fn lookup_sid(name: &str) -> Result<Option<Sid>, AccountError> {
    let n = wide(name);
    let mut sid = vec![0u64; 12];
    let mut sid_len = (sid.len() * 8) as u32;
    let mut dom = vec![0u16; 256];
    let mut dom_len = dom.len() as u32;
    let mut use_ = 0i32;
    // SAFETY: `n` is NUL-terminated; `sid` (96 bytes, the maximum SID size is 68) and `dom` are
    // writable for the lengths passed.
    let ok = unsafe {
        LookupAccountNameW(
            std::ptr::null(),
            n.as_ptr(),
            sid.as_mut_ptr().cast(),
            &mut sid_len,
            dom.as_mut_ptr(),
            &mut dom_len,
            &mut use_,
        )
    };
    match check("LookupAccountNameW", Ret::Bool(ok)) {
        // SAFETY: LookupAccountNameW succeeded, so `sid` holds a valid SID; it outlives the call.
        Ok(()) => unsafe { sid_from_psid(sid.as_mut_ptr().cast()) }
            .map(Some)
            .map_err(|_| AccountError {
                action: "read the SID of",
                name: name.to_string(),
                source: Win32Error {
                    call: "ConvertSidToStringSidW",
                    code: 0,
                    message: "unreadable SID".into(),
                },
            }),
        // ERROR_NONE_MAPPED: no such account.
        Err(e) if e.code == 1332 => Ok(None),
        Err(e) => Err(AccountError {
            action: "look up",
            name: name.to_string(),
            source: e,
        }),
    }
}

/// Hides an account from the logon screen.
pub fn hide(name: &str) -> Result<(), AccountError> {
    let key = wide(USERLIST_KEY);
    let mut hkey: HKEY = std::ptr::null_mut();
    // SAFETY: `key` is NUL-terminated; `hkey` is a valid out pointer.
    let rc = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            0,
            std::ptr::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_SET_VALUE,
            std::ptr::null(),
            &mut hkey,
            std::ptr::null_mut(),
        )
    };
    check("RegCreateKeyExW", Ret::Code(rc)).map_err(err("hide", name))?;
    let n = wide(name);
    let zero = 0u32.to_le_bytes();
    // SAFETY: `hkey` is open with KEY_SET_VALUE; the data is 4 bytes.
    let rc = unsafe { RegSetValueExW(hkey, n.as_ptr(), 0, REG_DWORD, zero.as_ptr(), 4) };
    // SAFETY: `hkey` was opened above and is closed once.
    unsafe { RegCloseKey(hkey) };
    check("RegSetValueExW", Ret::Code(rc)).map_err(err("hide", name))
}

/// True if the account is hidden from the logon screen.
pub fn is_hidden(name: &str) -> bool {
    let key = wide(USERLIST_KEY);
    let n = wide(name);
    let mut v = 1u32;
    let mut len = 4u32;
    // SAFETY: strings are NUL-terminated; `v` is writable for `len` bytes.
    let rc = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            n.as_ptr(),
            RRF_RT_REG_DWORD,
            std::ptr::null_mut(),
            std::ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    rc == 0 && v == 0
}

/// Removes the logon-screen value (uninstall). Missing values are fine.
pub fn unhide(name: &str) {
    let key = wide(USERLIST_KEY);
    let n = wide(name);
    // SAFETY: both strings are NUL-terminated.
    let _ = unsafe { RegDeleteKeyValueW(HKEY_LOCAL_MACHINE, key.as_ptr(), n.as_ptr()) };
}
