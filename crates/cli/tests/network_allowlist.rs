//! `--network allowlist`: HTTP(S) reaches allowed domains through stockade's proxy and nothing
//! else. Judged from the host: loopback listeners the test runs log every contact.
//!
//! Names never reach DNS: the test builds of stockade honour `STOCKADE_TEST_NAME_MAP` (names →
//! addresses, replacing resolution) and `STOCKADE_TEST_LOOPBACK_NAMES` (names whose loopback
//! answer is accepted, so a positive control can reach the test's own loopback server; loopback
//! is otherwise always refused). Release builds ignore both (see `stockade_linux::proxy`).
//! Every address a test maps a name to is on loopback, or in a network namespace the test made.

mod common;

use common::{run_ip, skip, Out, Run, TcpLog, World};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A loopback HTTP server that records what each connection sends and answers 200.
fn server() -> (u16, Arc<Mutex<Vec<String>>>) {
    server_on("127.0.0.1:0")
}

/// [`server`] on a given address.
fn server_on(addr: &str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind(addr).unwrap();
    let port = l.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            // Everything the client side sends until it pauses (so a smuggled second request
            // would be logged with the first).
            let _ = c.set_read_timeout(Some(Duration::from_millis(300)));
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            log2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&got).into_owned());
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    (port, log)
}

fn seen(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(200));
    log.lock().unwrap().clone()
}

fn have_curl() -> bool {
    common::have("curl")
}

/// `stockade run --network allowlist` with the test name map; the report is written outside
/// the workspace.
fn allowlist(w: &World, names: &str, loopback_ok: &str, domains: &[&str]) -> Run {
    let mut r = w
        .run()
        .flag("--no-pty")
        .flag("--report")
        .flag(w.root.join("report.json"))
        .flag("--network")
        .flag("allowlist")
        .env("STOCKADE_TEST_NAME_MAP", names)
        .env("STOCKADE_TEST_LOOPBACK_NAMES", loopback_ok);
    for d in domains {
        r = r.flag("--allow-domain").flag(d);
    }
    r
}

fn report(w: &World) -> String {
    std::fs::read_to_string(w.root.join("report.json")).unwrap_or_default()
}

/// `curl` through the proxy: prints `ran-NAME` first, then the final status and the proxy's
/// answer to a `CONNECT` (`-p`).
fn curl(name: &str, args: &str) -> String {
    format!(
        "echo ran-{name}; curl -s -m 5 --noproxy '' -o /dev/null \
         -w 'code-{name}=%{{http_code}} connect-{name}=%{{http_connect}}\\n' {args}\n"
    )
}

/// The attack ran, and the proxy (or the server) answered `want`.
#[track_caller]
fn code(out: &Out, name: &str, want: &str) {
    out.assert_ran(&format!("ran-{name}"));
    assert!(
        out.has(&format!("code-{name}={want} ")) || out.has(&format!("connect-{name}={want}\n")),
        "{name}: expected {want}: {out:#?}"
    );
}

#[test]
fn allowed_domain_is_reached_through_the_proxy_and_others_are_refused() {
    if !have_curl() {
        return skip("curl is not installed (apt-get install curl)");
    }
    let w = World::new("allowlist");
    let (port, log) = server();
    let mut script = curl("plain", &format!("http://good.test:{port}/a"));
    script += &curl("tunnel", &format!("-p http://good.test:{port}/b"));
    script += &curl("ip", &format!("http://127.0.0.1:{port}/c"));
    script += &curl("other", &format!("http://other.test:{port}/e"));
    script += &format!(
        "echo ran-direct; curl -s -m 3 --noproxy '*' -o /dev/null -w 'code-direct=%{{http_code}} \\n' http://127.0.0.1:{port}/d\necho done\n"
    );
    let out = allowlist(
        &w,
        "good.test=127.0.0.1,other.test=127.0.0.1",
        "good.test,other.test",
        &[&format!("good.test:{port}")],
    )
    .sh(&script);
    assert_eq!(out.code(), 0, "{out:#?}");
    out.assert_ran("done");
    code(&out, "plain", "200");
    code(&out, "tunnel", "200");
    code(&out, "ip", "403");
    code(&out, "other", "403");
    code(&out, "direct", "000");
    let seen = seen(&log);
    assert!(
        seen.iter().any(|l| l.starts_with("GET /a ")),
        "plain request not proxied: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("GET /b ")),
        "tunnelled request not seen: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("/c ") || l.contains("/d ") || l.contains("/e ")),
        "a refused request got through: {seen:?}"
    );
    let rep = report(&w);
    assert!(
        rep.contains("\"kind\":\"network\"") && rep.contains("127.0.0.1"),
        "denial not reported: {rep}"
    );
}

