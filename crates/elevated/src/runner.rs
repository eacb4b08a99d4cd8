//! The run's own process tree: `<broker executable> __elevated-child SPEC_FD LANDLOCK_FD`.
//!
//! The broker is multithreaded, so the child it forks may only make raw syscalls before exec.
//! It therefore does the least it can there (new session, join the run's cgroup, keep two
//! descriptors open) and execs its own executable (`/proc/self/exe`, so always the same build)
//! with this hidden entry point. This fresh, single-threaded process, still root:
//!
//! 1. reads its [`ChildSpec`] from the broker over a socket;
//! 2. applies the private mount and IPC (and, offline, network) namespaces ([`crate::ns`]);
//! 3. drops to the sandbox account (`setgroups`, `setresgid`, `setresuid`) and **verifies** the
//!    ids, the group list and that `setuid(0)` fails;
//! 4. sets `PR_SET_PDEATHSIG`, `no_new_privs`, `RLIMIT_CORE=0`, enforces the Landlock ruleset
//!    the broker built from the validated root descriptors, makes itself non-dumpable, and only
//!    then enters the start directory, with the sandbox credentials and without following any
//!    symlink or magic link ([`enter_cwd`]);
//! 5. forks the command, which installs the full seccomp layer
//!    ([`stockade_sys::seccomp::install_filter`]: foreign ABIs killed, deny list including
//!    set-user-ID/set-group-ID modes, every `connect()` turned into a notification), passes the
//!    notification listener back, applies the rlimits, marks every descriptor above 2
//!    close-on-exec and execs;
//! 6. tells the broker "ok" (or why it failed), then stays as the run's **supervisor**: it
//!    performs every `connect()` of the command tree ([`stockade_sys::sockets::Gate`]) and, when
//!    the command exits, exits the same way.
//!
//! The supervisor is the command's parent: its process-memory reads and descriptor takes
//! (`process_vm_readv`, `pidfd_getfd`) are checks on a descendant of the same uid, allowed even
//! under Yama's `ptrace_scope=1`; it is non-dumpable, so the command (same uid) cannot ptrace it,
//! read its memory or take its descriptors. It shares the command's Landlock domain and uid, so a
//! connect it performs reaches nothing the command could not reach by itself without the gate.
//! Killing it (same uid, same Landlock domain) ends the run: the broker then kills the cgroup, and
//! a `connect()` without a supervisor fails.

use crate::ns::NsPlan;
use crate::validate::CwdPlan;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Command;
use stockade_sys as sys;
use stockade_sys::sockets::{Gate, SocketPolicy};
use stockade_sys::spawn::child;

/// The hidden first argument that selects this entry point.
pub const ARG: &str = "__elevated-child";

/// The status line the run's process sends the broker once the command has been started.
pub const READY: &str = "ok";
/// Second field of the status line when the writable roots are not idmapped.
pub const NO_IDMAP: &str = "no-idmap";

/// Parses the status line: `Some(None)` ready with idmapped roots, `Some(Some(reason))` ready
/// without (the reason), `None` not ready. Pure.
pub fn parse_ready(line: &str) -> Option<Option<&str>> {
    if line == READY {
        return Some(None);
    }
    let rest = line.strip_prefix(READY)?.strip_prefix('\t')?;
    rest.strip_prefix(NO_IDMAP)?.strip_prefix('\t').map(Some)
}

/// Prefix of the failure line when the command itself could not be executed (then its exit
/// status and the reason follow): `exec-failed 127 cannot start …`.
pub const EXEC_FAILED: &str = "exec-failed";

/// Split an [`EXEC_FAILED`] line into the exit status and the reason.
pub fn parse_exec_failed(line: &str) -> Option<(i32, &str)> {
    let rest = line.strip_prefix(EXEC_FAILED)?.strip_prefix(' ')?;
    let (code, reason) = rest.split_once(' ')?;
    let code: i32 = code.parse().ok()?;
    matches!(code, 126 | 127).then_some((code, reason))
}

/// Largest specification accepted (it carries the environment).
const MAX_SPEC: u64 = 8 << 20;

/// Exit status when the run's process could not start the command.
const SETUP_FAILED: i32 = 125;

