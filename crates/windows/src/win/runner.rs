//! The elevated tier's runner: the caller starts this executable as the sandbox account with
//! `CreateProcessWithLogonW`, hands it the command over a named pipe whose DACL admits only the
//! sandbox account and the caller, and the runner starts the command in its own job object.

use super::job::Job;
use super::process::{self, Stdio, Waited};
use super::{check, owned, pipe, token, wide, Ret, Win32Error};
use crate::elevated::{encode_frame, read_frame, RunnerReply, RunnerRequest, RUNNER_ARG};
use crate::env::{command_line, env_block};
use crate::input::Limits;
use crate::sid::Sid;
use std::io::Write;
use std::os::windows::io::{AsHandle, AsRawHandle, OwnedHandle};
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::{
    ERROR_NO_DATA, ERROR_PIPE_CONNECTED, ERROR_PIPE_LISTENING, GENERIC_READ, GENERIC_WRITE,
};
use windows_sys::Win32::Storage::FileSystem::{CreateFileW, OPEN_EXISTING};
use windows_sys::Win32::System::Console::{
    GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, GetNamedPipeClientProcessId, SetNamedPipeHandleState, PIPE_READMODE_BYTE,
    PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::{
    CreateProcessWithLogonW, GetProcessId, ResumeThread, CREATE_SUSPENDED,
    CREATE_UNICODE_ENVIRONMENT, PROCESS_INFORMATION, STARTF_USESTDHANDLES, STARTUPINFOW,
};

/// Why the runner could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Starting the runner as the sandbox account failed.
    #[error("cannot start the runner as {account}: {source}; run `stockade setup` again if the password changed")]
    Logon {
        /// The account.
        account: String,
        /// The failed call.
        #[source]
        source: Win32Error,
    },
    /// The pipe failed.
    #[error(transparent)]
    Pipe(#[from] pipe::PipeError),
    /// The job failed.
    #[error(transparent)]
    Job(#[from] super::job::JobError),
    /// The protocol failed.
    #[error("runner protocol: {0}")]
    Protocol(String),
    /// The runner did not connect in time.
    #[error("the runner did not connect to its pipe within {0:?} (it exited or is blocked)")]
    NoConnect(Duration),
}

/// If this process was started as the runner (`--stockade-runner <pipe>`), runs it and returns
/// its exit code; the CLI calls this first thing in `main` on Windows.
pub fn maybe_run_as_runner() -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some(a), Some(name)) if a == RUNNER_ARG => Some(runner_main(name)),
        _ => None,
    }
}

