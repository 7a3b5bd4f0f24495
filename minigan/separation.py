"""How much a conditional generator's output depends on the class, measured on its outputs, not on
its parameters (the embeddings' class spread says how far the embeddings moved apart, not what that
changes: after a self-initialization that damps the class path, the same spread gives far less
difference, as class_separation below shows).

Class separation. For the same z and noise maps z_1..z_n, generate every class, x[c, i] = G(z_i, c),
and compare how far a sample moves when only its class changes with how far it moves when only z
changes:

    between = mean_i  mean_{c != c'} ||f(x[c, i]) - f(x[c', i])||^2      (same z, two classes)
    within  = mean_c  mean_{i != j}  ||f(x[c, i]) - f(x[c, j])||^2      (same class, two z)
    separation = between / within

Since the mean squared distance over distinct pairs is twice the unbiased variance, between is the
variance over classes at fixed z and within the variance over z at fixed class (each summed over the
D dimensions). f: the evaluator's penultimate features (the space of FD-eval) or the pixels. 0: the
class changes nothing (every class a copy of one generator); 1: changing the class moves a sample as
far as drawing a new z of its class (e.g. classes that are unrelated generators of one
distribution); above 1: the class matters more than z. The ratio also grows when `within` shrinks: a
generator that draws a narrow slice of each class scores high for that alone, so `within` (the
classes' own diversity) is reported beside it.

Embedding sensitivity (hyper-modulation): the RMS change of the image when class 0's embedding moves
by 10% of its norm in a random direction, over the RMS distance between two samples of class 0
(other z). It is the slope along which transfer must pull copied embeddings apart: a
self-initialization that flattens it leaves classes that cannot separate in a short transfer.
"""
from __future__ import annotations

import torch

from eval.evalnet import extract_features
from minigan.quality import sample_images


def variances(features: torch.Tensor) -> tuple[float, float]:
    """(between, within) for features (C, n, D), sample i of every class drawn from the same z: the
    variance over classes at each z, and the variance over z within each class (summed over
    dimensions, averaged)."""
    f = features.double().flatten(2)  # (C, n, D); images (C, n, H, W, 3) flatten too
    return f.var(dim=0).sum(-1).mean().item(), f.var(dim=1).sum(-1).mean().item()


def separation_ratio(features: torch.Tensor) -> float:
    """between / within (variances): how far a class change moves a sample, in units of a new z."""
    between, within = variances(features)
    return between / within


@torch.no_grad()
def class_separation(G, n_classes: int, n: int, seed: int, evaluator=None) -> dict:
    """Separation in pixels and, with an evaluator, in its features, from n shared z per class
    (seeded)."""
    images = torch.stack([sample_images(G, n, torch.full((n,), c), seed=seed)
                          for c in range(n_classes)])
    out = {"pixels": separation_ratio(images.float()), "n_per_class": n}   # images (C, n, H, W, 3)
    if evaluator is not None:
        # (C, n, F)
        feats = extract_features(evaluator, images.flatten(0, 1)).view(n_classes, n, -1)
        out["features"] = separation_ratio(feats)
        # a collapsed G: within -> 0
        out["features_between"], out["features_within"] = variances(feats)
    return out


@torch.no_grad()
def embedding_sensitivity(hyper_gen, n: int = 64, rel_step: float = 0.1, seed: int = 0) -> float:
    """RMS image change for a rel_step * |e_0| move of class 0's embedding over the RMS distance
    between two samples of class 0 (docstring); the embedding is restored afterwards."""
    base = hyper_gen.base
    gen = torch.Generator(device=base.const.device).manual_seed(seed)
    z = torch.randn(n, base.z_dim, generator=gen, device=base.const.device)
    noise = base.make_noise(n, generator=gen)
    labels = torch.zeros(n, dtype=torch.long, device=z.device)
    emb = hyper_gen.class_net.embedding.weight
    saved = emb[0].clone()
    direction = torch.randn(emb.shape[1], generator=gen, device=z.device)
    x0 = hyper_gen(z, labels, noise=noise)
    emb[0] += rel_step * saved.norm() * direction / direction.norm()
    x1 = hyper_gen(z, labels, noise=noise)
    emb[0] = saved
    change = (x1 - x0).pow(2).flatten(1).sum(1).mean().sqrt()  # (n, 3, H, W) -> (n,) -> RMS
    # pairs (i, i - 1): other z
    spread = (x0 - x0.roll(1, dims=0)).pow(2).flatten(1).sum(1).mean().sqrt()
    return (change / spread).item()
