//! `--report FILE` is opened before the command starts, from outside everything the command can
//! change, without following symlinks; nothing the command does can redirect it. Strings that
//! came from the command are escaped on stderr and are data in the JSON. Judged from the host.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::symlink;

/// The host file the attacks try to overwrite through the report.
fn victim(w: &World) -> std::path::PathBuf {
    let v = w.out("victim-config");
    write(&v, "[core]\n\tpager = less\n");
    v
}

#[test]
fn a_report_inside_a_writable_root_is_refused_and_nothing_runs() {
    let w = World::new("report-inside");
    let extra = w.root.join("extra");
    fs::create_dir_all(extra.join("d")).unwrap();
    fs::create_dir_all(w.ws("sub")).unwrap();
    let ws_before = snap_tree(&w.ws);
    let extra_before = snap_tree(&extra);
    let cases: Vec<(&str, std::path::PathBuf)> = vec![
        ("workspace", w.ws("report.json")),
        ("workspace subdir", w.ws("sub/report.json")),
        ("relative", "report.json".into()),
        ("via ..", w.ws("sub/../report.json")),
        ("extra root", extra.join("d/report.json")),
    ];
    for (why, path) in cases {
        let out = w
            .run()
            .writable(&extra)
            .flag("--report")
            .flag(&path)
            .sh("echo RAN > ran-marker; echo RAN");
        assert_eq!(out.code(), 125, "{why}: {out:#?}");
        out.assert_not("RAN");
        assert!(
            out.stderr.contains("outside every writable root"),
            "{why}: the refusal does not say what to do: {out:#?}"
        );
    }
    assert_same_tree(&ws_before, &snap_tree(&w.ws));
    assert_same_tree(&extra_before, &snap_tree(&extra));
}

#[test]
fn the_command_cannot_redirect_the_report_to_a_host_file() {
    let w = World::new("report-swap");
    let victim = victim(&w);
    let reports = w.root.join("reports");
    fs::create_dir_all(&reports).unwrap();
    let report = reports.join("report.json");
    let before = snap(&victim);
    // The old attack: replace the report path with a link to a host file, so stockade writes the
    // report (with a target the command chose) through it. Also try the directory above it.
    let script = format!(
        "echo RAN; rm -f {r} 2>/dev/null; ln -sf {v} {r} 2>/dev/null && echo SWAPPED; \
         mv {d} {d}.old 2>/dev/null && ln -s {o} {d} 2>/dev/null && echo SWAPPED-DIR; \
         ls /proc/self/fd/ >/dev/null; echo DONE",
        r = q(&report),
        v = q(&victim),
        d = q(&reports),
        o = q(&w.outside),
    );
    // First the old attack exactly: the report path is inside the workspace, where the command
    // can replace it. Refused before anything runs; the host file is untouched.
    let in_ws = w.ws("report.json");
    let old_attack = format!(
        "echo RAN; rm -f {r}; ln -s {v} {r} && echo SWAPPED; \
         python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\"/run/x\\n[core]\\n\\tpager = evil\")' 2>/dev/null; echo DONE",
        r = q(&in_ws),
        v = q(&victim),
    );
    let out = w.run().flag("--report").flag(&in_ws).sh(&old_attack);
    assert_eq!(out.code(), 125, "{out:#?}");
    out.assert_not("RAN");
    assert_eq!(snap(&victim), before, "the host file changed");
    let out = w.run().flag("--report").flag(&report).sh(&script);
    out.assert_ran("DONE");
    out.assert_not("SWAPPED");
    assert_eq!(snap(&victim), before, "the host file changed");
    // Positive control: the report is written where it should be, as JSON.
    let r: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["exit_code"], 0, "{r:#}");
    assert!(fs::symlink_metadata(&report).unwrap().is_file());

    // Host control: the same swap, unsandboxed, does redirect a write to the host file (so the
    // attack is real and the sandbox plus the early open is what stopped it).
    let copy = w.root.join("control-victim");
    fs::copy(&victim, &copy).unwrap();
    let ctl = w.root.join("control-report.json");
    write(&ctl, "{}\n");
    host(
        &w.root,
        &[
            "sh",
            "-c",
            &format!("rm -f {c}; ln -s {v} {c}", c = q(&ctl), v = q(&copy)),
        ],
    );
    fs::write(&ctl, "overwritten\n").unwrap();
    assert_eq!(fs::read_to_string(&copy).unwrap(), "overwritten\n");
}

