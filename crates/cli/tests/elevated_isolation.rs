//! Isolation between two host users of the elevated tier, as root, through the real CLI
//! (`stockade run --tier elevated`), each shown from the host against a positive control:
//! * every user's runs have a sandbox account of their own, and what A's run creates in A's
//!   workspace is A's on the host (idmapped bind);
//! * B's run cannot read, chmod, chown, setfacl or utime anything A's runs created or own (the
//!   same operations in A's own run work: the control);
//! * B's run cannot reach A's running sandbox through `/proc/<pid>/cwd`, `/root` or `/environ`
//!   (root can: the control), nor see A's System V IPC objects, and none outlive A's run;
//! * the symlink-swap race: a swapper exchanging a protected `.git` with a symlink to a directory
//!   outside the caller's reach (`RENAME_EXCHANGE`, in a loop, for 20 s) while runs repeat never
//!   shows a run that directory's content.
//!
//! Run: `flock /tmp/stockade-root.lock cargo test -p stockade --test elevated_isolation -- --nocapture`

mod elevated;

use elevated::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Mode, owner, group, mtime and ACL of `p`, as the host sees them.
fn host_state(p: &Path) -> (u32, u32, u32, i64, String) {
    let m = fs::symlink_metadata(p).unwrap();
    let acl = sh(&format!("getfacl -p -n '{}' 2>/dev/null", p.display()));
    (m.mode(), m.uid(), m.gid(), m.mtime(), acl)
}

fn ws_of(u: &TestUser) -> std::path::PathBuf {
    let ws = u.home.join("ws");
    fs::create_dir_all(&ws).unwrap();
    chown_r(&u.home, u);
    ws
}

