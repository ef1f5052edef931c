#!/usr/bin/env python3
"""The daemon's memory per path the kernel holds: in process, per structure, and as RSS.

    scripts/bench_memory.py --paths 50000                  # both measurements
    scripts/bench_memory.py --paths 50000 --only structures
    scripts/bench_memory.py --lowers L1:L2:... --only rss  # a given stack (top first)

structures: a Union and a node table (fuse/nodes.py) in this process, walked as the FUSE server
answers a walk (a READDIRPLUS of every directory, through the listing snapshots, hands the
kernel a node for every entry); tracemalloc's growth over the walk, per source line, divided by
the number of entries, and named by the structure that line allocates.

rss: the daemon of a real mount, idle after mounting, then after an lstat of every path
(tests/integration/test_resources.py: walk_rss), as ``make soak`` part rss reports it. Needs
root and /dev/fuse.

Without --lowers, a tree of --paths empty files in directories of 1,000 (build_tree) is made
once under --workdir and reused.
"""
import argparse
import gc
import os
import shutil
import stat
import sys
import tempfile
import time
import tracemalloc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MiB = 1 << 20

# what each allocating line keeps per path, by the name the report gives it
STRUCTURES = [
    ("unionfs/fuse/nodes.py", "node table (fuse/nodes.py)"),
    ("unionfs/core/cache.py", "resolution cache: dict and child sets (core/cache.py)"),
    ("unionfs/core/namei.py", "resolution records: Node, components (core/namei.py)"),
    ("unionfs/core/readdir.py", "listings: cached, snapshots, paths (core/readdir.py)"),
    ("unionfs/core/union.py", "attributes kept with listings (core/union.py)"),
    ("unionfs/core/layers.py", "lower layers: Hits, relpaths, directory caches (core/layers.py)"),
]


def walk_in_process(union, nodes, listings):
    """Walk the union as the FUSE server answers a walk with readdirplus; the entries seen."""
    n = 0
    stack = [(1, "/")]
    while stack:
        nid, path = stack.pop()
        _gen, entries = listings.at(0, True, lambda: union.listdir(path, True))
        for name, code, _ino, _full in entries:
            if name in (".", ".."):
                continue
            child = nodes.looked_up(nid, name)
            n += 1
            if code == stat.S_IFDIR:
                stack.append((child, ("" if path == "/" else path) + "/" + name))
    return n


def structures(lowers, base):
    """{structure: bytes per entry}, the entries walked and the total bytes per entry."""
    from unionfs.core.readdir import Listings
    from unionfs.core.union import Union
    from unionfs.fuse.nodes import Nodes
    upper, work = os.path.join(base, "upper"), os.path.join(base, "work")
    shutil.rmtree(upper, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(upper)
    os.makedirs(work)
    union = Union(lowers, upper, work)
    nodes, listings = Nodes(), Listings()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    n = walk_in_process(union, nodes, listings)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per = {}
    for s in after.compare_to(before, "lineno"):
        where = s.traceback[0].filename
        name = next((label for f, label in STRUCTURES if where.endswith(f)), "other")
        per[name] = per.get(name, 0) + s.size_diff
    total = sum(per.values())
    return {k: v / n for k, v in per.items()}, n, total / n


def rss(lowers, base, log):
    """(paths, idle RSS, RSS after the walk, peak RSS) of a mount's daemon, in bytes."""
    from tests.integration.conftest import daemon_pid
    from tests.integration.test_resources import _rss, walk_rss
    from tests.mountutil import unionfs_mount
    d = {n: os.path.join(base, n) for n in ("upper", "work", "mnt")}
    for p in d.values():
        shutil.rmtree(p, ignore_errors=True)
        os.makedirs(p)
    with unionfs_mount(lowers, d["upper"], d["work"], d["mnt"]):
        pid = daemon_pid(d["mnt"])
        time.sleep(0.5)
        idle = _rss(pid)
        n, _before, peak, after = walk_rss(
            d["mnt"], pid, log=lambda k, r: log("  %8d paths: RSS %.1f MiB" % (k, r / MiB)))
        with open("/proc/%d/status" % pid) as f:
            hwm = next(int(l.split()[1]) << 10 for l in f if l.startswith("VmHWM"))
    return n, idle, after, max(peak, hwm)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=50_000)
    ap.add_argument("--lowers", help="lower layers, top first, ':'-separated (else a tree)")
    ap.add_argument("--only", choices=("structures", "rss"))
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "unionfs-memory"))
    args = ap.parse_args()
    if args.lowers:
        lowers = args.lowers.split(":")
    else:
        from tests.integration.test_resources import build_tree
        tree = os.path.join(args.workdir, "tree-%d" % args.paths)
        if not os.path.exists(os.path.join(tree, "data")):
            os.makedirs(tree, exist_ok=True)
            build_tree(tree, args.paths)
        lowers = [tree]
    base = os.path.join(args.workdir, "run")
    os.makedirs(base, exist_ok=True)
    if args.only in (None, "structures"):
        per, n, total = structures(lowers, base)
        print("in process, %d entries walked: %.0f bytes per entry" % (n, total))
        for name, b in sorted(per.items(), key=lambda kv: -kv[1]):
            print("  %6.0f B  %s" % (b, name))
    if args.only in (None, "rss"):
        n, idle, after, peak = rss(lowers, base, print)
        print("daemon, %d paths: RSS %.1f MiB idle, %.1f MiB after the walk, %.1f MiB peak "
              "(%.0f bytes per path over idle)" % (n, idle / MiB, after / MiB, peak / MiB,
                                                   (peak - idle) / max(n, 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
