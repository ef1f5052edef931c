"""Differential runner: the same scenario on the kernel's overlayfs (the reference) and on unionfs.

For one scenario:

1. the lower layers are built once (``build_lowers(root) -> [top, ..., bottom]``) and shared,
   read-only, by every mount below (and checked to be unchanged at the end);
2. the scenario (``scenario(mnt) -> list of outcomes``) runs on a kernel overlay mount with its own
   upper/work and on a unionfs mount with its own upper/work; outcomes are return values or
   ``"E<NAME>"`` errno names (compare errnos, never messages: see :func:`attempt`);
3. the outcomes and the merged trees (:func:`tests.mountutil.snapshot`) must be equal, and so must
   the on-disk layout of the two uppers (:func:`upper_layout`: entries and their kind, whiteouts,
   opaque and redirected dirs);
4. cross-check of the on-disk format: the kernel's upper is mounted by unionfs and unionfs's upper
   by the kernel (same lowers, fresh work dirs); both merged views must equal the reference.

Every difference found is collected, and the test fails once with all of them listed.

Set ``UNIONFS_DIFF_SELF_CHECK=1`` to run the kernel in place of unionfs (checks the scenarios and
this runner on a machine where unionfs does not work yet).
"""
import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import os
import pprint
import stat
from typing import Any

from tests.mountutil import kernel_overlay_mount, snapshot, unionfs_mount

SELF_CHECK = os.environ.get("UNIONFS_DIFF_SELF_CHECK") == "1"

OVL_OPAQUE = "trusted.overlay.opaque"
OVL_REDIRECT = "trusted.overlay.redirect"
# the same markers in the kernel's userxattr mode
USER_OPAQUE = "user.overlay.opaque"
USER_REDIRECT = "user.overlay.redirect"


# --------------------------------------------------------------------------- building layers

class Dir:
    """A directory with a mode, owner and xattrs (parents are created as plain 0755 dirs)."""

    def __init__(self, mode=0o755, uid=0, gid=0, xattrs=None, opaque=False):
        self.mode, self.uid, self.gid = mode, uid, gid
        self.xattrs = dict(xattrs or {})
        if opaque:
            self.xattrs[OVL_OPAQUE] = b"y"


class File:
    def __init__(self, data=b"", mode=0o644, uid=0, gid=0, xattrs=None, sparse_at=None):
        self.data = data.encode() if isinstance(data, str) else data
        self.mode, self.uid, self.gid = mode, uid, gid
        self.xattrs = dict(xattrs or {})
        self.sparse_at = sparse_at      # write data at this offset, leaving a hole before it


class Symlink:
    def __init__(self, target, uid=0, gid=0):
        self.target, self.uid, self.gid = target, uid, gid


class Fifo:
    def __init__(self, mode=0o644):
        self.mode = mode


class Dev:
    def __init__(self, major, minor, mode=0o666, kind=stat.S_IFCHR):
        self.major, self.minor, self.mode, self.kind = major, minor, mode, kind


class Whiteout:
    """The kernel's whiteout: a char device 0/0."""


class Socket:
    """A unix socket file (bound, then closed: the file stays)."""


class HardLink:
    def __init__(self, to):
        self.to = to    # path relative to the same layer


def _apply_xattrs(p, xattrs):
    for k, v in xattrs.items():
        os.setxattr(p, k, v, follow_symlinks=False)


