//! The judge's rules against real directories (each hole of the earlier attempt that is a
//! decision has a test here; the mechanism's are in crates/sys and crates/cli/tests).

use super::*;
use crate::test_util::TempDir;
use std::os::unix::fs::symlink;
use std::time::Duration;

fn names(entries: &[&str]) -> Vec<ProtectedName> {
    entries
        .iter()
        .map(|e| ProtectedName::parse(e).unwrap())
        .collect()
}

fn default_names() -> Vec<ProtectedName> {
    crate::model::parse_protected_names(
        &crate::test_util::shipped_policy()
            .filesystem
            .protected_names,
    )
    .unwrap()
}

/// A point in time after everything created so far and before everything created next (the
/// kernel stamps birth times from a coarse clock).
fn launch_now() -> SystemTime {
    std::thread::sleep(Duration::from_millis(15));
    let t = SystemTime::now();
    std::thread::sleep(Duration::from_millis(15));
    t
}

struct Fx {
    _t: TempDir,
    ws: PathBuf,
}

impl Fx {
    fn new(tag: &str) -> Fx {
        let t = TempDir::new(tag);
        let ws = t.mkdir("ws");
        Fx { _t: t, ws }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.ws.join(rel)
    }
    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.p(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }
    fn file(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }
    /// A minimal repository with its gitdir at `rel` (`x/.git`, or a bare `x.git`).
    fn gitdir(&self, rel: &str, config: &str) -> PathBuf {
        for d in [
            "objects/pack",
            "objects/info",
            "refs/heads",
            "hooks",
            "info",
        ] {
            self.mkdir(&format!("{rel}/{d}"));
        }
        self.file(&format!("{rel}/HEAD"), "ref: refs/heads/main\n");
        self.file(&format!("{rel}/config"), config);
        self.p(rel)
    }
    fn protector(&self, mode: GitMode, names: Vec<ProtectedName>, start: SystemTime) -> Protector {
        self.protector_with(mode, names, start, Vec::new(), Vec::new())
    }
    fn protector_with(
        &self,
        mode: GitMode,
        names: Vec<ProtectedName>,
        start: SystemTime,
        snapshotted: Vec<PathBuf>,
        extra_roots: Vec<PathBuf>,
    ) -> Protector {
        let mut roots = vec![self.ws.clone()];
        roots.extend(extra_roots);
        Protector::with_user_entries(
            ProtectorInput {
                writable_roots: roots,
                workspace: self.ws.clone(),
                git_mode: mode,
                names,
                snapshotted,
                run_start: start,
            },
            Vec::new(),
        )
    }
}

fn create(p: &Path) -> Op<'_> {
    Op::Create {
        path: p,
        kind: CreateKind::File,
    }
}
fn mkdir(p: &Path) -> Op<'_> {
    Op::Create {
        path: p,
        kind: CreateKind::Dir,
    }
}
fn write(p: &Path) -> Op<'_> {
    Op::OpenWrite {
        path: p,
        trunc: false,
    }
}
fn remove(p: &Path) -> Op<'_> {
    Op::Remove {
        path: p,
        dir: false,
    }
}
fn rmdir(p: &Path) -> Op<'_> {
    Op::Remove { path: p, dir: true }
}
fn rename<'a>(from: &'a Path, to: &'a Path) -> Op<'a> {
    Op::Rename {
        from,
        to,
        exchange: false,
    }
}
fn exchange<'a>(from: &'a Path, to: &'a Path) -> Op<'a> {
    Op::Rename {
        from,
        to,
        exchange: true,
    }
}

#[track_caller]
fn refused(pr: &Protector, op: Op<'_>) -> Denial {
    match pr.check(&op) {
        Err(d) => d,
        Ok(()) => panic!("allowed, should be refused: {op:?}"),
    }
}

#[track_caller]
fn allowed(pr: &Protector, op: Op<'_>) {
    if let Err(d) = pr.check(&op) {
        panic!("refused, should be allowed: {op:?}: {d}");
    }
}

#[test]
fn protector_is_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<Protector>();
    both::<Denial>();
}

