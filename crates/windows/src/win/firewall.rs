//! Windows Firewall rules through `INetFwPolicy2` / `INetFwRule3` (COM, called through raw
//! vtables because windows-sys has no COM wrappers).

use super::{check, wide, Ret, Win32Error};
use crate::firewall::{Direction, FirewallRule, RULE_GROUP};
use core::ffi::c_void;
use windows_sys::core::{BSTR, GUID, HRESULT};
use windows_sys::Win32::Foundation::{SysAllocString, SysFreeString};
use windows_sys::Win32::NetworkManagement::WindowsFirewall::{
    NetFwPolicy2, NetFwRule, NET_FW_ACTION_BLOCK, NET_FW_PROFILE2_ALL, NET_FW_RULE_DIR_IN,
    NET_FW_RULE_DIR_OUT,
};
use windows_sys::Win32::System::Com::{
    CoCreateInstance, CoInitializeEx, CoUninitialize, CLSCTX_INPROC_SERVER,
    COINIT_APARTMENTTHREADED,
};

const IID_INETFWPOLICY2: GUID = GUID::from_u128(0x98325047_c671_4174_8d81_defcd3f03186);
const IID_INETFWRULE: GUID = GUID::from_u128(0xaf230d27_baba_4e42_aced_f524f22cfce2);
const IID_INETFWRULE3: GUID = GUID::from_u128(0xb21563ff_d696_4222_ab46_4e89b73ab34a);

// Vtable slots (IUnknown 0-2, IDispatch 3-6, then the interface's methods in IDL order).
const RELEASE: usize = 2;
const POLICY2_GET_CURRENT_PROFILE_TYPES: usize = 7;
const POLICY2_GET_FIREWALL_ENABLED: usize = 8;
const POLICY2_GET_LOCAL_POLICY_MODIFY_STATE: usize = 28;
const RULE_GET_ENABLED: usize = 33;
const RULE_GET_PROFILES: usize = 37;
const RULE_GET_ACTION: usize = 41;
const QUERY_INTERFACE: usize = 0;
const POLICY2_GET_RULES: usize = 18;
const RULES_ADD: usize = 8;
const RULES_REMOVE: usize = 9;
const RULES_ITEM: usize = 10;
const RULE_PUT_NAME: usize = 8;
const RULE_PUT_DESCRIPTION: usize = 10;
const RULE_PUT_PROTOCOL: usize = 16;
const RULE_PUT_REMOTE_PORTS: usize = 20;
const RULE_PUT_REMOTE_ADDRESSES: usize = 24;
const RULE_PUT_DIRECTION: usize = 28;
const RULE_PUT_ENABLED: usize = 34;
const RULE_PUT_GROUPING: usize = 36;
const RULE_PUT_PROFILES: usize = 38;
const RULE_PUT_ACTION: usize = 42;
const RULE3_PUT_LOCAL_USER_AUTHORIZED_LIST: usize = 50;

/// Why a firewall operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} firewall rule {rule:?}: {source}; setup must run elevated and the Windows Firewall service must be running")]
pub struct FirewallError {
    /// What was attempted.
    pub action: &'static str,
    /// The rule (or the policy object).
    pub rule: String,
    /// The failed call.
    #[source]
    pub source: Win32Error,
}

/// An owned COM interface pointer (released on drop).
struct Com(*mut c_void);

impl Com {
    /// The function pointer in vtable slot `slot`.
    fn slot(&self, slot: usize) -> usize {
        // SAFETY: `self.0` is a live COM object whose first field is its vtable pointer, and
        // every slot used in this module exists on the interface it is called on.
        unsafe { *(*(self.0 as *const *const usize)).add(slot) }
    }
}

impl Drop for Com {
    fn drop(&mut self) {
        type F = unsafe extern "system" fn(*mut c_void) -> u32;
        // SAFETY: slot 2 of every COM vtable is IUnknown::Release.
        let f: F = unsafe { std::mem::transmute::<usize, F>(self.slot(RELEASE)) };
        // SAFETY: releases the one reference this wrapper owns.
        unsafe { f(self.0) };
    }
}

