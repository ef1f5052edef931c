"""Copy-up: one entry atomically into the upper layer through the work directory (`Copier`), and
its orchestration for the union (`CopyUpOps`: ancestors first, under the write lock, then the
cache and the kernel told and lower handles reopened on the copy).

Order (that of the kernel's fs/overlayfs/copy_up.c, adapted to what userspace can do):
a temporary entry is made in ``WORK/work``; file data is cloned where the filesystems can share
extents (FICLONE: a reflink on xfs or btrfs, lower and upper on one filesystem), else copied
(holes stay holes: SEEK_DATA/SEEK_HOLE, then copy_file_range, then read/write) and fsync'd
(unless ``volatile``); owner, then mode (a chown from userspace clears setuid bits and file
capabilities, so it must come first); then every xattr (``security.capability`` after the data
and the chown, which would drop it); the original inode number for a stable ``st_ino``; then
times; one ``rename`` publishes the complete entry. A daemon killed at any point leaves either
the lower version visible or the whole copy; leftovers in ``WORK/work`` are removed at the next
mount (``clean``).

Why a clone is not fsync'd (nor is a file with no data): it writes no data through the page
cache, only metadata, and the journal (xfs) or the transaction (btrfs) commits that metadata in
order, so a rename that survives a machine crash finds the clone before it complete. The kernel's
ovl_copy_up_file skips its fsync after a clone for the same reason. Copied data is fsync'd before
the rename, one copy-up at a time: every copy-up is published before its request returns, so
there is no burst to batch without publishing a file whose data may not be on disk yet
(docs/performance.md has the measurement).

`Copier` is given parents already copied and is called under the union's write lock.
"""
import errno
import itertools
import os
import shutil
import stat

from . import whiteout as wo
from .ids import IdMapper
from .namei import err, split
from .sysutil import O_PATH, clone_file, fd_path, open_regular, start_writeback

_CHUNK = 1 << 20
# a copy that will be fsync'd starts the disk writing every 8 MiB it copied, so the fsync that
# follows waits for the tail only (256 MiB here: 0.14-0.17 s against 0.21-0.78 s)
_WRITEBACK_STEP = 8 << 20
_FALLBACK = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF)
# what FICLONE answers when this pair of filesystems can never clone (EINVAL may be one file's)
_NO_CLONE = (errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS, errno.EBADF)


def _copy_range(src, dst, off, length, writeback):
    end = off + length
    use_cfr = True
    step = _WRITEBACK_STEP if writeback else 1 << 30
    while off < end:
        n = 0
        if use_cfr:
            try:
                n = os.copy_file_range(src, dst, min(end - off, step), off, off)
            except OSError as e:
                if e.errno not in _FALLBACK:
                    raise
                use_cfr = False
                continue
        else:
            buf = os.pread(src, min(_CHUNK, end - off), off)
            if buf:
                n = os.pwrite(dst, buf, off)
        if n <= 0:
            break  # the source shrank under us; the final ftruncate sets the size
        if writeback:
            start_writeback(dst, off, n)
        off += n


def clone_data(src, dst, size):
    """Make fd dst share fd src's extents (holes stay holes), `size` bytes long. True if done;
    False if this file cannot be cloned; OSError with one of _NO_CLONE if no file of its
    filesystem can be cloned to dst's."""
    try:
        clone_file(src, dst)
    except OSError as e:
        if e.errno == errno.EINVAL:     # this file only (btrfs: one of the two is nodatasum)
            return False
        raise
    if os.fstat(dst).st_size != size:
        os.ftruncate(dst, size)
    return True


