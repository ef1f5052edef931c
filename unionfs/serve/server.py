"""The HTTP side of ``unionfs serve``: stdlib ThreadingHTTPServer, no framework.

Routes (GET only; every answer is JSON but the page and its static files):

    /                        the page (static/index.html); /static/NAME its CSS and JS
    /api/summary             name, image_id, mount, live mode, gen, top, layers[]
    /api/tree?path=&layer=&offset=&limit=
                             one directory of the tree after layer N (default: the top)
    /api/layer?n=N           what layer N changed, and its tree's badge counts
    /api/waste               the waste report (paths capped, copies counted)
    /api/history?path=       a path's events across the layers
    /api/events              Server-Sent Events: trace, refresh, live (mounts only)

Bad input is a 400 with {"error": "..."}. Requests whose Host header names another host are
refused (403) while the server listens on loopback, so a web page elsewhere cannot reach it
through DNS rebinding.

Every local user can connect to a loopback port, so a TCP server answers only requests that
carry its token (random, made at start, printed in its URL as Jupyter does): ``?token=T``, an
``Authorization: token T`` header, or the cookie the page gets with its first answer
(HttpOnly, SameSite=Strict, named for the port since a browser sends a host's cookies to all
its ports). Anything else is a 403, static files included. ``UnixServer`` listens on a unix
socket made 0600 instead, and needs no token: the socket's mode keeps other users out.
"""
import hmac
import ipaddress
import json
import os
import queue
import secrets
import socket
import socketserver
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ..inspect.layerindex import InspectError

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
KEEPALIVE = 15.0    # seconds between SSE comments on an idle stream
CLIENT_QUEUE = 1000


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Hub:
    """Fan-out of server-sent events to every connected page; a slow page loses events."""

    def __init__(self):
        self.clients = set()
        self.lock = threading.Lock()
        self.last = {}      # kind -> the last data of kinds a new page needs at once

    def publish(self, kind, data):
        msg = (kind, data)
        with self.lock:
            if kind == "live":
                self.last[kind] = data
            for q in self.clients:
                try:
                    q.put_nowait(msg)
                except queue.Full:
                    pass

    def subscribe(self):
        q = queue.Queue(CLIENT_QUEUE)
        with self.lock:
            self.clients.add(q)
            for kind, data in self.last.items():
                q.put_nowait((kind, data))
        return q

    def unsubscribe(self, q):
        with self.lock:
            self.clients.discard(q)


def _arg(qs, name, default=None):
    return qs.get(name, [default])[0]


def _int(qs, name, default):
    v = _arg(qs, name, default)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise InspectError("%s=%r is not a number" % (name, v))


def api(explorer, route, qs):
    """The answer to /api/<route>, as data (raises InspectError on bad input, KeyError for
    an unknown route)."""
    if route == "summary":
        return explorer.summary()
    if route == "tree":
        return explorer.directory(_arg(qs, "path", "/"), _arg(qs, "layer"),
                                  _int(qs, "offset", 0), _int(qs, "limit", 500))
    if route == "layer":
        return explorer.layer(_arg(qs, "n"))
    if route == "waste":
        return explorer.waste()
    if route == "history":
        return explorer.history(_arg(qs, "path", "/"))
    raise KeyError(route)


class Handler(BaseHTTPRequestHandler):
    server_version = "unionfs-serve"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):   # quiet: the terminal shows the URL, not every request
        pass

    def _send(self, status, body, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, obj):
        body = json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8", "surrogateescape")
        self._send(status, body, "application/json; charset=utf-8")

    def _host_ok(self):
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return is_loopback(host)

    def _given_tokens(self, qs):
        """The tokens this request offers: in the query, the Authorization header, the cookie."""
        out = list(qs.get("token", ()))
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "token":
            out.append(value.strip())
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.server.cookie:
                out.append(value)
        return out

    def _token_ok(self, qs):
        token = self.server.token
        return token is None or any(
            hmac.compare_digest(t.encode("utf-8", "replace"), token.encode())
            for t in self._given_tokens(qs))

    def do_GET(self):
        url = urlsplit(self.path)
        qs = parse_qs(url.query)
        if not self._host_ok():
            return self._json(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"})
        if not self._token_ok(qs):
            return self._json(HTTPStatus.FORBIDDEN, {
                "error": "no valid token: open the URL unionfs serve printed (with ?token=)"})
        if url.path == "/api/events":
            return self._events()
        if url.path.startswith("/api/"):
            return self._api(url.path[5:], qs)
        if url.path in ("/", "/index.html"):
            return self._static("index.html", self._cookie())
        return self._static(url.path[len("/static/"):] if url.path.startswith("/static/") else None)

    def _cookie(self):
        """The Set-Cookie header that lets the page's own requests in without ?token=."""
        if self.server.token is None:
            return ()
        return (("Set-Cookie", "%s=%s; Path=/; HttpOnly; SameSite=Strict" % (
            self.server.cookie, self.server.token)),)

    def _api(self, route, qs):
        try:
            self._json(HTTPStatus.OK, api(self.server.explorer, route, qs))
        except KeyError:
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such API: " + route})
        except InspectError as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})

    def _static(self, name, extra=()):
        ext = os.path.splitext(name or "")[1]
        if not name or "/" in name or name.startswith(".") or ext not in TYPES:
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        try:
            with open(os.path.join(STATIC, name), "rb") as f:
                body = f.read()
        except OSError:
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        self._send(HTTPStatus.OK, body, TYPES[ext], extra)

    def _events(self):
        hub = self.server.hub
        q = hub.subscribe()
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            while not self.server.stopping.is_set():
                try:
                    kind, data = q.get(timeout=KEEPALIVE)
                    chunk = "event: %s\ndata: %s\n\n" % (kind, json.dumps(data, default=str))
                except queue.Empty:
                    chunk = ": keep-alive\n\n"
                self.wfile.write(chunk.encode("utf-8", "surrogateescape"))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            hub.unsubscribe(q)
            self.close_connection = True


class _Explorer:
    """What both servers give the handler: the explorer, the event hub, the token."""
    daemon_threads = True
    token = cookie = None

    def _setup(self, explorer, loopback_only):
        self.explorer = explorer
        self.loopback_only = loopback_only
        self.hub = Hub()
        self.stopping = threading.Event()

    def shutdown(self):
        self.stopping.set()
        self.hub.publish("bye", {})
        super().shutdown()


class Server(_Explorer, ThreadingHTTPServer):
    """HTTP on a TCP address; requests need `token` (a new random one unless given)."""

    def __init__(self, addr, explorer, loopback_only=True, token=None):
        self.address_family = _family(addr[0])
        self.token = token or secrets.token_urlsafe(32)
        super().__init__(addr, Handler)
        self._setup(explorer, loopback_only)
        self.cookie = "unionfs-serve-%d" % self.server_address[1]


class UnixServer(_Explorer, socketserver.ThreadingUnixStreamServer):
    """HTTP on a unix socket at path, created 0600 (it must not exist yet); no token."""

    def __init__(self, path, explorer):
        self.path = path
        self.bound = False
        super().__init__(path, Handler)
        self._setup(explorer, True)

    def server_bind(self):
        old = os.umask(0o177)     # the socket is born 0600: no moment when others may connect
        try:
            super().server_bind()
            self.bound = True
        finally:
            os.umask(old)

    def server_close(self):
        super().server_close()
        if self.bound:           # not a file that was there before us
            self.bound = False
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _family(host):
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET
