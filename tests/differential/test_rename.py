"""rename(2): files and dirs from every layer, over existing targets, and the errors; with
redirect_dir=on a dir rename never fails with EXDEV."""
import errno
import os

import pytest

from tests.differential._diff import (DIFFERENTIAL, Dir, File, Whiteout, attempt, layers, ls, P,
                                      read, run_differential, st, upper_layout, write)

pytestmark = DIFFERENTIAL

EXDEV = errno.errorcode[errno.EXDEV]


def _tree(mnt, rel):
    """Everything under a dir: sorted (relpath, kind, content) for checking moved children."""
    out = []
    root = P(mnt, rel)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in sorted(dirnames) + sorted(filenames):
            p = os.path.join(dirpath, n)
            r = os.path.relpath(p, root)
            s = st(p)
            out.append((r, s["kind"], read(p) if s["kind"] == "file" else None))
    return sorted(out)


def _no_exdev(res):
    for side in (res.kernel, res.unionfs):
        assert EXDEV not in repr(side.outcomes), side.name + " returned EXDEV"


def test_rename_lower_file(tmp_path):
    build = layers({"a": File(b"A", mode=0o600, uid=4, gid=5, xattrs={"user.a": b"1"}),
                    "d/b": b"B", "e/keep": b"k"})

    def scenario(mnt):
        out = [attempt(os.rename, P(mnt, "a"), P(mnt, "a2")),          # same dir
               attempt(os.rename, P(mnt, "d/b"), P(mnt, "e/b2")),      # other dir
               attempt(os.rename, P(mnt, "a2"), P(mnt, "d/a3"))]       # again, now upper
        out += [ls(P(mnt)), ls(P(mnt, "d")), ls(P(mnt, "e")), attempt(read, P(mnt, "d/a3")),
                attempt(st, P(mnt, "d/a3")), attempt(os.lstat, P(mnt, "a")),
                attempt(os.lstat, P(mnt, "d/b"))]
        return out

    res = run_differential(tmp_path, build, scenario)
    _no_exdev(res)


def test_rename_upper_file(tmp_path):
    build = layers({"d/x": b"x"})

    def scenario(mnt):
        write(P(mnt, "u"), b"upper")
        write(P(mnt, "d/v"), b"upper v")
        return [attempt(os.rename, P(mnt, "u"), P(mnt, "u2")),
                attempt(os.rename, P(mnt, "d/v"), P(mnt, "v2")),
                attempt(os.rename, P(mnt, "u2"), P(mnt, "d/u3")),
                ls(P(mnt)), ls(P(mnt, "d")), attempt(read, P(mnt, "d/u3"))]

    run_differential(tmp_path, build, scenario)


def test_rename_lower_dir_with_children(tmp_path):
    build = layers(
        {"src": Dir(mode=0o750, uid=3, gid=4, xattrs={"user.s": b"S"}),
         "src/a": b"a", "src/sub/b": b"b", "src/sub/deeper/c": b"c", "other": Dir()},
        {"src/lowest": b"from layer 2", "src/sub/l2": b"l2", "src/gone": b"g",
         "src/w": b"whited"},
        {"src/gone": b"also below"},
    )

    def scenario(mnt):
        out = []
        os.unlink(P(mnt, "src/gone"))
        out.append(attempt(os.rename, P(mnt, "src"), P(mnt, "renamed")))     # same parent
        out += [ls(P(mnt)), _tree(mnt, "renamed"), st(P(mnt, "renamed")),
                attempt(os.lstat, P(mnt, "src"))]
        out.append(attempt(os.rename, P(mnt, "renamed"), P(mnt, "other/moved")))  # other parent
        out += [ls(P(mnt)), ls(P(mnt, "other")), _tree(mnt, "other/moved")]
        out.append(attempt(os.rename, P(mnt, "other/moved"), P(mnt, "again")))    # once more
        out += [_tree(mnt, "again"), attempt(os.lstat, P(mnt, "other/moved"))]
        # a child of the renamed dir
        out.append(attempt(os.rename, P(mnt, "again/sub"), P(mnt, "again/sub-renamed")))
        out.append(attempt(os.rename, P(mnt, "again/lowest"), P(mnt, "lowest-out")))
        out += [_tree(mnt, "again"), attempt(read, P(mnt, "lowest-out"))]
        # a new dir with the old name is empty, not merged with the old lower content
        out += [attempt(os.mkdir, P(mnt, "src")), ls(P(mnt, "src")), ls(P(mnt))]
        # and writes into the moved tree land in the right place
        out.append(attempt(write, P(mnt, "again/sub-renamed/deeper/c"), b"changed"))
        out.append(_tree(mnt, "again"))
        return out

    res = run_differential(tmp_path, build, scenario)
    _no_exdev(res)
    assert any("+redirect" in v for v in upper_layout(res.kernel.upper).values())


