"""Archive readers and compression detection (no FUSE, no store)."""
import gzip
import json
import os

import pytest

from unionfs.image import archive, compression
from unionfs.image.errors import ImageError
from tests.mountutil import load_script



fx = load_script("build_image_fixtures")


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    return fx.build_all(str(tmp_path_factory.mktemp("fx")), devices=False)


def _read(path, tmp_path):
    src = archive.open_source(path, scratch=str(tmp_path))
    try:
        return [(r.config_digest, r.tags, r.diff_ids, [l.path for l in r.layers])
                for r in archive.read_images(src)]
    finally:
        src.close()


@pytest.mark.parametrize("name", ["docker-classic", "docker-new", "oci-dir", "oci-tar", "oci-mixed"])
def test_every_format_reads_the_same_image(archives, name, tmp_path):
    recs = _read(archives[name], tmp_path)
    assert len(recs) == 1
    cfg, tags, diff_ids, paths = recs[0]
    img = fx.sample_image(devices=False)
    assert cfg == fx.sha(img.config_bytes)
    assert tags == ["localhost/sample:1.0"]
    assert diff_ids == [fx.sha(t) for t in img.tars]
    assert len(paths) == 3


def test_gzip_compressed_archive_is_read(archives, tmp_path):
    gz = tmp_path / "a.tar.gz"
    with open(archives["docker-new"], "rb") as f:
        gz.write_bytes(gzip.compress(f.read()))
    assert _read(str(gz), tmp_path)[0][1] == ["localhost/sample:1.0"]


