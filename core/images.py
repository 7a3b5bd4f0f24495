"""Images on disk: PNG grids of samples, and a set of images read back from an .npz or a folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.errors import DataError
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


def read_images(path: str) -> np.ndarray:
    """uint8 (N, H, W, 3) from an .npz (key `x` or `images`) or a folder of .png files (sorted by
    name)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.png"))
        if not files:
            raise DataError(f"no .png files in {p}")
        images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        if len({im.shape for im in images}) > 1:
            raise DataError(f"the images in {p} do not all have the same size")
        x = np.stack(images)
    elif p.suffix == ".npz" and p.exists():
        try:
            with np.load(p, allow_pickle=False) as f:
                key = next((k for k in ("x", "images") if k in f), None)
                if key is None:
                    raise DataError(f"{p} has no array named 'x' or 'images' "
                                    f"(it has {', '.join(f.files)})")
                x = f[key]
        except (ValueError, OSError) as err:   # a pickled object array, or not an npz at all
            raise DataError(f"{p} is not an npz of plain arrays "
                            f"({str(err).splitlines()[0]})") from None
    else:
        raise DataError(f"--images {path!r} is neither a folder of .png files "
                        "nor an existing .npz file")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise DataError(f"{p}: expected uint8 images (N, H, W, 3), got {x.dtype} {x.shape}")
    return x