struct Bstr(BSTR);

impl Bstr {
    fn new(s: &str) -> Bstr {
        let w = wide(s);
        // SAFETY: `w` is NUL-terminated; SysAllocString copies it.
        Bstr(unsafe { SysAllocString(w.as_ptr()) })
    }
}

impl Drop for Bstr {
    fn drop(&mut self) {
        // SAFETY: the BSTR was allocated by SysAllocString and is freed once.
        unsafe { SysFreeString(self.0) };
    }
}

fn hr(
    call: &'static str,
    h: HRESULT,
    action: &'static str,
    rule: &str,
) -> Result<(), FirewallError> {
    check(call, Ret::HResult(h)).map_err(|source| FirewallError {
        action,
        rule: rule.to_string(),
        source,
    })
}

fn put_bstr(obj: &Com, slot: usize, v: &str, rule: &str) -> Result<(), FirewallError> {
    type F = unsafe extern "system" fn(*mut c_void, BSTR) -> HRESULT;
    let b = Bstr::new(v);
    // SAFETY: `slot` is a put_* method taking one BSTR on this interface.
    let f: F = unsafe { std::mem::transmute::<usize, F>(obj.slot(slot)) };
    // SAFETY: `obj` is live and `b` is a valid BSTR for the call.
    let h = unsafe { f(obj.0, b.0) };
    hr("INetFwRule::put_*", h, "set a property of", rule)
}

fn put_i32(obj: &Com, slot: usize, v: i32, rule: &str) -> Result<(), FirewallError> {
    type F = unsafe extern "system" fn(*mut c_void, i32) -> HRESULT;
    // SAFETY: `slot` is a put_* method taking one LONG/enum on this interface.
    let f: F = unsafe { std::mem::transmute::<usize, F>(obj.slot(slot)) };
    // SAFETY: `obj` is live.
    let h = unsafe { f(obj.0, v) };
    hr("INetFwRule::put_*", h, "set a property of", rule)
}

fn put_bool(obj: &Com, slot: usize, v: bool, rule: &str) -> Result<(), FirewallError> {
    type F = unsafe extern "system" fn(*mut c_void, i16) -> HRESULT;
    // SAFETY: `slot` is a put_* method taking one VARIANT_BOOL on this interface.
    let f: F = unsafe { std::mem::transmute::<usize, F>(obj.slot(slot)) };
    // SAFETY: `obj` is live; VARIANT_TRUE is -1.
    let h = unsafe { f(obj.0, if v { -1 } else { 0 }) };
    hr("INetFwRule::put_*", h, "set a property of", rule)
}

fn create(clsid: &GUID, iid: &GUID, what: &str) -> Result<Com, FirewallError> {
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid CLSID/IID pointers and out pointer; no aggregation.
    let h = unsafe {
        CoCreateInstance(
            clsid,
            std::ptr::null_mut(),
            CLSCTX_INPROC_SERVER,
            iid,
            &mut p,
        )
    };
    hr("CoCreateInstance", h, "create", what)?;
    Ok(Com(p))
}

fn query(obj: &Com, iid: &GUID, what: &str) -> Result<Com, FirewallError> {
    type F = unsafe extern "system" fn(*mut c_void, *const GUID, *mut *mut c_void) -> HRESULT;
    // SAFETY: slot 0 of every COM vtable is IUnknown::QueryInterface.
    let f: F = unsafe { std::mem::transmute::<usize, F>(obj.slot(QUERY_INTERFACE)) };
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: `obj` is live; `iid` and `p` are valid pointers.
    let h = unsafe { f(obj.0, iid, &mut p) };
    hr("QueryInterface", h, "query an interface of", what)?;
    Ok(Com(p))
}

/// COM initialized for the current thread for the lifetime of this value.
struct ComInit(bool);

