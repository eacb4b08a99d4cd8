//! Issue "core": the must-show behaviours of `stockade run`, judged from the host.
//!
//! Every test runs the real binary, makes the sandboxed command print a marker before its attempt
//! (so a sandbox that refuses to start fails the test), then checks the effects on the host after
//! stockade exited.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Filesystem writes
// ---------------------------------------------------------------------------------------------

#[test]
fn writes_outside_writable_roots_fail_and_leave_nothing() {
    let w = World::new("core-out");
    write(&w.out("victim"), "original\n");
    fs::create_dir_all(w.out("dir")).unwrap();
    // Planted by the "host" before the run: a symlink to a directory and one to a file outside.
    symlink(&w.outside, w.ws("planted-dir")).unwrap();
    symlink(w.out("victim"), w.ws("planted-file")).unwrap();
    let before = snap_tree(&w.outside);
    let o = q(&w.outside);
    let script = format!(
        r#"echo RAN
try() {{ name=$1; shift; if "$@" 2>/dev/null; then echo "ESCAPED-$name"; fi; }}
try abs-new sh -c 'echo x > {o}/new'
try abs-overwrite sh -c 'echo x > {o}/victim'
try abs-append sh -c 'echo x >> {o}/victim'
try abs-mkdir mkdir {o}/newdir
try abs-rm rm -f {o}/victim
try abs-rmdir rmdir {o}/dir
try dotdot-new sh -c 'echo x > ../outside/new2'
try dotdot-overwrite sh -c 'echo x > ./../outside/victim'
try planted-dir sh -c 'echo x > planted-dir/new3'
try planted-file sh -c 'echo x > planted-file'
try planted-file-trunc truncate -s 0 planted-file
try own-symlink sh -c 'ln -s {o} own && echo x > own/new4'
try own-symlink-file sh -c 'ln -s {o}/victim ownf && echo x > ownf'
try proc-self-root sh -c 'echo x > /proc/self/root{o_raw}/new5'
try proc-self-root-overwrite sh -c 'echo x > /proc/self/root{o_raw}/victim'
try hardlink sh -c 'ln {o}/victim hl && echo x >> hl'
try cp-into cp /etc/hostname {o}/new6
try mv-out sh -c 'echo y > moved && mv moved {o}/new7'
echo DONE
"#,
        o_raw = w.outside.display(),
    );
    let out = w.run().sh(&script);
    out.assert_ran("RAN");
    out.assert_ran("DONE");
    out.assert_not("ESCAPED");
    assert_same_tree(&before, &snap_tree(&w.outside));
    assert_eq!(fs::read_to_string(w.out("victim")).unwrap(), "original\n");
}

#[test]
fn writes_inside_the_workspace_and_writable_roots_work() {
    let w = World::new("core-in");
    let extra = w.root.join("extra");
    fs::create_dir_all(&extra).unwrap();
    write(&w.ws("old"), "old\n");
    write(&w.ws("gone"), "bye\n");
    let script = format!(
        "echo RAN; echo made > new && mkdir -p d/e && echo deep > d/e/f && echo more >> old && \
         rm gone && mv new renamed && echo extra > {}/x && echo OK",
        q(&extra)
    );
    let out = w.run().writable(&extra).sh(&script);
    out.assert_ran("OK");
    assert_eq!(out.code(), 0);
    assert_eq!(fs::read_to_string(w.ws("renamed")).unwrap(), "made\n");
    assert_eq!(fs::read_to_string(w.ws("d/e/f")).unwrap(), "deep\n");
    assert_eq!(fs::read_to_string(w.ws("old")).unwrap(), "old\nmore\n");
    assert!(!w.ws("gone").exists());
    assert!(!w.ws("new").exists());
    assert_eq!(fs::read_to_string(extra.join("x")).unwrap(), "extra\n");
}

// ---------------------------------------------------------------------------------------------
// .git protection
// ---------------------------------------------------------------------------------------------

