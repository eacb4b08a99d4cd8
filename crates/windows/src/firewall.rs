//! Windows Firewall rules for the elevated tier, as data. The apply layer hands each rule to
//! `INetFwPolicy2::Rules::Add` (`INetFwRule3`, whose `LocalUserAuthorizedList` scopes the rule to
//! one account's SID).
//!
//! Offline account: block all non-loopback traffic in both directions, and outbound loopback
//! except the allowed proxy ports (TCP). Online account: no rules.

use crate::sid::Sid;
use serde::Serialize;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Group name shared by every Stockade rule (used to find and remove them).
pub const RULE_GROUP: &str = "Stockade sandbox";

/// Rule direction (`NET_FW_RULE_DIRECTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    /// `NET_FW_RULE_DIR_IN` (1).
    In,
    /// `NET_FW_RULE_DIR_OUT` (2).
    Out,
}

/// IP protocol (`NET_FW_IP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// Any (256); ports cannot be set.
    Any,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
}

impl Protocol {
    /// The `NET_FW_IP_PROTOCOL` number.
    pub fn number(self) -> i32 {
        match self {
            Protocol::Any => 256,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// One block rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallRule {
    /// Unique rule name.
    pub name: String,
    /// Description shown in the firewall UI.
    pub description: String,
    /// Direction.
    pub direction: Direction,
    /// Protocol.
    pub protocol: Protocol,
    /// `RemoteAddresses` string (comma-separated ranges).
    pub remote_addresses: String,
    /// `RemotePorts` string (only with TCP/UDP).
    pub remote_ports: Option<String>,
    /// `LocalUserAuthorizedList`: SDDL naming the account the rule applies to.
    pub local_user_sddl: String,
}

/// The SDDL that scopes a rule to one account.
pub fn user_sddl(sid: &Sid) -> String {
    format!("D:(A;;CC;;;{sid})")
}

/// Complement of a sorted list of inclusive ranges within `[0, max]`.
fn complement(ranges: &[(u128, u128)], max: u128) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    let mut next = 0u128;
    let mut done = false;
    for &(lo, hi) in ranges {
        if lo > next {
            out.push((next, lo - 1));
        }
        if hi == max {
            done = true;
            break;
        }
        next = next.max(hi + 1);
    }
    if !done {
        out.push((next, max));
    }
    out
}

/// IPv4 loopback: 127.0.0.0/8.
const V4_LOOPBACK: (u128, u128) = (0x7F00_0000, 0x7FFF_FFFF);

/// IPv6 loopback ranges: `::1` and the IPv4-mapped loopback `::ffff:127.0.0.0/104`.
fn v6_loopback() -> Vec<(u128, u128)> {
    vec![(1, 1), (0xFFFF_7F00_0000, 0xFFFF_7FFF_FFFF)]
}

fn fmt_v4(r: (u128, u128)) -> String {
    let lo = Ipv4Addr::from(r.0 as u32);
    let hi = Ipv4Addr::from(r.1 as u32);
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn fmt_v6(r: (u128, u128)) -> String {
    let lo = Ipv6Addr::from(r.0);
    let hi = Ipv6Addr::from(r.1);
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// Every address that is not loopback, as a `RemoteAddresses` string.
pub fn non_loopback_addresses() -> String {
    let mut parts: Vec<String> = complement(&[V4_LOOPBACK], u32::MAX as u128)
        .into_iter()
        .map(fmt_v4)
        .collect();
    parts.extend(
        complement(&v6_loopback(), u128::MAX)
            .into_iter()
            .map(fmt_v6),
    );
    parts.join(",")
}

/// The loopback addresses, as a `RemoteAddresses` string.
pub fn loopback_addresses() -> String {
    let mut parts = vec![fmt_v4(V4_LOOPBACK)];
    parts.extend(v6_loopback().into_iter().map(fmt_v6));
    parts.join(",")
}

/// All ports except `allowed`, as a `RemotePorts` string (`None` if every port is allowed).
pub fn ports_except(allowed: &[u16]) -> Option<String> {
    let mut a: Vec<u128> = allowed
        .iter()
        .filter(|p| **p != 0)
        .map(|p| *p as u128)
        .collect();
    a.sort_unstable();
    a.dedup();
    let ranges: Vec<(u128, u128)> = a.iter().map(|p| (*p, *p)).collect();
    let parts: Vec<String> = complement(&ranges, 65535)
        .into_iter()
        .map(|(lo, hi)| (lo.max(1), hi))
        .filter(|(lo, hi)| lo <= hi)
        .map(|(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(","))
    }
}

/// The rules for the offline account. `allowed_loopback_ports` are TCP ports on loopback the
/// sandbox may still reach (e.g. a filtering proxy the user runs).
pub fn offline_rules(offline: &Sid, allowed_loopback_ports: &[u16]) -> Vec<FirewallRule> {
    let sddl = user_sddl(offline);
    let rule = |name: &str,
                description: &str,
                direction,
                protocol,
                remote_addresses: String,
                remote_ports| FirewallRule {
        name: format!("Stockade offline: {name}"),
        description: description.to_string(),
        direction,
        protocol,
        remote_addresses,
        remote_ports,
        local_user_sddl: sddl.clone(),
    };
    let mut rules = vec![
        rule(
            "block outbound",
            "Blocks the sandbox's offline account from reaching any non-loopback address.",
            Direction::Out,
            Protocol::Any,
            non_loopback_addresses(),
            None,
        ),
        rule(
            "block inbound",
            "Blocks non-loopback traffic to the sandbox's offline account.",
            Direction::In,
            Protocol::Any,
            non_loopback_addresses(),
            None,
        ),
    ];
    if allowed_loopback_ports.iter().all(|p| *p == 0) {
        rules.push(rule(
            "block loopback",
            "Blocks the offline account from loopback services.",
            Direction::Out,
            Protocol::Any,
            loopback_addresses(),
            None,
        ));
    } else {
        let ports = ports_except(allowed_loopback_ports);
        if ports.is_some() {
            rules.push(rule(
                "block loopback tcp",
                "Blocks the offline account from loopback TCP services except the allowed proxy ports.",
                Direction::Out,
                Protocol::Tcp,
                loopback_addresses(),
                ports,
            ));
        }
        rules.push(rule(
            "block loopback udp",
            "Blocks the offline account from loopback UDP services.",
            Direction::Out,
            Protocol::Udp,
            loopback_addresses(),
            None,
        ));
    }
    rules
}

/// The rules for the online account: none (it uses the host network).
pub fn online_rules(_online: &Sid) -> Vec<FirewallRule> {
    Vec::new()
}

/// `NET_FW_PROFILE_TYPE2` bits: domain, private, public.
pub const PROFILES: [(i32, &str); 3] = [(1, "domain"), (2, "private"), (4, "public")];

/// `NET_FW_MODIFY_STATE`: local rules apply.
pub const MODIFY_STATE_OK: i32 = 0;
/// `NET_FW_MODIFY_STATE_GP_OVERRIDE`: Group Policy overrides local rules.
pub const MODIFY_STATE_GP_OVERRIDE: i32 = 1;
/// `NET_FW_MODIFY_STATE_INBOUND_BLOCKED`: inbound rules are blocked (outbound rules still apply).
pub const MODIFY_STATE_INBOUND_BLOCKED: i32 = 2;

/// One of our rules as read back from the firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRule {
    /// The rule's name.
    pub name: String,
    /// `Enabled`.
    pub enabled: bool,
    /// `Action` is block (`NET_FW_ACTION_BLOCK` = 0).
    pub blocks: bool,
    /// `Profiles` bit mask.
    pub profiles: i32,
}

/// What the firewall says, read just before an offline run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallState {
    /// `CurrentProfileTypes`: the active profiles (bit mask).
    pub current_profiles: i32,
    /// `FirewallEnabled` per profile bit, for each of [`PROFILES`].
    pub enabled: Vec<(i32, bool)>,
    /// `LocalPolicyModifyState`.
    pub modify_state: i32,
    /// Our rules (by recorded name) that exist, as read back.
    pub rules: Vec<ObservedRule>,
}

/// A reason not to trust the firewall to keep an offline run offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallProblem {
    /// The firewall is off for an active profile.
    Disabled(&'static str),
    /// Group Policy overrides local rules, so ours may not apply.
    GroupPolicyOverride,
    /// The firewall reports a modify state Stockade does not know.
    UnknownModifyState(i32),
    /// A recorded rule is gone.
    Missing(String),
    /// A rule is present but disabled.
    RuleDisabled(String),
    /// A rule is present but does not block.
    NotBlocking(String),
    /// A rule does not cover every active profile.
    ProfileNotCovered(String, &'static str),
    /// No active profile was reported.
    NoActiveProfile,
}

impl std::fmt::Display for FirewallProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FirewallProblem::Disabled(p) => write!(f, "the Windows Firewall is off for the active {p} profile"),
            FirewallProblem::GroupPolicyOverride => write!(f, "Group Policy overrides local firewall rules (LocalPolicyModifyState = GP override), so Stockade's rules may not apply; ask your administrator to allow local rule merging"),
            FirewallProblem::UnknownModifyState(s) => write!(f, "unknown LocalPolicyModifyState {s}"),
            FirewallProblem::Missing(n) => write!(f, "rule {n:?} is missing"),
            FirewallProblem::RuleDisabled(n) => write!(f, "rule {n:?} is disabled"),
            FirewallProblem::NotBlocking(n) => write!(f, "rule {n:?} does not block"),
            FirewallProblem::ProfileNotCovered(n, p) => write!(f, "rule {n:?} does not apply to the active {p} profile"),
            FirewallProblem::NoActiveProfile => write!(f, "the firewall reports no active profile"),
        }
    }
}

