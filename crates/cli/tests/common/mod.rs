//! Helpers shared by the integration suites: each test builds a private "world" under
//! `$HOME/.stockade-tests/`, runs the real `stockade` binary in a subprocess with a hard wall-clock
//! guard, and judges the effects from the host after the process exited.
#![allow(dead_code)]

pub mod skip;
#[allow(unused_imports)]
pub use skip::{have, skip, skips_fail};

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stockade")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call (safe under parallel tests and parallel suites).
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{n}-{nanos:x}", std::process::id())
}

/// The real home of the test runner (the worlds live beneath it, never under /tmp).
pub fn real_home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME must be set to run these tests"))
}

/// The parent of every world.
pub fn tests_root() -> PathBuf {
    real_home().join(".stockade-tests")
}

/// A fresh directory tree for one test:
/// * `ws` — the workspace (writable in the sandbox),
/// * `outside` — a sibling directory that is NOT writable in the sandbox,
/// * `home` — the `HOME` the sandbox is started with (deny_read `~/...` resolves here),
/// * `state` — `XDG_STATE_HOME` (persisted private /tmp lives here), so cleanup is complete.
pub struct World {
    pub root: PathBuf,
    pub ws: PathBuf,
    pub outside: PathBuf,
    pub home: PathBuf,
    pub state: PathBuf,
}

impl World {
    pub fn new(tag: &str) -> World {
        let root = tests_root().join(unique(tag));
        Self::at(root)
    }

    /// A world rooted at an explicit (fresh) directory.
    pub fn at(root: PathBuf) -> World {
        let w = World {
            ws: root.join("ws"),
            outside: root.join("outside"),
            home: root.join("home"),
            state: root.join("state"),
            root,
        };
        for d in [&w.ws, &w.outside, &w.home, &w.state] {
            fs::create_dir_all(d).unwrap();
        }
        w
    }

    pub fn ws(&self, rel: &str) -> PathBuf {
        self.ws.join(rel)
    }

    pub fn out(&self, rel: &str) -> PathBuf {
        self.outside.join(rel)
    }

    /// A `stockade run` with the workspace, HOME and state dir of this world, cwd = workspace.
    pub fn run(&self) -> Run {
        Run::new(self)
    }

    /// `stockade <args>` (any subcommand) with this world's environment.
    pub fn stockade(&self, args: &[&str]) -> Out {
        let mut c = Command::new(bin());
        c.args(args);
        self.apply_env(&mut c);
        c.current_dir(&self.ws);
        run_guarded(c, None, Duration::from_secs(60))
    }

    fn apply_env(&self, c: &mut Command) {
        c.env("HOME", &self.home)
            .env("XDG_STATE_HOME", &self.state)
            .env_remove("STOCKADE_LOG")
            .env_remove("XDG_CONFIG_HOME");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Make everything removable again (tests may chmod 0 things), then remove.
        let _ = Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&self.root)
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The result of one process run.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    /// The exit code, panicking (with the output) if the process died from a signal.
    pub fn code(&self) -> i32 {
        match self.code {
            Some(c) => c,
            None => panic!(
                "stockade itself died from signal {:?}: {self:?}",
                self.signal
            ),
        }
    }

    pub fn has(&self, marker: &str) -> bool {
        self.stdout.contains(marker)
    }

    /// Assert the command really ran inside the sandbox (it printed `marker` first).
    #[track_caller]
    pub fn assert_ran(&self, marker: &str) {
        assert!(
            self.stdout.contains(marker),
            "the sandboxed command did not run (no {marker:?} on stdout) — a sandbox that refuses \
             to start must fail the test: {self:#?}"
        );
    }

    #[track_caller]
    pub fn assert_not(&self, marker: &str) {
        assert!(
            !self.stdout.contains(marker),
            "the sandboxed attack reported success ({marker:?} on stdout): {self:#?}"
        );
    }

    /// stderr lines that came from stockade itself.
    pub fn stockade_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("stockade"))
            .collect()
    }
}

