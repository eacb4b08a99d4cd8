//! Linux backend for Stockade.
//!
//! One module per kernel feature: [`mounts`] (mount namespace view), [`landlock_layer`],
//! [`limits`]; [`launch`] sequences them with `stockade_sys`'s caps, loopback, seccomp, connect
//! gate and pty (its docs give the enforcement order and why); [`proxy`] is the allowlist HTTP
//! proxy; [`probe`] answers `stockade doctor`. Every syscall goes through `stockade_sys`.
#![cfg(target_os = "linux")]

pub mod landlock_layer;
pub mod launch;
pub mod limits;
pub mod mounts;
pub mod overlay;
pub mod probe;
pub mod proxy;
pub mod write_gate;

use stockade_policy::backend::{
    Availability, Backend, Command, Feature, LaunchFailure, RunOptions, RunOutcome,
};
use stockade_policy::plan::Plan;

pub use launch::LaunchError;

/// The unelevated tier: user/mount/pid/net namespaces, read-only binds, Landlock, no capabilities.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnelevatedBackend;

impl Backend for UnelevatedBackend {
    type Error = LaunchError;

    fn tier(&self) -> &'static str {
        "linux-unelevated"
    }

    fn availability(&self) -> Availability {
        match probe::userns_works() {
            Ok(()) if stockade_sys::landlock::kernel_abi() > 0 => {
                Availability::ready("user namespaces and Landlock available")
            }
            Ok(()) => Availability::ready(
                "user namespaces available; no Landlock, so writes are confined by the mount layer alone",
            ),
            Err(_) => Availability::unavailable(
                "unprivileged user namespaces are blocked: use the elevated tier (`sudo stockade setup`)",
            ),
        }
    }

    fn features(&self) -> Vec<Feature> {
        probe::features()
            .into_iter()
            .map(|f| Feature {
                name: f.name.to_string(),
                available: f.available,
                detail: f.detail,
            })
            .collect()
    }

    fn run(
        &self,
        plan: &Plan,
        cmd: &Command,
        opts: &RunOptions,
    ) -> Result<RunOutcome, LaunchError> {
        launch::run(plan, cmd, opts)
    }
}

impl LaunchFailure for LaunchError {
    fn exit_code(&self) -> i32 {
        LaunchError::exit_code(self)
    }

    fn tier_unavailable(&self) -> bool {
        matches!(self, LaunchError::UserNamespaces { .. })
    }
}