#[test]
fn network_off_reaches_nothing_even_through_a_proxy_variable() {
    if !have_curl() {
        return skip("curl is not installed (apt-get install curl)");
    }
    let w = World::new("netoff");
    let (port, log) = server();
    let script = format!("echo ran; curl -s -m 3 -x http://127.0.0.1:{port} -o /dev/null -w 'code=%{{http_code}}\\n' http://localhost:{port}/x; echo done");
    let out = w.run().flag("--network").flag("off").sh(&script);
    out.assert_ran("ran");
    assert!(out.has("done") && out.has("code=000"), "{out:#?}");
    assert!(seen(&log).is_empty(), "host server was contacted");
    // positive control: with the network on, the same request arrives
    let out = w.run().net_on().sh(&format!("curl -s -m 3 --noproxy '*' -o /dev/null -w 'code=%{{http_code}}\\n' http://127.0.0.1:{port}/y"));
    assert!(out.has("code=200"), "{out:#?}");
}

/// An allowed name whose answer is loopback in IPv4-mapped (or unspecified) form must not reach
/// the host's loopback. Host control: the kernel does route those forms to the listener.
#[test]
fn mapped_loopback_answers_are_refused() {
    if !have_curl() {
        return skip("curl is not installed");
    }
    let w = World::new("allow-mapped");
    let l = TcpLog::open("127.0.0.1").unwrap();
    let p = l.port;
    // Host control: the mapped and unspecified forms do reach the 127.0.0.1 listener.
    for a in ["[::ffff:127.0.0.1]", "[::ffff:0.0.0.0]", "127.0.0.1"] {
        let addr: SocketAddr = format!("{a}:{p}").parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("host control {addr}: {e}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let base = l.contacts();
    assert_eq!(base, 3, "host control: the listener did not see every form");

    let names = "mapped.test=::ffff:127.0.0.1,zero.test=::ffff:0.0.0.0,lo.test=127.0.0.1,\
                 hex.test=::ffff:7f00:1,good.test=127.0.0.1";
    let cases = ["mapped", "zero", "lo", "hex"];
    let mut domains: Vec<String> = cases.iter().map(|c| format!("{c}.test:{p}")).collect();
    domains.push(format!("good.test:{p}"));
    domains.push(format!("[::ffff:127.0.0.1]:{p}"));
    let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
    let mut script = String::new();
    for c in cases {
        script += &curl(&format!("{c}-http"), &format!("http://{c}.test:{p}/"));
        script += &curl(&format!("{c}-connect"), &format!("-p http://{c}.test:{p}/"));
    }
    script += &curl("literal", &format!("http://[::ffff:127.0.0.1]:{p}/"));
    let out = allowlist(&w, names, "good.test", &domains).sh(&script);
    for c in cases {
        code(&out, &format!("{c}-http"), "403");
        code(&out, &format!("{c}-connect"), "403");
    }
    code(&out, "literal", "403");
    assert_eq!(
        l.contacts(),
        base,
        "the sandbox reached the host's loopback"
    );
    let rep = report(&w);
    assert!(rep.contains("is loopback"), "{rep}");
    assert!(rep.contains("is unspecified"), "{rep}");

    // Positive control through the proxy: the test allowance reaches the same listener.
    let out = allowlist(&w, names, "good.test", &domains)
        .sh(&curl("good", &format!("-p http://good.test:{p}/")));
    out.assert_ran("ran-good");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(l.contacts(), base + 1, "positive control: {out:#?}");
}

/// Domain fronting: a plain-HTTP request to an allowed name carrying another `Host:` is refused
/// and nothing reaches the upstream; a second request on the same connection is not forwarded.
#[test]
fn host_header_must_match_the_target() {
    if !have_curl() {
        return skip("curl is not installed");
    }
    let w = World::new("allow-host");
    let (p, log) = server();
    let names = "good.test=127.0.0.1,other.test=127.0.0.1";
    let domains = [format!("good.test:{p}")];
    let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
    let mut script = curl(
        "front",
        &format!("-H 'Host: other.test:{p}' http://good.test:{p}/front"),
    );
    script += &curl(
        "front-port",
        &format!("-H 'Host: good.test:1' http://good.test:{p}/frontport"),
    );
    // Pipelining: a matching first request, then one for another host on the same connection.
    script += &format!(
        "echo ran-pipe; python3 -c \"
import socket
s = socket.create_connection(('127.0.0.1', 3128))
s.sendall(b'GET http://good.test:{p}/first HTTP/1.1\\r\\nHost: good.test:{p}\\r\\n\\r\\n'
          b'GET http://good.test:{p}/second HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\n')
data = b''
while True:
    d = s.recv(4096)
    if not d: break
    data += d
print('pipe-responses=%d' % data.count(b'HTTP/1.'))
\"\n"
    );
    let out = allowlist(&w, names, "good.test,other.test", &domains).sh(&script);
    code(&out, "front", "403");
    code(&out, "front-port", "403");
    out.assert_ran("ran-pipe");
    assert!(out.has("pipe-responses=1\n"), "{out:#?}");
    let got = seen(&log);
    assert!(
        got.iter()
            .all(|h| !h.contains("front") && !h.contains("other.test") && !h.contains("/second")),
        "a fronted request was forwarded: {got:?}"
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("GET /first "), "{got:?}");
    // Positive control: the same request with a matching Host arrives.
    let out = allowlist(&w, names, "good.test,other.test", &domains).sh(&curl(
        "match",
        &format!("-H 'Host: good.test:{p}' http://good.test:{p}/match"),
    ));
    code(&out, "match", "200");
    let seen2 = seen(&log);
    assert!(
        seen2.iter().any(|h| h.starts_with("GET /match ")),
        "{seen2:?}"
    );
}

/// `CONNECT allowed:PORT` for a port the entry does not allow is refused before any connection;
/// a `name:PORT` entry allows it.
#[test]
fn connect_only_to_allowed_ports() {
    if !have_curl() {
        return skip("curl is not installed");
    }
    let w = World::new("allow-port");
    let l = TcpLog::open("127.0.0.1").unwrap();
    let p = l.port;
    let names = "good.test=127.0.0.1";
    let mut script = curl("connect", &format!("-p http://good.test:{p}/"));
    script += &curl("http", &format!("http://good.test:{p}/"));
    script += &curl("ssh", "-p http://good.test:22/");
    let out = allowlist(&w, names, "good.test", &["good.test"]).sh(&script);
    code(&out, "connect", "403");
    code(&out, "http", "403");
    code(&out, "ssh", "403");
    assert_eq!(l.contacts(), 0, "a refused port was connected to");
    let rep = report(&w);
    assert!(rep.contains(&format!("port {p} of good.test")), "{rep}");
    assert!(rep.contains("port 22 of good.test"), "{rep}");
    // Positive control: with `good.test:PORT` listed the tunnel opens.
    let port_entry = format!("good.test:{p}");
    let out = allowlist(&w, names, "good.test", &[&port_entry])
        .sh(&curl("connect", &format!("-p http://good.test:{p}/")));
    out.assert_ran("ran-connect");
    assert_eq!(l.contacts(), 1, "positive control: {out:#?}");
}

/// A network namespace of the test's own, with stand-ins on its loopback device for addresses
/// that would leave the machine: the metadata address and translated/6to4/compatible forms.
#[test]
fn translated_and_metadata_answers_are_refused_in_a_test_netns() {
    if !have_curl() {
        return skip("curl is not installed");
    }
    if !common::have("ip") {
        return skip("no `ip` tool");
    }
    let handle = std::thread::spawn(netns_case);
    if let Err(e) = handle.join() {
        std::panic::resume_unwind(e);
    }
}

fn netns_case() {
    // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's network namespace (no
    // memory is shared with the call); children this thread spawns inherit it.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return skip(format!(
            "cannot create a test network namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    run_ip(&["link", "set", "lo", "up"]).unwrap();
    // (name in the map, answer, stand-in address on lo, listener address)
    let cases = [
        (
            "meta",
            "::ffff:169.254.169.254",
            Some("169.254.169.254/32"),
            "169.254.169.254",
        ),
        ("meta4", "169.254.169.254", None, "169.254.169.254"),
        (
            "nat64",
            "64:ff9b::7f00:1",
            Some("64:ff9b::7f00:1/128"),
            "64:ff9b::7f00:1",
        ),
        (
            "nat64meta",
            "64:ff9b::a9fe:a9fe",
            Some("64:ff9b::a9fe:a9fe/128"),
            "64:ff9b::a9fe:a9fe",
        ),
        (
            "nat64local",
            "64:ff9b:1::7f00:1",
            Some("64:ff9b:1::7f00:1/128"),
            "64:ff9b:1::7f00:1",
        ),
        (
            "sixtofour",
            "2002:7f00:1::1",
            Some("2002:7f00:1::1/128"),
            "2002:7f00:1::1",
        ),
        (
            "compat",
            "::127.0.0.1",
            Some("::127.0.0.1/128"),
            "::127.0.0.1",
        ),
        ("private", "10.203.0.1", Some("10.203.0.1/32"), "10.203.0.1"),
        ("ula", "fd00:5::1", Some("fd00:5::1/128"), "fd00:5::1"),
        (
            "cgnat",
            "::ffff:100.64.0.1",
            Some("100.64.0.1/32"),
            "100.64.0.1",
        ),
    ];
    for (_, _, add, _) in &cases {
        if let Some(a) = add {
            let fam = if a.contains(':') { "-6" } else { "-4" };
            run_ip(&[fam, "addr", "add", a, "dev", "lo", "nodad"])
                .or_else(|_| run_ip(&[fam, "addr", "add", a, "dev", "lo"]))
                .unwrap();
        }
    }
    let mut logs = Vec::new();
    for (name, _, _, listen) in &cases {
        let l = TcpLog::open(listen).unwrap_or_else(|| panic!("cannot listen on {listen}"));
        // Host control: the stand-in is reachable from this namespace.
        let addr = SocketAddr::new(listen.parse().unwrap(), l.port);
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("host control {name} {addr}: {e}"));
        logs.push(l);
    }
    std::thread::sleep(Duration::from_millis(300));
    for (l, (name, ..)) in logs.iter().zip(&cases) {
        assert_eq!(l.contacts(), 1, "host control {name}");
    }
    let w = World::new("allow-netns");
    let names: Vec<String> = cases
        .iter()
        .map(|(n, answer, ..)| format!("{n}.test={answer}"))
        .collect();
    let domains: Vec<String> = cases
        .iter()
        .zip(&logs)
        .map(|((n, ..), l)| format!("{n}.test:{}", l.port))
        .collect();
    let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
    let mut script = String::new();
    for ((n, ..), l) in cases.iter().zip(&logs) {
        script += &curl(
            &format!("{n}-http"),
            &format!("http://{n}.test:{}/", l.port),
        );
        script += &curl(
            &format!("{n}-connect"),
            &format!("-p http://{n}.test:{}/", l.port),
        );
    }
    let out = allowlist(&w, &names.join(","), "", &domains).sh(&script);
    for (n, ..) in &cases {
        code(&out, &format!("{n}-http"), "403");
        code(&out, &format!("{n}-connect"), "403");
    }
    for (l, (name, ..)) in logs.iter().zip(&cases) {
        assert_eq!(l.contacts(), 1, "the sandbox reached the {name} stand-in");
    }
    // Positive control: private, ULA and CGNAT answers are reached when an address entry lists
    // them.
    let listed = ["private", "ula", "cgnat"];
    let mut domains2 = domains.clone();
    domains2.extend(["10.0.0.0/8", "[fd00::/8]", "100.64.0.0/10"]);
    let mut script = String::new();
    for ((n, ..), l) in cases.iter().zip(&logs) {
        if listed.contains(n) {
            script += &curl(
                &format!("{n}-connect"),
                &format!("-p http://{n}.test:{}/", l.port),
            );
        }
    }
    let out = allowlist(&w, &names.join(","), "", &domains2).sh(&script);
    for ((n, ..), l) in cases.iter().zip(&logs) {
        let want = if listed.contains(n) { 2 } else { 1 };
        if listed.contains(n) {
            out.assert_ran(&format!("ran-{n}-connect"));
        }
        assert_eq!(l.contacts(), want, "{n} with address entries: {out:#?}");
    }
}

/// `CONNECT allowed:80` on an entry without a port would be a raw tunnel carrying plain HTTP with
/// any `Host:` header (domain fronting past the Host check). Refused before any connection; the
/// plain-HTTP request to the same port arrives (positive control), and a `name:80` entry opens
/// the tunnel. Port 80 is only bound in a network namespace of the test's own.
#[test]
fn connect_to_port_80_is_not_a_raw_tunnel() {
    if !common::have("python3") {
        return skip("python3 is not installed");
    }
    let handle = std::thread::spawn(port_80_case);
    if let Err(e) = handle.join() {
        std::panic::resume_unwind(e);
    }
}

fn port_80_case() {
    // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's network namespace (no
    // memory is shared with the call); children this thread spawns inherit it.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return skip(format!(
            "cannot create a test network namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    if let Err(e) = run_ip(&["link", "set", "lo", "up"]) {
        return skip(&e);
    }
    let (p, log) = server_on("127.0.0.1:80");
    assert_eq!(p, 80);
    let w = World::new("allow-80");
    let names = "good.test=127.0.0.1,evil.test=127.0.0.1";
    let fronted = "echo ran-tunnel; python3 -c \"
import socket
s = socket.create_connection(('127.0.0.1', 3128))
s.sendall(b'CONNECT good.test:80 HTTP/1.1\\r\\nHost: good.test:80\\r\\n\\r\\n')
status = b''
while not status.endswith(b'\\n'):
    d = s.recv(1)
    if not d: break
    status += d
print('answer=%r' % (status.split(b' ') + [b''])[1])
s.sendall(b'GET /fronted HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n')
s.settimeout(3)
try:
    print('tunnel-got=%r' % s.recv(200)[:15])
except Exception as e:
    print('tunnel-got=%r' % e)
\"\n";
    let out = allowlist(&w, names, "good.test,evil.test", &["good.test"]).sh(fronted);
    out.assert_ran("ran-tunnel");
    assert!(out.has("answer=b'403'"), "{out:#?}");
    let got = seen(&log);
    assert!(
        got.is_empty(),
        "a raw tunnel to port 80 was opened: {got:?}"
    );
    assert!(
        report(&w).contains("no CONNECT tunnel to port 80"),
        "{}",
        report(&w)
    );
    // Positive controls: plain HTTP to the same port arrives; a `good.test:80` entry opens the
    // tunnel (the user listed a raw tunnel).
    let plain = "echo ran-plain; python3 -c \"
import socket
s = socket.create_connection(('127.0.0.1', 3128))
s.sendall(b'GET http://good.test/plain HTTP/1.1\\r\\nHost: good.test\\r\\n\\r\\n')
print('plain=%r' % s.recv(200)[:15])
\"\n";
    let out = allowlist(&w, names, "good.test,evil.test", &["good.test"]).sh(plain);
    out.assert_ran("ran-plain");
    let got = seen(&log);
    assert!(
        got.len() == 1 && got[0].starts_with("GET /plain "),
        "{got:?} {out:#?}"
    );
    let out = allowlist(&w, names, "good.test,evil.test", &["good.test:80"]).sh(fronted);
    assert!(out.has("answer=b'200'"), "{out:#?}");
    let got = seen(&log);
    assert!(
        got.len() == 2 && got[1].starts_with("GET /fronted "),
        "{got:?} {out:#?}"
    );
}

