"""The union's front door end to end on real directories (no mount): resolution, reading, inode
numbers, read-only unions, several lowers."""
import errno
import os
import stat

import pytest

from unionfs.core.union import Union
from tests.unit.helpers import (OWNER, errno_of, layers, make_union, names, needs_root, read,
                                ucreate, uread, whiteout, write)

pytestmark = needs_root


# ---- reading -----------------------------------------------------------------------------------


def test_read_lower(env):
    u, lower, upper, _ = env
    assert uread(u, "/f") == b"lower data"
    assert uread(u, "/d/sub/b") == b"B"
    assert u.readlink("/ln") == "f"
    assert names(u, "/") == ["d", "f", "ln", "other"]
    assert names(u, "/d") == ["a", "sub"]
    assert os.listdir(upper) == []             # reading copies nothing up
    assert u.stats["copyups"] == 0


def test_missing_and_enotdir(env):
    u = env[0]
    assert u.lookup("/nope") is None
    with pytest.raises(OSError) as e:
        u.getattr("/nope")
    assert errno_of(e) == errno.ENOENT
    with pytest.raises(OSError) as e:
        u.lookup("/f/x")
    assert errno_of(e) == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        u.lookup("/nope/x")
    assert errno_of(e) == errno.ENOENT


def test_enametoolong(env):
    u = env[0]
    with pytest.raises(OSError) as e:
        u.lookup("/" + "n" * 256)
    assert errno_of(e) == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        u.mkdir("/" + "n" * 256, 0o755, OWNER)
    assert errno_of(e) == errno.ENAMETOOLONG
    assert u.lookup("/" + "n" * 255) is None


def test_symlink_in_layer_is_not_followed(tmp_path):
    (lower,), upper, work = layers(tmp_path)
    os.symlink("/etc", lower + "/etc")
    u = make_union([lower], upper, work)
    st, _ino, _n = u.getattr("/etc")
    assert stat.S_ISLNK(st.st_mode)
    assert u.readlink("/etc") == "/etc"
    with pytest.raises(OSError) as e:
        u.lookup("/etc/passwd")
    assert errno_of(e) == errno.ENOTDIR


# ---- read-only -------------------------------------------------------------------------------


def test_read_only_union(tmp_path):
    (lower,), _upper, _work = layers(tmp_path)
    write(lower + "/f", b"ro")
    write(lower + "/d/a", b"A")
    u = Union([lower])
    assert u.upper is None and u.copier is None
    assert uread(u, "/f") == b"ro"
    h = u.open("/f", os.O_RDONLY)
    u.release(h)
    ops = [
        lambda: u.open("/f", os.O_WRONLY),
        lambda: u.open("/f", os.O_RDONLY | os.O_TRUNC),
        lambda: u.create("/new", stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT, OWNER),
        lambda: u.create("/f", stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT, OWNER),
        lambda: u.mkdir("/nd", 0o755, OWNER),
        lambda: u.mknod("/p", stat.S_IFIFO | 0o644, 0, OWNER),
        lambda: u.symlink("/s", "f", OWNER),
        lambda: u.unlink("/f"),
        lambda: u.rmdir("/d"),
        lambda: u.rename("/f", "/g"),
        lambda: u.link("/f", "/g"),
        lambda: u.chmod("/f", 0o600),
        lambda: u.chown("/f", 1, 1),
        lambda: u.truncate("/f", 0),
        lambda: u.utimens("/f", 1, 1),
        lambda: u.setxattr("/f", "user.x", b"1", 0),
    ]
    for i, op in enumerate(ops):
        with pytest.raises(OSError) as e:
            op()
        assert errno_of(e) == errno.EROFS, i
    assert read(lower + "/f") == b"ro"
    assert sorted(os.listdir(lower)) == ["d", "f"]


def test_merged_dir_nlink_is_one(env):
    u = env[0]
    u.mkdir("/d/x", 0o755, OWNER)                # /d is now merged (upper + lower)
    assert u.getattr("/d")[2] == 1


def test_stale_cache_after_bound_restart_and_rename(tmp_path):
    """After a rename of a directory, nothing below the old path may still resolve, whatever the
    cache size (the resolution cache restarts when full)."""
    (lower,), upper, work = layers(tmp_path)
    write(lower + "/a/b/c", b"C")
    u = make_union([lower], upper, work, cache_entries=10)
    for i in range(8):                    # unrelated (negative) entries fill the cache ...
        assert u.lookup("/n%d" % i) is None
    assert u.lookup("/a/b/c") is not None  # ... so it restarts right when /a/b/c is stored
    assert len(u.cache) <= 10
    u.rename("/a", "/z")
    assert u.lookup("/a") is None
    with pytest.raises(OSError) as e:   # /a no longer exists: ENOENT, never the old node
        u.lookup("/a/b/c")
    assert errno_of(e) == errno.ENOENT
    assert uread(u, "/z/b/c") == b"C"


# ---- multiple lower layers ---------------------------------------------------------------------


def test_two_lowers_with_whiteouts(tmp_path):
    (l0, l1), upper, work = layers(tmp_path, 2)
    write(l1 + "/d/bottom", b"1")
    write(l1 + "/d/hidden", b"h")
    write(l1 + "/d/ocihidden", b"o")
    whiteout(l0 + "/d/hidden")
    write(l0 + "/d/.wh.ocihidden")
    write(l0 + "/d/top", b"0")
    u = make_union([l0, l1], upper, work)
    assert names(u, "/d") == ["bottom", "top"]
    ucreate(u, "/d/hidden", b"again")
    assert uread(u, "/d/hidden") == b"again"
    u.unlink("/d/hidden")
    # the lower whiteout already hides it: lower_positive is False, no upper whiteout needed
    assert not os.path.lexists(upper + "/d/hidden")
    assert u.lookup("/d/hidden") is None
