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
import struct
import time

# libfuse 3 (mfusepy would take libfuse 2 first when both are installed)
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # noqa: E402

from . import control, observe, which  # noqa: E402

_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
CACHE_TIMEOUT = 3600.0  # seconds the kernel may keep entries and attributes
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


_PIN_MAX = 64  # libfuse threads that keep a Python thread state (libfuse 3 runs at most 10)
_pinned = itertools.count()


class _FUSE(observe.Timed, mfusepy.FUSE):
    def _thread_start(self):
        """ctypes runs a callback from a thread Python did not start (every libfuse worker)
        inside PyGILState_Ensure/Release, which creates and destroys a Python thread state per
        call (an mmap, munmap and gettid each time): a null request's daemon CPU goes from 26
        to 14 us when each thread keeps its state (scripts/bench_floor.py; the single-threaded
        loop: 9). One Ensure never released keeps it for the thread's life; bounded, should
        libfuse recycle its threads (3.14 keeps at most 10)."""
        if next(_pinned) < _PIN_MAX:
            ctypes.pythonapi.PyGILState_Ensure()
            super()._thread_start()

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

    def open(self, path, fip):
        fi = fip.contents
        fi.fh = self.operations.open(_decode(self, path), fi.flags)
        fi.direct_io = fi.fh >= control.FH_BASE  # the control files: nothing cached, streams
        return 0

    # The hot paths below skip mfusepy's generic conversions (a dict per stat, a bytes copy
    # per read and write): stat fields are filled directly, data moves in place.

    def getattr_fuse_3(self, path, buf, fip):
        # libfuse hands a zeroed struct stat (fuse.c memsets it before calling getattr)
        if path is not None:
            path = path.decode(self.encoding, self.errors)
        _fill(buf.contents, *self.operations.stat(path, fip.contents.fh if fip else None))
        return 0

    def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):
        # Offset mode (each entry's offset is its index + 1 in the handle's snapshot): libfuse
        # passes readdirplus attributes to the kernel only in this mode.
        plus = bool(flags & _READDIR_PLUS)
        st = mfusepy.c_stat()
        fill_flags = _FILL_DIR_PLUS if plus else 0
        entries = self.operations.snapshot(_decode(self, path), _fh(fip), offset, plus)
        for i in range(offset, len(entries)):
            name, code, ino, full = entries[i]
            if plus and full is not None:
                _fill(st, *full)  # sets every field libfuse reads
            else:
                ctypes.memset(ctypes.byref(st), 0, _STAT_SIZE)
                st.st_mode = code
                st.st_ino = ino
            if filler(buf, name.encode(self.encoding, self.errors), st, i + 1, fill_flags):
                break
        return 0

    def create(self, path, mode, fip):
        # mfusepy's wrapper inspects the method's signature on every call
        fi = fip.contents
        fi.fh = self.operations.create(_decode(self, path), mode, fi.flags)
        return 0

    def opendir(self, path, fip):
        fi = fip.contents
        fi.fh = self.operations.opendir(_decode(self, path))
        # ask the kernel to keep the listing until the directory changes through the mount;
        # libfuse 3.14's high-level opendir passes only the handle on (README, Performance):
        # set anyway, for a libfuse that passes them
        fi.keep_cache = 1
        fi.cache_readdir = 1
        return 0

    def read(self, path, buf, size, offset, fip):
        target = (ctypes.c_char * size).from_address(ctypes.addressof(buf.contents))
        return self.operations.readinto(fip.contents.fh, target, offset)

    def write(self, path, buf, size, offset, fip):
        data = (ctypes.c_char * size).from_address(ctypes.addressof(buf.contents))
        return self.operations.write(None, data, offset, fip.contents.fh)


_STAT_SIZE = ctypes.sizeof(mfusepy.c_stat)
_READDIR_PLUS = 1     # enum fuse_readdir_flags: FUSE_READDIR_PLUS
_CAP_READDIRPLUS = 1 << 13       # fuse_common.h: FUSE_CAP_READDIRPLUS
_CAP_READDIRPLUS_AUTO = 1 << 14  # fuse_common.h: FUSE_CAP_READDIRPLUS_AUTO
_FILL_DIR_PLUS = 2    # enum fuse_fill_dir_flags: FUSE_FILL_DIR_PLUS


