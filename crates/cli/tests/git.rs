//! Issue 12: git usable inside the sandbox (`git.mode = "commit"`, the default), and nothing the
//! command writes in a repository makes git run code later or loses history. Every workflow runs
//! inside and is checked from the host with git; every attack runs twice — sandboxed, and
//! unsandboxed as a positive control — and is judged by triggering git on the host, where a
//! successful attack creates a marker file outside the workspace.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn git(w: &World, dir: &Path, args: &[&str]) -> String {
    git_in(w, dir, args, false).1
}

/// A world whose workspace is a repository with two commits on `main`.
fn repo(tag: &str) -> World {
    let w = World::new(tag);
    git(&w, &w.ws, &["init", "-q", "-b", "main"]);
    write(&w.ws("a"), "1\n");
    git(&w, &w.ws, &["add", "a"]);
    git(&w, &w.ws, &["commit", "-qm", "one"]);
    write(&w.ws("a"), "2\n");
    git(&w, &w.ws, &["commit", "-qam", "two"]);
    w
}

fn sandboxed(w: &World, script: &str) -> Out {
    git_sandboxed(w, &[], script)
}

fn have_git() -> bool {
    have("git")
}

/// The JSON result of a `--json` run (the last JSON line on stderr).
fn json(o: &Out) -> serde_json::Value {
    let line = o
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON result: {o:#?}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn every_git_workflow_works_inside_and_lands_on_the_host() {
    if !have_git() {
        return skip("git not installed");
    }
    let w = repo("git-workflows");
    // A local remote outside the workspace (read-only inside): fetch/pull from it.
    let remote = w.out("remote.git");
    git(
        &w,
        &w.outside,
        &[
            "clone",
            "-q",
            "--bare",
            w.ws.to_str().unwrap(),
            "remote.git",
        ],
    );
    let scratch = w.out("scratch");
    git(
        &w,
        &w.outside,
        &["clone", "-q", remote.to_str().unwrap(), "scratch"],
    );
    write(&scratch.join("r"), "remote\n");
    git(&w, &scratch, &["add", "r"]);
    git(&w, &scratch, &["commit", "-qm", "from-remote"]);
    git(&w, &scratch, &["push", "-q", "origin", "main:upstream"]);
    git(
        &w,
        &w.ws,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    let cargo = have("cargo");
    let script = format!(
        "set -e\necho RAN\n\
         echo 3 > a && git add a && git commit -qm three\n\
         git commit -q --amend -m three-amended\n\
         git branch feature && git switch -q feature && echo f > f && git add f && git commit -qm feat\n\
         git checkout -q main && echo s > a && git stash -q && git stash list | grep -q stash\n\
         git stash pop -q && git commit -qam four && echo s2 > a && git stash -q\n\
         git merge -q --no-edit feature\n\
         git checkout -q -b topic HEAD~1 && echo t > t && git add t && git commit -qm t1 && echo t2 >> t && git commit -qam t2\n\
         git rebase -q main\n\
         GIT_SEQUENCE_EDITOR=\"sed -i 2s/^pick/fixup/\" git rebase -q -i HEAD~2\n\
         git checkout -q main && git cherry-pick topic >/dev/null\n\
         git tag v1 && git tag -a -m ann v2\n\
         git worktree add -q wt-dir -b wtb\n\
         git -C wt-dir commit -q --allow-empty -m in-worktree\n\
         git fetch -q origin && git checkout -q -b up origin/upstream && git pull -q origin upstream\n\
         git checkout -q main && git gc -q\n\
         mkdir -p nested/lib && git -C nested/lib init -q && echo n > nested/lib/n && git -C nested/lib add n && git -C nested/lib commit -qm nested-commit\n\
         {}\
         echo WORKFLOWS-DONE\n",
        if cargo {
            "cargo new -q --vcs git newcrate && git -C newcrate add -A && git -C newcrate commit -qm crate-commit\n"
        } else {
            ""
        }
    );
    let o = sandboxed(&w, &script);
    o.assert_ran("RAN");
    assert!(o.has("WORKFLOWS-DONE"), "a workflow failed inside: {o:#?}");
    let log = git(&w, &w.ws, &["log", "--format=%s", "main"]);
    for s in ["three-amended", "four", "feat", "t1", "one"] {
        assert!(log.lines().any(|l| l == s), "{s} missing from main: {log}");
    }
    assert!(
        !log.contains("\nthree\n"),
        "amend did not replace the commit: {log}"
    );
    let topic = git(&w, &w.ws, &["log", "--format=%s", "-2", "topic"]);
    assert_eq!(
        topic.lines().next(),
        Some("t1"),
        "fixup did not squash: {topic}"
    );
    let branches = git(&w, &w.ws, &["branch", "--format=%(refname:short)"]);
    for b in ["main", "feature", "topic", "wtb", "up"] {
        assert!(
            branches.lines().any(|l| l == b),
            "branch {b} missing: {branches}"
        );
    }
    assert!(git(&w, &w.ws, &["stash", "list"]).contains("stash@{0}"));
    assert!(git(&w, &w.ws, &["tag"]).contains("v2"));
    assert!(git(&w, &w.ws, &["worktree", "list"]).contains("wt-dir"));
    assert!(git(&w, &w.ws, &["log", "--format=%s", "-1", "wtb"]).contains("in-worktree"));
    assert!(git(&w, &w.ws, &["log", "--format=%s", "up"]).contains("from-remote"));
    assert!(git(&w, &w.ws("nested/lib"), &["log", "--format=%s"]).contains("nested-commit"));
    if cargo {
        assert!(git(&w, &w.ws("newcrate"), &["log", "--format=%s"]).contains("crate-commit"));
    }
    git(&w, &w.ws, &["fsck", "--no-progress"]);
    // Nothing the workflows do is beyond git's defaults: nothing was neutralised.
    let v = json(&o);
    assert_eq!(v["git"]["neutralised"], serde_json::json!([]), "{v}");
    // Protected metadata stayed read-only while objects/refs were written.
    let o = sandboxed(
        &w,
        "echo RAN; echo x >> .git/config && echo WROTE-CONFIG; true",
    );
    o.assert_ran("RAN");
    o.assert_not("WROTE-CONFIG");
}

/// One attack: `setup` prepares a world, `script` (with `{M}` replaced by the marker path, which
/// is outside the workspace) attacks, `trigger` runs git on the host. Returns whether the marker
/// appeared (sandboxed, unsandboxed control) and the sandboxed run's output.
fn attack(
    tag: &str,
    setup: &dyn Fn(&World),
    script: &str,
    trigger: &dyn Fn(&World),
) -> (bool, bool, Out) {
    let mut seen = [false, false];
    let mut out = None;
    for (i, sandbox) in [true, false].into_iter().enumerate() {
        let w = repo(&format!("{tag}-{}", if sandbox { "s" } else { "c" }));
        setup(&w);
        let marker = w.root.join("marker");
        let s = script.replace("{M}", marker.to_str().unwrap());
        let s = format!("echo RAN\n{s}\necho ATTACK-DONE\n");
        let o = if sandbox {
            sandboxed(&w, &s)
        } else {
            unsandboxed(&w, &s)
        };
        o.assert_ran("RAN");
        assert!(
            o.has("ATTACK-DONE"),
            "the attack script did not finish: {o:#?}"
        );
        assert!(
            !marker.exists(),
            "the marker exists before the host triggered git: {o:#?}"
        );
        trigger(&w);
        seen[i] = marker.exists();
        if sandbox {
            out = Some(o);
        }
    }
    (seen[0], seen[1], out.unwrap())
}

#[track_caller]
fn assert_contained(r: (bool, bool, Out)) -> Out {
    let (sandboxed, control, o) = r;
    assert!(
        control,
        "positive control: the attack must work unsandboxed"
    );
    assert!(!sandboxed, "the attack worked through the sandbox: {o:#?}");
    o
}

/// `what` was refused when created (the write gate: a denial in the JSON and a `refused:` line
/// on stderr) or, where the run may create it, neutralised after the run.
#[track_caller]
fn assert_refused_or_neutralised(o: &Out, what: &str) {
    let v = json(o);
    let refused = v["denials"].as_array().into_iter().flatten().any(|d| {
        d["kind"] == "write-gate" && d["target"].as_str().is_some_and(|t| t.contains(what))
    });
    if refused {
        assert!(
            o.stderr
                .lines()
                .any(|l| l.starts_with("stockade: refused: ") && l.contains(what)),
            "no refusal line on stderr for {what}: {}",
            o.stderr
        );
        return;
    }
    assert_neutralised(o, what);
}

#[track_caller]
fn assert_neutralised(o: &Out, what: &str) {
    let v = json(o);
    let n = v["git"]["neutralised"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        n.iter()
            .any(|f| f["path"].as_str().is_some_and(|p| p.contains(what))),
        "{what} not reported as neutralised: {v}"
    );
    assert!(
        o.stderr
            .lines()
            .any(|l| l.starts_with("stockade: neutralised: ") && l.contains(what)),
        "no stderr line for {what}: {}",
        o.stderr
    );
}

fn status(w: &World) {
    git_in(w, &w.ws, &["status", "--short"], true);
}

fn x(p: &Path) {
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn hooks_through_core_hookspath_in_the_workspace() {
    if !have_git() {
        return skip("git not installed");
    }
    let setup = |w: &World| {
        fs::create_dir_all(w.ws(".husky/_")).unwrap();
        git(w, &w.ws, &["config", "core.hooksPath", ".husky/_"]);
    };
    let script =
        "printf '#!/bin/sh\\ntouch {M}\\n' > .husky/_/pre-commit; chmod +x .husky/_/pre-commit";
    let trigger = |w: &World| {
        git_in(
            w,
            &w.ws,
            &["commit", "-q", "--allow-empty", "-m", "x"],
            true,
        );
    };
    assert_contained(attack("git-hookspath", &setup, script, &trigger));
}

#[test]
fn a_file_named_by_include_path_or_core_fsmonitor_cannot_be_changed() {
    if !have_git() {
        return skip("git not installed");
    }
    let setup = |w: &World| {
        write(&w.ws("tools/git.cfg"), "# shared settings\n");
        write(&w.ws("tools/fsm.sh"), "#!/bin/sh\nexit 0\n");
        x(&w.ws("tools/fsm.sh"));
        git(w, &w.ws, &["config", "include.path", "../tools/git.cfg"]);
        git(w, &w.ws, &["config", "core.fsmonitor", "tools/fsm.sh"]);
    };
    let inc = "printf '[alias]\\n\\tst = !touch {M}\\n' >> tools/git.cfg";
    let trigger_inc = |w: &World| {
        git_in(w, &w.ws, &["st"], true);
    };
    assert_contained(attack("git-include", &setup, inc, &trigger_inc));
    let fsm = "printf '#!/bin/sh\\ntouch {M}\\n' > tools/fsm.sh";
    assert_contained(attack("git-fsmonitor", &setup, fsm, &status));
}

#[test]
fn a_nested_repository_created_at_depth_3_with_core_fsmonitor_is_neutralised() {
    if !have_git() {
        return skip("git not installed");
    }
    let script = "mkdir -p p/q/r && git -C p/q/r init -q && git -C p/q/r config core.fsmonitor 'touch {M}; false'";
    let trigger = |w: &World| {
        git_in(w, &w.ws("p/q/r"), &["status"], true);
    };
    let o = assert_contained(attack("git-nested", &|_| {}, script, &trigger));
    assert_neutralised(&o, "p/q/r/.git/config");
}

#[test]
fn git_init_with_a_hook_template_is_neutralised() {
    if !have_git() {
        return skip("git not installed");
    }
    let script = "mkdir -p tpl/hooks && printf '#!/bin/sh\\ntouch {M}\\n' > tpl/hooks/pre-commit && chmod +x tpl/hooks/pre-commit && git init -q --template=tpl newrepo";
    let trigger = |w: &World| {
        git_in(
            w,
            &w.ws("newrepo"),
            &["commit", "-q", "--allow-empty", "-m", "x"],
            true,
        );
    };
    let o = assert_contained(attack("git-template", &|_| {}, script, &trigger));
    assert_neutralised(&o, "newrepo/.git/hooks/pre-commit");
}

#[test]
fn an_embedded_bare_repository_with_a_hostile_config_is_neutralised() {
    if !have_git() {
        return skip("git not installed");
    }
    // `remote.origin.uploadpack` runs when the host fetches into the bare repository.
    let script = "git init -q --bare vendor/emb && git -C vendor/emb remote add origin \"$PWD\" && git -C vendor/emb config remote.origin.uploadpack 'touch {M}; git-upload-pack'";
    let trigger = |w: &World| {
        git_in(w, &w.ws("vendor/emb"), &["fetch", "-q", "origin"], true);
    };
    let o = assert_contained(attack("git-bare", &|_| {}, script, &trigger));
    assert_neutralised(&o, "vendor/emb/config");
}

#[test]
fn config_worktree_created_where_none_existed_is_neutralised() {
    if !have_git() {
        return skip("git not installed");
    }
    let setup = |w: &World| {
        git(w, &w.ws, &["config", "extensions.worktreeConfig", "true"]);
    };
    let script = "printf '[core]\\n\\tfsmonitor = \"touch {M}; false\"\\n' > .git/config.worktree";
    let o = assert_contained(attack("git-cfgwt", &setup, script, &status));
    assert_refused_or_neutralised(&o, ".git/config.worktree");
}

#[test]
fn a_submodule_hook_cannot_be_written() {
    if !have_git() {
        return skip("git not installed");
    }
    let setup = |w: &World| {
        let src = w.out("src");
        fs::create_dir_all(&src).unwrap();
        git(w, &src, &["init", "-q", "-b", "main"]);
        git(w, &src, &["commit", "-q", "--allow-empty", "-m", "s"]);
        git(
            w,
            &w.ws,
            &[
                "-c",
                "protocol.file.allow=always",
                "submodule",
                "add",
                "-q",
                src.to_str().unwrap(),
                "x",
            ],
        );
        git(w, &w.ws, &["commit", "-qm", "sub"]);
    };
    let script = "printf '#!/bin/sh\\ntouch {M}\\n' > .git/modules/x/hooks/post-checkout; chmod +x .git/modules/x/hooks/post-checkout";
    let trigger = |w: &World| {
        git_in(w, &w.ws("x"), &["checkout", "-q", "--detach"], true);
    };
    assert_contained(attack("git-module", &setup, script, &trigger));
}

#[test]
fn a_linked_worktree_commondir_cannot_be_changed() {
    if !have_git() {
        return skip("git not installed");
    }
    let setup = |w: &World| {
        git(w, &w.ws, &["worktree", "add", "-q", "wtx", "-b", "wtx"]);
        // An attacker-controlled repository elsewhere, whose config runs the marker.
        let evil = w.out("evil");
        fs::create_dir_all(&evil).unwrap();
        git(w, &evil, &["init", "-q"]);
        git(
            w,
            &evil,
            &[
                "config",
                "core.fsmonitor",
                &format!("touch {}; false", w.root.join("marker").display()),
            ],
        );
    };
    let script = "echo \"$(dirname \"$PWD\")/outside/evil/.git\" > .git/worktrees/wtx/commondir";
    let trigger = |w: &World| {
        git_in(w, &w.ws("wtx"), &["status"], true);
    };
    assert_contained(attack("git-commondir", &setup, script, &trigger));
}

#[test]
fn info_attributes_created_where_none_existed_is_neutralised() {
    if !have_git() {
        return skip("git not installed");
    }
    let script = "echo '* filter=up' > .git/info/attributes";
    let o = assert_contained(attack("git-attrs", &filter_up, script, &add_changed));
    assert_refused_or_neutralised(&o, ".git/info/attributes");
}

/// An existing `config.worktree` (present at launch) changed: appended to in place, and
/// replaced by a rename over it (how `git config` writes). Either change would make the host's
/// `git status` run the marker (the control shows it does, unsandboxed).
#[test]
fn an_existing_config_worktree_cannot_be_changed() {
    if !have_git() {
        return skip("git not installed");
    }
    let setup = |w: &World| {
        git(w, &w.ws, &["config", "extensions.worktreeConfig", "true"]);
        git(w, &w.ws, &["config", "--worktree", "user.name", "wt"]);
        assert!(w.ws(".git/config.worktree").is_file());
    };
    let append = "printf '[core]\\n\\tfsmonitor = \"touch {M}; false\"\\n' >> .git/config.worktree";
    assert_contained(attack("git-cfgwt-app", &setup, append, &status));
    let replace = "printf '[core]\\n\\tfsmonitor = \"touch {M}; false\"\\n' > cw.tmp; mv -f cw.tmp .git/config.worktree";
    assert_contained(attack("git-cfgwt-mv", &setup, replace, &status));
}

/// An existing `info/attributes` changed (in place, and by a rename over it) to route files
/// through a filter the repository's config already names: the host's next `git add` runs it.
#[test]
fn an_existing_info_attributes_cannot_be_changed() {
    if !have_git() {
        return skip("git not installed");
    }
    let setup = |w: &World| {
        filter_up(w);
        write(&w.ws(".git/info/attributes"), "*.bin binary\n");
    };
    let append = "echo '* filter=up' >> .git/info/attributes";
    assert_contained(attack("git-attrs-app", &setup, append, &add_changed));
    let replace = "echo '* filter=up' > at.tmp; mv -f at.tmp .git/info/attributes";
    assert_contained(attack("git-attrs-mv", &setup, replace, &add_changed));
}

/// The repository's config names a clean filter `up` that fires the marker.
fn filter_up(w: &World) {
    let m = w.root.join("marker");
    git(
        w,
        &w.ws,
        &[
            "config",
            "filter.up.clean",
            &format!("touch {}; cat", m.display()),
        ],
    );
}

/// The host's trigger for a filter: change a tracked file and `git add` it.
fn add_changed(w: &World) {
    write(&w.ws("a"), "changed\n");
    git_in(w, &w.ws, &["add", "a"], true);
}

#[test]
fn a_hard_link_to_a_protected_file_cannot_be_written_through() {
    if !have_git() {
        return skip("git not installed");
    }
    let script = "ln .git/config cfg-link; printf '[core]\\n\\tfsmonitor = \"touch {M}; false\"\\n' >> cfg-link";
    assert_contained(attack("git-hardlink", &|_| {}, script, &status));
}

#[test]
fn a_rebase_todo_with_exec_left_behind_is_neutralised() {
    if !have_git() {
        return skip("git not installed");
    }
    let script = "GIT_SEQUENCE_EDITOR=\"sed -i -e '1i break' -e '1a exec touch {M}'\" git rebase -q -i HEAD~1 >/dev/null 2>&1; test -d .git/rebase-merge && echo STOPPED";
    let trigger = |w: &World| {
        git_in(w, &w.ws, &["rebase", "--continue"], true);
    };
    let o = assert_contained(attack("git-todo", &|_| {}, script, &trigger));
    assert!(o.has("STOPPED"), "the rebase did not stop at break: {o:#?}");
    assert_neutralised(&o, "git-rebase-todo");
}

/// Every object and ref value of the repository (HEAD included).
fn history(w: &World) -> (Vec<String>, Vec<(String, String)>) {
    let objs = git(
        w,
        &w.ws,
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ],
    );
    let refs = git(
        w,
        &w.ws,
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    );
    let mut refs: Vec<(String, String)> = refs
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    refs.push((
        "HEAD".into(),
        git(w, &w.ws, &["rev-parse", "HEAD"]).trim().to_string(),
    ));
    (objs.lines().map(str::to_string).collect(), refs)
}

fn recoverable_after(tag: &str, setup: &str, destroy: &str) -> (Out, String, String) {
    // Positive control: unsandboxed, the command really loses history.
    let c = repo(&format!("{tag}-c"));
    unsandboxed(&c, setup);
    let (objs, refs) = history(&c);
    unsandboxed(&c, destroy);
    let lost = objs
        .iter()
        .any(|o| !git_in(&c, &c.ws, &["cat-file", "-e", o], true).0)
        || refs.iter().any(|(r, v)| {
            !git_in(&c, &c.ws, &["rev-parse", "-q", "--verify", r], true)
                .1
                .contains(v.as_str())
        });
    assert!(
        lost,
        "positive control: {destroy:?} must lose history unsandboxed"
    );

    let w = repo(&format!("{tag}-s"));
    unsandboxed(&w, setup);
    let (objs, refs) = history(&w);
    let o = sandboxed(&w, &format!("echo RAN; {destroy}; echo DESTROYED"));
    o.assert_ran("RAN");
    assert!(o.has("DESTROYED"), "{o:#?}");
    let refs_fmt = ["for-each-ref", "--format=%(refname) %(objectname)"];
    let refs_before = refs
        .iter()
        .filter(|(r, _)| r != "HEAD")
        .map(|(r, v)| format!("{r} {v}\n"))
        .collect::<String>();
    let refs_after_run = git_in(&w, &w.ws, &refs_fmt, true).1;
    let v = json(&o);
    let snap = &v["git"]["snapshots"][0];
    let store = PathBuf::from(snap["store"].as_str().expect("a snapshot store"));
    let run = snap["run"].as_str().unwrap();
    let st = |args: &[&str]| {
        let mut a = vec!["--git-dir", store.to_str().unwrap()];
        a.extend_from_slice(args);
        git_in(&w, &w.ws, &a, true)
    };
    for obj in &objs {
        assert!(
            st(&["cat-file", "-e", obj]).0,
            "object {obj} not recoverable"
        );
    }
    for (r, val) in &refs {
        let name = if r == "HEAD" {
            format!("refs/stockade/{run}/HEAD")
        } else {
            format!("refs/stockade/{run}/{r}")
        };
        let got = st(&["rev-parse", "-q", "--verify", &name]).1;
        assert_eq!(got.trim(), val, "ref {r} not recoverable");
    }
    // The documented restore command brings every ref back.
    let restore = snap["restore"].as_str().unwrap();
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("git init -q . && {restore}"))
        .current_dir(&w.ws)
        .env("HOME", &w.home);
    assert!(sh.status().unwrap().success());
    for (r, val) in refs.iter().filter(|(r, _)| r != "HEAD") {
        assert_eq!(
            git(&w, &w.ws, &["rev-parse", r]).trim(),
            val,
            "{r} after restore"
        );
    }
    // `stockade clean` removes the workspace's snapshots.
    let c = w.stockade(&["clean"]);
    assert_eq!(c.code(), 0, "{c:#?}");
    assert!(!store.exists(), "clean left {store:?}: {c:#?}");
    (o, refs_before, refs_after_run)
}

#[test]
fn history_survives_rm_rf_dot_git() {
    if !have_git() {
        return skip("git not installed");
    }
    let (o, before, after_run) = recoverable_after(
        "git-hist-rm",
        "git branch keep HEAD~1; git stash -q 2>/dev/null; true",
        "rm -rf .git/* 2>/dev/null",
    );
    // The destroyed repository was put back right after the run, before any restore by hand.
    assert_eq!(after_run, before, "refs right after the run");
    let v = json(&o);
    let restored = v["git"]["neutralised"]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f["kind"] == "git-restored"));
    assert!(restored, "no git-restored finding: {v}");
    assert!(
        o.stderr
            .lines()
            .any(|l| l.starts_with("stockade: restored: ")),
        "{}",
        o.stderr
    );
}

