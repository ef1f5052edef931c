"""Real workloads for scripts/bench.py: a Debian root filesystem used through chroot, `podman
build` with each storage driver, and many clients at once on one mount (issue 15).

    python scripts/bench.py --workloads rootfs,podman,parallel [--quick] [--reps N]

bench.py calls register() with itself, so these cases use its fixtures, phases and runner:
- rootfs: a `debootstrap --variant=minbase` Debian tree (built once into the fixture cache, with
  a few small .deb files fetched by `apt-get download` into /var/cache/bench-debs inside it) is
  the lower; `dpkg -i` of those, `dpkg --verify`, `tar -cf - /usr` counted through a pipe and
  `find / -xdev`, each run in `chroot MNT`.
- podman: `podman build` of a small Containerfile (FROM that rootfs, imported once per store with
  `podman import`) in a private store per system: unionfs or fuse-overlayfs as the overlay
  driver's mount_program, or the kernel's overlay; then `podman run` of the result. Podman
  mounts its own layers, so this case brings its own run() instead of the runner's mount.
- parallel: 1, 2 and 4 concurrent `find` walks of the walk fixture (caches dropped before each)
  and 1, 2 and 4 concurrent untars, each into its own directory, on one mount; summary_lines()
  turns the medians into entries/s and the scaling against one client.
"""
import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

SUITE = "bookworm"
# small packages whose dependencies a minbase bookworm already has; file brings libmagic
DEBS = ("tree", "less", "file", "libmagic1", "libmagic-mgc")
DEB_DIR = "/var/cache/bench-debs"  # inside the rootfs
CLIENTS = (1, 2, 4)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def register(b, workloads):
    """Add this module's workloads to bench.py's table (b is the bench module itself)."""
    workloads["rootfs"] = lambda fx, S: _cases_rootfs(b, fx, S)
    workloads["podman"] = lambda fx, S: _cases_podman(b, fx, S)
    workloads["parallel"] = lambda fx, S: _cases_parallel(b, fx, S)


# ---------------------------------------------------------------------------------------------
# the Debian rootfs fixture

def rootfs_fixture(b, fx):
    """(rootfs dir, info): minbase bookworm plus DEBS as .deb files under DEB_DIR, built once."""
    def build(d):
        if not b.apt_install("debootstrap", "/usr/sbin/debootstrap"):
            raise RuntimeError("debootstrap is not installed and apt-get install failed")
        root = os.path.join(d, "rootfs")
        b.log("  debootstrap --variant=minbase %s (a few minutes, once)" % SUITE)
        b.run(["debootstrap", "--variant=minbase", SUITE, root], timeout=1800)
        debs = root + DEB_DIR
        os.makedirs(debs)
        # apt-get download as root warns that _apt cannot write here; the files still come
        b.run(["apt-get", "download", "-q"] + list(DEBS), cwd=debs, timeout=600)
        names = sorted(os.listdir(debs))
        if len(names) != len(DEBS):
            raise RuntimeError("apt-get download gave %s for %s" % (names, DEBS))
        figs = b.tree_figures(root)
        return {"rootfs": "rootfs", "debs": names, "entries": figs["entries"]}
    d, info = fx._get("rootfs-%s-minbase" % SUITE, {"suite": SUITE, "debs": list(DEBS)}, build)
    return os.path.join(d, info["rootfs"]), info


BINDS = ("dev", "proc")  # the host's: a FUSE mount is nodev, so MNT/dev/null cannot be opened


def bind_host(b, ctx):
    for d in BINDS:
        b.run(["mount", "--bind", "/" + d, os.path.join(ctx.mnt, d)])


def unbind_host(b, ctx):
    """Undo bind_host, whatever it got to; never raises (the mount must still be unmounted)."""
    for d in reversed(BINDS):
        path = os.path.realpath(os.path.join(ctx.mnt, d))
        for cmd in (["umount", path], ["umount", "-l", path]):
            if path not in b.mounted_paths():
                break
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def chroot(b, mnt, script, **kw):
    return b.run(["chroot", mnt, "/bin/sh", "-c", script], timeout=1800, **kw)


