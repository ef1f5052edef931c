"""``unionfs serve IMAGE|MNT [--port P] [--host H | --unix-socket PATH]``: the live explorer.

cli.py calls ``register(subparsers)`` and hands ``serve`` to ``run(args)``. The server listens on
loopback (127.0.0.1) unless ``--host`` names another address, and answers only requests with the
random token in the URL it prints (any local user can reach a loopback port); with
``--unix-socket`` it listens on a new 0600 socket instead. It serves until interrupted. A mount's
layers are what its own daemon says (unionfs/mounts.py). Every failure is one ``unionfs: ...``
line and exit status 1.
"""
import errno
import os
import signal
import threading
import time

from .. import messages, mounts

from ..image.store import Store, default_root
from ..inspect.commands import TARGET_HELP, open_target
from ..inspect.layerindex import InspectError
from . import live
from .model import Explorer
from .server import Server, UnixServer, is_loopback

COMMANDS = {"serve"}
DEFAULT_PORT = 8470


def register(sub):
    p = sub.add_parser("serve", help="explore an image or a live mount in the browser",
                       description="A local web page: the layer stack, the merged tree with "
                       "badges and each entry's origin layer, what each layer changed, the waste "
                       "report, and on a mount copy-ups and whiteouts as they happen.")
    p.add_argument("target", metavar="IMAGE|MNT", help=TARGET_HELP + ", or any unionfs mount")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="TCP port (default %d; 0: any free port)" % DEFAULT_PORT)
    p.add_argument("--host", default=None, metavar="ADDR",
                   help="address to listen on (default 127.0.0.1; anything else is reachable "
                        "from other machines)")
    p.add_argument("--unix-socket", metavar="PATH",
                   help="listen on a new unix socket at PATH (mode 0600, no token) instead of "
                        "TCP: for curl --unix-socket, or a proxy")
    p.add_argument("--store", metavar="DIR",
                   help="image store (default: $UNIONFS_STORE, else %s)" % default_root())


def _mountpoint(target):
    """The real path of target if it is a mountpoint of a unionfs mount, else None."""
    m = mounts.mount_at(target) if os.path.isdir(target) else None
    return m.mountpoint if m is not None else None


def build(args):
    """(Explorer, Server) for the parsed arguments; raises ImageError/OSError."""
    host = args.host or "127.0.0.1"
    if not 0 <= args.port <= 65535:
        raise InspectError("--port %d: not a TCP port (0-65535)" % args.port)
    if args.unix_socket and args.host:
        raise InspectError("--unix-socket and --host exclude each other")
    explorer = Explorer(open_target(Store(args.store), args.target), mount=_mountpoint(args.target))
    explorer.warm()
    if args.unix_socket:
        return explorer, _unix_server(args.unix_socket, explorer)
    try:
        server = Server((host, args.port), explorer, loopback_only=is_loopback(host))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InspectError("cannot listen on %s port %d: it is in use (choose another with "
                               "--port, or --port 0 for any free one)" % (host, args.port))
        raise InspectError("cannot listen on %s port %d: %s" % (host, args.port,
                                                                  e.strerror or e))
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args):
    t0 = time.monotonic()
    explorer, server = build(args)
    if not server.loopback_only:
        messages.error("warning: listening on %s: anyone who can reach it can browse this "
                       "image's files" % args.host)
    stop = live.start(explorer, server.hub.publish)
    threading.Thread(target=explorer.warm_layers, daemon=True, name="unionfs-serve-warm").start()
    st = explorer.state.stack
    print("unionfs: serving %s (%d layers, indexed in %.2f s) at %s" % (
        st.name, len(st), time.monotonic() - t0, url_of(server)), flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.stopping.set()
        server.server_close()
    return 0
