"""fuse/handles.py and the server's handlers over it, driven as the kernel drives them (packed
requests in, replies read back from a fake channel): the open-file table, listing generations,
an open file whose name is gone, and the control directory's routing (unionfs/control.py)."""
import errno
import json
import os
import stat

import pytest

from tests.unit.helpers import FakeChannel, needs_root, read, union_env, work_leftovers, write
from unionfs import control
from unionfs.core import readdir
from unionfs.fuse import proto as P
from unionfs.fuse import server as S
from unionfs.fuse.nodes import ROOT
from unionfs.observe import Recorder


def _server(monkeypatch, union):
    monkeypatch.setattr(P, "Channel", FakeChannel)
    union.observer = Recorder(union)
    srv = S.Server(union, "/nonexistent", {})
    union.on_invalidate = srv._invalidate
    srv.local.ctx = (0, 0, os.getpid())
    return srv


def _ask(srv, handler, nid, data=b""):
    """(errno, payload) of one request, answered as the server's worker answers it."""
    try:
        getattr(srv, handler)(7, nid, memoryview(bytes(data)))
    except OSError as e:
        srv.channel.reply_error(7, e.errno)
    _unique, err, payload = srv.channel.replies[-1]
    return -err, payload


def _ok(srv, handler, nid, data=b""):
    err, payload = _ask(srv, handler, nid, data)
    assert err == 0, os.strerror(err)
    return payload


def _lookup(srv, parent, name):
    return P.ENTRY.unpack_from(_ok(srv, "lookup", parent, name.encode() + b"\0"))[0]


def _open(srv, nid, flags):
    return P.OPEN_OUT.unpack_from(_ok(srv, "open", nid, P.OPEN_IN.pack(flags, 0)))[0]


def _rw(fh, offset, size, data=b""):
    return P.RW_IN.pack(fh, offset, size, 0, 0, 0, 0) + data


def _nlink(srv, nid, fh=None):
    out = _ok(srv, "getattr", nid, P.GETATTR_IN.pack(P.GETATTR_FH if fh else 0, 0, fh or 0))
    return P.ATTR.unpack_from(out, P.ATTR_OUT.size)[10]


def _setattr(valid, fh=0, mode=0):
    return P.SETATTR_IN.pack(valid, 0, fh, 0, 0, 0, 0, 0, 0, 0, 0, mode, 0, 0, 0, 0)


def _xattr(size, name, value=b"", flags=0):
    return P.XATTR_IN.pack(size, flags) + name.encode() + b"\0" + value


# ---- listing generations: READDIR offsets name a listing and an index in it -------------------

class _Union:
    """What the server asks of a union to list directories."""
    root = "root"
    layers = []
    upper = None

    def __init__(self, size=3):
        self.size = size
        self.calls = []

    def listdir(self, path, plus):
        self.calls.append((path, plus))
        n = len(self.calls)
        full = (os.lstat("/"), 1, 1) if plus else None
        return [(".", stat.S_IFDIR, 1, None), ("..", stat.S_IFDIR, 1, None)] + [
            ("f%d-%d" % (n, i), stat.S_IFREG, 100 + i, full) for i in range(self.size - 2)]

    def ino_of(self, root):
        return 1


def _listing(monkeypatch, size=3):
    union = _Union(size)
    srv = _server(monkeypatch, union)
    return srv, union, srv.nodes.looked_up(ROOT, "d")


def _read(srv, nid, offset, plus=False):
    """[(generation, index, name)] of one READDIR (READDIRPLUS) reply from `offset`."""
    out = _ok(srv, "readdirplus_" if plus else "readdir", nid, _rw(0, offset, 1 << 16))
    got, i = [], 0
    while i < len(out):
        if plus:
            i += P.ENTRY.size + P.ATTR.size
        _ino, off, n, _type = P.DIRENT.unpack_from(out, i)
        got.append((off >> 32, off & 0xFFFFFFFF, out[i + P.DIRENT.size:i + P.DIRENT.size + n]
                    .decode()))
        i += P.DIRENT.size + n + (-n % 8)
    return got


def _off(gen, k):
    return (gen << 32) | k


