//! The protected-name walk fails closed (issue 10 §4): a command that makes a directory above a
//! nested repository unlistable (`chmod 000`) must not get that repository's `.git` unprotected
//! in the next run. The walk is the launch's only when the write gate is off (`--write-gate
//! off`, or a kernel without it), so those tests turn it off; with the gate (the last tests) the
//! same attacks meet the per-call judge, which no listing can hide a repository from. Run as a throwaway NON-root user (root bypasses permissions, so the attack
//! only exists for an ordinary user); judged from the host.
//!
//! Creates a user: run this suite under the shared lock,
//! `flock /tmp/stockade-root.lock cargo test -p stockade --test walk_closed`.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A throwaway user with a home directory, removed (with the home) on drop.
struct TempUser {
    name: String,
    home: PathBuf,
    uid: u32,
    gid: u32,
}

impl TempUser {
    fn create() -> Result<TempUser, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot create a throwaway user".into());
        }
        if !have("useradd") || !have("setpriv") {
            return Err("useradd or setpriv missing".into());
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("stkwalk{}x{n}", std::process::id());
        let home = PathBuf::from("/home").join(&name);
        let st = Command::new("useradd")
            .args(["-m", "-d"])
            .arg(&home)
            .args(["-s", "/bin/sh", "-U", &name])
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("useradd {name} failed: {st}"));
        }
        let id = |flag: &str| -> Result<u32, String> {
            let o = Command::new("id")
                .args([flag, &name])
                .output()
                .map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .map_err(|e| format!("id {flag} {name}: {e}"))
        };
        let mut u = TempUser {
            name: name.clone(),
            home,
            uid: 0,
            gid: 0,
        };
        u.uid = id("-u")?;
        u.gid = id("-g")?;
        Ok(u)
    }

    /// `argv` as this user, with a clean environment (HOME, PATH, state dir).
    fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg("env")
            .arg("-i")
            .arg(format!("HOME={}", self.home.display()))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .arg(format!(
                "XDG_STATE_HOME={}",
                self.home.join(".local/state").display()
            ))
            .args(argv)
            .current_dir(&self.home);
        c
    }

    fn run(&self, argv: &[&str]) -> Out {
        run_guarded(self.command(argv), None, Duration::from_secs(60))
    }

    /// `stockade run --write-gate off --workspace ws -- sh -c script` as this user: the
    /// launch-time walk.
    fn stockade_sh(&self, ws: &Path, script: &str) -> Out {
        let ws = ws.display().to_string();
        self.run(&[
            bin(),
            "run",
            "--write-gate",
            "off",
            "--workspace",
            &ws,
            "--",
            "sh",
            "-c",
            script,
        ])
    }

    /// `stockade run --workspace ws -- sh -c script` as this user, with the write gate.
    fn stockade_gate_sh(&self, ws: &Path, script: &str) -> Out {
        let ws = ws.display().to_string();
        self.run(&[bin(), "run", "--workspace", &ws, "--", "sh", "-c", script])
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&self.home)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        let _ = Command::new("userdel")
            .args(["-r", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.home);
    }
}

fn mkdirs_as(u: &TempUser, p: &Path) {
    let out = u.run(&["mkdir", "-p", &p.display().to_string()]);
    assert_eq!(out.code(), 0, "{out:#?}");
}