/// Every proxied connection costs stockade (on the host, outside the sandbox's cgroup and
/// limits) a thread and descriptors: the command must not be able to make it hold an unbounded
/// number. Judged from the host: stockade's own thread count while the command holds 600 idle
/// connections; afterwards the proxy still serves (positive control).
#[test]
fn the_command_cannot_make_the_proxy_hold_unbounded_connections() {
    if !have_curl() {
        return skip("curl is not installed");
    }
    let w = World::new("allow-flood");
    let (port, log) = server();
    let script = format!(
        "python3 -c \"
import socket, time, resource
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), min(hard, 4096)))
held = []
for i in range(600):
    s = socket.create_connection(('127.0.0.1', 3128))
    s.sendall(b'GET')
    held.append(s)
print('held=%d' % len(held), flush=True)
time.sleep(4)
\"
sleep 1
{}",
        curl("after", &format!("http://good.test:{port}/after"))
    );
    let mut cmd = allowlist(
        &w,
        "good.test=127.0.0.1",
        "good.test",
        &[&format!("good.test:{port}")],
    )
    .command(&["sh", "-c", &script]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let start = std::time::Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let watch = std::thread::spawn(move || {
        let mut most = 0;
        while let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            most = most.max(tasks.count());
            std::thread::sleep(Duration::from_millis(50));
        }
        most
    });
    let out = common::wait_child(&mut child, None, Duration::from_secs(60), start);
    let most = watch.join().unwrap();
    assert!(out.has("held=600"), "the flood did not run: {out:#?}");
    assert!(
        most <= 2 * 128 + 16,
        "stockade ran {most} threads for the command's connections"
    );
    code(&out, "after", "200");
    assert!(seen(&log).iter().any(|h| h.starts_with("GET /after ")));
}

