//! The write gate's judge: which write-intent operations of the sandboxed command touch
//! something that makes a program run later outside the sandbox (skeleton: the API is final,
//! the decisions land in the next commits).

use crate::model::{GitMode, ProtectedName};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What a name-creating call creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKind {
    /// A regular file (`open` with `O_CREAT` of a missing name).
    File,
    /// A directory (`mkdir`).
    Dir,
    /// A symbolic link (the link's own name).
    Symlink,
    /// A device node or FIFO (`mknod`).
    Node,
    /// A unix socket (`bind`).
    Socket,
}

/// Which metadata a call changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// `chmod`.
    Mode,
    /// `chown`.
    Owner,
    /// `utime*`.
    Times,
    /// `setxattr`/`removexattr`.
    Xattr,
    /// `truncate`/`ftruncate`.
    Truncate,
}

/// One write-intent operation, as the supervisor resolved it: absolute real paths (the parent
/// resolved by the kernel, the final name appended; never followed through a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// A new name.
    Create {
        /// The name created.
        path: &'a Path,
        /// What it is.
        kind: CreateKind,
    },
    /// An existing object opened for writing (also `O_APPEND`).
    OpenWrite {
        /// The object.
        path: &'a Path,
        /// With `O_TRUNC`.
        trunc: bool,
    },
    /// `unlink`/`rmdir`.
    Remove {
        /// The name removed.
        path: &'a Path,
        /// `rmdir` (or `AT_REMOVEDIR`).
        dir: bool,
    },
    /// `rename*`.
    Rename {
        /// The old name.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
        /// `RENAME_EXCHANGE`: both names stay, their objects swap.
        exchange: bool,
    },
    /// A hard link.
    Link {
        /// The existing object.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
    },
    /// A metadata change, path- or fd-based.
    SetAttr {
        /// The object.
        path: &'a Path,
        /// What changes.
        what: AttrKind,
    },
}

/// Why an operation was refused: one line for stderr, fields for the JSON result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The protected path the operation touched.
    pub path: PathBuf,
    /// `create`, `write`, `remove`, `rename`, `link`, `chmod`, ...
    pub action: &'static str,
    /// Which protected entry, and what would run from it.
    pub reason: String,
    /// How the user allows it.
    pub remedy: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused: {} {} — {}; {}",
            self.action,
            escape_path(&self.path),
            self.reason,
            self.remedy
        )
    }
}

/// `path` for a terminal: lossy UTF-8 with every control character escaped.
fn escape_path(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control()
            || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// What a [`Protector`] is built from (see [`ProtectorInput::from_plan`]).
#[derive(Debug, Clone)]
pub struct ProtectorInput {
    /// Canonical writable roots.
    pub writable_roots: Vec<PathBuf>,
    /// Canonical workspace.
    pub workspace: PathBuf,
    /// `git.mode`.
    pub git_mode: GitMode,
    /// `filesystem.protected_names`, parsed.
    pub names: Vec<ProtectedName>,
    /// Common directories whose history the launch snapshotted (their objects need no
    /// protection from the gate).
    pub snapshotted: Vec<PathBuf>,
    /// When the run started: objects and gitdirs born before it existed at launch.
    pub run_start: SystemTime,
}

impl ProtectorInput {
    /// The input for `plan`, with the policy's `filesystem.protected_names` entries.
    pub fn from_plan(
        plan: &crate::plan::Plan,
        protected_names: &[String],
        run_start: SystemTime,
    ) -> Result<ProtectorInput, ProtectError> {
        let names = crate::model::parse_protected_names(protected_names)
            .map_err(|(entry, reason)| ProtectError::BadName { entry, reason })?;
        Ok(ProtectorInput {
            writable_roots: plan.writable_roots.clone(),
            workspace: plan.workspace.clone(),
            git_mode: plan.git_mode,
            names,
            snapshotted: plan.git_repos.iter().map(|r| r.common.clone()).collect(),
            run_start,
        })
    }
}

/// Why a [`Protector`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    /// A `filesystem.protected_names` entry does not parse.
    #[error("filesystem.protected_names entry {entry:?} is invalid: {reason}")]
    BadName {
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The user's git configuration could not be read.
    #[error(transparent)]
    GitMeta(#[from] crate::gitmeta::GitMetaError),
}

/// The judge. `Send + Sync`: one per run, shared by every supervisor thread.
#[derive(Debug)]
pub struct Protector {
    input: ProtectorInput,
}

impl Protector {
    /// Build the judge for one run. Reads the user's and the system's git configuration (do it
    /// before entering the sandbox, where `deny_read` masks `~/.gitconfig`).
    pub fn new(input: ProtectorInput) -> Result<Protector, ProtectError> {
        Ok(Protector { input })
    }

    /// Whether `op` may go ahead.
    pub fn check(&self, op: &Op<'_>) -> Result<(), Denial> {
        let _ = (op, &self.input);
        Ok(())
    }
}
