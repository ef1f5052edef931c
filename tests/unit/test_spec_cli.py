import os

import pytest

from unionfs import cli
from unionfs.spec import (MountSpec, SpecError, escape_colon, load_spec_file, parse_options,
                          split_escaped, validate)
from tests.unit.helpers import mkdir, write


# ---- splitting and options ---------------------------------------------------------------------

@pytest.mark.parametrize("s, sep, out", [
    ("a\\:b:c", ":", ["a:b", "c"]),
    ("a:b:c", ":", ["a", "b", "c"]),
    ("a\\\\:b", ":", ["a\\", "b"]),
    ("", ":", [""]),
    ("a,b\\,c", ",", ["a", "b,c"]),
    ("trailing\\", ":", ["trailing\\"]),
])
def test_split_escaped(s, sep, out):
    assert split_escaped(s, sep) == out


@pytest.mark.parametrize("path", ["/plain", "/with:colon", "/with,comma", "/back\\slash", "/a\\:b"])
def test_escape_colon_round_trips_through_parse_options(path):
    spec = MountSpec(lowers=[], mountpoint="/m")
    parse_options(["lowerdir=%s:/second,upperdir=%s,workdir=/w" % (escape_colon(path),
                                                                  escape_colon(path))], spec)
    assert spec.lowers == [path, "/second"]
    assert spec.upper == path


def _spec():
    return MountSpec(lowers=[], mountpoint="/m")


def test_parse_options_layers():
    s = _spec()
    parse_options(["lowerdir=/l1:/l2\\:x,upperdir=/u\\,v,workdir=/w"], s)
    assert s.lowers == ["/l1", "/l2:x"]
    assert s.upper == "/u,v"
    assert s.work == "/w"
    assert s.redirect_dir is True and s.sync is True and not s.read_only


def test_parse_options_repeated_and_flags():
    s = _spec()
    parse_options(["lowerdir=/a", "redirect_dir=off,volatile,ro", "allow_other,max_read=4096",
                   "x-systemd.foo,context=system_u,xino=on,rw"], s)
    assert s.lowers == ["/a"]
    assert s.redirect_dir is False
    assert s.sync is False
    assert s.read_only is True
    assert s.fuse == {"allow_other": True, "max_read": "4096"}


@pytest.mark.parametrize("value, expect", [("on", True), ("follow", True), ("off", False),
                                           ("nofollow", False)])
def test_redirect_dir_values(value, expect):
    s = _spec()
    s.redirect_dir = not expect
    parse_options(["redirect_dir=" + value], s)
    assert s.redirect_dir is expect


@pytest.mark.parametrize("opts, needle", [
    ("bogus", "bogus"),
    ("lowerdir=/a,frobnicate=1", "frobnicate"),
    ("redirect_dir=maybe", "maybe"),
    ("max_read", "max_read"),
    ("lowerdir=/a::/b", "empty"),
])
def test_parse_options_errors(opts, needle):
    with pytest.raises(SpecError) as e:
        parse_options([opts], _spec())
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_to_argv_round_trip():
    s = MountSpec(lowers=["/a:b", "/c"], mountpoint="/m", upper="/u,1", work="/w",
                  redirect_dir=False, sync=False, fuse={"allow_other": True, "max_read": "8"})
    argv = s.to_argv()
    assert argv[0] == "-o" and argv[-1] == "/m"
    t = MountSpec(lowers=[], mountpoint="/m")
    parse_options([argv[1]], t)
    assert (t.lowers, t.upper, t.work, t.redirect_dir, t.sync, t.fuse) == (
        s.lowers, s.upper, s.work, s.redirect_dir, s.sync, s.fuse)


# ---- validate ----------------------------------------------------------------------------------

@pytest.fixture
def d(tmp_path):
    class D:
        pass
    x = D()
    x.l1 = mkdir(tmp_path / "l1")
    x.l2 = mkdir(tmp_path / "l2")
    x.up = mkdir(tmp_path / "up")
    x.wk = mkdir(tmp_path / "wk")
    x.mnt = mkdir(tmp_path / "mnt")
    x.file = write(tmp_path / "afile", b"x")
    x.tmp = str(tmp_path)
    return x


def _bad(spec, *needles):
    with pytest.raises(SpecError) as e:
        validate(spec)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_validate_ok(d):
    s = validate(MountSpec(lowers=[d.l1, d.l2 + "/"], mountpoint=d.mnt + "/.", upper=d.up,
                           work=d.wk))
    assert s.lowers == [d.l1, d.l2]
    assert s.upper == d.up and s.work == d.wk and s.mountpoint == d.mnt


def test_validate_ok_read_only(d):
    s = validate(MountSpec(lowers=[d.l1], mountpoint=d.mnt, upper=d.up, work=d.wk, read_only=True))
    assert s.upper is None and s.work is None


