use super::*;
use crate::test_util::TempDir;

struct Env {
    t: TempDir,
    home: PathBuf,
    ws: PathBuf,
    xdg: PathBuf,
}

impl Env {
    fn new() -> Env {
        let t = TempDir::new("config");
        let home = t.mkdir("home");
        let ws = t.mkdir("ws");
        let xdg = t.mkdir("xdg");
        Env { t, home, ws, xdg }
    }
    fn user(&self, text: &str) -> PathBuf {
        let p = self.xdg.join("stockade/config.toml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
    fn workspace(&self, text: &str) -> PathBuf {
        let p = self.ws.join(".stockade/config.toml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
    fn extra(&self, text: &str) -> PathBuf {
        self.t.file("extra.toml", text)
    }
    fn req(&self) -> LoadRequest {
        LoadRequest {
            workspace: self.ws.clone(),
            home: Some(self.home.clone()),
            config_dir: Some(self.xdg.clone()),
            config_file: None,
            profile: None,
            cli: CliOverrides::default(),
        }
    }
}

fn src(l: &Loaded, key: &str) -> String {
    l.provenance
        .effective(key)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

#[test]
fn default_only_matches_embedded_policy() {
    let e = Env::new();
    let l = load(&e.req()).unwrap();
    let direct: Policy = toml::from_str(DEFAULT_POLICY_TOML).unwrap();
    assert_eq!(l.policy, direct);
    assert_eq!(default_policy().unwrap(), direct);
    assert_eq!(src(&l, "network.mode"), "default");
    assert_eq!(src(&l, "temp.persist"), "default");
    assert_eq!(
        l.provenance
            .list_entry_source("filesystem.deny_read", "~/.ssh"),
        Some(&Source::Default)
    );
    assert!(l.provenance.get("limits.timeout_secs").is_none());
    let statuses: Vec<LayerStatus> = l.layers.iter().map(|l| l.status).collect();
    assert_eq!(
        statuses,
        vec![
            LayerStatus::Loaded,
            LayerStatus::Missing,
            LayerStatus::Missing
        ]
    );
    assert_eq!(l.layers[2].trusted, Some(false));
}

#[test]
fn layer_order_and_provenance() {
    let e = Env::new();
    let user = e.user(
        "[limits]\ntimeout_secs = 100\nmax_processes = 50\n[env]\nset = { A = \"user\", B = \"user\" }\n",
    );
    let ws = e.workspace("[limits]\ntimeout_secs = 60\n[env]\nset = { B = \"ws\" }\n");
    let extra = e.extra("[limits]\ntimeout_secs = 30\n[network]\nmode = \"on\"\n");
    let mut r = e.req();
    r.config_file = Some(extra.clone());
    r.cli.env_set = vec![("C".into(), "cli".into())];
    let l = load(&r).unwrap();
    assert_eq!(l.policy.limits.timeout_secs, Some(30));
    assert_eq!(l.policy.limits.max_processes, Some(50));
    assert_eq!(l.policy.network.mode, NetworkMode::On);
    assert_eq!(
        src(&l, "limits.timeout_secs"),
        format!("config:{}", extra.display())
    );
    assert_eq!(
        src(&l, "limits.max_processes"),
        format!("user:{}", user.display())
    );
    match l.provenance.get("limits.timeout_secs").unwrap() {
        KeyProvenance::Value { set_by } => {
            let s: Vec<String> = set_by.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                s,
                vec![
                    format!("user:{}", user.display()),
                    format!("workspace:{}", ws.display()),
                    format!("config:{}", extra.display()),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    let set = &l.policy.env.set;
    assert_eq!(set.get("A").map(String::as_str), Some("user"));
    assert_eq!(set.get("B").map(String::as_str), Some("ws"));
    assert_eq!(set.get("C").map(String::as_str), Some("cli"));
    assert_eq!(
        l.provenance
            .map_entry_source("env.set", "B")
            .map(|s| s.to_string()),
        Some(format!("workspace:{}", ws.display()))
    );
    assert_eq!(
        l.provenance.map_entry_source("env.set", "C"),
        Some(&Source::Cli)
    );
    assert_eq!(l.layers.len(), 5);
    assert_eq!(l.layers.last().unwrap().source, Source::Cli);
}

#[test]
fn lists_append_and_bang_removes() {
    let e = Env::new();
    let user = e.user(
        "[filesystem]\ndeny_read = [\"!~/.npmrc\", \"~/.private\", \"~/.ssh\"]\nprotected_names = [\"!\", \".git\", \".hg\"]\n",
    );
    let l = load(&e.req()).unwrap();
    let dr = &l.policy.filesystem.deny_read;
    assert!(!dr.contains(&"~/.npmrc".to_string()));
    assert!(dr.contains(&"~/.ssh".to_string()));
    assert_eq!(
        dr.iter().filter(|d| *d == "~/.ssh").count(),
        1,
        "no duplicates"
    );
    assert_eq!(dr.last().map(String::as_str), Some("~/.private"));
    assert_eq!(
        l.provenance
            .list_entry_source("filesystem.deny_read", "~/.private")
            .map(|s| s.to_string()),
        Some(format!("user:{}", user.display()))
    );
    assert_eq!(
        l.provenance
            .list_entry_source("filesystem.deny_read", "~/.ssh"),
        Some(&Source::Default)
    );
    assert_eq!(l.policy.filesystem.protected_names, vec![".git", ".hg"]);
    match l.provenance.get("filesystem.deny_read").unwrap() {
        KeyProvenance::List { removed, .. } => {
            assert_eq!(removed.len(), 1);
            assert_eq!(removed[0].removed, vec!["~/.npmrc"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    e.user("[env]\nexclude = [\"!*\", \"!NOPE\"]\n");
    let l = load(&e.req()).unwrap();
    assert!(l.policy.env.exclude.is_empty());
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].contains("removes nothing"));
}

#[test]
fn profiles_apply_in_layer_order() {
    let e = Env::new();
    let user = e.user(
        "[profiles.ci.limits]\ntimeout_secs = 600\n[profiles.ci.network]\nmode = \"on\"\n[profiles.other.temp]\npersist = false\n",
    );
    let ws = e.workspace("[profiles.ci.limits]\ntimeout_secs = 300\n");
    let mut r = e.req();
    r.profile = Some("ci".into());
    let l = load(&r).unwrap();
    assert_eq!(l.policy.limits.timeout_secs, Some(300));
    assert_eq!(l.policy.network.mode, NetworkMode::On);
    assert_eq!(
        src(&l, "limits.timeout_secs"),
        format!("profile ci in workspace:{}", ws.display())
    );
    assert_eq!(
        src(&l, "network.mode"),
        format!("profile ci in user:{}", user.display())
    );
    // Without --profile, profiles are ignored.
    let l = load(&e.req()).unwrap();
    assert_eq!(l.policy.network.mode, NetworkMode::Off);
    // CLI still wins over the profile.
    r.cli.timeout_secs = Some(5);
    assert_eq!(load(&r).unwrap().policy.limits.timeout_secs, Some(5));

    r.profile = Some("nope".into());
    let err = load(&r).unwrap_err().to_string();
    assert!(err.contains("unknown profile \"nope\""), "{err}");
    assert!(err.contains("known profiles: ci, other"), "{err}");
}

#[test]
fn unknown_profile_without_any() {
    let e = Env::new();
    let mut r = e.req();
    r.profile = Some("x".into());
    let err = load(&r).unwrap_err().to_string();
    assert!(err.contains("no config file defines any profile"), "{err}");
}

#[test]
fn malformed_toml_names_file_and_line() {
    let e = Env::new();
    let p = e.user("[filesystem]\nread_only = false\ndeny_read = [\"a\",\n\n[network\n");
    let err = load(&e.req()).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(msg.contains("line 5"), "{msg}");
}

#[test]
fn unknown_key_is_named() {
    let e = Env::new();
    let p = e.user("[network]\nmode = \"off\"\n[filesystem]\n\ndeny_reed = []\n");
    let err = load(&e.req()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("unknown key `filesystem.deny_reed`"), "{msg}");
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(msg.contains("line 5"), "{msg}");
    assert!(msg.contains("deny_read"), "lists valid keys: {msg}");

    e.user("nework = 1\n");
    let msg = load(&e.req()).unwrap_err().to_string();
    assert!(msg.contains("unknown key `nework`"), "{msg}");

    e.user("[profiles.ci.filesystem]\nwritable = []\n");
    let msg = load(&e.req()).unwrap_err().to_string();
    assert!(
        msg.contains("unknown key `profiles.ci.filesystem.writable`"),
        "{msg}"
    );
}

#[test]
fn invalid_values() {
    let e = Env::new();
    e.user("[network]\nmode = \"maybe\"\n");
    let err = load(&e.req()).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");
    e.user("[limits]\nmax_memory = -1\n");
    let msg = load(&e.req()).unwrap_err().to_string();
    assert!(msg.contains("negative"), "{msg}");
    e.user("[limits]\nmax_memory = \"lots\"\n");
    let msg = load(&e.req()).unwrap_err().to_string();
    assert!(msg.contains("\"none\""), "{msg}");
}

#[test]
fn missing_config_file() {
    let e = Env::new();
    let mut r = e.req();
    r.config_file = Some(e.t.path().join("nope.toml"));
    let err = load(&r).unwrap_err();
    assert!(
        matches!(err, ConfigError::MissingConfigFile { .. }),
        "{err}"
    );
}

#[test]
fn untrusted_workspace_cannot_widen() {
    let e = Env::new();
    for (text, key) in [
        ("[network]\nmode = \"on\"\n", "network.mode"),
        (
            "[filesystem]\nwritable_roots = [\"/tmp\"]\n",
            "filesystem.writable_roots",
        ),
        (
            "[filesystem]\ndeny_read = [\"!~/.ssh\"]\n",
            "filesystem.deny_read",
        ),
        (
            "[filesystem]\nprotected_names = [\"!\"]\n",
            "filesystem.protected_names",
        ),
        (
            "[filesystem]\nprotected_paths = [\"!x\"]\n",
            "filesystem.protected_paths",
        ),
        (
            "[filesystem]\nallow_unix_sockets = [\"/run/docker.sock\"]\n",
            "filesystem.allow_unix_sockets",
        ),
        (
            "[filesystem]\nallow_dangerous_roots = true\n",
            "filesystem.allow_dangerous_roots",
        ),
        (
            "[filesystem]\nwindows_lock_protected_dacls = false\n",
            "filesystem.windows_lock_protected_dacls",
        ),
        (
            "[filesystem]\nwalk_exempt = [\"db\"]\n",
            "filesystem.walk_exempt",
        ),
        ("[env]\nexclude = [\"!*TOKEN*\"]\n", "env.exclude"),
        ("[temp]\nprivate = false\n", "temp.private"),
        (
            "[profiles.p.network]\nmode = \"on\"\n",
            "profiles.p.network.mode",
        ),
    ] {
        let p = e.workspace(text);
        let mut r = e.req();
        if key.starts_with("profiles.") {
            r.profile = Some("p".into());
        }
        let err = load(&r).unwrap_err();
        assert!(
            matches!(err, ConfigError::UntrustedWidening { .. }),
            "{text}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("`{key}`")), "{msg}");
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("trusted_workspaces"), "{msg}");
        assert!(msg.contains(&e.ws.display().to_string()), "{msg}");
    }
    // Widening relative to the inherited value.
    e.user(
        "[filesystem]\nread_only = true\n[env]\ninherit = \"core\"\n[limits]\ntimeout_secs = 10\n[git]\nmode = \"read-only\"\n",
    );
    for (text, key) in [
        ("[git]\nmode = \"commit\"\n", "git.mode"),
        ("[filesystem]\nread_only = false\n", "filesystem.read_only"),
        ("[env]\ninherit = \"all\"\n", "env.inherit"),
        ("[limits]\ntimeout_secs = 11\n", "limits.timeout_secs"),
        ("[limits]\ntimeout_secs = \"none\"\n", "limits.timeout_secs"),
    ] {
        e.workspace(text);
        let msg = load(&e.req()).unwrap_err().to_string();
        assert!(msg.contains(&format!("`{key}`")), "{text}: {msg}");
    }
}

#[test]
fn untrusted_workspace_may_narrow() {
    let e = Env::new();
    e.user("[network]\nmode = \"on\"\n[limits]\ntimeout_secs = 100\n");
    e.workspace(
        "[git]\nmode = \"read-only\"\n[network]\nmode = \"off\"\n[filesystem]\nread_only = true\ndeny_read = [\"secrets\"]\nwritable_roots = [\"!x\"]\nprotected_names = [\".hg\"]\n[env]\ninherit = \"core\"\nexclude = [\"AWS_*\"]\nset = { CI = \"1\" }\n[limits]\ntimeout_secs = 50\nmax_memory = 1000000\n[temp]\npersist = false\n",
    );
    let l = load(&e.req()).unwrap();
    assert_eq!(l.policy.network.mode, NetworkMode::Off);
    assert!(l.policy.filesystem.read_only);
    assert_eq!(l.policy.limits.timeout_secs, Some(50));
    assert_eq!(l.policy.limits.max_memory, Some(1_000_000));
    assert_eq!(l.policy.env.inherit, EnvInherit::Core);
    assert_eq!(l.policy.git.mode, crate::model::GitMode::ReadOnly);
    // Setting a value that is already in effect is not widening.
    e.workspace("[network]\nmode = \"on\"\n");
    assert_eq!(load(&e.req()).unwrap().policy.network.mode, NetworkMode::On);
}

#[cfg(unix)]
#[test]
fn trusted_workspace_may_widen() {
    let e = Env::new();
    let ws_rel_home = e.t.mkdir("home/src/proj");
    e.user("trusted_workspaces = [\"~/src/proj\"]\n");
    e.workspace("[network]\nmode = \"on\"\n");
    // Not this workspace: refused.
    assert!(load(&e.req()).is_err());
    // The workspace, through `~/` and a symlink.
    let link = e.t.path().join("proj-link");
    std::os::unix::fs::symlink(&ws_rel_home, &link).unwrap();
    let p = ws_rel_home.join(".stockade/config.toml");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(
        &p,
        "[network]\nmode = \"on\"\n[filesystem]\nwritable_roots = [\"/tmp\"]\n",
    )
    .unwrap();
    let mut r = e.req();
    r.workspace = link;
    let l = load(&r).unwrap();
    assert_eq!(l.policy.network.mode, NetworkMode::On);
    assert_eq!(l.layers[2].trusted, Some(true));
    // --config can trust too.
    let extra = e.extra(&format!(
        "trusted_workspaces = [{:?}]\n",
        e.ws.display().to_string()
    ));
    let mut r = e.req();
    r.config_file = Some(extra);
    assert_eq!(load(&r).unwrap().policy.network.mode, NetworkMode::On);
}

#[test]
fn workspace_cannot_trust_itself() {
    let e = Env::new();
    e.workspace(&format!(
        "trusted_workspaces = [{:?}]\n",
        e.ws.display().to_string()
    ));
    let err = load(&e.req()).unwrap_err();
    assert!(matches!(err, ConfigError::NotAllowedHere { .. }), "{err}");
}

#[test]
fn bad_trusted_entry() {
    let e = Env::new();
    e.user("trusted_workspaces = [\"src/proj\"]\n");
    let err = load(&e.req()).unwrap_err();
    assert!(
        matches!(err, ConfigError::BadTrustedWorkspace { .. }),
        "{err}"
    );
}

#[test]
fn cli_overrides() {
    let e = Env::new();
    let mut r = e.req();
    r.cli = CliOverrides {
        writable: vec!["/data".into()],
        network: Some(NetworkMode::On),
        read_only: true,
        allow_dangerous_roots: true,
        timeout_secs: Some(9),
        env_set: vec![("X".into(), "1".into())],
        allow_domains: vec!["crates.io".into()],
    };
    let l = load(&r).unwrap();
    assert_eq!(l.policy.network.allowed_domains, vec!["crates.io"]);
    assert_eq!(l.policy.filesystem.writable_roots, vec!["/data"]);
    assert_eq!(l.policy.network.mode, NetworkMode::On);
    assert!(l.policy.filesystem.read_only);
    assert!(l.policy.filesystem.allow_dangerous_roots);
    assert_eq!(l.policy.limits.timeout_secs, Some(9));
    for key in [
        "network.mode",
        "filesystem.read_only",
        "filesystem.allow_dangerous_roots",
        "limits.timeout_secs",
    ] {
        assert_eq!(src(&l, key), "cli", "{key}");
    }
    assert_eq!(
        l.provenance
            .list_entry_source("filesystem.writable_roots", "/data"),
        Some(&Source::Cli)
    );
}

#[test]
fn rendering() {
    let e = Env::new();
    let user =
        e.user("[filesystem]\ndeny_read = [\"!~/.npmrc\", \"~/.x\"]\n[limits]\nmax_memory = 5\n");
    let l = load(&e.req()).unwrap();
    let text = l.render_text();
    assert!(text.contains("mode = \"off\"  # default"), "{text}");
    assert!(
        text.contains(&format!("\"~/.x\",  # user:{}", user.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("max_memory = 5  # user:{}", user.display())),
        "{text}"
    );
    assert!(
        text.contains("# timeout_secs: no limit (not set by any layer)"),
        "{text}"
    );
    assert!(text.contains("removed [\"~/.npmrc\"]"), "{text}");
    // Each protected name with where it applies and what would run from it.
    assert!(
        text.contains(
            "\"/.vscode/tasks.json\",  # default — at each root (workspace, writable roots, \
             repositories); VS Code runs its tasks"
        ),
        "{text}"
    );
    assert!(
        text.contains("\".git\",  # default — any depth; git runs"),
        "{text}"
    );
    assert!(text.contains("not found, skipped"), "{text}");
    let j = l.to_json();
    assert_eq!(j["policy"]["network"]["mode"], "off");
    assert_eq!(j["provenance"]["network.mode"]["set_by"][0], "default");
    assert_eq!(j["provenance"]["limits.max_memory"]["kind"], "value");
    assert_eq!(j["layers"][0]["source"], "default");
    assert_eq!(j["layers"][1]["status"], "loaded");
    assert!(j["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn user_config_location() {
    let p = user_config_path(Some(Path::new("/x")), None).unwrap();
    assert_eq!(p, Path::new("/x/stockade/config.toml"));
}

#[test]
fn profile_in_config_file_and_config_after_workspace() {
    let e = Env::new();
    e.workspace("[limits]\ntimeout_secs = 10\n");
    let extra = e.extra("[limits]\ntimeout_secs = 20\n[profiles.x.network]\nmode = \"on\"\n");
    let mut r = e.req();
    r.config_file = Some(extra.clone());
    r.profile = Some("x".into());
    let l = load(&r).unwrap();
    // --config is not subject to the workspace trust rule and comes after the workspace.
    assert_eq!(l.policy.limits.timeout_secs, Some(20));
    assert_eq!(l.policy.network.mode, NetworkMode::On);
    assert_eq!(
        src(&l, "network.mode"),
        format!("profile x in config:{}", extra.display())
    );
    let sources: Vec<String> = l.layers.iter().map(|l| l.source.to_string()).collect();
    assert_eq!(sources.len(), 5);
    assert!(sources[2].starts_with("workspace:"));
    assert!(sources[3].starts_with("config:"));
    assert!(sources[4].starts_with("profile x in config:"));
}

#[test]
fn unknown_key_in_workspace_config_names_the_file() {
    let e = Env::new();
    let p = e.workspace("[temp]\nprivat = true\n");
    let msg = load(&e.req()).unwrap_err().to_string();
    assert!(msg.contains("`temp.privat`"), "{msg}");
    assert!(msg.contains(&p.display().to_string()), "{msg}");
}

#[test]
fn absolutize_cli_writable() {
    let mut c = CliOverrides {
        writable: vec!["rel/dir".into(), "/abs".into(), "~/x".into(), "!y".into()],
        ..CliOverrides::default()
    };
    c.absolutize_writable(Path::new("/cwd"));
    assert_eq!(c.writable, vec!["/cwd/rel/dir", "/abs", "~/x", "!y"]);
}

#[test]
fn untrusted_workspace_cannot_widen_network_to_allowlist_or_add_domains() {
    let e = Env::new();
    e.workspace("[network]\nmode = \"allowlist\"\n");
    let err = load(&e.req()).unwrap_err().to_string();
    assert!(err.contains("network.mode"), "{err}");
    e.workspace("[network]\nallowed_domains = [\"evil.example\"]\n");
    let err = load(&e.req()).unwrap_err().to_string();
    assert!(err.contains("network.allowed_domains"), "{err}");
}

#[test]
fn copy_on_write_keys_merge_and_widening_is_refused_from_an_untrusted_workspace() {
    let e = Env::new();
    e.user(
        "[filesystem]\noutside_writes = \"deny\"\noverlay_roots = [\"/opt/mine\"]\noverlay_max_bytes = 100\n[temp]\nmode = \"empty\"\n",
    );
    let l = load(&e.req()).unwrap();
    assert_eq!(
        l.policy.filesystem.outside_writes,
        crate::model::OutsideWrites::Deny
    );
    assert_eq!(
        l.policy.filesystem.overlay_roots,
        vec!["/opt/mine".to_string()]
    );
    assert_eq!(l.policy.filesystem.overlay_max_bytes, Some(100));
    assert_eq!(l.policy.temp.mode, crate::model::TempMode::Empty);
    // the overlay roots list is its own: the default env.exclude is untouched
    assert!(l.policy.env.exclude.iter().any(|x| x == "*TOKEN*"));
    for (text, key) in [
        (
            "[filesystem]\noutside_writes = \"overlay\"\n",
            "filesystem.outside_writes",
        ),
        (
            "[filesystem]\noverlay_roots = [\"/srv/x\"]\n",
            "filesystem.overlay_roots",
        ),
        (
            "[filesystem]\noverlay_max_bytes = 1000\n",
            "filesystem.overlay_max_bytes",
        ),
        ("[temp]\nmode = \"host\"\n", "temp.mode"),
    ] {
        e.workspace(text);
        let err = load(&e.req()).unwrap_err();
        assert!(
            matches!(err, ConfigError::UntrustedWidening { .. }),
            "{text}: {err}"
        );
        assert!(err.to_string().contains(&format!("`{key}`")), "{err}");
    }
    // narrowing is fine
    e.workspace("[filesystem]\noverlay_max_bytes = 10\n[temp]\nmode = \"empty\"\n");
    assert_eq!(
        load(&e.req()).unwrap().policy.filesystem.overlay_max_bytes,
        Some(10)
    );
}

/// `filesystem.windows_lock_protected_dacls`: on by default; your own config may turn it off (an
/// untrusted workspace may not: the widening table above).
#[test]
fn windows_lock_protected_dacls_default_and_user_opt_out() {
    let e = Env::new();
    let l = load(&e.req()).unwrap();
    assert!(l.policy.filesystem.windows_lock_protected_dacls);
    assert_eq!(
        src(&l, "filesystem.windows_lock_protected_dacls"),
        "default"
    );
    let e = Env::new();
    let user = e.user("[filesystem]\nwindows_lock_protected_dacls = false\n");
    let l = load(&e.req()).unwrap();
    assert!(!l.policy.filesystem.windows_lock_protected_dacls);
    assert_eq!(
        src(&l, "filesystem.windows_lock_protected_dacls"),
        format!("user:{}", user.display())
    );
}
