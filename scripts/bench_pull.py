#!/usr/bin/env python3
"""Pull speed: ``unionfs image pull`` against ``skopeo copy docker://... oci:...`` and
``podman pull`` of the same image from a local registry (Debian's docker-registry on 127.0.0.1,
temp storage), in the same run. The image: LAYERS layers, SIZE_MB in all, half of each layer
incompressible and half text-like, in files of 64-512 kB.

A pull (default) does what skopeo does: download, verify and store the blobs; its layers are
unpacked at their first use (unionfs/image/unpack.py). Also timed: ``image pull --unpack``, which
also decompresses, checks DiffIDs and extracts every layer, as podman does (into vfs storage);
the first use of the pulled image (``pull --unpack`` of it again: manifest, config and the
unpacking of every layer); a second pull of the stored image (manifest and config only);
``image import`` of the same blobs from disk; and the floor under an unpacking pull of ours:
building the layers (importer.fetch_layer: hash, gunzip, check, write layer.tar, extract) from
blobs on disk, timed inside one process, serially and three at a time in threads as pull does.

``--baseline DIR`` also times ``image pull`` of another checkout of unionfs (e.g. ``git archive
main``) in the same run. The pulls and skopeo take turns going first, run by run; every run
prints its unionfs/skopeo ratios, as the machine is shared and single runs are noisy.

    scripts/bench_pull.py [--layers 10] [--size-mb 200] [--runs 3] [--baseline DIR]
"""
import argparse
import compileall
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests import registryutil as ru  # noqa: E402

UNIONFS = [sys.executable, "-m", "unionfs"]

FLOOR = r"""
import concurrent.futures, json, os, sys, tempfile, time
from unionfs.image import archive, importer
from unionfs.image.progress import Progress
lay, scratch, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
blobs = os.path.join(lay, "blobs", "sha256")
def load(d):
    with open(os.path.join(blobs, d[7:])) as f:
        return json.load(f)
with open(os.path.join(lay, "index.json")) as f:
    man = load(json.load(f)["manifests"][0]["digest"])
diff_ids = load(man["config"]["digest"])["rootfs"]["diff_ids"]
src = archive.DirSource(blobs)
def one(a):
    ld, d = a
    lref = archive.LayerRef(src, ld["digest"][7:], blob_digest=ld["digest"], size=ld["size"])
    importer.fetch_layer(lref, d, os.path.join(scratch, d[7:]), "bench", Progress())
t = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
    list(ex.map(one, zip(man["layers"], diff_ids)))
print(time.monotonic() - t)
"""


