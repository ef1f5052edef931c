"""Edge cases beyond the basic operations: open descriptors across unlink/rename/copy-up,
RENAME_EXCHANGE/RENAME_WHITEOUT, nested dir renames, d_type, directory link counts, dir xattrs,
SEEK_DATA/SEEK_HOLE, explicit directory times."""
import ctypes
import os
import stat

import pytest

from tests.differential._diff import (DIFFERENTIAL, Dir, DirStream, File, Whiteout, attempt,
                                      layers, ls, P, read, run_differential, st, write, xattrs)

pytestmark = DIFFERENTIAL

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4


def renameat2(a, b, flags):
    if _libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _tree(mnt, rel="."):
    out = []
    root = P(mnt, rel)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in sorted(dirnames) + sorted(filenames):
            p = os.path.join(dirpath, n)
            s = st(p)
            out.append((os.path.relpath(p, root), s["kind"],
                        read(p) if s["kind"] == "file" else None))
    return sorted(out)


def test_unlinked_open_file_stays_usable(tmp_path):
    build = layers({"f": b"lower data", "g": b"read only"})

    def pread(fd):
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 100)

    def scenario(mnt):
        rw = os.open(P(mnt, "f"), os.O_RDWR)
        ro = os.open(P(mnt, "g"), os.O_RDONLY)
        try:
            out = [attempt(os.unlink, P(mnt, "f")), attempt(os.unlink, P(mnt, "g")),
                   attempt(os.lstat, P(mnt, "f")), ls(P(mnt))]
            out += [attempt(os.pwrite, rw, b"LOWER", 0), attempt(pread, rw),
                    attempt(lambda: os.fstat(rw).st_nlink), attempt(lambda: os.fstat(rw).st_size),
                    attempt(pread, ro), attempt(lambda: os.fstat(ro).st_size),
                    attempt(lambda: os.fstat(ro).st_nlink), attempt(os.fchmod, rw, 0o600),
                    attempt(os.ftruncate, rw, 3)]
            out.append(attempt(write, P(mnt, "f"), b"new file at the old name"))
            out += [attempt(read, P(mnt, "f")), attempt(pread, rw)]
        finally:
            os.close(rw)
            os.close(ro)
        return out

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[5] == b"LOWER data"


def test_open_file_renamed_then_written(tmp_path):
    build = layers({"d/f": b"lower", "e": Dir()})

    def scenario(mnt):
        fd = os.open(P(mnt, "d/f"), os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"1")
            out = [attempt(os.rename, P(mnt, "d/f"), P(mnt, "e/g"))]
            os.write(fd, b"2")
            out.append(attempt(os.rename, P(mnt, "d"), P(mnt, "d2")))
            os.write(fd, b"3")
        finally:
            os.close(fd)
        return out + [read(P(mnt, "e/g")), _tree(mnt)]

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[2] == b"lower123"


def test_fd_opened_on_lower_then_chmod_and_read(tmp_path):
    build = layers({"f": File(b"abc", mode=0o644)})

    def scenario(mnt):
        fd = os.open(P(mnt, "f"), os.O_RDONLY)
        try:
            os.chmod(P(mnt, "f"), 0o600)
            s = os.fstat(fd)
            return [stat.S_IMODE(s.st_mode), os.read(fd, 10), st(P(mnt, "f"))]
        finally:
            os.close(fd)

    run_differential(tmp_path, build, scenario)


def test_ftruncate_on_lower_fd(tmp_path):
    build = layers({"f": b"0123456789"})

    def scenario(mnt):
        fd = os.open(P(mnt, "f"), os.O_RDWR)
        try:
            out = [attempt(os.ftruncate, fd, 4), os.fstat(fd).st_size,
                   attempt(os.ftruncate, fd, 20), os.fstat(fd).st_size]
        finally:
            os.close(fd)
        return out + [read(P(mnt, "f"))]

    run_differential(tmp_path, build, scenario)


@pytest.mark.parametrize("pair", ["lower_files", "lower_file_upper_file", "lower_dirs",
                                  "file_and_dir", "missing_target"])
def test_rename_exchange(tmp_path, pair):
    build = layers({"a": b"A", "b": b"B", "da/x": b"x", "db/y": b"y"}, {"da/lx": b"lx"})

    def scenario(mnt):
        write(P(mnt, "u"), b"U")
        a, b = {"lower_files": ("a", "b"), "lower_file_upper_file": ("a", "u"),
                "lower_dirs": ("da", "db"), "file_and_dir": ("a", "da"),
                "missing_target": ("a", "nothing")}[pair]
        return [attempt(renameat2, P(mnt, a), P(mnt, b), RENAME_EXCHANGE), _tree(mnt)]

    run_differential(tmp_path, build, scenario)


def test_rename_whiteout_flag(tmp_path):
    build = layers({"a": b"A", "d/b": b"B"})

    def scenario(mnt):
        return [attempt(renameat2, P(mnt, "a"), P(mnt, "a2"), RENAME_WHITEOUT), _tree(mnt)]

    run_differential(tmp_path, build, scenario)


