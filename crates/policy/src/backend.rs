//! The interface every OS backend implements, and the neutral types of a run.

use crate::plan::Plan;
use serde::Serialize;
use std::ffi::OsString;
use std::time::Duration;

/// The command to run inside the sandbox.
#[derive(Debug, Clone)]
pub struct Command {
    /// Program (looked up in the sandbox's `PATH` if it has no `/`).
    pub program: OsString,
    /// Arguments after the program.
    pub args: Vec<OsString>,
}

/// How to run, beyond what the plan says.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Descriptors (besides 0, 1, 2) the caller means to pass into the sandbox.
    pub pass_fds: Vec<i32>,
    /// Allocate a pseudo-terminal for the command.
    pub pty: bool,
    /// Kill the whole tree after this long.
    pub timeout: Option<Duration>,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ExitKind {
    /// Normal exit with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Killed by Stockade because `timeout` passed.
    TimedOut,
}

impl ExitKind {
    /// Exit status for the `stockade` process: the code, `128+N` for signal `N`, 124 for a timeout.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitKind::Code(c) => c,
            ExitKind::Signal(s) => 128 + s,
            ExitKind::TimedOut => 124,
        }
    }
}

/// One protection a backend actually applied (never one it merely intended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnforcedLayer {
    /// Short stable identifier, e.g. `mount-namespace`, `landlock`, `seccomp`, `net-namespace`.
    pub layer: String,
    /// Human detail, e.g. `ABI 7, fully enforced`.
    pub detail: String,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Which backend/tier ran it, e.g. `linux-unelevated`.
    pub tier: String,
    /// How the command ended.
    pub exit: ExitKind,
    /// Wall time from launch to exit.
    #[serde(serialize_with = "ser_duration_ms", rename = "duration_ms")]
    pub duration: Duration,
    /// Protections applied.
    pub enforced: Vec<EnforcedLayer>,
    /// Things the user should know (e.g. a layer the kernel lacks, with the user's consent to degrade).
    pub warnings: Vec<String>,
    /// Actions the sandbox refused that the backend could observe (e.g. a `connect` to a host
    /// socket), and protected paths the command created that did not exist before.
    pub denials: Vec<Denial>,
    /// With the write gate: the git-relevant names the run created (for the post-run check,
    /// which then examines only these instead of walking every writable root). `None`: no gate
    /// ran, the post-run check walks.
    #[serde(skip)]
    pub created: Option<CreatedLog>,
}

/// What the write gate saw the run create (only names git could act on: `.git`, `HEAD`,
/// `config`, `commondir`, `gitdir`, anything beneath a `.git`, rebase/sequencer todo files, and
/// directories renamed into place, whose contents were not seen being created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreatedLog {
    /// Paths as the sandbox saw them (the writable roots are mounted at the same paths).
    pub paths: Vec<std::path::PathBuf>,
    /// Directories renamed (or linked) into place during the run: their whole subtree must be
    /// examined.
    pub subtrees: Vec<std::path::PathBuf>,
    /// Every creation was recorded (no overflow, and the record arrived whole). When `false`
    /// the post-run check falls back to walking every writable root.
    pub complete: bool,
}

/// One refused or suspicious action, for the machine-readable denial report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// What kind of action, e.g. `connect`, `protected-created`.
    pub kind: String,
    /// The target, e.g. a socket path.
    pub target: String,
    /// One line saying what was refused, why, and how the user allows it (write-gate refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn ser_duration_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Whether a tier can run commands on this machine, and why (for `stockade doctor` and
/// `--tier auto`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Availability {
    /// Whatever the tier needs installed is installed (always true for a tier without setup).
    pub installed: bool,
    /// Commands can run in this tier now.
    pub available: bool,
    /// One line: what was found, and the way out when it is not available.
    pub why: String,
}

impl Availability {
    /// The tier can run here.
    pub fn ready(why: impl Into<String>) -> Self {
        Availability {
            installed: true,
            available: true,
            why: why.into(),
        }
    }

    /// The tier needs a setup that has not been done.
    pub fn not_installed(why: impl Into<String>) -> Self {
        Availability {
            installed: false,
            available: false,
            why: why.into(),
        }
    }

    /// Installed (or needing no setup) but it cannot run here.
    pub fn unavailable(why: impl Into<String>) -> Self {
        Availability {
            installed: true,
            available: false,
            why: why.into(),
        }
    }
}

/// One machine feature a backend probed, for `stockade doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// Short stable name, e.g. `user-namespaces`, `landlock`.
    pub name: String,
    /// Usable here.
    pub available: bool,
    /// What was found.
    pub detail: String,
}

/// A launch failure (never a command that ran and failed), as the CLI acts on it.
pub trait LaunchFailure: std::error::Error + Send + Sync + 'static {
    /// Exit status for `stockade`: 127 program not found, 126 not executable, 125 (the default)
    /// when Stockade itself failed and the command never ran.
    fn exit_code(&self) -> i32 {
        125
    }

    /// True when the failure says this tier cannot run on this machine at all (so `--tier auto`
    /// may use the next tier), as opposed to a failure of this plan or command.
    fn tier_unavailable(&self) -> bool {
        false
    }
}

/// An OS sandbox backend.
pub trait Backend {
    /// Error type of a failed launch (never of a command that ran and failed).
    type Error: LaunchFailure;

    /// Stable name of the tier, e.g. `linux-unelevated`.
    fn tier(&self) -> &'static str;

    /// Whether this tier can run here. May probe (fork a child, connect to a broker): meant for
    /// `stockade doctor` and for deciding a fallback, not for every run.
    fn availability(&self) -> Availability;

    /// Machine features this backend probes, for `stockade doctor` (none by default).
    fn features(&self) -> Vec<Feature> {
        Vec::new()
    }

    /// Run `cmd` under `plan`; returns once the command and everything it started are gone.
    fn run(&self, plan: &Plan, cmd: &Command, opts: &RunOptions)
        -> Result<RunOutcome, Self::Error>;
}