/// Everything the run's process needs, decided and validated by the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    /// The broker's pid: the run's process stops if it has already been orphaned.
    pub broker_pid: i32,
    /// Sandbox account uid.
    pub uid: u32,
    /// Sandbox group.
    pub gid: u32,
    /// The caller's grant group (the only other supplementary group).
    pub grant_gid: u32,
    /// Private namespaces to create as root.
    pub ns: NsPlan,
    /// Start directory, entered with the sandbox credentials after Landlock ([`enter_cwd`]).
    pub cwd: CwdPlan,
    /// Rlimits of the command (`RLIMIT_CORE=0` applies to the supervisor too).
    pub limits: Vec<(libc::__rlimit_resource_t, u64)>,
    /// A Landlock ruleset descriptor comes with the spec and must be enforced.
    pub landlock: bool,
    /// Program (looked up in the command's `PATH` if it has no `/`).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Complete environment.
    pub env: Vec<(String, String)>,
    /// Pathname unix sockets beneath these may be connected to.
    pub socket_roots: Vec<PathBuf>,
    /// Individual sockets that may be connected to.
    pub allowed_sockets: Vec<PathBuf>,
}

/// Parses the supervisor's denial lines (`kind\ttarget`). Pure.
pub fn parse_denials(s: &str) -> Vec<crate::protocol::WireDenial> {
    s.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, t)| crate::protocol::WireDenial {
            kind: k.into(),
            target: t.into(),
        })
        .collect()
}

/// Runs the hidden entry point when `argv[1]` selects it (never returns then); otherwise returns
/// at once. Call first thing in `main` of every binary that can serve as the broker.
pub fn main_if_child() {
    let mut args = std::env::args_os();
    let first = args.nth(1);
    if first == Some(OsString::from(crate::ns::HOLD_ARG)) {
        let _ = io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    }
    if first != Some(OsString::from(ARG)) {
        return;
    }
    let rest: Vec<OsString> = args.collect();
    std::process::exit(child_main(&rest));
}

fn fd_arg(a: Option<&OsString>) -> Option<RawFd> {
    a.and_then(|s| s.to_str()).and_then(|s| s.parse().ok())
}

fn child_main(args: &[OsString]) -> i32 {
    let (Some(chan), Some(ll)) = (fd_arg(args.first()), fd_arg(args.get(1))) else {
        eprintln!("stockade: {ARG} is internal to the elevated tier's broker");
        return SETUP_FAILED;
    };
    if chan < 3 || !sys::fs::fd_is_open(chan) || (ll >= 0 && (ll < 3 || !sys::fs::fd_is_open(ll))) {
        eprintln!("stockade: {ARG}: descriptors from the broker are missing");
        return SETUP_FAILED;
    }
    if let Err(e) = sys::spawn::close_fds_except(&[chan, ll]) {
        eprintln!("stockade: {ARG}: closing inherited descriptors: {e}");
        return SETUP_FAILED;
    }
    // SAFETY: the broker left `chan` open for this process (checked open above) and nothing
    // else in this freshly exec'd process owns it.
    let mut chan = UnixStream::from(unsafe { OwnedFd::from_raw_fd(chan) });
    let ruleset = if ll >= 0 {
        // SAFETY: as above, the Landlock ruleset descriptor the broker left open for us.
        Some(unsafe { OwnedFd::from_raw_fd(ll) })
    } else {
        None
    };
    match start(&mut chan, ruleset) {
        Ok(sup) => {
            // "ok", or "ok<TAB>no-idmap<TAB>reason" when the writable roots could not be idmapped.
            let line = match &sup.no_idmap {
                None => format!("{READY}\n"),
                Some(why) => format!("{READY}\t{NO_IDMAP}\t{}\n", why.replace('\n', " ")),
            };
            if chan.write_all(line.as_bytes()).is_err() {
                // The broker is gone: nobody would kill the run at its end.
                return SETUP_FAILED;
            }
            // Denials go to the broker without ever blocking the gate (dropped when full).
            let _ = chan.set_nonblocking(true);
            sup.run(&chan)
        }
        Err(msg) => {
            let _ = chan.write_all(msg.as_bytes());
            SETUP_FAILED
        }
    }
}

struct Supervisor {
    child: std::process::Child,
    gate: Option<Gate>,
    /// Why the writable roots are not idmapped (no user namespace could be made), if they are not.
    no_idmap: Option<String>,
}

