"""What a mount's stats say, read from outside: each mount's status record (its daemon, the
daemon's memory and CPU) and the stats document in the Prometheus text format. The stats document
is the daemon's own (unionfs/control.py), read through unionfs/mounts.py."""
import errno

from . import mounts
from .errors import UnionfsError

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
        doc = mounts.read_stats(mnt, STATUS_TIMEOUT)
        claimed = doc["pid"]
        rec["layers"] = doc["layers"]
        rec["open_files"] = doc["open_files"]
    except (OSError, UnionfsError, ValueError, KeyError, TypeError) as e:
        rec["state"] = {errno.ENOTCONN: "dead", errno.ETIMEDOUT: "no answer"}.get(
            getattr(e, "errno", None), "no stats")
    try:
        rec["pid"] = mounts.daemon_of(mnt, claimed, holders)
    except UnionfsError:    # unmounted meanwhile
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


def all_status():
    """The status record of every unionfs mount, in mount table order."""
    holders = mounts.fuse_holders()
    return [mount_status(m.mountpoint, holders) for m in mounts.unionfs_mounts()]


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
