//! The elevated tier's plans: `stockade setup` (accounts, group, firewall rules, an installation
//! record), per-run ACEs for the sandbox group, the runner pipe's DACL, and `stockade uninstall`.
//!
//! Setup is computed as a list of steps from the desired state, the last installation record and
//! what is observed on the machine, so running it twice does nothing the second time and a
//! changed machine (a deleted account, a removed rule) is reported as drift and repaired.

use crate::ace::{mask, Ace, Inherit, PathAces};
use crate::firewall::{offline_rules, online_rules, FirewallRule};
use crate::input::{Kind, WinPlanInput};
use crate::path::WinPath;
use crate::sid::Sid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Local group of the sandbox accounts.
pub const GROUP: &str = "StockadeSandboxUsers";
/// Version of what setup installs; bump when the installed shape changes. 2: a pair of sandbox
/// accounts per caller (1 had one shared pair, `StockadeOffline`/`StockadeOnline`).
pub const INSTALL_VERSION: u32 = 2;

/// The sandbox accounts of one caller. Each caller (the user who runs `stockade setup` and then
/// `stockade run --tier elevated`) gets a pair of its own, so the account's normal-pass grant on
/// one caller's roots is never held by another caller's command: reads and `DELETE`, which the
/// restricting pass does not see, stay within the caller
/// (`attacks::elevated_cross_caller_read_and_delete_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    /// Used with the network off (firewalled).
    pub offline: String,
    /// Used with the network on.
    pub online: String,
}

impl Accounts {
    /// `StkOff-<tag>` / `StkOn-<tag>`, `<tag>` = 12 hex digits of FNV-1a-64 over the caller's SID
    /// (upper case): at most 19 characters (local account names allow 20), stable, and distinct
    /// per caller (a collision is refused by setup: the record names the caller).
    pub fn for_caller(caller: &Sid) -> Accounts {
        let t = caller_tag(caller);
        Accounts {
            offline: format!("StkOff-{t}"),
            online: format!("StkOn-{t}"),
        }
    }

    /// Both names.
    pub fn both(&self) -> [&str; 2] {
        [&self.offline, &self.online]
    }

    /// The account for a run.
    pub fn for_network(&self, network_off: bool) -> &str {
        if network_off {
            &self.offline
        } else {
            &self.online
        }
    }
}

/// 12 hex digits identifying a caller (account names, record file name).
pub fn caller_tag(caller: &Sid) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in caller.to_string().to_ascii_uppercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", h >> 16)
}

/// What `stockade setup` leaves behind, stored (DPAPI-protected together with the passwords) in
/// `%ProgramData%\Stockade\install.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// [`INSTALL_VERSION`] at install time.
    pub version: u32,
    /// The caller these accounts belong to.
    pub caller: Sid,
    /// The group's SID.
    pub group_sid: Sid,
    /// Account name to SID.
    pub accounts: BTreeMap<String, Sid>,
    /// Names of the firewall rules added.
    pub firewall_rules: Vec<String>,
    /// Loopback ports the offline account may reach.
    pub allowed_loopback_ports: Vec<u16>,
    /// Paths that received ACEs for the group (removed again on uninstall).
    pub acl_paths: Vec<WinPath>,
    /// Names of the WFP filters added (keys: `wfp::filter_key` of the name).
    #[serde(default)]
    pub wfp_filters: Vec<String>,
}

/// What is on the machine now (read by the apply layer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The group's SID if the group exists.
    pub group_sid: Option<Sid>,
    /// Existing accounts among ours, name to SID.
    pub accounts: BTreeMap<String, Sid>,
    /// Our accounts that are members of the group.
    pub group_members: BTreeSet<String>,
    /// Other members of the group (other callers' accounts): the group stays while they exist.
    pub other_group_members: BTreeSet<String>,
    /// Accounts hidden from the logon screen.
    pub hidden: BTreeSet<String>,
    /// Names of existing rules in [`crate::firewall::RULE_GROUP`].
    pub firewall_rules: BTreeSet<String>,
    /// Accounts whose password is stored.
    pub stored_passwords: BTreeSet<String>,
    /// Stockade's WFP sublayer exists.
    pub wfp_sublayer: bool,
    /// Names of wanted or recorded WFP filters found by key.
    pub wfp_filters: BTreeSet<String>,
}

