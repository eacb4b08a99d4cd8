//! Stockade's elevated Linux tier.
//!
//! For machines where unprivileged user namespaces are unavailable (Ubuntu 24.04+ AppArmor
//! restrictions, containers), commands run as dedicated system accounts instead:
//!
//! * [`setup::setup`] / [`setup::check`] / [`setup::uninstall`] — accounts `stockade-offline` and
//!   `stockade-online`, group `stockade-sandbox`, the nftables table `inet stockade`, systemd
//!   units, and the installation record `/var/lib/stockade/install.json`.
//! * [`grants`] — persistent, incremental POSIX ACL grants on writable roots.
//! * [`broker::serve_broker`] — the small privileged broker: authenticates callers with
//!   `SO_PEERCRED`, re-validates every path, grants, and runs the command as the sandbox account
//!   in its own cgroup with the caller's stdin/stdout/stderr.
//! * [`client::ElevatedBackend`] — the unprivileged client implementing
//!   [`stockade_policy::Backend`].
//!
//! Decisions are pure functions with unit tests ([`nft::ruleset`], [`record::diff`],
//! [`acl::entries_for`], [`grants::decide`], [`validate`]); the syscalls are `stockade_sys`.
//! See `docs/elevated.md`.
#![cfg(target_os = "linux")]

pub mod accounts;
pub mod acl;
pub mod broker;
pub mod cgroup;
pub mod client;
pub mod fsutil;
pub mod grants;
pub mod landlock_layer;
pub mod nft;
pub mod ns;
pub mod protocol;
pub mod record;
pub mod runner;
#[cfg(target_arch = "x86_64")]
pub mod setup;
pub mod validate;

pub use broker::{serve_broker, BrokerError, BrokerOptions};
pub use client::{ClientError, ElevatedBackend};
pub use setup::{
    check, setup, uninstall, DriftReport, SetupError, SetupOptions, SetupReport, UninstallReport,
};
