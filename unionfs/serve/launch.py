"""Starting the explorer: the Explorer of an image or mount and the server listening for it
(loopback TCP with a token, or a 0600 unix socket), failures to listen as one line, the address
to print, the background work (following a mount's changes, indexing every layer) and serving
until interrupted. A mount's layers are what its own daemon says (unionfs/mounts.py)."""
import errno
import os
import threading

from .. import mounts
from ..inspect.layerindex import InspectError
from ..inspect.stack import open_target
from . import live
from .model import Explorer
from .server import Server, UnixServer, is_loopback


def _mountpoint(target):
    """The real path of target if it is a mountpoint of a unionfs mount, else None."""
    m = mounts.mount_at(target) if os.path.isdir(target) else None
    return m.mountpoint if m is not None else None


def build(store, target, host=None, port=0, unix_socket=None):
    """(Explorer, Server) for target (IMAGE|MNT); raises InspectError/ImageError/OSError."""
    if not 0 <= port <= 65535:
        raise InspectError("--port %d: not a TCP port (0-65535)" % port)
    if unix_socket and host:
        raise InspectError("--unix-socket and --host exclude each other")
    host = host or "127.0.0.1"
    explorer = Explorer(open_target(store, target), mount=_mountpoint(target))
    explorer.warm()
    if unix_socket:
        return explorer, _unix_server(unix_socket, explorer)
    try:
        server = Server((host, port), explorer, loopback_only=is_loopback(host))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InspectError("cannot listen on %s port %d: it is in use (choose another with "
                               "--port, or --port 0 for any free one)" % (host, port))
        raise InspectError("cannot listen on %s port %d: %s" % (host, port, e.strerror or e))
    return explorer, server


def _unix_server(path, explorer):
    try:
        return UnixServer(path, explorer)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InspectError("cannot listen on %s: it exists (remove it, or choose another "
                               "path)" % path)
        raise InspectError("cannot listen on %s: %s" % (path, e.strerror or e))


def url_of(server):
    """Where to point a browser (TCP, token included) or curl (a unix socket)."""
    if isinstance(server, UnixServer):
        return "unix:%s (curl --unix-socket %s http://localhost/api/summary)" % (
            server.path, server.path)
    host, port = server.server_address[:2]
    return "http://%s:%d/?token=%s" % ("[%s]" % host if ":" in host else host, port,
                                       server.token)


def start(explorer, server):
    """Follow a mount's changes and index every layer in the background; returns the Event that
    stops the following."""
    stop = live.start(explorer, server.hub.publish)
    threading.Thread(target=explorer.warm_layers, daemon=True, name="unionfs-serve-warm").start()
    return stop


def serve(server, stop):
    """Serve until KeyboardInterrupt, then stop the background work and close the server."""
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.stopping.set()
        server.server_close()
