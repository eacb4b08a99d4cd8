//! Issue "hardening": distinct escape attempts against the real binary, all of which must be
//! contained. Each attack is judged from the host after stockade exited (files, listener logs,
//! process liveness); where the effect is internal to the sandbox (a remount, a namespace), the
//! attack prints `SUCCEEDED-<name>` only on success, and every script also runs a control attempt
//! that must print `SUCCEEDED-control` (proving the marker mechanism works and the command ran).
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Shell prelude: `ok NAME CMD...` prints `ATTEMPTED-NAME`, runs CMD, then prints its verdict:
/// `SUCCEEDED-NAME` (CMD succeeded: the attack worked), `failed-NAME rc=N`, or `NOTRUN-NAME` if
/// CMD was not found (exit 127: the attack never ran, which the judge counts as a failure).
const OK: &str = "echo RAN\nok() { n=$1; shift; echo \"ATTEMPTED-$n\"; \"$@\" >/dev/null 2>&1; rc=$?; if [ $rc -eq 0 ]; then echo \"SUCCEEDED-$n\"; elif [ $rc -eq 127 ]; then echo \"NOTRUN-$n\"; else echo \"failed-$n rc=$rc\"; fi; }\nok control true\n";

/// Printed as the last line of every attack script: a script that aborts early lacks it.
const END: &str = "END-OF-ATTACKS";

/// The attack names a script names literally (`ok NAME ...`, `sc('NAME', ...)`,
/// `attempt('NAME', ...)`); names built at run time (loops) are covered by the pairing check.
fn literal_names(script: &str) -> Vec<String> {
    let ok_name = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    let mut names = vec![];
    for (i, _) in script.match_indices("ok ") {
        let before = script[..i].chars().next_back();
        if !matches!(before, None | Some('\n' | ' ' | ';' | '(' | '\t')) {
            continue;
        }
        let rest = &script[i + 3..];
        let n: String = rest.chars().take_while(|c| ok_name(*c)).collect();
        if !n.is_empty() && rest[n.len()..].starts_with(' ') {
            names.push(n);
        }
    }
    for pre in ["sc('", "attempt('"] {
        for (i, _) in script.match_indices(pre) {
            let before = script[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &script[i + pre.len()..];
            if let Some(j) = rest.find('\'') {
                let n = &rest[..j];
                // Only a complete literal argument (`'name',` or `'name')`), not `'prefix-' + x`.
                let whole = rest[j + 1..].starts_with([',', ')']);
                if whole && !n.is_empty() && n.chars().all(ok_name) {
                    names.push(n.to_string());
                }
            }
        }
    }
    names.retain(|n| !is_control(n));
    names.sort();
    names.dedup();
    names
}

/// `control` and `control-*` are positive controls inside the script: they must succeed.
fn is_control(name: &str) -> bool {
    name == "control" || name.starts_with("control-")
}

/// A full shell attack script: prelude, the expected names, `body`, the end marker.
fn sh_script(body: &str) -> String {
    let expect: String = literal_names(body)
        .iter()
        .map(|n| format!("echo EXPECT-{n}\n"))
        .collect();
    format!("{OK}{expect}{body}\necho {END}\n")
}

/// Assert an attack script ran to its end and every attack in it was tried and failed:
/// * `RAN`, `SUCCEEDED-control` and the end marker are there (the script ran, the verdict
///   mechanism works, nothing aborted it);
/// * every `EXPECT-x` (a name in the script's text) has `ATTEMPTED-x` and `failed-x`;
/// * every `ATTEMPTED-x` has a verdict, and every verdict an `ATTEMPTED-x` before it;
/// * no `SUCCEEDED-x` (but the control) and no `NOTRUN-x`.
#[track_caller]
fn contained(out: &Out) {
    eprintln!("verdicts:\n{}", out.stdout);
    out.assert_ran("RAN");
    out.assert_ran("SUCCEEDED-control");
    assert!(
        out.stdout.lines().any(|l| l.trim() == END),
        "the attack script did not run to its end (no {END}): an aborted script proves nothing: {out:#?}"
    );
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    let name_of = |l: &str, pre: &str| -> Option<String> {
        l.strip_prefix(pre)
            .map(|r| r.split([' ', '\t']).next().unwrap_or("").to_string())
    };
    let mut attempted: Vec<String> = vec![];
    let mut problems: Vec<String> = vec![];
    for l in &lines {
        if let Some(n) = name_of(l, "ATTEMPTED-") {
            attempted.push(n);
        } else if let Some(n) = name_of(l, "NOTRUN-") {
            problems.push(format!(
                "{n}: its command was not found, the attack never ran"
            ));
        } else if let Some(n) = name_of(l, "SUCCEEDED-").or_else(|| name_of(l, "failed-")) {
            if !is_control(&n) && !attempted.contains(&n) {
                problems.push(format!("{n}: a verdict without ATTEMPTED-{n} before it"));
            }
            if !is_control(&n) && l.starts_with("SUCCEEDED-") {
                problems.push(format!("{n}: the attack SUCCEEDED ({l})"));
            }
        }
    }
    let verdict = |n: &str| {
        lines.iter().any(|l| {
            name_of(l, "failed-").as_deref() == Some(n)
                || name_of(l, "SUCCEEDED-").as_deref() == Some(n)
        })
    };
    for n in &attempted {
        if !verdict(n) {
            problems.push(format!(
                "{n}: ATTEMPTED but no verdict (the attempt aborted)"
            ));
        }
    }
    for l in &lines {
        if let Some(n) = name_of(l, "EXPECT-") {
            if !attempted.contains(&n) {
                problems.push(format!("{n}: expected but never ATTEMPTED"));
            }
        }
    }
    assert!(
        attempted.iter().any(|n| !is_control(n)),
        "no attack was attempted: {out:#?}"
    );
    assert!(
        problems.is_empty(),
        "attack verdicts: {problems:#?}\n{out:#?}"
    );
}

/// Run a shell attack script (with the [`OK`] prelude) in `w`.
fn attack(w: &World, body: &str) -> Out {
    w.run().sh(&sh_script(body))
}

/// Python prelude: `sc(name, nr, *args)` performs a raw syscall and prints the verdict;
/// `call(nr, *args)` performs one and raises `OSError` on failure (for use inside `attempt`);
/// `attempt(name, f)` calls `f()`: an `OSError` (or `f` returning False) is `failed-name`, any
/// other return `SUCCEEDED-name`; other exceptions abort the script (the judge sees no end marker).
const PY: &str = r#"import ctypes, os, sys, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def arg(a):
    return ctypes.c_long(a) if isinstance(a, int) else a
def sc(name, nr, *args):
    print('ATTEMPTED-' + name, flush=True)
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    e = ctypes.get_errno()
    if r >= 0:
        print('SUCCEEDED-' + name, r, flush=True)
    else:
        print('failed-' + name, os.strerror(e), flush=True)
    return r, e
def attempt(name, f):
    print('ATTEMPTED-' + name, flush=True)
    try:
        r = f()
    except OSError as e:
        print('failed-' + name, e, flush=True)
        return False
    if r is False:
        print('failed-' + name, 'refused', flush=True)
        return False
    print('SUCCEEDED-' + name, r, flush=True)
    return True
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
print('RAN', flush=True)
sc('control', 39)
"#;

/// A full Python attack script: prelude, the expected names, `body`, the end marker.
fn py_script(body: &str) -> String {
    let expect: String = literal_names(body)
        .iter()
        .map(|n| format!("print('EXPECT-{n}')\n"))
        .collect();
    format!("{PY}{expect}{body}\nprint('{END}', flush=True)\n")
}

fn pyattack(w: &World, body: &str) -> Out {
    w.run().py(&py_script(body))
}

/// A world whose user config sets `git.mode = "read-only"`: this suite checks that every `.git`
/// stays read-only as a whole; `git.mode = "commit"` (the default) has its own attacks in
/// `tests/git.rs`.
fn ro_world(tag: &str) -> World {
    let w = World::new(tag);
    write(
        &w.home.join(".config/stockade/config.toml"),
        "[git]\nmode = \"read-only\"\n",
    );
    w
}

/// A world with an `outside/victim` file and a workspace git repo; returns host snapshots.
fn victim_world(tag: &str) -> World {
    let w = ro_world(tag);
    write(&w.out("victim"), "original\n");
    fs::create_dir_all(w.out("dir")).unwrap();
    git_repo(&w.ws);
    w
}

/// Snapshot everything the metadata/write attacks could touch.
fn guarded(w: &World) -> Vec<(PathBuf, std::collections::BTreeMap<PathBuf, Snap>)> {
    [w.outside.clone(), w.ws(".git"), w.home.clone()]
        .into_iter()
        .map(|p| {
            let s = snap_tree(&p);
            (p, s)
        })
        .collect()
}

#[track_caller]
fn unchanged(before: &[(PathBuf, std::collections::BTreeMap<PathBuf, Snap>)]) {
    for (p, s) in before {
        assert_same_tree(s, &snap_tree(p));
    }
}

/// Run one shell attack against a victim world and check nothing guarded changed.
fn fs_attack(tag: &str, body: impl Fn(&World) -> String) {
    let w = victim_world(tag);
    let before = guarded(&w);
    let out = attack(&w, &body(&w));
    contained(&out);
    unchanged(&before);
}

// =============================================================================================
// Filesystem writes
// =============================================================================================

#[test]
fn fs_write_via_proc_self_cwd() {
    fs_attack("esc-cwd", |w| {
        format!(
            "cd {} && ok proc-self-cwd sh -c 'echo x > /proc/self/cwd/new' && ok proc-self-cwd-victim sh -c 'echo x > /proc/self/cwd/victim'",
            q(&w.outside)
        )
    });
}

#[test]
fn fs_write_via_proc_1_root() {
    fs_attack("esc-p1root", |w| {
        format!(
            "ok proc1-root sh -c 'echo x > /proc/1/root{o}/new'\nok proc1-cwd sh -c 'echo x > /proc/1/cwd/../outside/new2'\nok proc-self-root-victim sh -c 'echo x >> /proc/self/root{o}/victim'",
            o = w.outside.display()
        )
    });
}

#[test]
fn fs_relative_write_with_cwd_outside() {
    // Started from a directory outside every writable root: the command must not get to write
    // there with relative paths (stockade starts it in the workspace instead).
    let w = victim_world("esc-relcwd");
    let before = guarded(&w);
    let out = w.run().cwd(&w.outside).sh(&sh_script(&format!(
        "ok rel-victim-exists test -e victim\nok rel-new-outside sh -c 'echo x > new && test -e {o}/new'\nok rel-mkdir-outside sh -c 'mkdir d2 && test -d {o}/d2'\nok oldpwd sh -c 'cd \"$OLDPWD\" 2>/dev/null && echo x > new3 && test -e {o}/new3'\n",
        o = q(&w.outside)
    )));
    contained(&out);
    unchanged(&before);
}

#[test]
fn fs_dev_shm_is_not_the_hosts() {
    let w = ro_world("esc-shm");
    let name = unique("stkshm");
    let host_shm = Path::new("/dev/shm").join(&name);
    let out = attack(
        &w,
        &format!(
            "echo inside > /dev/shm/{name} && cat /dev/shm/{name} && echo SHM-WRITABLE-INSIDE\nok symlink-out sh -c 'ln -s {o} /dev/shm/l-{name} && echo x > /dev/shm/l-{name}/new'\n",
            o = w.outside.display()
        ),
    );
    out.assert_ran("SHM-WRITABLE-INSIDE");
    contained(&out);
    let existed = host_shm.exists();
    let _ = fs::remove_file(&host_shm);
    assert!(!existed, "/dev/shm/{name} leaked to the host");
    assert!(!w.out("new").exists());
}

#[test]
fn fs_o_tmpfile_then_linkat_outside() {
    let w = victim_world("esc-tmpfile");
    let before = guarded(&w);
    let out = pyattack(
        &w,
        &format!(
            r#"
AT_SYMLINK_FOLLOW = 0x400
def try_link(dirpath, dest):
    fd = os.open(dirpath, os.O_TMPFILE | os.O_WRONLY, 0o644)
    os.write(fd, b'tmpfile-escape')
    return libc.linkat(-100, ('/proc/self/fd/%d' % fd).encode(), -100, dest.encode(), AT_SYMLINK_FOLLOW) == 0
attempt('ws-to-outside', lambda: try_link('.', '{o}/linked'))
attempt('outside-dir', lambda: try_link('{o}', '{o}/linked2'))
attempt('ws-to-git', lambda: try_link('.', '.git/linked3'))
# control: linking a tmpfile into the workspace works
fd = os.open('.', os.O_TMPFILE | os.O_WRONLY, 0o644)
r = libc.linkat(-100, ('/proc/self/fd/%d' % fd).encode(), -100, b'ws-linked', AT_SYMLINK_FOLLOW)
print('LINKED-WS' if r == 0 else 'nolink', flush=True)
"#,
            o = w.outside.display()
        ),
    );
    contained(&out);
    out.assert_ran("LINKED-WS");
    assert!(w.ws("ws-linked").exists());
    unchanged(&before);
}

#[test]
fn fs_rename_over_outside_file() {
    fs_attack("esc-rename", |w| {
        format!(
            "echo evil > mine\nok mv-over mv -f mine {o}/victim\nok py-rename python3 -c 'import os; os.rename(\"mine\", \"{o}/victim\")'\nok py-replace python3 -c 'import os; os.replace(\"mine\", \"{o}/dir\")'\nok py-rename-git python3 -c 'import os; os.rename(\"mine\", \".git/config\")'",
            o = w.outside.display()
        )
    });
}

#[test]
fn fs_cp_remove_destination() {
    fs_attack("esc-cprm", |w| {
        format!(
            "echo evil > mine\nok cp-rm cp --remove-destination mine {o}/victim\nok cp-rm-git cp --remove-destination mine .git/config\nok cp-force cp -f mine {o}/victim\nok install install -m 644 mine {o}/victim",
            o = q(&w.outside)
        )
    });
}

#[test]
fn fs_write_through_symlink_to_git_and_hardlink_to_git() {
    fs_attack("esc-gitlink", |_| {
        "ok symlink-git sh -c 'ln -s .git g && echo x >> g/config'\nok hardlink-git sh -c 'ln .git/config hl && echo x >> hl'\nok symlink-hooks sh -c 'ln -s .git/hooks h && echo x > h/pre-commit'".to_string()
    });
}

// =============================================================================================
// Metadata, on a path outside AND on a protected path
// =============================================================================================

fn meta_attack(tag: &str, cmd: &str) {
    fs_attack(tag, |w| {
        let v = q(&w.out("victim"));
        let d = q(&w.out("dir"));
        format!(
            "ok outside-file {cmd} {v}\nok outside-dir {cmd} {d}\nok git-config {cmd} .git/config\nok git-dir {cmd} .git\nok git-head {cmd} .git/HEAD\n"
        )
    });
}

#[test]
fn meta_chmod() {
    meta_attack("esc-chmod", "chmod 0777");
}

#[test]
fn meta_chown() {
    meta_attack("esc-chown", "chown 65534:65534");
}

#[test]
fn meta_utime_touch_d() {
    meta_attack("esc-touch", "touch -d 2001-02-03");
}

#[test]
fn meta_truncate() {
    meta_attack("esc-trunc", "truncate -s 0");
}

#[test]
fn meta_setxattr() {
    fs_attack("esc-xattr", |w| {
        let mut s = String::new();
        for (n, p) in [
            ("outside-file", w.out("victim")),
            ("outside-dir", w.out("dir")),
            ("git-config", w.ws(".git/config")),
            ("git-dir", w.ws(".git")),
        ] {
            s.push_str(&format!(
                "ok {n} python3 -c 'import os; os.setxattr(\"{}\", \"user.evil\", b\"1\")'\n",
                p.display()
            ));
        }
        s
    });
}

#[test]
fn meta_link_into_outside_dir() {
    fs_attack("esc-link", |w| {
        format!(
            "ok link-outside ln {o}/victim {o}/hl\nok symlink-outside ln -s /etc/passwd {o}/sl\nok link-git ln .git/config .git/cfg2",
            o = q(&w.outside)
        )
    });
}

#[test]
fn meta_rename_outside_and_protected() {
    fs_attack("esc-mv", |w| {
        format!(
            "ok mv-outside mv {o}/victim {o}/renamed\nok mv-outside-dir mv {o}/dir {o}/dir2\nok mv-git-config mv .git/config .git/config2\nok mv-git-hooks mv .git/hooks .git/hooks2",
            o = q(&w.outside)
        )
    });
}

#[test]
fn meta_mkfifo_and_mknod_outside() {
    fs_attack("esc-mknod", |w| {
        format!(
            "ok mkfifo-outside mkfifo {o}/fifo\nok mknod-outside mknod {o}/null c 1 3\nok mkfifo-git mkfifo .git/fifo\nok mknod-ws-disk mknod disk b 253 0\nok mknod-ws-mem mknod mem c 1 1",
            o = q(&w.outside)
        )
    });
}

// =============================================================================================
// Protected paths
// =============================================================================================

#[test]
fn protected_git_replace_delete_and_move() {
    fs_attack("esc-gitdir", |_| {
        "ok rm-rf sh -c 'rm -rf .git && test ! -e .git'\nok replace sh -c 'mv .git .git-old && mkdir .git && echo evil > .git/config'\nok move-into-subdir sh -c 'mkdir -p sub && mv .git sub/'\nok rmdir-hooks rmdir .git/hooks\nok unlink-config rm -f .git/config\nok python-rmtree python3 -c 'import shutil; shutil.rmtree(\".git\")'".to_string()
    });
}

#[test]
fn protected_gitdir_target_edit() {
    let w = ro_world("esc-gitfile");
    git_repo(&w.ws("gd-src"));
    fs::rename(w.ws("gd-src/.git"), w.ws("store")).unwrap();
    fs::remove_dir_all(w.ws("gd-src")).unwrap();
    fs::create_dir_all(w.ws("sub")).unwrap();
    write(
        &w.ws("sub/.git"),
        &format!("gitdir: {}\n", w.ws("store").display()),
    );
    let before = snap_tree(&w.ws("store"));
    let before_f = snap(&w.ws("sub/.git"));
    let out = attack(
        &w,
        "ok gd-config sh -c 'echo \"[core] hooksPath=/tmp\" >> store/config'\nok gd-hook sh -c 'echo x > store/hooks/post-checkout'\nok gd-rename mv store store2\nok gd-head sh -c 'echo x > store/HEAD'\nok file-edit sh -c 'echo \"gitdir: /tmp\" > sub/.git'\n",
    );
    contained(&out);
    assert_same_tree(&before, &snap_tree(&w.ws("store")));
    assert_eq!(before_f, snap(&w.ws("sub/.git")));
}

#[test]
fn protected_nested_git_swapped_by_renaming_its_parent() {
    let w = ro_world("esc-ancestor");
    git_repo(&w.ws);
    git_repo(&w.ws("nested"));
    git_repo(&w.ws("gd-src"));
    fs::rename(w.ws("gd-src/.git"), w.ws("store")).unwrap();
    fs::remove_dir_all(w.ws("gd-src")).unwrap();
    fs::create_dir_all(w.ws("sub")).unwrap();
    write(&w.ws("sub/.git"), "gitdir: ../store\n");
    let before = snap_tree(&w.ws("nested/.git"));
    let before_f = snap(&w.ws("sub/.git"));
    let out = attack(
        &w,
        "ok swap-nested sh -c 'mv nested nested.old && mkdir -p nested && cp -a nested.old/.git nested/.git && printf \"#!/bin/sh\\necho pwned\\n\" > nested/.git/hooks/post-checkout'\n\
         ok swap-gitfile sh -c 'mv sub sub.old && mkdir sub && echo \"gitdir: /tmp/evil\" > sub/.git'\n",
    );
    contained(&out);
    assert_same_tree(&before, &snap_tree(&w.ws("nested/.git")));
    assert_eq!(before_f, snap(&w.ws("sub/.git")));
}

#[test]
fn protected_stockade_config_create_and_modify() {
    let w = ro_world("esc-stcfg");
    fs::create_dir_all(w.ws(".stockade")).unwrap();
    fs::create_dir_all(w.ws("other/.stockade")).unwrap();
    write(
        &w.ws("other/.stockade/config.toml"),
        "[network]\nmode = \"off\"\n",
    );
    for d in [".claude", ".codex", ".agents"] {
        write(&w.ws(&format!("{d}/settings.json")), "{}\n");
    }
    let before = snap_tree(&w.ws);
    let out = attack(
        &w,
        "ok create sh -c 'printf \"[network]\\nmode = \\\"on\\\"\\n\" > .stockade/config.toml'\n\
         ok modify-nested sh -c 'echo x >> other/.stockade/config.toml'\n\
         ok replace-dir sh -c 'mv .stockade .st-old && mkdir .stockade'\n\
         ok claude sh -c 'echo x > .claude/settings.json'\n\
         ok codex sh -c 'echo x > .codex/config.toml'\n\
         ok agents rm -f .agents/settings.json\n",
    );
    contained(&out);
    assert_same_tree(&before, &snap_tree(&w.ws));
}

#[test]
fn persisted_workspace_config_cannot_widen_the_next_run() {
    // .stockade does not exist, so the first run may create a config; the next run must not honour
    // it to open the network or widen writes (untrusted workspace).
    let w = victim_world("esc-persist");
    let l = TcpLog::open("127.0.0.1").unwrap();
    let cfg = format!(
        "[network]\nmode = \"on\"\n[filesystem]\nwritable_roots = [\"{}\"]\n",
        w.outside.display()
    );
    let out = w.run().sh(&format!(
        "echo RAN; mkdir -p .stockade && cat > .stockade/config.toml <<'EOF'\n{cfg}EOF\necho PLANTED"
    ));
    out.assert_ran("RAN");
    let before = guarded(&w);
    let out = w.run().sh(&format!(
        "echo RAN2; echo x > {o}/new; python3 -c 'import socket; socket.create_connection((\"127.0.0.1\",{p}),timeout=2)' && echo CONNECTED",
        o = q(&w.outside),
        p = l.port
    ));
    if out.has("RAN2") {
        out.assert_not("CONNECTED");
    } else {
        // Refusing to run with an untrusted widening config is fine too: it must say so.
        assert_ne!(out.code(), 0);
        assert!(out.stderr.contains("config"), "{out:#?}");
    }
    assert_eq!(l.contacts(), 0);
    unchanged(&before);
}

// =============================================================================================
// Unix sockets
// =============================================================================================

/// A host unix stream listener (nonblocking) at `path`, mode 0777.
fn host_listener(path: &Path) -> UnixListener {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let l = UnixListener::bind(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o777)).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

fn accepted(l: &UnixListener) -> usize {
    std::thread::sleep(Duration::from_millis(50));
    let mut n = 0;
    while l.accept().is_ok() {
        n += 1;
    }
    n
}

fn py_unix_connect(name: &str, addr: &str) -> String {
    format!(
        "def f():\n    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(2); s.connect({addr}); s.sendall(b'HI')\nattempt('{name}', f)\n"
    )
}

#[test]
fn unix_socket_outside_workspace_direct_symlink_and_relative() {
    let w = ro_world("esc-unix");
    let sock = w.root.join("run/x.sock");
    let l = host_listener(&sock);
    symlink(&sock, w.ws("planted.sock")).unwrap();
    symlink(w.root.join("run"), w.ws("rundir")).unwrap();
    // Control: a socket inside the workspace is reachable (so the attack code can succeed).
    let okl = host_listener(&w.ws("ok.sock"));
    let body = format!(
        "{}{}{}{}os.chdir('{run}')\n{}os.chdir('/')\n{}",
        py_unix_connect("absolute", &format!("'{}'", sock.display())),
        py_unix_connect("planted-symlink", "'planted.sock'"),
        py_unix_connect("symlinked-dir", "'rundir/x.sock'"),
        py_unix_connect("proc-root", &format!("'/proc/self/root{}'", sock.display())),
        py_unix_connect("relative-after-cd", "'x.sock'"),
        py_unix_connect("ws-control", &format!("'{}'", w.ws("ok.sock").display())),
        run = w.root.join("run").display(),
    );
    let out = pyattack(&w, &body);
    out.assert_ran("SUCCEEDED-ws-control");
    assert!(accepted(&okl) >= 1, "the control socket saw nothing");
    let wins: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("SUCCEEDED-") && !l.contains("control"))
        .collect();
    assert!(wins.is_empty(), "{wins:?} {out:#?}");
    assert_eq!(accepted(&l), 0, "the host socket was contacted: {out:#?}");
}

