//! `network.mode = "allowlist"`: HTTP(S) to allowed domains only, through a proxy on the host.
//!
//! The sandbox still gets its own network namespace with nothing but loopback. Inside it, init
//! listens on `127.0.0.1:3128` and hands every accepted connection, as a descriptor
//! (`SCM_RIGHTS`), to stockade on the host; no path or port of the host is exposed. Stockade
//! reads the request head (parsed with `httparse`) and:
//! * `CONNECT host:port` (HTTPS, any TLS) — allowed host and port: connects and splices bytes
//!   both ways;
//! * `GET http://host/...` (plain HTTP, absolute form) — allowed host and port, and a `Host:`
//!   header naming the same host and port as the target (or none, then it is added): connects,
//!   sends the head in origin form with `Connection: close`, then exactly the request body
//!   (`Content-Length`; a chunked request body is refused) and relays the response. One request
//!   per connection, so a second request with another `Host:` never reaches the upstream
//!   (domain fronting); a request carrying a header through which a front end may route by
//!   another name (`X-Forwarded-Host`, `Forwarded`, `X-Host`, `X-Original-Host`,
//!   `X-Forwarded-Server`) is refused for the same reason;
//! * anything else, or a host or port not allowed: `4xx`, nothing is forwarded, and a denial in
//!   the run's report.
//!
//! Ports: an `allowed_domains` entry without `:PORT` allows 80 and 443, `name:PORT` that port
//! (see [`stockade_policy::domains`]). A `CONNECT` tunnel on an entry without `:PORT` goes to
//! 443 only: a tunnel to 80 would carry plain HTTP past the `Host:` check.
//!
//! The whole request head must arrive within 30 s (one deadline, not one per read), so a
//! client trickling bytes cannot hold a connection slot for long.
//!
//! At most [`MAX_CONNECTIONS`] connections are served at once (each costs stockade a thread
//! and descriptors, outside the sandbox's limits); one more is answered `503`. At most
//! [`MAX_DENIALS`] proxy denials are kept for the report.
//!
//! The command sees `HTTP_PROXY`/`HTTPS_PROXY` (both cases) and `ALL_PROXY` pointing at the
//! listener, which is what curl, git, cargo, pip, npm and most HTTP libraries honour. A program
//! that ignores proxy variables gets no network at all (the namespace has none).
//!
//! # Address policy
//!
//! Names are resolved on the host, once; the connection goes to the exact address that was
//! checked (no second resolution). Every answer is first reduced to the IPv4 address(es) it
//! stands for ([`embedded_v4`]): IPv4-mapped `::ffff:a.b.c.d` and IPv4-compatible `::a.b.c.d`
//! (the same host: the proxy connects to the IPv4 address), NAT64 `64:ff9b::/96` and the
//! local-use `64:ff9b:1::/48` (every RFC 6052 embedding position: /48, /56, /64, /96, a 0.0.0.0/8
//! value at a shorter position being taken as padding), and 6to4
//! `2002::/16` (the relay is the embedded IPv4 address; deprecated, so refusing an embedded
//! private address costs nothing legitimate). Translated forms are connected to as written (a
//! translator does the mapping). Refused, in every form ([`classify`]):
//! * always: loopback (127/8, `::1`), link-local (169.254/16, `fe80::/10`), unspecified
//!   (0.0.0.0/8, `::`), multicast (224/4, `ff00::/8`), broadcast (255.255.255.255);
//! * unless an address or network entry in `allowed_domains` covers the address: private
//!   (10/8, 172.16/12, 192.168/16, `fc00::/7`) and CGNAT (100.64/10).
//!
//! Nothing else: documentation and other reserved ranges are reachable. Not recognised as
//! embeddings: Teredo (`2001::/32`, reached through a relay, not the embedded address) and
//! operator-specific NAT64 prefixes (unknowable from here).
//!
//! # Test-only name map
//!
//! Builds with `debug_assertions` (the test builds; never a release binary) read two variables
//! from stockade's own environment — the host side, which the sandboxed command cannot change
//! (a stockade started inside the sandbox has the sandbox's empty network):
//! * `STOCKADE_TEST_NAME_MAP="name=addr,name=addr,..."` replaces DNS entirely (a name may appear
//!   more than once, for several answers; a name not in the map does not resolve), so tests
//!   never contact a non-loopback address;
//! * `STOCKADE_TEST_LOOPBACK_NAMES="name,..."` lets loopback answers through for these names only,
//!   so a test can reach its own loopback server (loopback is otherwise always refused).
//!
//! Release builds ignore both.

use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stockade_policy::backend::Denial;
use stockade_policy::domains::DomainEntry;

/// Where the command finds the proxy (inside the sandbox's own network namespace).
pub const INSIDE_ADDR: &str = "127.0.0.1:3128";
/// The proxy URL exported to the command.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";

const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 128;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time a client has to send its whole request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(30);
/// Connections served at once; each costs stockade a thread and up to four descriptors, so
/// the command cannot make stockade (outside its cgroup and limits) exhaust threads or files.
/// Over the limit a connection is answered `503` at once.
pub const MAX_CONNECTIONS: usize = 128;

