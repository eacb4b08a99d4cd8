//! Stockade's platform-neutral core.
//!
//! * [`model`] — the policy a user writes (TOML) and its serde model.
//! * [`config`] — layered loading (embedded default → user → workspace → `--config` → profile →
//!   CLI) with provenance, the merge rules and the workspace trust rule.
//! * [`plan`] — resolution of a policy against the real filesystem into a [`plan::Plan`]: the exact,
//!   canonical list of what a backend must enforce.
//! * [`domains`] — `network.allowed_domains` entries (`name`, `*.name`, addresses, `:PORT`).
//! * [`backend`] — the one trait every OS backend implements, and the neutral run/outcome types.
//! * [`system_dirs`] — the one list of system directories both Linux tiers refuse as writable
//!   roots.
//! * [`paths`] — `~/` expansion and the `*`/`?` glob matcher used for environment names.
//!
//! Nothing in this crate makes a raw syscall (the one filesystem-type probe of the walk cache goes
//! through `stockade_sys`): it computes, the backends enforce. The policy
//! reference for users is `docs/policy.md`.

#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod domains;
mod git_identity;
pub mod gitmeta;
pub mod model;
pub mod overlay;
pub mod paths;
pub mod plan;
mod planned;
#[cfg(unix)]
pub mod protect;
pub mod system_dirs;
mod walk_cache;

#[cfg(test)]
mod test_util;

/// A short, user-facing reason for an I/O error (shared by the plan and the walk, which must not
/// depend on each other both ways).
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "it does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

pub use backend::{Backend, Command, Denial, EnforcedLayer, ExitKind, RunOptions, RunOutcome};
pub use config::{load, CliOverrides, ConfigError, LoadRequest, Loaded, Source};
pub use model::{EnvInherit, NetworkMode, Policy};
pub use plan::{resolve, Plan, PlanError, PlanRequest};
