#!/usr/bin/env python3
"""Build image archives for the image tests and the sample in mounts/images, without any
container tool.

    python scripts/build_image_fixtures.py OUTDIR
    python scripts/build_image_fixtures.py --sample mounts/images/sample-oci.tar

writes, for one sample image (three layers over a base layer, with whiteouts, an opaque directory,
hard links, symlinks, xattrs, a setuid file, a device node, a FIFO, nanosecond mtimes, long and
non-ASCII names):

    docker-classic.tar   docker save, classic layout (<id>/layer.tar, repositories, <cfg>.json)
    docker-new.tar       docker save, newer layout (blobs/sha256 + manifest.json + index.json)
    oci-dir/             OCI image layout directory, gzip layers
    oci.tar              the same as a tar (oci-archive), zstd layers
    oci-mixed.tar        uncompressed, gzip and zstd layers in one image

From Python (tests import this module), the building blocks are public: ``layer_tar(entries)``,
``compress(data, kind)``, ``docker_archive(...)``, ``oci_layout(...)``, ``platform_files(...)``
(one image for several platforms: an OCI index, a docker manifest list), ``apply_layers(...)`` (a
reference implementation of OCI layer semantics, the tests' oracle), ``sample_layers()`` and
``inspect_images()`` (an image whose waste, history and diffs are known byte for byte).
Everything is deterministic: two builds are byte-identical.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

EPOCH = 1_600_000_000
DEFAULT_CONFIG = {
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": ["/bin/sh"], "WorkingDir": "/", "Labels": {"org.example.fixture": "yes"}},
}


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- layers ---------------------------------------------------------------------------------------

def E(name, kind="file", data=b"", mode=None, uid=0, gid=0, mtime_ns=None, link="", xattrs=None,
      dev=(0, 0)):
    """One layer entry. kind: file dir symlink hardlink char block fifo whiteout opaque raw."""
    if mode is None:
        mode = {"dir": 0o755, "symlink": 0o777, "file": 0o644}.get(kind, 0o644)
    return {"name": name, "kind": kind, "data": data, "mode": mode, "uid": uid, "gid": gid,
            "mtime_ns": EPOCH * 10**9 if mtime_ns is None else mtime_ns, "link": link,
            "xattrs": dict(xattrs or {}), "dev": dev}


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
          "fifo": tarfile.FIFOTYPE, "whiteout": tarfile.REGTYPE, "opaque": tarfile.REGTYPE}


def layer_tar(entries):
    """An uncompressed PAX layer tar of the entries, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for e in entries:
            name = e["name"]
            if e["kind"] == "whiteout":
                d, _, b = name.rpartition("/")
                name = (d + "/" if d else "") + ".wh." + b
            elif e["kind"] == "opaque":
                name = (name.rstrip("/") + "/" if name.strip("/") else "") + ".wh..wh..opq"
            ti = tarfile.TarInfo(name)
            ti.type = e.get("tartype") or _TYPES[e["kind"]]
            ti.mode = e["mode"]
            ti.uid, ti.gid = e["uid"], e["gid"]
            ti.uname = ti.gname = ""
            sec, ns = divmod(e["mtime_ns"], 10**9)
            ti.mtime = sec
            pax = {}
            if ns:
                pax["mtime"] = "%d.%09d" % (sec, ns)
            for k, v in sorted(e["xattrs"].items()):
                pax["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape") \
                    if isinstance(v, bytes) else v
            ti.pax_headers = pax
            ti.linkname = e["link"]
            if e["kind"] in ("char", "block"):
                ti.devmajor, ti.devminor = e["dev"]
            data = e["data"] if e["kind"] == "file" else b""
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def compress(data, kind):
    if kind in (None, "none"):
        return data
    if kind == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=3).compress(data)
    raise ValueError(kind)


# ---- archives -------------------------------------------------------------------------------------

def make_config(diff_ids, base=None, history=None):
    cfg = json.loads(json.dumps(base or DEFAULT_CONFIG))
    cfg["created"] = "2020-09-13T12:26:40Z"
    cfg["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    cfg["history"] = history or [
        {"created": "2020-09-13T12:26:40Z", "created_by": "fixture layer %d" % i}
        for i in range(len(diff_ids))]
    return cfg


