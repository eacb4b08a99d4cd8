//! `stockade mcp`: a Model Context Protocol server on stdio, so any agent can run commands in the
//! sandbox. JSON-RPC 2.0, one message per line.
//!
//! **The policy is the human's.** `stockade mcp` takes the same policy options as `stockade run`
//! (`--workspace`, `--writable`, `--network`, `--allow-domain`, `--read-only`, `--profile`,
//! `--config`, `--timeout`, `--env`); the policy they give, resolved once when the server starts,
//! is the **ceiling** for every call. A call may only narrow it: `read_only`, `network: "off"`, a
//! subset of the allowed domains (or an allowlist under a ceiling of `on`), a subset of the
//! writable roots (or directories beneath them), a `cwd` beneath the workspace, a shorter
//! `timeout_secs`. A call that asks for more is refused with an error naming the server option a
//! human would have to set, and nothing runs. The workspace is fixed per server; a `workspace`
//! argument must name it.
//!
//! Tools:
//! * `run` — run a shell command (`sh -c`) in the sandbox; returns exit code, stdout, stderr
//!   (64 KiB tails), the enforced layers and the denial report. Each call re-executes this binary
//!   as `stockade run <the server's policy options> --mcp-narrow <the call's narrowing> --report
//!   FILE …` with piped output, so a call can never write into the protocol stream; that child
//!   re-resolves the policy and checks again that the call's plan lies within it.
//! * `policy` — the ceiling (`stockade policy show --json` with the server's options).

use crate::{Caller, PolicyArgs};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use stockade_policy::model::NetworkMode;
use stockade_policy::plan::{self, Plan};

const PROTOCOL_VERSION: &str = "2025-06-18";
/// Output kept per stream (the tail, which is where errors are).
const MAX_OUTPUT: usize = 64 * 1024;
/// Longest message line accepted; longer ones are discarded and answered with an error.
const MAX_LINE: usize = 4 << 20;
/// Longest string id echoed back.
const MAX_ID: usize = 256;
/// Longest `timeout_secs` a call may ask for when the ceiling has no timeout (a week).
const MAX_TIMEOUT: u64 = 7 * 24 * 3600;

const RUN_KEYS: &[&str] = &[
    "command",
    "stdin",
    "workspace",
    "cwd",
    "read_only",
    "writable",
    "network",
    "allow_domains",
    "timeout_secs",
];
const POLICY_KEYS: &[&str] = &["workspace"];

/// One call's policy, every field explicit (defaults are the ceiling's): what the server passes
/// to `stockade run --mcp-narrow`. Applying it can only narrow ([`load_narrowed`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Narrowing {
    /// No writable roots at all.
    pub read_only: bool,
    /// Canonical writable roots (each the same as or beneath a ceiling root).
    pub writable: Vec<PathBuf>,
    /// Network mode (never wider than the ceiling's).
    pub network: NetworkMode,
    /// With `allowlist`: the domains (each covered by the ceiling's).
    pub allowed_domains: Vec<String>,
    /// Timeout (never longer than the ceiling's).
    pub timeout_secs: Option<u64>,
    /// Canonical directory the command starts in, beneath the workspace.
    pub cwd: PathBuf,
}

/// Is the domain pattern `req` (normalised) covered by the patterns `ceiling`?
fn domain_covered(req: &str, ceiling: &[String]) -> bool {
    match req.strip_prefix("*.") {
        // `*.H` is covered by `*.H` itself, or by a wildcard that matches H (and so every
        // subdomain of H).
        Some(h) => ceiling.iter().any(|c| {
            c == req
                || (c.starts_with("*.") && stockade_linux_host_allowed(h, std::slice::from_ref(c)))
        }),
        None => stockade_linux_host_allowed(req, ceiling),
    }
}

/// The proxy's matching rule (`*.x` matches subdomains of x, not x; others match exactly).
fn stockade_linux_host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|p| match p.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => host == *p,
    })
}

