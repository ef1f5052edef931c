"""fuse/proto.py: struct sizes and packers, against linux/fuse.h 7.31."""
import os
import stat

import pytest

from unionfs.fuse import proto as P


# ---- struct sizes ---------------------------------------------------------------------------

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


# ---- packers --------------------------------------------------------------------------------

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


def test_attr_of_the_cores_packed_stat_is_that_of_its_stat_result():
    from unionfs.core.layers import Hit
    st = _stat_result()  # big times, a 64-bit rdev, a char device: every field distinct
    for packed in (Hit(st), Hit(os.lstat("/"))):
        src = st if packed.st_ino == st.st_ino else os.lstat("/")
        assert P.attr(packed, 42, 3) == P.attr(src, 42, 3)


def test_attr_of_a_packed_stat_shown_with_other_owners_has_those_owners():
    from unionfs.core.ids import Shown
    from unionfs.core.layers import Hit
    st = _stat_result()
    shown = Shown(Hit(st), 5000, 5001, stat.S_IFREG | 0o600, rdev=0)
    (ino, size, _, _, _, _, _, _, _, mode, _, uid, gid, rdev, _, _) = P.ATTR.unpack(
        P.attr(shown, 42, 1))
    assert (mode, uid, gid, rdev) == (stat.S_IFREG | 0o600, 5000, 5001, 0)
    assert size == st.st_size


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


# ---- name: the names a request carries -----------------------------------------------------

def test_name_reads_nul_terminated_names_in_turn():
    view = memoryview(bytearray(b"\x01\x02old\0new name\0tail"))
    first, end = P.name(view, 2)
    assert (first, end) == ("old", 6)
    second, end = P.name(view, end)
    assert (second, end) == ("new name", 15)
    with pytest.raises(ValueError):  # no NUL after it
        P.name(view, end)


def test_name_at_start_and_empty():
    view = memoryview(b"\0x\0")
    assert P.name(view) == ("", 1)
    assert P.name(view, 1) == ("x", 3)


def test_name_not_utf8_is_surrogate_escaped():
    raw = b"caf\xe9-\xff\xfe"
    name, end = P.name(memoryview(raw + b"\0rest"))
    assert end == len(raw) + 1
    assert name == "caf\udce9-\udcff\udcfe"
    assert name.encode("utf-8", "surrogateescape") == raw
    assert os.fsencode(name) == raw


def test_name_utf8():
    name, _ = P.name(memoryview("ünï€\0".encode()))
    assert name == "ünï€"