def test_offset_zero_takes_new_listing(monkeypatch):
    srv, union, d = _listing(monkeypatch)
    first = _read(srv, d, 0)
    assert union.calls == [("/d", False)]
    assert [e[2] for e in first] == [".", "..", "f1-0"] and [e[1] for e in first] == [1, 2, 3]
    second = _read(srv, d, 0)
    gen1, gen2 = first[0][0], second[0][0]
    assert gen2 != gen1 and gen1 > 0 and gen2 > 0
    assert second[2][2] == "f2-0"
    assert len(union.calls) == 2 and len(srv.listings) == 2


def test_offset_continues_same_listing_across_readers(monkeypatch):
    srv, union, d = _listing(monkeypatch)
    gen_a = _read(srv, d, 0)[0][0]
    gen_b = _read(srv, d, 0)[0][0]  # another reader starts meanwhile
    assert _read(srv, d, _off(gen_a, 2)) == [(gen_a, 3, "f1-0")]
    assert _read(srv, d, _off(gen_b, 1)) == [(gen_b, 2, ".."), (gen_b, 3, "f2-0")]
    assert _read(srv, d, _off(gen_a, 3)) == []  # past the end: still that one
    assert len(union.calls) == 2


def test_offset_of_unknown_generation_takes_new_listing(monkeypatch):
    srv, union, d = _listing(monkeypatch)
    gen = _read(srv, d, 0)[0][0]
    new = _read(srv, d, _off(gen + 100, 2))
    assert new[0][0] not in (gen, gen + 100) and new[0][2] == "f2-0"
    later = _read(srv, d, 2)  # generation 0: no listing's
    assert later[0][0] not in (0, new[0][0])
    assert len(union.calls) == 3


def test_plus_reader_does_not_continue_plain_listing(monkeypatch):
    srv, union, d = _listing(monkeypatch)
    plain = _read(srv, d, 0)[0][0]
    plus = _read(srv, d, _off(plain, 1), plus=True)
    gen = plus[0][0]
    assert gen != plain and [e[2] for e in plus] == ["..", "f2-0"]
    assert union.calls[-1] == ("/d", True)
    assert srv.nodes.child(d, "f2-0") is not None  # the plus entry handed the kernel a node
    # a plain reader may go on with a plus listing
    assert _read(srv, d, _off(gen, 2)) == [(gen, 3, "f2-0")]
    assert len(union.calls) == 2


def test_oldest_listing_evicted_beyond_kept(monkeypatch):
    monkeypatch.setattr(readdir, "LISTINGS_KEPT", 6)  # two listings of 3 entries
    srv, union, d = _listing(monkeypatch, 3)
    g1, g2 = _read(srv, d, 0)[0][0], _read(srv, d, 0)[0][0]
    assert len(srv.listings) == 2
    g3 = _read(srv, d, 0)[0][0]
    assert len(srv.listings) == 2
    # g2 and g3 still continue without listing again
    assert _read(srv, d, _off(g2, 2)) == [(g2, 3, "f2-0")]
    assert _read(srv, d, _off(g3, 2)) == [(g3, 3, "f3-0")]
    assert len(union.calls) == 3
    # g1 is gone: its reader continues in a new listing
    g4 = _read(srv, d, _off(g1, 2))
    assert g4[0][0] not in (g1, g2, g3) and g4[0][2] == "f4-0"
    assert len(union.calls) == 4 and len(srv.listings) == 2


def test_recently_read_listing_kept_over_older_unread(monkeypatch):
    monkeypatch.setattr(readdir, "LISTINGS_KEPT", 6)
    srv, union, d = _listing(monkeypatch, 3)
    g1, g2 = _read(srv, d, 0)[0][0], _read(srv, d, 0)[0][0]
    assert _read(srv, d, _off(g1, 2)) == [(g1, 3, "f1-0")]  # g1 read last
    _read(srv, d, 0)  # evicts g2, the least recently read
    assert _read(srv, d, _off(g1, 2)) == [(g1, 3, "f1-0")]
    assert len(union.calls) == 3
    again = _read(srv, d, _off(g2, 2))
    assert again[0][0] != g2 and again[0][2] == "f4-0"


