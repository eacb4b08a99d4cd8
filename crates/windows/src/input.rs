//! The Windows view of a plan: the same content as `stockade_policy::plan::Plan`, with paths as
//! [`WinPath`]s and strings as Windows sees them. Tests build it directly with `C:\...` paths;
//! the backend converts a real `Plan` with [`WinPlanInput::from_plan`].

use crate::path::{WinPath, WinPathError};

/// Directory or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A directory.
    Dir,
    /// A file.
    File,
}

/// A path with its kind and the reason it is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedWinPath {
    /// The path.
    pub path: WinPath,
    /// Directory or file.
    pub kind: Kind,
    /// Why, e.g. `.git directory`.
    pub reason: String,
}

/// Network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No network outside the sandbox.
    #[default]
    Off,
    /// Host network.
    On,
}

/// Limits the job object enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Limits {
    /// Wall-clock timeout in seconds.
    pub timeout_secs: Option<u64>,
    /// Job memory limit in bytes.
    pub max_memory: Option<u64>,
    /// Active process limit.
    pub max_processes: Option<u64>,
}

/// Everything the Windows planners need.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WinPlanInput {
    /// Workspace directory.
    pub workspace: WinPath,
    /// Start directory.
    pub cwd: WinPath,
    /// Writable roots as given (may overlap; the planners normalize).
    pub writable_roots: Vec<WinPath>,
    /// Existing protected paths (read-only even under writable roots).
    pub protected: Vec<PlannedWinPath>,
    /// Protected paths that do not exist yet.
    pub protected_missing: Vec<WinPath>,
    /// Protected entries that are symbolic links (their targets are in `protected`; ACLs set by
    /// path follow the link, so the link itself is not protected).
    pub protected_symlinks: Vec<WinPath>,
    /// Directories in which the sandbox may create no new file, because a protected file below
    /// them does not exist yet ([`crate::placeholder`]; empty unless placeholders were planned).
    pub no_new_files: Vec<PlannedWinPath>,
    /// Paths that must not be readable.
    pub deny_read: Vec<PlannedWinPath>,
    /// Network mode.
    pub network: Network,
    /// The command's environment as computed by the policy (before Windows additions).
    pub env: Vec<(String, String)>,
    /// Sandbox temp directory (`TEMP`/`TMP`); must be inside a writable root or becomes one.
    pub temp_dir: Option<WinPath>,
    /// Limits.
    pub limits: Limits,
}

/// Why a `Plan` cannot be used on Windows.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A path is not an absolute Windows path.
    #[error("plan path {path:?} is not usable on Windows: {source}")]
    Path {
        /// The path as the plan had it.
        path: String,
        /// Why.
        #[source]
        source: WinPathError,
    },
    /// A network mode this backend cannot provide.
    #[error("network mode {0} is not supported on Windows yet; use \"off\" or \"on\"")]
    UnsupportedNetwork(String),
    /// A path or variable is not valid Unicode (Windows stores UTF-16; unpaired surrogates are
    /// not supported by the plan layer).
    #[error("{what} {value:?} is not valid Unicode; rename it or remove it from the policy")]
    NotUnicode {
        /// What it was.
        what: &'static str,
        /// Lossy rendering.
        value: String,
    },
}

impl WinPlanInput {
    /// A minimal input for tests: one workspace that is also the only writable root.
    pub fn for_workspace(workspace: &str) -> Result<WinPlanInput, WinPathError> {
        let ws = WinPath::parse(workspace)?;
        Ok(WinPlanInput {
            workspace: ws.clone(),
            cwd: ws.clone(),
            writable_roots: vec![ws],
            protected: vec![],
            protected_missing: vec![],
            protected_symlinks: vec![],
            no_new_files: vec![],
            deny_read: vec![],
            network: Network::Off,
            env: vec![],
            temp_dir: None,
            limits: Limits::default(),
        })
    }

    /// Writable roots plus the temp dir, deduplicated, with roots nested inside another root
    /// removed (the outer root's grant already covers them), sorted.
    pub fn effective_roots(&self) -> Vec<WinPath> {
        let mut all: Vec<WinPath> = self.writable_roots.clone();
        if let Some(t) = &self.temp_dir {
            all.push(t.clone());
        }
        all.sort();
        all.dedup();
        let mut out: Vec<WinPath> = Vec::new();
        for r in all {
            if !out.iter().any(|o| r.starts_with(o)) {
                out.push(r);
            }
        }
        out
    }

    /// The root that contains `p`, if any.
    pub fn root_of(&self, p: &WinPath) -> Option<WinPath> {
        self.effective_roots()
            .into_iter()
            .find(|r| p.starts_with(r))
    }
}

#[cfg(feature = "policy")]
mod from_policy {
    use super::*;
    use std::path::Path;
    use stockade_policy::plan::{PathKind, Plan};

    fn wp(p: &Path) -> Result<WinPath, InputError> {
        let s = p.to_str().ok_or_else(|| InputError::NotUnicode {
            what: "path",
            value: p.to_string_lossy().into_owned(),
        })?;
        WinPath::parse(s).map_err(|source| InputError::Path {
            path: s.to_string(),
            source,
        })
    }

