"""The explorer's JSON API as plain functions: what the page asks, answered from unionfs.inspect.

An ``Explorer`` holds one ``State`` at a time: the stack, and per layer N the merged tree after
layer N grouped by directory (a ``TreeView``), built when first asked for and kept. The page
loads a tree one directory at a time (``directory``), so a 100k-file image costs one
directory's rows per request. A mount's state is replaced (``refresh``) when its upper changes:
the lower layers' indexes and views are kept, only the upper is read again.

Badges of a row (``row_badges``): ``added``, ``changed``, ``metadata-only`` (the layer shipped
the file again for a mode/owner/mtime change), ``deleted``, plus ``whiteout`` on the name the
layer's whiteout sits on and ``opaque`` on a directory the layer made opaque. A directory row
also counts the badges in its subtree (``changes``), so the page can show where to look.
"""
import threading
from collections import Counter

from ..inspect import analysis, stack as stackmod, waste as wastemod
from ..inspect.layerindex import InspectError
from ..inspect.timeline import Timeline

PAGE = 500          # rows per directory request, at most
CHANGES_MAX = 2000  # change records per layer request, at most
WASTE_PATHS = 50    # paths listed in the waste panel
VIEWS_KEPT = 8      # layer trees kept in memory, the top one included (~25 MB per 100k entries)
BADGES = ("added", "changed", "metadata-only", "deleted", "whiteout", "opaque")
# a row is kept as a tuple (a 100k-file tree is ~25 MB of them, not ~120 MB of dicts)
_ROW_KEYS = ("name", "type", "size", "mode", "layer", "badge", "cause", "via", "opaque", "target",
             "badges")


def row_badges(row):
    """The badges of a row of analysis.tree (see the module docstring)."""
    out = () if row["badge"] == "unchanged" else (row["badge"],)
    if row["cause"] == "whiteout" and row["via"] is None:
        out += ("whiteout",)
    if row["opaque"]:
        out += ("opaque",)
    return out


def parent_of(path):
    """'/a/b' -> '/a'; '/a' -> '/'."""
    return path.rpartition("/")[0] or "/"


def child_of(parent, name):
    return ("" if parent == "/" else parent) + "/" + name


def norm_path(path):
    return analysis.abs_path(analysis.rel_path(path or "/"))


class TreeView:
    """The merged tree after one layer, grouped by directory, with subtree badge counts."""

    def __init__(self, stack, layer, timeline=None):
        self.layer = layer
        self.children = {"/": []}
        self.counts = Counter()
        self.subtree = {}
        for r in analysis.tree(stack, layer, timeline):
            parent, _, name = r["path"].rpartition("/")
            badges = row_badges(r)
            r["name"], r["badges"] = name, badges
            self.children.setdefault(parent or "/", []).append(tuple(r[k] for k in _ROW_KEYS))
            if badges:
                self.counts.update(badges)
                self._count_up(r["path"], badges)

    def _count_up(self, path, badges):
        while path != "/":
            path = parent_of(path)
            self.subtree.setdefault(path, Counter()).update(badges)

    def _row(self, parent, t):
        row = dict(zip(_ROW_KEYS, t))
        row["path"] = path = child_of(parent, row["name"])
        row["badges"] = list(row["badges"])
        if row["type"] == "dir":
            row["children"] = len(self.children.get(path, ()))
            row["changes"] = dict(self.subtree.get(path, {}))
        return row

    def row(self, path):
        """The visible row at path (a deleted one if nothing is visible there), or None."""
        parent, name = parent_of(path), path.rpartition("/")[2]
        found = [t for t in self.children.get(parent, ()) if t[0] == name]
        return self._row(parent, found[-1]) if found else None

    def directory(self, path, offset=0, limit=PAGE):
        rows = self.children.get(path)
        if rows is None:
            raise InspectError("%s: no such directory after layer %d" % (path, self.layer))
        return {"path": path, "layer": self.layer, "offset": offset, "total": len(rows),
                "entries": [self._row(path, t) for t in rows[offset:offset + limit]]}


def _is_view(key):
    return isinstance(key, tuple) and key[0] == "view"


