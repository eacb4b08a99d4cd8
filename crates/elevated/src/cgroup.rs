//! One cgroup (v2) per run, so the whole process tree of a run is killed at its end
//! (`cgroup.kill`) without touching other runs of the same sandbox account.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Finds the cgroup2 mount point in a mountinfo text. Pure.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next() == Some("cgroup2") {
            return pre.split_whitespace().nth(4).map(PathBuf::from);
        }
    }
    None
}

/// The v2 path of a process from `/proc/<pid>/cgroup` text (the `0::` line). Pure.
pub fn own_v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|s| s.trim().to_string())
}

/// A run's cgroup; removed (after killing everything in it) on drop.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
}

impl RunCgroup {
    /// Creates `<cgroup2>/<own cgroup>/<prefix>-runs/run-<pid>-<n>`.
    pub fn create(prefix: &str) -> io::Result<RunCgroup> {
        let mi = fs::read_to_string("/proc/self/mountinfo")?;
        let mnt = cgroup2_mount(&mi)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 mount"))?;
        let own =
            own_v2_path(&fs::read_to_string("/proc/self/cgroup")?).unwrap_or_else(|| "/".into());
        let base = mnt
            .join(own.trim_start_matches('/'))
            .join(format!("{prefix}-runs"));
        fs::create_dir_all(&base)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("run-{}-{n}", std::process::id()));
        fs::create_dir(&dir)?;
        Ok(RunCgroup { dir })
    }

    /// `cgroup.procs` of this cgroup.
    pub fn procs_path(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether any process is still in the cgroup.
    pub fn populated(&self) -> bool {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)
    }

    /// Kills every process in the cgroup and waits (up to `wait`) until it is empty.
    pub fn kill_all(&self, wait: Duration) -> io::Result<()> {
        let deadline = Instant::now() + wait;
        while self.populated() {
            if fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
                // Kernels before 5.14: signal each process listed.
                if let Ok(s) = fs::read_to_string(self.procs_path()) {
                    for pid in s.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        let _ = stockade_sys::kill(pid, libc::SIGKILL);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "processes survived SIGKILL",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        let _ = self.kill_all(Duration::from_secs(5));
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_mount() {
        let mi =
            "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory\n\
                  35 25 0:31 / /sys/fs/cgroup/unified rw,relatime shared:15 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn own_path() {
        assert_eq!(
            own_v2_path("4:memory:/x\n0::/system.slice/stockade-broker.service\n").as_deref(),
            Some("/system.slice/stockade-broker.service")
        );
        assert_eq!(own_v2_path("4:memory:/x\n"), None);
    }
}
