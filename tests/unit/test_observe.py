"""Observability without FUSE: counters, the event bus, the union's events, the which report."""
import errno
import json
import os

import pytest

from tests.unit.helpers import layers, make_union, mkdir, needs_root, whiteout, write, xset
from unionfs import observe, which
from unionfs.core.observe import Observer, operation
from unionfs.image.store import layer_source
from unionfs.stats import prometheus
from unionfs.trace import describe, narrate


def _events(sub):
    return [e for e in sub.get(0)]


def _strip(ev, keys=("v", "seq", "time", "tid", "us")):
    return {k: v for k, v in ev.items() if k not in keys}


def recorded(union, layer_name=None):
    """The union with the recorder a mount installs (mount.run_daemon)."""
    union.observer = observe.Recorder(union, layer_name)
    return union


# ---- counters and the bus -------------------------------------------------------------------

def test_opstats_counts_and_percentiles():
    s = observe.OpStats()
    for ns in range(1, 101):
        s.record("getattr", ns * 1000)
    s.record("read", 5000)
    snap = s.snapshot()
    assert list(snap) == ["getattr", "read"]
    assert snap["getattr"] == {"count": 100, "p50_us": 51.0, "p99_us": 100.0}
    assert snap["read"] == {"count": 1, "p50_us": 5.0, "p99_us": 5.0}


def test_opstats_reservoir_is_bounded_but_count_is_exact():
    s = observe.OpStats()
    for _ in range(observe.RESERVOIR * 3):
        s.record("x", 1)
    assert s.snapshot()["x"]["count"] == observe.RESERVOIR * 3
    assert len(s.slot("x")[1]) == observe.RESERVOIR


def test_bus_without_subscribers_numbers_nothing():
    bus = observe.Bus()
    bus.emit({"event": "op"})
    assert bus.last_seq == 0


def test_slow_subscriber_loses_events_and_is_told():
    bus = observe.Bus()
    sub = bus.subscribe(maxlen=3)
    for i in range(5):
        bus.emit({"event": "opaque", "path": "/%d" % i})
    got = sub.get(0)
    assert got[0]["event"] == "dropped" and got[0]["count"] == 2
    assert [e["path"] for e in got[1:]] == ["/0", "/1", "/2"]
    assert [e["seq"] for e in got[1:]] == [1, 2, 3]
    assert sub.get(0) == []
    bus.unsubscribe(sub)
    assert bus.subscribers == ()


def test_consecutive_writes_of_one_file_merge():
    bus = observe.Bus()
    sub = bus.subscribe()
    for n in (10, 20, 30):
        bus.emit({"event": "op", "op": "write", "path": "/f", "errno": 0, "bytes": n,
                  "requests": 1, "tid": 7})
    bus.emit({"event": "op", "op": "write", "path": "/g", "errno": 0, "bytes": 1,
              "requests": 1, "tid": 7})
    got = sub.get(0)
    assert [(e["path"], e["bytes"], e["requests"], e["seq"]) for e in got] == [
        ("/f", 60, 3, 3), ("/g", 1, 1, 4)]


def test_event_lines_are_versioned_json():
    bus = observe.Bus()
    sub = bus.subscribe()
    bus.emit({"event": "whiteout", "path": "/caf\udce9"})
    line = observe.encode(sub.get(0)[0])
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    ev = json.loads(line.decode("utf-8", "surrogateescape"))
    assert ev["v"] == 1 and ev["seq"] == 1 and list(ev)[:3] == ["v", "seq", "time"]


# ---- the union's events ---------------------------------------------------------------------

@pytest.fixture
def env(tmp_path):
    (lower,), upper, work = layers(tmp_path)
    write(lower + "/f", b"0123456789")
    write(lower + "/d/a", b"A")
    write(lower + "/d/sub/b", b"BB")
    u = recorded(make_union([lower], upper, work))
    return u, lower, upper, u.observer.bus.subscribe()


@needs_root
def test_copyup_event_has_bytes_and_cause(env):
    u, lower, upper, sub = env
    with operation("open", "/f"):
        h = u.open("/f", os.O_WRONLY | os.O_APPEND)
    u.release(h)
    with operation("open", "/f"):
        h = u.open("/f", os.O_WRONLY)  # already up: no second event
    u.release(h)
    evs = _events(sub)
    assert [_strip(e) for e in evs] == [
        {"event": "copyup", "path": "/f", "layer": 1, "from": lower, "bytes": 10, "op": "open",
         "op_path": "/f"}]
    assert evs[0]["us"] >= 0
    assert u.stats["copyups"] == 1 and u.stats["copyup_bytes"] == 10


