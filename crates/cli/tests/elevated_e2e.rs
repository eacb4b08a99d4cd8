//! End-to-end test of the elevated tier, as root, through the real CLI: `stockade setup`,
//! `stockade broker` and `stockade run --tier elevated` as test users — filesystem and protected
//! paths, the connect gate and seccomp, the process tree, the broker's refusals, cross-user
//! isolation, the network, user namespaces disabled, grant timings, socket activation, and an
//! uninstall that leaves nothing. Skipped (with the reason printed; a failure under
//! `STOCKADE_REQUIRE_ROOT_TESTS=1`) when not root or when a real installation exists.
//!
//! Run: `flock /tmp/stockade-root.lock cargo test -p stockade --test elevated_e2e -- --nocapture`

mod elevated;

use elevated::*;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn elevated_end_to_end_as_root() {
    if !preflight("elevated_end_to_end_as_root") {
        return;
    }
    let mut g = Guard::new();
    let port = ALLOWED_PORT.to_string();
    setup(&["--allow-port", &port]);
    assert_eq!(check().0, 0);

    // --- users, workspace, broker ------------------------------------------------------------------
    let u = add_user(&mut g, USER);
    let o = add_user(&mut g, OTHER);
    // Each calling user has a pair of sandbox accounts of their own: made here for USER with
    // `setup --user`, by the broker on OTHER's first run.
    setup(&["--user", USER]);
    let (off_uid, on_uid) = (
        uid_of(&format!("stockade-{}-off", u.uid)),
        uid_of(&format!("stockade-{}-on", u.uid)),
    );
    let uids = [off_uid, on_uid];
    let ws = u.home.join("ws");
    fs::create_dir_all(ws.join(".git")).unwrap();
    fs::create_dir_all(ws.join("src")).unwrap();
    fs::write(ws.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::write(ws.join("src/a.txt"), "a\n").unwrap();
    fs::write(u.home.join("secret.txt"), "secret\n").unwrap();
    fs::set_permissions(u.home.join("secret.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(u.home.join("public.txt"), "public\n").unwrap();
    fs::write(o.home.join("theirs.txt"), "theirs\n").unwrap();
    chown_r(&u.home, &u);
    chown_r(&o.home, &o);
    start_broker(&mut g);

    // --- filesystem ---------------------------------------------------------------------------------
    let wsr = ws.to_string_lossy().to_string();
    let denied = format!("{}/public-but-denied.txt", u.home.display());
    fs::write(&denied, "pub\n").unwrap();
    sh(&format!(
        "chown {}:{} {denied} && chmod 644 {denied}",
        u.uid, u.gid
    ));
    // The workspace (writable; its `.git` protected by the plan) and one more masked file.
    let deny_cfg = config_file(
        "deny.toml",
        &format!("[filesystem]\ndeny_read = [\"{denied}\"]\n"),
    );
    let deny_cfg = deny_cfg.to_string_lossy().into_owned();
    let args = ["--workspace", wsr.as_str(), "--config", deny_cfg.as_str()];
    let fs_script = "id -u; echo new > src/b.txt && echo WROTE-WS; \
                     echo x >> .git/HEAD && echo WROTE-GIT; touch .git/new && echo CREATED-IN-GIT; \
                     cat ../secret.txt && echo READ-SECRET; cat ../public.txt >/dev/null && echo READ-PUBLIC; \
                     echo y > ../outside.txt && echo WROTE-HOME; echo z > /etc/stockade-x && echo WROTE-ETC; \
                     ls /home/stkt-other >/dev/null 2>&1 && echo LISTED-OTHER; \
                     cat /home/stkt-user/ws/src/a.txt >/dev/null && echo ABSOLUTE-OK; \
                     cat ../public-but-denied.txt && echo READ-DENIED; \
                     echo t > /tmp/stkt-x && echo WROTE-TMP; echo t > \"$TMPDIR/x\" && echo WROTE-TMPDIR; \
                     cp /bin/true src/t && chmod 2755 src/t && echo SETID-MADE; \
                     mkdir -m 2775 src/sgdir && echo SETGID-DIR; exit 7";
    let check_fs = |label: &str| {
        let r = run_as(&u, &args, &ws, fs_script);
        eprintln!(
            "[{label}] code {} stdout:\n{}stderr:\n{}",
            r.code, r.stdout, r.stderr
        );
        assert_eq!(r.code, 7, "{label}: exit code passes through");
        assert_eq!(
            r.stdout.lines().next(),
            Some(off_uid.to_string().as_str()),
            "{label}: runs as the offline account"
        );
        assert!(r.stdout.contains("WROTE-WS"), "{label}");
        assert!(
            r.stdout.contains("ABSOLUTE-OK"),
            "{label}: workspace reachable by absolute path through the 0750 home"
        );
        for bad in [
            "WROTE-GIT",
            "CREATED-IN-GIT",
            "READ-SECRET",
            "WROTE-HOME",
            "WROTE-ETC",
            "LISTED-OTHER",
            "READ-DENIED",
            "WROTE-TMP\n",
            "SETID-MADE",
            "SETGID-DIR",
        ] {
            assert!(!r.stdout.contains(bad), "{label}: {bad}");
        }
        assert!(
            r.stdout.contains("WROTE-TMPDIR"),
            "{label}: the run's private TMPDIR is writable"
        );
        assert!(
            !Path::new("/tmp/stkt-x").exists(),
            "{label}: /tmp must not be writable (Landlock)"
        );
        let t = fs::metadata(ws.join("src/t"))
            .map(|m| m.mode() & 0o7000)
            .unwrap_or(0);
        assert_eq!(t, 0, "{label}: no set-id bits on sandbox-created files");
        assert!(
            r.stdout.contains("READ-PUBLIC"),
            "{label}: reading stays broad"
        );
        // From the host.
        assert_eq!(
            fs::read_to_string(ws.join(".git/HEAD")).unwrap(),
            "ref: refs/heads/main\n"
        );
        assert!(
            !ws.join(".git/new").exists()
                && !u.home.join("outside.txt").exists()
                && !Path::new("/etc/stockade-x").exists()
        );
        let b = fs::metadata(ws.join("src/b.txt")).unwrap();
        assert_eq!(
            b.uid(),
            u.uid,
            "{label}: created through the idmapped bind, so the user's own"
        );
        // The user can still edit what the sandbox created (inherited default entry).
        let (ok, out) = sh_ok(&format!(
            "runuser -u {} -- sh -c 'echo edit >> {}/src/b.txt'",
            u.name, wsr
        ));
        assert!(ok, "{label}: user cannot edit sandbox-created file: {out}");
    };
    check_fs("fs");

    // Repeat run does not walk again (record + intact root ACL).
    let r = run_as(&u, &args, &ws, "true");
    assert!(r.stderr.contains("already granted"), "{}", r.stderr);

    // --- connect gate and seccomp ----------------------------------------------------------------
    check_gate_and_seccomp(&u, &args, &ws);
    // A program that cannot be executed: the run's process reports why, nothing is claimed.
    let mut nf = Command::new(BIN);
    nf.args(["run", "--tier", "elevated", "--json"])
        .args(args)
        .args(["--", "/nonexistent-stkt"]);
    let nf = as_user(&mut nf, &u, "/usr/bin:/bin", &ws)
        .output()
        .expect("run client");
    let err = String::from_utf8_lossy(&nf.stderr);
    assert_eq!(nf.status.code(), Some(127), "{err}");
    assert!(
        err.contains("cannot start \"/nonexistent-stkt\"") && err.contains("No such file"),
        "{err}"
    );
    assert!(!err.contains("enforced"), "{err}");
    // Signals pass through the supervisor: the command's own SIGTERM is the run's exit.
    let r = run_as(&u, &args, &ws, "kill -TERM $$");
    assert_eq!(r.code, 128 + libc::SIGTERM, "{} {}", r.stdout, r.stderr);

    // --- process tree: per-run cgroup kill, isolation between runs, timeout, disconnect -------
    let long = spawn_as(&u, &["--workspace", &wsr], &ws, "sleep 4.5; echo B-DONE");
    wait_until("run B started", 10, || {
        !procs_of(off_uid, "sleep 4.5").is_empty()
    });
    let r = run_as(
        &u,
        &["--workspace", &wsr],
        &ws,
        "sleep 301 & sleep 0.2; echo A-EXITS",
    );
    assert!(r.stdout.contains("A-EXITS"), "{} {}", r.stdout, r.stderr);
    wait_until("run A's background child killed with its cgroup", 5, || {
        procs_of(off_uid, "sleep 301").is_empty()
    });
    assert!(
        !procs_of(off_uid, "sleep 4.5").is_empty(),
        "run B must survive run A's cleanup"
    );
    let out = long.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("B-DONE") && out.status.success());
    let t = Instant::now();
    let r = run_as(
        &u,
        &["--workspace", &wsr, "--timeout", "1"],
        &ws,
        "sleep 302",
    );
    assert_eq!(r.code, 124, "timeout exit code: {}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(procs_of(off_uid, "sleep 302").is_empty());
    let mut c = spawn_as(&u, &["--workspace", &wsr], &ws, "sleep 303");
    wait_until("run started", 10, || {
        !procs_of(off_uid, "sleep 303").is_empty()
    });
    let _ = c.kill();
    let _ = c.wait();
    wait_until("run killed after the client went away", 5, || {
        procs_of(off_uid, "sleep 303").is_empty()
    });
    eprintln!(
        "process tree: background child killed, other run untouched, timeout 124, disconnect kills"
    );

    // --- refusals: the broker never grants what the caller cannot write itself -------------------
    // `--allow-dangerous-roots` lets the client's own plan pass, so the broker is what refuses.
    let refused = |target: &str, why: &str| {
        let r = run_as(
            &u,
            &["--writable", target, "--allow-dangerous-roots"],
            &ws,
            "echo RAN",
        );
        eprintln!("[refuse {target}] code {} {}", r.code, r.stderr.trim());
        assert_eq!(
            r.code, 125,
            "{target} must be refused ({why}): {} {}",
            r.stdout, r.stderr
        );
        // The broker refuses it, or `stockade` itself cannot list the root (another user's
        // home) or a directory beneath it (the walk fails closed) before asking the broker.
        assert!(
            r.stderr.contains("refused")
                || r.stderr.contains("cannot list writable root")
                || r.stderr.contains("cannot search"),
            "{}",
            r.stderr
        );
        assert!(!r.stdout.contains("RAN"));
    };
    refused("/etc", "system dir");
    refused("/etc/ssh", "system dir");
    refused(&o.home.to_string_lossy(), "another user's home");
    refused(&u.home.to_string_lossy(), "the caller's home itself");
    refused("/tmp", "shared top-level dir");
    std::os::unix::fs::symlink(&o.home, ws.join("link")).unwrap();
    refused(&format!("{wsr}/link"), "symlink to another user's home");
    // (A `..` path never reaches the broker from `stockade`, which sends canonical paths; the
    // broker's refusal of one is unit-tested in `stockade_elevated::validate`.)
    // A sandboxed command cannot ask the broker for another sandbox (e.g. the online account):
    // the connect gate keeps the broker's socket (outside the writable roots) out of reach...
    let nested = format!(
        "XDG_STATE_HOME=\"$TMPDIR\" {BIN} run --tier elevated --network on -- /bin/true; echo NESTED=$?"
    );
    let r = run_as(&u, &args, &ws, &nested);
    assert!(
        r.stdout.contains("NESTED=125")
            && r.stderr.contains("cannot reach the stockade broker")
            && r.stderr.contains("Permission denied"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    // ...and when a policy allows that socket, the broker itself refuses sandbox accounts.
    let allow_cfg = config_file(
        "allow-broker.toml",
        &format!("[filesystem]\ndeny_read = [\"{denied}\"]\nallow_unix_sockets = [\"{SOCKET}\"]\n"),
    );
    let allow_cfg = allow_cfg.to_string_lossy().into_owned();
    let allow_broker = ["--workspace", wsr.as_str(), "--config", allow_cfg.as_str()];
    let r = run_as(&u, &allow_broker, &ws, &nested);
    assert!(
        r.stdout.contains("NESTED=125") && r.stderr.contains("sandbox account"),
        "{} {}",
        r.stdout,
        r.stderr
    );

    // Symlink swapped in during requests: swap `race` between a real directory and a symlink to
    // the other user's home with RENAME_EXCHANGE, while requests go to the broker.
    let race = ws.join("race");
    let alt = ws.join("alt");
    fs::create_dir(&race).unwrap();
    chown_r(&race, &u);
    std::os::unix::fs::symlink(&o.home, &alt).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (race, alt, stop) = (race.clone(), alt.clone(), stop.clone());
        std::thread::spawn(move || {
            let a = std::ffi::CString::new(race.to_string_lossy().as_bytes()).unwrap();
            let b = std::ffi::CString::new(alt.to_string_lossy().as_bytes()).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: both paths are valid NUL-terminated strings; RENAME_EXCHANGE swaps them.
                unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                n += 1;
            }
            n
        })
    };
    let racer = race.to_string_lossy().to_string();
    let (mut ran, mut refused_n) = (0, 0);
    for _ in 0..40 {
        let r = run_as(&u, &["--writable", &racer], &ws, "echo RAN");
        if r.stdout.contains("RAN") {
            ran += 1;
        } else {
            refused_n += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    if fs::symlink_metadata(&race)
        .unwrap()
        .file_type()
        .is_symlink()
    {
        fs::rename(&race, ws.join("tmp-link")).unwrap();
        fs::rename(&alt, &race).unwrap();
        fs::rename(ws.join("tmp-link"), &alt).unwrap();
    }
    eprintln!("race: {ran} runs granted the real dir, {refused_n} refused, {swaps} swaps");
    assert!(
        !has_stockade_acl(&o.home, &uids),
        "other user's home got a stockade ACL entry"
    );
    assert!(!has_stockade_acl(&o.home.join("theirs.txt"), &uids));
    let r = run_as(
        &u,
        &args,
        &ws,
        "cat /home/stkt-other/theirs.txt && echo READ-OTHER",
    );
    assert!(!r.stdout.contains("READ-OTHER"));

    // Cross-user: another user's grants are useless to runs for this user (same sandbox uid).
    let ows = o.home.join("ows");
    fs::create_dir_all(&ows).unwrap();
    fs::write(ows.join("code.txt"), "other's code\n").unwrap();
    chown_r(&ows, &o);
    let owsr = ows.to_string_lossy().to_string();
    let r = run_as(
        &o,
        &["--workspace", &owsr],
        &ows,
        "cat code.txt && echo O-READS-OWN && echo w > mine.txt && echo O-WRITES-OWN",
    );
    assert!(
        r.stdout.contains("O-READS-OWN") && r.stdout.contains("O-WRITES-OWN"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let r = run_as(&u, &args, &ws, &format!("cat {owsr}/code.txt && echo U-READS-OTHERS; ls {owsr} && echo U-LISTS-OTHERS; echo x > {owsr}/mine.txt && echo U-WRITES-OTHERS"));
    for bad in ["U-READS-OTHERS", "U-LISTS-OTHERS", "U-WRITES-OTHERS"] {
        assert!(
            !r.stdout.contains(bad),
            "cross-user leak {bad}: {} {}",
            r.stdout,
            r.stderr
        );
    }
    // Started from inside another user's tree: `stockade` runs the command in the workspace
    // instead (the cwd is outside every writable root), so nothing of that tree is listed...
    let r = run_as_in_foreign_cwd(&u, &args, &ows, "pwd; ls");
    assert!(
        r.stdout.starts_with(&format!("{wsr}\n")) && !r.stdout.contains("code.txt"),
        "cwd inside another user's tree: {} {}",
        r.stdout,
        r.stderr
    );
    // ...and naming that tree as a writable root fails closed (nothing runs).
    let mut wide: Vec<&str> = args.to_vec();
    wide.extend(["--writable", owsr.as_str()]);
    let r = run_as_in_foreign_cwd(&u, &wide, &ows, "ls && echo LISTED-FROM-CWD");
    assert!(
        !r.stdout.contains("LISTED-FROM-CWD"),
        "cwd inside another user's tree: {} {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.code, 125, "{}", r.stderr);
    eprintln!("cross-user: runs for {USER} cannot use {OTHER}'s grants");

    // --- IPC namespace, start directory, bounded reads of caller files ----------------------------
    check_ipc(&u, &o, &args, &ws, off_uid);
    check_cwd_magic_links(&u, &o, &ws, &ows, off_uid);
    let broker_pid = g.broker.as_ref().expect("broker").id();
    check_gitfile_reads(&u, broker_pid, &uids);

    // --- network ------------------------------------------------------------------------------------
    sh(&format!("ip netns add {NETNS}"));
    g.netns = true;
    sh(&format!(
        "ip link add {VETH_HOST} type veth peer name {VETH_NS}"
    ));
    sh(&format!("ip link set {VETH_NS} netns {NETNS}"));
    sh(&format!(
        "ip addr add 10.203.77.1/30 dev {VETH_HOST} && ip link set {VETH_HOST} up"
    ));
    sh(&format!("ip netns exec {NETNS} sh -c 'ip addr add {NS_ADDR}/30 dev {VETH_NS} && ip link set {VETH_NS} up && ip link set lo up'"));
    let stop = Arc::new(AtomicBool::new(false));
    let t1 = listener_in_netns(stop.clone());
    let open_l = TcpListener::bind(("127.0.0.1", ALLOWED_PORT)).expect("bind allowed port");
    let closed_l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let closed_port = closed_l.local_addr().unwrap().port();
    let t2 = accept_loop(open_l, stop.clone());
    let t3 = accept_loop(closed_l, stop.clone());
    let net = |mode: &str, host: &str, port: u16| -> String {
        let r = run_as(
            &u,
            &["--network", mode, "--workspace", &wsr],
            &ws,
            &connect_script(host, port),
        );
        r.stdout.trim().to_string()
    };
    assert_eq!(
        net("off", NS_ADDR, 18080),
        "BLOCKED",
        "offline reaches the test netns"
    );
    // Fail closed: with the chain flushed the broker refuses offline runs.
    sh("nft flush chain inet stockade output");
    let r = run_as(
        &u,
        &["--network", "off", "--workspace", &wsr],
        &ws,
        &connect_script(NS_ADDR, 18080),
    );
    assert_eq!(
        r.code, 125,
        "offline run with flushed rules must be refused: {} {}",
        r.stdout, r.stderr
    );
    assert!(
        r.stderr.contains("differs from the installed rules"),
        "{}",
        r.stderr
    );
    setup(&[]);
    assert_eq!(check().0, 0, "setup repairs the flushed chain");
    assert_eq!(
        net("off", "127.0.0.1", closed_port),
        "BLOCKED",
        "offline reaches a non-allowed loopback port"
    );
    assert_eq!(
        net("off", "127.0.0.1", ALLOWED_PORT),
        "CONNECTED",
        "offline cannot reach the allowed proxy port"
    );
    assert_eq!(
        net("on", NS_ADDR, 18080),
        "CONNECTED",
        "online cannot reach the test netns"
    );
    assert_eq!(net("on", "127.0.0.1", closed_port), "CONNECTED");
    // Loopback UDP is blocked for the offline account, even on the allowed (TCP) proxy port.
    let udp = std::net::UdpSocket::bind(("127.0.0.1", ALLOWED_PORT)).expect("bind udp");
    udp.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let send = format!("bash -c 'printf ping > /dev/udp/127.0.0.1/{ALLOWED_PORT}'; echo SENT");
    let mut buf = [0u8; 16];
    run_as(&u, &["--network", "off", "--workspace", &wsr], &ws, &send);
    assert!(
        udp.recv(&mut buf).is_err(),
        "offline account sent UDP on loopback"
    );
    run_as(&u, &["--network", "on", "--workspace", &wsr], &ws, &send);
    assert_eq!(
        udp.recv(&mut buf).ok(),
        Some(4),
        "online account's UDP must arrive"
    );
    let (ok, _) = sh_ok(&format!(
        "{} | grep -q CONNECTED",
        connect_script(NS_ADDR, 18080)
    ));
    assert!(ok, "root itself reaches the netns (test harness sanity)");
    stop.store(true, Ordering::Relaxed);
    for t in [t1, t2, t3] {
        t.join().unwrap();
    }
    eprintln!("network: offline blocked (netns, loopback TCP and UDP), allowed TCP port open, online open");

    // --- same runs with unprivileged user namespaces disabled -----------------------------------
    let old = sh("sysctl -n user.max_user_namespaces").trim().to_string();
    let (sysctl_ok, msg) = sh_ok("sysctl -q user.max_user_namespaces=0");
    if sysctl_ok {
        g.sysctl_restore = Some(old);
        eprintln!("user.max_user_namespaces=0 set");
    } else {
        // Not a skip of the check: the runs below still happen with user namespaces unavailable
        // to the broker, the client and the command; only the mechanism differs.
        eprintln!(
            "NOTE: sysctl user.max_user_namespaces is not writable here ({}); blocking user namespaces with a seccomp filter in the broker and clients instead",
            msg.trim()
        );
        NO_USERNS.store(true, Ordering::Relaxed);
        if let Some(mut b) = g.broker.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
        start_broker(&mut g);
        let mut probe = Command::new("unshare");
        probe.args(["--user", "true"]).stderr(Stdio::null());
        block_userns_in_child(&mut probe);
        assert!(
            !probe.status().unwrap().success(),
            "filter does not block user namespaces"
        );
        let r = run_as(
            &u,
            &args,
            &ws,
            "unshare --user true && echo USERNS-WORKS || echo USERNS-BLOCKED",
        );
        assert!(
            r.stdout.contains("USERNS-BLOCKED"),
            "{} {}",
            r.stdout,
            r.stderr
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(&stockade(&["doctor", "--json"]).stdout).expect("doctor --json");
    assert_eq!(
        v["tiers"]["linux-unelevated"]["available"], false,
        "userns still works with max_user_namespaces=0: {v:#}"
    );
    // `--tier auto` (the default) falls back to the installed elevated tier, and says why.
    let mut auto = Command::new(BIN);
    if NO_USERNS.load(Ordering::Relaxed) {
        block_userns_in_child(&mut auto);
    }
    auto.args(["run", "--json"])
        .args(args)
        .args(["--", "/bin/sh", "-c", "echo AUTO-RAN"]);
    let r = as_user(&mut auto, &u, "/usr/bin:/bin", &ws)
        .output()
        .expect("auto run");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("AUTO-RAN")
            && err.contains("\"tier\":\"linux-elevated\"")
            && err.contains("used the elevated tier"),
        "auto tier: {err}"
    );
    eprintln!("user namespaces blocked: doctor says so; auto tier: the elevated tier ran");
    check_fs("fs, userns disabled");
    assert_eq!(net("off", NS_ADDR, 18080), "BLOCKED");
    if let Some(v) = g.sysctl_restore.take() {
        sh(&format!("sysctl -q user.max_user_namespaces={v}"));
    }
    if NO_USERNS.swap(false, Ordering::Relaxed) {
        if let Some(mut b) = g.broker.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
        start_broker(&mut g);
    }

    // --- timings ---------------------------------------------------------------------------------
    let n = 20;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(run_as(&u, &args, &ws, "true").code, 0);
    }
    let per_run = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        Command::new("/bin/sh")
            .args(["-c", "true"])
            .status()
            .unwrap();
    }
    let bare = t.elapsed() / n;
    eprintln!("TIMING per-run: {per_run:?} through the broker vs {bare:?} for a bare sh -c true");

    let big = u.home.join("big");
    let files = 100_000usize;
    for d in 0..100 {
        let dir = big.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..files / 100 {
            fs::write(dir.join(format!("f{f:04}")), b"x").unwrap();
        }
    }
    chown_r(&big, &u);
    let bigs = big.to_string_lossy().to_string();
    let t = Instant::now();
    let r = run_as(
        &u,
        &["--workspace", &bigs],
        &big,
        "echo ok > d000/new && echo OK",
    );
    let first = t.elapsed();
    assert!(r.stdout.contains("OK"), "{} {}", r.stdout, r.stderr);
    let t = Instant::now();
    let r = run_as(&u, &["--workspace", &bigs], &big, "true");
    let second = t.elapsed();
    assert!(r.stderr.contains("already granted"), "{}", r.stderr);
    eprintln!("TIMING first grant of {files} files: {first:?}; repeat run: {second:?}");
    assert!(second < first / 5, "repeat run walked again?");

    // --- systemd-style socket activation (LISTEN_FDS/LISTEN_PID) --------------------------------
    if let Some(mut b) = g.broker.take() {
        let _ = b.kill();
        let _ = b.wait();
    }
    let _ = fs::remove_file(SOCKET);
    let listener = std::os::unix::net::UnixListener::bind(SOCKET).unwrap();
    fs::set_permissions(SOCKET, fs::Permissions::from_mode(0o666)).unwrap();
    let lfd = listener.as_raw_fd();
    let mut act = Command::new("/bin/sh");
    act.args([
        "-c",
        &format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {BIN} broker --socket-activated"),
    ])
    .stdout(Stdio::null());
    // SAFETY: dup2 in the forked child: puts the listening socket at fd 3 (without CLOEXEC),
    // as systemd does; one raw syscall on descriptors that are open.
    unsafe {
        act.pre_exec(move || {
            if libc::dup2(lfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    g.broker = Some(act.spawn().unwrap());
    drop(listener);
    let r = run_as(&u, &args, &ws, "echo ACTIVATED");
    assert!(
        r.stdout.contains("ACTIVATED"),
        "socket-activated broker: {} {}",
        r.stdout,
        r.stderr
    );
    eprintln!("socket activation: ok");

    // --- uninstall: nothing of stockade left -------------------------------------------------------
    if let Some(mut b) = g.broker.take() {
        let _ = b.kill();
        let _ = b.wait();
    }
    // System V IPC objects of a sandbox account left in the host's namespace (as a run of an
    // older version would have): made unsandboxed as that account (visible on the host: the
    // control), plus one of another user that uninstall must leave alone.
    let off_gid = sh("getent group stockade-sandbox | cut -d: -f3");
    let as_off = format!(
        "setpriv --reuid={off_uid} --regid={} --clear-groups",
        off_gid.trim()
    );
    for (kind, flag) in [("shm", "-M 4096"), ("msg", "-Q"), ("sem", "-S 1")] {
        let (ok, out) = sh_ok(&format!("{as_off} ipcmk {flag} -p 0666"));
        assert!(ok, "ipcmk {flag} as the offline account: {out}");
        assert!(
            sysvipc(kind).iter().any(|(_, _, uid)| *uid == off_uid),
            "control: a {kind} object of uid {off_uid} is on the host"
        );
    }
    let (ok, out) = sh_ok(&format!("runuser -u {} -- ipcmk -M 4096 -p 0600", o.name));
    assert!(ok, "{out}");
    let others_shm: Vec<String> = sysvipc("shm")
        .into_iter()
        .filter(|(_, _, uid)| *uid == o.uid)
        .map(|(_, id, _)| id)
        .collect();
    assert!(!others_shm.is_empty());
    let rep = stockade(&["uninstall"]);
    eprintln!("uninstall: {}", rep.stdout);
    for kind in ["shm", "msg", "sem"] {
        let left: Vec<_> = sysvipc(kind)
            .into_iter()
            .filter(|(_, _, uid)| uids.contains(uid))
            .collect();
        assert!(
            left.is_empty(),
            "uninstall left {kind} objects of the sandbox accounts: {left:?}"
        );
    }
    let still: Vec<String> = sysvipc("shm").into_iter().map(|(_, id, _)| id).collect();
    for id in &others_shm {
        assert!(
            still.contains(id),
            "uninstall removed {OTHER}'s segment {id}"
        );
        let _ = sh_ok(&format!("ipcrm -m {id}"));
    }
    assert_uninstalled(&rep);
    let acl = sh(&format!(
        "getfacl -R -p -n {wsr} {bigs} {} {denied} 2>/dev/null",
        u.home.display()
    ));
    let left = named_entries(&acl);
    assert!(
        left.is_empty(),
        "ACL entries left after uninstall: {left:?}"
    );
    assert_eq!(
        fs::metadata(ws.join("src/b.txt")).unwrap().uid(),
        u.uid,
        "sandbox file given back to the user"
    );
    assert!(!Path::new("/var/lib/stockade").exists() && !Path::new("/etc/stockade").exists());
    assert!(!Path::new("/etc/systemd/system/stockade-broker.socket").exists());
    let _ = (off_uid, on_uid);
    fs::remove_dir_all(&big).unwrap(); // faster than `userdel -r` walking it
    drop(g);
}

/// Every run has a private IPC namespace: a 0666 segment made inside is gone from the host after
/// the run (control: the same `ipcmk` unsandboxed as the sandbox account is on the host), and a
/// host segment another user made is invisible inside (control: the caller sees it unsandboxed).
fn check_ipc(u: &TestUser, o: &TestUser, args: &[&str], ws: &Path, off_uid: u32) {
    let r = run_as(
        u,
        args,
        ws,
        &format!("ipcmk -M 4096 -p 0666 >/dev/null && ipcmk -Q -p 0666 >/dev/null && echo CREATED; {LIST_IPC}"),
    );
    let inside = ipc_keys_in(&r.stdout);
    assert!(
        r.stdout.contains("CREATED") && inside.iter().any(|(k, _)| k == "shm"),
        "the run creates and lists its own segment (control): {} {}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.layers().iter().any(|l| l == "ipc-namespace"),
        "{:?}",
        r.layers()
    );
    for kind in ["shm", "msg", "sem"] {
        let host = sysvipc(kind);
        assert!(
            !host.iter().any(|(_, _, uid)| *uid == off_uid),
            "a {kind} object of the sandbox account outlived the run: {host:?}"
        );
        for (k, key) in &inside {
            assert!(
                k != kind || !host.iter().any(|(hk, _, _)| hk == key),
                "{kind} key {key} made inside the run is on the host"
            );
        }
    }
    // Control: the same creation unsandboxed as the sandbox account is visible on the host.
    let off_gid = sh("getent group stockade-sandbox | cut -d: -f3");
    let (ok, out) = sh_ok(&format!(
        "setpriv --reuid={off_uid} --regid={} --clear-groups ipcmk -M 4096 -p 0666",
        off_gid.trim()
    ));
    assert!(ok, "{out}");
    let made: Vec<_> = sysvipc("shm")
        .into_iter()
        .filter(|(_, _, uid)| *uid == off_uid)
        .collect();
    assert_eq!(made.len(), 1, "control: unsandboxed segment on the host");
    sh(&format!("ipcrm -m {}", made[0].1));

    // A host segment of another user (0666) is out of sight inside.
    let (ok, out) = sh_ok(&format!("runuser -u {} -- ipcmk -M 4096 -p 0666", o.name));
    assert!(ok, "{out}");
    let theirs: Vec<_> = sysvipc("shm")
        .into_iter()
        .filter(|(_, _, uid)| *uid == o.uid)
        .collect();
    assert_eq!(theirs.len(), 1);
    let (key, id) = (theirs[0].0.clone(), theirs[0].1.clone());
    let seen = sh(&format!("runuser -u {} -- cat /proc/sysvipc/shm", u.name));
    assert!(
        seen.split_whitespace().any(|w| w == key),
        "control: {USER} sees {OTHER}'s segment unsandboxed"
    );
    let r = run_as(u, args, ws, &format!("echo LISTED; {LIST_IPC}; ipcs -m"));
    sh(&format!("ipcrm -m {id}"));
    assert!(r.stdout.contains("LISTED"), "{} {}", r.stdout, r.stderr);
    assert!(
        !ipc_keys_in(&r.stdout).iter().any(|(_, k)| *k == key),
        "{OTHER}'s segment {key} is visible in {USER}'s run: {}",
        r.stdout
    );
    eprintln!("ipc: private per run, nothing left, the host's out of sight");
}

/// A start directory that is (or leads through) `/proc/<pid>/cwd` of another user's running
/// command (same sandbox uid) is refused with nothing listed; sent by a raw client, since
/// `stockade` itself canonicalises the cwd. Controls: root lists it unsandboxed, and the raw
/// client works with an ordinary cwd.
fn check_cwd_magic_links(u: &TestUser, o: &TestUser, ws: &Path, ows: &Path, off_uid: u32) {
    let owsr = ows.to_string_lossy().to_string();
    let wsr = ws.to_string_lossy().to_string();
    let mut theirs = spawn_as(o, &["--workspace", &owsr], ows, "sleep 41");
    let _ = off_uid;
    // OTHER's run has OTHER's own offline account (created on their first run).
    let o_off = || {
        sh(&format!("id -u stockade-{}-off 2>/dev/null", o.uid))
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };
    wait_until("the other user's run", 20, || {
        !procs_of(o_off(), "sleep 41").is_empty()
    });
    let pid = procs_of(o_off(), "sleep 41")[0];
    let magic = format!("/proc/{pid}/cwd");
    let listed = sh(&format!("ls {magic}"));
    assert!(
        listed.contains("code.txt"),
        "control: root lists {OTHER}'s workspace through {magic}: {listed}"
    );
    let r = raw_request_as(u, &raw_run_request(&wsr, &wsr, &[&wsr], "ls; echo RAW-RAN"));
    assert!(
        r.code == 0 && r.stdout.contains("RAW-RAN") && r.stdout.contains("src"),
        "control: the raw client runs a command: {} {}",
        r.stdout,
        r.stderr
    );
    let link = ws.join("proclink");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&magic, &link).unwrap();
    sh(&format!("chown -h {}:{} {}", u.uid, u.gid, link.display()));
    let linkr = link.to_string_lossy().to_string();
    for (label, workspace, cwd, roots) in [
        (
            "cwd in /proc",
            wsr.as_str(),
            magic.as_str(),
            vec![wsr.as_str()],
        ),
        (
            "workspace and cwd in /proc",
            magic.as_str(),
            magic.as_str(),
            vec![],
        ),
        (
            "symlink in the workspace to it",
            wsr.as_str(),
            linkr.as_str(),
            vec![wsr.as_str()],
        ),
    ] {
        let r = raw_request_as(
            u,
            &raw_run_request(workspace, cwd, &roots, "pwd; ls; echo RAW-RAN"),
        );
        eprintln!("[cwd {label}] code {} {}", r.code, r.stderr.trim());
        assert_eq!(r.code, 125, "{label}: {} {}", r.stdout, r.stderr);
        assert!(
            !r.stdout.contains("RAW-RAN") && !r.stdout.contains("code.txt"),
            "{label}: listed another user's workspace: {}",
            r.stdout
        );
        assert!(
            r.stderr.contains("start directory"),
            "{label}: the reason names the start directory: {}",
            r.stderr
        );
    }
    fs::remove_file(&link).unwrap();
    let _ = theirs.kill();
    let _ = theirs.wait();
    eprintln!("cwd: magic links to another run refused");
}

/// The broker reads at most 4 KiB of a caller's `.git` file: a 1 GiB sparse one leaves its peak
/// RSS below 64 MiB (control: the broker did walk the file — it got its ACL entry — and it is
/// 1 GiB); a `gitdir:` line longer than that is refused with a clear error (control: the same
/// workspace with a short line runs).
fn check_gitfile_reads(u: &TestUser, broker_pid: u32, uids: &[u32]) {
    let ws = u.home.join("ws-sparse");
    fs::create_dir_all(&ws).unwrap();
    sh(&format!("truncate -s 1G {}/.git", ws.display()));
    chown_r(&ws, u);
    let wsr = ws.to_string_lossy().to_string();
    let r = run_as(u, &["--workspace", &wsr], &ws, "echo RAN");
    let hwm = vm_hwm_kib(broker_pid);
    eprintln!("[sparse .git] code {} broker VmHWM {hwm} KiB", r.code);
    assert!(
        fs::metadata(ws.join(".git")).unwrap().len() == 1 << 30
            && has_stockade_acl(&ws.join(".git"), uids),
        "control: the broker walked the 1 GiB .git file: {}",
        r.stderr
    );
    assert!(
        r.code == 0 && r.stdout.contains("RAN"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert!(
        hwm < 64 * 1024,
        "broker peak RSS {hwm} KiB after a 1 GiB .git file"
    );

    let ws = u.home.join("ws-longgit");
    fs::create_dir_all(ws.join("sub")).unwrap();
    fs::write(
        ws.join("sub/.git"),
        format!(
            "gitdir: /{}
",
            "a".repeat(8192)
        ),
    )
    .unwrap();
    chown_r(&ws, u);
    let wsr = ws.to_string_lossy().to_string();
    let r = run_as(u, &["--workspace", &wsr], &ws, "echo RAN");
    eprintln!("[long gitdir line] code {} {}", r.code, r.stderr.trim());
    assert_eq!(r.code, 125, "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("RAN"));
    // Refused by the broker's bounded read, or already by stockade's own fail-closed walk (the
    // 8 KiB gitdir cannot be resolved: ENAMETOOLONG); either way nothing ran. The broker's bound
    // on what it reads is shown by the 1 GiB sparse file above (it passes the walk).
    assert!(
        r.stderr.contains("longer than 4096 bytes") || r.stderr.contains("File name too long"),
        "{}",
        r.stderr
    );
    fs::write(
        ws.join("sub/.git"),
        "gitdir: ../gd
",
    )
    .unwrap();
    let r = run_as(u, &["--workspace", &wsr], &ws, "echo RAN");
    assert!(
        r.code == 0 && r.stdout.contains("RAN"),
        "control: a short gitdir line runs: {} {}",
        r.stdout,
        r.stderr
    );
    eprintln!("gitfile: bounded reads");
}

/// A unix socket listener on the host (mode 0777) that counts the connections it accepts.
struct CountingSocket {
    path: PathBuf,
    count: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountingSocket {
    fn new(path: &Path) -> CountingSocket {
        let _ = fs::remove_file(path);
        let l = std::os::unix::net::UnixListener::bind(path).expect("bind test socket");
        fs::set_permissions(path, fs::Permissions::from_mode(0o777)).unwrap();
        l.set_nonblocking(true).unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (Arc::clone(&count), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut conn, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        let _ = conn.write_all(b"hello\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        CountingSocket {
            path: path.to_path_buf(),
            count,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for CountingSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Through the broker: a world-connectable socket outside the writable roots is out of reach
/// (the listener sees nothing), one inside the workspace is reachable (positive control), and
/// the general seccomp layer refuses namespace creation and the kernel keyring while ordinary
/// calls work.
fn check_gate_and_seccomp(u: &TestUser, args: &[&str], ws: &Path) {
    let out_dir = PathBuf::from("/var/tmp/stkt-sock-outside");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let outside = CountingSocket::new(&out_dir.join("open.sock"));
    let inside = CountingSocket::new(&ws.join("inside.sock"));
    // The user's own socket (the writable roots are idmapped: an inode whose owner the mount
    // does not map — root's here — is not writable, and connect needs write access).
    sh(&format!(
        "chown {}:{} {}",
        u.uid,
        u.gid,
        inside.path.display()
    ));
    let connect = |p: &Path| {
        format!(
            "/usr/bin/python3 -c 'import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); print(\"CONNECTED\", s.recv(6).decode().strip())\nexcept OSError as e:\n print(\"REFUSED\", e.errno)' {}",
            p.display()
        )
    };
    // Control on the host: the sandbox's own account could reach the outside socket by its mode.
    let script = format!(
        "{}; {}; cd {} && {}",
        connect(&outside.path),
        connect(&inside.path),
        ws.display(),
        connect(Path::new("inside.sock"))
    );
    let r = run_as(u, args, ws, &script);
    eprintln!("gate: {} {}", r.stdout, r.stderr);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            &format!("REFUSED {}", libc::EACCES)[..],
            "CONNECTED hello",
            "CONNECTED hello"
        ],
        "{}",
        r.stderr
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(outside.seen(), 0, "the outside listener was reached");
    assert_eq!(
        inside.seen(),
        2,
        "the workspace listener (control) was not reached twice"
    );
    let layers = r.layers();
    assert!(layers.iter().any(|l| l == "connect-gate"), "{}", r.stderr);
    // The refusal is reported as a denial; the allowed connects are not.
    assert_eq!(
        r.denials(),
        vec![("connect".to_string(), outside.path.display().to_string())],
        "{}",
        r.stderr
    );
    assert!(layers.iter().any(|l| l == "seccomp"), "{}", r.stderr);

    // seccomp: user namespaces and the keyring refused inside; control: the same user can create
    // a user namespace on the host (when the host allows it), and getpid works inside.
    let (host_ok, _) = sh_ok(&format!(
        "setpriv --reuid {} --regid {} --clear-groups unshare -U true",
        u.uid, u.gid
    ));
    let script = "unshare -U true 2>/dev/null; echo UNSHARE=$?; \
                  /usr/bin/python3 -c 'import ctypes,os\nlibc=ctypes.CDLL(None, use_errno=True)\nr=libc.syscall(250, 0, 0, 0, 0, 0)\nprint(\"KEYCTL\", r, ctypes.get_errno())\nprint(\"GETPID\", libc.syscall(39) == os.getpid())'";
    let r = run_as(u, args, ws, script);
    eprintln!(
        "seccomp: host unshare -U ok={host_ok}; inside: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("UNSHARE=1") || r.stdout.contains("UNSHARE=2"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains(&format!("KEYCTL -1 {}", libc::EPERM)),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains("GETPID True"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    drop(outside);
    drop(inside);
    let _ = fs::remove_dir_all(&out_dir);
}