#[test]
fn unix_seqpacket_outside_workspace() {
    let w = ro_world("esc-seqp");
    let path = w.root.join("run/seq.sock");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Host SEQPACKET listener via python (std has none); it logs each accept to a file.
    let log = w.root.join("seq.log");
    let ready = w.root.join("seq.ready");
    let mut srv = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket,os\ns=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\ns.bind('{p}')\nos.chmod('{p}',0o777)\ns.listen(5)\nopen('{r}','w').close()\nwhile True:\n    c,_=s.accept()\n    open('{l}','a').write('contact\\n')\n",
            p = path.display(),
            r = ready.display(),
            l = log.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = pyattack(
        &w,
        &format!(
            "def f():\n    s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET); s.settimeout(2); s.connect('{p}')\nattempt('seqpacket', f)\n",
            p = path.display()
        ),
    );
    std::thread::sleep(Duration::from_millis(100));
    let _ = srv.kill();
    let _ = srv.wait();
    contained_py(&out);
    assert!(!log.exists(), "the host SEQPACKET socket was contacted");
}

/// Like [`contained`] for the Python prelude (control is `SUCCEEDED-control`).
#[track_caller]
fn contained_py(out: &Out) {
    contained(out)
}

#[test]
fn unix_dgram_sendto_host_socket_and_dgram_socketpair() {
    let w = ro_world("esc-dgram");
    let path = w.root.join("run/d.sock");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let d = UnixDatagram::bind(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    d.set_nonblocking(true).unwrap();
    let out = pyattack(
        &w,
        &format!(
            r#"
def send(typ):
    s = socket.socket(socket.AF_UNIX, typ)
    s.sendto(b'EVIL', '{p}')
attempt('dgram', lambda: send(socket.SOCK_DGRAM))
attempt('dgram-cloexec', lambda: send(socket.SOCK_DGRAM | socket.SOCK_CLOEXEC))
attempt('raw', lambda: send(socket.SOCK_RAW))
attempt('socketpair-dgram', lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM))
"#,
            p = path.display()
        ),
    );
    contained(&out);
    let mut buf = [0u8; 64];
    assert!(
        d.recv(&mut buf).is_err(),
        "a datagram reached the host socket"
    );
}

#[test]
fn abstract_unix_socket_network_off_and_on() {
    let w = ro_world("esc-abstract");
    let name = unique("stk-abs");
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let l = UnixListener::bind_addr(&addr).unwrap();
    l.set_nonblocking(true).unwrap();
    // Positive control from the host: the abstract socket is reachable.
    UnixStream::connect_addr(&addr).unwrap();
    assert_eq!(accepted(&l), 1);
    let body = py_unix_connect("abstract", &format!("'\\0{name}'"));
    for on in [false, true] {
        let r = w.run();
        let r = if on { r.net_on() } else { r };
        let out = r.py(&py_script(&body));
        contained(&out);
        assert_eq!(
            accepted(&l),
            0,
            "network on={on}: abstract socket contacted"
        );
    }
}

