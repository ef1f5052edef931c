#!/usr/bin/env python3
"""The floor of a Python FUSE daemon: what libfuse + ctypes + the GIL cost per request before
any union logic, measured beside the kernel's overlayfs and unionfs in one run.

    python scripts/bench_floor.py [--files 2000] [--reps 5] [--systems kernel,floor-dict,...]

Workload: lstat of FILES distinct names in one directory on a fresh mount (the stat workload of
scripts/bench.py, 1-layer stack): each name costs the daemon one LOOKUP, which libfuse's
high-level API serves with one getattr call. Systems:

* ``kernel``: the kernel's overlayfs over one lower directory holding the files;
* ``floor-dict``: a null mfusepy daemon (libfuse 3) whose getattr returns a constant dict, as a
  plain fusepy program would (mfusepy converts it to a struct stat);
* ``floor-packed``: the same with getattr_fuse_3 overridden to fill the struct stat with one
  ``struct.pack_into`` (what unionfs does), i.e. the cheapest Python getattr there is;
* ``floor-packed-st``: floor-packed with libfuse's single-threaded loop (``-s``);
* ``floor-pinned``: floor-packed, multithreaded, each libfuse thread keeping its Python thread
  state (one PyGILState_Ensure never released, as unionfs did before it spoke the protocol itself);
* ``floor-wire`` / ``floor-wire-st``: a null daemon on unionfs's own FUSE protocol code
  (``unionfs/fuse/proto.py``, no libfuse): what unionfs's server costs before any union logic,
  with its 8 reader threads or one;
* ``unionfs``: unionfs over the kernel's lower directory;
* ``unionfs-uring``: the same with ``-o uring`` (requests through io_uring; the fuse module's
  enable_uring parameter is set to Y for the run and restored after it);
* ``fuse-overlayfs``: the C daemon, when installed.

Systems alternate run by run. Printed per system: median wall microseconds per stat, ratio to
the kernel, and the daemon's CPU microseconds per request (schedstat of its threads, divided by
FILES). The floor daemons do nothing but answer: their numbers are what no Python daemon on
this binding can go below. (callgrind misses the cost of a fresh thread state per request:
it is spent in the kernel, mapping and unmapping the state's frame stack.)

``--instructions`` runs each FUSE daemon once under valgrind's callgrind instead, counting only
while the stat loop runs, and prints instructions per request: a figure other load on the
machine cannot disturb (the wall and CPU times of a shared 2-core machine can).
"""
import argparse
import contextlib
import ctypes
import os
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the null daemon --------------------------------------------------------------------------

