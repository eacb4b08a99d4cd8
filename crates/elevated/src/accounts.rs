//! System accounts and group, created and removed with the system tools (`groupadd`, `useradd`,
//! `usermod`, `userdel`, `groupdel`), observed with `getent`.

use crate::fsutil::{run_tool_raw, ToolError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The shell given to sandbox accounts: no interactive login.
pub const NOLOGIN: &str = "/usr/sbin/nologin";

/// A `passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
}

/// A `group` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Gid.
    pub gid: u32,
}

/// Parses one `getent passwd` line.
pub fn parse_passwd(line: &str) -> Option<PasswdEntry> {
    let f: Vec<&str> = line.trim_end_matches('\n').split(':').collect();
    if f.len() != 7 {
        return None;
    }
    Some(PasswdEntry {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: PathBuf::from(f[5]),
        shell: f[6].to_string(),
    })
}

/// Parses one `getent group` line.
pub fn parse_group(line: &str) -> Option<GroupEntry> {
    let f: Vec<&str> = line.trim_end_matches('\n').split(':').collect();
    if f.len() != 4 {
        return None;
    }
    Some(GroupEntry {
        name: f[0].to_string(),
        gid: f[2].parse().ok()?,
    })
}

/// Looks up a user by name or uid (`None` when absent).
pub fn getent_passwd(key: &str) -> Result<Option<PasswdEntry>, ToolError> {
    let args = ["passwd", key];
    let o = run_tool_raw("getent", &args)?;
    match o.code {
        0 => Ok(o.stdout.lines().next().and_then(parse_passwd)),
        2 => Ok(None),
        _ => Err(ToolError::failed("getent", &args, &o)),
    }
}

/// Looks up a group by name or gid (`None` when absent).
pub fn getent_group(key: &str) -> Result<Option<GroupEntry>, ToolError> {
    let args = ["group", key];
    let o = run_tool_raw("getent", &args)?;
    match o.code {
        0 => Ok(o.stdout.lines().next().and_then(parse_group)),
        2 => Ok(None),
        _ => Err(ToolError::failed("getent", &args, &o)),
    }
}

/// Exit code of `useradd`/`groupadd` when the name is already in use.
const E_NAME_IN_USE: i32 = 9;

/// Runs a creating tool; "name already in use" counts as success (an interrupted earlier setup's
/// orphaned `useradd` may have finished in the meantime: the caller re-reads the entry).
fn run_create(tool: &str, args: &[&str]) -> Result<(), ToolError> {
    run_shadow_tool(tool, args, &[E_NAME_IN_USE])
}

/// Exit code of the shadow tools when they cannot lock or update the files.
const E_CANT_UPDATE: i32 = 10;

/// Runs a shadow-utils tool; retries for a few seconds while the files are locked (a killed
/// earlier run may leave a lock whose owner is not yet reaped; the tools clear stale locks).
fn run_shadow_tool(tool: &str, args: &[&str], ok_codes: &[i32]) -> Result<(), ToolError> {
    let mut o = run_tool_raw(tool, args)?;
    for _ in 0..30 {
        if !(o.stderr.contains("cannot lock")
            || (o.code == E_CANT_UPDATE && o.stderr.contains("lock")))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        o = run_tool_raw(tool, args)?;
    }
    if o.success || ok_codes.contains(&o.code) {
        return Ok(());
    }
    Err(ToolError::failed(tool, args, &o))
}

/// Creates a system group.
pub fn groupadd(name: &str) -> Result<(), ToolError> {
    run_create("groupadd", &["--system", name])
}

/// First uid of the range the per-caller sandbox accounts are numbered in: 0x70000000. It lies
/// above every range systemd reserves (dynamic users 61184–65519, container ranges up to
/// 1879048191) and below its foreign-uid range (0x7FFE0000…); allocation also skips every
/// `/etc/subuid` and `/etc/subgid` range and every uid already in use.
pub const UID_BASE: u32 = 0x7000_0000;
/// Number of uids in the range (pairs: offline `UID_BASE + 2k`, online `UID_BASE + 2k + 1`).
pub const UID_COUNT: u32 = 0x1_0000;

/// The `(start, count)` ranges of an `/etc/subuid` or `/etc/subgid` file (`name:start:count`
/// lines; comments and malformed lines ignored). Pure.
pub fn parse_subid_ranges(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            (f.len() == 3).then_some(())?;
            Some((f[1].parse().ok()?, f[2].parse().ok()?))
        })
        .collect()
}

/// The first pair `(offline, online)` of uids in the sandbox range for which `taken` says no to
/// both and that lies in none of `subid` ranges. Pure.
pub fn allocate_pair(subid: &[(u64, u64)], taken: &dyn Fn(u32) -> bool) -> Option<(u32, u32)> {
    let in_subid = |u: u32| {
        subid
            .iter()
            .any(|&(s, n)| (u as u64) >= s && (u as u64) < s.saturating_add(n))
    };
    (0..UID_COUNT / 2)
        .map(|k| (UID_BASE + 2 * k, UID_BASE + 2 * k + 1))
        .find(|&(a, b)| !in_subid(a) && !in_subid(b) && !taken(a) && !taken(b))
}

