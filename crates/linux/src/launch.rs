//! The launch sequence of the unelevated tier.
//!
//! # Processes
//! ```text
//! stockade (host)  ── clone3(NEWUSER|NEWNS|NEWPID|NEWIPC|NEWUTS|NEWCGROUP[|NEWNET]) ──▶  init (pid 1)
//!                                                                     └── fork ──▶ command (pid 2)
//! ```
//! * **stockade** stays on the host: it forwards signals to init, enforces `--timeout`, collects
//!   the report pipe and returns the outcome.
//! * **init** (pid 1 of the new pid namespace) builds the sandbox's view of the world, then forks
//!   the command and reaps. When the command exits, init kills everything left in the pid
//!   namespace (`kill(-1, SIGKILL)`) and reaps it, and only then writes the command's status and
//!   closes the report pipe: when stockade returns, no process of the run exists. (stockade does
//!   not wait for init's own exit, in which the kernel unmaps it and tears down the namespaces;
//!   it reaps init afterwards.) Init dies with stockade (`PR_SET_PDEATHSIG`).
//! * **command** confines itself and execs.
//!
//! # Enforcement order, and why
//! In init, with full capabilities inside the new user namespace:
//! 1. `PR_SET_PDEATHSIG` + parent-alive check — first, so a setup that outlives stockade cannot exist.
//! 2. uid/gid maps (caller's ids map to themselves) — needed before anything checks credentials.
//! 3. Mounts ([`crate::mounts`]) — need `CAP_SYS_ADMIN` in the namespace, so they come while it is held.
//! 4. Loopback up in the new network namespace (`CAP_NET_ADMIN`), only when network is off.
//! 5. `chdir` into the working directory — after mounts, so it names the sandbox's view.
//!
//! In the command, after fork:
//! 6. Signal mask and dispositions reset, `setsid` (no controlling terminal: no `TIOCSTI`
//!    into the caller's terminal, no job-control signals from it).
//! 7. Landlock — after mounts (its rules open paths in the final view) and before capabilities are
//!    dropped; it also forbids any later mount change.
//! 8. Capabilities dropped for good ([`stockade_sys::caps`]) and `no_new_privs` — after every privileged
//!    step, so nothing needs them again.
//! 9. Inherited descriptors closed (all but 0, 1, 2 and `--pass-fd`s) — last before exec, so every
//!    earlier step can still report through the report pipe (close-on-exec).
//! 10. `execve`.
//!
//! Every step that fails reports through the report pipe and the launch fails closed.

use crate::landlock_layer::{self, LandlockStatus};
use crate::limits::{self, Rlimit};
use crate::mounts;
use crate::proxy;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stockade_policy::backend::{Command, Denial, EnforcedLayer, ExitKind, RunOptions, RunOutcome};
use stockade_policy::model::NetworkMode;
use stockade_policy::plan::Plan;
use stockade_sys::caps;
use stockade_sys::net;
use stockade_sys::pty::{self, Pty, RawMode};
use stockade_sys::seccomp;
use stockade_sys::sockets::{self, Gate, SocketPolicy};
use stockade_sys::{self as sys, Forked, SysError};

/// Signals stockade forwards to the sandbox.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Exit code of init when setup failed (the report pipe carries the reason).
const SETUP_FAILED: i32 = 125;

/// Why a launch failed (a command that ran and failed is not an error).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// User namespaces cannot be created here.
    #[error(
        "cannot create a user namespace ({source}): {cause}. The unelevated tier needs unprivileged user \
         namespaces; run `stockade doctor` for details, or use the elevated tier (`sudo stockade setup`, then \
         `stockade run --tier elevated`)"
    )]
    UserNamespaces {
        /// The failing syscall.
        source: SysError,
        /// The likely cause on this machine.
        cause: String,
    },
    /// Preparing the host side failed.
    #[error("preparing the sandbox failed: {0}")]
    Prepare(String),
    /// A system call on the host side failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Building the sandbox failed (inside; reason reported by init).
    #[error("building the sandbox failed, nothing was run: {0}")]
    Setup(String),
    /// The command could not be executed.
    #[error("cannot execute {program:?}: {reason}")]
    Exec {
        /// The program as given.
        program: OsString,
        /// Why.
        reason: String,
        /// errno of execve.
        errno: i32,
    },
}

impl LaunchError {
    /// The conventional exit status for this failure (127 not found, 126 not executable, 125 setup).
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::Exec { errno, .. } if *errno == libc::ENOENT => 127,
            LaunchError::Exec { .. } => 126,
            _ => SETUP_FAILED,
        }
    }
}

