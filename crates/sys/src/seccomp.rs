//! The seccomp filter, installed in the command process right before exec.
//!
//! One filter, built from a declarative table ([`Verdict`] per syscall, argument rules for the
//! few that need them) by a small BPF assembler:
//! * **Foreign ABIs killed**: any syscall made through i386 `int 0x80` or the x32 ABI would
//!   bypass every rule by number, so the process is killed.
//! * **`connect` → user notification**: the supervisor in init performs it only if the target is
//!   allowed ([`crate::sockets`]). Installed with `SECCOMP_FILTER_FLAG_NEW_LISTENER`; the
//!   listener goes to init.
//! * **With the write gate** ([`program_with_gate`], installed by [`install_gated`] with
//!   `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`): also every write-intent filesystem call and
//!   `bind` → user notification, performed by [`crate::fsgate`]: `open`/`openat` when the flags
//!   carry a [`WRITE_INTENT`] bit and not `O_PATH` (read-only opens pass at full speed), `creat`,
//!   `mkdir*`, `mknod*`, `symlink*`, `link*`, `rename*`, `unlink*`, `rmdir`, `truncate`, the
//!   chmod/chown/utime/xattr families including their descriptor forms, `umask`; `setxattrat`,
//!   `removexattrat` and `file_setattr` (arguments in memory) → `ENOSYS`. Set-id modes are still
//!   refused in the filter, before any notification.
//! * **`clone3` and `openat2` → `ENOSYS`**: their flags and modes live in memory a filter cannot
//!   read, so libc falls back to `clone`/`openat`, whose arguments are checked.
//! * **Refused with `EPERM`**: namespace and mount manipulation (`unshare`, `setns`, `clone` with
//!   any namespace flag, the mount API), kernel keyring, BPF, perf, userfaultfd, io_uring (it
//!   performs operations that bypass seccomp), kernel modules, kexec, reboot, swap, clock and
//!   accounting changes, terminal input injection (`TIOCSTI`, `TIOCLINUX`), datagram and raw
//!   unix sockets (they address host sockets per message, past the connect gate), socket
//!   families other than unix, IPv4, IPv6 and netlink (vsock would reach the hypervisor whatever
//!   the network namespace says), and set-user-ID / set-group-ID bits in any mode argument (a
//!   file made set-id inside would keep that bit on the host; a set-group-ID directory would
//!   hand its group to what others create in it).
//!
//! # Why hand-assembled
//! seccompiler (used before) cannot express `SECCOMP_RET_USER_NOTIF`, so a second filter was
//! needed, and it compiles rules into one linear chain of ≈ 490 instructions. Installing a filter
//! costs time proportional to its length *and* to the path an always-allowed syscall takes
//! through it (the kernel emulates the filter for every syscall number to build its
//! allow-bitmap), which made the two filters ≈ 0.45 ms of every launch. Here syscall numbers
//! are dispatched by a binary search (≈ 7 comparisons deep), argument tests use `JSET`/`AND`
//! instead of one rule per bit, and the whole policy is one program of 123 instructions (measured; the
//! unit test `program_is_short_and_dispatch_is_shallow` bounds it).
//!
//! # Test strategy
//! The unit tests run the assembled program in a small BPF interpreter against a statement of the
//! policy written out by hand in the test (syscall names, expected verdicts), for every syscall
//! number and the interesting argument values, and show that a filter built from the table with
//! any one entry removed fails that comparison (the same for the gate's table and its own
//! statement, plus the open rule replaced by plain notification); the
//! integration suites (`crates/cli/tests/escapes.rs`) attempt each refused call through the real
//! binary.

use crate::SysError;
use std::os::fd::{FromRawFd, OwnedFd};

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
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

// Classic BPF opcodes used here.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_JA: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of argument `i` (little-endian). Every argument tested here is 32 bits wide in
/// the kernel (`int`, `unsigned int`, `umode_t`, and `clone`'s flags, of which the kernel reads
/// only the low 32 bits), so the high half cannot change the outcome.
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

/// A failure to build or install the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The program could not be assembled (a jump out of BPF's range: a bug, caught by tests).
    #[error("assembling the seccomp filter failed: {0}")]
    Assemble(String),
    /// The kernel refused the filter.
    #[error("installing the seccomp filter failed: {0}")]
    Install(#[from] SysError),
    /// The kernel lacks a feature the write gate needs.
    #[error(transparent)]
    Unsupported(GateUnsupported),
}

/// What the filter answers for a syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Refused with `EPERM`.
    Deny,
    /// Answered `ENOSYS` (libc falls back to a call whose arguments can be checked).
    NoSys,
    /// Handed to the supervisor.
    Notify,
    /// `clone`: refused when any namespace flag is set.
    CloneFlags,
    /// `ioctl`: refused for terminal input injection.
    Ioctl,
    /// `socket`/`socketpair`: family and type checked.
    Socket,
    /// A mode argument at this index must carry no set-id bit.
    Mode(u32),
    /// The write gate's `open`/`openat`: the mode argument (`mode`) must carry no set-id bit;
    /// the flags argument (`flags`) with `O_PATH` is allowed, with any write-intent bit
    /// ([`WRITE_INTENT`]) handed to the supervisor, otherwise allowed.
    OpenFlags {
        /// Index of the flags argument.
        flags: u32,
        /// Index of the mode argument.
        mode: u32,
    },
    /// The write gate's calls with a mode argument at this index: a set-id bit is refused,
    /// anything else handed to the supervisor.
    ModeNotify(u32),
}

