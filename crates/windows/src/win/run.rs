//! One run in the unelevated tier: plan, apply, start, wait, report.

use super::job::Job;
use super::process::{self, Stdio, Waited};
use super::{acl, random, token, WinRunError};
use crate::backend::{created_protected, workspace_tag, RunError};
use crate::env::{command_line, env_block};
use crate::input::WinPlanInput;
use crate::path::WinPath;
use crate::state::CapabilityStore;
use crate::unelevated::{self, UnelevatedOptions};
use std::time::{Duration, Instant};
use stockade_policy::backend::{Command, EnforcedLayer, ExitKind, RunOptions, RunOutcome};
use stockade_policy::plan::Plan;
use windows_sys::Win32::System::Console::{
    GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
};

fn text(s: &std::ffi::OsStr) -> Result<String, RunError> {
    s.to_str()
        .map(str::to_string)
        .ok_or_else(|| RunError::NotUnicode(s.to_string_lossy().into_owned()))
}

fn win_err(e: impl Into<WinRunError>) -> RunError {
    RunError::Win(e.into())
}

/// Runs `cmd` under `plan` with a write-restricted token.
pub fn run_unelevated(
    tier: &'static str,
    plan: &Plan,
    cmd: &Command,
    opts: &RunOptions,
) -> Result<RunOutcome, RunError> {
    let start = Instant::now();
    let lad = std::env::var("LOCALAPPDATA").map_err(|_| RunError::NoLocalAppData)?;
    let state_dir = WinPath::parse(&lad)
        .map_err(|source| crate::input::InputError::Path {
            path: lad.clone(),
            source,
        })?
        .join("Stockade")
        .map_err(|source| crate::input::InputError::Path {
            path: lad.clone(),
            source,
        })?;

    // The sandbox temp dir: the policy's persistent one, or a per-workspace one emptied per run.
    let probe = WinPlanInput::from_plan(plan, None)?;
    let temp = match &plan.temp.persist_dir {
        Some(d) => WinPath::parse(&d.to_string_lossy()).map_err(|source| {
            crate::input::InputError::Path {
                path: d.display().to_string(),
                source,
            }
        })?,
        None => state_dir
            .join(&format!("tmp\\{}", workspace_tag(&probe.workspace)))
            .map_err(|source| crate::input::InputError::Path {
                path: lad.clone(),
                source,
            })?,
    };
    let temp_io = |source| RunError::Temp {
        path: temp.as_string(),
        source,
    };
    if plan.temp.persist_dir.is_none() {
        match std::fs::remove_dir_all(temp.as_string()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(temp_io(e)),
        }
    }
    std::fs::create_dir_all(temp.as_string()).map_err(temp_io)?;
    let input = WinPlanInput::from_plan(plan, Some(temp.clone()))?;

    // Capability SIDs, minted before any ACE names them and saved first.
    let store_path = std::path::PathBuf::from(
        state_dir
            .join("capabilities.json")
            .map_err(|source| crate::input::InputError::Path {
                path: lad.clone(),
                source,
            })?
            .as_string(),
    );
    let mut store = CapabilityStore::load(&store_path)?;
    let roots = input.effective_roots();
    let needed = roots.iter().filter(|r| store.sid_for(r).is_none()).count();
    let mut fresh = Vec::with_capacity(needed);
    for _ in 0..needed {
        fresh.push(random::bytes::<16>().map_err(|e| win_err(WinRunError::Random(e)))?);
    }
    if store.ensure(&roots, || fresh.pop().unwrap_or_default())? {
        store.save(&store_path)?;
    }
    let uplan = unelevated::plan(&input, &store, UnelevatedOptions::default())?;

    let mut changed = 0usize;
    for entry in &uplan.acl {
        if acl::apply(entry).map_err(win_err)? {
            changed += 1;
        }
    }
    let tok = token::create_restricted(&uplan.token).map_err(win_err)?;
    let job = Job::new(&input.limits).map_err(win_err)?;

    let program = text(&cmd.program)?;
    let args: Vec<String> = cmd.args.iter().map(|a| text(a)).collect::<Result<_, _>>()?;
    let line = command_line(&program, &args);
    let block = env_block(&uplan.env);
    let cwd = input.cwd.as_string();

    let pty = if opts.pty {
        Some(super::pty::Pty::new().map_err(win_err)?)
    } else {
        None
    };
    let stdio = match &pty {
        Some(p) => Stdio::PseudoConsole(p.handle()),
        // SAFETY (each): GetStdHandle only reads this process's standard handle table.
        None => Stdio::Handles([
            // SAFETY: reads the standard input handle of this process.
            unsafe { GetStdHandle(STD_INPUT_HANDLE) },
            // SAFETY: reads the standard output handle of this process.
            unsafe { GetStdHandle(STD_OUTPUT_HANDLE) },
            // SAFETY: reads the standard error handle of this process.
            unsafe { GetStdHandle(STD_ERROR_HANDLE) },
        ]),
    };
    let child = process::spawn(Some(&tok), &line, Some(&block), Some(&cwd), stdio, &job)
        .map_err(win_err)?;
    let timeout = opts
        .timeout
        .or(input.limits.timeout_secs.map(Duration::from_secs));
    let exit = match process::wait(&child.process, timeout).map_err(win_err)? {
        Waited::Exited(code) => ExitKind::Code(code as i32),
        Waited::TimedOut => {
            job.terminate(124).map_err(win_err)?;
            let _ = process::wait(&child.process, Some(Duration::from_secs(10)));
            ExitKind::TimedOut
        }
    };
    // Whatever the command left running dies with it.
    let _ = job.terminate(1);
    drop(pty);

    let mut warnings = uplan.warnings.clone();
    warnings.extend(created_protected(&uplan.check_after_run, |p| {
        std::path::Path::new(&p.as_string()).exists()
    }));
    if !opts.pass_fds.is_empty() {
        warnings.push(
            "pass_fds is ignored on Windows (only stdin, stdout and stderr are passed)".into(),
        );
    }
    let mut job_detail = "KILL_ON_JOB_CLOSE; whole tree killed on exit and timeout".to_string();
    if input.limits.max_memory.is_some() {
        job_detail.push_str("; job memory limit");
    }
    if input.limits.max_processes.is_some() {
        job_detail.push_str("; active process limit");
    }
    let enforced = vec![
        EnforcedLayer {
            layer: "restricted-token".into(),
            detail: format!(
                "WRITE_RESTRICTED|DISABLE_MAX_PRIVILEGE|LUA_TOKEN with {} restricting SIDs",
                uplan.token.restricting.len()
            ),
        },
        EnforcedLayer {
            layer: "dacl".into(),
            detail: format!(
                "{} paths carry Stockade ACEs ({changed} changed this run)",
                uplan.acl.len()
            ),
        },
        EnforcedLayer {
            layer: "job-object".into(),
            detail: job_detail,
        },
    ];
    Ok(RunOutcome {
        tier: tier.to_string(),
        exit,
        duration: start.elapsed(),
        enforced,
        warnings,
    })
}
