"""scripts/bench_workloads.py without a mount: the parallel-clients summary and the runner that
starts clients at once (the timed workloads themselves run in `make bench`)."""
import sys

import pytest

from tests.mountutil import load_script

bw = load_script("bench_workloads")


def _row(phase, system, median, entries, workload="parallel"):
    return {"workload": workload, "phase": phase, "system": system, "median_s": median,
            "figures": {"entries": entries}}


def test_summary_gives_entries_per_second_and_scaling_per_system():
    rows = [_row("find x1", "unionfs", 2.0, 1000), _row("find x2", "unionfs", 2.0, 2000),
            _row("find x4", "unionfs", 8.0, 4000), _row("untar x1", "kernel", 0.5, 400),
            _row("untar x4", "kernel", 1.0, 1600),
            _row("L1", "unionfs", 1.0, 5, workload="stat"),     # not a parallel row
            dict(_row("find x1", "kernel", None, 1000), figures=None)]  # a system that failed
    assert bw.summary_lines(rows) == [
        "parallel find  unionfs         entries/s: 1x 500/s, 2x 1000/s (2.00x), 4x 500/s (1.00x)",
        "parallel untar kernel          entries/s: 1x 800/s, 4x 1600/s (2.00x)"]


def test_concurrently_returns_each_output_in_order():
    cmds = [[sys.executable, "-c", "print('x' * %d)" % (200000 + i)] for i in range(3)]
    outs = bw.concurrently(cmds)  # more than a pipe's buffer each: every output is drained
    assert [len(o) for o in outs] == [200001, 200002, 200003]


def test_concurrently_runs_clients_at_the_same_time(tmp_path):
    # each client announces itself, then waits for the other: run one after the other, the first
    # would give up and fail
    script = ("import os, sys, time\nopen(sys.argv[1], 'w').close()\n"
              "for _ in range(500):\n    if os.path.exists(sys.argv[2]): sys.exit(0)\n"
              "    time.sleep(0.01)\nsys.exit(1)\n")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    bw.concurrently([[sys.executable, "-c", script, a, b], [sys.executable, "-c", script, b, a]])


def test_concurrently_raises_when_a_client_fails():
    with pytest.raises(RuntimeError, match="failed \\(3\\)"):
        bw.concurrently([[sys.executable, "-c", "pass"],
                         [sys.executable, "-c", "import sys; sys.exit(3)"]])
