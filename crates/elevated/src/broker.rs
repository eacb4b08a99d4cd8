//! The privileged broker: `stockade broker`.
//!
//! Listens on a unix socket (its own, or one passed by systemd socket activation), authenticates
//! each caller with `SO_PEERCRED`, receives the caller's stdin/stdout/stderr with `SCM_RIGHTS`,
//! re-validates the request ([`crate::validate`]), checks the nftables table for offline runs,
//! applies ACL grants ([`crate::grants`]), builds the Landlock ruleset, then starts the run's own
//! process ([`crate::runner`]) in a fresh cgroup: a forked child that only calls `setsid`, joins
//! the cgroup and execs this executable with a hidden entry point. That process drops to the
//! sandbox account (verified), confines itself and the command, and supervises the command's
//! `connect()` calls. The broker waits for its "ok" before it reports any layer, and kills the
//! whole cgroup when the run ends.
//!
//! # Invariant: root never resolves a path the caller controls
//!
//! * Each writable root the caller names is opened **once**, by this broker thread with the
//!   caller's own filesystem credentials ([`stockade_sys::users::with_fs_creds`]: fsuid, fsgid,
//!   groups) and `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, so nothing the caller
//!   could not open is reached ([`validate::open_root`]); its device and inode are recorded.
//! * Everything done as root below a root goes from that descriptor: ACL grants walk it with
//!   descriptor-relative calls ([`crate::grants`]), the Landlock rules are built from it, and the
//!   protected-path binds are planned by opening each path beneath it with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` and recording its
//!   inode ([`crate::ns::NsPlan::new`]).
//! * The run's process, still root in its own mount namespace, re-opens each root the same way
//!   and refuses it unless it is the recorded inode, then reaches every bind target beneath it
//!   with the same `RESOLVE_BENEATH` rules (`O_PATH | O_NOFOLLOW`: a final symlink is bound as
//!   itself, never followed), checks the inode again, clones it with
//!   `open_tree(fd, "", AT_EMPTY_PATH)` and attaches it with
//!   `move_mount(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)`. The writable roots' idmapped
//!   binds go the same way. A path swapped for a symlink between plan and bind fails the run; it
//!   is never followed.
//! * The start directory is entered by the run's process after the switch to the sandbox
//!   account and Landlock ([`crate::runner`]).

use crate::cgroup::RunCgroup;
use crate::grants::{self, GrantAction, GrantKey, GrantParams, GrantRecord};
use crate::protocol::{self, Reply, RunRequest, WireExit, WireLayer};
use crate::record::{InstallRecord, Role};
use crate::setup::SetupOptions;
use crate::validate::{self, Refusal, ValidatedRoot};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stockade_policy::NetworkMode;
use stockade_sys as sys;

/// Broker configuration.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Installation layout (record, grants, prefix).
    pub setup: SetupOptions,
    /// Socket to listen on (default: the record's).
    pub socket_path: Option<PathBuf>,
    /// Use the listening socket passed by systemd (`LISTEN_FDS`) instead of binding.
    pub socket_activated: bool,
}

/// Broker failures (fatal ones; per-request problems are answered on the connection).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Not root.
    #[error("the broker must run as root (it switches to the sandbox accounts)")]
    NotRoot,
    /// Setup missing.
    #[error(
        "the elevated tier is not installed ({0} missing or unfinished); run `sudo stockade setup`"
    )]
    NotInstalled(PathBuf),
    /// Socket problem.
    #[error("broker socket {path}: {source}")]
    Socket {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Socket activation requested but no socket passed.
    #[error("--socket-activated given but systemd passed no socket (LISTEN_FDS/LISTEN_PID)")]
    NoActivationSocket,
}

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Most connections (runs included) one calling user may hold at once: one user cannot take the
/// broker's slots from the others.
pub const MAX_PER_USER: usize = 32;

/// The whole request (first bytes, descriptors and body) must arrive within this time.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Open connections per calling uid; a slot is released when its [`Slot`] drops.
#[derive(Default)]
struct PerUser(Mutex<std::collections::HashMap<u32, usize>>);

struct Slot {
    users: Arc<PerUser>,
    uid: u32,
}

impl PerUser {
    /// A slot for `uid`, unless it already holds [`MAX_PER_USER`].
    fn take(self: &Arc<Self>, uid: u32) -> Option<Slot> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(uid).or_insert(0);
        if *n >= MAX_PER_USER {
            return None;
        }
        *n += 1;
        Some(Slot {
            users: Arc::clone(self),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.users.0.lock() {
            if let Some(n) = m.get_mut(&self.uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.uid);
                }
            }
        }
    }
}

struct Ctx {
    opts: BrokerOptions,
    /// Held only to read-modify-write `grants.json` (and while a setup adds accounts), never
    /// while a caller's files are walked or read.
    grants_lock: Mutex<()>,
    /// One lock per calling uid, held for that caller's grant walk: one user's large first grant
    /// does not delay another user's run.
    caller_locks: Mutex<std::collections::HashMap<u32, Arc<Mutex<()>>>>,
    /// Root can make the user namespace the idmapped binds need (probed at start): grants then
    /// give no default entries, so new files honour the command's umask.
    idmap: bool,
    /// Mapping user namespaces by `uid_map`/`gid_map`, made once and kept.
    usernses: Mutex<std::collections::HashMap<String, Arc<OwnedFd>>>,
    /// The nftables ruleset generation at which the full table was last listed and found equal
    /// to this listing (see [`Ctx::nft_verified`]).
    nft_verified: Mutex<Option<(u32, String)>>,
}

impl Ctx {
    /// The mapping user namespace for `m` (`None` when root cannot make one here: the run then
    /// goes without the idmap and says so).
    fn userns_for(&self, m: &crate::ns::IdMap) -> Option<Arc<OwnedFd>> {
        if !self.idmap {
            return None;
        }
        let key = format!("{}|{}", m.uid_map(), m.gid_map()?);
        let mut cache = self.usernses.lock().ok()?;
        if let Some(u) = cache.get(&key) {
            return Some(Arc::clone(u));
        }
        let u = Arc::new(crate::ns::mapping_userns(m).ok()?);
        cache.insert(key, Arc::clone(&u));
        Some(u)
    }

