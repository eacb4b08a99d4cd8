#!/usr/bin/env python3
"""Cost of one call intercepted by the write gate (crates/sys/src/fsgate.rs), per operation:
the same child program times each operation one call at a time, once under the gate (seccomp
user notification, the supervisor performing the call with a trivial judge) and once without
any filter, in alternating rounds so that machine noise hits both alike. Reports, per
operation, the median over rounds of each round's median, the difference (the gate's cost per
call) and the ratio. The issue's target: <= 25 µs median per intercepted call.

    python3 bench/gate_calls.py [--rounds 9] [--calls 2000] [--dir /dev/shm] [--json FILE]

`--dir` is where the workspaces are made (TMPDIR; default the system's temp dir): a tmpfs
separates the gate's cost from a slow filesystem's.

It builds and runs `cargo test --release -p stockade-sys --test fsgate -- bench`
(`FSGATE_BENCH=1`); the measurement itself is `crates/sys/tests/fsgate/bench.rs`.
"""
import argparse, json, os, re, subprocess, sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=2000, help="calls per operation per round")
    ap.add_argument("--dir", help="directory for the workspaces (TMPDIR)")
    ap.add_argument("--json")
    a = ap.parse_args()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    env = dict(os.environ, FSGATE_BENCH="1", FSGATE_BENCH_ROUNDS=str(a.rounds), FSGATE_BENCH_N=str(a.calls))
    if a.dir:
        env["TMPDIR"] = a.dir
    cmd = ["cargo", "test", "--release", "-q", "-p", "stockade-sys", "--test", "fsgate", "--", "bench"]
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        raise SystemExit("benchmark failed")
    rows = []
    for line in out.stdout.splitlines():
        m = re.match(r"BENCH (\S+) gated_us=(\S+) bare_us=(\S+) cost_us=(\S+)", line)
        if m:
            op, g, b, c = m.group(1), *map(float, m.groups()[1:])
            rows.append({"op": op, "gated_us": g, "bare_us": b, "cost_us": c, "ratio": g / b})
    if not rows:
        raise SystemExit("no BENCH lines in the output:\n" + out.stdout)
    where = a.dir or os.environ.get("TMPDIR", "/tmp")
    print(f"{a.rounds} alternating rounds x {a.calls} calls per operation in {where} (median of round medians)")
    print(f"{'operation':<30} {'gated µs':>10} {'no filter µs':>13} {'cost µs':>9} {'ratio':>7}")
    for r in rows:
        print(f"{r['op']:<30} {r['gated_us']:>10.2f} {r['bare_us']:>13.2f} {r['cost_us']:>9.2f} {r['ratio']:>7.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": a.rounds, "calls": a.calls, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
