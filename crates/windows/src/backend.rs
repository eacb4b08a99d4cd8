//! `WindowsBackend`: the `stockade_policy::Backend` implementation. On Windows it computes the
//! unelevated plan, applies it and runs the command; elsewhere it compiles and refuses to run.

use crate::input::InputError;
use crate::path::WinPath;
use crate::state::StateError;
use crate::unelevated::UnelevatedPlanError;
use stockade_policy::backend::{
    Availability, Backend, Command, LaunchFailure, RunOptions, RunOutcome,
};
use stockade_policy::plan::Plan;

/// Which Windows tier runs commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tier {
    /// Restricted token of the caller (no setup needed).
    #[default]
    Unelevated,
    /// Separate sandbox accounts created by `stockade setup`.
    Elevated,
}

/// The Windows backend.
#[derive(Debug, Clone, Default)]
pub struct WindowsBackend {
    /// Tier to use.
    pub tier: Tier,
}

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
    /// The offline account's firewall rules are missing: refusing to run with the network open.
    #[error("network is off but these firewall rules of the offline account are missing: {0:?}; run `stockade setup` to repair")]
    FirewallMissing(Vec<String>),
    /// The plan cannot be expressed on Windows.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Stockade's state (capability SIDs) could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// No plan.
    #[error(transparent)]
    Plan(#[from] UnelevatedPlanError),
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
    /// A Win32 step failed.
    #[cfg(windows)]
    #[error(transparent)]
    Win(#[from] crate::win::WinRunError),
}

impl LaunchFailure for RunError {}

impl Backend for WindowsBackend {
    type Error = RunError;

    fn tier(&self) -> &'static str {
        match self.tier {
            Tier::Unelevated => "windows-unelevated",
            Tier::Elevated => "windows-elevated",
        }
    }

    fn availability(&self) -> Availability {
        if !cfg!(windows) {
            return Availability::unavailable(RunError::NotWindows.to_string());
        }
        match self.tier {
            Tier::Unelevated => Availability::ready("restricted tokens need no setup"),
            // Not probed yet: a missing setup is reported by the run itself.
            Tier::Elevated => Availability::ready(
                "not probed by doctor on Windows yet; `stockade run --tier elevated` reports a missing `stockade setup`",
            ),
        }
    }

    fn run(&self, plan: &Plan, cmd: &Command, opts: &RunOptions) -> Result<RunOutcome, RunError> {
        #[cfg(windows)]
        {
            match self.tier {
                Tier::Unelevated => crate::win::run::run_unelevated(self.tier(), plan, cmd, opts),
                Tier::Elevated => crate::win::run::run_elevated(self.tier(), plan, cmd, opts),
            }
        }
        #[cfg(not(windows))]
        {
            let _ = (plan, cmd, opts);
            Err(RunError::NotWindows)
        }
    }
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
    let denials = created
        .iter()
        .map(|p| stockade_policy::backend::Denial {
            kind: "protected-created".into(),
            target: p.as_string(),
        })
        .collect();
    (warnings, denials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_and_case_insensitive() {
        let a = WinPath::parse(r"C:\Users\me\repo").expect("p");
        let b = WinPath::parse(r"c:\USERS\me\REPO").expect("p");
        let c = WinPath::parse(r"C:\Users\me\repo2").expect("p");
        assert_eq!(workspace_tag(&a), workspace_tag(&b));
        assert_ne!(workspace_tag(&a), workspace_tag(&c));
        assert_eq!(workspace_tag(&a).len(), 16);
    }

    #[test]
    fn created_protected_paths_are_reported() {
        let ps = [
            WinPath::parse(r"C:\w\.codex").expect("p"),
            WinPath::parse(r"C:\w\.claude").expect("p"),
        ];
        let (w, d) = created_protected(&ps, |p| p.file_name() == Some(".codex"));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains(r"C:\w\.codex"));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, "protected-created");
        assert_eq!(d[0].target, r"C:\w\.codex");
    }

    #[cfg(not(windows))]
    #[test]
    fn refuses_to_run_off_windows_and_names_its_tiers() {
        use std::path::PathBuf;
        let b = WindowsBackend::default();
        assert_eq!(b.tier(), "windows-unelevated");
        assert_eq!(
            WindowsBackend {
                tier: Tier::Elevated
            }
            .tier(),
            "windows-elevated"
        );
        let plan = Plan {
            workspace: PathBuf::from(r"C:\w"),
            cwd: PathBuf::from(r"C:\w"),
            writable_roots: vec![],
            protected: vec![],
            protected_missing: vec![],
            deny_read: vec![],
            allow_unix_sockets: vec![],
            network: stockade_policy::NetworkMode::Off,
            allowed_domains: vec![],
            protected_symlinks: vec![],
            warnings: vec![],
            env: vec![],
            env_removed: vec![],
            limits: Default::default(),
            temp: stockade_policy::plan::TempPlan {
                private: true,
                persist_dir: None,
            },
        };
        let cmd = Command {
            program: "cmd".into(),
            args: vec![],
        };
        assert!(matches!(
            b.run(&plan, &cmd, &RunOptions::default()),
            Err(RunError::NotWindows)
        ));
    }
}