class State:
    """One view of the stack, replaced whole when a mount's upper changes. What it computes
    (a tree per layer, the full timeline, change lists, the waste report) is built once, on
    first use, outside the lock that guards the cache, so one slow build blocks only the
    requests that wait for the same thing."""

    def __init__(self, stack, gen, cache=None):
        self.stack = stack
        self.gen = gen
        self.cache = dict(cache or {})
        self._building = {}
        self._lock = threading.Lock()

    def _once(self, key, build):
        with self._lock:
            if key in self.cache:
                return self.cache[key]
            klock = self._building.setdefault(key, threading.Lock())
        with klock:
            with self._lock:
                if key in self.cache:
                    return self.cache[key]
            value = build()
            with self._lock:
                self.cache[key] = value
            return value

    def view(self, layer):
        return self._once(("view", layer), lambda: self._new_view(layer))

    def _new_view(self, layer):
        """A TreeView, dropping the oldest other views beyond VIEWS_KEPT (the top's stays); the
        top layer's tree is read from the full timeline, which the changes and waste share."""
        top = layer == len(self.stack)
        view = TreeView(self.stack, layer, self.timeline if top else None)
        with self._lock:
            old = [k for k in self.cache if _is_view(k) and k[1] != len(self.stack)]
            for k in old[:max(0, len(old) + 2 - VIEWS_KEPT)]:
                del self.cache[k]
        return view

    @property
    def timeline(self):
        return self._once("timeline", lambda: Timeline(self.stack))

    def layer_changes(self, layer):
        return self._once(("changes", layer), lambda: analysis.public(
            analysis.layer_changes(self.stack, layer, self.timeline)))

    @property
    def waste(self):
        def build():
            rep = wastemod.waste(self.stack, self.timeline)
            return dict(rep, paths=rep["paths"][:WASTE_PATHS], copies=len(rep["copies"]))
        return self._once("waste", build)


def refreshed_stack(stack):
    """A copy of stack whose top layer (a mount's upper) is read again; the others are shared."""
    top = stack.infos[-1]
    new = stackmod.Stack(name=stack.name, image_id=stack.image_id, cache=None,
                         infos=list(stack.infos[:-1]), indexes=list(stack.indexes[:-1]))
    new.add(top.dir, diff_id=top.diff_id, created_by=top.created_by, created=top.created,
            comment=top.comment, upper=top.upper)
    return new


class Explorer:
    """The model behind the page: ``summary``, ``directory``, ``layer``, ``waste``, ``history``."""

    def __init__(self, stack, mount=None):
        self.mount = mount
        self.state = State(stack, 1)
        self.live = None   # how a mount's changes arrive: "trace", "poll" or None (set by live.py)

    @property
    def live_upper(self):
        """The upper directory of a mount, whose changes the page follows (None otherwise)."""
        top = self.state.stack.infos[-1] if self.state.stack.infos else None
        return top.dir if self.mount and top is not None and top.upper else None

    def refresh(self):
        """Read the upper again and replace the state (views of the lower layers are kept)."""
        old = self.state
        stack = refreshed_stack(old.stack)
        top = len(stack)
        views = {k: v for k, v in old.cache.items() if _is_view(k) and k[1] != top}
        self.state = State(stack, old.gen + 1, views)
        self.warm()
        return self.state.gen

    def warm(self):
        """Build what the first screen asks for: the top layer's tree and changes, the waste."""
        st = self.state
        if len(st.stack):
            st.view(len(st.stack))
            st.layer_changes(len(st.stack))
            st.waste

    def warm_layers(self):
        """Build the trees of the layers below the top (as many as are kept), top down, so a
        click on a layer is answered at once; run in the background."""
        st = self.state
        for n in range(len(st.stack) - 1, max(0, len(st.stack) - VIEWS_KEPT), -1):
            if self.state is not st:
                return
            st.view(n)

    # ---- the API ------------------------------------------------------------------------------

    def _layer(self, st, layer):
        if layer in (None, ""):
            return len(st.stack)
        try:
            n = int(layer)
        except ValueError:
            raise InspectError("layer %r is not a number" % layer)
        st.stack.check_layer(n)
        return n

    def summary(self):
        st = self.state
        return {"name": st.stack.name, "image_id": st.stack.image_id, "mount": self.mount,
                "live": self.live, "gen": st.gen, "top": len(st.stack),
                "layers": analysis.layers(st.stack)}

    def directory(self, path="/", layer=None, offset=0, limit=PAGE):
        st = self.state
        n = self._layer(st, layer)
        doc = st.view(n).directory(norm_path(path), max(0, int(offset)),
                                   max(1, min(PAGE, int(limit))))
        doc["gen"] = st.gen
        return doc

    def layer(self, layer=None):
        """What layer N changed (the change list, capped) and the badge counts of its tree."""
        st = self.state
        n = self._layer(st, layer)
        changes = st.layer_changes(n)
        return {"layer": st.stack.infos[n - 1].to_dict(), "gen": st.gen,
                "counts": {b: st.view(n).counts.get(b, 0) for b in BADGES},
                "total": len(changes), "changes": changes[:CHANGES_MAX]}

    def waste(self):
        st = self.state
        return dict(st.waste, gen=st.gen)

    def history(self, path):
        st = self.state
        return dict(analysis.history(st.stack, path, st.timeline), gen=st.gen)

