//! The enforcement plan: a policy resolved against the real filesystem and environment.
//!
//! A [`Plan`] is what a backend enforces, and nothing else: canonical absolute paths (symlinks
//! resolved once, here, at plan time), the computed environment, the network mode and limits.
//! Backends never interpret policy strings themselves.

use crate::io_reason;
use crate::model::{EnvInherit, GitMode, LimitsPolicy, NameScope, NetworkMode, Policy};
use crate::paths::{expand_path, glob_match, ExpandError};
use crate::system_dirs::{system_dir_hit, Relation, Tier, SYSTEM_DIRS};
use crate::walk_cache::{self, FoundKind, ScanError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use crate::planned::{PathKind, PlannedPath};

/// Private temp directories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TempPlan {
    /// Give the sandbox private `/tmp`, `/var/tmp`, `/dev/shm`.
    pub private: bool,
    /// Host directory that backs the sandbox's `/tmp` across runs of the same workspace
    /// (`None`: a fresh, empty `/tmp` each run).
    #[serde(serialize_with = "crate::paths::lossy::opt_path")]
    pub persist_dir: Option<PathBuf>,
}

/// A repository found at launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitRepo {
    /// Its work tree (the directory holding `.git`).
    #[serde(serialize_with = "crate::paths::lossy::path")]
    pub worktree: PathBuf,
    /// Its gitdir (canonical).
    #[serde(serialize_with = "crate::paths::lossy::path")]
    pub gitdir: PathBuf,
    /// Its common directory (`commondir`), or the gitdir.
    #[serde(serialize_with = "crate::paths::lossy::path")]
    pub common: PathBuf,
    /// Protected entries that did not exist at launch: a mount cannot keep them from being
    /// created, so the post-run check neutralises any that appear.
    pub missing: Vec<GitWatch>,
}

/// One protected git path that did not exist at launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitWatch {
    /// The path.
    #[serde(serialize_with = "crate::paths::lossy::path")]
    pub path: PathBuf,
    /// Why it is protected.
    pub reason: String,
}

/// Everything a backend must enforce for one run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Canonical workspace directory.
    #[serde(serialize_with = "crate::paths::lossy::path")]
    pub workspace: PathBuf,
    /// Canonical directory the command starts in.
    #[serde(serialize_with = "crate::paths::lossy::path")]
    pub cwd: PathBuf,
    /// Canonical writable roots, deduplicated, none nested in another, sorted.
    #[serde(serialize_with = "crate::paths::lossy::paths")]
    pub writable_roots: Vec<PathBuf>,
    /// Existing paths under writable roots that must stay read-only (`.git` dirs and files, gitdir
    /// targets, agent config dirs, `protected_paths`), sorted so parents come before children.
    pub protected: Vec<PlannedPath>,
    /// Protected names that do not exist at plan time: backends that cannot stop their creation
    /// report them.
    #[serde(serialize_with = "crate::paths::lossy::paths")]
    pub protected_missing: Vec<PathBuf>,
    /// Existing paths that must not be readable.
    pub deny_read: Vec<PlannedPath>,
    /// Unix sockets that may be connected to even outside writable roots.
    #[serde(serialize_with = "crate::paths::lossy::paths")]
    pub allow_unix_sockets: Vec<PathBuf>,
    /// Network mode.
    pub network: NetworkMode,
    /// With [`NetworkMode::Allowlist`]: validated, lower-cased entries (`example.com`,
    /// `*.example.com`, `example.com:8443`, `10.0.0.0/8`; see [`crate::domains`]).
    pub allowed_domains: Vec<String>,
    /// The complete environment of the command (already filtered).
    #[serde(skip)]
    pub env: Vec<(OsString, OsString)>,
    /// Names of the variables that were removed from the caller's environment.
    pub env_removed: Vec<String>,
    /// Limits.
    pub limits: LimitsPolicy,
    /// Temp directories.
    pub temp: TempPlan,
    /// Protected-name entries that are symbolic links (e.g. a `.git` symlink). Their canonical
    /// targets are in [`Plan::protected`]; the link itself can only be protected by a backend that
    /// can protect a directory entry (path-based rules follow the link).
    #[serde(serialize_with = "crate::paths::lossy::paths")]
    pub protected_symlinks: Vec<PathBuf>,
    /// `git.mode`: in `commit`, a repository's `.git` is not in [`Plan::protected`] as a whole;
    /// its code-running and redirecting entries are (see [`crate::gitmeta`]).
    pub git_mode: GitMode,
    /// Every repository found under a writable root at launch (both modes), with what the
    /// post-run check watches in it.
    pub git_repos: Vec<GitRepo>,
    /// Things the user should know about the plan (a dangling gitdir, an unreadable directory that
    /// was not searched for protected names, a cwd outside the writable area, ...).
    pub warnings: Vec<String>,
    /// Copy-on-write overlays outside the writable roots (see [`crate::overlay`]).
    pub overlay: crate::overlay::OverlayPlan,
    /// Made for the write gate ([`PlanRequest::write_gate`]): [`Plan::protected`] and
    /// [`Plan::git_repos`] hold only what lies at each writable root itself; everything deeper is
    /// the gate's to judge, so a backend without the gate must not run this plan.
    pub write_gate: bool,
    /// `filesystem.protected_names` as configured (the write gate's judge parses them).
    pub protected_names: Vec<String>,
    /// `filesystem.windows_lock_protected_dacls` (Windows unelevated tier; other backends ignore
    /// it).
    pub windows_lock_protected_dacls: bool,
}

