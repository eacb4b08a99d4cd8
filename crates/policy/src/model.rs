//! The policy model: what a user (or the embedded default) asks for.
//!
//! Every field is documented here and in the policy reference (`docs/policy.md`); the TOML keys
//! are the field names. Paths in a policy are *unresolved*: they may start with `~/` (the
//! caller's home) or be relative (to the workspace). [`crate::plan`] turns them into canonical
//! paths.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A complete policy. Unknown keys are rejected so a typo never silently weakens a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Filesystem access.
    pub filesystem: FilesystemPolicy,
    /// Network access.
    pub network: NetworkPolicy,
    /// Environment variables passed to the command.
    pub env: EnvPolicy,
    /// Resource limits and the run timeout.
    pub limits: LimitsPolicy,
    /// Private temporary directories.
    pub temp: TempPolicy,
    /// What git metadata stays read-only (see `docs/git.md`).
    pub git: GitPolicy,
}

/// Filesystem rules. Reading is allowed everywhere except `deny_read`; writing only beneath
/// `writable_roots` (the workspace is always one unless `read_only`), minus protected paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemPolicy {
    /// No writable roots at all, not even the workspace.
    pub read_only: bool,
    /// Extra writable directories (the workspace is implicit). `~/` and workspace-relative paths
    /// are accepted. Must exist.
    pub writable_roots: Vec<String>,
    /// Names that stay read-only wherever they occur under a writable root (e.g. `.git`). A `.git`
    /// *file* also protects the gitdir it points to.
    pub protected_names: Vec<String>,
    /// Extra paths kept read-only even if under a writable root.
    pub protected_paths: Vec<String>,
    /// Paths that cannot be read (secrets). Missing ones are ignored.
    pub deny_read: Vec<String>,
    /// Unix socket paths the command may connect to even outside writable roots.
    pub allow_unix_sockets: Vec<String>,
    /// Allow writable roots that are `/`, a system directory or the home directory itself.
    pub allow_dangerous_roots: bool,
    /// Directories under a writable root that the protected-name walk does not descend into (a
    /// protected name inside is then not protected). Only the user's own config, `--config` or a
    /// trusted workspace may add one; the walk otherwise fails closed on a directory it cannot
    /// list.
    #[serde(default)]
    pub walk_exempt: Vec<String>,
    /// What a write outside the writable roots does: `overlay` (default: the home directory and
    /// `overlay_roots` are copy-on-write overlays whose changes stay in Stockade's state until
    /// `stockade apply`) or `deny` (read-only, as before).
    #[serde(default)]
    pub outside_writes: OutsideWrites,
    /// Other directory trees (owned by the caller) overlaid like the home directory.
    #[serde(default)]
    pub overlay_roots: Vec<String>,
    /// Cap on the size of a workspace's overlay state in bytes; a run refuses to start while
    /// the state is over it (`None`: no cap).
    #[serde(default)]
    pub overlay_max_bytes: Option<u64>,
    /// Windows unelevated tier: lock the DACLs of protected paths against the command (the
    /// default; see docs/windows.md, "metadata guards"). `false` is the opt-out: the command can
    /// then re-ACL protected paths first and write, rename or delete them. Only your own config,
    /// `--config` or a trusted workspace may set it to `false`.
    #[serde(default = "default_true")]
    pub windows_lock_protected_dacls: bool,
}

fn default_true() -> bool {
    true
}

/// What a write outside the writable roots does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutsideWrites {
    /// Refused (read-only mounts).
    Deny,
    /// Copy-on-write: kept in a private upper layer, reviewed with `stockade diff`.
    #[default]
    Overlay,
}

/// What the sandbox's `/tmp` and `/var/tmp` are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TempMode {
    /// The host's directories, read-only, beneath a private writable upper layer.
    #[default]
    Overlay,
    /// Private and empty (persisted per workspace when `persist`).
    Empty,
    /// The host's own directories (same as `private = false`).
    Host,
}

