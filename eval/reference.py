"""Reference features of real images, cached on disk, and the distances of generated images to them.

FD, KID and precision/recall compare a generated set with a real reference set in the feature space of a
network (the project's evaluator, or Inception-v3 via eval.inception). The reference side is the same for
every evaluation, so its features, mean and covariance are computed once and cached as
<run.out_dir>/cache/refstats/<dataset>-r<res>-<split>-<net>-<key>.npz, where <key> hashes everything
they depend on: dataset, resolution, split, class subset, data source (shapes seed and size, or the
CIFAR-10 folder) and the network's identity (its checkpoint file's fingerprint,
core.checkpoint.fingerprint). Retraining the evaluator therefore invalidates the cache by itself.

Reference images are the raw split: no flips, no shifts, no augmentation of any kind (augmented reference
statistics would make real test images look "off-distribution" and bias every FD).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from core import checkpoint
from core.config import Config
from core.data import class_names, load_split
from core.training import cache_dir
from eval.evaluator import extract_features
from eval.metrics import feature_statistics, frechet_distance, kernel_inception_distance, precision_recall


def network_key(net) -> str:
    """The network's identity in cache keys: its checkpoint file hash (set by load_evaluator /
    load_inception), else, for a network built in memory, 'w' + a hash of its weights."""
    if getattr(net, "checkpoint_hash", None):
        return net.checkpoint_hash
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return "w" + digest.hexdigest()[:12]


def _check_classes(cfg: Config, classes) -> tuple[str, ...] | None:
    if classes is None:
        return None
    names = class_names(cfg.data)
    unknown = [c for c in classes if c not in names]
    if unknown or not classes:
        raise ValueError(f"unknown or no reference classes {list(unknown)}; {cfg.data.dataset} has {', '.join(names)}")
    return tuple(sorted(set(classes)))


def cache_path(cfg: Config, net, split: str, classes=None) -> Path:
    """Where the reference features of (dataset, resolution, split, classes, data source, network) live."""
    classes = _check_classes(cfg, classes)
    d = cfg.data
    source = (f"seed{d.seed}-n{d.shapes_train_size if split == 'train' else d.shapes_test_size}"
              if d.dataset == "shapes" else str(Path(d.root).resolve()))
    tag = checkpoint.key_digest([d.dataset, d.resolution, split, classes or "all", source, network_key(net)])
    return cache_dir(cfg) / "refstats" / f"{d.dataset}-r{d.resolution}-{split}-{network_key(net)}-{tag}.npz"


def _cached(cfg: Config, net, split: str, classes) -> dict:
    """{'features' (N, F) float32, 'mu' (F,), 'sigma' (F, F) float64}: from the cache, else computed and saved."""
    path = cache_path(cfg, net, split, classes)
    if path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in ("features", "mu", "sigma")}
    images = load_split(cfg.data, split, cache_dir(cfg))
    if classes is not None:
        images = images.only(_check_classes(cfg, classes))
    features = extract_features(net, images.x).numpy()
    mu, sigma = feature_statistics(features)
    checkpoint.atomic_write(path, lambda f: np.savez(f, features=features, mu=mu, sigma=sigma))
    return {"features": features, "mu": mu, "sigma": sigma}


def reference_features(cfg: Config, evaluator, split: str, classes=None) -> torch.Tensor:
    """Features (N, F) float32 of the real images of `split` (optionally only `classes`), un-augmented."""
    return torch.from_numpy(_cached(cfg, evaluator, split, classes)["features"])


def reference_statistics(cfg: Config, evaluator, split: str, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """(mu (F,), sigma (F, F)) of the reference features, numpy float64 (eval.metrics.feature_statistics)."""
    cached = _cached(cfg, evaluator, split, classes)
    return cached["mu"], cached["sigma"]


def fd_eval(evaluator, images_uint8, reference_stats) -> float:
    """FD-eval: Frechet distance between the features of uint8 images (N, H, W, 3) and reference (mu, sigma)."""
    return frechet_distance(*feature_statistics(extract_features(evaluator, images_uint8)), *reference_stats)


def distances_to_reference(cfg: Config, net, images_uint8, split: str, classes=None, kid_subset: int = 1000,
                           pr_max: int = 10_000, seed: int = 0) -> dict:
    """FD, KID and precision/recall of generated uint8 images (N, H, W, 3) against a real reference set.

    FD uses every image on both sides; KID averages 100 subsets of min(kid_subset, N, N_ref) images;
    precision/recall (k=3) compares equal-size sets, since k-NN radii shrink as a set grows: min(N, N_ref,
    pr_max) generated images against as many reference images drawn at random (seeded). Counts are
    reported next to every value.
    """
    ref = _cached(cfg, net, split, classes)
    fake = extract_features(net, images_uint8)
    real = torch.from_numpy(ref["features"])
    m = min(len(fake), len(real), pr_max)
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:m]
    return {"fd": frechet_distance(*feature_statistics(fake), ref["mu"], ref["sigma"]),
            "kid": kernel_inception_distance(fake, real, subset_size=kid_subset, seed=seed),
            "precision_recall": precision_recall(real[pick], fake[:m]),
            "n_images": len(fake), "n_reference": len(real), "feature_dim": fake.shape[1]}
