//! Red-team regressions for the write gate and the post-run git check (issues 12 and 13): each
//! test is an attack found against the gate, run through the real binary and judged from the
//! host (git run there, a marker file outside the workspace), with a positive control (the
//! same script unsandboxed) and a marker proving the attack ran.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn git(w: &World, dir: &Path, args: &[&str]) {
    git_in(w, dir, args, false);
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

fn sandboxed(w: &World, script: &str) -> Out {
    git_sandboxed(w, &[], script)
}

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

/// Run `scripts` one run after another (sandboxed, or unsandboxed for the control) in a fresh
/// repository world prepared by `setup`, then `trigger` (host git in `dir`, relative to the
/// workspace). `{M}` in a script is the marker's path. Returns whether the marker exists after
/// the trigger, and the outputs of the runs.
fn attack(
    tag: &str,
    sandbox: bool,
    setup: &dyn Fn(&World),
    scripts: &[&str],
    dir: &str,
    trigger: &[&str],
) -> (bool, Vec<Out>) {
    let w = repo(&format!("{tag}-{}", if sandbox { "s" } else { "c" }));
    setup(&w);
    let marker = w.root.join("marker");
    let mut outs = Vec::new();
    for (i, s) in scripts.iter().enumerate() {
        let s = format!(
            "echo RAN{i}\n{}\necho DONE{i}\n",
            s.replace("{M}", marker.to_str().unwrap())
        );
        let o = if sandbox {
            sandboxed(&w, &s)
        } else {
            unsandboxed(&w, &s)
        };
        o.assert_ran(&format!("RAN{i}"));
        assert!(o.has(&format!("DONE{i}")), "run {i} did not finish: {o:#?}");
        outs.push(o);
    }
    assert!(!marker.exists(), "marker before the trigger: {outs:#?}");
    git_in(&w, &w.ws(dir), trigger, true);
    (marker.exists(), outs)
}

#[track_caller]
fn contained(
    tag: &str,
    setup: &dyn Fn(&World),
    scripts: &[&str],
    dir: &str,
    trigger: &[&str],
) -> Vec<Out> {
    let (control, _) = attack(tag, false, setup, scripts, dir, trigger);
    assert!(
        control,
        "positive control: the attack must work unsandboxed"
    );
    let (hit, outs) = attack(tag, true, setup, scripts, dir, trigger);
    assert!(!hit, "the attack worked through the sandbox: {outs:#?}");
    outs
}

/// A hostile config for an embedded bare repository: `git status` there runs `core.fsmonitor`.
const BARE_CONFIG: &str = "printf '[core]\\n\\trepositoryformatversion = 0\\n\\tbare = false\\n\\tworktree = ..\\n\\tfsmonitor = \"touch {M}; false\"\\n' > evil/config";

/// An embedded bare repository whose `HEAD` is a symbolic link (git accepts `HEAD ->
/// refs/heads/main`): the post-run check skipped it as "not a bare repository".
#[test]
fn embedded_bare_repo_with_a_symlinked_head_is_neutralised() {
    if !ready() {
        return;
    }
    let script = format!(
        "mkdir -p evil/objects evil/refs/heads && ln -s refs/heads/main evil/HEAD && {BARE_CONFIG}"
    );
    let outs = contained("rt-bare-headlink", &|_| {}, &[&script], "evil", &["status"]);
    assert!(
        outs[0].stderr.contains("git-neutralised") || outs[0].stderr.contains("neutralised"),
        "no neutralisation reported: {outs:#?}"
    );
}

/// An embedded bare repository whose `objects` and `refs` are symbolic links to directories
/// (git only checks that they can be searched): the post-run check required real directories.
#[test]
fn embedded_bare_repo_with_symlinked_objects_and_refs_is_neutralised() {
    if !ready() {
        return;
    }
    let script = format!(
        "mkdir -p evil/o evil/r/heads && ln -s o evil/objects && ln -s r evil/refs && \
         echo 'ref: refs/heads/main' > evil/HEAD && {BARE_CONFIG}"
    );
    contained("rt-bare-objlink", &|_| {}, &[&script], "evil", &["status"]);
}

