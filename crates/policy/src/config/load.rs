//! Loading: the embedded default, the user and workspace files, `--config`, profiles and CLI
//! flags, in order, with the trust rule.

use super::*;

/// The embedded default policy, parsed.
pub fn default_policy() -> Result<Policy, ConfigError> {
    let file = parse_config(DEFAULT_POLICY_TOML, Path::new("<embedded default policy>"))?;
    let mut m = Merger::new();
    m.apply(&file.base(), &Source::Default, None)?;
    Ok(m.policy)
}

/// The user config file location: `<config_dir>/stockade/config.toml`, where `config_dir` is
/// `override_dir`, else `$XDG_CONFIG_HOME` (if absolute), else `<home>/.config`.
pub fn user_config_path(override_dir: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let base = match override_dir {
        Some(d) => d.to_path_buf(),
        None => match std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
            Some(x) if x.is_absolute() => x,
            _ => home?.join(".config"),
        },
    };
    Some(base.join("stockade").join("config.toml"))
}

/// The workspace config file location: `<workspace>/.stockade/config.toml`.
pub fn workspace_config_path(workspace: &Path) -> PathBuf {
    workspace.join(".stockade").join("config.toml")
}

pub(super) struct FileLayer {
    pub(super) source: Source,
    pub(super) file: ConfigFile,
    pub(super) path: PathBuf,
    pub(super) untrusted: bool,
}

