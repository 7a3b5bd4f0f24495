"""Checkpoints: round trip, atomic write under a simulated crash and racing writers, kind and architecture mismatch
errors."""
import pytest
import torch

from core import checkpoint
from core.config import make_config


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
    """Two DDP ranks caching the same file: rank 1 writes the whole file while rank 0 is mid-write. Each has
    its own temp file, so both renames succeed and the path holds one complete file (the last renamed)."""
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
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoint.load(tmp_path / "bad.pt")


def test_architecture_mismatch_names_fields():
    base = make_config()
    stored = {"config": base.to_dict()}
    other = make_config("quick", ["--diffusion.base_channels=48", "--diffusion.channel_mults=1,2",
                                  "--diffusion.lr=1"])
    with pytest.raises(checkpoint.CheckpointMismatch) as err:
        checkpoint.check_arch(stored, {"diffusion": other.diffusion})
    message = str(err.value)
    assert f"diffusion.base_channels: checkpoint has {base.diffusion.base_channels}, config has 48" in message
    assert "diffusion.channel_mults" in message and "lr" not in message  # training fields may differ
    checkpoint.check_arch(stored, {"diffusion": make_config().diffusion})  # same shape: no error
