"""The layers of a stack applied bottom to top, as OCI (and the kernel's overlayfs) apply them:
every path's timeline, the fate of every copy a layer ships, and the tree that is finally seen.

Per layer, in this order (whiteouts and opaque markers hide what the layers *below* hold; a name
the same layer also ships is new content):

1. each whiteout hides its path and everything below it;
2. each opaque directory hides everything below it that lower layers hold;
3. each renamed directory (a redirect, kernel format: renames.py) shows what the layers below
   hold at its old path: it hides what was below its own path, and every entry it shows from a
   lower layer is placed at the new path (a new ``Copy`` of the same entry);
4. each entry replaces the visible copy at its path; a non-directory replacing a directory also
   hides everything below it.

A whiteout at the old path of a directory the same layer renamed is the rename's: it is recorded
as ``renamed``, not ``whiteout``.

Event kinds (``Event.kind``), for the path they are recorded on:

``added``          the path appears (nothing was visible there)
``changed``        new content (or another type) replaces the visible copy
``metadata-only``  same content, other metadata (mode, owner, mtime, xattrs): for a file, the
                   layer still ships the whole file again
``duplicate``      the very same file shipped again (content and metadata identical)
``whiteout``       a whiteout removes the path, or (``via``) an ancestor of it
``opaque``         the path is an opaque directory (its lower contents are hidden), or (``via``)
                   the parent made opaque removes it
``hidden``         an ancestor (``via``) is replaced by a non-directory
``renamed``        the directory was renamed (``moved``: its new path), or (``via``) an ancestor
                   was; the new path's events are ``added`` with ``moved`` the old path

Copy fates (``Copy.cause`` of a copy that is not visible in the end): ``overwritten``,
``metadata-only``, ``duplicate`` (the copy is hidden by a later copy of that kind) and
``deleted`` (a whiteout, an opaque directory or a non-directory over a parent removed it).
"""
from dataclasses import dataclass

from .layerindex import Entry
from .renames import layer_renames

ADDED, CHANGED, META, DUP = "added", "changed", "metadata-only", "duplicate"
WHITEOUT, OPAQUE, HIDDEN, RENAMED = "whiteout", "opaque", "hidden", "renamed"
OVERWRITTEN, DELETED = "overwritten", "deleted"
_FATE = {CHANGED: OVERWRITTEN, META: META, DUP: DUP}


@dataclass
class Copy:
    """One entry one layer ships, at one merged path (its own, or where a rename put it)."""
    layer: int          # 0-based index into the stack
    entry: Entry
    hidden_by: int = None   # 0-based layer that hid it; None while visible
    cause: str = None
    at: str = None      # the merged path, when a renamed directory shows the entry elsewhere

    @property
    def path(self):
        return self.entry.path if self.at is None else self.at


@dataclass
class Event:
    layer: int          # 0-based
    path: str
    kind: str
    copy: Copy = None   # the copy this layer ships at path (added/changed/metadata-only/duplicate)
    prev: Copy = None   # the copy visible before, if any
    via: str = None     # for removals through an ancestor: that ancestor's path
    hid: bool = True    # for a whiteout: whether anything was visible to remove
    moved: str = None   # a rename's other end: the new path (renamed) or the old one (added)


def same_content(a_idx, a, b_idx, b):
    """Whether entries a (of layer index a_idx) and b have the same type and content."""
    if a.kind != b.kind:
        return False
    if a.kind == "file":
        return a.size == b.size and (_same_file(a_idx, a, b_idx, b)
                                     or a_idx.digest(a.path) == b_idx.digest(b.path))
    if a.kind == "symlink":
        return a.target == b.target
    if a.kind in ("char", "block"):
        return a.rdev == b.rdev
    return True


def _same_file(a_idx, a, b_idx, b):
    """The same name of the same layer directory (two stacks sharing a layer)."""
    return a_idx.root == b_idx.root and a.path == b.path


def same_meta(a_idx, a, b_idx, b):
    """Same mode, owner, xattrs and (except for directories, whose mtime every change to a
    child moves) mtime."""
    if _same_file(a_idx, a, b_idx, b):
        return True
    if (a.mode, a.uid, a.gid) != (b.mode, b.uid, b.gid):
        return False
    if not a.is_dir and a.mtime_ns != b.mtime_ns:
        return False
    return a_idx.xattrs(a.path) == b_idx.xattrs(b.path)


def meta_changes(a, b):
    """Human words for what differs between the metadata of entries a and b."""
    out = []
    if a.mode != b.mode:
        out.append("mode %04o -> %04o" % (a.mode, b.mode))
    if (a.uid, a.gid) != (b.uid, b.gid):
        out.append("owner %d:%d -> %d:%d" % (a.uid, a.gid, b.uid, b.gid))
    if a.mtime_ns != b.mtime_ns and not a.is_dir:
        out.append("mtime")
    return ", ".join(out) or "xattrs"


