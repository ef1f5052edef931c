"""The FUSE adapter: one short method per operation, converting arguments and calling the Union.

Errors are the Union's OSErrors, returned to the kernel as -errno by the binding. The binding is
mfusepy (fusepy's maintained fork, libfuse 3): it gives fallocate and names that are not UTF-8
(surrogateescape). `_FUSE` passes what mfusepy's wrappers drop: rename flags, raw utimens
timespecs (UTIME_NOW / UTIME_OMIT), the file handle of ftruncate/fchmod/fchown/futimens, and lseek.

libfuse's high-level API names every file by its path. Two consequences handled here:
* a file unlinked while open is renamed by libfuse to `.fuse_hidden<16 hex>` and unlinked on
  its last close; that rename becomes `Union.detach` (the name goes exactly as on unlink) and
  libfuse's own nlink adjustment for hidden files is compensated;
* each hard-link name is a separate kernel inode, so the Union asks (`on_invalidate`) for the
  kernel's cached attributes and pages of the other names to be dropped after a change.
"""
import ctypes
import errno
import itertools
import os
import re
import stat
import time

# libfuse 3 (mfusepy would take libfuse 2 first when both are installed)
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # noqa: E402

_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
_DIR_BASE = 1 << 40  # directory handles live above any fd number
# the name libfuse gives a file unlinked while open (fuse.c: hidden_name)
_HIDDEN = re.compile(r"\.fuse_hidden[0-9a-f]{16}\Z")


def _decode(fuse, path):
    return None if path is None else path.decode(fuse.encoding, fuse.errors)


def _fh(fip):
    return fip.contents.fh if fip else None


def _ts(ts):
    if ts.tv_nsec == _UTIME_OMIT:
        return None
    if ts.tv_nsec == _UTIME_NOW:
        return time.time_ns()
    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec


class _FUSE(mfusepy.FUSE):
    def rename_fuse_3(self, old, new, flags):
        return self.operations.rename(_decode(self, old), _decode(self, new), flags)

    def utimens_fuse_3(self, path, buf, fip):
        times = None if not buf else (_ts(buf.contents.actime), _ts(buf.contents.modtime))
        return self.operations.utimens(_decode(self, path), times, _fh(fip))

    def truncate_fuse_3(self, path, length, fip):
        return self.operations.truncate(_decode(self, path), length, _fh(fip))

    def chmod_fuse_3(self, path, mode, fip):
        return self.operations.chmod(_decode(self, path), mode, _fh(fip))

    def chown_fuse_3(self, path, uid, gid, fip):
        uid = -1 if uid == 0xFFFFFFFF else uid
        gid = -1 if gid == 0xFFFFFFFF else gid
        return self.operations.chown(_decode(self, path), uid, gid, _fh(fip))

    def lseek(self, path, offset, whence, fip):
        return self.operations.lseek(_decode(self, path), offset, whence, _fh(fip))


def attrs(st, ino, nlink):
    return {
        "st_mode": st.st_mode, "st_ino": ino, "st_nlink": nlink, "st_uid": st.st_uid,
        "st_gid": st.st_gid, "st_size": st.st_size, "st_rdev": st.st_rdev,
        "st_blocks": st.st_blocks, "st_blksize": st.st_blksize,
        "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns,
    }


def _hidden(path):
    return path is not None and _HIDDEN.match(path.rpartition("/")[2]) is not None