def floor(lay, scratch, jobs, env):
    os.makedirs(scratch)
    try:
        r = subprocess.run([sys.executable, "-c", FLOOR, lay, scratch, str(jobs)], env=env,
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise SystemExit("floor failed: %s" % r.stderr.strip()[-400:])
        return float(r.stdout.split()[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def layer_files(i, nbytes, rnd):
    files = {"l%d" % i: None}
    done = 0
    n = 0
    words = [("w%d " % k).encode() for k in range(5000)]
    while done < nbytes:
        size = min(rnd.randint(64, 512) * 1024, nbytes - done)
        if n % 2:
            data = rnd.randbytes(size)
        else:
            data = b"".join(rnd.choice(words) for _ in range(size // 5 + 1))[:size]
        files["l%d/f%05d" % (i, n)] = data
        done += size
        n += 1
    return files


CPU = {}   # command label -> [CPU seconds (user + system) of each run]


def _cpu():
    ru_ = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru_.ru_utime + ru_.ru_stime


def timed(cmd, env=None, label=None, cwd=None):
    """Wall seconds of cmd; its CPU seconds go to CPU[label]: on a shared machine the wall time
    of a parallel pull depends on how many cores the others leave free, its CPU time less so."""
    t, c = time.monotonic(), _cpu()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, cwd=cwd)
    if r.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(cmd[:4]), r.stderr.strip()[-400:]))
    if label:
        CPU.setdefault(label, []).append(_cpu() - c)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", metavar="DIR", help="another unionfs checkout to time beside this one")
    ap.add_argument("--no-podman", action="store_true")
    a = ap.parse_args()
    if ru.REGISTRY is None or ru.SKOPEO is None:
        raise SystemExit("bench_pull: needs docker-registry and skopeo (make deps)")
    base = tempfile.mkdtemp(prefix="bench-pull-", dir="/var/tmp")
    reg = None
    try:
        rnd = random.Random(4)
        per = a.size_mb * 1000 * 1000 // a.layers
        print("building %d layers, %d MB ..." % (a.layers, a.size_mb), flush=True)
        lay = os.path.join(base, "layout")
        ru.oci_layout(lay, [layer_files(i, per, rnd) for i in range(a.layers)], tag="1")
        blobs = sum(os.path.getsize(os.path.join(lay, "blobs", "sha256", f))
                    for f in os.listdir(os.path.join(lay, "blobs", "sha256")))
        reg = ru.Registry(os.path.join(base, "registry"))
        ref = reg.host + "/bench/img:1"
        ru.skopeo_push(lay, "1", ref)
        print("registry %s, %.0f MB of blobs (compressed)" % (reg.host, blobs / 1e6), flush=True)
        # an installed package has its bytecode; an editable checkout run with
        # PYTHONDONTWRITEBYTECODE=1 (as this machine's shells are) compiles every module it
        # imports on every run: ~40 ms of a pull's ~350 here. Compiled once, as installed.
        for d in [REPO] + ([a.baseline] if a.baseline else []):
            compileall.compile_dir(os.path.join(d, "unionfs"), quiet=1)
        env = dict(os.environ, PYTHONPATH=REPO)
        # each version runs from its own checkout: `python -m` puts the working directory on
        # sys.path ahead of PYTHONPATH
        base_env = dict(os.environ, PYTHONPATH=os.path.abspath(a.baseline)) if a.baseline else None
        results = {"unionfs image pull": [], "baseline image pull": [],
                   "skopeo copy (oci:)": [], "podman pull (vfs)": [],
                   "unionfs image pull --unpack": [],
                   "unionfs pull, layers stored": [], "first use: unpack pulled layers": [], "unionfs image import (no network)": [],
                   "floor: build layers, 1 thread": [], "floor: build layers, 3 threads": []}
        podman = shutil.which("podman") and os.geteuid() == 0 and not a.no_podman
        for run in range(a.runs):
            d = os.path.join(base, "run%d" % run)
            os.makedirs(d)
            store = os.path.join(d, "store")
            # the contenders, their order rotated each run: none always meets a colder cache
            # or a busier moment than the others
            contenders = [("unionfs image pull", UNIONFS + ["image", "pull", "-q", "--tls-verify=false",
                                                       "--store", store, ref], env),
                     ("skopeo copy (oci:)", [ru.SKOPEO, "copy", "-q", "--src-tls-verify=false",
                                             "docker://" + ref, "oci:%s:1" % os.path.join(d, "oci")],
                      None),
                     ("unionfs image pull --unpack", UNIONFS + [
                         "image", "pull", "-q", "--unpack", "--tls-verify=false", "--store",
                         os.path.join(d, "store-unpacked"), ref], env)]
            if base_env:
                contenders.append(("baseline image pull", UNIONFS + [
                    "image", "pull", "-q", "--tls-verify=false", "--store",
                    os.path.join(d, "store-base"), ref], base_env))
            k = run % len(contenders)
            for name, cmd, e in contenders[k:] + contenders[:k]:
                results[name].append(timed(cmd, e, label=name, cwd=(
                    os.path.abspath(a.baseline) if name == "baseline image pull" else None)))
            results["unionfs pull, layers stored"].append(timed(
                UNIONFS + ["image", "pull", "-q", "--tls-verify=false", "--store", store, ref], env))
            results["first use: unpack pulled layers"].append(timed(
                UNIONFS + ["image", "pull", "-q", "--unpack", "--tls-verify=false", "--store", store,
                           ref], env))
            results["unionfs image import (no network)"].append(timed(
                UNIONFS + ["image", "import", "-q", "--store", os.path.join(d, "store2"), lay], env,
                label="unionfs image import (no network)"))
            for jobs in (1, 3):
                results["floor: build layers, %d thread%s" % (jobs, "s" if jobs > 1 else "")].append(
                    floor(lay, os.path.join(d, "floor%d" % jobs), jobs, env))
            sk_run = results["skopeo copy (oci:)"][-1]
            print("run %d: unionfs pull %.2f s (%.2fx skopeo %.2f s)%s" % (
                run + 1, results["unionfs image pull"][-1], results["unionfs image pull"][-1] / sk_run,
                sk_run, "; baseline %.2f s (%.2fx)" % (
                    results["baseline image pull"][-1], results["baseline image pull"][-1] / sk_run)
                if base_env else ""), flush=True)
            if podman:
                from tests.integration.test_image_podman import Podman
                pm = Podman(os.path.join(d, "podman"))
                try:
                    t = time.monotonic()
                    pm("pull", "-q", "--tls-verify=false", ref, timeout=1800)
                    results["podman pull (vfs)"].append(time.monotonic() - t)
                finally:
                    shutil.rmtree(pm.runbase, ignore_errors=True)
            shutil.rmtree(d, ignore_errors=True)
        sk = statistics.median(results["skopeo copy (oci:)"])
        print("\n%-34s %10s %10s %10s" % ("", "median s", "vs skopeo", "CPU s"))
        for k, v in results.items():
            if v:
                m = statistics.median(v)
                cpu = ("%10.2f" % statistics.median(CPU[k])) if k in CPU else ""
                print("%-34s %10.2f %9.2fx %s" % (k, m, m / sk, cpu))
        if not podman:
            print("(podman skipped: %s)" % ("--no-podman" if a.no_podman else "needs podman and root"))
    finally:
        if reg is not None:
            reg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
