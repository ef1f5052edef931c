"""The commands that look into live mounts: which, trace, stats, status.

cli.py calls ``register(subparsers)`` and hands any command in COMMANDS to ``run(args)``. They
need no privileges beyond access to the mount: everything is read through it, from the
``user.unionfs.*`` xattrs (unionfs/which.py) and the ``.unionfs`` control directory
(unionfs/control.py). JSON output is ``{"version": 1, "command": ..., ...}``, documented in
docs/observing.md; every failure is one ``unionfs: ...`` line and exit status 1.
"""
import argparse
import errno
import json
import os
import subprocess
import threading

from . import control, mounts, observe, which
from .messages import human
from .inspect.output import emit_json, emit_table, write
from .spec import SpecError

COMMANDS = {"which", "trace", "stats", "status"}


class ObserveError(SpecError):
    """A one-line failure (printed by cli.main as `unionfs: ...`, exit status 1)."""


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
    """Run a parsed command. ObserveError and OSError reach cli.main, which prints them."""
    return {"which": cmd_which, "trace": cmd_trace, "stats": cmd_stats,
            "status": cmd_status}[args.command](args)


# ---- finding the mount --------------------------------------------------------------------

def unionfs_mounts():
    """Mountpoints of unionfs mounts, in mount table order."""
    return [m.mountpoint for m in mounts.unionfs_mounts()]


def find_mount(path):
    """(mountpoint, merged path) of a path inside a unionfs mount; the last component is not
    followed if it is a symlink."""
    a = os.path.abspath(path)
    parent, name = os.path.split(a)
    a = os.path.join(os.path.realpath(parent), name) if name else os.path.realpath(a)
    best = None
    for mp in unionfs_mounts():
        if (a == mp or a.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) > len(best)):
            best = mp
    if best is None:
        raise ObserveError("%s: not inside a unionfs mount" % path)
    rel = "/" + a[len(best):].strip("/")
    return best, rel


def read_stats(mnt, timeout=None):
    """The stats document, from the mount's own daemon (unionfs/mounts.py)."""
    return mounts.read_stats(mnt, timeout)


# ---- which --------------------------------------------------------------------------------

def which_doc(full):
    """The which report of a path through the mount's xattrs. Regular files and directories carry
    them; for anything else (symlinks, devices, deleted names) the parent is asked."""
    try:
        st = os.lstat(full)
        direct = (st.st_mode & 0o170000) in (0o100000, 0o040000)
    except FileNotFoundError:
        direct = False
    parent, name = os.path.split(full)
    try:
        if direct:
            data = os.getxattr(full, which.LAYERS, follow_symlinks=False)
        else:
            data = os.getxattr(parent, which.LAYERS + ":" + name)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            raise ObserveError("%s: the mount does not answer %s (not a unionfs mount, or an "
                               "older one)" % (full, which.LAYERS))
        raise
    return json.loads(data)


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
    mnt, rel = find_mount(args.path)
    doc = which_doc(args.path)
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

def read_events(fd):
    """Events from an open trace file, as dicts, until EOF."""
    buf = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line:
                yield json.loads(line)


def _upper_rel(ev):
    return "upper" + ev["path"]


def describe(ev):
    """One event as a phrase."""
    kind = ev["event"]
    if kind == "copyup":
        what = "copy-up of %s from %s" % (ev["path"], _from(ev["layer"], ev["from"]))
        if ev["bytes"]:
            what += " (%s, %s)" % (human(ev["bytes"]), _us(ev["us"]))
            what += "; the lower copy stays, %s now stored twice" % human(ev["bytes"])
        return what
    if kind == "whiteout":
        what = "whiteout at %s; lower untouched" % _upper_rel(ev)
        if ev.get("lower_bytes") is not None:
            where = "the image" if ev.get("lower_from", "").startswith("sha256:") else \
                "lower %d" % ev["lower_layer"]
            what += "; %s still ships %s for it" % (where, human(ev["lower_bytes"]))
        return what
    if kind == "opaque":
        return "opaque directory at %s%s" % (
            _upper_rel(ev), " (hides the lower %s)" % ev["path"] if ev.get("hides") else "")
    if kind == "redirect":
        return "redirect at %s: its lower content is read from %s" % (
            _upper_rel(ev), ev["redirect"])
    if kind == "op":
        return _op_text(ev)
    if kind == "dropped":
        return "(%d events lost: the reader was too slow)" % ev["count"]
    return kind


