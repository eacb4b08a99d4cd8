//! `network.mode = "allowlist"`: HTTP(S) to allowed domains only, through a proxy on the host.
//!
//! The sandbox still gets its own network namespace with nothing but loopback. Inside it, init
//! listens on `127.0.0.1:3128` and hands every accepted connection, as a descriptor
//! (`SCM_RIGHTS`), to stockade on the host; no path or port of the host is exposed. Stockade
//! reads the request head and:
//! * `CONNECT host:port` (HTTPS, any TLS) — allowed host: connects and splices bytes both ways;
//! * `GET http://host/...` (plain HTTP) — allowed host: connects, rewrites the request line to
//!   origin form and splices;
//! * anything else, or a host not allowed: `403`, and a denial in the run's report.
//!
//! The command sees `HTTP_PROXY`/`HTTPS_PROXY` (both cases) and `ALL_PROXY` pointing at the
//! listener, which is what curl, git, cargo, pip, npm and most HTTP libraries honour. A program
//! that ignores proxy variables gets no network at all (the namespace has none).
//!
//! Names are resolved on the host. To stop an allowed name from being pointed at the host itself
//! (DNS rebinding to `127.0.0.1` or a cloud metadata address), loopback, link-local, multicast
//! and unspecified addresses are refused unless the entry that allowed the host names that exact
//! address (or `localhost` for loopback).

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stockade_policy::backend::Denial;

/// Where the command finds the proxy (inside the sandbox's own network namespace).
pub const INSIDE_ADDR: &str = "127.0.0.1:3128";
/// The proxy URL exported to the command.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";

const MAX_HEAD: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Does `host` match one of the `allowed` patterns (`name` exact, `*.name` subdomains)?
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|p| match p.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => host == *p,
    })
}

/// May the proxy connect to `ip` for `host`? Special-purpose addresses only when named exactly.
pub fn address_allowed(host: &str, ip: IpAddr, allowed: &[String]) -> bool {
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    if !special {
        return true;
    }
    let named = |s: &str| allowed.iter().any(|p| p == s);
    named(&ip.to_string()) || (ip.is_loopback() && host == "localhost" && named("localhost"))
}

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
        /// The head rewritten to origin form, ready to send upstream.
        head: Vec<u8>,
    },
}

/// Parse a request head (everything up to and including the blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if v.starts_with("HTTP/1.") => (m, t, v),
        _ => return Err(format!("malformed request line {first:?}")),
    };
    if method == "CONNECT" {
        let (host, port) = split_host_port(target, None)?;
        return Ok(Request::Connect { host, port });
    }
    let rest = target.strip_prefix("http://").ok_or_else(|| {
        format!("only absolute http:// URLs and CONNECT are proxied, not {target:?}")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = split_host_port(authority, Some(80))?;
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("proxy-") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    // `split("\r\n")` on a head ending in "\r\n\r\n" yields two trailing empty items; keep exactly one blank line.
    while out.ends_with("\r\n\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    Ok(Request::Http {
        host,
        port,
        head: out.into_bytes(),
    })
}

fn split_host_port(s: &str, default: Option<u16>) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad address {s:?}"))?;
        (h, tail.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match (port, default) {
        (Some(p), _) => p.parse().map_err(|_| format!("bad port in {s:?}"))?,
        (None, Some(d)) => d,
        (None, None) => return Err(format!("missing port in {s:?}")),
    };
    if host.is_empty() {
        return Err(format!("missing host in {s:?}"));
    }
    Ok((host.trim_end_matches('.').to_ascii_lowercase(), port))
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
        let allowed = Arc::new(allowed);
        while let Ok(Some(fd)) = stockade_sys::sockets::recv_fd(chan.as_raw_fd()) {
            let stream = TcpStream::from(fd);
            let allowed = Arc::clone(&allowed);
            let denials = Arc::clone(&denials);
            let _ = std::thread::Builder::new()
                .name("proxy".into())
                .spawn(move || handle(stream, &allowed, &denials));
        }
    })
}

