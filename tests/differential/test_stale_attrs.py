"""No stale answer from the kernel's caches (issue 12, point 1).

unionfs lets the kernel keep entries and attributes for an hour, so every change the union
makes to an entry the request did not name (ancestors copied up, a directory become merged,
whiteouts, the other names of a hard link, a file copied up on open) must reach the kernel
before the request returns. Each scenario here stats every entry of the tree (every ancestor
and every listed entry), runs one operation, and stats everything again through the same mount,
first without listing (what the kernel's warm caches answer), then listing as it goes; the fields the kernel keeps stable are compared with the kernel's
overlayfs, which answers from the layers at once: kind, mode, owner, size of files, link count,
whether st_ino stayed, and whether mtime and ctime moved on (or went back)."""
import os
import stat

import pytest

from tests.differential._diff import (DIFFERENTIAL, File, HardLink, attempt, kind, layers, P,
                                      run_differential, write)
from tests.differential.test_copyup import OPS as COPYUP_OPS

pytestmark = DIFFERENTIAL

LOWER = {
    "a/b/f": File(b"lower data\n" * 50),
    "a/b/g": b"g",
    "a/b/c/h": b"h",
    "a/x": b"x",
    "d2/e": b"e",
    "hl/one": File(b"linked\n"),
    "hl/two": HardLink("hl/one"),
    "top": b"top",
}


def _one(mnt, rel):
    """(stable fields, ino, mtime_ns, ctime_ns) of one entry."""
    s = os.lstat(os.path.join(mnt, rel))
    rec = {"kind": kind(s.st_mode), "mode": oct(stat.S_IMODE(s.st_mode)), "uid": s.st_uid,
           "gid": s.st_gid, "nlink": s.st_nlink}
    if stat.S_ISREG(s.st_mode):
        rec["size"] = s.st_size
    return rec, s.st_ino, s.st_mtime_ns, s.st_ctime_ns


def _walk(mnt):
    """{relpath: _one()} of every entry, root included, each listed before it is stated (a
    listing hands the kernel fresh attributes: READDIRPLUS)."""
    out = {".": _one(mnt, ".")}
    for dirpath, dirnames, filenames in os.walk(mnt):
        for name in sorted(dirnames + filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), mnt)
            out[rel] = _one(mnt, rel)
    return out


def _restat(mnt, rels):
    """_one() of the entries known before, stated without listing anything first: what the
    kernel answers from its caches (an ancestor before its children)."""
    out = {}
    for rel in rels:
        try:
            out[rel] = _one(mnt, rel)
        except FileNotFoundError:
            pass
    return out


def _order(before, after):
    return "same" if after == before else ("later" if after > before else "EARLIER")


def _compare(before, after):
    """What a user sees change: the 'after' fields of every entry, and for entries there
    before and after, whether st_ino stayed and how the times moved."""
    out = {}
    for rel, (rec, ino, mtime, ctime) in sorted(after.items()):
        rec = dict(rec)
        if rel in before:
            _r, ino0, mtime0, ctime0 = before[rel]
            rec.update(ino="same" if ino == ino0 else "changed", mtime=_order(mtime0, mtime),
                       ctime=_order(ctime0, ctime))
        out[rel] = rec
    return out


def _aliases(mnt):
    write(P(mnt, "a/n1"), b"one\n")
    os.link(P(mnt, "a/n1"), P(mnt, "a/n2"))


def _append(p, data=b"more\n"):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _unlink_open(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        os.unlink(p)
        s = os.fstat(fd)
        return (s.st_nlink, s.st_size, os.pread(fd, 6, 0))
    finally:
        os.close(fd)


def _rename_over_alias(mnt):
    write(P(mnt, "a/n3"), b"three\n")
    os.rename(P(mnt, "a/n3"), P(mnt, "a/n2"))


# name -> (setup or None, operation): the operation gets the mount
SCENARIOS = {
    "create_deep": (None, lambda m: write(P(m, "a/b/new"), b"y\n")),
    "mkdir_deep": (None, lambda m: os.mkdir(P(m, "a/b/c/newdir"))),
    "symlink_deep": (None, lambda m: os.symlink("h", P(m, "a/b/c/s"))),
    "mkfifo_deep": (None, lambda m: os.mkfifo(P(m, "a/b/c/p"))),
    "unlink_deep": (None, lambda m: os.unlink(P(m, "a/b/c/h"))),
    "unlink_open": (None, lambda m: _unlink_open(P(m, "a/b/f"))),
    "rmdir_deep": (None, lambda m: (os.unlink(P(m, "a/b/c/h")), os.rmdir(P(m, "a/b/c")))),
    "rename_file_across": (None, lambda m: os.rename(P(m, "a/b/f"), P(m, "d2/f2"))),
    "rename_dir_across": (None, lambda m: os.rename(P(m, "a/b"), P(m, "d2/b2"))),
    "rename_dir_samedir": (None, lambda m: os.rename(P(m, "a/b"), P(m, "a/bb"))),
    "rename_over_lower": (None, lambda m: os.rename(P(m, "a/b/g"), P(m, "a/b/f"))),
    "link_deep": (None, lambda m: os.link(P(m, "a/b/f"), P(m, "a/b/c/fl"))),
    "link_lower_hardlink": (None, lambda m: os.link(P(m, "hl/one"), P(m, "a/b/h3"))),
    "write_lower_hardlink": (None, lambda m: _append(P(m, "hl/one"))),
    "unlink_lower_hardlink": (None, lambda m: os.unlink(P(m, "hl/one"))),
    "chmod_dir_deep": (None, lambda m: os.chmod(P(m, "a/b/c"), 0o700)),
    "setxattr_dir_deep": (None, lambda m: os.setxattr(P(m, "a/b/c"), "user.k", b"v")),
    "open_trunc_deep": (None, lambda m: os.close(os.open(P(m, "a/b/f"), os.O_WRONLY
                                                         | os.O_TRUNC))),
    "write_alias": (_aliases, lambda m: _append(P(m, "a/n2"))),
    "truncate_alias": (_aliases, lambda m: os.truncate(P(m, "a/n2"), 1)),
    "chmod_alias": (_aliases, lambda m: os.chmod(P(m, "a/n2"), 0o600)),
    "unlink_alias": (_aliases, lambda m: os.unlink(P(m, "a/n2"))),
    "link_alias_again": (_aliases, lambda m: os.link(P(m, "a/n2"), P(m, "a/b/n3"))),
    "rename_over_alias": (_aliases, _rename_over_alias),
    "unlink_open_alias": (_aliases, lambda m: _unlink_open(P(m, "a/n2"))),
}
# every copy-up operation of test_copyup.py, on a file two directories down
SCENARIOS.update({"copyup_" + name: (None, (lambda fn: lambda m: fn(P(m, "a/b/f")))(fn))
                  for name, fn in COPYUP_OPS.items()})


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_stale_attributes_after(tmp_path, name):
    setup, op = SCENARIOS[name]

    def scenario(mnt):
        if setup is not None:
            setup(mnt)
        before = _walk(mnt)
        _restat(mnt, before)  # by name too: the kernel then answers both ways from its caches
        out = attempt(op, mnt)
        cached = _restat(mnt, before)
        after = _walk(mnt)
        return [out, {rel: v[0] for rel, v in before.items()}, _compare(before, cached),
                _compare(before, after)]

    run_differential(tmp_path, layers(LOWER), scenario, cross=False)
