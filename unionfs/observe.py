"""What a mount is doing, FUSE-free: request counters and latencies, and the event stream.

Owned here:

* ``OpStats``: per FUSE operation, a count and the latencies of the last ``RESERVOIR`` requests.
  The hot path takes no lock: ``next()`` on an ``itertools.count`` and ``deque.append`` are each
  one C call under the GIL, so concurrent requests never lose a count.
* ``Bus``: the event stream (copy-up, whiteout, opaque, redirect, and the changing requests that
  caused them). With no subscriber an emit costs one truth test. Each subscriber has its own
  bounded queue: a slow reader loses the oldest-undelivered events (counted, and announced to it
  by a ``dropped`` event), never grows the daemon's memory, never slows the writers.
* ``Recorder``: the union's observer (core/observe.py's interface, ``union.observer``), installed
  by whoever serves the mount; it keeps the counters the union does not (lookups served per
  layer, opaque dirs, redirects) and turns each change into an event carrying its cause, the
  request the FUSE server names in ``core.observe.OPERATION``.

Event format (version 1, one JSON object per line, stable: the web explorer reads it). Every
event has ``v`` (1), ``seq`` (increasing; merged writes keep the last one), ``time`` (Unix
seconds), ``event``, and when known ``pid``/``sid`` (the requesting process and its session) and
``tid`` (the daemon thread: events of one request share it):

* ``copyup``: ``path``, ``layer`` (index), ``from`` (the layer's directory, or the image layer's
  DiffID), ``bytes`` (data copied), ``us`` (microseconds), ``op``/``op_path``/``op_to`` (cause);
* ``whiteout``: ``path``, ``upper`` (the real path of the whited-out name), ``lower_layer`` and
  ``lower_from`` (the first lower layer holding what it hides), ``lower_bytes`` (the
  size of that entry if it is a regular file), ``op``...;
* ``opaque``: ``path``, ``upper``, ``hides`` (true if lower content is now hidden), ``op``...;
* ``redirect``: ``path`` (the new name), ``upper``, ``redirect`` (the stored value), ``op``...;
* ``op``: a changing request as the kernel sent it, after it ran: ``op`` (write, create, mkdir,
  mknod, symlink, link, unlink, rmdir, rename, chmod, chown, truncate, utimens, setxattr,
  removexattr, fallocate), ``path``, ``to`` (rename/link target, symlink text), ``errno`` (0 on
  success); writes carry ``bytes`` and ``requests``, consecutive writes of one file by one
  thread being merged into one event;
* ``subscribed`` (first line of a stream), ``tick`` (idle keep-alive), ``dropped`` (``count``).
"""
import collections
import itertools
import json
import os
import threading
import time

from .core.observe import CHANGING, OPERATION, Observer

VERSION = 1
RESERVOIR = 1024   # latencies kept per operation (the most recent ones)
QUEUE_MAX = 10_000  # events buffered per subscriber


def _count_of(counter):
    """The next value an itertools.count would return (its repr is 'count(N)')."""
    return int(repr(counter)[6:-1])


def percentile(sorted_values, q):
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class OpStats:
    """Per-operation request counts and recent latencies (nanoseconds)."""

    def __init__(self):
        self._ops = {}
        self._lock = threading.Lock()

    def slot(self, name):
        """(counter, reservoir) for an operation; created once, then read without a lock."""
        s = self._ops.get(name)
        if s is None:
            with self._lock:
                s = self._ops.setdefault(
                    name, (itertools.count(), collections.deque(maxlen=RESERVOIR)))
        return s

    def record(self, name, ns):
        count, lat = self.slot(name)
        next(count)
        lat.append(ns)

    def snapshot(self):
        """{op: {"count", "p50_us", "p99_us"}} sorted by name."""
        out = {}
        for name, (count, lat) in sorted(self._ops.items()):
            values = sorted(list(lat))
            out[name] = {"count": _count_of(count),
                         "p50_us": round(percentile(values, 0.50) / 1000, 1),
                         "p99_us": round(percentile(values, 0.99) / 1000, 1)}
        return out


class Subscriber:
    """One reader's bounded queue of events."""

    def __init__(self, maxlen=QUEUE_MAX):
        self.queue = collections.deque()
        self.maxlen = maxlen
        self.dropped = 0
        self.cond = threading.Condition(threading.Lock())

    def put(self, ev):
        with self.cond:
            q = self.queue
            if q and ev["event"] == "op" and ev["op"] == "write":
                last = q[-1]
                if (last["event"] == "op" and last["op"] == "write" and not ev["errno"]
                        and not last["errno"] and last.get("tid") == ev.get("tid")
                        and last["path"] == ev["path"]):
                    q[-1] = dict(last, seq=ev["seq"], bytes=last["bytes"] + ev["bytes"],
                                 requests=last["requests"] + 1)
                    return
            if len(q) >= self.maxlen:
                self.dropped += 1
                return
            q.append(ev)
            self.cond.notify()

    def wake(self):
        """Have a waiting reader return now (with nothing, if nothing came)."""
        with self.cond:
            self.cond.notify()

    def get(self, timeout):
        """Events ready now (waiting up to timeout for the first), a ``dropped`` event first if
        some were lost. [] on timeout."""
        with self.cond:
            if not self.queue and not self.dropped:
                self.cond.wait(timeout)
            out = []
            if self.dropped:
                out.append({"v": VERSION, "event": "dropped", "count": self.dropped,
                            "time": round(time.time(), 6)})
                self.dropped = 0
            out.extend(self.queue)
            self.queue.clear()
            return out


