//! The report pipe: how init and the command tell stockade what was enforced, what went wrong
//! and how the command ended.

use std::os::fd::RawFd;
use stockade_policy::backend::{Denial, EnforcedLayer};
use stockade_sys::{self as sys};

// One record per line: `L layer\tdetail`, `W warning`, `F fatal`, `X errno\treason`, `S status`.

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
}

impl Report {
    /// Whether the records include the command's status (`S`).
    pub(super) fn has_status(bytes: &[u8]) -> bool {
        bytes.starts_with(b"S ") || bytes.windows(3).any(|w| w == b"\nS ")
    }

    pub(super) fn parse(bytes: &[u8]) -> Report {
        let mut r = Report::default();
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
                    let (kind, target) = body.split_once('\t').unwrap_or((body, ""));
                    r.denials.push(Denial {
                        kind: kind.into(),
                        target: target.into(),
                    });
                }
                _ => {}
            }
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
    }
}
