//! Real developer workflows inside the sandbox with the network off: they must all work (or, for a
//! git commit into the read-only `.git`, fail cleanly).
//!
//! Findings documented here:
//! * cargo: a path-only dependency builds and tests with `--offline`, `CARGO_TARGET_DIR` in the
//!   workspace, and `CARGO_HOME`/`RUSTUP_HOME` left read-only (pointing at the caller's real ones;
//!   with the sandbox's `HOME` elsewhere, rustup's proxy otherwise tries to create `~/.rustup`
//!   and fails on the read-only filesystem).
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn git_status_diff_log_work_and_commit_fails_cleanly() {
    let w = World::new("compat-git");
    git_repo(&w.ws);
    write(&w.ws("README"), "hello\nchanged inside\n");
    write(&w.ws("new.txt"), "untracked\n");
    // git.mode = "read-only" throughout: nothing may change in .git (the default, "commit",
    // lets git write objects and refs: tests/git.rs).
    let ro = w.root.join("git-read-only.toml");
    write(&ro, "[git]\nmode = \"read-only\"\n");
    let before = snap_tree(&w.ws(".git"));
    let out = w
        .run()
        .flag("--config")
        .flag(&ro)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .sh(
            "echo RAN; git --no-optional-locks status --short && echo STATUS-OK; \
         git --no-pager diff && echo DIFF-OK; git --no-pager log --oneline && echo LOG-OK; \
         git --no-pager show --stat HEAD >/dev/null && echo SHOW-OK",
        );
    out.assert_ran("RAN");
    for m in ["STATUS-OK", "DIFF-OK", "LOG-OK", "SHOW-OK"] {
        out.assert_ran(m);
    }
    assert!(out.stdout.contains("?? new.txt"), "{out:#?}");
    assert!(out.stdout.contains("+changed inside"), "{out:#?}");
    assert!(out.stdout.contains("init"), "{out:#?}");
    // Plain `git status` (which may try to refresh the index) must still succeed.
    let out = w
        .run()
        .flag("--config")
        .flag(&ro)
        .sh("echo RAN; git status >/dev/null && echo PLAIN-STATUS-OK");
    out.assert_ran("PLAIN-STATUS-OK");

    // With git.mode = "read-only" a commit must fail (the .git directory is read-only), cleanly:
    // non-zero, an error message, no partial state on the host. (The default, "commit", lets it
    // succeed: tests/git.rs.)
    let out = w
        .run()
        .flag("--config")
        .flag(&ro)
        .sh("echo RAN; git add new.txt && git commit -q -m inside; echo COMMIT-RC=$?");
    out.assert_ran("RAN");
    assert!(
        !out.stdout.contains("COMMIT-RC=0"),
        "commit succeeded: {out:#?}"
    );
    assert!(
        out.stderr.to_lowercase().contains("read-only")
            || out.stderr.contains("Unable to create")
            || out.stderr.contains("Permission denied"),
        "unclear git error: {out:#?}"
    );
    assert_same_tree(&before, &snap_tree(&w.ws(".git")));
    host(&w.ws, &["git", "status", "--short"]);
    assert_eq!(
        host(&w.ws, &["git", "rev-list", "--count", "HEAD"]).trim(),
        "1"
    );
}

fn real_tool_home(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| real_home().join(default))
}

