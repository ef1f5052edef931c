"""errno parity with the kernel overlay, name lengths and names that are not valid UTF-8."""
import os

import pytest

from tests.differential._diff import (DIFFERENTIAL, Dir, attempt, layers, ls, P, read,
                                      run_differential, write)

pytestmark = DIFFERENTIAL

O_EXCL_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL

LOWER = layers({"file": b"lower file", "dir/child": b"c", "dir/sub": Dir(), "emptydir": Dir(),
                "link": b"x"},
               {"dir/below": b"below", "merged/only_below": b"b"})


def _excl(p):
    return write(p, b"new", O_EXCL_CREATE)


CASES = {
    # ENOENT
    "stat_missing": lambda m: os.stat(P(m, "missing")),
    "stat_missing_deep": lambda m: os.stat(P(m, "nodir/x")),
    "unlink_missing": lambda m: os.unlink(P(m, "missing")),
    "rmdir_missing": lambda m: os.rmdir(P(m, "missing")),
    "open_missing": lambda m: read(P(m, "missing")),
    "create_in_missing_dir": lambda m: write(P(m, "nodir/f"), b"x"),
    "readlink_missing": lambda m: os.readlink(P(m, "missing")),
    "getxattr_missing_attr": lambda m: os.getxattr(P(m, "file"), "user.none"),
    "chmod_missing": lambda m: os.chmod(P(m, "missing"), 0o600),
    # EEXIST
    "mkdir_existing_lower_dir": lambda m: os.mkdir(P(m, "dir")),
    "mkdir_existing_lower_file": lambda m: os.mkdir(P(m, "file")),
    "mkdir_existing_merged": lambda m: os.mkdir(P(m, "merged")),
    "excl_create_existing_lower_file": lambda m: _excl(P(m, "file")),
    "excl_create_existing_deeper_file": lambda m: _excl(P(m, "dir/below")),
    "excl_create_existing_dir": lambda m: _excl(P(m, "dir")),
    "link_to_existing_name": lambda m: os.link(P(m, "file"), P(m, "link")),
    "link_to_existing_dir_name": lambda m: os.link(P(m, "file"), P(m, "dir")),
    "symlink_over_existing": lambda m: os.symlink("t", P(m, "file")),
    "symlink_over_existing_dir": lambda m: os.symlink("t", P(m, "dir")),
    "mkfifo_over_existing": lambda m: os.mkfifo(P(m, "file")),
    # ENOTDIR
    "stat_file_slash_x": lambda m: os.stat(P(m, "file/x")),
    "stat_file_trailing_slash": lambda m: os.stat(P(m, "file") + "/"),
    "rmdir_file": lambda m: os.rmdir(P(m, "file")),
    "listdir_file": lambda m: os.listdir(P(m, "file")),
    "create_under_file": lambda m: write(P(m, "file/x"), b"x"),
    # EISDIR
    "open_dir_for_write": lambda m: os.close(os.open(P(m, "dir"), os.O_WRONLY)),
    "open_dir_rdwr": lambda m: os.close(os.open(P(m, "dir"), os.O_RDWR)),
    "unlink_dir": lambda m: os.unlink(P(m, "dir")),
    "unlink_empty_dir": lambda m: os.unlink(P(m, "emptydir")),
    "link_dir": lambda m: os.link(P(m, "dir"), P(m, "dirlink")),     # EPERM
    "truncate_dir": lambda m: os.truncate(P(m, "dir"), 0),
    # ENOTEMPTY
    "rmdir_merged_with_lower_children": lambda m: os.rmdir(P(m, "dir")),
    "rmdir_dir_with_only_deeper_children": lambda m: os.rmdir(P(m, "merged")),
    "rmdir_root": lambda m: os.rmdir(m),
    # ENAMETOOLONG
    "stat_256": lambda m: os.stat(P(m, "n" * 256)),
    "create_256": lambda m: write(P(m, "n" * 256), b"x"),
    "mkdir_256": lambda m: os.mkdir(P(m, "n" * 256)),
    "symlink_256": lambda m: os.symlink("t", P(m, "n" * 256)),
    "rename_to_256": lambda m: os.rename(P(m, "file"), P(m, "n" * 256)),
    "unlink_256": lambda m: os.unlink(P(m, "n" * 256)),
    # misc
    "setxattr_create_existing": lambda m: (os.setxattr(P(m, "file"), "user.a", b"1"),
                                           os.setxattr(P(m, "file"), "user.a", b"2",
                                                       os.XATTR_CREATE)),
    "setxattr_replace_missing": lambda m: os.setxattr(P(m, "file"), "user.none", b"1",
                                                      os.XATTR_REPLACE),
    "removexattr_missing": lambda m: os.removexattr(P(m, "file"), "user.none"),
    "getxattr_small_buffer": lambda m: _getxattr_size(P(m, "file")),
}


