"""What an upper directory changes, read in the kernel's overlay format.

The upper is walked as it is on disk: a character device 0/0 (or a ``.wh.<name>`` file, the form an
upper written without the right to make devices has) is a deletion, a directory with
``overlay.opaque=y`` (``trusted.`` or ``user.``, or holding ``.wh..wh..opq``) hides everything below
it, a directory with ``overlay.redirect`` is a lower directory renamed to here. To tell additions from changes
and to see through redirects, two read-only unions from unionfs's own core are used: ``base``
(the lower layers alone: the image) and ``merged`` (the upper read as the top lower layer over
them: exactly what the mount shows).

Two results:

* ``diff_lines()``: ``A`` (added), ``C`` (changed), ``D`` (deleted) and the merged path, one per
  line, sorted, as ``docker diff`` prints them;
* ``layer_entries()``: the layer entries to write, as (name in the tar, value), sorted parents
  first: ``("entry", real_path)`` for content taken from a real file, ``("whiteout",)`` for a
  ``.wh.<name>`` and ``("opaque",)`` for a ``.wh..wh..opq``.

A redirected (renamed) directory is listed in full at its new path (every entry of its merged
subtree added, the directory made opaque) and its old path is deleted, because an image layer
cannot express a rename.
"""
import os
import stat

from ..core import whiteout as wo
from ..core.readdir import walk
from ..core.union import Union
from .errors import ImageError

_ORIGINS = tuple(ns + "unionfs.ino" for ns in wo.READ_PREFIXES)


def _xattr(path, name):
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def _join(parent, name):
    return parent.rstrip("/") + "/" + name


class Changes:
    def __init__(self, upper, lowers):
        """upper: the upper directory; lowers: lower layer dirs, top first (may be empty)."""
        if not os.path.isdir(upper):
            raise ImageError("%s: not a directory" % upper)
        self.upper = os.path.realpath(upper)
        self.lowers = list(lowers)
        self.base = Union(self.lowers) if self.lowers else None
        self.merged = Union([self.upper] + self.lowers)
        self.kinds = {}      # merged path -> 'A' | 'C' | 'D'
        self.entries = {}    # tar path (no leading '/') -> ("entry", real) | ("whiteout",) | ("opaque",)
        self._walk("", "/", new=False)

    # ---- lookups ----------------------------------------------------------------------------

    def _in_base(self, path):
        if self.base is None:
            return None
        try:
            return self.base.lookup(path)
        except OSError:
            return None

    def _in_merged(self, path):
        try:
            return self.merged.lookup(path)
        except OSError:
            return None

    # ---- recording ------------------------------------------------------------------------------

    def _kind(self, path, kind):
        if path == "/":
            return
        if kind == "D" and path in self.kinds:
            return
        self.kinds[path] = kind

    def _entry(self, path, value):
        name = path.lstrip("/")
        if value[0] == "whiteout":
            d, _, b = name.rpartition("/")
            name = (d + "/" if d else "") + wo.WH_PREFIX + b
        self.entries[name] = value

    # ---- the walk -----------------------------------------------------------------------------

    def _walk(self, rel, path, new):
        """rel: directory relative to the upper; path: its merged path. new: nothing below it
        (an added or opaque directory), so children are additions."""
        real_dir = os.path.join(self.upper, rel) if rel else self.upper
        try:
            names = sorted(os.listdir(real_dir))
        except OSError as e:
            raise ImageError("cannot read %s: %s" % (real_dir, e.strerror))
        present = set(names)
        for name in names:
            crel = rel + "/" + name if rel else name
            target = wo.oci_whiteout_target(name)
            if target is not None:
                # the '.wh.' form: a deletion of `target` (unless the name is there too: an
                # interrupted change, where the entry wins); the opaque marker is read below
                if target and target not in present and not new and (
                        self.base is None or self._in_base(_join(path, target)) is not None):
                    self._kind(_join(path, target), "D")
                    self._entry(_join(path, target), ("whiteout",))
                continue
            cpath = _join(path, name)
            real = os.path.join(self.upper, crel)
            st = os.lstat(real)
            if wo.is_whiteout_stat(st):
                if new:
                    continue
                if self.base is None or self._in_base(cpath) is not None:
                    self._kind(cpath, "D")
                    self._entry(cpath, ("whiteout",))
                continue
            if stat.S_ISDIR(st.st_mode):
                opaque, redirect, _xwh = wo.dir_markers(real)
                if redirect:
                    self._redirected(cpath, path, redirect)
                    continue
                opaque = opaque or wo.has_opaque_marker(real)
                existed = not new and (self.base is None or self._in_base(cpath) is not None)
                self._kind(cpath, "C" if existed else "A")
                self._entry(cpath, ("entry", real))
                if opaque and existed:
                    node = self._in_base(cpath)
                    if node is None or node.is_dir:   # (None: no lowers known)
                        # only a directory below needs hiding; a file below is replaced anyway
                        self._entry(_join(cpath, wo.WH_OPAQUE), ("opaque",))
                    if node is not None and node.is_dir:
                        upper_names = set(os.listdir(real))
                        for n, _code in self._base_list(cpath):
                            if n not in upper_names:
                                self._kind(_join(cpath, n), "D")
                self._walk(crel, cpath, new=new or opaque or not existed)
                continue
            existed = not new and (self.base is None and any(
                _xattr(real, n) is not None for n in _ORIGINS) or self._in_base(cpath) is not None)
            self._kind(cpath, "C" if existed else "A")
            self._entry(cpath, ("entry", real))

    def _base_list(self, path):
        try:
            return [(n, c) for n, c, _i, _f in self.base.listdir(path) if n not in (".", "..")]
        except OSError:
            return []

    def _redirected(self, path, parent_path, redirect):
        """A lower directory renamed to path: all of it is new here, the old path is gone."""
        old = redirect if redirect.startswith("/") else _join(parent_path, redirect)
        old = "/" + old.strip("/")
        if old != path and self._in_base(old) is not None and self._in_merged(old) is None:
            self._kind(old, "D")
            self._entry(old, ("whiteout",))
        self._subtree(path)

    def _subtree(self, path):
        """Everything the merged tree shows at path and below, added (the directory opaque)."""
        node = self._in_merged(path)
        if node is None:
            return
        self._added(path, node)
        if node.is_dir:
            self._entry(_join(path, wo.WH_OPAQUE), ("opaque",))
            for rel, child, _parent in walk(self.merged.layers, node):
                self._added(_join(path, rel), child)

    def _added(self, path, node):
        self._kind(path, "A")
        self._entry(path, ("entry", self.merged.real(node)))

    # ---- results ----------------------------------------------------------------------------

    def diff_lines(self):
        return ["%s %s" % (k, p) for p, k in sorted(self.kinds.items(), key=lambda kv: _key(kv[0]))]

    def layer_entries(self):
        """[(tar path, value)] sorted so that parents come first."""
        return sorted(self.entries.items(), key=lambda kv: _key(kv[0]))


def _key(path):
    return [os.fsencode(c) for c in path.strip("/").split("/")]
