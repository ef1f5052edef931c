"""The FUSE-free facade end to end on real directories (no mount)."""
import errno
import os
import stat

import pytest

from unionfs.core.union import Union
from tests.unit.helpers import (OWNER, is_wh, layers, make_union, mkdir, names, needs_root, read,
                                ucreate, uread, uwrite, whiteout, write, xget, xset)

pytestmark = needs_root


def _errno(exc_info):
    return exc_info.value.errno


@pytest.fixture
def env(tmp_path):
    (lower,), upper, work = layers(tmp_path)
    write(lower + "/f", b"lower data")
    write(lower + "/d/a", b"A")
    write(lower + "/d/sub/b", b"B")
    write(lower + "/other/x", b"X")
    os.symlink("f", lower + "/ln")
    u = make_union([lower], upper, work)
    return u, lower, upper, work


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


def test_listdir_dino_matches_getattr_ino(env):
    u = env[0]
    for name, _code, ino, _full in u.listdir("/d"):
        if name not in (".", ".."):
            assert ino == u.getattr("/d/" + name)[1]
    # readdirplus: the full attributes equal what getattr returns for each entry
    for name, _code, ino, full in u.listdir("/d", plus=True):
        if name not in (".", ".."):
            st, fino, nlink = u.getattr("/d/" + name)
            assert full[1] == fino == ino and full[2] == nlink
            assert (full[0].st_mode, full[0].st_size) == (st.st_mode, st.st_size)


def test_missing_and_enotdir(env):
    u = env[0]
    assert u.lookup("/nope") is None
    with pytest.raises(OSError) as e:
        u.getattr("/nope")
    assert _errno(e) == errno.ENOENT
    with pytest.raises(OSError) as e:
        u.lookup("/f/x")
    assert _errno(e) == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        u.lookup("/nope/x")
    assert _errno(e) == errno.ENOENT


def test_enametoolong(env):
    u = env[0]
    with pytest.raises(OSError) as e:
        u.lookup("/" + "n" * 256)
    assert _errno(e) == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        u.mkdir("/" + "n" * 256, 0o755, OWNER)
    assert _errno(e) == errno.ENAMETOOLONG
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
    assert _errno(e) == errno.ENOTDIR


# ---- open / copy-up ----------------------------------------------------------------------------

def test_open_for_write_copies_up_once(env):
    u, lower, upper, _ = env
    ino = u.getattr("/f")[1]
    uwrite(u, "/f", b"UPPER")
    assert u.stats["copyups"] == 1
    assert u.stats["copyup_bytes"] == len(b"lower data")
    assert read(upper + "/f") == b"UPPER data"
    assert read(lower + "/f") == b"lower data"   # the lower is never written
    uwrite(u, "/f", b"again")
    assert u.stats["copyups"] == 1
    assert uread(u, "/f") == b"again data"
    assert u.getattr("/f")[1] == ino              # st_ino stable across copy-up


def test_copy_up_of_nested_file_copies_parents(env):
    u, lower, upper, _ = env
    uwrite(u, "/d/sub/b", b"b")
    assert os.path.isdir(upper + "/d/sub")
    assert read(upper + "/d/sub/b") == b"b"
    assert sorted(os.listdir(upper + "/d")) == ["sub"]
    assert names(u, "/d") == ["a", "sub"]
    assert u.stats["copyups"] == 3               # /d, /d/sub, /d/sub/b


def test_o_trunc_copies_up_without_data(env):
    u, lower, upper, _ = env
    h = u.open("/f", os.O_WRONLY | os.O_TRUNC)
    u.release(h)
    assert u.stats["copyups"] == 1
    assert u.stats["copyup_bytes"] == 0
    assert read(upper + "/f") == b""
    assert uread(u, "/f") == b""


def test_truncate_to_zero_copies_no_data(env):
    u, lower, upper, _ = env
    u.truncate("/f", 0)
    assert u.stats["copyup_bytes"] == 0
    assert read(upper + "/f") == b""
    u.truncate("/other/x", 10)
    assert read(upper + "/other/x") == b"X" + b"\0" * 9


def test_st_ino_unchanged_across_copy_up(env):
    u = env[0]
    before = u.getattr("/d/a")[1]
    dir_before = u.getattr("/d")[1]
    u.chmod("/d/a", 0o600)
    assert u.getattr("/d/a")[1] == before
    assert u.getattr("/d")[1] == dir_before
    # and after the resolution cache is gone (a fresh Union over the same layers: a remount)
    u2 = make_union([u.layers[1].root], u.upper.root, os.path.dirname(u.copier.workdir))
    assert u2.getattr("/d/a")[1] == before


