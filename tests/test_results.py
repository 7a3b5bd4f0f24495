"""The results layer: variance components and paired differences against known answers, the verdict
rules, runs of retrained models left out of every table, runs with other settings kept apart, and a
self-contained HTML report."""
import json
import random
from html.parser import HTMLParser

import pytest
import torch

from core import checkpoint
from eval.drift import appearance_drift, semantic_drift
from eval.report import markdown_tables, write_report
from eval import results
from eval.results import current_runs, left_out_line, results_json, split_by_settings
from eval.stats import line_fit, paired, variance_components
from eval.tables import cell
from eval.verdicts import decide, describe


def test_variance_components_by_hand():
    """Two bases, two seeds each: base means 1 and 3 (grand mean 2); within-base sd sqrt(0.5)
    (deviations +-0.5); MS_between = 2 * ((1-2)^2 + (3-2)^2) / 1 = 4, n0 = 2, so
    sd_between = sqrt((4 - 0.5) / 2)."""
    values = {("b0", 0): 0.5, ("b0", 1): 1.5, ("b1", 0): 2.5, ("b1", 1): 3.5}
    vc = variance_components(values)
    assert vc["mean"] == 2.0 and vc["n_bases"] == 2 and vc["n"] == 4
    assert vc["within_sd"] == pytest.approx(0.5 ** 0.5)
    assert vc["between_sd"] == pytest.approx((3.5 / 2) ** 0.5)


def test_variance_components_recover_known_components():
    """60 bases x 4 seeds drawn with sd 2 between bases and 0.5 within: the estimates land near
    both."""
    rng = random.Random(0)
    values = {}
    for b in range(60):
        offset = rng.gauss(0, 2.0)
        for s in range(4):
            values[(f"b{b}", s)] = 10 + offset + rng.gauss(0, 0.5)
    vc = variance_components(values)
    assert (vc["between_sd"] == pytest.approx(2.0, rel=0.2)
            and vc["within_sd"] == pytest.approx(0.5, rel=0.1))
    assert vc["mean"] == pytest.approx(10, abs=0.8)


def test_paired_difference_and_its_standard_error():
    """Per-base mean differences 1, 2 and 6 (mean 3, sd sqrt(7)): SE = sqrt(7 / 3); the seeds only
    average."""
    a = {("b0", 0): 1.0, ("b0", 1): 3.0, ("b1", 0): 2.0, ("b2", 0): 7.0, ("b2", 1): 7.0}
    b = {("b0", 0): 0.0, ("b0", 1): 2.0, ("b1", 0): 0.0, ("b2", 0): 1.0, ("b2", 1): 1.0,
         ("b3", 0): 9.0}
    s = paired(a, b)
    assert (s["per_base"] == {"b0": 1.0, "b1": 2.0, "b2": 6.0}
            and s["n_pairs"] == 5)  # b3 has no pair
    assert s["mean"] == pytest.approx(3.0) and s["se"] == pytest.approx((7 / 3) ** 0.5)
    assert s["se_over"] == "bases" and s["positive"] == 3 and s["negative"] == 0
    one = paired({("b0", 0): 2.0, ("b0", 1): 4.0}, {("b0", 0): 1.0, ("b0", 1): 1.0})
    assert (one["se_over"] == "seeds of one base"
            and one["se"] == pytest.approx(1.0))  # sd(1, 3) / sqrt(2)


@pytest.mark.parametrize("mean,se,pos,neg,direction,expected", [
    (-5.0, 1.0, 0, 3, -1, "supported"),     # lower, beyond 2 SE, every base
    (-5.0, 1.0, 1, 2, -1, "unresolved"),    # beyond 2 SE but one base the other way
    (-1.5, 1.0, 0, 3, -1, "unresolved"),    # within 2 SE
    (5.0, 1.0, 3, 0, -1, "refuted"),        # beyond 2 SE the other way, every base
    (5.0, 1.0, 3, 0, 1, "supported"),
])
def test_the_decision_rule(mean, se, pos, neg, direction, expected):
    stat = {"mean": mean, "se": se, "se_over": "bases", "n_bases": 3, "positive": pos,
            "negative": neg}
    assert decide(stat, direction) == expected


