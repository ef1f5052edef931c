"""Soak against the kernel: Hypothesis stateful testing of unionfs and the kernel's overlayfs side
by side.

One pair of mounts -- the kernel's overlayfs (redirect_dir=on) and unionfs, over the same two
lower layers, each with its own upper -- serves many examples: every example works in a fresh
copy of a template tree (``exN/``) that the lowers hold in many copies, so nothing has to be
remounted between examples. When the copies run out, both mounts are taken down, the kernel
mounts unionfs's upper to check it reads the same as the kernel's own (cross check), and the
lowers are rebuilt with new copies.

Each rule runs one operation on both mounts and compares the outcome (a value or an errno
name); an invariant compares the example's merged trees (type, mode, owner, size, data,
symlink target, user xattrs) every ``check_every`` steps and at teardown also the on-disk
layout of the two uppers (whiteouts, opaque and redirected dirs).

The default run is short (``UNIONFS_SOAK_EXAMPLES``, default 15 examples of up to 25 steps,
``UNIONFS_SOAK_SEED``, default 0). ``scripts/soak.py --minutes N`` runs it
for as long as asked; on a mismatch Hypothesis prints the shrunk failing sequence
(``state = OverlayPair()``, ``state.rename(a='a', b='n/x')`` ...) and the seed to replay.
"""
import contextlib
import os
import shutil
import stat
import time

import hypothesis
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
import pytest

from tests.differential._diff import (DIFFERENTIAL, OVL_OPAQUE, attempt, dict_diff, kind,
                                      upper_layout)
from tests.mountutil import kernel_overlay_mount, snapshot, unionfs_mount
from unionfs.core.sysutil import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2

pytestmark = DIFFERENTIAL

# --------------------------------------------------------------------------- the template

