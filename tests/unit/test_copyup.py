import errno
import os
import stat

import pytest

from unionfs.core import copyup
from unionfs.core import whiteout as wo
from unionfs.core.copyup import Copier, copy_data, copy_xattrs, discard
from tests.unit.helpers import (make_union, mkdir, names, needs_root, read, uread,
                                uwrite, write, xget, xset)

# VFS_CAP_REVISION_2: magic_etc, then (permitted, inheritable) x 2 words; CAP_NET_BIND_SERVICE
CAP_V2 = b"\x01\x00\x00\x02" + b"\x00\x04\x00\x00" + b"\x00" * 12


def _copier(tmp_path, sync=True):
    work = str(tmp_path / "work" / "work")
    os.makedirs(work)
    return Copier(work, wo.Writer(wo.TRUSTED), sync=sync)


def _fds(src, dst):
    return (os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))


def _copy(src, dst, size=None):
    s, d = _fds(src, dst)
    try:
        copy_data(s, d, os.fstat(s).st_size if size is None else size)
    finally:
        os.close(s)
        os.close(d)


# ---- copy_data ---------------------------------------------------------------------------------

def test_copy_data_keeps_holes(tmp_path):
    src = str(tmp_path / "sparse")
    size = 64 << 20
    fd = os.open(src, os.O_WRONLY | os.O_CREAT, 0o644)
    os.pwrite(fd, b"Z", size - 1)
    os.close(fd)
    if os.stat(src).st_blocks * 512 > 1 << 20:
        pytest.skip("filesystem does not keep holes")
    dst = str(tmp_path / "copy")
    _copy(src, dst)
    st = os.stat(dst)
    assert st.st_size == size
    assert st.st_blocks * 512 <= 1 << 20, "holes were filled: %d blocks" % st.st_blocks
    with open(dst, "rb") as f:
        f.seek(size - 1)
        assert f.read() == b"Z"
        f.seek(0)
        assert f.read(4096) == b"\0" * 4096


def test_copy_data_exact_bytes_with_holes_between_extents(tmp_path):
    src = str(tmp_path / "s")
    chunks = {0: os.urandom(5000), 3 << 20: os.urandom(70000), (9 << 20) + 17: b"tail"}
    fd = os.open(src, os.O_WRONLY | os.O_CREAT, 0o644)
    for off, data in chunks.items():
        os.pwrite(fd, data, off)
    os.ftruncate(fd, (12 << 20) + 3)         # a trailing hole
    os.close(fd)
    dst = str(tmp_path / "d")
    _copy(src, dst)
    assert read(dst) == read(src)


def test_copy_data_random_bytes(tmp_path):
    data = os.urandom((3 << 20) + 123)
    src = write(tmp_path / "s", data)
    dst = str(tmp_path / "d")
    _copy(src, dst)
    assert read(dst) == data


def test_copy_data_empty_and_size_limit(tmp_path):
    src = write(tmp_path / "s", b"")
    dst = str(tmp_path / "d")
    _copy(src, dst)
    assert read(dst) == b""
    src = write(tmp_path / "s2", b"0123456789")
    _copy(src, dst, size=4)                 # only `size` bytes are copied
    assert read(dst) == b"0123"


def test_copy_data_of_a_file_that_is_all_hole(tmp_path):
    src = str(tmp_path / "s")
    with open(src, "wb") as f:
        f.truncate(3 << 20)
    dst = str(tmp_path / "d")
    _copy(src, dst)
    assert os.stat(dst).st_size == 3 << 20 and read(dst) == bytes(3 << 20)


