//! `stockade`: run a command in an OS-enforced sandbox.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use stockade_policy::config::{self, CliOverrides, LoadRequest};
use stockade_policy::model::NetworkMode;
use stockade_policy::plan::{self, PlanRequest};

mod admin;
mod backend;
#[cfg(target_os = "linux")]
mod changes;
#[cfg(target_os = "linux")]
mod gitcheck;
#[cfg(target_os = "linux")]
mod linediff;
mod mcp;
mod report;
mod run;
mod text;

/// Exit status when stockade itself fails (policy, setup, usage) — the command never ran.
pub const EXIT_STOCKADE: u8 = 125;

#[derive(Parser, Debug)]
#[command(
    name = "stockade",
    version,
    about = "Run commands in an OS-enforced sandbox: write only the workspace, no network, secrets hidden."
)]
struct Cli {
    /// More detail on stderr (enforced layers, plan).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a command in the sandbox: `stockade run [OPTIONS] -- COMMAND [ARGS...]`.
    Run(RunArgs),
    /// Show the effective policy and where each value came from.
    Policy {
        #[command(subcommand)]
        action: PolicyCmd,
    },
    /// Report which kernel features are present and which tiers can run here.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Serve the Model Context Protocol on stdio (tools: `run`, `policy`). The policy options
    /// given here are the ceiling for every call: a call may narrow them, never widen them.
    Mcp {
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Install or repair the elevated tier (as root / administrator, once).
    Setup(admin::SetupArgs),
    /// Remove everything `stockade setup` installed.
    Uninstall,
    /// Run the elevated tier's privileged broker in the foreground (root; for machines without systemd).
    Broker(admin::BrokerArgs),
    /// Remove the sandbox's persistent state for a workspace (private /tmp, copy-on-write layers).
    Clean {
        /// Workspace (default: current directory).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Every workspace's state.
        #[arg(long)]
        all: bool,
    },
    /// List what sandboxed commands changed outside the writable roots (or one path's change).
    Diff {
        /// Workspace (default: current directory).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Machine-readable list.
        #[arg(long)]
        json: bool,
        /// One path to show in detail (a text diff where it is text).
        path: Option<PathBuf>,
    },
    /// Copy reviewed changes from the copy-on-write layer to the host.
    Apply {
        /// Workspace (default: current directory).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Apply files that make programs run, stale and unrecorded entries too.
        #[arg(long)]
        force: bool,
        /// Host paths to apply.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Drop changes from the copy-on-write layer (all of them without PATH).
    Discard {
        /// Workspace (default: current directory).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Host paths whose changes are dropped.
        paths: Vec<PathBuf>,
    },
    /// Size of the persistent sandbox state.
    Status {
        /// Workspace (default: current directory).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Machine-readable.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Print the effective policy.
    Show {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also resolve it into the enforcement plan (canonical paths).
        #[arg(long)]
        plan: bool,
    },
}

/// Options that select and adjust the policy (shared by `run` and `policy show`).
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Workspace directory: writable, and where `.stockade/config.toml` is read (default: cwd).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Another writable directory (repeatable).
    #[arg(long = "writable", value_name = "PATH")]
    writable: Vec<String>,
    /// Network: `off` (private loopback only), `allowlist` (HTTP(S) proxy to `--allow-domain`s) or `on`.
    #[arg(long, value_name = "MODE")]
    network: Option<NetworkMode>,
    /// A domain reachable in `allowlist` mode (repeatable): `crates.io`, `*.npmjs.org`,
    /// `example.com:8443` (another port than 80/443), `10.0.0.0/8` (lists private addresses).
    #[arg(long = "allow-domain", value_name = "DOMAIN")]
    allow_domain: Vec<String>,
    /// No writable roots at all, not even the workspace.
    #[arg(long)]
    read_only: bool,
    /// Named profile from the config files.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// An extra config file, applied after the user and workspace configs.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Allow a writable root that is `/`, a system directory or your home directory itself.
    #[arg(long)]
    allow_dangerous_roots: bool,
    /// Set an environment variable in the sandbox (repeatable), `NAME=VALUE`.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Kill the whole command tree after SECS seconds (exit status 124).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

impl PolicyArgs {
    /// The policy of `workspace` with no option given (what the state commands and the
    /// workspace-only helpers load).
    pub fn for_workspace(workspace: Option<PathBuf>) -> Self {
        PolicyArgs {
            workspace,
            writable: vec![],
            network: None,
            allow_domain: vec![],
            read_only: false,
            profile: None,
            config: None,
            allow_dangerous_roots: false,
            env: vec![],
            timeout: None,
        }
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Pass this inherited descriptor into the sandbox (repeatable); all others are closed.
    #[arg(long = "pass-fd", value_name = "N")]
    pass_fd: Vec<i32>,
    /// Sandbox tier: `auto`, `unelevated` or `elevated`.
    #[arg(long, value_enum, default_value_t = backend::TierChoice::Auto)]
    tier: backend::TierChoice,
    /// Give the command a pseudo-terminal (default: when stdin and stdout are terminals).
    #[arg(long, overrides_with = "no_pty")]
    pty: bool,
    /// Never allocate a pseudo-terminal.
    #[arg(long)]
    no_pty: bool,
    /// After the command, print the machine-readable result (JSON) on stderr.
    #[arg(long)]
    json: bool,
    /// Write the machine-readable result (JSON) to FILE (opened before the command starts; it
    /// must lie outside every writable root).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The write gate (`on`, the default where the kernel has it): every write-intent call of the
    /// command is judged by a supervisor, so launch need not walk the workspace. `off` walks
    /// every writable root at launch instead (the protection without the gate; for comparison
    /// and benchmarks). Only on the command line: no configuration file or MCP call sets it.
    #[arg(long = "write-gate", value_enum, default_value_t = WriteGateArg::On)]
    write_gate: WriteGateArg,
    /// Internal to `stockade mcp`: one call's narrowing of the policy (JSON). It can only narrow.
    #[arg(long, hide = true, value_name = "JSON")]
    mcp_narrow: Option<String>,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// `--write-gate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteGateArg {
    /// Use the gate where the kernel supports it (else walk, with a warning).
    On,
    /// Walk every writable root at launch; no gate.
    Off,
}

/// Set once by `stockade run --write-gate off` (or `--tier elevated`, which has no gate) before
/// any plan is made: every plan of this process then walks.
static WRITE_GATE_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Plans made from now on walk every writable root (no write gate).
pub fn disable_write_gate() {
    WRITE_GATE_OFF.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether plans are made for the write gate: `Ok(true)` when the kernel has it and it was not
/// turned off, `Ok(false)` when turned off, `Err(missing feature)` when the kernel lacks it.
#[cfg(target_os = "linux")]
pub fn write_gate() -> std::result::Result<bool, String> {
    if WRITE_GATE_OFF.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(false);
    }
    // Asked of the kernel once per process.
    static SUPPORT: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    SUPPORT
        .get_or_init(stockade_linux::probe::write_gate_support)
        .clone()
        .map(|()| true)
}

/// No write gate outside Linux.
#[cfg(not(target_os = "linux"))]
pub fn write_gate() -> std::result::Result<bool, String> {
    Ok(false)
}

/// Everything a run needs that comes from the caller's process.
pub struct Caller {
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
    pub env: Vec<(OsString, OsString)>,
    pub state_dir: PathBuf,
}

impl Caller {
    fn current() -> Result<Self> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var_os("USERPROFILE").filter(|h| !h.is_empty()))
            .map(PathBuf::from);
        let state_dir = match std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
            Some(s) => PathBuf::from(s).join("stockade"),
            None => home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".local/state/stockade"),
        };
        Ok(Caller {
            cwd,
            home,
            env: std::env::vars_os().collect(),
            state_dir,
        })
    }
}

