"""Datasets as in-memory uint8 tensors, and the class splits of both experiments.

`load_split(cfg, "train")` returns an ImageSet for `shapes` (rendered, cached as .npz) or `cifar10`
(a folder with train.npz/test.npz, or torchvision's CIFAR10). Labels always index the full class
list of the dataset; the splits (`base_classes`, the held-out `concept_class`, GAN
`source`/`target`) select from it by name.
"""
from __future__ import annotations

import functools
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import shapes
from core.cache import cached
from core.config import DATASETS, DataConfig
from core.errors import DataError

SHAPES_VERSION = 1  # bump when the renderer changes, so stale caches are not reused
# the config fields that decide which images a split holds (core.runs keys every stage's run by
# them)
IMAGE_FIELDS = ("data.dataset", "data.resolution", "data.shapes_train_size",
                "data.shapes_test_size", "data.seed", "data.train_subset", "data.test_subset")
LOADER_FIELDS = ("dataset", "root", "resolution", "shapes_train_size", "shapes_test_size", "seed",
                 "train_subset", "test_subset")  # what load_split reads


@dataclass
class ImageSet:
    x: torch.Tensor                 # (N, H, W, 3) uint8
    y: torch.Tensor                 # (N,) int64, index into `classes`
    # (N, 3) int64 shape colour, background colour, texture (shapes only)
    attrs: torch.Tensor | None
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)

    def only(self, class_names) -> "ImageSet":
        """The images whose class is one of class_names (labels keep their global indices)."""
        wanted = torch.tensor([self.classes.index(c) for c in class_names])
        keep = torch.isin(self.y, wanted)
        return ImageSet(self.x[keep], self.y[keep],
                        None if self.attrs is None else self.attrs[keep], self.classes)

    def take(self, index) -> "ImageSet":
        return ImageSet(self.x[index], self.y[index],
                        None if self.attrs is None else self.attrs[index], self.classes)

    def per_class(self, k: int) -> "ImageSet":
        """The first k images of each class present (deterministic few-shot subsets)."""
        # nonzero: (n_c, 1) indices of class c, flattened to (n_c,), the first k kept
        index = torch.cat([torch.nonzero(self.y == c).flatten()[:k] for c in self.y.unique()])
        return self.take(index)


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return x_uint8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1] -> (N, H, W, 3) uint8."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def class_names(cfg: DataConfig) -> tuple[str, ...]:
    return DATASETS[cfg.dataset]


def base_classes(cfg: DataConfig) -> tuple[str, ...]:
    """Classes the base diffusion model (and tiny CLIP) train on: all but the held-out concept."""
    return tuple(c for c in class_names(cfg) if c != cfg.concept_class)


def load_split(cfg: DataConfig, split: str, cache: Path | None = None) -> ImageSet:
    """The images of one split ("train" or "test") at cfg.resolution (only the first images of each
    class when data.train_subset / data.test_subset is set); rendered shapes are kept under `cache`
    (core.cache)."""
    images = _load_split(cfg, split, cache)
    subset = cfg.train_subset if split == "train" else cfg.test_subset
    return images.per_class(-(-subset // len(images.classes))) if subset else images


def data_digest(cfg: DataConfig, cache: Path | None = None) -> str:
    """16 hex digits naming the content of both splits as the loaders give them (images, labels,
    attributes): run keys hold it, so a run made from other images (another data.root, a changed
    file) is never taken for this one, while a setting that changes nothing the loaders return
    changes nothing here."""
    loaded = {f: getattr(cfg, f) for f in LOADER_FIELDS}
    return _digest(tuple(loaded.items()), cache)


@functools.lru_cache(maxsize=8)
def _digest(loaded: tuple, cache: Path | None) -> str:
    cfg = DataConfig(**dict(loaded))
    digest = hashlib.sha256()
    for split in ("train", "test"):
        images = load_split(cfg, split, cache)
        for array in (images.x, images.y, images.attrs):
            if array is not None:
                digest.update(array.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _load_split(cfg: DataConfig, split: str, cache: Path | None) -> ImageSet:
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid choices: train, test")
    names = class_names(cfg)
    if cfg.dataset == "shapes":
        n = cfg.shapes_train_size if split == "train" else cfg.shapes_test_size
        key = ["shapes", SHAPES_VERSION, cfg.resolution, cfg.seed, split, n]
        rendered = cached(cache, "shapes", key, lambda: dict(zip(
            ("x", "y", "attrs"),
            map(torch.from_numpy, shapes.render_split(cfg.seed, split, n, cfg.resolution)))))
        return ImageSet(rendered["x"], rendered["y"], rendered["attrs"], names)
    x, y = _load_cifar10(cfg.root, split)
    x = torch.from_numpy(x)
    if cfg.resolution != x.shape[1]:
        x = to_uint8(F.interpolate(to_float(x), size=cfg.resolution, mode="bilinear",
                                   antialias=True))
    return ImageSet(x, torch.from_numpy(y).long(), None, names)


def _load_cifar10(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """x (N, 32, 32, 3) uint8 and y (N,) in 0..9 from ROOT/{split}.npz, else torchvision's
    CIFAR10(ROOT)."""
    npz = Path(root) / f"{split}.npz"
    if npz.exists():
        try:
            with np.load(npz) as f:
                x, y = f["x"], f["y"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"{npz} is not a readable CIFAR-10 file with arrays x and y "
                            f"({type(err).__name__}: {err}); write it again from your "
                            "CIFAR-10 copy") from None
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8 or len(x) != len(y):
            raise DataError(f"{npz}: expected x uint8 (N, 32, 32, 3) and y (N,), got x {x.dtype} "
                            f"{x.shape}, y {y.shape}")
        bad = (y < 0) | (y >= len(DATASETS["cifar10"]))
        if bad.any():
            raise DataError(f"{npz}: {int(bad.sum())} labels outside 0..9 (e.g. {int(y[bad][0])}); "
                            "CIFAR-10 has 10 classes")
        return x, y.astype(np.int64)
    try:
        from torchvision.datasets import CIFAR10
        ds = CIFAR10(root, train=(split == "train"), download=True)
    except Exception as err:  # no network, no files: say where the data can come from
        raise DataError(
            f"CIFAR-10 not found: no {npz} and torchvision could not download it ({err}). Either "
            "give --data.root=DIR with DIR/train.npz and DIR/test.npz (x uint8 N,32,32,3; y int64 "
            "in 0..9), or run once with a network (torchvision downloads it into "
            "--data.root).") from None
    return np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64)