def serve_wire(mode, mnt):
    """A null daemon on unionfs's own protocol code (unionfs/fuse/proto.py): every name is a
    file, answered from constant bytes; ``floor-wire`` with unionfs's 8 reader threads,
    ``floor-wire-st`` with one."""
    import itertools
    import stat as st_mod
    import types
    sys.path.insert(0, REPO)
    from unionfs.fuse import proto as P

    t = time.time_ns()

    def attr(mode, size, nlink):
        return P.attr(types.SimpleNamespace(
            st_atime_ns=t, st_mtime_ns=t, st_ctime_ns=t, st_size=size, st_blocks=8,
            st_mode=mode, st_uid=0, st_gid=0, st_rdev=0, st_blksize=4096), 2, nlink)

    ch = P.Channel(mnt, {"default_permissions": True}, "floor", "floor")
    reg, dirv = attr(st_mod.S_IFREG | 0o644, 499, 1), attr(st_mod.S_IFDIR | 0o755, 0, 2)
    ids = itertools.count(2)
    hour = 3600

    def loop():
        buf = bytearray(P.BUFSIZE)
        while True:
            n = ch.read_into(buf)
            if n is None:
                return
            _l, op, unique, nid, *_ = P.IN_HEADER.unpack_from(buf)
            if op == P.INIT:
                _maj, minor, ra, flags = P.INIT_IN.unpack_from(buf, 40)
                ch.reply(unique, P.INIT_OUT.pack(7, P.MINOR, ra, flags & P.BIG_WRITES, 0, 0,
                                                 P.MAX_WRITE, 1, 256, 0, 0, 0))
            elif op == P.LOOKUP:
                is_d = nid == 1 and buf[40:n] == b"d\0"
                ch.reply(unique, P.ENTRY.pack(next(ids), 0, hour, hour, 0, 0) + (
                    dirv if is_d else reg))
            elif op == P.GETATTR:
                ch.reply(unique, P.ATTR_OUT.pack(hour, 0, 0) + (dirv if nid == 1 else reg))
            elif op not in (P.FORGET, P.BATCH_FORGET, P.INTERRUPT):
                ch.reply_error(unique, 38)

    threads = [threading.Thread(target=loop, daemon=True)
               for _ in range(1 if mode.endswith("-st") else 8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def serve(mode, mnt):
    if mode.startswith("floor-wire"):
        return serve_wire(mode, mnt)
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import stat as st_mod

    import mfusepy

    now = int(time.time())
    dir_attrs = {"st_mode": st_mod.S_IFDIR | 0o755, "st_nlink": 2, "st_ino": 1,
                 "st_atime": now, "st_mtime": now, "st_ctime": now}
    file_attrs = {"st_mode": st_mod.S_IFREG | 0o644, "st_nlink": 1, "st_size": 499,
                  "st_atime": now, "st_mtime": now, "st_ctime": now}

    class Null(mfusepy.Operations):
        def getattr(self, path, fh=None):
            return file_attrs if path.startswith("/d/") else dir_attrs

        use_ns = True

        def init_with_config(self, conn, config):
            if config is not None:
                config.entry_timeout = config.attr_timeout = 3600.0

    size = ctypes.sizeof(mfusepy.c_stat)
    pack = struct.Struct("=QQQIII4xQqqqqqqqqq").pack_into
    reg = (0, 2, 1, st_mod.S_IFREG | 0o644, 0, 0, 0, 499, 4096, 8, now, 0, now, 0, now, 0)
    dirv = (0, 1, 2, st_mod.S_IFDIR | 0o755, 0, 0, 0, 0, 4096, 8, now, 0, now, 0, now, 0)
    packed_ok = size == 144 and mfusepy.c_stat.st_size.offset == 48

    pinned = set()
    ensure = ctypes.pythonapi.PyGILState_Ensure
    get_ident = threading.get_ident

    class Packed(mfusepy.FUSE):
        def getattr_fuse_3(self, path, buf, fip):
            pack(buf.contents, 0, *(reg if path.startswith(b"/d/") else dirv))
            return 0

    class Pinned(Packed):
        def _wrapper(self, func, *args):
            if get_ident() not in pinned:
                pinned.add(get_ident())
                ensure()  # never released: this libfuse thread keeps its Python thread state
            return super()._wrapper(func, *args)

    single = mode.endswith("-st")
    cls = (Pinned if mode == "floor-pinned" else Packed if mode.startswith("floor-packed")
           else mfusepy.FUSE)
    cls = cls if packed_ok else mfusepy.FUSE
    cls(Null(), mnt, foreground=True, nothreads=single, fsname="floor", default_permissions=True)


# ---- the driver -------------------------------------------------------------------------------

def is_mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mnt for line in f)


def cpu_seconds(pid):
    """On-CPU time of the daemon's threads, in ns resolution (schedstat; libfuse 3 keeps its
    worker threads for the mount's life, so none of the time counted leaves with a thread)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def wait_for(cond, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def fusermount_u(mnt):
    for _ in range(20):
        if not is_mounted(mnt):
            return
        subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL)
        time.sleep(0.1)


def find_pid(mnt, word):
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(mnt) in cmd and any(word.encode() in c for c in cmd):
            return int(p)
    return None


def callgrind(system, root, lower, mnt, files, python):
    """Instructions the daemon executes per LOOKUP (callgrind, counting only during the loop)."""
    import glob
    import tempfile
    out = tempfile.mktemp(prefix="floor-cg-", dir=root)
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + out]
    if system.startswith("floor"):
        cmd = [python, os.path.abspath(__file__), "--serve", system, mnt]
    else:
        upper, work = root + "/upper", root + "/work"
        for d in (upper, work):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        cmd = [python, "-m", "unionfs", "mount", "-f", "--lower", lower, "--upper", upper,
               "--work", work, mnt]
    proc = subprocess.Popen(vg + cmd, env=dict(os.environ, PYTHONPATH=REPO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for(lambda: is_mounted(mnt), timeout=300):
            raise RuntimeError("%s did not mount under valgrind" % system)
        d = mnt + "/d/"
        os.lstat(d)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(files):
            os.lstat(d + "f%05d" % i)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        fusermount_u(mnt)
        proc.wait(timeout=300)
    total = 0
    for f in glob.glob(out + "*"):
        with open(f) as fh:
            for line in fh:
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
        os.unlink(f)
    return total / files


def mount(system, root, lower, mnt, python):
    upper, work = root + "/upper", root + "/work"
    for d in (upper, work):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    if system == "kernel":
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,"
                        "workdir=%s" % (lower, upper, work), mnt], check=True)
        return None
    if system.startswith("floor"):
        proc = subprocess.Popen([python, os.path.abspath(__file__), "--serve", system, mnt])
        if not wait_for(lambda: is_mounted(mnt)):
            raise RuntimeError("floor daemon did not mount")
        return proc.pid
    if system in ("unionfs", "unionfs-uring"):
        env = dict(os.environ, PYTHONPATH=REPO)
        opts = ["-o", "uring"] if system == "unionfs-uring" else []
        subprocess.run([python, "-m", "unionfs", "mount", "--lower", lower, "--upper", upper,
                        "--work", work] + opts + [mnt], check=True, env=env)
        return find_pid(mnt, "_daemon")
    if system == "fuse-overlayfs":
        subprocess.run(["fuse-overlayfs", "-o", "lowerdir=%s,upperdir=%s,workdir=%s" % (
            lower, upper, work), mnt], check=True)
        return find_pid(mnt, "fuse-overlayfs")
    raise ValueError(system)


def unmount(system, mnt, pid):
    if system == "kernel":
        subprocess.run(["umount", mnt], check=True)
        return
    fusermount_u(mnt)
    if pid is not None:
        wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                 open("/proc/%d/stat" % pid).read().rpartition(")")[2].split()[0] == "Z")


URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


@contextlib.contextmanager
def uring_enabled(wanted):
    """The fuse module's enable_uring set to Y while the block runs (if wanted), then restored."""
    if not wanted or not os.path.exists(URING_PARAM):
        yield
        return
    with open(URING_PARAM) as f:
        before = f.read().strip()
    try:
        with open(URING_PARAM, "w") as f:
            f.write("Y")
        yield
    finally:
        with open(URING_PARAM, "w") as f:
            f.write(before)


def one_run(system, root, lower, mnt, files, python):
    pid = mount(system, root, lower, mnt, python)
    try:
        d = mnt + "/d/"
        names = [d + "f%05d" % i for i in range(files)]
        os.lstat(d)  # the directory's own lookup is not counted
        c0 = cpu_seconds(pid) if pid else 0
        t0 = time.perf_counter()
        for p in names:
            os.lstat(p)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - c0 if pid else None
    finally:
        unmount(system, mnt, pid)
    return wall, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--systems", default="kernel,floor-dict,floor-pinned,floor-wire,"
                                         "floor-wire-st,unionfs,fuse-overlayfs")
    ap.add_argument("--workdir", default="/var/tmp/unionfs-floor")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--instructions", action="store_true",
                    help="count the daemons' instructions per request with callgrind")
    ap.add_argument("--serve", nargs=2, metavar=("MODE", "MNT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        return serve(*a.serve)
    systems = [s for s in a.systems.split(",") if s != "fuse-overlayfs" or shutil.which(s)]
    root = a.workdir
    lower, mnt = root + "/lower", root + "/mnt"
    os.makedirs(mnt, exist_ok=True)
    if not os.path.isdir(lower + "/d") or len(os.listdir(lower + "/d")) != a.files:
        shutil.rmtree(lower, ignore_errors=True)
        os.makedirs(lower + "/d")
        for i in range(a.files):
            with open(lower + "/d/f%05d" % i, "wb") as f:
                f.write(b"x" * 499)
    if a.instructions:
        print("instructions per LOOKUP (callgrind, %d names on a fresh mount)" % a.files)
        for s in systems:
            if s not in ("kernel", "fuse-overlayfs"):
                print("%-17s %12.0f" % (s, callgrind(s, root, lower, mnt, a.files, a.python)))
        return 0
    res = {s: ([], []) for s in systems}
    with uring_enabled("unionfs-uring" in systems):
        for _ in range(a.reps):
            for s in systems:
                wall, cpu = one_run(s, root, lower, mnt, a.files, a.python)
                res[s][0].append(wall)
                if cpu is not None:
                    res[s][1].append(cpu)
    ref = statistics.median(res["kernel"][0]) if "kernel" in res else None
    print("lstat of %d names on a fresh mount, %d reps, median (one LOOKUP per name)" % (
        a.files, a.reps))
    print("%-17s %12s %9s %18s" % ("system", "wall us/stat", "x kernel", "daemon CPU us/req"))
    for s in systems:
        wall = statistics.median(res[s][0]) / a.files * 1e6
        cpu = res[s][1] and statistics.median(res[s][1]) / a.files * 1e6
        print("%-17s %12.1f %9s %18s" % (s, wall, "%.1fx" % (wall * a.files / 1e6 / ref) if ref
                                         else "-", "%.1f" % cpu if cpu else "-"))


if __name__ == "__main__":
    sys.exit(main())
