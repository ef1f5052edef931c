"""commit --dry-run's plan: the entries and sizes of the layer a commit would write, the same
DiffID the commit then stores, and nothing written to the store by the plan."""
import os

from unionfs.image.changes import Changes
from unionfs.image.commit import commit_image
from unionfs.image.importer import import_archive
from unionfs.image.store import Store
from unionfs.inspect.commitplan import plan
from tests.mountutil import load_script
from tests.unit.helpers import mkdir, needs_root, whiteout, write

fx = load_script("build_image_fixtures")
pytestmark = needs_root   # char 0/0 whiteouts in the upper


def tree_of(root):
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, dirs, files in os.walk(root) for n in dirs + files)


def test_plan_lists_entries_and_matches_the_commit(tmp_path):
    store = Store(str(tmp_path / "store"))
    import_archive(store, fx.docker_archive(str(tmp_path / "a.tar"), fx.inspect_images(), "new"))
    img = store.get("inspect:1")
    up = mkdir(tmp_path / "upper")
    whiteout(os.path.join(up, "keep"))
    write(os.path.join(up, "etc/config"), b"new\n")
    write(os.path.join(up, "new"), b"n" * 12)
    changes = Changes(up, img.lower_dirs())
    before = tree_of(store.root)
    p = plan(changes, store)
    assert tree_of(store.root) == before
    assert [(e["name"], e["type"], e["size"]) for e in p["entries"]] == [
        (".wh.keep", "whiteout", 0), ("etc", "dir", 0), ("etc/config", "file", 4),
        ("new", "file", 12)]
    assert p["content_bytes"] == 16 and p["tar_bytes"] % 512 == 0 and not p["layer_exists"]
    _image_id, diff_id = commit_image(store, img, changes, "inspect:2")
    assert diff_id == p["diff_id"]
    assert store.layer_meta(diff_id)["tar_size"] == p["tar_bytes"]
    assert plan(changes, store)["layer_exists"] is True


def test_plan_of_no_change_is_an_empty_layer(tmp_path):
    p = plan(Changes(mkdir(tmp_path / "u"), []))
    assert p["entries"] == [] and p["content_bytes"] == 0 and p["tar_bytes"] > 0


def test_plan_streams_a_layer_larger_than_a_pipe(tmp_path):
    up = mkdir(tmp_path / "u")
    write(os.path.join(up, "big"), b"x" * (3 << 20))
    p = plan(Changes(up, []))
    assert p["content_bytes"] == 3 << 20 and p["entries"][0]["type"] == "file"
