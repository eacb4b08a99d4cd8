//! Windows Filtering Platform through `fwpuclnt.dll`: an engine session, Stockade's sublayer, the
//! filters of [`crate::wfp`], read back by key, deleted. Applies plans only; what a filter
//! matches is decided by the plan (`crate::wfp::offline_filters`).
//!
//! Setup adds the filters persistently ([`Engine::open`], `FWPM_FILTER_FLAG_PERSISTENT`); runs
//! verify them ([`verify`]); the self-test uses a dynamic session (`FWPM_SESSION_FLAG_DYNAMIC`),
//! whose objects Windows deletes when the session closes.

use super::{check, wide, Ret, Win32Error};
use crate::wfp::{Action, Condition, Layer, WfpFilter};
use core::ffi::c_void;
use std::net::IpAddr;
use windows_sys::core::GUID;
use windows_sys::Win32::Foundation::{
    LocalFree, FWP_E_FILTER_NOT_FOUND, FWP_E_SUBLAYER_NOT_FOUND, HANDLE,
};
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::{
    FwpmEngineClose0, FwpmEngineOpen0, FwpmFilterAdd0, FwpmFilterDeleteByKey0, FwpmFilterGetByKey0,
    FwpmFreeMemory0, FwpmSubLayerAdd0, FwpmSubLayerDeleteByKey0, FwpmSubLayerGetByKey0,
    FWPM_ACTION0, FWPM_CONDITION_ALE_USER_ID, FWPM_CONDITION_IP_PROTOCOL,
    FWPM_CONDITION_IP_REMOTE_ADDRESS, FWPM_CONDITION_IP_REMOTE_PORT, FWPM_FILTER0,
    FWPM_FILTER_CONDITION0, FWPM_FILTER_FLAG_PERSISTENT, FWPM_LAYER_ALE_AUTH_CONNECT_V4,
    FWPM_LAYER_ALE_AUTH_CONNECT_V6, FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4,
    FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6, FWPM_SESSION0, FWPM_SESSION_FLAG_DYNAMIC, FWPM_SUBLAYER0,
    FWPM_SUBLAYER_FLAG_PERSISTENT, FWP_ACTION_BLOCK, FWP_ACTION_PERMIT, FWP_BYTE_BLOB,
    FWP_CONDITION_VALUE0, FWP_MATCH_EQUAL, FWP_SECURITY_DESCRIPTOR_TYPE, FWP_UINT16, FWP_UINT8,
    FWP_V4_ADDR_AND_MASK, FWP_V4_ADDR_MASK, FWP_V6_ADDR_AND_MASK, FWP_V6_ADDR_MASK, FWP_VALUE0,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;

/// `RPC_C_AUTHN_DEFAULT` (rpcdce.h): let Windows pick the authentication service.
const RPC_C_AUTHN_DEFAULT: u32 = 0xFFFF_FFFF;

/// Why a WFP operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {what} in the Windows Filtering Platform: {source}; the Base Filtering Engine service must run and the caller must be an administrator")]
pub struct WfpError {
    /// What was attempted.
    pub action: &'static str,
    /// The object.
    pub what: String,
    /// The failed call.
    #[source]
    pub source: Win32Error,
}

fn err<'a>(action: &'static str, what: &'a str) -> impl FnOnce(Win32Error) -> WfpError + 'a {
    move |source| WfpError {
        action,
        what: what.to_string(),
        source,
    }
}

/// A filter as read back from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    /// Its layer, if it is one of the four Stockade uses.
    pub layer: Option<Layer>,
    /// Its weight if stored as `FWP_UINT8`.
    pub weight: Option<u8>,
    /// Its action if permit/block.
    pub action: Option<Action>,
    /// Number of conditions.
    pub conditions: u32,
    /// True if the first condition is `ALE_USER_ID`.
    pub user_condition_first: bool,
}

impl ReadBack {
    /// True if this is what `f` asked for.
    pub fn matches(&self, f: &WfpFilter) -> bool {
        self.layer == Some(f.layer)
            && self.weight == Some(f.weight)
            && self.action == Some(f.action)
            && self.conditions as usize == f.conditions.len()
            && self.user_condition_first
                == matches!(f.conditions.first(), Some(Condition::UserSddl(_)))
    }
}

/// An open engine session, closed on drop.
pub struct Engine(HANDLE);

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: the handle came from FwpmEngineOpen0 and is closed exactly once here.
        unsafe { FwpmEngineClose0(self.0) };
    }
}

/// A random GUID (for sublayer and filter keys).
pub fn random_guid() -> Result<GUID, Win32Error> {
    Ok(GUID::from_u128(u128::from_le_bytes(
        super::random::bytes::<16>()?,
    )))
}

