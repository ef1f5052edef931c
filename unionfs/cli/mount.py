"""``unionfs mount``, ``umount`` and the mount helper form ``unionfs [SOURCE] MNT -o OPTS``
(how mount(8) and container storage run a mount_program); ``_daemon`` is the mount's own daemon
process (unionfs/mount.py starts it). Options are validated by unionfs/spec.py before anything
is mounted."""
import argparse

from .. import mount as mountmod
from ..spec import MountSpec, load_spec_file, parse_options, split_escaped, validate

COMMANDS = {"mount", "umount", "unmount", "_daemon"}

MOUNT_HELP = """\
Mount lower layers (read-only, top first) under an optional writable upper directory.

Options for -o (comma separated; the kernel's overlayfs option names work too):
  lowerdir=L1:L2,upperdir=U,workdir=W   the layers, as for mount -t overlay ('\\:' escapes ':')
  redirect_dir=on|off      on (default for `unionfs mount`): renaming a lower directory records
                           a redirect, as the kernel does; off (default for the helper form, the
                           mount_program call): the directory's tree is copied up instead, so
                           the upper describes the change without redirects
  volatile, fsync=0        do not fsync copied-up data (faster; not crash safe)
  ro                       read-only mount even if an upper is given
  userxattr                write overlay markers as user.overlay.* (the kernel's userxattr mode;
                           chosen by itself when the daemon may not set trusted.*)
  uidmapping=A:B:N[:...], gidmapping=A:B:N[:...]
                           show on-disk id A+k as B+k (k < N) and store B+k as A+k, as
                           fuse-overlayfs does; ids outside every range show as 65534
  squash_to_root, squash_to_uid=N, squash_to_gid=N
                           show every entry owned by 0 (or N)
  xattr_permissions=0|1|2  keep owner and mode in user.containers.override_stat (2) or
                           security.containers.override_stat (1) where the daemon may not chown;
                           default 2 when not root, else 0
  allow_other, allow_root  let other users see the mount (needs user_allow_other for non-root)
  dev, suid                allow device files / setuid bits to take effect. The defaults are
                           nodev and nosuid: a layer from an image cannot plant a working device
                           node or setuid binary
  noatime, exec, noexec, sync, dirsync, max_read=N, fsname=NAME, subtype=NAME: mount options
  entry_timeout=S, attr_timeout=S, negative_timeout=S  how long the kernel keeps names,
                           attributes and missing names (default 3600: every change goes
                           through the mount)
  max_idle_threads=N       worker threads of the daemon (default 8)
  uring                    take requests through io_uring (kernel 6.14+ with the fuse module's
                           enable_uring=Y), else /dev/fuse as without it (docs/performance.md)
  nopassthrough            serve every read and write in the daemon. Without it (root, Linux
                           6.9+) the kernel reads and writes files of a read-only mount, and
                           upper files of a read-write one, itself (FUSE passthrough)
  kernel_cache, auto_cache accepted; the kernel always keeps file pages and listings
  context=, fscontext=, xino=, index=, metacopy=, x-*: accepted and ignored (container tools
                           pass them)
Permission checks are always done by the kernel (default_permissions), as for overlayfs.
"""


def _add_mount_args(p):
    p.add_argument("--lower", help="lower layers, top first, ':'-separated ('\\:' escapes ':')")
    p.add_argument("--upper", help="writable upper directory (omit for a read-only mount)")
    p.add_argument("--work", help="work directory on the same filesystem as --upper")
    p.add_argument("--spec", help="TOML mount spec (lower, upper, work, options)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                   help="mount options, see above")
    p.add_argument("-f", dest="foreground", action="store_true", help="stay in the foreground")
    p.add_argument("-d", dest="debug", action="store_true",
                   help="log every FUSE operation to stderr (implies -f)")
    p.add_argument("mountpoint")


def register(sub):
    m = sub.add_parser("mount", help="mount a union", description=MOUNT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_mount_args(m)
    u = sub.add_parser("umount", help="unmount a union", aliases=["unmount"])
    u.add_argument("mountpoint")
    d = sub.add_parser("_daemon")
    d.add_argument("--ready-fd", type=int)
    d.add_argument("-o", dest="options", action="append", default=[])
    d.add_argument("-f", dest="foreground", action="store_true")
    d.add_argument("-d", dest="debug", action="store_true")
    d.add_argument("mountpoint")


def spec_from_args(args, redirect_dir=True):
    spec = MountSpec(lowers=[], mountpoint=args.mountpoint, redirect_dir=redirect_dir)
    if getattr(args, "spec", None):
        f = load_spec_file(args.spec)
        spec.lowers, spec.upper, spec.work = f["lower"], f.get("upper"), f.get("work")
        parse_options([",".join(f["options"])], spec)
    parse_options(args.options, spec)
    if getattr(args, "lower", None):
        spec.lowers = split_escaped(args.lower, ":")
    if getattr(args, "upper", None):
        spec.upper = args.upper
    if getattr(args, "work", None):
        spec.work = args.work
    spec.foreground = args.foreground
    spec.debug = args.debug
    return spec


def helper_form(argv):
    """`unionfs [SOURCE] MOUNTPOINT -o OPTS`, as mount(8) and container storage call it."""
    p = argparse.ArgumentParser(prog="unionfs")
    p.add_argument("-o", dest="options", action="append", default=[])
    p.add_argument("-f", dest="foreground", action="store_true")
    p.add_argument("-d", dest="debug", action="store_true")
    p.add_argument("paths", nargs="+")
    args = p.parse_args(argv)
    if len(args.paths) > 2:
        p.error("expected [SOURCE] MOUNTPOINT")
    args.mountpoint = args.paths[-1]
    return args


def layer_source(root):
    """image.store.layer_source, imported when a report first names a layer: the daemon needs
    none of the image store's imports (hashlib, datetime, tempfile: ~4 MiB of its RSS)."""
    from ..image.store import layer_source as source
    return source(root)


def run_helper_form(argv):
    """Mount as the helper form asks. Container storage runs a mount_program so: it builds
    layers from the upper and knows no redirects, so renamed directories are copied up whole
    unless redirect_dir=on is asked for (the kernel's default is off too)."""
    spec = validate(spec_from_args(helper_form(argv), redirect_dir=False))
    mountmod.mount(spec, layer_source)
    return 0


def run(args):
    """Run a parsed mount, umount or _daemon command; returns the exit status."""
    if args.command == "mount":
        mountmod.mount(validate(spec_from_args(args)), layer_source)
    elif args.command in ("umount", "unmount"):
        mountmod.umount(args.mountpoint)
    elif args.command == "_daemon":
        spec = validate(spec_from_args(args))
        mountmod.run_daemon(spec, args.ready_fd, layer_source)
    return 0