# struct stat on x86_64 / aarch64 Linux, packed in one call: dev, ino, nlink, mode, uid, gid,
# pad, rdev, size, blksize, blocks, atime, mtime, ctime (sec, nsec each)
_STAT_LAYOUT = ((0, "st_dev"), (8, "st_ino"), (16, "st_nlink"), (24, "st_mode"), (28, "st_uid"),
                (32, "st_gid"), (40, "st_rdev"), (48, "st_size"), (56, "st_blksize"),
                (64, "st_blocks"), (72, "st_atimespec"), (88, "st_mtimespec"),
                (104, "st_ctimespec"))
_STAT_PACK = struct.Struct("=QQQIII4xQqqqqqqqqq").pack_into
_PACKED = _STAT_SIZE == 144 and all(
    getattr(mfusepy.c_stat, name).offset == off for off, name in _STAT_LAYOUT)


def _fill(c, st, ino, nlink):
    """os.stat_result -> struct stat, with the union's inode number and link count."""
    if _PACKED:
        a, m, t = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        _STAT_PACK(c, 0, 0, ino, nlink, st.st_mode, st.st_uid, st.st_gid, st.st_rdev,
                   st.st_size, st.st_blksize, st.st_blocks, a // 1_000_000_000,
                   a % 1_000_000_000, m // 1_000_000_000, m % 1_000_000_000,
                   t // 1_000_000_000, t % 1_000_000_000)
        return
    c.st_mode = st.st_mode
    c.st_ino = ino
    c.st_nlink = nlink
    c.st_uid = st.st_uid
    c.st_gid = st.st_gid
    c.st_size = st.st_size
    c.st_rdev = st.st_rdev
    c.st_blocks = st.st_blocks
    c.st_blksize = st.st_blksize
    c.st_atimespec.tv_sec, c.st_atimespec.tv_nsec = divmod(st.st_atime_ns, 1_000_000_000)
    c.st_mtimespec.tv_sec, c.st_mtimespec.tv_nsec = divmod(st.st_mtime_ns, 1_000_000_000)
    c.st_ctimespec.tv_sec, c.st_ctimespec.tv_nsec = divmod(st.st_ctime_ns, 1_000_000_000)


def attrs(st, ino, nlink):
    return {
        "st_mode": st.st_mode, "st_ino": ino, "st_nlink": nlink, "st_uid": st.st_uid,
        "st_gid": st.st_gid, "st_size": st.st_size, "st_rdev": st.st_rdev,
        "st_blocks": st.st_blocks, "st_blksize": st.st_blksize,
        "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns,
    }


def _hidden(path):
    return (path is not None and ".fuse_hidden" in path
            and _HIDDEN.match(path.rpartition("/")[2]) is not None)


class FuseOps:
    use_ns = True

    def __init__(self, union, on_ready=None):
        self.union = union
        self.on_ready = on_ready
        self.files = {}
        self.dirs = {}
        self._dir_ids = itertools.count(_DIR_BASE)
        self.control = control.ControlDir(self)

    @staticmethod
    def _owner():
        uid, gid, _pid = mfusepy.fuse_get_context()
        return uid, gid

    def _guard(self, *paths):
        """The control directory cannot be changed."""
        for p in paths:
            if control.owns(p):
                self.control.refuse(p)

    def _orphan(self, path, fh):
        """The handle of a file libfuse has no path for (unlinked while open)."""
        return self.files.get(fh) if path is None and fh is not None else None

    # -- lifecycle
    def init_with_config(self, conn, config):
        """Kernel-side caching. Every change reaches the layers through this mount (changing
        them behind its back is unsupported, as for the kernel's overlayfs), and the union
        invalidates the kernel's copy of what changes under another name (hard links), so
        entries, attributes and pages can be kept long."""
        if conn is not None and conn.capable & _CAP_READDIRPLUS:
            # readdirplus for every chunk of a listing, not only the first (libfuse's "auto"
            # mode): the attributes are at hand, and each one saves the kernel a LOOKUP
            conn.want = (conn.want | _CAP_READDIRPLUS) & ~_CAP_READDIRPLUS_AUTO
        if config is not None:
            for name in ("entry_timeout", "attr_timeout"):
                if getattr(config, name) == 1.0:  # libfuse's default: not set by the user
                    setattr(config, name, CACHE_TIMEOUT)
            if config.negative_timeout == 0.0:
                config.negative_timeout = CACHE_TIMEOUT
            config.kernel_cache = 1
            config.use_ino = 1
        self.init("/")

    def init(self, path):
        fuse_ptr = ctypes.c_void_p(mfusepy._libfuse.fuse_get_context().contents.fuse)
        invalidate = mfusepy._libfuse.fuse_invalidate_path
        invalidate.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

        def drop_kernel_cache(paths):
            for p in paths:
                invalidate(fuse_ptr, os.fsencode(p))

        self.union.on_invalidate = drop_kernel_cache
        self.union.observer.context = lambda: mfusepy.fuse_get_context()[2]
        if self.on_ready:
            self.on_ready()

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
        st, ino, nlink = self.union.getattr(path)
        if _hidden(path):
            nlink += 1  # libfuse subtracts one for the hidden name it made
        return st, ino, nlink

    def getattr(self, path, fh=None):
        return attrs(*self.stat(path, fh))

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

    def readlink(self, path):
        return self.union.readlink(path)

    def statfs(self, path):
        s = self.union.statfs()
        return {k: getattr(s, k) for k in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_flag", "f_namemax")}

    # -- xattrs
    def getxattr(self, path, name, *args):
        if control.owns(path) or name.startswith(which.XATTR_PREFIX):
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

    # -- namespace
    def mkdir(self, path, mode):
        self._guard(path)
        self.union.mkdir(path, mode, self._owner())

    def mknod(self, path, mode, dev):
        self._guard(path)
        self.union.mknod(path, mode, dev, self._owner())

    def symlink(self, target, source):
        self._guard(target)
        self.union.symlink(target, source, self._owner())

    def link(self, target, source):
        self._guard(target, source)
        self.union.link(source, target)

    def unlink(self, path):
        self._guard(path)
        self.union.unlink(path)

    def rmdir(self, path):
        self._guard(path)
        self.union.rmdir(path)

    def rename(self, old, new, flags=0):
        self._guard(old, new)
        if not flags and _hidden(new):
            self.union.detach(old, new)  # libfuse hiding a file unlinked while open
        else:
            self.union.rename(old, new, flags)

    # -- directories
    def opendir(self, path):
        if control.owns(path):
            return self.control.opendir(path)
        node = self.union.resolve(path)
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        fh = next(self._dir_ids)
        self.dirs[fh] = [path, None, False]  # path, snapshot, snapshot has full stats
        return fh

    def snapshot(self, path, fh, offset, plus):
        """The listing a directory handle serves: taken whole at offset 0, so offsets stay
        stable for telldir/seekdir and a reader may delete entries as it goes."""
        if control.owns(path):
            return self.control.listdir(path, plus)
        d = self.dirs.get(fh)
        if d is None:
            return self.union.listdir(path, plus)
        if offset == 0 or d[1] is None or (plus and not d[2]):
            d[1] = self.union.listdir(d[0], plus)
            d[2] = plus
        return d[1]

    def readdir(self, path, fh):
        return [(name, {"st_mode": code, "st_ino": ino}, 0)
                for name, code, ino, _ in self.snapshot(path, fh, 0, False)]

    def releasedir(self, path, fh):
        self.dirs.pop(fh, None)

    def fsyncdir(self, path, datasync, fh):
        pass

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

    def read(self, path, size, offset, fh):
        return self.union.read(self.files[fh], size, offset)

    def readinto(self, fh, buf, offset):
        if fh >= control.FH_BASE:
            return self.control.readinto(fh, buf, offset)
        return self.union.readinto(self.files[fh], buf, offset)

    def write(self, path, data, offset, fh):
        h = self.files[fh]
        if not h.written:
            self.union.first_write(h, *mfusepy.fuse_get_context())
        return self.union.write(h, data, offset)

    def flush(self, path, fh):
        pass

    def release(self, path, fh):
        h = self.files.pop(fh, None)
        if h is not None:
            self.union.release(h)
        elif fh >= control.FH_BASE:
            self.control.release(fh)

    def fsync(self, path, datasync, fh):
        self.union.fsync(self.files[fh], datasync)

    def fallocate(self, path, mode, offset, size, fh):
        self.union.fallocate(self.files[fh], mode, offset, size)

    def lseek(self, path, offset, whence, fh):
        return self.union.lseek(self.files[fh], offset, whence)