fn start(chan: &mut UnixStream, ruleset: Option<OwnedFd>) -> Result<Supervisor, String> {
    // One byte first, with the mapping user namespace of the idmapped binds when there is one.
    let userns = sys::sockets::recv_fd(chan.as_raw_fd())
        .map_err(|e| format!("receiving the mapping user namespace: {e}"))?;
    let mut buf = Vec::new();
    chan.take(MAX_SPEC)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the run specification: {e}"))?;
    let spec: ChildSpec =
        serde_json::from_slice(&buf).map_err(|e| format!("malformed run specification: {e}"))?;

    // As root: private mount and IPC (and, offline, network) namespaces.
    let no_idmap = spec
        .ns
        .apply(userns.as_ref().map(|f| f.as_fd()))
        .map_err(|e| format!("private mount/IPC/network namespaces: {e}"))?;

    // Drop to the sandbox account, then verify all three ids, the group list, and that root
    // cannot come back.
    let (uid, gid, grant_gid) = (spec.uid, spec.gid, spec.grant_gid);
    if uid == 0 || gid == 0 {
        return Err("sandbox account resolves to root".into());
    }
    let drop_err =
        |e: sys::SysError| format!("switching to the sandbox account: {}", io::Error::from(e));
    child::setgroups(&[gid, grant_gid]).map_err(drop_err)?;
    child::setresgid(gid).map_err(drop_err)?;
    child::setresuid(uid).map_err(drop_err)?;
    let mut gbuf = [0 as libc::gid_t; 4];
    let ng = child::getgroups(&mut gbuf).map_err(drop_err)?;
    let mut groups = gbuf[..ng.min(gbuf.len())].to_vec();
    groups.sort_unstable();
    let mut want = vec![gid, grant_gid];
    want.sort_unstable();
    if child::getresuid().map_err(drop_err)? != (uid, uid, uid)
        || child::getresgid().map_err(drop_err)? != (gid, gid, gid)
        || ng != 2
        || groups != want
        || child::can_regain_root()
    {
        return Err("the switch to the sandbox account could not be verified".into());
    }
    child::pdeathsig().map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if sys::users::getppid() != spec.broker_pid {
        return Err("the broker went away".into());
    }
    child::no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    child::setrlimit(libc::RLIMIT_CORE, 0).map_err(|e| format!("RLIMIT_CORE: {e}"))?;
    match (spec.landlock, ruleset) {
        (true, Some(rs)) => {
            sys::landlock::landlock_restrict_self(rs.as_fd())
                .map_err(|e| format!("Landlock (landlock_restrict_self): {e}"))?;
        }
        (true, None) => return Err("Landlock was requested but no ruleset arrived".into()),
        (false, _) => {}
    }
    sys::spawn::set_not_dumpable().map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    enter_cwd(&spec.cwd).map_err(|e| {
        format!(
            "cannot enter the start directory {} as the sandbox account: {e}",
            spec.cwd.path.display()
        )
    })?;

    // The command.
    let (sup_end, cmd_end) =
        UnixStream::pair().map_err(|e| format!("socketpair for the listener: {e}"))?;
    let cmd_raw = cmd_end.as_raw_fd();
    let limits = spec.limits.clone();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    // SAFETY: this process is single-threaded (no thread has been started yet), so the forked
    // child may allocate and take locks; the closure only sets up the child before exec.
    unsafe {
        cmd.pre_exec(move || command_setup(cmd_raw, &limits));
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            drop(cmd_end);
            let mut detail = String::new();
            let _ = sup_end.set_nonblocking(true);
            let mut raw = Vec::new();
            let _ = (&sup_end).take(4096).read_to_end(&mut raw);
            // Only the text `command_setup` wrote on failure; the marker byte that carried the
            // listener (when setup succeeded and exec failed) is not a reason.
            raw.retain(|&b| b != 0);
            detail.push_str(String::from_utf8_lossy(&raw).trim());
            let why = if detail.is_empty() {
                e.to_string()
            } else {
                detail
            };
            // 127 not found, 126 found but not executable: as a shell (and the unelevated
            // tier) would answer.
            let code = match e.kind() {
                io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            return Err(format!(
                "{EXEC_FAILED} {code} cannot start {:?} in {}: {why} (the program and the start directory must be reachable by the sandbox account)",
                spec.program,
                spec.cwd.path.display()
            ));
        }
    };
    drop(cmd_end);
    // The command sent the listener before it exec'd, and spawn() returned only after the exec.
    let listener = match stockade_sys::sockets::recv_fd(sup_end.as_raw_fd()) {
        Ok(Some(l)) => l,
        _ => {
            let mut c = child;
            let _ = c.kill();
            let _ = c.wait();
            return Err("the command did not hand over its seccomp listener".into());
        }
    };
    drop(sup_end);
    let gate = Gate::new(
        listener,
        SocketPolicy {
            roots: spec.socket_roots.clone(),
            sockets: spec.allowed_sockets.clone(),
        },
    );
    // The caller's terminal and pipes belong to the command; keep them open only there.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = sys::dup2(null.as_raw_fd(), fd);
        }
    }
    Ok(Supervisor {
        child,
        gate: Some(gate),
        no_idmap,
    })
}

