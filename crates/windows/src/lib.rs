//! Windows backend for Stockade.
//!
//! Every decision (which SIDs, which ACEs on which paths with which masks and inheritance, which
//! firewall rules, which environment) is a pure plan computed by the modules below, which compile
//! and are tested on any host. Only [`win`] (Windows only) talks to Win32, and it only applies
//! plans. See `docs/windows.md`.

pub mod access;
pub mod ace;
pub mod elevated;
pub mod env;
pub mod firewall;
pub mod input;
pub mod path;
pub mod placeholder;
pub mod setup;
pub mod sid;
pub mod state;
pub mod unelevated;
pub mod wfp;

#[cfg(test)]
mod attacks;
#[cfg(test)]
mod fixture;

#[cfg(windows)]
pub mod win;

#[cfg(feature = "policy")]
pub mod backend;
#[cfg(feature = "policy")]
pub mod launch;
#[cfg(feature = "policy")]
pub use backend::{RunError, Tier, WindowsBackend};
pub use setup::{maybe_run_as_runner, setup, uninstall, SetupError, SetupOptions, SetupOutcome};
