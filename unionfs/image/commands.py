"""The CLI verbs for images: ``unionfs image ...``, ``unionfs diff`` and ``unionfs commit``.

cli.py calls ``register(subparsers)`` and hands the parsed arguments of any command in COMMANDS to
``run(args)``. Every failure is one line on stderr and exit status 1.
"""
import argparse
import datetime
import json
import os
import re
import signal
import sys
import uuid

from .. import mount as mountmod
from .. import mounts
from ..inspect import commands as inspect_commands
from ..inspect import output
from ..mounts import mounted_paths
from ..spec import MountSpec, parse_options, split_escaped, validate
from . import digest, registry_commands, remotes
from .errors import ImageError
from ..messages import human
from .store import Store, default_root, layer_source, rmtree

COMMANDS = {"image", "diff", "commit"} | registry_commands.TOP_COMMANDS
_IMAGE_PARSER = None

IMAGE_HELP = """\
Container images: import docker/OCI archives into a store, mount them, save them.

The store is --store DIR, else $UNIONFS_STORE, else /var/lib/unionfs (root) or
~/.local/share/unionfs (other users). Images are named NAME[:TAG] (TAG defaults to 'latest';
'x' also finds 'localhost/x' and 'docker.io/library/x'), by image id or by a unique id prefix.

Each layer is stored once, by DiffID, as the directory its tar extracts to, OCI whiteouts
(.wh.NAME, .wh..wh..opq) kept as they are: unionfs reads them natively in lower layers.
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
    inspect_commands.add_diff_args(p)
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
    registry_commands.register(isub, sub)   # pull, push, tags, catalog, login, logout
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
    from .targuard import Limits
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
    from .targuard import Limits
    return Limits(max_layer_size=args.max_layer_size, max_entries=args.max_entries,
                  max_header_size=args.max_header_size, max_archive_size=args.max_archive_size)


def _store(args):
    return Store(args.store)


def _when(s):
    if not s:
        return None
    try:
        s = s.rstrip("Z")
        if "." in s:
            head, frac = s.split(".", 1)
            digits = "".join(c for c in frac if c.isdigit())[:6]
            tz = frac[len("".join(c for c in frac if c.isdigit())):]
            s = head + "." + digits + tz
        t = datetime.datetime.fromisoformat(s)
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return t
    except ValueError:
        return None


def ago(s):
    t = _when(s)
    if t is None:
        return "N/A"
    secs = (datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()
    for unit, n in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400),
                    ("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= n:
            k = int(secs // n)
            return "%d %s%s ago" % (k, unit, "s" if k > 1 else "")
    return "Less than a minute ago" if secs >= 0 else "in the future"


def _table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def _format_args(p):
    p.add_argument("--json", action="store_true", help="versioned JSON (fields: docs/images.md)")
    p.add_argument("--csv", action="store_true", help="the table as CSV, with raw values")


def _records(args, command, key, records, table):
    """Print records (dicts of raw values) as JSON or CSV when asked, else the human table."""
    if getattr(args, "json", False):
        output.emit_json(command, {key: records})
    elif getattr(args, "csv", False):
        header = list(records[0]) if records else []
        output.emit_csv(header, [[r[h] for h in header] for r in records])
    else:
        _table(table)


def _info(msg):
    print(msg, file=sys.stderr)


# ---- verbs ----------------------------------------------------------------------------------------

def cmd_import(args):
    from .importer import import_archive
    store = _store(args)

    def term(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, term)
    try:
        results = import_archive(store, args.archive, args.tag, platform=args.platform,
                                 limits=_limits(args))
    finally:
        signal.signal(signal.SIGTERM, old)
    for image_id, names in results:
        if args.quiet:
            print(image_id)
        else:
            print("Loaded image: %s%s" % (image_id, (" (" + ", ".join(names) + ")") if names else ""))
    return 0


def cmd_ls(args):
    store = _store(args)
    images = store.images()
    if args.quiet:
        for img in images:
            print(img.id if args.no_trunc else img.hex[:12])
        return 0
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    records = []
    for img in sorted(images, key=lambda i: i.created or "", reverse=True):
        iid = img.id if args.no_trunc else img.hex[:12]
        size = img.size()
        for t in img.tags() or [None]:
            repo, _, tag = t.rpartition(":") if t else ("<none>", "", "<none>")
            rows.append((repo, tag, iid, ago(img.created), human(size)))
            records.append({"repository": None if t is None else repo,
                            "tag": None if t is None else tag, "id": img.id,
                            "created": img.created, "size": size})
    _records(args, "image ls", "images", records, rows)
    return 0


def history_rows(img):
    """[(image, created, created_by, size, comment)] newest first."""
    hist = img.config.get("history") or []
    sizes = img.layer_sizes()
    rows = []
    li = 0
    if not hist:
        hist = [{} for _ in img.layers]
    for h in hist:
        empty = bool(h.get("empty_layer"))
        size = 0
        if not empty and li < len(sizes):
            size = sizes[li]
            li += 1
        rows.append(["<missing>", h.get("created"), h.get("created_by", ""), size,
                     h.get("comment", "")])
    for s in sizes[li:]:  # layers the history does not describe
        rows.append(["<missing>", None, "", s, ""])
    rows.reverse()
    if rows:
        rows[0][0] = img.hex[:12]
    return rows


def cmd_history(args):
    img = _store(args).get(args.image)
    out = [("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")]
    records = []
    for iid, created, by, size, comment in history_rows(img):
        records.append({"id": img.id if iid != "<missing>" else None, "created": created,
                        "created_by": by, "size": size, "comment": comment})
        by = " ".join(by.split())
        if not args.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        out.append((img.id if (args.no_trunc and iid != "<missing>") else iid,
                    ago(created) if created else "N/A", by, human(size), comment))
    _records(args, "image history", "history", records, out)
    return 0


def inspect_obj(store, img):
    cfg = img.config.get("config") or {}
    return {
        "Id": img.id,
        "RepoTags": img.tags(),
        "Created": img.created,
        "Author": img.config.get("author", ""),
        "Architecture": img.config.get("architecture", ""),
        "Os": img.config.get("os", ""),
        "Size": img.size(),
        "Config": {
            "Env": cfg.get("Env") or [],
            "Entrypoint": cfg.get("Entrypoint"),
            "Cmd": cfg.get("Cmd"),
            "WorkingDir": cfg.get("WorkingDir", ""),
            "User": cfg.get("User", ""),
            "Labels": cfg.get("Labels") or {},
            "ExposedPorts": cfg.get("ExposedPorts") or {},
            "Volumes": cfg.get("Volumes") or {},
            "StopSignal": cfg.get("StopSignal", ""),
        },
        "RootFS": {"Type": "layers", "Layers": img.layers},
        "LayerDirs": [store.layer_root(d) for d in img.layers],
        "History": img.config.get("history") or [],
    }


def cmd_inspect(args):
    store = _store(args)
    out = [inspect_obj(store, store.get(r)) for r in args.images]
    print(json.dumps(out, indent=4, ensure_ascii=False))
    return 0


def cmd_tag(args):
    store = _store(args)
    with store.lock():
        store.tag(args.name, store.resolve(args.image))
    return 0


def cmd_rm(args):
    store = _store(args)
    from .store import normalize_ref, SEARCH_PREFIXES
    with store.lock():
        for ref in args.images:
            image_id = store.resolve(ref)
            tags = store.tags()
            mine = [t for t, i in tags.items() if i == image_id]
            # which tag did the user name? (none: removed by id)
            named = None
            try:
                full = normalize_ref(ref)
                for cand in [full] + [p + full for p in SEARCH_PREFIXES]:
                    if cand in mine:
                        named = cand
                        break
                else:
                    hits = [t for t in mine if t.endswith("/" + full)]
                    named = hits[0] if len(hits) == 1 else None
            except ImageError:
                pass
            if named is None and len(mine) > 1 and not args.force:
                raise ImageError("image %s has several tags (%s): remove them by name, or use -f"
                                 % (digest.short(image_id), ", ".join(sorted(mine))))
            gone = [named] if named else mine
            for t in gone:
                del tags[t]
                print("Untagged: %s" % t)
            store.set_tags(tags)
            if any(i == image_id for i in tags.values()):
                continue
            used = store.images_in_use().get(image_id)
            if used:
                _info("unionfs: image %s is %s: kept (untagged)" % (digest.short(image_id), used))
                continue
            store.remove_image(image_id)
            print("Deleted: %s" % image_id)
        for lid, size in store.gc_layers():
            print("Deleted layer: %s (%s)" % (lid, human(size)))
    return 0


def cmd_prune(args):
    store = _store(args)
    with store.lock():
        store.clean_tmp()
        tagged = set(store.tags().values())
        used = store.images_in_use()
        for img in store.images():
            if img.id not in tagged and img.id not in used:
                store.remove_image(img.id)
                print("Deleted: %s" % img.id)
        total = 0
        for lid, size in store.gc_layers():
            print("Deleted layer: %s" % lid)
            total += size
        total += remotes.prune(store)     # after the layers: their blobs.json entries go too
        print("Total reclaimed space: %s" % human(total))
    return 0


def cmd_mount(args):
    store = _store(args)
    img = store.get(args.image)
    lowers = img.lower_dirs()
    if not lowers:
        empty = store.path("empty")
        os.makedirs(empty, exist_ok=True)
        lowers = [empty]
    spec = MountSpec(lowers=lowers, mountpoint=args.mountpoint)
    parse_options(args.options, spec)
    _stored_owners(img, spec)
    name = created = None
    if args.rw or args.upper:
        name = args.upper or "%s-%s" % (img.hex[:12], uuid.uuid4().hex[:8])
        with store.lock():
            d = store.upper_dir(name)
            if os.path.isdir(d):
                meta = store.uppers().get(name) or {}
                if meta.get("image") != img.id:
                    raise ImageError("upper %s belongs to image %s, not %s" % (
                        name, digest.short(meta.get("image") or "?"), digest.short(img.id)))
                for mnt, rec in store.live_mounts().items():
                    if rec.get("upper") == name:
                        raise ImageError("upper %s is already mounted on %s" % (name, mnt))
            else:
                store.create_upper(name, img.id)
                created = d
        spec.upper, spec.work = os.path.join(d, "upper"), os.path.join(d, "work")
    try:
        spec = validate(spec)
        pid = mountmod.mount(spec, layer_source)
    except BaseException:
        if created:   # an upper made for this mount only: not left behind by a failed mount
            rmtree(created)
        raise
    with store.lock():
        store.record_mount(spec.mountpoint, {"image": img.id, "upper": name, "pid": pid})
    if name:
        print(name)
    return 0


def _stored_owners(img, spec):
    """An image imported without root keeps owners, modes and device nodes in override xattrs
    (image/extract.py): its mounts read them (xattr_permissions=2, unless -o says otherwise), for
    root too. They are what the importing user wrote, so root may not mount such an image with
    suid or dev: a setuid-root file or a device node there is only as trusted as that user."""
    if not img.owners_in_xattrs():
        return
    if spec.xattr_permissions is None:
        spec.xattr_permissions = 2
    unsafe = sorted(o for o in ("suid", "dev") if o in spec.fuse)
    if unsafe:
        raise ImageError("image %s was imported without root (its owners and device nodes are "
                         "xattrs its importer wrote): -o %s refused" % (
                             digest.short(img.id), ",".join(unsafe)))


def cmd_umount(args):
    store = _store(args)
    mountmod.umount(args.mountpoint)
    with store.lock():
        store.forget_stale_mounts()
    return 0


def cmd_uppers(args):
    store = _store(args)
    live = {r.get("upper"): m for m, r in store.live_mounts().items() if r.get("upper")}
    rows = [("NAME", "IMAGE", "CREATED", "MOUNTED ON")]
    records = []
    for name, meta in store.uppers().items():
        tags = []
        try:
            tags = store.image(meta["image"]).tags()
        except (ImageError, OSError, KeyError):
            pass
        rows.append((name, tags[0] if tags else digest.short(meta.get("image", "?")),
                     ago(meta.get("created")), live.get(name, "")))
        records.append({"name": name, "image": meta.get("image"), "tags": tags,
                        "created": meta.get("created"), "mounted_on": live.get(name)})
    _records(args, "image uppers", "uppers", records, rows)
    return 0


def cmd_rm_upper(args):
    store = _store(args)
    with store.lock():
        live = {r.get("upper"): m for m, r in store.live_mounts().items()}
        for name in args.names:
            d = store.upper_dir(name)
            if not os.path.isdir(d):
                raise ImageError("no such upper: %s" % name)
            if name in live:
                raise ImageError("upper %s is mounted on %s: unmount it first" % (name, live[name]))
            tmp = store.mkdtemp("rm-")
            os.rename(d, os.path.join(tmp, "upper"))
            rmtree(tmp)
            print(name)
    return 0


def cmd_save(args):
    from .save import save
    store = _store(args)
    images = save(store, args.images, args.output, args.format, args.compress)
    _info("saved %d image(s) to %s" % (len(images), args.output))
    return 0


# ---- diff / commit targets -------------------------------------------------------------------------

class Target:
    def __init__(self, upper, lowers, image=None, name=None):
        self.upper, self.lowers, self.image, self.name = upper, lowers, image, name


def resolve_target(store, arg, lower=None, image_ref=None):
    """(upper dir, lower dirs top first, base Image or None) for MNT | upper NAME | UPPER dir."""
    uppers = store.uppers()
    real = os.path.realpath(arg) if os.path.exists(arg) else None

    def from_upper(name):
        meta = uppers[name]
        img = store.image(meta["image"])
        return Target(os.path.join(store.upper_dir(name), "upper"), img.lower_dirs(), img, name)

    if real is not None and real in mounted_paths():
        rec = store.live_mounts().get(real)
        if rec is not None:
            if not rec.get("upper"):
                raise ImageError("%s is a read-only image mount: it has no changes" % real)
            return from_upper(rec["upper"])
        upper, lowers = mounts.upper_and_lowers(real)
        if upper is None:
            raise ImageError("%s is a read-only mount: it has no changes" % real)
        img = store.get(image_ref) if image_ref else None
        return Target(upper, lowers, img)
    if real is None and "/" not in arg and arg in uppers:
        return from_upper(arg)
    if real is None or not os.path.isdir(real):
        raise ImageError("%s: not a mountpoint, stored upper or directory" % arg)
    for name in uppers:
        d = os.path.realpath(store.upper_dir(name))
        if real in (d, os.path.join(d, "upper")):
            return from_upper(name)
    img = store.get(image_ref) if image_ref else None
    if lower:
        lowers = split_escaped(lower, ":")
    elif img is not None:
        lowers = img.lower_dirs()
    else:
        lowers = []
    return Target(real, lowers, img)


def cmd_diff(args):
    from .changes import Changes
    if args.other is not None or args.layer is not None:
        return inspect_commands.cmd_diff_images(args)
    store = _store(args)
    t = resolve_target(store, args.target, args.lower, args.image)
    lines = Changes(t.upper, t.lowers).diff_lines()
    if args.json or args.csv:
        return inspect_commands.emit_upper_diff(args, lines)
    for line in lines:
        sys.stdout.write(line + "\n")
    return 0


def cmd_commit(args):
    from .changes import Changes
    from .commit import commit_image
    store = _store(args)
    t = resolve_target(store, args.target, None, args.image)
    if t.image is None:
        raise ImageError("%s: unknown base image: name it with --image" % args.target)
    changes = Changes(t.upper, t.image.lower_dirs())
    if args.dry_run:
        return inspect_commands.print_commit_plan(args, store, changes)
    if not args.name:
        raise ImageError("commit: give the new image's NAME[:TAG] (or --dry-run)")
    image_id, diff_id = commit_image(store, t.image, changes, args.name, args.message, args.author)
    print(image_id)
    return 0


VERBS = {
    "import": cmd_import, "ls": cmd_ls, "list": cmd_ls, "history": cmd_history,
    "inspect": cmd_inspect, "tag": cmd_tag, "rm": cmd_rm, "rmi": cmd_rm, "prune": cmd_prune,
    "mount": cmd_mount, "umount": cmd_umount, "unmount": cmd_umount, "uppers": cmd_uppers,
    "rm-upper": cmd_rm_upper, "save": cmd_save,
}
registry_commands.wrap(VERBS)


def run(args):
    """Run a parsed image/diff/commit command; returns the exit status."""
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
