"""Text-conditioned UNet that predicts the noise eps in x_t (Ho et al. 2020; layout of Dhariwal &
Nichol 2021 "Diffusion Models Beat GANs", Sec. 3, and of Stable Diffusion's UNet for the text
conditioning).

Conditioning enters in two places, as in Stable Diffusion / Imagen:
  * the pooled text embedding is added to the timestep embedding, which scales and shifts every
    residual block's normalised features (FiLM, "AdaGN" in Dhariwal & Nichol Sec. 3);
  * the per-token text states are cross-attended to in transformer blocks at the low resolutions
    (`attn2`: queries from the image, keys/values from the text). Custom Diffusion trains
    `attn2.to_k`/`attn2.to_v`; LoRA adapts the attention projections.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.config import DiffusionConfig
from minidiff.attention import Attention


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim) (Vaswani et al. 2017, Sec. 3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


def zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch, so every block starts as the
    identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, FiLM by the (time + text) embedding, GN-SiLU-dropout-conv, plus a skip
    connection."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.dropout = norm(c_out), nn.Dropout(dropout)
        self.conv2 = zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SpatialTransformer(nn.Module):
    """Self-attention, cross-attention to the text, MLP; on the (H*W) image tokens of one
    resolution."""

    def __init__(self, channels: int, context_dim: int, heads: int):
        super().__init__()
        self.norm = norm(channels)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(channels) for _ in range(3))
        self.attn1 = Attention(channels, heads=heads)
        self.attn2 = Attention(channels, context_dim, heads=heads)
        self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(),
                                nn.Linear(4 * channels, channels))
        self.proj_out = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # (B, C, H, W) -> (B, H*W, C)
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        tokens = tokens + self.attn1(self.ln1(tokens))
        tokens = tokens + self.attn2(self.ln2(tokens), context)
        tokens = tokens + self.ff(self.ln3(tokens))
        return x + self.proj_out(tokens.transpose(1, 2).reshape(b, c, h, w))  # back to (B, C, H, W)


class NoAttention(nn.Module):
    """Stands in for a SpatialTransformer at resolutions without attention."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return x


class Level(nn.Module):
    """The residual blocks of one UNet resolution, each followed by a transformer block where
    `attend`."""

    def __init__(self, channels: list[tuple[int, int]], emb_dim: int, context_dim: int,
                 cfg: DiffusionConfig, attend: bool):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(ci, co, emb_dim, cfg.dropout) for ci, co in channels)
        self.attn = nn.ModuleList(SpatialTransformer(co, context_dim, cfg.heads) if attend
                                  else NoAttention() for _, co in channels)


class UNet(nn.Module):
    """eps_theta(x_t, t, text): conv_in, then down levels (each halving the resolution but the
    last), a middle block, and up levels that mirror them, each up block reading the matching down
    activation through a skip connection (concatenated on channels), then conv_out.

    Skip bookkeeping (channels@pixels), e.g. base 16, channel_mults (1, 2, 2), one res block per
    level, 16x16:
        down   conv_in 16@16 | level 0: 16@16, downsample 16@8 | level 1: 32@8, downsample 32@4
               | level 2: 32@4
               every one of these is pushed: skips = [16@16, 16@16, 16@8, 32@8, 32@4, 32@4]
        up     level 2 pops 32@4, 32@4, upsample to 8 | level 1 pops 32@8, 16@8, upsample to 16
               | level 0 pops 16@16, 16@16
               (num_res_blocks + 1 blocks per level, popping in reverse)
    Every up block takes (its input channels + the popped skip's) and every pushed activation is
    popped once.
    """

    def __init__(self, cfg: DiffusionConfig, resolution: int, context_dim: int, pooled_dim: int):
        super().__init__()
        c = cfg.base_channels
        emb_dim = 4 * c
        self.base_channels = c
        self.time_mlp = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text_proj = nn.Linear(pooled_dim, emb_dim)
        self.conv_in = nn.Conv2d(3, c, 3, padding=1)
        widths = [c * m for m in cfg.channel_mults]
        # skips: channel count of every activation the down path pushes
        res, skips, ch = resolution, [c], c
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, width in enumerate(widths):
            pairs = [(ch if j == 0 else width, width) for j in range(cfg.num_res_blocks)]
            self.down.append(Level(pairs, emb_dim, context_dim, cfg,
                                   res in cfg.attention_resolutions))
            ch = width
            skips += [width] * cfg.num_res_blocks
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last
                                   else nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            if not last:
                skips.append(ch)                   # the downsampled activation is pushed too
                res //= 2
        self.mid1 = ResBlock(ch, ch, emb_dim, cfg.dropout)
        self.mid_attn = SpatialTransformer(ch, context_dim, cfg.heads)
        self.mid2 = ResBlock(ch, ch, emb_dim, cfg.dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            pairs = []
            # one more than down: also consumes the downsample's push
            for _ in range(cfg.num_res_blocks + 1):
                pairs.append((ch + skips.pop(), width))
                ch = width
            self.up.append(Level(pairs, emb_dim, context_dim, cfg,
                                 res in cfg.attention_resolutions))
            self.upsample.append(nn.Identity() if i == 0 else nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
            if i > 0:
                res *= 2
        self.out = nn.Sequential(norm(ch), nn.SiLU(), zero(nn.Conv2d(ch, 3, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                pooled: torch.Tensor):
        """x (B, 3, H, W), t (B,), context (B, L, context_dim), pooled (B, pooled_dim) -> eps
        (B, 3, H, W)."""
        # (B, 4c)
        emb = self.time_mlp(timestep_embedding(t, self.base_channels)) + self.text_proj(pooled)
        h = self.conv_in(x)                                   # (B, c, H, W)
        skips = [h]
        for level, down in zip(self.down, self.downsample):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(h, emb), context)                # (B, width, r, r)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)                                   # (B, width, r/2, r/2)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb), context), emb)
        for level, up in zip(self.up, self.upsample):
            for res, attn in zip(level.res, level.attn):
                h = torch.cat([h, skips.pop()], dim=1)        # (B, ch + skip channels, r, r)
                h = attn(res(h, emb), context)                # (B, width, r, r)
            h = up(h)                                         # (B, width, 2r, 2r) except at
                                                              # the top level
        return self.out(h)                                    # (B, 3, H, W)