def _getxattr_size(p):
    """getxattr with a too-small buffer → ERANGE (via ctypes)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    os.setxattr(p, "user.big", b"v" * 100)
    buf = ctypes.create_string_buffer(10)
    r = libc.getxattr(os.fsencode(p), b"user.big", buf, ctypes.c_size_t(10))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


EXPECTED_ON_KERNEL = {
    "stat_missing": "ENOENT", "unlink_missing": "ENOENT", "mkdir_existing_lower_dir": "EEXIST",
    "excl_create_existing_lower_file": "EEXIST", "link_to_existing_name": "EEXIST",
    "symlink_over_existing": "EEXIST", "stat_file_slash_x": "ENOTDIR", "rmdir_file": "ENOTDIR",
    "open_dir_for_write": "EISDIR", "unlink_dir": "EISDIR",
    "rmdir_merged_with_lower_children": "ENOTEMPTY", "stat_256": "ENAMETOOLONG",
    "create_256": "ENAMETOOLONG",
}


@pytest.fixture(scope="module")
def errno_run(tmp_path_factory):
    """All CASES in one scenario (one mount per system), in a fixed order: each case is then
    reported by its own test. The cases fail without side effects on the kernel, except the
    xattr ones, which set user.a/user.big on 'file' first."""
    def scenario(mnt):
        return {case: attempt(CASES[case], mnt) for case in sorted(CASES)}

    return run_differential(tmp_path_factory.mktemp("errno"), LOWER, scenario,
                            compare_outcomes=False, check=False)


@pytest.mark.parametrize("case", sorted(CASES))
def test_errno_parity(errno_run, case):
    k, u = errno_run.kernel.outcomes[case], errno_run.unionfs.outcomes[case]
    assert u == k, "%s: kernel %r, unionfs %r" % (case, k, u)
    if case in EXPECTED_ON_KERNEL:
        assert k == EXPECTED_ON_KERNEL[case]


def test_errno_cases_leave_same_tree(errno_run):
    """After all the failing calls, the merged trees, the uppers and the cross mounts agree."""
    assert not errno_run.problems, "\n\n".join(errno_run.problems)


def test_name_of_255_bytes_works(tmp_path):
    n255 = "L" * 255
    n255b = "M" * 255
    build = layers({n255: b"lower long", "d/" + n255: b"in dir"})

    def scenario(mnt):
        out = [attempt(read, P(mnt, n255)), attempt(write, P(mnt, "d", n255b), b"x"),
               attempt(os.mkdir, P(mnt, "D" * 255)),
               attempt(os.symlink, "t" * 255, P(mnt, "S" * 255)),
               attempt(os.rename, P(mnt, n255), P(mnt, n255b)),
               attempt(os.unlink, P(mnt, "d", n255)),
               attempt(write, P(mnt, n255), b"recreated"),
               ls(P(mnt)), ls(P(mnt, "d")), attempt(read, P(mnt, n255b))]
        return out

    run_differential(tmp_path, build, scenario)


def test_utf8_multibyte_name_of_255_bytes(tmp_path):
    name = "\u00e9" * 127 + "x"       # 255 bytes in UTF-8
    assert len(name.encode()) == 255

    def scenario(mnt):
        return [attempt(write, P(mnt, name), b"x"), attempt(ls, P(mnt)),
                attempt(write, P(mnt, name + "y"), b"x")]    # 256 bytes

    res = run_differential(tmp_path, layers({}), scenario)
    assert res.kernel.outcomes[2] == "ENAMETOOLONG"


def test_non_utf8_names(tmp_path):
    lower_name = b"lower-\xff\xfe"
    build = layers({lower_name: b"not utf-8 in lower", b"dir-\xe9/x": b"x"})

    def scenario(mnt):
        m = os.fsencode(mnt)
        caf = os.path.join(m, b"caf\xe9")
        out = [attempt(write, caf, b"latin-1 name"), attempt(read, caf),
               attempt(os.mkdir, os.path.join(m, b"d\xe9\xe8")),
               sorted(os.listdir(m)), sorted(os.listdir(os.fsdecode(m))),
               attempt(read, os.path.join(m, lower_name)),
               attempt(os.rename, caf, os.path.join(m, b"caf\xe9\xe9")),
               attempt(os.rename, os.path.join(m, lower_name), os.path.join(m, b"moved-\x80")),
               attempt(os.rename, os.path.join(m, b"dir-\xe9"), os.path.join(m, b"dir-\xea")),
               sorted(os.listdir(m)),
               attempt(os.listdir, os.path.join(m, b"dir-\xea")),
               attempt(os.unlink, os.path.join(m, b"caf\xe9\xe9")),
               attempt(os.unlink, os.path.join(m, b"moved-\x80")),
               attempt(os.rmdir, os.path.join(m, b"d\xe9\xe8")),
               sorted(os.listdir(m))]
        with os.scandir(m) as it:
            out.append(sorted(e.name for e in it))
        return out

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[0] == len(b"latin-1 name")