impl ComInit {
    fn new() -> ComInit {
        // SAFETY: initializes COM for this thread; S_FALSE/RPC_E_CHANGED_MODE mean it already is.
        let h = unsafe { CoInitializeEx(std::ptr::null(), COINIT_APARTMENTTHREADED as u32) };
        ComInit(h >= 0)
    }
}

impl Drop for ComInit {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: balances the successful CoInitializeEx above on the same thread.
            unsafe { CoUninitialize() };
        }
    }
}

fn rules_collection() -> Result<Com, FirewallError> {
    let policy = create(&NetFwPolicy2, &IID_INETFWPOLICY2, "HNetCfg.FwPolicy2")?;
    type F = unsafe extern "system" fn(*mut c_void, *mut *mut c_void) -> HRESULT;
    // SAFETY: slot 18 of INetFwPolicy2 is get_Rules.
    let f: F = unsafe { std::mem::transmute::<usize, F>(policy.slot(POLICY2_GET_RULES)) };
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: `policy` is live; `p` is a valid out pointer.
    let h = unsafe { f(policy.0, &mut p) };
    hr(
        "INetFwPolicy2::get_Rules",
        h,
        "open the rule list for",
        "all",
    )?;
    Ok(Com(p))
}

/// Adds block rules (each scoped to one account by `LocalUserAuthorizedList`).
pub fn add_rules(rules: &[FirewallRule]) -> Result<(), FirewallError> {
    let _com = ComInit::new();
    let list = rules_collection()?;
    for r in rules {
        let rule = create(&NetFwRule, &IID_INETFWRULE, &r.name)?;
        let rule3 = query(&rule, &IID_INETFWRULE3, &r.name)?;
        put_bstr(&rule, RULE_PUT_NAME, &r.name, &r.name)?;
        put_bstr(&rule, RULE_PUT_DESCRIPTION, &r.description, &r.name)?;
        put_bstr(&rule, RULE_PUT_GROUPING, RULE_GROUP, &r.name)?;
        put_i32(
            &rule,
            RULE_PUT_DIRECTION,
            match r.direction {
                Direction::In => NET_FW_RULE_DIR_IN,
                Direction::Out => NET_FW_RULE_DIR_OUT,
            },
            &r.name,
        )?;
        put_i32(&rule, RULE_PUT_PROTOCOL, r.protocol.number(), &r.name)?;
        if let Some(ports) = &r.remote_ports {
            put_bstr(&rule, RULE_PUT_REMOTE_PORTS, ports, &r.name)?;
        }
        put_bstr(
            &rule,
            RULE_PUT_REMOTE_ADDRESSES,
            &r.remote_addresses,
            &r.name,
        )?;
        put_i32(&rule, RULE_PUT_PROFILES, NET_FW_PROFILE2_ALL, &r.name)?;
        put_i32(&rule, RULE_PUT_ACTION, NET_FW_ACTION_BLOCK, &r.name)?;
        put_bstr(
            &rule3,
            RULE3_PUT_LOCAL_USER_AUTHORIZED_LIST,
            &r.local_user_sddl,
            &r.name,
        )?;
        put_bool(&rule, RULE_PUT_ENABLED, true, &r.name)?;
        type F = unsafe extern "system" fn(*mut c_void, *mut c_void) -> HRESULT;
        // SAFETY: slot 8 of INetFwRules is Add(INetFwRule*).
        let f: F = unsafe { std::mem::transmute::<usize, F>(list.slot(RULES_ADD)) };
        // SAFETY: `list` and `rule` are live COM objects.
        let h = unsafe { f(list.0, rule.0) };
        hr("INetFwRules::Add", h, "add", &r.name)?;
    }
    Ok(())
}

fn get_i32(obj: &Com, slot: usize, call: &'static str, what: &str) -> Result<i32, FirewallError> {
    type F = unsafe extern "system" fn(*mut c_void, *mut i32) -> HRESULT;
    // SAFETY: `slot` is a get_* method with one LONG/enum out parameter on this interface.
    let f: F = unsafe { std::mem::transmute::<usize, F>(obj.slot(slot)) };
    let mut v = 0i32;
    // SAFETY: `obj` is live; `v` is a valid out pointer.
    let h = unsafe { f(obj.0, &mut v) };
    hr(call, h, "read", what)?;
    Ok(v)
}

