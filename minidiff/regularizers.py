"""What customization adds to the concept loss: DreamBooth's prior preservation and functional
regularization against the frozen base model ("drift correction").

Concept loss (DreamBooth, Ruiz et al. 2023, Eq. 1), x0 the k concept images, c the concept prompt:
    L_concept = E_{t, eps} || eps - eps_theta(x_t, t, c) ||^2

Prior preservation (Eq. 2): x' generated once by the base model for one prior prompt c_pr,
    L = L_concept + lambda_pp E || eps' - eps_theta(x'_t, t', c_pr) ||^2
regresses to the true noise and protects that one prompt.

Functional regularization (drift correction, Laria et al. 2024): theta_0 the frozen base model, A a broad
set of anchor prompts (every base-class prompt, attribute prompts, the empty prompt),
    L = L_concept + lambda_fr E_{c' ~ A, t, eps} || eps_theta(x_t, t, c') - eps_theta0(x_t, t, c') ||^2
on x_t noised from the concept images (cheap) or from cached base-model generations for the anchors.
At step 0 theta = theta_0, so the term is exactly 0.
"""
from __future__ import annotations

import numpy as np
import torch

from core import captions
from core.config import Config
from minidiff.diffusion import Diffusion
from minidiff.text2img import TextToImage


def prior_prompt(cfg: Config, base_class_names) -> str:
    """The configured prior prompt, or by default the plain prompt of the first base class."""
    return cfg.customize.prior_prompt or captions.class_caption(captions.TEMPLATES[cfg.data.dataset][0],
                                                                base_class_names[0])


def anchor_prompts(cfg: Config, base_class_names, n_attribute: int = 32) -> list[str]:
    """A: every base class under every template, attribute captions (shapes), and (last) the empty prompt."""
    dataset = cfg.data.dataset
    prompts = [captions.class_caption(t, c) for c in base_class_names for t in captions.TEMPLATES[dataset]]
    if dataset == "shapes":
        rng = np.random.default_rng(cfg.run.seed)
        n_attrs = (len(captions.shapes.COLOURS),) * 2 + (len(captions.shapes.TEXTURES),)
        for i in range(n_attribute):
            colour, background = rng.choice(n_attrs[0], 2, replace=False)
            attrs = (colour, background, rng.integers(n_attrs[2]))
            prompts.append(captions.random_caption(dataset, base_class_names[i % len(base_class_names)], attrs,
                                                   rng, attribute_prob=1.0))
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
                              prompts: list[str]) -> torch.Tensor:
    """E_{c', t, eps} || eps_theta(x_t, t, c') - eps_theta0(x_t, t, c') ||^2 on x_t noised from x0."""
    t = torch.randint(diffusion.timesteps, (len(x0),), device=x0.device)
    x_t = diffusion.q_sample(x0, t, torch.randn_like(x0))
    with torch.no_grad():
        target = frozen(x_t, t, frozen.encode(prompts))
    return (model(x_t, t, model.encode(prompts)) - target).pow(2).mean()
