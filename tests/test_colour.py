"""Known-answer tests for eval/colour.py: CIELAB, Colour Drift Index, delta-E, PSNR, Gram
distance."""

import math

import numpy as np
import pytest
import torch

from eval.colour import (colour_drift_index, gram_distance, gram_matrices, mean_colour_delta_e,
                         psnr, set_colour_distance, srgb_to_lab)

# reference CIELAB values (D65, 2-degree observer) of sRGB primaries
LAB_REFERENCE = [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
    ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
    ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
]


def _images(seed=0, n=4, size=16):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _add(images, value, channels=(0, 1, 2)):
    """Add value to the given RGB channels, clipped to [0, 255]."""
    out = images.astype(np.int64)
    out[..., list(channels)] += value
    return np.clip(out, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# CIELAB

@pytest.mark.parametrize("rgb, lab", LAB_REFERENCE)
def test_srgb_to_lab_reference_values(rgb, lab):
    np.testing.assert_allclose(srgb_to_lab(np.array(rgb)), lab, atol=1e-3)


def test_srgb_to_lab_batched_shapes_and_torch():
    rgb = np.array([ref[0] for ref in LAB_REFERENCE])  # (5, 3)
    lab = np.array([ref[1] for ref in LAB_REFERENCE])
    batched = np.broadcast_to(rgb, (2, 3, 5, 3))  # (2, 3, 5, 3)
    out = srgb_to_lab(torch.from_numpy(batched.copy()))
    assert out.shape == (2, 3, 5, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out, np.broadcast_to(lab, (2, 3, 5, 3)), atol=1e-3)


def test_srgb_to_lab_dark_values_use_linear_segments():
    # below both thresholds (sRGB 0.04045, Lab (6/29)^3) the conversion is linear, so L doubles
    # exactly
    l1, l2 = (srgb_to_lab(np.array([0.004, 0.004, 0.004]))[0],
              srgb_to_lab(np.array([0.008, 0.008, 0.008]))[0])
    assert l1 > 0 and l2 == pytest.approx(2 * l1, rel=1e-9)


# --------------------------------------------------------------------------------------------------
# Colour Drift Index

def test_cdi_identical_images_is_zero():
    img = _images()
    cdi = colour_drift_index(img, img)
    assert cdi["cdi"] == 0.0 and cdi["per_channel"] == {"L": 0.0, "a": 0.0, "b": 0.0}
    assert cdi["n_pairs"] == 4


def test_cdi_red_shift_flags_a():
    img = _images()
    cdi = colour_drift_index(img, _add(img, 40, channels=[0]))
    assert cdi["cdi"] > 1.0
    assert max(cdi["per_channel"], key=cdi["per_channel"].get) == "a"


def test_cdi_lightness_shift_flags_l():
    img = _images()
    cdi = colour_drift_index(img, _add(img, 30))
    assert cdi["cdi"] > 1.0
    assert max(cdi["per_channel"], key=cdi["per_channel"].get) == "L"


def test_cdi_is_symmetric_sum_of_channels_and_ignores_layout():
    img, other = _images(0), _images(1)
    ab, ba = colour_drift_index(img, other), colour_drift_index(other, img)
    assert ab["cdi"] == pytest.approx(ba["cdi"], rel=1e-12)
    assert ab["cdi"] == pytest.approx(sum(ab["per_channel"].values()), rel=1e-12)
    # shuffling pixels within each image keeps its colour distribution, so CDI stays 0:
    # (4, 16, 16, 3) -> (4, 256, 3), the 256 pixels reordered, -> (4, 16, 16, 3)
    shuffled = (img.reshape(4, -1, 3)[:, np.random.default_rng(2).permutation(256)]
                .reshape(img.shape))
    assert colour_drift_index(img, shuffled)["cdi"] == pytest.approx(0.0, abs=1e-12)


def test_cdi_single_pixel_equals_lab_difference():
    a = np.array([[[[255, 0, 0]]]], dtype=np.uint8)  # (1, 1, 1, 3) pure red
    b = np.array([[[[0, 0, 255]]]], dtype=np.uint8)  # pure blue
    expected = np.abs(srgb_to_lab(a[0, 0, 0] / 255) - srgb_to_lab(b[0, 0, 0] / 255)).sum()
    assert colour_drift_index(a, b)["cdi"] == pytest.approx(expected, rel=1e-12)


def test_colour_metrics_reject_float_and_mismatched_input():
    img = _images()
    with pytest.raises(ValueError, match="uint8"):
        colour_drift_index(img / 255.0, img / 255.0)
    with pytest.raises(ValueError, match="same shape"):
        psnr(img, img[:2])


# --------------------------------------------------------------------------------------------------
# delta-E and PSNR

def test_delta_e_identical_is_zero_and_known_for_flat_images():
    img = _images()
    assert mean_colour_delta_e(img, torch.from_numpy(img)) == 0.0
    white = np.full((1, 4, 4, 3), 255, dtype=np.uint8)
    black = np.zeros_like(white)
    assert mean_colour_delta_e(white, black) == pytest.approx(100.0, abs=1e-3)


def test_psnr_constant_difference():
    img = np.full((3, 8, 8, 3), 100, dtype=np.uint8)
    # a difference of 1 level everywhere: MSE = 1, PSNR = 10 log10(255^2) = 20 log10(255)
    assert psnr(img, img + 1) == pytest.approx(20 * math.log10(255), rel=1e-12)
    # a difference of 10 levels: MSE = 100, 20 dB lower
    assert psnr(img, img + 10) == pytest.approx(20 * math.log10(255) - 20, rel=1e-12)


def test_psnr_identical_pairs():
    img = np.full((2, 8, 8, 3), 100, dtype=np.uint8)
    assert psnr(img, img) == float("inf")
    mixed = img.copy()
    mixed[1] += 1  # pair 0 identical (left out), pair 1 differs by 1 level
    assert psnr(img, mixed) == pytest.approx(20 * math.log10(255), rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Gram matrices

def test_gram_matrices_known_value():
    feats = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)  # (B, C, H, W)
    g = gram_matrices(torch.from_numpy(feats))
    assert g.shape == (2, 3, 3)
    f1 = feats[1].reshape(3, 4)                                 # F of image 1: (C, H*W)
    np.testing.assert_allclose(g[1], f1 @ f1.T / 4)
    np.testing.assert_allclose(g, g.transpose(0, 2, 1))         # each (C, C) is symmetric


def test_gram_distance_zero_and_positive():
    feats = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    assert gram_distance(feats, feats) == 0.0
    # scaling by 2 scales the Gram matrix by 4: ||4G - G||_F^2 = 9 ||G||_F^2
    g = gram_matrices(feats)
    expected = (9 * (g ** 2).sum(axis=(1, 2))).mean()
    assert gram_distance(feats, 2 * feats) == pytest.approx(expected, rel=1e-12)
    assert gram_distance(feats, feats + 0.1) > 0


# --------------------------------------------------------------------------------------------------
# pairwise vs set-level colour: what each isolates, on rendered shapes (controlled changes)

def _stars(n=64, **change):
    """n rendered 16x16 stars with their sampled attributes, each with `change` applied
    (e.g. size=...)."""
    import dataclasses

    from core import shapes
    attrs = [shapes.sample_attributes(0, "test", i, label=shapes.CLASSES.index("star"))
             for i in range(n)]
    return np.stack([shapes.render(dataclasses.replace(a, **change.get("f", lambda a: {})(a)), 16)
                     for a in attrs])


def test_reassigning_colours_to_seeds_moves_pairwise_cdi_not_the_set_distance():
    """A model that keeps its colour distribution but gives each seed another image's colours
    (a permutation of the set) is the case the drift table separates: the pairwise CDI reads it as
    large drift, the set-level distance as exactly none, the same as a set compared with itself."""
    stars = _stars()
    shuffled = stars[np.roll(np.arange(len(stars)), 1)]
    assert colour_drift_index(stars, shuffled)["median"] > 20
    distance = set_colour_distance(stars, shuffled)
    assert distance["set_cdi"] == 0.0  # the same pixels: the same quantiles exactly
    # the same mean, up to summation order
    assert distance["delta_e"] == pytest.approx(0.0, abs=1e-9)


def test_a_uniform_colour_shift_moves_both_and_a_small_size_change_little():
    """A real colour change (+15 red everywhere) moves the set distance by about as much as the
    pairwise one; a 10% larger shape, same colours, moves both far less than a swap of colours
    between seeds."""
    stars = _stars()
    red = _add(stars, 15, channels=(0,))
    pairwise, sets = (colour_drift_index(stars, red)["cdi"],
                      set_colour_distance(stars, red)["set_cdi"])
    assert sets > 0.7 * pairwise > 0
    larger = _stars(f=lambda a: {"size": min(a.size * 1.1, 0.95)})
    swapped = stars[np.roll(np.arange(len(stars)), 1)]
    assert (set_colour_distance(stars, larger)["set_cdi"]
            < 0.5 * colour_drift_index(stars, swapped)["cdi"])
    assert (colour_drift_index(stars, larger)["cdi"]
            < 0.5 * colour_drift_index(stars, swapped)["cdi"])