/// Validate and normalise one `network.allowed_domains` entry (see [`crate::domains`]):
/// `name`, `*.name`, an IPv4 address/network or `[IPv6]`, optionally `:PORT`.
pub fn domain_pattern(entry: &str) -> Result<String, PlanError> {
    match crate::domains::DomainEntry::parse(entry) {
        Ok(_) => Ok(entry.trim().to_ascii_lowercase()),
        Err(e) => Err(PlanError::BadEntry {
            key: "network.allowed_domains",
            entry: entry.to_string(),
            reason: e.0,
        }),
    }
}

/// What a policy is resolved against: the caller's workspace, directory, home and environment.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// The workspace directory (need not be canonical; it must exist).
    pub workspace: PathBuf,
    /// The caller's current directory (the command starts here if it is inside the writable
    /// area, see [`resolve`]).
    pub cwd: PathBuf,
    /// The caller's home directory, used to expand `~/` (and refused as a writable root).
    pub home: Option<PathBuf>,
    /// The caller's environment, in order. Values need not be UTF-8.
    pub env: Vec<(OsString, OsString)>,
    /// Stockade's state directory, e.g. `~/.local/state/stockade` (persistent `/tmp`s live in
    /// `<state_dir>/tmp/`).
    pub state_dir: PathBuf,
    /// The backend will run the command under the write gate (every write-intent call judged by a
    /// supervisor, see `docs/architecture.md`): protected names are then looked up only at each
    /// writable root itself, not by walking every directory beneath it. `false`: the walk.
    pub write_gate: bool,
}

/// Why a policy could not be turned into a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A repository's git metadata could not be read to find what it runs.
    #[error(transparent)]
    GitMeta(#[from] crate::gitmeta::GitMetaError),
    /// The workspace directory does not exist or is not a directory.
    #[error(
        "workspace {path:?} is not an existing directory: {reason}; run Stockade on an existing \
         project directory"
    )]
    Workspace {
        /// The path as given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A policy entry could not be turned into a path.
    #[error("{key} entry {entry:?} is invalid: {reason}")]
    BadEntry {
        /// Dotted policy key, e.g. `filesystem.writable_roots`.
        key: &'static str,
        /// The entry as written.
        entry: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A writable root does not exist or is not a directory.
    #[error(
        "writable root {entry:?} ({path:?}) is not usable: {reason}; create it or remove it from \
         filesystem.writable_roots / --writable"
    )]
    WritableRoot {
        /// The entry as written.
        entry: String,
        /// The expanded path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A writable root is `/`, the home directory, a system directory or an ancestor of one.
    #[error(
        "refusing to make {path:?} writable: it is {why}. If you really mean it, pass \
         --allow-dangerous-roots (or set filesystem.allow_dangerous_roots = true)"
    )]
    DangerousRoot {
        /// The canonical root.
        path: PathBuf,
        /// What makes it dangerous, e.g. `your home directory`.
        why: String,
    },
    /// A writable root lies inside (or is) a protected directory such as `.git`.
    #[error(
        "refusing to make {path:?} writable: it is inside protected {name:?} ({protected:?}), which \
         must stay read-only. Pick a directory outside it, or pass --allow-dangerous-roots (or set \
         filesystem.allow_dangerous_roots = true) if you really mean it"
    )]
    ProtectedRoot {
        /// The canonical root.
        path: PathBuf,
        /// The protected name.
        name: String,
        /// The protected ancestor (or the root itself).
        protected: PathBuf,
    },
    /// A directory below a writable root could not be listed, or a `.git` entry in it (a `.git`
    /// file, its gitdir or commondir, a protected symlink's target) could not be read: a
    /// repository there could not be protected, so nothing runs (a command can make a directory
    /// unreadable to hide a repository from the next run).
    #[error(
        "cannot search {path:?} (under writable root {root:?}) for protected entries such as \
         .git: {what}: {source}. A repository there could not be protected, so the command was \
         not run. Fix its permissions (e.g. chmod u+rx {path:?}), or, if it is a directory you \
         trust and do not need protected (say a database's data directory owned by another \
         user), exempt it from the walk in your user config \
         (~/.config/stockade/config.toml): [filesystem] walk_exempt = [{exempt:?}]"
    )]
    Unsearchable {
        /// The directory or file that could not be read.
        path: PathBuf,
        /// The writable root it is under.
        root: PathBuf,
        /// What was being read, e.g. `listing it`.
        what: &'static str,
        /// The directory to exempt (the path itself, or the directory holding the file).
        exempt: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A writable root could not be listed at all.
    #[error(
        "cannot list writable root {path:?} to find protected entries: {source}; fix its \
         permissions or remove it from the writable roots"
    )]
    ReadRoot {
        /// The canonical root.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Environment variables kept by `env.inherit = "core"` (plus every `LC_*`).
pub const CORE_ENV_VARS: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "PWD",
    "COLORTERM",
    "NO_COLOR",
    "EDITOR",
    "PAGER",
];

/// Kernel pseudo-filesystems the protected-name walk never descends into (only relevant when `/`
/// itself is a forced writable root).
const WALK_SKIP: &[&str] = &["/proc", "/sys", "/dev"];

/// The directories the walk does not descend into: [`WALK_SKIP`] and the existing
/// `filesystem.walk_exempt` entries, canonical.
fn walk_skip(
    policy: &Policy,
    home: Option<&Path>,
    workspace: &Path,
) -> Result<Vec<PathBuf>, PlanError> {
    let mut skip: Vec<PathBuf> = WALK_SKIP.iter().map(PathBuf::from).collect();
    for entry in &policy.filesystem.walk_exempt {
        let path = expand(entry, home, workspace, "filesystem.walk_exempt")?;
        if let Ok(c) = fs::canonicalize(&path) {
            skip.push(c);
        }
    }
    Ok(skip)
}

