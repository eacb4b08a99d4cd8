//! Test helpers: unique temporary directories (no extra crates).

use crate::model::Policy;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique, canonical temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!(
            "stockade-policy-test-{}-{n}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(std::fs::canonicalize(&p).unwrap())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn file(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The embedded default policy, with `git.mode = "read-only"` (the walk's tests check that
/// whole `.git` entries are protected; `commit` mode has its own tests).
pub fn default_policy() -> Policy {
    let mut p: Policy = toml::from_str(crate::config::DEFAULT_POLICY_TOML).unwrap();
    p.git.mode = crate::model::GitMode::ReadOnly;
    p
}

/// The embedded default policy as shipped (`git.mode = "commit"`).
pub fn shipped_policy() -> Policy {
    toml::from_str(crate::config::DEFAULT_POLICY_TOML).unwrap()
}
