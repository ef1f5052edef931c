"""Merged listings (core/readdir.py) through the union, on real directories."""

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
