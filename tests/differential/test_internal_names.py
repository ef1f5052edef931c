"""User names never collide with the daemon's internal state (issue 12, point 4).

The FUSE server keeps a file unlinked while open under a name of its own until its last close.
That name was once `.fuse_hidden<16 hex>` in the file's directory, and any rename onto a name of
that shape was taken for the server's own: the file vanished and went at the next mount. Files
unlinked while open are now tracked by node, under a name no user can give; every operation
that makes a name must treat these names like any other, as the kernel does."""
import os

import pytest

from tests.differential._diff import (DIFFERENTIAL, File, attempt, layers, ls, P, read,
                                      run_differential, st, write)

pytestmark = DIFFERENTIAL

HIDDEN = ".fuse_hidden0000000100000002"   # the shape of libfuse's (and once unionfs's) names
LOWER = {"d/f": File(b"lower\n"), "d/g": b"g", ".fuse_hidden00000002000000ff": b"lower hid"}


def _open_then(p, fn):
    """fn() while p is open; the open file's data and link count afterwards."""
    fd = os.open(p, os.O_RDONLY)
    try:
        out = attempt(fn)
        s = os.fstat(fd)
        return [out, os.pread(fd, 100, 0), s.st_nlink]
    finally:
        os.close(fd)


MAKERS = {
    "rename": lambda m: os.rename(P(m, "d/f"), P(m, "d", HIDDEN)),
    "rename_upper": lambda m: (write(P(m, "d/new"), b"new\n"),
                               os.rename(P(m, "d/new"), P(m, "d", HIDDEN))),
    "create": lambda m: write(P(m, "d", HIDDEN), b"made\n"),
    "mkdir": lambda m: os.mkdir(P(m, "d", HIDDEN)),
    "symlink": lambda m: os.symlink("f", P(m, "d", HIDDEN)),
    "mknod": lambda m: os.mkfifo(P(m, "d", HIDDEN)),
    "link": lambda m: os.link(P(m, "d/f"), P(m, "d", HIDDEN)),
    # the server hides an open file: a user's name of the same shape is left alone
    "rename_then_unlink_open": lambda m: (
        os.rename(P(m, "d/g"), P(m, "d", HIDDEN)),
        _open_then(P(m, "d/f"), lambda: os.unlink(P(m, "d/f")))),
    "rename_over_open_hidden_shape": lambda m: (
        os.rename(P(m, "d/g"), P(m, "d", HIDDEN)),
        _open_then(P(m, "d", HIDDEN), lambda: os.rename(P(m, "d/f"), P(m, "d", HIDDEN)))),
}


@pytest.mark.parametrize("op", sorted(MAKERS))
def test_names_shaped_like_internal_ones_are_plain_names(tmp_path, op):
    def scenario(mnt):
        h = P(mnt, "d", HIDDEN)
        out = [attempt(MAKERS[op], mnt), ls(P(mnt, "d")), attempt(st, h, nlink=True),
               attempt(os.readlink, h) if os.path.islink(h) else None,
               attempt(read, h) if os.path.isfile(h) else None,
               attempt(st, P(mnt, ".fuse_hidden00000002000000ff"), nlink=True)]
        # what the kernel shows after the operation is what it shows after a remount (the
        # runner's cross mounts) and what it keeps after a second change of the name
        out.append(attempt(os.rename, h, P(mnt, "d/renamed")))
        out.append(ls(P(mnt, "d")))
        return out

    run_differential(tmp_path, layers(LOWER), scenario)
