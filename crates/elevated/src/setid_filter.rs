//! A narrow seccomp filter for the broker's child: no set-user-ID / set-group-ID bits.
//!
//! Why the elevated tier needs it: the sandbox process holds identities other local users lack
//! (the sandbox uid, the caller's grant group). If it could create a set-id executable, any user
//! running it *outside* the sandbox (without no_new_privs) would gain that identity and the ACL
//! grants attached to it. So every syscall that sets a mode is refused with `EPERM` when the
//! mode carries `S_ISUID` or `S_ISGID`:
//! `chmod`, `fchmod`, `fchmodat`, `fchmodat2`, `open`, `openat`, `creat`, `mkdir`, `mkdirat`,
//! `mknod`, `mknodat`. Syscalls whose mode the filter cannot inspect, or that bypass seccomp,
//! fail with `ENOSYS`, so callers fall back to the inspectable ones: `openat2` (mode inside a
//! struct) and `io_uring_setup` (io_uring ops are not seen by seccomp). x32 syscall numbers and
//! non-x86_64 ABIs (i386 `int 0x80`) are refused.
//!
//! It is installed in the command on top of the general seccomp layer
//! ([`stockade_linux::seccomp::install_filter`], see [`crate::runner`]), which refuses set-id
//! modes on most of these calls too; this filter also covers `mkdir`/`mkdirat` and closes the
//! escape specific to running as a shared, privileged-by-ACL identity on its own.

/// One BPF instruction.
pub type Insn = libc::sock_filter;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_BIT: u32 = 0x4000_0000;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i // low 32 bits of args[i] (little endian)
}
const SETID: u32 = libc::S_ISUID | libc::S_ISGID;

/// (syscall number, index of its mode argument).
pub fn mode_syscalls() -> Vec<(u32, u32)> {
    vec![
        (libc::SYS_chmod as u32, 1),
        (libc::SYS_fchmod as u32, 1),
        (libc::SYS_fchmodat as u32, 2),
        (libc::SYS_fchmodat2 as u32, 2),
        (libc::SYS_open as u32, 2),
        (libc::SYS_openat as u32, 3),
        (libc::SYS_creat as u32, 1),
        (libc::SYS_mkdir as u32, 1),
        (libc::SYS_mkdirat as u32, 2),
        (libc::SYS_mknod as u32, 1),
        (libc::SYS_mknodat as u32, 2),
    ]
}

/// Syscalls refused outright with `ENOSYS`.
pub fn refused_syscalls() -> Vec<u32> {
    vec![libc::SYS_openat2 as u32, libc::SYS_io_uring_setup as u32]
}

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// Builds the program. Pure.
///
/// Layout: arch check; load nr; x32 check; for each refused nr: `jeq → ENOSYS`; for each mode
/// syscall: `jeq → its arg check`; `ALLOW`; then per mode syscall: load arg, `jset SETID → EPERM`,
/// `ALLOW`; then the shared return blocks.
pub fn program() -> Vec<Insn> {
    let modes = mode_syscalls();
    let refused = refused_syscalls();
    // Indices (computed): header 5, dispatch len(refused)+len(modes), allow 1, checks 3 each,
    // then EPERM, ENOSYS.
    let header = 5usize;
    let dispatch_start = header;
    let dispatch_len = refused.len() + modes.len();
    let allow_idx = dispatch_start + dispatch_len;
    let checks_start = allow_idx + 1;
    let eperm_idx = checks_start + 3 * modes.len();
    let enosys_idx = eperm_idx + 1;
    let rel = |from: usize, to: usize| -> u8 { (to - from - 1) as u8 };

    let mut p = Vec::with_capacity(enosys_idx + 1);
    p.push(ins(LD_W_ABS, 0, 0, OFF_ARCH)); // 0
    p.push(ins(JEQ_K, 0, rel(1, eperm_idx), AUDIT_ARCH_X86_64)); // 1: other ABI → EPERM
    p.push(ins(LD_W_ABS, 0, 0, OFF_NR)); // 2
    p.push(ins(JGE_K, rel(3, enosys_idx), 0, X32_BIT)); // 3: x32 → ENOSYS
    p.push(ins(JEQ_K, 0, 0, u32::MAX)); // 4: no-op keeps the header a fixed size
    for (i, nr) in refused.iter().enumerate() {
        let at = dispatch_start + i;
        p.push(ins(JEQ_K, rel(at, enosys_idx), 0, *nr));
    }
    for (i, (nr, _)) in modes.iter().enumerate() {
        let at = dispatch_start + refused.len() + i;
        p.push(ins(JEQ_K, rel(at, checks_start + 3 * i), 0, *nr));
    }
    p.push(ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW)); // allow_idx
    for (i, (_, arg)) in modes.iter().enumerate() {
        let at = checks_start + 3 * i;
        p.push(ins(LD_W_ABS, 0, 0, off_arg(*arg)));
        p.push(ins(JSET_K, rel(at + 1, eperm_idx), 0, SETID));
        p.push(ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    }
    p.push(ins(
        RET_K,
        0,
        0,
        libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    )); // eperm_idx
    p.push(ins(
        RET_K,
        0,
        0,
        libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    )); // enosys_idx
    p
}

/// Installs `prog` on the calling thread (child side; requires no_new_privs). No allocation.
pub fn install(prog: &[Insn]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut Insn,
    };
    // SAFETY: `fprog` points to `prog`, a valid BPF program that outlives the call; the kernel
    // copies it.
    crate::sys::cvt(unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn jumps_stay_in_bounds() {
        let p = program();
        assert!(p.len() < 256);
        for (i, x) in p.iter().enumerate() {
            if x.code & 0x07 == 0x05 {
                assert!(
                    i + 1 + (x.jt as usize) < p.len() && i + 1 + (x.jf as usize) < p.len(),
                    "insn {i}"
                );
            }
        }
        assert_eq!(
            p.last().map(|x| x.k),
            Some(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32)
        );
    }

    #[test]
    fn filter_blocks_setid_bits_only() {
        let dir = std::env::temp_dir().join(format!("stockade-setid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prog = program();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.current_dir(&dir).args([
            "-c",
            "touch f && chmod 755 f && echo PLAIN-OK; chmod u+s f && echo SETUID; chmod g+s f && echo SETGID; \
             mkdir d && chmod 2775 d && echo SETGID-DIR; echo done",
        ]);
        // SAFETY: the closure runs in the forked child: two raw prctl calls via the helpers, on
        // `prog`, which the closure owns.
        unsafe {
            cmd.pre_exec(move || {
                crate::sys::child::no_new_privs()?;
                install(&prog)
            });
        }
        let out = cmd.output().unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(s.contains("PLAIN-OK") && s.contains("done"), "{s}");
        assert!(!s.contains("SETUID") && !s.contains("SETGID"), "{s}");
    }
}
