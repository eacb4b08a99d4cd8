//! `WindowsBackend`: the `stockade_policy::Backend` implementation. On Windows it computes the
//! unelevated plan, applies it and runs the command; elsewhere it compiles and refuses to run.

pub use crate::launch::{created_protected, workspace_tag, RunError};
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
            Tier::Elevated => elevated_availability(),
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

/// The elevated tier is installed when `stockade setup` left its record (the run itself checks
/// accounts, passwords and the firewall and fails closed on drift).
fn elevated_availability() -> Availability {
    #[cfg(windows)]
    {
        match crate::win::setup::load_record() {
            Ok(Some(r)) => Availability::ready(format!(
                "installed: {} sandbox accounts recorded by `stockade setup`",
                r.accounts.len()
            )),
            Ok(None) => Availability::not_installed(
                "not installed; run `stockade setup` as an administrator",
            ),
            Err(e) => {
                Availability::unavailable(format!("cannot read the installation record: {e}"))
            }
        }
    }
    #[cfg(not(windows))]
    {
        Availability::unavailable(RunError::NotWindows.to_string())
    }
}

/// `stockade clean` for the Windows tiers: removes the unelevated tier's ACEs (grants, denies,
/// metadata guards) for this workspace and forgets its capability SIDs. Returns a line for the
/// user.
pub fn clean(plan: &Plan) -> Result<String, RunError> {
    #[cfg(windows)]
    {
        let n = crate::win::run::clean_unelevated(plan)?;
        Ok(format!(
            "removed Stockade's ACEs from {n} path(s) and forgot the workspace's capability SIDs"
        ))
    }
    #[cfg(not(windows))]
    {
        let _ = plan;
        Err(RunError::NotWindows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::WinPath;

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
            git_mode: stockade_policy::model::GitMode::ReadOnly,
            git_repos: vec![],
            warnings: vec![],
            overlay: Default::default(),
            write_gate: false,
            protected_names: vec![],
            windows_lock_protected_dacls: true,
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