/// Network modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Only a private loopback: nothing outside the sandbox is reachable.
    #[default]
    Off,
    /// Only HTTP(S) through Stockade's proxy, to the domains in `allowed_domains`.
    Allowlist,
    /// The host's network, unrestricted.
    On,
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetworkMode::Off => "off",
            NetworkMode::Allowlist => "allowlist",
            NetworkMode::On => "on",
        })
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(NetworkMode::Off),
            "on" => Ok(NetworkMode::On),
            "allowlist" => Ok(NetworkMode::Allowlist),
            other => Err(format!(
                "unknown network mode {other:?}: expected \"off\", \"allowlist\" or \"on\""
            )),
        }
    }
}

/// Network policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// `off` (default), `allowlist` or `on`.
    pub mode: NetworkMode,
    /// With `allowlist`: the domains reachable through the proxy. `example.com` matches exactly;
    /// `*.example.com` matches its subdomains (not `example.com` itself).
    pub allowed_domains: Vec<String>,
}

impl NetworkMode {
    /// How much network a mode gives (for the workspace-trust rule): off < allowlist < on.
    pub fn rank(self) -> u8 {
        match self {
            NetworkMode::Off => 0,
            NetworkMode::Allowlist => 1,
            NetworkMode::On => 2,
        }
    }
}

/// Which variables of the caller's environment are inherited before `exclude` and `set` apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EnvInherit {
    /// Every variable.
    #[default]
    All,
    /// Only a small core set (PATH, HOME, USER, LANG, LC_*, TERM, SHELL, TZ, ...).
    Core,
    /// None.
    None,
}

/// Environment policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvPolicy {
    /// Starting set.
    pub inherit: EnvInherit,
    /// Case-insensitive globs (`*` and `?`) of names removed after inheritance.
    pub exclude: Vec<String>,
    /// Variables set last (override everything).
    pub set: BTreeMap<String, String>,
}

/// Limits. `None` means no limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsPolicy {
    /// Wall-clock limit in seconds; the whole tree is killed when it passes.
    pub timeout_secs: Option<u64>,
    /// Memory limit in bytes.
    pub max_memory: Option<u64>,
    /// Maximum number of processes/threads.
    pub max_processes: Option<u64>,
    /// Maximum number of open files per process.
    pub max_open_files: Option<u64>,
}

/// Git repositories under writable roots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitPolicy {
    /// `commit`: `.git` is writable except what makes git run code or redirects it;
    /// `read-only`: every `.git` stays read-only.
    pub mode: GitMode,
}

/// How much of a repository's `.git` the command may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GitMode {
    /// Objects, refs, index, logs... writable; config, hooks, attributes and everything the
    /// configuration names as a program, hook directory or include stay read-only.
    Commit,
    /// The whole `.git` (and every protected name) read-only.
    ReadOnly,
}

/// Where a `filesystem.protected_names` entry applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NameScope {
    /// A single name, at any depth beneath a writable root (`.git`, or a name without `/`).
    AnyDepth,
    /// A relative path anchored (like a `.gitignore` pattern with a `/`) at the workspace root,
    /// at each writable root and at the root of every repository (a directory holding `.git`),
    /// never deeper: `/.mcp.json`, `/.vscode/tasks.json`.
    Root,
}

/// One parsed `filesystem.protected_names` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtectedName {
    /// The entry as written (what a `!` removal names).
    pub entry: String,
    /// The relative path it protects (no leading or trailing `/`; one component for
    /// [`NameScope::AnyDepth`]).
    pub path: String,
    /// Where it applies.
    pub scope: NameScope,
}

