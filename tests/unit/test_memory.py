"""Memory per path the kernel holds: what a walk leaves in the union and the node table.

A walk of a million paths keeps a node per path in the node table, and a resolution, a lower
entry's attributes and a listing entry per path in the caches (bounded): their size per path is
the daemon's RSS per path. Measured in process with tracemalloc (no timing), as
scripts/bench_memory.py reports it per structure.
"""
import gc
import os
import sys
import tracemalloc

from tests.mountutil import REPO
from tests.unit.helpers import needs_root

sys.path.insert(0, os.path.join(REPO, "scripts"))
import bench_memory  # noqa: E402

pytestmark = needs_root

# Bytes per walked entry over 3,000 files in two lower layers: 1,384 before the compact
# structures (a Stat of thirteen slots and their ints, a Hit and a list per resolution, a copy
# of every listing entry per listing, a name string per cached child), 947 with them, 569 once
# a listing no longer keeps a resolution of every lower file it shows, 438 with the node table in
# arrays (fuse/nodes.py: ~30 bytes a node where an object per node cost ~146).
CEILING = 500


def _tree(tmp_path):
    lowers = [tmp_path / "l1", tmp_path / "l2"]
    for i in range(4):
        for layer in lowers:
            os.makedirs(layer / ("d%d" % i))
        for j in range(750):
            layer = lowers[j % 2]  # every directory merged from both layers
            with open(layer / ("d%d" % i) / ("f%04d" % j), "wb") as f:
                f.write(b"x" * (j % 7))
    for p in ("upper", "work"):
        os.makedirs(tmp_path / p)
    return [str(l) for l in lowers]


def test_bytes_per_walked_path_stay_compact(tmp_path):
    from unionfs.core.readdir import Listings
    from unionfs.core.union import Union
    from unionfs.fuse.nodes import Nodes
    lowers = _tree(tmp_path)
    union = Union(lowers, str(tmp_path / "upper"), str(tmp_path / "work"))
    nodes, listings = Nodes(), Listings()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        n = bench_memory.walk_in_process(union, nodes, listings)
        gc.collect()
        per_path = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert n == 3004
    # the walk kept what it must: every listing, a node per entry
    assert len(union.cache.get_listing("/d3")) == 750 and nodes.by_path("/d3/f0749") is not None
    assert per_path < CEILING, "%.0f bytes per walked path (ceiling %d)" % (per_path, CEILING)
