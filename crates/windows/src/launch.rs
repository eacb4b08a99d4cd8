//! What every Windows launch shares, below the backend and above the Win32 runners
//! (`crate::win::run`): the launch error type, the per-workspace tag, and the report of
//! protected paths created during a run. The backend dispatches to the runners and the runners
//! use this module, so neither imports the other.

use crate::input::InputError;
use crate::path::WinPath;
use crate::state::StateError;
use crate::unelevated::UnelevatedPlanError;

/// Why a command could not be launched on Windows.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not running on Windows.
    #[error("the Windows backend can only run commands on Windows")]
    NotWindows,
    /// The elevated tier is not installed.
    #[error("the elevated Windows tier is not installed (or its stored password is missing); run `stockade setup`")]
    ElevatedNotInstalled,
    /// `--pty` in the elevated tier.
    #[error("--pty is not supported by the elevated Windows tier yet; use the unelevated tier for interactive commands")]
    ElevatedPty,
    /// The firewall cannot be trusted to keep an offline run offline.
    #[error("network is off but the firewall cannot be trusted to block the offline account: {}; run `stockade setup` to repair, or check the firewall settings", .0.join("; "))]
    FirewallNotEffective(Vec<String>),
    /// The plan cannot be expressed on Windows.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Stockade's state (capability SIDs) could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// No plan.
    #[error(transparent)]
    Plan(#[from] UnelevatedPlanError),
    /// No elevated plan.
    #[error(transparent)]
    ElevatedPlan(#[from] crate::elevated::ElevatedPlanError),
    /// `%LOCALAPPDATA%` is not set.
    #[error("LOCALAPPDATA is not set; Stockade keeps its Windows state there")]
    NoLocalAppData,
    /// The program or an argument is not valid Unicode.
    #[error("{0:?} is not valid Unicode; Windows command lines are UTF-16")]
    NotUnicode(String),
    /// Preparing the sandbox temp dir failed.
    #[error("cannot prepare the sandbox temp directory {path}: {source}")]
    Temp {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A placeholder for a missing protected name could not be created.
    #[error("cannot create the placeholder {path} for a missing protected name: {source}; create it yourself or remove the name from filesystem.protected_names")]
    Placeholder {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A Win32 step failed.
    #[cfg(windows)]
    #[error(transparent)]
    Win(#[from] crate::win::WinRunError),
}

/// A stable per-workspace directory name (FNV-1a of the case-folded path), so the temp dir of a
/// workspace keeps its capability SID across runs instead of minting one per run.
pub fn workspace_tag(ws: &WinPath) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ws.key().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Protected paths that were missing before the run and exist after it: a warning each, and a
/// `protected-created` denial each (the denial report's name for it).
pub fn created_protected(
    paths: &[WinPath],
    exists: impl Fn(&WinPath) -> bool,
) -> (Vec<String>, Vec<stockade_policy::backend::Denial>) {
    let created: Vec<&WinPath> = paths.iter().filter(|p| exists(p)).collect();
    let warnings = created
        .iter()
        .map(|p| format!("protected path {p} was created during the run; it was not protected while the command ran"))
        .collect();
    (warnings, protected_created(&created))
}

/// Placeholders ([`crate::placeholder`]) that were empty before the run and are not after it
/// (`still_empty` false): the command got into one (in the unelevated tier, by re-ACLing it
/// first). A warning and a `protected-created` denial each.
pub fn written_placeholders(
    empty_before: &[WinPath],
    still_empty: impl Fn(&WinPath) -> bool,
) -> (Vec<String>, Vec<stockade_policy::backend::Denial>) {
    let written: Vec<&WinPath> = empty_before.iter().filter(|p| !still_empty(p)).collect();
    let warnings = written
        .iter()
        .map(|p| format!("the placeholder {p} for a missing protected name was changed during the run (it is no longer an empty directory); check what is in it before a tool reads it"))
        .collect();
    (warnings, protected_created(&written))
}

/// One `protected-created` denial (the denial report's name) per path.
fn protected_created(paths: &[&WinPath]) -> Vec<stockade_policy::backend::Denial> {
    paths
        .iter()
        .map(|p| stockade_policy::backend::Denial {
            kind: "protected-created".into(),
            target: p.as_string(),
            message: None,
        })
        .collect()
}
