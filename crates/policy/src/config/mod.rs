//! Layered configuration loading with provenance.
//!
//! # Layers
//!
//! A policy is built from up to five layers; later layers win:
//!
//! 1. `default` — the embedded default policy ([`DEFAULT_POLICY_TOML`]).
//! 2. `user:<path>` — `$XDG_CONFIG_HOME/stockade/config.toml` (or `~/.config/...`); skipped if
//!    missing.
//! 3. `workspace:<path>` — `<workspace>/.stockade/config.toml`; skipped if missing. **Untrusted**,
//!    see below.
//! 4. `config:<path>` — the file given with `--config`; it must exist.
//! 5. `cli` — [`CliOverrides`] from command-line flags.
//!
//! With `--profile NAME`, after layers 1–4 are merged, every file's `[profiles.NAME]` table is
//! applied in the same layer order (source `profile NAME in <layer>`), then the CLI layer. A
//! profile name that no layer defines is an error.
//!
//! A config file has the same sections and keys as [`Policy`], every key optional, plus
//! `[profiles.NAME.<section>]` tables of the same shape and (user config and `--config` only) a
//! top-level `trusted_workspaces = ["~/src/proj", ...]`. Unknown keys are errors, so a typo never
//! silently weakens a policy.
//!
//! # Merge rules
//!
//! * Scalars (`read_only`, `network.mode`, `env.inherit`, limits, ...) replace the inherited value.
//!   A limit can be removed with the string `"none"`.
//! * Lists append, in order, skipping entries already present. An entry `"!x"` removes the
//!   inherited entry `x` (exact text, ignoring a trailing `/`); a bare `"!"` or `"!*"` clears the
//!   whole inherited list. Entries are processed in order, so `["!", "a"]` means "exactly `a`".
//! * `env.set` maps merge per variable name.
//!
//! # Workspace trust
//!
//! The workspace config arrives with the repository, which may come from anywhere (and the
//! sandboxed agent might write it). Unless the workspace's canonical path is listed in
//! `trusted_workspaces` (user config or `--config` file), any workspace-layer value (including its
//! profiles) that *widens* access relative to what it inherits is an error: `network.mode = "on"`,
//! any `writable_roots`, `allow_unix_sockets` or `walk_exempt` entry, any `!` removal from `deny_read`,
//! `protected_names`, `protected_paths` or `env.exclude`, `allow_dangerous_roots = true`,
//! `read_only = false` when it was `true`, a wider `env.inherit` (`none` < `core` < `all`), a limit
//! raised or removed, and `temp.private = false` when it was `true`. Narrowing is always allowed.
//! A workspace config may never contain `trusted_workspaces`.

use crate::model::{EnvInherit, NetworkMode, Policy};
use crate::model::{EnvPolicy, FilesystemPolicy, LimitsPolicy, NetworkPolicy, TempPolicy};
use crate::paths::expand_path;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;
use std::path::{Path, PathBuf};

mod format;
mod load;
mod merge;
mod overlay_keys;
mod render;

use format::*;
pub use load::{default_policy, load, user_config_path, workspace_config_path};
use merge::*;

/// The embedded default policy (TOML).
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../defaults/default.toml");

/// Settings from command-line flags, applied last (source `cli`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliOverrides {
    /// Extra writable roots (`--writable`), appended to `filesystem.writable_roots`. Relative
    /// entries are resolved against the workspace, like config entries: pass absolute paths to
    /// mean "relative to the current directory".
    pub writable: Vec<String>,
    /// `--network off|allowlist|on`.
    pub network: Option<NetworkMode>,
    /// `--allow-domain D` (repeatable): appended to `network.allowed_domains`.
    pub allow_domains: Vec<String>,
    /// `--read-only` (only ever turns read-only mode on).
    pub read_only: bool,
    /// `--allow-dangerous-roots` (only ever turns it on).
    pub allow_dangerous_roots: bool,
    /// `--timeout SECS`: sets `limits.timeout_secs`.
    pub timeout_secs: Option<u64>,
    /// `--env NAME=VALUE`: merged into `env.set`.
    pub env_set: Vec<(String, String)>,
}