    /// Whether table `inet <table>` holds exactly the rules `want`. Fail closed and cheap: the
    /// full listing (`nft list table`, ≈ 6 ms) is compared only when the ruleset generation
    /// (`NFT_MSG_GETGEN`, one netlink round trip) differs from the one recorded at the last
    /// successful comparison; every committed nftables change bumps it. Any error means "not
    /// verified" or a full listing, never a pass.
    fn nft_table_ok(&self, table: &str, want: &str) -> Result<NftCheck, String> {
        let gen_before = crate::nft::ruleset_generation().ok();
        if let (Some(g), Ok(cache)) = (gen_before, self.nft_verified.lock()) {
            if cache
                .as_ref()
                .is_some_and(|(cg, cw)| *cg == g && cw == want)
            {
                return Ok(NftCheck::Same { cached: true });
            }
        }
        match crate::nft::list_table(table) {
            Ok(Some(l)) if crate::record::same_listing(&l, want) => {
                // Cache only when nothing was committed while listing.
                let gen_after = crate::nft::ruleset_generation().ok();
                if let (Some(a), Some(b)) = (gen_before, gen_after) {
                    if a == b {
                        if let Ok(mut c) = self.nft_verified.lock() {
                            *c = Some((a, want.to_string()));
                        }
                    }
                }
                Ok(NftCheck::Same { cached: false })
            }
            Ok(Some(_)) => Ok(NftCheck::Differs),
            Ok(None) => Ok(NftCheck::Missing),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Whether root can make an idmapping user namespace here (called once, before any thread).
fn idmap_probe() -> bool {
    crate::ns::mapping_userns(&crate::ns::IdMap {
        sandbox_uid: 65534,
        caller_uid: 65533,
        sandbox_gid: 65534,
        caller_gid: 65533,
        grant_gid: 65532,
        extra_gids: Vec::new(),
    })
    .is_ok()
}

enum NftCheck {
    Same { cached: bool },
    Differs,
    Missing,
}

/// Binds (or takes over) the listening socket.
pub fn listen(opts: &BrokerOptions, rec: &InstallRecord) -> Result<UnixListener, BrokerError> {
    if opts.socket_activated {
        let pid_ok = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        let n = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|p| p.parse::<i32>().ok())
            .unwrap_or(0);
        if !pid_ok || n < 1 {
            return Err(BrokerError::NoActivationSocket);
        }
        // SAFETY: systemd passed descriptor 3 as the listening socket (LISTEN_PID is ours) and
        // nothing else in this process owns it.
        let l = unsafe { UnixListener::from_raw_fd(3) };
        return Ok(l);
    }
    let path = opts
        .socket_path
        .clone()
        .unwrap_or_else(|| rec.socket_path.clone());
    let err = |source| BrokerError::Socket {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        use std::os::unix::fs::FileTypeExt;
        if m.file_type().is_socket() {
            std::fs::remove_file(&path).map_err(err)?;
        }
    }
    let l = UnixListener::bind(&path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(l)
}

/// Runs the broker in the foreground until killed (the mode for containers and CI; systemd
/// starts the same code with `socket_activated`).
pub fn serve_broker(opts: &BrokerOptions) -> Result<(), BrokerError> {
    if sys::users::geteuid() != 0 {
        return Err(BrokerError::NotRoot);
    }
    let rpath = opts.setup.record_path();
    let rec = crate::setup::installed(&opts.setup).ok_or(BrokerError::NotInstalled(rpath))?;
    let listener = listen(opts, &rec)?;
    serve_on(listener, opts.clone())
}

/// Serves connections on an existing listener. The installation record is re-read and checked
/// for every request.
pub fn serve_on(listener: UnixListener, opts: BrokerOptions) -> Result<(), BrokerError> {
    let ctx = Arc::new(Ctx {
        opts,
        grants_lock: Mutex::new(()),
        caller_locks: Mutex::new(std::collections::HashMap::new()),
        idmap: idmap_probe(),
        usernses: Mutex::new(std::collections::HashMap::new()),
        nft_verified: Mutex::new(None),
    });
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let per_user = Arc::new(PerUser::default());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        // A refusal is one small frame; never wait on a client that does not read it.
        let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
        let Ok(cred) = sys::sockets::peer_cred(conn.as_fd()) else {
            continue;
        };
        // Bound the threads a local user can make the broker hold.
        if active.load(std::sync::atomic::Ordering::Relaxed) >= MAX_CONNECTIONS {
            let _ = protocol::write_frame(
                &mut &conn,
                &Reply::Failed {
                    message: format!(
                        "the broker is busy ({MAX_CONNECTIONS} runs in progress); retry later"
                    ),
                    exit_code: None,
                },
            );
            continue;
        }
        let Some(slot) = per_user.take(cred.uid) else {
            let _ = protocol::write_frame(
                &mut &conn,
                &Reply::Failed {
                    message: format!(
                        "you already hold {MAX_PER_USER} connections to the broker (runs included); retry when one ends"
                    ),
                    exit_code: None,
                },
            );
            continue;
        };
        active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ctx = Arc::clone(&ctx);
        let active = Arc::clone(&active);
        std::thread::spawn(move || {
            handle(&ctx, conn);
            drop(slot);
            active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    Ok(())
}

enum Fail {
    Refused(String),
    Failed(String),
    /// The command could not be executed (exit status 126/127 and the reason).
    Exec(i32, String),
}

impl From<Refusal> for Fail {
    fn from(r: Refusal) -> Self {
        Fail::Refused(r.to_string())
    }
}

fn handle(ctx: &Ctx, stream: UnixStream) {
    let result = (|| -> Result<(), Fail> {
        let cred = sys::sockets::peer_cred(stream.as_fd())
            .map_err(|e| Fail::Failed(format!("SO_PEERCRED: {e}")))?;
        // A caller that connects and sends nothing (or dribbles) must not pin a broker thread:
        // the whole request must arrive within REQUEST_DEADLINE (SO_RCVTIMEO bounds recvmsg).
        let _ = stream.set_read_timeout(Some(REQUEST_DEADLINE));
        // Nor can one that stops reading block the broker (progress is written under the grant
        // lock).
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        let (req, fds) = recv_request(&stream)?;
        run(ctx, &stream, cred, req, fds)
    })();
    let reply = match result {
        Ok(()) => return,
        Err(Fail::Refused(reason)) => Reply::Refused { reason },
        Err(Fail::Failed(message)) => Reply::Failed {
            message,
            exit_code: None,
        },
        Err(Fail::Exec(code, message)) => Reply::Failed {
            message,
            exit_code: Some(code),
        },
    };
    let _ = protocol::write_frame(&mut &stream, &reply);
}

fn recv_request(stream: &UnixStream) -> Result<(RunRequest, Vec<OwnedFd>), Fail> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = vec![0u8; 64 * 1024];
    let (n, fds) = sys::sockets::recv_with_fds(stream.as_fd(), &mut buf)
        .map_err(|e| Fail::Refused(format!("receiving request: {e}")))?;
    if fds.len() != 3 {
        return Err(Fail::Refused(format!(
            "expected stdin, stdout and stderr as 3 descriptors, got {}",
            fds.len()
        )));
    }
    if n < 4 {
        return Err(Fail::Refused("truncated request".into()));
    }
    let len = protocol::frame_len([buf[0], buf[1], buf[2], buf[3]])
        .map_err(|e| Fail::Refused(e.to_string()))?;
    let mut body = buf[4..n].to_vec();
    if body.len() > len {
        return Err(Fail::Refused("data after the request".into()));
    }
    let mut have = body.len();
    body.resize(len, 0);
    while have < len {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fail::Refused(format!(
                "the request did not arrive within {} s",
                REQUEST_DEADLINE.as_secs()
            )));
        }
        let _ = stream.set_read_timeout(Some(left));
        match (&*stream).read(&mut body[have..]) {
            Ok(0) => return Err(Fail::Refused("truncated request".into())),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Fail::Refused(format!("reading request: {e}"))),
        }
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let req: RunRequest = serde_json::from_slice(&body)
        .map_err(|e| Fail::Refused(format!("malformed request: {e}")))?;
    Ok((req, fds))
}

struct Caller {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    home: Option<PathBuf>,
}

fn caller_info(cred: &libc::ucred) -> Caller {
    let pw = sys::users::getpwuid(cred.uid).ok().flatten();
    let groups = pw
        .as_ref()
        .and_then(|(name, _, _)| sys::users::grouplist(name, cred.gid).ok())
        .unwrap_or_else(|| vec![cred.gid]);
    Caller {
        uid: cred.uid,
        gid: cred.gid,
        groups,
        home: pw.map(|(_, _, h)| h),
    }
}

fn sandbox_uids(rec: &InstallRecord) -> Vec<u32> {
    let mut v: Vec<u32> = rec.accounts.iter().map(|a| a.uid).collect();
    v.sort_unstable();
    v
}

/// The installation record as it is now, re-read for every request and checked against the
/// account database for this caller's accounts: after an uninstall/setup cycle a uid could belong
/// to someone else, and a broker still running with an old record must not switch to it. A
/// setup in progress (another caller's accounts being added) is waited for, briefly.
fn current_record(ctx: &Ctx, caller: u32) -> Result<InstallRecord, Fail> {
    let mut rec = crate::setup::installed(&ctx.opts.setup);
    for _ in 0..50 {
        if rec.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        rec = crate::setup::installed(&ctx.opts.setup);
    }
    let rec = rec.ok_or_else(|| {
        Fail::Failed("the elevated tier is not installed (or setup is unfinished); run `sudo stockade setup`".into())
    })?;
    for a in rec.accounts.iter().filter(|a| a.caller == Some(caller)) {
        // What `setup --check` would call drift in this caller's home refuses the run: a home
        // that is not root's at 0755 could be the account's to chmod.
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&a.home) {
            Ok(m)
                if m.is_dir()
                    && m.uid() == 0
                    && m.mode() & 0o7777 == crate::record::HOME_MODE => {}
            _ => {
                return Err(Fail::Failed(format!(
                    "the home {} of sandbox account {} drifted (it must be root's, mode {:04o}); `stockade setup --check` shows it, `sudo stockade setup` repairs it",
                    a.home.display(),
                    a.name,
                    crate::record::HOME_MODE
                )))
            }
        }
        match sys::users::getpwuid(a.uid) {
            Ok(Some((name, gid, _))) if name == a.name && gid == rec.group.gid => {}
            _ => {
                return Err(Fail::Failed(format!(
                    "uid {} is no longer the sandbox account {} with group {}; run `sudo stockade setup --check` and restart the broker",
                    a.uid, a.name, rec.group.name
                )))
            }
        }
    }
    if sys::users::getgrnam(&rec.group.name).ok().flatten() != Some(rec.group.gid) {
        return Err(Fail::Failed(format!(
            "group {} no longer has gid {}; run `sudo stockade setup`",
            rec.group.name, rec.group.gid
        )));
    }
    Ok(rec)
}

/// The record, with this caller's own pair of sandbox accounts in it: on a caller's first run
/// the broker adds them the way `setup --user` does ([`crate::setup::setup`]: uids allocated in
/// the sandbox range, the intent recorded first, nftables rules for the new offline account),
/// under the grant lock so no grant record is written meanwhile.
fn caller_accounts(ctx: &Ctx, caller: u32) -> Result<InstallRecord, Fail> {
    let rec = current_record(ctx, caller)?;
    if Role::ALL
        .iter()
        .all(|r| rec.account_for(caller, *r).is_some())
    {
        return Ok(rec);
    }
    if rec.accounts.iter().any(|a| a.uid == caller) {
        return Err(Fail::Refused(
            "a sandbox account cannot use the broker".into(),
        ));
    }
    if !matches!(sys::users::getpwuid(caller), Ok(Some(_))) {
        return Err(Fail::Refused(format!(
            "uid {caller} has no account in the user database"
        )));
    }
    {
        let _guard = ctx
            .grants_lock
            .lock()
            .map_err(|_| Fail::Failed("grant lock poisoned".into()))?;
        let opts = SetupOptions {
            users: vec![caller],
            net: None,
            ..ctx.opts.setup.clone()
        };
        crate::setup::setup(&opts).map_err(|e| {
            Fail::Failed(format!(
                "creating the sandbox accounts of uid {caller}: {e}"
            ))
        })?;
    }
    current_record(ctx, caller)
}

/// The caller's grant group (`<prefix>-u<uid>`), created with `groupadd --system` and recorded in
/// `grants.json` (before use, so uninstall always knows it) on the caller's first run.
fn caller_group(
    ctx: &Ctx,
    rec: &InstallRecord,
    gf: &mut grants::GrantsFile,
    uid: u32,
) -> Result<u32, Fail> {
    let name = format!("{}-u{uid}", rec.prefix);
    // Fast path: recorded and still resolving to the same gid (in-process NSS lookup).
    if let Some(r) = gf.groups.iter().find(|c| c.uid == uid && c.name == name) {
        if sys::users::getgrnam(&name).ok().flatten() == Some(r.gid) {
            return Ok(r.gid);
        }
    }
    let observed = crate::accounts::getent_group(&name).map_err(|e| Fail::Failed(e.to_string()))?;
    let g = match observed {
        Some(g) => g,
        None => {
            crate::accounts::groupadd(&name).map_err(|e| Fail::Failed(e.to_string()))?;
            crate::accounts::getent_group(&name)
                .map_err(|e| Fail::Failed(e.to_string()))?
                .ok_or_else(|| Fail::Failed(format!("group {name} missing after groupadd")))?
        }
    };
    if g.gid == 0 || g.gid == rec.group.gid {
        return Err(Fail::Failed(format!(
            "grant group {name} has gid {}; refusing",
            g.gid
        )));
    }
    let entry = grants::CallerGroup {
        uid,
        name,
        gid: g.gid,
    };
    gf.groups.retain(|c| c.uid != uid);
    gf.groups.push(entry.clone());
    store_merged(ctx, |f| {
        f.groups.retain(|c| c.uid != uid);
        f.groups.push(entry);
    })?;
    Ok(g.gid)
}

/// Applies `change` to `grants.json` as it is now on disk (re-read under the short file lock),
/// so concurrent callers' walks never overwrite each other's records.
fn store_merged(ctx: &Ctx, change: impl FnOnce(&mut grants::GrantsFile)) -> Result<(), Fail> {
    let _file = ctx
        .grants_lock
        .lock()
        .map_err(|_| Fail::Failed("grant lock poisoned".into()))?;
    let gpath = ctx.opts.setup.grants_path();
    let mut fresh =
        grants::load(&gpath).map_err(|e| Fail::Failed(format!("{}: {e}", gpath.display())))?;
    change(&mut fresh);
    grants::store(&gpath, &fresh).map_err(|e| Fail::Failed(format!("{}: {e}", gpath.display())))
}

/// Applies (or skips, when already done) the grants for the validated roots.
fn ensure_grants(
    ctx: &Ctx,
    rec: &InstallRecord,
    stream: &UnixStream,
    caller: &Caller,
    roots: &[ValidatedRoot],
    req: &RunRequest,
) -> Result<(u64, bool, u32), Fail> {
    let mine = ctx
        .caller_locks
        .lock()
        .map_err(|_| Fail::Failed("grant lock poisoned".into()))?
        .entry(caller.uid)
        .or_default()
        .clone();
    let _guard = mine
        .lock()
        .map_err(|_| Fail::Failed("grant lock poisoned".into()))?;
    let gpath = ctx.opts.setup.grants_path();
    let mut gf = {
        let _file = ctx
            .grants_lock
            .lock()
            .map_err(|_| Fail::Failed("grant lock poisoned".into()))?;
        grants::load(&gpath).map_err(|e| Fail::Failed(format!("{}: {e}", gpath.display())))?
    };
    let gid = caller_group(ctx, rec, &mut gf, caller.uid)?;
    let mut walked = 0u64;
    let mut any_walk = false;
    for root in roots {
        let mut prot: Vec<PathBuf> = req
            .protected
            .iter()
            .filter(|p| grants::relative_beneath(&root.path, p).is_some())
            .cloned()
            .collect();
        prot.sort();
        prot.dedup();
        let key = GrantKey {
            root: &root.path,
            dev: root.dev,
            ino: root.ino,
            owner_uid: caller.uid,
            grant_gid: gid,
            protected: &prot,
            inherit: !ctx.idmap,
        };
        let idx = gf.grants.iter().position(|g| g.root == root.path);
        let intact = root.owned && grants::root_acl_intact(root.fd.as_fd(), gid);
        let action = grants::decide(idx.map(|i| &gf.grants[i]), &key, intact);
        if action == GrantAction::Skip {
            continue;
        }
        any_walk = true;
        let params = GrantParams {
            root_fd: root.fd.as_fd(),
            root: &root.path,
            caller_uid: caller.uid,
            grant_gid: gid,
            protected: &prot,
            inherit: !ctx.idmap,
        };
        let mut progress = |n: u64| {
            let _ = protocol::write_frame(
                &mut &*stream,
                &Reply::Progress {
                    root: root.path.clone(),
                    inodes: n,
                },
            );
        };
        let subset = match &action {
            GrantAction::Protect(p) => Some(p.as_slice()),
            _ => None,
        };
        let (stats, gitdirs) =
            grants::apply_root(&params, subset, &mut progress).map_err(grant_fail)?;
        walked += stats.changed;
        // Gitdirs named by `.git` files that lie beneath this root are protected too.
        let extra: Vec<PathBuf> = gitdirs
            .into_iter()
            .filter(|g| grants::relative_beneath(&root.path, g).is_some() && !prot.contains(g))
            .collect();
        if !extra.is_empty() {
            let params = GrantParams {
                protected: &extra,
                ..params
            };
            let (s2, _) =
                grants::apply_root(&params, Some(&extra), &mut progress).map_err(grant_fail)?;
            walked += s2.changed;
            prot.extend(extra);
        }
        let mut all_prot = idx
            .map(|i| gf.grants[i].protected.clone())
            .unwrap_or_default();
        if action == GrantAction::Full {
            all_prot.clear();
        }
        all_prot.extend(prot);
        all_prot.sort();
        all_prot.dedup();
        let rec = GrantRecord {
            root: root.path.clone(),
            dev: root.dev,
            ino: root.ino,
            owner_uid: caller.uid,
            owner_gid: caller.gid,
            grant_gid: gid,
            protected: all_prot,
            denied: Vec::new(),
            inodes: stats.changed,
            inherit: !ctx.idmap,
        };
        match idx {
            Some(i) => gf.grants[i] = rec.clone(),
            None => gf.grants.push(rec.clone()),
        }
        // Ancestors the caller owns (e.g. a 0700 home): search-only, so absolute paths work.
        // With the caller's filesystem credentials: the entries go only on inodes the caller
        // owns and reaches.
        let ancestors = sys::users::with_fs_creds(caller.uid, caller.gid, &caller.groups, || {
            grants::traverse_ancestors(&root.path, caller.uid, gid)
        })
        .map_err(|e| Fail::Failed(format!("switching to your credentials: {e}")))?;
        for t in &ancestors {
            if !gf.traverse.contains(t) {
                gf.traverse.push(t.clone());
            }
        }
        // Record after each root: a crash mid-way never loses track of granted entries.
        store_merged(ctx, |f| {
            match f.grants.iter().position(|g| g.root == rec.root) {
                Some(i) => f.grants[i] = rec,
                None => f.grants.push(rec),
            }
            for t in ancestors {
                if !f.traverse.contains(&t) {
                    f.traverse.push(t);
                }
            }
        })?;
    }
    ensure_denied(ctx, caller, gid, &req.deny_read, &gf)?;
    Ok((walked, any_walk, gid))
}

/// `deny_read` paths the caller owns get the grant group's empty entry (with the caller's
/// filesystem credentials), recorded once.
fn ensure_denied(
    ctx: &Ctx,
    caller: &Caller,
    gid: u32,
    deny_read: &[PathBuf],
    gf: &grants::GrantsFile,
) -> Result<(), Fail> {
    let denied = sys::users::with_fs_creds(caller.uid, caller.gid, &caller.groups, || {
        grants::deny_paths(deny_read, caller.uid, gid)
    })
    .map_err(|e| Fail::Failed(format!("switching to your credentials: {e}")))?;
    let new_denied: Vec<PathBuf> = denied
        .into_iter()
        .filter(|d| !gf.denied.contains(d))
        .collect();
    if !new_denied.is_empty() {
        store_merged(ctx, |f| {
            for d in new_denied {
                if !f.denied.contains(&d) {
                    f.denied.push(d);
                }
            }
        })?;
    }
    Ok(())
}

/// A grant that failed: the caller's own malformed file is a refusal, anything else a failure.
fn grant_fail(e: grants::GrantError) -> Fail {
    match e {
        grants::GrantError::GitfileTooLong { .. } => Fail::Refused(e.to_string()),
        e => Fail::Failed(e.to_string()),
    }
}

/// Rlimits derived from the request. Pure.
pub fn rlimits(
    limits: &stockade_policy::model::LimitsPolicy,
) -> Vec<(libc::__rlimit_resource_t, u64)> {
    let mut v = vec![(libc::RLIMIT_CORE, 0)];
    if let Some(m) = limits.max_memory {
        v.push((libc::RLIMIT_AS, m));
    }
    if let Some(p) = limits.max_processes {
        v.push((libc::RLIMIT_NPROC, p));
    }
    if let Some(f) = limits.max_open_files {
        v.push((libc::RLIMIT_NOFILE, f));
    }
    v
}

/// One run, for a validated connection: [`prepare`] (record, validation, nft check, grants,
/// TMPDIR, Landlock ruleset, cgroup), [`spawn_run`] (the run's process and its "ok"),
/// [`supervise`] (exit, timeout or the client going away) and [`collect`] (the tree killed, the
/// denials read). The decisions between them are pure: [`role_for`], [`nft_verdict`],
/// [`grants_layer`], [`private_net_for`], [`run_env`], [`started_layers`].
fn run(
    ctx: &Ctx,
    stream: &UnixStream,
    cred: libc::ucred,
    req: RunRequest,
    fds: Vec<OwnedFd>,
) -> Result<(), Fail> {
    let mut p = prepare(ctx, stream, cred, &req)?;
    let mut it = fds.into_iter();
    let (Some(fd0), Some(fd1), Some(fd2)) = (it.next(), it.next(), it.next()) else {
        return Err(Fail::Refused("expected 3 descriptors".into()));
    };
    let private_net = private_net_for(p.role, &p.net);
    let root_refs: Vec<(PathBuf, u64, u64, std::os::fd::BorrowedFd<'_>)> = p
        ._roots
        .iter()
        .map(|r| (r.path.clone(), r.dev, r.ino, r.fd.as_fd()))
        .collect();
    let mut ns_plan = crate::ns::NsPlan::new(&root_refs, &req.protected, private_net)
        .map_err(|e| Fail::Refused(e.to_string()))?;
    drop(root_refs);
    // Writable roots are bound idmapped: what the run creates is the caller's, and nothing the
    // caller owns there is the sandbox account's on the host.
    let ids: Vec<(PathBuf, u64, u64)> = p
        ._roots
        .iter()
        .map(|r| (r.path.clone(), r.dev, r.ino))
        .collect();
    ns_plan.idmapped = crate::ns::outermost(&ids);
    let idmap = crate::ns::IdMap {
        sandbox_uid: p.account.uid,
        caller_uid: cred.uid,
        sandbox_gid: p.gid,
        caller_gid: cred.gid,
        grant_gid: p.grant_gid,
        extra_gids: p.caller_groups.clone(),
    };
    if idmap.gid_map().is_none() {
        return Err(Fail::Refused(format!(
            "your primary group {} is a sandbox group; run with another primary group",
            cred.gid
        )));
    }
    // The mapping user namespace, made once per mapping and kept (one helper process per
    // caller, not per run).
    let userns = if ns_plan.idmapped.is_empty() {
        None
    } else {
        ctx.userns_for(&idmap)
    };
    ns_plan.idmap = Some(idmap);
    p.nidmapped = ns_plan.idmapped.len();
    let (nbinds, private_net) = (ns_plan.binds.len(), ns_plan.private_net);
    let limits = rlimits(&req.limits);
    let mut socket_roots = p.root_paths.clone();
    socket_roots.push(p.run_tmp.0.clone());
    let spec = crate::runner::ChildSpec {
        broker_pid: std::process::id() as i32,
        uid: p.account.uid,
        gid: p.gid,
        grant_gid: p.grant_gid,
        ns: ns_plan,
        cwd: p.cwd.clone(),
        limits: limits.clone(),
        landlock: p.abi > 0,
        program: req.program.clone(),
        args: req.args.clone(),
        env: run_env(&req.env, &p.run_tmp.0.to_string_lossy()),
        socket_roots,
        allowed_sockets: req.allow_unix_sockets.clone(),
    };
    let spec_bytes = serde_json::to_vec(&spec)
        .map_err(|e| Fail::Failed(format!("encoding the run specification: {e}")))?;
    let (childp, chan, start) = spawn_run(
        &mut p,
        &spec_bytes,
        userns.as_deref().map(|f| f.as_fd()),
        [fd0, fd1, fd2],
    )?;
    p.enforced.extend(started_layers(&Started {
        abi: p.abi,
        account: &p.account.name,
        uid: p.account.uid,
        gid: p.gid,
        grant_gid: p.grant_gid,
        nbinds,
        private_net,
        nenv: req.env.len(),
        nlimits: limits.len(),
    }));
    let _ = protocol::write_frame(
        &mut &*stream,
        &Reply::Started {
            account: p.account.name.clone(),
            uid: p.account.uid,
            pid: childp.pid,
            enforced: std::mem::take(&mut p.enforced),
            warnings: std::mem::take(&mut p.warnings),
        },
    );
    let deadline = req.timeout_ms.map(|ms| start + Duration::from_millis(ms));
    let Some(exit) = supervise(&childp, stream, deadline, p.cg.as_ref())? else {
        return Ok(());
    };
    let (duration_ms, denials) = collect(&chan, &childp, p.cg.take(), start);
    let _ = protocol::write_frame(
        &mut &*stream,
        &Reply::Exited {
            exit,
            duration_ms,
            denials,
        },
    );
    Ok(())
}

/// Everything a run needs before its process starts.
struct Prepared {
    role: Role,
    account: crate::record::AccountRecord,
    gid: u32,
    grant_gid: u32,
    net: crate::nft::NetConfig,
    /// Writable roots with an idmapped bind of their own.
    nidmapped: usize,
    /// The caller's groups (mapped onto themselves in the idmapped binds).
    caller_groups: Vec<u32>,
    /// Validated root descriptors, held for the whole run.
    _roots: Vec<ValidatedRoot>,
    root_paths: Vec<PathBuf>,
    run_tmp: RunTmp,
    cwd: validate::CwdPlan,
    abi: i32,
    ruleset_fd: Option<OwnedFd>,
    cg: Option<RunCgroup>,
    procs: Option<std::fs::File>,
    enforced: Vec<WireLayer>,
    warnings: Vec<String>,
}

/// Checks the request against the installation and the caller, verifies the nft rules of an
/// offline run, grants the writable roots, and creates the run's TMPDIR, Landlock ruleset and
/// cgroup.
fn prepare(
    ctx: &Ctx,
    stream: &UnixStream,
    cred: libc::ucred,
    req: &RunRequest,
) -> Result<Prepared, Fail> {
    let rec = caller_accounts(ctx, cred.uid)?;
    let rec = &rec;
    let uids = sandbox_uids(rec);
    validate::check_shape(req, cred.uid, &uids)?;
    let caller = caller_info(&cred);
    let mut roots = Vec::new();
    // Each root is opened once, with the caller's own filesystem credentials: nothing the caller
    // could not open is reached, and everything later goes from these descriptors.
    for r in &req.writable_roots {
        let opened = sys::users::with_fs_creds(caller.uid, caller.gid, &caller.groups, || {
            validate::open_root(r, caller.uid, &caller.groups, caller.home.as_deref())
        })
        .map_err(|e| Fail::Failed(format!("switching to your credentials: {e}")))?;
        roots.push(opened?);
    }
    // The start directory lies beneath a writable root or the workspace; the run's process
    // enters it after the switch to the sandbox account and Landlock, without magic links (see
    // `validate`).
    sys::cpath(&req.cwd).map_err(|e| Fail::Refused(format!("cwd: {e}")))?;
    let ids: Vec<(PathBuf, u64, u64)> = roots
        .iter()
        .map(|r| (r.path.clone(), r.dev, r.ino))
        .collect();
    let cwd = validate::check_cwd(&req.cwd, &req.workspace, &ids)?;
    let role = role_for(req.network)?;
    let account = rec.account_for(cred.uid, role).cloned().ok_or_else(|| {
        Fail::Failed(format!(
            "no {} account in the installation record",
            role.as_str()
        ))
    })?;
    let gid = rec.group.gid;
    if account.uid == 0 || gid == 0 {
        return Err(Fail::Failed(
            "sandbox account resolves to root; re-run `sudo stockade setup`".into(),
        ));
    }
    let mut enforced = Vec::new();
    let mut warnings = Vec::new();
    // Fail closed: an offline run without the nft table would have full network.
    if role == Role::Offline {
        // The rules themselves are compared, not just the table's presence: a flushed chain
        // leaves an empty table.
        let (table, want) = rec
            .nft
            .as_ref()
            .map(|n| (n.table.clone(), n.listing.clone()))
            .unwrap_or_default();
        enforced.push(nft_verdict(
            &table,
            account.uid,
            ctx.nft_table_ok(&table, &want),
        )?);
    }
    let (walked, any_walk, grant_gid) = ensure_grants(ctx, rec, stream, &caller, &roots, req)?;
    enforced.push(grants_layer(roots.len(), walked, any_walk));
    for r in roots.iter().filter(|r| !r.owned) {
        warnings.push(format!(
            "{} is writable by you but not owned by you: only the files you own below it were granted",
            r.path.display()
        ));
    }
    // Private TMPDIR for this run, in a root-owned directory (so no path component above it is
    // controlled by the sandbox account), group = the caller's grant group, removed at the end.
    let run_tmp = RunTmp::create(&ctx.opts.setup.state_dir.join("runs"), grant_gid)
        .map_err(|e| Fail::Failed(format!("creating the run's TMPDIR: {e}")))?;
    let abi = sys::landlock::kernel_abi();
    let root_fds: Vec<_> = roots.iter().map(|r| r.fd.as_fd()).collect();
    let ruleset = crate::landlock_layer::prepare(&root_fds, &[run_tmp.0.as_path()])
        .map_err(|e| Fail::Failed(e.to_string()))?;
    if abi == 0 {
        warnings.push("the kernel has no Landlock: writes are limited by the sandbox account's permissions only".into());
    }
    // The ruleset travels to the run's process as a descriptor: it was built here from the
    // validated root descriptors, so a symlink swapped in afterwards cannot redirect a rule.
    let ruleset_fd: Option<OwnedFd> = ruleset.into();
    if abi > 0 && ruleset_fd.is_none() {
        return Err(Fail::Failed(
            "the kernel supports Landlock but no ruleset could be created: refusing to run".into(),
        ));
    }
    let cg = match RunCgroup::create(&rec.prefix) {
        Ok(c) => {
            enforced.push(layer("cgroup", c.path().display().to_string()));
            Some(c)
        }
        Err(e) => {
            warnings.push(format!(
                "no per-run cgroup ({e}): processes that leave the session may outlive the run"
            ));
            None
        }
    };
    let procs = match &cg {
        Some(c) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open(c.procs_path())
                .map_err(|e| Fail::Failed(format!("{}: {e}", c.procs_path().display())))?,
        ),
        None => None,
    };
    Ok(Prepared {
        role,
        account,
        gid,
        grant_gid,
        net: rec.net.clone(),
        caller_groups: caller.groups.clone(),
        nidmapped: 0,
        root_paths: roots.iter().map(|r| r.path.clone()).collect(),
        _roots: roots,
        run_tmp,
        cwd,
        abi,
        ruleset_fd,
        cg,
        procs,
        enforced,
        warnings,
    })
}

/// The sandbox account for a network mode. Pure.
fn role_for(network: NetworkMode) -> Result<Role, Fail> {
    match network {
        NetworkMode::Off => Ok(Role::Offline),
        NetworkMode::On => Ok(Role::Online),
        // Fail closed: the domain allowlist needs a filtering proxy this tier does not have yet;
        // silently running online (or offline) would not be what the user asked for.
        NetworkMode::Allowlist => Err(Fail::Refused(
            "network mode \"allowlist\" is not supported by the elevated tier yet; use \"off\" (with --allow-port for a local proxy) or \"on\"".into(),
        )),
    }
}

/// The nft check of an offline run, as a layer or the refusal. Pure.
fn nft_verdict(table: &str, uid: u32, check: Result<NftCheck, String>) -> Result<WireLayer, Fail> {
    match check {
        Ok(NftCheck::Same { cached }) => Ok(layer(
            "network-nftables",
            format!(
                "table inet {table}: offline uid {uid} cut off (rules verified{})",
                if cached { "; ruleset generation unchanged since" } else { "" }
            ),
        )),
        Ok(NftCheck::Differs) => Err(Fail::Failed(format!(
            "nftables table inet {table} differs from the installed rules: refusing an offline run; `stockade setup --check` shows the difference, `sudo stockade setup` repairs it"
        ))),
        Ok(NftCheck::Missing) => Err(Fail::Failed(format!(
            "nftables table inet {table} is missing: refusing an offline run; run `sudo stockade setup` to repair"
        ))),
        Err(e) => Err(Fail::Failed(format!(
            "nftables table inet {table} could not be checked ({e}): refusing an offline run"
        ))),
    }
}

/// The grants layer. Pure.
fn grants_layer(nroots: usize, walked: u64, any_walk: bool) -> WireLayer {
    layer(
        "acl-grants",
        format!(
            "{nroots} writable root(s); {}",
            if any_walk {
                format!("{walked} inodes granted")
            } else {
                "already granted".into()
            }
        ),
    )
}

/// Offline runs get a private loopback — unless the installation opens host loopback ports (a
/// local proxy) or local binding to the offline account: those live on the host's loopback,
/// which a private network namespace would cut off; nftables alone then confines the run. Pure.
fn private_net_for(role: Role, net: &crate::nft::NetConfig) -> bool {
    role == Role::Offline && net.allowed_loopback_tcp_ports.is_empty() && !net.allow_local_binding
}

/// The command's environment: the request's, with the run's TMPDIR, and git told that the
/// caller's repositories are safe (they belong to the caller, not the sandbox account: without
/// this git refuses to work in them, "dubious ownership"; their metadata stays read-only
/// anyway). Pure.
fn run_env(env: &[(String, String)], tmp: &str) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.retain(|(k, _)| !matches!(k.as_str(), "TMPDIR" | "TMP" | "TEMP"));
    env.extend(["TMPDIR", "TMP", "TEMP"].map(|k| (k.to_string(), tmp.to_string())));
    env.extend(
        [
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "safe.directory"),
            ("GIT_CONFIG_VALUE_0", "*"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env
}

/// What the run's process reported in place once it said "ok".
struct Started<'a> {
    abi: i32,
    account: &'a str,
    uid: u32,
    gid: u32,
    grant_gid: u32,
    nbinds: usize,
    private_net: bool,
    nenv: usize,
    nlimits: usize,
}

/// The layers in force once the run's process said "ok" (it confirms every one of them). Pure.
fn started_layers(s: &Started) -> Vec<WireLayer> {
    let mut v = Vec::new();
    if s.abi > 0 {
        v.push(layer(
            "landlock",
            format!("ABI {}: writes only beneath the writable roots and the run's TMPDIR; signals and abstract sockets scoped", s.abi),
        ));
    }
    v.push(layer(
        "seccomp",
        "foreign ABIs killed; namespace, mount, keyring, bpf, perf, userfaultfd, io_uring, module, TIOCSTI/TIOCLINUX calls, datagram unix sockets, exotic socket families and set-user-ID/set-group-ID modes refused".into(),
    ));
    v.push(layer(
        "connect-gate",
        "every connect() performed by the run's supervisor: pathname unix sockets only beneath the writable roots, the run's TMPDIR or allow_unix_sockets".into(),
    ));
    v.push(layer(
        "sandbox-account",
        format!(
            "{} (uid {}, gid {}, groups [{}, {}]; verified)",
            s.account, s.uid, s.gid, s.gid, s.grant_gid
        ),
    ));
    v.push(layer(
        "mount-namespace",
        format!("{} protected path(s) and the directories above them bound onto themselves (read-only / not renameable)", s.nbinds),
    ));
    v.push(layer(
        "ipc-namespace",
        "System V IPC and POSIX message queues private to the run (none of the host's reachable, none left behind)".into(),
    ));
    if s.private_net {
        v.push(layer(
            "net-namespace",
            "no interfaces but a private loopback".into(),
        ));
    }
    v.push(layer("no-new-privs", "PR_SET_NO_NEW_PRIVS".into()));
    v.push(layer(
        "fd-closing",
        "only stdin/stdout/stderr reach the command".into(),
    ));
    v.push(layer("env-policy", format!("{} variables", s.nenv)));
    v.push(layer("rlimits", format!("{} limits", s.nlimits)));
    v
}

/// Kills the run's process, its process group and (when there is one) its whole cgroup.
fn kill_tree(cg: Option<&RunCgroup>, c: &sys::spawn::RawChild) {
    if let Some(cg) = cg {
        let _ = cg.kill_all(Duration::from_secs(5));
    }
    c.kill();
    let _ = sys::kill(-c.pid, libc::SIGKILL);
}

/// Starts the run's process in the run's cgroup with the caller's stdio, hands it the
/// specification and waits for its "ok" (the command is running, every layer is in place) or
/// the reason it could not start (then the tree is killed). Returns the process, the channel its
/// supervisor reports denials on, and the start time.
fn spawn_run(
    p: &mut Prepared,
    spec_bytes: &[u8],
    userns: Option<std::os::fd::BorrowedFd<'_>>,
    stdio: [OwnedFd; 3],
) -> Result<(sys::spawn::RawChild, UnixStream, Instant), Fail> {
    let (chan, child_chan) = UnixStream::pair()
        .map_err(|e| Fail::Failed(format!("socketpair for the run's process: {e}")))?;
    let chan_fd = child_chan.as_raw_fd();
    let ll_fd = p.ruleset_fd.as_ref().map_or(-1, |f| f.as_raw_fd());
    // The run's process is this very executable (`/proc/self/exe` names it in the forked child
    // too, even if the file was replaced since), started fresh with the hidden entry point: a
    // forked child of this multithreaded broker may only make raw syscalls before exec.
    let exe = c"/proc/self/exe";
    let c = |v: String| {
        std::ffi::CString::new(v).map_err(|_| Fail::Failed("NUL in an argument".into()))
    };
    let run_arg = c(crate::runner::ARG.to_string())?;
    let chan_arg = c(chan_fd.to_string())?;
    let ll_arg = c(ll_fd.to_string())?;
    let argv = [
        exe.as_ptr(),
        run_arg.as_ptr(),
        chan_arg.as_ptr(),
        ll_arg.as_ptr(),
        std::ptr::null(),
    ];
    let envp = [std::ptr::null()];
    // The caller's stdio becomes 0, 1, 2 of the run's process; copies numbered 3 or above, so
    // that no dup2 onto 0..2 overwrites another of them.
    let mut stdio_fds = Vec::with_capacity(3);
    for fd in stdio {
        stdio_fds.push(if fd.as_raw_fd() < 3 {
            sys::fs::dup_above_stdio(fd.as_fd()).map_err(|e| Fail::Failed(format!("dup: {e}")))?
        } else {
            fd
        });
    }
    let cg_dir = match &p.cg {
        Some(c) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(c.path())
            .ok(),
        None => None,
    };
    let start = Instant::now();
    let childp = sys::spawn::spawn_raw(&sys::spawn::RawSpawn {
        path: exe,
        argv: &argv,
        envp: &envp,
        stdio: [
            stdio_fds[0].as_raw_fd(),
            stdio_fds[1].as_raw_fd(),
            stdio_fds[2].as_raw_fd(),
        ],
        keep: [chan_fd, ll_fd],
        cgroup_dir: cg_dir.as_ref().map_or(-1, |f| f.as_raw_fd()),
        cgroup_procs: p.procs.as_ref().map_or(-1, |f| f.as_raw_fd()),
    })
    .map_err(|e| Fail::Failed(format!("cannot start the run's process: {e}")))?;
    drop(stdio_fds);
    drop(cg_dir);
    drop(p.procs.take());
    drop(child_chan);
    drop(p.ruleset_fd.take());
    let answer = handshake(&chan, spec_bytes, userns);
    if let Some(idmap) = answer.as_deref().ok().and_then(crate::runner::parse_ready) {
        if p.nidmapped > 0 {
            match idmap {
                None => p.enforced.push(layer(
                    "idmapped-roots",
                    format!("{} writable root(s) bound idmapped: what the run creates there is yours (uid and group), and nothing of yours there is the sandbox account's on the host", p.nidmapped),
                )),
                Some(why) => p.warnings.push(format!(
                    "the writable roots are not idmapped ({why}): files the run creates belong to your own sandbox account {}; allow root user namespaces (user.max_user_namespaces > 0) for files owned by you",
                    p.account.name
                )),
            }
        }
        return Ok((childp, chan, start));
    }
    kill_tree(p.cg.as_ref(), &childp);
    let _ = childp.wait();
    Err(start_failure(answer))
}

/// Hands over the specification and reads the run's process's one-line answer.
fn handshake(
    chan: &UnixStream,
    spec_bytes: &[u8],
    userns: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Result<String> {
    use std::io::Write;
    // First one byte carrying the mapping user namespace (or nothing), then the specification.
    let fds: Vec<i32> = userns.iter().map(|f| f.as_raw_fd()).collect();
    sys::sockets::send_with_fds(chan.as_fd(), &[0], &fds).map_err(io::Error::from)?;
    (&*chan).write_all(spec_bytes)?;
    chan.shutdown(std::net::Shutdown::Write)?;
    chan.set_read_timeout(Some(Duration::from_secs(30)))?;
    // "ok\n", or the reason the command could not start (then end of stream).
    let mut s = Vec::new();
    let mut byte = [0u8; 1];
    while s.len() < 64 * 1024 && (&*chan).read(&mut byte)? == 1 {
        if byte[0] == b'\n' {
            break;
        }
        s.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&s).into_owned())
}

/// Why the run's process did not say "ok", as the client's failure. Pure.
fn start_failure(answer: io::Result<String>) -> Fail {
    if let Ok(s) = &answer {
        if let Some((code, reason)) = crate::runner::parse_exec_failed(s) {
            return Fail::Exec(code, reason.to_string());
        }
    }
    Fail::Failed(match answer {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => "the run's process exited before starting the command".into(),
        Err(e) => format!("the run's process did not report: {e}"),
    })
}

/// Waits for the run's process to exit, the deadline to pass (the tree is killed: timed out) or
/// the client to go away (the tree is killed: `None`, nothing left to report).
fn supervise(
    childp: &sys::spawn::RawChild,
    stream: &UnixStream,
    deadline: Option<Instant>,
    cg: Option<&RunCgroup>,
) -> Result<Option<WireExit>, Fail> {
    loop {
        let timeout_ms = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
            None => -1,
        };
        let ready = sys::spawn::poll_read(&[childp.pidfd.as_fd(), stream.as_fd()], timeout_ms)
            .map_err(|e| Fail::Failed(format!("poll: {e}")))?;
        if ready[0] {
            let st = childp
                .wait()
                .map_err(|e| Fail::Failed(format!("wait: {e}")))?;
            return Ok(Some(match st {
                (Some(c), _) => WireExit::Code(c),
                (None, Some(s)) => WireExit::Signal(s),
                _ => WireExit::Code(-1),
            }));
        }
        if ready[1] {
            // The client sends nothing after the request: readable means it went away.
            kill_tree(cg, childp);
            let _ = childp.wait();
            return Ok(None);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            kill_tree(cg, childp);
            let _ = childp.wait();
            return Ok(Some(WireExit::TimedOut));
        }
    }
}

