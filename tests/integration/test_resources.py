"""Resources of the daemon: file descriptors, RLIMIT_NOFILE, memory over a large walk, a full
upper; and fsx-style data integrity (scripts/fsx.py) on files that start in a lower layer.

RSS ceilings (``RSS_CEILING_MIB``) are stated for a walk of ``UNIONFS_RSS_PATHS`` paths (default
50,000 here; ``scripts/soak.py --rss-paths 1000000`` walks a million and reports what it
measured).
"""
import errno
import hashlib
import os
import random
import subprocess
import sys
import time

import psutil
import pytest

from tests.mountutil import (REPO, have_kernel_overlay, kernel_overlay_mount, requires_fuse,
                             requires_root, unionfs_mount, unmount, wait_for)
from tests.integration.conftest import daemon_pid, requires_daemon

sys.path.insert(0, os.path.join(REPO, "scripts"))
import fsx  # noqa: E402

pytestmark = [requires_fuse, requires_root, requires_daemon]

MiB = 1 << 20
RSS_PATHS = int(os.environ.get("UNIONFS_RSS_PATHS", "50000"))
# What the daemon may grow to over a walk of RSS_PATHS paths (measured: ~42 MiB for 50,000
# paths; the caches are bounded, see README "Resolution cache").
RSS_CEILING_MIB = int(os.environ.get("UNIONFS_RSS_CEILING_MIB", "256"))


