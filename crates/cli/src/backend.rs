//! The tiers of this OS and the one place that chooses among them. Everything here goes through
//! [`stockade_policy::backend::Backend`]: no backend's own types are named outside [`tiers`].

use stockade_policy::backend::{
    Availability, Backend, Command, Feature, LaunchFailure as _, RunOptions, RunOutcome,
};
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
#[derive(Debug)]
pub struct LaunchFailure {
    /// The tier that failed.
    pub tier: &'static str,
    /// One-line message.
    pub message: String,
    /// Exit status for stockade.
    pub exit_code: i32,
    /// The tier cannot run on this machine at all (so `auto` may try the next one).
    pub tier_unavailable: bool,
}

/// A backend with its error type erased to [`LaunchFailure`].
pub trait Tier {
    /// Stable tier name.
    fn name(&self) -> &'static str;
    /// See [`Backend::availability`].
    fn availability(&self) -> Availability;
    /// See [`Backend::features`].
    fn features(&self) -> Vec<Feature>;
    /// See [`Backend::run`].
    fn launch(
        &self,
        plan: &Plan,
        cmd: &Command,
        opts: &RunOptions,
    ) -> Result<RunOutcome, LaunchFailure>;
}

impl<B: Backend> Tier for B {
    fn name(&self) -> &'static str {
        self.tier()
    }

    fn availability(&self) -> Availability {
        Backend::availability(self)
    }

    fn features(&self) -> Vec<Feature> {
        Backend::features(self)
    }

    fn launch(
        &self,
        plan: &Plan,
        cmd: &Command,
        opts: &RunOptions,
    ) -> Result<RunOutcome, LaunchFailure> {
        self.run(plan, cmd, opts).map_err(|e| LaunchFailure {
            tier: self.tier(),
            message: e.to_string(),
            exit_code: e.exit_code(),
            tier_unavailable: e.tier_unavailable(),
        })
    }
}

/// The tiers of this OS: the one `auto` tries first (it needs no setup), then the elevated one.
pub struct Tiers {
    /// No setup needed.
    pub unelevated: Box<dyn Tier>,
    /// Needs `stockade setup`.
    pub elevated: Box<dyn Tier>,
    /// `auto` runs the elevated tier first when it is installed (Windows: the unelevated tier is
    /// a guardrail, not a boundary; see docs/windows.md).
    pub prefer_elevated: bool,
}

impl Tiers {
    /// Both, in the order `auto` prefers them.
    pub fn all(&self) -> [&dyn Tier; 2] {
        [self.unelevated.as_ref(), self.elevated.as_ref()]
    }
}

/// The tiers of this OS.
#[cfg(target_os = "linux")]
pub fn tiers() -> Option<Tiers> {
    use std::io::IsTerminal;
    Some(Tiers {
        unelevated: Box::new(stockade_linux::UnelevatedBackend),
        elevated: Box::new(stockade_elevated::ElevatedBackend {
            progress: std::io::stderr().is_terminal(),
            ..Default::default()
        }),
        prefer_elevated: false,
    })
}

/// The tiers of this OS.
#[cfg(windows)]
pub fn tiers() -> Option<Tiers> {
    use stockade_windows::backend::{Tier as WinTier, WindowsBackend};
    Some(Tiers {
        unelevated: Box::new(WindowsBackend {
            tier: WinTier::Unelevated,
        }),
        elevated: Box::new(WindowsBackend {
            tier: WinTier::Elevated,
        }),
        prefer_elevated: true,
    })
}

/// The tiers of this OS: none.
#[cfg(not(any(target_os = "linux", windows)))]
pub fn tiers() -> Option<Tiers> {
    None
}

