"""One layer directory read once: what it ships at each path, and what it hides below it.

A layer is walked with ``scandir`` without ever following a symlink (a symlink is recorded as
one; nothing below it is read), so an index of a hostile layer stays inside the layer. The walk
keeps a list of directories, not a recursion, and reaches each through a directory fd opened
beneath the layer root (sysutil.open_deep, as the mount does), so paths longer than PATH_MAX and
thousands of levels deep are read like any others. Whiteouts
and opaque markers are recognised only through :mod:`unionfs.core.whiteout` (every form it documents:
OCI ``.wh.<name>`` / ``.wh..wh..opq``, the kernel's char 0/0 and ``overlay.opaque``, xattr
whiteouts), so this module knows no marker format of its own.

Paths are relative to the layer root, '/'-separated, without a leading '/' ('' is the root).
File content is read only on demand (``digest``, ``open_file``), through
``openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`` from the layer root with ``O_NOFOLLOW``.
``real(rel)`` names a path for calls that take one (xattrs): past PATH_MAX, through
``/proc/self/fd`` (sysutil.short_path).
"""
import collections
import hashlib
import os
import stat
from dataclasses import dataclass, field

from ..core import ids
from ..core import whiteout as wo
from ..core.sysutil import O_PATH, PATH_LIMIT, open_deep, short_path
from ..image.errors import ImageError

KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
         stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
         stat.S_IFSOCK: "socket"}
CHUNK = 1 << 20


class InspectError(ImageError):
    """Bad input for an analysis (no such layer, path, ...): one line for the user."""


@dataclass
class Entry:
    """One name a layer ships (not a whiteout or marker)."""
    path: str
    kind: str
    mode: int          # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    size: int          # content bytes of a regular file; 0 for everything else
    mtime_ns: int
    target: str = None  # symlink target
    rdev: tuple = None  # (major, minor) of a device
    inode: tuple = None  # (st_dev, st_ino) of a regular file with several names in the layer

    @property
    def is_dir(self):
        return self.kind == "dir"


