"""A user's own concept: a folder of 3-20 PNG or JPEG images of any size, made into training images.

Each image is centre-cropped to a square and resized to the preset's resolution (Pillow's
antialiased LANCZOS filter). Image modes are handled explicitly:
  RGB, CMYK, YCbCr, 8-bit palette           converted to RGB
  grayscale (L, 1), 16-bit grayscale (I;16)  replicated to three channels (16-bit scaled to 8 bits)
  transparency (RGBA, LA, palette + alpha)   composited onto a white background
Anything else, a file Pillow cannot read, an image over Pillow's limit of about 89 million pixels (a
decompression bomb), or a file that is not .png/.jpg/.jpeg, stops with a DataError naming the file.
Hidden files (.DS_Store, ...) are skipped.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from core.errors import DataError

SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_IMAGES, MAX_IMAGES = 3, 20


def to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """The image as 8-bit RGB (see the module docstring for each mode)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return Image.fromarray((values / top * 255).round().astype(np.uint8)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if image.mode in ("RGB", "L", "1", "CMYK", "YCbCr"):
        return image.convert("RGB")
    raise DataError(f"{path}: image mode {image.mode!r} is not supported; save it as an 8-bit RGB "
                    "PNG or JPEG")


def centre_square(image: Image.Image, resolution: int) -> np.ndarray:
    """Centre-crop to the largest square, then resize to resolution x resolution: (H, W, 3)
    uint8."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((resolution, resolution), Image.LANCZOS), dtype=np.uint8)


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a concept folder, in name order (hidden files skipped); anything else in
    it (a non-image, a folder, a pipe, a name that is not UTF-8) or too few or too many images is a
    DataError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"customize.images={folder}: not a folder")
    files = sorted(f for f in folder.iterdir() if not f.name.startswith("."))
    for f in files:
        try:
            f.name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{folder}: a file name is not UTF-8 text "
                            f"({f.name.encode('utf-8', 'replace')!r}); rename it") from None
        # is_file: no folder, pipe or device
        if f.suffix.lower() not in SUFFIXES or not f.is_file():
            raise DataError(f"{folder}: {f.name} is not a .png/.jpg/.jpeg file (the folder must "
                            "hold only the concept's images)")
    if not MIN_IMAGES <= len(files) <= MAX_IMAGES:
        raise DataError(f"{folder} holds {len(files)} images; a concept needs {MIN_IMAGES} to "
                        f"{MAX_IMAGES}")
    return files


def folder_digest(folder: str | Path) -> str:
    """16 hex digits naming the images a concept folder holds (names and contents of image_files):
    what the loader reads and nothing else, so a hidden file that changes changes nothing."""
    digest = hashlib.sha256()
    for f in image_files(folder):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def load_image_folder(folder: str | Path, resolution: int) -> torch.Tensor:
    """The folder's images as uint8 (N, resolution, resolution, 3), in file-name order."""
    images = []
    for f in image_files(folder):
        try:
            # over Pillow's pixel limit: an error, not a warning and a huge decode
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as image:
                    image.load()
                    images.append(centre_square(to_rgb(image, f), resolution))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise DataError(f"{f} is too large to open safely ({err}); save a smaller "
                            "copy of it") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{f} is not a readable image ({type(err).__name__}: {err})") from None
    return torch.from_numpy(np.stack(images))
