//! The public `setup` / `uninstall` entry points for the CLI. They exist on every OS so that the
//! CLI compiles everywhere; off Windows they return [`SetupError::NotWindows`].

pub use crate::elevated::{Drift, InstallRecord, SetupStep, UninstallStep};

/// Options of `stockade setup`.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Loopback TCP ports the offline account may still reach (e.g. a filtering proxy).
    pub allowed_loopback_ports: Vec<u16>,
}

/// What setup did.
#[derive(Debug, Clone)]
pub struct SetupOutcome {
    /// Steps performed (empty: already installed, nothing changed).
    pub performed: Vec<SetupStep>,
    /// Drift found and repaired.
    pub drift: Vec<Drift>,
    /// The installation record now in place.
    pub record: InstallRecord,
}

/// Why setup or uninstall failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Not on Windows.
    #[error("`stockade setup`/`uninstall` manage Windows accounts and firewall rules; there is nothing to do on this OS")]
    NotWindows,
    /// A Windows step failed.
    #[cfg(windows)]
    #[error(transparent)]
    Win(#[from] crate::win::setup::WinSetupError),
}

impl SetupError {
    /// True if re-running elevated would help (the CLI then re-launches itself through UAC).
    pub fn needs_elevation(&self) -> bool {
        #[cfg(windows)]
        {
            matches!(
                self,
                SetupError::Win(crate::win::setup::WinSetupError::NotElevated)
            )
        }
        #[cfg(not(windows))]
        {
            false
        }
    }
}

/// Installs the elevated tier (idempotent; repairs drift).
pub fn setup(opts: &SetupOptions) -> Result<SetupOutcome, SetupError> {
    #[cfg(windows)]
    {
        let r = crate::win::setup::setup(&opts.allowed_loopback_ports)?;
        Ok(SetupOutcome {
            performed: r.performed,
            drift: r.drift,
            record: r.record,
        })
    }
    #[cfg(not(windows))]
    {
        let _ = opts;
        Err(SetupError::NotWindows)
    }
}

/// Removes everything setup installed.
pub fn uninstall() -> Result<Vec<UninstallStep>, SetupError> {
    #[cfg(windows)]
    {
        Ok(crate::win::setup::uninstall()?)
    }
    #[cfg(not(windows))]
    {
        Err(SetupError::NotWindows)
    }
}

#[cfg(all(test, not(windows)))]
mod tests {
    #[test]
    fn off_windows_setup_says_so() {
        let e = super::setup(&Default::default()).err();
        assert!(matches!(e, Some(super::SetupError::NotWindows)));
        assert!(matches!(
            super::uninstall(),
            Err(super::SetupError::NotWindows)
        ));
    }
}

/// If this process was started as the elevated tier's runner (hidden argument
/// [`crate::elevated::RUNNER_ARG`]), runs it and returns the exit code to exit with. The CLI
/// calls this first thing in `main`; off Windows it always returns `None`.
pub fn maybe_run_as_runner() -> Option<i32> {
    #[cfg(windows)]
    {
        crate::win::runner::maybe_run_as_runner()
    }
    #[cfg(not(windows))]
    {
        None
    }
}