#[test]
fn history_survives_branch_delete_and_gc_prune() {
    if !have_git() {
        return skip("git not installed");
    }
    recoverable_after(
        "git-hist-gc",
        "git checkout -q -b side && echo s > s && git add s && git commit -qm side && git checkout -q main",
        "git branch -D side && git reflog expire --expire=now --all && git gc -q --prune=now",
    );
}

#[test]
fn history_survives_reflog_expire() {
    if !have_git() {
        return skip("git not installed");
    }
    recoverable_after(
        "git-hist-reflog",
        "git commit -q --amend -m two-amended",
        "git reflog expire --expire=now --all && git prune --expire=now",
    );
}

#[test]
fn history_survives_overwritten_packs() {
    if !have_git() {
        return skip("git not installed");
    }
    recoverable_after(
        "git-hist-pack",
        "git gc -q",
        "for f in .git/objects/pack/*.pack .git/objects/pack/*.idx; do chmod u+w \"$f\"; printf garbage > \"$f\"; done",
    );
}

#[test]
fn a_worktree_created_with_a_commondir_pointing_elsewhere_is_neutralised() {
    if !have_git() {
        return skip("git not installed");
    }
    let setup = |w: &World| {
        let evil = w.out("evil");
        fs::create_dir_all(&evil).unwrap();
        git(w, &evil, &["init", "-q"]);
        let m = w.root.join("marker");
        git(
            w,
            &evil,
            &[
                "config",
                "core.fsmonitor",
                &format!("touch {}; false", m.display()),
            ],
        );
    };
    let script = "git worktree add -q w2 -b w2 && echo \"$(dirname \"$PWD\")/outside/evil/.git\" > .git/worktrees/w2/commondir";
    let trigger = |w: &World| {
        git_in(w, &w.ws("w2"), &["status"], true);
    };
    let o = assert_contained(attack("git-newwt", &setup, script, &trigger));
    assert_neutralised(&o, ".git/worktrees/w2/commondir");
}

