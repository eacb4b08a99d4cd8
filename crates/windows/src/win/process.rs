//! Starting a process (optionally with a restricted token) suspended, inside a job, with exactly
//! the handles it should inherit; waiting for it with a timeout.

use super::job::{Job, JobError};
use super::{check, owned, wide, Ret, Win32Error};
use std::os::windows::io::{AsHandle, AsRawHandle, OwnedHandle};
use std::time::Duration;
use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_SAME_ACCESS, HANDLE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Console::HPCON;
use windows_sys::Win32::System::Threading::{
    CreateProcessAsUserW, CreateProcessW, DeleteProcThreadAttributeList, GetCurrentProcess,
    GetExitCodeProcess, InitializeProcThreadAttributeList, ResumeThread, UpdateProcThreadAttribute,
    WaitForSingleObject, CREATE_SUSPENDED, CREATE_UNICODE_ENVIRONMENT,
    EXTENDED_STARTUPINFO_PRESENT, INFINITE, LPPROC_THREAD_ATTRIBUTE_LIST, PROCESS_INFORMATION,
    PROC_THREAD_ATTRIBUTE_HANDLE_LIST, PROC_THREAD_ATTRIBUTE_PSEUDOCONSOLE, STARTF_USESTDHANDLES,
    STARTUPINFOEXW,
};

