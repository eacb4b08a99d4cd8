//! Merging layers: list and map rules, provenance, and the untrusted-workspace guard.

use super::*;

/// Context for checking an untrusted workspace layer.
pub(super) struct Guard<'a> {
    pub(super) file: &'a Path,
    pub(super) workspace: &'a Path,
    pub(super) user_config: &'a str,
    pub(super) key_prefix: String,
}

impl Guard<'_> {
    pub(super) fn deny(&self, key: &str, detail: String) -> ConfigError {
        ConfigError::UntrustedWidening {
            file: self.file.to_path_buf(),
            key: format!("{}{key}", self.key_prefix),
            detail: detail.into(),
            workspace: self.workspace.to_path_buf(),
            user_config: self.user_config.into(),
        }
    }
}

pub(super) fn inherit_rank(i: EnvInherit) -> u8 {
    match i {
        EnvInherit::None => 0,
        EnvInherit::Core => 1,
        EnvInherit::All => 2,
    }
}

pub(super) fn empty_policy() -> Policy {
    Policy {
        filesystem: FilesystemPolicy {
            read_only: false,
            writable_roots: Vec::new(),
            protected_names: Vec::new(),
            protected_paths: Vec::new(),
            deny_read: Vec::new(),
            allow_unix_sockets: Vec::new(),
            allow_dangerous_roots: false,
            walk_exempt: Vec::new(),
            outside_writes: crate::model::OutsideWrites::Deny,
            overlay_roots: Vec::new(),
            overlay_max_bytes: None,
            windows_lock_protected_dacls: true,
        },
        network: NetworkPolicy {
            mode: NetworkMode::Off,
            allowed_domains: Vec::new(),
        },
        env: EnvPolicy {
            inherit: EnvInherit::All,
            exclude: Vec::new(),
            set: BTreeMap::new(),
        },
        limits: LimitsPolicy::default(),
        temp: TempPolicy {
            private: true,
            persist: false,
            mode: crate::model::TempMode::Empty,
        },
        git: crate::model::GitPolicy {
            mode: crate::model::GitMode::ReadOnly,
        },
    }
}

pub(super) struct Merger {
    pub(super) policy: Policy,
    pub(super) prov: Provenance,
    pub(super) warnings: Vec<String>,
}

pub(super) fn note_value(prov: &mut Provenance, key: &str, src: &Source) {
    if let KeyProvenance::Value { set_by } = prov
        .keys
        .entry(key.to_string())
        .or_insert_with(|| KeyProvenance::Value { set_by: Vec::new() })
    {
        set_by.push(src.clone());
    }
}

pub(super) fn set_value<T>(slot: &mut T, v: T, prov: &mut Provenance, key: &str, src: &Source) {
    *slot = v;
    note_value(prov, key, src);
}

pub(super) fn same_entry(a: &str, b: &str) -> bool {
    let trim = |s: &str| -> String {
        if s.len() > 1 {
            s.trim_end_matches('/').to_string()
        } else {
            s.to_string()
        }
    };
    trim(a) == trim(b)
}

pub(super) fn merge_list(
    slot: &mut Vec<String>,
    items: &[String],
    prov: &mut Provenance,
    warnings: &mut Vec<String>,
    key: &str,
    src: &Source,
) {
    let p = prov
        .keys
        .entry(key.to_string())
        .or_insert_with(|| KeyProvenance::List {
            set_by: Vec::new(),
            entries: Vec::new(),
            removed: Vec::new(),
        });
    let KeyProvenance::List {
        set_by,
        entries,
        removed,
    } = p
    else {
        return;
    };
    set_by.push(src.clone());
    for item in items {
        if item == "!" || item == "!*" {
            let gone: Vec<String> = entries.drain(..).map(|e| e.value).collect();
            removed.push(Removal {
                pattern: item.clone(),
                removed: gone,
                source: src.clone(),
            });
        } else if let Some(target) = item.strip_prefix('!') {
            let before = entries.len();
            let mut gone = Vec::new();
            entries.retain(|e| {
                let hit = same_entry(&e.value, target);
                if hit {
                    gone.push(e.value.clone());
                }
                !hit
            });
            if entries.len() == before {
                warnings.push(format!(
                    "`{key}` entry {item:?} in {src} removes nothing: no inherited entry is {target:?}"
                ));
            }
            removed.push(Removal {
                pattern: item.clone(),
                removed: gone,
                source: src.clone(),
            });
        } else if !entries.iter().any(|e| e.value == *item) {
            entries.push(ListEntry {
                value: item.clone(),
                source: src.clone(),
            });
        }
    }
    *slot = entries.iter().map(|e| e.value.clone()).collect();
}

pub(super) fn merge_map(
    slot: &mut BTreeMap<String, String>,
    items: &BTreeMap<String, String>,
    prov: &mut Provenance,
    key: &str,
    src: &Source,
) {
    let p = prov
        .keys
        .entry(key.to_string())
        .or_insert_with(|| KeyProvenance::Map {
            entries: BTreeMap::new(),
        });
    let KeyProvenance::Map { entries } = p else {
        return;
    };
    for (k, v) in items {
        slot.insert(k.clone(), v.clone());
        entries.entry(k.clone()).or_default().push(src.clone());
    }
}

