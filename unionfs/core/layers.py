"""The narrow interface every layer is read through: find one name, walk a path, list a directory.

A layer is a real directory. Paths inside it are relative ('' is its root). A user who may write
in a layer can swap any of its directories for a symlink at any moment, cached or not, so no layer
path is ever handed to the kernel as a joined string: every directory is opened beneath the layer's
root fd with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), and what ``real()`` returns is an
FdPath, ``/proc/self/fd/N/name``, in which only the last name is looked up (callers never follow
it). Nothing a layer contains, or turns into, can send the daemon outside its layer directories.

Lower layers are read-only by contract (as for the kernel's overlayfs, changing them under a live
mount is undefined), so their directory listings and markers are read once and kept, in a bounded
cache: one ``scandir`` replaces a ``stat`` per name per layer on the lookup path. The upper layer is
read live.
"""
import errno
import os
import stat
import struct
import threading

from . import whiteout as wo
from .sysutil import O_PATH, PATH_LIMIT, Fd, FdPath, fd_path, open_beneath, open_deep

_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG)
# what open_beneath says of a path with a symlink (ELOOP) or a way out (EXDEV) in it: not here
_NOT_BENEATH = _ABSENT + (errno.ELOOP, errno.EXDEV)
WH = -1  # listing code for a whiteout
_SHORT = PATH_LIMIT // 4  # a str this short is under PATH_LIMIT bytes whatever its characters


# The lstat fields the union reads, packed: signed where the kernel's are (sizes, times),
# unsigned where they may use all 64 bits (inode and device numbers).
_STAT_FIELDS = (("st_mode", "I"), ("st_ino", "Q"), ("st_dev", "Q"), ("st_nlink", "Q"),
                ("st_uid", "I"), ("st_gid", "I"), ("st_size", "q"), ("st_atime_ns", "q"),
                ("st_mtime_ns", "q"), ("st_ctime_ns", "q"), ("st_blocks", "q"),
                ("st_blksize", "q"), ("st_rdev", "Q"))
_STAT = struct.Struct("=" + "".join(f for _, f in _STAT_FIELDS))


class Stat(bytes):
    """The fields of an lstat the union reads, packed in one bytes object. A Hit is kept for as
    long as its resolution or a listing showing it is cached (a walk keeps one per path, up to
    the caches' bounds): an os.stat_result holds some twenty objects (~600 bytes), thirteen
    slots and their int objects ~380; this is one object of 144 bytes."""
    __slots__ = ()

    def __new__(cls, st):
        # the fields named one by one: a loop of getattr costs twice as much, on every lookup
        return bytes.__new__(cls, _STAT.pack(
            st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_blocks, st.st_blksize,
            st.st_rdev))

    def fields(self):
        """Every field at once, in _STAT_FIELDS order (one unpack, where reading each
        property unpacks once per field)."""
        return _STAT.unpack(self)


def _stat_field(fmt, offset):
    unpack = struct.Struct("=" + fmt).unpack_from
    return property(lambda self: unpack(self, offset)[0])


_offset = 0
for _name, _fmt in _STAT_FIELDS:
    setattr(Stat, _name, _stat_field(_fmt, _offset))
    _offset += struct.calcsize("=" + _fmt)
del _offset, _name, _fmt


class Hit(Stat):
    """What one layer holds at one name: its lstat and, for directories, the overlay markers.

    A Hit is its own ``st`` (one is cached per component of every resolution kept, and a
    separate object for the markers cost 64 bytes each): a non-directory's is the packed lstat
    alone; a directory's (a DirHit) carries its markers too."""
    __slots__ = ()
    is_dir = False
    opaque = False
    redirect = None

    def __new__(cls, st, opaque=False, redirect=None):
        if not stat.S_ISDIR(st.st_mode):
            return Stat.__new__(Hit, st)
        hit = Stat.__new__(DirHit, st)
        hit.opaque, hit.redirect = opaque, redirect
        return hit

    @property
    def st(self):
        return self


class DirHit(Hit):
    """A directory's Hit: its markers in an instance dict (bytes allow no slots; directories
    are few beside the files they hold)."""
    is_dir = True


WHITEOUT = object()


def join(rel, name):
    return rel + "/" + name if rel else name


def _code(entry, xwh_dir, dirfd=None):
    """Listing code of a DirEntry: its S_IFMT, or WH for a whiteout (dirfd: the listed
    directory's fd, for an xattr whiteout's check)."""
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_file(follow_symlinks=False) and not xwh_dir:
        return stat.S_IFREG
    st = entry.stat(follow_symlinks=False)
    if wo.is_whiteout_stat(st):
        return WH
    if xwh_dir and wo.is_xattr_whiteout(fd_path(dirfd, entry.name), st):
        return WH
    return stat.S_IFMT(st.st_mode)


