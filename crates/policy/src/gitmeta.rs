//! Git metadata that makes git run code later or redirects it: what stays read-only in a
//! repository in `git.mode = "commit"` ([`protected_paths`]), and what a run may not leave
//! behind in a repository it created ([`judge_config`], [`todo_exec_lines`]).
//!
//! Pure logic: files are read (bounded), git is never executed. The reasons per entry are the
//! ones in `docs/git.md`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest config file read (git's own configs are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Deepest include chain followed (git itself stops at 10).
pub const MAX_INCLUDE_DEPTH: usize = 10;
/// Most config files read for one repository (the repo's configs plus includes).
pub const MAX_CONFIG_FILES: usize = 64;
/// Deepest `modules/` nesting followed (submodules of submodules...).
pub const MAX_MODULE_DEPTH: usize = 4;

/// Every hook name git runs (githooks(5)).
pub const HOOKS: &[&str] = &[
    "applypatch-msg",
    "pre-applypatch",
    "post-applypatch",
    "pre-commit",
    "pre-merge-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "pre-rebase",
    "post-checkout",
    "post-merge",
    "pre-push",
    "pre-receive",
    "update",
    "proc-receive",
    "post-receive",
    "post-update",
    "reference-transaction",
    "push-to-checkout",
    "pre-auto-gc",
    "post-rewrite",
    "sendemail-validate",
    "fsmonitor-watchman",
    "p4-changelist",
    "p4-prepare-changelist",
    "p4-post-changelist",
    "p4-pre-submit",
    "post-index-change",
];

/// The fixed entries of every gitdir (and module gitdir, and common directory) that make git
/// run code or redirect it (gitrepository-layout(5)); each with why. `docs/git.md` has the table.
pub const GITDIR_FIXED: &[(&str, &str)] = &[
    (
        "config",
        "repository configuration: programs, hooks path, includes, remotes",
    ),
    (
        "config.worktree",
        "per-worktree configuration (extensions.worktreeConfig)",
    ),
    ("hooks", "git runs the executable files in it"),
    (
        "info/attributes",
        "selects filter/diff/merge drivers, which run programs",
    ),
    ("commondir", "redirects git to another repository"),
    (
        "gitdir",
        "where git looks for the linked worktree (prune, repair)",
    ),
    (
        "objects/info/alternates",
        "makes git read objects from another repository",
    ),
    (
        "objects/info/http-alternates",
        "makes fetch read objects from elsewhere",
    ),
    (
        "remotes",
        "legacy remote definitions (URLs git fetches from)",
    ),
    (
        "branches",
        "legacy remote definitions (URLs git fetches from)",
    ),
];

/// The entries of each linked worktree's gitdir (`worktrees/<name>/`) that make git run code or
/// redirect it.
pub const WORKTREE_FIXED: &[(&str, &str)] = &[
    ("config.worktree", "linked worktree's own configuration"),
    (
        "commondir",
        "redirects the linked worktree to another repository",
    ),
    ("gitdir", "where git looks for the linked worktree"),
    ("hooks", "git runs the executable files in it"),
];

/// One path that must not change (or appear) in a repository, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedEntry {
    /// Absolute path (not canonicalized; it may not exist).
    pub path: PathBuf,
    /// Why it is protected (from `docs/git.md`).
    pub reason: String,
}

/// Why a repository's protected paths could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum GitMetaError {
    /// A config file (or an include) exists but could not be read.
    #[error("cannot read git config {path:?}: {source}; its programs and includes could not be protected, so nothing runs — fix its permissions or remove it")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A config file is larger than [`MAX_CONFIG_BYTES`].
    #[error("git config {path:?} is larger than {MAX_CONFIG_BYTES} bytes; it cannot be checked for programs and includes, so nothing runs — shrink or remove it")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Includes nest deeper than [`MAX_INCLUDE_DEPTH`] or name more than [`MAX_CONFIG_FILES`].
    #[error("git config includes from {path:?} nest deeper than {MAX_INCLUDE_DEPTH} or name more than {MAX_CONFIG_FILES} files; they cannot all be protected, so nothing runs")]
    TooManyIncludes {
        /// The include that went over the bound.
        path: PathBuf,
    },
}