/// One setup action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", content = "name", rename_all = "snake_case")]
pub enum SetupStep {
    /// `NetLocalGroupAdd`.
    CreateGroup(String),
    /// `NetUserAdd` with a fresh random password.
    CreateAccount(String),
    /// A new random password (`NetUserSetInfo`) because the stored one is missing.
    ResetPassword(String),
    /// `NetLocalGroupAddMembers`.
    AddToGroup(String),
    /// `SpecialAccounts\UserList` value 0.
    HideAccount(String),
    /// Remove a firewall rule that is ours but no longer wanted (or stale).
    RemoveFirewallRule(String),
    /// `INetFwPolicy2::Rules::Add`.
    AddFirewallRule(String),
    /// `FwpmSubLayerAdd0` (persistent) of Stockade's sublayer.
    AddWfpSublayer,
    /// Remove a WFP filter of ours that is stale or no longer wanted.
    RemoveWfpFilter(String),
    /// `FwpmFilterAdd0` (persistent).
    AddWfpFilter(String),
    /// Write the installation record.
    WriteRecord,
}

/// A difference between the record and the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Drift {
    /// Installed by an older or newer Stockade.
    Version {
        /// Recorded.
        recorded: u32,
        /// This build.
        current: u32,
    },
    /// The group is gone or has another SID.
    Group,
    /// An account is gone or has another SID.
    Account(String),
    /// A recorded rule is gone.
    MissingRule(String),
    /// A rule of ours is present but not recorded.
    UnexpectedRule(String),
    /// A recorded WFP filter is gone.
    MissingWfpFilter(String),
    /// An account is not in the group.
    Membership(String),
    /// An account is visible on the logon screen.
    Visible(String),
}

/// Differences between an installation record and the machine.
pub fn drift(record: &InstallRecord, observed: &Observed) -> Vec<Drift> {
    let mut out = Vec::new();
    if record.version != INSTALL_VERSION {
        out.push(Drift::Version {
            recorded: record.version,
            current: INSTALL_VERSION,
        });
    }
    if observed.group_sid.as_ref() != Some(&record.group_sid) {
        out.push(Drift::Group);
    }
    for (name, sid) in &record.accounts {
        if observed.accounts.get(name) != Some(sid) {
            out.push(Drift::Account(name.clone()));
        } else {
            if !observed.group_members.contains(name) {
                out.push(Drift::Membership(name.clone()));
            }
            if !observed.hidden.contains(name) {
                out.push(Drift::Visible(name.clone()));
            }
        }
    }
    for r in &record.firewall_rules {
        if !observed.firewall_rules.contains(r) {
            out.push(Drift::MissingRule(r.clone()));
        }
    }
    for r in &observed.firewall_rules {
        if !record.firewall_rules.contains(r) {
            out.push(Drift::UnexpectedRule(r.clone()));
        }
    }
    for f in &record.wfp_filters {
        if !observed.wfp_filters.contains(f) {
            out.push(Drift::MissingWfpFilter(f.clone()));
        }
    }
    out
}

/// The WFP filters wanted, once the offline account's SID is known (names carry the account).
pub fn wanted_wfp(
    names: &Accounts,
    accounts: &BTreeMap<String, Sid>,
    allowed_loopback_ports: &[u16],
) -> Vec<crate::wfp::WfpFilter> {
    let mut out = match accounts.get(&names.offline) {
        Some(s) => crate::wfp::offline_filters(s, allowed_loopback_ports),
        None => Vec::new(),
    };
    for f in &mut out {
        f.name = format!("{} [{}]", f.name, names.offline);
    }
    out
}

