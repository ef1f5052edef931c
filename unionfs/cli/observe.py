"""``unionfs which|trace|stats|status``: the commands that look into live mounts.

They need no privileges beyond access to the mount: everything is read through it, from the
``user.unionfs.*`` xattrs (unionfs/which.py), the trace stream (unionfs/trace.py) and the stats
(unionfs/stats.py) of the ``.unionfs`` control directory. JSON output is ``{"version": 1,
"command": ..., ...}``, documented in docs/observing.md.
"""
import argparse
import json
import os

from .. import mounts, stats, trace, which
from ..errors import ObserveError
from ..messages import human
from .output import emit_json, emit_table, write

COMMANDS = {"which", "trace", "stats", "status"}


def register(sub):
    w = sub.add_parser("which", help="which layer serves a path of a mount (--all: every layer)")
    w.add_argument("path", help="a path inside a unionfs mount")
    w.add_argument("--all", action="store_true", help="every layer holding something there")
    _formats(w, csv=True)
    t = sub.add_parser("trace", help="stream copy-ups, whiteouts, opaque dirs and redirects",
                       usage="unionfs trace MNT [--json] | unionfs trace [--json] [--mount MNT] "
                             "-- COMMAND [ARG...]")
    t.add_argument("--mount", help="the mount a traced COMMAND works in (default: found from "
                                   "the working directory or the command's paths)")
    t.add_argument("rest", nargs=argparse.REMAINDER, metavar="MNT | -- COMMAND")
    _formats(t)
    s = sub.add_parser("stats", help="request counts, latencies, caches, copy-ups of a mount")
    s.add_argument("mount")
    s.add_argument("--prom", action="store_true", help="Prometheus text format")
    _formats(s, csv=True)
    st = sub.add_parser("status", help="every unionfs mount: layers, daemon, memory, CPU")
    _formats(st, csv=True)


def _formats(p, csv=False):
    p.add_argument("--json", action="store_true", help="versioned JSON (fields: docs/observing.md)")
    if csv:
        p.add_argument("--csv", action="store_true", help="the table as CSV")


def run(args):
    """Run a parsed command; its failures reach cli.main, which prints them."""
    return {"which": cmd_which, "trace": cmd_trace, "stats": cmd_stats,
            "status": cmd_status}[args.command](args)


# ---- which --------------------------------------------------------------------------------

_STATE_TEXT = {"serves": "serves", "merged": "merged", "whiteout": "whited out",
               "hidden": "hidden"}


def _what(e):
    text = _STATE_TEXT.get(e["state"], e["state"])
    if e.get("opaque") and e["state"] != "hidden":
        text += ", opaque"
    if e.get("hides_below"):
        text += ", hides below"
    return text


def _layer_name(e):
    return "upper" if e["role"] == "upper" else "lower %d" % e["index"]


def cmd_which(args):
    mnt, _rel = mounts.find_mount(args.path)
    doc = which.read_report(args.path)
    if not doc["layers"]:
        raise ObserveError("%s: no layer holds this path" % args.path)
    if args.json:
        emit_json("which", dict(mount=mnt, **{k: v for k, v in doc.items() if k != "v"}))
        return 0
    if not args.all and not args.csv:
        e = next((e for e in doc["layers"] if e["state"] == "serves"), None)
        if e is None:
            w = doc["layers"][0]
            write("%s: deleted (%s in %s)\n" % (args.path, _STATE_TEXT[w["state"]], _layer_name(w)))
        else:
            write("%s: %s %s\n" % (args.path, _layer_name(e), e["source"]))
        return 0
    rows = [[_layer_name(e), _what(e), e["type"], e.get("size"), e["source"], e["rel"]]
            for e in doc["layers"]]
    emit_table(["LAYER", "WHAT", "TYPE", "SIZE", "SOURCE", "PATH"], rows, args)
    return 0


# ---- trace --------------------------------------------------------------------------------

def cmd_trace(args):
    rest = list(args.rest)
    if rest and rest[0] == "--":
        if len(rest) < 2:
            raise ObserveError("trace: no command after --")
        return trace_command(args, rest[1:])
    if "--json" in rest:
        rest.remove("--json")
        args.json = True
    if len(rest) != 1:
        raise ObserveError("trace: expected MNT, or -- COMMAND")
    mnt, _ = mounts.find_mount(rest[0])
    fd = trace.open_trace(mnt)
    try:
        for ev in trace.read_events(fd):
            if ev["event"] in ("tick", "subscribed"):
                continue
            write(json.dumps(ev, ensure_ascii=False) + "\n" if args.json else
                  trace.event_line(ev) + "\n")
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
    return 0


def trace_command(args, command):
    """Run one command in a new session and report what its requests changed in the layers."""
    mnt = trace.command_mount(command, args.mount)
    status, events = trace.trace_command(mnt, command)
    if args.json:
        emit_json("trace", {"mount": mnt, "argv": command, "status": status, "events": events})
    else:
        for line in trace.narrate(events) or ["(no changes to the layers)"]:
            write(line + "\n")
    return status if status >= 0 else 128 - status


# ---- stats and status ---------------------------------------------------------------------

def cmd_stats(args):
    mnt, _ = mounts.find_mount(args.mount)
    doc = mounts.read_stats(mnt)
    if args.json:
        emit_json("stats", dict(mount=mnt, **{k: v for k, v in doc.items() if k != "v"}))
        return 0
    if args.prom:
        write(stats.prometheus(doc, mnt))
        return 0
    rows = [[op, s["count"], s["p50_us"], s["p99_us"]] for op, s in doc["ops"].items()]
    if args.csv:
        emit_table(["OP", "COUNT", "P50_US", "P99_US"], rows, args)
        return 0
    write("%s: daemon pid %d, up %.0f s\n\n" % (mnt, doc["pid"], doc["uptime_s"]))
    emit_table(["OP", "COUNT", "P50_US", "P99_US"], rows)
    served = ", ".join("%s %d" % ("upper" if l["role"] == "upper" else "lower %d" % l["index"], n)
                       for l, n in zip(doc["layers"], doc["lookups"]["per_layer"]))
    c = doc["cache"]
    write("\nlookups served: %s; not found %d\n" % (served, doc["lookups"]["negative"]))
    write("resolution cache: %d hits, %d misses, %d entries\n" % (c["hits"], c["misses"],
                                                                  c["entries"]))
    write("copy-ups %d (%s), whiteouts %d, opaque dirs %d, redirects %d, open files %d\n" % (
        doc["copyups"], human(doc["copyup_bytes"]), doc["whiteouts"], doc["opaque_dirs"],
        doc["redirects"], doc["open_files"]))
    return 0


def cmd_status(args):
    recs = stats.all_status()
    if args.json:
        emit_json("status", {"mounts": recs})
        return 0

    def layers(r):
        n = len(r["layers"])
        up = any(l["role"] == "upper" for l in r["layers"])
        return "%d lower%s" % (n - up, " + upper" if up else "") if n else ""

    rows = [[r["mount"], r["state"], r["pid"], layers(r),
             human(r["rss_bytes"]) if r["rss_bytes"] is not None else None,
             r["cpu_seconds"], r["fds"], r["open_files"]] for r in recs]
    emit_table(["MOUNT", "STATE", "PID", "LAYERS", "RSS", "CPU_S", "FDS", "OPEN_FILES"], rows,
               args)
    return 0
