"""Copy-up: every operation that modifies a lower file copies it up first, keeping its data, mode,
owner and xattrs (and the parents are copied up before it, with their own attributes)."""
import os

import pytest

from tests.differential._diff import (DIFFERENTIAL, Dir, File, attempt, layers, P, read,
                                      run_differential, st, upper_layout, write, xattrs)

pytestmark = DIFFERENTIAL

# A valid v2 file capability: cap_net_bind_service in the permitted set.
CAP_NET_BIND_SERVICE = (b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00"
                        b"\x00\x00\x00\x00\x00\x00\x00\x00")
CAP_FROM_BRIEF = (b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00"
                  b"\x00\x00\x00\x00\x00\x00\x00\x00")

LOWER = {
    "d": Dir(mode=0o750, uid=21, gid=22, xattrs={"user.dir": b"D"}),
    "d/f": File(b"hello, lower\n" * 100, mode=0o640, uid=1000, gid=1001,
                xattrs={"user.keep": b"kept", "user.rm": b"remove me", "trusted.t": b"T"}),
    "d/other": b"untouched",
}


def _append(p):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        return os.write(fd, b"appended\n")
    finally:
        os.close(fd)


def _open_rw_no_write(p):
    fd = os.open(p, os.O_RDWR)
    os.close(fd)