/// Run `cmd` under `plan` in the unelevated tier.
pub fn run(plan: &Plan, cmd: &Command, opts: &RunOptions) -> Result<RunOutcome, LaunchError> {
    let start = Instant::now();
    prepare_host(plan)?;
    let host = mounts::HostFacts::probe();
    let steps = mounts::steps(plan, &host);
    let writable = landlock_layer::writable_paths(plan);
    let exec = ExecSpec::new(plan, cmd, &writable)?;
    let filter = seccomp::program().map_err(|e| LaunchError::Prepare(e.to_string()))?;
    let socket_policy = SocketPolicy {
        roots: writable,
        sockets: plan.allow_unix_sockets.clone(),
    };

    // Read before clone: inside the new user namespace, before the maps are written, these read
    // as the overflow id.
    let ids = (sys::users::getuid(), sys::users::getgid());
    let rlimits =
        limits::plan(&plan.limits, ids.0).map_err(|e| LaunchError::Prepare(e.to_string()))?;
    let (report_r, report_w) = sys::pipe()?;
    let (alive_r, alive_w) = sys::pipe()?;
    // With a pty, init opens it inside the sandbox and sends the master back over this channel.
    let proxy_chan = match plan.network {
        NetworkMode::Allowlist => Some(
            sockets::socketpair().map_err(|e| LaunchError::Prepare(format!("socketpair: {e}")))?,
        ),
        _ => None,
    };
    let pty_chan = match opts.pty {
        true => Some(
            sockets::socketpair().map_err(|e| LaunchError::Prepare(format!("socketpair: {e}")))?,
        ),
        false => None,
    };
    let forwarded = sys::sigset(FORWARDED);
    let old_mask = sys::block_signals(&forwarded)?;
    let sigfd = sys::signalfd(&forwarded)?;

    let mut flags = (libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP) as u64;
    if plan.network != NetworkMode::On {
        flags |= libc::CLONE_NEWNET as u64;
    }
    // SAFETY (contract of clone3_fork): stockade is single-threaded at this point; nothing in the
    // CLI spawns threads.
    let forked = match sys::clone3_fork(flags) {
        Ok(f) => f,
        Err(e) => {
            let _ = sys::set_sigmask(&old_mask);
            return Err(userns_error(e));
        }
    };
    let (pid, pidfd) = match forked {
        Forked::Child => {
            drop(report_r);
            drop(alive_w);
            drop(sigfd);
            let code = init_main(
                plan,
                &steps,
                &exec,
                &filter,
                &socket_policy,
                &rlimits,
                opts,
                Channels {
                    pty: pty_chan.as_ref().map(|(_, theirs)| theirs.as_raw_fd()),
                    proxy: proxy_chan.as_ref().map(|(_, theirs)| theirs.as_raw_fd()),
                },
                ids,
                report_w.as_raw_fd(),
                alive_r,
            );
            sys::exit_now(code)
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(report_w);
    drop(alive_r);
    let denials = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let _proxy_thread = proxy_chan.map(|(ours, theirs)| {
        drop(theirs);
        proxy::serve(
            ours,
            plan.allowed_domains.clone(),
            std::sync::Arc::clone(&denials),
        )
    });
    let pty = match pty_chan {
        Some((ours, theirs)) => {
            drop(theirs);
            match sockets::recv_fd(ours.as_raw_fd()) {
                Ok(Some(master)) => {
                    let p = Pty { master };
                    p.copy_size(0);
                    Some(p)
                }
                // init failed before opening it; its report says why.
                _ => None,
            }
        }
        None => None,
    };
    let raw_mode = pty.as_ref().and_then(|_| RawMode::enter(0));
    let result = supervise(pid, &pidfd, &report_r, &sigfd, opts.timeout, pty.as_ref());
    drop(raw_mode);
    drop(alive_w);
    let _ = sys::set_sigmask(&old_mask);
    let (report, killed_for_timeout, init_status) = result?;
    reap_finished(pid);

    let parsed = Report::parse(&report);
    if let Some(msg) = parsed.fatal {
        return Err(LaunchError::Setup(msg));
    }
    if let Some((errno, reason)) = parsed.exec_error {
        return Err(LaunchError::Exec {
            program: cmd.program.clone(),
            reason,
            errno,
        });
    }
    let exit = if killed_for_timeout {
        ExitKind::TimedOut
    } else if let Some(st) = parsed.status {
        decode_status(st)
    } else {
        // init vanished without reporting: killed from outside.
        decode_status(init_status)
    };
    Ok(RunOutcome {
        tier: "linux-unelevated".into(),
        exit,
        duration: start.elapsed(),
        enforced: parsed.layers,
        warnings: parsed.warnings,
        denials: parsed
            .denials
            .into_iter()
            .chain(
                denials
                    .lock()
                    .map(|mut d| std::mem::take(&mut *d))
                    .unwrap_or_default(),
            )
            .chain(created_protected(plan))
            .collect(),
    })
}

/// Protected names that did not exist at launch (so no mount could protect them) but exist now:
/// reported, never silently accepted.
fn created_protected(plan: &Plan) -> Vec<Denial> {
    plan.protected_missing
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .map(|p| Denial {
            kind: "protected-created".into(),
            target: p.display().to_string(),
        })
        .collect()
}

fn decode_status(st: libc::c_int) -> ExitKind {
    if libc::WIFSIGNALED(st) {
        ExitKind::Signal(libc::WTERMSIG(st))
    } else {
        ExitKind::Code(libc::WEXITSTATUS(st))
    }
}

fn userns_error(e: SysError) -> LaunchError {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let cause = if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref()
        == Some("1")
    {
        "AppArmor restricts unprivileged user namespaces (sysctl kernel.apparmor_restrict_unprivileged_userns=1, the Ubuntu 24.04+ default)".to_string()
    } else if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)"
            .to_string()
    } else if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        "user namespaces are disabled (sysctl user.max_user_namespaces=0)".to_string()
    } else if e.errno() == Some(libc::EPERM) {
        "the kernel or a seccomp filter (e.g. inside a container) refuses new user namespaces"
            .to_string()
    } else {
        "the kernel refused the new namespaces".to_string()
    };
    LaunchError::UserNamespaces { source: e, cause }
}