/// Each system directory with its resolved form when it is a symlink (e.g. `/bin -> usr/bin`),
/// computed once per process: one `readlink` each (which fails at once for a non-link) instead
/// of a realpath per directory per writable root.
fn system_dir_forms() -> &'static [(&'static str, Vec<PathBuf>)] {
    static FORMS: std::sync::OnceLock<Vec<(&'static str, Vec<PathBuf>)>> =
        std::sync::OnceLock::new();
    FORMS.get_or_init(|| {
        SYSTEM_DIRS
            .iter()
            .map(|e| {
                let p = PathBuf::from(e.path);
                let forms = match fs::read_link(&p).and_then(|_| fs::canonicalize(&p)) {
                    Ok(c) if c != p => vec![p, c],
                    _ => vec![p],
                };
                (e.path, forms)
            })
            .collect()
    })
}

/// Why `root` (canonical) must not be a writable root, or `None` if it may be. `home` should be
/// canonical. The system directories are [`SYSTEM_DIRS`], the list both Linux tiers share.
pub fn dangerous_root_reason(root: &Path, home: Option<&Path>) -> Option<String> {
    if root.parent().is_none() {
        return Some("the filesystem root".into());
    }
    if let Some(home) = home {
        if root == home {
            return Some("your home directory".into());
        }
        if home.starts_with(root) {
            return Some(format!(
                "an ancestor of your home directory {}",
                home.display()
            ));
        }
    }
    let forms = |d: &'static str| -> &'static [PathBuf] {
        system_dir_forms()
            .iter()
            .find(|(name, _)| *name == d)
            .map_or(&[][..], |(_, forms)| forms.as_slice())
    };
    let (d, how) = system_dir_hit(root, Tier::Unelevated, forms)?;
    Some(match how {
        Relation::Is => format!("the system directory {}", d.display()),
        Relation::AncestorOf => format!("an ancestor of the system directory {}", d.display()),
        Relation::Inside => format!("inside the system directory {}", d.display()),
    })
}

impl Plan {
    /// Resolve `policy` against the filesystem and environment described by `req`. See
    /// [`resolve`].
    pub fn resolve(policy: &Policy, req: &PlanRequest) -> Result<Plan, PlanError> {
        resolve(policy, req)
    }
}

/// Resolve `policy` against the filesystem and environment described by `req`.
///
/// * The workspace must be an existing directory; it is canonicalized (symlinks resolved here,
///   once).
/// * Writable roots are the workspace plus `filesystem.writable_roots` (`~/` expanded, relative
///   entries joined to the workspace), or none at all when `filesystem.read_only`. Each must be an
///   existing directory; they are canonicalized, deduplicated, roots nested in another root are
///   dropped, and the result is sorted. `/`, the home directory, system directories and their
///   ancestors are refused unless `allow_dangerous_roots` ([`dangerous_root_reason`]); so is a root
///   inside a protected directory.
/// * Protected entries: every entry named in `protected_names` at any depth under each writable
///   root (the walk neither follows symlinks nor descends into protected directories; listings
///   of directories unchanged since the last run come from `<state_dir>/walk/`, unless the state
///   directory is inside a writable root), the
///   gitdir (and `commondir`) a `.git` file points to, the target of a protected name that is a
///   symlink, and existing `protected_paths`. A gitdir, commondir or symlink target that is (or
///   contains) a writable root is ignored with a warning (the repository must not be able to make
///   the backend cover the whole writable area). Sorted, parents first; entries inside another
///   protected directory are dropped as redundant (unless that directory contains a writable
///   root).
/// * `deny_read` and `allow_unix_sockets`: existing entries, canonicalized (a symlink is replaced by
///   its target); missing ones are skipped (sockets with a warning). A `deny_read` entry inside
///   another `deny_read` directory is dropped as redundant.
/// * The command's directory is the canonical `req.cwd` if it lies inside the workspace or a
///   writable root, else the workspace (with a warning). A relative `cwd` is taken relative to
///   the workspace.
/// * The environment: `req.env` filtered by `env.inherit`, minus names matching `env.exclude`
///   and values holding a URL with credentials ([`has_url_credentials`]), plus `env.set`, plus
///   `GIT_CONFIG_GLOBAL` when the user's git configuration is masked (its identity only).
pub fn resolve(policy: &Policy, req: &PlanRequest) -> Result<Plan, PlanError> {
    let fs_pol = &policy.filesystem;
    let mut warnings = Vec::new();
    let names = crate::model::parse_protected_names(&fs_pol.protected_names).map_err(
        |(entry, reason)| PlanError::BadEntry {
            key: "filesystem.protected_names",
            entry,
            reason,
        },
    )?;

    let workspace = canonical_workspace(&req.workspace)?;
    let home_raw = req.home.as_deref();
    let home_canon = home_raw.and_then(|h| fs::canonicalize(h).ok());

    // Writable roots.
    let mut roots: Vec<PathBuf> = Vec::new();
    if !fs_pol.read_only {
        roots.push(workspace.clone());
        for entry in &fs_pol.writable_roots {
            let path = expand(entry, home_raw, &workspace, "filesystem.writable_roots")?;
            let meta = fs::metadata(&path).map_err(|e| PlanError::WritableRoot {
                entry: entry.clone(),
                path: path.clone(),
                reason: io_reason(&e),
            })?;
            if !meta.is_dir() {
                return Err(PlanError::WritableRoot {
                    entry: entry.clone(),
                    path,
                    reason: "it is not a directory".into(),
                });
            }
            let canon = fs::canonicalize(&path).map_err(|e| PlanError::WritableRoot {
                entry: entry.clone(),
                path: path.clone(),
                reason: io_reason(&e),
            })?;
            roots.push(canon);
        }
    }
    if !fs_pol.allow_dangerous_roots {
        for root in &roots {
            if let Some(why) = dangerous_root_reason(root, home_canon.as_deref()) {
                return Err(PlanError::DangerousRoot {
                    path: root.clone(),
                    why,
                });
            }
            let mut cur = Some(root.as_path());
            while let Some(p) = cur {
                if let Some(name) = p.file_name() {
                    if names
                        .iter()
                        .any(|n| n.scope == NameScope::AnyDepth && OsStr::new(&n.path) == name)
                    {
                        return Err(PlanError::ProtectedRoot {
                            path: root.clone(),
                            name: name.to_string_lossy().into_owned(),
                            protected: p.to_path_buf(),
                        });
                    }
                }
                cur = p.parent();
            }
        }
    }
    let roots = minimal_roots(roots);

    // Protected entries. The walk looks for the any-depth names only; root-scoped ones
    // (`/.mcp.json`, `.vscode/tasks.json`) are looked up at each writable root and repository
    // root below (the write gate refuses their creation, see crate::protect).
    let mut walker = Walker {
        skip: walk_skip(policy, home_raw, &workspace)?,
        root: PathBuf::new(),
        names: names
            .iter()
            .filter(|n| n.scope == NameScope::AnyDepth)
            .map(|n| OsString::from(&n.path))
            .collect(),
        out: Vec::new(),
        targets: Vec::new(),
        links: Vec::new(),
        warnings: Vec::new(),
        cache_dir: walk_cache::cache_dir(&req.state_dir, &roots),
        git_mode: policy.git.mode,
        repos: Vec::new(),
    };
    for root in &roots {
        if req.write_gate {
            walker.at_root(root)?;
        } else {
            walker.walk(root)?;
        }
    }
    // Root-scoped names that exist at a writable root or a repository's root (a mount keeps
    // them read-only where the write gate is not available).
    let anchors: Vec<PathBuf> = roots
        .iter()
        .cloned()
        .chain(walker.repos.iter().map(|r| r.worktree.clone()))
        .collect();
    for anchor in &anchors {
        for n in names.iter().filter(|n| n.scope == NameScope::Root) {
            let p = anchor.join(&n.path);
            let is_link = fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink());
            match existing(&p, format!("protected name {}", n.entry)) {
                Some(pp) if is_link => {
                    walker.links.push(p);
                    walker.targets.push(pp);
                }
                Some(pp) => walker.out.push(pp),
                None if is_link => {
                    walker.warnings.push(format!(
                        "{} symlink {} points nowhere usable; only the link is listed",
                        n.entry,
                        p.display()
                    ));
                    walker.links.push(p);
                }
                None => {}
            }
        }
    }
    for entry in &fs_pol.protected_paths {
        let path = expand(entry, home_raw, &workspace, "filesystem.protected_paths")?;
        if let Some(pp) = existing(&path, format!("protected_paths {entry}")) {
            walker.out.push(pp);
        }
    }
    let Walker {
        out: mut protected,
        targets,
        links: mut protected_symlinks,
        warnings: walk_warnings,
        repos: git_repos,
        ..
    } = walker;
    warnings.extend(walk_warnings);
    // A gitdir, commondir or symlink target that is (or contains) a writable root is nonsense at
    // best and an attempt to make the backend cover the writable area at worst: skip it.
    for t in targets {
        match roots.iter().find(|r| r.starts_with(&t.path)) {
            Some(r) => warnings.push(format!(
                "ignoring {} ({}): it contains the writable root {}",
                t.path.display(),
                t.reason,
                r.display()
            )),
            None => protected.push(t),
        }
    }
    let protected = minimal_protected(protected, &roots);
    protected_symlinks.sort();
    protected_symlinks.dedup();

    let mut protected_missing = Vec::new();
    for root in &roots {
        for name in &names {
            let p = root.join(&name.path);
            if fs::symlink_metadata(&p).is_err() {
                protected_missing.push(p);
            }
        }
    }
    protected_missing.sort();
    protected_missing.dedup();

    // Unreadable paths.
    let mut deny_read = Vec::new();
    for entry in &fs_pol.deny_read {
        let path = expand(entry, home_raw, &workspace, "filesystem.deny_read")?;
        if let Some(pp) = existing(&path, format!("deny_read {entry}")) {
            deny_read.push(pp);
        }
    }
    let deny_read = minimal_protected(deny_read, &roots);

    let mut allow_unix_sockets = Vec::new();
    for entry in &fs_pol.allow_unix_sockets {
        let path = expand(entry, home_raw, &workspace, "filesystem.allow_unix_sockets")?;
        match fs::canonicalize(&path) {
            Ok(p) => allow_unix_sockets.push(p),
            Err(e) => warnings.push(format!(
                "allow_unix_sockets entry {entry:?} ({}) skipped: {}",
                path.display(),
                io_reason(&e)
            )),
        }
    }
    allow_unix_sockets.sort();
    allow_unix_sockets.dedup();

    // Starting directory.
    let cwd_in = if req.cwd.is_absolute() {
        req.cwd.clone()
    } else {
        workspace.join(&req.cwd)
    };
    let cwd = match fs::canonicalize(&cwd_in) {
        Ok(c) if c.starts_with(&workspace) || roots.iter().any(|r| c.starts_with(r)) => c,
        Ok(c) => {
            warnings.push(format!(
                "current directory {} is outside the workspace and the writable roots; the \
                 command starts in the workspace {}",
                c.display(),
                workspace.display()
            ));
            workspace.clone()
        }
        Err(e) => {
            warnings.push(format!(
                "current directory {} is not usable ({}); the command starts in the workspace {}",
                cwd_in.display(),
                io_reason(&e),
                workspace.display()
            ));
            workspace.clone()
        }
    };

    let (mut env, env_removed) = plan_env(policy, &req.env)?;
    if let Some(path) =
        git_identity_config(&deny_read, home_raw, &req.state_dir, &env, &mut warnings)
    {
        env.push((OsString::from("GIT_CONFIG_GLOBAL"), path.into_os_string()));
    }

    use crate::model::{OutsideWrites, TempMode};
    let temp_private = policy.temp.private && policy.temp.mode != TempMode::Host;
    // `persist = false` keeps today's fresh, empty /tmp per run.
    let temp_overlay = temp_private && policy.temp.persist && policy.temp.mode == TempMode::Overlay;
    let mut overlay_roots = Vec::new();
    for entry in &fs_pol.overlay_roots {
        let path = expand(entry, home_raw, &workspace, "filesystem.overlay_roots")?;
        overlay_roots.push((entry.clone(), path));
    }
    let name_paths: Vec<String> = names.iter().map(|n| n.path.clone()).collect();
    let overlay = if fs_pol.read_only && !temp_overlay {
        crate::overlay::OverlayPlan::default()
    } else {
        crate::overlay::plan(
            crate::overlay::Inputs {
                overlay_home: fs_pol.outside_writes == OutsideWrites::Overlay && !fs_pol.read_only,
                home: home_canon.as_deref(),
                roots: overlay_roots,
                temp: temp_overlay,
                writable_roots: &roots,
                protected: &protected,
                protected_names: &name_paths,
                workspace: &workspace,
                state_dir: &req.state_dir,
                max_bytes: fs_pol.overlay_max_bytes,
            },
            &mut warnings,
        )
        .map_err(|e| PlanError::BadEntry {
            key: "filesystem.overlay_roots",
            entry: e.entry,
            reason: e.reason,
        })?
    };
    let persist_dir = (temp_private && policy.temp.persist && !overlay.temp).then(|| {
        let digest = Sha256::digest(workspace.as_os_str().as_encoded_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        req.state_dir.join("tmp").join(hex)
    });

    Ok(Plan {
        workspace,
        cwd,
        writable_roots: roots,
        protected,
        protected_missing,
        deny_read,
        allow_unix_sockets,
        network: policy.network.mode,
        allowed_domains: policy
            .network
            .allowed_domains
            .iter()
            .map(|d| domain_pattern(d))
            .collect::<Result<_, _>>()?,
        env,
        env_removed,
        limits: policy.limits.clone(),
        temp: TempPlan {
            private: temp_private,
            persist_dir,
        },
        protected_symlinks,
        git_mode: policy.git.mode,
        git_repos,
        warnings,
        overlay,
        write_gate: req.write_gate,
        protected_names: fs_pol.protected_names.clone(),
        windows_lock_protected_dacls: fs_pol.windows_lock_protected_dacls,
    })
}

fn canonical_workspace(ws: &Path) -> Result<PathBuf, PlanError> {
    let err = |reason: String| PlanError::Workspace {
        path: ws.to_path_buf(),
        reason,
    };
    let meta = fs::metadata(ws).map_err(|e| err(io_reason(&e)))?;
    if !meta.is_dir() {
        return Err(err("it is not a directory".into()));
    }
    fs::canonicalize(ws).map_err(|e| err(io_reason(&e)))
}

fn expand(
    entry: &str,
    home: Option<&Path>,
    base: &Path,
    key: &'static str,
) -> Result<PathBuf, PlanError> {
    expand_path(entry, home, base).map_err(|e: ExpandError| PlanError::BadEntry {
        key,
        entry: entry.to_string(),
        reason: e.to_string(),
    })
}

/// An existing path as a canonical [`PlannedPath`] (symlinks followed), or `None` if it (or the
/// symlink's target) does not exist.
fn existing(path: &Path, reason: String) -> Option<PlannedPath> {
    fs::symlink_metadata(path).ok()?;
    let canon = fs::canonicalize(path).ok()?;
    let meta = fs::metadata(&canon).ok()?;
    Some(PlannedPath {
        path: canon,
        kind: kind_of(meta.is_dir()),
        reason,
    })
}

fn kind_of(is_dir: bool) -> PathKind {
    if is_dir {
        PathKind::Dir
    } else {
        PathKind::File
    }
}

/// Sort, deduplicate, and drop roots nested inside another root.
fn minimal_roots(mut roots: Vec<PathBuf>) -> Vec<PathBuf> {
    roots.sort();
    roots.dedup();
    let mut out: Vec<PathBuf> = Vec::with_capacity(roots.len());
    for r in roots {
        // Sorted component-wise, so an ancestor (if any) is the last kept root or not present.
        if out.last().is_some_and(|last| r.starts_with(last)) {
            continue;
        }
        out.push(r);
    }
    out
}

/// Sort parents first, deduplicate, and drop entries inside another protected directory (unless
/// that directory contains a writable root: then how the backend layers them matters, so every
/// entry is kept).
fn minimal_protected(mut v: Vec<PlannedPath>, roots: &[PathBuf]) -> Vec<PlannedPath> {
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v.dedup_by(|a, b| a.path == b.path);
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut out = Vec::with_capacity(v.len());
    for pp in v {
        if pp.path.ancestors().skip(1).any(|a| dirs.contains(a)) {
            continue;
        }
        if pp.kind == PathKind::Dir && !roots.iter().any(|r| r.starts_with(&pp.path)) {
            dirs.insert(pp.path.clone());
        }
        out.push(pp);
    }
    out
}

struct Walker {
    names: Vec<OsString>,
    /// Directories not descended into (see [`walk_skip`]).
    skip: Vec<PathBuf>,
    /// The root being walked.
    root: PathBuf,
    /// Entries found by name.
    out: Vec<PlannedPath>,
    /// Paths named by file contents or symlinks (gitdir, commondir, link targets): anything the
    /// repository (or the agent) wrote, so checked before use.
    targets: Vec<PlannedPath>,
    links: Vec<PathBuf>,
    warnings: Vec<String>,
    /// Where walk caches live (`None`: no cache, every directory is listed).
    cache_dir: Option<PathBuf>,
    /// `git.mode`.
    git_mode: GitMode,
    /// Repositories found.
    repos: Vec<GitRepo>,
}

impl Walker {
    /// Find protected names under `root` (canonical): one `read_dir` per directory and the
    /// entry's `d_type`, symlinks never followed; listings of unchanged directories come from the
    /// walk cache when there is one (see [`crate::walk_cache`]).
    fn walk(&mut self, root: &Path) -> Result<(), PlanError> {
        let cache = self
            .cache_dir
            .as_deref()
            .map(|d| walk_cache::cache_file(d, root));
        self.root = root.to_path_buf();
        let scan = walk_cache::scan(root, &self.names, cache.as_deref(), &self.skip)
            .map_err(|e| scan_error(root, e))?;
        self.warnings.extend(scan.warnings);
        for f in scan.found {
            self.protect(f.path, &f.name, f.kind)?;
        }
        Ok(())
    }

    /// With the write gate: only the protected names directly in `root` (canonical), one `lstat`
    /// each — cost independent of the size of the tree. Deeper entries are judged per call by
    /// the gate.
    fn at_root(&mut self, root: &Path) -> Result<(), PlanError> {
        self.root = root.to_path_buf();
        for name in self.names.clone() {
            let path = root.join(&name);
            let kind = match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => FoundKind::Symlink,
                Ok(m) if m.is_dir() => FoundKind::Dir,
                Ok(_) => FoundKind::Other,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(self.unreadable(&path, &path, "reading", e)),
            };
            self.protect(path, &name, kind)?;
        }
        Ok(())
    }

    /// Fail closed on an I/O error other than "does not exist" while reading `path` (a `.git`
    /// file, a gitdir, a link target): the command could have made it unreadable on purpose.
    fn unreadable(&self, path: &Path, at: &Path, what: &'static str, e: io::Error) -> PlanError {
        PlanError::Unsearchable {
            path: path.to_path_buf(),
            root: self.root.clone(),
            what,
            exempt: at
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| at.to_path_buf()),
            source: e,
        }
    }

    fn protect(&mut self, path: PathBuf, name: &OsStr, kind: FoundKind) -> Result<(), PlanError> {
        let label = name.to_string_lossy();
        if kind == FoundKind::Symlink {
            self.links.push(path.clone());
            let target = fs::canonicalize(&path).and_then(|t| fs::metadata(&t).map(|m| (t, m)));
            match target {
                Ok((t, m)) => {
                    let is_dir = m.is_dir();
                    self.targets.push(PlannedPath {
                        path: t.clone(),
                        kind: kind_of(is_dir),
                        reason: format!("target of {label} symlink {}", path.display()),
                    });
                    if !is_dir && name == ".git" {
                        self.gitfile(&path)?;
                    }
                }
                Err(e) if is_missing(&e) => self.warnings.push(format!(
                    "{label} symlink {} points nowhere usable ({}); only the link is listed",
                    path.display(),
                    io_reason(&e)
                )),
                Err(e) => {
                    return Err(self.unreadable(&path, &path, "resolving the symlink", e));
                }
            }
            return Ok(());
        }
        let is_dir = kind == FoundKind::Dir;
        if !is_dir && name == ".git" {
            self.gitfile(&path)?;
        }
        if is_dir && name == ".git" {
            let worktree = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            let common = crate::gitmeta::commondir(&path)
                .and_then(|c| fs::canonicalize(c).ok())
                .unwrap_or_else(|| path.clone());
            if self.repo(worktree, path.clone(), common)? {
                return Ok(());
            }
        }
        self.out.push(PlannedPath {
            path,
            kind: kind_of(is_dir),
            reason: format!("protected name {label}"),
        });
        Ok(())
    }

    /// A `.git` file (`gitdir: <path>`): protect its gitdir and the gitdir's `commondir`.
    fn gitfile(&mut self, file: &Path) -> Result<(), PlanError> {
        let base = file.parent().unwrap_or(Path::new("/"));
        let target = match read_pointer(file, Some("gitdir:")) {
            Ok(t) => t,
            Err(PointerError::Io(e)) if !is_missing(&e) => {
                return Err(self.unreadable(file, file, "reading the .git file", e));
            }
            Err(why) => {
                self.warnings.push(format!(
                    "{} is not a usable gitdir pointer: {why}",
                    file.display()
                ));
                return Ok(());
            }
        };
        let gitdir = match fs::canonicalize(base.join(&target)) {
            Ok(g) if g.is_dir() => g,
            Ok(g) => {
                self.warnings.push(format!(
                    "gitdir {} of {} is not a directory",
                    g.display(),
                    file.display()
                ));
                return Ok(());
            }
            Err(e) if is_missing(&e) => {
                self.warnings.push(format!(
                    "gitdir {} of {} is not usable: {}",
                    target.display(),
                    file.display(),
                    io_reason(&e)
                ));
                return Ok(());
            }
            Err(e) => {
                let t = base.join(&target);
                return Err(self.unreadable(&t, file, "resolving the gitdir of .git file", e));
            }
        };
        let mut common_dir = None;
        let commondir_file = gitdir.join("commondir");
        if fs::symlink_metadata(&commondir_file).is_ok() {
            match read_pointer(&commondir_file, None)
                .and_then(|c| fs::canonicalize(gitdir.join(c)).map_err(PointerError::Io))
            {
                Ok(common) if common.is_dir() => common_dir = Some(common),
                Ok(common) => self.warnings.push(format!(
                    "commondir {} of {} is not a directory",
                    common.display(),
                    gitdir.display()
                )),
                Err(PointerError::Io(e)) if !is_missing(&e) => {
                    return Err(self.unreadable(
                        &commondir_file,
                        file,
                        "reading the commondir of the gitdir of .git file",
                        e,
                    ));
                }
                Err(why) => self
                    .warnings
                    .push(format!("{} is not usable: {why}", commondir_file.display())),
            }
        }
        let worktree = base.to_path_buf();
        let common = common_dir.clone().unwrap_or_else(|| gitdir.clone());
        if self.repo(worktree, gitdir.clone(), common)? {
            return Ok(());
        }
        if let Some(common) = common_dir {
            self.targets.push(PlannedPath {
                path: common,
                kind: PathKind::Dir,
                reason: format!("commondir of {}", gitdir.display()),
            });
        }
        self.targets.push(PlannedPath {
            path: gitdir,
            kind: PathKind::Dir,
            reason: format!("gitdir of {}", file.display()),
        });
        Ok(())
    }

    /// Record a repository; in `git.mode = "commit"` protect its code-running and redirecting
    /// entries (existing ones) and return `true` (the gitdir itself is then not protected whole).
    fn repo(
        &mut self,
        worktree: PathBuf,
        gitdir: PathBuf,
        common: PathBuf,
    ) -> Result<bool, PlanError> {
        let mut repo = GitRepo {
            worktree,
            gitdir,
            common,
            missing: Vec::new(),
        };
        if self.git_mode != GitMode::Commit {
            self.repos.push(repo);
            return Ok(false);
        }
        for e in crate::gitmeta::protected_paths(&repo.worktree, &repo.gitdir)? {
            let reason = format!("git: {} ({})", e.reason, e.path.display());
            match fs::symlink_metadata(&e.path) {
                Err(err) if is_missing(&err) => repo.missing.push(GitWatch {
                    path: e.path,
                    reason: e.reason,
                }),
                Err(err) => return Err(self.unreadable(&e.path, &e.path, "reading", err)),
                Ok(m) => {
                    if m.file_type().is_symlink() {
                        self.links.push(e.path.clone());
                    }
                    match fs::canonicalize(&e.path).and_then(|t| fs::metadata(&t).map(|m| (t, m))) {
                        Ok((t, m)) => self.targets.push(PlannedPath {
                            path: t,
                            kind: kind_of(m.is_dir()),
                            reason,
                        }),
                        Err(err) if is_missing(&err) => repo.missing.push(GitWatch {
                            path: e.path,
                            reason: e.reason,
                        }),
                        Err(err) => {
                            return Err(self.unreadable(&e.path, &e.path, "resolving", err))
                        }
                    }
                }
            }
        }
        self.repos.push(repo);
        Ok(true)
    }
}

