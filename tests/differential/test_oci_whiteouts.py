"""OCI/aufs whiteouts in lower layers: ``.wh.NAME`` hides NAME in the layers below and is itself
invisible; ``.wh..wh..opq`` makes its directory opaque and is invisible.

The kernel's overlayfs does not understand these forms, so this is not differential: unionfs's
results are checked against what the OCI image spec says they mean.
"""
import os
import stat

import pytest

from tests.differential._diff import (Dir, attempt, build_layer, ls, P, read, upper_layout,
                                      write)
from tests.mountutil import requires_fuse, snapshot, unionfs_mount

pytestmark = [pytest.mark.fuse, requires_fuse, pytest.mark.timeout(120)]

EMPTY = b""


def _mount(tmp_path, *specs):
    lowers = [build_layer(os.path.join(str(tmp_path), "L%d" % i), s) for i, s in enumerate(specs)]
    upper, work, mnt = (os.path.join(str(tmp_path), n) for n in ("upper", "work", "mnt"))
    os.makedirs(upper)
    os.makedirs(work)
    return lowers, unionfs_mount(lowers, upper, work, mnt), upper, mnt


def test_wh_file_hides_lower_name_and_is_invisible(tmp_path):
    lowers, cm, upper, mnt = _mount(
        tmp_path,
        {".wh.x": EMPTY, "d/.wh.y": EMPTY, ".wh.gonedir": EMPTY, "keep": b"k"},
        {"x": b"hidden", "d/y": b"hidden", "d/z": b"z", "gonedir/c": b"c", "gonedir2/c": b"c2"},
    )
    with cm:
        assert ls(mnt) == ["d", "gonedir2", "keep"]
        assert ls(P(mnt, "d")) == ["z"]
        for rel in ("x", ".wh.x", "d/y", "d/.wh.y", "gonedir", "gonedir/c", ".wh.gonedir"):
            assert attempt(os.lstat, P(mnt, rel)) == "ENOENT", rel
        with os.scandir(mnt) as it:
            assert sorted(e.name for e in it) == ["d", "gonedir2", "keep"]
        snap = snapshot(mnt)
        assert not any(os.path.basename(k).startswith(".wh.") for k in snap)
        assert sorted(snap) == [".", "d", "d/z", "gonedir2", "gonedir2/c", "keep"]


def test_wh_in_middle_layer_hides_only_below(tmp_path):
    lowers, cm, upper, mnt = _mount(
        tmp_path,
        {"x": b"top x", "d/a": b"top a"},
        {".wh.x": EMPTY, "d/.wh.a": EMPTY, "d/.wh.b": EMPTY, ".wh.y": EMPTY},
        {"x": b"bottom x", "y": b"bottom y", "d/a": b"bottom a", "d/b": b"bottom b",
         "d/c": b"bottom c"},
    )
    with cm:
        assert read(P(mnt, "x")) == b"top x"
        assert read(P(mnt, "d/a")) == b"top a"
        assert attempt(os.lstat, P(mnt, "y")) == "ENOENT"
        assert ls(P(mnt, "d")) == ["a", "c"]
        assert ls(mnt) == ["d", "x"]


def test_wh_opq_makes_dir_opaque_and_is_invisible(tmp_path):
    lowers, cm, upper, mnt = _mount(
        tmp_path,
        {"o/own": b"own", "o/sub/s": b"s"},
        {"o/.wh..wh..opq": EMPTY, "o/mid": b"mid", "o/sub/ms": b"ms"},
        {"o/bottom": b"bottom", "o/own": b"shadowed", "o/sub/bs": b"bs", "other": b"other"},
    )
    with cm:
        assert ls(P(mnt, "o")) == ["mid", "own", "sub"]
        assert ls(P(mnt, "o/sub")) == ["ms", "s"]
        assert attempt(os.lstat, P(mnt, "o/bottom")) == "ENOENT"
        assert attempt(os.lstat, P(mnt, "o/.wh..wh..opq")) == "ENOENT"
        assert attempt(os.lstat, P(mnt, "o/sub/bs")) == "ENOENT"
        assert read(P(mnt, "o/own")) == b"own"
        assert ls(mnt) == ["o", "other"]


