//! Copy-on-write outside the writable roots: which host trees become overlays, and where their
//! private upper layers live.
//!
//! With `filesystem.outside_writes = "overlay"` (the default) the caller's home directory and each
//! `filesystem.overlay_roots` entry are mounted inside the sandbox as overlayfs: the host tree is
//! the read-only lower layer, `<state_dir>/ws/<hash>/upper/<name>` the writable upper layer
//! (`work/<k>/<name>` its work dir, one slot `<k>` per concurrent run). With `temp.mode = "overlay"` (the default) `/tmp` and `/var/tmp`
//! are overlaid the same way. The host never sees a write; `stockade diff` / `apply` review and
//! copy changes. A tree must be owned by the calling uid: an unprivileged overlay cannot copy up
//! files it cannot chown back to their owner, so root-owned trees are refused (`/tmp` and
//! `/var/tmp` are the exception: their root is never copied up, and what the caller can write
//! there it owns).

use crate::planned::{PathKind, PlannedPath};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

/// One overlaid tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlayLayer {
    /// The canonical host tree: the lower layer, and where the overlay is mounted.
    #[serde(serialize_with = "crate::paths::lossy::path")]
    pub lower: PathBuf,
    /// The name of its upper and work dirs under the workspace's state (`home`, `tmp`, ...).
    pub name: String,
}

/// The overlays of one run (empty with `outside_writes = "deny"` and `temp.mode != "overlay"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OverlayPlan {
    /// Overlaid trees, in mount order (outer trees first; an inner tree is mounted on top).
    pub layers: Vec<OverlayLayer>,
    /// The workspace's overlay state, `<state_dir>/ws/<hash>` (holds `upper/`, `work/`, the
    /// copy-up record). `None` when there are no layers.
    #[serde(serialize_with = "crate::paths::lossy::opt_path")]
    pub state: Option<PathBuf>,
    /// Stockade state directories masked inside (every workspace's upper layers and temp dirs).
    #[serde(serialize_with = "crate::paths::lossy::paths")]
    pub masks: Vec<PathBuf>,
    /// Protected paths inside overlaid trees (outside the writable roots), bound read-only on top.
    pub protected: Vec<PlannedPath>,
    /// Cap on the state's size in bytes.
    pub max_bytes: Option<u64>,
    /// `/tmp` and `/var/tmp` are overlays (instead of empty private dirs).
    pub temp: bool,
}

impl OverlayPlan {
    /// The upper dir of `layer`.
    pub fn upper(&self, layer: &OverlayLayer) -> Option<PathBuf> {
        self.state
            .as_ref()
            .map(|s| s.join("upper").join(&layer.name))
    }

    /// The work dir of `layer` without a slot (the launcher uses `work/<k>/<name>` of the slot
    /// it locked; see `stockade_linux::overlay::prepare_host`).
    pub fn work(&self, layer: &OverlayLayer) -> Option<PathBuf> {
        self.state
            .as_ref()
            .map(|s| s.join("work").join(&layer.name))
    }
}

/// The workspace's state directory name: the first 8 bytes of SHA-256 of its canonical path.
pub fn workspace_hash(workspace: &Path) -> String {
    let digest = Sha256::digest(workspace.as_os_str().as_encoded_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Inputs of [`plan`], already resolved by the plan's resolver.
pub(crate) struct Inputs<'a> {
    pub(crate) overlay_home: bool,
    pub(crate) home: Option<&'a Path>,
    pub(crate) roots: Vec<(String, PathBuf)>,
    pub(crate) temp: bool,
    pub(crate) writable_roots: &'a [PathBuf],
    pub(crate) protected: &'a [PlannedPath],
    pub(crate) protected_names: &'a [String],
    pub(crate) workspace: &'a Path,
    pub(crate) state_dir: &'a Path,
    pub(crate) max_bytes: Option<u64>,
}

/// A `filesystem.overlay_roots` entry that cannot be overlaid.
#[derive(Debug)]
pub(crate) struct OverlayError {
    pub(crate) entry: String,
    pub(crate) reason: String,
}

impl std::fmt::Display for OverlayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.entry, self.reason)
    }
}

fn bad(entry: &str, reason: String) -> OverlayError {
    OverlayError {
        entry: entry.to_string(),
        reason,
    }
}

#[cfg(target_os = "linux")]
fn caller_uid() -> u32 {
    stockade_sys::users::geteuid()
}

#[cfg(all(unix, not(target_os = "linux")))]
fn caller_uid() -> u32 {
    0
}