/// The policy, by syscall number.
fn table() -> Vec<(u32, Verdict)> {
    use Verdict::*;
    let mut t: Vec<(libc::c_long, Verdict)> = DENIED.iter().map(|&nr| (nr, Deny)).collect();
    t.extend([
        (libc::SYS_connect, Notify),
        (libc::SYS_clone3, NoSys),
        (libc::SYS_openat2, NoSys),
        (libc::SYS_clone, CloneFlags),
        (libc::SYS_ioctl, Ioctl),
        (libc::SYS_socket, Socket),
        (libc::SYS_socketpair, Socket),
    ]);
    t.extend(MODE_ARGS.iter().map(|&(nr, arg)| (nr, Mode(arg))));
    let mut t: Vec<(u32, Verdict)> = t.into_iter().map(|(nr, v)| (nr as u32, v)).collect();
    t.sort_unstable_by_key(|&(nr, _)| nr);
    t
}

/// The policy with the write gate ([`crate::fsgate`]): [`table`], plus every write-intent
/// filesystem call handed to the supervisor, and the new `*xattrat`/`file_setattr` calls (their
/// arguments live in memory) answered `ENOSYS`.
fn gate_table() -> Vec<(u32, Verdict)> {
    gate_table_for(true)
}

/// [`gate_table`], with `mkdir`/`mkdirat` judged or not (`judge_mkdir`); unjudged they keep
/// [`table`]'s verdict (set-id mode bits refused, otherwise allowed).
fn gate_table_for(judge_mkdir: bool) -> Vec<(u32, Verdict)> {
    use Verdict::*;
    let mut t = table();
    let mut set = |nr: u32, v: Verdict| match t.iter_mut().find(|(n, _)| *n == nr) {
        Some(e) => e.1 = v,
        None => t.push((nr, v)),
    };
    for &nr in GATED {
        set(nr as u32, Notify);
    }
    for &(nr, arg) in GATED_MODE {
        if !judge_mkdir && (nr == libc::SYS_mkdir || nr == libc::SYS_mkdirat) {
            continue;
        }
        set(nr as u32, ModeNotify(arg));
    }
    set(libc::SYS_open as u32, OpenFlags { flags: 1, mode: 2 });
    set(libc::SYS_openat as u32, OpenFlags { flags: 2, mode: 3 });
    for nr in [SYS_SETXATTRAT, SYS_REMOVEXATTRAT, SYS_FILE_SETATTR] {
        set(nr, NoSys);
    }
    t.sort_unstable_by_key(|&(nr, _)| nr);
    t
}

/// `setxattrat(2)` (Linux 6.13; not in the `libc` crate yet).
const SYS_SETXATTRAT: u32 = 463;
/// `removexattrat(2)` (Linux 6.13).
const SYS_REMOVEXATTRAT: u32 = 466;
/// `file_setattr(2)` (Linux 6.17).
const SYS_FILE_SETATTR: u32 = 469;
/// `open_tree_attr(2)` (Linux 6.15; not in the `libc` crate yet): `open_tree` with mount
/// attributes, refused with the rest of the mount API.
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// Open flags that make an open a write-intent one (the gate's): `O_CREAT`, `O_TRUNC`,
/// `O_WRONLY`, `O_RDWR`, `O_APPEND`, and `O_TMPFILE`'s own bit (`O_TMPFILE` is that bit plus
/// `O_DIRECTORY`; a plain `O_DIRECTORY` open is a read). `O_EXCL` is not among them: without
/// `O_CREAT` it creates nothing, and with it `O_CREAT` is already set. `O_PATH` overrides all of
/// them (the kernel ignores every other flag but `O_CLOEXEC`, `O_DIRECTORY`, `O_NOFOLLOW`).
pub const WRITE_INTENT: u32 = (libc::O_CREAT
    | libc::O_TRUNC
    | libc::O_WRONLY
    | libc::O_RDWR
    | libc::O_APPEND
    | (libc::O_TMPFILE & !libc::O_DIRECTORY)) as u32;

/// Write-intent calls handed to the gate's supervisor whatever their arguments (path-, name- and
/// descriptor-based metadata calls; `bind` because a unix socket bind creates a name; `umask`
/// so the supervisor knows when a caller's umask changes, [`crate::fsgate`]). Not here:
/// `ftruncate`/`fallocate`/`write` (they need a descriptor open for writing, which the gate
/// judged when it was opened), and `creat`/`mkdir*`/`mknod*`/`*chmod*` (in [`GATED_MODE`]).
const GATED: &[libc::c_long] = &[
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rmdir,
    libc::SYS_truncate,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
    libc::SYS_utimensat,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    libc::SYS_bind,
    libc::SYS_umask,
];

/// Gated calls with a mode argument (its index): set-id bits are still refused in the filter.
const GATED_MODE: &[(libc::c_long, u32)] = &[
    (libc::SYS_creat, 1),
    (libc::SYS_mkdir, 1),
    (libc::SYS_mkdirat, 2),
    (libc::SYS_mknod, 1),
    (libc::SYS_mknodat, 2),
    (libc::SYS_chmod, 1),
    (libc::SYS_fchmod, 1),
    (libc::SYS_fchmodat, 2),
    (libc::SYS_fchmodat2, 2),
];

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
    SYS_OPEN_TREE_ATTR,
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

