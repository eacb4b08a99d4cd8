//! The broker protocol: versioned JSON messages, each framed by a 4-byte big-endian length.
//!
//! 1. The client connects to the broker's unix socket and sends one [`RunRequest`] frame; the
//!    `sendmsg` carrying its first byte also carries exactly three descriptors (`SCM_RIGHTS`):
//!    the caller's stdin, stdout and stderr. The command writes to them directly (no copying).
//! 2. The broker answers with [`Reply`] frames: any number of `progress` (first ACL grant of a
//!    large tree), then `started`, then `exited`; or a single `refused`/`failed`.
//! 3. Closing the connection before `exited` kills the run (the whole cgroup).

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use stockade_policy::model::LimitsPolicy;
use stockade_policy::NetworkMode;

/// Protocol version; the broker refuses any other.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame accepted (requests carry the environment).
pub const MAX_FRAME: usize = 4 << 20;

/// A run request. Every path is re-validated by the broker; nothing here is trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Must be [`PROTOCOL_VERSION`].
    pub version: u32,
    /// `off` runs as the offline account, `on` as the online account.
    pub network: NetworkMode,
    /// Canonical workspace.
    pub workspace: PathBuf,
    /// Canonical start directory.
    pub cwd: PathBuf,
    /// Canonical writable roots (the broker grants the sandbox accounts write access below them).
    pub writable_roots: Vec<PathBuf>,
    /// Paths to keep read-only below writable roots (the broker adds every `.git` it finds).
    pub protected: Vec<PathBuf>,
    /// Paths the sandbox must not read.
    pub deny_read: Vec<PathBuf>,
    /// Unix sockets the command may connect to outside the writable roots (each is still
    /// subject to the sandbox account's permissions).
    #[serde(default)]
    pub allow_unix_sockets: Vec<PathBuf>,
    /// Program (looked up in the command's `PATH` if it has no `/`).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Complete environment of the command.
    pub env: Vec<(String, String)>,
    /// Resource limits.
    pub limits: LimitsPolicy,
    /// Kill the run after this many milliseconds.
    pub timeout_ms: Option<u64>,
}

/// How a run ended, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum WireExit {
    /// Exit code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
    /// Killed by the broker at the timeout.
    TimedOut,
}

/// A protection the broker applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLayer {
    /// Stable id.
    pub layer: String,
    /// Detail.
    pub detail: String,
}

/// A refused action the broker observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDenial {
    /// What kind of action (`connect`).
    pub kind: String,
    /// Its target (a socket path).
    pub target: String,
}

/// Broker to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// ACL grant progress (inodes changed so far).
    Progress {
        /// Root being walked.
        root: PathBuf,
        /// Inodes changed so far.
        inodes: u64,
    },
    /// The command was started.
    Started {
        /// Sandbox account name.
        account: String,
        /// Its uid.
        uid: u32,
        /// Pid of the run's process (the command's parent and connect supervisor), in the
        /// broker's pid namespace.
        pid: i32,
        /// Protections applied.
        enforced: Vec<WireLayer>,
        /// Things the user should know.
        warnings: Vec<String>,
    },
    /// The command and everything it started are gone.
    Exited {
        /// How it ended.
        exit: WireExit,
        /// Milliseconds from start to exit.
        duration_ms: u64,
        /// What the sandbox refused and the broker observed (refused `connect()`s).
        #[serde(default)]
        denials: Vec<WireDenial>,
    },
    /// The request would give the caller access it does not have, or is malformed.
    Refused {
        /// Why, and what to do.
        reason: String,
    },
    /// The broker failed (not the caller's fault).
    Failed {
        /// What failed.
        message: String,
        /// Set when the command itself could not be executed: 127 not found, 126 not
        /// executable (as a shell would exit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
}

/// Encodes a value as one frame.
pub fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(v).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message too large",
        ));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses the length prefix; refuses frames over [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; 4]) -> io::Result<usize> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n > MAX_FRAME || n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {n}"),
        ));
    }
    Ok(n)
}

/// Writes one frame.
pub fn write_frame<T: Serialize, W: Write>(w: &mut W, v: &T) -> io::Result<()> {
    w.write_all(&encode(v)?)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on clean EOF before the frame starts.
pub fn read_frame<T: for<'de> Deserialize<'de>, R: Read>(r: &mut R) -> io::Result<Option<T>> {
    let mut p = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut p[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated frame",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let n = frame_len(p)?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RunRequest {
        RunRequest {
            version: PROTOCOL_VERSION,
            network: NetworkMode::Off,
            workspace: "/w".into(),
            cwd: "/w".into(),
            writable_roots: vec!["/w".into()],
            protected: vec!["/w/.git".into()],
            deny_read: vec![],
            allow_unix_sockets: vec![],
            program: "sh".into(),
            args: vec!["-c".into(), "true".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            limits: LimitsPolicy::default(),
            timeout_ms: Some(1000),
        }
    }

    #[test]
    fn frames_roundtrip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &req()).unwrap();
        write_frame(
            &mut buf,
            &Reply::Exited {
                exit: WireExit::Signal(9),
                duration_ms: 3,
                denials: vec![WireDenial {
                    kind: "connect".into(),
                    target: "/run/docker.sock".into(),
                }],
            },
        )
        .unwrap();
        let mut r = &buf[..];
        let a: RunRequest = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(a, req());
        let b: Reply = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(
            b,
            Reply::Exited {
                exit: WireExit::Signal(9),
                duration_ms: 3,
                denials: vec![WireDenial {
                    kind: "connect".into(),
                    target: "/run/docker.sock".into(),
                }],
            }
        );
        assert!(read_frame::<Reply, _>(&mut r).unwrap().is_none());
    }

    #[test]
    fn rejects_oversized_and_truncated_frames() {
        assert!(frame_len((MAX_FRAME as u32 + 1).to_be_bytes()).is_err());
        assert!(frame_len(0u32.to_be_bytes()).is_err());
        let mut buf = Vec::new();
        write_frame(&mut buf, &req()).unwrap();
        buf.truncate(buf.len() - 1);
        assert!(read_frame::<RunRequest, _>(&mut &buf[..]).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let j = serde_json::to_string(&req())
            .unwrap()
            .replace("\"version\":1", "\"version\":1,\"uid\":0");
        assert!(serde_json::from_str::<RunRequest>(&j).is_err());
    }

    #[test]
    fn wire_format_is_stable() {
        let j = serde_json::to_string(&Reply::Refused { reason: "x".into() }).unwrap();
        assert_eq!(j, r#"{"type":"refused","reason":"x"}"#);
    }
}