def _whiteout(p):
    os.mknod(p, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def build_template(top, bottom):
    """One example's lower content: merged dirs, a whiteout, an opaque dir, a lower symlink,
    xattrs, a nested dir only in the top layer."""
    def f(root, rel, data, mode=0o644):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(data)
        os.chmod(p, mode)
        return p

    # bottom layer
    f(bottom, "a/f1", b"bottom a/f1\n")
    f(bottom, "a/g", b"g" * 5000)
    f(bottom, "a/sub/h", b"h\n")
    f(bottom, "b/f1", b"b/f1\n", 0o600)
    f(bottom, "f1", b"bottom f1 " * 300)
    f(bottom, "f2", b"bottom f2 hidden by top\n")
    f(bottom, "c", b"c\n", 0o755)
    os.setxattr(f(bottom, "x", b"has an xattr\n"), "user.x", b"lower value")
    f(bottom, "wd/x", b"whited out by the top layer\n")
    f(bottom, "wd/t", b"stays\n")
    f(bottom, "o/hidden", b"under an opaque dir\n")
    os.symlink("f1", os.path.join(bottom, "lnk"))
    # top layer
    f(top, "a/f2", b"top a/f2\n")
    f(top, "f2", b"top f2\n")
    os.makedirs(os.path.join(top, "wd"), exist_ok=True)
    _whiteout(os.path.join(top, "wd/x"))
    f(top, "o/t", b"top o/t\n")
    os.setxattr(os.path.join(top, "o"), OVL_OPAQUE, b"y")
    f(top, "d/e/f1", b"deep\n")
    os.setxattr(os.path.join(top, "d"), "user.d", b"dir xattr")


DIRS = ["", "a", "a/sub", "b", "d", "d/e", "o", "wd", "n"]
NAMES = ["f1", "f2", "g", "x", "t", "new", "sub", "e", "lnk"]
PATHS = sorted({os.path.join(d, n) for d in DIRS for n in NAMES} | {d for d in DIRS if d},
               key=lambda p: (p.count("/"), p))


# --------------------------------------------------------------------------- the shared mounts

class SoakEnv:
    """Two lowers holding `batch` copies of the template, and the two mounts over them."""

    def __init__(self, base, batch=40):
        self.base = str(base)
        self.batch = batch
        self.next = 0
        self.stack = None
        self.ops = 0
        self.examples = 0
        self.cross_checks = 0
        self.problems = []      # cross-check failures (they concern finished examples)
        d = lambda *p: os.path.join(self.base, *p)  # noqa: E731
        self.top, self.bottom = d("lower", "top"), d("lower", "bottom")
        self.k = {"upper": d("k", "upper"), "work": d("k", "work"), "mnt": d("k", "mnt")}
        self.u = {"upper": d("u", "upper"), "work": d("u", "work"), "mnt": d("u", "mnt")}
        self.x = {"work": d("x", "work"), "mnt": d("x", "mnt")}

    # -- lifecycle
    def _build(self):
        for p in (os.path.join(self.base, n) for n in ("lower", "k", "u", "x")):
            if os.path.exists(p):
                shutil.rmtree(p)
        for side in (self.k, self.u, self.x):
            for p in side.values():
                os.makedirs(p)
        old = os.umask(0o022)
        try:
            for i in range(self.next, self.next + self.batch):
                build_template(os.path.join(self.top, "ex%d" % i),
                               os.path.join(self.bottom, "ex%d" % i))
        finally:
            os.umask(old)
        self.limit = self.next + self.batch

    def _mount(self):
        self.stack = contextlib.ExitStack()
        lowers = [self.top, self.bottom]
        self.stack.enter_context(kernel_overlay_mount(lowers, self.k["upper"], self.k["work"],
                                                      self.k["mnt"]))
        self.stack.enter_context(unionfs_mount(lowers, self.u["upper"], self.u["work"],
                                               self.u["mnt"]))

    def start(self):
        self._build()
        self._mount()

    def stop(self, cross=True):
        """Unmount both; with cross, check unionfs's upper through the kernel first (a problem
        found is kept in self.problems: it concerns examples that have finished)."""
        if self.stack is None:
            return
        try:
            if cross and self.next > self.limit - self.batch:
                problem = self.cross_check()
                if problem:
                    self.problems.append(problem)
        finally:
            self.stack.close()
            self.stack = None

    def cross_check(self):
        """The kernel's overlayfs over unionfs's upper must read like the kernel's mount."""
        used = ["ex%d" % i for i in range(self.limit - self.batch, self.next)]
        ref = {e: snapshot(os.path.join(self.k["mnt"], e)) for e in used
               if os.path.lexists(os.path.join(self.k["mnt"], e))}
        self.stack.close()      # unmount both: unionfs's upper is complete on disk now
        self.stack = contextlib.ExitStack()
        shutil.rmtree(self.x["work"])
        os.makedirs(self.x["work"])
        with kernel_overlay_mount([self.top, self.bottom], self.u["upper"], self.x["work"],
                                  self.x["mnt"]):
            got = {e: snapshot(os.path.join(self.x["mnt"], e)) for e in used
                   if os.path.lexists(os.path.join(self.x["mnt"], e))}
        self.cross_checks += 1
        if got != ref:
            lines = []
            for e in sorted(set(ref) | set(got)):
                if ref.get(e) != got.get(e):
                    lines.append("%s:\n%s" % (e, dict_diff(ref.get(e) or {}, got.get(e) or {},
                                                          "kernel", "kernel(unionfs upper)")))
            return ("the kernel mounting unionfs's upper reads differently from the kernel's "
                    "own mount:\n" + "\n".join(lines))
        return None

    def new_example(self):
        """The name of a fresh template copy; remounts over a new batch when they run out."""
        if self.next >= self.limit:
            self.stop()
            self.start()
        name = "ex%d" % self.next
        self.next += 1
        self.examples += 1
        return name


# --------------------------------------------------------------------------- the state machine

def _read(p):
    with open(p, "rb") as f:
        return f.read()


def _summary(p):
    s = os.lstat(p)
    out = [kind(s.st_mode), oct(stat.S_IMODE(s.st_mode)), s.st_uid, s.st_gid]
    if stat.S_ISREG(s.st_mode) or stat.S_ISLNK(s.st_mode):
        out.append(s.st_size)
    if not stat.S_ISDIR(s.st_mode):
        out.append(s.st_nlink)
    return out


def _unlinked_open(p, data):
    """Open, unlink while open, then use the descriptor: write, fstat, read back."""
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        n = os.pwrite(fd, data, 3)
        st = os.fstat(fd)
        return [n, st.st_nlink, st.st_size, os.pread(fd, 50, 0), os.path.lexists(p)]
    finally:
        os.close(fd)


def _write_at(p, offset, data):
    fd = os.open(p, os.O_WRONLY)
    try:
        return os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _create(p, data, excl):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if excl else os.O_TRUNC), 0o644)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def _append(p, data):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


