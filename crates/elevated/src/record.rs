//! The installation record (`/var/lib/stockade/install.json`) and the pure drift computation.

use crate::accounts::{GroupEntry, PasswdEntry, NOLOGIN};
use crate::fsutil::write_atomic;
use crate::nft::NetConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Mode of a sandbox account's home: owned by root, not writable by the account.
pub const HOME_MODE: u32 = 0o755;

/// Format version of `install.json`.
pub const RECORD_FORMAT: u32 = 1;

/// Whether setup finished. A record in `Installing` state was written *before* the changes it
/// describes, so an interrupted setup (even `kill -9`) is known and is completed by the next run,
/// or undone by `uninstall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Setup started and did not finish.
    Installing,
    /// Setup finished.
    Installed,
}

/// Sandbox account role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// No network except allowed loopback ports.
    Offline,
    /// Unrestricted network.
    Online,
}

impl Role {
    /// Both roles.
    pub const ALL: [Role; 2] = [Role::Offline, Role::Online];
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Offline => "offline",
            Role::Online => "online",
        }
    }
}

/// The group as installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Name.
    pub name: String,
    /// Gid (0 while not yet created).
    pub gid: u32,
    /// Setup created it (so uninstall removes it).
    pub created: bool,
}

/// One sandbox account as installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Role.
    pub role: Role,
    /// Login name.
    pub name: String,
    /// Uid (0 while not yet created).
    pub uid: u32,
    /// Home directory (created by setup, root-owned, mode 0755, empty: the account owns
    /// nothing on the host, so a run cannot change the mode, owner, ACL or times of its home).
    pub home: PathBuf,
    /// Setup created it (so uninstall removes it).
    pub created: bool,
    /// The host user (uid) this account serves: every calling user has a pair of accounts of
    /// their own, so no two users' runs ever share a uid.
    #[serde(default)]
    pub caller: Option<u32>,
}

/// nftables state as installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftRecord {
    /// Table name (family `inet`).
    pub table: String,
    /// The script applied (also the persisted file's content).
    pub ruleset: String,
    /// `nft list table` output right after applying: the reference for drift detection.
    pub listing: String,
}

/// A file setup wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path.
    pub path: PathBuf,
    /// SHA-256 of the content written (symlinks: of the target path).
    pub sha256: String,
    /// A symlink (systemd `enable` link) rather than a regular file.
    #[serde(default)]
    pub symlink: bool,
}

/// `install.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// Record format.
    pub format: u32,
    /// Stockade version that wrote it.
    pub version: String,
    /// Finished or not.
    pub state: RecordState,
    /// Name prefix used for every object.
    pub prefix: String,
    /// The sandbox group.
    pub group: GroupRecord,
    /// The sandbox accounts.
    pub accounts: Vec<AccountRecord>,
    /// Offline-account network configuration.
    pub net: NetConfig,
    /// nftables state (`None` until applied).
    pub nft: Option<NftRecord>,
    /// Files written (nft script, systemd units, enable links).
    pub files: Vec<FileRecord>,
    /// Broker socket path.
    pub socket_path: PathBuf,
}

impl InstallRecord {
    /// The account with this role that serves `caller`.
    pub fn account_for(&self, caller: u32, role: Role) -> Option<&AccountRecord> {
        self.accounts
            .iter()
            .find(|a| a.role == role && a.caller == Some(caller))
    }
    /// The callers that have accounts, sorted.
    pub fn callers(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.accounts.iter().filter_map(|a| a.caller).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
    /// Every offline account's uid, sorted (the nftables rules match each).
    pub fn offline_uids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .accounts
            .iter()
            .filter(|a| a.role == Role::Offline)
            .map(|a| a.uid)
            .collect();
        v.sort_unstable();
        v
    }
}

/// Reads a record; `None` when absent.
pub fn load(path: &Path) -> io::Result<Option<InstallRecord>> {
    match std::fs::read(path) {
        Ok(d) => serde_json::from_slice(&d).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a record atomically (mode 0644: it holds no secret and the CLI reads it unprivileged).
pub fn store(path: &Path, rec: &InstallRecord) -> io::Result<()> {
    let mut d = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
    d.push(b'\n');
    write_atomic(path, &d, 0o644)
}

/// What is observed on the machine, for drift detection.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The group by the recorded name.
    pub group: Option<GroupEntry>,
    /// Accounts by recorded name.
    pub accounts: BTreeMap<String, Option<PasswdEntry>>,
    /// Home directories: (owner uid, permission bits) when they exist.
    pub homes: BTreeMap<PathBuf, Option<(u32, u32)>>,
    /// `nft list table inet <table>` output.
    pub nft_listing: Option<String>,
    /// SHA-256 of each recorded file (symlinks: of their target), `None` if missing.
    pub files: BTreeMap<PathBuf, Option<String>>,
}

/// One difference between the record and the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// What differs.
    pub item: String,
    /// What the record says.
    pub expected: String,
    /// What is there.
    pub observed: String,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.item, self.expected, self.observed
        )
    }
}

