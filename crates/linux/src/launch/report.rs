//! The report pipe: how init and the command tell stockade what was enforced, what went wrong
//! and how the command ended.

use std::os::fd::RawFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use stockade_policy::backend::{CreatedLog, Denial, EnforcedLayer};
use stockade_sys::{self as sys};

// One record per line: `L layer\tdetail`, `W warning`, `F fatal`, `X errno\treason`, `S status`,
// `D kind\ttarget[\tmessage]` (a refusal), and with the write gate the created-log: `C path`
// (a git-relevant creation), `T path` (a directory renamed into place), `G complete|overflow`
// (written by init after every process of the run is gone; without it the log counts as
// incomplete). Paths are percent-encoded bytes ([`encode_path`]).

/// The writing end of the report pipe. Records are held back and written in one batch when the
/// command is about to exec (or on failure, or by init after the command started), so stockade
/// wakes up twice per run instead of once per record — on a small machine every wake-up of the
/// host process takes a CPU from the launch it is waiting for.
#[derive(Clone)]
pub(super) struct Reporter {
    pub(super) fd: RawFd,
    pub(super) pending: Vec<u8>,
}

impl Reporter {
    pub(super) fn new(fd: RawFd) -> Self {
        Reporter {
            fd,
            pending: Vec::with_capacity(1024),
        }
    }

    /// Queue a record.
    pub(super) fn line(&mut self, tag: char, body: &str) {
        self.pending.push(tag as u8);
        self.pending.push(b' ');
        self.pending
            .extend(body.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
        self.pending.push(b'\n');
    }

    /// Write everything queued.
    pub(super) fn flush(&mut self) {
        if !self.pending.is_empty() {
            sys::write_all_best_effort(self.fd, &self.pending);
            self.pending.clear();
        }
    }

    /// Queue a record and write everything now.
    pub(super) fn now(&mut self, tag: char, body: &str) {
        self.line(tag, body);
        self.flush();
    }
}

#[derive(Default, Debug)]
pub(super) struct Report {
    pub(super) layers: Vec<EnforcedLayer>,
    pub(super) warnings: Vec<String>,
    pub(super) fatal: Option<String>,
    pub(super) exec_error: Option<(i32, String)>,
    pub(super) status: Option<libc::c_int>,
    pub(super) denials: Vec<Denial>,
    /// The write gate's created-log (`complete` only when init's `G complete` arrived).
    pub(super) created: CreatedLog,
}

/// A path's bytes as one report field: printable ASCII but `%`, `\t` and `\\` as is, every other
/// byte `%XX` (newlines, tabs and non-UTF-8 names survive the line protocol).
pub(crate) fn encode_path(p: &[u8]) -> String {
    let mut s = String::with_capacity(p.len());
    for &b in p {
        if (0x21..0x7f).contains(&b) && b != b'%' && b != b'\\' || b == b' ' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The inverse of [`encode_path`] (`None` for a malformed field).
pub(super) fn decode_path(s: &str) -> Option<PathBuf> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

impl Report {
    /// Whether the records include the command's status (`S`).
    pub(super) fn has_status(bytes: &[u8]) -> bool {
        bytes.starts_with(b"S ") || bytes.windows(3).any(|w| w == b"\nS ")
    }

    pub(super) fn parse(bytes: &[u8]) -> Report {
        let mut r = Report::default();
        let mut created_bad = false;
        for line in String::from_utf8_lossy(bytes).lines() {
            let Some((tag, body)) = line.split_once(' ') else {
                continue;
            };
            match tag {
                "L" => {
                    let (layer, detail) = body.split_once('\t').unwrap_or((body, ""));
                    r.layers.push(EnforcedLayer {
                        layer: layer.into(),
                        detail: detail.into(),
                    });
                }
                "W" => r.warnings.push(body.into()),
                "F" => r.fatal = Some(body.into()),
                "X" => {
                    let (errno, reason) = body.split_once('\t').unwrap_or((body, ""));
                    r.exec_error = Some((errno.parse().unwrap_or(libc::ENOENT), reason.into()));
                }
                "S" => r.status = body.trim().parse().ok(),
                "D" => {
                    let mut f = body.splitn(3, '\t');
                    let kind = f.next().unwrap_or(body);
                    let target = f.next().unwrap_or("");
                    r.denials.push(Denial {
                        kind: kind.into(),
                        target: target.into(),
                        message: f.next().map(str::to_string),
                    });
                }
                "C" => match decode_path(body) {
                    Some(p) => r.created.paths.push(p),
                    None => created_bad = true,
                },
                "T" => match decode_path(body) {
                    Some(p) => r.created.subtrees.push(p),
                    None => created_bad = true,
                },
                "G" => r.created.complete = body.trim() == "complete",
                _ => {}
            }
        }
        if created_bad {
            r.created.complete = false;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockade_policy::backend::EnforcedLayer;

    #[test]
    pub(super) fn report_parses_every_record_kind() {
        let r = Report::parse(b"L landlock\tABI 7\nW no thing\nX 2\tNo such file\nS 256\nF boom\n");
        assert_eq!(
            r.layers,
            vec![EnforcedLayer {
                layer: "landlock".into(),
                detail: "ABI 7".into()
            }]
        );
        assert_eq!(r.warnings, vec!["no thing".to_string()]);
        assert_eq!(r.exec_error, Some((2, "No such file".into())));
        assert_eq!(r.status, Some(256));
        assert_eq!(r.fatal.as_deref(), Some("boom"));
        assert!(!r.created.complete);
    }

    #[test]
    fn created_log_round_trips_any_bytes() {
        let raw: &[u8] = b"/ws/a b/\n%\t\\\xff/.git";
        let enc = encode_path(raw);
        assert!(!enc.contains('\n') && !enc.contains('\t'));
        let rec = format!(
            "C {enc}\nT {}\nG complete\nD gate\t/ws/.mcp.json\trefused: create\n",
            encode_path(b"/ws/moved")
        );
        let r = Report::parse(rec.as_bytes());
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(r.created.paths.len(), 1);
        assert_eq!(r.created.paths[0].as_os_str().as_bytes(), raw);
        assert_eq!(r.created.subtrees, vec![PathBuf::from("/ws/moved")]);
        assert!(r.created.complete);
        assert_eq!(r.denials[0].message.as_deref(), Some("refused: create"));
        // A malformed entry makes the log incomplete (the post-run check walks).
        let r = Report::parse(b"C /ws/%zz\nG complete\n");
        assert!(!r.created.complete);
    }
}
