//! Resource limits with rlimits.
//!
//! This machine class often has cgroup v2 without the memory and pids controllers (hybrid
//! hierarchies), so limits are applied as rlimits in the command process, which every descendant
//! inherits. What that does *not* give is said, never hidden:
//! * `max_memory` → `RLIMIT_AS`, a per-process address-space limit (not a total for the tree);
//! * `max_processes` → `RLIMIT_NPROC`, counted per user — the kernel never applies it to uid 0, so
//!   for root callers the limit is refused with an error instead of being silently ignored;
//! * `max_open_files` → `RLIMIT_NOFILE`, per process.

use stockade_policy::model::LimitsPolicy;

/// One rlimit to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` resource.
    pub resource: libc::__rlimit_resource_t,
    /// Soft and hard value.
    pub value: u64,
    /// Name for the report.
    pub name: &'static str,
}

/// A limit that cannot be enforced here.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LimitError(String);

/// Decide the rlimits for `limits` run by `uid` (pure; checked before launch).
pub fn plan(limits: &LimitsPolicy, uid: libc::uid_t) -> Result<Vec<Rlimit>, LimitError> {
    let mut out = Vec::new();
    if let Some(m) = limits.max_memory {
        out.push(Rlimit {
            resource: libc::RLIMIT_AS,
            value: m,
            name: "RLIMIT_AS (per-process address space)",
        });
    }
    if let Some(n) = limits.max_processes {
        if uid == 0 {
            return Err(LimitError(
                "limits.max_processes cannot be enforced for uid 0: RLIMIT_NPROC never binds root and no delegated \
                 cgroup v2 pids controller is used; run as an unprivileged user or remove the limit"
                    .into(),
            ));
        }
        out.push(Rlimit {
            resource: libc::RLIMIT_NPROC,
            value: n,
            name: "RLIMIT_NPROC (per user)",
        });
    }
    if let Some(n) = limits.max_open_files {
        out.push(Rlimit {
            resource: libc::RLIMIT_NOFILE,
            value: n,
            name: "RLIMIT_NOFILE (per process)",
        });
    }
    Ok(out)
}

/// Apply the rlimits to the calling process.
pub fn apply(limits: &[Rlimit]) -> Result<(), stockade_sys::SysError> {
    for l in limits {
        let r = libc::rlimit {
            rlim_cur: l.value,
            rlim_max: l.value,
        };
        stockade_sys::setrlimit(l.resource, &r, l.name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_map_to_rlimits_and_nproc_is_refused_for_root() {
        let l = LimitsPolicy {
            timeout_secs: None,
            max_memory: Some(1 << 30),
            max_processes: Some(50),
            max_open_files: Some(256),
        };
        let v = plan(&l, 1000).unwrap();
        assert_eq!(v.len(), 3);
        assert!(plan(&l, 0).is_err());
        let l = LimitsPolicy {
            max_processes: None,
            ..l
        };
        assert_eq!(plan(&l, 0).unwrap().len(), 2);
    }
}