#[test]
fn two_users_cannot_touch_each_other() {
    let _serial = serial();
    if !preflight("two_users_cannot_touch_each_other") {
        return;
    }
    let mut g = Guard::new();
    setup(&[]);
    let a = add_user(&mut g, USER);
    let b = add_user(&mut g, OTHER);
    // A's home is traversable, so B's attempts reach A's files (only the sandbox stops them).
    fs::set_permissions(&a.home, fs::Permissions::from_mode(0o755)).unwrap();
    let (aws, bws) = (ws_of(&a), ws_of(&b));
    // A tree whose modes and ACLs uninstall must give back exactly (`getfacl -R` before/after).
    let tree = aws.join("tree");
    sh(&format!(
        "mkdir -p {t}/d750 {t}/d755 && printf x > {t}/f644 && printf x > {t}/f600 && printf x > {t}/f664 \
         && printf x > {t}/x755 && printf x > {t}/acl640 && chmod 644 {t}/f644 && chmod 600 {t}/f600 \
         && chmod 664 {t}/f664 && chmod 755 {t}/x755 {t}/d755 && chmod 750 {t}/d750 && chmod 640 {t}/acl640 \
         && setfacl -m u:{bu}:r {t}/acl640 && chown -R {au}:{ag} {t}",
        t = tree.display(),
        bu = b.uid,
        au = a.uid,
        ag = a.gid
    ));
    let snapshot = || {
        sh(&format!(
            "cd {} && getfacl -R -p -n . 2>/dev/null; find . -printf '%m %u %g %p\n' | sort",
            tree.display()
        ))
    };
    let tree_before = snapshot();
    start_broker(&mut g);
    let (awsr, bwsr) = (
        aws.to_string_lossy().to_string(),
        bws.to_string_lossy().to_string(),
    );

    // --- A's run creates a hook, a secret and a control file -----------------------------------
    let r = run_as(
        &a,
        &["--workspace", &awsr],
        &aws,
        "mkdir -p hooks && printf 'echo A\\n' > hooks/pre-commit && chmod 755 hooks/pre-commit \
         && printf A-SECRET > secret.txt && chmod 600 secret.txt && : > ctl.txt && id -u && echo A-RAN",
    );
    assert!(r.stdout.contains("A-RAN"), "{} {}", r.stdout, r.stderr);
    let a_off: u32 = r.stdout.lines().next().unwrap().trim().parse().unwrap();
    assert_eq!(a_off, uid_of(&format!("stockade-{}-off", a.uid)));
    assert!(
        r.layers().iter().any(|l| l == "idmapped-roots"),
        "{:?}",
        r.layers()
    );
    for f in ["hooks", "hooks/pre-commit", "secret.txt", "ctl.txt"] {
        let m = fs::metadata(aws.join(f)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (a.uid, a.gid),
            "{f}: what A's run creates is A's on the host"
        );
    }

    // --- files written in a granted root honour the command's umask ------------------------------
    let r = run_as(
        &a,
        &["--workspace", &awsr],
        &aws,
        "umask 077 && printf S > um077.txt && mkdir um077.d && umask 022 && printf S > um022.txt && echo UM-RAN",
    );
    assert!(r.stdout.contains("UM-RAN"), "{} {}", r.stdout, r.stderr);
    let mode = |f: &str| fs::metadata(aws.join(f)).unwrap().mode() & 0o7777;
    assert_eq!(mode("um077.txt"), 0o600, "umask 077 file");
    assert_eq!(mode("um077.d"), 0o700, "umask 077 directory");
    assert_eq!(mode("um022.txt"), 0o644, "control: umask 022");

    // --- positive control: the same operations work in A's own run -------------------------------
    let before_ctl = host_state(&aws.join("ctl.txt"));
    let r = run_as(
        &a,
        &["--workspace", &awsr],
        &aws,
        "cat secret.txt; echo; chmod 0640 ctl.txt && echo CHMOD-OK; chgrp \"$(id -g)\" ctl.txt && echo CHOWN-OK; \
         setfacl -m g::rw ctl.txt && echo SETFACL-OK; touch -d 2001-02-03 ctl.txt && echo UTIME-OK",
    );
    for w in ["A-SECRET", "CHMOD-OK", "CHOWN-OK", "SETFACL-OK", "UTIME-OK"] {
        assert!(
            r.stdout.contains(w),
            "control {w}: {} {}",
            r.stdout,
            r.stderr
        );
    }
    let after_ctl = host_state(&aws.join("ctl.txt"));
    assert_ne!(
        before_ctl.0, after_ctl.0,
        "control: mode changed on the host"
    );
    assert_ne!(
        before_ctl.3, after_ctl.3,
        "control: mtime changed on the host"
    );

    // --- B's run attacks A's files: nothing changes ----------------------------------------------
    let targets = ["hooks/pre-commit", "hooks", "secret.txt", "ctl.txt"];
    let before: Vec<_> = targets.iter().map(|f| host_state(&aws.join(f))).collect();
    let mut script = String::from("id -u; ");
    for f in targets {
        let p = format!("{awsr}/{f}");
        script.push_str(&format!(
            "cat {p} 2>/dev/null && echo READ-{f}; chmod 0777 {p} 2>/dev/null && echo CHMOD-{f}; \
             chown \"$(id -u)\" {p} 2>/dev/null && echo CHOWN-{f}; chgrp \"$(id -g)\" {p} 2>/dev/null && echo CHGRP-{f}; \
             setfacl -m u:{}:rwx {p} 2>/dev/null && echo SETFACL-{f}; touch -d 2001-01-01 {p} 2>/dev/null && echo UTIME-{f}; ",
            b.uid
        ));
    }
    script.push_str("echo B-RAN");
    let r = run_as(&b, &["--workspace", &bwsr], &bws, &script);
    assert!(
        r.stdout.contains("B-RAN"),
        "the attack ran: {} {}",
        r.stdout,
        r.stderr
    );
    let b_off: u32 = r.stdout.lines().next().unwrap().trim().parse().unwrap();
    assert_ne!(a_off, b_off, "B's run has its own sandbox account");
    assert!(
        !r.stdout.contains("A-SECRET"),
        "B read A's secret: {}",
        r.stdout
    );
    for w in [
        "CHMOD-",
        "CHOWN-",
        "CHGRP-",
        "SETFACL-",
        "UTIME-",
        "READ-secret",
    ] {
        assert!(
            !r.stdout.contains(w),
            "B's run succeeded at {w}: {}",
            r.stdout
        );
    }
    let after: Vec<_> = targets.iter().map(|f| host_state(&aws.join(f))).collect();
    assert_eq!(before, after, "A's files unchanged on the host");
    eprintln!("metadata: B's run changes nothing of A's (A's own run can)");

    // --- A's running sandbox: magic links and IPC out of B's reach -------------------------------
    let mut held = spawn_as(
        &a,
        &["--workspace", &awsr],
        &aws,
        "ipcmk -M 4096 -p 0666 >/dev/null && echo HELD && sleep 37",
    );
    wait_until("A's run", 20, || !procs_of(a_off, "sleep 37").is_empty());
    let pid = procs_of(a_off, "sleep 37")[0];
    assert!(
        sh(&format!("ls /proc/{pid}/cwd")).contains("secret.txt"),
        "control: root lists A's sandbox through /proc/{pid}/cwd"
    );
    let mut script = String::new();
    for l in ["cwd", "root/home", "environ", "fd/1", "cwd/secret.txt"] {
        script.push_str(&format!(
            "{{ ls /proc/{pid}/{l}/ || cat /proc/{pid}/{l}; }} >/dev/null 2>&1 && echo REACHED-{l}; cat /proc/{pid}/{l} 2>/dev/null | head -c 64; "
        ));
    }
    // B makes one segment of its own (the control: listing works) and must see only that one.
    script.push_str(&format!(
        "ipcmk -M 4096 -p 0666 >/dev/null; {LIST_IPC}; echo B-RAN"
    ));
    let r = run_as(&b, &["--workspace", &bwsr], &bws, &script);
    assert!(r.stdout.contains("B-RAN"), "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("REACHED-"), "{}", r.stdout);
    assert!(!r.stdout.contains("A-SECRET"), "{}", r.stdout);
    let seen = ipc_keys_in(&r.stdout);
    assert_eq!(
        seen.len(),
        1,
        "B's run sees its own segment and nothing of A's: {seen:?}"
    );
    // A's segment is not on the host either (private IPC namespace), and goes with the run.
    assert!(
        !sysvipc("shm").iter().any(|(_, _, uid)| *uid == a_off),
        "A's segment is in the host's namespace"
    );
    let _ = held.kill();
    let _ = held.wait();
    wait_until("A's run ended", 20, || {
        procs_of(a_off, "sleep 37").is_empty()
    });
    assert!(!sysvipc("shm").iter().any(|(_, _, uid)| *uid == a_off));
    eprintln!("A's running sandbox: /proc links and IPC out of B's reach");

    // --- drift: the broker refuses while `setup --check` reports a drifted home ------------------
    let home = format!("/var/lib/stockade/home/stockade-{}-off", a.uid);
    sh(&format!("chmod 0777 {home}"));
    assert_eq!(check().0, 1, "setup --check reports the drift");
    let r = run_as(&a, &["--workspace", &awsr], &aws, "echo RAN");
    assert!(
        r.code == 125 && !r.stdout.contains("RAN") && r.stderr.contains("drifted"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    setup(&[]);
    let r = run_as(&a, &["--workspace", &awsr], &aws, "echo RAN");
    assert!(
        r.stdout.contains("RAN"),
        "control: after setup: {} {}",
        r.stdout,
        r.stderr
    );

    // --- uninstall gives every mode and ACL of the tree back exactly ------------------------------
    let granted = snapshot();
    assert_ne!(
        granted, tree_before,
        "control: the grants changed the tree's ACLs"
    );
    g.stop_broker();
    let u = stockade(&["uninstall"]);
    assert_uninstalled(&u);
    let tree_after = snapshot();
    assert_eq!(
        tree_before, tree_after,
        "getfacl -R before setup and after uninstall"
    );
    drop(g);
}

#[test]
fn symlink_swap_race_never_binds_outside() {
    let _serial = serial();
    if !preflight("symlink_swap_race_never_binds_outside") {
        return;
    }
    let mut g = Guard::new();
    setup(&[]);
    let a = add_user(&mut g, USER);
    let ws = ws_of(&a);
    let wsr = ws.to_string_lossy().to_string();
    // Outside the caller's reach: readable by anyone once reached, but behind a 0700 directory.
    let outside = Path::new("/root/stkt-race");
    let _ = fs::remove_dir_all(outside);
    fs::create_dir_all(outside.join("inner")).unwrap();
    fs::set_permissions(outside, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(outside.join("inner"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(outside.join("inner/HEAD"), "RACE-OUTSIDE\n").unwrap();
    fs::create_dir_all(ws.join(".git")).unwrap();
    fs::write(ws.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::os::unix::fs::symlink(outside.join("inner"), ws.join("evil")).unwrap();
    chown_r(&ws, &a);
    sh(&format!("chown -h {}:{} {wsr}/evil", a.uid, a.gid));
    // Control: the symlink leads there for root, not for the user.
    assert!(sh(&format!("cat {wsr}/evil/HEAD")).contains("RACE-OUTSIDE"));
    let (ok, _) = sh_ok(&format!("runuser -u {} -- cat {wsr}/evil/HEAD", a.name));
    assert!(!ok, "control: the user cannot read it by the symlink");
    start_broker(&mut g);

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps) = (Arc::clone(&stop), Arc::clone(&swaps));
        let (x, y) = (
            std::ffi::CString::new(format!("{wsr}/.git")).unwrap(),
            std::ffi::CString::new(format!("{wsr}/evil")).unwrap(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: renameat2 with two valid NUL-terminated paths (test attack code).
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        x.as_ptr(),
                        libc::AT_FDCWD,
                        y.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                if r == 0 {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let t = Instant::now();
    let (mut runs, mut ran, mut saw_repo) = (0u32, 0u32, 0u32);
    while t.elapsed() < Duration::from_secs(20) {
        let r = run_as(
            &a,
            &["--workspace", &wsr],
            &ws,
            "cat .git/HEAD 2>/dev/null; cat evil/HEAD 2>/dev/null; echo RAN",
        );
        runs += 1;
        assert!(
            !r.stdout.contains("RACE-OUTSIDE"),
            "run {runs} saw the outside directory: {} {}",
            r.stdout,
            r.stderr
        );
        if r.stdout.contains("RAN") {
            ran += 1;
        }
        if r.stdout.contains("refs/heads/main") {
            saw_repo += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    let n = swaps.load(Ordering::Relaxed);
    eprintln!(
        "race: {runs} runs ({ran} ran the command, {saw_repo} saw the repository), {n} swaps"
    );
    assert!(n > 1000, "the swapper ran ({n} swaps)");
    assert!(ran > 5 && saw_repo > 0, "runs happened during the race");
    let _ = fs::remove_dir_all(outside);
    drop(g);
}

/// 300 idle connections held by A (each sends nothing) do not stop B's run: A gets at most
/// `MAX_PER_USER` (32) slots, and its surplus connections are answered at once. Controls: the
/// connections are open while B runs, and A's own run is the one refused meanwhile.
#[test]
fn idle_connections_of_one_user_do_not_stop_another() {
    let _serial = serial();
    if !preflight("idle_connections_of_one_user_do_not_stop_another") {
        return;
    }
    let mut g = Guard::new();
    setup(&[]);
    let a = add_user(&mut g, USER);
    let b = add_user(&mut g, OTHER);
    let (aws, bws) = (ws_of(&a), ws_of(&b));
    start_broker(&mut g);
    let holder = format!(
        "import socket,sys,time\nc=[]\nfor i in range(300):\n s=socket.socket(socket.AF_UNIX)\n for t in range(200):\n  try:\n   s.connect('{SOCKET}'); break\n  except BlockingIOError:\n   time.sleep(0.01)\n c.append(s)\nprint('OPEN', len(c), flush=True)\ntime.sleep(40)\n"
    );
    let mut h = std::process::Command::new("setpriv");
    h.args([
        &format!("--reuid={}", a.uid),
        &format!("--regid={}", a.gid),
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        &holder,
    ])
    .current_dir("/")
    .stdout(std::process::Stdio::piped());
    let mut h = h.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(h.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "OPEN 300", "control: A holds 300 connections");
    let t = Instant::now();
    let r = run_as(
        &b,
        &["--workspace", &bws.to_string_lossy()],
        &bws,
        "echo B-RAN",
    );
    let took = t.elapsed();
    assert!(
        r.code == 0 && r.stdout.contains("B-RAN"),
        "B's run while A holds 300 connections: {} {}",
        r.stdout,
        r.stderr
    );
    assert!(took < Duration::from_secs(8), "B's run took {took:?}");
    let ra = run_as(
        &a,
        &["--workspace", &aws.to_string_lossy()],
        &aws,
        "echo A-RAN",
    );
    assert!(
        ra.code != 0 && ra.stderr.contains("connections to the broker"),
        "A's own run is the one refused: {} {}",
        ra.stdout,
        ra.stderr
    );
    let _ = h.kill();
    let _ = h.wait();
    eprintln!("availability: B ran in {took:?} while A held 300 connections");
    drop(g);
}