def installed(b, mnt):
    """How many of DEBS dpkg says are installed (untimed check)."""
    p = chroot(b, mnt, "dpkg-query -W -f '${Status}\\n' %s" % " ".join(DEBS), check=False)
    return sum(line == b"install ok installed" for line in p.stdout.splitlines())


def _cases_rootfs(b, fx, S):
    root, info = rootfs_fixture(b, fx)

    def dpkg_install(ctx):
        chroot(b, ctx.mnt, "dpkg -i %s/*.deb" % DEB_DIR)

    def dpkg_verify(ctx):
        p = chroot(b, ctx.mnt, "dpkg --verify", check=False)
        ctx.state["fig"] = {"verify_rc": p.returncode,
                            "verify_problems": len(p.stdout.splitlines())}

    def tar_usr(ctx):
        # through a pipe: GNU tar does not read the files when the archive is /dev/null
        p = chroot(b, ctx.mnt, "tar -cf - /usr | wc -c")
        ctx.state["fig"] = {"tar_bytes": int(p.stdout)}

    def find_all(ctx):
        p = chroot(b, ctx.mnt, "find / -xdev | wc -l")
        ctx.state["fig"] = {"entries": int(p.stdout)}

    fig = lambda ctx: ctx.state.pop("fig")  # noqa: E731
    return [b.Case("rootfs", "rootfs: %s minbase, chroot" % SUITE, [root], [
        b.Phase("dpkg-i", dpkg_install, check=lambda ctx: {"installed": installed(b, ctx.mnt)},
                expect={"installed": len(DEBS)}),
        b.Phase("dpkg-verify", dpkg_verify, check=fig, expect={"verify_rc": 0}),
        b.Phase("tar-usr", tar_usr, check=fig),
        b.Phase("find", find_all, check=fig)],
        setup=lambda ctx: bind_host(b, ctx), teardown=lambda ctx: unbind_host(b, ctx))]


# ---------------------------------------------------------------------------------------------
# podman build, one private store per system

CONTAINERFILE = """\
FROM localhost/bench-base:1
RUN dpkg -i {debs}/*.deb && file /bin/sh && tree -d /etc > /dev/null
RUN dpkg --verify
RUN mkdir /opt/copy && tar -cf - /usr/share | tar -xf - -C /opt/copy \\
 && rm -rf /usr/share/doc /usr/share/man /var/cache/bench-debs
CMD ["/bin/sh"]
""".format(debs=DEB_DIR)


class Store:
    """A private podman store for one system: graph root under the bench's workdir, run root and
    engine tmp dir under /tmp (conmon's socket paths must stay short), both named by a
    storage.conf and a containers.conf in CONTAINERS_*_CONF (podman --root would drop the
    driver options, mount_program included)."""

    def __init__(self, b, base, name, mount_program):
        self.b, self.dir = b, os.path.join(base, name)
        b.rmtree(self.dir)
        os.makedirs(self.dir)
        self.run_dir = tempfile.mkdtemp(prefix="ufbench-", dir="/tmp")
        conf = os.path.join(self.dir, "storage.conf")
        with open(conf, "w") as f:
            f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n'
                    '[storage.options.overlay]\n' % (os.path.join(self.dir, "root"),
                                                      os.path.join(self.run_dir, "run")))
            if mount_program:
                f.write('mount_program = "%s"\n' % mount_program)
        engine = os.path.join(self.dir, "containers.conf")
        with open(os.path.join(REPO, "mounts", "podman", "containers.conf")) as src, \
                open(engine, "w") as f:
            f.write(src.read() + 'tmp_dir = "%s"\n' % os.path.join(self.run_dir, "tmp"))
        self.env = dict(os.environ, CONTAINERS_CONF=engine, CONTAINERS_STORAGE_CONF=conf)
        self.imported = False

    def __call__(self, *args, check=True, timeout=900):
        return self.b.run(["podman"] + list(args), check=check, env=self.env, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=self.dir)

    def close(self):
        """Remove containers and images, unmount what podman left, remove the store."""
        for args in (("rm", "-af", "-t", "0"), ("rmi", "-af")):
            try:
                self(*args, check=False, timeout=300)
            except subprocess.TimeoutExpired:
                pass
        for d in (self.dir, self.run_dir):
            prefix = os.path.realpath(d) + os.sep
            for mp in sorted(self.b.mounted_paths(), reverse=True):
                if (mp + os.sep).startswith(prefix):
                    subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            self.b.rmtree(d)


