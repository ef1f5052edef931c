"""The FUSE server's FUSE-free parts: fuseproto's struct sizes and packers (against linux/fuse.h
7.31), fuseserver's node table (`Nodes`: ids, paths, forget, remove, rename, exchange, hidden
names, the read/write name locks) and `_name`, and FuseOps.snapshot's listing generations."""
import os
import re
import stat
import threading
import time

import pytest

from unionfs import control, fuseops
from unionfs import fuseproto as P
from unionfs.fuseserver import ROOT, Nodes, Notifier, Server, _name


# ---- fuseproto: struct sizes ----------------------------------------------------------------

@pytest.mark.parametrize("struct, size", [
    (P.IN_HEADER, 40),       # fuse_in_header
    (P.OUT_HEADER, 16),      # fuse_out_header
    (P.ATTR, 88),            # fuse_attr
    (P.SETATTR_IN, 88),      # fuse_setattr_in
    (P.RW_IN, 40),           # fuse_read_in / fuse_write_in
    (P.RELEASE_IN, 24),      # fuse_release_in
    (P.KSTATFS, 80),         # fuse_kstatfs
    (P.OPEN_OUT, 16),        # fuse_open_out
    (P.CREATE_IN, 16),       # fuse_create_in
    (P.MKNOD_IN, 16),        # fuse_mknod_in
    (P.DIRENT, 24),          # fuse_dirent before its name
], ids=lambda v: v if isinstance(v, int) else v.format)
def test_struct_sizes_match_fuse_h(struct, size):
    assert struct.size == size


def test_entry_and_attr_out_sizes_include_fuse_attr():
    assert P.ENTRY.size + P.ATTR.size == 128  # fuse_entry_out
    assert P.ATTR_OUT.size + P.ATTR.size == 104  # fuse_attr_out


def test_init_out_size_matches_fuse_h():
    assert P.INIT_OUT.size == 64


def test_init_out_fields_land_at_fuse_h_offsets():
    raw = P.INIT_OUT.pack(7, 40, 0x1000, 0xABCD, 0, 0, P.MAX_WRITE, 1, 256, 0,
                          P.PASSTHROUGH_FLAGS2, 1)
    assert raw[:16] == (7).to_bytes(4, "little") + (40).to_bytes(4, "little") + \
        (0x1000).to_bytes(4, "little") + (0xABCD).to_bytes(4, "little")
    assert int.from_bytes(raw[20:24], "little") == P.MAX_WRITE  # max_write after 2 u16s
    assert int.from_bytes(raw[24:28], "little") == 1            # time_gran
    assert int.from_bytes(raw[28:30], "little") == 256          # max_pages
    assert int.from_bytes(raw[32:36], "little") == 1 << 5       # flags2: FUSE_PASSTHROUGH >> 32
    assert int.from_bytes(raw[36:40], "little") == 1            # max_stack_depth (7.40)
    assert not any(raw[40:])                                    # unused: zero


# ---- fuseproto: packers ---------------------------------------------------------------------

def _stat_result(**kw):
    """An os.stat_result with every field (hidden ones included) chosen."""
    f = dict(mode=stat.S_IFCHR | 0o640, ino=777, dev=8, nlink=9, uid=1000, gid=1001,
             size=12345, atime_ns=1_700_000_000_123_456_789, mtime_ns=1_600_000_001_000_000_000,
             ctime_ns=999_999_999, blksize=4096, blocks=24, rdev=(5 << 32) | 0x12345678)
    f.update(kw)
    return os.stat_result((
        f["mode"], f["ino"], f["dev"], f["nlink"], f["uid"], f["gid"], f["size"],
        f["atime_ns"] // 10**9, f["mtime_ns"] // 10**9, f["ctime_ns"] // 10**9,
        f["atime_ns"] / 1e9, f["mtime_ns"] / 1e9, f["ctime_ns"] / 1e9,
        f["atime_ns"], f["mtime_ns"], f["ctime_ns"], f["blksize"], f["blocks"], f["rdev"]))