def test_nested_dir_renames(tmp_path):
    """Rename a child dir, then its parent, then move the child out again: every redirect must
    keep finding the lower content."""
    build = layers({"p/c/g/leaf": b"leaf", "p/c/f": b"f", "p/pf": b"pf"},
                   {"p/c/low": b"low", "p/c/g/lowleaf": b"ll", "q/qq": b"qq"})

    def scenario(mnt):
        out = [attempt(os.rename, P(mnt, "p/c"), P(mnt, "p/c2")),
               attempt(os.rename, P(mnt, "p"), P(mnt, "q/p2")),
               _tree(mnt),
               attempt(os.rename, P(mnt, "q/p2/c2/g"), P(mnt, "g3")),
               attempt(os.rename, P(mnt, "q/p2/c2"), P(mnt, "c4")),
               attempt(os.rename, P(mnt, "q"), P(mnt, "q5")),
               _tree(mnt),
               attempt(os.mkdir, P(mnt, "p")), attempt(os.mkdir, P(mnt, "p/c")),
               attempt(ls, P(mnt, "p/c")),
               attempt(write, P(mnt, "c4/low"), b"changed low"),
               attempt(os.unlink, P(mnt, "g3/lowleaf")),
               _tree(mnt)]
        return out

    run_differential(tmp_path, build, scenario)


def test_rename_dir_then_rmdir_it(tmp_path):
    build = layers({"d/a": b"a"}, {"d/b": b"b"})

    def scenario(mnt):
        os.rename(P(mnt, "d"), P(mnt, "e"))
        os.unlink(P(mnt, "e/a"))
        os.unlink(P(mnt, "e/b"))
        return [attempt(os.rmdir, P(mnt, "e")), ls(P(mnt)), attempt(os.mkdir, P(mnt, "e")),
                ls(P(mnt, "e")), attempt(os.mkdir, P(mnt, "d")), ls(P(mnt, "d"))]

    run_differential(tmp_path, build, scenario)


def test_rename_dir_into_place_of_whiteout_and_back(tmp_path):
    build = layers({"x/a": b"a", "y/b": b"b"}, {"x/la": b"la", "y/lb": b"lb"})

    def scenario(mnt):
        out = [attempt(os.rename, P(mnt, "x"), P(mnt, "z")),
               attempt(os.rename, P(mnt, "y"), P(mnt, "x")),       # y takes x's old name
               _tree(mnt),
               attempt(os.rename, P(mnt, "z"), P(mnt, "y")),       # and x's content y's
               _tree(mnt)]
        return out

    run_differential(tmp_path, build, scenario)


def test_readdir_d_type(tmp_path):
    from tests.differential._diff import Dev, Fifo, Symlink
    build = layers({"d/file": b"f", "d/dir": Dir(), "d/link": Symlink("file"), "d/fifo": Fifo(),
                    "d/chr": Dev(1, 3)}, {"d/lowfile": b"l", "d/lowdir/x": b"x"})

    def scenario(mnt):
        os.mkdir(P(mnt, "d/newdir"))
        write(P(mnt, "d/newfile"), b"n")
        os.symlink("x", P(mnt, "d/newlink"))
        with DirStream(P(mnt, "d")) as ds:
            return [sorted(ds.entries())]

    res = run_differential(tmp_path, build, scenario)
    assert dict(res.kernel.outcomes[0])[b"file"] == 8      # DT_REG


def test_directory_link_counts(tmp_path):
    """st_nlink of dirs: tools like find use it (-noleaf) to skip stat calls, so a too-small
    count hides subdirectories."""
    build = layers({"merged/a/x": b"x", "merged/b": Dir(), "loweronly/s1": Dir(),
                    "loweronly/s2": Dir(), "loweronly/f": b"f"},
                   {"merged/c": Dir(), "merged/d/y": b"y"})

    def scenario(mnt):
        os.mkdir(P(mnt, "upperonly"))
        os.mkdir(P(mnt, "upperonly/s"))
        os.mkdir(P(mnt, "merged/e"))
        out = {}
        for rel in (".", "merged", "loweronly", "upperonly", "merged/a", "merged/c"):
            out[rel] = os.lstat(P(mnt, rel)).st_nlink
        return [sorted(out.items())]

    run_differential(tmp_path, build, scenario)


def test_find_style_walk_sees_every_dir(tmp_path):
    """A walk that trusts st_nlink (leaf optimisation: nlink-2 subdirs) finds every dir the
    kernel's does."""
    build = layers({"t/a/b": Dir(), "t/c": Dir(), "t/f": b"f"}, {"t/d/e": Dir(), "t/g": Dir()})

    def leafwalk(root):
        found = []

        def walk(p):
            n = os.lstat(p).st_nlink
            remaining = n - 2 if n >= 2 else None
            for name in sorted(os.listdir(p)):
                if remaining == 0:
                    break                          # what find does when nlink says "no more"
                q = os.path.join(p, name)
                if stat.S_ISDIR(os.lstat(q).st_mode):
                    found.append(os.path.relpath(q, root))
                    if remaining is not None:
                        remaining -= 1
                    walk(q)
        walk(root)
        return sorted(found)

    def scenario(mnt):
        os.mkdir(P(mnt, "t/new"))
        return [leafwalk(P(mnt, "t"))]

    res = run_differential(tmp_path, build, scenario)
    assert len(res.kernel.outcomes[0]) == 7