/// After the command: everything it started dies with it (the cgroup is removed), then the
/// supervisor's denial lines are read (it has exited, so the stream ends). Returns the run's
/// duration (up to the kill) and the denials.
fn collect(
    chan: &UnixStream,
    childp: &sys::spawn::RawChild,
    cg: Option<RunCgroup>,
    start: Instant,
) -> (u64, Vec<crate::protocol::WireDenial>) {
    if let Some(cg) = &cg {
        let _ = cg.kill_all(Duration::from_secs(5));
    }
    let _ = sys::kill(-childp.pid, libc::SIGKILL);
    drop(cg);
    let duration_ms = start.elapsed().as_millis() as u64;
    let _ = chan.set_read_timeout(Some(Duration::from_secs(1)));
    let mut rest = String::new();
    let _ = chan.take(1 << 20).read_to_string(&mut rest);
    (duration_ms, crate::runner::parse_denials(&rest))
}

/// A run's private temporary directory; removed (symlink-safely) on drop.
struct RunTmp(PathBuf);

impl RunTmp {
    /// `base/run-*`: owned by root, group = the caller's grant group, mode 0770, so only runs
    /// for the same caller can enter it.
    fn create(base: &Path, grant_gid: u32) -> io::Result<RunTmp> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(base)?;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o711))?;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("run-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o770).create(&dir)?;
        std::os::unix::fs::lchown(&dir, Some(0), Some(grant_gid))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770))?;
        Ok(RunTmp(dir))
    }
}

