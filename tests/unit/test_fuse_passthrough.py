"""fuse/passthrough.py: which opens pass through, one backing id per inode, the kernel's rule
that an inode's opens are all cached or all passed through, and the id dropped at the last
release. The kernel's side is a fake channel; tests/integration/test_passthrough.py mounts."""
import os
import stat

import pytest

from unionfs.fuse import proto as P
from unionfs.fuse.passthrough import Passthrough


class Channel:
    def __init__(self, refuse=False):
        self.refuse = refuse
        self.next_id = 1
        self.open_ids = {}   # backing id -> the fd it was made from
        self.closed = []

    def backing_open(self, fd):
        if self.refuse:
            raise OSError(1, "refused")
        bid, self.next_id = self.next_id, self.next_id + 1
        self.open_ids[bid] = fd
        return bid

    def backing_close(self, bid):
        del self.open_ids[bid]
        self.closed.append(bid)


class Handle:
    def __init__(self, lower=False):
        self.lower = lower
        self.written = False


@pytest.fixture
def files(tmp_path):
    """Open fds of real files (the mode check reads them): fds[name]."""
    fds = []

    def make(name, mode=0o644):
        p = tmp_path / name
        p.write_bytes(b"x")
        os.chmod(p, mode)
        fd = os.open(p, os.O_RDONLY)
        fds.append(fd)
        return fd
    yield make
    for fd in fds:
        os.close(fd)


def rw(channel=None):
    pt = Passthrough(channel or Channel(), read_only=False)
    pt.on = True
    return pt


def test_upper_files_pass_through_sharing_one_backing_id(files):
    ch = Channel()
    pt = rw(ch)
    a, b = files("a"), files("b")
    assert pt.open(7, a, Handle(), os.O_RDONLY, False) == (P.FOPEN_PASSTHROUGH, 1)
    assert pt.open(7, b, Handle(), os.O_RDWR, False) == (P.FOPEN_PASSTHROUGH, 1)
    assert len(pt) == 1
    pt.release(a)
    assert ch.closed == []           # the inode still has an open
    pt.release(b)
    assert ch.closed == [1] and len(pt) == 0
    assert pt.open(7, a, Handle(), os.O_RDONLY, False) == (P.FOPEN_PASSTHROUGH, 2)


def test_lower_files_setid_files_and_traced_opens_are_served_by_the_daemon(files):
    pt = rw()
    fd = files("f")
    assert pt.open(1, fd, Handle(lower=True), os.O_RDONLY, False) == (P.FOPEN_KEEP_CACHE, 0)
    assert pt.open(2, files("s", 0o4755), Handle(), os.O_RDONLY, False) == (0, 0)
    assert pt.open(3, files("g", 0o2755), Handle(), os.O_RDONLY, False) == (0, 0)
    assert pt.open(4, files("t"), Handle(), os.O_RDONLY, True) == (0, 0)  # someone traces
    assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o644


def test_an_inode_never_mixes_cached_and_passthrough_opens(files):
    pt = rw()
    a, b, c = files("a"), files("b"), files("c")
    # a traced open makes the inode cached: a later open, untraced, stays cached
    assert pt.open(5, a, Handle(), os.O_RDONLY, True) == (0, 0)
    assert pt.open(5, b, Handle(), os.O_RDONLY, False) == (0, 0)
    pt.release(a)
    pt.release(b)
    assert pt.open(5, c, Handle(), os.O_RDONLY, False)[0] == P.FOPEN_PASSTHROUGH
    # passing through now: a traced open joins it (the kernel refuses a cached one)
    assert pt.open(5, a, Handle(), os.O_RDONLY, True)[0] == P.FOPEN_PASSTHROUGH


def test_writers_that_pass_through_tell_other_names_at_flush(files):
    pt = rw()
    h, r = Handle(), Handle()
    pt.open(1, files("a"), h, os.O_WRONLY, False)
    pt.open(1, files("b"), r, os.O_RDONLY, False)
    assert h.written and not r.written


def test_a_refused_backing_file_is_served_by_the_daemon(files):
    pt = rw(Channel(refuse=True))
    assert pt.open(1, files("a"), Handle(), os.O_RDONLY, False) == (0, 0)
    ro = Passthrough(Channel(refuse=True), read_only=True)
    ro.on = True
    assert ro.open(1, files("b"), Handle(lower=True), os.O_RDONLY, False) == (
        P.FOPEN_KEEP_CACHE, 0)


def test_read_only_mounts_pass_every_file_and_off_means_cached(files):
    ro = Passthrough(Channel(), read_only=True)
    ro.on = True
    assert ro.open(1, files("a", 0o4755), Handle(lower=True), os.O_RDONLY, True) == (
        P.FOPEN_PASSTHROUGH, 1)
    off = Passthrough(Channel(), read_only=False)
    assert off.open(1, files("b"), Handle(), os.O_RDONLY, False) == (P.FOPEN_KEEP_CACHE, 0)