def test_attr_round_trips_a_stat_result():
    st = _stat_result()
    raw = P.attr(st, 42, 3)
    assert len(raw) == P.ATTR.size
    (ino, size, blocks, atime, mtime, ctime, atimens, mtimens, ctimens, mode, nlink, uid, gid,
     rdev, blksize, pad) = P.ATTR.unpack(raw)
    assert (ino, nlink) == (42, 3)  # the union's, not the stat's (777, 9)
    assert (size, blocks, blksize) == (12345, 24, 4096)
    assert (atime, atimens) == (1_700_000_000, 123_456_789)
    assert (mtime, mtimens) == (1_600_000_001, 0)
    assert (ctime, ctimens) == (0, 999_999_999)
    assert (mode, uid, gid) == (stat.S_IFCHR | 0o640, 1000, 1001)
    assert rdev == 0x12345678  # truncated to fuse_attr's 32 bits
    assert pad == 0


def test_attr_accepts_control_stat():
    ops, _union = _ops()
    st, ino, nlink = ops.control.stat(control.PATH)  # not an os.stat_result: same fields
    fields = P.ATTR.unpack(P.attr(st, ino, nlink))
    assert fields[0] == ino and fields[10] == 2
    assert stat.S_ISDIR(fields[9])
    assert fields[3] * 10**9 + fields[6] == st.st_atime_ns
    assert fields[6] < 10**9


def test_bare_attr():
    fields = P.ATTR.unpack(P.bare_attr(5, stat.S_IFDIR))
    assert fields[0] == 5 and fields[9] == stat.S_IFDIR
    assert not any(fields[1:9]) and not any(fields[10:])


@pytest.mark.parametrize("seconds, expect", [
    (0, (0, 0)), (3600.0, (3600, 0)), (1.5, (1, 500_000_000)), (0.25, (0, 250_000_000)),
    (7, (7, 0)),
])
def test_valid_splits_seconds(seconds, expect):
    s, ns = P.valid(seconds)
    assert (s, ns) == expect
    assert isinstance(s, int) and isinstance(ns, int)


@pytest.mark.parametrize("name", [b"a", b"abcdefg", b"abcdefgh", b"abcdefghi", b"x" * 255])
def test_dirent_pads_name_to_8_bytes(name):
    raw = P.dirent(99, (3 << 32) | 4, name, stat.S_IFLNK | 0o777)
    assert len(raw) % 8 == 0
    assert len(raw) == 24 + len(name) + (-len(name)) % 8
    assert len(raw) - 24 - len(name) < 8
    ino, off, namelen, typ = P.DIRENT.unpack_from(raw)
    assert (ino, off, namelen) == (99, (3 << 32) | 4, len(name))
    assert typ == stat.S_IFLNK >> 12 == 10  # DT_LNK
    assert raw[24:24 + namelen] == name
    assert not any(raw[24 + namelen:])


@pytest.mark.parametrize("mode, dt", [(stat.S_IFREG | 0o644, 8), (stat.S_IFDIR, 4),
                                      (stat.S_IFCHR, 2), (stat.S_IFIFO | 0o600, 1),
                                      (stat.S_IFSOCK, 12), (stat.S_IFBLK, 6)])
def test_dirent_type_is_mode_shifted(mode, dt):
    assert P.DIRENT.unpack_from(P.dirent(1, 1, b"n", mode))[3] == dt


# ---- fuseserver._name -----------------------------------------------------------------------

def test_name_reads_nul_terminated_names_in_turn():
    view = memoryview(bytearray(b"\x01\x02old\0new name\0tail"))
    first, end = _name(view, 2)
    assert (first, end) == ("old", 6)
    second, end = _name(view, end)
    assert (second, end) == ("new name", 15)
    with pytest.raises(ValueError):  # no NUL after it
        _name(view, end)


