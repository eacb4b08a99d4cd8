//! Windows paths as plain strings, so plans over `C:\Users\me\repo` can be computed and tested on
//! any host.
//!
//! A [`WinPath`] is absolute, uses `\` separators, has no `.`/`..` components and no trailing
//! separator (except a drive root `C:\`). Comparison is case-insensitive the way NTFS compares
//! names (each character upper-cased on its own; names that only differ in case are the same).

use serde::{Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;

/// Why a string is not an acceptable absolute Windows path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WinPathError {
    /// Not `X:\...` or `\\server\share\...`.
    #[error("{0:?} is not an absolute Windows path (expected C:\\... or \\\\server\\share\\...)")]
    NotAbsolute(String),
    /// Contains `.` or `..`, which a canonical plan path never does.
    #[error("{0:?} contains a '.' or '..' component; plan paths must be canonical")]
    DotComponent(String),
    /// Contains a NUL or another character Windows forbids in names.
    #[error("{0:?} contains a character Windows does not allow in a path ({1:?})")]
    BadChar(String, char),
}

/// An absolute, normalized Windows path.
#[derive(Clone)]
pub struct WinPath {
    /// Prefix: `C:` or `\\server\share` (case preserved).
    prefix: String,
    /// Components after the prefix (case preserved).
    parts: Vec<String>,
}

fn fold(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                // NTFS upcases one character to one character; multi-char expansions stay as-is.
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

impl WinPath {
    /// Parses and normalizes an absolute Windows path. Accepts `/` as a separator and strips the
    /// `\\?\` (and `\\?\UNC\`) prefix that `std::fs::canonicalize` produces on Windows.
    pub fn parse(input: &str) -> Result<WinPath, WinPathError> {
        let s = input.replace('/', "\\");
        let s = if let Some(rest) = s.strip_prefix("\\\\?\\UNC\\") {
            format!("\\\\{rest}")
        } else if let Some(rest) = s.strip_prefix("\\\\?\\") {
            rest.to_string()
        } else {
            s
        };
        let (prefix, rest) = if let Some(unc) = s.strip_prefix("\\\\") {
            let mut it = unc.splitn(3, '\\');
            let server = it.next().unwrap_or_default();
            let share = it.next().unwrap_or_default();
            if server.is_empty() || share.is_empty() {
                return Err(WinPathError::NotAbsolute(input.to_string()));
            }
            (
                format!("\\\\{server}\\{share}"),
                it.next().unwrap_or_default().to_string(),
            )
        } else {
            let b = s.as_bytes();
            if b.len() < 3 || !b[0].is_ascii_alphabetic() || b[1] != b':' || b[2] != b'\\' {
                return Err(WinPathError::NotAbsolute(input.to_string()));
            }
            (
                format!("{}:", (b[0] as char).to_ascii_uppercase()),
                s[3..].to_string(),
            )
        };
        let mut parts = Vec::new();
        for part in rest.split('\\') {
            if part.is_empty() {
                continue;
            }
            if part == "." || part == ".." {
                return Err(WinPathError::DotComponent(input.to_string()));
            }
            if let Some(c) = part
                .chars()
                .find(|c| matches!(c, '\0' | '<' | '>' | ':' | '"' | '|' | '?' | '*'))
            {
                return Err(WinPathError::BadChar(input.to_string(), c));
            }
            parts.push(part.to_string());
        }
        Ok(WinPath { prefix, parts })
    }

    /// The path as Windows displays it, e.g. `C:\Users\me\repo` (drive roots keep their `\`).
    pub fn as_string(&self) -> String {
        let mut s = self.prefix.clone();
        if self.parts.is_empty() {
            s.push('\\');
        }
        for p in &self.parts {
            s.push('\\');
            s.push_str(p);
        }
        s
    }

    /// The case-folded comparison key.
    pub fn key(&self) -> String {
        fold(&self.as_string())
    }

    /// Components after the drive or share.
    pub fn components(&self) -> &[String] {
        &self.parts
    }

    /// The last component, if any.
    pub fn file_name(&self) -> Option<&str> {
        self.parts.last().map(String::as_str)
    }

    /// The parent directory (`None` for a drive or share root).
    pub fn parent(&self) -> Option<WinPath> {
        if self.parts.is_empty() {
            return None;
        }
        let mut p = self.clone();
        p.parts.pop();
        Some(p)
    }

    /// Appends relative components (separated by `\` or `/`). `.`/`..` and empty parts are
    /// rejected by re-parsing.
    pub fn join(&self, rel: &str) -> Result<WinPath, WinPathError> {
        WinPath::parse(&format!("{}\\{}", self.as_string(), rel))
    }

    /// True if `self` is `ancestor` or lies beneath it (case-insensitive, component-wise).
    pub fn starts_with(&self, ancestor: &WinPath) -> bool {
        fold(&self.prefix) == fold(&ancestor.prefix)
            && ancestor.parts.len() <= self.parts.len()
            && ancestor
                .parts
                .iter()
                .zip(&self.parts)
                .all(|(a, b)| fold(a) == fold(b))
    }

    /// Number of components (depth below the root).
    pub fn depth(&self) -> usize {
        self.parts.len()
    }

    /// This path followed by its ancestors, nearest first, ending at the root.
    pub fn self_and_ancestors(&self) -> Vec<WinPath> {
        let mut out = vec![self.clone()];
        let mut cur = self.clone();
        while let Some(p) = cur.parent() {
            out.push(p.clone());
            cur = p;
        }
        out
    }
}

impl PartialEq for WinPath {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for WinPath {}
impl PartialOrd for WinPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for WinPath {
    /// Orders by folded components so that a parent sorts immediately before its children.
    fn cmp(&self, other: &Self) -> Ordering {
        let a: Vec<String> = std::iter::once(&self.prefix)
            .chain(&self.parts)
            .map(|s| fold(s))
            .collect();
        let b: Vec<String> = std::iter::once(&other.prefix)
            .chain(&other.parts)
            .map(|s| fold(s))
            .collect();
        a.cmp(&b)
    }
}
impl std::hash::Hash for WinPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}
impl fmt::Display for WinPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}
impl fmt::Debug for WinPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WinPath({})", self.as_string())
    }
}
impl Serialize for WinPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}
impl<'de> serde::Deserialize<'de> for WinPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WinPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The components of `path` strictly beneath the writable root that contains it, outermost
/// first, `path` itself last: the ones a sandboxed command could have replaced by a junction or
/// symbolic link. Empty if no root contains `path` (or `path` is a root).
pub fn components_below_root(path: &WinPath, roots: &[WinPath]) -> Vec<WinPath> {
    let Some(root) = roots
        .iter()
        .filter(|r| path.starts_with(r))
        .max_by_key(|r| r.as_string().len())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = Some(path.clone());
    while let Some(c) = cur {
        if c == *root {
            break;
        }
        cur = c.parent();
        out.push(c);
    }
    out.reverse();
    out
}

