"""Layer creation: a deterministic OCI layer tar from an upper's changes, and the new image.

The tar is PAX, entries sorted by path (parents first), headers normalised so that the same
change gives the same bytes and so the same DiffID: empty uname/gname, no atime/ctime, mtime from
the file (nanoseconds in a PAX record when it has a fraction), whiteouts and opaque markers as
empty regular files with mode 0 and mtime 0. Deletions are ``.wh.<name>``, opaque directories
get ``.wh..wh..opq``; hard links inside the layer are written as links to the first name (in
sorted order); xattrs are ``SCHILY.xattr.*`` records, except unionfs's and the kernel's private
``trusted.overlay.*`` / ``user.overlay.*``. Sockets cannot be stored in a tar and are skipped.

``commit_image`` writes the tar in the store's tmp dir, extracts it with the importer's safe
extractor (so a committed layer is stored exactly as an imported one), and registers a new image
whose config is the base's with the DiffID and a history entry appended.
"""
import json
import os
import stat
import tarfile

from ..core import ids
from . import extract, tarmember
from .digest import HashingWriter
from .store import normalize_ref, now_iso, rmtree, write_json_atomic


def _ti(name, kind, mode=0, mtime_ns=0, uid=0, gid=0):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = ""
    sec, frac = divmod(mtime_ns, 1_000_000_000)
    ti.mtime = sec
    ti.pax_headers = {}
    if frac:
        ti.pax_headers["mtime"] = "%d.%09d" % (sec, frac)
    return ti


def write_layer(entries, out):
    """Write the layer tar for entries ([(path, value)] from changes.Changes) to the binary file
    out. Returns (diff_id, tar bytes, skipped sockets)."""
    hw = HashingWriter(out)
    links = {}
    skipped = 0
    with tarfile.open(fileobj=hw, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for path, value in entries:
            if value[0] in ("whiteout", "opaque"):
                tar.addfile(_ti(path, tarfile.REGTYPE))
                continue
            real = value[1]
            st = os.lstat(real)
            # owners, modes, devices a daemon without root kept in override xattrs (ids.py)
            fmt, mode, uid, gid, rdev = ids.stored_view(real, st)
            ti = _ti(path, tarfile.REGTYPE, mode, st.st_mtime_ns, uid, gid)
            data = None
            if fmt == stat.S_IFDIR:
                ti.type = tarfile.DIRTYPE
            elif fmt == stat.S_IFREG:
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = links[key]
                else:
                    if st.st_nlink > 1:
                        links[key] = path
                    ti.size = st.st_size
                    data = real
            elif fmt == stat.S_IFLNK:
                ti.type = tarfile.SYMTYPE
                ti.linkname = (os.readlink(real) if stat.S_ISLNK(st.st_mode)
                               else ids.IdMapper(xattr_permissions=2).readlink(real))
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                ti.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = os.major(rdev), os.minor(rdev)
            elif fmt == stat.S_IFIFO:
                ti.type = tarfile.FIFOTYPE
            else:
                skipped += 1
                continue
            for k, v in ids.recorded_xattrs(real).items():
                ti.pax_headers[tarmember.XATTR_PAX + k] = v.decode("utf-8", "surrogateescape")
            if data is not None:
                with open(real, "rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)
    return hw.digest(), hw.n, skipped


def store_layer(store, tar_path, diff_id, tar_size, work):
    """Put a layer tar built in work/ into the store (extracted). Returns the stored layer dir."""
    if store.has_layer(diff_id):
        return store.layer_dir(diff_id)
    dest = os.path.join(work, "layer")
    os.mkdir(dest, 0o700)
    os.rename(tar_path, os.path.join(dest, "layer.tar"))
    root = os.path.join(dest, "root")
    os.mkdir(root, 0o755)
    res = extract.extract_tar(os.path.join(dest, "layer.tar"), root, what="committed layer")
    write_json_atomic(os.path.join(dest, "meta.json"), {
        "diff_id": diff_id, "size": res.size, "tar_size": tar_size, "entries": res.entries,
        "compression": "none", "added": now_iso(), "owners": res.owners})
    os.rename(dest, store.layer_dir(diff_id))
    return store.layer_dir(diff_id)


def new_config(base_config, diff_id, message=None, author=None, created=None):
    cfg = json.loads(json.dumps(base_config))
    created = created or now_iso()
    rootfs = cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("type", "layers")
    rootfs.setdefault("diff_ids", []).append(diff_id)
    hist = {"created": created, "created_by": "unionfs commit"}
    if author:
        hist["author"] = author
        cfg["author"] = author
    if message:
        hist["comment"] = message
    cfg.setdefault("history", []).append(hist)
    cfg["created"] = created
    return json.dumps(cfg, indent=None, separators=(",", ":")).encode()


def commit_image(store, base_image, changes, ref, message=None, author=None):
    """Commit the changes over base_image as a new image tagged ref. Returns (image id, diff_id)."""
    ref = normalize_ref(ref) if ref else None
    with store.lock():
        work = store.mkdtemp("commit-")
        try:
            tar_path = os.path.join(work, "layer.tar")
            with open(tar_path, "wb") as f:
                diff_id, size, _skipped = write_layer(changes.layer_entries(), f)
                f.flush()
                os.fsync(f.fileno())
            existed = store.has_layer(diff_id)
            layer_dir = store_layer(store, tar_path, diff_id, size, work)
            try:
                cfg = new_config(base_image.config, diff_id, message, author)
                image_id = store.add_image(cfg)
                if ref:
                    store.tag(ref, image_id)
            except BaseException:
                if not existed:
                    rmtree(layer_dir)
                raise
            return image_id, diff_id
        finally:
            rmtree(work)
