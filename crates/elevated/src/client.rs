//! The unprivileged side: [`ElevatedBackend`] sends a plan to the broker and waits.

use crate::protocol::{self, Reply, RunRequest, WireExit, PROTOCOL_VERSION};
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use stockade_policy::backend::{
    Availability, Backend, Command, EnforcedLayer, ExitKind, LaunchFailure, RunOptions, RunOutcome,
};
use stockade_policy::Plan;
use stockade_sys as sys;

/// Stable tier name.
pub const TIER: &str = "linux-elevated";

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Cannot reach the broker.
    #[error("cannot reach the stockade broker at {path}: {source}; is it installed (`sudo stockade setup`) and running (`systemctl start stockade-broker.socket`, or `sudo stockade broker` in containers)?")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Protocol/IO failure.
    #[error("talking to the broker: {0}")]
    Io(#[from] io::Error),
    /// Plan not representable.
    #[error("{0}")]
    Unsupported(String),
    /// The broker refused.
    #[error("the broker refused the run: {0}")]
    Refused(String),
    /// The broker failed.
    #[error("the broker failed: {0}")]
    Failed(String),
    /// The command could not be executed.
    #[error("{message}")]
    Exec {
        /// Why.
        message: String,
        /// 127 not found, 126 not executable.
        exit_code: i32,
    },
    /// The connection ended early.
    #[error("the broker closed the connection before the command ended")]
    Closed,
    /// No installation record (or an unfinished setup).
    #[error("the elevated tier is not installed: run `sudo stockade setup` once (and keep `stockade broker` running where systemd is absent)")]
    NotInstalled,
}

impl LaunchFailure for ClientError {
    fn exit_code(&self) -> i32 {
        match self {
            ClientError::Exec { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }

    fn tier_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::NotInstalled | ClientError::Connect { .. }
        )
    }
}

/// The elevated backend (client side).
#[derive(Debug, Clone)]
pub struct ElevatedBackend {
    /// Broker socket.
    pub socket_path: PathBuf,
    /// Draw a progress line on stderr during a first grant (only if stderr is a terminal).
    pub progress: bool,
    /// The installation record that says the tier is installed.
    pub record_path: PathBuf,
}

impl Default for ElevatedBackend {
    fn default() -> Self {
        let layout = crate::setup::SetupOptions::default();
        ElevatedBackend {
            socket_path: crate::broker::socket_for(&layout),
            progress: true,
            record_path: layout.record_path(),
        }
    }
}

impl ElevatedBackend {
    /// Is there a finished installation record?
    fn installed(&self) -> bool {
        crate::record::load(&self.record_path)
            .ok()
            .flatten()
            .is_some_and(|r| r.state == crate::record::RecordState::Installed)
    }
}

fn utf8(what: &str, s: &std::ffi::OsStr) -> Result<String, ClientError> {
    s.to_str().map(str::to_string).ok_or_else(|| {
        ClientError::Unsupported(format!(
            "{what} {s:?} is not valid UTF-8 (the elevated tier's protocol carries UTF-8 only)"
        ))
    })
}

/// Builds the wire request from a plan. Pure.
pub fn request_from_plan(
    plan: &Plan,
    cmd: &Command,
    opts: &RunOptions,
) -> Result<RunRequest, ClientError> {
    if plan.network == stockade_policy::NetworkMode::Allowlist {
        return Err(ClientError::Unsupported(
            "network mode \"allowlist\" is not supported by the elevated tier yet; use \"off\" or \"on\", or the unelevated tier".into(),
        ));
    }
    let timeout = opts
        .timeout
        .or(plan.limits.timeout_secs.map(Duration::from_secs));
    let mut env = Vec::with_capacity(plan.env.len());
    for (k, v) in &plan.env {
        env.push((
            utf8("environment variable", k)?,
            utf8("environment value", v)?,
        ));
    }
    Ok(RunRequest {
        version: PROTOCOL_VERSION,
        network: plan.network,
        workspace: plan.workspace.clone(),
        cwd: plan.cwd.clone(),
        writable_roots: plan.writable_roots.clone(),
        protected: protected_paths(plan),
        deny_read: plan.deny_read.iter().map(|p| p.path.clone()).collect(),
        allow_unix_sockets: plan.allow_unix_sockets.clone(),
        program: utf8("program", &cmd.program)?,
        args: cmd
            .args
            .iter()
            .map(|a| utf8("argument", a))
            .collect::<Result<_, _>>()?,
        env,
        limits: plan.limits.clone(),
        timeout_ms: timeout.map(|t| t.as_millis() as u64),
    })
}

