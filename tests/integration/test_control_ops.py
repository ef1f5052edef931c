"""Every operation on the control directory answers (issue 12, point 4): fsync and
lseek(SEEK_DATA/SEEK_HOLE) on its files, and a lower's own ``/.unionfs`` shadowed in the root's
listing exactly as lookups shadow it."""
import errno
import os

import pytest

from tests.integration.conftest import requires_daemon
from tests.mountutil import requires_fuse

pytestmark = [requires_fuse, requires_daemon, pytest.mark.timeout(120)]


def _errno(fn, *a):
    try:
        return fn(*a)
    except OSError as e:
        return errno.errorcode[e.errno]


def test_fsync_and_lseek_on_control_files_answer(stack):
    with stack.mount():
        stats = os.path.join(str(stack.mnt), ".unionfs", "stats")
        fd = os.open(stats, os.O_RDONLY)
        try:
            size = len(os.read(fd, 1 << 20))
            assert size > 0
            assert _errno(os.fsync, fd) is None
            assert _errno(os.fdatasync, fd) is None
            assert os.lseek(fd, 0, os.SEEK_DATA) == 0
            assert os.lseek(fd, 5, os.SEEK_HOLE) == size
            assert _errno(os.lseek, fd, size, os.SEEK_DATA) == "ENXIO"
            assert _errno(os.posix_fallocate, fd, 0, 1) == "EBADF"
        finally:
            os.close(fd)
        fd = os.open(os.path.join(str(stack.mnt), ".unionfs", "trace"), os.O_RDONLY)
        try:
            assert _errno(os.fsync, fd) is None
            assert _errno(os.lseek, fd, 0, os.SEEK_DATA) == "ESPIPE"
        finally:
            os.close(fd)
        # the mount still serves
        assert os.path.isdir(os.path.join(str(stack.mnt), ".unionfs"))


def test_a_lower_control_dir_is_shadowed_in_the_listing(stack):
    (stack.lower / ".unionfs").mkdir()
    (stack.lower / ".unionfs" / "mine").write_bytes(b"lower's own")
    (stack.lower / "f").write_bytes(b"f")
    with stack.mount():
        m = str(stack.mnt)
        ours = os.stat(os.path.join(m, ".unionfs"))  # looked up: the daemon's
        assert oct(ours.st_mode & 0o7777) == "0o555"
        names = os.listdir(m)
        assert sorted(names) == [".unionfs", "f"], names
        with os.scandir(m) as it:
            ent = {e.name: e for e in it}[".unionfs"]
        assert ent.inode() == ours.st_ino and ent.is_dir()
        after = os.stat(os.path.join(m, ".unionfs"))  # the listing's attributes: the same
        assert (after.st_ino, after.st_mode) == (ours.st_ino, ours.st_mode)
        assert sorted(os.listdir(os.path.join(m, ".unionfs"))) == ["stats", "trace"]


def test_which_xattrs_of_a_file_unlinked_while_open(stack):
    """A detached file has no merged path to report: ENODATA, not an error of the daemon."""
    (stack.lower / "f").write_bytes(b"f")
    with stack.mount():
        fd = os.open(os.path.join(str(stack.mnt), "f"), os.O_RDWR)
        try:
            os.unlink(os.path.join(str(stack.mnt), "f"))
            for name in ("user.unionfs.source", "user.unionfs.layers", "user.other"):
                assert _errno(os.getxattr, fd, name) == "ENODATA", name
            assert os.fstat(fd).st_nlink == 0
        finally:
            os.close(fd)
