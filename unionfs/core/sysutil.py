"""Thin wrappers for the Linux system calls the os module lacks (renameat2, fallocate with modes,
openat2, sync_file_range, the FICLONE ioctl), and the way to name paths longer than PATH_MAX."""
import ctypes
import errno
import fcntl
import os
import stat

# the C library the interpreter runs on (dlopen(NULL)): ctypes.util.find_library would import
# subprocess, tempfile and shutil into every daemon for a name it already has (~2 MiB of RSS)
_libc = ctypes.CDLL(None, use_errno=True)

RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1
RENAME_WHITEOUT = 1 << 2
AT_FDCWD = -100

_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int

_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


def renameat2(src, dst, flags):
    """rename(2) with flags; raises OSError (EINVAL/ENOSYS where the filesystem lacks the flag)."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    if _renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src, None, dst)


_sync_file_range = _libc.sync_file_range
_sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_sync_file_range.restype = ctypes.c_int
SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd, offset, length):
    """Start writing a range of fd's dirty pages to disk, without waiting (sync_file_range
    SYNC_FILE_RANGE_WRITE): a later fsync then waits for less. Durability still needs fsync."""
    if _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def fallocate(fd, mode, offset, length):
    if _fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


# FICLONE = _IOW(0x94, 9, int): the same on x86_64 and aarch64 (fcntl.FICLONE from Python 3.12)
FICLONE = getattr(fcntl, "FICLONE", 0x40049409)


def clone_file(src_fd, dst_fd):
    """Make dst share all of src's extents (a reflink: xfs, btrfs, bcachefs...). OSError
    EOPNOTSUPP / EXDEV / EINVAL / ENOTTY where the filesystems cannot."""
    fcntl.ioctl(dst_fd, FICLONE, src_fd)


# openat2(2): resolve a path with no symlink anywhere in it, and never above dirfd.
_SYS_openat2 = 437  # x86_64 and aarch64 (the generic table)
O_PATH = 0o10000000
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_HOW = {}  # open flags -> byref(open_how)
_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))
_have_openat2 = True


def open_beneath(dirfd, rel, flags):
    """Open rel below dirfd without following any symlink (openat2 RESOLVE_BENEATH|NO_SYMLINKS).

    Where the kernel lacks openat2 (before 5.6), every component is opened with O_NOFOLLOW.
    """
    global _have_openat2
    if _have_openat2:
        how = _HOW.get(flags)
        if how is None:
            how = _HOW[flags] = ctypes.byref(_OpenHow(flags | os.O_CLOEXEC, 0,
                                                      RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS))
        # on every layer access: the arguments are made once (ctypes objects cost more than
        # the system call itself)
        fd = _syscall(_SYS_openat2, dirfd, os.fsencode(rel), how, _HOW_SIZE)
        if fd >= 0:
            return fd
        e = ctypes.get_errno()
        if e != errno.ENOSYS:
            raise OSError(e, os.strerror(e), rel)
        _have_openat2 = False
    fd = os.dup(dirfd)
    try:
        parts = [p for p in rel.split("/") if p]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            f = (flags if last else os.O_PATH | os.O_DIRECTORY) | os.O_NOFOLLOW | os.O_CLOEXEC
            nfd = os.open(part, f, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


# ---- paths longer than PATH_MAX --------------------------------------------------------------
# A merged path may be longer than PATH_MAX (a process can reach it with directory descriptors,
# and a layer's root may be longer than the mountpoint): joined to the layer root, it is too long
# for any system call. Such a path is opened step by step beneath the layer root and named
# through /proc/self/fd, which every call accepts.
PATH_LIMIT = 4000  # bytes; what is left of PATH_MAX (4096) is room for "/proc/self/fd/N/"
_CHUNK = 3000


def open_deep(dirfd, rel, flags):
    """open_beneath for a rel of any length: chunks of at most _CHUNK bytes, each opened beneath
    the directory the previous one opened (no symlinks, never above dirfd)."""
    parts = [p for p in rel.split("/") if p]
    fd, chunk, size = dirfd, [], 0
    try:
        while parts:
            part = parts.pop(0)
            chunk.append(part)
            size += len(os.fsencode(part)) + 1
            if parts and size < _CHUNK:
                continue
            nfd = open_beneath(fd, "/".join(chunk), flags if not parts else O_PATH | os.O_DIRECTORY)
            if fd != dirfd:
                os.close(fd)
            fd, chunk, size = nfd, [], 0
        return os.dup(dirfd) if fd == dirfd else fd
    except BaseException:
        if fd != dirfd:
            os.close(fd)
        raise


class Fd:
    """An open descriptor, closed when the last reference to this object goes (CPython frees it
    at once), so a path naming it can never outlive it and name a reused descriptor number."""
    __slots__ = ("fd",)

    def __init__(self, fd):
        self.fd = fd

    def __del__(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


class FdPath(str):
    """'/proc/self/fd/N/name': a path whose directory part is an open descriptor, held for as
    long as the string lives. N was opened beneath a layer root with no symlink on the way, so
    when the path is used only `name` is looked up, in that very directory: a directory swapped
    for a symlink meanwhile cannot lead the call anywhere else. Callers pass it with
    follow_symlinks=False / O_NOFOLLOW, so `name` itself is never followed either."""

    def __new__(cls, fd, name):
        self = super().__new__(cls, "/proc/self/fd/%d/%s" % (fd.fd, name))
        self.held = fd
        return self


def fd_path(dirfd, name):
    """An FdPath for `name` in the directory open as dirfd (an int the caller keeps open, or an
    Fd). '.' names the directory itself."""
    return FdPath(dirfd if isinstance(dirfd, Fd) else _Borrowed(dirfd), name)


class _Borrowed(Fd):
    """An fd owned elsewhere (a layer's root): never closed from here."""
    __slots__ = ()

    def __del__(self):
        pass


def short_path(dirfd, rel):
    """A path of fewer than PATH_MAX bytes for dirfd/rel: an FdPath whose directory is opened
    beneath dirfd step by step (no symlinks), whatever rel's length."""
    parent, _, name = rel.rpartition("/")
    if not parent:
        return fd_path(dirfd, name)
    return FdPath(Fd(open_deep(dirfd, parent, O_PATH | os.O_DIRECTORY)), name)


def lchmod(path, mode):
    """chmod that never follows a symlink at path (EOPNOTSUPP for a symlink, as the kernel)."""
    try:
        os.chmod(path, mode, follow_symlinks=False)
    except NotImplementedError:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)


def open_regular(path, flags):
    """open(2) of what must be a regular file, never following a symlink at path and never
    blocking on a FIFO or a device planted there; ELOOP / EINVAL for anything that is not a
    regular file."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def process_groups(pid):
    """The supplementary group ids of a process (empty if it is gone)."""
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()