def test_rename_lower_dir_back_to_its_name(tmp_path):
    build = layers({"d/a": b"a", "d/s/b": b"b"}, {"d/c": b"c"})

    def scenario(mnt):
        return [attempt(os.rename, P(mnt, "d"), P(mnt, "e")),
                attempt(os.rename, P(mnt, "e"), P(mnt, "d")),
                _tree(mnt, "d"), ls(P(mnt)),
                attempt(os.rename, P(mnt, "d/s"), P(mnt, "s")),
                attempt(os.rename, P(mnt, "s"), P(mnt, "d/s")), _tree(mnt, "d")]

    run_differential(tmp_path, build, scenario)


def test_rename_merged_dir(tmp_path):
    build = layers({"m/low": b"low", "m/sub/x": b"x"}, {"m/lower2": b"l2"})

    def scenario(mnt):
        write(P(mnt, "m/up"), b"upper file")          # m now exists in upper and lower
        os.mkdir(P(mnt, "m/newdir"))
        out = [attempt(os.rename, P(mnt, "m"), P(mnt, "n")), ls(P(mnt)), _tree(mnt, "n"),
               attempt(os.rename, P(mnt, "n/sub"), P(mnt, "sub2")), _tree(mnt, "sub2"),
               _tree(mnt, "n")]
        return out

    res = run_differential(tmp_path, build, scenario)
    _no_exdev(res)


def test_rename_over_existing_file(tmp_path):
    build = layers({"a": b"A lower", "b": b"B lower", "c": b"C lower", "d": Dir()},
                   {"b": b"B below", "d/e": b"E"})

    def scenario(mnt):
        write(P(mnt, "u"), b"upper u")
        out = [attempt(os.rename, P(mnt, "a"), P(mnt, "b")),      # lower over lower (2 layers)
               attempt(os.rename, P(mnt, "u"), P(mnt, "c")),      # upper over lower
               attempt(os.rename, P(mnt, "c"), P(mnt, "d/e")),    # copied-up over other dir's
               ls(P(mnt)), ls(P(mnt, "d")), attempt(read, P(mnt, "b")),
               attempt(read, P(mnt, "d/e")), attempt(os.lstat, P(mnt, "a"))]
        write(P(mnt, "x"), b"x")
        write(P(mnt, "y"), b"y")
        out.append(attempt(os.rename, P(mnt, "x"), P(mnt, "y")))  # upper over upper
        out += [ls(P(mnt)), attempt(read, P(mnt, "y"))]
        return out

    run_differential(tmp_path, build, scenario)


@pytest.mark.parametrize("variant", ["lower_target", "upper_target", "lower_src_upper_target",
                                     "upper_src_lower_target", "emptied_merged_target"])
def test_rename_dir_over_empty_dir(tmp_path, variant):
    build = layers({"srcl/child": b"c", "srcl/s/x": b"x", "empty_lower": Dir(),
                    "target_m/a": b"a"}, {"target_m/b": b"b", "srcl/below": b"below"})

    def scenario(mnt):
        os.mkdir(P(mnt, "srcu"))
        write(P(mnt, "srcu/uc"), b"uc")
        os.mkdir(P(mnt, "empty_upper"))
        os.unlink(P(mnt, "target_m/a"))
        os.unlink(P(mnt, "target_m/b"))
        src, dst = {
            "lower_target": ("srcl", "empty_lower"),
            "upper_target": ("srcu", "empty_upper"),
            "lower_src_upper_target": ("srcl", "empty_upper"),
            "upper_src_lower_target": ("srcu", "empty_lower"),
            "emptied_merged_target": ("srcl", "target_m"),
        }[variant]
        out = [attempt(os.rename, P(mnt, src), P(mnt, dst)), ls(P(mnt)), _tree(mnt, dst),
               attempt(os.lstat, P(mnt, src))]
        # the moved dir still merges correctly afterwards
        out += [attempt(write, P(mnt, dst, "new"), b"n"), _tree(mnt, dst)]
        return out

    res = run_differential(tmp_path, build, scenario)
    _no_exdev(res)
    assert res.kernel.outcomes[0] is None


