//! One run in the unelevated tier: plan, apply, start, wait, report.

use super::job::Job;
use super::process::{self, Stdio, Waited};
use super::{acl, random, token, WinRunError};
use crate::env::{command_line, env_block};
use crate::input::WinPlanInput;
use crate::launch::{created_protected, workspace_tag, written_placeholders, RunError};
use crate::path::WinPath;
use crate::state::CapabilityStore;
use crate::unelevated::{self, UnelevatedOptions};
use std::os::windows::io::AsHandle;
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

/// The unelevated tier's input for `plan` (temp dir emptied, capability SIDs minted and saved),
/// with the capability store and where it lives.
fn prepare_unelevated(
    plan: &Plan,
) -> Result<(WinPlanInput, CapabilityStore, std::path::PathBuf), RunError> {
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
    let store = ensure_capabilities(&store_path, &input.effective_roots())?;
    Ok((input, store, store_path))
}

/// [`prepare_unelevated`] with the placeholders created and planned (a run), or with every
/// recorded placeholder and no-new-files directory planned so that all their ACEs go (`clean`).
/// Also returns the placeholders that are empty now.
#[allow(clippy::type_complexity)]
fn prepare_with_placeholders(
    plan: &Plan,
    for_clean: bool,
) -> Result<
    (
        WinPlanInput,
        unelevated::UnelevatedPlan,
        CapabilityStore,
        std::path::PathBuf,
        Vec<WinPath>,
    ),
    RunError,
> {
    let (input, mut store, store_path) = prepare_unelevated(plan)?;
    let (planned, empty) = if for_clean {
        let exists = |p: &WinPath| std::fs::symlink_metadata(p.as_string()).is_ok();
        (
            crate::placeholder::for_clean(&input, &store.no_new_files, exists),
            Vec::new(),
        )
    } else {
        make_placeholders(&input, &mut store, &store_path)?
    };
    let own = token::own_token().map_err(win_err)?;
    let me = super::sid::token_user(own.as_handle()).map_err(win_err)?;
    // The DACL lock leaves you WRITE_DAC only through an enabled Authenticated Users group: a
    // token without it (an unusual logon) gets no lock rather than a lock it could not undo.
    // Clean always plans the lock, so that it removes lock ACEs a run added.
    const SE_GROUP_ENABLED: u32 = 0x4;
    let escape = unelevated::lock_escape_group();
    let can_undo = super::sid::token_groups(own.as_handle())
        .map_err(win_err)?
        .iter()
        .any(|(s, a)| *s == escape && a & SE_GROUP_ENABLED != 0);
    // `filesystem.windows_lock_protected_dacls = false` is the opt-out (your own config only).
    let configured = plan.windows_lock_protected_dacls;
    let opts = UnelevatedOptions {
        lock_protected_dacls: for_clean || (can_undo && configured),
        ..UnelevatedOptions::default()
    };
    let mut uplan = unelevated::plan(&planned, &store, opts, &me)?;
    if !for_clean && !configured {
        uplan.warnings.push("protected paths: filesystem.windows_lock_protected_dacls = false, so their DACLs are not locked against the command: it can re-ACL them first and then write, rename or delete them".into());
    } else if !for_clean && !can_undo {
        uplan.warnings.push(format!("protected paths: your token has no enabled {escape} (Authenticated Users), so their DACLs are not locked against the command: it can re-ACL them first and then write, rename or delete them"));
    }
    Ok((planned, uplan, store, store_path, empty))
}

/// `stockade clean` for the unelevated tier: removes exactly the ACEs this workspace's plan adds
/// (capability grants and denies, metadata guards) and forgets the capability SIDs. Returns the
/// number of paths changed.
pub fn clean_unelevated(plan: &Plan) -> Result<usize, RunError> {
    let (input, uplan, mut store, store_path, _) = prepare_with_placeholders(plan, true)?;
    let roots = input.effective_roots();
    let mut changed = 0usize;
    for entry in uplan.acl.iter().rev() {
        acl::refuse_reparse(&entry.path, &roots).map_err(win_err)?;
        match acl::unapply(entry) {
            Ok(true) => changed += 1,
            Ok(false) => {}
            // A path that is gone has no ACEs left to remove.
            Err(acl::AclError::Read { source, .. }) if source.code == 2 || source.code == 3 => {}
            Err(e) => return Err(win_err(e)),
        }
    }
    changed += remove_placeholders(&store, &roots)?;
    if store.forget(&roots) {
        store.save(&store_path)?;
    }
    Ok(changed)
}

