"""The union: every operation on merged paths, FUSE-free. Owns locking and cache invalidation.

Merged paths are absolute strings ('/' is the root). Errors are raised as OSError(errno), exactly
as the kernel's overlayfs would return them. Any change of the namespace or of an entry's layer
runs under one write lock (copy-ups included, so two writers of one lower file cause one copy-up);
reads run without it, through the resolution cache.
"""
import errno
import os
import stat
import threading

from . import readdir
from . import whiteout as wo
from .cache import NEGATIVE, ResolutionCache
from .copyup import Copier, discard
from .ids import IdMapper
from .layers import Hit, Layer, LowerLayer
from .namei import Node, check_name, lower_positive, resolve_child, resolve_root
from ..observe import Observer
from .sysutil import (RENAME_EXCHANGE, RENAME_NOREPLACE, fallocate, fd_path, open_regular,
                      process_groups, renameat2)

_INO_BITS = 48


def _err(code, path=None):
    return OSError(code, os.strerror(code), path)


def _kill_suid(fd):
    mode = os.fstat(fd).st_mode
    kill = stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0)
    if mode & kill:
        os.fchmod(fd, stat.S_IMODE(mode) & ~kill)


def split(path):
    parent, _, name = path.rpartition("/")
    return parent or "/", name


class Handle:
    """An open file: the real fd, the merged inode number, and whether it still reads a lower."""
    __slots__ = ("fd", "ino", "path", "lower", "written")

    def __init__(self, fd, ino, path, lower):
        self.fd = fd
        self.ino = ino
        self.path = path
        self.lower = lower
        self.written = False