@needs_root
def test_unlink_of_lower_file_is_one_whiteout_event(env):
    u, lower, upper, sub = env
    with operation("unlink", "/f"):
        u.unlink("/f")
    assert [_strip(e) for e in _events(sub)] == [
        {"event": "whiteout", "path": "/f", "upper": upper + "/f", "lower_layer": 1,
         "lower_from": lower, "lower_bytes": 10, "op": "unlink", "op_path": "/f"}]


@needs_root
def test_rmdir_then_mkdir_of_merged_dir_is_opaque(env):
    u, lower, upper, sub = env
    u.unlink("/d/a")
    u.unlink("/d/sub/b")
    u.rmdir("/d/sub")
    u.rmdir("/d")
    sub.get(0)
    with operation("mkdir", "/d"):
        u.mkdir("/d", 0o755, (0, 0))
    assert [_strip(e) for e in _events(sub)] == [
        {"event": "opaque", "path": "/d", "upper": upper + "/d", "hides": True, "op": "mkdir",
         "op_path": "/d"}]
    assert u.observer.opaques == 1


@needs_root
def test_rename_of_lower_dir_is_redirect(env):
    u, lower, upper, sub = env
    with operation("rename", "/d", "/e"):
        u.rename("/d", "/e")
    evs = [_strip(e) for e in _events(sub)]
    assert [e["event"] for e in evs] == ["copyup", "redirect", "whiteout"]
    assert evs[1] == {"event": "redirect", "path": "/e", "upper": upper + "/e", "redirect": "d",
                      "op": "rename", "op_path": "/d", "op_to": "/e"}
    assert evs[2]["path"] == "/d" and evs[2]["upper"] == upper + "/d"
    assert u.observer.redirects == 1


@needs_root
def test_event_cause_is_only_the_operation_the_caller_names(env):
    """No stack inspection: a change made outside any named request has no cause, and the
    cause is the request, not the union method that made the change."""
    u, lower, upper, sub = env
    u.unlink("/d/a")
    with operation("setxattr", "/d/sub/b", "user.x"):
        u.copy_up("/d/sub/b")
    evs = [_strip(e) for e in _events(sub)]
    assert [(e["event"], e["path"], e["op"]) for e in evs] == [
        ("copyup", "/d", None), ("whiteout", "/d/a", None), ("copyup", "/d/sub", "setxattr"),
        ("copyup", "/d/sub/b", "setxattr")]
    assert "op_path" not in evs[0] and evs[3]["op_path"] == "/d/sub/b"
    assert evs[3]["op_to"] == "user.x"


@needs_root
def test_layers_are_named_by_the_callable_the_mount_passes(tmp_path):
    (lower,), upper, work = layers(tmp_path)
    write(lower + "/f", b"0123456789")
    u = recorded(make_union([lower], upper, work), lambda root: "named:" + root)
    sub = u.observer.bus.subscribe()
    u.unlink("/f")
    assert _events(sub)[0]["lower_from"] == "named:" + lower
    assert which.report(u, "/")["layers"][1]["source"] == "named:" + lower


def test_a_union_nobody_observes_has_the_core_default(tmp_path):
    (lower,), upper, work = layers(tmp_path)
    write(lower + "/f", b"x")
    u = make_union([lower], upper, work)
    assert type(u.observer) is Observer
    u.lookup("/f")
    u.unlink("/f")
    assert u.lookup("/f") is None and which.report(u, "/")["layers"][1]["source"] == lower


@needs_root
def test_no_events_without_subscriber_but_counters_move(env):
    u, lower, upper, sub = env
    u.observer.bus.unsubscribe(sub)
    u.unlink("/f")
    assert u.observer.bus.last_seq == 0
    assert u.stats["whiteouts"] == 1


def test_lookups_served_per_layer_and_negative(tmp_path):
    (l1, l2), upper, work = layers(tmp_path, 2)
    write(l1 + "/a")
    write(l2 + "/b")
    write(upper + "/c")
    u = recorded(make_union([l1, l2], upper, work))
    for p in ("/a", "/b", "/c", "/nope", "/a"):
        u.lookup(p)
    assert u.observer.served == [1, 1, 1]
    assert u.observer.negative == 1
    doc = u.observer.snapshot()
    assert doc["lookups"] == {"per_layer": [1, 1, 1], "negative": 1}
    assert doc["cache"]["hits"] >= 1 and doc["v"] == 1
    assert [l["role"] for l in doc["layers"]] == ["upper", "lower", "lower"]


