"""Pull and push against a real registry (Debian's docker-registry on 127.0.0.1, temp storage):
anonymous, htpasswd basic auth and token auth; skopeo pushes the reference images, podman pulls
what unionfs pushed. No test leaves loopback."""
import hashlib
import io
import json
import os
import shutil
import subprocess

import pytest
import requests

from tests import registryutil as ru
from tests.mountutil import ENV, UNIONFS, requires_fuse, snapshot, unmount
from unionfs.image import pull as pullmod
from unionfs.image import push as pushmod
from unionfs.image.store import Store

pytestmark = [ru.needs_registry, ru.needs_skopeo]

BASE = [{"etc": None, "etc/a": b"a\n", "etc/b": b"b\n", "bin": None, "bin/sh": b"#!sh\n",
         "usr": None, "usr/share": None, "usr/share/doc": None, "usr/share/doc/x": b"doc\n"},
        {"etc": None, "etc/.wh.a": b"", "etc/c": b"c1\n", "lib": None, "lib/link": ("symlink", "../etc/c")}]


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    base = tmp_path_factory.mktemp("registry")
    r = ru.Registry(str(base / "anon"))
    try:
        r.layout = str(base / "layout")
        r.info = ru.oci_layout(r.layout, BASE, tag="1")
        ru.skopeo_push(r.layout, "1", r.host + "/base/img:1")
        yield r
    finally:
        r.stop()


@pytest.fixture
def env(tmp_path):
    """An environment whose credential and registries.conf files are the test's own."""
    conf = tmp_path / "registries.conf"
    conf.write_text("")
    return dict(ENV, REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"),
                DOCKER_CONFIG=str(tmp_path / "docker"), XDG_RUNTIME_DIR=str(tmp_path / "run"),
                CONTAINERS_REGISTRIES_CONF=str(conf), HOME=str(tmp_path / "home"),
                CONTAINERS_REGISTRIES_CONF_DIR=str(tmp_path / "registries.conf.d"))


def push_lines(monkeypatch, env, store, image, dest, **kw):
    """Push in this process (with env's credential files) and return docker's progress lines."""
    for k in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_RUNTIME_DIR", "CONTAINERS_REGISTRIES_CONF",
              "CONTAINERS_REGISTRIES_CONF_DIR", "HOME"):
        monkeypatch.setenv(k, env[k])
    lines = []
    pushmod.push(Store(store), image, dest, tls_verify=False, say=lines.append, **kw)
    return lines


def uf(env, *args, ok=True, input=None):
    r = subprocess.run(UNIONFS + [str(a) for a in args], env=env, capture_output=True, text=True,
                       timeout=60, input=input)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    else:
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r


def pull(env, store, ref, *more, ok=True):
    return uf(env, "image", "pull", "--tls-verify=false", "--store", store, ref, *more, ok=ok)


def layer_roots(store, image_id):
    cfg = json.load(open(os.path.join(store, "images", image_id[7:], "config.json")))
    return [os.path.join(store, "layers", d[7:], "root") for d in cfg["rootfs"]["diff_ids"]]


def test_pull_stores_packed_layers_that_unpack_to_what_import_stores(reg, env, tmp_path):
    """A pull stores each layer as its blob; the first use unpacks it into exactly the tree
    an import builds; `pull --unpack` builds them at once."""
    a, b, c = (str(tmp_path / n) for n in ("pulled", "imported", "pulled-unpacked"))
    r = pull(env, a, reg.host + "/base/img:1")
    assert r.stdout.strip() == reg.info["config"]
    assert r.stderr == ""                 # quiet when stderr is not a terminal
    store = Store(a)
    for diff_id, blob in zip(reg.info["diff_ids"], reg.info["blobs"]):
        assert store.layer_packed(diff_id)
        assert sorted(os.listdir(store.layer_dir(diff_id))) == ["blob", "meta.json"]
        with open(store.layer_blob(diff_id), "rb") as f:
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == blob
    uf(env, "image", "import", reg.layout, "--store", b)
    pull(env, c, reg.host + "/base/img:1", "--unpack")
    assert not any(Store(c).layer_packed(d) for d in reg.info["diff_ids"])
    store.image(reg.info["config"]).lower_dirs()          # the first use
    for d in reg.info["diff_ids"]:
        assert not store.layer_packed(d)
        assert sorted(os.listdir(store.layer_dir(d))) == ["layer.tar", "meta.json", "root"]
    for la, lb, lc in zip(layer_roots(a, reg.info["config"]), layer_roots(b, reg.info["config"]),
                          layer_roots(c, reg.info["config"])):
        sa, sb, sc = (snapshot(x, with_times=True) for x in (la, lb, lc))
        sa.pop("."), sb.pop("."), sc.pop(".")   # the layer root itself is made at import time
        assert sa == sb == sc and len(sa) > 3
    for d in reg.info["diff_ids"]:
        ma, mb = Store(a).layer_meta(d), Store(b).layer_meta(d)
        for k in ("size", "tar_size", "entries", "owners", "compression", "blob_digest"):
            assert ma[k] == mb[k], k
    assert json.load(open(os.path.join(a, "repositories.json"))) == {
        reg.host + "/base/img:1": reg.info["config"]}
    ls = uf(env, "image", "ls", "--store", a).stdout
    assert reg.host + "/base/img" in ls
    assert os.listdir(os.path.join(a, "registry", "downloads")) == []
    assert os.listdir(os.path.join(a, "registry", "work")) == []


