"""Drift metrics: identical models drift by nothing, a colour shift is caught in the right channel,
per-class bookkeeping is right, and the HTML report is self-contained."""
import json
from html.parser import HTMLParser

import numpy as np
import torch

from eval.drift import appearance_drift, class_distances, confusion_matrix, semantic_drift
from eval.report import write_report
from eval.svg import bar_chart, nice_ticks

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
    assert s["flip_rate"] == 0 and s["mean_change"] == 0 and s["worst_change"] == 0 and s["std_change"] == 0
    images, gen_labels, feats, early = fake_generations()
    a = appearance_drift(images, images, gen_labels, CLASSES, feats, feats, early, early)
    assert a["cdi"] == 0 and a["delta_e"] == 0 and a["texture_gram"] == 0 and a["feature_distance"] == 0
    assert a["psnr"] == float("inf") and abs(a["mean_fd_per_class"]) < 1e-9
    assert a["mean_kid_per_class"] <= 1e-9  # unbiased MMD^2 of a set with itself is <= 0, not exactly 0


def test_semantic_drift_bookkeeping():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    before = torch.tensor([0, 0, 1, 1, 2, 2])
    after = torch.tensor([0, 0, 1, 0, 1, 1])
    s = semantic_drift(labels, before, after, CLASSES, concept_distance={"a": 3.0, "b": 2.0, "c": 1.0})
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


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.urls, self.problems = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in ("br", "img", "meta", "rect", "line", "input"):
            self.stack.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        if tag in ("img", "rect", "line"):
            return
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(tag)


def test_report_is_self_contained(tmp_path):
    run = tmp_path / "quick"
    (run / "drift" / "full-none-s0").mkdir(parents=True)
    from core.images import save_grid
    images, gen_labels, feats, early = fake_generations()
    save_grid(images.numpy(), run / "drift" / "full-none-s0" / "pairs.png", nrow=4)
    semantic = semantic_drift(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([0, 0, 2]), CLASSES)
    appearance = appearance_drift(images, images, gen_labels, CLASSES, feats, feats, early, early)
    result = {"method": "full", "reg": "none", "seed": 0, "semantic": semantic, "semantic_floor": semantic,
              "appearance": appearance, "appearance_unrelated": appearance, "clip_zero_shot_accuracy": 1.0,
              "fidelity": {"recognised": 0.7, "diffusion_classifier_concept_accuracy": 0.5},
              "customization": {"steps": 10, "trainable_parameters": 123}, "concept_class": "heart",
              "classifier": {"unet_passes_per_image": 75, "n_images": 3}, "k_images": 5,
              "prompt": "a photo of a <new0>"}
    (run / "drift" / "full-none-s0" / "metrics.json").write_text(json.dumps(result, default=float))
    out = write_report(run, run / "report.html")
    page = out.read_text()
    parser = Collector()
    parser.feed(page)
    assert not parser.problems and parser.stack == []
    assert parser.urls and all(u.startswith("data:image/png;base64,") for u in parser.urls)
    assert "<svg" in page and "full / none" in page and "http" not in page.replace("http://www.w3.org", "")