/// Host-side preparation done as the caller: the persistent temp dirs.
fn prepare_host(plan: &Plan) -> Result<(), LaunchError> {
    if let (true, Some(dir)) = (plan.temp.private, &plan.temp.persist_dir) {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        for sub in ["tmp", "var-tmp"] {
            let p = dir.join(sub);
            if !p.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&p)
                    .map_err(|e| {
                        LaunchError::Prepare(format!("cannot create temp dir {}: {e}", p.display()))
                    })?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777)).map_err(
                    |e| LaunchError::Prepare(format!("cannot set mode of {}: {e}", p.display())),
                )?;
            }
        }
    }
    Ok(())
}

type Supervised = (Vec<u8>, bool, libc::c_int);

/// Host side: forward signals, enforce the timeout, collect the report, reap init.
fn supervise(
    pid: libc::pid_t,
    pidfd: &OwnedFd,
    report: &OwnedFd,
    sigfd: &OwnedFd,
    timeout: Option<Duration>,
    pty: Option<&Pty>,
) -> Result<Supervised, LaunchError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut buf = Vec::new();
    let mut pipe_open = true;
    let mut timed_out = false;
    let master = pty.map(|p| p.master.as_raw_fd());
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let pollfd = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let mut fds = [
            pollfd(pidfd.as_raw_fd()),
            pollfd(sigfd.as_raw_fd()),
            pollfd(if pipe_open { report.as_raw_fd() } else { -1 }),
            pollfd(if stdin_open { 0 } else { -1 }),
            pollfd(match master {
                Some(m) if master_open => m,
                _ => -1,
            }),
        ];
        let wait_ms = match deadline {
            Some(d) if !timed_out => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
            _ => -1,
        };
        let n = sys::poll(&mut fds, wait_ms)?;
        if n == 0 && !timed_out {
            timed_out = true;
            let _ = sys::pidfd_send_signal(pidfd, libc::SIGKILL);
            continue;
        }
        if fds[2].revents != 0 {
            pipe_open = drain_once(report.as_raw_fd(), &mut buf)?;
            if !pipe_open && Report::has_status(&buf) {
                // init wrote the command's status after every process of the run was dead and
                // reaped; its own exit (the kernel tearing down the namespaces) need not be
                // waited for. stockade reaps it later (see `reap_finished`).
                drain_master(master, &mut master_open)?;
                return Ok((buf, timed_out, 0));
            }
        }
        if fds[1].revents & libc::POLLIN != 0 {
            let (sig, _, _) = sys::read_signalfd(sigfd)?;
            match pty {
                // The pty delivers SIGWINCH itself once it has the new size.
                Some(p) if sig == libc::SIGWINCH => p.copy_size(0),
                _ => {
                    let _ = sys::pidfd_send_signal(pidfd, sig);
                }
            }
        }
        if let Some(m) = master {
            if fds[3].revents != 0 {
                stdin_open = copy_once(0, m);
            }
            if fds[4].revents != 0 {
                master_open = copy_once(m, 1);
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let status = match sys::waitpid(pid, false)? {
                Some((_, st)) => st,
                None => 0,
            };
            while pipe_open {
                pipe_open = drain_once(report.as_raw_fd(), &mut buf)?;
            }
            drain_master(master, &mut master_open)?;
            return Ok((buf, timed_out, status));
        }
    }
}

