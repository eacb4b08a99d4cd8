//! Layered configuration loading: embedded default → `~/.config/stockade/config.toml` →
//! `<workspace>/.stockade/config.toml` → `--config FILE` → CLI flags, with provenance.

/// The embedded default policy (TOML).
pub const DEFAULT_POLICY_TOML: &str = include_str!("../defaults/default.toml");