// ---------------------------------------------------------------------------------------------
// Address policy (pure)
// ---------------------------------------------------------------------------------------------

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 169.254.0.0/16, `fe80::/10`.
    LinkLocal,
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 224.0.0.0/4, `ff00::/8`.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 10/8, 172.16/12, 192.168/16, `fc00::/7` (allowed when an entry covers it).
    Private,
    /// 100.64.0.0/10 (allowed when an entry covers it).
    Cgnat,
}

impl Refused {
    /// Human name for messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            Refused::Loopback => "loopback",
            Refused::LinkLocal => "link-local",
            Refused::Unspecified => "unspecified",
            Refused::Multicast => "multicast",
            Refused::Broadcast => "broadcast",
            Refused::Private => "private",
            Refused::Cgnat => "CGNAT",
        }
    }

    /// Can an `allowed_domains` address entry lift this refusal?
    pub fn listable(self) -> bool {
        matches!(self, Refused::Private | Refused::Cgnat)
    }
}

fn classify_v4(a: Ipv4Addr) -> Option<Refused> {
    let [o0, o1, ..] = a.octets();
    if o0 == 127 {
        Some(Refused::Loopback)
    } else if o0 == 169 && o1 == 254 {
        Some(Refused::LinkLocal)
    } else if o0 == 0 {
        Some(Refused::Unspecified)
    } else if (224..=239).contains(&o0) {
        Some(Refused::Multicast)
    } else if a == Ipv4Addr::BROADCAST {
        Some(Refused::Broadcast)
    } else if o0 == 10 || (o0 == 172 && (16..=31).contains(&o1)) || (o0 == 192 && o1 == 168) {
        Some(Refused::Private)
    } else if o0 == 100 && (64..=127).contains(&o1) {
        Some(Refused::Cgnat)
    } else {
        None
    }
}

fn classify_v6_native(a: Ipv6Addr) -> Option<Refused> {
    let s0 = a.segments()[0];
    if a == Ipv6Addr::LOCALHOST {
        Some(Refused::Loopback)
    } else if a == Ipv6Addr::UNSPECIFIED {
        Some(Refused::Unspecified)
    } else if s0 & 0xffc0 == 0xfe80 {
        Some(Refused::LinkLocal)
    } else if s0 & 0xff00 == 0xff00 {
        Some(Refused::Multicast)
    } else if s0 & 0xfe00 == 0xfc00 {
        Some(Refused::Private)
    } else {
        None
    }
}

/// The IPv4 addresses an IPv6 address stands for: mapped (`::ffff:0:0/96`), compatible
/// (`::/96` except `::` and `::1`), NAT64 (`64:ff9b::/96`; `64:ff9b:1::/48` at every RFC 6052
/// position) and 6to4 (`2002::/16`). Empty for any other address.
pub fn embedded_v4(a: Ipv6Addr) -> Vec<Ipv4Addr> {
    let b = a.octets();
    let v4 = |x: [u8; 4]| Ipv4Addr::from(x);
    let tail = v4([b[12], b[13], b[14], b[15]]);
    if b[..10] == [0; 10] && b[10..12] == [0xff, 0xff] {
        return vec![tail];
    }
    if b[..12] == [0; 12] {
        // `::` and `::1` are IPv6's own unspecified and loopback, classified natively.
        return if u128::from(a) <= 1 {
            vec![]
        } else {
            vec![tail]
        };
    }
    if b[..4] == [0x00, 0x64, 0xff, 0x9b] && b[4..12] == [0; 8] {
        return vec![tail];
    }
    if b[..6] == [0x00, 0x64, 0xff, 0x9b, 0x00, 0x01] {
        // The translator's prefix length is not knowable here: every position counts, except
        // that a 0.0.0.0/8 "address" at a shorter position is the zero padding of a longer one.
        let mut v: Vec<Ipv4Addr> = [
            v4([b[6], b[7], b[9], b[10]]),   // /48
            v4([b[7], b[9], b[10], b[11]]),  // /56
            v4([b[9], b[10], b[11], b[12]]), // /64
        ]
        .into_iter()
        .filter(|c| c.octets()[0] != 0)
        .collect();
        v.push(tail); // /96
        return v;
    }
    if b[..2] == [0x20, 0x02] {
        return vec![v4([b[2], b[3], b[4], b[5]])];
    }
    vec![]
}

/// The address the proxy connects to for an answer: IPv4-mapped and IPv4-compatible addresses
/// are the IPv4 host itself; everything else as given.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => {
            let b = a.octets();
            let same_host =
                b[..10] == [0; 10] && (b[10..12] == [0xff, 0xff] || b[10..12] == [0, 0]);
            match embedded_v4(a).as_slice() {
                [v4] if same_host => IpAddr::V4(*v4),
                _ => ip,
            }
        }
        v4 => v4,
    }
}

/// Every refused range `ip` falls in, with the address (itself or an IPv4 address it embeds)
/// that falls there.
fn findings(ip: IpAddr) -> Vec<(Refused, IpAddr)> {
    match ip {
        IpAddr::V4(a) => classify_v4(a).map(|r| (r, ip)).into_iter().collect(),
        IpAddr::V6(a) => classify_v6_native(a)
            .map(|r| (r, ip))
            .into_iter()
            .chain(
                embedded_v4(a)
                    .into_iter()
                    .filter_map(|v4| classify_v4(v4).map(|r| (r, IpAddr::V4(v4)))),
            )
            .collect(),
    }
}

