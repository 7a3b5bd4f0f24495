"""Evaluator network, its training stage and checkpoints, reference-statistics cache, Inception
path."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from core import checkpoint
from core.cache import cache_root
from core.cli import make_config
from core.data import load_split
from core.errors import ConfigError, UserError
from pipeline.runs import stage_dir
from eval import reference
from eval.evalnet import (Evaluator, evaluator_path, extract_features, judge, load_evaluator,
                          predict_logits, train_evaluator)
from eval.inception import InceptionFeatures, load_inception
from eval.metrics import feature_statistics
from tests.conftest import mark_finished

TINY_NET = ["--evalnet.channels=8,16,32", "--evalnet.batch_size=32"]


def tiny(tmp_path, *extra):
    return make_config("quick", [f"--run.out_dir={tmp_path}", "--data.shapes_train_size=400",
                                 "--data.shapes_test_size=200", *TINY_NET, *extra])


def save_evaluator(cfg, seed=0):
    """An untrained evaluator checkpoint where load_evaluator(cfg) looks for it."""
    torch.manual_seed(seed)
    model = Evaluator(cfg.evalnet, 10).eval()
    checkpoint.save(stage_dir(cfg, "eval-net") / "evaluator.pt",
                    {"kind": "evaluator", "config": cfg.to_dict(), "model": model.state_dict()})
    mark_finished(stage_dir(cfg, "eval-net"))
    return model


@pytest.mark.parametrize("size", [16, 32])
def test_shapes_of_logits_features_and_early_features(size):
    cfg = make_config("quick", ["--evalnet.channels=8,16,32"])
    model = Evaluator(cfg.evalnet, 7).eval()
    x = torch.rand(3, 3, size, size) * 2 - 1
    assert model(x).shape == (3, 7)
    assert model.features(x).shape == (3, 32)
    assert model.early_features(x).shape == (3, 16, size // 2, size // 2)
    assert torch.allclose(model.head(model.features(x)), model(x))


def test_channels_need_a_stem_and_a_stage():
    with pytest.raises(ConfigError, match="evalnet.channels"):
        make_config("quick", ["--evalnet.channels=8"])


class LabelFromPixel(nn.Module):
    """Stub classifier: the label is written in the red value of the top-left pixel (20 * label)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        label = ((x[:, 0, 0, 0] + 1) * 127.5 / 20).round().long()
        return 5.0 * nn.functional.one_hot(label, 10).float()


def test_judge_known_answer():
    images = np.zeros((6, 4, 4, 3), np.uint8)
    shown = np.array([0, 1, 2, 2, 3, 3])
    images[:, 0, 0, 0] = 20 * shown
    requested = torch.tensor([0, 1, 2, 5, 3, 4])  # images 3 and 5 show another class than requested
    names = [f"c{i}" for i in range(10)]
    r = judge(LabelFromPixel(), images, requested, names)
    assert r["n"] == 6 and math.isclose(r["accuracy"], 4 / 6, rel_tol=1e-6)
    p_hit, p_miss = math.exp(5) / (math.exp(5) + 9), 1 / (math.exp(5) + 9)
    assert math.isclose(r["mean_confidence"], (4 * p_hit + 2 * p_miss) / 6, rel_tol=1e-5)
    assert r["per_class"] == {"c0": 1.0, "c1": 1.0, "c2": 1.0, "c3": 1.0, "c4": 0.0, "c5": 0.0}
    assert predict_logits(LabelFromPixel(), torch.from_numpy(images), batch_size=4).shape == (6, 10)


def test_inference_helpers_refuse_float_images():
    with pytest.raises(ValueError, match="uint8"):
        extract_features(LabelFromPixel(), np.zeros((2, 4, 4, 3), np.float32))


def test_tiny_evaluator_learns_shapes_and_round_trips(tmp_path):
    cfg = tiny(tmp_path, "--evalnet.epochs=8", "--evalnet.lr=0.1", "--run.threads=1")
    metrics = train_evaluator(cfg)
    # chance is 0.1; seeds 0-3 gave 0.72-0.88
    assert metrics["test_accuracy"] > 0.4, metrics["test_accuracy"]
    assert (set(metrics["test_per_class"])
            == set(load_split(cfg.data, "test", cache_root(cfg)).classes))
    assert (evaluator_path(cfg).parent / "metrics.json").exists()
    model = load_evaluator(cfg)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    test = load_split(cfg.data, "test", cache_root(cfg))
    assert math.isclose(judge(model, test.x, test.y, test.classes)["accuracy"],
                        metrics["test_accuracy"])


