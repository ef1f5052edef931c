"""Hostile and odd input: layers full of symlinks that point out of them, strange names, long
paths, large xattrs, names that look like whiteouts, and command-line mistakes.

The daemon must never read, write or list anything outside its layer directories. That is
checked on a *canary*: a small tmpfs mounted with ``strictatime`` (so any read or listing of it
moves an atime), holding files and directories under names the layers do not have. Symlinks in
the layers point at it (and at ``/``, ``..`` ...) in every position of a path; the test itself
never follows a symlink of the merged view, so the canary's state -- listing, data, xattrs,
atime, mtime and ctime of every entry -- must be exactly what it was, and no canary name may show
up in a listing of the mount. The same scenarios run on the kernel's overlayfs (the reference)
through the differential runner, outcome for outcome.
"""
import errno
import hashlib
import os
import stat
import subprocess

import pytest

from tests.differential._diff import (Dir, File, Symlink, attempt, build_layer, ls,
                                      rmtree_outcomes, run_differential, write as dwrite)
from tests.integration.conftest import Stack, requires_daemon
from tests.mountutil import (have_kernel_overlay, is_mounted, kernel_overlay_mount,
                             requires_fuse, requires_overlay, requires_root, run_unionfs,
                             unionfs_mount, unmount)

pytestmark = [requires_fuse, requires_root]

CANARY_NAMES = ("canary-secret", "canary-dir", "canary-deep", "canary-xattr")


# --------------------------------------------------------------------------- the canary

def _canary_state(root, paths):
    """(lstat facts incl. atime, of every path) -- taken WITHOUT reading anything."""
    out = {}
    for rel in paths:
        st = os.lstat(os.path.join(root, rel))
        out[rel] = (st.st_mode, st.st_uid, st.st_size, st.st_atime_ns, st.st_mtime_ns,
                    st.st_ctime_ns, st.st_nlink)
    return out


