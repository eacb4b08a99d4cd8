//! Stockade's persisted Windows state: the synthetic capability SID of each writable root.
//!
//! Each writable root gets its own random SID the first time it is used, so two workspaces never
//! share a grant: a token made for workspace A carries only A's SID and cannot use the allow ACE
//! that was put on workspace B. The SIDs must stay stable across runs because the ACEs persist on
//! disk. Stored as JSON at `%LOCALAPPDATA%\Stockade\capabilities.json`.

use crate::path::WinPath;
use crate::sid::Sid;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Current file format version.
pub const STATE_VERSION: u32 = 1;

/// One root and its SID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCapability {
    /// The writable root.
    pub root: WinPath,
    /// Its capability SID.
    pub sid: Sid,
}

/// All roots Stockade has granted so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityStore {
    /// Format version.
    pub version: u32,
    /// Roots, in the order they were first seen.
    pub roots: Vec<RootCapability>,
    /// Placeholder directories Stockade created for missing protected names
    /// ([`crate::placeholder`]), recorded before they are created; `stockade clean` removes
    /// those still empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placeholders: Vec<WinPath>,
    /// Directories that carry a no-new-files ACE, so that `stockade clean` removes it even once
    /// the protected file below them exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_new_files: Vec<WinPath>,
}

impl Default for CapabilityStore {
    fn default() -> Self {
        CapabilityStore {
            version: STATE_VERSION,
            roots: Vec::new(),
            placeholders: Vec::new(),
            no_new_files: Vec::new(),
        }
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("cannot {action} Stockade state file {path}: {source}; check that the directory is writable")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("Stockade state file {path} is corrupt ({source}); move it aside to start over (existing grants then need `stockade uninstall`-style cleanup)")]
    Corrupt {
        /// The file.
        path: String,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Written by a newer Stockade.
    #[error("Stockade state file {path} has version {found}, newer than this build's {STATE_VERSION}; upgrade Stockade")]
    TooNew {
        /// The file.
        path: String,
        /// Version found.
        found: u32,
    },
    /// Two roots ended up with the same SID (never expected with random SIDs).
    #[error("two writable roots share capability SID {0}; refusing to run (delete the state file to regenerate)")]
    DuplicateSid(Sid),
}

impl CapabilityStore {
    /// The SID of `root`, if it has one.
    pub fn sid_for(&self, root: &WinPath) -> Option<&Sid> {
        self.roots.iter().find(|r| r.root == *root).map(|r| &r.sid)
    }

    /// Makes sure every root has a SID, minting new ones from `random`. Returns true if the store
    /// changed (and so must be saved before the SIDs are used in ACEs).
    pub fn ensure(
        &mut self,
        roots: &[WinPath],
        mut random: impl FnMut() -> [u8; 16],
    ) -> Result<bool, StateError> {
        let mut changed = false;
        for root in roots {
            if self.sid_for(root).is_some() {
                continue;
            }
            let sid = Sid::capability_from_random(random());
            if self.roots.iter().any(|r| r.sid == sid) {
                return Err(StateError::DuplicateSid(sid));
            }
            self.roots.push(RootCapability {
                root: root.clone(),
                sid,
            });
            changed = true;
        }
        Ok(changed)
    }

    /// Drops the SIDs of `roots` (after their ACEs were removed) and the placeholder records
    /// beneath them. Returns true if it changed.
    pub fn forget(&mut self, roots: &[WinPath]) -> bool {
        let before = (
            self.roots.len(),
            self.placeholders.len(),
            self.no_new_files.len(),
        );
        self.roots.retain(|r| !roots.contains(&r.root));
        let under = |p: &WinPath| roots.iter().any(|r| p.starts_with(r));
        self.placeholders.retain(|p| !under(p));
        self.no_new_files.retain(|p| !under(p));
        (
            self.roots.len(),
            self.placeholders.len(),
            self.no_new_files.len(),
        ) != before
    }

    /// Records a placeholder plan (before anything is created). Returns true if it changed.
    pub fn record_placeholders(&mut self, pp: &crate::placeholder::PlaceholderPlan) -> bool {
        let mut changed = false;
        for (list, new) in [
            (&mut self.placeholders, &pp.create),
            (&mut self.no_new_files, &pp.no_new_files),
        ] {
            for p in new {
                if !list.contains(p) {
                    list.push(p.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str, path: &str) -> Result<CapabilityStore, StateError> {
        let s: CapabilityStore =
            serde_json::from_str(text).map_err(|source| StateError::Corrupt {
                path: path.to_string(),
                source,
            })?;
        if s.version > STATE_VERSION {
            return Err(StateError::TooNew {
                path: path.to_string(),
                found: s.version,
            });
        }
        Ok(s)
    }

    /// Loads the store, or an empty one if the file does not exist.
    pub fn load(path: &Path) -> Result<CapabilityStore, StateError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Self::from_json(&t, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CapabilityStore::default()),
            Err(source) => Err(StateError::Io {
                action: "read",
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Saves the store (write to a temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            action: "write",
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_root_gets_its_own_stable_sid() {
        let a = WinPath::parse(r"C:\Users\me\repo-a").expect("path");
        let b = WinPath::parse(r"C:\Users\me\repo b ü").expect("path");
        let mut n = 0u8;
        let mut rng = || {
            n += 1;
            [n; 16]
        };
        let mut store = CapabilityStore::default();
        assert!(store.ensure(&[a.clone(), b.clone()], &mut rng).expect("ok"));
        let sa = store.sid_for(&a).cloned().expect("a");
        let sb = store.sid_for(&b).cloned().expect("b");
        assert_ne!(sa, sb);
        // Same root, different case: same SID, nothing minted.
        let a_upper = WinPath::parse(r"c:\USERS\ME\REPO-A").expect("path");
        assert!(!store
            .ensure(std::slice::from_ref(&a_upper), &mut rng)
            .expect("ok"));
        assert_eq!(store.sid_for(&a_upper), Some(&sa));

        let json = serde_json::to_string(&store).expect("json");
        let back = CapabilityStore::from_json(&json, "mem").expect("parse");
        assert_eq!(back, store);

        let dir = std::env::temp_dir().join(format!("stockade-state-test-{}", std::process::id()));
        let file = dir.join("capabilities.json");
        store.save(&file).expect("save");
        assert_eq!(CapabilityStore::load(&file).expect("load"), store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rejects_corrupt_and_future_files_and_duplicate_sids() {
        assert!(matches!(
            CapabilityStore::from_json("{", "f"),
            Err(StateError::Corrupt { .. })
        ));
        assert!(matches!(
            CapabilityStore::from_json(r#"{"version":99,"roots":[]}"#, "f"),
            Err(StateError::TooNew { found: 99, .. })
        ));
        let mut s = CapabilityStore::default();
        let roots = [
            WinPath::parse(r"C:\a").expect("p"),
            WinPath::parse(r"C:\b").expect("p"),
        ];
        assert!(matches!(
            s.ensure(&roots, || [7; 16]),
            Err(StateError::DuplicateSid(_))
        ));
    }
}