def test_missing_lower(d):
    _bad(MountSpec(lowers=[], mountpoint=d.mnt), "lower")
    _bad(MountSpec(lowers=[d.l1, d.tmp + "/nope"], mountpoint=d.mnt), d.tmp + "/nope")


def test_lower_is_a_file(d):
    _bad(MountSpec(lowers=[d.file], mountpoint=d.mnt), d.file, "not a directory")


def test_upper_inside_lower(d):
    inner = mkdir(d.l1 + "/inner")
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.mnt, upper=inner, work=d.wk), inner, d.l1)


def test_lower_inside_upper(d):
    inner = mkdir(d.up + "/inner")
    _bad(MountSpec(lowers=[inner], mountpoint=d.mnt, upper=d.up, work=d.wk), inner, d.up)


def test_upper_equal_to_lower(d):
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.mnt, upper=d.l1, work=d.wk), d.l1)


def test_work_inside_upper(d):
    inner = mkdir(d.up + "/work")
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.mnt, upper=d.up, work=inner), inner, d.up)


def test_work_inside_lower(d):
    inner = mkdir(d.l2 + "/work")
    _bad(MountSpec(lowers=[d.l1, d.l2], mountpoint=d.mnt, upper=d.up, work=inner), inner, d.l2)


def test_upper_without_work_and_work_without_upper(d):
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.mnt, upper=d.up), d.up, "work")
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.mnt, work=d.wk), d.wk, "upper")


def test_missing_upper_and_work(d):
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.mnt, upper=d.tmp + "/nu", work=d.wk), d.tmp + "/nu")
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.mnt, upper=d.up, work=d.tmp + "/nw"), d.tmp + "/nw")


def test_mountpoint_missing(d):
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.tmp + "/nomnt"), d.tmp + "/nomnt")


def test_mountpoint_is_a_file(d):
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.file), d.file)


@pytest.mark.parametrize("where", ["lower", "inside_lower", "upper", "inside_work", "parent"])
def test_mountpoint_overlapping_a_layer(d, where):
    mnt = {"lower": d.l1, "inside_lower": mkdir(d.l2 + "/m"), "upper": d.up,
           "inside_work": mkdir(d.wk + "/m"), "parent": d.tmp}[where]
    msg = _bad(MountSpec(lowers=[d.l1, d.l2], mountpoint=mnt, upper=d.up, work=d.wk), mnt,
               "overlap")
    assert msg.startswith("mountpoint")


def test_symlinked_layer_resolved_for_overlap_checks(d, tmp_path):
    ln = str(tmp_path / "uplink")
    os.symlink(d.l1 + "/sub", ln)
    mkdir(d.l1 + "/sub")
    _bad(MountSpec(lowers=[d.l1], mountpoint=d.mnt, upper=ln, work=d.wk), "overlap")


def test_similar_prefix_is_not_overlap(d, tmp_path):
    l = mkdir(tmp_path / "layer")
    up = mkdir(tmp_path / "layer2")        # shares a string prefix, not a path prefix
    s = validate(MountSpec(lowers=[l], mountpoint=d.mnt, upper=up, work=d.wk))
    assert s.upper == up


# ---- spec files --------------------------------------------------------------------------------

def test_load_spec_file_relative_paths(tmp_path):
    sub = mkdir(tmp_path / "conf")
    p = write(tmp_path / "conf/spec.toml",
              b'lower = ["l1", "../l2", "/abs/l3"]\nupper = "up"\nwork = "wk"\n'
              b'options = ["volatile", "redirect_dir=off"]\n')
    old = os.getcwd()
    os.chdir("/")                  # relative to the spec file, not the working directory
    try:
        f = load_spec_file(p)
    finally:
        os.chdir(old)
    assert f["lower"] == [sub + "/l1", sub + "/../l2", "/abs/l3"]
    assert f["upper"] == sub + "/up" and f["work"] == sub + "/wk"
    assert f["options"] == ["volatile", "redirect_dir=off"]


def test_load_spec_file_lower_as_string_and_no_upper(tmp_path):
    p = write(tmp_path / "s.toml", b'lower = "only"\n')
    f = load_spec_file(p)
    assert f["lower"] == [str(tmp_path / "only")]
    assert "upper" not in f and f["options"] == []


@pytest.mark.parametrize("body, needle", [
    (b'lower = ["a"]\nbogus = 1\n', "bogus"),
    (b'upper = "u"\n', "lower"),
    (b'lower = []\n', "lower"),
    (b'lower = [1]\n', "lower"),
    (b'lower = [\n', "s.toml"),
])
def test_load_spec_file_errors(tmp_path, body, needle):
    p = write(tmp_path / "s.toml", body)
    with pytest.raises(SpecError) as e:
        load_spec_file(p)
    msg = str(e.value)
    assert needle in msg and p in msg and "\n" not in msg


