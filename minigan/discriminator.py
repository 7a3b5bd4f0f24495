"""Discriminator with minibatch stddev and class conditioning; two trunks (arch):

  * "plain" (DCGAN, Radford et al. 2016): 4x4 convolutions with stride 2 (R -> R/2 ... 8 -> 4)
    straight from the image -> minibatch stddev -> FC -> features f (B, F); PyTorch's default layers
    and init (the logit heads below keep the equalized learning rate in both trunks).
  * "resnet" (StyleGAN2's D, Karras et al. 2020, Fig. 7c): from-RGB 1x1 -> residual blocks ->
    minibatch stddev -> 3x3 conv -> FC -> f, with the equalized learning rate.
  On the quick preset (16x16, two downsamplings) the plain D trains the generator further (a lower
  FD-eval) in the same number of steps, and in less time: `python train.py gan-pretrain` and
  `gan-pretrain-judge`, with and without `--gan.d_arch=resnet --gan.d_channels=32`, measure both
  (docs/tuning.md, "How the presets were tuned").

Heads:
  * n_classes = 0: one logit, D(x) = psi(f).
  * cond="multihead" (the official hyper-modulation code): one logit per class, D(x, y) = psi_y(f).
  * cond="projection" (Miyato & Koyama 2018, Eq. 3): D(x, y) = psi(f) + <e_y, f>.
conditional_from_unconditional() turns a pretrained unconditional D into a conditional one, with
random class heads (the official code) or copies of the unconditional head.
"""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigan.layers import EqualConv2d, EqualLinear, channels_per_resolution, resolutions


