"""Wasted bytes with exact answers, one cause at a time on small layer directories (OCI form, no
root needed), and dive's CI rules. (The fixture image's waste: test_inspect_image.py.)"""
import os

import pytest

from unionfs.inspect import stack as stackmod
from unionfs.inspect.layerindex import InspectError
from unionfs.inspect.waste import evaluate_ci, parse_bytes, read_ci_config, waste
from tests.unit.helpers import mkdir, write


def layers(tmp_path, *specs):
    """Layer directories, bottom first. A spec maps a path to bytes (a file), (bytes, mode),
    'wh' (an OCI whiteout), 'opq' (the directory is opaque), ('link', other) (a hard link)."""
    dirs = []
    for n, spec in enumerate(specs):
        root = mkdir(tmp_path / ("l%d" % n))
        for path, v in spec.items():
            p = os.path.join(root, path)
            head, _, base = p.rpartition("/")
            if v == "wh":
                write(os.path.join(head, ".wh." + base))
            elif v == "opq":
                write(os.path.join(p, ".wh..wh..opq"))
            elif isinstance(v, tuple) and v[0] == "link":
                os.link(os.path.join(root, v[1]), p)
            else:
                data, mode = v if isinstance(v, tuple) else (v, 0o644)
                write(p, data, mode)
                os.utime(p, ns=(10**18, 10**18))
        dirs.append(root)
    return stackmod.from_dirs(dirs)


def test_overwritten_file_wastes_exactly_its_size(tmp_path):
    r = waste(layers(tmp_path, {"f": b"a" * 1000}, {"f": b"b" * 1000}))
    assert r["wasted_bytes"] == 1000
    assert r["by_cause"] == {"overwritten": 1000, "metadata-only": 0, "duplicate": 0, "deleted": 0}
    assert r["copies"] == [{"path": "/f", "layer": 1, "size": 1000, "cause": "overwritten",
                            "hidden_by": 2}]
    assert (r["total_bytes"], r["visible_bytes"], r["user_bytes"]) == (2000, 1000, 1000)
    assert r["efficiency"] == 0.5 and r["user_wasted_percent"] == 1.0


def test_chmod_only_change_wastes_the_whole_file(tmp_path):
    r = waste(layers(tmp_path, {"f": (b"x" * 5000, 0o644)}, {"f": (b"x" * 5000, 0o755)}))
    assert r["wasted_bytes"] == 5000
    assert r["copies"][0]["cause"] == "metadata-only"
    assert r["by_cause"]["metadata-only"] == 5000


def test_whiteout_wastes_the_deleted_file(tmp_path):
    r = waste(layers(tmp_path, {"d/f": b"w" * 300, "keep": b"k" * 10}, {"d/f": "wh"}))
    assert r["wasted_bytes"] == 300
    assert r["copies"] == [{"path": "/d/f", "layer": 1, "size": 300, "cause": "deleted",
                            "hidden_by": 2}]
    # nothing in the user layers, yet 300 bytes wasted: no ratio, and the rule fails
    assert r["user_bytes"] == 0 and r["user_wasted_percent"] is None
    assert evaluate_ci(r, {"lowestEfficiency": "disabled"})[2]["status"] == "FAIL"


def test_one_count_per_removable_copy_not_dives_double_count(tmp_path):
    # three copies of one path: the two hidden ones are waste, the visible one is not
    r = waste(layers(tmp_path, {"f": b"1" * 100}, {"f": b"2" * 200}, {"f": b"3" * 400}))
    assert r["wasted_bytes"] == 300
    assert r["paths"] == [{"path": "/f", "wasted_bytes": 300, "copies": 2,
                           "causes": {"overwritten": 300}}]


def test_opaque_directory_and_identical_copy(tmp_path):
    r = waste(layers(tmp_path, {"c/x": b"x" * 200, "c/y": b"y" * 100, "m": b"m" * 80},
                     {"c": "opq", "c/z": b"z" * 50, "m": b"m" * 80}))
    assert r["by_cause"] == {"overwritten": 0, "metadata-only": 0, "duplicate": 80, "deleted": 300}


def test_hard_link_kept_visible_by_another_name_is_not_waste(tmp_path):
    st = layers(tmp_path, {"a": b"l" * 400, "b": ("link", "a")}, {"a": b"new"})
    assert st.infos[0].size == 400          # the data is shipped once
    r = waste(st)
    assert r["wasted_bytes"] == 0
    st2 = layers(tmp_path / "2", {"a": b"l" * 400, "b": ("link", "a")}, {"a": "wh", "b": "wh"})
    assert waste(st2)["wasted_bytes"] == 400


def test_whiteout_of_a_directory_wastes_its_subtree(tmp_path):
    r = waste(layers(tmp_path, {"d/a": b"a" * 10, "d/e/b": b"b" * 20}, {"d": "wh"}))
    assert r["wasted_bytes"] == 30 and r["by_cause"]["deleted"] == 30


def test_file_over_a_directory_hides_the_subtree(tmp_path):
    r = waste(layers(tmp_path, {"d/a": b"a" * 10}, {"d": b"now a file"}))
    assert r["copies"] == [{"path": "/d/a", "layer": 1, "size": 10, "cause": "deleted",
                            "hidden_by": 2}]


# ---- CI rules -------------------------------------------------------------------------------------

REPORT = {"efficiency": 0.8, "wasted_bytes": 6000, "user_wasted_percent": 0.25}


def statuses(rules):
    return [c["status"] for c in evaluate_ci(REPORT, rules)]


def test_ci_rules_dive_semantics():
    assert statuses({}) == ["FAIL", "SKIP", "FAIL"]        # dive's defaults: 0.9, disabled, 0.1
    assert statuses({"lowestEfficiency": "0.8", "highestWastedBytes": "6000",
                     "highestUserWastedPercent": "0.25"}) == ["PASS", "PASS", "PASS"]
    assert statuses({"lowestEfficiency": "0.81", "highestWastedBytes": "5999B",
                     "highestUserWastedPercent": "0.2"}) == ["FAIL", "FAIL", "FAIL"]
    assert statuses({"lowestEfficiency": "disabled", "highestWastedBytes": "6KB",
                     "highestUserWastedPercent": "disabled"}) == ["SKIP", "PASS", "SKIP"]


def test_byte_counts_and_bad_values():
    assert parse_bytes("20MB") == 20_000_000 and parse_bytes("1KiB") == 1024
    assert parse_bytes("5000") == 5000 and parse_bytes("1.5 kb") == 1500
    for bad in ("lots", "5XB", ""):
        with pytest.raises(InspectError):
            parse_bytes(bad)
    with pytest.raises(InspectError):
        evaluate_ci(REPORT, {"lowestEfficiency": "95"})


def test_dive_ci_file(tmp_path):
    p = tmp_path / ".dive-ci"
    p.write_text("rules:\n  # comment\n  lowestEfficiency: 0.95\n  highestWastedBytes: '20MB'\n"
                 "  highestUserWastedPercent: disabled  # off\nother: 1\n")
    assert read_ci_config(str(p)) == {"lowestEfficiency": "0.95", "highestWastedBytes": "20MB",
                                      "highestUserWastedPercent": "disabled"}
    with pytest.raises(InspectError):
        read_ci_config(str(tmp_path / "missing"))