def test_name_at_start_and_empty():
    view = memoryview(b"\0x\0")
    assert _name(view) == ("", 1)
    assert _name(view, 1) == ("x", 3)


def test_name_not_utf8_is_surrogate_escaped():
    raw = b"caf\xe9-\xff\xfe"
    name, end = _name(memoryview(raw + b"\0rest"))
    assert end == len(raw) + 1
    assert name == "caf\udce9-\udcff\udcfe"
    assert name.encode("utf-8", "surrogateescape") == raw
    assert os.fsencode(name) == raw


def test_name_utf8():
    name, _ = _name(memoryview("ünï€\0".encode()))
    assert name == "ünï€"


# ---- Nodes ----------------------------------------------------------------------------------

def _tree(nodes, *paths):
    """Look up every component of each path once per path; {path: id}."""
    ids = {}
    for p in paths:
        nid = ROOT
        parts = p.strip("/").split("/")
        for i, part in enumerate(parts):
            nid = nodes.looked_up(nid, part)
            ids["/" + "/".join(parts[:i + 1])] = nid
    return ids


def test_root():
    nodes = Nodes()
    assert nodes.path(ROOT) == "/"
    assert nodes.by_path("/") == ROOT
    assert nodes.by_path("") == ROOT
    assert nodes.child_path(ROOT, "a") == "/a"


def test_looked_up_same_name_same_id():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    b = nodes.looked_up(ROOT, "b")
    assert a != b and ROOT not in (a, b)
    assert nodes.looked_up(ROOT, "a") == a
    assert nodes.by_id[a].nlookup == 2
    assert nodes.by_id[b].nlookup == 1
    sub = nodes.looked_up(a, "sub")
    assert nodes.path(a) == "/a"
    assert nodes.path(sub) == "/a/sub"
    assert nodes.child_path(sub, "x") == "/a/sub/x"
    assert nodes.child(a, "sub").id == sub
    assert nodes.child(b, "sub") is None
    assert nodes.by_path("/a/sub") == sub
    assert nodes.by_path("/a/sub/") == sub
    assert nodes.by_path("/a/none") is None
    assert nodes.by_path("/b/sub") is None


def test_path_of_unknown_ids():
    nodes = Nodes()
    assert nodes.path(12345) is None
    assert nodes.child_path(12345, "x") is None
    assert nodes.read_lock(12345) == (None, None)


def test_forget_drops_only_at_zero():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    nodes.looked_up(ROOT, "a")
    nodes.looked_up(ROOT, "a")
    nodes.forget(a, 2)
    assert nodes.path(a) == "/a"
    assert nodes.by_path("/a") == a
    nodes.forget(a, 1)
    assert a not in nodes.by_id
    assert nodes.path(a) is None
    assert nodes.by_path("/a") is None
    assert nodes.child(ROOT, "a") is None
    b = nodes.looked_up(ROOT, "b")
    assert b == a  # a forgotten id is given out again: the kernel no longer knows it
    assert nodes.path(b) == "/b" and nodes.by_id[b].nlookup == 1
    assert nodes.by_path("/a") is None
    nodes.forget(10 ** 6, 1)  # an id never given out is ignored
    nodes.forget(2 ** 64 - 1, 1)
    assert nodes.path(b) == "/b"


def test_forget_more_than_held_drops():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    nodes.forget(a, 5)
    assert a not in nodes.by_id


def test_forget_never_drops_root():
    nodes = Nodes()
    nodes.forget(ROOT, 1)
    nodes.forget(ROOT, 100)
    assert nodes.path(ROOT) == "/"
    assert nodes.looked_up(ROOT, "a") in nodes.by_id