def test_copy_data_fallback_when_copy_file_range_refused(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise OSError(errno.EXDEV, "cross-device")
    monkeypatch.setattr(copyup.os, "copy_file_range", refuse)
    data = os.urandom((2 << 20) + 7)
    src = write(tmp_path / "s", data)
    dst = str(tmp_path / "d")
    _copy(src, dst)
    assert read(dst) == data


# ---- Copier.copy -------------------------------------------------------------------------------

def _counting(monkeypatch, name, effect=None):
    """Replace copyup.<name> (os.fsync when name is "fsync") by a recorder of its calls."""
    calls = []

    def fake(*a):
        calls.append(a)
        return effect(*a) if effect else None
    if name == "fsync":
        monkeypatch.setattr(copyup.os, "fsync", fake)
    else:
        monkeypatch.setattr(copyup, name, fake)
    return calls


def _refuse(code):
    def refuse(*a):
        raise OSError(code, os.strerror(code))
    return refuse


def _emulated_clone(src, dst):
    """What FICLONE leaves: dst with all of src's bytes (the test's filesystem has no reflink)."""
    os.copy_file_range(src, dst, os.fstat(src).st_size, 0, 0)


def test_copy_up_of_sparse_1gib_file_stays_sparse(tmp_path):
    c = _copier(tmp_path)
    src = str(tmp_path / "sparse")
    fd = os.open(src, os.O_WRONLY | os.O_CREAT, 0o644)
    os.pwrite(fd, b"Z", 512 << 20)
    os.ftruncate(fd, 1 << 30)
    os.close(fd)
    if os.stat(src).st_blocks * 512 > 1 << 20:
        pytest.skip("filesystem does not keep holes")
    dst = str(tmp_path / "copy")
    c.copy(src, os.lstat(src), dst)
    st = os.stat(dst)
    assert st.st_size == 1 << 30
    assert st.st_blocks * 512 <= 64 << 10, "holes were filled: %d blocks" % st.st_blocks
    with open(dst, "rb") as f:
        assert os.pread(f.fileno(), 2, (512 << 20) - 1) == b"\0Z"


def test_clone_refused_is_tried_once_per_lower_then_data_is_copied_and_fsynced(
        tmp_path, monkeypatch):
    clones = _counting(monkeypatch, "clone_file", _refuse(errno.EOPNOTSUPP))
    fsyncs = _counting(monkeypatch, "fsync")
    c = _copier(tmp_path)
    for i in range(3):
        src = write(tmp_path / ("s%d" % i), b"data %d" % i)
        c.copy(src, os.lstat(src), str(tmp_path / ("d%d" % i)))
        assert read(tmp_path / ("d%d" % i)) == b"data %d" % i
    assert len(clones) == 1          # EOPNOTSUPP: no file of that lower will clone
    assert len(fsyncs) == 3


def test_cloned_file_is_not_fsynced_and_copied_one_is(tmp_path, monkeypatch):
    clones = _counting(monkeypatch, "clone_file", _emulated_clone)
    fsyncs = _counting(monkeypatch, "fsync")
    c = _copier(tmp_path)
    data = os.urandom(100_000)
    src = write(tmp_path / "s", data)
    c.copy(src, os.lstat(src), str(tmp_path / "d"))
    assert read(tmp_path / "d") == data
    assert len(clones) == 1 and fsyncs == []
    empty = write(tmp_path / "e", b"")
    c.copy(empty, os.lstat(empty), str(tmp_path / "e2"))   # nothing to clone, nothing to flush
    assert len(clones) == 1 and fsyncs == [] and read(tmp_path / "e2") == b""


def test_clone_einval_falls_back_for_that_file_only(tmp_path, monkeypatch):
    results = iter([_refuse(errno.EINVAL), _emulated_clone])
    clones = _counting(monkeypatch, "clone_file", lambda s, d: next(results)(s, d))
    fsyncs = _counting(monkeypatch, "fsync")
    c = _copier(tmp_path)
    for name in ("a", "b"):
        src = write(tmp_path / name, name.encode() * 5000)
        c.copy(src, os.lstat(src), str(tmp_path / (name + "2")))
        assert read(tmp_path / (name + "2")) == name.encode() * 5000
    assert len(clones) == 2 and len(fsyncs) == 1   # a copied, b cloned


@pytest.mark.parametrize("sync", [True, False])
def test_big_copy_starts_writeback_as_it_goes_only_when_fsynced(tmp_path, monkeypatch, sync):
    monkeypatch.setattr(copyup, "_WRITEBACK_STEP", 64 << 10)
    monkeypatch.setattr(copyup, "clone_file", _refuse(errno.EOPNOTSUPP))
    ranges = _counting(monkeypatch, "start_writeback")
    c = _copier(tmp_path, sync=sync)
    data = os.urandom((200 << 10) + 5)
    src = write(tmp_path / "s", data)
    c.copy(src, os.lstat(src), str(tmp_path / "d"))
    assert read(tmp_path / "d") == data
    if sync:
        assert [(off, n) for _fd, off, n in ranges] == [
            (0, 64 << 10), (64 << 10, 64 << 10), (128 << 10, 64 << 10), (192 << 10, (8 << 10) + 5)]
    else:
        assert ranges == []     # volatile: nothing is flushed, so nothing is started either


@needs_root
def test_copy_regular_file_metadata(tmp_path):
    c = _copier(tmp_path)
    src = write(tmp_path / "src", b"payload")
    os.chown(src, 1234, 5678)
    os.chmod(src, 0o4751)                     # setuid
    xset(src, "user.note", b"hello")
    xset(src, "trusted.custom", b"t")
    xset(src, "security.capability", CAP_V2)
    xset(src, "trusted.overlay.opaque", b"y")  # overlay-private: not copied
    xset(src, "user.overlay.redirect", b"x")
    mtime = 1_234_567_890_123_456_789
    os.utime(src, ns=(1_000_000_000_987_654_321, mtime))
    st = os.lstat(src)
    dst = str(tmp_path / "dst")
    c.copy(src, st, dst, origin_ino=424242)
    d = os.lstat(dst)
    assert read(dst) == b"payload"
    assert stat.S_IMODE(d.st_mode) == 0o4751
    assert stat.S_ISREG(d.st_mode)
    assert (d.st_uid, d.st_gid) == (1234, 5678)
    assert d.st_mtime_ns == mtime
    assert d.st_atime_ns == st.st_atime_ns
    assert xget(dst, "user.note") == b"hello"
    assert xget(dst, "trusted.custom") == b"t"
    assert xget(dst, "security.capability") == CAP_V2
    assert xget(dst, "trusted.overlay.opaque") is None
    assert xget(dst, "user.overlay.redirect") is None
    assert c.writer.get_origin_ino(dst) == 424242
    assert os.listdir(c.workdir) == []


@needs_root
def test_copy_without_data(tmp_path):
    c = _copier(tmp_path)
    src = write(tmp_path / "src", b"payload", mode=0o640)
    dst = str(tmp_path / "dst")
    c.copy(src, os.lstat(src), dst, data=False)
    assert read(dst) == b""
    assert stat.S_IMODE(os.lstat(dst).st_mode) == 0o640


@needs_root
def test_copy_directory(tmp_path):
    c = _copier(tmp_path)
    src = mkdir(tmp_path / "srcdir")
    write(tmp_path / "srcdir/child", b"x")     # copy-up of a directory copies the directory only
    os.chown(src, 7, 8)
    os.chmod(src, 0o2755)
    xset(src, "user.d", b"1")
    xset(src, "trusted.overlay.opaque", b"y")
    os.utime(src, ns=(5, 6_000_000_007))
    dst = str(tmp_path / "dstdir")
    c.copy(src, os.lstat(src), dst)
    d = os.lstat(dst)
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o2755
    assert (d.st_uid, d.st_gid) == (7, 8)
    assert d.st_mtime_ns == 6_000_000_007
    assert os.listdir(dst) == []
    assert xget(dst, "user.d") == b"1"
    assert xget(dst, "trusted.overlay.opaque") is None


@needs_root
def test_copy_symlink(tmp_path):
    c = _copier(tmp_path)
    src = str(tmp_path / "ln")
    os.symlink("../some/where else", src)
    os.chown(src, 11, 12, follow_symlinks=False)
    os.utime(src, ns=(1, 2_000_000_003), follow_symlinks=False)
    dst = str(tmp_path / "ln2")
    c.copy(src, os.lstat(src), dst)
    d = os.lstat(dst)
    assert stat.S_ISLNK(d.st_mode)
    assert os.readlink(dst) == "../some/where else"
    assert (d.st_uid, d.st_gid) == (11, 12)
    assert d.st_mtime_ns == 2_000_000_003


@needs_root
def test_copy_symlink_to_host_path_is_not_followed(tmp_path):
    c = _copier(tmp_path)
    src = str(tmp_path / "ln")
    os.symlink("/etc/passwd", src)
    dst = str(tmp_path / "ln2")
    c.copy(src, os.lstat(src), dst)
    assert os.readlink(dst) == "/etc/passwd"
    assert stat.S_ISLNK(os.lstat(dst).st_mode)


@needs_root
@pytest.mark.parametrize("kind", ["chr", "blk", "fifo"])
def test_copy_special_files(tmp_path, kind):
    c = _copier(tmp_path)
    src = str(tmp_path / kind)
    if kind == "fifo":
        os.mkfifo(src, 0o640)
    else:
        fmt = stat.S_IFCHR if kind == "chr" else stat.S_IFBLK
        os.mknod(src, fmt | 0o620, os.makedev(4, 5))
    os.chmod(src, 0o620 if kind != "fifo" else 0o640)
    os.chown(src, 3, 4)
    st = os.lstat(src)
    dst = str(tmp_path / (kind + "2"))
    c.copy(src, st, dst)
    d = os.lstat(dst)
    assert stat.S_IFMT(d.st_mode) == stat.S_IFMT(st.st_mode)
    assert stat.S_IMODE(d.st_mode) == stat.S_IMODE(st.st_mode)
    assert d.st_rdev == st.st_rdev
    assert (d.st_uid, d.st_gid) == (3, 4)


@needs_root
def test_failed_copy_leaves_nothing_when_destination_parent_missing(tmp_path):
    c = _copier(tmp_path)
    src = write(tmp_path / "src", b"data")
    dst = str(tmp_path / "missing" / "dst")
    with pytest.raises(FileNotFoundError):
        c.copy(src, os.lstat(src), dst)
    assert not os.path.lexists(dst)
    assert os.listdir(c.workdir) == []


@needs_root
@pytest.mark.parametrize("what", ["file", "dir"])
def test_failed_rename_leaves_nothing(tmp_path, monkeypatch, what):
    c = _copier(tmp_path)
    if what == "file":
        src = write(tmp_path / "src", b"data" * 1000)
    else:
        src = mkdir(tmp_path / "src")
    dst = str(tmp_path / "dst")

    def boom(a, b):
        raise OSError(errno.EIO, "injected")
    monkeypatch.setattr(copyup.os, "rename", boom)
    with pytest.raises(OSError) as e:
        c.copy(src, os.lstat(src), dst)
    assert e.value.errno == errno.EIO
    assert not os.path.lexists(dst)
    assert os.listdir(c.workdir) == []


@needs_root
def test_failure_in_data_copy_leaves_nothing(tmp_path, monkeypatch):
    c = _copier(tmp_path)
    src = write(tmp_path / "src", b"x" * 100)
    dst = str(tmp_path / "dst")

    def boom(*a):
        raise OSError(errno.ENOSPC, "injected")
    monkeypatch.setattr(copyup, "copy_data", boom)
    with pytest.raises(OSError):
        c.copy(src, os.lstat(src), dst)
    assert not os.path.lexists(dst)
    assert os.listdir(c.workdir) == []


@needs_root
def test_copy_does_not_replace_an_existing_temp(tmp_path):
    """Temp names are unique per Copier: two copies never share a work entry."""
    c = _copier(tmp_path)
    names = {c.temp() for _ in range(100)}
    assert len(names) == 100
    # each names an entry of the work dir itself, through its pinned descriptor
    work = os.stat(c.workdir)
    assert all(os.path.samestat(os.stat(os.path.dirname(n)), work) for n in names)


# ---- clean -------------------------------------------------------------------------------------

def test_clean_removes_leftovers(tmp_path):
    work = mkdir(tmp_path / "work") + "/work"    # WORK exists (validated); WORK/work does not yet
    c = Copier(work, wo.Writer(), sync=False)
    c.clean()                                   # creates the missing work dir
    assert os.path.isdir(work) and os.listdir(work) == []
    write(work + "/#old1", b"x")
    write(work + "/#olddir/deep/file", b"y")
    outside = mkdir(tmp_path / "outside")
    write(outside + "/precious", b"keep")
    os.symlink(outside, work + "/#link")        # a symlink to a dir: removed, never followed
    os.mkfifo(work + "/#fifo")
    c.clean()
    assert os.listdir(work) == []
    assert read(outside + "/precious") == b"keep"


def test_clean_replaces_a_symlinked_work_dir_without_touching_its_target(tmp_path):
    base = mkdir(tmp_path / "work")
    target = mkdir(tmp_path / "victim")
    write(target + "/precious", b"keep")
    mkdir(target + "/sub")
    work = base + "/work"
    os.symlink(target, work)
    c = Copier(work, wo.Writer(), sync=False)
    c.clean()
    st = os.lstat(work)
    assert stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode)
    assert os.listdir(work) == []
    assert sorted(os.listdir(target)) == ["precious", "sub"]
    assert read(target + "/precious") == b"keep"
    # later temps land in the real work dir, not in the symlink's target
    assert os.path.samestat(os.stat(os.path.dirname(c.temp())), os.stat(work))


