//! The config file format: the partial (all-optional) serde types, unknown-key detection and
//! parsing with line/column positions.

use super::*;

/// A limit in a config file: a number, or `"none"` / `"unlimited"` to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    Value(u64),
    Unlimited,
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, or \"none\" to remove the limit")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Limit, E> {
                Ok(Limit::Value(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Limit, E> {
                u64::try_from(v).map(Limit::Value).map_err(|_| {
                    E::custom(format!(
                        "{v} is negative; use a non-negative integer, or \"none\" to remove the limit"
                    ))
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Limit, E> {
                match v {
                    "none" | "unlimited" => Ok(Limit::Unlimited),
                    _ => Err(E::custom(format!(
                        "{v:?} is not a limit; use a non-negative integer, or \"none\" to remove the limit"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Limit {
    pub(super) fn to_option(self) -> Option<u64> {
        match self {
            Limit::Value(v) => Some(v),
            Limit::Unlimited => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartialFilesystem {
    pub(super) read_only: Option<bool>,
    pub(super) writable_roots: Option<Vec<String>>,
    pub(super) protected_names: Option<Vec<String>>,
    pub(super) protected_paths: Option<Vec<String>>,
    pub(super) deny_read: Option<Vec<String>>,
    pub(super) allow_unix_sockets: Option<Vec<String>>,
    pub(super) allow_dangerous_roots: Option<bool>,
    pub(super) walk_exempt: Option<Vec<String>>,
    pub(super) outside_writes: Option<crate::model::OutsideWrites>,
    pub(super) overlay_roots: Option<Vec<String>>,
    pub(super) overlay_max_bytes: Option<Limit>,
    pub(super) windows_lock_protected_dacls: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartialNetwork {
    pub(super) mode: Option<NetworkMode>,
    pub(super) allowed_domains: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartialEnv {
    pub(super) inherit: Option<EnvInherit>,
    pub(super) exclude: Option<Vec<String>>,
    pub(super) set: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartialLimits {
    pub(super) timeout_secs: Option<Limit>,
    pub(super) max_memory: Option<Limit>,
    pub(super) max_processes: Option<Limit>,
    pub(super) max_open_files: Option<Limit>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartialTemp {
    pub(super) private: Option<bool>,
    pub(super) persist: Option<bool>,
    pub(super) mode: Option<crate::model::TempMode>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartialGit {
    pub(super) mode: Option<crate::model::GitMode>,
}

/// A policy with every key optional: one layer (or one profile) of configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartialPolicy {
    pub(super) filesystem: Option<PartialFilesystem>,
    pub(super) network: Option<PartialNetwork>,
    pub(super) env: Option<PartialEnv>,
    pub(super) limits: Option<PartialLimits>,
    pub(super) temp: Option<PartialTemp>,
    pub(super) git: Option<PartialGit>,
}

/// A config file: a partial policy plus profiles and (user/`--config` only) trusted workspaces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub(super) filesystem: Option<PartialFilesystem>,
    pub(super) network: Option<PartialNetwork>,
    pub(super) env: Option<PartialEnv>,
    pub(super) limits: Option<PartialLimits>,
    pub(super) temp: Option<PartialTemp>,
    pub(super) git: Option<PartialGit>,
    #[serde(default)]
    pub(super) profiles: BTreeMap<String, PartialPolicy>,
    pub(super) trusted_workspaces: Option<Vec<String>>,
}

impl ConfigFile {
    pub(super) fn base(&self) -> PartialPolicy {
        PartialPolicy {
            filesystem: self.filesystem.clone(),
            network: self.network.clone(),
            env: self.env.clone(),
            limits: self.limits.clone(),
            temp: self.temp.clone(),
            git: self.git.clone(),
        }
    }
}

pub(super) const TOP_KEYS: &[&str] = &[
    "filesystem",
    "network",
    "env",
    "limits",
    "temp",
    "git",
    "profiles",
    "trusted_workspaces",
];
pub(super) const SECTIONS: &[&str] = &["filesystem", "network", "env", "limits", "temp", "git"];
pub(super) const FILESYSTEM_KEYS: &[&str] = &[
    "read_only",
    "writable_roots",
    "protected_names",
    "protected_paths",
    "deny_read",
    "allow_unix_sockets",
    "allow_dangerous_roots",
    "walk_exempt",
    "outside_writes",
    "overlay_roots",
    "overlay_max_bytes",
    "windows_lock_protected_dacls",
];
pub(super) const NETWORK_KEYS: &[&str] = &["mode", "allowed_domains"];
pub(super) const ENV_KEYS: &[&str] = &["inherit", "exclude", "set"];
pub(super) const LIMITS_KEYS: &[&str] = &[
    "timeout_secs",
    "max_memory",
    "max_processes",
    "max_open_files",
];
pub(super) const TEMP_KEYS: &[&str] = &["private", "persist", "mode"];
pub(super) const GIT_KEYS: &[&str] = &["mode"];

pub(super) fn section_keys(section: &str) -> &'static [&'static str] {
    match section {
        "filesystem" => FILESYSTEM_KEYS,
        "network" => NETWORK_KEYS,
        "env" => ENV_KEYS,
        "limits" => LIMITS_KEYS,
        "git" => GIT_KEYS,
        _ => TEMP_KEYS,
    }
}

/// Every unknown key of a parsed file: (dotted key, the keys valid at that place).
pub(super) fn find_unknown(t: &toml::Table) -> Vec<(String, &'static [&'static str])> {
    fn sections(
        t: &toml::Table,
        prefix: &str,
        allowed: &'static [&'static str],
        out: &mut Vec<(String, &'static [&'static str])>,
    ) {
        for (k, v) in t {
            if !allowed.contains(&k.as_str()) {
                out.push((format!("{prefix}{k}"), allowed));
                continue;
            }
            if k == "profiles" {
                if let toml::Value::Table(profiles) = v {
                    for (name, p) in profiles {
                        if let toml::Value::Table(p) = p {
                            sections(p, &format!("profiles.{name}."), SECTIONS, out);
                        }
                    }
                }
            } else if let toml::Value::Table(st) = v {
                if SECTIONS.contains(&k.as_str()) {
                    let keys = section_keys(k);
                    for sk in st.keys() {
                        if !keys.contains(&sk.as_str()) {
                            out.push((format!("{prefix}{k}.{sk}"), keys));
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    sections(t, "", TOP_KEYS, &mut out);
    out
}

pub(super) fn one_line(msg: &str) -> String {
    msg.trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(super) fn parse_config(text: &str, file: &Path) -> Result<ConfigFile, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError::Parse {
            file: file.to_path_buf(),
            line,
            column,
            message: one_line(e.message()),
        }
    })?;
    let unknown = find_unknown(&table);
    let typed = toml::from_str::<ConfigFile>(text);
    let (err_line, err_col, err_msg) = match &typed {
        Ok(_) => (None, None, None),
        Err(e) => {
            let (l, c) = e.span().map(|s| line_col(text, s.start)).unzip();
            (l, c, Some(one_line(e.message())))
        }
    };
    if !unknown.is_empty() {
        // Prefer the unknown key the parser stopped at (its span gives the line).
        let flagged = err_msg
            .as_deref()
            .and_then(|m| m.strip_prefix("unknown field `"))
            .and_then(|m| m.split('`').next());
        let hit = flagged.and_then(|name| {
            unknown
                .iter()
                .find(|(k, _)| k.rsplit('.').next() == Some(name))
        });
        let (key, expected) = hit.unwrap_or(&unknown[0]);
        let (line, column) = if hit.is_some() {
            (err_line, err_col)
        } else {
            (None, None)
        };
        return Err(ConfigError::UnknownKey {
            file: file.to_path_buf(),
            key: key.clone(),
            line,
            column,
            expected: expected.join(", "),
        });
    }
    typed.map_err(|_| ConfigError::Invalid {
        file: file.to_path_buf(),
        line: err_line,
        column: err_col,
        message: err_msg.unwrap_or_default(),
    })
}

/// Read a file; `Ok(None)` if it does not exist.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            file: path.to_path_buf(),
            source,
        }),
    }
}
