"""The procedural `shapes` world: ten shape classes with colour, size, position, rotation and
background.

Every image is a pure function of (seed, split, index): the attributes are drawn from a numpy
generator seeded with that triple, the shape is drawn with PIL at 4x the target resolution and
box-downsampled (anti-aliasing). No files, any resolution. Each image also has attributes (shape
colour, background colour, background texture), which captions can mention and which give colour
drift a ground truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "star", "cross", "heart", "ring", "crescent", "arrow",
           "diamond")
COLOURS = {  # name -> sRGB; shapes use the colour itself, backgrounds a dark version of it
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (245, 220, 40),
    "purple": (160, 60, 220), "orange": (250, 140, 20), "white": (245, 245, 245),
    "cyan": (40, 220, 230),
}
TEXTURES = ("plain", "striped", "gradient")
SPLITS = {"train": 0, "test": 1}
SUPERSAMPLE = 4
BACKGROUND_BRIGHTNESS = 0.35
MAX_ROTATION = 20.0  # degrees either way: keeps square and diamond (a tall rhombus) apart


@dataclass(frozen=True)
class ShapeAttributes:
    label: int
    colour: int       # index into COLOURS
    background: int   # index into COLOURS, never equal to colour
    texture: int      # index into TEXTURES
    size: float       # shape radius as a fraction of half the image
    centre: tuple[float, float]
    rotation: float   # degrees


def sample_attributes(seed: int, split: str, index: int,
                      label: int | None = None) -> ShapeAttributes:
    """Draw one image's attributes; the label is balanced (index mod 10) unless given."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    colour, background = rng.choice(len(COLOURS), size=2, replace=False)
    size = rng.uniform(0.6, 0.9)
    slack = 1.0 - size  # keep the shape inside the frame
    centre = tuple(rng.uniform(-slack, slack, size=2) * 0.8)
    return ShapeAttributes(label=index % len(CLASSES) if label is None else label,
                           colour=int(colour), background=int(background),
                           texture=int(rng.integers(len(TEXTURES))), size=float(size),
                           centre=(float(centre[0]), float(centre[1])),
                           rotation=float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)))


def _outline(name: str) -> list[list[tuple[float, float]]]:
    """Polygons of a shape in unit coordinates (radius ~1, y down); a ring/crescent is drawn as
    fill+cut."""
    def regular(n, r=1.0, phase=-math.pi / 2):
        return [(r * math.cos(phase + 2 * math.pi * k / n),
                 r * math.sin(phase + 2 * math.pi * k / n))
                for k in range(n)]
    if name == "circle":
        return [regular(48)]
    if name == "square":
        return [[(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]]
    if name == "triangle":
        return [[(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)]]
    if name == "star":
        outer, inner = regular(5, 1.0), regular(5, 0.45, -math.pi / 2 + math.pi / 5)
        return [[p for pair in zip(outer, inner) for p in pair]]
    if name == "cross":
        a, b = 0.3, 0.95
        return [[(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
                 (-b, a), (-b, -a), (-a, -a)]]
    if name == "heart":
        pts = []
        for k in range(64):  # the classic parametric heart curve, scaled to radius ~1
            t = 2 * math.pi * k / 64
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 16.5, -y / 16.5 + 0.1))
        return [pts]
    if name == "ring":
        return [regular(48), regular(48, 0.55)]
    if name == "crescent":
        return [regular(48), [(x + 0.45, y - 0.2) for x, y in regular(48, 0.85)]]
    if name == "arrow":
        return [[(0.0, -1.0), (0.85, -0.1), (0.3, -0.1), (0.3, 0.95), (-0.3, 0.95), (-0.3, -0.1),
                 (-0.85, -0.1)]]
    if name == "diamond":
        return [[(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)]]
    raise KeyError(name)


def _background(attrs: ShapeAttributes, size: int) -> np.ndarray:
    """(size, size, 3) float background: a dark colour, plain, striped or with a vertical
    gradient."""
    base = np.array(list(COLOURS.values())[attrs.background],
                    dtype=np.float32) * BACKGROUND_BRIGHTNESS
    img = np.broadcast_to(base, (size, size, 3)).copy()
    texture = TEXTURES[attrs.texture]
    rows = np.arange(size, dtype=np.float32)[:, None, None] / size
    if texture == "striped":
        img = img * (1.0 + 0.8 * (np.floor(rows * 4) % 2))  # four horizontal bands, alternately lit
    elif texture == "gradient":
        img = img * (0.3 + 1.4 * rows)
    return np.broadcast_to(img, (size, size, 3))


def render(attrs: ShapeAttributes, resolution: int) -> np.ndarray:
    """Draw one image: (resolution, resolution, 3) uint8."""
    big = resolution * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = (np.array(attrs.centre) + 1.0) * big / 2
    radius = attrs.size * big / 2
    theta = math.radians(attrs.rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    for k, poly in enumerate(_outline(CLASSES[attrs.label])):
        pts = [(cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos))
               for x, y in poly]
        draw.polygon(pts, fill=255 if k == 0 else 0)  # later polygons cut holes (ring, crescent)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    colour = np.array(list(COLOURS.values())[attrs.colour], dtype=np.float32)
    img = alpha * colour + (1 - alpha) * _background(attrs, big)
    img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((resolution, resolution),
                                                                        Image.BOX)
    return np.asarray(img)


def render_split(seed: int, split: str, n: int,
                 resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n images of a split: x (n, H, W, 3) uint8, y (n,) int64, attrs (n, 3) int64 = colour,
    background, texture."""
    x = np.empty((n, resolution, resolution, 3), dtype=np.uint8)
    y = np.empty(n, dtype=np.int64)
    attrs = np.empty((n, 3), dtype=np.int64)
    for i in range(n):
        a = sample_attributes(seed, split, i)
        x[i], y[i], attrs[i] = render(a, resolution), a.label, (a.colour, a.background, a.texture)
    return x, y, attrs
