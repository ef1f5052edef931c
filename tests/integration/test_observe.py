"""Seeing the layers of a live mount: the .unionfs control directory, the user.unionfs.* xattrs,
the trace stream, and the which/trace/stats/status commands."""
import errno
import json
import os
import signal
import stat
import subprocess
import threading

import pytest

from tests.integration.conftest import daemon_pid, requires_daemon
from tests.unit.helpers import write
from tests.mountutil import ENV, UNIONFS, requires_fuse, run_unionfs, wait_for
from unionfs.trace import read_events

pytestmark = [requires_fuse, requires_daemon]


def stats(mnt):
    with open(os.path.join(mnt, ".unionfs", "stats"), "rb") as f:
        return json.loads(f.read())


def collect(mnt, action):
    """The events `action` causes, read from MNT/.unionfs/trace (up to the last one numbered)."""
    fd = os.open(os.path.join(mnt, ".unionfs", "trace"), os.O_RDONLY)
    try:
        gen = read_events(fd)
        first = next(gen)
        assert first["event"] == "subscribed" and first["v"] == 1
        action()
        target = stats(mnt)["events"]["seq"]
        out = []
        if target > first["seq"]:
            for ev in gen:
                if ev["event"] not in ("tick", "subscribed"):
                    out.append(ev)
                if ev.get("seq", 0) >= target:
                    break
        return out
    finally:
        os.close(fd)


def sh(cmd, cwd):
    subprocess.run(["sh", "-c", cmd], cwd=cwd, check=True)


def changes(events):
    return [e for e in events if e["event"] != "op"]


@pytest.fixture
def fx(stack2):
    """lower0: f (10 B), d/a; lower1: f (hidden, 3 B), d/b, dir/z, deep/x/y."""
    l0, l1 = stack2.lowers
    write(l0 / "f", b"0123456789")
    write(l1 / "f", b"old")
    write(l0 / "d" / "a", b"A")
    write(l1 / "d" / "b", b"B")
    write(l1 / "dir" / "z", b"Z")
    write(l1 / "deep" / "x" / "y", b"Y")
    os.symlink("f", l1 / "link")
    with stack2.mount() as mnt:
        stack2.mnt = mnt
        yield stack2


# ---- the control directory ------------------------------------------------------------------

def test_control_dir_is_hidden_stat_able_and_fixed(fx):
    mnt = fx.mnt
    ctl = os.path.join(mnt, ".unionfs")
    assert ".unionfs" not in os.listdir(mnt)
    assert stat.S_ISDIR(os.stat(ctl).st_mode)
    assert sorted(os.listdir(ctl)) == ["stats", "trace"]
    assert stat.S_IMODE(os.stat(ctl + "/stats").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(ctl + "/trace").st_mode) == 0o400
    os.mkdir(os.path.join(mnt, "x"))
    attempts = [
        (errno.EEXIST, lambda: os.mkdir(ctl)),
        (errno.EPERM, lambda: os.rmdir(ctl)),
        (errno.EPERM, lambda: os.rename(ctl, os.path.join(mnt, "y"))),
        (errno.EPERM, lambda: os.rename(os.path.join(mnt, "x"), ctl)),
        (errno.EPERM, lambda: os.unlink(ctl + "/stats")),
        (errno.EPERM, lambda: os.mkdir(ctl + "/new")),
        (errno.EPERM, lambda: open(ctl + "/new", "w")),
        (errno.EPERM, lambda: os.chmod(ctl + "/stats", 0o666)),
        (errno.EPERM, lambda: os.setxattr(ctl + "/stats", "user.x", b"1")),
        (errno.EACCES, lambda: open(ctl + "/stats", "w")),
    ]
    for code, fn in attempts:
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == code, fn
    assert sorted(os.listdir(fx.upper)) == ["x"]


def test_stats_counts_what_happened(fx):
    mnt = fx.mnt
    # the write is counted while the trace is read: otherwise (root) the kernel may write the
    # copied-up file itself (FUSE passthrough) and the daemon never sees it
    trace = os.open(os.path.join(mnt, ".unionfs", "trace"), os.O_RDONLY)
    try:
        sh("echo x >> f", mnt)
    finally:
        os.close(trace)
    sh("rm d/a && cat dir/z > /dev/null", mnt)
    doc = stats(mnt)
    assert doc["v"] == 1 and doc["pid"] == daemon_pid(mnt)
    assert doc["copyups"] == 2  # f, and the directory d that the whiteout goes into
    assert doc["copyup_bytes"] == 10
    assert doc["whiteouts"] == 1
    assert doc["ops"]["write"]["count"] == 1
    assert doc["ops"]["unlink"]["count"] == 1
    assert 0 < doc["ops"]["write"]["p50_us"] <= doc["ops"]["write"]["p99_us"]
    assert len(doc["lookups"]["per_layer"]) == 3 and sum(doc["lookups"]["per_layer"]) > 0
    assert doc["cache"]["misses"] > 0
    assert doc["open_files"] == 0
    assert [l["dir"] for l in doc["layers"]] == [str(fx.upper)] + [str(l) for l in fx.lowers]
    with open(os.path.join(mnt, "f")) as f:
        assert stats(mnt)["open_files"] == 1
        f.read()


