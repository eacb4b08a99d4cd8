use super::*;
use crate::test_util::{default_policy, TempDir};
use std::collections::BTreeSet;
use std::time::Duration;

#[path = "../../cli/tests/common/skip.rs"]
mod skip;

/// While alive, the calling thread has no `CAP_DAC_OVERRIDE`/`CAP_DAC_READ_SEARCH` in its
/// effective set (capabilities are per thread), so a root test run sees permission bits the way
/// an ordinary user does. Restores the previous effective set on drop.
struct NoDacOverride {
    saved: [libc::c_uint; 6],
}

impl NoDacOverride {
    fn new() -> NoDacOverride {
        // _LINUX_CAPABILITY_VERSION_3 header, this thread; data is 2 x {effective, permitted,
        // inheritable}.
        let mut hdr: [libc::c_uint; 2] = [0x2008_0522, 0];
        let mut data: [libc::c_uint; 6] = [0; 6];
        // SAFETY: capget reads `hdr` and writes two 12-byte structs into `data` (24 bytes).
        let rc = unsafe { libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) };
        assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
        let saved = data;
        // CAP_DAC_OVERRIDE is 1, CAP_DAC_READ_SEARCH is 2 (linux/capability.h).
        data[0] &= !((1 << 1) | (1 << 2));
        // SAFETY: as above; capset only reads `hdr` and `data`, and lowering the effective set of
        // this thread is always allowed.
        let rc = unsafe { libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) };
        assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
        NoDacOverride { saved }
    }
}

impl Drop for NoDacOverride {
    fn drop(&mut self) {
        let mut hdr: [libc::c_uint; 2] = [0x2008_0522, 0];
        // SAFETY: restores the effective set saved in `new` (a subset of the unchanged permitted
        // set); capset only reads its arguments.
        unsafe { libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), self.saved.as_ptr()) };
    }
}

fn names() -> Vec<OsString> {
    [".git", ".stockade", ".codex", ".agents", ".claude"]
        .iter()
        .map(OsString::from)
        .collect()
}

/// A start time far enough ahead that every existing directory is outside the racy window, as
/// it is for a cache written some time after the tree last changed.
fn later() -> i128 {
    now_ns() + 10 * RACY_WINDOW_NS
}

/// Wait past the timestamp granularity, so the next change gets a new ctime even on kernels with
/// coarse timestamps. (In real use the racy window covers this; see `racy_entries_are_relisted`.)
fn tick() {
    std::thread::sleep(Duration::from_millis(25));
}

fn found_set(s: &Scan) -> BTreeSet<(PathBuf, FoundKind)> {
    s.found.iter().map(|f| (f.path.clone(), f.kind)).collect()
}

fn uncached(root: &Path) -> BTreeSet<(PathBuf, FoundKind)> {
    found_set(&scan(root, &names(), None, &[]).unwrap())
}

struct Fixture {
    _t: TempDir,
    ws: PathBuf,
    cache: PathBuf,
}

fn fixture() -> Fixture {
    let t = TempDir::new("walkcache");
    let ws = t.mkdir("ws");
    let state = t.mkdir("state");
    let dir = cache_dir(&state, std::slice::from_ref(&ws)).unwrap();
    let cache = cache_file(&dir, &ws);
    Fixture { _t: t, ws, cache }
}

impl Fixture {
    fn mk(&self, rel: &str) {
        fs::create_dir_all(self.ws.join(rel)).unwrap();
    }
    /// Scan with the cache, as a run long after the previous one.
    fn warm(&self) -> Scan {
        self.warm_result().unwrap()
    }
    fn warm_result(&self) -> Result<Scan, ScanError> {
        scan_at(&self.ws, &names(), Some(&self.cache), &[], later())
    }
}