def test_equivalence_needs_the_interval_on_zero_and_a_learned_concept():
    near = {"mean": 0.5, "se": 1.0, "se_over": "bases", "n_bases": 3, "positive": 2, "negative": 1}
    above = {**near, "mean": 3.0, "positive": 3, "negative": 0}
    assert (decide(near, 0, fidelity=0.8) == "supported"
            and decide(near, 0, fidelity=0.3) == "unresolved")
    assert decide(above, 0, fidelity=0.8) == "refuted"
    # one base
    assert decide({**near, "se_over": "seeds of one base"}, 0, fidelity=0.8) == "unresolved"


def test_paired_figures_show_the_first_two_digits_of_their_standard_error():
    stat = lambda mean, se: {"stat": {"mean": mean, "se": se, "se_over": "bases"}}  # noqa: E731
    assert describe(stat(-0.3182, 0.0414), 1000) == "-318.20 +- 41.40 (bases)"
    assert describe(stat(0.01135, 0.002167), 1) == "+0.0114 +- 0.0022 (bases)"
    assert describe(stat(-0.0086, 0.071), 1) == "-0.009 +- 0.071 (bases)"
    assert describe(stat(5.0, None), 1) == "+5.00 +- - (bases)"


def test_cells_say_which_spread_they_show():
    assert cell({("b0", 0): 0.1}, 100) == "10.0"
    assert cell({("b0", 0): 0.1, ("b0", 1): 0.3}, 100) == "20.0 +- 14.1"
    assert (cell({("b0", 0): 0.5, ("b0", 1): 1.5, ("b1", 0): 2.5, ("b1", 1): 3.5})
            == "2.0 [b 1.3 | w 0.7]")


# ------------------------------------------------------------------------------------- runs on disk

def drift_result(name, base, seed, method, reg, flip, key):
    labels = torch.tensor([0, 1, 2, 0])
    before = torch.tensor([0, 1, 2, 0])
    after = torch.tensor([0, 1, 2, 1]) if flip else before
    images = torch.zeros(6, 8, 8, 3, dtype=torch.uint8)
    feats, early = torch.randn(6, 4), torch.randn(6, 2, 2, 2)
    semantic = semantic_drift(labels, before, after, ["a", "b", "c"])
    appearance = appearance_drift(images, images, torch.tensor([0, 0, 1, 1, 2, 2]), ["a", "b", "c"],
                                  feats, feats, early, early)
    groups = ("anchored", "heldout_classes", "heldout_templates", "heldout_both")
    return {"name": name, "base": base, "seed": seed, "method": method, "reg": reg,
            "concept_class": "heart",
            "semantic": dict.fromkeys(groups, semantic),
            "semantic_floor": dict.fromkeys(groups, semantic),
            "appearance": dict.fromkeys(groups, appearance),
            "appearance_floor": dict.fromkeys(groups, appearance),
            "fidelity": {"recognised": 0.7, "diffusion_classifier_concept_accuracy": 0.5},
            "base_classes": ["a", "b", "c"], "anchored_classes": ["a"], "run_key": key}


def write_drift(run, result):
    (run / "drift" / result["name"]).mkdir(parents=True, exist_ok=True)
    (run / "drift" / result["name"] / "metrics.json").write_text(json.dumps(result, default=float))


