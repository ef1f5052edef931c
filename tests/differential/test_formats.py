"""The upper's other formats against the kernel: userxattr mode, redirect_dir=off, and the OCI
'.wh.' form used where the daemon may not create whiteout devices.

Renaming a lower directory without redirects: the kernel answers EXDEV and mv(1) copies the tree;
unionfs copies the tree up itself. The scenarios therefore move directories the way mv(1) does,
and both must end with the same merged tree and the same upper layout, each readable by the other.
"""
import errno
import os
import shutil
import stat

import pytest

from tests.differential._diff import (File, P, attempt, errname, layers, ls, read, run_differential,
                                      st, write)
from tests.mountutil import (kernel_overlay_mount, requires_fuse, requires_overlay, snapshot,
                             unionfs_mount)
from unionfs.core import whiteout as wo

pytestmark = [requires_fuse, requires_overlay]


def mv(src, dst):
    """mv(1): rename, or on EXDEV copy the tree (symlinks as links, modes, xattrs) and remove it."""
    try:
        os.rename(src, dst)
        return "ok"
    except OSError as e:
        if e.errno != errno.EXDEV:
            return errname(e)
    shutil.copytree(src, dst, symlinks=True)
    shutil.rmtree(src)
    return "copied"


BUILD = layers(
    {"d/a": File("A"), "d/sub/b": File("B"), "d/gone": File("G"), "e/old": File("O"),
     "f": File("F"), "m/x": File("X"), "keep/k": File("K")},
    {"d/c": File("C"), "d/sub/deep/z": File("Z")},
)


def scenario(mnt):
    out = [attempt(os.unlink, P(mnt, "f")),
           attempt(os.unlink, P(mnt, "d/gone")),
           attempt(os.unlink, P(mnt, "e/old")),
           attempt(os.rmdir, P(mnt, "e"))]
    r = mv(P(mnt, "d"), P(mnt, "e"))
    out.append("moved" if r in ("ok", "copied") else r)
    r = mv(P(mnt, "e/sub"), P(mnt, "s2"))           # now a pure upper directory: a plain rename
    out.append("moved" if r in ("ok", "copied") else r)
    r = mv(P(mnt, "keep"), P(mnt, "kept"))           # to a name no layer has: not opaque
    out.append("moved" if r in ("ok", "copied") else r)
    out += [attempt(os.unlink, P(mnt, "m/x")), attempt(os.rmdir, P(mnt, "m")),
            attempt(os.mkdir, P(mnt, "m")), attempt(write, P(mnt, "m/new"), b"N"),
            attempt(ls, P(mnt, "e")), attempt(ls, P(mnt, "s2")), attempt(read, P(mnt, "s2/deep/z")),
            attempt(ls, P(mnt, "m")), attempt(st, P(mnt, "d")), attempt(ls, P(mnt, "kept"))]
    return out


def test_redirect_dir_off_copies_trees_like_mv(tmp_path):
    res = run_differential(tmp_path, BUILD, scenario, kernel_options=("redirect_dir=off",),
                           unionfs_options=("redirect_dir=off",))
    assert not any("+redirect" in v for v in res.unionfs.layout.values())
    assert res.unionfs.layout["e"] == "dir+opaque"   # lowers have /e: must not merge
    assert res.unionfs.layout["kept"] == "dir"       # nothing below: nothing to hide
    assert res.unionfs.layout["d"] == "whiteout"


