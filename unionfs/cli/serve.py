"""``unionfs serve IMAGE|MNT [--port P] [--host H | --unix-socket PATH]``: the live explorer
(unionfs/serve/). It listens on loopback (127.0.0.1) unless ``--host`` names another address,
and answers only requests with the random token in the URL it prints (any local user can reach
a loopback port); with ``--unix-socket`` it listens on a new 0600 socket instead. It serves
until interrupted."""
import signal
import time

from .. import messages
from ..image.store import Store, default_root
from ..serve import launch
from .inspect import TARGET_HELP

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


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args):
    t0 = time.monotonic()
    explorer, server = launch.build(Store(args.store), args.target, args.host, args.port,
                                    args.unix_socket)
    if not server.loopback_only:
        messages.error("warning: listening on %s: anyone who can reach it can browse this "
                       "image's files" % args.host)
    stop = launch.start(explorer, server)
    st = explorer.state.stack
    print("unionfs: serving %s (%d layers, indexed in %.2f s) at %s" % (
        st.name, len(st), time.monotonic() - t0, launch.url_of(server)), flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    launch.serve(server, stop)
    return 0
