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
//!
//! # Modules
//! * [`host`] — stockade's side: prepare, `clone3` into the namespaces, supervise (signals,
//!   timeout, pty, proxy), collect the outcome.
//! * [`report`] — the report pipe protocol between init/command and stockade.
//! * [`init`] — pid 1 of the sandbox: builds its view of the world, starts and reaps the command.
//! * [`command`] — the command process: confines itself and execs.

mod command;
mod host;
mod init;
mod report;

pub use host::run;
pub(crate) use report::encode_path;

use std::ffi::OsString;
use stockade_sys::SysError;

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

/// Signals stockade forwards to the sandbox.
pub(super) const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];