def test_removed_detaches_but_keeps_id_until_forgotten():
    nodes = Nodes()
    ids = _tree(nodes, "/d/f", "/d/sub/g")
    f, d, g = ids["/d/f"], ids["/d"], ids["/d/sub/g"]
    nodes.removed(d, "f")
    assert f in nodes.by_id
    assert nodes.path(f) is None
    assert nodes.child_path(f, "x") is None
    assert nodes.by_path("/d/f") is None
    assert nodes.child(d, "f") is None
    node, path = nodes.read_lock(f)  # it still serves handles, with no path
    assert node.id == f and path is None
    nodes.read_unlock(node)
    # a new file of the same name is a new node; forgetting the old one leaves it alone
    f2 = nodes.looked_up(d, "f")
    assert f2 != f and nodes.path(f2) == "/d/f"
    nodes.forget(f, 1)
    assert f not in nodes.by_id
    assert nodes.by_path("/d/f") == f2
    # removing a directory takes its subtree's paths
    nodes.removed(ROOT, "d")
    assert nodes.path(d) is None
    assert nodes.path(g) is None
    assert nodes.path(ids["/d/sub"]) is None
    assert nodes.path(f2) is None
    assert nodes.by_path("/d/sub/g") is None
    assert g in nodes.by_id


def test_removed_unknown_name_is_noop():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    nodes.removed(ROOT, "b")
    nodes.removed(a, "x")
    assert nodes.path(a) == "/a"


def test_moved_repaths_subtree():
    nodes = Nodes()
    ids = _tree(nodes, "/src/d/e/f", "/src/d/g", "/dst/keep")
    nodes.moved(ROOT, "src", ids["/dst"], "moved")
    src = ids["/src"]
    assert nodes.path(src) == "/dst/moved"
    assert nodes.path(ids["/src/d"]) == "/dst/moved/d"
    assert nodes.path(ids["/src/d/e"]) == "/dst/moved/d/e"
    assert nodes.path(ids["/src/d/e/f"]) == "/dst/moved/d/e/f"
    assert nodes.path(ids["/src/d/g"]) == "/dst/moved/d/g"
    assert nodes.path(ids["/dst/keep"]) == "/dst/keep"
    assert nodes.by_path("/src") is None
    assert nodes.by_path("/dst/moved/d/e/f") == ids["/src/d/e/f"]
    assert nodes.child(ROOT, "src") is None
    node = nodes.by_id[src]
    assert node.name == "moved" and node.parent is nodes.by_id[ids["/dst"]]
    assert nodes.child_path(ids["/src/d/e"], "new") == "/dst/moved/d/e/new"
    # forgetting the moved node takes it out of its new parent, not the old one
    nodes.forget(ids["/src/d/g"], 1)
    assert nodes.by_path("/dst/moved/d/g") is None
    assert nodes.path(ids["/src/d/e/f"]) == "/dst/moved/d/e/f"


def test_moved_within_directory_and_to_root():
    nodes = Nodes()
    ids = _tree(nodes, "/a/b/c")
    nodes.moved(ids["/a"], "b", ids["/a"], "B")
    assert nodes.path(ids["/a/b/c"]) == "/a/B/c"
    nodes.moved(ids["/a"], "B", ROOT, "top")
    assert nodes.path(ids["/a/b"]) == "/top"
    assert nodes.path(ids["/a/b/c"]) == "/top/c"
    assert nodes.by_path("/a/B") is None and nodes.by_path("/top/c") == ids["/a/b/c"]


def test_moved_replaces_and_detaches_target():
    nodes = Nodes()
    ids = _tree(nodes, "/old/x", "/new/y/z")
    nodes.moved(ROOT, "old", ROOT, "new")
    assert nodes.path(ids["/old"]) == "/new"
    assert nodes.path(ids["/old/x"]) == "/new/x"
    # the replaced node and its subtree lose their paths but keep their ids
    for p in ("/new", "/new/y", "/new/y/z"):
        assert ids[p] in nodes.by_id
        assert nodes.path(ids[p]) is None
    assert nodes.by_path("/new") == ids["/old"]
    assert nodes.by_path("/new/y") is None
    assert nodes.by_path("/old") is None
    # forgetting the replaced node does not take the name from its new owner
    nodes.forget(ids["/new"], 1)
    assert nodes.by_path("/new") == ids["/old"]


