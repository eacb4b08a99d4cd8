//! `stockade mcp`: a Model Context Protocol server on stdio, so any agent can run commands in the
//! sandbox. JSON-RPC 2.0, one message per line.
//!
//! Tools:
//! * `run` — run a shell command (`sh -c`) or an argv in the sandbox; returns exit code, stdout,
//!   stderr, the enforced layers and the denial report. Each call re-executes this binary as
//!   `stockade run --report FILE …` with piped output, so a call can never write into the
//!   protocol stream.
//! * `policy` — the effective policy (`stockade policy show --json`) for a workspace.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::process::{Command, ExitCode, Stdio};

const PROTOCOL_VERSION: &str = "2025-06-18";
/// Output kept per stream (the tail, which is where errors are).
const MAX_OUTPUT: usize = 64 * 1024;

pub fn serve() -> Result<ExitCode> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.context("reading the MCP input stream")?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(msg) => handle(&msg),
            Err(e) => Some(error(Value::Null, -32700, &format!("parse error: {e}"))),
        };
        if let Some(r) = reply {
            writeln!(out, "{r}").context("writing to the MCP output stream")?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn ok(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// Answer one message (`None` for notifications).
pub fn handle(msg: &Value) -> Option<Value> {
    let id = msg.get("id").cloned();
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    let id = id?; // notifications get no answer
    Some(match method {
        "initialize" => ok(
            id,
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "stockade", "version": env!("CARGO_PKG_VERSION")},
                "instructions": "Run shell commands in an OS-enforced sandbox: writes only inside the workspace, repository metadata read-only, secrets hidden, network off unless asked."
            }),
        ),
        "ping" => ok(id, json!({})),
        "tools/list" => ok(id, json!({"tools": tools()})),
        "tools/call" => {
            let params = msg.get("params").cloned().unwrap_or(Value::Null);
            let name = params.get("name").and_then(Value::as_str).unwrap_or("");
            let args = params.get("arguments").cloned().unwrap_or(json!({}));
            match call(name, &args) {
                Ok(v) => ok(id, v),
                Err(e) => ok(
                    id,
                    json!({"isError": true, "content": [{"type": "text", "text": crate::one_line(&e)}]}),
                ),
            }
        }
        other => error(id, -32601, &format!("method not found: {other}")),
    })
}

fn tools() -> Value {
    json!([
        {
            "name": "run",
            "description": "Run a command in the Stockade sandbox. The workspace is writable; everything else is read-only; .git and agent config dirs are read-only; secrets are hidden; network is off unless network=\"on\".",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "Shell command, run with sh -c"},
                    "argv": {"type": "array", "items": {"type": "string"}, "description": "Program and arguments (instead of command)"},
                    "workspace": {"type": "string", "description": "Workspace directory (default: the server's cwd)"},
                    "network": {"type": "string", "enum": ["off", "allowlist", "on"]},
                    "allow_domains": {"type": "array", "items": {"type": "string"}, "description": "Domains reachable with network=allowlist"},
                    "writable": {"type": "array", "items": {"type": "string"}},
                    "timeout_secs": {"type": "integer", "minimum": 1},
                    "stdin": {"type": "string"}
                }
            }
        },
        {
            "name": "policy",
            "description": "Show the effective Stockade policy for a workspace, with where each value came from.",
            "inputSchema": {"type": "object", "properties": {"workspace": {"type": "string"}}}
        }
    ])
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(MAX_OUTPUT);
    let mut s = String::from_utf8_lossy(&bytes[start..]).into_owned();
    if start > 0 {
        s.insert_str(0, &format!("[{start} earlier bytes omitted]\n"));
    }
    s
}

fn call(name: &str, args: &Value) -> Result<Value> {
    let exe = std::env::current_exe().context("locating the stockade binary")?;
    let str_arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
    let mut cmd = Command::new(&exe);
    match name {
        "policy" => {
            cmd.args(["policy", "show", "--json"]);
            if let Some(ws) = str_arg("workspace") {
                cmd.arg("--workspace").arg(ws);
            }
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .context("running stockade policy show")?;
            if !out.status.success() {
                anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let v: Value = serde_json::from_slice(&out.stdout)?;
            Ok(
                json!({"content": [{"type": "text", "text": serde_json::to_string_pretty(&v)?}], "structuredContent": v}),
            )
        }
        "run" => {
            let report = tempfile_path()?;
            cmd.args(["run", "--no-pty", "--report"]).arg(&report);
            if let Some(ws) = str_arg("workspace") {
                cmd.arg("--workspace").arg(ws);
            }
            if let Some(n) = str_arg("network") {
                cmd.arg("--network").arg(n);
            }
            if let Some(t) = args.get("timeout_secs").and_then(Value::as_u64) {
                cmd.arg("--timeout").arg(t.to_string());
            }
            for w in args
                .get("writable")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(w) = w.as_str() {
                    cmd.arg("--writable").arg(w);
                }
            }
            cmd.arg("--");
            match (
                str_arg("command"),
                args.get("argv").and_then(Value::as_array),
            ) {
                (Some(c), None) => {
                    cmd.args(["sh", "-c", &c]);
                }
                (None, Some(v)) if !v.is_empty() => {
                    for a in v {
                        cmd.arg(a.as_str().context("argv entries must be strings")?);
                    }
                }
                _ => anyhow::bail!(
                    "give exactly one of `command` (a shell command) or `argv` (a non-empty array)"
                ),
            }
            let stdin_data = str_arg("stdin");
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
            let out = child
                .wait_with_output()
                .context("waiting for stockade run")?;
            let result: Value = std::fs::read_to_string(&report)
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null);
            let _ = std::fs::remove_file(&report);
            let code = out.status.code().unwrap_or(-1);
            let stdout = tail(&out.stdout);
            let stderr = tail(&out.stderr);
            let text = format!("exit code {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
            Ok(json!({
                "content": [{"type": "text", "text": text}],
                "structuredContent": {"exit_code": code, "stdout": stdout, "stderr": stderr, "result": result},
                "isError": code != 0
            }))
        }
        other => anyhow::bail!("unknown tool {other:?}: the tools are `run` and `policy`"),
    }
}

fn tempfile_path() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir();
    for i in 0..100u32 {
        let p = dir.join(format!(
            "stockade-mcp-{}-{}-{i}.json",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .is_ok()
        {
            return Ok(p);
        }
    }
    anyhow::bail!("cannot create a report file in {}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialize_and_list() {
        let r = handle(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}})).unwrap();
        assert_eq!(r["result"]["serverInfo"]["name"], "stockade");
        let r = handle(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"})).unwrap();
        let names: Vec<&str> = r["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["run", "policy"]);
        assert!(handle(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})).is_none());
        let r = handle(&json!({"jsonrpc":"2.0","id":3,"method":"nope"})).unwrap();
        assert_eq!(r["error"]["code"], -32601);
    }

    #[test]
    fn run_requires_exactly_one_command_form() {
        let r = handle(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run","arguments":{}}})).unwrap();
        assert_eq!(r["result"]["isError"], true);
    }
}
