"""The drift stages: the base model's side of a drift measurement and its floor (`python train.py
drift-floor`), then each customization's drift against it (`python train.py drift`, or
`python evaluate.py drift --custom PATH`); the protocol itself is minidiff/open_world.py.

  runs/<preset>/drift-floor/b<base>-s<seed>/  side.pt: the base model's predictions and generations
                                              on noise bank <seed>, and on the floor's own bank
  runs/<preset>/drift/<customization>/        metrics.json, pairs.png (base left, customized right)

A customized checkpoint fixes the settings it was trained with: the class split that its
regularizer's anchors followed, its concept, its base model. Measuring it under other ones would
count an anchored class as held out, so a difference is refused.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from core import checkpoint
from core.config import Config
from core.data import base_classes, to_float
from core.errors import CheckpointMismatch
from core.images import save_grid
from core.training import setup
from eval.evalnet import evaluator_path
from minidiff.clip import class_embeddings, zero_shot_predict
from minidiff.open_world import base_sides, classify, measure_drift, templates, test_images
from minidiff.train_clip import clip_path, load_clip
from minidiff.train_customize import (customization_dir, customization_name, customized_base,
                                      load_customized)
from minidiff.train_diffusion import base_model_path, base_name, load_diffusion
from pipeline.runs import require_finished, run_key, run_once, stage_dir

MEASURED = ("data.concept_class", "classifier", "drift", "diffusion.sample_steps",
            "diffusion.guidance")
FIXED_BY_CUSTOMIZATION = ("data.dataset", "data.resolution", "data.concept_class",
                          "drift.heldout_classes", "drift.anchor_templates", "diffusion.seed",
                          "run.seed")


def floor_dir(cfg: Config) -> Path:
    return stage_dir(cfg, "drift-floor", f"{base_name(cfg)}-s{cfg.customize.seed}")


def drift_floor(cfg: Config, force: bool = False) -> dict:
    """The base model's side of drift bank customize.seed and its floor (another bank), once per
    base model and bank; every customization of that base and seed is measured against it."""
    def work(run):
        start = time.time()
        model, diffusion, _, _ = load_diffusion(base_path, setup(cfg))
        sides = base_sides(cfg, model, diffusion, cfg.customize.seed)
        checkpoint.save(run.folder / "side.pt",
                        {"kind": "drift-side", "config": cfg.to_dict(), "step": 0, **sides})
        test, labels = test_images(cfg)
        same = [(a == b).double().mean().item()
                for a, b in zip(sides["drift"]["pred"], sides["floor"]["pred"])]
        summary = (f"base {base_name(cfg)}, bank {cfg.customize.seed}: two noise banks agree on "
                   f"{same[0]:.1%} of {len(labels)} test images (anchored template), "
                   f"{same[1]:.1%} (held-out template)")
        print(f"drift-floor {base_name(cfg)}-s{cfg.customize.seed}: {summary}")
        return {"stage": "drift-floor", "base": base_name(cfg), "bank": cfg.customize.seed,
                "summary": summary, "agreement": same, "seconds": time.time() - start}
    base_path = base_model_path(cfg)
    key = run_key(cfg, MEASURED + ("customize.seed",), base=base_path)
    return run_once(floor_dir(cfg), key, force,
                    f"drift-floor {base_name(cfg)}-s{cfg.customize.seed}", work)


def check_fixed(cfg: Config, custom_cfg: Config, path) -> None:
    """Refuse to measure a customization under settings its checkpoint fixes otherwise."""
    def get(c, name):
        section, field = name.split(".")
        return getattr(getattr(c, section), field)
    diffs = [f"{n}: {get(custom_cfg, n)!r} in the checkpoint, {get(cfg, n)!r} here"
             for n in FIXED_BY_CUSTOMIZATION if get(custom_cfg, n) != get(cfg, n)]
    if diffs:
        raise CheckpointMismatch(
            f"{path} was customized under other settings than this measurement's: "
            f"{'; '.join(diffs)}; drop those overrides (the checkpoint fixes them)")


def drift_stage(cfg: Config, force: bool = False, custom_path=None) -> dict:
    """measure_drift of the customized checkpoint (default: cfg's customization run) against its
    base model's drift-floor side, written to runs/<preset>/drift/<customization>/ with pairs.png:
    one row per base class under the anchored template, the base model's images on the left, the
    customized model's (same seeds) on the right."""
    custom_path = Path(custom_path or customization_dir(cfg) / "custom.pt")
    custom = checkpoint.load(custom_path, kind="customized")
    custom_cfg = Config.from_dict(custom["config"])
    check_fixed(cfg, custom_cfg, custom_path)
    cfg = cfg.updated("customize", **vars(custom_cfg.customize))
    side = require_finished(
        floor_dir(cfg), "side.pt",
        f"python train.py drift-floor --preset {cfg.run.preset} "
        f"--diffusion.seed={cfg.diffusion.seed} --customize.seed={cfg.customize.seed}")
    base_path = customized_base(custom_path, custom)
    name = customization_name(custom_cfg)

    def work(run):
        start, device = time.time(), setup(cfg)
        model, diffusion, _ = load_customized(custom_path, base_path, device)
        base = checkpoint.load(side, kind="drift-side")
        result, before, after = measure_drift(cfg, model, diffusion, custom_cfg, custom["metrics"],
                                              base, device)
        n, shown = cfg.drift.pairs, min(cfg.drift.pairs, 6)
        # a white tile between the halves
        gap = torch.full((1, *before.shape[1:]), 255, dtype=torch.uint8)
        rows = [torch.cat([before[i * n:i * n + shown], gap, after[i * n:i * n + shown]])
                for i in range(len(base_classes(cfg.data)))]
        save_grid(torch.cat(rows), run.folder / "pairs.png", nrow=2 * shown + 1,
                  scale=max(1, 64 // cfg.data.resolution))
        held, floor = (result["semantic"]["heldout_classes"],
                       result["semantic_floor"]["heldout_classes"])
        result["summary"] = (f"held-out classes: accuracy {held['accuracy_before']:.1%} -> "
                             f"{held['accuracy_after']:.1%}, flip rate {held['flip_rate']:.1%} "
                             f"(floor {floor['flip_rate']:.1%}); anchored flip rate "
                             f"{result['semantic']['anchored']['flip_rate']:.1%}; "
                             "concept picked by the diffusion classifier "
                             f"{result['fidelity']['diffusion_classifier_concept_accuracy']:.0%}")
        result["seconds"] = time.time() - start
        print(f"drift {name}: {result['summary']}")
        return result
    key = run_key(cfg, MEASURED, custom=custom_path, base=base_path, floor=side,
                  evaluator=evaluator_path(cfg))
    return run_once(stage_dir(cfg, "drift", name), key, force, f"drift {name}", work)


def benchmark_classifier(cfg: Config, ckpt, device="cpu") -> dict:
    """Accuracy and UNet passes per image of the full timestep grid vs the adaptive schedule on the
    same test images (anchored template), with the tiny-CLIP zero-shot accuracy as a reference
    (`python evaluate.py classify`)."""
    model, diffusion, _, _ = load_diffusion(ckpt, device)
    classes = base_classes(cfg.data)
    template = templates(cfg)[0]
    prompts = [template.format(c) for c in classes]
    test, labels = test_images(cfg)
    clip, tokenizer = load_clip(clip_path(cfg), cfg, device)
    clip_pred = zero_shot_predict(clip, to_float(test.x),
                                  class_embeddings(clip, tokenizer, classes, [template]))
    result = {"checkpoint": str(ckpt), "n_images": len(labels), "n_classes": len(classes),
              "threads": torch.get_num_threads(), "device": str(device), "template": template,
              "clip_zero_shot_accuracy": (clip_pred == labels).double().mean().item(),
              "schedule": {k: getattr(cfg.classifier, k)
                           for k in ("n_timesteps", "stages", "keep", "loss")}}
    for name, adaptive in (("full", False), ("adaptive", True)):
        start = time.time()
        out = classify(cfg, model, diffusion, prompts, test.x, seed=0, adaptive=adaptive)
        result[name] = {"accuracy": (out["pred"] == labels).double().mean().item(),
                        "unet_passes_per_image": out["unet_passes"], "seconds": time.time() - start}
    result["pass_reduction"] = (result["full"]["unet_passes_per_image"]
                                / result["adaptive"]["unet_passes_per_image"])
    result["accuracy_lost"] = result["full"]["accuracy"] - result["adaptive"]["accuracy"]
    return result