class PodmanCase:
    """`podman build` + `podman run` per storage driver: bench.py calls run() instead of mounting,
    and close() when the benchmark ends."""

    workload = "podman"
    lowers = ()
    prep = None
    warm = False

    def __init__(self, b, fx, root, info):
        self.b, self.root = b, root
        self.name = "podman build %s + %d debs" % (SUITE, len(DEBS))
        self.base = os.path.join(os.path.dirname(fx.root), "podman")
        self.stores = {}
        self.tar = os.path.join(os.path.dirname(root), "rootfs.tar")
        self.phases = [b.Phase("build", None, check=None, expect={"installed": len(DEBS)}),
                       b.Phase("run-find", None)]

    def _program(self, system):
        """The mount_program for a system (None: the kernel's overlay), or raise why none."""
        if system.name == "kernel":
            return None
        if system.name == "fuse-overlayfs":
            return system.bin
        if system.name.startswith("unionfs") and hasattr(system, "python"):
            # one executable, as mount_program must be: a script running this checkout
            path = os.path.join(self.base, "mount-program-" + system.name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\nPYTHONPATH=%s\nexport PYTHONPATH\nexec %s -m unionfs \"$@\"\n"
                        % (system.env["PYTHONPATH"], os.path.abspath(system.python)))
            os.chmod(path, 0o755)
            return path
        raise RuntimeError("n/a: %s cannot be podman's mount_program" % system.name)

    def _store(self, system):
        s = self.stores.get(system.name)
        if s is None:
            if shutil.which("podman") is None and not self.b.apt_install("podman",
                                                                         "/usr/bin/podman"):
                raise RuntimeError("podman is not installed and apt-get install failed")
            os.makedirs(self.base, exist_ok=True)
            program = self._program(system)
            s = self.stores[system.name] = Store(self.b, self.base, system.name, program)
            if not os.path.exists(self.tar):
                self.b.run(["tar", "-cf", self.tar + ".tmp", "-C", self.root, "."])
                os.rename(self.tar + ".tmp", self.tar)
            ctxdir = os.path.join(self.base, "context")
            os.makedirs(ctxdir, exist_ok=True)
            with open(os.path.join(ctxdir, "Containerfile"), "w") as f:
                f.write(CONTAINERFILE)
        if not s.imported:
            s("import", "-q", self.tar, "localhost/bench-base:1")
            s.imported = True
        return s

    def run(self, runner, system, rep, stamp):
        rec = {"phases": {}, "error": None, "loadavg1": os.getloadavg()[0]}
        b = self.b
        try:
            s = self._store(system)
            ctxdir = os.path.join(self.base, "context")
            b.drop_caches()
            t = time.perf_counter()
            s("build", "-q", "--no-cache", "--network", "none", "-t", "localhost/bench:1",
              "-f", os.path.join(ctxdir, "Containerfile"), ctxdir)
            dt = time.perf_counter() - t
            p = s("run", "--rm", "localhost/bench:1", "dpkg-query", "-W", "-f",
                  "${Status}\\n", *DEBS, check=False)
            ok = sum(l == b"install ok installed" for l in p.stdout.splitlines())
            rec["phases"]["build"] = {"s": dt, "cpu_s": None, "rss": None,
                                      "fig": {"installed": ok}}
            t = time.perf_counter()
            p = s("run", "--rm", "localhost/bench:1", "sh", "-c", "find / -xdev | wc -l")
            dt = time.perf_counter() - t
            rec["phases"]["run-find"] = {"s": dt, "cpu_s": None, "rss": None,
                                         "fig": {"entries": int(p.stdout)}}
        except Exception as e:  # noqa: BLE001 - one failing system must not stop the benchmark
            rec["error"] = "%s: %s" % (type(e).__name__, e)
            b.log("  ERROR %s %s: %s" % (system.name, self.name, rec["error"]))
        finally:
            s = self.stores.get(system.name)
            if s is not None:
                try:
                    s("rmi", "-f", "localhost/bench:1", check=False, timeout=300)
                    s("image", "prune", "-f", check=False, timeout=300)
                except subprocess.TimeoutExpired:
                    pass
        return rec

    def close(self):
        for s in self.stores.values():
            s.close()
        self.stores.clear()


