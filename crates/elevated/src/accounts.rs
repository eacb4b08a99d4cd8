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

/// Creates a system account: primary group `group`, home `home` (not created by useradd: the
/// caller creates it with the right mode), shell nologin, no password (locked).
pub fn useradd(name: &str, group: &str, home: &std::path::Path) -> Result<(), ToolError> {
    run_create(
        "useradd",
        &[
            "--system",
            "--gid",
            group,
            "--home-dir",
            &home.to_string_lossy(),
            "--no-create-home",
            "--shell",
            NOLOGIN,
            "--comment",
            "Stockade sandbox account",
            name,
        ],
    )
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
