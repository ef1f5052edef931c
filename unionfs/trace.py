"""A mount's trace stream read from outside: opening ``MNT/.unionfs/trace`` (unionfs/control.py),
its events (the format is observe.py's), tracing the requests of one command, and each event
told as a phrase (``unlink /f → whiteout at upper/f; ...``)."""
import json
import os
import subprocess
import threading

from . import control, mounts, observe
from .errors import ObserveError
from .messages import human


def open_trace(mnt):
    """An fd of the mount's trace stream."""
    try:
        return os.open(os.path.join(mnt, control.NAME, "trace"), os.O_RDONLY)
    except FileNotFoundError:
        raise ObserveError("%s: no %s/trace (a unionfs older than this command?)"
                           % (mnt, control.NAME))


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


# ---- tracing one command ------------------------------------------------------------------

def command_mount(command, mount=None):
    """The mount a traced command works in: mount's, else the one holding the working directory
    or a path named in the command (words of a `sh -c "..."` too)."""
    if mount:
        return mounts.find_mount(mount)[0]
    words = [w for a in command[1:] for w in a.split() if "/" in w]
    for p in [os.getcwd()] + words:
        try:
            return mounts.find_mount(p)[0]
        except mounts.MountsError:
            continue
    raise ObserveError("trace: neither the working directory nor a path of the command is in a "
                       "unionfs mount (use --mount MNT)")


def trace_command(mnt, command):
    """Run one command in a new session; (its wait status, the events its requests caused)."""
    fd = open_trace(mnt)
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
        target[0] = mounts.read_stats(mnt)["events"]["seq"]
        target_known.set()
        done.wait(control.TICK * 3)
    finally:
        os.close(fd)
    return status, [ev for ev in events if ev.get("sid") == proc.pid or ev["event"] == "dropped"]


# ---- events as phrases --------------------------------------------------------------------

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
        return op_text(ev)
    if kind == "dropped":
        return "(%d events lost: the reader was too slow)" % ev["count"]
    return kind


def _from(index, source):
    return "lower %d (%s)" % (index, source)


def _us(us):
    return "%.1f ms" % (us / 1000) if us >= 1000 else "%d µs" % us


def op_text(ev):
    """A request event as the request: `rename /a /b: Permission denied`."""
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


def event_line(ev):
    """One event of a live stream as a line: a request, or what caused a change and the change."""
    return op_text(ev) if ev["event"] == "op" else "%s → %s" % (_cause_text(ev), describe(ev))


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
            lines.append(op_text(ev) + "".join(
                (" → " if i == 0 else "; ") + describe(c) for i, c in enumerate(caused)))
        elif kind != "dropped" and ev.get("op") in observe.CHANGING:
            pending.setdefault(ev.get("tid"), []).append(ev)
        elif kind == "dropped":
            lines.append(describe(ev))
        else:
            lines.append(event_line(ev))
    for caused in pending.values():
        lines.extend(event_line(c) for c in caused)
    return lines
