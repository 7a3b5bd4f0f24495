"""Customize the base model with k images of the held-out concept (`python train.py customize`).

    python train.py customize --customize.method={full,full+prior,lora,custom,ti} --customize.reg={none,functional}

Starts from the finished base model (EMA weights), trains what the method trains on the concept prompt
("a photo of a <new0>") plus the method's or regularizer's extra term (minidiff/regularizers.py), and
writes runs/<preset>/customize/<method>-<reg>/{custom.pt, samples.png, metrics.json} with the concept
fidelity judged by the evaluator.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from tqdm import tqdm

from core import checkpoint
from core.cache import cache_root, cached
from core.config import Config
from core.data import IMAGE_FIELDS, base_classes, class_names, load_split, to_float
from core.images import save_grid
from core.presets import customize_schedule
from core.runs import RunFolder, run_key, stage_dir
from core.training import FUSED, check_finite, count_parameters, mix_seed, random_flip, setup
from core.user_images import load_image_folder
from eval.evalnet import evaluator_path, load_evaluator
from minidiff.customize import prepare, save_customized
from minidiff.quality import concept_fidelity
from minidiff.regularizers import (anchor_prompts, functional_regularization, noise_prediction_loss, prior_prompt,
                                   sample_anchors, weight_change)
from minidiff.text2img import generate, seed_range
from minidiff.train_diffusion import base_model_path, load_diffusion


def run_name(cfg: Config) -> str:
    """'lora-functional-s0': method, regularizer, repeat seed (and '-<folder>' for a user's concept)."""
    cc = cfg.customize
    return f"{cc.method}-{cc.reg}-s{cc.seed}" + (f"-{Path(cc.images).name}" if cc.images else "")


def run_dir(cfg: Config):
    return stage_dir(cfg, "customize", run_name(cfg))


def concept_images(cfg: Config, split: str) -> torch.Tensor:
    """uint8 (N, H, W, 3) images of the new concept: the user's folder (customize.images; training images
    only: a few photos have no held-out part), else the held-out class's images of `split` (train: the
    first customize.k_images)."""
    if cfg.customize.images:
        return load_image_folder(cfg.customize.images, cfg.data.resolution)
    data = load_split(cfg.data, split, cache_root(cfg)).only([cfg.data.concept_class])
    return data.per_class(cfg.customize.k_images).x if split == "train" else data.x


def concept_name(cfg: Config) -> str:
    """The concept's name in results: the held-out class, or 'folder <name>' for a user's images."""
    return f"folder {Path(cfg.customize.images).name}" if cfg.customize.images else cfg.data.concept_class


def base_generations(cfg: Config, model, diffusion, prompts: list[str], seeds: list[int], base_fingerprint: str):
    """The base model's DDIM samples of (prompt, seed) pairs, (N, H, W, 3) uint8, made once (core.cache)."""
    dc = cfg.diffusion
    key = ["generations", base_fingerprint, prompts, seeds, dc.sample_steps, dc.guidance, dc.eta]
    return cached(cache_root(cfg), "generations", key, lambda: {"images": generate(
        model, diffusion, prompts, seeds, cfg.data.resolution, dc.sample_steps, dc.guidance, dc.eta,
        cfg.run.unet_batch)})["images"]


def customize(cfg: Config, force: bool = False) -> dict:
    """Customize (or, if finished before with the same settings, skip); returns the run's metrics."""
    steps, lr = customize_schedule(cfg)
    base_path = base_model_path(cfg)
    anchors = ("drift.heldout_classes", "drift.anchor_templates")  # what the regularizer's anchors may name
    inputs = {"concept": cfg.customize.images} if cfg.customize.images else {}
    key = run_key(cfg, IMAGE_FIELDS + ("data.concept_class", "customize", "diffusion") + anchors, base=base_path,
                  evaluator=evaluator_path(cfg), **inputs)
    key["customize.schedule"] = [steps, lr]
    name = f"customize {run_name(cfg)}"
    with RunFolder(run_dir(cfg), key, force, name) as run:
        if run.finished():
            return run.result
        if lr == 0:
            print(f"{name}: customize.lr=0, a control run: the model does not change")
        return run.finish(_customize(cfg, run, base_path, steps, lr))


def _customize(cfg: Config, run: RunFolder, base_path, steps: int, lr: float) -> dict:
    device = setup(cfg)
    cc = cfg.customize
    torch.manual_seed(mix_seed(cfg.run.seed, cc.seed))  # each repeat draws its own batches, t and noise
    model, diffusion, _, payload = load_diffusion(base_path, device)
    checkpoint.check_arch(payload, {"data": cfg.data, "clip": cfg.clip, "diffusion": cfg.diffusion}, str(base_path))
    classes = base_classes(cfg.data)
    fingerprint = checkpoint.fingerprint(base_path)
    x0 = to_float(concept_images(cfg, "train")).to(device)
    prompt = cc.prompt.format(cc.placeholder)

    anchors = anchor_prompts(cfg, classes)
    extra = {}
    if cc.method == "full+prior":  # the base model's samples for the prior prompt, made before training
        prior = prior_prompt(cfg, classes)
        images = base_generations(cfg, model, diffusion, [prior] * cc.n_prior_images,
                                  seed_range("prior", cc.n_prior_images), fingerprint)
        extra["prior"] = (prior, to_float(images).to(device))
    if cc.reg == "functional":
        extra["frozen"] = copy.deepcopy(model).requires_grad_(False).eval()
        if cc.anchor_images == "generated":  # images_per_anchor samples of every anchor, more of the empty one
            repeats = [cc.images_per_anchor] * (len(anchors) - 1) + [cc.empty_anchor_images]
            prompts = [a for a, r in zip(anchors, repeats) for _ in range(r)]
            images = base_generations(cfg, model, diffusion, prompts, seed_range("anchor", len(prompts)),
                                      fingerprint)
            count = torch.tensor(repeats)
            first = torch.cumsum(count, 0) - count                   # anchor i's images: first[i], ... + count[i]
            extra["anchor_images"] = (to_float(images).to(device), first, count)
    params = prepare(model, cfg, classes)
    if cc.reg == "l2":
        extra["initial"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, **FUSED)
    model.eval()  # dropout off: the trained model and its frozen copy compute the same function at step 0
    start, history = time.time(), {"loss": [], "regularizer": []}
    for step in tqdm(range(steps), desc=f"customize {run_name(cfg)}"):
        loss, reg = customization_loss(cfg, model, diffusion, x0, prompt, anchors, extra)
        check_finite(loss, "customize", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.diffusion.grad_clip, foreach=True)
        opt.step()
        history["loss"].append(loss.item())
        history["regularizer"].append(reg)
    seconds = time.time() - start

    metrics = {"stage": "customize", "run": run_name(cfg), "method": cc.method, "reg": cc.reg, "seed": cc.seed,
               "steps": steps, "lr": lr,
               "concept": concept_name(cfg), "k_images": len(x0), "prompt": prompt, "train_seconds": seconds,
               "trainable_parameters": count_parameters(params),
               "unet_parameters": count_parameters(p for n, p in model.unet.named_parameters() if ".base." not in n),
               "first_loss": history["loss"][0], "final_loss": history["loss"][-1],
               "regularizer_first": history["regularizer"][0], "regularizer_final": history["regularizer"][-1],
               "base_checkpoint": str(base_path), "base_fingerprint": fingerprint}
    label = None if cc.images else class_names(cfg.data).index(cfg.data.concept_class)
    fidelity, samples = concept_fidelity(cfg, model, diffusion, prompt, load_evaluator(cfg, device),
                                         concept_images(cfg, "test"), label)
    metrics["fidelity"] = fidelity
    recognised = "" if label is None else f"evaluator recognises {fidelity['recognised']:.0%} of them as " \
                                          f"{cfg.data.concept_class}; "
    metrics["summary"] = (f"{steps} steps in {seconds:.0f}s, {metrics['trainable_parameters']:,} trainable "
                          f"parameters; {fidelity['n_samples']} samples of '{prompt}': {recognised}nearest-feature "
                          f"similarity to the concept images {fidelity['nearest_similarity']:.2f}")
    save_grid(samples[:32], run.folder / "samples.png", nrow=8, scale=max(1, 64 // cfg.data.resolution))
    if run.main:
        save_customized(run.folder / "custom.pt", model, cfg, base_path, metrics)
    print(f"customize {run_name(cfg)}: {metrics['summary']}")
    return metrics


def customization_loss(cfg: Config, model, diffusion, x0, prompt, anchors, extra) -> tuple[torch.Tensor, float | None]:
    """L_concept (+ lambda_pp L_prior) (+ lambda_fr L_functional or lambda_l2 L_weights) on one batch, and the
    regularizer's value (None without one); see minidiff/regularizers.py."""
    cc = cfg.customize
    x = random_flip(x0)
    loss = noise_prediction_loss(model, diffusion, x, [prompt] * len(x))
    reg = None
    if "prior" in extra:
        prior, images = extra["prior"]
        pick = torch.randint(len(images), (len(x0),))
        loss = loss + cc.lambda_pp * noise_prediction_loss(model, diffusion, images[pick], [prior] * len(pick))
    if "frozen" in extra:
        chosen = sample_anchors(anchors, len(x0), cc.empty_anchor_prob)
        if "anchor_images" in extra:  # one of the base model's images of each chosen anchor, at random
            images, first, count = extra["anchor_images"]
            images = images[first[chosen] + (torch.rand(len(chosen)) * count[chosen]).long()]
        else:
            images = x
        guidance = cfg.diffusion.guidance if cc.functional_target == "guided" else None
        reg = functional_regularization(model, extra["frozen"], diffusion, images, [anchors[i] for i in chosen],
                                        guidance)
        loss = loss + cc.lambda_fr * reg
    if "initial" in extra:
        reg = weight_change(model, extra["initial"])
        loss = loss + cc.lambda_l2 * reg
    return loss, None if reg is None else reg.item()
