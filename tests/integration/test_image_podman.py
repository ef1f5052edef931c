"""Interoperability with podman (skipped where podman is not installed): images podman built and
saved import and mount to exactly what ``podman export`` gives; what ``image save`` writes,
``podman load`` accepts with the same image id and tag, also after a commit."""
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from tests.mountutil import REPO, load_script, requires_fuse, run_unionfs, snapshot, unmount

PODMAN = shutil.which("podman")
pytestmark = [requires_fuse, pytest.mark.fuse,
              pytest.mark.skipif(PODMAN is None, reason="podman is not installed"),
              pytest.mark.skipif(os.geteuid() != 0, reason="podman tests run podman as root")]

# the containers.conf that works on this kind of host (mounts/podman/containers.conf)
with open(os.path.join(REPO, "mounts", "podman", "containers.conf")) as _f:
    CONF = _f.read()
CONTAINERFILE = """\
FROM localhost/base:1
RUN echo hello > /etc/greeting && ln /etc/greeting /etc/greeting-hl && rm -rf /usr/lib/oldpkg \
 && rm -rf /opt/legacy/* && echo n > /opt/legacy/new && chmod 4755 /bin/busybox
RUN rm /etc/app.conf && mv /usr/share/doc /usr/share/doc2 && mkdir -p /srv/a/b && echo x > /srv/a/b/c
LABEL org.example.test=podman
CMD ["/bin/sh"]
"""


class Podman:
    def __init__(self, base):
        self.base = base
        os.makedirs(base, exist_ok=True)
        conf = os.path.join(base, "containers.conf")
        with open(conf, "w") as f:
            f.write(CONF)
        self.env = dict(os.environ, CONTAINERS_CONF=conf)
        # podman refuses a runroot longer than 50 characters: keep those under a short /tmp dir
        self.runbase = tempfile.mkdtemp(prefix="ufpm-", dir="/tmp")

    def __call__(self, *args, root="root", check=True, timeout=90):
        cmd = [PODMAN, "--root", os.path.join(self.base, root), "--runroot",
               os.path.join(self.runbase, root), "--storage-driver", "vfs"] + list(args)
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s failed: %s" % (" ".join(args), r.stderr.strip()))
        return r

    def export(self, image, dest, root="root"):
        cid = self("create", image, root=root).stdout.strip()
        try:
            tarp = dest + ".tar"
            self("export", cid, "-o", tarp, root=root)
        finally:
            self("rm", cid, root=root, check=False)
        os.makedirs(dest)
        subprocess.run(["tar", "-C", dest, "--xattrs", "--xattrs-include=*", "--numeric-owner",
                        "-xpf", tarp], check=True)
        return dest


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("podman"))
    pm = Podman(base)
    rootfs = os.path.join(base, "rootfs")
    load_script("build_rootfs").build_rootfs(rootfs)
    with tarfile.open(os.path.join(base, "rootfs.tar"), "w") as t:
        t.add(rootfs, arcname=".")
    r = pm("import", os.path.join(base, "rootfs.tar"), "localhost/base:1", check=False)
    if r.returncode != 0:
        pytest.skip("podman cannot work here: %s" % r.stderr.strip().splitlines()[-1:])
    with open(os.path.join(base, "Containerfile"), "w") as f:
        f.write(CONTAINERFILE)
    pm("build", "-q", "-t", "localhost/built:1", base, timeout=120)
    pm.docker = os.path.join(base, "built-docker.tar")
    pm.oci = os.path.join(base, "built-oci.tar")
    pm("save", "-o", pm.docker, "localhost/built:1")
    pm("save", "--format", "oci-archive", "-o", pm.oci, "localhost/built:1")
    pm.image_id = pm("inspect", "--format", "{{.Id}}", "localhost/built:1").stdout.strip()
    pm.exported = pm.export("localhost/built:1", os.path.join(base, "exported"))
    try:
        yield pm
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(pm.runbase, ignore_errors=True)


def uf(store, *args):
    r = run_unionfs(*(list(args) + ["--store", store]))
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def same_tree(a, b):
    sa, sb = snapshot(a, with_times=True), snapshot(b, with_times=True)
    sa.pop("."), sb.pop(".")
    for snap in (sa, sb):  # podman applies layer mtimes to the second, whatever PAX records say
        for rec in snap.values():
            rec["mtime_ns"] //= 10**9
    diffs = {k: (sa.get(k), sb.get(k)) for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)}
    assert not diffs, "\n".join("%s: %r != %r" % (k, v[0], v[1]) for k, v in sorted(diffs.items()))


@pytest.mark.parametrize("which", ["docker", "oci"])
def test_podman_archive_mounts_like_podman_export(podman, tmp_path, which):
    store = str(tmp_path / "store")
    r = uf(store, "image", "import", podman.docker if which == "docker" else podman.oci)
    assert "localhost/built:1" in r.stdout and podman.image_id in r.stdout
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    try:
        uf(store, "image", "mount", "built:1", mnt)
        same_tree(mnt, podman.exported)
    finally:
        unmount(mnt)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_podman_loads_compressed_saves(podman, tmp_path, kind):
    store = str(tmp_path / "store")
    uf(store, "image", "import", podman.oci)
    out = str(tmp_path / "ours.tar")
    uf(store, "image", "save", "built:1", "-o", out, "--format", "oci", "--compress", kind)
    r = podman("load", "-i", out, root="load-" + kind)
    assert "localhost/built:1" in r.stdout
    assert podman("inspect", "--format", "{{.Id}}", "localhost/built:1",
                  root="load-" + kind).stdout.strip() == podman.image_id


def test_podman_loads_what_we_save_and_commit(podman, tmp_path):
    store = str(tmp_path / "store")
    uf(store, "image", "import", podman.oci)
    for fmt in ("docker", "oci"):
        out = str(tmp_path / ("ours-%s.tar" % fmt))
        uf(store, "image", "save", "built:1", "-o", out, "--format", fmt)
        r = podman("load", "-i", out, root="load-" + fmt)
        assert "localhost/built:1" in r.stdout
        assert podman("inspect", "--format", "{{.Id}}", "localhost/built:1",
                      root="load-" + fmt).stdout.strip() == podman.image_id
    # a change committed here, loaded by podman, exported: the tree our mount shows
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    try:
        uf(store, "image", "mount", "built:1", mnt, "--rw")
        with open(os.path.join(mnt, "etc/greeting"), "w") as f:
            f.write("changed\n")
        os.rename(os.path.join(mnt, "srv/a"), os.path.join(mnt, "srv/z"))
        os.remove(os.path.join(mnt, "etc/passwd"))
        os.makedirs(os.path.join(mnt, "usr/share/doc2/new"))
        uf(store, "commit", mnt, "localhost/committed:2", "-m", "test")
        uf(store, "image", "umount", mnt)
        uf(store, "image", "mount", "committed:2", mnt)
        out = str(tmp_path / "committed.tar")
        uf(store, "image", "save", "committed:2", "-o", out)
        podman("load", "-i", out, root="load-commit")
        exported = podman.export("localhost/committed:2", str(tmp_path / "exp"), root="load-commit")
        same_tree(mnt, exported)
        assert not os.path.exists(os.path.join(exported, "srv/a"))
        assert open(os.path.join(exported, "srv/z/b/c")).read() == "x\n"
    finally:
        unmount(mnt)