def test_listing_larger_than_kept_stays_while_alone(monkeypatch):
    monkeypatch.setattr(readdir, "LISTINGS_KEPT", 2)
    srv, union, d = _listing(monkeypatch, 5)
    g1 = _read(srv, d, 0)[0][0]
    assert len(srv.listings) == 1
    assert _read(srv, d, _off(g1, 4)) == [(g1, 5, "f1-2")]
    g2 = _read(srv, d, 0)[0][0]
    assert len(srv.listings) == 1
    assert _read(srv, d, _off(g2, 4)) == [(g2, 5, "f2-2")]
    g3 = _read(srv, d, _off(g1, 4))
    assert g3[0][0] not in (g1, g2)
    assert len(union.calls) == 3


def test_control_directory_listing_is_generation_zero(monkeypatch):
    srv, union, _d = _listing(monkeypatch)
    ctl = srv.nodes.looked_up(ROOT, control.NAME)
    got = _read(srv, ctl, 0)
    assert {e[0] for e in got} == {0}
    assert [e[2] for e in got] == [".", "..", "stats", "trace"]
    assert union.calls == [] and len(srv.listings) == 0


def test_control_directory_attributes_pack_as_the_kernels(monkeypatch):
    srv, _union, _d = _listing(monkeypatch)
    ctl = srv.nodes.looked_up(ROOT, control.NAME)
    st, ino, _nl = srv.control.stat(control.PATH)  # not an os.stat_result: same fields
    fields = P.ATTR.unpack_from(_ok(srv, "getattr", ctl, P.GETATTR_IN.pack(0, 0, 0)),
                                P.ATTR_OUT.size)
    assert fields[0] == ino and fields[10] == 2
    assert stat.S_ISDIR(fields[9])
    assert fields[3] * 10**9 + fields[6] == st.st_atime_ns
    assert fields[6] < 10**9


# ---- the open-file table over a real union ---------------------------------------------------

@pytest.fixture
def srv(tmp_path, monkeypatch):
    union, lower, upper, _work = union_env(tmp_path)
    server = _server(monkeypatch, union)
    server.lower, server.upper = lower, upper
    return server


@needs_root
def test_write_to_a_lower_file_copies_up_and_the_table_holds_it_until_release(srv):
    f = _lookup(srv, ROOT, "f")
    fh = _open(srv, f, os.O_WRONLY)
    assert len(srv.files) == 1 and srv.files.get(fh).fd == fh
    assert P.WRITE_OUT.unpack(_ok(srv, "write", f, _rw(fh, 0, 3, b"new"))) == (3, 0)
    assert read(srv.upper + "/f") == b"newer data"
    _ok(srv, "flush", f, P.U64.pack(fh))
    _ok(srv, "release", f, P.RELEASE_IN.pack(fh, 0, 0, 0))
    assert len(srv.files) == 0
    assert _ask(srv, "write", f, _rw(fh, 0, 1, b"x"))[0] == errno.EBADF
    ops = srv.stats.snapshot()
    assert ops["write"]["count"] == 2 and ops["open"]["count"] == 1


def test_stats_count_a_setattr_as_its_changes_not_as_a_getattr(srv):
    """`unionfs stats` counts requests: the attributes a SETATTR answers with are part of it,
    not a GETATTR the kernel sent (a chown looked like two GETATTRs and a SETATTR)."""
    f = _lookup(srv, ROOT, "f")
    _ok(srv, "getattr", f, P.GETATTR_IN.pack(0, 0, 0))
    before = srv.stats.snapshot()
    _ok(srv, "setattr", f, _setattr(P.FATTR_MODE, mode=0o600))
    ops = srv.stats.snapshot()
    assert ops["chmod"]["count"] == before.get("chmod", {}).get("count", 0) + 1
    assert ops["getattr"]["count"] == before["getattr"]["count"] == 1
    assert stat.S_IMODE(P.ATTR.unpack_from(srv.channel.replies[-1][2], P.ATTR_OUT.size)[9]) \
        == 0o600