def test_handle_opened_on_lower_reads_copy_up_data(env):
    u, lower, upper, _ = env
    r = u.open("/f", os.O_RDONLY)
    assert u.read(r, 100, 0) == b"lower data"
    w = u.open("/f", os.O_RDWR)
    u.write(w, b"NEW", 0)
    u.release(w)
    assert u.read(r, 100, 0) == b"NEWer data"
    u.release(r)
    assert read(lower + "/f") == b"lower data"


def test_handle_on_lower_follows_rename_then_copy_up(env):
    u = env[0]
    r = u.open("/f", os.O_RDONLY)
    u.rename("/f", "/g")
    uwrite(u, "/g", b"moved")
    assert u.read(r, 100, 0) == b"moved data"
    u.release(r)


def test_create_new_file(env):
    u, lower, upper, _ = env
    ucreate(u, "/d/new", b"hello", mode=0o640)
    assert read(upper + "/d/new") == b"hello"
    st = os.lstat(upper + "/d/new")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert names(u, "/d") == ["a", "new", "sub"]
    with pytest.raises(OSError) as e:
        u.create("/d/new", stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER)
    assert _errno(e) == errno.EEXIST


def test_create_owner_applied(env):
    u, lower, upper, _ = env
    h = u.create("/owned", stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT, (1000, 1001))
    u.release(h)
    st = os.lstat(upper + "/owned")
    assert (st.st_uid, st.st_gid) == (1000, 1001)


# ---- unlink / rmdir ----------------------------------------------------------------------------

def test_unlink_lower_file_leaves_whiteout(env):
    u, lower, upper, _ = env
    u.unlink("/f")
    assert is_wh(upper + "/f")
    assert u.lookup("/f") is None
    assert "f" not in names(u, "/")
    assert os.path.exists(lower + "/f")
    assert u.stats["whiteouts"] == 1


def test_unlink_copied_up_file_leaves_whiteout(env):
    u, lower, upper, _ = env
    uwrite(u, "/d/a", b"z")
    u.unlink("/d/a")
    assert is_wh(upper + "/d/a")
    assert u.lookup("/d/a") is None


def test_unlink_upper_only_file_leaves_no_whiteout(env):
    u, lower, upper, _ = env
    ucreate(u, "/new", b"x")
    u.unlink("/new")
    assert not os.path.lexists(upper + "/new")
    assert u.lookup("/new") is None
    assert u.stats["whiteouts"] == 0


def test_unlink_dir_is_eisdir_and_rmdir_file_is_enotdir(env):
    u = env[0]
    with pytest.raises(OSError) as e:
        u.unlink("/d")
    assert _errno(e) == errno.EISDIR
    with pytest.raises(OSError) as e:
        u.rmdir("/f")
    assert _errno(e) == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        u.rmdir("/d")
    assert _errno(e) == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        u.rmdir("/")
    assert _errno(e) == errno.EBUSY


def test_recreate_over_whiteout(env):
    u, lower, upper, _ = env
    u.unlink("/f")
    ucreate(u, "/f", b"fresh")
    assert uread(u, "/f") == b"fresh"
    assert stat.S_ISREG(os.lstat(upper + "/f").st_mode)
    assert os.listdir(u.copier.workdir) == []


def test_rmdir_merged_then_mkdir_is_opaque(env):
    u, lower, upper, _ = env
    u.unlink("/d/sub/b")
    u.rmdir("/d/sub")
    u.unlink("/d/a")
    u.rmdir("/d")
    assert is_wh(upper + "/d")
    assert u.lookup("/d") is None
    u.mkdir("/d", 0o755, OWNER)
    assert stat.S_ISDIR(os.lstat(upper + "/d").st_mode)
    assert xget(upper + "/d", "trusted.overlay.opaque") == b"y"
    assert names(u, "/d") == []
    assert u.lookup("/d/a") is None
    assert os.listdir(u.copier.workdir) == []


def test_mkdir_in_merged_parent_is_opaque_and_in_pure_upper_parent_not(env):
    u, lower, upper, _ = env
    u.mkdir("/d/newdir", 0o750, OWNER)
    assert xget(upper + "/d/newdir", "trusted.overlay.opaque") == b"y"
    u.mkdir("/d/newdir/inner", 0o750, OWNER)
    assert xget(upper + "/d/newdir/inner", "trusted.overlay.opaque") is None
    assert stat.S_IMODE(os.lstat(upper + "/d/newdir").st_mode) == 0o750
    with pytest.raises(OSError) as e:
        u.mkdir("/d", 0o755, OWNER)
    assert _errno(e) == errno.EEXIST


def test_rmdir_upper_only_dir(env):
    u, lower, upper, _ = env
    u.mkdir("/fresh", 0o755, OWNER)
    u.rmdir("/fresh")
    assert not os.path.lexists(upper + "/fresh")
    assert u.lookup("/fresh") is None


# ---- rename ------------------------------------------------------------------------------------

