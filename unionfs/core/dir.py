"""The operations that change a directory: create, mkdir, mknod, symlink, link, unlink, detach,
rmdir, rename, exchange, and the whiteout, opaque and redirect decisions they make.

A mixin of `union.Union` (why: union.py's docstring). A name that lower layers still show is
removed by a whiteout; a directory made over a whiteout, or in a merged parent with redirects on,
is opaque; a directory with lower content that moves is copied up alone and told where that
content lives (a redirect), or copied up whole with redirect_dir=off. How each of these is
written on disk is whiteout.py's (the upper's `Writer`).
"""
import errno
import os
import stat

from . import whiteout as wo
from .copyup import discard
from .file import Handle
from .layers import Hit, join
from .namei import Node, check_name, err, lower_entry, lower_positive, split
from .readdir import is_empty
from .sysutil import RENAME_EXCHANGE, RENAME_NOREPLACE, fd_path, renameat2


class DirOps:
    """The directory-changing operations of `union.Union`."""

    def create(self, path, mode, flags, owner):
        """Create and open a regular file (O_CREAT)."""
        node = self.lookup(path)
        if node is not None:
            if flags & os.O_EXCL:
                raise err(errno.EEXIST, path)
            return self.open(path, flags & ~os.O_CREAT, owner[0])
        oflags = ((flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY))
                  | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC)
        fd = self._make(path, stat.S_IFREG, owner, lambda p: os.open(p, oflags, stat.S_IMODE(mode)),
                        mode)
        return Handle(fd, self.ino_of(self.resolve(path)), path, lower=False)  # cached by _make

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
                raise err(errno.EPERM, existing)
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
                raise err(errno.EISDIR, path)
            st = os.lstat(self.real(node)) if node.in_upper and self._aliases else None
            self._remove(path, node)
            if st is not None and st.st_nlink > 1:
                self._changed(path, st)
                self._aliases.get((st.st_dev, st.st_ino), set()).discard(path)

    def detach(self, path, alias):
        """Unlink a file that is still open, keeping it reachable as `alias` until it is closed
        (the FUSE server keeps the open file's node under an alias no user can name, with a NUL
        in it, and unlinks that on its last close). The name goes exactly as with unlink; an
        upper file moves into the work dir."""
        self._writable(path)
        with self.wlock:
            node = self.resolve(path)
            if node.is_dir:
                raise err(errno.EISDIR, path)
            orphan_ino = self.ino_of(node)
            if node.in_upper:
                st = os.lstat(self.real(node))
                parent, name = split(path)
                tmp = self.copier.temp()
                hidden = lower_entry(self.layers, self.lookup(parent), name)
                if hidden is not None:
                    self.writer.move_leaving_whiteout(self.real(node), tmp, False, False)
                    self._whited_out(path, hidden)
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
            raise err(errno.EBUSY, path)
        with self.wlock:
            node = self.resolve(path)
            if not node.is_dir:
                raise err(errno.ENOTDIR, path)
            if not is_empty(node):
                raise err(errno.ENOTEMPTY, path)
            self._remove(path, node)

    def rename(self, old, new, flags=0):
        if flags & RENAME_EXCHANGE:
            if flags & ~RENAME_EXCHANGE:
                raise err(errno.EINVAL, old)
            return self._exchange(old, new)
        if flags & ~RENAME_NOREPLACE:
            raise err(errno.EINVAL, old)
        self._writable(new)
        with self.wlock:
            onode = self.resolve(old)
            if old == "/" or new == "/":
                raise err(errno.EBUSY, old)
            if new.startswith(old + "/"):
                raise err(errno.EINVAL, new)
            nparent, nname = split(new)
            check_name(nname)
            self._check_new_name(nname)
            nnode = self.lookup(new)
            if old == new:
                return
            if nnode is not None:
                if flags & RENAME_NOREPLACE:
                    raise err(errno.EEXIST, new)
                if onode.is_dir and not nnode.is_dir:
                    raise err(errno.ENOTDIR, new)
                if not onode.is_dir and nnode.is_dir:
                    raise err(errno.EISDIR, new)
                if nnode.is_dir and nnode.has_lower and not is_empty(nnode):
                    # a pure upper target is left to rename(2) itself, as the kernel does
                    raise err(errno.ENOTEMPTY, new)
                if onode.in_upper and nnode.in_upper and os.path.samestat(
                        os.lstat(self.real(onode)), os.lstat(self.real(nnode))):
                    return  # two names of one inode: rename(2) does nothing
            # a hard link replaced: its other names show one link less
            replaced = (os.lstat(self.real(nnode)) if nnode is not None and nnode.in_upper
                        and not nnode.is_dir and self._aliases else None)
            oparent, oname = split(old)
            opnode = self._upper_dir(oparent)
            npnode = self._upper_dir(nparent)
            hidden = lower_entry(self.layers, opnode, oname)
            onode, whole = self._prepare_move(old, onode, npnode, nname, oparent == nparent)
            src = self.upper.real(old[1:])
            dst = self.upper.real(new[1:])
            dst_whiteout = self._clear_target(new[1:])
            try:
                if hidden is not None:
                    self.writer.move_leaving_whiteout(src, dst, dst_whiteout, onode.is_dir)
                    self._whited_out(old, hidden)
                elif dst_whiteout:
                    self.writer.move_onto_whiteout(src, dst, onode.is_dir)
                else:
                    os.rename(src, dst)
            finally:
                if onode.is_dir or (nnode is not None and nnode.is_dir):
                    self.upper.forget_dirs()  # the upper's directories changed paths
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
                raise err(errno.EBUSY, a)
            if b.startswith(a + "/") or a.startswith(b + "/"):
                raise err(errno.EINVAL, b)
            if a == b:
                return
            (aparent, aname), (bparent, bname) = split(a), split(b)
            apnode = self._upper_dir(aparent)
            bpnode = self._upper_dir(bparent)
            samedir = aparent == bparent
            _, a_whole = self._prepare_move(a, anode, bpnode, bname, samedir)
            _, b_whole = self._prepare_move(b, bnode, apnode, aname, samedir)
            try:
                renameat2(self.upper.real(a[1:]), self.upper.real(b[1:]), RENAME_EXCHANGE)
            finally:
                if anode.is_dir or bnode.is_dir:
                    self.upper.forget_dirs()  # the upper's directories changed paths
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
        to = "/" + join(to_parent.comps[0][1], to_name)
        if node.has_lower:
            if not self.redirect_dir:
                return self._copy_tree_up(path), True
            node = self._copied_up(path)
            value = self._set_redirect(path, node, samedir)
            self.observer.redirected(to, self.upper.shown(to[1:]), value)
        elif to_parent.has_lower and not node.comps[0][2].opaque:
            # as the kernel does for a pure upper directory moving into a merged one (its name
            # may be whited out there, or become a lower name under a redirect)
            self.writer.set_opaque(self.real(node))
            hides = self.observer.tracing and lower_positive(self.layers, to_parent, to_name)
            self.observer.opaque(to, self.upper.shown(to[1:]), hides)
        return node, False

    def _settle_tree(self, real, to_parent, to_name):
        """After a whole tree moved to to_parent/to_name: opaque where lower layers have that
        name, as a new directory there would be; the whiteouts inside then hide nothing, and
        leaving them would put stray whiteouts into a layer built from this upper."""
        # fd by fd, never through a path a user could swap a directory of for a symlink
        for _d, _dirs, _files, dfd in os.fwalk(real, follow_symlinks=False):
            self.writer.clear_dir(fd_path(dfd, "."))
        if lower_positive(self.layers, to_parent, to_name):
            self.writer.set_opaque(real)

    @staticmethod
    def _check_new_name(name):
        if wo.is_reserved_name(name):
            raise err(errno.EINVAL, name)

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
                raise err(errno.EEXIST, path)
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
                    self.observer.opaque(path, self.upper.shown(path[1:]), over_whiteout)
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
        hidden = lower_entry(self.layers, pnode, name)
        try:
            if hidden is not None:
                self._upper_dir(parent)
                real = self.upper.real(path[1:])  # its parent is in the upper now
                if node.in_upper:
                    self.writer.whiteout_entry(real, self.copier.temp(), node.is_dir)
                else:
                    self.writer.make_whiteout(real)
                self._whited_out(path, hidden)
            elif node.in_upper:
                real = self.upper.real(path[1:])
                if node.is_dir:
                    self.writer.clear_dir(real)
                    os.rmdir(real)
                else:
                    os.unlink(real)
        finally:
            if node.is_dir and node.in_upper:
                self.upper.forget_dirs()  # a kept fd must not outlive its directory's name
        self.cache.forget_tree(path)

    def _whited_out(self, path, hidden):
        """A whiteout at `path` now hides `hidden`, the (layer, hit) lower_entry found."""
        self.stats["whiteouts"] += 1
        self.observer.whiteout(path, self.upper.shown(path[1:]), *hidden)

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
        """Record where a renamed directory's lower content lives (the kernel's redirect_dir=on);
        returns the redirect it has then."""
        real = self.real(node)
        current = self.writer.get_redirect(real)
        if current and (samedir or current.startswith("/")):
            return current
        if samedir:
            value = split(path)[1]
        else:
            value = "/" + node.first_lower()[1]
        self.writer.set_redirect(real, value)
        return value