/// Runs `cmd` under `plan` with a write-restricted token.
pub fn run_unelevated(
    tier: &'static str,
    plan: &Plan,
    cmd: &Command,
    opts: &RunOptions,
) -> Result<RunOutcome, RunError> {
    let start = Instant::now();
    let (input, uplan, _, _, empty_placeholders) = prepare_with_placeholders(plan, false)?;

    let mut changed = 0usize;
    for entry in &uplan.acl {
        acl::refuse_reparse(&entry.path, &input.effective_roots()).map_err(win_err)?;
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
    let (created, mut denials) = created_protected(&uplan.check_after_run, |p| {
        std::path::Path::new(&p.as_string()).exists()
    });
    warnings.extend(created);
    let (written, more) = written_placeholders(&empty_placeholders, acl::is_empty_dir);
    warnings.extend(written);
    denials.extend(more);
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
        denials,
        created: None,
    })
}

/// Creates the placeholders for the missing protected names ([`crate::placeholder`]), recorded
/// in the store before any is created, and returns the input as planned with them and the
/// placeholders that are empty directories now (checked again after the run). Each is created
/// with `CreateDirectoryW` (which never follows a final link and fails if anything is there)
/// below a parent whose every component beneath the root is checked for reparse points first.
fn make_placeholders(
    input: &WinPlanInput,
    store: &mut CapabilityStore,
    store_path: &std::path::Path,
) -> Result<(WinPlanInput, Vec<WinPath>), RunError> {
    let exists = |p: &WinPath| std::fs::symlink_metadata(p.as_string()).is_ok();
    let pp = crate::placeholder::plan(input, exists);
    let recorded_before = store.placeholders.clone();
    if store.record_placeholders(&pp) {
        store.save(store_path)?;
    }
    let roots = input.effective_roots();
    let mut not_ours = Vec::new();
    for c in &pp.create {
        if let Some(parent) = c.parent() {
            acl::refuse_reparse(&parent, &roots).map_err(win_err)?;
        }
        match std::fs::create_dir(c.as_string()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !recorded_before.contains(c) {
                    not_ours.push(c.clone());
                }
            }
            Err(source) => {
                return Err(RunError::Placeholder {
                    path: c.as_string(),
                    source,
                })
            }
        }
    }
    if !not_ours.is_empty() {
        store.placeholders.retain(|p| !not_ours.contains(p));
        store.save(store_path)?;
    }
    let planned = input.with_placeholders(&pp);
    let empty: Vec<WinPath> = store
        .placeholders
        .iter()
        .filter(|p| roots.iter().any(|r| p.starts_with(r)) && acl::is_empty_dir(p))
        .cloned()
        .collect();
    Ok((planned, empty))
}

/// The placeholders Stockade created beneath `roots` that are still empty, removed (see
/// [`acl::remove_empty_placeholders`]). Returns how many.
fn remove_placeholders(store: &CapabilityStore, roots: &[WinPath]) -> Result<usize, RunError> {
    acl::remove_empty_placeholders(&store.placeholders, roots).map_err(win_err)
}

/// The caller's capability SIDs for `roots`: loaded, minted for new roots and saved before any
/// ACE names them.
fn ensure_capabilities(
    store_path: &std::path::Path,
    roots: &[WinPath],
) -> Result<CapabilityStore, RunError> {
    let mut store = CapabilityStore::load(store_path)?;
    let needed = roots.iter().filter(|r| store.sid_for(r).is_none()).count();
    let mut fresh = Vec::with_capacity(needed);
    for _ in 0..needed {
        fresh.push(random::bytes::<16>().map_err(|e| win_err(WinRunError::Random(e)))?);
    }
    if store.ensure(roots, || fresh.pop().unwrap_or_default())? {
        store.save(store_path)?;
    }
    Ok(store)
}

