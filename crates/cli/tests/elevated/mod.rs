//! Shared harness of the elevated tier's root suites (`elevated_setup.rs`, `elevated_e2e.rs`):
//! they drive the real `stockade` binary (`setup`, `uninstall`, `broker`, `doctor`,
//! `run --tier elevated`) as root and as test users. Everything a suite creates — accounts, test
//! users, nft table, network namespace, ACLs, sysctl change — is undone by [`Guard`], even on
//! failure. Run them under the root lock:
//! `flock /tmp/stockade-root.lock cargo test -p stockade --test elevated_e2e -- --nocapture`.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stockade");
pub const NETNS: &str = "stkt-ns";
pub const VETH_HOST: &str = "stkt-h";
pub const VETH_NS: &str = "stkt-n";
pub const NS_ADDR: &str = "10.203.77.2";
pub const ALLOWED_PORT: u16 = 18181;
pub const USER: &str = "stkt-user";
pub const OTHER: &str = "stkt-other";
/// The default layout `stockade setup` installs.
pub const RECORD: &str = "/var/lib/stockade/install.json";
pub const SOCKET: &str = "/run/stockade/broker.sock";

pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub struct Guard {
    pub broker: Option<Child>,
    pub users: Vec<String>,
    pub netns: bool,
    pub sysctl_restore: Option<String>,
}

impl Guard {
    pub fn new() -> Guard {
        Guard {
            broker: None,
            users: Vec::new(),
            netns: false,
            sysctl_restore: None,
        }
    }