/// The whole sandbox is gone: whatever output is left in the pty is final.
fn drain_master(master: Option<RawFd>, open: &mut bool) -> Result<(), SysError> {
    if let Some(m) = master {
        while *open {
            let mut p = [libc::pollfd {
                fd: m,
                events: libc::POLLIN,
                revents: 0,
            }];
            if sys::poll(&mut p, 0)? == 0 {
                break;
            }
            *open = copy_once(m, 1);
        }
    }
    Ok(())
}

/// inits whose status came through the report pipe before they had finished exiting.
static UNREAPED: std::sync::Mutex<Vec<libc::pid_t>> = std::sync::Mutex::new(Vec::new());

/// Reap `pid` if it has exited; otherwise remember it and try again on the next launch (a
/// long-lived caller such as `stockade mcp` must not collect zombies; the CLI exits anyway).
fn reap_finished(pid: libc::pid_t) {
    if let Ok(mut pending) = UNREAPED.lock() {
        pending.push(pid);
        pending.retain(|&p| !matches!(sys::waitpid(p, true), Ok(Some(_)) | Err(_)));
    }
}

/// Copy one chunk from `from` to `to`; `false` once `from` is at end of file or failed (a pty
/// master reads EIO when the last slave closes).
fn copy_once(from: RawFd, to: RawFd) -> bool {
    let mut chunk = [0u8; 8192];
    match sys::read(from, &mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            sys::write_all_best_effort(to, &chunk[..n]);
            true
        }
    }
}