def test_dir_xattrs_and_merged_dir_copy_up(tmp_path):
    build = layers({"d": Dir(mode=0o755, xattrs={"user.top": b"T", "trusted.tt": b"TT"}),
                    "d/a": b"a"},
                   {"d": Dir(xattrs={"user.bottom": b"B"}), "d/b": b"b"})

    def scenario(mnt):
        p = P(mnt, "d")
        out = [xattrs(p), attempt(os.setxattr, p, "user.new", b"N"), xattrs(p),
               attempt(os.removexattr, p, "user.top"), xattrs(p), ls(p),
               attempt(os.chmod, p, 0o700), st(p), ls(p)]
        return out

    run_differential(tmp_path, build, scenario)


def test_explicit_directory_times(tmp_path):
    build = layers({"d/a": b"a", "e/b": b"b"}, {"d/c": b"c"})

    def scenario(mnt):
        out = []
        for rel in ("d", "e"):
            out.append(attempt(os.utime, P(mnt, rel), ns=(5_000_000_001, 7_000_000_123_456_789)))
            out.append(os.stat(P(mnt, rel)).st_mtime_ns)
        out.append(ls(P(mnt, "d")))
        return out

    res = run_differential(tmp_path, build, scenario)
    assert res.unionfs.outcomes[1] == 7_000_000_123_456_789


def test_seek_data_and_hole_on_sparse_lower(tmp_path):
    off = 8 << 20
    build = layers({"sparse": File(b"DATA", sparse_at=off)})

    def scenario(mnt):
        out = []
        for phase in ("lower", "copied-up"):
            fd = os.open(P(mnt, "sparse"), os.O_RDONLY)
            try:
                out.append((phase, attempt(os.lseek, fd, 0, os.SEEK_DATA),
                            attempt(os.lseek, fd, 0, os.SEEK_HOLE),
                            attempt(os.lseek, fd, off + 4, os.SEEK_DATA)))
            finally:
                os.close(fd)
            if phase == "lower":
                os.chmod(P(mnt, "sparse"), 0o600)
        return out

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[0][1] == off


def test_create_modes_and_umask(tmp_path):
    build = layers({"d/x": b"x"})

    def scenario(mnt):
        old = os.umask(0o027)
        try:
            out = [attempt(write, P(mnt, "d/f1"), b"1", os.O_WRONLY | os.O_CREAT, 0o666),
                   attempt(os.mkdir, P(mnt, "d/sub"), 0o777),
                   attempt(os.mkfifo, P(mnt, "d/fifo"), 0o666),
                   attempt(write, P(mnt, "d/suid"), b"s", os.O_WRONLY | os.O_CREAT, 0o4755)]
        finally:
            os.umask(old)
        for n in ("f1", "sub", "fifo", "suid"):
            out.append(st(P(mnt, "d", n)))
        return out

    run_differential(tmp_path, build, scenario)


def test_setgid_dir_inheritance(tmp_path):
    build = layers({"sg": Dir(mode=0o2775, gid=4242)})

    def scenario(mnt):
        write(P(mnt, "sg/f"), b"f")
        os.mkdir(P(mnt, "sg/sub"))
        return [st(P(mnt, "sg/f")), st(P(mnt, "sg/sub")), st(P(mnt, "sg"))]

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[0]["gid"] == 4242


def _link_fd(fd, path):
    """linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH): give an O_TMPFILE file a name."""
    AT_EMPTY_PATH = 0x1000
    if _libc.linkat(fd, b"", AT_FDCWD, os.fsencode(path), AT_EMPTY_PATH) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def test_o_tmpfile(tmp_path):
    build = layers({"d/x": b"x"})

    def scenario(mnt):
        try:
            fd = os.open(P(mnt, "d"), os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError as e:
            return ["open", errno_name(e)]
        try:
            os.write(fd, b"tmp")
            out = ["open", "ok", ls(P(mnt, "d")), os.fstat(fd).st_nlink,
                   attempt(_link_fd, fd, P(mnt, "d/linked"))]
        finally:
            os.close(fd)
        return out + [attempt(read, P(mnt, "d/linked")), ls(P(mnt, "d"))]

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[-1] == ["linked", "x"]


def errno_name(e):
    import errno
    return errno.errorcode.get(e.errno, e.errno)


def test_remove_and_move_out_of_lower_dir_with_lower_whiteout(tmp_path):
    build = layers({"d/a": b"a", "d/b": b"b", "w": Whiteout()}, {"w": b"hidden", "d/c": b"c"})

    def scenario(mnt):
        return [attempt(os.unlink, P(mnt, "d/a")), attempt(os.rename, P(mnt, "d/c"),
                                                            P(mnt, "c")),
                ls(P(mnt)), ls(P(mnt, "d"))]

    run_differential(tmp_path, build, scenario)