def test_progress_in_dockers_words_and_a_second_pull_fetches_no_layer(reg, tmp_path):
    ru.skopeo_push(reg.layout, "1", reg.host + "/again/img:1")
    store = Store(str(tmp_path / "s"))
    out = io.StringIO()
    board = pullmod.Board(out, enabled=True)
    image_id, tag, digest = pullmod.pull(store, reg.host + "/again/img:1", tls_verify=False,
                                         board=board)
    text = out.getvalue()
    assert sorted(board.lines) == sorted(d[7:19] for d in reg.info["blobs"])
    assert set(board.lines.values()) == {"Pull complete"}
    for words in ("1: Pulling from again/img", "Pulling fs layer", "Download complete",
                  "Pull complete", "Digest: " + reg.info["manifest"],
                  "Status: Downloaded newer image for " + tag):
        assert words in text
    assert image_id == reg.info["config"]
    # the layer blobs leave the repository: a second pull must not need them
    for d in reg.info["blobs"]:
        requests.delete("http://%s/v2/again/img/blobs/%s" % (reg.host, d)).raise_for_status()
        assert requests.head("http://%s/v2/again/img/blobs/%s" % (reg.host, d)).status_code == 404
    out = io.StringIO()
    board = pullmod.Board(out, enabled=True)
    assert pullmod.pull(store, reg.host + "/again/img:1", tls_verify=False, board=board)[0] == image_id
    text = out.getvalue()
    assert set(board.lines.values()) == {"Already exists"} and "Downloading" not in text
    assert "Image is up to date for " + tag in text


def test_pull_by_digest_pins_the_manifest(reg, env, tmp_path):
    store = str(tmp_path / "s")
    ref = "%s/base/img@%s" % (reg.host, reg.info["manifest"])
    assert pull(env, store, ref).stdout.strip() == reg.info["config"]
    assert json.load(open(os.path.join(store, "repositories.json"))) == {}   # no tag: by digest
    r = pull(env, store, "%s/base/img@sha256:%s" % (reg.host, "0" * 64), ok=False)
    assert "MANIFEST_UNKNOWN" in r.stderr


def test_index_gives_the_platform_asked_for(reg, env, tmp_path, monkeypatch):
    lay = str(tmp_path / "lay")
    infos = ru.oci_index_layout(lay, {"linux/amd64": [{"which": b"amd64"}],
                                      "linux/arm64": [{"which": b"arm64"}]}, tag="m")
    ru.skopeo_push(lay, "m", reg.host + "/multi/img:m")
    store = str(tmp_path / "s")
    ref = reg.host + "/multi/img:m"
    assert pull(env, store, ref, "--platform", "linux/arm64").stdout.strip() == infos["linux/arm64"]["config"]
    monkeypatch.setattr("unionfs.image.archive.host_platform",
                        lambda: __import__("unionfs.image.archive", fromlist=["x"]).Platform("linux", "amd64"))
    out = io.StringIO()
    image_id, _, top = pullmod.pull(Store(store), ref, tls_verify=False,
                                    board=pullmod.Board(out, enabled=True))
    assert image_id == infos["linux/amd64"]["config"]
    assert top == infos["index"] and "Digest: " + infos["index"] in out.getvalue()
    r = pull(env, store, ref, "--platform", "linux/s390x", ok=False)
    assert "no image for linux/s390x (available: linux/amd64, linux/arm64)" in r.stderr
    insp = json.loads(uf(env, "image", "inspect", "--remote", "--tls-verify=false", "--platform",
                         "linux/arm64", ref).stdout)[0]
    assert insp["Id"] == infos["linux/arm64"]["config"] and insp["Digest"] == infos["index"]


def test_errors_are_one_line(reg, env, tmp_path):
    store = str(tmp_path / "s")
    assert "MANIFEST_UNKNOWN" in pull(env, store, reg.host + "/base/img:nope", ok=False).stderr
    assert "NAME_UNKNOWN" in uf(env, "image", "tags", "--tls-verify=false", reg.host + "/no/such",
                                ok=False).stderr
    assert "invalid image reference" in pull(env, store, reg.host + "/Bad/Name", ok=False).stderr
    assert "no image for linux/s390x (the image is linux/amd64)" in pull(
        env, store, reg.host + "/base/img:1", "--platform", "linux/s390x", ok=False).stderr
    # https to a plain-HTTP registry: said at once (TLS errors are not retried)
    r = uf(env, "image", "tags", reg.host + "/base/img", ok=False)
    assert "needs --tls-verify=false" in r.stderr


def _registry_blob(reg, digest):
    hexd = digest[7:]
    return os.path.join(reg.base, "storage", "docker", "registry", "v2", "blobs", "sha256",
                        hexd[:2], hexd, "data")


def test_corrupt_blob_registers_nothing(reg, env, tmp_path):
    lay = str(tmp_path / "lay")
    info = ru.oci_layout(lay, [{"f": b"corrupt me " * 100}], tag="1")
    ru.skopeo_push(lay, "1", reg.host + "/bad/img:1")
    path = _registry_blob(reg, info["blobs"][0])
    data = bytearray(open(path, "rb").read())
    data[-12] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)
    store = str(tmp_path / "s")
    r = pull(env, store, reg.host + "/bad/img:1", ok=False)
    assert "digest mismatch" in r.stderr and info["blobs"][0] in r.stderr
    assert uf(env, "image", "ls", "-q", "--store", store).stdout == ""
    assert not os.path.isdir(os.path.join(store, "layers")) \
        or os.listdir(os.path.join(store, "layers")) == []
    assert os.listdir(os.path.join(store, "registry", "downloads")) == []


