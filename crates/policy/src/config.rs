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

/// The embedded default policy (TOML).
pub const DEFAULT_POLICY_TOML: &str = include_str!("../defaults/default.toml");

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
        detail: String,
        /// The canonical workspace path to add to `trusted_workspaces`.
        workspace: PathBuf,
        /// Where the user config lives (for the message).
        user_config: String,
    },
}

fn fmt_at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// File format.

/// A limit in a config file: a number, or `"none"` / `"unlimited"` to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Value(u64),
    Unlimited,
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, or \"none\" to remove the limit")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Limit, E> {
                Ok(Limit::Value(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Limit, E> {
                u64::try_from(v).map(Limit::Value).map_err(|_| {
                    E::custom(format!(
                        "{v} is negative; use a non-negative integer, or \"none\" to remove the limit"
                    ))
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Limit, E> {
                match v {
                    "none" | "unlimited" => Ok(Limit::Unlimited),
                    _ => Err(E::custom(format!(
                        "{v:?} is not a limit; use a non-negative integer, or \"none\" to remove the limit"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Limit {
    fn to_option(self) -> Option<u64> {
        match self {
            Limit::Value(v) => Some(v),
            Limit::Unlimited => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialFilesystem {
    read_only: Option<bool>,
    writable_roots: Option<Vec<String>>,
    protected_names: Option<Vec<String>>,
    protected_paths: Option<Vec<String>>,
    deny_read: Option<Vec<String>>,
    allow_unix_sockets: Option<Vec<String>>,
    allow_dangerous_roots: Option<bool>,
    walk_exempt: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialNetwork {
    mode: Option<NetworkMode>,
    allowed_domains: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialEnv {
    inherit: Option<EnvInherit>,
    exclude: Option<Vec<String>>,
    set: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialLimits {
    timeout_secs: Option<Limit>,
    max_memory: Option<Limit>,
    max_processes: Option<Limit>,
    max_open_files: Option<Limit>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialTemp {
    private: Option<bool>,
    persist: Option<bool>,
}

/// A policy with every key optional: one layer (or one profile) of configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialPolicy {
    filesystem: Option<PartialFilesystem>,
    network: Option<PartialNetwork>,
    env: Option<PartialEnv>,
    limits: Option<PartialLimits>,
    temp: Option<PartialTemp>,
}

/// A config file: a partial policy plus profiles and (user/`--config` only) trusted workspaces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    filesystem: Option<PartialFilesystem>,
    network: Option<PartialNetwork>,
    env: Option<PartialEnv>,
    limits: Option<PartialLimits>,
    temp: Option<PartialTemp>,
    #[serde(default)]
    profiles: BTreeMap<String, PartialPolicy>,
    trusted_workspaces: Option<Vec<String>>,
}

impl ConfigFile {
    fn base(&self) -> PartialPolicy {
        PartialPolicy {
            filesystem: self.filesystem.clone(),
            network: self.network.clone(),
            env: self.env.clone(),
            limits: self.limits.clone(),
            temp: self.temp.clone(),
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "filesystem",
    "network",
    "env",
    "limits",
    "temp",
    "profiles",
    "trusted_workspaces",
];
const SECTIONS: &[&str] = &["filesystem", "network", "env", "limits", "temp"];
const FILESYSTEM_KEYS: &[&str] = &[
    "read_only",
    "writable_roots",
    "protected_names",
    "protected_paths",
    "deny_read",
    "allow_unix_sockets",
    "allow_dangerous_roots",
    "walk_exempt",
];
const NETWORK_KEYS: &[&str] = &["mode", "allowed_domains"];
const ENV_KEYS: &[&str] = &["inherit", "exclude", "set"];
const LIMITS_KEYS: &[&str] = &[
    "timeout_secs",
    "max_memory",
    "max_processes",
    "max_open_files",
];
const TEMP_KEYS: &[&str] = &["private", "persist"];

fn section_keys(section: &str) -> &'static [&'static str] {
    match section {
        "filesystem" => FILESYSTEM_KEYS,
        "network" => NETWORK_KEYS,
        "env" => ENV_KEYS,
        "limits" => LIMITS_KEYS,
        _ => TEMP_KEYS,
    }
}

/// Every unknown key of a parsed file: (dotted key, the keys valid at that place).
fn find_unknown(t: &toml::Table) -> Vec<(String, &'static [&'static str])> {
    fn sections(
        t: &toml::Table,
        prefix: &str,
        allowed: &'static [&'static str],
        out: &mut Vec<(String, &'static [&'static str])>,
    ) {
        for (k, v) in t {
            if !allowed.contains(&k.as_str()) {
                out.push((format!("{prefix}{k}"), allowed));
                continue;
            }
            if k == "profiles" {
                if let toml::Value::Table(profiles) = v {
                    for (name, p) in profiles {
                        if let toml::Value::Table(p) = p {
                            sections(p, &format!("profiles.{name}."), SECTIONS, out);
                        }
                    }
                }
            } else if let toml::Value::Table(st) = v {
                if SECTIONS.contains(&k.as_str()) {
                    let keys = section_keys(k);
                    for sk in st.keys() {
                        if !keys.contains(&sk.as_str()) {
                            out.push((format!("{prefix}{k}.{sk}"), keys));
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    sections(t, "", TOP_KEYS, &mut out);
    out
}

fn one_line(msg: &str) -> String {
    msg.trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn parse_config(text: &str, file: &Path) -> Result<ConfigFile, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError::Parse {
            file: file.to_path_buf(),
            line,
            column,
            message: one_line(e.message()),
        }
    })?;
    let unknown = find_unknown(&table);
    let typed = toml::from_str::<ConfigFile>(text);
    let (err_line, err_col, err_msg) = match &typed {
        Ok(_) => (None, None, None),
        Err(e) => {
            let (l, c) = e.span().map(|s| line_col(text, s.start)).unzip();
            (l, c, Some(one_line(e.message())))
        }
    };
    if !unknown.is_empty() {
        // Prefer the unknown key the parser stopped at (its span gives the line).
        let flagged = err_msg
            .as_deref()
            .and_then(|m| m.strip_prefix("unknown field `"))
            .and_then(|m| m.split('`').next());
        let hit = flagged.and_then(|name| {
            unknown
                .iter()
                .find(|(k, _)| k.rsplit('.').next() == Some(name))
        });
        let (key, expected) = hit.unwrap_or(&unknown[0]);
        let (line, column) = if hit.is_some() {
            (err_line, err_col)
        } else {
            (None, None)
        };
        return Err(ConfigError::UnknownKey {
            file: file.to_path_buf(),
            key: key.clone(),
            line,
            column,
            expected: expected.join(", "),
        });
    }
    typed.map_err(|_| ConfigError::Invalid {
        file: file.to_path_buf(),
        line: err_line,
        column: err_col,
        message: err_msg.unwrap_or_default(),
    })
}

/// Read a file; `Ok(None)` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            file: path.to_path_buf(),
            source,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Merging.

/// Context for checking an untrusted workspace layer.
struct Guard<'a> {
    file: &'a Path,
    workspace: &'a Path,
    user_config: &'a str,
    key_prefix: String,
}

impl Guard<'_> {
    fn deny(&self, key: &str, detail: String) -> ConfigError {
        ConfigError::UntrustedWidening {
            file: self.file.to_path_buf(),
            key: format!("{}{key}", self.key_prefix),
            detail,
            workspace: self.workspace.to_path_buf(),
            user_config: self.user_config.to_string(),
        }
    }
}

fn inherit_rank(i: EnvInherit) -> u8 {
    match i {
        EnvInherit::None => 0,
        EnvInherit::Core => 1,
        EnvInherit::All => 2,
    }
}

fn empty_policy() -> Policy {
    Policy {
        filesystem: FilesystemPolicy {
            read_only: false,
            writable_roots: Vec::new(),
            protected_names: Vec::new(),
            protected_paths: Vec::new(),
            deny_read: Vec::new(),
            allow_unix_sockets: Vec::new(),
            allow_dangerous_roots: false,
            walk_exempt: Vec::new(),
        },
        network: NetworkPolicy {
            mode: NetworkMode::Off,
            allowed_domains: Vec::new(),
        },
        env: EnvPolicy {
            inherit: EnvInherit::All,
            exclude: Vec::new(),
            set: BTreeMap::new(),
        },
        limits: LimitsPolicy::default(),
        temp: TempPolicy {
            private: true,
            persist: false,
        },
    }
}

struct Merger {
    policy: Policy,
    prov: Provenance,
    warnings: Vec<String>,
}

fn note_value(prov: &mut Provenance, key: &str, src: &Source) {
    if let KeyProvenance::Value { set_by } = prov
        .keys
        .entry(key.to_string())
        .or_insert_with(|| KeyProvenance::Value { set_by: Vec::new() })
    {
        set_by.push(src.clone());
    }
}

fn set_value<T>(slot: &mut T, v: T, prov: &mut Provenance, key: &str, src: &Source) {
    *slot = v;
    note_value(prov, key, src);
}

fn same_entry(a: &str, b: &str) -> bool {
    let trim = |s: &str| -> String {
        if s.len() > 1 {
            s.trim_end_matches('/').to_string()
        } else {
            s.to_string()
        }
    };
    trim(a) == trim(b)
}

fn merge_list(
    slot: &mut Vec<String>,
    items: &[String],
    prov: &mut Provenance,
    warnings: &mut Vec<String>,
    key: &str,
    src: &Source,
) {
    let p = prov
        .keys
        .entry(key.to_string())
        .or_insert_with(|| KeyProvenance::List {
            set_by: Vec::new(),
            entries: Vec::new(),
            removed: Vec::new(),
        });
    let KeyProvenance::List {
        set_by,
        entries,
        removed,
    } = p
    else {
        return;
    };
    set_by.push(src.clone());
    for item in items {
        if item == "!" || item == "!*" {
            let gone: Vec<String> = entries.drain(..).map(|e| e.value).collect();
            removed.push(Removal {
                pattern: item.clone(),
                removed: gone,
                source: src.clone(),
            });
        } else if let Some(target) = item.strip_prefix('!') {
            let before = entries.len();
            let mut gone = Vec::new();
            entries.retain(|e| {
                let hit = same_entry(&e.value, target);
                if hit {
                    gone.push(e.value.clone());
                }
                !hit
            });
            if entries.len() == before {
                warnings.push(format!(
                    "`{key}` entry {item:?} in {src} removes nothing: no inherited entry is {target:?}"
                ));
            }
            removed.push(Removal {
                pattern: item.clone(),
                removed: gone,
                source: src.clone(),
            });
        } else if !entries.iter().any(|e| e.value == *item) {
            entries.push(ListEntry {
                value: item.clone(),
                source: src.clone(),
            });
        }
    }
    *slot = entries.iter().map(|e| e.value.clone()).collect();
}

fn merge_map(
    slot: &mut BTreeMap<String, String>,
    items: &BTreeMap<String, String>,
    prov: &mut Provenance,
    key: &str,
    src: &Source,
) {
    let p = prov
        .keys
        .entry(key.to_string())
        .or_insert_with(|| KeyProvenance::Map {
            entries: BTreeMap::new(),
        });
    let KeyProvenance::Map { entries } = p else {
        return;
    };
    for (k, v) in items {
        slot.insert(k.clone(), v.clone());
        entries.entry(k.clone()).or_default().push(src.clone());
    }
}

impl Merger {
    fn new() -> Merger {
        Merger {
            policy: empty_policy(),
            prov: Provenance::default(),
            warnings: Vec::new(),
        }
    }

    fn list(&mut self, section: &str, key: &str, items: &[String], src: &Source) {
        let pol = &mut self.policy;
        let slot = match (section, key) {
            ("filesystem", "writable_roots") => &mut pol.filesystem.writable_roots,
            ("filesystem", "protected_names") => &mut pol.filesystem.protected_names,
            ("filesystem", "protected_paths") => &mut pol.filesystem.protected_paths,
            ("filesystem", "deny_read") => &mut pol.filesystem.deny_read,
            ("filesystem", "allow_unix_sockets") => &mut pol.filesystem.allow_unix_sockets,
            ("filesystem", "walk_exempt") => &mut pol.filesystem.walk_exempt,
            ("network", "allowed_domains") => &mut pol.network.allowed_domains,
            _ => &mut pol.env.exclude,
        };
        merge_list(
            slot,
            items,
            &mut self.prov,
            &mut self.warnings,
            &format!("{section}.{key}"),
            src,
        );
    }

    /// Apply one partial policy. With a guard, widening values are refused before anything of
    /// this key is applied.
    fn apply(
        &mut self,
        p: &PartialPolicy,
        src: &Source,
        guard: Option<&Guard<'_>>,
    ) -> Result<(), ConfigError> {
        let widen = |key: &str, detail: String| -> Result<(), ConfigError> {
            match guard {
                Some(g) => Err(g.deny(key, detail)),
                None => Ok(()),
            }
        };
        if let Some(f) = &p.filesystem {
            if let Some(v) = f.read_only {
                if !v && self.policy.filesystem.read_only {
                    widen(
                        "filesystem.read_only",
                        "= false turns read-only mode off".into(),
                    )?;
                }
                set_value(
                    &mut self.policy.filesystem.read_only,
                    v,
                    &mut self.prov,
                    "filesystem.read_only",
                    src,
                );
            }
            if let Some(items) = &f.writable_roots {
                if let Some(e) = items.iter().find(|e| !e.starts_with('!')) {
                    widen(
                        "filesystem.writable_roots",
                        format!("adds the writable root {e:?}"),
                    )?;
                }
                self.list("filesystem", "writable_roots", items, src);
            }
            for (key, items) in [
                ("protected_names", &f.protected_names),
                ("protected_paths", &f.protected_paths),
                ("deny_read", &f.deny_read),
            ] {
                let Some(items) = items else { continue };
                if let Some(e) = items.iter().find(|e| e.starts_with('!')) {
                    widen(
                        &format!("filesystem.{key}"),
                        format!("entry {e:?} removes inherited protection"),
                    )?;
                }
                self.list("filesystem", key, items, src);
            }
            if let Some(items) = &f.allow_unix_sockets {
                if let Some(e) = items.iter().find(|e| !e.starts_with('!')) {
                    widen(
                        "filesystem.allow_unix_sockets",
                        format!("allows connecting to {e:?}"),
                    )?;
                }
                self.list("filesystem", "allow_unix_sockets", items, src);
            }
            if let Some(items) = &f.walk_exempt {
                if let Some(e) = items.iter().find(|e| !e.starts_with('!')) {
                    widen(
                        "filesystem.walk_exempt",
                        format!(
                            "exempts {e:?} from the protected-name walk (only your own config \
                             may do that)"
                        ),
                    )?;
                }
                self.list("filesystem", "walk_exempt", items, src);
            }
            if let Some(v) = f.allow_dangerous_roots {
                if v && !self.policy.filesystem.allow_dangerous_roots {
                    widen(
                        "filesystem.allow_dangerous_roots",
                        "= true allows system and home directories as writable roots".into(),
                    )?;
                }
                set_value(
                    &mut self.policy.filesystem.allow_dangerous_roots,
                    v,
                    &mut self.prov,
                    "filesystem.allow_dangerous_roots",
                    src,
                );
            }
        }
        if let Some(n) = &p.network {
            if let Some(v) = n.mode {
                if v.rank() > self.policy.network.mode.rank() {
                    widen(
                        "network.mode",
                        format!(
                            "= \"{v}\" gives more network than \"{}\"",
                            self.policy.network.mode
                        ),
                    )?;
                }
                set_value(
                    &mut self.policy.network.mode,
                    v,
                    &mut self.prov,
                    "network.mode",
                    src,
                );
            }
            if let Some(items) = &n.allowed_domains {
                if let Some(e) = items.iter().find(|e| !e.starts_with('!')) {
                    widen(
                        "network.allowed_domains",
                        format!("allows the domain {e:?}"),
                    )?;
                }
                self.list("network", "allowed_domains", items, src);
            }
        }
        if let Some(e) = &p.env {
            if let Some(v) = e.inherit {
                if inherit_rank(v) > inherit_rank(self.policy.env.inherit) {
                    widen(
                        "env.inherit",
                        format!(
                            "= {:?} inherits more than the current {:?}",
                            inherit_name(v),
                            inherit_name(self.policy.env.inherit)
                        ),
                    )?;
                }
                set_value(
                    &mut self.policy.env.inherit,
                    v,
                    &mut self.prov,
                    "env.inherit",
                    src,
                );
            }
            if let Some(items) = &e.exclude {
                if let Some(x) = items.iter().find(|x| x.starts_with('!')) {
                    widen(
                        "env.exclude",
                        format!("entry {x:?} lets excluded variables through"),
                    )?;
                }
                self.list("env", "exclude", items, src);
            }
            if let Some(set) = &e.set {
                merge_map(
                    &mut self.policy.env.set,
                    set,
                    &mut self.prov,
                    "env.set",
                    src,
                );
            }
        }
        if let Some(l) = &p.limits {
            let lim = &mut self.policy.limits;
            for (key, new, slot) in [
                ("limits.timeout_secs", l.timeout_secs, &mut lim.timeout_secs),
                ("limits.max_memory", l.max_memory, &mut lim.max_memory),
                (
                    "limits.max_processes",
                    l.max_processes,
                    &mut lim.max_processes,
                ),
                (
                    "limits.max_open_files",
                    l.max_open_files,
                    &mut lim.max_open_files,
                ),
            ] {
                let Some(new) = new else { continue };
                if let Some(cur) = *slot {
                    match new {
                        Limit::Unlimited => widen(key, format!("removes the limit {cur}"))?,
                        Limit::Value(n) if n > cur => {
                            widen(key, format!("raises the limit from {cur} to {n}"))?
                        }
                        Limit::Value(_) => {}
                    }
                }
                set_value(slot, new.to_option(), &mut self.prov, key, src);
            }
        }
        if let Some(t) = &p.temp {
            if let Some(v) = t.private {
                if !v && self.policy.temp.private {
                    widen(
                        "temp.private",
                        "= false shares the host's /tmp with the sandbox".into(),
                    )?;
                }
                set_value(
                    &mut self.policy.temp.private,
                    v,
                    &mut self.prov,
                    "temp.private",
                    src,
                );
            }
            if let Some(v) = t.persist {
                set_value(
                    &mut self.policy.temp.persist,
                    v,
                    &mut self.prov,
                    "temp.persist",
                    src,
                );
            }
        }
        Ok(())
    }

    fn apply_cli(&mut self, cli: &CliOverrides) {
        let src = Source::Cli;
        if !cli.writable.is_empty() {
            self.list("filesystem", "writable_roots", &cli.writable, &src);
        }
        if let Some(m) = cli.network {
            set_value(
                &mut self.policy.network.mode,
                m,
                &mut self.prov,
                "network.mode",
                &src,
            );
        }
        if !cli.allow_domains.is_empty() {
            self.list("network", "allowed_domains", &cli.allow_domains, &src);
        }
        if cli.read_only {
            set_value(
                &mut self.policy.filesystem.read_only,
                true,
                &mut self.prov,
                "filesystem.read_only",
                &src,
            );
        }
        if cli.allow_dangerous_roots {
            set_value(
                &mut self.policy.filesystem.allow_dangerous_roots,
                true,
                &mut self.prov,
                "filesystem.allow_dangerous_roots",
                &src,
            );
        }
        if let Some(t) = cli.timeout_secs {
            set_value(
                &mut self.policy.limits.timeout_secs,
                Some(t),
                &mut self.prov,
                "limits.timeout_secs",
                &src,
            );
        }
        if !cli.env_set.is_empty() {
            let map: BTreeMap<String, String> = cli.env_set.iter().cloned().collect();
            merge_map(
                &mut self.policy.env.set,
                &map,
                &mut self.prov,
                "env.set",
                &src,
            );
        }
    }
}

fn inherit_name(i: EnvInherit) -> &'static str {
    match i {
        EnvInherit::All => "all",
        EnvInherit::Core => "core",
        EnvInherit::None => "none",
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// The embedded default policy, parsed.
pub fn default_policy() -> Result<Policy, ConfigError> {
    let file = parse_config(DEFAULT_POLICY_TOML, Path::new("<embedded default policy>"))?;
    let mut m = Merger::new();
    m.apply(&file.base(), &Source::Default, None)?;
    Ok(m.policy)
}

/// The user config file location: `<config_dir>/stockade/config.toml`, where `config_dir` is
/// `override_dir`, else `$XDG_CONFIG_HOME` (if absolute), else `<home>/.config`.
pub fn user_config_path(override_dir: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let base = match override_dir {
        Some(d) => d.to_path_buf(),
        None => match std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
            Some(x) if x.is_absolute() => x,
            _ => home?.join(".config"),
        },
    };
    Some(base.join("stockade").join("config.toml"))
}

/// The workspace config file location: `<workspace>/.stockade/config.toml`.
pub fn workspace_config_path(workspace: &Path) -> PathBuf {
    workspace.join(".stockade").join("config.toml")
}

struct FileLayer {
    source: Source,
    file: ConfigFile,
    path: PathBuf,
    untrusted: bool,
}

/// Load and merge every layer (see the [module docs](self) for the order, merge rules and the
/// workspace trust rule).
pub fn load(req: &LoadRequest) -> Result<Loaded, ConfigError> {
    let workspace = std::fs::canonicalize(&req.workspace).unwrap_or_else(|_| req.workspace.clone());
    let mut layers = vec![LayerInfo {
        source: Source::Default,
        path: None,
        status: LayerStatus::Loaded,
        trusted: None,
    }];
    let default_file = parse_config(DEFAULT_POLICY_TOML, Path::new("<embedded default policy>"))?;
    let mut files: Vec<FileLayer> = Vec::new();
    let mut trusted_entries: Vec<(PathBuf, String)> = Vec::new();

    let user_path = user_config_path(req.config_dir.as_deref(), req.home.as_deref());
    let user_label = user_path.as_ref().map_or_else(
        || "your user config".to_string(),
        |p| p.display().to_string(),
    );
    match &user_path {
        Some(path) => {
            let source = Source::User(path.clone());
            match read_optional(path)? {
                Some(text) => {
                    let file = parse_config(&text, path)?;
                    for e in file.trusted_workspaces.iter().flatten() {
                        trusted_entries.push((path.clone(), e.clone()));
                    }
                    layers.push(LayerInfo {
                        source: source.clone(),
                        path: Some(path.clone()),
                        status: LayerStatus::Loaded,
                        trusted: None,
                    });
                    files.push(FileLayer {
                        source,
                        file,
                        path: path.clone(),
                        untrusted: false,
                    });
                }
                None => layers.push(LayerInfo {
                    source,
                    path: Some(path.clone()),
                    status: LayerStatus::Missing,
                    trusted: None,
                }),
            }
        }
        None => layers.push(LayerInfo {
            source: Source::User(PathBuf::from("~/.config/stockade/config.toml")),
            path: None,
            status: LayerStatus::NoLocation,
            trusted: None,
        }),
    }

    let ws_path = workspace_config_path(&workspace);
    let ws_text = read_optional(&ws_path)?;
    let ws_file = match &ws_text {
        Some(text) => {
            let f = parse_config(text, &ws_path)?;
            if f.trusted_workspaces.is_some() {
                return Err(ConfigError::NotAllowedHere {
                    file: ws_path,
                    key: "trusted_workspaces".into(),
                    reason: format!(
                        "a workspace cannot trust itself; list trusted workspaces in {user_label}"
                    ),
                });
            }
            Some(f)
        }
        None => None,
    };

    let mut config_layer = None;
    if let Some(path) = &req.config_file {
        let text = read_optional(path)?
            .ok_or_else(|| ConfigError::MissingConfigFile { file: path.clone() })?;
        let file = parse_config(&text, path)?;
        for e in file.trusted_workspaces.iter().flatten() {
            trusted_entries.push((path.clone(), e.clone()));
        }
        config_layer = Some(FileLayer {
            source: Source::Config(path.clone()),
            file,
            path: path.clone(),
            untrusted: false,
        });
    }

    let trusted = is_trusted(&workspace, &trusted_entries, req.home.as_deref())?;
    let ws_source = Source::Workspace(ws_path.clone());
    layers.push(LayerInfo {
        source: ws_source.clone(),
        path: Some(ws_path.clone()),
        status: if ws_file.is_some() {
            LayerStatus::Loaded
        } else {
            LayerStatus::Missing
        },
        trusted: Some(trusted),
    });
    if let Some(file) = ws_file {
        files.push(FileLayer {
            source: ws_source,
            file,
            path: ws_path,
            untrusted: !trusted,
        });
    }
    if let Some(c) = config_layer {
        layers.push(LayerInfo {
            source: c.source.clone(),
            path: Some(c.path.clone()),
            status: LayerStatus::Loaded,
            trusted: None,
        });
        files.push(c);
    }

    // Profiles must exist somewhere before anything is merged.
    if let Some(name) = &req.profile {
        let in_default = default_file.profiles.contains_key(name);
        if !in_default && !files.iter().any(|f| f.file.profiles.contains_key(name)) {
            let mut known: Vec<&String> = default_file
                .profiles
                .keys()
                .chain(files.iter().flat_map(|f| f.file.profiles.keys()))
                .collect();
            known.sort();
            known.dedup();
            let known = if known.is_empty() {
                "no config file defines any profile; define one as [profiles.NAME.<section>]"
                    .to_string()
            } else {
                format!(
                    "known profiles: {}",
                    known
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(ConfigError::UnknownProfile {
                name: name.clone(),
                known,
            });
        }
    }

    let mut m = Merger::new();
    m.apply(&default_file.base(), &Source::Default, None)?;
    for f in &files {
        let guard = f.untrusted.then(|| Guard {
            file: &f.path,
            workspace: &workspace,
            user_config: &user_label,
            key_prefix: String::new(),
        });
        m.apply(&f.file.base(), &f.source, guard.as_ref())?;
    }
    if let Some(name) = &req.profile {
        let profile_layers = std::iter::once((&Source::Default, &default_file, None, false)).chain(
            files
                .iter()
                .map(|f| (&f.source, &f.file, Some(&f.path), f.untrusted)),
        );
        for (source, file, path, untrusted) in profile_layers {
            let Some(p) = file.profiles.get(name) else {
                continue;
            };
            let src = Source::Profile {
                name: name.clone(),
                layer: Box::new(source.clone()),
            };
            let guard = match (untrusted, path) {
                (true, Some(path)) => Some(Guard {
                    file: path,
                    workspace: &workspace,
                    user_config: &user_label,
                    key_prefix: format!("profiles.{name}."),
                }),
                _ => None,
            };
            m.apply(p, &src, guard.as_ref())?;
            layers.push(LayerInfo {
                source: src,
                path: path.cloned(),
                status: LayerStatus::Loaded,
                trusted: None,
            });
        }
    }
    m.apply_cli(&req.cli);
    if req.cli != CliOverrides::default() {
        layers.push(LayerInfo {
            source: Source::Cli,
            path: None,
            status: LayerStatus::Loaded,
            trusted: None,
        });
    }
    Ok(Loaded {
        policy: m.policy,
        provenance: m.prov,
        layers,
        warnings: m.warnings,
    })
}

fn is_trusted(
    workspace: &Path,
    entries: &[(PathBuf, String)],
    home: Option<&Path>,
) -> Result<bool, ConfigError> {
    for (file, entry) in entries {
        let bad = |reason: String| ConfigError::BadTrustedWorkspace {
            file: file.clone(),
            entry: entry.clone(),
            reason,
        };
        if !entry.starts_with('~') && !Path::new(entry).is_absolute() {
            return Err(bad(
                "it must be an absolute path or start with `~/`".to_string()
            ));
        }
        let p = expand_path(entry, home, Path::new("/")).map_err(|e| bad(e.to_string()))?;
        let p = std::fs::canonicalize(&p).unwrap_or(p);
        if p == workspace {
            return Ok(true);
        }
    }
    Ok(false)
}

// ---------------------------------------------------------------------------------------------
// Rendering (`stockade policy show`).

impl Loaded {
    /// JSON for `stockade policy show --json`: `{"policy", "provenance", "layers", "warnings"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "policy": serde_json::to_value(&self.policy).unwrap_or_default(),
            "provenance": serde_json::to_value(&self.provenance).unwrap_or_default(),
            "layers": serde_json::to_value(&self.layers).unwrap_or_default(),
            "warnings": self.warnings,
        })
    }

    /// Human-readable text: the layers, then every key in TOML-like form with the layer that
    /// set it (per entry for lists and `env.set`).
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "# Layers, in order (later wins):")?;
        for l in &self.layers {
            let status = match l.status {
                LayerStatus::Loaded => "loaded",
                LayerStatus::Missing => "not found, skipped",
                LayerStatus::NoLocation => "no home directory, skipped",
            };
            let trust = match l.trusted {
                Some(true) => ", trusted",
                Some(false) => ", untrusted (may only narrow)",
                None => "",
            };
            let name = match (&l.source, l.status) {
                (Source::Default, _) => "default (embedded)".to_string(),
                (s, _) => s.to_string(),
            };
            writeln!(out, "#   {name}: {status}{trust}")?;
        }
        for w in &self.warnings {
            writeln!(out, "# warning: {w}")?;
        }
        let json = serde_json::to_value(&self.policy).unwrap_or_default();
        for section in SECTIONS {
            writeln!(out, "\n[{section}]")?;
            for key in section_keys(section) {
                let dotted = format!("{section}.{key}");
                let value = json.get(section).and_then(|s| s.get(key));
                self.write_key(out, &dotted, key, value)?;
            }
            if *section == "env" {
                writeln!(
                    out,
                    "# also removed, whatever the name: variables whose value holds a URL with \
                     credentials (scheme://user:pass@host); env.set / --env passes one anyway"
                )?;
            }
        }
        Ok(())
    }

    fn write_key(
        &self,
        out: &mut String,
        dotted: &str,
        key: &str,
        value: Option<&serde_json::Value>,
    ) -> fmt::Result {
        use serde_json::Value;
        let comment = |s: Option<&Source>| match s {
            Some(s) => format!("# {s}"),
            None => "# (not set by any layer)".to_string(),
        };
        match value {
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    let src = self.provenance.effective(dotted);
                    writeln!(out, "{key} = []  {}", comment(src))?;
                } else {
                    writeln!(out, "{key} = [")?;
                    for item in items {
                        let text = item.as_str().unwrap_or_default();
                        let src = self.provenance.list_entry_source(dotted, text);
                        writeln!(out, "  {item},  {}", comment(src))?;
                    }
                    writeln!(out, "]")?;
                }
                if let Some(KeyProvenance::List { removed, .. }) = self.provenance.get(dotted) {
                    for r in removed.iter().filter(|r| !r.removed.is_empty()) {
                        writeln!(
                            out,
                            "#   {:?} in {} removed {}",
                            r.pattern,
                            r.source,
                            serde_json::to_string(&r.removed).unwrap_or_default()
                        )?;
                    }
                }
            }
            Some(Value::Object(map)) => {
                if map.is_empty() {
                    writeln!(out, "{key} = {{}}")?;
                } else {
                    for (name, v) in map {
                        let src = self.provenance.map_entry_source(dotted, name);
                        let quoted = serde_json::to_string(name).unwrap_or_default();
                        writeln!(out, "{key}.{quoted} = {v}  {}", comment(src))?;
                    }
                }
            }
            Some(Value::Null) | None => match self.provenance.effective(dotted) {
                Some(src) => writeln!(out, "# {key}: no limit (removed)  # {src}")?,
                None => writeln!(out, "# {key}: no limit (not set by any layer)")?,
            },
            Some(v) => {
                let src = self.provenance.effective(dotted);
                writeln!(out, "{key} = {v}  {}", comment(src))?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_text())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
