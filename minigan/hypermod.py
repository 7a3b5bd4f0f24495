"""Hyper-modulation: a frozen unconditional generator made class-conditional (Laria et al. 2022, Sec. 3.2).

Every synthesis kernel W (O, I, k, k) of the pretrained generator is frozen and standardized per
(out, in) kernel over its k*k spatial taps:

    W_hat = (W - mu) / sigma,      mu, sigma: (O, I)

A class network maps a label to h (per-class embedding + 4-layer MLP), and one head per conv layer maps
h to a per-kernel scale and shift and a bias shift (AdaFM, Zhao et al. 2020, applied per class):

    W'(c) = W_hat * gamma(c) + beta(c),      bias'(c) = bias + delta_b(c)

gamma = sigma, beta = mu, delta_b = 0 gives back W exactly ("identity modulation").

Heads:
  * dense (the official code): one Linear(E -> 2*O*I + O) per layer. (E + 1)(2OI + O) parameters per
    layer, about 2(E + 1) / 9 times the layer's own O*I*9 weights: ~14x for E = 64.
  * lowrank: class-dependent combinations of r shared rank-1 matrices, relative to the base statistics,
        D_g(c) = U_g diag(s_g(c)) V_g^T,  D_b(c) = U_b diag(s_b(c)) V_b^T,   U: (O, r), V: (I, r)
        gamma(c) = sigma * (1 + D_g(c)),  beta(c) = mu + sigma * D_b(c)
    so W'(c) = W + (W - mu) * D_g(c) + sigma * D_b(c): D is dimensionless, the same learning rate suits
    every layer, and s = 0 is the identity. Linear(E -> 2r + O) gives (s_g, s_b, delta_b):
    2r(O + I) + (E + 1)(2r + O) parameters per layer.
The heads start from PyTorch's default (random) init, i.e. the "without self-initialization" ablation;
set_identity_modulation() gives the exact identity and selfinit.py the paper's learned one.
Sizes with 10 classes, z = w = 64, rank 8 (base G / dense / lowrank trainable parameters):
    16x16, 32 channels, E = 32:  84k / 348k (4.1x) / 17.6k (21%)    (E = 64: 693k / 38k = 45%)
    16x16, 64 channels, E = 64: 244k / 2.70M (11x) / 53.5k (22%)
    32x32, 64 channels, E = 64: 335k / 3.77M (11x) / 68.0k (20%)
The presets (mapping MLP of 2 layers): quick, 5 classes, 16x16, 32 channels, E = 32: 76k / 348k (4.6x) /
17.4k (23%); cifar10, 4 classes, 32x32, 128 channels, E = 64: 1.30M / 15.0M (11.5x) / 111k (8.5%).
The 1x1 to-RGB layer is not modulated (one tap has no spatial std) and stays frozen with the rest of the
base generator (mapping MLP, constant, AdaIN affines, noise strengths).
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class ClassNetwork(nn.Module):
    """h = MLP(embedding[label]): per-class E-d embedding, then 4 Linear layers (LeakyReLU between)."""

    def __init__(self, n_classes, embed_dim=64, n_layers=4):
        super().__init__()
        self.embedding = nn.Embedding(n_classes, embed_dim)
        self.layers = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in range(n_layers))

    def forward(self, labels):
        h = self.embedding(labels)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.leaky_relu(h, 0.2)
        return h


class KernelModulation(nn.Module):
    """One conv layer: frozen standardized kernels (buffers) and a head h -> (gamma, beta, delta_b)."""

    def __init__(self, weight, eps=1e-8):
        super().__init__()
        weight = weight.detach().clone()
        mu = weight.mean(dim=(2, 3))                                     # (O, I)
        sigma = (weight.var(dim=(2, 3), unbiased=False) + eps).sqrt()    # (O, I)
        self.register_buffer("w_hat", (weight - mu[..., None, None]) / sigma[..., None, None])
        self.register_buffer("mu", mu)
        self.register_buffer("sigma", sigma)
        self.out_channels, self.in_channels = mu.shape

    def forward(self, h):
        """Per-sample kernels (B, O, I, k, k) and bias shifts (B, O)."""
        gamma, beta, delta_b = self.modulation(h)                        # (B, O, I), (B, O, I), (B, O)
        weight = self.w_hat * gamma[..., None, None] + beta[..., None, None]
        return weight, delta_b


class DenseModulation(KernelModulation):
    """(gamma, beta, delta_b) = Linear(E -> 2*O*I + O)(h), as in the official code."""

    def __init__(self, weight, embed_dim):
        super().__init__(weight)
        O, I = self.out_channels, self.in_channels
        self.fc = nn.Linear(embed_dim, 2 * O * I + O)

    def modulation(self, h):
        O, I = self.out_channels, self.in_channels
        gamma, beta, delta_b = self.fc(h).split([O * I, O * I, O], dim=1)
        return gamma.view(-1, O, I), beta.view(-1, O, I), delta_b

    @torch.no_grad()
    def set_identity(self):
        self.fc.weight.zero_()
        zeros = self.mu.new_zeros(self.out_channels)
        self.fc.bias.copy_(torch.cat([self.sigma.flatten(), self.mu.flatten(), zeros]))  # gamma, beta, delta_b


class LowRankModulation(KernelModulation):
    """gamma = sigma (1 + U_g diag(s_g) V_g^T), beta = mu + sigma U_b diag(s_b) V_b^T, (s_g, s_b, delta_b)
    = Linear(E -> 2r + O)(h); U, V are class-independent and learned (module docstring)."""

    def __init__(self, weight, embed_dim, rank):
        super().__init__(weight)
        O, I = self.out_channels, self.in_channels
        self.rank = rank
        self.fc = nn.Linear(embed_dim, 2 * rank + O)
        # std r^(-1/4) each, so sum_r U s V has the scale of s whatever the rank
        self.u = nn.Parameter(torch.randn(2, O, rank) * rank ** -0.25)  # [U_g, U_b]
        self.v = nn.Parameter(torch.randn(2, I, rank) * rank ** -0.25)  # [V_g, V_b]

    def modulation(self, h):
        s, delta_b = self.fc(h).split([2 * self.rank, self.out_channels], dim=1)
        s = s.view(-1, 2, self.rank)                                   # (B, [g, b], r)
        d = torch.einsum("kor,bkr,kir->bkoi", self.u, s, self.v)       # (B, 2, O, I): U diag(s) V^T
        return self.sigma * (1 + d[:, 0]), self.mu + self.sigma * d[:, 1], delta_b

    @torch.no_grad()
    def set_identity(self):
        self.fc.weight.zero_()
        self.fc.bias.zero_()


class HyperModulatedGenerator(nn.Module):
    """A frozen copy of base_generator whose synthesis kernels are predicted per class.

    forward(z, labels) runs the base generator with W'(c), bias'(c) through its weights=/biases=
    override. Only the class network and the heads are trainable (trainable_parameters()).
    """

    def __init__(self, base_generator, n_classes, head="dense", rank=8, embed_dim=64):
        super().__init__()
        if head not in ("dense", "lowrank"):
            raise ValueError(f"head must be 'dense' or 'lowrank', got {head!r}")
        self.base = copy.deepcopy(base_generator).requires_grad_(False)
        self.n_classes, self.head = n_classes, head
        self.class_net = ClassNetwork(n_classes, embed_dim)
        self.modulations = nn.ModuleList(
            DenseModulation(layer.conv_weight(), embed_dim) if head == "dense"
            else LowRankModulation(layer.conv_weight(), embed_dim, rank)
            for layer in self.base.conv_layers())
        self.to(base_generator.const.device)

    def trainable_parameters(self):
        """Class network and heads: everything but the frozen base generator."""
        return [p for name, p in self.named_parameters() if not name.startswith("base.")]

    def forward(self, z, labels, noise=None, return_features=False):
        h = self.class_net(labels)                                     # (B, E)
        weights, biases = [], []
        for modulation, layer in zip(self.modulations, self.base.conv_layers()):
            weight, delta_b = modulation(h)
            weights.append(weight)
            biases.append(layer.bias + delta_b)
        return self.base(z, noise=noise, weights=weights, biases=biases, return_features=return_features)

    def set_identity_modulation(self):
        """Heads output gamma = sigma, beta = mu, delta_b = 0 for every class: the base generator exactly."""
        for modulation in self.modulations:
            modulation.set_identity()

    @torch.no_grad()
    def class_spread(self) -> float:
        """Mean distance between two classes' embeddings over the mean embedding norm: 0 while every class is
        a copy of one (right after self-initialization), sqrt(2) for orthogonal embeddings of equal norm (and
        about that for independent random ones). How far training has told the classes apart."""
        emb = self.class_net.embedding.weight                       # (n_classes, embed_dim)
        n = len(emb)
        if n < 2:
            return 0.0
        mean_distance = torch.cdist(emb, emb).sum() / (n * (n - 1))  # the diagonal is 0
        return (mean_distance / emb.norm(dim=1).mean()).item()

    @torch.no_grad()
    def copy_embedding_to_all_classes(self, src_class=0):
        """Every class starts where src_class is (the last step of self-initialization)."""
        emb = self.class_net.embedding.weight
        emb.copy_(emb[src_class].expand_as(emb))