class DownResBlock(nn.Module):
    """y = (avgpool(conv(conv(x))) + conv1x1(avgpool(x))) / sqrt(2), LeakyReLU(0.2) after each 3x3
    conv."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = EqualConv2d(in_channels, in_channels, 3)
        self.conv2 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x):
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        return (y + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


def minibatch_stddev(x, group_size=4, eps=1e-8):
    """Append one channel: the std of each feature over a group of samples, averaged over features
    and pixels (Karras et al. 2018, Sec. 3). A group is G = gcd(B, group_size) samples b, b + B/G,
    b + 2B/G..."""
    B, C, H, W = x.shape
    G = math.gcd(B, group_size)
    y = x.reshape(G, B // G, C, H, W)  # sample b is in group b % (B // G)
    # over the group; y.var(dim=0) is many times slower on a CPU (`python -m bench.overheads`)
    var = (y - y.mean(dim=0)).square().mean(dim=0)
    y = (var + eps).sqrt().mean(dim=(1, 2, 3))                         # (B // G,)
    y = y.repeat(G).view(B, 1, 1, 1).expand(B, 1, H, W)                  # back to sample order
    return torch.cat([x, y], dim=1)


class ResNetTrunk(nn.Module):
    """(B, 3, R, R) -> minibatch stddev -> (B, F * 4 * 4): from-RGB 1x1, residual blocks, 3x3 conv
    at 4x4."""

    def __init__(self, ch, resolution, img_channels, mbstd_group):
        super().__init__()
        self.mbstd_group = mbstd_group
        self.from_rgb = EqualConv2d(img_channels, ch[resolution], 1)
        self.blocks = nn.ModuleList(DownResBlock(ch[r], ch[r // 2])
                                    for r in reversed(resolutions(resolution)[1:]))
        self.conv = EqualConv2d(ch[4] + 1, ch[4], 3)
        self.out_features = ch[4] * 4 * 4

    def forward(self, x):
        x = F.leaky_relu(self.from_rgb(x), 0.2)
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.mbstd_group)
        return F.leaky_relu(self.conv(x), 0.2).flatten(1)  # (B, F, 4, 4) -> (B, F * 4 * 4)


class PlainTrunk(nn.Module):
    """(B, 3, R, R) -> (B, (F + 1) * 4 * 4): 4x4 stride-2 convs + LeakyReLU(0.2) from R down to 4,
    the width at each resolution r < R being ch[r] (ch[R] is unused: the first conv reads the
    image), then minibatch stddev."""

    def __init__(self, ch, resolution, img_channels, mbstd_group):
        super().__init__()
        self.mbstd_group = mbstd_group
        # R/2, ..., 4
        widths = [img_channels] + [ch[r // 2] for r in reversed(resolutions(resolution)[1:])]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1)
                                   for a, b in zip(widths, widths[1:]))
        self.out_features = (ch[4] + 1) * 4 * 4

    def forward(self, x):
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return minibatch_stddev(x, self.mbstd_group).flatten(1)  # (B, (F + 1) * 4 * 4)


TRUNKS = {"plain": PlainTrunk, "resnet": ResNetTrunk}


class Discriminator(nn.Module):
    """x (B, 3, R, R) [, labels (B,)] -> logits (B,); features(x) -> (B, F), F = channels at 4x4."""

    def __init__(self, resolution=32, channels=64, n_classes=0, cond="multihead", img_channels=3,
                 mbstd_group=4, arch="plain"):
        super().__init__()
        if cond not in ("multihead", "projection"):
            raise ValueError(f"cond must be 'multihead' or 'projection', got {cond!r}")
        if arch not in TRUNKS:
            raise ValueError(f"arch must be one of {', '.join(TRUNKS)}, got {arch!r}")
        ch = channels_per_resolution(channels, resolution)
        self.resolution, self.n_classes, self.cond, self.arch = resolution, n_classes, cond, arch
        self.trunk = TRUNKS[arch](ch, resolution, img_channels, mbstd_group)
        linear = EqualLinear if arch == "resnet" else nn.Linear
        self.fc = linear(self.trunk.out_features, ch[4])
        n_heads = n_classes if n_classes > 0 and cond == "multihead" else 1
        self.head = EqualLinear(ch[4], n_heads)
        self.embed = None
        if n_classes > 0 and cond == "projection":
            self.embed = nn.Embedding(n_classes, ch[4])
            nn.init.normal_(self.embed.weight, std=1 / math.sqrt(ch[4]))

    def features(self, x):
        """The penultimate feature vector (B, F), what the self-supervised losses compare."""
        return F.leaky_relu(self.fc(self.trunk(x)), 0.2)   # (B, trunk.out_features) -> (B, F)

    def class_parameters(self):
        """The class-specific parameters: the per-class logits (multihead) or the class embedding
        (projection); none when unconditional."""
        if self.n_classes == 0:
            return []
        return list((self.head if self.cond == "multihead" else self.embed).parameters())

    def forward(self, x, labels=None, return_features=False):
        """Logits (B,), and the features (B, F) too when return_features."""
        if (labels is None) != (self.n_classes == 0):
            raise ValueError("labels must be given exactly when n_classes > 0 "
                             f"(n_classes={self.n_classes})")
        f = self.features(x)
        out = self.head(f)                                  # (B, n_heads)
        if self.n_classes == 0:
            logits = out[:, 0]
        elif self.cond == "multihead":
            logits = out.gather(1, labels.view(-1, 1))[:, 0]  # the label's own logit
        else:
            logits = out[:, 0] + (self.embed(labels) * f).sum(dim=1)
        return (logits, f) if return_features else logits


def conditional_from_unconditional(d_uncond, n_classes, cond="multihead", init="random"):
    """A conditional D whose trunk (and fc) is a copy of d_uncond's, with fresh class heads.

    init="random" (the official code, which loads the unconditional D with strict=False and so
    leaves its per-class output layer at its random init): multihead logits are new EqualLinear
    heads (N(0, 1) weights, zero biases), the projection embedding is drawn as in __init__; D then
    gives every class its own signal from step 0. init="copy": every class head is the unconditional
    head (multihead), or the class embedding is 0 (projection), so every class starts with
    d_uncond's logit and the classes only separate as training moves the heads apart."""
    if d_uncond.n_classes != 0:
        raise ValueError("d_uncond must be unconditional (n_classes=0)")
    if cond not in ("multihead", "projection") or init not in ("random", "copy"):
        raise ValueError("cond must be 'multihead' or 'projection' and init 'random' or 'copy', "
                         f"got {cond!r}, {init!r}")
    d = copy.deepcopy(d_uncond)
    d.n_classes, d.cond = n_classes, cond
    head = d_uncond.head
    features, device = head.weight.shape[1], head.weight.device
    if cond == "multihead":
        d.head = EqualLinear(features, n_classes).to(device)
        if init == "copy":
            with torch.no_grad():
                d.head.weight.copy_(head.weight.expand(n_classes, -1))
                d.head.bias.copy_(head.bias.expand(n_classes))
    else:
        d.embed = nn.Embedding(n_classes, features).to(device)
        if init == "copy":
            nn.init.zeros_(d.embed.weight)
        else:
            nn.init.normal_(d.embed.weight, std=1 / math.sqrt(features))
    return d
