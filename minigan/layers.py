"""Building blocks shared by the generator and the discriminator.

Equalized learning rate (Karras et al. 2018, "Progressive Growing of GANs", Sec. 4.1): parameters
are stored as N(0, 1) and scaled at run time by gain = lr_mul / sqrt(fan_in). The effective weight
has the He-like scale, while Adam, whose step size does not depend on a parameter's magnitude, moves
every layer at the same relative speed. lr_mul < 1 slows a layer down (StyleGAN uses 0.01 in the
mapping MLP).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class EqualLinear(nn.Module):
    """y = x @ (W * lr_mul / sqrt(in))^T + b * lr_mul, with W ~ N(0, 1 / lr_mul^2) and b = 0."""

    def __init__(self, in_features, out_features, bias=True, lr_mul=1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x):
        bias = None if self.bias is None else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.weight_gain, bias)


class EqualConv2d(nn.Module):
    """Same-padded k x k convolution with the weight scaled by 1 / sqrt(in * k * k) at run time."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.weight_gain, self.bias,
                        padding=self.weight.shape[-1] // 2)


def resolutions(resolution):
    """[4, 8, ..., resolution]; resolution must be a power of two >= 8."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]


def channels_per_resolution(channels, resolution):
    """Channel width at each resolution as {4: c4, 8: c8, ...}.

    channels: an int (same width everywhere), a list ordered from 4x4 upwards, or a dict
    {res: width}.
    """
    res = resolutions(resolution)
    if isinstance(channels, int):
        return {r: channels for r in res}
    if isinstance(channels, (list, tuple)):
        if len(channels) != len(res):
            raise ValueError(f"need {len(res)} channel widths for resolutions {res}, got "
                             f"{list(channels)}")
        return dict(zip(res, channels))
    channels = {int(r): c for r, c in channels.items()}  # keys may be strings when read from JSON
    missing = [r for r in res if r not in channels]
    if missing:
        raise ValueError(f"channel widths missing for resolutions {missing}")
    return {r: int(channels[r]) for r in res}