/// A launch repository whose gitdir is named by a `.git` file (`git init --separate-git-dir`)
/// is recognised by the judge, when nothing below its work tree was touched, only by its shape
/// (`HEAD`, `objects/`, `refs/`). Run 1 moves `refs` away, run 2 writes a hook into the gitdir
/// that no longer looks like one, run 3 moves `refs` back: the hook runs at the user's next
/// checkout.
#[test]
fn a_separate_gitdir_cannot_be_unshaped_to_plant_a_hook() {
    if !ready() {
        return;
    }
    let setup = |w: &World| {
        git(
            w,
            &w.ws,
            &[
                "init",
                "-q",
                "-b",
                "main",
                "--separate-git-dir",
                w.ws("gd").to_str().unwrap(),
                "p/gf",
            ],
        );
        write(&w.ws("p/gf/f"), "f\n");
        git(w, &w.ws("p/gf"), &["add", "f"]);
        git(w, &w.ws("p/gf"), &["commit", "-qm", "gf"]);
    };
    let outs = contained(
        "rt-unshape",
        &setup,
        &[
            "mv gd/refs gd/r || echo REFUSED-MV",
            "printf '#!/bin/sh\\ntouch {M}\\n' > gd/hooks/post-checkout && chmod +x gd/hooks/post-checkout || echo REFUSED-HOOK",
            "mv gd/r gd/refs || echo REFUSED-BACK",
        ],
        "p/gf",
        &["checkout", "-q", "-b", "other"],
    );
    assert!(outs[0].has("REFUSED-MV"), "{outs:#?}");
}

/// Python in the sandbox and unsandboxed (the control): each prints `ok <name>` per check.
fn both(tag: &str, code: &str, limit: u64) -> (Out, Out) {
    let cw = World::new(&format!("{tag}-c"));
    let c = Command::new("python3")
        .args(["-c", code])
        .current_dir(&cw.ws)
        .output()
        .expect("python3 runs");
    let control = Out {
        code: c.status.code(),
        signal: None,
        stdout: String::from_utf8_lossy(&c.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&c.stderr).into_owned(),
        elapsed: std::time::Duration::ZERO,
    };
    let w = World::new(&format!("{tag}-s"));
    let o = w
        .run()
        .limit(std::time::Duration::from_secs(limit))
        .py(code);
    (control, o)
}

/// An open whose new descriptor does not fit in the caller's table fails with `EMFILE`, as
/// without the gate: the supervisor's `ADDFD` failed and the call was never answered (the
/// caller hung forever).
#[test]
fn an_open_with_a_full_descriptor_table_fails_with_emfile() {
    if !ready() {
        return;
    }
    let code = "import os, resource, errno\n\
                resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))\n\
                print('RAN', flush=True)\n\
                try:\n    \
                    for i in range(40):\n        \
                        os.open('f%d' % i, os.O_CREAT | os.O_WRONLY, 0o644)\n    \
                    print('no error')\n\
                except OSError as e:\n    \
                    print('ok EMFILE' if e.errno == errno.EMFILE else 'errno %d' % e.errno)\n";
    let (control, o) = both("rt-emfile", code, 30);
    assert!(
        control.stdout.contains("ok EMFILE"),
        "control: {control:#?}"
    );
    o.assert_ran("RAN");
    assert!(o.stdout.contains("ok EMFILE"), "{o:#?}");
}

/// A blocking FIFO open (no reader) interrupted by a caught signal: `EINTR` without
/// `SA_RESTART`, restarted (and then completed by a reader) with it — as without the gate. The
/// gate's killable wait kept the caller blocked until a reader came, ignoring the signal.
#[test]
fn a_blocked_fifo_open_is_interrupted_by_a_caught_signal() {
    if !ready() {
        return;
    }
    let code = "import os, signal, errno, time\n\
                os.mkfifo('fifo')\n\
                print('RAN', flush=True)\n\
                class Alarm(Exception): pass\n\
                def on(s, f): raise Alarm()\n\
                signal.signal(signal.SIGALRM, on)\n\
                signal.alarm(1)\n\
                t = time.time()\n\
                try:\n    \
                    os.open('fifo', os.O_WRONLY)\n    \
                    print('opened')\n\
                except Alarm:\n    \
                    print('ok EINTR' if time.time() - t < 5 else 'late', flush=True)\n\
                signal.signal(signal.SIGALRM, lambda s, f: None)\n\
                pid = os.fork()\n\
                if pid == 0:\n    \
                    time.sleep(1.5)\n    \
                    fd = os.open('fifo', os.O_RDONLY)\n    \
                    time.sleep(0.3)\n    \
                    os._exit(0)\n\
                signal.alarm(1)\n\
                fd = os.open('fifo', os.O_WRONLY)\n\
                print('ok restarted', flush=True)\n\
                os.waitpid(pid, 0)\n";
    let (control, o) = both("rt-eintr", code, 20);
    assert!(
        control.stdout.contains("ok EINTR") && control.stdout.contains("ok restarted"),
        "control: {control:#?}"
    );
    o.assert_ran("RAN");
    assert!(o.stdout.contains("ok EINTR"), "{o:#?}");
    assert!(o.stdout.contains("ok restarted"), "{o:#?}");
}