#[test]
fn unlistable_parent_of_a_nested_repo_stops_the_next_run() {
    let u = match TempUser::create() {
        Ok(u) => u,
        Err(why) => return skip(why),
    };
    let ws = u.home.join("ws");
    let git = ws.join("a/b/repo/.git");
    mkdirs_as(&u, &git.join("hooks"));
    let hook = git.join("hooks/pre-commit");

    // The user's own permissions apply to them (no root bypass): otherwise the test proves nothing.
    let probe = u.run(&[
        "sh",
        "-c",
        "chmod 000 ws/a && ls ws/a; echo rc=$?; chmod 755 ws/a",
    ]);
    assert!(
        probe.stdout.contains("rc=2") || probe.stdout.contains("rc=1"),
        "{probe:#?}"
    );

    // Run 1: the walk sees the repository; the command hides it from the next walk.
    let out = u.stockade_sh(&ws, "echo RAN1; chmod 000 a && echo HIDDEN");
    out.assert_ran("RAN1");
    out.assert_ran("HIDDEN");
    assert_eq!(
        fs::metadata(ws.join("a")).unwrap().permissions().mode() & 0o777,
        0,
        "run 1 left a unlistable on the host"
    );

    // Run 2: the walk cannot list `a`; it must refuse to run, naming the path.
    let attack = "echo RAN2; chmod 755 a; echo evil > a/b/repo/.git/hooks/pre-commit && echo WROTE";
    let out = u.stockade_sh(&ws, attack);
    assert_eq!(out.code(), 125, "{out:#?}");
    out.assert_not("RAN2");
    out.assert_not("WROTE");
    let a = ws.join("a");
    assert!(
        out.stderr.contains(&a.display().to_string()) && out.stderr.contains("walk_exempt"),
        "the refusal must name the path and the way out: {out:#?}"
    );
    assert!(!hook.exists(), "the hook was written");
    assert_eq!(
        fs::metadata(&a).unwrap().permissions().mode() & 0o777,
        0,
        "nothing ran: a is still unlistable"
    );

    // A workspace config cannot exempt the directory.
    mkdirs_as(&u, &ws.join(".stockade"));
    let cfg = ws.join(".stockade/config.toml");
    fs::write(&cfg, "[filesystem]\nwalk_exempt = [\"a\"]\n").unwrap();
    let out = u.stockade_sh(&ws, attack);
    assert_eq!(out.code(), 125, "{out:#?}");
    out.assert_not("RAN2");
    assert!(
        out.stderr.contains("filesystem.walk_exempt") && out.stderr.contains("exempts"),
        "refused as a widening by the untrusted workspace config: {out:#?}"
    );
    assert!(!hook.exists(), "the hook was written");
    fs::remove_file(&cfg).unwrap();

    // The user's own config can; `policy show` shows the exemption.
    let ucfg = u.home.join(".config/stockade");
    mkdirs_as(&u, &ucfg);
    fs::write(
        ucfg.join("config.toml"),
        "[filesystem]\nwalk_exempt = [\"~/ws/a\"]\n",
    )
    .unwrap();
    let wss = ws.display().to_string();
    let show = u.run(&[bin(), "policy", "show", "--workspace", &wss]);
    assert_eq!(show.code(), 0, "{show:#?}");
    assert!(
        show.stdout.contains("walk_exempt") && show.stdout.contains("~/ws/a"),
        "{show:#?}"
    );
    let out = u.stockade_sh(&ws, "echo RAN3");
    assert_eq!(out.code(), 0, "{out:#?}");
    out.assert_ran("RAN3");
    fs::remove_file(ucfg.join("config.toml")).unwrap();

    // Positive control: without Stockade the same command writes the hook.
    let ctl = u.run(&["sh", "-c", &format!("cd {} && {attack}", q(&ws))]);
    ctl.assert_ran("WROTE");
    assert!(
        hook.exists(),
        "control: the hook could not be written unsandboxed"
    );
}

#[test]
fn unreadable_gitfile_stops_the_run() {
    let u = match TempUser::create() {
        Ok(u) => u,
        Err(why) => return skip(why),
    };
    let ws = u.home.join("ws");
    mkdirs_as(&u, &ws.join("sub"));
    // The gitdir lives in the writable workspace under a name the walk does not know: only the
    // `.git` file's pointer tells the walk to protect it.
    mkdirs_as(&u, &ws.join("gd/hooks"));
    let gitfile = ws.join("sub/.git");
    let gitdir = ws.join("gd");
    let w = u.run(&[
        "sh",
        "-c",
        &format!("echo 'gitdir: {}' > {}", gitdir.display(), q(&gitfile)),
    ]);
    assert_eq!(w.code(), 0, "{w:#?}");
    // Run 1 sees the pointer and protects the gitdir: writing its hooks fails.
    let hook = gitdir.join("hooks/pre-commit");
    let out = u.stockade_sh(
        &ws,
        &format!("echo RAN1; echo evil > {} || echo REFUSED", q(&hook)),
    );
    out.assert_ran("REFUSED");
    assert!(!hook.exists());
    // The .git file becomes unreadable (as a command could have made it before it was ever
    // protected, or a tool did): the next walk cannot find the gitdir.
    let c = u.run(&["chmod", "000", &gitfile.display().to_string()]);
    assert_eq!(c.code(), 0, "{c:#?}");
    let attack = format!("echo RAN2; echo evil > {} && echo WROTE", q(&hook));
    let out = u.stockade_sh(&ws, &attack);
    assert_eq!(out.code(), 125, "{out:#?}");
    out.assert_not("RAN2");
    assert!(
        out.stderr.contains(&gitfile.display().to_string()),
        "{out:#?}"
    );
    assert!(!hook.exists());
    // Control: without Stockade the write works.
    let ctl = u.run(&["sh", "-c", &attack]);
    ctl.assert_ran("WROTE");
    assert!(hook.exists());
}