impl Drop for RunTmp {
    fn drop(&mut self) {
        // std's remove_dir_all never follows symlinks inside the tree; every component above
        // the run directory is root-owned.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn layer(l: &str, d: String) -> WireLayer {
    WireLayer {
        layer: l.into(),
        detail: d,
    }
}

/// Path of the socket a client should use given a layout (record's, or the default).
pub fn socket_for(opts: &SetupOptions) -> PathBuf {
    crate::setup::installed(opts)
        .map(|r| r.socket_path)
        .unwrap_or_else(|| opts.socket_path.clone())
}

/// Whether `p` exists as a socket.
pub fn socket_exists(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[WireLayer]) -> Vec<&str> {
        v.iter().map(|l| l.layer.as_str()).collect()
    }

    #[test]
    fn per_user_slots_are_capped_and_released() {
        let p = Arc::new(PerUser::default());
        let held: Vec<Slot> = (0..MAX_PER_USER).filter_map(|_| p.take(1000)).collect();
        assert_eq!(held.len(), MAX_PER_USER);
        assert!(p.take(1000).is_none(), "one user's cap");
        assert!(p.take(1001).is_some(), "another user is not affected");
        drop(held);
        assert!(
            p.take(1000).is_some(),
            "slots come back when connections end"
        );
        assert!(p.0.lock().unwrap().get(&1000).is_none_or(|n| *n <= 1));
    }

