//! Exercises the real Win32 calls of the Windows backend and reports each as
//! `ok NAME: detail`, `FAIL NAME: why` or `unsupported-by-wine NAME: why`, then
//! `N passed, N failed, N skipped`. Exits 1 if anything failed.
//!
//! Built for `x86_64-pc-windows-gnu` and run under Wine by `.ci/windows-test.sh`; it runs the
//! same way on a real Windows host, where the enforcement probes (writes outside the writable
//! root, into `.git`) are expected to be denied instead of reported as unsupported.

#[cfg(not(windows))]
fn main() {
    eprintln!("stockade-wine-selftest only does something on Windows (or under Wine); build it for x86_64-pc-windows-gnu");
}

#[cfg(windows)]
fn main() {
    std::process::exit(selftest::main());
}

#[cfg(windows)]
mod selftest {
    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::windows::io::{AsHandle, AsRawHandle, FromRawHandle, OwnedHandle};
    use std::path::{Path, PathBuf};
    use std::time::Duration;
    use stockade_windows::ace::{missing_explicit, AceKind, Inherit};
    use stockade_windows::elevated::runner_pipe_sddl;
    use stockade_windows::env::{command_line, env_block, sandbox_env};
    use stockade_windows::input::{Kind, Network, PlannedWinPath, WinPlanInput};
    use stockade_windows::path::WinPath;
    use stockade_windows::sid::Sid;
    use stockade_windows::state::CapabilityStore;
    use stockade_windows::unelevated::{self, UnelevatedOptions};
    use stockade_windows::win::{
        acl, job::Job, pipe, process, random, running_under_wine, sid as wsid, token,
    };

    struct Report {
        passed: u32,
        failed: u32,
        skipped: u32,
        wine: bool,
    }

    impl Report {
        fn ok(&mut self, name: &str, detail: impl std::fmt::Display) {
            println!("ok {name}: {detail}");
            self.passed += 1;
        }
        fn fail(&mut self, name: &str, why: impl std::fmt::Display) {
            println!("FAIL {name}: {why}");
            self.failed += 1;
        }
        fn unsupported(&mut self, name: &str, why: impl std::fmt::Display) {
            println!("unsupported-by-wine {name}: {why}");
            self.skipped += 1;
        }
        fn note(&self, name: &str, what: impl std::fmt::Display) {
            println!("note {name}: {what}");
        }
        /// An enforcement probe: `denied` is what real Windows must do. Under Wine an allowed
        /// access is reported as unsupported (Wine does not enforce tokens or ACLs), never as ok.
        fn expect_denied(&mut self, name: &str, outcome: &str, held: bool) {
            match (outcome.starts_with("denied"), self.wine) {
                (true, _) if held => self.ok(name, format!("observed {outcome} (the child held the restricted token)")),
                (true, true) => self.unsupported(name, format!("observed {outcome}, but the child's restricted token could not be verified under Wine")),
                (true, false) => self.fail(name, format!("observed {outcome}, but the child did not report the restricted token, so the denial says nothing about the sandbox")),
                (false, true) => self.unsupported(
                    name,
                    format!(
                        "Wine does not enforce restricted tokens/DACLs; the access was {outcome}"
                    ),
                ),
                (false, false) => self.fail(
                    name,
                    format!("expected the access to be denied, it was {outcome}"),
                ),
            }
        }
    }

    pub fn main() -> i32 {
        let args: Vec<String> = std::env::args().collect();
        if let Some(code) = stockade_windows::win::runner::maybe_run_as_runner() {
            return code;
        }
        match args.get(1).map(String::as_str) {
            Some("--child-report") => child_report(&args[2..]),
            Some("--child-grandchild") => child_grandchild(),
            Some("--child-harden") => child_harden(),
            Some("--apply-dump") => {
                let p = WinPath::parse(&args[2]).expect("path");
                let e = stockade_windows::ace::PathAces {
                    path: p.clone(),
                    kind: Kind::Dir,
                    aces: vec![stockade_windows::ace::Ace::allow(
                        Sid::parse(&args[3]).expect("sid"),
                        stockade_windows::ace::mask::SANDBOX_MODIFY,
                        Inherit::TREE,
                    )],
                    reason: String::new(),
                };
                println!("apply: {:?}", acl::apply(&e));
                println!("read: {:?}", acl::read_path(&p));
                0
            }
            Some("--dump-dacl") => {
                for a in &args[2..] {
                    match WinPath::parse(a)
                        .map_err(|e| e.to_string())
                        .and_then(|p| acl::read_path(&p).map_err(|e| e.to_string()))
                    {
                        Ok(d) => println!(
                            "{a}: protected={} other={:?}\n  {:?}",
                            d.protected, d.other, d.aces
                        ),
                        Err(e) => println!("{a}: {e}"),
                    }
                }
                0
            }
            Some("--sleep") => {
                let secs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
                std::thread::sleep(Duration::from_secs(secs));
                0
            }
            _ => run_all(),
        }
    }

