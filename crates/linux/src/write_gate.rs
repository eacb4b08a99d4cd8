//! The write gate's policy side in the unelevated tier: the [`Judge`] the supervisor
//! ([`stockade_sys::fsgate`]) asks about every write-intent call, built on
//! [`stockade_policy::protect::Protector`], and the created-log the post-run git check reads
//! instead of walking every writable root.
//!
//! The judge runs in init (pid 1 of the sandbox, confined like the command). Refusals become
//! `D` report records ([`record_denial`]); the created-log is written as `C`/`T` records and a
//! final `G` once every process of the run is gone ([`CreatedLogger::records`]).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;
use stockade_policy::plan::Plan;
use stockade_policy::protect::{self, Protector, ProtectorInput};
use stockade_sys::fsgate::{AttrKind, CreateKind, FsOp, Judge, Refusal};

/// Entries the created-log holds; one more sets the overflow flag and the post-run check walks
/// every writable root instead (safe, only slower).
pub const MAX_LOGGED: usize = 50_000;

/// Refusals reported; the command could otherwise grow the report without bound by repeating
/// one. One more record says the rest were dropped.
pub const MAX_DENIALS: usize = 1000;

/// The git-relevant creations of a run (bounded).
#[derive(Default)]
pub struct CreatedLogger {
    /// Names created or linked into place that git could act on.
    paths: Mutex<Vec<PathBuf>>,
    /// Targets of renames (a directory moved into place brings contents the gate never saw
    /// being created; the post-run check examines each that is a directory then).
    moved: Mutex<Vec<PathBuf>>,
    count: AtomicUsize,
    overflow: AtomicBool,
}

/// Names git reads wherever they are (a gitdir's own files, a bare repository's `HEAD`).
const GIT_NAMES: &[&str] = &[
    ".git",
    "HEAD",
    // A directory whose `HEAD` is older than the run becomes a bare repository when these
    // appear (the post-run check looks at the `HEAD` beside each).
    "objects",
    "refs",
    "config",
    "config.worktree",
    "commondir",
    "gitdir",
    "git-rebase-todo",
];

/// Entries directly beneath a `.git` that hold only data git never runs (objects, refs,
/// reflogs): not logged, so a commit does not fill the log.
const GIT_DATA: &[&str] = &["objects", "refs", "logs"];

/// Whether the creation of `path` matters to the post-run check: a name in [`GIT_NAMES`], or
/// anything beneath a `.git` component but its object/ref/reflog data and lock files.
pub fn git_relevant(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default();
    if GIT_NAMES.iter().any(|n| OsStr::new(n) == name) {
        return true;
    }
    if name.as_bytes().ends_with(b".lock") {
        return false;
    }
    let comps: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    // The innermost `.git` component that is not the last component.
    let Some(i) = comps[..comps.len().saturating_sub(1)]
        .iter()
        .rposition(|c| *c == OsStr::new(".git"))
    else {
        return false;
    };
    !comps
        .get(i + 1)
        .is_some_and(|next| GIT_DATA.iter().any(|d| OsStr::new(d) == *next))
}

impl CreatedLogger {
    fn push(&self, list: &Mutex<Vec<PathBuf>>, path: &Path) {
        if self.count.fetch_add(1, Ordering::Relaxed) >= MAX_LOGGED {
            self.overflow.store(true, Ordering::Relaxed);
            return;
        }
        match list.lock() {
            Ok(mut v) => v.push(path.to_path_buf()),
            // A poisoned log is an incomplete one: the post-run check walks.
            Err(_) => self.overflow.store(true, Ordering::Relaxed),
        }
    }

    /// A name was created (or hard-linked) at `path`.
    pub fn created(&self, path: &Path) {
        if git_relevant(path) {
            self.push(&self.paths, path);
        }
    }

    /// Something is about to be renamed to `to` (logged before the call: a failed rename leaves
    /// an entry that the post-run check finds missing and skips).
    pub fn moved(&self, to: &Path) {
        self.push(&self.moved, to);
    }

