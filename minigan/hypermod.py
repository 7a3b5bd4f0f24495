"""Hyper-modulation: a frozen unconditional generator made class-conditional (Laria et al. 2022,
Sec. 3.2).

Every synthesis kernel W (O, I, k, k) of the pretrained generator is frozen and standardized per
(out, in) kernel over its k*k spatial taps:

    W_hat = (W - mu) / sigma,      mu, sigma: (O, I)

A class network maps a label to h (per-class embedding + 4-layer MLP), and one head per conv layer
maps h to a per-kernel scale and shift and a bias shift (AdaFM, Zhao et al. 2020, applied per
class):

    W'(c) = W_hat * gamma(c) + beta(c),      bias'(c) = bias + delta_b(c)

Both heads here give gamma and beta relative to the base statistics, through dimensionless matrices
D_g(c), D_b(c) (O, I):

    gamma(c) = sigma * (1 + D_g(c)),   beta(c) = mu + sigma * D_b(c)
    so W'(c) = W + (W - mu) * D_g(c) + sigma * D_b(c)

D = 0 is the base generator exactly ("identity modulation"), and the same learning rate suits every
layer.
  * dense (the official head's size): (D_g, D_b, delta_b) = Linear(E -> 2*O*I + O)(h).
    (E + 1)(2OI + O) parameters per layer, about 2(E + 1) / 9 times the layer's own O*I*9 weights:
    ~14x for E = 64. The official head outputs gamma and beta themselves (not relative to sigma and
    mu); from its random init that needed several times the self-initialization steps here
    (measured with this file's first version, commit ca784f8, which had that head; no command
    measures it now).
  * lowrank: class-dependent combinations of r shared rank-1 matrices,
        D_g(c) = U_g diag(s_g(c)) V_g^T,  D_b(c) = U_b diag(s_b(c)) V_b^T,   U: (O, r), V: (I, r)
    with Linear(E -> 2r + O) giving (s_g, s_b, delta_b): 2r(O + I) + (E + 1)(2r + O) parameters per
    layer.
As in the official code, the class network and the heads use the equalized learning rate (layers.py)
with zero biases and a LeakyReLU after every layer of the class MLP; the gain sqrt(2) after each
LeakyReLU (StyleGAN2's) keeps the scale of h through the four layers, so h, and the image, depend on
the embedding as much at the fourth layer as at the first (PyTorch's default Linear init shrinks
that dependence several-fold per layer and lets the random biases dominate h; the image's
dependence on the embedding is what minigan/separation.py embedding_sensitivity measures). The
heads start random, i.e. the "without self-initialization" ablation; set_identity_modulation()
gives the exact identity and selfinit.py the paper's learned one. parameter_groups() gives the class
network its own learning-rate multiplier (the official code: 0.01 in self-initialization, 0.001 in
transfer).
Sizes with 10 classes, z = w = 64, rank 8 (base G / dense / lowrank trainable parameters):
    16x16, 32 channels, E = 32:  84k / 348k (4.1x) / 17.6k (21%)    (E = 64: 693k / 38k = 45%)
    16x16, 64 channels, E = 64: 244k / 2.70M (11x) / 53.5k (22%)
    32x32, 64 channels, E = 64: 335k / 3.77M (11x) / 68.0k (20%)
The presets (mapping MLP of 2 layers): quick, 5 classes, 16x16, 32 channels, E = 32: 76k / 348k
(4.6x) / 17.4k (23%); cifar10, 4 classes, 32x32, 128 channels, E = 64: 1.30M / 15.0M (11.5x) / 111k
(8.5%). The 1x1 to-RGB layer is not modulated (one tap has no spatial std) and stays frozen with the
rest of the base generator (mapping MLP, constant, AdaIN affines, noise strengths).
"""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigan.layers import EqualLinear


class ClassNetwork(nn.Module):
    """h = MLP(embedding[label]): per-class E-d embedding (N(0, 1)), then 4 x (EqualLinear,
    LeakyReLU(0.2), x sqrt(2)), as the official Task network (plus the activation gain; module
    docstring)."""

    def __init__(self, n_classes, embed_dim=64, n_layers=4):
        super().__init__()
        self.embedding = nn.Embedding(n_classes, embed_dim)
        self.layers = nn.ModuleList(EqualLinear(embed_dim, embed_dim) for _ in range(n_layers))

    def forward(self, labels):
        h = self.embedding(labels)                                       # (B, E)
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2) * math.sqrt(2)
        return h


class KernelModulation(nn.Module):
    """One conv layer: frozen standardized kernels (buffers) and a head h -> (D_g, D_b, delta_b)."""

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
        """h (N, E) -> kernels (N, O, I, k, k) and bias shifts (N, O), one set per row of h."""
        d_g, d_b, delta_b = self.modulation(h)  # (N, O, I), (N, O, I), (N, O)
        gamma, beta = self.sigma * (1 + d_g), self.mu + self.sigma * d_b
        weight = self.w_hat * gamma[..., None, None] + beta[..., None, None]
        return weight, delta_b

    @torch.no_grad()
    def set_identity(self):
        """D_g = D_b = 0, delta_b = 0 for every h: the head's output layer to zero."""
        self.fc.weight.zero_()
        self.fc.bias.zero_()