#[test]
fn ordinary_writes_and_deep_agent_names_are_allowed() {
    let f = Fx::new("prot-ordinary");
    f.gitdir(".git", "[core]\n\tbare = false\n");
    f.file("src/main.rs", "fn main() {}\n");
    f.mkdir("node_modules/pkg");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    let main = f.p("src/main.rs");
    let tmp = f.p("src/.main.rs.tmp");
    allowed(&pr, write(&main));
    allowed(&pr, create(&tmp));
    allowed(&pr, rename(&tmp, &main));
    allowed(&pr, remove(&main));
    allowed(&pr, mkdir(&f.p("target")));
    allowed(
        &pr,
        Op::SetAttr {
            path: &main,
            what: AttrKind::Mode,
        },
    );
    // Root-scoped names below a root that is not a repository: package archives carry them.
    for rel in [
        "node_modules/pkg/.envrc",
        "node_modules/pkg/.vscode/tasks.json",
        "node_modules/pkg/.mcp.json",
        "node_modules/pkg/.husky/pre-commit",
    ] {
        allowed(&pr, create(&f.p(rel)));
    }
    // The names that were always protected at any depth still are.
    refused(&pr, create(&f.p("node_modules/pkg/.claude/settings.json")));
    refused(&pr, create(&f.p("other/.stockade/config.toml")));
    // Names that only share a prefix.
    allowed(&pr, create(&f.p(".claude-notes")));
    allowed(&pr, create(&f.p(".vscode/extensions.json")));
    allowed(&pr, mkdir(&f.p(".vscode")));
    // Outside the writable roots: not the gate's business.
    allowed(
        &pr,
        create(Path::new("/nonexistent-elsewhere/.claude/settings.json")),
    );
}

#[test]
fn agent_configs_refused_at_every_root_whether_or_not_they_exist() {
    let f = Fx::new("prot-agent");
    let t2 = TempDir::new("prot-agent-root2");
    f.mkdir("pkg/sub/.git");
    f.mkdir("plain/dir");
    let pr = f.protector_with(
        GitMode::Commit,
        default_names(),
        launch_now(),
        Vec::new(),
        vec![t2.path().to_path_buf()],
    );
    for rel in [
        ".mcp.json",
        ".vscode/tasks.json",
        ".vscode/settings.json",
        ".gemini/settings.json",
        ".cursor/mcp.json",
        ".idea/workspace.xml",
        ".envrc",
        ".devcontainer/devcontainer.json",
        ".pre-commit-config.yaml",
        ".husky/pre-commit",
        "opencode.json",
        ".aider.conf.yml",
    ] {
        refused(&pr, create(&f.p(rel)));
        // The root of every repository (a directory holding `.git`), however deep.
        refused(&pr, create(&f.p(&format!("pkg/sub/{rel}"))));
        // Each writable root.
        refused(&pr, create(&t2.path().join(rel)));
        // Not a repository root: allowed.
        allowed(&pr, create(&f.p(&format!("plain/dir/{rel}"))));
    }
    for rel in [
        ".claude/settings.json",
        ".codex/config.toml",
        ".agents/x",
        ".stockade/config.toml",
    ] {
        refused(&pr, create(&f.p(rel)));
        refused(&pr, create(&f.p(&format!("plain/dir/{rel}"))));
    }
    refused(&pr, mkdir(&f.p(".claude")));
    refused(&pr, write(&f.p(".envrc")));
    refused(&pr, remove(&f.p(".envrc")));
    refused(
        &pr,
        Op::SetAttr {
            path: &f.p(".envrc"),
            what: AttrKind::Mode,
        },
    );
    refused(
        &pr,
        Op::Create {
            path: &f.p(".claude"),
            kind: CreateKind::Symlink,
        },
    );
    let d = refused(&pr, create(&f.p(".vscode/tasks.json")));
    let line = d.to_string();
    assert!(
        line.starts_with("refused: create .vscode/tasks.json — /.vscode/tasks.json at "),
        "{line}"
    );
    assert!(line.contains("VS Code runs its tasks"), "{line}");
    assert!(
        line.contains("protected_names = [\"!/.vscode/tasks.json\"]"),
        "{line}"
    );
    assert_eq!(d.path, f.p(".vscode/tasks.json"));
    assert!(!line.contains('\n'));
    let line = refused(&pr, create(&f.p(".claude/settings.json"))).to_string();
    assert!(
        line.starts_with(
            "refused: create .claude/settings.json — .claude is a protected name: \
                          Claude Code runs the hooks"
        ),
        "{line}"
    );
    assert!(line.contains("protected_names = [\"!.claude\"]"), "{line}");
}

#[test]
fn moving_into_or_out_of_an_agent_config_position_is_refused() {
    let f = Fx::new("prot-agent-mv");
    f.mkdir(".vscode");
    f.file("prepared/tasks.json", "{}");
    f.mkdir("other");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    let (vscode, prepared) = (f.p(".vscode"), f.p("prepared"));
    // `.vscode` holds `.vscode/tasks.json`: neither moved away nor replaced.
    refused(&pr, rename(&vscode, &f.p("old-vscode")));
    refused(&pr, rename(&prepared, &vscode));
    refused(&pr, rmdir(&vscode));
    refused(&pr, exchange(&prepared, &vscode));
    refused(
        &pr,
        rename(&f.p("prepared/tasks.json"), &f.p(".vscode/tasks.json")),
    );
    refused(&pr, rename(&prepared, &f.p(".claude")));
    refused(
        &pr,
        Op::Link {
            from: &f.p("prepared/tasks.json"),
            to: &f.p(".mcp.json"),
        },
    );
    allowed(&pr, rename(&prepared, &f.p("other/prepared")));
    allowed(&pr, exchange(&prepared, &f.p("other")));
}