/// The subordinate id ranges configured on this machine (`/etc/subuid` and `/etc/subgid`).
pub fn subid_ranges() -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for f in ["/etc/subuid", "/etc/subgid"] {
        if let Ok(t) = std::fs::read_to_string(f) {
            v.extend(parse_subid_ranges(&t));
        }
    }
    v
}

/// Creates a system account: primary group `group`, uid `uid` (when given), home `home` (not
/// created by useradd: the caller creates it with the right mode), shell nologin, no password
/// (locked), not added to lastlog/faillog (`-l`: the uids are large).
pub fn useradd(
    name: &str,
    group: &str,
    home: &std::path::Path,
    uid: Option<u32>,
) -> Result<(), ToolError> {
    let uid_s = uid.map(|u| u.to_string());
    let home_s = home.to_string_lossy();
    let mut args: Vec<&str> = vec!["--system", "--no-log-init"];
    if let Some(u) = &uid_s {
        args.extend(["--uid", u.as_str()]);
    }
    args.extend([
        "--gid",
        group,
        "--home-dir",
        &home_s,
        "--no-create-home",
        "--shell",
        NOLOGIN,
        "--comment",
        "Stockade sandbox account",
        name,
    ]);
    run_create("useradd", &args)
}

/// Repairs an account's primary group, home and shell.
pub fn usermod(name: &str, group: &str, home: &std::path::Path) -> Result<(), ToolError> {
    run_shadow_tool(
        "usermod",
        &[
            "--gid",
            group,
            "--home",
            &home.to_string_lossy(),
            "--shell",
            NOLOGIN,
            name,
        ],
        &[],
    )
}

/// Removes an account (not its home: the caller removes exactly what it created).
pub fn userdel(name: &str) -> Result<(), ToolError> {
    run_shadow_tool("userdel", &[name], &[])
}

/// Removes a group.
pub fn groupdel(name: &str) -> Result<(), ToolError> {
    run_shadow_tool("groupdel", &[name], &[])
}

/// Whether an observed account matches what setup wants; returns the differences.
pub fn account_differences(
    observed: &PasswdEntry,
    want_gid: u32,
    want_home: &std::path::Path,
) -> Vec<(String, String, String)> {
    let mut d = Vec::new();
    if observed.gid != want_gid {
        d.push((
            "primary gid".into(),
            want_gid.to_string(),
            observed.gid.to_string(),
        ));
    }
    if observed.home != want_home {
        d.push((
            "home".into(),
            want_home.display().to_string(),
            observed.home.display().to_string(),
        ));
    }
    if observed.shell != NOLOGIN {
        d.push(("shell".into(), NOLOGIN.to_string(), observed.shell.clone()));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group() {
        let p = parse_passwd("stockade-offline:x:998:997:Stockade:/var/lib/stockade/home/offline:/usr/sbin/nologin\n")
            .unwrap();
        assert_eq!(p.uid, 998);
        assert_eq!(p.gid, 997);
        assert_eq!(p.home, PathBuf::from("/var/lib/stockade/home/offline"));
        assert_eq!(p.shell, NOLOGIN);
        assert!(parse_passwd("garbage").is_none());
        let g = parse_group("stockade-sandbox:x:997:\n").unwrap();
        assert_eq!(
            g,
            GroupEntry {
                name: "stockade-sandbox".into(),
                gid: 997
            }
        );
    }

    #[test]
    fn allocation_skips_subid_ranges_and_taken_uids() {
        let sub = parse_subid_ranges("# c\nalice:100000:65536\nbob:1879048192:3\nbad\n");
        assert_eq!(sub, vec![(100000, 65536), (UID_BASE as u64, 3)]);
        // UID_BASE..+3 is a subuid range: pairs 0 and 1 are out; UID_BASE+4 is taken: pair 2 out.
        let p = allocate_pair(&sub, &|u| u == UID_BASE + 4);
        assert_eq!(p, Some((UID_BASE + 6, UID_BASE + 7)));
        assert!(UID_BASE as u64 > 65519 && (UID_BASE + UID_COUNT) < 0x7FFE_0000);
        assert_eq!(
            allocate_pair(&[(UID_BASE as u64, UID_COUNT as u64)], &|_| false),
            None
        );
    }

    #[test]
    fn differences_are_specific() {
        let p = PasswdEntry {
            name: "a".into(),
            uid: 1,
            gid: 2,
            home: "/h".into(),
            shell: "/bin/bash".into(),
        };
        let d = account_differences(&p, 3, std::path::Path::new("/h"));
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0, "primary gid");
        assert_eq!(d[1], ("shell".into(), NOLOGIN.into(), "/bin/bash".into()));
    }
}
