#!/usr/bin/env python3
"""Reading a read-only stack (an image mounted for inspection): sequential reads of one big file
and of many small ones, cold (caches dropped) and warm, on the kernel's overlayfs, unionfs
(which then lets the kernel read the layers itself: FUSE passthrough) and fuse-overlayfs, all
mounted without an upper layer. Systems alternate run by run; medians are printed with the
ratio to the kernel.

    python scripts/bench_readonly.py [--mib 256] [--small 2000] [--reps 3]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def read_all(path, bufsize=1 << 20):
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(bufsize)
            if not b:
                return n
            n += len(b)


def mount(system, lowers, mnt, python):
    lowerdir = ":".join(lowers)
    if system == "kernel":
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=" + lowerdir, mnt],
                       check=True)
    elif system == "unionfs":
        subprocess.run([python, "-m", "unionfs", "mount", "--lower", lowerdir, mnt], check=True,
                       env=dict(os.environ, PYTHONPATH=REPO))
    else:
        subprocess.run(["fuse-overlayfs", "-o", "lowerdir=" + lowerdir, mnt], check=True)


def unmount(system, mnt):
    cmd = ["umount", mnt] if system == "kernel" else ["fusermount3", "-u", mnt]
    for _ in range(50):
        if subprocess.run(cmd, stderr=subprocess.DEVNULL).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("cannot unmount " + mnt)


def one_run(system, lowers, mnt, small, python):
    mount(system, lowers, mnt, python)
    try:
        out = {}
        names = [os.path.join(mnt, "small", "f%05d" % i) for i in range(small)]
        for phase in ("cold", "warm"):
            if phase == "cold":
                drop_caches()
            t = time.perf_counter()
            n = read_all(os.path.join(mnt, "big"))
            out["big-" + phase] = (time.perf_counter() - t, n)
            if phase == "cold":
                drop_caches()
            t = time.perf_counter()
            n = sum(read_all(p) for p in names)
            out["small-" + phase] = (time.perf_counter() - t, n)
        return out
    finally:
        unmount(system, mnt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", default="/var/tmp/unionfs-readonly")
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_readonly: needs root (the kernel's overlayfs, dropping caches)")
    systems = ["kernel", "unionfs"] + (["fuse-overlayfs"] if shutil.which("fuse-overlayfs")
                                       else [])
    top, bottom, mnt = (os.path.join(a.workdir, d) for d in ("top", "bottom", "mnt"))
    for d in (top, bottom + "/small", mnt):
        os.makedirs(d, exist_ok=True)
    big = os.path.join(bottom, "big")
    if not os.path.exists(big) or os.path.getsize(big) != a.mib << 20:
        with open(big, "wb") as f:
            for _ in range(a.mib):
                f.write(os.urandom(1 << 20))
    for i in range(a.small):
        p = os.path.join(bottom, "small", "f%05d" % i)
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(os.urandom(4096 + i % 4096))
    with open(os.path.join(top, "readme"), "w") as f:
        f.write("the top layer\n")
    res = {}
    for _ in range(a.reps):
        for s in systems:
            for phase, (sec, n) in one_run(s, [top, bottom], mnt, a.small, a.python).items():
                res.setdefault(phase, {}).setdefault(s, []).append(sec)
                res[phase].setdefault(s + ":bytes", []).append(n)
    print("read-only stack, %d MiB file and %d small files, %d reps, median seconds (x kernel)"
          % (a.mib, a.small, a.reps))
    print("%-12s" % "phase" + "".join("%22s" % s for s in systems))
    for phase in ("big-cold", "big-warm", "small-cold", "small-warm"):
        ref = statistics.median(res[phase]["kernel"])
        sizes = {tuple(res[phase][s + ":bytes"]) for s in systems}
        assert len(sizes) == 1, "systems read different byte counts: %r" % sizes
        print("%-12s" % phase + "".join(
            "%13.3f (%5.2fx)" % (statistics.median(res[phase][s]),
                                 statistics.median(res[phase][s]) / ref) for s in systems))


if __name__ == "__main__":
    sys.exit(main())