#[test]
fn removing_an_entry_from_the_list_allows_it() {
    let f = Fx::new("prot-remove");
    let mut n: Vec<ProtectedName> = default_names();
    n.retain(|n| n.entry != "/.vscode/tasks.json");
    let pr = f.protector(GitMode::Commit, n, launch_now());
    allowed(&pr, create(&f.p(".vscode/tasks.json")));
    refused(&pr, create(&f.p(".vscode/mcp.json")));
    // A user's any-depth name protects at every depth.
    let pr = f.protector(GitMode::Commit, names(&[".git", ".hg"]), launch_now());
    refused(&pr, create(&f.p("a/b/.hg/hgrc")));
    allowed(&pr, create(&f.p(".claude/settings.json")));
}

#[test]
fn read_only_mode_refuses_every_write_in_a_launch_gitdir() {
    let f = Fx::new("prot-ro");
    let g = f.gitdir(".git", "");
    f.file(".git/index", "");
    let pr = f.protector(GitMode::ReadOnly, default_names(), launch_now());
    for rel in [
        "index.lock",
        "objects/ab/cdef",
        "refs/heads/x",
        "HEAD",
        "packed-refs",
    ] {
        refused(&pr, create(&g.join(rel)));
    }
    refused(&pr, write(&g.join("index")));
    refused(&pr, remove(&g.join("HEAD")));
    refused(&pr, rename(&g, &f.p("git-old")));
    let d = refused(&pr, create(&g.join("index.lock")));
    assert!(d.to_string().contains("mode = \"commit\""), "{d}");
    // A repository created during the run is the post-run check's (git init works).
    let fresh = f.p("new/.git");
    allowed(&pr, mkdir(&f.mkdir("new").join(".git")));
    fs::create_dir_all(fresh.join("hooks")).unwrap();
    allowed(&pr, create(&fresh.join("config")));
    allowed(&pr, create(&fresh.join("hooks/pre-commit")));
    assert!(Protector::git_relevant(&fresh.join("config")));
}

#[test]
fn commit_mode_allows_a_commit_and_refuses_code_running_entries() {
    let f = Fx::new("prot-commit");
    let g = f.gitdir(".git", "[core]\n\tbare = false\n");
    f.mkdir(".git/modules/sub/hooks");
    f.file(".git/modules/sub/HEAD", "x\n");
    f.file(".git/modules/sub/config", "");
    f.mkdir(".git/worktrees/w");
    f.file(".git/worktrees/w/commondir", "../..\n");
    f.file(".git/index", "");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    // What commit, branch, stash, rebase, gc write.
    for rel in [
        "index.lock",
        "objects/ab/cdef0123",
        "objects/pack/tmp_pack_x",
        "refs/heads/feature",
        "refs/stash",
        "logs/HEAD",
        "packed-refs.lock",
        "ORIG_HEAD",
        "rebase-merge/git-rebase-todo",
        "COMMIT_EDITMSG",
        "modules/sub/index",
        "worktrees/w/HEAD",
        "info/exclude",
        "objects/info/commit-graph",
    ] {
        allowed(&pr, create(&g.join(rel)));
    }
    allowed(&pr, write(&g.join("index")));
    allowed(&pr, rename(&g.join("index.lock"), &g.join("index")));
    allowed(&pr, mkdir(&g.join("info")));
    // What makes git run code or redirects it, existing or not (hole 9: refused at every
    // name-creating call although the parent is writable).
    for rel in [
        "config",
        "config.worktree",
        "hooks/pre-commit",
        "hooks",
        "info/attributes",
        "commondir",
        "objects/info/alternates",
        "modules/sub/config",
        "modules/sub/hooks/post-checkout",
        "modules/sub/config.worktree",
        "worktrees/w/commondir",
        "worktrees/w/config.worktree",
        "worktrees/w/gitdir",
    ] {
        let p = g.join(rel);
        refused(&pr, create(&p));
        refused(
            &pr,
            Op::Create {
                path: &p,
                kind: CreateKind::Symlink,
            },
        );
        refused(
            &pr,
            Op::Create {
                path: &p,
                kind: CreateKind::Node,
            },
        );
        refused(
            &pr,
            Op::Create {
                path: &p,
                kind: CreateKind::Socket,
            },
        );
        refused(
            &pr,
            Op::Link {
                from: &f.p("x"),
                to: &p,
            },
        );
        refused(&pr, rename(&f.p("x"), &p));
    }
    refused(
        &pr,
        Op::OpenWrite {
            path: &g.join("config"),
            trunc: false,
        },
    );
    refused(
        &pr,
        Op::SetAttr {
            path: &g.join("hooks"),
            what: AttrKind::Mode,
        },
    );
    refused(&pr, rmdir(&g.join("hooks")));
    refused(&pr, rename(&g.join("info"), &f.p("info-old")));
    refused(&pr, rename(&g.join("modules/sub"), &f.p("m")));
    refused(&pr, rename(&g.join("worktrees/w"), &f.p("w")));
    refused(&pr, rename(&g.join("modules"), &f.p("m2")));
    refused(&pr, rename(&g.join("worktrees"), &f.p("w2")));
    refused(&pr, rename(&f.p("x"), &g.join("modules")));
    refused(&pr, remove(&g));
    refused(&pr, rename(&g, &f.p("git-old")));
    let d = refused(&pr, create(&g.join("hooks/pre-commit")));
    assert!(
        d.to_string().contains("git runs the executable files"),
        "{d}"
    );
    assert!(d.to_string().contains("on the host"), "{d}");
    // A linked worktree or submodule added during the run: its pointer files are the
    // post-run check's.
    let added = f.mkdir(".git/worktrees/added");
    allowed(&pr, create(&added.join("commondir")));
    allowed(&pr, create(&added.join("gitdir")));
    let m = f.mkdir(".git/modules/new");
    allowed(&pr, create(&m.join("config")));
}

