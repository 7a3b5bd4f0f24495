"""Reference features of real images, cached on disk, and the distances of generated images to them.

FD, KID and precision/recall compare a generated set with a real reference set in the feature space
of a network (the project's evaluator, or Inception-v3 via eval.inception). The reference side is
the same for every evaluation, so its features, mean and covariance are computed once and cached
(core.cache) under a key of everything they depend on: dataset, resolution, split, class subset,
data source (shapes seed and size, or the CIFAR-10 folder) and the network's identity (its
checkpoint file's fingerprint, core.checkpoint.fingerprint). Retraining the evaluator therefore
invalidates the cache by itself.

Reference images are the raw split: no flips, no shifts, no augmentation of any kind (augmented
reference statistics would make real test images look "off-distribution" and bias every FD).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from core.cache import cache_root, cached
from core.config import Config
from core.data import class_names, data_digest, load_split
from core.errors import ConfigError
from eval.evalnet import extract_features
from eval.metrics import (feature_statistics, frechet_distance, kernel_inception_distance,
                          precision_recall)


def network_key(net) -> str:
    """The network's identity in cache keys: its checkpoint file hash (set by load_evaluator /
    load_inception), else, for a network built in memory, 'w' + a hash of its weights."""
    if getattr(net, "checkpoint_hash", None):
        return net.checkpoint_hash
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8)
                      .numpy().tobytes())
    return "w" + digest.hexdigest()[:12]


def _check_classes(cfg: Config, classes) -> tuple[str, ...] | None:
    if classes is None:
        return None
    names = class_names(cfg.data)
    unknown = [c for c in classes if c not in names]
    if unknown or not classes:
        raise ConfigError(f"unknown or no reference classes {list(unknown)}; {cfg.data.dataset} "
                          f"has {', '.join(names)}")
    return tuple(sorted(set(classes)))


def reference_set(cfg: Config, net, split: str, classes=None) -> dict:
    """Features of the real images of `split` (optionally only `classes`), un-augmented, and their
    statistics: {'features' (N, F) float32, 'mu' (F,), 'sigma' (F, F) float64}, cached
    (core.cache)."""
    classes = _check_classes(cfg, classes)
    key = ["refstats", split, classes or "all", data_digest(cfg.data, cache_root(cfg)),
           network_key(net)]

    def compute() -> dict:
        images = load_split(cfg.data, split, cache_root(cfg))
        features = extract_features(net, images.x if classes is None else images.only(classes).x)
        mu, sigma = feature_statistics(features)
        return {"features": features, "mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma)}
    return cached(cache_root(cfg), "refstats", key, compute)


def reference_statistics(cfg: Config, evaluator, split: str,
                         classes=None) -> tuple[np.ndarray, np.ndarray]:
    """(mu (F,), sigma (F, F)) of the reference features, numpy float64
    (eval.metrics.feature_statistics)."""
    ref = reference_set(cfg, evaluator, split, classes)
    return ref["mu"].numpy(), ref["sigma"].numpy()


def fd_eval(evaluator, images_uint8, reference_stats) -> float:
    """FD-eval: Frechet distance between the features of uint8 images (N, H, W, 3) and reference
    (mu, sigma)."""
    return frechet_distance(*feature_statistics(extract_features(evaluator, images_uint8)),
                            *reference_stats)


def distances_to_reference(cfg: Config, net, images_uint8, split: str, classes=None,
                           kid_subset: int = 1000, pr_max: int = 10_000, seed: int = 0) -> dict:
    """FD, KID and precision/recall of generated uint8 images (N, H, W, 3) against a real reference
    set.

    FD uses every image on both sides; KID averages 100 subsets of min(kid_subset, N, N_ref) images;
    precision/recall (k=3) compares equal-size sets, since k-NN radii shrink as a set grows:
    min(N, N_ref, pr_max) generated images against as many reference images drawn at random
    (seeded). Counts are reported next to every value.
    """
    ref = reference_set(cfg, net, split, classes)
    fake = extract_features(net, images_uint8)
    real = ref["features"]
    m = min(len(fake), len(real), pr_max)
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:m]
    return {"fd": frechet_distance(*feature_statistics(fake), ref["mu"], ref["sigma"]),
            "kid": kernel_inception_distance(fake, real, subset_size=kid_subset, seed=seed),
            "precision_recall": precision_recall(real[pick], fake[:m]),
            "n_images": len(fake), "n_reference": len(real), "feature_dim": fake.shape[1]}