def test_moved_unknown_source_still_detaches_target():
    nodes = Nodes()
    t = nodes.looked_up(ROOT, "t")
    nodes.moved(ROOT, "never-looked-up", ROOT, "t")
    assert nodes.path(t) is None
    assert nodes.by_path("/t") is None


def test_moved_onto_itself_keeps_path():
    nodes = Nodes()
    ids = _tree(nodes, "/a/b")
    nodes.moved(ROOT, "a", ROOT, "a")
    assert nodes.path(ids["/a"]) == "/a"
    assert nodes.path(ids["/a/b"]) == "/a/b"
    assert nodes.by_path("/a/b") == ids["/a/b"]


def test_moved_exchange_swaps():
    nodes = Nodes()
    ids = _tree(nodes, "/p/one/x/deep", "/q/two/y")
    nodes.moved(ids["/p"], "one", ids["/q"], "two", exchange=True)
    assert nodes.path(ids["/p/one"]) == "/q/two"
    assert nodes.path(ids["/p/one/x"]) == "/q/two/x"
    assert nodes.path(ids["/p/one/x/deep"]) == "/q/two/x/deep"
    assert nodes.path(ids["/q/two"]) == "/p/one"
    assert nodes.path(ids["/q/two/y"]) == "/p/one/y"
    assert nodes.by_path("/p/one") == ids["/q/two"]
    assert nodes.by_path("/q/two") == ids["/p/one"]
    assert nodes.by_path("/p/one/y") == ids["/q/two/y"]
    assert nodes.by_path("/q/two/x/deep") == ids["/p/one/x/deep"]
    # swap back within one directory
    nodes.moved(ids["/q"], "two", ids["/p"], "one", exchange=True)
    assert nodes.path(ids["/p/one/x/deep"]) == "/p/one/x/deep"
    assert nodes.path(ids["/q/two/y"]) == "/q/two/y"


def test_moved_exchange_same_directory():
    nodes = Nodes()
    ids = _tree(nodes, "/a/1", "/b/2")
    nodes.moved(ROOT, "a", ROOT, "b", exchange=True)
    assert nodes.path(ids["/a"]) == "/b"
    assert nodes.path(ids["/a/1"]) == "/b/1"
    assert nodes.path(ids["/b"]) == "/a"
    assert nodes.path(ids["/b/2"]) == "/a/2"
    assert nodes.by_path("/a") == ids["/b"] and nodes.by_path("/b") == ids["/a"]


def test_hidden_names_differ():
    nodes = Nodes()
    a = nodes.looked_up(ROOT, "a")
    names = [nodes.hidden_name(a) for _ in range(3)] + [nodes.hidden_name(ROOT)]
    assert len(set(names)) == 4
    assert re.fullmatch(r"\.fuse_hidden[0-9a-f]{16}", nodes.hidden_name(2**40 + 3))


def test_hide_takes_a_node_out_of_every_name():
    """A file unlinked while open is tracked by its node under a path no user can name: no
    lookup, rename or listing by name reaches it, whatever the names users give."""
    nodes = Nodes()
    d = nodes.looked_up(ROOT, "d")
    f = nodes.looked_up(d, "f")
    shaped = nodes.looked_up(d, ".fuse_hidden0000000100000002")  # a user's own name
    alias = nodes.hidden_path()
    assert "\0" in alias and alias.startswith("/") and alias != nodes.hidden_path()
    node = nodes.by_id[f]
    nodes.hide(node, alias)
    assert node in nodes.hidden
    assert nodes.path(f) == alias
    assert nodes.by_path("/d/f") is None and nodes.child(d, "f") is None
    assert nodes.by_path("/d/.fuse_hidden0000000100000002") == shaped
    assert nodes.write_lock((d, "f")) == []  # a new file of the old name is not this node
    nodes.forget(f, 1)
    assert f not in nodes.by_id and nodes.path(shaped) == "/d/.fuse_hidden0000000100000002"


