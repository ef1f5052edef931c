"""``unionfs history|find|cat|waste``, and the image forms of ``diff`` and ``commit --dry-run``
(which cli/image.py hands over here): looking into images with unionfs/inspect/.

``waste --ci`` exits 1 when a rule fails. Tables also come as ``--csv``; ``--json`` documents
carry ``"version": 1``.
"""
import argparse
import base64
import sys

from ..image.store import Store, default_root
from ..inspect import analysis, stack as stackmod, waste as wastemod
from ..inspect.commitplan import plan
from ..inspect.layerindex import InspectError
from ..inspect.stack import open_target
from . import output

COMMANDS = {"history", "find", "cat", "waste"}
TARGET = "IMAGE|MNT"
TARGET_HELP = ("an image in the store (NAME[:TAG], id or id prefix) or the mountpoint of an "
               "image mount (its writable upper is the top layer)")


def _common(p, table=True):
    p.add_argument("--store", metavar="DIR",
                   help="image store (default: $UNIONFS_STORE, else %s)" % default_root())
    p.add_argument("--json", action="store_true", help="JSON output (fields: docs/images.md, "
                   "'JSON fields'; top-level \"version\": 1)")
    if table:
        p.add_argument("--csv", action="store_true", help="the table as CSV")


def register(sub):
    p = sub.add_parser("history", help="a path's timeline across the layers of an image",
                       description="Every layer that added, changed, re-shipped or removed the "
                       "path, with the command that made the layer. Give MNT/PATH (a path in an "
                       "image mount) or IMAGE PATH.")
    p.add_argument("target", metavar="MNT/PATH|IMAGE")
    p.add_argument("path", nargs="?", metavar="PATH", help="the path in IMAGE")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate 'created by'")
    _common(p)

    p = sub.add_parser("find", help="find files in an image, shadowed and deleted copies too",
                       description="GLOB (fnmatch; '*' also matches '/') is matched against the "
                       "name when it has no '/', else against the whole path.")
    p.add_argument("image", metavar=TARGET, help=TARGET_HELP)
    p.add_argument("glob", metavar="GLOB")
    p.add_argument("--all-layers", action="store_true",
                   help="every copy any layer ships, with its fate (default: the visible ones)")
    _common(p)

    p = sub.add_parser("cat", help="print a file of an image, any layer's version")
    p.add_argument("image", metavar=TARGET, help=TARGET_HELP)
    p.add_argument("path", metavar="PATH")
    p.add_argument("--layer", type=int, metavar="N",
                   help="the copy layer N ships (1 = the base), even if a later layer deleted it")
    _common(p, table=False)

    p = sub.add_parser("waste", help="bytes an image ships that are never visible; CI rules",
                       description=wastemod.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar=TARGET, help=TARGET_HELP)
    p.add_argument("--ci", action="store_true",
                   help="check dive's CI rules, one PASS/FAIL line each; exit 1 on a FAIL")
    p.add_argument("--lowest-efficiency", metavar="X", help="rule lowestEfficiency (implies --ci)")
    p.add_argument("--highest-wasted-bytes", metavar="N",
                   help="rule highestWastedBytes (implies --ci)")
    p.add_argument("--highest-user-wasted-percent", metavar="P",
                   help="rule highestUserWastedPercent, a ratio 0-1 (implies --ci)")
    p.add_argument("--ci-config", metavar="FILE",
                   help="read the rules from a .dive-ci file (options given here win)")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="paths listed in the table (default 20; 0: all)")
    _common(p)


# ---- helpers --------------------------------------------------------------------------------------

def _store(args):
    return Store(args.store)


def _by(info, args):
    by = " ".join((info.created_by or "").split())
    if not getattr(args, "no_trunc", False) and len(by) > 45:
        by = by[:44] + "…"
    return by


def _layers_json(st):
    return {"image": st.name, "image_id": st.image_id, "layers": analysis.layers(st)}


