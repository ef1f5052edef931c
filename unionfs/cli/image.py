"""``unionfs image ...``, ``unionfs diff`` and ``unionfs commit``: the verbs of the image store
(unionfs/image/); the registry verbs are cli/registry.py's, the image forms of diff and
``commit --dry-run`` cli/inspect.py's."""
import argparse
import json
import re
import sys

from ..image import digest
from ..image.errors import ImageError
from ..image.store import Store, default_root
from ..messages import human
from . import registry
from .output import ago, emit_records, format_args as _format_args
from .registry import sigterm_interrupts

COMMANDS = {"image", "diff", "commit"} | registry.TOP_COMMANDS
_IMAGE_PARSER = None

IMAGE_HELP = """\
Container images: import docker/OCI archives into a store, mount them, save them.

The store is --store DIR, else $UNIONFS_STORE, else /var/lib/unionfs (root) or
~/.local/share/unionfs (other users). Images are named NAME[:TAG] (TAG defaults to 'latest';
'x' also finds 'localhost/x' and 'docker.io/library/x'), by image id or by a unique id prefix.

Each layer is stored once, by DiffID, as the directory its tar extracts to, OCI whiteouts
(.wh.NAME, .wh..wh..opq) kept as they are: unionfs reads them natively in lower layers. A pulled
layer stays the blob it was pulled as until its first use (a mount, diff, commit, save)
unpacks it; `image pull --unpack` unpacks at once.
"""


def _store_arg(p):
    p.add_argument("--store", metavar="DIR",
                   help="image store (default: $UNIONFS_STORE, else %s)" % default_root())


def register(sub):
    img = sub.add_parser("image", help="import, list, mount and save container images",
                         description=IMAGE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    isub = img.add_subparsers(dest="image_command", metavar="VERB")

    p = isub.add_parser("import", help="import a docker-save archive or an OCI layout (dir or tar)")
    p.add_argument("archive")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                   help="also tag the imported image (archive with one image)")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="of a multi-platform image (an OCI index, a docker manifest list), the "
                   "one to import (default: this host's, e.g. linux/amd64)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ids")
    _limit_args(p)
    _store_arg(p)

    p = isub.add_parser("ls", help="list images", aliases=["list"])
    p.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    p.add_argument("--no-trunc", action="store_true", help="full image ids")
    _store_arg(p)
    _format_args(p)

    p = isub.add_parser("history", help="the layers of an image, newest first")
    p.add_argument("image")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate 'created by'")
    _store_arg(p)
    _format_args(p)

    p = isub.add_parser("inspect", help="an image's config and layers as JSON")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _store_arg(p)

    p = isub.add_parser("tag", help="give an image another name")
    p.add_argument("image")
    p.add_argument("name", metavar="NAME[:TAG]")
    _store_arg(p)

    p = isub.add_parser("rm", help="untag images; layers no image uses are removed",
                        aliases=["rmi"])
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true",
                   help="remove an image by id even if it has several tags")
    _store_arg(p)

    p = isub.add_parser("prune", help="remove untagged unused images, unused layers, debris")
    _store_arg(p)

    p = isub.add_parser("mount", help="mount an image (read-only, or --rw with a stored upper)")
    p.add_argument("image")
    p.add_argument("mountpoint")
    p.add_argument("--rw", action="store_true",
                   help="add a writable upper layer kept in the store (its name is printed)")
    p.add_argument("--upper", metavar="NAME",
                   help="the upper layer's name (implies --rw; reused if it exists)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                   help="mount options, as for 'unionfs mount'")
    _store_arg(p)

    p = isub.add_parser("umount", help="unmount an image mount", aliases=["unmount"])
    p.add_argument("mountpoint")
    _store_arg(p)

    p = isub.add_parser("uppers", help="list writable upper layers")
    _store_arg(p)
    _format_args(p)

    p = isub.add_parser("rm-upper", help="remove writable upper layers")
    p.add_argument("names", nargs="+", metavar="NAME")
    _store_arg(p)

    p = isub.add_parser("save", help="write images to a docker or OCI archive")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--format", choices=("docker", "oci"), default="docker",
                   help="docker-archive (default; docker load, podman load) or oci-archive")
    p.add_argument("--compress", choices=("gzip", "zstd"),
                   help="store the layers compressed (default: uncompressed, digest = DiffID)")
    _store_arg(p)

    p = sub.add_parser("diff", help="list what an image mount or upper dir changed (A/C/D)",
                       description="Print one line per change, as 'docker diff' does: "
                       "A added, C changed, D deleted. TARGET is an image mount, a stored "
                       "upper's name, or an upper directory in the kernel's overlay format. "
                       "Also: 'diff IMAGE --layer N' (what layer N changed) and "
                       "'diff IMAGE_A IMAGE_B' (what differs between two images).")
    p.add_argument("target", metavar="MNT|UPPER|IMAGE")
    p.add_argument("other", nargs="?", metavar="IMAGE_B", help="a second image to compare with")
    p.add_argument("--lower", help="for a bare upper dir: its lower layers, top first, ':'-separated")
    p.add_argument("--image", help="for a bare upper dir: the image it was made over")
    # the image forms of `unionfs diff` (cli/inspect.py serves them; imported when they run,
    # so the other image commands do not load the inspection package)
    p.add_argument("--layer", type=int, metavar="N",
                   help="with IMAGE: what layer N (1 = the base) changed over the layers below")
    p.add_argument("-u", "--unified", action="store_true",
                   help="image diffs: a unified diff of each changed text file")
    p.add_argument("--json", action="store_true", help="JSON output (\"version\": 1)")
    p.add_argument("--csv", action="store_true", help="CSV output")
    _store_arg(p)

    p = sub.add_parser("commit", help="store what an image mount or upper changed as a new image",
                       description="Write the changes as an OCI layer over the base image and "
                       "register the result as NAME[:TAG].")
    p.add_argument("target", metavar="MNT|UPPER")
    p.add_argument("name", metavar="NAME[:TAG]", nargs="?")
    p.add_argument("--dry-run", action="store_true", help="list the layer's tar entries "
                   "(whiteouts included) and the size it would add; write nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: JSON (\"version\": 1)")
    p.add_argument("--csv", action="store_true", help="with --dry-run: the entries as CSV")
    p.add_argument("-m", "--message", help="commit message (history comment)")
    p.add_argument("-a", "--author", help="author")
    p.add_argument("--image", help="for a bare upper dir: the image it was made over")
    _store_arg(p)
    registry.register(isub, sub)   # pull, push, tags, catalog, login, logout
    global _IMAGE_PARSER
    _IMAGE_PARSER = img
    return img