# ---- Nodes: the name locks ------------------------------------------------------------------

def _start(fn):
    """fn in a daemon thread (so a failing test cannot hang the run); an Event set on return."""
    done, out = threading.Event(), []

    def run():
        out.append(fn())
        done.set()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done, out


def test_write_lock_waits_for_reader():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    node, path = nodes.read_lock(f)
    assert path == "/f" and node.lock == 1  # one reader
    t, done, out = _start(lambda: nodes.write_lock((ROOT, "f")))
    try:
        assert not done.wait(0.2)  # held by the reader
    finally:
        nodes.read_unlock(node)
    assert done.wait(5)
    held = out[0]
    assert [n.id for n in held] == [f]
    assert held[0].lock == -1  # held for removing or renaming
    nodes.write_unlock(held)
    assert held[0].lock == 0
    t.join(5)


def test_write_lock_waits_for_every_reader():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    r1, _ = nodes.read_lock(f)
    r2, _ = nodes.read_lock(f)
    t, done, out = _start(lambda: nodes.write_lock((ROOT, "f")))
    try:
        nodes.read_unlock(r1)
        assert not done.wait(0.2)  # one reader left
    finally:
        nodes.read_unlock(r2)
    assert done.wait(5)
    nodes.write_unlock(out[0])
    t.join(5)


def test_reader_waits_for_writer_and_sees_new_path():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    held = nodes.write_lock((ROOT, "f"), (ROOT, "g"))  # g unknown: not held
    assert [n.id for n in held] == [f]
    t, done, out = _start(lambda: nodes.read_lock(f))
    try:
        assert not done.wait(0.2)
        nodes.moved(ROOT, "f", ROOT, "g")
    finally:
        nodes.write_unlock(held)
    assert done.wait(5)
    node, path = out[0]
    assert node.id == f and path == "/g"
    nodes.read_unlock(node)
    assert node.lock == 0
    t.join(5)


def test_write_lock_other_names_do_not_wait():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    g = nodes.looked_up(ROOT, "g")
    node, _ = nodes.read_lock(f)
    t, done, out = _start(lambda: nodes.write_lock((ROOT, "g"), (ROOT, "missing")))
    try:
        assert done.wait(5)
        assert [n.id for n in out[0]] == [g]
    finally:
        nodes.read_unlock(node)
    nodes.write_unlock(out[0])
    t.join(5)


def test_write_lock_same_node_twice_in_one_call():
    nodes = Nodes()
    f = nodes.looked_up(ROOT, "f")
    held = nodes.write_lock((ROOT, "f"), (ROOT, "f"))  # rename onto itself: no self-deadlock
    assert [n.id for n in held] == [f]
    nodes.write_unlock(held)


def test_read_unlock_none_is_noop():
    Nodes().read_unlock(None)


# ---- FuseOps.snapshot: listing generations --------------------------------------------------

class _Union:
    """What FuseOps.__init__ (and ControlDir's) and snapshot touch."""
    observer = object()
    root = "root"

    def __init__(self, size=3):
        self.size = size
        self.calls = []

    def listdir(self, path, plus):
        self.calls.append((path, plus))
        n = len(self.calls)
        full = (object(), 0, 1) if plus else None
        return [(".", stat.S_IFDIR, 1, None), ("..", stat.S_IFDIR, 1, None)] + [
            ("f%d-%d" % (n, i), stat.S_IFREG, 100 + i, full) for i in range(self.size - 2)]

    def ino_of(self, root):
        return 1


def _ops(size=3):
    union = _Union(size)
    return fuseops.FuseOps(union), union


def _off(gen, k):
    return (gen << 32) | k


