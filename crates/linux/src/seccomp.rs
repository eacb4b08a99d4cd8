//! seccomp filters, installed in the command process right before exec.
//!
//! Two filters stack (the kernel applies the most restrictive verdict):
//! 1. **Gate** (hand-written BPF: seccompiler cannot express `SECCOMP_RET_USER_NOTIF`): kills any
//!    syscall made through a foreign ABI (i386 `int 0x80`, x32), which would bypass every rule by
//!    number; answers `clone3` and `openat2` with `ENOSYS` (their flags and modes live in memory a
//!    filter cannot read, so libc falls back to `clone`/`openat`, whose arguments are checked); and hands every `connect` to the
//!    supervisor in init ([`crate::sockets`]), which performs it only if the target is allowed.
//!    Installed with `SECCOMP_FILTER_FLAG_NEW_LISTENER`; the listener goes to init.
//! 2. **Deny list** (compiled with seccompiler): namespace and mount manipulation, kernel keyring,
//!    BPF, perf, userfaultfd, io_uring (it performs operations that bypass seccomp), kernel modules,
//!    kexec, reboot, swap, clock and accounting changes, terminal input injection (`TIOCSTI`,
//!    `TIOCLINUX`), datagram unix sockets (they address host sockets per message, past the
//!    connect gate), and socket families other than unix, IPv4, IPv6 and netlink (vsock would
//!    reach the hypervisor whatever the network namespace says). All answer `EPERM`.

use crate::sys::SysError;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_SET_MODE_FILTER: u32 = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 1 << 3;
/// Do not force the speculative-store-bypass mitigation on the sandboxed process (as container
/// runtimes do): it slows every instruction the command runs and guards against a side channel
/// within the process, not against the sandbox's walls.
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 1 << 2;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

/// A failure to build or install a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The deny-list could not be compiled.
    #[error("compiling the seccomp filter failed: {0}")]
    Compile(String),
    /// The kernel refused a filter.
    #[error("installing a seccomp filter failed: {0}")]
    Install(#[from] SysError),
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The gate program (see module docs).
pub fn gate_program() -> Vec<libc::sock_filter> {
    // Layout: 0 ld arch; 1 jeq x86_64 ? 2 : kill; 2 ld nr; 3 jge x32 ? kill; 4 jeq connect ? notif;
    // 5 jeq clone3 ? enosys; 6 jeq openat2 ? enosys; 7 allow; 8 notif; 9 enosys; 10 kill.
    vec![
        stmt(BPF_LD_W_ABS, 4),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 0, 8),
        stmt(BPF_LD_W_ABS, 0),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 6, 0),
        jump(BPF_JEQ_K, libc::SYS_connect as u32, 3, 0),
        jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 3, 0),
        jump(BPF_JEQ_K, libc::SYS_openat2 as u32, 2, 0),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
        stmt(BPF_RET_K, SECCOMP_RET_USER_NOTIF),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
    ]
}

/// Install the gate on the calling thread; returns the notification listener.
/// Requires `no_new_privs` (or `CAP_SYS_ADMIN`).
pub fn install_gate() -> Result<OwnedFd, SeccompError> {
    let prog = gate_program();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, a valid BPF program that outlives the call; the kernel
    // copies it. The flag asks for a listener descriptor as the return value.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(SysError {
            call: "seccomp",
            what: "gate filter".into(),
            source: std::io::Error::last_os_error(),
        }
        .into());
    }
    // SAFETY: on success the kernel returned a new listener descriptor owned by this process.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// Syscalls refused outright.
const DENIED: &[libc::c_long] = &[
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_lookup_dcookie,
    libc::SYS_vhangup,
    libc::SYS_syslog,
    libc::SYS_fanotify_init,
    libc::SYS_pidfd_getfd,
    libc::SYS_process_madvise,
];

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    val: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, len, op, val).map_err(|e| SeccompError::Compile(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError::Compile(e.to_string()))
}