/// The firewall rules wanted, once the account SIDs are known. Names carry the account name,
/// so one caller's setup never replaces or removes another caller's rules.
pub fn wanted_rules(
    names: &Accounts,
    accounts: &BTreeMap<String, Sid>,
    allowed_loopback_ports: &[u16],
) -> Vec<FirewallRule> {
    let mut rules = Vec::new();
    if let Some(s) = accounts.get(&names.offline) {
        rules.extend(offline_rules(s, allowed_loopback_ports));
    }
    if let Some(s) = accounts.get(&names.online) {
        rules.extend(online_rules(s));
    }
    for r in &mut rules {
        r.name = format!("{} [{}]", r.name, names.offline);
    }
    rules
}

/// Setup steps that bring the machine from `observed` to the desired state. Accounts must exist
/// before rules can name their SIDs, so the apply layer runs account steps, re-observes, and calls
/// this again; with everything in place the result is empty (idempotent).
pub fn setup_steps(
    names: &Accounts,
    record: Option<&InstallRecord>,
    observed: &Observed,
    allowed_loopback_ports: &[u16],
) -> Vec<SetupStep> {
    let mut steps = Vec::new();
    if observed.group_sid.is_none() {
        steps.push(SetupStep::CreateGroup(GROUP.into()));
    }
    for name in names.both() {
        if !observed.accounts.contains_key(name) {
            steps.push(SetupStep::CreateAccount(name.into()));
        } else if !observed.stored_passwords.contains(name) {
            steps.push(SetupStep::ResetPassword(name.into()));
        }
        if !observed.group_members.contains(name) {
            steps.push(SetupStep::AddToGroup(name.into()));
        }
        if !observed.hidden.contains(name) {
            steps.push(SetupStep::HideAccount(name.into()));
        }
    }
    let all_accounts = names
        .both()
        .iter()
        .all(|n| observed.accounts.contains_key(*n));
    let wanted = wanted_rules(names, &observed.accounts, allowed_loopback_ports);
    let wanted_names: BTreeSet<&str> = wanted.iter().map(|r| r.name.as_str()).collect();
    // Rules whose content may differ (other ports, recreated account) are replaced: a rule is
    // kept only if the record says it was made for the same SIDs and ports.
    let record_matches = record.is_some_and(|r| {
        r.version == INSTALL_VERSION
            && r.accounts == observed.accounts
            && r.allowed_loopback_ports == allowed_loopback_ports
    });
    for existing in &observed.firewall_rules {
        if !wanted_names.contains(existing.as_str()) || !record_matches {
            steps.push(SetupStep::RemoveFirewallRule(existing.clone()));
        }
    }
    if all_accounts {
        for r in &wanted {
            if !observed.firewall_rules.contains(&r.name) || !record_matches {
                steps.push(SetupStep::AddFirewallRule(r.name.clone()));
            }
        }
    }
    let wfp = wanted_wfp(names, &observed.accounts, allowed_loopback_ports);
    let wfp_names: BTreeSet<&str> = wfp.iter().map(|f| f.name.as_str()).collect();
    for existing in &observed.wfp_filters {
        if !wfp_names.contains(existing.as_str()) || !record_matches {
            steps.push(SetupStep::RemoveWfpFilter(existing.clone()));
        }
    }
    if all_accounts {
        if !observed.wfp_sublayer {
            steps.push(SetupStep::AddWfpSublayer);
        }
        for f in &wfp {
            if !observed.wfp_filters.contains(&f.name) || !record_matches {
                steps.push(SetupStep::AddWfpFilter(f.name.clone()));
            }
        }
    }
    if !steps.is_empty() || !record_matches {
        steps.push(SetupStep::WriteRecord);
    }
    steps
}

/// One uninstall action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", content = "name", rename_all = "snake_case")]
pub enum UninstallStep {
    /// Remove every ACE for the group's SID from this path.
    RevokeAcl(WinPath),
    /// Remove a rule.
    RemoveFirewallRule(String),
    /// Remove a WFP filter (by the key of its name).
    RemoveWfpFilter(String),
    /// Remove Stockade's WFP sublayer (the last caller only).
    RemoveWfpSublayer,
    /// `NetUserDel` (and the hidden-account registry value).
    DeleteAccount(String),
    /// `NetLocalGroupDel`.
    DeleteGroup(String),
    /// Delete the record and stored passwords.
    DeleteRecord,
}

