//! Landlock for both Linux tiers: the part of the ruleset they share ([`base_ruleset`]), the
//! kernel's ABI version, and `landlock_restrict_self` on a ruleset built in another process
//! (the elevated tier builds it in the broker).

use crate::{cvt, SysResult};
use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetError, Scope, ABI,
};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// The newest ABI this code was written against.
pub const TARGET_ABI: ABI = ABI::V6;

/// The ruleset both tiers start from: every filesystem right of [`TARGET_ABI`] handled (best
/// effort: an older kernel enforces what it knows), abstract unix sockets and signals scoped to
/// the sandbox, read/execute everywhere, every right beneath `writable`, and read/write/device
/// ioctls on `devices`. A tier adds its own rules, then restricts.
pub fn base_ruleset<P: AsRef<Path>>(
    writable: impl IntoIterator<Item = P>,
    devices: &[&str],
) -> Result<RulesetCreated, RulesetError> {
    let all = AccessFs::from_all(TARGET_ABI);
    Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)?
        .create()?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(TARGET_ABI)))?
        .add_rules(path_beneath_rules(writable, all))?
        .add_rules(path_beneath_rules(
            devices,
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
        ))
}

/// The Landlock ABI version of the running kernel (0 = none).
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns the ABI version (or an
    // error); no memory is passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        0
    } else {
        ret as i32
    }
}

/// `landlock_restrict_self(ruleset, 0)`: enforces a ruleset built elsewhere (needs
/// `no_new_privs`).
pub fn landlock_restrict_self(ruleset: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: plain syscall with a descriptor and a zero flags word; no memory is passed.
    cvt("landlock_restrict_self", String::new, unsafe {
        libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32)
    })?;
    Ok(())
}