/// "Does not exist" (or a path component is not a directory): nothing there to protect.
fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) // ENOTDIR
}

/// Why a pointer file (`.git` file, `commondir`) gave no path.
#[derive(Debug, thiserror::Error)]
enum PointerError {
    /// It (or what it names) could not be read.
    #[error("{}", io_reason(.0))]
    Io(io::Error),
    /// Its content is not a pointer.
    #[error("{0}")]
    Format(&'static str),
    /// The path it names is not valid UTF-8 (where paths must be).
    #[cfg(not(unix))]
    #[error("the path is not valid UTF-8")]
    NotUtf8,
}

/// Read a small pointer file (`.git` file or `commondir`): the first line, optionally after
/// `prefix`, trimmed of surrounding whitespace.
fn read_pointer(file: &Path, prefix: Option<&str>) -> Result<PathBuf, PointerError> {
    let mut buf = Vec::new();
    fs::File::open(file)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut buf))
        .map_err(PointerError::Io)?;
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = match prefix {
        Some(p) => line
            .strip_prefix(p.as_bytes())
            .ok_or(PointerError::Format("it does not start with \"gitdir:\""))?,
        None => line,
    };
    let line = line.trim_ascii();
    if line.is_empty() {
        return Err(PointerError::Format("it names no path"));
    }
    bytes_to_path(line)
}