/// Load the layered config and resolve it into a plan.
pub fn load(args: &PolicyArgs, caller: &Caller) -> Result<(config::Loaded, plan::Plan)> {
    let workspace = args.workspace.clone().unwrap_or_else(|| caller.cwd.clone());
    let mut cli = CliOverrides {
        writable: args.writable.clone(),
        network: args.network,
        read_only: args.read_only,
        allow_dangerous_roots: args.allow_dangerous_roots,
        timeout_secs: args.timeout,
        env_set: args.env.clone(),
        allow_domains: args.allow_domain.clone(),
    };
    // `--writable` paths are the user's, typed relative to where they stand.
    cli.absolutize_writable(&caller.cwd);
    let req = LoadRequest {
        workspace: workspace.clone(),
        home: caller.home.clone(),
        config_dir: None,
        config_file: args.config.clone(),
        profile: args.profile.clone(),
        cli,
    };
    let loaded = config::load(&req)?;
    let plan = plan_for(&loaded.policy, args, caller)?;
    Ok((loaded, plan))
}

/// Resolve a (loaded) policy into a plan for `args`'s workspace, refusing a plan that would make
/// Stockade's own state writable.
pub fn plan_for(
    policy: &stockade_policy::model::Policy,
    args: &PolicyArgs,
    caller: &Caller,
) -> Result<plan::Plan> {
    let workspace = args.workspace.clone().unwrap_or_else(|| caller.cwd.clone());
    // Only the Linux tiers implement `git.mode = "commit"` (its pins and post-run check); elsewhere
    // every `.git` stays read-only whatever the policy says.
    #[cfg(not(target_os = "linux"))]
    let policy = &{
        let mut p = policy.clone();
        p.git.mode = stockade_policy::model::GitMode::ReadOnly;
        p
    };
    let plan = plan::resolve(
        policy,
        &PlanRequest {
            workspace,
            cwd: caller.cwd.clone(),
            home: caller.home.clone(),
            env: caller.env.clone(),
            state_dir: caller.state_dir.clone(),
            write_gate: write_gate().unwrap_or(false),
        },
    )?;
    // Stockade's own state (persistent temp dirs of every workspace, the walk cache that decides
    // what gets protected) must never be writable from inside.
    if !policy.filesystem.allow_dangerous_roots {
        let state =
            std::fs::canonicalize(&caller.state_dir).unwrap_or_else(|_| caller.state_dir.clone());
        if let Some(r) = plan.writable_roots.iter().find(|r| state.starts_with(r)) {
            anyhow::bail!(
                "refusing to make {} writable: it contains Stockade's state directory {} (pass --allow-dangerous-roots if you really mean it)",
                r.display(),
                state.display()
            );
        }
    }
    Ok(plan)
}