/// Attacks against one git directory (`gd`, as seen from the sandbox).
fn git_attacks(tag: &str, gd: &str) -> String {
    format!(
        r##"try {tag}-config sh -c 'echo "[core]\n fsmonitor = evil" >> {gd}/config'
try {tag}-hook sh -c 'printf "#!/bin/sh\necho pwned\n" > {gd}/hooks/pre-commit && chmod +x {gd}/hooks/pre-commit'
try {tag}-hook-post sh -c 'echo x > {gd}/hooks/post-checkout'
try {tag}-head sh -c 'echo "ref: refs/heads/evil" > {gd}/HEAD'
try {tag}-rm-head rm -f {gd}/HEAD
try {tag}-chmod chmod 777 {gd}/config
try {tag}-touch touch -d 2001-01-01 {gd}/config
try {tag}-rename-file mv {gd}/config {gd}/config.bak
try {tag}-rename-dir mv {gd} {gd}.moved
try {tag}-rm-rf rm -rf {gd}
try {tag}-mkdir mkdir {gd}/newdir
try {tag}-objects sh -c 'echo x > {gd}/objects/evil'
"##
    )
}

/// A `--config` file setting `git.mode = "read-only"`: these tests check that every `.git` (and
/// every gitdir a `.git` file names) is read-only as a whole; `git.mode = "commit"` (the default)
/// is tested in `tests/git.rs`.
fn ro_git(w: &World) -> std::path::PathBuf {
    let p = w.root.join("git-read-only.toml");
    write(&p, "[git]\nmode = \"read-only\"\n");
    p
}

const TRY: &str =
    "try() { name=$1; shift; if \"$@\" 2>/dev/null; then echo \"ESCAPED-$name\"; fi; }\n";

#[test]
fn top_level_and_nested_git_dirs_are_read_only() {
    let w = World::new("core-git");
    git_repo(&w.ws);
    git_repo(&w.ws("nested"));
    let before_top = snap_tree(&w.ws(".git"));
    let before_nested = snap_tree(&w.ws("nested/.git"));
    let script = format!(
        "echo RAN\n{TRY}{}{}echo DONE\n",
        git_attacks("top", ".git"),
        git_attacks("nested", "nested/.git")
    );
    let out = w.run().flag("--config").flag(ro_git(&w)).sh(&script);
    out.assert_ran("RAN");
    out.assert_ran("DONE");
    out.assert_not("ESCAPED");
    assert_same_tree(&before_top, &snap_tree(&w.ws(".git")));
    assert_same_tree(&before_nested, &snap_tree(&w.ws("nested/.git")));
    // The repositories still work on the host.
    host(&w.ws, &["git", "status", "--short"]);
    host(&w.ws("nested"), &["git", "status", "--short"]);
}

#[test]
fn submodule_style_git_file_and_its_gitdir_are_read_only() {
    let w = World::new("core-gitfile");
    git_repo(&w.ws);
    // A submodule-style checkout whose `.git` is a file pointing at a gitdir elsewhere in the
    // workspace, NOT beneath any `.git` directory (so only the gitdir rule can protect it).
    git_repo(&w.ws("gitdirs/src"));
    fs::rename(w.ws("gitdirs/src/.git"), w.ws("gitdirs/sub")).unwrap();
    fs::remove_dir_all(w.ws("gitdirs/src")).unwrap();
    fs::create_dir_all(w.ws("sub")).unwrap();
    write(&w.ws("sub/.git"), "gitdir: ../gitdirs/sub\n");
    host(&w.ws("sub"), &["git", "checkout", "-q", "--", "."]);
    // The classic layout too: .git file -> ../.git/modules/sub2.
    git_repo(&w.ws("modsrc"));
    fs::create_dir_all(w.ws(".git/modules")).unwrap();
    fs::rename(w.ws("modsrc/.git"), w.ws(".git/modules/sub2")).unwrap();
    fs::rename(w.ws("modsrc"), w.ws("sub2")).unwrap();
    write(&w.ws("sub2/.git"), "gitdir: ../.git/modules/sub2\n");
    host(&w.ws("sub"), &["git", "status", "--short"]);

    let before_file = snap(&w.ws("sub/.git"));
    let before_file2 = snap(&w.ws("sub2/.git"));
    let before_gd = snap_tree(&w.ws("gitdirs"));
    let before_top = snap_tree(&w.ws(".git"));
    let script = format!(
        "echo RAN\n{TRY}\
         try file-write sh -c 'echo \"gitdir: /tmp/evil\" > sub/.git'\n\
         try file-rm rm -f sub/.git\n\
         try file-mv mv sub/.git sub/git.bak\n\
         try file-chmod chmod 600 sub/.git\n\
         try file2-write sh -c 'echo \"gitdir: /tmp/evil\" > sub2/.git'\n\
         try file2-rm rm -f sub2/.git\n\
         try gitdirs-rename mv gitdirs/sub gitdirs/other\n\
         {}{}echo DONE\n",
        git_attacks("gitdir", "gitdirs/sub"),
        git_attacks("modules", ".git/modules/sub2"),
    );
    let out = w.run().flag("--config").flag(ro_git(&w)).sh(&script);
    out.assert_ran("RAN");
    out.assert_ran("DONE");
    out.assert_not("ESCAPED");
    assert_eq!(before_file, snap(&w.ws("sub/.git")));
    assert_eq!(before_file2, snap(&w.ws("sub2/.git")));
    assert_same_tree(&before_gd, &snap_tree(&w.ws("gitdirs")));
    assert_same_tree(&before_top, &snap_tree(&w.ws(".git")));
}