/// Whether this kernel has the write gate (`stockade doctor`).
fn have_gate() -> bool {
    let o = Command::new(bin())
        .args(["doctor", "--json"])
        .output()
        .expect("doctor runs");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["features"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| f["name"] == "write-gate" && f["available"] == true)
}

#[test]
fn with_the_write_gate_an_unlistable_parent_hides_no_repository() {
    if !have_gate() {
        return skip("this kernel has no write gate");
    }
    let u = match TempUser::create() {
        Ok(u) => u,
        Err(why) => return skip(why),
    };
    let ws = u.home.join("ws");
    let git = ws.join("a/b/repo/.git");
    mkdirs_as(&u, &git.join("hooks"));
    for f in ["HEAD", "config"] {
        let w = u.run(&["sh", "-c", &format!("echo x > {}", q(&git.join(f)))]);
        assert_eq!(w.code(), 0, "{w:#?}");
    }
    let hook = git.join("hooks/pre-commit");
    let out = u.stockade_gate_sh(&ws, "echo RAN1; chmod 000 a && echo HIDDEN");
    out.assert_ran("HIDDEN");
    // Run 2: nothing is walked, so nothing refuses to start; the write itself is refused.
    let attack = "echo RAN2; chmod 755 a; echo evil > a/b/repo/.git/hooks/pre-commit && echo WROTE";
    let out = u.stockade_gate_sh(&ws, attack);
    out.assert_ran("RAN2");
    out.assert_not("WROTE");
    assert!(!hook.exists(), "the hook was written: {out:#?}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("stockade: refused: ")),
        "{out:#?}"
    );
    // Positive control: without Stockade the same command writes the hook.
    let ctl = u.run(&["sh", "-c", &format!("cd {} && {attack}", q(&ws))]);
    ctl.assert_ran("WROTE");
    assert!(hook.exists(), "control: the hook could not be written");
}

#[test]
fn with_the_write_gate_a_gitdir_behind_an_unreadable_gitfile_stays_protected() {
    if !have_gate() {
        return skip("this kernel has no write gate");
    }
    let u = match TempUser::create() {
        Ok(u) => u,
        Err(why) => return skip(why),
    };
    let ws = u.home.join("ws");
    mkdirs_as(&u, &ws);
    // `sub/.git` is a file naming the gitdir `gd` (a name the gate knows nothing of).
    let init = u.run(&[
        "git",
        "-C",
        &ws.display().to_string(),
        "init",
        "-q",
        "--separate-git-dir",
        "gd",
        "sub",
    ]);
    assert_eq!(init.code(), 0, "{init:#?}");
    let gitfile = ws.join("sub/.git");
    let c = u.run(&["chmod", "000", &gitfile.display().to_string()]);
    assert_eq!(c.code(), 0, "{c:#?}");
    let hook = ws.join("gd/hooks/pre-commit");
    let attack = format!("echo RAN; echo evil > {} && echo WROTE", q(&hook));
    let out = u.stockade_gate_sh(&ws, &attack);
    out.assert_ran("RAN");
    out.assert_not("WROTE");
    assert!(!hook.exists(), "the hook was written: {out:#?}");
    let ctl = u.run(&["sh", "-c", &attack]);
    ctl.assert_ran("WROTE");
    assert!(hook.exists());
}
