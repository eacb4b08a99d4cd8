//! `stockade setup`, `stockade setup --check` and `stockade uninstall`.
//!
//! Setup converges the machine to the wanted state from whatever it finds (nothing, a finished
//! install, an interrupted one, a drifted one) and reports what it changed: a second run changes
//! nothing. Before creating anything it records the intent (`state: installing`, `created: true`)
//! atomically, so a `kill -9` at any point leaves a record that either the next setup completes
//! or uninstall undoes.

use crate::accounts::{self, GroupEntry};
use crate::fsutil::{self, ToolError};
use crate::nft::{self, NetConfig};
use crate::record::{
    self, AccountRecord, Drift, FileRecord, GroupRecord, InstallRecord, NftRecord, Observed,
    RecordState, Role, RECORD_FORMAT,
};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Version written in records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where and how to install. [`SetupOptions::default`] is the production layout.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// Prefix of every name: accounts `<prefix>-<caller uid>-off`/`-on`, group
    /// `<prefix>-sandbox`, nft table `inet <prefix>`, units `<prefix>-*.service`.
    pub prefix: String,
    /// State directory: `install.json`, `grants.json`, account homes under `home/`.
    pub state_dir: PathBuf,
    /// Where the persisted nft script goes.
    pub config_dir: PathBuf,
    /// Where systemd units go.
    pub systemd_dir: PathBuf,
    /// Offline-account network configuration; `None` keeps the installed one (or the default on
    /// a fresh install), so `stockade setup` run to repair never silently drops allowed ports.
    pub net: Option<NetConfig>,
    /// The `stockade` executable the broker unit runs.
    pub broker_exe: PathBuf,
    /// Broker socket path.
    pub socket_path: PathBuf,
    /// Callers (host uids) to give their pair of sandbox accounts now (`setup --user NAME`; the
    /// broker adds a caller's pair on their first run). Pairs already installed are kept.
    pub users: Vec<u32>,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            prefix: "stockade".into(),
            state_dir: "/var/lib/stockade".into(),
            config_dir: "/etc/stockade".into(),
            systemd_dir: "/etc/systemd/system".into(),
            net: None,
            broker_exe: "/usr/local/bin/stockade".into(),
            socket_path: "/run/stockade/broker.sock".into(),
            users: Vec::new(),
        }
    }
}

impl SetupOptions {
    /// `install.json`.
    pub fn record_path(&self) -> PathBuf {
        self.state_dir.join("install.json")
    }
    /// `grants.json`.
    pub fn grants_path(&self) -> PathBuf {
        self.state_dir.join("grants.json")
    }
    fn group_name(&self) -> String {
        format!("{}-sandbox", self.prefix)
    }
    /// The account of `caller` for `role`: `<prefix>-<uid>-off` / `<prefix>-<uid>-on`.
    pub fn account_name(&self, caller: u32, role: Role) -> String {
        let r = match role {
            Role::Offline => "off",
            Role::Online => "on",
        };
        format!("{}-{caller}-{r}", self.prefix)
    }
    fn home(&self, name: &str) -> PathBuf {
        self.state_dir.join("home").join(name)
    }
    fn table(&self) -> String {
        self.prefix.replace('-', "_")
    }
    fn nft_file(&self) -> PathBuf {
        self.config_dir.join(format!("{}.nft", self.prefix))
    }
}

/// What setup did. Empty `changes` means the machine already matched.
#[derive(Debug, Clone, Default)]
pub struct SetupReport {
    /// One line per change made.
    pub changes: Vec<String>,
    /// The record now on disk.
    pub record: Option<InstallRecord>,
    /// Notes (e.g. systemd not running: units installed but not started).
    pub notes: Vec<String>,
}

/// `setup --check` result.
#[derive(Debug, Clone, Default)]
pub struct DriftReport {
    /// Not installed at all.
    pub installed: bool,
    /// Every difference.
    pub drift: Vec<Drift>,
}

impl SetupReport {
    /// What `stockade setup` prints, a line each.
    pub fn lines(&self) -> Vec<String> {
        let none = self
            .changes
            .is_empty()
            .then(|| "already installed; nothing changed".to_string());
        none.into_iter()
            .chain(self.changes.iter().cloned())
            .chain(self.notes.iter().map(|n| format!("note: {n}")))
            .collect()
    }
}

impl DriftReport {
    /// What `stockade setup --check` prints, a line each, and its exit status: 0 installed as
    /// recorded, 1 drift, 2 not installed.
    pub fn lines(&self) -> (Vec<String>, u8) {
        if !self.installed {
            (vec!["not installed".into()], 2)
        } else if self.drift.is_empty() {
            (vec!["installed, no drift".into()], 0)
        } else {
            (
                self.drift.iter().map(|d| format!("drift: {d}")).collect(),
                1,
            )
        }
    }
}

/// What uninstall did.
#[derive(Debug, Clone, Default)]
pub struct UninstallReport {
    /// One line per removal.
    pub removed: Vec<String>,
    /// Things that could not be removed, with why.
    pub problems: Vec<String>,
}

/// Setup failures.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Not root.
    #[error("setup must run as root (try `sudo stockade setup`)")]
    NotRoot,
    /// Bad option.
    #[error("invalid setup option: {0}")]
    InvalidOption(String),
    /// A system tool failed.
    #[error("{0}")]
    Tool(#[from] ToolError),
    /// File I/O failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The record is unreadable.
    #[error(
        "installation record {path} is unreadable: {source}; fix or remove it, then re-run setup"
    )]
    Record {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// An object exists that setup did not create and does not match.
    #[error("{0}")]
    Conflict(String),
}

