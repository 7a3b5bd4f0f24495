"""Drift metrics: identical models drift by nothing, a colour shift is caught in the right channel,
per-class bookkeeping is right, and the HTML report is self-contained."""
import json
from html.parser import HTMLParser

import numpy as np
import torch

from eval.drift import appearance_drift, class_distances, confusion_matrix, semantic_drift, share_predicted_as
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
    groups = ("anchored", "heldout_classes", "heldout_templates", "heldout_both")
    result = {"run": "full-none-s0", "method": "full", "reg": "none", "seed": 0, "semantic": dict.fromkeys(groups, semantic),
              "semantic_floor": dict.fromkeys(groups, semantic), "appearance": dict.fromkeys(groups, appearance),
              "appearance_floor": dict.fromkeys(groups, appearance),
              "fidelity": {"recognised": 0.7, "diffusion_classifier_concept_accuracy": 0.5},
              "customization": {"steps": 10, "trainable_parameters": 123}, "concept_class": "heart",
              "classifier": {"unet_passes_per_image": 75, "n_images": 3}, "k_images": 5,
              "prompt": "a photo of a <new0>", "anchored_classes": ["a"], "templates": ["a {}", "b {}"]}
    (run / "drift" / "full-none-s0" / "metrics.json").write_text(json.dumps(result, default=float))
    out = write_report(run, run / "report.html")
    page = out.read_text()
    parser = Collector()
    parser.feed(page)
    assert not parser.problems and parser.stack == []
    assert parser.urls and all(u.startswith("data:image/png;base64,") for u in parser.urls)
    assert "<svg" in page and "full / none" in page and "http" not in page.replace("http://www.w3.org", "")
    assert "&lt;new0&gt;" in page and "<new0>" not in page          # text is escaped


def test_tables_give_mean_and_std_over_repeats_and_one_floor_per_repeat():
    from eval.report import SEMANTIC_COLUMNS, FLOORS, drift_rows, spread
    flips = {("none", 0): 0.4, ("none", 1): 0.2, ("functional", 0): 0.02, ("functional", 1): 0.04}
    results = []
    for (reg, seed), flip in flips.items():
        group = {"flip_rate": flip, "mean_change": -flip}
        floor = {"flip_rate": 0.01 * (seed + 1), "mean_change": 0.0}
        results.append({"method": "full", "reg": reg, "seed": seed, "concept_class": "heart",
                        "fidelity": {"recognised": 0.7, "diffusion_classifier_concept_accuracy": 0.5},
                        "semantic": dict.fromkeys(("anchored", "heldout_classes", "heldout_templates"), group),
                        "semantic_floor": dict.fromkeys(("anchored", "heldout_classes", "heldout_templates"), floor)})
    rows = drift_rows(results, SEMANTIC_COLUMNS, FLOORS["semantic"])
    flip_column = [c[0] for c in SEMANTIC_COLUMNS].index("held-out classes: flip rate (%)") + 2
    assert [r[0] for r in rows] == ["full / none", "full / functional", "floor: base vs base"]
    assert rows[0][1] == 2 and rows[0][flip_column] == "30.0 +- 14.1"            # mean and sample std of 40, 20
    assert rows[2][1] == 2 and rows[2][flip_column] == spread([0.01, 0.02], 100, 1)  # one floor per repeat


def test_share_predicted_as_counts_the_named_columns():
    """Rows true class, columns prediction: 2 of the 5 held-out images (rows b, c) went to the anchored class a."""
    confusion = [[0, 0, 0],   # a: anchored, no images in this group
                 [1, 2, 0],   # b: one called a
                 [1, 0, 1]]   # c: one called a
    assert abs(share_predicted_as(confusion, CLASSES, ["a"]) - 2 / 5) < 1e-12
    assert share_predicted_as(confusion, CLASSES, list(CLASSES)) == 1.0
    assert share_predicted_as(confusion, CLASSES, []) == 0.0
