#!/usr/bin/env python3
"""Why the overlay work-dir slots rotate and sit in different block groups (issue 14).

Every overlay mount creates a handful of inodes in its work dir and frees as many (the scratch
dir, `volatile`'s marker, the kernel's tmpfile/xattr/whiteout probes, the previous mount's scratch
removed). ext4 without a journal skips inodes freed in the last ~30 s when it allocates one, so
back-to-back runs that all churn one directory make every allocation walk further. This replays
that pattern (8 mkdirs per "run", the previous run's 8 removed, a 4 ms pause) for `--seconds`,
once in a single directory and once rotating over `--slots` directories under a parent marked
`chattr +T` (ext4 then spreads them over block groups), interleaved in chunks, and prints the
median mkdir latency per chunk.

    python3 bench/inode_churn.py [--dir DIR_ON_THE_FS] [--seconds 20] [--slots 16]
"""
import argparse, os, shutil, statistics, subprocess, tempfile, time


def churn(bases, seconds, label):
    prev, k, it, ts = [], 0, 0, []
    t0 = time.time()
    rows = []
    while time.time() - t0 < seconds:
        base = bases[it % len(bases)]
        it += 1
        cur = []
        for _ in range(8):
            p = os.path.join(base, f"x{k}")
            k += 1
            t = time.perf_counter_ns()
            os.mkdir(p)
            ts.append(time.perf_counter_ns() - t)
            cur.append(p)
        for p in prev:
            os.rmdir(p)
        prev = cur
        time.sleep(0.004)
        if len(ts) >= 800:
            rows.append((time.time() - t0, statistics.median(ts) / 1000))
            ts = []
    for p in prev:
        os.rmdir(p)
    for t, m in rows[:: max(1, len(rows) // 8)] + rows[-1:]:
        print(f"  {label:24} t={t:5.1f} s   median mkdir {m:7.1f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.expanduser("~"))
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--slots", type=int, default=16)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="stockade-bench-churn-", dir=a.dir)
    try:
        one = os.path.join(root, "one")
        os.mkdir(one)
        spread = os.path.join(root, "spread")
        os.mkdir(spread)
        subprocess.run(["chattr", "+T", spread], check=False)
        slots = [os.path.join(spread, str(j)) for j in range(a.slots)]
        for s in slots:
            os.mkdir(s)
        # each case starts with 35 s of quiet, so the other's freed inodes no longer count
        time.sleep(35)
        churn([one], a.seconds, "one directory")
        time.sleep(35)
        churn(slots, a.seconds, f"{a.slots} rotating +T slots")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