/// Check failures.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A system tool failed.
    #[error("{0}")]
    Tool(#[from] ToolError),
    /// The record is unreadable.
    #[error("installation record {path} is unreadable: {source}")]
    Record {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// Uninstall failures (individual removal problems are reported, not fatal).
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    /// Not root.
    #[error("uninstall must run as root (try `sudo stockade uninstall`)")]
    NotRoot,
    /// The record is unreadable.
    #[error("installation record {path} is unreadable: {source}; nothing was removed")]
    Record {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Lock failure.
    #[error("could not lock {path}: {source}")]
    Lock {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SetupError + 'a {
    move |source| SetupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// An exclusive `flock` on `<state_dir>/.lock`, held for the duration of setup/uninstall.
pub(crate) struct StateLock(#[allow(dead_code)] fs::File);

pub(crate) fn lock_state(state_dir: &Path) -> io::Result<StateLock> {
    fs::create_dir_all(state_dir)?;
    fs::set_permissions(state_dir, fs::Permissions::from_mode(0o755))?;
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join(".lock"))?;
    stockade_sys::flock_exclusive(std::os::fd::AsRawFd::as_raw_fd(&f))?;
    Ok(StateLock(f))
}

fn unit_files(opts: &SetupOptions) -> Vec<(PathBuf, String)> {
    let p = &opts.prefix;
    let table = opts.table();
    let nft_file = opts.nft_file();
    vec![
        (
            opts.systemd_dir.join(format!("{p}-nft.service")),
            format!(
                "# Managed by `stockade setup`.\n[Unit]\nDescription=Stockade nftables rules (offline sandbox account)\n\
                 DefaultDependencies=no\nWants=network-pre.target\nBefore=network-pre.target\nAfter=nftables.service\n\n\
                 [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/sbin/nft -f {}\n\
                 ExecStop=/usr/sbin/nft delete table inet {table}\n\n[Install]\nWantedBy=multi-user.target\n",
                nft_file.display()
            ),
        ),
        (
            opts.systemd_dir.join(format!("{p}-broker.socket")),
            format!(
                "# Managed by `stockade setup`.\n[Unit]\nDescription=Stockade elevated-tier broker socket\n\n\
                 [Socket]\nListenStream={}\nSocketMode=0666\nRemoveOnStop=yes\n\n[Install]\nWantedBy=sockets.target\n",
                opts.socket_path.display()
            ),
        ),
        (
            opts.systemd_dir.join(format!("{p}-broker.service")),
            format!(
                "# Managed by `stockade setup`.\n[Unit]\nDescription=Stockade elevated-tier broker\n\
                 Requires={p}-broker.socket\nAfter={p}-broker.socket\n\n[Service]\nExecStart={} broker --socket-activated\n\
                 KillMode=control-group\n",
                opts.broker_exe.display()
            ),
        ),
    ]
}

fn enable_links(opts: &SetupOptions) -> Vec<(PathBuf, PathBuf)> {
    let p = &opts.prefix;
    vec![
        (
            opts.systemd_dir
                .join("multi-user.target.wants")
                .join(format!("{p}-nft.service")),
            opts.systemd_dir.join(format!("{p}-nft.service")),
        ),
        (
            opts.systemd_dir
                .join("sockets.target.wants")
                .join(format!("{p}-broker.socket")),
            opts.systemd_dir.join(format!("{p}-broker.socket")),
        ),
    ]
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn validate_opts(opts: &SetupOptions) -> Result<(), SetupError> {
    if !nft::valid_table_name(&opts.table()) || opts.prefix.len() > 20 {
        return Err(SetupError::InvalidOption(format!(
            "prefix {:?} must be lowercase letters, digits, '-' or '_', start with a letter, at most 20 chars",
            opts.prefix
        )));
    }
    for (what, p) in [
        ("state_dir", &opts.state_dir),
        ("config_dir", &opts.config_dir),
        ("systemd_dir", &opts.systemd_dir),
    ] {
        if !p.is_absolute() {
            return Err(SetupError::InvalidOption(format!(
                "{what} {} must be absolute",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Installs or repairs the elevated tier. Idempotent: a second run reports no changes.
///
/// In order: the intent is recorded ([`intended_record`], pure) before anything is created, then
/// the group ([`ensure_group`]), the accounts and homes ([`ensure_accounts`]), the nftables table
/// ([`ensure_nft`]), the systemd units ([`ensure_units`]), and last the finished record.
pub fn setup(opts: &SetupOptions) -> Result<SetupReport, SetupError> {
    validate_opts(opts)?;
    if stockade_sys::users::geteuid() != 0 {
        return Err(SetupError::NotRoot);
    }
    let _lock = lock_state(&opts.state_dir).map_err(io_err("lock", &opts.state_dir))?;
    for d in [&opts.state_dir, &opts.config_dir, &opts.systemd_dir] {
        remove_tmp_leftovers(d, &opts.prefix);
    }
    let rpath = opts.record_path();
    let old = record::load(&rpath).map_err(|source| SetupError::Record {
        path: rpath.clone(),
        source,
    })?;
    let mut report = SetupReport::default();

    // 1. Intent: record what we are about to create before creating it.
    let group_name = opts.group_name();
    let obs_group = accounts::getent_group(&group_name)?;
    let pairs = caller_pairs(opts, old.as_ref())?;
    let mut obs_uids = Vec::new();
    for (caller, _, _) in &pairs {
        for role in Role::ALL {
            let e = accounts::getent_passwd(&opts.account_name(*caller, role))?;
            obs_uids.push(e.map(|p| p.uid));
        }
    }
    let mut rec = intended_record(
        opts,
        old.as_ref(),
        obs_group.as_ref().map(|g| g.gid),
        &pairs,
        &obs_uids,
    )?;
    let will_create = rec.group.gid == 0
        || rec
            .accounts
            .iter()
            .any(|a| old.as_ref().is_none_or(|o| !o.accounts.contains(a)));
    if old.is_none() || will_create {
        record::store(&rpath, &rec).map_err(io_err("write", &rpath))?;
    }

    // 2. Group; 3. accounts and homes.
    let group = ensure_group(&group_name, obs_group, &mut report)?;
    rec.group.gid = group.gid;
    ensure_accounts(&mut rec, &group_name, group.gid, &mut report)?;

    // 4. nftables; 5. systemd units.
    let mut files = Vec::new();
    rec.nft = Some(ensure_nft(opts, &rec, &mut files, &mut report)?);
    ensure_units(opts, &mut files, &mut report)?;

    // Keep files recorded earlier that we no longer manage? No: the record lists exactly ours.
    rec.files = files;
    rec.state = RecordState::Installed;
    if old.as_ref() != Some(&rec) {
        record::store(&rpath, &rec).map_err(io_err("write", &rpath))?;
        report
            .changes
            .push(format!("wrote installation record {}", rpath.display()));
    }
    report.record = Some(rec);
    Ok(report)
}

/// The callers whose accounts the record must hold, each with its `(offline, online)` uids: the
/// pairs already recorded, then one newly allocated pair ([`accounts::allocate_pair`]) for each
/// caller in `opts.users` without one.
fn caller_pairs(
    opts: &SetupOptions,
    old: Option<&InstallRecord>,
) -> Result<Vec<(u32, u32, u32)>, SetupError> {
    let mut pairs: Vec<(u32, u32, u32)> = Vec::new();
    let mut callers: Vec<u32> = old.map(|o| o.callers()).unwrap_or_default();
    for u in &opts.users {
        if !callers.contains(u) {
            callers.push(*u);
        }
    }
    let subid = accounts::subid_ranges();
    for c in callers {
        let recorded = |role| {
            old.and_then(|o| o.account_for(c, role))
                .map(|a| a.uid)
                .filter(|u| *u != 0)
        };
        if let (Some(a), Some(b)) = (recorded(Role::Offline), recorded(Role::Online)) {
            pairs.push((c, a, b));
            continue;
        }
        // Accounts of ours whose record entry was lost: adopted, not allocated anew.
        let existing = |role| -> Result<Option<u32>, SetupError> {
            Ok(accounts::getent_passwd(&opts.account_name(c, role))?
                .map(|p| p.uid)
                .filter(|u| in_sandbox_range(*u)))
        };
        if let (Some(a), Some(b)) = (existing(Role::Offline)?, existing(Role::Online)?) {
            pairs.push((c, a, b));
            continue;
        }
        let used: Vec<u32> = pairs.iter().flat_map(|p| [p.1, p.2]).collect();
        let taken = |u: u32| {
            used.contains(&u)
                || old.is_some_and(|o| o.accounts.iter().any(|a| a.uid == u))
                || !matches!(stockade_sys::users::getpwuid(u), Ok(None))
        };
        let (a, b) = accounts::allocate_pair(&subid, &taken).ok_or_else(|| {
            SetupError::Conflict(format!(
                "no free pair of uids left in the sandbox range {}..{} (clear of /etc/subuid, /etc/subgid and existing accounts)",
                accounts::UID_BASE,
                accounts::UID_BASE as u64 + accounts::UID_COUNT as u64
            ))
        })?;
        pairs.push((c, a, b));
    }
    Ok(pairs)
}

/// Whether `uid` lies in the range the sandbox accounts are numbered in. Pure.
fn in_sandbox_range(uid: u32) -> bool {
    (accounts::UID_BASE..accounts::UID_BASE.saturating_add(accounts::UID_COUNT)).contains(&uid)
}

/// The record of what setup is about to create, from the options, the previous record and what
/// exists now (`obs_gid`: the group's gid; `pairs`: each caller with the uids of its offline and
/// online accounts; `obs_uids`: the uid each of those accounts' names has now, two per pair in
/// [`Role::ALL`] order). An account name that exists and that setup did not create, or whose
/// uid is not the one allocated, is a conflict. Pure.
pub fn intended_record(
    opts: &SetupOptions,
    old: Option<&InstallRecord>,
    obs_gid: Option<u32>,
    pairs: &[(u32, u32, u32)],
    obs_uids: &[Option<u32>],
) -> Result<InstallRecord, SetupError> {
    let net = opts
        .net
        .clone()
        .or_else(|| old.map(|o| o.net.clone()))
        .unwrap_or_default();
    let mut rec = InstallRecord {
        format: RECORD_FORMAT,
        version: VERSION.into(),
        state: RecordState::Installing,
        prefix: opts.prefix.clone(),
        group: GroupRecord {
            name: opts.group_name(),
            gid: obs_gid.unwrap_or(0),
            created: old.is_some_and(|o| o.group.created) || obs_gid.is_none(),
        },
        accounts: Vec::new(),
        net,
        nft: old.and_then(|o| o.nft.clone()),
        files: old.map(|o| o.files.clone()).unwrap_or_default(),
        socket_path: opts.socket_path.clone(),
    };
    let mut obs = obs_uids.iter().copied();
    for &(caller, off, on) in pairs {
        for (role, uid) in [(Role::Offline, off), (Role::Online, on)] {
            let name = opts.account_name(caller, role);
            if name.len() > 32 {
                return Err(SetupError::InvalidOption(format!(
                    "account name {name} is longer than 32 characters; choose a shorter --prefix"
                )));
            }
            let was_ours = old
                .and_then(|o| o.account_for(caller, role))
                .is_some_and(|a| a.created && a.name == name);
            if let Some(Some(have)) = obs.next() {
                // Ours: recorded, or (record entry lost) named ours with a uid of our range.
                let adopted = have == uid && in_sandbox_range(uid);
                if !(was_ours || adopted) || have != uid {
                    return Err(SetupError::Conflict(format!(
                        "user {name} exists (uid {have}) and was not created by stockade setup with uid {uid}; remove it or choose another --prefix"
                    )));
                }
            }
            rec.accounts.push(AccountRecord {
                role,
                home: opts.home(&name),
                name,
                uid,
                created: true,
                caller: Some(caller),
            });
        }
    }
    Ok(rec)
}

/// The sandbox group, created when missing.
fn ensure_group(
    group_name: &str,
    obs: Option<GroupEntry>,
    report: &mut SetupReport,
) -> Result<GroupEntry, SetupError> {
    match obs {
        Some(g) => Ok(g),
        None => {
            accounts::groupadd(group_name)?;
            report.changes.push(format!("created group {group_name}"));
            retry(|| accounts::getent_group(group_name))?.ok_or_else(|| {
                SetupError::Conflict(format!("group {group_name} missing right after groupadd"))
            })
        }
    }
}

/// Each sandbox account, created or repaired, and its home; the record gets their uids.
fn ensure_accounts(
    rec: &mut InstallRecord,
    group_name: &str,
    gid: u32,
    report: &mut SetupReport,
) -> Result<(), SetupError> {
    for a in rec.accounts.iter_mut() {
        let home = a.home.clone();
        let p = match accounts::getent_passwd(&a.name)? {
            Some(p) => {
                let d = accounts::account_differences(&p, gid, &home);
                if !d.is_empty() {
                    accounts::usermod(&a.name, group_name, &home)?;
                    report
                        .changes
                        .push(format!("repaired account {}: {:?}", a.name, d));
                }
                p
            }
            None => {
                accounts::useradd(&a.name, group_name, &home, Some(a.uid))?;
                report.changes.push(format!("created account {}", a.name));
                retry(|| accounts::getent_passwd(&a.name))?.ok_or_else(|| {
                    SetupError::Conflict(format!("user {} missing right after useradd", a.name))
                })?
            }
        };
        if p.uid != a.uid {
            return Err(SetupError::Conflict(format!(
                "account {} has uid {}, not the allocated {}; remove it (`userdel {}`) and re-run setup",
                a.name, p.uid, a.uid, a.name
            )));
        }
        ensure_home(&home, report)?;
    }
    Ok(())
}

/// nftables: persists the script, applies it atomically unless the table already lists what
/// was recorded, and returns the record of the resulting listing.
fn ensure_nft(
    opts: &SetupOptions,
    rec: &InstallRecord,
    files: &mut Vec<FileRecord>,
    report: &mut SetupReport,
) -> Result<NftRecord, SetupError> {
    let offline_uids = rec.offline_uids();
    if offline_uids.contains(&0) {
        return Err(SetupError::Conflict(
            "an offline account resolved to uid 0; refusing to continue".into(),
        ));
    }
    let table = opts.table();
    let script = nft::ruleset(&table, &offline_uids, &rec.net);
    let nft_file = opts.nft_file();
    ensure_file(&nft_file, &script, 0o644, files, report)?;
    let listing_before = nft::list_table(&table)?;
    let expected_listing = rec
        .nft
        .as_ref()
        .filter(|n| n.ruleset == script)
        .map(|n| n.listing.clone());
    let listing = match (&listing_before, &expected_listing) {
        (Some(now), Some(want)) if now == want => now.clone(),
        _ => {
            nft::apply(&nft_file)?;
            report
                .changes
                .push(format!("applied nftables table inet {table}"));
            nft::list_table(&table)?.ok_or_else(|| {
                SetupError::Conflict(format!("table inet {table} missing after nft -f"))
            })?
        }
    };
    Ok(NftRecord {
        table,
        ruleset: script,
        listing,
    })
}

/// systemd units and their enable links (files only; the socket restarted if systemd runs and
/// anything changed, otherwise a note on how to start the broker).
fn ensure_units(
    opts: &SetupOptions,
    files: &mut Vec<FileRecord>,
    report: &mut SetupReport,
) -> Result<(), SetupError> {
    let before = report.changes.len();
    for (path, content) in unit_files(opts) {
        ensure_file(&path, &content, 0o644, files, report)?;
    }
    for (link, target) in enable_links(opts) {
        ensure_symlink(&link, &target, files, report)?;
    }
    if systemd_running() {
        // Only a changed unit needs systemd to reload (a new caller's accounts do not: the broker
        // may be the one running this setup).
        if report.changes.len() > before {
            fsutil::run_tool("systemctl", &["daemon-reload"])?;
            fsutil::run_tool(
                "systemctl",
                &["restart", &format!("{}-broker.socket", opts.prefix)],
            )?;
        }
    } else {
        report.notes.push(format!(
            "systemd is not running: units were installed and enabled for the next boot; start the broker in the foreground with `stockade broker` (socket {})",
            opts.socket_path.display()
        ));
    }
    Ok(())
}

/// Whether `name` is a temporary file left by an interrupted [`fsutil::write_atomic`] of one of
/// our files (`.<name>.tmp.<pid>`). Pure.
pub fn is_our_tmp_leftover(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((base, pid)) = rest.rsplit_once(".tmp.") else {
        return false;
    };
    pid.chars().all(|c| c.is_ascii_digit())
        && !pid.is_empty()
        && (base == "install.json" || base == "grants.json" || base.starts_with(prefix))
}

fn remove_tmp_leftovers(dir: &Path, prefix: &str) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| is_our_tmp_leftover(n, prefix))
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Re-reads an entry a few times: an orphaned tool of an interrupted setup may still be writing it.
fn retry<T>(mut f: impl FnMut() -> Result<Option<T>, ToolError>) -> Result<Option<T>, ToolError> {
    for _ in 0..20 {
        if let Some(v) = f()? {
            return Ok(Some(v));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    f()
}

/// A sandbox account's home: root-owned, mode [`record::HOME_MODE`], so the account can change
/// neither its mode nor its owner, ACL or times.
fn ensure_home(home: &Path, report: &mut SetupReport) -> Result<(), SetupError> {
    let mode = record::HOME_MODE;
    match fs::symlink_metadata(home) {
        Ok(m) if m.is_dir() => {
            if m.uid() != 0 || m.gid() != 0 || m.mode() & 0o7777 != mode {
                std::os::unix::fs::lchown(home, Some(0), Some(0)).map_err(io_err("chown", home))?;
                fs::set_permissions(home, fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", home))?;
                report
                    .changes
                    .push(format!("repaired owner/mode of {}", home.display()));
            }
        }
        Ok(_) => {
            return Err(SetupError::Conflict(format!(
                "{} exists and is not a directory; remove it",
                home.display()
            )))
        }
        Err(_) => {
            fs::create_dir_all(home).map_err(io_err("create", home))?;
            std::os::unix::fs::lchown(home, Some(0), Some(0)).map_err(io_err("chown", home))?;
            fs::set_permissions(home, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", home))?;
            report
                .changes
                .push(format!("created home {}", home.display()));
        }
    }
    Ok(())
}

fn ensure_file(
    path: &Path,
    content: &str,
    mode: u32,
    files: &mut Vec<FileRecord>,
    report: &mut SetupReport,
) -> Result<(), SetupError> {
    let want = fsutil::sha256_hex(content.as_bytes());
    let have = fsutil::file_sha256(path).map_err(io_err("read", path))?;
    if have.as_deref() != Some(want.as_str()) {
        fsutil::write_atomic(path, content.as_bytes(), mode).map_err(io_err("write", path))?;
        report.changes.push(format!("wrote {}", path.display()));
    }
    files.push(FileRecord {
        path: path.to_path_buf(),
        sha256: want,
        symlink: false,
    });
    Ok(())
}

fn ensure_symlink(
    link: &Path,
    target: &Path,
    files: &mut Vec<FileRecord>,
    report: &mut SetupReport,
) -> Result<(), SetupError> {
    let ok = fs::read_link(link).is_ok_and(|t| t == target);
    if !ok {
        if let Some(dir) = link.parent() {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        let _ = fs::remove_file(link);
        std::os::unix::fs::symlink(target, link).map_err(io_err("symlink", link))?;
        report.changes.push(format!("enabled {}", link.display()));
    }
    files.push(FileRecord {
        path: link.to_path_buf(),
        sha256: fsutil::sha256_hex(target.as_os_str().as_encoded_bytes()),
        symlink: true,
    });
    Ok(())
}

/// Observes the machine for the objects named in `rec`.
pub fn observe(rec: &InstallRecord) -> Result<Observed, ToolError> {
    let mut o = Observed {
        group: accounts::getent_group(&rec.group.name)?,
        ..Default::default()
    };
    for a in &rec.accounts {
        o.accounts
            .insert(a.name.clone(), accounts::getent_passwd(&a.name)?);
        let h = fs::symlink_metadata(&a.home)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| (m.uid(), m.mode() & 0o7777));
        o.homes.insert(a.home.clone(), h);
    }
    if let Some(n) = &rec.nft {
        o.nft_listing = crate::nft::list_table(&n.table)?;
    }
    for f in &rec.files {
        let h = if f.symlink {
            fs::read_link(&f.path)
                .ok()
                .map(|t| fsutil::sha256_hex(t.as_os_str().as_encoded_bytes()))
        } else {
            fsutil::file_sha256(&f.path).ok().flatten()
        };
        o.files.insert(f.path.clone(), h);
    }
    Ok(o)
}

/// `stockade setup --check`: every difference between the record and the machine.
pub fn check(opts: &SetupOptions) -> Result<DriftReport, CheckError> {
    let rpath = opts.record_path();
    let rec = record::load(&rpath).map_err(|source| CheckError::Record {
        path: rpath.clone(),
        source,
    })?;
    let Some(rec) = rec else {
        return Ok(DriftReport {
            installed: false,
            drift: Vec::new(),
        });
    };
    let obs = observe(&rec)?;
    let mut drift = record::diff(&rec, &obs, VERSION);
    let want_net = opts.net.clone().unwrap_or_else(|| rec.net.clone());
    let want_rules = nft::ruleset(
        &rec.prefix.replace('-', "_"),
        &rec.offline_uids(),
        &want_net,
    );
    if let (w, Some(n)) = (want_rules, &rec.nft) {
        if w != n.ruleset {
            drift.push(Drift {
                item: "nftables configuration".into(),
                expected: format!("{want_net:?}"),
                observed: format!("{:?} (re-run setup to apply)", rec.net),
            });
        }
    }
    Ok(DriftReport {
        installed: true,
        drift,
    })
}

/// Kills every process running as `uid` (sandbox accounts only; needed before `userdel`).
fn kill_uid(uid: u32) {
    let Ok(rd) = fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if fs::metadata(e.path()).is_ok_and(|m| m.uid() == uid) && uid != 0 {
            let _ = stockade_sys::kill(pid, libc::SIGKILL);
        }
    }
}

/// Removes everything setup created (accounts, group, nft table, units, files, ACL entries
/// recorded in `grants.json`, homes, the record). Safe to re-run; reports what it removed.
///
/// In order: ACL grants and the per-caller groups ([`remove_grants`]: their entries name the
/// accounts' uids, which must still resolve), units and files ([`remove_files`]), the run
/// cgroups ([`remove_cgroups`]), the System V IPC objects of the accounts ([`remove_ipc`]), the
/// nft table, the accounts and homes ([`remove_accounts`]), the
/// group, and — only when nothing failed — the state itself ([`remove_state`]).
pub fn uninstall(opts: &SetupOptions) -> Result<UninstallReport, UninstallError> {
    if stockade_sys::users::geteuid() != 0 {
        return Err(UninstallError::NotRoot);
    }
    let rpath = opts.record_path();
    let mut rep = UninstallReport::default();
    if !opts.state_dir.exists() {
        return Ok(rep);
    }
    let lock = lock_state(&opts.state_dir).map_err(|source| UninstallError::Lock {
        path: opts.state_dir.clone(),
        source,
    })?;
    let rec = record::load(&rpath).map_err(|source| UninstallError::Record {
        path: rpath.clone(),
        source,
    })?;
    let Some(rec) = rec else {
        return Ok(rep);
    };
    remove_grants(opts, &rec, &mut rep);
    remove_files(opts, &rec, &mut rep);
    remove_cgroups(&rec, &mut rep);
    remove_ipc(&rec, &mut rep);
    if systemd_running() {
        let _ = fsutil::run_tool_raw("systemctl", &["daemon-reload"]);
    }
    if let Some(n) = &rec.nft {
        match nft::delete_table(&n.table) {
            Ok(true) => rep
                .removed
                .push(format!("deleted nftables table inet {}", n.table)),
            Ok(false) => {}
            Err(e) => rep.problems.push(e.to_string()),
        }
    }
    remove_accounts(&rec, &mut rep);
    if rec.group.created {
        match accounts::getent_group(&rec.group.name) {
            Ok(Some(GroupEntry { .. })) => match accounts::groupdel(&rec.group.name) {
                Ok(()) => rep
                    .removed
                    .push(format!("removed group {}", rec.group.name)),
                Err(e) => rep.problems.push(e.to_string()),
            },
            Ok(None) => {}
            Err(e) => rep.problems.push(e.to_string()),
        }
    }
    for d in [&opts.state_dir, &opts.config_dir, &opts.systemd_dir] {
        remove_tmp_leftovers(d, &rec.prefix);
    }
    let _ = fs::remove_dir(&opts.config_dir);
    if rep.problems.is_empty() {
        remove_state(opts, lock, &mut rep);
    }
    Ok(rep)
}

/// The uids whose ACL entries uninstall revokes: the recorded accounts', never 0. Pure.
pub fn grant_uids(rec: &InstallRecord) -> Vec<u32> {
    rec.accounts
        .iter()
        .map(|a| a.uid)
        .filter(|u| *u != 0)
        .collect()
}

/// System V IPC objects (shared memory, message queues, semaphores) the sandbox accounts own or
/// created in the host's IPC namespace (runs have private IPC namespaces; an older version's
/// runs did not), each re-checked by id just before it is removed.
fn remove_ipc(rec: &InstallRecord, rep: &mut UninstallReport) {
    match stockade_sys::ipc::remove_owned_by(&grant_uids(rec)) {
        Ok(gone) => rep.removed.extend(gone.iter().map(|o| {
            format!(
                "removed System V {} id {} of uid {}",
                o.kind.name(),
                o.id,
                o.uid
            )
        })),
        Err(e) => rep.problems.push(format!("System V IPC objects: {e}")),
    }
}

/// Every ACL entry recorded in `grants.json`, then the per-caller grant groups.
fn remove_grants(opts: &SetupOptions, rec: &InstallRecord, rep: &mut UninstallReport) {
    match crate::grants::revoke_all(&opts.grants_path(), &grant_uids(rec)) {
        Ok(lines) => rep.removed.extend(lines),
        Err(e) => rep.problems.push(format!("ACL grants: {e}")),
    }
    // Per-caller grant groups, after their ACL entries are gone.
    if let Ok(gf) = crate::grants::load(&opts.grants_path()) {
        for c in &gf.groups {
            match accounts::getent_group(&c.name) {
                Ok(Some(g)) if g.gid == c.gid => match accounts::groupdel(&c.name) {
                    Ok(()) => rep.removed.push(format!("removed group {}", c.name)),
                    Err(e) => rep.problems.push(e.to_string()),
                },
                Ok(_) => {}
                Err(e) => rep.problems.push(e.to_string()),
            }
        }
    }
}

/// The broker's units stopped (under systemd), every recorded file removed (newest first), and
/// the directories that held them when empty.
fn remove_files(opts: &SetupOptions, rec: &InstallRecord, rep: &mut UninstallReport) {
    if systemd_running() {
        for u in [
            format!("{}-broker.socket", rec.prefix),
            format!("{}-broker.service", rec.prefix),
        ] {
            let _ = fsutil::run_tool_raw("systemctl", &["stop", &u]);
        }
    }
    for f in rec.files.iter().rev() {
        match fs::remove_file(&f.path) {
            Ok(()) => rep.removed.push(format!("removed {}", f.path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => rep.problems.push(format!("{}: {e}", f.path.display())),
        }
    }
    for (link, _) in enable_links(opts) {
        if let Some(d) = link.parent() {
            let _ = fs::remove_dir(d); // only if empty
        }
    }
    let _ = fs::remove_dir(&opts.config_dir);
}

/// Where the broker creates run cgroups (a foreground broker's, and the systemd service's),
/// under the cgroup2 mount `mnt`. Pure.
pub fn run_cgroup_dirs(mnt: &Path, prefix: &str) -> [PathBuf; 2] {
    [
        mnt.join(format!("{prefix}-runs")),
        mnt.join("system.slice")
            .join(format!("{prefix}-broker.service"))
            .join(format!("{prefix}-runs")),
    ]
}

/// The (empty) run cgroups and their parent.
fn remove_cgroups(rec: &InstallRecord, rep: &mut UninstallReport) {
    let Some(mnt) = fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| crate::cgroup::cgroup2_mount(&m))
    else {
        return;
    };
    for d in run_cgroup_dirs(&mnt, &rec.prefix) {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                let _ = fs::remove_dir(e.path());
            }
            if fs::remove_dir(&d).is_ok() {
                rep.removed.push(format!("removed cgroup {}", d.display()));
            }
        }
    }
}

/// Each account setup created (its processes killed first) and its home.
fn remove_accounts(rec: &InstallRecord, rep: &mut UninstallReport) {
    for a in rec.accounts.iter().filter(|a| a.created) {
        match accounts::getent_passwd(&a.name) {
            Ok(Some(p)) if p.uid != 0 => {
                kill_uid(p.uid);
                match accounts::userdel(&a.name) {
                    Ok(()) => rep.removed.push(format!("removed account {}", a.name)),
                    Err(e) => rep.problems.push(e.to_string()),
                }
            }
            Ok(_) => {}
            Err(e) => rep.problems.push(e.to_string()),
        }
        match fs::remove_dir_all(&a.home) {
            Ok(()) => rep
                .removed
                .push(format!("removed home {}", a.home.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => rep.problems.push(format!("{}: {e}", a.home.display())),
        }
    }
}

/// The state directory (record, grants, lock) and a socket a killed foreground broker left.
fn remove_state(opts: &SetupOptions, lock: StateLock, rep: &mut UninstallReport) {
    let rpath = opts.record_path();
    let _ = fs::remove_dir(opts.state_dir.join("home"));
    let _ = fs::remove_dir_all(opts.state_dir.join("runs"));
    for f in [rpath.clone(), opts.grants_path()] {
        let _ = fs::remove_file(f);
    }
    drop(lock);
    let _ = fs::remove_file(opts.state_dir.join(".lock"));
    let _ = fs::remove_dir(&opts.state_dir);
    rep.removed
        .push(format!("removed installation record {}", rpath.display()));
    // A foreground broker that was killed leaves its socket (and the directory the broker
    // created for it) behind; the tier is gone, so are they.
    if let Ok(m) = fs::symlink_metadata(&opts.socket_path) {
        use std::os::unix::fs::FileTypeExt;
        if m.file_type().is_socket() && fs::remove_file(&opts.socket_path).is_ok() {
            rep.removed.push(format!(
                "removed broker socket {}",
                opts.socket_path.display()
            ));
        }
    }
    if let Some(dir) = opts.socket_path.parent() {
        let _ = fs::remove_dir(dir);
    }
}

/// Reads the record for clients (no root needed): `None` if not installed.
pub fn installed(opts: &SetupOptions) -> Option<InstallRecord> {
    record::load(&opts.record_path())
        .ok()
        .flatten()
        .filter(|r| r.state == RecordState::Installed)
}

/// Observed state by name, for tests and `--check` output.
pub fn observe_names(names: &[&str]) -> Result<BTreeMap<String, bool>, ToolError> {
    let mut m = BTreeMap::new();
    for n in names {
        m.insert(n.to_string(), accounts::getent_passwd(n)?.is_some());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u32 = accounts::UID_BASE;

    #[test]
    fn intent_of_a_fresh_install_and_a_reinstall() {
        let o = SetupOptions::default();
        let bare = intended_record(&o, None, None, &[], &[]).unwrap();
        assert_eq!(bare.state, RecordState::Installing);
        assert!(bare.group.created && bare.group.gid == 0);
        assert!(bare.accounts.is_empty(), "no caller yet: no account");
        let fresh = intended_record(&o, None, None, &[(1000, B, B + 1)], &[None, None]).unwrap();
        assert_eq!(
            fresh
                .accounts
                .iter()
                .map(|a| (a.role, a.name.as_str(), a.uid, a.created, a.caller))
                .collect::<Vec<_>>(),
            vec![
                (Role::Offline, "stockade-1000-off", B, true, Some(1000)),
                (Role::Online, "stockade-1000-on", B + 1, true, Some(1000))
            ]
        );
        assert_eq!(
            fresh.accounts[0].home,
            PathBuf::from("/var/lib/stockade/home/stockade-1000-off")
        );
        // A second setup keeps what the first created as its own.
        let mut old = fresh.clone();
        old.group.gid = 995;
        let pairs = [(1000, B, B + 1)];
        let again =
            intended_record(&o, Some(&old), Some(995), &pairs, &[Some(B), Some(B + 1)]).unwrap();
        assert!(again.group.created && again.group.gid == 995);
        assert_eq!(again.accounts, old.accounts);
        // Network options: the given ones win, otherwise the installed ones are kept.
        old.net.allowed_loopback_tcp_ports = vec![8080];
        let kept = intended_record(&o, Some(&old), Some(995), &pairs, &[None, None]).unwrap();
        assert_eq!(kept.net.allowed_loopback_tcp_ports, vec![8080]);
        assert_eq!(kept.offline_uids(), vec![B]);
        assert_eq!(
            kept.account_for(1000, Role::Online).map(|a| a.uid),
            Some(B + 1)
        );
        assert!(kept.account_for(1001, Role::Online).is_none());
    }

    #[test]
    fn intent_refuses_an_account_setup_did_not_create() {
        let o = SetupOptions::default();
        assert!(matches!(
            intended_record(&o, None, None, &[(1000, 5, B + 1)], &[Some(5), None]),
            Err(SetupError::Conflict(m)) if m.contains("stockade-1000-off")
        ));
        // Our name with a uid of our range (its record entry lost): adopted.
        let r = intended_record(&o, None, None, &[(1000, B, B + 1)], &[Some(B), None]).unwrap();
        assert_eq!(r.accounts[0].uid, B);
        // Ours, but with another uid than allocated: a conflict too.
        let r = intended_record(&o, None, None, &[(1000, B, B + 1)], &[None, None]).unwrap();
        assert!(matches!(
            intended_record(&o, Some(&r), None, &[(1000, B, B + 1)], &[Some(5), None]),
            Err(SetupError::Conflict(_))
        ));
    }

    #[test]
    fn uninstall_targets() {
        let o = SetupOptions::default();
        let r = intended_record(&o, None, None, &[(7, B, B + 1)], &[None, None]).unwrap();
        assert_eq!(grant_uids(&r), vec![B, B + 1]);
        assert_eq!(
            run_cgroup_dirs(Path::new("/sys/fs/cgroup"), "stockade"),
            [
                PathBuf::from("/sys/fs/cgroup/stockade-runs"),
                PathBuf::from("/sys/fs/cgroup/system.slice/stockade-broker.service/stockade-runs")
            ]
        );
    }

    #[test]
    fn names_derive_from_prefix() {
        let o = SetupOptions {
            prefix: "stockade-t".into(),
            ..Default::default()
        };
        assert_eq!(o.group_name(), "stockade-t-sandbox");
        assert_eq!(o.account_name(1000, Role::Offline), "stockade-t-1000-off");
        assert_eq!(o.table(), "stockade_t");
        assert_eq!(o.home("x"), PathBuf::from("/var/lib/stockade/home/x"));
        assert!(validate_opts(&o).is_ok());
        let bad = SetupOptions {
            prefix: "Bad Prefix".into(),
            ..Default::default()
        };
        assert!(matches!(
            validate_opts(&bad),
            Err(SetupError::InvalidOption(_))
        ));
    }

    #[test]
    fn tmp_leftovers() {
        assert!(is_our_tmp_leftover(".install.json.tmp.123", "stockade"));
        assert!(is_our_tmp_leftover(
            ".stockade-broker.socket.tmp.9",
            "stockade"
        ));
        assert!(!is_our_tmp_leftover(".other.tmp.9", "stockade"));
        assert!(!is_our_tmp_leftover("install.json", "stockade"));
        assert!(!is_our_tmp_leftover(".install.json.tmp.x", "stockade"));
    }

    #[test]
    fn units_reference_socket_and_script() {
        let o = SetupOptions::default();
        let u = unit_files(&o);
        assert_eq!(u.len(), 3);
        assert!(u[0]
            .1
            .contains("ExecStart=/usr/sbin/nft -f /etc/stockade/stockade.nft"));
        assert!(u[0]
            .1
            .contains("ExecStop=/usr/sbin/nft delete table inet stockade"));
        assert!(u[1].1.contains("ListenStream=/run/stockade/broker.sock"));
        assert!(u[2]
            .1
            .contains("ExecStart=/usr/local/bin/stockade broker --socket-activated"));
    }
}