class Bus:
    """Fan-out of events to subscribers; emitting with none costs one truth test."""

    def __init__(self):
        self.subscribers = ()
        self.last_seq = 0
        self._lock = threading.Lock()

    def subscribe(self, maxlen=QUEUE_MAX):
        sub = Subscriber(maxlen)
        with self._lock:
            self.subscribers = self.subscribers + (sub,)
        return sub

    def unsubscribe(self, sub):
        with self._lock:
            self.subscribers = tuple(s for s in self.subscribers if s is not sub)

    def emit(self, ev):
        if not self.subscribers:
            return
        with self._lock:
            self.last_seq += 1
            ev = {"v": VERSION, "seq": self.last_seq, "time": round(time.time(), 6), **ev}
            for sub in self.subscribers:
                sub.put(ev)


def encode(ev):
    return json.dumps(ev, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8", "surrogateescape") + b"\n"


class Recorder(Observer):
    """The union's observer (``union.observer``, core/observe.py's interface): counters and
    events. `layer_name` names a layer directory in events and reports (the image store's
    ``store.layer_source`` for mounts the commands start; the directory itself by default)."""

    def __init__(self, union, layer_name=None):
        self.union = union
        if layer_name is not None:
            self.layer_name = layer_name
        self.ops = OpStats()
        self.bus = Bus()
        self.served = [0] * len(union.layers)  # resolutions (cache misses) per serving layer
        self.negative = 0
        self.opaques = 0
        self.redirects = 0
        self.context = None  # set by the FUSE adapter: () -> pid of the requesting process
        self.started = time.time()

    @property
    def tracing(self):
        return bool(self.bus.subscribers)

    @staticmethod
    def clock():
        return time.perf_counter_ns()

    # -- hooks called by the union

    def resolved(self, node):
        """A lookup that missed the resolution cache has been answered."""
        if node is None:
            self.negative += 1
        else:
            self.served[node.comps[0][0].index] += 1

    def copied_up(self, path, layer, hit, data, t0):
        if self.bus.subscribers:
            size = hit.st.st_size if data and _is_reg(hit) else 0
            self._emit({"event": "copyup", "path": path, "layer": layer.index,
                        "from": self.layer_name(layer.root), "bytes": size,
                        "us": (time.perf_counter_ns() - t0) // 1000})

    def whiteout(self, path, upper, layer, hit):
        if self.bus.subscribers:
            ev = {"event": "whiteout", "path": path, "upper": upper, "lower_layer": layer.index,
                  "lower_from": self.layer_name(layer.root)}
            if _is_reg(hit):
                ev["lower_bytes"] = hit.st.st_size
            self._emit(ev)

    def opaque(self, path, upper, hides):
        self.opaques += 1
        if self.bus.subscribers:
            self._emit({"event": "opaque", "path": path, "upper": upper, "hides": bool(hides)})

    def redirected(self, path, upper, value):
        self.redirects += 1
        if self.bus.subscribers:
            self._emit({"event": "redirect", "path": path, "upper": upper, "redirect": value})

    # -- hooks called by the FUSE adapter

    def request(self, op, args, result, encoding, errors):
        """A FUSE request returned (only called while someone is tracing)."""
        if op not in CHANGING:
            return
        paths = [a.decode(encoding, errors) for a in args if isinstance(a, bytes)]
        if not paths:
            return
        if op == "symlink":  # (target text, link path)
            paths.reverse()
        ev = {"event": "op", "op": op, "path": paths[0],
              "errno": -result if isinstance(result, int) and result < 0 else 0}
        if len(paths) > 1:
            ev["to"] = paths[1]
        if op == "write":
            ev["bytes"] = result if ev["errno"] == 0 else 0
            ev["requests"] = 1
        self._emit(ev)

    def _emit(self, ev):
        if ev["event"] != "op":
            ev["op"], op_path, op_to = OPERATION.get()
            if op_path is not None:
                ev["op_path"] = op_path
            if op_to is not None:
                ev["op_to"] = op_to
        ev["tid"] = threading.get_ident()
        if self.context is not None:
            try:
                pid = self.context()
                ev["pid"] = pid
                ev["sid"] = os.getsid(pid)
            except (OSError, ValueError):
                pass
        self.bus.emit(ev)

    # -- reading

    def snapshot(self):
        """The ``stats`` document (version 1), without what only the FUSE adapter knows."""
        u = self.union
        st = u.stats
        return {
            "v": VERSION,
            "pid": os.getpid(),
            "started": round(self.started, 3),
            "uptime_s": round(time.time() - self.started, 3),
            "layers": [{"index": l.index, "role": "upper" if l.writable else "lower",
                        "dir": l.root} for l in u.layers],
            "ops": self.ops.snapshot(),
            "lookups": {"per_layer": list(self.served), "negative": self.negative},
            "cache": {"hits": u.cache.hits, "misses": u.cache.misses, "entries": len(u.cache)},
            "copyups": st["copyups"],
            "copyup_bytes": st["copyup_bytes"],
            "whiteouts": st["whiteouts"],
            "opaque_dirs": self.opaques,
            "redirects": self.redirects,
            "events": {"seq": self.bus.last_seq, "subscribers": len(self.bus.subscribers)},
        }


def _is_reg(hit):
    return (hit.st.st_mode & 0o170000) == 0o100000