class FuseOps:
    use_ns = True

    def __init__(self, union, on_ready=None):
        self.union = union
        self.on_ready = on_ready
        self.files = {}
        self.dirs = {}
        self._dir_ids = itertools.count(_DIR_BASE)

    @staticmethod
    def _owner():
        uid, gid, _pid = mfusepy.fuse_get_context()
        return uid, gid

    def _orphan(self, path, fh):
        """The handle of a file libfuse has no path for (unlinked while open)."""
        return self.files.get(fh) if path is None and fh is not None else None

    # -- lifecycle
    def init(self, path):
        fuse_ptr = ctypes.c_void_p(mfusepy._libfuse.fuse_get_context().contents.fuse)
        invalidate = mfusepy._libfuse.fuse_invalidate_path
        invalidate.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

        def drop_kernel_cache(paths):
            for p in paths:
                invalidate(fuse_ptr, os.fsencode(p))

        self.union.on_invalidate = drop_kernel_cache
        if self.on_ready:
            self.on_ready()

    def destroy(self, path):
        for h in list(self.files.values()):
            self.union.release(h)
        self.files.clear()

    # -- attributes
    def getattr(self, path, fh=None):
        h = self.files.get(fh) if fh is not None else None
        if h is not None:
            return attrs(*self.union.fgetattr(h))
        st, ino, nlink = self.union.getattr(path)
        if _hidden(path):
            nlink += 1  # libfuse subtracts one for the hidden name it made
        return attrs(st, ino, nlink)

    def chmod(self, path, mode, fh=None):
        h = self._orphan(path, fh)
        if h is not None:
            self.union.fchange(h, os.fchmod, stat.S_IMODE(mode))
        else:
            self.union.chmod(path, mode)

    def chown(self, path, uid, gid, fh=None):
        h = self._orphan(path, fh)
        if h is not None:
            self.union.fchange(h, os.fchown, uid, gid)
        else:
            self.union.chown(path, uid, gid)

    def truncate(self, path, length, fh=None):
        h = self.files.get(fh) if fh is not None else None
        if h is not None:
            self.union.ftruncate(h, length)
        else:
            self.union.truncate(path, length)

    def utimens(self, path, times=None, fh=None):
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

    def readlink(self, path):
        return self.union.readlink(path)

    def statfs(self, path):
        s = self.union.statfs()
        return {k: getattr(s, k) for k in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_flag", "f_namemax")}

    # -- xattrs
    def getxattr(self, path, name, *args):
        return self.union.getxattr(path, name)

    def listxattr(self, path):
        return self.union.listxattr(path)

    def setxattr(self, path, name, value, options, *args):
        self.union.setxattr(path, name, value, options)

    def removexattr(self, path, name):
        self.union.removexattr(path, name)

    # -- namespace
    def mkdir(self, path, mode):
        self.union.mkdir(path, mode, self._owner())

    def mknod(self, path, mode, dev):
        self.union.mknod(path, mode, dev, self._owner())

    def symlink(self, target, source):
        self.union.symlink(target, source, self._owner())

    def link(self, target, source):
        self.union.link(source, target)

    def unlink(self, path):
        self.union.unlink(path)

    def rmdir(self, path):
        self.union.rmdir(path)

    def rename(self, old, new, flags=0):
        if not flags and _hidden(new):
            self.union.detach(old, new)  # libfuse hiding a file unlinked while open
        else:
            self.union.rename(old, new, flags)

    # -- directories
    def opendir(self, path):
        node = self.union.resolve(path)
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        fh = next(self._dir_ids)
        self.dirs[fh] = path
        return fh

    def readdir(self, path, fh):
        return [(name, {"st_mode": code, "st_ino": ino}, 0)
                for name, code, ino in self.union.listdir(self.dirs.get(fh, path))]

    def releasedir(self, path, fh):
        self.dirs.pop(fh, None)

    def fsyncdir(self, path, datasync, fh):
        pass

    # -- files
    def open(self, path, flags):
        h = self.union.open(path, flags)
        self.files[h.fd] = h
        return h.fd

    def create(self, path, mode, flags):
        h = self.union.create(path, mode, flags, self._owner())
        self.files[h.fd] = h
        return h.fd

    def read(self, path, size, offset, fh):
        return self.union.read(self.files[fh], size, offset)

    def write(self, path, data, offset, fh):
        return self.union.write(self.files[fh], data, offset)

    def flush(self, path, fh):
        pass

    def release(self, path, fh):
        h = self.files.pop(fh, None)
        if h is not None:
            self.union.release(h)

    def fsync(self, path, datasync, fh):
        self.union.fsync(self.files[fh], datasync)

    def fallocate(self, path, mode, offset, size, fh):
        self.union.fallocate(self.files[fh], mode, offset, size)

    def lseek(self, path, offset, whence, fh):
        return self.union.lseek(self.files[fh], offset, whence)
