import os
import stat

import pytest

from unionfs.core import whiteout as wo
from tests.unit.helpers import mkdir, needs_root, whiteout, write, xset, xget


# ---- is_whiteout_stat ------------------------------------------------------------------------

@needs_root
def test_char_0_0_is_a_whiteout(tmp_path):
    p = whiteout(tmp_path / "w")
    assert wo.is_whiteout_stat(os.lstat(p))


@needs_root
def test_char_device_other_than_0_0_is_not_a_whiteout(tmp_path):
    p = str(tmp_path / "null")
    os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    assert not wo.is_whiteout_stat(os.lstat(p))


@needs_root
def test_block_device_0_0_is_not_a_whiteout(tmp_path):
    p = str(tmp_path / "blk")
    os.mknod(p, stat.S_IFBLK | 0o600, os.makedev(0, 0))
    assert not wo.is_whiteout_stat(os.lstat(p))


def test_regular_dir_symlink_fifo_are_not_whiteouts(tmp_path):
    f = write(tmp_path / "f")
    d = mkdir(tmp_path / "d")
    s = str(tmp_path / "s")
    os.symlink("/dev/null", s)  # a symlink to a char device: lstat must be used, not followed
    p = str(tmp_path / "p")
    os.mkfifo(p)
    for path in (f, d, s, p):
        assert not wo.is_whiteout_stat(os.lstat(path)), path


# ---- OCI names -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, target", [
    (".wh.x", "x"),
    (".wh..wh..opq", ""),
    (".wh..hidden", ".hidden"),
    (".wh.a.wh.b", "a.wh.b"),
    ("x", None),
    ("a.wh.x", None),
    (".w.x", None),
    ("wh.x", None),
    ("", None),
])
def test_oci_whiteout_target(name, target):
    assert wo.oci_whiteout_target(name) == target


@pytest.mark.parametrize("name, reserved", [
    (".wh.x", True),
    (".wh..wh..opq", True),
    (".wh.", True),
    ("x.wh.", False),
    (".whx", False),
    ("wh.x", False),
    (".hidden", False),
])
def test_is_reserved_name(name, reserved):
    assert wo.is_reserved_name(name) is reserved


# ---- directory markers -----------------------------------------------------------------------

def test_plain_dir_has_no_markers(tmp_path):
    assert wo.dir_markers(mkdir(tmp_path / "d")) == (False, None, False)


@needs_root
@pytest.mark.parametrize("ns", [wo.TRUSTED, wo.USER])
def test_opaque_y(tmp_path, ns):
    d = mkdir(tmp_path / "d")
    xset(d, ns + "opaque", b"y")
    assert wo.dir_markers(d) == (True, None, False)


@needs_root
@pytest.mark.parametrize("ns", [wo.TRUSTED, wo.USER])
def test_opaque_x_means_xattr_whiteouts_not_opaque(tmp_path, ns):
    d = mkdir(tmp_path / "d")
    xset(d, ns + "opaque", b"x")
    assert wo.dir_markers(d) == (False, None, True)


@needs_root
@pytest.mark.parametrize("ns", [wo.TRUSTED, wo.USER])
def test_whiteouts_xattr_marks_xattr_whiteouts(tmp_path, ns):
    d = mkdir(tmp_path / "d")
    xset(d, ns + "whiteouts", b"")
    assert wo.dir_markers(d) == (False, None, True)


@needs_root
@pytest.mark.parametrize("ns", [wo.TRUSTED, wo.USER])
def test_other_opaque_values_are_neither(tmp_path, ns):
    d = mkdir(tmp_path / "d")
    xset(d, ns + "opaque", b"n")
    assert wo.dir_markers(d) == (False, None, False)


@needs_root
@pytest.mark.parametrize("ns", [wo.TRUSTED, wo.USER])
@pytest.mark.parametrize("value", ["orig", "/a/b"])
def test_redirect(tmp_path, ns, value):
    d = mkdir(tmp_path / "d")
    xset(d, ns + "redirect", os.fsencode(value))
    assert wo.dir_markers(d) == (False, value, False)


@needs_root
def test_trusted_redirect_wins_over_user(tmp_path):
    d = mkdir(tmp_path / "d")
    xset(d, wo.TRUSTED + "redirect", b"t")
    xset(d, wo.USER + "redirect", b"u")
    assert wo.dir_markers(d)[1] == "t"
    # only the namespaces asked for are read
    assert wo.dir_markers(d, (wo.USER,))[1] == "u"


@needs_root
def test_markers_restricted_to_the_given_namespace(tmp_path):
    d = mkdir(tmp_path / "d")
    xset(d, wo.USER + "opaque", b"y")
    assert wo.dir_markers(d, (wo.TRUSTED,)) == (False, None, False)
    assert wo.dir_markers(d, (wo.USER,)) == (True, None, False)


@needs_root
def test_xattr_whiteout_file(tmp_path):
    f = write(tmp_path / "f")
    assert not wo.is_xattr_whiteout(f, os.lstat(f))
    xset(f, wo.TRUSTED + "whiteout", b"")
    assert wo.is_xattr_whiteout(f, os.lstat(f))
    # a non-empty file is never an xattr whiteout, even with the xattr
    g = write(tmp_path / "g", b"data")
    xset(g, wo.TRUSTED + "whiteout", b"")
    assert not wo.is_xattr_whiteout(g, os.lstat(g))