#[test]
fn git_worktree_gitdir_target_is_read_only() {
    let w = World::new("core-worktree");
    // Main repository outside the workspace but made writable with --writable; the workspace is a
    // `git worktree add` checkout whose `.git` file points into main/.git/worktrees/wt.
    let main = w.root.join("main");
    git_repo(&main);
    fs::remove_dir_all(&w.ws).unwrap();
    host(
        &main,
        &[
            "git",
            "worktree",
            "add",
            "-q",
            "-b",
            "wtb",
            w.ws.to_str().unwrap(),
        ],
    );
    let gd = main.join(".git/worktrees/ws");
    assert!(gd.is_dir(), "git worktree layout changed: {}", gd.display());
    let before_main_git = snap_tree(&main.join(".git"));
    let before_file = snap(&w.ws(".git"));
    let gds = q(&gd);
    let mg = q(&main.join(".git"));
    let script = format!(
        "echo RAN\n{TRY}\
         try wt-file sh -c 'echo \"gitdir: /tmp/x\" > .git'\n\
         try wt-file-rm rm -f .git\n\
         try main-readme-ok sh -c 'echo fine >> {main}/README && echo WROTE-MAIN'\n\
         {}{}echo DONE\n",
        git_attacks("wtgitdir", &gds),
        git_attacks("maingit", &mg),
        main = q(&main),
    );
    let out = w
        .run()
        .flag("--config")
        .flag(ro_git(&w))
        .writable(&main)
        .sh(&script);
    out.assert_ran("RAN");
    out.assert_ran("DONE");
    // Positive control: the writable main checkout itself is writable.
    out.assert_ran("WROTE-MAIN");
    let leaks: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("ESCAPED") && !l.contains("main-readme-ok"))
        .collect();
    assert!(leaks.is_empty(), "escapes: {leaks:?}\n{out:#?}");
    assert_eq!(before_file, snap(&w.ws(".git")));
    assert_same_tree(&before_main_git, &snap_tree(&main.join(".git")));
}

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

fn py_connect(ip: &str, port: u16) -> String {
    let fam = if ip.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    format!(
        "import socket,sys\nprint('RAN',flush=True)\ns=socket.socket(socket.{fam})\ns.settimeout(3)\n\
         try:\n    s.connect(('{ip}',{port})); s.sendall(b'HELLO'); print('CONNECTED')\n\
         except Exception as e:\n    print('refused', e)\n"
    )
}

#[test]
fn network_off_host_loopback_tcp_v4_sees_no_contact() {
    let w = World::new("core-tcp4");
    let l = TcpLog::open("127.0.0.1").unwrap();
    let out = w.run().py(&py_connect("127.0.0.1", l.port));
    out.assert_ran("RAN");
    out.assert_not("CONNECTED");
    assert_eq!(l.contacts(), 0, "{out:#?}");
}