impl CliOverrides {
    /// Make relative `writable` entries absolute against `cwd` (the directory the user ran
    /// Stockade in), leaving `~`, `!` and absolute entries alone. Without this, relative entries
    /// are resolved against the workspace, like config-file entries.
    pub fn absolutize_writable(&mut self, cwd: &Path) {
        for w in &mut self.writable {
            if !w.is_empty()
                && !w.starts_with('~')
                && !w.starts_with('!')
                && !Path::new(w.as_str()).is_absolute()
            {
                *w = cwd.join(w.as_str()).to_string_lossy().into_owned();
            }
        }
    }
}

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct LoadRequest {
    /// The workspace (its `.stockade/config.toml` is the workspace layer).
    pub workspace: PathBuf,
    /// The caller's home directory (for `~/` in `trusted_workspaces` and the default user config
    /// location).
    pub home: Option<PathBuf>,
    /// Overrides `$XDG_CONFIG_HOME`: the user config is `<config_dir>/stockade/config.toml`.
    pub config_dir: Option<PathBuf>,
    /// `--config FILE` (must exist).
    pub config_file: Option<PathBuf>,
    /// `--profile NAME`.
    pub profile: Option<String>,
    /// Command-line overrides.
    pub cli: CliOverrides,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The embedded default policy.
    Default,
    /// The user config file.
    User(PathBuf),
    /// The workspace config file.
    Workspace(PathBuf),
    /// The `--config` file.
    Config(PathBuf),
    /// `[profiles.NAME]` of another layer.
    Profile {
        /// Profile name.
        name: String,
        /// The layer whose file holds the profile.
        layer: Box<Source>,
    },
    /// Command-line flags.
    Cli,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::User(p) => write!(f, "user:{}", p.display()),
            Source::Workspace(p) => write!(f, "workspace:{}", p.display()),
            Source::Config(p) => write!(f, "config:{}", p.display()),
            Source::Profile { name, layer } => write!(f, "profile {name} in {layer}"),
            Source::Cli => f.write_str("cli"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether a layer's file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerStatus {
    /// Read and applied.
    Loaded,
    /// The file does not exist; the layer was skipped.
    Missing,
    /// There is no location for it (no home directory for the user config).
    NoLocation,
}

/// One configuration layer, in application order.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    /// The layer.
    pub source: Source,
    /// Its file, if it has one.
    #[serde(serialize_with = "crate::paths::lossy::opt_path")]
    pub path: Option<PathBuf>,
    /// Whether it was found.
    pub status: LayerStatus,
    /// For the workspace layer: whether the workspace is listed in `trusted_workspaces`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted: Option<bool>,
}

/// One entry of a merged list, with the layer that added it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListEntry {
    /// The entry.
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

/// A `!` entry that removed inherited entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// The `!` entry as written.
    pub pattern: String,
    /// The entries it removed.
    pub removed: Vec<String>,
    /// Where the `!` entry came from.
    pub source: Source,
}

/// Where one key's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyProvenance {
    /// A scalar: every layer that set it, in order (the last one is in effect).
    Value {
        /// Layers that set it.
        set_by: Vec<Source>,
    },
    /// A list.
    List {
        /// Layers that mentioned the key, in order.
        set_by: Vec<Source>,
        /// Each entry of the final list with the layer that added it.
        entries: Vec<ListEntry>,
        /// `!` removals, in order.
        removed: Vec<Removal>,
    },
    /// A map (`env.set`): for each name, the layers that set it (the last one is in effect).
    Map {
        /// Per-name sources.
        entries: BTreeMap<String, Vec<Source>>,
    },
}

/// Provenance of every leaf key that some layer set, by dotted key (`network.mode`,
/// `filesystem.deny_read`, `env.set`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Provenance {
    /// By dotted key.
    pub keys: BTreeMap<String, KeyProvenance>,
}

impl Provenance {
    /// Provenance of a dotted key, if any layer set it.
    pub fn get(&self, key: &str) -> Option<&KeyProvenance> {
        self.keys.get(key)
    }

