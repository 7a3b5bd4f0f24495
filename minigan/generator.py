"""StyleGAN v1-like generator (Karras et al. 2019, "A Style-Based Generator Architecture for GANs").

    z --pixel norm--> mapping MLP --> w                                         (Sec. 2, Fig. 1b)
    const 4x4 --conv--> [epilogue] --(upsample, conv, epilogue, conv, epilogue) per resolution-->
        to-RGB
    epilogue(x) = AdaIN(LeakyReLU(x + strength * noise + bias), w)
    AdaIN(x, w) = y_s(w) * (x - mean(x)) / std(x) + y_b(w)                          (Eq. 1)

Every 3x3 convolution can be replaced by a per-sample weight (B, O, I, 3, 3) and bias (B, O): that
is how hyper-modulation (hypermod.py) runs the frozen generator with class-dependent kernels, by a
grouped convolution with one group per sample. The output is linear (no tanh), roughly in [-1, 1]
once trained, as in StyleGAN; clamp it for display. All layers use the equalized learning rate
(layers.py); the mapping MLP also has StyleGAN's learning-rate multiplier 0.01 (mapping_lr_mul).

ConditionalGenerator is the plain class-conditional baseline (class embedding added to w), used by
the "scratch" and "finetune" transfer variants.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigan.layers import EqualLinear, channels_per_resolution, resolutions


def pixel_norm(x, eps=1e-8):
    """x / sqrt(mean(x^2)) over the feature axis (Karras et al. 2018, Sec. 4.2)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def conv3x3(x, weight):
    """Same-padded conv; weight (O, I, k, k) shared by the batch, or (B, O, I, k, k) one per
    sample."""
    if weight.dim() == 4:
        return F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    B, I, H, W = x.shape
    O, k = weight.shape[1], weight.shape[-1]
    x = x.reshape(1, B * I, H, W)                   # the batch becomes B groups of I channels
    weight = weight.reshape(B * O, I, k, k)         # group b convolves sample b with its own
                                                    # kernels
    # (1, B*O, H, W): sample b's O output channels side by side -> (B, O, H, W)
    return F.conv2d(x, weight, padding=k // 2, groups=B).reshape(B, O, H, W)


class MappingNetwork(nn.Module):
    """w = MLP(pixel_norm(z)): n x (Linear + LeakyReLU(0.2)), learning rate multiplier lr_mul."""

    def __init__(self, z_dim, w_dim, n_layers, lr_mul=0.01):
        super().__init__()
        dims = [z_dim] + [w_dim] * n_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=lr_mul)
                                    for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, z):
        x = pixel_norm(z)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
        return x