_MAX_DIR_FDS = 1024  # open directory fds one layer keeps at most


class Layer:
    """A writable layer (the upper): read live from disk, every directory reached through
    openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) from the layer's root, so that even an upper
    changed behind the mount's back cannot lead a lookup or a change through a symlink.

    The directories it has opened are kept open (O_PATH, a bounded number), so a name in one of
    them costs one *at call. Cache validity is explicit: a directory of the layer that the union
    renames or removes makes it forget them all (forget_dirs); a change behind the mount's back
    is not followed (as for the kernel), but a kept fd is still the directory that was verified
    beneath the root, so it cannot lead anywhere else either."""
    writable = True

    def __init__(self, root, index, prefixes=(wo.TRUSTED,), oci=False):
        self.root = root
        self.index = index
        self.prefixes = prefixes
        # whiteouts and opaque markers written as '.wh.' files (an upper whose owner may not
        # create device nodes: whiteout.OciWriter)
        self.oci = oci
        self._rootfd = os.open(root, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.dev = os.fstat(self._rootfd).st_dev
        self._root = fd_path(self._rootfd, ".").held
        self._fds = {}
        self._fd_lock = threading.Lock()

    def __repr__(self):
        return "<%s %d %s>" % (type(self).__name__, self.index, self.root)

    def shown(self, rel):
        """The path of rel for people (logs, events); never used to reach the entry."""
        return self.root + "/" + rel if rel else self.root

    def _open(self, rel, flags):
        """fd of rel opened beneath the root with no symlink anywhere (O_PATH|O_NOFOLLOW gives
        a symlink itself); raises OSError, ELOOP/EXDEV where a symlink or '..' is in the way."""
        if len(rel) < _SHORT or len(os.fsencode(rel)) < PATH_LIMIT:
            return open_beneath(self._rootfd, rel or ".", flags)
        return open_deep(self._rootfd, rel, flags)

    def dirfd(self, rel):
        """An Fd (O_PATH) of directory rel, kept; ENOENT where a symlink stands in the way."""
        if not rel:
            return self._root
        fd = self._fds.get(rel)
        if fd is None:
            try:
                fd = Fd(self._open(rel, O_PATH | os.O_DIRECTORY))
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.EXDEV):
                    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), self.shown(rel))
                raise
            with self._fd_lock:
                if len(self._fds) >= _MAX_DIR_FDS:
                    # an Fd still named by a path in use stays open until that path goes
                    self._fds.clear()
                self._fds[rel] = fd
        return fd

    def forget_dirs(self):
        """A directory of this layer was renamed or removed: the kept fds may now stand for other
        paths (or none), so all go (each closes once no path in use names it)."""
        with self._fd_lock:
            self._fds.clear()

    def real(self, rel):
        """The FdPath of rel: its parent directory pinned, its own name looked up at use."""
        if not rel:
            return fd_path(self._rootfd, ".")
        parent, _, name = rel.rpartition("/")
        return FdPath(self.dirfd(parent), name)

    def lstat(self, rel):
        if not rel:
            return os.fstat(self._rootfd)
        parent, _, name = rel.rpartition("/")
        dfd = self.dirfd(parent)  # held while its number is in use
        return os.stat(name, dir_fd=dfd.fd, follow_symlinks=False)

    def _open_dir(self, rel, flags=O_PATH):
        """fd of directory rel, or None if it is absent or not reachable without a symlink."""
        try:
            return self._open(rel, flags | os.O_DIRECTORY)
        except OSError as e:
            if e.errno in _NOT_BENEATH:
                return None
            raise

    def find(self, dir_rel, name):
        """Hit, WHITEOUT or None for one name in one directory of this layer."""
        dfd = self._open_dir(dir_rel)
        if dfd is None:
            return None
        try:
            try:
                st = os.lstat(name, dir_fd=dfd)
            except OSError as e:
                if e.errno not in _ABSENT:
                    raise
                if self.oci and e.errno == errno.ENOENT and _exists(wo.WH_PREFIX + name, dfd):
                    return WHITEOUT
                return None
            if stat.S_ISDIR(st.st_mode):
                opaque, redirect, _ = wo.dir_markers(fd_path(dfd, name), self.prefixes)
                if self.oci and not opaque:
                    opaque = wo.has_opaque_marker(name, dfd, beneath=True)
                return Hit(st, opaque, redirect)
        finally:
            os.close(dfd)
        if wo.is_whiteout_stat(st):
            return WHITEOUT
        return Hit(st)

    def walk(self, rel):
        """Look a multi-component path up in this layer alone (for absolute redirects).

        Returns (hit, stop): stop is True when an intermediate component is a whiteout, a
        non-directory or an opaque directory, so lower layers must not be searched at this path.
        """
        parts = [p for p in rel.split("/") if p]
        cur = ""
        stop = False
        for i, name in enumerate(parts):
            hit = self.find(cur, name)
            if hit is None:
                return None, stop
            if hit is WHITEOUT:
                return None, True
            if i == len(parts) - 1:
                return hit, stop
            if not hit.is_dir:
                return None, True
            if hit.opaque:
                stop = True
            cur = join(cur, name)
        return None, stop

    def list(self, rel):
        """[(name, code)] of one directory, code an S_IFMT value or WH; '.wh.' names never appear."""
        fd = self._open_dir(rel, os.O_RDONLY)
        if fd is None:
            return []
        try:
            with os.scandir(fd) as it:
                if not self.oci:
                    return [(e.name, _code(e, False)) for e in it]
                return list(_oci_listing(it, False, fd).items())
        finally:
            os.close(fd)


