import os
import stat

import pytest

from unionfs.core import whiteout as wo
from unionfs.core.layers import WH, WHITEOUT, Hit, Layer, LowerLayer, join
from tests.unit.helpers import mkdir, needs_root, whiteout, write, xset


def test_join():
    assert join("", "a") == "a"
    assert join("a", "b") == "a/b"


@pytest.fixture
def lower(tmp_path):
    """One lower layer holding every kind of entry the reader must understand."""
    root = mkdir(tmp_path / "L")
    d = mkdir(tmp_path / "L/d")
    write(tmp_path / "L/d/file", b"hello")
    mkdir(tmp_path / "L/d/sub")
    os.symlink("file", str(tmp_path / "L/d/link"))
    os.symlink("/etc", str(tmp_path / "L/etc"))
    os.symlink("/etc/passwd", str(tmp_path / "L/d/hostlink"))
    whiteout(tmp_path / "L/d/gone")                # kernel whiteout
    write(tmp_path / "L/d/.wh.oci")                # OCI whiteout of "oci"
    # OCI opaque directory
    mkdir(tmp_path / "L/opq/inner")
    write(tmp_path / "L/opq/.wh..wh..opq")
    # directory with xattr whiteouts
    x = mkdir(tmp_path / "L/xw")
    xset(x, "trusted.overlay.opaque", b"x")
    xwh = write(tmp_path / "L/xw/xgone")
    xset(xwh, "trusted.overlay.whiteout", b"")
    write(tmp_path / "L/xw/empty")                 # zero-size, no xattr: a real file
    write(tmp_path / "L/xw/data", b"1")
    # an xattr-marked empty file in a directory WITHOUT the opaque=x marker is an ordinary file
    write_no = write(tmp_path / "L/d/notwh")
    xset(write_no, "trusted.overlay.whiteout", b"")
    return root


def _mode(hit):
    return stat.S_IFMT(hit.st.st_mode)


@needs_root
def test_lower_find_kinds(lower):
    L = LowerLayer(lower, 1)
    h = L.find("", "d")
    assert isinstance(h, Hit) and h.is_dir and not h.opaque and h.redirect is None
    f = L.find("d", "file")
    assert _mode(f) == stat.S_IFREG and f.st.st_size == 5 and not f.is_dir
    assert L.find("d", "sub").is_dir
    assert _mode(L.find("d", "link")) == stat.S_IFLNK
    assert L.find("d", "gone") is WHITEOUT
    assert L.find("d", "oci") is WHITEOUT
    assert L.find("d", ".wh.oci") is None          # the marker itself is invisible
    assert L.find("d", "missing") is None
    assert _mode(L.find("d", "notwh")) == stat.S_IFREG


@needs_root
def test_lower_list_kinds(lower):
    L = LowerLayer(lower, 1)
    got = dict(L.list("d"))
    assert got == {
        "file": stat.S_IFREG, "sub": stat.S_IFDIR, "link": stat.S_IFLNK,
        "hostlink": stat.S_IFLNK, "gone": WH, "oci": WH, "notwh": stat.S_IFREG,
    }
    assert not any(n.startswith(".wh.") for n in got)


def test_lower_find_and_list_in_a_missing_or_non_dir(tmp_path):
    """_dir() returns None for an absent directory (ENOENT/ENOTDIR), so find() gives None and
    list() gives []."""
    root = mkdir(tmp_path / "L")
    write(tmp_path / "L/file")
    L = LowerLayer(root, 1)
    assert L.find("file", "x") is None
    assert L.list("file") == []
    assert L.find("missingdir", "x") is None
    assert L.list("missingdir") == []


@needs_root
def test_oci_opaque_marker(lower):
    L = LowerLayer(lower, 1)
    h = L.find("", "opq")
    assert h.is_dir and h.opaque
    assert L.markers("opq")[0] is True
    assert dict(L.list("opq")) == {"inner": stat.S_IFDIR}


@needs_root
def test_xattr_whiteouts(lower):
    L = LowerLayer(lower, 1)
    h = L.find("", "xw")
    assert h.is_dir and not h.opaque            # opaque=x is not opaque
    assert L.markers("xw") == (False, None, True)
    assert L.find("xw", "xgone") is WHITEOUT
    assert _mode(L.find("xw", "empty")) == stat.S_IFREG
    assert dict(L.list("xw")) == {"xgone": WH, "empty": stat.S_IFREG, "data": stat.S_IFREG}


@needs_root
def test_user_namespace_markers_are_read_in_lowers(tmp_path):
    root = mkdir(tmp_path / "L")
    d = mkdir(tmp_path / "L/d")
    xset(d, "user.overlay.opaque", b"y")
    r = mkdir(tmp_path / "L/r")
    xset(r, "user.overlay.redirect", b"orig")
    L = LowerLayer(root, 1)
    assert L.find("", "d").opaque
    assert L.find("", "r").redirect == "orig"
    # the upper reads the kernel's default (trusted) namespace only
    U = Layer(root, 0)
    assert not U.find("", "d").opaque
    assert U.find("", "r").redirect is None