# ---- xattrs ---------------------------------------------------------------------------------

def test_xattrs_name_the_layers_and_are_not_listed_or_settable(fx):
    mnt = fx.mnt
    f = os.path.join(mnt, "f")
    assert os.getxattr(f, "user.unionfs.source") == os.fsencode(fx.lowers[0])
    doc = json.loads(os.getxattr(f, "user.unionfs.layers"))
    assert [(e["index"], e["state"]) for e in doc["layers"]] == [(1, "serves"), (2, "hidden")]
    assert os.getxattr(mnt, "user.unionfs.source:link") == os.fsencode(fx.lowers[1])
    assert not [n for n in os.listxattr(f) if n.startswith("user.unionfs")]
    for fn in (lambda: os.setxattr(f, "user.unionfs.source", b"x"),
               lambda: os.removexattr(f, "user.unionfs.source")):
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.getxattr(f, "user.unionfs.nothing")
    assert e.value.errno == errno.ENODATA
    assert os.listdir(fx.upper) == []  # nothing stored, nothing copied up


def test_which_command(fx):
    mnt = fx.mnt
    sh("rm f", mnt)
    p = run_unionfs("which", os.path.join(mnt, "d", "b"))
    assert p.returncode == 0 and p.stdout == "%s/d/b: lower 2 %s\n" % (mnt, fx.lowers[1])
    p = run_unionfs("which", "--all", "--csv", os.path.join(mnt, "f"))
    assert p.stdout.splitlines() == [
        "LAYER,WHAT,TYPE,SIZE,SOURCE,PATH",
        "upper,\"whited out, hides below\",whiteout,,%s,f" % fx.upper,
        "lower 1,hidden,file,10,%s,f" % fx.lowers[0],
        "lower 2,hidden,file,3,%s,f" % fx.lowers[1]]
    doc = json.loads(run_unionfs("which", "--json", os.path.join(mnt, "link")).stdout)
    assert doc["version"] == 1 and doc["command"] == "which" and doc["mount"] == str(mnt)
    assert doc["path"] == "/link" and doc["source"] == str(fx.lowers[1])
    assert doc["layers"][0]["type"] == "symlink"
    for bad in (os.path.join(mnt, "nowhere"), "/"):
        p = run_unionfs("which", bad)
        assert p.returncode == 1 and p.stderr.startswith("unionfs: ")
        assert len(p.stderr.splitlines()) == 1


def test_which_names_image_store_layers_by_diffid(tmp_path):
    from tests.integration.conftest import union
    hexid = "c0" * 32
    root = tmp_path / "store" / "layers" / hexid / "root"
    write(root / "etc" / "motd", b"hi")
    mnt = tmp_path / "mnt"
    with union([root], None, None, mnt) as m:
        assert os.getxattr(os.path.join(m, "etc", "motd"),
                           "user.unionfs.source") == b"sha256:" + hexid.encode()


# ---- the trace stream -----------------------------------------------------------------------

def test_append_to_lower_file_is_one_copyup_then_the_write(fx):
    evs = collect(fx.mnt, lambda: sh("echo x >> f", fx.mnt))
    assert [(e["event"], e["path"], e["bytes"], e["layer"]) for e in changes(evs)] == [
        ("copyup", "/f", 10, 1)]
    writes = [i for i, e in enumerate(evs) if e.get("op") == "write" and e["event"] == "op"]
    assert len(writes) == 1 and writes[0] > evs.index(changes(evs)[0])
    assert evs[writes[0]]["bytes"] == 2 and evs[writes[0]]["errno"] == 0
    assert evs[0]["pid"] > 0 and evs[0]["us"] >= 0


def test_rm_of_lower_file_is_one_whiteout(fx):
    evs = collect(fx.mnt, lambda: sh("rm f", fx.mnt))
    assert [(e["event"], e["path"], e["upper"], e["lower_bytes"], e["op"])
            for e in changes(evs)] == [("whiteout", "/f", str(fx.upper / "f"), 10, "unlink")]
    assert [(e["op"], e["path"], e["errno"]) for e in evs if e["event"] == "op"] == [
        ("unlink", "/f", 0)]