/// Calls that set a file mode, and the index of the mode argument. (`openat2` carries its mode in
/// memory and is answered `ENOSYS`.)
const MODE_ARGS: &[(libc::c_long, u32)] = &[
    (libc::SYS_chmod, 1),
    (libc::SYS_fchmod, 1),
    (libc::SYS_fchmodat, 2),
    (libc::SYS_fchmodat2, 2),
    (libc::SYS_open, 2),
    (libc::SYS_openat, 3),
    (libc::SYS_creat, 1),
    (libc::SYS_mknod, 1),
    (libc::SYS_mknodat, 2),
    (libc::SYS_mkdir, 1),
    (libc::SYS_mkdirat, 2),
];

/// Socket address families the command may create. Others are either not confined by the
/// network namespace (vsock reaches the hypervisor, bluetooth the radio) or not needed.
const ALLOWED_FAMILIES: &[u32] = &[
    libc::AF_UNIX as u32,
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
    libc::AF_NETLINK as u32,
];

/// Every namespace flag of `clone`.
const CLONE_NS_MASK: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32;

/// The set-user-ID and set-group-ID mode bits.
const SETID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

/// Terminal ioctls refused (input injection).
const DENIED_IOCTLS: &[u32] = &[libc::TIOCSTI as u32, libc::TIOCLINUX as u32];

// ---- assembler -----------------------------------------------------------------------------------

/// A jump target: a label, or the next instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    L(usize),
}

#[derive(Debug, Clone, Copy)]
enum Ins {
    Ld(u32),
    And(u32),
    Jmp(u16, u32, To, To),
    Ja(usize),
    Ret(u32),
    Label(usize),
}

#[derive(Default)]
struct Asm {
    code: Vec<Ins>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn bind(&mut self, l: usize) {
        self.code.push(Ins::Label(l));
    }
    fn ld(&mut self, off: u32) {
        self.code.push(Ins::Ld(off));
    }
    fn jmp(&mut self, op: u16, k: u32, jt: To, jf: To) {
        self.code.push(Ins::Jmp(op, k, jt, jf));
    }
    fn ret(&mut self, k: u32) {
        self.code.push(Ins::Ret(k));
    }

