//! Windows Filtering Platform (WFP) filters for the offline sandbox account, as data, and a model
//! of how WFP arbitrates them (for the tests).
//!
//! Every filter carries an `ALE_USER_ID` condition (a security descriptor granting
//! `FWP_ACTRL_MATCH_FILTER` to the offline account's SID), so nothing outside that account is
//! matched. In Stockade's own sublayer the highest-weight matching filter decides:
//!
//! | weight | layer | action | match |
//! | --- | --- | --- | --- |
//! | 10 | `ALE_AUTH_CONNECT_V4`/`V6` | permit | loopback, TCP, remote port = an allowed proxy port |
//! | 1 | `ALE_AUTH_CONNECT_V4`/`V6` | block | everything else (any protocol: TCP, UDP incl. DNS to any server, ICMP) |
//! | 1 | `ALE_AUTH_RECV_ACCEPT_V4`/`V6` | block | every inbound connection to the account |
//!
//! What no `ALE_USER_ID` filter sees: traffic a Windows service makes on the account's behalf
//! (the DNS Client's queries, the SMB redirector for `\\server\share`, WebDAV, BITS) runs under
//! the service's identity. Not a plan property; only a real host can show what is matched.
//!
//! Setup installs them persistently in Stockade's sublayer ([`SUBLAYER_KEY`]) under keys derived
//! from their names ([`filter_key`]; names carry the account, so callers never share one), and
//! each offline run reads every one back and refuses to start unless all match the plan
//! (`win::wfp::verify`). The self-test also adds them in a dynamic session and reads them back.

use crate::sid::Sid;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The WFP layer a filter sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// `FWPM_LAYER_ALE_AUTH_CONNECT_V4`: outbound connect / first UDP send / ICMP, IPv4.
    ConnectV4,
    /// `FWPM_LAYER_ALE_AUTH_CONNECT_V6`.
    ConnectV6,
    /// `FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4`: inbound accept / first receive, IPv4.
    RecvAcceptV4,
    /// `FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6`.
    RecvAcceptV6,
}

impl Layer {
    /// True for the IPv6 layers.
    pub fn is_v6(self) -> bool {
        matches!(self, Layer::ConnectV6 | Layer::RecvAcceptV6)
    }
}

/// One filter condition (all conditions of a filter must match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `FWPM_CONDITION_ALE_USER_ID`, `FWP_MATCH_EQUAL`, a self-relative security descriptor
    /// (from this SDDL) granting `FWP_ACTRL_MATCH_FILTER` (`CC`) to the account.
    UserSddl(String),
    /// `FWPM_CONDITION_IP_REMOTE_ADDRESS` within `addr/prefix`.
    RemotePrefix(IpAddr, u8),
    /// `FWPM_CONDITION_IP_REMOTE_PORT` equal.
    RemotePort(u16),
    /// `FWPM_CONDITION_IP_PROTOCOL` equal (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    Protocol(u8),
}

/// Permit or block (both terminating).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `FWP_ACTION_PERMIT`.
    Permit,
    /// `FWP_ACTION_BLOCK`.
    Block,
}

/// One WFP filter in Stockade's sublayer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WfpFilter {
    /// Display name.
    pub name: String,
    /// Layer.
    pub layer: Layer,
    /// Weight inside the sublayer (`FWP_UINT8`; higher is evaluated first).
    pub weight: u8,
    /// Conditions (AND).
    pub conditions: Vec<Condition>,
    /// Action.
    pub action: Action,
}

/// `FWP_ACTRL_MATCH_FILTER` for `sid` (what `FWPM_CONDITION_ALE_USER_ID` compares against the
/// connecting process's token).
pub fn user_sddl(sid: &Sid) -> String {
    format!("D:(A;;CC;;;{sid})")
}

/// Key of Stockade's WFP sublayer (fixed: every caller's filters live in it).
pub const SUBLAYER_KEY: u128 = 0x5f0c_6a2e_9d41_4b8a_b3f7_51c2_e8a0_d417;