@pytest.fixture
def run_folder(tmp_path):
    """Two base models (their checkpoints are tiny files) with one drift run each, keyed on them."""
    run = tmp_path / "quick"
    for base in ("b0", "b1"):
        checkpoint.save(tmp_path / "quick" / "diffusion" / base / "last.pt",
                        {"kind": "diffusion", "w": torch.ones(1)})
    for base in ("b0", "b1"):
        path = f"quick/diffusion/{base}/last.pt"
        key = {"customize.lambda_fr": 3.0, "inputs.base": checkpoint.fingerprint(tmp_path / path),
               "paths.base": path}
        write_drift(run, drift_result(f"{base}-full-none-s0", base, 0, "full", "none", True, key))
    return run


def test_runs_of_a_retrained_base_are_left_out_and_named(run_folder):
    runs, left = current_runs(run_folder / "drift", run_folder.parent)
    assert len(runs) == 2 and left == []
    checkpoint.save(run_folder / "diffusion" / "b1" / "last.pt",
                    {"kind": "diffusion", "w": torch.zeros(1)})  # retrained
    runs, left = current_runs(run_folder / "drift", run_folder.parent)
    assert [r["name"] for r in runs] == ["b0-full-none-s0"]
    assert left == [("b1-full-none-s0", "its base model has been retrained since")]
    data = results_json(run_folder)
    assert (data["paper1"]["values"]["full / none"]["heldout_flip"]
            == {"b0/s0": 0.25})  # b1 in no table
    assert ("1 run left out (its base model has been retrained since): b1-full-none-s0"
            in markdown_tables(run_folder))
    assert left_out_line(data["left_out"]).startswith("1 run left out")


def transfer_result(base: str, seed: int, kid: float) -> dict:
    """A finished transfer's metrics.json with every field the tables read."""
    quality = {"kid": kid, "fd_eval": 1.0, "fd_eval_floor": 0.1, "fd_eval_validation": 1.0,
               "precision": 0.5, "recall": 0.5, "density": 0.5, "coverage": 0.5, "accuracy": 0.9,
               "accuracy_among_targets": 0.9, "real_accuracy_among_targets": 1.0,
               "nn_ratio": 1.0}
    return {"name": f"{base}-finetune-k10-s{seed}", "base": base, "seed": seed,
            "variant": "finetune", "k_per_target": 10, "quality": quality,
            "class_separation": {"features": 2.0, "features_within": 5.0}, "start_check": None,
            "class_spread": 5.0, "trainable_parameters": 10, "base_g_parameters": 10,
            "train_seconds": 1.0, "run_key": {"transfer.seed": seed, "gan.seed": base}}


def test_runs_on_the_learning_rate_sweeps_gans_stay_out_of_the_tables(monkeypatch, tmp_path):
    runs = [transfer_result("b0", 0, 1.0), transfer_result("b1", 0, 3.0),
            transfer_result("b100", 0, 100.0)]
    monkeypatch.setattr(results, "current_runs", lambda folder, out_dir: (list(runs), []))
    values, left = results.paper2_values(tmp_path / "quick")
    assert values["finetune k=10"]["kid"] == {("b0", 0): 1.0, ("b1", 0): 3.0}
    assert [name for name, _ in left] == ["b100-finetune-k10-s0"]


def test_runs_with_other_settings_are_their_own_row():
    runs = [{"method": "full", "reg": "functional",
             "run_key": {"customize.lambda_fr": 3.0, "customize.seed": s}}
            for s in (0, 1)] + [{"method": "full", "reg": "functional",
                                 "run_key": {"customize.lambda_fr": 0.5, "customize.seed": 2}}]
    groups = split_by_settings(runs, lambda r: f"{r['method']} / {r['reg']}")
    assert ({k: len(v) for k, v in groups.items()}
            == {"full / functional": 2, "full / functional [customize.lambda_fr=0.5]": 1})


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.urls, self.problems = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in ("br", "img", "meta", "rect", "line", "input", "path"):
            self.stack.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        if tag in ("img", "rect", "line", "path"):
            return
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(tag)


