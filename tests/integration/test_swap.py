"""A local user who may write in a layer swaps one of its directories for a symlink out of it.

The daemon runs as root with allow_other; the layer directories (a lower, or the upper) belong to
uid 65534, who runs every operation through the mount. The path ``x/canary-dir/canary-deep/
canary-leaf`` (and ``x/canary-secret``) exists in the layer; the *canary* (test_hostile.Canary: a
strictatime tmpfs, root-only) holds the same names. At each position of the path, with the
entry's resolution cached in the daemon (looked up, listed, opened) or not, the user renames the
layer's directory away and puts a symlink to the canary's twin in its place. Then every operation
that reaches a layer runs: read, write, open(O_TRUNC), truncate, chmod 6777, chown, utimes,
xattrs, link, rename, unlink, mkdir/mknod/symlink inside, listing, copy-up. Nothing of the canary
may be read (data or listing), changed or touched (atime, because it is strictatime), whatever the
outcome of each operation.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.integration.test_hostile import Canary
from tests.integration.test_permissions import public_tmp
from tests.mountutil import requires_fuse, requires_root, unionfs_mount

NOBODY = 65534
SETPRIV = shutil.which("setpriv")

pytestmark = [requires_fuse, requires_root,
              pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)")]

SECRET_DATA = {b"secret\n", b"leaf\n", b"f\n"}   # what the canary's files hold

# The attacker's program, run as 65534. It opens the directory of the target through the mount
# (and, "cached", has the daemon resolve the target itself), then swaps the layer's directory at
# one position for a symlink to the canary's twin, then runs every operation on the target and
# its directory *relative to the open directory*: the kernel resolves only the last name, in the
# directory it already holds, and the rest is up to the daemon. (Through a path, the kernel
# itself would follow the symlink the daemon now reports, as for any symlink in a layer; the
# canary is 0700 root, so that would only fail.) One line per operation, never the data:
# "CANARY" where a read returned the canary's bytes, or a listing names an entry only the canary
# has (canary-file, canary-xattr).
ATTACK = textwrap.dedent(r'''
    import os, sys
    mnt, target, secrets = sys.argv[1], sys.argv[2], set(eval(sys.argv[3]))
    layer_dir, twin, cached = sys.argv[4], sys.argv[5], sys.argv[6] == "1"
    d, name = os.path.split(os.path.join(mnt, target))
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    if cached:
        os.stat(name, dir_fd=dfd)
        os.listdir(dfd)
        fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
        os.read(fd, 100)
        os.close(fd)
    os.rename(layer_dir, layer_dir + ".orig")
    os.symlink(twin, layer_dir)
    p = "/proc/self/fd/%d/%s" % (dfd, name)   # for the calls that take no dir_fd
    def attempt(what, fn, *a, **kw):
        try:
            r = fn(*a, **kw)
            if isinstance(r, bytes) and r in secrets:
                print(what, "CANARY")
            elif isinstance(r, list) and {"canary-file", "canary-xattr"} & set(r):
                print(what, "CANARY-LISTING", r)
            else:
                print(what, "ok")
        except OSError as e:
            print(what, "errno", e.errno)
    def read(n):
        fd = os.open(n, os.O_RDONLY, dir_fd=dfd)
        try:
            return os.read(fd, 100)
        finally:
            os.close(fd)
    def write(n, flags):
        fd = os.open(n, flags, 0o644, dir_fd=dfd)
        try:
            os.write(fd, b"pwned")
            return os.pread(fd, 64, 0)
        finally:
            os.close(fd)
    attempt("read", read, name)
    attempt("listdir", os.listdir, dfd)
    attempt("stat", lambda: [str(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_size)])
    attempt("getxattr", os.getxattr, p, "user.canary", follow_symlinks=False)
    attempt("listxattr", os.listxattr, p, follow_symlinks=False)
    attempt("chmod", os.chmod, name, 0o6777, dir_fd=dfd)
    attempt("chown", os.chown, name, 65534, 65534, dir_fd=dfd)
    attempt("utime", os.utime, name, (1, 1), dir_fd=dfd)
    attempt("setxattr", os.setxattr, p, "user.canary", b"pwned")
    attempt("removexattr", os.removexattr, p, "user.canary")
    attempt("write", write, name, os.O_RDWR)
    attempt("trunc", write, name, os.O_RDWR | os.O_TRUNC)
    attempt("truncate", os.truncate, p, 0)
    attempt("read-again", read, name)
    attempt("link", os.link, name, name + ".link", src_dir_fd=dfd, dst_dir_fd=dfd)
    attempt("mkdir", os.mkdir, "new-dir", dir_fd=dfd)
    attempt("mknod", os.mkfifo, "new-fifo", dir_fd=dfd)
    attempt("symlink", os.symlink, "/etc/shadow", "new-link", dir_fd=dfd)
    attempt("create", write, "new-file", os.O_RDWR | os.O_CREAT)
    attempt("rename", os.rename, name, name + ".moved", src_dir_fd=dfd, dst_dir_fd=dfd)
    attempt("rename-back", os.rename, name + ".moved", name, src_dir_fd=dfd, dst_dir_fd=dfd)
    attempt("unlink", os.unlink, name, dir_fd=dfd)
    attempt("rmdir", os.rmdir, "new-dir", dir_fd=dfd)
    attempt("listdir-again", os.listdir, dfd)
''')

# (path in the layer, its twin in the canary) and the positions a directory can be swapped at
TARGETS = {
    "leaf": "x/canary-dir/canary-deep/canary-leaf",
    "secret": "x/canary-secret",
}


def _positions(target):
    """Relative directories of target that a user can swap: every ancestor but the root."""
    parts = target.split("/")[:-1]
    return ["/".join(parts[:i + 1]) for i in range(len(parts))]


def _make_layer(root, target):
    """The layer's copy of target (and its directories), owned by the attacker."""
    path = os.path.join(root, target)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"layer data\n")
    os.setxattr(path, "user.canary", b"layer")
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames + ["."]:
            os.lchown(os.path.join(dirpath, n), NOBODY, NOBODY)
    os.chmod(path, 0o644)


