"""The command line: the parser assembled from one thin module per command group, and ``main``,
the one place a failure is printed (one line, ``unionfs: ...``, exit status 1).

    mount.py     mount, umount, the mount helper form, _daemon
    image.py     image ..., diff, commit             registry.py  pull, push, tags, catalog, login
    inspect.py   history, find, cat, waste           observe.py   which, trace, stats, status
    lab.py       lab                                 serve.py     serve
    output.py    tables, CSV, versioned JSON

Each command module has COMMANDS, ``register(subparsers)`` and ``run(args)``: it parses, calls
the domain packages (image/, inspect/, lab/, serve/, mounts.py, trace.py, stats.py...), prints.
Nothing outside this package imports it.
"""
import argparse
import sys

from .. import __version__, messages
from ..errors import UnionfsError
from . import image, inspect, lab, mount, observe, serve

GROUPS = (mount, image, inspect, lab, observe, serve)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="unionfs", description="A userspace union filesystem with the kernel's overlayfs format.",
        epilog="Also: unionfs -o lowerdir=...,upperdir=...,workdir=... MOUNTPOINT (mount helper form)")
    parser.add_argument("--version", action="version", version="unionfs " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    known = {"-h", "--help", "--version"}.union(*(g.COMMANDS for g in GROUPS))
    try:
        if argv and argv[0] not in known:
            return mount.run_helper_form(argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return next(g for g in GROUPS if args.command in g.COMMANDS).run(args)
    except UnionfsError as e:   # every module's one-line failure, printed here only
        messages.error(e)
        return 1
    except BrokenPipeError:     # output piped into head(1) and the like
        return 1
    except OSError as e:
        where = "%s: " % e.filename if e.filename else ""
        messages.error("%s%s" % (where, e.strerror or e))
        return 1
    except KeyboardInterrupt:
        return 130
