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
//! Why not `stockade_sys::landlock_layer`: it takes a `Plan` and opens the writable roots by
//! path in the sandbox itself, and when the plan has a private temp it grants `/tmp`, `/var/tmp`
//! and `/dev/shm`, which in the unelevated tier are private mounts but here are the host's shared
//! directories. This tier needs rules on descriptors the broker validated and the run's own
//! TMPDIR instead.

use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope, ABI,
};
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

const TARGET_ABI: ABI = ABI::V6;

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
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(|x| e(&x))?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(|x| e(&x))?
        .create()
        .map_err(|x| e(&x))?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(TARGET_ABI)))
        .map_err(|x| e(&x))?
        .add_rules(path_beneath_rules(extra_writable, all))
        .map_err(|x| e(&x))?
        .add_rules(path_beneath_rules(
            DEVICES,
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
        ))
        .map_err(|x| e(&x))?;
    for fd in writable {
        rs = rs.add_rule(PathBeneath::new(*fd, all)).map_err(|x| e(&x))?;
    }
    Ok(rs)
}