fn layer_key(l: Layer) -> GUID {
    match l {
        Layer::ConnectV4 => FWPM_LAYER_ALE_AUTH_CONNECT_V4,
        Layer::ConnectV6 => FWPM_LAYER_ALE_AUTH_CONNECT_V6,
        Layer::RecvAcceptV4 => FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4,
        Layer::RecvAcceptV6 => FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6,
    }
}

fn same(a: &GUID, b: &GUID) -> bool {
    a.data1 == b.data1 && a.data2 == b.data2 && a.data3 == b.data3 && a.data4 == b.data4
}

/// A self-relative security descriptor from SDDL, freed on drop.
struct Sd(PSECURITY_DESCRIPTOR, u32);

impl Drop for Sd {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW (LocalAlloc),
        // freed once here.
        unsafe { LocalFree(self.0) };
    }
}

fn sd_from_sddl(sddl: &str) -> Result<Sd, Win32Error> {
    let w = wide(sddl);
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    let mut len = 0u32;
    // SAFETY: `w` is NUL-terminated; `sd` and `len` are valid out pointers.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            w.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            &mut len,
        )
    };
    check(
        "ConvertStringSecurityDescriptorToSecurityDescriptorW",
        Ret::Bool(ok),
    )?;
    Ok(Sd(sd, len))
}

/// The values one filter's conditions point at; must outlive `FwpmFilterAdd0`. Boxed so that
/// the pointers taken into them stay valid while the vectors grow.
#[derive(Default)]
#[allow(clippy::vec_box)]
struct CondStore {
    sds: Vec<Sd>,
    blobs: Vec<Box<FWP_BYTE_BLOB>>,
    v4: Vec<Box<FWP_V4_ADDR_AND_MASK>>,
    v6: Vec<Box<FWP_V6_ADDR_AND_MASK>>,
}

