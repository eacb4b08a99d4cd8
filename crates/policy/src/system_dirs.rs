//! The one list of system directories both Linux tiers refuse as writable roots.
//!
//! Each entry refuses the directory itself and every ancestor of it (`/var` because of
//! `/var/lib`); what lies *inside* an entry is refused as its [`Inside`] says. Refusing everything
//! inside each directory was the elevated broker's own rule for its own list.
//!
//! The list is the union of what the two tiers refused before they shared it, each entry with
//! the stricter of their two verdicts; the paths whose verdict changed are listed in the test
//! `verdicts_that_changed_when_the_lists_merged` (crates/elevated/src/validate.rs), which runs
//! both tiers' checks. One exception is kept on purpose: inside `/root` the unelevated tier
//! still allows writable roots (running as root, `/root/...` is the caller's own tree: the test
//! harness's and the escape battery's workspaces live there), while the broker, which grants a
//! sandbox account access, refuses it ([`Inside::RefusedByBroker`]). The unelevated tier
//! ([`crate::plan::dangerous_root_reason`]) also matches each entry's resolved form
//! (`/bin -> usr/bin`); the broker compares the entries as written.

use std::path::{Path, PathBuf};

/// One system directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemDir {
    /// The directory (absolute, lexically clean).
    pub path: &'static str,
    /// Whether what lies inside it is refused too.
    pub inside: Inside,
}

/// Whether paths inside a system directory are refused too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inside {
    /// Refused by both tiers.
    Refused,
    /// Allowed (`/opt/tool`, `/srv/site`, `/var/www`).
    Allowed,
    /// Refused by the broker only (`/root`; see the module docs).
    RefusedByBroker,
}

/// Which tier asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The unelevated tier (namespaces; the command runs as the caller).
    Unelevated,
    /// The elevated broker (the command runs as a sandbox account granted access).
    Broker,
}

impl Inside {
    fn refused_for(self, tier: Tier) -> bool {
        match self {
            Inside::Refused => true,
            Inside::Allowed => false,
            Inside::RefusedByBroker => tier == Tier::Broker,
        }
    }
}

const fn d(path: &'static str, inside: Inside) -> SystemDir {
    SystemDir { path, inside }
}

use Inside::{Allowed as A, Refused as R};

/// Directories a writable root may neither be nor contain, nor (as [`SystemDir::inside`] says)
/// lie in. Unless `allow_dangerous_roots` (unelevated tier only).
pub const SYSTEM_DIRS: &[SystemDir] = &[
    d("/bin", R),
    d("/boot", R),
    d("/dev", R),
    d("/etc", R),
    d("/lib", R),
    d("/lib32", R),
    d("/lib64", R),
    d("/libx32", R),
    d("/opt", A),
    d("/proc", R),
    d("/root", Inside::RefusedByBroker),
    d("/run", R),
    d("/sbin", R),
    d("/snap", R),
    d("/srv", A),
    d("/sys", R),
    d("/usr", R),
    d("/var", A),
    d("/var/backups", R),
    d("/var/cache", R),
    d("/var/lib", R),
    d("/var/log", R),
    d("/var/mail", R),
    d("/var/run", A),
    d("/var/spool", R),
];

/// How a path meets a system directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// It is the directory.
    Is,
    /// It is an ancestor of the directory.
    AncestorOf,
    /// It lies inside the directory.
    Inside,
}

/// The first system directory `path` meets for `tier`, and how. `forms` gives the forms of an
/// entry to compare against (the entry itself, plus its resolved form when the caller resolves
/// links). Pure.
pub fn system_dir_hit<'a>(
    path: &Path,
    tier: Tier,
    forms: impl Fn(&'static str) -> &'a [PathBuf],
) -> Option<(PathBuf, Relation)> {
    for e in SYSTEM_DIRS {
        for f in forms(e.path) {
            if path == f {
                return Some((f.clone(), Relation::Is));
            }
            if f.starts_with(path) {
                return Some((f.clone(), Relation::AncestorOf));
            }
        }
    }
    for e in SYSTEM_DIRS.iter().filter(|e| e.inside.refused_for(tier)) {
        for f in forms(e.path) {
            if path.starts_with(f) {
                return Some((f.clone(), Relation::Inside));
            }
        }
    }
    None
}

/// [`system_dir_hit`] on the entries as written (no link resolution): the broker's form.
pub fn lexical_hit(path: &Path, tier: Tier) -> Option<(PathBuf, Relation)> {
    static FORMS: std::sync::OnceLock<Vec<(&'static str, Vec<PathBuf>)>> =
        std::sync::OnceLock::new();
    let forms = FORMS.get_or_init(|| {
        SYSTEM_DIRS
            .iter()
            .map(|e| (e.path, vec![PathBuf::from(e.path)]))
            .collect()
    });
    system_dir_hit(path, tier, |p| {
        forms
            .iter()
            .find(|(n, _)| *n == p)
            .map_or(&[][..], |(_, f)| f.as_slice())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_clean_absolute_and_listed_once() {
        for (i, e) in SYSTEM_DIRS.iter().enumerate() {
            assert!(e.path.starts_with('/') && !e.path.ends_with('/'), "{e:?}");
            assert!(
                SYSTEM_DIRS[i + 1..].iter().all(|o| o.path != e.path),
                "{e:?} twice"
            );
        }
    }

    #[test]
    fn itself_ancestors_and_inside_as_marked() {
        let p = |s: &str| PathBuf::from(s);
        for tier in [Tier::Unelevated, Tier::Broker] {
            let hit = |s: &str| lexical_hit(&p(s), tier);
            assert_eq!(hit("/opt/proj"), None, "/opt allows inside");
            assert_eq!(hit("/opt"), Some((p("/opt"), Relation::Is)));
            assert_eq!(hit("/var"), Some((p("/var"), Relation::Is)));
            assert_eq!(hit("/"), Some((p("/bin"), Relation::AncestorOf)));
            assert_eq!(hit("/etc/ssh"), Some((p("/etc"), Relation::Inside)));
            assert_eq!(hit("/var/lib/x"), Some((p("/var/lib"), Relation::Inside)));
            assert_eq!(hit("/var/www/x"), None);
            assert_eq!(hit("/home/u/ws"), None);
            assert_eq!(hit("/root"), Some((p("/root"), Relation::Is)));
        }
        assert_eq!(lexical_hit(&p("/root/proj"), Tier::Unelevated), None);
        assert_eq!(
            lexical_hit(&p("/root/proj"), Tier::Broker),
            Some((p("/root"), Relation::Inside))
        );
    }
}
