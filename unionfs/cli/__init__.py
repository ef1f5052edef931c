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
import importlib
import sys

from .. import __version__, messages
from ..errors import UnionfsError

# Each group's commands (the group module's own COMMANDS; tests/unit/test_cli_groups.py holds
# the two equal). A command imports its group only: every mount's daemon and every pull starts
# a Python process, and importing all groups cost ~0.17 s of a 0.2 s start.
GROUP_COMMANDS = {
    "mount": {"mount", "umount", "unmount", "_daemon"},
    "image": {"image", "diff", "commit", "login", "logout"},
    "inspect": {"history", "find", "cat", "waste"},
    "lab": {"lab"},
    "observe": {"which", "trace", "stats", "status"},
    "serve": {"serve"},
}


def group(name):
    return importlib.import_module("." + name, __name__)


def groups_for(command=None):
    """The group modules to build the parser from: the command's own, or all of them."""
    names = [g for g, cmds in GROUP_COMMANDS.items() if command in cmds] or list(GROUP_COMMANDS)
    return [group(g) for g in names]


def build_parser(groups=None):
    parser = argparse.ArgumentParser(
        prog="unionfs", description="A userspace union filesystem with the kernel's overlayfs format.",
        epilog="Also: unionfs -o lowerdir=...,upperdir=...,workdir=... MOUNTPOINT (mount helper form)")
    parser.add_argument("--version", action="version", version="unionfs " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for g in groups if groups is not None else groups_for():
        g.register(sub)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    known = {"-h", "--help", "--version"}.union(*GROUP_COMMANDS.values())
    try:
        if argv and argv[0] not in known:
            return group("mount").run_helper_form(argv)
        groups = groups_for(argv[0] if argv else None)
        parser = build_parser(groups)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return next(g for g in groups if args.command in g.COMMANDS).run(args)
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
