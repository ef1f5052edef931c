"""Hard links, symlinks, FIFOs, unix sockets and device nodes: created through the mount and
present in lowers."""
import os
import socket
import stat

import pytest

from tests.differential._diff import (DIFFERENTIAL, SELF_CHECK, Dev, Fifo, File, HardLink,
                                      Socket, Symlink, attempt, chdir, layers, ls, P, read,
                                      run_differential, st, write)

pytestmark = DIFFERENTIAL


def test_link_lower_file_shares_data(tmp_path):
    build = layers({"d/f": File(b"original", mode=0o640, uid=8, gid=9, xattrs={"user.x": b"1"})})

    def scenario(mnt):
        a, b = P(mnt, "d/f"), P(mnt, "d/g")
        out = [attempt(os.link, a, b), st(a, nlink=True), st(b, nlink=True)]
        out.append(attempt(write, b, b" via g", os.O_WRONLY | os.O_APPEND))
        out += [read(a), read(b)]
        out.append(attempt(os.chmod, a, 0o600))
        out += [st(a, nlink=True), st(b, nlink=True)]
        out.append(attempt(os.link, a, P(mnt, "third")))
        out += [st(a, nlink=True), attempt(os.unlink, a), st(b, nlink=True), read(P(mnt, "third"))]
        out.append(os.stat(b).st_ino == os.stat(P(mnt, "third")).st_ino)
        return out

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[2]["nlink"] == 2


def test_link_upper_files(tmp_path):
    build = layers({"d/x": b"x"})

    def scenario(mnt):
        a = P(mnt, "u")
        write(a, b"upper")
        out = [attempt(os.link, a, P(mnt, "d/u2")), st(a, nlink=True),
               st(P(mnt, "d/u2"), nlink=True)]
        with open(a, "r+b") as f:
            f.write(b"UP")
        out += [read(P(mnt, "d/u2")), os.stat(a).st_ino == os.stat(P(mnt, "d/u2")).st_ino]
        out += [attempt(os.unlink, a), st(P(mnt, "d/u2"), nlink=True)]
        return out

    run_differential(tmp_path, build, scenario)


def test_hardlinks_within_a_lower_report_nlink(tmp_path):
    build = layers({"a": b"shared", "b": HardLink("a"), "c": b"single"})

    def scenario(mnt):
        return [st(P(mnt, "a"), nlink=True), st(P(mnt, "b"), nlink=True),
                st(P(mnt, "c"), nlink=True), read(P(mnt, "b"))]

    run_differential(tmp_path, build, scenario)


def test_symlinks_created_and_in_lowers(tmp_path):
    build = layers({"lower_link": Symlink("target-in-lower"), "abs": Symlink("/etc/hostname"),
                    "tgt": b"target data", "rel": Symlink("tgt"), "dangling": Symlink("nope"),
                    "d/up": Symlink("../tgt")})

    def scenario(mnt):
        out = [attempt(os.symlink, "tgt", P(mnt, "new_link")),
               attempt(os.symlink, "x" * 1000, P(mnt, "long_target")),
               attempt(os.symlink, "../tgt", P(mnt, "d/new_up"))]
        for n in ("lower_link", "abs", "rel", "dangling", "d/up", "new_link", "long_target",
                  "d/new_up"):
            out += [attempt(os.readlink, P(mnt, n)), attempt(st, P(mnt, n))]
        out += [attempt(read, P(mnt, "rel")), attempt(read, P(mnt, "d/up")),
                attempt(read, P(mnt, "new_link")), attempt(read, P(mnt, "dangling")),
                attempt(os.readlink, P(mnt, "tgt"))]
        # rename and unlink of a lower symlink
        out += [attempt(os.rename, P(mnt, "rel"), P(mnt, "rel2")),
                attempt(os.readlink, P(mnt, "rel2")), attempt(os.unlink, P(mnt, "dangling")),
                ls(P(mnt))]
        return out

    run_differential(tmp_path, build, scenario)


