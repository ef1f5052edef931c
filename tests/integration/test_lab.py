"""`unionfs lab`: every exercise on a real mount, scripted (--auto, --answers) and interrupted.

The facts asserted here are the ones the lab observed in its real upper/lower directories (the
JSON record), so a lesson that stops matching the filesystem fails these tests. Every run gets its
own TMPDIR, which must be empty afterwards: the lab removes its directory and its mount whichever
way it ends.
"""
import dataclasses
import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from tests.integration.conftest import requires_daemon
from tests.mountutil import ENV, UNIONFS, is_mounted, requires_fuse, requires_root
from unionfs.lab import exercises, session
from unionfs.mounts import mount_table

pytestmark = [requires_fuse, requires_root, requires_daemon]

MIB = 1 << 20
NAMES = list(exercises.EXERCISES)


def lab(tmp, *args, stdin=None):
    """Run `unionfs lab ARGS` with TMPDIR=tmp; check it left nothing behind there."""
    proc = subprocess.run(UNIONFS + ["lab"] + list(args), env=dict(ENV, TMPDIR=str(tmp)),
                          input=stdin, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert_clean(tmp)
    return proc


def assert_clean(tmp):
    assert os.listdir(tmp) == [], "the lab left %r behind" % os.listdir(tmp)
    base = os.path.realpath(str(tmp)) + os.sep
    assert not [m.mountpoint for m in mount_table() if m.mountpoint.startswith(base)]


def record_of(proc):
    rec = json.loads(proc.stdout)
    assert rec["format"] == "unionfs-lab" and rec["version"] == 1
    return rec


@pytest.fixture(scope="module")
def auto_records(tmp_path_factory):
    """Each exercise run once with --auto --json: {name: record}."""
    out = {}
    for name in NAMES:
        tmp = tmp_path_factory.mktemp("lab-" + name)
        proc = lab(tmp, name, "--auto", "--json")
        assert proc.returncode == 0, proc.stderr
        out[name] = record_of(proc)
    return out


def steps(records, name):
    return {s["step"]: s["observed"] for s in records[name]["steps"]}


@pytest.mark.parametrize("name", NAMES)
def test_correct_answers(auto_records, name):
    rec = auto_records[name]
    ex = exercises.EXERCISES[name]
    assert rec["completed"] and rec["all_correct"] and rec["lesson_holds"]
    assert [s["step"] for s in rec["steps"]] == list(range(1, len(ex.steps) + 1))
    for s, step in zip(rec["steps"], ex.steps):
        assert s["exercise"] == name
        assert s["prediction"] == s["expected"] == s["actual"] == step.expected
        assert s["correct"] is True
        assert s["observed"]["lower_unchanged"] is True


@pytest.mark.parametrize("name", NAMES)
def test_wrong_answers_are_reported(tmp_path, name):
    ex = exercises.EXERCISES[name]
    wrong = [next(c for c in step.choices if c != step.expected) for step in ex.steps]
    proc = lab(tmp_path, name, "--answers", ",".join(wrong), "--json")
    assert proc.returncode == 2, proc.stderr
    rec = record_of(proc)
    assert rec["completed"] and not rec["all_correct"] and rec["lesson_holds"]
    assert rec["correct"] == 0
    for s, w in zip(rec["steps"], wrong):
        assert s["prediction"] == w and s["actual"] == s["expected"] and s["correct"] is False
    assert "Not quite" in proc.stderr and "predictions right (wrong: step 1" in proc.stderr


def test_copy_up_facts(auto_records):
    obs = steps(auto_records, "copy-up")
    assert obs[1]["upper_motd"] == {"exists": False}
    assert obs[2]["upper_text"] == exercises.MOTD + exercises.LINE
    assert obs[2]["lower_text"] == exercises.MOTD
    assert obs[3]["upper_etc"] == ["motd"]


def test_whiteout_facts(auto_records):
    obs = steps(auto_records, "whiteout")
    wh = obs[1]["upper_notes"]
    assert wh["type"] == "char" and wh["rdev"] == [0, 0] and wh["whiteout"] is True
    assert obs[1]["lower_notes"]["type"] == "file" and obs[1]["lower_unchanged"]
    assert obs[1]["merged_notes"] == {"exists": False}
    assert obs[2]["upper_scratch"] == {"exists": False}
    assert obs[3]["upper_notes"]["type"] == "file" and obs[3]["merged_text"] == "new notes\n"
    assert obs[3]["lower_text"] == exercises.NOTES


def test_opaque_facts(auto_records):
    obs = steps(auto_records, "opaque")
    assert obs[1]["upper_cache"]["whiteout"] is True
    assert obs[2]["upper_cache"]["opaque"] is True
    assert obs[2]["upper_cache"]["xattrs"]["trusted.overlay.opaque"] == "y"
    assert obs[2]["merged_cache"] == []
    assert obs[3]["merged_cache"] == ["c.tmp"] and obs[3]["lower_cache"] == ["a.tmp", "b.tmp"]


def test_deleted_bytes_still_ship(auto_records):
    obs = steps(auto_records, "deleted-bytes")
    assert obs[1]["lower_big"]["size"] == MIB and obs[1]["lower"]["bytes"] >= MIB
    assert obs[1]["upper_big"]["whiteout"] is True and obs[1]["upper"]["bytes"] == 0
    assert obs[1]["merged_big"] == {"exists": False}
    assert obs[2]["base_tar"]["members"]["big.bin"] == MIB
    assert obs[2]["new_tar"]["members"] == {".wh.big.bin": 0}
    assert MIB < obs[2]["base_tar"]["bytes"] + obs[2]["new_tar"]["bytes"] < 2 * MIB


def test_chmod_copies_the_whole_file(auto_records):
    obs = steps(auto_records, "chmod")
    up, low = obs[1]["upper_data"], obs[1]["lower_data"]
    assert up["type"] == "file" and up["size"] == MIB and up["mode"] == "0600"
    assert up["allocated"] >= MIB and up["sha256"] == low["sha256"]
    assert low["mode"] == "0644" and obs[1]["lower_unchanged"]
    assert obs[2]["upper_data"]["size"] == MIB and obs[2]["upper_data"]["mode"] == "0644"


def test_rename_dir_records_a_redirect(auto_records):
    obs = steps(auto_records, "rename-dir")
    assert obs[1]["exit_status"] == 0
    assert obs[1]["upper_renamed"]["redirect"] == "project"
    assert obs[1]["upper_project"]["whiteout"] is True
    assert obs[1]["upper_files_under_renamed"] == 0
    assert obs[1]["merged_renamed"] == ["README", "src"]
    assert obs[2]["upper_renamed_readme"]["type"] == "file"


def test_list_and_text_mode(tmp_path):
    proc = lab(tmp_path)
    assert proc.returncode == 0
    for name in NAMES:
        assert name in proc.stdout
    listed = json.loads(lab(tmp_path, "--json").stdout)
    assert [e["name"] for e in listed["exercises"]] == NAMES
    proc = lab(tmp_path, "whiteout", "--auto")
    assert proc.returncode == 0
    assert "c---------      0, 0  notes.txt" in proc.stdout
    assert "3 of 3 predictions right." in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "no exercise 'nosuch'"),
    (["chmod", "--answers", "c"], "lab chmod has 2 steps, --answers gives 1"),
    (["chmod", "--answers", "c,z"], "answer 2 is 'z', not one of y, n"),
    (["--auto"], "need an exercise"),
])
def test_bad_input(tmp_path, args, message):
    proc = lab(tmp_path, *args)
    assert proc.returncode == 1
    assert proc.stderr.startswith("unionfs: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_interactive_answers_and_eof(tmp_path):
    """Answers on stdin (one re-asked after a bad one); stdin ends at step 2: clean exit."""
    proc = lab(tmp_path, "copy-up", "--json", stdin="maybe\nn\n")
    assert proc.returncode == 1
    assert "Please answer one of y, n." in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "unionfs: lab copy-up stopped (no answer for step 2); unmounted and removed its directory")
    rec = record_of(proc)
    assert rec["mode"] == "interactive" and rec["completed"] is False
    assert [s["prediction"] for s in rec["steps"]] == ["n"] and rec["steps"][0]["correct"]


