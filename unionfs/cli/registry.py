"""``unionfs image pull|push|tags|catalog``, ``image inspect --remote`` and ``unionfs
login|logout``: the registry verbs (unionfs/image/pull.py, push.py, registry_queries.py).
cli/image.py registers them with ``register(image_subparsers, top_subparsers)`` and runs VERBS."""
import argparse
import contextlib
import getpass
import json
import signal
import sys

from ..image import reference, registry_queries as queries
from ..image.errors import ImageError
from ..image.store import Store

TOP_COMMANDS = {"login", "logout"}


def _bool(text):
    t = str(text).lower()
    if t in ("true", "1", "yes"):
        return True
    if t in ("false", "0", "no"):
        return False
    raise ValueError(text)


def _tls(p):
    p.add_argument("--tls-verify", type=_bool, nargs="?", const=True, default=None, metavar="BOOL",
                   help="require HTTPS with a verified certificate (default: true, except for "
                   "registries marked insecure in registries.conf)")


def _jobs(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def _store_arg(p):
    p.add_argument("--store", metavar="DIR", help="image store (as for the other image verbs)")


def register(isub, sub):
    p = isub.add_parser("pull", help="pull an image from a registry into the store")
    p.add_argument("ref", metavar="[REGISTRY/]NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="of a multi-platform image, the one to pull (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("--jobs", type=_jobs, default=3, metavar="N", help="layers downloaded at once (3)")
    p.add_argument("--unpack", action="store_true",
                   help="unpack the layers now (checking their DiffIDs) instead of at first use")
    _tls(p)
    _store_arg(p)

    p = isub.add_parser("push", help="push an image of the store to a registry")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("ref", metavar="[REGISTRY/]NAME[:TAG]")
    p.add_argument("--format", choices=("oci", "v2s2"), default="oci",
                   help="manifest format: OCI (default) or Docker schema 2")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the manifest digest")
    p.add_argument("--chunk-size", type=int, default=32 << 20, metavar="BYTES",
                   help="layers larger than this are uploaded in chunks of this size")
    p.add_argument("--jobs", type=_jobs, default=3, metavar="N", help="layers uploaded at once (3)")
    _tls(p)
    _store_arg(p)

    p = isub.add_parser("tags", help="list the tags of a repository in a registry")
    p.add_argument("ref", metavar="[REGISTRY/]NAME")
    _tls(p)

    p = isub.add_parser("catalog", help="list the repositories of a registry")
    p.add_argument("registry", metavar="REGISTRY")
    _tls(p)

    inspect = isub.choices["inspect"]
    inspect.add_argument("--remote", action="store_true",
                         help="read the manifest and config from the registry; pull nothing")
    inspect.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="with --remote")
    _tls(inspect)
    _tls(isub.choices["mount"])   # mount pulls an image the store lacks

    p = sub.add_parser("login", help="store credentials for a registry (containers auth.json)")
    p.add_argument("registry", metavar="REGISTRY")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _tls(p)
    p.set_defaults(image_command="login")

    p = sub.add_parser("logout", help="remove the credentials stored for a registry")
    p.add_argument("registry", metavar="REGISTRY")
    p.set_defaults(image_command="logout")


@contextlib.contextmanager
def sigterm_interrupts():
    """SIGTERM interrupts as ^C does, so a killed import, pull or push cleans up after itself."""
    def term(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def cmd_pull(args):
    from ..image.pull import pull
    with sigterm_interrupts():
        image_id, _tag, _digest = pull(Store(args.store), args.ref, args.platform, args.tls_verify,
                                       quiet=args.quiet, jobs=args.jobs, unpack=args.unpack)
    print(image_id)
    return 0


def cmd_push(args):
    from ..image.push import push
    with sigterm_interrupts():
        d = push(Store(args.store), args.image, args.ref, args.format, args.tls_verify,
                 quiet=args.quiet, chunk_size=max(1 << 16, args.chunk_size), jobs=args.jobs)
    print(d)
    return 0


def cmd_tags(args):
    for t in queries.tags(args.ref, args.tls_verify):
        print(t)
    return 0


def cmd_catalog(args):
    for r in queries.catalog(args.registry, args.tls_verify):
        print(r)
    return 0


def cmd_remote_inspect(args):
    out = queries.remote_inspect(args.images, args.platform, args.tls_verify)
    print(json.dumps(out, indent=4, ensure_ascii=False))
    return 0


def cmd_login(args):
    reg = reference.parse_registry(args.registry)
    user = args.username
    if not user:
        if not sys.stdin.isatty():
            raise ImageError("login: give --username (stdin is not a terminal)")
        user = input("Username: ")
    if args.password_stdin:
        if args.password:
            raise ImageError("login: --password and --password-stdin exclude each other")
        password = sys.stdin.readline().rstrip("\n")
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        raise ImageError("login: give --password-stdin or --password (stdin is not a terminal)")
    queries.login(reg, user, password, args.tls_verify)
    print("Login Succeeded!")
    return 0


def cmd_logout(args):
    print("Removed login credentials for %s" % queries.logout(args.registry))
    return 0


VERBS = {"pull": cmd_pull, "push": cmd_push, "tags": cmd_tags, "catalog": cmd_catalog,
         "login": cmd_login, "logout": cmd_logout}
