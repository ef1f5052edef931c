"""unionfs/mounts.py without a mount: the mount table's owner and device, control files that are
not on the mount's device, another user's mount, and which /dev/fuse holder is a mount's daemon."""
import json
import os

import pytest

from unionfs import mounts
from unionfs.mounts import Mount, MountsError

MOUNTINFO = (
    b"22 1 0:21 / / rw - ext4 /dev/vda rw\n"
    b"45 27 0:40 / /tmp/a\\040b rw,nosuid,nodev - fuse.unionfs unionfs "
    b"rw,user_id=1000,group_id=1000,default_permissions\n"
    b"46 27 0:41 / /tmp/c rw - fuse.other other rw,user_id=0,group_id=0\n"
    b"47 27 0:42 / /tmp/c rw - fuse unionfs rw,user_id=0,group_id=0\n")


@pytest.fixture
def table(tmp_path, monkeypatch):
    p = tmp_path / "mountinfo"
    p.write_bytes(MOUNTINFO)
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(
        p if f == "/proc/self/mountinfo" else f, *a, **k))


def test_the_table_gives_owner_and_device(table):
    ms = mounts.mount_table()
    assert ms[1] == Mount("/tmp/a b", "fuse.unionfs", "unionfs", os.makedev(0, 40), 1000)
    assert ms[0].owner is None and ms[1].connection == 40
    # the topmost mount per path: /tmp/c's unionfs is over another FUSE filesystem
    assert [(m.mountpoint, m.connection) for m in mounts.unionfs_mounts()] == [
        ("/tmp/a b", 40), ("/tmp/c", 42)]


def stats_dir(tmp_path, layers):
    d = tmp_path / "mnt"
    (d / ".unionfs").mkdir(parents=True)
    (d / ".unionfs" / "stats").write_text(json.dumps({"pid": 1, "layers": layers}))
    return d


def test_a_control_file_off_the_mounts_device_is_refused(tmp_path):
    """A directory swapped in at MNT (or a symlink) serves a forged stats file."""
    d = stats_dir(tmp_path, [{"index": 0, "role": "lower", "dir": "/root"}])
    forged = Mount(str(d), "fuse.unionfs", "unionfs", os.makedev(0, 9999), 0)
    with pytest.raises(MountsError, match="not the mount's own control file"):
        mounts.layers_of(forged)
    here = Mount(str(d), "fuse.unionfs", "unionfs", os.stat(d).st_dev, 0)
    assert mounts.upper_and_lowers(here) == (None, ["/root"])   # the same file, on its device
    os.symlink(d / ".unionfs" / "stats", d / ".unionfs" / "trace")
    with pytest.raises(OSError):
        mounts.open_control(here, "trace")                     # O_NOFOLLOW


def test_another_users_mount_is_not_believed(tmp_path):
    d = stats_dir(tmp_path, [{"index": 0, "role": "upper", "dir": "/root"}])
    theirs = Mount(str(d), "fuse.unionfs", "unionfs", os.stat(d).st_dev, os.geteuid() + 1)
    with pytest.raises(MountsError, match="uid %d's mount" % (os.geteuid() + 1)):
        mounts.layers_of(theirs)
    bad = stats_dir(tmp_path / "b", {"dir": 1})
    with pytest.raises(MountsError, match="names no layers"):
        mounts.layers_of(Mount(str(bad), "fuse.unionfs", "unionfs", os.stat(bad).st_dev, 0))


def test_the_daemon_is_the_holder_of_the_connection(monkeypatch):
    m = Mount("/m", "fuse.unionfs", "unionfs", os.makedev(0, 40), 1000)
    uids = {7: 1000, 8: 1000, 9: 0}
    monkeypatch.setattr(mounts, "process_uid", uids.get)
    holders = {9: {3: 41}, 12: {5: 40}, 11: {4: 40, 6: 41}}
    assert mounts.daemon_of(m, claimed=9, holders=holders) == 11
    # fdinfo that names no connection (an older kernel): the claim must hold /dev/fuse and run
    # as the mount's owner
    assert mounts.daemon_of(m, claimed=7, holders={7: {3: None}}) == 7
    assert mounts.daemon_of(m, claimed=9, holders={9: {3: None}}) is None
    assert mounts.daemon_of(m, claimed=8, holders={7: {3: None}}) is None
    assert mounts.daemon_of(m, claimed=None, holders={}) is None


@pytest.mark.skipif(not os.access("/dev/fuse", os.R_OK | os.W_OK), reason="needs /dev/fuse")
def test_an_open_dev_fuse_is_found_with_no_connection_yet():
    """An fd of /dev/fuse not mounted yet belongs to no connection; other devices are not it."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert mounts.fuse_holders()[os.getpid()] == {fd: None}
    finally:
        os.close(fd)
        os.close(null)
    assert os.getpid() not in mounts.fuse_holders()