/// Everything that must hold for the offline account's block rules to be effective: the firewall
/// is on for every active profile, local rules apply (no Group Policy override), and every
/// recorded rule is present, enabled, blocking and covers the active profiles. Empty: trusted.
/// Note the limit: per-user firewall rules do not see traffic that a Windows service makes on
/// the account's behalf (DNS client, SMB redirector, WebDAV, BITS); see docs/windows.md.
pub fn verify(state: &FirewallState, recorded: &[String]) -> Vec<FirewallProblem> {
    let mut out = Vec::new();
    if state.current_profiles & 7 == 0 {
        out.push(FirewallProblem::NoActiveProfile);
    }
    let active: Vec<(i32, &'static str)> = PROFILES
        .iter()
        .copied()
        .filter(|(bit, _)| state.current_profiles & bit != 0)
        .collect();
    for (bit, name) in &active {
        if !state.enabled.iter().any(|(b, on)| b == bit && *on) {
            out.push(FirewallProblem::Disabled(name));
        }
    }
    match state.modify_state {
        MODIFY_STATE_OK | MODIFY_STATE_INBOUND_BLOCKED => {}
        MODIFY_STATE_GP_OVERRIDE => out.push(FirewallProblem::GroupPolicyOverride),
        s => out.push(FirewallProblem::UnknownModifyState(s)),
    }
    for name in recorded {
        match state.rules.iter().find(|r| &r.name == name) {
            None => out.push(FirewallProblem::Missing(name.clone())),
            Some(r) => {
                if !r.enabled {
                    out.push(FirewallProblem::RuleDisabled(name.clone()));
                }
                if !r.blocks {
                    out.push(FirewallProblem::NotBlocking(name.clone()));
                }
                for (bit, pname) in &active {
                    if r.profiles & bit == 0 {
                        out.push(FirewallProblem::ProfileNotCovered(name.clone(), pname));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid() -> Sid {
        Sid::parse("S-1-5-21-1-2-3-1005").expect("sid")
    }

    #[test]
    fn non_loopback_is_the_exact_complement() {
        assert_eq!(
            non_loopback_addresses(),
            "0.0.0.0-126.255.255.255,128.0.0.0-255.255.255.255,::,::2-::ffff:126.255.255.255,::ffff:128.0.0.0-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(
            loopback_addresses(),
            "127.0.0.0-127.255.255.255,::1,::ffff:127.0.0.0-::ffff:127.255.255.255"
        );
    }

    #[test]
    fn port_complement() {
        assert_eq!(ports_except(&[8080]).as_deref(), Some("1-8079,8081-65535"));
        assert_eq!(
            ports_except(&[1, 65535, 3128, 3128]).as_deref(),
            Some("2-3127,3129-65534")
        );
        assert_eq!(ports_except(&[]).as_deref(), Some("1-65535"));
    }

    #[test]
    fn offline_rule_set_without_proxy() {
        let rules = offline_rules(&sid(), &[]);
        assert_eq!(rules.len(), 3);
        assert!(rules
            .iter()
            .all(|r| r.local_user_sddl == "D:(A;;CC;;;S-1-5-21-1-2-3-1005)"));
        assert!(rules
            .iter()
            .all(|r| r.name.starts_with("Stockade offline: ")));
        assert_eq!(
            rules
                .iter()
                .map(|r| (r.direction, r.protocol))
                .collect::<Vec<_>>(),
            vec![
                (Direction::Out, Protocol::Any),
                (Direction::In, Protocol::Any),
                (Direction::Out, Protocol::Any)
            ]
        );
        assert_eq!(rules[2].remote_addresses, loopback_addresses());
        let names: std::collections::BTreeSet<_> = rules.iter().map(|r| &r.name).collect();
        assert_eq!(names.len(), rules.len(), "rule names are unique");
    }

    #[test]
    fn offline_rule_set_with_proxy_ports_and_online_set() {
        let rules = offline_rules(&sid(), &[3128]);
        let tcp = rules
            .iter()
            .find(|r| r.protocol == Protocol::Tcp)
            .expect("tcp rule");
        assert_eq!(tcp.remote_ports.as_deref(), Some("1-3127,3129-65535"));
        assert_eq!(tcp.remote_addresses, loopback_addresses());
        assert!(rules
            .iter()
            .any(|r| r.protocol == Protocol::Udp && r.remote_addresses == loopback_addresses()));
        assert!(rules
            .iter()
            .all(|r| r.protocol == Protocol::Any || r.remote_addresses == loopback_addresses()));
        assert!(online_rules(&sid()).is_empty());
    }

    fn good_state(names: &[String]) -> FirewallState {
        FirewallState {
            current_profiles: 2 | 4,
            enabled: vec![(1, false), (2, true), (4, true)],
            modify_state: MODIFY_STATE_OK,
            rules: names
                .iter()
                .map(|n| ObservedRule {
                    name: n.clone(),
                    enabled: true,
                    blocks: true,
                    profiles: 0x7FFF_FFFF,
                })
                .collect(),
        }
    }

    #[test]
    fn firewall_is_trusted_only_when_on_effective_and_complete() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert!(verify(&good_state(&names), &names).is_empty());
        // Domain profile off but not active: fine. Public off and active: not.
        let mut s = good_state(&names);
        s.enabled[2].1 = false;
        assert_eq!(
            verify(&s, &names),
            vec![FirewallProblem::Disabled("public")]
        );
        let mut s = good_state(&names);
        s.modify_state = MODIFY_STATE_GP_OVERRIDE;
        assert_eq!(
            verify(&s, &names),
            vec![FirewallProblem::GroupPolicyOverride]
        );
        let mut s = good_state(&names);
        s.modify_state = MODIFY_STATE_INBOUND_BLOCKED;
        assert!(verify(&s, &names).is_empty());
        let mut s = good_state(&names);
        s.rules[0].enabled = false;
        s.rules[1].profiles = 2;
        s.rules.push(ObservedRule {
            name: "c".into(),
            enabled: true,
            blocks: false,
            profiles: 7,
        });
        let mut with_c = names.clone();
        with_c.push("c".into());
        with_c.push("d".into());
        assert_eq!(
            verify(&s, &with_c),
            vec![
                FirewallProblem::RuleDisabled("a".into()),
                FirewallProblem::ProfileNotCovered("b".into(), "public"),
                FirewallProblem::NotBlocking("c".into()),
                FirewallProblem::Missing("d".into()),
            ]
        );
        let mut s = good_state(&names);
        s.current_profiles = 0;
        assert!(verify(&s, &names).contains(&FirewallProblem::NoActiveProfile));
        assert!(FirewallProblem::GroupPolicyOverride
            .to_string()
            .contains("Group Policy"));
    }
}