/// A file written and closed is at once executable (`ETXTBSY` never): build tools write a
/// program and run it immediately. The supervisor held its copy of the write descriptor until
/// after the caller was resumed, so an `execve` right after `close` failed with `ETXTBSY`
/// (68 of 300 on the test machine); the same holds a FIFO's reader open past the caller's
/// `close` (a writer then opened it without a reader).
#[test]
fn a_program_written_by_the_run_can_be_executed_at_once() {
    if !ready() {
        return;
    }
    let code = "import os, errno\n\
                print('RAN', flush=True)\n\
                bad = 0\n\
                for i in range(300):\n    \
                    p = './s%d' % i\n    \
                    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o755)\n    \
                    os.write(fd, b'#!/bin/sh\\nexit 0\\n')\n    \
                    os.close(fd)\n    \
                    try:\n        \
                        pid = os.posix_spawn(p, [p], {})\n        \
                        os.waitpid(pid, 0)\n    \
                    except OSError as e:\n        \
                        if e.errno != errno.ETXTBSY: raise\n        \
                        bad += 1\n\
                print('ETXTBSY %d' % bad)\n\
                print('ok' if bad == 0 else 'broken', flush=True)\n";
    let (control, o) = both("rt-etxtbsy", code, 60);
    assert!(
        control.stdout.contains("ETXTBSY 0"),
        "control: {control:#?}"
    );
    o.assert_ran("RAN");
    assert!(o.stdout.contains("ETXTBSY 0"), "{o:#?}");
}

/// `creat(2)` takes its mode from its second argument. The supervisor read the third (what
/// the caller left in `rdx`), so `syscall(SYS_creat, path, 0640, 06755)` created a set-user-ID
/// and set-group-ID file (the filter checks the real mode argument), and a plain `creat` got a
/// random mode.
#[test]
fn creat_uses_its_own_mode_argument_and_never_sets_set_id_bits() {
    if !ready() {
        return;
    }
    let code = "import ctypes, os\n\
                os.umask(0o022)\n\
                libc = ctypes.CDLL(None, use_errno=True)\n\
                libc.syscall.restype = ctypes.c_long\n\
                print('RAN', flush=True)\n\
                fd = libc.syscall(85, b'made', 0o640, 0o6755)\n\
                print('fd', fd, ctypes.get_errno())\n\
                print('mode %o' % (os.stat('made').st_mode & 0o7777), flush=True)\n";
    let (control, o) = both("rt-creat", code, 30);
    assert!(control.stdout.contains("mode 640"), "control: {control:#?}");
    o.assert_ran("RAN");
    assert!(o.stdout.contains("mode 640"), "{o:#?}");
}

/// `setxattr`/`lsetxattr`/`removexattr` with a relative path resolve from the working
/// directory. The supervisor took the low half of the path pointer as a directory descriptor
/// (`EBADF`, or another directory when that number was open).
#[test]
fn path_based_xattr_calls_with_a_relative_path_work() {
    if !ready() {
        return;
    }
    let code = "import os\n\
                print('RAN', flush=True)\n\
                open('f', 'w').close()\n\
                os.setxattr('f', 'user.x', b'1')\n\
                os.setxattr('f', 'user.y', b'2', follow_symlinks=False)\n\
                os.removexattr('f', 'user.x')\n\
                print('ok', sorted(os.listxattr('f')), flush=True)\n";
    let (control, o) = both("rt-xattr", code, 30);
    if !control.stdout.contains("ok ['user.y']") {
        skip(format!("user xattrs unsupported here: {control:#?}"));
        return;
    }
    o.assert_ran("RAN");
    assert!(o.stdout.contains("ok ['user.y']"), "{o:#?}");
}

