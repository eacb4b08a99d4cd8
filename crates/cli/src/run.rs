//! `stockade run`, `doctor` and `clean`.

use crate::text::escape;
use crate::{load, Caller, RunArgs};
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;
use stockade_policy::backend::{Command, Feature, RunOptions, RunOutcome};

pub fn run(args: RunArgs, caller: &Caller, verbose: bool) -> Result<ExitCode> {
    for fd in &args.pass_fd {
        if *fd < 3 || !crate::backend::fd_is_open(*fd) {
            bail!("--pass-fd {fd}: not an open descriptor above 2 in this process");
        }
    }
    // `--tier elevated` has no write gate: its plans walk (so do `--write-gate off` ones).
    if args.write_gate == crate::WriteGateArg::Off
        || args.tier == crate::backend::TierChoice::Elevated
    {
        crate::disable_write_gate();
    }
    let gate_missing = match crate::write_gate() {
        Err(missing) if args.write_gate == crate::WriteGateArg::On => Some(missing),
        _ => None,
    };
    let plan = match &args.mcp_narrow {
        None => load(&args.policy, caller)?.1,
        Some(n) => crate::mcp::load_narrowed(&args.policy, caller, n)?,
    };
    // Opened now, before anything runs, from outside everything the command can change.
    let mut report_file = match &args.report {
        Some(p) => Some(crate::report::open_report(p, &plan, &caller.cwd)?),
        None => None,
    };
    let Some((program, rest)) = args.command.split_first() else {
        bail!("no command given after --")
    };
    let cmd = Command {
        program: program.clone(),
        args: rest.to_vec(),
    };
    let opts = RunOptions {
        pass_fds: args.pass_fd.clone(),
        pty: !args.no_pty
            && (args.pty || (std::io::stdin().is_terminal() && std::io::stdout().is_terminal())),
        timeout: plan.limits.timeout_secs.map(Duration::from_secs),
    };
    if verbose {
        for w in &plan.warnings {
            eprintln!("stockade: warning: {}", escape(w));
        }
        for m in &plan.protected_missing {
            eprintln!(
                "stockade: note: {} does not exist, so it cannot be protected by a mount; it could be created by the command",
                escape(&m.display().to_string())
            );
        }
    }
    let git = GitGuard::before(&plan, caller, verbose)?;
    let started = std::time::SystemTime::now();
    // For `auto`'s fallback to the elevated tier: the same plan, walked (that tier has no gate).
    let walk_plan = || {
        crate::disable_write_gate();
        match &args.mcp_narrow {
            None => load(&args.policy, caller).map(|l| l.1),
            Some(n) => crate::mcp::load_narrowed(&args.policy, caller, n),
        }
        .map_err(|e| crate::one_line(&e))
    };
    let result = crate::backend::run(&plan, &cmd, &opts, args.tier, &walk_plan);
    // The backend has returned: the run's pid namespace (and with it every process of the run) is
    // gone, so nothing can change what is checked now.
    let created = result.as_ref().ok().and_then(|o| o.created.as_ref());
    let git = git.after(&plan, caller, created);
    let mut outcome = match result {
        Ok(o) => {
            #[cfg(target_os = "linux")]
            if let Err(e) = crate::changes::record_after_run(&plan, started) {
                eprintln!(
                    "stockade: warning: cannot record the copy-on-write changes: {}",
                    escape(&crate::one_line(&e))
                );
            }
            #[cfg(not(target_os = "linux"))]
            let _ = started;
            o
        }
        Err(f) => {
            eprintln!("stockade: error: {}", escape(&f.message));
            if args.json || report_file.is_some() {
                let mut v = serde_json::json!({"tier": f.tier, "error": f.message, "exit_code": f.exit_code});
                git.add_json(&mut v);
                emit(&args, report_file.as_mut(), &v)?;
            }
            return Ok(ExitCode::from(f.exit_code as u8));
        }
    };
    git.add_denials(&mut outcome);
    if let Some(missing) = gate_missing {
        outcome.warnings.push(format!(
            "no write gate: this kernel lacks {missing}; launch walked every writable root for protected names instead (its cost grows with the workspace), and a protected name that did not exist at launch is not refused when the command creates it"
        ));
    }
    report(&args, report_file.as_mut(), &outcome, verbose, &git)?;
    Ok(ExitCode::from((outcome.exit.shell_code() & 0xff) as u8))
}