def _exists(name, dir_fd):
    """Is there an entry at name in dir_fd?"""
    try:
        os.lstat(name, dir_fd=dir_fd)
        return True
    except OSError:
        return False


def _oci_listing(entries, xwh, dirfd):
    """{name: code} of a directory whose whiteouts may be '.wh.' files; those names never appear,
    and an entry present beside its own '.wh.' name wins (an interrupted change leaves both)."""
    names = {}
    hidden = []
    for e in entries:
        target = wo.oci_whiteout_target(e.name)
        if target is not None:
            if target:
                hidden.append(target)
            continue
        names[e.name] = _code(e, xwh, dirfd)
    for n in hidden:
        names.setdefault(n, WH)
    return names


class _DirInfo:
    __slots__ = ("names",)

    def __init__(self, names):
        self.names = names


class LowerLayer(Layer):
    """A read-only layer: listings and markers are read once, understood in every format.

    Each directory it has read is kept open (an O_PATH fd, a bounded number of them): a name in
    it is then reached with one *at call, and whatever happens to the directory's path later, the
    name is looked up in the directory that was verified beneath the root."""
    writable = False

    def __init__(self, root, index, max_entries=500_000):
        super().__init__(root, index, wo.READ_PREFIXES)
        self._dirs = {}
        self._markers = {}
        self._entries = 0
        self._max = max_entries
        self._lock = threading.Lock()

    def markers(self, rel):
        """(opaque, redirect, xattr_whiteouts) of a directory of this layer, cached."""
        m = self._markers.get(rel)
        if m is None:
            dfd = self.dirfd(rel)
            opaque, redirect, xwh = wo.dir_markers(fd_path(dfd, "."), self.prefixes)
            opaque = opaque or wo.has_opaque_marker(".", dfd.fd)
            m = (opaque, redirect, xwh)
            self._markers[rel] = m
        return m

    def _dir(self, rel):
        """The cached listing of directory rel, or None if rel is not a directory of this layer.

        A listing is only read once its parent's listing has shown rel as a real directory, and
        through an fd opened beneath the root: no symlink can lead a read out of the layer."""
        info = self._dirs.get(rel)
        if info is not None:
            return info
        if rel:
            parent, _, name = rel.rpartition("/")
            pinfo = self._dir(parent)
            if pinfo is None or pinfo.names.get(name) != stat.S_IFDIR:
                return None
        try:
            dfd = self.dirfd(rel)
            xwh = self.markers(rel)[2]
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd.fd)
        except OSError as e:
            if e.errno in _NOT_BENEATH:
                return None
            raise
        try:
            with os.scandir(fd) as it:
                names = _oci_listing(it, xwh, fd)
        finally:
            os.close(fd)
        info = _DirInfo(names)
        with self._lock:
            if self._entries + len(names) > self._max:
                # Bounded memory: start over rather than track recency on the hot path.
                self._dirs.clear()
                self._markers.clear()
                self._entries = 0
            self._dirs[rel] = info
            self._entries += len(names)
        return info

    def find(self, dir_rel, name):
        info = self._dir(dir_rel)
        if info is None:
            return None
        code = info.names.get(name)
        if code is None:
            return None
        if code == WH:
            return WHITEOUT
        rel = join(dir_rel, name)
        try:
            dfd = self.dirfd(dir_rel)  # held while its number is in use
            st = os.lstat(name, dir_fd=dfd.fd)
            if code == stat.S_IFDIR:
                opaque, redirect, _ = self.markers(rel)
                return Hit(st, opaque, redirect)
        except OSError as e:
            if e.errno in _NOT_BENEATH:
                return None
            raise
        return Hit(st)

    def list(self, rel):
        info = self._dir(rel)
        return list(info.names.items()) if info is not None else []