fn main() -> ExitCode {
    // The elevated tier's broker starts each run as this executable with a hidden first argument.
    #[cfg(target_os = "linux")]
    stockade_elevated::runner::main_if_child();
    // The Windows elevated tier starts this binary as its runner under the sandbox account.
    #[cfg(windows)]
    if let Some(code) = stockade_windows::maybe_run_as_runner() {
        return ExitCode::from((code & 0xff) as u8);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line, without its usage block.
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.trim_start().starts_with("tip:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let msg = msg.join(" ");
            let msg = msg.trim_start_matches("error: ");
            eprintln!("stockade: error: {msg} (see `stockade --help`)");
            return ExitCode::from(2);
        }
    };
    if cli.verbose || std::env::var_os("STOCKADE_LOG").is_some() {
        let filter =
            tracing_subscriber::EnvFilter::try_from_env("STOCKADE_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if cli.verbose { "debug" } else { "warn" })
            });
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(|| text::EscapedStderr)
            .without_time()
            .init();
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stockade: error: {}", text::escape(&one_line(&e)));
            ExitCode::from(EXIT_STOCKADE)
        }
    }
}

/// An error chain as one line: `context: cause: cause`.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for (i, c) in e.chain().enumerate() {
        if i > 0 {
            s.push_str(": ");
        }
        s.push_str(&c.to_string().replace('\n', " "));
    }
    s
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let caller = Caller::current()?;
    match cli.cmd {
        Cmd::Run(args) => run::run(args, &caller, cli.verbose),
        Cmd::Policy {
            action: PolicyCmd::Show { policy, json, plan },
        } => {
            let (loaded, resolved) = load(&policy, &caller)?;
            if json {
                let mut v = loaded.to_json();
                if plan {
                    v["plan"] = serde_json::to_value(&resolved)?;
                }
                let out = serde_json::to_string_pretty(&v)?;
                println!("{}", text::json_for_terminal(&out));
            } else {
                // Values can come from a workspace config and names from the workspace's tree.
                for line in loaded.render_text().lines() {
                    println!("{}", text::escape(line));
                }
                if plan {
                    let out = serde_json::to_string_pretty(&resolved)?;
                    println!(
                        "\n# plan (resolved against the filesystem)\n{}",
                        text::json_for_terminal(&out)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Doctor { json } => run::doctor(json),
        Cmd::Mcp { policy } => mcp::serve(policy, &caller),
        Cmd::Setup(a) => admin::setup(&a),
        Cmd::Uninstall => admin::uninstall(),
        Cmd::Broker(a) => admin::broker(&a),
        Cmd::Clean { workspace, all } => run::clean(workspace, all, &caller),
        #[cfg(target_os = "linux")]
        Cmd::Diff {
            workspace,
            json,
            path,
        } => changes::cmd_diff(workspace, json, path.as_deref(), &caller),
        #[cfg(target_os = "linux")]
        Cmd::Apply {
            workspace,
            force,
            paths,
        } => changes::cmd_apply(workspace, force, &paths, &caller),
        #[cfg(target_os = "linux")]
        Cmd::Discard { workspace, paths } => changes::cmd_discard(workspace, &paths, &caller),
        #[cfg(target_os = "linux")]
        Cmd::Status { workspace, json } => changes::cmd_status(workspace, json, &caller),
        #[cfg(not(target_os = "linux"))]
        Cmd::Diff { .. } | Cmd::Apply { .. } | Cmd::Discard { .. } | Cmd::Status { .. } => {
            anyhow::bail!("copy-on-write overlays exist on Linux only")
        }
    }
}
