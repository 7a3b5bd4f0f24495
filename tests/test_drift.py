"""Drift metrics: identical models drift by nothing, a colour shift is caught in the right channel,
per-class bookkeeping is right; the charts draw spreads and the floor, wrap
legends and keep whiskers in range."""
import re

import numpy as np
import torch

from eval.drift import (appearance_drift, class_distances, confusion_matrix, semantic_drift,
                        share_predicted_as)
from eval.svg import bar_chart, curve_chart, legend_rows, nice_ticks

CLASSES = ["a", "b", "c"]


def fake_generations(n=12, seed=0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8))
    feats = torch.from_numpy(rng.normal(size=(n, 5))).float()
    early = torch.from_numpy(rng.normal(size=(n, 4, 4, 4))).float()
    return images, torch.arange(3).repeat_interleave(n // 3), feats, early


def test_identical_predictions_and_images_drift_by_nothing():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    s = semantic_drift(labels, preds, preds, CLASSES)
    assert (s["flip_rate"] == 0 and s["mean_change"] == 0 and s["worst_change"] == 0
            and s["std_change"] == 0)
    images, gen_labels, feats, early = fake_generations()
    a = appearance_drift(images, images, gen_labels, CLASSES, feats, feats, early, early)
    assert (a["cdi"] == 0 and a["delta_e"] == 0 and a["texture_gram"] == 0
            and a["feature_distance"] == 0)
    assert a["psnr"] == float("inf") and abs(a["mean_fd_per_class"]) < 1e-9
    # unbiased MMD^2 of a set with itself is <= 0, not exactly 0
    assert a["mean_kid_per_class"] <= 1e-9


def test_semantic_drift_bookkeeping():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    before = torch.tensor([0, 0, 1, 1, 2, 2])
    after = torch.tensor([0, 0, 1, 0, 1, 1])
    s = semantic_drift(labels, before, after, CLASSES,
                       concept_distance={"a": 3.0, "b": 2.0, "c": 1.0})
    assert s["per_class"]["b"] == {"before": 1.0, "after": 0.5, "change": -0.5}
    assert s["worst_class"] == "c" and s["worst_change"] == -1.0
    assert abs(s["flip_rate"] - 3 / 6) < 1e-12 and abs(s["mean_change"] + 0.5) < 1e-12
    assert s["confusion_after"][2] == [0, 2, 0]
    assert s["change_vs_distance_correlation"] > 0.9  # closer classes lost more here
    assert confusion_matrix(labels, after, 3).sum() == 6


def test_colour_shift_is_flagged_in_the_right_channel():
    images, gen_labels, feats, early = fake_generations()
    redder = images.clone()
    redder[..., 0] = (redder[..., 0].int() + 60).clamp(max=255).to(torch.uint8)
    a = appearance_drift(images, redder, gen_labels, CLASSES, feats, feats, early, early)
    assert a["cdi"] > 1 and max(a["cdi_per_channel"], key=a["cdi_per_channel"].get) == "a"
    assert a["psnr"] < 30 and set(a["per_class"]) == set(CLASSES)


def test_class_distances():
    feats = torch.tensor([[0.0, 0], [0, 0], [3, 4], [3, 4]])
    d = class_distances(feats, torch.tensor([0, 0, 1, 1]), ["near", "far"], torch.zeros(2, 2))
    assert d == {"near": 0.0, "far": 5.0}


def test_svg_chart_and_ticks():
    assert nice_ticks(-37, 12) == [-40, -30, -20, -10, 0, 10, 20]
    svg = bar_chart(["x", "y"], {"s1": [1.0, -2.0], "s2": [None, 0.5]}, "title")
    assert svg.startswith("<svg") and svg.count("<rect") == 3 + 2  # 3 bars + 2 legend swatches
    assert "<path" not in svg and "stroke-dasharray" not in svg


def test_svg_chart_draws_whiskers_the_floor_and_a_zero_bar():
    svg = bar_chart(["x", "y"], {"s1": [1.0, 0.0]}, "t", errors={"s1": [0.5, None]},
                    floor=[0.2, 0.3])
    assert svg.count("<path") == 1 and "+- 0.50" in svg     # one whisker: the bar that has a spread
    assert svg.count("stroke-dasharray") == 2               # the floor across both groups
    zero_bar = [line for line in svg.splitlines() if "s1 / y: 0.00" in line][0]
    assert 'height="2.0"' in zero_bar                       # 0 drawn as a value, not left out


def test_legend_wraps_inside_the_chart():
    """Eight long names do not fit one 720-px row: they wrap, every entry starts inside the plot's
    width, and the chart grows by one 14-px row per extra legend row."""
    names = [f"method {i} / regularizer-w{i}" for i in range(8)]
    rows = legend_rows(names, 56, 708)
    assert rows[0] == (names[0], 56, 0) and max(r for _, _, r in rows) >= 2
    assert all(56 <= x and x + 24 + 6.2 * len(n) - 10 <= 708 for n, x, _ in rows)
    svg = bar_chart(["g"], {n: [1.0] for n in names}, "t", height=300)
    extra = 14 * max(r for _, _, r in rows)
    assert f'height="{300 + extra}"' in svg.splitlines()[0]


def test_curve_whiskers_stop_at_the_x_range():
    """A fidelity of 95% with a spread of 10 is drawn from 85 to 100, not past 100%."""
    svg = curve_chart({"a": [(95.0, 1.0, 10.0, None, "w1"), (50.0, 2.0, 5.0, None, "w2")]},
                      "t", "x", "y", x_range=(0.0, 100.0))
    unclipped = curve_chart({"a": [(95.0, 1.0, 10.0, None, "w1"), (50.0, 2.0, 5.0, None, "w2")]},
                            "t", "x", "y")
    ticks = lambda chart: [float(t) for t in re.findall(r'text-anchor="middle">([-\d.]+)</text>',
                                                         chart)]
    assert max(ticks(svg)) == 100 and max(ticks(unclipped)) > 100


def test_share_predicted_as_counts_the_named_columns():
    """Rows true class, columns prediction: 2 of the 5 held-out images (rows b, c) went to the
    anchored class a."""
    confusion = [[0, 0, 0],   # a: anchored, no images in this group
                 [1, 2, 0],   # b: one called a
                 [1, 0, 1]]   # c: one called a
    assert abs(share_predicted_as(confusion, CLASSES, ["a"]) - 2 / 5) < 1e-12
    assert share_predicted_as(confusion, CLASSES, list(CLASSES)) == 1.0
    assert share_predicted_as(confusion, CLASSES, []) == 0.0
