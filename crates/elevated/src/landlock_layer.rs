//! The elevated tier's Landlock layer.
//!
//! The ruleset is built in the broker, from the descriptors validation opened (so a symlink
//! swapped in afterwards cannot redirect a rule), and travels to the run's process as a
//! descriptor; that process only calls `landlock_restrict_self` ([`crate::runner`]). Rules:
//! read/execute everywhere, every write-type right only beneath the writable roots and the run's
//! private TMPDIR, plus read/write on a few device files. Abstract unix sockets and signals are
//! scoped to the run where the kernel supports it (so one run cannot signal another run of the
//! same sandbox account).
//!
//! Both tiers start from `stockade_sys::landlock::base_ruleset`. Why not the unelevated tier's
//! `landlock_layer`: it takes a `Plan` and opens the writable roots by path in the sandbox itself, and when the plan has a private temp it grants `/tmp`, `/var/tmp`
//! and `/dev/shm`, which in the unelevated tier are private mounts but here are the host's shared
//! directories. This tier needs rules on descriptors the broker validated and the run's own
//! TMPDIR instead.

use landlock::{Access, AccessFs, PathBeneath, RulesetCreated, RulesetCreatedAttr};
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use stockade_sys::landlock::{base_ruleset, TARGET_ABI};

/// Device files the command may read and write.
pub const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/urandom",
    "/dev/random",
];

/// Builds the ruleset (parent side).
pub fn prepare(
    writable: &[BorrowedFd<'_>],
    extra_writable: &[&Path],
) -> io::Result<RulesetCreated> {
    let e = |x: &dyn std::fmt::Display| io::Error::other(format!("Landlock: {x}"));
    let all = AccessFs::from_all(TARGET_ABI);
    let mut rs = base_ruleset(extra_writable, DEVICES).map_err(|x| e(&x))?;
    for fd in writable {
        rs = rs.add_rule(PathBeneath::new(*fd, all)).map_err(|x| e(&x))?;
    }
    Ok(rs)
}