/// Compile the deny-list filter (done on the host side, before any fork).
pub fn deny_program() -> Result<BpfProgram, SeccompError> {
    use SeccompCmpArgLen::{Dword, Qword};
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, vec![])).collect();
    // clone with any namespace flag (clone3 is answered ENOSYS by the gate): one rule per flag.
    rules.insert(
        libc::SYS_clone,
        CLONE_NS_FLAGS_LIST
            .iter()
            .map(|&f| rule(vec![cond(0, Qword, SeccompCmpOp::MaskedEq(f), f)?]))
            .collect::<Result<_, _>>()?,
    );
    // Terminal input injection.
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, Dword, SeccompCmpOp::Eq, libc::TIOCSTI)?])?,
            rule(vec![cond(1, Dword, SeccompCmpOp::Eq, libc::TIOCLINUX)?])?,
        ],
    );
    // Datagram/raw unix sockets (see module docs).
    let unix_dgram = |nr: i64| -> Result<(i64, Vec<SeccompRule>), SeccompError> {
        Ok((
            nr,
            vec![
                rule(vec![
                    cond(0, Dword, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?,
                    cond(
                        1,
                        Dword,
                        SeccompCmpOp::MaskedEq(0xf),
                        libc::SOCK_DGRAM as u64,
                    )?,
                ])?,
                rule(vec![
                    cond(0, Dword, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?,
                    cond(1, Dword, SeccompCmpOp::MaskedEq(0xf), libc::SOCK_RAW as u64)?,
                ])?,
            ],
        ))
    };
    // Address families: only unix, IPv4, IPv6 and netlink. Others are either not confined by
    // the network namespace (vsock reaches the hypervisor, bluetooth the radio) or not needed.
    let other_family = || -> Result<SeccompRule, SeccompError> {
        rule(
            ALLOWED_FAMILIES
                .iter()
                .map(|&f| cond(0, Dword, SeccompCmpOp::Ne, f as u64))
                .collect::<Result<_, _>>()?,
        )
    };
    for nr in [libc::SYS_socket, libc::SYS_socketpair] {
        let (k, mut v) = unix_dgram(nr)?;
        v.push(other_family()?);
        rules.insert(k, v);
    }
    // Set-user-ID / set-group-ID bits: a file made set-id inside would keep that bit on the host
    // (nosuid protects only the sandbox's own mounts), handing the caller's identity to any local
    // user who runs it. Refused on every call that sets a mode (openat2 is answered ENOSYS by the
    // gate, since its mode lives in memory a filter cannot read).
    for (nr, arg) in [
        (libc::SYS_chmod, 1),
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (libc::SYS_fchmodat2, 2),
        (libc::SYS_open, 2),
        (libc::SYS_openat, 3),
        (libc::SYS_creat, 1),
        (libc::SYS_mknod, 1),
        (libc::SYS_mknodat, 2),
    ] {
        let setid = [libc::S_ISUID as u64, libc::S_ISGID as u64]
            .into_iter()
            .map(|bit| rule(vec![cond(arg, Dword, SeccompCmpOp::MaskedEq(bit), bit)?]))
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(nr, setid);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Compile(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Compile(e.to_string()))
}

/// Socket address families the command may create.
const ALLOWED_FAMILIES: &[libc::c_int] = &[
    libc::AF_UNIX,
    libc::AF_INET,
    libc::AF_INET6,
    libc::AF_NETLINK,
];

const CLONE_NS_FLAGS_LIST: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Install a compiled program on the calling thread (`no_new_privs` must be set).
pub fn install(prog: &BpfProgram) -> Result<(), SeccompError> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, a valid compiled BPF program that outlives the call; the
    // kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(SysError {
            call: "seccomp",
            what: "deny-list filter".into(),
            source: std::io::Error::last_os_error(),
        }
        .into());
    }
    Ok(())
}

// SHIM: replaced by the combined filter on main
/// Install every seccomp filter on the calling thread (the gate, then the deny list) and return
/// the gate's notification listener. Requires `no_new_privs` (or `CAP_SYS_ADMIN`).
pub fn install_filter() -> Result<OwnedFd, SeccompError> {
    let listener = install_gate()?;
    install(&deny_program()?)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_jumps_land_on_the_right_returns() {
        let p = gate_program();
        let target = |i: usize, off: u8| i + 1 + off as usize;
        // wrong arch -> kill
        assert_eq!(p[target(1, p[1].jf)].k, SECCOMP_RET_KILL_PROCESS);
        // x32 -> kill
        assert_eq!(p[target(3, p[3].jt)].k, SECCOMP_RET_KILL_PROCESS);
        // connect -> notify
        assert_eq!(p[target(4, p[4].jt)].k, SECCOMP_RET_USER_NOTIF);
        // clone3, openat2 -> ENOSYS
        for i in [5, 6] {
            assert_eq!(
                p[target(i, p[i].jt)].k,
                SECCOMP_RET_ERRNO | libc::ENOSYS as u32
            );
        }
        // fallthrough -> allow
        assert_eq!(p[7].k, SECCOMP_RET_ALLOW);
    }

    #[test]
    fn deny_list_compiles() {
        let prog = deny_program().expect("compiles");
        assert!(prog.len() > DENIED.len());
    }
}
