"""Filesystem semantics through a real unionfs mount (overlayfs, redirect_dir=on, as reference).

Each test builds its layers on disk, mounts, acts through the mountpoint and checks both what a
user sees and, where the on-disk format matters, the real files in the upper directory.
"""
import ctypes
import ctypes.util
import errno
import os
import socket
import stat
import struct
import subprocess

import pytest

from tests.mountutil import requires_fuse, requires_root, unmount
from tests.integration.conftest import REFERENCE, Stack

pytestmark = requires_fuse

MiB = 1 << 20


def write(path, data=b"", mode=None):
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def raises_errno(err, fn, *a, **kw):
    with pytest.raises(OSError) as ei:
        fn(*a, **kw)
    assert ei.value.errno == err, "expected %s, got %s" % (errno.errorcode[err], ei.value)


# ----------------------------------------------------------------------------------- inodes

def test_ino_stable_across_copy_up(stack):
    write(stack.lower / "f", b"data")
    (stack.lower / "dir").mkdir()
    os.symlink("f", stack.lower / "ln")
    with stack.mount():
        m = stack.mnt
        before = {n: os.lstat(m / n).st_ino for n in ("f", "dir", "ln")}
        os.chmod(m / "f", 0o600)
        os.chmod(m / "dir", 0o700)
        os.chown(m / "ln", os.getuid(), os.getgid(), follow_symlinks=False)
        after = {n: os.lstat(m / n).st_ino for n in ("f", "dir", "ln")}
        # the copy-up really happened
        assert stat.S_IMODE(os.lstat(stack.upper / "f").st_mode) == 0o600
        assert stat.S_IMODE(os.lstat(stack.upper / "dir").st_mode) == 0o700
        assert os.path.islink(stack.upper / "ln")
        # a data write after the metadata copy-up must not change it either
        with open(m / "f", "ab") as fh:
            fh.write(b"more")
        after_write = os.stat(m / "f").st_ino
    assert after == before
    assert after_write == before["f"]


def test_ino_stable_across_remount(stack):
    write(stack.lower / "copied", b"c")
    write(stack.lower / "untouched", b"u")
    (stack.lower / "dir").mkdir()
    with stack.mount():
        m = stack.mnt
        os.chmod(m / "copied", 0o600)
        write(m / "newfile", b"n")
        first = {n: os.lstat(m / n).st_ino for n in ("copied", "untouched", "dir", "newfile")}
    with stack.mount():
        second = {n: os.lstat(stack.mnt / n).st_ino
                  for n in ("copied", "untouched", "dir", "newfile")}
    assert second == first


def _build_tree(lowers, upper):
    """Files and dirs spread over two lowers and the upper, with merged dirs."""
    l0, l1 = lowers
    for i in range(20):
        write(l1 / "merged" / ("b%d" % i), b"bottom%d" % i)
        write(l1 / ("onlybottom%d" % i) / "f", b"x")
    for i in range(20):
        write(l0 / "merged" / ("t%d" % i), b"top%d" % i)
        write(l0 / ("onlytop%d" % i), b"y")
    write(l0 / "merged" / "b0", b"shadowing")  # same name in both lowers
    write(upper / "merged" / "u0", b"upper")
    write(upper / "uponly" / "f", b"z")


def _assert_unique_inos(root):
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            key = (st.st_dev, st.st_ino) if REFERENCE else st.st_ino
            assert key not in seen, "st_ino %r shared by %s and %s" % (key, seen[key], p)
            seen[key] = p
    return seen


def test_ino_unique_in_tree(stack2):
    s = stack2
    _build_tree(s.lowers, s.upper)
    with s.mount():
        m = s.mnt
        # a few copy-ups and new files in between
        os.chmod(m / "merged" / "b3", 0o600)
        os.chmod(m / "onlytop3", 0o600)
        write(m / "merged" / "new", b"n")
        os.mkdir(m / "newdir")
        seen = _assert_unique_inos(m)
        assert len(seen) >= 100


