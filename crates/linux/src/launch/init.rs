//! Init, pid 1 of the sandbox: builds the sandbox's view of the world (steps 1-5 of the
//! enforcement order), then starts the command and reaps until it ends.

use super::command::{command_main, CommandSetup, ExecSpec};
use super::report::Reporter;
use super::FORWARDED;
use super::SETUP_FAILED;
use crate::landlock_layer::{self, LandlockStatus};
use crate::limits::Rlimit;
use crate::mounts;
use crate::proxy;
use crate::write_gate::{self, GateJudge};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use stockade_policy::backend::RunOptions;
use stockade_policy::model::NetworkMode;
use stockade_policy::plan::Plan;
use stockade_sys::caps;
use stockade_sys::fsgate;
use stockade_sys::net;
use stockade_sys::pty::Pty;
use stockade_sys::sockets::{self, Gate, SocketPolicy};
use stockade_sys::{self as sys};

#[allow(clippy::too_many_arguments)]
pub(super) fn init_main(
    plan: &Plan,
    steps: &[mounts::Step],
    exec: &ExecSpec,
    sec: &SeccompSetup,
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
            let setup = CommandSetup {
                filter: &sec.filter,
                gated: sec.judge.is_some(),
                rlimits,
                opts,
                pty_slave: pty_slave_fd,
                chan: chan_cmd,
            };
            let code = command_main(exec, setup, &mut rep);
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
    let listener = match sockets::recv_fd(chan_init.as_raw_fd()) {
        Ok(Some(listener)) => Some(listener),
        // The command failed before installing the filter; it reports why itself.
        Ok(None) | Err(_) => None,
    };
    drop(chan_init);
    // The signals init's reap loop reads from a signalfd must be blocked in every thread before
    // any starts (threads inherit the mask): a worker that does not block SIGCHLD would take
    // it and drop it (default disposition), and the reap loop would never hear of the exit.
    if let Err(e) = sys::block_signals(&reap_signals()) {
        let _ = sys::kill(-1, libc::SIGKILL);
        rep.now('F', &e.to_string());
        return SETUP_FAILED;
    }
    // Threads start only now, after the last fork of init.
    let served = match (listener, &sec.judge) {
        (Some(l), Some(judge)) => match start_write_gate(l, judge, socket_policy, &rep) {
            Ok(s) => Served::WriteGate(s, std::sync::Arc::clone(judge)),
            Err(msg) => {
                // The command waits on a filter nobody serves: end the run, closed.
                let _ = sys::kill(-1, libc::SIGKILL);
                rep.now('F', &msg);
                return SETUP_FAILED;
            }
        },
        (Some(l), None) => Served::Connect(Gate::new(l, socket_policy.clone())),
        (None, _) => Served::Nothing,
    };
    init_reap(child, served, proxy, &mut rep)
}

/// The seccomp filter the command installs, and with the write gate its judge.
pub(super) struct SeccompSetup {
    /// The assembled filter (with the gate's rules when `judge` is set).
    pub(super) filter: Vec<libc::sock_filter>,
    /// The write gate's judge: set when the plan was made for the gate.
    pub(super) judge: Option<std::sync::Arc<GateJudge>>,
}

/// Who answers the command's seccomp notifications.
pub(super) enum Served {
    /// Nobody (the command failed before installing its filter).
    Nothing,
    /// init's reap loop, `connect` only (no write gate).
    Connect(Gate),
    /// The write gate's supervisor threads (`connect` included), and the judge holding the
    /// created-log.
    WriteGate(fsgate::Supervisor, std::sync::Arc<GateJudge>),
}

/// Start the write gate's supervisor on `listener`: refusals go straight to the report pipe as
/// `D` records (one write each).
fn start_write_gate(
    listener: OwnedFd,
    judge: &std::sync::Arc<GateJudge>,
    socket_policy: &SocketPolicy,
    rep: &Reporter,
) -> Result<fsgate::Supervisor, String> {
    let fd = rep.fd;
    let count = std::sync::atomic::AtomicUsize::new(0);
    let sink: fsgate::Sink = std::sync::Arc::new(move |d: fsgate::Denial| {
        if let Some(rec) = write_gate::record_denial(&d, &count) {
            sys::write_all_best_effort(fd, rec.as_bytes());
        }
    });
    let judge: std::sync::Arc<dyn fsgate::Judge> = judge.clone();
    fsgate::serve(
        listener,
        judge,
        socket_policy.clone(),
        sink,
        fsgate::ServeConfig::default(),
    )
    .map_err(|e| e.to_string())
}

/// Descriptors init uses to reach stockade (each the init end of a socketpair).
pub(super) struct Channels {
    /// Send the pty master here (with `--pty`).
    pub(super) pty: Option<RawFd>,
    /// Send accepted proxy connections here (network allowlist).
    pub(super) proxy: Option<RawFd>,
}

/// Open the pty inside the sandbox, send the master to stockade, keep the slave for the command.
pub(super) fn open_pty_for_host(chan: RawFd) -> Result<OwnedFd, String> {
    let (master, slave) = Pty::open().map_err(|e| e.to_string())?;
    sockets::send_fd(chan, master.as_raw_fd())
        .map_err(|e| format!("passing the pty to stockade: {e}"))?;
    Ok(slave)
}

/// Confine init itself before it forks the command: the command inherits this Landlock domain and
/// the empty capability sets, and init — which performs connects on the command's behalf — is
/// held to the same rules. Init is made non-dumpable so the command cannot ptrace it.
pub(super) fn init_confine(plan: &Plan, rep: &mut Reporter) -> Result<(), String> {
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

pub(super) fn init_setup(
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
    if !plan.overlay.layers.is_empty() {
        let trees: Vec<String> = plan
            .overlay
            .layers
            .iter()
            .map(|l| l.lower.display().to_string())
            .collect();
        rep.line(
            'L',
            &format!(
                "overlay\tcopy-on-write (writes kept in a private upper layer; `stockade diff`): {}",
                trees.join(", ")
            ),
        );
    }
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

/// What init's reap loop reads from its signalfd: the forwarded signals and `SIGCHLD`.
fn reap_signals() -> libc::sigset_t {
    let mut set_signals = FORWARDED.to_vec();
    set_signals.push(libc::SIGCHLD);
    sys::sigset(&set_signals)
}

/// Refused `connect()`s init reports (one more record says the rest were dropped).
const MAX_CONNECT_DENIALS: usize = 1000;

/// pid 1: forward signals to the command's process group, answer the connect gate, reap
/// everything, exit with the command.
pub(super) fn init_reap(
    child: libc::pid_t,
    served: Served,
    proxy: Option<(std::net::TcpListener, RawFd)>,
    rep: &mut Reporter,
) -> i32 {
    let (mut gate, mut supervisor) = match served {
        Served::Connect(g) => (Some(g), None),
        Served::WriteGate(s, judge) => (None, Some((s, judge))),
        Served::Nothing => (None, None),
    };
    // Refused connects reported; the command could otherwise grow stockade's memory (and the
    // report) without bound by repeating one.
    let mut denied = 0usize;
    let set = reap_signals();
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
                    // The supervisor serves until no process holds the filter, which is now;
                    // then its created-log is whole and goes to stockade before the status.
                    if let Some((s, judge)) = supervisor.take() {
                        s.join();
                        for (tag, body) in judge.log.records() {
                            rep.line(tag, &body);
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
