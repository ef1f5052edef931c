"""The node table's worst moment: the longest single first LOOKUP while N nodes are added.

Adds N names (1,000 per directory, as a walk does) to a fuse.nodes.Nodes in process and
reports the total time, the median and the longest `looked_up` (the table lock is held for
all of it, so the longest is how long every other request waits). Growing the table doubles
it; done at once, that rehash was the longest by far.

    .venv/bin/python scripts/bench_nodes.py [--nodes 1000000] [--reps 3]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from unionfs.fuse.nodes import ROOT, Nodes  # noqa: E402


def run(n):
    nodes = Nodes()
    times = []
    clock = time.perf_counter_ns
    d = ROOT
    t0 = clock()
    for i in range(n):
        if i % 1000 == 0:
            d = nodes.looked_up(ROOT, "d%d" % (i // 1000))
        name = "f%d" % i
        t = clock()
        nodes.looked_up(d, name)
        times.append(clock() - t)
    total = clock() - t0
    return total / 1e9, statistics.median(times) / 1e3, max(times) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    rows = [run(a.nodes) for _ in range(a.reps)]
    for total, med, worst in rows:
        print("%d nodes: %.2f s, median %.2f us a lookup, longest %.1f ms" % (
            a.nodes, total, med, worst))
    print("medians of %d: %.2f s, longest %.1f ms" % (
        a.reps, statistics.median(r[0] for r in rows), statistics.median(r[2] for r in rows)))


if __name__ == "__main__":
    main()