class DenseModulation(KernelModulation):
    """(D_g, D_b, delta_b) = Linear(E -> 2*O*I + O)(h): one free scale and shift per kernel and
    class."""

    def __init__(self, weight, embed_dim):
        super().__init__(weight)
        O, I = self.out_channels, self.in_channels
        self.fc = EqualLinear(embed_dim, 2 * O * I + O)

    def modulation(self, h):
        O, I = self.out_channels, self.in_channels
        d_g, d_b, delta_b = self.fc(h).split([O * I, O * I, O], dim=1)  # (N, 2OI + O) split
        return d_g.view(-1, O, I), d_b.view(-1, O, I), delta_b          # (N, O, I) x 2, (N, O)


class LowRankModulation(KernelModulation):
    """D_g = U_g diag(s_g) V_g^T, D_b = U_b diag(s_b) V_b^T,
    (s_g, s_b, delta_b) = Linear(E -> 2r + O)(h); U, V are class-independent and learned (module
    docstring)."""

    def __init__(self, weight, embed_dim, rank):
        super().__init__(weight)
        O, I = self.out_channels, self.in_channels
        self.rank = rank
        self.fc = EqualLinear(embed_dim, 2 * rank + O)
        # std r^(-1/4) each, so sum_r U s V has the scale of s whatever the rank
        self.u = nn.Parameter(torch.randn(2, O, rank) * rank ** -0.25)  # [U_g, U_b]
        self.v = nn.Parameter(torch.randn(2, I, rank) * rank ** -0.25)  # [V_g, V_b]

    def modulation(self, h):
        s, delta_b = self.fc(h).split([2 * self.rank, self.out_channels], dim=1)
        s = s.view(-1, 2, self.rank)                                   # (B, [g, b], r)
        d = torch.einsum("kor,bkr,kir->bkoi", self.u, s, self.v)       # (B, 2, O, I): U diag(s) V^T
        return d[:, 0], d[:, 1], delta_b


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

    def parameter_groups(self, lr, class_lr_mul):
        """Adam groups: the heads at lr, the class network at lr * class_lr_mul (official: 0.01 in
        self-alignment, 0.001 in transfer: the heads do the fitting, the class path keeps its
        sensitivity)."""
        return [{"params": list(self.modulations.parameters()), "lr": lr},
                {"params": list(self.class_net.parameters()), "lr": lr * class_lr_mul}]

    def forward(self, z, labels, noise=None, return_features=False):
        # kernels are a function of the class: build them once per class present, then give each
        # sample its class's (a batch of 32 holds at most n_classes distinct kernel sets; ~6x less
        # modulation work)
        classes, index = labels.unique(return_inverse=True)           # sample b has class
                                                                       # classes[index[b]]
        h = self.class_net(classes)                                    # (C, E), C classes present
        weights, biases = [], []
        for modulation, layer in zip(self.modulations, self.base.conv_layers()):
            weight, delta_b = modulation(h)                            # (C, O, I, k, k), (C, O)
            weights.append(weight[index])                              # (B, O, I, k, k)
            biases.append(layer.bias + delta_b[index])                 # (B, O)
        return self.base(z, noise=noise, weights=weights, biases=biases,
                         return_features=return_features)

    def set_identity_modulation(self):
        """Heads output gamma = sigma, beta = mu, delta_b = 0 for every class: the base generator
        exactly."""
        for modulation in self.modulations:
            modulation.set_identity()

    @torch.no_grad()
    def class_spread(self) -> float:
        """Mean distance between two classes' embeddings over the mean embedding norm: 0 while every
        class is a copy of one (right after self-initialization), sqrt(2) for orthogonal embeddings
        of equal norm (and about that for independent random ones). It says how far the embeddings
        moved apart, not how different the generators they give are (minigan/separation.py measures
        that)."""
        emb = self.class_net.embedding.weight                       # (n_classes, embed_dim)
        n = len(emb)
        if n < 2:
            return 0.0
        mean_distance = torch.cdist(emb, emb).sum() / (n * (n - 1))  # the diagonal is 0
        return (mean_distance / emb.norm(dim=1).mean()).item()

    @torch.no_grad()
    def copy_embedding_to_all_classes(self, src_class=0, noise=0.0, generator=None):
        """Every class starts where src_class is (the last step of self-initialization), plus, if
        noise > 0, Gaussian noise of std noise * |e| / sqrt(E) per coordinate (|noise| relative to
        the embedding's norm): a symmetry breaking that the official code does not have."""
        emb = self.class_net.embedding.weight                       # (n_classes, E)
        emb.copy_(emb[src_class].expand_as(emb))
        if noise > 0:
            scale = noise * emb[src_class].norm() / math.sqrt(emb.shape[1])
            emb.add_(scale * torch.randn(emb.shape, generator=generator, device=emb.device))