/// Read once; `Ok(false)` at end of file.
fn drain_once(fd: RawFd, buf: &mut Vec<u8>) -> Result<bool, SysError> {
    let mut chunk = [0u8; 4096];
    let n = sys::read(fd, &mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

// ---- report protocol -----------------------------------------------------------------------------
// One record per line: `L layer\tdetail`, `W warning`, `F fatal`, `X errno\treason`, `S status`.

/// The writing end of the report pipe. Records are held back and written in one batch when the
/// command is about to exec (or on failure, or by init after the command started), so stockade
/// wakes up twice per run instead of once per record — on a small machine every wake-up of the
/// host process takes a CPU from the launch it is waiting for.
#[derive(Clone)]
struct Reporter {
    fd: RawFd,
    pending: Vec<u8>,
}

impl Reporter {
    fn new(fd: RawFd) -> Self {
        Reporter {
            fd,
            pending: Vec::with_capacity(1024),
        }
    }

    /// Queue a record.
    fn line(&mut self, tag: char, body: &str) {
        self.pending.push(tag as u8);
        self.pending.push(b' ');
        self.pending
            .extend(body.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
        self.pending.push(b'\n');
    }

    /// Write everything queued.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            sys::write_all_best_effort(self.fd, &self.pending);
            self.pending.clear();
        }
    }

    /// Queue a record and write everything now.
    fn now(&mut self, tag: char, body: &str) {
        self.line(tag, body);
        self.flush();
    }
}

#[derive(Default, Debug)]
struct Report {
    layers: Vec<EnforcedLayer>,
    warnings: Vec<String>,
    fatal: Option<String>,
    exec_error: Option<(i32, String)>,
    status: Option<libc::c_int>,
    denials: Vec<Denial>,
}

impl Report {
    /// Whether the records include the command's status (`S`).
    fn has_status(bytes: &[u8]) -> bool {
        bytes.starts_with(b"S ") || bytes.windows(3).any(|w| w == b"\nS ")
    }

    fn parse(bytes: &[u8]) -> Report {
        let mut r = Report::default();
        for line in String::from_utf8_lossy(bytes).lines() {
            let Some((tag, body)) = line.split_once(' ') else {
                continue;
            };
            match tag {
                "L" => {
                    let (layer, detail) = body.split_once('\t').unwrap_or((body, ""));
                    r.layers.push(EnforcedLayer {
                        layer: layer.into(),
                        detail: detail.into(),
                    });
                }
                "W" => r.warnings.push(body.into()),
                "F" => r.fatal = Some(body.into()),
                "X" => {
                    let (errno, reason) = body.split_once('\t').unwrap_or((body, ""));
                    r.exec_error = Some((errno.parse().unwrap_or(libc::ENOENT), reason.into()));
                }
                "S" => r.status = body.trim().parse().ok(),
                "D" => {
                    let (kind, target) = body.split_once('\t').unwrap_or((body, ""));
                    r.denials.push(Denial {
                        kind: kind.into(),
                        target: target.into(),
                    });
                }
                _ => {}
            }
        }
        r
    }
}

// ---- inside ---------------------------------------------------------------------------------------

/// What the command process needs to exec, prepared before forking (no allocation decisions left
/// for after the fork except `CString` lookups along `PATH`).
struct ExecSpec {
    program: OsString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    path_dirs: Vec<PathBuf>,
}

impl ExecSpec {
    /// `writable`: where the sandbox may write ([`landlock_layer::writable_paths`]).
    fn new(plan: &Plan, cmd: &Command, writable: &[PathBuf]) -> Result<Self, LaunchError> {
        let nul = |s: &OsStr| {
            CString::new(s.as_bytes())
                .map_err(|_| LaunchError::Prepare(format!("argument {s:?} contains a NUL byte")))
        };
        let mut argv = vec![nul(&cmd.program)?];
        for a in &cmd.args {
            argv.push(nul(a)?);
        }
        let mut envp = Vec::with_capacity(plan.env.len());
        let mut path_dirs = Vec::new();
        for (k, v) in &plan.env {
            // A TMPDIR the sandbox cannot write (e.g. /run/user/N) would break every tool that
            // makes a temp file: point it at the private /tmp instead.
            let v: &OsStr = if k == "TMPDIR"
                && plan.temp.private
                && !writable.iter().any(|w| Path::new(v).starts_with(w))
            {
                OsStr::new("/tmp")
            } else {
                v
            };
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(CString::new(kv).map_err(|_| {
                LaunchError::Prepare(format!("environment variable {k:?} contains a NUL byte"))
            })?);
            if plan.network == NetworkMode::Allowlist && is_proxy_var(k) {
                continue;
            }
            if k == "PATH" {
                path_dirs = std::env::split_paths(v).collect();
            }
        }
        if plan.network == NetworkMode::Allowlist {
            for (k, v) in PROXY_VARS {
                envp.push(
                    CString::new(format!("{k}={v}"))
                        .map_err(|_| LaunchError::Prepare("proxy variable".into()))?,
                );
            }
        }
        if path_dirs.is_empty() {
            path_dirs = [
                "/usr/local/bin",
                "/usr/bin",
                "/bin",
                "/usr/local/sbin",
                "/usr/sbin",
                "/sbin",
            ]
            .map(PathBuf::from)
            .to_vec();
        }
        Ok(ExecSpec {
            program: cmd.program.clone(),
            argv,
            envp,
            path_dirs,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn init_main(
    plan: &Plan,
    steps: &[mounts::Step],
    exec: &ExecSpec,
    filter: &[libc::sock_filter],
    socket_policy: &SocketPolicy,
    rlimits: &[Rlimit],
    opts: &RunOptions,
    chans: Channels,
    ids: (libc::uid_t, libc::gid_t),
    report: RawFd,
    alive: OwnedFd,
) -> i32 {
    let mut rep = Reporter::new(report);
    if let Err(msg) =
        init_setup(plan, steps, ids, &mut rep, alive).and_then(|()| init_confine(plan, &mut rep))
    {
        rep.now('F', &msg);
        return SETUP_FAILED;
    }
    let proxy = match chans.proxy {
        Some(chan) => match proxy::listen_inside() {
            Ok(l) => {
                rep.line('L',
                    &format!("network-allowlist\tHTTP(S) only, through stockade's proxy at {}, to network.allowed_domains", proxy::INSIDE_ADDR),
                );
                Some((l, chan))
            }
            Err(e) => {
                rep.now(
                    'F',
                    &format!("proxy listener on {}: {e}", proxy::INSIDE_ADDR),
                );
                return SETUP_FAILED;
            }
        },
        None => None,
    };
    let pty_slave = match chans.pty.map(open_pty_for_host) {
        Some(Ok(slave)) => Some(slave),
        Some(Err(msg)) => {
            rep.now('F', &msg);
            return SETUP_FAILED;
        }
        None => None,
    };
    let pty_slave_fd = pty_slave.as_ref().map(|s| s.as_raw_fd());
    let (chan_init, chan_cmd) = match sockets::socketpair() {
        Ok(p) => p,
        Err(e) => {
            rep.now('F', &format!("socketpair: {e}"));
            return SETUP_FAILED;
        }
    };
    let child = match sys::fork() {
        Ok(0) => {
            drop(chan_init);
            let code = command_main(
                exec,
                filter,
                rlimits,
                opts,
                pty_slave_fd,
                &mut rep,
                chan_cmd,
            );
            sys::exit_now(code)
        }
        // The command writes the queued records with its own, in one batch before exec.
        Ok(pid) => {
            rep.pending.clear();
            pid
        }
        Err(e) => {
            rep.now('F', &e.to_string());
            return SETUP_FAILED;
        }
    };
    drop(chan_cmd);
    // init's copy of the slave: the command has its own.
    drop(pty_slave);
    let gate = match sockets::recv_fd(chan_init.as_raw_fd()) {
        Ok(Some(listener)) => Some(Gate::new(listener, socket_policy.clone())),
        // The command failed before installing the gate; it reports why itself.
        Ok(None) | Err(_) => None,
    };
    drop(chan_init);
    init_reap(child, gate, proxy, &mut rep)
}

/// Variables that point HTTP clients at the allowlist proxy (they replace the caller's).
const PROXY_VARS: &[(&str, &str)] = &[
    ("HTTP_PROXY", proxy::PROXY_URL),
    ("HTTPS_PROXY", proxy::PROXY_URL),
    ("http_proxy", proxy::PROXY_URL),
    ("https_proxy", proxy::PROXY_URL),
    ("ALL_PROXY", proxy::PROXY_URL),
    ("all_proxy", proxy::PROXY_URL),
    ("NO_PROXY", "localhost,127.0.0.1,::1"),
    ("no_proxy", "localhost,127.0.0.1,::1"),
];

fn is_proxy_var(name: &OsStr) -> bool {
    PROXY_VARS.iter().any(|(k, _)| OsStr::new(k) == name)
}

/// Descriptors init uses to reach stockade (each the init end of a socketpair).
struct Channels {
    /// Send the pty master here (with `--pty`).
    pty: Option<RawFd>,
    /// Send accepted proxy connections here (network allowlist).
    proxy: Option<RawFd>,
}

/// Open the pty inside the sandbox, send the master to stockade, keep the slave for the command.
fn open_pty_for_host(chan: RawFd) -> Result<OwnedFd, String> {
    let (master, slave) = Pty::open().map_err(|e| e.to_string())?;
    sockets::send_fd(chan, master.as_raw_fd())
        .map_err(|e| format!("passing the pty to stockade: {e}"))?;
    Ok(slave)
}

/// Confine init itself before it forks the command: the command inherits this Landlock domain and
/// the empty capability sets, and init — which performs connects on the command's behalf — is
/// held to the same rules. Init is made non-dumpable so the command cannot ptrace it.
fn init_confine(plan: &Plan, rep: &mut Reporter) -> Result<(), String> {
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS").map_err(|e| e.to_string())?;
    match landlock_layer::restrict(plan).map_err(|e| e.to_string())? {
        LandlockStatus::Full => rep.line('L',
            &format!("landlock\tABI {}: writes only beneath writable roots and private temp dirs; abstract sockets and signals scoped", stockade_sys::landlock::kernel_abi()),
        ),
        LandlockStatus::Partial => rep.line('L',
            &format!("landlock\tABI {} (partial: some newer rights unavailable): writes only beneath writable roots", stockade_sys::landlock::kernel_abi()),
        ),
        LandlockStatus::Unsupported => rep.line('W',
            "Landlock is not available on this kernel: writes are confined by the mount layer alone",
        ),
    }
    caps::drop_all().map_err(|e| e.to_string())?;
    rep.line(
        'L',
        "capabilities\tall dropped (bounding set empty, securebits locked), no_new_privs set",
    );
    sys::prctl(libc::PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE").map_err(|e| e.to_string())?;
    Ok(())
}

fn init_setup(
    plan: &Plan,
    steps: &[mounts::Step],
    (uid, gid): (libc::uid_t, libc::gid_t),
    rep: &mut Reporter,
    alive: OwnedFd,
) -> Result<(), String> {
    sys::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        "PR_SET_PDEATHSIG",
    )
    .map_err(|e| e.to_string())?;
    let mut pfd = [libc::pollfd {
        fd: alive.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    if sys::poll(&mut pfd, 0).map_err(|e| e.to_string())? > 0 {
        return Err("stockade exited during setup".into());
    }
    drop(alive);

    sys::write_file(
        Path::new("/proc/self/uid_map"),
        format!("{uid} {uid} 1\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    sys::write_file(Path::new("/proc/self/setgroups"), b"deny").map_err(|e| e.to_string())?;
    sys::write_file(
        Path::new("/proc/self/gid_map"),
        format!("{gid} {gid} 1\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    rep.line(
        'L',
        &format!("user-namespace\tuid {uid} and gid {gid} mapped to themselves, nothing else"),
    );
    let _ = sys::sethostname("stockade");

    mounts::execute(steps).map_err(|e| e.to_string())?;
    rep.line('L',
        &format!(
            "mount-namespace\tfilesystem read-only except {} writable root(s); {} protected path(s) read-only; {} path(s) masked; private /dev{}",
            plan.writable_roots.len(),
            plan.protected.iter().filter(|p| plan.writable_roots.iter().any(|r| p.path.starts_with(r))).count(),
            plan.deny_read.len(),
            if plan.temp.private { ", /tmp, /var/tmp, /dev/shm" } else { "" }
        ),
    );
    rep.line(
        'L',
        "pid-namespace\tcommand is pid 2; everything it starts dies with it",
    );
    if plan.network != NetworkMode::On {
        net::loopback_up().map_err(|e| e.to_string())?;
        rep.line('L', "net-namespace\tno interfaces but a private loopback");
    }
    sys::chdir(&plan.cwd).map_err(|e| e.to_string())?;
    // A new session: the terminal's job-control signals reach stockade, which forwards them once.
    sys::setsid().map_err(|e| e.to_string())?;
    Ok(())
}

/// Refused `connect()`s init reports (one more record says the rest were dropped).
const MAX_CONNECT_DENIALS: usize = 1000;

/// pid 1: forward signals to the command's process group, answer the connect gate, reap
/// everything, exit with the command.
fn init_reap(
    child: libc::pid_t,
    mut gate: Option<Gate>,
    proxy: Option<(std::net::TcpListener, RawFd)>,
    rep: &mut Reporter,
) -> i32 {
    // Refused connects reported; the command could otherwise grow stockade's memory (and the
    // report) without bound by repeating one.
    let mut denied = 0usize;
    let mut set_signals = FORWARDED.to_vec();
    set_signals.push(libc::SIGCHLD);
    let set = sys::sigset(&set_signals);
    if let Err(e) = sys::block_signals(&set) {
        rep.now('F', &e.to_string());
        return SETUP_FAILED;
    }
    let sfd = match sys::signalfd(&set) {
        Ok(fd) => fd,
        Err(e) => {
            rep.now('F', &e.to_string());
            return SETUP_FAILED;
        }
    };
    loop {
        // Reap first: the child may already be gone before the first signal is read.
        loop {
            match sys::waitpid(-1, true) {
                Ok(Some((pid, status))) if pid == child => {
                    // Everything else in the sandbox dies, and is reaped, before stockade hears
                    // the result: once the status is written, no process of the run is left.
                    // (pid 1's kill(-1) reaches every process of the namespace but itself.)
                    let _ = sys::kill(-1, libc::SIGKILL);
                    loop {
                        match sys::waitpid(-1, false) {
                            Ok(Some(_)) => continue,
                            Err(e) if e.errno() == Some(libc::EINTR) => continue,
                            _ => break,
                        }
                    }
                    rep.now('S', &status.to_string());
                    // Close the pipe now, not at exit: stockade returns on end-of-file and need
                    // not wait while the kernel unmaps init and tears down its namespaces.
                    sys::close_raw(rep.fd);
                    return 0;
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: gate.as_ref().map_or(-1, Gate::fd),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: proxy.as_ref().map_or(-1, |(l, _)| l.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if sys::poll(&mut fds, -1).is_err() {
            continue;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            if let Some(d) = gate.as_ref().and_then(Gate::handle_one) {
                match denied {
                    n if n < MAX_CONNECT_DENIALS => {
                        rep.now('D', &format!("connect\t{}", d.target));
                    }
                    MAX_CONNECT_DENIALS => rep.now(
                        'D',
                        &format!("connect\tmore than {MAX_CONNECT_DENIALS} refused connects; the rest not listed"),
                    ),
                    _ => {}
                }
                denied = denied.saturating_add(1);
            }
        } else if fds[1].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            gate = None;
        }
        if fds[2].revents & libc::POLLIN != 0 {
            if let Some((listener, chan)) = &proxy {
                // Hand the connection to stockade's proxy on the host; init keeps no copy.
                if let Ok((conn, _)) = listener.accept() {
                    let _ = sockets::send_fd(*chan, conn.as_raw_fd());
                }
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            match sys::read_signalfd(&sfd) {
                Ok((libc::SIGCHLD, _, _)) => {}
                Ok((sig, _, _)) => {
                    let _ = sys::kill(-child, sig);
                }
                Err(_) => {}
            }
        }
    }
}

fn command_main(
    exec: &ExecSpec,
    filter: &[libc::sock_filter],
    rlimits: &[Rlimit],
    opts: &RunOptions,
    pty_slave: Option<RawFd>,
    rep: &mut Reporter,
    chan: OwnedFd,
) -> i32 {
    match command_setup(filter, rlimits, opts, pty_slave, rep, chan) {
        Ok(()) => {}
        Err(msg) => {
            rep.now('F', &msg);
            return SETUP_FAILED;
        }
    }
    // Everything init and the command queued, in one write (the pipe is close-on-exec).
    rep.flush();
    let err = exec_program(exec);
    rep.now(
        'X',
        &format!("{}\t{}", err.errno().unwrap_or(libc::ENOENT), err.source),
    );
    if err.errno() == Some(libc::ENOENT) {
        127
    } else {
        126
    }
}

fn command_setup(
    filter: &[libc::sock_filter],
    rlimits: &[Rlimit],
    opts: &RunOptions,
    pty_slave: Option<RawFd>,
    rep: &mut Reporter,
    chan: OwnedFd,
) -> Result<(), String> {
    // 6. SIGPIPE back to its default: Rust ignores it at startup, and an ignored disposition
    //    survives exec (a shell pipeline would see EPIPE instead of dying quietly). Everything
    //    else is left as the caller had it, as a plain exec would.
    sys::default_sigpipe();
    sys::set_sigmask(&sys::empty_sigset()).map_err(|e| e.to_string())?;
    // Its own session and process group: init forwards signals to the group, and the command
    // has no controlling terminal unless it gets the pty.
    sys::setsid().map_err(|e| e.to_string())?;
    if let Some(fd) = pty_slave {
        pty::attach_slave(fd).map_err(|e| e.to_string())?;
    }
    sys::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        "PR_SET_PDEATHSIG",
    )
    .map_err(|e| e.to_string())?;
    limits::apply(rlimits).map_err(|e| e.to_string())?;
    if !rlimits.is_empty() {
        let names: Vec<String> = rlimits
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        rep.line('L', &format!("limits\t{}", names.join(", ")));
    }
    // seccomp: one filter; its connect listener goes to init.
    let listener = seccomp::install(filter).map_err(|e| e.to_string())?;
    sockets::send_fd(chan.as_raw_fd(), listener.as_raw_fd())
        .map_err(|e| format!("passing the seccomp listener to init: {e}"))?;
    drop(listener);
    drop(chan);
    rep.line('L', "seccomp\tforeign ABIs killed; namespace, mount, keyring, bpf, perf, io_uring, module, TIOCSTI calls refused; every connect() checked by init");
    // descriptors, last
    close_inherited(rep.fd, &opts.pass_fds).map_err(|e| e.to_string())?;
    rep.line(
        'L',
        &format!(
            "descriptors\tinherited descriptors closed except 0, 1, 2{}",
            if opts.pass_fds.is_empty() {
                String::new()
            } else {
                format!(" and {:?}", opts.pass_fds)
            }
        ),
    );
    Ok(())
}

/// Close every descriptor but 0, 1, 2, the report pipe (close-on-exec) and `keep`.
fn close_inherited(report: RawFd, keep: &[RawFd]) -> Result<(), SysError> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    for &fd in &keep {
        sys::clear_cloexec(fd)?;
    }
    keep.push(report);
    sys::spawn::close_fds_except(&keep)
}

/// `execve` the program, searching `PATH` (of the sandbox's environment) like `execvp`.
fn exec_program(exec: &ExecSpec) -> SysError {
    let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = exec.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    if exec.program.as_bytes().contains(&b'/') {
        return sys::execve(&exec.argv[0], &argv, &envp);
    }
    let mut first_err: Option<SysError> = None;
    for dir in &exec.path_dirs {
        let candidate = dir.join(&exec.program);
        let Ok(c) = CString::new(candidate.into_os_string().into_vec()) else {
            continue;
        };
        let err = sys::execve(&c, &argv, &envp);
        match err.errno() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            _ => {
                if first_err.is_none() {
                    first_err = Some(err);
                }
            }
        }
    }
    first_err.unwrap_or_else(|| SysError {
        call: "execvp",
        what: exec.program.to_string_lossy().into_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "command not found in PATH"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parses_every_record_kind() {
        let r = Report::parse(b"L landlock\tABI 7\nW no thing\nX 2\tNo such file\nS 256\nF boom\n");
        assert_eq!(
            r.layers,
            vec![EnforcedLayer {
                layer: "landlock".into(),
                detail: "ABI 7".into()
            }]
        );
        assert_eq!(r.warnings, vec!["no thing".to_string()]);
        assert_eq!(r.exec_error, Some((2, "No such file".into())));
        assert_eq!(r.status, Some(256));
        assert_eq!(r.fatal.as_deref(), Some("boom"));
    }

    #[test]
    fn status_decoding() {
        assert_eq!(decode_status(7 << 8), ExitKind::Code(7));
        assert_eq!(decode_status(9), ExitKind::Signal(9));
    }
}
