"""The inspection verbs through the real command line: history, find, cat, waste (--ci, --json,
--csv), diff of a layer and of two images, commit --dry-run, and history of a path in a live
image mount. Expected answers are worked out by hand from build_image_fixtures.inspect_layers."""
import base64
import csv
import io
import json
import os
import stat

import pytest

from tests.mountutil import (load_script, requires_fuse, requires_root, run_unionfs,
                             unionfs_mount, unmount)

fx = load_script("build_image_fixtures")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    base = tmp_path_factory.mktemp("inspect-cli")
    archive = fx.docker_archive(str(base / "a.tar"), fx.inspect_images(), "new")
    s = str(base / "store")
    r = run_unionfs("image", "import", archive, "--store", s)
    assert r.returncode == 0, r.stderr
    return s


def uf(store, *args, rc=0, error=None):
    """Run a command; rc 1 is an error (one line on stderr) unless error=False."""
    r = run_unionfs(*(list(args) + ["--store", store]))
    assert r.returncode == rc, (args, r.stdout, r.stderr)
    if rc == 1 and error is not False:
        assert r.stderr.startswith("unionfs: ") and r.stderr.count("\n") == 1, r.stderr
    return r


def test_waste_json_csv_and_table(store):
    doc = json.loads(uf(store, "waste", "inspect:1", "--json").stdout)
    assert doc["version"] == 1 and doc["command"] == "waste"
    assert (doc["total_bytes"], doc["wasted_bytes"], doc["user_bytes"]) == (14260, 7950, 6410)
    assert doc["by_cause"] == {"overwritten": 1070, "metadata-only": 5000, "duplicate": 80,
                               "deleted": 1800}
    assert [l["created_by"] for l in doc["layers"]] == fx.INSPECT_CREATED_BY
    assert "ci" not in doc
    rows = list(csv.reader(io.StringIO(uf(store, "waste", "inspect:1", "--csv").stdout)))
    assert rows[0] == ["path", "layer", "size", "cause", "hidden_by"]
    assert ["/app/blob", "1", "5000", "metadata-only", "2"] in rows and len(rows) == 10
    out = uf(store, "waste", "inspect:1").stdout
    assert "wasted: 7950 bytes" in out and "efficiency: 0.4425" in out


def test_waste_ci_rules(store):
    r = uf(store, "waste", "inspect:1", "--ci", rc=1, error=False)
    assert r.stdout.splitlines()[-3:] == [
        "FAIL: lowestEfficiency: efficiency 0.4425 < threshold 0.9",
        "SKIP: highestWastedBytes: disabled",
        "FAIL: highestUserWastedPercent: user wasted ratio 1.2402 > threshold 0.1"]
    r = uf(store, "waste", "inspect:1", "--lowest-efficiency", "0.44", "--highest-wasted-bytes",
           "7950", "--highest-user-wasted-percent", "disabled", "--json")
    ci = json.loads(r.stdout)["ci"]
    assert ci["pass"] is True and [c["status"] for c in ci["rules"]] == ["PASS", "PASS", "SKIP"]
    uf(store, "waste", "inspect:1", "--highest-wasted-bytes", "7949", rc=1, error=False)
    uf(store, "waste", "inspect:1", "--highest-wasted-bytes", "many", rc=1)


def test_waste_dive_ci_file(store, tmp_path):
    cfg = tmp_path / ".dive-ci"
    cfg.write_text("rules:\n  lowestEfficiency: 0.4\n  highestWastedBytes: 8KB\n"
                   "  highestUserWastedPercent: disabled\n")
    r = uf(store, "waste", "inspect:1", "--ci-config", str(cfg))
    assert [l.split(":")[0] for l in r.stdout.splitlines()[-3:]] == ["PASS", "PASS", "SKIP"]


