"""Shared helpers for the integration tier (real mounts of unionfs).

``UNIONFS_IT_REFERENCE=overlay`` runs the mount-based tests of this tier (semantics, safety,
concurrency) against the kernel's overlayfs instead of unionfs. That is only a way to check the
tests' expectations against the reference; CLI and daemon-process tests skip in that mode.
"""
import contextlib
import os
import subprocess

import psutil
import pytest

from unionfs.mounts import mount_table
from tests.mountutil import (kernel_overlay_mount, have_kernel_overlay, is_mounted,
                             unionfs_mount, unmount)

REFERENCE = os.environ.get("UNIONFS_IT_REFERENCE", "") == "overlay"

requires_daemon = pytest.mark.skipif(
    REFERENCE, reason="tests the unionfs daemon process (not meaningful against the kernel)")


def mount_count(mnt):
    """How many mounts are stacked on mnt (0 = not a mountpoint)."""
    mnt = os.path.realpath(mnt)
    return sum(1 for m in mount_table() if m.mountpoint == mnt)


def mount_options(mnt):
    """The per-mount options (nodev, nosuid, ro ...) of the topmost mount on mnt, as a set."""
    mnt = os.path.realpath(mnt)
    opts = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == mnt:
                opts = set(fields[5].split(","))
    return opts


@contextlib.contextmanager
def union(lowers, upper, work, mnt, options=(), extra_args=()):
    """Mount unionfs (or, in reference mode, the kernel's overlayfs) and unmount afterwards."""
    lowers = [str(l) for l in lowers]
    upper = None if upper is None else str(upper)
    work = None if work is None else str(work)
    if REFERENCE:
        if not have_kernel_overlay():
            pytest.skip("reference mode needs root and the kernel's overlayfs")
        with kernel_overlay_mount(lowers, upper, work, str(mnt)) as m:
            yield m
    else:
        with unionfs_mount(lowers, upper, work, str(mnt), options=options,
                           extra_args=extra_args) as m:
            yield m


class Stack:
    """lower0 (top) .. lowerN-1, upper, work and mnt under one tmp dir."""

    def __init__(self, base, nlower=1):
        self.base = base
        self.lowers = [base / ("lower%d" % i) for i in range(nlower)]
        self.upper = base / "upper"
        self.work = base / "work"
        self.mnt = base / "mnt"
        for d in self.lowers + [self.upper, self.work, self.mnt]:
            d.mkdir(parents=True, exist_ok=True)

    @property
    def lower(self):
        return self.lowers[0]

    def mount(self, readonly=False, **kw):
        if readonly:
            return union(self.lowers, None, None, self.mnt, **kw)
        return union(self.lowers, self.upper, self.work, self.mnt, **kw)


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


@pytest.fixture
def stack2(tmp_path):
    return Stack(tmp_path, nlower=2)


def _pids_with_fuse_fd():
    out = set()
    for p in psutil.process_iter(["pid"]):
        try:
            for fd in os.listdir("/proc/%d/fd" % p.pid):
                try:
                    if os.readlink("/proc/%d/fd/%s" % (p.pid, fd)) == "/dev/fuse":
                        out.add(p.pid)
                        break
                except OSError:
                    pass
        except OSError:
            pass
    return out


def daemon_pid(mnt):
    """PID of the unionfs daemon serving mnt.

    It is the process whose command line names the mountpoint and unionfs (the mount command
    itself has exited by then); failing that, the only unionfs process holding /dev/fuse open
    that names the mountpoint in any argument (also inside -o strings).
    """
    mnt = str(mnt)
    real = os.path.realpath(mnt)
    me = os.getpid()
    exact, loose = [], []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if p.info["pid"] == me or not cmd:
            continue
        joined = " ".join(cmd)
        if "unionfs" not in joined:
            continue
        if any(a.rstrip("/") in (mnt, real) for a in cmd):
            exact.append(p.info["pid"])
        elif mnt in joined or real in joined:
            loose.append(p.info["pid"])
    cands = exact or loose
    if len(cands) > 1:
        fuse_holders = _pids_with_fuse_fd()
        held = [c for c in cands if c in fuse_holders]
        if held:
            cands = held
    if len(cands) != 1:
        raise AssertionError("cannot identify the unionfs daemon for %s: candidates %r" % (
            mnt, cands))
    return cands[0]


def lazy_unmount(mnt):
    """Unmount a (possibly dead) FUSE mount."""
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    if is_mounted(mnt):
        subprocess.run(["umount", "-l", str(mnt)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return not is_mounted(mnt)


@pytest.fixture(autouse=True, scope="session")
def _no_leftover_mounts(tmp_path_factory):
    """Fail loudly if this session leaves a mount under its own pytest tmp dir behind (mounts
    of other, concurrent pytest sessions are none of our business)."""
    base = os.path.realpath(str(tmp_path_factory.getbasetemp())) + os.sep
    yield
    left = [m.mountpoint for m in mount_table() if (m.mountpoint + os.sep).startswith(base)]
    for mp in reversed(left):
        unmount(mp, fuse=True)
        unmount(mp, fuse=False)
    assert not left, "mounts left behind: %r" % left
