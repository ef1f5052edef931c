#!/usr/bin/env python3
"""What the copy-up's flush policy costs: a burst of copy-ups through the union core (no FUSE,
so only the copy-up itself is timed) with one fsync each (what unionfs does), with no fsync and
one syncfs of the upper at the end of the burst (the batched form), and with no flush at all
(`volatile`, the floor); and one big copy-up with and without starting writeback as it copies.
Policies alternate run by run; medians are printed.

    python scripts/bench_copyup_sync.py [--small 1000] [--mib 256] [--reps 3] [--dir /tmp]
"""
import argparse
import ctypes
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from unionfs.core import copyup  # noqa: E402
from unionfs.core.union import Union  # noqa: E402

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def syncfs(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")
    finally:
        os.close(fd)


def burst(base, names, sync, syncfs_at_end, writeback=True):
    """Seconds to copy up `names` into a fresh upper."""
    up, work = os.path.join(base, "u"), os.path.join(base, "w")
    for d in (up, work):
        shutil.rmtree(d, ignore_errors=True)
        os.mkdir(d)
    union = Union([os.path.join(base, "l")], up, work, sync=sync)
    os.sync()   # the lower's and the last run's dirty pages are not this run's to write
    step = copyup._WRITEBACK_STEP
    if not writeback:
        copyup._WRITEBACK_STEP = 1 << 62
    try:
        t = time.perf_counter()
        for name in names:
            union.copy_up(name)
        if syncfs_at_end:
            syncfs(up)
        return time.perf_counter() - t
    finally:
        copyup._WRITEBACK_STEP = step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=1000)
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dir", default="/tmp", help="where the layers go (the upper's filesystem)")
    a = p.parse_args()
    base = tempfile.mkdtemp(prefix="bench-copyup-sync.", dir=a.dir)
    try:
        os.makedirs(os.path.join(base, "l", "small"))
        for i in range(a.small):
            with open(os.path.join(base, "l", "small", "s%05d" % i), "wb") as f:
                f.write(os.urandom(4096))
        with open(os.path.join(base, "l", "big"), "wb") as f:
            for _ in range(a.mib):
                f.write(os.urandom(1 << 20))
        small = ["/small/s%05d" % i for i in range(a.small)]
        cases = [
            ("%d x 4 KiB, fsync each" % a.small, lambda: burst(base, small, True, False)),
            ("%d x 4 KiB, one syncfs at the end" % a.small,
             lambda: burst(base, small, False, True)),
            ("%d x 4 KiB, no flush (volatile)" % a.small, lambda: burst(base, small, False, False)),
            ("%d MiB, writeback as it copies + fsync" % a.mib,
             lambda: burst(base, ["/big"], True, False)),
            ("%d MiB, one fsync at the end" % a.mib,
             lambda: burst(base, ["/big"], True, False, writeback=False)),
        ]
        times = {label: [] for label, _ in cases}
        for _ in range(a.reps):
            for label, run in cases:
                times[label].append(run())
        for label, _ in cases:
            ts = times[label]
            print("%-44s median %.3f s  (%s)" % (label, statistics.median(ts),
                                                 " ".join("%.3f" % t for t in ts)))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
