"""What customization adds to the concept loss to limit forgetting: DreamBooth's prior preservation,
functional regularization against the frozen base model ("drift correction"), and a weight-space baseline.

Concept loss (DreamBooth, Ruiz et al. 2023, Eq. 1), x0 the k concept images, c the concept prompt:
    L_concept = E_{t, eps} || eps - eps_theta(x_t, t, c) ||^2

Prior preservation (Eq. 2): x' generated once by the base model for one prior prompt c_pr,
    L = L_concept + lambda_pp E || eps' - eps_theta(x'_t, t', c_pr) ||^2
regresses to the true noise and protects that one prompt.

Functional regularization (drift correction, Laria et al. 2024): theta_0 the frozen base model, A a set of
anchor prompts (anchored base classes under anchored templates, attribute captions of them, the empty
prompt), x_t noised from base-model generations of those prompts (or from the concept images),
    L = L_concept + lambda_fr E_{c' ~ A, t, eps} || eps_theta(x_t, t, c') - eps_theta0(x_t, t, c') ||^2
("separate": each prompt's own prediction is kept), or, keeping what guided sampling uses,
    eps^s(x_t, c') = eps(x_t, "") + s (eps(x_t, c') - eps(x_t, ""))                   ("guided", scale s)
    L = L_concept + lambda_fr E || eps^s_theta(x_t, t, c') - eps^s_theta0(x_t, t, c') ||^2.
Anchors name only part of the base classes and templates (the drift protocol measures the rest: held out).
At step 0 theta = theta_0, so the term is exactly 0; customization runs with dropout off (the model in
eval mode) so that this holds, and the frozen copy sees the same function.

Weight-space baseline (the cheap regularizer of many personalization methods):
    L = L_concept + lambda_l2 sum_W || W - W_0 ||^2
over the weights the method changes (for LoRA, the merged update (alpha / r) B A).
"""
from __future__ import annotations

import numpy as np
import torch

from core import captions
from core.config import Config
from core.data import base_classes
from minidiff.diffusion import Diffusion, classifier_free_guidance
from minidiff.lora import lora_modules
from minidiff.text2img import TextToImage


def heldout_split(cfg: Config) -> tuple[list[str], list[str]]:
    """(anchored, held out): the base classes anchor prompts may name, and drift.heldout_classes, which no
    anchor names and on which the drift protocol judges the open world. The one definition of the split."""
    base = base_classes(cfg.data)
    return [c for c in base if c not in cfg.drift.heldout_classes], [c for c in base if c in cfg.drift.heldout_classes]


def anchored_templates(cfg: Config) -> tuple[str, ...]:
    """The caption templates anchor prompts may use: the first drift.anchor_templates of the dataset's."""
    return captions.TEMPLATES[cfg.data.dataset][:cfg.drift.anchor_templates]


def prior_prompt(cfg: Config) -> str:
    """The configured prior prompt, or by default the plain prompt of the first anchored class."""
    return cfg.customize.prior_prompt or captions.class_caption(anchored_templates(cfg)[0], heldout_split(cfg)[0][0])


def anchor_prompts(cfg: Config) -> list[str]:
    """A: every anchored class under every anchored template, attribute captions of them (shapes), and
    (last) the empty prompt."""
    classes, templates = heldout_split(cfg)[0], anchored_templates(cfg)
    prompts = [captions.class_caption(t, c) for c in classes for t in templates]
    if cfg.data.dataset == "shapes":
        rng = np.random.default_rng(cfg.run.seed)
        for i in range(cfg.customize.attribute_anchors):
            colour, background = rng.choice(len(captions.shapes.COLOURS), 2, replace=False)
            texture = rng.integers(len(captions.shapes.TEXTURES))
            prompts.append(captions.attribute_caption(templates[i % len(templates)], classes[i % len(classes)],
                                                      colour, background, texture))
    return prompts + [""]


def sample_anchors(anchors: list[str], n: int, empty_prob: float) -> torch.Tensor:
    """n indices into `anchors` (whose last entry is the empty prompt): the empty prompt with probability
    empty_prob, else uniform. Guided sampling evaluates eps(x_t, "") at every step and scales its drift by
    (s - 1) at guidance s, so the unconditional prediction gets a large share of the regularizer."""
    uniform = torch.randint(len(anchors), (n,))
    return torch.where(torch.rand(n) < empty_prob, len(anchors) - 1, uniform)


def noise_prediction_loss(model: TextToImage, diffusion: Diffusion, x0: torch.Tensor, prompts: list[str]):
    """E_{t, eps} || eps - eps_theta(x_t, t, c) ||^2 (DreamBooth Eq. 1 / DDPM Algorithm 1)."""
    cond = model.encode(prompts)
    return diffusion.loss(lambda x, t: model(x, t, cond), x0)


def functional_regularization(model: TextToImage, frozen: TextToImage, diffusion: Diffusion, x0: torch.Tensor,
                              prompts: list[str], guidance: float | None = None) -> torch.Tensor:
    """E_{c', t, eps} || eps_theta(x_t, t, c') - eps_theta0(x_t, t, c') ||^2 on x_t noised from x0; with a
    guidance scale, of the guided predictions eps^s (module docstring)."""
    t = torch.randint(diffusion.timesteps, (len(x0),), device=x0.device)
    x_t = diffusion.q_sample(x0, t, torch.randn_like(x0))

    def predict(m: TextToImage) -> torch.Tensor:
        if guidance is None:
            return m(x_t, t, m.encode(prompts))
        both = tuple(torch.cat(pair) for pair in zip(m.encode(prompts), m.encode([""] * len(prompts))))
        e_cond, e_uncond = m(torch.cat([x_t, x_t]), torch.cat([t, t]), both).chunk(2)
        return classifier_free_guidance(e_cond, e_uncond, guidance)

    with torch.no_grad():
        target = predict(frozen)
    return (predict(model) - target).pow(2).mean()


def weight_change(model: TextToImage, initial: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum_W || W - W_0 ||^2 over what customization changed: every trainable tensor but LoRA's A and B, whose
    merged update (alpha / r) B A counts instead; `initial` holds the trainable tensors at step 0."""
    total = torch.zeros((), device=model.device)
    for adapter in lora_modules(model.unet):
        total = total + adapter.delta_weight().pow(2).sum()
    for name, p in model.named_parameters():
        if p.requires_grad and not (name.endswith(".A") or name.endswith(".B")):
            total = total + (p - initial[name]).pow(2).sum()
    return total
