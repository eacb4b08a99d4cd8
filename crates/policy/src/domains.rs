//! `network.allowed_domains` entries: what the allowlist proxy may reach.
//!
//! An entry is `HOST` or `HOST:PORT`:
//! * `HOST` is a name (`crates.io`, exact), a subdomain pattern (`*.npmjs.org`, subdomains only),
//!   an IPv4 address or network (`10.1.2.3`, `10.0.0.0/8`), or an IPv6 address or network in
//!   brackets (`[fd00::5]`, `[fd00::/8]`);
//! * without `:PORT` the entry allows ports 80 and 443; with it, that port only
//!   (`example.com:8443`).
//!
//! An address or network entry also *lists* those addresses for the proxy's address policy: a
//! private (10/8, 172.16/12, 192.168/16, fc00::/7) or CGNAT (100.64/10) answer is accepted only
//! when an entry covers it. Loopback, link-local, unspecified, multicast and broadcast addresses
//! are refused whatever the entries say (see the proxy).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ports an entry without `:PORT` allows.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The host part of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// A lower-case host name, matched exactly.
    Name(String),
    /// `*.suffix`: any name strictly below `suffix` (lower case, without `*.`).
    Subdomains(String),
    /// An address network (`prefix` bits of `addr`); a single address has the full length.
    Net {
        /// The network address (host bits zero).
        addr: IpAddr,
        /// Prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
        prefix: u8,
    },
}

/// One parsed `allowed_domains` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEntry {
    /// What it matches.
    pub host: HostPattern,
    /// `Some(p)`: only port `p`; `None`: [`DEFAULT_PORTS`].
    pub port: Option<u16>,
}

/// Why an entry was refused (the message says what is expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadDomain(pub String);

const EXPECTED: &str = "expected `name`, `*.name`, an IPv4 address or network, or `[IPv6]`, \
                        optionally followed by `:PORT` (e.g. `crates.io`, `*.npmjs.org`, \
                        `example.com:8443`, `10.0.0.0/8`, `[fd00::/8]:443`)";

impl DomainEntry {
    /// Parse and validate one entry.
    pub fn parse(entry: &str) -> Result<DomainEntry, BadDomain> {
        let s = entry.trim().to_ascii_lowercase();
        let bad = |why: &str| BadDomain(format!("{why}; {EXPECTED}"));
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, tail) = rest.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or_else(|| bad("junk after `]`"))?),
            };
            let (addr, prefix) = split_net(inner, 128).map_err(|e| bad(&e))?;
            let addr: Ipv6Addr = addr
                .parse()
                .map_err(|_| bad(&format!("{addr:?} is not an IPv6 address")))?;
            (net(IpAddr::V6(addr), prefix), port)
        } else {
            let (h, port) = match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s.as_str(), None),
            };
            if h.contains(':') {
                return Err(bad("IPv6 addresses must be written in brackets"));
            }
            (host_pattern(h).map_err(|e| bad(&e))?, port)
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(bad(&format!("{p:?} is not a port (1-65535)"))),
            },
        };
        Ok(DomainEntry { host, port })
    }

    /// Does this entry allow `host` (a name or an address literal, as the client wrote it) on
    /// `port`?
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        port_ok && self.matches_host(host)
    }

    /// Does the host part match `host` (any port)?
    pub fn matches_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host);
        match &self.host {
            HostPattern::Name(n) => host == *n,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
            HostPattern::Net { .. } => host.parse::<IpAddr>().is_ok_and(|ip| self.covers(ip)),
        }
    }

    /// Does this entry list the address `ip` (compared as given; callers canonicalise first)?
    pub fn covers(&self, ip: IpAddr) -> bool {
        let HostPattern::Net { addr, prefix } = self.host else {
            return false;
        };
        match (addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => mask4(b, prefix) == a,
            (IpAddr::V6(a), IpAddr::V6(b)) => mask6(b, prefix) == a,
            _ => false,
        }
    }
}

/// Parse every entry (for the proxy; the plan already refused bad ones).
pub fn parse_all(entries: &[String]) -> Result<Vec<DomainEntry>, BadDomain> {
    entries.iter().map(|e| DomainEntry::parse(e)).collect()
}

fn split_net(s: &str, max: u8) -> Result<(&str, u8), String> {
    match s.split_once('/') {
        None => Ok((s, max)),
        Some((a, p)) => match p.parse::<u8>() {
            Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => Ok((a, n)),
            _ => Err(format!("{p:?} is not a prefix length (0-{max})")),
        },
    }
}