@needs_root
def test_writer_round_trips(tmp_path):
    w = wo.Writer(wo.TRUSTED)
    d = mkdir(tmp_path / "d")
    w.set_opaque(d)
    assert xget(d, "trusted.overlay.opaque") == b"y"
    w.set_redirect(d, "/x/y")
    assert w.get_redirect(d) == "/x/y"
    assert xget(d, "trusted.overlay.redirect") == b"/x/y"
    f = write(tmp_path / "f")
    assert w.get_origin_ino(f) is None
    w.set_origin_ino(f, 123456789)
    assert w.get_origin_ino(f) == 123456789
    xset(f, w.ino_name, b"garbage")
    assert w.get_origin_ino(f) is None
    p = str(tmp_path / "wh")
    w.make_whiteout(p)
    assert wo.is_whiteout_stat(os.lstat(p))


def test_private_xattr_names():
    assert wo.is_private_xattr("trusted.overlay.opaque")
    assert wo.is_private_xattr("user.overlay.redirect")
    assert not wo.is_private_xattr("user.mine")
    assert not wo.is_private_xattr("trusted.overlayx")
    assert not wo.is_private_xattr("security.capability")


# ---- whiteouts share one inode (as the kernel's ovl_whiteout) ----------------------------------

def _lower_files(lower, n):
    for i in range(n):
        write(os.path.join(lower, "d", "f%d" % i), b"x")


@needs_root
def test_whiteouts_are_links_of_one_inode_kept_in_the_work_dir(tmp_path):
    from tests.unit.helpers import union_env
    u, lower, upper, work = union_env(tmp_path)
    _lower_files(lower, 5)
    for i in range(5):
        u.unlink("/d/f%d" % i)
    sts = [os.lstat(os.path.join(upper, "d", "f%d" % i)) for i in range(5)]
    assert all(wo.is_whiteout_stat(st) for st in sts)
    assert len({st.st_ino for st in sts}) == 1
    assert sts[0].st_nlink == 6  # the five and the work dir's own name
    assert sorted(os.listdir(os.path.join(upper, "d"))) == ["f%d" % i for i in range(5)]


@needs_root
def test_a_whiteout_inode_full_of_links_gives_way_to_a_new_one(tmp_path, monkeypatch):
    import errno
    from tests.unit.helpers import union_env
    u, lower, upper, work = union_env(tmp_path)
    _lower_files(lower, 3)
    u.unlink("/d/f0")
    real_link, calls = os.link, []

    def link(*a, **kw):  # the filesystem's link limit reached once
        calls.append(a)
        if len(calls) == 1:
            raise OSError(errno.EMLINK, "Too many links")
        return real_link(*a, **kw)

    monkeypatch.setattr(wo.os, "link", link)
    u.unlink("/d/f1")
    u.unlink("/d/f2")
    ino = [os.lstat(os.path.join(upper, "d", n)).st_ino for n in ("f0", "f1", "f2")]
    assert ino[0] != ino[1] == ino[2]
    assert all(wo.is_whiteout_stat(os.lstat(os.path.join(upper, "d", n)))
               for n in ("f0", "f1", "f2"))
    assert len(os.listdir(os.path.join(work, "work"))) == 1  # the full one's name went


@needs_root
def test_a_filesystem_that_will_not_link_gets_a_device_per_whiteout(tmp_path, monkeypatch):
    import errno
    from tests.unit.helpers import union_env
    u, lower, upper, work = union_env(tmp_path)
    _lower_files(lower, 2)

    def link(*a, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(wo.os, "link", link)
    u.unlink("/d/f0")
    u.unlink("/d/f1")
    sts = [os.lstat(os.path.join(upper, "d", n)) for n in ("f0", "f1")]
    assert all(wo.is_whiteout_stat(st) and st.st_nlink == 1 for st in sts)


@needs_root
def test_a_file_swapped_in_for_the_shared_whiteout_is_never_linked(tmp_path):
    from tests.unit.helpers import union_env
    u, lower, upper, work = union_env(tmp_path)
    _lower_files(lower, 2)
    u.unlink("/d/f0")
    wdir = os.path.join(work, "work")
    (name,) = os.listdir(wdir)
    os.unlink(os.path.join(wdir, name))
    write(os.path.join(wdir, name), b"not a whiteout")  # the same name, another file
    u.unlink("/d/f1")
    st = os.lstat(os.path.join(upper, "d", "f1"))
    assert wo.is_whiteout_stat(st)
    assert st.st_ino == os.lstat(os.path.join(upper, "d", "f0")).st_ino


@needs_root
def test_a_shared_whiteout_is_not_made_over_an_existing_name(tmp_path):
    from tests.unit.helpers import union_env
    u, lower, upper, work = union_env(tmp_path)
    p = os.path.join(upper, "taken")
    write(p, b"mine")
    u.writer.make_whiteout(os.path.join(upper, "first"))  # so the next is a link
    with pytest.raises(FileExistsError):
        u.writer.make_whiteout(p)
    with open(p, "rb") as f:
        assert f.read() == b"mine"
