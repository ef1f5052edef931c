"""The explorer's JSON API (unionfs/serve) without a browser or a mount: the answers for the
inspect fixture image (worked out by hand from scripts/build_image_fixtures.inspect_layers),
paging, bad input, a mount's upper read again, the live followers fed by hand, and the HTTP
server itself (routes, errors, Host check, the event stream)."""
import http.client
import io
import json
import os
import socket
import stat
import threading
import time

import pytest

from unionfs import cli
from unionfs.inspect import stack as stackmod
from unionfs.inspect.layerindex import InspectError
from unionfs.serve import live
from unionfs.serve.model import Explorer
from unionfs.serve.server import Server, UnixServer, api
from tests.mountutil import load_script
from tests.unit.test_inspect_image import store  # noqa: F401  (the inspect image, imported)
from tests.unit.helpers import write

fx = load_script("build_image_fixtures")


@pytest.fixture(scope="module")
def ex(store):
    return Explorer(stackmod.from_image(store, "inspect:1"))


def names(doc):
    return [(e["name"], e["badges"], e["layer"]) for e in doc["entries"]]


def test_summary(ex):
    s = ex.summary()
    assert (s["name"], s["top"], s["live"], s["mount"]) == ("localhost/inspect:1", 3, None, None)
    assert [l["created_by"] for l in s["layers"]] == fx.INSPECT_CREATED_BY
    assert [l["size"] for l in s["layers"]] == [7850, 6290, 120]


def test_root_directory_after_the_top_layer(ex):
    doc = ex.directory("/")
    assert doc["total"] == 9 and doc["layer"] == 3
    rows = {e["name"]: e for e in doc["entries"]}
    assert rows["cache"]["badges"] == ["opaque"] and rows["cache"]["children"] == 3
    assert rows["cache"]["changes"] == {"deleted": 2, "added": 1}
    assert rows["app"]["changes"] == {"deleted": 1, "whiteout": 1}
    keep = rows["keep"]
    assert keep["layer"] == 1 and keep["size"] == 700 and "changes" not in keep
    assert rows["evil"]["target"] == "/etc/passwd"


def test_directories_carry_badges_and_origin(ex):
    assert names(ex.directory("/cache")) == [("x", ["deleted"], 1), ("y", ["deleted"], 1),
                                             ("z", ["added"], 3)]
    assert names(ex.directory("/app")) == [("big", ["deleted", "whiteout"], 2), ("blob", [], 2)]
    assert names(ex.directory("/app", layer=2)) == [("big", ["changed"], 2),
                                                    ("blob", ["metadata-only"], 2)]
    assert names(ex.directory("/data/", layer="2")) == [("tmp", ["deleted", "whiteout"], 1)]


def test_layer_counts_and_changes(ex):
    l3 = ex.layer(3)
    assert l3["counts"] == {"added": 1, "changed": 2, "metadata-only": 0, "deleted": 3,
                            "whiteout": 1, "opaque": 1}
    assert [(c["path"], c["change"]) for c in l3["changes"]] == [
        ("/app/big", "deleted"), ("/bin/tool", "changed"), ("/cache/x", "deleted"),
        ("/cache/y", "deleted"), ("/cache/z", "added"), ("/etc/config", "changed")]
    assert l3["layer"]["created_by"] == fx.INSPECT_CREATED_BY[2] and l3["total"] == 6
    assert ex.layer(2)["counts"] == {"added": 0, "changed": 2, "metadata-only": 1, "deleted": 1,
                                     "whiteout": 1, "opaque": 0}
    assert ex.layer(1)["counts"]["added"] == 19
    assert ex.layer(None)["layer"]["number"] == 3


def test_waste_and_history(ex):
    w = ex.waste()
    assert (w["wasted_bytes"], w["total_bytes"], w["copies"]) == (7950, 14260, 9)
    assert w["paths"][0] == {"path": "/app/blob", "wasted_bytes": 5000, "copies": 1,
                             "causes": {"metadata-only": 5000}}
    h = ex.history("/app/blob")
    assert h["origin_layer"] == 2 and [e["event"] for e in h["events"]] == ["added",
                                                                            "metadata-only"]


