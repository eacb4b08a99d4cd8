//! Planned paths: the path types a [`crate::plan::Plan`] is made of.

use serde::Serialize;
use std::path::PathBuf;

/// Whether a planned path is a directory or a file (backends mount/mask them differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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
    #[serde(serialize_with = "crate::paths::lossy::path")]
    pub path: PathBuf,
    /// Directory or file.
    pub kind: PathKind,
    /// Why it is planned, e.g. `.git directory`, `gitdir of /ws/sub/.git`, `deny_read ~/.ssh`.
    pub reason: String,
}
