"""image push against a fake registry client that records what runs at once: the layer uploads
overlap, the config and the manifest come after every layer, and one failed upload stops the
others and is the error reported."""
import itertools
import threading

import pytest

from tests.mountutil import load_script
from unionfs.image import push as pushmod
from unionfs.image.errors import ImageError
from unionfs.image.importer import import_archive
from unionfs.image.store import Store

fx = load_script("build_image_fixtures")
WAIT = 30    # a deadlock guard only: nothing is timed


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "s"))
    layers = [fx.layer_tar([fx.E("f%d" % i, data=b"%d" % i * 1000)]) for i in range(5)]
    import_archive(s, fx.docker_archive(str(tmp_path / "in.tar"), [
        fx.Img(layers, "gzip", tags=["localhost/many:1"])], "x"))
    return s


class FakeClient:
    """Has no blob; upload_blob(path) runs `on_upload`; records the order of events."""

    def __init__(self, on_upload):
        self.on_upload, self.events, self.lock = on_upload, [], threading.Lock()
        self.running = self.most = 0

    def _log(self, *e):
        with self.lock:
            self.events.append(e)

    def blob_exists(self, repo, digest):
        return False

    def mount_blob(self, repo, digest, from_repo):
        return False

    def upload_blob(self, repo, digest, path, chunk_size, progress=None):
        if path.endswith("config.json"):
            self._log("config", self.running)
            return
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self._log("start", digest)
        try:
            self.on_upload(digest, progress)
        finally:
            with self.lock:
                self.running -= 1
        self._log("end", digest)

    def put_manifest(self, repo, tag, data, media_type):
        self._log("manifest", self.running)
        return "sha256:" + "0" * 64


def test_layer_uploads_overlap_and_the_config_and_manifest_come_last(store):
    three = threading.Barrier(3, timeout=WAIT)    # passes only when three uploads run at once
    first_three = []

    def upload(digest, progress):
        progress(0, 1)
        if len(first_three) < 3:
            first_three.append(digest)
            three.wait()
    client = FakeClient(upload)
    pushmod.push(store, "localhost/many:1", "reg.example/many:1", client=client,
                 say=lambda line: None, jobs=3)
    assert client.most == 3 and len(first_three) == 3
    kinds = [e[0] for e in client.events]
    assert kinds.count("start") == kinds.count("end") == 5
    assert kinds[-2:] == ["config", "manifest"] and client.events[-2:] == [("config", 0),
                                                                          ("manifest", 0)]


def test_one_failed_upload_stops_the_others_and_is_the_one_error(store):
    failed, stopped, count = threading.Event(), [], itertools.count()
    started = threading.Barrier(3, timeout=WAIT)

    def upload(digest, progress):
        n = next(count)
        if n < 3:
            started.wait()          # three uploads under way when the first fails
        if n == 0:
            failed.set()
            raise ImageError("upload of %s: DENIED: no" % digest)
        failed.wait(WAIT)
        for _ in range(10 * WAIT):  # the next chunks: progress raises once the push stops
            try:
                progress(1, 2)
            except pushmod._Stopped:
                stopped.append(digest)
                raise
            threading.Event().wait(0.1)
    client = FakeClient(upload)
    with pytest.raises(ImageError, match=r"^upload of sha256:\w+: DENIED: no$"):
        pushmod.push(store, "localhost/many:1", "reg.example/many:1", client=client,
                     say=lambda line: None, jobs=3)
    kinds = [e[0] for e in client.events]
    assert len(stopped) >= 2 and len(stopped) == kinds.count("start") - 1
    assert "end" not in kinds and "config" not in kinds and "manifest" not in kinds