SYMLINK_TARGETS = ["f1", "a", "nowhere", "sub/../f1", "/nonexistent-unionfs-soak/x"]
assert not os.path.lexists("/nonexistent-unionfs-soak")

paths = st.sampled_from(PATHS)
offsets = st.sampled_from([0, 1, 100, 4095, 4096, 5000, 65536, 1 << 20])
datas = st.binary(max_size=600)
modes = st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o777, 0o4755, 0o2755, 0o1777, 0o000])
# not trusted.overlay.*: since Linux 6.7 the kernel lets them be set through the mount (stored
# escaped as trusted.overlay.overlay.*, for nested overlays); unionfs refuses them (EOPNOTSUPP),
# as its README states. test_hostile.py pins unionfs's side of that difference.
xnames = st.sampled_from(["user.a", "user.b", "user.x", "trusted.mine"])


def make_machine(env, check_every=1):
    class OverlayPair(RuleBasedStateMachine):
        """One example: a fresh template copy, every operation on both mounts."""

        def __init__(self):
            super().__init__()
            self.ex = env.new_example()
            self.steps = 0
            self.k = os.path.join(env.k["mnt"], self.ex)
            self.u = os.path.join(env.u["mnt"], self.ex)

        def both(self, fn, *rel, **kw):
            """fn(paths on the kernel...) and fn(paths on unionfs...): the outcomes must match."""
            env.ops += 1
            kp = [os.path.join(self.k, r) if r is not None else None for r in rel]
            up = [os.path.join(self.u, r) if r is not None else None for r in rel]
            a = attempt(fn, *kp, **kw)
            b = attempt(fn, *up, **kw)
            assert a == b, "%s%r: kernel -> %r, unionfs -> %r" % (
                getattr(fn, "__name__", fn), rel, a, b)
            return a

        # -- changes
        @rule(p=paths, data=datas, excl=st.booleans())
        def create(self, p, data, excl):
            self.both(lambda x: _create(x, data, excl), p)

        @rule(p=paths, offset=offsets, data=datas)
        def write_at(self, p, offset, data):
            self.both(lambda x: _write_at(x, offset, data), p)

        @rule(p=paths, data=datas)
        def append(self, p, data):
            self.both(lambda x: _append(x, data), p)

        @rule(p=paths, size=st.sampled_from([0, 1, 10, 4096, 5001, 100000]))
        def truncate(self, p, size):
            self.both(lambda x: os.truncate(x, size), p)

        @rule(a=paths, b=paths)
        def rename(self, a, b):
            self.both(os.rename, a, b)

        @rule(a=paths, b=paths, flags=st.sampled_from([RENAME_NOREPLACE, RENAME_EXCHANGE]))
        def rename2(self, a, b, flags):
            self.both(lambda x, y: renameat2(x, y, flags), a, b)

        @rule(a=paths, b=paths)
        def link(self, a, b):
            self.both(os.link, a, b)

        @rule(p=paths)
        def unlink(self, p):
            self.both(os.unlink, p)

        @rule(p=paths, mode=st.sampled_from([0o755, 0o700]))
        def mkdir(self, p, mode):
            self.both(lambda x: os.mkdir(x, mode), p)

        @rule(p=paths)
        def rmdir(self, p):
            self.both(os.rmdir, p)

        @rule(p=paths, mode=modes)
        def chmod(self, p, mode):
            self.both(lambda x: os.chmod(x, mode), p)

        @rule(p=paths, name=xnames, value=st.binary(max_size=40))
        def setxattr(self, p, name, value):
            self.both(lambda x: os.setxattr(x, name, value, follow_symlinks=False), p)

        @rule(p=paths, name=xnames)
        def removexattr(self, p, name):
            self.both(lambda x: os.removexattr(x, name, follow_symlinks=False), p)

        # Targets never lead out of the mount: later rules follow symlinks (open, truncate,
        # chmod) on both mounts, so an absolute target into the host would be written to.
        # The absolute one names a directory that does not exist (creation through it fails).
        @rule(p=paths, dest=st.sampled_from(SYMLINK_TARGETS))
        def symlink(self, p, dest):
            self.both(lambda x: os.symlink(dest, x), p)

        @rule(p=paths, data=datas)
        def unlink_while_open(self, p, data):
            self.both(lambda x: _unlinked_open(x, data), p)

        # -- reads (outcomes compared too)
        @rule(p=paths)
        def read(self, p):
            self.both(_read, p)

        @rule(p=paths)
        def listdir(self, p):
            self.both(lambda x: sorted(os.listdir(x)), p)

        @rule(p=paths)
        def lstat(self, p):
            self.both(_summary, p)

        @rule(p=paths)
        def getxattrs(self, p):
            self.both(lambda x: sorted(os.listxattr(x, follow_symlinks=False)), p)

        # -- whole trees
        @invariant()
        def trees_match(self):
            self.steps += 1
            if self.steps % check_every:
                return
            self._compare_trees()

        def _compare_trees(self):
            a = attempt(snapshot, self.k)
            b = attempt(snapshot, self.u)
            assert a == b, "merged trees differ:\n" + (
                dict_diff(a, b) if isinstance(a, dict) and isinstance(b, dict) else
                "kernel %r, unionfs %r" % (a, b))

        def teardown(self):
            self._compare_trees()
            ku = os.path.join(env.k["upper"], self.ex)
            uu = os.path.join(env.u["upper"], self.ex)
            a = upper_layout(ku) if os.path.lexists(ku) else {}
            b = upper_layout(uu) if os.path.lexists(uu) else {}
            assert a == b, "upper on-disk layouts differ:\n" + dict_diff(a, b)

    return OverlayPair


