//! `--network allowlist`: HTTP(S) reaches allowed domains through stockade's proxy and nothing
//! else. Judged from the host: a loopback HTTP server the test runs logs every request it gets.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

fn world(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let dir = home
        .join(".stockade-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback HTTP server that records the request lines it receives.
fn server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let n = c.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            log2.lock().unwrap().push(line);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    (port, log)
}

fn have_curl() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn stockade(ws: &PathBuf, extra: &[&str], script: &str) -> (String, String, i32) {
    let report = ws.with_extension("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["run", "--no-pty", "--workspace"])
        .arg(ws)
        .arg("--report")
        .arg(&report)
        .args(extra)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    let rep = std::fs::read_to_string(&report).unwrap_or_default();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        rep,
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn allowed_domain_is_reached_through_the_proxy_and_others_are_refused() {
    if !have_curl() {
        eprintln!("SKIP allowlist test: curl is not installed");
        return;
    }
    let ws = world("allowlist");
    let (port, log) = server();
    let script = format!(
        "curl -s --noproxy '' -o /dev/null -w 'allowed=%{{http_code}}\\n' http://localhost:{port}/a; \
         curl -s --noproxy '' -p -o /dev/null -w 'tunnel=%{{http_code}}\\n' http://localhost:{port}/b; \
         curl -s --noproxy '' -o /dev/null -w 'ip=%{{http_code}}\\n' http://127.0.0.1:{port}/c; \
         curl -s -m 3 --noproxy '*' -o /dev/null -w 'direct=%{{http_code}}\\n' http://localhost:{port}/d; echo done"
    );
    let (out, report, code) = stockade(
        &ws,
        &["--network", "allowlist", "--allow-domain", "localhost"],
        &script,
    );
    assert_eq!(code, 0, "stdout: {out}");
    assert!(out.contains("done"), "the command did not run: {out}");
    assert!(out.contains("allowed=200"), "{out}");
    assert!(out.contains("tunnel=200"), "{out}");
    assert!(out.contains("ip=403"), "{out}");
    assert!(out.contains("direct=000"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let seen = log.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.starts_with("GET /a ")),
        "plain request not proxied: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("GET /b ")),
        "tunnelled request not seen: {seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("/c") || l.contains("/d")),
        "a refused request got through: {seen:?}"
    );
    assert!(
        report.contains("\"kind\":\"network\"") && report.contains("127.0.0.1"),
        "denial not reported: {report}"
    );
    let _ = std::fs::remove_dir_all(&ws);
}

#[test]
fn network_off_reaches_nothing_even_through_a_proxy_variable() {
    if !have_curl() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let ws = world("netoff");
    let (port, log) = server();
    let script = format!("curl -s -m 3 -x http://127.0.0.1:{port} -o /dev/null -w 'code=%{{http_code}}\\n' http://localhost:{port}/x; echo done");
    let (out, _, _) = stockade(&ws, &["--network", "off"], &script);
    assert!(out.contains("done") && out.contains("code=000"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(log.lock().unwrap().is_empty(), "host server was contacted");
    // positive control: with the network on, the same request arrives
    let (out, _, _) = stockade(&ws, &["--network", "on"], &format!("curl -s -m 3 --noproxy '*' -o /dev/null -w 'code=%{{http_code}}\\n' http://127.0.0.1:{port}/y"));
    assert!(out.contains("code=200"), "{out}");
    let _ = std::fs::remove_dir_all(&ws);
}