/// Why a process could not be started or waited for.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Preparing handles or attributes failed.
    #[error("cannot prepare the child's handles: {0}")]
    Prepare(#[source] Win32Error),
    /// `CreateProcess*W` failed.
    #[error("cannot start {program}: {source}")]
    Create {
        /// The command line.
        program: String,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// The job could not take the process (it is killed before it ran).
    #[error(transparent)]
    Job(#[from] JobError),
    /// Resuming or waiting failed.
    #[error("cannot run or wait for the child: {0}")]
    Wait(#[source] Win32Error),
}

/// What the child's console I/O is connected to.
pub enum Stdio {
    /// These handles become its stdin, stdout and stderr (null: none).
    Handles([HANDLE; 3]),
    /// A pseudo console (ConPTY) created by the caller.
    PseudoConsole(HPCON),
}

/// A started process.
pub struct Child {
    /// Process handle.
    pub process: OwnedHandle,
    /// Main thread handle.
    pub thread: OwnedHandle,
    /// Process id.
    pub pid: u32,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Exited with this code.
    Exited(u32),
    /// Still running after the timeout.
    TimedOut,
}

fn inheritable_copy(h: HANDLE) -> Result<OwnedHandle, Win32Error> {
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing.
    let me = unsafe { GetCurrentProcess() };
    // SAFETY: `h` is a valid handle of this process; `out` is a valid out pointer.
    let ok = unsafe { DuplicateHandle(me, h, me, &mut out, 0, 1, DUPLICATE_SAME_ACCESS) };
    check("DuplicateHandle", Ret::Bool(ok))?;
    // SAFETY: `out` comes straight from DuplicateHandle and nothing else owns or closes it.
    unsafe { owned("DuplicateHandle", out) }
}

/// An initialized `PROC_THREAD_ATTRIBUTE_LIST` (deleted on drop).
struct AttrList {
    buf: Vec<u64>,
}

impl AttrList {
    fn new(count: u32) -> Result<AttrList, Win32Error> {
        let mut size = 0usize;
        // SAFETY: a null list asks for the required size; the call "fails" with
        // ERROR_INSUFFICIENT_BUFFER by design, so its result is ignored.
        let _ =
            unsafe { InitializeProcThreadAttributeList(std::ptr::null_mut(), count, 0, &mut size) };
        let mut list = AttrList {
            buf: vec![0u64; size.div_ceil(8).max(1)],
        };
        // SAFETY: `buf` is writable for at least `size` bytes.
        let ok = unsafe { InitializeProcThreadAttributeList(list.ptr(), count, 0, &mut size) };
        if ok == 0 {
            // Do not run Drop's Delete on an uninitialized list.
            let e = check("InitializeProcThreadAttributeList", Ret::Bool(ok));
            list.buf.clear();
            e?;
        }
        Ok(list)
    }
    fn ptr(&mut self) -> LPPROC_THREAD_ATTRIBUTE_LIST {
        self.buf.as_mut_ptr().cast()
    }
}

impl Drop for AttrList {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            // SAFETY: the list was initialized by InitializeProcThreadAttributeList.
            unsafe { DeleteProcThreadAttributeList(self.ptr()) };
        }
    }
}

/// Starts `command_line` suspended (with `token` if given), puts it in `job`, then resumes it.
/// `env` is a UTF-16 environment block (see [`crate::env::env_block`]).
pub fn spawn(
    token: Option<&OwnedHandle>,
    command_line: &str,
    env: Option<&[u16]>,
    cwd: Option<&str>,
    stdio: Stdio,
    job: &Job,
) -> Result<Child, SpawnError> {
    spawn_on(token, None, command_line, env, cwd, stdio, job)
}

/// [`spawn`] on the desktop `desktop` (`window-station\desktop`; `None`: the caller's).
pub fn spawn_on(
    token: Option<&OwnedHandle>,
    desktop: Option<&str>,
    command_line: &str,
    env: Option<&[u16]>,
    cwd: Option<&str>,
    stdio: Stdio,
    job: &Job,
) -> Result<Child, SpawnError> {
    // SAFETY: STARTUPINFOEXW is plain data; all-zero is a valid starting point.
    let mut si: STARTUPINFOEXW = unsafe { std::mem::zeroed() };
    si.StartupInfo.cb = std::mem::size_of::<STARTUPINFOEXW>() as u32;
    let mut list = AttrList::new(1).map_err(SpawnError::Prepare)?;
    let mut inherited: Vec<OwnedHandle> = Vec::new();
    let mut raw_list: Vec<HANDLE> = Vec::new();
    let inherit;
    match stdio {
        Stdio::Handles(hs) => {
            let mut slots = [std::ptr::null_mut(); 3];
            for (i, h) in hs.iter().enumerate() {
                if h.is_null() {
                    continue;
                }
                let c = inheritable_copy(*h).map_err(SpawnError::Prepare)?;
                slots[i] = c.as_raw_handle();
                raw_list.push(c.as_raw_handle());
                inherited.push(c);
            }
            si.StartupInfo.dwFlags |= STARTF_USESTDHANDLES;
            si.StartupInfo.hStdInput = slots[0];
            si.StartupInfo.hStdOutput = slots[1];
            si.StartupInfo.hStdError = slots[2];
            inherit = !raw_list.is_empty();
            if inherit {
                // SAFETY: `list` is initialized for one attribute; `raw_list` holds
                // inheritable handles and outlives CreateProcess (it lives to the end of spawn).
                let ok = unsafe {
                    UpdateProcThreadAttribute(
                        list.ptr(),
                        0,
                        PROC_THREAD_ATTRIBUTE_HANDLE_LIST as usize,
                        raw_list.as_ptr().cast(),
                        raw_list.len() * std::mem::size_of::<HANDLE>(),
                        std::ptr::null_mut(),
                        std::ptr::null(),
                    )
                };
                check("UpdateProcThreadAttribute(HANDLE_LIST)", Ret::Bool(ok))
                    .map_err(SpawnError::Prepare)?;
            }
        }
        Stdio::PseudoConsole(hpc) => {
            inherit = false;
            // SAFETY: `list` is initialized for one attribute; the value of this attribute is
            // the HPCON itself, which the caller keeps open until the child exits.
            let ok = unsafe {
                UpdateProcThreadAttribute(
                    list.ptr(),
                    0,
                    PROC_THREAD_ATTRIBUTE_PSEUDOCONSOLE as usize,
                    hpc as *const core::ffi::c_void,
                    std::mem::size_of::<HPCON>(),
                    std::ptr::null_mut(),
                    std::ptr::null(),
                )
            };
            check("UpdateProcThreadAttribute(PSEUDOCONSOLE)", Ret::Bool(ok))
                .map_err(SpawnError::Prepare)?;
        }
    }
    si.lpAttributeList = list.ptr();
    let mut desktop_w = desktop.map(wide);
    if let Some(d) = desktop_w.as_mut() {
        si.StartupInfo.lpDesktop = d.as_mut_ptr();
    }

    let mut cmd = wide(command_line);
    let cwd_w = cwd.map(wide);
    let cwd_ptr = cwd_w.as_ref().map_or(std::ptr::null(), |w| w.as_ptr());
    let env_ptr = env.map_or(std::ptr::null(), |e| e.as_ptr().cast::<core::ffi::c_void>());
    let flags = CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT | EXTENDED_STARTUPINFO_PRESENT;
    // SAFETY: PROCESS_INFORMATION is plain data; all-zero is valid.
    let mut pi: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
    let ok = match token {
        // SAFETY: `t` is a primary token; `cmd` is a mutable NUL-terminated buffer; the
        // environment block, cwd and startup info are valid for the call.
        Some(t) => unsafe {
            CreateProcessAsUserW(
                t.as_raw_handle(),
                std::ptr::null(),
                cmd.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                i32::from(inherit),
                flags,
                env_ptr,
                cwd_ptr,
                std::ptr::addr_of!(si.StartupInfo),
                &mut pi,
            )
        },
        // SAFETY: as above, without a token.
        None => unsafe {
            CreateProcessW(
                std::ptr::null(),
                cmd.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                i32::from(inherit),
                flags,
                env_ptr,
                cwd_ptr,
                std::ptr::addr_of!(si.StartupInfo),
                &mut pi,
            )
        },
    };
    check("CreateProcess", Ret::Bool(ok)).map_err(|source| SpawnError::Create {
        program: command_line.to_string(),
        source,
    })?;
    drop(inherited);
    // SAFETY: `pi.hProcess` comes straight from CreateProcess and nothing else owns or closes it.
    let process = unsafe { owned("CreateProcess", pi.hProcess) }.map_err(SpawnError::Wait)?;
    // SAFETY: `pi.hThread` comes straight from CreateProcess and nothing else owns or closes it.
    let thread = unsafe { owned("CreateProcess", pi.hThread) }.map_err(SpawnError::Wait)?;
    let child = Child {
        process,
        thread,
        pid: pi.dwProcessId,
    };
    if let Err(e) = job.assign(child.process.as_handle()) {
        // The process never ran: kill it rather than let it run outside the job.
        let _ = kill(&child);
        return Err(e.into());
    }
    // SAFETY: `thread` is the suspended main thread of the child.
    let r = unsafe { ResumeThread(child.thread.as_raw_handle()) };
    if r == u32::MAX {
        let e = check("ResumeThread", Ret::Bool(0)).err();
        let _ = kill(&child);
        if let Some(e) = e {
            return Err(SpawnError::Wait(e));
        }
    }
    Ok(child)
}

fn kill(child: &Child) -> Result<(), Win32Error> {
    use windows_sys::Win32::System::Threading::TerminateProcess;
    // SAFETY: `process` is a valid process handle with PROCESS_TERMINATE.
    let ok = unsafe { TerminateProcess(child.process.as_raw_handle(), 1) };
    check("TerminateProcess", Ret::Bool(ok))
}

/// Waits for a process handle to be signalled, up to `timeout` (forever if `None`).
pub fn wait(process: &OwnedHandle, timeout: Option<Duration>) -> Result<Waited, SpawnError> {
    let ms = timeout.map_or(INFINITE, |d| {
        u32::try_from(d.as_millis()).unwrap_or(INFINITE - 1)
    });
    // SAFETY: `process` is a valid process handle with SYNCHRONIZE.
    let r = unsafe { WaitForSingleObject(process.as_raw_handle(), ms) };
    match r {
        WAIT_OBJECT_0 => {
            let mut code = 0u32;
            // SAFETY: the process has exited; `code` is a valid out pointer.
            let ok = unsafe { GetExitCodeProcess(process.as_raw_handle(), &mut code) };
            check("GetExitCodeProcess", Ret::Bool(ok)).map_err(SpawnError::Wait)?;
            Ok(Waited::Exited(code))
        }
        WAIT_TIMEOUT => Ok(Waited::TimedOut),
        _ => Err(SpawnError::Wait(
            check("WaitForSingleObject", Ret::Bool(0))
                .err()
                .unwrap_or(Win32Error {
                    call: "WaitForSingleObject",
                    code: r,
                    message: "unexpected wait result".into(),
                }),
        )),
    }
}
