"""unlink/rmdir: whiteouts where a lower name must stay hidden, none where nothing is below;
opaque dirs when a dir is re-created over a removed merged dir; creating over whiteouts."""
import os

from tests.differential._diff import (DIFFERENTIAL, Dir, Whiteout, attempt, layers, ls, P, read,
                                      run_differential, st, whiteouts, opaque_dirs, write)

pytestmark = DIFFERENTIAL


def test_unlink_lower_file_makes_whiteout_upper_only_does_not(tmp_path):
    build = layers({"lower_file": b"l", "d/lower_in_dir": b"x", "d/keep": b"k",
                    "deep/a/b/c/f": b"deep"})

    def scenario(mnt):
        out = [attempt(write, P(mnt, "upper_only"), b"u"), attempt(write, P(mnt, "d/upper2"), b"u")]
        out += [attempt(os.unlink, P(mnt, n)) for n in
                ("lower_file", "upper_only", "d/lower_in_dir", "d/upper2", "deep/a/b/c/f")]
        out += [attempt(os.lstat, P(mnt, "lower_file")), ls(P(mnt)), ls(P(mnt, "d")),
                ls(P(mnt, "deep/a/b/c"))]
        return out

    res = run_differential(tmp_path, build, scenario)
    assert whiteouts(res.kernel.upper) == ["d/lower_in_dir", "deep/a/b/c/f", "lower_file"]
    assert whiteouts(res.unionfs.upper) == whiteouts(res.kernel.upper)
    assert opaque_dirs(res.unionfs.upper) == opaque_dirs(res.kernel.upper)


def test_unlink_copied_up_file_makes_whiteout(tmp_path):
    build = layers({"f": b"lower", "g": b"lower g"})

    def scenario(mnt):
        write(P(mnt, "f"), b"changed")       # copied up, then removed: lower must stay hidden
        os.chmod(P(mnt, "g"), 0o600)
        return [attempt(os.unlink, P(mnt, "f")), attempt(os.unlink, P(mnt, "g")), ls(P(mnt)),
                attempt(read, P(mnt, "f"))]

    res = run_differential(tmp_path, build, scenario)
    assert whiteouts(res.kernel.upper) == ["f", "g"]


def test_unlink_name_that_exists_only_in_a_deeper_layer(tmp_path):
    build = layers({"d/top": b"t"}, {"d/mid": b"m"}, {"d/bottom": b"b", "d/mid": b"shadowed"})

    def scenario(mnt):
        out = [attempt(os.unlink, P(mnt, "d/bottom")), attempt(os.unlink, P(mnt, "d/mid")),
               attempt(os.unlink, P(mnt, "d/top")), ls(P(mnt, "d"))]
        out.append(attempt(os.rmdir, P(mnt, "d")))
        out.append(ls(P(mnt)))
        return out

    run_differential(tmp_path, build, scenario)


def test_rmdir_lower_dir_after_emptying(tmp_path):
    build = layers({"d/a": b"a", "d/sub": Dir(), "e": Dir()}, {"d/b": b"b", "d/sub/x": b"x"})

    def scenario(mnt):
        out = [attempt(os.rmdir, P(mnt, "d"))]            # ENOTEMPTY
        out.append(attempt(os.rmdir, P(mnt, "d/sub")))    # ENOTEMPTY (lower child)
        out.append(attempt(os.unlink, P(mnt, "d/sub/x")))
        out.append(attempt(os.rmdir, P(mnt, "d/sub")))
        out.append(attempt(os.unlink, P(mnt, "d/a")))
        out.append(attempt(os.unlink, P(mnt, "d/b")))
        out.append(attempt(ls, P(mnt, "d")))
        out.append(attempt(os.rmdir, P(mnt, "d")))
        out.append(attempt(os.rmdir, P(mnt, "e")))        # empty lower dir
        out += [attempt(os.lstat, P(mnt, "d")), ls(P(mnt))]
        return out

    res = run_differential(tmp_path, build, scenario)
    assert whiteouts(res.kernel.upper) == ["d", "e"]


def test_rmdir_upper_only_dir_leaves_no_whiteout(tmp_path):
    build = layers({"d/x": b"x"})

    def scenario(mnt):
        os.mkdir(P(mnt, "new"))
        os.mkdir(P(mnt, "d/newsub"))
        write(P(mnt, "new/f"), b"f")
        out = [attempt(os.rmdir, P(mnt, "new")), attempt(os.unlink, P(mnt, "new/f")),
               attempt(os.rmdir, P(mnt, "new")), attempt(os.rmdir, P(mnt, "d/newsub")),
               ls(P(mnt)), ls(P(mnt, "d"))]
        return out

    res = run_differential(tmp_path, build, scenario)
    assert whiteouts(res.kernel.upper) == []