/// One `key = value` of a git config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// `section.key` or `section.subsection.key`; section and key lowercased, the subsection as
    /// written.
    pub key: String,
    /// The value (`None`: a bare key, boolean true).
    pub value: Option<String>,
}

/// Parse a git config file's text (`[section]`, `[section "sub"]`, `[section.sub]`, `key = value`
/// with quotes, escapes, `#`/`;` comments and `\` continuations). Lines that do not parse are
/// returned as a key `"\u{0}unparsed"` so a judge can refuse what it cannot read.
pub fn parse_config(text: &str) -> Vec<ConfigEntry> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut rest = line.trim_start();
        if rest.is_empty() || rest.starts_with('#') || rest.starts_with(';') {
            continue;
        }
        if let Some(h) = rest.strip_prefix('[') {
            let Some(end) = h.find(']') else {
                out.push(unparsed(line));
                continue;
            };
            section = parse_header(&h[..end]);
            rest = h[end + 1..].trim_start();
            if rest.is_empty() || rest.starts_with('#') || rest.starts_with(';') {
                continue;
            }
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        let after = rest[name_end..].trim_start();
        if name.is_empty() || section.is_empty() {
            out.push(unparsed(line));
            continue;
        }
        let key = format!("{section}.{name}");
        if after.is_empty() || after.starts_with('#') || after.starts_with(';') {
            out.push(ConfigEntry { key, value: None });
            continue;
        }
        let Some(v) = after.strip_prefix('=') else {
            out.push(unparsed(line));
            continue;
        };
        let mut raw = v.to_string();
        while ends_with_continuation(&raw) {
            raw.pop();
            match lines.next() {
                Some(l) => raw.push_str(l),
                None => break,
            }
        }
        out.push(ConfigEntry {
            key,
            value: Some(parse_value(&raw)),
        });
    }
    out
}

fn unparsed(line: &str) -> ConfigEntry {
    ConfigEntry {
        key: "\u{0}unparsed".into(),
        value: Some(line.to_string()),
    }
}

fn ends_with_continuation(s: &str) -> bool {
    let n = s.len() - s.trim_end_matches('\\').len();
    n % 2 == 1
}

fn parse_header(h: &str) -> String {
    let h = h.trim();
    if let Some(q) = h.find('"') {
        let name = h[..q].trim().to_ascii_lowercase();
        let mut sub = String::new();
        let mut chars = h[q + 1..].chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => sub.extend(chars.next()),
                '"' => break,
                c => sub.push(c),
            }
        }
        return format!("{name}.{sub}");
    }
    // `[section.sub]` (deprecated): the subsection is lowercased too.
    h.to_ascii_lowercase()
}

fn parse_value(raw: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = raw.trim_start().chars();
    let mut pending_ws = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push_str(&pending_ws);
                pending_ws.clear();
                quoted = !quoted;
            }
            '\\' => {
                out.push_str(&pending_ws);
                pending_ws.clear();
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('b') => {
                        out.pop();
                    }
                    Some(o) => out.push(o),
                    None => {}
                }
            }
            '#' | ';' if !quoted => break,
            c if c.is_whitespace() && !quoted => pending_ws.push(c),
            c => {
                out.push_str(&pending_ws);
                pending_ws.clear();
                out.push(c);
            }
        }
    }
    out
}

/// How a config key's value is used by git.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// A shell command or program git runs.
    Program,
    /// A directory of hooks git runs.
    HookDir,
    /// Another config file git reads.
    Include,
    /// A file or directory that changes which repository, work tree or attributes git uses.
    Redirect,
}