def build_tree(lower, npaths, per_dir=1000):
    """npaths empty files in npaths/per_dir directories (plus a few with data)."""
    ndirs = max(1, npaths // per_dir)
    for i in range(ndirs):
        d = os.path.join(lower, "d%04d" % i)
        os.makedirs(d, exist_ok=True)
        for j in range(per_dir):
            os.close(os.open(os.path.join(d, "f%05d" % j), os.O_CREAT | os.O_WRONLY, 0o644))
    with open(os.path.join(lower, "data"), "wb") as f:
        f.write(b"x" * 10000)
    return ndirs * per_dir


def _rss(pid):
    return psutil.Process(pid).memory_info().rss


def walk_rss(mnt, pid, sample_every=5000, log=None):
    """lstat every path through the mount (each a FUSE lookup); returns (paths, rss before,
    peak rss, rss after) in bytes."""
    before = peak = _rss(pid)
    n = 0
    for dirpath, dirnames, filenames in os.walk(mnt):
        dirnames.sort()
        for name in filenames:
            os.lstat(os.path.join(dirpath, name))
            n += 1
            if n % sample_every == 0:
                peak = max(peak, _rss(pid))
                if log:
                    log(n, peak)
    after = _rss(pid)
    return n, before, max(peak, after), after


@pytest.fixture(scope="module")
def big_mount(tmp_path_factory):
    base = tmp_path_factory.mktemp("resources")
    lower, upper, work, mnt = (base / n for n in ("lower", "upper", "work", "mnt"))
    for p in (lower, upper, work, mnt):
        p.mkdir()
    n = build_tree(str(lower), RSS_PATHS)
    with unionfs_mount([lower], upper, work, mnt):
        yield {"base": base, "lower": lower, "mnt": mnt, "pid": daemon_pid(mnt), "paths": n}


# --------------------------------------------------------------------------- descriptors

@pytest.mark.timeout(120)
def test_fd_count_back_after_10000_open_close_cycles(big_mount):
    m, pid = str(big_mount["mnt"]), big_mount["pid"]
    proc = psutil.Process(pid)
    os.makedirs(os.path.join(m, "fdtest"), exist_ok=True)
    with open(os.path.join(m, "fdtest", "upper_file"), "wb") as f:
        f.write(b"u" * 100)
    lower_files = [os.path.join(m, "d0000", "f%05d" % j) for j in range(50)]
    # the daemon keeps one descriptor open per lower directory it has read (a bounded cache,
    # layers.LowerLayer): one round first, so every directory used below is counted in start
    for path in lower_files[:1] + [os.path.join(m, "d%04d" % j) for j in range(3)]:
        os.listdir(os.path.dirname(path) if path in lower_files else path)
        os.stat(path)
    time.sleep(0.2)
    start = proc.num_fds()
    for i in range(10000):
        k = i % 5
        if k == 0:      # a lower file, read-only
            fd = os.open(lower_files[i % 50], os.O_RDONLY)
            os.read(fd, 10)
            os.close(fd)
        elif k == 1:    # an upper file, read-write
            fd = os.open(os.path.join(m, "fdtest", "upper_file"), os.O_RDWR)
            os.pwrite(fd, b"w", i % 100)
            os.close(fd)
        elif k == 2:    # create + unlink
            p = os.path.join(m, "fdtest", "tmp%d" % (i % 7))
            fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
            os.unlink(p)
        elif k == 3:    # a directory
            fd = os.open(os.path.join(m, "d%04d" % (i % 3)), os.O_RDONLY | os.O_DIRECTORY)
            os.close(fd)
        else:           # failed opens must not leak either
            try:
                os.open(os.path.join(m, "fdtest", "missing"), os.O_RDONLY)
            except FileNotFoundError:
                pass
    # release is asynchronous: the kernel sends it after close() returned
    assert wait_for(lambda: proc.num_fds() <= start, timeout=15), (
        "daemon fds: %d before, %d after 10,000 open/close cycles" % (start, proc.num_fds()))
    # and a file unlinked while open, then closed, leaves nothing either
    p = os.path.join(m, "fdtest", "open_unlinked")
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    os.unlink(p)
    os.write(fd, b"x")
    os.close(fd)
    assert wait_for(lambda: proc.num_fds() <= start, timeout=15), proc.num_fds()


def test_rlimit_nofile_soft_equals_hard(big_mount):
    with open("/proc/%d/limits" % big_mount["pid"]) as f:
        line = next(l for l in f if l.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard, line


# --------------------------------------------------------------------------- memory

@pytest.mark.timeout(180)
def test_rss_bounded_over_a_large_walk(big_mount):
    n, before, peak, after = walk_rss(str(big_mount["mnt"]), big_mount["pid"])
    assert n >= big_mount["paths"]
    print("walk of %d paths: daemon RSS %.0f MiB before, %.0f MiB peak, %.0f MiB after" % (
        n, before / MiB, peak / MiB, after / MiB))
    assert peak < RSS_CEILING_MIB * MiB, (
        "daemon RSS %.0f MiB over a walk of %d paths (ceiling %d MiB)" % (peak / MiB, n,
                                                                        RSS_CEILING_MIB))


# --------------------------------------------------------------------------- full upper

def _sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def _errno(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)
    return None


def _wait_exit(pid, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)


def _open_write(p):
    os.close(os.open(p, os.O_WRONLY))


def _append(p):
    with open(p, "ab") as f:
        f.write(b"more")


def _enospc_ops(m):
    """Copy-ups of the 32 MiB lower file in every way there is; each must fail with ENOSPC."""
    big = os.path.join(m, "big")
    return {"open_for_write": _errno(_open_write, big),
            "append": _errno(_append, big),
            "truncate_to_1": _errno(os.truncate, big, 1),
            "chmod": _errno(os.chmod, big, 0o600),
            "setxattr": _errno(os.setxattr, big, "user.x", b"1"),
            "rename": _errno(os.rename, big, os.path.join(m, "moved")),
            "link": _errno(os.link, big, os.path.join(m, "linked"))}


@pytest.mark.timeout(120)
def test_full_upper_fails_copy_up_cleanly(tmp_path):
    lower = tmp_path / "lower"
    lower.mkdir()
    rng = random.Random(3)
    with open(lower / "big", "wb") as f:
        for _ in range(32):
            f.write(rng.randbytes(MiB))
    (lower / "small").write_bytes(b"small")
    lower_sha = _sha(lower / "big")
    results = {}
    sides = ["unionfs"] + (["kernel"] if have_kernel_overlay() else [])
    for side in sides:
        fs = tmp_path / ("tmpfs-" + side)
        fs.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(fs)], check=True)
        try:
            upper, work, mnt = fs / "upper", fs / "work", tmp_path / ("mnt-" + side)
            for p in (upper, work, mnt):
                p.mkdir()
            free0 = os.statvfs(fs).f_bfree
            cm = (unionfs_mount([lower], upper, work, mnt) if side == "unionfs" else
                  kernel_overlay_mount([str(lower)], str(upper), str(work), str(mnt)))
            pid = None
            with cm:
                m = str(mnt)
                if side == "unionfs":
                    pid = daemon_pid(m)
                ops = _enospc_ops(m)
                results[side] = ops
                # the lower version stays visible, whole
                assert _sha(os.path.join(m, "big")) == lower_sha, side
                assert sorted(os.listdir(m)) == ["big", "small"], (side, os.listdir(m))
                # the mount still works where there is room
                with open(os.path.join(m, "after"), "wb") as f:
                    f.write(b"fits")
                with open(os.path.join(m, "after"), "rb") as f:
                    assert f.read() == b"fits"
                os.unlink(os.path.join(m, "after"))
                # writing a new file until the upper is full: ENOSPC, then room again
                full = _errno(lambda p: open(p, "wb").write(b"z" * (20 * MiB)),
                              os.path.join(m, "filler"))
                assert full == "ENOSPC", (side, full)
                os.unlink(os.path.join(m, "filler"))
            if pid is not None:     # its descriptors in the upper go with it
                _wait_exit(pid)
            # nothing partial left in the upper or the work dir
            assert not os.path.lexists(upper / "big"), side
            assert not os.path.lexists(upper / "moved"), side
            if side == "unionfs":
                left = os.listdir(work / "work")
                assert not left, "left in WORK/work after failed copy-ups: %r" % left
                used = (free0 - os.statvfs(fs).f_bfree) * os.statvfs(fs).f_frsize
                assert used < MiB, "%d bytes still used on the upper after the failures" % used
        finally:
            unmount(str(tmp_path / ("mnt-" + side)), fuse=side == "unionfs")
            subprocess.run(["umount", str(fs)])
            if os.path.ismount(fs):
                subprocess.run(["umount", "-l", str(fs)])
    assert all(v == "ENOSPC" for v in results["unionfs"].values()), results["unionfs"]
    if "kernel" in results:
        assert results["unionfs"] == results["kernel"], results


# --------------------------------------------------------------------------- fsx

FSX_OPS = int(os.environ.get("UNIONFS_FSX_OPS", "600"))
FSX_SEED = int(os.environ.get("UNIONFS_FSX_SEED", "1"))


@pytest.mark.timeout(120)
def test_fsx_on_files_starting_in_a_lower_layer(tmp_path):
    """Reads, writes, holes, truncates, hole punches and mmap I/O on three lower files (plain,
    sparse, empty) with the copy-up in the middle; the model must match throughout, then the
    upper files directly and through the kernel's overlayfs."""
    res = fsx.check_on_mounts(str(tmp_path), FSX_SEED, FSX_OPS, log=print)
    for name, stats in res.items():
        assert stats["open_rw"] >= 1 and stats["ops"] == FSX_OPS, (name, stats)