/// Every file below `dir` whose content contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            out.extend(files_containing(&p, needle));
        } else if m.is_file()
            && fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
        {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_snapshot_never_follows_a_symlink_planted_in_the_repository() {
    if !have_git() {
        return skip("git not installed");
    }
    let w = repo("git-snap-link");
    let secret = w.out("secret");
    let sha = git(&w, &w.ws, &["rev-parse", "HEAD"]);
    // Looks like refs to a parser that follows links: a sha, then the secret.
    write(
        &secret,
        &format!(
            "{} refs/heads/x TOPSECRET-{}\nTOPSECRET\n",
            sha.trim(),
            std::process::id()
        ),
    );
    for f in ["packed-refs", "ORIG_HEAD"] {
        std::os::unix::fs::symlink(&secret, w.ws(&format!(".git/{f}"))).unwrap();
    }
    fs::remove_file(w.ws(".git/HEAD")).unwrap();
    std::os::unix::fs::symlink(&secret, w.ws(".git/HEAD")).unwrap();
    // Control: the links do lead to the secret for anyone who follows them.
    assert!(fs::read_to_string(w.ws(".git/HEAD"))
        .unwrap()
        .contains("TOPSECRET"));
    let o = sandboxed(&w, "echo RAN");
    o.assert_ran("RAN");
    let v = json(&o);
    assert!(
        v["git"]["snapshots"][0]["store"].is_string(),
        "no snapshot was taken: {v}"
    );
    let leaked = files_containing(&w.state, "TOPSECRET");
    assert!(
        leaked.is_empty(),
        "the snapshot copied the secret: {leaked:?}"
    );
}

#[test]
fn hooks_through_a_relative_core_hookspath_in_the_users_global_config() {
    if !have_git() {
        return skip("git not installed");
    }
    // Set in ~/.gitconfig (masked inside, read by git on the host): `.githooks` in every repo.
    let setup = |w: &World| {
        write(
            &w.home.join(".gitconfig"),
            "[core]\n\thooksPath = .githooks\n",
        );
        fs::create_dir_all(w.ws(".githooks")).unwrap();
    };
    let script =
        "printf '#!/bin/sh\\ntouch {M}\\n' > .githooks/pre-commit; chmod +x .githooks/pre-commit";
    let trigger = |w: &World| {
        git_in(
            w,
            &w.ws,
            &["commit", "-q", "--allow-empty", "-m", "x"],
            true,
        );
    };
    assert_contained(attack("git-globalhooks", &setup, script, &trigger));
}

/// A `.git` directory that was not a whole repository at launch (no `HEAD`, `objects`, `refs`)
/// is left as it was: the post-run restore only puts back a repository the run destroyed, it
/// never turns a directory into a repository. Control: a whole repository that the run empties
/// is put back (`history_survives_rm_rf_dot_git`).
#[test]
fn a_dot_git_that_was_never_a_repository_is_not_made_one() {
    if !have_git() {
        return skip("git not installed");
    }
    let w = World::new("git-not-a-repo");
    fs::create_dir_all(w.ws.join(".git")).unwrap();
    write(&w.ws(".git/notes.txt"), "mine\n");
    let o = sandboxed(&w, "echo MARK-ran");
    o.assert_ran("MARK-ran");
    let mut names: Vec<String> = fs::read_dir(w.ws.join(".git"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["notes.txt"],
        "the run's aftermath changed .git: {o:#?}"
    );
    let v = json(&o);
    let restored = v["git"]["neutralised"]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f["kind"] == "git-restored"));
    assert!(!restored, "a restore was reported: {v}");
}
