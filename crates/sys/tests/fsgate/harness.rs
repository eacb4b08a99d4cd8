//! The parent/child plumbing of the write gate tests: the parent starts a copy of this test
//! binary as the child (`FSGATE_CHILD=<scenario>`), the child installs the gate filter and hands
//! the listener to the parent over a socketpair (descriptor 3), then runs the scenario and
//! prints one `label=errno` line per operation; the parent serves with a [`TestJudge`] and
//! judges the outcome from outside.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stockade_sys::fsgate::{self, CreateKind, Denial, FsOp, Judge, Refusal, ServeConfig};
use stockade_sys::sockets::{self, SocketPolicy};

/// Refuses any operation with a path that has a component named `forbidden` (bytes compared);
/// sleeps `delay` first for paths whose last component starts with `slow`. Logs every op.
#[derive(Default)]
pub struct TestJudge {
    pub allow_all: bool,
    /// No log (the cost benchmark measures the mechanism, not a test judge's bookkeeping).
    pub quiet: bool,
    pub delay: Option<Duration>,
    pub log: Mutex<Vec<String>>,
    pub created: Mutex<Vec<PathBuf>>,
}

fn paths<'a>(op: &FsOp<'a>) -> Vec<&'a Path> {
    match *op {
        FsOp::Create { path, .. }
        | FsOp::OpenWrite { path, .. }
        | FsOp::Remove { path, .. }
        | FsOp::SetAttr { path, .. } => vec![path],
        FsOp::Rename { from, to, .. } | FsOp::Link { from, to } => vec![from, to],
    }
}

impl Judge for TestJudge {
    fn judge(&self, op: &FsOp<'_>) -> Result<(), Refusal> {
        let ps = paths(op);
        if let Some(d) = self.delay {
            let slow = ps.iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| n.as_bytes().starts_with(b"slow"))
            });
            if slow {
                if std::env::var_os("FSGATE_DEBUG").is_some() {
                    eprintln!("judge sleeping for {op:?}");
                }
                std::thread::sleep(d);
            }
        }
        if ps
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "panicky"))
        {
            panic!("test judge asked to panic");
        }
        if !self.quiet {
            self.log.lock().unwrap().push(format!("{op:?}"));
        }
        let bad = ps.iter().any(|p| {
            p.components()
                .any(|c| c.as_os_str().as_bytes() == b"forbidden")
        });
        if bad && !self.allow_all {
            return Err(Refusal {
                errno: libc::EACCES,
                detail: format!("{op:?}"),
            });
        }
        Ok(())
    }

    fn created(&self, path: &Path, _kind: CreateKind) {
        self.created.lock().unwrap().push(path.to_path_buf());
    }
}

/// What a child run left.
pub struct Run {
    pub results: BTreeMap<String, String>,
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
    pub denials: Vec<String>,
}

impl Run {
    /// The value printed for `label` (panics with the whole output when absent).
    pub fn get(&self, label: &str) -> &str {
        match self.results.get(label) {
            Some(v) => v,
            None => panic!(
                "no result {label}\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            ),
        }
    }

    /// `label` ended with errno `e` (0: success).
    pub fn expect(&self, label: &str, e: i32) {
        assert_eq!(
            self.get(label),
            e.to_string(),
            "{label}\nstderr:\n{}",
            self.stderr
        );
    }
}

/// How the child installs its filter.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// `install_gated` (WAIT_KILLABLE_RECV).
    Gated,
    /// The gate program with plain `install` (no WAIT_KILLABLE_RECV): the signal control.
    NotKillable,
    /// No filter at all (the cost baseline).
    None,
}

pub struct Opts {
    pub cfg: ServeConfig,
    pub install: Install,
    pub env: Vec<(String, String)>,
    pub policy: SocketPolicy,
}

impl Opts {
    pub fn new(ws: &Path) -> Opts {
        Opts {
            cfg: ServeConfig {
                workers: 4,
                blocking: 8,
            },
            install: Install::Gated,
            env: vec![],
            policy: SocketPolicy {
                roots: vec![ws.to_path_buf()],
                sockets: vec![],
            },
        }
    }
}

/// Run `scenario` in a child under the gate, served by `judge`.
pub fn run(scenario: &str, ws: &Path, judge: Arc<TestJudge>, opts: Opts) -> Run {
    let (ours, theirs) = sockets::socketpair().expect("socketpair");
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.env("FSGATE_CHILD", scenario)
        .env("FSGATE_WS", ws)
        .env(
            "FSGATE_INSTALL",
            match opts.install {
                Install::Gated => "gated",
                Install::NotKillable => "plain",
                Install::None => "none",
            },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let fd = theirs.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only calls dup2, which is
    // async-signal-safe; descriptor 3 is then the child's end of the socketpair.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn child");
    drop(theirs);
    if opts.install == Install::None {
        let out = child.wait_with_output().expect("child output");
        return Run::from(out, vec![]);
    }
    let listener: OwnedFd = sockets::recv_fd(ours.as_raw_fd())
        .expect("recv listener")
        .expect("child sent its listener");
    let denials = Arc::new(Mutex::new(Vec::new()));
    let sink_log = Arc::clone(&denials);
    let sink: fsgate::Sink = Arc::new(move |d: Denial| {
        sink_log.lock().unwrap().push(match d {
            Denial::Connect(c) => format!("connect {}", c.target),
            Denial::Fs(r) => r.detail,
        });
    });
    let sup = fsgate::serve(listener, judge, opts.policy, sink, opts.cfg).expect("serve");
    let out = child.wait_with_output().expect("child output");
    sup.join();
    let denials = denials.lock().unwrap().clone();
    Run::from(out, denials)
}

impl Run {
    fn from(out: std::process::Output, denials: Vec<String>) -> Run {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let results = stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Run {
            results,
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            success: out.status.success(),
            denials,
        }
    }
}

/// A fresh workspace directory.
pub fn workspace(name: &str) -> PathBuf {
    let ws = std::env::temp_dir().join(format!("fsgate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    std::fs::create_dir_all(&ws).expect("workspace");
    ws
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}
