"""LoRA: low-rank adapters on frozen layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
Language Models", Sec. 4.1).

    h = W0 x + (alpha / r) B A x,    A: (r, in) random,  B: (out, r) zero-initialised

so at initialisation the adapted model is exactly the base model. `merge` folds the update into W0
for inference at no extra cost; `unmerge` takes it out again. For a 3x3 convolution, A is an
r-channel 3x3 convolution and B a 1x1 convolution (the same low-rank idea on the flattened kernel).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRA(nn.Module):
    """Wraps a frozen nn.Linear or nn.Conv2d with a trainable rank-r update."""

    def __init__(self, base: nn.Linear | nn.Conv2d, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank, self.scale = rank, (alpha or rank) / rank
        if isinstance(base, nn.Linear):
            self.A = nn.Parameter(torch.empty(rank, base.in_features))       # (r, in)
            self.B = nn.Parameter(torch.zeros(base.out_features, rank))      # (out, r)
        else:
            k = base.kernel_size
            # A: an r-channel conv with the base's kernel, (r, in, kh, kw); B: a 1x1 conv,
            # (out, r, 1, 1), mixing the r channels back up to the base's out channels
            self.A = nn.Parameter(torch.empty(rank, base.in_channels, *k))
            self.B = nn.Parameter(torch.zeros(base.out_channels, rank, 1, 1))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear's default init
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, shaped like the base weight."""
        if self.A.ndim == 2:
            return self.scale * self.B @ self.A     # (out, r) @ (r, in) -> (out, in)
        # conv: (out, r, 1, 1) x (r, in, kh, kw) -> (out, in, kh, kw)
        return self.scale * torch.einsum("or,rikl->oikl", self.B[:, :, 0, 0], self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        if isinstance(self.base, nn.Linear):
            # (..., in) -> A -> (..., r) -> B -> (..., out)
            return self.base(x) + self.scale * F.linear(F.linear(x, self.A), self.B)
        conv = self.base
        # (N, in, H, W) -> (N, r, H', W'), with the base's stride and padding, so H', W' match
        low = F.conv2d(x, self.A, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        return conv(x) + self.scale * F.conv2d(low, self.B)    # 1x1: (N, r, ...) -> (N, out, ...)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


def attention_projection(name: str, module: nn.Module) -> bool:
    """The attention projections of the UNet's transformer blocks (self- and cross-attention)."""
    return (isinstance(module, nn.Linear)
            and name.split(".")[-1] in ("to_q", "to_k", "to_v", "to_out"))


def resblock_conv(name: str, module: nn.Module) -> bool:
    """The 3x3 convolutions inside residual blocks."""
    return isinstance(module, nn.Conv2d) and name.split(".")[-1] in ("conv1", "conv2")


def add_lora(model: nn.Module, rank: int, convs: bool = False) -> list[LoRA]:
    """Replace the targeted layers of `model` in place by LoRA wrappers; returns the wrappers."""
    targets = [(name, m) for name, m in model.named_modules()
               if attention_projection(name, m) or (convs and resblock_conv(name, m))]
    adapters = []
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        adapter = LoRA(module, rank).to(module.weight.device)
        setattr(parent, child, adapter)
        adapters.append(adapter)
    return adapters


def lora_modules(model: nn.Module) -> list[LoRA]:
    return [m for m in model.modules() if isinstance(m, LoRA)]


def merge_lora(model: nn.Module) -> None:
    for m in lora_modules(model):
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_modules(model):
        m.unmerge()