fn report(
    args: &RunArgs,
    file: Option<&mut std::fs::File>,
    outcome: &RunOutcome,
    verbose: bool,
    git: &GitGuard,
) -> Result<()> {
    for w in &outcome.warnings {
        eprintln!("stockade: warning: {}", escape(w));
    }
    if verbose {
        eprintln!("stockade: tier {} — enforced:", outcome.tier);
        for l in &outcome.enforced {
            eprintln!("stockade:   {:16} {}", escape(&l.layer), escape(&l.detail));
        }
        for d in &outcome.denials {
            eprintln!("stockade: denied {} {}", escape(&d.kind), escape(&d.target));
        }
        eprintln!(
            "stockade: {:?} after {:.1} ms",
            outcome.exit,
            outcome.duration.as_secs_f64() * 1000.0
        );
    }
    // Refusals of the write gate, one line each, always (issue 12 item 5); the line names a
    // path the command chose, so it is escaped like everything else that reaches the terminal.
    for d in &outcome.denials {
        if let Some(m) = &d.message {
            eprintln!("stockade: {}", escape(m));
        }
    }
    if let stockade_policy::backend::ExitKind::TimedOut = outcome.exit {
        eprintln!("stockade: timed out: the command and everything it started were killed");
    }
    if args.json || file.is_some() {
        let mut v = serde_json::to_value(outcome)?;
        v["exit_code"] = outcome.exit.shell_code().into();
        git.add_json(&mut v);
        emit(args, file, &v)?;
    }
    Ok(())
}

fn emit(args: &RunArgs, file: Option<&mut std::fs::File>, v: &serde_json::Value) -> Result<()> {
    // serde_json escapes every control character in strings: what the command chose is data.
    let json = serde_json::to_string(v)?;
    let text = crate::text::json_for_terminal(&json);
    if args.json {
        eprintln!("{text}");
    }
    if let Some(f) = file {
        f.write_all(format!("{text}\n").as_bytes())
            .and_then(|()| f.flush())
            .context("cannot write the report")?;
    }
    Ok(())
}

/// `stockade doctor`: the machine features the backends probe, and for each tier whether it can
/// run here (installed, available, why). Exit 0 when the tier that needs no setup can run.
pub fn doctor(json: bool) -> Result<ExitCode> {
    let Some(tiers) = crate::backend::tiers() else {
        println!("stockade doctor: Stockade has no backend for this operating system yet");
        return Ok(ExitCode::from(crate::EXIT_STOCKADE));
    };
    let mut features: Vec<Feature> = Vec::new();
    let mut report = serde_json::Map::new();
    let mut rows = Vec::new();
    for t in tiers.all() {
        for f in t.features() {
            if !features.iter().any(|g| g.name == f.name) {
                features.push(f);
            }
        }
        let a = t.availability();
        report.insert(t.name().to_string(), serde_json::to_value(&a)?);
        rows.push((t.name(), a));
    }
    let unelevated = rows[0].1.available;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"features": features, "tiers": report})
            )?
        );
    } else {
        if !features.is_empty() {
            println!("kernel features:");
        }
        for f in &features {
            println!(
                "  {:16} {:4} {}",
                f.name,
                if f.available { "yes" } else { "no" },
                f.detail
            );
        }
        println!("tiers:");
        for (name, a) in &rows {
            println!(
                "  {:16} {:4} {}",
                name,
                if a.available { "yes" } else { "no" },
                a.why
            );
        }
    }
    Ok(if unelevated {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_STOCKADE)
    })
}