#[test]
fn warm_run_lists_nothing_and_finds_the_same() {
    let f = fixture();
    f.mk("a/b/c/.git");
    f.mk("a/d/.claude");
    f.mk("e");
    fs::write(f.ws.join("e/.codex"), "").unwrap();
    std::os::unix::fs::symlink("/nonexistent", f.ws.join("e/.agents")).unwrap();
    let cold = f.warm();
    assert!(!cold.stats.cache_loaded);
    assert!(cold.stats.written);
    assert_eq!(cold.stats.listed, 6, "ws a a/b a/b/c a/d e");
    let warm = f.warm();
    assert_eq!(
        warm.stats,
        ScanStats {
            cache_loaded: true,
            reused: 6,
            listed: 0,
            written: false
        }
    );
    assert_eq!(found_set(&warm), found_set(&cold));
    assert_eq!(found_set(&warm), uncached(&f.ws));
    let kinds: Vec<FoundKind> = {
        let mut v: Vec<_> = warm
            .found
            .iter()
            .map(|x| (x.path.clone(), x.kind))
            .collect();
        v.sort();
        v.into_iter().map(|x| x.1).collect()
    };
    assert_eq!(
        kinds,
        vec![
            FoundKind::Dir,
            FoundKind::Dir,
            FoundKind::Symlink,
            FoundKind::Other
        ]
    );
}

#[test]
fn new_nested_git_found_even_with_parent_mtime_reset() {
    let f = fixture();
    f.mk("a/b/c");
    f.warm();
    tick();
    let parent = f.ws.join("a/b");
    let before = fs::metadata(&parent).unwrap();
    // The attacker adds a repository, then puts the parent's times back.
    f.mk("a/b/.git");
    let dirf = fs::File::open(&parent).unwrap();
    dirf.set_times(
        fs::FileTimes::new()
            .set_modified(before.modified().unwrap())
            .set_accessed(before.accessed().unwrap()),
    )
    .unwrap();
    assert_eq!(
        fs::metadata(&parent).unwrap().modified().unwrap(),
        before.modified().unwrap()
    );
    let s = f.warm();
    assert!(s.stats.cache_loaded);
    assert_eq!(s.stats.listed, 1, "only a/b is listed again");
    assert!(found_set(&s).contains(&(parent.join(".git"), FoundKind::Dir)));
    assert_eq!(found_set(&s), uncached(&f.ws));
    // One changed directory does not make the cache be rewritten: it is listed again.
    assert!(!s.stats.written);
    let s = f.warm();
    assert_eq!(s.stats.listed, 1);
    assert!(found_set(&s).contains(&(parent.join(".git"), FoundKind::Dir)));
}

#[test]
fn deep_new_git_found_when_only_its_parent_changed() {
    let f = fixture();
    f.mk("x/y/z/w");
    f.warm();
    tick();
    fs::write(f.ws.join("x/y/z/w/.git"), "gitdir: /elsewhere\n").unwrap();
    let s = f.warm();
    assert_eq!(s.stats.listed, 1);
    assert_eq!(s.stats.reused, 4);
    assert!(!s.stats.written);
    assert_eq!(
        found_set(&s),
        [(f.ws.join("x/y/z/w/.git"), FoundKind::Other)].into()
    );
}

#[test]
fn renamed_and_removed_directories() {
    let f = fixture();
    f.mk("x/y/.git");
    f.mk("p/q");
    f.warm();
    tick();
    // Moved deeper into another directory.
    fs::rename(f.ws.join("x"), f.ws.join("p/q/x2")).unwrap();
    let s = f.warm();
    assert_eq!(
        found_set(&s),
        [(f.ws.join("p/q/x2/y/.git"), FoundKind::Dir)].into()
    );
    assert!(s.stats.reused >= 2, "the moved subtree itself is unchanged");
    tick();
    // A directory swapped for another one under the same name.
    fs::rename(f.ws.join("p/q/x2"), f.ws.join("old")).unwrap();
    fs::create_dir_all(f.ws.join("p/q/x2/y")).unwrap();
    fs::create_dir(f.ws.join("p/q/x2/y/.claude")).unwrap();
    let s = f.warm();
    assert_eq!(s.found.len(), 2);
    assert_eq!(found_set(&s), uncached(&f.ws));
    tick();
    fs::remove_dir_all(f.ws.join("old")).unwrap();
    fs::remove_dir_all(f.ws.join("p")).unwrap();
    let s = f.warm();
    assert!(s.found.is_empty(), "{:?}", s.found);
    assert_eq!(s.stats.listed, 1);
}