/// Whether `key` (as [`ConfigEntry::key`]) names something git runs or follows, and why.
/// The list and its reasons are in `docs/git.md`.
pub fn key_use(key: &str, value: Option<&str>) -> Option<(KeyUse, &'static str)> {
    let parts: Vec<&str> = key.split('.').collect();
    let section = parts[0];
    let name = *parts.last().unwrap_or(&"");
    let sub = parts.len() > 2;
    use KeyUse::*;
    let r = match (section, name, sub) {
        ("core", "hookspath", false) => (HookDir, "git runs the hooks in this directory"),
        ("core", "fsmonitor", false) => match value.map(str::to_ascii_lowercase).as_deref() {
            Some("true" | "false" | "yes" | "no" | "on" | "off" | "1" | "0" | "") | None => {
                return None
            }
            _ => (Program, "git status/diff/add run this fsmonitor hook"),
        },
        (
            "core",
            "sshcommand" | "gitproxy" | "askpass" | "editor" | "pager" | "alternaterefscommand",
            false,
        ) => (Program, "git runs this command"),
        ("core", "worktree", false) => (Redirect, "moves the work tree git operates on"),
        ("core", "attributesfile", false) => (
            Redirect,
            "attributes select filter and diff drivers, which run programs",
        ),
        ("include", "path", false) | ("includeif", "path", true) => {
            (Include, "git reads this file as configuration")
        }
        ("credential", "helper", _) => (Program, "git runs the credential helper"),
        ("diff", "textconv" | "command", true) => (Program, "git diff runs this driver"),
        ("diff", "external", false) => (Program, "git diff runs this program"),
        ("difftool" | "mergetool", "cmd" | "path", true) => {
            (Program, "the diff/merge tool runs this")
        }
        ("merge", "driver", true) => (Program, "git merge runs this merge driver"),
        ("filter", "clean" | "smudge" | "process", true) => {
            (Program, "checkout/add run this filter")
        }
        ("gpg", "program", _) => (Program, "commit/tag signing and verification run this"),
        ("gpg", "defaultkeycommand", true) => (Program, "ssh signing runs this"),
        ("sequence", "editor", false) => (Program, "git rebase -i runs this editor"),
        ("pager", _, false) | ("alias", _, false) => match value {
            Some(v) if section == "pager" || v.starts_with('!') => {
                (Program, "git runs this command")
            }
            _ => return None,
        },
        ("web", "browser", false) | ("browser" | "man", "cmd" | "path", true) => {
            (Program, "git help/instaweb runs this")
        }
        ("uploadpack", "packobjectshook", false) => (Program, "upload-pack runs this"),
        ("remote", "receivepack" | "uploadpack" | "vcs" | "proxy", true) => {
            (Program, "fetch/push run this program or helper")
        }
        ("submodule", "update", true) => match value {
            Some(v) if v.starts_with('!') => (Program, "git submodule update runs this command"),
            _ => return None,
        },
        ("hook", "command", true) => (Program, "git runs this configured hook"),
        ("trailer", "command" | "cmd", true) => (Program, "interpret-trailers runs this"),
        ("interactive", "difffilter", false) => (Program, "add -p runs this filter"),
        ("sendemail", "smtpserver" | "tocmd" | "cccmd" | "headercmd" | "sendmailcmd", _) => {
            (Program, "git send-email runs this")
        }
        ("init", "templatedir", false) => (HookDir, "git init copies hooks from this template"),
        ("http", "sslkeylogfile", false) => return None,
        _ => return None,
    };
    Some(r)
}

/// The config keys a repository created during a run may keep: what `git init`, `git clone`,
/// `git worktree add`, `git submodule` and ordinary use write, none of which runs code or
/// redirects git. Anything else in such a repository's config is removed after the run.
pub fn key_is_safe(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    let (section, name, sub) = (parts[0], *parts.last().unwrap_or(&""), parts.len() > 2);
    match (section, sub) {
        ("core", false) => matches!(
            name,
            "repositoryformatversion"
                | "filemode"
                | "bare"
                | "logallrefupdates"
                | "ignorecase"
                | "precomposeunicode"
                | "symlinks"
                | "autocrlf"
                | "eol"
                | "safecrlf"
                | "sparsecheckout"
                | "sparsecheckoutcone"
                | "compression"
                | "loosecompression"
                | "abbrev"
                | "quotepath"
                | "checkstat"
                | "trustctime"
                | "untrackedcache"
                | "splitindex"
                | "commitgraph"
                | "multipackindex"
        ),
        ("extensions", false) => matches!(
            name,
            "objectformat" | "refstorage" | "worktreeconfig" | "noop" | "preciousobjects"
        ),
        ("user" | "author" | "committer", false) => matches!(name, "name" | "email"),
        ("init", false) => name == "defaultbranch",
        ("remote", true) => matches!(
            name,
            "url"
                | "pushurl"
                | "fetch"
                | "push"
                | "mirror"
                | "tagopt"
                | "prune"
                | "promisor"
                | "partialclonefilter"
        ),
        ("branch", true) => matches!(
            name,
            "remote" | "merge" | "rebase" | "pushremote" | "description"
        ),
        ("submodule", true) => matches!(name, "url" | "active" | "branch"),
        ("submodule", false) => name == "active",
        (
            "gc" | "pack" | "index" | "fetch" | "pull" | "push" | "merge" | "rebase" | "commit"
            | "tag" | "color" | "status" | "log" | "advice" | "help" | "feature" | "maintenance"
            | "protocol" | "transfer" | "receive" | "uploadpack",
            false,
        ) => !matches!(
            name,
            "packobjectshook" | "driver" | "tool" | "program" | "hookspath" | "allow"
        ),
        _ => false,
    }
}