/// Run a prepared command with stdin `input`, killing it after `limit` (then panic).
pub fn run_guarded(mut c: Command, input: Option<&[u8]>, limit: Duration) -> Out {
    c.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = c.spawn().expect("cannot spawn the stockade binary");
    wait_child(&mut child, input, limit, start)
}

/// Collect output and status of a spawned child, killing it after `limit`.
pub fn wait_child(child: &mut Child, input: Option<&[u8]>, limit: Duration, start: Instant) -> Out {
    let stdin = child.stdin.take();
    let input = input.map(|b| b.to_vec());
    let writer = std::thread::spawn(move || {
        if let (Some(mut s), Some(b)) = (stdin, input) {
            use std::io::Write;
            let _ = s.write_all(&b);
        }
    });
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let ro = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = so.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let re = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = se.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stockade did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&ro.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&re.join().unwrap()).into_owned();
    use std::os::unix::process::ExitStatusExt;
    Out {
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        elapsed,
    }
}

/// Builder for one `stockade run`.
pub struct Run {
    cmd: Command,
    flags: Vec<OsString>,
    input: Option<Vec<u8>>,
    limit: Duration,
}

impl Run {
    pub fn new(w: &World) -> Run {
        let mut cmd = Command::new(bin());
        w.apply_env(&mut cmd);
        cmd.current_dir(&w.ws);
        Run {
            cmd,
            flags: vec!["run".into(), "--workspace".into(), w.ws.clone().into()],
            input: None,
            limit: Duration::from_secs(60),
        }
    }

    /// Extra flags for `stockade run` (before `--`).
    pub fn flag(mut self, f: impl Into<OsString>) -> Run {
        self.flags.push(f.into());
        self
    }

    pub fn writable(self, p: &Path) -> Run {
        self.flag("--writable").flag(p)
    }

    pub fn net_on(self) -> Run {
        self.flag("--network").flag("on")
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Run {
        self.cmd.env(k, v);
        self
    }

    pub fn cwd(mut self, d: &Path) -> Run {
        self.cmd.current_dir(d);
        self
    }

    pub fn stdin(mut self, b: &[u8]) -> Run {
        self.input = Some(b.to_vec());
        self
    }

    pub fn limit(mut self, d: Duration) -> Run {
        self.limit = d;
        self
    }

    /// The command prepared to run `argv` (for callers that need to spawn themselves).
    pub fn command<S: AsRef<std::ffi::OsStr>>(mut self, argv: &[S]) -> Command {
        self.cmd.args(&self.flags).arg("--");
        self.cmd.args(argv);
        self.cmd
    }

    pub fn argv<S: AsRef<std::ffi::OsStr>>(self, argv: &[S]) -> Out {
        let limit = self.limit;
        let input = self.input.clone();
        let c = self.command(argv);
        run_guarded(c, input.as_deref(), limit)
    }

    /// Run `sh -c script` in the sandbox.
    pub fn sh(self, script: &str) -> Out {
        self.argv(&["sh", "-c", script])
    }

    /// Run `bash -c script` in the sandbox.
    pub fn bash(self, script: &str) -> Out {
        self.argv(&["bash", "-c", script])
    }

    /// Run `python3 -c code` in the sandbox.
    pub fn py(self, code: &str) -> Out {
        self.argv(&["python3", "-c", code])
    }
}

/// Everything observable about a path without following a final symlink.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Snap {
    pub exists: bool,
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub ino: u64,
    pub nlink: u64,
    pub content: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
    pub entries: Option<Vec<String>>,
    pub xattrs: Vec<String>,
}

