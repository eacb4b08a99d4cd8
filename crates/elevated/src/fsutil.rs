//! Small file helpers: atomic writes, hashing, running system tools.

use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

/// Writes `data` to `path` atomically: a temporary file in the same directory is written, fsynced
/// and renamed over `path`, then the directory is fsynced. A crash (or `kill -9`) at any point
/// leaves either the old or the new content, never a mix.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a file's content, `None` if it does not exist.
pub fn file_sha256(path: &Path) -> io::Result<Option<String>> {
    match fs::read(path) {
        Ok(d) => Ok(Some(sha256_hex(&d))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A system tool failed or could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool could not be executed.
    #[error("could not run {tool}: {source} (is it installed? on Debian: apt-get install -y nftables acl passwd)")]
    Spawn {
        /// Tool name.
        tool: String,
        /// Cause.
        source: io::Error,
    },
    /// The tool ran and failed.
    #[error("`{cmdline}` failed with {status}: {stderr}")]
    Failed {
        /// Full command line.
        cmdline: String,
        /// Exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
}

/// Output of a tool run: exit success and captured stdout.
pub struct ToolOutput {
    /// Whether it exited 0.
    pub success: bool,
    /// Exit code (-1 if killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs a tool, capturing its output, without judging the exit code.
pub fn run_tool_raw(tool: &str, args: &[&str]) -> Result<ToolOutput, ToolError> {
    let out = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| ToolError::Spawn {
            tool: tool.to_string(),
            source,
        })?;
    Ok(ToolOutput {
        success: out.status.success(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

impl ToolError {
    /// `tool args…` ran and failed with `o`.
    pub fn failed(tool: &str, args: &[&str], o: &ToolOutput) -> ToolError {
        ToolError::Failed {
            cmdline: std::iter::once(tool)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
            status: format!("exit code {}", o.code),
            stderr: o.stderr.trim().to_string(),
        }
    }
}

/// Runs a tool and requires success; returns its stdout.
pub fn run_tool(tool: &str, args: &[&str]) -> Result<String, ToolError> {
    let o = run_tool_raw(tool, args)?;
    if o.success {
        Ok(o.stdout)
    } else {
        Err(ToolError::failed(tool, args, &o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content() {
        let dir = std::env::temp_dir().join(format!("stockade-fsutil-{}", std::process::id()));
        let p = dir.join("f.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sha_is_hex() {
        assert_eq!(sha256_hex(b"").len(), 64);
    }
}