fn deny(mut client: TcpStream, status: &str, why: &str) {
    let body = format!("stockade: {why}\n");
    let _ = write!(client, "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

fn handle(mut client: TcpStream, allowed: &[String], denials: &Mutex<Vec<Denial>>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        let mut chunk = [0u8; 2048];
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return deny(
                client,
                "431 Request Header Fields Too Large",
                "request head too large",
            );
        }
    };
    let _ = client.set_read_timeout(None);
    let req = match parse_head(&buf[..head_len]) {
        Ok(r) => r,
        Err(e) => return deny(client, "400 Bad Request", &e),
    };
    let (host, port) = match &req {
        Request::Connect { host, port } | Request::Http { host, port, .. } => (host.clone(), *port),
    };
    let record = |why: &str| {
        if let Ok(mut d) = denials.lock() {
            d.push(Denial {
                kind: "network".into(),
                target: format!("{host}:{port} ({why})"),
            });
        }
    };
    if !host_allowed(&host, allowed) {
        record("not in network.allowed_domains");
        return deny(
            client,
            "403 Forbidden",
            &format!("network access to {host} is not allowed (network.allowed_domains)"),
        );
    }
    let addrs: Vec<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return deny(
                client,
                "502 Bad Gateway",
                &format!("cannot resolve {host}: {e}"),
            )
        }
    };
    let Some(addr) = addrs
        .iter()
        .find(|a| address_allowed(&host, a.ip(), allowed))
        .copied()
    else {
        record("resolves only to loopback/link-local addresses");
        return deny(client, "403 Forbidden", &format!("{host} resolves to a local or link-local address, which is refused unless listed exactly"));
    };
    let mut upstream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            return deny(
                client,
                "502 Bad Gateway",
                &format!("cannot connect to {host}:{port}: {e}"),
            )
        }
    };
    let rest = &buf[head_len..];
    let ok = match &req {
        Request::Connect { .. } => {
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .is_ok()
                && upstream.write_all(rest).is_ok()
        }
        Request::Http { head, .. } => {
            upstream.write_all(head).is_ok() && upstream.write_all(rest).is_ok()
        }
    };
    if ok {
        splice(client, upstream);
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

fn copy_then_shutdown(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let a = vec!["crates.io".to_string(), "*.npmjs.org".to_string()];
        assert!(host_allowed("crates.io", &a));
        assert!(host_allowed("CRATES.IO.", &a));
        assert!(!host_allowed("static.crates.io", &a));
        assert!(host_allowed("registry.npmjs.org", &a));
        assert!(!host_allowed("npmjs.org", &a));
        assert!(!host_allowed("evilnpmjs.org", &a));
        assert!(!host_allowed("npmjs.org.evil.com", &a));
    }

    #[test]
    fn special_addresses_need_exact_entries() {
        let a = vec!["example.com".to_string()];
        assert!(!address_allowed(
            "example.com",
            "127.0.0.1".parse().unwrap(),
            &a
        ));
        assert!(!address_allowed(
            "example.com",
            "169.254.169.254".parse().unwrap(),
            &a
        ));
        assert!(!address_allowed("example.com", "::1".parse().unwrap(), &a));
        assert!(address_allowed(
            "example.com",
            "93.184.216.34".parse().unwrap(),
            &a
        ));
        let l = vec!["localhost".to_string()];
        assert!(address_allowed(
            "localhost",
            "127.0.0.1".parse().unwrap(),
            &l
        ));
        let ip = vec!["169.254.169.254".to_string()];
        assert!(address_allowed(
            "169.254.169.254",
            "169.254.169.254".parse().unwrap(),
            &ip
        ));
    }

    #[test]
    fn parse_connect_and_absolute_http() {
        assert_eq!(
            parse_head(b"CONNECT crates.io:443 HTTP/1.1\r\nHost: crates.io\r\n\r\n").unwrap(),
            Request::Connect {
                host: "crates.io".into(),
                port: 443
            }
        );
        match parse_head(b"GET http://Example.com:8080/a?b HTTP/1.1\r\nHost: example.com\r\nProxy-Connection: keep-alive\r\n\r\n").unwrap() {
            Request::Http { host, port, head } => {
                assert_eq!((host.as_str(), port), ("example.com", 8080));
                assert_eq!(String::from_utf8(head).unwrap(), "GET /a?b HTTP/1.1\r\nHost: example.com\r\n\r\n");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_head(b"GET /relative HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n").is_ok());
        assert!(parse_head(b"CONNECT host HTTP/1.1\r\n\r\n").is_err());
    }
}