def test_ctrl_c_while_waiting(tmp_path):
    proc = subprocess.Popen(UNIONFS + ["lab", "opaque"], env=dict(ENV, TMPDIR=str(tmp_path)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = b""
        deadline = time.monotonic() + 30
        while b"Your prediction" not in out and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
        assert b"Your prediction" in out, out
        lab_dir = next(l.split(": ", 1)[1] for l in out.decode().splitlines()
                       if l.startswith("Lab directory: "))
        assert is_mounted(os.path.join(lab_dir, "merged"))
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert b"stopped (interrupted)" in err and b"Traceback" not in err
    assert not os.path.exists(lab_dir)
    assert_clean(tmp_path)


def test_a_lesson_the_filesystem_contradicts_is_reported(tmp_path, monkeypatch, capsys):
    """A lesson claiming what the filesystem does not do: the lab says so (exit 3)."""
    ex = exercises.EXERCISES["whiteout"]
    wrong_step = dataclasses.replace(ex.steps[1], expected="y")  # "a whiteout for scratch.txt"
    bogus = dataclasses.replace(ex, steps=[wrong_step])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    status, rec = session.Lab(bogus, auto=True, as_json=True).run()
    assert status == 3
    assert rec["lesson_holds"] is False and rec["all_correct"] is False
    (s,) = rec["steps"]
    assert s["prediction"] == s["expected"] == "y" and s["actual"] == "n"
    assert s["observed"]["upper_scratch"] == {"exists": False}
    err = capsys.readouterr().err
    assert "WARNING: unionfs did not behave as this lesson teaches" in err
    assert_clean(tmp_path)