/// Check that `plan` lies within `ceiling` (same workspace; network, domains, writable roots and
/// timeout no wider).
pub fn within(plan: &Plan, ceiling: &Plan) -> Result<()> {
    if plan.workspace != ceiling.workspace {
        bail!("the call's workspace differs from the server's");
    }
    if plan.network.rank() > ceiling.network.rank() {
        bail!(
            "network {} is wider than the ceiling's {}",
            plan.network,
            ceiling.network
        );
    }
    if plan.network == NetworkMode::Allowlist && ceiling.network == NetworkMode::Allowlist {
        if let Some(d) = plan
            .allowed_domains
            .iter()
            .find(|d| !domain_covered(d, &ceiling.allowed_domains))
        {
            bail!("domain {d} is not in the ceiling's allowed domains");
        }
    }
    if let Some(r) = plan
        .writable_roots
        .iter()
        .find(|r| !ceiling.writable_roots.iter().any(|c| r.starts_with(c)))
    {
        bail!("writable root {} is outside the ceiling's", r.display());
    }
    if let Some(c) = ceiling.limits.timeout_secs {
        if plan.limits.timeout_secs.is_none_or(|t| t > c) {
            bail!("the timeout is longer than the ceiling's {c} s");
        }
    }
    Ok(())
}

/// `stockade run --mcp-narrow JSON`: resolve the policy (the ceiling, again, fresh), apply the
/// narrowing, resolve that, and refuse unless the result lies within the ceiling.
pub fn load_narrowed(args: &PolicyArgs, caller: &Caller, narrowing: &str) -> Result<Plan> {
    let n: Narrowing =
        serde_json::from_str(narrowing).context("--mcp-narrow: not a valid narrowing")?;
    let (mut loaded, ceiling) = crate::load(args, caller)?;
    let pol = &mut loaded.policy;
    pol.filesystem.read_only |= n.read_only;
    pol.filesystem.writable_roots = n
        .writable
        .iter()
        .map(|p| {
            p.to_str()
                .map(str::to_string)
                .with_context(|| format!("writable root {} is not UTF-8", p.display()))
        })
        .collect::<Result<_>>()?;
    pol.network.mode = n.network;
    pol.network.allowed_domains = n.allowed_domains.clone();
    pol.limits.timeout_secs = match (n.timeout_secs, ceiling.limits.timeout_secs) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let plan = crate::plan_for(&loaded.policy, args, caller)?;
    within(&plan, &ceiling).context("refusing a call that would widen the server's policy")?;
    if plan.cwd != n.cwd {
        bail!(
            "the call's directory {} is not where the command would start ({})",
            n.cwd.display(),
            plan.cwd.display()
        );
    }
    Ok(plan)
}

/// The server: its ceiling and where the children's reports go.
struct Server {
    /// The server's policy options, with paths made absolute (given again to every child).
    args: PolicyArgs,
    /// The ceiling, resolved at start.
    ceiling: Plan,
    /// A private directory (0700, outside every writable root) for the children's reports.
    report_dir: PathBuf,
    exe: PathBuf,
    calls: u64,
}

pub fn serve(mut args: PolicyArgs, caller: &Caller) -> Result<ExitCode> {
    // Fix relative paths now: children start in the call's directory.
    let ws = args.workspace.clone().unwrap_or_else(|| caller.cwd.clone());
    args.workspace = Some(
        std::fs::canonicalize(&ws)
            .with_context(|| format!("--workspace {}: not an existing directory", ws.display()))?,
    );
    for w in &mut args.writable {
        if !w.is_empty()
            && !w.starts_with('~')
            && !w.starts_with('!')
            && Path::new(w.as_str()).is_relative()
        {
            *w = caller.cwd.join(w.as_str()).to_string_lossy().into_owned();
        }
    }
    if let Some(c) = &args.config {
        args.config = Some(caller.cwd.join(c));
    }
    let (_, ceiling) = crate::load(&args, caller)
        .context("the server's policy (the ceiling for every call) is not usable")?;
    let report_dir = make_report_dir(caller, &ceiling)?;
    let mut server = Server {
        args,
        ceiling,
        report_dir,
        exe: std::env::current_exe().context("locating the stockade binary")?,
        calls: 0,
    };
    let result = server.serve_stdio();
    let _ = std::fs::remove_dir_all(&server.report_dir);
    result
}

fn make_report_dir(caller: &Caller, ceiling: &Plan) -> Result<PathBuf> {
    #[cfg(unix)]
    use std::os::unix::fs::DirBuilderExt;
    let base = caller.state_dir.join("mcp");
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = base.join(format!("{}-{nanos}", std::process::id()));
    #[cfg_attr(not(unix), allow(unused_mut))] // `mode` (Unix only) is the one mutation
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    builder.mode(0o700);
    builder
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // The children refuse a report inside a writable root; say so now rather than on every call.
    crate::report::report_location(&dir.join("probe.json"), ceiling, &caller.cwd)
        .context("the MCP server keeps its reports in Stockade's state directory")?;
    Ok(dir)
}