#[test]
fn paths_the_configuration_names_and_their_ancestors() {
    let f = Fx::new("prot-named");
    f.gitdir(
        ".git",
        "[core]\n\thooksPath = githooks\n\tfsmonitor = tools/fsm.sh\n[include]\n\tpath = \
         ../tools/inc.cfg\n[filter \"x\"]\n\tsmudge = sh scripts/smudge.sh %f\n",
    );
    f.file("tools/fsm.sh", "#!/bin/sh\n");
    f.file("tools/other.sh", "");
    f.file("tools/inc.cfg", "[diff \"y\"]\n\ttextconv = bin/conv\n");
    f.file("prepared/pre-commit", "");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    refused(&pr, create(&f.p("githooks/pre-commit")));
    refused(&pr, mkdir(&f.p("githooks")));
    refused(
        &pr,
        Op::OpenWrite {
            path: &f.p("tools/fsm.sh"),
            trunc: false,
        },
    );
    refused(&pr, write(&f.p("tools/inc.cfg")));
    refused(&pr, create(&f.p("scripts/smudge.sh")));
    // Named by an include: found because the include is read.
    refused(&pr, create(&f.p("bin/conv")));
    // Ancestors below the repository root: not moved, removed or replaced.
    refused(&pr, rename(&f.p("tools"), &f.p("tools-old")));
    refused(&pr, rmdir(&f.p("tools")));
    refused(&pr, rename(&f.p("prepared"), &f.p("tools")));
    refused(&pr, rename(&f.p("prepared"), &f.p("githooks")));
    refused(
        &pr,
        rename(&f.p("prepared/pre-commit"), &f.p("tools/fsm.sh")),
    );
    refused(&pr, exchange(&f.p("prepared"), &f.p("tools")));
    refused(
        &pr,
        Op::Link {
            from: &f.p("tools/fsm.sh"),
            to: &f.p("x"),
        },
    );
    // Siblings are ordinary files.
    allowed(&pr, write(&f.p("tools/other.sh")));
    allowed(&pr, create(&f.p("tools/new.sh")));
    allowed(
        &pr,
        rename(&f.p("tools/other.sh"), &f.p("tools/renamed.sh")),
    );
}

#[test]
fn symlinked_ancestor_is_judged_by_its_resolved_path() {
    // Hole 2: `ws/link -> ws/.git`, then `link/hooks/x`. The supervisor hands over the real
    // path of the resolved parent; the judge needs nothing else.
    let f = Fx::new("prot-symlink");
    f.gitdir(".git", "");
    symlink(f.p(".git"), f.p("link")).unwrap();
    // A `.git` that is a symlink counts as `.git`; its target is the gitdir.
    let store = f.gitdir("store/sub-git", "");
    f.mkdir("sub");
    symlink(&store, f.p("sub/.git")).unwrap();
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    let resolved = fs::canonicalize(f.p("link")).unwrap().join("hooks/x");
    assert_eq!(resolved, f.p(".git/hooks/x"));
    refused(&pr, create(&resolved));
    refused(&pr, create(&store.join("hooks/pre-commit")));
    refused(&pr, write(&store.join("config")));
    refused(&pr, create(&f.p("sub/.vscode/tasks.json")));
    refused(&pr, remove(&f.p("sub/.git")));
    allowed(&pr, create(&store.join("objects/ab/cd")));
}

