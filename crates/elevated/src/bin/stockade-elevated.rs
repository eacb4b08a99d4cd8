//! Stand-alone front end for the elevated tier (until `stockade` integrates the library):
//!
//! ```text
//! stockade-elevated setup [--check] [--allow-port N]... [--allow-local-binding] [--reset-network] [LAYOUT]
//! stockade-elevated uninstall [LAYOUT]
//! stockade-elevated broker [--socket-activated] [LAYOUT]
//! stockade-elevated run [--network off|on] [--writable DIR]... [--protect PATH]...
//!                       [--deny-read PATH]... [--allow-unix-socket PATH]... [--cwd DIR] [--timeout SECS] [--socket PATH] -- CMD ARGS...
//! LAYOUT: [--prefix P] [--state-dir D] [--config-dir D] [--systemd-dir D] [--socket PATH] [--exe PATH]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use stockade_elevated::broker::{serve_broker, BrokerOptions};
use stockade_elevated::client::ElevatedBackend;
use stockade_elevated::protocol::{RunRequest, PROTOCOL_VERSION};
use stockade_elevated::setup::SetupOptions;
use stockade_policy::model::LimitsPolicy;
use stockade_policy::NetworkMode;

fn main() -> ExitCode {
    // The broker starts each run as this executable with a hidden first argument.
    stockade_elevated::runner::main_if_child();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stockade-elevated: {e}");
            ExitCode::from(125)
        }
    }
}

fn take(args: &mut Vec<String>, flag: &str) -> Result<Option<String>, String> {
    if let Some(i) = args.iter().position(|a| a == flag) {
        if i + 1 >= args.len() {
            return Err(format!("{flag} needs a value"));
        }
        let v = args.remove(i + 1);
        args.remove(i);
        return Ok(Some(v));
    }
    Ok(None)
}

fn take_all(args: &mut Vec<String>, flag: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    while let Some(v) = take(args, flag)? {
        out.push(v);
    }
    Ok(out)
}

fn flag(args: &mut Vec<String>, flag: &str) -> bool {
    if let Some(i) = args.iter().position(|a| a == flag) {
        args.remove(i);
        true
    } else {
        false
    }
}

fn layout(args: &mut Vec<String>) -> Result<SetupOptions, String> {
    let mut o = SetupOptions::default();
    if let Some(v) = take(args, "--prefix")? {
        o.prefix = v;
    }
    if let Some(v) = take(args, "--state-dir")? {
        o.state_dir = v.into();
    }
    if let Some(v) = take(args, "--config-dir")? {
        o.config_dir = v.into();
    }
    if let Some(v) = take(args, "--systemd-dir")? {
        o.systemd_dir = v.into();
    }
    if let Some(v) = take(args, "--socket")? {
        o.socket_path = v.into();
    }
    o.broker_exe = match take(args, "--exe")? {
        Some(v) => v.into(),
        None => {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/stockade"))
        }
    };
    // Network flags replace the installed configuration; without any, it is kept.
    let ports = take_all(args, "--allow-port")?;
    let local = flag(args, "--allow-local-binding");
    let reset = flag(args, "--reset-network");
    if reset || local || !ports.is_empty() {
        let mut net = stockade_elevated::nft::NetConfig {
            allowed_loopback_tcp_ports: Vec::new(),
            allow_local_binding: local,
        };
        for p in ports {
            net.allowed_loopback_tcp_ports
                .push(p.parse().map_err(|_| format!("bad port {p:?}"))?);
        }
        o.net = Some(net);
    }
    Ok(o)
}