    /// The report records of the log: `C path`, `T path`, then `G complete|overflow`.
    pub fn records(&self) -> Vec<(char, String)> {
        let mut out = Vec::new();
        let mut complete = !self.overflow.load(Ordering::Relaxed);
        for (tag, list) in [('C', &self.paths), ('T', &self.moved)] {
            match list.lock() {
                Ok(v) => out.extend(
                    v.iter()
                        .map(|p| (tag, super::launch::encode_path(p.as_os_str().as_bytes()))),
                ),
                Err(_) => complete = false,
            }
        }
        out.push((
            'G',
            if complete { "complete" } else { "overflow" }.to_string(),
        ));
        out
    }
}

/// The judge: [`Protector`]'s decisions, and the created-log.
pub struct GateJudge {
    protector: Protector,
    /// What the run created (read by init after the run).
    pub log: CreatedLogger,
}

impl GateJudge {
    /// The judge for `plan` (made for the gate, [`Plan::write_gate`]), for a run starting at
    /// `run_start`. Built on the host before the sandbox exists: the protector reads the user's
    /// git configuration, which the sandbox may mask.
    pub fn new(plan: &Plan, run_start: SystemTime) -> Result<Self, protect::ProtectError> {
        let input = ProtectorInput::from_plan(plan, &plan.protected_names, run_start)?;
        Ok(GateJudge {
            protector: Protector::new(input)?,
            log: CreatedLogger::default(),
        })
    }
}

/// `FsOp` (the mechanism's) as `protect::Op` (the policy's).
fn to_op<'a>(op: &FsOp<'a>) -> protect::Op<'a> {
    use protect::Op;
    match *op {
        FsOp::Create { path, kind } => Op::Create {
            path,
            kind: match kind {
                CreateKind::File => protect::CreateKind::File,
                CreateKind::Dir => protect::CreateKind::Dir,
                CreateKind::Symlink => protect::CreateKind::Symlink,
                CreateKind::Node => protect::CreateKind::Node,
                CreateKind::Socket => protect::CreateKind::Socket,
            },
        },
        FsOp::OpenWrite { path, trunc } => Op::OpenWrite { path, trunc },
        FsOp::Remove { path, dir } => Op::Remove { path, dir },
        FsOp::Rename {
            from, to, exchange, ..
        } => Op::Rename { from, to, exchange },
        FsOp::Link { from, to } => Op::Link { from, to },
        FsOp::SetAttr { path, what } => Op::SetAttr {
            path,
            what: match what {
                AttrKind::Mode => protect::AttrKind::Mode,
                AttrKind::Owner => protect::AttrKind::Owner,
                AttrKind::Times => protect::AttrKind::Times,
                AttrKind::Xattr => protect::AttrKind::Xattr,
                AttrKind::Truncate => protect::AttrKind::Truncate,
            },
        },
    }
}

/// A field of a `D` record: no tab or newline (the record's separators; each becomes a space,
/// as the report pipe does with every newline). Everything else is kept as data: the host
/// escapes it before any terminal.
fn field(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
        .collect()
}

impl Judge for GateJudge {
    fn judge(&self, op: &FsOp<'_>) -> Result<(), Refusal> {
        let decision = self.protector.check(&to_op(op));
        if decision.is_ok() {
            match *op {
                FsOp::Rename {
                    from, to, exchange, ..
                } => {
                    self.log.moved(to);
                    if exchange {
                        self.log.moved(from);
                    }
                }
                FsOp::Link { to, .. } => self.log.created(to),
                _ => {}
            }
        }
        decision.map_err(|d| Refusal {
            errno: libc::EACCES,
            // `target\tmessage`: the record's target and its one line (see `record_denial`).
            detail: format!(
                "{}\t{}",
                field(&d.path.display().to_string()),
                field(&d.to_string())
            ),
        })
    }

    fn created(&self, path: &Path, _kind: CreateKind) {
        self.log.created(path);
    }
}