#[test]
fn network_off_host_loopback_tcp_v6_sees_no_contact() {
    let w = World::new("core-tcp6");
    let Some(l) = TcpLog::open("::1") else {
        return skip("the host has no usable ::1");
    };
    let out = w.run().py(&py_connect("::1", l.port));
    out.assert_ran("RAN");
    out.assert_not("CONNECTED");
    assert_eq!(l.contacts(), 0, "{out:#?}");
}

fn py_udp(ip: &str, port: u16) -> String {
    let fam = if ip.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    format!(
        "import socket\nprint('RAN',flush=True)\ns=socket.socket(socket.{fam},socket.SOCK_DGRAM)\n\
         for i in range(5):\n    try:\n        s.sendto(b'X',('{ip}',{port}))\n    except Exception as e:\n        print('err',e)\n"
    )
}

#[test]
fn network_off_host_udp_sees_nothing() {
    let w = World::new("core-udp");
    let u4 = UdpLog::open("127.0.0.1").unwrap();
    let out = w.run().py(&py_udp("127.0.0.1", u4.port));
    out.assert_ran("RAN");
    assert_eq!(u4.received(), 0, "{out:#?}");
    if let Some(u6) = UdpLog::open("::1") {
        let out = w.run().py(&py_udp("::1", u6.port));
        out.assert_ran("RAN");
        assert_eq!(u6.received(), 0, "{out:#?}");
    }
}

#[test]
fn network_on_reaches_the_host_listener_positive_control() {
    let w = World::new("core-neton");
    let l = TcpLog::open("127.0.0.1").unwrap();
    let out = w.run().net_on().py(&py_connect("127.0.0.1", l.port));
    out.assert_ran("CONNECTED");
    assert!(l.contacts() >= 1, "{out:#?}");
    assert!(l.data().contains("HELLO"));
    let u = UdpLog::open("127.0.0.1").unwrap();
    let out = w.run().net_on().py(&py_udp("127.0.0.1", u.port));
    out.assert_ran("RAN");
    assert!(u.received() >= 1, "udp with --network on: {out:#?}");
}

#[test]
fn loopback_inside_the_sandbox_works_with_network_off() {
    let w = World::new("core-lo");
    let code = "import socket,threading\nprint('RAN',flush=True)\n\
        for fam,ip in ((socket.AF_INET,'127.0.0.1'),(socket.AF_INET6,'::1')):\n\
        \x20   try:\n\
        \x20       srv=socket.socket(fam); srv.bind((ip,0)); srv.listen(1)\n\
        \x20   except OSError as e:\n\
        \x20       print('nobind',ip,e); continue\n\
        \x20   port=srv.getsockname()[1]\n\
        \x20   def serve():\n\
        \x20       c,_=srv.accept(); c.sendall(c.recv(10)+b'!'); c.close()\n\
        \x20   t=threading.Thread(target=serve); t.start()\n\
        \x20   cl=socket.create_connection((ip,port),timeout=5); cl.sendall(b'ping')\n\
        \x20   print('GOT',ip,cl.recv(10).decode()); t.join()\n";
    let out = w.run().py(code);
    out.assert_ran("RAN");
    assert!(out.has("GOT 127.0.0.1 ping!"), "{out:#?}");
    assert_eq!(out.code(), 0);
}

// ---------------------------------------------------------------------------------------------
// Exit codes, signals, process lifetime, timeout, stdio
// ---------------------------------------------------------------------------------------------

#[test]
fn exit_codes_pass_through() {
    let w = World::new("core-exit");
    for (script, want) in [
        ("echo RAN; exit 0", 0),
        ("echo RAN; exit 3", 3),
        ("echo RAN; exit 255", 255),
        ("echo RAN; kill -TERM $$", 143),
        ("echo RAN; kill -KILL $$", 137),
        ("echo RAN; kill -INT $$", 130),
    ] {
        let out = w.run().sh(script);
        out.assert_ran("RAN");
        assert_eq!(out.code(), want, "{script}: {out:#?}");
    }
    let out = w.run().argv(&["no-such-command-stockade-test"]);
    assert_eq!(out.code(), 127, "{out:#?}");
}

