#!/usr/bin/env python3
"""Per-request cost of the unionfs daemon, to measure what observability adds.

    python scripts/bench_observe.py [--rounds 5] [--files 200] [--loops 20]

Mounts unionfs with the kernel's caches off (entry/attr/negative timeout 0), so every stat(2)
reaches the daemon, then times a stat loop and a getxattr loop (ENODATA: one round trip each).
Prints the median microseconds per call over the rounds. Needs /dev/fuse.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unionfs(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-m", "unionfs"] + list(args), check=True, env=env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--loops", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lower, upper, work, mnt = (os.path.join(tmp, n) for n in ("l", "u", "w", "m"))
        for d in (lower, upper, work, mnt):
            os.makedirs(d)
        for i in range(a.files):
            with open(os.path.join(lower, "f%d" % i), "w") as f:
                f.write("x")
        unionfs("mount", "--lower", lower, "--upper", upper, "--work", work,
                "-o", "attr_timeout=0,entry_timeout=0,negative_timeout=0", mnt)
        try:
            paths = [os.path.join(mnt, "f%d" % i) for i in range(a.files)]
            res = {"stat": [], "getxattr": []}
            for _ in range(a.rounds):
                t = time.perf_counter()
                for _ in range(a.loops):
                    for p in paths:
                        os.stat(p)
                res["stat"].append((time.perf_counter() - t) / (a.loops * a.files) * 1e6)
                t = time.perf_counter()
                for _ in range(a.loops):
                    for p in paths:
                        try:
                            os.getxattr(p, "user.none")
                        except OSError:
                            pass
                res["getxattr"].append((time.perf_counter() - t) / (a.loops * a.files) * 1e6)
            for k, v in res.items():
                print("%-9s median %.1f us/call  (rounds: %s)" % (
                    k, statistics.median(v), " ".join("%.1f" % x for x in v)))
        finally:
            subprocess.run(["fusermount3", "-u", mnt])


if __name__ == "__main__":
    main()