/// Spawn stockade with a unix socket at descriptor 7 that it did not ask to close.
fn spawn_with_fd7(w: &World, pass: bool, script: &str) -> (Out, UnixStream) {
    let (mine, theirs) = UnixStream::pair().unwrap();
    let mut r = w.run();
    if pass {
        r = r.flag("--pass-fd").flag("7");
    }
    let mut c = r.command(&["sh", "-c", script]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
    // SAFETY: between fork and exec only async-signal-safe dup2 and fcntl are called; `fd` is
    // open in the parent (and so in the child) until after spawn returns.
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2(7, 7) is a no-op that keeps close-on-exec: clear it either way.
            if libc::fcntl(7, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_guarded(c, None, Duration::from_secs(30));
    drop(theirs);
    (out, mine)
}

#[test]
fn inherited_fd_without_pass_fd_is_closed() {
    let w = ro_world("esc-fd");
    let (out, mut mine) = spawn_with_fd7(
        &w,
        false,
        "echo RAN; ls /proc/self/fd; if echo LEAKED >&7; then echo SUCCEEDED-fd7; else echo CLOSED; fi 2>/dev/null",
    );
    out.assert_ran("RAN");
    out.assert_ran("CLOSED");
    out.assert_not("SUCCEEDED");
    mine.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = String::new();
    let _ = mine.read_to_string(&mut got);
    assert!(
        got.is_empty(),
        "data came through the inherited fd: {got:?}"
    );
}

#[test]
fn inherited_fd_with_pass_fd_is_usable() {
    let w = ro_world("esc-passfd");
    let (out, mut mine) = spawn_with_fd7(&w, true, "echo RAN; echo THROUGH-FD7 >&7 && echo WROTE");
    out.assert_ran("WROTE");
    mine.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = String::new();
    let _ = mine.read_to_string(&mut got);
    assert_eq!(got, "THROUGH-FD7\n");
}

// =============================================================================================
// Network
// =============================================================================================

fn py_tcp(name: &str, ip: &str, port: u16) -> String {
    let fam = if ip.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    format!(
        "def f():\n    s=socket.socket(socket.{fam}); s.settimeout(2); s.connect(('{ip}',{port})); s.sendall(b'HI')\nattempt('{name}', f)\n"
    )
}

#[test]
fn net_ipv4_loopback_tcp_and_bind_tricks() {
    let w = ro_world("esc-tcp4");
    let l = TcpLog::open("127.0.0.1").unwrap();
    // Also via 127.0.0.2 (same host loopback net), via a name, and via a v4-mapped v6 address.
    let localhost = format!(
        "attempt('localhost', lambda: socket.create_connection(('localhost',{p}),timeout=2))\n",
        p = l.port
    );
    let body = format!(
        "{}{}{}{localhost}",
        py_tcp("v4", "127.0.0.1", l.port),
        py_tcp("v4-alias", "127.0.0.2", l.port),
        py_tcp("mapped", "::ffff:127.0.0.1", l.port),
    );
    let out = pyattack(&w, &body);
    contained(&out);
    assert_eq!(l.contacts(), 0);
    // Positive control: the same code with --network on does reach the listener.
    let out = w.run().net_on().py(&py_script(&body));
    out.assert_ran("SUCCEEDED-v4");
    assert!(l.contacts() >= 1);
}

#[test]
fn net_ipv6_loopback_tcp() {
    let w = ro_world("esc-tcp6");
    let Some(l) = TcpLog::open("::1") else {
        return skip("no usable ::1 on this host");
    };
    let out = pyattack(&w, &py_tcp("v6", "::1", l.port));
    contained(&out);
    assert_eq!(l.contacts(), 0);
}

#[test]
fn net_udp_loopback() {
    let w = ro_world("esc-udp");
    let u = UdpLog::open("127.0.0.1").unwrap();
    // The sends may "succeed" inside (onto the sandbox's own loopback); the host socket judges.
    let body = format!(
        "print('ATTEMPTED-udp', flush=True)\ntry:\n    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n    for i in range(5): s.sendto(b'X',('127.0.0.1',{p}))\n    s.connect(('127.0.0.1',{p})); s.send(b'Y')\n    print('udp-sent', flush=True)\nexcept OSError as e:\n    print('udp-refused', e, flush=True)\n",
        p = u.port
    );
    let out = pyattack(&w, &body);
    out.assert_ran("ATTEMPTED-udp");
    assert!(out.has("udp-sent") || out.has("udp-refused"), "{out:#?}");
    out.assert_ran(END);
    assert_eq!(u.received(), 0, "{out:#?}");
    // Positive control: with the network on, the same datagrams arrive.
    let out = w.run().net_on().py(&py_script(&body));
    out.assert_ran("udp-sent");
    assert!(
        u.received() >= 1,
        "control: no datagram arrived with --network on"
    );
}

/// A network namespace with a veth link to the host and a TCP listener inside that logs contacts.
struct NetNs {
    name: String,
    ip: String,
    port: u16,
    log: PathBuf,
    server: Option<std::process::Child>,
}

impl NetNs {
    fn create(w: &World) -> Result<NetNs, String> {
        let id = unique("n");
        let h: u32 = id
            .bytes()
            .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
        let name = format!("stkesc{:08x}", h);
        let (vh, vn) = (format!("sh{:08x}", h), format!("sn{:08x}", h));
        let (a, b) = (200 + (h % 50), (h >> 8) % 250);
        let ip = format!("10.{a}.{b}.2");
        run_ip(&["netns", "add", &name])?;
        let mut ns = NetNs {
            name: name.clone(),
            ip: ip.clone(),
            port: 0,
            log: w.root.join("netns.log"),
            server: None,
        };
        run_ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vn])?;
        run_ip(&["link", "set", &vn, "netns", &name])?;
        run_ip(&["addr", "add", &format!("10.{a}.{b}.1/30"), "dev", &vh])?;
        run_ip(&["link", "set", &vh, "up"])?;
        run_ip(&["-n", &name, "addr", "add", &format!("{ip}/30"), "dev", &vn])?;
        run_ip(&["-n", &name, "link", "set", &vn, "up"])?;
        run_ip(&["-n", &name, "link", "set", "lo", "up"])?;
        let portfile = w.root.join("netns.port");
        let child = Command::new("ip")
            .args(["netns", "exec", &name, "python3", "-c"])
            .arg(format!(
                "import socket\ns=socket.socket(); s.bind(('{ip}',0)); s.listen(5)\nopen('{pf}.tmp','w').write(str(s.getsockname()[1]))\nimport os; os.rename('{pf}.tmp','{pf}')\nwhile True:\n    c,_=s.accept(); open('{log}','a').write('contact\\n'); c.close()\n",
                pf = portfile.display(),
                log = ns.log.display()
            ))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        ns.server = Some(child);
        let start = Instant::now();
        while !portfile.exists() {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("netns listener did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ns.port = fs::read_to_string(&portfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Ok(ns)
    }

    fn contacts(&self) -> usize {
        std::thread::sleep(Duration::from_millis(100));
        fs::read_to_string(&self.log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn net_listener_in_test_netns_reachable_from_host_not_from_sandbox() {
    if !have("ip") {
        return skip("no `ip` tool (apt-get install iproute2)");
    }
    let w = ro_world("esc-netns");
    let ns = match NetNs::create(&w) {
        Ok(n) => n,
        Err(e) => {
            return skip(format!("cannot create a test network namespace: {e}"));
        }
    };
    // Positive control 1: the host reaches it.
    let addr: std::net::SocketAddr = format!("{}:{}", ns.ip, ns.port).parse().unwrap();
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
    assert_eq!(ns.contacts(), 1);
    // The attack, with the network off.
    let out = pyattack(&w, &py_tcp("netns", &ns.ip, ns.port));
    contained(&out);
    assert_eq!(ns.contacts(), 1, "the sandbox reached the netns listener");
    // Positive control 2: with --network on the same code does reach it (the test can fail).
    let out = w
        .run()
        .net_on()
        .py(&py_script(&py_tcp("netns", &ns.ip, ns.port)));
    out.assert_ran("SUCCEEDED-netns");
    assert_eq!(ns.contacts(), 2);
}

#[test]
fn net_raw_icmp_and_packet_sockets() {
    let w = ro_world("esc-raw");
    let body = r#"
for name, fam, typ, proto in (('raw-icmp', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                              ('raw-ip', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
                              ('raw-icmp6', socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
                              ('packet', socket.AF_PACKET, socket.SOCK_RAW, 0x0300)):
    print('ATTEMPTED-' + name, flush=True)
    try:
        s = socket.socket(fam, typ, proto)
        print('SUCCEEDED-' + name, flush=True)
    except OSError as e:
        print('failed-' + name, e, flush=True)
"#;
    for on in [false, true] {
        let r = if on { w.run().net_on() } else { w.run() };
        let out = r.py(&py_script(body));
        contained(&out);
    }
    // Positive control: the same code run on the host (as root) can open them.
    let host = Command::new("python3")
        .arg("-c")
        .arg(py_script(body))
        .output()
        .unwrap();
    let hs = String::from_utf8_lossy(&host.stdout);
    assert!(hs.contains("SUCCEEDED-raw-icmp"), "host control: {hs}");
}

// =============================================================================================
// Processes
// =============================================================================================

#[test]
fn proc_kill_host_process_by_pid() {
    let w = ro_world("esc-kill");
    let mut victim = HostProc::spawn("x");
    let pid = victim.pid();
    let out = attack(
        &w,
        &format!("ok kill-term kill -TERM {pid}\nok kill-kill kill -KILL {pid}\nok py-kill python3 -c 'import os; os.kill({pid}, 9)'\n"),
    );
    contained(&out);
    std::thread::sleep(Duration::from_millis(100));
    assert!(victim.alive(), "the host process was killed");
}

#[test]
fn proc_signal_stockades_parent() {
    let w = ro_world("esc-parent");
    let wrapper = format!(
        "{bin} run --workspace {ws} --env HOSTPARENT=$$ -- sh -c 'echo RAN; kill -TERM $HOSTPARENT; kill -KILL $HOSTPARENT; kill -TERM $PPID; kill -KILL $PPID; kill -KILL -1; echo AFTER'; echo PARENT-SURVIVED",
        bin = bin(),
        ws = q(&w.ws)
    );
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(&wrapper)
        .current_dir(&w.ws)
        .env("HOME", &w.home)
        .env("XDG_STATE_HOME", &w.state);
    let out = run_guarded(c, None, Duration::from_secs(30));
    out.assert_ran("RAN");
    out.assert_ran("PARENT-SURVIVED");
}

#[test]
fn proc_ptrace_host_pid_and_sandbox_init() {
    let w = ro_world("esc-ptrace");
    let mut victim = HostProc::spawn("x");
    let pid = victim.pid();
    if !have("strace") {
        return skip("no strace (apt-get install strace)");
    }
    let strace = format!("ok strace-host timeout 3 strace -p {pid} -e trace=none\nok strace-init timeout 3 strace -p 1 -e trace=none\n");
    let out = attack(
        &w,
        &format!(
            "{strace}ok ptrace-host python3 -c 'import ctypes,sys; l=ctypes.CDLL(None); sys.exit(0 if l.ptrace(16,{pid},0,0)==0 else 1)'\nok ptrace-init python3 -c 'import ctypes,sys; l=ctypes.CDLL(None); sys.exit(0 if l.ptrace(16,1,0,0)==0 else 1)'\nok init-mem sh -c 'head -c 1 /proc/1/mem'\n"
        ),
    );
    contained(&out);
    assert!(victim.alive());
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("TracerPid:\t0"),
        "host process is traced: {status}"
    );
}

#[test]
fn proc_read_host_environ_and_cmdline() {
    let w = ro_world("esc-environ");
    let secret = unique("hostsecret");
    let marker = unique("hostcmdline");
    let mut child = Command::new("sh")
        .args(["-c", "sleep 300; :", &marker])
        .env("HOSTPROC_SECRET", &secret)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Control: the host can read both (once the child has exec'd).
    let start = Instant::now();
    while !fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .contains(&marker)
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .contains(&marker));
    let out = attack(
        &w,
        &format!(
            "ok environ cat /proc/{pid}/environ\nok cmdline cat /proc/{pid}/cmdline\ncat /proc/{pid}/environ /proc/{pid}/cmdline /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'\n"
        ),
    );
    let _ = child.kill();
    let _ = child.wait();
    contained(&out);
    assert!(!out.stdout.contains(&secret), "host environ leaked");
    assert!(!out.stdout.contains(&marker), "host cmdline leaked");
}

#[test]
fn proc_daemonized_orphans_die_with_the_command() {
    let w = ro_world("esc-orphan");
    let m = unique("stkorph");
    let out = w.run().py(&format!(
        "import os, time\nprint('RAN', flush=True)\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execvp('sh', ['sh', '-c', 'sleep 300; : ' + '{m}' + '-daemon'])\n    os._exit(0)\ntime.sleep(0.3)\nprint('SPAWNED', flush=True)\n"
    ));
    out.assert_ran("SPAWNED");
    let left = wait_gone(&format!("{m}-daemon"), Duration::from_secs(3));
    kill_matching(&m);
    assert!(left.is_empty(), "daemon outlived the sandbox: {left:?}");
}

#[test]
fn proc_unshare_user_and_mount_namespaces() {
    let w = ro_world("esc-unshare");
    let before = snap_tree(&w.outside);
    let out = attack(
        &w,
        &format!(
            "ok unshare-r unshare -r true\nok unshare-m unshare -m sh -c 'mount -o remount,rw / && echo x > {o}/new'\nok unshare-U-m unshare -Urm sh -c 'mount -t tmpfs t /mnt'\nok unshare-n unshare -n true\nok unshare-p unshare -pf true\n",
            o = q(&w.outside)
        ),
    );
    contained(&out);
    assert_same_tree(&before, &snap_tree(&w.outside));
    // Control: unshare -r works on the host, so the attack could have succeeded.
    let ok = Command::new("unshare")
        .args(["-r", "true"])
        .status()
        .unwrap();
    assert!(ok.success(), "host control: unshare -r failed");
}

#[test]
fn proc_nsenter_host_namespaces() {
    let w = ro_world("esc-nsenter");
    let victim = HostProc::spawn("x");
    let pid = victim.pid();
    let out = attack(
        &w,
        &format!("ok nsenter-host nsenter -t {pid} -m -u -n true\nok nsenter-init nsenter -t 1 -m true\nok nsenter-proc-ns nsenter --mount=/proc/1/ns/mnt true\n"),
    );
    contained(&out);
}

#[test]
fn proc_mount_remount_bind_chroot_pivot_root() {
    let w = victim_world("esc-mount");
    let before = guarded(&w);
    fs::create_dir_all(w.ws("mnt")).unwrap();
    let o = q(&w.outside);
    let out = attack(
        &w,
        &format!(
            "ok remount-root sh -c 'mount -o remount,rw / && echo x > {o}/new'\n\
             ok remount-git sh -c 'mount -o remount,rw .git && echo x > .git/config'\n\
             ok bind sh -c 'mount --bind {o} mnt && echo x > mnt/new'\n\
             ok tmpfs-over-git mount -t tmpfs none .git\n\
             ok umount-git umount -l .git\n\
             ok chroot chroot / true\n\
             ok pivot-root pivot_root . mnt\n"
        ),
    );
    contained(&out);
    unchanged(&before);
}

fn host_kernel_knob(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

#[test]
fn proc_sys_sysrq_and_sys_writes() {
    let w = ro_world("esc-procsys");
    let burst = "/proc/sys/kernel/printk_ratelimit_burst";
    let time_knob = "/sys/module/printk/parameters/time";
    let b0 = host_kernel_knob(burst);
    let t0 = host_kernel_knob(time_knob);
    let nb = b0
        .as_deref()
        .and_then(|b| b.parse::<u64>().ok())
        .map(|b| (b + 1).to_string())
        .unwrap_or_else(|| "11".into());
    let nt = if t0.as_deref() == Some("Y") { "N" } else { "Y" };
    let out = attack(
        &w,
        &format!(
            "ok proc-sys sh -c 'echo {nb} > {burst}'\n\
             ok proc-sys-hostname sh -c 'echo evil > /proc/sys/kernel/hostname'\n\
             ok sysrq sh -c 'echo h > /proc/sysrq-trigger'\n\
             ok sys-module sh -c 'echo {nt} > {time_knob}'\n\
             ok sys-uevent sh -c 'echo x > /sys/kernel/uevent_helper'\n"
        ),
    );
    let b1 = host_kernel_knob(burst);
    let t1 = host_kernel_knob(time_knob);
    // Restore anything that changed before asserting.
    if b1 != b0 {
        if let Some(b) = &b0 {
            let _ = fs::write(burst, b);
        }
    }
    if t1 != t0 {
        if let Some(t) = &t0 {
            let _ = fs::write(time_knob, t);
        }
    }
    contained(&out);
    assert_eq!(b0, b1, "{burst} changed");
    assert_eq!(t0, t1, "{time_knob} changed");
}

// =============================================================================================
// Secrets
// =============================================================================================

#[test]
fn secrets_env_vars_are_removed() {
    let w = ro_world("esc-env");
    let vals = [
        ("MY_API_KEY", unique("apikey")),
        ("GITHUB_TOKEN", unique("ghtoken")),
        ("DB_PASSWORD", unique("dbpass")),
        ("AWS_SECRET_ACCESS_KEY", unique("awssecret")),
        ("SOME_CREDENTIALS_FILE", unique("cred")),
        ("lower_api_key", unique("lowerkey")),
    ];
    let mut r = w.run().env("PLAIN_VISIBLE", "plain-value-ok");
    for (k, v) in &vals {
        r = r.env(k, v);
    }
    let out = r.sh("echo RAN; env; cat /proc/self/environ /proc/1/environ 2>/dev/null | tr '\\0' '\\n'; for p in /proc/[0-9]*; do cat $p/environ 2>/dev/null | tr '\\0' '\\n'; done");
    out.assert_ran("RAN");
    // Control: ordinary variables are inherited.
    out.assert_ran("PLAIN_VISIBLE=plain-value-ok");
    for (k, v) in &vals {
        assert!(
            !out.stdout.contains(v.as_str()),
            "{k} leaked into the sandbox"
        );
    }
}

fn secret_file_test(tag: &str, rel: &str) {
    let w = ro_world(tag);
    let secret = unique("SECRETCONTENT");
    write(&w.home.join(rel), &format!("{secret}\n"));
    write(&w.home.join("notsecret.txt"), "public-ok\n");
    symlink(w.home.join(rel), w.ws("planted-link")).unwrap();
    let f = w.home.join(rel);
    let out = w.run().sh(&format!(
        "echo RAN; cat ~/notsecret.txt; cat {f} 2>&1; cat ~/{rel} 2>&1; cat planted-link 2>&1; cat /proc/self/root{fr} 2>&1; cp {f} copy 2>&1; cat copy 2>&1; ls -la $(dirname {f}) 2>&1; grep -r {s} ~ 2>/dev/null; echo END",
        f = q(&f),
        fr = f.display(),
        s = &secret[..12],
    ));
    out.assert_ran("RAN");
    out.assert_ran("public-ok");
    out.assert_ran("END");
    assert!(
        !out.stdout.contains(&secret),
        "{rel} was readable: {out:#?}"
    );
    assert!(!w.ws("copy").exists() || !fs::read_to_string(w.ws("copy")).unwrap().contains(&secret));
}

#[test]
fn secrets_ssh_private_key_unreadable() {
    secret_file_test("esc-ssh", ".ssh/id_rsa");
}

#[test]
fn secrets_aws_credentials_unreadable() {
    secret_file_test("esc-aws", ".aws/credentials");
}

#[test]
fn secrets_netrc_unreadable() {
    secret_file_test("esc-netrc", ".netrc");
}

#[test]
fn secrets_other_defaults_unreadable() {
    for rel in [
        ".git-credentials",
        ".docker/config.json",
        ".kube/config",
        ".cargo/credentials.toml",
    ] {
        secret_file_test("esc-more", rel);
    }
}

// =============================================================================================
// Raw devices
// =============================================================================================

#[test]
fn raw_disk_and_kernel_memory_reads() {
    let w = ro_world("esc-dev");
    let out = attack(
        &w,
        "for d in /dev/vda /dev/sda /dev/nvme0n1 /dev/mem /dev/kmem /dev/port /dev/kmsg; do ok read-$(basename $d) sh -c \"test \\$(head -c 16 $d 2>/dev/null | wc -c) -gt 0\"; done\nok mknod-read sh -c 'mknod vda b 253 0 && test $(head -c 16 vda | wc -c) -gt 0'\nok dev-listing sh -c 'ls /dev | grep -E \"^(vd|sd|nvme|mem|kmsg)\"'\nok control-dev-zero sh -c 'test $(head -c 16 /dev/zero | wc -c) -eq 16' \n",
    );
    contained(&out);
    out.assert_ran("SUCCEEDED-control-dev-zero");
}

// =============================================================================================
// seccomp bypasses
// =============================================================================================

#[test]
fn seccomp_io_uring_setup() {
    let w = ro_world("esc-iouring");
    let out = pyattack(
        &w,
        "p = ctypes.create_string_buffer(120)\nsc('io_uring_setup', 425, 8, ctypes.addressof(p))\nsc('io_uring_enter', 426, 0, 0, 0, 0, 0, 0)\nsc('io_uring_register', 427, 0, 0, 0, 0)\n",
    );
    contained(&out);
}

#[test]
fn seccomp_keyctl_and_add_key() {
    let w = ro_world("esc-keyctl");
    let out = pyattack(
        &w,
        "sc('keyctl-join', 250, 1, 0)\nsc('keyctl-get-id', 250, 0, -3, 0)\nsc('add_key', 248, ctypes.c_char_p(b'user'), ctypes.c_char_p(b'stk'), ctypes.c_char_p(b'data'), 4, -2)\nsc('request_key', 249, ctypes.c_char_p(b'user'), ctypes.c_char_p(b'stk'), 0, 0)\n",
    );
    contained(&out);
}

#[test]
fn seccomp_bpf() {
    let w = ro_world("esc-bpf");
    let out = pyattack(
        &w,
        "import struct\nattr = ctypes.create_string_buffer(struct.pack('IIII', 2, 4, 4, 1) + bytes(112))\nsc('bpf-map-create', 321, 0, ctypes.addressof(attr), 128)\n",
    );
    contained(&out);
}

#[test]
fn seccomp_perf_event_open() {
    let w = ro_world("esc-perf");
    let out = pyattack(
        &w,
        "import struct\nattr = ctypes.create_string_buffer(struct.pack('IIQ', 1, 128, 0) + bytes(112))\nsc('perf-self', 298, ctypes.addressof(attr), 0, -1, -1, 0)\nsc('perf-any', 298, ctypes.addressof(attr), -1, 0, -1, 0)\n",
    );
    contained(&out);
}

#[test]
fn seccomp_userfaultfd() {
    let w = ro_world("esc-uffd");
    let out = pyattack(
        &w,
        "sc('userfaultfd-user', 323, 1)\nsc('userfaultfd', 323, 0)\nfd = os.open('/dev/userfaultfd', os.O_RDWR) if os.path.exists('/dev/userfaultfd') else -1\nprint('ATTEMPTED-dev-uffd')\nprint('SUCCEEDED-dev-uffd' if fd >= 0 else 'failed-dev-uffd')\n",
    );
    contained(&out);
}

#[test]
fn seccomp_tiocsti_on_the_callers_tty() {
    if !have("script") {
        return skip("no `script` to give stockade a terminal (apt-get install bsdutils)");
    }
    let w = ro_world("esc-tiocsti");
    let inj = unique("INJECTED");
    let code = format!(
        "import fcntl, termios, os\nprint('RAN', flush=True)\nprint('TTY' if os.isatty(0) else 'NOTTY', flush=True)\nfor fd in (0, 1, 2):\n    try:\n        for ch in 'echo {inj}\\n':\n            fcntl.ioctl(fd, termios.TIOCSTI, ch.encode())\n        print('SUCCEEDED-tiocsti', fd, flush=True)\n    except OSError as e:\n        print('failed-tiocsti', fd, e, flush=True)\nimport ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.ioctl(0, ctypes.c_ulong(termios.TIOCSTI | (1 << 32)), ctypes.c_char_p(b'x'))\nprint('SUCCEEDED-tiocsti-high' if r == 0 else 'failed-tiocsti-high %d' % ctypes.get_errno(), flush=True)\ntry:\n    f = os.open('/dev/tty', os.O_RDWR)\n    fcntl.ioctl(f, termios.TIOCSTI, b'x')\n    print('SUCCEEDED-devtty', flush=True)\nexcept OSError as e:\n    print('failed-devtty', e, flush=True)\nprint('{END}', flush=True)\n"
    );
    let pyfile = w.ws("tiocsti.py");
    write(&pyfile, &code);
    // `script` gives stockade a pty as its controlling terminal; after the command, the shell
    // started by script reads whatever was injected and would run `echo INJECTED...`.
    let inner = format!(
        "{bin} run --workspace {ws} -- python3 {py}; read -t 1 line; echo \"READ:$line\"",
        bin = bin(),
        ws = q(&w.ws),
        py = q(&pyfile)
    );
    let mut c = Command::new("script");
    c.args(["-qec", &inner, "/dev/null"])
        .current_dir(&w.ws)
        .env("HOME", &w.home)
        .env("XDG_STATE_HOME", &w.state);
    let out = run_guarded(c, Some(b""), Duration::from_secs(30));
    // Control: the same probe without the sandbox, under the same `script` setup.
    let mut hc = Command::new("script");
    hc.args([
        "-qec",
        &format!(
            "python3 {}; read -t 1 line; echo \"READ:$line\"",
            q(&pyfile)
        ),
        "/dev/null",
    ])
    .current_dir(&w.ws);
    let hout = run_guarded(hc, Some(b""), Duration::from_secs(30));
    // The control must show the injection working on the host: the probe's ioctl succeeded and
    // the shell after it read the injected line. With `dev.tty.legacy_tiocsti=0` the kernel
    // refuses TIOCSTI to every process without CAP_SYS_ADMIN, the sandboxed one included, so the
    // test could not tell the filter from the sysctl: that is a skip (a failure in CI), never a
    // pass. (Changing the sysctl here would weaken the whole host while the suite runs.)
    let legacy = host_kernel_knob("/proc/sys/dev/tty/legacy_tiocsti");
    if legacy.as_deref() == Some("0") {
        return skip(
            "dev.tty.legacy_tiocsti=0: the kernel itself refuses TIOCSTI, so this test cannot \
             show that the sandbox's filter stops it; run it with `sysctl dev.tty.legacy_tiocsti=1`",
        );
    }
    assert!(
        hout.has("SUCCEEDED-tiocsti 0") && hout.stdout.contains(&format!("echo {inj}")),
        "host control: TIOCSTI did not inject into the host terminal (legacy_tiocsti={legacy:?}), \
         so the attack proves nothing: {hout:#?}"
    );
    out.assert_ran("RAN");
    assert!(
        out.stdout.lines().any(|l| l.trim() == "TTY"),
        "the command did not get the terminal: {out:#?}"
    );
    // Every probe ran to its verdict: fds 0-2, the high-bits request, /dev/tty, then the end.
    for m in [
        "failed-tiocsti 0",
        "failed-tiocsti 1",
        "failed-tiocsti 2",
        "failed-devtty",
        END,
    ] {
        assert!(out.has(m), "no {m:?}: {out:#?}");
    }
    // The kernel reads only the low 32 bits of the request: high bits must not get it past the
    // filter either.
    assert!(out.has("failed-tiocsti-high"), "{out:#?}");
    assert!(!out.has("SUCCEEDED-"), "TIOCSTI worked: {out:#?}");
    // The terminal echoes injected input (that is how the host control shows it arrived): the
    // injected text must not reach the terminal at all.
    assert!(!out.stdout.contains(&inj), "{out:#?}");
}

#[test]
fn seccomp_i386_int80_is_killed() {
    if !have("cc") {
        return skip("no C compiler for the int 0x80 probe (apt-get install gcc)");
    }
    let w = ro_world("esc-i386");
    write(
        &w.ws("int80.c"),
        "#include <stdio.h>\nint main(void){ long r; printf(\"BEFORE\\n\"); fflush(stdout);\n__asm__ volatile(\"int $0x80\" : \"=a\"(r) : \"a\"(20L) : \"memory\");\nprintf(\"AFTER %ld\\n\", r); fflush(stdout); return 0; }\n",
    );
    host(&w.ws, &["cc", "-O0", "-o", "int80", "int80.c"]);
    // Control: on the host the i386 getpid succeeds (if the kernel has IA32 emulation).
    let h = Command::new(w.ws("int80")).output().unwrap();
    let host_ok = String::from_utf8_lossy(&h.stdout).contains("AFTER");
    let out = w.run().argv(&["./int80"]);
    out.assert_ran("BEFORE");
    out.assert_not("AFTER");
    if !host_ok {
        // Without IA32 emulation the probe cannot succeed anywhere: the filter is untested.
        return skip("the host kernel has no i386 emulation (CONFIG_IA32_EMULATION): no control");
    }
    assert_eq!(out.code(), 128 + libc::SIGSYS, "{out:#?}");
}

#[test]
fn seccomp_x32_syscall_bit_is_killed() {
    let w = ro_world("esc-x32");
    let out = pyattack(
        &w,
        "print('BEFORE-X32', flush=True)\nr = libc.syscall(ctypes.c_long(0x40000000 | 39))\nprint('AFTER-X32', r, flush=True)\n",
    );
    out.assert_ran("BEFORE-X32");
    out.assert_not("AFTER-X32");
    assert_eq!(out.code(), 128 + libc::SIGSYS, "{out:#?}");
}

#[test]
fn seccomp_clone_newuser_and_unshare_syscalls() {
    let w = ro_world("esc-clone");
    let out = pyattack(
        &w,
        r#"
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x00020000, 0x40000000, 17
for name, flags in (('clone-newuser', CLONE_NEWUSER), ('clone-newns', CLONE_NEWNS), ('clone-newnet', CLONE_NEWNET), ('clone-newuser-newns', CLONE_NEWUSER | CLONE_NEWNS)):
    print('ATTEMPTED-' + name, flush=True)
    r = libc.syscall(ctypes.c_long(56), ctypes.c_long(flags | SIGCHLD), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
        print('SUCCEEDED-' + name, flush=True)
    else:
        print('failed-' + name, os.strerror(ctypes.get_errno()), flush=True)
sc('unshare-newuser', 272, CLONE_NEWUSER)
sc('unshare-newns', 272, CLONE_NEWNS)
sc('setns', 308, os.open('/proc/self/ns/user', os.O_RDONLY), 0)
"#,
    );
    contained(&out);
}

#[test]
fn seccomp_clone3_returns_enosys() {
    let w = ro_world("esc-clone3");
    let out = pyattack(
        &w,
        "import struct\nargs = ctypes.create_string_buffer(struct.pack('QQQQQQQQ', 0x10000000, 0, 0, 0, 17, 0, 0, 0))\nr, e = sc('clone3-newuser', 435, ctypes.addressof(args), 64)\nif r == 0:\n    os._exit(0)\nprint('ERRNO', e, flush=True)\nargs2 = ctypes.create_string_buffer(struct.pack('QQQQQQQQ', 0, 0, 0, 0, 17, 0, 0, 0))\nr, e = sc('clone3-plain', 435, ctypes.addressof(args2), 64)\nif r == 0:\n    os._exit(0)\nprint('ERRNO2', e, flush=True)\n",
    );
    contained(&out);
    assert!(out.has(&format!("ERRNO {}", libc::ENOSYS)), "{out:#?}");
    assert!(out.has(&format!("ERRNO2 {}", libc::ENOSYS)), "{out:#?}");
}

#[test]
fn seccomp_pidfd_getfd_and_process_vm_on_init() {
    let w = ro_world("esc-pidfd");
    let out = pyattack(
        &w,
        "pfd, e = sc('pidfd_open-init', 434, 1, 0)\nif pfd >= 0:\n    for fd in range(3, 12):\n        r, e = sc('pidfd_getfd-%d' % fd, 438, pfd, fd, 0)\nbuf = ctypes.create_string_buffer(8)\nlocal = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)\nremote = (ctypes.c_void_p * 2)(0x400000, 8)\nsc('process_vm_readv-init', 310, 1, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)\nsc('process_vm_writev-init', 311, 1, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)\n",
    );
    // pidfd_open itself may succeed (it grants nothing); every use of it must fail.
    out.assert_ran("RAN");
    out.assert_ran("SUCCEEDED-control");
    let wins: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            l.starts_with("SUCCEEDED-") && !l.contains("control") && !l.contains("pidfd_open")
        })
        .collect();
    assert!(wins.is_empty(), "{wins:?} {out:#?}");
}

// =============================================================================================
// Later findings
// =============================================================================================

#[test]
fn net_vsock_is_outside_the_network_namespace() {
    let probe = Command::new("python3")
        .arg("-c")
        .arg("import socket; socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)")
        .output()
        .unwrap();
    if !probe.status.success() {
        return skip("this host cannot create AF_VSOCK sockets");
    }
    let w = ro_world("esc-vsock");
    let port = 20000 + (std::process::id() % 20000);
    let bind_py = format!(
        "import socket, time\ns = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\ntry:\n    s.bind((socket.VMADDR_CID_ANY, {port})); s.listen(); print('BOUND', flush=True)\nexcept OSError as e:\n    print('NOBIND', e, flush=True)\n"
    );
    // Positive control: a second host socket on the same port collides (detection works).
    let host_bind = |hold: bool| {
        let mut c = Command::new("python3");
        c.arg("-c").arg(format!(
            "{bind_py}{}",
            if hold { "time.sleep(3)\n" } else { "" }
        ));
        c
    };
    let mut holder = host_bind(true).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let second = host_bind(false).output().unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("NOBIND"),
        "control: vsock ports do not collide on this host"
    );
    // The attack: the sandbox (network off) binds the port and holds it; the host tries too.
    let mut c = w.run().command(&[
        "python3",
        "-c",
        &format!("print('RAN', flush=True)\n{bind_py}time.sleep(3)\n"),
    ]);
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let start = Instant::now();
    let mut child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let host_try = host_bind(false).output().unwrap();
    let out = wait_child(&mut child, None, Duration::from_secs(30), start);
    out.assert_ran("RAN");
    assert!(
        String::from_utf8_lossy(&host_try.stdout).contains("BOUND"),
        "the sandbox holds a vsock port of the host's vsock space: {out:#?}"
    );
    out.assert_not("BOUND");
}

#[test]
fn protected_git_symlink_entry_cannot_be_replaced() {
    let w = ro_world("esc-gitsym");
    git_repo(&w.ws("src"));
    fs::rename(w.ws("src/.git"), w.ws("realgit")).unwrap();
    symlink("realgit", w.ws(".git")).unwrap();
    let before_link = snap(&w.ws(".git"));
    let before_target = snap_tree(&w.ws("realgit"));
    let out = attack(
        &w,
        "ok target-write sh -c 'echo x >> realgit/config'\n\
         ok replace-link sh -c 'rm .git && mkdir -p .git/hooks && cp -a realgit/. .git/ && printf \"#!/bin/sh\\necho pwned\\n\" > .git/hooks/post-checkout'\n",
    );
    contained(&out);
    assert_same_tree(&before_target, &snap_tree(&w.ws("realgit")));
    assert_eq!(before_link, snap(&w.ws(".git")));
}

#[test]
fn secrets_behind_a_symlinked_dir_stay_unreadable() {
    let w = ro_world("esc-secsym");
    let secret = unique("SYMSECRET");
    write(
        &w.home.join("dotfiles/ssh/id_ed25519"),
        &format!("{secret}\n"),
    );
    symlink("dotfiles/ssh", w.home.join(".ssh")).unwrap();
    let out = w.run().sh(
        "echo RAN; cat ~/.ssh/id_ed25519 ~/dotfiles/ssh/id_ed25519 2>&1; tar cf - -C ~ dotfiles 2>/dev/null | strings | grep -i symsecret; echo END",
    );
    out.assert_ran("END");
    assert!(!out.stdout.contains(&secret), "{out:#?}");
}

#[test]
fn fs_reopen_read_only_fd_for_writing_via_proc() {
    fs_attack("esc-reopen", |w| {
        format!(
            "ok reopen-git sh -c 'exec 4<.git/config; echo x >> /proc/self/fd/4'\nok reopen-outside sh -c 'exec 4<{o}/victim; echo x >> /proc/self/fd/4'\nok reopen-dir-fd sh -c 'cd {o} && exec 5<. && echo x > /proc/self/fd/5/new'",
            o = q(&w.outside)
        )
    });
}

#[test]
fn unix_socket_outside_workspace_with_network_on() {
    let w = ro_world("esc-unix-on");
    let sock = w.root.join("run/on.sock");
    let l = host_listener(&sock);
    let out = w.run().net_on().py(&py_script(&format!(
        "{}{}",
        py_unix_connect("absolute-net-on", &format!("'{}'", sock.display())),
        "import os\nos.symlink('".to_string()
            + &sock.display().to_string()
            + "', 'own.sock')\n"
            + &py_unix_connect("own-symlink-net-on", "'own.sock'")
    )));
    contained(&out);
    assert_eq!(accepted(&l), 0, "{out:#?}");
}

fn mknod(path: &Path, kind: u32, major: u32, minor: u32) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path; mknod only reads it.
    unsafe { libc::mknod(c.as_ptr(), kind | 0o666, libc::makedev(major, minor)) == 0 }
}

#[test]
fn raw_planted_device_nodes_outside_and_in_workspace() {
    // Device nodes that exist on the host filesystem (e.g. in a chroot or rootfs a developer keeps
    // in the project) must not become a way around the private /dev.
    let w = ro_world("esc-devnode");
    let mut nodes = vec![];
    if let Ok(m) = fs::metadata("/dev/vda") {
        use std::os::unix::fs::MetadataExt;
        let rdev = m.rdev();
        let (ma, mi) = (libc::major(rdev), libc::minor(rdev));
        for p in [w.out("vda"), w.ws("rootfs-vda")] {
            if mknod(&p, libc::S_IFBLK, ma, mi) {
                nodes.push(p);
            }
        }
    }
    for p in [w.out("kmsg"), w.ws("rootfs-kmsg")] {
        if mknod(&p, libc::S_IFCHR, 1, 11) {
            nodes.push(p);
        }
    }
    // A harmless device every host can read (proves device access itself, i.e. missing nodev).
    for p in [w.out("urandom"), w.ws("rootfs-urandom")] {
        if mknod(&p, libc::S_IFCHR, 1, 9) {
            nodes.push(p);
        }
    }
    if nodes.is_empty() {
        return skip("cannot create device nodes on this host");
    }
    // Control: keep only the nodes the host itself can read (this host may run in a container
    // whose device cgroup refuses some of them).
    nodes.retain(|n| {
        let mut b = [0u8; 16];
        let ok = fs::File::open(n)
            .and_then(|mut f| f.read(&mut b))
            .map(|k| k > 0)
            .unwrap_or(false);
        if !ok {
            eprintln!(
                "note: the host cannot read {} either; not used",
                n.display()
            );
        }
        ok
    });
    if nodes.is_empty() {
        return skip("the host cannot read any planted device node (device cgroup)");
    }
    let mut s = String::new();
    for n in &nodes {
        s.push_str(&format!(
            "ok read-{name} sh -c 'test $(head -c 16 {p} 2>/dev/null | wc -c) -gt 0'\nok write-{name} sh -c 'printf \"\" >> {p}'\n",
            name = n.file_name().unwrap().to_string_lossy(),
            p = q(n)
        ));
    }
    let out = attack(&w, &s);
    contained(&out);
}

#[test]
fn proc_init_descriptors_cannot_be_stolen() {
    // init holds the seccomp listener: whoever gets it approves its own connects.
    let w = ro_world("esc-initfd");
    let mut s = String::new();
    for fd in 0..16 {
        s.push_str(&format!(
            "ok init-fd-{fd} sh -c 'exec 9</proc/1/fd/{fd}'\nok init-fd-readlink-{fd} readlink /proc/1/fd/{fd}\n"
        ));
    }
    s.push_str("ok init-fdinfo cat /proc/1/fdinfo/3\nok init-environ sh -c 'test -s /proc/1/environ && cat /proc/1/environ'\nok init-root ls /proc/1/root/\n");
    let out = attack(&w, &s);
    contained(&out);
}

#[test]
fn meta_file_capabilities_cannot_be_set() {
    fs_attack("esc-fcap", |_| {
        "cp /bin/true t\nok fcap-ws python3 -c 'import os; os.setxattr(\"t\", \"security.capability\", bytes([1,0,0,2]) + bytes(16))'\nok trusted-xattr python3 -c 'import os; os.setxattr(\"t\", \"trusted.evil\", b\"1\")'\nok fcap-git python3 -c 'import os; os.setxattr(\".git/config\", \"security.capability\", bytes([1,0,0,2]) + bytes(16))'\n".to_string()
    });
}

#[test]
fn meta_setuid_files_do_not_leave_the_sandbox() {
    let w = ro_world("esc-suid");
    let out = attack(
        &w,
        "cp /bin/true su && cp /bin/true sg && cp /bin/true /tmp/tsu\nok setuid chmod 4755 su\nok setgid chmod 2755 sg\nok setuid-tmp chmod 4755 /tmp/tsu\nok setuid-py python3 -c 'import os; os.chmod(\"su\", 0o4755)'\nok setgid-dir mkdir -m 2775 sgdir\nok setgid-dir-py python3 -c 'import os; os.mkdir(\"sgdir2\", 0o2775)'\n",
    );
    let mut found = vec![];
    for p in snap_tree(&w.root).keys() {
        if let Ok(m) = fs::symlink_metadata(p) {
            if (m.is_file() || m.is_dir()) && m.permissions().mode() & 0o6000 != 0 {
                found.push(p.clone());
            }
        }
    }
    contained(&out);
    assert!(found.is_empty(), "set-id files on the host: {found:?}");
}

#[test]
fn untrusted_workspace_config_cannot_weaken_protections() {
    // A command could leave any of these in `.stockade/config.toml` for the next run (or a cloned
    // repository could ship them): none may expose secrets, .git, or filtered variables.
    let w = ro_world("esc-cfgweak");
    git_repo(&w.ws);
    let secret = unique("CFGSECRET");
    let token = unique("cfgtoken");
    write(&w.home.join(".ssh/id_rsa"), &format!("{secret}\n"));
    let configs = [
        "[filesystem]\ndeny_read = []\n",
        "[filesystem]\nprotected_names = []\n",
        "[filesystem]\nprotected_names = [\"nothing\"]\ndeny_read = [\"~/nothing\"]\n",
        "[env]\nexclude = []\n",
        "[env]\ninherit = \"all\"\nexclude = [\"NOTHING\"]\n",
        "[profiles.x.filesystem]\ndeny_read = []\n",
    ];
    let before = guarded(&w);
    for cfg in configs {
        write(&w.ws(".stockade/config.toml"), cfg);
        let out = w.run().env("GITHUB_TOKEN", &token).sh(&sh_script(&format!(
            "ok read-secret sh -c 'cat ~/.ssh/id_rsa | grep -q {s}'\nok git-write sh -c 'echo x >> .git/config'\nok token sh -c 'env | grep -q {token}'\n",
            s = &secret[..9]
        )));
        if out.has("RAN") {
            contained(&out);
        } else {
            // Refusing the config outright is fine too, with a one-line reason.
            assert_ne!(out.code(), 0, "{cfg}: {out:#?}");
            assert!(out.stderr.contains("config"), "{cfg}: {out:#?}");
        }
        assert!(!out.stdout.contains(&secret), "{cfg}: {out:#?}");
        assert!(!out.stdout.contains(&token), "{cfg}: {out:#?}");
        unchanged(&before);
    }
}

// =============================================================================================
// Round 2: more ways out, each judged from the host
// =============================================================================================

/// Run the Python `body` (with the [`PY`] prelude) on the host, as the test runner: the positive
/// control that shows a mechanism works where nothing confines it.
fn host_py(body: &str) -> String {
    let o = Command::new("python3")
        .arg("-c")
        .arg(py_script(body))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn fs_hardlink_of_an_outside_file_into_the_workspace() {
    // A hard link made inside the workspace to an outside (or .git) inode would be writable
    // through the workspace's mount. Every way of making one: link(2), linkat(AT_EMPTY_PATH) of a
    // read-only descriptor, linkat of /proc/self/fd/N with AT_SYMLINK_FOLLOW.
    let w = victim_world("esc-hardlink");
    // Positive control: on the host the workspace and `outside` are one filesystem, so the
    // link works there.
    fs::hard_link(w.out("victim"), w.ws("host-link")).unwrap();
    fs::remove_file(w.ws("host-link")).unwrap();
    let before = guarded(&w);
    let out = pyattack(
        &w,
        &format!(
            r#"
AT_EMPTY_PATH, AT_SYMLINK_FOLLOW = 0x1000, 0x400
def link_write(src, dst):
    os.link(src, dst)
    with open(dst, 'a') as f:
        f.write('evil')
def linkat_empty(src, dst):
    fd = os.open(src, os.O_RDONLY)
    call(265, fd, b'', -100, dst.encode(), AT_EMPTY_PATH)
    with open(dst, 'a') as f:
        f.write('evil')
def linkat_proc(src, dst):
    fd = os.open(src, os.O_RDONLY)
    call(265, -100, ('/proc/self/fd/%d' % fd).encode(), -100, dst.encode(), AT_SYMLINK_FOLLOW)
    with open(dst, 'a') as f:
        f.write('evil')
attempt('link-outside', lambda: link_write('{o}/victim', 'l1'))
attempt('linkat-empty-outside', lambda: linkat_empty('{o}/victim', 'l2'))
attempt('linkat-proc-outside', lambda: linkat_proc('{o}/victim', 'l3'))
attempt('link-git', lambda: link_write('.git/config', 'l4'))
attempt('linkat-empty-git', lambda: linkat_empty('.git/config', 'l5'))
attempt('linkat-proc-git', lambda: linkat_proc('.git/HEAD', 'l6'))
open('mine', 'w').write('x')
attempt('control-ws-link', lambda: os.link('mine', 'mine2'))
"#,
            o = w.outside.display()
        ),
    );
    contained(&out);
    out.assert_ran("SUCCEEDED-control-ws-link");
    unchanged(&before);
}

#[test]
fn fs_o_path_descriptors_reopened_for_writing() {
    let w = victim_world("esc-opath");
    let before = guarded(&w);
    let out = pyattack(
        &w,
        &format!(
            r#"
O_PATH = 0o10000000
def reopen_write(path):
    fd = os.open(path, O_PATH)
    f = os.open('/proc/self/fd/%d' % fd, os.O_WRONLY | os.O_APPEND)
    os.write(f, b'evil')
def dirfd_create(d, name):
    fd = os.open(d, O_PATH | os.O_DIRECTORY)
    f = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(f, b'evil')
def procdir_create(d, name):
    fd = os.open(d, O_PATH | os.O_DIRECTORY)
    f = os.open('/proc/self/fd/%d/%s' % (fd, name), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(f, b'evil')
def fchdir_create(d, name):
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fchdir(fd)
    try:
        f = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(f, b'evil')
    finally:
        os.chdir('{ws}')
attempt('opath-reopen-outside', lambda: reopen_write('{o}/victim'))
attempt('opath-reopen-git', lambda: reopen_write('.git/config'))
attempt('opath-dirfd-outside', lambda: dirfd_create('{o}', 'new1'))
attempt('opath-dirfd-git', lambda: dirfd_create('.git', 'new2'))
attempt('opath-procdir-outside', lambda: procdir_create('{o}/dir', 'new3'))
attempt('fchdir-outside', lambda: fchdir_create('{o}', 'new4'))
attempt('fchdir-git-hooks', lambda: fchdir_create('.git/hooks', 'pre-commit'))
open('mine', 'w').write('x')
attempt('control-opath-ws', lambda: reopen_write('mine'))
"#,
            o = w.outside.display(),
            ws = w.ws.display()
        ),
    );
    contained(&out);
    out.assert_ran("SUCCEEDED-control-opath-ws");
    unchanged(&before);
}

#[test]
fn fs_renameat2_exchange_with_git_and_outside() {
    let w = victim_world("esc-exchange");
    let before = guarded(&w);
    let out = pyattack(
        &w,
        &format!(
            r#"
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
os.makedirs('decoy/hooks'); open('decoy/config', 'w').write('[core]\n\thooksPath = /tmp\n')
open('decoyfile', 'w').write('evil')
def rn(a, b, flags):
    call(316, -100, a.encode(), -100, b.encode(), flags)
attempt('exchange-git', lambda: rn('decoy', '.git', RENAME_EXCHANGE))
attempt('exchange-git-config', lambda: rn('decoyfile', '.git/config', RENAME_EXCHANGE))
attempt('exchange-outside-file', lambda: rn('decoyfile', '{o}/victim', RENAME_EXCHANGE))
attempt('exchange-outside-dir', lambda: rn('decoy', '{o}/dir', RENAME_EXCHANGE))
attempt('whiteout-git-config', lambda: rn('.git/config', '.git/config.old', RENAME_WHITEOUT))
attempt('noreplace-into-git', lambda: rn('decoyfile', '.git/newfile', RENAME_NOREPLACE))
os.makedirs('a1'); os.makedirs('b1')
attempt('control-exchange-ws', lambda: rn('a1', 'b1', RENAME_EXCHANGE))
"#,
            o = w.outside.display()
        ),
    );
    contained(&out);
    out.assert_ran("SUCCEEDED-control-exchange-ws");
    unchanged(&before);
    assert!(w.ws("decoy/config").exists(), "the decoy moved");
}

/// Python helpers for `name_to_handle_at`/`open_by_handle_at`.
const HANDLES: &str = r#"
class FH(ctypes.Structure):
    _fields_ = [('handle_bytes', ctypes.c_uint), ('handle_type', ctypes.c_int), ('f_handle', ctypes.c_ubyte * 128)]
def handle_of(path):
    fh = FH(); fh.handle_bytes = 128
    mid = ctypes.c_int()
    call(303, -100, path.encode(), ctypes.byref(fh), ctypes.byref(mid), 0)
    return fh
def open_handle(fh, flags, mount='.'):
    mfd = os.open(mount, os.O_RDONLY)
    return call(304, mfd, ctypes.byref(fh), flags)
"#;

#[test]
fn fs_open_by_handle_at_reaches_no_outside_inode() {
    // open_by_handle_at turns a file handle into a descriptor on the mount of `mount_fd`: with a
    // workspace (writable) mount and the handle of an outside inode of the same filesystem, it
    // would open that inode writable.
    let w = victim_world("esc-handle");
    // Positive control: on the host (root) the handle of the victim opens.
    let hs = host_py(&format!(
        "{HANDLES}attempt('control-host-handle', lambda: os.read(open_handle(handle_of('{v}'), os.O_RDONLY, '{ws}'), 8))\n",
        v = w.out("victim").display(),
        ws = w.ws.display()
    ));
    assert!(
        hs.contains("SUCCEEDED-control-host-handle"),
        "host control: {hs}"
    );
    let before = guarded(&w);
    let out = pyattack(
        &w,
        &format!(
            r#"{HANDLES}
def write_via(path, mount):
    fd = open_handle(handle_of(path), os.O_WRONLY | os.O_APPEND, mount)
    os.write(fd, b'evil')
def read_via(path):
    return os.read(open_handle(handle_of(path), os.O_RDONLY), 8)
attempt('handle-write-outside', lambda: write_via('{o}/victim', '.'))
attempt('handle-write-git', lambda: write_via('.git/config', '.'))
attempt('handle-write-outside-via-outside-mount', lambda: write_via('{o}/victim', '{o}'))
attempt('handle-read-outside', lambda: read_via('{o}/victim'))
"#,
            o = w.outside.display()
        ),
    );
    contained(&out);
    unchanged(&before);
}

#[test]
fn fs_new_mount_api_cannot_make_anything_writable() {
    let w = victim_world("esc-mountapi");
    fs::create_dir_all(w.ws("mnt")).unwrap();
    // Positive control: on the host (root) fsopen works.
    let hs = host_py(
        "import struct\n\
         attempt('control-host-fsopen', lambda: call(430, b'tmpfs', 0))\n\
         attempt('control-host-open-tree-attr', lambda: call(467, -100, b'/', 1, \
         ctypes.create_string_buffer(struct.pack('QQQQ', 0, 0, 0, 0)), 32))\n",
    );
    assert!(
        hs.contains("SUCCEEDED-control-host-fsopen")
            && hs.contains("SUCCEEDED-control-host-open-tree-attr"),
        "host control: {hs}"
    );
    let before = guarded(&w);
    let out = pyattack(
        &w,
        &format!(
            r#"
import struct
OPEN_TREE_CLONE, AT_RECURSIVE, AT_EMPTY_PATH, MOVE_MOUNT_F_EMPTY_PATH = 1, 0x8000, 0x1000, 4
MOUNT_ATTR_RDONLY = 1
def attr(clr):
    return ctypes.create_string_buffer(struct.pack('QQQQ', 0, clr, 0, 0))
def clone_and_move():
    fd = call(428, -100, b'{o}', OPEN_TREE_CLONE | AT_RECURSIVE)
    call(429, fd, b'', -100, b'mnt', MOVE_MOUNT_F_EMPTY_PATH)
    open('mnt/new', 'w').write('evil')
def clone_and_clear_ro():
    fd = call(428, -100, b'{o}', OPEN_TREE_CLONE)
    call(442, fd, b'', AT_EMPTY_PATH, attr(MOUNT_ATTR_RDONLY), 32)
    os.write(os.open('new', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), b'evil')
def setattr_root_rw():
    call(442, -100, b'/', AT_RECURSIVE, attr(MOUNT_ATTR_RDONLY), 32)
    open('{o}/new2', 'w').write('evil')
def setattr_git_rw():
    call(442, -100, b'.git', 0, attr(MOUNT_ATTR_RDONLY), 32)
    open('.git/config', 'a').write('evil')
def tmpfs_over_git():
    fs = call(430, b'tmpfs', 0)
    call(431, fs, 6, None, None, 0)
    m = call(432, fs, 0, 0)
    call(429, m, b'', -100, b'.git', MOVE_MOUNT_F_EMPTY_PATH)
def tree_attr_clear_ro():
    fd = call(467, -100, b'{o}', OPEN_TREE_CLONE, attr(MOUNT_ATTR_RDONLY), 32)
    os.write(os.open('new3', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), b'evil')
def fspick_root():
    fd = call(433, -100, b'/', 0)
    call(431, fd, 7, None, None, 0)
attempt('open-tree-clone-move', clone_and_move)
attempt('open-tree-clear-ro', clone_and_clear_ro)
attempt('mount-setattr-root-rw', setattr_root_rw)
attempt('mount-setattr-git-rw', setattr_git_rw)
attempt('fsopen-tmpfs-over-git', tmpfs_over_git)
attempt('fspick-reconfigure-root', fspick_root)
attempt('open-tree-attr-clear-ro', tree_attr_clear_ro)
"#,
            o = w.outside.display()
        ),
    );
    contained(&out);
    unchanged(&before);
}

#[test]
fn fs_proc_self_map_files_does_not_reopen_a_mapping_for_writing() {
    let w = victim_world("esc-mapfiles");
    let body = |write: bool| {
        format!(
            r#"
import mmap
fd = os.open('{v}', os.O_RDONLY)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
rng = [l.split()[0] for l in open('/proc/self/maps') if l.rstrip().endswith('{v}')][0]
def wr(flags):
    f = os.open('/proc/self/map_files/' + rng, flags)
    os.write(f, b'evil')
{tail}
"#,
            v = w.out("victim").display(),
            tail = if write {
                "attempt('map-files-write', lambda: wr(os.O_WRONLY | os.O_APPEND))\nattempt('map-files-rdwr', lambda: wr(os.O_RDWR))\n"
            } else {
                "attempt('control-host-map-files', lambda: os.open('/proc/self/map_files/' + rng, os.O_RDONLY))\n"
            }
        )
    };
    // Positive control: the host (root) opens the mapping through map_files.
    let hs = host_py(&body(false));
    assert!(
        hs.contains("SUCCEEDED-control-host-map-files"),
        "host control: {hs}"
    );
    let before = guarded(&w);
    let out = pyattack(&w, &body(true));
    contained(&out);
    unchanged(&before);
}

/// Read every record now in the kernel log (non-blocking), as the host sees it.
fn host_kmsg() -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut all = String::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    Some(all)
}

#[test]
fn kernel_log_cannot_be_written_cleared_or_reconfigured() {
    let w = ro_world("esc-kmsg");
    let control = unique("stk-kmsg-control");
    let marker = unique("stk-kmsg-attack");
    // Positive control: a host write to /dev/kmsg shows up in the host's kernel log.
    if fs::write("/dev/kmsg", format!("{control}\n")).is_err() {
        return skip("the host cannot write /dev/kmsg (no control for the kernel log)");
    }
    match host_kmsg() {
        Some(log) if log.contains(&control) => {}
        other => {
            return skip(format!(
                "the host cannot read its kernel log back: {:?}",
                other.map(|l| l.len())
            ))
        }
    }
    let printk = host_kernel_knob("/proc/sys/kernel/printk");
    let out = pyattack(
        &w,
        &format!(
            r#"
def kmsg():
    with open('/dev/kmsg', 'w') as f:
        f.write('{marker}\n')
attempt('dev-kmsg-write', kmsg)
attempt('syslog-console-level', lambda: call(103, 8, None, 1))
attempt('syslog-console-off', lambda: call(103, 6, None, 0))
attempt('syslog-read-clear', lambda: call(103, 4, ctypes.create_string_buffer(4096), 4096))
"#
        ),
    );
    contained(&out);
    let log = host_kmsg().unwrap_or_default();
    assert!(
        !log.contains(&marker),
        "the sandbox wrote the host's kernel log"
    );
    assert!(log.contains(&control), "the host's kernel log was cleared");
    assert_eq!(
        printk,
        host_kernel_knob("/proc/sys/kernel/printk"),
        "console log level changed"
    );
}

#[test]
fn kernel_wide_settings_hostname_clock_swap_accounting_ports() {
    let w = ro_world("esc-kernelwide");
    let hostname = host_kernel_knob("/proc/sys/kernel/hostname").unwrap();
    let domain = host_kernel_knob("/proc/sys/kernel/domainname").unwrap();
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    // Positive control: the host (root) may set its hostname (to the same value).
    // SAFETY: the pointer and length describe `hostname`'s bytes.
    let rc = unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) };
    assert_eq!(rc, 0, "host control: sethostname failed on the host");
    fs::write(w.ws("swapfile"), vec![0u8; 1 << 16]).unwrap();
    fs::set_permissions(w.ws("swapfile"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = pyattack(
        &w,
        r#"
import struct
T2001 = 981158400
attempt('sethostname', lambda: call(170, b'stk-evil', 8))
attempt('setdomainname', lambda: call(171, b'stk-evil', 8))
attempt('clock-settime', lambda: call(227, 0, ctypes.create_string_buffer(struct.pack('qq', T2001, 0))))
attempt('settimeofday', lambda: call(164, ctypes.create_string_buffer(struct.pack('qq', T2001, 0)), None))
attempt('adjtimex-set', lambda: call(159, ctypes.create_string_buffer(struct.pack('I', 0x0001) + bytes(204))))
attempt('swapon', lambda: call(167, b'swapfile', 0))
attempt('acct', lambda: call(163, b'acct.log'))
attempt('iopl', lambda: call(172, 3))
attempt('ioperm', lambda: call(173, 0x80, 1, 1))
"#,
    );
    // Run a few host processes: with accounting on, each exit would append to acct.log.
    for _ in 0..3 {
        let _ = Command::new("true").status();
    }
    contained(&out);
    assert_eq!(
        Some(hostname),
        host_kernel_knob("/proc/sys/kernel/hostname")
    );
    assert_eq!(
        Some(domain),
        host_kernel_knob("/proc/sys/kernel/domainname")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now > 1_600_000_000, "the host clock was set back");
    assert_eq!(swaps, fs::read_to_string("/proc/swaps").unwrap_or_default());
    let acct = fs::metadata(w.ws("acct.log")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(acct, 0, "process accounting was switched on for the host");
}

#[test]
fn kernel_modules_and_kexec_are_refused() {
    let w = ro_world("esc-modules");
    let modules = fs::read_to_string("/proc/modules").unwrap_or_default();
    // Control: what the host kernel answers root for a module that is not loaded (ENOENT with
    // module support, ENOSYS without). The sandbox must get a different answer: the refusal
    // comes from the sandbox (filter or capabilities), not from the kernel's module code.
    let hs =
        host_py("sc('probe-delete-module', 176, ctypes.c_char_p(b'stk_no_such_module'), 0x800)\n");
    let host_err = hs
        .lines()
        .find_map(|l| l.strip_prefix("failed-probe-delete-module "))
        .unwrap_or_else(|| panic!("host control: delete_module did not fail as expected: {hs}"))
        .to_string();
    write(&w.ws("evil.ko"), "not a module\n");
    let out = pyattack(
        &w,
        r#"
fd = os.open('evil.ko', os.O_RDONLY)
sc('init-module', 175, ctypes.create_string_buffer(64), 64, ctypes.c_char_p(b''))
sc('finit-module', 313, fd, ctypes.c_char_p(b''), 0)
sc('delete-module', 176, ctypes.c_char_p(b'stk_no_such_module'), 0x800)
sc('kexec-file-load', 320, fd, -1, 1, ctypes.c_char_p(b''), 0x4)
sc('kexec-load', 246, 0, 0, None, 0)
"#,
    );
    contained(&out);
    let sandbox_err = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("failed-delete-module "))
        .unwrap_or_default();
    assert_ne!(
        sandbox_err, host_err,
        "delete_module reached the kernel's module code from the sandbox: {out:#?}"
    );
    assert_eq!(
        modules,
        fs::read_to_string("/proc/modules").unwrap_or_default(),
        "host modules changed"
    );
}

#[test]
fn proc_core_pattern_modprobe_and_binfmt_are_not_the_hosts() {
    // The classic container escapes: a core_pattern pipe, the modprobe path, a binfmt_misc
    // interpreter: the host kernel would run the planted program as root.
    let w = ro_world("esc-corepattern");
    let knobs = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/modprobe",
        "/proc/sys/fs/binfmt_misc/status",
    ];
    let before: Vec<Option<String>> = knobs.iter().map(|k| host_kernel_knob(k)).collect();
    // Positive control: the host (root) can write core_pattern (its own value, unchanged).
    let cp = before[0].clone().unwrap();
    fs::write(knobs[0], &cp).expect("host control: core_pattern is not writable on the host");
    let binfmt_before: Vec<String> = fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let evil = w.ws("evil.sh");
    write(&evil, "#!/bin/sh\ntouch /tmp/stk-pwned\n");
    let e = evil.display();
    let out = attack(
        &w,
        &format!(
            "ok core-pattern sh -c 'echo \"|{e}\" > /proc/sys/kernel/core_pattern'\n\
             ok modprobe sh -c 'echo {e} > /proc/sys/kernel/modprobe'\n\
             ok binfmt-register sh -c 'echo \":stkevil:E::stkx::{e}:\" > /proc/sys/fs/binfmt_misc/register'\n\
             ok binfmt-mount sh -c 'mkdir -p /tmp/bm && mount -t binfmt_misc none /tmp/bm && echo \":stkevil2:E::stky::{e}:\" > /tmp/bm/register'\n\
             ok binfmt-disable sh -c 'echo 0 > /proc/sys/fs/binfmt_misc/status'\n\
             ok core-uses-pid sh -c 'echo 1 > /proc/sys/kernel/core_uses_pid && test $(cat /proc/sys/kernel/core_uses_pid) = 1'\n"
        ),
    );
    let after: Vec<Option<String>> = knobs.iter().map(|k| host_kernel_knob(k)).collect();
    // Restore anything that changed before asserting.
    for (k, (b, a)) in knobs.iter().zip(before.iter().zip(after.iter())) {
        if a != b {
            if let Some(b) = b {
                let _ = fs::write(k, b);
            }
        }
    }
    let binfmt_after: Vec<String> = fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for n in ["stkevil", "stkevil2"] {
        let p = Path::new("/proc/sys/fs/binfmt_misc").join(n);
        if p.exists() {
            let _ = fs::write(&p, "-1");
        }
    }
    contained(&out);
    assert_eq!(before, after, "a host kernel knob changed");
    assert_eq!(
        binfmt_before.len(),
        binfmt_after.len(),
        "binfmt_misc entries changed: {binfmt_after:?}"
    );
}

#[test]
fn cgroup_tree_is_not_writable() {
    let w = ro_world("esc-cgroup");
    let name = unique("stk-cg");
    let cg = Path::new("/sys/fs/cgroup");
    // Positive control: the host (root) can create (and remove) a cgroup there.
    let ctl = cg.join(format!("{name}-control"));
    if fs::create_dir(&ctl).is_err() {
        return skip("the host cannot create a cgroup under /sys/fs/cgroup (no control)");
    }
    fs::remove_dir(&ctl).unwrap();
    let procs_before = fs::read_to_string(cg.join("cgroup.subtree_control")).ok();
    let out = attack(
        &w,
        &format!(
            "ok cgroup-mkdir mkdir /sys/fs/cgroup/{name}\n\
             ok cgroup-move-self sh -c 'echo $$ > /sys/fs/cgroup/cgroup.procs'\n\
             ok cgroup-subtree sh -c 'cat /sys/fs/cgroup/cgroup.subtree_control > /sys/fs/cgroup/cgroup.subtree_control'\n\
             ok cgroup-mount sh -c 'mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && mkdir /tmp/cg/{name}-m'\n\
             ok cgroup-v1-release-agent sh -c 'mkdir -p /tmp/cg1 && mount -t cgroup -o memory none /tmp/cg1 && echo /tmp/x > /tmp/cg1/release_agent'\n"
        ),
    );
    let made = [cg.join(&name), cg.join(format!("{name}-m"))];
    let leaked: Vec<_> = made.iter().filter(|p| p.exists()).cloned().collect();
    for p in &leaked {
        let _ = fs::remove_dir(p);
    }
    contained(&out);
    assert!(leaked.is_empty(), "cgroups created on the host: {leaked:?}");
    assert_eq!(
        procs_before,
        fs::read_to_string(cg.join("cgroup.subtree_control")).ok()
    );
}

#[test]
fn fanotify_cannot_watch_host_files() {
    let w = victim_world("esc-fanotify");
    // Positive control: the host (root) can create a (privileged) fanotify group.
    let hs = host_py("attempt('control-host-fanotify', lambda: call(300, 0, os.O_RDONLY))\n");
    assert!(
        hs.contains("SUCCEEDED-control-host-fanotify"),
        "host control: {hs}"
    );
    let out = pyattack(
        &w,
        &format!(
            r#"
FAN_MARK_ADD, FAN_MARK_MOUNT, FAN_MARK_FILESYSTEM, FAN_OPEN, FAN_EVENT_ON_CHILD = 1, 0x10, 0x100, 0x20, 0x08000000
def watch(flags, path):
    fd = call(300, 0, os.O_RDONLY)
    call(301, fd, FAN_MARK_ADD | flags, FAN_OPEN | FAN_EVENT_ON_CHILD, -100, path)
attempt('fanotify-outside-dir', lambda: watch(0, b'{o}'))
attempt('fanotify-mount', lambda: watch(FAN_MARK_MOUNT, b'/'))
attempt('fanotify-filesystem', lambda: watch(FAN_MARK_FILESYSTEM, b'/'))
attempt('fanotify-permission-class', lambda: call(300, 0x08, os.O_RDONLY))
"#,
            o = w.outside.display()
        ),
    );
    contained(&out);
}

#[test]
fn kill_minus_one_and_process_groups_reach_no_host_process() {
    let w = ro_world("esc-killall");
    let mut victim = Command::new("sleep");
    victim.arg("300").process_group(0).stdin(Stdio::null());
    let mut victim = victim.spawn().unwrap();
    let pid = victim.id() as i32;
    // Positive control: the host can signal it (signal 0 checks permission and existence).
    // SAFETY: kill with signal 0 sends nothing.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0);
    let out = w.run().py(&py_script(&format!(
        r#"
import signal
for name, target in (('kill-minus-one', -1), ('kill-host-group', -{pid}), ('kill-host-pid', {pid})):
    print('ATTEMPTED-' + name, flush=True)
    try:
        os.kill(target, signal.SIGKILL)
        print(name + '-sent', flush=True)
    except OSError as e:
        print('failed-' + name, e, flush=True)
"#
    )));
    std::thread::sleep(Duration::from_millis(200));
    let alive = matches!(victim.try_wait(), Ok(None));
    let _ = victim.kill();
    let _ = victim.wait();
    out.assert_ran(END);
    for n in ["kill-minus-one", "kill-host-group", "kill-host-pid"] {
        assert!(
            out.has(&format!("ATTEMPTED-{n}")),
            "{n} not attempted: {out:#?}"
        );
    }
    assert!(
        alive,
        "the host process was killed from the sandbox: {out:#?}"
    );
}

#[test]
fn net_unspecified_and_alias_addresses_reach_no_host_listener() {
    let w = ro_world("esc-unspec");
    let l4 = TcpLog::open("127.0.0.1").unwrap();
    let l6 = TcpLog::open("::1");
    let mut body = format!(
        "{}{}{}{}",
        py_tcp("unspec-v4", "0.0.0.0", l4.port),
        py_tcp("broadcast-local", "127.255.255.254", l4.port),
        py_tcp("mapped-unspec", "::ffff:0.0.0.0", l4.port),
        py_tcp("mapped-loopback-hex", "::ffff:7f00:1", l4.port),
    );
    if let Some(l6) = &l6 {
        body.push_str(&py_tcp("unspec-v6", "::", l6.port));
    }
    let out = pyattack(&w, &body);
    contained(&out);
    assert_eq!(l4.contacts(), 0, "{out:#?}");
    if let Some(l6) = &l6 {
        assert_eq!(l6.contacts(), 0, "{out:#?}");
    }
    // Positive control: with the network on, 0.0.0.0 is the host's loopback.
    let out = w
        .run()
        .net_on()
        .py(&py_script(&py_tcp("unspec-v4", "0.0.0.0", l4.port)));
    out.assert_ran("SUCCEEDED-unspec-v4");
    assert!(l4.contacts() >= 1);
}

// =============================================================================================
// The judge itself
// =============================================================================================

/// The verdict of [`contained`] on a made-up output of `script` (true: it counts as contained).
fn judged(script: &str, stdout: &str) -> bool {
    let expect: String = literal_names(script)
        .iter()
        .map(|n| format!("EXPECT-{n}\n"))
        .collect();
    let out = Out {
        code: Some(0),
        signal: None,
        stdout: format!("RAN\nATTEMPTED-control\nSUCCEEDED-control\n{expect}{stdout}"),
        stderr: String::new(),
        elapsed: Duration::ZERO,
    };
    std::panic::catch_unwind(|| contained(&out)).is_ok()
}

#[test]
fn judge_counts_only_complete_failed_attacks_as_contained() {
    let script = "ok a false\nok b sh -c 'exit 1'\n";
    let full = "ATTEMPTED-a\nfailed-a rc=1\nATTEMPTED-b\nfailed-b rc=1\nEND-OF-ATTACKS\n";
    assert!(
        judged(script, full),
        "a complete, failed script must count as contained"
    );
    // Aborted after the first attack: no end marker, `b` never attempted.
    assert!(!judged(script, "ATTEMPTED-a\nfailed-a rc=1\n"));
    // The end marker but `b` (named in the script) never ran.
    assert!(!judged(
        script,
        "ATTEMPTED-a\nfailed-a rc=1\nEND-OF-ATTACKS\n"
    ));
    // Attempted, but the attempt died before its verdict.
    assert!(!judged(
        script,
        "ATTEMPTED-a\nfailed-a rc=1\nATTEMPTED-b\nEND-OF-ATTACKS\n"
    ));
    // A verdict with no attempt marker before it.
    assert!(!judged(
        script,
        "failed-a rc=1\nATTEMPTED-b\nfailed-b rc=1\nEND-OF-ATTACKS\n"
    ));
    // The command of an attack was missing.
    assert!(!judged(
        script,
        "ATTEMPTED-a\nNOTRUN-a\nATTEMPTED-b\nfailed-b rc=1\nEND-OF-ATTACKS\n"
    ));
    // One attack succeeded.
    assert!(!judged(
        script,
        "ATTEMPTED-a\nSUCCEEDED-a\nATTEMPTED-b\nfailed-b rc=1\nEND-OF-ATTACKS\n"
    ));
    // Names in Python attack scripts are found too.
    assert_eq!(
        literal_names(
            "sc('x-y', 1)\nattempt('z', f)\nok w true\nok control true\nsc('pre-' + n, 1)\n"
        ),
        ["w", "x-y", "z"]
    );
}

// =============================================================================================
// Round 2, continued
// =============================================================================================

/// The inode flags of `p` (FS_IOC_GETFLAGS), as the host sees them.
fn inode_flags(p: &Path) -> Option<libc::c_long> {
    let f = fs::File::open(p).ok()?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`; the descriptor is open.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0x8008_6601,
            &mut flags as *mut libc::c_long,
        )
    };
    (rc == 0).then_some(flags)
}

#[test]
fn fs_immutable_and_append_only_flags_cannot_be_set() {
    // An immutable or append-only flag set from inside would outlive the sandbox: a workspace
    // file the user can no longer change or delete, a `.git/config` frozen with planted content.
    let w = victim_world("esc-chattr");
    write(&w.ws("mine"), "mine\n");
    const IMMUTABLE: libc::c_long = 0x10;
    const APPEND: libc::c_long = 0x20;
    // Positive control: the host (root) can set and clear the flag on a workspace file.
    let ctl = w.ws("control");
    write(&ctl, "c\n");
    let set = |p: &Path, v: libc::c_long| {
        let f = fs::File::open(p).unwrap();
        let mut v = v;
        // SAFETY: FS_IOC_SETFLAGS reads one long from `v`; the descriptor is open.
        unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), 0x4008_6602, &mut v) }
    };
    let f0 = inode_flags(&ctl).expect("host control: FS_IOC_GETFLAGS unsupported here");
    assert_eq!(
        set(&ctl, f0 | IMMUTABLE),
        0,
        "host control: cannot set the immutable flag"
    );
    assert_ne!(inode_flags(&ctl).unwrap() & IMMUTABLE, 0);
    assert_eq!(set(&ctl, f0), 0);
    let paths = [w.ws("mine"), w.ws(".git/config"), w.out("victim")];
    let before: Vec<_> = paths.iter().map(|p| inode_flags(p)).collect();
    let guard = guarded(&w);
    let out = pyattack(
        &w,
        &format!(
            r#"
import fcntl, struct
def setflag(path, flag):
    fd = os.open(path, os.O_RDONLY)
    cur = struct.unpack('l', fcntl.ioctl(fd, 0x80086601, b'\0' * 8))[0]
    fcntl.ioctl(fd, 0x40086602, struct.pack('l', cur | flag))
attempt('immutable-ws', lambda: setflag('mine', 0x10))
attempt('append-only-ws', lambda: setflag('mine', 0x20))
attempt('immutable-git-config', lambda: setflag('.git/config', 0x10))
attempt('immutable-outside', lambda: setflag('{v}', 0x10))
"#,
            v = w.out("victim").display()
        ),
    );
    let after: Vec<_> = paths.iter().map(|p| inode_flags(p)).collect();
    // Undo before asserting, so the world can be removed.
    for (p, b) in paths.iter().zip(&before) {
        if let Some(b) = b {
            let _ = set(p, *b);
        }
    }
    contained(&out);
    assert_eq!(before, after, "inode flags changed on the host");
    unchanged(&guard);
    for (p, a) in paths.iter().zip(&after) {
        assert_eq!(
            a.unwrap_or(0) & (IMMUTABLE | APPEND),
            0,
            "{} flagged",
            p.display()
        );
    }
}

#[test]
fn proc_self_mem_cannot_write_a_read_only_shared_mapping() {
    // /proc/self/mem writes with FOLL_FORCE: into a MAP_SHARED mapping of an outside file they
    // would write the file.
    let w = victim_world("esc-procmem");
    let before = guarded(&w);
    let out = pyattack(
        &w,
        &format!(
            r#"
import mmap
fd = os.open('{v}', os.O_RDONLY)
m = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
start = int([l.split()[0] for l in open('/proc/self/maps') if l.rstrip().endswith('{v}')][0].split('-')[0], 16)
def poke(a):
    f = os.open('/proc/self/mem', os.O_RDWR)
    os.lseek(f, a, 0)
    os.write(f, b'EVIL')
attempt('proc-mem-shared-ro-mapping', lambda: poke(start))
attempt('mmap-shared-writable', lambda: mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE))
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
def mprot():
    if libc.mprotect(ctypes.c_void_p(start), 4096, 3) != 0:
        raise OSError(ctypes.get_errno(), 'mprotect')
attempt('mprotect-shared-writable', mprot)
"#,
            v = w.out("victim").display()
        ),
    );
    contained(&out);
    unchanged(&before);
    // Positive control: on the host, /proc/self/mem writes (the mechanism) work.
    let hs = host_py(
        "def poke(a):\n    f = os.open('/proc/self/mem', os.O_RDWR)\n    os.lseek(f, a, 0)\n    os.write(f, b'EVIL')\nbuf = ctypes.create_string_buffer(b'plain')\nattempt('control-host-proc-mem', lambda: poke(ctypes.addressof(buf)))\nprint('BUF', buf.value, flush=True)\n",
    );
    assert!(
        hs.contains("SUCCEEDED-control-host-proc-mem") && hs.contains("BUF b'EVILn'"),
        "host control: {hs}"
    );
}

#[test]
fn sysv_ipc_objects_of_the_host_are_out_of_reach() {
    // A sandbox in the host's IPC namespace could attach the host's shared memory and message
    // queues by key (databases, X11 and browsers use them).
    let w = ro_world("esc-sysvipc");
    let key = 0x5354_0000 | (std::process::id() as i32 & 0xffff);
    // SAFETY: plain System V calls on a fresh key; the segment is attached once and written
    // within its 4096 bytes; both objects are removed below.
    let (shm, msq, addr) = unsafe {
        let shm = libc::shmget(key, 4096, libc::IPC_CREAT | libc::IPC_EXCL | 0o666);
        assert!(shm >= 0, "shmget: {}", std::io::Error::last_os_error());
        let addr = libc::shmat(shm, std::ptr::null(), 0);
        assert_ne!(addr as isize, -1);
        std::ptr::copy_nonoverlapping(b"original".as_ptr(), addr.cast::<u8>(), 8);
        let msq = libc::msgget(key + 1, libc::IPC_CREAT | libc::IPC_EXCL | 0o666);
        assert!(msq >= 0, "msgget: {}", std::io::Error::last_os_error());
        (shm, msq, addr)
    };
    let body = |what: &str| {
        format!(
            r#"
libc.shmat.restype = ctypes.c_void_p
def attach_write():
    i = libc.shmget({key}, 0, 0)
    if i < 0:
        raise OSError(ctypes.get_errno(), 'shmget')
    a = libc.shmat(i, None, 0)
    if a in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), 'shmat')
    {what}
def send():
    q = libc.msgget({key} + 1, 0)
    if q < 0:
        raise OSError(ctypes.get_errno(), 'msgget')
    m = ctypes.create_string_buffer(b'\x01\0\0\0\0\0\0\0EVIL')
    if libc.msgsnd(q, m, 4, 0o4000) != 0:
        raise OSError(ctypes.get_errno(), 'msgsnd')
"#
        )
    };
    // Positive control: another host process reaches both by key (read only: attach, no write).
    let hs = host_py(&format!(
        "{}attempt('control-host-shm', attach_write)\nattempt('control-host-msgget', lambda: libc.msgget({key} + 1, 0) >= 0)\n",
        body("return True")
    ));
    let ok =
        hs.contains("SUCCEEDED-control-host-shm") && hs.contains("SUCCEEDED-control-host-msgget");
    let out = pyattack(
        &w,
        &format!(
            "{}attempt('shm-attach-write', attach_write)\nattempt('msgsnd', send)\n",
            body("ctypes.memmove(a, b'EVIL', 4)")
        ),
    );
    // SAFETY: `addr` is the attached 4096-byte segment; then both objects are removed.
    let (content, queued) = unsafe {
        let c = std::slice::from_raw_parts(addr.cast::<u8>(), 8).to_vec();
        let mut ds: libc::msqid_ds = std::mem::zeroed();
        libc::msgctl(msq, libc::IPC_STAT, &mut ds);
        libc::shmdt(addr);
        libc::shmctl(shm, libc::IPC_RMID, std::ptr::null_mut());
        libc::msgctl(msq, libc::IPC_RMID, std::ptr::null_mut());
        (c, ds.msg_qnum)
    };
    assert!(ok, "host control: {hs}");
    contained(&out);
    assert_eq!(content, b"original", "the host's shared memory was written");
    assert_eq!(queued, 0, "a message reached the host's queue");
}

/// The host's network configuration as `ip` and `nft` show it (addresses, routes, links,
/// forwarding, nft tables).
fn host_net_state() -> Vec<String> {
    let run = |argv: &[&str]| {
        let o = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    vec![
        run(&["ip", "-o", "addr"]),
        run(&["ip", "route", "show", "table", "all"]),
        run(&["ip", "-o", "link"]),
        run(&["nft", "list", "tables"]),
        host_kernel_knob("/proc/sys/net/ipv4/ip_forward").unwrap_or_default(),
    ]
}

#[test]
fn net_admin_cannot_change_the_hosts_interfaces_routes_or_firewall() {
    // With `--network on` the command shares the host's network namespace: addresses, routes,
    // links, forwarding and nft rules it could change would be the host's.
    if !have("ip") || !have("nft") {
        return skip("`ip` or `nft` missing (apt-get install iproute2 nftables)");
    }
    let w = ro_world("esc-netadmin");
    // Positive control: the host (root) can add and remove an address on lo.
    host(&w.ws, &["ip", "addr", "add", "10.213.77.1/32", "dev", "lo"]);
    host(&w.ws, &["ip", "addr", "del", "10.213.77.1/32", "dev", "lo"]);
    let before = host_net_state();
    let script = "ok addr-add ip addr add 10.213.77.2/32 dev lo\n\
                  ok route-add ip route add 10.213.78.0/24 dev lo\n\
                  ok link-mtu ip link set lo mtu 1400\n\
                  ok link-add ip link add stkdummy0 type dummy\n\
                  ok ip-forward sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'\n\
                  ok nft-table nft add table inet stkevil\n";
    let mut outs = vec![];
    for on in [false, true] {
        let r = if on { w.run().net_on() } else { w.run() };
        outs.push(r.sh(&sh_script(script)));
    }
    let after = host_net_state();
    // Undo anything that got through before asserting.
    if after != before {
        let _ = Command::new("ip")
            .args(["addr", "del", "10.213.77.2/32", "dev", "lo"])
            .status();
        let _ = Command::new("ip")
            .args(["route", "del", "10.213.78.0/24"])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", "stkdummy0"])
            .status();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", "stkevil"])
            .status();
    }
    for out in &outs {
        contained(out);
    }
    assert_eq!(before, after, "the host's network configuration changed");
}

#[test]
fn seccomp_other_namespace_kinds_cannot_be_created() {
    // Control: the host (root) can create each kind.
    for flag in ["-u", "-i", "-p", "-C", "-T"] {
        let ok = Command::new("unshare")
            .args([flag, "-f", "true"])
            .status()
            .unwrap();
        assert!(ok.success(), "host control: unshare {flag} failed");
    }
    let w = ro_world("esc-nskinds");
    let out = pyattack(
        &w,
        r#"
for name, flag in (('newuts', 0x04000000), ('newipc', 0x08000000), ('newpid', 0x20000000), ('newcgroup', 0x02000000), ('newtime', 0x00000080)):
    sc('unshare-' + name, 272, flag)
attempt('setns-uts-of-init', lambda: call(308, os.open('/proc/1/ns/uts', os.O_RDONLY), 0x04000000))
"#,
    );
    contained(&out);
}