    #[test]
    fn role_follows_network_and_allowlist_is_refused() {
        assert_eq!(role_for(NetworkMode::Off).ok(), Some(Role::Offline));
        assert_eq!(role_for(NetworkMode::On).ok(), Some(Role::Online));
        assert!(matches!(
            role_for(NetworkMode::Allowlist),
            Err(Fail::Refused(m)) if m.contains("allowlist")
        ));
    }

    #[test]
    fn nft_verdict_fails_closed() {
        let l = nft_verdict("stockade", 999, Ok(NftCheck::Same { cached: true })).ok();
        assert!(l.is_some_and(|l| l.layer == "network-nftables"
            && l.detail.contains("uid 999")
            && l.detail.contains("unchanged since")));
        for bad in [
            Ok(NftCheck::Differs),
            Ok(NftCheck::Missing),
            Err("EPERM".into()),
        ] {
            assert!(matches!(
                nft_verdict("stockade", 999, bad),
                Err(Fail::Failed(m)) if m.contains("refusing an offline run")
            ));
        }
    }

    #[test]
    fn grants_layer_says_whether_it_walked() {
        assert_eq!(
            grants_layer(2, 5, true).detail,
            "2 writable root(s); 5 inodes granted"
        );
        assert_eq!(
            grants_layer(1, 0, false).detail,
            "1 writable root(s); already granted"
        );
    }