/// Start a trapping command under stockade, wait for it to be ready, send `sig` to stockade.
fn signal_reaches_command(sig: i32, name: &str) {
    let w = World::new(&format!("core-sig{name}"));
    let script = format!(
        "trap 'echo got > {name}.trapped; exit 7' {name}; echo ready > ready; \
         i=0; while [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done; echo timeout-in-script"
    );
    let mut c = w.run().command(&["sh", "-c", &script]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null());
    let start = Instant::now();
    let mut child = c.spawn().unwrap();
    while !w.ws("ready").exists() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the sandboxed command never became ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: plain kill(2) on the pid of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let out = wait_child(&mut child, None, Duration::from_secs(30), start);
    assert!(
        w.ws(&format!("{name}.trapped")).exists(),
        "SIG{name} did not reach the command: {out:#?}"
    );
    assert_eq!(out.code(), 7, "{out:#?}");
}

#[test]
fn sigterm_to_stockade_reaches_the_command() {
    signal_reaches_command(libc::SIGTERM, "TERM");
}

#[test]
fn sigint_to_stockade_reaches_the_command() {
    signal_reaches_command(libc::SIGINT, "INT");
}

#[test]
fn background_processes_do_not_outlive_the_command() {
    let w = World::new("core-bg");
    let m = unique("stkbg");
    // The marker is assembled inside the shell so that the main script's own command line does
    // not contain it (pgrep -f must only match the background processes).
    let script = format!(
        "M={m}; echo RAN\n\
         setsid sh -c \"sleep 300; : $M-setsid\" >/dev/null 2>&1 &\n\
         nohup sh -c \"sleep 300; : $M-nohup\" >/dev/null 2>&1 &\n\
         ( ( sh -c \"sleep 300; : $M-double\" >/dev/null 2>&1 & ) & )\n\
         setsid sh -c \"trap '' HUP TERM INT; sleep 300; : $M-immune\" >/dev/null 2>&1 &\n\
         sleep 0.3; n=$(pgrep -f \"$M-\" | wc -l); echo STARTED=$n\n"
    );
    let out = w.run().sh(&script);
    out.assert_ran("RAN");
    // Positive control: the four detached processes were really running inside.
    assert!(out.has("STARTED=4"), "{out:#?}");
    let left = wait_gone(&m, Duration::from_secs(3));
    kill_matching(&m);
    assert!(left.is_empty(), "processes outlived the command: {left:?}");
}

#[test]
fn nothing_of_the_run_is_left_when_stockade_returns() {
    // Stronger than the test above: no grace period. A detached writer that ignores SIGTERM and
    // SIGHUP appends to a workspace file every few milliseconds; the moment stockade has
    // returned, no process of the run may exist and the file must stop growing.
    let w = World::new("core-nolinger");
    let m = unique("stknl");
    let log = w.ws("ticks.log");
    let script = format!(
        "M={m}; echo RAN\n\
         setsid sh -c \"trap '' HUP TERM INT; while :; do echo t >> ticks.log; sleep 0.005; done; : $M-writer\" >/dev/null 2>&1 &\n\
         sleep 0.2; echo TICKING=$(wc -l < ticks.log)\n"
    );
    let out = w.run().sh(&script);
    out.assert_ran("RAN");
    let ticking = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("TICKING="))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // Positive control: the writer was really running inside.
    assert!(ticking > 0, "{out:#?}");
    let left = pgrep(&m);
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(300));
    let later = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    kill_matching(&m);
    assert!(
        left.is_empty(),
        "processes of the run alive when stockade returned: {left:?}"
    );
    assert_eq!(
        size, later,
        "the workspace file kept growing after stockade returned"
    );
}