def _canary_content(root):
    """Listing, data and xattrs of the whole canary (this reads it: atimes move)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel] = ("dir", sorted(dirnames + filenames),
                    sorted(os.listxattr(dirpath, follow_symlinks=False)))
        for n in filenames:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                data = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = ("file", data, {
                k: os.getxattr(p, k) for k in os.listxattr(p)})
    return out


class Canary:
    def __init__(self, path):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700,strictatime",
                        "canary", self.path], check=True)
        p = self.path
        os.makedirs(os.path.join(p, "canary-dir", "canary-deep"))
        for rel, data in (("canary-secret", b"secret\n"), ("canary-dir/canary-file", b"f\n"),
                          ("canary-dir/canary-deep/canary-leaf", b"leaf\n"),
                          ("canary-xattr", b"x\n")):
            with open(os.path.join(p, rel), "wb") as f:
                f.write(data)
        os.setxattr(os.path.join(p, "canary-xattr"), "user.canary", b"v")
        os.chmod(os.path.join(p, "canary-dir"), 0o700)
        self.content = _canary_content(p)      # reads
        self.paths = sorted(self.content)
        self._age()

    def _age(self):
        """Move every atime into the past: any later read or listing sets it to now."""
        for rel in self.paths:
            p = os.path.join(self.path, rel)
            os.utime(p, ns=(10 ** 9, os.lstat(p).st_mtime_ns), follow_symlinks=False)
        self.before = _canary_state(self.path, self.paths)

    def check(self):
        now = _canary_state(self.path, self.paths)   # lstat only: moves nothing
        changed = {k: (self.before[k], now[k]) for k in self.paths if self.before[k] != now[k]}
        assert not changed, ("the canary outside the layers was accessed or changed "
                             "(mode, uid, size, atime, mtime, ctime, nlink): %r" % changed)
        assert _canary_content(self.path) == self.content, "the canary's content changed"
        self._age()

    def close(self):
        subprocess.run(["umount", self.path], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        if is_mounted(self.path):
            subprocess.run(["umount", "-l", self.path])


@pytest.fixture
def canary(tmp_path):
    c = Canary(tmp_path / "canary")
    try:
        yield c
    finally:
        c.close()


def test_canary_detects_a_read(canary):
    """The check itself: one read (or listing) of the canary is seen."""
    with open(os.path.join(canary.path, "canary-dir", "canary-file"), "rb") as f:
        f.read()
    with pytest.raises(AssertionError, match="accessed or changed"):
        canary.check()
    os.listdir(os.path.join(canary.path, "canary-dir", "canary-deep"))
    with pytest.raises(AssertionError, match="accessed or changed"):
        canary.check()


def _no_canary_names(mnt):
    seen = []
    for dirpath, dirnames, filenames in os.walk(mnt):     # never follows a symlink
        seen += [os.path.join(dirpath, n) for n in dirnames + filenames
                 if n.startswith("canary")]
    assert not seen, "canary names listed in the mount: %r" % seen


# --------------------------------------------------------------------------- symlinks out

def _targets(canary):
    rel = os.path.relpath(canary.path, "/")
    return {"root": "/", "dotdot": "..", "dotdot2": "../..", "dotdot4": "../../../..",
            "canary_abs": canary.path, "canary_rel": "../" * 30 + rel,
            "canary_sub": canary.path + "/canary-dir"}


def _symlink_layers(canary):
    """Three lowers. For every (position, target): a chain C/d1/d2/leaf whose component at
    `position` is a symlink pointing out, in the MIDDLE layer (top and bottom have real dirs:
    the symlink must stop the merge, never be entered), and a chain T... with the symlink in the
    TOP layer (the merged view shows it as a symlink)."""
    top, mid, bottom = {}, {}, {}
    comps = ["d1", "d2", "leaf"]
    for pos in range(4):
        for tname, target in _targets(canary).items():
            c = "m%d_%s" % (pos, tname)
            chain = [c] + comps
            # middle layer: real dirs above pos, the symlink at pos
            for i in range(pos):
                mid["/".join(chain[:i + 1])] = Dir()
            mid["/".join(chain[:pos + 1])] = Symlink(target)
            # top and bottom: real dirs, each with its own file at every level
            for i in range(3):
                d = "/".join(chain[:i + 1])
                top[d] = Dir()
                top[d + "/from_top"] = File(b"top " + d.encode())
                bottom[d] = Dir()
                bottom[d + "/from_bottom"] = File(b"bottom " + d.encode())
            bottom["/".join(chain)] = File(b"leaf in the bottom layer")
            # the symlink in the top layer, real dirs below it
            t = "t%d_%s" % (pos, tname)
            tchain = [t] + comps
            for i in range(pos):
                top["/".join(tchain[:i + 1])] = Dir()
            top["/".join(tchain[:pos + 1])] = Symlink(target)
            for i in range(3):
                d = "/".join(tchain[:i + 1])
                mid[d] = Dir()
                mid[d + "/from_mid"] = File(b"mid")
    # a merged directory that is a symlink out in EVERY lower but the top one
    for layer in (mid, bottom):
        layer["everywhere"] = Symlink(canary.path)
    top["everywhere"] = Dir()
    top["everywhere/only"] = File(b"top only")
    return top, mid, bottom


def _walk_outcomes(mnt):
    """Listings and lstat of everything (no symlink followed), as comparable outcomes."""
    out = []
    for dirpath, dirnames, filenames in os.walk(mnt):
        dirnames.sort()
        rel = os.path.relpath(dirpath, mnt)
        out.append((rel, sorted(dirnames + filenames)))
        for n in sorted(filenames):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out.append((os.path.join(rel, n), stat.S_IFMT(st.st_mode),
                        os.readlink(p) if stat.S_ISLNK(st.st_mode) else st.st_size))
    return out


@pytest.mark.timeout(120)
@requires_overlay
@pytest.mark.overlay
def test_symlinks_out_of_the_layers_in_every_position(tmp_path, canary):
    top, mid, bottom = _symlink_layers(canary)

    def build(root):
        return [build_layer(os.path.join(root, n), s)
                for n, s in (("top", top), ("mid", mid), ("bottom", bottom))]

    def scenario(mnt):
        out = [_walk_outcomes(mnt)]
        names = sorted(os.listdir(mnt))
        for c in names:
            if c.startswith("m"):
                # the chain is top's real dirs: changes inside copy them up
                out.append(attempt(dwrite, os.path.join(mnt, c, "d1", "d2", "new"), b"n"))
                out.append(attempt(os.mkdir, os.path.join(mnt, c, "d1", "newdir")))
                out.append(attempt(os.chmod, os.path.join(mnt, c, "d1"), 0o700))
                out.append(attempt(os.rename, os.path.join(mnt, c), os.path.join(mnt, c + "_r")))
                out.append(attempt(ls, os.path.join(mnt, c + "_r", "d1", "d2")))
                out.append(attempt(os.rmdir, os.path.join(mnt, c + "_r", "d1")))
            elif c.startswith("t"):
                # the merged view shows the symlink: act on it, never through it
                link = os.path.join(mnt, c)
                while not os.path.islink(link):
                    link = os.path.join(link, sorted(
                        n for n in os.listdir(link) if not n.startswith("from"))[0])
                out.append(attempt(os.lchown, link, 1234, 1234))
                out.append(attempt(os.setxattr, link, "trusted.t", b"v", follow_symlinks=False))
                out.append(attempt(os.rename, link, link + "_moved"))
                out.append(attempt(os.unlink, link + "_moved"))
        out.append(attempt(dwrite, os.path.join(mnt, "everywhere", "added"), b"a"))
        out.append(attempt(ls, os.path.join(mnt, "everywhere")))
        for c in names[::3]:
            out.append(rmtree_outcomes(os.path.join(mnt, c if not c.startswith("m") else c + "_r")))
        out.append(_walk_outcomes(mnt))
        _no_canary_names(mnt)
        canary.check()      # on each side, right after its scenario
        return out

    run_differential(tmp_path, build, scenario)
    canary.check()


# redirect values a tampered or hostile layer may carry, and where each may try to lead
HOSTILE_REDIRECTS = ["/", "..", "../..", "/..", "/../../../..", "/.", ".", "../canary",
                     "x/../../..", "/sym", "/sym/canary-dir", "/symdir/..", "//", "",
                     "/" + "a/" * 300]


@requires_daemon
def test_hostile_redirects_never_lead_out(tmp_path, canary):
    """trusted.overlay.redirect values pointing up, out, through symlinks: unionfs serves the
    directory without ever reading the canary, listing nothing of it, and stays up."""
    s = Stack(tmp_path, nlower=2)
    os.symlink(canary.path, s.lowers[1] / "sym")
    os.symlink("/", s.lowers[1] / "symdir")
    (s.lowers[1] / "lowdir").mkdir()
    (s.lowers[1] / "lowdir" / "low_file").write_bytes(b"l")
    for i, r in enumerate(HOSTILE_REDIRECTS):
        d = s.lowers[0] / ("r%d" % i)
        d.mkdir()
        (d / "own").write_bytes(b"own")
        os.setxattr(d, "trusted.overlay.redirect", r.encode())
        u = s.upper / ("u%d" % i)       # the same in a (tampered) upper
        u.mkdir()
        os.setxattr(u, "trusted.overlay.redirect", r.encode())
    with s.mount():
        m = s.mnt
        for i in range(len(HOSTILE_REDIRECTS)):
            for name in ("r%d" % i, "u%d" % i):
                d = os.path.join(m, name)
                for fn in (ls, os.lstat):
                    attempt(fn, d)
                for sub in ("x", "canary-dir", "canary-secret", "..", "low_file"):
                    attempt(os.lstat, os.path.join(d, sub))
                attempt(dwrite, os.path.join(d, "new"), b"n")
                attempt(os.rename, d, d + "_moved")
        _no_canary_names(m)
        assert "lowdir" in os.listdir(m), "the mount stopped answering"
        canary.check()
    canary.check()


SWAP_OPS = r'''
import errno, json, os, sys
d = os.path.join(sys.argv[1], "d", "sub")
out = []
def attempt(fn, *a):
    try:
        r = fn(*a)
        out.append(r if isinstance(r, (list, int, type(None))) else repr(r))
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
def wr(p):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o666)
    os.write(fd, b"planted")
    os.close(fd)
attempt(os.listdir, d)
attempt(lambda p: os.lstat(p).st_size, os.path.join(d, "canary-secret"))
attempt(lambda p: open(p, "rb").read(), os.path.join(d, "canary-secret"))
attempt(wr, os.path.join(d, "planted"))
attempt(os.mkdir, os.path.join(d, "planted-dir"))
attempt(os.symlink, "t", os.path.join(d, "planted-link"))
attempt(os.chmod, os.path.join(d, "canary-secret"), 0o777)
attempt(os.unlink, os.path.join(d, "canary-secret"))
attempt(os.rename, os.path.join(d, "canary-xattr"), os.path.join(d, "stolen"))
attempt(os.setxattr, os.path.join(d, "canary-secret"), "user.x", b"1")
print(json.dumps(out))
'''


@requires_daemon
def test_upper_dir_swapped_for_a_symlink_behind_the_mount():
    """An upper directory replaced on disk by a symlink out while the mount runs (unsupported,
    but it must not become a way out). The operations below it run as uid 65534 through an
    allow_other mount and the canary is root's 0700: whatever reaches the canary can only have
    been done by the daemon (the kernel, following a symlink it sees in the merged view, does
    it with the caller's credentials, and is refused)."""
    from tests.integration.test_permissions import NOBODY, SETPRIV, public_tmp, run_as
    if SETPRIV is None:
        pytest.skip("needs setpriv (util-linux)")
    with public_tmp("unionfs-hostile-") as base:
        c = Canary(os.path.join(base, "canary"))
        try:
            low, up, wk, m = (os.path.join(base, n) for n in ("lower", "upper", "work", "mnt"))
            os.makedirs(os.path.join(low, "d", "sub"))
            for p in (up, wk, m):
                os.makedirs(p)
            for p in (low, os.path.join(low, "d"), up, wk, m):
                os.chmod(p, 0o755)
            os.chmod(os.path.join(low, "d", "sub"), 0o777)
            with open(os.path.join(low, "d", "sub", "f"), "wb") as f:
                f.write(b"lower")
            with unionfs_mount([low], up, wk, m, options=("allow_other",)):
                os.chmod(os.path.join(m, "d", "sub"), 0o777)    # d and d/sub copied up
                os.listdir(os.path.join(m, "d", "sub"))          # resolved and cached
                real = os.path.join(up, "d", "sub")
                os.rename(real, os.path.join(up, "d", "moved-away"))
                os.symlink(c.path, real)
                outcomes = run_as(NOBODY, SWAP_OPS, m)
            c.check()
            print("outcomes as uid %d below the swapped dir: %r" % (NOBODY, outcomes))
        finally:
            c.close()


# --------------------------------------------------------------------------- odd names

ODD_NAMES = [b"new\nline", b"tab\there", b"ctl-\x01\x02\x1b[31m\x7f", b"\x1f", b" ", b"-",
             b"...", b"\\", b"a\\nb", b"bad-utf8-\xff\xfe", b"overlong-\xc0\xaf",
             b"half-\xe2\x82", b"x" * 255, "é".encode() * 127 + b"x", b".wh", b"wh.x",
             b"#unionfs.1.2", b".fuse_hidden0000000000000001"]


@pytest.mark.timeout(120)
@requires_overlay
@pytest.mark.overlay
def test_odd_names_match_the_kernel(tmp_path):
    lower = {}
    for i, n in enumerate(ODD_NAMES):
        lower[n] = File(b"lower %d" % i)
        lower[b"dir-" + n[:200] + b"/" + n] = File(b"in dir %d" % i)
    nl = {b"new\nline/" + b"in\nside": File(b"nl")}
    lower_l = {os.fsdecode(k): v for k, v in lower.items()}

    def build(root):
        return [build_layer(os.path.join(root, "top"), {os.fsdecode(k): v
                                                       for k, v in nl.items()}),
                build_layer(os.path.join(root, "bottom"), lower_l)]

    def scenario(mnt):
        m = os.fsencode(mnt)
        out = [sorted(os.listdir(m))]
        for i, n in enumerate(ODD_NAMES):
            p = os.path.join(m, n)
            d = os.path.join(m, b"dir-" + n[:200])
            out.append(attempt(lambda q: open(q, "rb").read(), p))
            out.append(attempt(ls, d))
            out.append(attempt(os.chmod, p, 0o600))                          # copy-up
            out.append(attempt(os.rename, os.path.join(d, n), os.path.join(d, n[:-1] + b"R")))
            out.append(attempt(dwrite, os.path.join(m, b"c-" + n[:250]), b"created"))
            out.append(attempt(os.mkdir, os.path.join(m, b"md-" + n[:250])))
            out.append(attempt(os.symlink, n, os.path.join(m, b"s-" + n[:250])))
            out.append(attempt(os.unlink, p) if i % 2 else attempt(os.rename, p, p[:-1] + b"Z"))
        out.append(attempt(dwrite, os.path.join(m, b"y" * 256), b"too long"))
        out.append(attempt(os.mkdir, os.path.join(m, b"y" * 256)))
        out.append(attempt(os.rename, os.path.join(m, b"-"), os.path.join(m, b"z" * 256)))
        out.append(attempt(os.lstat, os.path.join(m, "é".encode() * 128)))
        out.append(sorted(os.listdir(m)))
        out.append(attempt(ls, os.path.join(m, b"new\nline")))
        out.append(attempt(ls, os.path.join(m, b"new\nlinZ")))
        return out

    run_differential(tmp_path, build, scenario)


def _mounts_on(path):
    from unionfs.mounts import mount_table
    return [(m.mountpoint, m.fstype, m.source) for m in mount_table()
            if m.mountpoint == os.path.realpath(path)]


@requires_daemon
def test_non_ascii_mountpoint_is_known_mounted(tmp_path):
    """A mountpoint whose name is not ASCII and has a tab: /proc/self/mountinfo escapes it
    (octal) and keeps the UTF-8 bytes; a second mount is refused and umount finds it. (The
    test helpers' is_mounted() misreads such names, so this test checks mountinfo itself.)"""
    s = Stack(tmp_path)
    mnt = tmp_path / "mnt \u00e9\tx"
    mnt.mkdir()
    try:
        args = ["--lower", s.lower, "--upper", s.upper, "--work", s.work, mnt]
        proc = run_unionfs("mount", *args)
        assert proc.returncode == 0, proc.stderr
        assert len(_mounts_on(mnt)) == 1
        proc = run_unionfs("mount", *args)
        assert proc.returncode == 1 and "already mounted" in proc.stderr, proc.stderr
        assert len(_mounts_on(mnt)) == 1
        proc = run_unionfs("umount", mnt)
        assert proc.returncode == 0, proc.stderr
        assert _mounts_on(mnt) == []
    finally:
        for _ in range(3):
            if _mounts_on(mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)])