/// Interactive-rebase/sequencer todo lines that run a command (`exec`/`x`).
pub fn todo_exec_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            let w = l.split_whitespace().next().unwrap_or("");
            w == "exec" || w == "x"
        })
        .map(str::to_string)
        .collect()
}

/// What in a config text a repository created during the run may not keep: every key outside
/// [`key_is_safe`] (includes, programs, hook directories and anything unknown).
pub fn judge_config(text: &str) -> Vec<ConfigEntry> {
    parse_config(text)
        .into_iter()
        .filter(|e| !key_is_safe(&e.key))
        .collect()
}

fn read_bounded(path: &Path) -> Result<Option<String>, GitMetaError> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
            return Ok(None)
        }
        Err(source) => {
            return Err(GitMetaError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let mut buf = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| GitMetaError::Read {
            path: path.into(),
            source,
        })?;
    if buf.len() as u64 > MAX_CONFIG_BYTES {
        return Err(GitMetaError::TooLarge { path: path.into() });
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn expand_home(v: &str) -> PathBuf {
    match v.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| PathBuf::from(v)),
        None => PathBuf::from(v),
    }
}

/// Paths a command string names: every word that looks like a path (`/`, `./`, `~/`), taken
/// relative to the work tree (where git runs hooks and drivers).
fn command_paths(cmd: &str, worktree: &Path) -> Vec<PathBuf> {
    cmd.trim_start_matches('!')
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '`'))
        .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
        .filter(|w| w.contains('/'))
        .map(|w| worktree.join(expand_home(w)))
        .collect()
}

struct Collector<'a> {
    worktree: &'a Path,
    out: Vec<ProtectedEntry>,
    files: usize,
}

