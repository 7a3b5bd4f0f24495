"""Measure what a customization changed outside the new concept (`python evaluate.py drift`).

Protocol:
  semantic    the diffusion classifier of the base and of the customized model on the same real test
              images of the base classes (eval.drift.semantic_drift); its noise floor is the base model
              classified twice with different noise banks; the tiny-CLIP zero-shot accuracy on the same
              images is a reference column.
  appearance  paired DDIM (eta = 0) generations, every base-class prompt x seeds 0..N-1, base vs customized
              (eval.drift.appearance_drift); the "unrelated" reference compares base images of disjoint
              seeds (what a metric reads for images that share nothing but the prompt).
  fidelity    the concept's held-out real images classified among the base prompts plus the concept prompt.
Everything about the base model is computed once and cached per base checkpoint.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from core import checkpoint
from core.cache import cache_root, cached
from core.config import Config
from core.data import IMAGE_FIELDS, base_classes, class_names, load_split, to_float
from core.images import save_grid
from core.runs import RunFolder, run_key, stage_dir
from core.training import setup
from eval.drift import appearance_drift, class_distances, semantic_drift
from eval.evalnet import evaluator_path, extract_early_features, extract_features, load_evaluator
from minidiff.classifier import DiffusionClassifier, classify_images
from minidiff.clip import class_embeddings, zero_shot_predict
from minidiff.customize import load_customized
from minidiff.text2img import TextToImage, generate
from minidiff.train_clip import clip_path, load_clip
from minidiff.train_customize import run_dir, run_name
from minidiff.train_diffusion import class_prompts, load_diffusion


def test_images(cfg: Config):
    """cfg.classifier.n_images real test images, balanced over the base classes, and their labels (0..K-1)."""
    classes = base_classes(cfg.data)
    test = load_split(cfg.data, "test", cache_root(cfg)).only(classes).per_class(cfg.classifier.n_images // len(classes))
    labels = torch.tensor([classes.index(test.classes[int(y)]) for y in test.y])
    return test, labels


def classify(cfg: Config, model: TextToImage, diffusion, prompts, images, seed: int, adaptive: bool = True) -> dict:
    classifier = DiffusionClassifier(model, diffusion, prompts, cfg.classifier, cfg.data.resolution, seed)
    with tqdm(total=len(images), desc="diffusion classifier", leave=False) as bar:
        return classify_images(classifier, to_float(images), cfg.classifier.batch_size, adaptive, bar)


def paired_generations(cfg: Config, model: TextToImage, diffusion, seed0: int = 0):
    """Every base-class prompt x cfg.drift.seeds seeds -> uint8 images (N, H, W, 3), class labels (N,)."""
    classes = base_classes(cfg.data)
    prompts = class_prompts(cfg, classes)
    n = cfg.drift.seeds
    dc = cfg.diffusion
    images = generate(model, diffusion, [p for p in prompts for _ in range(n)], [seed0 + s for _ in prompts
                      for s in range(n)], cfg.data.resolution, dc.sample_steps, dc.guidance, 0.0)
    return images, torch.arange(len(classes)).repeat_interleave(n)


def base_reference(cfg: Config, base_path, device) -> dict:
    """Everything drift compares against that depends only on the base model (core.cache)."""
    key = ["drift-base", checkpoint.fingerprint(base_path), cfg.classifier.__dict__, cfg.drift.__dict__,
           cfg.diffusion.sample_steps, cfg.diffusion.guidance, cfg.data.seed]

    def compute() -> dict:
        model, diffusion, _, _ = load_diffusion(base_path, device)
        classes = base_classes(cfg.data)
        prompts = [cfg.classifier.prompt.format(c) for c in classes]
        test, labels = test_images(cfg)
        clip, tokenizer = load_clip(clip_path(cfg), cfg, device)
        clip_pred = zero_shot_predict(clip, to_float(test.x), class_embeddings(
            clip, tokenizer, classes, [cfg.classifier.prompt]))
        images, gen_labels = paired_generations(cfg, model, diffusion)
        unrelated, _ = paired_generations(cfg, model, diffusion, seed0=cfg.drift.seeds)
        return {"labels": labels, "pred": classify(cfg, model, diffusion, prompts, test.x, 0)["pred"],
                "pred_floor": classify(cfg, model, diffusion, prompts, test.x, 1)["pred"], "clip_pred": clip_pred,
                "images": images, "unrelated": unrelated, "gen_labels": gen_labels}
    return cached(cache_root(cfg), "drift-base", key, compute)


def measure_drift(cfg: Config, custom_path, base_path=None, device="cpu") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Semantic drift, appearance drift and concept fidelity of one customized checkpoint; also the paired
    generations (base, customized), uint8 (N, H, W, 3) each, prompt-major."""
    model, diffusion, custom_cfg = load_customized(custom_path, base_path, device)
    base_path = Path(base_path or checkpoint.load(custom_path)["base_path"])
    ref = base_reference(cfg, base_path, device)
    classes = base_classes(cfg.data)
    names = class_names(cfg.data)
    test, labels = test_images(cfg)
    prompts = [cfg.classifier.prompt.format(c) for c in classes]
    after = classify(cfg, model, diffusion, prompts, test.x, 0)
    evaluator = load_evaluator(cfg, device)
    concept = load_split(cfg.data, "test", cache_root(cfg)).only([cfg.data.concept_class])
    distances = class_distances(extract_features(evaluator, test.x), labels, classes,
                                extract_features(evaluator, concept.x))
    images, gen_labels = paired_generations(cfg, model, diffusion)

    def appearance(before, after_images):
        feats = [extract_features(evaluator, x) for x in (before, after_images)]
        early = [extract_early_features(evaluator, x) for x in (before, after_images)]
        return appearance_drift(before, after_images, gen_labels, classes, *feats, *early)

    cc = custom_cfg.customize
    concept_prompt = cc.prompt.format(cc.placeholder)
    concept_imgs = concept.per_class(cfg.classifier.n_images // len(classes)).x
    with_concept = classify(cfg, model, diffusion, prompts + [concept_prompt], concept_imgs, 0)
    metrics = checkpoint.load(custom_path, kind="customized")["metrics"]
    result = {
        "method": cc.method, "reg": cc.reg, "seed": cc.seed, "custom_checkpoint": str(custom_path), "base_checkpoint": str(base_path),
        "classifier": {"schedule": {"n_timesteps": cfg.classifier.n_timesteps, "stages": cfg.classifier.stages,
                                    "keep": cfg.classifier.keep, "loss": cfg.classifier.loss,
                                    "prompt": cfg.classifier.prompt},
                       "unet_passes_per_image": after["unet_passes"], "n_images": len(labels)},
        "semantic": semantic_drift(labels, ref["pred"], after["pred"], classes, distances),
        "semantic_floor": semantic_drift(labels, ref["pred"], ref["pred_floor"], classes),
        "clip_zero_shot_accuracy": (ref["clip_pred"] == labels).double().mean().item(),
        "appearance": appearance(ref["images"], images),
        "appearance_unrelated": appearance(ref["images"], ref["unrelated"]),
        "fidelity": {**metrics["fidelity"], "diffusion_classifier_concept_accuracy":
                     (with_concept["pred"] == len(classes)).double().mean().item(),
                     "n_concept_images": len(concept_imgs)},
        "customization": {k: metrics[k] for k in ("steps", "lr", "trainable_parameters", "train_seconds")},
        "concept_class": cfg.data.concept_class, "class_names": list(names), "k_images": cc.k_images,
        "prompt": concept_prompt,
    }
    return result, ref["images"], images


def drift_stage(cfg: Config, force: bool = False, custom_path=None, base_path=None) -> dict:
    """measure_drift of the customized checkpoint (default: cfg's customization run), written to
    runs/<preset>/drift/<method>-<reg>/metrics.json with pairs.png: one row per base-class prompt, the base
    model's images on the left, the customized model's (same seeds) on the right."""
    custom_path = custom_path or run_dir(cfg) / "custom.pt"
    custom = checkpoint.load(custom_path, kind="customized")
    base_path = Path(base_path or custom["base_path"])
    name = run_name(Config.from_dict(custom["config"]))
    key = run_key(cfg, IMAGE_FIELDS + ("data.concept_class", "classifier", "drift", "diffusion"), custom=custom_path,
                  base=base_path, clip=clip_path(cfg), evaluator=evaluator_path(cfg))
    with RunFolder(stage_dir(cfg, "drift", name), key, force, f"drift {name}") as run:
        if run.finished():
            return run.result
        start = time.time()
        result, before, after = measure_drift(cfg, custom_path, base_path, setup(cfg))
        n, shown = cfg.drift.seeds, min(cfg.drift.seeds, 6)
        rows = [torch.cat([before[i * n:i * n + shown], after[i * n:i * n + shown]]) for i in range(len(before) // n)]
        save_grid(torch.cat(rows), run.folder / "pairs.png", nrow=2 * shown, scale=max(1, 64 // cfg.data.resolution))
        sem, app = result["semantic"], result["appearance"]
        result["summary"] = (f"accuracy {sem['accuracy_before']:.1%} -> {sem['accuracy_after']:.1%} (worst class "
                             f"{sem['worst_class']} {100 * sem['worst_change']:+.0f} pts, flip rate "
                             f"{sem['flip_rate']:.1%}); CDI {app['cdi']:.2f} (unrelated pairs "
                             f"{result['appearance_unrelated']['cdi']:.2f}); concept recognised "
                             f"{result['fidelity']['recognised']:.0%}")
        result["seconds"] = time.time() - start
        print(f"drift {name}: {result['summary']}")
        return run.finish(result)


def benchmark_classifier(cfg: Config, ckpt, device="cpu") -> dict:
    """Accuracy and UNet passes per image of the full timestep grid vs the adaptive schedule on the same
    test images, with the tiny-CLIP zero-shot accuracy as a reference (`python evaluate.py classify`)."""
    import time
    model, diffusion, _, _ = load_diffusion(ckpt, device)
    classes = base_classes(cfg.data)
    prompts = [cfg.classifier.prompt.format(c) for c in classes]
    test, labels = test_images(cfg)
    clip, tokenizer = load_clip(clip_path(cfg), cfg, device)
    clip_pred = zero_shot_predict(clip, to_float(test.x), class_embeddings(clip, tokenizer, classes,
                                                                            [cfg.classifier.prompt]))
    result = {"checkpoint": str(ckpt), "n_images": len(labels), "n_classes": len(classes),
              "threads": torch.get_num_threads(), "device": str(device),
              "clip_zero_shot_accuracy": (clip_pred == labels).double().mean().item(),
              "schedule": {k: getattr(cfg.classifier, k) for k in ("n_timesteps", "stages", "keep", "loss", "prompt")}}
    for name, adaptive in (("full", False), ("adaptive", True)):
        start = time.time()
        out = classify(cfg, model, diffusion, prompts, test.x, seed=0, adaptive=adaptive)
        result[name] = {"accuracy": (out["pred"] == labels).double().mean().item(),
                        "unet_passes_per_image": out["unet_passes"], "seconds": time.time() - start}
    result["pass_reduction"] = result["full"]["unet_passes_per_image"] / result["adaptive"]["unet_passes_per_image"]
    result["accuracy_lost"] = result["full"]["accuracy"] - result["adaptive"]["accuracy"]
    return result
