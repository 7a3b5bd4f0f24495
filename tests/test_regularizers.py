"""The regularizers meant to reach what they do not name, and the measurement that judges them:
random subjects drawn from the anchored classes only, cross pairing that draws images apart from
prompts, a distillation term that is 0 at the start and blind to a shift shared by every prompt, the
margin on a rigged error table, and the classifier's floor falling with its budget."""
import pytest
import torch

from bench.classifier_floor import floor
from core.data import base_classes
from minidiff.classifier import margins, predict
from minidiff.regularizers import (anchor_distances, anchor_prompts, centred, distillation,
                                   heldout_split, subject_distribution)
from minidiff.text2img import SUBJECT
from minidiff.train_customize import Regularizer, anchor_batch, regularizer_name
from minidiff.train_diffusion import load_diffusion
from pipeline.runs import stage_dir
from tests.conftest import tiny_base_model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    cfg = tiny_base_model(tmp_path_factory.mktemp("regs"))
    model, diffusion, _, _ = load_diffusion(stage_dir(cfg, "diffusion", "b0") / "last.pt")
    return cfg, model, diffusion


def test_random_subjects_are_fitted_to_the_anchored_classes_only(base):
    """Moving a held-out class's token embedding far away changes neither the Gaussian nor any
    anchor prompt; that class's distance under it grows, and is reported."""
    cfg, model, _ = base
    mu, sigma = subject_distribution(model, cfg)
    held = heldout_split(cfg)[1][0]
    before = anchor_distances(model, cfg)[held]
    with torch.no_grad():
        model.text.token_embedding.weight[model.tokenizer.stoi[held]] += 100.0
    mu2, sigma2 = subject_distribution(model, cfg)
    assert torch.equal(mu, mu2) and torch.equal(sigma, sigma2)
    assert anchor_distances(model, cfg)[held] > 10 * before
    with torch.no_grad():
        model.text.token_embedding.weight[model.tokenizer.stoi[held]] -= 100.0
    rand = cfg.updated("customize", reg="functional", anchor_source="random", empty_anchor_prob=0.0)
    reg = Regularizer(frozen=model, subjects=(mu, sigma))
    images, cond = anchor_batch(rand, anchor_prompts(rand), reg, torch.zeros(6, 3, 16, 16))
    assert cond[0].shape[0] == 6 and images.shape == (6, 3, 16, 16)
    assert not any(c in " ".join(anchor_prompts(rand)) for c in heldout_split(cfg)[1])


def test_cross_pairing_draws_images_apart_from_prompts(base):
    """Own pairing: each prompt with one of its own images. Cross: the image's anchor agrees with
    the prompt's only by chance (1 in the number of anchors)."""
    cfg, model, _ = base
    anchors = anchor_prompts(cfg)
    n = len(anchors)
    # image i's pixels say "i"
    ids = torch.arange(n).float()[:, None, None, None].expand(n, 3, 2, 2)
    reg = Regularizer(frozen=model,
                      anchor_images=(ids, torch.arange(n), torch.ones(n, dtype=torch.long)))
    agree = {}
    for pairing in ("own", "cross"):
        c = cfg.updated("customize", anchor_pairing=pairing, empty_anchor_prob=0.0)
        torch.manual_seed(0)
        hits, total = 0, 0
        for _ in range(60):
            torch.manual_seed(total)
            chosen_images, cond = anchor_batch(c, anchors, reg, torch.zeros(8, 3, 2, 2))
            torch.manual_seed(total)
            from minidiff.regularizers import sample_anchors
            chosen = sample_anchors(anchors, 8, 0.0)  # the prompts anchor_batch drew (same draws)
            hits += (chosen_images[:, 0, 0, 0].long() == chosen).sum().item()
            total += 8
        agree[pairing] = hits / total
    assert agree["own"] == 1.0 and agree["cross"] < 3.0 / n


def test_distillation_is_zero_at_the_start_and_blind_to_a_shared_shift(base):
    cfg, model, diffusion = base
    conds = model.encode([f"a photo of a {c}" for c in heldout_split(cfg)[0]])
    assert distillation(model, model, diffusion, torch.randn(2, 3, 16, 16), conds).item() == 0.0
    errors = torch.rand(4, 5)
    # a shift every prompt shares
    assert torch.allclose(centred(errors + 0.7), centred(errors), atol=1e-7)
    assert not torch.allclose(centred(errors + torch.tensor([0.7, 0, 0, 0, 0])), centred(errors))


def test_margin_and_prediction_on_a_rigged_error_table():
    """Scores (means over timesteps): image 0 right by 0.2, image 1 wrong by 0.1; at a budget of 1
    timestep the centred sub-grid picks the middle column."""
    errors = torch.tensor([
        [[0.1, 0.1], [0.3, 0.3], [0.5, 0.5]],       # image 0: class 0 best
        [[0.4, 0.4], [0.3, 0.3], [0.35, 0.35]]])    # image 1: class 1 best, true class 2
    labels = torch.tensor([0, 2])
    assert torch.allclose(margins(errors, labels), torch.tensor([-0.2, 0.05], dtype=torch.float64))
    assert predict(errors).tolist() == [0, 1]
    table = torch.zeros(1, 2, 4)
    # the 1-timestep budget sees column 2 only: class 1 wins
    table[0, 0, 2], table[0, 1, 0] = 1.0, 5.0
    assert predict(table, 1).tolist() == [1] and predict(table).tolist() == [0]


def test_the_floor_falls_with_the_budget():
    """Four noise banks of one 'model': a fixed class signal plus independent noise per timestep and
    bank. Two banks disagree less the more timesteps they average: the floor falls monotonically,
    accuracy rises."""
    gen = torch.Generator().manual_seed(0)
    signal = torch.rand(300, 6, 1, generator=gen)
    labels = signal[:, :, 0].argmin(dim=1)
    tables = [signal + torch.randn(300, 6, 80, generator=gen) for _ in range(4)]
    curve = [floor(tables, labels, k) for k in (5, 10, 20, 40, 80)]
    flips = [c["flip_rate"] for c in curve]
    assert flips == sorted(flips, reverse=True) and flips[0] > 2 * flips[-1]
    assert curve[-1]["accuracy"] > curve[0]["accuracy"] and curve[0]["pairs"] == 6


def test_each_regularizer_setting_is_a_condition_of_its_own(base):
    cfg, _, _ = base
    name = lambda **kw: regularizer_name(cfg.updated("customize", **kw))  # noqa: E731
    assert name(reg="functional") == "functional" and name(reg="none") == "none"
    assert name(reg="functional", anchor_source="random", lambda_fr=10.0) == "functional+random-w10"
    assert name(reg="replay", anchor_pairing="cross") == "replay+cross"
    assert name(reg="functional", empty_anchor_prob=1.0) == "functional+empty1"
    assert name(reg="l2", lambda_l2=1e-3) == "l2-w0.001"
    assert SUBJECT not in base_classes(cfg.data)
