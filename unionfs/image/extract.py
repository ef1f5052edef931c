"""Safe extraction of one layer tar into an empty directory (the layer's lower-layer tree).

Safety: every path is built component by component from a directory fd opened with
``O_NOFOLLOW``, and every file is created with ``O_EXCL|O_NOFOLLOW`` (or ``mkdirat``/``symlinkat``/
``linkat``/``mknodat``, none of which follow a final symlink), so no entry can write through a
symlink or a hard link that an earlier entry placed. Refused, with a one-line ImageError: absolute
names and names with ``..``; a parent that is a symlink or a file; hard links to names outside the
layer, to names not extracted earlier in this layer, or to directories; a second entry for a name
(a directory entry may repeat: it only sets attributes); a bare ``.wh.``.

Kept as they are (unionfs reads them natively): ``.wh.<name>`` whiteouts and ``.wh..wh..opq``
opaque markers, extracted as empty regular files whatever type, size or link name their header
carries (real tools write whiteouts with a stray link name and opaque markers with mode 0755).
aufs metadata (``.wh..wh.plnk``, ``.wh..wh.aufs`` ...) is skipped, as docker does.

Preserved: data (sparse files included), modes (setuid/setgid/sticky), ownership, device nodes,
symlinks, hard links, FIFOs, mtimes to the nanosecond when a PAX record gives them, and xattrs from
``SCHILY.xattr.*`` PAX records (``security.capability`` included).
``trusted.overlay.*`` / ``user.overlay.*`` xattrs are dropped: in a lower layer they would be read
as overlay markers (opaque, redirect), which an image layer must not be able to plant; so are the
names unionfs keeps owners and capabilities in (ids.py), which only the import may write.

Without root, nothing is lost either: every entry's owner, mode and, where it can't be made, type
go to ``user.containers.override_stat`` (``uid:gid:mode[:type]``, ids.py), which image mounts
read. The entry on disk is the importing user's, with its owner's read/write (and search) bits
and no setuid/setgid/sticky bit. Device nodes, and FIFOs and symlinks of another owner (their
inodes can't carry ``user.*`` xattrs), are regular files: empty, or holding the link's target.
``security.capability`` goes to ``user.unionfs.security.capability``. Result.owners says which
way the layer was written ("xattr" or "real"); the store records it (meta.json "owners").

What a member says and the copying of its data are in tarmember.py. This module stays at about
420 lines because it is one Extractor whose methods are the entry types, each beside the rule
that makes it safe; split further, a rule would sit apart from the call it guards.
"""
import errno
import os
import stat
import sys
import tarfile

from ..core import ids
from ..core import whiteout as wo
from .errors import ImageError
from .tarmember import DataCopier, mtime_ns, normalize, pwrite_all, xattrs_of

DIRFLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Result:
    def __init__(self):
        self.entries = 0
        self.size = 0          # bytes of regular-file content (a sparse file's full size)
        self.data = 0          # bytes of it written (a sparse file's holes are not)
        self.dropped_xattrs = 0
        self.xattr_errors = 0
        self.owners = "real"   # "xattr": owners, modes, types in override xattrs (not root)