/// Is `ip` refused (before any `allowed_domains` entry is considered), and which address (the
/// address itself or an IPv4 address it stands for) lies in the refused range? Refusals no
/// entry can lift come first.
pub fn classify(ip: IpAddr) -> Option<(Refused, IpAddr)> {
    let mut f = findings(ip);
    f.sort_by_key(|(r, _)| r.listable());
    f.into_iter().next()
}

/// May the proxy connect to `ip`? `Err` names why not. A private or CGNAT address is accepted
/// only when an address entry covers it (every refused form it stands for must be covered).
pub fn address_allowed(ip: IpAddr, entries: &[DomainEntry]) -> Result<(), Refused> {
    if let Some((r, _)) = classify(ip).filter(|(r, _)| !r.listable()) {
        return Err(r);
    }
    match findings(ip)
        .into_iter()
        .find(|(_, addr)| !entries.iter().any(|e| e.covers(*addr)))
    {
        Some((r, _)) => Err(r),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Request heads (pure)
// ---------------------------------------------------------------------------------------------

/// The parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `CONNECT host:port`.
    Connect {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// An absolute-form plain-HTTP request.
    Http {
        /// Host name or address.
        host: String,
        /// Port (default 80).
        port: u16,
        /// The head rewritten to origin form (`Connection: close`), ready to send upstream.
        head: Vec<u8>,
        /// Bytes of request body that follow the head (`Content-Length`, else 0).
        body_len: u64,
    },
}

/// A refused request head: the status line to answer with and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// e.g. `400 Bad Request`.
    pub status: &'static str,
    /// Message for the client and the report.
    pub why: String,
}

fn bad(why: impl Into<String>) -> Refusal {
    Refusal {
        status: "400 Bad Request",
        why: why.into(),
    }
}

/// Parse a request head. `Ok(None)`: incomplete, read more. `Ok(Some((req, n)))`: the head is
/// the first `n` bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("malformed request head: {e}"))),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad("malformed request line"));
    };
    if method == "CONNECT" {
        let (host, port) = split_host_port(target, None)?;
        return Ok(Some((Request::Connect { host, port }, n)));
    }
    let rest = target
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..])
        .ok_or_else(|| {
            bad(format!(
                "only absolute http:// URLs and CONNECT are proxied, not {target:?}"
            ))
        })?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let path = path.split('#').next().unwrap_or("/").to_string();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = split_host_port(authority, Some(80))?;

    let mut out = format!("{method} {path} HTTP/1.{version}\r\n").into_bytes();
    let mut host_seen = false;
    let mut body_len: Option<u64> = None;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "host" => {
                if host_seen {
                    return Err(bad("more than one Host header"));
                }
                host_seen = true;
                let value = std::str::from_utf8(h.value)
                    .map_err(|_| bad("Host header is not UTF-8"))?
                    .trim();
                let same =
                    split_host_port(value, Some(80)).is_ok_and(|hp| hp == (host.clone(), port));
                if !same {
                    return Err(Refusal {
                        status: "403 Forbidden",
                        why: format!(
                            "the Host header {value:?} does not name the request target {host}:{port}"
                        ),
                    });
                }
            }
            "content-length" => {
                let v: u64 = std::str::from_utf8(h.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad("malformed Content-Length"))?;
                if body_len.is_some_and(|b| b != v) {
                    return Err(bad("conflicting Content-Length headers"));
                }
                body_len = Some(v);
            }
            "transfer-encoding" => {
                return Err(Refusal {
                    status: "411 Length Required",
                    why: "request bodies without Content-Length are not proxied over plain HTTP \
                          (use https://)"
                        .into(),
                })
            }
            // Headers through which a front end may route by a name other than the checked
            // target (domain fronting behind a CDN or reverse proxy that honours them).
            "x-forwarded-host" | "forwarded" | "x-host" | "x-original-host"
            | "x-forwarded-server" => {
                return Err(Refusal {
                    status: "403 Forbidden",
                    why: format!(
                        "the {} header may route the request to another host; it is not proxied",
                        h.name
                    ),
                })
            }
            _ => {}
        }
        if name.starts_with("proxy-") || name == "connection" || name == "keep-alive" {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !host_seen {
        out.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Some((
        Request::Http {
            host,
            port,
            head: out,
            body_len: body_len.unwrap_or(0),
        },
        n,
    )))
}