@needs_root
def test_read_fsync_fallocate_lseek_go_through_the_handle(srv):
    f = _lookup(srv, ROOT, "f")
    fh = _open(srv, f, os.O_RDWR)
    _ok(srv, "read", f, _rw(fh, 6, 100))
    assert srv.channel.replies[-1][2][16:] == b"data"
    _ok(srv, "fsync", f, P.FSYNC_IN.pack(fh, 0, 0))
    _ok(srv, "fallocate", f, P.FALLOCATE_IN.pack(fh, 0, 8192, 0, 0))
    assert os.stat(srv.upper + "/f").st_size == 8192
    assert P.U64.unpack(_ok(srv, "lseek", f, P.LSEEK_IN.pack(fh, 0, os.SEEK_DATA, 0))) == (0,)
    for handler, data in (("read", _rw(999, 0, 1)), ("fsync", P.FSYNC_IN.pack(999, 0, 0)),
                          ("fallocate", P.FALLOCATE_IN.pack(999, 0, 1, 0, 0)),
                          ("lseek", P.LSEEK_IN.pack(999, 0, os.SEEK_DATA, 0))):
        assert _ask(srv, handler, f, data)[0] == errno.EBADF, handler
    _ok(srv, "release", f, P.RELEASE_IN.pack(fh, 0, 0, 0))


@needs_root
def test_open_file_whose_name_is_gone_answers_through_its_handle(srv):
    """GETATTR with and without the handle agree: the union counts a detached file's links
    (issue 14; the server subtracted one from the handle's count, so a lower file read 0
    through its handle and 1 through its node). SETATTR without a name goes through the
    handle: an upper file changes, a lower one cannot (ESTALE)."""
    write(srv.upper + "/u", b"u")
    f, u = _lookup(srv, ROOT, "f"), _lookup(srv, ROOT, "u")
    ffh, ufh = _open(srv, f, os.O_RDONLY), _open(srv, u, os.O_RDWR)
    _ok(srv, "unlink", ROOT, b"f\0")
    _ok(srv, "unlink", ROOT, b"u\0")
    assert f in srv.nodes.hidden and u in srv.nodes.hidden
    assert (_nlink(srv, f, ffh), _nlink(srv, f)) == (1, 1)   # the lower file keeps its link
    assert (_nlink(srv, u, ufh), _nlink(srv, u)) == (0, 0)   # in the work dir, no name left
    parents = [srv.nodes._parent[nid] for nid in (f, u)]
    for nid in (f, u):
        srv.nodes._parent[nid] = 0  # nodes with no path at all: only their handles serve
    _ok(srv, "setattr", u, _setattr(P.FATTR_FH | P.FATTR_MODE, ufh, 0o600))
    assert stat.S_IMODE(os.fstat(ufh).st_mode) == 0o600
    assert _ask(srv, "setattr", f, _setattr(P.FATTR_FH | P.FATTR_MODE, ffh, 0o600))[0] == \
        errno.ESTALE
    assert _ask(srv, "getxattr", f, _xattr(0, "user.unionfs.source"))[0] == errno.ESTALE
    for nid, parent in zip((f, u), parents):
        srv.nodes._parent[nid] = parent
    for nid, fh in ((f, ffh), (u, ufh)):
        _ok(srv, "release", nid, P.RELEASE_IN.pack(fh, 0, 0, 0))
    assert len(srv.files) == 0 and work_leftovers(srv.union) == []


@needs_root
def test_which_xattr_of_a_detached_file_has_no_merged_path(srv):
    f = _lookup(srv, ROOT, "f")
    fh = _open(srv, f, os.O_RDONLY)
    _ok(srv, "unlink", ROOT, b"f\0")
    assert _ask(srv, "getxattr", f, _xattr(0, "user.unionfs.source"))[0] == errno.ENODATA
    _ok(srv, "release", f, P.RELEASE_IN.pack(fh, 0, 0, 0))


# ---- the control directory's routing ---------------------------------------------------------