def build_layer(root, spec):
    """Create ``root`` and, in order, every ``relpath: node`` of ``spec``.

    A node is bytes/str (a 0644 file), or one of Dir/File/Symlink/Fifo/Dev/Whiteout/HardLink.
    Paths may be str or bytes (for names that are not UTF-8).
    """
    root = os.fsencode(root)
    os.makedirs(root, exist_ok=True)
    for rel, node in spec.items():
        p = os.path.join(root, os.fsencode(rel))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if isinstance(node, (bytes, str)):
            node = File(node)
        if isinstance(node, Dir):
            os.makedirs(p, exist_ok=True)
            os.chown(p, node.uid, node.gid)
            os.chmod(p, node.mode)
            _apply_xattrs(p, node.xattrs)
        elif isinstance(node, File):
            with open(p, "wb") as f:
                if node.sparse_at is not None:
                    f.seek(node.sparse_at)
                f.write(node.data)
            os.chown(p, node.uid, node.gid)
            os.chmod(p, node.mode)
            _apply_xattrs(p, node.xattrs)
        elif isinstance(node, Symlink):
            os.symlink(os.fsencode(node.target), p)
            os.chown(p, node.uid, node.gid, follow_symlinks=False)
        elif isinstance(node, Fifo):
            os.mkfifo(p, node.mode)
            os.chmod(p, node.mode)
        elif isinstance(node, Dev):
            os.mknod(p, node.kind | node.mode, os.makedev(node.major, node.minor))
            os.chmod(p, node.mode)
        elif isinstance(node, Socket):
            import socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                with chdir(os.path.dirname(p)):      # sun_path is only 108 bytes
                    s.bind(os.path.basename(p))
            finally:
                s.close()
        elif isinstance(node, Whiteout):
            os.mknod(p, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        elif isinstance(node, HardLink):
            os.link(os.path.join(root, os.fsencode(node.to)), p)
        else:
            raise TypeError("unknown node %r for %r" % (node, rel))
    return os.fsdecode(root)


def layers(*specs):
    """A ``build_lowers`` callable for lowers given top first, each a spec for build_layer."""
    def build(root):
        return [build_layer(os.path.join(root, "L%d" % i), spec) for i, spec in enumerate(specs)]
    return build


# --------------------------------------------------------------------------- scenario helpers

def errname(e):
    return "E?" if e.errno is None else errno.errorcode.get(e.errno, "E%d" % e.errno)


def attempt(fn, *args, **kwargs):
    """fn(*args) → its result, or the errno name ("ENOENT") of the OSError it raised."""
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        return errname(e)


def rmtree_outcomes(p):
    """Remove a tree bottom-up through the mount; return what happened to each entry."""
    out = []
    for dirpath, dirnames, filenames in os.walk(p, topdown=False):
        for n in sorted(filenames):
            out.append(attempt(os.unlink, os.path.join(dirpath, n)))
        for n in sorted(dirnames):
            q = os.path.join(dirpath, n)
            out.append(attempt(os.unlink if os.path.islink(q) else os.rmdir, q))
    out.append(attempt(os.rmdir, p))
    return out


def P(mnt, *parts):
    """A path under the mount; bytes if any part is bytes."""
    if any(isinstance(x, bytes) for x in parts):
        return os.path.join(os.fsencode(mnt), *[os.fsencode(x) for x in parts])
    return os.path.join(mnt, *parts)


def read(p):
    with open(p, "rb") as f:
        return f.read()


def write(p, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=0o644):
    fd = os.open(p, flags, mode)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def ls(p):
    """Sorted listing (each name as the kernel returned it)."""
    return sorted(os.listdir(p))


def kind(mode):
    fmt = stat.S_IFMT(mode)
    return {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
            stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chr",
            stat.S_IFBLK: "blk"}.get(fmt, "?%o" % fmt)


def st(p, nlink=False, follow=False):
    """A comparable summary of (l)stat: kind, mode, owner, size for files, rdev for devices."""
    s = os.stat(p) if follow else os.lstat(p)
    out = {"kind": kind(s.st_mode), "mode": oct(stat.S_IMODE(s.st_mode)),
           "uid": s.st_uid, "gid": s.st_gid}
    if stat.S_ISREG(s.st_mode) or stat.S_ISLNK(s.st_mode):
        out["size"] = s.st_size
    if stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode):
        out["rdev"] = (os.major(s.st_rdev), os.minor(s.st_rdev))
    if nlink:
        out["nlink"] = s.st_nlink
    return out


def xattrs(p):
    return {k: os.getxattr(p, k, follow_symlinks=False)
            for k in sorted(os.listxattr(p, follow_symlinks=False))}


# libc directory stream, for telldir/seekdir
class _Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir64.restype = ctypes.POINTER(_Dirent)
_libc.readdir64.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.seekdir.restype = None
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.rewinddir.restype = None
_libc.rewinddir.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]


