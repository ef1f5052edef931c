"""Hostile image archives against the import's caps (targuard.Limits), sparse members kept sparse,
and JSON nested too deeply: each one a one-line error, a non-zero exit, the store as it was.

The archives are built here from raw tar headers (tarfile writes the ordinary ones); the big ones
are gzip streams of repeated bytes, so nothing large is ever written to disk.
"""
import bz2
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zlib

import pytest

from unionfs.image import archive, extract
from unionfs.image.errors import ImageError
from unionfs.image.importer import import_archive
from unionfs.image.store import Store
from tests.mountutil import ENV, load_script

fx = load_script("build_image_fixtures")
TIB = 1 << 40


# ---- raw tar building -------------------------------------------------------------------------

def pad(data):
    return data + b"\0" * (-len(data) % 512)


def header(name, size=0, kind=tarfile.REGTYPE, **patch):
    ti = tarfile.TarInfo(name)
    ti.size, ti.type, ti.mtime, ti.mode = size, kind, 0, 0o644
    buf = bytearray(ti.tobuf(tarfile.GNU_FORMAT)[-512:])
    for off, value in patch.items():     # raw field bytes at offsets: {"o386": b"..."}
        o = int(off[1:])
        buf[o:o + len(value)] = value
    buf[148:156] = b" " * 8
    buf[148:155] = b"%06o\0" % sum(buf)
    return bytes(buf)


def record(key, value):
    body = b" %s=%s\n" % (key.encode(), value if isinstance(value, bytes) else str(value).encode())
    n = len(body) + 1
    while len(str(n).encode() + body) != n:
        n += 1
    return str(n).encode() + body


def pax(records, kind=tarfile.XHDTYPE):
    body = b"".join(record(k, v) for k, v in records)
    return header("././@PaxHeader", len(body), kind) + pad(body)


def member(name, data=b"", **kw):
    return header(name, len(data), **kw) + pad(data)


def end():
    return b"\0" * 1024


# ---- archives ---------------------------------------------------------------------------------

def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_dir(path, blobs, diff_ids):
    """An OCI layout directory of one image: layer blobs as stored, and their DiffIDs."""
    os.makedirs(os.path.join(path, "blobs", "sha256"))

    def put(data):
        d = sha(data)
        with open(os.path.join(path, "blobs", "sha256", d[7:]), "wb") as f:
            f.write(data)
        return {"digest": d, "size": len(data)}
    cfg = json.dumps(fx.make_config(diff_ids)).encode()
    man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": dict(put(cfg), mediaType="application/vnd.oci.image.config.v1+json"),
           "layers": [dict(put(b), mediaType="application/vnd.oci.image.layer.v1.tar")
                      for b in blobs]}
    md = json.dumps(man).encode()
    index = {"schemaVersion": 2, "manifests": [dict(put(md), annotations={
        "org.opencontainers.image.ref.name": "localhost/t:1"},
        mediaType="application/vnd.oci.image.manifest.v1+json")]}
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    return path


def image_of_tars(path, tars):
    return oci_dir(path, tars, [sha(t) for t in tars])


def gzip_stream(parts, kind="gzip"):
    """(compressed bytes, sha256 of the uncompressed stream) of parts: bytes or (byte, count)
    runs, compressed as they come (a run of 400 MB costs 400 KB)."""
    if kind == "gzip":
        co = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    elif kind == "xz":
        co = lzma.LZMACompressor()
    elif kind == "bzip2":
        co = bz2.BZ2Compressor()
    else:
        import zstandard
        co = zstandard.ZstdCompressor(level=3).compressobj()
    h = hashlib.sha256()
    out = []
    for p in parts:
        if isinstance(p, tuple):
            block = p[0] * (1 << 20)
            left = p[1]
            while left:
                chunk = block[:min(left, len(block))]
                h.update(chunk)
                out.append(co.compress(chunk))
                left -= len(chunk)
        else:
            h.update(p)
            out.append(co.compress(p))
    out.append(co.flush())
    return b"".join(out), "sha256:" + h.hexdigest()