impl Merger {
    pub(super) fn new() -> Merger {
        Merger {
            policy: empty_policy(),
            prov: Provenance::default(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn list(&mut self, section: &str, key: &str, items: &[String], src: &Source) {
        let pol = &mut self.policy;
        let slot = match (section, key) {
            ("filesystem", "writable_roots") => &mut pol.filesystem.writable_roots,
            ("filesystem", "protected_names") => &mut pol.filesystem.protected_names,
            ("filesystem", "protected_paths") => &mut pol.filesystem.protected_paths,
            ("filesystem", "deny_read") => &mut pol.filesystem.deny_read,
            ("filesystem", "allow_unix_sockets") => &mut pol.filesystem.allow_unix_sockets,
            ("filesystem", "walk_exempt") => &mut pol.filesystem.walk_exempt,
            ("filesystem", "overlay_roots") => &mut pol.filesystem.overlay_roots,
            ("network", "allowed_domains") => &mut pol.network.allowed_domains,
            _ => &mut pol.env.exclude,
        };
        merge_list(
            slot,
            items,
            &mut self.prov,
            &mut self.warnings,
            &format!("{section}.{key}"),
            src,
        );
    }

    /// Apply one partial policy. With a guard, widening values are refused before anything of
    /// this key is applied.
    pub(super) fn apply_core(
        &mut self,
        p: &PartialPolicy,
        src: &Source,
        guard: Option<&Guard<'_>>,
    ) -> Result<(), ConfigError> {
        let widen = |key: &str, detail: String| -> Result<(), ConfigError> {
            match guard {
                Some(g) => Err(g.deny(key, detail)),
                None => Ok(()),
            }
        };
        if let Some(f) = &p.filesystem {
            if let Some(v) = f.read_only {
                if !v && self.policy.filesystem.read_only {
                    widen(
                        "filesystem.read_only",
                        "= false turns read-only mode off".into(),
                    )?;
                }
                set_value(
                    &mut self.policy.filesystem.read_only,
                    v,
                    &mut self.prov,
                    "filesystem.read_only",
                    src,
                );
            }
            if let Some(items) = &f.writable_roots {
                if let Some(e) = items.iter().find(|e| !e.starts_with('!')) {
                    widen(
                        "filesystem.writable_roots",
                        format!("adds the writable root {e:?}"),
                    )?;
                }
                self.list("filesystem", "writable_roots", items, src);
            }
            for (key, items) in [
                ("protected_names", &f.protected_names),
                ("protected_paths", &f.protected_paths),
                ("deny_read", &f.deny_read),
            ] {
                let Some(items) = items else { continue };
                if let Some(e) = items.iter().find(|e| e.starts_with('!')) {
                    widen(
                        &format!("filesystem.{key}"),
                        format!("entry {e:?} removes inherited protection"),
                    )?;
                }
                self.list("filesystem", key, items, src);
            }
            if let Some(items) = &f.allow_unix_sockets {
                if let Some(e) = items.iter().find(|e| !e.starts_with('!')) {
                    widen(
                        "filesystem.allow_unix_sockets",
                        format!("allows connecting to {e:?}"),
                    )?;
                }
                self.list("filesystem", "allow_unix_sockets", items, src);
            }
            if let Some(items) = &f.walk_exempt {
                if let Some(e) = items.iter().find(|e| !e.starts_with('!')) {
                    widen(
                        "filesystem.walk_exempt",
                        format!(
                            "exempts {e:?} from the protected-name walk (only your own config \
                             may do that)"
                        ),
                    )?;
                }
                self.list("filesystem", "walk_exempt", items, src);
            }
            if let Some(v) = f.windows_lock_protected_dacls {
                if !v && self.policy.filesystem.windows_lock_protected_dacls {
                    widen(
                        "filesystem.windows_lock_protected_dacls",
                        "= false lets the command re-ACL protected paths (Windows unelevated tier)"
                            .into(),
                    )?;
                }
                set_value(
                    &mut self.policy.filesystem.windows_lock_protected_dacls,
                    v,
                    &mut self.prov,
                    "filesystem.windows_lock_protected_dacls",
                    src,
                );
            }
            if let Some(v) = f.allow_dangerous_roots {
                if v && !self.policy.filesystem.allow_dangerous_roots {
                    widen(
                        "filesystem.allow_dangerous_roots",
                        "= true allows system and home directories as writable roots".into(),
                    )?;
                }
                set_value(
                    &mut self.policy.filesystem.allow_dangerous_roots,
                    v,
                    &mut self.prov,
                    "filesystem.allow_dangerous_roots",
                    src,
                );
            }
        }
        if let Some(n) = &p.network {
            if let Some(v) = n.mode {
                if v.rank() > self.policy.network.mode.rank() {
                    widen(
                        "network.mode",
                        format!(
                            "= \"{v}\" gives more network than \"{}\"",
                            self.policy.network.mode
                        ),
                    )?;
                }
                set_value(
                    &mut self.policy.network.mode,
                    v,
                    &mut self.prov,
                    "network.mode",
                    src,
                );
            }
            if let Some(items) = &n.allowed_domains {
                if let Some(e) = items.iter().find(|e| !e.starts_with('!')) {
                    widen(
                        "network.allowed_domains",
                        format!("allows the domain {e:?}"),
                    )?;
                }
                self.list("network", "allowed_domains", items, src);
            }
        }
        if let Some(e) = &p.env {
            if let Some(v) = e.inherit {
                if inherit_rank(v) > inherit_rank(self.policy.env.inherit) {
                    widen(
                        "env.inherit",
                        format!(
                            "= {:?} inherits more than the current {:?}",
                            inherit_name(v),
                            inherit_name(self.policy.env.inherit)
                        ),
                    )?;
                }
                set_value(
                    &mut self.policy.env.inherit,
                    v,
                    &mut self.prov,
                    "env.inherit",
                    src,
                );
            }
            if let Some(items) = &e.exclude {
                if let Some(x) = items.iter().find(|x| x.starts_with('!')) {
                    widen(
                        "env.exclude",
                        format!("entry {x:?} lets excluded variables through"),
                    )?;
                }
                self.list("env", "exclude", items, src);
            }
            if let Some(set) = &e.set {
                merge_map(
                    &mut self.policy.env.set,
                    set,
                    &mut self.prov,
                    "env.set",
                    src,
                );
            }
        }
        if let Some(l) = &p.limits {
            let lim = &mut self.policy.limits;
            for (key, new, slot) in [
                ("limits.timeout_secs", l.timeout_secs, &mut lim.timeout_secs),
                ("limits.max_memory", l.max_memory, &mut lim.max_memory),
                (
                    "limits.max_processes",
                    l.max_processes,
                    &mut lim.max_processes,
                ),
                (
                    "limits.max_open_files",
                    l.max_open_files,
                    &mut lim.max_open_files,
                ),
            ] {
                let Some(new) = new else { continue };
                if let Some(cur) = *slot {
                    match new {
                        Limit::Unlimited => widen(key, format!("removes the limit {cur}"))?,
                        Limit::Value(n) if n > cur => {
                            widen(key, format!("raises the limit from {cur} to {n}"))?
                        }
                        Limit::Value(_) => {}
                    }
                }
                set_value(slot, new.to_option(), &mut self.prov, key, src);
            }
        }
        if let Some(t) = &p.temp {
            if let Some(v) = t.private {
                if !v && self.policy.temp.private {
                    widen(
                        "temp.private",
                        "= false shares the host's /tmp with the sandbox".into(),
                    )?;
                }
                set_value(
                    &mut self.policy.temp.private,
                    v,
                    &mut self.prov,
                    "temp.private",
                    src,
                );
            }
            if let Some(v) = t.persist {
                set_value(
                    &mut self.policy.temp.persist,
                    v,
                    &mut self.prov,
                    "temp.persist",
                    src,
                );
            }
        }
        if let Some(m) = p.git.as_ref().and_then(|g| g.mode) {
            use crate::model::GitMode;
            if m == GitMode::Commit && self.policy.git.mode == GitMode::ReadOnly {
                widen(
                    "git.mode",
                    "= \"commit\" makes .git writable (objects, refs, index) where it was read-only"
                        .into(),
                )?;
            }
            set_value(
                &mut self.policy.git.mode,
                m,
                &mut self.prov,
                "git.mode",
                src,
            );
        }
        Ok(())
    }

    pub(super) fn apply_cli(&mut self, cli: &CliOverrides) {
        let src = Source::Cli;
        if !cli.writable.is_empty() {
            self.list("filesystem", "writable_roots", &cli.writable, &src);
        }
        if let Some(m) = cli.network {
            set_value(
                &mut self.policy.network.mode,
                m,
                &mut self.prov,
                "network.mode",
                &src,
            );
        }
        if !cli.allow_domains.is_empty() {
            self.list("network", "allowed_domains", &cli.allow_domains, &src);
        }
        if cli.read_only {
            set_value(
                &mut self.policy.filesystem.read_only,
                true,
                &mut self.prov,
                "filesystem.read_only",
                &src,
            );
        }
        if cli.allow_dangerous_roots {
            set_value(
                &mut self.policy.filesystem.allow_dangerous_roots,
                true,
                &mut self.prov,
                "filesystem.allow_dangerous_roots",
                &src,
            );
        }
        if let Some(t) = cli.timeout_secs {
            set_value(
                &mut self.policy.limits.timeout_secs,
                Some(t),
                &mut self.prov,
                "limits.timeout_secs",
                &src,
            );
        }
        if !cli.env_set.is_empty() {
            let map: BTreeMap<String, String> = cli.env_set.iter().cloned().collect();
            merge_map(
                &mut self.policy.env.set,
                &map,
                &mut self.prov,
                "env.set",
                &src,
            );
        }
    }
}

pub(super) fn inherit_name(i: EnvInherit) -> &'static str {
    match i {
        EnvInherit::All => "all",
        EnvInherit::Core => "core",
        EnvInherit::None => "none",
    }
}