fn net(addr: IpAddr, prefix: u8) -> HostPattern {
    let addr = match addr {
        IpAddr::V4(a) => IpAddr::V4(mask4(a, prefix)),
        IpAddr::V6(a) => IpAddr::V6(mask6(a, prefix)),
    };
    HostPattern::Net { addr, prefix }
}

fn mask4(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(a) & m)
}

fn mask6(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from(u128::from(a) & m)
}

fn host_pattern(h: &str) -> Result<HostPattern, String> {
    let numeric = |s: &str| {
        s.split(['.', '/'])
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    };
    if !h.is_empty() && numeric(h) {
        let (addr, prefix) = split_net(h, 32)?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        return Ok(net(IpAddr::V4(addr), prefix));
    }
    let (name, sub) = match h.strip_prefix("*.") {
        Some(s) => (s, true),
        None => (h, false),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!("{h:?} is not a host name"));
    }
    Ok(if sub {
        HostPattern::Subdomains(name.to_string())
    } else {
        HostPattern::Name(name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> DomainEntry {
        DomainEntry::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn entries_parse() {
        let name = |n: &str| HostPattern::Name(n.into());
        let v4 = |a: &str, prefix| HostPattern::Net {
            addr: a.parse().unwrap(),
            prefix,
        };
        let cases: &[(&str, HostPattern, Option<u16>)] = &[
            ("crates.io", name("crates.io"), None),
            (" Crates.IO ", name("crates.io"), None),
            ("example.com:8443", name("example.com"), Some(8443)),
            (
                "*.npmjs.org:443",
                HostPattern::Subdomains("npmjs.org".into()),
                Some(443),
            ),
            ("10.1.2.3", v4("10.1.2.3", 32), None),
            ("10.9.9.9/8", v4("10.0.0.0", 8), None),
            ("192.168.0.0/16:8080", v4("192.168.0.0", 16), Some(8080)),
            ("[fd00::5]", v4("fd00::5", 128), None),
            ("[FD00::1/8]:22", v4("fd00::", 8), Some(22)),
            ("0.0.0.0/0", v4("0.0.0.0", 0), None),
        ];
        for (s, host, port) in cases {
            assert_eq!(
                p(s),
                DomainEntry {
                    host: host.clone(),
                    port: *port
                },
                "{s}"
            );
        }
    }

    #[test]
    fn malformed_entries_are_refused() {
        for s in [
            "",
            ":443",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:+80",
            "example.com:http",
            "a..b",
            "-x.com/",
            "exa mple.com",
            "*.",
            "*",
            "http://example.com",
            "example.com/path",
            "fd00::1",
            "[fd00::1",
            "[fd00::1]x",
            "[zz::1]",
            "[::1/129]",
            "10.0.0.0/33",
            "999.1.1.1",
            "10.0.0",
            "1.2.3.4/",
        ] {
            let e = DomainEntry::parse(s).expect_err(s);
            assert!(e.0.contains("expected"), "{s}: {e}");
        }
    }

    #[test]
    fn ports_and_hosts_match() {
        let plain = p("example.com");
        assert!(plain.allows("example.com", 443));
        assert!(plain.allows("EXAMPLE.com.", 80));
        assert!(!plain.allows("example.com", 22));
        assert!(!plain.allows("example.com", 8443));
        assert!(!plain.allows("www.example.com", 443));
        let port = p("example.com:8443");
        assert!(port.allows("example.com", 8443));
        assert!(!port.allows("example.com", 443));
        let sub = p("*.npmjs.org");
        assert!(sub.allows("registry.npmjs.org", 443));
        assert!(!sub.allows("npmjs.org", 443));
        assert!(!sub.allows("evilnpmjs.org", 443));
        assert!(!sub.allows("npmjs.org.evil.com", 443));
        let net = p("10.0.0.0/8");
        assert!(net.allows("10.2.3.4", 443));
        assert!(!net.allows("11.2.3.4", 443));
        assert!(!net.allows("10.2.3.4", 22));
        assert!(net.covers("10.255.0.1".parse().unwrap()));
        assert!(!net.covers("::ffff:10.0.0.1".parse().unwrap()));
        let v6 = p("[fd00::/8]");
        assert!(v6.allows("[fd12::1]", 80));
        assert!(v6.allows("fd12::1", 80));
        assert!(!p("crates.io").covers("10.0.0.1".parse().unwrap()));
    }
}