    pub fn stop_broker(&mut self) {
        if let Some(mut b) = self.broker.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop_broker();
        if let Some(v) = self.sysctl_restore.take() {
            let _ = Command::new("sysctl")
                .arg("-q")
                .arg(format!("user.max_user_namespaces={v}"))
                .status();
        }
        let u = stockade(&["uninstall"]);
        if u.code != 0 {
            eprintln!("cleanup uninstall: {} {}", u.stdout, u.stderr);
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

/// Whether this suite can run here; prints why not. A skip is reported, never counted as a
/// pass: under `STOCKADE_REQUIRE_ROOT_TESTS=1` (CI) every skip fails.
pub fn preflight(test: &str) -> bool {
    let skip = |why: &str| {
        eprintln!("SKIPPED {test}: {why}");
        assert!(
            std::env::var_os("STOCKADE_REQUIRE_ROOT_TESTS").is_none(),
            "STOCKADE_REQUIRE_ROOT_TESTS is set but the test was skipped: {why}"
        );
        false
    };
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip(
            "needs root (run `sudo -E cargo test -p stockade --test elevated_e2e -- --nocapture`)",
        );
    }
    if Path::new(RECORD).exists() {
        return skip(&format!(
            "a real installation exists at {RECORD} and would be clobbered"
        ));
    }
    for tool in [
        "nft", "getfacl", "useradd", "ip", "bash", "timeout", "setpriv",
    ] {
        if !sh_ok(&format!("command -v {tool}")).0 {
            return skip(&format!(
                "`{tool}` is missing (apt-get install -y nftables acl passwd iproute2 util-linux)"
            ));
        }
    }
    true
}

pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn sh_ok(cmd: &str) -> (bool, String) {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn of(o: std::process::Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// The `--json` result line on stderr.
    pub fn json(&self) -> serde_json::Value {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no JSON result on stderr: {}", self.stderr))
    }

    /// Names of the enforced layers in the `--json` result.
    pub fn layers(&self) -> Vec<String> {
        self.json()["enforced"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["layer"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(kind, target)` of each denial in the `--json` result.
    pub fn denials(&self) -> Vec<(String, String)> {
        self.json()["denials"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| {
                        (
                            d["kind"].as_str().unwrap_or("").to_string(),
                            d["target"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `stockade ARGS` as root.
pub fn stockade(args: &[&str]) -> Out {
    let mut c = Command::new(BIN);
    if NO_USERNS.load(Ordering::Relaxed) {
        block_userns_in_child(&mut c);
    }
    Out::of(c.args(args).output().expect("run stockade"))
}

/// The uid of an account, from the account database.
pub fn uid_of(name: &str) -> u32 {
    sh(&format!("id -u {name}"))
        .trim()
        .parse()
        .expect("numeric uid")
}

pub fn add_user(g: &mut Guard, name: &str) -> TestUser {
    let _ = Command::new("userdel")
        .args(["-r", "-f", name])
        .stderr(Stdio::null())
        .status();
    // A setup killed earlier may leave a shadow lock until its orphan is reaped.
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
    let pw = sh(&format!("getent passwd {name}"));
    let f: Vec<&str> = pw.trim_end().split(':').collect();
    let home = PathBuf::from(f[5]);
    fs::set_permissions(&home, fs::Permissions::from_mode(0o750)).unwrap();
    TestUser {
        name: name.into(),
        uid: f[2].parse().unwrap(),
        gid: f[3].parse().unwrap(),
        home,
    }
}

/// Test-only stand-in for `user.max_user_namespaces=0` where that sysctl is not writable (e.g.
/// inside a container): a seccomp filter that fails `unshare`/`clone` with `CLONE_NEWUSER` (EPERM)
/// and `clone3` (ENOSYS, so libc falls back to `clone`). Installed in spawned processes only.
pub fn block_userns_in_child(cmd: &mut Command) {
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

fn cvt(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn install_filter(prog: &[libc::sock_filter]) -> std::io::Result<()> {
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

pub static NO_USERNS: AtomicBool = AtomicBool::new(false);

/// The root suites share one install, one broker socket and fixed user names: a test holds this
/// for its whole length so the tests of one file never run at the same time (cargo runs a file's
/// tests on parallel threads).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `stockade run --tier elevated --json EXTRA -- /bin/sh -c SCRIPT` as `u`, from `cwd`.
pub fn run_cmd(u: &TestUser, extra: &[&str], cwd: &Path, script: &str) -> Command {
    let mut c = Command::new(BIN);
    if NO_USERNS.load(Ordering::Relaxed) {
        block_userns_in_child(&mut c);
    }
    c.args(["run", "--tier", "elevated", "--json"])
        .args(extra)
        .args(["--", "/bin/sh", "-c", script]);
    as_user(&mut c, u, "/usr/bin:/bin:/usr/sbin:/sbin", cwd);
    c
}

/// `c` with a clean environment as `u`'s client would have it: only `PATH` (`path`) and `HOME`,
/// in `cwd`.
pub fn client_env<'a>(c: &'a mut Command, u: &TestUser, path: &str, cwd: &Path) -> &'a mut Command {
    c.env_clear()
        .env("PATH", path)
        .env("HOME", &u.home)
        .current_dir(cwd)
}

/// As [`client_env`], and run as `u` (uid and gid).
pub fn as_user<'a>(c: &'a mut Command, u: &TestUser, path: &str, cwd: &Path) -> &'a mut Command {
    client_env(c, u, path, cwd).uid(u.uid).gid(u.gid)
}

pub fn run_as(u: &TestUser, extra: &[&str], cwd: &Path, script: &str) -> Out {
    Out::of(run_cmd(u, extra, cwd, script).output().expect("run client"))
}

/// As [`run_as`], from a working directory `u` cannot reach itself: root enters it, then
/// `setpriv` becomes `u` (what a caller holding such a directory open would have).
pub fn run_as_in_foreign_cwd(u: &TestUser, extra: &[&str], cwd: &Path, script: &str) -> Out {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={}", u.uid),
        &format!("--regid={}", u.gid),
        "--clear-groups",
        BIN,
        "run",
        "--tier",
        "elevated",
        "--json",
    ])
    .args(extra)
    .args(["--", "/bin/sh", "-c", script]);
    let o = client_env(&mut c, u, "/usr/bin:/bin:/usr/sbin:/sbin", cwd)
        .output()
        .expect("run client");
    Out::of(o)
}

pub fn spawn_as(u: &TestUser, extra: &[&str], cwd: &Path, script: &str) -> Child {
    run_cmd(u, extra, cwd, script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client")
}

/// Pids of processes of `uid` whose command line contains `needle`.
pub fn procs_of(uid: u32, needle: &str) -> Vec<i32> {
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

pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn chown_r(p: &Path, u: &TestUser) {
    sh(&format!("chown -R {}:{} '{}'", u.uid, u.gid, p.display()));
}

pub fn listener_in_netns(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
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

pub fn accept_loop(l: TcpListener, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = l.accept();
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

pub fn connect_script(host: &str, port: u16) -> String {
    format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null && echo CONNECTED || echo BLOCKED")
}

/// Named (user:X / group:X) or default entries in `getfacl` output.
pub fn named_entries(getfacl: &str) -> Vec<String> {
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

pub fn has_stockade_acl(path: &Path, uids: &[u32]) -> bool {
    let (_, out) = sh_ok(&format!("getfacl -p '{}' 2>/dev/null", path.display()));
    out.contains("stockade") || uids.iter().any(|u| out.contains(&format!("user:{u}:")))
}

/// `stockade broker` in the foreground, until its socket answers.
pub fn start_broker(g: &mut Guard) {
    let _ = fs::remove_file(SOCKET);
    let mut c = Command::new(BIN);
    if NO_USERNS.load(Ordering::Relaxed) {
        block_userns_in_child(&mut c);
    }
    let child = c
        .arg("broker")
        .stdout(Stdio::null())
        .spawn()
        .expect("broker");
    g.broker = Some(child);
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(SOCKET).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "broker socket did not appear"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `stockade setup ARGS`, which must succeed; its output lines.
pub fn setup(args: &[&str]) -> Vec<String> {
    let mut a = vec!["setup"];
    a.extend_from_slice(args);
    let o = stockade(&a);
    assert_eq!(o.code, 0, "stockade setup {args:?}: {o:#?}");
    o.stdout.lines().map(str::to_string).collect()
}

/// `stockade setup --check`: exit status and lines.
pub fn check() -> (i32, Vec<String>) {
    let o = stockade(&["setup", "--check"]);
    (o.code, o.stdout.lines().map(str::to_string).collect())
}

/// `stockade doctor --json`'s verdict on the elevated tier.
/// `rep` is a clean `stockade uninstall`: no problem reported, and no accounts, groups, nft table
/// or broker socket of stockade left.
pub fn assert_uninstalled(rep: &Out) {
    assert_eq!(rep.code, 0, "{rep:#?}");
    assert!(!rep.stderr.contains("problem"), "{}", rep.stderr);
    assert!(!sh("getent passwd").contains("stockade"));
    assert!(!sh("getent group").contains("stockade"));
    assert!(!sh("nft list tables").contains("stockade"));
    assert!(
        !Path::new(SOCKET).exists(),
        "broker socket {SOCKET} left after uninstall"
    );
}

pub fn doctor_elevated() -> serde_json::Value {
    let o = stockade(&["doctor", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("doctor --json: {e}: {o:#?}"));
    v["tiers"]["linux-elevated"].clone()
}

/// A config file (readable by everyone) with this TOML.
pub fn config_file(name: &str, toml: &str) -> PathBuf {
    let dir = Path::new("/var/tmp/stkt-e2e-config");
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.join(name);
    fs::write(&p, toml).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// The System V IPC objects of one kind (`shm`, `msg`, `sem`) in the test process's IPC
/// namespace (the host's): `(key, id, owner uid)` from `/proc/sysvipc/<kind>`.
pub fn sysvipc(kind: &str) -> Vec<(String, String, u32)> {
    let text = fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap_or_default();
    let mut lines = text.lines();
    let cols: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let at = |n: &str| cols.iter().position(|c| *c == n);
    let (Some(id), Some(uid)) = (at(&format!("{kind}id")).or(at("msqid")), at("uid")) else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.get(id)?.to_string(),
                f.get(uid)?.parse().ok()?,
            ))
        })
        .collect()
}

/// `KEY <kind> <key>` lines a sandboxed script printed with [`LIST_IPC`].
pub fn ipc_keys_in(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == "KEY").then(|| (f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

/// Shell that prints `KEY <kind> <key>` for every System V IPC object the shell can see.
pub const LIST_IPC: &str =
    "for k in shm msg sem; do awk -v k=$k 'NR>1{print \"KEY\", k, $1}' /proc/sysvipc/$k; done";

/// A minimal broker client (Python, run as `u` with `setpriv`), for requests `stockade` itself
/// never sends (a `cwd` it would have canonicalised): sends `req` (a JSON `RunRequest`) with the
/// client's stdio, echoes every reply on stderr as `raw-reply: {...}` and exits as the CLI
/// would: the command's status, or 125 when the broker refused or failed the run.
pub fn raw_request_as(u: &TestUser, req: &serde_json::Value) -> Out {
    const CLIENT: &str = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[2])
body = sys.argv[1].encode()
frame = struct.pack(">I", len(body)) + body
n = socket.send_fds(s, [frame], [0, 1, 2])
if n < len(frame):
    s.sendall(frame[n:])
f = s.makefile("rb")
while True:
    hdr = f.read(4)
    if len(hdr) < 4:
        sys.stderr.write("raw-reply: connection closed\n")
        sys.exit(125)
    (n,) = struct.unpack(">I", hdr)
    msg = json.loads(f.read(n))
    sys.stderr.write("raw-reply: " + json.dumps(msg) + "\n")
    t = msg.get("type")
    if t == "refused":
        sys.exit(125)
    if t == "failed":
        sys.exit(msg.get("exit_code") or 125)
    if t == "exited":
        e = msg["exit"]
        sys.exit(e["value"] if e["kind"] == "code" else 125)
"#;
    let o = Command::new("setpriv")
        .args([
            &format!("--reuid={}", u.uid),
            &format!("--regid={}", u.gid),
            "--clear-groups",
            "/usr/bin/python3",
            "-I",
            "-c",
            CLIENT,
            &req.to_string(),
            SOCKET,
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir(&u.home)
        .stdin(Stdio::null())
        .output()
        .expect("raw client");
    Out::of(o)
}

/// A `RunRequest` (protocol version 1) for [`raw_request_as`]: offline, `sh -c script`.
pub fn raw_run_request(
    workspace: &str,
    cwd: &str,
    writable: &[&str],
    script: &str,
) -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "network": "off",
        "workspace": workspace,
        "cwd": cwd,
        "writable_roots": writable,
        "protected": [],
        "deny_read": [],
        "allow_unix_sockets": [],
        "program": "/bin/sh",
        "args": ["-c", script],
        "env": [["PATH", "/usr/bin:/bin"]],
        "limits": {"timeout_secs": null, "max_memory": null, "max_processes": null, "max_open_files": null},
        "timeout_ms": 30000
    })
}

/// The broker's peak resident set (`VmHWM`, KiB).
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).expect("broker status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}
