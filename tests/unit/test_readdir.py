"""Merged listings (core/readdir.py) through the union, on real directories."""
import os

from tests.unit.helpers import needs_root

pytestmark = needs_root


def test_listdir_dino_matches_getattr_ino(env):
    u = env[0]
    for name, _code, ino, _full in u.listdir("/d"):
        if name not in (".", ".."):
            assert ino == u.getattr("/d/" + name)[1]
    # readdirplus: the full attributes equal what getattr returns for each entry
    for name, _code, ino, full in u.listdir("/d", plus=True):
        if name not in (".", ".."):
            st, fino, nlink = u.getattr("/d/" + name)
            assert full[1] == fino == ino and full[2] == nlink
            assert (full[0].st_mode, full[0].st_size) == (st.st_mode, st.st_size)


def test_a_listing_keeps_no_resolution_of_the_lower_files_it_shows(env):
    """Its entry holds what is served of a lower file (st_ino, attributes): a resolution kept
    for each of them doubled a walk's memory. Directories and upper entries stay cached."""
    u, lower, upper, work = env
    os.mkdir(upper + "/d")
    with open(upper + "/d/up", "wb") as f:
        f.write(b"u")
    u.cache.clear()
    listed = {name: (ino, full) for name, _code, ino, full in u.listdir("/d", plus=True)}
    assert u.cache.get("/d/a") is None
    assert u.cache.get("/d/sub") is not None and u.cache.get("/d/up") is not None
    # served the same whether resolved again or not
    for name in ("a", "sub", "up"):
        st, ino, nlink = u.getattr("/d/" + name)
        assert listed[name][0] == ino and listed[name][1][1:] == (ino, nlink)
    assert [e[:3] for e in u.listdir("/d", plus=True)] == [e[:3] for e in u.listdir("/d")]
