//! The command process: what it needs to exec (prepared before the fork), and the confinement
//! it applies to itself before exec (steps 6-10 of the enforcement order).

use super::report::Reporter;
use super::{LaunchError, SETUP_FAILED};
use crate::limits::{self, Rlimit};
use crate::proxy;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use stockade_policy::backend::{Command, RunOptions};
use stockade_policy::model::NetworkMode;
use stockade_policy::plan::Plan;
use stockade_sys::pty::{self};
use stockade_sys::seccomp;
use stockade_sys::sockets::{self};
use stockade_sys::{self as sys, SysError};

/// What the command process needs to exec, prepared before forking (no allocation decisions left
/// for after the fork except `CString` lookups along `PATH`).
pub(super) struct ExecSpec {
    program: OsString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    path_dirs: Vec<PathBuf>,
}

impl ExecSpec {
    /// `writable`: where the sandbox may write ([`landlock_layer::writable_paths`]).
    pub(super) fn new(
        plan: &Plan,
        cmd: &Command,
        writable: &[PathBuf],
    ) -> Result<Self, LaunchError> {
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

/// What the command process applies to itself before exec (see [`command_setup`]).
pub(super) struct CommandSetup<'a> {
    pub filter: &'a [libc::sock_filter],
    /// The filter carries the write gate's rules (installed with WAIT_KILLABLE_RECV).
    pub gated: bool,
    pub rlimits: &'a [Rlimit],
    pub opts: &'a RunOptions,
    pub pty_slave: Option<RawFd>,
    /// Where the seccomp listener goes to init.
    pub chan: OwnedFd,
}

pub(super) fn command_main(exec: &ExecSpec, setup: CommandSetup<'_>, rep: &mut Reporter) -> i32 {
    match command_setup(setup, rep) {
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

pub(super) fn command_setup(setup: CommandSetup<'_>, rep: &mut Reporter) -> Result<(), String> {
    let CommandSetup {
        filter,
        gated,
        rlimits,
        opts,
        pty_slave,
        chan,
    } = setup;
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
    let listener = if gated {
        seccomp::install_gated(filter)
    } else {
        seccomp::install(filter)
    }
    .map_err(|e| e.to_string())?;
    sockets::send_fd(chan.as_raw_fd(), listener.as_raw_fd())
        .map_err(|e| format!("passing the seccomp listener to init: {e}"))?;
    drop(listener);
    drop(chan);
    rep.line('L', "seccomp\tforeign ABIs killed; namespace, mount, keyring, bpf, perf, io_uring, module, TIOCSTI calls refused; every connect() checked by init");
    if gated {
        rep.line('L', "write-gate\tevery write-intent filesystem call (open for writing or creating, mknod, symlink, link, rename, unlink, rmdir, truncate, chmod, chown, utime, xattr, bind) performed by init after checking it against the protected names and git metadata (with git.mode = commit, mkdir is not: an empty directory runs nothing, what goes into it is checked)");
    }
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
pub(super) fn close_inherited(report: RawFd, keep: &[RawFd]) -> Result<(), SysError> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    for &fd in &keep {
        sys::clear_cloexec(fd)?;
    }
    keep.push(report);
    sys::spawn::close_fds_except(&keep)
}

/// `execve` the program, searching `PATH` (of the sandbox's environment) like `execvp`.
pub(super) fn exec_program(exec: &ExecSpec) -> SysError {
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
