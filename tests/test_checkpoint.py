"""Checkpoints: round trip, atomic write under a simulated crash and racing writers, temp files of
killed writers cleaned, the umask respected, non-finite weights never written, kind and architecture
mismatch errors."""
import os
import subprocess
import sys

import pytest
import torch

from core import checkpoint
from core.cli import make_config
from core.errors import DataError, Diverged
from core.files import atomic_write, read_json, write_json


def test_round_trip_with_config_and_rng(tmp_path):
    cfg = make_config()
    model = torch.nn.Linear(3, 2)
    torch.manual_seed(5)
    state = checkpoint.rng_state()
    expected = torch.rand(3)
    checkpoint.save(tmp_path / "a.pt", {"kind": "test", "config": cfg.to_dict(), "step": 7,
                                        "model": model.state_dict(), "rng": state})
    payload = checkpoint.load(tmp_path / "a.pt", kind="test")
    assert payload["step"] == 7 and payload["config"] == cfg.to_dict()
    assert torch.equal(payload["model"]["weight"], model.weight)
    checkpoint.set_rng_state(payload["rng"])
    assert torch.equal(torch.rand(3), expected)


def test_crash_mid_write_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, {"kind": "test", "step": 1})

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is killed mid-write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"kind": "test", "step": 2})
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_racing_writers_of_one_path_do_not_collide(tmp_path):
    """Two DDP ranks caching the same file: rank 1 writes the whole file while rank 0 is mid-write.
    Each has its own temp file, so both renames succeed and the path holds one complete file (the
    last renamed)."""
    path = tmp_path / "cache.bin"

    def rank0(f):
        f.write(b"rank 0, first half ")
        checkpoint.atomic_write(path, lambda g: g.write(b"rank 1"))
        f.write(b"and second half")

    checkpoint.atomic_write(path, rank0)
    assert path.read_bytes() == b"rank 0, first half and second half"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.bin"]


def test_wrong_kind_missing_and_corrupt(tmp_path):
    checkpoint.save(tmp_path / "a.pt", {"kind": "clip"})
    with pytest.raises(checkpoint.CheckpointMismatch, match="expected 'diffusion'"):
        checkpoint.load(tmp_path / "a.pt", kind="diffusion")
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt is not a readable checkpoint"):
        checkpoint.load(tmp_path / "bad.pt")


def test_architecture_mismatch_names_fields():
    base = make_config()
    stored = {"config": base.to_dict()}
    other = make_config("quick", ["--diffusion.base_channels=48", "--diffusion.channel_mults=1,2",
                                  "--diffusion.attention_resolutions=8", "--diffusion.lr=1"])
    with pytest.raises(checkpoint.CheckpointMismatch) as err:
        checkpoint.check_arch(stored, {"diffusion": other.diffusion})
    message = str(err.value)
    assert (f"diffusion.base_channels: checkpoint has {base.diffusion.base_channels}, config has 48"
            in message)
    # training fields may differ
    assert "diffusion.channel_mults" in message and "lr" not in message
    checkpoint.check_arch(stored, {"diffusion": make_config().diffusion})  # same shape: no error


def test_non_finite_weights_are_never_written(tmp_path):
    """Issue row 3: a diverged model must not replace the last good checkpoint."""
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"kind": "test", "step": 1, "model": {"w": torch.ones(3)}})
    with pytest.raises(Diverged, match="model.w holds NaN or inf"):
        checkpoint.save(path, {"kind": "test", "step": 2,
                               "model": {"w": torch.tensor([1.0, float("nan"), 0.0])}})
    assert checkpoint.load(path)["step"] == 1


def test_a_killed_writer_leaves_no_orphan_after_the_next_write(tmp_path):
    """Issue row 11: kill -9 mid-write leaves a temp file; the next write of the same path removes
    it."""
    path = tmp_path / "ckpt.pt"
    code = (f"import os; from core.files import atomic_write\n"
            f"atomic_write({str(path)!r}, lambda f: (f.write(b'half'), f.flush(), "
            "os.kill(os.getpid(), 9)))")
    subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)))
    # the killed writer's debris
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    checkpoint.save(path, {"kind": "test", "step": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_written_files_respect_the_umask(tmp_path):
    """Issue row 12: atomically written files get 0666 & ~umask, as open() would give them, not
    mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
        assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json(tmp_path / "b.json", {"x": 1})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_json_has_no_nan_and_broken_json_names_its_file(tmp_path):
    write_json(tmp_path / "m.json", {"loss": float("nan"), "psnr": float("inf"), "ok": 1.5})
    assert read_json(tmp_path / "m.json") == {"loss": None, "psnr": None, "ok": 1.5}
    (tmp_path / "bad.json").write_text('{"a" 1}')
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")


CACHE_USER = """
import sys, time
from pathlib import Path
from core.cache import cached

def compute():
    with open(sys.argv[2], "a") as log:
        log.write("computed\\n")
    time.sleep(1.0)                       # long enough for the other process to ask meanwhile
    return {"value": 42}

print(cached(Path(sys.argv[1]), "entry", ["same key"], compute)["value"])
"""


@pytest.mark.skipif(sys.platform == "win32",
                    reason="the cache lock uses fcntl (no lock on Windows)")
def test_two_processes_needing_one_cache_entry_compute_it_once(tmp_path):
    log = tmp_path / "computations.txt"
    users = [subprocess.Popen([sys.executable, "-c", CACHE_USER, str(tmp_path / "cache"), str(log)],
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    assert [u.communicate(timeout=120)[0].strip() for u in users] == ["42", "42"]
    assert log.read_text() == "computed\n"           # the second waited for the first's entry
