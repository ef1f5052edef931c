"""image save: archives that import back to the same image, layer for layer, tags included."""
import json
import os
import tarfile

import pytest

from unionfs.image.errors import ImageError
from unionfs.image.importer import import_archive
from unionfs.image.save import save
from unionfs.image.store import Store
from tests.mountutil import load_script



fx = load_script("build_image_fixtures")


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "a"))
    other = fx.Img([fx.layer_tar([fx.E("x", data=b"x")])], "gzip", tags=["docker.io/library/other:3"])
    import_archive(s, fx.docker_archive(str(tmp_path / "in.tar"),
                                        [fx.sample_image("gzip", devices=os.geteuid() == 0), other], "new"))
    return s


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_round_trip(store, tmp_path, fmt):
    out = str(tmp_path / ("out-%s.tar" % fmt))
    save(store, ["sample:1.0", "other:3"], out, fmt)
    names = tarfile.open(out).getnames()
    if fmt == "docker":
        assert "manifest.json" in names and "repositories" in names
        man = json.load(tarfile.open(out).extractfile("manifest.json"))
        assert [m["RepoTags"] for m in man] == [["localhost/sample:1.0"], ["docker.io/library/other:3"]]
    else:
        assert "oci-layout" in names and "index.json" in names
    b = Store(str(tmp_path / "b"))
    got = import_archive(b, out)
    assert sorted(t for _, ts in got for t in ts) == ["docker.io/library/other:3",
                                                     "localhost/sample:1.0"]
    for ref in ("sample:1.0", "other:3"):
        ia, ib = store.get(ref), b.get(ref)
        assert ia.id == ib.id and ia.layers == ib.layers
        for d in ia.layers:
            assert open(store.layer_tar(d), "rb").read() == open(b.layer_tar(d), "rb").read()


def test_save_by_id_is_untagged_and_atomic(store, tmp_path):
    img = store.get("sample:1.0")
    out = str(tmp_path / "x.tar")
    save(store, [img.hex[:12]], out, "docker")
    man = json.load(tarfile.open(out).extractfile("manifest.json"))
    assert man[0]["RepoTags"] is None
    with pytest.raises(ImageError, match="no such image"):
        save(store, ["nope"], str(tmp_path / "y.tar"))
    assert not os.path.exists(str(tmp_path / "y.tar"))
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_saving_twice_gives_the_same_bytes(store, tmp_path):
    a, b = str(tmp_path / "1.tar"), str(tmp_path / "2.tar")
    save(store, ["sample:1.0"], a, "oci")
    save(store, ["sample:1.0"], b, "oci")
    assert open(a, "rb").read() == open(b, "rb").read()


@pytest.mark.parametrize("kind,magic", [("gzip", b"\x1f\x8b"), ("zstd", b"\x28\xb5\x2f\xfd")])
def test_compressed_layers(store, tmp_path, kind, magic):
    """--compress: every layer blob compressed, its descriptor's digest, size and media type
    those of the blob; the archive imports back to the same image, and twice is the same bytes."""
    outs = []
    for fmt in ("oci", "docker", "oci"):
        out = str(tmp_path / ("%s-%d.tar" % (fmt, len(outs))))
        save(store, ["sample:1.0"], out, fmt, compress=kind)
        outs.append(out)
        b = Store(str(tmp_path / ("b%d" % len(outs))))
        [(image_id, _names)] = import_archive(b, out)
        assert image_id == store.get("sample:1.0").id
        assert b.get("sample:1.0").layers == store.get("sample:1.0").layers
    assert open(outs[0], "rb").read() == open(outs[2], "rb").read()
    tar = tarfile.open(outs[0])
    index = json.load(tar.extractfile("index.json"))
    m = json.load(tar.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    assert len(m["layers"]) == len(store.get("sample:1.0").layers)
    for ld in m["layers"]:
        data = tar.extractfile("blobs/sha256/" + ld["digest"][7:]).read()
        assert data.startswith(magic) and fx.sha(data) == ld["digest"]
        assert (ld["size"], ld["mediaType"]) == (
            len(data), "application/vnd.oci.image.layer.v1.tar+" + kind)
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(".")]   # no scratch left
    with pytest.raises(ImageError, match="unknown compression"):
        save(store, ["sample:1.0"], str(tmp_path / "x.tar"), "oci", compress="lz4")
