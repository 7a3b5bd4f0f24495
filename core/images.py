"""Image grids as PNG files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.files import atomic_write


def grid(images, nrow: int, pad: int = 1, scale: int = 1) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows*(H+pad)+pad, ...) uint8 image, nrow images per row, upscaled
    by `scale`."""
    images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    n, h, w, c = images.shape
    rows = -(-n // nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad
            + col * (w + pad) + w] = img
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


def save_grid(images, path: str | os.PathLike, nrow: int, scale: int = 2) -> Path:
    """Save a PNG grid of uint8 (N, H, W, 3) images; nearest-neighbour upscaling keeps pixels
    visible."""
    path = Path(path)
    picture = Image.fromarray(grid(images, nrow, scale=scale))
    atomic_write(path, lambda f: picture.save(f, format="PNG"))
    return path