# ---- verbs ----------------------------------------------------------------------------------------

def cmd_history(args):
    store = _store(args)
    if args.path is None:
        mnt, inner = stackmod.mount_of(args.target, stackmod.unionfs_mounts())
        if mnt is None:
            raise InspectError("%s: not inside a unionfs mount (give MNT/PATH, or IMAGE PATH)"
                               % args.target)
        st = stackmod.from_mount(store, mnt)
    else:
        st, inner = open_target(store, args.target), args.path
    h = analysis.history(st, inner)
    if args.json:
        output.emit_json("history", dict(_layers_json(st), **h))
        return 0
    rows = [(e["layer"], e["event"], e["type"], e["size"], _by(st.infos[e["layer"] - 1], args),
             e["detail"]) for e in h["events"]]
    if not args.csv:
        state = ("visible, from layer %d" % h["origin_layer"]) if h["visible"] else "not visible"
        output.write("%s in %s: %s\n" % (h["path"], st.name, state))
    output.emit_table(("LAYER", "EVENT", "TYPE", "SIZE", "CREATED BY", "DETAIL"), rows, args)
    return 0


def cmd_find(args):
    st = open_target(_store(args), args.image)
    hits = analysis.find(st, args.glob, args.all_layers)
    if args.json:
        output.emit_json("find", dict(_layers_json(st), all_layers=args.all_layers, matches=hits))
        return 0
    header = ("PATH", "LAYER", "TYPE", "SIZE", "STATUS", "HIDDEN BY")
    output.emit_table(header, [(h["path"], h["layer"], h["type"], h["size"], h["status"],
                                h["hidden_by"]) for h in hits], args)
    return 0


def cmd_cat(args):
    st = open_target(_store(args), args.image)
    idx, entry = analysis.version(st, args.path, args.layer)
    if args.json:
        data = idx.read_bytes(entry.path)
        rec = {"path": "/" + entry.path, "layer": [x is idx for x in st.indexes].index(True) + 1, "size": entry.size,
               "sha256": idx.digest(entry.path)}
        rec["text"] = analysis.as_text(data)
        rec["base64"] = None if rec["text"] is not None else base64.b64encode(data).decode()
        output.emit_json("cat", dict(image=st.name, **rec))
        return 0
    sys.stdout.flush()
    idx.copy_to(entry.path, sys.stdout.buffer.write)
    sys.stdout.buffer.flush()
    return 0


def _ci_rules(args):
    rules = wastemod.read_ci_config(args.ci_config) if args.ci_config else {}
    given = {"lowestEfficiency": args.lowest_efficiency,
             "highestWastedBytes": args.highest_wasted_bytes,
             "highestUserWastedPercent": args.highest_user_wasted_percent}
    rules.update({k: v for k, v in given.items() if v is not None})
    ci = args.ci or args.ci_config is not None or any(v is not None for v in given.values())
    return ci, rules


def cmd_waste(args):
    st = open_target(_store(args), args.image)
    ci, rules = _ci_rules(args)
    checks = None
    report = wastemod.waste(st)
    if ci:
        checks = wastemod.evaluate_ci(report, rules)
    failed = bool(checks) and any(c["status"] == "FAIL" for c in checks)
    if args.json:
        doc = dict(_layers_json(st), **report)
        if checks is not None:
            doc["ci"] = {"pass": not failed, "rules": checks}
        output.emit_json("waste", doc)
    elif args.csv:
        output.emit_csv(("path", "layer", "size", "cause", "hidden_by"),
                        [(c["path"], c["layer"], c["size"], c["cause"], c["hidden_by"])
                         for c in report["copies"]])
    else:
        _print_waste(st, report, args.top)
        for c in checks or []:
            output.write("%s: %s: %s\n" % (c["status"], c["rule"], c["message"]))
    return 1 if failed else 0