def test_compression_detected_by_magic():
    assert compression.detect(b"\x1f\x8b\x08") == "gzip"
    assert compression.detect(b"\x28\xb5\x2f\xfd\x00") == "zstd"
    assert compression.detect(b"BZh9") == "bzip2"
    assert compression.detect(b"\xfd7zXZ\x00") == "xz"
    assert compression.detect(b"etc/\x00\x00") is None


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_decompress_roundtrip_and_multi_member(kind):
    import io
    data = os.urandom(300_000)
    blob = fx.compress(data[:100_000], kind) + fx.compress(data[100_000:], kind)
    out = io.BytesIO()
    assert compression.decompress(io.BytesIO(blob), out) == kind
    assert out.getvalue() == data


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_truncated_stream_is_an_error(kind):
    import io
    blob = fx.compress(os.urandom(200_000), kind)
    with pytest.raises(ImageError, match="truncated|corrupt"):
        compression.decompress(io.BytesIO(blob[: len(blob) // 2]), io.BytesIO(), what="layer 1/1")


def test_corrupt_stream_is_an_error():
    import io
    blob = bytearray(fx.compress(b"x" * 100_000, "gzip"))
    blob[20:40] = b"\xff" * 20
    with pytest.raises(ImageError) as e:
        compression.decompress(io.BytesIO(bytes(blob)), io.BytesIO(), what="layer 1/1")
    assert "\n" not in str(e.value)


def test_manifest_path_outside_archive(tmp_path):
    img = fx.Img([fx.layer_tar([fx.E("a", data=b"a")])])

    def hook(manifest):
        manifest[0]["Layers"] = ["../../etc/passwd"]
    p = fx.docker_archive(str(tmp_path / "a.tar"), [img], "classic", manifest_hook=hook)
    with pytest.raises(ImageError, match="outside the archive"):
        _read(p, tmp_path)


def test_absolute_manifest_path(tmp_path):
    img = fx.Img([fx.layer_tar([fx.E("a", data=b"a")])])

    def hook(manifest):
        manifest[0]["Config"] = "/etc/passwd"
    p = fx.docker_archive(str(tmp_path / "a.tar"), [img], "classic", manifest_hook=hook)
    with pytest.raises(ImageError, match="outside the archive"):
        _read(p, tmp_path)


def test_archive_symlink_leading_outside(tmp_path):
    p = fx.write_tar(str(tmp_path / "a.tar"), [
        ("manifest.json", json.dumps([{"Config": "c.json", "Layers": []}]).encode()),
        ("c.json", ("symlink", "../../../etc/passwd"))])
    with pytest.raises(ImageError, match="outside the archive"):
        _read(p, tmp_path)


def test_oci_dir_symlink_outside(tmp_path):
    d = fx.oci_layout(str(tmp_path / "oci"), [fx.Img([fx.layer_tar([fx.E("a", data=b"a")])])])
    idx = json.load(open(os.path.join(d, "index.json")))
    blob = os.path.join(d, "blobs", "sha256", idx["manifests"][0]["digest"][7:])
    os.unlink(blob)
    os.symlink("/etc/passwd", blob)
    with pytest.raises(ImageError, match="outside the archive"):
        _read(d, tmp_path)


def test_config_digest_mismatch_new_layout(tmp_path):
    img = fx.Img([fx.layer_tar([fx.E("a", data=b"a")])])

    def hook(manifest):
        manifest[0]["Config"] = "blobs/sha256/" + "0" * 64
    files = fx.docker_files([img], "new", manifest_hook=hook)
    files.append(("blobs/sha256/" + "0" * 64, img.config_bytes))
    p = fx.write_tar(str(tmp_path / "a.tar"), files)
    with pytest.raises(ImageError, match="digest mismatch"):
        _read(p, tmp_path)


def test_oci_manifest_digest_mismatch(tmp_path):
    img = fx.Img([fx.layer_tar([fx.E("a", data=b"a")])])

    def hook(index):
        index["manifests"][0]["digest"] = "sha256:" + "1" * 64
    d = fx.oci_layout(str(tmp_path / "oci"), [img], index_hook=hook)
    with pytest.raises(ImageError, match="missing|digest"):
        _read(d, tmp_path)


def test_layer_count_must_match_diff_ids(tmp_path):
    t = fx.layer_tar([fx.E("a", data=b"a")])
    img = fx.Img([t], config=fx.make_config([fx.sha(t), fx.sha(t)]))
    p = fx.docker_archive(str(tmp_path / "a.tar"), [img])
    with pytest.raises(ImageError, match="2 DiffIDs"):
        _read(p, tmp_path)


def test_index_picks_host_platform(tmp_path):
    t = fx.layer_tar([fx.E("a", data=b"a")])
    img = fx.Img([t], tags=["x/y:1"])

    def hook(index):
        m = index["manifests"][0]
        nested = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                  "manifests": [dict(m, platform={"os": "linux", "architecture": "s390x"}),
                                dict(m, platform={"os": "linux",
                                                  "architecture": archive.host_platform().arch})]}
        data = json.dumps(nested).encode()
        hook.blob = data
        index["manifests"] = [{"mediaType": "application/vnd.oci.image.index.v1+json",
                               "digest": fx.sha(data), "size": len(data),
                               "annotations": {"org.opencontainers.image.ref.name": "x/y:1"}}]
    d = fx.oci_layout(str(tmp_path / "oci"), [img], index_hook=hook)
    with open(os.path.join(d, "blobs", "sha256", fx.sha(hook.blob)[7:]), "wb") as f:
        f.write(hook.blob)
    recs = _read(d, tmp_path)
    assert recs[0][1] == ["x/y:1"] and recs[0][2] == [fx.sha(t)]


def test_not_an_archive(tmp_path):
    p = fx.write_tar(str(tmp_path / "a.tar"), [("hello", b"x")])
    with pytest.raises(ImageError, match="not an image archive"):
        _read(p, tmp_path)
    (tmp_path / "junk").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ImageError):
        _read(str(tmp_path / "junk"), tmp_path)


@pytest.mark.parametrize("backend", ["isal", "zlib"])
def test_gzip_backends_check_alike(backend, monkeypatch):
    # ISA-L when installed, zlib otherwise: both read concatenated members and refuse a bad CRC
    # and a truncated stream with the same one-line errors
    import io
    import zlib
    if backend == "isal":
        mod = pytest.importorskip("isal.isal_zlib")
    else:
        mod = zlib
    monkeypatch.setattr(compression, "_inflate", mod)
    data = os.urandom(150_000) + b"y" * 150_000
    blob = fx.compress(data[:100_000], "gzip") + fx.compress(data[100_000:], "gzip")
    out = io.BytesIO()
    assert compression.decompress(io.BytesIO(blob), out) == "gzip"
    assert out.getvalue() == data
    bad = bytearray(blob)
    bad[-6] ^= 1     # the last member's CRC32
    with pytest.raises(ImageError, match="corrupt gzip"):
        compression.decompress(io.BytesIO(bytes(bad)), io.BytesIO())
    with pytest.raises(ImageError, match="truncated gzip"):
        compression.decompress(io.BytesIO(blob[:-20]), io.BytesIO())
