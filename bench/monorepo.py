#!/usr/bin/env python3
"""Launch cost against workspace size (issue 13): `stockade run -- /bin/true` in a generated
monorepo of ~220,000 directories (packages with node_modules-like depth, a few nested
repositories) against the same command in an empty workspace, and `git status` in that tree
inside the sandbox against bare `git status`, in one run.

Every case is interleaved with the others (empty, big, empty, big, ...) so machine noise hits all
alike; each is started with posix_spawn, reaped with waitpid and timed with a monotonic clock.

* warm: the same state directory every time (walk cache, git snapshot store already filled);
* first: a fresh state directory (`XDG_STATE_HOME`) per sample, so nothing is cached;
* with `--write-gate off` (the launch-time walk, the protection without the gate), a few
  samples, for scale.

Targets (issue 13): big/empty <= 1.2x warm, <= 1.5x first run; git status inside/bare likewise.

Two layouts (`--layout`):
* `ignored` (default): each package's dependencies under `node_modules/` (ignored by
  `.gitignore`, as a JavaScript monorepo has them): git status walks only the tracked sources;
* `tracked`: the same directories as vendored third-party sources that git tracks
  (`packages/pkgN/third_party/depM/...`, one small tracked file in every directory, no
  `.gitignore`): git status examines every directory and every file of the tree (an lstat per
  tracked file, a listing per directory for untracked files), like a large monorepo with its
  dependencies committed.

    python3 bench/monorepo.py [--stockade target/release/stockade] [--dirs 220000] [--runs 21]
                              [--layout ignored|tracked]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time


def timed(argv, cwd, env):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, env,
                         file_actions=[(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    _, status = os.waitpid(pid, 0)
    dt = (time.perf_counter_ns() - t0) / 1e6
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed with status {status}")
    return dt


def git(cwd, *args):
    # gc.auto=0: a commit of the tracked layout's 220k files would start a detached auto gc,
    # and the explicit `gc` below would then fail ("gc is already running").
    subprocess.run(["git", "-c", "gc.auto=0", "-C", cwd, *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "b",
                        "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
                        "GIT_COMMITTER_EMAIL": "b@b"})


def generate(ws, dirs, layout="ignored"):
    """~`dirs` directories: packages/pkgN/{src,node_modules/depM/{lib/x/y,dist/esm,test,docs,src/util}},
    a tracked source file per package, node_modules ignored, nested repositories at depth 4.
    `layout="tracked"`: `third_party` instead of `node_modules`, a tracked file in every
    directory, nothing ignored."""
    tracked = layout == "tracked"
    deps_dir = "third_party" if tracked else "node_modules"
    per_dep = ["lib", "lib/x", "lib/x/y", "dist", "dist/esm", "test", "docs", "src", "src/util", "types"]
    deps = 100
    per_pkg = 2 + deps * (1 + len(per_dep))
    pkgs = max(1, dirs // per_pkg)
    made = 0
    for p in range(pkgs):
        pkg = os.path.join(ws, "packages", f"pkg{p}")
        os.makedirs(os.path.join(pkg, "src"))
        with open(os.path.join(pkg, "src", "index.js"), "w") as f:
            f.write(f"module.exports = {p};\n")
        made += 2
        for d in range(deps):
            dep = os.path.join(pkg, deps_dir, f"dep{d}")
            for sub in per_dep:
                os.makedirs(os.path.join(dep, sub), exist_ok=True)
                if tracked:
                    with open(os.path.join(dep, sub, "index.js"), "w") as f:
                        f.write(f"// {p}/{d}/{sub}\n")
            with open(os.path.join(dep, "package.json"), "w") as f:
                f.write('{"name":"dep%d"}\n' % d)
            made += 1 + len(per_dep)
        made += 1
    if not tracked:
        with open(os.path.join(ws, ".gitignore"), "w") as f:
            f.write("node_modules/\n")
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "monorepo")
    # Packed, as a cloned repository is (the history snapshot copies object files; its cost
    # follows the history, not the directory count).
    git(ws, "gc", "-q")
    # Nested repositories (vendored, cloned by hand) at depth 4.
    for p in range(min(5, pkgs)):
        nested = os.path.join(ws, "packages", f"pkg{p}", "vendor", "lib")
        os.makedirs(nested)
        git(nested, "init", "-q", "-b", "main")
        with open(os.path.join(nested, "f"), "w") as f:
            f.write("x\n")
        git(nested, "add", "f")
        git(nested, "commit", "-qm", "nested")
        made += 3
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stockade", default="target/release/stockade")
    ap.add_argument("--dirs", type=int, default=220_000)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--first-runs", type=int, default=7)
    ap.add_argument("--walk-runs", type=int, default=3, help="samples with --write-gate off (slow)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--layout", choices=["ignored", "tracked"], default="ignored",
                    help="node_modules-like dependencies ignored by git, or tracked (see above)")
    ap.add_argument("--json")
    a = ap.parse_args()
    stockade = os.path.abspath(a.stockade)
    if not os.access(stockade, os.X_OK):
        raise SystemExit(f"{stockade} is not built: run `cargo build --release` first")
    true = shutil.which("true") or "/bin/true"
    gitbin = shutil.which("git")
    root = tempfile.mkdtemp(prefix="stockade-bench-mono-", dir=os.path.expanduser("~"))
    big, empty, states = (os.path.join(root, n) for n in ("big", "empty", "states"))
    for d in (big, empty, states):
        os.makedirs(d)
    git(empty, "init", "-q", "-b", "main")
    t0 = time.time()
    n = generate(big, a.dirs, a.layout)
    print(f"generated {n} directories ({a.layout} layout) in {time.time() - t0:.0f} s", file=sys.stderr)
    base_env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    # One warm state directory per workspace, as a user's runs in two projects would have.
    warm_envs = {ws: {**base_env, "XDG_STATE_HOME": os.path.join(states, "warm-" + os.path.basename(ws))}
                 for ws in (empty, big)}
    fresh = [0]

    def first_env():
        fresh[0] += 1
        return {**base_env, "XDG_STATE_HOME": os.path.join(states, f"first{fresh[0]}")}

    run = lambda ws, *cmd: [stockade, "run", "--no-pty", "--workspace", ws, "--", *cmd]
    warm = {
        "empty /bin/true": (run(empty, true), empty),
        "220k /bin/true": (run(big, true), big),
        "bare git status": ([gitbin, "status", "--short"], big),
        "inside git status": (run(big, gitbin, "status", "--short"), big),
    }
    first = {
        "empty first run": (run(empty, true), empty),
        "220k first run": (run(big, true), big),
    }
    walk = {"220k --write-gate off": ([stockade, "run", "--no-pty", "--write-gate", "off",
                                       "--workspace", big, "--", true], big)}
    times = {k: [] for k in [*warm, *first, *walk]}
    try:
        for i in range(a.warmup + a.runs):
            for name, (argv, cwd) in warm.items():
                os.chdir(cwd)
                dt = timed(argv, cwd, warm_envs[cwd])
                if i >= a.warmup:
                    times[name].append(dt)
            if a.warmup <= i < a.warmup + a.first_runs:
                for name, (argv, cwd) in first.items():
                    os.chdir(cwd)
                    times[name].append(timed(argv, cwd, first_env()))
            if a.warmup <= i < a.warmup + a.walk_runs:
                for name, (argv, cwd) in walk.items():
                    os.chdir(cwd)
                    times[name].append(timed(argv, cwd, warm_envs[cwd]))
    finally:
        os.chdir("/")
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"{'case':24} {'n':>3} {'median ms':>10}")
    for k, v in times.items():
        if v:
            print(f"{k:24} {len(v):3} {med[k]:10.2f}")
    ratios = [
        ("warm: 220k / empty", "220k /bin/true", "empty /bin/true", 1.2),
        ("first run: 220k / empty", "220k first run", "empty first run", 1.5),
        ("git status: inside / bare", "inside git status", "bare git status", 1.2),
        ("walk (gate off) / gate, 220k", "220k --write-gate off", "220k /bin/true", None),
    ]
    out = {}
    for label, num, den, target in ratios:
        if num in med and den in med:
            r = med[num] / med[den]
            out[label] = r
            verdict = "" if target is None else (" (target <= %.1fx: %s)" % (target, "met" if r <= target else "MISSED"))
            print(f"{label:30} {r:6.2f}x{verdict}")
    # git status is fast in this tree (node_modules ignored): the raw ratio is mostly the fixed
    # launch cost. What must not grow with the tree is that overhead: inside - bare, against the
    # launch cost in an empty workspace.
    if all(k in med for k in ("inside git status", "bare git status", "empty /bin/true")):
        extra = med["inside git status"] - med["bare git status"]
        r = extra / med["empty /bin/true"]
        out["git status overhead / empty launch"] = r
        print(f"{'git status overhead (inside - bare) / empty launch':30} {r:6.2f}x "
              f"({extra:.2f} ms vs {med['empty /bin/true']:.2f} ms)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"dirs": n, "layout": a.layout, "median_ms": med, "ratios": out, "samples_ms": times}, f, indent=1)


if __name__ == "__main__":
    main()
