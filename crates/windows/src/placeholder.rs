//! Protected names that do not exist yet (issue 15, "placeholders (or refusal)").
//!
//! An ACL protects an object that exists; nothing stops the sandbox from *creating* `.git`,
//! `.claude` or `.vscode\tasks.json` where there was none, and a deny-create ACE on the parent
//! cannot name a child (`FILE_ADD_FILE` / `FILE_ADD_SUBDIRECTORY` are rights on the directory,
//! not on a name). So, per missing protected path `m` under a writable root, the plan picks:
//!
//! * **a placeholder directory** when `m` is one component below its root and its name is one
//!   Stockade knows to be a directory ([`PLACEHOLDER_DIR_NAMES`]): Stockade creates the empty
//!   directory `m` (as you, before the command starts) and plans it like an existing protected
//!   directory (the sandbox's deny ACEs, and the metadata guards that stop it being renamed
//!   away). Cost: an empty `.git`, `.claude`, … appears in the workspace until `stockade clean`,
//!   which removes it if Stockade created it and it is still empty. git skips a `.git`
//!   directory that is not a repository (and your own `git init` works in it); tools that only
//!   test whether `.git` exists treat the workspace as a repository root.
//! * **no new entries in the parent** when `m` has two or more components below the root
//!   (`.vscode\tasks.json`, `.gemini\settings.json`): the sandbox is denied `FILE_ADD_FILE` and
//!   `FILE_ADD_SUBDIRECTORY` on `m`'s parent (Stockade creates the missing parents, empty, and
//!   removes them on clean), and that directory and its ancestors below the root cannot be
//!   deleted or renamed by the sandbox. Cost: the command cannot create, or rename anything
//!   into, *any* new entry directly in `.vscode\` or `.gemini\` (it can still write the
//!   existing files there that are not protected). The same deny on a writable root itself would
//!   stop every new file at the top of the workspace, so it is never planned there.
//! * **nothing** (the path stays in `check_after_run`, reported after the run) for a missing
//!   file name directly below a root (`.mcp.json`, `.envrc`, `.pre-commit-config.yaml`, …) and
//!   for names Stockade does not know: an empty file would be read as a broken configuration by
//!   the tool the name belongs to, a directory in its place would break the tool for you, and a
//!   deny-create on the root would stop the command creating any file there.
//!
//! Deeper occurrences of any-depth names (`sub\new\.git`) cannot be planned for at all and stay
//! a post-run check.

use crate::input::{Kind, PlannedWinPath, WinPlanInput};
use crate::path::WinPath;
use serde::{Deserialize, Serialize};

/// Protected names directly below a root for which a missing entry gets an empty placeholder
/// directory: the default protected names that are directories.
pub const PLACEHOLDER_DIR_NAMES: &[&str] = &[
    ".git",
    ".claude",
    ".codex",
    ".agents",
    ".stockade",
    ".cursor",
    ".idea",
    ".continue",
    ".roo",
    ".kiro",
    ".amazonq",
    ".devcontainer",
    ".husky",
];

/// Reason prefix of a placeholder's protected entry.
pub const PLACEHOLDER_REASON: &str = "placeholder";

/// What to do about the missing protected paths of one plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceholderPlan {
    /// Empty directories Stockade creates before any ACE is applied, parents first.
    pub create: Vec<WinPath>,
    /// Missing protected paths that become protected placeholder directories.
    pub protected: Vec<WinPath>,
    /// Directories in which the sandbox may create no file (a protected file below is missing).
    pub no_new_files: Vec<WinPath>,
    /// Missing protected paths neither covers (checked after the run).
    pub uncovered: Vec<WinPath>,
}