#[test]
fn non_utf8_names_are_compared_as_bytes() {
    let f = Fx::new("prot-nonutf8");
    let odd = f.ws.join(OsStr::from_bytes(b"r\xffepo"));
    fs::create_dir_all(odd.join(".git/hooks")).unwrap();
    fs::write(odd.join(".git/config"), "").unwrap();
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    refused(&pr, create(&odd.join(".git/hooks/pre-commit")));
    refused(&pr, create(&odd.join(".mcp.json")));
    let plain = odd.join(OsStr::from_bytes(b"\xfe\xfd.txt"));
    allowed(&pr, create(&plain));
    // The line for a terminal: control characters escaped, invalid UTF-8 replaced.
    let evil = f.ws.join(OsStr::from_bytes(b".claude/\x1b[31mx\xff"));
    let line = refused(&pr, create(&evil)).to_string();
    assert!(!line.contains('\u{1b}'), "{line:?}");
    assert!(line.contains("\\u{1b}[31mx\u{fffd}"), "{line:?}");
}

#[test]
fn fake_gitdir_and_bare_repositories_are_gitdirs() {
    // Hole 4: a `.git` file naming `../elsewhere`, and a bare repository (no `.git` name).
    let f = Fx::new("prot-fake");
    let elsewhere = f.gitdir("elsewhere", "");
    f.file("a/.git", "gitdir: ../elsewhere\n");
    let bare = f.gitdir("vendor/thing.git", "");
    // A gitdir a `.git` file names that does not look like one (no HEAD yet).
    f.mkdir("half/objects");
    f.file("half/config", "");
    f.file("b/.git", "gitdir: ../half\n");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    refused(&pr, write(&elsewhere.join("config")));
    refused(&pr, create(&elsewhere.join("hooks/pre-commit")));
    refused(&pr, create(&bare.join("hooks/post-update")));
    refused(&pr, write(&bare.join("config")));
    refused(&pr, create(&bare.join("info/attributes")));
    allowed(&pr, create(&bare.join("objects/ab/cd")));
    allowed(&pr, create(&bare.join("refs/heads/x")));
    refused(&pr, write(&f.p("a/.git")));
    refused(&pr, create(&f.p("a/.mcp.json")));
    // Once the `.git` file that names it has been looked at, `half` is a gitdir too.
    allowed(&pr, create(&f.p("b/file")));
    refused(&pr, write(&f.p("half/config")));
    let pr = f.protector(GitMode::ReadOnly, default_names(), launch_now());
    refused(&pr, create(&bare.join("objects/ab/cd")));
    refused(&pr, create(&elsewhere.join("refs/heads/x")));
}

#[test]
fn history_of_an_unsnapshotted_repository_is_read_only_new_objects_are_not() {
    let f = Fx::new("prot-history");
    let top = f.gitdir(".git", "");
    f.file(".git/objects/aa/0123456789abcdef", "old");
    let g = f.gitdir("pkg/sub/.git", "");
    let old = f.file("pkg/sub/.git/objects/ab/0123456789abcdef", "old");
    let pack = f.file("pkg/sub/.git/objects/pack/pack-1234.pack", "old");
    let start = launch_now();
    let new = f.file("pkg/sub/.git/objects/cd/0123456789abcdef", "new");
    let pr = f.protector_with(
        GitMode::Commit,
        default_names(),
        start,
        vec![top.clone()],
        vec![],
    );
    refused(&pr, remove(&old));
    refused(&pr, remove(&pack));
    refused(
        &pr,
        Op::OpenWrite {
            path: &pack,
            trunc: true,
        },
    );
    refused(&pr, write(&old));
    refused(
        &pr,
        Op::SetAttr {
            path: &pack,
            what: AttrKind::Truncate,
        },
    );
    refused(&pr, rename(&old, &f.p("x")));
    refused(&pr, rename(&new, &old));
    refused(&pr, rename(&g.join("objects/pack"), &f.p("p")));
    // A hard link out of `objects/` would let the old object be written under another name.
    refused(
        &pr,
        Op::Link {
            from: &old,
            to: &f.p("obj-link"),
        },
    );
    allowed(
        &pr,
        Op::Link {
            from: &new,
            to: &f.p("new-link"),
        },
    );
    let d = refused(&pr, remove(&old));
    assert!(d.to_string().contains("did not snapshot"), "{d}");
    // New objects come and go (gc of what this run wrote; a repack's new pack).
    allowed(&pr, remove(&new));
    allowed(&pr, create(&g.join("objects/pack/pack-5678.pack")));
    allowed(
        &pr,
        Op::SetAttr {
            path: &old,
            what: AttrKind::Mode,
        },
    );
    // The snapshotted launch repository: gc may remove old objects (the snapshot keeps them).
    allowed(&pr, remove(&top.join("objects/aa/0123456789abcdef")));
}