def copy_data(src, dst, size, writeback=False):
    """Copy `size` bytes from fd src to fd dst, skipping holes. True if any byte was written
    (it is then in the page cache, to be fsync'd); `writeback`: start writing it to disk as it
    is copied (when an fsync follows and the file is larger than one step)."""
    off = 0
    wrote = False
    while off < size:
        try:
            data = os.lseek(src, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data, hole = off, size
        else:
            hole = os.lseek(src, data, os.SEEK_HOLE)
        if data >= size:
            break
        _copy_range(src, dst, data, min(hole, size) - data,
                    writeback and size > _WRITEBACK_STEP)
        wrote = True
        off = hole
    if not wrote or os.fstat(dst).st_size != size:
        os.ftruncate(dst, size)     # a trailing hole (or a source that shrank): one more change
    return wrote


def copy_xattrs(src, dst, skip=wo.READ_PREFIXES):
    """Copy every xattr except overlay-private ones; a namespace the target refuses is skipped."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        if name.startswith(skip):
            continue
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as e:
            # user.* is not allowed on symlinks and special files; an upper without a namespace
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENODATA):
                continue
            raise


class Copier:
    """Makes entries in the work dir and publishes them into the upper layer."""

    def __init__(self, workdir, writer, sync=True, ids=None):
        self.workdir = workdir
        self.writer = writer
        self.sync = sync
        # who owns what is stored: plain chown/chmod unless the mount maps ids or keeps
        # owners in an xattr
        self.ids = ids if ids is not None else IdMapper(xattr_permissions=0)
        self._seq = itertools.count()
        self._tag = "#unionfs.%x." % os.getpid()
        self._workfd = -1
        self._no_clone = set()   # st_dev of the lowers whose files cannot be cloned to the upper

    def temp(self):
        """A new name in the work dir, as a path through the work dir's fd (see clean)."""
        if self._workfd < 0:
            self._workfd = os.open(self.workdir, O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                   | os.O_CLOEXEC)
        return fd_path(self._workfd, "%s%x" % (self._tag, next(self._seq)))

    def clean(self):
        """Remove what an interrupted copy-up, rename or rmdir left in the work dir."""
        try:
            st = os.lstat(self.workdir)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            # never follow a planted symlink (or use a file) where the work dir belongs
            os.unlink(self.workdir)
            st = None
        if st is None:
            os.mkdir(self.workdir, 0o700)
        # held for the mount's life: temp names are made in this very directory
        fd = os.open(self.workdir, O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        if self._workfd >= 0:
            os.close(self._workfd)
        self._workfd = fd
        for name in os.listdir(fd_path(fd, ".")):
            discard(fd_path(fd, name))

    def copy(self, src, st, dst, data=True, origin_ino=None):
        """Copy the entry at real path src (lstat st) to real path dst, atomically."""
        tmp = self.temp()
        try:
            self._make(src, st, tmp, data)
            copy_xattrs(src, tmp)
            if origin_ino is not None:
                self.writer.set_origin_ino(tmp, origin_ino)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            os.rename(tmp, dst)
        except BaseException:
            discard(tmp)
            raise

    def _make(self, src, st, tmp, data):
        mode = st.st_mode
        if stat.S_ISREG(mode):
            sfd = open_regular(src, os.O_RDONLY) if data else -1
            try:
                dfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    # a clone, or a file with no data, has nothing to flush (the docstring)
                    if data and not self._clone(sfd, dfd, st):
                        if copy_data(sfd, dfd, st.st_size, self.sync) and self.sync:
                            os.fsync(dfd)
                finally:
                    os.close(dfd)
            finally:
                if sfd >= 0:
                    os.close(sfd)
            self._own(tmp, st)
        elif stat.S_ISDIR(mode):
            os.mkdir(tmp, 0o700)
            self._own(tmp, st)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), tmp)
            self._own(tmp, st)
        else:
            os.mknod(tmp, mode, st.st_rdev)
            self._own(tmp, st)

    def _clone(self, sfd, dfd, st):
        if st.st_size == 0 or st.st_dev in self._no_clone:
            return False
        try:
            return clone_data(sfd, dfd, st.st_size)
        except OSError as e:
            if e.errno not in _NO_CLONE:
                raise
            self._no_clone.add(st.st_dev)   # one failed ioctl per lower, not one per copy-up
            return False

    def _own(self, tmp, st):
        """Owner, then mode (a chown clears setuid bits). Where the daemon may not chown (not
        root), the owner and mode are kept in the override xattr instead (ids.IdMapper)."""
        self.ids.chown(tmp, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        if not stat.S_ISLNK(st.st_mode):
            self.ids.chmod(tmp, st.st_mode)


def discard(path):
    """Remove a work-dir entry of any type, quietly."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)  # rmtree never follows symlinks inside
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


class CopyUpOps:
    """Copy-up orchestration, a mixin of `union.Union` (why: union.py's docstring): parents
    first, under the write lock, the cache and the kernel told, lower handles reopened."""

    def copy_up(self, path, data=True):
        """Copy a merged entry (parents first) into the upper layer; returns its new Node."""
        self._writable(path)
        with self.wlock:
            node = self.resolve(path)
            if node.in_upper:
                return node
            if path in self._orphans:
                raise err(errno.ENOENT, path)  # unlinked while open: no name to copy up to (the kernel: ENOENT)
            parent = split(path)[0]
            self._upper_dir(parent)
            layer, rel, hit = node.comps[0]
            # as the kernel: a file with other lower names gets an inode number of its own
            # (its copy-up breaks the link), any other entry keeps the lower's
            origin = None if node.is_dir or hit.st.st_nlink > 1 else self.ino_of(node)
            t0 = self.observer.clock()
            pst = os.lstat(self.upper.real(parent[1:]))
            self.copier.copy(layer.real(rel), hit.st, self.upper.real(path[1:]), data, origin)
            # as the kernel: a copy-up leaves the parent's times as they were
            os.utime(self.upper.real(parent[1:]), ns=(pst.st_atime_ns, pst.st_mtime_ns),
                     follow_symlinks=False)
            self.stats["copyups"] += 1
            if data and stat.S_ISREG(hit.st.st_mode):
                self.stats["copyup_bytes"] += hit.st.st_size
            self.observer.copied_up(path, layer, hit, data, t0)
            self.cache.forget(path)
            if self.on_invalidate is not None:
                # the entry's link count (a directory now merged), ctime and perhaps st_ino
                # changed, and its parent's ctime: also when the request named another path
                self.on_invalidate([path, parent], False)
            new = self.resolve(path)
            if origin is not None or node.is_dir:
                new.ino = node.ino
            self._reopen_handles(path, new)
            return new

    def _copy_tree_up(self, path):
        """Copy a merged directory and all it shows into the upper, so that it can move without
        a redirect (redirect_dir=off; what container storage needs, as it builds layers from
        the upper and knows no redirects). Its whiteouts stay until it has moved."""
        stack = [path]
        while stack:
            d = stack.pop()
            self._upper_dir(d)
            base = d if d != "/" else ""
            for name, _code, _ino, _full in self.listdir(d)[2:]:
                child = base + "/" + name
                cnode = self.resolve(child)
                if cnode.is_dir:
                    if cnode.has_lower:
                        stack.append(child)
                elif not cnode.in_upper:
                    self.copy_up(child)
        return self.resolve(path)

    def _copied_up(self, path):
        self._writable(path)
        node = self.resolve(path)
        return node if node.in_upper else self.copy_up(path)

    def _upper_dir(self, path):
        node = self.resolve(path)
        if not node.is_dir:
            raise err(errno.ENOTDIR, path)
        return node if node.in_upper else self.copy_up(path)

    def _reopen_handles(self, path, node):
        """Readers that opened the lower file now read the upper copy, as on the kernel."""
        handles = self._lower_handles.pop(path, ())
        for h in handles:
            fd = open_regular(self.real(node), os.O_RDONLY)
            os.dup2(fd, h.fd)
            os.close(fd)
            h.lower = False