/// The first component of `path` beneath its writable root that `is_reparse` says is a
/// junction or link (what `win::acl::refuse_reparse` refuses ACLs through), if any.
pub fn reparse_on_the_way(
    path: &WinPath,
    roots: &[WinPath],
    is_reparse: impl Fn(&WinPath) -> bool,
) -> Option<WinPath> {
    components_below_root(path, roots)
        .into_iter()
        .find(|c| is_reparse(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WinPath {
        WinPath::parse(s).expect("valid test path")
    }

    #[test]
    fn normalizes_separators_case_and_verbatim_prefix() {
        assert_eq!(p(r"c:/Users//me\repo\").as_string(), r"C:\Users\me\repo");
        assert_eq!(p(r"\\?\C:\Users\me").as_string(), r"C:\Users\me");
        assert_eq!(p(r"\\?\UNC\srv\share\x").as_string(), r"\\srv\share\x");
        assert_eq!(p(r"C:\").as_string(), r"C:\");
        assert_eq!(p(r"C:\USERS\ME"), p(r"c:\users\me"));
    }

    #[test]
    fn rejects_relative_dots_and_bad_chars() {
        assert!(matches!(
            WinPath::parse("repo"),
            Err(WinPathError::NotAbsolute(_))
        ));
        assert!(matches!(
            WinPath::parse(r"\Users"),
            Err(WinPathError::NotAbsolute(_))
        ));
        assert!(matches!(
            WinPath::parse(r"C:\a\..\b"),
            Err(WinPathError::DotComponent(_))
        ));
        assert!(matches!(
            WinPath::parse(r"C:\a\b*"),
            Err(WinPathError::BadChar(_, '*'))
        ));
        assert!(matches!(
            WinPath::parse(r"\\srv"),
            Err(WinPathError::NotAbsolute(_))
        ));
    }

    #[test]
    fn starts_with_is_componentwise_and_case_insensitive() {
        assert!(p(r"C:\Users\Me\Repo\src").starts_with(&p(r"c:\users\me\repo")));
        assert!(p(r"C:\Users\Me\Repo").starts_with(&p(r"c:\users\me\repo")));
        assert!(!p(r"C:\Users\Me\Repo2").starts_with(&p(r"c:\users\me\repo")));
        assert!(!p(r"D:\Users\Me\Repo").starts_with(&p(r"c:\users\me\repo")));
        assert!(p(r"C:\x").starts_with(&p(r"C:\")));
    }

    #[test]
    fn spaces_and_unicode_survive_and_fold() {
        let a = p(r"C:\Users\Zoë Ångström\My Projects\Ünïcode repo");
        assert_eq!(
            a.as_string(),
            r"C:\Users\Zoë Ångström\My Projects\Ünïcode repo"
        );
        assert_eq!(a, p(r"c:\users\ZOË ÅNGSTRÖM\my projects\üNÏCODE REPO"));
        assert_eq!(a.file_name(), Some("Ünïcode repo"));
    }

    #[test]
    fn components_below_root_stop_at_the_root() {
        let p = |s: &str| WinPath::parse(s).expect("path");
        let roots = [p(r"C:\ws"), p(r"C:\ws\tmp")];
        assert_eq!(
            components_below_root(&p(r"C:\ws\a\.git"), &roots),
            vec![p(r"C:\ws\a"), p(r"C:\ws\a\.git")]
        );
        assert_eq!(
            components_below_root(&p(r"C:\ws\tmp\x"), &roots),
            vec![p(r"C:\ws\tmp\x")]
        );
        assert!(components_below_root(&p(r"C:\ws"), &roots).is_empty());
        assert!(components_below_root(&p(r"C:\other\x"), &roots).is_empty());
    }

    #[test]
    fn parents_sort_before_children() {
        let mut v = vec![p(r"C:\a\b\c"), p(r"C:\a"), p(r"C:\A\b")];
        v.sort();
        assert_eq!(v, vec![p(r"C:\a"), p(r"C:\a\b"), p(r"C:\a\b\c")]);
        assert_eq!(p(r"C:\a\b").self_and_ancestors().len(), 3);
    }
}