@requires_root
def test_ino_unique_with_lowers_on_separate_filesystems(tmp_path):
    """Two tmpfs lowers number their inodes from the same small values: through the FUSE mount
    (a single st_dev) st_ino must still be unique."""
    s = Stack(tmp_path, nlower=2)
    mounted = []
    try:
        for l in s.lowers:
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(l)], check=True)
            mounted.append(l)
        _build_tree(s.lowers, s.upper)
        # precondition: the two lowers really do reuse inode numbers
        ino0 = {os.lstat(os.path.join(d, n)).st_ino
                for d, ds, fs in os.walk(s.lowers[0]) for n in ds + fs}
        ino1 = {os.lstat(os.path.join(d, n)).st_ino
                for d, ds, fs in os.walk(s.lowers[1]) for n in ds + fs}
        assert ino0 & ino1, "tmpfs did not reuse inode numbers; test precondition failed"
        with s.mount():
            os.chmod(s.mnt / "merged" / "b3", 0o600)
            _assert_unique_inos(s.mnt)
    finally:
        for l in mounted:
            unmount(str(l), fuse=False)


@requires_root
def test_ino_stable_across_remount_with_lowers_on_separate_filesystems(tmp_path):
    """Layers on three filesystems (two tmpfs lowers, the upper on the tmp dir's fs): the st_ino
    of each entry must not depend on the order in which a mount first touches the layers."""
    s = Stack(tmp_path, nlower=2)
    mounted = []
    names = ["in_lower0", "in_lower1", "in_upper", "copied", "dir1"]
    try:
        for l in s.lowers:
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(l)], check=True)
            mounted.append(l)
        write(s.lowers[0] / "in_lower0", b"0")
        write(s.lowers[1] / "in_lower1", b"1")
        write(s.lowers[1] / "copied", b"c")
        (s.lowers[1] / "dir1").mkdir()
        write(s.upper / "in_upper", b"u")
        with s.mount():
            os.chmod(s.mnt / "copied", 0o600)
            first = {n: os.lstat(s.mnt / n).st_ino for n in names}
        with s.mount():  # touch the layers in the opposite order
            second = {n: os.lstat(s.mnt / n).st_ino for n in reversed(names)}
        assert second == first
    finally:
        for l in mounted:
            unmount(str(l), fuse=False)


# ----------------------------------------------------------------------------- copy-up data

def test_mtime_ns_preserved_on_copy_up(stack):
    t = 1234567890123456789
    write(stack.lower / "f", b"data")
    (stack.lower / "d").mkdir()
    os.utime(stack.lower / "f", ns=(t, t))
    os.utime(stack.lower / "d", ns=(t, t))
    with stack.mount():
        m = stack.mnt
        assert os.stat(m / "f").st_mtime_ns == t
        os.chmod(m / "f", 0o600)
        os.chmod(m / "d", 0o700)
        assert os.stat(m / "f").st_mtime_ns == t
        assert os.stat(m / "d").st_mtime_ns == t
        assert os.stat(stack.upper / "f").st_mtime_ns == t
        assert os.stat(stack.upper / "d").st_mtime_ns == t


@pytest.mark.timeout(60)
def test_sparse_file_stays_sparse_on_copy_up(stack):
    f = stack.lower / "sparse"
    with open(f, "wb") as fh:
        fh.seek(64 * MiB)
        fh.write(b"x")
    assert os.stat(f).st_blocks * 512 < MiB, "lower fs does not keep holes"
    with stack.mount():
        m = stack.mnt
        with open(m / "sparse", "ab") as fh:
            fh.write(b"y")
        st = os.stat(m / "sparse")
        assert st.st_size == 64 * MiB + 2
        with open(m / "sparse", "rb") as fh:
            assert os.pread(fh.fileno(), 4096, 0) == b"\0" * 4096
            assert os.pread(fh.fileno(), 4096, 32 * MiB) == b"\0" * 4096
            assert os.pread(fh.fileno(), 10, 64 * MiB) == b"xy"
    up = os.stat(stack.upper / "sparse")
    assert up.st_size == 64 * MiB + 2
    assert up.st_blocks * 512 < MiB, "upper copy allocates %d bytes" % (up.st_blocks * 512)
    assert os.stat(f).st_size == 64 * MiB + 1