fn real_main(mut args: Vec<String>) -> Result<ExitCode, String> {
    let sub = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    match sub.as_str() {
        "setup" => {
            let check = flag(&mut args, "--check");
            let o = layout(&mut args)?;
            if check {
                let (lines, code) = stockade_elevated::check(&o)
                    .map_err(|e| e.to_string())?
                    .lines();
                for l in lines {
                    println!("{l}");
                }
                return Ok(ExitCode::from(code));
            }
            for l in stockade_elevated::setup(&o)
                .map_err(|e| e.to_string())?
                .lines()
            {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        "uninstall" => {
            let o = layout(&mut args)?;
            let r = stockade_elevated::uninstall(&o).map_err(|e| e.to_string())?;
            for l in &r.removed {
                println!("{l}");
            }
            for p in &r.problems {
                eprintln!("problem: {p}");
            }
            Ok(if r.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        "broker" => {
            let socket_activated = flag(&mut args, "--socket-activated");
            let o = layout(&mut args)?;
            let opts = BrokerOptions {
                socket_path: Some(o.socket_path.clone()),
                setup: o,
                socket_activated,
            };
            serve_broker(&opts).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        "run" => {
            let dd = args
                .iter()
                .position(|a| a == "--")
                .ok_or("run needs `-- CMD ARGS...`")?;
            let mut cmdv = args.split_off(dd);
            cmdv.remove(0);
            if cmdv.is_empty() {
                return Err("no command".into());
            }
            let network: NetworkMode = take(&mut args, "--network")?
                .unwrap_or_else(|| "off".into())
                .parse()?;
            let writable: Vec<PathBuf> = take_all(&mut args, "--writable")?
                .into_iter()
                .map(PathBuf::from)
                .collect();
            let protected: Vec<PathBuf> = take_all(&mut args, "--protect")?
                .into_iter()
                .map(PathBuf::from)
                .collect();
            let deny: Vec<PathBuf> = take_all(&mut args, "--deny-read")?
                .into_iter()
                .map(PathBuf::from)
                .collect();
            let sockets: Vec<PathBuf> = take_all(&mut args, "--allow-unix-socket")?
                .into_iter()
                .map(PathBuf::from)
                .collect();
            let cwd: PathBuf = match take(&mut args, "--cwd")? {
                Some(c) => c.into(),
                None => std::env::current_dir().map_err(|e| e.to_string())?,
            };
            let timeout = take(&mut args, "--timeout")?
                .map(|t| t.parse::<u64>().map_err(|_| format!("bad timeout {t:?}")))
                .transpose()?;
            let verbose = flag(&mut args, "--verbose");
            let o = layout(&mut args)?;
            if !args.is_empty() {
                return Err(format!("unknown arguments {args:?}"));
            }
            let env: Vec<(String, String)> = std::env::vars().collect();
            let req = RunRequest {
                version: PROTOCOL_VERSION,
                network,
                workspace: writable.first().cloned().unwrap_or_else(|| cwd.clone()),
                cwd,
                writable_roots: writable,
                protected,
                deny_read: deny,
                allow_unix_sockets: sockets,
                program: cmdv.remove(0),
                args: cmdv,
                env,
                limits: LimitsPolicy::default(),
                timeout_ms: timeout.map(|t| t * 1000),
            };
            let b = ElevatedBackend {
                socket_path: o.socket_path.clone(),
                progress: true,
            };
            let out = match b.run_request(&req) {
                Ok(out) => out,
                // Not executable: exit as a shell would (127 not found, 126 not executable).
                Err(stockade_elevated::ClientError::Exec { message, exit_code }) => {
                    eprintln!("stockade-elevated: {message}");
                    return Ok(ExitCode::from(exit_code.clamp(0, 255) as u8));
                }
                Err(e) => return Err(e.to_string()),
            };
            if verbose {
                eprintln!(
                    "stockade: tier {} exit {:?} in {:?}",
                    out.tier, out.exit, out.duration
                );
                for l in &out.enforced {
                    eprintln!("stockade: enforced {}: {}", l.layer, l.detail);
                }
            }
            for w in &out.warnings {
                eprintln!("stockade: warning: {w}");
            }
            for d in &out.denials {
                eprintln!("stockade: denied {} {}", d.kind, d.target);
            }
            Ok(ExitCode::from(out.exit.shell_code().clamp(0, 255) as u8))
        }
        _ => Err(
            "usage: stockade-elevated setup|uninstall|broker|run ... (see the crate docs)".into(),
        ),
    }
}
