"""The open-file table of a mount: each file handle the kernel holds -> the union's Handle
(core/file.py), and the requests that name a file by its handle (read, write, flush, fsync,
fallocate, lseek, release). Handles at or above control.FH_BASE are the control directory's
files: opened, read, sought and released there (unionfs/control.py).

A file handle is the real file's descriptor number: unique while the file is open, and what
FUSE passthrough registers with the kernel (fuse/server.py). Errors are the union's OSErrors;
a handle this table does not hold is EBADF.
"""
import errno
import os

from .. import control


class Files:
    """File handle -> the union's Handle, for the FUSE server's handlers."""

    def __init__(self, union, control_dir):
        self.union = union
        self.control = control_dir
        self._open = {}

    def __len__(self):
        return len(self._open)

    def get(self, fh):
        """The union's handle of `fh`, or None (no handle given, or a control file's)."""
        return self._open.get(fh) if fh is not None else None

    def _handle(self, fh):
        h = self._open.get(fh)
        if h is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return h

    def open(self, path, flags, uid):
        """The new file handle of `path`; `uid`, the caller's, clears setuid on O_TRUNC."""
        if control.owns(path):
            return self.control.open(path, flags)
        h = self.union.open(path, flags, uid if flags & os.O_TRUNC else None)
        self._open[h.fd] = h
        return h.fd

    def create(self, path, mode, flags, owner):
        h = self.union.create(path, mode, flags, owner)
        self._open[h.fd] = h
        return h.fd

    def readinto(self, fh, buf, offset):
        if control.owns_handle(fh):
            return self.control.readinto(fh, buf, offset)
        return self.union.readinto(self._handle(fh), buf, offset)

    def write(self, fh, data, offset, ctx):
        """`ctx`: (uid, gid, pid) of the writer, for the setgid rule of a first write."""
        h = self._handle(fh)
        if not h.sgid_checked:
            self.union.first_write(h, *ctx)
            h.sgid_checked = True
        return self.union.write(h, data, offset)

    def setgid_set(self):
        """A chmod made a file setgid: the open handles apply the setgid rule again at their
        next write (which of them is the file's does not matter: a check is one fstat)."""
        for h in self._open.values():
            h.sgid_checked = False

    def flush(self, fh):
        h = self._open.get(fh)
        if h is not None:
            self.union.flushed(h)

    def fsync(self, fh, datasync):
        if control.owns_handle(fh):
            return  # served from memory: nothing to write back
        self.union.fsync(self._handle(fh), datasync)

    def fallocate(self, fh, mode, offset, length):
        self.union.fallocate(self._handle(fh), mode, offset, length)

    def lseek(self, fh, offset, whence):
        if control.owns_handle(fh):
            return self.control.lseek(fh, offset, whence)
        return self.union.lseek(self._handle(fh), offset, whence)

    def release(self, fh):
        h = self._open.pop(fh, None)
        if h is not None:
            self.union.release(h)
        elif control.owns_handle(fh):
            self.control.release(fh)

    def close_all(self):
        """At unmount: every file still open is released."""
        for fh in list(self._open):
            self.union.release(self._open.pop(fh))
