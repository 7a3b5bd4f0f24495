"""Colour and pixel metrics: CIELAB, the pairwise Colour Drift Index, set-level colour distances,
delta-E, PSNR, Gram distance.

Appearance drift compares images generated from the same prompt and seed before and after
customization, so the pairwise functions take two image sets of the same shape where images_a[i] and
images_b[i] form a pair; set_colour_distance compares two sets as distributions. Images are uint8
RGB of shape (N, H, W, 3), given as numpy arrays or torch tensors (channels last, as images are
saved; a float or channels-first input is refused rather than guessed at). Arithmetic is float64 in
numpy; arrays come back as numpy float64, scalars as floats.
"""

import numpy as np
import torch

# linear sRGB -> CIE XYZ, D65 white, 2-degree observer (IEC 61966-2-1)
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_LAB_CHANNELS = ("L", "a", "b")


def _to_numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def srgb_to_lab(rgb01):
    """sRGB in [0, 1], shape (..., 3) -> CIELAB (L in [0, 100]), shape (..., 3), numpy float64.

    1. inverse sRGB companding: c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055)^2.4
    2. linear RGB -> XYZ (matrix above), divided by the D65 white point (Xn, Yn, Zn)
    3. f(t) = t^(1/3) if t > (6/29)^3 else t / (3 (6/29)^2) + 4/29
       L = 116 f(Y/Yn) - 16,  a = 500 (f(X/Xn) - f(Y/Yn)),  b = 200 (f(Y/Yn) - f(Z/Zn))
    """
    rgb = _to_numpy(rgb01).astype(np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) RGB values, got shape {rgb.shape}")
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _D65_WHITE
    delta = 6 / 29
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4 / 29)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def _check_images(images, name: str = "images"):
    """uint8 RGB (N, H, W, 3) as a numpy array; anything else is refused rather than guessed at."""
    x = _to_numpy(images)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 RGB of shape (N, H, W, 3), got {x.dtype} {x.shape}")
    return x


def _check_pair(images_a, images_b):
    """Validate two uint8 (N, H, W, 3) image sets of the same shape; return them as numpy arrays."""
    a, b = _check_images(images_a, "images_a"), _check_images(images_b, "images_b")
    if a.shape != b.shape:
        raise ValueError(f"paired image sets must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _lab_pixels(images):
    """uint8 (N, H, W, 3) -> Lab pixels (N, H*W, 3)."""
    n = images.shape[0]
    return srgb_to_lab(images / 255.0).reshape(n, -1, 3)


def colour_drift_index(images_a, images_b):
    """Pairwise Colour Drift Index, as this project defines it (the paper names a Colour Drift Index
    but does not publish its formula).

    For each pair (a_i, b_i) and each Lab channel, the 1-D Wasserstein-1 distance between the two
    images' pixel-value distributions; with equal pixel counts
    W1(u, v) = mean_j |sort(u)_j - sort(v)_j|. A pair's CDI is the sum over the three channels, in
    Lab units; CDI is its mean over pairs. It ignores where pixels are, only which colours occur,
    but it is pairwise: a seed that the changed model draws with another colour scheme (the prompt
    leaving colours free) counts as much as a model whose colours shifted, which is why the
    set-level measures below come beside it.
    Returns {'cdi', 'median', 'p25', 'p75', 'per_pair' (N,), 'per_channel': {'L', 'a', 'b'},
    'n_pairs'}.
    """
    a, b = _check_pair(images_a, images_b)
    sorted_a = np.sort(_lab_pixels(a), axis=1)  # (N, H*W, 3), each channel sorted independently
    sorted_b = np.sort(_lab_pixels(b), axis=1)
    w1 = np.abs(sorted_a - sorted_b).mean(axis=1)  # (N, 3)
    per_pair = w1.sum(axis=1)
    p25, median, p75 = np.percentile(per_pair, [25, 50, 75])
    return {"cdi": float(per_pair.mean()), "median": float(median), "p25": float(p25),
            "p75": float(p75), "per_pair": per_pair,
            "per_channel": {c: float(v) for c, v in zip(_LAB_CHANNELS, w1.mean(axis=0))},
            "n_pairs": int(a.shape[0])}


def set_colour_distance(images_a, images_b, quantiles: int = 256):
    """How the colours of two image *sets* differ (no pairing; the sets may differ in size):
      set_cdi   sum over Lab channels of the W1 distance between the pooled pixel distributions of
                the sets, W1 = mean_q |Q_a(q) - Q_b(q)| over `quantiles` evenly spaced quantile
                levels;
      delta_e   CIE76 delta-E between the sets' mean Lab colours.
    A model that keeps its colour distribution scores at the sampling floor of two sets of its own
    images, however it assigns colours to seeds."""
    # every pixel of a set pooled: (N, H*W, 3) -> (N*H*W, 3)
    a, b = (_lab_pixels(_check_images(x)).reshape(-1, 3) for x in (images_a, images_b))
    levels = (np.arange(quantiles) + 0.5) / quantiles
    qa, qb = np.quantile(a, levels, axis=0), np.quantile(b, levels, axis=0)  # (quantiles, 3)
    return {"set_cdi": float(np.abs(qa - qb).mean(axis=0).sum()),
            "delta_e": float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)))}


def mean_colour_delta_e(images_a, images_b):
    """Mean over pairs of CIE76 delta-E = ||Lab_mean(a_i) - Lab_mean(b_i)||_2, where Lab_mean is the
    mean Lab colour of an image's pixels."""
    a, b = _check_pair(images_a, images_b)
    mean_a, mean_b = _lab_pixels(a).mean(axis=1), _lab_pixels(b).mean(axis=1)  # (N, 3)
    return float(np.linalg.norm(mean_a - mean_b, axis=1).mean())


def psnr(images_a, images_b):
    """Mean over pairs of PSNR = 10 log10(255^2 / MSE_i) in dB, MSE over all pixels and channels of
    a pair.

    An identical pair has MSE 0 and infinite PSNR. Such pairs are left out of the mean
    (they carry no finite number to average); the result is float('inf') only when every pair is
    identical.
    """
    a, b = _check_pair(images_a, images_b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = (diff ** 2).reshape(a.shape[0], -1).mean(axis=1)  # (N,)
    changed = mse > 0
    if not changed.any():
        return float("inf")
    return float((10 * np.log10(255.0 ** 2 / mse[changed])).mean())


def gram_matrices(features):
    """Gram matrices of feature maps (Gatys et al. 2016): (B, C, H, W) -> (B, C, C),
    G = F F^T / (H W) with F the (C, H*W) flattened map. numpy or torch input; numpy float64
    output."""
    f = _to_numpy(features).astype(np.float64)
    if f.ndim != 4:
        raise ValueError(f"expected feature maps of shape (B, C, H, W), got {f.shape}")
    bsz, c, h, w = f.shape
    f = f.reshape(bsz, c, h * w)                    # (B, C, H*W)
    return f @ f.transpose(0, 2, 1) / (h * w)       # (B, C, H*W) @ (B, H*W, C) -> (B, C, C)


def gram_distance(feat_a, feat_b):
    """Texture distance: mean over pairs of the squared Frobenius norm ||G(a_i) - G(b_i)||_F^2
    (summed, not averaged, over the C x C entries), for paired feature maps of shape
    (B, C, H, W)."""
    ga, gb = gram_matrices(feat_a), gram_matrices(feat_b)
    if ga.shape != gb.shape:
        raise ValueError(f"paired feature maps must have the same shape, got {ga.shape} and "
                         f"{gb.shape}")
    return float(((ga - gb) ** 2).sum(axis=(1, 2)).mean())