pub fn clean(
    workspace: Option<std::path::PathBuf>,
    all: bool,
    caller: &Caller,
) -> Result<ExitCode> {
    if all {
        #[cfg(target_os = "linux")]
        for sub in ["ws", "tmp"] {
            let d = caller.state_dir.join(sub);
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if sub == "ws" {
                        crate::changes::remove_state_dir(&p)?;
                    } else {
                        std::fs::remove_dir_all(&p)
                            .with_context(|| format!("cannot remove {}", p.display()))?;
                        println!("removed {}", escape(&p.display().to_string()));
                    }
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let args = crate::PolicyArgs::for_workspace(workspace);
    let (_, plan) = load(&args, caller)?;
    #[cfg(windows)]
    println!(
        "{}",
        stockade_windows::backend::clean(&plan).context("cannot remove Stockade's ACEs")?
    );
    #[cfg(target_os = "linux")]
    crate::changes::clean_state(&plan)?;
    match &plan.temp.persist_dir {
        Some(dir) if dir.exists() => {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
            println!("removed {}", dir.display());
        }
        Some(dir) => println!("nothing to clean ({} does not exist)", dir.display()),
        None => {}
    }
    // The git history snapshots of the workspace's repositories (docs/git.md).
    #[cfg(target_os = "linux")]
    for r in &plan.git_repos {
        let store = crate::gitcheck::store_path(&caller.state_dir, &r.common);
        if store.exists() {
            std::fs::remove_dir_all(&store)
                .with_context(|| format!("cannot remove {}", store.display()))?;
            println!("removed git history snapshots {}", store.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The git protection around one run: the history snapshot before it and the post-run check
/// after it (Linux; see `crate::gitcheck`).
#[derive(Default)]
struct GitGuard {
    #[cfg(target_os = "linux")]
    run: String,
    #[cfg(target_os = "linux")]
    started: Option<std::time::SystemTime>,
    #[cfg(target_os = "linux")]
    snapshots: Vec<crate::gitcheck::SnapshotInfo>,
    #[cfg(target_os = "linux")]
    findings: Vec<crate::gitcheck::Finding>,
}

#[cfg(target_os = "linux")]
impl GitGuard {
    fn before(plan: &stockade_policy::plan::Plan, caller: &Caller, verbose: bool) -> Result<Self> {
        let run = crate::gitcheck::run_id();
        let snapshots = crate::gitcheck::snapshot(plan, &caller.state_dir, &run)?;
        if verbose {
            for s in &snapshots {
                eprintln!(
                    "stockade: git history of {} saved ({} refs, {} new files); restore with: {}",
                    escape(&s.repo),
                    s.refs,
                    s.copied,
                    escape(&s.restore)
                );
            }
        }
        Ok(GitGuard {
            run,
            started: Some(std::time::SystemTime::now()),
            snapshots,
            findings: Vec::new(),
        })
    }

    fn after(
        mut self,
        plan: &stockade_policy::plan::Plan,
        caller: &Caller,
        created: Option<&stockade_policy::backend::CreatedLog>,
    ) -> Self {
        if let Some(started) = self.started {
            self.findings = crate::gitcheck::restore_destroyed(&self.snapshots, started);
            self.findings.extend(crate::gitcheck::post_run(
                plan,
                &caller.state_dir,
                &self.run,
                started,
                created,
            ));
        }
        for f in &self.findings {
            let verb = match f.kind {
                "git-unchecked" => "not checked",
                "git-restored" => "restored",
                _ => "neutralised",
            };
            eprintln!(
                "stockade: {verb}: {} — {}; {}; {}",
                escape(&f.path),
                escape(&f.what),
                escape(&f.action),
                escape(&f.remedy)
            );
        }
        self
    }

    fn add_denials(&self, outcome: &mut RunOutcome) {
        for f in &self.findings {
            outcome.denials.push(stockade_policy::backend::Denial {
                kind: f.kind.to_string(),
                target: f.path.clone(),
                message: None,
            });
        }
    }

    fn add_json(&self, v: &mut serde_json::Value) {
        v["git"] = serde_json::json!({
            "snapshots": self.snapshots,
            "neutralised": self.findings,
        });
    }
}

#[cfg(not(target_os = "linux"))]
impl GitGuard {
    fn before(_: &stockade_policy::plan::Plan, _: &Caller, _: bool) -> Result<Self> {
        Ok(GitGuard::default())
    }
    fn after(
        self,
        _: &stockade_policy::plan::Plan,
        _: &Caller,
        _: Option<&stockade_policy::backend::CreatedLog>,
    ) -> Self {
        self
    }
    fn add_denials(&self, _: &mut RunOutcome) {}
    fn add_json(&self, _: &mut serde_json::Value) {}
}