# ---- which ----------------------------------------------------------------------------------

def _states(report):
    return [(e["index"], e["state"], e["type"], e["hides_below"]) for e in report["layers"]]


@pytest.fixture
def stack3(tmp_path):
    (l1, l2), upper, work = layers(tmp_path, 2)
    return l1, l2, upper, work


def test_which_file_shadowing(stack3):
    l1, l2, upper, work = stack3
    write(l1 + "/f", b"top")
    write(l2 + "/f", b"bottom!")
    u = make_union([l1, l2], upper, work)
    r = which.report(u, "/f")
    assert r["source"] == l1 and r["layer"] == 1
    assert _states(r) == [(1, "serves", "file", True), (2, "hidden", "file", False)]
    assert [e["size"] for e in r["layers"]] == [3, 7]


@needs_root
def test_which_whiteout_and_opaque(stack3):
    l1, l2, upper, work = stack3
    whiteout(l1 + "/gone")
    write(l2 + "/gone", b"x")
    mkdir(l1 + "/o")
    xset(l1 + "/o", "trusted.overlay.opaque", b"y")
    write(l2 + "/o/hidden", b"h")
    write(l2 + "/o2/kept", b"k")
    mkdir(l1 + "/o2")
    u = make_union([l1, l2], upper, work)
    r = which.report(u, "/gone")
    assert r["source"] is None
    assert _states(r) == [(1, "whiteout", "whiteout", True), (2, "hidden", "file", False)]
    r = which.report(u, "/o")
    assert _states(r) == [(1, "serves", "dir", True), (2, "hidden", "dir", False)]
    assert r["layers"][0]["opaque"] is True
    assert _states(which.report(u, "/o/hidden")) == [(2, "hidden", "file", False)]
    assert _states(which.report(u, "/o2")) == [(1, "serves", "dir", False),
                                               (2, "merged", "dir", False)]
    assert _states(which.report(u, "/o2/kept")) == [(2, "serves", "file", False)]


@needs_root
def test_which_follows_redirects_like_the_union(stack3):
    l1, l2, upper, work = stack3
    write(l2 + "/old/deep/f", b"f")
    write(l1 + "/old/g", b"g")
    u = make_union([l1, l2], upper, work)
    u.rename("/old", "/new")
    u.rename("/new/deep", "/elsewhere")
    for path in ("/new", "/new/g", "/elsewhere", "/elsewhere/f", "/", "/old"):
        node = u.lookup(path)
        r = which.report(u, path)
        visible = [(e["index"], e["rel"]) for e in r["layers"] if e["state"] in ("serves", "merged")]
        want = [] if node is None else [(l.index, rel) for l, rel, _ in node.comps]
        assert visible == want, path
    r = which.report(u, "/elsewhere/f")
    assert r["layers"][0]["rel"] == "old/deep/f" and r["source"] == l2
    assert which.report(u, "/new")["layers"][0]["redirect"] == "old"
    old = which.report(u, "/old")
    assert old["source"] is None and old["layers"][0]["state"] == "whiteout"


def test_which_file_below_dir_is_hidden(stack3):
    l1, l2, upper, work = stack3
    write(l1 + "/x/in", b"")
    write(l2 + "/x", b"file")
    u = make_union([l1, l2], upper, work)
    assert _states(which.report(u, "/x")) == [(1, "serves", "dir", False),
                                              (2, "hidden", "file", False)]


def test_which_xattrs(stack3):
    l1, l2, upper, work = stack3
    write(l1 + "/f", b"top")
    os.symlink("f", l2 + "/link")
    u = make_union([l1, l2], upper, work)
    assert which.xattr(u, "/f", which.SOURCE) == os.fsencode(l1)
    doc = json.loads(which.xattr(u, "/f", which.LAYERS))
    assert doc["v"] == 1 and doc["path"] == "/f"
    assert which.xattr(u, "/", which.SOURCE + ":link") == os.fsencode(l2)
    for name in ("user.unionfs.other", which.SOURCE + ":", which.SOURCE + ":a/b"):
        with pytest.raises(OSError) as e:
            which.xattr(u, "/", name)
        assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        which.xattr(u, "/missing", which.LAYERS)
    assert e.value.errno == errno.ENOENT


def test_image_store_layers_are_named_by_diffid():
    hexid = "ab" * 32
    assert layer_source("/var/lib/unionfs/layers/%s/root" % hexid) == "sha256:" + hexid
    assert layer_source("/var/lib/unionfs/layers/%s/root/" % hexid) == "sha256:" + hexid
    assert layer_source("/srv/layers/x/root") == "/srv/layers/x/root"


