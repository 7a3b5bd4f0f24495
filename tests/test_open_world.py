"""End to end on a tiny model: the learning-rate-0 control drifts by exactly nothing; a real update drifts."""
import dataclasses

import pytest

from minidiff.open_world import drift_stage
from minidiff.train_customize import customize
from tests.conftest import tiny_base_model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base_model(tmp_path_factory.mktemp("ow"), "--classifier.n_images=18", "--classifier.n_timesteps=4",
                           "--classifier.stages=2,4", "--classifier.keep=2,1", "--drift.seeds=2")


def run(base, lr):
    cfg = dataclasses.replace(base, customize=dataclasses.replace(base.customize, method="full", steps=3, lr=lr))
    customize(cfg, force=True)
    return drift_stage(cfg, force=True)


def test_learning_rate_zero_control_has_exactly_zero_drift(base):
    r = run(base, 0.0)
    s, a = r["semantic"], r["appearance"]
    assert s["flip_rate"] == 0 and s["mean_change"] == 0 and s["worst_change"] == 0
    assert a["cdi"] == 0 and a["delta_e"] == 0 and a["feature_distance"] == 0 and a["psnr"] is None  # infinite
    assert r["appearance_unrelated"]["cdi"] > 0  # the reference row is not trivially zero


def test_an_update_moves_the_generations(base):
    r = run(base, 1e-2)
    assert r["appearance"]["cdi"] > 0 and r["appearance"]["psnr"] is not None
    assert r["classifier"]["unet_passes_per_image"] == 9 * 2 + 2 * 2