def test_rmdir_then_mkdir_merged_dir_is_empty_and_opaque(tmp_path):
    build = layers({"m/a": b"a", "m/sub/s": b"s"}, {"m/b": b"b"})

    def scenario(mnt):
        write(P(mnt, "m/upper"), b"u")                    # merged dir now in upper and lowers
        for n in ("a", "b", "upper", "sub/s"):
            os.unlink(P(mnt, "m", n))
        os.rmdir(P(mnt, "m/sub"))
        out = [attempt(os.rmdir, P(mnt, "m")), attempt(os.lstat, P(mnt, "m")),
               attempt(os.mkdir, P(mnt, "m"), 0o711), ls(P(mnt, "m")), st(P(mnt, "m")),
               attempt(os.lstat, P(mnt, "m/a")), attempt(os.lstat, P(mnt, "m/sub")),
               attempt(write, P(mnt, "m/fresh"), b"fresh"), ls(P(mnt, "m"))]
        # a subdir made inside the new opaque dir over a name that was a lower dir
        out += [attempt(os.mkdir, P(mnt, "m/sub")), ls(P(mnt, "m/sub"))]
        return out

    res = run_differential(tmp_path, build, scenario)
    assert "m" in opaque_dirs(res.kernel.upper)
    assert res.kernel.outcomes[3] == []


def test_create_file_over_whiteout(tmp_path):
    build = layers({"f": b"lower f", "d/g": b"lower g"}, {"h": b"h"})

    def scenario(mnt):
        os.unlink(P(mnt, "f"))
        os.unlink(P(mnt, "d/g"))
        out = [attempt(write, P(mnt, "f"), b"new f", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
               attempt(read, P(mnt, "f")), st(P(mnt, "f")),
               attempt(os.mknod, P(mnt, "d/g"), 0o600 | 0o010000),      # a fifo over it
               st(P(mnt, "d/g")), ls(P(mnt)), ls(P(mnt, "d"))]
        os.unlink(P(mnt, "h"))
        out.append(attempt(os.symlink, "somewhere", P(mnt, "h")))
        out.append(attempt(os.readlink, P(mnt, "h")))
        return out

    res = run_differential(tmp_path, build, scenario)
    assert whiteouts(res.kernel.upper) == []


def test_mkdir_over_whiteout_is_opaque(tmp_path):
    build = layers({"d/x": b"x", "d/sub/y": b"y", "f": b"file"}, {"d/z": b"z"})

    def scenario(mnt):
        os.unlink(P(mnt, "d/x"))
        os.unlink(P(mnt, "d/z"))
        os.unlink(P(mnt, "d/sub/y"))
        os.rmdir(P(mnt, "d/sub"))
        os.rmdir(P(mnt, "d"))
        os.unlink(P(mnt, "f"))
        out = [attempt(os.mkdir, P(mnt, "d")), ls(P(mnt, "d")), attempt(os.lstat, P(mnt, "d/x")),
               attempt(os.mkdir, P(mnt, "f"), 0o700), st(P(mnt, "f")), ls(P(mnt, "f")),
               ls(P(mnt))]
        return out

    res = run_differential(tmp_path, build, scenario)
    assert opaque_dirs(res.kernel.upper) == ["d", "f"]


def test_mkdir_over_whiteout_present_in_a_lower(tmp_path):
    """A whiteout that lives in a lower layer (not the upper): creating over it."""
    build = layers({"w": Whiteout(), "wd": Whiteout()}, {"w": b"hidden", "wd/c": b"c"})

    def scenario(mnt):
        return [attempt(os.lstat, P(mnt, "w")), ls(P(mnt)),
                attempt(write, P(mnt, "w"), b"new", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
                attempt(read, P(mnt, "w")),
                attempt(os.mkdir, P(mnt, "wd")), attempt(ls, P(mnt, "wd")), ls(P(mnt))]

    run_differential(tmp_path, build, scenario)


def test_unlink_in_lower_opaque_dir(tmp_path):
    build = layers({"o": Dir(opaque=True), "o/a": b"a"}, {"o/a": b"below", "o/b": b"b"})

    def scenario(mnt):
        return [attempt(os.unlink, P(mnt, "o/a")), attempt(os.unlink, P(mnt, "o/b")),
                ls(P(mnt, "o")), attempt(os.rmdir, P(mnt, "o")), ls(P(mnt))]

    run_differential(tmp_path, build, scenario)
