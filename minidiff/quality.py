"""How good are a text-to-image model's samples? Judged by the project's evaluator network (eval/).

For each prompt, DDIM + classifier-free-guidance samples from fixed seeds; the evaluator (trained on all
classes of the dataset, never on generated images) says how often they look like the prompted class, and
FD-eval compares them with real test images of those classes.
"""
from __future__ import annotations

import torch

from core import captions
from core.config import Config
from core.data import class_names
from eval.evalnet import extract_features, judge, load_evaluator
from eval.reference import fd_eval, reference_statistics
from minidiff.diffusion import Diffusion
from minidiff.text2img import TextToImage, generate, seed_range


def recognition(cfg: Config, model: TextToImage, diffusion: Diffusion, prompts: list[str], labels: list[int],
                n_per_prompt: int, evaluator, kind: str = "quality") -> tuple[dict, torch.Tensor]:
    """Evaluator accuracy on n_per_prompt samples of each prompt (labels index the dataset's classes); the
    samples' seeds come from the `kind` range (minidiff.text2img.SEED_RANGES)."""
    dc = cfg.diffusion
    all_prompts = [p for p in prompts for _ in range(n_per_prompt)]
    seeds = seed_range(kind, len(all_prompts))
    images = generate(model, diffusion, all_prompts, seeds, cfg.data.resolution, dc.sample_steps, dc.guidance,
                      dc.eta)
    all_labels = torch.tensor([lab for lab in labels for _ in range(n_per_prompt)])
    return judge(evaluator, images, all_labels, list(class_names(cfg.data))), images


def sample_quality(cfg: Config, model: TextToImage, diffusion: Diffusion, classes, device,
                   n_per_class: int = 30) -> dict:
    """Recognition accuracy and FD-eval of CFG DDIM samples of every class prompt."""
    evaluator = load_evaluator(cfg, device)
    names = class_names(cfg.data)
    prompts = [captions.class_caption(captions.TEMPLATES[cfg.data.dataset][0], c) for c in classes]
    judged, images = recognition(cfg, model, diffusion, prompts, [names.index(c) for c in classes], n_per_class,
                                 evaluator)
    fd = fd_eval(evaluator, images, reference_statistics(cfg, evaluator, "test", classes))
    dc = cfg.diffusion
    return {"recognised": judged, "fd_eval_vs_test": fd, "n_samples": len(images),
            "sampler": f"DDIM {dc.sample_steps} steps, eta {dc.eta}, guidance {dc.guidance}",
            "summary": f"evaluator recognises {judged['accuracy']:.1%} of {len(images)} samples "
                       f"(DDIM-{dc.sample_steps}, guidance {dc.guidance}); FD-eval vs real test {fd:.2f}"}



def concept_fidelity(cfg: Config, model: TextToImage, diffusion: Diffusion, prompt: str, evaluator,
                     concept_real: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Does the customized model draw the concept? Evaluator accuracy (10-way, the concept class counts as
    correct) on cfg.customize.fidelity_samples samples of `prompt`, and the cosine similarity between the
    mean evaluator features of those samples and of real held-out concept images (uint8 (N, H, W, 3))."""
    label = class_names(cfg.data).index(cfg.data.concept_class)
    judged, images = recognition(cfg, model, diffusion, [prompt], [label], cfg.customize.fidelity_samples,
                                 evaluator, kind="fidelity")
    fake, real = extract_features(evaluator, images).mean(0), extract_features(evaluator, concept_real).mean(0)
    similarity = torch.nn.functional.cosine_similarity(fake, real, dim=0).item()
    return {"recognised": judged["accuracy"], "mean_confidence": judged["mean_confidence"],
            "feature_similarity": similarity, "n_samples": len(images)}, images