fn condition(c: &Condition, store: &mut CondStore) -> Result<FWPM_FILTER_CONDITION0, Win32Error> {
    // SAFETY: plain data; all-zero is a valid (FWP_EMPTY) condition value.
    let mut value: FWP_CONDITION_VALUE0 = unsafe { std::mem::zeroed() };
    let field = match c {
        Condition::UserSddl(sddl) => {
            let sd = sd_from_sddl(sddl)?;
            let mut blob = Box::new(FWP_BYTE_BLOB {
                size: sd.1,
                data: sd.0.cast(),
            });
            value.r#type = FWP_SECURITY_DESCRIPTOR_TYPE;
            value.Anonymous.sd = &mut *blob;
            store.sds.push(sd);
            store.blobs.push(blob);
            FWPM_CONDITION_ALE_USER_ID
        }
        Condition::RemotePrefix(IpAddr::V4(a), p) => {
            let p = u32::from((*p).min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            // Host byte order, as FWP_V4_ADDR_AND_MASK documents.
            let mut m = Box::new(FWP_V4_ADDR_AND_MASK {
                addr: u32::from(*a),
                mask,
            });
            value.r#type = FWP_V4_ADDR_MASK;
            value.Anonymous.v4AddrMask = &mut *m;
            store.v4.push(m);
            FWPM_CONDITION_IP_REMOTE_ADDRESS
        }
        Condition::RemotePrefix(IpAddr::V6(a), p) => {
            let mut m = Box::new(FWP_V6_ADDR_AND_MASK {
                addr: a.octets(),
                prefixLength: (*p).min(128),
            });
            value.r#type = FWP_V6_ADDR_MASK;
            value.Anonymous.v6AddrMask = &mut *m;
            store.v6.push(m);
            FWPM_CONDITION_IP_REMOTE_ADDRESS
        }
        Condition::RemotePort(port) => {
            value.r#type = FWP_UINT16;
            value.Anonymous.uint16 = *port;
            FWPM_CONDITION_IP_REMOTE_PORT
        }
        Condition::Protocol(p) => {
            value.r#type = FWP_UINT8;
            value.Anonymous.uint8 = *p;
            FWPM_CONDITION_IP_PROTOCOL
        }
    };
    Ok(FWPM_FILTER_CONDITION0 {
        fieldKey: field,
        matchType: FWP_MATCH_EQUAL,
        conditionValue: value,
    })
}

impl Engine {
    /// Opens a dynamic session: every object added through it is deleted when it closes.
    pub fn open_dynamic() -> Result<Engine, WfpError> {
        Engine::open_with(FWPM_SESSION_FLAG_DYNAMIC)
    }

    /// Opens an ordinary session (persistent objects added through it stay).
    pub fn open() -> Result<Engine, WfpError> {
        Engine::open_with(0)
    }

    fn open_with(flags: u32) -> Result<Engine, WfpError> {
        // SAFETY: plain data; all-zero is a valid FWPM_SESSION0 (no name, no timeout).
        let mut session: FWPM_SESSION0 = unsafe { std::mem::zeroed() };
        session.flags = flags;
        let mut h: HANDLE = std::ptr::null_mut();
        // SAFETY: local engine (null server name), default authentication, no identity;
        // `session` and `h` are valid for the call.
        let rc = unsafe {
            FwpmEngineOpen0(
                std::ptr::null(),
                RPC_C_AUTHN_DEFAULT,
                std::ptr::null(),
                &session,
                &mut h,
            )
        };
        check("FwpmEngineOpen0", Ret::Code(rc)).map_err(err("open", "a session"))?;
        if h.is_null() {
            return Err(WfpError {
                action: "open",
                what: "a session".into(),
                source: Win32Error::new("FwpmEngineOpen0 (null handle)", 0),
            });
        }
        Ok(Engine(h))
    }

    /// Adds a sublayer named `name` with key `key` (persistent: survives reboots and sessions).
    pub fn add_sublayer(&self, key: &GUID, name: &str, persistent: bool) -> Result<(), WfpError> {
        let mut wname = wide(name);
        // SAFETY: plain data; all-zero is a valid FWPM_SUBLAYER0 (no provider, weight 0).
        let mut sl: FWPM_SUBLAYER0 = unsafe { std::mem::zeroed() };
        sl.subLayerKey = *key;
        if persistent {
            sl.flags = FWPM_SUBLAYER_FLAG_PERSISTENT;
        }
        sl.displayData.name = wname.as_mut_ptr();
        sl.weight = 0x100;
        // SAFETY: `self.0` is an open engine; `sl` and `wname` live through the call; no SD.
        let rc = unsafe { FwpmSubLayerAdd0(self.0, &sl, std::ptr::null_mut()) };
        check("FwpmSubLayerAdd0", Ret::Code(rc)).map_err(err("add", name))
    }

    /// True if the sublayer exists.
    pub fn sublayer_exists(&self, key: &GUID) -> Result<bool, WfpError> {
        let mut p: *mut FWPM_SUBLAYER0 = std::ptr::null_mut();
        // SAFETY: `self.0` is an open engine; `key` and `p` are valid for the call.
        let rc = unsafe { FwpmSubLayerGetByKey0(self.0, key, &mut p) };
        if rc == FWP_E_SUBLAYER_NOT_FOUND as u32 {
            return Ok(false);
        }
        check("FwpmSubLayerGetByKey0", Ret::Code(rc)).map_err(err("read", "the sublayer"))?;
        let mut pv: *mut c_void = p.cast();
        // SAFETY: `pv` was allocated by the engine for this caller and is freed once.
        unsafe { FwpmFreeMemory0(&mut pv) };
        Ok(true)
    }

    /// Deletes a sublayer (its filters must be gone).
    pub fn delete_sublayer(&self, key: &GUID) -> Result<(), WfpError> {
        // SAFETY: `self.0` is an open engine; `key` is valid for the call.
        let rc = unsafe { FwpmSubLayerDeleteByKey0(self.0, key) };
        check("FwpmSubLayerDeleteByKey0", Ret::Code(rc)).map_err(err("delete", "the sublayer"))
    }

    /// Adds `f` to `sublayer` under a new random key (not persistent); returns the key.
    pub fn add_filter(&self, sublayer: &GUID, f: &WfpFilter) -> Result<GUID, WfpError> {
        let key = random_guid().map_err(err("make a key for", &f.name))?;
        self.add_filter_keyed(sublayer, f, &key, false)?;
        Ok(key)
    }

    /// Adds `f` to `sublayer` under `key`.
    pub fn add_filter_keyed(
        &self,
        sublayer: &GUID,
        f: &WfpFilter,
        key: &GUID,
        persistent: bool,
    ) -> Result<(), WfpError> {
        let key = *key;
        let mut store = CondStore::default();
        let mut conds = f
            .conditions
            .iter()
            .map(|c| condition(c, &mut store))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err("build the conditions of", &f.name))?;
        let mut wname = wide(&f.name);
        // SAFETY: plain data; all-zero is a valid FWPM_FILTER0 (no provider, no context).
        let mut filter: FWPM_FILTER0 = unsafe { std::mem::zeroed() };
        filter.filterKey = key;
        if persistent {
            filter.flags = FWPM_FILTER_FLAG_PERSISTENT;
        }
        filter.displayData.name = wname.as_mut_ptr();
        filter.layerKey = layer_key(f.layer);
        filter.subLayerKey = *sublayer;
        // SAFETY: plain data; all-zero is a valid FWP_VALUE0.
        let mut weight: FWP_VALUE0 = unsafe { std::mem::zeroed() };
        weight.r#type = FWP_UINT8;
        weight.Anonymous.uint8 = f.weight;
        filter.weight = weight;
        filter.numFilterConditions = conds.len() as u32;
        filter.filterCondition = conds.as_mut_ptr();
        // SAFETY: plain data; all-zero is a valid FWPM_ACTION0 before its type is set.
        let mut action: FWPM_ACTION0 = unsafe { std::mem::zeroed() };
        action.r#type = match f.action {
            Action::Permit => FWP_ACTION_PERMIT,
            Action::Block => FWP_ACTION_BLOCK,
        };
        filter.action = action;
        let mut id = 0u64;
        // SAFETY: `self.0` is an open engine; `filter` and everything it points at (`conds`,
        // `store`, `wname`) live through the call; no SD for the filter object itself.
        let rc = unsafe { FwpmFilterAdd0(self.0, &filter, std::ptr::null_mut(), &mut id) };
        check("FwpmFilterAdd0", Ret::Code(rc)).map_err(err("add", &f.name))?;
        drop(store);
        Ok(())
    }

    /// Reads a filter back by key; `None` if no such filter.
    pub fn read_filter(&self, key: &GUID) -> Result<Option<ReadBack>, WfpError> {
        let mut p: *mut FWPM_FILTER0 = std::ptr::null_mut();
        // SAFETY: `self.0` is an open engine; `key` and `p` are valid for the call.
        let rc = unsafe { FwpmFilterGetByKey0(self.0, key, &mut p) };
        if rc == FWP_E_FILTER_NOT_FOUND as u32 {
            return Ok(None);
        }
        check("FwpmFilterGetByKey0", Ret::Code(rc)).map_err(err("read", "a filter"))?;
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: FwpmFilterGetByKey0 succeeded: `p` points at a filter the engine allocated.
        let f = unsafe { &*p };
        let layer = [
            Layer::ConnectV4,
            Layer::ConnectV6,
            Layer::RecvAcceptV4,
            Layer::RecvAcceptV6,
        ]
        .into_iter()
        .find(|l| same(&layer_key(*l), &f.layerKey));
        let weight = if f.weight.r#type == FWP_UINT8 {
            // SAFETY: the union member read is the one `r#type` says is stored.
            Some(unsafe { f.weight.Anonymous.uint8 })
        } else {
            None
        };
        let action = match f.action.r#type {
            FWP_ACTION_PERMIT => Some(Action::Permit),
            FWP_ACTION_BLOCK => Some(Action::Block),
            _ => None,
        };
        let user_condition_first = f.numFilterConditions > 0
            && !f.filterCondition.is_null()
            // SAFETY: the filter has at least one condition at `filterCondition`.
            && same(unsafe { &(*f.filterCondition).fieldKey }, &FWPM_CONDITION_ALE_USER_ID);
        let out = ReadBack {
            layer,
            weight,
            action,
            conditions: f.numFilterConditions,
            user_condition_first,
        };
        let mut pv: *mut c_void = p.cast();
        // SAFETY: `pv` was allocated by the engine for this caller and is freed once.
        unsafe { FwpmFreeMemory0(&mut pv) };
        Ok(Some(out))
    }

    /// Deletes a filter by key.
    pub fn delete_filter(&self, key: &GUID) -> Result<(), WfpError> {
        // SAFETY: `self.0` is an open engine; `key` is valid for the call.
        let rc = unsafe { FwpmFilterDeleteByKey0(self.0, key) };
        check("FwpmFilterDeleteByKey0", Ret::Code(rc)).map_err(err("delete", "a filter"))
    }
}

/// The key of a filter name ([`crate::wfp::filter_key`]) as a GUID.
pub fn key_of(name: &str) -> GUID {
    GUID::from_u128(crate::wfp::filter_key(name))
}

/// Stockade's sublayer key.
pub fn sublayer_key() -> GUID {
    GUID::from_u128(crate::wfp::SUBLAYER_KEY)
}

/// Reads every wanted filter back by key; returns one line per filter that is missing or differs
/// from the plan (empty: all in place).
pub fn verify(wanted: &[WfpFilter]) -> Result<Vec<String>, WfpError> {
    let engine = Engine::open()?;
    let mut problems = Vec::new();
    if !engine.sublayer_exists(&sublayer_key())? {
        problems.push("Stockade's WFP sublayer is missing".to_string());
    }
    for f in wanted {
        match engine.read_filter(&key_of(&f.name))? {
            Some(back) if back.matches(f) => {}
            Some(back) => problems.push(format!("WFP filter {:?} differs: {back:?}", f.name)),
            None => problems.push(format!("WFP filter {:?} is missing", f.name)),
        }
    }
    Ok(problems)
}
