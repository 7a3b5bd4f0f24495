"""Customize a base model with k images of the held-out concept (`python train.py customize`).

    python train.py customize --customize.method={full,full+prior,lora,custom,ti}
                              --customize.reg={none,functional,l2}

Starts from a finished base model (EMA weights, diffusion.seed picks which), trains what the method
trains (minidiff/customize.py) on the concept prompt ("a photo of a <new0>") plus the regularizer's
term (minidiff/regularizers.py), then judges concept fidelity with the evaluator. Writes
runs/<preset>/customize/<name>/{custom.pt, samples.png, metrics.json}, <name> as in
customization_name.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from core import checkpoint
from core.cache import cache_root, cached
from core.config import Config, field_default
from core.data import base_classes, class_names, load_split, to_float
from core.images import save_grid
from core.presets import customize_schedule
from core.training import FUSED, check_finite, count_parameters, mix_seed, random_flip, setup
from core.user_images import folder_digest, load_image_folder
from eval.evalnet import evaluator_path, load_evaluator
from minidiff.customize import prepare, trainable_state
from minidiff.lora import merge_lora
from minidiff.quality import concept_fidelity
from minidiff.regularizers import (anchor_distances, anchor_prompts, anchored_templates,
                                   distillation, functional_regularization, heldout_split,
                                   noise_prediction_loss, prior_prompt, random_subjects,
                                   replay_loss, sample_anchors, subject_distribution, weight_change)
from minidiff.text2img import SUBJECT, TextToImage, generate, seed_range
from minidiff.train_diffusion import base_model_path, base_name, load_diffusion
from pipeline.runs import RunFolder, run_key, run_once, stage_dir


# the regularizers that use anchor prompts and images
ANCHORED_REGS = ("functional", "replay", "distill")
WEIGHTS = {"functional": "lambda_fr", "replay": "lambda_replay", "distill": "lambda_distill",
           "l2": "lambda_l2"}


@dataclass
class Regularizer:
    """What the extra loss term needs, made before training (None where the method or regularizer
    has none)."""
    # prior preservation: prompt, base-model images
    prior: tuple[str, torch.Tensor] | None = None
    # anchored regularizers: the base model, frozen
    frozen: TextToImage | None = None
    # images, first, count per anchor
    anchor_images: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    # random subjects: (mu, sigma) per dimension
    subjects: tuple[torch.Tensor, torch.Tensor] | None = None
    # distillation: the anchored classes' conditioning, one (states, pooled) per anchored template
    class_conds: list | None = None
    # weight-space L2: the trainable tensors at step 0
    initial: dict[str, torch.Tensor] | None = None


def anchor_batch(cfg: Config, anchors: list[str], reg: Regularizer, x: torch.Tensor):
    """n anchor images and their conditioning: named anchor prompts (the empty one with probability
    empty_anchor_prob) with their own images or any anchor's (anchor_pairing), or random subjects in
    an anchored template with any anchor's image (anchor_source="random"); the concept images where
    anchor_images="concept"."""
    cc, n = cfg.customize, len(x)
    if cc.anchor_source == "random":
        templates = anchored_templates(cfg)
        empty = (torch.rand(n) < cc.empty_anchor_prob).tolist()
        prompts = ["" if e else templates[i].format(SUBJECT)
                   for e, i in zip(empty, torch.randint(len(templates), (n,)))]
        cond = reg.frozen.encode(prompts, random_subjects(*reg.subjects, n, cc.random_width))
        chosen = None
    else:
        chosen = sample_anchors(anchors, n, cc.empty_anchor_prob)
        cond = reg.frozen.encode([anchors[i] for i in chosen])
    if reg.anchor_images is None:
        return x, cond
    images, first, count = reg.anchor_images
    if chosen is None or cc.anchor_pairing == "cross":
        return images[torch.randint(len(images), (n,))], cond
    # one of its own, at random
    return images[first[chosen] + (torch.rand(n) * count[chosen]).long()], cond


def customization_loss(cfg: Config, model, diffusion, x0, prompt, anchors, reg: Regularizer):
    """L_concept (+ lambda_pp L_prior) (+ the regularizer's weighted term) on one batch, and the
    regularizer's value (None without one); see minidiff/regularizers.py."""
    cc = cfg.customize
    x = random_flip(x0)
    loss = noise_prediction_loss(model, diffusion, x, [prompt] * len(x))
    value = None
    if reg.prior is not None:
        prior, images = reg.prior
        pick = torch.randint(len(images), (len(x0),))
        loss = loss + cc.lambda_pp * noise_prediction_loss(model, diffusion, images[pick],
                                                           [prior] * len(pick))
    if cc.reg in ANCHORED_REGS:
        images, cond = anchor_batch(cfg, anchors, reg, x)
        if cc.reg == "functional":
            guidance = cfg.diffusion.guidance if cc.functional_target == "guided" else None
            value = functional_regularization(model, reg.frozen, diffusion, images, cond, guidance)
        elif cc.reg == "replay":
            value = replay_loss(model, diffusion, images, cond)
        else:
            value = distillation(model, reg.frozen, diffusion, images,
                                 reg.class_conds[int(torch.randint(len(reg.class_conds), ()))])
    if cc.reg == "l2":
        value = weight_change(model, reg.initial)
    if value is not None:
        loss = loss + getattr(cc, WEIGHTS[cc.reg]) * value
    return loss, None if value is None else value.item()


def _customize(cfg: Config, run: RunFolder, base_path, steps: int, lr: float) -> dict:
    device = setup(cfg)
    cc = cfg.customize
    # each repeat: its own draws
    torch.manual_seed(mix_seed(cfg.run.seed, cfg.diffusion.seed, cc.seed))
    model, diffusion, _, payload = load_diffusion(base_path, device)
    checkpoint.check_arch(payload, {"data": cfg.data, "clip": cfg.clip, "diffusion": cfg.diffusion},
                          str(base_path))
    classes = base_classes(cfg.data)
    x0 = to_float(concept_images(cfg, "train")).to(device)
    prompt = cc.prompt.format(cc.placeholder)
    anchors = anchor_prompts(cfg)
    reg = regularizer_inputs(cfg, model, diffusion, anchors, checkpoint.fingerprint(base_path),
                             device)
    params = prepare(model, cfg, classes)
    if cc.reg == "l2":
        reg.initial = {n: p.detach().clone() for n, p in model.named_parameters()
                       if p.requires_grad}
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, **FUSED)
    # dropout off: the trained model and its frozen copy compute the same function at step 0
    model.eval()
    start, history = time.time(), {"loss": [], "regularizer": []}
    bar = tqdm(range(steps), desc=f"customize {customization_name(cfg)}")
    for step in bar:
        loss, value = customization_loss(cfg, model, diffusion, x0, prompt, anchors, reg)
        check_finite(loss, "customize", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.diffusion.grad_clip, foreach=True)
        opt.step()
        history["loss"].append(loss.item())
        history["regularizer"].append(value)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{history['loss'][-1]:.4f}",
                            reg="-" if value is None else f"{value:.2e}")
    seconds = time.time() - start

    metrics = {"stage": "customize", "name": customization_name(cfg), "base": base_name(cfg),
               "method": cc.method, "reg": cc.reg, "regularizer": regularizer_name(cfg),
               "seed": cc.seed, "steps": steps, "lr": lr, "concept": concept_name(cfg),
               "k_images": len(x0), "prompt": prompt, "train_seconds": seconds,
               "trainable_parameters": count_parameters(params),
               "unet_parameters": count_parameters(p for n, p in model.unet.named_parameters()
                                                   if ".base." not in n),
               "first_loss": history["loss"][0], "final_loss": history["loss"][-1],
               "regularizer_first": history["regularizer"][0],
               "regularizer_final": history["regularizer"][-1],
               "base_fingerprint": checkpoint.fingerprint(base_path)}
    if reg.subjects is not None and cc.anchor_source == "random":
        # each class under the random subjects
        metrics["anchor_distances"] = anchor_distances(reg.frozen, cfg)
    label = None if cc.images else class_names(cfg.data).index(cfg.data.concept_class)
    fidelity, samples = concept_fidelity(cfg, model, diffusion, prompt, load_evaluator(cfg, device),
                                         concept_images(cfg, "test"), label)
    metrics["fidelity"] = fidelity
    recognised = "" if label is None else (f"evaluator recognises {fidelity['recognised']:.0%} "
                                           f"of them as {cfg.data.concept_class}; ")
    metrics["summary"] = (f"{steps} steps in {seconds:.0f}s, {metrics['trainable_parameters']:,} "
                          f"trainable parameters; {fidelity['n_samples']} samples of '{prompt}': "
                          f"{recognised}nearest-feature similarity to the concept images "
                          f"{fidelity['nearest_similarity']:.2f}")
    save_grid(samples[:32], run.folder / "samples.png", nrow=8,
              scale=max(1, 64 // cfg.data.resolution))
    if run.main:
        save_customized(run.folder / "custom.pt", model, cfg, base_path, metrics)
    print(f"customize {customization_name(cfg)}: {metrics['summary']}")
    return metrics


def regularizer_inputs(cfg: Config, model, diffusion, anchors, base_fingerprint,
                       device) -> Regularizer:
    """Everything the method's or regularizer's term needs, made once before training (base-model
    images of the prior prompt or of every anchor come from the cache, so repeats share them)."""
    cc = cfg.customize
    reg = Regularizer()
    if cc.method == "full+prior":  # the base model's samples for the prior prompt
        prior = prior_prompt(cfg)
        images = base_generations(cfg, model, diffusion, [prior] * cc.n_prior_images,
                                  seed_range("prior", cc.n_prior_images), base_fingerprint)
        reg.prior = (prior, to_float(images).to(device))
    if cc.reg in ANCHORED_REGS:
        reg.frozen = copy.deepcopy(model).requires_grad_(False).eval()
        reg.subjects = subject_distribution(reg.frozen, cfg)
        with torch.no_grad():
            reg.class_conds = [reg.frozen.encode([t.format(c) for c in heldout_split(cfg)[0]])
                               for t in anchored_templates(cfg)]
        # images_per_anchor samples of every anchor, more of the empty one
        if cc.anchor_images == "generated":
            repeats = [cc.images_per_anchor] * (len(anchors) - 1) + [cc.empty_anchor_images]
            prompts = [a for a, r in zip(anchors, repeats) for _ in range(r)]
            images = base_generations(cfg, model, diffusion, prompts,
                                      seed_range("anchor", len(prompts)), base_fingerprint)
            count = torch.tensor(repeats)
            first = torch.cumsum(count, 0) - count  # anchor i's images: first[i], ... + count[i]
            reg.anchor_images = (to_float(images).to(device), first, count)
    return reg


# ----------------------------------------------------------------------------------- data and names

def regularizer_name(cfg: Config) -> str:
    """'functional', 'functional+random', 'replay+cross-w0.3', ...: the regularizer, its anchor
    options where they differ from the defaults, and its weight where that does (every such run is a
    condition of its own)."""
    cc = cfg.customize
    name = cc.reg
    if cc.reg in ANCHORED_REGS:
        options = {"anchor_source": "random", "anchor_pairing": "cross",
                   "functional_target": "guided"}
        name += "".join(f"+{value}" for field, value in options.items()
                        if getattr(cc, field) == value)
        for field, tag in (("empty_anchor_prob", "empty"), ("random_width", "width"),
                           ("anchor_images", "")):
            if getattr(cc, field) != field_default(f"customize.{field}"):
                name += f"+{tag}{getattr(cc, field):g}" if tag else f"+{getattr(cc, field)}"
    weight = WEIGHTS.get(cc.reg)
    if weight and getattr(cc, weight) != field_default(f"customize.{weight}"):
        name += f"-w{getattr(cc, weight):g}"
    return name


def customization_name(cfg: Config) -> str:
    """'b0-lora-functional-s0': base model, method, regularizer (regularizer_name), repeat seed (and
    '-<folder>' for a user's concept)."""
    cc = cfg.customize
    own = f"-{Path(cc.images).name}" if cc.images else ""
    return f"{base_name(cfg)}-{cc.method}-{regularizer_name(cfg)}-s{cc.seed}{own}"


def customization_dir(cfg: Config) -> Path:
    return stage_dir(cfg, "customize", customization_name(cfg))


def concept_images(cfg: Config, split: str) -> torch.Tensor:
    """uint8 (N, H, W, 3) images of the new concept: the user's folder (customize.images; training
    images only: a few photos have no held-out part), else the held-out class's images of `split`
    (train: the first customize.k_images)."""
    if cfg.customize.images:
        return load_image_folder(cfg.customize.images, cfg.data.resolution)
    data = load_split(cfg.data, split, cache_root(cfg)).only([cfg.data.concept_class])
    return data.per_class(cfg.customize.k_images).x if split == "train" else data.x


def concept_name(cfg: Config) -> str:
    """The concept's name in results: the held-out class, or 'folder <name>' for a user's images."""
    return (f"folder {Path(cfg.customize.images).name}" if cfg.customize.images
            else cfg.data.concept_class)


def base_generations(cfg: Config, model, diffusion, prompts: list[str], seeds: list[int],
                     base_fingerprint: str):
    """The base model's DDIM samples of (prompt, seed) pairs, (N, H, W, 3) uint8, made once
    (core.cache)."""
    dc = cfg.diffusion
    key = ["generations", base_fingerprint, prompts, seeds, dc.sample_steps, dc.guidance, dc.eta]
    return cached(cache_root(cfg), "generations", key, lambda: {"images": generate(
        model, diffusion, prompts, seeds, cfg.data.resolution, dc.sample_steps, dc.guidance, dc.eta,
        cfg.run.unet_batch)})["images"]


# -------------------------------------------------------------------------------------- checkpoints

def save_customized(path, model: TextToImage, cfg: Config, base_path, metrics: dict) -> None:
    """Only what the method trained (the delta) and which base it was trained on: its fingerprint,
    and its path both as given and relative to the customized checkpoint (so a moved output folder
    still loads)."""
    relative = os.path.relpath(Path(base_path).resolve(), Path(path).resolve().parent)
    checkpoint.save(path, {"kind": "customized", "config": cfg.to_dict(),
                           "step": metrics.get("steps", 0),
                           "method": cfg.customize.method, "reg": cfg.customize.reg,
                           "base_path": str(base_path), "base_relative_path": relative,
                           "base_fingerprint": checkpoint.fingerprint(base_path),
                           "delta": trainable_state(model), "metrics": metrics})


def customized_base(path, payload: dict) -> Path:
    """The base checkpoint a customized one was made from: the stored path, or, where the output
    folder has moved, the same file found relative to the customized checkpoint."""
    stored, relative = payload.get("base_path"), payload.get("base_relative_path")
    if not isinstance(stored, str) or not stored:
        raise checkpoint.CheckpointMismatch(
            f"{path} does not record its base model (no base_path): it was not "
            f"written by `train.py customize`; customize again to remake it")
    if Path(stored).exists():
        return Path(stored)
    if isinstance(relative, str) and relative and (Path(path).parent / relative).exists():
        return Path(path).parent / relative
    raise checkpoint.CheckpointMismatch(
        f"{path}: its base model {stored} does not exist (nor relative to it); "
        f"put it back there, or sample with `evaluate.py sample --ckpt BASE "
        f"--custom {path}`")


def load_customized(path, base_path=None, device="cpu",
                    merge: bool = True) -> tuple[TextToImage, object, Config]:
    """Base model + stored delta -> (customized TextToImage in eval mode, Diffusion, config).

    base_path defaults to the one recorded at training time; a base with another fingerprint is
    refused. LoRA adapters are merged into the weights for inference unless merge=False.
    """
    payload = checkpoint.load(path, kind="customized")
    missing = [k for k in ("config", "delta", "base_fingerprint") if k not in payload]
    if missing or not isinstance(payload["delta"], dict):
        raise checkpoint.CheckpointMismatch(
            f"{path} is not a complete customized checkpoint (it lacks "
            f"{', '.join(missing) or 'a delta dict'}); customize again to remake it")
    base_path = Path(base_path) if base_path else customized_base(path, payload)
    found = checkpoint.fingerprint(base_path)
    if found != payload.get("base_fingerprint"):
        raise checkpoint.CheckpointMismatch(
            f"{path} was customized from a base checkpoint with fingerprint "
            f"{payload.get('base_fingerprint')}, but {base_path} has fingerprint {found}: "
            "load it on top of the base it was trained from")
    model, diffusion, _, _ = load_diffusion(base_path, device)
    cfg = Config.from_dict(payload["config"])
    prepare(model, cfg, base_classes(cfg.data))
    missing = set(payload["delta"]) - {name for name, _ in model.named_parameters()}
    if missing:
        raise checkpoint.CheckpointMismatch(
            f"{path}: parameters {sorted(missing)[:5]} do not exist in the model")
    state = model.state_dict()
    state.update({k: v.to(state[k].device) for k, v in payload["delta"].items()})
    model.load_state_dict(state)
    if merge:
        merge_lora(model.unet)
    return model.requires_grad_(False).eval(), diffusion, cfg


# ---------------------------------------------------------------------------------------- the stage

def customize(cfg: Config, force: bool = False) -> dict:
    """Customize (or, if finished before with the same settings, skip); returns the run's
    metrics."""
    steps, lr = customize_schedule(cfg)
    base_path = base_model_path(cfg)
    # what the regularizer's anchors may name
    anchors = ("drift.heldout_classes", "drift.anchor_templates")
    digests = {"concept": folder_digest(cfg.customize.images)} if cfg.customize.images else {}
    key = run_key(cfg, ("data.concept_class", "customize", "diffusion") + anchors, digests,
                  base=base_path, evaluator=evaluator_path(cfg))
    key["customize.schedule"] = [steps, lr]
    name = f"customize {customization_name(cfg)}"
    if lr == 0:
        print(f"{name}: customize.lr=0, a control run: the model does not change")
    return run_once(customization_dir(cfg), key, force, name,
                    lambda run: _customize(cfg, run, base_path, steps, lr))
