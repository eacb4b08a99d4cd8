//! System V IPC in the unelevated tier: the sandbox has its own IPC namespace, so objects it
//! creates never appear on the host and the host's objects are invisible inside. Judged from the
//! host (`/proc/sysvipc/*` of the test process, i.e. the host's IPC namespace), each against a
//! positive control: the same `ipcmk` run unsandboxed is visible on the host.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::process::Command;

/// The keys listed in `/proc/sysvipc/<kind>` of the calling process's IPC namespace.
fn host_keys(kind: &str) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/sysvipc/{kind}"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// `ipcmk ARGS` on the host; the id it printed.
fn host_ipcmk(args: &[&str]) -> String {
    let o = Command::new("ipcmk").args(args).output().expect("ipcmk");
    assert!(o.status.success(), "ipcmk {args:?}: {o:?}");
    let s = String::from_utf8_lossy(&o.stdout);
    s.split(':')
        .nth(1)
        .expect("ipcmk prints the id")
        .trim()
        .to_string()
}

#[test]
fn sysv_ipc_created_inside_never_reaches_the_host_and_the_hosts_is_invisible() {
    if Command::new("ipcmk").arg("--version").output().is_err() {
        panic!("ipcmk (util-linux) is needed for this test: apt-get install -y util-linux");
    }
    // Positive control: a segment made unsandboxed is on the host, with its key.
    let before_shm = host_keys("shm");
    let host_id = host_ipcmk(&["-M", "4096", "-p", "0666"]);
    let host_key = host_keys("shm")
        .into_iter()
        .find(|k| !before_shm.contains(k))
        .expect("an unsandboxed segment is visible on the host (control)");

    let w = World::new("ipc");
    let out = w.run().sh(
        "ipcmk -M 4096 -p 0666 >/dev/null && ipcmk -Q -p 0666 >/dev/null && \
         ipcmk -S 1 -p 0666 >/dev/null && echo CREATED; \
         for k in shm msg sem; do awk -v k=$k 'NR>1{print \"KEY\", k, $1}' /proc/sysvipc/$k; done",
    );
    let _ = Command::new("ipcrm").args(["-m", &host_id]).status();
    out.assert_ran("CREATED");
    let inside: Vec<(String, String)> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == "KEY").then(|| (f[1].to_string(), f[2].to_string()))
        })
        .collect();
    for kind in ["shm", "msg", "sem"] {
        assert!(
            inside.iter().any(|(k, _)| k == kind),
            "the sandbox lists the {kind} object it created (control): {out:#?}"
        );
    }
    assert!(
        !inside.iter().any(|(k, key)| k == "shm" && *key == host_key),
        "the host's segment {host_key} is visible inside: {out:#?}"
    );
    for (kind, key) in &inside {
        assert!(
            !host_keys(kind).contains(key),
            "{kind} object with key {key} created inside is on the host"
        );
    }
}
