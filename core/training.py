"""Small pieces every training loop shares: device, EMA, learning-rate schedule, seeds, batches, NaN
guard, weight-decay groups and the flip/shift augmentation of real images."""
from __future__ import annotations

import contextlib
import copy
import math

import numpy as np
import torch
import torch.nn as nn

from core.config import Config
from core.errors import ConfigError, Diverged

# Optimizers run as one fused kernel over all parameters (torch's fused=True; the same update to
# round-off): PyTorch's default on a CPU loops over the tensors one by one, and over the hundreds of
# small tensors of the quick UNet that loop makes AdamW's step several times slower
# (`python -m bench.overheads` times both; docs/speed.md, "Earlier speed work").
FUSED = {"fused": True}


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name!r} but no CUDA device is available; use "
                          "--run.device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"run.device={name!r} but MPS is not available; use --run.device=cpu")
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


def mix_seed(*parts: int) -> int:
    """A seed that is a pure function of several integers, e.g. (run seed, step, rank): seeding
    every step with it makes resume exact without storing RNG state and gives every distributed rank
    its own stream; (run seed, stage, repeat) gives each repeat of a stage its own, unrelated
    stream."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def random_batches(n: int, batch_size: int, generator: torch.Generator, steps: int):
    """Yield `steps` index batches drawn with replacement; resumable through the generator's
    state."""
    for _ in range(steps):
        yield torch.randint(n, (batch_size,), generator=generator)


def check_finite(loss: torch.Tensor, stage: str, step: int) -> None:
    """Stop on a NaN/inf loss. Checkpoints are only written with finite weights
    (core.checkpoint.save), so the one on disk is from before this step; the weights may already
    have been drifting, hence the advice to start over rather than resume."""
    if not torch.isfinite(loss):
        raise Diverged(f"{stage}: loss is {loss.item()} at step {step}: training diverged. Lower "
                       "the learning rate (or check the data) and start over with --force; the "
                       "last checkpoint on disk has finite weights but may already be off course")


class EMA:
    """Exponential moving average of a model's weights, with the usual warm-up of the decay:

        decay_t = min(decay, (1 + t) / (10 + t)),
        theta_ema <- decay_t theta_ema + (1 - decay_t) theta

    so that early averages are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.step = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(list(self.model.parameters()),
                             [p.detach() for p in model.parameters()], 1 - decay)
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


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer groups: decay on matrices and kernels (ndim >= 2), none on biases, norms and
    scales."""
    return [{"params": [p for p in model.parameters() if p.ndim >= 2],
             "weight_decay": weight_decay},
            {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image of (N, C, H, W) horizontally with probability 1/2 (draws from `generator`'s
    device)."""
    device = x.device if generator is None else generator.device
    flip = torch.rand(len(x), generator=generator, device=device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def flip_and_shift(x: torch.Tensor, max_shift: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Training augmentation for real images (N, C, H, W): random horizontal flip, then a random
    translation of up to max_shift pixels with reflection padding."""
    n, _, h, w = x.shape
    x = random_flip(x, generator)
    if max_shift == 0:
        return x
    padded = torch.nn.functional.pad(x, [max_shift] * 4, mode="reflect")
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (n,), generator=generator) for _ in range(2))
    rows = (torch.arange(h)[None, :] + dy[:, None]).to(x.device)  # (N, H)
    cols = (torch.arange(w)[None, :] + dx[:, None]).to(x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indexing picks, per image, its shifted H x W window: (N, H, W, C) -> (N, C, H, W)
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