/// Uninstall steps for one caller: ACEs first, then rules, the caller's accounts, the group
/// (only when no other caller's account is in it), record.
pub fn uninstall_steps(
    names: &Accounts,
    record: Option<&InstallRecord>,
    observed: &Observed,
) -> Vec<UninstallStep> {
    let mut steps = Vec::new();
    if let Some(r) = record {
        steps.extend(r.acl_paths.iter().cloned().map(UninstallStep::RevokeAcl));
    }
    let mut rules: BTreeSet<String> = observed.firewall_rules.clone();
    if let Some(r) = record {
        rules.extend(r.firewall_rules.iter().cloned());
    }
    steps.extend(rules.into_iter().map(UninstallStep::RemoveFirewallRule));
    let mut filters: BTreeSet<String> = observed.wfp_filters.clone();
    if let Some(r) = record {
        filters.extend(r.wfp_filters.iter().cloned());
    }
    steps.extend(filters.into_iter().map(UninstallStep::RemoveWfpFilter));
    if observed.wfp_sublayer && observed.other_group_members.is_empty() {
        steps.push(UninstallStep::RemoveWfpSublayer);
    }
    for name in names.both() {
        if observed.accounts.contains_key(name) {
            steps.push(UninstallStep::DeleteAccount(name.into()));
        }
    }
    if observed.group_sid.is_some() && observed.other_group_members.is_empty() {
        steps.push(UninstallStep::DeleteGroup(GROUP.into()));
    }
    steps.push(UninstallStep::DeleteRecord);
    steps
}

/// ACEs for the sandbox group for one run: modify (without `FILE_DELETE_CHILD`) on writable
/// roots, deny-write on protected paths beneath them, deny-read on `deny_read` paths.
/// Unlike the unelevated tier, these ACEs are evaluated in the *normal* pass of a different
/// account's token, so `DELETE` and `WRITE_DAC` are denied too.
pub fn run_acl(input: &WinPlanInput, group: &Sid) -> Vec<PathAces> {
    let roots = input.effective_roots();
    let mut out: Vec<PathAces> = roots
        .iter()
        .map(|r| PathAces {
            path: r.clone(),
            kind: Kind::Dir,
            aces: vec![Ace::allow(
                group.clone(),
                mask::SANDBOX_MODIFY,
                Inherit::TREE,
            )],
            reason: "writable root".into(),
        })
        .collect();
    let mut protected = input.protected.clone();
    protected.sort_by(|a, b| a.path.cmp(&b.path));
    protected.dedup_by(|a, b| a.path == b.path);
    for p in protected
        .iter()
        .filter(|p| roots.iter().any(|r| p.path.starts_with(r)))
    {
        let inherit = if p.kind == Kind::Dir {
            Inherit::TREE
        } else {
            Inherit::NONE
        };
        out.push(PathAces {
            path: p.path.clone(),
            kind: p.kind,
            aces: vec![Ace::deny(group.clone(), mask::PROTECT_DENY, inherit)],
            reason: p.reason.clone(),
        });
    }
    for d in &input.deny_read {
        let inherit = if d.kind == Kind::Dir {
            Inherit::TREE
        } else {
            Inherit::NONE
        };
        out.push(PathAces {
            path: d.path.clone(),
            kind: d.kind,
            aces: vec![Ace::deny(group.clone(), mask::READ_DENY, inherit)],
            reason: d.reason.clone(),
        });
    }
    out
}

/// The elevated tier's plan for one run: the write-restricted token the runner builds from the
/// sandbox account's token for the command, and the ACEs on the caller's paths.
#[derive(Debug, Clone, Serialize)]
pub struct ElevatedRunPlan {
    /// The command's token (built by the runner from its own, the sandbox account's, token).
    pub token: crate::unelevated::TokenPlan,
    /// ACEs to add before the run.
    pub acl: Vec<PathAces>,
    /// Writable roots with this caller's capability SIDs.
    pub roots: Vec<(WinPath, Sid)>,
}