def test_fifos(tmp_path):
    build = layers({"lower_fifo": Fifo(0o640)})

    def scenario(mnt):
        out = [attempt(os.mkfifo, P(mnt, "new_fifo"), 0o600), attempt(st, P(mnt, "new_fifo")),
               attempt(st, P(mnt, "lower_fifo"))]
        # a FIFO through the mount is a real FIFO: a writer and a reader in one process
        r = os.open(P(mnt, "new_fifo"), os.O_RDONLY | os.O_NONBLOCK)
        try:
            w = os.open(P(mnt, "new_fifo"), os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(w, b"through the pipe")
                out.append(os.read(r, 100))
            finally:
                os.close(w)
        finally:
            os.close(r)
        out += [attempt(os.rename, P(mnt, "lower_fifo"), P(mnt, "moved_fifo")),
                attempt(st, P(mnt, "moved_fifo")), ls(P(mnt))]
        return out

    run_differential(tmp_path, build, scenario)


def test_unix_socket_bind_inside_mount(tmp_path):
    build = layers({"d/x": b"x", "d/lower_sock": Socket()})

    def scenario(mnt):
        out = []
        with chdir(P(mnt, "d")):          # relative path: sun_path is only 108 bytes
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                out.append(attempt(srv.bind, "sock"))
                srv.listen(1)
                cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    out.append(attempt(cli.connect, "sock"))
                    conn, _ = srv.accept()
                    cli.sendall(b"ping")
                    out.append(conn.recv(10))
                    conn.close()
                finally:
                    cli.close()
            finally:
                srv.close()
        out += [st(P(mnt, "d/sock")), ls(P(mnt, "d")),
                attempt(os.rename, P(mnt, "d/sock"), P(mnt, "sock2")), st(P(mnt, "sock2")),
                attempt(st, P(mnt, "d/lower_sock")),
                attempt(os.chmod, P(mnt, "d/lower_sock"), 0o600),      # copy-up of a socket
                attempt(st, P(mnt, "d/lower_sock")),
                attempt(os.rename, P(mnt, "d/lower_sock"), P(mnt, "lower_sock2")),
                attempt(st, P(mnt, "lower_sock2")), ls(P(mnt, "d"))]
        return out

    res = run_differential(tmp_path, build, scenario)
    assert res.kernel.outcomes[0] is None


def test_device_nodes(tmp_path):
    build = layers({"dev/null": Dev(1, 3, mode=0o666), "dev/blk": Dev(7, 0, mode=0o600,
                                                                      kind=stat.S_IFBLK)})

    def scenario(mnt):
        out = [attempt(os.mknod, P(mnt, "dev/mynull"), stat.S_IFCHR | 0o640, os.makedev(1, 3)),
               attempt(st, P(mnt, "dev/mynull")), attempt(st, P(mnt, "dev/null")),
               attempt(st, P(mnt, "dev/blk")),
               attempt(os.chmod, P(mnt, "dev/null"), 0o644), attempt(st, P(mnt, "dev/null")),
               attempt(os.rename, P(mnt, "dev/blk"), P(mnt, "blk2")), attempt(st, P(mnt, "blk2")),
               ls(P(mnt, "dev"))]
        return out

    run_differential(tmp_path, build, scenario)


@pytest.mark.parametrize("flags", ["dev", "nodev"])
def test_device_node_opens_through_mount(tmp_path, flags):
    """A char 1:3 node (/dev/null) in a lower and one created through the mount: with "dev" both
    systems open, write and read it; with "nodev" (the kernel mounted nodev, unionfs with its
    default, which is nodev) both refuse to open it with EACCES."""
    build = layers({"lower_null": Dev(1, 3, mode=0o666)})

    def scenario(mnt):
        os.mknod(P(mnt, "upper_null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        out = []
        for n in ("lower_null", "upper_null"):
            out.append(attempt(write, P(mnt, n), b"discard", os.O_WRONLY))
            out.append(attempt(read, P(mnt, n)))
        return out

    if flags == "dev":
        res = run_differential(tmp_path, build, scenario, unionfs_options=("dev",))
        assert res.kernel.outcomes == [7, b"", 7, b""]
    else:
        res = run_differential(tmp_path, build, scenario, kernel_options=("nodev",),
                               unionfs_options=("default-nodev",) if SELF_CHECK else ())
        assert res.kernel.outcomes == ["EACCES"] * 4
