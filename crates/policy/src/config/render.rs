//! Rendering for `stockade policy show` (text and JSON).

use super::*;

impl Loaded {
    /// JSON for `stockade policy show --json`: `{"policy", "provenance", "layers", "warnings"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "policy": serde_json::to_value(&self.policy).unwrap_or_default(),
            "provenance": serde_json::to_value(&self.provenance).unwrap_or_default(),
            "layers": serde_json::to_value(&self.layers).unwrap_or_default(),
            "warnings": self.warnings,
        })
    }

    /// Human-readable text: the layers, then every key in TOML-like form with the layer that
    /// set it (per entry for lists and `env.set`).
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "# Layers, in order (later wins):")?;
        for l in &self.layers {
            let status = match l.status {
                LayerStatus::Loaded => "loaded",
                LayerStatus::Missing => "not found, skipped",
                LayerStatus::NoLocation => "no home directory, skipped",
            };
            let trust = match l.trusted {
                Some(true) => ", trusted",
                Some(false) => ", untrusted (may only narrow)",
                None => "",
            };
            let name = match (&l.source, l.status) {
                (Source::Default, _) => "default (embedded)".to_string(),
                (s, _) => s.to_string(),
            };
            writeln!(out, "#   {name}: {status}{trust}")?;
        }
        for w in &self.warnings {
            writeln!(out, "# warning: {w}")?;
        }
        let json = serde_json::to_value(&self.policy).unwrap_or_default();
        for section in SECTIONS {
            writeln!(out, "\n[{section}]")?;
            for key in section_keys(section) {
                let dotted = format!("{section}.{key}");
                let value = json.get(section).and_then(|s| s.get(key));
                self.write_key(out, &dotted, key, value)?;
            }
            if *section == "env" {
                writeln!(
                    out,
                    "# also removed, whatever the name: variables whose value holds a URL with \
                     credentials (scheme://user:pass@host); env.set / --env passes one anyway"
                )?;
            }
        }
        Ok(())
    }

    fn write_key(
        &self,
        out: &mut String,
        dotted: &str,
        key: &str,
        value: Option<&serde_json::Value>,
    ) -> fmt::Result {
        use serde_json::Value;
        let comment = |s: Option<&Source>| match s {
            Some(s) => format!("# {s}"),
            None => "# (not set by any layer)".to_string(),
        };
        match value {
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    let src = self.provenance.effective(dotted);
                    writeln!(out, "{key} = []  {}", comment(src))?;
                } else {
                    writeln!(out, "{key} = [")?;
                    for item in items {
                        let text = item.as_str().unwrap_or_default();
                        let src = self.provenance.list_entry_source(dotted, text);
                        let what = if dotted == "filesystem.protected_names" {
                            protected_name_note(text)
                        } else {
                            String::new()
                        };
                        writeln!(out, "  {item},  {}{what}", comment(src))?;
                    }
                    writeln!(out, "]")?;
                }
                if let Some(KeyProvenance::List { removed, .. }) = self.provenance.get(dotted) {
                    for r in removed.iter().filter(|r| !r.removed.is_empty()) {
                        writeln!(
                            out,
                            "#   {:?} in {} removed {}",
                            r.pattern,
                            r.source,
                            serde_json::to_string(&r.removed).unwrap_or_default()
                        )?;
                    }
                }
            }
            Some(Value::Object(map)) => {
                if map.is_empty() {
                    writeln!(out, "{key} = {{}}")?;
                } else {
                    for (name, v) in map {
                        let src = self.provenance.map_entry_source(dotted, name);
                        let quoted = serde_json::to_string(name).unwrap_or_default();
                        writeln!(out, "{key}.{quoted} = {v}  {}", comment(src))?;
                    }
                }
            }
            Some(Value::Null) | None => match self.provenance.effective(dotted) {
                Some(src) => writeln!(out, "# {key}: no limit (removed)  # {src}")?,
                None => writeln!(out, "# {key}: no limit (not set by any layer)")?,
            },
            Some(v) => {
                let src = self.provenance.effective(dotted);
                writeln!(out, "{key} = {v}  {}", comment(src))?;
            }
        }
        Ok(())
    }
}

/// For `policy show`: where a `protected_names` entry applies and what would run from it.
fn protected_name_note(entry: &str) -> String {
    use crate::model::{NameScope, ProtectedName};
    let Ok(n) = ProtectedName::parse(entry) else {
        return " — invalid: the run refuses to start".into();
    };
    let scope = match n.scope {
        NameScope::AnyDepth => "any depth",
        NameScope::Root => "at each root (workspace, writable roots, repositories)",
    };
    match n.what_runs() {
        Some(w) => format!(" — {scope}; {w}"),
        None => format!(" — {scope}"),
    }
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_text())
    }
}
