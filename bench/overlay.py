#!/usr/bin/env python3
"""Copy-on-write overhead (issue 14), measured side by side, interleaved, medians and ratios.

1. Launch: `stockade run -- /bin/true` with the default `outside_writes = "overlay"` (home, /tmp
   and /var/tmp overlaid) against the same with `outside_writes = "deny"` and `temp.mode =
   "empty"` (read-only home, empty private /tmp).
2. `npm ci --offline` of a package of N files (default 20,000) from a filled ~/.npm: the cache
   read through the overlay, against the same cache made a writable root (`--writable ~/.npm`).

Everything lives in a scratch HOME under ~ (removed afterwards); no network is used.

    python3 bench/overlay.py [--stockade target/release/stockade] [--runs 100] [--npm-runs 5] [--files 20000]
                             [--baseline OLD_BINARY]

`--baseline` interleaves an older build's launch (both configurations) too.
"""
import argparse, json, os, random, shutil, statistics, subprocess, sys, tempfile, time


def timed(argv, env, cwd, pre=None):
    if pre:
        pre()
    t0 = time.perf_counter_ns()
    r = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = (time.perf_counter_ns() - t0) / 1e6
    if r.returncode != 0:
        raise SystemExit(f"{argv} failed: {r.stderr.decode(errors='replace')[-2000:]}")
    return dt


def interleave(cases, runs, warmup, env, cwd, pre=None):
    times = {k: [] for k in cases}
    # A fresh order every round: a run overlaps the previous run's namespace teardown (stockade
    # does not wait for it), so a fixed order would favour whichever case follows the cheapest.
    rng = random.Random(1)
    for i in range(warmup + runs):
        order = list(cases.items())
        rng.shuffle(order)
        for k, argv in order:
            dt = timed(argv, env, cwd, pre)
            if i >= warmup:
                times[k].append(dt)
    return times


def report(title, times, base):
    med = {k: statistics.median(v) for k, v in times.items()}
    print(title)
    for k, m in med.items():
        print(f"  {k:28} median {m:9.2f} ms   {m / med[base]:.3f}x {base}")
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stockade", default="target/release/stockade")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--npm-runs", type=int, default=5)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--baseline", help="an older stockade binary to interleave (launch part)")
    ap.add_argument("--json")
    a = ap.parse_args()
    stockade = os.path.abspath(a.stockade)
    root = tempfile.mkdtemp(prefix="stockade-bench-cow-", dir=os.path.expanduser("~"))
    home, ws, state = (os.path.join(root, d) for d in ("home", "ws", "state"))
    for d in (home, ws, state):
        os.makedirs(d)
    # A home like a real one (never empty: an empty tree is bound in without an overlay).
    for d in (".cache", ".config", ".local/share"):
        os.makedirs(os.path.join(home, d))
    for f in (".profile", ".bashrc"):
        with open(os.path.join(home, f), "w") as fh:
            fh.write("# bench\n")
    env = dict(os.environ, HOME=home, XDG_STATE_HOME=state, npm_config_cache=os.path.join(home, ".npm"),
               npm_config_update_notifier="false")
    env.pop("XDG_CONFIG_HOME", None)
    deny = os.path.join(root, "deny.toml")
    with open(deny, "w") as f:
        f.write('[filesystem]\noutside_writes = "deny"\n[temp]\nmode = "empty"\n')
    out = {}
    try:
        true = shutil.which("true") or "/bin/true"
        cases = {
            "deny (read-only home)": [stockade, "run", "--config", deny, "--workspace", ws, "--", true],
            "overlay (default)": [stockade, "run", "--workspace", ws, "--", true],
        }
        if a.baseline:
            old = os.path.abspath(a.baseline)
            cases["baseline deny"] = [old, "run", "--config", deny, "--workspace", ws, "--", true]
            cases["baseline overlay"] = [old, "run", "--workspace", ws, "--", true]
        launch = interleave(cases, a.runs, 10, env, ws)
        out["launch"] = report("launch, stockade run -- true", launch, "deny (read-only home)")
        if shutil.which("npm") and a.npm_runs > 0:
            pkg = os.path.join(root, "pkg")
            os.makedirs(pkg)
            with open(os.path.join(pkg, "package.json"), "w") as f:
                f.write('{"name":"many","version":"1.0.0"}')
            per = 100
            for i in range(a.files // per):
                d = os.path.join(pkg, f"d{i}")
                os.makedirs(d)
                for j in range(per):
                    with open(os.path.join(d, f"f{j}.js"), "w") as f:
                        f.write(f"module.exports = {i * per + j};\n")
            # --loglevel=warn: `npm pack` otherwise lists every one of the N files on stderr.
            subprocess.run(["npm", "pack", "--loglevel=warn", "--pack-destination", root], cwd=pkg,
                           env=env, check=True, stdout=subprocess.DEVNULL)
            with open(os.path.join(ws, "package.json"), "w") as f:
                json.dump({"name": "app", "version": "1.0.0",
                           "dependencies": {"many": "file:" + os.path.join(root, "many-1.0.0.tgz")}}, f)
            subprocess.run(["npm", "install", "--offline", "--no-audit", "--no-fund"], cwd=ws, env=env,
                           check=True, stdout=subprocess.DEVNULL)
            nm = os.path.join(ws, "node_modules")
            npm = ["npm", "ci", "--offline", "--no-audit", "--no-fund"]
            times = interleave({
                "cache writable (--writable)": [stockade, "run", "--workspace", ws, "--writable",
                                                os.path.join(home, ".npm"), "--", *npm],
                "cache through the overlay": [stockade, "run", "--workspace", ws, "--", *npm],
            }, a.npm_runs, 1, env, ws, pre=lambda: shutil.rmtree(nm, ignore_errors=True))
            out["npm_ci"] = report(f"npm ci --offline, {a.files} files", times, "cache writable (--writable)")
        elif a.npm_runs > 0:
            print("npm not installed: npm ci part skipped", file=sys.stderr)
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", root])
        shutil.rmtree(root, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
