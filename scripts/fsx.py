#!/usr/bin/env python3
"""fsx-style data integrity: random reads, writes, truncates, holes, hole punches and mmap I/O on
one file, every result checked against an in-memory model of the file.

Meant for files that start in a LOWER layer: the first operations only read (through a read-only
descriptor opened on the lower file), so the copy-up happens in the middle of the sequence, and
that read-only descriptor must read the copied-up data afterwards. Seeded and reproducible: a
failure prints the seed, the operation number and the last operations.

    scripts/fsx.py                       # own temporary lower/upper/mount (root), 3 files
    scripts/fsx.py --seed 7 --ops 20000  # longer, other seed
    scripts/fsx.py --kernel              # the same on the kernel's overlayfs (checks the tool)
    scripts/fsx.py --path /mnt/some/file # an existing file on any mount (its current data is the
                                         # starting model)

Importable: ``fsx.run(path, seed, nops, initial=bytes)`` returns statistics or raises FsxError.
"""
import argparse
import ctypes
import ctypes.util
import mmap
import os
import random
import sys

MAX_SIZE = 1 << 20
PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


class FsxError(AssertionError):
    pass


def _fallocate(fd, mode, off, length):
    if _libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _pattern(rng, n):
    return rng.randbytes(n).replace(b"\0", b"\1")  # never all zeros: holes must show