#[test]
fn cargo_offline_build_and_test_with_a_path_dependency() {
    if !have("cargo") {
        return skip("no cargo on PATH");
    }
    let w = World::new("compat-cargo");
    write(
        &w.ws("dep/Cargo.toml"),
        "[package]\nname = \"dep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(
        &w.ws("dep/src/lib.rs"),
        "pub fn add(a: u64, b: u64) -> u64 { a + b }\n#[cfg(test)]\nmod t { #[test] fn adds() { assert_eq!(super::add(2, 2), 4); } }\n",
    );
    write(
        &w.ws("app/Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ndep = { path = \"../dep\" }\n",
    );
    write(
        &w.ws("app/src/main.rs"),
        "fn main() { println!(\"sum={}\", dep::add(2, 3)); }\n#[test]\nfn works() { assert_eq!(dep::add(1, 1), 2); }\n",
    );
    let cargo_home = real_tool_home("CARGO_HOME", ".cargo");
    let rustup_home = real_tool_home("RUSTUP_HOME", ".rustup");
    let before_cargo_home = snap(&cargo_home);
    let target = w.ws("target");
    let out = w
        .run()
        .env("CARGO_HOME", &cargo_home)
        .env("RUSTUP_HOME", &rustup_home)
        .env("CARGO_TARGET_DIR", &target)
        .limit(Duration::from_secs(120))
        .sh("echo RAN; cd app && cargo build --offline -q && ./../target/debug/app && \
             cargo test --offline -q 2>&1 && cd ../dep && cargo test --offline -q 2>&1 && echo ALL-OK");
    out.assert_ran("RAN");
    out.assert_ran("sum=5");
    out.assert_ran("ALL-OK");
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(target.join("debug/app").exists());
    assert!(w.ws("app/Cargo.lock").exists());
    // CARGO_HOME stayed read-only and untouched.
    assert_eq!(before_cargo_home.entries, snap(&cargo_home).entries);
}

#[test]
fn python_venv_and_script() {
    let w = World::new("compat-venv");
    write(
        &w.ws("hello.py"),
        "import sys\nprint('VENV-PY', sys.prefix != sys.base_prefix, sys.prefix)\n",
    );
    let out = w
        .run()
        .limit(Duration::from_secs(120))
        .sh("echo RAN; python3 -m venv --without-pip .venv && .venv/bin/python hello.py");
    out.assert_ran("RAN");
    assert!(out.stdout.contains("VENV-PY True"), "{out:#?}");
    assert!(w.ws(".venv/pyvenv.cfg").exists());
}

#[test]
fn make_compiles_c_into_the_workspace() {
    if !have("make") || !have("cc") {
        return skip("make or cc missing (apt-get install make gcc)");
    }
    let w = World::new("compat-make");
    write(
        &w.ws("hello.c"),
        "#include <stdio.h>\nint main(void){ printf(\"C-OK %d\\n\", 6*7); return 0; }\n",
    );
    write(
        &w.ws("Makefile"),
        "build/hello: hello.c\n\tmkdir -p build\n\tcc -O1 -o $@ $<\n\nrun: build/hello\n\t./build/hello\n",
    );
    let out = w.run().sh("echo RAN; make -s run");
    out.assert_ran("RAN");
    out.assert_ran("C-OK 42");
    assert_eq!(out.code(), 0);
    assert!(w.ws("build/hello").exists());
}

#[test]
fn node_runs_a_script() {
    if !have("node") {
        return skip("node is not installed on this host (apt-get install nodejs)");
    }
    let w = World::new("compat-node");
    write(
        &w.ws("app.js"),
        "const fs = require('fs');\nfs.writeFileSync('out.json', JSON.stringify({ok: 6*7}));\nconsole.log('NODE-OK', process.version);\n",
    );
    let out = w.run().argv(&["node", "app.js"]);
    out.assert_ran("NODE-OK");
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(fs::read_to_string(w.ws("out.json")).unwrap(), "{\"ok\":42}");
}

#[test]
fn npm_installs_a_local_dependency_and_runs_scripts_offline() {
    if !have("node") || !have("npm") {
        return skip("node/npm are not installed on this host (apt-get install nodejs npm)");
    }
    let w = World::new("compat-npm");
    write(
        &w.ws("dep/package.json"),
        "{\"name\": \"dep\", \"version\": \"1.0.0\", \"main\": \"index.js\"}\n",
    );
    write(&w.ws("dep/index.js"), "module.exports = (a, b) => a * b;\n");
    write(
        &w.ws("app/package.json"),
        "{\"name\": \"app\", \"version\": \"1.0.0\", \"private\": true,\n \"dependencies\": {\"dep\": \"file:../dep\"},\n \"scripts\": {\"build\": \"node build.js\", \"test\": \"node -e \\\"process.exit(require('dep')(6, 7) === 42 ? 0 : 1)\\\"\"}}\n",
    );
    write(
        &w.ws("app/build.js"),
        "require('fs').writeFileSync('dist.txt', 'built ' + require('dep')(6, 7));\n",
    );
    // npm's cache and logs go to the workspace (HOME is read-only in the sandbox).
    let out = w
        .run()
        .env("npm_config_cache", w.ws(".npm-cache"))
        .env("npm_config_update_notifier", "false")
        .env("npm_config_audit", "false")
        .env("npm_config_fund", "false")
        .limit(Duration::from_secs(180))
        .sh("echo RAN; cd app && npm install --offline --no-audit --no-fund && echo INSTALL-OK && npm run build && echo BUILD-OK && npm test && echo TEST-OK; echo \"npm $(npm --version)\"");
    out.assert_ran("RAN");
    for m in ["INSTALL-OK", "BUILD-OK", "TEST-OK"] {
        out.assert_ran(m);
    }
    assert_eq!(
        fs::read_to_string(w.ws("app/dist.txt")).unwrap(),
        "built 42"
    );
    assert!(w.ws("app/node_modules/dep").exists(), "{out:#?}");
    assert!(w.ws("app/package-lock.json").exists(), "{out:#?}");
}

#[test]
fn loopback_test_server_and_client_inside() {
    let w = World::new("compat-http");
    write(&w.ws("www/index.html"), "served-from-inside\n");
    let code = r#"
import http.server, threading, urllib.request, functools, socketserver
print('RAN', flush=True)
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory='www')
class Q(h.func):
    def log_message(self, *a): pass
srv = socketserver.TCPServer(('127.0.0.1', 0), functools.partial(Q, directory='www'))
t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
body = urllib.request.urlopen('http://127.0.0.1:%d/index.html' % srv.server_address[1], timeout=5).read().decode()
print('BODY', body.strip(), flush=True)
srv.shutdown()
"#;
    let out = w.run().py(code);
    out.assert_ran("RAN");
    assert!(out.has("BODY served-from-inside"), "{out:#?}");
    assert_eq!(out.code(), 0);
}

