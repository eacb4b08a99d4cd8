//! Kernel feature probes for `stockade doctor`.

use serde::Serialize;
use std::path::Path;

/// One feature and whether it is usable.
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    /// Feature name.
    pub name: &'static str,
    /// Usable here.
    pub available: bool,
    /// What was found.
    pub detail: String,
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Try to create a user namespace in a throwaway child (the only reliable test).
pub fn userns_works() -> Result<(), String> {
    match stockade_sys::clone3_fork((libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as u64) {
        Ok(stockade_sys::Forked::Child) => stockade_sys::exit_now(0),
        Ok(stockade_sys::Forked::Parent { pid, .. }) => {
            let _ = stockade_sys::waitpid(pid, false);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Whether this kernel can run the write gate; `Err` names the missing feature: seccomp user
/// notification (`user_notif` in `/proc/sys/kernel/seccomp/actions_avail`), and
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19, which also has `SECCOMP_IOCTL_NOTIF_ADDFD`
/// with `SECCOMP_ADDFD_FLAG_SEND`), asked of the kernel without installing anything
/// ([`stockade_sys::seccomp::gate_supported`]). One file read and one syscall: cheap enough for
/// every launch.
pub fn write_gate_support() -> Result<(), String> {
    let actions = read("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    if !actions.split_whitespace().any(|a| a == "user_notif") {
        return Err(
            "seccomp user notification (no user_notif in /proc/sys/kernel/seccomp/actions_avail)"
                .into(),
        );
    }
    stockade_sys::seccomp::gate_supported().map_err(|e| {
        format!(
            "{} (Linux {}+, with SECCOMP_IOCTL_NOTIF_ADDFD): {}",
            e.feature, e.since, e.source
        )
    })
}

/// Probe every feature Stockade can use.
pub fn features() -> Vec<Feature> {
    let mut out = Vec::new();
    let userns = userns_works();
    let mut detail = match &userns {
        Ok(()) => "unprivileged user namespaces can be created".to_string(),
        Err(e) => format!("cannot create a user namespace: {e}"),
    };
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        detail.push_str(" (AppArmor restricts unprivileged user namespaces)");
    }
    out.push(Feature {
        name: "user-namespaces",
        available: userns.is_ok(),
        detail,
    });
    let abi = stockade_sys::landlock::kernel_abi();
    out.push(Feature {
        name: "landlock",
        available: abi > 0,
        detail: if abi > 0 {
            format!("ABI {abi}")
        } else {
            "not supported or not enabled at boot".into()
        },
    });
    let seccomp = read("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false);
    out.push(Feature {
        name: "seccomp",
        available: seccomp,
        detail: if seccomp {
            "seccomp filters supported".into()
        } else {
            "no Seccomp line in /proc/self/status".into()
        },
    });
    let gate = write_gate_support();
    out.push(Feature {
        name: "write-gate",
        available: gate.is_ok(),
        detail: match gate {
            Ok(()) => "seccomp user notification with ADDFD and WAIT_KILLABLE_RECV: protected names judged per call, no walk at launch".into(),
            Err(missing) => format!("missing {missing}: launch walks every writable root instead"),
        },
    });
    let cg = [
        "/sys/fs/cgroup/cgroup.controllers",
        "/sys/fs/cgroup/unified/cgroup.controllers",
    ]
    .iter()
    .find(|p| Path::new(p).exists())
    .map(|p| p.to_string());
    out.push(Feature {
        name: "cgroup-v2",
        available: cg.is_some(),
        detail: cg
            .map(|p| format!("mounted ({p})"))
            .unwrap_or_else(|| "no cgroup v2 hierarchy found".into()),
    });
    let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .iter()
        .find(|p| Path::new(p).exists());
    out.push(Feature {
        name: "nftables",
        available: nft.is_some(),
        detail: nft
            .map(|p| format!("{p} present"))
            .unwrap_or_else(|| "nft not installed (elevated tier needs it)".into()),
    });
    out
}