# --------------------------------------------------------------------------- long paths

def _chain(n, width=200):
    return [("p%03d" % i + "q" * width)[:width] for i in range(n)]


def _deep_ops(mnt, names):
    """Create the chain through directory descriptors (no long path is ever passed), then
    create, read, rename, list and remove at the bottom; returns outcomes."""
    out = []
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n in names:
            out.append(attempt(os.mkdir, n, 0o755, dir_fd=fd))
            nfd = attempt(os.open, n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            if isinstance(nfd, str):
                out.append(nfd)
                return out
            os.close(fd)
            fd = nfd
        f = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(f, b"deep")
        os.close(f)
        out.append(attempt(os.rename, "leaf", "leaf2", src_dir_fd=fd, dst_dir_fd=fd))
        out.append(sorted(os.listdir(fd)))
        out.append(attempt(os.unlink, "leaf2", dir_fd=fd))
    finally:
        os.close(fd)
    return out


@requires_overlay
@pytest.mark.overlay
def test_long_paths_near_path_max(tmp_path):
    """Merged paths of up to ~3,900 bytes (names of 255 bytes), created and used by absolute
    paths and through directory descriptors: as on the kernel."""
    names = _chain(15, 255)[:15]      # 15 * 256 = 3840 bytes below the mount

    def build(root):
        return [build_layer(os.path.join(root, "L"), {
            "/".join(names[:8]) + "/lowerfile": File(b"deep lower")})]

    def scenario(mnt):
        deep = os.path.join(mnt, *names[:8])
        out = [attempt(lambda p: open(p, "rb").read(), os.path.join(deep, "lowerfile")),
               attempt(os.chmod, os.path.join(deep, "lowerfile"), 0o600)]
        out += _deep_ops(mnt, names)
        p = os.path.join(mnt, *names[:14])
        out.append(attempt(dwrite, os.path.join(p, "abs"), b"a"))
        out.append(attempt(os.rename, os.path.join(mnt, names[0]), os.path.join(mnt, "top")))
        return out

    run_differential(tmp_path, build, scenario)


@requires_daemon
@pytest.mark.skipif(not have_kernel_overlay(), reason="needs the kernel's overlayfs")
def test_paths_beyond_path_max_through_directory_descriptors(tmp_path):
    names = _chain(30)      # 30 * 201 = 6030 bytes below the mount
    results = {}
    for side in ("kernel", "unionfs"):
        s = Stack(tmp_path / side)
        mount = (kernel_overlay_mount([str(s.lower)], str(s.upper), str(s.work), str(s.mnt))
                 if side == "kernel" else s.mount())
        with mount:
            results[side] = _deep_ops(str(s.mnt), names)
    assert results["kernel"][-3:] == [None, ["leaf2"], None], results["kernel"]
    assert results["unionfs"] == results["kernel"]


@requires_daemon
def test_absolute_path_of_path_max_with_a_long_upper_path(tmp_path):
    s = Stack(tmp_path)
    upper = tmp_path / ("upper-with-a-much-longer-path-than-the-mountpoint" * 2)
    upper.mkdir()
    with unionfs_mount([s.lower], upper, s.work, s.mnt):
        m = os.fsencode(str(s.mnt))
        left = 4095 - len(m) - 1
        names = []
        while left > 0:
            n = min(255, left - 1) if left > 1 else 0
            if n <= 0:
                break
            names.append(b"n" * n)
            left -= n + 1
        p = m
        for n in names[:-1]:
            p = os.path.join(p, n)
            os.mkdir(p)
        p = os.path.join(p, names[-1])
        assert len(p) <= 4095
        dwrite(p, b"at PATH_MAX")
        with open(p, "rb") as f:
            assert f.read() == b"at PATH_MAX"


# --------------------------------------------------------------------------- large xattrs

@requires_overlay
@pytest.mark.overlay
def test_xattr_values_of_64k(tmp_path):
    """On a tmpfs (ext4 without ea_inode stops at one block): the largest value the kernel
    allows (XATTR_SIZE_MAX = 64 KiB), set on an upper file and on a lower one (copy-up), read
    back, and carried by the copy-up of a lower file that has one; 64 KiB + 1 is E2BIG."""
    base = tmp_path / "tmpfs"
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(base)], check=True)
    try:
        big = bytes(range(256)) * 256
        build = lambda root: [build_layer(os.path.join(root, "L"), {  # noqa: E731
            "lower_with": File(b"l", xattrs={"user.big": big, "trusted.big": big[::-1]}),
            "lower_plain": File(b"p")})]

        def scenario(mnt):
            out = []
            dwrite(os.path.join(mnt, "upper_file"), b"u")
            for name in ("upper_file", "lower_plain", "lower_with"):
                p = os.path.join(mnt, name)
                out.append(attempt(os.setxattr, p, "user.new", big))
                out.append(attempt(os.setxattr, p, "user.over", big + b"!"))
                out.append(attempt(lambda q: len(os.getxattr(q, "user.new")), p))
                out.append(attempt(lambda q: os.getxattr(q, "user.new") == big, p))
                out.append(sorted(os.listxattr(p)))
            p = os.path.join(mnt, "lower_with")
            out.append(attempt(lambda q: os.getxattr(q, "user.big") == big, p))
            out.append(attempt(lambda q: os.getxattr(q, "trusted.big") == big[::-1], p))
            return out

        res = run_differential(base, build, scenario)
        assert res.unionfs.outcomes[0] is None and res.unionfs.outcomes[1] == "E2BIG"
    finally:
        unmount(str(base), fuse=False)


