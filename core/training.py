"""Small pieces every training loop shares: device, run folders, EMA, warm-up, batches, NaN guard, JSON."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from core import checkpoint
from core.config import Config


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run.device={name!r} but no CUDA device is available; use --run.device=cpu")
    return device


def setup(cfg: Config) -> torch.device:
    """Seed torch, set CPU threads, and return the device a run should use."""
    torch.manual_seed(cfg.run.seed)
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    device = pick_device(cfg.run.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def stage_dir(cfg: Config, stage: str) -> Path:
    """runs/<preset>/<stage>/, created on demand."""
    path = Path(cfg.run.out_dir) / cfg.run.preset / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(cfg: Config) -> Path:
    """Where rendered datasets and reference statistics are cached (shared by all stages)."""
    return Path(cfg.run.out_dir) / "cache"


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision on the CPU (where bf16 is slower and less accurate)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def warmup_cosine(step: int, total: int, warmup: int, final_fraction: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to final_fraction at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A seed that is a pure function of (run seed, step, rank): seeding every step with it makes resume exact
    without storing RNG state, and gives every distributed rank its own stream."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


def random_batches(n: int, batch_size: int, generator: torch.Generator, steps: int):
    """Yield `steps` index batches drawn with replacement; resumable through the generator's state."""
    for _ in range(steps):
        yield torch.randint(n, (batch_size,), generator=generator)


def check_finite(loss: torch.Tensor, stage: str, step: int) -> None:
    """Stop with a clear message on a NaN/inf loss (the last checkpoint on disk stays intact)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{stage}: loss is {loss.item()} at step {step}; the last checkpoint is kept. "
                                 f"Lower the learning rate or check the data.")


class EMA:
    """Exponential moving average of a model's weights, with the usual warm-up of the decay:

        decay_t = min(decay, (1 + t) / (10 + t)),   theta_ema <- decay_t theta_ema + (1 - decay_t) theta

    so that early averages are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.step = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.step) / (10 + self.step))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.model.load_state_dict(state["model"])


def count_parameters(params) -> int:
    return sum(p.numel() for p in params)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (checkpoint.atomic_write)."""
    text = json.dumps(obj, indent=2, default=float) + "\n"
    checkpoint.atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def flip_and_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training augmentation for real images (N, C, H, W): random horizontal flip, then a random translation
    of up to max_shift pixels with reflection padding."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
    if max_shift == 0:
        return x
    padded = torch.nn.functional.pad(x, [max_shift] * 4, mode="reflect")
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (n,), generator=generator) for _ in range(2))
    rows = (torch.arange(h)[None, :] + dy[:, None]).to(x.device)  # (N, H)
    cols = (torch.arange(w)[None, :] + dx[:, None]).to(x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indexing picks, per image, its shifted H x W window: (N, H, W, C) -> (N, C, H, W)
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