/// Runs `cmd` as the sandbox account (elevated tier) through the runner.
pub fn run_elevated(
    tier: &'static str,
    plan: &Plan,
    cmd: &Command,
    opts: &RunOptions,
) -> Result<RunOutcome, RunError> {
    use super::setup::{load_passwords, load_record, record_elevated_acl_paths};
    use crate::elevated::{run_plan, Accounts, RunnerRequest};
    use stockade_policy::NetworkMode;
    let start = Instant::now();
    if opts.pty {
        return Err(RunError::ElevatedPty);
    }
    let record = load_record()
        .map_err(win_err)?
        .ok_or(RunError::ElevatedNotInstalled)?;
    let caller = token::own_token().map_err(win_err)?;
    let caller_sid = super::sid::token_user(caller.as_handle()).map_err(win_err)?;
    // This caller's own sandbox accounts: another caller's command never runs as them.
    let names = Accounts::for_caller(&caller_sid);
    let account = names.for_network(plan.network == NetworkMode::Off);
    let password = load_passwords()
        .map_err(win_err)?
        .remove(account)
        .ok_or(RunError::ElevatedNotInstalled)?;
    let account_sid = record
        .accounts
        .get(account)
        .cloned()
        .ok_or(RunError::ElevatedNotInstalled)?;
    if plan.network == NetworkMode::Off {
        // Fail closed unless the firewall is on for the active profiles, local rules apply and
        // every recorded rule is present, enabled, blocking and covers the active profiles.
        let state = super::firewall::read_state(&record.firewall_rules)
            .map_err(|e| win_err(WinRunError::Setup(e.into())))?;
        let mut problems: Vec<String> = crate::firewall::verify(&state, &record.firewall_rules)
            .iter()
            .map(|p| p.to_string())
            .collect();
        if record.firewall_rules.is_empty() {
            problems.push("no firewall rules are recorded; run `stockade setup`".into());
        }
        // The WFP filters for this account, as setup planned them: each must be in place.
        let wanted =
            crate::elevated::wanted_wfp(&names, &record.accounts, &record.allowed_loopback_ports);
        if wanted.is_empty() {
            problems.push(
                "no WFP filters are planned for the offline account; run `stockade setup`".into(),
            );
        }
        problems.extend(
            super::wfp::verify(&wanted).map_err(|e| win_err(WinRunError::Setup(e.into())))?,
        );
        if !problems.is_empty() {
            return Err(RunError::FirewallNotEffective(problems));
        }
    }
    // Temp dir where the sandbox account can reach it: %ProgramData%\Stockade\tmp\<workspace>.
    let pd = std::env::var("ProgramData").unwrap_or_else(|_| r"C:\ProgramData".to_string());
    let bad = |source| crate::input::InputError::Path {
        path: pd.clone(),
        source,
    };
    let probe = WinPlanInput::from_plan(plan, None)?;
    let temp = match &plan.temp.persist_dir {
        Some(d) => WinPath::parse(&d.to_string_lossy()).map_err(bad)?,
        None => WinPath::parse(&pd)
            .map_err(bad)?
            .join(&format!(
                "Stockade\\tmp\\{}",
                workspace_tag(&probe.workspace)
            ))
            .map_err(bad)?,
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

    // This caller's capability SIDs (in the caller's own profile), the only grants the command's
    // restricting pass sees: another caller's runs never hold them.
    let lad = std::env::var("LOCALAPPDATA").map_err(|_| RunError::NoLocalAppData)?;
    let store_path = std::path::Path::new(&lad)
        .join("Stockade")
        .join("capabilities.json");
    let mut store = ensure_capabilities(&store_path, &input.effective_roots())?;
    let (input, empty_placeholders) = make_placeholders(&input, &mut store, &store_path)?;
    let eplan = run_plan(&input, &account_sid, &store)?;
    let acl_plan = eplan.acl.clone();
    record_elevated_acl_paths(acl_plan.iter().map(|e| e.path.clone())).map_err(win_err)?;
    let mut changed = 0usize;
    for entry in &acl_plan {
        acl::refuse_reparse(&entry.path, &input.effective_roots()).map_err(win_err)?;
        if acl::apply(entry).map_err(win_err)? {
            changed += 1;
        }
    }
    let program = text(&cmd.program)?;
    let args: Vec<String> = cmd.args.iter().map(|a| text(a)).collect::<Result<_, _>>()?;
    let timeout = opts
        .timeout
        .or(input.limits.timeout_secs.map(Duration::from_secs));
    let request = RunnerRequest {
        command_line: command_line(&program, &args),
        cwd: input.cwd.as_string(),
        env: crate::env::sandbox_env(&input.env, Some(&temp), input.network, true),
        timeout_ms: timeout.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        max_memory: input.limits.max_memory,
        max_processes: input.limits.max_processes,
        token: eplan.token.clone(),
    };
    let outer = Job::new(&Default::default()).map_err(win_err)?;
    let exe = std::env::current_exe().map_err(|e| RunError::Temp {
        path: "stockade.exe".into(),
        source: e,
    })?;
    let reply = super::runner::run_via_runner(
        account,
        &password,
        &account_sid,
        &caller_sid,
        &exe.to_string_lossy(),
        &request,
        &outer,
    )
    .map_err(win_err)?;
    let _ = outer.terminate(1);
    let exit = match (reply.exit_code, reply.timed_out, reply.error) {
        (_, true, _) => ExitKind::TimedOut,
        (Some(c), false, None) => ExitKind::Code(c as i32),
        (_, _, e) => {
            return Err(win_err(WinRunError::Runner(
                super::runner::RunnerError::Protocol(e.unwrap_or_else(|| "no exit code".into())),
            )))
        }
    };
    let mut warnings: Vec<String> = input
        .protected_symlinks
        .iter()
        .map(|l| format!("protected symlink {l}: its target is protected, the link itself is not (ACLs set by path follow links)"))
        .collect();
    let (created, mut denials) = created_protected(&input.protected_missing, |p| {
        std::path::Path::new(&p.as_string()).exists()
    });
    warnings.extend(created);
    let (written, more) = written_placeholders(&empty_placeholders, acl::is_empty_dir);
    warnings.extend(written);
    denials.extend(more);
    warnings.push(format!("elevated tier: reads are not confined to the roots: the command can read whatever {account} (yours alone, a member of Users) may read on this machine"));
    if plan.network == NetworkMode::Off {
        warnings.push("network off: the firewall blocks the sandbox account's own connections; traffic that a Windows service makes for it (DNS client, SMB/UNC paths, WebDAV, BITS) is NOT blocked (neither firewall rules nor WFP filters see it)".into());
    }
    let mut enforced = vec![
        EnforcedLayer {
            layer: "sandbox-account".into(),
            detail: format!("{account} ({account_sid}) via CreateProcessWithLogonW and the runner"),
        },
        EnforcedLayer {
            layer: "restricted-token".into(),
            detail: format!(
                "write-restricted to {} capability SID(s) of this caller, the run's logon SID and Everyone",
                eplan.roots.len()
            ),
        },
        EnforcedLayer {
            layer: "desktop".into(),
            detail: "a desktop of its own per run; job UI limits (clipboard, atoms, USER handles, desktops)".into(),
        },
        EnforcedLayer {
            layer: "dacl".into(),
            detail: format!(
                "{} paths carry ACEs for {account} and this caller's capability SIDs ({changed} changed this run)",
                acl_plan.len()
            ),
        },
        EnforcedLayer {
            layer: "job-object".into(),
            detail: "runner's job: KILL_ON_JOB_CLOSE; Stockade's job around the runner".into(),
        },
    ];
    if plan.network == NetworkMode::Off {
        enforced.push(EnforcedLayer {
            layer: "firewall".into(),
            detail: format!(
                "{} block rules for {account} present",
                record.firewall_rules.len()
            ),
        });
    }
    Ok(RunOutcome {
        tier: tier.to_string(),
        exit,
        duration: start.elapsed(),
        enforced,
        warnings,
        denials,
        created: None,
    })
}