/// Enters the start directory: its base (a writable root or the workspace) opened by path with
/// `RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` (and, for a writable root, checked to be the
/// directory the broker validated), the rest opened beneath that descriptor with
/// `RESOLVE_BENEATH` as well, then `fchdir`. Called with the sandbox credentials and Landlock in
/// force, so only what the sandbox account may traverse is entered and no magic link is ever
/// followed.
fn enter_cwd(c: &CwdPlan) -> Result<(), String> {
    const NO_LINKS: u64 = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    let base = sys::fs::openat2(None, &c.base, flags, NO_LINKS).map_err(|e| e.to_string())?;
    if let Some((dev, ino)) = c.base_id {
        let st = sys::fs::fstat(base.as_fd()).map_err(|e| e.to_string())?;
        if (st.st_dev, st.st_ino) != (dev, ino) {
            return Err(format!(
                "{} was replaced since the broker validated it",
                c.base.display()
            ));
        }
    }
    let dir = if c.rel.as_os_str().is_empty() {
        base
    } else {
        sys::fs::openat2(
            Some(base.as_fd()),
            &c.rel,
            flags,
            NO_LINKS | libc::RESOLVE_BENEATH,
        )
        .map_err(|e| e.to_string())?
    };
    child::fchdir(dir.as_raw_fd()).map_err(|e| e.to_string())
}

/// In the command's process, between fork and exec.
fn command_setup(chan: RawFd, limits: &[(libc::__rlimit_resource_t, u64)]) -> io::Result<()> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        let msg = format!("{what}: {e}");
        sys::write_all_best_effort(chan, msg.as_bytes());
        io::Error::from_raw_os_error(libc::EPERM)
    };
    child::pdeathsig().map_err(|e| fail("PR_SET_PDEATHSIG", &e))?;
    let listener = stockade_sys::seccomp::install_filter().map_err(|e| fail("seccomp", &e))?;
    stockade_sys::sockets::send_fd(chan, listener.as_raw_fd())
        .map_err(|e| fail("passing the seccomp listener", &e))?;
    drop(listener);
    for (res, val) in limits {
        child::setrlimit(*res, *val).map_err(|e| fail("setrlimit", &e))?;
    }
    child::cloexec_from_3().map_err(|e| fail("close_range", &e))?;
    Ok(())
}

impl Supervisor {
    /// Answers `connect()` notifications until the command exits, then exits the same way.
    fn run(mut self, report: &UnixStream) -> i32 {
        let pidfd = match sys::spawn::pidfd_open(self.child.id() as libc::pid_t) {
            Ok(p) => p,
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return SETUP_FAILED;
            }
        };
        loop {
            let gate_fd = self.gate.as_ref().map_or(-1, Gate::fd);
            let Ok(ev) = sys::spawn::poll_revents(&[pidfd.as_raw_fd(), gate_fd], -1) else {
                continue;
            };
            if ev[1] & libc::POLLIN != 0 {
                if let Some(d) = self.gate.as_ref().and_then(Gate::handle_one) {
                    let line = format!("connect\t{}\n", d.target.replace('\n', " "));
                    let _ = (&mut &*report).write(line.as_bytes());
                }
            } else if ev[1] & (libc::POLLHUP | libc::POLLERR) != 0 {
                // Nothing uses the filter any more.
                self.gate = None;
            }
            if ev[0] != 0 {
                let status = match self.child.wait() {
                    Ok(s) => s,
                    Err(_) => return SETUP_FAILED,
                };
                // Descendants still running are killed with the run's cgroup by the broker.
                self.gate = None;
                if let Some(code) = status.code() {
                    return code;
                }
                if let Some(sig) = status.signal() {
                    sys::spawn::die_by_signal(sig);
                    return 128 + sig;
                }
                return SETUP_FAILED;
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn exec_failure_lines_parse_only_when_well_formed() {
        assert_eq!(
            parse_exec_failed("exec-failed 127 cannot start \"x\": gone"),
            Some((127, "cannot start \"x\": gone"))
        );
        assert_eq!(
            parse_exec_failed("exec-failed 126 denied"),
            Some((126, "denied"))
        );
        // Any other status, or no status, is not an exec failure.
        assert_eq!(parse_exec_failed("exec-failed 0 ok"), None);
        assert_eq!(parse_exec_failed("exec-failed oops"), None);
        assert_eq!(parse_exec_failed("seccomp: refused"), None);
    }
    use super::*;

    #[test]
    fn ready_lines() {
        assert_eq!(parse_ready("ok"), Some(None));
        assert_eq!(parse_ready("ok\tno-idmap\tEPERM"), Some(Some("EPERM")));
        assert_eq!(parse_ready("okay"), None);
        assert_eq!(parse_ready("ok\tother\tx"), None);
        assert_eq!(parse_ready("landlock: EPERM"), None);
    }

    #[test]
    fn denial_lines() {
        let d = parse_denials("connect\t/run/docker.sock\nconnect\t/x (-> /y)\ngarbage\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].kind, "connect");
        assert_eq!(d[0].target, "/run/docker.sock");
        assert_eq!(d[1].target, "/x (-> /y)");
    }
}