def _cap_blob():
    # struct vfs_cap_data, revision 2, effective bit, CAP_NET_BIND_SERVICE permitted
    return struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


@requires_root
def test_xattrs_survive_copy_up(stack):
    f = stack.lower / "f"
    write(f, b"data")
    xattrs = {
        "user.plain": b"value",
        "user.binary": b"\x00\xff\x00bin",
        "user.empty": b"",
        "trusted.secret": b"only-root",
        "security.capability": _cap_blob(),
    }
    for k, v in xattrs.items():
        os.setxattr(f, k, v)
    (stack.lower / "d").mkdir()
    os.setxattr(stack.lower / "d", "user.dirattr", b"dirval")
    os.setxattr(stack.lower / "d", "trusted.dirsecret", b"dsec")
    with stack.mount():
        m = stack.mnt
        names = set(os.listxattr(m / "f"))
        assert set(xattrs) <= names
        for k, v in xattrs.items():
            assert os.getxattr(m / "f", k) == v, k
        os.chmod(m / "f", 0o640)  # copy-up (chmod does not drop capabilities)
        os.chmod(m / "d", 0o750)
        assert stat.S_IMODE(os.stat(stack.upper / "f").st_mode) == 0o640
        names = set(os.listxattr(m / "f"))
        assert set(xattrs) <= names
        for k, v in xattrs.items():
            assert os.getxattr(m / "f", k) == v, k
        assert os.getxattr(m / "d", "user.dirattr") == b"dirval"
        assert os.getxattr(m / "d", "trusted.dirsecret") == b"dsec"
    up = stack.upper / "f"
    for k, v in xattrs.items():
        assert os.getxattr(up, k) == v, "upper copy lost %s" % k
    assert os.getxattr(stack.upper / "d", "user.dirattr") == b"dirval"
    assert os.getxattr(stack.upper / "d", "trusted.dirsecret") == b"dsec"


@requires_root
def test_symlink_target_preserved_on_copy_up(stack):
    targets = {"rel": "some/where/../file", "abs": "/nonexistent/absolute/target",
               "dot": "./x", "long": "t" * 200 + "/" + "u" * 200}
    for name, t in targets.items():
        os.symlink(t, stack.lower / name)
    lower_uid = os.getuid()
    with stack.mount():
        m = stack.mnt
        for name, t in targets.items():
            os.chown(m / name, 1234, 4321, follow_symlinks=False)
            st = os.lstat(m / name)
            assert stat.S_ISLNK(st.st_mode)
            assert (st.st_uid, st.st_gid) == (1234, 4321)
            assert os.readlink(m / name) == t
    for name, t in targets.items():
        up = stack.upper / name
        assert os.path.islink(up)
        assert os.readlink(up) == t
        assert os.lstat(up).st_uid == 1234
        assert os.readlink(stack.lower / name) == t
        assert os.lstat(stack.lower / name).st_uid == lower_uid


# ---------------------------------------------------------------------------------- names

def test_name_length_limits(stack):
    n255 = "a" * 255
    n256 = "b" * 256
    write(stack.lower / ("L" * 255), b"lower")
    with stack.mount():
        m = stack.mnt
        write(m / n255, b"ok")
        assert n255 in os.listdir(m)
        assert read(m / n255) == b"ok"
        os.mkdir(m / ("d" * 255))
        os.chmod(m / ("L" * 255), 0o600)  # copy-up of a 255-byte name
        assert read(m / ("L" * 255)) == b"lower"
        raises_errno(errno.ENAMETOOLONG, os.open, m / n256, os.O_CREAT | os.O_WRONLY, 0o644)
        raises_errno(errno.ENAMETOOLONG, os.mkdir, m / n256)
        raises_errno(errno.ENAMETOOLONG, os.stat, m / n256)
        raises_errno(errno.ENAMETOOLONG, os.rename, m / n255, m / n256)
        raises_errno(errno.ENAMETOOLONG, os.symlink, "x", m / n256)
    assert (stack.upper / n255).is_file()
    assert (stack.upper / ("L" * 255)).is_file()


