"""The control directory ``MNT/.unionfs/``: virtual files served by the daemon itself.

* ``stats``  (0444) the stats document, JSON, taken when the file is opened (which also makes
  every idle trace reader get a ``tick`` at once: ``unionfs trace -- COMMAND`` syncs that way);
* ``trace``  (0400, the mount owner's) the event stream: a read blocks until events come and
  returns them as newline-delimited JSON (format: unionfs/observe.py). It is opened with
  ``direct_io`` so the kernel caches nothing and passes short reads through; an idle read returns
  a ``tick`` line after ``TICK`` seconds, so a reader that was killed frees its daemon thread.
  At most ``MAX_TRACE_READERS`` streams are open at once (EBUSY beyond): each blocked read holds
  one of the FUSE server's worker threads.

The directory is not in the root's listing, is never stored in a layer (a layer's own
``.unionfs`` is shadowed by it: the listing shows this one in its place), and cannot be created,
removed, renamed or written (EPERM). Every operation on its files answers (fsync: nothing to
do; lseek SEEK_DATA/SEEK_HOLE: the document's extent, ESPIPE on the stream).
The FUSE adapter routes paths for which ``owns()`` is true, and handles >= ``FH_BASE``, here.
"""
import errno
import os
import stat
import threading
import time

from . import observe, which

NAME = ".unionfs"
PATH = "/" + NAME
FH_BASE = 1 << 41  # above file descriptors and the adapter's directory handles
TICK = 1.0
MAX_TRACE_READERS = 4
_INO = 0xFFFF_FFFF_FFFF_FF00  # inode numbers no layer hands out (the union keeps st_ino < 2^56)
_FILES = {"stats": (0o444, 1), "trace": (0o400, 2)}


def owns(path):
    return path is not None and (path == PATH or path.startswith(PATH + "/"))


def _err(code, path=None):
    return OSError(code, os.strerror(code), path)


class _Stat:
    """The attributes of a virtual entry, shaped like the os.stat_result fields the adapter uses."""
    __slots__ = ("st_mode", "st_uid", "st_gid", "st_rdev", "st_size", "st_blksize", "st_blocks",
                 "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_nlink", "st_ino")

    def __init__(self, mode, ino, nlink, t_ns):
        self.st_mode = mode
        self.st_ino = ino
        self.st_nlink = nlink
        self.st_uid = os.geteuid()
        self.st_gid = os.getegid()
        self.st_rdev = self.st_size = self.st_blocks = 0
        self.st_blksize = 4096
        self.st_atime_ns = self.st_mtime_ns = self.st_ctime_ns = t_ns


class _Trace:
    __slots__ = ("sub", "pending")

    def __init__(self, sub, first):
        self.sub = sub
        self.pending = bytearray(observe.encode(first))