#[test]
fn racy_entries_are_relisted() {
    let f = fixture();
    f.mk("a/b");
    // A cache written right now: every directory was changed within the racy window.
    let s = scan(&f.ws, &names(), Some(&f.cache), &[]).unwrap();
    assert!(s.stats.written);
    // Changed in the same second (possibly the same clock tick) as the cache was written.
    f.mk("a/b/.git");
    let s = scan(&f.ws, &names(), Some(&f.cache), &[]).unwrap();
    assert!(s.stats.cache_loaded);
    assert_eq!(
        s.stats.reused, 0,
        "nothing changed 2 s before the walk is trusted"
    );
    assert_eq!(s.stats.listed, 3);
    assert_eq!(found_set(&s), uncached(&f.ws));
    // The rule compares with the walk start time stored in the cache: a start just 1 s after the
    // last change is still racy, 3 s after is not.
    let ctime = {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(f.ws.join("a/b")).unwrap();
        m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
    };
    let at = |t: i128| scan_at(&f.ws, &names(), Some(&f.cache), &[], t).unwrap();
    fs::remove_file(&f.cache).unwrap();
    at(ctime + RACY_WINDOW_NS / 2);
    let s = at(later());
    assert!(s.stats.listed >= 1, "a/b was racy in the stored cache");
    fs::remove_file(&f.cache).unwrap();
    at(ctime + 3 * RACY_WINDOW_NS / 2);
    let s = at(later());
    assert_eq!(s.stats.listed, 0, "3 s after the last change is not racy");
}

#[test]
fn corrupt_cache_is_no_cache() {
    let f = fixture();
    f.mk("a/.git");
    f.mk("b/c/.claude");
    f.warm();
    let good = fs::read(&f.cache).unwrap();
    let expect = uncached(&f.ws);
    let mut variants: Vec<Vec<u8>> = vec![Vec::new(), b"garbage".to_vec()];
    for cut in (0..good.len()).step_by(7) {
        variants.push(good[..cut].to_vec());
    }
    for i in 0..good.len() {
        let mut v = good.clone();
        v[i] ^= 0x41;
        variants.push(v);
    }
    let mut longer = good.clone();
    longer.push(0);
    variants.push(longer);
    for (i, v) in variants.iter().enumerate() {
        fs::write(&f.cache, v).unwrap();
        let s = f.warm();
        assert!(!s.stats.cache_loaded, "variant {i} was accepted");
        assert_eq!(found_set(&s), expect, "variant {i}");
        assert!(s.stats.written);
    }
    // A symlink to a valid cache is not followed.
    let elsewhere = f.cache.with_extension("elsewhere");
    fs::write(&elsewhere, &good).unwrap();
    fs::remove_file(&f.cache).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &f.cache).unwrap();
    let s = f.warm();
    assert!(!s.stats.cache_loaded);
    assert_eq!(found_set(&s), expect);
    // A cache that is a directory, or unreadable, is no cache either.
    fs::remove_file(&f.cache).unwrap();
    fs::create_dir(&f.cache).unwrap();
    let s = f.warm();
    assert!(!s.stats.cache_loaded && !s.stats.written);
    assert_eq!(found_set(&s), expect);
}

#[test]
fn other_names_version_or_root_invalidate() {
    let f = fixture();
    f.mk("a/.git");
    f.mk("a/.secret");
    f.warm();
    let mut more = names();
    more.push(".secret".into());
    let s = scan_at(&f.ws, &more, Some(&f.cache), &[], later()).unwrap();
    assert!(!s.stats.cache_loaded);
    assert_eq!(s.found.len(), 2);
    // Another version number.
    let mut bytes = fs::read(&f.cache).unwrap();
    bytes[8] = bytes[8].wrapping_add(1);
    fs::write(&f.cache, &bytes).unwrap();
    let s = scan_at(&f.ws, &more, Some(&f.cache), &[], later()).unwrap();
    assert!(!s.stats.cache_loaded);
    // The cache of another root.
    let other = f.ws.join("a");
    let s = scan_at(&other, &more, Some(&f.cache), &[], later()).unwrap();
    assert!(!s.stats.cache_loaded);
    assert_eq!(s.found.len(), 2);
}