    /// The layer whose value of scalar `key` is in effect.
    pub fn effective(&self, key: &str) -> Option<&Source> {
        match self.keys.get(key)? {
            KeyProvenance::Value { set_by } | KeyProvenance::List { set_by, .. } => set_by.last(),
            KeyProvenance::Map { .. } => None,
        }
    }

    /// The layer that added `value` to list `key`.
    pub fn list_entry_source(&self, key: &str, value: &str) -> Option<&Source> {
        match self.keys.get(key)? {
            KeyProvenance::List { entries, .. } => {
                entries.iter().find(|e| e.value == value).map(|e| &e.source)
            }
            _ => None,
        }
    }

    /// The layer whose value of `env.set` variable `name` is in effect.
    pub fn map_entry_source(&self, key: &str, name: &str) -> Option<&Source> {
        match self.keys.get(key)? {
            KeyProvenance::Map { entries } => entries.get(name)?.last(),
            _ => None,
        }
    }
}

/// The result of [`load`]: the merged policy and where everything came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged policy.
    pub policy: Policy,
    /// Where each key (and list entry) came from.
    pub provenance: Provenance,
    /// The layers, in application order (including skipped ones).
    pub layers: Vec<LayerInfo>,
    /// Non-fatal oddities, e.g. a `!` entry that removed nothing.
    pub warnings: Vec<String>,
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file exists but could not be read.
    #[error("cannot read config file {file:?}: {source}; fix its permissions or remove it")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The `--config` file does not exist.
    #[error("config file {file:?} given with --config does not exist; check the path")]
    MissingConfigFile {
        /// The file.
        file: PathBuf,
    },
    /// A file is not valid TOML.
    #[error(
        "malformed TOML in {file:?} at line {line}, column {column}: {message}; fix the syntax \
         (see docs/policy.md)"
    )]
    Parse {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The TOML parser's message.
        message: String,
    },
    /// A file uses a key Stockade does not know (probably a typo).
    #[error(
        "unknown key `{key}` in {file:?}{at}; valid keys there: {expected}. Check the spelling \
         (see docs/policy.md)",
        at = fmt_at(*line, *column)
    )]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// Dotted key, e.g. `filesystem.deny_reed`.
        key: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// The keys valid at that place.
        expected: String,
    },
    /// A value has the wrong type or an invalid value.
    #[error("invalid value in {file:?}{at}: {message}; see docs/policy.md for the allowed values", at = fmt_at(*line, *column))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A key that is not allowed in this layer (e.g. `trusted_workspaces` in a workspace config).
    #[error("`{key}` is not allowed in {file:?}: {reason}")]
    NotAllowedHere {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// Why, and where it belongs.
        reason: String,
    },
    /// A `trusted_workspaces` entry is not usable.
    #[error("trusted_workspaces entry {entry:?} in {file:?} is invalid: {reason}")]
    BadTrustedWorkspace {
        /// The file.
        file: PathBuf,
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
    /// `--profile NAME` names a profile no layer defines.
    #[error("unknown profile {name:?}: {known}")]
    UnknownProfile {
        /// The requested name.
        name: String,
        /// "known profiles: a, b" or "no config file defines any profile".
        known: String,
    },
    /// An untrusted workspace config tried to widen access.
    #[error(
        "workspace config {file:?} is not trusted and may not widen access: `{key}` {detail}. \
         If you trust this repository, add {workspace:?} to trusted_workspaces in {user_config}; \
         or pass the setting on the command line instead"
    )]
    UntrustedWidening {
        /// The workspace config file.
        file: PathBuf,
        /// Dotted key (prefixed with `profiles.NAME.` for profile tables).
        key: String,
        /// What it tried to do.
        detail: Box<str>,
        /// The canonical workspace path to add to `trusted_workspaces`.
        workspace: PathBuf,
        /// Where the user config lives (for the message). `Box<str>`, like `detail`, keeps
        /// `ConfigError` under clippy's `result_large_err` size where `PathBuf` is 32 bytes
        /// (Windows).
        user_config: Box<str>,
    },
}

fn fmt_at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

#[cfg(test)]
#[path = "../config_tests.rs"]
mod tests;