# --------------------------------------------------------------------------- whiteout-like names

WH_NAMES = [".wh.x", ".wh..wh..opq", ".wh.", ".wh..wh.x", ".wh.dir"]


@requires_daemon
def test_names_that_look_like_whiteouts_are_refused(tmp_path):
    s = Stack(tmp_path)
    (s.lower / "lf").write_bytes(b"lower")
    (s.lower / "ld").mkdir()
    with s.mount():
        m = s.mnt
        (m / "uf").write_bytes(b"upper")
        (m / "ud").mkdir()
        for parent in ("", "ld", "ud"):
            for n in WH_NAMES:
                p = m / parent / n
                cases = {
                    "create": lambda: dwrite(p, b"x"),
                    "create_excl": lambda: os.close(os.open(p, os.O_CREAT | os.O_EXCL |
                                                            os.O_WRONLY, 0o644)),
                    "mkdir": lambda: os.mkdir(p),
                    "symlink": lambda: os.symlink("target", p),
                    "mkfifo": lambda: os.mkfifo(p),
                    "link_upper": lambda: os.link(m / "uf", p),
                    "link_lower": lambda: os.link(m / "lf", p),
                    "rename_upper_file": lambda: os.rename(m / "uf", p),
                    "rename_lower_file": lambda: os.rename(m / "lf", p),
                    "rename_dir": lambda: os.rename(m / "ud", p),
                }
                for what, fn in cases.items():
                    with pytest.raises(OSError) as ei:
                        fn()
                    assert ei.value.errno == errno.EINVAL, (parent, n, what, ei.value)
        for name in ("uf", "lf", "ud", "ld"):
            assert os.path.lexists(m / name)
        assert not [n for d, ds, fs in os.walk(m) for n in ds + fs if n.startswith(".wh.")]
        # overlay-private xattrs stay unsettable (the kernel >= 6.7 would store them escaped)
        with pytest.raises(OSError) as ei:
            os.setxattr(m / "ud", "trusted.overlay.opaque", b"y")
        assert ei.value.errno == errno.EOPNOTSUPP
    assert not [n for d, ds, fs in os.walk(s.upper) for n in ds + fs if n.startswith(".wh.")]