/// Read one line of at most [`MAX_LINE`] bytes. `Ok(None)` at end of input; `Ok(Some(false))`
/// when the line was too long (it is discarded up to its newline).
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if any { Some(!too_long) } else { None });
        }
        any = true;
        let (chunk, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if !too_long {
            if buf.len() + chunk > MAX_LINE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&avail[..chunk]);
            }
        }
        r.consume(if done { chunk + 1 } else { chunk });
        if done {
            return Ok(Some(!too_long));
        }
    }
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn ok(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A tool's answer for a refused or invalid call (nothing ran).
fn refused(e: &anyhow::Error) -> Value {
    json!({
        "isError": true,
        "content": [{"type": "text", "text": format!("refused, nothing ran: {}", crate::one_line(e))}],
    })
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(100).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

impl Server {
    fn serve_stdio(&mut self) -> Result<ExitCode> {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut out = std::io::stdout().lock();
        let mut buf = Vec::new();
        while let Some(fits) = read_line(&mut input, &mut buf).context("reading the MCP input")? {
            let reply = if fits {
                self.handle_line(&buf)
            } else {
                Some(error(
                    Value::Null,
                    -32600,
                    &format!("message longer than {MAX_LINE} bytes, discarded"),
                ))
            };
            if let Some(r) = reply {
                writeln!(out, "{r}").context("writing to the MCP output stream")?;
                out.flush()?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Answer one line (`None` for notifications and blank lines).
    fn handle_line(&mut self, line: &[u8]) -> Option<Value> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        match serde_json::from_slice::<Value>(line) {
            Err(e) => Some(error(Value::Null, -32700, &format!("parse error: {e}"))),
            Ok(Value::Array(_)) => Some(error(
                Value::Null,
                -32600,
                "batch requests are not supported: send one JSON-RPC message per line",
            )),
            Ok(Value::Object(msg)) => self.handle(&msg),
            Ok(_) => Some(error(
                Value::Null,
                -32600,
                "a JSON-RPC message is an object",
            )),
        }
    }

    fn handle(&mut self, msg: &Map<String, Value>) -> Option<Value> {
        let id = match msg.get("id") {
            None => None,
            Some(v @ Value::Number(_)) => Some(v.clone()),
            Some(Value::String(s)) if s.len() <= MAX_ID => Some(Value::String(s.clone())),
            Some(_) => {
                return Some(error(
                    Value::Null,
                    -32600,
                    &format!("id must be a number or a string of at most {MAX_ID} bytes"),
                ))
            }
        };
        let bad = |id: Option<Value>, code, m: &str| id.map(|id| error(id, code, m));
        if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Some(error(
                id.unwrap_or(Value::Null),
                -32600,
                "jsonrpc must be \"2.0\"",
            ));
        }
        let Some(method) = msg.get("method").and_then(Value::as_str) else {
            // A response from the client (we send no requests) or garbage.
            return bad(id, -32600, "method must be a string");
        };
        let params = match msg.get("params") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return bad(id, -32602, "params must be an object"),
        };
        let id = id?; // notifications get no answer
        Some(match method {
            "initialize" => ok(
                id,
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "stockade", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": format!(
                        "Run shell commands in an OS-enforced sandbox. The policy is fixed by the person who started this server; calls may only narrow it. {}",
                        self.ceiling_text()
                    ),
                }),
            ),
            "ping" => ok(id, json!({})),
            "tools/list" => ok(id, json!({"tools": self.tools()})),
            "tools/call" => {
                let name = match params.get("name") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => return Some(error(id, -32602, "tools/call needs a string `name`")),
                };
                let args = match params.get("arguments") {
                    None => Map::new(),
                    Some(Value::Object(m)) => m.clone(),
                    Some(_) => return Some(error(id, -32602, "`arguments` must be an object")),
                };
                let r = match name {
                    "run" => self.run_tool(&args),
                    "policy" => self.policy_tool(&args),
                    other => {
                        return Some(error(
                            id,
                            -32602,
                            &format!(
                                "unknown tool {:?}: the tools are `run` and `policy`",
                                clip(other)
                            ),
                        ))
                    }
                };
                ok(id, r.unwrap_or_else(|e| refused(&e)))
            }
            other => error(id, -32601, &format!("method not found: {:?}", clip(other))),
        })
    }

    /// The ceiling in force, in one sentence (for tool descriptions).
    fn ceiling_text(&self) -> String {
        let c = &self.ceiling;
        let writable = if c.writable_roots.is_empty() {
            "nothing (read-only)".to_string()
        } else {
            c.writable_roots
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let network = match c.network {
            NetworkMode::Allowlist => format!("allowlist ({})", c.allowed_domains.join(", ")),
            m => m.to_string(),
        };
        let timeout = c
            .limits
            .timeout_secs
            .map_or("none".to_string(), |t| format!("{t} s"));
        format!(
            "Policy in force for every call: workspace {}; writable: {writable}; network: {network}; timeout: {timeout}. Everything else is read-only, .git and agent config directories are read-only, secrets are hidden.",
            c.workspace.display()
        )
    }

    fn tools(&self) -> Value {
        json!([
            {
                "name": "run",
                "description": format!(
                    "Run a shell command (sh -c) in the Stockade sandbox. {} A call may narrow this policy (read_only, network \"off\", fewer allow_domains, fewer writable roots, a cwd beneath the workspace, a shorter timeout_secs); a call asking for more is refused.",
                    self.ceiling_text()
                ),
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "minLength": 1, "description": "Shell command, run with sh -c"},
                        "stdin": {"type": "string", "description": "Data for the command's standard input"},
                        "cwd": {"type": "string", "description": "Directory to start in: relative to the workspace, or an absolute path beneath it (no `..`, no symlinks)"},
                        "read_only": {"type": "boolean", "description": "Make nothing writable, not even the workspace"},
                        "writable": {"type": "array", "items": {"type": "string"}, "description": "Only these of the policy's writable roots (or directories beneath them) are writable, besides the workspace"},
                        "network": {"type": "string", "enum": ["off", "allowlist", "on"], "description": "At most the policy's network mode"},
                        "allow_domains": {"type": "array", "items": {"type": "string"}, "description": "With network \"allowlist\": domains covered by the policy"},
                        "timeout_secs": {"type": "integer", "minimum": 1, "maximum": self.ceiling.limits.timeout_secs.unwrap_or(MAX_TIMEOUT)},
                        "workspace": {"type": "string", "description": "Must be the server's workspace (it is fixed)"}
                    },
                    "required": ["command"],
                    "additionalProperties": false
                }
            },
            {
                "name": "policy",
                "description": "Show the policy in force (the ceiling for every run call), with where each value came from.",
                "inputSchema": {
                    "type": "object",
                    "properties": {"workspace": {"type": "string", "description": "Must be the server's workspace"}},
                    "required": [],
                    "additionalProperties": false
                }
            }
        ])
    }

    fn check_workspace(&self, args: &Map<String, Value>) -> Result<()> {
        if let Some(ws) = opt_str(args, "workspace")? {
            let same = std::fs::canonicalize(ws).is_ok_and(|c| c == self.ceiling.workspace);
            if !same {
                bail!(
                    "workspace {:?}: this server's workspace is fixed to {}; serving another one takes another server started by a human (`stockade mcp --workspace DIR`)",
                    clip(ws),
                    self.ceiling.workspace.display()
                );
            }
        }
        Ok(())
    }

    fn policy_tool(&self, args: &Map<String, Value>) -> Result<Value> {
        check_keys(args, POLICY_KEYS, "policy")?;
        self.check_workspace(args)?;
        let out = Command::new(&self.exe)
            .args(["policy", "show", "--json"])
            .args(ceiling_cli(&self.args))
            .current_dir(&self.ceiling.workspace)
            .stdin(Stdio::null())
            .output()
            .context("running stockade policy show")?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(json!({
            "content": [{"type": "text", "text": format!("{}\n{}", self.ceiling_text(), serde_json::to_string_pretty(&v)?)}],
            "structuredContent": v,
        }))
    }

    /// Validate a `run` call's arguments against the ceiling and turn them into a narrowing.
    fn narrowing(&self, args: &Map<String, Value>) -> Result<Narrowing> {
        check_keys(args, RUN_KEYS, "run")?;
        self.check_workspace(args)?;
        let c = &self.ceiling;
        let read_only = match args.get("read_only") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => bail!("`read_only` must be true or false"),
        };
        // Network.
        let network = match opt_str(args, "network")? {
            None => None,
            Some("off") => Some(NetworkMode::Off),
            Some("allowlist") => Some(NetworkMode::Allowlist),
            Some("on") => Some(NetworkMode::On),
            Some(other) => bail!(
                "`network` must be \"off\", \"allowlist\" or \"on\", not {:?}",
                clip(other)
            ),
        };
        let domains = opt_str_list(args, "allow_domains")?;
        let widen_net = |m: NetworkMode| {
            anyhow::anyhow!(
                "network \"{m}\" is wider than this server's network {}; only a human can allow it, by starting the server with `stockade mcp --network {}`",
                c.network,
                m
            )
        };
        let (network, allowed_domains) = match (network, domains) {
            (None, None) => (c.network, c.allowed_domains.clone()),
            (Some(NetworkMode::Off), None) => (NetworkMode::Off, vec![]),
            (Some(NetworkMode::On), None) => {
                if c.network != NetworkMode::On {
                    return Err(widen_net(NetworkMode::On));
                }
                (NetworkMode::On, vec![])
            }
            (Some(NetworkMode::Off | NetworkMode::On), Some(_)) => {
                bail!("`allow_domains` goes with network \"allowlist\"")
            }
            (Some(NetworkMode::Allowlist) | None, domains) => {
                if c.network == NetworkMode::Off {
                    return Err(widen_net(NetworkMode::Allowlist));
                }
                let list = match domains {
                    Some(d) => d,
                    None if c.network == NetworkMode::Allowlist => c.allowed_domains.clone(),
                    None => bail!("network \"allowlist\" needs `allow_domains`"),
                };
                let mut out = Vec::new();
                for d in list {
                    let norm = plan::domain_pattern(&d)
                        .map_err(|e| anyhow::anyhow!("allow_domains: {e}"))?;
                    if c.network == NetworkMode::Allowlist
                        && !domain_covered(&norm, &c.allowed_domains)
                    {
                        bail!(
                            "domain {norm:?} is not among this server's allowed domains ({}); only a human can add it, by starting the server with `stockade mcp --allow-domain {norm}`",
                            c.allowed_domains.join(", ")
                        );
                    }
                    if !out.contains(&norm) {
                        out.push(norm);
                    }
                }
                if out.is_empty() {
                    bail!("`allow_domains` is empty: use network \"off\" for no network");
                }
                (NetworkMode::Allowlist, out)
            }
        };
        // Writable roots.
        let writable = match opt_str_list(args, "writable")? {
            None => c.writable_roots.clone(),
            Some(list) => {
                if read_only && !list.is_empty() {
                    bail!("`read_only` and `writable` contradict each other");
                }
                let mut out = Vec::new();
                for w in list {
                    let p = Path::new(&w);
                    let p = if p.is_absolute() {
                        p.to_path_buf()
                    } else {
                        c.workspace.join(p)
                    };
                    let canon = std::fs::canonicalize(&p).with_context(|| {
                        format!("writable {:?}: not an existing directory", clip(&w))
                    })?;
                    if !c.writable_roots.iter().any(|r| canon.starts_with(r)) {
                        if c.writable_roots.is_empty() {
                            bail!(
                                "writable {:?}: this server is read-only; only a human can make something writable, by starting the server without --read-only",
                                clip(&w)
                            );
                        }
                        bail!(
                            "writable {:?} ({}) is outside this server's writable roots ({}); only a human can add it, by starting the server with `stockade mcp --writable {}`",
                            clip(&w),
                            canon.display(),
                            c.writable_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "),
                            canon.display()
                        );
                    }
                    out.push(canon);
                }
                out
            }
        };
        // Timeout.
        let timeout_secs = match args.get("timeout_secs") {
            None => c.limits.timeout_secs,
            Some(v) => {
                let Some(t) = v.as_u64().filter(|t| *t >= 1) else {
                    bail!("`timeout_secs` must be a whole number of seconds, at least 1");
                };
                match c.limits.timeout_secs {
                    Some(max) if t > max => bail!(
                        "timeout_secs {t} is longer than this server's timeout of {max} s; only a human can raise it, by starting the server with `stockade mcp --timeout {t}`"
                    ),
                    None if t > MAX_TIMEOUT => {
                        bail!("timeout_secs {t} is absurd: at most {MAX_TIMEOUT} (a week)")
                    }
                    _ => Some(t),
                }
            }
        };
        let cwd = match opt_str(args, "cwd")? {
            None => c.workspace.clone(),
            Some(d) => beneath_workspace(&c.workspace, d)?,
        };
        Ok(Narrowing {
            read_only,
            writable: if read_only { vec![] } else { writable },
            network,
            allowed_domains: if network == NetworkMode::Allowlist {
                allowed_domains
            } else {
                vec![]
            },
            timeout_secs,
            cwd,
        })
    }

    fn run_tool(&mut self, args: &Map<String, Value>) -> Result<Value> {
        let n = self.narrowing(args)?;
        let command = match args.get("command") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None => {
                bail!("`command` (a non-empty shell command) is required")
            }
            Some(_) => bail!("`command` must be a string"),
        };
        if command.contains('\0') {
            bail!("`command` contains a NUL byte");
        }
        let stdin_data = opt_str(args, "stdin")?.map(str::to_string);
        self.calls += 1;
        let report = self.report_dir.join(format!("call-{}.json", self.calls));
        let _ = std::fs::remove_file(&report);
        let mut cmd = Command::new(&self.exe);
        cmd.args(["run", "--no-pty", "--report"])
            .arg(&report)
            .arg("--mcp-narrow")
            .arg(serde_json::to_string(&n)?)
            .args(ceiling_cli(&self.args))
            .args(["--", "sh", "-c"])
            .arg(&command)
            .current_dir(&n.cwd);
        cmd.stdin(if stdin_data.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting stockade run")?;
        if let (Some(data), Some(mut pipe)) = (stdin_data, child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = pipe.write_all(data.as_bytes());
            });
        }
        let so = child
            .stdout
            .take()
            .map(|s| std::thread::spawn(move || read_tail(s)));
        let se = child
            .stderr
            .take()
            .map(|s| std::thread::spawn(move || read_tail(s)));
        let status = child.wait().context("waiting for stockade run")?;
        let join = |h: Option<std::thread::JoinHandle<String>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        let (stdout, stderr) = (join(so), join(se));
        let result: Value = std::fs::read_to_string(&report)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        let _ = std::fs::remove_file(&report);
        let code = status.code().unwrap_or(-1);
        let text = format!("exit code {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        Ok(json!({
            "content": [{"type": "text", "text": text}],
            "structuredContent": {"exit_code": code, "stdout": stdout, "stderr": stderr, "result": result},
            "isError": code != 0
        }))
    }
}

