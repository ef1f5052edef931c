"""Crash safety under SIGKILL, and recovery of the dead mount a killed daemon leaves behind.

The crash loop (``test_crash_loop``): in every round several worker processes run seeded
sequences of copy-ups of large lower files, block writes (some fsync'd), appends, creates,
truncates, renames of files and of lower directories and unlinks, each worker in its own
subtree; the daemon we started is SIGKILLed at a random moment. Then the dead mount is detached
(alternately by ``unionfs umount`` and by mounting straight over it, which must recover it),
unionfs is mounted again and each worker's subtree must be exactly the state after its last
acknowledged operation, or -- for the one operation a worker had in flight -- a state that
operation may legitimately leave (each written 4 KiB block old or new, the name before or after
a rename). Never a partial copy-up (lower blocks lost or zero-filled), never a lost
acknowledged or fsync'd write, never anything from WORK/work in the merged view. Finally the
kernel's overlayfs mounts the same upper and must show the same tree.

``UNIONFS_CRASH_ROUNDS`` (default 10) and ``UNIONFS_CRASH_SEED`` (default 1) set the number of
rounds and the seed; a failure names the round's seed. ``scripts/soak.py --crash-rounds N`` runs
more rounds.

The worker processes are this file run as a script (``python test_crash.py worker ...``).
"""
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time

if __name__ != "__main__":
    import psutil
    import pytest

    from tests.mountutil import (ENV, have_kernel_overlay, is_mounted, kernel_overlay_mount,
                                 requires_fuse, requires_root, run_unionfs)
    from tests.integration.conftest import (daemon_pid, lazy_unmount, mount_count,
                                            requires_daemon)

    pytestmark = [requires_fuse, requires_root, requires_daemon]

BLOCK = 4096
MiB = 1 << 20
DEAD = (errno.ENOTCONN, errno.ECONNABORTED)