class StyledConv(nn.Module):
    """[upsample x2] -> 3x3 conv -> + noise * per-channel strength -> + bias -> LeakyReLU ->
    AdaIN(w)."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, upsample):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1 / math.sqrt(in_channels * 9)  # equalized learning rate (layers.py)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.affine = EqualLinear(w_dim, 2 * out_channels)  # w -> (y_s, y_b)
        with torch.no_grad():
            self.affine.bias[:out_channels] = 1.0           # y_s = 1, y_b = 0 at init
        self.resolution = resolution
        self.upsample = upsample

    def conv_weight(self):
        """The effective (O, I, 3, 3) kernel, what a per-sample override replaces."""
        return self.weight * self.weight_gain

    def forward(self, x, w, noise, weight=None, bias=None):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = conv3x3(x, self.conv_weight() if weight is None else weight)
        bias = self.bias if bias is None else bias                      # (O,) or (B, O)
        # strength (1, O, 1, 1) per channel, noise (B, 1, r, r) per pixel, bias (1 or B, O, 1, 1)
        x = x + self.noise_strength.view(1, -1, 1, 1) * noise + bias.view(-1, x.shape[1], 1, 1)
        x = F.leaky_relu(x, 0.2)
        y_s, y_b = self.affine(w).view(-1, 2, x.shape[1], 1, 1).unbind(1)  # (B, O, 1, 1) each
        return y_s * F.instance_norm(x) + y_b


class Generator(nn.Module):
    """z (B, z_dim) -> image (B, 3, resolution, resolution); see the module docstring."""

    def __init__(self, resolution=32, z_dim=64, w_dim=64, channels=64, mapping_layers=4,
                 mapping_lr_mul=0.01, img_channels=3):
        super().__init__()
        ch = channels_per_resolution(channels, resolution)
        self.resolution, self.z_dim, self.w_dim = resolution, z_dim, w_dim
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mul)
        self.const = nn.Parameter(torch.randn(1, ch[4], 4, 4))
        self.blocks = nn.ModuleList([
            nn.ModuleList([StyledConv(ch[4], ch[4], w_dim, 4, upsample=False)])])
        for r in resolutions(resolution)[1:]:
            self.blocks.append(nn.ModuleList([
                StyledConv(ch[r // 2], ch[r], w_dim, r, upsample=True),
                StyledConv(ch[r], ch[r], w_dim, r, upsample=False)]))
        self.to_rgb = nn.Conv2d(ch[resolution], img_channels, 1)

    def conv_layers(self):
        """The synthesis 3x3 convolutions in execution order (the 1x1 to-RGB is not one of them)."""
        return [layer for block in self.blocks for layer in block]

    def make_noise(self, batch, generator=None):
        """One (batch, 1, r, r) N(0, 1) map per conv layer; pass it to forward() to reuse the
        noise."""
        device = self.const.device
        return [torch.randn(batch, 1, layer.resolution, layer.resolution, generator=generator,
                            device=device)
                for layer in self.conv_layers()]

    def forward(self, z, noise=None, weights=None, biases=None, return_features=False):
        """Image (B, 3, R, R), and with return_features the list of block outputs (B, C_r, r, r).

        noise:   list of per-layer noise maps (make_noise); fresh noise when None.
        weights: list of per-sample kernels (B, O, I, 3, 3), one per conv_layers() entry, or None.
        biases:  list of per-sample biases (B, O), one per conv layer, or None.
        """
        return self.synthesis(self.mapping(z), noise, weights, biases, return_features)

    def synthesis(self, w, noise=None, weights=None, biases=None, return_features=False):
        """The synthesis network alone, from styles w (B, w_dim); arguments as forward()."""
        n = len(self.conv_layers())
        noise = self.make_noise(w.shape[0]) if noise is None else noise
        weights = [None] * n if weights is None else weights
        biases = [None] * n if biases is None else biases
        if not len(noise) == len(weights) == len(biases) == n:
            raise ValueError(f"noise, weights and biases need one entry per conv layer ({n})")
        x = self.const.expand(w.shape[0], -1, -1, -1)
        features, i = [], 0
        for block in self.blocks:
            for layer in block:
                x = layer(x, w, noise[i], weights[i], biases[i])
                i += 1
            features.append(x)
        img = self.to_rgb(x)
        return (img, features) if return_features else img


class ConditionalGenerator(nn.Module):
    """The "finetune" and "scratch" baselines: a Generator made class-conditional by a learned class
    embedding added to the style, w(z, c) = mapping(z) + e_c, as simple as conditioning gets. The
    embedding starts at 0, so a pretrained generator is unchanged at step 0 for every class; every
    parameter trains.
    """

    def __init__(self, generator, n_classes):
        super().__init__()
        self.base, self.n_classes = generator, n_classes
        self.class_embed = nn.Embedding(n_classes, generator.w_dim)
        nn.init.zeros_(self.class_embed.weight)
        self.to(generator.const.device)

    def trainable_parameters(self):
        return list(self.parameters())

    def forward(self, z, labels, noise=None, return_features=False):
        w = self.base.mapping(z) + self.class_embed(labels)              # (B, w_dim)
        return self.base.synthesis(w, noise, return_features=return_features)