/// The `D` record for one refusal of the gate (connect or filesystem), or `None` once
/// [`MAX_DENIALS`] were reported (`count` counts them all).
pub fn record_denial(d: &stockade_sys::fsgate::Denial, count: &AtomicUsize) -> Option<String> {
    let n = count.fetch_add(1, Ordering::Relaxed);
    let what = match d {
        stockade_sys::fsgate::Denial::Connect(c) => ("connect", field(&c.target)),
        stockade_sys::fsgate::Denial::Fs(r) => ("write-gate", r.detail.clone()),
    };
    match n {
        n if n < MAX_DENIALS => {
            // One write below PIPE_BUF: records of concurrent workers never interleave.
            let mut rec = format!("D {}\t{}", what.0, what.1);
            if rec.len() > 4000 {
                let mut cut = 4000;
                while !rec.is_char_boundary(cut) {
                    cut -= 1;
                }
                rec.truncate(cut);
            }
            rec.push('\n');
            Some(rec)
        }
        MAX_DENIALS => Some(format!(
            "D {}\tmore than {MAX_DENIALS} refusals; the rest not listed\n",
            what.0
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_git_relevant_creations_are_logged() {
        for p in [
            "/ws/pkg/sub/.git",
            "/ws/bare/HEAD",
            "/ws/x/.git/hooks/pre-commit",
            "/ws/x/.git/config",
            "/ws/x/.git/rebase-merge/git-rebase-todo",
            "/ws/x/.git/sequencer/todo",
            "/ws/x/.git/worktrees/w/commondir",
            "/ws/x/.git/modules/m/hooks/post-checkout",
            "/ws/x/.git/info/attributes",
            "/ws/y/gitdir",
            "/ws/d/objects",
            "/ws/d/refs",
        ] {
            assert!(git_relevant(Path::new(p)), "{p}");
        }
        for p in [
            "/ws/node_modules/pkg/index.js",
            "/ws/x/.git/objects/ab/cdef",
            "/ws/x/.git/refs/heads/main",
            "/ws/x/.git/logs/HEAD.x",
            "/ws/x/.git/index.lock",
            "/ws/target/debug/deps/foo.d",
        ] {
            assert!(!git_relevant(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn the_log_is_bounded_and_says_so() {
        let log = CreatedLogger::default();
        for i in 0..MAX_LOGGED + 5 {
            log.created(&PathBuf::from(format!("/ws/r{i}/.git")));
        }
        let recs = log.records();
        assert_eq!(recs.len(), MAX_LOGGED + 1);
        assert_eq!(recs.last().map(|r| r.1.as_str()), Some("overflow"));
        let small = CreatedLogger::default();
        small.created(Path::new("/ws/a/.git"));
        small.moved(Path::new("/ws/moved"));
        let recs = small.records();
        assert_eq!(recs[0].0, 'C');
        assert_eq!(recs[1], ('T', "/ws/moved".to_string()));
        assert_eq!(recs[2], ('G', "complete".to_string()));
    }

    #[test]
    fn denial_records_are_bounded_one_line_each() {
        let count = AtomicUsize::new(0);
        let d = stockade_sys::fsgate::Denial::Fs(Refusal {
            errno: libc::EACCES,
            detail: "/ws/.mcp.json\trefused: create /ws/.mcp.json".into(),
        });
        let first = record_denial(&d, &count).unwrap();
        assert_eq!(first.matches('\n').count(), 1);
        assert!(first.starts_with("D write-gate\t/ws/.mcp.json\trefused"));
        for _ in 1..MAX_DENIALS {
            assert!(record_denial(&d, &count).is_some());
        }
        assert!(record_denial(&d, &count)
            .unwrap()
            .contains("the rest not listed"));
        assert!(record_denial(&d, &count).is_none());
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// The judge's own share of an intercepted call (the supervisor's is measured by
    /// `bench/gate.py`): `cargo test -p stockade-linux --release judge_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn judge_cost() {
        let dir = std::env::temp_dir().join(format!("judge-cost-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b/c")).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let policy = stockade_policy::config::default_policy().unwrap();
        let plan = stockade_policy::plan::resolve(
            &policy,
            &stockade_policy::plan::PlanRequest {
                workspace: dir.clone(),
                cwd: dir.clone(),
                home: Some(dir.join("home")),
                env: vec![],
                state_dir: PathBuf::from("off"),
                write_gate: true,
            },
        )
        .unwrap();
        let j = GateJudge::new(&plan, SystemTime::now()).unwrap();
        let p = dir.join("a/b/c/file.js");
        let n = 20_000u32;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let _ = j.judge(&FsOp::Create {
                path: &p,
                kind: CreateKind::File,
            });
        }
        let per = t.elapsed() / n;
        eprintln!("judge: {per:?} per Create at depth 3");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