fn is_placeholder_dir_name(name: &str) -> bool {
    PLACEHOLDER_DIR_NAMES
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// The placeholder plan for `input`'s missing protected paths; `exists` says whether a path
/// exists now (the apply layer asks the volume, the tests the model).
pub fn plan(input: &WinPlanInput, exists: impl Fn(&WinPath) -> bool) -> PlaceholderPlan {
    let roots = input.effective_roots();
    let mut out = PlaceholderPlan::default();
    let mut missing = input.protected_missing.clone();
    missing.sort();
    missing.dedup();
    for m in missing {
        let below = crate::path::components_below_root(&m, &roots);
        if below.is_empty() || exists(&m) {
            out.uncovered.push(m);
            continue;
        }
        if below.len() == 1 {
            if m.file_name().is_some_and(is_placeholder_dir_name) {
                push_unique(&mut out.create, m.clone());
                push_unique(&mut out.protected, m);
            } else {
                out.uncovered.push(m);
            }
            continue;
        }
        // A directory name deeper down (not what the policy lists: it joins any-depth names to
        // the roots only): nothing a parent's ACE could stop without stopping everything there.
        if m.file_name().is_some_and(is_placeholder_dir_name) {
            out.uncovered.push(m);
            continue;
        }
        // Two or more components: no new entries in the parent, whose missing chain is created.
        for c in &below[..below.len() - 1] {
            if !exists(c) {
                push_unique(&mut out.create, c.clone());
            }
        }
        if let Some(parent) = m.parent() {
            push_unique(&mut out.no_new_files, parent);
        }
    }
    out.create.sort();
    out
}

fn push_unique(v: &mut Vec<WinPath>, p: WinPath) {
    if !v.contains(&p) {
        v.push(p);
    }
}

impl WinPlanInput {
    /// The input as planned once `pp.create` exists: placeholders are protected directories and
    /// the no-new-files directories are recorded; every other missing path stays missing (and is
    /// still checked after the run).
    pub fn with_placeholders(&self, pp: &PlaceholderPlan) -> WinPlanInput {
        let mut out = self.clone();
        for p in &pp.protected {
            let name = p.file_name().unwrap_or_default();
            out.protected.push(PlannedWinPath {
                path: p.clone(),
                kind: Kind::Dir,
                reason: format!("{PLACEHOLDER_REASON} for the missing protected name {name}"),
            });
        }
        for d in &pp.no_new_files {
            if !out.no_new_files.iter().any(|x| x.path == *d) {
                out.no_new_files.push(PlannedWinPath {
                    path: d.clone(),
                    kind: Kind::Dir,
                    reason: "a protected path below does not exist yet: no new entries".into(),
                });
            }
        }
        out.protected_missing.retain(|m| !pp.protected.contains(m));
        out
    }

    /// The ancestors of protected paths strictly beneath their writable root, other than
    /// protected paths, what lies inside a protected directory, and [`Self::no_new_files_chain`].
    /// Renaming one away and creating it again needs only rights the command has in the root
    /// (`DELETE` is not a write bit, and adding an entry to the root is granted): `sub` renamed to
    /// `sub-old`, then a new `sub` with a new `sub\.git` pointing at a gitdir the command wrote.
    /// So each is guarded like a protected path's parent, this object only: no delete, no
    /// rename, no re-ACL (`attacks::rename_ancestor_of_protected_and_recreate`).
    pub fn protected_ancestors(&self) -> Vec<PlannedWinPath> {
        let roots = self.effective_roots();
        let chain = self.no_new_files_chain();
        let inside_protected = |c: &WinPath| {
            self.protected
                .iter()
                .any(|q| c == &q.path || (q.kind == Kind::Dir && c.starts_with(&q.path)))
        };
        let mut out: Vec<PlannedWinPath> = Vec::new();
        for p in &self.protected {
            let below = crate::path::components_below_root(&p.path, &roots);
            for c in below.iter().take(below.len().saturating_sub(1)) {
                if inside_protected(c)
                    || chain.iter().any(|x| x.path == *c)
                    || out.iter().any(|x| x.path == *c)
                {
                    continue;
                }
                out.push(PlannedWinPath {
                    path: c.clone(),
                    kind: Kind::Dir,
                    reason: format!("ancestor of the protected path {}", p.path),
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// The directories that guard a no-new-files directory against being renamed away: the
    /// directory and its ancestors below the root.
    pub fn no_new_files_chain(&self) -> Vec<PlannedWinPath> {
        let roots = self.effective_roots();
        let mut out: Vec<PlannedWinPath> = Vec::new();
        for d in &self.no_new_files {
            for c in crate::path::components_below_root(&d.path, &roots) {
                if !out.iter().any(|x| x.path == c) {
                    out.push(PlannedWinPath {
                        path: c,
                        kind: Kind::Dir,
                        reason: d.reason.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

/// The input `stockade clean` undoes: the current one (placeholders that still exist are
/// existing protected paths by now) plus every no-new-files directory recorded for these roots
/// that still exists, so that its ACE goes even after the protected file appeared.
pub fn for_clean(
    input: &WinPlanInput,
    recorded_no_new_files: &[WinPath],
    exists: impl Fn(&WinPath) -> bool,
) -> WinPlanInput {
    let mut pp = plan(input, &exists);
    pp.create.clear();
    let roots = input.effective_roots();
    for d in recorded_no_new_files {
        if roots.iter().any(|r| d.starts_with(r) && d != r) && exists(d) {
            push_unique(&mut pp.no_new_files, d.clone());
        }
    }
    input.with_placeholders(&pp)
}

/// The order in which `stockade clean` tries to remove the placeholders it created: deepest
/// first, so that a created parent (`.vscode`) comes after what was created in it. Each removal
/// is `RemoveDirectoryW`, which fails on a directory that is not empty: what the user (or the
/// command) put there stays, and so does the directory.
pub fn removal_order(created: &[WinPath]) -> Vec<WinPath> {
    let mut v = created.to_vec();
    v.sort_by_key(|p| std::cmp::Reverse(p.depth()));
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, ws};

    #[test]
    fn missing_names_get_a_directory_a_no_new_files_parent_or_nothing() {
        let mut input = fixture::input();
        input.protected_missing.extend([
            ws(r".vscode\tasks.json"),
            ws(r".vscode\launch.json"),
            ws(".mcp.json"),
            ws(r"src\.git"), // a directory name deeper down: nothing to plan
        ]);
        let fs = fixture::filesystem();
        let pp = plan(&input, |p| fs.exists(p));
        assert_eq!(
            pp.protected,
            vec![ws(".agents"), ws(".claude"), ws(".codex")]
        );
        assert_eq!(pp.no_new_files, vec![ws(".vscode")]);
        assert_eq!(
            pp.create,
            vec![ws(".agents"), ws(".claude"), ws(".codex"), ws(".vscode")]
        );
        assert_eq!(pp.uncovered, vec![ws(".mcp.json"), ws(r"src\.git")]);
        let planned = input.with_placeholders(&pp);
        assert!(!planned.protected_missing.contains(&ws(".claude")));
        assert!(planned
            .protected_missing
            .contains(&ws(r".vscode\tasks.json")));
        assert!(planned.protected_missing.contains(&ws(".mcp.json")));
        assert!(planned
            .protected
            .iter()
            .any(|p| p.path == ws(".claude") && p.reason.starts_with(PLACEHOLDER_REASON)));
        assert_eq!(planned.no_new_files_chain().len(), 1);
    }

    #[test]
    fn an_existing_parent_is_not_created_and_a_root_is_never_no_new_files() {
        let mut input = fixture::input();
        input.protected_missing = vec![ws(r"src\tasks.json"), ws("opencode.json")];
        let fs = fixture::filesystem();
        let pp = plan(&input, |p| fs.exists(p));
        assert!(pp.create.is_empty());
        assert_eq!(pp.no_new_files, vec![ws("src")]);
        assert_eq!(pp.uncovered, vec![ws("opencode.json")]);
        assert!(!pp.no_new_files.contains(&ws("")));
    }
}
