"""The directory-changing operations (core/dir.py) through the union, on real directories."""
import errno
import os
import stat

import pytest

from tests.unit.helpers import (OWNER, errno_of, is_wh, layers, make_union, names, needs_root,
                                read, ucreate, uread, uwrite, work_leftovers, write, xget)

pytestmark = needs_root


# ---- create ----------------------------------------------------------------------------------


def test_create_new_file(env):
    u, lower, upper, _ = env
    ucreate(u, "/d/new", b"hello", mode=0o640)
    assert read(upper + "/d/new") == b"hello"
    st = os.lstat(upper + "/d/new")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert names(u, "/d") == ["a", "new", "sub"]
    with pytest.raises(OSError) as e:
        u.create("/d/new", stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER)
    assert errno_of(e) == errno.EEXIST


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
    assert errno_of(e) == errno.EISDIR
    with pytest.raises(OSError) as e:
        u.rmdir("/f")
    assert errno_of(e) == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        u.rmdir("/d")
    assert errno_of(e) == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        u.rmdir("/")
    assert errno_of(e) == errno.EBUSY


def test_recreate_over_whiteout(env):
    u, lower, upper, _ = env
    u.unlink("/f")
    ucreate(u, "/f", b"fresh")
    assert uread(u, "/f") == b"fresh"
    assert stat.S_ISREG(os.lstat(upper + "/f").st_mode)
    assert work_leftovers(u) == []


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
    assert work_leftovers(u) == []


def test_mkdir_in_merged_parent_is_opaque_and_in_pure_upper_parent_not(env):
    u, lower, upper, _ = env
    u.mkdir("/d/newdir", 0o750, OWNER)
    assert xget(upper + "/d/newdir", "trusted.overlay.opaque") == b"y"
    u.mkdir("/d/newdir/inner", 0o750, OWNER)
    assert xget(upper + "/d/newdir/inner", "trusted.overlay.opaque") is None
    assert stat.S_IMODE(os.lstat(upper + "/d/newdir").st_mode) == 0o750
    with pytest.raises(OSError) as e:
        u.mkdir("/d", 0o755, OWNER)
    assert errno_of(e) == errno.EEXIST


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
        assert errno_of(e) == code, (old, new)
    # nothing changed
    assert names(u, "/") == ["d", "f", "ln", "other"]
    assert u.stats["copyups"] == 0


def test_rename_noreplace(env):
    from unionfs.core.sysutil import RENAME_NOREPLACE, RENAME_EXCHANGE
    u = env[0]
    with pytest.raises(OSError) as e:
        u.rename("/f", "/ln", RENAME_NOREPLACE)
    assert errno_of(e) == errno.EEXIST
    # RENAME_EXCHANGE swaps the two names (both copied up), as the kernel's overlayfs does
    u.rename("/f", "/ln", RENAME_EXCHANGE)
    assert u.readlink("/f") == "f"
    assert uread(u, "/ln") == b"lower data"
    with pytest.raises(OSError) as e:
        u.rename("/f", "/missing", RENAME_EXCHANGE)
    assert errno_of(e) == errno.ENOENT
    with pytest.raises(OSError) as e:
        u.rename("/f", "/ln", RENAME_EXCHANGE | RENAME_NOREPLACE)
    assert errno_of(e) == errno.EINVAL


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
    assert errno_of(e) == errno.EPERM
    with pytest.raises(OSError) as e:
        u.link("/f", "/d/a")
    assert errno_of(e) == errno.EEXIST


# ---- reserved names --------------------------------------------------------------------------


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
        assert errno_of(e) == errno.EINVAL
    assert not any(n.startswith(".wh.") for _r, ds, fs in os.walk(upper) for n in ds + fs)
    assert u.lookup("/d/a") is not None


def test_kept_upper_directory_fds_follow_renames_and_removals(env):
    """The upper keeps the directory fds it opened (core/layers.py); after a directory is
    renamed, exchanged or removed, a new directory at the old name gets its own entries."""
    u, lower, upper, _ = env
    u.mkdir("/p", 0o755, OWNER)
    u.mkdir("/p/q", 0o755, OWNER)
    ucreate(u, "/p/q/one", b"1")                  # /p and /p/q are now kept open
    u.rename("/p", "/moved")
    u.mkdir("/p", 0o755, OWNER)
    u.mkdir("/p/q", 0o755, OWNER)
    ucreate(u, "/p/q/two", b"2")
    assert sorted(os.listdir(upper + "/p/q")) == ["two"]
    assert sorted(os.listdir(upper + "/moved/q")) == ["one"]
    u.unlink("/p/q/two")
    u.rmdir("/p/q")
    u.mkdir("/p/q", 0o755, OWNER)
    ucreate(u, "/p/q/three", b"3")
    assert os.listdir(upper + "/p/q") == ["three"]
    u.rename("/p", "/moved", 2)                   # RENAME_EXCHANGE
    ucreate(u, "/p/q/four", b"4")
    assert sorted(os.listdir(upper + "/p/q")) == ["four", "one"]
    assert uread(u, "/moved/q/three") == b"3"
