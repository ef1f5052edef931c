"""uid/gid mapping and squashing, checked against fuse-overlayfs itself (the options are its own):
the same lowers and the same operations through both mounts must show the same owners, and
store the same owners in each upper."""
import os
import shutil
import subprocess

import pytest

from tests.mountutil import requires_fuse, requires_root, unionfs_mount, unmount, wait_for, is_mounted

pytestmark = [requires_fuse, requires_root,
              pytest.mark.skipif(shutil.which("fuse-overlayfs") is None,
                                 reason="needs fuse-overlayfs (the reference for these options)")]

OWNERS = {"root": (0, 0), "one": (1, 1), "user": (1000, 1000), "sub": (100005, 100006),
          "outside": (5000, 5000)}


def build(lower):
    os.makedirs(lower + "/d")
    for name, (uid, gid) in OWNERS.items():
        p = "%s/d/%s" % (lower, name)
        with open(p, "w") as f:
            f.write(name)
        os.chown(p, uid, gid)
    os.chown(lower + "/d", 1, 1)


def fuse_overlayfs_mount(lower, upper, work, mnt, options):
    os.makedirs(mnt, exist_ok=True)
    opts = ",".join(["lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work] + list(options))
    subprocess.run(["fuse-overlayfs", "-o", opts, mnt], check=True, capture_output=True,
                   timeout=30)
    assert wait_for(lambda: is_mounted(mnt))
    return mnt


def owners(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_uid, st.st_gid)
    return out


def scenario(mnt):
    """Owners seen before and after chowns and a create; returns what the mount showed."""
    seen = [owners(mnt)]
    os.chown(mnt + "/d/root", 1000, 1000)        # a shown id inside the first range
    os.chown(mnt + "/d/one", 110005, 110007)     # inside the second range
    os.chown(mnt + "/d/user", 42, 43)            # no range covers it
    with open(mnt + "/d/new", "w") as f:         # owner: the caller (root), unmapped
        f.write("n")
    os.mkdir(mnt + "/newdir")
    seen.append(owners(mnt))
    return seen


def run_both(tmp_path, options):
    results = {}
    for name in ("fuse-overlayfs", "unionfs"):
        base = tmp_path / name
        lower, upper, work, mnt = (str(base / n) for n in ("lower", "upper", "work", "mnt"))
        build(lower)
        os.makedirs(upper)
        os.makedirs(work)
        if name == "unionfs":
            with unionfs_mount([lower], upper, work, mnt, options=options):
                seen = scenario(mnt)
        else:
            try:
                fuse_overlayfs_mount(lower, upper, work, mnt, options)
                seen = scenario(mnt)
            finally:
                unmount(mnt)
        stored = {k: v for k, v in owners(upper).items()}
        results[name] = (seen, stored)
    return results


@pytest.mark.parametrize("options", [
    ("uidmapping=0:1000:1:1:110000:65536", "gidmapping=0:1000:1:1:110000:65536"),
    # as container storage writes them, with a leading ':'
    ("uidmapping=:0:100000:65536", "gidmapping=:0:100000:65536"),
    ("squash_to_root",),
    ("squash_to_uid=7", "squash_to_gid=8"),
    ("squash_to_root", "squash_to_uid=9"),
], ids=["two-ranges", "leading-colon", "squash-root", "squash-uid-gid", "uid-over-root"])
def test_same_owners_as_fuse_overlayfs(tmp_path, options):
    res = run_both(tmp_path, options)
    fo_seen, fo_stored = res["fuse-overlayfs"]
    u_seen, u_stored = res["unionfs"]
    assert u_seen == fo_seen
    # what each stored in its upper (fuse-overlayfs leaves nothing for unchanged parents it
    # did not copy up, so compare the entries both have)
    common = set(fo_stored) & set(u_stored)
    assert {"d/root", "d/one", "d/user", "d/new", "newdir"} <= common
    assert {k: u_stored[k] for k in common} == {k: fo_stored[k] for k in common}


def test_mapping_shows_and_stores_known_ids(tmp_path):
    """Known answers, independent of the reference: A+k on disk shows as B+k; B+k written is
    stored as A+k; ids no range covers show as the overflow id."""
    lower, upper, work, mnt = (str(tmp_path / n) for n in ("lower", "upper", "work", "mnt"))
    build(lower)
    os.makedirs(upper)
    os.makedirs(work)
    with unionfs_mount([lower], upper, work, mnt,
                       options=["uidmapping=0:1000:1:1:110000:65536",
                                "gidmapping=0:1000:1:1:110000:65536"]):
        assert os.stat(mnt + "/d/root")[4:6] == (1000, 1000)
        assert os.stat(mnt + "/d/one")[4:6] == (110000, 110000)
        assert os.stat(mnt + "/d/sub")[4:6] == (65534, 65534)     # beyond 1+65536: unmapped
        assert os.stat(mnt + "/d/user")[4:6] == (110999, 110999)
        os.chown(mnt + "/d/outside", 110010, 1000)
        assert os.stat(mnt + "/d/outside")[4:6] == (110010, 1000)
    st = os.stat(upper + "/d/outside")
    assert (st.st_uid, st.st_gid) == (11, 0)


def test_bad_mapping_is_one_line_error(tmp_path):
    from tests.mountutil import run_unionfs
    lower, upper, work, mnt = (str(tmp_path / n) for n in ("lower", "upper", "work", "mnt"))
    for d in (lower, upper, work, mnt):
        os.makedirs(d)
    for bad in ("uidmapping=0:1000", "gidmapping=a:b:c", "uidmapping=0:1:0", "squash_to_uid=x",
                "xattr_permissions=3"):
        proc = run_unionfs("mount", "--lower", lower, "--upper", upper, "--work", work,
                           "-o", bad, mnt)
        assert proc.returncode == 1
        assert proc.stderr.startswith("unionfs: option ") and proc.stderr.count("\n") == 1
        assert not is_mounted(mnt)
