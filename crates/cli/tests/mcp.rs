//! `stockade mcp` end to end, with a real MCP client over stdio: the policy the human gave the
//! server is the ceiling for every call. Requests to widen it are refused and nothing happens (judged
//! from the host: no file written, a loopback listener sees no connection); requests to narrow it
//! work and the narrowing is in force. Hostile JSON-RPC is answered with errors and the server
//! keeps serving.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::symlink;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// An MCP client driving `stockade mcp` over its stdin/stdout.
struct Client {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    next: u64,
}

impl Client {
    /// `stockade mcp --workspace <ws> <flags>` with the world's HOME and state dir, initialised.
    fn start(w: &World, flags: &[&str]) -> Client {
        let mut c = Command::new(bin());
        c.arg("mcp")
            .arg("--workspace")
            .arg(&w.ws)
            .args(flags)
            .env("HOME", &w.home)
            .env("XDG_STATE_HOME", &w.state)
            .env_remove("STOCKADE_LOG")
            .env_remove("XDG_CONFIG_HOME")
            .current_dir(&w.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().expect("cannot start stockade mcp");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut cl = Client {
            child,
            stdin,
            lines,
            next: 0,
        };
        let r = cl.request("initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}));
        assert_eq!(r["result"]["serverInfo"]["name"], "stockade", "{r}");
        cl.send_raw(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        cl
    }

    fn send_raw(&mut self, line: &[u8]) {
        self.stdin.write_all(line).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next message from the server.
    fn recv(&mut self) -> Value {
        let l = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the MCP server did not answer (or died)");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON from the server: {e}: {l}"))
    }

    /// Send a raw line and return the answer.
    fn raw(&mut self, line: &[u8]) -> Value {
        self.send_raw(line);
        self.recv()
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let r = self.raw(msg.to_string().as_bytes());
        assert_eq!(r["id"], id, "answer to another request: {r}");
        r
    }

    /// `tools/call run` with `args`: the tool result.
    fn run(&mut self, args: Value) -> Value {
        let r = self.request("tools/call", json!({"name": "run", "arguments": args}));
        assert!(
            r.get("error").is_none(),
            "JSON-RPC error for a run call: {r}"
        );
        r["result"].clone()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(r: &Value) -> String {
    r["content"][0]["text"].as_str().unwrap_or("").to_string()
}

fn stdout(r: &Value) -> String {
    r["structuredContent"]["stdout"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[track_caller]
fn assert_refused(r: &Value, why: &str, names: &str) {
    assert_eq!(r["isError"], true, "{why}: not refused: {r:#}");
    let t = text(r);
    assert!(t.starts_with("refused, nothing ran"), "{why}: {t}");
    assert!(
        t.contains(names),
        "{why}: the refusal does not name {names:?}: {t}"
    );
    assert!(
        r.get("structuredContent").is_none(),
        "{why}: something ran: {r:#}"
    );
}

/// The ceiling of the servers below: workspace + `extra` writable, allowlist of two domains, 30 s.
fn ceiling(extra: &std::path::Path) -> Vec<String> {
    [
        "--writable",
        extra.to_str().unwrap(),
        "--network",
        "allowlist",
        "--allow-domain",
        "allowed.test",
        "--allow-domain",
        "other.test",
        "--timeout",
        "30",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn widening_requests_are_refused_and_nothing_happens() {
    let w = World::new("mcp-widen");
    let extra = w.root.join("extra");
    fs::create_dir_all(&extra).unwrap();
    symlink(&w.outside, w.ws("link")).unwrap();
    let listener = TcpLog::open("127.0.0.1").expect("loopback listener");
    let flags = ceiling(&extra);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c = Client::start(&w, &flags);

    // The tool description states the ceiling, never how to escape it.
    let tools = c.request("tools/list", json!({}));
    let run_tool = &tools["result"]["tools"][0];
    let desc = run_tool["description"].as_str().unwrap();
    assert!(
        desc.contains("allowlist (allowed.test, other.test)") && desc.contains("30 s"),
        "{desc}"
    );
    assert!(desc.contains(extra.to_str().unwrap()), "{desc}");
    assert!(
        !desc.contains("--"),
        "the description tells how to widen: {desc}"
    );
    assert_eq!(run_tool["inputSchema"]["additionalProperties"], false);
    assert_eq!(run_tool["inputSchema"]["required"], json!(["command"]));

    // The attack: a marker outside the workspace and a connection to the host's loopback.
    let attack = |tag: &str| {
        format!(
            "echo RAN; echo x > {o}/marker-{tag}; bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}'; echo DONE",
            o = q(&w.outside),
            port = listener.port
        )
    };
    let before = snap_tree(&w.outside);
    let outside = w.outside.to_str().unwrap().to_string();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "network on",
            json!({"command": attack("net"), "network": "on"}),
            "--network on",
        ),
        (
            "writable outside",
            json!({"command": attack("wr"), "writable": [outside]}),
            "--writable",
        ),
        (
            "writable via symlink",
            json!({"command": attack("wrl"), "writable": ["link"]}),
            "--writable",
        ),
        (
            "writable /",
            json!({"command": attack("wr2"), "writable": ["/"]}),
            "--writable",
        ),
        (
            "another workspace",
            json!({"command": attack("ws"), "workspace": outside}),
            "--workspace",
        ),
        (
            "workspace via symlink",
            json!({"command": attack("wsl"), "workspace": w.ws("link")}),
            "--workspace",
        ),
        (
            "cwd outside",
            json!({"command": attack("cwd"), "cwd": outside}),
            "not beneath the workspace",
        ),
        (
            "cwd /",
            json!({"command": attack("cwd2"), "cwd": "/"}),
            "not beneath the workspace",
        ),
        (
            "cwd via ..",
            json!({"command": attack("cwd3"), "cwd": "../outside"}),
            "`..`",
        ),
        (
            "cwd via ws/..",
            json!({"command": attack("cwd4"), "cwd": format!("{}/../outside", w.ws.display())}),
            "`..`",
        ),
        (
            "cwd via symlink",
            json!({"command": attack("cwd5"), "cwd": "link"}),
            "symbolic link",
        ),
        (
            "unknown argument",
            json!({"command": attack("unk"), "sudo": true}),
            "unknown argument \"sudo\"",
        ),
        (
            "unknown argument 2",
            json!({"command": attack("unk2"), "allow_dangerous_roots": true}),
            "unknown argument",
        ),
        (
            "domain not allowed",
            json!({"command": attack("dom"), "allow_domains": ["evil.test"]}),
            "--allow-domain evil.test",
        ),
        (
            "wildcard wider",
            json!({"command": attack("dom2"), "allow_domains": ["*.test"]}),
            "--allow-domain",
        ),
        (
            "longer timeout",
            json!({"command": attack("t1"), "timeout_secs": 31}),
            "--timeout 31",
        ),
        (
            "zero timeout",
            json!({"command": attack("t2"), "timeout_secs": 0}),
            "at least 1",
        ),
        (
            "negative timeout",
            json!({"command": attack("t3"), "timeout_secs": -5}),
            "at least 1",
        ),
        (
            "huge timeout",
            json!({"command": attack("t4"), "timeout_secs": 1e300}),
            "at least 1",
        ),
        (
            "string timeout",
            json!({"command": attack("t5"), "timeout_secs": "5"}),
            "at least 1",
        ),
        (
            "wrong type",
            json!({"command": attack("ty"), "writable": "/"}),
            "array of strings",
        ),
        (
            "wrong type 2",
            json!({"command": attack("ty2"), "read_only": "no"}),
            "true or false",
        ),
        (
            "bad network",
            json!({"command": attack("bn"), "network": "host"}),
            "\"off\"",
        ),
        ("missing command", json!({"network": "off"}), "`command`"),
        (
            "command not a string",
            json!({"command": ["sh", "-c", attack("arr")]}),
            "`command` must be a string",
        ),
    ];
    for (why, args, names) in &cases {
        let r = c.run(args.clone());
        assert_refused(&r, why, names);
    }
    // A read-only server refuses any writable root, naming the option.
    let mut ro = Client::start(&w, &["--read-only"]);
    let r = ro.run(json!({"command": attack("ro"), "writable": [w.ws.to_str().unwrap()]}));
    assert_refused(&r, "writable on a read-only server", "--read-only");
    // And a server with the network off refuses every network request.
    for net in ["on", "allowlist"] {
        let r = ro.run(json!({"command": attack("ro-net"), "network": net}));
        assert_refused(
            &r,
            "network on an offline server",
            &format!("--network {net}"),
        );
    }
    let r = ro.run(json!({"command": attack("ro-dom"), "allow_domains": ["allowed.test"]}));
    assert_refused(&r, "domains on an offline server", "--network allowlist");
    drop(ro);

    // From the host: nothing was written, nothing connected.
    assert_same_tree(&before, &snap_tree(&w.outside));
    assert_eq!(
        listener.contacts(),
        0,
        "the loopback listener was contacted"
    );

    // Positive control: the same attack, run with the widened policy a human could give, works
    // (so the refusals above are what stopped it).
    let out = w.run().net_on().writable(&w.outside).sh(&attack("control"));
    out.assert_ran("DONE");
    assert!(
        w.out("marker-control").exists(),
        "positive control: no marker: {out:#?}"
    );
    assert!(
        listener.contacts() >= 1,
        "positive control: no connection: {out:#?}"
    );
}

#[test]
fn narrowing_requests_work_and_are_in_force() {
    let w = World::new("mcp-narrow");
    let extra = w.root.join("extra");
    fs::create_dir_all(extra.join("sub")).unwrap();
    fs::create_dir_all(w.ws("sub/deeper")).unwrap();
    let flags = ceiling(&extra);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c = Client::start(&w, &flags);
    let e = q(&extra);

    // A plain call: the ceiling is in force (workspace and extra writable).
    let r = c.run(
        json!({"command": format!("echo RAN; echo w > plain && echo e > {e}/plain && echo OK")}),
    );
    assert_eq!(r["structuredContent"]["exit_code"], 0, "{r:#}");
    assert!(stdout(&r).contains("OK"), "{r:#}");
    assert_eq!(fs::read_to_string(w.ws("plain")).unwrap(), "w\n");
    assert_eq!(fs::read_to_string(extra.join("plain")).unwrap(), "e\n");

    // read_only: nothing is writable, not even the workspace.
    let r = c.run(json!({"read_only": true, "command": format!(
        "echo RAN; echo x > ro 2>/dev/null && echo WROTE-ws; echo x > {e}/ro 2>/dev/null && echo WROTE-extra; echo DONE")}));
    assert!(
        stdout(&r).contains("RAN") && stdout(&r).contains("DONE"),
        "{r:#}"
    );
    assert!(!stdout(&r).contains("WROTE"), "{r:#}");
    assert!(!w.ws("ro").exists() && !extra.join("ro").exists());

    // A subset of the writable roots: none of the extras; then only a directory beneath one.
    let script = format!(
        "echo RAN; echo x > {e}/sub/n 2>/dev/null && echo WROTE-sub; echo x > {e}/n 2>/dev/null && echo WROTE-extra; echo x > ws-n && echo WROTE-ws"
    );
    let r = c.run(json!({"writable": [], "command": script}));
    let o = stdout(&r);
    assert!(
        o.contains("WROTE-ws") && !o.contains("WROTE-sub") && !o.contains("WROTE-extra"),
        "{r:#}"
    );
    assert!(!extra.join("sub/n").exists() && !extra.join("n").exists());
    let r = c.run(json!({"writable": [extra.join("sub").to_str().unwrap()], "command": script}));
    let o = stdout(&r);
    assert!(
        o.contains("WROTE-sub") && !o.contains("WROTE-extra"),
        "{r:#}"
    );
    assert!(extra.join("sub/n").exists() && !extra.join("n").exists());

    // network off: the proxy of the allowlist is gone. Control: under the ceiling it answers.
    let probe = "echo RAN; if bash -c 'exec 3<>/dev/tcp/127.0.0.1/3128' 2>/dev/null; then echo PROXY; else echo NOPROXY; fi";
    let r = c.run(json!({"command": probe}));
    assert!(
        stdout(&r).contains("PROXY") && !stdout(&r).contains("NOPROXY"),
        "control: {r:#}"
    );
    let r = c.run(json!({"network": "off", "command": probe}));
    assert!(stdout(&r).contains("NOPROXY"), "{r:#}");
    let layers = r["structuredContent"]["result"]["enforced"].to_string();
    assert!(!layers.contains("network-allowlist"), "{layers}");

    // A subset of the allowed domains: the dropped one is refused by the proxy (its denial is in
    // the report); under the ceiling it was not.
    let connect = "echo RAN; for h in allowed.test other.test; do curl -s -m 5 -o /dev/null -p -x http://127.0.0.1:3128 https://$h/; done; echo DONE";
    let refused_other = |r: &Value| {
        r["structuredContent"]["result"]["denials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| {
                d["target"]
                    .as_str()
                    .unwrap_or("")
                    .contains("other.test is not in network.allowed_domains")
            })
    };
    let refused_allowed = |r: &Value| {
        r["structuredContent"]["result"]["denials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| {
                d["target"]
                    .as_str()
                    .unwrap_or("")
                    .contains("allowed.test is not in network.allowed_domains")
            })
    };
    let r = c.run(json!({"command": connect}));
    assert!(stdout(&r).contains("DONE"), "{r:#}");
    assert!(!refused_other(&r) && !refused_allowed(&r), "control: {r:#}");
    let r = c.run(
        json!({"network": "allowlist", "allow_domains": ["allowed.test"], "command": connect}),
    );
    assert!(stdout(&r).contains("DONE"), "{r:#}");
    assert!(refused_other(&r) && !refused_allowed(&r), "{r:#}");

    // cwd beneath the workspace.
    let canon = fs::canonicalize(w.ws("sub/deeper")).unwrap();
    for cwd in ["sub/deeper", "./sub/deeper", canon.to_str().unwrap()] {
        let r = c.run(json!({"cwd": cwd, "command": "pwd"}));
        assert_eq!(stdout(&r).trim(), canon.to_str().unwrap(), "{cwd}: {r:#}");
    }

    // A shorter timeout kills at the shorter value (the ceiling's 30 s would let it finish).
    let r = c.run(json!({"command": "sleep 2; echo SLEPT"}));
    assert!(stdout(&r).contains("SLEPT"), "control: {r:#}");
    let start = Instant::now();
    let r = c.run(json!({"timeout_secs": 1, "command": "echo RAN; sleep 20; echo LATE"}));
    let took = start.elapsed();
    assert_eq!(r["structuredContent"]["exit_code"], 124, "{r:#}");
    assert!(
        stdout(&r).contains("RAN") && !stdout(&r).contains("LATE"),
        "{r:#}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // The `policy` tool shows the ceiling; a `workspace` equal to the server's is accepted.
    let r = c.request(
        "tools/call",
        json!({"name": "policy", "arguments": {"workspace": w.ws}}),
    );
    assert!(r["result"]["structuredContent"].is_object(), "{r:#}");
    assert!(
        text(&r["result"]).contains("allowlist (allowed.test, other.test)"),
        "{r:#}"
    );
    let r = c.request(
        "tools/call",
        json!({"name": "policy", "arguments": {"workspace": w.outside}}),
    );
    assert_refused(&r["result"], "policy for another workspace", "--workspace");
    let r = c.run(json!({"workspace": w.ws, "command": "echo SAME"}));
    assert!(stdout(&r).contains("SAME"), "{r:#}");
}

#[test]
fn hostile_json_rpc_is_answered_and_the_server_keeps_serving() {
    let w = World::new("mcp-hostile");
    let mut c = Client::start(&w, &[]);
    let code = |r: &Value| r["error"]["code"].as_i64();
    let cases: Vec<(&str, Vec<u8>, i64)> = vec![
        ("not JSON", b"this is not json".to_vec(), -32700),
        ("truncated", br#"{"jsonrpc":"2.0","id":1,"method":"#.to_vec(), -32700),
        ("invalid UTF-8", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}".to_vec(), -32700),
        ("batch", br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.to_vec(), -32600),
        ("empty batch", b"[]".to_vec(), -32600),
        ("scalar", b"42".to_vec(), -32600),
        ("null", b"null".to_vec(), -32600),
        ("object id", br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#.to_vec(), -32600),
        ("huge string id", format!(r#"{{"jsonrpc":"2.0","id":"{}","method":"ping"}}"#, "x".repeat(10_000)).into_bytes(), -32600),
        ("no jsonrpc", br#"{"id":1,"method":"ping"}"#.to_vec(), -32600),
        ("wrong jsonrpc", br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.to_vec(), -32600),
        ("no method", br#"{"jsonrpc":"2.0","id":1}"#.to_vec(), -32600),
        ("method not a string", br#"{"jsonrpc":"2.0","id":1,"method":7}"#.to_vec(), -32600),
        ("unknown method", br#"{"jsonrpc":"2.0","id":1,"method":"tools/escape"}"#.to_vec(), -32601),
        ("params not an object", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":5}"#.to_vec(), -32602),
        ("no tool name", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#.to_vec(), -32602),
        ("tool name not a string", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["run"]}}"#.to_vec(), -32602),
        ("unknown tool", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"shell","arguments":{}}}"#.to_vec(), -32602),
        ("arguments not an object", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run","arguments":"echo hi"}}"#.to_vec(), -32602),
        ("very long line", {
            let mut v = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":""#.to_vec();
            v.extend(std::iter::repeat_n(b'a', 5 << 20));
            v.extend_from_slice(br#""}}"#);
            v
        }, -32600),
    ];
    for (why, line, want) in &cases {
        let r = c.raw(line);
        assert_eq!(code(&r), Some(*want), "{why}: {r}");
        assert_eq!(r["jsonrpc"], "2.0", "{why}: {r}");
    }
    // Huge numeric ids are echoed, not a crash.
    let r = c.raw(br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#);
    assert!(r["result"].is_object() && r["id"].is_number(), "{r}");
    let r = c.raw(br#"{"jsonrpc":"2.0","id":1e300,"method":"ping"}"#);
    assert!(r["result"].is_object(), "{r}");
    // Notifications (even unknown ones) get no answer: the next answer is the next request's.
    c.send_raw(br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"run","arguments":{"command":"echo x > notified"}}}"#);
    c.send_raw(br#"{"jsonrpc":"2.0","method":"no/such/notification"}"#);
    c.send_raw(b"");
    let r = c.raw(br#"{"jsonrpc":"2.0","id":"after","method":"ping"}"#);
    assert_eq!(r["id"], "after", "{r}");
    assert!(!w.ws("notified").exists(), "a notification ran a command");
    // Still serving real calls.
    let r = c.run(json!({"command": "echo STILL-HERE"}));
    assert!(stdout(&r).contains("STILL-HERE"), "{r:#}");
}

#[test]
fn the_child_run_refuses_a_narrowing_that_widens_even_without_the_server() {
    // The server's checks are not the only ones: `stockade run --mcp-narrow` resolves the
    // policy again and refuses a plan that is not within it (exit 125, nothing runs).
    let w = World::new("mcp-child");
    let listener = TcpLog::open("127.0.0.1").expect("loopback listener");
    let ws = fs::canonicalize(&w.ws).unwrap();
    let outside = fs::canonicalize(&w.outside).unwrap();
    let script = format!(
        "echo RAN; echo x > {o}/marker; bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}'; echo DONE",
        o = q(&outside),
        port = listener.port
    );
    let base = json!({"read_only": false, "writable": [ws], "network": "off",
                      "allowed_domains": [], "timeout_secs": null, "cwd": ws});
    let mut cases = vec![];
    let mut n = base.clone();
    n["network"] = json!("on");
    cases.push(("network on", n));
    let mut n = base.clone();
    n["writable"] = json!([ws, outside]);
    cases.push(("writable outside", n));
    let mut n = base.clone();
    n["cwd"] = json!(outside);
    cases.push(("cwd outside", n));
    let mut n = base.clone();
    n["extra"] = json!(1);
    cases.push(("unknown field", n));
    for (why, n) in cases {
        let out = w.run().flag("--mcp-narrow").flag(n.to_string()).sh(&script);
        assert_eq!(out.code(), 125, "{why}: {out:#?}");
        out.assert_not("RAN");
    }
    assert!(!w.out("marker").exists());
    assert_eq!(listener.contacts(), 0);
    // Positive control: the base narrowing (within the default policy) runs.
    let out = w
        .run()
        .flag("--mcp-narrow")
        .flag(base.to_string())
        .sh("echo RAN");
    out.assert_ran("RAN");
    assert_eq!(out.code(), 0, "{out:#?}");
}
