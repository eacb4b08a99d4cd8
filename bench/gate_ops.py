#!/usr/bin/env python3
"""Cost of one intercepted call through the real binary (issue 13: <= 25 µs median): the same
Python child times each operation one call at a time inside `stockade run` with the write gate
(the default) and with `--write-gate off` (no filter on these calls), in alternating rounds,
so that machine noise hits both alike. Per operation: the median over rounds of each round's
median, the difference (the gate's cost per call, the real policy as judge) and the ratio.

`bench/gate_calls.py` measures the mechanism alone (trivial judge, the test harness); this one
measures what a command pays: the policy's judge, the workspace's real filesystem, Landlock
and the run's other filters included.

    python3 bench/gate_ops.py [--stockade target/release/stockade] [--rounds 7] [--calls 2000]
                              [--dir DIR] [--json FILE]

`--dir`: where the workspaces are made (default: a scratch directory under ~). On this
project's VMs the disk is ext4 without a journal, where a new inode costs 0.1–1 ms and varies
with recent deletions; a tmpfs (`mount -t tmpfs tmpfs /mnt/benchfs`, `--dir /mnt/benchfs`; not beneath the home, see docs/overlay.md) leaves the
gate's own cost.
"""
import argparse, json, os, shutil, statistics, subprocess, tempfile

CHILD = r"""
import os, sys, time
n = int(sys.argv[1]); ws = os.getcwd()
e = os.path.join(ws, "existing"); open(e, "w").close()
for d in ("new", "dirs", "unl", "ren"):
    os.makedirs(os.path.join(ws, d), exist_ok=True)
unl = [os.path.join(ws, "unl", "u%d" % i) for i in range(n)]
for u in unl:
    open(u, "w").close()
ra, rb = os.path.join(ws, "ren", "a"), os.path.join(ws, "ren", "b")
open(ra, "w").close()
ops = {
    "open_creat_existing": lambda i: os.close(os.open(e, os.O_WRONLY | os.O_CREAT, 0o644)),
    "open_creat_new": lambda i: os.close(os.open(os.path.join(ws, "new", "f%d" % i), os.O_WRONLY | os.O_CREAT, 0o644)),
    "open_wronly_existing": lambda i: os.close(os.open(e, os.O_WRONLY)),
    "mkdir": lambda i: os.mkdir(os.path.join(ws, "dirs", "d%d" % i)),
    "rename": lambda i: os.rename(*((ra, rb) if i % 2 == 0 else (rb, ra))),
    "unlink": lambda i: os.unlink(unl[i]),
    "open_rdonly_not_intercepted": lambda i: os.close(os.open(e, os.O_RDONLY)),
}
s = {k: [] for k in ops}
clock = time.perf_counter_ns
for i in range(n):
    for k, f in ops.items():
        t0 = clock(); f(i); s[k].append(clock() - t0)
for k, v in s.items():
    v.sort()
    print("OP", k, v[len(v) // 2])
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stockade", default="target/release/stockade")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--dir")
    ap.add_argument("--json")
    a = ap.parse_args()
    stockade = os.path.abspath(a.stockade)
    if not os.access(stockade, os.X_OK):
        raise SystemExit(f"{stockade} is not built: run `cargo build --release` first")
    parent = a.dir or os.path.expanduser("~")
    root = tempfile.mkdtemp(prefix="stockade-bench-ops-", dir=parent)
    # The state directory (the overlays' upper layers) stays under ~, off `--dir`: an upper
    # layer beneath the home it overlays is refused by overlayfs.
    state = tempfile.mkdtemp(prefix="stockade-bench-ops-state-", dir=os.path.expanduser("~"))
    env = {**os.environ, "XDG_STATE_HOME": state}
    py = shutil.which("python3")
    samples = {}  # (op, gate) -> [round medians in µs]
    try:
        for r in range(a.rounds):
            for gate in ((True, False) if r % 2 == 0 else (False, True)):
                ws = os.path.join(root, f"ws-{r}-{'gate' if gate else 'off'}")
                os.makedirs(ws)
                argv = [stockade, "run", "--no-pty", "--workspace", ws]
                if not gate:
                    argv += ["--write-gate", "off"]
                argv += ["--", py, "-c", CHILD, str(a.calls)]
                out = subprocess.run(argv, cwd=ws, env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{argv[:6]} failed ({out.returncode}): {out.stderr[-2000:]}")
                for line in out.stdout.splitlines():
                    if line.startswith("OP "):
                        _, op, ns = line.split()
                        samples.setdefault((op, gate), []).append(int(ns) / 1000)
                shutil.rmtree(ws, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    ops = sorted({op for op, _ in samples}, key=lambda o: list(samples).index((o, True)))
    print(f"{a.rounds} alternating rounds x {a.calls} calls per operation in {parent} "
          f"(median of round medians), load average {os.getloadavg()[0]:.2f}")
    print(f"{'operation':<30} {'gate µs':>9} {'gate off µs':>12} {'cost µs':>9} {'ratio':>7}")
    rows = []
    for op in ops:
        g, o = statistics.median(samples[(op, True)]), statistics.median(samples[(op, False)])
        rows.append({"op": op, "gate_us": g, "off_us": o, "cost_us": g - o, "ratio": g / o})
        print(f"{op:<30} {g:>9.2f} {o:>12.2f} {g - o:>9.2f} {g / o:>7.2f}")
    gated = [r["cost_us"] for r in rows if r["op"] != "open_rdonly_not_intercepted"]
    med = statistics.median(gated)
    print(f"median cost over the intercepted operations: {med:.2f} µs (target <= 25 µs: "
          f"{'met' if med <= 25 else 'MISSED'})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": a.rounds, "calls": a.calls, "dir": parent, "rows": rows,
                       "samples_us": {f"{op} {'gate' if g else 'off'}": v for (op, g), v in samples.items()}},
                      f, indent=1)


if __name__ == "__main__":
    main()
