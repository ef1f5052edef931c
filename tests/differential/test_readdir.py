"""readdir of merged directories: each name once, whiteouts and hidden names removed, stable
positions (telldir/seekdir), deleting entries while iterating."""
import os

from tests.differential._diff import (DIFFERENTIAL, Dir, DirStream, Whiteout, attempt, layers, P,
                                      run_differential, write)

pytestmark = DIFFERENTIAL

# Long names so that one merged listing spans several getdents() buffers.
N = 120


def _name(i, tag):
    return "%s-%04d-%s" % (tag, i, "n" * 90)


def _big_layers():
    top, mid, bot = {}, {}, {}
    for i in range(N):
        bot["big/" + _name(i, "shared")] = b"bottom %d" % i
        if i % 3 == 0:
            mid["big/" + _name(i, "shared")] = b"middle %d" % i       # shadows the bottom
        if i % 7 == 0:
            top["big/" + _name(i, "shared")] = Whiteout()              # hides both
        mid["big/" + _name(i, "mid")] = b"m"
        if i % 2 == 0:
            top["big/" + _name(i, "top")] = b"t"
    bot["big/" + "subdir/x"] = b"x"
    mid["big/" + "wsub"] = Whiteout()
    bot["big/" + "wsub/y"] = b"y"
    return layers(top, mid, bot)


def _scan(p):
    with os.scandir(p) as it:
        return sorted((e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False),
                       e.is_symlink()) for e in it)


def test_merged_listing_each_name_once(tmp_path):
    build = layers(
        {"d/a": b"1", "d/b": Whiteout(), "d/sub/x": b"x", "top-only": b"t"},
        {"d/a": b"2", "d/b": b"2", "d/c": b"2", "d/sub/y": b"y", "d/w": Whiteout()},
        {"d/a": b"3", "d/c": b"3", "d/d": b"3", "d/w": b"3", "d/sub/z": b"z"},
    )

    def scenario(mnt):
        out = []
        for rel in (".", "d", "d/sub"):
            p = P(mnt, rel)
            names = os.listdir(p)
            out.append((rel, "dups", len(names) - len(set(names))))
            out.append((rel, sorted(names)))
            out.append((rel, _scan(p)))
        # create/remove through the mount, then list again
        write(P(mnt, "d/new"), b"n")
        os.unlink(P(mnt, "d/c"))
        os.unlink(P(mnt, "d/sub/y"))
        for rel in ("d", "d/sub"):
            names = os.listdir(P(mnt, rel))
            out.append((rel, len(names) - len(set(names)), sorted(names), _scan(P(mnt, rel))))
        return out

    res = run_differential(tmp_path, build, scenario)
    assert ("d", ["a", "c", "d", "sub"]) in res.kernel.outcomes


def test_big_merged_listing_and_repeated_reads(tmp_path):
    def scenario(mnt):
        p = P(mnt, "big")
        first = os.listdir(p)
        out = [len(first), len(set(first)), sorted(first), _scan(p)]
        # repeated reads give the same set, each name once
        for _ in range(3):
            again = os.listdir(p)
            out.append(sorted(again) == sorted(first) and len(again) == len(first))
        return out

    res = run_differential(tmp_path, _big_layers(), scenario)
    assert res.kernel.outcomes[0] == res.kernel.outcomes[1]


def test_telldir_seekdir_stability(tmp_path):
    def scenario(mnt):
        out = []
        with DirStream(P(mnt, "big")) as d:
            names, positions = [], []
            while True:
                pos = d.tell()
                n = d.read()
                if n is None:
                    break
                names.append(n)
                positions.append(pos)
            out.append(("count", len(names), len(set(names))))
            out.append(("names", sorted(names)))
            # seek back to several remembered positions: the rest of the stream is the same
            for i in (0, 1, len(names) // 3, len(names) // 2, len(names) - 1):
                d.seek(positions[i])
                rest = []
                while True:
                    n = d.read()
                    if n is None:
                        break
                    rest.append(n)
                out.append(("seek", i, rest == names[i:]))
            # telldir of the same position twice is usable after more reads
            d.rewind()
            for _ in range(10):
                d.read()
            pos = d.tell()
            following = [d.read() for _ in range(5)]
            d.read()
            d.seek(pos)
            out.append(("seek-again", [d.read() for _ in range(5)] == following))
            d.rewind()
            again = []
            while True:
                n = d.read()
                if n is None:
                    break
                again.append(n)
            out.append(("rewind", again == names))
        return out

    res = run_differential(tmp_path, _big_layers(), scenario)
    assert all(o[-1] is True for o in res.kernel.outcomes if o[0] in ("seek", "seek-again",
                                                                     "rewind"))


def test_list_and_delete_in_one_pass(tmp_path):
    """Iterate os.scandir and unlink each entry as it comes: every entry is seen exactly once,
    the dir ends empty and can be removed."""
    def scenario(mnt):
        p = P(mnt, "big")
        # a few upper entries too
        for i in range(10):
            write(P(mnt, "big", "upper-%d" % i), b"u")
        os.mkdir(P(mnt, "big", "upper-dir"))
        expected = set(os.listdir(p))
        seen, results = [], []
        with os.scandir(p) as it:
            for e in it:
                seen.append(e.name)
                if e.is_dir(follow_symlinks=False):
                    results.append(attempt(os.rmdir, e.path))
                else:
                    results.append(attempt(os.unlink, e.path))
        sub = [attempt(os.unlink, P(mnt, "big/subdir/x"))]
        return [len(seen), len(set(seen)), set(seen) == expected, sorted(set(results), key=repr),
                sub, attempt(os.listdir, p), attempt(os.rmdir, p), attempt(os.listdir, P(mnt))]

    res = run_differential(tmp_path, _big_layers(), scenario)
    o = res.kernel.outcomes
    assert o[0] == o[1] and o[2] is True


def test_list_and_delete_after_emptying_subdir(tmp_path):
    build = layers({"d/a": b"1", "d/s/x": b"x"}, {"d/b": b"2", "d/s/y": b"y", "d/e": Dir()})

    def scenario(mnt):
        os.unlink(P(mnt, "d/s/x"))
        os.unlink(P(mnt, "d/s/y"))
        seen = []
        with os.scandir(P(mnt, "d")) as it:
            for e in it:
                seen.append(e.name)
                fn = os.rmdir if e.is_dir(follow_symlinks=False) else os.unlink
                seen.append(attempt(fn, e.path))
        return [sorted(seen, key=repr), attempt(os.listdir, P(mnt, "d")),
                attempt(os.rmdir, P(mnt, "d")), attempt(os.listdir, P(mnt))]

    run_differential(tmp_path, build, scenario)