/// Why no elevated run plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum ElevatedPlanError {
    /// A writable root has no capability SID in the caller's store.
    #[error(
        "writable root {0} has no capability SID; call CapabilityStore::ensure (and save) first"
    )]
    MissingCapability(WinPath),
}

/// The restricting SIDs of the elevated command's token and why each is needed:
/// * this caller's capability SID of each writable root: the only grants that make a path
///   writable (they are random per caller and root, saved in the caller's profile, so another
///   caller's runs do not hold them);
/// * the run's logon SID: the per-run desktop, window station and the objects the command
///   creates itself (default DACL) name it;
/// * Everyone: the null device and console objects the command writes to at start grant
///   Everyone; the cost is that an object whose DACL grants *Everyone* write stays writable.
///
/// Users, Authenticated Users and the account SID are **not** restricting SIDs, so what those
/// may write (`mkdir C:\x`, `C:\ProgramData`) is denied to the command.
pub fn run_token(roots: &[(WinPath, Sid)]) -> crate::unelevated::TokenPlan {
    use crate::unelevated::{flags, RestrictingSid, SidRef, TokenPlan};
    let mut restricting: Vec<RestrictingSid> = roots
        .iter()
        .map(|(r, s)| RestrictingSid {
            sid: SidRef::Fixed(s.clone()),
            why: format!("this caller's capability of writable root {r}"),
        })
        .collect();
    restricting.push(RestrictingSid {
        sid: SidRef::LogonSession,
        why: "the run's logon session: its desktop and the command's own objects".into(),
    });
    restricting.push(RestrictingSid {
        sid: SidRef::RunSession,
        why: "this run: the objects the command creates itself (default DACL)".into(),
    });
    restricting.push(RestrictingSid {
        sid: SidRef::Fixed(Sid::everyone()),
        why: "Everyone: the null device and console objects the command needs to start".into(),
    });
    TokenPlan {
        flags: flags::WRITE_RESTRICTED | flags::DISABLE_MAX_PRIVILEGE,
        restricting,
        // The account (normal pass, no WRITE_DAC), SYSTEM, and this run's own SID (restricting
        // pass): not the logon SID, so concurrent runs' objects are not open to each other.
        default_dacl: crate::unelevated::own_objects_default_dacl(),
        deny_only: Vec::new(),
    }
}