    /// Resolve labels into BPF offsets; every jump must be forward and within 255 instructions
    /// (`JA` within `u32`).
    fn finish(self) -> Result<Vec<libc::sock_filter>, SeccompError> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for ins in &self.code {
            match ins {
                Ins::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        for ins in &self.code {
            let here = out.len();
            let off = |to: To| -> Result<u8, SeccompError> {
                let target = match to {
                    To::Next => return Ok(0),
                    To::L(l) => at[l],
                };
                target
                    .checked_sub(here + 1)
                    .and_then(|d| u8::try_from(d).ok())
                    .ok_or_else(|| {
                        SeccompError::Assemble(format!("jump from {here} to {target} out of range"))
                    })
            };
            let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
            out.push(match *ins {
                Ins::Label(_) => continue,
                Ins::Ld(k) => f(BPF_LD_W_ABS, 0, 0, k),
                Ins::And(k) => f(BPF_ALU_AND_K, 0, 0, k),
                Ins::Jmp(op, k, jt, jf) => f(op, off(jt)?, off(jf)?, k),
                Ins::Ja(l) => {
                    let d = at[l].checked_sub(here + 1).ok_or_else(|| {
                        SeccompError::Assemble(format!("backward jump at {here}"))
                    })?;
                    f(BPF_JA, 0, 0, d as u32)
                }
                Ins::Ret(k) => f(BPF_RET_K, 0, 0, k),
            });
        }
        if out.len() > u16::MAX as usize {
            return Err(SeccompError::Assemble("program too long".into()));
        }
        Ok(out)
    }
}

/// Labels of the shared verdict blocks.
struct Exits {
    allow: usize,
    eperm: usize,
    enosys: usize,
    notify: usize,
    kill: usize,
}

/// Emit a binary search over `entries` (sorted by number); each number jumps to its block's
/// label, anything else to `allow`.
fn dispatch(a: &mut Asm, entries: &[(u32, usize)], allow: usize) {
    if entries.len() <= 3 {
        for (i, &(nr, l)) in entries.iter().enumerate() {
            let miss = if i + 1 == entries.len() {
                To::L(allow)
            } else {
                To::Next
            };
            a.jmp(BPF_JEQ_K, nr, To::L(l), miss);
        }
        if entries.is_empty() {
            a.code.push(Ins::Ja(allow));
        }
        return;
    }
    let mid = entries.len() / 2;
    let high = a.label();
    a.jmp(BPF_JGE_K, entries[mid].0, To::L(high), To::Next);
    dispatch(a, &entries[..mid], allow);
    a.bind(high);
    dispatch(a, &entries[mid..], allow);
}

/// Assemble the filter (see the module docs for what it decides).
pub fn program() -> Result<Vec<libc::sock_filter>, SeccompError> {
    program_from(&table())
}

/// Assemble the filter with the write gate: [`program`] plus every write-intent filesystem call
/// (and `bind`) handed to the supervisor ([`crate::fsgate`]). Install it with [`install_gated`].
pub fn program_with_gate() -> Result<Vec<libc::sock_filter>, SeccompError> {
    program_from(&gate_table())
}

/// The filter runs get: [`program_with_gate`] except that `mkdir`/`mkdirat` are not handed to
/// the supervisor. An empty directory runs nothing and redirects nothing: whatever would (a
/// hook, a config, a `HEAD`) is a file, a link or a rename, all still judged, and a directory
/// that gains an unjudged `.git` is probed afresh by the judge's root rule
/// (`stockade_policy::protect`). `npm ci` and `tar` call `mkdir` for every entry's directory
/// (9,147 calls, 8,598 of them `EEXIST`, in one `npm ci` of 4,703 files), so this halves the
/// round trips of a package install (bench/gate.py).
pub fn program_for_runs() -> Result<Vec<libc::sock_filter>, SeccompError> {
    program_from(&gate_table_for(false))
}

/// Assemble the filter for `table` (sorted by number): [`program`] with the policy's table; the
/// tests also build it from altered tables to show their check notices.
fn program_from(table: &[(u32, Verdict)]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut a = Asm::default();
    let x = Exits {
        allow: a.label(),
        eperm: a.label(),
        enosys: a.label(),
        notify: a.label(),
        kill: a.label(),
    };
    // One block per distinct verdict.
    let mut blocks: Vec<(Verdict, usize)> = Vec::new();
    let mut entries = Vec::with_capacity(table.len());
    for &(nr, v) in table {
        let l = match v {
            Verdict::Deny => x.eperm,
            Verdict::NoSys => x.enosys,
            Verdict::Notify => x.notify,
            _ => match blocks.iter().find(|(b, _)| *b == v) {
                Some(&(_, l)) => l,
                None => {
                    let l = a.label();
                    blocks.push((v, l));
                    l
                }
            },
        };
        entries.push((nr, l));
    }

    a.ld(OFF_ARCH);
    a.jmp(BPF_JEQ_K, AUDIT_ARCH_X86_64, To::Next, To::L(x.kill));
    a.ld(OFF_NR);
    a.jmp(BPF_JGE_K, X32_SYSCALL_BIT, To::L(x.kill), To::Next);
    dispatch(&mut a, &entries, x.allow);

    for (v, l) in blocks {
        a.bind(l);
        match v {
            Verdict::CloneFlags => {
                a.ld(off_arg(0));
                a.jmp(BPF_JSET_K, CLONE_NS_MASK, To::L(x.eperm), To::L(x.allow));
            }
            Verdict::Mode(i) => {
                a.ld(off_arg(i));
                a.jmp(BPF_JSET_K, SETID_BITS, To::L(x.eperm), To::L(x.allow));
            }
            Verdict::Ioctl => {
                a.ld(off_arg(1));
                for (j, &req) in DENIED_IOCTLS.iter().enumerate() {
                    let miss = if j + 1 == DENIED_IOCTLS.len() {
                        To::L(x.allow)
                    } else {
                        To::Next
                    };
                    a.jmp(BPF_JEQ_K, req, To::L(x.eperm), miss);
                }
            }
            Verdict::Socket => {
                let unix = a.label();
                a.ld(off_arg(0));
                a.jmp(BPF_JEQ_K, libc::AF_UNIX as u32, To::L(unix), To::Next);
                for (j, &fam) in ALLOWED_FAMILIES.iter().enumerate() {
                    let miss = if j + 1 == ALLOWED_FAMILIES.len() {
                        To::L(x.eperm)
                    } else {
                        To::Next
                    };
                    a.jmp(BPF_JEQ_K, fam, To::L(x.allow), miss);
                }
                a.bind(unix);
                a.ld(off_arg(1));
                a.code.push(Ins::And(0xf));
                a.jmp(BPF_JEQ_K, libc::SOCK_DGRAM as u32, To::L(x.eperm), To::Next);
                a.jmp(
                    BPF_JEQ_K,
                    libc::SOCK_RAW as u32,
                    To::L(x.eperm),
                    To::L(x.allow),
                );
            }
            Verdict::OpenFlags { flags, mode } => {
                a.ld(off_arg(mode));
                a.jmp(BPF_JSET_K, SETID_BITS, To::L(x.eperm), To::Next);
                a.ld(off_arg(flags));
                a.jmp(BPF_JSET_K, libc::O_PATH as u32, To::L(x.allow), To::Next);
                a.jmp(BPF_JSET_K, WRITE_INTENT, To::L(x.notify), To::L(x.allow));
            }
            Verdict::ModeNotify(i) => {
                a.ld(off_arg(i));
                a.jmp(BPF_JSET_K, SETID_BITS, To::L(x.eperm), To::L(x.notify));
            }
            Verdict::Deny | Verdict::NoSys | Verdict::Notify => {}
        }
    }
    a.bind(x.allow);
    a.ret(SECCOMP_RET_ALLOW);
    a.bind(x.eperm);
    a.ret(SECCOMP_RET_ERRNO | libc::EPERM as u32);
    a.bind(x.enosys);
    a.ret(SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    a.bind(x.notify);
    a.ret(SECCOMP_RET_USER_NOTIF);
    a.bind(x.kill);
    a.ret(SECCOMP_RET_KILL_PROCESS);
    a.finish()
}

/// Install `prog` on the calling thread and return the notification listener for `connect`.
/// Requires `no_new_privs` (or `CAP_SYS_ADMIN`). Assemble with [`program`] before forking.
pub fn install(prog: &[libc::sock_filter]) -> Result<OwnedFd, SeccompError> {
    install_flags(prog, 0)
}

fn install_flags(prog: &[libc::sock_filter], extra: u32) -> Result<OwnedFd, SeccompError> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len())
            .map_err(|_| SeccompError::Assemble("program too long".into()))?,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, a valid BPF program that outlives the call; the kernel
    // copies it. The flag asks for a listener descriptor as the return value.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_SPEC_ALLOW | extra,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(SysError {
            call: "seccomp",
            what: "SECCOMP_SET_MODE_FILTER".into(),
            source: std::io::Error::last_os_error(),
        }
        .into());
    }
    // SAFETY: on success the kernel returned a new listener descriptor owned by this process.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19): once the supervisor has received a
