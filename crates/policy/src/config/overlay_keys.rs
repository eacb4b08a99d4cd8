//! Merging the copy-on-write keys: `filesystem.outside_writes`, `filesystem.overlay_roots`,
//! `filesystem.overlay_max_bytes` and `temp.mode`. From an untrusted workspace, `overlay` over
//! `deny`, any overlay root, a larger (or removed) cap and `temp.mode = "host"` are widening.

use super::format::{Limit, PartialFilesystem, PartialPolicy, PartialTemp};
use super::merge::{set_value, Guard, Merger};
use super::{ConfigError, Source};

impl Merger {
    /// Apply one partial policy (see `apply_core`), then its copy-on-write keys. With a guard,
    /// widening values are refused.
    pub(super) fn apply(
        &mut self,
        p: &PartialPolicy,
        src: &Source,
        guard: Option<&Guard<'_>>,
    ) -> Result<(), ConfigError> {
        self.apply_core(p, src, guard)?;
        let widen = |key: &str, detail: String| -> Result<(), ConfigError> {
            match guard {
                Some(g) => Err(g.deny(key, detail)),
                None => Ok(()),
            }
        };
        if let Some(f) = &p.filesystem {
            merge_filesystem(self, f, src, &widen)?;
        }
        if let Some(t) = &p.temp {
            merge_temp(self, t, src, &widen)?;
        }
        Ok(())
    }
}
use crate::model::{OutsideWrites, TempMode};

type Widen<'a> = dyn Fn(&str, String) -> Result<(), ConfigError> + 'a;

fn merge_filesystem(
    m: &mut Merger,
    f: &PartialFilesystem,
    src: &Source,
    widen: &Widen<'_>,
) -> Result<(), ConfigError> {
    if let Some(v) = f.outside_writes {
        if v == OutsideWrites::Overlay && m.policy.filesystem.outside_writes == OutsideWrites::Deny
        {
            widen(
                "filesystem.outside_writes",
                "= \"overlay\" turns copy-on-write writes outside the workspace on".into(),
            )?;
        }
        set_value(
            &mut m.policy.filesystem.outside_writes,
            v,
            &mut m.prov,
            "filesystem.outside_writes",
            src,
        );
    }
    if let Some(items) = &f.overlay_roots {
        if let Some(e) = items.iter().find(|e| !e.starts_with('!')) {
            widen(
                "filesystem.overlay_roots",
                format!("adds the overlay root {e:?}"),
            )?;
        }
        m.list("filesystem", "overlay_roots", items, src);
    }
    if let Some(new) = f.overlay_max_bytes {
        if let Some(cur) = m.policy.filesystem.overlay_max_bytes {
            match new {
                Limit::Unlimited => widen(
                    "filesystem.overlay_max_bytes",
                    format!("removes the cap {cur}"),
                )?,
                Limit::Value(n) if n > cur => widen(
                    "filesystem.overlay_max_bytes",
                    format!("raises the cap from {cur} to {n}"),
                )?,
                Limit::Value(_) => {}
            }
        }
        set_value(
            &mut m.policy.filesystem.overlay_max_bytes,
            new.to_option(),
            &mut m.prov,
            "filesystem.overlay_max_bytes",
            src,
        );
    }
    Ok(())
}

fn merge_temp(
    m: &mut Merger,
    t: &PartialTemp,
    src: &Source,
    widen: &Widen<'_>,
) -> Result<(), ConfigError> {
    if let Some(v) = t.mode {
        if v == TempMode::Host && m.policy.temp.mode != TempMode::Host {
            widen(
                "temp.mode",
                "= \"host\" shares the host's /tmp with the sandbox".into(),
            )?;
        }
        set_value(&mut m.policy.temp.mode, v, &mut m.prov, "temp.mode", src);
    }
    Ok(())
}