def test_load_evaluator_missing_and_mismatched(tmp_path):
    cfg = tiny(tmp_path)
    with pytest.raises(UserError, match="python train.py eval-net --preset quick"):
        load_evaluator(cfg)
    save_evaluator(cfg)
    other = tiny(tmp_path, "--evalnet.channels=8,16,64")
    with pytest.raises(checkpoint.CheckpointMismatch, match="evalnet.channels"):
        load_evaluator(other)


def test_evaluator_hash_follows_the_file(tmp_path):
    cfg = tiny(tmp_path)
    save_evaluator(cfg, seed=0)
    h0 = checkpoint.fingerprint(evaluator_path(cfg))
    assert len(h0) == 12 and load_evaluator(cfg).checkpoint_hash == h0
    save_evaluator(cfg, seed=1)
    assert checkpoint.fingerprint(evaluator_path(cfg)) != h0


def test_reference_statistics_are_of_the_raw_split(tmp_path):
    cfg = tiny(tmp_path)
    save_evaluator(cfg)
    net = load_evaluator(cfg)
    raw = load_split(cfg.data, "test", cache_root(cfg))
    mu, sigma = reference.reference_statistics(cfg, net, "test")
    mu_raw, sigma_raw = feature_statistics(extract_features(net, raw.x))
    np.testing.assert_allclose(mu, mu_raw, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sigma, sigma_raw, rtol=1e-6, atol=1e-8)
    subset = reference.reference_set(cfg, net, "test", classes=("star", "circle"))["features"]
    assert torch.equal(subset, extract_features(net, raw.only(("circle", "star")).x))
    assert reference.fd_eval(net, raw.x, (mu, sigma)) < 1e-6
    with pytest.raises(ValueError, match="unknown or no reference classes"):
        reference.reference_set(cfg, net, "test", classes=("dragon",))


def test_reference_cache_hit_and_miss_on_new_checkpoint(tmp_path, monkeypatch):
    cfg = tiny(tmp_path)
    save_evaluator(cfg, seed=0)
    net = load_evaluator(cfg)
    mu, sigma = reference.reference_statistics(cfg, net, "test")

    def no_extraction(*args, **kwargs):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(reference, "extract_features", no_extraction)
    mu2, sigma2 = reference.reference_statistics(cfg, net, "test")  # cache hit: no extraction
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    save_evaluator(cfg, seed=1)  # retrained evaluator: new file hash, so the cache must miss
    new_net = load_evaluator(cfg)
    assert reference.network_key(new_net) != reference.network_key(net)
    with pytest.raises(AssertionError, match="features recomputed"):
        reference.reference_statistics(cfg, new_net, "test")


def test_distances_to_reference_reports_counts(tmp_path):
    cfg = tiny(tmp_path)
    save_evaluator(cfg)
    net = load_evaluator(cfg)
    images = load_split(cfg.data, "train", cache_root(cfg)).x[:50]
    r = reference.distances_to_reference(cfg, net, images, "test", kid_subset=20)
    assert (r["n_images"], r["n_reference"], r["feature_dim"]) == (50, 200, 32)
    assert r["kid"]["subset_size"] == 20 and r["precision_recall"]["n_real"] == 50 and r["fd"] >= 0


def test_inception_fails_fast_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--download") as err:
        load_inception()
    assert str(tmp_path) in str(err.value)

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(FileNotFoundError, match="could not be downloaded.*network unreachable"):
        load_inception(download=True)


def test_inception_features_are_2048d_pool_features():
    from torchvision.models import inception_v3
    # the file's keys
    state = inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    net = InceptionFeatures(state).eval()
    assert extract_features(net, torch.zeros(2, 16, 16, 3, dtype=torch.uint8)).shape == (2, 2048)