@pytest.mark.parametrize("call", [
    lambda ex: ex.directory("/", layer=9), lambda ex: ex.directory("/keep"),
    lambda ex: ex.directory("/nowhere"), lambda ex: ex.directory("/../etc"),
    lambda ex: ex.layer("x"), lambda ex: ex.layer(0), lambda ex: ex.history("/a/../../b")])
def test_bad_input_is_an_inspect_error(ex, call):
    with pytest.raises(InspectError):
        call(ex)


def test_large_directories_come_in_pages(tmp_path):
    root = tmp_path / "l"
    for i in range(1234):
        write(root / "d" / ("f%04d" % i), b"x")
    ex = Explorer(stackmod.from_dirs([str(root)]))
    first = ex.directory("/d")
    assert (first["total"], len(first["entries"])) == (1234, 500)
    assert first["entries"][0]["name"] == "f0000"
    last = ex.directory("/d", offset=1200, limit=100)
    assert [e["name"] for e in last["entries"]] == ["f%04d" % i for i in range(1200, 1234)]
    assert len(ex.directory("/d", limit=10**6)["entries"]) == 500
    assert ex.directory("/")["entries"][0]["changes"] == {"added": 1234}


def mount_like(tmp_path):
    """An explorer over two lowers and an upper, as `serve MNT` builds it for a mount."""
    lo = tmp_path / "lo"
    write(lo / "etc" / "motd", b"m" * 9)
    write(lo / "etc" / "conf", b"c" * 4)
    upper = tmp_path / "up"
    upper.mkdir()
    ex = Explorer(stackmod.from_dirs([str(lo)], upper=str(upper)), mount=str(tmp_path / "mnt"))
    ex.warm()
    return ex, upper


def test_refresh_reads_the_upper_again(tmp_path):
    ex, upper = mount_like(tmp_path)
    lower_view = ex.state.view(1)
    assert ex.live_upper == str(upper)
    write(upper / "etc" / ".wh.motd")
    write(upper / "etc" / "conf", b"C" * 5)
    assert ex.refresh() == 2 and ex.summary()["gen"] == 2
    assert ex.state.view(1) is lower_view
    assert names(ex.directory("/etc")) == [("conf", ["changed"], 2),
                                           ("motd", ["deleted", "whiteout"], 1)]
    assert ex.summary()["layers"][1]["whiteouts"] == 1


def test_poll_reports_whiteouts_and_copy_ups(tmp_path):
    ex, upper = mount_like(tmp_path)
    before = live._snapshot(str(upper))
    write(upper / "etc" / ".wh.motd")
    write(upper / "etc" / "conf", b"c" * 4)
    write(upper / "new", b"n")
    events, changed = live.poll_changes(ex, before, live._snapshot(str(upper)))
    assert changed
    assert [(e["event"], e["path"]) for e in events] == [
        ("whiteout", "/etc/motd"), ("copyup", "/etc"), ("copyup", "/etc/conf"), ("op", "/new")]
    assert events[2]["stack_layer"] == 1 and events[2]["bytes"] == 4


def test_trace_events_are_passed_on_then_the_tree_refreshed(tmp_path):
    ex, upper = mount_like(tmp_path)
    lines = [{"v": 1, "event": "subscribed", "seq": 0},
             {"v": 1, "event": "copyup", "path": "/etc", "layer": 1, "from": str(tmp_path / "lo")},
             {"v": 1, "event": "whiteout", "path": "/etc/motd", "lower_layer": 1},
             {"v": 1, "event": "op", "op": "unlink", "path": "/etc/motd", "errno": 0},
             {"v": 1, "event": "tick", "seq": 3}]
    write(upper / "etc" / ".wh.motd")
    got = []
    done = threading.Event()

    def publish(kind, data):
        got.append((kind, data))
        if kind == "refresh":
            done.set()
    stream = io.BytesIO(b"".join(json.dumps(l).encode() + b"\n" for l in lines))
    stop = threading.Event()
    live.follow_trace(ex, publish, stop, stream)
    assert done.wait(5)
    stop.set()
    assert [(k, d.get("event"), d.get("stack_layer")) for k, d in got] == [
        ("live", None, None), ("trace", "copyup", 1), ("trace", "whiteout", 1),
        ("refresh", None, None)]
    assert names(ex.directory("/etc"))[1] == ("motd", ["deleted", "whiteout"], 1)


