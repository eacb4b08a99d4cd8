//! The one list of system directories both Linux tiers refuse as writable roots.
//!
//! Each entry refuses the directory itself and every ancestor of it (`/var` because of
//! `/var/lib`); an entry marked [`SystemDir::beneath`] refuses everything inside it too (the
//! elevated broker's rule, which it applied to every directory of its own list).
//!
//! The list is the union of what the two tiers refused before they shared it, each entry with
//! the stricter of their two verdicts; the paths whose verdict changed are listed in the test
//! `verdicts_that_changed_when_the_lists_merged` (crates/elevated/src/validate.rs), which runs
//! both tiers' checks. The unelevated tier ([`crate::plan::dangerous_root_reason`]) also matches
//! each entry's resolved form (`/bin -> usr/bin`) and exempts the caller's own home from the
//! `beneath` rule: running as root, `/root/project` is an ordinary workspace (the test harness
//! and the escape battery run there), where the broker refuses it for every caller.

use std::path::{Path, PathBuf};

/// One system directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemDir {
    /// The directory (absolute, lexically clean).
    pub path: &'static str,
    /// Everything inside it is refused too, not only the directory and its ancestors.
    pub beneath: bool,
}

const fn d(path: &'static str, beneath: bool) -> SystemDir {
    SystemDir { path, beneath }
}

/// Directories a writable root may neither be nor contain; those marked `beneath` may not
/// contain it either. Unless `allow_dangerous_roots` (unelevated tier only).
pub const SYSTEM_DIRS: &[SystemDir] = &[
    d("/bin", true),
    d("/boot", true),
    d("/dev", true),
    d("/etc", true),
    d("/lib", true),
    d("/lib32", true),
    d("/lib64", true),
    d("/libx32", true),
    d("/opt", false),
    d("/proc", true),
    d("/root", true),
    d("/run", true),
    d("/sbin", true),
    d("/snap", true),
    d("/srv", false),
    d("/sys", true),
    d("/usr", true),
    d("/var", false),
    d("/var/backups", true),
    d("/var/cache", true),
    d("/var/lib", true),
    d("/var/log", true),
    d("/var/mail", true),
    d("/var/run", false),
    d("/var/spool", true),
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

/// The first system directory `path` meets, and how. `forms` gives the forms of an entry to
/// compare against (the entry itself, plus its resolved form when the caller resolves links);
/// a path inside `exempt_home` is not refused for lying beneath an entry that holds that home
/// (`/root` for root; a `HOME=/` exempts nothing). Pure.
pub fn system_dir_hit<'a>(
    path: &Path,
    exempt_home: Option<&Path>,
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
    for e in SYSTEM_DIRS {
        if !e.beneath {
            continue;
        }
        for f in forms(e.path) {
            // Inside the caller's home, which itself lies in this directory (root's `/root`).
            if exempt_home.is_some_and(|h| path.starts_with(h) && h.starts_with(f)) {
                continue;
            }
            if path.starts_with(f) {
                return Some((f.clone(), Relation::Inside));
            }
        }
    }
    None
}

/// [`system_dir_hit`] on the entries as written (no link resolution): the broker's form.
pub fn lexical_hit(path: &Path) -> Option<(PathBuf, Relation)> {
    static FORMS: std::sync::OnceLock<Vec<(&'static str, Vec<PathBuf>)>> =
        std::sync::OnceLock::new();
    let forms = FORMS.get_or_init(|| {
        SYSTEM_DIRS
            .iter()
            .map(|e| (e.path, vec![PathBuf::from(e.path)]))
            .collect()
    });
    system_dir_hit(path, None, |p| {
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
    fn itself_ancestors_and_beneath_only_where_marked() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            lexical_hit(&p("/opt/proj")),
            None,
            "/opt is not marked beneath"
        );
        assert_eq!(lexical_hit(&p("/opt")), Some((p("/opt"), Relation::Is)));
        assert_eq!(lexical_hit(&p("/var")), Some((p("/var"), Relation::Is)));
        assert_eq!(
            lexical_hit(&p("/")),
            Some((p("/bin"), Relation::AncestorOf))
        );
        assert_eq!(
            lexical_hit(&p("/etc/ssh")),
            Some((p("/etc"), Relation::Inside))
        );
        assert_eq!(
            lexical_hit(&p("/var/lib/x")),
            Some((p("/var/lib"), Relation::Inside))
        );
        assert_eq!(lexical_hit(&p("/var/www/x")), None);
        assert_eq!(lexical_hit(&p("/home/u/ws")), None);
        let all = |e: &'static str| -> &'static [PathBuf] {
            static F: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
            let v = F.get_or_init(|| SYSTEM_DIRS.iter().map(|e| PathBuf::from(e.path)).collect());
            let i = SYSTEM_DIRS.iter().position(|x| x.path == e).unwrap_or(0);
            std::slice::from_ref(&v[i])
        };
        assert_eq!(
            system_dir_hit(&p("/etc/ssl"), Some(Path::new("/")), all),
            Some((p("/etc"), Relation::Inside)),
            "HOME=/ exempts nothing"
        );
        let root = [p("/root")];
        let forms = |e: &'static str| if e == "/root" { &root[..] } else { &[][..] };
        assert_eq!(
            system_dir_hit(&p("/root/proj"), Some(Path::new("/root")), forms),
            None
        );
        assert_eq!(
            system_dir_hit(&p("/root/proj"), None, forms),
            Some((p("/root"), Relation::Inside))
        );
    }
}