def _twin(rel, canary):
    """The canary's entry in the place of the layer's directory rel ('x' is the canary root)."""
    return os.path.join(canary.path, rel.split("/", 1)[1]) if "/" in rel else canary.path


def _swap(root, rel, canary):
    """As the attacker: move the layer's directory rel away and symlink its canary twin there."""
    script = "import os,sys; os.rename(sys.argv[1], sys.argv[1] + '.orig'); " \
             "os.symlink(sys.argv[2], sys.argv[1])"
    subprocess.run([SETPRIV, "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                    sys.executable, "-c", script, os.path.join(root, rel), _twin(rel, canary)],
                   check=True, timeout=30)


def _attack(mnt, target, layer_dir, twin, cached):
    proc = subprocess.run(
        [SETPRIV, "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
         sys.executable, "-c", ATTACK, mnt, target, repr(sorted(SECRET_DATA)), layer_dir, twin,
         "1" if cached else "0"],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture
def base():
    # world-traversable: the attacker must reach the layers and the mount
    with public_tmp("unionfs-swap-") as d:
        yield d


@pytest.fixture
def canary(base):
    c = Canary(os.path.join(base, "canary"))
    try:
        yield c
    finally:
        c.close()


def _cases():
    for layer in ("lower", "upper"):
        for key, target in TARGETS.items():
            for rel in _positions(target):
                for cached in (True, False):
                    yield pytest.param(layer, target, rel, cached,
                                       id="%s-%s-%s-%s" % (layer, key, rel.replace("/", "."),
                                                           "cached" if cached else "cold"))


@pytest.mark.parametrize("layer,target,rel,cached", list(_cases()))
def test_swapped_directory_never_reaches_outside(base, canary, layer, target, rel, cached):
    lower, upper, work, mnt = (os.path.join(base, n) for n in ("lower", "upper", "work", "mnt"))
    for d in (lower, upper, work, mnt):
        os.makedirs(d)
    os.chmod(lower, 0o755)
    os.chmod(upper, 0o755)
    _make_layer(lower if layer == "lower" else upper, target)
    layer_dir = os.path.join(lower if layer == "lower" else upper, rel)
    with unionfs_mount([lower], upper, work, mnt, options=["allow_other"]):
        results = _attack(mnt, target, layer_dir, _twin(rel, canary), cached)
    leaks = [r for r in results if "CANARY" in r]
    assert not leaks, "canary data reached through the mount: %r" % leaks
    assert len(results) == ATTACK.count("\nattempt("), results  # every operation ran
    canary.check()


def test_the_attack_reaches_the_canary_without_the_mount(base, canary):
    """The check can fail: the same swap, then a read through the layer path itself as root
    (what a daemon joining path strings would do), reads the canary and is seen."""
    lower = os.path.join(base, "lower")
    os.makedirs(lower)
    os.chmod(lower, 0o755)
    _make_layer(lower, TARGETS["leaf"])
    _swap(lower, "x/canary-dir", canary)
    with open(os.path.join(lower, TARGETS["leaf"]), "rb") as f:
        assert f.read() in SECRET_DATA
    with pytest.raises(AssertionError, match="accessed or changed"):
        canary.check()
