"""Lookup precedence across layers: top wins, whiteouts and opaque dirs stop the merge."""
import os

import pytest

from tests.differential._diff import (DIFFERENTIAL, Dir, File, Whiteout, attempt, layers, ls, P,
                                      read, run_differential, st, write, xattrs)

pytestmark = DIFFERENTIAL


def _probe(mnt, *paths):
    """For each path: its stat summary, content (files) or listing (dirs), or an errno."""
    out = []
    for rel in paths:
        p = P(mnt, rel)
        s = attempt(st, p)
        out.append((rel, s))
        if isinstance(s, dict) and s["kind"] == "file":
            out.append((rel, attempt(read, p)))
        elif isinstance(s, dict) and s["kind"] == "dir":
            out.append((rel, attempt(ls, p)))
    return out


def test_same_name_in_three_layers_top_wins(tmp_path):
    build = layers(
        {"f": File(b"top", mode=0o600, uid=11, gid=12, xattrs={"user.l": b"0"}), "d/a": b"top-a"},
        {"f": File(b"middle", mode=0o640), "d/a": b"mid-a", "d/b": b"mid-b"},
        {"f": File(b"bottom", mode=0o666), "d/a": b"bot-a", "d/c": b"bot-c"},
    )

    def scenario(mnt):
        return _probe(mnt, "f", "d", "d/a", "d/b", "d/c") + [attempt(xattrs, P(mnt, "f"))]

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[1] == ("f", b"top")


def test_whiteout_in_middle_lower_hides_bottom(tmp_path):
    build = layers(
        {"keep": b"top"},
        {"gone": Whiteout(), "d/gone": Whiteout(), "gonedir": Whiteout()},
        {"gone": b"bottom", "d/gone": b"x", "d/stay": b"y", "gonedir/child": b"z"},
    )

    def scenario(mnt):
        return _probe(mnt, ".", "gone", "d", "d/gone", "d/stay", "gonedir", "gonedir/child")

    res = run_differential(tmp_path, build, scenario)
    assert ("gone", "ENOENT") in res.kernel.outcomes


def test_opaque_dir_in_middle_lower_hides_bottom_content(tmp_path):
    build = layers(
        {"d/top": b"t"},
        {"d": Dir(opaque=True), "d/mid": b"m"},
        {"d/bottom": b"b", "d/sub/deep": b"deep", "other": b"o"},
    )

    def scenario(mnt):
        return _probe(mnt, ".", "d", "d/top", "d/mid", "d/bottom", "d/sub", "other")

    res = run_differential(tmp_path, build, scenario)
    assert ("d", ["mid", "top"]) in res.kernel.outcomes


def test_opaque_dir_in_top_lower_does_not_hide_its_own_content(tmp_path):
    build = layers(
        {"d": Dir(opaque=True, mode=0o750), "d/own": b"own", "d/sub/x": b"x"},
        {"d/own": b"shadowed", "d/hidden": b"h", "d/sub/y": b"y"},
    )

    def scenario(mnt):
        return _probe(mnt, "d", "d/own", "d/hidden", "d/sub", "d/sub/x", "d/sub/y")

    run_differential(tmp_path, build, scenario)


@pytest.mark.parametrize("upper_kind", ["file", "dir"])
def test_type_change_between_layers_stops_merge(tmp_path, upper_kind):
    """A file above a dir hides the whole dir; a dir above a file hides the file and is not
    merged with anything below the file."""
    if upper_kind == "file":
        build = layers({"x": b"i am a file"}, {"x/child": b"c", "x/sub/y": b"y"})
        paths = ("x", "x/child", "x/sub")
    else:
        build = layers({"x/top": b"t"}, {"x": b"i am a file"}, {"x/bottom": b"b"})
        paths = ("x", "x/top", "x/bottom")

    def scenario(mnt):
        return _probe(mnt, *paths)

    run_differential(tmp_path, build, scenario)


def test_dir_over_file_over_dir_three_layers(tmp_path):
    build = layers({"n/a": b"a"}, {"n/b": b"b"}, {"n": b"file"}, {"n/c": b"c"})

    def scenario(mnt):
        return _probe(mnt, "n", "n/a", "n/b", "n/c")

    res = run_differential(tmp_path, build, scenario)
    assert ("n", ["a", "b"]) in res.kernel.outcomes


def test_xattr_whiteouts_in_lower(tmp_path):
    """Linux 6.7+ xattr whiteouts in a lower: a zero-size file with trusted.overlay.whiteout in a
    dir marked trusted.overlay.opaque=x (which is not opaque)."""
    build = layers(
        {"d": Dir(xattrs={"trusted.overlay.opaque": b"x"}),
         "d/x": File(b"", xattrs={"trusted.overlay.whiteout": b"y"}),
         "d/sub": File(b"", xattrs={"trusted.overlay.whiteout": b"y"}),
         "d/top": b"t"},
        {"d/x": b"hidden", "d/y": b"visible", "d/sub/z": b"hidden too"},
    )

    def scenario(mnt):
        out = _probe(mnt, "d", "d/x", "d/y", "d/sub", "d/top")
        out += [attempt(write, P(mnt, "d/x"), b"new", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
                attempt(os.mkdir, P(mnt, "d/sub")), attempt(ls, P(mnt, "d/sub")),
                attempt(os.unlink, P(mnt, "d/y")), attempt(ls, P(mnt, "d"))]
        return out

    res = run_differential(tmp_path, build, scenario)
    assert ("d", ["sub", "top", "y"]) not in res.kernel.outcomes
    assert ("d", ["top", "y"]) in res.kernel.outcomes