/// Snapshot one path (see [`Snap`]).
pub fn snap(p: &Path) -> Snap {
    match fs::symlink_metadata(p) {
        Err(_) => Snap {
            exists: false,
            kind: String::new(),
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            ino: 0,
            nlink: 0,
            content: None,
            link: None,
            entries: None,
            xattrs: vec![],
        },
        Ok(m) => {
            let ft = m.file_type();
            let kind = if ft.is_symlink() {
                "symlink"
            } else if ft.is_dir() {
                "dir"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            Snap {
                exists: true,
                kind: kind.into(),
                mode: m.permissions().mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ino: m.ino(),
                nlink: m.nlink(),
                content: if ft.is_file() { fs::read(p).ok() } else { None },
                link: if ft.is_symlink() {
                    fs::read_link(p).ok()
                } else {
                    None
                },
                entries: if ft.is_dir() {
                    let mut v: Vec<String> = fs::read_dir(p)
                        .map(|r| {
                            r.filter_map(|e| e.ok())
                                .map(|e| e.file_name().to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    v.sort();
                    Some(v)
                } else {
                    None
                },
                xattrs: list_xattrs(p),
            }
        }
    }
}

fn list_xattrs(p: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c` is a valid NUL-terminated path and `buf` is a writable buffer of the given size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return vec![];
    }
    let mut v: Vec<String> = buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    v
}

/// Snapshot of a whole tree (every path beneath `root`, recursively, not following symlinks).
pub fn snap_tree(root: &Path) -> BTreeMap<PathBuf, Snap> {
    let mut m = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let s = snap(&p);
        if s.kind == "dir" {
            if let Ok(rd) = fs::read_dir(&p) {
                for e in rd.flatten() {
                    stack.push(e.path());
                }
            }
        }
        m.insert(p, s);
    }
    m
}

/// Assert two tree snapshots are equal, naming the first difference.
#[track_caller]
pub fn assert_same_tree(before: &BTreeMap<PathBuf, Snap>, after: &BTreeMap<PathBuf, Snap>) {
    for (p, s) in before {
        match after.get(p) {
            None => panic!("{} disappeared", p.display()),
            Some(a) => assert_eq!(s, a, "{} changed", p.display()),
        }
    }
    for p in after.keys() {
        assert!(before.contains_key(p), "{} appeared", p.display());
    }
}

/// Write a file, creating parents.
pub fn write(p: &Path, content: &str) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, content).unwrap();
}

/// A TCP listener on a loopback address that records every contact (in a background thread).
pub struct TcpLog {
    pub port: u16,
    pub addr: String,
    contacts: Arc<AtomicUsize>,
    data: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpLog {
    /// Listen on `ip` (e.g. `127.0.0.1` or `::1`), any port. None if the address is unusable.
    pub fn open(ip: &str) -> Option<TcpLog> {
        let l = TcpListener::bind((ip, 0)).ok()?;
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let contacts = Arc::new(AtomicUsize::new(0));
        let data = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, d, s) = (contacts.clone(), data.clone(), stop.clone());
        let thread = std::thread::spawn(move || loop {
            match l.accept() {
                Ok((mut sock, _)) => {
                    c.fetch_add(1, Ordering::SeqCst);
                    let _ = sock.set_nonblocking(false);
                    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 256];
                    if let Ok(n) = sock.read(&mut buf) {
                        d.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                }
                Err(_) => {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Some(TcpLog {
            port,
            addr: ip.to_string(),
            contacts,
            data,
            stop,
            thread: Some(thread),
        })
    }

    /// Contacts seen so far (waits briefly for in-flight accepts to be processed).
    pub fn contacts(&self) -> usize {
        std::thread::sleep(Duration::from_millis(50));
        self.contacts.load(Ordering::SeqCst)
    }

    pub fn data(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().unwrap()).into_owned()
    }
}

impl Drop for TcpLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket on a loopback address; `received()` drains what arrived.
pub struct UdpLog {
    pub sock: UdpSocket,
    pub port: u16,
}

impl UdpLog {
    pub fn open(ip: &str) -> Option<UdpLog> {
        let sock = UdpSocket::bind((ip, 0)).ok()?;
        sock.set_nonblocking(true).unwrap();
        let port = sock.local_addr().unwrap().port();
        Some(UdpLog { sock, port })
    }

    pub fn received(&self) -> usize {
        std::thread::sleep(Duration::from_millis(50));
        let mut n = 0;
        let mut buf = [0u8; 2048];
        while self.sock.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    }
}

/// A host process the sandbox should not be able to touch; killed on drop.
pub struct HostProc {
    pub child: Child,
}

impl HostProc {
    /// `sleep 300` with an environment carrying `secret` (for /proc/<pid>/environ reads).
    pub fn spawn(secret: &str) -> HostProc {
        let child = Command::new("sleep")
            .arg("300")
            .env("HOSTPROC_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        HostProc { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose command line contains `marker` (via pgrep -f).
pub fn pgrep(marker: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", marker])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait until no process matches `marker` or `limit` passes; returns the survivors.
pub fn wait_gone(marker: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let v = pgrep(marker);
        if v.is_empty() || start.elapsed() > limit {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kill every process matching `marker` (cleanup after a failed assertion).
pub fn kill_matching(marker: &str) {
    let _ = Command::new("pkill").args(["-KILL", "-f", marker]).status();
}

/// Run a host command, asserting success; returns stdout.
#[track_caller]
pub fn host(cwd: &Path, argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "host command {argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Create a git repository with one commit at `dir`.
pub fn git_repo(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    host(dir, &["git", "init", "-q", "-b", "main"]);
    host(dir, &["git", "config", "user.email", "t@example.invalid"]);
    host(dir, &["git", "config", "user.name", "T"]);
    host(dir, &["git", "config", "commit.gpgsign", "false"]);
    write(&dir.join("README"), "hello\n");
    host(dir, &["git", "add", "README"]);
    host(dir, &["git", "commit", "-q", "-m", "init"]);
}

/// Run `ip ARGS` on the host; its stderr is the error when it fails.
pub fn run_ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// Shell-quote a path for embedding in a script.
pub fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Run test closures in parallel threads, collecting every failure (with its name) into one panic.
/// One named case for [`parallel`].
pub type Case = (&'static str, Box<dyn FnOnce() + Send>);

pub fn parallel(cases: Vec<Case>) {
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(name, f)| (name, std::thread::spawn(f)))
        .collect();
    let mut failed = vec![];
    for (name, h) in handles {
        if let Err(e) = h.join() {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{name}: {msg}"));
        }
    }
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

/// The git identity the git suites use, on the host and (`--env`) inside.
pub const GIT_ID: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "t"),
    ("GIT_AUTHOR_EMAIL", "t@t"),
    ("GIT_COMMITTER_NAME", "t"),
    ("GIT_COMMITTER_EMAIL", "t@t"),
];

/// Host-side git in `dir`, with the world's HOME and no system config; returns success and
/// stdout, panics on failure unless `may_fail`.
pub fn git_in(w: &World, dir: &Path, args: &[&str], may_fail: bool) -> (bool, String) {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir).args(args);
    c.env("HOME", &w.home).env("GIT_CONFIG_NOSYSTEM", "1");
    c.env_remove("GIT_DIR").env_remove("GIT_WORK_TREE");
    for (k, v) in GIT_ID {
        c.env(k, v);
    }
    let o = c.output().expect("git runs");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if !may_fail && !o.status.success() {
        panic!(
            "host git {args:?} in {dir:?} failed: {}{out}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    (o.status.success(), out)
}

/// `sh -c script` in the sandbox (`--json`) with the git identity, `flags` before `--`.
pub fn git_sandboxed(w: &World, flags: &[&str], script: &str) -> Out {
    let mut r = w.run().flag("--json");
    for f in flags {
        r = r.flag(*f);
    }
    for (k, v) in GIT_ID {
        r = r.flag("--env").flag(format!("{k}={v}"));
    }
    r.flag("--env").flag("GIT_CONFIG_NOSYSTEM=1").sh(script)
}

/// The same script unsandboxed in the workspace (the positive control), with the git identity.
pub fn unsandboxed(w: &World, script: &str) -> Out {
    let mut c = Command::new("sh");
    c.args(["-c", script]).current_dir(&w.ws);
    c.env("HOME", &w.home).env("GIT_CONFIG_NOSYSTEM", "1");
    for (k, v) in GIT_ID {
        c.env(k, v);
    }
    run_guarded(c, None, Duration::from_secs(60))
}