def test_clean_replaces_a_file_at_the_work_dir(tmp_path):
    base = mkdir(tmp_path / "work")
    write(base + "/work", b"junk")
    c = Copier(base + "/work", wo.Writer(), sync=False)
    c.clean()
    assert os.path.isdir(base + "/work") and not os.path.islink(base + "/work")


def test_discard(tmp_path):
    f = write(tmp_path / "f")
    d = mkdir(tmp_path / "d/e")
    outside = mkdir(tmp_path / "o")
    write(outside + "/keep", b"k")
    ln = str(tmp_path / "ln")
    os.symlink(outside, ln)
    for p in (f, str(tmp_path / "d"), ln, str(tmp_path / "absent")):
        discard(p)
        assert not os.path.lexists(p)
    assert read(outside + "/keep") == b"k"


@needs_root
def test_copy_xattrs_skips_overlay_namespace(tmp_path):
    a = write(tmp_path / "a")
    b = write(tmp_path / "b")
    xset(a, "user.x", b"1")
    xset(a, "trusted.overlay.whiteout", b"")
    xset(a, "trusted.overlay.unionfs.ino", b"5")
    copy_xattrs(a, b)
    assert xget(b, "user.x") == b"1"
    assert os.listxattr(b) == ["user.x"]


# ---- copy-up through the union (orchestration: parents first, handles reopened) --------------