#[test]
fn timeout_returns_124_quickly_and_kills_the_tree() {
    let w = World::new("core-timeout");
    let m = unique("stkto");
    let script = format!(
        "M={m}; echo RAN; setsid sh -c \"sleep 30; : $M-child\" >/dev/null 2>&1 & sleep 30; echo NOT-KILLED"
    );
    let out = w.run().flag("--timeout").flag("1").sh(&script);
    out.assert_ran("RAN");
    out.assert_not("NOT-KILLED");
    assert_eq!(out.code(), 124, "{out:#?}");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );
    let left = wait_gone(&m, Duration::from_secs(3));
    kill_matching(&m);
    assert!(left.is_empty(), "survived the timeout: {left:?}");
}

#[test]
fn stdin_stdout_stderr_pass_through() {
    let w = World::new("core-stdio");
    let input = b"line one\nline two\n\x00\xffbinary\n";
    let out = w
        .run()
        .stdin(input)
        .sh("echo RAN; cat; echo to-stderr >&2; cat /dev/null");
    out.assert_ran("RAN");
    assert!(out.stdout.contains("line one\nline two\n"), "{out:#?}");
    assert!(out.stderr.contains("to-stderr"), "{out:#?}");
    // Binary stdin round-trips byte-exactly.
    let mut c = w.run().command(&["cat"]);
    c.stdin(std::process::Stdio::piped());
    let o = run_guarded(c, Some(input), Duration::from_secs(30));
    assert_eq!(o.code(), 0);
    let out2 = std::process::Command::new(bin())
        .args(["run", "--workspace"])
        .arg(&w.ws)
        .args(["--", "sh", "-c", "cat; exit 5"])
        .env("HOME", &w.home)
        .env("XDG_STATE_HOME", &w.state)
        .stdin(fs::File::open("/etc/hostname").unwrap())
        .output()
        .unwrap();
    assert_eq!(out2.status.code(), Some(5));
    assert_eq!(out2.stdout, fs::read("/etc/hostname").unwrap());
}

// ---------------------------------------------------------------------------------------------
// Bad input: one-line errors, non-zero exit, nothing changed
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_one_line_error(out: &Out, what: &str) {
    assert_ne!(out.code(), 0, "{what}: {out:#?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{what}: expected ONE error line: {out:#?}");
    assert!(
        lines[0].starts_with("stockade: error:"),
        "{what}: unclear error: {out:#?}"
    );
    assert!(!out.has("RAN"), "{what}: the command ran anyway: {out:#?}");
}

#[test]
fn bad_input_gives_one_line_errors_and_changes_nothing() {
    let w = World::new("core-bad");
    write(&w.ws("keep"), "keep\n");
    let before = snap_tree(&w.root);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("unknown flag", vec!["run".into(), "--bogus-flag".into()]),
        (
            "missing workspace",
            vec![
                "run".into(),
                "--workspace".into(),
                w.root.join("nope").display().to_string(),
            ],
        ),
        (
            "writable /",
            vec!["run".into(), "--writable".into(), "/".into()],
        ),
        (
            "writable $HOME",
            vec![
                "run".into(),
                "--writable".into(),
                w.home.display().to_string(),
            ],
        ),
        (
            "missing --config",
            vec![
                "run".into(),
                "--config".into(),
                w.root.join("missing.toml").display().to_string(),
            ],
        ),
        (
            "bad --network",
            vec!["run".into(), "--network".into(), "sideways".into()],
        ),
        (
            "bad --pass-fd",
            vec!["run".into(), "--pass-fd".into(), "57".into()],
        ),
    ];
    for (what, mut args) in cases {
        args.extend(["--".into(), "sh".into(), "-c".into(), "echo RAN".into()]);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = w.stockade(&a);
        assert_one_line_error(&out, what);
        assert_same_tree(&before, &snap_tree(&w.root));
    }
    // Malformed TOML in the workspace config.
    write(&w.ws(".stockade/config.toml"), "[network\nmode = \"on\"\n");
    let before = snap_tree(&w.root);
    let out = w.stockade(&["run", "--", "sh", "-c", "echo RAN"]);
    assert_one_line_error(&out, "malformed TOML");
    assert!(out.stderr.contains("config.toml"), "{out:#?}");
    assert_same_tree(&before, &snap_tree(&w.root));
}

