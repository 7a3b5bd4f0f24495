"""What customization adds to the concept loss to limit forgetting: DreamBooth's prior preservation,
functional regularization against the frozen base model ("drift correction"), and a
weight-space baseline.

Concept loss (DreamBooth, Ruiz et al. 2023, Eq. 1), x0 the k concept images, c the concept prompt:
    L_concept = E_{t, eps} || eps - eps_theta(x_t, t, c) ||^2

Prior preservation (Eq. 2): x' generated once by the base model for one prior prompt c_pr,
    L = L_concept + lambda_pp E || eps' - eps_theta(x'_t, t', c_pr) ||^2
regresses to the true noise and protects that one prompt.

Functional regularization (drift correction, Laria et al. 2024): theta_0 the frozen base model, A a
set of anchor prompts (anchored base classes under anchored templates, attribute captions of them,
the empty prompt), x_t noised from base-model generations of those prompts (or from the
concept images),
    L = L_concept
        + lambda_fr E_{c' ~ A, t, eps} || eps_theta(x_t, t, c') - eps_theta0(x_t, t, c') ||^2
("separate": each prompt's own prediction is kept), or, keeping what guided sampling uses,
    eps^s(x_t, c') = eps(x_t, "") + s (eps(x_t, c') - eps(x_t, ""))              ("guided", scale s)
    L = L_concept + lambda_fr E || eps^s_theta(x_t, t, c') - eps^s_theta0(x_t, t, c') ||^2.
Anchors name only part of the base classes and templates (the drift protocol measures the rest:
held out). At step 0 theta = theta_0, so the term is exactly 0; customization runs with dropout off
(the model in eval mode) so that this holds, and the frozen copy sees the same function.

Anchors that reach what they do not name (an anchor set protects what it names, and on photos the
held-out classes lost more with it than without):
  * random subjects (anchor_source="random"): the subject token of an anchored template gets a
    random embedding v ~ N(mu, (w sigma)^2) per sample, mu and sigma (per dimension) fitted to the
    *anchored* classes' token embeddings only, w = random_width; the frozen text encoder turns it
    into a conditioning no word spells. How far each held-out class's embedding lies under that
    distribution is reported beside the anchored classes' (anchor_distances), so that "never named"
    cannot silently become "covered".
  * cross pairing (anchor_pairing="cross"): an anchor prompt with any anchor's image, not only its
    own, so the regularizer also constrains the (image, prompt) pairs a diffusion classifier scores.
  * classifier-score distillation (reg="distill"; after Jha et al., ICLR 2025): for an anchor image
    and K anchored class prompts with shared (t, eps), the errors
    e_k = || eps - eps(x_t, t, c_k) ||^2 centred over k, e_k - mean_j e_j,
    are held to the frozen model's:
        L_distill = E_x mean_k ( (e_k - mean_j e_j)_theta - (e_k - mean_j e_j)_theta0 )^2
    It is 0 at step 0 and blind to a shift shared by every prompt: it keeps the classifier's
    comparisons, not the predictions, so it can reach the semantic floor while generations still
    drift.
  * replay (reg="replay"), the control: prior preservation over the same anchors and images,
    regressing to the true noise: L_replay = E || eps - eps_theta(x_t, t, c') ||^2.

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
    """(anchored, held out): the base classes anchor prompts may name, and drift.heldout_classes,
    which no anchor names and on which the drift protocol judges the open world. The one definition
    of the split."""
    base = base_classes(cfg.data)
    return ([c for c in base if c not in cfg.drift.heldout_classes],
            [c for c in base if c in cfg.drift.heldout_classes])


def anchored_templates(cfg: Config) -> tuple[str, ...]:
    """The caption templates anchor prompts may use: the first drift.anchor_templates of the
    dataset's."""
    return captions.TEMPLATES[cfg.data.dataset][:cfg.drift.anchor_templates]


def prior_prompt(cfg: Config) -> str:
    """The configured prior prompt, or by default the plain prompt of the first anchored class."""
    return cfg.customize.prior_prompt or captions.class_caption(anchored_templates(cfg)[0],
                                                                heldout_split(cfg)[0][0])


def anchor_prompts(cfg: Config) -> list[str]:
    """A: every anchored class under every anchored template, attribute captions of them (shapes),
    and (last) the empty prompt."""
    classes, templates = heldout_split(cfg)[0], anchored_templates(cfg)
    prompts = [captions.class_caption(t, c) for c in classes for t in templates]
    if cfg.data.dataset == "shapes":
        rng = np.random.default_rng(cfg.run.seed)
        for i in range(cfg.customize.attribute_anchors):
            colour, background = rng.choice(len(captions.shapes.COLOURS), 2, replace=False)
            texture = rng.integers(len(captions.shapes.TEXTURES))
            prompts.append(captions.attribute_caption(templates[i % len(templates)],
                                                      classes[i % len(classes)],
                                                      colour, background, texture))
    return prompts + [""]


def sample_anchors(anchors: list[str], n: int, empty_prob: float) -> torch.Tensor:
    """n indices into `anchors` (whose last entry is the empty prompt): the empty prompt with
    probability empty_prob, else uniform. Guided sampling evaluates eps(x_t, "") at every step and
    scales its drift by (s - 1) at guidance s, so the unconditional prediction gets a large share of
    the regularizer."""
    uniform = torch.randint(len(anchors), (n,))
    return torch.where(torch.rand(n) < empty_prob, len(anchors) - 1, uniform)