class DirStream:
    """opendir/readdir/telldir/seekdir/rewinddir through libc."""

    def __init__(self, path):
        self.d = _libc.opendir(os.fsencode(path))
        if not self.d:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)

    def _next(self):
        """The next struct dirent, or None at the end of the stream."""
        ctypes.set_errno(0)
        ent = _libc.readdir64(self.d)
        if not ent:
            e = ctypes.get_errno()
            if e:
                raise OSError(e, os.strerror(e))
            return None
        return ent.contents

    def read(self):
        ent = self._next()
        return None if ent is None else ent.d_name

    def entries(self):
        """Every (name, d_type) from here to the end of the stream."""
        out = []
        while (ent := self._next()) is not None:
            out.append((ent.d_name, ent.d_type))
        return out

    def tell(self):
        return _libc.telldir(self.d)

    def seek(self, pos):
        _libc.seekdir(self.d, pos)

    def rewind(self):
        _libc.rewinddir(self.d)

    def close(self):
        if self.d:
            _libc.closedir(self.d)
            self.d = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- on-disk layout

def upper_layout(upper):
    """{relpath: kind} for every entry of an upper dir, where kind is one of file/dir/symlink/...,
    "whiteout" for a char 0/0, and a dir is tagged "+opaque" / "+redirect" when it carries
    overlay.opaque=y / overlay.redirect, trusted. or user. (the redirect's value is not compared:
    the merged views of the cross mounts check what it means)."""
    out = {}

    def tag(p, mode):
        k = kind(mode)
        if k == "chr" and os.lstat(p).st_rdev == os.makedev(0, 0):
            return "whiteout"
        if k == "dir":
            names = os.listxattr(p, follow_symlinks=False)
            if any(n in names and os.getxattr(p, n) == b"y" for n in (OVL_OPAQUE, USER_OPAQUE)):
                k += "+opaque"
            if OVL_REDIRECT in names or USER_REDIRECT in names:
                k += "+redirect"
        return k

    out["."] = tag(upper, os.lstat(upper).st_mode)
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, upper)] = tag(p, os.lstat(p).st_mode)
    return out


def whiteouts(upper):
    return sorted(k for k, v in upper_layout(upper).items() if v == "whiteout")


def opaque_dirs(upper):
    return sorted(k for k, v in upper_layout(upper).items() if "+opaque" in v)


# --------------------------------------------------------------------------- the runner

def _mount_unionfs(lowers, upper, work, mnt, options=()):
    if SELF_CHECK:
        return kernel_overlay_mount(lowers, upper, work, mnt,
                                    extra_opts=("redirect_dir=on",) + tuple(
                                        "nodev" if o == "default-nodev" else o
                                        for o in options if o != "dev"))
    return unionfs_mount(lowers, upper, work, mnt, options=options)


def _raw_snapshot(root):
    """Snapshot of a plain directory (a lower), including trusted.overlay.* and mtimes."""
    return snapshot(root, with_times=True)


def dict_diff(a, b, a_name="kernel", b_name="unionfs"):
    """Human-readable differences between two {path: value} dicts."""
    lines = []
    for k in sorted(set(a) | set(b), key=repr):
        if k not in b:
            lines.append("  %r: only on %s: %r" % (k, a_name, a[k]))
        elif k not in a:
            lines.append("  %r: only on %s: %r" % (k, b_name, b[k]))
        elif a[k] != b[k]:
            lines.append("  %r:\n      %s: %r\n      %s: %r" % (k, a_name, a[k], b_name, b[k]))
    return "\n".join(lines)


def list_diff(a, b, a_name="kernel", b_name="unionfs"):
    lines = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else "<missing>"
        y = b[i] if i < len(b) else "<missing>"
        if x != y:
            lines.append("  outcome #%d:\n      %s: %r\n      %s: %r" % (i, a_name, x, b_name, y))
    return "\n".join(lines)


@dataclasses.dataclass
class Side:
    name: str
    upper: str
    work: str
    mnt: str
    outcomes: Any = None
    snap: dict = None
    layout: dict = None


@dataclasses.dataclass
class DiffResult:
    lowers: list
    kernel: Side
    unionfs: Side
    problems: list


def _side(tmp_path, name):
    base = os.path.join(str(tmp_path), name)
    s = Side(name, os.path.join(base, "upper"), os.path.join(base, "work"),
             os.path.join(base, "mnt"))
    for d in (s.upper, s.work, s.mnt):
        os.makedirs(d)
        os.chmod(d, 0o755)
    return s


def _run_on(mount_cm, side, scenario, with_times):
    with mount_cm:
        side.outcomes = scenario(side.mnt)
        side.snap = snapshot(side.mnt, with_times=with_times)
    side.layout = upper_layout(side.upper)