@needs_root
def test_upper_find_and_list(tmp_path):
    root = mkdir(tmp_path / "U")
    write(tmp_path / "U/f", b"x")
    whiteout(tmp_path / "U/w")
    d = mkdir(tmp_path / "U/d")
    xset(d, "trusted.overlay.opaque", b"y")
    xset(d, "trusted.overlay.redirect", b"/a/b")
    U = Layer(root, 0)
    assert U.writable
    assert U.find("", "w") is WHITEOUT
    assert _mode(U.find("", "f")) == stat.S_IFREG
    h = U.find("", "d")
    assert h.is_dir and h.opaque and h.redirect == "/a/b"
    assert U.find("", "nope") is None
    assert dict(U.list("")) == {"f": stat.S_IFREG, "w": WH, "d": stat.S_IFDIR}
    # the upper is read live
    write(tmp_path / "U/g")
    assert U.find("", "g") is not None


def test_lower_listing_is_cached(tmp_path):
    root = mkdir(tmp_path / "L")
    write(tmp_path / "L/a")
    L = LowerLayer(root, 1)
    assert L.find("", "a") is not None
    write(tmp_path / "L/b")     # behind the layer's back: not seen (lowers are read once)
    assert L.find("", "b") is None
    assert dict(L.list("")) == {"a": stat.S_IFREG}


def test_lower_listing_cache_is_bounded(tmp_path):
    root = mkdir(tmp_path / "L")
    for i in range(5):
        write(tmp_path / ("L/d%d/f" % i))
    L = LowerLayer(root, 1, max_entries=3)
    for i in range(5):
        assert L.find("d%d" % i, "f") is not None
        assert L._entries <= 3
        assert len(L._dirs) <= 3


# ---- symlinks are never followed --------------------------------------------------------------

def test_layer_symlink_to_host_dir_is_reported_as_symlink(tmp_path):
    root = mkdir(tmp_path / "L")
    os.symlink("/etc", str(tmp_path / "L/etc"))
    for layer in (LowerLayer(root, 1), Layer(root, 0)):
        h = layer.find("", "etc")
        assert isinstance(h, Hit)
        assert stat.S_ISLNK(h.st.st_mode)
        assert not h.is_dir
        assert dict(layer.list("")) == {"etc": stat.S_IFLNK}


@pytest.mark.parametrize("cls", [LowerLayer, Layer])
def test_find_through_a_symlinked_dir_does_not_read_the_host(tmp_path, cls):
    """A layer's `etc -> /etc` must never be listed or looked through (the module promises that
    nothing a layer contains can send the daemon outside its layer directories)."""
    assert os.path.exists("/etc/passwd")
    root = mkdir(tmp_path / "L")
    os.symlink("/etc", str(tmp_path / "L/etc"))
    layer = cls(root, 1) if cls is LowerLayer else cls(root, 0)
    hit = layer.find("etc", "passwd")
    assert hit is None, "host file /etc/passwd seen through the layer symlink etc -> /etc"


def test_lower_list_through_a_symlinked_dir_is_empty(tmp_path):
    root = mkdir(tmp_path / "L")
    os.symlink("/etc", str(tmp_path / "L/etc"))
    assert LowerLayer(root, 1).list("etc") == []


def test_walk_does_not_follow_a_symlinked_component(tmp_path):
    root = mkdir(tmp_path / "L")
    os.symlink("/etc", str(tmp_path / "L/etc"))
    for layer in (LowerLayer(root, 1), Layer(root, 0)):
        hit, stop = layer.walk("etc/passwd")
        assert hit is None and stop is True
        hit, stop = layer.walk("etc")
        assert stat.S_ISLNK(hit.st.st_mode)


# ---- walk --------------------------------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("cls", [LowerLayer, Layer])
def test_walk_stop_rules(tmp_path, cls):
    root = mkdir(tmp_path / "L")
    write(tmp_path / "L/a/b/c", b"c")
    whiteout(tmp_path / "L/wh")
    write(tmp_path / "L/file")
    o = mkdir(tmp_path / "L/opq/x")
    xset(str(tmp_path / "L/opq"), "trusted.overlay.opaque", b"y")
    layer = cls(root, 1) if cls is LowerLayer else cls(root, 0)

    hit, stop = layer.walk("a/b/c")
    assert hit.st.st_size == 1 and stop is False
    hit, stop = layer.walk("/a/b/")            # slashes are ignored
    assert hit.is_dir and stop is False
    # missing: not found, lower layers may still be searched
    assert layer.walk("a/nope/c") == (None, False)
    assert layer.walk("nope") == (None, False)
    # intermediate whiteout: stop
    assert layer.walk("wh/x") == (None, True)
    # final whiteout: stop
    assert layer.walk("wh") == (None, True)
    # intermediate non-directory: stop
    assert layer.walk("file/x") == (None, True)
    # intermediate opaque directory: the hit is returned, but lowers must not be searched
    hit, stop = layer.walk("opq/x")
    assert hit.is_dir and stop is True
    assert layer.walk("opq/nothing") == (None, True)
    # a final opaque directory is reported through the hit, not through stop
    hit, stop = layer.walk("opq")
    assert hit.opaque and stop is False
    assert o  # silence


def test_walk_ignores_dot_dot(tmp_path):
    root = mkdir(tmp_path / "L")
    mkdir(tmp_path / "L/a")
    write(tmp_path / "secret", b"outside")
    L = LowerLayer(root, 1)
    hit, _stop = L.walk("a/../../secret")
    assert hit is None