#[test]
fn workspace_with_spaces_newline_and_unicode_works() {
    let base = World::new("core-names");
    let ws = base.root.join("my work\nspace ünï 🦀");
    fs::create_dir_all(&ws).unwrap();
    let out = {
        let mut c = std::process::Command::new(bin());
        c.arg("run")
            .arg("--workspace")
            .arg(&ws)
            .args(["--", "sh", "-c", "echo RAN; pwd; echo inside > f.txt"])
            .current_dir(&ws)
            .env("HOME", &base.home)
            .env("XDG_STATE_HOME", &base.state);
        run_guarded(c, None, Duration::from_secs(30))
    };
    out.assert_ran("RAN");
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(fs::read_to_string(ws.join("f.txt")).unwrap(), "inside\n");
    assert!(out.stdout.contains("🦀"), "{out:#?}");
}

// ---------------------------------------------------------------------------------------------
// policy show / doctor
// ---------------------------------------------------------------------------------------------

#[test]
fn policy_show_json_has_network_off_and_deny_read_defaults() {
    let w = World::new("core-policy");
    let out = w.stockade(&["policy", "show", "--json"]);
    assert_eq!(out.code(), 0, "{out:#?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("policy show --json");
    let policy = &v["policy"];
    assert_eq!(policy["network"]["mode"], "off", "{v:#}");
    let deny: Vec<&str> = policy["filesystem"]["deny_read"]
        .as_array()
        .expect("deny_read array")
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    for want in ["~/.ssh", "~/.aws", "~/.netrc", "~/.gnupg"] {
        assert!(deny.contains(&want), "{want} missing from {deny:?}");
    }
    // --plan resolves too.
    let out = w.stockade(&["policy", "show", "--json", "--plan"]);
    assert_eq!(out.code(), 0, "{out:#?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v.get("plan").is_some());
}

#[test]
fn doctor_json_parses() {
    let w = World::new("core-doctor");
    let out = w.stockade(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("doctor --json");
    assert!(v["features"].is_array(), "{v:#}");
    assert!(v["tiers"]["linux-unelevated"]["available"].is_boolean());
    assert_eq!(
        out.code() == 0,
        v["tiers"]["linux-unelevated"]["available"] == true
    );
}

#[test]
fn killing_stockade_itself_kills_the_whole_tree() {
    let w = World::new("core-kill9");
    let m = unique("stkk9");
    let script = format!(
        "M={m}; setsid sh -c \"sleep 300; : $M-bg\" >/dev/null 2>&1 & echo ready > ready; sleep 300; : never"
    );
    let mut c = w.run().command(&["sh", "-c", &script]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    while !w.ws("ready").exists() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the sandboxed command never became ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Positive control: the background process is running.
    let start = Instant::now();
    while pgrep(&m).is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pgrep(&m).is_empty(),
        "the background process never started"
    );
    child.kill().unwrap();
    let _ = child.wait();
    let left = wait_gone(&m, Duration::from_secs(5));
    kill_matching(&m);
    assert!(left.is_empty(), "survived SIGKILL of stockade: {left:?}");
}

#[test]
fn read_only_flag_blocks_workspace_writes() {
    let w = World::new("core-ro");
    write(&w.ws("keep"), "keep\n");
    let before = snap_tree(&w.ws);
    let out = w.run().flag("--read-only").sh(
        "echo RAN; cat keep; echo x > new 2>/dev/null && echo ESCAPED-new; echo y >> keep 2>/dev/null && echo ESCAPED-keep; rm -f keep 2>/dev/null; echo DONE",
    );
    out.assert_ran("keep");
    out.assert_ran("DONE");
    out.assert_not("ESCAPED");
    assert_same_tree(&before, &snap_tree(&w.ws));
}

#[test]
fn json_result_and_report_file() {
    let w = World::new("core-json");
    let report = w.root.join("report.json");
    let out = w
        .run()
        .flag("--json")
        .flag("--report")
        .flag(&report)
        .sh("echo RAN; exit 3");
    out.assert_ran("RAN");
    assert_eq!(out.code(), 3);
    let last = out
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON on stderr: {out:#?}"));
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["exit_code"], 3, "{v:#}");
    let r: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["exit_code"], 3, "{r:#}");
}