class Fsx:
    def __init__(self, path, seed, initial=None, max_size=MAX_SIZE, warmup=None, mmap_ok=True,
                 punch_ok=True, fresh_map_fd=False):
        self.path = path
        self.seed = seed
        self.rng = random.Random(seed)
        if initial is None:
            with open(path, "rb") as f:
                initial = f.read()
        self.model = bytearray(initial)
        self.max_size = max_size
        self.warmup = self.rng.randint(3, 30) if warmup is None else warmup
        self.mmap_ok = mmap_ok
        self.punch_ok = punch_ok
        # the kernel's overlayfs maps the LOWER file through a descriptor opened before the
        # copy-up (a documented non-standard behaviour): map a fresh descriptor there
        self.fresh_map_fd = fresh_map_fd
        self.ro = os.open(path, os.O_RDONLY)     # opened on the lower file, before any copy-up
        self.rw = None
        self.log = []
        self.stats = {}
        self.n = 0

    # -- bookkeeping
    def fail(self, msg):
        tail = "\n".join("  #%d %s" % x for x in self.log[-25:])
        raise FsxError("fsx %s: seed %d, operation #%d: %s\nlast operations:\n%s" % (
            self.path, self.seed, self.n, msg, tail))

    def note(self, what):
        self.log.append((self.n, what))
        self.stats[what.split()[0]] = self.stats.get(what.split()[0], 0) + 1

    def compare(self, got, off, what):
        want = bytes(self.model[off:off + len(got)])
        if got != want:
            bad = next(i for i in range(min(len(got), len(want)) + 1)
                       if i >= len(got) or i >= len(want) or got[i] != want[i])
            self.fail("%s: data differs at offset %d (file size %d): got %r, expected %r" % (
                what, off + bad, len(self.model), got[bad:bad + 16], want[bad:bad + 16]))

    def writable(self):
        if self.rw is None:
            self.rw = os.open(self.path, os.O_RDWR)   # copies the lower file up
            self.note("open_rw")
        return self.rw

    # -- operations
    def op_read(self, fd_name):
        fd = self.ro if fd_name == "ro" or self.rw is None else self.rw
        size = len(self.model)
        off = self.rng.randrange(size + 1) if size else 0
        n = self.rng.randint(0, 70000)
        self.note("read %s off=%d len=%d" % (fd_name, off, n))
        got = os.pread(fd, n, off)
        want = min(n, max(0, size - off))
        if len(got) != want:
            self.fail("read returned %d bytes, expected %d" % (len(got), want))
        self.compare(got, off, "read")

    def op_write(self, hole=False):
        fd = self.writable()
        size = len(self.model)
        n = self.rng.randint(1, 65536)
        if hole:   # far past the end: leaves a hole
            off = size + self.rng.randint(1, 256 * 1024)
        else:
            off = self.rng.randrange(size + 1) if size else 0
        off = min(off, self.max_size - n)
        data = _pattern(self.rng, n)
        self.note("write off=%d len=%d%s" % (off, n, " (hole)" if hole else ""))
        w = os.pwrite(fd, data, off)
        if w != n:
            self.fail("short write: %d of %d" % (w, n))
        if off > size:
            self.model.extend(bytes(off - size))
        self.model[off:off + n] = data

    def op_truncate(self, by_path):
        size = len(self.model)
        new = self.rng.choice([0, self.rng.randrange(size + 1) if size else 0,
                               min(self.max_size, size + self.rng.randint(1, 300000))])
        self.note("truncate %s to=%d" % ("path" if by_path else "fd", new))
        if by_path:
            os.truncate(self.path, new)
        else:
            os.ftruncate(self.writable(), new)
        if new < size:
            del self.model[new:]
        else:
            self.model.extend(bytes(new - size))

    def op_punch(self, zero_range):
        size = len(self.model)
        if not size:
            return
        off = self.rng.randrange(size)
        n = self.rng.randint(1, min(size - off, 200000))
        mode = (FALLOC_FL_ZERO_RANGE if zero_range else FALLOC_FL_PUNCH_HOLE) | FALLOC_FL_KEEP_SIZE
        self.note("%s off=%d len=%d" % ("zero_range" if zero_range else "punch_hole", off, n))
        try:
            _fallocate(self.writable(), mode, off, n)
        except OSError as e:
            self.fail("fallocate failed: %s" % e)
        self.model[off:off + n] = bytes(n)

    def op_mapread(self):
        size = len(self.model)
        if not size:
            return
        off = self.rng.randrange(size)
        n = self.rng.randint(1, min(size - off, 100000))
        base = off - off % PAGE
        self.note("mapread off=%d len=%d" % (off, n))
        fd = os.open(self.path, os.O_RDONLY) if self.fresh_map_fd else self.ro
        try:
            m = mmap.mmap(fd, off + n - base, mmap.MAP_SHARED, mmap.PROT_READ, offset=base)
            try:
                got = m[off - base:off - base + n]
            finally:
                m.close()
        finally:
            if fd != self.ro:
                os.close(fd)
        self.compare(got, off, "mapread")

    def op_mapwrite(self):
        size = len(self.model)
        if not size:
            return
        fd = self.writable()
        off = self.rng.randrange(size)
        n = self.rng.randint(1, min(size - off, 50000))
        base = off - off % PAGE
        data = _pattern(self.rng, n)
        self.note("mapwrite off=%d len=%d" % (off, n))
        m = mmap.mmap(fd, off + n - base, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                      offset=base)
        try:
            m[off - base:off - base + n] = data
            m.flush()
        finally:
            m.close()
        self.model[off:off + n] = data

    def op_reopen(self):
        """Close everything and open again (the read-only descriptor now on the upper file)."""
        self.note("reopen")
        self.close()
        self.ro = os.open(self.path, os.O_RDONLY)

    def op_fsync(self):
        if self.rw is not None:
            self.note("fsync")
            os.fsync(self.rw)

    def check_size(self):
        for name, fd in (("ro", self.ro), ("rw", self.rw)):
            if fd is not None and os.fstat(fd).st_size != len(self.model):
                self.fail("fstat(%s fd).st_size %d, model %d" % (name, os.fstat(fd).st_size,
                                                                 len(self.model)))
        st = os.stat(self.path)
        if st.st_size != len(self.model):
            self.fail("stat(path).st_size %d, model %d" % (st.st_size, len(self.model)))

    def check_all(self, what="full read"):
        with open(self.path, "rb") as f:
            got = f.read()
        if len(got) != len(self.model):
            self.fail("%s: %d bytes, model %d" % (what, len(got), len(self.model)))
        self.compare(got, 0, what)

    def step(self):
        self.n += 1
        r = self.rng.random()
        if self.n <= self.warmup:   # reads of the lower file only: no copy-up yet
            return self.op_read("ro") if r < 0.8 or not self.mmap_ok else self.op_mapread()
        table = [(0.22, lambda: self.op_read("ro")), (0.34, lambda: self.op_read("rw")),
                 (0.56, lambda: self.op_write()), (0.64, lambda: self.op_write(hole=True)),
                 (0.70, lambda: self.op_truncate(False)), (0.74, lambda: self.op_truncate(True)),
                 (0.79, lambda: self.op_punch(False) if self.punch_ok else self.op_write()),
                 (0.82, lambda: self.op_punch(True) if self.punch_ok else self.op_write()),
                 (0.88, lambda: self.op_mapread() if self.mmap_ok else self.op_read("ro")),
                 (0.93, lambda: self.op_mapwrite() if self.mmap_ok else self.op_write()),
                 (0.96, self.op_fsync), (1.01, self.op_reopen)]
        for limit, fn in table:
            if r < limit:
                fn()
                break
        if self.n % 10 == 0:
            self.check_size()
        if self.n % 200 == 0:
            self.check_all()

    def close(self):
        for fd in (self.ro, self.rw):
            if fd is not None:
                os.close(fd)
        self.ro = self.rw = None

    def run(self, nops):
        try:
            while self.n < nops:
                try:
                    self.step()
                except OSError as e:
                    self.fail("unexpected error: %s" % e)
            self.check_size()
            self.check_all("final full read")
        finally:
            self.close()
        return dict(self.stats, ops=self.n, size=len(self.model))