impl Collector<'_> {
    fn push(&mut self, path: PathBuf, reason: impl Into<String>) {
        if !self.out.iter().any(|e| e.path == path) {
            self.out.push(ProtectedEntry {
                path,
                reason: reason.into(),
            });
        }
    }

    /// Read `file` (a config) and protect what it names; includes followed to `depth`.
    fn config(&mut self, file: &Path, depth: usize) -> Result<(), GitMetaError> {
        self.files += 1;
        if depth > MAX_INCLUDE_DEPTH || self.files > MAX_CONFIG_FILES {
            return Err(GitMetaError::TooManyIncludes { path: file.into() });
        }
        let Some(text) = read_bounded(file)? else {
            return Ok(());
        };
        let base = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        for e in parse_config(&text) {
            let Some((use_, why)) = key_use(&e.key, e.value.as_deref()) else {
                continue;
            };
            let Some(v) = e.value.as_deref().filter(|v| !v.is_empty()) else {
                continue;
            };
            let reason = format!("named by {} in {}: {why}", e.key, file.display());
            match use_ {
                KeyUse::Include => {
                    let p = base.join(expand_home(v));
                    self.push(p.clone(), reason);
                    self.config(&p, depth + 1)?;
                }
                KeyUse::HookDir => {
                    let p = self.worktree.join(expand_home(v));
                    // Each hook too: the directory may be (or hold) a writable root, which
                    // cannot be made read-only as a whole.
                    for h in HOOKS {
                        self.push(p.join(h), reason.clone());
                    }
                    self.push(p, reason);
                }
                KeyUse::Redirect => {
                    let p = self.worktree.join(expand_home(v));
                    self.push(p, reason);
                }
                KeyUse::Program => {
                    for p in command_paths(v, self.worktree) {
                        self.push(p, reason.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// The fixed files of one gitdir (or module gitdir), then its config's targets.
    fn gitdir(&mut self, gitdir: &Path, common: bool, depth: usize) -> Result<(), GitMetaError> {
        for (name, why) in GITDIR_FIXED {
            self.push(gitdir.join(name), *why);
        }
        self.config(&gitdir.join("config"), 0)?;
        self.config(&gitdir.join("config.worktree"), 0)?;
        if !common || depth >= MAX_MODULE_DEPTH {
            return Ok(());
        }
        for wt in list_dirs(&gitdir.join("worktrees")) {
            for (name, why) in WORKTREE_FIXED {
                self.push(wt.join(name), *why);
            }
            self.config(&wt.join("config.worktree"), 0)?;
        }
        self.modules(&gitdir.join("modules"), depth)
    }

    /// Submodule gitdirs under `modules/` (names may contain `/`: any directory with a `HEAD`).
    fn modules(&mut self, dir: &Path, depth: usize) -> Result<(), GitMetaError> {
        if depth >= MAX_MODULE_DEPTH {
            return Ok(());
        }
        for d in list_dirs(dir) {
            if d.join("HEAD").exists() {
                self.gitdir(&d, true, depth + 1)?;
            } else {
                self.modules(&d, depth + 1)?;
            }
        }
        Ok(())
    }
}

fn list_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Read a `commondir` file: the common directory of a linked worktree's gitdir.
pub fn commondir(gitdir: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(gitdir.join("commondir")).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| gitdir.join(line))
}

/// The global and system config files git reads on the host (as git finds them: `GIT_CONFIG_GLOBAL`
/// or `$XDG_CONFIG_HOME/git/config` and `~/.gitconfig`; `GIT_CONFIG_SYSTEM` or `/etc/gitconfig`
/// unless `GIT_CONFIG_NOSYSTEM`).
fn outer_configs() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let mut v = Vec::new();
    match env("GIT_CONFIG_GLOBAL") {
        Some(g) => v.push(PathBuf::from(g)),
        None => {
            let home = env("HOME").map(PathBuf::from);
            match env("XDG_CONFIG_HOME") {
                Some(x) => v.push(PathBuf::from(x).join("git/config")),
                None => v.extend(home.as_ref().map(|h| h.join(".config/git/config"))),
            }
            v.extend(home.map(|h| h.join(".gitconfig")));
        }
    }
    if env("GIT_CONFIG_NOSYSTEM").is_none() {
        v.push(
            env("GIT_CONFIG_SYSTEM").map_or_else(|| PathBuf::from("/etc/gitconfig"), PathBuf::from),
        );
    }
    v
}

/// Every path that must stay as it is for the repository whose work tree is `worktree` and whose
/// gitdir is `gitdir` (the `.git` directory, or what a `.git` file points to), existing or not:
/// the fixed files and directories of the gitdir and of its common directory, linked worktrees
/// and submodules, and every file the configuration (with its includes, followed at most
/// [`MAX_INCLUDE_DEPTH`] deep) names as a program, hook directory, include or redirect.
pub fn protected_paths(
    worktree: &Path,
    gitdir: &Path,
) -> Result<Vec<ProtectedEntry>, GitMetaError> {
    let mut out = repo_protected_paths(worktree, gitdir)?;
    for e in user_config_paths()? {
        let path = worktree.join(&e.path);
        if !out.iter().any(|o| o.path == path) {
            out.push(ProtectedEntry {
                path,
                reason: e.reason,
            });
        }
    }
    Ok(out)
}

/// [`protected_paths`] without what the user's and the system's configuration name.
pub fn repo_protected_paths(
    worktree: &Path,
    gitdir: &Path,
) -> Result<Vec<ProtectedEntry>, GitMetaError> {
    let mut c = Collector {
        worktree,
        out: Vec::new(),
        files: 0,
    };
    let common = commondir(gitdir);
    match &common {
        Some(cd) => {
            c.gitdir(gitdir, false, 0)?;
            c.gitdir(cd, true, 0)?;
        }
        None => c.gitdir(gitdir, true, 0)?,
    }
    Ok(c.out)
}

/// What the user's and the system's configuration (as host git finds them) name: they apply to
/// every repository, and a relative `core.hooksPath = .githooks` there names a directory inside
/// every work tree, so paths relative to the work tree stay relative here (join them to one);
/// absolute ones (and includes, relative to the including file) are absolute.
pub fn user_config_paths() -> Result<Vec<ProtectedEntry>, GitMetaError> {
    let mut c = Collector {
        worktree: Path::new(""),
        out: Vec::new(),
        files: 0,
    };
    for f in outer_configs() {
        c.config(&f, 0)?;
    }
    Ok(c.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_subsections_quotes_and_continuations() {
        let t =
            "[core]\n\tfsmonitor = \"./x y\" # c\n[includeIf \"gitdir:~/a/\"]\n path = ../inc\n\
                 [filter.lfs]\nclean = a \\\n b\n[Diff \"Sub\"]\n  TextConv=cat\n bare\n";
        let e = parse_config(t);
        assert_eq!(e[0].key, "core.fsmonitor");
        assert_eq!(e[0].value.as_deref(), Some("./x y"));
        assert_eq!(e[1].key, "includeif.gitdir:~/a/.path");
        assert_eq!(e[2].key, "filter.lfs.clean");
        assert_eq!(e[2].value.as_deref(), Some("a  b"));
        assert_eq!(e[3].key, "diff.Sub.textconv");
        assert_eq!(e[4].key, "diff.Sub.bare");
        assert_eq!(e[4].value, None);
    }

    #[test]
    fn programs_hook_dirs_and_includes_are_protected_wherever_they_point() {
        let d = crate::test_util::TempDir::new("gitmeta");
        let wt = d.path();
        let g = wt.join(".git");
        fs::create_dir_all(g.join("modules/sub/hooks")).unwrap();
        fs::write(g.join("modules/sub/HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::create_dir_all(g.join("worktrees/w")).unwrap();
        fs::write(
            g.join("config"),
            "[core]\n hooksPath = .husky/_\n fsmonitor = tools/fsm.sh\n[include]\n path = extra.cfg\n\
             [filter \"x\"]\n smudge = sh scripts/smudge.sh %f\n[alias]\n st = status\n co = !./bin/co\n",
        )
        .unwrap();
        fs::write(g.join("extra.cfg"), "[credential]\n helper = /opt/h\n").unwrap();
        let v = protected_paths(wt, &g).unwrap();
        let has = |p: PathBuf| v.iter().any(|e| e.path == p);
        for p in [
            g.join("config"),
            g.join("hooks"),
            g.join("info/attributes"),
            g.join("config.worktree"),
            g.join("objects/info/alternates"),
            g.join("modules/sub/config"),
            g.join("modules/sub/hooks"),
            g.join("worktrees/w/commondir"),
            g.join("worktrees/w/config.worktree"),
            wt.join(".husky/_"),
            wt.join("tools/fsm.sh"),
            g.join("extra.cfg"),
            PathBuf::from("/opt/h"),
            wt.join("scripts/smudge.sh"),
            wt.join("./bin/co"),
        ] {
            assert!(has(p.clone()), "{p:?} missing from {v:#?}");
        }
        assert!(!v.iter().any(|e| e.path.ends_with("status")));
    }

    #[test]
    fn include_loops_are_bounded() {
        let d = crate::test_util::TempDir::new("gitmeta-loop");
        let g = d.path().join(".git");
        fs::create_dir_all(&g).unwrap();
        fs::write(g.join("config"), "[include]\npath = config\n").unwrap();
        assert!(matches!(
            protected_paths(d.path(), &g),
            Err(GitMetaError::TooManyIncludes { .. })
        ));
    }

    #[test]
    fn created_repo_judge_keeps_git_defaults_only() {
        let t = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\
                 \tlogallrefupdates = true\n\tfsmonitor = ./x\n[remote \"origin\"]\n url = ../o\n\
                 fetch = +refs/heads/*:refs/remotes/origin/*\n uploadpack = ./evil\n\
                 [include]\n path = /tmp/x\n[branch \"main\"]\n remote = origin\n";
        let bad: Vec<String> = judge_config(t).into_iter().map(|e| e.key).collect();
        assert_eq!(
            bad,
            ["core.fsmonitor", "remote.origin.uploadpack", "include.path"]
        );
        assert_eq!(
            todo_exec_lines("pick a b\nexec touch x\nx y\n# exec no\n"),
            ["exec touch x", "x y"]
        );
    }
}