    fn outcome<T>(r: std::io::Result<T>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                format!("denied:{}", e.raw_os_error().unwrap_or(0))
            }
            Err(e) => format!("error:{e}"),
        }
    }

    /// Runs inside the restricted token: reports what it is and what it can do.
    fn child_report(args: &[String]) -> i32 {
        let (root, outside) = match (args.first(), args.get(1)) {
            (Some(r), Some(o)) => (PathBuf::from(r), PathBuf::from(o)),
            _ => return 2,
        };
        let tok = match token::own_token() {
            Ok(t) => t,
            Err(e) => {
                println!("error own-token {e}");
                return 3;
            }
        };
        match wsid::token_restricted_sids(tok.as_handle()) {
            Ok(sids) => {
                for s in sids {
                    println!("restricted-sid {s}");
                }
            }
            Err(e) => println!("error restricted-sids {e}"),
        }
        // SAFETY: `tok` is an open token handle with TOKEN_QUERY.
        let restricted =
            unsafe { windows_sys::Win32::Security::IsTokenRestricted(tok.as_raw_handle()) } != 0;
        println!("is-restricted {restricted}");
        println!("env-temp {}", std::env::var("TEMP").unwrap_or_default());
        println!(
            "write-root {}",
            outcome(std::fs::write(root.join("child-probe.txt"), b"x"))
        );
        println!(
            "write-outside {}",
            outcome(std::fs::write(outside.join("child-probe.txt"), b"x"))
        );
        println!(
            "write-git {}",
            outcome(std::fs::write(root.join(".git").join("child-probe"), b"x"))
        );
        println!(
            "write-git-file {}",
            outcome(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(root.join("sub").join(".git"))
            )
        );
        println!(
            "delete-outside {}",
            outcome(std::fs::remove_file(outside.join("victim.txt")))
        );
        adversarial_probes(&root);
        if let Some(pid) = args.get(2).and_then(|p| p.parse::<u32>().ok()) {
            use windows_sys::Win32::System::Threading::{
                OpenProcess, PROCESS_VM_OPERATION, PROCESS_VM_WRITE,
            };
            // SAFETY: plain call; a returned handle is owned below and closed on drop.
            let h = unsafe { OpenProcess(PROCESS_VM_WRITE | PROCESS_VM_OPERATION, 0, pid) };
            let r = if h.is_null() {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: `h` is a fresh process handle owned by nobody else.
                drop(unsafe { OwnedHandle::from_raw_handle(h) });
                Ok(())
            };
            println!("open-parent-vm-write {}", outcome(r));
        }
        println!(
            "nul {}",
            outcome(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("NUL")
                    .and_then(|mut f| f.write_all(b"x"))
            )
        );
        let own_pipe = pipe::anonymous()
            .map_err(|e| e.to_string())
            .and_then(|(r, w)| {
                let mut wf = std::fs::File::from(w);
                wf.write_all(b"p").map_err(|e| e.to_string())?;
                drop(wf);
                let mut s = String::new();
                std::fs::File::from(r)
                    .read_to_string(&mut s)
                    .map_err(|e| e.to_string())?;
                if s == "p" {
                    Ok(())
                } else {
                    Err(format!("read back {s:?}"))
                }
            });
        println!(
            "own-pipe {}",
            match own_pipe {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error:{e}"),
            }
        );
        let _ = std::io::stdout().flush();
        0
    }

    /// Attacks on the plan's metadata guards, each undone at once if it worked (so that a real
    /// host is left as it was): rename `.git` away, delete the `sub\.git` file, rename `sub`
    /// away, re-ACL `.git`,
    /// create a directory in the drive root, set a value under `HKCU\...\Run`, delete a file in
    /// `.git`.
    fn adversarial_probes(root: &Path) {
        let git = root.join(".git");
        let moved = root.join(".git-moved-by-probe");
        let r = std::fs::rename(&git, &moved);
        if r.is_ok() {
            let _ = std::fs::rename(&moved, &git);
        }
        println!("rename-git {}", outcome(r));
        let gf = root.join("sub").join(".git");
        let content = std::fs::read(&gf).unwrap_or_default();
        let r = std::fs::remove_file(&gf);
        if r.is_ok() {
            let _ = std::fs::write(&gf, &content);
        }
        println!("delete-git-file {}", outcome(r));
        // Rename `sub` (the directory holding the protected `sub\.git`) away: the ancestor guard.
        let sub = root.join("sub");
        let sub_moved = root.join("sub-moved-by-probe");
        let r = std::fs::rename(&sub, &sub_moved);
        if r.is_ok() {
            let _ = std::fs::rename(&sub_moved, &sub);
        }
        println!("rename-sub {}", outcome(r));
        let re_acl = WinPath::parse(&git.to_string_lossy())
            .map_err(|e| e.to_string())
            .and_then(|p| {
                let everyone = stockade_windows::ace::Ace::allow(
                    Sid::everyone(),
                    stockade_windows::ace::mask::FILE_ALL_ACCESS,
                    Inherit::TREE,
                );
                let before = acl::read_path(&p).map_err(|e| e.to_string())?;
                acl::write_explicit(&p, &[everyone], false).map_err(|e| e.to_string())?;
                // It worked: put the DACL back as it was.
                acl::write_explicit(&p, &before.explicit(), before.protected)
                    .map_err(|e| format!("restoring: {e}"))
            });
        println!(
            "re-acl-git {}",
            match re_acl {
                Ok(()) => "ok".to_string(),
                Err(e) if e.contains("code 0x5)") => "denied:5".to_string(),
                Err(e) => format!("error:{e}"),
            }
        );
        // Re-ACL the workspace root (the parent of `.git`, locked for this object only): rewrite
        // its own DACL unchanged, which needs WRITE_DAC all the same.
        let re_acl_root = WinPath::parse(&root.to_string_lossy())
            .map_err(|e| e.to_string())
            .and_then(|p| {
                let before = acl::read_path(&p).map_err(|e| e.to_string())?;
                acl::write_explicit(&p, &before.explicit(), before.protected)
                    .map_err(|e| e.to_string())
            });
        println!(
            "re-acl-root {}",
            match re_acl_root {
                Ok(()) => "ok".to_string(),
                Err(e) if e.contains("code 0x5)") => "denied:5".to_string(),
                Err(e) => format!("error:{e}"),
            }
        );
        let drive = std::env::var("SystemDrive").unwrap_or_else(|_| "C:".into());
        let d = PathBuf::from(format!("{drive}\\stockade-probe-{}", std::process::id()));
        let r = std::fs::create_dir(&d);
        if r.is_ok() {
            let _ = std::fs::remove_dir(&d);
        }
        println!("mkdir-drive-root {}", outcome(r));
        println!("hkcu-run {}", hkcu_run_probe());
        let victim = git.join("probe-victim");
        let _ = std::fs::write(&victim, b"v");
        let r = std::fs::remove_file(&victim);
        println!("delete-in-git {}", outcome(r));
        // Protected names that did not exist: a placeholder `.claude`, no new entries in `.vscode`.
        for (key, rel) in [
            ("create-claude-settings", [".claude", "settings.json"]),
            ("create-vscode-tasks", [".vscode", "tasks.json"]),
        ] {
            let f = root.join(rel[0]).join(rel[1]);
            let r = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&f);
            if r.is_ok() {
                let _ = std::fs::remove_file(&f);
            }
            println!("{key} {}", outcome(r));
        }
    }

    /// Tries to set (and at once deletes) a value under `HKCU\Software\Microsoft\Windows\
    /// CurrentVersion\Run`.
    fn hkcu_run_probe() -> String {
        use windows_sys::Win32::System::Registry::{
            RegCloseKey, RegDeleteValueW, RegOpenKeyExW, RegSetValueExW, HKEY, HKEY_CURRENT_USER,
            KEY_SET_VALUE, REG_SZ,
        };
        let sub = stockade_windows::win::wide(r"Software\Microsoft\Windows\CurrentVersion\Run");
        let mut k: HKEY = std::ptr::null_mut();
        // SAFETY: `sub` is NUL-terminated; `k` is a valid out pointer.
        let rc =
            unsafe { RegOpenKeyExW(HKEY_CURRENT_USER, sub.as_ptr(), 0, KEY_SET_VALUE, &mut k) };
        if rc == 5 {
            return "denied:5".into();
        }
        if rc != 0 {
            return format!("error:RegOpenKeyExW {rc}");
        }
        let name = stockade_windows::win::wide("StockadeSelftestProbe");
        let data = stockade_windows::win::wide("probe");
        // SAFETY: `k` is an open key; `name`/`data` are NUL-terminated UTF-16 buffers.
        let rc = unsafe {
            RegSetValueExW(
                k,
                name.as_ptr(),
                0,
                REG_SZ,
                data.as_ptr().cast(),
                (data.len() * 2) as u32,
            )
        };
        if rc == 0 {
            // SAFETY: `k` is open; removes the value just written.
            unsafe { RegDeleteValueW(k, name.as_ptr()) };
        }
        // SAFETY: `k` is open and closed once.
        unsafe { RegCloseKey(k) };
        match rc {
            0 => "ok".into(),
            5 => "denied:5".into(),
            e => format!("error:RegSetValueExW {e}"),
        }
    }

    /// Starts a long-sleeping grandchild (in the same job), reports its pid, and exits.
    /// The runner's self-hardening in a throw-away process: set, then read the DACLs back.
    fn child_harden() -> i32 {
        use std::os::windows::io::BorrowedHandle;
        use stockade_windows::elevated::{runner_self_dacl, RunnerObject};
        if let Err(e) = stockade_windows::win::runner::harden_self() {
            println!("harden error {e}");
            return 1;
        }
        // SAFETY: current-process / current-thread pseudo-handles, valid and never closed.
        let (p, t) = unsafe {
            (
                BorrowedHandle::borrow_raw(
                    windows_sys::Win32::System::Threading::GetCurrentProcess(),
                ),
                BorrowedHandle::borrow_raw(
                    windows_sys::Win32::System::Threading::GetCurrentThread(),
                ),
            )
        };
        for (name, h, o) in [
            ("process", p, RunnerObject::Process),
            ("thread", t, RunnerObject::Thread),
        ] {
            match acl::read_handle(h, name) {
                // Processes and threads have no children to inherit from; the protected bit
                // is not compared (Wine does not keep it on kernel objects).
                Ok(d) if d.aces == runner_self_dacl(o) => {
                    println!("harden {name} ok")
                }
                Ok(d) => println!(
                    "harden {name} differs {:?} protected={}",
                    d.aces, d.protected
                ),
                Err(e) => println!("harden {name} unreadable {e}"),
            }
        }
        0
    }

    fn child_grandchild() -> i32 {
        let exe = std::env::current_exe().unwrap_or_default();
        match std::process::Command::new(exe)
            .args(["--sleep", "120"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(c) => {
                println!("grandchild-pid {}", c.id());
                let _ = std::io::stdout().flush();
                0
            }
            Err(e) => {
                println!("error spawn {e}");
                1
            }
        }
    }

    fn to_win(p: &Path) -> Result<WinPath, String> {
        WinPath::parse(&p.to_string_lossy()).map_err(|e| e.to_string())
    }

    struct Fixture {
        base: PathBuf,
        root: PathBuf,
        outside: PathBuf,
    }

    fn make_fixture() -> std::io::Result<Fixture> {
        let tag = random::bytes::<4>()
            .map(u32::from_le_bytes)
            .unwrap_or(std::process::id());
        let base = std::env::temp_dir().join(format!("stockade selftest ü {tag:08x}"));
        let root = base.join("work space");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join(".git"))?;
        std::fs::create_dir_all(root.join("sub"))?;
        std::fs::create_dir_all(root.join("src"))?;
        std::fs::create_dir_all(&outside)?;
        std::fs::write(root.join(".git").join("HEAD"), "ref: refs/heads/main\n")?;
        std::fs::write(
            root.join("sub").join(".git"),
            "gitdir: ../.git/modules/sub\n",
        )?;
        std::fs::write(root.join("src").join("existing.rs"), "fn main() {}\n")?;
        std::fs::write(outside.join("victim.txt"), "keep me\n")?;
        Ok(Fixture {
            base,
            root,
            outside,
        })
    }

    /// Spawns this exe with `args`, stdout into a pipe; returns the child and the read end.
    fn spawn_self(
        tok: Option<&OwnedHandle>,
        args: &[String],
        env: Option<&[u16]>,
        job: &Job,
    ) -> Result<(process::Child, std::fs::File), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let cmd = command_line(&exe.to_string_lossy(), args);
        let (r, w) = pipe::anonymous().map_err(|e| e.to_string())?;
        let stdio =
            process::Stdio::Handles([std::ptr::null_mut(), w.as_raw_handle(), w.as_raw_handle()]);
        let child = process::spawn(tok, &cmd, env, None, stdio, job).map_err(|e| e.to_string())?;
        drop(w);
        Ok((child, std::fs::File::from(r)))
    }

    fn process_gone(pid: u32, wait: Duration) -> bool {
        use windows_sys::Win32::System::Threading::{
            OpenProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
        };
        // SAFETY: OpenProcess only takes plain values; a null result means no such process.
        let h = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
        if h.is_null() {
            return true;
        }
        // SAFETY: `h` was just returned by OpenProcess and is owned by nobody else.
        let h = unsafe { OwnedHandle::from_raw_handle(h) };
        // SAFETY: `h` is a process handle with SYNCHRONIZE.
        let r = unsafe {
            WaitForSingleObject(
                h.as_raw_handle(),
                u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            )
        };
        r == windows_sys::Win32::Foundation::WAIT_OBJECT_0
    }

    fn run_all() -> i32 {
        let wine = running_under_wine();
        let mut rep = Report {
            passed: 0,
            failed: 0,
            skipped: 0,
            wine,
        };
        rep.note("host", if wine { "running under Wine: tokens and DACLs are NOT enforced here; enforcement probes report unsupported-by-wine" } else { "running on Windows" });

        // 1. Capability SID: random bytes -> SID string -> PSID -> string.
        let cap = match random::bytes::<16>() {
            Ok(b) => Sid::capability_from_random(b),
            Err(e) => {
                rep.fail("random", e);
                Sid::capability_from_random([9; 16])
            }
        };
        match wsid::OwnedSid::new(&cap).and_then(|o| {
            // SAFETY: `o` owns a valid SID for the duration of the call.
            unsafe { wsid::sid_from_psid(o.as_psid()) }
        }) {
            Ok(back) if back == cap => rep.ok(
                "capability-sid",
                format!("{cap} converts to a valid PSID and back"),
            ),
            Ok(back) => rep.fail("capability-sid", format!("{cap} came back as {back}")),
            Err(e) => rep.fail("capability-sid", e),
        }

        let fx = match make_fixture() {
            Ok(f) => f,
            Err(e) => {
                rep.fail("fixture", e);
                return finish(&rep);
            }
        };

        // 2. The unelevated plan for the fixture.
        let root = match to_win(&fx.root) {
            Ok(r) => r,
            Err(e) => {
                rep.fail("fixture-path", e);
                return finish(&rep);
            }
        };
        let mut input = match WinPlanInput::for_workspace(&root.as_string()) {
            Ok(i) => i,
            Err(e) => {
                rep.fail("plan-input", e);
                return finish(&rep);
            }
        };
        let tmp = root.join("tmp").ok();
        input.temp_dir = tmp.clone();
        input.network = Network::Off;
        input.env = std::env::vars().collect();
        for (rel, kind) in [(".git", Kind::Dir), (r"sub\.git", Kind::File)] {
            if let Ok(p) = root.join(rel) {
                input.protected.push(PlannedWinPath {
                    path: p,
                    kind,
                    reason: "selftest".into(),
                });
            }
        }
        // Missing protected names: the placeholder plan, created here as the run path does.
        input.protected_missing = [".claude", r".vscode\tasks.json"]
            .iter()
            .filter_map(|r| root.join(r).ok())
            .collect();
        let pp =
            stockade_windows::placeholder::plan(&input, |p| Path::new(&p.as_string()).exists());
        for d in &pp.create {
            if let Err(e) = std::fs::create_dir(d.as_string()) {
                rep.fail("placeholder-dirs", format!("{d}: {e}"));
            }
        }
        let input = input.with_placeholders(&pp);
        let mut caps = CapabilityStore::default();
        if let Err(e) = caps.ensure(&input.effective_roots(), || {
            random::bytes::<16>().unwrap_or([7; 16])
        }) {
            rep.fail("capability-store", e);
            return finish(&rep);
        }
        let me = match token::own_token()
            .map_err(|e| e.to_string())
            .and_then(|o| wsid::token_user(o.as_handle()).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                rep.fail("token-user", e);
                return finish(&rep);
            }
        };
        let plan = match unelevated::plan(&input, &caps, UnelevatedOptions::default(), &me) {
            Ok(p) => p,
            Err(e) => {
                rep.fail("plan", e);
                return finish(&rep);
            }
        };
        let root_sid = plan.roots[0].1.clone();

        // 3. ACLs: apply, read back with GetNamedSecurityInfoW, idempotence, inheritance.
        let mut applied = true;
        let mut acl_stored = false;
        for entry in &plan.acl {
            if let Err(e) = acl::apply(entry) {
                rep.fail("acl-apply", e);
                applied = false;
            }
        }
        if applied {
            let mut missing = Vec::new();
            for entry in &plan.acl {
                match acl::read_path(&entry.path) {
                    Ok(d) => missing.extend(
                        missing_explicit(&d.aces, &entry.aces)
                            .into_iter()
                            .map(|a| format!("{} {:?}", entry.path, a)),
                    ),
                    Err(e) => missing.push(e.to_string()),
                }
            }
            acl_stored = missing.is_empty();
            if missing.is_empty() {
                rep.ok("acl-apply", format!("{} paths carry exactly the planned explicit ACEs (read back with GetNamedSecurityInfoW)", plan.acl.len()));
            } else if wine {
                rep.unsupported("acl-apply", format!("SetSecurityInfo (on the verified handle) returned success, but Wine 8 maps file DACLs onto Unix mode bits and does not store ACEs for other SIDs; missing on read-back: {}", missing.join("; ")));
            } else {
                rep.fail(
                    "acl-apply",
                    format!("missing after apply: {}", missing.join("; ")),
                );
            }
            // The DACL lock works only if Windows stores the escape allow before the deny to you
            // (the model's assumption): read the order back.
            let mut order_bad = Vec::new();
            let mut locked = 0usize;
            for entry in plan
                .acl
                .iter()
                .filter(|e| e.aces.iter().any(stockade_windows::ace::is_lock_escape))
            {
                locked += 1;
                match acl::read_path(&entry.path) {
                    Ok(d) => {
                        let ex = d.explicit();
                        let esc = ex.iter().position(stockade_windows::ace::is_lock_escape);
                        let deny = ex.iter().position(|a| {
                            a.kind == stockade_windows::ace::AceKind::Deny
                                && a.sid == me
                                && a.mask & unelevated::LOCK_MASK != 0
                        });
                        match (esc, deny) {
                            (Some(e), Some(d)) if e < d => {}
                            other => {
                                order_bad.push(format!("{}: escape/deny at {other:?}", entry.path))
                            }
                        }
                    }
                    Err(e) => order_bad.push(e.to_string()),
                }
            }
            if locked == 0 {
                rep.fail("acl-lock-order", "the plan has no DACL lock");
            } else if order_bad.is_empty() && acl_stored {
                rep.ok(
                    "acl-lock-order",
                    format!("{locked} locked paths store the escape allow before the deny to you"),
                );
            } else if wine {
                rep.unsupported(
                    "acl-lock-order",
                    format!(
                        "Wine does not store these ACEs, so the stored order cannot be read: {}",
                        order_bad.join("; ")
                    ),
                );
            } else {
                rep.fail("acl-lock-order", order_bad.join("; "));
            }
            let again: Result<Vec<bool>, _> = plan.acl.iter().map(acl::apply).collect();
            match again {
                Ok(v) if v.iter().all(|c| !c) => rep.ok("acl-idempotent", "second apply changed nothing"),
                Ok(_) if wine => rep.unsupported("acl-idempotent", "the ACEs of the first apply are not stored by Wine, so the second apply writes again"),
                Ok(_) => rep.fail("acl-idempotent", "second apply rewrote a DACL"),
                Err(e) => rep.fail("acl-idempotent", e),
            }
            let has_inherited = |p: &WinPath| -> Result<bool, String> {
                let d = acl::read_path(p).map_err(|e| e.to_string())?;
                Ok(d.aces.iter().any(|a| {
                    a.sid == root_sid
                        && a.kind == AceKind::Allow
                        && a.inherit.has(Inherit::INHERITED)
                }))
            };
            let existing = root.join(r"src\existing.rs");
            match existing
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(has_inherited)
            {
                Ok(true) => rep.ok(
                    "acl-inherit-existing",
                    "a file that existed before the root ACE inherited it",
                ),
                Ok(false) if wine => rep.unsupported(
                    "acl-inherit-existing",
                    "SetSecurityInfo did not propagate the inheritable ACE to an existing child",
                ),
                Ok(false) => rep.fail(
                    "acl-inherit-existing",
                    "existing child did not inherit the root ACE",
                ),
                Err(e) => rep.fail("acl-inherit-existing", e),
            }
            let newf = fx.root.join("src").join("created-after.rs");
            let _ = std::fs::write(&newf, "x");
            match to_win(&newf).and_then(|p| has_inherited(&p)) {
                Ok(true) => rep.ok(
                    "acl-inherit-new",
                    "a file created after the root ACE inherited it",
                ),
                Ok(false) if wine => rep.unsupported(
                    "acl-inherit-new",
                    "new file's DACL has no inherited ACE from its parent",
                ),
                Ok(false) => rep.fail("acl-inherit-new", "new child did not inherit the root ACE"),
                Err(e) => rep.fail("acl-inherit-new", e),
            }
            match root
                .join(".git")
                .map_err(|e| e.to_string())
                .and_then(|g| acl::read_path(&g).map_err(|e| e.to_string()))
            {
                Ok(d) => {
                    let first = d.aces.iter().position(|a| a.kind == AceKind::Allow);
                    let last_deny = d.aces.iter().rposition(|a| {
                        a.kind == AceKind::Deny && !a.inherit.has(Inherit::INHERITED)
                    });
                    match (first, last_deny) {
                        (Some(f), Some(l)) if l < f => rep.ok(
                            "acl-deny-first",
                            ".git's explicit deny ACE precedes every allow ACE",
                        ),
                        (_, None) if wine => rep.unsupported(
                            "acl-deny-first",
                            ".git has no explicit deny ACE: Wine does not store file ACEs",
                        ),
                        (_, None) => rep.fail("acl-deny-first", ".git has no explicit deny ACE"),
                        _ => rep.fail(
                            "acl-deny-first",
                            format!("ACE order not canonical: {:?}", d.aces),
                        ),
                    }
                }
                Err(e) => rep.fail("acl-deny-first", e),
            }
        }

        // 3b. The same ACL builder on a kernel object, which Wine does store: a job's DACL set
        // to the plan's ACEs (deny first, inheritance flags) and read back with GetSecurityInfo.
        match Job::new(&Default::default()).map_err(|e| e.to_string()).and_then(|job| {
            let mut aces: Vec<stockade_windows::ace::Ace> = plan.acl.iter().flat_map(|e| e.aces.clone()).collect();
            stockade_windows::ace::canonical_order(&mut aces);
            acl::write_handle(job.handle(), &aces, "job").map_err(|e| e.to_string())?;
            let back = acl::read_handle(job.handle(), "job").map_err(|e| e.to_string())?;
            Ok((aces, back))
        }) {
            Ok((aces, back)) if back.aces == aces => rep.ok("acl-build-roundtrip", format!("{} planned ACEs (deny first, CI|OI flags, masks) set on a kernel object and read back identically", aces.len())),
            Ok((aces, back)) => rep.fail("acl-build-roundtrip", format!("set {aces:?}, read back {:?}", back.aces)),
            Err(e) => rep.fail("acl-build-roundtrip", e),
        }

        // 4. Restricted token, read back.
        // The per-run SID is minted here (as `create_restricted` does) so that the expected
        // restricting SIDs and default DACL are known.
        let run_sid = Sid::capability_from_random(random::bytes::<16>().unwrap_or([8; 16]));
        let bound_token = plan.token.bind_run_sid(&run_sid);
        let tok = match token::create_restricted_bound(&bound_token) {
            Ok(t) => Some(t),
            Err(e) => {
                rep.fail("restricted-token", e);
                None
            }
        };
        let own = token::own_token();
        let expected: Option<BTreeSet<Sid>> = own.as_ref().ok().and_then(|o| {
            bound_token
                .restricting
                .iter()
                .map(|r| token::resolve(o, &r.sid).ok())
                .collect::<Option<BTreeSet<Sid>>>()
        });
        if let (Some(t), Some(exp)) = (&tok, &expected) {
            match wsid::token_restricted_sids(t.as_handle()) {
                Ok(got) if got.iter().cloned().collect::<BTreeSet<_>>() == *exp => {
                    rep.ok("restricted-token", format!("CreateRestrictedToken(WRITE_RESTRICTED|DISABLE_MAX_PRIVILEGE|LUA_TOKEN) carries restricting SIDs {got:?}"))
                }
                Ok(got) => rep.fail("restricted-token", format!("restricting SIDs {got:?}, expected {exp:?}")),
                Err(e) if wine => {
                    let second = wsid::token_restricted_sids_via_groups_and_privileges(t.as_handle());
                    match second {
                        Ok(got) if got.iter().cloned().collect::<BTreeSet<_>>() == *exp => rep.ok("restricted-token", format!("CreateRestrictedToken succeeded; TokenRestrictedSids unsupported ({e}) but TokenGroupsAndPrivileges reports {got:?}")),
                        other => rep.unsupported("restricted-token", format!("CreateRestrictedToken succeeded, but Wine cannot report the token's restricting SIDs: TokenRestrictedSids: {e}; TokenGroupsAndPrivileges: {other:?}")),
                    }
                }
                Err(e) => rep.fail("restricted-token", e),
            }
        }

        // The DACL lock's deny-only group (SidsToDisable): present in the caller's token, it must
        // be deny-only (and not enabled) in the command's.
        if let (Some(t), Ok(o)) = (&tok, &own) {
            const ENABLED: u32 = 0x4;
            const DENY_ONLY: u32 = 0x10;
            match (
                wsid::token_groups(o.as_handle()),
                wsid::token_groups(t.as_handle()),
            ) {
                (Ok(mine), Ok(theirs)) => {
                    let wanted: Vec<&Sid> = bound_token
                        .deny_only
                        .iter()
                        .filter(|d| mine.iter().any(|(s, _)| s == *d))
                        .collect();
                    let bad: Vec<String> = wanted
                        .iter()
                        .filter(|d| {
                            !theirs
                                .iter()
                                .any(|(s, a)| s == **d && a & DENY_ONLY != 0 && a & ENABLED == 0)
                        })
                        .map(|d| d.to_string())
                        .collect();
                    let note = if wine {
                        "; Wine does not enforce it"
                    } else {
                        ""
                    };
                    if wanted.is_empty() {
                        rep.fail("deny-only-group", format!("your token holds none of {:?}: the DACL lock would leave you no WRITE_DAC on protected paths", bound_token.deny_only));
                    } else if bad.is_empty() {
                        rep.ok("deny-only-group", format!("CreateRestrictedToken(SidsToDisable) made {wanted:?} deny-only in the command's token (read back with GetTokenInformation(TokenGroups)){note}"));
                    } else {
                        rep.fail(
                            "deny-only-group",
                            format!("not deny-only in the command's token: {bad:?}"),
                        );
                    }
                }
                (a, b) => rep.fail(
                    "deny-only-group",
                    format!("TokenGroups: {:?} / {:?}", a.err(), b.err()),
                ),
            }
        }

        if let (Some(t), Ok(o)) = (&tok, &own) {
            let want: Vec<Sid> = bound_token
                .default_dacl
                .iter()
                .filter_map(|(r, _)| token::resolve(o, r).ok())
                .collect();
            match token::default_dacl(t) {
                Ok(d)
                    if want
                        .iter()
                        .all(|w| d.iter().any(|a| a.sid == *w && a.kind == AceKind::Allow)) =>
                {
                    rep.ok(
                        "token-default-dacl",
                        format!(
                            "default DACL read back: {:?}",
                            d.iter().map(|a| a.sid.to_string()).collect::<Vec<_>>()
                        ),
                    )
                }
                Ok(d) => rep.fail(
                    "token-default-dacl",
                    format!("default DACL {d:?}, expected allow ACEs for {want:?}"),
                ),
                Err(e) => rep.fail("token-default-dacl", e),
            }
        }

        // 5. A child started with the restricted token reports its token and probes access.
        if let (Some(t), Some(exp)) = (&tok, &expected) {
            let env = sandbox_env(&input.env, tmp.as_ref(), input.network, true);
            let block = env_block(&env);
            match Job::new(&input.limits)
                .map_err(|e| e.to_string())
                .and_then(|job| {
                    let args = vec![
                        "--child-report".to_string(),
                        fx.root.to_string_lossy().into_owned(),
                        fx.outside.to_string_lossy().into_owned(),
                        std::process::id().to_string(),
                    ];
                    let (child, mut out) = spawn_self(Some(t), &args, Some(&block), &job)?;
                    let mut text = String::new();
                    let _ = out.read_to_string(&mut text);
                    let w = process::wait(&child.process, Some(Duration::from_secs(60)))
                        .map_err(|e| e.to_string())?;
                    Ok((text, w))
                }) {
                Ok((text, waited)) => {
                    let get = |k: &str| {
                        text.lines()
                            .find_map(|l| l.strip_prefix(&format!("{k} ")))
                            .unwrap_or("<missing>")
                            .to_string()
                    };
                    let got: BTreeSet<Sid> = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("restricted-sid "))
                        .filter_map(|s| Sid::parse(s.trim()).ok())
                        .collect();
                    let child_restricted = got == *exp;
                    // Observations about what a restricted child can do only count if the child
                    // really ran with the restricted token.
                    let observed = |rep: &mut Report, name: &str, outcome: String, good: &str| {
                        if outcome != "ok" {
                            rep.fail(name, outcome);
                        } else if child_restricted {
                            rep.ok(name, good);
                        } else {
                            rep.unsupported(name, format!("{good} -- observed, but the child's token could not be shown to be restricted, so this says nothing about the restricted token"));
                        }
                    };
                    if got == *exp {
                        rep.ok("child-token", format!("child started with CreateProcessAsUserW reports restricting SIDs {got:?} ({waited:?})"));
                    } else if wine && got.is_empty() {
                        rep.unsupported("child-token", format!("CreateProcessAsUserW with the restricted token started the child, but inside it no restricting SIDs are visible (Wine does not implement TokenRestrictedSids; IsTokenRestricted says {}), so the child's token cannot be verified here", get("is-restricted")));
                    } else {
                        rep.fail(
                            "child-token",
                            format!("child reports {got:?}, expected {exp:?}; output: {text:?}"),
                        );
                    }
                    let want_temp = tmp.as_ref().map(|t| t.as_string()).unwrap_or_default();
                    if get("env-temp") == want_temp {
                        rep.ok("child-env", format!("TEMP in the child is {want_temp}"));
                    } else {
                        rep.fail(
                            "child-env",
                            format!(
                                "TEMP in the child is {:?}, expected {want_temp:?}",
                                get("env-temp")
                            ),
                        );
                    }
                    observed(
                        &mut rep,
                        "child-write-root",
                        get("write-root"),
                        "the child can write inside the writable root",
                    );
                    let held = got == *exp;
                    rep.expect_denied("child-write-outside", &get("write-outside"), held);
                    rep.expect_denied("child-write-git-dir", &get("write-git"), held);
                    rep.expect_denied("child-write-git-file", &get("write-git-file"), held);
                    // Adversarial probes (issue 15): what the corrected model says the plan stops.
                    rep.expect_denied("child-rename-git", &get("rename-git"), held);
                    rep.expect_denied("child-delete-git-file", &get("delete-git-file"), held);
                    rep.expect_denied("child-rename-sub", &get("rename-sub"), held);
                    // The default DACL lock (Authenticated Users deny-only in the child's token, the
                    // escape allow before the deny to you): the model denies both.
                    rep.expect_denied("child-re-acl-git", &get("re-acl-git"), held);
                    rep.expect_denied("child-re-acl-root", &get("re-acl-root"), held);
                    rep.expect_denied("child-mkdir-drive-root", &get("mkdir-drive-root"), held);
                    rep.expect_denied("child-hkcu-run-set-value", &get("hkcu-run"), held);
                    rep.expect_denied(
                        "child-create-claude-settings",
                        &get("create-claude-settings"),
                        held,
                    );
                    rep.expect_denied(
                        "child-create-vscode-tasks",
                        &get("create-vscode-tasks"),
                        held,
                    );
                    rep.note("child-delete-in-git", format!("{} (the model predicts deleting a file inside a protected dir is allowed in this tier; this line answers it on a real host)", get("delete-in-git")));
                    rep.note("child-delete-outside", format!("{} (the access model predicts a write-restricted token can delete the caller's files; this line answers that on a real host)", get("delete-outside")));
                    rep.note("child-open-parent-vm-write", format!("{} (OpenProcess(VM_WRITE) from the restricted child on this unrestricted process of your session; the model denies it if your default DACL gives the logon SID read/execute only; `ok` on a real host means the child can write into your processes' memory, see docs/windows.md)", get("open-parent-vm-write")));
                    observed(
                        &mut rep,
                        "child-null-device",
                        get("nul"),
                        "the child can open and write NUL",
                    );
                    observed(
                        &mut rep,
                        "child-own-pipe",
                        get("own-pipe"),
                        "the child can create and use its own pipe (token default DACL)",
                    );
                }
                Err(e) => rep.fail("child-token", e),
            }
        }

        // 6. Job object: a grandchild dies with the job (TerminateJobObject and KILL_ON_JOB_CLOSE).
        for (name, by_close) in [
            ("job-terminate-kills-grandchild", false),
            ("job-close-kills-grandchild", true),
        ] {
            let r = Job::new(&Default::default())
                .map_err(|e| e.to_string())
                .and_then(|job| {
                    let (child, out) =
                        spawn_self(None, &["--child-grandchild".to_string()], None, &job)?;
                    let mut line = String::new();
                    BufReader::new(out)
                        .read_line(&mut line)
                        .map_err(|e| e.to_string())?;
                    let pid: u32 = line
                        .trim()
                        .strip_prefix("grandchild-pid ")
                        .and_then(|s| s.parse().ok())
                        .ok_or(format!("child said {line:?}"))?;
                    let _ = process::wait(&child.process, Some(Duration::from_secs(30)));
                    if process_gone(pid, Duration::from_millis(0)) {
                        return Err(format!("grandchild {pid} was not running before the kill"));
                    }
                    let active = job.active_processes().map_err(|e| e.to_string())?;
                    if by_close {
                        drop(job);
                    } else {
                        job.terminate(1).map_err(|e| e.to_string())?;
                    }
                    if process_gone(pid, Duration::from_secs(10)) {
                        Ok(format!(
                            "grandchild {pid} (one of {active} active job processes) is gone"
                        ))
                    } else {
                        Err(format!("grandchild {pid} survived"))
                    }
                });
            match r {
                Ok(d) => rep.ok(name, d),
                Err(e) => rep.fail(name, e),
            }
        }

        // 7. Timeout: a sleeping child is killed through its job.
        match Job::new(&Default::default())
            .map_err(|e| e.to_string())
            .and_then(|job| {
                let (child, _out) =
                    spawn_self(None, &["--sleep".to_string(), "60".to_string()], None, &job)?;
                let first = process::wait(&child.process, Some(Duration::from_millis(500)))
                    .map_err(|e| e.to_string())?;
                job.terminate(124).map_err(|e| e.to_string())?;
                let second = process::wait(&child.process, Some(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())?;
                Ok((first, second))
            }) {
            Ok((process::Waited::TimedOut, process::Waited::Exited(124))) => rep.ok(
                "timeout-kills-job",
                "timed out after 500 ms, job terminated, exit code 124",
            ),
            Ok(other) => rep.fail("timeout-kills-job", format!("{other:?}")),
            Err(e) => rep.fail("timeout-kills-job", e),
        }

        // 8. Named pipe with a DACL admitting only the sandbox account and the caller.
        match own
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|o| wsid::token_user(o.as_handle()).map_err(|e| e.to_string()))
        {
            Ok(me) => {
                let sandbox = Sid::capability_from_random(random::bytes::<16>().unwrap_or([3; 16]));
                let sddl = runner_pipe_sddl(&sandbox, &me);
                let name = format!("stockade-selftest-{}", std::process::id());
                match pipe::named_with_sddl(&name, &sddl)
                    .map_err(|e| e.to_string())
                    .and_then(|h| acl::read_handle(h.as_handle(), &name).map_err(|e| e.to_string()))
                {
                    Ok(d) => {
                        let sids: BTreeSet<Sid> = d.aces.iter().map(|a| a.sid.clone()).collect();
                        let want: BTreeSet<Sid> =
                            [me.clone(), sandbox.clone()].into_iter().collect();
                        if sids == want && d.aces.iter().all(|a| a.kind == AceKind::Allow) {
                            rep.ok("named-pipe-dacl", format!("{sddl} read back with GetSecurityInfo: {} allow ACEs, protected={}", d.aces.len(), d.protected));
                        } else {
                            rep.fail("named-pipe-dacl", format!("read back {:?}", d.aces));
                        }
                    }
                    Err(e) => rep.fail("named-pipe-dacl", e),
                }
            }
            Err(e) => rep.fail("named-pipe-dacl", e),
        }

        // 8b. The whole backend: WindowsBackend::run on a policy Plan (only when built with the
        // `policy` feature, i.e. when stockade-policy compiles for Windows).
        #[cfg(feature = "policy")]
        backend_run(&mut rep, &fx);

        // 8b2. The elevated runner's Win32 paths (token, desktop, job UI limits), built from this
        // process's token the way the runner builds them from the sandbox account's.
        elevated_runner_paths(&mut rep);

        // 8b3. Firewall state reads (what an offline elevated run verifies before it starts).
        match stockade_windows::win::firewall::read_state(&[
            "Stockade selftest: no such rule".to_string()
        ]) {
            Ok(st) => {
                let problems = stockade_windows::firewall::verify(
                    &st,
                    &["Stockade selftest: no such rule".to_string()],
                );
                let missing_seen = problems
                    .iter()
                    .any(|p| matches!(p, stockade_windows::firewall::FirewallProblem::Missing(_)));
                if missing_seen {
                    rep.ok("firewall-state", format!("read profiles {:#x}, enabled {:?}, LocalPolicyModifyState {}; a missing rule is reported ({} problems){}", st.current_profiles, st.enabled, st.modify_state, problems.len(), if wine { " -- Wine's firewall enforces nothing" } else { "" }));
                } else {
                    rep.fail(
                        "firewall-state",
                        format!("a missing rule was not reported: {problems:?}"),
                    );
                }
            }
            Err(e) if wine => rep.unsupported("firewall-state", e),
            Err(e) => rep.fail("firewall-state", e),
        }

        runner_self_dacl(&mut rep);

        // 8b4. Each firewall read on its own (which of them this host implements), then WFP.
        firewall_reads(&mut rep);
        wfp_filters(&mut rep);

        // 8c. Elevated-tier building blocks. They change the machine (accounts, firewall rules), so
        // they run under Wine (a throw-away prefix) or when STOCKADE_SELFTEST_SETUP=1.
        if wine || std::env::var_os("STOCKADE_SELFTEST_SETUP").is_some() {
            elevated_blocks(&mut rep);
        } else {
            rep.note("elevated", "skipped: set STOCKADE_SELFTEST_SETUP=1 (elevated) to create and remove test accounts and rules");
        }

        // 8d. ACLs are set through a handle that is checked to be the path itself.
        reparse_race(&mut rep, &fx);

        // 9. Revoke: cleanup removes the capability SID's ACEs.
        let mut revoke_ok = true;
        for entry in &plan.acl {
            if let Err(e) = acl::revoke(&entry.path, &root_sid) {
                rep.fail("acl-revoke", e);
                revoke_ok = false;
            }
        }
        if revoke_ok {
            match acl::read_path(&root) {
                Ok(d) if !d.explicit().iter().any(|a| a.sid == root_sid) && !acl_stored => {
                    rep.unsupported("acl-revoke", "revoke ran without error, but Wine never stored the ACEs, so their absence proves nothing")
                }
                Ok(d) if !d.explicit().iter().any(|a| a.sid == root_sid) => rep.ok("acl-revoke", "the capability SID's ACEs are gone"),
                Ok(d) => rep.fail("acl-revoke", format!("still present: {:?}", d.aces)),
                Err(e) => rep.fail("acl-revoke", e),
            }
        }
        let _ = std::fs::remove_dir_all(&fx.base);
        finish(&rep)
    }

    #[cfg(feature = "policy")]
    fn backend_run(rep: &mut Report, fx: &Fixture) {
        use stockade_policy::backend::{Backend, Command, ExitKind, RunOptions};
        use stockade_policy::plan::{PathKind, Plan, PlannedPath, TempPlan};
        use stockade_windows::WindowsBackend;
        let plan = Plan {
            workspace: fx.root.clone(),
            cwd: fx.root.clone(),
            writable_roots: vec![fx.root.clone()],
            protected: vec![PlannedPath {
                path: fx.root.join(".git"),
                kind: PathKind::Dir,
                reason: ".git directory".into(),
            }],
            protected_missing: vec![fx.root.join(".codex")],
            deny_read: vec![],
            allow_unix_sockets: vec![],
            network: stockade_policy::NetworkMode::Off,
            allowed_domains: vec![],
            protected_symlinks: vec![],
            git_mode: stockade_policy::model::GitMode::ReadOnly,
            git_repos: vec![],
            warnings: vec![],
            overlay: Default::default(),
            write_gate: false,
            protected_names: vec![],
            windows_lock_protected_dacls: true,
            env: std::env::vars_os().collect(),
            env_removed: vec![],
            limits: Default::default(),
            temp: TempPlan {
                private: true,
                persist_dir: None,
            },
        };
        let backend = WindowsBackend::default();
        let cmd = Command {
            program: "cmd.exe".into(),
            args: vec!["/c".into(), "echo stockade> backend-out.txt".into()],
        };
        match backend.run(&plan, &cmd, &RunOptions::default()) {
            Ok(o)
                if o.exit == ExitKind::Code(0)
                    && std::fs::read_to_string(fx.root.join("backend-out.txt"))
                        .is_ok_and(|t| t.contains("stockade")) =>
            {
                let layers: Vec<&str> = o.enforced.iter().map(|l| l.layer.as_str()).collect();
                rep.ok("backend-run", format!("WindowsBackend::run ran cmd.exe in the workspace: exit 0, output file written; layers applied {layers:?}; {} warnings", o.warnings.len()));
                if rep.wine {
                    rep.note("backend-run", "the layers were applied through the Win32 calls, which under Wine do not enforce anything");
                }
            }
            Ok(o) => rep.fail("backend-run", format!("unexpected outcome {o:?}")),
            Err(e) => rep.fail("backend-run", e),
        }
        let pty_cmd = Command {
            program: "cmd.exe".into(),
            args: vec!["/c".into(), "echo through-conpty> pty-out.txt".into()],
        };
        // Under Wine the ConPTY run has once been seen to exit 0 without writing its file; one
        // retry, reported as such, keeps that Wine flake from hiding or faking a result.
        let mut first_failure: Option<String> = None;
        for attempt in 1..=2 {
            let _ = std::fs::remove_file(fx.root.join("pty-out.txt"));
            let r = backend.run(
                &plan,
                &pty_cmd,
                &RunOptions {
                    pty: true,
                    ..Default::default()
                },
            );
            println!();
            let file = std::fs::read_to_string(fx.root.join("pty-out.txt"));
            match r {
                Ok(o)
                    if o.exit == ExitKind::Code(0)
                        && file.as_ref().is_ok_and(|t| t.contains("through-conpty")) =>
                {
                    let retry = first_failure
                        .as_ref()
                        .map(|f| format!(" (attempt {attempt}; attempt 1: {f})"))
                        .unwrap_or_default();
                    rep.ok("backend-pty", format!("WindowsBackend::run with pty=true started cmd.exe attached to a ConPTY (CreatePseudoConsole + PROC_THREAD_ATTRIBUTE_PSEUDOCONSOLE): exit 0, output file written{retry}"));
                    break;
                }
                Ok(o) if attempt == 1 && rep.wine => {
                    first_failure = Some(format!("exit {:?}, pty-out.txt: {file:?}", o.exit))
                }
                Ok(o) => {
                    rep.fail(
                        "backend-pty",
                        format!(
                            "exit {:?}, pty-out.txt: {file:?}; first attempt: {first_failure:?}",
                            o.exit
                        ),
                    );
                    break;
                }
                Err(e) if rep.wine => {
                    rep.unsupported("backend-pty", e);
                    break;
                }
                Err(e) => {
                    rep.fail("backend-pty", e);
                    break;
                }
            }
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let sleeper = Command {
            program: exe.into_os_string(),
            args: vec!["--sleep".into(), "60".into()],
        };
        let opts = RunOptions {
            timeout: Some(Duration::from_millis(1500)),
            ..Default::default()
        };
        let t0 = std::time::Instant::now();
        match backend.run(&plan, &sleeper, &opts) {
            Ok(o) if o.exit == ExitKind::TimedOut && t0.elapsed() < Duration::from_secs(30) => rep
                .ok(
                    "backend-timeout",
                    format!(
                        "a 60 s command under a 1.5 s timeout ended as TimedOut after {:?}",
                        t0.elapsed()
                    ),
                ),
            Ok(o) => rep.fail("backend-timeout", format!("unexpected outcome {o:?}")),
            Err(e) => rep.fail("backend-timeout", e),
        }
        placeholder_lifecycle(rep, fx, &plan);
    }

    #[cfg(feature = "policy")]
    /// The runs above had `.codex` missing: the run path must have made it an empty placeholder
    /// directory (Stockade's own step, which Wine can show; its DACL is not) and `stockade clean`
    /// (`backend::clean`) must remove it while it is empty, and keep it once it is not.
    fn placeholder_lifecycle(rep: &mut Report, fx: &Fixture, plan: &stockade_policy::plan::Plan) {
        let ph = fx.root.join(".codex");
        let empty = |p: &Path| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none());
        if ph.is_dir() && empty(&ph) {
            rep.ok("placeholder-create", format!("the run created the placeholder {} (an empty directory, recorded in capabilities.json) for the missing protected name before the command started", ph.display()));
        } else {
            rep.fail(
                "placeholder-create",
                format!("{} is not an empty directory after the run", ph.display()),
            );
            return;
        }
        match stockade_windows::backend::clean(plan) {
            Ok(_) if !ph.exists() => rep.ok(
                "placeholder-clean",
                "stockade clean removed the empty placeholder it had created",
            ),
            Ok(m) => rep.fail(
                "placeholder-clean",
                format!("{} still exists after clean ({m})", ph.display()),
            ),
            Err(e) => rep.fail("placeholder-clean", e),
        }
        // Made again by a run, then used by you: clean leaves it (and what is in it) alone.
        let cmd = stockade_policy::backend::Command {
            program: "cmd.exe".into(),
            args: vec!["/c".into(), "exit 0".into()],
        };
        use stockade_policy::backend::Backend;
        let backend = stockade_windows::WindowsBackend::default();
        let kept = backend
            .run(plan, &cmd, &Default::default())
            .map_err(|e| e.to_string())
            .and_then(|_| {
                std::fs::write(ph.join("config.toml"), "# yours\n").map_err(|e| e.to_string())
            })
            .and_then(|_| stockade_windows::backend::clean(plan).map_err(|e| e.to_string()));
        match kept {
            Ok(_) if ph.join("config.toml").is_file() => rep.ok(
                "placeholder-clean-keeps-used",
                "a placeholder with a file in it is kept by clean, with the file",
            ),
            Ok(m) => rep.fail(
                "placeholder-clean-keeps-used",
                format!("the used placeholder is gone after clean ({m})"),
            ),
            Err(e) => rep.fail("placeholder-clean-keeps-used", e),
        }
        let _ = std::fs::remove_dir_all(&ph);
    }

    const NOT_VISIBLE: &str = "the created account is not visible to LookupAccountNameW";

    fn elevated_blocks(rep: &mut Report) {
        use stockade_windows::firewall::offline_rules;
        use stockade_windows::win::{accounts, firewall, secrets, setup};
        match secrets::protect(b"stockade secret")
            .and_then(|b| secrets::unprotect(&b).map(|p| (b, p)))
        {
            Ok((b, p)) if p == b"stockade secret" && b != p => rep.ok(
                "dpapi-roundtrip",
                format!(
                    "CryptProtectData/CryptUnprotectData round-trip ({} byte blob)",
                    b.len()
                ),
            ),
            Ok(_) => rep.fail("dpapi-roundtrip", "decrypted data differs"),
            Err(e) => rep.fail("dpapi-roundtrip", e),
        }
        let tag = random::bytes::<2>().map(u16::from_le_bytes).unwrap_or(1);
        let (user, group) = (format!("StkTestU{tag:04x}"), format!("StkTestG{tag:04x}"));
        let pw = stockade_windows::elevated::password_from_random(
            random::bytes::<32>().unwrap_or([5; 32]),
        );
        let r = (|| -> Result<String, String> {
            accounts::create_group(&group, "stockade self-test").map_err(|e| e.to_string())?;
            accounts::create_user(&user, &pw, "stockade self-test").map_err(|e| e.to_string())?;
            accounts::add_member(&group, &user).map_err(|e| e.to_string())?;
            let sid = accounts::lookup_sid(&user)
                .map_err(|e| e.to_string())?
                .ok_or(NOT_VISIBLE)?;
            let members = accounts::members(&group).map_err(|e| e.to_string())?;
            if !members.contains(&user) {
                return Err(format!("group members {members:?} lack {user}"));
            }
            accounts::hide(&user).map_err(|e| e.to_string())?;
            if !accounts::is_hidden(&user) {
                return Err("hidden value not read back".into());
            }
            Ok(format!("NetUserAdd/NetLocalGroupAdd/AddMembers/GetMembers, LookupAccountNameW -> {sid}, logon-screen value set and read back"))
        })();
        accounts::unhide(&user);
        let deleted = accounts::delete_user(&user).and_then(|_| accounts::delete_group(&group));
        let existed = r.is_ok();
        match r {
            Ok(d) => rep.ok("accounts", d),
            Err(e) if rep.wine && e == NOT_VISIBLE => rep.unsupported("accounts", "NetUserAdd, NetLocalGroupAdd and NetLocalGroupAddMembers returned success, but LookupAccountNameW does not find the account afterwards, so no account was observed"),
            Err(e) => rep.fail("accounts", e),
        }
        match (deleted, existed) {
            (Ok(()), true) if matches!(accounts::lookup_sid(&user), Ok(None)) => rep.ok("accounts-delete", "NetUserDel/NetLocalGroupDel removed the test account and group"),
            (Ok(()), false) => rep.unsupported("accounts-delete", "NetUserDel/NetLocalGroupDel returned success, but the account was never visible, so this proves nothing"),
            (Ok(()), true) => rep.fail("accounts-delete", format!("{user} still resolves after NetUserDel")),
            (Err(e), _) if !existed && rep.wine => rep.unsupported("accounts-delete", e),
            (Err(e), _) => rep.fail("accounts-delete", e),
        }

        let sid = Sid::capability_from_random(random::bytes::<16>().unwrap_or([6; 16]));
        let mut rules = offline_rules(&sid, &[3128]);
        for r in &mut rules {
            r.name = format!("{} (selftest {tag:04x})", r.name);
        }
        let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
        let added = firewall::add_rules(&rules);
        let add_ok = added.is_ok();
        match added {
            Ok(()) => {
                match names
                    .iter()
                    .map(|n| firewall::rule_exists(n))
                    .collect::<Result<Vec<bool>, _>>()
                {
                    Ok(v) if v.iter().all(|x| *x) => {
                        rep.ok("firewall-add", format!("{} INetFwRule3 rules added through INetFwPolicy2 and found by name", rules.len()));
                        if rep.wine {
                            rep.note(
                                "firewall-add",
                                "Wine's firewall does not filter traffic; no blocking was observed",
                            );
                        }
                    }
                    Ok(v) if rep.wine => rep.unsupported(
                        "firewall-add",
                        format!(
                            "INetFwRules::Add succeeded but Item() does not find the rules ({v:?})"
                        ),
                    ),
                    Ok(v) => rep.fail("firewall-add", format!("added rules not found: {v:?}")),
                    Err(e) => rep.fail("firewall-add", e),
                }
            }
            Err(e) if rep.wine && e.source.code == 0x8000_4002 => rep.unsupported(
                "firewall-add",
                format!("Wine's NetFwRule has no INetFwRule3 (no per-user scoping): {e}"),
            ),
            Err(e)
                if rep.wine && (e.source.code == 0x8000_4001 || e.source.code == 0x8000_4002) =>
            {
                rep.unsupported("firewall-add", e)
            }
            Err(e) => rep.fail("firewall-add", e),
        }
        match firewall::remove_rules(&names) {
            Ok(()) if !add_ok => rep.unsupported("firewall-remove", "INetFwRules::Remove returned success, but the rules were never added, so this proves nothing"),
            Ok(()) if names.iter().all(|n| matches!(firewall::rule_exists(n), Ok(false))) => rep.ok("firewall-remove", "INetFwRules::Remove removed every test rule"),
            Ok(()) => rep.fail("firewall-remove", "a removed rule is still found by name"),
            Err(e) if rep.wine && e.source.code == 0x8000_4001 => rep.unsupported("firewall-remove", e),
            Err(e) => rep.fail("firewall-remove", e),
        }

        // The runner protocol: CreateProcessWithLogonW + named pipe (runner SDDL) + runner's job.
        runner_protocol(rep);
        elevated_command_probes(rep);

        // The whole setup, twice (idempotence), then uninstall.
        match setup::setup(&[]) {
            Ok(first) => {
                rep.note(
                    "setup",
                    format!("first run performed {:?}", first.performed),
                );
                match setup::setup(&[]) {
                    Ok(second) if second.performed.is_empty() => rep.ok("setup-idempotent", format!("setup created group, 2 accounts, {} rules and the record; a second run did nothing", first.record.firewall_rules.len())),
                    Ok(second) => rep.fail("setup-idempotent", format!("second run performed {:?}", second.performed)),
                    Err(e) => rep.fail("setup-idempotent", e),
                }
                match setup::uninstall() {
                    Ok(steps) => {
                        let mine = setup::current_caller()
                            .map(|c| stockade_windows::elevated::Accounts::for_caller(&c).offline)
                            .unwrap_or_default();
                        let gone = matches!(accounts::lookup_sid(&mine), Ok(None));
                        if gone {
                            rep.ok("uninstall", format!("{} steps; accounts gone", steps.len()))
                        } else {
                            rep.fail("uninstall", "the caller's offline account still exists")
                        }
                    }
                    Err(e) => rep.fail("uninstall", e),
                }
            }
            Err(e) if rep.wine => rep.unsupported("setup", e),
            Err(e) => rep.fail("setup", e),
        }
    }

    /// A link planted inside the root (pointing outside) must not redirect an ACL change: the
    /// handle-based apply refuses the link itself and any path through it, and accepts the real
    /// path (positive control). This is Stockade's own check, not enforcement by the host.
    fn reparse_race(rep: &mut Report, fx: &Fixture) {
        use windows_sys::Win32::Storage::FileSystem::{
            CreateSymbolicLinkW, SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE,
            SYMBOLIC_LINK_FLAG_DIRECTORY,
        };
        let link = fx.root.join("planted-link");
        let (Ok(link_w), Ok(outside_w), Ok(real)) = (
            to_win(&link),
            to_win(&fx.outside),
            to_win(&fx.outside.join("victim.txt")),
        ) else {
            return rep.fail("acl-through-link", "fixture paths are not Windows paths");
        };
        let wl = stockade_windows::win::wide(&link_w.as_string());
        let wt = stockade_windows::win::wide(&outside_w.as_string());
        // SAFETY: both strings are NUL-terminated and outlive the call.
        let made = unsafe {
            CreateSymbolicLinkW(
                wl.as_ptr(),
                wt.as_ptr(),
                SYMBOLIC_LINK_FLAG_DIRECTORY | SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE,
            )
        };
        let through = link_w.join("victim.txt");
        let is_link = std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink());
        if !made || !is_link {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&link);
            let msg = format!("CreateSymbolicLinkW(directory) did not make a link ({e}); the handle-based apply was not tried against one");
            if rep.wine {
                rep.unsupported("acl-through-link", msg)
            } else {
                rep.fail("acl-through-link", msg)
            }
        } else {
            let r = check_link(&link_w, &real, through.map_err(|e| e.to_string()));
            let _ = std::fs::remove_dir(&link);
            match r {
                Ok(d) => rep.ok("acl-through-link", d),
                Err(e) => rep.fail("acl-through-link", e),
            }
        }
        // Under Wine, CreateSymbolicLinkW makes nothing; `.ci/windows-test.sh` plants a Unix
        // directory symlink instead (STOCKADE_SELFTEST_LINK = the link, ..._FILE = a file in its
        // target, ..._THROUGH = the same file named through the link).
        if let (Some(l), Some(f), Some(t)) = (
            std::env::var_os("STOCKADE_SELFTEST_LINK"),
            std::env::var_os("STOCKADE_SELFTEST_LINK_FILE"),
            std::env::var_os("STOCKADE_SELFTEST_LINK_THROUGH"),
        ) {
            let r = (|| {
                let l = to_win(Path::new(&l))?;
                let f = to_win(Path::new(&f))?;
                check_link(&l, &f, to_win(Path::new(&t)))
            })();
            match r {
                Ok(d) => rep.ok(
                    "acl-through-unix-link",
                    format!("{d} (a Unix symlink seen through Wine)"),
                ),
                Err(e) => rep.fail("acl-through-unix-link", e),
            }
        }
    }

    /// The link itself is refused (reparse point, or a handle that resolves elsewhere), a path
    /// through it is refused, and the real file opens (control).
    fn check_link(
        link: &WinPath,
        real: &WinPath,
        through: Result<WinPath, String>,
    ) -> Result<String, String> {
        acl::open_for_dacl(real).map_err(|e| {
            format!(
                "control: the real path {} does not open: {e}",
                real.as_string()
            )
        })?;
        let on_link = match acl::open_for_dacl(link) {
            Ok(_) => {
                return Err(format!(
                    "the link {} itself was opened for WRITE_DAC",
                    link.as_string()
                ))
            }
            Err(e @ (acl::AclError::ReparsePoint(_) | acl::AclError::Redirected { .. })) => {
                e.to_string()
            }
            Err(e) => return Err(format!("the link failed for another reason: {e}")),
        };
        let t = through?;
        let via = match acl::open_for_dacl(&t) {
            Ok(_) => {
                return Err(format!(
                    "{} was opened for WRITE_DAC through the link",
                    t.as_string()
                ))
            }
            Err(e @ (acl::AclError::ReparsePoint(_) | acl::AclError::Redirected { .. })) => {
                e.to_string()
            }
            Err(e) => {
                return Err(format!(
                    "through the link it failed for another reason: {e}"
                ))
            }
        };
        Ok(format!("a directory link planted in the root is refused itself ({on_link}) and as a path component ({via}); the real path opens (CreateFileW with FILE_FLAG_OPEN_REPARSE_POINT, GetFinalPathNameByHandleW)"))
    }

    fn runner_self_dacl(rep: &mut Report) {
        let r = Job::new(&Default::default())
            .map_err(|e| e.to_string())
            .and_then(|job| {
                // The job lives until the child's output is read (KILL_ON_JOB_CLOSE).
                let (child, mut out) =
                    spawn_self(None, &["--child-harden".to_string()], None, &job)?;
                let _ = process::wait(&child.process, Some(Duration::from_secs(30)));
                let mut text = String::new();
                let _ = out.read_to_string(&mut text);
                Ok(text)
            });
        match r {
            Ok(t) if t.contains("harden process ok") && t.contains("harden thread ok") => rep.ok(
                "runner-self-dacl",
                format!("the runner's process and thread DACLs (SYSTEM + OWNER RIGHTS query only) set and read back, token DACL set{}", if rep.wine { " (Wine stores kernel-object DACLs but enforces none)" } else { "" }),
            ),
            Ok(t) if rep.wine => rep.unsupported("runner-self-dacl", t.trim().replace('\n', "; ")),
            Ok(t) => rep.fail("runner-self-dacl", t.trim().replace('\n', "; ")),
            Err(e) => rep.fail("runner-self-dacl", e),
        }
    }

    fn firewall_reads(rep: &mut Report) {
        let reads = stockade_windows::win::firewall::probe_reads();
        let (ok, failed): (Vec<_>, Vec<_>) = reads.iter().partition(|(_, r)| r.is_ok());
        let okd: Vec<String> = ok
            .iter()
            .map(|(c, r)| format!("{c} -> {}", r.as_ref().map(String::as_str).unwrap_or("")))
            .collect();
        let bad: Vec<String> = failed
            .iter()
            .filter_map(|(c, r)| r.as_ref().err().map(|e| format!("{c}: {}", e.source)))
            .collect();
        if bad.is_empty() {
            rep.ok(
                "firewall-reads",
                format!(
                    "every read the offline run verifies answered: {}",
                    okd.join("; ")
                ),
            );
        } else if rep.wine {
            rep.unsupported(
                "firewall-reads",
                format!(
                    "answered: [{}]; not implemented by Wine: [{}]",
                    okd.join("; "),
                    bad.join("; ")
                ),
            );
        } else {
            rep.fail(
                "firewall-reads",
                format!(
                    "failed: [{}]; answered: [{}]",
                    bad.join("; "),
                    okd.join("; ")
                ),
            );
        }
    }

    /// WFP: a dynamic session (Windows deletes its objects when it closes), Stockade's sublayer,
    /// the offline account's filters for a made-up SID, each read back by key, then deleted.
    /// Adding and reading back is all this shows: no traffic is sent through the filters.
    fn wfp_filters(rep: &mut Report) {
        use stockade_windows::win::wfp::{random_guid, Engine};
        let engine = match Engine::open_dynamic() {
            Ok(e) => {
                rep.ok("wfp-engine", "FwpmEngineOpen0 opened a dynamic session");
                e
            }
            Err(e) if rep.wine => {
                rep.unsupported("wfp-engine", e);
                return rep.unsupported("wfp-filters", "not attempted: no engine session (FwpmEngineOpen0 above); the filter plan is tested on Linux (wfp::tests)");
            }
            Err(e) => return rep.fail("wfp-engine", e),
        };
        let sid = Sid::capability_from_random(random::bytes::<16>().unwrap_or([7; 16]));
        let filters = stockade_windows::wfp::offline_filters(&sid, &[3128]);
        let r = (|| -> Result<String, String> {
            let sub = random_guid().map_err(|e| e.to_string())?;
            engine
                .add_sublayer(&sub, "Stockade selftest", false)
                .map_err(|e| e.to_string())?;
            let mut keys = Vec::new();
            for f in &filters {
                keys.push(engine.add_filter(&sub, f).map_err(|e| e.to_string())?);
            }
            for (k, f) in keys.iter().zip(&filters) {
                match engine.read_filter(k).map_err(|e| e.to_string())? {
                    Some(back) if back.matches(f) => {}
                    other => return Err(format!("{}: read back {other:?}", f.name)),
                }
            }
            for k in &keys {
                engine.delete_filter(k).map_err(|e| e.to_string())?;
                if engine.read_filter(k).map_err(|e| e.to_string())?.is_some() {
                    return Err("a deleted filter is still found".into());
                }
            }
            engine.delete_sublayer(&sub).map_err(|e| e.to_string())?;
            Ok(format!(
                "FwpmSubLayerAdd0, {} x FwpmFilterAdd0 (ALE_USER_ID = {sid}, permit loopback tcp 3128, block the rest in/out), each read back by FwpmFilterGetByKey0 (layer, weight, action, conditions) and deleted; no traffic was sent through them",
                filters.len()
            ))
        })();
        match r {
            Ok(d) if rep.wine => rep.unsupported(
                "wfp-filters",
                format!("{d} -- Wine stored them but filters nothing"),
            ),
            Ok(d) => rep.ok("wfp-filters", d),
            Err(e) if rep.wine => rep.unsupported("wfp-filters", e),
            Err(e) => rep.fail("wfp-filters", e),
        }
    }

    fn elevated_runner_paths(rep: &mut Report) {
        use stockade_windows::elevated::{desktop_sddl, run_token, JOB_UI_LIMITS};
        use stockade_windows::win::desktop::Desktop;
        let cap = Sid::capability_from_random(random::bytes::<16>().unwrap_or([5; 16]));
        let root = WinPath::parse(&std::env::temp_dir().to_string_lossy()).ok();
        let Some(root) = root else {
            rep.fail("elevated-runner-token", "temp dir is not a Windows path");
            return;
        };
        let plan = run_token(&[(root, cap.clone())]);
        match token::create_restricted(&plan).map_err(|e| e.to_string()).and_then(|t| {
            wsid::token_restricted_sids(t.as_handle()).map_err(|e| e.to_string())
        }) {
            Ok(sids) if sids.contains(&cap) && sids.contains(&Sid::everyone()) && sids.len() == 4 => rep.ok(
                "elevated-runner-token",
                format!("CreateRestrictedToken(WRITE_RESTRICTED) for the command: restricting SIDs read back {sids:?} (capability, logon, run, Everyone){}", if rep.wine { "; Wine does not enforce them" } else { "" }),
            ),
            Ok(sids) if rep.wine => rep.unsupported("elevated-runner-token", format!("restricting SIDs read back as {sids:?}")),
            Ok(sids) => rep.fail("elevated-runner-token", format!("restricting SIDs read back as {sids:?}")),
            Err(e) if rep.wine => rep.unsupported("elevated-runner-token", format!("CreateRestrictedToken(WRITE_RESTRICTED) with the runner's token plan ran, but Wine cannot report restricting SIDs: {e}")),
            Err(e) => rep.fail("elevated-runner-token", e),
        }
        let own = token::own_token().map_err(|e| e.to_string());
        let ids = own.and_then(|t| {
            Ok((
                wsid::token_user(t.as_handle()).map_err(|e| e.to_string())?,
                wsid::token_logon_sid(t.as_handle()).map_err(|e| e.to_string())?,
            ))
        });
        match ids
            .and_then(|(u, l)| Desktop::create(&desktop_sddl(&u, &l)).map_err(|e| e.to_string()))
        {
            Ok(d) => rep.ok(
                "per-run-desktop",
                format!(
                    "CreateDesktopW made {}{}",
                    d.full_name,
                    if rep.wine {
                        " (Wine does not isolate desktops: creation only)"
                    } else {
                        ""
                    }
                ),
            ),
            Err(e) if rep.wine => rep.unsupported("per-run-desktop", e),
            Err(e) => rep.fail("per-run-desktop", e),
        }
        match Job::new(&Default::default())
            .map_err(|e| e.to_string())
            .and_then(|j| {
                j.restrict_ui().map_err(|e| e.to_string())?;
                j.ui_restrictions().map_err(|e| e.to_string())
            }) {
            Ok(v) if v == JOB_UI_LIMITS && rep.wine => rep.unsupported(
                "job-ui-limits",
                format!("set and read back {v:#x}, but Wine does not enforce JOB_OBJECT_UILIMIT_*"),
            ),
            Ok(v) if v == JOB_UI_LIMITS => rep.ok(
                "job-ui-limits",
                format!("JOB_OBJECT_UILIMIT_* {v:#x} set and read back"),
            ),
            Ok(v) => rep.fail(
                "job-ui-limits",
                format!("read back {v:#x}, want {JOB_UI_LIMITS:#x}"),
            ),
            Err(e) if rep.wine => rep.unsupported("job-ui-limits", e),
            Err(e) => rep.fail("job-ui-limits", e),
        }
    }

    fn runner_protocol(rep: &mut Report) {
        use stockade_windows::elevated::RunnerRequest;
        use stockade_windows::win::runner::run_via_runner;
        let dir = std::env::temp_dir().join(format!("stockade-runner-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let me = token::own_token()
            .ok()
            .and_then(|t| wsid::token_user(t.as_handle()).ok());
        let exe = std::env::current_exe().unwrap_or_default();
        // The command's token is write-restricted to a capability granted on `dir` only.
        let dir_cap = Sid::capability_from_random(random::bytes::<16>().unwrap_or([6; 16]));
        let Ok(dir_path) = WinPath::parse(&dir.to_string_lossy()) else {
            rep.fail("runner-protocol", "temp dir is not a Windows path");
            return;
        };
        if let Err(e) = acl::apply(&stockade_windows::ace::PathAces {
            path: dir_path.clone(),
            kind: Kind::Dir,
            aces: vec![stockade_windows::ace::Ace::allow(
                dir_cap.clone(),
                stockade_windows::ace::mask::SANDBOX_MODIFY,
                Inherit::TREE,
            )],
            reason: "runner selftest".into(),
        }) {
            rep.fail("runner-protocol", e);
            return;
        }
        let (Some(me), Ok(outer)) = (me, Job::new(&Default::default())) else {
            rep.fail(
                "runner-protocol",
                "cannot read the caller's SID or create a job",
            );
            return;
        };
        let request = RunnerRequest {
            command_line: command_line(
                "cmd.exe",
                &["/c".into(), "echo via-runner> runner-out.txt".into()],
            ),
            cwd: dir.to_string_lossy().into_owned(),
            env: std::env::vars().collect(),
            timeout_ms: Some(30_000),
            max_memory: None,
            max_processes: None,
            token: stockade_windows::elevated::run_token(&[(dir_path.clone(), dir_cap.clone())]),
        };
        // Under Wine no account exists; a real host needs `stockade setup` first.
        let account_sid = Sid::capability_from_random(random::bytes::<16>().unwrap_or([4; 16]));
        let r = run_via_runner(
            "StockadeOffline",
            "not-a-real-password",
            &account_sid,
            &me,
            &exe.to_string_lossy(),
            &request,
            &outer,
        );
        let written = std::fs::read_to_string(dir.join("runner-out.txt"))
            .is_ok_and(|t| t.contains("via-runner"));
        match r {
            Ok(reply) if reply.exit_code == Some(0) && written && rep.wine => rep.unsupported(
                "runner-logon",
                "runner started by CreateProcessWithLogonW received the request over the named pipe, ran cmd.exe in its job and replied exit 0 -- but Wine ignored the credentials (no such account), so the logon itself is not verified",
            ),
            Ok(reply) if reply.exit_code == Some(0) && written => rep.ok("runner-protocol", "runner ran the command and replied exit 0"),
            Ok(reply) => rep.fail("runner-protocol", format!("reply {reply:?}, output written: {written}")),
            Err(e) if rep.wine => {
                rep.unsupported("runner-logon", e);
                // Everything but the logon: the runner started directly, same pipe and protocol.
                let direct = (|| -> Result<stockade_windows::elevated::RunnerReply, String> {
                    use stockade_windows::win::runner::{exchange, runner_pipe};
                    let (name, server) = runner_pipe(&account_sid, &me).map_err(|e| e.to_string())?;
                    let args = vec![stockade_windows::elevated::RUNNER_ARG.to_string(), name];
                    let child = process::spawn(None, &command_line(&exe.to_string_lossy(), &args), None, None, process::Stdio::Handles([std::ptr::null_mut(); 3]), &outer).map_err(|e| e.to_string())?;
                    exchange(server, &child.process, &request).map_err(|e| e.to_string())
                })();
                let written = std::fs::read_to_string(dir.join("runner-out.txt")).is_ok_and(|t| t.contains("via-runner"));
                match direct {
                    Ok(reply) if reply.exit_code == Some(0) && written => rep.ok("runner-protocol", "runner (started without logon) connected to the SDDL-protected pipe (client process id checked), built the write-restricted token, a desktop of its own and a UI-limited job, ran cmd.exe there and replied exit 0 (Wine enforces none of the restrictions)"),
                    Ok(reply) => rep.fail("runner-protocol", format!("reply {reply:?}, output written: {written}")),
                    Err(e) => rep.fail("runner-protocol", e),
                }
            }
            Err(e) => rep.note("runner-protocol", format!("{e} (expected without `stockade setup`: the test uses a made-up password)")),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The elevated tier's command token against the elevated tier's claims, on any host: the
    /// runner (started without a logon, so as you; a real host's installed tier runs it as the
    /// sandbox account) builds the write-restricted token of `elevated::run_token` for one
    /// granted directory and starts `--child-report` in it; the child's report (written through
    /// `cmd /c … > file` into the granted directory) says whether it could `mkdir` in the drive
    /// root (what Users / Authenticated Users may do) and write an ungranted directory.
    fn elevated_command_probes(rep: &mut Report) {
        use stockade_windows::win::runner::{exchange, runner_pipe};
        let base = std::env::temp_dir().join(format!("stockade-elev-probe-{}", std::process::id()));
        let (dir, outside) = (base.join("granted"), base.join("outside"));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::create_dir_all(&outside);
        let _ = std::fs::write(outside.join("victim.txt"), "keep\n");
        let me = token::own_token()
            .ok()
            .and_then(|t| wsid::token_user(t.as_handle()).ok());
        let cap = Sid::capability_from_random(random::bytes::<16>().unwrap_or([8; 16]));
        let (Some(me), Ok(dir_path), Ok(outer)) = (
            me,
            WinPath::parse(&dir.to_string_lossy()),
            Job::new(&Default::default()),
        ) else {
            rep.fail(
                "elevated-command-probes",
                "cannot read the caller's SID, the temp path or create a job",
            );
            return;
        };
        if let Err(e) = acl::apply(&stockade_windows::ace::PathAces {
            path: dir_path.clone(),
            kind: Kind::Dir,
            aces: vec![stockade_windows::ace::Ace::allow(
                cap.clone(),
                stockade_windows::ace::mask::SANDBOX_MODIFY,
                Inherit::TREE,
            )],
            reason: "elevated probe".into(),
        }) {
            rep.fail("elevated-command-probes", e);
            return;
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let report = dir.join("report.txt");
        let inner = format!(
            "{} > \"{}\"",
            command_line(
                &exe.to_string_lossy(),
                &[
                    "--child-report".into(),
                    dir.to_string_lossy().into_owned(),
                    outside.to_string_lossy().into_owned(),
                ],
            ),
            report.display()
        );
        let request = stockade_windows::elevated::RunnerRequest {
            command_line: format!("cmd.exe /s /c \"{inner}\""),
            cwd: dir.to_string_lossy().into_owned(),
            env: std::env::vars().collect(),
            timeout_ms: Some(60_000),
            max_memory: None,
            max_processes: None,
            token: stockade_windows::elevated::run_token(&[(dir_path, cap.clone())]),
        };
        let account = Sid::capability_from_random(random::bytes::<16>().unwrap_or([2; 16]));
        let reply = (|| -> Result<stockade_windows::elevated::RunnerReply, String> {
            let (name, server) = runner_pipe(&account, &me).map_err(|e| e.to_string())?;
            let args = vec![stockade_windows::elevated::RUNNER_ARG.to_string(), name];
            let child = process::spawn(
                None,
                &command_line(&exe.to_string_lossy(), &args),
                None,
                None,
                process::Stdio::Handles([std::ptr::null_mut(); 3]),
                &outer,
            )
            .map_err(|e| e.to_string())?;
            exchange(server, &child.process, &request).map_err(|e| e.to_string())
        })();
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        match reply {
            Ok(r) if r.exit_code == Some(0) && !text.is_empty() => {
                let get = |k: &str| {
                    text.lines()
                        .find_map(|l| l.trim_end().strip_prefix(&format!("{k} ")))
                        .unwrap_or("<missing>")
                        .to_string()
                };
                let sids: BTreeSet<Sid> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("restricted-sid "))
                    .filter_map(|x| Sid::parse(x.trim()).ok())
                    .collect();
                let held = sids.contains(&cap) && !sids.contains(&Sid::users());
                rep.expect_denied(
                    "elevated-child-mkdir-drive-root",
                    &get("mkdir-drive-root"),
                    held,
                );
                rep.expect_denied("elevated-child-write-outside", &get("write-outside"), held);
            }
            Ok(r) => rep.fail(
                "elevated-command-probes",
                format!("reply {r:?}, report: {text:?}"),
            ),
            Err(e) => rep.fail("elevated-command-probes", e),
        }
        let _ = std::fs::remove_dir_all(&base);
    }

    fn finish(rep: &Report) -> i32 {
        println!(
            "{} passed, {} failed, {} skipped",
            rep.passed, rep.failed, rep.skipped
        );
        let _ = std::io::stdout().flush();
        i32::from(rep.failed > 0)
    }
}