def _cases_podman(b, fx, S):
    root, info = rootfs_fixture(b, fx)
    return [PodmanCase(b, fx, root, info)]


# ---------------------------------------------------------------------------------------------
# many clients at once on one mount

def concurrently(cmds):
    """Start every command at once and wait for all; [stdout bytes] in order. Each output is
    drained by its own thread so no client waits on a full pipe while another is read."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    outs = [None] * len(procs)

    def drain(i):
        outs[i] = procs[i].communicate()

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(procs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [(c, p.returncode, o[1]) for c, p, o in zip(cmds, procs, outs) if p.returncode]
    if bad:
        c, rc, err = bad[0]
        raise RuntimeError("%s failed (%d): %s" % (" ".join(c[:3]), rc,
                                                   err.decode(errors="replace")[-300:]))
    return [o[0] for o in outs]


def _cases_parallel(b, fx, S):
    lowers, info = fx.walk(S["walk_files"], S["walk_layers"])
    tarpath, tinfo = fx.tarball(S["tar_src"], S["tar_entries"])
    walk_entries = info["files"] + info["dirs"] + 1  # find prints the root too

    def walks(n):
        def fn(ctx):
            outs = concurrently([["find", ctx.mnt, "-printf", "%y\n"]] * n)
            ctx.state["fig"] = {"entries": sum(o.count(b"\n") for o in outs)}
        return fn

    def untars(n):
        def fn(ctx):
            dirs = [os.path.join(ctx.mnt, "u%d-%d" % (n, i)) for i in range(n)]
            for d in dirs:
                os.mkdir(d)
            concurrently([["tar", "-xf", tarpath, "-C", d] for d in dirs])
            ctx.state["fig"] = {"entries": sum(b.tree_figures(d)["entries"] for d in dirs)}
        return fn

    # one fresh mount per client count: the daemons' own caches would make a second walk warm
    fig = lambda ctx: ctx.state.pop("fig")  # noqa: E731
    return [b.Case("parallel", "parallel x%d find %d, untar %d" % (
        n, S["walk_files"], tinfo["entries"]), lowers, [
            b.Phase("find x%d" % n, walks(n), cold=True, check=fig,
                    expect={"entries": n * walk_entries}),
            b.Phase("untar x%d" % n, untars(n), check=fig,
                    expect={"entries": n * tinfo["entries"]})],
        warm=False, prep=lambda: b.warm_file(tarpath)) for n in CLIENTS]


def summary_lines(rows):
    """Throughput of the parallel case per system: entries/s with 1, 2 and 4 clients and the
    scaling against one client (figures are entries summed over the clients)."""
    per = {}
    for r in rows:
        if r["workload"] != "parallel" or not r["median_s"] or not r["figures"]:
            continue
        kind, n = r["phase"].split(" x")
        per.setdefault((kind, r["system"]), {})[int(n)] = r["figures"]["entries"] / r["median_s"]
    lines = []
    for (kind, system), rate in sorted(per.items()):
        one = rate.get(1)
        cells = ["%dx %.0f/s%s" % (n, rate[n], " (%.2fx)" % (rate[n] / one) if one and n > 1
                                   else "") for n in sorted(rate)]
        lines.append("parallel %-5s %-15s entries/s: %s" % (kind, system, ", ".join(cells)))
    return lines
