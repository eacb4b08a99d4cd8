//! The elevated tier's installation, as root, through the real CLI: `stockade setup` is
//! idempotent, `setup --check` detects drift and `setup` repairs it, a setup killed at any moment
//! is made consistent by the next one, `stockade doctor` reports the installed tier truthfully
//! (record and broker), and `stockade uninstall` leaves nothing behind.
//!
//! Run: `flock /tmp/stockade-root.lock cargo test -p stockade --test elevated_setup -- --nocapture`

mod elevated;

use elevated::*;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const NOTHING_CHANGED: &str = "already installed; nothing changed";

#[test]
fn setup_check_doctor_uninstall() {
    if !preflight("setup_check_doctor_uninstall") {
        return;
    }
    let mut g = Guard::new();
    let port = ALLOWED_PORT.to_string();

    // --- before: doctor says not installed -------------------------------------------------------
    let d = doctor_elevated();
    assert_eq!(d["installed"], false, "{d:#}");
    assert_eq!(d["available"], false, "{d:#}");
    assert!(
        d["why"].as_str().unwrap_or("").contains("not installed"),
        "{d:#}"
    );
    assert_eq!(check().0, 2, "setup --check before setup: not installed");

    // --- setup: idempotent, drift detected and repaired ---------------------------------------
    let u = add_user(&mut g, USER);
    let (off, on) = (
        format!("stockade-{}-off", u.uid),
        format!("stockade-{}-on", u.uid),
    );
    let r1 = setup(&["--allow-port", &port, "--user", USER]);
    eprintln!("setup #1: {r1:?}");
    assert!(r1
        .iter()
        .any(|c| c.contains(&format!("created account {off}"))));
    assert!(r1
        .iter()
        .any(|c| c.contains(&format!("created account {on}"))));
    let r2 = setup(&[]);
    assert!(
        r2.iter().any(|l| l == NOTHING_CHANGED)
            && r2
                .iter()
                .all(|l| l == NOTHING_CHANGED || l.starts_with("note: ")),
        "second setup changed things: {r2:?}"
    );
    let (code, lines) = check();
    assert_eq!(
        (code, lines.clone()),
        (0, vec!["installed, no drift".into()])
    );
    let group = sh("getent group stockade-sandbox");
    assert!(group.starts_with("stockade-sandbox:"), "{group}");
    let pw = sh(&format!("getent passwd {off}"));
    assert!(
        pw.trim_end()
            .ends_with(&format!(":/var/lib/stockade/home/{off}:/usr/sbin/nologin")),
        "{pw}"
    );
    // The uid lies in the dedicated range (0x70000000..+0x10000), the pair adjacent.
    let (ou, nu) = (uid_of(&off), uid_of(&on));
    assert!(
        (0x7000_0000..0x7001_0000).contains(&ou) && nu == ou + 1,
        "{ou} {nu}"
    );
    // The home is root's, not the account's (a run cannot chmod it).
    let hm = fs::metadata(format!("/var/lib/stockade/home/{off}")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((hm.uid(), hm.mode() & 0o7777), (0, 0o755));
    assert!(
        sh(&format!("getent shadow {off}"))
            .split(':')
            .nth(1)
            .is_some_and(|p| p.starts_with('!') || p == "*"),
        "no password"
    );

    sh("nft flush chain inet stockade output");
    fs::OpenOptions::new()
        .append(true)
        .open("/etc/stockade/stockade.nft")
        .unwrap()
        .write_all(b"# tampered\n")
        .unwrap();
    let (code, items) = check();
    eprintln!("drift: {items:#?}");
    assert_eq!(code, 1);
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        items[0].starts_with("drift: nftables table inet stockade: expected rules missing")
            && items[0].contains("reject"),
        "{items:?}"
    );
    assert!(
        items[1].starts_with("drift: file /etc/stockade/stockade.nft"),
        "{items:?}"
    );
    let r3 = setup(&[]);
    assert!(!r3.iter().any(|l| l == NOTHING_CHANGED), "{r3:?}");
    assert_eq!(check().0, 0, "setup repairs drift");

    // --- one deleted piece at a time: one `setup` converges (record finished, no drift) ---------
    for (what, cmd) in [
        ("userdel of the offline account", format!("userdel {off}")),
        (
            "userdel of both accounts",
            format!("userdel {off} && userdel {on}"),
        ),
        (
            "the nft table",
            "nft delete table inet stockade".to_string(),
        ),
    ] {
        sh(&cmd);
        let (code, items) = check();
        assert_eq!(code, 1, "{what}: drift reported: {items:?}");
        let rep = setup(&[]);
        let (code, items) = check();
        assert_eq!(
            code, 0,
            "{what}: one setup converges: {items:?} (changes {rep:?})"
        );
        let rec = fs::read_to_string(RECORD).unwrap();
        assert!(rec.contains("\"state\": \"installed\""), "{what}: {rec}");
        assert_eq!(uid_of(&off), ou, "{what}: same uid again");
    }
    // The caller's record entries deleted: one `setup --user` adopts the existing accounts.
    let mut rec: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(RECORD).unwrap()).unwrap();
    rec["accounts"].as_array_mut().unwrap().clear();
    fs::write(RECORD, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    let rep = setup(&["--user", USER]);
    let (code, items) = check();
    assert_eq!(
        code, 0,
        "record entries deleted: one setup converges: {items:?} ({rep:?})"
    );
    let rec = fs::read_to_string(RECORD).unwrap();
    assert!(
        rec.contains(&format!("\"uid\": {ou}")) && rec.contains(&off),
        "{rec}"
    );

    // --- doctor: installed; available exactly when the broker answers ----------------------------
    let d = doctor_elevated();
    assert_eq!(d["installed"], true, "{d:#}");
    // No broker runs yet (no systemd here, or its socket unit is not started by the test).
    let reachable = std::os::unix::net::UnixStream::connect(SOCKET).is_ok();
    assert_eq!(d["available"], reachable, "{d:#}");
    if !reachable {
        assert!(
            d["why"]
                .as_str()
                .unwrap_or("")
                .contains("cannot reach the stockade broker"),
            "{d:#}"
        );
    }
    start_broker(&mut g);
    let d = doctor_elevated();
    assert_eq!(d["installed"], true, "{d:#}");
    assert_eq!(d["available"], true, "{d:#}");
    assert!(d["why"].as_str().unwrap_or("").contains(SOCKET), "{d:#}");
    // userdel of the caller's offline account while the broker serves, one `setup`, then a run:
    // the run works (control: before that setup the broker refuses, it would report drift).
    let ws = u.home.join("ws-after-userdel");
    fs::create_dir_all(&ws).unwrap();
    sh(&format!("chown {}:{} {}", u.uid, u.gid, ws.display()));
    let wsr = ws.to_string_lossy().to_string();
    sh(&format!("userdel {off}"));
    let before = run_as(&u, &["--workspace", &wsr], &ws, "echo RAN-AFTER-USERDEL");
    assert!(
        before.code != 0 && !before.stdout.contains("RAN-AFTER-USERDEL"),
        "control: a run with the offline account deleted should be refused: {} {}",
        before.stdout,
        before.stderr
    );
    let rep = setup(&[]);
    let after = run_as(&u, &["--workspace", &wsr], &ws, "echo RAN-AFTER-USERDEL");
    assert!(
        after.code == 0 && after.stdout.contains("RAN-AFTER-USERDEL"),
        "one setup after userdel, then a run: {} {} (setup: {rep:?})",
        after.stdout,
        after.stderr
    );
    g.stop_broker();
    let _ = fs::remove_file(SOCKET);
    let d = doctor_elevated();
    assert_eq!(
        (d["installed"].clone(), d["available"].clone()),
        (true.into(), false.into()),
        "broker stopped: {d:#}"
    );

    // --- kill -9 during setup, then setup again: consistent --------------------------------------
    for delay_ms in [3u64, 15, 40, 90, 160] {
        let u = stockade(&["uninstall"]);
        assert_eq!(u.code, 0, "{u:#?}");
        let mut c = Command::new(BIN)
            .args(["setup", "--allow-port", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL the setup *and* the tools it is running (useradd, nft, ...), like a power cut.
        // SAFETY: kill(2) of the process group we just created for this child.
        unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
        let _ = c.wait();
        let rep = setup(&[]);
        let (code, lines) = check();
        assert_eq!(
            code, 0,
            "after kill -9 at {delay_ms}ms: {lines:?} (changes {rep:?})"
        );
    }
    eprintln!("kill -9 during setup: consistent after re-run (5 delays)");

    // --- uninstall: nothing of stockade left; doctor says not installed ---------------------------
    let rep = stockade(&["uninstall"]);
    eprintln!("uninstall: {}", rep.stdout);
    assert_uninstalled(&rep);
    assert!(!Path::new("/var/lib/stockade").exists() && !Path::new("/etc/stockade").exists());
    assert!(!Path::new("/etc/systemd/system/stockade-broker.socket").exists());
    let d = doctor_elevated();
    assert_eq!(
        (d["installed"].clone(), d["available"].clone()),
        (false.into(), false.into()),
        "after uninstall: {d:#}"
    );
    assert_eq!(check().0, 2, "setup --check after uninstall: not installed");
    drop(g);
}