def test_interrupted_download_resumes_with_range(reg, env, tmp_path):
    lay = str(tmp_path / "lay")
    big = os.urandom(300000)
    info = ru.oci_layout(lay, [{"big": big}], tag="1")
    ru.skopeo_push(lay, "1", reg.host + "/resume/img:1")
    blob = open(os.path.join(lay, "blobs", "sha256", info["blobs"][0][7:]), "rb").read()
    store = str(tmp_path / "s")
    dl = os.path.join(store, "registry", "downloads")
    os.makedirs(dl)
    part = os.path.join(dl, info["blobs"][0][7:] + ".part")
    # a partial file that is not the blob's prefix: only a resumed (Range) download uses it,
    # and its digest cannot match; the bad partial is dropped
    with open(part, "wb") as f:
        f.write(b"\0" * 1000)
    assert "digest mismatch" in pull(env, store, reg.host + "/resume/img:1", ok=False).stderr
    assert not os.path.exists(part)
    with open(part, "wb") as f:
        f.write(blob[:len(blob) // 2])
    assert pull(env, store, reg.host + "/resume/img:1").stdout.strip() == info["config"]
    with open(Store(store).layer_blob(info["diff_ids"][0]), "rb") as f:
        assert f.read() == blob               # packed: the blob as the registry has it
    Store(store).image(info["config"]).lower_dirs()
    with open(os.path.join(store, "layers", info["diff_ids"][0][7:], "root", "big"), "rb") as f:
        assert f.read() == big
    # a whole blob left as .part (killed before the rename): verified, no download needed
    store2 = str(tmp_path / "s2")
    os.makedirs(os.path.join(store2, "registry", "downloads"))
    with open(os.path.join(store2, "registry", "downloads", info["blobs"][0][7:] + ".part"), "wb") as f:
        f.write(blob)
    requests.delete("http://%s/v2/resume/img/blobs/%s" % (reg.host, info["blobs"][0])).raise_for_status()
    assert pull(env, store2, reg.host + "/resume/img:1").stdout.strip() == info["config"]


class SlowRegistry:
    """Serves one OCI layout's manifest and config at once and its layer blobs slowly (16 kB
    every 50 ms), so a pull can be interrupted mid-download."""

    def __init__(self, layout, tag):
        import http.server
        import threading
        blobs = os.path.join(layout, "blobs", "sha256")
        index = json.load(open(os.path.join(layout, "index.json")))
        mdesc = index["manifests"][0]

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path
                if path == "/v2/":
                    body, ctype, slow = b"{}", "application/json", False
                elif path.endswith("/manifests/" + tag) or path.endswith(mdesc["digest"]) \
                        and "/manifests/" in path:
                    body = open(os.path.join(blobs, mdesc["digest"][7:]), "rb").read()
                    ctype, slow = mdesc["mediaType"], False
                elif "/blobs/sha256:" in path:
                    body = open(os.path.join(blobs, path.rsplit(":", 1)[1]), "rb").read()
                    ctype, slow = "application/octet-stream", len(body) > 4096
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    step = 16384 if slow else len(body)
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        if slow:
                            time.sleep(0.05)
                except OSError:
                    pass

        import time
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.host = "127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_sigterm_mid_download_registers_nothing_and_the_next_pull_resumes(reg, env, tmp_path):
    import signal
    import time
    lay = str(tmp_path / "lay")
    info = ru.oci_layout(lay, [{"big": os.urandom(1 << 20)}, {"small": b"s"}], tag="1")
    slow = SlowRegistry(lay, "1")
    store = str(tmp_path / "s")
    part = os.path.join(store, "registry", "downloads", info["blobs"][0][7:] + ".part")
    try:
        p = subprocess.Popen(UNIONFS + ["image", "pull", "--tls-verify=false", "--store", store,
                                        slow.host + "/slow/img:1"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while not (os.path.exists(part) and os.path.getsize(part) > 100000):
                assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() else ""
                time.sleep(0.02)
            p.send_signal(signal.SIGTERM)
            t = time.monotonic()
            out, err = p.communicate(timeout=10)
            assert time.monotonic() - t < 3        # no waiting for the downloads to finish
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 130 and out == "" and "Traceback" not in err, err
    finally:
        slow.close()
    have = os.path.getsize(part)
    assert 100000 < have < info_size(lay, info["blobs"][0])
    assert not os.path.exists(os.path.join(store, "images")) or os.listdir(os.path.join(store, "images")) == []
    # the same blobs from the real registry: the download resumes from what is on disk
    ru.skopeo_push(lay, "1", reg.host + "/slow/img:1")
    assert pull(env, store, reg.host + "/slow/img:1").stdout.strip() == info["config"]
    assert not os.path.exists(part)


def test_two_pulls_of_one_image_at_once_both_succeed(env, tmp_path):
    lay = str(tmp_path / "lay")
    info = ru.oci_layout(lay, [{"big": os.urandom(400000)}, {"other": os.urandom(300000)}], tag="1")
    slow = SlowRegistry(lay, "1")
    store = str(tmp_path / "s")
    try:
        procs = [subprocess.Popen(UNIONFS + ["image", "pull", "--tls-verify=false", "--store", store,
                                             slow.host + "/slow/img:1"], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        try:
            results = [p.communicate(timeout=60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    finally:
        slow.close()
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and out.strip() == info["config"], err
    assert os.listdir(os.path.join(store, "registry", "downloads")) == []


def info_size(lay, digest):
    return os.path.getsize(os.path.join(lay, "blobs", "sha256", digest[7:]))


def test_push_v2s2_chunked_and_pull_back(reg, env, tmp_path, monkeypatch):
    lay = str(tmp_path / "lay")
    info = ru.oci_layout(lay, [{"rnd": os.urandom(200000)}, {"small": b"s"}], tag="1")
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    uf(env, "image", "import", lay, "-t", "local/thing:1", "--store", src)
    r = uf(env, "image", "push", "--tls-verify=false", "--format", "v2s2", "--chunk-size", "65536",
           "--store", src, "local/thing:1", reg.host + "/pushed/thing:2")
    digest = r.stdout.strip()
    assert digest.startswith("sha256:") and r.stderr == ""
    m = requests.get("http://%s/v2/pushed/thing/manifests/2" % reg.host, headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert m.headers["Docker-Content-Digest"] == digest
    assert m.json()["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    insp = json.loads(uf(env, "image", "inspect", "--remote", "--tls-verify=false",
                         reg.host + "/pushed/thing:2").stdout)[0]
    assert insp["Id"] == info["config"] and insp["DiffIDs"] == info["diff_ids"]
    assert insp["Digest"] == digest
    assert pull(env, dst, reg.host + "/pushed/thing:2").stdout.strip() == info["config"]
    # pushed again, elsewhere in the registry: nothing is uploaded, the layers are linked
    lines = push_lines(monkeypatch, env, src, "local/thing:1", reg.host + "/copy/thing:1")
    assert sum("Mounted from pushed/thing" in x for x in lines) == 2, lines
    assert not any("Pushed" in x for x in lines)
    lines = push_lines(monkeypatch, env, src, "local/thing:1", reg.host + "/copy/thing:1")
    assert sum("Layer already exists" in x for x in lines) == 2, lines
    assert requests.get("http://%s/v2/copy/thing/manifests/1" % reg.host, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"}).json()["mediaType"] \
        == "application/vnd.oci.image.manifest.v1+json"


def test_tags_and_catalog(reg, env):
    ru.skopeo_push(reg.layout, "1", reg.host + "/base/img:other")
    tags = uf(env, "image", "tags", "--tls-verify=false", reg.host + "/base/img").stdout.split()
    assert sorted(tags) == ["1", "other"]
    assert "base/img" in uf(env, "image", "catalog", "--tls-verify=false", reg.host).stdout.split()


def test_registries_conf_marks_the_registry_insecure(reg, env, tmp_path):
    with open(env["CONTAINERS_REGISTRIES_CONF"], "w") as f:
        f.write('[[registry]]\nlocation = "%s"\ninsecure = true\n' % reg.host)
    r = uf(env, "image", "pull", "--store", str(tmp_path / "s"), reg.host + "/base/img:1")
    assert r.stdout.strip() == reg.info["config"]


def test_pull_through_a_registries_conf_mirror(reg, env, tmp_path):
    # the registry named is a closed port: only the mirror can serve the pull
    with open(env["CONTAINERS_REGISTRIES_CONF"], "w") as f:
        f.write('[[registry]]\nlocation = "127.0.0.1:9/team"\n[[registry.mirror]]\n'
                'location = "%s/base"\ninsecure = true\n' % reg.host)
    store = str(tmp_path / "s")
    r = uf(env, "image", "pull", "--store", store, "127.0.0.1:9/team/img:1")
    assert r.stdout.strip() == reg.info["config"]
    assert json.load(open(os.path.join(store, "repositories.json"))) == {
        "127.0.0.1:9/team/img:1": reg.info["config"]}
    with open(env["CONTAINERS_REGISTRIES_CONF"], "a") as f:
        f.write("[[registry]]\nlocation = \"127.0.0.1:9/other\"\nmirror-by-digest-only = true\n"
                "[[registry.mirror]]\nlocation = \"%s/base\"\ninsecure = true\n" % reg.host)
    r = uf(env, "image", "pull", "--tls-verify=false", "--store", store,
           "127.0.0.1:9/other/img@" + reg.info["manifest"])
    assert r.stdout.strip() == reg.info["config"]


@requires_fuse
@pytest.mark.fuse
def test_image_mount_pulls_what_is_missing(reg, env, tmp_path):
    store, mnt = str(tmp_path / "s"), str(tmp_path / "mnt")
    os.makedirs(mnt)
    try:
        uf(env, "image", "mount", "--tls-verify=false", "--store", store, reg.host + "/base/img:1", mnt)
        assert sorted(os.listdir(os.path.join(mnt, "etc"))) == ["b", "c"]
        assert os.readlink(os.path.join(mnt, "lib", "link")) == "../etc/c"
    finally:
        unmount(mnt)


# ---- packed layers: unpacked at first use -----------------------------------------------------

@requires_fuse
def test_first_mount_unpacks_and_a_lying_config_fails_there_in_one_line(reg, env, tmp_path):
    """A pull checks blob digests; a layer's DiffID is checked when it is unpacked. An image
    whose config names the wrong DiffID pulls, then its first mount fails in one line and
    leaves the layer packed and nothing mounted; `pull --unpack` of it registers nothing."""
    lay = str(tmp_path / "lay")
    good = ru.oci_layout(str(tmp_path / "good"), [{"f": b"x\n"}], tag="1")
    info = ru.oci_layout(lay, [{"f": b"x\n"}, {"g": b"y\n"}], tag="1", config_extra={
        "rootfs": {"type": "layers", "diff_ids": [good["diff_ids"][0], "sha256:" + "ab" * 32]}})
    ru.skopeo_push(lay, "1", reg.host + "/liar/img:1")
    store, mnt = str(tmp_path / "s"), str(tmp_path / "mnt")
    os.makedirs(mnt)
    assert pull(env, store, reg.host + "/liar/img:1").stdout.strip() == info["config"]
    bad = "sha256:" + "ab" * 32
    try:
        r = uf(env, "image", "mount", "--store", store, reg.host + "/liar/img:1", mnt, ok=False)
        assert "DiffID mismatch" in r.stderr and bad in r.stderr
        assert os.listdir(mnt) == [] and not os.path.ismount(mnt)
    finally:
        unmount(mnt)
    s = Store(store)
    assert s.layer_packed(bad) and sorted(os.listdir(s.layer_dir(bad))) == ["blob", "meta.json"]
    assert os.listdir(s.path("registry", "work")) == []
    r = pull(env, str(tmp_path / "s2"), reg.host + "/liar/img:1", "--unpack", ok=False)
    assert "DiffID mismatch" in r.stderr
    assert uf(env, "image", "ls", "-q", "--store", str(tmp_path / "s2")).stdout == ""


def test_pull_unpack_checks_a_layer_an_earlier_pull_left_packed_before_registering(reg, env,
                                                                                  tmp_path):
    """`pull --unpack` registers an image only when every layer has matched its DiffID, also
    a layer the store already had, packed, from an earlier pull of another image."""
    bad = "sha256:" + "cd" * 32
    one = ru.oci_layout(str(tmp_path / "one"), [{"f": b"x\n"}], tag="1",
                        config_extra={"rootfs": {"type": "layers", "diff_ids": [bad]}})
    two = ru.oci_layout(str(tmp_path / "two"), [{"f": b"x\n"}], tag="1", config_extra={
        "rootfs": {"type": "layers", "diff_ids": [bad]}, "config": {"Cmd": ["/bin/other"]}})
    assert one["config"] != two["config"] and one["blobs"] == two["blobs"]
    ru.skopeo_push(str(tmp_path / "one"), "1", reg.host + "/shared1/img:1")
    ru.skopeo_push(str(tmp_path / "two"), "1", reg.host + "/shared2/img:1")
    store = str(tmp_path / "s")
    pull(env, store, reg.host + "/shared1/img:1")
    assert Store(store).layer_packed(bad)
    r = pull(env, store, reg.host + "/shared2/img:1", "--unpack", ok=False)
    assert "DiffID mismatch" in r.stderr
    assert uf(env, "image", "ls", "-q", "--no-trunc", "--store", store).stdout.split() == [one["config"]]


def test_two_first_uses_at_once_unpack_each_layer_once(reg, tmp_path, monkeypatch):
    """A second first use waits on the first's flock and finds the layer unpacked."""
    import threading

    from unionfs.image import unpack as unpackmod
    store = Store(str(tmp_path / "s"))
    pullmod.pull(store, reg.host + "/base/img:1", tls_verify=False, quiet=True)
    real, built, gate = unpackmod.fetch_layer, [], threading.Event()

    def fetch_layer(lref, diff_id, *a, **kw):
        built.append(diff_id)
        gate.wait(30)             # both callers are in before any layer is swapped in
        return real(lref, diff_id, *a, **kw)
    monkeypatch.setattr(unpackmod, "fetch_layer", fetch_layer)
    got = []
    threads = [threading.Thread(target=lambda: got.append(unpackmod.unpack(store, reg.info["diff_ids"])))
               for _ in range(2)]
    for t in threads:
        t.start()
    while len(built) < len(reg.info["diff_ids"]):
        threading.Event().wait(0.01)
    gate.set()
    for t in threads:
        t.join(60)
    assert sorted(built) == sorted(reg.info["diff_ids"])           # each built once
    assert sorted(d for g in got for d in g) == sorted(reg.info["diff_ids"])
    assert not any(store.layer_packed(d) for d in reg.info["diff_ids"])
    assert os.listdir(store.path("registry", "work")) == []


def test_a_failed_unpack_leaves_the_layer_packed_and_the_next_one_unpacks(reg, tmp_path,
                                                                       monkeypatch):
    from unionfs.image import extract, unpack as unpackmod
    from unionfs.image.errors import ImageError
    store = Store(str(tmp_path / "s"))
    pullmod.pull(store, reg.host + "/base/img:1", tls_verify=False, quiet=True)
    real = extract.extract_tar

    def dies(tar, root, what=None):
        real(tar, root, what=what)
        raise ImageError("injected: the disk filled up")
    monkeypatch.setattr(extract, "extract_tar", dies)
    with pytest.raises(ImageError, match="injected"):
        unpackmod.unpack(store, reg.info["diff_ids"], jobs=1)
    assert all(store.layer_packed(d) for d in reg.info["diff_ids"])
    assert os.listdir(store.path("registry", "work")) == []
    monkeypatch.setattr(extract, "extract_tar", real)
    assert unpackmod.unpack(store, reg.info["diff_ids"]) == reg.info["diff_ids"]
    assert sorted(os.listdir(store.layer_root(reg.info["diff_ids"][0]))) == ["bin", "etc", "usr"]


def test_without_rename_exchange_the_layer_still_swaps_in_whole(reg, tmp_path, monkeypatch):
    """On a filesystem without RENAME_EXCHANGE the tree and tar move in beside the blob and
    meta.json's rename ends the packed state; stale ones a crash left are replaced."""
    import errno

    from unionfs.core import sysutil
    from unionfs.image import unpack as unpackmod
    store = Store(str(tmp_path / "s"))
    pullmod.pull(store, reg.host + "/base/img:1", tls_verify=False, quiet=True)

    def no_exchange(src, dst, flags):
        raise OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(sysutil, "renameat2", no_exchange)
    top = reg.info["diff_ids"][1]
    os.makedirs(os.path.join(store.layer_dir(top), "root", "stale"))   # a crashed swap's
    assert unpackmod.unpack(store, reg.info["diff_ids"]) == reg.info["diff_ids"]
    for d in reg.info["diff_ids"]:
        assert sorted(os.listdir(store.layer_dir(d))) == ["layer.tar", "meta.json", "root"]
    assert sorted(os.listdir(store.layer_root(top))) == ["etc", "lib"]
    assert os.listdir(store.path("registry", "work")) == []


def test_push_of_a_packed_layer_sends_the_pulled_blob_and_save_unpacks(reg, env, tmp_path,
                                                                      monkeypatch):
    """A packed gzip layer goes up as the blob it was pulled as, without being unpacked; a
    save, which writes layer tars, unpacks first."""
    store = str(tmp_path / "s")
    pull(env, store, reg.host + "/base/img:1")
    os.unlink(os.path.join(store, "registry", "blobs.json"))   # no known blobs: no reuse
    lines = push_lines(monkeypatch, env, store, reg.host + "/base/img:1", reg.host + "/copy/img:1")
    assert sum(": Pushed" in x for x in lines) == 2, lines
    m = requests.get("http://%s/v2/copy/img/manifests/1" % reg.host, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert [ld["digest"] for ld in m["layers"]] == reg.info["blobs"]
    assert all(Store(store).layer_packed(d) for d in reg.info["diff_ids"])
    out = str(tmp_path / "img.tar")
    uf(env, "image", "save", "--store", store, "-o", out, reg.host + "/base/img:1")
    assert not any(Store(store).layer_packed(d) for d in reg.info["diff_ids"])
    uf(env, "image", "import", out, "--store", str(tmp_path / "s2"))
    for la, lb in zip(layer_roots(store, reg.info["config"]),
                      layer_roots(str(tmp_path / "s2"), reg.info["config"])):
        assert snapshot(la) == snapshot(lb)


# ---- authentication ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def basic_reg(tmp_path_factory, reg):
    base = tmp_path_factory.mktemp("basic")
    r = ru.Registry(str(base), htpasswd={"alice": "s3cret"})
    try:
        ru.skopeo_push(reg.layout, "1", r.host + "/base/img:1", creds=("alice", "s3cret"))
        yield r
    finally:
        r.stop()


def test_basic_auth_login_pull_push_logout(basic_reg, reg, env, tmp_path):
    store = str(tmp_path / "s")
    ref = basic_reg.host + "/base/img:1"
    assert "unauthorized" in pull(env, store, ref, ok=False).stderr
    r = uf(env, "login", "--tls-verify=false", "-u", "alice", "--password-stdin", basic_reg.host,
           input="wrong\n", ok=False)
    assert "unauthorized" in r.stderr and not os.path.exists(env["REGISTRY_AUTH_FILE"])
    uf(env, "login", "--tls-verify=false", "-u", "alice", "--password-stdin", basic_reg.host,
       input="s3cret\n")
    auths = json.load(open(env["REGISTRY_AUTH_FILE"]))["auths"]
    assert list(auths) == [basic_reg.host]
    assert pull(env, store, ref).stdout.strip() == reg.info["config"]
    uf(env, "image", "push", "--tls-verify=false", "--store", store, ref, basic_reg.host + "/mine/img:1")
    uf(env, "logout", basic_reg.host)
    assert json.load(open(env["REGISTRY_AUTH_FILE"]))["auths"] == {}
    assert "unauthorized" in uf(env, "image", "tags", "--tls-verify=false", basic_reg.host + "/mine/img",
                                ok=False).stderr
    # the credentials docker wrote are read as well
    os.makedirs(env["DOCKER_CONFIG"])
    with open(os.path.join(env["DOCKER_CONFIG"], "config.json"), "w") as f:
        json.dump({"auths": {basic_reg.host: {"auth": "YWxpY2U6czNjcmV0"}}}, f)
    assert uf(env, "image", "tags", "--tls-verify=false", basic_reg.host + "/mine/img").stdout.split() == ["1"]


def test_credential_helper_login_pull_logout(basic_reg, reg, env, tmp_path):
    """docker's credsStore: login stores through docker-credential-test, pulls get from it,
    logout erases; a failing helper is one line."""
    helper = ru.CredentialHelper(tmp_path / "bin", "test")
    env = dict(env, PATH=str(tmp_path / "bin") + os.pathsep + env["PATH"])
    config = os.path.join(env["DOCKER_CONFIG"], "config.json")
    os.makedirs(env["DOCKER_CONFIG"])
    with open(config, "w") as f:
        json.dump({"credsStore": "test"}, f)
    store, ref = str(tmp_path / "s"), basic_reg.host + "/base/img:1"
    assert "unauthorized" in pull(env, store, ref, ok=False).stderr    # the helper has none
    uf(env, "login", "--tls-verify=false", "-u", "alice", "--password-stdin", basic_reg.host,
       input="s3cret\n")
    assert helper.creds() == {basic_reg.host: ["alice", "s3cret"]}
    assert json.load(open(config)) == {"credsStore": "test", "auths": {basic_reg.host: {}}}
    assert not os.path.exists(env["REGISTRY_AUTH_FILE"])
    assert pull(env, store, ref).stdout.strip() == reg.info["config"]
    helper.broken()
    r = uf(env, "image", "tags", "--tls-verify=false", basic_reg.host + "/base/img", ok=False)
    assert "credential helper docker-credential-test get failed: the keyring is locked" in r.stderr
    helper.broken(False)
    uf(env, "logout", basic_reg.host)
    assert helper.creds() == {} and json.load(open(config))["auths"] == {}
    assert "unauthorized" in uf(env, "image", "tags", "--tls-verify=false",
                                basic_reg.host + "/base/img", ok=False).stderr
    assert [c[0] for c in helper.calls()].count("erase") == 1


@pytest.fixture(scope="module")
def token_reg(tmp_path_factory, reg):
    if ru.OPENSSL is None:
        pytest.skip("openssl is needed to sign the test token server's tokens")
    base = tmp_path_factory.mktemp("token")
    ts = ru.TokenServer(str(base), {"bob": "pw"}, anonymous_pull=True)
    try:
        r = ru.Registry(str(base), token=ts)
        try:
            r.tokens = ts
            ru.skopeo_push(reg.layout, "1", r.host + "/base/img:1", creds=("bob", "pw"))
            yield r
        finally:
            r.stop()
    finally:
        ts.stop()


def test_token_auth_anonymous_pull_and_authenticated_push(token_reg, reg, env, tmp_path,
                                                          monkeypatch):
    store = str(tmp_path / "s")
    ref = token_reg.host + "/base/img:1"
    assert pull(env, store, ref).stdout.strip() == reg.info["config"]
    assert (None, ["repository:base/img:pull"]) in token_reg.tokens.requests
    r = uf(env, "image", "push", "--tls-verify=false", "--store", store, ref,
           token_reg.host + "/bob/img:1", ok=False)
    assert "unauthorized" in r.stderr or "denied" in r.stderr
    uf(env, "login", "--tls-verify=false", "-u", "bob", "--password-stdin", token_reg.host, input="pw\n")
    lines = push_lines(monkeypatch, env, store, ref, token_reg.host + "/bob/img:1")
    assert sum("Mounted from base/img" in x for x in lines) == 2, lines
    assert ("bob", ["repository:bob/img:pull,push", "repository:base/img:pull"]) \
        in token_reg.tokens.requests


# ---- the whole round trip, read back by podman ------------------------------------------------

@requires_fuse
@pytest.mark.fuse
@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="podman tests run podman as root")
def test_pull_mount_change_commit_push_then_podman_pull(reg, env, tmp_path):
    from tests.integration.test_image_podman import Podman
    store, mnt = str(tmp_path / "s"), str(tmp_path / "mnt")
    os.makedirs(mnt)
    pull(env, store, reg.host + "/base/img:1")
    try:
        upper = uf(env, "image", "mount", "--rw", "--store", store, reg.host + "/base/img:1",
                   mnt).stdout.strip()
        with open(os.path.join(mnt, "etc", "new"), "w") as f:
            f.write("changed\n")
        os.unlink(os.path.join(mnt, "etc", "b"))
        with open(os.path.join(mnt, "usr", "share", "doc", "x"), "a") as f:
            f.write("more\n")
    finally:
        unmount(mnt)
    new_id = uf(env, "commit", "--store", store, upper, "local/changed:1").stdout.strip()
    digest = uf(env, "image", "push", "--tls-verify=false", "--store", store, "local/changed:1",
                reg.host + "/app/changed:1").stdout.strip()
    pm = Podman(str(tmp_path / "podman"))
    try:
        r = pm("pull", "--tls-verify=false", reg.host + "/app/changed:1", check=False)
        if r.returncode != 0 and "storage" in r.stderr:
            pytest.skip("podman cannot work here: %s" % r.stderr.strip().splitlines()[-1:])
        assert r.returncode == 0, r.stderr
        assert pm("inspect", "--format", "{{.Id}}", reg.host + "/app/changed:1").stdout.strip() \
            == new_id[7:]
        assert pm("inspect", "--format", "{{.Digest}}", reg.host + "/app/changed:1").stdout.strip() \
            == digest
        tree = pm.export(reg.host + "/app/changed:1", str(tmp_path / "exported"))
        assert sorted(os.listdir(os.path.join(tree, "etc"))) == ["c", "new"]
        assert open(os.path.join(tree, "etc", "new")).read() == "changed\n"
        assert open(os.path.join(tree, "usr", "share", "doc", "x")).read() == "doc\nmore\n"
        assert os.readlink(os.path.join(tree, "lib", "link")) == "../etc/c"
    finally:
        shutil.rmtree(pm.runbase, ignore_errors=True)


def test_short_name_through_the_unqualified_search_registries(reg, env, tmp_path):
    """podman's short-name resolution: the first search registry lacks the name (NAME_UNKNOWN),
    the second is the real registry; enforcing mode with two candidates is a one-line error."""
    import http.server
    import threading

    class Unknown(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}'
            self.send_response(404 if self.path != "/v2/" else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    empty = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unknown)
    threading.Thread(target=empty.serve_forever, args=(0.05,), daemon=True).start()
    try:
        other = "127.0.0.1:%d" % empty.server_address[1]
        conf = 'unqualified-search-registries = ["%s", "%s"]\n' % (other, reg.host)
        insecure = "".join('[[registry]]\nlocation = "%s"\ninsecure = true\n' % h
                           for h in (other, reg.host))
        with open(env["CONTAINERS_REGISTRIES_CONF"], "w") as f:
            f.write(conf + 'short-name-mode = "permissive"\n' + insecure)
        store = str(tmp_path / "s")
        r = uf(env, "image", "pull", "--store", store, "base/img:1")
        assert r.stdout.strip() == reg.info["config"]
        assert json.load(open(os.path.join(store, "repositories.json"))) == {
            reg.host + "/base/img:1": reg.info["config"]}
        with open(env["CONTAINERS_REGISTRIES_CONF"], "w") as f:
            f.write(conf + insecure)           # short-name-mode unset: enforcing
        r = uf(env, "image", "pull", "--store", str(tmp_path / "s2"), "base/img:1", ok=False)
        assert "%s/base/img:1, %s/base/img:1" % (other, reg.host) in r.stderr
        assert not os.path.exists(os.path.join(str(tmp_path / "s2"), "repositories.json"))
    finally:
        empty.shutdown()
        empty.server_close()


def test_a_layer_is_built_while_the_next_downloads_and_outside_the_store_lock(reg, tmp_path,
                                                                           monkeypatch):
    """`pull --unpack` pipelines: the first layer's blob is extracted while the second is still
    being downloaded (one download at a time here), and the store lock is free meanwhile."""
    import fcntl
    import threading

    from unionfs.image import registry as regmod
    ru.skopeo_push(reg.layout, "1", reg.host + "/pipe/img:1")
    store = Store(str(tmp_path / "s"))
    built, events = threading.Event(), []
    real_fetch, real_download = pullmod.fetch_layer, regmod.Client.download_blob

    def fetch_layer(lref, diff_id, dest, *a, **kw):
        fd = os.open(store.path("lock"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # BlockingIOError if held
        finally:
            os.close(fd)
        events.append(("build", lref.blob_digest))
        built.set()
        return real_fetch(lref, diff_id, dest, *a, **kw)

    def download_blob(self, repo, digest, *a, **kw):
        if digest == reg.info["blobs"][1]:
            events.append(("waited", built.wait(30)))
        events.append(("download", digest))
        return real_download(self, repo, digest, *a, **kw)

    monkeypatch.setattr(pullmod, "fetch_layer", fetch_layer)
    monkeypatch.setattr(regmod.Client, "download_blob", download_blob)
    image_id, _, _ = pullmod.pull(store, reg.host + "/pipe/img:1", tls_verify=False, quiet=True,
                                  jobs=1, unpack=True)
    assert image_id == reg.info["config"]
    first, second = reg.info["blobs"][:2]
    assert events[:4] == [("download", first), ("build", first), ("waited", True),
                          ("download", second)]
    assert all(store.has_layer(d) for d in reg.info["diff_ids"])
    assert os.listdir(store.path("registry", "work")) == []


def test_a_blob_left_by_an_earlier_pull_is_verified_again(reg, env, tmp_path):
    """A blob this pull did not download itself (STORE/registry/downloads, from an interrupted
    pull) is hashed again before its layer is built: a changed one registers nothing."""
    store = str(tmp_path / "s")
    dl = os.path.join(store, "registry", "downloads")
    os.makedirs(dl)
    blob = reg.info["blobs"][0]
    with open(os.path.join(reg.layout, "blobs", "sha256", blob[7:]), "rb") as f:
        data = bytearray(f.read())
    data[-12] ^= 0xFF
    with open(os.path.join(dl, blob[7:]), "wb") as f:
        f.write(data)
    r = pull(env, store, reg.host + "/base/img:1", ok=False)
    assert "blob digest mismatch" in r.stderr and blob in r.stderr
    assert uf(env, "image", "ls", "-q", "--store", store).stdout == ""
    assert os.listdir(os.path.join(store, "registry", "work")) == []


def test_an_alias_from_a_drop_in_pulls_and_wins_over_the_search_registries(reg, env, tmp_path,
                                                                          monkeypatch):
    """registries.conf.d/*.conf [aliases]: the short name is the alias's repository, though two
    search registries (closed ports, enforcing mode) would make it an error."""
    with open(env["CONTAINERS_REGISTRIES_CONF"], "w") as f:
        f.write('unqualified-search-registries = ["127.0.0.1:9", "127.0.0.2:9"]\n'
                '[[registry]]\nlocation = "%s"\ninsecure = true\n' % reg.host)
    os.makedirs(env["CONTAINERS_REGISTRIES_CONF_DIR"])
    with open(os.path.join(env["CONTAINERS_REGISTRIES_CONF_DIR"], "50-test.conf"), "w") as f:
        f.write('[aliases]\n"mybase" = "%s/base/img"\n' % reg.host)
    for k in ("CONTAINERS_REGISTRIES_CONF", "CONTAINERS_REGISTRIES_CONF_DIR", "HOME",
              "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(k, env[k])
    store = Store(str(tmp_path / "s"))
    image_id, tag, _ = pullmod.pull(store, "mybase:1", quiet=True)
    assert image_id == reg.info["config"] and tag == reg.host + "/base/img:1"
    assert json.load(open(os.path.join(store.root, "repositories.json"))) == {
        reg.host + "/base/img:1": reg.info["config"]}


def _upload_sessions(reg, repo):
    """Open upload sessions: a cancelled one (DELETE) keeps its directory but loses its data."""
    d = os.path.join(reg.base, "storage", "docker", "registry", "v2", "repositories", repo, "_uploads")
    return [u for u in (os.listdir(d) if os.path.isdir(d) else [])
            if os.path.exists(os.path.join(d, u, "data"))]


def test_push_of_many_layers_at_once_round_trips(reg, env, tmp_path, monkeypatch):
    """Six layers, uploaded three at once in chunks. A failed chunk ends the push with its one
    line, no manifest and no upload session left open in the registry; pushed again, the image
    pulls back the same."""
    from unionfs.image import registry as regmod
    lay = str(tmp_path / "lay")
    layers = [{"l%d" % i: os.urandom(100000 + 20000 * i)} for i in range(6)]
    info = ru.oci_layout(lay, layers, tag="1")
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    uf(env, "image", "import", lay, "-t", "local/many:1", "--store", src)
    real, patches = regmod.Client.request, []

    def request(self, method, path, *a, **kw):
        if method == "PATCH":
            patches.append(path)
            if len(patches) == 4:
                raise regmod.RegistryError("injected: the fourth chunk failed")
        return real(self, method, path, *a, **kw)
    monkeypatch.setattr(regmod.Client, "request", request)
    with pytest.raises(regmod.RegistryError, match="^injected: the fourth chunk failed$"):
        push_lines(monkeypatch, env, src, "local/many:1", reg.host + "/many/img:1",
                   chunk_size=65536)
    assert _upload_sessions(reg, "many/img") == []
    assert requests.get("http://%s/v2/many/img/manifests/1" % reg.host).status_code == 404
    monkeypatch.setattr(regmod.Client, "request", real)
    lines = push_lines(monkeypatch, env, src, "local/many:1", reg.host + "/many/img:1",
                       chunk_size=65536)
    assert sum(": Pushed" in x or "already exists" in x for x in lines) == 6, lines
    assert pull(env, dst, reg.host + "/many/img:1", "--unpack").stdout.strip() == info["config"]
    for d, files in zip(info["diff_ids"], layers):
        (name, data), = files.items()
        with open(os.path.join(dst, "layers", d[7:], "root", name), "rb") as f:
            assert f.read() == data
