"""Differentiable augmentation (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
GAN Training", Sec. 3). The same random transformations family is applied to real and fake images
before D, in both the D and the G step; every op is differentiable, so G's gradient passes through
it.

Policy: a sequence of op names from ("color", "translation", "cutout"), applied in order
(() = none).
  color:       brightness x + U(-0.5, 0.5); saturation (x - mean_c) * U(0, 2) + mean_c;
               contrast (x - mean_chw) * U(0.5, 1.5) + mean_chw (one draw per sample each)
  translation: shift by integers in [-R/8, R/8] per sample and axis, padding with zeros
  cutout:      one (R/2 x R/2) square per sample set to zero, centre anywhere in the image
"""
import torch
import torch.nn.functional as F


def _rand(x, *shape, generator=None):
    return torch.rand(x.shape[0], *shape, generator=generator, device=x.device, dtype=x.dtype)


def color(x, generator=None):
    """Random brightness, saturation and contrast per sample (DiffAugment's rand_* ops)."""
    x = x + (_rand(x, 1, 1, 1, generator=generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, 1, 1, 1, generator=generator) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, 1, 1, 1, generator=generator) + 0.5) + mean


def translation(x, ratio=0.125, generator=None):
    """out[b, :, y, x] = x[b, :, y - dy_b, x - dx_b], |dy|, |dx| <= ratio * size, zero outside."""
    B, C, H, W = x.shape
    s = max(1, int(H * ratio + 0.5))
    shift = torch.randint(-s, s + 1, (2, B, 1, 1), generator=generator, device=x.device)
    x_pad = F.pad(x, [s, s, s, s])
    rows = torch.arange(H, device=x.device).view(1, H, 1) + s - shift[0]  # (B, H, 1) source rows
    cols = torch.arange(W, device=x.device).view(1, 1, W) + s - shift[1]  # (B, 1, W) source cols
    batch = torch.arange(B, device=x.device).view(B, 1, 1)                  # (B, 1, 1)
    # (B, H+2s, W+2s, C) indexed by (B, H, W) index grids -> (B, H, W, C) -> (B, C, H, W)
    return x_pad.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x, ratio=0.5, generator=None):
    """Zero one (ratio*H x ratio*W) square per sample, its centre uniform over the image."""
    B, C, H, W = x.shape
    size = int(H * ratio + 0.5)
    top = torch.randint(0, H, (B, 1, 1), generator=generator, device=x.device) - size // 2
    left = torch.randint(0, W, (B, 1, 1), generator=generator, device=x.device) - size // 2
    ys = torch.arange(H, device=x.device).view(1, H, 1)     # broadcast against top (B, 1, 1)
    xs = torch.arange(W, device=x.device).view(1, 1, W)
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)                          # (B, 1, H, W) mask


OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x, policy=("color", "translation", "cutout"), generator=None):
    """Apply the policy's ops in order to a batch (B, C, H, W); generator makes the draws
    reproducible."""
    for name in policy:
        if name not in OPS:
            raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(OPS)}")
        x = OPS[name](x, generator=generator)
    return x