def _print_waste(st, r, top):
    ratio = r["user_wasted_percent"]
    causes = ", ".join("%s %d" % kv for kv in r["by_cause"].items())
    output.write("%s: %d layers, %d bytes of file content\n"
                 "wasted: %d bytes (%s)\n"
                 "efficiency: %.4f   user wasted percent: %s\n\n" % (
                     st.name, len(st), r["total_bytes"], r["wasted_bytes"], causes,
                     r["efficiency"], "n/a" if ratio is None else "%.4f" % ratio))
    paths = r["paths"] if top <= 0 else r["paths"][:top]
    output.write(output.table_text(("WASTED", "COPIES", "CAUSES", "PATH"), [
        (p["wasted_bytes"], p["copies"], ",".join(sorted(p["causes"])), p["path"])
        for p in paths]))


def cmd_diff_images(args):
    """`unionfs diff IMAGE --layer N` and `unionfs diff IMAGE_A IMAGE_B`."""
    store = _store(args)
    if args.other is not None and args.layer is not None:
        raise InspectError("diff: give IMAGE --layer N, or IMAGE_A IMAGE_B, not both")
    cache = {}
    st = open_target(store, args.target, cache)
    if args.other is None:
        changes = analysis.layer_changes(st, args.layer)
        what = {"image": st.name, "layer": st.infos[args.layer - 1].to_dict()}
    else:
        other = open_target(store, args.other, cache)
        changes = analysis.image_changes(st, other)
        what = {"image_a": st.name, "image_b": other.name}
    if args.json:
        recs = analysis.public(changes)
        if args.unified:
            for rec, ch in zip(recs, changes):
                rec["unified_diff"] = analysis.unified_diff(ch) or None
        output.emit_json("diff", dict(what, changes=recs))
        return 0
    if args.csv:
        output.emit_csv(("change", "path", "type", "size", "old_size", "layer", "detail"),
                        [(c["change"], c["path"], c["type"], c["size"], c["old_size"], c["layer"],
                          c["detail"]) for c in changes])
        return 0
    for c in changes:
        output.write("%s %s\n" % (c["change"][0].upper(), c["path"]))
        if args.unified:
            output.write(analysis.unified_diff(c) or (
                "  (%s)\n" % c["detail"] if c["detail"].startswith("metadata") else ""))
    return 0


def emit_upper_diff(args, lines):
    """The A/C/D lines of an upper's diff as --json or --csv."""
    names = {"A": "added", "C": "changed", "D": "deleted"}
    recs = [{"path": ln[2:], "change": names[ln[0]]} for ln in lines]
    if args.json:
        output.emit_json("diff", {"target": args.target, "changes": recs})
    else:
        output.emit_csv(("change", "path"), [(r["change"], r["path"]) for r in recs])
    return 0


def print_commit_plan(args, store, changes):
    """`unionfs commit --dry-run`: the tar entries and the size the commit would add."""
    p = plan(changes, store)
    if args.json:
        output.emit_json("commit", dict(dry_run=True, target=args.target, **p))
        return 0
    rows = [(e["type"], e["size"], "%04o" % e["mode"], e["name"] + (
        " -> " + e["link"] if e["link"] else "")) for e in p["entries"]]
    output.emit_table(("TYPE", "SIZE", "MODE", "ENTRY"), rows, args)
    if not args.csv:
        output.write("would add layer %s: %d entries, %d bytes of file content, tar %d bytes%s\n"
                     % (p["diff_id"], len(p["entries"]), p["content_bytes"], p["tar_bytes"],
                        " (already in the store: 0 bytes new)" if p["layer_exists"] else ""))
    return 0


VERBS = {"history": cmd_history, "find": cmd_find, "cat": cmd_cat, "waste": cmd_waste}


def run(args):
    if getattr(args, "json", False) and getattr(args, "csv", False):
        raise InspectError("--json and --csv exclude each other")
    return VERBS[args.command](args)