#[test]
fn tmp_persists_between_runs_but_is_not_the_hosts() {
    let w = World::new("compat-tmp");
    let name = unique("stk-tmp");
    let out = w.run().sh(&format!(
        "echo RAN; echo persisted > /tmp/{name} && echo vt > /var/tmp/{name}"
    ));
    out.assert_ran("RAN");
    assert_eq!(out.code(), 0);
    assert!(
        !PathBuf::from("/tmp").join(&name).exists(),
        "the sandbox's /tmp is the host's"
    );
    assert!(!PathBuf::from("/var/tmp").join(&name).exists());
    let out = w
        .run()
        .sh(&format!("echo RAN; cat /tmp/{name} /var/tmp/{name}"));
    out.assert_ran("persisted");
    out.assert_ran("vt");
    // Another workspace does not see it.
    let other = World::new("compat-tmp-other");
    let out = other.run().sh(&format!(
        "echo RAN; cat /tmp/{name} 2>/dev/null && echo LEAKED"
    ));
    out.assert_ran("RAN");
    out.assert_not("LEAKED");
    // `stockade clean` removes the persisted state.
    let c = w.stockade(&["clean", "--workspace", w.ws.to_str().unwrap()]);
    assert_eq!(c.code(), 0, "{c:#?}");
    let out = w.run().sh(&format!(
        "echo RAN; cat /tmp/{name} 2>/dev/null && echo STILL-THERE"
    ));
    out.assert_ran("RAN");
    out.assert_not("STILL-THERE");
}

#[test]
fn workspace_under_tmp_works() {
    let root = PathBuf::from("/tmp").join(unique("stockade-test-ws"));
    let w = World::at(root);
    write(&w.ws("in.txt"), "from-host\n");
    let out = w
        .run()
        .sh("echo RAN; cat in.txt && echo made > out.txt && echo tmpfile > /tmp/scratch && cat /tmp/scratch && pwd");
    out.assert_ran("from-host");
    out.assert_ran("tmpfile");
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(fs::read_to_string(w.ws("out.txt")).unwrap(), "made\n");
    assert!(out.stdout.contains(&w.ws.display().to_string()), "{out:#?}");
    // A sibling of the workspace under the host /tmp is copy-on-write (temp.mode = "overlay"):
    // the write succeeds inside and never reaches the host.
    let out = w.run().sh(&format!(
        "echo RAN; echo x > {}/new 2>/dev/null && echo WROTE-INSIDE",
        q(&w.outside)
    ));
    out.assert_ran("WROTE-INSIDE");
    assert!(!w.out("new").exists(), "the write reached the host's /tmp");
}
