"""Datasets as in-memory uint8 tensors, and the class splits of both experiments.

`load_split(cfg, "train")` returns an ImageSet for `shapes` (rendered, cached as .npz) or `cifar10`
(a folder with train.npz/test.npz, or torchvision's CIFAR10). Labels always index the full class list
of the dataset; the splits (`base_classes`, the held-out `concept_class`, GAN `source`/`target`) select
from it by name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import checkpoint, shapes
from core.config import DataConfig

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHAPES_VERSION = 1  # bump when the renderer changes, so stale caches are not reused


@dataclass
class ImageSet:
    x: torch.Tensor                 # (N, H, W, 3) uint8
    y: torch.Tensor                 # (N,) int64, index into `classes`
    attrs: torch.Tensor | None      # (N, 3) int64 shape colour, background colour, texture (shapes only)
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)

    def only(self, class_names) -> "ImageSet":
        """The images whose class is one of class_names (labels keep their global indices)."""
        wanted = torch.tensor([self.classes.index(c) for c in class_names])
        keep = torch.isin(self.y, wanted)
        return ImageSet(self.x[keep], self.y[keep], None if self.attrs is None else self.attrs[keep], self.classes)

    def take(self, index) -> "ImageSet":
        return ImageSet(self.x[index], self.y[index], None if self.attrs is None else self.attrs[index], self.classes)

    def per_class(self, k: int) -> "ImageSet":
        """The first k images of each class present (deterministic few-shot subsets)."""
        index = torch.cat([torch.nonzero(self.y == c).flatten()[:k] for c in self.y.unique()])
        return self.take(index)


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return x_uint8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1] -> (N, H, W, 3) uint8."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def class_names(cfg: DataConfig) -> tuple[str, ...]:
    if cfg.dataset == "shapes":
        return shapes.CLASSES
    if cfg.dataset == "cifar10":
        return CIFAR10_CLASSES
    raise ValueError(f"unknown dataset {cfg.dataset!r}; valid choices: shapes, cifar10")


def check_splits(cfg: DataConfig) -> None:
    """Every class named by the config exists and GAN source/target groups are disjoint."""
    names = class_names(cfg)
    for key, value in (("concept_class", (cfg.concept_class,)), ("source_classes", cfg.source_classes),
                       ("target_classes", cfg.target_classes)):
        unknown = [c for c in value if c not in names]
        if unknown:
            raise ValueError(f"data.{key} names unknown classes {unknown}; {cfg.dataset} has {', '.join(names)}")
    overlap = set(cfg.source_classes) & set(cfg.target_classes)
    if overlap:
        raise ValueError(f"data.source_classes and data.target_classes overlap: {sorted(overlap)}")


def base_classes(cfg: DataConfig) -> tuple[str, ...]:
    """Classes the base diffusion model (and tiny CLIP) train on: all but the held-out concept."""
    check_splits(cfg)
    return tuple(c for c in class_names(cfg) if c != cfg.concept_class)


def load_split(cfg: DataConfig, split: str, cache_dir: str | os.PathLike | None = None) -> ImageSet:
    """All images of one split ("train" or "test") at cfg.resolution."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid choices: train, test")
    names = class_names(cfg)
    if cfg.dataset == "shapes":
        x, y, attrs = _shapes_cached(cfg, split, cache_dir)
        return ImageSet(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(attrs), names)
    x, y = _load_cifar10(cfg.root, split)
    x = torch.from_numpy(x)
    if cfg.resolution != x.shape[1]:
        x = to_uint8(F.interpolate(to_float(x), size=cfg.resolution, mode="bilinear", antialias=True))
    return ImageSet(x, torch.from_numpy(y).long(), None, names)


def _shapes_cached(cfg: DataConfig, split: str, cache_dir) -> tuple[np.ndarray, ...]:
    n = cfg.shapes_train_size if split == "train" else cfg.shapes_test_size
    if cache_dir is None:
        return shapes.render_split(cfg.seed, split, n, cfg.resolution)
    path = Path(cache_dir) / f"shapes-v{SHAPES_VERSION}-r{cfg.resolution}-s{cfg.seed}-{split}-{n}.npz"
    if not path.exists():
        x, y, attrs = shapes.render_split(cfg.seed, split, n, cfg.resolution)
        checkpoint.atomic_write(path, lambda f: np.savez(f, x=x, y=y, attrs=attrs))
    with np.load(path) as f:
        return f["x"], f["y"], f["attrs"]


def _load_cifar10(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """x (N, 32, 32, 3) uint8 and y (N,) from ROOT/{split}.npz, else torchvision's CIFAR10(ROOT)."""
    npz = Path(root) / f"{split}.npz"
    if npz.exists():
        with np.load(npz) as f:
            x, y = f["x"], f["y"]
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8 or len(x) != len(y):
            raise ValueError(f"{npz}: expected x uint8 (N, 32, 32, 3) and y (N,), got x {x.dtype} {x.shape}, "
                             f"y {y.shape}")
        return x, y.astype(np.int64)
    try:
        from torchvision.datasets import CIFAR10
        ds = CIFAR10(root, train=(split == "train"), download=True)
    except Exception as err:  # no network, no files: say where the data can come from
        raise FileNotFoundError(
            f"CIFAR-10 not found: no {npz} and torchvision could not download it ({err}). Either give "
            f"--data.root=DIR with DIR/train.npz and DIR/test.npz (x uint8 N,32,32,3; y int64), e.g. "
            f"`python ../shared/data/cifar10/unpack.py DIR`, or run once with a network.") from None
    return np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64)