def block_data(tag):
    """One 4 KiB block, unique to tag, never all zeros."""
    return hashlib.sha256(tag.encode()).digest() * (BLOCK // 32)


def op_data(seed, widx, opidx, nblocks):
    return b"".join(block_data("%s/%d/%d/%d" % (seed, widx, opidx, i)) for i in range(nblocks))


# --------------------------------------------------------------------------- the worker process

def _worker(mnt, opsfile, logfile, seed, widx):
    with open(opsfile) as f:
        ops = json.load(f)
    log = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(s):
        os.write(log, s.encode() + b"\n")

    sys.stdin.buffer.read(1)  # the start signal
    for i, op in enumerate(ops):
        kind = op[0]
        p = os.path.join(mnt, op[1])
        note("B %d" % i)
        try:
            if kind in ("write", "append", "create"):
                flags = {"write": os.O_WRONLY, "append": os.O_WRONLY | os.O_APPEND,
                         "create": os.O_WRONLY | os.O_CREAT | os.O_EXCL}[kind]
                fd = os.open(p, flags, 0o644)
                try:
                    data = op_data(seed, widx, i, op[3])
                    if kind == "write":
                        n = os.pwrite(fd, data, op[2] * BLOCK)
                    else:
                        n = os.write(fd, data)
                    if n != len(data):
                        raise OSError(errno.EIO, "short write %d of %d" % (n, len(data)))
                    if op[4]:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            elif kind in ("rename", "rename_dir"):
                os.rename(p, os.path.join(mnt, op[2]))
            elif kind == "unlink":
                os.unlink(p)
            elif kind == "truncate":
                os.truncate(p, op[2] * BLOCK)
            elif kind == "mkdir":
                os.mkdir(p, 0o755)
            else:
                raise AssertionError(kind)
        except OSError as e:
            note("%s %d %s" % ("E" if e.errno in DEAD else "X", i,
                               errno.errorcode.get(e.errno, str(e.errno))))
            return
        note("A %d" % i)
    note("DONE")


# --------------------------------------------------------------------------- the model

class Model:
    """One worker's subtree: {relpath: bytes (file) or None (dir)}."""

    def __init__(self, tree):
        self.tree = dict(tree)

    def copy(self):
        return Model(self.tree)

    def files(self, under=None):
        return sorted(p for p, v in self.tree.items() if v is not None
                      and (under is None or p.startswith(under + "/")))

    def dirs(self):
        return sorted(p for p, v in self.tree.items() if v is None)

    def apply(self, op, seed, widx, opidx):
        kind, p = op[0], op[1]
        t = self.tree
        if kind == "write":
            old = t[p]
            off = op[2] * BLOCK
            data = op_data(seed, widx, opidx, op[3])
            if off > len(old):
                old += bytes(off - len(old))
            t[p] = old[:off] + data + old[off + len(data):]
        elif kind == "append":
            t[p] = t[p] + op_data(seed, widx, opidx, op[3])
        elif kind == "create":
            t[p] = op_data(seed, widx, opidx, op[3])
        elif kind == "truncate":
            n = op[2] * BLOCK
            t[p] = t[p][:n] + bytes(max(0, n - len(t[p])))
        elif kind == "unlink":
            del t[p]
        elif kind == "mkdir":
            t[p] = None
        elif kind in ("rename", "rename_dir"):
            q = op[2]
            moved = {k: v for k, v in t.items() if k == p or k.startswith(p + "/")}
            for k in moved:
                del t[k]
            for k in [k for k in t if k == q or k.startswith(q + "/")]:
                del t[k]
            for k, v in moved.items():
                t[q + k[len(p):]] = v
        else:
            raise AssertionError(kind)


def gen_ops(rng, model, root, n):
    """n operations valid in sequence from model (which is left unchanged)."""
    m = model.copy()
    ops = []
    counter = [0]

    def fresh(prefix):
        counter[0] += 1
        return "%s/%s%d" % (root, prefix, counter[0])

    bigs = [p for p in m.files() if p.rsplit("/", 1)[1].startswith("big")]
    for i in range(n):
        files = m.files()
        if i < len(bigs):   # copy-ups of the large lower files first, where the kill is likely
            p = bigs[i]
            op = ["write", p, rng.randrange(len(m.tree[p]) // BLOCK), rng.randint(1, 16),
                  rng.random() < 0.5]
        else:
            kind = rng.choice(["write", "write", "append", "create", "create", "rename",
                               "unlink", "truncate", "rename_dir", "mkdir"])
            if kind in ("write", "append", "truncate", "unlink", "rename") and not files:
                kind = "create"
            dirs = [d for d in m.dirs() if d != root]
            if kind == "write":
                p = rng.choice(files)
                size = len(m.tree[p]) // BLOCK
                op = ["write", p, rng.randrange(size + 4), rng.randint(1, 8), rng.random() < 0.4]
            elif kind == "append":
                op = ["append", rng.choice(files), 0, rng.randint(1, 8), rng.random() < 0.4]
            elif kind == "create":
                parent = rng.choice([root] + dirs)
                op = ["create", fresh(parent[len(root) + 1:] + "/n" if parent != root else "n"),
                      0, rng.randint(0, 8), rng.random() < 0.4]
                op[1] = op[1].replace("//", "/")
            elif kind == "rename":
                p = rng.choice(files)
                if rng.random() < 0.4 and len(files) > 1:
                    q = rng.choice([f for f in files if f != p])   # replaces another file
                else:
                    q = fresh("r")
                op = ["rename", p, q]
            elif kind == "unlink":
                op = ["unlink", rng.choice(files)]
            elif kind == "truncate":
                p = rng.choice(files)
                op = ["truncate", p, rng.randrange(len(m.tree[p]) // BLOCK + 3)]
            elif kind == "rename_dir":
                top = [d for d in dirs if d.count("/") == root.count("/") + 1]
                if not top:
                    op = ["mkdir", fresh("d")]
                else:
                    op = ["rename_dir", rng.choice(top), fresh("D")]
            else:
                op = ["mkdir", fresh("d")]
        m.apply(op, "gen", 0, i)   # the data does not matter for validity
        ops.append(op)
    return ops


def read_tree(root, rel, meta=None):
    """{relpath: bytes or None} of rel under root, through a mount or a plain dir; with a dict
    `meta`, also {relpath: (type, mode, uid, gid)} into it."""
    out = {}
    base = os.path.join(root, rel)
    if not os.path.lexists(base):
        return out
    out[rel] = None
    for dirpath, dirnames, filenames in os.walk(base):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            r = os.path.relpath(p, root)
            st = os.lstat(p)
            if meta is not None:
                meta[r] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                           st.st_gid)
            if stat.S_ISDIR(st.st_mode):
                out[r] = None
            elif not stat.S_ISREG(st.st_mode):
                out[r] = "not a file: mode %o" % st.st_mode
            else:
                with open(p, "rb") as f:
                    out[r] = f.read()
    return out


def read_all(mnt):
    meta = {}
    trees = {}
    for w in range(NWORKERS):
        trees.update(read_tree(mnt, "w%d" % w, meta))
    return trees, meta


def _describe(v):
    if v is None:
        return "dir"
    if isinstance(v, str):
        return v
    return "file %d bytes sha256 %s" % (len(v), hashlib.sha256(v).hexdigest()[:12])


def tree_diff(expected, actual):
    lines = []
    for k in sorted(set(expected) | set(actual)):
        if k not in actual:
            lines.append("  %s: missing (expected %s)" % (k, _describe(expected[k])))
        elif k not in expected:
            lines.append("  %s: unexpected %s" % (k, _describe(actual[k])))
        elif expected[k] != actual[k]:
            e, a = expected[k], actual[k]
            detail = ""
            if isinstance(e, bytes) and isinstance(a, bytes):
                bad = [i for i in range(max(len(e), len(a)) // BLOCK + 1)
                       if e[i * BLOCK:(i + 1) * BLOCK] != a[i * BLOCK:(i + 1) * BLOCK]]
                zero = [i for i in bad if a[i * BLOCK:(i + 1) * BLOCK].count(0) == BLOCK]
                detail = " (blocks differing: %s%s; all-zero among them: %d)" % (
                    bad[:8], "..." if len(bad) > 8 else "", len(zero))
            lines.append("  %s: expected %s, got %s%s" % (k, _describe(e), _describe(a), detail))
    return "\n".join(lines)


def inflight_ok(before, after, op, actual):
    """Is `actual` a state that `op`, interrupted at any point, may leave behind?"""
    if actual == before.tree or actual == after.tree:
        return True
    kind = op[0]
    if kind not in ("write", "append", "create"):
        return False    # a namespace change or truncate is all or nothing
    p = op[1]
    rest = lambda t: {k: v for k, v in t.items() if k != p}  # noqa: E731
    if rest(actual) != rest(before.tree):
        return False
    old, new, got = before.tree.get(p), after.tree[p], actual.get(p)
    if got is None:
        return kind == "create" and p not in actual
    if not isinstance(got, bytes):
        return False
    old = old or b""
    lo, hi = min(len(old), len(new)), max(len(old), len(new))
    if not lo <= len(got) <= hi or len(got) % BLOCK:
        return False
    for i in range(0, len(got), BLOCK):
        b = got[i:i + BLOCK]
        if b != old[i:i + BLOCK] and b != new[i:i + BLOCK]:
            return False
    return True


# --------------------------------------------------------------------------- one crash round

NWORKERS = 3
BIG_SIZES = (16 * MiB, 4 * MiB)   # per worker


def build_lower(lower, seed=0):
    """Each worker's subtree: two large files, small files, a lower dir tree to rename."""
    rng = random.Random(seed)
    tree = {}
    for w in range(NWORKERS):
        root = "w%d" % w
        tree[root] = None
        for j, size in enumerate(BIG_SIZES):
            tree["%s/big%d" % (root, j)] = rng.randbytes(size)
        for j in range(4):
            tree["%s/small%d" % (root, j)] = rng.randbytes(BLOCK * rng.randint(1, 16))
        tree["%s/ldir" % root] = None
        tree["%s/ldir/sub" % root] = None
        tree["%s/ldir/a" % root] = rng.randbytes(BLOCK * 2)
        tree["%s/ldir/sub/b" % root] = rng.randbytes(BLOCK)
    for p, v in sorted(tree.items()):
        real = os.path.join(lower, p)
        if v is None:
            os.makedirs(real, exist_ok=True)
        else:
            with open(real, "wb") as f:
                f.write(v)
    return tree


def _wipe(d):
    for n in os.listdir(d):
        p = os.path.join(d, n)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def _wait_gone(pid, timeout=15):
    """Until pid has exited. A zombie leader is not enough (its other threads may still hold
    /dev/fuse open while they exit), nor is being reaped needed (PID 1 may take its time):
    wait until no thread of it is left but a zombie leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE and len(tasks) <= 1:
                return
        except (psutil.NoSuchProcess, FileNotFoundError):
            return
        time.sleep(0.005)
    raise AssertionError("process %d still alive %ss after SIGKILL" % (pid, timeout))


def _wait_dead_mount(mnt, timeout=10):
    """Until new requests to mnt fail with ENOTCONN (requests that were in flight when the
    connection was torn down fail with ECONNABORTED instead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _fs_answer(mnt) == "ENOTCONN":
            return
        time.sleep(0.005)
    raise AssertionError("%s answers %s, not ENOTCONN, %ss after its daemon died" % (
        mnt, _fs_answer(mnt), timeout))


def _fs_answer(mnt):
    """errno name of statfs on mnt, or 'ok'."""
    try:
        os.statvfs(mnt)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


class CrashEnv:
    def __init__(self, base, lower_tree=None):
        self.base = str(base)
        self.lower = os.path.join(self.base, "lower")
        self.upper = os.path.join(self.base, "upper")
        self.work = os.path.join(self.base, "work")
        self.mnt = os.path.join(self.base, "mnt")
        self.kwork = os.path.join(self.base, "kwork")
        self.kmnt = os.path.join(self.base, "kmnt")
        self.logs = os.path.join(self.base, "logs")
        for d in (self.upper, self.work, self.mnt, self.kwork, self.kmnt, self.logs):
            os.makedirs(d, exist_ok=True)
        if lower_tree is None:
            os.makedirs(self.lower, exist_ok=True)
            lower_tree = build_lower(self.lower)
        self.lower_tree = lower_tree
        self.stats = {"rounds": 0, "work_leftovers": 0, "inflight": 0, "acked_ops": 0,
                      "fsynced_ops": 0}

    def models(self):
        out = []
        for w in range(NWORKERS):
            root = "w%d" % w
            out.append(Model({k: v for k, v in self.lower_tree.items()
                              if k == root or k.startswith(root + "/")}))
        return out

    def round(self, seed, recover_by_mount, kill_window=0.6, nops=40):
        """One round on a fresh upper. Raises AssertionError naming the seed on a violation."""
        rng = random.Random(seed)
        _wipe(self.upper)
        _wipe(self.work)
        _wipe(self.logs)
        models = self.models()
        allops = []
        for w, m in enumerate(models):
            ops = gen_ops(rng, m, "w%d" % w, nops)
            allops.append(ops)
            with open(os.path.join(self.logs, "ops%d.json" % w), "w") as f:
                json.dump(ops, f)
        workers = []
        delay = rng.uniform(0.0, kill_window)
        proc = run_unionfs("mount", "--lower", self.lower, "--upper", self.upper,
                           "--work", self.work, self.mnt)
        assert proc.returncode == 0, proc.stderr
        try:
            pid = daemon_pid(self.mnt)
            for w in range(NWORKERS):
                workers.append(subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "worker", self.mnt,
                     os.path.join(self.logs, "ops%d.json" % w),
                     os.path.join(self.logs, "log%d" % w), str(seed), str(w)],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    env=ENV))
            time.sleep(0.05)
            for p in workers:
                p.stdin.write(b"g")
                p.stdin.flush()
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)      # the daemon we started, by its PID
            _wait_gone(pid)
            errs = []
            for p in workers:
                try:
                    _, err = p.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    _, err = p.communicate()
                    errs.append("worker hung after the daemon died")
                if p.returncode:
                    errs.append(err.decode(errors="replace")[-2000:])
            assert not errs, "seed %s: worker failed:\n%s" % (seed, "\n".join(errs))
            assert is_mounted(self.mnt)
            # the dead mount answers ENOTCONN
            assert _fs_answer(self.mnt) in ("ENOTCONN", "ECONNABORTED"), (
                "seed %s: statfs on the dead mount gave %s" % (seed, _fs_answer(self.mnt)))
            self.stats["work_leftovers"] += bool(os.listdir(os.path.join(self.work, "work")))
            # detach the dead mount
            if recover_by_mount:
                proc = run_unionfs("mount", "--lower", self.lower, "--upper", self.upper,
                                   "--work", self.work, self.mnt)
                assert proc.returncode == 0, "seed %s: mount over the dead mount: %s" % (
                    seed, proc.stderr)
                assert "recovered dead mount at %s" % self.mnt in proc.stderr, proc.stderr
                assert mount_count(self.mnt) == 1
            else:
                proc = run_unionfs("umount", self.mnt)
                assert proc.returncode == 0, "seed %s: umount of the dead mount: %s" % (
                    seed, proc.stderr)
                assert not is_mounted(self.mnt)
                proc = run_unionfs("mount", "--lower", self.lower, "--upper", self.upper,
                                   "--work", self.work, self.mnt)
                assert proc.returncode == 0, proc.stderr
            snap = self._check(seed, models, allops)
        finally:
            for p in workers:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            lazy_unmount(self.mnt)
        # the same upper through the kernel's overlayfs (its own, fresh work dir)
        if have_kernel_overlay():
            _wipe(self.kwork)
            with kernel_overlay_mount([self.lower], self.upper, self.kwork, self.kmnt):
                ksnap = read_all(self.kmnt)
                kroot = sorted(os.listdir(self.kmnt))
            if ksnap != snap or kroot != ["w%d" % w for w in range(NWORKERS)]:
                diff = [k for i in (0, 1) for k in sorted(set(snap[i]) | set(ksnap[i]))
                        if snap[i].get(k) != ksnap[i].get(k)]
                raise AssertionError("seed %s: the kernel's overlayfs reads the crashed upper "
                                     "differently: root %r, paths %s" % (seed, kroot, diff[:20]))
        self.stats["rounds"] += 1

    def _check(self, seed, models, allops):
        m = self.mnt
        root_names = sorted(os.listdir(m))
        assert root_names == ["w%d" % w for w in range(NWORKERS)], (
            "seed %s: root of the mount after the crash: %r" % (seed, root_names))
        leaked = [os.path.join(d, n) for d, ds, fs in os.walk(m) for n in ds + fs
                  if n.startswith("#") or ".fuse_hidden" in n]
        assert not leaked, "seed %s: work-dir entries visible in the mount: %r" % (seed, leaked)
        left = os.listdir(os.path.join(self.work, "work"))
        assert not left, "seed %s: WORK/work not cleaned at mount: %r" % (seed, left)
        problems = []
        trees, meta = {}, {}
        for w, (model, ops) in enumerate(zip(models, allops)):
            root = "w%d" % w
            with open(os.path.join(self.logs, "log%d" % w)) as f:
                log = [l.split() for l in f.read().splitlines()]
            acked = [int(l[1]) for l in log if l[0] == "A"]
            bad = [l for l in log if l[0] == "X"]
            if bad:
                problems.append("worker %d: operation %r failed with %s before the kill" % (
                    w, ops[int(bad[0][1])], bad[0][2]))
                trees.update(read_tree(m, root, meta))
                continue
            assert acked == list(range(len(acked))), log
            k = len(acked)
            before = model.copy()
            for i in range(k):
                before.apply(ops[i], seed, w, i)
            self.stats["acked_ops"] += k
            self.stats["fsynced_ops"] += sum(1 for op in ops[:k] if len(op) > 4 and op[4])
            actual = read_tree(m, root, meta)
            trees.update(actual)
            if actual == before.tree:
                continue
            started = [int(l[1]) for l in log if l[0] == "B"]
            if k < len(ops) and k in started:
                after = before.copy()
                after.apply(ops[k], seed, w, k)
                self.stats["inflight"] += 1
                if inflight_ok(before, after, ops[k], actual):
                    continue
                problems.append(
                    "worker %d: state after %d acknowledged ops%s is neither that state nor a "
                    "state the in-flight op %r can leave:\n%s" % (
                        w, k, _fsynced(ops[:k]), ops[k], tree_diff(before.tree, actual)))
            else:
                problems.append("worker %d: state after %d acknowledged ops%s (none in flight) "
                                "differs:\n%s" % (w, k, _fsynced(ops[:k]),
                                                  tree_diff(before.tree, actual)))
        if problems:
            raise AssertionError("seed %s (replay: UNIONFS_CRASH_SEED / round seed):\n%s" % (
                seed, "\n".join(problems)))
        return trees, meta


def _fsynced(ops):
    n = sum(1 for op in ops if len(op) > 4 and op[4])
    return " (%d of them fsync'd)" % n if n else ""


# --------------------------------------------------------------------------- tests

ROUNDS = int(os.environ.get("UNIONFS_CRASH_ROUNDS", "10"))
SEED = int(os.environ.get("UNIONFS_CRASH_SEED", "1"))


def run_rounds(base, rounds, seed, report=None):
    env = CrashEnv(base)
    for r in range(rounds):
        env.round(seed * 100003 + r, recover_by_mount=bool(r % 2))
        if report:
            report(r, env.stats)
    return env.stats


if __name__ != "__main__":
    @pytest.mark.timeout(60 + 12 * ROUNDS)
    def test_crash_loop(tmp_path):
        stats = run_rounds(tmp_path, ROUNDS, SEED)
        assert stats["rounds"] == ROUNDS
        print("crash loop: %r" % stats)


# --------------------------------------------------------------------------- dead mount recovery

if __name__ != "__main__":
    @pytest.fixture
    def dead(tmp_path):
        """A unionfs mount whose daemon was SIGKILLed: (dirs, mount args)."""
        d = {n: tmp_path / n for n in ("lower", "upper", "work", "mnt")}
        for p in d.values():
            p.mkdir()
        (d["lower"] / "hello").write_bytes(b"from lower\n")
        args = ["--lower", d["lower"], "--upper", d["upper"], "--work", d["work"]]
        try:
            yield d, args
        finally:
            for _ in range(4):
                if not is_mounted(d["mnt"]):
                    break
                lazy_unmount(d["mnt"])

    def _kill_daemon(mnt):
        pid = daemon_pid(mnt)
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        _wait_dead_mount(mnt)

    def _assert_dead(mnt):
        with pytest.raises(OSError) as ei:
            os.stat(mnt)
            os.listdir(mnt)     # stat may be answered from the attribute cache for a second
        assert ei.value.errno == errno.ENOTCONN, ei.value
        with open("/proc/self/mountinfo") as f:
            types = [l.split(" - ")[1].split()[0] for l in f
                     if l.split()[4] == os.path.realpath(mnt)]
        assert types == ["fuse.unionfs"], types

    def test_mount_over_dead_mount_recovers(dead):
        d, args = dead
        proc = run_unionfs("mount", *args, d["mnt"])
        assert proc.returncode == 0, proc.stderr
        (d["mnt"] / "written").write_bytes(b"before the kill")
        _kill_daemon(d["mnt"])
        _assert_dead(d["mnt"])
        # validation sees a dead unionfs mount, not a missing or already mounted directory
        from unionfs.spec import MountSpec, validate
        spec = validate(MountSpec(lowers=[str(d["lower"])], mountpoint=str(d["mnt"]),
                                  upper=str(d["upper"]), work=str(d["work"])))
        assert spec.dead_mount and spec.mountpoint == str(d["mnt"])
        proc = run_unionfs("mount", *args, d["mnt"])
        assert proc.returncode == 0, proc.stderr
        out = (proc.stdout + proc.stderr).strip().splitlines()
        assert out == ["unionfs: recovered dead mount at %s" % d["mnt"]], out
        assert mount_count(d["mnt"]) == 1
        assert (d["mnt"] / "hello").read_bytes() == b"from lower\n"
        assert (d["mnt"] / "written").read_bytes() == b"before the kill"
        # the new daemon is alive and serving
        assert daemon_pid(d["mnt"])
        proc = run_unionfs("umount", d["mnt"])
        assert proc.returncode == 0 and not is_mounted(d["mnt"]), proc.stderr

    def test_mount_over_dead_mount_right_after_the_kill_and_while_busy(dead):
        """Within the attribute-cache second (stat still answers from the cache) and with a
        process holding a file of the dead mount open: still detected and detached."""
        d, args = dead
        assert run_unionfs("mount", *args, d["mnt"]).returncode == 0
        holder = open(d["mnt"] / "hello", "rb")
        try:
            os.stat(d["mnt"])           # fresh attributes in the kernel's cache
            _kill_daemon(d["mnt"])
            proc = run_unionfs("mount", *args, d["mnt"])
            assert proc.returncode == 0, proc.stderr
            assert "recovered dead mount at %s" % d["mnt"] in proc.stderr
            assert (d["mnt"] / "hello").read_bytes() == b"from lower\n"
            assert mount_count(d["mnt"]) == 1
        finally:
            try:
                holder.close()
            except OSError:
                pass    # the flush of a file of the dead mount fails with ENOTCONN

    def test_umount_clears_dead_mount(dead):
        d, args = dead
        assert run_unionfs("mount", *args, d["mnt"]).returncode == 0
        holder = os.open(d["mnt"] / "hello", os.O_RDONLY)   # keeps the dead mount busy
        try:
            _kill_daemon(d["mnt"])
            _assert_dead(d["mnt"])
            proc = run_unionfs("umount", d["mnt"])
            assert proc.returncode == 0, proc.stderr
            assert "Traceback" not in proc.stderr
            assert not is_mounted(d["mnt"])
            assert os.listdir(d["mnt"]) == []
        finally:
            try:
                os.close(holder)
            except OSError:
                pass    # the flush of a file of the dead mount fails with ENOTCONN
        proc = run_unionfs("umount", d["mnt"])
        assert proc.returncode == 1 and "not mounted" in proc.stderr

    def test_live_mount_still_refused(dead):
        d, args = dead
        assert run_unionfs("mount", *args, d["mnt"]).returncode == 0
        proc = run_unionfs("mount", *args, d["mnt"])
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "already mounted" in lines[0], proc.stderr
        assert mount_count(d["mnt"]) == 1
        assert (d["mnt"] / "hello").read_bytes() == b"from lower\n"

    def test_dead_mount_of_another_filesystem_is_not_touched(dead):
        """A dead FUSE mount that is not unionfs's is reported, not detached."""
        d, args = dead
        proc = run_unionfs("mount", *args, "-o", "fsname=otherfs,subtype=otherfs", d["mnt"])
        assert proc.returncode == 0, proc.stderr
        _kill_daemon(d["mnt"])
        proc = run_unionfs("mount", *args, d["mnt"])
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "dead fuse.otherfs mount" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
        assert mount_count(d["mnt"]) == 1

    def test_live_mount_on_top_of_a_dead_one_is_refused(dead):
        """A live mount stacked on a dead unionfs mount is the one in the way: refused, and
        neither mount is touched."""
        d, args = dead
        assert run_unionfs("mount", *args, d["mnt"]).returncode == 0
        _kill_daemon(d["mnt"])
        try:
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(d["mnt"])], check=True)
            proc = run_unionfs("mount", *args, d["mnt"])
            assert proc.returncode == 1 and "already mounted" in proc.stderr, proc.stderr
            assert mount_count(d["mnt"]) == 2
        finally:
            if mount_count(d["mnt"]) == 2:
                subprocess.run(["umount", str(d["mnt"])])
        # the dead one alone again: recovered
        proc = run_unionfs("mount", *args, d["mnt"])
        assert proc.returncode == 0 and "recovered" in proc.stderr, proc.stderr


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
