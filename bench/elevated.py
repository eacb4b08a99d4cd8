#!/usr/bin/env python3
"""Per-run overhead of the elevated tier next to the unelevated tier, interleaved, as an
unprivileged user.

    sudo python3 bench/elevated.py [--stockade target/release/stockade] [--runs 200]

As root: copies the binary to a world-readable place, installs the elevated tier, starts the
broker in the foreground, creates a throw-away user `stkbench` with a git workspace, then (as that
user) times `stockade run --tier elevated -- /bin/true` (offline and `--network on`) and
`stockade run --tier unelevated -- /bin/true` interleaved (elevated, unelevated, online, ...),
each started with posix_spawn and reaped with waitpid on a monotonic clock. Prints medians, p90
and the elevated/unelevated ratios; uninstalls and removes the user afterwards, even on failure.
Needs: nft, useradd, setpriv; no existing installation (/var/lib/stockade).
"""
import argparse, os, shutil, subprocess, sys, tempfile, time

TIMER = r'''
import os, statistics, sys, time
s, ws, runs, warm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cases = {
    "elevated-offline": [s, "run", "--tier", "elevated", "--workspace", ws, "--", "/bin/true"],
    "unelevated": [s, "run", "--tier", "unelevated", "--workspace", ws, "--", "/bin/true"],
    "elevated-online": [s, "run", "--tier", "elevated", "--network", "on", "--workspace", ws, "--", "/bin/true"],
}
def timed(argv):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0), (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
    _, st = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(st) != 0:
        raise SystemExit(f"{argv} failed: {st}")
    return (time.perf_counter_ns() - t0) / 1e6
os.chdir(ws)
for _ in range(warm):
    for a in cases.values():
        timed(a)
res = {k: [] for k in cases}
for _ in range(runs):
    for k, a in cases.items():
        res[k].append(timed(a))
med = {k: statistics.median(v) for k, v in res.items()}
for k, v in res.items():
    v = sorted(v)
    print(f"{k:18} median {med[k]:7.2f} ms   p90 {v[int(len(v) * 0.9)]:7.2f} ms   (n={len(v)})")
print(f"ratio elevated-offline / unelevated: {med['elevated-offline'] / med['unelevated']:.2f}x")
print(f"ratio elevated-online  / unelevated: {med['elevated-online'] / med['unelevated']:.2f}x")
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stockade", default="target/release/stockade")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if os.path.exists("/var/lib/stockade/install.json"):
        raise SystemExit("an installation exists; refusing")
    d = tempfile.mkdtemp(prefix="stkbench.", dir="/opt")
    os.chmod(d, 0o755)
    s = os.path.join(d, "stockade")
    shutil.copy(a.stockade, s)
    os.chmod(s, 0o755)
    broker = None
    try:
        subprocess.run([s, "setup"], check=True, stdout=subprocess.DEVNULL)
        broker = subprocess.Popen([s, "broker"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists("/run/stockade/broker.sock"):
                break
            time.sleep(0.05)
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", "stkbench"], check=True)
        ws = "/home/stkbench/ws"
        as_user = ["setpriv", "--reuid", "stkbench", "--regid", "stkbench", "--init-groups",
                   "env", "-i", "PATH=/usr/bin:/bin", "HOME=/home/stkbench"]
        subprocess.run(as_user + ["sh", "-c", f"mkdir {ws} && git init -q {ws}"], check=True, cwd="/")
        subprocess.run(as_user + ["/usr/bin/python3", "-c", TIMER, s, ws, str(a.runs), str(a.warmup)],
                       check=True, cwd="/")
    finally:
        if broker:
            broker.kill()
            broker.wait()
        subprocess.run([s, "uninstall"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["userdel", "-r", "-f", "stkbench"], stderr=subprocess.DEVNULL)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
