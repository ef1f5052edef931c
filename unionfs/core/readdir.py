"""Merged directory listings: each name once, top layer first, whiteouts removed.

A listing is taken whole when a directory is opened and served from that snapshot, so offsets are
stable for seekdir/telldir and a program may delete entries while it iterates. The components of
a merged directory already stop at the first opaque layer (namei.py), so opaque directories need
no special case here.
"""
from .layers import WH


def merged_entries(node):
    """[(name, S_IFMT code)] of a merged directory, in layer order."""
    seen = set()
    out = []
    for layer, rel, _hit in node.comps:
        for name, code in layer.list(rel):
            if name in seen:
                continue
            seen.add(name)
            if code != WH:
                out.append((name, code))
    return out


def is_empty(node):
    """True when the merged directory shows no entry (whiteouts do not count)."""
    seen = set()
    for layer, rel, _hit in node.comps:
        for name, code in layer.list(rel):
            if name in seen:
                continue
            if code != WH:
                return False
            seen.add(name)
    return True