def _from(index, source):
    return "lower %d (%s)" % (index, source)


def _us(us):
    return "%.1f ms" % (us / 1000) if us >= 1000 else "%d µs" % us


def _op_text(ev):
    text = "%s %s" % (ev["op"], ev["path"])
    if ev.get("to"):
        text += " %s" % ev["to"]
    if ev["op"] == "write" and not ev["errno"]:
        text += " (%s)" % human(ev["bytes"])
    if ev["errno"]:
        text += ": %s" % os.strerror(ev["errno"])
    return text


def _cause_text(ev):
    text = "%s %s" % (ev.get("op"), ev.get("op_path") or "")
    return text + (" %s" % ev["op_to"] if ev.get("op_to") else "")


def narrate(events):
    """Lines: each request with what it caused ("unlink /f → whiteout at upper/f; ...")."""
    lines = []
    pending = {}  # tid -> union events waiting for their request's op event
    for ev in events:
        kind = ev["event"]
        if kind in ("subscribed", "tick"):
            continue
        if kind == "op":
            caused = pending.pop(ev.get("tid"), [])
            lines.append(_op_text(ev) + "".join(
                (" → " if i == 0 else "; ") + describe(c) for i, c in enumerate(caused)))
        elif kind != "dropped" and ev.get("op") in observe.CHANGING:
            pending.setdefault(ev.get("tid"), []).append(ev)
        elif kind == "dropped":
            lines.append(describe(ev))
        else:
            lines.append("%s → %s" % (_cause_text(ev), describe(ev)))
    for caused in pending.values():
        for c in caused:
            lines.append("%s → %s" % (_cause_text(c), describe(c)))
    return lines


def _trace_path(mnt):
    return os.path.join(mnt, control.NAME, "trace")


def _open_trace(mnt):
    try:
        return os.open(_trace_path(mnt), os.O_RDONLY)
    except FileNotFoundError:
        raise ObserveError("%s: no %s/trace (a unionfs older than this command?)"
                           % (mnt, control.NAME))


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
    mnt, _ = find_mount(rest[0])
    fd = _open_trace(mnt)
    try:
        for ev in read_events(fd):
            if ev["event"] in ("tick", "subscribed"):
                continue
            write(json.dumps(ev, ensure_ascii=False) + "\n" if args.json else
                  (_op_text(ev) if ev["event"] == "op" else
                   "%s → %s" % (_cause_text(ev), describe(ev))) + "\n")
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
    return 0


def _command_mount(args, command):
    if args.mount:
        return find_mount(args.mount)[0]
    words = [w for a in command[1:] for w in a.split() if "/" in w]  # `sh -c "..."` too
    for p in [os.getcwd()] + words:
        try:
            return find_mount(p)[0]
        except ObserveError:
            continue
    raise ObserveError("trace: neither the working directory nor a path of the command is in a "
                       "unionfs mount (use --mount MNT)")


def trace_command(args, command):
    """Run one command in a new session and report what its requests changed in the layers."""
    mnt = _command_mount(args, command)
    fd = _open_trace(mnt)
    events = []
    exited, target_known, done = threading.Event(), threading.Event(), threading.Event()
    target = [None]

    def reader():
        # the command's events were all emitted before its requests returned; after it exits,
        # reading the stats numbers the last event and wakes this stream (a tick): read up to it
        try:
            for ev in read_events(fd):
                if ev["event"] == "subscribed":
                    continue
                if ev["event"] != "tick":
                    events.append(ev)
                elif exited.is_set():
                    target_known.wait(5)
                if target[0] is not None and ev.get("seq", 0) >= target[0]:
                    return
        finally:
            done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        try:
            proc = subprocess.Popen(command, start_new_session=True)
        except OSError as e:
            raise ObserveError("trace: %s: %s" % (command[0], e.strerror))
        status = proc.wait()
        exited.set()
        target[0] = read_stats(mnt)["events"]["seq"]
        target_known.set()
        done.wait(control.TICK * 3)
    finally:
        os.close(fd)
    mine = [ev for ev in events if ev.get("sid") == proc.pid or ev["event"] == "dropped"]
    if args.json:
        emit_json("trace", {"mount": mnt, "argv": command, "status": status, "events": mine})
    else:
        for line in narrate(mine) or ["(no changes to the layers)"]:
            write(line + "\n")
    return status if status >= 0 else 128 - status


