//! The cost of one intercepted call: the same child measures each operation one call at a
//! time (median of `FSGATE_BENCH_N`, default 2000) with the gate and without any filter, in
//! alternating rounds; the difference of the medians is the gate's cost per call. Run by
//! `bench/gate_calls.py` (release build); also runnable as
//! `FSGATE_BENCH=1 cargo test --release -p stockade-sys --test fsgate -- bench`.

use super::child::c;
use super::harness::{run, workspace, Install, Opts, TestJudge};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const OPS: &[&str] = &[
    "open_creat_existing",
    "open_creat_new",
    "open_wronly_existing",
    "mkdir",
    "rename",
    "unlink",
    "open_rdonly_not_intercepted",
];

pub fn bench_per_call_cost() {
    let rounds: usize = std::env::var("FSGATE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut gated: Vec<Vec<f64>> = vec![vec![]; OPS.len()];
    let mut bare: Vec<Vec<f64>> = vec![vec![]; OPS.len()];
    for round in 0..rounds {
        for (install, into) in [(Install::Gated, &mut gated), (Install::None, &mut bare)] {
            let ws = workspace(&format!("bench-{round}"));
            let mut opts = Opts::new(&ws);
            opts.install = install;
            let judge = TestJudge {
                quiet: true,
                ..Default::default()
            };
            let r = run("bench", &ws, Arc::new(judge), opts);
            assert!(r.success, "{}\n{}", r.stdout, r.stderr);
            for (i, op) in OPS.iter().enumerate() {
                into[i].push(r.get(&format!("bench_{op}_ns")).parse().unwrap());
            }
            let _ = std::fs::remove_dir_all(&ws);
        }
    }
    println!("    per-call medians over {rounds} alternating rounds (median of round medians):");
    println!(
        "    {:<30} {:>10} {:>10} {:>10} {:>7}",
        "op", "gated µs", "bare µs", "cost µs", "ratio"
    );
    for (i, op) in OPS.iter().enumerate() {
        let (g, b) = (
            median(&mut gated[i]) / 1000.0,
            median(&mut bare[i]) / 1000.0,
        );
        println!(
            "    {op:<30} {g:>10.2} {b:>10.2} {:>10.2} {:>7.2}",
            g - b,
            g / b
        );
        println!(
            "BENCH {op} gated_us={g:.3} bare_us={b:.3} cost_us={:.3}",
            g - b
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn timed(samples: &mut Vec<f64>, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    samples.push(t.elapsed().as_nanos() as f64);
}

/// The child side: print `bench_<op>_ns=<median>` for each op.
pub fn child_bench(ws: &Path) {
    use libc::*;
    let n: usize = std::env::var("FSGATE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    for d in ["new", "dirs", "ren", "unl"] {
        std::fs::create_dir(ws.join(d)).unwrap();
    }
    let existing = c(&ws.join("existing"));
    let new: Vec<_> = (0..n).map(|i| c(&ws.join(format!("new/f{i}")))).collect();
    let dirs: Vec<_> = (0..n).map(|i| c(&ws.join(format!("dirs/d{i}")))).collect();
    let unl: Vec<_> = (0..n).map(|i| c(&ws.join(format!("unl/u{i}")))).collect();
    let (ra, rb) = (c(&ws.join("ren/a")), c(&ws.join("ren/b")));
    // SAFETY: valid C strings; descriptors closed right away.
    unsafe {
        close(open(existing.as_ptr(), O_CREAT | O_WRONLY, 0o644));
        close(open(ra.as_ptr(), O_CREAT | O_WRONLY, 0o644));
        for u in &unl {
            close(open(u.as_ptr(), O_CREAT | O_WRONLY, 0o644));
        }
    }
    let mut s: Vec<Vec<f64>> = vec![vec![]; OPS.len()];
    for i in 0..n {
        // SAFETY: as above.
        unsafe {
            timed(&mut s[0], || {
                close(open(
                    existing.as_ptr(),
                    O_CREAT | O_WRONLY | O_CLOEXEC,
                    0o644,
                ));
            });
            timed(&mut s[1], || {
                close(open(new[i].as_ptr(), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644));
            });
            timed(&mut s[2], || {
                close(open(existing.as_ptr(), O_WRONLY | O_CLOEXEC));
            });
            timed(&mut s[3], || {
                mkdir(dirs[i].as_ptr(), 0o755);
            });
            let (from, to) = if i % 2 == 0 { (&ra, &rb) } else { (&rb, &ra) };
            timed(&mut s[4], || {
                rename(from.as_ptr(), to.as_ptr());
            });
            timed(&mut s[5], || {
                unlink(unl[i].as_ptr());
            });
            timed(&mut s[6], || {
                close(open(existing.as_ptr(), O_RDONLY | O_CLOEXEC));
            });
        }
    }
    for (i, op) in OPS.iter().enumerate() {
        println!("bench_{op}_ns={}", median(&mut s[i]));
    }
}
