"""What the FUSE server still asks of a path API: the open-file table (file handle -> the
union's handle), and the routing of the control directory (its paths, its handles at or above
control.FH_BASE, the which-report xattrs) away from the union; listings come from the union
through core.readdir.Listings. The namespace operations, readlink and statfs the server sends
to the union itself.

Errors are the Union's OSErrors; the server (fuse/server.py) answers the kernel with their
errno. Paths are str, names that are not UTF-8 carried as surrogate escapes. A file whose name
was removed while open is known by a path under nodes.DETACHED; each hard-link name is a
separate kernel node, so the Union asks (`on_invalidate`) for the kernel's cached attributes
and pages of the other names to be dropped after a change.
"""
import errno
import os
import stat
import time

from .. import control, which
from ..core.readdir import Listings
from .nodes import DETACHED


class FuseOps:
    def __init__(self, union):
        self.union = union
        self.files = {}
        self._listings = Listings()
        self.control = control.ControlDir(self)
        self.context = lambda: (os.getuid(), os.getgid(), os.getpid())  # set by the server
        self.transport = lambda: None  # set by the server: /dev/fuse or io_uring, counts

    def _owner(self):
        uid, gid, _pid = self.context()
        return uid, gid

    def _guard(self, *paths):
        """The control directory cannot be changed."""
        for p in paths:
            if control.owns(p):
                self.control.refuse(p)

    def _orphan(self, path, fh):
        """The handle of a file the server has no path for (its name removed while open)."""
        return self.files.get(fh) if path is None and fh is not None else None

    # -- lifecycle
    def destroy(self, path):
        for h in list(self.files.values()):
            self.union.release(h)
        self.files.clear()

    # -- attributes
    def stat(self, path, fh=None):
        """(stat_result, st_ino, st_nlink) of a path, or of an open file."""
        if control.owns(path):
            return self.control.stat(path)
        h = self.files.get(fh) if fh is not None else None
        if h is not None:
            return self.union.fgetattr(h)
        return self.union.getattr(path)

    def chmod(self, path, mode, fh=None):
        self._guard(path)
        h = self._orphan(path, fh)
        if h is not None:
            self.union.fchange(h, os.fchmod, stat.S_IMODE(mode))
        else:
            self.union.chmod(path, mode)

    def chown(self, path, uid, gid, fh=None):
        self._guard(path)
        h = self._orphan(path, fh)
        if h is not None:
            self.union.fchange(h, os.fchown, uid, gid)
        else:
            self.union.chown(path, uid, gid)

    def truncate(self, path, length, fh=None):
        self._guard(path)
        h = self.files.get(fh) if fh is not None else None
        if h is not None:
            self.union.ftruncate(h, length)
        else:
            self.union.truncate(path, length)

    def utimens(self, path, times=None, fh=None):
        self._guard(path)
        now = time.time_ns()
        atime, mtime = times if times is not None else (now, now)
        h = self._orphan(path, fh)
        if h is not None:
            st = os.fstat(h.fd)
            self.union.fchange(h, lambda fd, a, m: os.utime(fd, ns=(a, m)),
                               st.st_atime_ns if atime is None else atime,
                               st.st_mtime_ns if mtime is None else mtime)
        else:
            self.union.utimens(path, atime, mtime)

    # -- xattrs
    def getxattr(self, path, name, *args):
        if control.owns(path) or name.startswith(which.XATTR_PREFIX):
            if path is not None and path.startswith(DETACHED):
                raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))  # no merged path
            return self.control.getxattr(path, name)
        return self.union.getxattr(path, name)

    def listxattr(self, path):
        if control.owns(path):
            return []
        return self.union.listxattr(path)

    def setxattr(self, path, name, value, options, *args):
        if control.owns(path) or name.startswith(which.XATTR_PREFIX):
            self.control.refuse(path)
        self.union.setxattr(path, name, value, options)

    def removexattr(self, path, name):
        if control.owns(path) or name.startswith(which.XATTR_PREFIX):
            self.control.refuse(path)
        self.union.removexattr(path, name)

    # -- directories
    def snapshot(self, path, offset, plus):
        """(generation, entries) of the listing served from `offset` on (core.readdir.Listings);
        the control directory's is generation 0, made anew for every read."""
        if control.owns(path):
            return 0, self.control.listdir(path, plus)

        def take():
            entries = self.union.listdir(path, plus)
            if path == "/":
                self.control.shadow(entries, plus)
            return entries
        return self._listings.at(offset, plus, take)

    def listings(self):
        return len(self._listings)

    # -- files
    def open(self, path, flags):
        if control.owns(path):
            return self.control.open(path, flags)
        h = self.union.open(path, flags, self._owner()[0] if flags & os.O_TRUNC else None)
        self.files[h.fd] = h
        return h.fd

    def create(self, path, mode, flags):
        self._guard(path)
        h = self.union.create(path, mode, flags, self._owner())
        self.files[h.fd] = h
        return h.fd

    def _handle(self, fh):
        """The union's handle; a control file's (read-only, its own answers) or an unknown
        one is not a file these operations can use."""
        h = self.files.get(fh)
        if h is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return h

    def readinto(self, fh, buf, offset):
        if fh >= control.FH_BASE:
            return self.control.readinto(fh, buf, offset)
        return self.union.readinto(self._handle(fh), buf, offset)

    def write(self, path, data, offset, fh):
        h = self._handle(fh)
        if not h.written:
            self.union.first_write(h, *self.context())
        return self.union.write(h, data, offset)

    def release(self, path, fh):
        h = self.files.pop(fh, None)
        if h is not None:
            self.union.release(h)
        elif fh >= control.FH_BASE:
            self.control.release(fh)

    def flush(self, fh):
        h = self.files.get(fh)
        if h is not None:
            self.union.flushed(h)

    def fsync(self, path, datasync, fh):
        if fh >= control.FH_BASE:
            return  # served from memory: nothing to write back
        self.union.fsync(self._handle(fh), datasync)

    def fallocate(self, path, mode, offset, size, fh):
        self.union.fallocate(self._handle(fh), mode, offset, size)

    def lseek(self, path, offset, whence, fh):
        if fh >= control.FH_BASE:
            return self.control.lseek(fh, offset, whence)
        return self.union.lseek(self._handle(fh), offset, whence)