/// Load and merge every layer (see the [module docs](self) for the order, merge rules and the
/// workspace trust rule).
pub fn load(req: &LoadRequest) -> Result<Loaded, ConfigError> {
    let workspace = std::fs::canonicalize(&req.workspace).unwrap_or_else(|_| req.workspace.clone());
    let mut layers = vec![LayerInfo {
        source: Source::Default,
        path: None,
        status: LayerStatus::Loaded,
        trusted: None,
    }];
    let default_file = parse_config(DEFAULT_POLICY_TOML, Path::new("<embedded default policy>"))?;
    let mut files: Vec<FileLayer> = Vec::new();
    let mut trusted_entries: Vec<(PathBuf, String)> = Vec::new();

    let user_path = user_config_path(req.config_dir.as_deref(), req.home.as_deref());
    let user_label = user_path.as_ref().map_or_else(
        || "your user config".to_string(),
        |p| p.display().to_string(),
    );
    match &user_path {
        Some(path) => {
            let source = Source::User(path.clone());
            match read_optional(path)? {
                Some(text) => {
                    let file = parse_config(&text, path)?;
                    for e in file.trusted_workspaces.iter().flatten() {
                        trusted_entries.push((path.clone(), e.clone()));
                    }
                    layers.push(LayerInfo {
                        source: source.clone(),
                        path: Some(path.clone()),
                        status: LayerStatus::Loaded,
                        trusted: None,
                    });
                    files.push(FileLayer {
                        source,
                        file,
                        path: path.clone(),
                        untrusted: false,
                    });
                }
                None => layers.push(LayerInfo {
                    source,
                    path: Some(path.clone()),
                    status: LayerStatus::Missing,
                    trusted: None,
                }),
            }
        }
        None => layers.push(LayerInfo {
            source: Source::User(PathBuf::from("~/.config/stockade/config.toml")),
            path: None,
            status: LayerStatus::NoLocation,
            trusted: None,
        }),
    }

    let ws_path = workspace_config_path(&workspace);
    let ws_text = read_optional(&ws_path)?;
    let ws_file = match &ws_text {
        Some(text) => {
            let f = parse_config(text, &ws_path)?;
            if f.trusted_workspaces.is_some() {
                return Err(ConfigError::NotAllowedHere {
                    file: ws_path,
                    key: "trusted_workspaces".into(),
                    reason: format!(
                        "a workspace cannot trust itself; list trusted workspaces in {user_label}"
                    ),
                });
            }
            Some(f)
        }
        None => None,
    };

    let mut config_layer = None;
    if let Some(path) = &req.config_file {
        let text = read_optional(path)?
            .ok_or_else(|| ConfigError::MissingConfigFile { file: path.clone() })?;
        let file = parse_config(&text, path)?;
        for e in file.trusted_workspaces.iter().flatten() {
            trusted_entries.push((path.clone(), e.clone()));
        }
        config_layer = Some(FileLayer {
            source: Source::Config(path.clone()),
            file,
            path: path.clone(),
            untrusted: false,
        });
    }

    let trusted = is_trusted(&workspace, &trusted_entries, req.home.as_deref())?;
    let ws_source = Source::Workspace(ws_path.clone());
    layers.push(LayerInfo {
        source: ws_source.clone(),
        path: Some(ws_path.clone()),
        status: if ws_file.is_some() {
            LayerStatus::Loaded
        } else {
            LayerStatus::Missing
        },
        trusted: Some(trusted),
    });
    if let Some(file) = ws_file {
        files.push(FileLayer {
            source: ws_source,
            file,
            path: ws_path,
            untrusted: !trusted,
        });
    }
    if let Some(c) = config_layer {
        layers.push(LayerInfo {
            source: c.source.clone(),
            path: Some(c.path.clone()),
            status: LayerStatus::Loaded,
            trusted: None,
        });
        files.push(c);
    }

    // Profiles must exist somewhere before anything is merged.
    if let Some(name) = &req.profile {
        let in_default = default_file.profiles.contains_key(name);
        if !in_default && !files.iter().any(|f| f.file.profiles.contains_key(name)) {
            let mut known: Vec<&String> = default_file
                .profiles
                .keys()
                .chain(files.iter().flat_map(|f| f.file.profiles.keys()))
                .collect();
            known.sort();
            known.dedup();
            let known = if known.is_empty() {
                "no config file defines any profile; define one as [profiles.NAME.<section>]"
                    .to_string()
            } else {
                format!(
                    "known profiles: {}",
                    known
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(ConfigError::UnknownProfile {
                name: name.clone(),
                known,
            });
        }
    }

    let mut m = Merger::new();
    m.apply(&default_file.base(), &Source::Default, None)?;
    for f in &files {
        let guard = f.untrusted.then(|| Guard {
            file: &f.path,
            workspace: &workspace,
            user_config: &user_label,
            key_prefix: String::new(),
        });
        m.apply(&f.file.base(), &f.source, guard.as_ref())?;
    }
    if let Some(name) = &req.profile {
        let profile_layers = std::iter::once((&Source::Default, &default_file, None, false)).chain(
            files
                .iter()
                .map(|f| (&f.source, &f.file, Some(&f.path), f.untrusted)),
        );
        for (source, file, path, untrusted) in profile_layers {
            let Some(p) = file.profiles.get(name) else {
                continue;
            };
            let src = Source::Profile {
                name: name.clone(),
                layer: Box::new(source.clone()),
            };
            let guard = match (untrusted, path) {
                (true, Some(path)) => Some(Guard {
                    file: path,
                    workspace: &workspace,
                    user_config: &user_label,
                    key_prefix: format!("profiles.{name}."),
                }),
                _ => None,
            };
            m.apply(p, &src, guard.as_ref())?;
            layers.push(LayerInfo {
                source: src,
                path: path.cloned(),
                status: LayerStatus::Loaded,
                trusted: None,
            });
        }
    }
    m.apply_cli(&req.cli);
    if req.cli != CliOverrides::default() {
        layers.push(LayerInfo {
            source: Source::Cli,
            path: None,
            status: LayerStatus::Loaded,
            trusted: None,
        });
    }
    Ok(Loaded {
        policy: m.policy,
        provenance: m.prov,
        layers,
        warnings: m.warnings,
    })
}

pub(super) fn is_trusted(
    workspace: &Path,
    entries: &[(PathBuf, String)],
    home: Option<&Path>,
) -> Result<bool, ConfigError> {
    for (file, entry) in entries {
        let bad = |reason: String| ConfigError::BadTrustedWorkspace {
            file: file.clone(),
            entry: entry.clone(),
            reason,
        };
        if !entry.starts_with('~') && !Path::new(entry).is_absolute() {
            return Err(bad(
                "it must be an absolute path or start with `~/`".to_string()
            ));
        }
        let p = expand_path(entry, home, Path::new("/")).map_err(|e| bad(e.to_string()))?;
        let p = std::fs::canonicalize(&p).unwrap_or(p);
        if p == workspace {
            return Ok(true);
        }
    }
    Ok(false)
}
