"""Renamed directories (``overlay.redirect``) seen exactly as the union sees them.

A directory the union renamed carries a redirect: layers below it are searched at the old path
(unionfs/core/namei.py: a relative redirect is a name in the parent's lower directories, an absolute
one a path from each lower layer's root). Nothing here re-implements that: the union's own
``resolve_child`` walks layers read through ``LowerLayer`` (every marker format, any layer
directory, an upper included), and core/readdir.py's ``walk`` walks a merged tree.

Used by the inspection timeline (what a layer's renamed directories show, entry by entry, with
the layer each entry comes from).
"""
from ..core.layers import LowerLayer, join
from ..core.namei import Node, resolve_child, resolve_root
from ..core.readdir import walk


def lower_layers(roots):
    """Read-only layers over directories given top first (index = position, as lookup wants)."""
    return [LowerLayer(root, i) for i, root in enumerate(roots)]


def resolve(layers, path):
    """Node of a merged path ('a/b', '' the root), or None."""
    node = resolve_root(layers)
    for name in (p for p in path.split("/") if p):
        if node is None or not node.is_dir:
            return None
        node = resolve_child(layers, node, name)
    return node


def below_top(node):
    """The node without its top layer's component (what the layers below show), or None."""
    top = node.comps[0][0].index
    comps = [c for c in node.comps if c[0].index != top]
    return Node(comps) if comps else None


def layer_renames(roots, redirects):
    """What the renamed directories of the top layer of roots (layer dirs, top first) show.

    redirects: the top layer's redirected directories ('a/b'). Returns [(path, shipped, source)]
    for each outermost renamed directory and every name below it, parents first: shipped is
    True when the top layer holds the path itself; source is (position in roots, path in that
    layer) of what the layers below show there (the renamed original), or None.
    """
    layers = lower_layers(roots)
    out = []
    done = []
    for path in sorted(redirects):
        if any(path.startswith(d + "/") for d in done):
            continue   # inside a renamed directory: its walk covers it
        node = resolve(layers, path)
        if node is None or not node.is_dir:
            continue
        done.append(path)
        out.append((path, node.comps[0][0].index == 0, _top(below_top(node))))
        for rel, child, parent in walk(layers, node):
            shipped = child.comps[0][0].index == 0
            if shipped:   # the top layer holds it: what was there before it, if anything
                lower = below_top(parent)
                child = lower and resolve_child(layers, lower, rel.rpartition("/")[2])
            out.append((join(path, rel), shipped, _top(child)))
    return out


def _top(node):
    if node is None:
        return None
    layer, rel, _hit = node.comps[0]
    return layer.index, rel