/// `host[:port]` or `[v6][:port]` → lower-case host without brackets or a trailing dot, port.
fn split_host_port(s: &str, default: Option<u16>) -> Result<(String, u16), Refusal> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| bad(format!("bad address {s:?}")))?;
        let port = match tail {
            "" => None,
            t => Some(
                t.strip_prefix(':')
                    .ok_or_else(|| bad(format!("bad address {s:?}")))?,
            ),
        };
        (h, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match (port, default) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad(format!("bad port in {s:?}"))),
        },
        (None, Some(d)) => d,
        (None, None) => return Err(bad(format!("missing port in {s:?}"))),
    };
    if host.is_empty() {
        return Err(bad(format!("missing host in {s:?}")));
    }
    // Only what a DNS name is made of: a resolver reads `\.` or `\046` as a dot inside a label,
    // so `x\.corp.example` would pass the `*.corp.example` check yet name `x.corp` under
    // `example`.
    let name_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if host.parse::<IpAddr>().is_err() && !host.bytes().all(name_byte) {
        return Err(bad(format!("{host:?} is not a host name or address")));
    }
    Ok((host.trim_end_matches('.').to_ascii_lowercase(), port))
}

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

/// What every connection is checked against.
struct Config {
    entries: Vec<DomainEntry>,
    /// Test-only replacement for DNS (see the module doc).
    names: Option<Vec<(String, IpAddr)>>,
    /// Test-only: names whose loopback answers are accepted.
    loopback_names: Vec<String>,
}

/// Parse `STOCKADE_TEST_NAME_MAP` syntax: `name=addr,name=addr`.
fn parse_name_map(s: &str) -> Vec<(String, IpAddr)> {
    s.split(',')
        .filter_map(|item| {
            let (n, a) = item.split_once('=')?;
            Some((n.trim().to_ascii_lowercase(), a.trim().parse().ok()?))
        })
        .collect()
}

impl Config {
    fn new(allowed: &[String]) -> Config {
        let entries = allowed
            .iter()
            // The plan validated every entry; one that does not parse allows nothing.
            .filter_map(|e| DomainEntry::parse(e).ok())
            .collect();
        let (names, loopback_names) = if cfg!(debug_assertions) {
            let var = |k: &str| std::env::var(k).ok();
            (
                var("STOCKADE_TEST_NAME_MAP").map(|s| parse_name_map(&s)),
                var("STOCKADE_TEST_LOOPBACK_NAMES")
                    .map(|s| {
                        s.split(',')
                            .map(|n| n.trim().to_ascii_lowercase())
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        } else {
            (None, Vec::new())
        };
        Config {
            entries,
            names,
            loopback_names,
        }
    }

    fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match &self.names {
            Some(map) => {
                let v: Vec<SocketAddr> = map
                    .iter()
                    .filter(|(n, _)| n == host)
                    .map(|(_, ip)| SocketAddr::new(*ip, port))
                    .collect();
                if v.is_empty() {
                    Err(format!("{host} is not in STOCKADE_TEST_NAME_MAP"))
                } else {
                    Ok(v)
                }
            }
            None => (host, port)
                .to_socket_addrs()
                .map(Iterator::collect)
                .map_err(|e| e.to_string()),
        }
    }

    fn address_ok(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        match address_allowed(ip, &self.entries) {
            Err(Refused::Loopback) if self.loopback_names.iter().any(|n| n == host) => Ok(()),
            r => r,
        }
    }
}

/// Is `host:port` allowed by an entry? `Err` says whether the host is allowed on other ports.
fn target_allowed(host: &str, port: u16, entries: &[DomainEntry]) -> Result<(), bool> {
    if entries.iter().any(|e| e.allows(host, port)) {
        return Ok(());
    }
    Err(entries.iter().any(|e| e.matches_host(host)))
}

/// May `CONNECT host:port` open a raw tunnel? An entry without `:PORT` allows it to 443 only:
/// a tunnel to 80 would carry plain HTTP with any `Host:` header, unchecked. A `name:PORT`
/// entry allows it to that port.
fn tunnel_allowed(host: &str, port: u16, entries: &[DomainEntry]) -> bool {
    entries
        .iter()
        .any(|e| e.matches_host(host) && e.port.map_or(port == 443, |p| p == port))
}

/// Bind the listener inside the sandbox (init, after loopback is up).
pub fn listen_inside() -> std::io::Result<TcpListener> {
    TcpListener::bind(INSIDE_ADDR)
}

/// Host side: receive connections from init over `chan` and serve each on its own thread until
/// the channel closes. Denials are appended to `denials`.
pub fn serve(
    chan: OwnedFd,
    allowed: Vec<String>,
    denials: Arc<Mutex<Vec<Denial>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let config = Arc::new(Config::new(&allowed));
        let active = Arc::new(AtomicUsize::new(0));
        while let Ok(Some(fd)) = stockade_sys::sockets::recv_fd(chan.as_raw_fd()) {
            let stream = TcpStream::from(fd);
            let Some(slot) = Slot::take(&active) else {
                // Never blocks the accept loop: the answer fits an empty socket buffer.
                let _ = stream.set_nonblocking(true);
                record(
                    &denials,
                    format!("proxy connection refused (more than {MAX_CONNECTIONS} at once)"),
                );
                deny(
                    stream,
                    "503 Service Unavailable",
                    &format!("more than {MAX_CONNECTIONS} proxy connections at once"),
                );
                continue;
            };
            let config = Arc::clone(&config);
            let denials = Arc::clone(&denials);
            let _ = std::thread::Builder::new()
                .name("proxy".into())
                .spawn(move || {
                    let _slot = slot;
                    handle(stream, &config, &denials)
                });
        }
    })
}

