"""Customize the base model with k images of the held-out concept (`python train.py customize`).

    python train.py customize --method {full,full+prior,lora,custom,ti} --reg {none,functional}

Starts from runs/<preset>/diffusion/last.pt (EMA weights), trains what the method trains on the concept
prompt ("a photo of a <new0>") plus the method's or regularizer's extra term (minidiff/regularizers.py),
and writes runs/<preset>/customize/<method>-<reg>/{custom.pt, samples.png, metrics.json} with the concept
fidelity judged by the evaluator.
"""
from __future__ import annotations

import copy
import time

import torch
from tqdm import tqdm

from core import checkpoint
from core.config import Config
from core.data import base_classes, load_split, to_float
from core.images import save_grid
from core.training import cache_dir, check_finite, count_parameters, setup, stage_dir, write_json
from eval.evaluator import load_evaluator
from minidiff.customize import check_method, prepare, save_customized
from minidiff.quality import concept_fidelity
from minidiff.regularizers import (anchor_prompts, cached_generations, functional_regularization,
                                   noise_prediction_loss, prior_prompt, sample_anchors)
from minidiff.train_diffusion import load_diffusion


def method_schedule(cfg: Config) -> tuple[int, float]:
    """Steps and learning rate: customize.steps/lr where set (>= 0), else the method's own defaults."""
    cc = cfg.customize
    name = {"full+prior": "full"}.get(cc.method, cc.method)
    steps = cc.steps if cc.steps >= 0 else getattr(cc, f"steps_{name}")
    return steps, cc.lr if cc.lr >= 0 else getattr(cc, f"lr_{name}")


def first(values: list):
    return values[0] if values else None


def last(values: list):
    return values[-1] if values else None


def run_dir(cfg: Config):
    return stage_dir(cfg, "customize") / f"{cfg.customize.method}-{cfg.customize.reg}"


def customize(cfg: Config) -> dict:
    device = setup(cfg)
    cc = cfg.customize
    check_method(cc.method, cc.reg)
    base_path = stage_dir(cfg, "diffusion") / "last.pt"
    if not base_path.exists():
        raise FileNotFoundError(f"{base_path} is missing: run `python train.py diffusion --preset {cfg.run.preset}`")
    model, diffusion, _, payload = load_diffusion(base_path, device)
    checkpoint.check_arch(payload, {"data": cfg.data, "clip": cfg.clip, "diffusion": cfg.diffusion}, str(base_path))
    classes = base_classes(cfg.data)
    fingerprint = checkpoint.fingerprint(base_path)
    cache = cache_dir(cfg) / "generations"
    concept_train = load_split(cfg.data, "train", cache_dir(cfg)).only([cfg.data.concept_class]).per_class(cc.k_images)
    x0 = to_float(concept_train.x).to(device)
    prompt = cc.prompt.format(cc.placeholder)

    anchors = anchor_prompts(cfg, classes)
    extra = {}
    if cc.method == "full+prior":  # the base model's samples for the prior prompt, made before training
        prior = prior_prompt(cfg, classes)
        extra["prior"] = (prior, to_float(cached_generations(cache, model, diffusion, [prior] * cc.n_prior_images,
                                                             cfg, fingerprint)).to(device))
    if cc.reg == "functional":
        extra["frozen"] = copy.deepcopy(model).requires_grad_(False).eval()
        if cc.anchor_images == "generated":
            extra["anchor_images"] = to_float(cached_generations(cache, model, diffusion, anchors, cfg,
                                                                 fingerprint)).to(device)
        elif cc.anchor_images != "concept":
            raise ValueError(f"customize.anchor_images={cc.anchor_images!r}; valid choices: concept, generated")

    params = prepare(model, cfg, classes)
    steps, lr = method_schedule(cfg)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    start, history = time.time(), {"loss": [], "functional": []}
    for step in tqdm(range(steps), desc=f"customize {cc.method}/{cc.reg}"):
        loss, terms = customization_loss(cfg, model, diffusion, x0, prompt, anchors, extra)
        check_finite(loss, "customize", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.diffusion.grad_clip)
        opt.step()
        history["loss"].append(loss.item())
        if "functional" in terms:
            history["functional"].append(terms["functional"])
    seconds = time.time() - start

    out = run_dir(cfg)
    model.eval()
    metrics = {"stage": "customize", "method": cc.method, "reg": cc.reg, "steps": steps, "lr": lr,
               "k_images": cc.k_images, "prompt": prompt, "train_seconds": seconds,
               "trainable_parameters": count_parameters(params),
               "unet_parameters": count_parameters(p for n, p in model.unet.named_parameters() if ".base." not in n),
               "first_loss": first(history["loss"]), "final_loss": last(history["loss"]),
               "functional_reg_first": first(history["functional"]),
               "functional_reg_final": last(history["functional"]),
               "base_checkpoint": str(base_path), "base_fingerprint": fingerprint}
    concept_test = load_split(cfg.data, "test", cache_dir(cfg)).only([cfg.data.concept_class])
    fidelity, samples = concept_fidelity(cfg, model, diffusion, prompt, load_evaluator(cfg, device), concept_test.x)
    metrics["fidelity"] = fidelity
    save_grid(samples[:32], out / "samples.png", nrow=8, scale=max(1, 64 // cfg.data.resolution))
    save_customized(out / "custom.pt", model, cfg, base_path, metrics)
    write_json(out / "metrics.json", metrics)
    print(f"customize {cc.method}/{cc.reg}: {steps} steps in {seconds:.0f}s, {metrics['trainable_parameters']:,} "
          f"trainable parameters; evaluator recognises {fidelity['recognised']:.0%} of {fidelity['n_samples']} "
          f"samples of '{prompt}' as {cfg.data.concept_class}")
    return metrics


def customization_loss(cfg: Config, model, diffusion, x0, prompt, anchors, extra) -> tuple[torch.Tensor, dict]:
    """L_concept (+ lambda_pp L_prior) (+ lambda_fr L_functional) on one batch; see minidiff/regularizers.py."""
    cc = cfg.customize
    x = torch.where(torch.rand(len(x0), 1, 1, 1, device=x0.device) < 0.5, x0.flip(3), x0)
    loss = noise_prediction_loss(model, diffusion, x, [prompt] * len(x))
    terms = {}
    if "prior" in extra:
        prior, images = extra["prior"]
        pick = torch.randint(len(images), (len(x0),))
        loss = loss + cc.lambda_pp * noise_prediction_loss(model, diffusion, images[pick], [prior] * len(pick))
    if "frozen" in extra:
        pick = sample_anchors(anchors, len(x0), cc.empty_anchor_prob)
        prompts = [anchors[i] for i in pick]
        images = extra["anchor_images"][pick] if "anchor_images" in extra else x
        reg = functional_regularization(model, extra["frozen"], diffusion, images, prompts)
        terms["functional"] = reg.item()
        loss = loss + cc.lambda_fr * reg
    return loss, terms
