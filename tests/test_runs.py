"""pipeline/runs.py and pipeline/lock.py: one writer per run folder (a live holder refuses a second
process; a killed one's lock is free at once, taken by exactly one of several racing processes; a
malformed lock file is one line), finished runs skipped only with the same key, --force clearing the
folder first."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import checkpoint
from core.errors import CheckpointMismatch, RunInUse
from pipeline.lock import LOCK
from pipeline.runs import RunFolder, differences

ROOT = Path(__file__).resolve().parents[1]
KEY = {"run.seed": 0, "diffusion.lr": 0.003}


def hold_lock(folder: Path, seconds: float) -> subprocess.Popen:
    """A second process that takes the folder's lock and keeps it for `seconds`."""
    code = (f"import time; from pipeline.runs import RunFolder\n"
            f"with RunFolder({str(folder)!r}, {{}}):\n    print('locked', flush=True); "
            f"time.sleep({seconds})")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    """Issue row 4: two processes on one run folder -> the second stops with a message naming the
    first."""
    holder = hold_lock(tmp_path, 30)
    try:
        with pytest.raises(RunInUse, match=f"being written by process {holder.pid}"):
            with RunFolder(tmp_path, KEY):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_a_lock_that_the_next_run_takes(tmp_path):
    holder = hold_lock(tmp_path, 30)
    holder.kill()                                          # kill -9: no cleanup
    holder.wait()
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == holder.pid  # its file is still there
    with RunFolder(tmp_path, KEY):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK).exists()                  # released on exit


def test_a_lock_naming_a_live_process_of_another_program_is_taken(tmp_path):
    """The lock file's pid is only information: a stale file naming a live process (here this test's
    own parent shell, as after a reboot that reused the pid) does not block the folder."""
    (tmp_path / LOCK).write_text(json.dumps({"pid": os.getppid(), "host": "here",
                                             "command": "bash"}))
    with RunFolder(tmp_path, KEY):
        pass


RACER = """
import sys, time
from core.errors import RunInUse
from pipeline.runs import RunFolder
try:
    with RunFolder(sys.argv[1], {}):
        print("held", flush=True)
        time.sleep(2)
except RunInUse:
    print("refused", flush=True)
"""


def test_racing_processes_on_a_stale_lock_leave_exactly_one_holder(tmp_path):
    """Four processes start on a folder whose lock file a dead process left, each pausing 50 ms
    between opening the lock file and locking it (the window where a check-then-unlink takeover let
    several in)."""
    (tmp_path / LOCK).write_text(json.dumps({"pid": 999999, "host": "gone", "command": "killed"}))
    env = {**os.environ, "PIPELINE_LOCK_PAUSE": "0.05"}
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = sorted(r.communicate(timeout=120)[0].strip() for r in racers)
    assert outcomes == ["held", "refused", "refused", "refused"]


@pytest.mark.parametrize("content", ["[1, 2]", "not json", '{"pid": "x"}'])
def test_a_malformed_lock_of_a_live_holder_is_one_line(tmp_path, content):
    holder = hold_lock(tmp_path, 30)
    try:
        (tmp_path / LOCK).write_text(content)  # the holder's file, overwritten by someone
        with pytest.raises(RunInUse) as err:
            with RunFolder(tmp_path, KEY):
                pass
        assert "does not say which" in str(err.value) and "\n" not in str(err.value)
    finally:
        holder.kill()
        holder.wait()


def test_finished_runs_are_kept_only_for_the_same_key(tmp_path):
    with RunFolder(tmp_path, KEY) as run:
        assert not run.finished()
        run.finish({"summary": "loss 0.1", "loss": float("nan")})
    with RunFolder(tmp_path, KEY) as run:
        assert run.finished() and run.result["summary"] == "loss 0.1" and run.result["loss"] is None
    with pytest.raises(CheckpointMismatch, match="diffusion.lr: 0.003 -> 0.001(.|\n)*--force"):
        with RunFolder(tmp_path, {**KEY, "diffusion.lr": 0.001}) as run:
            run.finished()


def test_resume_only_from_a_checkpoint_with_the_same_key(tmp_path):
    with RunFolder(tmp_path, KEY) as run:
        assert run.resume(tmp_path / "last.pt", "test") is None
        run.save_checkpoint(tmp_path / "last.pt", {"kind": "test", "step": 3})
        assert run.resume(tmp_path / "last.pt", "test")["step"] == 3
    with pytest.raises(CheckpointMismatch, match="last.pt was made with other settings"):
        with RunFolder(tmp_path, {**KEY, "run.seed": 1}) as run:
            run.resume(tmp_path / "last.pt", "test")
    # written before run keys existed
    checkpoint.save(tmp_path / "old.pt", {"kind": "test", "step": 1})
    with pytest.raises(CheckpointMismatch, match="older version of this code"):
        with RunFolder(tmp_path, KEY) as run:
            run.resume(tmp_path / "old.pt", "test")


def test_force_clears_the_folder_before_the_run(tmp_path):
    with RunFolder(tmp_path, KEY) as run:
        run.save_checkpoint(tmp_path / "last.pt", {"kind": "test", "step": 3})
        run.finish({"summary": "done"})
    with RunFolder(tmp_path, {**KEY, "diffusion.lr": 1.0}, force=True) as run:
        assert not run.finished() and run.resume(tmp_path / "last.pt", "test") is None
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK]


def test_differences_lists_every_changed_entry():
    assert (differences({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4})
            == ["b: 2 -> 3", "c: (none) -> 4"])


def test_a_field_added_later_counts_only_away_from_its_default():
    old = {"run.seed": 0, "diffusion.lr": 0.003}
    assert differences(old, {**old, "data.shapes_train_size": 20000}) == []  # added, at its default
    assert (differences(old, {**old, "data.shapes_train_size": 5})
            == ["data.shapes_train_size: (none) -> 5"])