/// One of the [`MAX_CONNECTIONS`] places, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Option<Slot> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONNECTIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(active)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn deny(mut client: TcpStream, status: &str, why: &str) {
    let body = format!("stockade: {why}\n");
    let _ = write!(client, "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

/// Denials kept for the report; the command could otherwise grow stockade's memory (and the
/// report) without bound by repeating refused requests. One last entry says more were dropped.
pub const MAX_DENIALS: usize = 1000;

fn record(denials: &Mutex<Vec<Denial>>, target: String) {
    if let Ok(mut d) = denials.lock() {
        let target = match d.len() {
            n if n < MAX_DENIALS => target,
            MAX_DENIALS => format!("more than {MAX_DENIALS} proxy denials; the rest not listed"),
            _ => return,
        };
        d.push(Denial {
            kind: "network".into(),
            target,
            message: None,
        });
    }
}

fn handle(client: TcpStream, config: &Config, denials: &Mutex<Vec<Denial>>) {
    handle_with_deadline(client, config, denials, HEAD_DEADLINE)
}

fn handle_with_deadline(
    mut client: TcpStream,
    config: &Config,
    denials: &Mutex<Vec<Denial>>,
    head_deadline: Duration,
) {
    // One deadline for the whole head, not per read: a client trickling one byte per read
    // would otherwise hold a connection slot for hours.
    let deadline = std::time::Instant::now() + head_deadline;
    let mut buf = Vec::with_capacity(1024);
    let (req, head_len) = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || client.set_read_timeout(Some(left)).is_err() {
            return deny(
                client,
                "408 Request Timeout",
                "request head not received in time",
            );
        }
        let mut chunk = [0u8; 2048];
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        match parse_head(&buf) {
            Ok(Some(r)) => break r,
            Ok(None) if buf.len() > MAX_HEAD => {
                return deny(
                    client,
                    "431 Request Header Fields Too Large",
                    "request head too large",
                )
            }
            Ok(None) => {}
            Err(r) => {
                record(denials, format!("proxy request refused ({})", r.why));
                return deny(client, r.status, &r.why);
            }
        }
    };
    let _ = client.set_read_timeout(None);
    let (host, port) = match &req {
        Request::Connect { host, port } | Request::Http { host, port, .. } => (host.clone(), *port),
    };
    let refuse = |client, status: &str, why: String| {
        record(denials, format!("{host}:{port} ({why})"));
        deny(client, status, &why);
    };
    if let Err(other_port) = target_allowed(&host, port, &config.entries) {
        let why = if other_port {
            format!("port {port} of {host} is not allowed (add `{host}:{port}` to network.allowed_domains)")
        } else {
            format!("{host} is not in network.allowed_domains")
        };
        return refuse(client, "403 Forbidden", why);
    }
    if matches!(req, Request::Connect { .. }) && !tunnel_allowed(&host, port, &config.entries) {
        return refuse(
            client,
            "403 Forbidden",
            format!(
                "no CONNECT tunnel to port {port} of {host}: plain HTTP goes as `GET http://...` so \
                 its Host header is checked (list `{host}:{port}` for a raw tunnel)"
            ),
        );
    }
    let addrs = match config.resolve(&host, port) {
        Ok(a) => a,
        Err(e) => {
            return deny(
                client,
                "502 Bad Gateway",
                &format!("cannot resolve {host}: {e}"),
            )
        }
    };
    let mut refused = Vec::new();
    let mut checked = Vec::new();
    for a in addrs {
        let ip = a.ip();
        match config.address_ok(&host, ip) {
            Ok(()) => checked.push(SocketAddr::new(canonical(ip), port)),
            Err(r) => refused.push(format!("{ip} is {}", r.name())),
        }
    }
    if checked.is_empty() {
        return refuse(
            client,
            "403 Forbidden",
            format!(
                "{host} resolves only to refused addresses: {} (see network.allowed_domains in docs/policy.md)",
                refused.join(", ")
            ),
        );
    }
    // Pinned: only addresses that passed the check above, never a second lookup.
    let mut upstream = None;
    let mut last_err = String::new();
    for addr in &checked {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                upstream = Some(s);
                break;
            }
            Err(e) => last_err = format!("{addr}: {e}"),
        }
    }
    let Some(mut upstream) = upstream else {
        return deny(
            client,
            "502 Bad Gateway",
            &format!("cannot connect to {host}:{port}: {last_err}"),
        );
    };
    let rest = &buf[head_len..];
    match &req {
        Request::Connect { .. } => {
            if client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .is_ok()
                && upstream.write_all(rest).is_ok()
            {
                splice(client, upstream);
            }
        }
        Request::Http { head, body_len, .. } => {
            let early = rest
                .len()
                .min(usize::try_from(*body_len).unwrap_or(usize::MAX));
            if upstream.write_all(head).is_ok() && upstream.write_all(&rest[..early]).is_ok() {
                relay_one(client, upstream, body_len - early as u64);
            }
        }
    }
}

/// Copy both ways until either side closes.
fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || copy_then_shutdown(a2, b2));
    copy_then_shutdown(b, a);
    let _ = t.join();
}