fn serve(name: &str) -> Result<RunnerReply, String> {
    let full = wide(&format!(r"\\.\pipe\{name}"));
    // SAFETY: `full` is NUL-terminated; default security, no template.
    let h = unsafe {
        CreateFileW(
            full.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            std::ptr::null(),
            OPEN_EXISTING,
            0,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: `h` comes straight from CreateFileW and nothing else owns or closes it.
    let pipe_handle = unsafe { owned("CreateFileW(runner pipe)", h) }.map_err(|e| e.to_string())?;
    let mut conn = std::fs::File::from(pipe_handle);
    let req: RunnerRequest = read_frame(&mut conn)?;
    let limits = Limits {
        timeout_secs: None,
        max_memory: req.max_memory,
        max_processes: req.max_processes,
    };
    let (tok, desktop, job) = match prepare(&req, &limits) {
        Ok(x) => x,
        Err(e) => {
            let reply = RunnerReply {
                exit_code: None,
                timed_out: false,
                error: Some(format!("the runner refused to start the command: {e}")),
            };
            conn.write_all(&encode_frame(&reply))
                .map_err(|e| e.to_string())?;
            return Ok(reply);
        }
    };
    let block = env_block(&req.env);
    let stdio = Stdio::Handles([
        // SAFETY: reads the standard input handle of this process.
        unsafe { GetStdHandle(STD_INPUT_HANDLE) },
        // SAFETY: reads the standard output handle of this process.
        unsafe { GetStdHandle(STD_OUTPUT_HANDLE) },
        // SAFETY: reads the standard error handle of this process.
        unsafe { GetStdHandle(STD_ERROR_HANDLE) },
    ]);
    let reply = match process::spawn_on(
        Some(&tok),
        Some(&desktop.full_name),
        &req.command_line,
        Some(&block),
        Some(&req.cwd),
        stdio,
        &job,
    ) {
        Ok(child) => match process::wait(&child.process, req.timeout_ms.map(Duration::from_millis))
        {
            Ok(Waited::Exited(c)) => RunnerReply {
                exit_code: Some(c),
                timed_out: false,
                error: None,
            },
            Ok(Waited::TimedOut) => {
                let _ = job.terminate(124);
                RunnerReply {
                    exit_code: None,
                    timed_out: true,
                    error: None,
                }
            }
            Err(e) => RunnerReply {
                exit_code: None,
                timed_out: false,
                error: Some(e.to_string()),
            },
        },
        Err(e) => RunnerReply {
            exit_code: None,
            timed_out: false,
            error: Some(e.to_string()),
        },
    };
    let _ = job.terminate(1);
    conn.write_all(&encode_frame(&reply))
        .map_err(|e| e.to_string())?;
    Ok(reply)
}

/// Everything the command needs before it starts, or why it must not start: its write-restricted
/// token (from the runner's own, the sandbox account's, token; never empty of restricting SIDs),
/// a desktop of its own, a job with UI limits.
pub fn prepare(
    req: &RunnerRequest,
    limits: &Limits,
) -> Result<(OwnedHandle, super::desktop::Desktop, Job), String> {
    if req.token.restricting.is_empty()
        || req.token.flags & crate::unelevated::flags::WRITE_RESTRICTED == 0
    {
        return Err("the request's token plan is not write-restricted".into());
    }
    let own = token::own_token().map_err(|e| e.to_string())?;
    let account = super::sid::token_user(own.as_handle()).map_err(|e| e.to_string())?;
    let logon = super::sid::token_logon_sid(own.as_handle()).map_err(|e| e.to_string())?;
    let desktop = super::desktop::Desktop::create(&crate::elevated::desktop_sddl(&account, &logon))
        .map_err(|e| e.to_string())?;
    let tok = token::create_restricted(&req.token).map_err(|e| e.to_string())?;
    let job = Job::new(limits).map_err(|e| e.to_string())?;
    job.restrict_ui().map_err(|e| e.to_string())?;
    harden_self()?;
    Ok((tok, desktop, job))
}

/// Gives this process, its current thread and its token the DACL of
/// [`crate::elevated::runner_self_dacl`], so that the command (the same account) cannot reach
/// the runner's unrestricted token. Runs after everything the runner opens on itself (its token
/// in [`prepare`]) and before the command starts; the runner starts no other thread.
pub fn harden_self() -> Result<(), String> {
    use crate::elevated::{runner_self_dacl, RunnerObject};
    use std::os::windows::io::BorrowedHandle;
    use windows_sys::Win32::Storage::FileSystem::{READ_CONTROL, WRITE_DAC};
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, GetCurrentThread, OpenProcessToken,
    };
    // SAFETY: returns the current-process pseudo-handle (never closed).
    let me = unsafe { GetCurrentProcess() };
    // SAFETY: returns the current-thread pseudo-handle (never closed).
    let thread = unsafe { GetCurrentThread() };
    let mut t = std::ptr::null_mut();
    // SAFETY: `me` is the current-process pseudo-handle; `t` is a valid out pointer.
    let ok = unsafe { OpenProcessToken(me, WRITE_DAC | READ_CONTROL, &mut t) };
    check("OpenProcessToken(WRITE_DAC)", Ret::Bool(ok)).map_err(|e| e.to_string())?;
    // SAFETY: `t` comes straight from OpenProcessToken and nothing else owns or closes it.
    let tok = unsafe { owned("OpenProcessToken", t) }.map_err(|e| e.to_string())?;
    super::acl::write_handle(
        tok.as_handle(),
        &runner_self_dacl(RunnerObject::Token),
        "the runner's token",
    )
    .map_err(|e| e.to_string())?;
    // SAFETY: the pseudo-handles are valid for the life of this process and thread.
    let (p, th) = unsafe {
        (
            BorrowedHandle::borrow_raw(me),
            BorrowedHandle::borrow_raw(thread),
        )
    };
    super::acl::write_handle(
        th,
        &runner_self_dacl(RunnerObject::Thread),
        "the runner's thread",
    )
    .map_err(|e| e.to_string())?;
    super::acl::write_handle(
        p,
        &runner_self_dacl(RunnerObject::Process),
        "the runner's process",
    )
    .map_err(|e| e.to_string())
}

/// The runner's main: serve one request from the pipe, answer, exit.
pub fn runner_main(pipe_name: &str) -> i32 {
    match serve(pipe_name) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("stockade runner: {e}");
            125
        }
    }
}

