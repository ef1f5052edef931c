"""The runner itself: it must report a difference in outcomes, merged trees, upper layouts and
cross mounts, and must catch a modified lower. (A differential tier that cannot fail is useless.)"""
import os

import pytest

from tests.differential._diff import (DIFFERENTIAL, SELF_CHECK, layers, P,
                                      run_differential, upper_layout, write)

pytestmark = DIFFERENTIAL + [pytest.mark.skipif(
    SELF_CHECK, reason="needs two different filesystems (UNIONFS_DIFF_SELF_CHECK is set)")]


def _fstype(mnt):
    mnt = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                return fields[fields.index("-") + 1]
    return None


def test_runner_reports_every_kind_of_difference(tmp_path):
    build = layers({"f": b"lower", "g": b"g"})

    def scenario(mnt):
        fuse = _fstype(mnt).startswith("fuse")
        if fuse:
            write(P(mnt, "f"), b"changed only on unionfs")    # copy-up + different data
            write(P(mnt, "extra"), b"x")                       # extra upper entry
        return [_fstype(mnt).split(".")[0]]

    res = run_differential(tmp_path, build, scenario, check=False)
    text = "\n".join(res.problems)
    assert res.kernel.outcomes == ["overlay"] and res.unionfs.outcomes == ["fuse"]
    assert "operation outcomes differ" in text
    assert "merged trees differ" in text
    assert "upper on-disk layouts differ" in text
    assert "the kernel mounting UNIONFS's upper shows a different tree" in text
    assert "unionfs mounting the KERNEL's upper" not in text      # that one agrees


def test_runner_catches_lower_modification(tmp_path):
    build = layers({"f": b"lower"})
    lowers = []

    def build_and_remember(root):
        lowers.extend(build(root))
        return lowers

    def scenario(mnt):
        if _fstype(mnt).startswith("fuse"):
            with open(os.path.join(lowers[0], "f"), "ab") as f:   # behind both systems' backs
                f.write(b"!")
        return []

    res = run_differential(tmp_path, build_and_remember, scenario, check=False,
                           cross=False)
    assert any("lower layer 0 was modified" in p for p in res.problems)


def test_upper_layout_classifies_entries(tmp_path):
    up = str(tmp_path / "u")
    os.makedirs(up + "/o")
    os.makedirs(up + "/r")
    os.setxattr(up + "/o", "trusted.overlay.opaque", b"y")
    os.setxattr(up + "/r", "trusted.overlay.redirect", b"/x")
    os.mknod(up + "/w", 0o020000, os.makedev(0, 0))
    os.symlink("t", up + "/l")
    assert upper_layout(up) == {".": "dir", "o": "dir+opaque", "r": "dir+redirect",
                                "w": "whiteout", "l": "symlink"}
