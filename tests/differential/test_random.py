"""Random operation sequences over random lowers, each one compared with the kernel.

Seeded and generated before running (the same sequence on both systems, whatever the outcomes),
so a failure is reproducible by its seed: ``pytest -k 'test_random_sequence and 7'``.
"""
import os
import random

import pytest

from tests.differential._diff import (DIFFERENTIAL, Dir, File, Symlink, Whiteout, attempt,
                                      build_layer, ls, P, read, rmtree_outcomes,
                                      run_differential, st, write)

pytestmark = DIFFERENTIAL

DIRS = ["", "a", "b", "a/c"]
NAMES = ["a", "b", "c", "x", "y"]
PATHS = sorted({os.path.join(d, n) for d in DIRS for n in NAMES}, key=lambda p: (p.count("/"), p))


def _random_layer(rng):
    spec, kinds = {}, {}
    for p in PATHS:
        parent = os.path.dirname(p)
        if parent and kinds.get(parent) not in (None, "dir"):
            continue                             # under a file/whiteout of this layer: nothing
        r = rng.random()
        if r < 0.15:
            continue
        if r < 0.5:
            kinds[p] = "file"
            spec[p] = File(("%s:%d" % (p, rng.randrange(100))).encode(),
                           mode=rng.choice([0o644, 0o600, 0o755]),
                           xattrs={"user.r": b"1"} if rng.random() < 0.2 else None)
        elif r < 0.88:
            kinds[p] = "dir"
            spec[p] = Dir(opaque=rng.random() < 0.15, mode=rng.choice([0o755, 0o700]))
        elif r < 0.95:
            kinds[p] = "whiteout"
            spec[p] = Whiteout()
        else:
            kinds[p] = "symlink"
            spec[p] = Symlink(rng.choice(["x", "../a", "nowhere"]))
    # a dir needs its parents as dirs in the same layer: build_layer makes them, drop conflicts
    return {p: n for p, n in spec.items()
            if not any(kinds.get(a) not in (None, "dir") for a in _ancestors(p))}


def _ancestors(p):
    out = []
    while True:
        p = os.path.dirname(p)
        if not p:
            return out
        out.append(p)


def _ops(rng, n):
    ops = []
    for _ in range(n):
        p, q = rng.choice(PATHS), rng.choice(PATHS)
        kind = rng.choice(["write", "append", "unlink", "mkdir", "rmdir", "rename", "rename",
                           "chmod", "link", "symlink", "truncate", "setxattr", "ls", "read",
                           "stat", "rmtree"])
        ops.append((kind, p, q, rng.randrange(1 << 16)))
    return ops


def _apply(mnt, op):
    kind, p, q, v = op
    a, b = P(mnt, p), P(mnt, q)
    if kind == "write":
        return attempt(write, a, b"w%d" % v)
    if kind == "append":
        return attempt(write, a, b"+%d" % v, os.O_WRONLY | os.O_APPEND)
    if kind == "unlink":
        return attempt(os.unlink, a)
    if kind == "mkdir":
        return attempt(os.mkdir, a, 0o755)
    if kind == "rmdir":
        return attempt(os.rmdir, a)
    if kind == "rename":
        return attempt(os.rename, a, b)
    if kind == "chmod":
        return attempt(os.chmod, a, 0o600 | (v & 0o077))
    if kind == "link":
        return attempt(os.link, a, b)
    if kind == "symlink":
        return attempt(os.symlink, "t%d" % (v % 3), a)
    if kind == "truncate":
        return attempt(os.truncate, a, v % 7)
    if kind == "setxattr":
        return attempt(os.setxattr, a, "user.k%d" % (v % 2), b"%d" % v)
    if kind == "ls":
        return attempt(ls, a)
    if kind == "read":
        return attempt(read, a)
    if kind == "stat":
        return attempt(st, a)
    if kind == "rmtree":
        return rmtree_outcomes(a) if os.path.isdir(a) and not os.path.islink(a) else attempt(os.unlink, a)
    raise AssertionError(kind)


@pytest.mark.parametrize("seed", range(20))
def test_random_sequence(tmp_path, seed):
    rng = random.Random(seed)
    specs = [_random_layer(rng) for _ in range(rng.choice([1, 2, 3]))]
    ops = _ops(rng, 50)

    def build(root):
        return [build_layer(os.path.join(root, "L%d" % i), s) for i, s in enumerate(specs)]

    def scenario(mnt):
        return [(op, _apply(mnt, op)) for op in ops]

    run_differential(tmp_path, build, scenario)
