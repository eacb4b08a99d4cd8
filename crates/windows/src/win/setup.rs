//! `stockade setup` / `stockade uninstall` for the elevated tier: observe the machine, compute the
//! steps with [`crate::elevated`], perform them, write the installation record.

use super::accounts::{self, AccountError};
use super::firewall::{self, FirewallError};
use super::{check, random, secrets, Ret, Win32Error};
use crate::elevated::{
    caller_tag, drift, password_from_random, setup_steps, uninstall_steps, wanted_rules,
    wanted_wfp, Accounts, Drift, InstallRecord, Observed, SetupStep, UninstallStep, GROUP,
    INSTALL_VERSION,
};
use crate::sid::Sid;
use std::collections::BTreeMap;
use std::os::windows::io::AsRawHandle;
use std::path::PathBuf;

/// A failed setup or uninstall step.
#[derive(Debug, thiserror::Error)]
pub enum WinSetupError {
    /// Not running elevated.
    #[error("setup and uninstall need administrator rights; re-run elevated (the CLI re-launches itself through UAC)")]
    NotElevated,
    /// An account or group step failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// A firewall step failed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// A WFP step failed.
    #[error(transparent)]
    Wfp(#[from] super::wfp::WfpError),
    /// Randomness, DPAPI or elevation check failed.
    #[error("{what}: {source}")]
    System {
        /// What was being done.
        what: &'static str,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// A state file could not be read or written.
    #[error("cannot {action} {path}: {reason}")]
    File {
        /// read / write / remove.
        action: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An ACE could not be revoked on uninstall.
    #[error(transparent)]
    Acl(#[from] super::acl::AclError),
    /// Steps kept coming back (the machine changes under setup).
    #[error("setup did not converge after 3 rounds; remaining steps: {0:?}")]
    NoConvergence(Vec<SetupStep>),
}

/// What setup did.
#[derive(Debug, Clone)]
pub struct SetupReport {
    /// Steps performed, in order (empty: already installed).
    pub performed: Vec<SetupStep>,
    /// Differences found between the previous record and the machine (repaired).
    pub drift: Vec<Drift>,
    /// The record written.
    pub record: InstallRecord,
}

fn env_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(fallback))
        .join("Stockade")
}

/// `%ProgramData%\Stockade\install-<caller tag>.json`: one record per caller (each caller has
/// its own pair of sandbox accounts).
pub fn record_path(caller: &Sid) -> PathBuf {
    env_dir("ProgramData", r"C:\ProgramData").join(format!("install-{}.json", caller_tag(caller)))
}

/// The user this process runs as: the caller whose accounts setup, uninstall and runs use. (An
/// elevated setup through UAC keeps the user of a split-token administrator; a setup run with
/// another administrator's credentials sets up that administrator's accounts.)
pub fn current_caller() -> Result<Sid, WinSetupError> {
    use std::os::windows::io::AsHandle;
    let sys = |e: String| WinSetupError::System {
        what: "reading this process's user",
        source: Win32Error {
            call: "GetTokenInformation(TokenUser)",
            code: 0,
            message: e,
        },
    };
    let tok = super::token::own_token().map_err(|e| sys(e.to_string()))?;
    super::sid::token_user(tok.as_handle()).map_err(|e| sys(e.to_string()))
}

/// `%LOCALAPPDATA%\Stockade\accounts.dpapi`: DPAPI-protected JSON of account passwords.
pub fn secrets_path() -> PathBuf {
    env_dir("LOCALAPPDATA", r"C:\ProgramData").join("accounts.dpapi")
}

fn file_err(action: &'static str, path: &std::path::Path, reason: impl ToString) -> WinSetupError {
    WinSetupError::File {
        action,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// `%LOCALAPPDATA%\Stockade\elevated-acl-paths.json`: paths that received group ACEs in runs.
pub fn elevated_acl_paths_file() -> PathBuf {
    env_dir("LOCALAPPDATA", r"C:\ProgramData").join("elevated-acl-paths.json")
}

/// Paths that received group ACEs during runs (for uninstall).
pub fn elevated_acl_paths() -> Vec<crate::path::WinPath> {
    std::fs::read_to_string(elevated_acl_paths_file())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Adds paths to the run ACL list (written before the ACEs, so uninstall always finds them).
pub fn record_elevated_acl_paths(
    paths: impl IntoIterator<Item = crate::path::WinPath>,
) -> Result<(), WinSetupError> {
    let mut all = elevated_acl_paths();
    let before = all.len();
    for p in paths {
        if !all.contains(&p) {
            all.push(p);
        }
    }
    if all.len() == before {
        return Ok(());
    }
    let f = elevated_acl_paths_file();
    if let Some(d) = f.parent() {
        std::fs::create_dir_all(d).map_err(|e| file_err("create", d, e))?;
    }
    let text = serde_json::to_string_pretty(&all).map_err(|e| file_err("serialize", &f, e))?;
    std::fs::write(&f, text).map_err(|e| file_err("write", &f, e))
}

/// Reads this caller's installation record, if any.
pub fn load_record() -> Result<Option<InstallRecord>, WinSetupError> {
    load_record_for(&current_caller()?)
}

fn load_record_for(caller: &Sid) -> Result<Option<InstallRecord>, WinSetupError> {
    let p = record_path(caller);
    match std::fs::read_to_string(&p) {
        Ok(t) => match serde_json::from_str::<InstallRecord>(&t) {
            Ok(r) if r.caller == *caller => Ok(Some(r)),
            Ok(r) => Err(file_err(
                "use",
                &p,
                format!("it belongs to {}, not to {caller}", r.caller),
            )),
            Err(e) => Err(file_err("parse", &p, e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_err("read", &p, e)),
    }
}

fn save_record(r: &InstallRecord) -> Result<(), WinSetupError> {
    let p = record_path(&r.caller);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| file_err("create", d, e))?;
    }
    let text = serde_json::to_string_pretty(r).map_err(|e| file_err("serialize", &p, e))?;
    std::fs::write(&p, text).map_err(|e| file_err("write", &p, e))
}

/// The stored account passwords (decrypted).
pub fn load_passwords() -> Result<BTreeMap<String, String>, WinSetupError> {
    let p = secrets_path();
    let blob = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(file_err("read", &p, e)),
    };
    let plain = secrets::unprotect(&blob).map_err(|source| WinSetupError::System {
        what: "decrypting the stored passwords",
        source,
    })?;
    serde_json::from_slice(&plain).map_err(|e| file_err("parse", &p, e))
}

fn save_passwords(m: &BTreeMap<String, String>) -> Result<(), WinSetupError> {
    let p = secrets_path();
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| file_err("create", d, e))?;
    }
    let plain = serde_json::to_vec(m).map_err(|e| file_err("serialize", &p, e))?;
    let blob = secrets::protect(&plain).map_err(|source| WinSetupError::System {
        what: "encrypting the passwords",
        source,
    })?;
    std::fs::write(&p, blob).map_err(|e| file_err("write", &p, e))
}

/// True if this process runs elevated.
pub fn is_elevated() -> Result<bool, WinSetupError> {
    use windows_sys::Win32::Security::{GetTokenInformation, TokenElevation, TOKEN_ELEVATION};
    let tok = super::token::own_token().map_err(|e| WinSetupError::System {
        what: "opening the process token",
        source: Win32Error {
            call: "OpenProcessToken",
            code: 0,
            message: e.to_string(),
        },
    })?;
    let mut e = TOKEN_ELEVATION { TokenIsElevated: 0 };
    let mut len = 0u32;
    // SAFETY: `tok` is open with TOKEN_QUERY; `e` is writable and correctly sized.
    let ok = unsafe {
        GetTokenInformation(
            tok.as_raw_handle(),
            TokenElevation,
            std::ptr::addr_of_mut!(e).cast(),
            std::mem::size_of::<TOKEN_ELEVATION>() as u32,
            &mut len,
        )
    };
    check("GetTokenInformation(TokenElevation)", Ret::Bool(ok)).map_err(|source| {
        WinSetupError::System {
            what: "checking elevation",
            source,
        }
    })?;
    Ok(e.TokenIsElevated != 0)
}

/// What is on the machine now.
pub fn observe(
    names: &Accounts,
    record: Option<&InstallRecord>,
    ports: &[u16],
) -> Result<Observed, WinSetupError> {
    let mut o = Observed {
        group_sid: accounts::lookup_sid(GROUP)?,
        ..Observed::default()
    };
    for name in names.both() {
        if let Some(s) = accounts::lookup_sid(name)? {
            o.accounts.insert(name.to_string(), s);
        }
        if accounts::is_hidden(name) {
            o.hidden.insert(name.to_string());
        }
    }
    if o.group_sid.is_some() {
        let (ours, others) = accounts::members(GROUP)?
            .into_iter()
            .partition(|m| names.both().contains(&m.as_str()));
        o.group_members = ours;
        o.other_group_members = others;
    }
    let mut rule_names: Vec<String> = wanted_rules(names, &o.accounts, ports)
        .into_iter()
        .map(|r| r.name)
        .collect();
    if let Some(r) = record {
        rule_names.extend(r.firewall_rules.iter().cloned());
    }
    rule_names.sort();
    rule_names.dedup();
    for n in rule_names {
        if firewall::rule_exists(&n)? {
            o.firewall_rules.insert(n);
        }
    }
    o.stored_passwords = load_passwords().unwrap_or_default().into_keys().collect();
    let mut filter_names: Vec<String> = wanted_wfp(names, &o.accounts, ports)
        .into_iter()
        .map(|f| f.name)
        .collect();
    if let Some(r) = record {
        filter_names.extend(r.wfp_filters.iter().cloned());
    }
    filter_names.sort();
    filter_names.dedup();
    // Before the accounts exist (and with nothing recorded) no filter is wanted yet, so an
    // engine that cannot be opened is reported only once filters are (when setup adds them).
    let engine = match super::wfp::Engine::open() {
        Ok(e) => e,
        Err(_) if filter_names.is_empty() => return Ok(o),
        Err(e) => return Err(e.into()),
    };
    o.wfp_sublayer = engine.sublayer_exists(&super::wfp::sublayer_key())?;
    for n in filter_names {
        if engine.read_filter(&super::wfp::key_of(&n))?.is_some() {
            o.wfp_filters.insert(n);
        }
    }
    Ok(o)
}

/// The record describing `observed` (needs the group to exist).
fn candidate(
    caller: &Sid,
    names: &Accounts,
    observed: &Observed,
    ports: &[u16],
    previous: Option<&InstallRecord>,
) -> Option<InstallRecord> {
    Some(InstallRecord {
        version: INSTALL_VERSION,
        caller: caller.clone(),
        group_sid: observed.group_sid.clone()?,
        accounts: observed.accounts.clone(),
        firewall_rules: wanted_rules(names, &observed.accounts, ports)
            .into_iter()
            .map(|r| r.name)
            .collect(),
        allowed_loopback_ports: ports.to_vec(),
        acl_paths: previous.map(|r| r.acl_paths.clone()).unwrap_or_default(),
        wfp_filters: wanted_wfp(names, &observed.accounts, ports)
            .into_iter()
            .map(|f| f.name)
            .collect(),
    })
}

fn new_password() -> Result<String, WinSetupError> {
    random::bytes::<32>()
        .map(password_from_random)
        .map_err(|source| WinSetupError::System {
            what: "generating a password",
            source,
        })
}

/// Deletes a WFP filter by the key of its name; one that is already gone is fine.
fn remove_wfp_filter(name: &str) -> Result<(), WinSetupError> {
    let engine = super::wfp::Engine::open()?;
    let key = super::wfp::key_of(name);
    if engine.read_filter(&key)?.is_some() {
        engine.delete_filter(&key)?;
    }
    Ok(())
}

/// Brings the machine to the installed state (idempotent).
pub fn setup(ports: &[u16]) -> Result<SetupReport, WinSetupError> {
    if !is_elevated()? {
        return Err(WinSetupError::NotElevated);
    }
    let caller = current_caller()?;
    let names = Accounts::for_caller(&caller);
    let previous = load_record_for(&caller)?;
    let first = observe(&names, previous.as_ref(), ports)?;
    let found_drift = previous
        .as_ref()
        .map(|r| drift(r, &first))
        .unwrap_or_default();
    let mut performed = Vec::new();
    let mut observed = first;
    // Rules are replaced only when the record they were made for no longer matches; after a
    // round, the state just produced is that record.
    let mut basis = previous.clone();
    for _round in 0..3 {
        let work: Vec<SetupStep> = setup_steps(&names, basis.as_ref(), &observed, ports)
            .into_iter()
            .filter(|s| *s != SetupStep::WriteRecord)
            .collect();
        if work.is_empty() {
            break;
        }
        for step in &work {
            match step {
                SetupStep::CreateGroup(g) => {
                    accounts::create_group(g, "Stockade sandbox accounts")?
                }
                SetupStep::CreateAccount(n) | SetupStep::ResetPassword(n) => {
                    let pw = new_password()?;
                    if matches!(step, SetupStep::CreateAccount(_)) {
                        accounts::create_user(n, &pw, "Stockade sandbox account")?;
                    } else {
                        accounts::set_password(n, &pw)?;
                    }
                    let mut all = load_passwords().unwrap_or_default();
                    all.insert(n.clone(), pw);
                    save_passwords(&all)?;
                }
                SetupStep::AddToGroup(n) => accounts::add_member(GROUP, n)?,
                SetupStep::HideAccount(n) => accounts::hide(n)?,
                SetupStep::RemoveFirewallRule(n) => {
                    firewall::remove_rules(std::slice::from_ref(n))?
                }
                SetupStep::AddFirewallRule(n) => {
                    let rules: Vec<_> = wanted_rules(&names, &observed.accounts, ports)
                        .into_iter()
                        .filter(|r| r.name == *n)
                        .collect();
                    firewall::add_rules(&rules)?;
                }
                SetupStep::AddWfpSublayer => super::wfp::Engine::open()?.add_sublayer(
                    &super::wfp::sublayer_key(),
                    "Stockade sandbox accounts",
                    true,
                )?,
                SetupStep::RemoveWfpFilter(n) => remove_wfp_filter(n)?,
                SetupStep::AddWfpFilter(n) => {
                    let engine = super::wfp::Engine::open()?;
                    for f in wanted_wfp(&names, &observed.accounts, ports)
                        .iter()
                        .filter(|f| f.name == *n)
                    {
                        engine.add_filter_keyed(
                            &super::wfp::sublayer_key(),
                            f,
                            &super::wfp::key_of(n),
                            true,
                        )?;
                    }
                }
                SetupStep::WriteRecord => {}
            }
            performed.push(step.clone());
        }
        observed = observe(&names, previous.as_ref(), ports)?;
        basis = candidate(&caller, &names, &observed, ports, previous.as_ref());
    }
    let remaining: Vec<SetupStep> = setup_steps(&names, basis.as_ref(), &observed, ports)
        .into_iter()
        .filter(|s| *s != SetupStep::WriteRecord)
        .collect();
    if !remaining.is_empty() {
        return Err(WinSetupError::NoConvergence(remaining));
    }
    let record = candidate(&caller, &names, &observed, ports, previous.as_ref())
        .ok_or_else(|| WinSetupError::NoConvergence(vec![SetupStep::CreateGroup(GROUP.into())]))?;
    if performed.iter().any(|s| *s != SetupStep::WriteRecord)
        || load_record_for(&caller)?.as_ref() != Some(&record)
    {
        save_record(&record)?;
        performed.push(SetupStep::WriteRecord);
    }
    Ok(SetupReport {
        performed,
        drift: found_drift,
        record,
    })
}

/// Removes accounts, group, rules, ACEs and the record.
pub fn uninstall() -> Result<Vec<UninstallStep>, WinSetupError> {
    if !is_elevated()? {
        return Err(WinSetupError::NotElevated);
    }
    let caller = current_caller()?;
    let names = Accounts::for_caller(&caller);
    let mut record = load_record_for(&caller)?;
    if let Some(r) = record.as_mut() {
        for p in elevated_acl_paths() {
            if !r.acl_paths.contains(&p) {
                r.acl_paths.push(p);
            }
        }
    }
    let ports = record
        .as_ref()
        .map(|r| r.allowed_loopback_ports.clone())
        .unwrap_or_default();
    let observed = observe(&names, record.as_ref(), &ports)?;
    let steps = uninstall_steps(&names, record.as_ref(), &observed);
    for step in &steps {
        match step {
            UninstallStep::RevokeAcl(p) => {
                // The group (installs before issue 15) and the accounts (per-run grants since).
                let sids: Vec<&Sid> = record
                    .iter()
                    .flat_map(|r| std::iter::once(&r.group_sid).chain(r.accounts.values()))
                    .collect();
                for sid in sids {
                    match super::acl::revoke(p, sid) {
                        Ok(_) => {}
                        // A path that is gone has no ACEs left to remove.
                        Err(super::acl::AclError::Read { source, .. })
                            if source.code == 2 || source.code == 3 =>
                        {
                            break
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            UninstallStep::RemoveFirewallRule(n) => {
                firewall::remove_rules(std::slice::from_ref(n))?
            }
            UninstallStep::RemoveWfpFilter(n) => remove_wfp_filter(n)?,
            UninstallStep::RemoveWfpSublayer => {
                super::wfp::Engine::open()?.delete_sublayer(&super::wfp::sublayer_key())?
            }
            UninstallStep::DeleteAccount(n) => {
                accounts::delete_user(n)?;
                accounts::unhide(n);
            }
            UninstallStep::DeleteGroup(g) => accounts::delete_group(g)?,
            UninstallStep::DeleteRecord => {
                remove_recorded_placeholders()?;
                for p in [
                    record_path(&caller),
                    secrets_path(),
                    elevated_acl_paths_file(),
                ] {
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(file_err("remove", &p, e)),
                    }
                }
            }
        }
    }
    Ok(steps)
}

/// Uninstall: the placeholders this caller's runs created (`capabilities.json`) that are still
/// empty are removed, and the records of those that are gone dropped. The unelevated tier, if it
/// is used again, makes them again.
fn remove_recorded_placeholders() -> Result<(), WinSetupError> {
    let path = env_dir("LOCALAPPDATA", r"C:\ProgramData").join("capabilities.json");
    let state_err = |e: crate::state::StateError| WinSetupError::File {
        action: "use",
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut store = crate::state::CapabilityStore::load(&path).map_err(state_err)?;
    if store.placeholders.is_empty() {
        return Ok(());
    }
    let roots: Vec<crate::path::WinPath> = store.roots.iter().map(|r| r.root.clone()).collect();
    super::acl::remove_empty_placeholders(&store.placeholders, &roots)?;
    store
        .placeholders
        .retain(|p| std::fs::symlink_metadata(p.as_string()).is_ok());
    store.save(&path).map_err(state_err)
}

/// Re-launches this executable elevated (UAC prompt) with `args`, waits, and returns its exit
/// code. For `stockade setup`/`uninstall` when [`WinSetupError::NotElevated`] is returned.
pub fn relaunch_elevated(args: &[String]) -> Result<u32, WinSetupError> {
    use super::{owned, wide};
    use windows_sys::Win32::UI::Shell::{
        ShellExecuteExW, SEE_MASK_NOCLOSEPROCESS, SEE_MASK_NO_CONSOLE, SHELLEXECUTEINFOW,
    };
    let exe = std::env::current_exe()
        .map_err(|e| file_err("locate", std::path::Path::new("stockade.exe"), e))?;
    let file = wide(&exe.to_string_lossy());
    let params = wide(
        &args
            .iter()
            .map(|a| crate::env::quote_arg(a))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let verb = wide("runas");
    // SAFETY: plain data; all-zero is a valid starting point.
    let mut info: SHELLEXECUTEINFOW = unsafe { std::mem::zeroed() };
    info.cbSize = std::mem::size_of::<SHELLEXECUTEINFOW>() as u32;
    info.fMask = SEE_MASK_NOCLOSEPROCESS | SEE_MASK_NO_CONSOLE;
    info.lpVerb = verb.as_ptr();
    info.lpFile = file.as_ptr();
    info.lpParameters = params.as_ptr();
    info.nShow = 1;
    // SAFETY: `info` is initialized and its strings outlive the call.
    let ok = unsafe { ShellExecuteExW(&mut info) };
    check("ShellExecuteExW(runas)", Ret::Bool(ok)).map_err(|source| WinSetupError::System {
        what: "starting the elevated setup (UAC)",
        source,
    })?;
    let process =
        // SAFETY: `info.hProcess` comes straight from ShellExecuteExW and nothing else owns or closes it.
        unsafe { owned("ShellExecuteExW", info.hProcess) }.map_err(|source| WinSetupError::System {
            what: "starting the elevated setup (UAC)",
            source,
        })?;
    match super::process::wait(&process, None) {
        Ok(super::process::Waited::Exited(code)) => Ok(code),
        Ok(super::process::Waited::TimedOut) => Ok(1),
        Err(e) => Err(WinSetupError::System {
            what: "waiting for the elevated setup",
            source: Win32Error {
                call: "WaitForSingleObject",
                code: 0,
                message: e.to_string(),
            },
        }),
    }
}