def test_offset_zero_takes_new_listing():
    ops, union = _ops()
    gen1, e1 = ops.snapshot("/d", 0, False)
    assert union.calls == [("/d", False)]
    assert len(e1) == 3 and e1[2][0] == "f1-0"
    gen2, e2 = ops.snapshot("/d", 0, False)
    assert gen2 != gen1 and gen1 > 0 and gen2 > 0
    assert e2 is not e1
    assert len(union.calls) == 2
    assert ops.listings() == 2


def test_offset_continues_same_listing_across_readers():
    ops, union = _ops()
    gen_a, a = ops.snapshot("/d", 0, False)
    gen_b, b = ops.snapshot("/d", 0, False)  # another reader starts meanwhile
    assert len(union.calls) == 2
    gen, entries = ops.snapshot("/d", _off(gen_a, 2), False)
    assert gen == gen_a and entries is a
    gen, entries = ops.snapshot("/d", _off(gen_b, 1), False)
    assert gen == gen_b and entries is b
    gen, entries = ops.snapshot("/d", _off(gen_a, 3), False)  # past the end: still that one
    assert gen == gen_a and entries is a
    assert len(union.calls) == 2


def test_offset_of_unknown_generation_takes_new_listing():
    ops, union = _ops()
    gen, _ = ops.snapshot("/d", 0, False)
    new, _ = ops.snapshot("/d", _off(gen + 100, 2), False)
    assert new not in (gen, gen + 100)
    later, _ = ops.snapshot("/d", 2, False)  # generation 0: no listing's
    assert later not in (0, new)
    assert len(union.calls) == 3


def test_plus_reader_does_not_continue_plain_listing():
    ops, union = _ops()
    plain, entries = ops.snapshot("/d", 0, False)
    gen, plus_entries = ops.snapshot("/d", _off(plain, 1), True)
    assert gen != plain and plus_entries is not entries
    assert union.calls[-1] == ("/d", True)
    assert plus_entries[2][3] is not None
    # a plain reader may go on with a plus listing
    again, same = ops.snapshot("/d", _off(gen, 2), False)
    assert again == gen and same is plus_entries
    assert len(union.calls) == 2


def test_oldest_listing_evicted_beyond_kept(monkeypatch):
    monkeypatch.setattr(fuseops, "LISTINGS_KEPT", 6)  # two listings of 3 entries
    ops, union = _ops(3)
    g1, e1 = ops.snapshot("/d", 0, False)
    g2, e2 = ops.snapshot("/d", 0, False)
    assert ops.listings() == 2
    g3, e3 = ops.snapshot("/d", 0, False)
    assert ops.listings() == 2
    # g2 and g3 still continue without listing again
    assert ops.snapshot("/d", _off(g2, 1), False) == (g2, e2)
    assert ops.snapshot("/d", _off(g3, 1), False) == (g3, e3)
    assert len(union.calls) == 3
    # g1 is gone: its reader continues in a new listing
    g4, e4 = ops.snapshot("/d", _off(g1, 2), False)
    assert g4 not in (g1, g2, g3) and e4 is not e1
    assert len(union.calls) == 4
    assert ops.listings() == 2
    assert ops._kept == 6


def test_recently_read_listing_kept_over_older_unread(monkeypatch):
    monkeypatch.setattr(fuseops, "LISTINGS_KEPT", 6)
    ops, union = _ops(3)
    g1, e1 = ops.snapshot("/d", 0, False)
    g2, e2 = ops.snapshot("/d", 0, False)
    assert ops.snapshot("/d", _off(g1, 1), False) == (g1, e1)  # g1 read last
    g3, _ = ops.snapshot("/d", 0, False)  # evicts g2, the least recently read
    assert len(union.calls) == 3
    gen, entries = ops.snapshot("/d", _off(g1, 2), False)
    assert gen == g1 and entries is e1
    assert len(union.calls) == 3
    gen, entries = ops.snapshot("/d", _off(g2, 2), False)
    assert gen not in (g1, g2, g3) and entries is not e2
    assert len(union.calls) == 4


