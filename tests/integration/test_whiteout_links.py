"""Whiteouts made through the mount are hard links of one 0/0 device (as the kernel's overlayfs
makes them, ovl_whiteout): deleting lower names through unionfs and through the kernel leaves
uppers that each reads as the other does, and a later mount of either kind keeps deleting."""
import os
import stat

import pytest

from tests.integration.conftest import requires_daemon
from tests.mountutil import (have_kernel_overlay, kernel_overlay_mount, requires_fuse,
                             unionfs_mount)

pytestmark = [requires_fuse, requires_daemon,
              pytest.mark.skipif(not have_kernel_overlay(),
                                 reason="needs root and the kernel's overlayfs (the reference)")]

N = 40


def _lower(stack):
    d = stack.lower / "d"
    d.mkdir()
    for i in range(N):
        (d / ("f%02d" % i)).write_bytes(b"x")


def _delete(mnt, names):
    for n in names:
        os.unlink(os.path.join(mnt, "d", n))


def _whiteouts(upper):
    out = {}
    for n in sorted(os.listdir(os.path.join(upper, "d"))):
        st = os.lstat(os.path.join(upper, "d", n))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, n
        out[n] = st
    return out


def test_unionfs_whiteouts_share_an_inode_and_read_the_same_on_the_kernel(stack):
    _lower(stack)
    first = ["f%02d" % i for i in range(0, N, 2)]
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
        _delete(mnt, first)
        seen = sorted(os.listdir(os.path.join(mnt, "d")))
    wh = _whiteouts(stack.upper)
    assert sorted(wh) == first
    assert len({st.st_ino for st in wh.values()}) == 1
    assert next(iter(wh.values())).st_nlink >= len(first)
    kmnt = stack.base / "kmnt"
    with kernel_overlay_mount([stack.lower], stack.upper, stack.work, kmnt) as km:
        assert sorted(os.listdir(os.path.join(km, "d"))) == seen
        _delete(km, ["f01"])  # the kernel adds its own whiteouts to the same upper
    with unionfs_mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
        assert sorted(os.listdir(os.path.join(mnt, "d"))) == [n for n in seen if n != "f01"]
        _delete(mnt, ["f03", "f05"])  # a new mount, a new shared inode
        left = sorted(os.listdir(os.path.join(mnt, "d")))
    assert left == [n for n in seen if n not in ("f01", "f03", "f05")]
    wh = _whiteouts(stack.upper)
    assert wh["f03"].st_ino == wh["f05"].st_ino != wh["f00"].st_ino


def test_deletes_through_both_leave_the_same_names(tmp_path):
    from tests.integration.conftest import Stack
    names = ["f%02d" % i for i in range(0, N, 3)]
    results = []
    for kind in ("unionfs", "kernel"):
        stack = Stack(tmp_path / kind)
        _lower(stack)
        mount = unionfs_mount if kind == "unionfs" else kernel_overlay_mount
        with mount([stack.lower], stack.upper, stack.work, stack.mnt) as mnt:
            _delete(mnt, names)
            with pytest.raises(FileNotFoundError):
                os.unlink(os.path.join(mnt, "d", names[0]))
            results.append((sorted(os.listdir(os.path.join(mnt, "d"))),
                            sorted(_whiteouts(stack.upper))))
    assert results[0] == results[1]
