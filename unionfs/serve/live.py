"""Where a mount's changes come from, for the page's animations and its refreshed tree.

``follow(explorer, publish, stop)`` runs in a thread for a mount with an upper. It reads the
mount's trace stream (``MNT/.unionfs/trace``, newline-delimited JSON, format in
unionfs/observe.py) and passes each copy-up, whiteout, opaque, redirect and changing request on
as it comes. When the stream cannot be opened (a unionfs without one, all reader slots taken,
no permission) it polls the upper directory instead, every ``POLL`` seconds, and reports what
appeared there: whiteouts, opaque directories, and new entries (a copy-up when a lower layer
holds the path, else a new name).

Either way, after a burst of changes the explorer re-reads the upper (``Explorer.refresh``) and
a ``refresh`` message tells the page to reload what it shows. ``publish(kind, data)`` receives
``("trace", event)``, ``("refresh", {"gen": N})`` and ``("live", {"mode": ...})``.
"""
import json
import os
import threading
import time

from .. import mounts
from ..inspect.layerindex import LayerIndex

POLL = 0.5          # seconds between polls of the upper (fallback)
SETTLE = 0.15       # seconds without a new change before the tree is rebuilt
CHANGES = frozenset(("copyup", "whiteout", "opaque", "redirect", "op"))


class Refresher:
    """Rebuilds the explorer's state once changes have settled for SETTLE seconds, in its own
    thread, then publishes ``refresh``."""

    def __init__(self, explorer, publish, stop):
        self.explorer = explorer
        self.publish = publish
        self.stop = stop
        self.due = None
        self.cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True, name="unionfs-serve-refresh").start()

    def touch(self, delay=SETTLE):
        with self.cond:
            self.due = time.monotonic() + delay
            self.cond.notify()

    def _wait(self):
        """Wait until a refresh is due; False when stopping."""
        with self.cond:
            while not self.stop.is_set():
                now = time.monotonic()
                if self.due is not None and now >= self.due:
                    self.due = None
                    return True
                self.cond.wait(0.5 if self.due is None else self.due - now)
        return False

    def _run(self):
        while self._wait():
            try:
                gen = self.explorer.refresh()
            except OSError:          # the upper changed under the walk: try again shortly
                self.touch()
                continue
            self.publish("refresh", {"gen": gen})


def layer_number(explorer, ev):
    """The stack's layer number (1 = the base) of the layer a trace event names: matched by
    its directory or DiffID, else from the daemon's index (0 is the top)."""
    infos = explorer.state.stack.infos
    src = ev.get("from") or ev.get("lower_from")
    for info in infos:
        if src is not None and src in (info.dir, info.diff_id):
            return info.number
    idx = ev.get("layer", ev.get("lower_layer"))
    return len(infos) - idx if isinstance(idx, int) and 0 <= idx < len(infos) else None


def _stream_lines(f, stop):
    """JSON objects from the trace stream until stop is set (each read returns within the
    daemon's tick, a second)."""
    buf = b""
    while not stop.is_set():
        data = f.read(65536)
        if not data:
            return
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


def follow_trace(explorer, publish, stop, f):
    ref = Refresher(explorer, publish, stop)
    publish("live", {"mode": "trace"})
    for ev in _stream_lines(f, stop):
        if ev.get("event") in CHANGES:
            ev["stack_layer"] = layer_number(explorer, ev)
            if ev["event"] != "op":
                publish("trace", ev)
            if ev["event"] != "op" or not ev.get("errno"):
                ref.touch()


def _snapshot(upper):
    idx = LayerIndex.read(upper)
    return idx, {p: (e.kind, e.size, e.mtime_ns) for p, e in idx.entries.items()}


def poll_changes(explorer, old, new):
    """Trace-like events for what differs between two reads of the upper."""
    (oidx, oent), (nidx, nent) = old, new
    top = len(explorer.state.stack)
    view = explorer.state.view(top)
    events = []
    for p in sorted(nidx.whiteouts - oidx.whiteouts):
        events.append({"event": "whiteout", "path": "/" + p, "upper": nidx.real(p)})
    for p in sorted(nidx.opaque - oidx.opaque):
        events.append({"event": "opaque", "path": "/" + p, "upper": nidx.real(p), "hides": True})
    for p in sorted(nent.keys() - oent.keys()):
        below = view.row("/" + p)
        if below is not None and below["layer"] < top and "deleted" not in below["badges"]:
            events.append({"event": "copyup", "path": "/" + p, "bytes": nent[p][1],
                           "stack_layer": below["layer"]})
        else:
            events.append({"event": "op", "op": "create", "path": "/" + p, "errno": 0})
    changed = [p for p in oent.keys() & nent.keys() if oent[p] != nent[p]]
    return events, bool(events or changed or (oent.keys() - nent.keys()))


def poll_upper(explorer, publish, stop, upper):
    ref = Refresher(explorer, publish, stop)
    publish("live", {"mode": "poll"})
    prev = _snapshot(upper)
    while not stop.wait(POLL):
        try:
            cur = _snapshot(upper)
        except OSError:
            continue
        events, changed = poll_changes(explorer, prev, cur)
        prev = cur
        for ev in events:
            publish("trace", dict(ev, polled=True))
        if changed:
            ref.touch(0)


def open_trace(mnt):
    """The mount's trace stream, served by its own daemon (unionfs/mounts.py), opened for
    reading; None when it cannot be."""
    try:
        return os.fdopen(mounts.open_control(mnt, "trace"), "rb", buffering=0)
    except (OSError, mounts.MountsError):
        return None


def follow(explorer, publish, stop):
    """Follow the explorer's mount until stop is set (see the module docstring)."""
    upper = explorer.live_upper
    if upper is None:
        return
    f = open_trace(explorer.mount)
    if f is None:
        explorer.live = "poll"
        poll_upper(explorer, publish, stop, upper)
        return
    explorer.live = "trace"
    with f:
        follow_trace(explorer, publish, stop, f)


def start(explorer, publish):
    """follow() in a daemon thread; returns the stop Event."""
    stop = threading.Event()
    if explorer.live_upper is not None:
        threading.Thread(target=follow, args=(explorer, publish, stop), daemon=True,
                         name="unionfs-serve-live").start()
    return stop