def test_wh_opq_in_top_lower_hides_everything_below(tmp_path):
    lowers, cm, upper, mnt = _mount(
        tmp_path,
        {"o": Dir(mode=0o750), "o/.wh..wh..opq": EMPTY},
        {"o/a": b"a", "o/b/c": b"c"},
    )
    with cm:
        assert ls(P(mnt, "o")) == []
        assert stat.S_IMODE(os.stat(P(mnt, "o")).st_mode) == 0o750
        assert attempt(os.rmdir, P(mnt, "o")) is None      # empty: removable
        assert attempt(os.lstat, P(mnt, "o")) == "ENOENT"
        assert ls(mnt) == []
    assert upper_layout(upper).get("o") == "whiteout"


def test_modifications_over_oci_lowers_write_kernel_format(tmp_path):
    """Through the mount the merged view behaves as usual, and what unionfs writes to the upper
    is the kernel's format (char 0/0 whiteouts, opaque xattr), never .wh. files."""
    lowers, cm, upper, mnt = _mount(
        tmp_path,
        {".wh.x": EMPTY, "d/.wh..wh..opq": EMPTY, "d/a": b"a", "e/.wh.gone": EMPTY},
        {"x": b"hidden", "d/hidden": b"h", "e/gone": b"g", "e/f": b"f"},
    )
    with cm:
        # create over an OCI-whited-out name
        assert attempt(write, P(mnt, "x"), b"new x", os.O_WRONLY | os.O_CREAT | os.O_EXCL) == 5
        assert read(P(mnt, "x")) == b"new x"
        # unlink a lower file, rmdir an emptied OCI-opaque dir, recreate it
        assert attempt(os.unlink, P(mnt, "e/f")) is None
        assert ls(P(mnt, "e")) == []
        assert attempt(os.unlink, P(mnt, "d/a")) is None
        assert attempt(os.rmdir, P(mnt, "d")) is None
        assert attempt(os.mkdir, P(mnt, "d")) is None
        assert ls(P(mnt, "d")) == []
        assert attempt(os.lstat, P(mnt, "d/hidden")) == "ENOENT"
        assert ls(mnt) == ["d", "e", "x"]
    lay = upper_layout(upper)
    assert not any(os.path.basename(k).startswith(".wh.") for k in lay), lay
    assert lay.get("e/f") == "whiteout"
    assert lay.get("x") == "file"
    assert lay.get("d") == "dir+opaque"


def test_rename_dir_keeps_oci_markers_effect(tmp_path):
    """A lower dir with .wh. entries renamed through the mount: the names stay hidden."""
    lowers, cm, upper, mnt = _mount(
        tmp_path,
        {"src/.wh.y": EMPTY, "src/keep": b"k", "opq/.wh..wh..opq": EMPTY, "opq/mine": b"m"},
        {"src/y": b"hidden", "src/z": b"z", "opq/below": b"below"},
    )
    with cm:
        assert attempt(os.rename, P(mnt, "src"), P(mnt, "dst")) is None
        assert attempt(os.rename, P(mnt, "opq"), P(mnt, "opq2")) is None
        assert ls(P(mnt, "dst")) == ["keep", "z"]
        assert ls(P(mnt, "opq2")) == ["mine"]
        assert ls(mnt) == ["dst", "opq2"]
        assert read(P(mnt, "dst/z")) == b"z"


def test_kernel_and_oci_whiteouts_mixed(tmp_path):
    from tests.differential._diff import Whiteout
    lowers, cm, upper, mnt = _mount(
        tmp_path,
        {"a": Whiteout(), ".wh.b": EMPTY, "d": Dir(opaque=True), "d/t": b"t"},
        {"a": b"a", "b": b"b", "c": b"c", "d/x": b"x", "e/.wh..wh..opq": EMPTY},
        {"e/below": b"below", "e/z": b"z"},
    )
    with cm:
        assert ls(mnt) == ["c", "d", "e"]
        assert ls(P(mnt, "d")) == ["t"]
        assert ls(P(mnt, "e")) == []