@pytest.mark.parametrize("target", ["lower_nonempty", "merged_nonempty", "upper_nonempty",
                                    "lower_child_only"])
def test_rename_dir_over_nonempty_dir_enotempty(tmp_path, target):
    build = layers({"src/a": b"a", "lower_nonempty/x": b"x", "merged_nonempty/y": b"y",
                    "lower_child_only": Dir()},
                   {"lower_child_only/deep": b"from below", "merged_nonempty/z": b"z"})

    def scenario(mnt):
        os.mkdir(P(mnt, "upper_nonempty"))
        write(P(mnt, "upper_nonempty/f"), b"f")
        os.unlink(P(mnt, "merged_nonempty/y"))           # z (lower 2) still there
        return [attempt(os.rename, P(mnt, "src"), P(mnt, target)), ls(P(mnt)),
                _tree(mnt, target), _tree(mnt, "src")]

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[0] == "ENOTEMPTY"


@pytest.mark.parametrize("case", ["dir_over_file", "file_over_dir", "into_own_subdir",
                                  "onto_itself", "missing_source", "into_missing_dir",
                                  "dir_over_whiteouted_name", "file_under_file"])
def test_rename_errors(tmp_path, case):
    build = layers({"dir/child/g": b"g", "file": b"f", "dir2/x": b"x", "gone": b"g"},
                   {"dir/lower": b"l"})

    def scenario(mnt):
        os.unlink(P(mnt, "gone"))
        src, dst = {
            "dir_over_file": ("dir", "file"),                 # ENOTDIR
            "file_over_dir": ("file", "dir2"),                # EISDIR
            "into_own_subdir": ("dir", "dir/child/inside"),   # EINVAL
            "onto_itself": ("dir", "dir"),                    # no-op
            "missing_source": ("nothing", "x"),               # ENOENT
            "into_missing_dir": ("file", "nodir/file"),       # ENOENT
            "dir_over_whiteouted_name": ("dir2", "gone"),     # fine: name is free
            "file_under_file": ("dir2", "file/x"),            # ENOTDIR
        }[case]
        return [attempt(os.rename, P(mnt, src), P(mnt, dst)), ls(P(mnt)), _tree(mnt, ".")]

    res = run_differential(tmp_path, build, scenario)
    _no_exdev(res)
    expected = {"dir_over_file": "ENOTDIR", "file_over_dir": "EISDIR",
                "into_own_subdir": "EINVAL", "onto_itself": None, "missing_source": "ENOENT",
                "into_missing_dir": "ENOENT", "dir_over_whiteouted_name": None,
                "file_under_file": "ENOTDIR"}[case]
    assert res.kernel.outcomes[0] == expected


def test_rename_exchange_flags_not_required_but_noreplace(tmp_path):
    """renameat2(RENAME_NOREPLACE) on an existing lower name → EEXIST; on a free name works."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, RENAME_NOREPLACE = -100, 1

    def renameat2(a, b, flags):
        r = libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), flags)
        if r != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return r

    build = layers({"a": b"a", "b": b"b"})

    def scenario(mnt):
        return [attempt(renameat2, P(mnt, "a"), P(mnt, "b"), RENAME_NOREPLACE),
                attempt(renameat2, P(mnt, "a"), P(mnt, "c"), RENAME_NOREPLACE), ls(P(mnt))]

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[0] == "EEXIST"


def test_rename_lower_dir_into_deep_new_parent_and_write(tmp_path):
    build = layers({"a/b/c/file": b"deep", "x/y": Dir()}, {"a/b/c/low": b"low"})

    def scenario(mnt):
        out = [attempt(os.rename, P(mnt, "a/b"), P(mnt, "x/y/b")), _tree(mnt, "x"),
               ls(P(mnt, "a")), attempt(write, P(mnt, "x/y/b/c/low"), b"new low"),
               attempt(os.unlink, P(mnt, "x/y/b/c/file")), _tree(mnt, "x")]
        return out

    res = run_differential(tmp_path, build, scenario)
    _no_exdev(res)


def test_rename_with_whiteout_in_lower_target_dir(tmp_path):
    build = layers({"src/f": b"f", "dst": Dir(), "dst/w": Whiteout()}, {"dst/w": b"hidden"})

    def scenario(mnt):
        return [attempt(os.rename, P(mnt, "src/f"), P(mnt, "dst/w")), ls(P(mnt, "dst")),
                attempt(read, P(mnt, "dst/w"))]

    run_differential(tmp_path, build, scenario)
