"""Shared test fixtures: small configs, a temporary run folder, a deterministic torch state,
CIFAR-10."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.cli import make_config


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg(tmp_path):
    """The quick preset shrunk to seconds: 8x8-class shapes at 16x16, few images, tiny models."""
    return make_config("quick", [f"--run.out_dir={tmp_path}", "--data.shapes_train_size=400",
                                 "--data.shapes_test_size=200"])


def tiny_diffusion_overrides(out_dir) -> list[str]:
    """A text-to-image setup small enough to train for a few steps inside a test."""
    return [f"--run.out_dir={out_dir}", "--data.shapes_train_size=200",
            "--data.shapes_test_size=100", "--clip.width=16", "--clip.layers=1", "--clip.heads=2",
            "--clip.embed_dim=16", "--clip.image_channels=8,16", "--diffusion.base_channels=8",
            "--diffusion.channel_mults=1,2", "--diffusion.attention_resolutions=8",
            "--diffusion.heads=2", "--diffusion.batch_size=8", "--diffusion.warmup=2",
            "--diffusion.sample_every=0", "--diffusion.sample_steps=2", "--diffusion.timesteps=100"]


def save_untrained_clip(cfg) -> None:
    """Write an (untrained) tiny CLIP checkpoint where the diffusion stage looks for it."""
    from core import checkpoint
    from pipeline.runs import stage_dir
    from minidiff.clip import TinyClip
    from minidiff.train_clip import build_tokenizer
    tok = build_tokenizer(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same text encoder every time it is written
        clip = TinyClip(len(tok), cfg.clip)
    checkpoint.save(stage_dir(cfg, "clip") / "clip.pt",
                    {"kind": "clip", "config": cfg.to_dict(), "step": 0,
                     "model": clip.state_dict(), "vocab": tok.words})
    mark_finished(stage_dir(cfg, "clip"))


def mark_finished(folder) -> None:
    """A metrics.json in `folder`, so that later stages accept the checkpoint written there
    (pipeline.runs)."""
    from core.files import write_json
    write_json(folder / "metrics.json",
               {"summary": "untrained, written by a test", "test_accuracy": None})


def save_untrained_evaluator(cfg) -> None:
    """Write an (untrained) evaluator checkpoint where stages look for it."""
    from core import checkpoint
    from core.data import class_names
    from pipeline.runs import stage_dir
    from eval.evalnet import Evaluator
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = Evaluator(cfg.evalnet, len(class_names(cfg.data)))
    checkpoint.save(stage_dir(cfg, "eval-net") / "evaluator.pt",
                    {"kind": "evaluator", "config": cfg.to_dict(), "step": 0,
                     "model": net.state_dict()})
    mark_finished(stage_dir(cfg, "eval-net"))


def save_untrained_diffusion(out_dir) -> tuple[list[str], Path]:
    """(overrides, path) of an untrained tiny text-to-image checkpoint, in the format
    load_diffusion reads, written to out_dir/last.pt."""
    from core import checkpoint
    from minidiff.clip import TextEncoder
    from minidiff.train_clip import build_tokenizer
    from minidiff.train_diffusion import build_model
    overrides = tiny_diffusion_overrides(out_dir)
    cfg = make_config("quick", overrides)
    tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, TextEncoder(len(tokenizer), cfg.clip), tokenizer)
    path = Path(out_dir) / "last.pt"
    checkpoint.save(path, {"kind": "diffusion", "config": cfg.to_dict(), "step": 0,
                           "vocab": tokenizer.words, "text": model.text.state_dict(),
                           "model": model.unet.state_dict(),
                           "ema": {"model": model.unet.state_dict()}})
    return overrides, path


def tiny_base_model(out_dir, *extra):
    """Config, and a finished 2-step base diffusion run (plus CLIP and evaluator) under out_dir."""
    from core.cli import make_config
    from minidiff.train_diffusion import train_diffusion
    cfg = make_config("quick", tiny_diffusion_overrides(out_dir) + [
        "--diffusion.steps=2", "--evalnet.channels=8,16", "--customize.fidelity_samples=4",
        "--customize.k_images=2", "--customize.n_prior_images=3"] + list(extra))
    save_untrained_clip(cfg)
    save_untrained_evaluator(cfg)
    train_diffusion(cfg)
    return cfg


SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory):
    """A folder with CIFAR-10's train.npz/test.npz: the repo's data/cifar10 if unpacked there, else
    the offline copy in ../shared/data/cifar10 unpacked once per session; skipped where neither
    exists (a user's clone)."""
    local = Path(__file__).resolve().parents[1] / "data" / "cifar10"
    if (local / "train.npz").exists() and (local / "test.npz").exists():
        return local
    if not (SHARED_CIFAR10 / "unpack.py").exists():
        pytest.skip(f"no CIFAR-10 copy: neither {local} nor the offline pack {SHARED_CIFAR10} "
                    "exists")
    out = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(SHARED_CIFAR10 / "unpack.py"), str(out)], check=True,
                   capture_output=True)
    return out
