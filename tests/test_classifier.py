"""Diffusion classifier: rigged models with a known answer, the noise shared across classes (the
test fails if it were not), centred adaptive stages, and per-image noise banks that batching cannot
change."""
import pytest
import torch

from core.cli import make_config
from core.config import ClassifierConfig
from core.errors import ConfigError
from minidiff.classifier import DiffusionClassifier, classify_images, stage_grid
from minidiff.diffusion import Diffusion


class TemplateModel(torch.nn.Module):
    """eps_theta(x_t, t, c) = shrink * (x_t - sqrt(abar_t) T_c) / sqrt(1 - abar_t). With shrink = 1
    it is exact when x0 is class c's template; with shrink < 1 every class's error has a large term
    (1 - shrink)^2 ||eps||^2 that is the same for every class only if every class sees the same
    eps."""

    def __init__(self, templates: torch.Tensor, diffusion: Diffusion, shrink: float = 1.0):
        super().__init__()
        self.templates, self.diffusion, self.shrink = templates, diffusion, shrink
        self.device = torch.device("cpu")

    def encode(self, prompts):
        k = len(prompts)
        return torch.eye(k)[:, None, :], torch.eye(k)  # the class index, one-hot

    def forward(self, x_t, t, cond):
        template = self.templates[cond[1].argmax(dim=1)]
        abar = self.diffusion._abar(t, x_t)
        return self.shrink * (x_t - abar.sqrt() * template) / (1 - abar).sqrt()


@pytest.fixture
def setup():
    torch.manual_seed(0)
    diffusion = Diffusion(100, "linear")
    templates = torch.rand(6, 3, 8, 8) * 2 - 1
    return TemplateModel(templates, diffusion), diffusion, templates


def make(model, diffusion, **kw):
    cfg = ClassifierConfig(**{"n_timesteps": 20, "stages": (5, 20), "keep": (3, 1), **kw})
    return DiffusionClassifier(model, diffusion, [f"class {i}" for i in range(6)], cfg,
                               resolution=8)


def test_rigged_model_is_classified_correctly(setup):
    model, diffusion, templates = setup
    images = templates[[3, 0, 5, 1]] + 0.05 * torch.randn(4, 3, 8, 8)
    for adaptive in (False, True):
        out = make(model, diffusion).classify(images, range(4), adaptive)
        assert out["pred"].tolist() == [3, 0, 5, 1]
    assert (make(model, diffusion, loss="l1").classify(images, range(4))["pred"].tolist()
            == [3, 0, 5, 1])


def test_the_noise_is_shared_across_classes(setup, monkeypatch):
    """Templates close together and a shrunk prediction: the class signal is small next to
    ||eps||^2, which only cancels when each timestep's eps is the same for every class. With the
    noise drawn per class instead, the same images are classified near chance."""
    _, diffusion, templates = setup
    close = 0.04 * templates
    model = TemplateModel(close, diffusion, shrink=0.6)
    labels = torch.arange(6).repeat(10)
    shared = classify_images(make(model, diffusion, stages=(20,), keep=(1,)), close[labels], 10,
                             adaptive=False)
    assert (shared["pred"] == labels).float().mean() == 1.0
    real_errors = DiffusionClassifier.errors

    # what a classifier that does not share noise computes
    def per_class_noise(self, x0, noise, classes, grid):
        return torch.stack([
            real_errors(self, x0, torch.randn_like(noise), classes[:, k:k + 1], grid)[:, 0]
            for k in range(classes.shape[1])], dim=1)

    monkeypatch.setattr(DiffusionClassifier, "errors", per_class_noise)
    unshared = classify_images(make(model, diffusion, stages=(20,), keep=(1,)), close[labels], 10,
                               adaptive=False)
    assert (unshared["pred"] == labels).float().mean() < 0.5  # 0.33 measured; chance is 0.17


def test_adaptive_equals_full_grid_when_margins_are_large_and_costs_less(setup):
    model, diffusion, templates = setup
    images = templates[torch.arange(6).repeat(2)] + 0.1 * torch.randn(12, 3, 8, 8)
    clf = make(model, diffusion)
    full, adaptive = (clf.classify(images, range(12), adaptive=False),
                      clf.classify(images, range(12), adaptive=True))
    assert torch.equal(full["pred"], adaptive["pred"])
    assert full["unet_passes"] == 6 * 20
    # all classes on 5 timesteps, then the best 3 on 15 more
    assert adaptive["unet_passes"] == 6 * 5 + 3 * 15
    kept = torch.isfinite(adaptive["scores"])
    # same grid, same noise: same scores
    assert torch.allclose(adaptive["scores"][kept], full["scores"][kept])


def test_stage_grids_are_centred_in_the_full_grid():
    assert stage_grid(40, 5).tolist() == [4, 12, 20, 28, 36]
    assert stage_grid(40, 40).tolist() == list(range(40))
    assert stage_grid(20, 4).tolist() == [2, 7, 12, 17]


def test_noise_banks_are_per_image_and_batching_does_not_change_predictions(setup):
    model, diffusion, templates = setup
    images = templates[torch.arange(6)] + 0.3 * torch.randn(6, 3, 8, 8)
    clf = make(model, diffusion)
    banks = clf.noise_bank(range(3))
    assert not torch.equal(banks[0], banks[1]) and torch.equal(banks[2], clf.noise_bank([2])[0])
    one = classify_images(clf, images, batch_size=6)["pred"]
    split = classify_images(clf, images, batch_size=2)["pred"]
    assert torch.equal(one, split)


@pytest.mark.parametrize("args, message", [
    (["--classifier.stages=3,20"], "divide"), (["--classifier.keep=3,2"], "decrease to 1"),
    (["--classifier.keep=1"], "same"), (["--classifier.loss=huber"], "l2, l1"),
    (["--classifier.keep=10,1"], "never exceed the 9 classes")])
def test_bad_schedules_are_refused(args, message):
    with pytest.raises(ConfigError, match=message):
        make_config("quick", ["--classifier.n_timesteps=40", "--classifier.adaptive=true", *args])
