//! ConPTY for `--pty`: a pseudo console whose input and output Stockade pumps from and to its
//! own stdin and stdout.

use super::pipe::{anonymous, PipeError};
use super::{check, Ret, Win32Error};
use std::io::{Read, Write};
use std::os::windows::io::AsRawHandle;
use windows_sys::Win32::System::Console::{
    ClosePseudoConsole, CreatePseudoConsole, GetConsoleScreenBufferInfo, GetStdHandle,
    CONSOLE_SCREEN_BUFFER_INFO, COORD, HPCON, STD_OUTPUT_HANDLE,
};

/// Why the pseudo console could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// Its pipes could not be created.
    #[error("cannot create the pseudo console's pipes: {0}")]
    Pipe(#[from] PipeError),
    /// `CreatePseudoConsole` failed (Windows 10 1809 or later is required).
    #[error("cannot create a pseudo console (needs Windows 10 1809 or later): {0}")]
    Create(#[source] Win32Error),
}

/// A pseudo console and the pumps that connect it to Stockade's stdio.
pub struct Pty {
    hpc: HPCON,
    output: Option<std::thread::JoinHandle<()>>,
}

fn console_size() -> COORD {
    // SAFETY: GetStdHandle only reads the process's standard handle table.
    let out = unsafe { GetStdHandle(STD_OUTPUT_HANDLE) };
    // SAFETY: plain data; all-zero is valid.
    let mut info: CONSOLE_SCREEN_BUFFER_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: `out` may not be a console; then the call fails and the default size is used.
    let ok = unsafe { GetConsoleScreenBufferInfo(out, &mut info) };
    if ok != 0 {
        let w = info.srWindow.Right - info.srWindow.Left + 1;
        let h = info.srWindow.Bottom - info.srWindow.Top + 1;
        if w > 0 && h > 0 {
            return COORD { X: w, Y: h };
        }
    }
    COORD { X: 80, Y: 25 }
}

impl Pty {
    /// Creates the pseudo console and starts pumping stdin into it and its output to stdout.
    pub fn new() -> Result<Pty, PtyError> {
        let (in_read, in_write) = anonymous()?;
        let (out_read, out_write) = anonymous()?;
        let mut hpc: HPCON = 0;
        // SAFETY: both pipe ends are valid handles; `hpc` is a valid out pointer.
        let hr = unsafe {
            CreatePseudoConsole(
                console_size(),
                in_read.as_raw_handle(),
                out_write.as_raw_handle(),
                0,
                &mut hpc,
            )
        };
        check("CreatePseudoConsole", Ret::HResult(hr)).map_err(PtyError::Create)?;
        // The pseudo console holds its own duplicates of these ends.
        drop(in_read);
        drop(out_write);
        let mut to_pty = std::fs::File::from(in_write);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || to_pty.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let mut from_pty = std::fs::File::from(out_read);
        let output = std::thread::spawn(move || {
            let mut stdout = std::io::stdout();
            let mut buf = [0u8; 4096];
            while let Ok(n) = from_pty.read(&mut buf) {
                if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = stdout.flush();
            }
        });
        Ok(Pty {
            hpc,
            output: Some(output),
        })
    }

    /// The handle to pass as `PROC_THREAD_ATTRIBUTE_PSEUDOCONSOLE`.
    pub fn handle(&self) -> HPCON {
        self.hpc
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // SAFETY: `hpc` was created by CreatePseudoConsole and is closed exactly once; closing it
        // ends the output pipe, which lets the output pump finish.
        unsafe { ClosePseudoConsole(self.hpc) };
        if let Some(t) = self.output.take() {
            let _ = t.join();
        }
    }
}