/// ACEs for one elevated run. The normal pass of the command's token sees the sandbox
/// `account`, the restricting pass this caller's capability SIDs; a path is writable only where
/// both are granted. Per root: allow for the account (without `FILE_DELETE_CHILD`), allow for
/// the capability, and `OWNER RIGHTS: READ_CONTROL` beneath it, so that the files the account
/// creates (which it owns) cannot be re-ACLed by it through the owner's implicit `WRITE_DAC`.
/// Per protected path beneath a root: deny every change (including `DELETE`, `WRITE_DAC`,
/// `WRITE_OWNER`) to the account, which the normal pass enforces, and `FILE_DELETE_CHILD` on
/// its parent. `deny_read` paths: deny reads to the account.
pub fn run_plan(
    input: &WinPlanInput,
    account: &Sid,
    caps: &crate::state::CapabilityStore,
) -> Result<ElevatedRunPlan, ElevatedPlanError> {
    let roots: Vec<(WinPath, Sid)> = input
        .effective_roots()
        .into_iter()
        .map(|r| match caps.sid_for(&r) {
            Some(s) => Ok((r, s.clone())),
            None => Err(ElevatedPlanError::MissingCapability(r)),
        })
        .collect::<Result<_, _>>()?;
    let mut acl: Vec<PathAces> = roots
        .iter()
        .map(|(r, cap)| PathAces {
            path: r.clone(),
            kind: Kind::Dir,
            aces: vec![
                Ace::allow(account.clone(), mask::SANDBOX_MODIFY, Inherit::TREE),
                Ace::allow(cap.clone(), mask::SANDBOX_MODIFY, Inherit::TREE),
                Ace::allow(Sid::owner_rights(), mask::READ_CONTROL, Inherit::TREE),
            ],
            reason: "writable root".into(),
        })
        .collect();
    let mut protected = input.protected.clone();
    protected.sort_by(|a, b| a.path.cmp(&b.path));
    protected.dedup_by(|a, b| a.path == b.path);
    let mut parents: BTreeSet<WinPath> = BTreeSet::new();
    for p in protected
        .iter()
        .filter(|p| roots.iter().any(|(r, _)| p.path.starts_with(r)))
    {
        let inherit = if p.kind == Kind::Dir {
            Inherit::TREE
        } else {
            Inherit::NONE
        };
        acl.push(PathAces {
            path: p.path.clone(),
            kind: p.kind,
            aces: vec![Ace::deny(account.clone(), mask::PROTECT_DENY, inherit)],
            reason: p.reason.clone(),
        });
        if let Some(parent) = p.path.parent() {
            if !protected.iter().any(|q| q.path == parent) {
                parents.insert(parent);
            }
        }
    }
    // Missing protected files below a directory (`.vscode\tasks.json`): no new files there, and
    // that directory and its ancestors below the root can be neither deleted nor renamed.
    // ...and the ancestors of protected paths below the root (`sub` of `sub\.git`), which could
    // otherwise be renamed away and created again with a new protected name inside.
    let mut chain = input.no_new_files_chain();
    chain.extend(input.protected_ancestors());
    for c in chain
        .iter()
        .filter(|c| roots.iter().any(|(r, _)| c.path.starts_with(r)))
    {
        let no_files = input.no_new_files.iter().any(|d| d.path == c.path);
        let m = if no_files {
            mask::FILE_WRITE_DATA | mask::FILE_APPEND_DATA | mask::DELETE
        } else {
            mask::DELETE
        };
        acl.push(PathAces {
            path: c.path.clone(),
            kind: Kind::Dir,
            aces: vec![Ace::deny(account.clone(), m, Inherit::NONE)],
            reason: c.reason.clone(),
        });
        if let Some(parent) = c.path.parent() {
            if !protected.iter().any(|q| q.path == parent) {
                parents.insert(parent);
            }
        }
    }
    for parent in parents {
        acl.push(PathAces {
            path: parent,
            kind: Kind::Dir,
            aces: vec![Ace::deny(
                account.clone(),
                mask::FILE_DELETE_CHILD,
                Inherit::NONE,
            )],
            reason: "parent of a protected path: no delete-child".into(),
        });
    }
    for d in &input.deny_read {
        let inherit = if d.kind == Kind::Dir {
            Inherit::TREE
        } else {
            Inherit::NONE
        };
        acl.push(PathAces {
            path: d.path.clone(),
            kind: d.kind,
            aces: vec![Ace::deny(account.clone(), mask::READ_DENY, inherit)],
            reason: d.reason.clone(),
        });
    }
    Ok(ElevatedRunPlan {
        token: run_token(&roots),
        acl,
        roots,
    })
}

/// SDDL for the runner's named pipe: only the sandbox account and the caller, nobody else (not
/// even Administrators), protected from inheritance.
pub fn runner_pipe_sddl(sandbox_account: &Sid, caller: &Sid) -> String {
    format!("D:P(A;;GA;;;{caller})(A;;GRGW;;;{sandbox_account})")
}

/// Password alphabet: no quotes, spaces or characters shells treat specially.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.,+=%@";

/// A 32-character password from 32 random bytes, always with upper, lower, digit and symbol (the
/// default complexity policy wants three of four classes).
pub fn password_from_random(bytes: [u8; 32]) -> String {
    let mut s: Vec<u8> = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()])
        .collect();
    s[0] = b"ABCDEFGHJKLMNPQRSTUVWXYZ"[bytes[0] as usize % 24];
    s[1] = b"abcdefghijkmnopqrstuvwxyz"[bytes[1] as usize % 25];
    s[2] = b"23456789"[bytes[2] as usize % 8];
    s[3] = b"-_.,+=%@"[bytes[3] as usize % 8];
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
mod tests;