def run(path, seed, nops, initial=None, **kw):
    """Run nops random operations on path; returns stats, raises FsxError on a mismatch. The
    final content is returned as stats['model'] (bytes)."""
    f = Fsx(path, seed, initial, **kw)
    stats = f.run(nops)
    stats["model"] = bytes(f.model)
    return stats


# --------------------------------------------------------------------------- command line

INITIAL = {
    "plain": lambda rng: _pattern(rng, 300000),
    "sparse": None,     # built below: data, a 512 KiB hole, data
    "empty": lambda rng: b"",
}


def make_lower_files(lower, seed):
    """Three lower files: plain data, sparse (holes), empty. Returns {name: content}."""
    rng = random.Random(seed)
    out = {}
    for name in ("plain", "sparse", "empty"):
        p = os.path.join(lower, name)
        with open(p, "wb") as f:
            if name == "sparse":
                head, tail = _pattern(rng, 5000), _pattern(rng, 7000)
                f.write(head)
                f.seek(5000 + 512 * 1024)
                f.write(tail)
                out[name] = head + bytes(512 * 1024) + tail
            else:
                out[name] = INITIAL[name](rng)
                f.write(out[name])
    return out


def check_on_mounts(base, seed, nops, kernel=False, log=print):
    """Lower files, a mount (unionfs or the kernel's), fsx on each file, then the upper read
    directly and through the kernel's overlayfs must equal the model."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.mountutil import kernel_overlay_mount, unionfs_mount, have_kernel_overlay

    d = {n: os.path.join(base, n) for n in ("lower", "upper", "work", "mnt", "kwork", "kmnt")}
    for p in d.values():
        os.makedirs(p, exist_ok=True)
    initial = make_lower_files(d["lower"], seed)
    mount = kernel_overlay_mount if kernel else unionfs_mount
    results = {}
    with mount([d["lower"]], d["upper"], d["work"], d["mnt"]):
        for i, name in enumerate(sorted(initial)):
            s = seed * 1000 + i
            results[name] = run(os.path.join(d["mnt"], name), s, nops, initial[name],
                                fresh_map_fd=kernel)
            st = {k: v for k, v in results[name].items() if k != "model"}
            log("fsx %s seed %d: %s" % (name, s, st))
    for name, res in results.items():
        with open(os.path.join(d["upper"], name), "rb") as f:
            if f.read() != res["model"]:
                raise FsxError("fsx %s: the upper file differs from the model after unmount"
                               % name)
    if have_kernel_overlay():
        with kernel_overlay_mount([d["lower"]], d["upper"], d["kwork"], d["kmnt"]):
            for name, res in results.items():
                with open(os.path.join(d["kmnt"], name), "rb") as f:
                    if f.read() != res["model"]:
                        raise FsxError("fsx %s: the kernel's overlayfs reads the upper "
                                       "differently from the model" % name)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--ops", type=int, default=5000)
    ap.add_argument("--kernel", action="store_true",
                    help="run on the kernel's overlayfs instead of unionfs")
    ap.add_argument("--path", help="run on this existing file instead of a temporary mount")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print("fsx: seed %d" % seed, flush=True)
    try:
        if args.path:
            print(run(args.path, seed, args.ops))
        else:
            import shutil
            import tempfile
            base = tempfile.mkdtemp(prefix="unionfs-fsx-")
            try:
                check_on_mounts(base, seed, args.ops, kernel=args.kernel)
            finally:
                shutil.rmtree(base, ignore_errors=True)
    except FsxError as e:
        print("FAILED: %s" % e, file=sys.stderr)
        print("replay: scripts/fsx.py --seed %d --ops %d%s" % (
            seed, args.ops, " --kernel" if args.kernel else ""), file=sys.stderr)
        return 1
    print("fsx: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