    #[test]
    fn private_loopback_only_offline_without_host_loopback_openings() {
        let mut net = crate::nft::NetConfig {
            allowed_loopback_tcp_ports: vec![],
            allow_local_binding: false,
        };
        assert!(private_net_for(Role::Offline, &net));
        assert!(!private_net_for(Role::Online, &net));
        net.allowed_loopback_tcp_ports.push(8080);
        assert!(!private_net_for(Role::Offline, &net));
        net.allowed_loopback_tcp_ports.clear();
        net.allow_local_binding = true;
        assert!(!private_net_for(Role::Offline, &net));
    }

    #[test]
    fn run_env_replaces_temp_vars_and_marks_repos_safe() {
        let env = vec![
            ("TMPDIR".to_string(), "/tmp".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
            ("TEMP".to_string(), "x".to_string()),
        ];
        let e = run_env(&env, "/run/t");
        let get = |k: &str| {
            e.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("TMPDIR"), vec!["/run/t"]);
        assert_eq!(get("TMP"), vec!["/run/t"]);
        assert_eq!(get("TEMP"), vec!["/run/t"]);
        assert_eq!(get("PATH"), vec!["/bin"]);
        assert_eq!(get("GIT_CONFIG_KEY_0"), vec!["safe.directory"]);
    }

    #[test]
    fn started_layers_claim_only_what_is_in_force() {
        let s = Started {
            abi: 0,
            account: "stockade-offline",
            uid: 999,
            gid: 995,
            grant_gid: 994,
            nbinds: 1,
            private_net: false,
            nenv: 2,
            nlimits: 1,
        };
        let v = started_layers(&s);
        assert_eq!(
            names(&v),
            vec![
                "seccomp",
                "connect-gate",
                "sandbox-account",
                "mount-namespace",
                "ipc-namespace",
                "no-new-privs",
                "fd-closing",
                "env-policy",
                "rlimits"
            ]
        );
        assert!(v[2].detail.contains("groups [995, 994]"));
        let v = started_layers(&Started {
            abi: 7,
            private_net: true,
            ..s
        });
        assert_eq!(names(&v)[0], "landlock");
        assert!(names(&v).contains(&"net-namespace"));
    }

    #[test]
    fn a_start_failure_keeps_the_exec_status() {
        assert!(matches!(
            start_failure(Ok(String::new())),
            Fail::Failed(m) if m.contains("exited before starting")
        ));
        assert!(matches!(
            start_failure(Ok("landlock: EPERM".into())),
            Fail::Failed(m) if m == "landlock: EPERM"
        ));
        let line = format!(
            "{} 127 cannot start \"x\": No such file",
            crate::runner::EXEC_FAILED
        );
        assert!(matches!(
            start_failure(Ok(line)),
            Fail::Exec(127, m) if m.starts_with("cannot start")
        ));
    }

    #[test]
    fn rlimits_from_policy() {
        let l = stockade_policy::model::LimitsPolicy {
            timeout_secs: None,
            max_memory: Some(1 << 30),
            max_processes: Some(64),
            max_open_files: None,
        };
        let r = rlimits(&l);
        assert_eq!(
            r,
            vec![
                (libc::RLIMIT_CORE, 0),
                (libc::RLIMIT_AS, 1 << 30),
                (libc::RLIMIT_NPROC, 64)
            ]
        );
    }
}