#[cfg(unix)]
fn bytes_to_path(b: &[u8]) -> Result<PathBuf, PointerError> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(OsStr::from_bytes(b)))
}

#[cfg(not(unix))]
fn bytes_to_path(b: &[u8]) -> Result<PathBuf, PointerError> {
    std::str::from_utf8(b)
        .map(PathBuf::from)
        .map_err(|_| PointerError::NotUtf8)
}

/// When the user's git configuration is masked (see [`crate::git_identity`]): the generated
/// config file carrying only `user.name`/`user.email`, for `GIT_CONFIG_GLOBAL`. `None` when
/// neither file is masked, there is no identity, the environment already names a global config,
/// or the file could not be written (with a warning).
fn git_identity_config(
    deny_read: &[PlannedPath],
    home: Option<&Path>,
    state_dir: &Path,
    env: &[(OsString, OsString)],
    warnings: &mut Vec<String>,
) -> Option<PathBuf> {
    let home = home?;
    if !state_dir.is_absolute() || env.iter().any(|(k, _)| k == "GIT_CONFIG_GLOBAL") {
        return None;
    }
    let files = [home.join(".config/git/config"), home.join(".gitconfig")];
    let masked = files.iter().any(|f| {
        fs::canonicalize(f).is_ok_and(|c| deny_read.iter().any(|d| c.starts_with(&d.path)))
    });
    if !masked {
        return None;
    }
    let content = crate::git_identity::Identity::from_files(&files).render()?;
    match crate::git_identity::write_config(&state_dir.join("git"), &content) {
        Ok(p) => Some(p),
        Err(e) => {
            warnings.push(format!(
                "your git configuration is masked and its user.name/user.email could not be \
                 passed on ({}: {}); set GIT_AUTHOR_NAME/GIT_AUTHOR_EMAIL with --env if git \
                 commit needs them",
                state_dir.join("git").display(),
                io_reason(&e)
            ));
            None
        }
    }
}

