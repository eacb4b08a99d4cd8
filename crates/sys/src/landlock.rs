//! The raw Landlock calls the tiers need beside the `landlock` crate's ruleset builder: the
//! kernel's ABI version and `landlock_restrict_self` on a ruleset built in another process.

use crate::{cvt, SysResult};
use std::os::fd::{AsRawFd, BorrowedFd};

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
