#!/usr/bin/env python3
"""Benchmark unionfs against the kernel's overlayfs, fuse-overlayfs and unionfs-fuse.

    python scripts/bench.py [--quick | --full] [--reps N] [--scale F]
                            [--systems unionfs,kernel,...] [--workloads walk,stat,...]
                            [--workdir /var/tmp/unionfs-bench] [--profile] [--no-chart]

Every workload runs on every system, alternating systems run by run (A B C D A B C D ...), each
run on a fresh mount with an empty upper over the same lower fixtures. Fixtures are built once per
size under WORKDIR/fx (on the same disk as the uppers) and reused while their manifest matches.

Reported per workload phase and system: median seconds, ratio to the kernel's overlayfs, spread
(min-max), and for the FUSE daemons their peak RSS (psutil, polled every 50 ms) and CPU seconds
(user+sys delta). Correctness figures (entry counts, total sizes, listing counts) must agree across
systems; a MISMATCH line is printed when they do not. Results go to bench-results/results-<ts>.json,
.md and .png (ratio to the kernel per phase, log scale).

Needs root (kernel overlay mounts, drop_caches), /dev/fuse, fusermount3; psutil; matplotlib for
the chart (skipped with a note when missing). Missing fuse-overlayfs / unionfs-fuse are installed
with apt-get when possible; a system that cannot run is skipped with a note.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import bench_workloads

try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "bench-results")
FIXTURE_VERSION = 3
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

SYSTEM_ORDER = ["unionfs", "unionfs-uring", "kernel", "fuse-overlayfs", "unionfs-fuse"]
# unionfs-uring: unionfs -o uring (FUSE over io_uring); asked for by name only, as it sets the
# fuse module's enable_uring to Y for the run (restored after it)
DEFAULT_SYSTEMS = ["unionfs", "kernel", "fuse-overlayfs", "unionfs-fuse"]
URING_PARAM = "/sys/module/fuse/parameters/enable_uring"
REFERENCE = "kernel"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# sizes

FULL = dict(walk_files=30000, walk_layers=10, stat_files=2000, stat_depths=[1, 10, 50, 100],
            list_layers=10, list_entries=1000, create_files=5000, big_bytes=1 * GIB,
            small_files=1000, seq_bytes=1 * GIB, unlink_files=1000, tar_src="/usr/include",
            tar_entries=0)
DEFAULT = dict(FULL, walk_files=10000, create_files=2000, big_bytes=256 * MIB, seq_bytes=256 * MIB,
               tar_entries=4000)
SCALED_KEYS = {"walk_files": 200, "stat_files": 100, "list_entries": 50, "create_files": 100,
               "big_bytes": 4 * MIB, "small_files": 50, "seq_bytes": 4 * MIB, "unlink_files": 50,
               "tar_entries": 300}


def make_sizes(full, scale):
    s = dict(FULL if full else DEFAULT)
    for k, lo in SCALED_KEYS.items():
        if k == "tar_entries" and s[k] == 0:  # the whole tree
            continue
        v = max(lo, int(s[k] * scale))
        if k.endswith("_bytes"):
            v = max(MIB, v // MIB * MIB)
        s[k] = v
    return s


# ---------------------------------------------------------------------------------------------
# helpers: mounts, caches, processes

def mounted_paths():
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            out.add(fields[4].encode().decode("unicode_escape"))
    return out


def is_mounted(mnt):
    return os.path.realpath(mnt) in mounted_paths()


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def run(cmd, check=True, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(cmd, **kw)
    if check and p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip() if isinstance(p.stderr, bytes) else p.stderr
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, cmd[:4])), p.returncode,
                                                   (err or "")[-500:]))
    return p


def rmtree(path):
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            subprocess.run(["rm", "-rf", "--one-file-system", path])


def find_daemon(mnt, must=(), exclude_pids=()):
    """PID of the process whose cmdline mentions the mountpoint (and every string in `must`)."""
    mnt = os.path.realpath(mnt)
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
        except (psutil.Error, KeyError):
            continue
        if p.info["pid"] in (me,) + tuple(exclude_pids):
            continue
        joined = " ".join(cmd)
        if any(a.rstrip("/") == mnt for a in cmd) and all(m in joined for m in must):
            return p.info["pid"]
    return None


def busy_cpu():
    """CPU seconds the whole machine has been busy (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def own_cpu():
    """CPU seconds of this process and its waited-for children (find, tar, rm)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_idle(max_wait, threshold=25.0):
    """Wait (up to max_wait s) until the machine is below threshold % busy; returns
    (busy % when starting, seconds waited)."""
    t0 = time.monotonic()
    while True:
        pct = psutil.cpu_percent(interval=0.25)
        waited = time.monotonic() - t0
        if pct < threshold or waited >= max_wait:
            return pct, waited


class Monitor:
    """Peak RSS (polled every 50 ms in a thread) and CPU seconds of one daemon, per phase; also
    the CPU time the rest of the machine used meanwhile (background noise: other processes)."""

    def __init__(self, pid, interval=0.05):
        self.proc = None
        if pid is not None and psutil is not None:
            try:
                self.proc = psutil.Process(pid)
            except psutil.Error:
                self.proc = None
        self.interval = interval
        self.peak = 0
        self.phase_peak = 0
        self._stop = threading.Event()
        self._thread = None
        self._cpu0 = None

    def _rss(self):
        try:
            return self.proc.memory_info().rss
        except psutil.Error:
            return 0

    def _cpu(self):
        try:
            t = self.proc.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return None

    def _loop(self):
        while not self._stop.wait(self.interval):
            r = self._rss()
            if r > self.phase_peak:
                self.phase_peak = r
            if r > self.peak:
                self.peak = r

    def start(self):
        if self.proc is None:
            return self
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def begin(self):
        self._sys0, self._own0 = busy_cpu(), own_cpu()
        if self.proc is None:
            return
        self.phase_peak = self._rss()
        self._cpu0 = self._cpu()

    def background(self, daemon_cpu):
        """CPU seconds used during the phase by neither us, our children nor the daemon."""
        other = (busy_cpu() - self._sys0) - (own_cpu() - self._own0) - (daemon_cpu or 0.0)
        return max(0.0, other)

    def end(self):
        """(cpu seconds, peak rss bytes) of the phase, or (None, None) without a daemon."""
        if self.proc is None:
            return None, None
        r = self._rss()
        self.phase_peak = max(self.phase_peak, r)
        self.peak = max(self.peak, r)
        c1 = self._cpu()
        cpu = None if (c1 is None or self._cpu0 is None) else c1 - self._cpu0
        return cpu, self.phase_peak

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


# ---------------------------------------------------------------------------------------------
# systems

class System:
    name = "?"
    fuse = True
    note = None

    def available(self):
        return True

    def mount(self, lowers, upper, work, mnt):
        """Mount; return the daemon PID (None for the kernel)."""
        raise NotImplementedError

    def unmount(self, mnt, pid):
        mnt = os.path.realpath(mnt)
        if self.fuse:
            fm = shutil.which("fusermount3") or shutil.which("fusermount")
            cmds = [[fm, "-u", mnt]] * 3 + [[fm, "-u", "-z", mnt]]
        else:
            cmds = [["umount", mnt]] * 3 + [["umount", "-l", mnt]]
        for i, cmd in enumerate(cmds):
            if not is_mounted(mnt):
                break
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if is_mounted(mnt) and i < len(cmds) - 1:
                time.sleep(0.3)
        if pid is not None and psutil is not None:
            try:
                proc = psutil.Process(pid)
                try:
                    proc.wait(timeout=15)
                except psutil.TimeoutExpired:
                    log("  daemon %d of %s still running after unmount: SIGTERM" % (pid, self.name))
                    proc.send_signal(signal.SIGTERM)  # our own daemon, by its PID
                    try:
                        proc.wait(timeout=5)
                    except psutil.TimeoutExpired:
                        proc.kill()
            except psutil.NoSuchProcess:
                pass
        if is_mounted(mnt):
            raise RuntimeError("could not unmount %s" % mnt)

    def _wait_mounted(self, mnt, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_mounted(mnt):
                return
            time.sleep(0.02)
        raise RuntimeError("%s: %s not mounted after %ds" % (self.name, mnt, timeout))

    def version(self):
        return ""


def version_line(text, name):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    mine = [l for l in lines if name in l]
    lib = [l for l in lines if l.startswith("FUSE library") or l.startswith("fusermount")]
    return "; ".join((mine or lines[:1]) + lib[:1])


def esc(path):
    return str(path).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def apt_install(pkg, binary):
    if os.path.exists(binary):
        return True
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return False
    log("installing %s with apt-get" % pkg)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    p = subprocess.run(["apt-get", "install", "-y", "-qq", pkg], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", pkg], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return os.path.exists(binary)


def have_fuse():
    return os.path.exists("/dev/fuse") and bool(shutil.which("fusermount3")
                                                 or shutil.which("fusermount"))


class Unionfs(System):
    name = "unionfs"

    def __init__(self, python, repo=REPO, name=None, options=()):
        self.python = os.path.abspath(python) if os.sep in python else python
        self.options = list(options)
        if name is not None:
            self.name = name
        # run from the checkout: `python -m` puts the working directory first on sys.path, ahead
        # of PYTHONPATH, and the daemon it starts inherits both (run from this repo, a baseline
        # checkout would mount with this repo's code)
        self.repo = repo
        self.env = dict(os.environ, PYTHONPATH=repo + (
            os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))

    def available(self):
        if not have_fuse():
            self.note = "no /dev/fuse or fusermount3"
            return False
        p = subprocess.run([self.python, "-c", "import unionfs.cli"], env=self.env,
                           capture_output=True, text=True)
        if p.returncode != 0:
            self.note = "cannot import unionfs with %s: %s" % (
                self.python, (p.stderr.strip().splitlines() or ["?"])[-1])
            return False
        return True

    def mount(self, lowers, upper, work, mnt):
        cmd = [self.python, "-m", "unionfs", "mount", "--lower", ":".join(esc(l) for l in lowers),
               "--upper", upper, "--work", work] + self.options + [mnt]
        run(cmd, env=self.env, timeout=120, cwd=self.repo)
        self._wait_mounted(mnt)
        return find_daemon(mnt, must=("_daemon",))

    def version(self):
        p = subprocess.run(["git", "-C", self.repo, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", self.repo, "status", "--porcelain", "unionfs"],
                               capture_output=True, text=True).stdout.strip()
        return "git %s%s" % (p.stdout.strip(), " (modified)" if dirty else "")


class Kernel(System):
    name = "kernel"
    fuse = False

    def available(self):
        if os.geteuid() != 0:
            self.note = "needs root"
            return False
        if shutil.which("modprobe"):
            subprocess.run(["modprobe", "overlay"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        with open("/proc/filesystems") as f:
            if not any(l.split()[-1] == "overlay" for l in f if l.strip()):
                self.note = "overlay not in /proc/filesystems"
                return False
        return True

    def mount(self, lowers, upper, work, mnt):
        # The mount options must fit in one page: with many layers, name them relative to
        # their common parent (the kernel resolves relative lowerdirs against the caller's cwd).
        cwd = None
        opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (":".join(esc(l) for l in lowers),
                                                        esc(upper), esc(work))
        if len(opts) > 3500 and len(lowers) > 1:
            cwd = os.path.commonpath(lowers)
            opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (
                ":".join(esc(os.path.relpath(l, cwd)) for l in lowers), esc(upper), esc(work))
        run(["mount", "-t", "overlay", "overlay", "-o", opts, mnt], cwd=cwd)
        return None

    def version(self):
        return "linux " + platform.release()


class FuseOverlayfs(System):
    name = "fuse-overlayfs"
    BIN = "/usr/bin/fuse-overlayfs"

    def available(self):
        if not have_fuse():
            self.note = "no /dev/fuse or fusermount3"
            return False
        self.bin = shutil.which("fuse-overlayfs") or self.BIN
        if not os.path.exists(self.bin) and not apt_install("fuse-overlayfs", self.BIN):
            self.note = "fuse-overlayfs not installed and apt-get install failed"
            return False
        self.bin = shutil.which("fuse-overlayfs") or self.BIN
        return True

    def mount(self, lowers, upper, work, mnt):
        opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (":".join(esc(l) for l in lowers),
                                                        esc(upper), esc(work))
        run([self.bin, "-o", opts, mnt], timeout=120)
        self._wait_mounted(mnt)
        return find_daemon(mnt, must=("fuse-overlayfs",))

    def version(self):
        p = subprocess.run([self.bin, "--version"], capture_output=True, text=True)
        return version_line(p.stdout + "\n" + p.stderr, "fuse-overlayfs")


class UnionfsFuse(System):
    name = "unionfs-fuse"
    BIN = "/usr/bin/unionfs"  # same command name as ours: always by full path

    def available(self):
        if not have_fuse():
            self.note = "no /dev/fuse or fusermount"
            return False
        if not apt_install("unionfs-fuse", self.BIN):
            self.note = "unionfs-fuse not installed and apt-get install failed"
            return False
        p = subprocess.run([self.BIN, "--version"], capture_output=True, text=True)
        if "unionfs-fuse" not in p.stdout + p.stderr:
            self.note = "%s is not unionfs-fuse" % self.BIN
            return False
        return True

    def mount(self, lowers, upper, work, mnt):
        # unionfs-fuse has no work dir; whiteouts live in UPPER/.unionfs (hidden from listings
        # by hide_meta_files). Branch syntax: dir=RW|RO, ':' separated, top first.
        branches = ":".join([esc(upper) + "=RW"] + [esc(l) + "=RO" for l in lowers])
        run([self.BIN, "-o", "cow,hide_meta_files", branches, mnt], timeout=120)
        self._wait_mounted(mnt)
        return find_daemon(mnt, must=(self.BIN,))

    def version(self):
        p = subprocess.run([self.BIN, "--version"], capture_output=True, text=True)
        return version_line(p.stdout + "\n" + p.stderr, "unionfs-fuse")


# ---------------------------------------------------------------------------------------------
# fixtures

def _write(path, size, seed=0):
    with open(path, "wb") as f:
        if size:
            unit = (b"%08d" % seed) * 8  # 64 bytes
            f.write((unit * (size // len(unit) + 1))[:size])


class Fixtures:
    """Lower-layer trees, built once per size under ROOT/fx and reused while the manifest
    (parameters + FIXTURE_VERSION) matches."""

    def __init__(self, root):
        self.root = os.path.join(root, "fx")
        os.makedirs(self.root, exist_ok=True)

    def _get(self, name, params, build):
        d = os.path.join(self.root, name)
        manifest = os.path.join(d, "manifest.json")
        want = dict(params, version=FIXTURE_VERSION)
        try:
            with open(manifest) as f:
                have = json.load(f)
            if have.get("params") == want:
                return d, have.get("info", {})
        except (OSError, ValueError):
            pass
        log("building fixture %s %s" % (name, params))
        t0 = time.perf_counter()
        tmp = d + ".tmp"
        rmtree(tmp)
        rmtree(d)
        os.makedirs(tmp)
        info = build(tmp) or {}
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump({"params": want, "info": info}, f, indent=1)
        os.sync()
        os.rename(tmp, d)
        log("  built %s in %.1fs" % (name, time.perf_counter() - t0))
        return d, info

    # 1. a tree of N files over L layers: leaf dirs of 25 files, each leaf dir spread over 3
    #    layers, every 10th file shadowed by a bigger copy one layer further down.
    def walk(self, files, layers):
        def build(d):
            names = ["%02d" % i for i in range(layers)]
            for n in names:
                os.mkdir(os.path.join(d, n))
            made = set()
            per_leaf = 25
            nleaf = (files + per_leaf - 1) // per_leaf
            total = 0
            for j in range(nleaf):
                rel = "t%03d/d%02d" % (j // 20, j % 20)
                for k in range(min(per_leaf, files - j * per_leaf)):
                    li = (j + k % 3) % layers
                    size = (j * 7 + k * 131) % 2048
                    total += size
                    copies = [(li, size)]
                    if (j * per_leaf + k) % 10 == 0 and li + 1 < layers:
                        copies.append((li + 1, size + 1))
                    for lj, sz in copies:
                        dd = os.path.join(d, names[lj], rel)
                        if (lj, rel) not in made:
                            os.makedirs(dd, exist_ok=True)
                            made.add((lj, rel))
                        _write(os.path.join(dd, "f%02d.txt" % k), sz, k)
            ndirs = nleaf + (nleaf + 19) // 20
            return {"layers": names, "files": files, "dirs": ndirs, "file_bytes": total}
        d, info = self._get("walk-%d-%d" % (files, layers), {"files": files, "layers": layers},
                            build)
        return [os.path.join(d, n) for n in info["layers"]], info

    # 2. `files` files in base/d, under up to 99 filler layers that each have d/ (so d merges
    #    through every layer) with one file of their own.
    def stat(self, files, maxdepth):
        def build(d):
            base = os.path.join(d, "base", "d")
            os.makedirs(base)
            total = 0
            for i in range(files):
                _write(os.path.join(base, "f%05d" % i), i % 1000, i)
                total += i % 1000
            fillers = []
            for i in range(maxdepth - 1):
                n = "%03d" % i
                os.makedirs(os.path.join(d, n, "d"))
                _write(os.path.join(d, n, "d", "x%03d" % i), 10, i)
                fillers.append(n)
            return {"fillers": fillers, "files": files, "file_bytes": total}
        d, info = self._get("stat-%d-%d" % (files, maxdepth),
                            {"files": files, "maxdepth": maxdepth}, build)

        def lowers(depth):
            return [os.path.join(d, n) for n in info["fillers"][:depth - 1]] + \
                [os.path.join(d, "base")]
        return lowers, info

    # 3. big/ in every layer: half the names shared by all layers, half the layer's own.
    def listing(self, layers, entries):
        def build(d):
            names = ["%02d" % i for i in range(layers)]
            shared = entries // 2
            for li, n in enumerate(names):
                b = os.path.join(d, n, "big")
                os.makedirs(b)
                for i in range(shared):
                    _write(os.path.join(b, "s%05d" % i), li + 1, i)
                for i in range(entries - shared):
                    _write(os.path.join(b, "u%02d-%05d" % (li, i)), (i % 7) + 1, i)
            merged = shared + layers * (entries - shared)
            size = shared * 1 + layers * sum((i % 7) + 1 for i in range(entries - shared))
            return {"layers": names, "merged": merged, "file_bytes": size}
        d, info = self._get("list-%d-%d" % (layers, entries),
                            {"layers": layers, "entries": entries}, build)
        return [os.path.join(d, n) for n in info["layers"]], info

    # 5/6/8. one layer: big.bin and small/ with 2 * small_files files of 4 KiB.
    def files(self, big_bytes, small_files):
        def build(d):
            top = os.path.join(d, "0")
            os.makedirs(os.path.join(top, "small"))
            chunk = os.urandom(MIB)
            with open(os.path.join(top, "big.bin"), "wb") as f:
                for _ in range(big_bytes // MIB):
                    f.write(chunk)
            for i in range(2 * small_files):
                _write(os.path.join(top, "small", "s%05d" % i), 4096, i)
            return {"big_bytes": big_bytes, "small": 2 * small_files}
        d, info = self._get("files-%d-%d" % (big_bytes // MIB, small_files),
                            {"big_bytes": big_bytes, "small_files": small_files}, build)
        return [os.path.join(d, "0")], info

    # 4/7. one empty lower layer
    def empty(self):
        def build(d):
            os.makedirs(os.path.join(d, "0", "keep"))
            return {}
        d, info = self._get("empty", {}, build)
        return [os.path.join(d, "0")], info

    # 7. a tar of a real tree (/usr/include), made once: its first `limit` entries in sorted
    #    walk order (0: all of it), each directory before what it holds.
    def tarball(self, src, limit=0):
        def build(d):
            parent, base = os.path.split(src.rstrip("/"))
            names = [base]
            size = 0
            for dp, dns, fns in os.walk(src):
                dns.sort()
                rel = os.path.relpath(dp, parent)
                for n in sorted(dns + fns):
                    if limit and len(names) >= limit:
                        break
                    p = os.path.join(dp, n)
                    if n in fns or os.path.islink(p):
                        names.append(os.path.join(rel, n))
                        st = os.lstat(p)
                        if st.st_mode & 0o170000 == 0o100000:
                            size += st.st_size
                    else:
                        names.append(os.path.join(rel, n))
            listing = os.path.join(d, "names")
            with open(listing, "w") as f:
                f.write("\n".join(names) + "\n")
            out = os.path.join(d, "tree.tar")
            run(["tar", "-cf", out, "-C", parent, "--no-recursion", "--verbatim-files-from",
                 "-T", listing])
            os.unlink(listing)
            return {"tar": "tree.tar", "top": base, "entries": len(names), "file_bytes": size,
                    "tar_bytes": os.path.getsize(out)}
        d, info = self._get("tar-%s-%d" % (src.strip("/").replace("/", "_"), limit),
                            {"src": src, "limit": limit}, build)
        return os.path.join(d, info["tar"]), info


# ---------------------------------------------------------------------------------------------
# workloads: a case = lowers + a list of timed phases on one fresh mount

class Phase:
    """One timed step. `check` (untimed) returns the correctness figures; `expect` holds the
    figures known from the fixture's manifest."""

    def __init__(self, name, fn, cold=False, check=None, expect=None):
        self.name, self.fn, self.cold, self.check, self.expect = name, fn, cold, check, expect


class Case:
    """One run's worth of phases on one fresh mount. Before each run the lower layers are made
    warm in the page cache (read directly, not through the mount) unless warm=False (cases
    whose first phase is cold), so the system that runs first is not penalised. setup(ctx) and
    teardown(ctx), untimed, run after mounting and before unmounting (teardown always)."""

    def __init__(self, workload, name, lowers, phases, prep=None, warm=True, setup=None,
                 teardown=None):
        self.workload, self.name, self.lowers, self.phases, self.prep, self.warm = \
            workload, name, lowers, phases, prep, warm
        self.setup, self.teardown = setup, teardown


def warm_tree(lowers, read_below=64 * KIB):
    for top in lowers:
        for dp, dns, fns in os.walk(top):
            for fn in fns:
                p = os.path.join(dp, fn)
                st = os.lstat(p)
                if st.st_mode & 0o170000 == 0o100000 and 0 < st.st_size <= read_below:
                    with open(p, "rb") as f:
                        f.read()


def tree_figures(root):
    """entries, files, file bytes under root (os.walk + lstat), untimed verification."""
    entries = files = size = 0
    for dp, dns, fns in os.walk(root):
        entries += len(dns) + len(fns)
        for fn in fns:
            st = os.lstat(os.path.join(dp, fn))
            if st.st_mode & 0o170000 == 0o100000:
                files += 1
                size += st.st_size
    return {"entries": entries, "files": files, "file_bytes": size}


def find_walk(ctx):
    p = run(["find", ctx.mnt, "-printf", "%y %s %i\n"])
    ctx.state["find_out"] = p.stdout


def find_figures(ctx):
    counts = {}
    size = 0
    for line in ctx.state.pop("find_out").splitlines():
        t, s, _ino = line.split(b" ")
        counts[t.decode()] = counts.get(t.decode(), 0) + 1
        if t == b"f":
            size += int(s)
    return {"entries": sum(counts.values()), "files": counts.get("f", 0),
            "dirs": counts.get("d", 0), "file_bytes": size}


def warm_file(path):
    """Read a lower file directly (not through the mount), so every system starts warm."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(4 * MIB)
        while f.readinto(buf):
            pass


def read_all(path, bufsize=MIB):
    n = 0
    buf = bytearray(bufsize)
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            k = os.readv(fd, [buf])
            if not k:
                break
            n += k
    finally:
        os.close(fd)
    return n


def _cases_walk(fx, S):
    cases = []
    lowers, info = fx.walk(S["walk_files"], S["walk_layers"])
    exp = {"files": info["files"], "dirs": info["dirs"] + 1, "file_bytes": info["file_bytes"]}
    ph = [Phase("cold", find_walk, cold=True, check=find_figures, expect=exp),
          Phase("warm", find_walk, check=find_figures, expect=exp)]
    cases.append(Case("walk", "walk %d files/%d layers" % (S["walk_files"], S["walk_layers"]),
                      lowers, ph, warm=False))
    return cases


def _cases_stat(fx, S):
    cases = []
    lowers_of, info = fx.stat(S["stat_files"], max(S["stat_depths"]))
    n = S["stat_files"]

    def stat_files(ctx):
        ok = size = 0
        d = ctx.mnt + "/d/"
        for i in range(n):
            st = os.lstat(d + "f%05d" % i)
            ok += 1
            size += st.st_size
        ctx.state["fig"] = {"stat_ok": ok, "file_bytes": size}

    for depth in S["stat_depths"]:
        cases.append(Case("stat", "stat %d files, %d layers" % (n, depth), lowers_of(depth),
                          [Phase("L%d" % depth, stat_files,
                                 check=lambda ctx: ctx.state.pop("fig"),
                                 expect={"stat_ok": n, "file_bytes": info["file_bytes"]})]))
    return cases


def _cases_list(fx, S):
    cases = []
    lowers, info = fx.listing(S["list_layers"], S["list_entries"])

    def listdir(ctx):
        ctx.state["fig"] = {"names": len(os.listdir(ctx.mnt + "/big"))}

    exp = {"names": info["merged"], "file_bytes": info["file_bytes"]}

    def list_lstat(ctx):
        d = ctx.mnt + "/big/"
        names = os.listdir(d)
        size = 0
        for name in names:
            size += os.lstat(d + name).st_size
        ctx.state["fig"] = {"names": len(names), "file_bytes": size}

    fig = lambda ctx: ctx.state.pop("fig")  # noqa: E731
    cases.append(Case("list", "list dir in %d layers x %d entries" % (
        S["list_layers"], S["list_entries"]), lowers,
        [Phase("first", listdir, check=fig, expect={"names": info["merged"]}),
         Phase("lstat", list_lstat, check=fig, expect=exp),
         Phase("again", list_lstat, check=fig, expect=exp)]))
    return cases


def _cases_create(fx, S):
    cases = []
    lowers, _ = fx.empty()
    n = S["create_files"]
    data = b"c" * 4096

    def create(ctx):
        d = ctx.mnt + "/new/"
        os.mkdir(d)
        for i in range(n):
            fd = os.open(d + "f%05d" % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)

    def delete(ctx):
        d = ctx.mnt + "/new/"
        for i in range(n):
            os.unlink(d + "f%05d" % i)
        os.rmdir(d)

    cases.append(Case("create", "create+delete %d x 4 KiB" % n, lowers, [
        Phase("create", create, check=lambda ctx: tree_figures(ctx.mnt + "/new"),
              expect={"files": n, "file_bytes": 4096 * n}),
        Phase("delete", delete, check=lambda ctx: {
            "root_entries": len(os.listdir(ctx.mnt))}, expect={"root_entries": 1})]))
    return cases


def _cases_copyup(fx, S):
    cases = []
    lowers, info = fx.files(S["big_bytes"], S["small_files"])
    n = S["small_files"]

    def append_big(ctx):
        fd = os.open(ctx.mnt + "/big.bin", os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"!")
        os.close(fd)

    def modify_small(ctx):
        d = ctx.mnt + "/small/"
        for i in range(0, 2 * n, 2):
            fd = os.open(d + "s%05d" % i, os.O_WRONLY)
            os.pwrite(fd, b"Z", 0)
            os.close(fd)

    def check_small(ctx):
        d = ctx.mnt + "/small/"
        z = 0
        for i in range(2 * n):
            with open(d + "s%05d" % i, "rb") as f:
                z += f.read(1) == b"Z"
        return {"modified": z, "names": len(os.listdir(d))}

    cases.append(Case("copyup", "copy-up %d MiB file / %d small files" % (
        S["big_bytes"] // MIB, n), lowers, [
        Phase("append-big", append_big,
              check=lambda ctx: {"size": os.stat(ctx.mnt + "/big.bin").st_size},
              expect={"size": S["big_bytes"] + 1}),
        Phase("modify-small", modify_small, check=check_small,
              expect={"modified": n, "names": 2 * n})],
        prep=lambda: warm_file(os.path.join(lowers[0], "big.bin"))))
    return cases


def _cases_seqio(fx, S):
    cases = []
    lowers, info = fx.files(S["big_bytes"], S["small_files"])
    wbytes = S["seq_bytes"]
    chunk = os.urandom(MIB)

    def read_big(ctx):
        ctx.state["fig"] = {"bytes": read_all(ctx.mnt + "/big.bin")}

    def write_big(ctx):
        fd = os.open(ctx.mnt + "/written.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for _ in range(wbytes // MIB):
                os.write(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_written(ctx):
        ctx.state["fig"] = {"bytes": read_all(ctx.mnt + "/written.bin")}

    fig = lambda ctx: ctx.state.pop("fig")  # noqa: E731
    cases.append(Case("seqio", "sequential read %d MiB / write %d MiB" % (
        S["big_bytes"] // MIB, wbytes // MIB), lowers, [
        Phase("read-cold", read_big, cold=True, check=fig, expect={"bytes": S["big_bytes"]}),
        Phase("read-warm", read_big, check=fig, expect={"bytes": S["big_bytes"]}),
        Phase("write-fsync", write_big,
              check=lambda ctx: {"size": os.stat(ctx.mnt + "/written.bin").st_size},
              expect={"size": wbytes}),
        # the file just written is in the upper layer, its data in the page cache: on a
        # read-write mount this is the warm read of an upper file (passthrough's case)
        Phase("read-upper", read_written, check=fig, expect={"bytes": wbytes})], warm=False))
    return cases


def _cases_untar(fx, S):
    cases = []
    lowers, _ = fx.empty()
    tarpath, tinfo = fx.tarball(S["tar_src"], S["tar_entries"])
    top = tinfo["top"]

    def untar(ctx):
        run(["tar", "-xf", tarpath, "-C", ctx.mnt])

    def rmrf(ctx):
        run(["rm", "-rf", ctx.mnt + "/" + top])

    def untar_fig(ctx):
        f = tree_figures(ctx.mnt + "/" + top)
        f["entries"] += 1
        return f

    cases.append(Case("untar", "untar %s (%d entries) + rm -rf" % (
        S["tar_src"] + ("" if not S["tar_entries"] else " subset"), tinfo["entries"]), lowers, [
        Phase("untar", untar, check=untar_fig,
              expect={"entries": tinfo["entries"], "file_bytes": tinfo["file_bytes"]}),
        Phase("rm-rf", rmrf, check=lambda ctx: {"root_entries": len(os.listdir(ctx.mnt))},
              expect={"root_entries": 1})],
        prep=lambda: warm_file(tarpath)))
    return cases


def _cases_unlink(fx, S):
    cases = []
    lowers, info = fx.files(S["big_bytes"], S["small_files"])
    n = S["unlink_files"]
    avail = 2 * S["small_files"]
    step = max(1, avail // n)
    victims = ["s%05d" % i for i in range(1, avail, step)][:n]

    def unlink(ctx):
        d = ctx.mnt + "/small/"
        for v in victims:
            os.unlink(d + v)

    def listdir(ctx):
        ctx.state["fig"] = {"names": len(os.listdir(ctx.mnt + "/small"))}

    cases.append(Case("unlink", "unlink %d lower files + list" % len(victims), lowers, [
        Phase("unlink", unlink),
        Phase("list", listdir, check=lambda ctx: ctx.state.pop("fig"),
              expect={"names": avail - len(victims)})]))
    return cases


WORKLOADS = {"walk": _cases_walk, "stat": _cases_stat, "list": _cases_list,
             "create": _cases_create, "copyup": _cases_copyup, "seqio": _cases_seqio,
             "untar": _cases_untar, "unlink": _cases_unlink}
DEFAULT_WORKLOADS = list(WORKLOADS)
bench_workloads.register(sys.modules[__name__], WORKLOADS)  # rootfs, podman, parallel


def build_cases(fx, sizes, selected):
    cases = []
    for name, fn in WORKLOADS.items():
        if name in selected:
            cases += fn(fx, sizes)
    return cases


# ---------------------------------------------------------------------------------------------
# running

class Ctx:
    def __init__(self, mnt):
        self.mnt = mnt
        self.state = {}


class Runner:
    def __init__(self, args, systems, root):
        self.args = args
        self.systems = systems
        self.root = root
        self.pyspy = None
        self.idle_budget = args.idle_budget
        if args.profile:
            self.pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable),
                                                                "py-spy")
            if not os.path.exists(self.pyspy):
                log("note: py-spy not found (pip install py-spy): --profile ignored")
                self.pyspy = None

    def dirs(self, system):
        base = os.path.join(self.root, "run", system.name)
        return (os.path.join(base, "upper"), os.path.join(base, "work"),
                os.path.join(self.root, "mnt", system.name))

    def cleanup_stale(self):
        for s in self.systems:
            _u, _w, mnt = self.dirs(s)
            if os.path.isdir(mnt) and is_mounted(mnt):
                log("unmounting stale %s" % mnt)
                s.unmount(mnt, None)

    def run_case(self, case, system, rep, stamp):
        upper, work, mnt = self.dirs(system)
        for d in (upper, work):
            rmtree(d)
            os.makedirs(d)
        os.makedirs(mnt, exist_ok=True)
        if case.warm:
            warm_tree(case.lowers)
        if case.prep:
            case.prep()
        os.sync()
        busy, waited = 0.0, 0.0
        if self.idle_budget > 0 and self.args.idle_wait > 0:
            busy, waited = wait_idle(min(self.args.idle_wait, self.idle_budget))
            self.idle_budget -= waited
        rec = {"phases": {}, "error": None, "loadavg1": os.getloadavg()[0],
               "busy_pct_at_start": busy, "idle_waited_s": waited}
        pid = None
        mon = None
        prof = None
        t0 = time.perf_counter()
        try:
            pid = system.mount(case.lowers, upper, work, mnt)
            rec["mount_s"] = time.perf_counter() - t0
            if system.fuse and pid is None:
                log("  note: daemon of %s not found; no RSS/CPU" % system.name)
            mon = Monitor(pid).start()
            if self.pyspy and system.name == "unionfs" and pid and rep == 0:
                fmt_ = self.args.profile_format
                out = os.path.join(RESULTS_DIR, "profile-%s-%s%s.%s" % (
                    stamp, case.workload, "-L" + case.name.split()[-2]
                    if case.workload == "stat" else "",
                    {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[fmt_]))
                prof = subprocess.Popen([self.pyspy, "record", "--nonblocking", "-r", "250",
                                         "-f", fmt_, "-o", out, "--pid", str(pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            ctx = Ctx(mnt)
            if case.setup:
                case.setup(ctx)
            for ph in case.phases:
                if ph.cold:
                    drop_caches()
                mon.begin()
                t = time.perf_counter()
                ph.fn(ctx)
                dt = time.perf_counter() - t
                cpu, rss = mon.end()
                bg = mon.background(cpu)
                fig = ph.check(ctx) if ph.check else {}
                rec["phases"][ph.name] = {"s": dt, "cpu_s": cpu, "rss": rss, "fig": fig,
                                          "bg_cpu_s": bg}
            rec["peak_rss"] = mon.peak if mon.proc is not None else None
        except Exception as e:  # noqa: BLE001 - one failing system must not stop the benchmark
            rec["error"] = "%s: %s" % (type(e).__name__, e)
            log("  ERROR %s %s: %s" % (system.name, case.name, rec["error"]))
        finally:
            if mon:
                mon.stop()
            try:
                if case.teardown:
                    case.teardown(Ctx(mnt))
                system.unmount(mnt, pid)
            except Exception as e:  # noqa: BLE001
                log("  ERROR unmounting %s: %s" % (mnt, e))
                rec["error"] = rec["error"] or str(e)
            if prof is not None:
                try:
                    prof.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    prof.terminate()  # our own py-spy
                    prof.wait()
            if not is_mounted(mnt):
                for d in (upper, work):
                    rmtree(d)
        return rec


def median(xs):
    return statistics.median(xs) if xs else None


def summarize(cases, systems, raw):
    """rows: one per (case, phase, system)."""
    rows = []
    mismatches = []
    for case in cases:
        for ph in case.phases:
            per = {}
            for s in systems:
                recs = raw.get((case.name, s.name), [])
                times, cpus, rsss, figs, errs, bgs = [], [], [], [], [], []
                for r in recs:
                    p = r["phases"].get(ph.name)
                    if p is None:
                        errs.append(r.get("error") or "not run")
                        continue
                    times.append(p["s"])
                    bgs.append(p.get("bg_cpu_s") or 0.0)
                    if p["cpu_s"] is not None:
                        cpus.append(p["cpu_s"])
                    if p["rss"]:
                        rsss.append(p["rss"])
                    figs.append(p["fig"])
                per[s.name] = dict(times=times, cpus=cpus, rsss=rsss, figs=figs, errs=errs,
                                   bgs=bgs)
            ref = per.get(REFERENCE)
            ref_med = median(ref["times"]) if ref and ref["times"] else None
            # correctness figures: every run of every system must agree
            distinct = {}
            for sname, d in per.items():
                for f in d["figs"]:
                    distinct.setdefault(json.dumps(f, sort_keys=True), set()).add(sname)
            if len(distinct) > 1:
                mismatches.append({"case": case.name, "phase": ph.name,
                                   "variants": {k: sorted(v) for k, v in distinct.items()}})
            if ph.expect:
                for k, v in distinct.items():
                    got = json.loads(k)
                    bad = {f: (got.get(f), want) for f, want in ph.expect.items()
                           if got.get(f) != want}
                    if bad:
                        mismatches.append({"case": case.name, "phase": ph.name, "variants": {
                            "expected " + json.dumps(ph.expect, sort_keys=True): ["fixture"],
                            k: sorted(v)}})
            for s in systems:
                d = per[s.name]
                med = median(d["times"])
                rows.append({
                    "workload": case.workload, "case": case.name, "phase": ph.name,
                    "system": s.name, "runs": len(d["times"]), "times": d["times"],
                    "median_s": med, "min_s": min(d["times"]) if d["times"] else None,
                    "max_s": max(d["times"]) if d["times"] else None,
                    "ratio": (med / ref_med) if (med is not None and ref_med) else None,
                    "cpu_s": median(d["cpus"]), "peak_rss_mib":
                        (max(d["rsss"]) / MIB) if d["rsss"] else None,
                    "figures": d["figs"][0] if d["figs"] else None,
                    "bg_cpu_s": max(d["bgs"]) if d["bgs"] else None,
                    "errors": sorted(set(d["errs"])),
                })
    return rows, mismatches


def fmt(x, spec="%.3f", none="-"):
    return none if x is None else spec % x


def table_lines(rows, md=False):
    hdr = ["workload", "phase", "system", "median s", "x kernel", "min-max s", "daemon CPU s",
           "peak RSS MiB", "bg CPU s", "figures"]
    lines = []
    if md:
        lines.append("| " + " | ".join(hdr) + " |")
        lines.append("|" + "---|" * len(hdr))
    else:
        lines.append("%-34s %-12s %-15s %9s %8s %17s %8s %8s %8s  %s" % tuple(hdr))
    last_case = None
    for r in rows:
        figs = ("ERROR: " + "; ".join(r["errors"])[:120]) if not r["runs"] else \
            ", ".join("%s=%s" % kv for kv in (r["figures"] or {}).items())
        spread = "%s-%s" % (fmt(r["min_s"]), fmt(r["max_s"])) if r["runs"] else "-"
        cells = [r["case"] if r["case"] != last_case else "", r["phase"], r["system"],
                 fmt(r["median_s"]), fmt(r["ratio"], "%.2f"), spread, fmt(r["cpu_s"], "%.2f"),
                 fmt(r["peak_rss_mib"], "%.0f"), fmt(r["bg_cpu_s"], "%.2f"), figs]
        last_case = r["case"]
        if md:
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        else:
            lines.append("%-34s %-12s %-15s %9s %8s %17s %8s %8s %8s  %s" % tuple(cells))
    return lines


def stat_growth(rows, depths):
    lo, hi = min(depths), max(depths)
    out = {}
    for r in rows:
        if r["workload"] != "stat" or r["median_s"] is None:
            continue
        out.setdefault(r["system"], {})[r["phase"]] = r["median_s"]
    return {s: (v["L%d" % hi] / v["L%d" % lo]) for s, v in out.items()
            if "L%d" % hi in v and "L%d" % lo in v and v["L%d" % lo] > 0}


def draw_chart(rows, systems, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("note: matplotlib not installed (pip install matplotlib): no chart")
        return False
    labels = []
    for r in rows:
        lab = "%s\n%s" % (r["workload"], r["phase"])
        if lab not in labels:
            labels.append(lab)
    names = [s.name for s in systems]
    vals = {n: [None] * len(labels) for n in names}
    for r in rows:
        i = labels.index("%s\n%s" % (r["workload"], r["phase"]))
        vals[r["system"]][i] = r["ratio"]
    fig, ax = plt.subplots(figsize=(min(20, max(10, 0.2 * len(labels) * max(1, len(names)))), 6.5))
    w = 0.8 / max(1, len(names))
    colors = {"unionfs": "#d62728", "kernel": "#7f7f7f", "fuse-overlayfs": "#1f77b4",
              "unionfs-fuse": "#2ca02c"}
    for k, n in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * w for i in range(len(labels))]
        ys = [v if v is not None else 0 for v in vals[n]]
        ax.bar(xs, ys, width=w, label=n, color=colors.get(n))
        if n == "unionfs":
            for x, y in zip(xs, ys):
                if y:
                    ax.annotate("%.1f" % y, (x, y), ha="center", va="bottom", fontsize=6)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7, rotation=60, ha="right")
    ax.set_ylabel("median time / kernel overlayfs (log)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 repetition, sizes x0.1 (unless --reps/--scale given)")
    p.add_argument("--full", action="store_true",
                   help="the full sizes (30k files, 5,000 creates, 1 GiB files)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per system (default 3)")
    p.add_argument("--scale", type=float, default=None, help="multiply file counts and sizes")
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help="comma separated, from: " + ", ".join(SYSTEM_ORDER))
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                   help="comma separated, from: %s (default: the first %d; the real workloads "
                        "in bench_workloads.py run when named)" % (" ".join(WORKLOADS),
                                                                   len(DEFAULT_WORKLOADS)))
    p.add_argument("--workdir", default="/var/tmp/unionfs-bench",
                   help="fixtures, uppers and mountpoints (keep it on one disk)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter that runs unionfs (needs unionfs's dependencies: xattr, psutil)")
    p.add_argument("--baseline", metavar="DIR",
                   help="also run the unionfs in DIR (a checkout of another version: git worktree "
                        "add DIR REV) as the system 'unionfs-base', alternating with this one in "
                        "the same run, to compare a change with what it changed")
    p.add_argument("--profile", action="store_true",
                   help="record a py-spy flame graph of the unionfs daemon for each case (rep 1)")
    p.add_argument("--profile-format", default="flamegraph",
                   choices=["flamegraph", "raw", "speedscope"],
                   help="py-spy output: flamegraph (.svg), raw collapsed stacks (.txt), speedscope")
    p.add_argument("--idle-wait", type=float, default=5.0,
                   help="before each run wait up to this many seconds for the machine to be "
                        "under 25%% busy (other processes skew timings)")
    p.add_argument("--idle-budget", type=float, default=90.0,
                   help="total seconds the whole benchmark may spend waiting for idle")
    p.add_argument("--no-chart", action="store_true")
    a = p.parse_args(argv)
    a.systems = [s.strip() for s in a.systems.replace(" ", ",").split(",") if s.strip()]
    a.workloads = [s.strip() for s in a.workloads.replace(" ", ",").split(",") if s.strip()]
    for s in a.systems:
        if s not in SYSTEM_ORDER:
            p.error("unknown system %r" % s)
    for w in a.workloads:
        if w not in WORKLOADS:
            p.error("unknown workload %r (one of: %s)" % (w, ", ".join(WORKLOADS)))
    if a.reps is None:
        a.reps = 1 if a.quick else 3
    if a.scale is None:
        a.scale = 0.1 if a.quick else 1.0
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        log("bench.py needs root (kernel overlay mounts, drop_caches)")
        return 2
    if psutil is None:
        log("bench.py needs psutil (pip install psutil)")
        return 2
    started = time.time()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    sizes = make_sizes(args.full, args.scale)
    if args.quick and args.scale < 1:
        sizes["stat_depths"] = [1, 10, 100]

    factories = {"unionfs": lambda: Unionfs(args.python),
                 "unionfs-uring": lambda: Unionfs(args.python, name="unionfs-uring",
                                                  options=["-o", "uring"]),
                 "kernel": Kernel,
                 "fuse-overlayfs": FuseOverlayfs, "unionfs-fuse": UnionfsFuse}
    order = list(SYSTEM_ORDER)
    if args.baseline:
        factories["unionfs-base"] = lambda: Unionfs(args.python, os.path.abspath(args.baseline),
                                                    "unionfs-base")
        order.insert(1, "unionfs-base")
        args.systems.insert(1, "unionfs-base")
    systems, notes = [], []
    for name in order:
        if name not in args.systems:
            continue
        s = factories[name]()
        if s.available():
            systems.append(s)
        else:
            notes.append("%s skipped: %s" % (name, s.note))
            log("note: " + notes[-1])
    if not systems:
        log("no system can run")
        return 1
    if REFERENCE not in [s.name for s in systems]:
        notes.append("kernel overlayfs not run: no ratios")

    root = os.path.abspath(args.workdir)
    os.makedirs(root, exist_ok=True)
    fx = Fixtures(root)
    cases = build_cases(fx, sizes, set(args.workloads))
    runner = Runner(args, systems, root)
    runner.cleanup_stale()

    total = len(cases) * args.reps * len(systems)
    log("%d runs: %d cases x %d reps x %d systems (%s)" % (
        total, len(cases), args.reps, len(systems), ", ".join(s.name for s in systems)))
    raw = {}
    k = 0
    t_bench = time.time()
    uring_before = None
    if "unionfs-uring" in [s.name for s in systems] and os.path.exists(URING_PARAM):
        with open(URING_PARAM) as f:
            uring_before = f.read().strip()
        with open(URING_PARAM, "w") as f:
            f.write("Y")
    try:
        for case in cases:
            for rep in range(args.reps):
                for s in systems:
                    k += 1
                    rec = case.run(runner, s, rep, stamp) if hasattr(case, "run") else \
                        runner.run_case(case, s, rep, stamp)
                    raw.setdefault((case.name, s.name), []).append(rec)
                    elapsed = time.time() - t_bench
                    phases = " ".join("%s=%.3fs" % (n, p["s"]) for n, p in rec["phases"].items())
                    log("[%d/%d %4.0fs, eta %4.0fs] %s rep %d %-14s %s%s" % (
                        k, total, elapsed, elapsed / k * (total - k), case.name, rep + 1, s.name,
                        phases, "  ERROR " + rec["error"] if rec["error"] else ""))
    except KeyboardInterrupt:
        log("interrupted: reporting what ran")
        notes.append("interrupted after %d of %d runs" % (k, total))
    finally:
        for case in cases:
            if hasattr(case, "close"):  # cases that keep state across runs (podman's stores)
                case.close()
        if uring_before is not None:
            with open(URING_PARAM, "w") as f:
                f.write(uring_before)

    rows, mismatches = summarize(cases, systems, raw)
    noisy = total_ph = 0
    for recs in raw.values():
        for r in recs:
            for p in r["phases"].values():
                total_ph += 1
                if p["s"] > 0.05 and p.get("bg_cpu_s", 0) > 0.25 * p["s"]:
                    noisy += 1
    if noisy:
        notes.append("%d of %d timed phases ran while other processes used more than a quarter "
                     "of a core (column 'bg CPU s', max over reps): their times are noisy"
                     % (noisy, total_ph))
    waited = sum(r.get("idle_waited_s", 0) for recs in raw.values() for r in recs)
    if waited > 1:
        notes.append("waited %.0fs in all for the machine to become idle" % waited)
    duration = time.time() - started
    growth = stat_growth(rows, sizes["stat_depths"]) if "stat" in args.workloads else {}

    versions = {s.name: s.version() for s in systems}
    meta = {"timestamp": stamp, "duration_s": round(duration, 1), "reps": args.reps,
            "sizes": sizes, "full": args.full, "scale": args.scale, "host": platform.node(),
            "kernel": platform.release(), "cpus": os.cpu_count(), "python": args.python,
            "versions": versions, "notes": notes, "workdir": root}

    lines = table_lines(rows)
    out = sys.stdout
    print("\nunionfs benchmark %s  (%d reps, %.0fs; sizes: %s)" % (
        stamp, args.reps, duration, ", ".join("%s=%s" % kv for kv in sizes.items())), file=out)
    for line in lines:
        print(line, file=out)
    if growth:
        lo, hi = min(sizes["stat_depths"]), max(sizes["stat_depths"])
        print("\nstat growth L%d/L%d: %s" % (hi, lo, ", ".join(
            "%s %.2fx" % (s, g) for s, g in growth.items())), file=out)
    extra = bench_workloads.summary_lines(rows)
    for line in extra:
        print(line, file=out)
    for m in mismatches:
        print("MISMATCH %s / %s: %s" % (m["case"], m["phase"], "; ".join(
            "%s -> %s" % (",".join(v), k) for k, v in m["variants"].items())), file=out)
    for n in notes:
        print("note: " + n, file=out)

    base = os.path.join(RESULTS_DIR, "results-" + stamp)
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows, "mismatches": mismatches, "stat_growth": growth,
                   "raw": {"%s|%s" % k: v for k, v in raw.items()}}, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write("# unionfs benchmark %s\n\n" % stamp)
        f.write("%d repetitions per system, alternating systems run by run; %.0f s in all. "
                "Kernel %s, %s CPUs.\n\n" % (args.reps, duration, platform.release(),
                                              os.cpu_count()))
        f.write("Sizes: %s\n\n" % ", ".join("`%s=%s`" % kv for kv in sizes.items()))
        f.write("Versions: %s\n\n" % "; ".join("%s: %s" % kv for kv in versions.items()))
        f.write("\n".join(table_lines(rows, md=True)) + "\n")
        if growth:
            f.write("\nstat growth L%d/L%d: %s\n" % (max(sizes["stat_depths"]),
                    min(sizes["stat_depths"]),
                    ", ".join("%s %.2fx" % kv for kv in growth.items())))
        if extra:
            f.write("\n" + "".join("    %s\n" % line for line in extra))
        for m in mismatches:
            f.write("\n**MISMATCH** %s / %s: %s\n" % (m["case"], m["phase"], "; ".join(
                "%s -> `%s`" % (",".join(v), k) for k, v in m["variants"].items())))
        for n in notes:
            f.write("\nnote: %s\n" % n)
    chart = None
    if not args.no_chart:
        chart = base + ".png"
        if draw_chart(rows, systems, chart, "unionfs benchmark %s (median of %d, ratio to "
                      "kernel overlayfs)" % (stamp, args.reps)):
            f_md = open(base + ".md", "a")
            f_md.write("\n![ratio to kernel](%s)\n" % os.path.basename(chart))
            f_md.close()
        else:
            chart = None
    log("wrote %s.json, %s.md%s (%.0fs)" % (base, base, ", " + chart if chart else "", duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
