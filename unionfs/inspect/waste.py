"""Wasted bytes: file content an image ships that is never visible, and dive's CI rules over it.

A copy of a file is wasted when a later layer hides it: ``overwritten`` (new content),
``metadata-only`` (same content, other mode/owner/mtime/xattrs: the later layer ships the whole
file again), ``duplicate`` (the very same file again) or ``deleted`` (a whiteout, an opaque
directory, or a non-directory over a parent). Each hidden copy counts once, with its own size;
the copy that is visible counts nothing. (dive counts every copy of a path, the visible one too:
dive issue #684.) Hard-linked names of one file in one layer are one copy, wasted only when every
name is hidden.

    efficiency          = (total - wasted) / total       (1.0 for an image without file content)
    user_wasted_percent = wasted / user bytes             (a ratio, as dive's; user bytes are all
                                                           layers but the base; null if those
                                                           are 0 while something is wasted)

CI rules, dive's names and semantics (a rule set to ``disabled`` is skipped):
``lowestEfficiency`` fails when efficiency < X; ``highestWastedBytes`` when wasted > X (bytes,
``B``/``KB``/``MB``/``GB`` (powers of 1000) or ``KiB``/``MiB``/``GiB``); ``highestUserWastedPercent``
when user_wasted_percent > X (a ratio between 0 and 1). Unset rules take dive's defaults.
"""
import re

from .layerindex import InspectError
from .timeline import DELETED, DUP, META, OVERWRITTEN, Timeline

CAUSES = (OVERWRITTEN, META, DUP, DELETED)
RULES = ("lowestEfficiency", "highestWastedBytes", "highestUserWastedPercent")
DEFAULT_RULES = {"lowestEfficiency": "0.9", "highestWastedBytes": "disabled",
                 "highestUserWastedPercent": "0.1"}
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20,
          "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40}
_BYTES = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def wasted_copies(timeline):
    """[{"path", "layer", "size", "cause", "hidden_by"}] of every wasted copy (size > 0)."""
    groups = {}
    for c in timeline.copies:
        if c.entry.kind == "file":
            key = (c.layer, c.entry.inode or c.entry.path)   # a renamed copy: the same entry
            groups.setdefault(key, []).append(c)
    out = []
    for cs in groups.values():
        if any(c.hidden_by is None for c in cs):
            continue
        c = min(cs, key=lambda x: x.path)
        if c.entry.size:
            out.append({"path": "/" + c.path, "layer": c.layer + 1, "size": c.entry.size,
                        "cause": c.cause, "hidden_by": c.hidden_by + 1})
    out.sort(key=lambda r: (r["path"], r["layer"]))
    return out


def waste(stack, timeline=None):
    """The waste report (see the module docstring; docs/images.md lists the fields)."""
    tl = timeline or Timeline(stack)
    copies = wasted_copies(tl)
    total = sum(i.size for i in stack.infos)
    user = total - (stack.infos[0].size if stack.infos else 0)
    wasted = sum(r["size"] for r in copies)
    by_cause = {c: 0 for c in CAUSES}
    paths = {}
    for r in copies:
        by_cause[r["cause"]] += r["size"]
        p = paths.setdefault(r["path"], {"path": r["path"], "wasted_bytes": 0, "copies": 0,
                                         "causes": {}})
        p["wasted_bytes"] += r["size"]
        p["copies"] += 1
        p["causes"][r["cause"]] = p["causes"].get(r["cause"], 0) + r["size"]
    return {
        "total_bytes": total, "visible_bytes": total - wasted, "wasted_bytes": wasted,
        "user_bytes": user,
        "efficiency": (total - wasted) / total if total else 1.0,
        "user_wasted_percent": wasted / user if user else (0.0 if not wasted else None),
        "by_cause": by_cause,
        "paths": sorted(paths.values(), key=lambda p: (-p["wasted_bytes"], p["path"])),
        "copies": copies,
    }


# ---- CI rules ---------------------------------------------------------------------------------

def parse_bytes(value):
    m = _BYTES.match(str(value))
    unit = m and _UNITS.get(m.group(2).lower())
    if not unit:
        raise InspectError("highestWastedBytes: %r is not a byte count (e.g. 20MB, 5000, 1GiB)"
                           % value)
    return int(float(m.group(1)) * unit)


def _ratio(name, value):
    try:
        v = float(value)
    except ValueError:
        v = -1.0
    if not 0.0 <= v <= 1.0:
        raise InspectError("%s: %r is not a ratio between 0 and 1" % (name, value))
    return v


def read_ci_config(path):
    """The rules of a .dive-ci file ({name: value string}): its 'rules:' keys, YAML-ish, one
    'name: value' per line ('#' comments, quotes allowed)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InspectError("%s: cannot read the CI config (%s)" % (path, getattr(e, "strerror", e)))
    rules = {}
    for line in lines:
        key, sep, value = line.split("#", 1)[0].partition(":")
        key = key.strip().rpartition(".")[2]
        if sep and key in RULES:
            rules[key] = value.strip().strip("'\"")
    return rules


def evaluate_ci(report, rules):
    """[{"rule", "status" (PASS|FAIL|SKIP), "threshold", "value", "message"}] for dive's three
    rules; rules: {name: value string}, missing names take dive's defaults."""
    values = dict(DEFAULT_RULES, **{k: v for k, v in rules.items() if v is not None})
    out = []
    for name in RULES:
        raw = str(values[name]).strip()
        rec = {"rule": name, "status": "SKIP", "threshold": None, "value": None,
               "message": "disabled"}
        out.append(rec)
        if raw.lower() == "disabled":
            continue
        if name == "lowestEfficiency":
            t, v = _ratio(name, raw), report["efficiency"]
            fail = v < t
            msg = "efficiency %.4f %s threshold %s" % (v, "<" if fail else ">=", raw)
        elif name == "highestWastedBytes":
            t, v = parse_bytes(raw), report["wasted_bytes"]
            fail = v > t
            msg = "%d bytes wasted %s threshold %d" % (v, ">" if fail else "<=", t)
        else:
            t, v = _ratio(name, raw), report["user_wasted_percent"]
            fail = v is None or v > t
            shown = "n/a (no user bytes)" if v is None else "%.4f" % v
            msg = "user wasted ratio %s %s threshold %s" % (shown, ">" if fail else "<=", raw)
        rec.update(status="FAIL" if fail else "PASS", threshold=t, value=v, message=msg)
    return out