impl ElevatedBackend {
    /// Sends a request and waits for the end of the run.
    pub fn run_request(&self, req: &RunRequest) -> Result<RunOutcome, ClientError> {
        let stream =
            UnixStream::connect(&self.socket_path).map_err(|source| ClientError::Connect {
                path: self.socket_path.clone(),
                source,
            })?;
        let frame = protocol::encode(req)?;
        // A broker that refuses before reading (busy, too many connections of ours) has closed
        // its end: then its answer, not the broken pipe, is the reason shown.
        let mut send_err = sys::sockets::send_with_fds(stream.as_fd(), &frame, &[0, 1, 2])
            .map_err(io::Error::from)
            .and_then(|sent| (&stream).write_all(&frame[sent..]))
            .err();
        let start = Instant::now();
        let show = self.progress && io::stderr().is_terminal();
        let mut enforced = Vec::new();
        let mut warnings = Vec::new();
        let mut drew = false;
        loop {
            let msg: Option<Reply> = match protocol::read_frame(&mut &stream) {
                Ok(m) => m,
                Err(e) => return Err(send_err.take().map_or_else(|| e.into(), Into::into)),
            };
            match msg {
                None => return Err(send_err.take().map_or(ClientError::Closed, Into::into)),
                Some(Reply::Progress { root, inodes }) => {
                    if show {
                        eprint!(
                            "\rstockade: granting sandbox access to {}: {inodes} files…",
                            root.display()
                        );
                        drew = true;
                    }
                }
                Some(Reply::Started {
                    enforced: e,
                    warnings: w,
                    ..
                }) => {
                    if drew {
                        eprintln!();
                        drew = false;
                    }
                    enforced = e
                        .into_iter()
                        .map(|l| EnforcedLayer {
                            layer: l.layer,
                            detail: l.detail,
                        })
                        .collect();
                    warnings = w;
                }
                Some(Reply::Exited {
                    exit,
                    duration_ms,
                    denials,
                }) => {
                    let _ = start;
                    return Ok(RunOutcome {
                        tier: TIER.into(),
                        exit: match exit {
                            WireExit::Code(c) => ExitKind::Code(c),
                            WireExit::Signal(s) => ExitKind::Signal(s),
                            WireExit::TimedOut => ExitKind::TimedOut,
                        },
                        duration: Duration::from_millis(duration_ms),
                        enforced,
                        warnings,
                        denials: denials
                            .into_iter()
                            .map(|d| stockade_policy::backend::Denial {
                                kind: d.kind,
                                target: d.target,
                                message: None,
                            })
                            .collect(),
                        created: None,
                    });
                }
                Some(Reply::Refused { reason }) => return Err(ClientError::Refused(reason)),
                Some(Reply::Failed {
                    message,
                    exit_code: Some(exit_code),
                }) => return Err(ClientError::Exec { message, exit_code }),
                Some(Reply::Failed { message, .. }) => return Err(ClientError::Failed(message)),
            }
        }
    }
}

impl Backend for ElevatedBackend {
    type Error = ClientError;

    fn tier(&self) -> &'static str {
        TIER
    }

    /// Installed (a finished installation record) and the broker answers on its socket.
    fn availability(&self) -> Availability {
        if !self.installed() {
            return Availability::not_installed(ClientError::NotInstalled.to_string());
        }
        match UnixStream::connect(&self.socket_path) {
            Ok(_) => Availability::ready(format!(
                "installed; the broker answers at {}",
                self.socket_path.display()
            )),
            Err(source) => Availability::unavailable(
                ClientError::Connect {
                    path: self.socket_path.clone(),
                    source,
                }
                .to_string(),
            ),
        }
    }

    fn run(
        &self,
        plan: &Plan,
        cmd: &Command,
        opts: &RunOptions,
    ) -> Result<RunOutcome, ClientError> {
        if !self.installed() {
            return Err(ClientError::NotInstalled);
        }
        if opts.pty {
            return Err(ClientError::Unsupported(
                "the elevated tier does not allocate a pty yet; run without --pty".into(),
            ));
        }
        if !opts.pass_fds.is_empty() {
            return Err(ClientError::Unsupported(
                "the elevated tier passes only stdin/stdout/stderr".into(),
            ));
        }
        let mut outcome = self.run_request(&request_from_plan(plan, cmd, opts)?)?;
        if plan.git_mode == stockade_policy::model::GitMode::Commit {
            outcome.warnings.push(
                "git.mode = \"commit\" is implemented by the unelevated tier only: on this tier \
                 every .git stayed read-only (docs/git.md)"
                    .into(),
            );
        }
        Ok(outcome)
    }
}

