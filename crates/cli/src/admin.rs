//! `stockade setup`, `uninstall` and `broker`: installing the elevated tier.

#[cfg(not(target_os = "linux"))]
use anyhow::bail;
use anyhow::Result;
use std::process::ExitCode;

/// Options of `stockade setup`.
#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// Only report whether the installation matches its record (exit 0 no drift, 1 drift, 2 not installed).
    #[arg(long)]
    check: bool,
    /// A loopback TCP port the offline account may still reach (repeatable), e.g. a proxy.
    #[arg(long = "allow-port", value_name = "PORT")]
    allow_port: Vec<u16>,
    /// Let the offline account bind and reach any loopback port.
    #[arg(long)]
    allow_local_binding: bool,
    /// Reset the network configuration to the default (nothing on loopback allowed).
    #[arg(long)]
    reset_network: bool,
    /// Create the pair of sandbox accounts of this host user now (repeatable; otherwise the
    /// broker creates a user's pair on their first run).
    #[arg(long = "user", value_name = "NAME")]
    user: Vec<String>,
}

/// Options of `stockade broker`.
#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// Use the listening socket passed by systemd socket activation.
    #[arg(long)]
    socket_activated: bool,
}

/// The uid of a host user named on the command line.
#[cfg(target_os = "linux")]
fn uid_of_user(name: &str) -> Result<u32> {
    let out = std::process::Command::new("id")
        .args(["-u", "--", name])
        .output()
        .map_err(|e| anyhow::anyhow!("running id -u: {e}"))?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
    match (out.status.success(), uid) {
        (true, Ok(u)) => Ok(u),
        _ => anyhow::bail!("--user {}: no such user", crate::text::escape(name)),
    }
}

#[cfg(target_os = "linux")]
fn layout(args: Option<&SetupArgs>) -> Result<stockade_elevated::SetupOptions> {
    let mut o = stockade_elevated::SetupOptions {
        broker_exe: std::env::current_exe()?,
        ..Default::default()
    };
    if let Some(a) = args {
        for name in &a.user {
            let uid = uid_of_user(name)?;
            o.users.push(uid);
        }
        if a.reset_network || a.allow_local_binding || !a.allow_port.is_empty() {
            o.net = Some(stockade_elevated::nft::NetConfig {
                allowed_loopback_tcp_ports: a.allow_port.clone(),
                allow_local_binding: a.allow_local_binding,
            });
        }
    }
    Ok(o)
}

#[cfg(target_os = "linux")]
pub fn setup(args: &SetupArgs) -> Result<ExitCode> {
    let o = layout(Some(args))?;
    if args.check {
        let (lines, code) = stockade_elevated::check(&o)?.lines();
        for l in lines {
            println!("{l}");
        }
        return Ok(ExitCode::from(code));
    }
    for l in stockade_elevated::setup(&o)?.lines() {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(target_os = "linux")]
pub fn uninstall() -> Result<ExitCode> {
    let r = stockade_elevated::uninstall(&layout(None)?)?;
    for l in &r.removed {
        println!("{l}");
    }
    for p in &r.problems {
        eprintln!("stockade: problem: {p}");
    }
    Ok(if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(target_os = "linux")]
pub fn broker(args: &BrokerArgs) -> Result<ExitCode> {
    let o = layout(None)?;
    let opts = stockade_elevated::BrokerOptions {
        socket_path: Some(o.socket_path.clone()),
        setup: o,
        socket_activated: args.socket_activated,
    };
    stockade_elevated::serve_broker(&opts)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(windows)]
pub fn setup(args: &SetupArgs) -> Result<ExitCode> {
    if args.check || args.allow_local_binding || args.reset_network {
        bail!(
            "--check, --allow-local-binding and --reset-network are not implemented on Windows yet"
        );
    }
    let opts = stockade_windows::SetupOptions {
        allowed_loopback_ports: args.allow_port.clone(),
    };
    match stockade_windows::setup(&opts) {
        Ok(o) => {
            if o.performed.is_empty() {
                println!("already installed; nothing changed");
            }
            for s in &o.performed {
                println!("{s:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.needs_elevation() => {
            let argv: Vec<String> = std::env::args().skip(1).collect();
            let code = stockade_windows::win::setup::relaunch_elevated(&argv)?;
            Ok(ExitCode::from((code & 0xff) as u8))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(windows)]
pub fn uninstall() -> Result<ExitCode> {
    for s in stockade_windows::uninstall()? {
        println!("{s:?}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(windows)]
pub fn broker(_args: &BrokerArgs) -> Result<ExitCode> {
    bail!("the broker is part of the Linux elevated tier; on Windows the runner is started by `stockade run --tier elevated`")
}

#[cfg(not(any(target_os = "linux", windows)))]
pub fn setup(_args: &SetupArgs) -> Result<ExitCode> {
    bail!("no elevated tier for this operating system")
}

#[cfg(not(any(target_os = "linux", windows)))]
pub fn uninstall() -> Result<ExitCode> {
    bail!("no elevated tier for this operating system")
}

#[cfg(not(any(target_os = "linux", windows)))]
pub fn broker(_args: &BrokerArgs) -> Result<ExitCode> {
    bail!("no elevated tier for this operating system")
}