def test_non_utf8_names(stack):
    low = os.fsencode(stack.lower)
    lname = b"lower-\xff\xfe"
    write(os.path.join(low, lname), b"from lower")
    write(os.path.join(low, b"dir-\xe9", b"inner-\x80"), b"nested")
    m = os.fsencode(stack.mnt)
    with stack.mount():
        assert lname in os.listdir(m)
        assert read(os.path.join(m, lname)) == b"from lower"
        assert os.listdir(os.path.join(m, b"dir-\xe9")) == [b"inner-\x80"]
        os.chmod(os.path.join(m, lname), 0o600)  # copy-up
        write(os.path.join(m, b"new-\x80\x81"), b"new")
        os.rename(os.path.join(m, b"new-\x80\x81"), os.path.join(m, b"ren-\xc3\x28"))
        os.mkdir(os.path.join(m, b"mk-\xff"))
        write(os.path.join(m, b"dir-\xe9", b"added-\xfe"), b"a")
        os.unlink(os.path.join(m, b"dir-\xe9", b"inner-\x80"))
        assert sorted(os.listdir(m)) == sorted([lname, b"dir-\xe9", b"ren-\xc3\x28", b"mk-\xff"])
        assert os.listdir(os.path.join(m, b"dir-\xe9")) == [b"added-\xfe"]
        assert read(os.path.join(m, b"ren-\xc3\x28")) == b"new"
    up = os.fsencode(stack.upper)
    names = set(os.listdir(up))
    assert {lname, b"ren-\xc3\x28", b"mk-\xff", b"dir-\xe9"} <= names
    assert b"new-\x80\x81" not in names


# ---------------------------------------------------------------------------- special files

