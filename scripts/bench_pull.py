#!/usr/bin/env python3
"""Pull speed: ``unionfs image pull`` against ``skopeo copy docker://... oci:...`` and
``podman pull`` of the same image from a local registry (Debian's docker-registry on 127.0.0.1,
temp storage), in the same run. The image: LAYERS layers, SIZE_MB in all, half of each layer
incompressible and half text-like, in files of 64-512 kB.

unionfs does more than skopeo (it also decompresses, checks DiffIDs and extracts every layer);
podman does what unionfs does (into vfs storage). Also measured: a second pull of the stored
image (manifest and config only), and ``image import`` of the same blobs from disk (the part of
a pull that is not the network).

    scripts/bench_pull.py [--layers 10] [--size-mb 200] [--runs 2]
"""
import argparse
import os
import random
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


def timed(cmd, env=None):
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(cmd[:4]), r.stderr.strip()[-400:]))
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=2)
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
        env = dict(os.environ, PYTHONPATH=REPO)
        results = {"unionfs image pull": [], "skopeo copy (oci:)": [], "podman pull (vfs)": [],
                   "unionfs pull, layers stored": [], "unionfs image import (no network)": []}
        podman = shutil.which("podman") and os.geteuid() == 0 and not a.no_podman
        for run in range(a.runs):
            d = os.path.join(base, "run%d" % run)
            os.makedirs(d)
            store = os.path.join(d, "store")
            results["unionfs image pull"].append(timed(
                UNIONFS + ["image", "pull", "-q", "--tls-verify=false", "--store", store, ref], env))
            results["unionfs pull, layers stored"].append(timed(
                UNIONFS + ["image", "pull", "-q", "--tls-verify=false", "--store", store, ref], env))
            results["unionfs image import (no network)"].append(timed(
                UNIONFS + ["image", "import", "-q", "--store", os.path.join(d, "store2"), lay], env))
            results["skopeo copy (oci:)"].append(timed(
                [ru.SKOPEO, "copy", "-q", "--src-tls-verify=false", "docker://" + ref,
                 "oci:%s:1" % os.path.join(d, "oci")]))
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
        print("\n%-30s %10s %14s" % ("", "median s", "vs skopeo"))
        for k, v in results.items():
            if v:
                m = statistics.median(v)
                print("%-34s %10.2f %13.2fx" % (k, m, m / sk))
        if not podman:
            print("(podman skipped: %s)" % ("--no-podman" if a.no_podman else "needs podman and root"))
    finally:
        if reg is not None:
            reg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