/// The server's policy options, as flags for a child `stockade run` / `policy show`.
fn ceiling_cli(a: &PolicyArgs) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    if let Some(w) = &a.workspace {
        v.extend(["--workspace".into(), w.clone().into()]);
    }
    for w in &a.writable {
        v.extend(["--writable".into(), w.into()]);
    }
    if let Some(n) = a.network {
        v.extend(["--network".into(), n.to_string().into()]);
    }
    for d in &a.allow_domain {
        v.extend(["--allow-domain".into(), d.into()]);
    }
    if a.read_only {
        v.push("--read-only".into());
    }
    if let Some(p) = &a.profile {
        v.extend(["--profile".into(), p.into()]);
    }
    if let Some(c) = &a.config {
        v.extend(["--config".into(), c.clone().into()]);
    }
    if a.allow_dangerous_roots {
        v.push("--allow-dangerous-roots".into());
    }
    for (k, val) in &a.env {
        v.extend(["--env".into(), format!("{k}={val}").into()]);
    }
    if let Some(t) = a.timeout {
        v.extend(["--timeout".into(), t.to_string().into()]);
    }
    v
}

fn check_keys(args: &Map<String, Value>, allowed: &[&str], tool: &str) -> Result<()> {
    if let Some(k) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
        bail!(
            "unknown argument {:?}: the `{tool}` tool takes only {}",
            clip(k),
            allowed.join(", ")
        );
    }
    Ok(())
}