def test_fifo(stack):
    os.mkfifo(stack.lower / "lowfifo", 0o644)
    with stack.mount():
        m = stack.mnt
        os.mkfifo(m / "fifo", 0o640)
        assert stat.S_ISFIFO(os.lstat(m / "fifo").st_mode)
        r = os.open(m / "fifo", os.O_RDONLY | os.O_NONBLOCK)
        try:
            w = os.open(m / "fifo", os.O_WRONLY | os.O_NONBLOCK)
            os.write(w, b"through the pipe")
            os.close(w)
            assert os.read(r, 100) == b"through the pipe"
        finally:
            os.close(r)
        os.chmod(m / "lowfifo", 0o600)  # copy-up of a FIFO
        assert stat.S_ISFIFO(os.lstat(m / "lowfifo").st_mode)
    assert stat.S_ISFIFO(os.lstat(stack.upper / "fifo").st_mode)
    st = os.lstat(stack.upper / "lowfifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600


def test_unix_socket(stack):
    with stack.mount():
        m = stack.mnt
        path = os.fspath(m / "sock")
        cwd = os.getcwd()
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.chdir(m)  # sun_path is limited to 108 bytes
            srv.bind("sock")
            srv.listen(1)
            cli.connect("sock")
            conn, _ = srv.accept()
            cli.sendall(b"ping")
            assert conn.recv(10) == b"ping"
            conn.close()
        finally:
            os.chdir(cwd)
            cli.close()
            srv.close()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert stat.S_ISSOCK(os.lstat(stack.upper / "sock").st_mode)


@requires_root
def test_char_device(stack):
    os.mknod(stack.lower / "lowdev", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    with stack.mount():
        m = stack.mnt
        os.mknod(m / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        st = os.lstat(m / "null")
        assert stat.S_ISCHR(st.st_mode)
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
        os.chown(m / "lowdev", 7, 7)  # copy-up of a device node
        st = os.lstat(m / "lowdev")
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 5)
    st = os.lstat(stack.upper / "null")
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    st = os.lstat(stack.upper / "lowdev")
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 5)
    assert st.st_uid == 7


# --------------------------------------------------------------------------- statfs, I/O

def test_statfs(stack):
    with stack.mount():
        sv = os.statvfs(stack.mnt)
    ref = os.statvfs(stack.upper)
    assert sv.f_blocks * sv.f_frsize == ref.f_blocks * ref.f_frsize
    assert sv.f_files == ref.f_files
    assert sv.f_namemax == ref.f_namemax == 255
    assert 0 < sv.f_bavail * sv.f_frsize <= sv.f_blocks * sv.f_frsize
    assert sv.f_bsize > 0


def test_statfs_readonly_reports_top_lower(stack2):
    with stack2.mount(readonly=True):
        sv = os.statvfs(stack2.mnt)
    ref = os.statvfs(stack2.lower)
    assert sv.f_blocks * sv.f_frsize == ref.f_blocks * ref.f_frsize
    assert sv.f_namemax == ref.f_namemax


def test_fallocate(stack):
    write(stack.lower / "f", b"A" * 4096)
    with stack.mount():
        m = stack.mnt
        fd = os.open(m / "f", os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, MiB)
            assert os.fstat(fd).st_size == MiB
        finally:
            os.close(fd)
        data = read(m / "f")
        assert data[:4096] == b"A" * 4096 and data[4096:] == b"\0" * (MiB - 4096)
        fd = os.open(m / "new", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, 8 * MiB)
            assert os.fstat(fd).st_size == 8 * MiB
        finally:
            os.close(fd)
        st = os.stat(stack.upper / "new")
        assert st.st_size == 8 * MiB
        assert st.st_blocks * 512 >= 8 * MiB, "fallocate did not allocate in the upper"
    assert read(stack.lower / "f") == b"A" * 4096


def test_fallocate_punch_hole(stack):
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
    write(stack.lower / "f", b"B" * (256 * 1024))
    with stack.mount():
        m = stack.mnt
        fd = os.open(m / "f", os.O_RDWR)
        try:
            rc = libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 64 * 1024,
                                64 * 1024)
            assert rc == 0, os.strerror(ctypes.get_errno())
            assert os.fstat(fd).st_size == 256 * 1024
        finally:
            os.close(fd)
        data = read(m / "f")
        assert data == b"B" * 65536 + b"\0" * 65536 + b"B" * (128 * 1024)
    assert read(stack.lower / "f") == b"B" * (256 * 1024)


def test_open_append(stack):
    write(stack.lower / "f", b"hello")
    with stack.mount():
        m = stack.mnt
        fd = os.open(m / "f", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b" world")
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, b"!")  # O_APPEND: still at the end
        finally:
            os.close(fd)
        assert read(m / "f") == b"hello world!"
    assert read(stack.upper / "f") == b"hello world!"
    assert read(stack.lower / "f") == b"hello"


def test_open_excl(stack):
    write(stack.lower / "f", b"lower")
    write(stack.lower / "gone", b"lower")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with stack.mount():
        m = stack.mnt
        raises_errno(errno.EEXIST, os.open, m / "f", flags, 0o644)
        assert read(m / "f") == b"lower"
        fd = os.open(m / "new", flags, 0o644)
        os.close(fd)
        raises_errno(errno.EEXIST, os.open, m / "new", flags, 0o644)
        os.unlink(m / "gone")  # whiteout: the name is free again
        fd = os.open(m / "gone", flags, 0o644)
        try:
            os.write(fd, b"fresh")
        finally:
            os.close(fd)
        assert read(m / "gone") == b"fresh"
        raises_errno(errno.EEXIST, os.open, m / "gone", flags, 0o644)
    assert read(stack.lower / "gone") == b"lower"