/// Whether `value` contains a URL with credentials in its authority (`scheme://user:pass@host`,
/// or `scheme://token@host`): proxies, database URLs, registry mirrors with a token.
pub fn has_url_credentials(value: &OsStr) -> bool {
    let v = value.as_encoded_bytes();
    let mut from = 0;
    while let Some(pos) = v[from..].windows(3).position(|w| w == b"://") {
        let at = from + pos;
        let scheme_ok = at > 0
            && v[at - 1].is_ascii_alphanumeric()
            && v[..at]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                .last()
                .is_some_and(|b| b.is_ascii_alphabetic());
        let rest = &v[at + 3..];
        let end = rest
            .iter()
            .position(|&b| {
                matches!(
                    b,
                    b'/' | b'?' | b'#' | b',' | b';' | b'"' | b'\'' | b'<' | b'>'
                ) || b.is_ascii_whitespace()
            })
            .unwrap_or(rest.len());
        if scheme_ok
            && rest[..end]
                .iter()
                .rposition(|&b| b == b'@')
                .is_some_and(|p| p > 0)
        {
            return true;
        }
        from = at + 3;
    }
    false
}

/// An environment: names and values, in order.
type EnvBlock = Vec<(OsString, OsString)>;

fn plan_env(
    policy: &Policy,
    input: &[(OsString, OsString)],
) -> Result<(EnvBlock, Vec<String>), PlanError> {
    let keep = |name: &OsStr| match policy.env.inherit {
        EnvInherit::All => true,
        EnvInherit::None => false,
        EnvInherit::Core => {
            CORE_ENV_VARS.iter().any(|c| name == OsStr::new(c))
                || name.as_encoded_bytes().starts_with(b"LC_")
        }
    };
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    for (k, v) in input {
        if !keep(k) {
            continue;
        }
        if policy.env.exclude.iter().any(|g| glob_match(g, k)) || has_url_credentials(v) {
            removed.push(k.to_string_lossy().into_owned());
            continue;
        }
        // Later duplicates win, as with a real environment block.
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    for (k, v) in &policy.env.set {
        let why = if k.is_empty() {
            Some("the name is empty")
        } else if k.contains('=') {
            Some("the name contains `=`")
        } else if k.contains('\0') || v.contains('\0') {
            Some("it contains a NUL character")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(PlanError::BadEntry {
                key: "env.set",
                entry: k.clone(),
                reason: format!("{why}; environment variables cannot carry it"),
            });
        }
        let k = OsString::from(k);
        match env.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = OsString::from(v),
            None => env.push((k, OsString::from(v))),
        }
    }
    removed.sort();
    removed.dedup();
    Ok((env, removed))
}

