#!/usr/bin/env python3
"""Launch overhead of `stockade run -- /bin/true`, side by side with bare `/bin/true` and the
equivalent bubblewrap command, in one run.

Runs are interleaved (true, stockade, bwrap, true, stockade, ...) so that machine noise hits all
three alike; each is started with posix_spawn and reaped with waitpid, and timed with a monotonic
clock. Reports medians, p90 and ratios; `--json FILE` writes the raw numbers.

    python3 bench/launch.py [--stockade target/release/stockade] [--runs 200]
    python3 bench/launch.py --baseline OLD_STOCKADE   # before/after: an older build interleaved too
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time


def timed(argv, cwd):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    _, status = os.waitpid(pid, 0)
    dt = (time.perf_counter_ns() - t0) / 1e6
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed with status {status}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stockade", default="target/release/stockade")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json")
    ap.add_argument("--baseline", help="another stockade binary (e.g. the build before a change), run interleaved")
    ap.add_argument("--minimal", action="store_true",
                    help="also run stockade with outside_writes = deny, temp.mode = empty, git.mode = read-only "
                         "(no overlays, no git snapshot: the cost of those defaults, interleaved)")
    a = ap.parse_args()
    stockade = os.path.abspath(a.stockade)
    if not os.access(stockade, os.X_OK):
        raise SystemExit(f"{stockade} is not built: run `cargo build --release` first")
    true = shutil.which("true") or "/bin/true"
    ws = tempfile.mkdtemp(prefix="stockade-bench-", dir=os.path.expanduser("~"))
    os.chdir(ws)
    subprocess.run(["git", "init", "-q", ws], check=True)
    cases = {
        "bare /bin/true": [true],
        "stockade run": [stockade, "run", "--workspace", ws, "--", true],
    }
    if a.baseline:
        baseline = os.path.abspath(a.baseline)
        if not os.access(baseline, os.X_OK):
            raise SystemExit(f"{baseline} is not executable")
        cases["baseline stockade"] = [baseline, "run", "--workspace", ws, "--", true]
    if a.minimal:
        cfg = os.path.join(ws, ".bench-minimal.toml")
        with open(cfg, "w") as f:
            f.write('[filesystem]\noutside_writes = "deny"\n[temp]\nmode = "empty"\n[git]\nmode = "read-only"\n')
        cases["stockade minimal"] = [stockade, "run", "--config", cfg, "--workspace", ws, "--", true]
    bwrap = shutil.which("bwrap")
    if bwrap:
        cases["bwrap"] = [bwrap, "--ro-bind", "/", "/", "--bind", ws, ws, "--dev", "/dev", "--proc", "/proc",
                          "--unshare-net", "--unshare-pid", true]
    else:
        print("bwrap not installed: comparing with bare /bin/true only (apt-get install bubblewrap)", file=sys.stderr)
    times = {k: [] for k in cases}
    try:
        for i in range(a.warmup + a.runs):
            for name, argv in cases.items():
                dt = timed(argv, ws)
                if i >= a.warmup:
                    times[name].append(dt)
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    p90 = {k: sorted(v)[int(len(v) * 0.9) - 1] for k, v in times.items()}
    print(f"{'command':18} {'median ms':>10} {'p90 ms':>8}   ratio")
    for k in cases:
        ratios = [f"{med[k] / med[o]:.2f}x {o}" for o in cases
                  if o != k and o != "stockade run" and k in ("stockade run", "stockade minimal")
                  and not (k == "stockade minimal" and o == "baseline stockade")]
        print(f"{k:18} {med[k]:10.2f} {p90[k]:8.2f}   {', '.join(ratios)}")
    if "bwrap" in med:
        verdict = "within" if med["stockade run"] <= med["bwrap"] else "ABOVE"
        print(f"stockade median is {verdict} bwrap's ({med['stockade run']:.2f} vs {med['bwrap']:.2f} ms); "
              f"overhead over bare exec: {med['stockade run'] - med['bare /bin/true']:.2f} ms")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": a.runs, "median_ms": med, "p90_ms": p90, "samples_ms": times}, f, indent=1)


if __name__ == "__main__":
    main()
