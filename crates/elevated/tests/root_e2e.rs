//! End-to-end test of the elevated tier, as root. Skipped (with the reason printed) when not
//! root or when a real installation exists. Everything it creates — accounts, test users, nft
//! table, network namespace, ACLs, sysctl change — is undone by a guard, even on failure.
//!
//! Run: `cargo test -p stockade-elevated --test root_e2e -- --nocapture`

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockade_elevated::setup::SetupOptions;

#[path = "../../cli/tests/common/skip.rs"]
mod skip;
use skip::skip;
use stockade_elevated::tier::{self, Tier, TierChoice};

const BIN: &str = env!("CARGO_BIN_EXE_stockade-elevated");
const NETNS: &str = "stkt-ns";
const VETH_HOST: &str = "stkt-h";
const VETH_NS: &str = "stkt-n";
const NS_ADDR: &str = "10.203.77.2";
const ALLOWED_PORT: u16 = 18181;
const USER: &str = "stkt-user";
const OTHER: &str = "stkt-other";

struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

struct Guard {
    opts: SetupOptions,
    broker: Option<Child>,
    users: Vec<String>,
    netns: bool,
    sysctl_restore: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut b) = self.broker.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
        if let Some(v) = self.sysctl_restore.take() {
            let _ = Command::new("sysctl")
                .arg("-q")
                .arg(format!("user.max_user_namespaces={v}"))
                .status();
        }
        match stockade_elevated::uninstall(&self.opts) {
            Ok(r) if !r.problems.is_empty() => eprintln!("cleanup problems: {:?}", r.problems),
            Err(e) => eprintln!("cleanup uninstall failed: {e}"),
            _ => {}
        }
        for u in &self.users {
            let _ = Command::new("userdel")
                .args(["-r", "-f", u])
                .stderr(Stdio::null())
                .status();
        }
        if self.netns {
            let _ = Command::new("ip")
                .args(["link", "del", VETH_HOST])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip")
                .args(["netns", "del", NETNS])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sh_ok(cmd: &str) -> (bool, String) {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

fn add_user(g: &mut Guard, name: &str) -> TestUser {
    let _ = Command::new("userdel")
        .args(["-r", "-f", name])
        .stderr(Stdio::null())
        .status();
    // A setup killed earlier in this test may leave a shadow lock until its orphan is reaped.
    let mut tries = 0;
    loop {
        let (ok, out) = sh_ok(&format!("useradd -m -s /bin/sh {name}"));
        if ok {
            break;
        }
        tries += 1;
        assert!(
            tries < 50 && out.contains("cannot lock"),
            "useradd {name}: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    g.users.push(name.to_string());
    let p = stockade_elevated::accounts::getent_passwd(name)
        .unwrap()
        .unwrap();
    fs::set_permissions(&p.home, fs::Permissions::from_mode(0o750)).unwrap();
    TestUser {
        name: name.into(),
        uid: p.uid,
        gid: p.gid,
        home: p.home,
    }
}

/// Test-only stand-in for `user.max_user_namespaces=0` where that sysctl is not writable (e.g.
/// inside a container): a seccomp filter that fails `unshare`/`clone` with `CLONE_NEWUSER` (EPERM)
/// and `clone3` (ENOSYS, so libc falls back to `clone`). Installed in spawned processes only.
fn block_userns_in_child(cmd: &mut Command) {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    const ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let prog: Vec<libc::sock_filter> = vec![
        f(LD_W_ABS, 0, 0, 4),
        f(JEQ_K, 0, 7, ARCH_X86_64),
        f(LD_W_ABS, 0, 0, 0),
        f(JEQ_K, 4, 0, libc::SYS_clone3 as u32),
        f(JEQ_K, 1, 0, libc::SYS_unshare as u32),
        f(JEQ_K, 0, 3, libc::SYS_clone as u32),
        f(LD_W_ABS, 0, 0, 16),
        f(JSET_K, 2, 1, libc::CLONE_NEWUSER as u32),
        f(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
        f(RET_K, 0, 0, RET_ALLOW),
        f(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
    ];
    // SAFETY: the closure runs in the forked child and only calls `install_filter`, which makes
    // raw syscalls on `prog`, owned by the closure.
    unsafe {
        cmd.pre_exec(move || install_filter(&prog));
    }
}

fn install_filter(prog: &[libc::sock_filter]) -> std::io::Result<()> {
    use stockade_elevated::sys::cvt;
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl with integer arguments.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    // SAFETY: `fprog` points to `prog`, a valid filter array that outlives the call.
    cvt(unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    })?;
    Ok(())
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

static NO_USERNS: AtomicBool = AtomicBool::new(false);

fn run_as(u: &TestUser, sock: &Path, extra: &[&str], cwd: &Path, script: &str) -> Out {
    let mut c = Command::new(BIN);
    if NO_USERNS.load(Ordering::Relaxed) {
        block_userns_in_child(&mut c);
    }
    let o = c
        .arg("run")
        .args(["--socket", &sock.to_string_lossy()])
        .args(extra)
        .args([
            "--cwd",
            &cwd.to_string_lossy(),
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", &u.home)
        .current_dir("/")
        .uid(u.uid)
        .gid(u.gid)
        .output()
        .expect("run client");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn spawn_as(u: &TestUser, sock: &Path, extra: &[&str], cwd: &Path, script: &str) -> Child {
    Command::new(BIN)
        .arg("run")
        .args(["--socket", &sock.to_string_lossy()])
        .args(extra)
        .args([
            "--cwd",
            &cwd.to_string_lossy(),
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir(cwd)
        .uid(u.uid)
        .gid(u.gid)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client")
}

/// Pids of processes of `uid` whose command line contains `needle`.
fn procs_of(uid: u32, needle: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if fs::metadata(e.path()).map(|m| m.uid()).ok() != Some(uid) {
            continue;
        }
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
        {
            v.push(pid);
        }
    }
    v
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn chown_r(p: &Path, u: &TestUser) {
    sh(&format!("chown -R {}:{} '{}'", u.uid, u.gid, p.display()));
}

fn listener_in_netns(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let f = fs::File::open(format!("/run/netns/{NETNS}")).expect("netns file");
        // SAFETY: setns on a descriptor we own; it moves only this thread into the namespace.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let l = TcpListener::bind((NS_ADDR, 18080)).expect("bind in netns");
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let _ = l.accept();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("netns listener ready");
    h
}

fn accept_loop(l: TcpListener, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = l.accept();
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn connect_script(host: &str, port: u16) -> String {
    format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null && echo CONNECTED || echo BLOCKED")
}

/// Named (user:X / group:X) or default entries in `getfacl` output.
fn named_entries(getfacl: &str) -> Vec<String> {
    getfacl
        .lines()
        .filter(|l| {
            let l = l.strip_prefix("default:").map_or(*l, |x| x);
            (l.starts_with("user:") && !l.starts_with("user::"))
                || (l.starts_with("group:") && !l.starts_with("group::"))
                || l.starts_with("mask::")
        })
        .map(str::to_string)
        .collect()
}

fn has_stockade_acl(path: &Path, uids: &[u32]) -> bool {
    let (_, out) = sh_ok(&format!("getfacl -p '{}' 2>/dev/null", path.display()));
    out.contains("stockade") || uids.iter().any(|u| out.contains(&format!("user:{u}:")))
}

fn start_broker(g: &mut Guard) {
    let _ = fs::remove_file(&g.opts.socket_path);
    let mut c = Command::new(BIN);
    if NO_USERNS.load(Ordering::Relaxed) {
        block_userns_in_child(&mut c);
    }
    let child = c
        .args([
            "broker",
            "--socket",
            &g.opts.socket_path.to_string_lossy(),
            "--state-dir",
            &g.opts.state_dir.to_string_lossy(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("broker");
    g.broker = Some(child);
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&g.opts.socket_path).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "broker socket did not appear"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn elevated_end_to_end_as_root() {
    // A skip is reported, never counted as a pass: CI that must run this sets
    // STOCKADE_REQUIRE_ROOT_TESTS=1, which turns every skip into a failure (see `skip`).
    if stockade_elevated::sys::geteuid() != 0 {
        skip("needs root (run `sudo -E cargo test -p stockade-elevated --test root_e2e -- --nocapture`)");
        return;
    }
    let defaults = SetupOptions::default();
    if defaults.record_path().exists() {
        skip(format!(
            "a real installation exists at {} and would be clobbered",
            defaults.record_path().display()
        ));
        return;
    }
    for tool in ["nft", "getfacl", "useradd", "ip", "bash", "timeout"] {
        if !sh_ok(&format!("command -v {tool}")).0 {
            skip(format!(
                "`{tool}` is missing (apt-get install -y nftables acl passwd iproute2)"
            ));
            return;
        }
    }
    let mut opts = SetupOptions {
        broker_exe: BIN.into(),
        ..SetupOptions::default()
    };
    opts.net = Some(stockade_elevated::nft::NetConfig {
        allowed_loopback_tcp_ports: vec![ALLOWED_PORT],
        allow_local_binding: false,
    });
    let mut g = Guard {
        opts: opts.clone(),
        broker: None,
        users: Vec::new(),
        netns: false,
        sysctl_restore: None,
    };

    // --- setup: idempotent, drift detected and repaired ---------------------------------------
    let r1 = stockade_elevated::setup(&opts).expect("setup");
    eprintln!("setup #1: {:?}", r1.changes);
    assert!(r1
        .changes
        .iter()
        .any(|c| c.contains("created account stockade-offline")));
    let r2 = stockade_elevated::setup(&opts).expect("setup again");
    assert!(
        r2.changes.is_empty(),
        "second setup changed things: {:?}",
        r2.changes
    );
    let d = stockade_elevated::check(&opts).unwrap();
    assert!(d.installed && d.drift.is_empty(), "{:?}", d.drift);
    let rec = r1.record.clone().unwrap();
    let off_uid = rec.accounts[0].uid;
    let on_uid = rec.accounts[1].uid;
    let uids = [off_uid, on_uid];
    let group = sh("getent group stockade-sandbox");
    assert!(group.starts_with("stockade-sandbox:"), "{group}");
    let pw = sh("getent passwd stockade-offline");
    assert!(
        pw.trim_end()
            .ends_with(":/var/lib/stockade/home/offline:/usr/sbin/nologin"),
        "{pw}"
    );
    assert!(
        sh("getent shadow stockade-offline")
            .split(':')
            .nth(1)
            .is_some_and(|p| p.starts_with('!') || p == "*"),
        "no password"
    );

    sh("nft flush chain inet stockade output");
    fs::OpenOptions::new()
        .append(true)
        .open("/etc/stockade/stockade.nft")
        .unwrap()
        .write_all(b"# tampered\n")
        .unwrap();
    let d = stockade_elevated::check(&opts).unwrap();
    let items: Vec<String> = d.drift.iter().map(|x| x.to_string()).collect();
    eprintln!("drift: {items:#?}");
    assert_eq!(d.drift.len(), 2, "{items:?}");
    assert!(
        items[0].starts_with("nftables table inet stockade: expected rules missing")
            && items[0].contains("reject")
    );
    assert!(items[1].starts_with("file /etc/stockade/stockade.nft"));
    let r3 = stockade_elevated::setup(&opts).unwrap();
    assert!(!r3.changes.is_empty());
    assert!(
        stockade_elevated::check(&opts).unwrap().drift.is_empty(),
        "setup repairs drift"
    );

    // --- kill -9 during setup, then setup again: consistent --------------------------------------
    for delay_ms in [3u64, 15, 40, 90, 160] {
        stockade_elevated::uninstall(&opts).unwrap();
        let mut c = Command::new(BIN)
            .args([
                "setup",
                "--allow-port",
                &ALLOWED_PORT.to_string(),
                "--exe",
                BIN,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL the setup *and* the tools it is running (useradd, nft, ...), like a power cut.
        // SAFETY: kill(2) of the process group we just created for this child.
        unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
        let _ = c.wait();
        let rep = stockade_elevated::setup(&opts)
            .unwrap_or_else(|e| panic!("setup after kill -9 at {delay_ms}ms: {e}"));
        let d = stockade_elevated::check(&opts).unwrap();
        assert!(
            d.drift.is_empty(),
            "after kill -9 at {delay_ms}ms: {:?} (changes {:?})",
            d.drift,
            rep.changes
        );
    }
    let rec = stockade_elevated::setup::installed(&opts).unwrap();
    let off_uid2 = rec.accounts[0].uid;
    let uids = if off_uid2 == off_uid {
        uids
    } else {
        [off_uid2, rec.accounts[1].uid]
    };
    let (off_uid, on_uid) = (uids[0], uids[1]);
    eprintln!("kill -9 during setup: consistent after re-run (5 delays)");

    // --- users, workspace, broker ------------------------------------------------------------------
    let u = add_user(&mut g, USER);
    let o = add_user(&mut g, OTHER);
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
    let sock = opts.socket_path.clone();

    // --- filesystem ---------------------------------------------------------------------------------
    let wsr = ws.to_string_lossy().to_string();
    let denied = format!("{}/public-but-denied.txt", u.home.display());
    fs::write(&denied, "pub\n").unwrap();
    sh(&format!(
        "chown {}:{} {denied} && chmod 644 {denied}",
        u.uid, u.gid
    ));
    let args = [
        "--writable",
        wsr.as_str(),
        "--protect",
        &format!("{wsr}/.git"),
        "--deny-read",
        denied.as_str(),
        "--verbose",
    ];
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
        let r = run_as(&u, &sock, &args, &ws, fs_script);
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
        assert_eq!(b.uid(), off_uid);
        // The user can still edit what the sandbox created (inherited default entry).
        let (ok, out) = sh_ok(&format!(
            "runuser -u {} -- sh -c 'echo edit >> {}/src/b.txt'",
            u.name, wsr
        ));
        assert!(ok, "{label}: user cannot edit sandbox-created file: {out}");
    };
    check_fs("fs");

    // Repeat run does not walk again (record + intact root ACL).
    let r = run_as(&u, &sock, &args, &ws, "true");
    assert!(r.stderr.contains("already granted"), "{}", r.stderr);

    // --- connect gate and seccomp ----------------------------------------------------------------
    check_gate_and_seccomp(&u, &sock, &args, &ws);
    // A program that cannot be executed: the run's process reports why, nothing is claimed.
    let nf = Command::new(BIN)
        .args(["run", "--socket", &sock.to_string_lossy()])
        .args(args)
        .args(["--cwd", wsr.as_str(), "--", "/nonexistent-stkt"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .uid(u.uid)
        .gid(u.gid)
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
    let r = run_as(&u, &sock, &args, &ws, "kill -TERM $$");
    assert_eq!(r.code, 128 + libc::SIGTERM, "{} {}", r.stdout, r.stderr);

    // --- process tree: per-run cgroup kill, isolation between runs, timeout, disconnect -------
    let long = spawn_as(
        &u,
        &sock,
        &["--writable", &wsr],
        &ws,
        "sleep 4.5; echo B-DONE",
    );
    wait_until("run B started", 10, || {
        !procs_of(off_uid, "sleep 4.5").is_empty()
    });
    let r = run_as(
        &u,
        &sock,
        &["--writable", &wsr],
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
        &sock,
        &["--writable", &wsr, "--timeout", "1"],
        &ws,
        "sleep 302",
    );
    assert_eq!(r.code, 124, "timeout exit code: {}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(procs_of(off_uid, "sleep 302").is_empty());
    let mut c = spawn_as(&u, &sock, &["--writable", &wsr], &ws, "sleep 303");
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
    let refused = |target: &str, why: &str| {
        let r = run_as(&u, &sock, &["--writable", target], &ws, "echo RAN");
        eprintln!("[refuse {target}] code {} {}", r.code, r.stderr.trim());
        assert_eq!(
            r.code, 125,
            "{target} must be refused ({why}): {} {}",
            r.stdout, r.stderr
        );
        assert!(r.stderr.contains("refused"), "{}", r.stderr);
        assert!(!r.stdout.contains("RAN"));
    };
    refused("/etc", "system dir");
    refused("/etc/ssh", "system dir");
    refused(&o.home.to_string_lossy(), "another user's home");
    refused(&u.home.to_string_lossy(), "the caller's home itself");
    refused("/tmp", "shared top-level dir");
    std::os::unix::fs::symlink(&o.home, ws.join("link")).unwrap();
    refused(&format!("{wsr}/link"), "symlink to another user's home");
    refused(&format!("{wsr}/../ws"), "dot-dot path");
    // A sandboxed command cannot ask the broker for another sandbox (e.g. the online account):
    // the connect gate keeps the broker's socket (outside the writable roots) out of reach...
    let nested = format!(
        "{BIN} run --socket {} --network on --cwd /tmp -- /bin/true; echo NESTED=$?",
        sock.display()
    );
    let r = run_as(&u, &sock, &args, &ws, &nested);
    assert!(
        r.stdout.contains("NESTED=125")
            && r.stderr.contains("cannot reach the stockade broker")
            && r.stderr.contains("Permission denied"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    // ...and when a policy allows that socket, the broker itself refuses sandbox accounts.
    let mut allow_broker: Vec<&str> = args.to_vec();
    let sock_s = sock.to_string_lossy().into_owned();
    allow_broker.extend(["--allow-unix-socket", sock_s.as_str()]);
    let r = run_as(&u, &sock, &allow_broker, &ws, &nested);
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
        let r = run_as(&u, &sock, &["--writable", &racer], &ws, "echo RAN");
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
        &sock,
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
        &sock,
        &["--writable", &owsr],
        &ows,
        "cat code.txt && echo O-READS-OWN && echo w > mine.txt && echo O-WRITES-OWN",
    );
    assert!(
        r.stdout.contains("O-READS-OWN") && r.stdout.contains("O-WRITES-OWN"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let r = run_as(&u, &sock, &args, &ws, &format!("cat {owsr}/code.txt && echo U-READS-OTHERS; ls {owsr} && echo U-LISTS-OTHERS; echo x > {owsr}/mine.txt && echo U-WRITES-OTHERS"));
    for bad in ["U-READS-OTHERS", "U-LISTS-OTHERS", "U-WRITES-OTHERS"] {
        assert!(
            !r.stdout.contains(bad),
            "cross-user leak {bad}: {} {}",
            r.stdout,
            r.stderr
        );
    }
    let r = run_as(&u, &sock, &args, &ows, "ls && echo LISTED-FROM-CWD");
    assert!(
        !r.stdout.contains("LISTED-FROM-CWD"),
        "cwd inside another user's tree: {} {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.code, 125, "{}", r.stderr);
    eprintln!("cross-user: runs for {USER} cannot use {OTHER}'s grants");

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
            &sock,
            &["--network", mode, "--writable", &wsr],
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
        &sock,
        &["--network", "off", "--writable", &wsr],
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
    stockade_elevated::setup(&opts).unwrap();
    assert!(stockade_elevated::check(&opts).unwrap().drift.is_empty());
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
    run_as(
        &u,
        &sock,
        &["--network", "off", "--writable", &wsr],
        &ws,
        &send,
    );
    assert!(
        udp.recv(&mut buf).is_err(),
        "offline account sent UDP on loopback"
    );
    run_as(
        &u,
        &sock,
        &["--network", "on", "--writable", &wsr],
        &ws,
        &send,
    );
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
        let probe = tier::probe_userns();
        assert!(
            probe.is_err(),
            "userns still works with max_user_namespaces=0"
        );
        let (t, why) = tier::pick(TierChoice::Auto, probe, true).unwrap();
        assert_eq!(t, Tier::Elevated);
        eprintln!("user.max_user_namespaces=0 set; auto tier: {why}");
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
            &sock,
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
        assert_eq!(run_as(&u, &sock, &args, &ws, "true").code, 0);
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
        &sock,
        &["--writable", &bigs, "--verbose"],
        &big,
        "echo ok > d000/new && echo OK",
    );
    let first = t.elapsed();
    assert!(r.stdout.contains("OK"), "{} {}", r.stdout, r.stderr);
    let t = Instant::now();
    let r = run_as(&u, &sock, &["--writable", &bigs, "--verbose"], &big, "true");
    let second = t.elapsed();
    assert!(r.stderr.contains("already granted"), "{}", r.stderr);
    eprintln!("TIMING first grant of {files} files: {first:?}; repeat run: {second:?}");
    assert!(second < first / 5, "repeat run walked again?");

    // --- systemd-style socket activation (LISTEN_FDS/LISTEN_PID) --------------------------------
    if let Some(mut b) = g.broker.take() {
        let _ = b.kill();
        let _ = b.wait();
    }
    let _ = fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
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
    let r = run_as(&u, &sock, &args, &ws, "echo ACTIVATED");
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
    let rep = stockade_elevated::uninstall(&opts).unwrap();
    eprintln!("uninstall: {:#?}", rep.removed);
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert!(!sh("getent passwd").contains("stockade"));
    assert!(!sh("getent group").contains("stockade"));
    assert!(!sh("nft list tables").contains("stockade"));
    assert!(
        !opts.socket_path.exists(),
        "broker socket {} left after uninstall",
        opts.socket_path.display()
    );
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
fn check_gate_and_seccomp(u: &TestUser, sock: &Path, args: &[&str], ws: &Path) {
    let out_dir = PathBuf::from("/var/tmp/stkt-sock-outside");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let outside = CountingSocket::new(&out_dir.join("open.sock"));
    let inside = CountingSocket::new(&ws.join("inside.sock"));
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
    let r = run_as(u, sock, args, ws, &script);
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
    assert!(r.stderr.contains("enforced connect-gate"), "{}", r.stderr);
    // The refusal is reported as a denial; the allowed connects are not.
    let denied: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("stockade: denied"))
        .collect();
    assert_eq!(
        denied,
        vec![format!(
            "stockade: denied connect {}",
            outside.path.display()
        )],
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("enforced seccomp:"), "{}", r.stderr);

    // seccomp: user namespaces and the keyring refused inside; control: the same user can create
    // a user namespace on the host (when the host allows it), and getpid works inside.
    let (host_ok, _) = sh_ok(&format!(
        "setpriv --reuid {} --regid {} --clear-groups unshare -U true",
        u.uid, u.gid
    ));
    let script = "unshare -U true 2>/dev/null; echo UNSHARE=$?; \
                  /usr/bin/python3 -c 'import ctypes,os\nlibc=ctypes.CDLL(None, use_errno=True)\nr=libc.syscall(250, 0, 0, 0, 0, 0)\nprint(\"KEYCTL\", r, ctypes.get_errno())\nprint(\"GETPID\", libc.syscall(39) == os.getpid())'";
    let r = run_as(u, sock, args, ws, script);
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
