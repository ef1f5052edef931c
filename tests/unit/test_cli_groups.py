"""The command line loads only the group of the command it runs (unionfs/cli/__init__.py)."""
import subprocess
import sys

import pytest

from unionfs import cli


@pytest.mark.parametrize("name", sorted(cli.GROUP_COMMANDS))
def test_the_table_names_each_groups_own_commands(name):
    assert cli.group(name).COMMANDS == cli.GROUP_COMMANDS[name]


def _loaded_by(argv, which):
    """The modules a fresh process has loaded after `unionfs ARGV` (a --help: it stops after
    the group is imported and the parser built), of those `which` (a Python expression in m)
    selects."""
    code = ("import sys; from unionfs import cli\n"
            "try:\n    cli.main(%r)\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if %s))" % (argv, which))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()[-1]
    return out


def test_a_mount_loads_no_other_group():
    """A mount's daemon is a fresh Python process: it must not pay for the image, inspect,
    lab, observe or serve groups (nor the HTTP client they bring)."""
    assert _loaded_by(["mount", "--help"],
                      "m.startswith('unionfs.cli.') or m == 'requests'") == "['unionfs.cli.mount']"


def test_help_lists_every_group(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for cmds in cli.GROUP_COMMANDS.values():
        for c in cmds - {"_daemon", "unmount"}:
            assert c in text


def test_a_daemon_imports_nothing_it_does_not_serve_with():
    """Every module a daemon imports stays in its RSS for the mount's life: the image store
    (hashlib and OpenSSL, datetime, tempfile), tomllib (spec files) and ctypes.util
    (subprocess, tempfile) cost it ~5 MiB, a quarter of an idle daemon, and it uses none."""
    code = ("import sys\nfrom unionfs.cli import mount\nfrom unionfs.core.union import Union\n"
            "from unionfs.fuse.server import Server\nfrom unionfs.observe import Recorder\n"
            "print(sorted(m for m in ('hashlib', 'tomllib', 'ctypes.util', 'tempfile',\n"
            "                         'datetime', 'unionfs.image.store') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()[-1]
    assert out == "[]"


def test_an_image_command_loads_only_what_it_runs():
    """`unionfs image pull` (and ls, tag, save ...) pays for neither the inspection package
    (cli/inspect.py, inspect/) nor the mount machinery (image/mount.py, mounts.py): ~50 ms of
    imports in each call, and pull is measured against skopeo."""
    assert _loaded_by(["image", "pull", "--help"],
                      "m in ('unionfs.cli.inspect', 'unionfs.inspect', 'unionfs.image.mount', "
                      "'unionfs.mounts', 'unionfs.image.uppers')") == "[]"
