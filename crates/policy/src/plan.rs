//! The enforcement plan: a policy resolved against the real filesystem and environment.
//!
//! A [`Plan`] is what a backend enforces, and nothing else: canonical absolute paths (symlinks
//! resolved once, here, at plan time), the computed environment, the network mode and limits.
//! Backends never interpret policy strings themselves.

use crate::model::{LimitsPolicy, NetworkMode};
use serde::Serialize;
use std::ffi::OsString;
use std::path::PathBuf;

/// Whether a planned path is a directory or a file (backends mount/mask them differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// A directory.
    Dir,
    /// Anything that is not a directory (regular file, socket, ...).
    File,
}

/// A canonical path with its kind and why it is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPath {
    /// Canonical absolute path.
    pub path: PathBuf,
    /// Directory or file.
    pub kind: PathKind,
    /// Why it is planned, e.g. `.git directory`, `gitdir of /ws/sub/.git`, `deny_read ~/.ssh`.
    pub reason: String,
}

/// Private temp directories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TempPlan {
    /// Give the sandbox private `/tmp`, `/var/tmp`, `/dev/shm`.
    pub private: bool,
    /// Host directory that backs the sandbox's `/tmp` across runs of the same workspace
    /// (`None`: a fresh, empty `/tmp` each run).
    pub persist_dir: Option<PathBuf>,
}

/// Everything a backend must enforce for one run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Canonical workspace directory.
    pub workspace: PathBuf,
    /// Canonical directory the command starts in.
    pub cwd: PathBuf,
    /// Canonical writable roots, deduplicated, none nested in another, sorted.
    pub writable_roots: Vec<PathBuf>,
    /// Existing paths under writable roots that must stay read-only (`.git` dirs and files, gitdir
    /// targets, agent config dirs, `protected_paths`), sorted so parents come before children.
    pub protected: Vec<PlannedPath>,
    /// Protected names that do not exist at plan time: backends that cannot stop their creation
    /// report them.
    pub protected_missing: Vec<PathBuf>,
    /// Existing paths that must not be readable.
    pub deny_read: Vec<PlannedPath>,
    /// Unix sockets that may be connected to even outside writable roots.
    pub allow_unix_sockets: Vec<PathBuf>,
    /// Network mode.
    pub network: NetworkMode,
    /// The complete environment of the command (already filtered).
    #[serde(skip)]
    pub env: Vec<(OsString, OsString)>,
    /// Names of the variables that were removed from the caller's environment.
    pub env_removed: Vec<String>,
    /// Limits.
    pub limits: LimitsPolicy,
    /// Temp directories.
    pub temp: TempPlan,
}

/// Why a policy could not be turned into a plan. (Filled in by the planning implementation.)
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The workspace directory does not exist or is not a directory.
    #[error("workspace {path:?} is not an existing directory: {reason}")]
    Workspace {
        /// The path as given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