/// The paths the broker keeps read-only. This tier does not implement `git.mode = "commit"` yet
/// (docs/git.md): in that mode the plan protects only a repository's code-running entries, so
/// every launch repository's gitdir and common directory are added back whole.
fn protected_paths(plan: &Plan) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = plan.protected.iter().map(|p| p.path.clone()).collect();
    if plan.git_mode == stockade_policy::model::GitMode::Commit {
        let whole: Vec<&std::path::PathBuf> = plan
            .git_repos
            .iter()
            .flat_map(|r| [&r.gitdir, &r.common])
            .collect();
        // What lies inside a gitdir protected whole is redundant.
        v.retain(|p| !whole.iter().any(|g| p.starts_with(g) && p != *g));
        for g in whole {
            if !v.contains(g) {
                v.push(g.clone());
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockade_policy::model::LimitsPolicy;
    use stockade_policy::plan::{PathKind, PlannedPath, TempPlan};
    use stockade_policy::NetworkMode;

    #[test]
    fn plan_maps_to_request() {
        let plan = Plan {
            workspace: "/w".into(),
            cwd: "/w/sub".into(),
            writable_roots: vec!["/w".into()],
            protected: vec![PlannedPath {
                path: "/w/.git".into(),
                kind: PathKind::Dir,
                reason: ".git".into(),
            }],
            protected_missing: vec![],
            deny_read: vec![PlannedPath {
                path: "/h/.ssh".into(),
                kind: PathKind::Dir,
                reason: "secret".into(),
            }],
            allow_unix_sockets: vec![],
            network: NetworkMode::On,
            env: vec![("PATH".into(), "/bin".into())],
            env_removed: vec![],
            limits: LimitsPolicy {
                timeout_secs: Some(5),
                ..Default::default()
            },
            temp: TempPlan {
                private: false,
                persist_dir: None,
            },
            protected_symlinks: vec![],
            git_mode: stockade_policy::model::GitMode::ReadOnly,
            git_repos: vec![],
            allowed_domains: vec![],
            warnings: vec![],
            overlay: Default::default(),
            write_gate: false,
            protected_names: vec![],
            windows_lock_protected_dacls: true,
        };
        let cmd = Command {
            program: "sh".into(),
            args: vec!["-c".into(), "x".into()],
        };
        let r = request_from_plan(&plan, &cmd, &RunOptions::default()).unwrap();
        assert_eq!(r.protected, vec![PathBuf::from("/w/.git")]);
        assert_eq!(r.deny_read, vec![PathBuf::from("/h/.ssh")]);
        // This tier keeps every launch repository's gitdir read-only whole in commit mode too.
        let mut commit = plan.clone();
        commit.git_mode = stockade_policy::model::GitMode::Commit;
        commit.protected = vec![
            PlannedPath {
                path: "/w/.git/config".into(),
                kind: PathKind::File,
                reason: "git".into(),
            },
            PlannedPath {
                path: "/w/.husky/_".into(),
                kind: PathKind::Dir,
                reason: "git".into(),
            },
        ];
        commit.git_repos = vec![stockade_policy::plan::GitRepo {
            worktree: "/w".into(),
            gitdir: "/w/.git".into(),
            common: "/w/.git".into(),
            missing: vec![],
        }];
        let r = request_from_plan(&commit, &cmd, &RunOptions::default()).unwrap();
        assert_eq!(
            r.protected,
            vec![PathBuf::from("/w/.husky/_"), PathBuf::from("/w/.git")]
        );
        assert_eq!(r.timeout_ms, Some(5000));
        assert_eq!(r.network, NetworkMode::On);
        use std::os::unix::ffi::OsStringExt;
        let bad = Command {
            program: std::ffi::OsString::from_vec(vec![0xff]),
            args: vec![],
        };
        let mut allow = plan.clone();
        allow.network = NetworkMode::Allowlist;
        assert!(matches!(
            request_from_plan(&allow, &cmd, &RunOptions::default()),
            Err(ClientError::Unsupported(_))
        ));
        assert!(matches!(
            request_from_plan(&plan, &bad, &RunOptions::default()),
            Err(ClientError::Unsupported(_))
        ));
    }
}