class Timeline:
    """The stack applied. ``visible``: path -> Copy in the final tree; ``copies``: every Copy;
    ``events``: path -> [Event] bottom first."""

    def __init__(self, stack, upto=None):
        self.stack = stack
        self.visible = {}
        self.children = {"": set()}
        self.copies = []
        self.events = {}
        self._moved = {}     # (layer, entry path) -> the Copy a rename placed elsewhere
        self._renamed = {}   # this layer's renamed directories: old path -> new path
        self._came_from = {}  # this layer's entries in renamed directories: path -> old path
        n = self.upto = len(stack.indexes) if upto is None else upto
        for i in range(n):
            self._apply(i, stack.indexes[i])

    # ---- bookkeeping ----------------------------------------------------------------------

    def _event(self, ev):
        self.events.setdefault(ev.path, []).append(ev)

    def _remove_below(self, layer, path, kind, via):
        """Hide every visible copy strictly below path, each after what is below it (a list of
        directories being emptied, not a recursion: a tree may nest thousands of levels)."""
        stack = [(path, iter(sorted(self.children.get(path, ()))))]
        while stack:
            p, names = stack[-1]
            name = next(names, None)
            if name is not None:
                child = p + "/" + name if p else name
                stack.append((child, iter(sorted(self.children.get(child, ())))))
                continue
            stack.pop()
            self.children.pop(p, None)
            if stack:
                self._hide(layer, p, kind, via)

    def _hide(self, layer, path, kind, via=None):
        c = self.visible.pop(path)
        c.hidden_by, c.cause = layer, DELETED
        parent, _, name = path.rpartition("/")
        self.children.get(parent, set()).discard(name)
        moved = self._renamed.get(via or path) if kind == RENAMED else None
        self._event(Event(layer, path, kind, prev=c, via=via, moved=moved))

    # ---- one layer --------------------------------------------------------------------------

    def _apply(self, i, idx):
        renames = self._renames(i, idx) if idx.redirects else ()
        for path in sorted(idx.whiteouts):
            kind = RENAMED if path in self._renamed else WHITEOUT
            if path in self.visible:
                self._remove_below(i, path, kind, path)
                self._hide(i, path, kind)
            elif kind == WHITEOUT:
                self._event(Event(i, path, WHITEOUT, hid=False))
        for path in sorted(idx.opaque):
            self._remove_below(i, path, OPAQUE, path)
        for path, shipped, source in renames:
            if path in idx.redirects:
                self._remove_below(i, path, OPAQUE, path)
            if source is not None and not shipped:
                self._move(i, path, *source)
        for path, entry in idx.entries.items():
            self._place(i, idx, path, entry)
        for path in sorted(idx.opaque):
            if path:
                self._event(Event(i, path, OPAQUE, copy=self.visible.get(path)))
        self._renamed, self._came_from = {}, {}

    def _renames(self, i, idx):
        """[(path, shipped, source (layer, entry path))] of layer i's renamed directories (see
        renames.layer_renames), sources as 0-based layers; fills _renamed and _came_from."""
        roots = [self.stack.indexes[k].root for k in range(i, -1, -1)]
        out = []
        for path, shipped, source in layer_renames(roots, idx.redirects):
            if source is not None:
                source = (i - source[0], source[1])
                old = self._moved[source].path if source in self._moved else source[1]
                if path in idx.redirects:
                    self._renamed.setdefault(old, path)
                self._came_from[path] = old
            out.append((path, shipped, source))
        return out

    def _move(self, i, path, layer, rel):
        """Place the entry a lower layer ships at rel at path, where a rename shows it."""
        entry = self.stack.indexes[layer].entries.get(rel)
        if entry is None:
            return
        copy = self._moved[layer, rel] = Copy(layer, entry, at=path)
        self.copies.append(copy)
        self._show(path, copy)
        self._event(Event(i, path, ADDED, copy=copy, moved=self._came_from.get(path)))

    def _show(self, path, copy):
        self.visible[path] = copy
        parent, _, name = path.rpartition("/")
        self.children.setdefault(parent, set()).add(name)
        if copy.entry.is_dir:
            self.children.setdefault(path, set())

    def _place(self, i, idx, path, entry):
        copy = Copy(i, entry)
        self.copies.append(copy)
        prev = self.visible.get(path)
        if prev is None:
            kind = ADDED
        else:
            pidx = self.stack.indexes[prev.layer]
            if not same_content(pidx, prev.entry, idx, entry):
                kind = CHANGED
            elif not same_meta(pidx, prev.entry, idx, entry):
                kind = META
            else:
                kind = DUP
            if prev.entry.is_dir and not entry.is_dir:
                self._remove_below(i, path, HIDDEN, path)
            prev.hidden_by, prev.cause = i, _FATE[kind]
        self._show(path, copy)
        moved = self._came_from.get(path)
        if not (entry.is_dir and kind == DUP and not moved):   # a directory listed again: no change
            self._event(Event(i, path, kind, copy=copy, prev=prev, moved=moved))
