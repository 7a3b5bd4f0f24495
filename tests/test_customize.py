"""Customization: each method trains exactly its parameters, LoRA identities, the functional
regularizer is zero at step 0, prior images are cached, and a delta refuses the wrong base."""
import dataclasses
import hashlib

import pytest
import torch

import minidiff.regularizers as regs
from core import checkpoint
from core.data import base_classes
from core.cache import cache_root
from pipeline.runs import stage_dir
from minidiff.customize import prepare
from core.cli import make_config
from minidiff.lora import LoRA, add_lora, lora_modules, merge_lora, unmerge_lora
from minidiff.regularizers import functional_regularization, weight_change
import minidiff.train_customize as train_customize
from minidiff.train_customize import customization_dir, customize, load_customized
from minidiff.train_diffusion import load_diffusion
from tests.conftest import tiny_base_model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base_model(tmp_path_factory.mktemp("base"))


def with_method(cfg, method, reg="none"):
    return dataclasses.replace(cfg, customize=dataclasses.replace(cfg.customize, method=method,
                                                                  reg=reg, steps=2))


def digests(model) -> dict[str, str]:
    return {k: hashlib.sha256(v.detach().cpu().numpy().tobytes()).hexdigest()
            for k, v in model.state_dict().items()}


EXPECTED = {  # which state-dict entries each method may change
    "full": lambda name: name.startswith("unet."),
    "lora": lambda name: name.endswith(".A") or name.endswith(".B"),
    "custom": lambda name: name.startswith("placeholders.") or (
        ".attn2.to_k." in name or ".attn2.to_v." in name),
    "ti": lambda name: name.startswith("placeholders."),
}


@pytest.mark.parametrize("method", ["full", "lora", "custom", "ti"])
def test_each_method_trains_exactly_its_parameters(base, method):
    cfg = with_method(base, method)
    model, diffusion, _, _ = load_diffusion(stage_dir(cfg, "diffusion", "b0") / "last.pt")
    params = prepare(model, cfg, base_classes(cfg.data))
    before = digests(model)
    opt = torch.optim.SGD(params, lr=0.1)
    x0 = torch.randn(2, 3, 16, 16)
    for _ in range(2):
        loss = regs.noise_prediction_loss(model, diffusion, x0, ["a photo of a <new0>"] * 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = digests(model)
    changed = {k for k in before if before[k] != after[k]}
    allowed = {k for k in before if EXPECTED[method](k)}
    assert changed and changed <= allowed, sorted(changed - allowed)[:5]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(EXPECTED[method](n) for n in trainable)
    if method == "custom":
        assert (any("to_k" in n for n in trainable)
                and not any("attn1" in n or "to_q" in n for n in trainable))


def test_lora_starts_as_the_base_and_merge_unmerge_round_trips(base):
    model, _, _, _ = load_diffusion(stage_dir(base, "diffusion", "b0") / "last.pt")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 70])
    cond = model.encode(["a photo of a star", ""])
    reference = model(x, t, cond)
    adapters = add_lora(model.unet, rank=2, convs=True)
    assert all(isinstance(a, LoRA) for a in adapters) and len(adapters) > 8
    assert torch.equal(model(x, t, cond), reference)  # B = 0: exactly the base model
    with torch.no_grad():
        for a in adapters:
            a.B.normal_(0, 0.1)
    adapted = model(x, t, cond)
    assert not torch.allclose(adapted, reference)
    weights = {n: p.clone() for n, p in model.unet.named_parameters() if ".base." in n}
    merge_lora(model.unet)
    assert torch.allclose(model(x, t, cond), adapted, atol=1e-5)  # merged weights, same function
    unmerge_lora(model.unet)
    assert all(torch.allclose(p, weights[n], atol=1e-6)
               for n, p in model.unet.named_parameters() if ".base." in n)
    assert torch.allclose(model(x, t, cond), adapted, atol=1e-6)


@pytest.mark.parametrize("target", ["separate", "guided"])
def test_functional_regularization_is_zero_at_step_zero_then_positive(base, target):
    cfg = with_method(base, "lora", "functional")
    model, diffusion, _, _ = load_diffusion(stage_dir(cfg, "diffusion", "b0") / "last.pt")
    frozen = load_diffusion(stage_dir(cfg, "diffusion", "b0") / "last.pt")[0].requires_grad_(False)
    prepare(model, cfg, base_classes(cfg.data))
    x0, cond = (torch.randn(3, 3, 16, 16),
                frozen.encode(["a photo of a star", "", "a drawing of a ring"]))
    guidance = 5.0 if target == "guided" else None
    assert functional_regularization(model, frozen, diffusion, x0, cond, guidance).item() == 0.0
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".B"):
                p.normal_(0, 0.1)
    assert functional_regularization(model, frozen, diffusion, x0, cond, guidance).item() > 0