def test_rmdir_mkdir_of_merged_dir_is_opaque(fx):
    sh("rm -r d/a d/b", fx.mnt)
    evs = collect(fx.mnt, lambda: sh("rmdir d && mkdir d", fx.mnt))
    assert [(e["event"], e["path"], e["op"]) for e in changes(evs)] == [
        ("whiteout", "/d", "rmdir"), ("opaque", "/d", "mkdir")]
    assert changes(evs)[1]["hides"] is True


def test_mv_of_lower_dir_is_a_redirect(fx):
    evs = collect(fx.mnt, lambda: sh("mv dir newname", fx.mnt))
    assert [(e["event"], e["path"]) for e in changes(evs)] == [
        ("copyup", "/dir"), ("redirect", "/newname"), ("whiteout", "/dir")]
    assert changes(evs)[1]["redirect"] == "dir"
    assert changes(evs)[0]["bytes"] == 0
    assert [(e["op"], e["path"], e["to"]) for e in evs if e["event"] == "op"] == [
        ("rename", "/dir", "/newname")]


def test_trace_readers_are_capped(fx):
    path = os.path.join(fx.mnt, ".unionfs", "trace")
    fds = []
    try:
        for _ in range(4):
            fds.append(os.open(path, os.O_RDONLY))
        with pytest.raises(OSError) as e:
            os.open(path, os.O_RDONLY)
        assert e.value.errno == errno.EBUSY
    finally:
        for fd in fds:
            os.close(fd)
    assert wait_for(lambda: stats(fx.mnt)["events"]["subscribers"] == 0)


def test_trace_command_narrates_what_it_caused(fx):
    p = run_unionfs("trace", "--", "sh", "-c", "rm %s/f; mkdir %s/new" % (fx.mnt, fx.mnt))
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "unlink /f → whiteout at upper/f; lower untouched; lower 1 still ships 10 B for it",
        "mkdir /new → opaque directory at upper/new"]  # the kernel's mark in a merged dir
    p = run_unionfs("trace", "--json", "--", "sh", "-c", "cat f >/dev/null; exit 3",
                    cwd=fx.mnt)
    doc = json.loads(p.stdout)
    assert p.returncode == 3 and doc["status"] == 3 and doc["events"] == []
    assert doc["version"] == 1 and doc["command"] == "trace"
    p = run_unionfs("trace", "--", "true")
    assert p.returncode == 1 and p.stderr.startswith("unionfs: trace: ")


def test_trace_stream_command(fx):
    proc = subprocess.Popen(UNIONFS + ["trace", str(fx.mnt), "--json"], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: stats(fx.mnt)["events"]["subscribers"] == 1)
        sh("rm d/a", fx.mnt)
        guard = threading.Timer(20, proc.send_signal, (signal.SIGINT,))  # never hang here
        guard.start()
        lines = [json.loads(proc.stdout.readline() or "null") for _ in range(3)]
        guard.cancel()
        assert [(e["event"], e["path"]) for e in lines] == [
            ("copyup", "/d"), ("whiteout", "/d/a"), ("op", "/d/a")]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


# ---- stats and status commands --------------------------------------------------------------

def test_stats_and_status_commands(fx):
    mnt = fx.mnt
    sh("rm f", mnt)
    doc = json.loads(run_unionfs("stats", "--json", mnt).stdout)
    assert doc["version"] == 1 and doc["command"] == "stats" and doc["whiteouts"] == 1
    prom = run_unionfs("stats", "--prom", mnt).stdout.splitlines()
    assert 'unionfs_whiteouts_total{mount="%s"} 1' % mnt in prom
    csv = run_unionfs("stats", "--csv", mnt).stdout.splitlines()
    assert csv[0] == "OP,COUNT,P50_US,P99_US" and any(l.startswith("unlink,1,") for l in csv)
    text = run_unionfs("stats", mnt).stdout
    assert "whiteouts 1" in text and "daemon pid %d" % daemon_pid(mnt) in text
    st = json.loads(run_unionfs("status", "--json").stdout)
    mine = [m for m in st["mounts"] if m["mount"] == os.path.realpath(mnt)]
    assert len(mine) == 1 and mine[0]["pid"] == daemon_pid(mnt) and mine[0]["state"] == "ok"
    assert mine[0]["rss_bytes"] > 0 and mine[0]["fds"] > 0 and len(mine[0]["layers"]) == 3
    rows = run_unionfs("status", "--csv").stdout.splitlines()
    assert rows[0] == "MOUNT,STATE,PID,LAYERS,RSS,CPU_S,FDS,OPEN_FILES"
    assert any(r.startswith("%s,ok,%d,2 lower + upper," % (os.path.realpath(mnt),
                                                           daemon_pid(mnt))) for r in rows)
    p = run_unionfs("stats", "/")
    assert p.returncode == 1 and p.stderr == "unionfs: /: not inside a unionfs mount\n"