def noise_prediction_loss(model: TextToImage, diffusion: Diffusion, x0: torch.Tensor,
                          prompts: list[str]):
    """E_{t, eps} || eps - eps_theta(x_t, t, c) ||^2 (DreamBooth Eq. 1 / DDPM Algorithm 1)."""
    cond = model.encode(prompts)
    return diffusion.loss(lambda x, t: model(x, t, cond), x0)


def functional_regularization(model: TextToImage, frozen: TextToImage, diffusion: Diffusion,
                              x0: torch.Tensor, cond,
                              guidance: float | None = None) -> torch.Tensor:
    """E_{c', t, eps} || eps_theta(x_t, t, c') - eps_theta0(x_t, t, c') ||^2 on x_t noised from x0,
    cond the anchors' conditioning (token states, pooled: the text encoder is frozen, so both models
    see the same); with a guidance scale, of the guided predictions eps^s (module docstring)."""
    t = torch.randint(diffusion.timesteps, (len(x0),), device=x0.device)
    x_t = diffusion.q_sample(x0, t, torch.randn_like(x0))
    empty = frozen.encode([""] * len(x0)) if guidance is not None else None

    def predict(m: TextToImage) -> torch.Tensor:
        if guidance is None:
            return m(x_t, t, cond)
        both = tuple(torch.cat(pair) for pair in zip(cond, empty))  # conditional, then empty prompt
        e_cond, e_uncond = m(torch.cat([x_t, x_t]), torch.cat([t, t]), both).chunk(2)
        return classifier_free_guidance(e_cond, e_uncond, guidance)

    with torch.no_grad():
        target = predict(frozen)
    return (predict(model) - target).pow(2).mean()


def replay_loss(model: TextToImage, diffusion: Diffusion, x0: torch.Tensor, cond) -> torch.Tensor:
    """E_{t, eps} || eps - eps_theta(x_t, t, c') ||^2 on anchor images and their conditioning: prior
    preservation over the anchors, the control for functional regularization (module docstring)."""
    return diffusion.loss(lambda x, t: model(x, t, cond), x0)


def distillation(model: TextToImage, frozen: TextToImage, diffusion: Diffusion, x0: torch.Tensor,
                 class_cond) -> torch.Tensor:
    """L_distill (module docstring): x0 (B, 3, H, W) anchor images, class_cond the conditioning of K
    prompts ((K, L, D), (K, E)); every image is scored under every prompt with one shared
    (t, eps)."""
    b, k = len(x0), len(class_cond[0])
    t = torch.randint(diffusion.timesteps, (b,), device=x0.device).repeat_interleave(k)  # (B*K,)
    eps = torch.randn_like(x0).repeat_interleave(k, dim=0)                      # shared over k
    x_t = diffusion.q_sample(x0.repeat_interleave(k, dim=0), t, eps)
    cond = tuple(c.repeat(b, *[1] * (c.dim() - 1)) for c in class_cond)         # (B*K, ...)

    def errors(m: TextToImage) -> torch.Tensor:
        return (eps - m(x_t, t, cond)).pow(2).mean(dim=(1, 2, 3)).view(b, k)    # (B, K)

    with torch.no_grad():
        target = centred(errors(frozen))
    return (centred(errors(model)) - target).pow(2).mean()


def centred(errors: torch.Tensor) -> torch.Tensor:
    """(B, K) errors minus each image's mean over the K prompts: what a classifier compares."""
    return errors - errors.mean(dim=1, keepdim=True)


def subject_distribution(model: TextToImage, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, sigma) per dimension of the anchored classes' token embeddings (random subjects'
    Gaussian)."""
    anchored, _ = heldout_split(cfg)
    table = model.text.token_embedding.weight
    e = table[torch.tensor([model.tokenizer.stoi[c] for c in anchored],
                           device=table.device)].detach()
    return e.mean(dim=0), e.std(dim=0)


def random_subjects(mu: torch.Tensor, sigma: torch.Tensor, n: int, width: float) -> torch.Tensor:
    """n embeddings (n, width) drawn from N(mu, (width * sigma)^2) per dimension."""
    return mu + width * sigma * torch.randn(n, len(mu), device=mu.device)


def anchor_distances(model: TextToImage, cfg: Config) -> dict[str, float]:
    """Each base class's token embedding under the random subjects' Gaussian: the RMS over
    dimensions of (e - mu) / (width * sigma), so about 1 for a typical draw. Held-out classes far
    beyond the anchored ones are not covered by the random subjects; near them, they may be."""
    mu, sigma = subject_distribution(model, cfg)
    table = model.text.token_embedding.weight.detach()
    z = lambda c: ((table[model.tokenizer.stoi[c]] - mu)  # noqa: E731
                   / (cfg.customize.random_width * sigma))
    return {c: z(c).pow(2).mean().sqrt().item() for c in base_classes(cfg.data)}


def weight_change(model: TextToImage, initial: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum_W || W - W_0 ||^2 over what customization changed: every trainable tensor but LoRA's A
    and B, whose merged update (alpha / r) B A counts instead; `initial` holds the trainable tensors
    at step 0."""
    total = torch.zeros((), device=model.device)
    for adapter in lora_modules(model.unet):
        total = total + adapter.delta_weight().pow(2).sum()
    for name, p in model.named_parameters():
        if p.requires_grad and not (name.endswith(".A") or name.endswith(".B")):
            total = total + (p - initial[name]).pow(2).sum()
    return total