def test_rename_lower_file(env):
    u, lower, upper, _ = env
    ino = u.getattr("/f")[1]
    u.rename("/f", "/g")
    assert is_wh(upper + "/f")
    assert read(upper + "/g") == b"lower data"
    assert u.lookup("/f") is None
    assert uread(u, "/g") == b"lower data"
    assert u.getattr("/g")[1] == ino


def test_rename_lower_dir_same_parent_sets_relative_redirect(env):
    u, lower, upper, _ = env
    u.rename("/d", "/e")
    assert xget(upper + "/e", "trusted.overlay.redirect") == b"d"
    assert is_wh(upper + "/d")
    assert u.lookup("/d") is None
    assert names(u, "/e") == ["a", "sub"]
    assert uread(u, "/e/a") == b"A"
    assert uread(u, "/e/sub/b") == b"B"


def test_rename_lower_dir_other_parent_sets_absolute_redirect(env):
    u, lower, upper, _ = env
    u.rename("/d/sub", "/other/moved")
    assert xget(upper + "/other/moved", "trusted.overlay.redirect") == b"/d/sub"
    assert is_wh(upper + "/d/sub")
    assert u.lookup("/d/sub") is None
    assert uread(u, "/other/moved/b") == b"B"
    assert names(u, "/other") == ["moved", "x"]
    assert names(u, "/d") == ["a"]


def test_rename_redirected_dir_twice(env):
    u, lower, upper, _ = env
    u.rename("/d", "/e")
    u.rename("/e", "/e2")                       # same parent: the first redirect still names /d
    assert xget(upper + "/e2", "trusted.overlay.redirect") == b"d"
    u.rename("/e2", "/other/deep")              # another parent: absolute, to the lower path
    assert xget(upper + "/other/deep", "trusted.overlay.redirect") == b"/d"
    assert uread(u, "/other/deep/sub/b") == b"B"
    assert u.lookup("/e2") is None and u.lookup("/e") is None and u.lookup("/d") is None
    # a fresh union over the same layers (a remount) reads the same tree
    u2 = make_union([lower], upper, os.path.dirname(u.copier.workdir))
    assert names(u2, "/other/deep") == ["a", "sub"]
    assert u2.lookup("/d") is None


def test_rename_dir_redirect_dir_off_copies_the_tree_up(tmp_path):
    (lower,), upper, work = layers(tmp_path)
    write(lower + "/d/a", b"A")
    write(lower + "/d/gone", b"G")
    write(lower + "/d/sub/b", b"B")
    write(lower + "/e/old", b"O")       # the target name exists below: must not merge
    u = make_union([lower], upper, work, redirect_dir=False)
    u.unlink("/d/gone")
    u.unlink("/e/old")
    u.rmdir("/e")
    u.rename("/d", "/e")
    assert names(u, "/e") == ["a", "sub"]
    assert uread(u, "/e/sub/b") == b"B"
    assert u.lookup("/d") is None
    # the upper alone describes the change: no redirect, the whole tree copied, opaque top,
    # no stale whiteout inside, a whiteout where the directory was
    assert xget(upper + "/e", "trusted.overlay.redirect") is None
    assert xget(upper + "/e", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(upper + "/e")) == ["a", "sub"]
    assert read(upper + "/e/sub/b") == b"B"
    assert is_wh(upper + "/d")
    assert read(lower + "/d/a") == b"A"
    u2 = make_union([lower], upper, work)
    assert names(u2, "/e") == ["a", "sub"] and u2.lookup("/d") is None


def test_rename_over_whiteout(env):
    u, lower, upper, _ = env
    u.unlink("/f")
    ucreate(u, "/new", b"N")
    u.rename("/new", "/f")
    assert uread(u, "/f") == b"N"
    assert u.lookup("/new") is None
    assert not os.path.lexists(upper + "/new")  # upper-only source: no whiteout left behind
    # a lower source over a whiteout: the whiteout moves to the source's name
    u.unlink("/f")
    u.rename("/other/x", "/f")
    assert uread(u, "/f") == b"X"
    assert is_wh(upper + "/other/x")
    assert u.lookup("/other/x") is None


def test_rename_dir_over_whiteout_of_lower_dir_stays_opaque(env):
    u, lower, upper, _ = env
    u.unlink("/other/x")
    u.rmdir("/other")
    u.mkdir("/fresh", 0o755, OWNER)
    ucreate(u, "/fresh/mine", b"m")
    u.rename("/fresh", "/other")
    assert names(u, "/other") == ["mine"]        # the lower /other/x stays hidden
    assert u.lookup("/other/x") is None


def test_rename_replaces_existing_file(env):
    u, lower, upper, _ = env
    u.rename("/d/a", "/f")
    assert uread(u, "/f") == b"A"
    assert u.lookup("/d/a") is None