/// A name the DNS resolver would read differently from the allowlist check: glibc takes `\.` as
/// a dot inside a label, so `x\.wild.test` is the name `x.wild` under `test`, not a subdomain of
/// `wild.test`, though the text ends in `.wild.test`. Such names (anything but letters, digits,
/// `-`, `_` and dots) are refused before any lookup. The name map stands in for DNS here: the
/// escaped name is mapped to the test's listener, so any lookup of it would be seen.
#[test]
fn escaped_names_are_not_looked_up() {
    if !common::have("python3") {
        return skip("python3 is not installed");
    }
    let w = World::new("allow-escape");
    let l = TcpLog::open("127.0.0.1").unwrap();
    let p = l.port;
    let names = r"x\.wild.test=127.0.0.1,x\046y.wild.test=127.0.0.1,x.wild.test=127.0.0.1";
    let loopback = r"x\.wild.test,x\046y.wild.test,x.wild.test";
    let connect = |name: &str, host: &str| {
        format!(
            "echo ran-{name}; python3 -c \"
import socket
s = socket.create_connection(('127.0.0.1', 3128))
s.sendall(b'CONNECT {host}:{p} HTTP/1.1\\r\\n\\r\\n')
status = b''
while not status.endswith(b'\\n'):
    d = s.recv(1)
    if not d: break
    status += d
print('answer-{name}=%r' % (status.split(b' ') + [b''])[1])
\"\n"
        )
    };
    // Escaped twice: once for `sh` (inside double quotes), once for Python's bytes literal.
    let script = connect("dot", r"x\\\\.wild.test") + &connect("dec", r"x\\\\046y.wild.test");
    let entry = format!("*.wild.test:{p}");
    let out = allowlist(&w, names, loopback, &[&entry]).sh(&script);
    out.assert_ran("ran-dot");
    out.assert_ran("ran-dec");
    assert_eq!(l.contacts(), 0, "an escaped name was looked up: {out:#?}");
    assert!(out.has("answer-dot=b'400'"), "{out:#?}");
    assert!(out.has("answer-dec=b'400'"), "{out:#?}");
    // Positive control: the plain subdomain is reached.
    let out = allowlist(&w, names, loopback, &[&entry]).sh(&connect("plain", "x.wild.test"));
    assert!(out.has("answer-plain=b'200'"), "{out:#?}");
    assert_eq!(l.contacts(), 1, "{out:#?}");
}

