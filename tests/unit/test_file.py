"""Attributes and xattrs (core/file.py) through the union, on real directories."""
import errno
import os
import stat

import pytest

from tests.unit.helpers import errno_of, make_union, needs_root, xget, xset

pytestmark = needs_root


# ---- attributes and xattrs --------------------------------------------------------------------


def test_getxattr_listxattr_hide_overlay_private(env):
    u, lower, upper, _ = env
    xset(lower + "/d", "trusted.overlay.opaque", b"x")
    xset(lower + "/d", "user.overlay.whatever", b"1")
    xset(lower + "/d", "user.visible", b"v")
    u2 = make_union([lower], upper, os.path.dirname(u.copier.workdir))
    assert u2.listxattr("/d") == ["user.visible"]
    assert u2.getxattr("/d", "user.visible") == b"v"
    with pytest.raises(OSError) as e:
        u2.getxattr("/d", "trusted.overlay.opaque")
    assert errno_of(e) == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        u2.setxattr("/f", "trusted.overlay.opaque", b"y", 0)
    assert errno_of(e) == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        u2.removexattr("/d", "trusted.overlay.opaque")
    assert errno_of(e) == errno.EOPNOTSUPP


def test_listxattr_after_copy_up_hides_origin_ino(env):
    u, lower, upper, _ = env
    u.setxattr("/f", "user.k", b"v", 0)
    assert u.stats["copyups"] == 1
    assert xget(upper + "/f", "trusted.overlay.unionfs.ino") is not None
    assert u.listxattr("/f") == ["user.k"]
    assert u.getxattr("/f", "user.k") == b"v"


def test_removexattr_absent_name_does_not_copy_up(env):
    u = env[0]
    with pytest.raises(OSError) as e:
        u.removexattr("/f", "user.absent")
    assert errno_of(e) == errno.ENODATA
    assert u.stats["copyups"] == 0


def test_chmod_chown_utimens_copy_up(env):
    u, lower, upper, _ = env
    u.chmod("/f", 0o4700)
    assert stat.S_IMODE(os.lstat(upper + "/f").st_mode) == 0o4700
    assert stat.S_IMODE(os.lstat(lower + "/f").st_mode) != 0o4700
    u.chown("/d/a", 55, 66)
    st = os.lstat(upper + "/d/a")
    assert (st.st_uid, st.st_gid) == (55, 66)
    u.utimens("/other/x", None, 7_000_000_001)
    assert os.lstat(upper + "/other/x").st_mtime_ns == 7_000_000_001
    with pytest.raises(OSError) as e:
        u.chmod("/ln", 0o600)
    assert errno_of(e) == errno.EOPNOTSUPP


# ---- an open file whose name is gone (detach) -------------------------------------------------

def test_open_file_detached_counts_its_links_as_its_names(env):
    """fstat through the handle and stat of the name the server keeps agree, and count only
    the links users made (issue 14: the FUSE server subtracted one itself)."""
    u, lower, upper, _ = env
    u.release(u.create("/up", 0o644, os.O_WRONLY, (0, 0)))
    u.link("/up", "/up2")
    hf, hup, hup2 = (u.open(p, os.O_RDONLY) for p in ("/f", "/up", "/up2"))
    u.detach("/f", "/\0detached-1")     # a lower file: the lower keeps its link
    u.detach("/up", "/\0detached-2")    # an upper file: into the work dir
    assert (u.fgetattr(hf)[2], u.getattr("/\0detached-1")[2]) == (1, 1)
    assert (u.fgetattr(hup)[2], u.getattr("/\0detached-2")[2]) == (1, 1)  # /up2 is left
    assert (u.fgetattr(hup2)[2], u.getattr("/up2")[2]) == (1, 1)
    u.unlink("/up2")
    assert (u.fgetattr(hup)[2], u.getattr("/\0detached-2")[2]) == (0, 0)
    for h in (hf, hup, hup2):
        u.release(h)