/// One plain-HTTP exchange: at most `body` more bytes from the client, the response back until
/// the upstream closes (it was asked to), then both closed. Bytes the client sends after the
/// body (a second request) are never forwarded.
fn relay_one(client: TcpStream, mut upstream: TcpStream, body: u64) {
    let (Ok(from_client), Ok(to_upstream)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || {
        let mut to = to_upstream;
        let _ = std::io::copy(&mut from_client.take(body), &mut to);
    });
    let _ = std::io::copy(&mut upstream, &mut &client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = t.join();
}

fn copy_then_shutdown(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<DomainEntry> {
        list.iter()
            .map(|e| DomainEntry::parse(e).unwrap())
            .collect()
    }

    /// Every refused range in every form, and neighbours that are not refused.
    #[test]
    fn address_classes_in_every_form() {
        use Refused::*;
        let table: &[(&str, Option<Refused>)] = &[
            // loopback
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::127.1.2.3", Some(Loopback)),
            ("64:ff9b:1::7f00:1", Some(Loopback)), // local-use, /96 position
            ("64:ff9b:1:7f00:0:100::", Some(Loopback)), // local-use, /48 position
            ("64:ff9b:1:7f:0:1::", Some(Loopback)), // local-use, /56 position
            ("64:ff9b:1:0:7f:1::", Some(Loopback)), // local-use, /64 position
            ("2002:7f00:1::1", Some(Loopback)),    // 6to4
            // link-local
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.0.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf:ffff::1", Some(LinkLocal)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::169.254.169.254", Some(LinkLocal)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("2002:a9fe:a9fe::1", Some(LinkLocal)),
            // unspecified
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::2", Some(Unspecified)),
            ("64:ff9b::", Some(Unspecified)),
            // multicast
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("ff0e::1", Some(Multicast)),
            ("::ffff:224.0.0.251", Some(Multicast)),
            ("64:ff9b::e000:1", Some(Multicast)),
            // broadcast
            ("255.255.255.255", Some(Broadcast)),
            ("::ffff:255.255.255.255", Some(Broadcast)),
            // private
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd00::1", Some(Private)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:192.168.0.1", Some(Private)),
            ("64:ff9b::a00:1", Some(Private)),
            ("2002:c0a8:101::1", Some(Private)),
            // CGNAT
            ("100.64.0.1", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("::ffff:100.64.0.1", Some(Cgnat)),
            // not refused: public, documentation and other reserved ranges, neighbours
            ("8.8.8.8", None),
            ("192.0.2.1", None),
            ("198.51.100.7", None),
            ("203.0.113.9", None),
            ("240.0.0.1", None),
            ("255.255.255.254", None),
            ("172.15.255.255", None),
            ("172.32.0.1", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("169.253.255.255", None),
            ("126.255.255.255", None),
            ("128.0.0.1", None),
            ("223.255.255.255", None),
            ("2001:db8::1", None),
            ("2606:4700::1111", None),
            ("fec0::1", None),
            ("fe7f::1", None),
            ("fe00::1", None),
            ("fbff::1", None),
            ("::ffff:8.8.8.8", None),
            ("::8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::808:808", None),
            ("2002:808:808::1", None),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", None), // Teredo: not an embedding
        ];
        for (s, want) in table {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(classify(ip).map(|(r, _)| r), *want, "{s}");
            let allowed = address_allowed(ip, &[]);
            assert_eq!(allowed.err(), *want, "{s} without entries");
        }
    }

    #[test]
    fn classify_names_the_embedded_address() {
        let c = |s: &str| classify(s.parse().unwrap()).map(|(_, a)| a.to_string());
        assert_eq!(
            c("::ffff:169.254.169.254").as_deref(),
            Some("169.254.169.254")
        );
        assert_eq!(c("64:ff9b::7f00:1").as_deref(), Some("127.0.0.1"));
        assert_eq!(c("fd00::1").as_deref(), Some("fd00::1"));
        // A refusal no entry can lift wins over a listable one: the local-use NAT64 address
        // embeds 10.0.0.1 at the /48 position (found first) and 127.0.0.1 at /96.
        let both: IpAddr = "64:ff9b:1:a00:0:100:7f00:1".parse().unwrap();
        assert_eq!(
            findings(both).first().map(|(r, _)| *r),
            Some(Refused::Private)
        );
        assert_eq!(
            classify(both),
            Some((Refused::Loopback, "127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            address_allowed(both, &entries(&["10.0.0.0/8"])),
            Err(Refused::Loopback)
        );
    }

    #[test]
    fn mapped_and_compatible_forms_connect_as_ipv4() {
        let table = [
            ("::ffff:8.8.8.8", "8.8.8.8"),
            ("::8.8.8.8", "8.8.8.8"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("8.8.8.8", "8.8.8.8"),
            ("::1", "::1"),
            ("::", "::"),
            ("64:ff9b::808:808", "64:ff9b::808:808"),
            ("2002:808:808::1", "2002:808:808::1"),
            ("2001:db8::1", "2001:db8::1"),
        ];
        for (from, to) in table {
            assert_eq!(canonical(from.parse().unwrap()).to_string(), to, "{from}");
        }
    }

    #[test]
    fn entries_lift_private_and_cgnat_only() {
        let e = entries(&[
            "10.0.0.0/8",
            "100.64.0.0/10",
            "[fd00::/8]",
            "192.168.0.0/16",
            "127.0.0.1",
            "169.254.169.254",
            "[::1]",
        ]);
        for ok in [
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "64:ff9b::a01:203",
            "100.100.1.1",
            "fd12::1",
            "2002:c0a8:101::1",
        ] {
            assert_eq!(address_allowed(ok.parse().unwrap(), &e), Ok(()), "{ok}");
        }
        for (no, why) in [
            ("127.0.0.1", Refused::Loopback),
            ("::ffff:127.0.0.1", Refused::Loopback),
            ("::1", Refused::Loopback),
            ("169.254.169.254", Refused::LinkLocal),
            ("172.16.0.1", Refused::Private),
            ("fc00::1", Refused::Private),
        ] {
            assert_eq!(address_allowed(no.parse().unwrap(), &e), Err(why), "{no}");
        }
        // A name entry lists no address.
        let names = entries(&["git.corp.example", "*.corp.example"]);
        assert_eq!(
            address_allowed("10.1.2.3".parse().unwrap(), &names),
            Err(Refused::Private)
        );
    }

    #[test]
    fn ports_follow_the_entries() {
        let e = entries(&["crates.io", "example.com:8443", "*.npmjs.org"]);
        assert_eq!(target_allowed("crates.io", 443, &e), Ok(()));
        assert_eq!(target_allowed("crates.io", 80, &e), Ok(()));
        assert_eq!(target_allowed("crates.io", 22, &e), Err(true));
        assert_eq!(target_allowed("example.com", 8443, &e), Ok(()));
        assert_eq!(target_allowed("example.com", 443, &e), Err(true));
        assert_eq!(target_allowed("registry.npmjs.org", 443, &e), Ok(()));
        assert_eq!(target_allowed("evil.example", 443, &e), Err(false));
        assert_eq!(target_allowed("static.crates.io", 443, &e), Err(false));
        // A raw tunnel: 443 on an entry without a port, 80 only when listed.
        assert!(tunnel_allowed("crates.io", 443, &e));
        assert!(!tunnel_allowed("crates.io", 80, &e));
        assert!(tunnel_allowed("example.com", 8443, &e));
        assert!(!tunnel_allowed("evil.example", 443, &e));
        assert!(tunnel_allowed(
            "plain.example",
            80,
            &entries(&["plain.example:80"])
        ));
    }

    fn http(head: &str) -> Result<Request, Refusal> {
        parse_head(head.as_bytes()).map(|r| r.expect("complete head").0)
    }

    #[test]
    fn parse_connect() {
        let head = b"CONNECT crates.io:443 HTTP/1.1\r\nHost: crates.io\r\n\r\n\x16\x03";
        let (req, n) = parse_head(head).unwrap().unwrap();
        assert_eq!(
            req,
            Request::Connect {
                host: "crates.io".into(),
                port: 443
            }
        );
        assert_eq!(n, head.len() - 2);
        assert_eq!(
            http("CONNECT [::1]:443 HTTP/1.1\r\n\r\n").unwrap(),
            Request::Connect {
                host: "::1".into(),
                port: 443
            }
        );
        assert!(http("CONNECT host HTTP/1.1\r\n\r\n").is_err());
        assert!(http("CONNECT host:0 HTTP/1.1\r\n\r\n").is_err());
        assert!(http("CONNECT host:99999 HTTP/1.1\r\n\r\n").is_err());
        for odd in [
            r"x\.corp.example",
            r"x\046y.corp.example",
            "a%2eb",
            "fe80::1%25lo",
        ] {
            let r = http(&format!("CONNECT [{odd}]:443 HTTP/1.1\r\n\r\n"));
            assert!(r.is_err(), "{odd}: {r:?}");
        }
        assert!(http("CONNECT x\\.corp.example:443 HTTP/1.1\r\n\r\n").is_err());
        assert!(http("CONNECT my_host.corp.example:443 HTTP/1.1\r\n\r\n").is_ok());
        assert_eq!(
            parse_head(b"CONNECT crates.io:443 HTTP/1.1\r\nHo"),
            Ok(None)
        );
    }

    #[test]
    fn parse_absolute_http_rewrites_to_origin_form() {
        let req = http("GET http://Example.com:8080/a?b HTTP/1.1\r\nHost: example.com:8080\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\n").unwrap();
        match req {
            Request::Http {
                host,
                port,
                head,
                body_len,
            } => {
                assert_eq!((host.as_str(), port, body_len), ("example.com", 8080, 0));
                assert_eq!(
                    String::from_utf8(head).unwrap(),
                    "GET /a?b HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                );
            }
            other => panic!("{other:?}"),
        }
        // No Host header: the target's is added. Query without a path; scheme in capitals.
        match http("GET HTTP://u:p@example.com?q=1 HTTP/1.0\r\n\r\n").unwrap() {
            Request::Http { head, port, .. } => {
                assert_eq!(port, 80);
                assert_eq!(
                    String::from_utf8(head).unwrap(),
                    "GET /?q=1 HTTP/1.0\r\nHost: example.com\r\nConnection: close\r\n\r\n"
                );
            }
            other => panic!("{other:?}"),
        }
        match http("POST http://example.com/up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 12\r\n\r\n").unwrap() {
            Request::Http { body_len, .. } => assert_eq!(body_len, 12),
            other => panic!("{other:?}"),
        }
        assert!(http("GET /relative HTTP/1.1\r\n\r\n").is_err());
        assert!(http("GET https://example.com/ HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn headers_that_route_elsewhere_are_refused() {
        for h in [
            "X-Forwarded-Host: other.example",
            "Forwarded: host=other.example",
            "x-host: other.example",
            "X-Original-Host: other.example",
            "X-Forwarded-Server: other.example",
        ] {
            let r = http(&format!(
                "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n{h}\r\n\r\n"
            ));
            assert!(r.is_err(), "{h}: {r:?}");
        }
        // Control: the same request without it passes, and X-Forwarded-For (no routing) passes.
        assert!(http("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n").is_ok());
        assert!(
            http("GET http://example.com/ HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n").is_ok()
        );
    }

    /// A client that trickles its head byte by byte is cut off at the head deadline, not kept
    /// for one read timeout per byte.
    #[test]
    fn slow_head_is_cut_off_at_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            for b in b"GET http://example.com/ HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
                if c.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.read_to_end(&mut got);
            got
        });
        let (server, _) = l.accept().unwrap();
        let config = Config::new(&["example.com".to_string()]);
        let denials = Mutex::new(Vec::new());
        let t0 = std::time::Instant::now();
        handle_with_deadline(server, &config, &denials, Duration::from_millis(500));
        let took = t0.elapsed();
        let got = writer.join().unwrap();
        assert!(took < Duration::from_secs(3), "took {took:?}");
        assert!(
            String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }

    #[test]
    fn host_header_must_name_the_target() {
        let same = [
            ("http://example.com/", "example.com"),
            ("http://example.com/", "EXAMPLE.com."),
            ("http://example.com/", "example.com:80"),
            ("http://example.com:80/", "example.com"),
            ("http://example.com:8080/", "example.com:8080"),
            ("http://[::1]:8080/", "[::1]:8080"),
        ];
        for (target, host) in same {
            let r = http(&format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert!(r.is_ok(), "{target} {host}: {r:?}");
        }
        let different = [
            ("http://example.com/", "other.example"),
            ("http://example.com/", "example.com:8080"),
            ("http://example.com:8080/", "example.com"),
            ("http://example.com/", ""),
            ("http://example.com/", "example.com.evil"),
            ("http://u@example.com/", "u@example.com"),
        ];
        for (target, host) in different {
            let r = http(&format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert!(r.is_err(), "{target} {host}: {r:?}");
        }
        let two =
            http("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nhost: other\r\n\r\n");
        assert_eq!(two.unwrap_err().status, "400 Bad Request");
        let mismatch =
            http("GET http://example.com/ HTTP/1.1\r\nHost: other.example\r\n\r\n").unwrap_err();
        assert_eq!(mismatch.status, "403 Forbidden");
    }

    #[test]
    fn request_bodies_need_a_length() {
        let te = http("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(te.unwrap_err().status, "411 Length Required");
        for cl in ["x", "-1", "", "1, 2"] {
            let r = http(&format!("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: {cl}\r\n\r\n"));
            assert!(r.is_err(), "{cl:?}");
        }
        let two = http("POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(two.is_err());
    }

    #[test]
    fn test_name_map_replaces_dns_and_loopback_allowance_is_per_name() {
        let c = Config {
            entries: entries(&["good.test", "other.test"]),
            names: Some(parse_name_map(
                "good.test=127.0.0.1,other.test=::ffff:127.0.0.1",
            )),
            loopback_names: vec!["good.test".into()],
        };
        assert_eq!(
            c.resolve("good.test", 80).unwrap(),
            vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        assert!(
            c.resolve("localhost", 80).is_err(),
            "a name not in the map must not resolve"
        );
        assert_eq!(c.resolve("10.0.0.1", 80).unwrap().len(), 1);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.address_ok("good.test", ip("127.0.0.1")), Ok(()));
        assert_eq!(
            c.address_ok("good.test", ip("169.254.169.254")),
            Err(Refused::LinkLocal)
        );
        assert_eq!(
            c.address_ok("other.test", ip("::ffff:127.0.0.1")),
            Err(Refused::Loopback)
        );
    }

    #[test]
    fn name_map_syntax() {
        assert_eq!(
            parse_name_map(
                "a.test=::ffff:127.0.0.1, B.test = 127.0.0.1,a.test=10.0.0.1,junk,x=notip"
            ),
            vec![
                ("a.test".to_string(), "::ffff:127.0.0.1".parse().unwrap()),
                ("b.test".to_string(), "127.0.0.1".parse().unwrap()),
                ("a.test".to_string(), "10.0.0.1".parse().unwrap()),
            ]
        );
    }
}
