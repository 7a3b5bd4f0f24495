"""The diffusion training stage: checkpoint and grid written, exact resume after a crash, NaN stop."""
import pytest
import torch

import minidiff.train_diffusion as td
from core import checkpoint
from core.config import make_config
from tests.conftest import save_untrained_clip, tiny_diffusion_overrides


def tiny_cfg(tmp_path, *extra):
    cfg = make_config("quick", tiny_diffusion_overrides(tmp_path) + ["--diffusion.steps=6"] + list(extra))
    save_untrained_clip(cfg)
    return cfg


def test_stage_writes_checkpoint_grid_and_metrics(tmp_path):
    cfg = tiny_cfg(tmp_path)
    metrics = td.train_diffusion(cfg)
    out = tmp_path / "quick" / "diffusion"
    assert (out / "last.pt").exists() and (out / "samples.png").exists() and (out / "metrics.json").exists()
    assert metrics["steps"] == 6 and metrics["train_images_per_second"] > 0
    model, diffusion, stored_cfg, payload = td.load_diffusion(out / "last.pt")
    assert payload["step"] == 6 and stored_cfg == cfg and diffusion.timesteps == 100


def test_resume_after_a_crash_gives_the_same_next_loss(tmp_path, monkeypatch):
    straight = td.train_diffusion(tiny_cfg(tmp_path / "a", "--diffusion.checkpoint_every=3"))
    cfg = tiny_cfg(tmp_path / "b", "--diffusion.checkpoint_every=3")
    real_step = td.training_step

    def crash_at_4(*args):
        if args[-1] == 4:  # the step
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(td, "training_step", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        td.train_diffusion(cfg)
    monkeypatch.setattr(td, "training_step", real_step)
    assert checkpoint.load(tmp_path / "b" / "quick" / "diffusion" / "last.pt")["step"] == 3
    resumed = td.train_diffusion(cfg)
    assert resumed["resumed_from"] == 3
    assert resumed["final_loss"] == straight["final_loss"]
    a = checkpoint.load(tmp_path / "a" / "quick" / "diffusion" / "last.pt")["ema"]["model"]
    b = checkpoint.load(tmp_path / "b" / "quick" / "diffusion" / "last.pt")["ema"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    cfg = tiny_cfg(tmp_path, "--diffusion.lr=1e30", "--diffusion.warmup=1", "--diffusion.grad_clip=1e30")
    with pytest.raises(FloatingPointError, match="diffusion: loss is (nan|inf) at step"):
        td.train_diffusion(cfg)


def test_missing_clip_and_mismatched_resume_are_clear(tmp_path):
    cfg = make_config("quick", tiny_diffusion_overrides(tmp_path))
    with pytest.raises(FileNotFoundError, match="run `python train.py clip"):
        td.train_diffusion(cfg)
    cfg = tiny_cfg(tmp_path, "--diffusion.steps=2")
    td.train_diffusion(cfg)
    wider = make_config("quick", tiny_diffusion_overrides(tmp_path) + ["--diffusion.steps=4",
                                                                        "--diffusion.base_channels=16"])
    with pytest.raises(checkpoint.CheckpointMismatch, match="diffusion.base_channels"):
        td.train_diffusion(wider)