impl ProtectedName {
    /// Parse one entry: `name` (no `/`) applies at any depth; an entry with a `/` (a leading
    /// `/` for a single name: `/.claude`; or inside: `.vscode/tasks.json`) only at the roots
    /// ([`NameScope::Root`]). A trailing `/` (a directory) is ignored. Components must not be
    /// empty, `.` or `..`.
    pub fn parse(entry: &str) -> Result<ProtectedName, String> {
        let trimmed = entry.strip_suffix('/').unwrap_or(entry);
        let (anchored, rel) = match trimmed.strip_prefix('/') {
            Some(r) => (true, r),
            None => (false, trimmed),
        };
        if rel.is_empty()
            || rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(
                "a protected name is a file name such as `.git` (any depth) or a relative \
                        path anchored at the roots such as `/.mcp.json` or `.vscode/tasks.json` \
                        (no empty, `.` or `..` components); use filesystem.protected_paths for \
                        absolute paths"
                    .into(),
            );
        }
        let scope = if anchored || rel.contains('/') {
            NameScope::Root
        } else {
            NameScope::AnyDepth
        };
        Ok(ProtectedName {
            entry: entry.to_string(),
            path: rel.to_string(),
            scope,
        })
    }

    /// What would run from this entry, for denials, the docs and `policy show` (`None`: an entry
    /// Stockade has no description for, e.g. one a user added).
    pub fn what_runs(&self) -> Option<&'static str> {
        what_runs(&self.path)
    }
}

/// Parse every `filesystem.protected_names` entry (see [`ProtectedName::parse`]): the entry
/// that failed and why.
pub fn parse_protected_names(entries: &[String]) -> Result<Vec<ProtectedName>, (String, String)> {
    entries
        .iter()
        .map(|e| ProtectedName::parse(e).map_err(|why| (e.clone(), why)))
        .collect()
}

/// The program that would run from each default protected name (the table in `docs/policy.md`).
pub const WHAT_RUNS: &[(&str, &str)] = &[
    (".git", "git runs hooks, fsmonitor, filters and drivers its metadata names"),
    (".claude", "Claude Code runs the hooks, MCP servers, statusLine and apiKeyHelper commands of .claude/settings*.json outside the sandbox when it next starts here"),
    (".codex", "Codex runs the MCP servers and notify commands of .codex/config.toml outside the sandbox"),
    (".agents", "agents load skills and scripts from .agents/ and run them outside the sandbox"),
    (".stockade", "Stockade's workspace config: it sets the next run's policy"),
    (".mcp.json", "Claude Code and other MCP clients start the servers (commands) it lists"),
    (".gemini/settings.json", "Gemini CLI starts its mcpServers commands and runs its hooks"),
    (".cursor", "Cursor starts the MCP servers of .cursor/mcp.json and runs its hooks"),
    (".vscode/tasks.json", "VS Code runs its tasks (runOn: folderOpen runs one when the folder opens)"),
    (".vscode/settings.json", "VS Code and its extensions run the programs it names (interpreters, linters, terminal profiles)"),
    (".vscode/mcp.json", "VS Code starts the MCP servers it lists"),
    (".vscode/launch.json", "VS Code runs its debug programs and preLaunchTask"),
    (".idea", "JetBrains IDEs run its run configurations, external tools and startup tasks"),
    (".continue", "Continue starts its MCP servers and custom commands"),
    (".roo", "Roo Code starts the MCP servers of .roo/mcp.json"),
    (".kiro", "Kiro runs its agent hooks and MCP servers"),
    (".amazonq", "Amazon Q Developer starts the MCP servers of .amazonq/mcp.json"),
    ("opencode.json", "opencode starts its MCP servers and runs its commands"),
    (".aider.conf.yml", "aider runs its lint-cmd and test-cmd"),
    (".devcontainer", "Dev Containers run initializeCommand on the host and build its Dockerfile"),
    (".pre-commit-config.yaml", "pre-commit runs the hooks it lists at every git commit on the host"),
    (".husky", "husky's git hooks (core.hooksPath = .husky/_) run at every commit on the host"),
    (".envrc", "direnv runs it as shell code when you cd into the directory (once allowed)"),
];

/// What would run from the protected relative path `path` (see [`WHAT_RUNS`]).
pub fn what_runs(path: &str) -> Option<&'static str> {
    WHAT_RUNS.iter().find(|(p, _)| *p == path).map(|(_, w)| *w)
}

/// Temporary directories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TempPolicy {
    /// Give the sandbox private `/tmp`, `/var/tmp` and `/dev/shm`.
    pub private: bool,
    /// Keep the private `/tmp` across runs for the same workspace.
    pub persist: bool,
    /// `overlay` (default), `empty` or `host`; `private = false` means `host`.
    #[serde(default)]
    pub mode: TempMode,
}
