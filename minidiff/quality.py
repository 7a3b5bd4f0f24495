"""How good are a text-to-image model's samples? Judged by the project's evaluator network (eval/).

For each prompt, DDIM + classifier-free-guidance samples from fixed seeds; the evaluator
(trained on all classes of the dataset, never on generated images) says how often they look like the
prompted class, and FD-eval compares them with real test images of those classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core import captions
from core.config import Config
from core.data import class_names
from eval.evalnet import extract_features, judge, load_evaluator
from eval.reference import fd_eval, reference_statistics
from minidiff.diffusion import Diffusion
from minidiff.text2img import TextToImage, generate, seed_range


def recognition(cfg: Config, model: TextToImage, diffusion: Diffusion, prompts: list[str],
                labels: list[int], n_per_prompt: int, evaluator,
                kind: str = "quality") -> tuple[dict, torch.Tensor]:
    """Evaluator accuracy on n_per_prompt samples of each prompt (labels index the dataset's
    classes); the samples' seeds come from the `kind` range (minidiff.text2img.SEED_RANGES)."""
    dc = cfg.diffusion
    all_prompts = [p for p in prompts for _ in range(n_per_prompt)]
    seeds = seed_range(kind, len(all_prompts))
    images = generate(model, diffusion, all_prompts, seeds, cfg.data.resolution, dc.sample_steps,
                      dc.guidance, dc.eta, cfg.run.unet_batch)
    all_labels = torch.tensor([lab for lab in labels for _ in range(n_per_prompt)])
    return judge(evaluator, images, all_labels, list(class_names(cfg.data))), images


def sample_quality(cfg: Config, model: TextToImage, diffusion: Diffusion, classes, device) -> dict:
    """Recognition accuracy and FD-eval of CFG DDIM samples of every class prompt."""
    evaluator = load_evaluator(cfg, device)
    names = class_names(cfg.data)
    prompts = [captions.class_caption(captions.TEMPLATES[cfg.data.dataset][0], c) for c in classes]
    judged, images = recognition(cfg, model, diffusion, prompts, [names.index(c) for c in classes],
                                 cfg.diffusion.quality_samples, evaluator)
    fd = fd_eval(evaluator, images, reference_statistics(cfg, evaluator, "test", classes))
    dc = cfg.diffusion
    return {"recognised": judged, "fd_eval_vs_test": fd, "n_samples": len(images),
            "sampler": f"DDIM {dc.sample_steps} steps, eta {dc.eta}, guidance {dc.guidance}",
            "summary": f"evaluator recognises {judged['accuracy']:.1%} of {len(images)} samples "
                       f"(DDIM-{dc.sample_steps}, guidance {dc.guidance}); FD-eval vs real test "
                       f"{fd:.2f}"}



def concept_fidelity(cfg: Config, model: TextToImage, diffusion: Diffusion, prompt: str, evaluator,
                     concept_real: torch.Tensor, label: int | None) -> tuple[dict, torch.Tensor]:
    """Does the customized model draw the concept? On cfg.customize.fidelity_samples samples of
    `prompt`:
      recognised           evaluator accuracy, the concept class counting as correct (None for a
                           user's concept, which the evaluator does not know: label None);
      feature_similarity   cosine similarity of the mean evaluator features of the samples and of
                           the real concept images (uint8 (N, H, W, 3));
      nearest_similarity   mean over samples of the cosine similarity to the nearest real concept
                           image."""
    labels = [0 if label is None else label]
    judged, images = recognition(cfg, model, diffusion, [prompt], labels,
                                 cfg.customize.fidelity_samples, evaluator, kind="fidelity")
    fake, real = (F.normalize(extract_features(evaluator, x), dim=1)
                  for x in (images, concept_real))
    return {"recognised": None if label is None else judged["accuracy"],
            "mean_confidence": None if label is None else judged["mean_confidence"],
            "feature_similarity": F.cosine_similarity(fake.mean(0), real.mean(0), dim=0).item(),
            "nearest_similarity": (fake @ real.T).max(dim=1).values.mean().item(),
            "n_samples": len(images), "n_concept_images": len(concept_real)}, images