#[cfg(all(test, unix))]
#[path = "plan_tests.rs"]
mod tests;

/// One entry named like a git repository marker, found by [`find_git_markers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitMarker {
    /// Its path.
    pub path: PathBuf,
    /// `.git` (a directory, file or symlink) or `HEAD` (a candidate bare repository's).
    pub name: OsString,
    /// A directory.
    pub is_dir: bool,
    /// A symbolic link (never followed).
    pub is_symlink: bool,
}

/// The plan error for a failed protected-name scan of `root`.
fn scan_error(root: &Path, e: ScanError) -> PlanError {
    match e {
        ScanError::Root(source) => PlanError::ReadRoot {
            path: root.to_path_buf(),
            source,
        },
        ScanError::Dir { path, source } => PlanError::Unsearchable {
            exempt: path.clone(),
            path,
            root: root.to_path_buf(),
            what: "listing it",
            source,
        },
    }
}

/// Every `.git` and `HEAD` entry under `root` (canonical), for the post-run check: the same walk
/// as the launch's (symlinks never followed, a `.git` directory not descended into), with its
/// own listing cache under `<state_dir>/post-run/` so that only directories changed since the
/// last check are listed. Fails if a directory cannot be listed.
pub fn find_git_markers(root: &Path, state_dir: &Path) -> Result<Vec<GitMarker>, PlanError> {
    let cache = walk_cache::cache_dir(&state_dir.join("post-run"), &[root.to_path_buf()])
        .map(|d| walk_cache::cache_file(&d, root));
    git_markers(root, cache.as_deref())
}

/// [`find_git_markers`] below one directory without a listing cache (a directory the run moved
/// into place: the write gate saw it arrive but not what it holds).
pub fn find_git_markers_below(dir: &Path) -> Result<Vec<GitMarker>, PlanError> {
    git_markers(dir, None)
}

fn git_markers(root: &Path, cache: Option<&Path>) -> Result<Vec<GitMarker>, PlanError> {
    let names = [OsString::from(".git"), OsString::from("HEAD")];
    let scan = walk_cache::scan(root, &names, cache, &[]).map_err(|e| scan_error(root, e))?;
    Ok(scan
        .found
        .into_iter()
        .map(|f| GitMarker {
            path: f.path,
            name: f.name,
            is_dir: f.kind == FoundKind::Dir,
            is_symlink: f.kind == FoundKind::Symlink,
        })
        .collect())
}
