#!/usr/bin/env python3
"""Cost of the write gate (issue 12/13): real builds inside the sandbox with the gate (the
default) against `--write-gate off` (no gate: the launch-time walk), interleaved side by side,
plus the gate's cost per intercepted call.

* `cargo build` of a crate with dependencies (serde + serde_derive + serde_json: proc macros,
  build scripts, a few hundred files written). The dependencies are fetched on the host first
  into a CARGO_HOME inside the workspace, so the sandboxed build runs with network off
  (`cargo build --offline`); `cargo clean` before every sample.
* `npm ci` of a real lockfile (express + webpack, generated on the host with
  `npm install --package-lock-only`), from an offline cache filled on the host beforehand
  (`npm ci --offline`), network off.
* per call: a loop of `open(O_CREAT|O_WRONLY)` + `close` + `unlink` (two intercepted calls per
  iteration) timed inside the sandbox, gate vs no gate: (t_gate - t_off) / calls.

Target (issue 12): builds <= 1.05x without the gate; per call <= 25 us median.

    python3 bench/gate.py [--stockade target/release/stockade] [--runs 5] [--skip-npm] [--skip-cargo]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

CARGO_TOML = """[package]
name = "gatebench"
version = "0.1.0"
edition = "2021"

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
"""

MAIN_RS = """use serde::{Deserialize, Serialize};
#[derive(Serialize, Deserialize, Debug)]
struct P { x: i32, name: String }
fn main() {
    let p: P = serde_json::from_str(r#"{"x":1,"name":"a"}"#).unwrap();
    println!("{}", serde_json::to_string(&p).unwrap());
}
"""

PACKAGE_JSON = """{
  "name": "gatebench",
  "version": "1.0.0",
  "private": true,
  "dependencies": { "express": "4.21.2", "webpack": "5.97.1" }
}
"""

PER_CALL = """
import os, time, sys
n = int(sys.argv[1]); p = "gate-call-probe"
t0 = time.perf_counter_ns()
for _ in range(n):
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644); os.close(fd); os.unlink(p)
print("NS", time.perf_counter_ns() - t0)
"""


def run(argv, cwd, env, capture=False):
    t0 = time.perf_counter_ns()
    r = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    dt = (time.perf_counter_ns() - t0) / 1e6
    if r.returncode != 0:
        raise SystemExit(f"{argv} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")
    return dt, (r.stdout.decode() if capture else "")


def sandboxed(stockade, ws, gate, cmd, env_set=()):
    argv = [stockade, "run", "--no-pty", "--workspace", ws]
    if not gate:
        argv += ["--write-gate", "off"]
    for kv in env_set:
        argv += ["--env", kv]
    return argv + ["--", *cmd]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stockade", default="target/release/stockade")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--skip-cargo", action="store_true")
    ap.add_argument("--skip-npm", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    stockade = os.path.abspath(a.stockade)
    if not os.access(stockade, os.X_OK):
        raise SystemExit(f"{stockade} is not built: run `cargo build --release` first")
    root = tempfile.mkdtemp(prefix="stockade-bench-gate-", dir=os.path.expanduser("~"))
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    env["XDG_STATE_HOME"] = os.path.join(root, "state")
    cases = {}
    try:
        # per-call
        calls_ws = os.path.join(root, "calls")
        os.makedirs(calls_ws)
        py = shutil.which("python3")
        cases["per-call"] = lambda gate: sandboxed(stockade, calls_ws, gate, [py, "-c", PER_CALL, str(a.calls)])
        if not a.skip_cargo:
            crate = os.path.join(root, "crate")
            os.makedirs(os.path.join(crate, "src"))
            with open(os.path.join(crate, "Cargo.toml"), "w") as f:
                f.write(CARGO_TOML)
            with open(os.path.join(crate, "src", "main.rs"), "w") as f:
                f.write(MAIN_RS)
            cargo_home = os.path.join(crate, ".cargo-home")
            cenv = {**env, "CARGO_HOME": cargo_home}
            run(["cargo", "generate-lockfile"], crate, cenv)
            run(["cargo", "fetch"], crate, cenv)
            cargo = shutil.which("cargo")
            cset = [f"CARGO_HOME={cargo_home}", "CARGO_TERM_COLOR=never"]
            cases["cargo build"] = lambda gate: (
                run(sandboxed(stockade, crate, gate, [cargo, "clean", "-q", "--offline"], cset), crate, env),
                sandboxed(stockade, crate, gate, [cargo, "build", "-q", "--offline"], cset))[1]
        if not a.skip_npm:
            proj = os.path.join(root, "npm")
            os.makedirs(proj)
            with open(os.path.join(proj, "package.json"), "w") as f:
                f.write(PACKAGE_JSON)
            cache = os.path.join(proj, ".npm-cache")
            npm = shutil.which("npm")
            nenv = {**env, "npm_config_cache": cache, "npm_config_audit": "false", "npm_config_fund": "false",
                    "npm_config_update_notifier": "false"}
            run([npm, "install", "--package-lock-only", "--ignore-scripts"], proj, nenv)
            run([npm, "ci", "--ignore-scripts"], proj, nenv)  # fills the cache
            nset = [f"npm_config_cache={cache}", "npm_config_audit=false", "npm_config_fund=false",
                    "npm_config_update_notifier=false", "npm_config_offline=true"]
            cases["npm ci"] = lambda gate: sandboxed(stockade, proj, gate, [npm, "ci", "--ignore-scripts"], nset)
        times = {(k, g): [] for k in cases for g in (True, False)}
        for i in range(a.runs + 1):  # the first round warms caches and is dropped
            for k, make in cases.items():
                for g in ((True, False) if i % 2 == 0 else (False, True)):
                    argv = make(g)
                    cwd = argv[argv.index("--workspace") + 1]
                    dt, out = run(argv, cwd, env, capture=(k == "per-call"))
                    if k == "per-call":
                        dt = int(out.split("NS")[1].split()[0]) / 1e6
                    if i > 0:
                        times[(k, g)].append(dt)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"{'case':14} {'gate ms':>10} {'no gate ms':>11}   ratio")
    result = {}
    for k in cases:
        on, off = med[(k, True)], med[(k, False)]
        line = f"{k:14} {on:10.1f} {off:11.1f}   {on / off:.3f}x"
        if k == "per-call":
            per = (on - off) * 1e3 / (2 * a.calls)
            line += f"   -> {per:.1f} us per intercepted call (target <= 25 us: {'met' if per <= 25 else 'MISSED'})"
            result["per_call_us"] = per
        else:
            line += f"   (target <= 1.05x: {'met' if on / off <= 1.05 else 'MISSED'})"
        result[k] = {"gate_ms": on, "off_ms": off, "ratio": on / off}
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": a.runs, "result": result,
                       "samples_ms": {f"{k} {'gate' if g else 'off'}": v for (k, g), v in times.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