# ---- helpers --------------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*([0-9]+)\s*([kmgt]?)(i?b)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(text):
    """A byte count: 12345, 512K, 64M, 32G, 1T (powers of 1024; KiB, MiB ... also)."""
    m = _SIZE.match(text)
    if not m or (m.group(3) and m.group(3).lower() == "ib" and not m.group(2)) \
            or int(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError("%r is not a positive size (e.g. 500M, 32G)" % text)
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def _iec(n):
    for unit, k in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n % (1 << k) == 0:
            return "%d%s" % (n >> k, unit)
    return str(n)


def _count(text):
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError("%r is not a positive number" % text)
    return int(text)


def _limit_args(p):
    from ..image.targuard import Limits
    d = Limits()
    p.add_argument("--max-layer-size", type=_size, default=d.max_layer_size, metavar="SIZE",
                   help="refuse a layer whose uncompressed tar is larger (default %s; holes of "
                   "sparse files do not count)" % _iec(d.max_layer_size))
    p.add_argument("--max-entries", type=_count, default=d.max_entries, metavar="N",
                   help="refuse a layer tar with more entries (default %d)" % d.max_entries)
    p.add_argument("--max-header-size", type=_size, default=d.max_header_size, metavar="SIZE",
                   help="refuse a PAX header, GNU long name or sparse map larger than this "
                   "(default %s)" % _iec(d.max_header_size))
    p.add_argument("--max-archive-size", type=_size, default=d.max_archive_size, metavar="SIZE",
                   help="refuse a compressed archive whose tar is larger (default %s)"
                   % _iec(d.max_archive_size))


def _limits(args):
    from ..image.targuard import Limits
    return Limits(max_layer_size=args.max_layer_size, max_entries=args.max_entries,
                  max_header_size=args.max_header_size, max_archive_size=args.max_archive_size)


def _store(args):
    return Store(args.store)


def _info(msg):
    print(msg, file=sys.stderr)


# ---- verbs ----------------------------------------------------------------------------------------

def cmd_import(args):
    from ..image.importer import import_archive
    with sigterm_interrupts():
        results = import_archive(_store(args), args.archive, args.tag, platform=args.platform,
                                 limits=_limits(args))
    for image_id, names in results:
        if args.quiet:
            print(image_id)
        else:
            print("Loaded image: %s%s" % (image_id, (" (" + ", ".join(names) + ")") if names else ""))
    return 0


def _short_id(image_id, no_trunc):
    return image_id if no_trunc else digest.short(image_id)


def cmd_ls(args):
    from ..image import describe
    store = _store(args)
    if args.quiet:
        for img in store.images():
            print(_short_id(img.id, args.no_trunc))
        return 0
    records = describe.image_records(store)
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for r in records:
        untagged = r["tag"] is None
        rows.append(("<none>" if untagged else r["repository"], "<none>" if untagged else r["tag"],
                     _short_id(r["id"], args.no_trunc), ago(r["created"]), human(r["size"])))
    emit_records(args, "image ls", "images", records, rows)
    return 0


def cmd_history(args):
    from ..image import describe
    img = _store(args).get(args.image)
    out = [("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")]
    records = []
    for iid, created, by, size, comment in describe.history_rows(img):
        records.append({"id": img.id if iid != "<missing>" else None, "created": created,
                        "created_by": by, "size": size, "comment": comment})
        by = " ".join(by.split())
        if not args.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        out.append((img.id if (args.no_trunc and iid != "<missing>") else iid,
                    ago(created) if created else "N/A", by, human(size), comment))
    emit_records(args, "image history", "history", records, out)
    return 0


def cmd_inspect(args):
    from ..image import describe
    if args.remote:
        return registry.cmd_remote_inspect(args)
    store = _store(args)
    out = [describe.inspect_obj(store, store.get(r)) for r in args.images]
    print(json.dumps(out, indent=4, ensure_ascii=False))
    return 0


def cmd_tag(args):
    store = _store(args)
    with store.lock():
        store.tag(args.name, store.resolve(args.image))
    return 0


def cmd_rm(args):
    from ..image import remove as removal
    for what in removal.remove(_store(args), args.images, args.force):
        if what[0] == "untagged":
            print("Untagged: %s" % what[1])
        elif what[0] == "kept":
            _info("unionfs: image %s is %s: kept (untagged)" % (digest.short(what[1]), what[2]))
        elif what[0] == "deleted":
            print("Deleted: %s" % what[1])
        else:
            print("Deleted layer: %s (%s)" % (what[1], human(what[2])))
    return 0


def cmd_prune(args):
    from ..image import remove as removal
    for what in removal.prune(_store(args)):
        if what[0] == "deleted":
            print("Deleted: %s" % what[1])
        elif what[0] == "deleted_layer":
            print("Deleted layer: %s" % what[1])
        else:
            print("Total reclaimed space: %s" % human(what[1]))
    return 0


def cmd_mount(args):
    from ..image.mount import mount_image, pull_if_missing
    store = _store(args)
    ref = pull_if_missing(store, args.image, args.tls_verify)
    name = mount_image(store, ref, args.mountpoint, args.options, args.rw, args.upper)
    if name:
        print(name)
    return 0


def cmd_umount(args):
    from ..image.mount import umount_image
    umount_image(_store(args), args.mountpoint)
    return 0


def cmd_uppers(args):
    from ..image import uppers
    records = uppers.upper_records(_store(args))
    rows = [("NAME", "IMAGE", "CREATED", "MOUNTED ON")]
    for r in records:
        rows.append((r["name"], r["tags"][0] if r["tags"] else digest.short(r["image"] or "?"),
                     ago(r["created"]), r["mounted_on"] or ""))
    emit_records(args, "image uppers", "uppers", records, rows)
    return 0


def cmd_rm_upper(args):
    from ..image import uppers
    for name in uppers.remove_uppers(_store(args), args.names):
        print(name)
    return 0


def cmd_save(args):
    from ..image.save import save
    images = save(_store(args), args.images, args.output, args.format, args.compress)
    _info("saved %d image(s) to %s" % (len(images), args.output))
    return 0


def cmd_diff(args):
    from ..image import uppers
    from . import inspect as inspect_cli
    from ..image.changes import Changes
    if args.other is not None or args.layer is not None:
        return inspect_cli.cmd_diff_images(args)
    t = uppers.resolve_target(_store(args), args.target, args.lower, args.image)
    lines = Changes(t.upper, t.lowers).diff_lines()
    if args.json or args.csv:
        return inspect_cli.emit_upper_diff(args, lines)
    for line in lines:
        sys.stdout.write(line + "\n")
    return 0


def cmd_commit(args):
    from ..image import uppers
    from . import inspect as inspect_cli
    from ..image.changes import Changes
    from ..image.commit import commit_image
    store = _store(args)
    t = uppers.resolve_target(store, args.target, None, args.image)
    if t.image is None:
        raise ImageError("%s: unknown base image: name it with --image" % args.target)
    changes = Changes(t.upper, t.image.lower_dirs())
    if args.dry_run:
        return inspect_cli.print_commit_plan(args, store, changes)
    if not args.name:
        raise ImageError("commit: give the new image's NAME[:TAG] (or --dry-run)")
    image_id, _diff_id = commit_image(store, t.image, changes, args.name, args.message,
                                      args.author)
    print(image_id)
    return 0


VERBS = {
    "import": cmd_import, "ls": cmd_ls, "list": cmd_ls, "history": cmd_history,
    "inspect": cmd_inspect, "tag": cmd_tag, "rm": cmd_rm, "rmi": cmd_rm, "prune": cmd_prune,
    "mount": cmd_mount, "umount": cmd_umount, "unmount": cmd_umount, "uppers": cmd_uppers,
    "rm-upper": cmd_rm_upper, "save": cmd_save,
}
VERBS.update(registry.VERBS)


def run(args):
    """Run a parsed image/diff/commit/login/logout command; returns the exit status."""
    if getattr(args, "json", False) and getattr(args, "csv", False):
        raise ImageError("--json and --csv exclude each other")
    if args.command == "diff":
        return cmd_diff(args)
    if args.command == "commit":
        return cmd_commit(args)
    verb = getattr(args, "image_command", None)
    if verb is None:
        if _IMAGE_PARSER is not None:
            _IMAGE_PARSER.print_help()
        return 2
    return VERBS[verb](args)