fn opt_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match args.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => bail!("`{key}` must be a string"),
    }
}

fn opt_str_list(args: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>> {
    match args.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => bail!("`{key}` must be an array of strings"),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => bail!("`{key}` must be an array of strings"),
    }
}

/// A `cwd` argument as a canonical directory beneath `workspace`: relative to it, or absolute
/// beneath it; `..` refused; opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` so a
/// symlink anywhere on the way (or a path leaving the workspace) is refused.
fn beneath_workspace(workspace: &Path, cwd: &str) -> Result<PathBuf> {
    let shown = clip(cwd);
    let p = Path::new(cwd);
    let rel = if p.is_absolute() {
        p.strip_prefix(workspace).map_err(|_| {
            anyhow::anyhow!(
                "cwd {shown:?} is not beneath the workspace {}; the command can only start inside it",
                workspace.display()
            )
        })?
    } else {
        p
    };
    let mut clean = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                bail!("cwd {shown:?}: `..` is not allowed; give a directory beneath the workspace")
            }
            Component::RootDir | Component::Prefix(_) => {
                bail!("cwd {shown:?} is not beneath the workspace")
            }
        }
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        let no_links = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        let ws = crate::report::openat2(
            None,
            workspace,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            no_links,
        )
        .with_context(|| format!("opening the workspace {}", workspace.display()))?;
        if !clean.as_os_str().is_empty() {
            crate::report::openat2(
                Some(ws.as_fd()),
                &clean,
                libc::O_PATH | libc::O_DIRECTORY,
                0,
                no_links | libc::RESOLVE_BENEATH,
            )
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => anyhow::anyhow!(
                    "cwd {shown:?}: the path goes through a symbolic link; give the real directory beneath the workspace"
                ),
                Some(libc::EXDEV) => anyhow::anyhow!("cwd {shown:?} leaves the workspace"),
                _ => anyhow::anyhow!("cwd {shown:?}: not a directory beneath the workspace: {e}"),
            })?;
        }
    }
    Ok(workspace.join(clean))
}