# --------------------------------------------------------------------------- CLI errors

def _cli_cases(tmp_path):
    d = {n: tmp_path / n for n in ("l", "u", "w", "m")}
    for p in d.values():
        p.mkdir(exist_ok=True)
    f = tmp_path / "afile"
    f.write_bytes(b"x")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("lower = [\n")
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text('lower = ["l"]\nbogus = 1\n')
    L, U, W, M = (str(d[k]) for k in "luwm")
    return {
        "unknown_option": ["mount", "--lower", L, "-o", "bogus", M],
        "option_needs_value": ["mount", "--lower", L, "-o", "max_read", M],
        "bad_redirect_dir": ["mount", "--lower", L, "-o", "redirect_dir=maybe", M],
        "empty_lowerdir": ["mount", "--lower", L, "-o", "lowerdir=", M],
        "lowerdir_empty_layer": ["-o", "lowerdir=%s::%s" % (L, L), M],
        "no_lower": ["-o", "upperdir=%s,workdir=%s" % (U, W), M],
        "missing_spec": ["mount", "--spec", str(tmp_path / "nope.toml"), M],
        "spec_is_dir": ["mount", "--spec", L, M],
        "spec_bad_toml": ["mount", "--spec", str(bad_toml), M],
        "spec_unknown_key": ["mount", "--spec", str(unknown_key), M],
        "spec_not_a_spec": ["mount", "--spec", str(f), M],
        "mountpoint_is_file": ["mount", "--lower", L, str(f)],
        "mountpoint_missing": ["mount", "--lower", L, str(tmp_path / "nope" / "m")],
        "lower_is_file": ["mount", "--lower", "%s:%s" % (L, f), M],
        "lower_name_too_long": ["mount", "--lower", str(tmp_path / ("a" * 300)), M],
        "lower_path_too_long": ["mount", "--lower", "/" + "a/" * 2100, M],
        "lower_not_utf8": ["mount", "--lower", os.fsdecode(os.fsencode(L) + b"\xff"), M],
        "work_without_upper": ["mount", "--lower", L, "--work", W, M],
        "umount_not_mounted": ["umount", M],
        "umount_missing": ["umount", str(tmp_path / "nope")],
        "mountpoint_is_lower": ["mount", "--lower", L, L],
        "unknown_command": ["frobnicate"],      # read as the helper form's mountpoint
    }