/// Agent configs are refused at a repository's root, but only once the directory *is* one:
/// written first and followed by `git init` (or a prepared directory renamed to `.git`), they
/// were left at the root of a repository the run created. The post-run check, which judges
/// every repository the run created, now also puts aside the root-level protected names
/// written during the run at its root.
#[test]
fn agent_configs_written_before_git_init_are_put_aside() {
    if !ready() {
        return;
    }
    let script =
        "mkdir -p y/.vscode && echo '{}' > y/.vscode/tasks.json && echo '{}' > y/.mcp.json \
                  && git init -q y && echo INIT-OK\n\
                  mkdir -p z/.devcontainer z/g && echo '{}' > z/.devcontainer/devcontainer.json \
                  && git init -q --bare z/g/x && mv z/g/x z/.git && echo MOVE-OK\n";
    for sandbox in [false, true] {
        let w = repo(&format!("rt-preinit-{}", if sandbox { "s" } else { "c" }));
        let o = if sandbox {
            sandboxed(&w, script)
        } else {
            unsandboxed(&w, script)
        };
        o.assert_ran("INIT-OK");
        o.assert_ran("MOVE-OK");
        assert!(w.ws("y/.git").is_dir() && w.ws("z/.git").is_dir(), "{o:#?}");
        let left: Vec<&str> = [
            "y/.mcp.json",
            "y/.vscode/tasks.json",
            "z/.devcontainer/devcontainer.json",
        ]
        .into_iter()
        .filter(|p| w.ws(p).exists())
        .collect();
        if sandbox {
            assert!(
                left.is_empty(),
                "left at a new repository's root: {left:?} {o:#?}"
            );
        } else {
            assert_eq!(left.len(), 3, "positive control");
        }
    }
}

/// A bare repository assembled over two runs: run 1 leaves only `d/HEAD` (not a repository
/// yet, so the post-run check passes it), run 2 writes a hostile `d/config` and creates
/// `d/objects` and `d/refs`. The created-log did not record `objects`/`refs`, and a created
/// `config` outside a `.git` was not looked at: the repository was left for the host.
#[test]
fn a_bare_repo_assembled_over_two_runs_is_neutralised() {
    if !ready() {
        return;
    }
    let run2 = format!("{BARE_CONFIG_D} && mkdir -p d/objects d/refs/heads");
    contained(
        "rt-bare-tworuns",
        &|_| {},
        &["mkdir d && echo 'ref: refs/heads/main' > d/HEAD", &run2],
        "d",
        &["status"],
    );
}

/// [`BARE_CONFIG`] for a repository in `d`.
const BARE_CONFIG_D: &str = "printf '[core]\\n\\trepositoryformatversion = 0\\n\\tbare = false\\n\\tworktree = ..\\n\\tfsmonitor = \"touch {M}; false\"\\n' > d/config";

/// A `.git` file created during the run whose gitdir is reached through a symbolic link that
/// leaves the writable roots: here into the run's private `/tmp`, which persists on the host
/// (its overlay upper directory, named in `/proc/self/mountinfo`). The post-run check compared
/// the gitdir's lexical path with the writable roots and then could not look through the link.
#[test]
fn a_git_file_through_a_symlink_out_of_the_roots_is_put_aside() {
    if !ready() {
        return;
    }
    let script = "U=$(grep ' /tmp ' /proc/self/mountinfo | sed -n 's/.*upperdir=\\([^,]*\\),.*/\\1/p')\n\
                  [ -n \"$U\" ] || U=/tmp\n\
                  E=evil-$$\n\
                  mkdir -p /tmp/$E/objects /tmp/$E/refs && echo 'ref: refs/heads/main' > /tmp/$E/HEAD\n\
                  printf '[core]\\n\\trepositoryformatversion = 0\\n\\tfsmonitor = \"touch {M}; false\"\\n' > /tmp/$E/config\n\
                  mkdir n && ln -s \"$U/$E\" n/l && echo 'gitdir: l' > n/.git";
    contained("rt-gitfile-link", &|_| {}, &[script], "n", &["status"]);
}