OPS = {
    "append": _append,
    "open_rdwr_only": _open_rw_no_write,
    "truncate": lambda p: os.truncate(p, 3),
    "truncate_grow": lambda p: os.truncate(p, 1 << 16),
    "chmod": lambda p: os.chmod(p, 0o604),
    "chown": lambda p: os.chown(p, 1234, 5678),
    "chown_uid_only": lambda p: os.chown(p, 1234, -1),
    "utime_ns": lambda p: os.utime(p, ns=(1_000_000_007, 1_500_000_123_456_789)),
    "setxattr": lambda p: os.setxattr(p, "user.foo", b"bar"),
    "setxattr_replace": lambda p: os.setxattr(p, "user.keep", b"replaced", os.XATTR_REPLACE),
    "removexattr": lambda p: os.removexattr(p, "user.rm"),
    "link": lambda p: os.link(p, p + ".hl"),
    "rename": lambda p: os.rename(p, os.path.join(os.path.dirname(p), "renamed")),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_copy_up_on(tmp_path, op):
    def scenario(mnt):
        p = P(mnt, "d/f")
        before = [st(p), xattrs(p)]
        out = [attempt(OPS[op], p)]
        after = p if op != "rename" else P(mnt, "d/renamed")
        out += [attempt(st, after, nlink=True), attempt(xattrs, after), attempt(read, after),
                attempt(st, p), attempt(sorted, os.listdir(P(mnt, "d"))), st(P(mnt, "d")),
                xattrs(P(mnt, "d"))]
        out.append(before)
        if op == "utime_ns":
            s = os.stat(after)
            out.append(("mtime_ns", s.st_mtime_ns))
        if op == "link":
            out.append(attempt(st, p + ".hl", nlink=True))
        return out

    res = run_differential(tmp_path, layers(LOWER), scenario)
    # the kernel really copied the file (or its rename target) up
    lay = res.kernel.layout
    assert "d/f" in lay or "d/renamed" in lay
    if op == "utime_ns":
        assert ("mtime_ns", 1_500_000_123_456_789) in res.unionfs.outcomes


def test_copy_up_preserves_mtime_of_lower_file(tmp_path):
    """Copy-up by chmod keeps the lower file's mtime (explicitly set in the lower)."""
    def build(root):
        ls_ = layers(LOWER)(root)
        os.utime(os.path.join(ls_[0], "d/f"),
                 ns=(1_111_111_111_111_111_111, 1_222_222_222_333_444_555))
        return ls_

    def scenario(mnt):
        p = P(mnt, "d/f")
        before = os.stat(p).st_mtime_ns
        os.chmod(p, 0o600)
        return [before, os.stat(p).st_mtime_ns]

    res = run_differential(tmp_path, build, scenario)
    assert res.unionfs.outcomes == [1_222_222_222_333_444_555] * 2


@pytest.mark.parametrize("cap", [CAP_FROM_BRIEF, CAP_NET_BIND_SERVICE], ids=["brief", "netbind"])
def test_security_capability_survives_chmod_copy_up(tmp_path, cap):
    build = layers({"bin/tool": File(b"\x7fELF-ish", mode=0o755,
                                     xattrs={"security.capability": cap, "user.x": b"1"})})

    def scenario(mnt):
        p = P(mnt, "bin/tool")
        out = [attempt(os.getxattr, p, "security.capability")]
        out.append(attempt(os.chmod, p, 0o750))
        out.append(attempt(os.getxattr, p, "security.capability"))
        out.append(attempt(xattrs, p))
        out.append(st(p))
        return out

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[2] == cap


@pytest.mark.parametrize("action", ["write", "chown"])
def test_security_capability_after_write_or_chown(tmp_path, action):
    """Whatever the kernel does with file capabilities on write/chown of a copied-up file
    (it drops them: killpriv), unionfs does the same."""
    build = layers({"bin/tool": File(b"binary", mode=0o755,
                                     xattrs={"security.capability": CAP_NET_BIND_SERVICE})})

    def scenario(mnt):
        p = P(mnt, "bin/tool")
        if action == "write":
            r = attempt(write, p, b"more", os.O_WRONLY | os.O_APPEND)
        else:
            r = attempt(os.chown, p, 1234, 5678)
        return [r, attempt(xattrs, p), st(p)]

    run_differential(tmp_path, build, scenario)


def test_setuid_cleared_by_chown_after_copy_up(tmp_path):
    build = layers({"bin/su": File(b"x", mode=0o4755), "bin/sg": File(b"y", mode=0o2755)})

    def scenario(mnt):
        out = []
        for n in ("su", "sg"):
            p = P(mnt, "bin", n)
            out += [st(p), attempt(os.chown, p, 1234, 5678), st(p)]
        return out

    run_differential(tmp_path, build, scenario)


def test_parents_copied_up_first(tmp_path):
    build = layers(
        {"a": Dir(mode=0o751, uid=5, gid=6, xattrs={"user.a": b"A"}),
         "a/b": Dir(mode=0o711, uid=7, gid=8, xattrs={"user.b": b"B", "trusted.b": b"TB"}),
         "a/b/c": Dir(mode=0o700, uid=9, gid=10),
         "a/b/c/f": File(b"deep", mode=0o604, uid=11, gid=12, xattrs={"user.f": b"F"}),
         "a/b/c/g": b"sibling", "a/b/side": b"side"},
        {"a/b/c/lowest": b"merged from below", "a/z": b"z"},
    )

    def scenario(mnt):
        p = P(mnt, "a/b/c/f")
        out = [attempt(write, p, b"+", os.O_WRONLY | os.O_APPEND), attempt(read, p)]
        for rel in ("a", "a/b", "a/b/c"):
            out += [st(P(mnt, rel)), xattrs(P(mnt, rel)), sorted(os.listdir(P(mnt, rel)))]
        return out

    res = run_differential(tmp_path, build, scenario)
    lay = res.kernel.layout
    assert {"a", "a/b", "a/b/c", "a/b/c/f"} <= set(lay)
    assert "a/b/c/g" not in lay and "a/b/side" not in lay


@pytest.mark.parametrize("layer_index", [0, 1])
def test_copy_up_from_lower_layer_n(tmp_path, layer_index):
    """Copy-up of a file that lives in the top or in a deeper lower, with dirs in both."""
    specs = [{"d/top": b"t"}, {"d/low": b"l"}]
    specs[layer_index]["d/target"] = File(b"target data", mode=0o620, uid=3, gid=4,
                                          xattrs={"user.t": b"1"})

    def scenario(mnt):
        p = P(mnt, "d/target")
        return [attempt(write, p, b"X", os.O_WRONLY), attempt(read, p), st(p), xattrs(p),
                sorted(os.listdir(P(mnt, "d")))]

    res = run_differential(tmp_path, layers(*specs), scenario)
    assert upper_layout(res.kernel.upper).get("d/target") == "file"


def test_copy_up_of_special_files_and_symlinks(tmp_path):
    from tests.differential._diff import Dev, Fifo, Symlink
    build = layers({"s/link": Symlink("target/x", uid=3, gid=4), "s/fifo": Fifo(0o640),
                    "s/null": Dev(1, 3, mode=0o660), "s/dir": Dir(mode=0o700, uid=2, gid=2)})

    def scenario(mnt):
        out = []
        out.append(attempt(os.chown, P(mnt, "s/link"), 77, 88, follow_symlinks=False))
        out.append(attempt(os.chmod, P(mnt, "s/fifo"), 0o600))
        out.append(attempt(os.chown, P(mnt, "s/null"), 99, 98))
        out.append(attempt(os.chmod, P(mnt, "s/dir"), 0o750))
        out.append(attempt(os.setxattr, P(mnt, "s/dir"), "user.d", b"v"))
        for n in ("link", "fifo", "null", "dir"):
            out.append(st(P(mnt, "s", n)))
        out.append(os.readlink(P(mnt, "s/link")))
        return out

    run_differential(tmp_path, build, scenario)