/// The filter key for a filter name: 128 bits from two FNV-1a-64 passes (different offset
/// bases), stable across runs so setup, runs and uninstall find the same filter.
pub fn filter_key(name: &str) -> u128 {
    let fnv = |basis: u64| {
        name.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x8422_2325_cbf2_9ce4))
}

/// Weight of the permit filters for allowed loopback ports.
pub const PERMIT_WEIGHT: u8 = 10;
/// Weight of the block filters.
pub const BLOCK_WEIGHT: u8 = 1;

/// The filters for the offline account. `allowed_loopback_ports`: TCP ports on loopback the
/// sandbox may still reach (a filtering proxy); 0 entries are ignored.
pub fn offline_filters(offline: &Sid, allowed_loopback_ports: &[u16]) -> Vec<WfpFilter> {
    let user = Condition::UserSddl(user_sddl(offline));
    let mut out = Vec::new();
    for (layer, lo, prefix) in [
        (Layer::ConnectV4, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        (Layer::ConnectV6, IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    ] {
        let mut ports: Vec<u16> = allowed_loopback_ports
            .iter()
            .copied()
            .filter(|p| *p != 0)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        for p in ports {
            out.push(WfpFilter {
                name: format!("Stockade offline: permit loopback tcp {p} ({layer:?})"),
                layer,
                weight: PERMIT_WEIGHT,
                conditions: vec![
                    user.clone(),
                    Condition::RemotePrefix(lo, prefix),
                    Condition::Protocol(6),
                    Condition::RemotePort(p),
                ],
                action: Action::Permit,
            });
        }
    }
    for layer in [
        Layer::ConnectV4,
        Layer::ConnectV6,
        Layer::RecvAcceptV4,
        Layer::RecvAcceptV6,
    ] {
        out.push(WfpFilter {
            name: format!("Stockade offline: block all ({layer:?})"),
            layer,
            weight: BLOCK_WEIGHT,
            conditions: vec![user.clone()],
            action: Action::Block,
        });
    }
    out
}

/// A connection attempt as the ALE layers classify it (model input).
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The SIDs of the token the connecting process holds (user and groups); a service acting
    /// for the account holds the service's SIDs, not these.
    pub token_sids: Vec<Sid>,
    /// Outbound (connect layers) or inbound (recv-accept layers).
    pub outbound: bool,
    /// Remote address.
    pub remote: IpAddr,
    /// Remote port (0 for ICMP).
    pub port: u16,
    /// IP protocol number.
    pub protocol: u8,
}

fn layer_of(a: &Attempt) -> Layer {
    match (a.outbound, a.remote.is_ipv6()) {
        (true, false) => Layer::ConnectV4,
        (true, true) => Layer::ConnectV6,
        (false, false) => Layer::RecvAcceptV4,
        (false, true) => Layer::RecvAcceptV6,
    }
}

fn in_prefix(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The SID an `ALE_USER_ID` SDDL of [`user_sddl`]'s form grants.
fn sddl_sid(sddl: &str) -> Option<&str> {
    sddl.strip_prefix("D:(A;;CC;;;")?.strip_suffix(')')
}

fn matches(c: &Condition, a: &Attempt) -> bool {
    match c {
        Condition::UserSddl(s) => {
            sddl_sid(s).is_some_and(|sid| a.token_sids.iter().any(|t| t.to_string() == sid))
        }
        Condition::RemotePrefix(net, p) => in_prefix(a.remote, *net, *p),
        Condition::RemotePort(p) => a.port == *p,
        Condition::Protocol(p) => a.protocol == *p,
    }
}

/// What Stockade's sublayer decides: the action of the highest-weight filter in the attempt's
/// layer whose conditions all match, or `None` (no filter matched: the sublayer has no say).
pub fn decide(filters: &[WfpFilter], a: &Attempt) -> Option<Action> {
    let layer = layer_of(a);
    filters
        .iter()
        .filter(|f| f.layer == layer && f.conditions.iter().all(|c| matches(c, a)))
        .max_by_key(|f| f.weight)
        .map(|f| f.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> Sid {
        Sid::parse(s).unwrap()
    }

    fn attempt(who: &Sid, outbound: bool, remote: &str, port: u16, protocol: u8) -> Attempt {
        Attempt {
            token_sids: vec![who.clone(), Sid::everyone()],
            outbound,
            remote: remote.parse().unwrap(),
            port,
            protocol,
        }
    }

    #[test]
    fn filter_keys_are_stable_and_distinct() {
        let off = sid("S-1-5-21-1-2-3-1001");
        let fs = offline_filters(&off, &[3128, 8080]);
        let keys: std::collections::BTreeSet<u128> =
            fs.iter().map(|f| filter_key(&f.name)).collect();
        assert_eq!(keys.len(), fs.len());
        assert_eq!(filter_key("a"), filter_key("a"));
        assert!(!keys.contains(&SUBLAYER_KEY));
    }

    #[test]
    fn every_filter_is_scoped_to_the_offline_account() {
        let off = sid("S-1-5-21-1-2-3-1001");
        let fs = offline_filters(&off, &[3128, 0, 3128]);
        assert_eq!(
            fs.len(),
            2 + 4,
            "one permit per port per family, four blocks"
        );
        for f in &fs {
            assert_eq!(
                f.conditions.first(),
                Some(&Condition::UserSddl(format!("D:(A;;CC;;;{off})"))),
                "{f:?} would match other users"
            );
        }
        // Another user (the caller, the online account, a service) is never matched.
        let me = sid("S-1-5-21-1-2-3-1000");
        for (out, addr, port, proto) in [
            (true, "93.184.216.34", 443, 6),
            (true, "127.0.0.1", 22, 6),
            (false, "10.0.0.2", 445, 6),
        ] {
            assert_eq!(decide(&fs, &attempt(&me, out, addr, port, proto)), None);
        }
    }

    #[test]
    fn offline_account_is_blocked_except_allowed_loopback_tcp_ports() {
        let off = sid("S-1-5-21-1-2-3-1001");
        let fs = offline_filters(&off, &[3128]);
        let cases = [
            // (outbound, remote, port, protocol, expected)
            (true, "93.184.216.34", 443, 6, Action::Block), // https
            (true, "8.8.8.8", 53, 17, Action::Block),       // DNS sent by the process itself
            (true, "8.8.8.8", 0, 1, Action::Block),         // ICMP echo
            (true, "2001:db8::1", 443, 6, Action::Block),
            (true, "10.0.0.5", 445, 6, Action::Block), // SMB opened by the process itself
            (true, "127.0.0.1", 3128, 6, Action::Permit), // the proxy
            (true, "127.0.0.2", 3128, 6, Action::Permit),
            (true, "::1", 3128, 6, Action::Permit),
            (true, "127.0.0.1", 3128, 17, Action::Block), // UDP to the proxy port
            (true, "127.0.0.1", 22, 6, Action::Block),    // other loopback services
            (true, "::1", 22, 6, Action::Block),
            (true, "128.0.0.1", 3128, 6, Action::Block), // not loopback
            (false, "10.0.0.2", 8080, 6, Action::Block), // inbound
            (false, "::1", 8080, 6, Action::Block),
        ];
        for (out, addr, port, proto, want) in cases {
            assert_eq!(
                decide(&fs, &attempt(&off, out, addr, port, proto)),
                Some(want),
                "{out} {addr}:{port}/{proto}"
            );
        }
        // Without allowed ports loopback is blocked too.
        let none = offline_filters(&off, &[]);
        assert_eq!(
            decide(&none, &attempt(&off, true, "127.0.0.1", 3128, 6)),
            Some(Action::Block)
        );
    }

    #[test]
    fn service_mediated_traffic_is_not_matched() {
        // The DNS Client service resolves for the account under NETWORK SERVICE; the SMB
        // redirector connects as SYSTEM. The filters cannot see the account there: this is
        // the documented gap, not a property to rely on.
        let off = sid("S-1-5-21-1-2-3-1001");
        let fs = offline_filters(&off, &[]);
        let dns_client = Attempt {
            token_sids: vec![sid("S-1-5-20")],
            outbound: true,
            remote: "8.8.8.8".parse().unwrap(),
            port: 53,
            protocol: 17,
        };
        assert_eq!(decide(&fs, &dns_client), None);
    }
}