#[test]
fn unreadable_directory_fails_the_walk_and_is_not_cached_away() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    f.mk("locked/inner");
    // A warm cache that saw `locked` without a repository ("no repo here").
    let s = f.warm();
    assert!(s.found.is_empty());
    tick();
    // As root, permission bits apply only without the DAC capabilities.
    let _unprivileged = NoDacOverride::new();
    fs::set_permissions(f.ws.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read_dir(f.ws.join("locked")).is_ok() {
        fs::set_permissions(f.ws.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
        return skip::skip(
            "a mode-000 directory is still listable (capabilities could not be dropped)",
        );
    }
    for _ in 0..2 {
        match f.warm_result() {
            Err(ScanError::Dir { path, .. }) => assert_eq!(path, f.ws.join("locked")),
            other => panic!("an unlistable directory must fail the walk: {other:?}"),
        }
    }
    // Exempted, the walk passes (and does not descend into it).
    let s = scan_at(
        &f.ws,
        &names(),
        Some(&f.cache),
        &[f.ws.join("locked")],
        later(),
    )
    .unwrap();
    assert!(s.found.is_empty());
    tick();
    fs::set_permissions(f.ws.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    f.mk("locked/inner/.git");
    let s = f.warm();
    assert!(s.warnings.is_empty());
    assert_eq!(s.found.len(), 1);
}

#[test]
fn exempt_directory_is_not_descended_into_even_from_the_cache() {
    let f = fixture();
    f.mk("db/repo/.git");
    f.mk("src/.git");
    let s = f.warm();
    assert_eq!(s.found.len(), 2);
    let s = scan_at(&f.ws, &names(), Some(&f.cache), &[f.ws.join("db")], later()).unwrap();
    assert_eq!(found_set(&s).len(), 1, "{:?}", s.found);
    assert!(s.found[0].path.starts_with(f.ws.join("src")));
}

#[test]
fn cache_dir_inside_a_writable_root_is_not_used() {
    let t = TempDir::new("walkcache-dir");
    let ws = t.mkdir("ws");
    assert_eq!(
        cache_dir(&ws.join(".state"), std::slice::from_ref(&ws)),
        None
    );
    assert_eq!(cache_dir(&ws, std::slice::from_ref(&ws)), None);
    assert_eq!(cache_dir(Path::new("rel"), std::slice::from_ref(&ws)), None);
    // Through a symlink too.
    std::os::unix::fs::symlink(&ws, t.path().join("link")).unwrap();
    assert_eq!(
        cache_dir(&t.path().join("link/state"), std::slice::from_ref(&ws)),
        None
    );
    let state = t.path().join("state/not/yet");
    assert_eq!(
        cache_dir(&state, std::slice::from_ref(&ws)),
        Some(state.join("walk"))
    );
}

/// Random changes between warm runs: the cached walk always finds what a full walk finds.
#[test]
fn random_changes_match_a_full_walk() {
    let f = fixture();
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let pick = ["a", "b", "a/c", "b/d", "a/c/e", "x", "b/d/f/g"];
    let prot = [".git", ".claude", ".codex"];
    for _ in 0..40 {
        let dir = pick[next(pick.len() as u64) as usize];
        let name = prot[next(prot.len() as u64) as usize];
        let p = f.ws.join(dir);
        match next(5) {
            0 | 1 => {
                let _ = fs::create_dir_all(p.join(name));
            }
            2 => {
                let _ = fs::create_dir_all(&p);
                let _ = fs::write(p.join(name), "x");
            }
            3 => {
                let _ = fs::remove_dir_all(&p);
            }
            _ => {
                let to = f.ws.join(pick[next(pick.len() as u64) as usize]);
                if !to.starts_with(&p) {
                    let _ = fs::create_dir_all(to.parent().unwrap_or(&f.ws));
                    let _ = fs::remove_dir_all(&to);
                    let _ = fs::rename(&p, &to);
                }
            }
        }
        let s = f.warm();
        assert_eq!(found_set(&s), uncached(&f.ws));
        tick();
    }
}

/// End to end: `resolve` writes the cache in `<state_dir>/walk/` and a `.git` file whose content
/// changed is read again even though its directory's listing is reused.
#[test]
fn resolve_rereads_gitfiles_with_a_warm_cache() {
    let t = TempDir::new("walkcache-resolve");
    let home = t.mkdir("home");
    let ws = t.mkdir("ws");
    let one = t.mkdir("gitdirs/one");
    let two = t.mkdir("gitdirs/two");
    fs::create_dir(ws.join("sub")).unwrap();
    fs::write(ws.join("sub/.git"), format!("gitdir: {}\n", one.display())).unwrap();
    let req = crate::plan::PlanRequest {
        workspace: ws.clone(),
        cwd: ws.clone(),
        home: Some(home.clone()),
        env: vec![],
        state_dir: home.join("state"),
        write_gate: false,
    };
    let dir = cache_dir(&req.state_dir, std::slice::from_ref(&ws)).unwrap();
    let file = cache_file(&dir, &ws);
    // Let the tree age past the racy window, so the cache the first run writes is trusted.
    std::thread::sleep(Duration::from_nanos(RACY_WINDOW_NS as u64 + 100_000_000));
    let has = |p: &crate::plan::Plan, d: &Path| p.protected.iter().any(|x| x.path == d);
    let plan = crate::plan::resolve(&default_policy(), &req).unwrap();
    assert!(has(&plan, &one) && !has(&plan, &two));
    let written = fs::metadata(&file).unwrap().modified().unwrap();
    tick();
    fs::write(ws.join("sub/.git"), format!("gitdir: {}\n", two.display())).unwrap();
    let plan = crate::plan::resolve(&default_policy(), &req).unwrap();
    assert!(
        has(&plan, &two) && !has(&plan, &one),
        "{:?}",
        plan.protected
    );
    assert!(has(&plan, &ws.join("sub/.git")));
    assert_eq!(
        fs::metadata(&file).unwrap().modified().unwrap(),
        written,
        "nothing was listed again, so the cache was not rewritten"
    );
}

/// Timings on generated trees. Run with
/// `cargo test --release -p stockade-policy -- --ignored --nocapture walk_cache_speed`.
#[cfg(target_os = "linux")]
#[test]
#[ignore]
fn walk_cache_speed() {
    /// Median wall time and median CPU time (user + system, this thread) of the samples.
    fn median(v: Vec<(Duration, Duration)>) -> String {
        let mut wall: Vec<_> = v.iter().map(|x| x.0).collect();
        let mut cpu: Vec<_> = v.iter().map(|x| x.1).collect();
        wall.sort();
        cpu.sort();
        format!(
            "{:.1?} (cpu {:.1?})",
            wall[wall.len() / 2],
            cpu[cpu.len() / 2]
        )
    }
    fn cpu() -> Duration {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: `ru` is writable memory for one `struct rusage`.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: getrusage returned 0, so it filled `ru`.
        let ru = unsafe { ru.assume_init() };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
    fn time(mut f: impl FnMut()) -> (Duration, Duration) {
        let c = cpu();
        let t = std::time::Instant::now();
        f();
        (t.elapsed(), cpu() - c)
    }
    // 100k files in 1,050 directories + 50 `.git`; then 50k directories with 2 files each.
    let shapes: [(&str, usize, usize, usize); 2] = [
        ("100k files, 1.1k dirs", 50, 20, 100),
        ("50k dirs", 50, 1000, 2),
    ];
    for (label, a_n, b_n, files) in shapes {
        let f = fixture();
        for a in 0..a_n {
            for b in 0..b_n {
                let d = f.ws.join(format!("d{a}/e{b}"));
                fs::create_dir_all(&d).unwrap();
                for i in 0..files {
                    fs::write(d.join(format!("f{i}")), "").unwrap();
                }
            }
            fs::create_dir_all(f.ws.join(format!("d{a}/.git"))).unwrap();
        }
        let n = names();
        let runs = 9;
        let none = median(
            (0..runs)
                .map(|_| time(|| assert_eq!(scan(&f.ws, &n, None, &[]).unwrap().found.len(), a_n)))
                .collect(),
        );
        let cold = median(
            (0..runs)
                .map(|_| {
                    let _ = fs::remove_file(&f.cache);
                    time(|| {
                        scan_at(&f.ws, &n, Some(&f.cache), &[], later()).unwrap();
                    })
                })
                .collect(),
        );
        let warm = median(
            (0..runs)
                .map(|_| {
                    time(|| {
                        let s = scan_at(&f.ws, &n, Some(&f.cache), &[], later()).unwrap();
                        assert_eq!(s.stats.listed, 0);
                    })
                })
                .collect(),
        );
        let one = median(
            (0..runs)
                .map(|i| {
                    fs::write(f.ws.join(format!("d0/e0/new{i}")), "").unwrap();
                    time(|| {
                        let s = scan_at(&f.ws, &n, Some(&f.cache), &[], later()).unwrap();
                        assert_eq!(s.stats.listed, 1);
                        assert!(!s.stats.written);
                    })
                })
                .collect(),
        );
        let size = fs::metadata(&f.cache).unwrap().len();
        eprintln!(
            "{label}: scan: no cache {none}, cold+write {cold}, warm {warm}, warm with one \
             changed dir {one}; cache {size} bytes"
        );
        // The whole of `resolve`, with the real clock (the tree aged past the racy window).
        std::thread::sleep(Duration::from_nanos(RACY_WINDOW_NS as u64 + 100_000_000));
        let home = f.ws.parent().unwrap().join("home");
        fs::create_dir_all(&home).unwrap();
        let mut req = crate::plan::PlanRequest {
            workspace: f.ws.clone(),
            cwd: f.ws.clone(),
            home: Some(home.clone()),
            env: vec![],
            // Relative: the cache is off.
            state_dir: PathBuf::from("off"),
            write_gate: false,
        };
        let pol = default_policy();
        let resolve = |req: &crate::plan::PlanRequest| {
            time(|| {
                let p = crate::plan::resolve(&pol, req).unwrap();
                assert_eq!(p.protected.len(), a_n);
            })
        };
        let r_none = median((0..runs).map(|_| resolve(&req)).collect());
        req.state_dir = home.join("state");
        let file = cache_file(
            &cache_dir(&req.state_dir, std::slice::from_ref(&f.ws)).unwrap(),
            &f.ws,
        );
        let r_cold = median(
            (0..runs)
                .map(|_| {
                    let _ = fs::remove_file(&file);
                    resolve(&req)
                })
                .collect(),
        );
        let r_warm = median((0..runs).map(|_| resolve(&req)).collect());
        eprintln!("{label}: resolve: no cache {r_none}, cold+write {r_cold}, warm {r_warm}");
    }
}

#[test]
fn cache_from_the_future_is_ignored() {
    let f = fixture();
    f.mk("a/.git");
    f.warm(); // written with a start time 20 s ahead
    let s = scan(&f.ws, &names(), Some(&f.cache), &[]).unwrap();
    assert!(
        !s.stats.cache_loaded,
        "the clock went back since it was written"
    );
    assert_eq!(s.found.len(), 1);
}

#[test]
fn many_changed_directories_rewrite_the_cache() {
    let f = fixture();
    for i in 0..=REWRITE_AFTER_DIRS {
        f.mk(&format!("d{i}"));
    }
    f.warm();
    tick();
    for i in 0..=REWRITE_AFTER_DIRS {
        f.mk(&format!("d{i}/.git"));
    }
    let s = f.warm();
    assert_eq!(s.stats.listed, REWRITE_AFTER_DIRS + 1, "every d*");
    assert!(s.stats.written);
    assert_eq!(s.found.len(), REWRITE_AFTER_DIRS + 1);
    let s = f.warm();
    assert_eq!(s.stats.listed, 0);
    assert_eq!(s.found.len(), REWRITE_AFTER_DIRS + 1);
}