    fn planned(p: &stockade_policy::plan::PlannedPath) -> Result<PlannedWinPath, InputError> {
        Ok(PlannedWinPath {
            path: wp(&p.path)?,
            kind: match p.kind {
                PathKind::Dir => Kind::Dir,
                PathKind::File => Kind::File,
            },
            reason: p.reason.clone(),
        })
    }

    impl WinPlanInput {
        /// Converts a resolved policy plan. `temp_dir` is the sandbox temp directory the backend
        /// chose (see [`crate::env::default_temp_dir`]).
        pub fn from_plan(
            plan: &Plan,
            temp_dir: Option<WinPath>,
        ) -> Result<WinPlanInput, InputError> {
            let mut env = Vec::with_capacity(plan.env.len());
            for (k, v) in &plan.env {
                let k = k.to_str().ok_or_else(|| InputError::NotUnicode {
                    what: "variable name",
                    value: k.to_string_lossy().into_owned(),
                })?;
                let v = v.to_str().ok_or_else(|| InputError::NotUnicode {
                    what: "variable value",
                    value: v.to_string_lossy().into_owned(),
                })?;
                env.push((k.to_string(), v.to_string()));
            }
            Ok(WinPlanInput {
                workspace: wp(&plan.workspace)?,
                cwd: wp(&plan.cwd)?,
                writable_roots: plan
                    .writable_roots
                    .iter()
                    .map(|p| wp(p))
                    .collect::<Result<_, _>>()?,
                protected: plan
                    .protected
                    .iter()
                    .map(planned)
                    .collect::<Result<_, _>>()?,
                protected_missing: plan
                    .protected_missing
                    .iter()
                    .map(|p| wp(p))
                    .collect::<Result<_, _>>()?,
                protected_symlinks: plan
                    .protected_symlinks
                    .iter()
                    .map(|p| wp(p))
                    .collect::<Result<_, _>>()?,
                no_new_files: vec![],
                deny_read: plan
                    .deny_read
                    .iter()
                    .map(planned)
                    .collect::<Result<_, _>>()?,
                network: match plan.network {
                    stockade_policy::NetworkMode::Off => Network::Off,
                    stockade_policy::NetworkMode::On => Network::On,
                    // Fail closed: no proxy-based allowlist on Windows yet.
                    other => return Err(InputError::UnsupportedNetwork(other.to_string())),
                },
                env,
                temp_dir,
                limits: Limits {
                    timeout_secs: plan.limits.timeout_secs,
                    max_memory: plan.limits.max_memory,
                    max_processes: plan.limits.max_processes,
                },
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::path::PathBuf;
        use stockade_policy::plan::{PlannedPath, TempPlan};

        #[test]
        fn converts_a_windows_style_plan() {
            let plan = Plan {
                workspace: PathBuf::from(r"\\?\C:\Users\me\repo"),
                cwd: PathBuf::from(r"C:\Users\me\repo\src"),
                writable_roots: vec![PathBuf::from(r"C:\Users\me\repo")],
                protected: vec![PlannedPath {
                    path: PathBuf::from(r"C:\Users\me\repo\.git"),
                    kind: PathKind::Dir,
                    reason: ".git directory".into(),
                }],
                protected_missing: vec![PathBuf::from(r"C:\Users\me\repo\.codex")],
                deny_read: vec![],
                allow_unix_sockets: vec![],
                network: stockade_policy::NetworkMode::Off,
                allowed_domains: vec![],
                protected_symlinks: vec![PathBuf::from(r"C:\Users\me\repo\.codex-link")],
                git_mode: stockade_policy::model::GitMode::ReadOnly,
                git_repos: vec![],
                warnings: vec![],
                overlay: Default::default(),
                write_gate: false,
                protected_names: vec![],
                windows_lock_protected_dacls: true,
                env: vec![("PATH".into(), r"C:\Windows".into())],
                env_removed: vec![],
                limits: Default::default(),
                temp: TempPlan {
                    private: true,
                    persist_dir: None,
                },
            };
            let input = WinPlanInput::from_plan(&plan, None).expect("converts");
            assert_eq!(input.workspace.as_string(), r"C:\Users\me\repo");
            assert_eq!(input.protected[0].kind, Kind::Dir);
            assert_eq!(
                input.env,
                vec![("PATH".to_string(), r"C:\Windows".to_string())]
            );

            assert_eq!(input.protected_symlinks.len(), 1);
            let allow = Plan {
                network: stockade_policy::NetworkMode::Allowlist,
                ..plan.clone()
            };
            assert!(matches!(
                WinPlanInput::from_plan(&allow, None),
                Err(InputError::UnsupportedNetwork(_))
            ));
            let linux = Plan {
                workspace: PathBuf::from("/home/me/repo"),
                ..plan
            };
            assert!(matches!(
                WinPlanInput::from_plan(&linux, None),
                Err(InputError::Path { .. })
            ));
        }
    }
}
