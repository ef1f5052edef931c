"""st_ino: a file keeps its inode number across copy-up, and distinct files have distinct numbers.

Asserted on unionfs; the kernel's numbers are recorded (they are not compared: with upper and
lowers on one filesystem the kernel keeps them too, but that is not the contract checked here).
"""
import os

from tests.differential._diff import (DIFFERENTIAL, Dir, HardLink, attempt, layers, P,
                                      run_differential, write)

pytestmark = DIFFERENTIAL


def _inos(mnt):
    out = {}
    for dirpath, dirnames, filenames in os.walk(mnt):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, mnt)] = os.lstat(p).st_ino
    return out


def test_st_ino_stable_across_copy_up_and_unique(tmp_path):
    build = layers(
        {"a": b"a", "d/b": b"b", "d/sub/c": b"c", "same": b"top copy", "hl1": b"linked",
         "hl2": HardLink("hl1"), "emptydir": Dir()},
        {"e": b"e", "d/f": b"f", "same": b"bottom copy", "d/sub/g": b"g"},
    )
    copy_up = {"a": lambda p: write(p, b"+", os.O_WRONLY | os.O_APPEND),
               "d/b": lambda p: os.chmod(p, 0o600),
               "d/sub/c": lambda p: os.truncate(p, 0),
               "e": lambda p: os.setxattr(p, "user.x", b"1"),
               "d/f": lambda p: os.utime(p, ns=(10, 20)),
               "same": lambda p: os.chown(p, 1, 1)}

    def scenario(mnt):
        write(P(mnt, "new"), b"new")
        os.mkdir(P(mnt, "newdir"))
        before = _inos(mnt)
        for rel, op in copy_up.items():
            op(P(mnt, rel))
        after = _inos(mnt)
        again = _inos(mnt)
        files = {k: v for k, v in after.items() if k != "hl2"}
        return {
            "stable": {rel: before[rel] == after[rel] for rel in copy_up},
            "dirs_stable": {rel: before[rel] == after[rel] for rel in ("d", "d/sub")},
            "repeatable": after == again,
            "unique": len(set(files.values())) == len(files),
            "hardlinks_share": after["hl1"] == after["hl2"],
            "root_distinct": os.stat(mnt).st_ino not in files.values(),
            "fstat_matches": _fstat_matches(P(mnt, "a")),
        }

    res = run_differential(tmp_path, build, scenario, compare_outcomes=False)
    print("kernel st_ino behaviour:", res.kernel.outcomes)
    u = res.unionfs.outcomes
    assert all(u["stable"].values()), "st_ino changed on copy-up: %r" % u["stable"]
    assert u["repeatable"], "st_ino differs between two walks"
    assert u["unique"], "distinct files share an st_ino"
    assert u["root_distinct"]
    assert u["fstat_matches"], "fstat().st_ino differs from stat().st_ino"
    assert u["hardlinks_share"], "hard links in a lower do not share st_ino"
    assert all(u["dirs_stable"].values()), "dir st_ino changed on copy-up"


def _fstat_matches(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        return os.fstat(fd).st_ino == os.stat(p).st_ino
    finally:
        os.close(fd)


def test_st_ino_after_rename_and_link(tmp_path):
    build = layers({"f": b"f", "d/x": b"x", "g": b"g"})

    def scenario(mnt):
        i_f = os.stat(P(mnt, "f")).st_ino
        i_d = os.stat(P(mnt, "d")).st_ino
        i_g = os.stat(P(mnt, "g")).st_ino
        os.rename(P(mnt, "f"), P(mnt, "f2"))
        os.rename(P(mnt, "d"), P(mnt, "d2"))
        os.link(P(mnt, "g"), P(mnt, "g2"))
        return {"rename_file": os.stat(P(mnt, "f2")).st_ino == i_f,
                "rename_dir": os.stat(P(mnt, "d2")).st_ino == i_d,
                "link": os.stat(P(mnt, "g")).st_ino == os.stat(P(mnt, "g2")).st_ino == i_g,
                "readdir_ino_matches": _readdir_matches(mnt),
                "missing": attempt(os.stat, P(mnt, "f"))}

    res = run_differential(tmp_path, build, scenario, compare_outcomes=False)
    print("kernel st_ino behaviour:", res.kernel.outcomes)
    u = res.unionfs.outcomes
    assert u["rename_file"] and u["rename_dir"] and u["link"], u
    assert u["missing"] == "ENOENT"
    if res.kernel.outcomes["readdir_ino_matches"]:
        assert u["readdir_ino_matches"], "readdir d_ino differs from st_ino (the kernel agrees)"


def _readdir_matches(mnt):
    """d_ino from readdir agrees with st_ino for non-dir entries (as ls -i relies on)."""
    with os.scandir(mnt) as it:
        return all(e.inode() == os.lstat(e.path).st_ino for e in it
                   if not e.is_dir(follow_symlinks=False))