fn drift(
    item: impl Into<String>,
    expected: impl Into<String>,
    observed: impl Into<String>,
) -> Drift {
    Drift {
        item: item.into(),
        expected: expected.into(),
        observed: observed.into(),
    }
}

/// Computes every difference between a record and the observed state. Pure.
pub fn diff(rec: &InstallRecord, obs: &Observed, current_version: &str) -> Vec<Drift> {
    let mut out = Vec::new();
    if rec.state != RecordState::Installed {
        out.push(drift(
            "setup",
            "finished",
            "interrupted (re-run `stockade setup` to complete it)",
        ));
    }
    if rec.version != current_version {
        out.push(drift("version", current_version, rec.version.clone()));
    }
    match &obs.group {
        None => out.push(drift(
            format!("group {}", rec.group.name),
            format!("gid {}", rec.group.gid),
            "missing",
        )),
        Some(g) if g.gid != rec.group.gid => out.push(drift(
            format!("group {}", rec.group.name),
            format!("gid {}", rec.group.gid),
            format!("gid {}", g.gid),
        )),
        Some(_) => {}
    }
    for a in &rec.accounts {
        let item = format!("account {}", a.name);
        match obs.accounts.get(&a.name).and_then(|o| o.as_ref()) {
            None => out.push(drift(item, format!("uid {}", a.uid), "missing")),
            Some(p) => {
                if p.uid != a.uid {
                    out.push(drift(
                        format!("{item} uid"),
                        a.uid.to_string(),
                        p.uid.to_string(),
                    ));
                }
                if p.gid != rec.group.gid {
                    out.push(drift(
                        format!("{item} primary gid"),
                        rec.group.gid.to_string(),
                        p.gid.to_string(),
                    ));
                }
                if p.home != a.home {
                    out.push(drift(
                        format!("{item} home"),
                        a.home.display().to_string(),
                        p.home.display().to_string(),
                    ));
                }
                if p.shell != NOLOGIN {
                    out.push(drift(format!("{item} shell"), NOLOGIN, p.shell.clone()));
                }
            }
        }
        match obs.homes.get(&a.home).copied().flatten() {
            None => out.push(drift(
                format!("home {}", a.home.display()),
                "directory",
                "missing",
            )),
            Some((uid, mode)) => {
                if uid != 0 || mode != HOME_MODE {
                    out.push(drift(
                        format!("home {}", a.home.display()),
                        format!("owner 0 mode {HOME_MODE:04o}"),
                        format!("owner {uid} mode {mode:04o}"),
                    ));
                }
            }
        }
    }
    match (&rec.nft, &obs.nft_listing) {
        (None, _) => out.push(drift("nftables table", "applied", "never applied")),
        (Some(n), None) => out.push(drift(
            format!("nftables table inet {}", n.table),
            "present",
            "missing",
        )),
        (Some(n), Some(l)) if normalize(l) != normalize(&n.listing) => {
            let want: Vec<&str> = n
                .listing
                .lines()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let have: Vec<&str> = l.lines().map(str::trim).filter(|s| !s.is_empty()).collect();
            let missing: Vec<&str> = want.iter().filter(|w| !have.contains(w)).copied().collect();
            let extra: Vec<&str> = have.iter().filter(|h| !want.contains(h)).copied().collect();
            out.push(drift(
                format!("nftables table inet {}", n.table),
                format!("rules missing: {missing:?}"),
                format!("unexpected rules: {extra:?}"),
            ));
        }
        _ => {}
    }
    for f in &rec.files {
        match obs.files.get(&f.path).cloned().flatten() {
            None => out.push(drift(
                format!("file {}", f.path.display()),
                "present",
                "missing",
            )),
            Some(h) if h != f.sha256 => out.push(drift(
                format!("file {}", f.path.display()),
                format!("sha256 {}", short(&f.sha256)),
                format!("modified (sha256 {})", short(&h)),
            )),
            Some(_) => {}
        }
    }
    out
}

