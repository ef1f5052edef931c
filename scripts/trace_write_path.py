"""The path of a write to a lower file through the FUSE server, counted (issue 14).

Builds a union over a temporary lower and upper, a Server on a fake channel (no mount, no
/dev/fuse), and sends it the requests the kernel sends for `echo x > MNT/f` on a lower file:
OPEN(O_WRONLY) (the copy-up), the first WRITE and a second one. sys.setprofile sees every Python call made
while each request is handled; for each request it prints the distinct unionfs modules entered,
the number of unionfs function calls, the C calls into os (the system calls), and every call
that goes back up a layer (a module calling one that sits above it in the import order:
core < observe, which < control < fuse).

    .venv/bin/python scripts/trace_write_path.py [--calls]
"""
import collections
import os
import shutil
import sys
import tempfile

import unionfs
from unionfs.core.union import Union
from unionfs.fuse import proto as P
from unionfs.fuse import server as S
from unionfs.fuse.nodes import ROOT
from unionfs.observe import Recorder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.dirname(unionfs.__file__) + os.sep
RANK = {"core": 0, "observe": 1, "which": 1, "control": 2, "fuse": 3}


def _module(code):
    f = code.co_filename
    return f[len(PKG):-3].replace(os.sep, ".") if f.startswith(PKG) else None


def _rank(mod):
    return RANK.get(mod.split(".")[0], 4)


def _server(union):
    sys.path.append(REPO)  # after the unionfs measured (PYTHONPATH may name another)
    from tests.unit.helpers import FakeChannel
    P.Channel = FakeChannel  # no mount: the server is built on the fake channel
    try:
        from unionfs.fuse.ops import FuseOps  # before issue 14
        srv = S.Server(FuseOps(union), "/nonexistent", {})
        srv.ops.context = srv.context  # as Server.serve sets it
    except ImportError:
        srv = S.Server(union, "/nonexistent", {})
    union.on_invalidate = srv._invalidate
    srv.local.ctx = (0, 0, os.getpid())
    return srv


def profile(fn):
    """(modules, unionfs calls, os calls, up-calls, call list) of running fn()."""
    mods, calls, up = collections.Counter(), [], []
    syscalls = collections.Counter()

    def hook(frame, event, arg):
        if event == "call":
            mod = _module(frame.f_code)
            if mod is None:
                return
            mods[mod] += 1
            calls.append("%s.%s" % (mod, frame.f_code.co_name))
            back = frame.f_back
            caller = _module(back.f_code) if back is not None else None
            if caller is not None and _rank(caller) < _rank(mod):
                up.append("%s.%s -> %s.%s" % (caller, back.f_code.co_name, mod,
                                              frame.f_code.co_name))
        elif event == "c_call" and getattr(arg, "__module__", None) == "posix":
            if _module(frame.f_code) is not None:
                syscalls[arg.__name__] += 1

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return mods, calls, syscalls, up


def main():
    show = "--calls" in sys.argv
    tmp = tempfile.mkdtemp(prefix="unionfs-path-")
    try:
        lower, upper, work = (os.path.join(tmp, d) for d in ("lower", "upper", "work"))
        for d in (lower, upper, work):
            os.mkdir(d)
        with open(os.path.join(lower, "f"), "wb") as f:
            f.write(b"x" * 4096)
        union = Union([lower], upper, work)
        union.observer = Recorder(union)
        srv = _server(union)
        nid = srv.nodes.looked_up(ROOT, "f")
        fh = []

        def open_():
            srv.open(1, nid, memoryview(P.OPEN_IN.pack(os.O_WRONLY, 0)))
            fh.append(P.OPEN_OUT.unpack_from(srv.channel.replies[-1][2])[0])

        def write():
            data = P.RW_IN.pack(fh[0], 0, 5, 0, 0, os.O_WRONLY, 0) + b"hello"
            srv.write(2, nid, memoryview(data))

        for name, fn in (("OPEN O_WRONLY (copy-up)", open_), ("first WRITE", write),
                         ("second WRITE", write)):
            mods, calls, syscalls, up = profile(fn)
            print("%s: %d modules, %d unionfs calls, %d os calls, %d up-calls" % (
                name, len(mods), len(calls), sum(syscalls.values()), len(up)))
            print("  modules: " + ", ".join("%s (%d)" % m for m in sorted(mods.items())))
            for u, n in sorted(collections.Counter(up).items()):
                print("  up (%d): %s" % (n, u))
            if show:
                for c in calls:
                    print("    " + c)
        assert srv.channel.replies[-1][1] == 0, srv.channel.replies[-1]
        with open(os.path.join(upper, "f"), "rb") as f:
            assert f.read(5) == b"hello"
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