/// Every refused request is a denial stockade keeps (on the host) for the report: repeating
/// refused requests must not grow it without bound. Judged from the host: the report after
/// 2500 refused requests lists the first ones and says the rest were dropped.
#[test]
fn refused_requests_cannot_grow_the_report_without_bound() {
    if !common::have("python3") {
        return skip("python3 is not installed");
    }
    let w = World::new("allow-denials");
    let script = "python3 -c \"
import socket
for i in range(2500):
    s = socket.create_connection(('127.0.0.1', 3128))
    s.sendall(b'CONNECT evil%d.test:443 HTTP/1.1\\r\\n\\r\\n' % i)
    s.recv(300)
    s.close()
print('sent=%d' % (i + 1))
\"";
    let out = allowlist(&w, "", "", &["good.test"]).sh(script);
    assert!(out.has("sent=2500"), "{out:#?}");
    let rep = report(&w);
    let listed = rep.matches("is not in network.allowed_domains").count();
    assert!(
        rep.contains("evil0.test") && rep.contains("evil998.test"),
        "{rep:.2000}"
    );
    assert!(
        (900..=1000).contains(&listed),
        "{listed} denials listed, report of {} bytes",
        rep.len()
    );
    assert!(
        rep.contains("the rest not listed"),
        "{:.2000}",
        &rep[rep.len().saturating_sub(2000)..]
    );
}