# ---- what the commands print ----------------------------------------------------------------

def test_narrate_groups_each_request_with_what_it_caused():
    evs = [
        {"event": "copyup", "path": "/f", "layer": 1, "from": "/l", "bytes": 1234, "us": 40,
         "op": "open", "op_path": "/f", "tid": 1},
        {"event": "op", "op": "write", "path": "/f", "errno": 0, "bytes": 2, "requests": 1,
         "tid": 2},
        {"event": "whiteout", "path": "/etc/motd", "upper": "/u/etc/motd", "lower_layer": 1,
         "lower_from": "sha256:" + "0" * 64, "lower_bytes": 1200, "op": "unlink",
         "op_path": "/etc/motd", "tid": 3},
        {"event": "op", "op": "unlink", "path": "/etc/motd", "errno": 0, "tid": 3},
        {"event": "op", "op": "rmdir", "path": "/d", "errno": errno.ENOTEMPTY, "tid": 3},
    ]
    assert narrate(evs) == [
        "open /f → copy-up of /f from lower 1 (/l) (1.2 kB, 40 µs); the lower copy stays, "
        "1.2 kB now stored twice",
        "write /f (2 B)",
        "unlink /etc/motd → whiteout at upper/etc/motd; lower untouched; the image still ships "
        "1.2 kB for it",
        "rmdir /d: Directory not empty",
    ]
    assert describe({"event": "dropped", "count": 3}).startswith("(3 events lost")


def test_prometheus_text():
    doc = {"ops": {"getattr": {"count": 5, "p50_us": 20.0, "p99_us": 100.0}},
           "layers": [{"index": 0, "role": "upper", "dir": "/u\"q"}],
           "lookups": {"per_layer": [4], "negative": 1}, "cache": {"hits": 9, "misses": 4},
           "copyups": 1, "copyup_bytes": 10, "whiteouts": 2, "opaque_dirs": 0, "redirects": 0,
           "open_files": 3}
    text = prometheus(doc, "/m")
    lines = text.splitlines()
    assert 'unionfs_requests_total{mount="/m",op="getattr"} 5' in lines
    assert 'unionfs_request_latency_seconds{mount="/m",op="getattr",quantile="0.99"} 0.0001' \
        in lines
    assert 'unionfs_lookups_served_total{mount="/m",layer="0",dir="/u\\"q"} 4' in lines
    assert 'unionfs_open_files{mount="/m"} 3' in lines
    assert "# TYPE unionfs_copyup_bytes_total counter" in lines
    samples = [l for l in lines if not l.startswith("#")]
    assert all(len(l.rsplit(" ", 1)) == 2 for l in samples)


@needs_root
def test_the_recorder_formats_what_the_events_carry_without_asking_the_union(env):
    """The core hands each hook what its event says (issue 14): with the recorder cut off from
    the union, a whiteout, a redirect and a directory moved opaque read as before."""
    u, lower, upper, sub = env
    u.mkdir("/up", 0o755, (0, 0))
    u.mkdir("/up/new", 0o755, (0, 0))  # in a pure upper directory: not opaque
    sub.get(0)
    u.observer.union = None
    u.unlink("/f")
    u.rename("/up/new", "/d/sub/new")
    u.rename("/d", "/e2")
    evs = [_strip(e, ("v", "seq", "time", "tid", "us", "op", "op_path", "op_to"))
           for e in _events(sub) if e["event"] != "copyup"]
    assert evs == [
        {"event": "whiteout", "path": "/f", "upper": upper + "/f", "lower_layer": 1,
         "lower_from": lower, "lower_bytes": 10},
        {"event": "opaque", "path": "/d/sub/new", "upper": upper + "/d/sub/new",
         "hides": False},
        {"event": "redirect", "path": "/e2", "upper": upper + "/e2", "redirect": "d"},
        {"event": "whiteout", "path": "/d", "upper": upper + "/d", "lower_layer": 1,
         "lower_from": lower}]
    assert (u.observer.opaques, u.observer.redirects, u.stats["whiteouts"]) == (2, 1, 2)


def test_status_of_a_mount_gone_meanwhile_is_a_state(tmp_path):
    """status reads the mount table, then each mount in turn: one unmounted in between shows as
    'no stats' with no daemon, instead of failing the whole command."""
    from unionfs.stats import mount_status
    rec = mount_status(str(tmp_path))
    assert (rec["mount"], rec["state"], rec["pid"]) == (str(tmp_path), "no stats", None)
