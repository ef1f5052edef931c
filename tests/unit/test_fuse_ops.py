"""fuse/ops.py: FuseOps.snapshot's listing generations, and the control directory's attributes
packed as the kernel's."""
import stat

from unionfs import control
from unionfs.core import readdir
from unionfs.fuse import ops as fuse_ops
from unionfs.fuse import proto as P


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
    return fuse_ops.FuseOps(union), union


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
    monkeypatch.setattr(readdir, "LISTINGS_KEPT", 6)  # two listings of 3 entries
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
    assert ops._listings._kept == 6


def test_recently_read_listing_kept_over_older_unread(monkeypatch):
    monkeypatch.setattr(readdir, "LISTINGS_KEPT", 6)
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
    monkeypatch.setattr(readdir, "LISTINGS_KEPT", 2)
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


def test_attr_accepts_control_stat():
    ops, _union = _ops()
    st, ino, nlink = ops.control.stat(control.PATH)  # not an os.stat_result: same fields
    fields = P.ATTR.unpack(P.attr(st, ino, nlink))
    assert fields[0] == ino and fields[10] == 2
    assert stat.S_ISDIR(fields[9])
    assert fields[3] * 10**9 + fields[6] == st.st_atime_ns
    assert fields[6] < 10**9