def test_layer_number_of_trace_events(tmp_path):
    ex, _ = mount_like(tmp_path)
    assert live.layer_number(ex, {"from": str(tmp_path / "lo"), "layer": 7}) == 1
    assert live.layer_number(ex, {"layer": 0}) == 2
    assert live.layer_number(ex, {"lower_layer": 1}) == 1
    assert live.layer_number(ex, {"layer": 5}) is None


# ---- the HTTP server -------------------------------------------------------------------------

@pytest.fixture
def server(ex):
    srv = Server(("127.0.0.1", 0), ex)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def get(srv, path, host=None, token=True, headers=None):
    """(status, Content-Type, body); token=True sends the server's token in a header."""
    c = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    h = dict(headers or {})
    if host:
        h["Host"] = host
    if token is True:
        h["Authorization"] = "token " + srv.token
    try:
        c.request("GET", path, headers=h)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        c.close()


def test_http_routes_and_errors(server):
    status, ctype, body = get(server, "/api/tree?path=/cache&layer=3")
    assert status == 200 and ctype.startswith("application/json")
    assert [e["name"] for e in json.loads(body)["entries"]] == ["x", "y", "z"]
    status, _, body = get(server, "/api/tree?layer=9")
    assert status == 400 and "no layer 9" in json.loads(body)["error"]
    assert get(server, "/api/tree?offset=x")[0] == 400
    assert get(server, "/api/nothing")[0] == 404
    status, ctype, body = get(server, "/")
    assert status == 200 and ctype.startswith("text/html") and b"/static/app.js" in body
    for name in ("app.js", "app.css"):
        assert get(server, "/static/" + name)[0] == 200
    for bad in ("/static/../server.py", "/static/%2e%2e/model.py", "/static/.hidden.js",
                "/etc/passwd"):
        assert get(server, bad)[0] == 404, bad
    assert get(server, "/api/summary", host="evil.example:80")[0] == 403
    assert get(server, "/api/summary", host="localhost:1")[0] == 200


def test_api_dispatch_matches_the_model(ex):
    assert api(ex, "layer", {"n": ["2"]})["counts"] == ex.layer(2)["counts"]
    with pytest.raises(KeyError):
        api(ex, "nope", {})


def test_every_request_needs_the_token(server):
    """Any local user can reach a loopback port: without the token nothing is answered."""
    t = server.token
    other = Server(("127.0.0.1", 0), None)
    other.server_close()
    assert len(t) >= 32 and other.token != t
    for path in ("/", "/index.html", "/static/app.js", "/api/summary", "/api/tree?path=/",
                 "/api/events", "/api/nothing", "/api/tree?path=/&token=" + t[:-1]):
        status, _, body = get(server, path, token=False)
        assert status == 403 and b"token" in body, path
    assert get(server, "/api/summary", token=False, headers={
        "Authorization": "token x" + t, "Cookie": "unionfs-serve-1=" + t})[0] == 403
    c = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        c.request("GET", "/?token=" + t)
        r = c.getresponse()
        assert r.status == 200 and r.read().startswith(b"<!")
        cookie = r.getheader("Set-Cookie")
    finally:
        c.close()
    name = "unionfs-serve-%d" % server.server_address[1]
    assert cookie == name + "=" + t + "; Path=/; HttpOnly; SameSite=Strict"
    for via in ({"Cookie": "a=b; %s=%s" % (name, t)}, {"Authorization": "Token " + t}):
        assert get(server, "/static/app.js", token=False, headers=via)[0] == 200
        assert get(server, "/api/summary", token=False, headers=via)[0] == 200
    assert get(server, "/api/tree?token=%s&path=/cache" % t, token=False)[0] == 200


def test_api_paths_stay_inside_the_layers(server):
    """Paths name entries of the layers' indexes: '..' is refused, and a symlink (evil ->
    /etc/passwd in the image) is a row, never followed."""
    for bad in ("/api/tree?path=../../etc", "/api/tree?path=/cache/../../etc",
                "/api/history?path=/../../etc/passwd", "/api/tree?path=/evil",
                "/api/tree?path=/evil/", "/api/tree?path=%2e%2e%2fetc"):
        status, _, body = get(server, bad)
        assert status == 400, bad
        assert b"root:" not in body
    doc = json.loads(get(server, "/api/history?path=/evil")[2])
    assert doc["path"] == "/evil" and b"root:" not in json.dumps(doc).encode()