fn get_bool(obj: &Com, slot: usize, call: &'static str, what: &str) -> Result<bool, FirewallError> {
    type F = unsafe extern "system" fn(*mut c_void, *mut i16) -> HRESULT;
    // SAFETY: `slot` is a get_* method with one VARIANT_BOOL out parameter on this interface.
    let f: F = unsafe { std::mem::transmute::<usize, F>(obj.slot(slot)) };
    let mut v = 0i16;
    // SAFETY: `obj` is live; `v` is a valid out pointer.
    let h = unsafe { f(obj.0, &mut v) };
    hr(call, h, "read", what)?;
    Ok(v != 0)
}

/// Reads what [`crate::firewall::verify`] needs: active profiles, whether the firewall is on
/// for each, `LocalPolicyModifyState`, and `Enabled`/`Action`/`Profiles` of each named rule.
pub fn read_state(names: &[String]) -> Result<crate::firewall::FirewallState, FirewallError> {
    use crate::firewall::{FirewallState, ObservedRule, PROFILES};
    let _com = ComInit::new();
    let policy = create(&NetFwPolicy2, &IID_INETFWPOLICY2, "HNetCfg.FwPolicy2")?;
    let current_profiles = get_i32(
        &policy,
        POLICY2_GET_CURRENT_PROFILE_TYPES,
        "INetFwPolicy2::get_CurrentProfileTypes",
        "the active profiles",
    )?;
    let mut enabled = Vec::new();
    for (bit, name) in PROFILES {
        type F = unsafe extern "system" fn(*mut c_void, i32, *mut i16) -> HRESULT;
        // SAFETY: slot 8 of INetFwPolicy2 is get_FirewallEnabled(NET_FW_PROFILE_TYPE2, VARIANT_BOOL*).
        let f: F =
            unsafe { std::mem::transmute::<usize, F>(policy.slot(POLICY2_GET_FIREWALL_ENABLED)) };
        let mut v = 0i16;
        // SAFETY: `policy` is live; `v` is a valid out pointer.
        let h = unsafe { f(policy.0, bit, &mut v) };
        hr("INetFwPolicy2::get_FirewallEnabled", h, "read", name)?;
        enabled.push((bit, v != 0));
    }
    let modify_state = get_i32(
        &policy,
        POLICY2_GET_LOCAL_POLICY_MODIFY_STATE,
        "INetFwPolicy2::get_LocalPolicyModifyState",
        "the local policy state",
    )?;
    let list = rules_collection()?;
    let mut rules = Vec::new();
    for name in names {
        type F = unsafe extern "system" fn(*mut c_void, BSTR, *mut *mut c_void) -> HRESULT;
        // SAFETY: slot 10 of INetFwRules is Item(BSTR, INetFwRule**).
        let f: F = unsafe { std::mem::transmute::<usize, F>(list.slot(RULES_ITEM)) };
        let b = Bstr::new(name);
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: `list` is live; `b` is a valid BSTR; `p` is a valid out pointer.
        let h = unsafe { f(list.0, b.0, &mut p) };
        if h < 0 || p.is_null() {
            continue;
        }
        let rule = Com(p);
        rules.push(ObservedRule {
            name: name.clone(),
            enabled: get_bool(&rule, RULE_GET_ENABLED, "INetFwRule::get_Enabled", name)?,
            blocks: get_i32(&rule, RULE_GET_ACTION, "INetFwRule::get_Action", name)? == 0,
            profiles: get_i32(&rule, RULE_GET_PROFILES, "INetFwRule::get_Profiles", name)?,
        });
    }
    Ok(FirewallState {
        current_profiles,
        enabled,
        modify_state,
        rules,
    })
}

