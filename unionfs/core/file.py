"""Open files and attributes: handles, read/write, fsync, fallocate, setattr (chmod, chown,
truncate, utimens) and xattrs, each copying the entry up first when it changes it.

A mixin of `union.Union` (why: union.py's docstring). A handle keeps the real fd; one opened on a
lower file is registered with the union, so that a copy-up reopens it on the upper copy.
"""
import errno
import os
import stat

from . import whiteout as wo
from .namei import err
from .sysutil import fallocate, open_regular, process_groups


def _kill_suid(fd):
    mode = os.fstat(fd).st_mode
    kill = stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0)
    if mode & kill:
        os.fchmod(fd, stat.S_IMODE(mode) & ~kill)


class Handle:
    """An open file: the real fd, the merged inode number, and whether it still reads a lower."""
    __slots__ = ("fd", "ino", "path", "lower", "written", "sgid_checked")

    def __init__(self, fd, ino, path, lower):
        self.fd = fd
        self.ino = ino
        self.path = path
        self.lower = lower
        self.written = False
        self.sgid_checked = False  # the setgid rule (first_write) applied since the last chmod


class FileOps:
    """Handles, I/O and attribute changes of `union.Union`."""

    def fgetattr(self, handle):
        """(stat_result, st_ino, st_nlink) of an open file, counted as getattr counts a name:
        the work-dir names of files unlinked while open (detach) are no links users made."""
        st = os.fstat(handle.fd)
        nlink = st.st_nlink
        if self._orphans and nlink:
            nlink -= self._orphaned_links(st)
        if self.ids.active:
            st = self.ids.show(st, handle.fd)
        return st, handle.ino, nlink

    def readlink(self, path):
        node = self.resolve(path)
        if self.ids.override and stat.S_ISREG(node.comps[0][2].st.st_mode):
            return self.ids.readlink(self.real(node))  # a symlink kept as a file (ids.py)
        return os.readlink(self.real(node))

    def _check_xattr(self, path, name):
        if wo.is_interpreted_xattr(name):
            raise err(errno.EOPNOTSUPP, path)

    def getxattr(self, path, name):
        self._check_xattr(path, name)
        return self.ids.getxattr(self.real(self.resolve(path)), name)

    def listxattr(self, path):
        names = os.listxattr(self.real(self.resolve(path)), follow_symlinks=False)
        return self.ids.listxattr(names)

    # ---- files ------------------------------------------------------------------------------

    def open(self, path, flags, caller=None):
        """Open a merged file; `caller` (uid) is needed for open(O_TRUNC) only: FUSE leaves the
        truncation to the daemon, which runs as root, so the kernel's rule that a truncate by
        an unprivileged caller clears setuid (and setgid with group exec) is applied here."""
        node = self.resolve(path)
        write = (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC
        if write:
            self._writable(path)
            if not node.in_upper:
                node = self.copy_up(path, data=not flags & os.O_TRUNC)
        fd = open_regular(self.real(node), flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY))
        if flags & os.O_TRUNC and caller:
            _kill_suid(fd)
        handle = Handle(fd, self.ino_of(node), path, lower=not node.in_upper)
        if handle.lower and self.upper is not None:
            with self.wlock:
                self._lower_handles.setdefault(path, set()).add(handle)
        return handle

    def release(self, handle):
        if handle.written and self._aliases:
            self._changed(handle.path, os.fstat(handle.fd))
        if handle.lower:
            with self.wlock:
                s = self._lower_handles.get(handle.path)
                if s is not None:
                    s.discard(handle)
                    if not s:
                        del self._lower_handles[handle.path]
        os.close(handle.fd)

    def flushed(self, handle):
        """A close of a descriptor of `handle` (the caller waits for it, unlike for the release
        that follows the last close): the file's other names show what was written."""
        if handle.written and self._aliases:
            self._changed(handle.path, os.fstat(handle.fd))

    @staticmethod
    def read(handle, size, offset):
        return os.pread(handle.fd, size, offset)

    @staticmethod
    def readinto(handle, buf, offset):
        return os.preadv(handle.fd, [buf], offset)

    @staticmethod
    def write(handle, data, offset):
        handle.written = True
        return os.pwrite(handle.fd, data, offset)

    def first_write(self, handle, uid, gid, pid):
        """Before the first write through a handle, and its first after a chmod made the file
        setgid: the kernel clears the setgid bit of a file written by a caller outside its
        group (Linux 6.2), but its FUSE client leaves the case of a file without group execute
        to the filesystem (setuid, and setgid with group execute, it clears itself). Root
        (CAP_FSETID) keeps the bit."""
        if uid == 0 or handle.lower:
            return
        st = os.fstat(handle.fd)
        if st.st_mode & (stat.S_ISGID | stat.S_IXGRP) != stat.S_ISGID:
            return
        if not self.outside_group(st, uid, gid, pid):
            return
        os.fchmod(handle.fd, stat.S_IMODE(st.st_mode) & ~stat.S_ISGID)
        self._changed(handle.path, os.fstat(handle.fd))

    def outside_group(self, st, uid, gid, pid):
        """Is the caller (uid, gid, pid) neither root nor in the group of the file whose
        lstat is `st`? Such a writer's writes must reach the daemon whatever the file's mode
        is now: a chmod may make the file setgid while it stays open (first_write)."""
        if uid == 0:
            return False
        # the caller's primary group first: the supplementary ones cost a read of /proc
        return not (st.st_gid == self.ids.stored(-1, gid)[1] or st.st_gid in process_groups(pid))

    @staticmethod
    def fsync(handle, datasync):
        (os.fdatasync if datasync else os.fsync)(handle.fd)

    @staticmethod
    def fallocate(handle, mode, offset, length):
        fallocate(handle.fd, mode, offset, length)

    @staticmethod
    def ftruncate(handle, length):
        os.ftruncate(handle.fd, length)

    @staticmethod
    def lseek(handle, offset, whence):
        """SEEK_DATA / SEEK_HOLE answered by the real file (the fd's position is not used)."""
        return os.lseek(handle.fd, offset, whence)

    # chmod, chown, utimens through an open handle whose name is gone (unlinked while open)

    def fchmod(self, handle, mode):
        self._fchange(handle, os.fchmod, stat.S_IMODE(mode))

    def fchown(self, handle, uid, gid):
        self._fchange(handle, os.fchown, *self.ids.stored(uid, gid))

    def futimens(self, handle, atime_ns, mtime_ns):
        """None leaves that time as it is (UTIME_OMIT)."""
        st = os.fstat(handle.fd)
        self._fchange(handle, lambda fd: os.utime(fd, ns=(
            st.st_atime_ns if atime_ns is None else atime_ns,
            st.st_mtime_ns if mtime_ns is None else mtime_ns)))

    @staticmethod
    def _fchange(handle, fn, *args):
        if handle.lower:
            raise err(errno.ESTALE)  # no name left to copy a lower file up to
        fn(handle.fd, *args)

    # ---- attributes (copy-up first) ---------------------------------------------------------

    def chmod(self, path, mode):
        node = self._copied_up(path)
        if stat.S_ISLNK(node.comps[0][2].st.st_mode):
            raise err(errno.EOPNOTSUPP, path)
        self.ids.chmod(self.real(node), mode)
        self._changed(path)

    def chown(self, path, uid, gid):
        uid, gid = self.ids.stored(uid, gid)
        self.ids.chown(self.real(self._copied_up(path)), uid, gid)
        self._changed(path)

    def truncate(self, path, length):
        node = self.resolve(path)
        if node.is_dir:
            raise err(errno.EISDIR, path)
        if not node.in_upper:
            self._writable(path)
            node = self.copy_up(path, data=length > 0)
        fd = open_regular(self.real(node), os.O_WRONLY)
        try:
            os.ftruncate(fd, length)
        finally:
            os.close(fd)
        self._changed(path)

    def utimens(self, path, atime_ns, mtime_ns):
        """Set times; None leaves that time as it is (UTIME_OMIT)."""
        real = self.real(self._copied_up(path))
        if atime_ns is None or mtime_ns is None:
            st = os.lstat(real)
            atime_ns = st.st_atime_ns if atime_ns is None else atime_ns
            mtime_ns = st.st_mtime_ns if mtime_ns is None else mtime_ns
        os.utime(real, ns=(atime_ns, mtime_ns), follow_symlinks=False)
        self._changed(path)

    def setxattr(self, path, name, value, flags):
        self._check_xattr(path, name)
        os.setxattr(self.real(self._copied_up(path)), name, value, flags, follow_symlinks=False)

    def removexattr(self, path, name):
        self._check_xattr(path, name)
        node = self.resolve(path)
        if not node.in_upper:
            # as the kernel: removing an absent name fails without copying up
            self.ids.getxattr(self.real(node), name)
        self.ids.removexattr(self.real(self._copied_up(path)), name)