def soak_settings(max_examples, steps, shrink=True):
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=max_examples, stateful_step_count=steps, deadline=None,
                    database=None, print_blob=True, phases=phases,
                    suppress_health_check=list(HealthCheck))


def run_soak(env, max_examples, steps, seed, check_every=1, shrink=True):
    """One seeded Hypothesis run over env's mounts; raises on a mismatch (the failing sequence,
    shrunk unless shrink=False, is printed by Hypothesis). The same seed, examples and steps
    replay the same run."""
    factory = make_machine(env, check_every)

    def machine():
        return factory()
    machine.__name__ = factory.__name__
    machine = hypothesis.seed(seed)(machine)
    try:
        run_state_machine_as_test(machine, settings=soak_settings(max_examples, steps, shrink))
    except BaseException as e:
        e.add_note("soak seed %d (%d examples of %d steps): replay with scripts/soak.py --seed "
                   "%d --examples %d --steps %d" % (seed, max_examples, steps, seed,
                                                    max_examples, steps))
        raise


# --------------------------------------------------------------------------- the short run

EXAMPLES = int(os.environ.get("UNIONFS_SOAK_EXAMPLES", "15"))
STEPS = int(os.environ.get("UNIONFS_SOAK_STEPS", "25"))
SEED = int(os.environ.get("UNIONFS_SOAK_SEED", "0"))
CHECK_EVERY = int(os.environ.get("UNIONFS_SOAK_CHECK_EVERY", "5"))


@pytest.mark.timeout(120)
def test_soak_against_kernel(tmp_path):
    """Not shrunk here (bounded time): the failing sequence is printed whole; scripts/soak.py
    --seed replays and shrinks it."""
    env = SoakEnv(tmp_path, batch=EXAMPLES + 5)
    t = time.monotonic()
    env.start()
    try:
        run_soak(env, EXAMPLES, STEPS, SEED, check_every=CHECK_EVERY, shrink=False)
        env.stop(cross=True)
    finally:
        env.stop(cross=False)
    assert not env.problems, "\n\n".join(env.problems)
    dt = time.monotonic() - t
    print("soak: %d examples, %d operations on each mount, %.0f ops/s, %d cross checks" % (
        env.examples, env.ops, env.ops / dt, env.cross_checks))
