//! Stockade's side of a launch: prepare as the caller, `clone3` into the new namespaces, then
//! supervise init (signals, `--timeout`, pty, allowlist proxy) and turn its report into the
//! outcome.

use super::command::ExecSpec;
use super::init::{init_main, Channels, SeccompSetup};
use super::report::Report;
use super::LaunchError;
use crate::landlock_layer::{self};
use crate::limits::{self};
use crate::mounts;
use crate::proxy;
use crate::write_gate::GateJudge;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use stockade_policy::backend::{Command, Denial, ExitKind, RunOptions, RunOutcome};
use stockade_policy::model::{GitMode, NetworkMode};
use stockade_policy::plan::Plan;
use stockade_sys::pty::{Pty, RawMode};
use stockade_sys::seccomp;
use stockade_sys::sockets::{self, SocketPolicy};
use stockade_sys::{self as sys, Forked, SysError};

/// Run `cmd` under `plan` in the unelevated tier.
pub fn run(plan: &Plan, cmd: &Command, opts: &RunOptions) -> Result<RunOutcome, LaunchError> {
    let start = Instant::now();
    let prepared = prepare_host(plan)?;
    let mut host = mounts::HostFacts::probe(plan);
    host.overlay_work = prepared.work.clone();
    let steps = mounts::steps(plan, &host);
    let writable = landlock_layer::writable_paths(plan);
    let exec = ExecSpec::new(plan, cmd, &writable)?;
    let sec = seccomp_setup(plan)?;
    let socket_policy = SocketPolicy {
        roots: crate::overlay::socket_roots(plan, &writable),
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
    let forwarded = sys::sigset(super::FORWARDED);
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
                &sec,
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
    // While the sandbox builds itself: remove the earlier runs' overlay scratch dirs.
    crate::overlay::sweep_host(plan, &prepared);
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

    let host_denials = denials
        .lock()
        .map(|mut d| std::mem::take(&mut *d))
        .unwrap_or_default();
    outcome(
        plan,
        cmd,
        start,
        &report,
        killed_for_timeout,
        init_status,
        host_denials,
    )
}

/// The filter (with the write gate's rules when the plan was made for the gate) and the gate's
/// judge, both made before `clone`: the judge reads the user's git configuration, which the
/// sandbox may mask.
fn seccomp_setup(plan: &Plan) -> Result<SeccompSetup, LaunchError> {
    let prep = |e: &dyn std::fmt::Display| LaunchError::Prepare(e.to_string());
    if !plan.write_gate {
        return Ok(SeccompSetup {
            filter: seccomp::program().map_err(|e| prep(&e))?,
            judge: None,
        });
    }
    let judge = GateJudge::new(plan, std::time::SystemTime::now()).map_err(|e| prep(&e))?;
    // `git.mode = "read-only"` keeps every launch `.git` unchanged, empty directories
    // included, so there `mkdir` is judged too; in commit mode it is not
    // (`seccomp::program_for_runs`: an empty directory runs nothing).
    let filter = match plan.git_mode {
        GitMode::ReadOnly => seccomp::program_with_gate(),
        GitMode::Commit => seccomp::program_for_runs(),
    };
    Ok(SeccompSetup {
        filter: filter.map_err(|e| prep(&e))?,
        judge: Some(std::sync::Arc::new(judge)),
    })
}

/// The run's outcome from init's report (and what stockade saw itself: the timeout, init's own
/// status, the proxy's denials).
fn outcome(
    plan: &Plan,
    cmd: &Command,
    start: Instant,
    report: &[u8],
    killed_for_timeout: bool,
    init_status: libc::c_int,
    host_denials: Vec<Denial>,
) -> Result<RunOutcome, LaunchError> {
    let parsed = Report::parse(report);
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
            .chain(host_denials)
            .chain(created_protected(plan))
            .collect(),
        created: plan.write_gate.then_some(parsed.created),
    })
}

/// Protected names that did not exist at launch (so no mount could protect them) but exist now:
/// reported, never silently accepted.
pub(super) fn created_protected(plan: &Plan) -> Vec<Denial> {
    plan.protected_missing
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .map(|p| Denial {
            kind: "protected-created".into(),
            target: p.display().to_string(),
            message: None,
        })
        .collect()
}

pub(super) fn decode_status(st: libc::c_int) -> ExitKind {
    if libc::WIFSIGNALED(st) {
        ExitKind::Signal(libc::WTERMSIG(st))
    } else {
        ExitKind::Code(libc::WEXITSTATUS(st))
    }
}

pub(super) fn userns_error(e: SysError) -> LaunchError {
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

/// Host-side preparation done as the caller: the overlay state (its work-dir slot, locked for
/// the run) and the persistent temp dirs.
pub(super) fn prepare_host(plan: &Plan) -> Result<crate::overlay::Prepared, LaunchError> {
    let prepared =
        crate::overlay::prepare_host(plan).map_err(|e| LaunchError::Prepare(e.to_string()))?;
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
    Ok(prepared)
}

pub(super) type Supervised = (Vec<u8>, bool, libc::c_int);

/// Host side: forward signals, enforce the timeout, collect the report, reap init.
pub(super) fn supervise(
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
pub(super) fn drain_master(master: Option<RawFd>, open: &mut bool) -> Result<(), SysError> {
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
pub(super) static UNREAPED: std::sync::Mutex<Vec<libc::pid_t>> = std::sync::Mutex::new(Vec::new());

/// Reap `pid` if it has exited; otherwise remember it and try again on the next launch (a
/// long-lived caller such as `stockade mcp` must not collect zombies; the CLI exits anyway).
pub(super) fn reap_finished(pid: libc::pid_t) {
    if let Ok(mut pending) = UNREAPED.lock() {
        pending.push(pid);
        pending.retain(|&p| !matches!(sys::waitpid(p, true), Ok(Some(_)) | Err(_)));
    }
}

/// Copy one chunk from `from` to `to`; `false` once `from` is at end of file or failed (a pty
/// master reads EIO when the last slave closes).
pub(super) fn copy_once(from: RawFd, to: RawFd) -> bool {
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
pub(super) fn drain_once(fd: RawFd, buf: &mut Vec<u8>) -> Result<bool, SysError> {
    let mut chunk = [0u8; 4096];
    let n = sys::read(fd, &mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decoding() {
        assert_eq!(decode_status(7 << 8), ExitKind::Code(7));
        assert_eq!(decode_status(9), ExitKind::Signal(9));
    }
}
