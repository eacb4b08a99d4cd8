//! The Landlock layer: a second, independent barrier on writes.
//!
//! Read and execute are allowed everywhere (the mount layer masks `deny_read`); every write-type
//! right (write, truncate, create, remove, rename/link "refer", device ioctls) is granted only
//! beneath the writable roots, the private temp dirs and the few device files a program needs.
//! Landlock also forbids the sandboxed process from changing its mounts, so the mount layer
//! cannot be undone from inside. Where the kernel supports ABI 6, abstract unix sockets and
//! signals are scoped to the sandbox.

use ::landlock::RulesetStatus;
use std::path::PathBuf;
use stockade_policy::plan::Plan;
use stockade_sys::landlock;

/// What Landlock actually did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LandlockStatus {
    /// All requested restrictions are enforced.
    Full,
    /// Enforced, but some rights of newer ABIs are missing on this kernel.
    Partial,
    /// The kernel has no Landlock.
    Unsupported,
}

/// A Landlock failure.
#[derive(Debug, thiserror::Error)]
#[error("Landlock: {0}")]
pub struct LandlockError(String);

/// Paths that get write rights.
pub fn writable_paths(plan: &Plan) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = plan.writable_roots.clone();
    if plan.temp.private {
        v.extend(["/tmp", "/var/tmp", "/dev/shm"].map(PathBuf::from));
    }
    // Copy-on-write overlays: writes land in the private upper layer, never on the host.
    for layer in &plan.overlay.layers {
        if !v.contains(&layer.lower) {
            v.push(layer.lower.clone());
        }
    }
    v
}

/// Restrict the calling thread (and its future children). Call after all mounts are in place and
/// before dropping capabilities is irrelevant: Landlock needs only `no_new_privs`.
pub fn restrict(plan: &Plan) -> Result<LandlockStatus, LandlockError> {
    let err = |e: &dyn std::fmt::Display| LandlockError(e.to_string());
    let ruleset = landlock::base_ruleset(
        writable_paths(plan),
        &[
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/tty",
            "/dev/pts",
            "/dev/ptmx",
        ],
    )
    .map_err(|e| err(&e))?;
    let status = ruleset.restrict_self().map_err(|e| err(&e))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::Full,
        RulesetStatus::PartiallyEnforced => LandlockStatus::Partial,
        RulesetStatus::NotEnforced => LandlockStatus::Unsupported,
    })
}