/// notification, only a fatal signal interrupts the caller's wait, so a handled signal can never
/// restart a call the supervisor is performing (or has performed).
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;

/// The kernel lacks what the write gate needs.
#[derive(Debug, thiserror::Error)]
#[error("the write gate needs {feature} (Linux {since}); this kernel refused it ({source}); the protected names are enforced by the launch-time walk instead")]
pub struct GateUnsupported {
    /// The missing feature.
    pub feature: &'static str,
    /// The first kernel release that has it.
    pub since: &'static str,
    /// The kernel's answer.
    #[source]
    pub source: std::io::Error,
}

/// Does this kernel support what [`install_gated`] needs (user notification with a listener,
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, and — implied by the latter, 5.19 —
/// `SECCOMP_ADDFD_FLAG_SEND`, 5.14)? Asks without installing anything: the flags are validated
/// before the (here NULL) program is read, so an unknown flag answers `EINVAL` and a known one
/// `EFAULT`.
pub fn gate_supported() -> Result<(), GateUnsupported> {
    let flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    // SAFETY: a NULL program pointer: the kernel validates `flags` and then fails to copy the
    // program (EFAULT); nothing is installed either way.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    let err = std::io::Error::last_os_error();
    match (ret, err.raw_os_error()) {
        (r, Some(libc::EFAULT)) if r < 0 => Ok(()),
        _ => Err(GateUnsupported {
            feature: "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
            since: "5.19",
            source: err,
        }),
    }
}