def test_history_find_cat(store):
    doc = json.loads(uf(store, "history", "inspect:1", "/app/blob", "--json").stdout)
    assert doc["version"] == 1 and doc["visible"] and doc["origin_layer"] == 2
    assert [(e["layer"], e["event"], e["size"], e["created_by"]) for e in doc["events"]] == [
        (1, "added", 5000, "ADD base.tar /"),
        (2, "metadata-only", 5000, "RUN build && chmod +x /app/blob")]
    out = uf(store, "history", "inspect:1", "/app/big").stdout
    assert out.splitlines()[0] == "/app/big in localhost/inspect:1: not visible"
    rows = list(csv.reader(io.StringIO(
        uf(store, "find", "inspect:1", "big", "--all-layers", "--csv").stdout)))
    assert rows == [["PATH", "LAYER", "TYPE", "SIZE", "STATUS", "HIDDEN BY"],
                    ["/app/big", "1", "file", "1000", "overwritten", "2"],
                    ["/app/big", "2", "file", "1200", "deleted", "3"]]
    assert json.loads(uf(store, "find", "inspect:1", "big", "--json").stdout)["matches"] == []
    assert uf(store, "cat", "inspect:1", "/app/big", "--layer", "2").stdout == "b" * 1200
    assert uf(store, "cat", "inspect:1", "etc/config").stdout == "a\nB\nc\n"
    doc = json.loads(uf(store, "cat", "inspect:1", "/bin/tool", "--layer", "1", "--json").stdout)
    assert doc["size"] == 64 and doc["text"] is None and doc["layer"] == 1
    assert base64.b64decode(doc["base64"]) == fx.TOOL_V1


def test_diff_layer_and_images(store):
    out = uf(store, "diff", "inspect:1", "--layer", "3", "-u").stdout
    nonl = "\n\\ No newline at end of file\n"

    def gone(path, data):      # a deleted text file, diffed to /dev/null
        return "D %s\n--- a%s\n+++ /dev/null\n@@ -1 +0,0 @@\n-%s%s" % (path, path, data, nonl)
    assert out == (gone("/app/big", "b" * 1200)
                   + "C /bin/tool\nBinary files a/bin/tool and b/bin/tool differ\n"
                   + gone("/cache/x", "x" * 200) + gone("/cache/y", "y" * 100)
                   + "A /cache/z\n--- /dev/null\n+++ b/cache/z\n@@ -0,0 +1 @@\n+" + "z" * 50 + nonl
                   + "C /etc/config\n"
                   "--- a/etc/config\n+++ b/etc/config\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n")
    doc = json.loads(uf(store, "diff", "inspect:base", "inspect:1", "--json").stdout)
    assert doc["version"] == 1 and doc["image_a"] == "localhost/inspect:base"
    assert [(c["change"], c["path"]) for c in doc["changes"]][:3] == [
        ("deleted", "/app/big"), ("changed", "/app/blob"), ("changed", "/bin/tool")]
    assert doc["changes"][1]["detail"] == "metadata only: mode 0644 -> 0755"


def test_bad_input_is_one_line(store):
    uf(store, "waste", "nosuch", rc=1)
    uf(store, "diff", "inspect:1", "--layer", "9", rc=1)
    uf(store, "diff", "inspect:1", "inspect:base", "--layer", "1", rc=1)
    uf(store, "cat", "inspect:1", "/evil", rc=1)
    uf(store, "cat", "inspect:1", "/app", rc=1)
    uf(store, "find", "inspect:1", "x", "--json", "--csv", rc=1)
    uf(store, "history", "/", rc=1)


@requires_root
def test_upper_diff_and_commit_dry_run(store, tmp_path):
    up = tmp_path / "upper"
    (up / "etc").mkdir(parents=True)
    (up / "etc" / "config").write_bytes(b"new\n")
    os.mknod(str(up / "keep"), stat.S_IFCHR, os.makedev(0, 0))
    r = uf(store, "diff", str(up), "--image", "inspect:1")
    assert r.stdout == "C /etc\nC /etc/config\nD /keep\n"          # unchanged behaviour
    doc = json.loads(uf(store, "diff", str(up), "--image", "inspect:1", "--json").stdout)
    assert doc["changes"][-1] == {"path": "/keep", "change": "deleted"}
    layers = sorted(os.listdir(os.path.join(store, "layers")))
    doc = json.loads(uf(store, "commit", str(up), "--image", "inspect:1", "--dry-run",
                        "--json").stdout)
    assert [(e["name"], e["type"]) for e in doc["entries"]] == [
        (".wh.keep", "whiteout"), ("etc", "dir"), ("etc/config", "file")]
    assert doc["content_bytes"] == 4 and doc["dry_run"] is True
    out = uf(store, "commit", str(up), "--image", "inspect:1", "--dry-run").stdout
    assert out.splitlines()[-1].startswith("would add layer sha256:")
    assert sorted(os.listdir(os.path.join(store, "layers"))) == layers
    uf(store, "commit", str(up), "--image", "inspect:1", rc=1)     # no name, no --dry-run


