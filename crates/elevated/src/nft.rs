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
pub fn ruleset(table: &str, offline_uids: &[u32], cfg: &NetConfig) -> String {
    let mut ports = cfg.allowed_loopback_tcp_ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let mut s = String::new();
    s.push_str("# Managed by `stockade setup`; do not edit. Removed by `stockade uninstall`.\n");
    s.push_str(&format!("table inet {table}\ndelete table inet {table}\n"));
    s.push_str(&format!("table inet {table} {{\n"));
    s.push_str("\tchain output {\n");
    s.push_str("\t\ttype filter hook output priority filter; policy accept;\n");
    // The same three rules for every caller's offline account, as the single account had them.
    for uid in offline_uids {
        if cfg.allow_local_binding {
            s.push_str(&format!("\t\tmeta skuid {uid} oifname \"lo\" accept\n"));
        } else if !ports.is_empty() {
            let list = ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            s.push_str(&format!(
                "\t\tmeta skuid {uid} oifname \"lo\" tcp dport {{ {list} }} accept\n"
            ));
        }
        s.push_str(&format!(
            "\t\tmeta skuid {uid} meta l4proto tcp reject with tcp reset\n"
        ));
        s.push_str(&format!(
            "\t\tmeta skuid {uid} reject with icmpx admin-prohibited\n"
        ));
    }
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
    let args = ["list", "table", "inet", table];
    let o = run_tool_raw("nft", &args)?;
    if o.success {
        Ok(Some(o.stdout))
    } else if o.stderr.contains("No such file or directory") || o.stderr.contains("does not exist")
    {
        Ok(None)
    } else {
        Err(ToolError::failed("nft", &args, &o))
    }
}

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;

/// The `NFT_MSG_GETGEN` request (netlink header + `nfgenmsg`). Pure.
pub fn getgen_request(seq: u32) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..4].copy_from_slice(&20u32.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0 (kernel assigns), nfgen_family AF_UNSPEC, version NFNETLINK_V0, res_id 0.
    m
}

/// Parses the kernel's answer to [`getgen_request`]: `Ok(generation)`, `Err(errno)` for a
/// netlink error, or `Err(EPROTO)` for anything unexpected. Pure.
pub fn parse_getgen_reply(buf: &[u8]) -> Result<u32, i32> {
    let mut off = 0usize;
    while off + 16 <= buf.len() {
        let rd32 = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let rd16 = |o: usize| u16::from_ne_bytes([buf[o], buf[o + 1]]);
        let len = rd32(off) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let ty = rd16(off + 4);
        if ty == NLMSG_ERROR && len >= 20 {
            let err = rd32(off + 16) as i32;
            return Err(if err < 0 { -err } else { libc::EPROTO });
        }
        if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
            // Attributes follow the 16-byte header and the 4-byte nfgenmsg, 4-byte aligned.
            let mut a = off + 20;
            while a + 4 <= off + len {
                let alen = rd16(a) as usize;
                let aty = rd16(a + 2) & 0x3fff;
                if alen < 4 || a + alen > off + len {
                    break;
                }
                if aty == NFTA_GEN_ID && alen == 8 {
                    return Ok(u32::from_be_bytes([
                        buf[a + 4],
                        buf[a + 5],
                        buf[a + 6],
                        buf[a + 7],
                    ]));
                }
                a += (alen + 3) & !3;
            }
            return Err(libc::EPROTO);
        }
        off += (len + 3) & !3;
    }
    Err(libc::EPROTO)
}

/// The ruleset generation of this network namespace (`NFT_MSG_GETGEN` over netlink, no `nft`
/// process). The kernel bumps it on every committed nftables transaction, so an unchanged
/// generation means an unchanged ruleset. Needs `CAP_NET_ADMIN`.
pub fn ruleset_generation() -> std::io::Result<u32> {
    let mut buf = [0u8; 512];
    let n =
        stockade_sys::netlink::netlink_roundtrip(NETLINK_NETFILTER, &getgen_request(1), &mut buf)?;
    parse_getgen_reply(&buf[..n]).map_err(std::io::Error::from_raw_os_error)
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
    fn getgen_request_and_reply() {
        let r = getgen_request(7);
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 20);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), (10 << 8) | 16);
        // NEWGEN reply: header, nfgenmsg, NFTA_GEN_ID (be 0x01020304), NFTA_GEN_PROC_PID.
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&((10u16 << 8) | 15).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[0, 0, 0x03, 0x04]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&99u32.to_be_bytes());
        assert_eq!(parse_getgen_reply(&m), Ok(0x0102_0304));
        // A netlink error (EPERM) is reported as such.
        let mut e = Vec::new();
        e.extend_from_slice(&36u32.to_ne_bytes());
        e.extend_from_slice(&2u16.to_ne_bytes());
        e.extend_from_slice(&[0; 10]);
        e.extend_from_slice(&(-1i32).to_ne_bytes());
        e.extend_from_slice(&r[..16]);
        assert_eq!(parse_getgen_reply(&e), Err(libc::EPERM));
        // Garbage and truncation are refused.
        assert_eq!(parse_getgen_reply(&m[..30]), Err(libc::EPROTO));
        assert_eq!(parse_getgen_reply(&[]), Err(libc::EPROTO));
    }

    #[test]
    fn default_blocks_everything_for_offline_uid() {
        let r = ruleset("stockade", &[990], &NetConfig::default());
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
        let r = ruleset("stockade", &[7], &cfg);
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
        let r = ruleset("t", &[5], &cfg);
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
