"""Diffusion classifier on a rigged model whose noise prediction is exact for one class template."""
import pytest
import torch

from core.config import ClassifierConfig
from minidiff.classifier import DiffusionClassifier, check_schedule, classify_images
from minidiff.diffusion import Diffusion


class TemplateModel(torch.nn.Module):
    """eps_theta(x_t, t, c) = (x_t - sqrt(abar_t) T_c) / sqrt(1 - abar_t): exact when x0 is class c's template,
    so the denoising error of class c grows with the distance between x0 and T_c."""

    def __init__(self, templates: torch.Tensor, diffusion: Diffusion):
        super().__init__()
        self.templates, self.diffusion = templates, diffusion
        self.device = torch.device("cpu")

    def encode(self, prompts):
        k = len(prompts)
        return torch.eye(k)[:, None, :], torch.eye(k)  # the class index, one-hot

    def forward(self, x_t, t, cond):
        template = self.templates[cond[1].argmax(dim=1)]
        abar = self.diffusion._abar(t, x_t)
        return (x_t - abar.sqrt() * template) / (1 - abar).sqrt()


@pytest.fixture
def setup():
    torch.manual_seed(0)
    diffusion = Diffusion(100, "linear")
    templates = torch.rand(6, 3, 8, 8) * 2 - 1
    return TemplateModel(templates, diffusion), diffusion, templates


def make(setup, **kw):
    model, diffusion, templates = setup
    cfg = ClassifierConfig(**{"n_timesteps": 20, "stages": (5, 20), "keep": (3, 1), **kw})
    return DiffusionClassifier(model, diffusion, [f"class {i}" for i in range(6)], cfg, resolution=8)


def test_rigged_model_is_classified_correctly(setup):
    _, _, templates = setup
    images = templates[[3, 0, 5, 1]] + 0.05 * torch.randn(4, 3, 8, 8)
    for adaptive in (False, True):
        out = make(setup).classify(images, adaptive)
        assert out["pred"].tolist() == [3, 0, 5, 1]
    assert make(setup, loss="l1").classify(images)["pred"].tolist() == [3, 0, 5, 1]


def test_adaptive_equals_full_grid_when_margins_are_large_and_costs_less(setup):
    _, _, templates = setup
    images = templates[torch.arange(6).repeat(2)] + 0.1 * torch.randn(12, 3, 8, 8)
    clf = make(setup)
    full, adaptive = clf.classify(images, adaptive=False), clf.classify(images, adaptive=True)
    assert torch.equal(full["pred"], adaptive["pred"])
    assert full["unet_passes"] == 6 * 20
    assert adaptive["unet_passes"] == 6 * 5 + 3 * 15  # all classes on 5 timesteps, then the best 3 on 15 more
    kept = torch.isfinite(adaptive["scores"])
    assert torch.allclose(adaptive["scores"][kept], full["scores"][kept])  # same grid, same noise: same scores


def test_batching_does_not_change_predictions(setup):
    _, _, templates = setup
    images = templates[torch.arange(6)] + 0.3 * torch.randn(6, 3, 8, 8)
    clf = make(setup)
    one = classify_images(clf, images, batch_size=6)["pred"]
    split = classify_images(clf, images, batch_size=2)["pred"]
    assert torch.equal(one, split)


@pytest.mark.parametrize("kw, message", [
    ({"stages": (3, 20)}, "divide"), ({"keep": (3, 2)}, "decrease to 1"), ({"keep": (1,)}, "same"),
    ({"loss": "huber"}, "l1, l2"), ({"keep": (9, 1)}, "at most 6")])
def test_bad_schedules_are_refused(setup, kw, message):
    with pytest.raises(ValueError, match=message):
        make(setup, **kw)
    check_schedule(ClassifierConfig(), 9)  # the default schedule is valid