/// Install `prog` (from [`program_with_gate`]) like [`install`], with
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`. A kernel without it fails with
/// [`SeccompError::Unsupported`] (check first with [`gate_supported`], before forking).
pub fn install_gated(prog: &[libc::sock_filter]) -> Result<OwnedFd, SeccompError> {
    gate_supported().map_err(SeccompError::Unsupported)?;
    install_flags(prog, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
}

/// Assemble and install the filter (for callers that do not need to assemble before a fork).
pub fn install_filter() -> Result<OwnedFd, SeccompError> {
    install(&program()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a classic BPF program over `seccomp_data`, as the kernel would.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        trace(prog, arch, nr, args).0
    }

    /// [`run`], also counting the instructions executed before the first argument is loaded (or
    /// the verdict, if none is): the part the kernel emulates per syscall number to build its
    /// allow-bitmap.
    fn trace(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for a in args {
            data.extend_from_slice(&a.to_le_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        let (mut steps, mut before_args) = (0usize, None);
        loop {
            let i = prog[pc];
            pc += 1;
            steps += 1;
            let jump = |cond: bool| if cond { i.jt } else { i.jf } as usize;
            match i.code {
                BPF_LD_W_ABS => {
                    let k = i.k as usize;
                    if k >= off_arg(0) as usize {
                        before_args.get_or_insert(steps);
                    }
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                BPF_ALU_AND_K => acc &= i.k,
                BPF_JA => pc += i.k as usize,
                BPF_JEQ_K => pc += jump(acc == i.k),
                BPF_JGE_K => pc += jump(acc >= i.k),
                BPF_JSET_K => pc += jump(acc & i.k != 0),
                BPF_RET_K => return (i.k, before_args.unwrap_or(steps)),
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    const ALLOW: u32 = SECCOMP_RET_ALLOW;
    const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    /// The policy stated again by hand, independently of the tables the filter is built from
    /// (`DENIED`, `MODE_ARGS`, `ALLOWED_FAMILIES`, ...): editing one of those without editing
    /// this makes [`first_mismatch`] report the difference.
    fn expected(nr: libc::c_long, args: [u64; 6]) -> u32 {
        use libc::*;
        let lo = |i: usize| args[i] as u32;
        let denied = [
            SYS_unshare,
            SYS_setns,
            SYS_mount,
            SYS_umount2,
            SYS_pivot_root,
            SYS_fsopen,
            SYS_fsconfig,
            SYS_fsmount,
            SYS_fspick,
            SYS_move_mount,
            SYS_open_tree,
            467, // open_tree_attr
            SYS_mount_setattr,
            SYS_keyctl,
            SYS_add_key,
            SYS_request_key,
            SYS_bpf,
            SYS_perf_event_open,
            SYS_userfaultfd,
            SYS_io_uring_setup,
            SYS_io_uring_enter,
            SYS_io_uring_register,
            SYS_init_module,
            SYS_finit_module,
            SYS_delete_module,
            SYS_kexec_load,
            SYS_kexec_file_load,
            SYS_reboot,
            SYS_swapon,
            SYS_swapoff,
            SYS_acct,
            SYS_settimeofday,
            SYS_clock_settime,
            SYS_clock_adjtime,
            SYS_adjtimex,
            SYS_iopl,
            SYS_ioperm,
            SYS_quotactl,
            SYS_open_by_handle_at,
            SYS_name_to_handle_at,
            SYS_lookup_dcookie,
            SYS_vhangup,
            SYS_syslog,
            SYS_fanotify_init,
            SYS_pidfd_getfd,
            SYS_process_madvise,
        ];
        // (call, index of its mode argument): no set-user-ID (0o4000) or set-group-ID (0o2000).
        let modes = [
            (SYS_chmod, 1),
            (SYS_fchmod, 1),
            (SYS_fchmodat, 2),
            (SYS_fchmodat2, 2),
            (SYS_open, 2),
            (SYS_openat, 3),
            (SYS_creat, 1),
            (SYS_mknod, 1),
            (SYS_mknodat, 2),
            (SYS_mkdir, 1),
            (SYS_mkdirat, 2),
        ];
        let namespaces = [
            CLONE_NEWUSER,
            CLONE_NEWNS,
            CLONE_NEWPID,
            CLONE_NEWNET,
            CLONE_NEWIPC,
            CLONE_NEWUTS,
            CLONE_NEWCGROUP,
        ];
        if denied.contains(&nr) {
            return self::EPERM;
        }
        match nr {
            libc::SYS_connect => SECCOMP_RET_USER_NOTIF,
            libc::SYS_clone3 | libc::SYS_openat2 => self::ENOSYS,
            libc::SYS_clone if namespaces.iter().any(|&f| lo(0) & f as u32 != 0) => self::EPERM,
            libc::SYS_ioctl if lo(1) == TIOCSTI as u32 || lo(1) == TIOCLINUX as u32 => self::EPERM,
            libc::SYS_socket | libc::SYS_socketpair => {
                let fam = lo(0) as i32;
                let ty = (lo(1) & 0xf) as i32;
                match fam {
                    AF_UNIX if ty == SOCK_DGRAM || ty == SOCK_RAW => self::EPERM,
                    AF_UNIX | AF_INET | AF_INET6 | AF_NETLINK => self::ALLOW,
                    _ => self::EPERM,
                }
            }
            _ => match modes.iter().find(|(n, _)| *n == nr) {
                Some(&(_, i)) if lo(i) & 0o6000 != 0 => self::EPERM,
                _ => self::ALLOW,
            },
        }
    }

    /// The first syscall number and argument sample on which `prog` and [`expected`] disagree.
    fn first_mismatch(prog: &[libc::sock_filter], samples: &[[u64; 6]]) -> Option<String> {
        for nr in 0..600u32 {
            for args in samples {
                let (got, want) = (
                    run(prog, AUDIT_ARCH_X86_64, nr, *args),
                    expected(nr as libc::c_long, *args),
                );
                if got != want {
                    return Some(format!(
                        "syscall {nr} args {args:x?}: filter {got:#x}, stated {want:#x}"
                    ));
                }
            }
        }
        None
    }

    fn arg_samples() -> Vec<[u64; 6]> {
        let mut v = vec![[0u64; 6]];
        let interesting: Vec<u64> = [
            libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWNET as u64 | libc::SIGCHLD as u64,
            libc::CLONE_NEWCGROUP as u64,
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND) as u64,
            libc::CLONE_THREAD as u64 | libc::CLONE_SETTLS as u64,
            libc::TIOCSTI,
            libc::TIOCLINUX,
            libc::TIOCGWINSZ,
            libc::TIOCSTI | 0xffff_ffff_0000_0000,
            libc::AF_UNIX as u64,
            libc::AF_INET as u64,
            libc::AF_INET6 as u64,
            libc::AF_NETLINK as u64,
            libc::AF_VSOCK as u64,
            libc::AF_PACKET as u64,
            libc::SOCK_STREAM as u64,
            libc::SOCK_DGRAM as u64,
            libc::SOCK_RAW as u64,
            libc::SOCK_SEQPACKET as u64,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64,
            (libc::SOCK_STREAM | libc::SOCK_NONBLOCK) as u64,
            0o4755,
            0o2755,
            0o6777,
            0o755,
            0o644 | (1 << 40),
            0o1777,
        ]
        .to_vec();
        for arg in 0..4 {
            for &val in &interesting {
                let mut a = [0u64; 6];
                a[arg] = val;
                v.push(a);
            }
        }
        // socket(family, type) pairs
        for &fam in &interesting[9..15] {
            for &ty in &interesting[15..21] {
                v.push([fam, ty, 0, 0, 0, 0]);
            }
        }
        v
    }

    #[test]
    fn every_syscall_and_argument_gets_the_stated_verdict() {
        let prog = program().expect("assembles");
        assert_eq!(first_mismatch(&prog, &arg_samples()), None);
    }

    /// The check above can fail: a filter built from the table with any one entry removed (e.g.
    /// `bpf` no longer refused) disagrees with the hand-written statement.
    #[test]
    fn a_filter_missing_any_table_entry_fails_the_check() {
        let samples = arg_samples();
        let full = table();
        let bpf = full
            .iter()
            .position(|&(nr, _)| nr == libc::SYS_bpf as u32)
            .expect("bpf is in the table");
        let mut without_bpf = full.clone();
        without_bpf.remove(bpf);
        let prog = program_from(&without_bpf).expect("assembles");
        let why = first_mismatch(&prog, &samples).expect("bpf's removal is noticed");
        assert!(
            why.starts_with(&format!("syscall {} ", libc::SYS_bpf)),
            "{why}"
        );
        for i in 0..full.len() {
            let mut t = full.clone();
            let (nr, v) = t.remove(i);
            let prog = program_from(&t).expect("assembles");
            assert!(
                first_mismatch(&prog, &samples).is_some(),
                "removing syscall {nr} ({v:?}) from the table went unnoticed"
            );
        }
    }

    const NOTIFY: u32 = SECCOMP_RET_USER_NOTIF;

    /// The write gate's policy stated by hand: [`expected`], except that these calls go to the
    /// supervisor (set-id modes still refused), write-intent opens go to the supervisor, and the
    /// `*xattrat` / `file_setattr` calls are `ENOSYS`.
    fn expected_with_gate(nr: libc::c_long, args: [u64; 6]) -> u32 {
        use libc::*;
        let lo = |i: usize| args[i] as u32;
        let setid = |i: usize| lo(i) & 0o6000 != 0;
        let always = [
            SYS_symlink,
            SYS_symlinkat,
            SYS_link,
            SYS_linkat,
            SYS_rename,
            SYS_renameat,
            SYS_renameat2,
            SYS_unlink,
            SYS_unlinkat,
            SYS_rmdir,
            SYS_truncate,
            SYS_chown,
            SYS_lchown,
            SYS_fchown,
            SYS_fchownat,
            SYS_utime,
            SYS_utimes,
            SYS_futimesat,
            SYS_utimensat,
            SYS_setxattr,
            SYS_lsetxattr,
            SYS_fsetxattr,
            SYS_removexattr,
            SYS_lremovexattr,
            SYS_fremovexattr,
            SYS_bind,
            SYS_umask,
        ];
        let with_mode = [
            (SYS_creat, 1),
            (SYS_mkdir, 1),
            (SYS_mkdirat, 2),
            (SYS_mknod, 1),
            (SYS_mknodat, 2),
            (SYS_chmod, 1),
            (SYS_fchmod, 1),
            (SYS_fchmodat, 2),
            (SYS_fchmodat2, 2),
        ];
        // open-family flags that mean "may write or create" (0o20000000 is O_TMPFILE's own bit).
        let write = |f: u32| {
            f & O_PATH as u32 == 0
                && f & (O_CREAT | O_TRUNC | O_WRONLY | O_RDWR | O_APPEND | 0o20000000) as u32 != 0
        };
        if always.contains(&nr) {
            return NOTIFY;
        }
        if let Some(&(_, i)) = with_mode.iter().find(|(n, _)| *n == nr) {
            return if setid(i) { self::EPERM } else { NOTIFY };
        }
        match nr {
            463 | 466 | 469 => self::ENOSYS,
            libc::SYS_open if !setid(2) && write(lo(1)) => NOTIFY,
            libc::SYS_openat if !setid(3) && write(lo(2)) => NOTIFY,
            _ => expected(nr, args),
        }
    }

    fn first_gate_mismatch(prog: &[libc::sock_filter], samples: &[[u64; 6]]) -> Option<String> {
        for nr in 0..600u32 {
            for args in samples {
                let (got, want) = (
                    run(prog, AUDIT_ARCH_X86_64, nr, *args),
                    expected_with_gate(nr as libc::c_long, *args),
                );
                if got != want {
                    return Some(format!(
                        "syscall {nr} args {args:x?}: filter {got:#x}, stated {want:#x}"
                    ));
                }
            }
        }
        None
    }

    /// [`arg_samples`] plus open flags (alone and with modes) at the flags positions of `open`
    /// and `openat`.
    fn gate_samples() -> Vec<[u64; 6]> {
        use libc::*;
        let mut v = arg_samples();
        let flags = [
            O_RDONLY,
            O_RDONLY | O_CLOEXEC,
            O_RDONLY | O_DIRECTORY,
            O_RDONLY | O_EXCL,
            O_RDONLY | O_NOFOLLOW | O_NONBLOCK,
            O_WRONLY,
            O_RDWR,
            O_WRONLY | O_EXCL,
            O_RDONLY | O_TRUNC,
            O_RDONLY | O_APPEND,
            O_CREAT,
            O_CREAT | O_EXCL,
            O_TMPFILE | O_RDWR,
            O_TMPFILE & !O_DIRECTORY,
            O_PATH,
            O_PATH | O_CREAT | O_WRONLY | O_TRUNC,
            O_ACCMODE,
        ];
        for &f in &flags {
            for mode in [0u64, 0o644, 0o4755, 0o2700] {
                v.push([f as u64, mode, 0, 0, 0, 0]);
                v.push([0, f as u64, mode, 0, 0, 0]);
                v.push([0, 0, f as u64, mode, 0, 0]);
                v.push([0, f as u64 | (1 << 40), mode, 0, 0, 0]);
            }
        }
        v
    }

    #[test]
    fn the_gate_filter_gets_the_stated_verdicts() {
        let prog = program_with_gate().expect("assembles");
        assert_eq!(first_gate_mismatch(&prog, &gate_samples()), None);
        assert!(prog.len() < 200, "{} instructions", prog.len());
        let worst = (0..470u32)
            .map(|nr| trace(&prog, AUDIT_ARCH_X86_64, nr, [0; 6]).1)
            .max()
            .unwrap_or(0);
        assert!(worst <= 20, "worst dispatch path {worst}");
    }

    /// The gate check can fail: removing any entry of the gate table, or turning the open rule
    /// into plain notification, or dropping one write-intent bit, is noticed.
    #[test]
    fn an_altered_gate_filter_fails_the_check() {
        let samples = gate_samples();
        let full = gate_table();
        for i in 0..full.len() {
            let mut t = full.clone();
            let (nr, v) = t.remove(i);
            let prog = program_from(&t).expect("assembles");
            assert!(
                first_gate_mismatch(&prog, &samples).is_some(),
                "removing syscall {nr} ({v:?}) from the gate table went unnoticed"
            );
        }
        let openat = libc::SYS_openat as u32;
        let mut t = full.clone();
        for e in t.iter_mut().filter(|e| e.0 == openat) {
            e.1 = Verdict::Notify;
        }
        let why = first_gate_mismatch(&program_from(&t).expect("assembles"), &samples)
            .expect("read-only openat notified is noticed");
        assert!(why.starts_with(&format!("syscall {openat} ")), "{why}");
        let mut t = full.clone();
        for e in t.iter_mut().filter(|e| e.0 == openat) {
            e.1 = Verdict::Mode(3);
        }
        assert!(first_gate_mismatch(&program_from(&t).expect("assembles"), &samples).is_some());
        // The ungated program fails the gate statement (e.g. mkdir is not notified).
        assert!(first_gate_mismatch(&program().expect("assembles"), &samples).is_some());
    }

    /// The runs' filter: every syscall number and a spread of arguments get the gate filter's
    /// verdict, except `mkdir`/`mkdirat`, which get the ungated filter's (set-id modes refused,
    /// otherwise allowed; never notified).
    #[test]
    fn the_runs_filter_is_the_gate_filter_without_mkdir() {
        let runs = program_for_runs().expect("assembles");
        let gate = program_with_gate().expect("assembles");
        let plain = program().expect("assembles");
        let args: [[u64; 6]; 5] = [
            [0; 6],
            [0, 0o4755, 0o4755, 0, 0, 0],
            [0, 0o755, 0o755, 0, 0, 0],
            [0, libc::O_WRONLY as u64, libc::O_CREAT as u64, 0o644, 0, 0],
            [libc::AT_FDCWD as u64, 0, libc::O_RDONLY as u64, 0, 0, 0],
        ];
        let mkdirs = [libc::SYS_mkdir as u32, libc::SYS_mkdirat as u32];
        for nr in 0..470u32 {
            for a in args {
                let want = if mkdirs.contains(&nr) {
                    run(&plain, AUDIT_ARCH_X86_64, nr, a)
                } else {
                    run(&gate, AUDIT_ARCH_X86_64, nr, a)
                };
                assert_eq!(
                    run(&runs, AUDIT_ARCH_X86_64, nr, a),
                    want,
                    "syscall {nr} {a:?}"
                );
            }
        }
        for nr in mkdirs {
            let mode = if nr == libc::SYS_mkdir as u32 { 1 } else { 2 };
            let mut a = [0u64; 6];
            a[mode] = 0o755;
            assert_eq!(run(&runs, AUDIT_ARCH_X86_64, nr, a), ALLOW);
            a[mode] = 0o2755;
            assert_eq!(
                run(&runs, AUDIT_ARCH_X86_64, nr, a),
                SECCOMP_RET_ERRNO | libc::EPERM as u32
            );
        }
    }

    /// Hole #1 of the earlier attempt: `O_EXCL` without `O_CREAT`, with a write access mode,
    /// is a write (notified); `O_EXCL` alone with `O_RDONLY` is a read (allowed).
    #[test]
    fn o_excl_is_classified_by_the_other_bits() {
        let prog = program_with_gate().expect("assembles");
        let at = |flags: i32| {
            run(
                &prog,
                AUDIT_ARCH_X86_64,
                libc::SYS_openat as u32,
                [0, 0, flags as u64, 0, 0, 0],
            )
        };
        assert_eq!(at(libc::O_WRONLY | libc::O_EXCL), NOTIFY);
        assert_eq!(at(libc::O_RDWR | libc::O_EXCL | libc::O_NOFOLLOW), NOTIFY);
        assert_eq!(at(libc::O_CREAT | libc::O_EXCL), NOTIFY);
        assert_eq!(at(libc::O_RDONLY | libc::O_EXCL), ALLOW);
        assert_eq!(at(libc::O_PATH | libc::O_WRONLY), ALLOW);
        assert_eq!(at(libc::O_TMPFILE | libc::O_WRONLY), NOTIFY);
        assert_eq!(at(libc::O_DIRECTORY), ALLOW);
    }

    #[test]
    fn foreign_abis_are_killed() {
        let prog = program().expect("assembles");
        const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
        for nr in [0, 1, 11, 59, 120, 500] {
            assert_eq!(
                run(&prog, AUDIT_ARCH_I386, nr, [0; 6]),
                SECCOMP_RET_KILL_PROCESS
            );
            assert_eq!(
                run(&prog, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT, [0; 6]),
                SECCOMP_RET_KILL_PROCESS
            );
        }
    }

    #[test]
    fn program_is_short_and_dispatch_is_shallow() {
        let prog = program().expect("assembles");
        assert!(prog.len() < 160, "{} instructions", prog.len());
        // Instructions executed for a syscall before its verdict or its first argument test.
        let worst = (0..460u32)
            .map(|nr| trace(&prog, AUDIT_ARCH_X86_64, nr, [0; 6]).1)
            .max()
            .unwrap_or(0);
        assert!(worst <= 20, "worst dispatch path {worst}");
    }

    #[test]
    fn out_of_range_jumps_are_errors_not_wraparounds() {
        let mut a = Asm::default();
        let far = a.label();
        a.jmp(BPF_JEQ_K, 0, To::L(far), To::Next);
        for _ in 0..300 {
            a.ret(SECCOMP_RET_ALLOW);
        }
        a.bind(far);
        a.ret(SECCOMP_RET_KILL_PROCESS);
        assert!(matches!(a.finish(), Err(SeccompError::Assemble(_))));
    }
}
