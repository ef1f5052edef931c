"""The union's front door: construction, locking, resolution, inode numbers, open handles.

Merged paths are absolute strings ('/' is the root). Errors are raised as OSError(errno), exactly
as the kernel's overlayfs would return them. Any change of the namespace or of an entry's layer
runs under one write lock (copy-ups included, so two writers of one lower file cause one copy-up);
reads run without it, through the resolution cache.

How it is composed: `Union` is one object built from one mixin class per concern, each in the
module that owns those operations, as the kernel spreads overlayfs over dir.c, file.c, copy_up.c
and readdir.c: `DirOps` (dir.py: create, mkdir, unlink, rename...), `FileOps` (file.py: handles,
I/O, setattr, xattrs), `CopyUpOps` (copyup.py) and `ReaddirOps` (readdir.py). A caller (the FUSE
server, a test, an image commit) holds one object and makes one call per operation; the
operations share state (the lock, the cache, the handles) without passing it around, and an
operation calls another (rename copies up, open copies up, create opens) as a method of the same
object, never through a module above core. The mixins import neither this module nor each other
(only plain helpers: Handle, discard, is_empty); what they use of the front door is the state set
in __init__ and the methods below: lookup, resolve, ino_of, _map_ino, real, _stat, _changed,
_writable, _move_handles. Module functions taking the union would say the same with a parameter
more on every call and a second name (module and method) for every operation.
"""
import errno
import os
import threading

from . import whiteout as wo
from .cache import NEGATIVE, ResolutionCache
from .copyup import Copier, CopyUpOps
from .dir import DirOps
from .file import FileOps
from .ids import IdMapper
from .layers import Layer, LowerLayer
from .namei import check_name, err, resolve_child, resolve_root, split
from .observe import Observer
from .readdir import ReaddirOps

_INO_BITS = 48


class Union(DirOps, FileOps, CopyUpOps, ReaddirOps):
    """A mounted union of `lowers` (top first) under an optional writable `upper`."""

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
            self.writer.share_whiteouts(self.copier.temp)
        self._work_layer = Layer(self.copier.workdir, -1) if self.copier else None
        self.root = resolve_root(layers)
        self.stats = {"copyups": 0, "copyup_bytes": 0, "whiteouts": 0}
        # what the union tells of its changes: nobody, until a mount installs its recorder
        # (unionfs/observe.py)
        self.observer = Observer()

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
            raise err(errno.ENOENT, path)
        if not parent.is_dir:
            raise err(errno.ENOTDIR, path)
        check_name(name)
        node = resolve_child(self.layers, parent, name)
        self.observer.resolved(node)
        self.cache.put(path, NEGATIVE if node is None else node, gen)
        return node

    def resolve(self, path):
        node = self.lookup(path)
        if node is None:
            raise err(errno.ENOENT, path)
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

    # ---- attributes ------------------------------------------------------------------------

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

    def statfs(self):
        return os.statvfs(self.layers[0].root)

    # ---- open handles that still read a lower file -----------------------------------------

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
            raise err(errno.EROFS, path)