def test_userxattr_upper_reads_the_same_under_the_kernel(tmp_path):
    res = run_differential(tmp_path, BUILD, scenario, kernel_options=("userxattr",),
                           unionfs_options=("userxattr",))
    upper = res.unionfs.upper
    assert os.getxattr(upper + "/e", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(upper + "/e")
    with open(os.path.join(res.unionfs.work, wo.FORMAT_FILE)) as f:
        assert f.read().split() == ["xattr=user", "whiteout=chr"]


def test_format_is_recorded_and_kept_at_the_next_mount(tmp_path):
    """A first mount with userxattr records the format; a later mount without the option
    still writes user.overlay.* (mixing namespaces would hide markers from the kernel)."""
    lower, upper, work = (str(tmp_path / n) for n in ("lower", "upper", "work"))
    for d in (lower + "/m", upper, work):
        os.makedirs(d)
    open(lower + "/m/x", "w").close()
    mnt = str(tmp_path / "mnt")
    with unionfs_mount([lower], upper, work, mnt, options=["userxattr"]):
        pass
    with unionfs_mount([lower], upper, work, mnt):
        os.unlink(mnt + "/m/x")
        os.rmdir(mnt + "/m")
        os.mkdir(mnt + "/m")
    assert os.getxattr(upper + "/m", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(upper + "/m")


def test_oci_form_upper_behaves_like_the_kernel(tmp_path):
    """The '.wh.' fallback (an owner who may not mknod): same outcomes and merged tree as the
    kernel, the upper holds '.wh.' files and opaque markers only, and a remount reads it back."""
    lroot = str(tmp_path / "lowers")
    os.makedirs(lroot)
    lowers = BUILD(lroot)
    trees = {}
    outcomes = {}
    for name in ("kernel", "unionfs"):
        base = tmp_path / name
        upper, work, mnt = (str(base / n) for n in ("upper", "work", "mnt"))
        for d in (upper, work, mnt):
            os.makedirs(d)
        if name == "kernel":
            cm = kernel_overlay_mount(lowers, upper, work, mnt, extra_opts=("redirect_dir=off",))
        else:
            with open(os.path.join(work, wo.FORMAT_FILE), "w") as f:
                f.write("xattr=none whiteout=oci\n")
            cm = unionfs_mount(lowers, upper, work, mnt)
        with cm:
            outcomes[name] = scenario(mnt)
            trees[name] = snapshot(mnt)
    assert outcomes["unionfs"] == outcomes["kernel"]
    assert trees["unionfs"] == trees["kernel"]
    upper = str(tmp_path / "unionfs" / "upper")
    kinds = {}
    for dirpath, dirs, files in os.walk(upper):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            kinds[os.path.relpath(p, upper)] = stat.S_IFMT(os.lstat(p).st_mode)
    assert not any(k == stat.S_IFCHR for k in kinds.values())     # no device whiteouts
    assert kinds[".wh.d"] == kinds[".wh.f"] == stat.S_IFREG
    assert os.path.getsize(upper + "/.wh.f") == 0
    assert ".wh..wh..opq" in os.listdir(upper + "/m") and ".wh..wh..opq" in os.listdir(upper + "/e")
    assert not any(n.startswith(".wh.") for n in os.listdir(upper + "/kept"))
    os.makedirs(str(tmp_path / "w2"))   # a new work dir: the format is read from the upper
    with unionfs_mount(lowers, upper, str(tmp_path / "w2"), str(tmp_path / "m2")) as m2:
        assert snapshot(m2) == trees["kernel"]
        # the '.wh.' names stay invisible and cannot be made through the mount
        assert not any(n.startswith(".wh.") for n in os.listdir(m2))
        assert attempt(write, P(m2, ".wh.x"), b"") == "EINVAL"


@pytest.mark.parametrize("opts", [(), ("redirect_dir=off",)])
def test_helper_form_defaults_to_redirect_dir_off(tmp_path, opts):
    """The mount_program call (helper form) copies trees unless redirect_dir=on is given."""
    from tests.mountutil import run_unionfs, unmount
    lower, upper, work, mnt = (str(tmp_path / n) for n in ("lower", "upper", "work", "mnt"))
    for d in (lower + "/d", upper, work, mnt):
        os.makedirs(d)
    open(lower + "/d/a", "w").close()
    o = ",".join(("lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work) + opts)
    try:
        proc = run_unionfs("-o", o, mnt)
        assert proc.returncode == 0, proc.stderr
        os.rename(mnt + "/d", mnt + "/e")
        assert os.listdir(mnt + "/e") == ["a"]
    finally:
        unmount(mnt)
    assert os.listdir(upper + "/e") == ["a"]
    assert "trusted.overlay.redirect" not in os.listxattr(upper + "/e")
