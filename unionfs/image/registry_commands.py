"""The registry verbs: ``image pull/push/tags/catalog``, ``image inspect --remote``, the pull
``image mount`` does for an image the store lacks, and ``unionfs login/logout``.

commands.py calls ``register(image_subparsers, top_subparsers)`` and ``wrap(VERBS)``; every
failure is an ImageError, printed there as one line.
"""
import getpass
import json
import signal
import sys

from . import auth, reference
from .errors import ImageError
from .store import Store

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


def _store_arg(p):
    p.add_argument("--store", metavar="DIR", help="image store (as for the other image verbs)")


def register(isub, sub):
    p = isub.add_parser("pull", help="pull an image from a registry into the store")
    p.add_argument("ref", metavar="[REGISTRY/]NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="of a multi-platform image, the one to pull (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("--jobs", type=int, default=3, metavar="N", help="layers downloaded at once (3)")
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


def _sigterm_interrupts():
    def term(signum, frame):
        raise KeyboardInterrupt
    return signal.signal(signal.SIGTERM, term)


def cmd_pull(args):
    from .pull import pull
    old = _sigterm_interrupts()
    try:
        image_id, _tag, _digest = pull(Store(args.store), args.ref, args.platform, args.tls_verify,
                                       quiet=args.quiet, jobs=args.jobs)
    finally:
        signal.signal(signal.SIGTERM, old)
    print(image_id)
    return 0


def cmd_push(args):
    from .push import push
    old = _sigterm_interrupts()
    try:
        d = push(Store(args.store), args.image, args.ref, args.format, args.tls_verify,
                 quiet=args.quiet, chunk_size=max(1 << 16, args.chunk_size))
    finally:
        signal.signal(signal.SIGTERM, old)
    print(d)
    return 0


def _client(registry, api_host, tls_verify):
    from .registry import Client
    return Client(registry, api_host=api_host, tls_verify=tls_verify)


def cmd_tags(args):
    ref = reference.parse(args.ref, default_tag=False)
    for t in _client(ref.registry, ref.api_host, args.tls_verify).tags(ref.repository):
        print(t)
    return 0


def cmd_catalog(args):
    reg = reference.parse_registry(args.registry)
    host = reference.Reference(reg, "x").api_host
    for r in _client(reg, host, args.tls_verify).catalog():
        print(r)
    return 0


def remote_inspect(args):
    from .pull import fetch_record
    out = []
    for text in args.images:
        ref = reference.parse(text)
        rec, m, mdigest, top = fetch_record(_client(ref.registry, ref.api_host, args.tls_verify),
                                            ref, args.platform)
        cfg = rec.config
        out.append({"Name": ref.name, "Tag": ref.tag, "Digest": top, "ManifestDigest": mdigest,
                    "Id": rec.config_digest, "Created": cfg.get("created"),
                    "Architecture": cfg.get("architecture", ""), "Os": cfg.get("os", ""),
                    "Config": cfg.get("config") or {},
                    "Layers": [ld["digest"] for ld in m["layers"]],
                    "LayerSizes": [ld.get("size") for ld in m["layers"]],
                    "DiffIDs": rec.diff_ids, "Manifest": m})
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
    host = reference.Reference(reg, "x").api_host
    from .registry import Client
    Client(reg, api_host=host, tls_verify=args.tls_verify, credentials=(user, password)).ping()
    auth.store_credentials(reg, user, password)
    print("Login Succeeded!")
    return 0


def cmd_logout(args):
    reg = reference.parse_registry(args.registry)
    if not auth.remove_credentials(reg):
        raise ImageError("logout: not logged in to %s" % reg)
    print("Removed login credentials for %s" % reg)
    return 0


def wrap(verbs):
    """Add the registry verbs to VERBS; inspect and mount learn their registry behaviour."""
    inspect, mount = verbs["inspect"], verbs["mount"]

    def cmd_inspect(args):
        return remote_inspect(args) if args.remote else inspect(args)

    def cmd_mount(args):
        store = Store(args.store)
        try:
            store.resolve(args.image)
        except ImageError:
            # only a name that says its registry is pulled: a short name the store lacks stays
            # an error here rather than a surprise download from docker.io
            first, sep, _ = args.image.partition("/")
            if not (sep and reference.is_domain(first)):
                raise
            from .pull import pull
            image_id, tag, _ = pull(store, args.image, None, args.tls_verify, quiet=False)
            args.image = tag or image_id
        return mount(args)

    verbs.update({"pull": cmd_pull, "push": cmd_push, "tags": cmd_tags, "catalog": cmd_catalog,
                  "inspect": cmd_inspect, "mount": cmd_mount, "login": cmd_login,
                  "logout": cmd_logout})