fn wait_for_client(
    pipe_handle: &OwnedHandle,
    runner: &OwnedHandle,
    limit: Duration,
) -> Result<(), RunnerError> {
    let start = Instant::now();
    loop {
        // SAFETY: `pipe_handle` is a server end in PIPE_NOWAIT mode: this returns at once.
        let ok = unsafe { ConnectNamedPipe(pipe_handle.as_raw_handle(), std::ptr::null_mut()) };
        match check("ConnectNamedPipe", Ret::Bool(ok)) {
            Ok(()) => break,
            Err(e) if e.code == ERROR_PIPE_CONNECTED => break,
            // ERROR_NO_DATA: the client connected and already closed; the read will tell.
            Err(e) if e.code == ERROR_NO_DATA => break,
            Err(e) if e.code == ERROR_PIPE_LISTENING => {}
            Err(e) => return Err(RunnerError::Protocol(e.to_string())),
        }
        if matches!(
            process::wait(runner, Some(Duration::from_millis(50))),
            Ok(Waited::Exited(_))
        ) || start.elapsed() > limit
        {
            return Err(RunnerError::NoConnect(limit));
        }
    }
    let mode = PIPE_READMODE_BYTE | PIPE_WAIT;
    // SAFETY: switches the connected server end to blocking mode; other arguments unchanged.
    let ok = unsafe {
        SetNamedPipeHandleState(
            pipe_handle.as_raw_handle(),
            &mode,
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    check("SetNamedPipeHandleState", Ret::Bool(ok))
        .map_err(|e| RunnerError::Protocol(e.to_string()))
}

/// Starts `runner_exe` as `account` and has it run `request`; returns the runner's reply.
/// The runner itself is put in `outer` (so everything dies if Stockade does).
pub fn run_via_runner(
    account: &str,
    password: &str,
    account_sid: &Sid,
    caller_sid: &Sid,
    runner_exe: &str,
    request: &RunnerRequest,
    outer: &Job,
) -> Result<RunnerReply, RunnerError> {
    let (name, server) = runner_pipe(account_sid, caller_sid)?;

    let user = wide(account);
    let domain = wide(".");
    let mut pw = wide(password);
    let mut cmd = wide(&command_line(
        runner_exe,
        &[RUNNER_ARG.to_string(), name.clone()],
    ));
    let block = env_block(&request.env);
    let cwd = wide(&request.cwd);
    // SAFETY: plain data; all-zero is valid.
    let mut si: STARTUPINFOW = unsafe { std::mem::zeroed() };
    si.cb = std::mem::size_of::<STARTUPINFOW>() as u32;
    si.dwFlags = STARTF_USESTDHANDLES;
    // SAFETY: reads the standard input handle of this process.
    si.hStdInput = unsafe { GetStdHandle(STD_INPUT_HANDLE) };
    // SAFETY: reads the standard output handle of this process.
    si.hStdOutput = unsafe { GetStdHandle(STD_OUTPUT_HANDLE) };
    // SAFETY: reads the standard error handle of this process.
    si.hStdError = unsafe { GetStdHandle(STD_ERROR_HANDLE) };
    // SAFETY: plain data; all-zero is valid.
    let mut pi: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: every string is NUL-terminated and outlives the call; `cmd` is mutable as
    // required; the environment block is double-NUL-terminated UTF-16.
    let ok = unsafe {
        CreateProcessWithLogonW(
            user.as_ptr(),
            domain.as_ptr(),
            pw.as_ptr(),
            0,
            std::ptr::null(),
            cmd.as_mut_ptr(),
            CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT,
            block.as_ptr().cast(),
            cwd.as_ptr(),
            &si,
            &mut pi,
        )
    };
    pw.iter_mut().for_each(|c| *c = 0);
    check("CreateProcessWithLogonW", Ret::Bool(ok)).map_err(|source| RunnerError::Logon {
        account: account.to_string(),
        source,
    })?;
    let runner =
        // SAFETY: `pi.hProcess` comes straight from CreateProcessWithLogonW and nothing else owns or closes it.
        unsafe { owned("CreateProcessWithLogonW", pi.hProcess) }.map_err(|source| RunnerError::Logon {
            account: account.to_string(),
            source,
        })?;
    let thread =
        // SAFETY: `pi.hThread` comes straight from CreateProcessWithLogonW and nothing else owns or closes it.
        unsafe { owned("CreateProcessWithLogonW", pi.hThread) }.map_err(|source| RunnerError::Logon {
            account: account.to_string(),
            source,
        })?;
    outer.assign(runner.as_handle())?;
    // SAFETY: `thread` is the suspended main thread of the runner.
    let r = unsafe { ResumeThread(thread.as_raw_handle()) };
    if r == u32::MAX {
        return Err(RunnerError::Protocol(
            "ResumeThread failed on the runner".into(),
        ));
    }
    exchange(server, &runner, request)
}

/// A fresh runner pipe (`PIPE_NOWAIT` until connected) admitting only `account_sid` and
/// `caller_sid`; returns its name (without `\\.\pipe\`) and the server end.
pub fn runner_pipe(
    account_sid: &Sid,
    caller_sid: &Sid,
) -> Result<(String, OwnedHandle), RunnerError> {
    let tag = super::random::bytes::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or(u64::from(std::process::id()));
    let name = format!("stockade-runner-{tag:016x}");
    let sddl = crate::elevated::runner_pipe_sddl(account_sid, caller_sid);
    let server = pipe::named_nowait_with_sddl(&name, &sddl)?;
    Ok((name, server))
}

/// The connected client must be the runner this run started (not another process of the shared
/// sandbox account, such as a command of a concurrent run).
fn check_client_is(server: &OwnedHandle, runner: &OwnedHandle) -> Result<(), RunnerError> {
    let mut pid = 0u32;
    // SAFETY: `server` is a connected pipe server end; `pid` is a valid out pointer.
    let ok = unsafe { GetNamedPipeClientProcessId(server.as_raw_handle(), &mut pid) };
    check("GetNamedPipeClientProcessId", Ret::Bool(ok))
        .map_err(|e| RunnerError::Protocol(e.to_string()))?;
    // SAFETY: `runner` is a valid process handle.
    let want = unsafe { GetProcessId(runner.as_raw_handle()) };
    if want == 0 || pid != want {
        return Err(RunnerError::Protocol(format!(
            "the runner pipe's client is process {pid}, not the runner {want}; refusing"
        )));
    }
    Ok(())
}

/// Waits for the started `runner` to connect, sends the request, returns its reply.
pub fn exchange(
    server: OwnedHandle,
    runner: &OwnedHandle,
    request: &RunnerRequest,
) -> Result<RunnerReply, RunnerError> {
    wait_for_client(&server, runner, Duration::from_secs(60))?;
    check_client_is(&server, runner)?;
    let mut conn = std::fs::File::from(server);
    conn.write_all(&encode_frame(request))
        .map_err(|e| RunnerError::Protocol(format!("sending the request: {e}")))?;
    let reply: RunnerReply = read_frame(&mut conn).map_err(RunnerError::Protocol)?;
    let _ = process::wait(runner, Some(Duration::from_secs(30)));
    Ok(reply)
}