class Extractor:
    """Extract tar entries under root (an existing, empty directory)."""

    def __init__(self, root, what="layer", as_root=None):
        self.root = root
        self.what = what
        self.rootfd = os.open(root, DIRFLAGS)
        # as_root=False: as without root (owners in xattrs), for tests run as root
        self.is_root = os.geteuid() == 0 if as_root is None else as_root
        self.me = (os.geteuid(), os.getegid())
        self.seen = {}         # name -> 'dir' | 'implicit' | 'file' (non-dir)
        self.dir_attrs = {}    # name -> tarinfo of explicit directory entries
        self.result = Result()
        self.copier = None     # DataCopier of the tar being read
        if not self.is_root:
            self.result.owners = "xattr"

    def close(self):
        os.close(self.rootfd)

    def fail(self, name, msg):
        raise ImageError("%s: entry %s: %s" % (self.what, name or ".", msg))

    # ---- paths ----------------------------------------------------------------------------

    def _open_parent(self, name, create=True):
        """(fd of the parent directory, final component). Missing parents are created (0755)."""
        parts = name.split("/")
        fd = os.dup(self.rootfd)
        cur = ""
        try:
            for comp in parts[:-1]:
                cur = cur + "/" + comp if cur else comp
                try:
                    nfd = os.open(comp, DIRFLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    self.seen[cur] = "implicit"
                    nfd = os.open(comp, DIRFLAGS, dir_fd=fd)
                    if not self.is_root:   # as root makes it: 0:0, 0755
                        self._override(nfd, cur, 0, 0, 0o755)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        self.fail(name, "parent %s is not a directory (a symlink or file placed "
                                        "by an earlier entry)" % cur)
                    raise
                os.close(fd)
                fd = nfd
            return fd, parts[-1]
        except BaseException:
            os.close(fd)
            raise

    # ---- entries ----------------------------------------------------------------------------

    def add(self, tar, ti):
        name = normalize(ti.name, "%s: entry" % self.what)
        if name == "":
            if not ti.isdir():
                self.fail(name, "the layer root is not a directory")
            self.dir_attrs[""] = ti
            return
        base = name.rpartition("/")[2]
        if any(c.startswith(wo.WH_META) and c != wo.WH_OPAQUE for c in name.split("/")):
            return  # aufs metadata (.wh..wh.plnk ...) and what is in it: meaningless here
        if base == wo.WH_PREFIX:
            self.fail(name, "bare whiteout '.wh.' names nothing")
        if any(c.startswith(wo.WH_PREFIX) for c in name.split("/")[:-1]):
            self.fail(name, "an entry inside a whiteout")
        prev = self.seen.get(name)
        if prev is not None:
            if ti.isdir() and prev in ("dir", "implicit") and not base.startswith(wo.WH_PREFIX):
                self.dir_attrs[name] = ti
                self.seen[name] = "dir"
                return
            self.fail(name, "duplicate entry")
        self.result.entries += 1
        pfd, leaf = self._open_parent(name)
        try:
            if base.startswith(wo.WH_PREFIX):
                self._whiteout(pfd, leaf, name, ti)
            elif ti.isdir():
                try:
                    os.mkdir(leaf, 0o700, dir_fd=pfd)
                except FileExistsError:
                    self.fail(name, "duplicate entry")
                self.seen[name] = "dir"
                self.dir_attrs[name] = ti
                self._xattrs(pfd, leaf, name, ti)
            elif ti.islnk():
                self._hardlink(pfd, leaf, name, ti)
            elif ti.issym() and self._as_file(ti):
                self._file(pfd, leaf, name, ti, stat.S_IFLNK, data=os.fsencode(ti.linkname))
            elif ti.issym():
                os.symlink(ti.linkname, leaf, dir_fd=pfd)
                self.seen[name] = "file"
                self._owner(pfd, leaf, ti)
                self._xattrs(pfd, leaf, name, ti)
                os.utime(leaf, ns=(mtime_ns(ti), mtime_ns(ti)), dir_fd=pfd, follow_symlinks=False)
            elif ti.ischr() or ti.isblk():
                self._device(pfd, leaf, name, ti)
            elif ti.isfifo() and self._as_file(ti):
                self._file(pfd, leaf, name, ti, stat.S_IFIFO)
            elif ti.isfifo():
                os.mkfifo(leaf, 0o600, dir_fd=pfd)
                self.seen[name] = "file"
                self._finish_special(pfd, leaf, name, ti)
            elif ti.isreg():
                self._regular(tar, pfd, leaf, name, ti)
            else:
                self.fail(name, "unsupported entry type %r" % ti.type)
        except FileExistsError:
            self.fail(name, "duplicate entry")
        except OSError as e:
            self.fail(name, e.strerror or str(e))
        finally:
            os.close(pfd)

    def _whiteout(self, pfd, leaf, name, ti):
        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            self.seen[name] = "file"
            if self.is_root:
                os.fchown(fd, ti.uid, ti.gid)
            os.fchmod(fd, stat.S_IMODE(ti.mode))
            os.utime(fd, ns=(mtime_ns(ti), mtime_ns(ti)))
        finally:
            os.close(fd)

    def _regular(self, tar, pfd, leaf, name, ti):
        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            self.seen[name] = "file"
            if ti.sparse is not None:
                self._sparse(tar, fd, name, ti)
            else:
                self._copy(tar, fd, name, ti, [(0, ti.size)])
            self.result.size += ti.size
            self._finish_fd(fd, name, ti)
        finally:
            os.close(fd)

    def _copy(self, tar, fd, name, ti, segments):
        """The member's stored data, from the tar, to the (offset, length) segments of fd."""
        if self.copier is None or self.copier.f is not tar.fileobj:
            self.copier = DataCopier(tar.fileobj)
        n = self.copier.copy(ti.offset_data, fd, segments)
        self.result.data += n
        if n != sum(k for _, k in segments):
            self.fail(name, "truncated file data")

    def _sparse(self, tar, fd, name, ti):
        """A sparse member (GNU 'S', PAX 0.0/0.1/1.0: tarfile reads the map of each into
        ti.sparse, the full size into ti.size). Its stored data is its segments one after the
        other: each is written at its offset, the holes are left as holes, and the file is cut
        to its full size, so a 1 TiB file of holes costs what its data does. (tarfile's own
        reader of sparse members makes the holes up as zeros, and trusts the map's order.)"""
        segments = [(o, n) for o, n in ti.sparse if n]   # GNU pads its maps with (x, 0)
        if not 0 <= ti.size < 1 << 63:
            self.fail(name, "sparse file size %d out of range" % ti.size)
        end = 0
        for offset, n in segments:
            if offset < end or n < 0 or offset + n > ti.size:
                self.fail(name, "sparse map out of order or past the file's size %d" % ti.size)
            end = offset + n
        self._copy(tar, fd, name, ti, segments)
        os.ftruncate(fd, ti.size)

    def _finish_fd(self, fd, name, ti, fmt=None, rdev=0):
        """Owner, mode, xattrs and mtime of a regular file (or, without root, of the file that
        stands for an entry of type fmt, device number rdev)."""
        if self.is_root:
            os.fchown(fd, ti.uid, ti.gid)
            os.fchmod(fd, stat.S_IMODE(ti.mode))  # after chown, which clears setuid/setgid
        else:
            os.fchmod(fd, _stored_mode(ti.mode, 0o600))
            mode = 0o777 if fmt == stat.S_IFLNK else ti.mode  # what lstat shows of a symlink
            self._override(fd, name, ti.uid, ti.gid, mode, fmt, rdev)
        for k, v in self._wanted_xattrs(ti):
            self._setx(lambda: os.setxattr(fd, k, v), name, k)
        t = mtime_ns(ti)
        os.utime(fd, ns=(t, t))

    # ---- without root: owners, modes and types in xattrs (ids.py) ---------------------------

    def _as_file(self, ti):
        """Must this FIFO or symlink be kept as a regular file? Only without root, and only if it
        is another's or has a special mode bit (its inode can't carry user.* xattrs)."""
        if self.is_root:
            return False
        special = ti.isfifo() and ti.mode & 0o7000
        return (ti.uid, ti.gid) != self.me or bool(special)

    def _file(self, pfd, leaf, name, ti, fmt, rdev=0, data=b""):
        """Without root: an entry of type fmt as a regular file holding data, its type in the
        override xattr."""
        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            self.seen[name] = "file"
            pwrite_all(fd, data, 0)
            self._finish_fd(fd, name, ti, fmt, rdev)
        finally:
            os.close(fd)

    def _override(self, fd, name, uid, gid, mode, fmt=None, rdev=0):
        value = ids.format_override(uid, gid, mode, fmt, rdev)
        self._setx(lambda: os.setxattr(fd, ids.OVERRIDE[2], value), name, ids.OVERRIDE[2])

    def _finish_special(self, pfd, leaf, name, ti):
        self._owner(pfd, leaf, ti)
        self._chmod_at(pfd, leaf, ti)
        self._xattrs(pfd, leaf, name, ti)
        t = mtime_ns(ti)
        os.utime(leaf, ns=(t, t), dir_fd=pfd, follow_symlinks=False)

    @staticmethod
    def _chmod_at(pfd, leaf, ti):
        # the entry was just created by us and is not a symlink: chmod through an O_PATH fd
        fd = os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            os.chmod("/proc/self/fd/%d" % fd, stat.S_IMODE(ti.mode))
        finally:
            os.close(fd)

    def _owner(self, pfd, leaf, ti):
        if self.is_root:
            os.chown(leaf, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)

    def _wanted_xattrs(self, ti):
        out = []
        for k, v in sorted(xattrs_of(ti).items()):
            if wo.is_interpreted_xattr(k):  # only the daemon and the import write those
                self.result.dropped_xattrs += 1
                continue
            if k == ids.CAP and not self.is_root:
                k = ids.CAP_STORE   # only CAP_SETFCAP may set it
            out.append((k, v))
        return out

    def _setx(self, fn, name, key):
        try:
            fn()
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
                self.result.xattr_errors += 1
                if self.result.xattr_errors == 1:
                    print("unionfs: warning: %s: cannot set xattr %s on %s (%s); further such "
                          "xattrs are skipped silently" % (self.what, key, name, e.strerror),
                          file=sys.stderr)
                return
            raise

    def _xattrs(self, pfd, leaf, name, ti):
        wanted = self._wanted_xattrs(ti)
        if not wanted:
            return
        path = "/proc/self/fd/%d/%s" % (pfd, leaf)
        for k, v in wanted:
            self._setx(lambda: os.setxattr(path, k, v, follow_symlinks=False), name, k)

    def _device(self, pfd, leaf, name, ti):
        kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK
        if not self.is_root:
            self._file(pfd, leaf, name, ti, kind, os.makedev(ti.devmajor, ti.devminor))
            return
        os.mknod(leaf, kind | 0o600, os.makedev(ti.devmajor, ti.devminor), dir_fd=pfd)
        self.seen[name] = "file"
        self._finish_special(pfd, leaf, name, ti)

    def _hardlink(self, pfd, leaf, name, ti):
        target = normalize(ti.linkname, "%s: hard link %s ->" % (self.what, name))
        kind = self.seen.get(target)
        if target == "" or kind in ("dir", "implicit"):
            self.fail(name, "hard link to a directory (%s)" % (ti.linkname or "."))
        if kind is None:
            self.fail(name, "hard link to %s, which no earlier entry of the layer created"
                      % ti.linkname)
        tfd, tleaf = self._open_parent(target, create=False)
        try:
            os.link(tleaf, leaf, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            self.fail(name, "hard link to %s, which no earlier entry of the layer created"
                      % ti.linkname)
        finally:
            os.close(tfd)
        self.seen[name] = "file"

    def finish(self):
        """Directory attributes last (deepest first), so their mtimes and modes stick."""
        if "" not in self.dir_attrs and not self.is_root:
            # no entry for the layer root: as root extracts it, owned by 0:0
            self._override(self.rootfd, "", 0, 0, stat.S_IMODE(os.fstat(self.rootfd).st_mode))
        for name in sorted(self.dir_attrs, key=lambda n: -n.count("/") - (1 if n else 0)):
            ti = self.dir_attrs[name]
            if name == "":
                fd = os.dup(self.rootfd)
            else:
                pfd, leaf = self._open_parent(name, create=False)
                try:
                    fd = os.open(leaf, DIRFLAGS, dir_fd=pfd)
                finally:
                    os.close(pfd)
            try:
                if name == "":
                    for k, v in self._wanted_xattrs(ti):
                        self._setx(lambda: os.setxattr(fd, k, v), name, k)
                if self.is_root:
                    os.fchown(fd, ti.uid, ti.gid)
                    os.fchmod(fd, stat.S_IMODE(ti.mode))
                else:
                    os.fchmod(fd, _stored_mode(ti.mode, 0o700))
                    self._override(fd, name, ti.uid, ti.gid, ti.mode)
                t = mtime_ns(ti)
                os.utime(fd, ns=(t, t))
            finally:
                os.close(fd)


def _stored_mode(mode, owner_bits):
    """Without root, the mode on disk: the owner (the importing user, who serves the layer) may
    read and write (and search), and no setuid/setgid/sticky bit is left on a file of the
    user's; the real mode is in the override xattr."""
    return (stat.S_IMODE(mode) & 0o777) | owner_bits


# what tarfile raises on headers it cannot parse, besides TarError (numbers too long for int(),
# a GNU 1.0 sparse map without its lines, ...); targuard.py refuses most of them before
_TAR_ERRORS = (tarfile.TarError, EOFError, ValueError, OverflowError, RecursionError)


def extract_tar(tar_path, root, what="layer"):
    """Extract the (uncompressed) tar at tar_path into the empty directory root. Returns Result."""
    ex = Extractor(root, what)
    try:
        try:
            tar = tarfile.open(tar_path, mode="r:", encoding="utf-8", errors="surrogateescape")
        except _TAR_ERRORS as e:
            raise ImageError("%s: not a tar archive (%s)" % (what, e))
        with tar:
            while True:
                try:
                    ti = tar.next()
                except _TAR_ERRORS as e:
                    raise ImageError("%s: corrupt tar (%s)" % (what, e))
                if ti is None:
                    break
                tar.members.clear()     # entries are not looked up again: keep memory flat
                try:
                    ex.add(tar, ti)
                except _TAR_ERRORS as e:    # also numbers no system call takes (a time, an id)
                    raise ImageError("%s: corrupt tar (%s)" % (what, e))
        try:
            ex.finish()
        except (ValueError, OverflowError) as e:
            raise ImageError("%s: corrupt tar (%s)" % (what, e))
        return ex.result
    finally:
        ex.close()