@requires_fuse
@requires_root
def test_history_of_a_path_in_an_image_mount(store, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    name = "inspect-cli-%d" % os.getpid()
    try:
        uf(store, "image", "mount", "inspect:1", str(mnt), "--upper", name)
        with open(str(mnt / "keep"), "ab") as f:
            f.write(b"+")
        out = uf(store, "history", str(mnt / "keep")).stdout.splitlines()
        assert out[0].endswith("visible, from layer 4")
        assert out[2].split()[:4] == ["1", "added", "file", "700"]
        assert out[3].split()[:4] == ["4", "changed", "file", "701"]
        doc = json.loads(uf(store, "commit", str(mnt), "--dry-run", "--json").stdout)
        assert [(e["name"], e["size"]) for e in doc["entries"]] == [("keep", 701)]
    finally:
        unmount(str(mnt))
        run_unionfs("image", "rm-upper", name, "--store", store)


@requires_fuse
@requires_root
def test_a_directory_renamed_in_a_mount(store, tmp_path):
    """`mv d newd` in a unionfs mount leaves a redirect in the upper: tree, history and diff
    --layer of the upper show newd/* from the layers that ship it, and /d deleted (renamed)."""
    from unionfs.image.store import Store
    from unionfs.inspect import analysis, stack as stackmod
    l1, l2 = tmp_path / "l1", tmp_path / "l2"
    (l1 / "d" / "sub").mkdir(parents=True)
    (l1 / "d" / "a").write_text("a\n")
    (l1 / "d" / "sub" / "s").write_text("s\n")
    (l2 / "d").mkdir(parents=True)
    (l2 / "d" / "b").write_text("bb\n")
    up, work, mnt = tmp_path / "up", tmp_path / "work", tmp_path / "mnt"
    up.mkdir(), work.mkdir()
    with unionfs_mount([l2, l1], up, work, mnt):
        os.rename(str(mnt / "d"), str(mnt / "newd"))
        with open(str(mnt / "newd" / "a"), "a") as f:
            f.write("+\n")
        rows = {r["path"]: (r["badge"], r["layer"], r["cause"])
                for r in analysis.tree(stackmod.from_mount(Store(store), str(mnt)))}
        assert rows == {
            "/d": ("deleted", 2, "renamed"), "/d/a": ("deleted", 1, "renamed"),
            "/d/b": ("deleted", 2, "renamed"), "/d/sub": ("deleted", 1, "renamed"),
            "/d/sub/s": ("deleted", 1, "renamed"), "/newd": ("added", 3, None),
            "/newd/a": ("added", 3, None), "/newd/b": ("added", 2, None),
            "/newd/sub": ("added", 1, None), "/newd/sub/s": ("added", 1, None)}
        doc = json.loads(uf(store, "history", str(mnt / "newd" / "sub" / "s"), "--json").stdout)
        assert (doc["visible"], doc["origin_layer"]) == (True, 1)
        assert [(e["layer"], e["event"], e["detail"]) for e in doc["events"]] == [
            (3, "added", "renamed from /d/sub/s")]
        assert uf(store, "diff", str(mnt), "--layer", "3").stdout == (
            "D /d\nD /d/a\nD /d/b\nD /d/sub\nD /d/sub/s\n"
            "A /newd\nA /newd/a\nA /newd/b\nA /newd/sub\nA /newd/sub/s\n")
        doc = json.loads(uf(store, "waste", str(mnt), "--json").stdout)
        assert [(c["path"], c["size"]) for c in doc["copies"]] == [("/d/a", 2)]  # copied up
