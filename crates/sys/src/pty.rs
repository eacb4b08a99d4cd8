//! Pseudo-terminal for interactive commands (`stockade run --pty`).
//!
//! The master stays with stockade on the host; the command gets the slave as stdin/stdout/stderr
//! and as its controlling terminal in a session of its own. The caller's real terminal is put in
//! raw mode for the run and restored afterwards, and window-size changes are copied to the pty.
//! The command's controlling terminal is the pty, never the caller's terminal, so `TIOCSTI` (also
//! refused by seccomp) could only ever inject into its own input.

use crate::SysError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The master side of a pty (the host's end).
pub struct Pty {
    /// Master side (host).
    pub master: OwnedFd,
}

fn fail(call: &'static str) -> SysError {
    SysError {
        call,
        what: "pty".into(),
        source: std::io::Error::last_os_error(),
    }
}

impl Pty {
    /// Open a new pty in the current mount namespace's `/dev/ptmx` (inside the sandbox, so the
    /// command's terminal has a name under its own `/dev/pts`); returns master and slave.
    pub fn open() -> Result<(OwnedFd, OwnedFd), SysError> {
        // SAFETY: open with a constant path and flags; the result is checked.
        let m = unsafe {
            libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if m < 0 {
            return Err(fail("open(/dev/ptmx)"));
        }
        // SAFETY: `m` was just returned and is owned here.
        let master = unsafe { OwnedFd::from_raw_fd(m) };
        // SAFETY: unlockpt on an open master descriptor.
        if unsafe { libc::unlockpt(master.as_raw_fd()) } < 0 {
            return Err(fail("unlockpt"));
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: `name` is a writable buffer of the length passed.
        if unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) } != 0 {
            return Err(fail("ptsname_r"));
        }
        // SAFETY: ptsname_r wrote a NUL-terminated path into `name`.
        let s = unsafe {
            libc::open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if s < 0 {
            return Err(fail("open(pts)"));
        }
        // SAFETY: `s` was just returned and is owned here.
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        Ok((master, slave))
    }

    /// Copy the window size of `from` (if it is a terminal) to the pty.
    pub fn copy_size(&self, from: RawFd) {
        // SAFETY: winsize is plain data; zeroed is valid storage.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize into `ws`; failure (not a tty) is handled.
        if unsafe { libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) } == 0 {
            // SAFETY: TIOCSWINSZ reads `ws`, a valid winsize.
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
    }
}

/// In the command (after fork, before exec): make the slave its stdio and controlling terminal.
/// The caller must already be a session leader.
pub fn attach_slave(slave: RawFd) -> Result<(), SysError> {
    for target in 0..3 {
        crate::dup2(slave, target)?;
    }
    // SAFETY: TIOCSCTTY with argument 0 on our own terminal; the session has no terminal yet.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(fail("ioctl(TIOCSCTTY)"));
    }
    Ok(())
}

/// The caller's terminal in raw mode until dropped.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Put `fd` in raw mode if it is a terminal.
    pub fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: termios is plain data; zeroed is valid storage for tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr fills `saved`; failure means not a terminal.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: tcsetattr reads `raw`, a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the termios read in `enter`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Is `fd` a terminal?
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only queries the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}