def test_report_is_self_contained(run_folder):
    from core.images import save_grid
    save_grid(torch.zeros(4, 8, 8, 3, dtype=torch.uint8).numpy(),
              run_folder / "drift" / "b0-full-none-s0" / "pairs.png", nrow=4)
    page = write_report(run_folder, run_folder / "report.html").read_text()
    parser = Collector()
    parser.feed(page)
    assert not parser.problems and parser.stack == []
    assert parser.urls and all(u.startswith("data:image/png;base64,") for u in parser.urls)
    assert ("<svg" in page and "full / none" in page
            and "http" not in page.replace("http://www.w3.org", ""))
    assert "floor: base vs base" in page                                   # the chart's floor line


def test_curve_conditions_are_paired_with_todays_regularizer_on_shared_runs():
    from bench.regularizer_curves import against_today
    runs = lambda *v: dict(zip([("b0", 0), ("b1", 0), ("b2", 0)], v))  # noqa: E731
    values = {"full / functional": {"heldout_flip": runs(0.2, 0.3, 0.4),
                                    "fidelity": runs(0.8, 0.9, 0.7)},
              "full / functional-w10": {"heldout_flip": runs(0.1, 0.1),   # two bases only
                                        "fidelity": runs(0.5, 0.6)},
              "floor": {"heldout_flip": runs(0.05, 0.05, 0.05)},
              "lora / none": {"heldout_flip": runs(0.9, 0.9, 0.9)}}
    out = against_today(values, "full")
    assert set(out) == {"full / functional", "full / functional-w10"}
    stronger = out["full / functional-w10"]["held-out flips - today's"]
    assert stronger["n_bases"] == 2 and stronger["mean"] == pytest.approx(-0.15)
    assert stronger["se"] == pytest.approx(0.05)  # differences -0.1, -0.2: sd 0.0707 / sqrt 2
    assert out["full / functional-w10"]["held-out flips - floor"]["mean"] == pytest.approx(0.05)
    assert out["full / functional-w10"]["fidelity - today's"]["mean"] == pytest.approx(-0.3)


def test_gap_fit_recovers_a_known_line_and_leaves_out_the_floor():
    from bench.regularizer_curves import gap_explains_margin
    runs = lambda *v: dict(zip(["b0/s0", "b1/s0", "b2/s0"], v))  # noqa: E731
    # margin = 0.5e-3 + 2 x (held-out own part - anchored own part), exactly
    values = {"full / none": {"heldout_specific": runs(1e-3, 2e-3, 0.0),
                              "anchored_specific": runs(0.0, 0.0, 1e-3),
                              "heldout_margin": runs(2.5e-3, 4.5e-3, -1.5e-3)},
              "full / functional": {"heldout_specific": runs(3e-3, None, 0.0),
                                    "anchored_specific": runs(0.0, 0.0, 0.0),
                                    "heldout_margin": runs(6.5e-3, 9.0, 0.5e-3)},
              "floor": {"heldout_specific": runs(0.0), "anchored_specific": runs(0.0),
                        "heldout_margin": runs(1.0)}}   # off the line: must not count
    fit = gap_explains_margin(values)
    assert fit["n_runs"] == 5                            # the run without a split is left out
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(0.5e-3)
    assert fit["r"] == pytest.approx(1.0)
    assert gap_explains_margin({"floor": values["floor"]}) is None


def test_line_fit_by_hand():
    # x deviations -1.5 -0.5 0.5 1.5, y deviations -0.5 0.5 -0.5 0.5: s_xy 1, s_xx 5, s_yy 1
    fit = line_fit([0, 1, 2, 3], [0, 1, 0, 1])
    assert fit["slope"] == pytest.approx(0.2) and fit["intercept"] == pytest.approx(0.2)
    assert fit["r"] == pytest.approx(1 / 5 ** 0.5) and fit["n"] == 4
    assert line_fit([0, 1], [0, 1]) is None and line_fit([1, 1, 1], [0, 1, 2]) is None