class ControlDir:
    """Serves ``/.unionfs`` for the adapter `ops` (which has .union and .files)."""

    def __init__(self, ops):
        self.ops = ops
        self.observer = ops.union.observer
        self.handles = {}
        self._next = FH_BASE
        self._lock = threading.Lock()
        self._t = time.time_ns()

    # -- attributes and listing

    def _entry(self, path):
        """(mode, ino offset) of a control path, ENOENT if it is none of ours."""
        if path == PATH:
            return stat.S_IFDIR | 0o555, 0
        name = path[len(PATH) + 1:]
        if name not in _FILES:
            raise _err(errno.ENOENT, path)
        mode, n = _FILES[name]
        return stat.S_IFREG | mode, n

    def stat(self, path):
        """(stat, st_ino, st_nlink) as the union's getattr returns them."""
        mode, n = self._entry(path)
        nlink = 2 if stat.S_ISDIR(mode) else 1
        st = _Stat(mode, _INO + n, nlink, self._t)
        return st, st.st_ino, nlink

    def listdir(self, path, plus=False):
        if path != PATH:
            raise _err(errno.ENOTDIR, path)
        out = [(".", stat.S_IFDIR, _INO, None), ("..", stat.S_IFDIR, self.ops.union.ino_of(
            self.ops.union.root), None)]
        for name in sorted(_FILES):
            p = PATH + "/" + name
            full = self.stat(p) if plus else None
            out.append((name, stat.S_IFREG, _INO + _FILES[name][1], full))
        return out

    def shadow(self, entries, plus):
        """In the root's listing, a layer's own ``.unionfs`` is shown as this directory, the
        one every lookup of the name finds."""
        for i, entry in enumerate(entries):
            if entry[0] == NAME:
                entries[i] = (NAME, stat.S_IFDIR, _INO, self.stat(PATH) if plus else None)

    def getxattr(self, path, name):
        """The ``user.unionfs.*`` xattrs of any path (unionfs/which.py); none on our own."""
        if owns(path):
            raise _err(errno.ENODATA, path)
        return which.xattr(self.ops.union, path, name)

    @staticmethod
    def refuse(path):
        """Any change of the control directory or its files."""
        raise _err(errno.EPERM, path)

    # -- files

    def _new_handle(self, h):
        with self._lock:
            fh = self._next
            self._next += 1
            self.handles[fh] = h
        return fh

    def open(self, path, flags):
        mode, _ = self._entry(path)
        if stat.S_ISDIR(mode):
            raise _err(errno.EISDIR, path)
        if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
            raise _err(errno.EACCES, path)
        if path.endswith("/stats"):
            doc = self.stats()
            for sub in self.observer.bus.subscribers:
                sub.wake()  # a tick now tells each stream reader it has all up to doc's seq
            return self._new_handle(bytearray(observe.encode(doc)))
        bus = self.observer.bus
        with self._lock:
            if len(bus.subscribers) >= MAX_TRACE_READERS:
                raise _err(errno.EBUSY, path)
            sub = bus.subscribe()
        first = {"v": observe.VERSION, "event": "subscribed", "seq": bus.last_seq,
                 "time": round(time.time(), 6), "pid": os.getpid()}
        return self._new_handle(_Trace(sub, first))

    def readinto(self, fh, buf, offset):
        h = self.handles.get(fh)
        if h is None:
            raise _err(errno.EBADF)
        size = len(buf)
        if isinstance(h, _Trace):
            if not h.pending:
                self._fill(h)
            data = h.pending[:size]
            del h.pending[:size]
        else:
            data = h[offset:offset + size]
        memoryview(buf).cast("B")[:len(data)] = data
        return len(data)

    def lseek(self, fh, offset, whence):
        """SEEK_DATA / SEEK_HOLE (the kernel answers the other forms itself)."""
        h = self.handles.get(fh)
        if h is None:
            raise _err(errno.EBADF)
        if isinstance(h, _Trace):
            raise _err(errno.ESPIPE)  # a stream
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE):
            raise _err(errno.EINVAL)
        if offset < 0 or offset >= len(h):
            raise _err(errno.ENXIO)
        return offset if whence == os.SEEK_DATA else len(h)

    def _fill(self, h):
        events = h.sub.get(TICK)
        if not events:
            events = [{"v": observe.VERSION, "event": "tick", "seq": self.observer.bus.last_seq,
                       "time": round(time.time(), 6)}]
        for ev in events:
            h.pending += observe.encode(ev)

    def release(self, fh):
        h = self.handles.pop(fh, None)
        if isinstance(h, _Trace):
            self.observer.bus.unsubscribe(h.sub)

    # -- the stats document

    def stats(self):
        doc = self.observer.snapshot()
        doc["open_files"] = len(self.ops.files)
        doc["listings"] = self.ops.listings()
        doc["transport"] = self.ops.transport()
        doc["layers"] = [dict(l, source=self.observer.layer_name(l["dir"])) for l in doc["layers"]]
        return doc