/// `JOB_OBJECT_UILIMIT_*` set on the elevated command's job (values from `winnt.h`):
/// HANDLES (0x1: no USER handles of processes outside the job), READCLIPBOARD (0x2),
/// WRITECLIPBOARD (0x4), SYSTEMPARAMETERS (0x8), DISPLAYSETTINGS (0x10), GLOBALATOMS (0x20),
/// DESKTOP (0x40: no creating or switching desktops), EXITWINDOWS (0x80).
pub const JOB_UI_LIMITS: u32 = 0xFF;

/// SDDL of the per-run desktop: the runner's account and SYSTEM, and the run's logon SID (a
/// restricting SID of the command's token, so its restricting pass passes for window creation);
/// nobody else, protected from inheritance.
pub fn desktop_sddl(account: &Sid, logon: &Sid) -> String {
    format!("D:P(A;;GA;;;SY)(A;;GA;;;{account})(A;;GA;;;{logon})")
}

/// One of the runner's own kernel objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerObject {
    /// Its process.
    Process,
    /// Its (only) thread.
    Thread,
    /// Its primary token (the account's, unrestricted).
    Token,
}

/// The DACL the runner gives its own process, thread and token after it has opened what it
/// needs and before the command starts: SYSTEM all access, and for `OWNER RIGHTS` (the account,
/// which the command is too) only query and synchronize. No ACE names the account, and the
/// `OWNER RIGHTS` ACE replaces the owner's implicit `READ_CONTROL | WRITE_DAC`, so the command can
/// neither write the runner's memory, set its thread context, duplicate its unrestricted token,
/// nor re-ACL any of them first (`attacks::elevated_runner_*`). The caller keeps the handles it
/// got when it started the runner.
pub fn runner_self_dacl(obj: RunnerObject) -> Vec<Ace> {
    let (all, owner) = match obj {
        // PROCESS_ALL_ACCESS; SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION.
        RunnerObject::Process => (0x001F_FFFF, 0x0010_1000),
        // THREAD_ALL_ACCESS; SYNCHRONIZE | THREAD_QUERY_LIMITED_INFORMATION.
        RunnerObject::Thread => (0x001F_FFFF, 0x0010_0800),
        // TOKEN_ALL_ACCESS; TOKEN_QUERY.
        RunnerObject::Token => (0x000F_01FF, 0x0000_0008),
    };
    vec![
        Ace::allow(Sid::local_system(), all, Inherit::NONE),
        Ace::allow(Sid::owner_rights(), owner, Inherit::NONE),
    ]
}

/// Hidden argument that turns the Stockade executable into the elevated tier's runner.
pub const RUNNER_ARG: &str = "--stockade-runner";

/// What the caller sends the runner over the pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRequest {
    /// The command line to start.
    pub command_line: String,
    /// Its start directory.
    pub cwd: String,
    /// Its complete environment.
    pub env: Vec<(String, String)>,
    /// Kill the job after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// Job memory limit in bytes.
    pub max_memory: Option<u64>,
    /// Job active-process limit.
    pub max_processes: Option<u64>,
    /// The command's token: the runner restricts its own (the sandbox account's) token so.
    pub token: crate::unelevated::TokenPlan,
}

/// What the runner answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerReply {
    /// Exit code of the command, if it exited by itself.
    pub exit_code: Option<u32>,
    /// The timeout killed it.
    pub timed_out: bool,
    /// Why the command could not be started, if it was not.
    pub error: Option<String>,
}

/// Largest frame accepted on the runner pipe (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;

/// A frame: little-endian `u32` length, then JSON.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend(body);
    out
}

/// Reads one frame from `r`.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl std::io::Read) -> Result<T, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| format!("reading the frame length: {e}"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes is larger than {MAX_FRAME}"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .map_err(|e| format!("reading a {len}-byte frame: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("decoding the frame: {e}"))
}