/// Whether two `nft list` outputs are the same up to whitespace.
pub fn same_listing(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

fn normalize(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> InstallRecord {
        InstallRecord {
            format: RECORD_FORMAT,
            version: "0.1.0".into(),
            state: RecordState::Installed,
            prefix: "stockade".into(),
            group: GroupRecord {
                name: "stockade-sandbox".into(),
                gid: 900,
                created: true,
            },
            accounts: vec![AccountRecord {
                role: Role::Offline,
                name: "stockade-offline".into(),
                uid: 901,
                home: "/var/lib/stockade/home/offline".into(),
                created: true,
                caller: Some(1000),
            }],
            net: NetConfig::default(),
            nft: Some(NftRecord {
                table: "stockade".into(),
                ruleset: "x".into(),
                listing: "table inet stockade {\n\tchain output {\n\t\tA\n\t}\n}\n".into(),
            }),
            files: vec![FileRecord {
                path: "/etc/stockade/stockade.nft".into(),
                sha256: "ab".repeat(32),
                symlink: false,
            }],
            socket_path: "/run/stockade/broker.sock".into(),
        }
    }

    fn matching(r: &InstallRecord) -> Observed {
        let mut o = Observed {
            group: Some(GroupEntry {
                name: r.group.name.clone(),
                gid: r.group.gid,
            }),
            nft_listing: r.nft.as_ref().map(|n| n.listing.clone()),
            ..Default::default()
        };
        for a in &r.accounts {
            o.accounts.insert(
                a.name.clone(),
                Some(PasswdEntry {
                    name: a.name.clone(),
                    uid: a.uid,
                    gid: r.group.gid,
                    home: a.home.clone(),
                    shell: NOLOGIN.into(),
                }),
            );
            o.homes.insert(a.home.clone(), Some((0, HOME_MODE)));
        }
        for f in &r.files {
            o.files.insert(f.path.clone(), Some(f.sha256.clone()));
        }
        o
    }

    #[test]
    fn no_drift_when_equal() {
        let r = rec();
        assert_eq!(diff(&r, &matching(&r), "0.1.0"), vec![]);
    }

    #[test]
    fn every_kind_of_drift_is_named() {
        let r = rec();
        let mut o = matching(&r);
        o.group = None;
        o.accounts.insert("stockade-offline".into(), None);
        o.homes
            .insert(r.accounts[0].home.clone(), Some((r.accounts[0].uid, 0o777)));
        o.nft_listing = Some("table inet stockade {\n\tchain output {\n\t\tB\n\t}\n}\n".into());
        o.files.insert("/etc/stockade/stockade.nft".into(), None);
        let d = diff(&r, &o, "0.1.0");
        let items: Vec<&str> = d.iter().map(|d| d.item.as_str()).collect();
        assert_eq!(
            items,
            vec![
                "group stockade-sandbox",
                "account stockade-offline",
                "home /var/lib/stockade/home/offline",
                "nftables table inet stockade",
                "file /etc/stockade/stockade.nft"
            ]
        );
        assert!(
            d[3].expected.contains("\"A\"") && d[3].observed.contains("\"B\""),
            "{:?}",
            d[3]
        );
    }

    #[test]
    fn account_attribute_drift_and_interrupted_setup() {
        let mut r = rec();
        r.state = RecordState::Installing;
        let mut o = matching(&r);
        if let Some(Some(p)) = o.accounts.get_mut("stockade-offline") {
            p.shell = "/bin/bash".into();
            p.uid = 5;
        }
        o.nft_listing = None;
        let d = diff(&r, &o, "0.2.0");
        let s: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert!(
            s.iter().any(|l| l.starts_with("setup: expected finished")),
            "{s:?}"
        );
        assert!(
            s.iter()
                .any(|l| l == "version: expected 0.2.0, found 0.1.0"),
            "{s:?}"
        );
        assert!(
            s.iter()
                .any(|l| l == "account stockade-offline uid: expected 901, found 5"),
            "{s:?}"
        );
        assert!(s
            .iter()
            .any(|l| l
                == "account stockade-offline shell: expected /usr/sbin/nologin, found /bin/bash"));
        assert!(s
            .iter()
            .any(|l| l == "nftables table inet stockade: expected present, found missing"));
    }

    #[test]
    fn record_roundtrip() {
        let r = rec();
        let j = serde_json::to_string(&r).unwrap();
        let back: InstallRecord = serde_json::from_str(&j).unwrap();
        assert_eq!(r, back);
    }
}