/// The same bound for `connect()`s the gate refuses (init reports each to stockade): 2500
/// refused connects to a host unix socket outside the writable roots leave a report listing
/// the first ones and saying the rest were dropped; the socket saw none of them.
#[test]
fn refused_connects_cannot_grow_the_report_without_bound() {
    if !common::have("python3") {
        return skip("python3 is not installed");
    }
    let w = World::new("gate-denials");
    let sock = w.outside.join("s.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    l.set_nonblocking(true).unwrap();
    // Positive control from the host: the socket is reachable.
    std::os::unix::net::UnixStream::connect(&sock).unwrap();
    assert!(l.accept().is_ok());
    let script = format!(
        "python3 -c \"
import socket
for i in range(2500):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect('{}')
        print('connected')
    except OSError:
        pass
    s.close()
print('tried=%d' % (i + 1))
\"",
        sock.display()
    );
    let out = w
        .run()
        .flag("--no-pty")
        .flag("--report")
        .flag(w.root.join("report.json"))
        .sh(&script);
    assert!(out.has("tried=2500"), "{out:#?}");
    out.assert_not("connected");
    assert!(l.accept().is_err(), "the sandbox reached the host socket");
    let rep = report(&w);
    let listed = rep.matches("s.sock").count();
    assert!(
        (900..=1000).contains(&listed),
        "{listed} refused connects listed, report of {} bytes",
        rep.len()
    );
    assert!(
        rep.contains("the rest not listed"),
        "{:.2000}",
        &rep[rep.len().saturating_sub(2000)..]
    );
}
