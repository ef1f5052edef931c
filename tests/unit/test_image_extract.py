"""Safe layer extraction: what survives, and what a hostile layer cannot do (no FUSE)."""
import os
import stat

import pytest

from unionfs.image.errors import ImageError
from unionfs.image.extract import extract_tar
from tests.mountutil import load_script

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod, security.*)")


fx = load_script("build_image_fixtures")
E = fx.E


def extract(tmp_path, entries):
    tar = tmp_path / "layer.tar"
    tar.write_bytes(fx.layer_tar(entries))
    root = tmp_path / "root"
    root.mkdir()
    return extract_tar(str(tar), str(root)), str(root)


def tree(root):
    out = set()
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


@needs_root
def test_base_layer_survives(tmp_path):
    layers = fx.sample_layers()
    res, root = extract(tmp_path, layers[0])
    p = lambda r: os.path.join(root, r)  # noqa: E731
    st = os.lstat(p("bin/tool"))
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert os.getxattr(p("bin/tool"), "security.capability") == fx.CAP
    assert os.getxattr(p("bin/tool"), "user.comment") == b"a tool"
    assert os.lstat(p("bin/tool-hard")).st_ino == st.st_ino and st.st_nlink == 2
    assert os.readlink(p("bin/sh")) == "tool"
    assert stat.S_IMODE(os.lstat(p("bin/su")).st_mode) == 0o4755
    assert os.lstat(p("etc/precise")).st_mtime_ns == fx.EPOCH * 10**9 + 123456789
    assert os.lstat(p("etc/passwd")).st_mtime_ns == fx.EPOCH * 10**9
    h = os.lstat(p("home/user"))
    assert (h.st_uid, h.st_gid, stat.S_IMODE(h.st_mode)) == (1000, 1000, 0o700)
    assert os.lstat(p("home/user")).st_mtime_ns == fx.EPOCH * 10**9
    d = os.lstat(p("dev/null"))
    assert stat.S_ISCHR(d.st_mode) and (os.major(d.st_rdev), os.minor(d.st_rdev)) == (1, 3)
    assert stat.S_ISFIFO(os.lstat(p("var/fifo")).st_mode)
    assert os.path.isfile(p(fx.LONG)) and os.path.isfile(p("etc/na\u00efve"))
    assert stat.S_IMODE(os.lstat(p("var/log")).st_mode) == 0o750


def test_whiteouts_kept_as_files(tmp_path):
    res, root = extract(tmp_path, fx.sample_layers()[1])
    assert os.path.isfile(os.path.join(root, "etc/.wh.hostname"))
    assert os.path.isfile(os.path.join(root, "opt/old/.wh..wh..opq"))
    # written as a hard link with a stray link name: still just a whiteout file
    wh = os.lstat(os.path.join(root, "usr/lib/.wh.libx.so"))
    assert stat.S_ISREG(wh.st_mode) and wh.st_nlink == 1 and wh.st_size == 0


def test_aufs_metadata_skipped(tmp_path):
    res, root = extract(tmp_path, [E(".wh..wh.plnk", "dir"), E(".wh..wh.plnk/123.4", data=b"x"),
                                   E("a", data=b"a")])
    assert tree(root) == {"a"}


def test_sparse_and_large_data(tmp_path):
    data = os.urandom(3 << 20)
    res, root = extract(tmp_path, [E("big", data=data)])
    assert open(os.path.join(root, "big"), "rb").read() == data
    assert res.size == len(data)


def test_hard_link_to_a_name_replaced_later_keeps_content(tmp_path):
    # a link to an earlier name; a whiteout of that name in the same layer applies only below
    res, root = extract(tmp_path, [E("d", "dir"), E("d/f", data=b"one"), E("d/l", "hardlink", link="d/f"),
                                   E("d/f", "whiteout")])
    assert open(os.path.join(root, "d/l"), "rb").read() == b"one"


def test_repeated_directory_entry_sets_attributes(tmp_path):
    res, root = extract(tmp_path, [E("d/f", data=b"x"), E("d", "dir", mode=0o711)])
    assert stat.S_IMODE(os.lstat(os.path.join(root, "d")).st_mode) == 0o711


def test_overlay_xattrs_are_dropped(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("trusted.* needs root")
    res, root = extract(tmp_path, [E("d", "dir", xattrs={"trusted.overlay.opaque": b"y",
                                                         "user.ok": b"1"})])
    names = os.listxattr(os.path.join(root, "d"))
    assert "trusted.overlay.opaque" not in names and "user.ok" in names
    assert res.dropped_xattrs == 1


# ---- hostile layers --------------------------------------------------------------------------------

HOSTILE = {
    "dotdot": ([E("a/../../escape", data=b"x")], "'..'"),
    "absolute": ([E("/abs-escape", data=b"x")], "absolute"),
    "through-symlink": ([E("l", "symlink", link="/tmp"), E("l/escape", data=b"x")], "not a directory"),
    "through-rel-symlink": ([E("l", "symlink", link="../.."), E("l/escape", data=b"x")],
                            "not a directory"),
    "through-file": ([E("f", data=b"x"), E("f/escape", data=b"x")], "not a directory"),
    "hardlink-outside": ([E("h", "hardlink", link="../../etc/passwd")], "'..'"),
    "hardlink-absolute": ([E("h", "hardlink", link="/etc/passwd")], "absolute"),
    "hardlink-to-nothing": ([E("h", "hardlink", link="nothing")], "no earlier entry"),
    "hardlink-to-dir": ([E("d", "dir"), E("h", "hardlink", link="d")], "directory"),
    "duplicate": ([E("f", data=b"1"), E("f", data=b"2")], "duplicate"),
    "write-through-hardlink": ([E("f", data=b"1"), E("h", "hardlink", link="f"),
                                E("h", data=b"evil")], "duplicate"),
    "symlink-then-file": ([E("s", "symlink", link="/etc/passwd"), E("s", data=b"evil")], "duplicate"),
    "bare-whiteout": ([E("d", "dir"), dict(E("d/.wh.", data=b""), kind="file")], "bare whiteout"),
    "file-over-dir": ([E("d", "dir"), E("d", data=b"x")], "duplicate"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_refused(tmp_path, case):
    entries, msg = HOSTILE[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    before = set(os.listdir("/tmp")), os.lstat("/etc/passwd").st_mtime_ns
    with pytest.raises(ImageError) as e:
        extract(tmp_path, entries)
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert set(os.listdir(tmp_path)) == {"layer.tar", "root", "outside"}
    assert not os.path.exists("/abs-escape") and not os.path.exists("/tmp/escape")
    assert os.lstat("/etc/passwd").st_mtime_ns == before[1]
    assert open("/etc/passwd", "rb").read() != b"evil"


def test_corrupt_tar(tmp_path):
    t = tmp_path / "layer.tar"
    good = fx.layer_tar([E("a", data=b"a" * 5000)])
    t.write_bytes(good[:700])
    (tmp_path / "root").mkdir()
    with pytest.raises(ImageError):
        extract_tar(str(t), str(tmp_path / "root"))
