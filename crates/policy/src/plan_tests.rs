use super::*;
use crate::test_util::{default_policy, TempDir};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::symlink;

fn req(ws: &Path, home: &Path) -> PlanRequest {
    PlanRequest {
        workspace: ws.to_path_buf(),
        cwd: ws.to_path_buf(),
        home: Some(home.to_path_buf()),
        env: vec![],
        state_dir: home.join(".local/state/stockade"),
        write_gate: false,
    }
}

fn protected_paths(p: &Plan) -> Vec<PathBuf> {
    p.protected.iter().map(|pp| pp.path.clone()).collect()
}

/// A temp dir with `home/` and `ws/` inside, canonical.
fn setup() -> (TempDir, PathBuf, PathBuf) {
    let t = TempDir::new("plan");
    let home = t.mkdir("home");
    let ws = t.mkdir("ws");
    (t, home, ws)
}

#[test]
fn minimal_workspace() {
    let (_t, home, ws) = setup();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert_eq!(plan.workspace, ws);
    assert_eq!(plan.cwd, ws);
    assert_eq!(plan.writable_roots, vec![ws.clone()]);
    assert!(plan.protected.is_empty());
    // Every default protected name is missing at the root.
    let names =
        crate::model::parse_protected_names(&default_policy().filesystem.protected_names).unwrap();
    let mut missing: Vec<PathBuf> = names.iter().map(|n| ws.join(&n.path)).collect();
    missing.sort();
    assert_eq!(plan.protected_missing, missing);
    assert_eq!(plan.network, NetworkMode::Off);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn workspace_must_exist_and_be_dir() {
    let (t, home, _ws) = setup();
    let err = resolve(&default_policy(), &req(&t.path().join("nope"), &home)).unwrap_err();
    assert!(matches!(err, PlanError::Workspace { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let f = t.file("afile", "x");
    let err = resolve(&default_policy(), &req(&f, &home)).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn nested_repos_submodules_and_protected_dirs_not_descended() {
    let (_t, home, ws) = setup();
    std::fs::create_dir_all(ws.join(".git/modules/sub")).unwrap();
    // A `.git` inside `.git` must not be reported separately (walk does not descend).
    std::fs::create_dir_all(ws.join(".git/modules/sub/.git")).unwrap();
    std::fs::create_dir_all(ws.join("vendor/lib/.git")).unwrap();
    std::fs::create_dir_all(ws.join("a/b/c/d/.claude")).unwrap();
    // Root-scoped names (`/.mcp.json`) apply at a repository's root, not deeper.
    std::fs::create_dir_all(ws.join("vendor/lib/.cursor")).unwrap();
    std::fs::create_dir_all(ws.join("a/b/.cursor")).unwrap();
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    // Submodule: relative gitdir.
    std::fs::write(ws.join("sub/.git"), "gitdir: ../.git/modules/sub\n").unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    let got = protected_paths(&plan);
    assert_eq!(
        got,
        vec![
            ws.join(".git"),
            ws.join("a/b/c/d/.claude"),
            ws.join("sub/.git"),
            ws.join("vendor/lib/.cursor"),
            ws.join("vendor/lib/.git"),
        ],
        "gitdir inside the protected .git is redundant and dropped"
    );
    let sub = plan
        .protected
        .iter()
        .find(|p| p.path == ws.join("sub/.git"))
        .unwrap();
    assert_eq!(sub.kind, PathKind::File);
    assert_eq!(plan.protected[0].kind, PathKind::Dir);
    assert!(!plan.protected_missing.contains(&ws.join(".git")));
}

#[test]
fn with_the_write_gate_only_each_root_itself_is_looked_at() {
    let (_t, home, ws) = setup();
    std::fs::create_dir_all(ws.join(".git")).unwrap();
    std::fs::create_dir_all(ws.join(".claude")).unwrap();
    std::fs::create_dir_all(ws.join("vendor/lib/.git")).unwrap();
    std::fs::create_dir_all(ws.join("a/b/c/d/.claude")).unwrap();
    let mut r = req(&ws, &home);
    r.write_gate = true;
    let plan = resolve(&default_policy(), &r).unwrap();
    assert!(plan.write_gate);
    assert_eq!(
        protected_paths(&plan),
        vec![ws.join(".claude"), ws.join(".git")],
        "only the root's own protected names"
    );
    assert_eq!(plan.git_repos.len(), 1);
    assert_eq!(plan.git_repos[0].worktree, ws);
    assert_eq!(
        plan.protected_names,
        default_policy().filesystem.protected_names
    );
    // The same tree without the gate: the walk finds the nested entries.
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert!(!plan.write_gate);
    assert!(protected_paths(&plan).contains(&ws.join("vendor/lib/.git")));
    assert!(protected_paths(&plan).contains(&ws.join("a/b/c/d/.claude")));
}

#[test]
fn gitdir_absolute_outside_workspace_and_worktree_commondir() {
    let (t, home, ws) = setup();
    // Main repository elsewhere, with a linked worktree checked out in the workspace.
    let repo = t.mkdir("main repo");
    std::fs::create_dir_all(repo.join(".git/worktrees/wt")).unwrap();
    std::fs::write(repo.join(".git/worktrees/wt/commondir"), "../..\n").unwrap();
    std::fs::write(
        ws.join(".git"),
        format!("gitdir: {}\n", repo.join(".git/worktrees/wt").display()),
    )
    .unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    let got = protected_paths(&plan);
    // The worktree gitdir is inside the common dir, so only the common dir remains.
    assert_eq!(got, vec![repo.join(".git"), ws.join(".git")]);
    let common = &plan.protected[0];
    assert_eq!(common.kind, PathKind::Dir);
    assert!(
        common.reason.starts_with("commondir of"),
        "{}",
        common.reason
    );
}

#[test]
fn gitdir_without_commondir_is_listed() {
    let (t, home, ws) = setup();
    let gd = t.mkdir("separate gitdir");
    std::fs::write(ws.join(".git"), format!("gitdir:   {}  \r\n", gd.display())).unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    let g = plan.protected.iter().find(|p| p.path == gd).unwrap();
    assert!(g.reason.contains("gitdir of"), "{}", g.reason);
}

#[test]
fn bad_gitfile_warns_but_protects_file() {
    let (_t, home, ws) = setup();
    std::fs::write(ws.join(".git"), "garbage\n").unwrap();
    std::fs::create_dir(ws.join("s")).unwrap();
    std::fs::write(ws.join("s/.git"), "gitdir: ../missing\n").unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert_eq!(
        protected_paths(&plan),
        vec![ws.join(".git"), ws.join("s/.git")]
    );
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
}

#[test]
fn git_symlink_protects_target() {
    let (t, home, ws) = setup();
    let real = t.mkdir("realgit");
    symlink(&real, ws.join(".git")).unwrap();
    symlink(t.path().join("dangling"), ws.join(".codex")).unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert_eq!(protected_paths(&plan), vec![real.clone()]);
    assert_eq!(plan.protected[0].kind, PathKind::Dir);
    assert_eq!(
        plan.protected_symlinks,
        vec![ws.join(".codex"), ws.join(".git")]
    );
    assert!(!plan.protected_missing.contains(&ws.join(".git")));
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
}

#[test]
fn walk_does_not_follow_symlinked_dirs() {
    let (t, home, ws) = setup();
    let outside = t.mkdir("outside");
    std::fs::create_dir(outside.join(".git")).unwrap();
    symlink(&outside, ws.join("link")).unwrap();
    // A loop must not hang either.
    symlink(&ws, ws.join("loop")).unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert!(plan.protected.is_empty(), "{:?}", plan.protected);
}

#[test]
fn protected_paths_and_dedupe() {
    let (_t, home, ws) = setup();
    std::fs::create_dir_all(ws.join(".git")).unwrap();
    std::fs::write(ws.join("Makefile"), "").unwrap();
    let mut pol = default_policy();
    pol.filesystem.protected_paths = vec![
        "Makefile".into(),
        format!("{}/Makefile", ws.display()),
        ".git/config".into(), // inside a protected dir: redundant
        "missing".into(),
    ];
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert_eq!(
        protected_paths(&plan),
        vec![ws.join(".git"), ws.join("Makefile")]
    );
}

#[test]
fn writable_roots_resolution() {
    let (t, home, ws) = setup();
    let a = t.mkdir("a");
    std::fs::create_dir_all(a.join("inner/.git")).unwrap();
    std::fs::create_dir_all(home.join("cache")).unwrap();
    std::fs::create_dir_all(ws.join("build")).unwrap();
    symlink(&a, t.path().join("a-link")).unwrap();
    let mut pol = default_policy();
    pol.filesystem.writable_roots = vec![
        a.display().to_string(),
        format!("{}/a-link", t.path().display()), // same as `a`
        format!("{}/inner", a.display()),         // nested in `a`
        "~/cache".into(),
        "build".into(), // workspace-relative, nested in the workspace
    ];
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    let mut want = vec![a.clone(), home.join("cache"), ws.clone()];
    want.sort();
    assert_eq!(plan.writable_roots, want);
    assert_eq!(protected_paths(&plan), vec![a.join("inner/.git")]);
    assert!(plan.protected_missing.contains(&home.join("cache/.git")));
}

#[test]
fn missing_or_file_writable_root() {
    let (t, home, ws) = setup();
    let mut pol = default_policy();
    pol.filesystem.writable_roots = vec!["~/nope".into()];
    let err = resolve(&pol, &req(&ws, &home)).unwrap_err();
    assert!(matches!(err, PlanError::WritableRoot { .. }));
    assert!(err.to_string().contains("does not exist"), "{err}");
    let f = t.file("f", "");
    pol.filesystem.writable_roots = vec![f.display().to_string()];
    let err = resolve(&pol, &req(&ws, &home)).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn read_only_has_no_writable_roots() {
    let (_t, home, ws) = setup();
    let mut pol = default_policy();
    pol.filesystem.read_only = true;
    pol.filesystem.writable_roots = vec!["~".into()]; // ignored entirely, even though dangerous
    std::fs::create_dir(ws.join(".git")).unwrap();
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert!(plan.writable_roots.is_empty());
    assert!(plan.protected.is_empty());
    assert!(plan.protected_missing.is_empty());
    assert_eq!(plan.cwd, ws);
}

#[test]
fn dangerous_roots_refused() {
    let (_t, home, ws) = setup();
    for (entry, needle) in [
        ("/", "filesystem root"),
        ("~", "home directory"),
        ("/etc", "system directory /etc"),
        ("/usr/lib", "/usr/lib"),
        ("/usr", "system directory /usr"),
        ("/etc/ssl", "inside the system directory /etc"),
    ] {
        let mut pol = default_policy();
        pol.filesystem.writable_roots = vec![entry.into()];
        let err = resolve(&pol, &req(&ws, &home)).unwrap_err();
        assert!(
            matches!(err, PlanError::DangerousRoot { .. }),
            "{entry}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(needle), "{entry}: {msg}");
        assert!(msg.contains("--allow-dangerous-roots"), "{msg}");
    }
    // An ancestor of home.
    let mut pol = default_policy();
    pol.filesystem.writable_roots = vec![home.parent().unwrap().display().to_string()];
    let err = resolve(&pol, &req(&ws, &home)).unwrap_err();
    assert!(err.to_string().contains("ancestor of your home"), "{err}");
    // The workspace itself is a root and is checked too.
    let err = resolve(&default_policy(), &req(&home, &home)).unwrap_err();
    assert!(err.to_string().contains("home directory"), "{err}");
}

#[test]
fn dangerous_reason_list() {
    let home = Path::new("/home/u");
    let d = |p: &str| dangerous_root_reason(Path::new(p), Some(home));
    assert!(d("/").is_some());
    assert!(d("/home").is_some());
    assert!(d("/home/u").is_some());
    assert!(d("/home/u/src").is_none());
    assert!(d("/usr/local").is_some());
    // Refused since the two tiers share one list (stricter verdict wins; see
    // `verdicts_that_changed_when_the_lists_merged` in crates/elevated/src/validate.rs).
    assert!(d("/usr/local/src/proj").is_some());
    assert!(d("/usr/share/doc").is_some());
    assert!(d("/var/lib").is_some());
    assert!(d("/var/www/site").is_none());
    assert!(d("/root").is_some());
    assert!(dangerous_root_reason(Path::new("/root/proj"), Some(Path::new("/root"))).is_none());
    assert!(d("/tmp/x").is_none());
    assert!(d("/srv/x").is_none());
    assert!(d("/dev/shm").is_some());
}

#[test]
fn dangerous_roots_allowed_with_force() {
    let (t, home, ws) = setup();
    std::fs::create_dir(home.join(".git")).unwrap();
    let mut pol = default_policy();
    pol.filesystem.allow_dangerous_roots = true;
    pol.filesystem.writable_roots = vec!["~".into()];
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    // The workspace (inside the temp dir, not inside home) and home.
    assert!(plan.writable_roots.contains(&home));
    assert!(protected_paths(&plan).contains(&home.join(".git")));
    // A system directory (small enough to walk).
    let etc = Path::new("/etc");
    if etc.is_dir() {
        pol.filesystem.writable_roots = vec!["/etc".into()];
        let plan = resolve(&pol, &req(&ws, &home)).unwrap();
        assert!(plan
            .writable_roots
            .contains(&fs::canonicalize(etc).unwrap()));
    }
    drop(t);
}

#[test]
fn root_inside_protected_dir_refused() {
    let (_t, home, ws) = setup();
    std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    let mut pol = default_policy();
    pol.filesystem.writable_roots = vec![".git/hooks".into()];
    let err = resolve(&pol, &req(&ws, &home)).unwrap_err();
    assert!(matches!(err, PlanError::ProtectedRoot { .. }), "{err}");
    pol.filesystem.allow_dangerous_roots = true;
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert_eq!(plan.writable_roots, vec![ws.clone()], "nested root dropped");
}

#[test]
fn odd_path_names() {
    let t = TempDir::new("odd");
    let home = t.mkdir("home");
    let ws = t.mkdir("my ws\nwith newline ünïcødé ✓");
    std::fs::create_dir_all(ws.join("sp ace/.git")).unwrap();
    let other = t.mkdir("other root ☃");
    let mut pol = default_policy();
    pol.filesystem.writable_roots = vec![other.display().to_string()];
    pol.filesystem.deny_read = vec![format!("{}/secret file", ws.display())];
    std::fs::write(ws.join("secret file"), "s").unwrap();
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert_eq!(plan.workspace, ws);
    assert!(plan.writable_roots.contains(&other));
    assert_eq!(protected_paths(&plan), vec![ws.join("sp ace/.git")]);
    assert_eq!(plan.deny_read[0].path, ws.join("secret file"));
    assert_eq!(plan.deny_read[0].kind, PathKind::File);
}

#[cfg(unix)]
#[test]
fn non_utf8_paths() {
    let t = TempDir::new("nonutf8");
    let home = t.mkdir("home");
    let ws = t.path().join(OsStr::from_bytes(b"ws-\xff\xfe"));
    std::fs::create_dir_all(ws.join(".git")).unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert_eq!(protected_paths(&plan), vec![ws.join(".git")]);
}

#[test]
fn symlinked_workspace_is_canonicalized() {
    let (t, home, ws) = setup();
    let link = t.path().join("ws-link");
    symlink(&ws, &link).unwrap();
    std::fs::create_dir(ws.join(".git")).unwrap();
    let mut r = req(&link, &home);
    r.cwd = link.join(".");
    let plan = resolve(&default_policy(), &r).unwrap();
    assert_eq!(plan.workspace, ws);
    assert_eq!(plan.writable_roots, vec![ws.clone()]);
    assert_eq!(plan.cwd, ws);
    assert_eq!(protected_paths(&plan), vec![ws.join(".git")]);
}

#[test]
fn cwd_rules() {
    let (t, home, ws) = setup();
    let sub = ws.join("sub dir");
    std::fs::create_dir(&sub).unwrap();
    let extra = t.mkdir("extra");
    let mut pol = default_policy();
    pol.filesystem.writable_roots = vec![extra.display().to_string()];
    let mut r = req(&ws, &home);
    r.cwd = sub.clone();
    assert_eq!(resolve(&pol, &r).unwrap().cwd, sub);
    r.cwd = PathBuf::from("sub dir");
    assert_eq!(
        resolve(&pol, &r).unwrap().cwd,
        sub,
        "relative cwd is workspace-relative"
    );
    r.cwd = extra.clone();
    assert_eq!(resolve(&pol, &r).unwrap().cwd, extra);
    r.cwd = home.clone();
    let plan = resolve(&pol, &r).unwrap();
    assert_eq!(plan.cwd, ws);
    assert_eq!(plan.warnings.len(), 1);
    r.cwd = t.path().join("gone");
    let plan = resolve(&pol, &r).unwrap();
    assert_eq!(plan.cwd, ws);
}

#[test]
fn deny_read_existing_only_and_symlinks_resolved() {
    let (t, home, ws) = setup();
    std::fs::create_dir(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".netrc"), "machine x").unwrap();
    let real = t.mkdir("real-aws");
    symlink(&real, home.join(".aws")).unwrap();
    symlink(t.path().join("nowhere"), home.join(".npmrc")).unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    let got: Vec<(PathBuf, PathKind)> = plan
        .deny_read
        .iter()
        .map(|p| (p.path.clone(), p.kind))
        .collect();
    let mut want = vec![
        (home.join(".ssh"), PathKind::Dir),
        (home.join(".netrc"), PathKind::File),
        (real, PathKind::Dir),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(plan
        .deny_read
        .iter()
        .any(|p| p.reason == "deny_read ~/.ssh"));
}

#[test]
fn no_home_is_an_error_for_tilde_entries() {
    let (_t, home, ws) = setup();
    let mut r = req(&ws, &home);
    r.home = None;
    let err = resolve(&default_policy(), &r).unwrap_err();
    assert!(
        matches!(
            err,
            PlanError::BadEntry {
                key: "filesystem.deny_read" | "filesystem.protected_paths",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("set HOME"), "{err}");
}

#[test]
fn bad_protected_name() {
    let (_t, home, ws) = setup();
    let mut pol = default_policy();
    pol.filesystem.protected_names.push("a/../b".into());
    let err = resolve(&pol, &req(&ws, &home)).unwrap_err();
    assert!(err.to_string().contains("protected_paths"), "{err}");
}

#[test]
fn rooted_protected_names_apply_at_roots_and_repository_roots_only() {
    let (_t, home, ws) = setup();
    for d in [".vscode", "lib/.vscode", "nested/.vscode", "nested/.git"] {
        std::fs::create_dir_all(ws.join(d)).unwrap();
    }
    for f in [
        ".vscode/tasks.json",
        "lib/.vscode/tasks.json",
        "nested/.vscode/tasks.json",
    ] {
        std::fs::write(ws.join(f), "{}").unwrap();
    }
    let mut pol = default_policy();
    pol.filesystem
        .protected_names
        .push(".vscode/tasks.json".into());
    for gate in [false, true] {
        let mut r = req(&ws, &home);
        r.write_gate = gate;
        let plan = resolve(&pol, &r).unwrap();
        let got = protected_paths(&plan);
        assert!(
            got.contains(&ws.join(".vscode/tasks.json")),
            "gate {gate}: {got:?}"
        );
        assert!(
            !got.contains(&ws.join("lib/.vscode/tasks.json")),
            "gate {gate}: {got:?}"
        );
        // The walk finds the nested repository and protects its root's entry; with the gate
        // that repository is the judge's (found per call), not the plan's.
        assert_eq!(
            got.contains(&ws.join("nested/.vscode/tasks.json")),
            !gate,
            "gate {gate}: {got:?}"
        );
    }
}

#[test]
fn unix_sockets() {
    let (t, home, ws) = setup();
    let s = t.file("sock", "");
    let mut pol = default_policy();
    pol.filesystem.allow_unix_sockets = vec![s.display().to_string(), "~/missing.sock".into()];
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert_eq!(plan.allow_unix_sockets, vec![s]);
    assert_eq!(plan.warnings.len(), 1);
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

#[test]
fn env_filtering() {
    let (_t, home, ws) = setup();
    let mut r = req(&ws, &home);
    r.env = vec![
        (os("PATH"), os("/bin")),
        (os("API_KEY"), os("x")),
        (os("my_key"), os("x")),
        (os("KEYBOARD"), os("us")),
        (os("GITHUB_TOKEN"), os("t")),
        (os("SSH_AUTH_SOCK"), os("/s")),
        (os("LC_ALL"), os("C")),
        (os("FOO"), OsString::from_vec(b"\xff\xfebin".to_vec())),
    ];
    let mut pol = default_policy();
    pol.env.set.insert("FOO2".into(), "bar".into());
    pol.env.set.insert("PATH".into(), "/usr/bin".into());
    let plan = resolve(&pol, &r).unwrap();
    assert_eq!(
        plan.env,
        vec![
            (os("PATH"), os("/usr/bin")),
            (os("LC_ALL"), os("C")),
            (os("FOO"), OsString::from_vec(b"\xff\xfebin".to_vec())),
            (os("FOO2"), os("bar")),
        ]
    );
    assert_eq!(
        plan.env_removed,
        vec![
            "API_KEY",
            "GITHUB_TOKEN",
            "KEYBOARD",
            "SSH_AUTH_SOCK",
            "my_key"
        ]
    );

    pol.env.inherit = EnvInherit::Core;
    pol.env.set.clear();
    pol.env.exclude.clear();
    let plan = resolve(&pol, &r).unwrap();
    let names: Vec<_> = plan.env.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(names, vec![os("PATH"), os("LC_ALL")]);

    pol.env.inherit = EnvInherit::None;
    pol.env.set.insert("ONLY".into(), "1".into());
    let plan = resolve(&pol, &r).unwrap();
    assert_eq!(plan.env, vec![(os("ONLY"), os("1"))]);
    assert!(plan.env_removed.is_empty());
}

#[test]
fn temp_persist_dir() {
    let (_t, home, ws) = setup();
    let r = req(&ws, &home);
    // The default: /tmp and /var/tmp are overlays, so there is no separate persistent dir.
    let plan = resolve(&default_policy(), &r).unwrap();
    assert_eq!(plan.temp.persist_dir, None);
    assert!(plan.overlay.temp && plan.temp.private);
    let names: Vec<_> = plan
        .overlay
        .layers
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert!(names.contains(&"tmp") && names.contains(&"var-tmp") && names.contains(&"home"));
    let mut pol = default_policy();
    pol.temp.mode = crate::model::TempMode::Empty;
    let plan = resolve(&pol, &r).unwrap();
    let dir = plan.temp.persist_dir.clone().unwrap();
    assert_eq!(dir.parent().unwrap(), r.state_dir.join("tmp"));
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert_eq!(name.len(), 16);
    assert!(name.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!dir.exists(), "the plan never creates it");
    pol.temp.persist = false;
    assert_eq!(resolve(&pol, &r).unwrap().temp.persist_dir, None);
    pol.temp.persist = true;
    pol.temp.private = false;
    let p = resolve(&pol, &r).unwrap();
    assert_eq!(p.temp.persist_dir, None);
    assert!(!p.temp.private);
}

/// Generates a ~100k-entry tree and times the walk. Run with
/// `cargo test -p stockade-policy --release -- --ignored --nocapture walk_speed`.
#[test]
#[ignore]
fn walk_speed() {
    let (_t, home, ws) = setup();
    let mut n = 0;
    for a in 0..50 {
        for b in 0..20 {
            let d = ws.join(format!("d{a}/e{b}"));
            std::fs::create_dir_all(&d).unwrap();
            for f in 0..100 {
                std::fs::write(d.join(format!("f{f}")), "").unwrap();
                n += 1;
            }
        }
        std::fs::create_dir_all(ws.join(format!("d{a}/.git"))).unwrap();
    }
    let start = std::time::Instant::now();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    let took = start.elapsed();
    eprintln!("walked {n} files in {took:?}");
    assert_eq!(plan.protected.len(), 50);
}

#[test]
fn bare_repo_with_worktrees_layout() {
    // <ws>/.bare is the (bare) repository, <ws>/.git says `gitdir: ./.bare`, and <ws>/main is a
    // linked worktree whose gitdir is <ws>/.bare/worktrees/main.
    let (_t, home, ws) = setup();
    std::fs::create_dir_all(ws.join(".bare/worktrees/main")).unwrap();
    std::fs::write(ws.join(".bare/worktrees/main/commondir"), "../..").unwrap();
    std::fs::write(ws.join(".git"), "gitdir: ./.bare\n").unwrap();
    std::fs::create_dir(ws.join("main")).unwrap();
    std::fs::write(ws.join("main/.git"), "gitdir: ../.bare/worktrees/main\n").unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert_eq!(
        protected_paths(&plan),
        vec![ws.join(".bare"), ws.join(".git"), ws.join("main/.git")]
    );
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn pointer_targets_covering_a_writable_root_are_ignored() {
    let (t, home, ws) = setup();
    std::fs::write(ws.join(".git"), "gitdir: /\n").unwrap();
    std::fs::create_dir(ws.join("a")).unwrap();
    symlink(&ws, ws.join("a/.codex")).unwrap();
    std::fs::create_dir(ws.join("b")).unwrap();
    std::fs::write(
        ws.join("b/.git"),
        format!("gitdir: {}\n", t.path().display()),
    )
    .unwrap();
    std::fs::create_dir_all(ws.join("c/.git")).unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert_eq!(
        protected_paths(&plan),
        vec![ws.join(".git"), ws.join("b/.git"), ws.join("c/.git")]
    );
    assert_eq!(plan.warnings.len(), 3, "{:?}", plan.warnings);
}

#[test]
fn protected_path_containing_a_root_does_not_hide_nested_entries() {
    let (t, home, ws) = setup();
    std::fs::create_dir(ws.join(".git")).unwrap();
    let mut pol = default_policy();
    pol.filesystem.protected_paths = vec![t.path().display().to_string()];
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert_eq!(
        protected_paths(&plan),
        vec![t.path().to_path_buf(), ws.join(".git")]
    );
}

#[test]
fn bad_env_set_names() {
    let (_t, home, ws) = setup();
    for (k, v) in [("", "x"), ("A=B", "x"), ("A", "x\0y")] {
        let mut pol = default_policy();
        pol.env.set.insert(k.into(), v.into());
        let err = resolve(&pol, &req(&ws, &home)).unwrap_err();
        assert!(
            matches!(err, PlanError::BadEntry { key: "env.set", .. }),
            "{err}"
        );
    }
}

#[test]
fn plan_serializes_with_non_utf8_paths() {
    let t = TempDir::new("json");
    let home = t.mkdir("home");
    let ws = t.path().join(OsStr::from_bytes(b"ws-\xff"));
    std::fs::create_dir_all(ws.join(".git")).unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    let j = serde_json::to_value(&plan).unwrap();
    assert!(j["workspace"].as_str().unwrap().ends_with("ws-\u{fffd}"));
    assert_eq!(j["protected"][0]["kind"], "dir");
    assert!(j["overlay"]["state"].is_string());
    assert!(
        j.get("env").is_none(),
        "the environment is never serialized"
    );
}

#[test]
fn deny_read_nested_entries_collapse() {
    let (_t, home, ws) = setup();
    std::fs::create_dir_all(home.join(".config/gcloud")).unwrap();
    std::fs::create_dir_all(home.join(".config/gh")).unwrap();
    std::fs::write(home.join(".config/gh/hosts.yml"), "").unwrap();
    let mut pol = default_policy();
    pol.filesystem.deny_read.push("~/.config".into());
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    let got: Vec<PathBuf> = plan.deny_read.iter().map(|p| p.path.clone()).collect();
    assert_eq!(got, vec![home.join(".config")]);
}

#[test]
fn load_then_resolve() {
    use crate::config::{load, LoadRequest};
    let (t, home, ws) = setup();
    std::fs::create_dir_all(ws.join(".stockade")).unwrap();
    std::fs::write(
        ws.join(".stockade/config.toml"),
        "[filesystem]\nprotected_paths = [\"Cargo.lock\"]\n[env]\nset = { CI = \"1\" }\n",
    )
    .unwrap();
    std::fs::write(ws.join("Cargo.lock"), "").unwrap();
    let loaded = load(&LoadRequest {
        workspace: ws.clone(),
        home: Some(home.clone()),
        config_dir: Some(t.mkdir("xdg")),
        ..LoadRequest::default()
    })
    .unwrap();
    let plan = resolve(&loaded.policy, &req(&ws, &home)).unwrap();
    assert_eq!(
        protected_paths(&plan),
        vec![ws.join(".stockade"), ws.join("Cargo.lock")]
    );
    assert!(plan.env.contains(&(os("CI"), os("1"))));
}

#[test]
fn allowed_domains_with_ports_are_validated() {
    let (_t, home, ws) = setup();
    let mut pol = default_policy();
    pol.network.allowed_domains = vec![
        "Example.com:8443".into(),
        "*.npmjs.org".into(),
        "10.0.0.0/8".into(),
    ];
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert_eq!(
        plan.allowed_domains,
        vec!["example.com:8443", "*.npmjs.org", "10.0.0.0/8"]
    );
    for bad in ["example.com:0", "example.com:http", "fd00::1", "a..b"] {
        pol.network.allowed_domains = vec![bad.into()];
        let err = resolve(&pol, &req(&ws, &home)).unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::BadEntry {
                    key: "network.allowed_domains",
                    ..
                }
            ),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(bad), "{bad}: {err}");
    }
}

#[test]
fn env_values_with_url_credentials_are_removed() {
    for (v, secret) in [
        ("postgres://app:hunter2@db:5432/app", true),
        ("http://user:pw@proxy.corp:3128", true),
        ("https://ghp_abc@github.com/o/r.git", true),
        ("a https://x https://u:p@h/path", true),
        ("git+ssh://git:t@h", true),
        ("https://example.org/a@b", false),
        ("https://example.org/?q=a@b", false),
        ("user@example.org", false),
        ("://u:p@h", false),
        ("http://proxy:3128", false),
        ("/usr/bin:/bin", false),
    ] {
        assert_eq!(has_url_credentials(OsStr::new(v)), secret, "{v}");
    }
    let (_t, home, ws) = setup();
    let mut r = req(&ws, &home);
    r.env = vec![
        (os("HTTPS_PROXY"), os("http://u:p@proxy:8080")),
        (os("PLAIN_PROXY"), os("http://proxy:8080")),
        (os("EXPLICIT"), os("redis://:pw@r:6379")),
    ];
    let mut pol = default_policy();
    let plan = resolve(&pol, &r).unwrap();
    assert_eq!(plan.env, vec![(os("PLAIN_PROXY"), os("http://proxy:8080"))]);
    assert_eq!(plan.env_removed, vec!["EXPLICIT", "HTTPS_PROXY"]);
    // Set explicitly, it passes.
    pol.env
        .set
        .insert("EXPLICIT".into(), "redis://:pw@r:6379".into());
    let plan = resolve(&pol, &r).unwrap();
    assert!(plan
        .env
        .contains(&(os("EXPLICIT"), os("redis://:pw@r:6379"))));
}

#[test]
fn default_env_patterns_cover_the_secret_families() {
    let pol = default_policy();
    let hit = |n: &str| pol.env.exclude.iter().any(|g| glob_match(g, OsStr::new(n)));
    for n in [
        "GITHUB_PAT",
        "MYSQL_PWD",
        "DB_PASS",
        "DB_PASSWORD",
        "SMTP_PASSWD",
        "GPG_PASSPHRASE",
        "REDIS_PASS",
        "NPM_CONFIG__AUTH",
        "npm_config__authToken",
        "API_JWT",
        "BEARER",
        "SESSION_COOKIE",
        "SENTRY_DSN",
        "SLACK_WEBHOOK_URL",
        "AZURE_STORAGE_CONNECTION_STRING",
        "DOCKER_AUTH_CONFIG",
        "DATABASE_URL",
        "TEST_DATABASE_URL",
        "BASIC_AUTH",
        "GCP_CREDS",
    ] {
        assert!(hit(n), "{n} passes the default env filter");
    }
    for n in [
        "PATH",
        "HOME",
        "PWD",
        "OLDPWD",
        "XAUTHORITY",
        "GIT_AUTHOR_NAME",
        "LANG",
        "TERM",
        "XDG_SESSION_TYPE",
        "DBUS_SESSION_BUS_ADDRESS",
        "CARGO_HOME",
        "PASSIVE",
    ] {
        assert!(!hit(n), "{n} is removed by the default env filter");
    }
}

#[test]
fn masked_gitconfig_passes_the_identity_only() {
    let (t, home, ws) = setup();
    t.file(
        "home/.gitconfig",
        "[user]\n\tname = Ada\n\temail = ada@example.org\n\
         [url \"https://u:tok@h/\"]\n\tinsteadOf = https://h/\n",
    );
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert!(plan
        .deny_read
        .iter()
        .any(|d| d.path == home.join(".gitconfig")));
    let (_, path) = plan
        .env
        .iter()
        .find(|(k, _)| k == "GIT_CONFIG_GLOBAL")
        .expect("GIT_CONFIG_GLOBAL set");
    let path = PathBuf::from(path);
    assert!(path.starts_with(home.join(".local/state/stockade/git")));
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("ada@example.org") && text.contains("Ada"),
        "{text}"
    );
    assert!(
        !text.contains("tok") && !text.contains("insteadOf"),
        "{text}"
    );
    // Not masked (removed from deny_read): nothing is generated.
    let mut pol = default_policy();
    pol.filesystem
        .deny_read
        .retain(|d| d != "~/.gitconfig" && d != "~/.config/git/config");
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert!(!plan.env.iter().any(|(k, _)| k == "GIT_CONFIG_GLOBAL"));
}

#[test]
fn walk_exempt_entries_are_not_searched() {
    let (t, home, ws) = setup();
    t.mkdir("ws/pgdata/base/.git");
    t.mkdir("ws/src/.git");
    let mut pol = default_policy();
    pol.filesystem.walk_exempt = vec!["pgdata".into(), "~/missing".into()];
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    let p = protected_paths(&plan);
    assert!(p.contains(&ws.join("src/.git")), "{p:?}");
    assert!(!p.contains(&ws.join("pgdata/base/.git")), "{p:?}");
}

#[test]
fn overlay_roots_must_be_owned_by_the_caller() {
    let (t, home, ws) = setup();
    let other = t.mkdir("other");
    // SAFETY: geteuid has no preconditions.
    let target = if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
        other.display().to_string()
    } else {
        "/usr".to_string()
    };
    let mut pol = default_policy();
    pol.filesystem.overlay_roots = vec![target];
    let err = resolve(&pol, &req(&ws, &home)).unwrap_err();
    assert!(
        matches!(&err, PlanError::BadEntry { key: "filesystem.overlay_roots", reason, .. } if reason.contains("owned by uid")),
        "{err}"
    );
    // owned by the caller: overlaid, and the state dir is per workspace
    let mine = t.mkdir("mine");
    pol.filesystem.overlay_roots = vec![mine.display().to_string()];
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert!(plan
        .overlay
        .layers
        .iter()
        .any(|l| l.lower == std::fs::canonicalize(&mine).unwrap()));
    // deny: no home or roots overlaid
    pol.filesystem.outside_writes = crate::model::OutsideWrites::Deny;
    let plan = resolve(&pol, &req(&ws, &home)).unwrap();
    assert!(plan
        .overlay
        .layers
        .iter()
        .all(|l| l.name == "tmp" || l.name == "var-tmp"));
}

#[test]
fn commit_mode_protects_code_running_entries_not_the_whole_gitdir() {
    let (_t, home, ws) = setup();
    let git = ws.join(".git");
    for d in ["hooks", "objects/info", "refs/heads", "info"] {
        std::fs::create_dir_all(git.join(d)).unwrap();
    }
    std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(git.join("info/exclude"), "").unwrap();
    std::fs::create_dir_all(ws.join(".husky/_")).unwrap();
    std::fs::write(git.join("config"), "[core]\n\thooksPath = .husky/_\n").unwrap();
    let plan = resolve(&crate::test_util::shipped_policy(), &req(&ws, &home)).unwrap();
    assert_eq!(plan.git_mode, GitMode::Commit);
    let p = protected_paths(&plan);
    for want in [git.join("config"), git.join("hooks"), ws.join(".husky/_")] {
        assert!(
            p.iter().any(|x| want.starts_with(x)),
            "{want:?} not protected: {p:?}"
        );
    }
    assert!(
        !p.contains(&git),
        "the whole .git is protected in commit mode: {p:?}"
    );
    assert!(!p.contains(&git.join("refs")) && !p.contains(&git.join("objects")));
    let repo = &plan.git_repos[0];
    assert_eq!(repo.gitdir, git);
    let missing: Vec<&Path> = repo.missing.iter().map(|m| m.path.as_path()).collect();
    for want in [
        git.join("config.worktree"),
        git.join("info/attributes"),
        git.join("objects/info/alternates"),
        ws.join(".husky/_/pre-commit"),
    ] {
        assert!(
            missing.contains(&want.as_path()),
            "{want:?} not watched: {missing:?}"
        );
    }
}

#[test]
fn read_only_mode_protects_the_whole_gitdir_and_still_lists_the_repo() {
    let (_t, home, ws) = setup();
    std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    let plan = resolve(&default_policy(), &req(&ws, &home)).unwrap();
    assert!(protected_paths(&plan).contains(&ws.join(".git")));
    assert_eq!(plan.git_repos.len(), 1);
    assert!(plan.git_repos[0].missing.is_empty());
}