def state(root):
    """(path, type, size) of everything in a store but its lock (walked by fds: deep trees too)."""
    out = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        for de in os.scandir(os.path.join(root, rel) if rel else root):
            p = os.path.join(rel, de.name) if rel else de.name
            if p == "lock":
                continue
            st = de.stat(follow_symlinks=False)
            out.add((p, st.st_mode >> 12, st.st_size if de.is_file(follow_symlinks=False) else 0))
            if de.is_dir(follow_symlinks=False):
                stack.append(p)
    return out


# The child's own peak: VmHWM of its address space (ru_maxrss would not do: Linux keeps it across
# execve, so it starts at the RSS of the pytest process that forked the child).
PEAK = ("import runpy, sys\n"
        "sys.argv = ['unionfs'] + sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_module('unionfs', run_name='__main__')\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "    print('PEAK %d' % int(hwm.split()[1]), file=sys.stderr)\n")


def cli(store, *args):
    """(returncode, one-line error or '', peak RSS KiB) of unionfs ARGS --store STORE."""
    r = subprocess.run([sys.executable, "-c", PEAK] + [str(a) for a in args] +
                       ["--store", str(store)], env=ENV, capture_output=True, text=True,
                       timeout=100)
    lines = r.stderr.splitlines()
    peak = int(lines.pop()[5:])
    return r.returncode, "\n".join(lines), peak


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    s.ensure()
    import_archive(s, image_of_tars(str(tmp_path / "base"), [member("base", b"b") + end()]))
    return s


def refused(store, path, *opts, expect):
    """Import path through the CLI: it must fail with one line containing expect and leave the
    store as it was. Returns the child's peak RSS in KiB."""
    before, tags = state(store.root), store.tags()
    rc, err, peak = cli(store.root, "image", "import", path, *opts)
    assert rc == 1, err
    assert err.startswith("unionfs: ") and "\n" not in err and "Traceback" not in err, err
    assert expect in err, err
    assert state(store.root) == before
    assert store.tags() == tags and os.listdir(store.path("tmp")) == []
    with store.lock():      # released
        pass
    return peak


# ---- sparse members ---------------------------------------------------------------------------

SEGMENTS = [(0, b"hello"), (TIB - 3, b"end")]


def sparse_tars():
    """The same 1 TiB sparse file ('big': 'hello' at 0, 'end' at its last 3 bytes) in each
    sparse format tarfile reads, built from raw headers."""
    data = b"".join(d for _, d in SEGMENTS)
    m01 = ",".join("%d,%d" % (o, len(d)) for o, d in SEGMENTS)
    out = {}
    out["pax-0.1"] = pax([("GNU.sparse.major", 0), ("GNU.sparse.minor", 1),
                          ("GNU.sparse.name", "big"), ("GNU.sparse.realsize", TIB),
                          ("GNU.sparse.map", m01)]) + member("GNUSparseFile.1/big", data)
    recs = [("GNU.sparse.size", TIB), ("GNU.sparse.numblocks", len(SEGMENTS))]
    for o, d in SEGMENTS:
        recs += [("GNU.sparse.offset", o), ("GNU.sparse.numbytes", len(d))]
    out["pax-0.0"] = pax(recs) + member("big", data)
    map10 = pad(("%d\n" % len(SEGMENTS) + "".join("%d\n%d\n" % (o, len(d)) for o, d in SEGMENTS))
                .encode())
    out["pax-1.0"] = pax([("GNU.sparse.major", 1), ("GNU.sparse.minor", 0),
                          ("GNU.sparse.name", "big"), ("GNU.sparse.realsize", TIB)]) + \
        member("GNUSparseFile.1/big", map10 + data)
    structs = b"".join(tarfile.itn(o, 12, tarfile.GNU_FORMAT) +
                       tarfile.itn(len(d), 12, tarfile.GNU_FORMAT) for o, d in SEGMENTS)
    out["gnu-S"] = header("big", len(data), tarfile.GNUTYPE_SPARSE, o386=structs,
                          o483=tarfile.itn(TIB, 12, tarfile.GNU_FORMAT)) + pad(data)
    return {k: v + end() for k, v in out.items()}


def check_big(path):
    st = os.stat(path)
    assert st.st_size == TIB
    assert st.st_blocks * 512 < (1 << 20)        # holes, not a terabyte of zeros
    with open(path, "rb") as f:
        for o, d in SEGMENTS:
            assert os.pread(f.fileno(), len(d), o) == d
        assert os.pread(f.fileno(), 4, 1 << 30) == b"\0" * 4


@pytest.mark.parametrize("fmt", ["pax-0.0", "pax-0.1", "pax-1.0", "gnu-S"])
def test_sparse_member_is_extracted_with_its_holes(tmp_path, fmt):
    tar = tmp_path / "l.tar"
    tar.write_bytes(sparse_tars()[fmt])
    root = tmp_path / "root"
    root.mkdir()
    t = time.monotonic()
    res = extract.extract_tar(str(tar), str(root))
    assert time.monotonic() - t < 10
    check_big(str(root / "big"))
    assert res.size == TIB and res.data == 8


@pytest.mark.skipif(shutil.which("tar") is None, reason="no GNU tar to write sparse archives")
@pytest.mark.parametrize("opts", [["--format=gnu"]] + [
    ["--format=posix", "--sparse-version=" + v] for v in ("0.0", "0.1", "1.0")])
def test_sparse_archives_written_by_gnu_tar(tmp_path, opts):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big", "wb") as f:
        for o, d in SEGMENTS:
            os.pwrite(f.fileno(), d, o)
    if os.stat(src / "big").st_blocks * 512 > (1 << 20):
        pytest.skip("tmp filesystem without holes")
    tar = tmp_path / "l.tar"
    subprocess.run(["tar", "--sparse", "-C", str(src), "-cf", str(tar), "big"] + opts,
                   check=True, timeout=60)
    assert tar.stat().st_size < 100_000
    root = tmp_path / "root"
    root.mkdir()
    extract.extract_tar(str(tar), str(root))
    check_big(str(root / "big"))


def test_sparse_terabyte_imports_in_seconds(store, tmp_path):
    layer = sparse_tars()["pax-0.1"]
    t = time.monotonic()
    (image_id, _), = import_archive(store, image_of_tars(str(tmp_path / "a"), [layer]))
    assert time.monotonic() - t < 20
    check_big(os.path.join(store.layer_root(store.image(image_id).layers[0]), "big"))


@pytest.mark.parametrize("field,value", [("o136", 1 << 80), ("o116", -5), ("o483", -1)])
def test_numbers_no_system_call_takes_are_one_error(tmp_path, field, value):
    # an mtime past time_t, a negative gid, a negative sparse size (found by fuzzing)
    kind = tarfile.GNUTYPE_SPARSE if field == "o483" else tarfile.REGTYPE
    tar = tmp_path / "l.tar"
    width = 8 if field == "o116" else 12
    tar.write_bytes(header("f", 0, kind, **{field: tarfile.itn(value, width, tarfile.GNU_FORMAT)})
                    + end())
    (tmp_path / "r").mkdir()
    with pytest.raises(ImageError):
        extract.extract_tar(str(tar), str(tmp_path / "r"))


def test_sparse_map_past_the_end_is_refused(tmp_path):
    bad = pax([("GNU.sparse.major", 0), ("GNU.sparse.minor", 1), ("GNU.sparse.name", "big"),
               ("GNU.sparse.realsize", 100), ("GNU.sparse.map", "0,5,98,3")]) + \
        member("x", b"helloend") + end()
    tar = tmp_path / "l.tar"
    tar.write_bytes(bad)
    (tmp_path / "r").mkdir()
    with pytest.raises(ImageError, match="sparse map"):
        extract.extract_tar(str(tar), str(tmp_path / "r"))


# ---- caps: size, entries, headers -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gzip", "zstd", "xz", "bzip2"])
def test_decompression_bomb_stops_at_the_layer_cap(store, tmp_path, kind):
    # 512 MiB of zeros in one member, 500 KB gzipped: stopped at 16M, nothing kept
    n = (512 if kind in ("gzip", "zstd") else 64) << 20      # xz and bzip2 compress slowly
    blob, diff_id = gzip_stream([header("bomb", n), (b"\0", n), end()], kind)
    path = oci_dir(str(tmp_path / "a"), [blob], [diff_id])
    t = time.monotonic()
    peak = refused(store, path, "--max-layer-size", "16M",
                   expect="layer 1/1 (blobs/sha256/%s): more than %d bytes uncompressed "
                   "(the cap: --max-layer-size)" % (sha(blob)[7:], 16 << 20))
    assert time.monotonic() - t < 30
    assert peak < 150 * 1024


def test_layer_cap_through_the_api_leaves_no_temp_files(store, tmp_path):
    from unionfs.image.errors import LimitError
    from unionfs.image.targuard import Limits
    layer = member("f", b"x" * 5000) + end()
    with pytest.raises(LimitError, match="--max-layer-size"):
        import_archive(store, image_of_tars(str(tmp_path / "a"), [layer]),
                       limits=Limits(max_layer_size=4096))
    assert os.listdir(store.path("tmp")) == []
    # the same layer under the default caps is fine
    import_archive(store, image_of_tars(str(tmp_path / "b"), [layer]))


def test_compressed_archive_bomb_stops_at_the_archive_cap(store, tmp_path):
    blob, _ = gzip_stream([header("bomb", 256 << 20), (b"\0", 256 << 20), end()])
    path = tmp_path / "a.tar.gz"
    path.write_bytes(blob)
    refused(store, path, "--max-archive-size", "10M", expect="--max-archive-size")


def test_entry_cap(store, tmp_path):
    layer = b"".join(member("f%d" % i, b"") for i in range(50)) + end()
    path = image_of_tars(str(tmp_path / "a"), [layer])
    refused(store, path, "--max-entries", "20",
            expect="more than 20 entries (the cap: --max-entries)")
    rc, err, _ = cli(store.root, "image", "import", path, "--max-entries", "50")
    assert rc == 0, err


def test_huge_pax_header_is_refused_before_it_is_read(store, tmp_path):
    # a 400 MB xattr: tarfile would read it whole (and the old import held 1.2 GB)
    n = 400_000_000
    head = b"%d SCHILY.xattr.user.big=" % (n + 34)
    body_len = len(head) + n + 1
    blob, diff_id = gzip_stream([header("././@PaxHeader", body_len, tarfile.XHDTYPE), head,
                                 (b"A", n), b"\n", b"\0" * (-body_len % 512), member("f"), end()])
    path = oci_dir(str(tmp_path / "a"), [blob], [diff_id])
    peak = refused(store, path, expect="PAX header of %d bytes (more than --max-header-size "
                   "1048576)" % body_len)
    assert peak < 150 * 1024


@pytest.mark.parametrize("case,expect", [
    ("longname", "GNU long name of"),
    ("chain", "more than 4 extended headers"),
    ("two-pax", "two PAX headers"),
    ("bad-length", "bad length"),
    ("bad-size", "is not a number"),
    ("global-size", "global PAX header sets a size"),
    ("map10-too-big", "sparse map larger"),
    ("negative-size", "negative size"),
])
def test_hostile_headers(store, tmp_path, case, expect):
    big = "d/" * 10000 + "f"
    layers = {
        "longname": header("././@LongLink", len(big) + 1, tarfile.GNUTYPE_LONGNAME) +
        pad(big.encode() + b"\0") + member("x"),
        "chain": b"".join(header("././@LongLink", 2, tarfile.GNUTYPE_LONGNAME) + pad(b"a\0")
                          for _ in range(2000)) + member("x"),
        "two-pax": pax([("path", "a")]) + pax([("path", "b")]) + member("x"),
        "bad-length": header("././@PaxHeader", 5010, tarfile.XHDTYPE) +
        pad(b"9" * 5000 + b" path=a\n") + member("x"),
        "bad-size": pax([("size", "1" * 5000)]) + member("x"),
        "global-size": pax([("size", 10)], tarfile.XGLTYPE) + member("x"),
        "map10-too-big": pax([("GNU.sparse.major", 1), ("GNU.sparse.minor", 0),
                              ("GNU.sparse.realsize", 10)]) +
        member("x", b"1" * 20000 + b"\n"),
        "negative-size": header("x", o124=tarfile.itn(-(1 << 40), 12, tarfile.GNU_FORMAT)),
    }
    path = image_of_tars(str(tmp_path / "a"), [layers[case] + end()])
    refused(store, path, "--max-header-size", "16K", expect=expect)


def test_outer_tar_with_a_huge_pax_header(store, tmp_path):
    # an uncompressed archive file is checked by reading its headers only
    body = record("comment", b"c" * (3 << 20))
    path = tmp_path / "a.tar"
    path.write_bytes(header("././@PaxHeader", len(body), tarfile.XHDTYPE) + pad(body) +
                     member("manifest.json", b"[]") + end())
    refused(store, path, expect="more than --max-header-size")


@pytest.mark.parametrize("bad", [b"0x10", b"-1", b"1e3"])
def test_cli_refuses_bad_cap_values(store, tmp_path, bad):
    rc, err, _ = cli(store.root, "image", "import", str(tmp_path), "--max-layer-size",
                     bad.decode())
    assert rc == 2 and "--max-layer-size" in err and "Traceback" not in err


# ---- JSON nested too deeply -------------------------------------------------------------------

@pytest.mark.parametrize("which", ["index", "manifest", "config", "docker-manifest"])
def test_deeply_nested_json_is_one_line(store, tmp_path, which):
    deep = b"[" * 100_000 + b"]" * 100_000
    good = member("f", b"x") + end()
    path = str(tmp_path / "a")
    if which == "docker-manifest":
        fx.write_tar(path + ".tar", [("manifest.json", deep)])
        path += ".tar"
    else:
        image_of_tars(path, [good])
        index = json.load(open(os.path.join(path, "index.json")))
        if which == "index":
            data = deep
        else:
            mdesc = index["manifests"][0]
            mpath = os.path.join(path, "blobs", "sha256", mdesc["digest"][7:])
            man = json.load(open(mpath))
            if which == "manifest":
                mdata = b'{"config": ' + deep + b"}"
            else:
                cfg = b'{"rootfs": ' + deep + b"}"
                with open(os.path.join(path, "blobs", "sha256", sha(cfg)[7:]), "wb") as f:
                    f.write(cfg)
                man["config"].update(digest=sha(cfg), size=len(cfg))
                mdata = json.dumps(man).encode()
            with open(os.path.join(path, "blobs", "sha256", sha(mdata)[7:]), "wb") as f:
                f.write(mdata)
            mdesc.update(digest=sha(mdata), size=len(mdata))
            data = json.dumps(index).encode()
        with open(os.path.join(path, "index.json"), "wb") as f:
            f.write(data)
    refused(store, path, expect="nested more than 64 levels deep")


def test_json_depth_skips_strings():
    assert archive.json_depth(b'{"a": ["[[[[", {"b": "\\"[{"}]}') == 3
    assert archive.parse_json(b'[[["x"]]]', "t") == [[["x"]]]


def test_deeply_nested_store_file_is_one_line(store):
    with open(store.path("repositories.json"), "wb") as f:
        f.write(b"[" * 100_000 + b"]" * 100_000)
    rc, err, _ = cli(store.root, "image", "ls")
    assert rc == 1 and err.startswith("unionfs: store file") and "\n" not in err, err


@pytest.mark.skipif(shutil.which("tar") is None, reason="no GNU tar")
@pytest.mark.parametrize("fmt", ["gnu", "oldgnu", "posix", "ustar", "v7"])
def test_guard_walks_real_tars_as_tarfile_does(tmp_path, fmt):
    """The guard's walk finds the entries tarfile finds, fed in odd pieces or seeking."""
    from unionfs.image.targuard import Limits, TarGuard
    src = tmp_path / "src"
    long = 120 if fmt in ("gnu", "oldgnu", "posix") else 40     # ustar, v7: short names only
    (src / ("x" * long) / ("y" * long)).mkdir(parents=True)
    (src / "f").write_bytes(b"hi\n")
    os.symlink("f", str(src / "l"))
    os.link(str(src / "f"), str(src / "h"))
    with open(src / "sp", "wb") as f:
        os.pwrite(f.fileno(), b"x", 50 << 20)
    tar = tmp_path / "t.tar"
    sparse = ["--sparse"] if fmt in ("gnu", "oldgnu", "posix") else []
    subprocess.run(["tar", "-cf", str(tar), "-C", str(src), ".", "--format=" + fmt] + sparse,
                   check=True, capture_output=True, timeout=60)
    n = len(tarfile.open(str(tar)).getmembers())
    sink = type("Sink", (), {"write": lambda self, d: None})()
    fed = TarGuard(sink, "t", Limits())
    data = tar.read_bytes()
    for i in range(0, len(data), 7919):
        fed.write(data[i:i + 7919])
    seeking = TarGuard(None, "t", Limits())
    with open(tar, "rb") as f:
        seeking.check_file(f)
    assert fed.done and seeking.done and fed.entries == seeking.entries == n >= 5
