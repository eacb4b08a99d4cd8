//! The nftables ruleset that cuts the offline account off the network.
//!
//! Pure part: [`ruleset`] renders the text from the configuration. System part: [`apply`],
//! [`list_table`], [`delete_table`] call `nft`.

use crate::fsutil::{run_tool, run_tool_raw, ToolError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Network configuration of the offline account, mirroring the unelevated tier's design.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetConfig {
    /// Loopback TCP ports the offline account may connect to (e.g. a local proxy).
    pub allowed_loopback_tcp_ports: Vec<u16>,
    /// Open all of loopback (TCP and UDP) to the offline account.
    pub allow_local_binding: bool,
}

/// Renders the complete nft script for table `inet <table>`.
///
/// The script is one transaction: `table` (creates it if missing, so the `delete` cannot fail),
/// `delete table`, then the full definition. `nft -f` applies it atomically: at no point does the
/// offline uid run without rules, and re-applying never duplicates rules.
///
/// Policy for packets *sent* by a socket owned by `offline_uid` (output hook, so it sees every
/// locally generated packet, IPv4 and IPv6):
/// * on `lo`: allowed TCP destination ports are accepted; with `allow_local_binding` everything
///   on `lo` is accepted; everything else on `lo` (other TCP ports, all UDP, ...) is rejected;
/// * on any other interface: rejected (TCP with a reset, the rest with ICMP admin-prohibited) so
///   commands fail fast instead of hanging.
pub fn ruleset(table: &str, offline_uid: u32, cfg: &NetConfig) -> String {
    let mut ports = cfg.allowed_loopback_tcp_ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let mut s = String::new();
    s.push_str("# Managed by `stockade setup`; do not edit. Removed by `stockade uninstall`.\n");
    s.push_str(&format!("table inet {table}\ndelete table inet {table}\n"));
    s.push_str(&format!("table inet {table} {{\n"));
    s.push_str("\tchain output {\n");
    s.push_str("\t\ttype filter hook output priority filter; policy accept;\n");
    if cfg.allow_local_binding {
        s.push_str(&format!(
            "\t\tmeta skuid {offline_uid} oifname \"lo\" accept\n"
        ));
    } else if !ports.is_empty() {
        let list = ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(
            "\t\tmeta skuid {offline_uid} oifname \"lo\" tcp dport {{ {list} }} accept\n"
        ));
    }
    s.push_str(&format!(
        "\t\tmeta skuid {offline_uid} meta l4proto tcp reject with tcp reset\n"
    ));
    s.push_str(&format!(
        "\t\tmeta skuid {offline_uid} reject with icmpx admin-prohibited\n"
    ));
    s.push_str("\t}\n}\n");
    s
}

/// Validates a table name: `nft` identifiers, kept simple.
pub fn valid_table_name(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && t.len() <= 32
}

/// Applies a script file atomically with `nft -f`.
pub fn apply(file: &Path) -> Result<(), ToolError> {
    run_tool("nft", &["-f", &file.to_string_lossy()]).map(|_| ())
}

/// `nft list table inet <table>`; `None` when the table does not exist.
pub fn list_table(table: &str) -> Result<Option<String>, ToolError> {
    let o = run_tool_raw("nft", &["list", "table", "inet", table])?;
    if o.success {
        Ok(Some(o.stdout))
    } else if o.stderr.contains("No such file or directory") || o.stderr.contains("does not exist")
    {
        Ok(None)
    } else {
        Err(ToolError::Failed {
            cmdline: format!("nft list table inet {table}"),
            status: format!("exit code {}", o.code),
            stderr: o.stderr.trim().to_string(),
        })
    }
}

/// Deletes the table if present.
pub fn delete_table(table: &str) -> Result<bool, ToolError> {
    if list_table(table)?.is_none() {
        return Ok(false);
    }
    run_tool("nft", &["delete", "table", "inet", table])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_blocks_everything_for_offline_uid() {
        let r = ruleset("stockade", 990, &NetConfig::default());
        assert!(
            r.contains("table inet stockade\ndelete table inet stockade\ntable inet stockade {")
        );
        assert!(r.contains("meta skuid 990 meta l4proto tcp reject with tcp reset"));
        assert!(r.contains("meta skuid 990 reject with icmpx admin-prohibited"));
        assert!(
            !r.contains("accept\n\t\tmeta skuid"),
            "no accept rule without ports: {r}"
        );
        assert!(!r.contains("oifname"));
    }

    #[test]
    fn proxy_ports_sorted_deduplicated_loopback_tcp_only() {
        let cfg = NetConfig {
            allowed_loopback_tcp_ports: vec![8080, 3128, 8080],
            allow_local_binding: false,
        };
        let r = ruleset("stockade", 7, &cfg);
        assert!(r.contains("meta skuid 7 oifname \"lo\" tcp dport { 3128, 8080 } accept"));
        assert!(!r.contains("udp"));
        // The accept comes before the rejects.
        let a = r.find("accept\n").unwrap();
        let rej = r.find("reject").unwrap();
        assert!(a < rej);
    }

    #[test]
    fn local_binding_opens_all_loopback() {
        let cfg = NetConfig {
            allowed_loopback_tcp_ports: vec![1],
            allow_local_binding: true,
        };
        let r = ruleset("t", 5, &cfg);
        assert!(r.contains("meta skuid 5 oifname \"lo\" accept"));
        assert!(!r.contains("dport"));
    }

    #[test]
    fn table_names() {
        assert!(valid_table_name("stockade"));
        assert!(valid_table_name("stockade_test1"));
        assert!(!valid_table_name("Stockade"));
        assert!(!valid_table_name("a-b"));
        assert!(!valid_table_name(""));
        assert!(!valid_table_name("1a"));
    }
}