/// Each read [`read_state`] makes, made separately and reported one by one (for the self-test:
/// which of them this host implements). Reads only; changes nothing.
pub fn probe_reads() -> Vec<(&'static str, Result<String, FirewallError>)> {
    use crate::firewall::PROFILES;
    let _com = ComInit::new();
    let mut out: Vec<(&'static str, Result<String, FirewallError>)> = Vec::new();
    let policy = match create(&NetFwPolicy2, &IID_INETFWPOLICY2, "HNetCfg.FwPolicy2") {
        Ok(p) => p,
        Err(e) => {
            out.push(("CoCreateInstance(HNetCfg.FwPolicy2)", Err(e)));
            return out;
        }
    };
    out.push((
        "CoCreateInstance(HNetCfg.FwPolicy2)",
        Ok("INetFwPolicy2".into()),
    ));
    out.push((
        "INetFwPolicy2::get_CurrentProfileTypes",
        get_i32(
            &policy,
            POLICY2_GET_CURRENT_PROFILE_TYPES,
            "INetFwPolicy2::get_CurrentProfileTypes",
            "the active profiles",
        )
        .map(|v| format!("{v:#x}")),
    ));
    for (bit, name) in PROFILES {
        type F = unsafe extern "system" fn(*mut c_void, i32, *mut i16) -> HRESULT;
        // SAFETY: slot 8 of INetFwPolicy2 is get_FirewallEnabled(NET_FW_PROFILE_TYPE2, VARIANT_BOOL*).
        let f: F =
            unsafe { std::mem::transmute::<usize, F>(policy.slot(POLICY2_GET_FIREWALL_ENABLED)) };
        let mut v = 0i16;
        // SAFETY: `policy` is live; `v` is a valid out pointer.
        let h = unsafe { f(policy.0, bit, &mut v) };
        out.push((
            "INetFwPolicy2::get_FirewallEnabled",
            hr("INetFwPolicy2::get_FirewallEnabled", h, "read", name)
                .map(|()| format!("{name}: {}", v != 0)),
        ));
    }
    out.push((
        "INetFwPolicy2::get_LocalPolicyModifyState",
        get_i32(
            &policy,
            POLICY2_GET_LOCAL_POLICY_MODIFY_STATE,
            "INetFwPolicy2::get_LocalPolicyModifyState",
            "the local policy state",
        )
        .map(|v| v.to_string()),
    ));
    drop(policy);
    out.push((
        "INetFwPolicy2::get_Rules + INetFwRules::Item",
        rule_exists("Stockade selftest: no such rule")
            .map(|found| format!("a missing rule found: {found}")),
    ));
    out
}

/// True if a rule with this name exists.
pub fn rule_exists(name: &str) -> Result<bool, FirewallError> {
    let _com = ComInit::new();
    let list = rules_collection()?;
    type F = unsafe extern "system" fn(*mut c_void, BSTR, *mut *mut c_void) -> HRESULT;
    // SAFETY: slot 10 of INetFwRules is Item(BSTR, INetFwRule**).
    let f: F = unsafe { std::mem::transmute::<usize, F>(list.slot(RULES_ITEM)) };
    let b = Bstr::new(name);
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: `list` is live; `b` is a valid BSTR; `p` is a valid out pointer.
    let h = unsafe { f(list.0, b.0, &mut p) };
    if h >= 0 && !p.is_null() {
        drop(Com(p));
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Removes rules by name (missing ones are fine).
pub fn remove_rules(names: &[String]) -> Result<(), FirewallError> {
    let _com = ComInit::new();
    let list = rules_collection()?;
    for n in names {
        type F = unsafe extern "system" fn(*mut c_void, BSTR) -> HRESULT;
        // SAFETY: slot 9 of INetFwRules is Remove(BSTR).
        let f: F = unsafe { std::mem::transmute::<usize, F>(list.slot(RULES_REMOVE)) };
        let b = Bstr::new(n);
        // SAFETY: `list` is live and `b` is a valid BSTR.
        let h = unsafe { f(list.0, b.0) };
        hr("INetFwRules::Remove", h, "remove", n)?;
    }
    Ok(())
}
