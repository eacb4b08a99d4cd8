//! The write gate: a seccomp user-notification supervisor that performs every write-intent
//! filesystem call of the sandbox on its behalf, after asking a [`Judge`].
//!
//! (Module documentation is completed with the implementation.)

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use crate::sockets::SocketPolicy;

/// What the supervisor asks the judge. Paths are absolute, as the supervisor sees them (the real
/// path of the resolved parent directory, read from the supervisor's own `/proc/self/fd/N`, plus
/// the final name, as bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp<'a> {
    /// A new name: open `O_CREAT` of a missing name, mkdir, mknod, symlink (the link's name),
    /// unix socket bind, the target name of a dangling symlink opened with `O_CREAT`.
    Create {
        /// The name created.
        path: &'a Path,
        /// What is created.
        kind: CreateKind,
    },
    /// An open for writing of an existing object (`O_WRONLY`, `O_RDWR`, `O_APPEND`, `O_TRUNC`).
    OpenWrite {
        /// The object opened (symbolic links resolved).
        path: &'a Path,
        /// `O_TRUNC` was asked for.
        trunc: bool,
    },
    /// unlink / rmdir.
    Remove {
        /// The name removed.
        path: &'a Path,
        /// `rmdir` / `AT_REMOVEDIR`.
        dir: bool,
    },
    /// rename, renameat, renameat2.
    Rename {
        /// The name moved.
        from: &'a Path,
        /// Where to.
        to: &'a Path,
        /// `RENAME_EXCHANGE`: both names change their object.
        exchange: bool,
        /// `RENAME_NOREPLACE`.
        noreplace: bool,
    },
    /// A hard link (`link`, `linkat`): `to` is the new name of the object at `from`.
    Link {
        /// The existing object.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
    },
    /// chmod/chown/utime/xattr/truncate, path- or descriptor-based.
    SetAttr {
        /// The object changed (its real path).
        path: &'a Path,
        /// Which attribute.
        what: AttrKind,
    },
}

/// What a [`FsOp::Create`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device node or FIFO (`mknod`).
    Node,
    /// A unix socket (`bind`).
    Socket,
}

/// Which attribute a [`FsOp::SetAttr`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// chmod family.
    Mode,
    /// chown family.
    Owner,
    /// utime family.
    Times,
    /// setxattr / removexattr family.
    Xattr,
    /// truncate (path-based).
    Truncate,
}

/// The judge's refusal: the caller gets `errno`, the denial record gets `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The errno the call fails with (`EACCES`, `EPERM`, ...).
    pub errno: i32,
    /// One line for the denial record.
    pub detail: String,
}

/// The policy side of the gate (implemented outside this crate).
pub trait Judge: Send + Sync {
    /// May `op` happen?
    fn judge(&self, op: &FsOp<'_>) -> Result<(), Refusal>;
    /// Called after a successful creation, rename into place or link (for the post-run log).
    fn created(&self, _path: &Path, _kind: CreateKind) {}
}

/// A refused operation, for the denial report.
#[derive(Debug, Clone)]
pub enum Denial {
    /// A refused `connect` (the network gate).
    Connect(crate::sockets::Denied),
    /// A refused filesystem operation, with the judge's refusal.
    Fs(Refusal),
}

/// How many threads serve the listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// Threads blocking in `SECCOMP_IOCTL_NOTIF_RECV` ([`default_workers`] when unsure).
    pub workers: usize,
    /// Extra threads for calls that may block for long (a FIFO opened for writing, a blocking
    /// connect); beyond that many at once such a call fails with `EAGAIN`.
    pub blocking: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            workers: default_workers(),
            blocking: 64,
        }
    }
}

/// Twice the number of CPUs, at least 4: enough that a parallel build is not serialised.
pub fn default_workers() -> usize {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * n).max(4)
}

/// A failure to start serving.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A worker thread could not be started or prepared.
    #[error("write gate: {0}")]
    Start(String),
}

/// The running supervisor: its worker threads.
pub struct Supervisor {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    /// Wait until every worker has finished (every process holding the filter is gone).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Where refusals go (connect and filesystem alike).
pub type Sink = Arc<dyn Fn(Denial) + Send + Sync>;

/// Serve `listener` with `cfg.workers` threads until every process holding the filter is gone.
/// `connect` notifications are decided by `connect` exactly as [`crate::sockets::Gate`] does.
/// Returns at once; [`Supervisor::join`] waits for the end.
pub fn serve(
    listener: OwnedFd,
    judge: Arc<dyn Judge>,
    connect: SocketPolicy,
    sink: Sink,
    cfg: ServeConfig,
) -> Result<Supervisor, GateError> {
    let _ = (listener, judge, connect, sink, cfg);
    Err(GateError::Start("not implemented yet".into()))
}