@needs_root
def test_control_files_are_served_by_the_control_directory(srv):
    f = _lookup(srv, ROOT, "f")
    ffh = _open(srv, f, os.O_RDONLY)
    ctl = _lookup(srv, ROOT, control.NAME)
    stats = _lookup(srv, ctl, "stats")
    fh = _open(srv, stats, os.O_RDONLY)
    assert control.owns_handle(fh) and len(srv.files) == 1
    _ok(srv, "read", stats, _rw(fh, 0, 1 << 16))
    doc = json.loads(srv.channel.replies[-1][2][16:])
    assert doc["open_files"] == 1 and doc["listings"] == 0
    _ok(srv, "fsync", stats, P.FSYNC_IN.pack(fh, 0, 0))
    assert P.U64.unpack(_ok(srv, "lseek", stats, P.LSEEK_IN.pack(fh, 0, os.SEEK_DATA, 0))) == (0,)
    assert _ask(srv, "write", stats, _rw(fh, 0, 1, b"x"))[0] == errno.EBADF
    assert _ask(srv, "open", stats, P.OPEN_IN.pack(os.O_WRONLY, 0))[0] == errno.EACCES
    _ok(srv, "release", stats, P.RELEASE_IN.pack(fh, 0, 0, 0))
    assert srv.control.handles == {} and len(srv.files) == 1
    _ok(srv, "release", f, P.RELEASE_IN.pack(ffh, 0, 0, 0))


@needs_root
def test_control_paths_and_which_xattrs_cannot_change(srv):
    f = _lookup(srv, ROOT, "f")
    ctl = _lookup(srv, ROOT, control.NAME)
    stats = _lookup(srv, ctl, "stats")
    refused = [
        ("setxattr", f, _xattr(1, "user.unionfs.source", b"x")),
        ("removexattr", f, b"user.unionfs.source\0"),
        ("setxattr", stats, _xattr(1, "user.x", b"x")),
        ("setattr", stats, _setattr(P.FATTR_MODE, mode=0o777)),
        ("setattr", ctl, _setattr(P.FATTR_SIZE)),
        ("create", ctl, P.CREATE_IN.pack(os.O_WRONLY, 0o644, 0, 0) + b"new\0"),
        ("mkdir", ctl, P.MKDIR_IN.pack(0o755, 0) + b"new\0"),
        ("unlink", ctl, b"stats\0"),
    ]
    for handler, nid, data in refused:
        assert _ask(srv, handler, nid, data)[0] == errno.EPERM, handler
    assert len(srv.files) == 0
    source = _ok(srv, "getxattr", f, _xattr(4096, "user.unionfs.source"))
    assert source.decode() == srv.lower
    assert _ask(srv, "getxattr", stats, _xattr(4096, "user.unionfs.source"))[0] == errno.ENODATA
    assert _ok(srv, "listxattr", stats, P.XATTR_IN.pack(4096, 0)) == b""


@needs_root
def test_root_listing_shows_the_control_directory_over_a_layers_own(srv):
    os.mkdir(srv.lower + "/" + control.NAME)
    srv.union.cache.clear()
    got = _ok(srv, "readdir", ROOT, _rw(0, 0, 1 << 16))
    ino = {}
    i = 0
    while i < len(got):
        e_ino, _off, n, _t = P.DIRENT.unpack_from(got, i)
        ino[got[i + P.DIRENT.size:i + P.DIRENT.size + n].decode()] = e_ino
        i += P.DIRENT.size + n + (-n % 8)
    assert ino[control.NAME] == srv.control.stat(control.PATH)[1]


# ---- INIT ------------------------------------------------------------------------------------

def test_init_from_another_major_version_is_answered_with_ours(srv):
    # the kernel then retries with 7, as fuse_lowlevel.c's answer to a major it does not speak
    payload = _ok(srv, "init", 0, P.INIT_IN.pack(8, 0, 0, 0) + bytes(48))
    assert len(payload) == P.INIT_OUT.size
    assert P.INIT_OUT.unpack(payload)[:2] == (7, P.MINOR)


def test_init_grants_only_what_was_offered_and_speaks_no_newer_minor(srv):
    offered = P.ASYNC_READ | P.BIG_WRITES | P.DO_READDIRPLUS
    payload = _ok(srv, "init", 0, P.INIT_IN.pack(7, 31, 1 << 17, offered) + bytes(48))
    major, minor, readahead, flags = P.INIT_OUT.unpack(payload)[:4]
    assert (major, minor, readahead) == (7, 31, 1 << 17)
    assert flags == offered and not srv.passthrough.on
