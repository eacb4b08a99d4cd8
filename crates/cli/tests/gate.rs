//! The write gate (issues 12 and 13), through the real binary and judged from the host: what
//! the launch no longer walks for is protected per call, names that did not exist at launch are
//! refused when created, what a run creates or moves into place is checked after it, and
//! ordinary work still works. Every attack has a positive control — the same script unsandboxed,
//! or with `--write-gate off` where the point is the gate itself — and a marker proving it ran.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

fn git(w: &World, dir: &Path, args: &[&str]) -> String {
    git_in(w, dir, args, false).1
}

/// A world whose workspace is a repository with one commit.
fn repo(tag: &str) -> World {
    let w = World::new(tag);
    git(&w, &w.ws, &["init", "-q", "-b", "main"]);
    write(&w.ws("a"), "1\n");
    git(&w, &w.ws, &["add", "a"]);
    git(&w, &w.ws, &["commit", "-qm", "one"]);
    w
}

/// `sh -c script` in the sandbox (`--json`), with `flags` before `--`.
fn sandboxed(w: &World, flags: &[&str], script: &str) -> Out {
    git_sandboxed(w, flags, script)
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

/// Whether this kernel has the gate (`stockade doctor`); without it every test here is a skip
/// (a failure under STOCKADE_REQUIRE_ROOT_TESTS=1).
fn have_gate() -> bool {
    let o = Command::new(bin())
        .args(["doctor", "--json"])
        .output()
        .expect("doctor runs");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["features"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| f["name"] == "write-gate" && f["available"] == true)
}

fn ready() -> bool {
    if !have("git") {
        skip("git not installed");
        return false;
    }
    if !have_gate() {
        skip("this kernel has no write gate (see `stockade doctor`)");
        return false;
    }
    true
}

/// Issue 13: a repository the host clones at depth 4 between two runs. The first run sees none
/// (and no launch walks for it); the second run attacks it with `script` (run in the nested
/// repository, `{M}` the marker outside the workspace), then `trigger` runs git there on the
/// host. Returns (marker after the sandboxed attack, marker after the unsandboxed control, the
/// sandboxed run's output).
fn nested_attack(tag: &str, script: &str, trigger: &[&str]) -> (bool, bool, Out) {
    let mut seen = [false, false];
    let mut out = None;
    for (i, sandbox) in [true, false].into_iter().enumerate() {
        let w = repo(&format!("{tag}-{}", if sandbox { "s" } else { "c" }));
        let first = sandboxed(&w, &[], "echo FIRST");
        first.assert_ran("FIRST");
        // Between the runs, the host clones a repository four levels down.
        let src = w.out("src");
        fs::create_dir_all(&src).unwrap();
        git(&w, &src, &["init", "-q", "-b", "main"]);
        write(&src.join("f"), "f\n");
        git(&w, &src, &["add", "f"]);
        git(&w, &src, &["commit", "-qm", "src"]);
        let nested = w.ws("l1/l2/l3/l4");
        fs::create_dir_all(nested.parent().unwrap()).unwrap();
        git(
            &w,
            &w.ws,
            &["clone", "-q", src.to_str().unwrap(), "l1/l2/l3/l4"],
        );
        let config_before = fs::read(nested.join(".git/config")).unwrap();
        let marker = w.root.join("marker");
        let s = format!(
            "echo RAN\ncd l1/l2/l3/l4 || exit 9\n{}\necho ATTACK-DONE\n",
            script.replace("{M}", marker.to_str().unwrap())
        );
        let o = if sandbox {
            sandboxed(&w, &[], &s)
        } else {
            unsandboxed(&w, &s)
        };
        o.assert_ran("RAN");
        assert!(o.has("ATTACK-DONE"), "the attack did not finish: {o:#?}");
        assert!(!marker.exists(), "marker before the trigger: {o:#?}");
        git_in(&w, &nested, trigger, true);
        seen[i] = marker.exists();
        if sandbox {
            // Judged from the host: the nested repository's config is what the host cloned.
            assert_eq!(
                fs::read(nested.join(".git/config")).ok().as_deref(),
                Some(&config_before[..]),
                "the nested config changed: {o:#?}"
            );
            out = Some(o);
        }
    }
    (seen[0], seen[1], out.unwrap())
}

#[track_caller]
fn contained(r: (bool, bool, Out), refused: &str) -> Out {
    let (sandboxed, control, o) = r;
    assert!(
        control,
        "positive control: the attack must work unsandboxed"
    );
    assert!(!sandboxed, "the attack worked through the sandbox: {o:#?}");
    assert!(o.has(refused), "the sandbox did not refuse it: {o:#?}");
    o
}

#[test]
fn nested_repo_cloned_between_runs_new_hook_is_refused() {
    if !ready() {
        return;
    }
    let script = "printf '#!/bin/sh\\ntouch {M}\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit || echo REFUSED";
    let o = contained(
        nested_attack(
            "gate-n-hook",
            script,
            &["commit", "-q", "--allow-empty", "-m", "x"],
        ),
        "REFUSED",
    );
    assert!(
        json(&o)["denials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["target"].as_str().unwrap_or("").contains("l4/.git/hooks")),
        "no denial for the hook: {o:#?}"
    );
}

#[test]
fn nested_repo_cloned_between_runs_config_append_is_refused() {
    if !ready() {
        return;
    }
    // `>>` opens with O_APPEND.
    let script =
        "printf '[core]\\n\\tfsmonitor = \"touch {M}; false\"\\n' >> .git/config || echo REFUSED";
    contained(
        nested_attack("gate-n-append", script, &["status"]),
        "REFUSED",
    );
}

#[test]
fn nested_repo_cloned_between_runs_write_through_a_hard_link_is_refused() {
    if !ready() {
        return;
    }
    let script = "{ ln .git/config ../cfg-link && printf '[core]\\n\\tfsmonitor = \"touch {M}; false\"\\n' >> ../cfg-link; } || echo REFUSED";
    contained(nested_attack("gate-n-link", script, &["status"]), "REFUSED");
}

#[test]
fn nested_repo_cloned_between_runs_rename_of_its_git_is_refused() {
    if !ready() {
        return;
    }
    // Move the protected directory away, change it where nothing protects it, move it back.
    let script = "{ mv .git g2 && printf '[core]\\n\\tfsmonitor = \"touch {M}; false\"\\n' >> g2/config && mv g2 .git; } || echo REFUSED";
    let o = contained(
        nested_attack("gate-n-rename", script, &["status"]),
        "REFUSED",
    );
    assert!(
        o.stderr
            .lines()
            .any(|l| l.starts_with("stockade: refused: ")),
        "no refusal line on stderr: {o:#?}"
    );
}

/// `path` (relative to the workspace) created by `sh` in `ws`, printing WROTE/REFUSED.
fn create_script(paths: &[&str]) -> String {
    let mut s = String::from("echo RAN\n");
    for p in paths {
        s.push_str(&format!(
            "mkdir -p \"$(dirname '{p}')\" 2>/dev/null; if echo '{{\"hooks\":{{}}}}' > '{p}'; then echo 'WROTE {p}'; else echo 'REFUSED {p}'; fi\n"
        ));
    }
    s
}

#[test]
fn agent_configs_created_where_none_existed_are_refused_at_creation() {
    if !ready() {
        return;
    }
    let paths = [
        ".claude/settings.json",
        ".mcp.json",
        ".vscode/tasks.json",
        "pkg/sub/.claude/settings.json",
    ];
    let script = create_script(&paths);
    // Positive control: without the gate nothing stops the creation of a name that did not
    // exist at launch (no mount can protect it).
    let c = repo("gate-cfg-c");
    fs::create_dir_all(c.ws("pkg/sub")).unwrap();
    git(&c, &c.ws("pkg/sub"), &["init", "-q"]);
    let o = sandboxed(&c, &["--write-gate", "off"], &script);
    o.assert_ran("RAN");
    for p in paths {
        assert!(c.ws(p).exists(), "control: {p} not created: {o:#?}");
    }
    // With the gate: refused at creation, reported in JSON and on stderr, nothing on the host.
    let w = repo("gate-cfg-s");
    fs::create_dir_all(w.ws("pkg/sub")).unwrap();
    git(&w, &w.ws("pkg/sub"), &["init", "-q"]);
    let o = sandboxed(&w, &[], &script);
    o.assert_ran("RAN");
    let v = json(&o);
    let denials = v["denials"].as_array().cloned().unwrap_or_default();
    for p in paths {
        assert!(
            o.has(&format!("REFUSED {p}")),
            "{p} was not refused: {o:#?}"
        );
        assert!(!w.ws(p).exists(), "{p} exists on the host: {o:#?}");
        // The refusal names the first name the creation needed that is protected: the file
        // itself, or its protected directory (`.claude` for `.claude/settings.json`).
        let full = w.ws(p);
        let denial = denials
            .iter()
            .find(|d| {
                d["kind"] == "write-gate"
                    && d["target"].as_str().is_some_and(|t| {
                        full.starts_with(t)
                            && Path::new(t).starts_with(&w.ws)
                            && Path::new(t) != w.ws
                    })
            })
            .unwrap_or_else(|| panic!("no JSON denial for {p}: {v}"));
        let message = denial["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("refused: create "), "{denial}");
        assert!(
            o.stderr
                .lines()
                .any(|l| l == format!("stockade: {message}")),
            "no stderr line for {p}: {}",
            o.stderr
        );
    }
}

#[test]
fn a_refusal_line_escapes_what_the_command_named() {
    if !ready() {
        return;
    }
    let w = repo("gate-escape");
    // A repository whose directory name carries a terminal escape; its root-level .claude is
    // protected, so creating one there is refused and the line names the path.
    let evil = w.ws("\u{1b}]0;pwned\u{7}r");
    fs::create_dir_all(&evil).unwrap();
    git(&w, &evil, &["init", "-q"]);
    let o = sandboxed(
        &w,
        &[],
        "echo RAN; for d in ./*r; do mkdir -p \"$d/.claude\"; echo '{}' > \"$d/.claude/settings.json\" || echo REFUSED; done",
    );
    o.assert_ran("RAN");
    assert!(o.has("REFUSED"), "not refused: {o:#?}");
    assert!(!evil.join(".claude/settings.json").exists());
    let line = o
        .stderr
        .lines()
        .find(|l| l.starts_with("stockade: refused: "))
        .unwrap_or_else(|| panic!("no refusal line: {o:#?}"));
    assert!(
        !line.contains('\u{1b}') && !line.contains('\u{7}'),
        "a raw control character reached the terminal: {line:?}"
    );
}

#[test]
fn a_repository_moved_into_place_during_the_run_is_neutralised() {
    if !ready() {
        return;
    }
    // Made in a staging directory, then moved three levels down: the gate saw `stage/r/.git`
    // created, and `deep/b/r` arrive by rename; the post-run check finds the hostile config there.
    let script = |m: &Path| {
        format!(
            "echo RAN\nmkdir -p stage deep/b && git init -q stage/r && git -C stage/r config core.fsmonitor 'touch {}; false' && mv stage/r deep/b/r && echo MOVED",
            m.display()
        )
    };
    let c = repo("gate-moved-c");
    let m = c.root.join("marker");
    let o = unsandboxed(&c, &script(&m));
    o.assert_ran("MOVED");
    git_in(&c, &c.ws("deep/b/r"), &["status"], true);
    assert!(
        m.exists(),
        "positive control: the moved repository's fsmonitor must run"
    );

    let w = repo("gate-moved-s");
    let m = w.root.join("marker");
    let o = sandboxed(&w, &[], &script(&m));
    o.assert_ran("MOVED");
    git_in(&w, &w.ws("deep/b/r"), &["status"], true);
    assert!(
        !m.exists(),
        "the moved repository ran its fsmonitor: {o:#?}"
    );
    let v = json(&o);
    assert!(
        v["git"]["neutralised"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("deep/b/r/.git/config"))),
        "not neutralised: {v}"
    );
}

#[test]
fn ordinary_work_still_works_under_the_gate() {
    if !ready() {
        return;
    }
    let w = repo("gate-work");
    // A package archive that carries a `.envrc` deep down (legitimate there).
    let pkg = w.out("pkg");
    write(&pkg.join("package/.envrc"), "export X=1\n");
    write(&pkg.join("package/index.js"), "module.exports = 1;\n");
    let tgz = w.out("pkg.tgz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&pkg)
        .arg("package")
        .status()
        .unwrap();
    assert!(st.success());
    let script = format!(
        "set -e\necho RAN\n\
         echo 2 > a && git add a && git commit -qm two\n\
         python3 -c \"\nimport os\nfor i in range(3000):\n    d = 'node_modules/p%d/lib' % i\n    os.makedirs(d)\n    open(d + '/index.js', 'w').write('x')\n\"\n\
         mkdir -p node_modules/deep/pkg && tar -xzf {} -C node_modules/deep/pkg\n\
         echo hi-stdout > /dev/stdout\n\
         echo to-null > /dev/null\n\
         t=$(mktemp) && echo tmp > \"$t\" && rm \"$t\"\n\
         echo WORK-DONE",
        q(&tgz)
    );
    let o = sandboxed(&w, &[], &script);
    o.assert_ran("WORK-DONE");
    assert!(o.has("hi-stdout"), "echo > /dev/stdout lost: {o:#?}");
    assert_eq!(git(&w, &w.ws, &["log", "-1", "--format=%s"]).trim(), "two");
    assert_eq!(
        fs::read_dir(w.ws("node_modules")).unwrap().count(),
        3001,
        "mass creation incomplete"
    );
    assert!(w.ws("node_modules/p2999/lib/index.js").exists());
    assert!(w.ws("node_modules/deep/pkg/package/.envrc").exists());
    let v = json(&o);
    assert!(
        v["denials"].as_array().is_none_or(|d| d.is_empty()),
        "ordinary work was refused: {v}"
    );
}

#[test]
fn a_writer_blocked_on_a_fifo_does_not_keep_the_run_alive() {
    if !ready() {
        return;
    }
    // The open for writing blocks until a reader comes, none ever does: the supervisor must not
    // be stuck in it when the command exits, and the run must end.
    let w = repo("gate-fifo");
    let t = std::time::Instant::now();
    let o = w
        .run()
        .limit(std::time::Duration::from_secs(30))
        .sh("mkfifo f && { echo x > f & } ; sleep 0.3; echo FIFO-DONE");
    o.assert_ran("FIFO-DONE");
    assert_eq!(o.code(), 0, "{o:#?}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "the run hung on the FIFO writer"
    );
    // And a FIFO with a reader works through the gate.
    let o = w
        .run()
        .sh("rm -f f; mkfifo g && { cat g & } && echo through-fifo > g; wait");
    assert!(o.has("through-fifo"), "{o:#?}");
}