#[test]
fn a_planted_symlink_on_the_report_path_is_refused() {
    let w = World::new("report-link");
    let victim = victim(&w);
    let before = snap(&victim);
    let dir = w.root.join("reports");
    fs::create_dir_all(&dir).unwrap();
    // The final component is a symlink to a host file.
    symlink(&victim, dir.join("report.json")).unwrap();
    let out = w
        .run()
        .flag("--report")
        .flag(dir.join("report.json"))
        .sh("echo RAN");
    assert_eq!(out.code(), 125, "{out:#?}");
    out.assert_not("RAN");
    assert!(
        out.stderr.contains("without following symlinks"),
        "{out:#?}"
    );
    // A directory on the way is a symlink inside the workspace (a previous command could have
    // planted it) pointing outside.
    symlink(&w.outside, w.ws("planted")).unwrap();
    let out = w
        .run()
        .flag("--report")
        .flag(w.ws("planted/victim-config"))
        .sh("echo RAN");
    assert_eq!(out.code(), 125, "{out:#?}");
    out.assert_not("RAN");
    assert!(
        out.stderr
            .contains("symbolic link inside the writable root"),
        "{out:#?}"
    );
    assert_eq!(snap(&victim), before, "the host file changed");
    // A report path outside, reached through the workspace's parent (`ws/..`), is fine.
    let out = w
        .run()
        .flag("--report")
        .flag("../report-up.json")
        .sh("echo RAN");
    out.assert_ran("RAN");
    assert!(w.root.join("report-up.json").is_file(), "{out:#?}");
}

#[test]
fn control_sequences_from_the_command_are_escaped_on_stderr_and_data_in_json() {
    let w = World::new("report-escape");
    // A socket outside the writable roots whose name carries terminal control sequences: the
    // command's connect is refused and reported with that name.
    let name = "\u{1b}]0;x\u{7}\u{1b}[2J\u{9b}1m\u{202e}\r\nstockade: ok";
    let sock_path = w.outside.join(name);
    let _listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let report = w.root.join("report.json");
    let code = "import socket, sys\nprint('RAN')\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\n    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e.errno)\n";
    let out = w
        .run()
        .flag("-v")
        .flag("--json")
        .flag("--report")
        .flag(&report)
        .argv(&[
            std::ffi::OsStr::new("/usr/bin/python3"),
            "-c".as_ref(),
            code.as_ref(),
            sock_path.as_os_str(),
        ]);
    out.assert_ran("RAN");
    out.assert_not("CONNECTED");
    // stderr: the denial is shown, escaped; no control character at all except line ends.
    assert!(
        out.stderr.contains("stockade: denied connect ")
            && out.stderr.contains("\\u{1b}]0;x\\u{7}"),
        "{out:#?}"
    );
    for c in out.stderr.chars() {
        assert!(
            c == '\n' || !(c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "raw control character {:#x} on stderr: {:?}",
            c as u32,
            out.stderr
        );
    }
    assert!(
        !out.stderr.lines().any(|l| l == "stockade: ok"),
        "the command forged a stockade line: {out:#?}"
    );
    // JSON (the report file, and the `--json` line on stderr): the same string, as data (the
    // internal report pipe turns a newline into a space).
    let want = sock_path.to_str().unwrap().replace('\n', " ");
    let line = out
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap();
    let j: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(
        j["denials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["target"] == want.as_str()),
        "{j:#}"
    );
    let r: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let denials = r["denials"].as_array().unwrap();
    assert!(
        denials
            .iter()
            .any(|d| d["kind"] == "connect" && d["target"] == want.as_str()),
        "{r:#}"
    );
    // Host control: the socket was reachable from the host, so the refusal was the sandbox's.
    assert!(std::os::unix::net::UnixStream::connect(&sock_path).is_ok());
}

/// `stockade policy show | head`: the reader went away before stockade wrote. Stockade ends
/// quietly with status 0 instead of panicking (Rust ignores SIGPIPE, so a `println!` into a
/// closed pipe panics). The pipe's read end is closed before stockade starts, so every write
/// meets `EPIPE`; control: the same command into an open pipe prints the policy.
#[test]
fn policy_show_into_a_closed_pipe_exits_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let w = World::new("policy-epipe");
    for json in [false, true] {
        let mut fds = [0; 2];
        // SAFETY: pipe() fills two descriptors this test then owns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both came from pipe() just above and are owned once each.
        let (r, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(r);
        let mut c = std::process::Command::new(bin());
        c.args(["policy", "show", "--plan", "--workspace"])
            .arg(&w.ws);
        if json {
            c.arg("--json");
        }
        let o = c
            .env("HOME", &w.home)
            .env("XDG_STATE_HOME", &w.state)
            .stdout(std::process::Stdio::from(wr))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "json={json}: {:?} {err}", o.status);
        assert!(!err.contains("panicked"), "json={json}: {err}");
        let ok = w.stockade(&["policy", "show", "--plan"]);
        assert!(ok.stdout.contains("protected_names"), "{ok:#?}");
    }
}
