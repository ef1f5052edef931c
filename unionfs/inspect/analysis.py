"""The analyses, as plain data (lists of dicts, JSON-ready): layers, a path's history, find,
versions of a file, the merged tree with badges, and what a layer or a second image changes.

Paths in results are absolute ('/etc/passwd'); layers are numbered from 1 (the base). Waste
lives in waste.py. Each function takes a Stack (stack.py) and, where it helps to reuse one, a
Timeline built from it.
"""
import difflib
import fnmatch

from .layerindex import InspectError
from .timeline import (ADDED, CHANGED, DUP, HIDDEN, META, OPAQUE, RENAMED, WHITEOUT, Timeline,
                       meta_changes, same_content, same_meta)

TEXT_LIMIT = 1 << 20   # larger files are not diffed


def rel_path(path):
    """'/a/b/' -> 'a/b'; refuses '..' (nothing outside a layer is ever named)."""
    parts = [p for p in str(path).split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InspectError("%s: '..' is not allowed in a path" % path)
    return "/".join(parts)


def abs_path(rel):
    return "/" + rel


def _n(layer):
    return None if layer is None else layer + 1


def layers(stack):
    """[LayerInfo.to_dict()] bottom first."""
    return [i.to_dict() for i in stack.infos]


# ---- history ---------------------------------------------------------------------------------

def _detail(ev):
    text = _what(ev)
    if ev.moved and ev.kind != RENAMED:
        return "%s%srenamed from %s" % (text, ", " if text else "", abs_path(ev.moved))
    return text


def _what(ev):
    new, old = ev.copy.entry if ev.copy else None, ev.prev.entry if ev.prev else None
    if ev.kind == CHANGED:
        if old.kind != new.kind:
            return "%s -> %s" % (old.kind, new.kind)
        if new.kind == "file":
            return "content changed (%d -> %d bytes)" % (old.size, new.size)
        if new.kind == "symlink":
            return "target %s -> %s" % (old.target, new.target)
        return "changed"
    if ev.kind == META:
        extra = " (the whole file, %d bytes, shipped again)" % new.size if new.kind == "file" else ""
        return "metadata only: %s%s" % (meta_changes(old, new), extra)
    if ev.kind == DUP:
        return "identical copy shipped again (%d bytes)" % new.size
    if ev.kind == WHITEOUT:
        if ev.via:
            return "removed: parent %s whited out" % abs_path(ev.via)
        return "whited out" if ev.hid else "whiteout (nothing below to remove)"
    if ev.kind == OPAQUE:
        if ev.via:
            return "removed: parent %s made opaque" % abs_path(ev.via)
        return "made opaque: lower contents hidden"
    if ev.kind == HIDDEN:
        return "removed: parent %s replaced by a non-directory" % abs_path(ev.via)
    if ev.kind == RENAMED:
        if ev.via and ev.via != ev.path:
            return "removed: parent %s renamed to %s" % (abs_path(ev.via), abs_path(ev.moved))
        return "renamed to %s" % abs_path(ev.moved)
    return ""


def event_dict(stack, ev):
    info = stack.infos[ev.layer]
    entry = ev.copy.entry if ev.copy else None
    return {"layer": ev.layer + 1, "created_by": info.created_by, "event": ev.kind,
            "type": entry.kind if entry else None, "size": entry.size if entry else 0,
            "via": abs_path(ev.via) if ev.via else None, "detail": _detail(ev)}


def history(stack, path, timeline=None):
    """The path's timeline: {"path", "visible", "origin_layer", "events": [...]}."""
    tl = timeline or Timeline(stack)
    rel = rel_path(path)
    vis = tl.visible.get(rel)
    return {"path": abs_path(rel), "visible": vis is not None,
            "origin_layer": _n(vis.layer) if vis else None,
            "events": [event_dict(stack, ev) for ev in tl.events.get(rel, [])]}


# ---- find, versions, tree -------------------------------------------------------------------

def _match(pattern, rel):
    """A pattern with a '/' matches the whole path; one without, the last component."""
    if "/" in pattern:
        return fnmatch.fnmatchcase(abs_path(rel), "/" + pattern.lstrip("/"))
    return fnmatch.fnmatchcase(rel.rpartition("/")[2], pattern)


def copy_dict(c):
    e = c.entry
    return {"path": abs_path(c.path), "layer": c.layer + 1, "type": e.kind, "size": e.size,
            "status": "visible" if c.hidden_by is None else c.cause,
            "hidden_by": _n(c.hidden_by)}


def find(stack, pattern, all_layers=False, timeline=None):
    """Copies whose path matches pattern: the visible ones, or with all_layers every copy any
    layer ships (shadowed and deleted ones included). Sorted by path, then layer."""
    tl = timeline or Timeline(stack)
    copies = tl.copies if all_layers else tl.visible.values()
    hits = [c for c in copies if c.path and _match(pattern, c.path)]
    hits.sort(key=lambda c: (c.path.split("/"), c.layer))
    return [copy_dict(c) for c in hits]


def versions(stack, path, timeline=None):
    """[copy_dict] of every copy of path, bottom first."""
    tl = timeline or Timeline(stack)
    rel = rel_path(path)
    return [copy_dict(c) for c in tl.copies if c.path == rel]


def version(stack, path, layer=None, timeline=None):
    """(LayerIndex, Entry) of the file at path: the one layer N ships, else the visible one."""
    rel = rel_path(path)
    if layer is None:
        tl = timeline or Timeline(stack)
        c = tl.visible.get(rel)
        if c is None:
            raise InspectError("%s: not in %s (find --all-layers shows deleted copies)"
                               % (abs_path(rel), stack.name))
        idx, entry = stack.indexes[c.layer], c.entry
    else:
        idx = stack.indexes[stack.check_layer(layer)]
        entry = idx.entries.get(rel)
        if entry is None:
            have = [i + 1 for i, x in enumerate(stack.indexes) if rel in x.entries]
            raise InspectError("%s: layer %d does not ship it (%s)" % (
                abs_path(rel), layer, "copies in layers " + ", ".join(map(str, have))
                if have else "no layer does"))
    if entry.kind != "file":
        what = "a symlink to %s" % entry.target if entry.kind == "symlink" else "a " + entry.kind
        raise InspectError("%s: is %s, not a regular file" % (abs_path(rel), what))
    return idx, entry


def tree(stack, layer=None, timeline=None):
    """The merged tree as it is after layer N (default: the top), each entry with its origin
    layer and a badge for what layer N did to it: 'added', 'changed', 'metadata-only',
    'unchanged'; names layer N removed are listed too, badge 'deleted' (with 'via' and the cause:
    'whiteout', 'opaque', 'hidden' or 'renamed'). Opaque directories of layer N carry
    'opaque': true. A directory layer N renamed is 'added' at its new path, its entries with the
    layers they come from, and 'deleted' (cause 'renamed') at the old one. A timeline of stack
    built up to layer N (for the top: the full one) is reused; any other is not used."""
    n = len(stack) if layer is None else stack.check_layer(layer) + 1
    tl = timeline if timeline is not None and timeline.upto == n else Timeline(stack, upto=n)
    top = n - 1
    badges = {}
    out = []
    for path, evs in tl.events.items():
        for ev in evs:
            if ev.layer != top:
                continue
            if ev.kind in (ADDED, CHANGED, META):
                badges[path] = ev.kind
            elif ev.kind in (WHITEOUT, OPAQUE, HIDDEN, RENAMED) and ev.prev is not None:
                e = ev.prev.entry
                out.append({"path": abs_path(path), "type": e.kind, "size": e.size,
                            "mode": e.mode, "uid": e.uid, "gid": e.gid, "layer": ev.prev.layer + 1,
                            "badge": "deleted", "cause": ev.kind,
                            "via": abs_path(ev.via) if ev.via else None, "opaque": False,
                            "target": e.target})
    opaque = stack.indexes[top].opaque if n else set()
    for path, c in tl.visible.items():
        e = c.entry
        out.append({"path": abs_path(path), "type": e.kind, "size": e.size, "mode": e.mode,
                    "uid": e.uid, "gid": e.gid, "layer": c.layer + 1,
                    "badge": badges.get(path, "unchanged"), "cause": None, "via": None,
                    "opaque": path in opaque, "target": e.target})
    out.sort(key=lambda r: (r["path"].split("/"), r["badge"] != "deleted"))
    return out


# ---- changes ---------------------------------------------------------------------------------

def _change(change, path, old, new, layer=None, detail=""):
    e = new or old
    return {"path": abs_path(path), "change": change, "type": e.kind,
            "old_type": old.kind if old else None, "size": new.size if new else 0,
            "old_size": old.size if old else 0, "layer": layer, "detail": detail}


def layer_changes(stack, layer, timeline=None):
    """What layer N changed relative to the layers below it: [{"path", "change" ('added',
    'changed', 'deleted'), "type", "old_type", "size", "old_size", "layer", "detail"}], sorted;
    each change also keeps its two sides for unified_diff under the private key '_sides'."""
    i = stack.check_layer(layer)
    tl = timeline or Timeline(stack)
    out = []
    for path, evs in tl.events.items():
        for ev in evs:
            if ev.layer != i or ev.kind == DUP or (ev.kind == OPAQUE and not ev.via):
                continue
            if ev.kind == WHITEOUT and not ev.hid:
                continue
            old = ev.prev.entry if ev.prev else None
            new = ev.copy.entry if ev.copy else None
            change = "added" if ev.kind == ADDED else "changed" if new else "deleted"
            if change == "changed" and new.is_dir and old.is_dir and ev.kind != META:
                continue
            rec = _change(change, path, old, new, layer, _detail(ev))
            rec["_sides"] = (ev.prev and (stack.indexes[ev.prev.layer], old), ev.copy and (
                stack.indexes[ev.copy.layer], new))
            out.append(rec)
    return _sorted(out)


def _sorted(changes):
    # a path deleted and added again by one layer: the deletion first
    order = {"deleted": 0, "changed": 1, "added": 2}
    return sorted(changes, key=lambda r: (r["path"].split("/"), order[r["change"]]))


def image_changes(stack_a, stack_b):
    """What differs from image A's tree to image B's: same records as layer_changes (the
    'layer' of a record is the layer of B, or of A for a deletion, that the entry comes from)."""
    va, vb = Timeline(stack_a).visible, Timeline(stack_b).visible
    out = []
    for path in va.keys() | vb.keys():
        a, b = va.get(path), vb.get(path)
        ia = stack_a.indexes[a.layer] if a else None
        ib = stack_b.indexes[b.layer] if b else None
        if a is None:
            rec = _change("added", path, None, b.entry, b.layer + 1)
        elif b is None:
            rec = _change("deleted", path, a.entry, None, a.layer + 1)
        elif not same_content(ia, a.entry, ib, b.entry):
            rec = _change("changed", path, a.entry, b.entry, b.layer + 1, "content changed")
        elif not same_meta(ia, a.entry, ib, b.entry):
            rec = _change("changed", path, a.entry, b.entry, b.layer + 1,
                          "metadata only: " + meta_changes(a.entry, b.entry))
        else:
            continue
        rec["_sides"] = (a and (ia, a.entry), b and (ib, b.entry))
        out.append(rec)
    return _sorted(out)


def public(changes):
    """The change records without their private '_sides'."""
    return [{k: v for k, v in r.items() if k != "_sides"} for r in changes]


def as_text(data):
    """data as a str if it is text (UTF-8 without NUL), else None."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _text(idx, entry):
    """The lines of a text file, or None for a binary or too large one."""
    if entry.size > TEXT_LIMIT:
        return None
    text = as_text(idx.read_bytes(entry.path, TEXT_LIMIT))
    return None if text is None else text.splitlines(keepends=True)


def unified_diff(change):
    """Unified diff text of a record whose sides are regular files: a changed file against its
    old content, an added one against /dev/null, a deleted one to /dev/null (as ``diff -N``
    and git show them); '' when there is nothing to show (not a file, same content, empty)."""
    old, new = change.get("_sides", (None, None))
    if not (old or new) or any(s and s[1].kind != "file" for s in (old, new)):
        return ""
    if old and new and same_content(*old, *new):
        return ""
    p = change["path"]
    a_name, b_name = ("a" + p) if old else "/dev/null", ("b" + p) if new else "/dev/null"
    a, b = (_text(*old) if old else []), (_text(*new) if new else [])
    if a is None or b is None:
        return "Binary files %s and %s differ\n" % (a_name, b_name)
    out = []
    for line in difflib.unified_diff(a, b, a_name, b_name):
        out.append(line)
        if not line.endswith("\n"):
            out.append("\n\\ No newline at end of file\n")
    return "".join(out)