# ---- stats --------------------------------------------------------------------------------

def prometheus(doc, mnt):
    """The stats document in the Prometheus text exposition format."""
    m = 'mount="%s"' % _prom_escape(mnt)
    out = []

    def metric(name, kind, help_text, samples):
        out.append("# HELP unionfs_%s %s" % (name, help_text))
        out.append("# TYPE unionfs_%s %s" % (name, kind))
        for labels, value in samples:
            out.append("unionfs_%s{%s} %s" % (name, ",".join([m] + labels), value))

    ops = doc["ops"]
    metric("requests_total", "counter", "FUSE requests served, by operation.",
           [(['op="%s"' % op], s["count"]) for op, s in ops.items()])
    metric("request_latency_seconds", "gauge",
           "Latency quantiles of the most recent requests, by operation.",
           [(['op="%s"' % op, 'quantile="%s"' % q], "%.9g" % (s[k] / 1e6))
            for op, s in ops.items() for q, k in (("0.5", "p50_us"), ("0.99", "p99_us"))])
    metric("lookups_served_total", "counter", "Path resolutions answered by each layer.",
           [(['layer="%d"' % i, 'dir="%s"' % _prom_escape(doc["layers"][i]["dir"])], n)
            for i, n in enumerate(doc["lookups"]["per_layer"])])
    metric("lookups_negative_total", "counter", "Path resolutions no layer answered.",
           [([], doc["lookups"]["negative"])])
    for name, key, help_text in (
            ("cache_hits_total", ("cache", "hits"), "Resolution cache hits."),
            ("cache_misses_total", ("cache", "misses"), "Resolution cache misses."),
            ("copyups_total", ("copyups",), "Entries copied up."),
            ("copyup_bytes_total", ("copyup_bytes",), "Data bytes copied up."),
            ("whiteouts_total", ("whiteouts",), "Whiteouts written."),
            ("opaque_dirs_total", ("opaque_dirs",), "Directories made opaque."),
            ("redirects_total", ("redirects",), "Directory redirects set."),
            ("open_files", ("open_files",), "Files open through the mount.")):
        v = doc
        for k in key:
            v = v[k]
        metric(name, "gauge" if name == "open_files" else "counter", help_text, [([], v)])
    return "\n".join(out) + "\n"


def _prom_escape(s):
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def cmd_stats(args):
    mnt, _ = find_mount(args.mount)
    doc = read_stats(mnt)
    if args.json:
        emit_json("stats", dict(mount=mnt, **{k: v for k, v in doc.items() if k != "v"}))
        return 0
    if args.prom:
        write(prometheus(doc, mnt))
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


# ---- status -------------------------------------------------------------------------------

STATUS_TIMEOUT = 3.0   # seconds a daemon may take to answer; one hung mount must not hang status


def mount_status(mnt, holders=None):
    """A mount's status record. Its daemon is the /dev/fuse holder of its connection (what the
    stats claim counts only where the kernel cannot tell: unionfs/mounts.py), never a process
    whose command line merely names the mount."""
    import psutil
    rec = {"mount": mnt, "state": "ok", "pid": None, "layers": [], "rss_bytes": None,
           "cpu_seconds": None, "fds": None, "threads": None, "open_files": None}
    claimed = None
    try:
        doc = read_stats(mnt, STATUS_TIMEOUT)
        claimed = doc["pid"]
        rec["layers"] = doc["layers"]
        rec["open_files"] = doc["open_files"]
    except (OSError, SpecError, ValueError, KeyError, TypeError) as e:
        rec["state"] = {errno.ENOTCONN: "dead", errno.ETIMEDOUT: "no answer"}.get(
            getattr(e, "errno", None), "no stats")
    try:
        rec["pid"] = mounts.daemon_of(mnt, claimed, holders)
    except SpecError:    # unmounted meanwhile
        pass
    if rec["pid"] is not None:
        try:
            p = psutil.Process(rec["pid"])
            with p.oneshot():
                cpu = p.cpu_times()
                rec["rss_bytes"] = p.memory_info().rss
                rec["cpu_seconds"] = round(cpu.user + cpu.system, 2)
                rec["fds"] = p.num_fds()
                rec["threads"] = p.num_threads()
        except (psutil.Error, OSError):
            pass
    return rec


def cmd_status(args):
    holders = mounts.fuse_holders()
    recs = [mount_status(m, holders) for m in unionfs_mounts()]
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