/// Check one tree: a canonical directory owned by the caller, usable as an overlay option.
fn tree(entry: &str, path: &Path, need_owner: bool) -> Result<PathBuf, OverlayError> {
    let canon = fs::canonicalize(path).map_err(|e| {
        bad(
            entry,
            format!("{}: {}", path.display(), crate::io_reason(&e)),
        )
    })?;
    let meta = fs::metadata(&canon).map_err(|e| {
        bad(
            entry,
            format!("{}: {}", canon.display(), crate::io_reason(&e)),
        )
    })?;
    if !meta.is_dir() {
        return Err(bad(
            entry,
            format!("{} is not a directory", canon.display()),
        ));
    }
    if canon == Path::new("/") {
        return Err(bad(entry, "/ cannot be overlaid".into()));
    }
    #[cfg(not(unix))]
    let _ = need_owner; // no uid to compare; `plan` returns no overlays off Linux anyway
    #[cfg(unix)]
    if need_owner {
        use std::os::unix::fs::MetadataExt;
        let uid = caller_uid();
        if meta.uid() != uid {
            return Err(bad(
                entry,
                format!(
                    "{} is owned by uid {}, not by you (uid {uid}): an unprivileged overlay \
                     cannot copy up files it cannot give back to their owner; remove it from \
                     filesystem.overlay_roots or make it a writable root",
                    canon.display(),
                    meta.uid()
                ),
            ));
        }
    }
    let s = canon.as_os_str().as_encoded_bytes();
    if s.iter().any(|c| matches!(c, b',' | b':' | b'\\' | b'\n')) {
        return Err(bad(
            entry,
            format!(
                "{} contains ',', ':', '\\' or a newline, which overlayfs options cannot carry",
                canon.display()
            ),
        ));
    }
    Ok(canon)
}

/// The overlays for one run; `warnings` gets trees that were skipped and why.
pub(crate) fn plan(
    inp: Inputs<'_>,
    warnings: &mut Vec<String>,
) -> Result<OverlayPlan, OverlayError> {
    if !cfg!(target_os = "linux") {
        return Ok(OverlayPlan::default()); // overlayfs is Linux's
    }
    let mut layers: Vec<OverlayLayer> = Vec::new();
    let mut candidates: Vec<(String, PathBuf, bool, String)> = Vec::new();
    if inp.overlay_home {
        if let Some(h) = inp.home {
            candidates.push(("~".into(), h.to_path_buf(), true, "home".into()));
        }
        for (entry, path) in &inp.roots {
            let canon_hint = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            let name = format!("root-{}", workspace_hash(&canon_hint));
            candidates.push((entry.clone(), path.clone(), true, name));
        }
    }
    if inp.temp {
        candidates.push(("/tmp".into(), "/tmp".into(), false, "tmp".into()));
        candidates.push((
            "/var/tmp".into(),
            "/var/tmp".into(),
            false,
            "var-tmp".into(),
        ));
    }
    for (entry, path, need_owner, name) in candidates {
        let lower = match tree(&entry, &path, need_owner) {
            Ok(l) => l,
            // The home directory is overlaid by default: one the caller does not own is left
            // read-only (as with `deny`), and said so. An explicit overlay root is an error.
            Err(e) if entry == "~" => {
                warnings.push(format!(
                    "home directory not overlaid (writes there fail): {e}"
                ));
                continue;
            }
            Err(e) if !need_owner => {
                warnings.push(format!("{entry} not overlaid: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        if inp.writable_roots.iter().any(|w| lower.starts_with(w)) {
            continue; // writable anyway
        }
        if layers.iter().any(|l| l.lower == lower) {
            continue; // listed twice
        }
        layers.push(OverlayLayer { lower, name });
    }
    // Every workspace's upper layers and temp dirs are masked, overlays or not: with
    // `outside_writes = "deny"` the home is read-only, not unreadable, and other workspaces'
    // changes must not be readable through it either.
    let canon_state = fs::canonicalize(inp.state_dir).unwrap_or_else(|_| inp.state_dir.into());
    let masks = ["ws", "tmp"]
        .iter()
        .map(|d| canon_state.join(d))
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .collect();
    if layers.is_empty() {
        return Ok(OverlayPlan {
            masks,
            ..OverlayPlan::default()
        });
    }
    // A tree inside another (a home under /tmp) is mounted on top of the outer overlay.
    layers.sort_by_key(|l| l.lower.components().count());
    let temp = layers.iter().any(|l| l.name == "tmp");
    let state = inp.state_dir.join("ws").join(workspace_hash(inp.workspace));
    let outside = |p: &Path| !inp.writable_roots.iter().any(|w| p.starts_with(w));
    let inside = |p: &Path| layers.iter().any(|l| p.starts_with(&l.lower));
    let mut protected: Vec<PlannedPath> = inp
        .protected
        .iter()
        .filter(|p| outside(&p.path) && inside(&p.path))
        .cloned()
        .collect();
    for l in layers
        .iter()
        .filter(|l| l.name != "tmp" && l.name != "var-tmp")
    {
        for name in inp.protected_names {
            let p = l.lower.join(name);
            if let Ok(m) = fs::symlink_metadata(&p) {
                if m.file_type().is_symlink() {
                    continue; // its target is what matters; not followed here
                }
                protected.push(PlannedPath {
                    path: p,
                    kind: if m.is_dir() {
                        PathKind::Dir
                    } else {
                        PathKind::File
                    },
                    reason: format!("{name} in an overlaid tree"),
                });
            }
        }
    }
    protected.retain(|p| outside(&p.path));
    protected.sort_by(|a, b| a.path.cmp(&b.path));
    protected.dedup_by(|a, b| a.path == b.path);
    Ok(OverlayPlan {
        layers,
        state: Some(state),
        masks,
        protected,
        max_bytes: inp.max_bytes,
        temp,
    })
}
