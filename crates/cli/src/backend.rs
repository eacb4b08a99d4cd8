//! Choosing and running the backend for this OS and tier.

#[allow(unused_imports)]
use stockade_policy::backend::{Backend, Command, RunOptions, RunOutcome};
use stockade_policy::plan::Plan;

/// Which tier the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum TierChoice {
    /// Unelevated where it can run, otherwise the elevated tier if it is installed.
    #[default]
    Auto,
    /// The caller's own identity, confined (no setup, no root).
    Unelevated,
    /// Dedicated sandbox accounts (needs `sudo stockade setup` once).
    Elevated,
}

/// A launch that failed before the command ran (or could not be executed).
pub struct LaunchFailure {
    /// The tier that failed.
    pub tier: &'static str,
    /// One-line message.
    pub message: String,
    /// Exit status for stockade.
    pub exit_code: i32,
}

fn run_with<B: Backend>(
    b: &B,
    plan: &Plan,
    cmd: &Command,
    opts: &RunOptions,
    code: impl Fn(&B::Error) -> i32,
) -> Result<RunOutcome, LaunchFailure> {
    b.run(plan, cmd, opts).map_err(|e| LaunchFailure {
        tier: b.tier(),
        message: e.to_string(),
        exit_code: code(&e),
    })
}

/// Run `cmd` under `plan` with the chosen tier. `auto` tries the unelevated tier and, only when
/// user namespaces are unavailable and the elevated tier is installed, uses that instead (the
/// outcome's `tier` says which ran, and a warning says why).
#[cfg(target_os = "linux")]
pub fn run(
    plan: &Plan,
    cmd: &Command,
    opts: &RunOptions,
    tier: TierChoice,
) -> Result<RunOutcome, LaunchFailure> {
    use std::io::IsTerminal;
    let elevated = || stockade_elevated::ElevatedBackend {
        socket_path: stockade_elevated::broker::socket_for(
            &stockade_elevated::SetupOptions::default(),
        ),
        progress: std::io::stderr().is_terminal(),
    };
    let elevated_code = |e: &stockade_elevated::ClientError| match e {
        stockade_elevated::ClientError::Exec { exit_code, .. } => *exit_code,
        _ => crate::EXIT_STOCKADE as i32,
    };
    match tier {
        TierChoice::Unelevated => run_with(
            &stockade_linux::UnelevatedBackend,
            plan,
            cmd,
            opts,
            stockade_linux::LaunchError::exit_code,
        ),
        TierChoice::Elevated => {
            if stockade_elevated::setup::installed(&stockade_elevated::SetupOptions::default())
                .is_none()
            {
                return Err(LaunchFailure {
                    tier: "linux-elevated",
                    message: "the elevated tier is not installed: run `sudo stockade setup` once (and keep `stockade broker` running where systemd is absent)".into(),
                    exit_code: crate::EXIT_STOCKADE as i32,
                });
            }
            run_with(&elevated(), plan, cmd, opts, elevated_code)
        }
        TierChoice::Auto => match stockade_linux::UnelevatedBackend.run(plan, cmd, opts) {
            Err(e @ stockade_linux::LaunchError::UserNamespaces { .. }) => {
                if stockade_elevated::setup::installed(&stockade_elevated::SetupOptions::default())
                    .is_none()
                {
                    return Err(LaunchFailure {
                        tier: "linux-unelevated",
                        message: e.to_string(),
                        exit_code: e.exit_code(),
                    });
                }
                let mut out = run_with(&elevated(), plan, cmd, opts, elevated_code)?;
                out.warnings
                    .insert(0, format!("used the elevated tier: {e}"));
                Ok(out)
            }
            Err(e) => Err(LaunchFailure {
                tier: "linux-unelevated",
                message: e.to_string(),
                exit_code: e.exit_code(),
            }),
            Ok(o) => Ok(o),
        },
    }
}

/// Run `cmd` under `plan` with the chosen tier.
#[cfg(windows)]
pub fn run(
    plan: &Plan,
    cmd: &Command,
    opts: &RunOptions,
    tier: TierChoice,
) -> Result<RunOutcome, LaunchFailure> {
    let backend = stockade_windows::backend::WindowsBackend {
        tier: match tier {
            TierChoice::Elevated => stockade_windows::backend::Tier::Elevated,
            TierChoice::Auto | TierChoice::Unelevated => {
                stockade_windows::backend::Tier::Unelevated
            }
        },
    };
    run_with(&backend, plan, cmd, opts, |_| crate::EXIT_STOCKADE as i32)
}

/// Run `cmd` under `plan` with the chosen tier.
#[cfg(not(any(target_os = "linux", windows)))]
pub fn run(
    _plan: &Plan,
    _cmd: &Command,
    _opts: &RunOptions,
    _tier: TierChoice,
) -> Result<RunOutcome, LaunchFailure> {
    Err(LaunchFailure {
        tier: "none",
        message: "Stockade has no backend for this operating system yet".into(),
        exit_code: crate::EXIT_STOCKADE as i32,
    })
}

/// Is `fd` an open descriptor (for `--pass-fd`)?
#[cfg(target_os = "linux")]
pub fn fd_is_open(fd: i32) -> bool {
    stockade_sys::fs::fd_is_open(fd)
}

/// Is `fd` an open descriptor (for `--pass-fd`)? Not supported off Linux.
#[cfg(not(target_os = "linux"))]
pub fn fd_is_open(_fd: i32) -> bool {
    false
}