def test_open_trunc(stack):
    write(stack.lower / "f", b"x" * 10000)
    write(stack.lower / "g", b"y" * 10000)
    with stack.mount():
        m = stack.mnt
        fd = os.open(m / "f", os.O_WRONLY | os.O_TRUNC)
        try:
            assert os.fstat(fd).st_size == 0
            os.write(fd, b"new")
        finally:
            os.close(fd)
        assert read(m / "f") == b"new"
        assert os.stat(m / "f").st_size == 3
        fd = os.open(m / "g", os.O_RDWR | os.O_TRUNC)
        try:
            assert os.read(fd, 100) == b""
        finally:
            os.close(fd)
        assert os.stat(m / "g").st_size == 0
    assert read(stack.upper / "f") == b"new"
    assert read(stack.lower / "f") == b"x" * 10000
    assert read(stack.lower / "g") == b"y" * 10000


def test_hard_link_of_lower_file(stack):
    write(stack.lower / "a", b"original")
    with stack.mount():
        m = stack.mnt
        os.link(m / "a", m / "b")
        sa, sb = os.stat(m / "a"), os.stat(m / "b")
        assert sa.st_nlink == 2 and sb.st_nlink == 2
        assert sa.st_ino == sb.st_ino
        with open(m / "b", "r+b") as fh:
            fh.write(b"CHANGED!")
        assert read(m / "a") == b"CHANGED!"
        with open(m / "a", "ab") as fh:
            fh.write(b"+tail")
        assert read(m / "b") == b"CHANGED!+tail"
    ua, ub = os.stat(stack.upper / "a"), os.stat(stack.upper / "b")
    assert ua.st_ino == ub.st_ino and ua.st_nlink == 2
    assert read(stack.lower / "a") == b"original"
    with stack.mount():  # still one file after a remount
        m = stack.mnt
        assert os.stat(m / "a").st_nlink == 2
        with open(m / "a", "wb") as fh:
            fh.write(b"again")
        assert read(m / "b") == b"again"


# ------------------------------------------------------------------------- on-disk format

@requires_root
def test_overlay_private_xattrs_never_shown(stack2):
    l0, l1 = stack2.lowers
    write(l1 / "d" / "hidden", b"below the opaque dir")
    write(l0 / "d" / "top", b"t")
    os.setxattr(l0 / "d", "trusted.overlay.opaque", b"y")
    os.setxattr(l0 / "d", "user.keep", b"1")
    write(l0 / "f", b"f")
    os.setxattr(l0 / "f", "trusted.overlay.foo", b"bar")
    os.setxattr(l0 / "f", "user.keep", b"2")
    with stack2.mount():
        m = stack2.mnt
        assert os.listdir(m / "d") == ["top"]
        for p in (m / "d", m / "f"):
            names = os.listxattr(p)
            assert "user.keep" in names
            assert not [n for n in names if n.startswith("trusted.overlay.")], names
        with pytest.raises(OSError):
            os.getxattr(m / "d", "trusted.overlay.opaque")
        # after a copy-up (which writes trusted.overlay.origin in the upper) still hidden
        os.chmod(m / "f", 0o600)
        os.chmod(m / "d", 0o700)
        os.unlink(m / "d" / "top")  # a whiteout / opaque handling in the upper
        for p in (m, m / "d", m / "f"):
            names = os.listxattr(p)
            assert not [n for n in names if n.startswith("trusted.overlay.")], (p, names)
        assert os.listdir(m / "d") == []


@requires_root
def test_lower_whiteout_hides_lower_entries(stack2):
    l0, l1 = stack2.lowers
    write(l1 / "gone", b"should be hidden")
    write(l1 / "kept", b"kept")
    os.mknod(l0 / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    with stack2.mount():
        m = stack2.mnt
        assert sorted(os.listdir(m)) == ["kept"]
        raises_errno(errno.ENOENT, os.stat, m / "gone")