@dataclass(eq=False)
class LayerIndex:
    """What one layer directory contains, read once."""
    root: str
    entries: dict = field(default_factory=dict)     # path -> Entry
    whiteouts: set = field(default_factory=set)     # paths a whiteout in this layer hides
    opaque: set = field(default_factory=set)        # directories whose lower contents are hidden
    redirects: dict = field(default_factory=dict)   # directory -> redirect (kernel format only)
    _digests: dict = field(default_factory=dict, repr=False)
    _long_xattrs: dict = field(default_factory=dict, repr=False)   # of paths past PATH_MAX

    @classmethod
    def read(cls, root):
        idx = cls(root=root)
        try:
            st = os.lstat(root)
        except OSError as e:
            raise InspectError("%s: %s" % (root, e.strerror))
        if not stat.S_ISDIR(st.st_mode):
            raise InspectError("%s: layer is not a directory" % root)
        fds = _DirFds(root)
        try:
            pending = [""]              # depth first, each directory's entries before its subdirs
            while pending:
                pending.extend(reversed(idx._read_dir(fds, pending.pop())))
        finally:
            fds.close()
        return idx

    def real(self, rel):
        """A path to rel usable in one system call (under PATH_MAX bytes)."""
        if not rel:
            return self.root
        p = self.root + "/" + rel
        if len(p) < PATH_LIMIT // 4 or len(os.fsencode(p)) < PATH_LIMIT:
            return p
        rootfd = os.open(self.root, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return short_path(rootfd, rel)
        finally:
            os.close(rootfd)

    def _read_dir(self, fds, rel):
        """Record the entries of directory rel; returns its subdirectories."""
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fds.get(rel))
        long = len(self.root) + len(rel) > PATH_LIMIT // 4 - 256
        try:
            here = "/proc/self/fd/%d/" % fd
            opaque, redirect, xwh = wo.dir_markers(here + ".")
            if opaque:
                self.opaque.add(rel)
            if redirect:
                self.redirects[rel] = redirect
            with os.scandir(fd) as it:
                items = sorted(it, key=lambda e: e.name)
            subdirs = []
            for de in items:
                path = rel + "/" + de.name if rel else de.name
                target = wo.oci_whiteout_target(de.name)
                if target == "":
                    self.opaque.add(rel)
                    continue
                if target is not None:
                    self.whiteouts.add(rel + "/" + target if rel else target)
                    continue
                st = de.stat(follow_symlinks=False)
                if wo.is_whiteout_stat(st) or (xwh and wo.is_xattr_whiteout(here + de.name, st)):
                    self.whiteouts.add(path)
                    continue
                self.entries[path] = _entry(path, here + de.name, st)
                if long and len(os.fsencode(self.root + "/" + path)) >= PATH_LIMIT:
                    # named later only through /proc/self/fd: read the xattrs while at hand
                    self._long_xattrs[path] = ids.recorded_xattrs(here + de.name)
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(path)
            return subdirs
        finally:
            os.close(fd)

    # ---- content, read on demand --------------------------------------------------------------

    def open_file(self, rel):
        """A read-only fd of the regular file rel, opened without following any symlink."""
        rootfd = os.open(self.root, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_deep(rootfd, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise InspectError("%s: cannot open in layer %s: %s" % (rel, self.root, e.strerror))
        finally:
            os.close(rootfd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InspectError("%s: not a regular file in layer %s" % (rel, self.root))
        return fd

    def read_bytes(self, rel, limit=None):
        """The content of regular file rel (at most limit bytes)."""
        fd = self.open_file(rel)
        try:
            chunks = []
            left = limit
            while left is None or left > 0:
                data = os.read(fd, CHUNK if left is None else min(CHUNK, left))
                if not data:
                    break
                chunks.append(data)
                if left is not None:
                    left -= len(data)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def copy_to(self, rel, write):
        """Pass the content of regular file rel, chunk by chunk, to write(bytes)."""
        fd = self.open_file(rel)
        try:
            while True:
                data = os.read(fd, CHUNK)
                if not data:
                    return
                write(data)
        finally:
            os.close(fd)

    def digest(self, rel):
        """sha256 hex of regular file rel (cached)."""
        d = self._digests.get(rel)
        if d is None:
            h = hashlib.sha256()
            self.copy_to(rel, h.update)
            d = self._digests[rel] = h.hexdigest()
        return d

    def xattrs(self, rel):
        """{name: value} of the user-visible xattrs of rel (overlay markers left out), read as
        a commit reads them."""
        if rel in self._long_xattrs:
            return dict(self._long_xattrs[rel])
        return ids.recorded_xattrs(self.real(rel))

    def content_bytes(self):
        """Regular-file content this layer ships; hard-linked data counted once."""
        seen = set()
        total = 0
        for e in self.entries.values():
            if e.kind == "file" and (e.inode is None or e.inode not in seen):
                total += e.size
                if e.inode is not None:
                    seen.add(e.inode)
        return total


class _DirFds:
    """O_PATH fds of the directories a walk opened last (the root and KEEP others), so that each
    directory is opened from its parent's fd, not by resolving its whole path again (that is
    O(depth) a directory, O(depth^2) for a walk down a deep chain). Never follows a symlink."""
    KEEP = 32

    def __init__(self, root):
        self.fds = collections.OrderedDict()
        self.fds[""] = os.open(root, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def get(self, rel):
        fd = self.fds.get(rel)
        if fd is not None:
            self.fds.move_to_end(rel)
            return fd
        base = max((k for k in self.fds if not k or rel.startswith(k + "/")), key=len)
        below = rel[len(base) + 1:] if base else rel
        fd = open_deep(self.fds[base], below, O_PATH | os.O_DIRECTORY)
        self.fds[rel] = fd
        if len(self.fds) > self.KEEP + 1:
            os.close(self.fds.pop(next(k for k in self.fds if k)))
        return fd

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _link_kept_as_file(real):
    """The target of a symlink a rootless import kept as a regular file holding it."""
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.read(fd, ids.LINK_MAX)
    finally:
        os.close(fd)


def _entry(path, real, st):
    # what the layer records: a layer imported without root keeps owners, modes and the types
    # it could not make (devices, others' symlinks) in override xattrs (ids.py)
    fmt, mode, uid, gid, rdev = ids.stored_view(real, st)
    kind = KINDS.get(fmt, "unknown")
    e = Entry(path=path, kind=kind, mode=mode, uid=uid, gid=gid,
              size=st.st_size if kind == "file" else 0, mtime_ns=st.st_mtime_ns)
    if kind == "symlink":
        e.target = os.fsdecode(os.readlink(real) if stat.S_ISLNK(st.st_mode)
                               else _link_kept_as_file(real))
    elif kind in ("char", "block"):
        e.rdev = (os.major(rdev), os.minor(rdev))
    elif kind == "file" and st.st_nlink > 1:
        e.inode = (st.st_dev, st.st_ino)
    return e