def run_differential(tmp_path, build_lowers, scenario, *, compare_outcomes=True,
                     compare_layout=True, cross=True, with_times=False, unionfs_options=(),
                     kernel_options=(), check=True):
    """Run ``scenario`` on the kernel overlay and on unionfs over the same lowers and compare.

    Returns a DiffResult; with check=True (default) fails the test listing every difference.
    ``with_times`` adds file/dir mtimes to the snapshots (only for scenarios that set them all).
    ``unionfs_options`` / ``kernel_options`` are extra mount options for each system's mounts,
    the cross mounts included (e.g. "dev" for unionfs, whose default is nodev, where the
    kernel's default is dev; "userxattr" for both).
    """
    old_umask = os.umask(0o022)
    try:
        lroot = os.path.join(str(tmp_path), "lowers")
        os.makedirs(lroot)
        lowers = build_lowers(lroot)
        lowers_before = [_raw_snapshot(l) for l in lowers]
        k = _side(tmp_path, "kernel")
        u = _side(tmp_path, "unionfs")
        problems = []

        kopts = tuple(kernel_options) if "userxattr" in kernel_options else (
            ("redirect_dir=on",) + tuple(kernel_options))  # userxattr conflicts with it
        _run_on(kernel_overlay_mount(lowers, k.upper, k.work, k.mnt, extra_opts=kopts),
                k, scenario, with_times)
        _run_on(_mount_unionfs(lowers, u.upper, u.work, u.mnt, unionfs_options), u, scenario,
                with_times)

        if compare_outcomes and k.outcomes != u.outcomes:
            problems.append("operation outcomes differ:\n" + list_diff(k.outcomes, u.outcomes))
        if k.snap != u.snap:
            problems.append("merged trees differ after the scenario:\n" + dict_diff(k.snap, u.snap))
        if compare_layout and k.layout != u.layout:
            problems.append("upper on-disk layouts differ (kind, whiteouts, opaque/redirect "
                            "dirs):\n" + dict_diff(k.layout, u.layout))

        if cross:
            # The kernel's upper through unionfs.
            x = os.path.join(str(tmp_path), "x_unionfs_on_kernel_upper")
            xw, xm = os.path.join(x, "work"), os.path.join(x, "mnt")
            os.makedirs(xw)
            try:
                with _mount_unionfs(lowers, k.upper, xw, xm, unionfs_options):
                    snap = snapshot(xm, with_times=with_times)
                if snap != k.snap:
                    problems.append("unionfs mounting the KERNEL's upper shows a different tree:\n"
                                    + dict_diff(k.snap, snap, "reference", "unionfs(kernel upper)"))
            except Exception as e:   # a mount failure is one more difference, not a crash
                problems.append("unionfs could not mount the kernel's upper: %r" % (e,))
            # unionfs's upper through the kernel.
            y = os.path.join(str(tmp_path), "y_kernel_on_unionfs_upper")
            yw, ym = os.path.join(y, "work"), os.path.join(y, "mnt")
            os.makedirs(yw)
            try:
                with kernel_overlay_mount(lowers, u.upper, yw, ym, extra_opts=kopts):
                    snap = snapshot(ym, with_times=with_times)
                if snap != k.snap:
                    problems.append("the kernel mounting UNIONFS's upper shows a different tree:\n"
                                    + dict_diff(k.snap, snap, "reference", "kernel(unionfs upper)"))
            except Exception as e:
                problems.append("the kernel could not mount unionfs's upper: %r" % (e,))

        after = [_raw_snapshot(l) for l in lowers]
        for i, (b, a) in enumerate(zip(lowers_before, after)):
            if a != b:
                problems.append("lower layer %d was modified:\n%s" % (i, dict_diff(b, a, "before",
                                                                                   "after")))
        res = DiffResult(lowers, k, u, problems)
        if check and problems:
            raise AssertionError(
                "unionfs deviates from the kernel's overlayfs:\n\n" + "\n\n".join(problems)
                + "\n\nkernel outcomes:\n" + pprint.pformat(k.outcomes, width=110))
        return res
    finally:
        os.umask(old_umask)


@contextlib.contextmanager
def chdir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


import pytest  # noqa: E402

from tests.mountutil import requires_fuse, requires_overlay  # noqa: E402

# Markers for a differential module: ``pytestmark = DIFFERENTIAL``.
DIFFERENTIAL = [pytest.mark.overlay, pytest.mark.fuse, requires_overlay, requires_fuse,
                pytest.mark.timeout(120)]