@needs_root
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


@needs_root
def test_copy_up_of_nested_file_copies_parents(env):
    u, lower, upper, _ = env
    uwrite(u, "/d/sub/b", b"b")
    assert os.path.isdir(upper + "/d/sub")
    assert read(upper + "/d/sub/b") == b"b"
    assert sorted(os.listdir(upper + "/d")) == ["sub"]
    assert names(u, "/d") == ["a", "sub"]
    assert u.stats["copyups"] == 3               # /d, /d/sub, /d/sub/b


@needs_root
def test_o_trunc_copies_up_without_data(env):
    u, lower, upper, _ = env
    h = u.open("/f", os.O_WRONLY | os.O_TRUNC)
    u.release(h)
    assert u.stats["copyups"] == 1
    assert u.stats["copyup_bytes"] == 0
    assert read(upper + "/f") == b""
    assert uread(u, "/f") == b""


@needs_root
def test_truncate_to_zero_copies_no_data(env):
    u, lower, upper, _ = env
    u.truncate("/f", 0)
    assert u.stats["copyup_bytes"] == 0
    assert read(upper + "/f") == b""
    u.truncate("/other/x", 10)
    assert read(upper + "/other/x") == b"X" + b"\0" * 9


@needs_root
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


@needs_root
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


@needs_root
def test_handle_on_lower_follows_rename_then_copy_up(env):
    u = env[0]
    r = u.open("/f", os.O_RDONLY)
    u.rename("/f", "/g")
    uwrite(u, "/g", b"moved")
    assert u.read(r, 100, 0) == b"moved data"
    u.release(r)