def test_unix_socket_server(ex, tmp_path):
    path = str(tmp_path / "s.sock")
    srv = UnixServer(path, ex)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and srv.token is None
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b"GET /api/summary HTTP/1.1\r\nHost: localhost\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["top"] == 3
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)
    assert not os.path.exists(path)
    with open(path, "w") as f:
        f.write("not ours")
    with pytest.raises(OSError):
        UnixServer(path, ex)
    with open(path) as f:
        assert f.read() == "not ours"     # a file that was there is left alone


def test_event_stream(server):
    c = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        c.request("GET", "/api/events", headers={"Authorization": "token " + server.token})
        r = c.getresponse()
        assert r.getheader("Content-Type") == "text/event-stream"
        assert r.fp.readline() == b"retry: 1000\n"
        deadline = time.monotonic() + 5
        while not server.hub.clients and time.monotonic() < deadline:
            time.sleep(0.01)
        server.hub.publish("trace", {"event": "whiteout", "path": "/etc/motd"})
        lines = [r.fp.readline() for _ in range(4)]
        assert lines[1:3] == [b"event: trace\n",
                              b'data: {"event": "whiteout", "path": "/etc/motd"}\n']
    finally:
        c.close()


# ---- the command ----------------------------------------------------------------------------

def test_command_errors_are_one_line(store, capsys, tmp_path):
    assert cli.main(["serve", "no-such-image", "--store", store.root]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unionfs: ") and err.count("\n") == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main(["serve", "inspect:1", "--store", store.root, "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err == "unionfs: cannot listen on 127.0.0.1 port %d: it is in use (choose another " \
                  "with --port, or --port 0 for any free one)\n" % port
    assert cli.main(["serve", "inspect:1", "--store", store.root, "--port", "70000"]) == 1
    assert "not a TCP port" in capsys.readouterr().err
    assert cli.main(["serve", "inspect:1", "--store", store.root, "--host", "no.such.host.invalid",
                     "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unionfs: cannot listen on no.such.host.invalid") and err.count("\n") == 1
    sock = tmp_path / "taken"
    sock.write_text("x")
    assert cli.main(["serve", "inspect:1", "--store", store.root, "--unix-socket", str(sock)]) == 1
    assert capsys.readouterr().err == "unionfs: cannot listen on %s: it exists (remove it, or " \
                                      "choose another path)\n" % sock
    assert sock.read_text() == "x"
    assert cli.main(["serve", "inspect:1", "--store", store.root, "--unix-socket", str(sock),
                     "--host", "::1"]) == 1
    assert "exclude each other" in capsys.readouterr().err


def test_layer_trees_are_kept_within_bounds(tmp_path, monkeypatch):
    from unionfs.serve import model
    monkeypatch.setattr(model, "VIEWS_KEPT", 3)
    dirs = []
    for n in range(6):
        write(tmp_path / ("l%d" % n) / ("f%d" % n), b"x")
        dirs.append(str(tmp_path / ("l%d" % n)))
    ex = Explorer(stackmod.from_dirs(dirs))
    ex.warm()
    ex.warm_layers()
    kept = sorted(k[1] for k in ex.state.cache if model._is_view(k))
    assert kept == [4, 5, 6]
    ex.directory("/", layer=1)
    assert sorted(k[1] for k in ex.state.cache if model._is_view(k)) == [1, 4, 6]


def test_the_top_layer_timeline_is_built_once(tmp_path, monkeypatch):
    """warm() builds the top tree, its changes and the waste from one timeline; a lower
    layer's tree builds its own (up to that layer)."""
    from unionfs.inspect import analysis, timeline
    from unionfs.serve import model
    built = []

    class Counted(timeline.Timeline):
        def __init__(self, stack, upto=None):
            super().__init__(stack, upto)
            built.append(self.upto)
    monkeypatch.setattr(analysis, "Timeline", Counted)
    monkeypatch.setattr(model, "Timeline", Counted)
    ex, _upper = mount_like(tmp_path)
    assert built == [2]
    ex.directory("/", layer=1)
    assert built == [2, 1]