/// Run `cmd` under `plan` with the chosen tier. An explicit tier runs as asked. `auto` runs the
/// unelevated tier and, only when that tier cannot run on this machine at all and the elevated
/// tier is installed, uses that instead (the outcome's `tier` says which ran, and a warning says
/// why); when the elevated tier is not installed the unelevated tier's failure stands.
///
/// `walk_plan` makes the same plan without the write gate: `auto`'s fallback to the elevated
/// tier (which has no gate) runs that one, never a plan made for the gate.
pub fn run(
    plan: &Plan,
    cmd: &Command,
    opts: &RunOptions,
    choice: TierChoice,
    walk_plan: &dyn Fn() -> Result<Plan, String>,
) -> Result<RunOutcome, LaunchFailure> {
    let Some(t) = tiers() else {
        return Err(LaunchFailure {
            tier: "none",
            message: "Stockade has no backend for this operating system yet".into(),
            exit_code: crate::EXIT_STOCKADE as i32,
            tier_unavailable: true,
        });
    };
    // A plan made for the write gate protects only what lies at each writable root; the rest is
    // the gate's, which only the unelevated tier has: no other tier may run it.
    let elevated = |plan: &Plan| {
        if plan.write_gate {
            return Err(LaunchFailure {
                tier: t.elevated.name(),
                message: "this plan relies on the write gate, which the elevated tier does not have; run with --tier elevated (its plan walks every writable root instead)".into(),
                exit_code: crate::EXIT_STOCKADE as i32,
                tier_unavailable: false,
            });
        }
        t.elevated.launch(plan, cmd, opts)
    };
    match choice {
        TierChoice::Unelevated => t.unelevated.launch(plan, cmd, opts),
        TierChoice::Elevated => elevated(plan),
        TierChoice::Auto
            if auto_prefers_elevated(t.prefer_elevated, &t.elevated.availability()) =>
        {
            elevated(plan)
        }
        TierChoice::Auto => match t.unelevated.launch(plan, cmd, opts) {
            Err(first) if first.tier_unavailable => {
                match fallback(&first, &t.elevated.availability()) {
                    Fallback::Use(warning) => {
                        let walked;
                        let plan = if plan.write_gate {
                            walked = walk_plan().map_err(|message| LaunchFailure {
                                tier: t.elevated.name(),
                                message,
                                exit_code: crate::EXIT_STOCKADE as i32,
                                tier_unavailable: false,
                            })?;
                            &walked
                        } else {
                            plan
                        };
                        let mut out = elevated(plan)?;
                        out.warnings.insert(0, warning);
                        Ok(out)
                    }
                    Fallback::Stand => Err(first),
                }
            }
            other => other,
        },
    }
}

/// Does `auto` start with the elevated tier? Only on an OS that prefers it, and only when it is
/// installed. Pure.
fn auto_prefers_elevated(prefer_elevated: bool, elevated: &Availability) -> bool {
    prefer_elevated && elevated.installed
}

/// What `auto` does after the preferred tier said it cannot run here.
#[derive(Debug, PartialEq, Eq)]
enum Fallback {
    /// Run the next tier, with this warning.
    Use(String),
    /// Report the first tier's failure.
    Stand,
}

/// The fallback decision of `auto`. Pure. An installed tier whose broker is unreachable is still
/// used, so its own failure (which names the way out) is what the user sees.
fn fallback(first: &LaunchFailure, next: &Availability) -> Fallback {
    if next.installed {
        Fallback::Use(format!("used the elevated tier: {}", first.message))
    } else {
        Fallback::Stand
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked() -> LaunchFailure {
        LaunchFailure {
            tier: "linux-unelevated",
            message: "cannot create a user namespace".into(),
            exit_code: 125,
            tier_unavailable: true,
        }
    }

    #[test]
    fn auto_prefers_an_installed_elevated_tier_where_asked() {
        assert!(auto_prefers_elevated(
            true,
            &Availability::ready("installed")
        ));
        assert!(!auto_prefers_elevated(
            true,
            &Availability::not_installed("no setup")
        ));
        assert!(!auto_prefers_elevated(
            false,
            &Availability::ready("installed")
        ));
    }

    #[test]
    fn auto_falls_back_only_to_an_installed_tier() {
        assert_eq!(
            fallback(&blocked(), &Availability::ready("ok")),
            Fallback::Use("used the elevated tier: cannot create a user namespace".into())
        );
        // Installed but the broker is down: still used, so its own error names the way out.
        assert!(matches!(
            fallback(&blocked(), &Availability::unavailable("broker down")),
            Fallback::Use(_)
        ));
        assert_eq!(
            fallback(&blocked(), &Availability::not_installed("no")),
            Fallback::Stand
        );
    }
}
