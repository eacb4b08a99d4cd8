//! The one skip mechanism of every test suite (the CLI suites use it through `common`; the
//! elevated and policy tests include this file with `#[path]`).
//!
//! A test that cannot run here calls `return skip("why");`. Outside CI that prints
//! `SKIPPED <test>: why` and the test returns. Under `STOCKADE_REQUIRE_ROOT_TESTS=1` (CI, as root,
//! with every tool installed by `.ci/run`) it panics instead: a skip is never a pass there.
#![allow(dead_code)]

/// The variable that turns every skip into a failure.
pub const REQUIRE_VAR: &str = "STOCKADE_REQUIRE_ROOT_TESTS";

/// Whether skips are failures (the variable is set to anything but empty or `0`).
pub fn skips_fail() -> bool {
    std::env::var_os(REQUIRE_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Report that the calling test cannot run here; panics under [`REQUIRE_VAR`].
/// Use as `return skip("reason");` so the test really ends.
#[track_caller]
pub fn skip(reason: impl std::fmt::Display) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<test>")
        .to_string();
    if skips_fail() {
        panic!("{REQUIRE_VAR} is set, so this skip is a failure: {test}: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason} (set {REQUIRE_VAR}=1 to make this a failure)");
}

/// Whether a program is on PATH. Under [`REQUIRE_VAR`] a missing program is a failure at once
/// (CI installs every tool a test asks about), so `if !have(x) { return skip(..) }` never passes
/// silently in CI, and neither does a test that takes another branch when a tool is missing.
#[track_caller]
pub fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v '{tool}' >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found && skips_fail() {
        panic!("{REQUIRE_VAR} is set and `{tool}` is not installed (.ci/run installs it)");
    }
    found
}
