"""Small builders shared by the unit tests: real layer directories under tmp_path, no mounts, and
a fake /dev/fuse channel for driving the FUSE server's handlers (scripts/trace_write_path.py
uses it too)."""
import os
import stat

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod 0/0, trusted.* xattrs, chown)")

OWNER = (0, 0)


def write(path, data=b"", mode=None):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)
    return path


def read(path):
    with open(str(path), "rb") as f:
        return f.read()


def mkdir(path):
    os.makedirs(str(path), exist_ok=True)
    return str(path)


def whiteout(path):
    """A kernel whiteout (char 0/0)."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    return path


def xset(path, name, value):
    os.setxattr(str(path), name, value, follow_symlinks=False)


def xget(path, name):
    try:
        return os.getxattr(str(path), name, follow_symlinks=False)
    except OSError:
        return None


def is_wh(path):
    try:
        st = os.lstat(str(path))
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def layers(tmp_path, n_lowers=1):
    """(lowers, upper, work) directories, created empty."""
    lowers = [mkdir(tmp_path / ("lower%d" % i)) for i in range(n_lowers)]
    upper = mkdir(tmp_path / "upper")
    work = mkdir(tmp_path / "work")
    return lowers, upper, work


def make_union(lowers, upper, work, **kw):
    from unionfs.core.union import Union
    u = Union(lowers, upper, work, sync=False, **kw)
    if u.copier is not None:
        u.copier.clean()
    return u


def union_env(tmp_path):
    """(union, lower, upper, work): one lower holding f, d/a, d/sub/b, other/x and ln -> f."""
    (lower,), upper, work = layers(tmp_path)
    write(lower + "/f", b"lower data")
    write(lower + "/d/a", b"A")
    write(lower + "/d/sub/b", b"B")
    write(lower + "/other/x", b"X")
    os.symlink("f", lower + "/ln")
    return make_union([lower], upper, work), lower, upper, work


def errno_of(exc_info):
    return exc_info.value.errno


def names(union, path):
    return sorted(e[0] for e in union.listdir(path) if e[0] not in (".", ".."))


def uread(union, path, size=1 << 20):
    h = union.open(path, os.O_RDONLY)
    try:
        return union.read(h, size, 0)
    finally:
        union.release(h)


def uwrite(union, path, data, flags=os.O_WRONLY):
    h = union.open(path, flags)
    try:
        union.write(h, data, 0)
    finally:
        union.release(h)


def ucreate(union, path, data=b"", mode=0o644):
    h = union.create(path, stat.S_IFREG | mode, os.O_WRONLY | os.O_CREAT, OWNER)
    try:
        if data:
            union.write(h, data, 0)
    finally:
        union.release(h)


class FakeChannel:
    """What the FUSE server writes to /dev/fuse, kept: (unique, -errno, payload) per reply; the
    server takes it for fuse.proto.Channel (no mount)."""

    def __init__(self, *args):
        self.replies = []

    def reply(self, unique, payload=b""):
        self.replies.append((unique, 0, bytes(payload)))

    def reply_error(self, unique, err):
        self.replies.append((unique, -err, b""))

    def send(self, parts):
        self.replies.append((None, 0, b"".join(bytes(p) for p in parts)))

    def inval_inode(self, nid, offset=-1, length=0):
        pass


def work_leftovers(union):
    """What the work dir holds besides the shared whiteout (which must be a 0/0 device)."""
    work = union.copier.workdir
    shared = union.writer.shared_whiteout
    if shared is not None:
        assert is_wh(shared)
    # the shared name is a path through the work dir's fd: compare the entry names
    keep = os.path.basename(shared) if shared is not None else None
    return sorted(n for n in os.listdir(work) if n != keep)