#[test]
fn hard_links_to_protected_files() {
    let f = Fx::new("prot-links");
    f.gitdir(".git", "[core]\n\tfsmonitor = tools/fsm.sh\n");
    f.file(".git/hooks/pre-commit", "#!/bin/sh\n");
    f.file("tools/fsm.sh", "#!/bin/sh\n");
    // Links the host made before the run.
    fs::hard_link(f.p(".git/hooks/pre-commit"), f.p("hook-link")).unwrap();
    fs::hard_link(f.p("tools/fsm.sh"), f.p("fsm-link")).unwrap();
    f.file("a.txt", "");
    fs::hard_link(f.p("a.txt"), f.p("b.txt")).unwrap();
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    refused(
        &pr,
        Op::Link {
            from: &f.p(".git/config"),
            to: &f.p("cfg"),
        },
    );
    refused(
        &pr,
        Op::Link {
            from: &f.p(".git/hooks/pre-commit"),
            to: &f.p("h"),
        },
    );
    let d = refused(&pr, write(&f.p("hook-link")));
    assert!(d.to_string().contains("hard link to"), "{d}");
    refused(
        &pr,
        Op::SetAttr {
            path: &f.p("hook-link"),
            what: AttrKind::Mode,
        },
    );
    refused(&pr, write(&f.p("fsm-link")));
    allowed(&pr, write(&f.p("b.txt")));
    allowed(&pr, remove(&f.p("hook-link")));
}

#[test]
fn renaming_a_launch_repository_or_its_gitdir_is_refused() {
    // Hole 5: ancestors of protected paths, exchange, and a prepared directory moved into a
    // protected position.
    let f = Fx::new("prot-rename");
    f.gitdir("pkg/sub/.git", "[core]\n\thooksPath = .githooks\n");
    f.file("prepared/pre-commit", "");
    f.mkdir("plain");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    let sub = f.p("pkg/sub");
    // Never looked at before: the rename itself finds the repository.
    refused(&pr, rename(&sub, &f.p("moved")));
    refused(&pr, rename(&sub.join(".git"), &f.p("moved")));
    refused(&pr, exchange(&sub.join(".git/hooks"), &f.p("prepared")));
    refused(&pr, exchange(&f.p("prepared"), &sub.join(".git")));
    refused(&pr, rename(&f.p("prepared"), &sub.join(".git/hooks")));
    refused(&pr, rename(&f.p("prepared"), &sub.join(".githooks")));
    // Looked at: its ancestors below the writable root are refused too.
    refused(&pr, rename(&f.p("pkg"), &f.p("pkg2")));
    allowed(&pr, rename(&f.p("plain"), &f.p("plain2")));
    // A prepared directory that becomes a new `.git`: a repository created during the run
    // (the post-run check judges it; the created-log must carry it).
    allowed(&pr, rename(&f.p("prepared"), &f.p("plain2/.git")));
    assert!(Protector::git_relevant(&f.p("plain2/.git")));
}

#[test]
fn a_cache_never_hides_a_repository_created_or_moved_in_after_the_first_lookup() {
    let f = Fx::new("prot-cache");
    f.mkdir("p/q");
    f.gitdir("elsewhere/r/.git", "[core]\n\thooksPath = hooks-dir\n");
    f.gitdir("bare-src", "");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    // First lookups: `p`, `p/q` hold no repository (cached).
    allowed(&pr, create(&f.p("p/q/file")));
    allowed(&pr, create(&f.p("p/q/.vscode/tasks.json")));
    // The sandbox makes `p/q` a repository (`git init`).
    let dot_git = f.p("p/q/.git");
    allowed(&pr, mkdir(&dot_git));
    fs::create_dir(&dot_git).unwrap();
    refused(&pr, create(&f.p("p/q/.vscode/tasks.json")));
    refused(&pr, create(&f.p("p/q/.mcp.json")));
    // A launch repository moved (with the directory holding it, which the gate cannot know
    // holds one) into a path looked at before.
    allowed(&pr, create(&f.p("dst/r/file")));
    allowed(&pr, create(&f.p("dst/r/hooks-dir/pre-commit")));
    allowed(&pr, create(&f.p("dst/r/.vscode/tasks.json")));
    // (Checks only: `dst` does not exist, its cache entries say "no repository".)
    allowed(&pr, rename(&f.p("elsewhere"), &f.p("dst")));
    fs::rename(f.p("elsewhere"), f.p("dst")).unwrap();
    refused(&pr, create(&f.p("dst/r/hooks-dir/pre-commit")));
    refused(&pr, create(&f.p("dst/r/.vscode/tasks.json")));
    refused(&pr, write(&f.p("dst/r/.git/config")));
    // Now known: it stays where it is.
    refused(&pr, rename(&f.p("dst/r"), &f.p("r2")));
    // A bare repository moved over a path looked at before.
    allowed(&pr, create(&f.p("bare-dst/config")));
    let _ = pr.check(&rename(&f.p("bare-src"), &f.p("bare-dst")));
    fs::rename(f.p("bare-src"), f.p("bare-dst")).unwrap();
    refused(&pr, write(&f.p("bare-dst/config")));
    // A prepared directory renamed to `.git` in a directory looked at before.
    allowed(&pr, create(&f.p("w/file")));
    allowed(&pr, create(&f.p("w/.mcp.json")));
    f.mkdir("w");
    f.mkdir("prep");
    allowed(&pr, rename(&f.p("prep"), &f.p("w/.git")));
    fs::rename(f.p("prep"), f.p("w/.git")).unwrap();
    refused(&pr, create(&f.p("w/.mcp.json")));
    // A `.git` file rewritten to name a launch gitdir: that gitdir's configuration, taken
    // relative to this work tree, is protected here too.
    f.file("v/.git", "gitdir: nowhere\n");
    allowed(&pr, create(&f.p("v/hooks-dir/pre-commit")));
    allowed(&pr, write(&f.p("v/.git")));
    fs::write(f.p("v/.git"), "gitdir: ../dst/r/.git\n").unwrap();
    refused(&pr, create(&f.p("v/hooks-dir/pre-commit")));
    // A `HEAD`, `objects` or `refs` created in a directory looked at makes it probed again.
    f.mkdir("grow/objects");
    f.mkdir("grow/refs");
    allowed(&pr, create(&f.p("grow/config")));
    let head = f.p("grow/HEAD");
    allowed(&pr, create(&head));
    fs::write(&head, "ref: refs/heads/main\n").unwrap();
    // Born during the run: not a launch gitdir (post-run), but recognised as a repository
    // now, not from the cache.
    let info = pr.probe(&f.p("grow")).unwrap();
    assert!(info.bare.is_some());
}

