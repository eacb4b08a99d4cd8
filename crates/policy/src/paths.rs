//! Small path and pattern helpers shared by [`crate::config`] and [`crate::plan`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Why a policy path string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The entry starts with `~` but no home directory is known.
    #[error(
        "it starts with `~` but the home directory is unknown; set HOME or use an absolute path"
    )]
    NoHome,
    /// The entry uses `~user/` syntax, which is not supported.
    #[error("`~user` paths are not supported; use `~/...` or an absolute path")]
    OtherUser,
    /// The entry is empty.
    #[error("the path is empty")]
    Empty,
}

/// Expand a policy path string: `~` and `~/rest` become the home directory (joined with `rest`),
/// absolute paths stay as they are, and relative paths are joined to `base` (the workspace).
///
/// No filesystem access happens here; the result is not canonical.
pub fn expand_path(entry: &str, home: Option<&Path>, base: &Path) -> Result<PathBuf, ExpandError> {
    if entry.is_empty() {
        return Err(ExpandError::Empty);
    }
    if let Some(rest) = entry.strip_prefix('~') {
        let home = home.ok_or(ExpandError::NoHome)?;
        if rest.is_empty() {
            return Ok(home.to_path_buf());
        }
        return match rest.strip_prefix('/') {
            Some(rest) => {
                let rest = rest.trim_start_matches('/');
                if rest.is_empty() {
                    Ok(home.to_path_buf())
                } else {
                    Ok(home.join(rest))
                }
            }
            None => Err(ExpandError::OtherUser),
        };
    }
    let p = Path::new(entry);
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(base.join(p))
    }
}

/// Case-insensitive (ASCII) glob match of a whole name against `pattern`, where `*` matches any
/// run of characters (including none) and `?` matches exactly one character. There is no
/// escaping and no character classes. Non-UTF-8 names are matched on their raw bytes.
///
/// ```
/// use stockade_policy::paths::glob_match;
/// use std::ffi::OsStr;
/// assert!(glob_match("*KEY*", OsStr::new("my_key")));
/// assert!(glob_match("*KEY*", OsStr::new("KEYBOARD")));
/// assert!(!glob_match("LC_?", OsStr::new("LC_ALL")));
/// ```
pub fn glob_match(pattern: &str, name: &OsStr) -> bool {
    glob_bytes(pattern.as_bytes(), name.as_encoded_bytes())
}

fn glob_bytes(pat: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear in practice, never exponential.
    // `?` consumes one *character*: a whole UTF-8 sequence when the name is valid UTF-8 there.
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
            continue;
        }
        if p < pat.len() && pat[p] == b'?' {
            p += 1;
            i += utf8_len(s, i);
            continue;
        }
        if p < pat.len() && pat[p].eq_ignore_ascii_case(&s[i]) {
            p += 1;
            i += 1;
            continue;
        }
        match star {
            Some((sp, si)) => {
                let next = si + utf8_len(s, si);
                star = Some((sp, next));
                p = sp + 1;
                i = next;
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Length of the character starting at `s[i]` (1 for ASCII or invalid UTF-8).
fn utf8_len(s: &[u8], i: usize) -> usize {
    let want = match s[i] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return 1,
    };
    if i + want <= s.len() && s[i + 1..i + want].iter().all(|&b| b & 0xC0 == 0x80) {
        want
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        glob_match(p, OsStr::new(s))
    }

    #[test]
    fn glob_basics() {
        assert!(m("*KEY*", "API_KEY"));
        assert!(m("*KEY*", "my_key"));
        assert!(
            m("*KEY*", "KEYBOARD"),
            "documented: substring globs also match KEYBOARD"
        );
        assert!(m("*KEY*", "KEY"));
        assert!(!m("*KEY*", "KE_Y"));
        assert!(m("SSH_AUTH_SOCK", "ssh_auth_sock"));
        assert!(!m("SSH_AUTH_SOCK", "SSH_AUTH_SOCKET"));
        assert!(m("LC_?", "LC_X"));
        assert!(!m("LC_?", "LC_"));
        assert!(m("a?c", "aéc"));
        assert!(m("*", ""));
        assert!(!m("", "x"));
        assert!(m("", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**x", "abcx"));
    }

    #[cfg(unix)]
    #[test]
    fn glob_non_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let name = OsStr::from_bytes(b"MY\xffTOKEN");
        assert!(glob_match("*TOKEN", name));
        assert!(glob_match("MY?TOKEN", name));
    }

    #[test]
    fn expand() {
        let home = Path::new("/h o/me");
        let ws = Path::new("/ws");
        assert_eq!(expand_path("~", Some(home), ws).unwrap(), home);
        assert_eq!(expand_path("~/", Some(home), ws).unwrap(), home);
        assert_eq!(
            expand_path("~/.ssh", Some(home), ws).unwrap(),
            home.join(".ssh")
        );
        assert_eq!(
            expand_path("/abs", Some(home), ws).unwrap(),
            Path::new("/abs")
        );
        assert_eq!(
            expand_path("rel/x", Some(home), ws).unwrap(),
            Path::new("/ws/rel/x")
        );
        assert_eq!(expand_path("~/x", None, ws), Err(ExpandError::NoHome));
        assert_eq!(
            expand_path("~bob/x", Some(home), ws),
            Err(ExpandError::OtherUser)
        );
        assert_eq!(expand_path("", Some(home), ws), Err(ExpandError::Empty));
    }
}

/// Serializers that write paths lossily (`U+FFFD` for non-UTF-8 bytes) instead of failing, so a
/// plan or a provenance report with an odd path can still be shown as JSON.
pub(crate) mod lossy {
    use serde::ser::SerializeSeq;
    use serde::Serializer;
    use std::path::{Path, PathBuf};

    pub(crate) fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&p.display())
    }

    pub(crate) fn opt_path<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.collect_str(&p.display()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn paths<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for p in v {
            seq.serialize_element(&p.display().to_string())?;
        }
        seq.end()
    }
}