/// Read a stream to its end, keeping only the last [`MAX_OUTPUT`] bytes.
fn read_tail(mut r: impl Read) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut dropped = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * MAX_OUTPUT {
                    let cut = kept.len() - MAX_OUTPUT;
                    kept.drain(..cut);
                    dropped += cut;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if kept.len() > MAX_OUTPUT {
        let cut = kept.len() - MAX_OUTPUT;
        kept.drain(..cut);
        dropped += cut;
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        s.insert_str(0, &format!("[{dropped} earlier bytes omitted]\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_subsets() {
        let c = vec!["crates.io".to_string(), "*.npmjs.org".to_string()];
        assert!(domain_covered("crates.io", &c));
        assert!(domain_covered("registry.npmjs.org", &c));
        assert!(domain_covered("*.npmjs.org", &c));
        assert!(domain_covered("*.a.npmjs.org", &c));
        assert!(!domain_covered("npmjs.org", &c));
        assert!(!domain_covered("*.crates.io", &c));
        assert!(!domain_covered("evil.io", &c));
        assert!(!domain_covered("crates.io.evil.io", &c));
    }

    #[test]
    fn long_lines_are_discarded_and_the_next_line_is_read() {
        let mut data = vec![b'x'; MAX_LINE + 10];
        data.extend_from_slice(b"\n{\"a\":1}\nlast");
        let mut r = std::io::BufReader::new(&data[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Some(false));
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Some(true));
        assert_eq!(buf, b"{\"a\":1}");
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Some(true));
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), None);
    }

    #[test]
    fn cwd_must_stay_beneath_the_workspace() {
        let root = std::env::temp_dir().join(format!("stockade-mcp-cwd-{}", std::process::id()));
        let ws = root.join("ws");
        std::fs::create_dir_all(ws.join("sub/deeper")).unwrap();
        std::os::unix::fs::symlink(&root, ws.join("link")).unwrap();
        let ws = std::fs::canonicalize(&ws).unwrap();
        assert_eq!(
            beneath_workspace(&ws, "sub/deeper").unwrap(),
            ws.join("sub/deeper")
        );
        assert_eq!(beneath_workspace(&ws, "./sub").unwrap(), ws.join("sub"));
        let abs = ws.join("sub");
        assert_eq!(beneath_workspace(&ws, abs.to_str().unwrap()).unwrap(), abs);
        for bad in ["..", "sub/../..", "/", "/etc", "link", "link/ws", "missing"] {
            assert!(beneath_workspace(&ws, bad).is_err(), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