@pytest.mark.parametrize("method", ["full", "lora", "custom"])
def test_the_regularizer_gradient_reaches_only_what_the_method_trains(base, method):
    cfg = with_method(base, method, "functional")
    model, diffusion, _, _ = load_diffusion(stage_dir(cfg, "diffusion", "b0") / "last.pt")
    frozen = load_diffusion(stage_dir(cfg, "diffusion", "b0") / "last.pt")[0].requires_grad_(False)
    trainable = prepare(model, cfg, base_classes(cfg.data))
    with torch.no_grad():
        for p in trainable:
            p.add_(0.05 * torch.randn_like(p))
    functional_regularization(model, frozen, diffusion, torch.randn(3, 3, 16, 16),
                              frozen.encode(["a photo of a star", "",
                                             "a drawing of a ring"])).backward()
    ids = {id(p) for p in trainable}
    assert all(p.grad is None for p in model.parameters() if id(p) not in ids)
    assert all(p.grad is None for p in frozen.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


@pytest.mark.parametrize("dropout", [0.0, make_config("cifar10").diffusion.dropout])
def test_the_stage_starts_with_a_zero_regularizer_under_each_presets_dropout(tmp_path, dropout):
    """cifar10 trains its UNet with dropout 0.1: customization must compare the same function
    (dropout off)."""
    cfg = tiny_base_model(tmp_path, f"--diffusion.dropout={dropout}", "--customize.method=lora",
                          "--customize.reg=functional", "--customize.steps=2",
                          "--customize.images_per_anchor=1", "--customize.empty_anchor_images=2")
    assert customize(cfg)["regularizer_first"] == 0.0


def test_weight_space_baseline_measures_the_merged_change(base):
    cfg = with_method(base, "lora", "l2")
    model, _, _, _ = load_diffusion(stage_dir(cfg, "diffusion", "b0") / "last.pt")
    trainable = prepare(model, cfg, base_classes(cfg.data))
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert weight_change(model, initial).item() == 0.0  # B = 0: no change yet, whatever A is
    adapters = lora_modules(model.unet)
    with torch.no_grad():
        adapters[0].B.fill_(0.1)
    expected = adapters[0].delta_weight().pow(2).sum()
    assert torch.allclose(weight_change(model, initial), expected)
    weight_change(model, initial).backward()
    assert adapters[0].B.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() == 0
               for p in trainable if p is not adapters[0].B and p is not adapters[0].A)


def test_stage_runs_each_regularizer_and_records_zero_at_start(base):
    for reg in ("functional", "l2"):
        cfg = with_method(base, "custom", reg)
        metrics = customize(cfg)
        assert metrics["regularizer_first"] == 0.0 and metrics["trainable_parameters"] > 0
        # every fidelity sample judged, and `recognised` a share of exactly those: k / n
        n, recognised = cfg.customize.fidelity_samples, metrics["fidelity"]["recognised"]
        assert metrics["fidelity"]["n_samples"] == n
        assert recognised * n == pytest.approx(round(recognised * n), abs=1e-6)


def test_prior_images_are_generated_once_and_reused(base, monkeypatch):
    cfg = with_method(base, "full+prior")
    customize(cfg)
    assert list((cache_root(cfg) / "generations").glob("*.pt"))

    def no_generation(*args, **kwargs):
        raise AssertionError("prior images should come from the cache")

    monkeypatch.setattr(train_customize, "generate", no_generation)
    customize(cfg, force=True)


def test_customized_checkpoint_loads_on_its_base_only(base, tmp_path):
    cfg = with_method(base, "ti")
    customize(cfg)
    path = customization_dir(cfg) / "custom.pt"
    model, _, _ = load_customized(path)
    assert "<new0>" in model.placeholders
    payload = checkpoint.load(path, kind="customized")
    assert set(payload["delta"]) == {"placeholders.<new0>"}  # only what changed is stored
    other = tiny_base_model(tmp_path / "other", "--run.seed=1")
    with pytest.raises(checkpoint.CheckpointMismatch, match="fingerprint"):
        load_customized(path, base_path=stage_dir(other, "diffusion", "b0") / "last.pt")