def test_listing_larger_than_kept_stays_while_alone(monkeypatch):
    monkeypatch.setattr(fuseops, "LISTINGS_KEPT", 2)
    ops, union = _ops(5)
    g1, e1 = ops.snapshot("/d", 0, False)
    assert ops.listings() == 1
    assert ops.snapshot("/d", _off(g1, 4), False) == (g1, e1)
    g2, e2 = ops.snapshot("/d", 0, False)
    assert ops.listings() == 1
    assert ops.snapshot("/d", _off(g2, 1), False) == (g2, e2)
    g3, _ = ops.snapshot("/d", _off(g1, 4), False)
    assert g3 not in (g1, g2)
    assert len(union.calls) == 3


def test_control_directory_listing_is_generation_zero():
    ops, union = _ops()
    gen, entries = ops.snapshot(control.PATH, 0, False)
    assert gen == 0
    assert [e[0] for e in entries] == [".", "..", "stats", "trace"]
    assert union.calls == []
    assert ops.listings() == 0


# ---- invalidations: attributes at once, pages from the notifier thread ----------------------

class _Channel:
    """Records notifications; the page form blocks until released, as the kernel's does while
    a read holds a page locked waiting for a READ."""

    def __init__(self):
        self.calls = []
        self.blocked = threading.Event()
        self.go = threading.Event()

    def inval_inode(self, nid, offset=-1, length=0):
        self.calls.append((threading.current_thread().name, nid, offset >= 0))
        if offset >= 0:
            self.blocked.set()
            assert self.go.wait(10)


def _server():
    srv = Server.__new__(Server)  # no mount: what _invalidate uses
    srv.nodes = Nodes()
    srv.channel = _Channel()
    srv.notifier = Notifier(srv.channel)
    return srv


def test_invalidate_sends_attributes_before_returning_and_pages_from_the_notifier():
    srv = _server()
    a = srv.nodes.looked_up(ROOT, "a")
    b = srv.nodes.looked_up(ROOT, "b")
    ch = srv.channel
    srv.notifier.start()
    try:
        srv._invalidate(["/a", "/b", "/unknown"])
        assert ch.blocked.wait(5)  # the notifier is stuck on /a's pages ...
        t = time.monotonic()
        srv._invalidate(["/b"])    # ... and a request thread still never waits
        srv._invalidate(["/a"], pages=False)
        assert time.monotonic() - t < 1
        me = threading.current_thread().name
        assert [c for c in ch.calls if not c[2]] == [(me, a, False), (me, b, False),
                                                     (me, b, False), (me, a, False)]
        assert not srv.notifier.idle(0.2)
    finally:
        ch.go.set()
    assert srv.notifier.idle(5)
    assert srv.notifier.stop(5)
    # pages: from the notifier thread only, /b once though asked twice while it waited
    assert [c for c in ch.calls if c[2]] == [("fuse-notify", a, True),
                                             ("fuse-notify", b, True)]


def test_notifier_idle_and_stop_when_nothing_is_stuck():
    srv = _server()
    srv.channel.go.set()
    n = srv.nodes.looked_up(ROOT, "n")
    srv.notifier.start()
    srv._invalidate(["/n"])
    assert srv.notifier.idle(5)
    assert srv.notifier.sent == 1
    assert srv.notifier.stop(5)
    srv.notifier.pages(n)  # after stop: never sent
    time.sleep(0.1)
    assert srv.notifier.sent == 1


def test_notifier_stuck_in_the_kernel_does_not_stop():
    """serve() closes the channel only once the notifier has ended (a descriptor closed under
    a write still in the kernel could be reused before the next one)."""
    srv = _server()
    srv.nodes.looked_up(ROOT, "n")
    srv.notifier.start()
    try:
        srv._invalidate(["/n"])
        assert srv.channel.blocked.wait(5)
        assert not srv.notifier.stop(0.2)
    finally:
        srv.channel.go.set()
    assert srv.notifier.stop(5)