#[test]
fn unnormalised_paths_are_refused() {
    let f = Fx::new("prot-normal");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    for p in ["a/../.git/hooks/x", "./.claude/x", "a//b", "a/."] {
        let path = PathBuf::from(format!("{}/{p}", f.ws.display()));
        refused(&pr, create(&path));
    }
    // Lexically outside the roots, really inside; and relative.
    let sneaky = PathBuf::from(format!("/nonexistent/..{}/.git/hooks/x", f.ws.display()));
    refused(&pr, create(&sneaky));
    refused(&pr, create(Path::new("ws/.git/hooks/x")));
}

#[test]
fn concurrent_checks_agree() {
    let f = Fx::new("prot-threads");
    f.gitdir(".git", "");
    for i in 0..8 {
        f.mkdir(&format!("d{i}/e/f"));
    }
    let pr = Arc::new(f.protector(GitMode::Commit, default_names(), launch_now()));
    let ws = f.ws.clone();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let pr = pr.clone();
            let ws = ws.clone();
            std::thread::spawn(move || {
                for n in 0..200 {
                    let ok = ws.join(format!("d{i}/e/f/file{n}"));
                    assert!(pr.check(&create(&ok)).is_ok());
                    assert!(pr.check(&create(&ws.join(".git/hooks/x"))).is_err());
                    assert!(pr.check(&create(&ws.join(".claude/x"))).is_err());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Per-call cost of the judge (run with `cargo test --release -p stockade-policy --lib --
/// --ignored --nocapture protect_bench`): medians of per-call means over batches.
#[test]
#[ignore]
fn protect_bench() {
    use std::time::Instant;
    let f = Fx::new("prot-bench");
    f.gitdir(".git", "[core]\n\thooksPath = .githooks\n");
    let deep = "a/b/c/d/e/f/g/h/i";
    f.mkdir(deep);
    let existing = f.file(&format!("{deep}/existing.rs"), "x");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    let median = |op: &dyn Fn(usize)| {
        const BATCH: usize = 200;
        let mut means: Vec<f64> = (0..200)
            .map(|round| {
                let t = Instant::now();
                for i in 0..BATCH {
                    op(round * BATCH + i);
                }
                t.elapsed().as_nanos() as f64 / BATCH as f64
            })
            .collect();
        means.sort_by(|a, b| a.total_cmp(b));
        means[means.len() / 2] / 1000.0
    };
    let names: Vec<PathBuf> = (0..40_000)
        .map(|i| f.p(&format!("{deep}/new{i}.o")))
        .collect();
    let create_us = median(&|i| {
        let _ = pr.check(&create(&names[i]));
    });
    let write_us = median(&|_| {
        let _ = pr.check(&write(&existing));
    });
    let rename_us = median(&|i| {
        let _ = pr.check(&rename(&names[i], &existing));
    });
    let rename_same_us = median(&|_| {
        let _ = pr.check(&rename(&names[0], &existing));
    });
    let mark_us = median(&|i| {
        pr.mark(&names[i], true);
    });
    let git_us = median(&|i| {
        let _ = pr.check(&create(&f.p(&format!(".git/objects/ab/{i:038x}"))));
    });
    let refused_us = median(&|_| {
        let _ = pr.check(&create(&f.p(".git/hooks/pre-commit")));
    });
    let cold_us = median(&|i| {
        if i % 200 == 0 {
            let pr = f.protector(GitMode::Commit, default_names(), SystemTime::now());
            let _ = pr.check(&create(&names[i]));
        }
    }) * 200.0;
    println!(
        "protect_bench depth 10 (median per call, µs): create {create_us:.2}, open-for-write \
         {write_us:.2}, rename {rename_us:.2} (same names {rename_same_us:.2}, one mark {mark_us:.2}), create in .git/objects {git_us:.2}, refused hook \
         {refused_us:.2}, first call of a run (probes + repository load) {cold_us:.1}"
    );
}

#[test]
fn a_configuration_that_cannot_be_read_refuses_writes_beneath_its_repository() {
    let f = Fx::new("prot-badcfg");
    f.mkdir("ok");
    f.gitdir("pkg/.git", "[include]\n\tpath = config\n");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    let d = refused(&pr, create(&f.p("pkg/src/x.rs")));
    assert!(d.to_string().contains("cannot be read"), "{d}");
    allowed(&pr, create(&f.p("ok/x.rs")));
}

#[test]
fn a_repository_the_host_clones_between_runs_is_protected_in_the_next_run() {
    let f = Fx::new("prot-between");
    f.mkdir("a/b/c/d");
    // Run 1 looks at the directories (no repository there).
    let run1 = f.protector(GitMode::Commit, default_names(), launch_now());
    allowed(&run1, create(&f.p("a/b/c/d/hooks-file")));
    drop(run1);
    // Between the runs the host clones a repository at depth 4.
    let g = f.gitdir("a/b/c/d/.git", "[core]\n\tbare = false\n");
    f.file("a/b/c/d/.git/hooks/pre-commit", "#!/bin/sh\n");
    fs::hard_link(g.join("config"), f.p("a/b/cfg-link")).unwrap();
    // Run 2: a fresh judge, nothing cached.
    let run2 = f.protector(GitMode::Commit, default_names(), launch_now());
    refused(&run2, create(&g.join("hooks/post-checkout")));
    refused(
        &run2,
        Op::OpenWrite {
            path: &g.join("config"),
            trunc: false,
        },
    );
    refused(&run2, rename(&g, &f.p("a/b/c/d/.git-old")));
    refused(&run2, rename(&f.p("a/b/c/d"), &f.p("moved")));
    // (The link is recognised once the repository has been looked at.)
    refused(&run2, write(&f.p("a/b/cfg-link")));
    allowed(&run2, create(&g.join("objects/ab/new")));
}

#[test]
fn a_named_directory_holding_the_writable_root_does_not_freeze_it() {
    let f = Fx::new("prot-holds-root");
    let ws = f.ws.display().to_string();
    f.gitdir(
        ".git",
        &format!("[core]\n\tworktree = {ws}\n\thooksPath = .\n"),
    );
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    allowed(&pr, create(&f.p("src/lib.rs")));
    // Each hook name in that directory is still protected.
    refused(&pr, create(&f.p("pre-commit")));
    refused(&pr, create(&f.p(".git/config.worktree")));
}

#[test]
fn built_from_a_real_plan() {
    let t = TempDir::new("prot-plan");
    let home = t.mkdir("home");
    let ws = t.mkdir("ws");
    fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    fs::write(ws.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    let policy = crate::test_util::shipped_policy();
    let req = crate::plan::PlanRequest {
        workspace: ws.clone(),
        cwd: ws.clone(),
        home: Some(home.clone()),
        env: vec![],
        state_dir: home.join(".local/state/stockade"),
        write_gate: true,
    };
    let plan = crate::plan::resolve(&policy, &req).unwrap();
    let input =
        ProtectorInput::from_plan(&plan, &policy.filesystem.protected_names, launch_now()).unwrap();
    assert_eq!(input.snapshotted, vec![ws.join(".git")]);
    let pr = Protector::with_user_entries(input, Vec::new());
    refused(&pr, create(&ws.join(".git/hooks/pre-commit")));
    refused(&pr, create(&ws.join(".vscode/tasks.json")));
    allowed(&pr, create(&ws.join(".git/index.lock")));
    let bad = ProtectorInput::from_plan(&plan, &["a/../b".to_string()], SystemTime::now());
    assert!(matches!(bad, Err(ProtectError::BadName { .. })));
}

#[test]
fn past_the_mark_bound_the_cache_is_off_and_decisions_stay_right() {
    let f = Fx::new("prot-overflow");
    f.mkdir("p/q");
    let pr = f.protector(GitMode::Commit, default_names(), launch_now());
    allowed(&pr, create(&f.p("p/q/.mcp.json")));
    for i in 0..=MAX_HOT_MARKS {
        pr.mark(&f.p(&format!("tmp/{i}")), true);
    }
    assert!(pr.read().cache_off);
    // `p/q` becomes a repository behind the judge's back: with the cache off it is seen.
    fs::create_dir(f.p("p/q/.git")).unwrap();
    refused(&pr, create(&f.p("p/q/.mcp.json")));
    allowed(&pr, create(&f.p("p/q/file")));
}
