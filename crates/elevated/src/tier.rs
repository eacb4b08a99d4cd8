//! `stockade run --tier elevated|unelevated|auto`: which tier to use.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierChoice {
    /// Pick automatically.
    Auto,
    /// User namespaces.
    Unelevated,
    /// Sandbox accounts via the broker.
    Elevated,
}

impl std::str::FromStr for TierChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TierChoice::Auto),
            "unelevated" => Ok(TierChoice::Unelevated),
            "elevated" => Ok(TierChoice::Elevated),
            o => Err(format!(
                "unknown tier {o:?}: expected auto, unelevated or elevated"
            )),
        }
    }
}

/// A concrete tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// User namespaces + mounts + Landlock + seccomp.
    Unelevated,
    /// Sandbox accounts via the broker.
    Elevated,
}

/// Why no tier can be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    /// Unelevated requested but unavailable.
    #[error("the unelevated tier needs unprivileged user namespaces, which are blocked here ({0}); use --tier elevated after `sudo stockade setup`")]
    NoUserns(String),
    /// Elevated requested but not installed.
    #[error(
        "the elevated tier is not installed; run `sudo stockade setup` (and start the broker)"
    )]
    NotInstalled,
    /// Neither works.
    #[error("no sandbox tier is available: user namespaces are blocked ({0}) and the elevated tier is not installed; run `sudo stockade setup`")]
    Neither(String),
}

/// Picks the tier and says why. Pure.
pub fn pick(
    choice: TierChoice,
    userns: Result<(), String>,
    elevated_installed: bool,
) -> Result<(Tier, String), TierError> {
    match (choice, userns, elevated_installed) {
        (TierChoice::Unelevated, Ok(()), _) => {
            Ok((Tier::Unelevated, "requested with --tier unelevated".into()))
        }
        (TierChoice::Unelevated, Err(e), _) => Err(TierError::NoUserns(e)),
        (TierChoice::Elevated, _, true) => {
            Ok((Tier::Elevated, "requested with --tier elevated".into()))
        }
        (TierChoice::Elevated, _, false) => Err(TierError::NotInstalled),
        (TierChoice::Auto, Ok(()), _) => Ok((
            Tier::Unelevated,
            "auto: unprivileged user namespaces work".into(),
        )),
        (TierChoice::Auto, Err(e), true) => Ok((
            Tier::Elevated,
            format!("auto: user namespaces are blocked ({e}); the elevated tier is installed"),
        )),
        (TierChoice::Auto, Err(e), false) => Err(TierError::Neither(e)),
    }
}

/// What `stockade run --tier <choice>` should use on this machine, and why (the CLI prints the
/// reason). Probes user namespaces only when the answer can depend on it.
pub fn choose(
    choice: TierChoice,
    opts: &crate::setup::SetupOptions,
) -> Result<(Tier, String), TierError> {
    let userns = match choice {
        TierChoice::Elevated => Err("not probed".to_string()),
        _ => probe_userns(),
    };
    pick(choice, userns, crate::setup::installed(opts).is_some())
}

/// Probes whether this process can create a user namespace, by forking a child that calls
/// `unshare(CLONE_NEWUSER)` and exits (the only reliable test: sysctls, AppArmor and seccomp
/// policies can all block it).
pub fn probe_userns() -> Result<(), String> {
    let mut cmd = Command::new("/bin/true");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child and only makes one raw syscall.
    unsafe {
        cmd.pre_exec(|| Ok(stockade_sys::spawn::child::unshare_user()?));
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("probe exited with {s}")),
        Err(e) => Err(describe(e)),
    }
}

fn describe(e: io::Error) -> String {
    let hint =
        match std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
            Ok(v) if v.trim() == "1" => "; kernel.apparmor_restrict_unprivileged_userns=1",
            _ => "",
        };
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        return format!("unshare(CLONE_NEWUSER): {e}; user.max_user_namespaces=0{hint}");
    }
    format!("unshare(CLONE_NEWUSER): {e}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_unelevated() {
        assert_eq!(
            pick(TierChoice::Auto, Ok(()), true).unwrap().0,
            Tier::Unelevated
        );
        let (t, why) = pick(TierChoice::Auto, Err("EPERM".into()), true).unwrap();
        assert_eq!(t, Tier::Elevated);
        assert!(why.contains("EPERM"));
        assert_eq!(
            pick(TierChoice::Auto, Err("x".into()), false),
            Err(TierError::Neither("x".into()))
        );
    }

    #[test]
    fn explicit_choices() {
        assert_eq!(
            pick(TierChoice::Elevated, Ok(()), true).unwrap().0,
            Tier::Elevated
        );
        assert_eq!(
            pick(TierChoice::Elevated, Ok(()), false),
            Err(TierError::NotInstalled)
        );
        assert!(matches!(
            pick(TierChoice::Unelevated, Err("x".into()), true),
            Err(TierError::NoUserns(_))
        ));
        assert_eq!("auto".parse::<TierChoice>(), Ok(TierChoice::Auto));
        assert!("x".parse::<TierChoice>().is_err());
    }
}