def _cfg_bytes(cfg):
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


def _add(tar, name, data=None, kind="file", link=""):
    ti = tarfile.TarInfo(name)
    ti.mtime = 0
    if kind == "dir":
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(ti)
    elif kind == "symlink":
        ti.type, ti.linkname = tarfile.SYMTYPE, link
        tar.addfile(ti)
    else:
        ti.mode, ti.size = 0o644, len(data)
        tar.addfile(ti, io.BytesIO(data))


class Img:
    """An image to write: layer blobs (as stored: maybe compressed), uncompressed tars, tags."""

    def __init__(self, tars, compression=None, tags=(), config=None):
        comps = compression if isinstance(compression, (list, tuple)) else [compression] * len(tars)
        self.tars = list(tars)
        self.blobs = [compress(t, c) for t, c in zip(tars, comps)]
        self.media = ["application/vnd.oci.image.layer.v1.tar" + {"gzip": "+gzip", "zstd": "+zstd"}
                      .get(c, "") for c in comps]
        self.config = config if config is not None else make_config([sha(t) for t in tars])
        self.config_bytes = config if isinstance(config, bytes) else _cfg_bytes(self.config)
        self.tags = list(tags)


def write_tar(path, files):
    """files: [(name, bytes | ('dir',) | ('symlink', target))] in order."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            if isinstance(data, tuple):
                _add(tar, name, kind=data[0], link=data[1] if len(data) > 1 else "")
            else:
                _add(tar, name, data)
    return path


def docker_files(images, layout="classic", manifest_hook=None):
    """The files of a docker-save archive (classic or the newer blobs layout)."""
    files = []
    manifest = []
    repos = {}
    seen = set()
    if layout == "new":
        files.append(("blobs/", ("dir",)))
        files.append(("blobs/sha256/", ("dir",)))
    for img in images:
        cfg_hex = sha(img.config_bytes)[7:]
        layers = []
        parent = ""
        for blob in img.blobs:
            if layout == "classic":
                lid = hashlib.sha256((parent + sha(blob)).encode()).hexdigest()
                path = lid + "/layer.tar"
                if path not in seen:
                    seen.add(path)
                    files.append((lid + "/", ("dir",)))
                    files.append((lid + "/VERSION", b"1.0"))
                    files.append((lid + "/json", json.dumps({"id": lid, "parent": parent}).encode()))
                    files.append((path, blob))
                parent = lid
            else:
                path = "blobs/sha256/" + sha(blob)[7:]
                if path not in seen:
                    seen.add(path)
                    files.append((path, blob))
            layers.append(path)
        cfg_path = cfg_hex + ".json" if layout == "classic" else "blobs/sha256/" + cfg_hex
        if cfg_path not in seen:
            seen.add(cfg_path)
            files.append((cfg_path, img.config_bytes))
        manifest.append({"Config": cfg_path, "RepoTags": img.tags or None, "Layers": layers})
        for t in img.tags:
            repo, _, tag = t.rpartition(":")
            repos.setdefault(repo, {})[tag] = parent or cfg_hex
    if manifest_hook:
        manifest_hook(manifest)
    if layout == "new":
        files.append(("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'))
        idx = {"schemaVersion": 2, "manifests": []}
        files.append(("index.json", json.dumps(idx).encode()))
    files.append(("manifest.json", json.dumps(manifest).encode()))
    if layout == "classic":
        files.append(("repositories", json.dumps(repos).encode()))
    return files


def docker_archive(path, images, layout="classic", manifest_hook=None):
    return write_tar(path, docker_files(images, layout, manifest_hook))


def oci_files(images, manifest_hook=None, index_hook=None):
    files = [("blobs/", ("dir",)), ("blobs/sha256/", ("dir",))]
    seen = set()

    def blob(data):
        p = "blobs/sha256/" + sha(data)[7:]
        if p not in seen:
            seen.add(p)
            files.append((p, data))
        return sha(data)

    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": []}
    for img in images:
        m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": blob(img.config_bytes), "size": len(img.config_bytes)},
             "layers": [{"mediaType": mt, "digest": blob(b), "size": len(b)}
                        for b, mt in zip(img.blobs, img.media)]}
        if manifest_hook:
            manifest_hook(m)
        mb = json.dumps(m, sort_keys=True).encode()
        d = blob(mb)
        for t in img.tags or [None]:
            desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d,
                    "size": len(mb)}
            if t:
                desc["annotations"] = {"org.opencontainers.image.ref.name": t}
            index["manifests"].append(desc)
    if index_hook:
        index_hook(index)
    files.append(("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'))
    files.append(("index.json", json.dumps(index).encode()))
    return files


def oci_layout(path, images, as_tar=False, manifest_hook=None, index_hook=None):
    return write_layout(path, oci_files(images, manifest_hook, index_hook), as_tar)


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _docker_media_types(m):
    m["mediaType"] = DOCKER_MANIFEST
    m["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    for ld in m["layers"]:
        ld["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar" + (
            ".gzip" if ld["mediaType"].endswith("+gzip") else "")


def platform_files(images, platforms, tag, kind="oci"):
    """The files of an OCI layout holding one image (tag) for several platforms: images[i]
    (untagged Img) is the one for platforms[i] ('os/arch[/variant]'). kind: 'oci' (index.json
    names an OCI image index of the platforms), 'docker' (a docker manifest list, docker media
    types throughout, as `skopeo copy --all` keeps them) or 'flat' (index.json lists the
    platform manifests itself, each with the tag)."""
    files = oci_files(images, _docker_media_types if kind == "docker" else None)
    index = json.loads(files.pop()[1])
    descs = index["manifests"]
    for desc, plat in zip(descs, platforms):
        parts = plat.split("/")
        desc["platform"] = dict(zip(("os", "architecture", "variant"), parts))
        if kind == "docker":
            desc["mediaType"] = DOCKER_MANIFEST
        if kind == "flat":
            desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    if kind != "flat":
        mt = DOCKER_LIST if kind == "docker" else OCI_INDEX
        data = json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": descs},
                          sort_keys=True).encode()
        files.insert(2, ("blobs/sha256/" + sha(data)[7:], data))
        index["manifests"] = [{"mediaType": mt, "digest": sha(data), "size": len(data),
                               "annotations": {"org.opencontainers.image.ref.name": tag}}]
    files.append(("index.json", json.dumps(index).encode()))
    return files


def write_layout(path, files, as_tar=False):
    """Write an archive's files as a directory at path, or as a tar file."""
    if as_tar:
        return write_tar(path, files)
    for name, data in files:
        p = os.path.join(path, name)
        if isinstance(data, tuple):
            os.makedirs(p, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
    return path


# ---- the oracle -----------------------------------------------------------------------------------

def apply_layers(layers):
    """Reference OCI semantics: {path: entry} of the tree that layers (bottom first, each a list of
    entries) make. Whiteouts and opaque markers apply to lower layers only; hard links resolve to
    their target's content."""
    tree = {}
    for entries in layers:
        lower = dict(tree)
        for e in entries:
            if e["kind"] == "whiteout":
                p = e["name"]
                for k in list(tree):
                    if (k == p or k.startswith(p + "/")) and k in lower:
                        tree.pop(k, None)
            elif e["kind"] == "opaque":
                p = e["name"].strip("/")
                for k in list(tree):
                    if k.startswith(p + "/" if p else "") and k != p and k in lower:
                        tree.pop(k, None)
        for e in entries:
            if e["kind"] in ("whiteout", "opaque"):
                continue
            name = e["name"].strip("/")
            if e["kind"] == "hardlink":
                t = dict(tree[e["link"]])
                t["name"] = name
                tree[name] = t
            else:
                tree[name] = e
            parts = name.split("/")
            for i in range(1, len(parts)):
                tree.setdefault("/".join(parts[:i]), E("/".join(parts[:i]), "dir"))
    return tree


def expected_snapshot(tree, root_mode=0o755):
    """The oracle's tree in the form tests/mountutil.snapshot() gives for a mount (without
    times; directories the layers only implied have mode 0755 and owner 0:0)."""
    import stat as st
    codes = {"file": st.S_IFREG, "dir": st.S_IFDIR, "symlink": st.S_IFLNK, "char": st.S_IFCHR,
             "block": st.S_IFBLK, "fifo": st.S_IFIFO}
    out = {".": {"type": st.S_IFDIR, "mode": root_mode, "uid": 0, "gid": 0}}
    for path, e in tree.items():
        rec = {"type": codes[e["kind"]], "mode": e["mode"] & 0o7777, "uid": e["uid"], "gid": e["gid"]}
        if e["kind"] == "file":
            rec["size"] = len(e["data"])
            rec["sha256"] = hashlib.sha256(e["data"]).hexdigest()
        elif e["kind"] == "symlink":
            rec["target"] = e["link"]
        elif e["kind"] in ("char", "block"):
            rec["rdev"] = tuple(e["dev"])
        x = {k: v for k, v in e["xattrs"].items()}
        if x:
            rec["xattrs"] = {k: (v if isinstance(v, bytes) else v.encode()) for k, v in sorted(x.items())}
        out[path] = rec
    return out


# ---- the sample image -----------------------------------------------------------------------------

CAP = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service=ep (v2)
LONG = "usr/share/" + "/".join(["d" * 40] * 3) + "/" + "f" * 60


def sample_layers(devices=True):
    """Layer entry lists, bottom first."""
    base = [
        E("bin", "dir"), E("etc", "dir"), E("usr", "dir"), E("usr/lib", "dir"),
        E("opt", "dir"), E("opt/old", "dir"), E("opt/old/b", "dir"), E("var", "dir"),
        E("var/log", "dir", mode=0o750), E("home", "dir"),
        E("home/user", "dir", uid=1000, gid=1000, mode=0o700),
        E("home/user/file", data=b"user data\n", uid=1000, gid=1000, mode=0o600),
        E("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        E("etc/hostname", data=b"fixture\n"),
        E("etc/precise", data=b"ns mtime\n", mtime_ns=EPOCH * 10**9 + 123456789),
        E("etc/na\u00efve", data=b"non-ascii name\n"),
        E("bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o755,
          xattrs={"security.capability": CAP, "user.comment": b"a tool"}),
        E("bin/tool-hard", "hardlink", link="bin/tool"),
        E("bin/sh", "symlink", link="tool"),
        E("bin/su", data=b"setuid\n", mode=0o4755),
        E("usr/lib/libx.so.1", data=b"\x7fELF" + bytes(range(256)) * 8, mode=0o755),
        E("usr/lib/libx.so", "symlink", link="libx.so.1"),
        E("opt/old/a", data=b"old a\n"), E("opt/old/b/c", data=b"old c\n"),
        E("var/fifo", "fifo", mode=0o600),
        E(LONG, data=b"long name\n"),
    ]
    if devices:
        base.append(E("dev", "dir"))
        base.append(E("dev/null", "char", mode=0o666, dev=(1, 3)))
    l2 = [
        E("etc", "dir"), E("etc/hostname", "whiteout"),
        E("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/user:/bin/sh\n"),
        E("etc/app.conf", data=b"listen = 0.0.0.0\n"),
        E("opt", "dir"), E("opt/old", "dir"),
        E("opt/old", "opaque", mode=0o755, mtime_ns=0),
        E("opt/old/new", data=b"replaces everything\n"),
        E("usr", "dir"), E("usr/lib", "dir"),
        # a whiteout written as a hard link with a stray link name, as some tools do
        dict(E("usr/lib/libx.so", "whiteout", link="usr/lib/libx.so.1"), tartype=tarfile.LNKTYPE),
        E("data", "dir"), E("data/gone", data=b"removed in layer 3\n"),
        E("data/keep", data=b"kept\n"),
    ]
    l3 = [
        E("data", "dir"), E("data/gone", "whiteout"),
        E("data/new", data=b"new in 3\n"),
        E("data/new-link", "hardlink", link="data/new"),
        E("data/rel", "symlink", link="../etc/passwd"),
        E("var", "dir"), E("var/log", "whiteout"),
        E("etc", "dir"), E("etc/app.conf", data=b"listen = 127.0.0.1\n", mode=0o640),
    ]
    return [base, l2, l3]


def sample_image(compression=None, tags=("localhost/sample:1.0",), devices=True):
    layers = sample_layers(devices)
    return Img([layer_tar(l) for l in layers], compression, tags)


# ---- the owners image: what an inspection audits (tests/integration/test_image_owners.py) ---

# a second v2 capability blob, unlike CAP: not effective, permitted and inheritable bit 13
CAP_PI = bytes.fromhex("0000000200200000002000000000000000000000")


def owners_layers():
    """Two layers, bottom first: setuid/setgid root files, file capabilities, char and block
    devices, FIFOs, files, links and directories of other owners, modes no owner could use."""
    base = [
        E("usr", "dir"), E("usr/bin", "dir"), E("bin", "symlink", link="usr/bin"),
        E("usr/bin/passwd", data=b"\x7fELF passwd\n", mode=0o4755),
        # a hard link's header carries its inode's mode, as tar writers do (podman applies it)
        E("usr/bin/passwd-hl", "hardlink", link="usr/bin/passwd", mode=0o4755),
        E("usr/bin/wall", data=b"wall\n", mode=0o2755, gid=5),
        E("usr/bin/ping", data=b"ping\n", mode=0o755, xattrs={"security.capability": CAP}),
        E("usr/bin/arping", data=b"arping\n", mode=0o710, gid=7,
          xattrs={"security.capability": CAP_PI, "user.note": b"kept"}),
        E("dev", "dir"),
        E("dev/null", "char", mode=0o666, dev=(1, 3)),
        E("dev/console", "char", mode=0o600, dev=(5, 1)),
        E("dev/sda", "block", mode=0o660, gid=6, dev=(8, 0)),
        E("dev/big", "char", mode=0o640, dev=(4095, 1048575)),
        E("etc", "dir"),
        E("etc/shadow", data=b"root:*:1::::::\n", mode=0o640, gid=42),
        E("etc/nothing", data=b"mode 0000\n", mode=0o000),
        E("etc/localtime", "symlink", link="/usr/share/zoneinfo/UTC"),
        E("tmp", "dir", mode=0o1777),
        E("srv", "dir", mode=0o2775, gid=50),
        E("srv/pipe", "fifo", mode=0o620, uid=33, gid=33),
        E("srv/nobody", data=b"the importer's own\n", uid=65534, gid=65534),
        E("srv/nobody-link", "symlink", link="nobody", uid=65534, gid=65534),
        E("home", "dir"),
        E("home/u", "dir", uid=1000, gid=1000),
        E("home/u/file", data=b"user file\n", uid=1000, gid=1000, mode=0o644),
        E("home/u/private", data=b"private\n", uid=1000, gid=1000, mode=0o600),
        E("home/u/link", "symlink", link="file", uid=1000, gid=1000),
        E("home/u/run", "fifo", mode=0o600, uid=1000, gid=1000),
        E("root", "dir", mode=0o700),
        E("root/.profile", data=b"root only\n", mode=0o600),
        E("opt/implied/file", data=b"its directories have no entries\n", uid=2, gid=3),
    ]
    top = [
        E("dev", "dir"), E("dev/console", "whiteout"),
        E("dev/tty", "char", mode=0o666, gid=5, dev=(5, 0)),
        E("usr", "dir"), E("usr/bin", "dir"),
        E("usr/bin/newgrp", data=b"newgrp\n", mode=0o4755),
        E("usr/bin/ping", data=b"ping v2\n", mode=0o755, xattrs={"security.capability": CAP}),
        E("home", "dir"), E("home/u", "dir", uid=1000, gid=1000, mode=0o750),
        E("home/u/file", data=b"user file, changed\n", uid=1000, gid=1000, mode=0o640),
    ]
    return [base, top]


def owners_image(compression=None, tags=("localhost/owners:1",)):
    return Img([layer_tar(l) for l in owners_layers()], compression, tags)


# ---- the inspect image: known waste, history and diffs (tests/unit/test_inspect_*.py) -------------

TOOL_V1 = bytes(range(64))
TOOL_V2 = bytes(range(64, 128))


def inspect_layers():
    """Three layers, bottom first, whose waste is known byte for byte (see test_inspect_waste)."""
    l1 = [
        E("app", "dir"), E("app/big", data=b"a" * 1000), E("app/blob", data=bytes(5000)),
        E("data", "dir"), E("data/tmp", data=b"t" * 300),
        E("etc", "dir"), E("etc/config", data=b"a\nb\nc\n"), E("etc/motd", data=b"m" * 80),
        E("cache", "dir"), E("cache/x", data=b"x" * 200), E("cache/y", data=b"y" * 100),
        E("keep", data=b"k" * 700),
        E("lib", "dir"), E("lib/a", data=b"l" * 400), E("lib/b", "hardlink", link="lib/a"),
        E("bin", "dir"), E("bin/tool", data=TOOL_V1, mode=0o755),
        E("evil", "symlink", link="/etc/passwd"), E("evildir", "symlink", link="/etc"),
    ]
    l2 = [
        E("app", "dir"), E("app/big", data=b"b" * 1200),
        E("app/blob", data=bytes(5000), mode=0o755),          # chmod only
        E("data", "dir"), E("data/tmp", "whiteout"),
        E("lib", "dir"), E("lib/a", data=b"0123456789"),
        E("etc", "dir"), E("etc/motd", data=b"m" * 80),       # the very same file again
    ]
    l3 = [
        E("etc", "dir"), E("etc/config", data=b"a\nB\nc\n"),
        E("cache", "dir"), E("cache", "opaque"), E("cache/z", data=b"z" * 50),
        E("app", "dir"), E("app/big", "whiteout"),
        E("bin", "dir"), E("bin/tool", data=TOOL_V2, mode=0o755),
    ]
    return [l1, l2, l3]


INSPECT_CREATED_BY = ["ADD base.tar /", "RUN build && chmod +x /app/blob",
                      "RUN configure && rm -rf /cache/* /app/big"]


def inspect_images():
    """The inspect image (3 layers, tagged inspect:1) and its base alone (inspect:base)."""
    tars = [layer_tar(l) for l in inspect_layers()]
    hist = [{"created": "2020-09-13T12:26:40Z", "created_by": c} for c in INSPECT_CREATED_BY]
    hist.insert(1, {"created": "2020-09-13T12:26:40Z", "created_by": "ENV A=1",
                    "empty_layer": True})
    full = Img(tars, None, ("localhost/inspect:1",),
               make_config([sha(t) for t in tars], history=hist))
    base = Img(tars[:1], None, ("localhost/inspect:base",),
               make_config([sha(tars[0])], history=hist[:1]))
    return [full, base]


def build_all(out, devices=True):
    """Write every fixture archive under out; returns {name: path}."""
    os.makedirs(out, exist_ok=True)
    p = {}
    p["docker-classic"] = docker_archive(os.path.join(out, "docker-classic.tar"),
                                         [sample_image(None, devices=devices)], "classic")
    p["docker-new"] = docker_archive(os.path.join(out, "docker-new.tar"),
                                     [sample_image(None, devices=devices)], "new")
    p["oci-dir"] = oci_layout(os.path.join(out, "oci-dir"), [sample_image("gzip", devices=devices)])
    p["oci-tar"] = oci_layout(os.path.join(out, "oci.tar"), [sample_image("zstd", devices=devices)],
                              as_tar=True)
    p["oci-mixed"] = oci_layout(os.path.join(out, "oci-mixed.tar"),
                                [sample_image([None, "gzip", "zstd"], devices=devices)], as_tar=True)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--sample":
        # the bundled sample: OCI archive, gzip layers, no device node (importable without root)
        print(oci_layout(argv[1], [sample_image("gzip", devices=False)], as_tar=True))
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: build_image_fixtures.py OUTDIR | --sample FILE", file=sys.stderr)
        return 2
    for name, path in build_all(argv[0]).items():
        print("%-15s %s" % (name, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