class Union:
    def __init__(self, lowers, upper=None, work=None, redirect_dir=True, sync=True,
                 cache_entries=200_000, userxattr=False, ids=None):
        layers = []
        # the upper's format: recorded at its first mount, from what this process may do
        self.writer = (wo.choose_writer(work, upper, userxattr) if upper is not None
                       else wo.Writer())
        if upper is not None:
            layers.append(Layer(upper, 0, self.writer.prefixes, oci=self.writer.form == "oci"))
        for root in lowers:
            layers.append(LowerLayer(root, len(layers)))
        self.layers = layers
        self.upper = layers[0] if upper is not None else None
        # without xattrs a redirect cannot be recorded: renamed directories are copied up whole
        self.redirect_dir = redirect_dir and self.writer.can_redirect
        self.ids = ids if ids is not None else IdMapper()
        self.copier = (Copier(os.path.join(work, "work"), self.writer, sync, self.ids)
                       if upper else None)
        self.cache = ResolutionCache(cache_entries)
        self.wlock = threading.RLock()
        self._devs = {}
        for layer in layers:
            self._devs.setdefault(layer.dev, len(self._devs))
        self._lower_handles = {}
        # on_invalidate(paths, pages=True), set by the FUSE adapter: the kernel's cached
        # attributes (and pages) of merged paths the union changed besides the path a request
        # named: the other names of a hard link (the FUSE server gives every name its own
        # kernel inode; _aliases, keyed by the upper inode, only for nlink > 1), and every
        # entry copied up (an ancestor's nlink and ctime, a file's link count).
        self.on_invalidate = None
        self._aliases = {}
        # Files unlinked while open: alias -> Node. The name is gone from the namespace, but the
        # open file must still answer fstat/fchmod/ftruncate under the alias the server gives it.
        self._orphans = {}
        if self.copier is not None:
            self.copier.clean()  # what a crash left in WORK/work goes before anything is served
        self._work_layer = Layer(self.copier.workdir, -1) if self.copier else None
        self.root = resolve_root(layers)
        self.stats = {"copyups": 0, "copyup_bytes": 0, "whiteouts": 0}
        self.observer = Observer(self)  # counters and the event stream (unionfs/observe.py)

    # ---- resolution -------------------------------------------------------------------------

    def lookup(self, path):
        """Node for a merged path, or None. Raises ENOTDIR/ENAMETOOLONG as the kernel would."""
        if path == "/":
            return self.root
        if self._orphans:
            orphan = self._orphans.get(path)
            if orphan is not None:
                return orphan
        v = self.cache.get(path)
        if v is not None:
            return None if v is NEGATIVE else v
        gen = self.cache.generation
        parent_path, name = split(path)
        parent = self.lookup(parent_path)
        if parent is None:
            raise _err(errno.ENOENT, path)
        if not parent.is_dir:
            raise _err(errno.ENOTDIR, path)
        check_name(name)
        node = resolve_child(self.layers, parent, name)
        self.observer.resolved(node)
        self.cache.put(path, NEGATIVE if node is None else node, gen)
        return node

    def resolve(self, path):
        node = self.lookup(path)
        if node is None:
            raise _err(errno.ENOENT, path)
        return node

    def _map_ino(self, st):
        idx = self._devs.get(st.st_dev)
        if idx is None:
            with self.wlock:
                idx = self._devs.setdefault(st.st_dev, len(self._devs))
        if len(self._devs) == 1:
            return st.st_ino
        return (idx << _INO_BITS) | (st.st_ino & ((1 << _INO_BITS) - 1))

    def ino_of(self, node):
        """st_ino of a merged entry: stable across copy-up (origin) and remounts, unique in the mount."""
        if node.ino is None:
            layer, rel, hit = node.comps[0]
            if node.is_dir:
                node.ino = self._map_ino((node.first_lower() or node.comps[0])[2].st)
            elif layer.writable:
                origin = self.writer.get_origin_ino(layer.real(rel))
                node.ino = origin if origin is not None else self._map_ino(hit.st)
            else:
                node.ino = self._map_ino(hit.st)
        return node.ino

    def real(self, node):
        layer, rel, _ = node.comps[0]
        return layer.real(rel)

    # ---- reading ----------------------------------------------------------------------------

    def getattr(self, path):
        """(stat_result of the serving entry, st_ino, st_nlink) for a merged path."""
        return self._stat(path, self.resolve(path))

    def _stat(self, path, node):
        layer, rel, hit = node.comps[0]
        st = layer.lstat(rel) if layer.writable else hit.st
        if st.st_nlink > 1 and layer.writable and not node.is_dir:
            self._aliases.setdefault((st.st_dev, st.st_ino), set()).add(path)
        # the kernel reports nlink 1 for merged directories: their subdir count is unknown
        nlink = 1 if node.is_dir and len(node.comps) > 1 else st.st_nlink
        if layer is self._work_layer:
            nlink -= 1  # an unlinked open file: its work-dir name is not a name users see
        elif nlink > 1 and self._orphans and not node.is_dir:
            nlink -= self._orphaned_links(st)  # nor that of another name unlinked while open
        if self.ids.active:
            st = self.ids.show(st, layer.real(rel))
        return st, self.ino_of(node), nlink

    def fgetattr(self, handle):
        st = os.fstat(handle.fd)
        nlink = st.st_nlink
        if self.ids.active:
            st = self.ids.show(st, handle.fd)
        return st, handle.ino, nlink

    def readlink(self, path):
        node = self.resolve(path)
        if self.ids.override and stat.S_ISREG(node.comps[0][2].st.st_mode):
            return self.ids.readlink(self.real(node))  # a symlink kept as a file (ids.py)
        return os.readlink(self.real(node))

    def listdir(self, path, plus=False):
        """[(name, S_IFMT, st_ino, full)] of a merged directory, '.' and '..' first; with plus,
        full is what getattr would return for the entry (readdirplus), else None."""
        node = self.resolve(path)
        if not node.is_dir:
            raise _err(errno.ENOTDIR, path)
        parent = self.lookup(split(path)[0]) if path != "/" else node
        out = [(".", stat.S_IFDIR, self.ino_of(node), None),
               ("..", stat.S_IFDIR, self.ino_of(parent), None)]
        base = "" if path == "/" else path
        children = self.cache.get_listing(path)
        if children is None:
            gen = self.cache.generation
            children = []
            for name, code in readdir.merged_entries(node):
                # d_ino must equal st_ino: resolve each entry (this also warms the cache)
                child = self.lookup(base + "/" + name)
                if child is not None:
                    # what a lower layer serves cannot change while the listing is cached
                    # (a copy-up or removal drops it): its attributes are taken once
                    fixed = None if child.in_upper else self._stat(base + "/" + name, child)
                    if code == stat.S_IFREG and self.ids.override:  # maybe a device (ids.py)
                        shown = fixed or self._stat(base + "/" + name, child)
                        code = stat.S_IFMT(shown[0].st_mode)
                    children.append((name, code, child, fixed))
            self.cache.put_listing(path, children, gen)
        for name, code, child, full in children:
            if plus and full is None:
                try:
                    full = self._stat(base + "/" + name, child)
                except FileNotFoundError:
                    continue  # removed while we listed
            out.append((name, code, self.ino_of(child), full if plus else None))
        return out

    def statfs(self):
        return os.statvfs(self.layers[0].root)

    def _check_xattr(self, path, name):
        if wo.is_interpreted_xattr(name):
            raise _err(errno.EOPNOTSUPP, path)

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

    def create(self, path, mode, flags, owner):
        """Create and open a regular file (O_CREAT)."""
        node = self.lookup(path)
        if node is not None:
            if flags & os.O_EXCL:
                raise _err(errno.EEXIST, path)
            return self.open(path, flags & ~os.O_CREAT, owner[0])
        oflags = ((flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY))
                  | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC)
        fd = self._make(path, stat.S_IFREG, owner, lambda p: os.open(p, oflags, stat.S_IMODE(mode)),
                        mode)
        return Handle(fd, self.ino_of(self.resolve(path)), path, lower=False)  # cached by _make

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
        """Before the first write through a handle: the kernel clears the setgid bit of a file
        written by a caller outside its group (Linux 6.2), but its FUSE client leaves the case
        of a file without group execute to the filesystem (setuid, and setgid with group
        execute, it clears itself). Root (CAP_FSETID) keeps the bit."""
        if uid == 0 or handle.lower:
            return
        st = os.fstat(handle.fd)
        if st.st_mode & (stat.S_ISGID | stat.S_IXGRP) != stat.S_ISGID:
            return
        if st.st_gid == self.ids.stored(-1, gid)[1] or st.st_gid in process_groups(pid):
            return
        os.fchmod(handle.fd, stat.S_IMODE(st.st_mode) & ~stat.S_ISGID)
        self._changed(handle.path, os.fstat(handle.fd))

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

    def fchange(self, handle, fn, *args):
        """chmod/chown/utime through an open handle whose name is gone (unlinked while open)."""
        if handle.lower:
            raise _err(errno.ESTALE)
        if fn is os.fchown:
            args = self.ids.stored(*args)
        fn(handle.fd, *args)

    # ---- attributes (copy-up first) ---------------------------------------------------------

    def chmod(self, path, mode):
        node = self._copied_up(path)
        if stat.S_ISLNK(node.comps[0][2].st.st_mode):
            raise _err(errno.EOPNOTSUPP, path)
        self.ids.chmod(self.real(node), mode)
        self._changed(path)

    def chown(self, path, uid, gid):
        uid, gid = self.ids.stored(uid, gid)
        self.ids.chown(self.real(self._copied_up(path)), uid, gid)
        self._changed(path)

    def truncate(self, path, length):
        node = self.resolve(path)
        if node.is_dir:
            raise _err(errno.EISDIR, path)
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

    # ---- namespace --------------------------------------------------------------------------

    def mkdir(self, path, mode, owner):
        self._make(path, stat.S_IFDIR, owner, lambda p: os.mkdir(p, stat.S_IMODE(mode)), mode)

    def mknod(self, path, mode, rdev, owner):
        self._make(path, stat.S_IFMT(mode), owner, lambda p: os.mknod(p, mode, rdev), mode)

    def symlink(self, path, target, owner):
        self._make(path, stat.S_IFLNK, owner, lambda p: os.symlink(target, p))

    def link(self, existing, path):
        self._writable(path)
        with self.wlock:
            src = self.resolve(existing)
            if src.is_dir:
                raise _err(errno.EPERM, existing)
            src = self._copied_up(existing)
            self._make(path, None, None, lambda p: os.link(self.real(src), p, follow_symlinks=False),
                       ino=self.ino_of(src))
            self.cache.forget(existing)
            st = os.lstat(self.real(src))
            self._aliases.setdefault((st.st_dev, st.st_ino), set()).update((existing, path))
            self._changed(path, st)

    def unlink(self, path):
        self._writable(path)
        with self.wlock:
            orphan = self._orphans.pop(path, None)
            if orphan is not None:
                layer, rel, _ = orphan.comps[0]
                if layer is self._work_layer:
                    os.unlink(layer.real(rel))
                return
            node = self.resolve(path)
            if node.is_dir:
                raise _err(errno.EISDIR, path)
            st = os.lstat(self.real(node)) if node.in_upper and self._aliases else None
            self._remove(path, node)
            if st is not None and st.st_nlink > 1:
                self._changed(path, st)
                self._aliases.get((st.st_dev, st.st_ino), set()).discard(path)

    def detach(self, path, alias):
        """Unlink a file that is still open, keeping it reachable as `alias` until it is closed
        (the FUSE server renames such a file to a hidden name and unlinks that name on its last
        close, as libfuse did).
        The name goes exactly as with unlink; an upper file moves into the work dir."""
        self._writable(path)
        with self.wlock:
            node = self.resolve(path)
            if node.is_dir:
                raise _err(errno.EISDIR, path)
            orphan_ino = self.ino_of(node)
            if node.in_upper:
                st = os.lstat(self.real(node))
                parent, name = split(path)
                tmp = self.copier.temp()
                if lower_positive(self.layers, self.lookup(parent), name):
                    self.writer.move_leaving_whiteout(self.real(node), tmp, False, False)
                    self.stats["whiteouts"] += 1
                    self.observer.whiteout(path)
                else:
                    os.rename(self.real(node), tmp)
                rel = os.path.basename(tmp)
                orphan = Node([(self._work_layer, rel, Hit(os.lstat(tmp)))])
                if st.st_nlink > 1:
                    self._changed(path, st)  # the other names show one link less
                    self._aliases.get((st.st_dev, st.st_ino), set()).discard(path)
            else:
                self._remove(path, node)
                orphan = Node(node.comps)
                # the lower file keeps its link count (the kernel's FUSE client drops it to 0
                # in its cache on unlink): have the kernel ask again
                if self.on_invalidate is not None:
                    self.on_invalidate([path], False)
            orphan.ino = orphan_ino
            self._orphans[alias] = orphan
            self.cache.forget_tree(path)

    def rmdir(self, path):
        self._writable(path)
        if path == "/":
            raise _err(errno.EBUSY, path)
        with self.wlock:
            node = self.resolve(path)
            if not node.is_dir:
                raise _err(errno.ENOTDIR, path)
            if not readdir.is_empty(node):
                raise _err(errno.ENOTEMPTY, path)
            self._remove(path, node)

    def rename(self, old, new, flags=0):
        if flags & RENAME_EXCHANGE:
            if flags & ~RENAME_EXCHANGE:
                raise _err(errno.EINVAL, old)
            return self._exchange(old, new)
        if flags & ~RENAME_NOREPLACE:
            raise _err(errno.EINVAL, old)
        self._writable(new)
        with self.wlock:
            onode = self.resolve(old)
            if old == "/" or new == "/":
                raise _err(errno.EBUSY, old)
            if new.startswith(old + "/"):
                raise _err(errno.EINVAL, new)
            nparent, nname = split(new)
            check_name(nname)
            self._check_new_name(nname)
            nnode = self.lookup(new)
            if old == new:
                return
            if nnode is not None:
                if flags & RENAME_NOREPLACE:
                    raise _err(errno.EEXIST, new)
                if onode.is_dir and not nnode.is_dir:
                    raise _err(errno.ENOTDIR, new)
                if not onode.is_dir and nnode.is_dir:
                    raise _err(errno.EISDIR, new)
                if nnode.is_dir and nnode.has_lower and not readdir.is_empty(nnode):
                    # a pure upper target is left to rename(2) itself, as the kernel does
                    raise _err(errno.ENOTEMPTY, new)
                if onode.in_upper and nnode.in_upper and os.path.samestat(
                        os.lstat(self.real(onode)), os.lstat(self.real(nnode))):
                    return  # two names of one inode: rename(2) does nothing
            # a hard link replaced: its other names show one link less
            replaced = (os.lstat(self.real(nnode)) if nnode is not None and nnode.in_upper
                        and not nnode.is_dir and self._aliases else None)
            oparent, oname = split(old)
            opnode = self._upper_dir(oparent)
            npnode = self._upper_dir(nparent)
            need_whiteout = lower_positive(self.layers, opnode, oname)
            onode, whole = self._prepare_move(old, onode, npnode, nname, oparent == nparent)
            src = self.upper.real(old[1:])
            dst = self.upper.real(new[1:])
            dst_whiteout = self._clear_target(new[1:])
            if need_whiteout:
                self.writer.move_leaving_whiteout(src, dst, dst_whiteout, onode.is_dir)
                self.stats["whiteouts"] += 1
                self.observer.whiteout(old)
            elif dst_whiteout:
                self.writer.move_onto_whiteout(src, dst, onode.is_dir)
            else:
                os.rename(src, dst)
            if whole:
                self._settle_tree(dst, npnode, nname)
            self._move_handles(old, new)
            self.cache.forget_tree(old)
            self.cache.forget_tree(new)
            if replaced is not None and replaced.st_nlink > 1:
                self._changed(new, replaced)
                self._aliases.get((replaced.st_dev, replaced.st_ino), set()).discard(new)

    def _exchange(self, a, b):
        """renameat2(RENAME_EXCHANGE): both names stay, so no whiteout is needed."""
        self._writable(a)
        with self.wlock:
            anode = self.resolve(a)
            bnode = self.resolve(b)
            if "/" in (a, b):
                raise _err(errno.EBUSY, a)
            if b.startswith(a + "/") or a.startswith(b + "/"):
                raise _err(errno.EINVAL, b)
            if a == b:
                return
            (aparent, aname), (bparent, bname) = split(a), split(b)
            apnode = self._upper_dir(aparent)
            bpnode = self._upper_dir(bparent)
            samedir = aparent == bparent
            _, a_whole = self._prepare_move(a, anode, bpnode, bname, samedir)
            _, b_whole = self._prepare_move(b, bnode, apnode, aname, samedir)
            renameat2(self.upper.real(a[1:]), self.upper.real(b[1:]), RENAME_EXCHANGE)
            if a_whole:
                self._settle_tree(self.upper.real(b[1:]), bpnode, bname)
            if b_whole:
                self._settle_tree(self.upper.real(a[1:]), apnode, aname)
            for path in (a, b):
                self._lower_handles.pop(path, None)
                self.cache.forget_tree(path)

    def _prepare_move(self, path, node, to_parent, to_name, samedir):
        """Get an entry ready to move to to_parent/to_name; returns (its upper node, whether
        its whole tree was copied up, to be settled by _settle_tree once moved).

        Files are copied up. A directory with lower content is copied up (itself only) and told
        where that content lives (a redirect), or with redirect_dir=off copied up whole; a pure
        upper directory moving into a merged directory is made opaque, as the kernel does.
        """
        if not node.is_dir:
            return self._copied_up(path), False
        if node.has_lower:
            if not self.redirect_dir:
                return self._copy_tree_up(path), True
            node = self._copied_up(path)
            self._set_redirect(path, node, samedir)
            self.observer.redirected(node, to_parent, to_name)
        elif to_parent.has_lower and not node.comps[0][2].opaque:
            # as the kernel does for a pure upper directory moving into a merged one (its name
            # may be whited out there, or become a lower name under a redirect)
            self.writer.set_opaque(self.real(node))
            self.observer.moved_opaque(to_parent, to_name)
        return node, False

    # ---- copy-up ----------------------------------------------------------------------------

    def copy_up(self, path, data=True):
        """Copy a merged entry (parents first) into the upper layer; returns its new Node."""
        self._writable(path)
        with self.wlock:
            node = self.resolve(path)
            if node.in_upper:
                return node
            if path in self._orphans:
                raise _err(errno.ENOENT, path)  # unlinked while open: no name to copy up to (the kernel: ENOENT)
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

    def _settle_tree(self, real, to_parent, to_name):
        """After a whole tree moved to to_parent/to_name: opaque where lower layers have that
        name, as a new directory there would be; the whiteouts inside then hide nothing, and
        leaving them would put stray whiteouts into a layer built from this upper."""
        # fd by fd, never through a path a user could swap a directory of for a symlink
        for _d, _dirs, _files, dfd in os.fwalk(real, follow_symlinks=False):
            self.writer.clear_dir(fd_path(dfd, "."))
        if lower_positive(self.layers, to_parent, to_name):
            self.writer.set_opaque(real)

    def _copied_up(self, path):
        self._writable(path)
        node = self.resolve(path)
        return node if node.in_upper else self.copy_up(path)

    def _upper_dir(self, path):
        node = self.resolve(path)
        if not node.is_dir:
            raise _err(errno.ENOTDIR, path)
        return node if node.in_upper else self.copy_up(path)

    def _reopen_handles(self, path, node):
        """Readers that opened the lower file now read the upper copy, as on the kernel."""
        handles = self._lower_handles.pop(path, ())
        for h in handles:
            fd = open_regular(self.real(node), os.O_RDONLY)
            os.dup2(fd, h.fd)
            os.close(fd)
            h.lower = False

    def _move_handles(self, old, new):
        handles = self._lower_handles.pop(old, None)
        if handles:
            for h in handles:
                h.path = new
            self._lower_handles[new] = handles

    # ---- helpers ----------------------------------------------------------------------------

    def _changed(self, path, st=None):
        """After a change through `path`, drop cached state of the inode's other names."""
        if self.on_invalidate is None or not self._aliases:
            return
        if st is None:
            node = self.lookup(path)
            if node is None or node.is_dir or not node.in_upper:
                return
            st = os.lstat(self.real(node))
        if st.st_nlink < 2 and (st.st_dev, st.st_ino) not in self._aliases:
            return
        others = self._aliases.get((st.st_dev, st.st_ino), set()) - {path}
        if others:
            self.on_invalidate(sorted(others))

    def _orphaned_links(self, st):
        """How many links of the inode of `st` are work-dir names of files unlinked while
        open."""
        return sum(1 for o in self._orphans.values() if o.comps[0][0] is self._work_layer
                   and os.path.samestat(o.comps[0][2].st, st))

    def _writable(self, path):
        if self.upper is None:
            raise _err(errno.EROFS, path)

    @staticmethod
    def _check_new_name(name):
        if wo.is_reserved_name(name):
            raise _err(errno.EINVAL, name)

    def _owner(self, parent_node, owner, ftype):
        """(uid, gid, extra mode bits) for a new entry: setgid directories pass their group on."""
        uid, gid = self.ids.stored(*owner)
        layer, rel, _ = parent_node.comps[0]
        pst = layer.lstat(rel)
        if pst.st_mode & stat.S_ISGID:
            return uid, pst.st_gid, stat.S_ISGID if ftype == stat.S_IFDIR else 0
        return uid, gid, 0

    def _make(self, path, ftype, owner, make, mode=0, ino=None):
        """Create one entry in the upper; over a whiteout, build it in the work dir and swap it in."""
        self._writable(path)
        parent, name = split(path)
        check_name(name)
        self._check_new_name(name)
        with self.wlock:
            if self.lookup(path) is not None:
                raise _err(errno.EEXIST, path)
            pnode = self._upper_dir(parent)
            real = self.upper.real(path[1:])
            over_whiteout = self.writer.has_whiteout(real)
            target = self.copier.temp() if over_whiteout else real
            result = make(target)
            try:
                if owner is not None:
                    uid, gid, extra = self._owner(pnode, owner, ftype)
                    self.ids.chown(target, uid, gid, None if ftype == stat.S_IFLNK
                                   else stat.S_IMODE(mode) | extra)
                    if extra or mode & (stat.S_ISUID | stat.S_ISGID):
                        # chown clears setuid/setgid: set the requested mode again
                        self.ids.chmod(target, stat.S_IMODE(mode) | extra)
                opaque = ftype == stat.S_IFDIR and (
                    over_whiteout or (self.redirect_dir and pnode.has_lower))
                if opaque:
                    # over a whiteout: lower content must stay hidden. In a merged parent the
                    # kernel marks it too when redirects are on (a lower directory renamed to
                    # this name later would merge with it otherwise)
                    self.writer.set_opaque(target)
                    self.observer.opaque(path, over_whiteout)
                if over_whiteout:
                    self.writer.move_onto_whiteout(target, real, ftype == stat.S_IFDIR)
            except BaseException:
                if isinstance(result, int):
                    os.close(result)
                discard(target)
                raise
            # the new entry is exactly this upper entry (a new directory is opaque or has
            # nothing below it to merge with): cache it rather than search every layer again
            node = Node([(self.upper, path[1:], Hit(os.lstat(real), opaque=opaque))])
            node.ino = ino if ino is not None else self._map_ino(node.comps[0][2].st)
            self.cache.replace(path, node)
            return result

    def _remove(self, path, node):
        """Remove an entry (an emptied directory included), leaving a whiteout where lowers have it."""
        parent, name = split(path)
        pnode = self.lookup(parent)
        need_whiteout = lower_positive(self.layers, pnode, name)
        if need_whiteout:
            self._upper_dir(parent)
            real = self.upper.real(path[1:])  # its parent is in the upper now
            if node.in_upper:
                self.writer.whiteout_entry(real, self.copier.temp(), node.is_dir)
            else:
                self.writer.make_whiteout(real)
            self.stats["whiteouts"] += 1
            self.observer.whiteout(path)
        elif node.in_upper:
            real = self.upper.real(path[1:])
            if node.is_dir:
                self.writer.clear_dir(real)
                os.rmdir(real)
            else:
                os.unlink(real)
        self.cache.forget_tree(path)

    def _clear_target(self, rel):
        """Prepare the upper entry a rename will replace. Returns True if it is a whiteout."""
        dst = self.upper.real(rel)
        if self.writer.has_whiteout(dst):
            return True
        try:
            st = os.lstat(dst)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            # an emptied merged directory keeps whiteouts; the moved entry replaces it (anything
            # else left makes rename(2) fail with ENOTEMPTY, as it should)
            self.writer.clear_dir(dst)
        return False

    def _set_redirect(self, path, node, samedir):
        """Record where a renamed directory's lower content lives (the kernel's redirect_dir=on)."""
        real = self.real(node)
        current = self.writer.get_redirect(real)
        if current and (samedir or current.startswith("/")):
            return
        if samedir:
            value = split(path)[1]
        else:
            value = "/" + node.first_lower()[1]
        self.writer.set_redirect(real, value)