def test_rename_errors(env):
    u = env[0]
    cases = [
        (("/d", "/d/sub/x"), errno.EINVAL),     # into its own subdirectory
        (("/d", "/f"), errno.ENOTDIR),          # directory over a non-directory
        (("/f", "/d"), errno.EISDIR),           # non-directory over a directory
        (("/other", "/d"), errno.ENOTEMPTY),    # over a non-empty merged directory
        (("/nope", "/x"), errno.ENOENT),
        (("/f", "/.wh.f"), errno.EINVAL),
        (("/f", "/" + "n" * 256), errno.ENAMETOOLONG),
        (("/f", "/nodir/x"), errno.ENOENT),
    ]
    for (old, new), code in cases:
        with pytest.raises(OSError) as e:
            u.rename(old, new)
        assert _errno(e) == code, (old, new)
    # nothing changed
    assert names(u, "/") == ["d", "f", "ln", "other"]
    assert u.stats["copyups"] == 0


def test_rename_noreplace(env):
    from unionfs.core.sysutil import RENAME_NOREPLACE, RENAME_EXCHANGE
    u = env[0]
    with pytest.raises(OSError) as e:
        u.rename("/f", "/ln", RENAME_NOREPLACE)
    assert _errno(e) == errno.EEXIST
    # RENAME_EXCHANGE swaps the two names (both copied up), as the kernel's overlayfs does
    u.rename("/f", "/ln", RENAME_EXCHANGE)
    assert u.readlink("/f") == "f"
    assert uread(u, "/ln") == b"lower data"
    with pytest.raises(OSError) as e:
        u.rename("/f", "/missing", RENAME_EXCHANGE)
    assert _errno(e) == errno.ENOENT
    with pytest.raises(OSError) as e:
        u.rename("/f", "/ln", RENAME_EXCHANGE | RENAME_NOREPLACE)
    assert _errno(e) == errno.EINVAL


def test_rename_dir_over_empty_merged_dir(env):
    u, lower, upper, _ = env
    u.unlink("/other/x")                         # /other is now empty (only a whiteout inside)
    u.rename("/d", "/other")
    assert names(u, "/other") == ["a", "sub"]
    assert u.lookup("/d") is None


def test_rename_to_same_name_is_a_noop(env):
    u, lower, upper, _ = env
    u.rename("/f", "/f")
    assert uread(u, "/f") == b"lower data"


# ---- link --------------------------------------------------------------------------------------

def test_link_lower_file(env):
    u, lower, upper, _ = env
    ino = u.getattr("/f")[1]
    u.link("/f", "/d/hard")
    a = os.lstat(upper + "/f")
    b = os.lstat(upper + "/d/hard")
    assert os.path.samestat(a, b) and a.st_nlink == 2
    assert u.getattr("/d/hard")[1] == ino == u.getattr("/f")[1]
    assert u.getattr("/d/hard")[2] == 2
    uwrite(u, "/d/hard", b"via link")
    assert uread(u, "/f") == b"via linkta"
    with pytest.raises(OSError) as e:
        u.link("/d", "/dirlink")
    assert _errno(e) == errno.EPERM
    with pytest.raises(OSError) as e:
        u.link("/f", "/d/a")
    assert _errno(e) == errno.EEXIST


# ---- reserved names, read-only ----------------------------------------------------------------

def test_reserved_names_refused(env):
    u, lower, upper, _ = env
    ops = [
        lambda: u.mkdir("/.wh.x", 0o755, OWNER),
        lambda: u.create("/.wh.x", stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT, OWNER),
        lambda: u.symlink("/d/.wh..wh..opq", "f", OWNER),
        lambda: u.mknod("/.wh.p", stat.S_IFIFO | 0o644, 0, OWNER),
        lambda: u.link("/f", "/.wh.f"),
        lambda: u.rename("/f", "/d/.wh.a"),
    ]
    for op in ops:
        with pytest.raises(OSError) as e:
            op()
        assert _errno(e) == errno.EINVAL
    assert not any(n.startswith(".wh.") for _r, ds, fs in os.walk(upper) for n in ds + fs)
    assert u.lookup("/d/a") is not None


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
        assert _errno(e) == errno.EROFS, i
    assert read(lower + "/f") == b"ro"
    assert sorted(os.listdir(lower)) == ["d", "f"]


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
    assert _errno(e) == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        u2.setxattr("/f", "trusted.overlay.opaque", b"y", 0)
    assert _errno(e) == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        u2.removexattr("/d", "trusted.overlay.opaque")
    assert _errno(e) == errno.EOPNOTSUPP


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
    assert _errno(e) == errno.ENODATA
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
    assert _errno(e) == errno.EOPNOTSUPP


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
    assert _errno(e) == errno.ENOENT
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