def test_load_spec_file_missing(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec_file(str(tmp_path / "absent.toml"))
    assert "absent.toml" in str(e.value)


# ---- cli ---------------------------------------------------------------------------------------

def _one_line_error(capsys, *needles):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("unionfs")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def no_mount(monkeypatch):
    """cli.main must fail before mounting; make any attempt to mount a test failure."""
    from unionfs import mount as mountmod

    def forbidden(*a, **k):
        raise AssertionError("mount attempted")
    monkeypatch.setattr(mountmod, "mount", forbidden)
    monkeypatch.setattr(mountmod, "run_daemon", forbidden)


def test_cli_missing_lower(d, capsys, no_mount):
    bad = d.tmp + "/missing-lower"
    assert cli.main(["mount", "--lower", bad, d.mnt]) == 1
    _one_line_error(capsys, bad)


def test_cli_lower_is_file(d, capsys, no_mount):
    assert cli.main(["mount", "--lower", d.file, d.mnt]) == 1
    _one_line_error(capsys, d.file)


def test_cli_missing_mountpoint(d, capsys, no_mount):
    bad = d.tmp + "/no-mnt"
    assert cli.main(["mount", "--lower", d.l1, bad]) == 1
    _one_line_error(capsys, bad)


def test_cli_upper_without_work(d, capsys, no_mount):
    assert cli.main(["mount", "--lower", d.l1, "--upper", d.up, d.mnt]) == 1
    _one_line_error(capsys, d.up)


def test_cli_helper_form_bad_option_and_bad_path(d, capsys, no_mount):
    assert cli.main(["-o", "lowerdir=%s,nonsense" % d.l1, d.mnt]) == 1
    _one_line_error(capsys, "nonsense")
    bad = d.tmp + "/x:y"
    assert cli.main(["-o", "lowerdir=%s" % escape_colon(bad), d.mnt]) == 1
    _one_line_error(capsys, bad)
    assert cli.main(["none", d.mnt, "-o", "lowerdir=%s,upperdir=%s" % (d.l1, d.l1 + "/x")]) == 1
    _one_line_error(capsys, d.l1)


def test_cli_spec_file_errors(d, tmp_path, capsys, no_mount):
    p = write(tmp_path / "bad.toml", b'lower = ["a"]\nunknown = 2\n')
    assert cli.main(["mount", "--spec", p, d.mnt]) == 1
    _one_line_error(capsys, "unknown")
    p = write(tmp_path / "rel.toml", b'lower = ["does-not-exist"]\n')
    assert cli.main(["mount", "--spec", p, d.mnt]) == 1
    _one_line_error(capsys, str(tmp_path / "does-not-exist"))


def test_cli_valid_spec_reaches_mount(d, monkeypatch, capsys):
    from unionfs import mount as mountmod
    seen = []
    monkeypatch.setattr(mountmod, "mount",
                        lambda spec, layer_name: seen.append((spec, layer_name)))
    assert cli.main(["mount", "--lower", "%s:%s" % (d.l1, d.l2), "--upper", d.up,
                     "--work", d.wk, "-o", "volatile", d.mnt]) == 0
    ((spec, layer_name),) = seen
    # image layers in events and reports: by DiffID (the store imported only when asked)
    assert layer_name("/s/layers/%s/root" % ("ab" * 32)) == "sha256:" + "ab" * 32
    assert layer_name(d.l1) == d.l1
    assert spec.lowers == [d.l1, d.l2] and spec.upper == d.up and spec.work == d.wk
    assert spec.sync is False and spec.mountpoint == d.mnt


def test_cli_os_error_is_one_line(d, monkeypatch, capsys):
    from unionfs import mount as mountmod

    def fail(spec, layer_name):
        raise PermissionError(13, "Permission denied", "/dev/fuse")
    monkeypatch.setattr(mountmod, "mount", fail)
    assert cli.main(["mount", "--lower", d.l1, d.mnt]) == 1
    _one_line_error(capsys, "/dev/fuse", "Permission denied")


def test_cli_no_command(capsys):
    assert cli.main([]) == 2


# ---- property: escaping round-trips any list of layer paths -------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

_paths = st.text(alphabet=st.sampled_from("ab/:,\\ é"), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(_paths, min_size=1, max_size=4), _paths)
def test_escaped_options_round_trip(lowers, upper):
    s = MountSpec(lowers=lowers, mountpoint="/m", upper=upper, work=upper + "w")
    t = MountSpec(lowers=[], mountpoint="/m")
    parse_options([s.to_argv()[1]], t)
    assert t.lowers == lowers and t.upper == upper and t.work == upper + "w"
