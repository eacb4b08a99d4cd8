//! The child side: install the gate, hand over the listener, run one scenario. Every
//! operation is a raw libc call (what a sandboxed program does); each prints `label=errno`.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use stockade_sys::{seccomp, sockets};

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Print `label=0` or `label=<errno>` for a C return value.
pub fn r(label: &str, ret: i64) -> i64 {
    println!("{label}={}", if ret < 0 { errno() } else { 0 });
    ret
}

/// [`r`] for a call returning a descriptor, which is then closed.
pub fn ro(label: &str, fd: i32) {
    r(label, fd.into());
    if fd >= 0 {
        // SAFETY: closing the descriptor just returned.
        unsafe { libc::close(fd) };
    }
}

pub fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL")
}

pub fn cb(b: &[u8]) -> CString {
    CString::new(b).expect("no NUL")
}

/// Install the filter as the parent asked, send the listener on descriptor 3, run `scenario`.
pub fn main(scenario: &str) -> ! {
    let ws = PathBuf::from(std::env::var_os("FSGATE_WS").expect("FSGATE_WS"));
    stockade_sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "no_new_privs").expect("nnp");
    if std::env::var("FSGATE_INSTALL").as_deref() == Ok("none") {
        stockade_sys::close_raw(3);
        super::traps::child(scenario, &ws);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        stockade_sys::exit_now(0)
    }
    let prog = seccomp::program_with_gate().expect("assemble");
    let listener = if std::env::var("FSGATE_INSTALL").as_deref() == Ok("plain") {
        seccomp::install(&prog)
    } else {
        seccomp::install_gated(&prog)
    }
    .expect("install the gate filter");
    sockets::send_fd(3, listener.as_raw_fd()).expect("send listener");
    drop(listener);
    stockade_sys::close_raw(3);
    match scenario {
        "calls" => super::calls::child(&ws),
        other => super::traps::child(other, &ws),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    stockade_sys::exit_now(0)
}