CLI_CASES = sorted([
    "unknown_option", "option_needs_value", "bad_redirect_dir", "empty_lowerdir",
    "lowerdir_empty_layer", "no_lower", "missing_spec", "spec_is_dir", "spec_bad_toml",
    "spec_unknown_key", "spec_not_a_spec", "mountpoint_is_file", "mountpoint_missing",
    "lower_is_file", "lower_name_too_long", "lower_path_too_long", "lower_not_utf8",
    "work_without_upper", "umount_not_mounted", "umount_missing", "mountpoint_is_lower",
    "unknown_command"])


def _one_line_error(proc, case):
    assert proc.returncode == 1, (case, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("unionfs: "), (case, proc.stderr)
    assert proc.stdout == ""
    return lines[0]


@requires_daemon
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_errors_are_one_line(tmp_path, case):
    argv = _cli_cases(tmp_path)[case]
    proc = run_unionfs(*argv, timeout=30)
    try:
        _one_line_error(proc, case)
    finally:
        unmount(str(tmp_path / "m"))
        unmount(str(tmp_path / "l"))
    assert not is_mounted(tmp_path / "m")


@requires_daemon
@pytest.mark.parametrize("opt", ["max_read=abc", "entry_timeout=x", "max_idle_threads=zz",
                                 "max_read=-5"])
def test_cli_bad_option_value_names_the_option(tmp_path, opt):
    d = _cli_cases(tmp_path)
    proc = run_unionfs("mount", "--lower", tmp_path / "l", "-o", opt, tmp_path / "m", timeout=30)
    try:
        line = _one_line_error(proc, opt)
    finally:
        unmount(str(tmp_path / "m"))
    assert opt.split("=")[0] in line, line
    assert d


@requires_daemon
def test_cli_error_for_a_path_with_a_newline_is_one_line(tmp_path):
    """Control characters in a path are shown escaped (unionfs/messages.py)."""
    proc = run_unionfs("mount", "--lower", str(tmp_path / "no\nsuch"), tmp_path, timeout=30)
    _one_line_error(proc, "newline")
    assert "no\\nsuch" in proc.stderr


@requires_daemon
@pytest.mark.parametrize("argv", [["mount", "--lower", "/"], ["-o", "lowerdir=/"],
                                  ["mount", "--bogus", "x", "y"]],
                         ids=["mount_no_mountpoint", "helper_no_mountpoint", "unknown_flag"])
def test_cli_usage_errors_have_no_traceback(argv):
    """argparse's usage errors: exit 2, a usage line and one error line, no traceback."""
    proc = run_unionfs(*argv, timeout=30)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr.strip().splitlines()[-1], proc.stderr
