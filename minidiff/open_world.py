"""Measure what a customization changed outside the new concept (`python evaluate.py drift`).

Held out, or it does not count. The base classes are split into *anchored* ones, which the functional
regularizer's anchor prompts may name, and *held-out* ones (drift.heldout_classes), which no anchor names;
the caption templates likewise (the first drift.anchor_templates are anchored). Drift is measured with one
anchored template (drift.template) and one held-out template (drift.heldout_template), in four groups:

    anchored            anchored classes, anchored template        (what the regularizer saw)
    heldout_classes     held-out classes, anchored template        (the open world: new classes)
    heldout_templates   anchored classes, held-out template        (the open world: new wordings)
    heldout_both        held-out classes, held-out template

  semantic    the diffusion classifier of the base and of the customized model on the same real test images
              of the base classes with the same noise bank; its floor: the base model again with a disjoint
              noise bank (eval.drift.semantic_drift, per group).
  appearance  paired DDIM (eta = 0) generations of every group's prompts from the same initial noise, base vs
              customized: pairwise (Colour Drift Index, ...) and set-level (colour distributions, FD); the
              floor compares two base sets of disjoint seeds (eval.drift.appearance_drift, per group).
  attributes  (shapes) held-out prompts that name colours and texture: how often generations follow them
              (eval.attributes), before, after, and for base images of other seeds (the floor).
  fidelity    the concept's held-out real images classified among the base prompts plus the concept prompt
              (a user's own concept, customize.images, has no held-out images: its training images are).

Repeat k of a customization (customize.seed = k) uses noise and seed bank k, so repeats measure on
independent draws; every seed comes from its own range (minidiff.text2img.SEED_RANGES), disjoint from the
images the regularizer trained on. The base model's side is cached per base checkpoint and bank.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core import captions, checkpoint
from core.cache import cache_root, cached
from core.config import Config
from core.data import IMAGE_FIELDS, base_classes, class_names, load_split, to_float
from core.images import save_grid
from core.runs import RunFolder, run_key, stage_dir
from core.training import mix_seed, setup
from eval.attributes import attribute_reader, compliance, read_attributes
from eval.drift import appearance_drift, class_distances, semantic_drift
from eval.evalnet import evaluator_path, extract_early_features, extract_features, load_evaluator
from minidiff.classifier import DiffusionClassifier, classify_images
from minidiff.clip import class_embeddings, zero_shot_predict
from minidiff.customize import load_customized
from minidiff.regularizers import anchored_classes
from minidiff.text2img import TextToImage, generate, seed_range
from minidiff.train_clip import clip_path, load_clip
from minidiff.train_customize import concept_images, concept_name, run_dir, run_name
from minidiff.train_diffusion import load_diffusion

GROUPS = ("anchored", "heldout_classes", "heldout_templates", "heldout_both")


def templates(cfg: Config) -> tuple[str, str]:
    """(anchored template, held-out template) that drift is measured with."""
    every = captions.TEMPLATES[cfg.data.dataset]
    return every[cfg.drift.template], every[cfg.drift.heldout_template]


def group_of(cfg: Config, class_name: str, heldout_template: bool) -> str:
    held_class = class_name not in anchored_classes(cfg, base_classes(cfg.data))
    return GROUPS[held_class + 2 * heldout_template]


def test_images(cfg: Config):
    """cfg.classifier.n_images real test images, balanced over the base classes, and their labels (0..K-1)."""
    classes = base_classes(cfg.data)
    test = load_split(cfg.data, "test", cache_root(cfg)).only(classes)
    test = test.per_class(cfg.classifier.n_images // len(classes))
    return test, torch.tensor([classes.index(test.classes[int(y)]) for y in test.y])


def classify(cfg: Config, model: TextToImage, diffusion, prompts, images, seed: int, adaptive: bool = True) -> dict:
    classifier = DiffusionClassifier(model, diffusion, prompts, cfg.classifier, cfg.data.resolution, seed,
                                     cfg.run.unet_batch)
    with tqdm(total=len(images), desc="diffusion classifier", leave=False) as bar:
        return classify_images(classifier, to_float(images), cfg.classifier.batch_size, adaptive, bar)


def classify_both_templates(cfg: Config, model, diffusion, images, kind: str, bank: int) -> list[dict]:
    """Classification among the base classes under the anchored and under the held-out template, with the
    noise bank of (kind: 'drift' or 'floor', bank)."""
    seed = mix_seed(cfg.run.seed, ("drift", "floor").index(kind), bank)
    return [classify(cfg, model, diffusion, [t.format(c) for c in base_classes(cfg.data)], images, seed)
            for t in templates(cfg)]


def pair_prompts(cfg: Config) -> tuple[list[str], torch.Tensor, list[str]]:
    """Every base class under both templates, drift.pairs times each: prompts, class labels, groups."""
    classes, n = base_classes(cfg.data), cfg.drift.pairs
    rows = [(t.format(c), i, group_of(cfg, c, h)) for h, t in enumerate(templates(cfg)) for i, c in enumerate(classes)]
    return ([p for p, _, _ in rows for _ in range(n)], torch.tensor([i for _, i, _ in rows]).repeat_interleave(n),
            [g for _, _, g in rows for _ in range(n)])


def attribute_prompts(cfg: Config) -> tuple[list[str], torch.Tensor]:
    """Held-out prompts that name colours and texture (held-out classes, held-out template), drift.attribute_pairs
    times each, and the attributes (colour, background, texture) each asks for."""
    rng = np.random.default_rng(cfg.run.seed)
    held = [c for c in base_classes(cfg.data) if c not in anchored_classes(cfg, base_classes(cfg.data))]
    prompts, wanted = [], []
    for i in range(cfg.drift.attribute_prompts):
        colour, background = (int(a) for a in rng.choice(len(captions.shapes.COLOURS), 2, replace=False))
        texture = int(rng.integers(len(captions.shapes.TEXTURES)))
        prompt = captions.attribute_caption(templates(cfg)[1], held[i % len(held)], colour, background, texture)
        prompts += [prompt] * cfg.drift.attribute_pairs
        wanted += [(colour, background, texture)] * cfg.drift.attribute_pairs
    return prompts, torch.tensor(wanted, dtype=torch.long).view(-1, 3)


def generations(cfg: Config, model, diffusion, prompts, kind: str, bank: int, n_per_prompt: int) -> torch.Tensor:
    """DDIM (eta = 0) samples of the prompts, whose k-th repeat uses seed k of the kind's bank."""
    dc = cfg.diffusion
    seeds = seed_range(kind, n_per_prompt, bank) * (len(prompts) // n_per_prompt)
    return generate(model, diffusion, prompts, seeds, cfg.data.resolution, dc.sample_steps, dc.guidance, 0.0,
                    cfg.run.unet_batch)


def model_side(cfg: Config, model, diffusion, images, kind: str, bank: int) -> dict:
    """What drift compares for one model: predictions on the test images (both templates), the paired
    generations and the attribute-prompt generations (kind: 'drift' or 'floor', which bank of seeds)."""
    classified = classify_both_templates(cfg, model, diffusion, images, kind, bank)
    side = {"pred": [c["pred"] for c in classified], "unet_passes": classified[0]["unet_passes"],
            "pairs": generations(cfg, model, diffusion, pair_prompts(cfg)[0], kind, bank, cfg.drift.pairs)}
    if cfg.data.dataset == "shapes" and cfg.drift.attribute_prompts:
        attr_kind = "attributes" if kind == "drift" else "attributes-floor"
        side["attributes"] = generations(cfg, model, diffusion, attribute_prompts(cfg)[0], attr_kind, bank,
                                         cfg.drift.attribute_pairs)
    return side


def base_side(cfg: Config, base_path, bank: int, device) -> dict:
    """The base model's side for bank `bank`, and its floor (another bank of noise and seeds); cached."""
    key = ["drift-base", checkpoint.fingerprint(base_path), bank, cfg.classifier.__dict__, cfg.drift.__dict__,
           cfg.diffusion.sample_steps, cfg.diffusion.guidance, cfg.data.seed, cfg.run.seed]

    def compute() -> dict:
        model, diffusion, _, _ = load_diffusion(base_path, device)
        test, _ = test_images(cfg)
        return {"drift": model_side(cfg, model, diffusion, test.x, "drift", bank),
                "floor": model_side(cfg, model, diffusion, test.x, "floor", bank)}
    return cached(cache_root(cfg), "drift-base", key, compute)


def appearance_by_group(cfg: Config, before, after, reference, evaluator, reader) -> dict:
    """appearance_drift of the paired generations (before, after) per group; set-level measures compare
    `after` with `reference`, base images of the same prompts from another seed bank."""
    _, labels, groups = pair_prompts(cfg)
    out = {}
    for g in GROUPS:
        pick = torch.tensor([x == g for x in groups])
        b, a, r = before[pick], after[pick], reference[pick]
        attrs = [read_attributes(reader, x) for x in (b, a)] if reader is not None else [None, None]
        out[g] = appearance_drift(b, a, labels[pick], base_classes(cfg.data),
                                  extract_features(evaluator, b), extract_features(evaluator, a),
                                  extract_early_features(evaluator, b), extract_early_features(evaluator, a), *attrs,
                                  reference=(r, extract_features(evaluator, r)))
    return out


def semantic_by_group(cfg: Config, labels, before: list, after: list, distances=None) -> dict:
    """semantic_drift of each group's test images under its template."""
    classes = base_classes(cfg.data)
    anchored = torch.tensor([c in anchored_classes(cfg, classes) for c in classes])[labels]
    out = {}
    for g in GROUPS:
        h = g.endswith("templates") or g.endswith("both")
        pick = anchored if g in ("anchored", "heldout_templates") else ~anchored
        out[g] = semantic_drift(labels[pick], before[h][pick], after[h][pick], classes, distances)
    return out


def measure_drift(cfg: Config, custom_path, base_path=None, device="cpu") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Semantic drift, appearance drift, attribute compliance and concept fidelity of one customized checkpoint;
    also the paired generations (base, customized), uint8 (N, H, W, 3), prompt-major."""
    model, diffusion, custom_cfg = load_customized(custom_path, base_path, device)
    base_path = Path(base_path or checkpoint.load(custom_path)["base_path"])
    cc = custom_cfg.customize
    base = base_side(cfg, base_path, cc.seed, device)
    classes = base_classes(cfg.data)
    test, labels = test_images(cfg)
    after = model_side(cfg, model, diffusion, test.x, "drift", cc.seed)
    evaluator = load_evaluator(cfg, device)
    reader = attribute_reader(cfg, device) if cfg.data.dataset == "shapes" else None
    concept = concept_images(custom_cfg, "test")   # a user's folder: its (training) images
    distances = class_distances(extract_features(evaluator, test.x), labels, classes,
                                extract_features(evaluator, concept))
    result = {
        "run": run_name(custom_cfg), "method": cc.method, "reg": cc.reg, "seed": cc.seed,
        "custom_checkpoint": str(custom_path),
        "base_checkpoint": str(base_path), "concept_class": concept_name(custom_cfg),
        "class_names": list(class_names(cfg.data)), "base_classes": list(classes),
        "anchored_classes": anchored_classes(cfg, classes),
        "templates": list(templates(cfg)), "classifier": {"unet_passes_per_image": after["unet_passes"],
                                                          "n_images": len(labels), "schedule": {
            k: getattr(cfg.classifier, k) for k in ("n_timesteps", "stages", "keep", "loss")}}}
    result["semantic"] = semantic_by_group(cfg, labels, base["drift"]["pred"], after["pred"], distances)
    result["semantic_floor"] = semantic_by_group(cfg, labels, base["drift"]["pred"], base["floor"]["pred"])
    pairs, other_seeds = base["drift"]["pairs"], base["floor"]["pairs"]
    result["appearance"] = appearance_by_group(cfg, pairs, after["pairs"], other_seeds, evaluator, reader)
    result["appearance_floor"] = appearance_by_group(cfg, pairs, other_seeds, pairs, evaluator, reader)
    if "attributes" in after:
        _, wanted = attribute_prompts(cfg)
        result["attributes"] = {name: compliance(read_attributes(reader, images), wanted) for name, images in
                                (("before", base["drift"]["attributes"]), ("after", after["attributes"]),
                                 ("floor", base["floor"]["attributes"]))}
        result["attribute_reader_accuracy"] = reader.test_accuracy
    concept_prompt = cc.prompt.format(cc.placeholder)
    concept_imgs = concept[:cfg.classifier.n_images // len(classes)]
    prompts = [templates(cfg)[0].format(c) for c in classes] + [concept_prompt]
    with_concept = classify(cfg, model, diffusion, prompts, concept_imgs, mix_seed(cfg.run.seed, 2, cc.seed))
    metrics = checkpoint.load(custom_path, kind="customized")["metrics"]
    result["fidelity"] = {**metrics["fidelity"], "n_classified_concept_images": len(concept_imgs),
                          "classified_images": "training images" if cc.images else "held-out test images",
                          "diffusion_classifier_concept_accuracy":
                              (with_concept["pred"] == len(classes)).double().mean().item()}
    result["customization"] = {k: metrics[k] for k in ("steps", "lr", "trainable_parameters", "train_seconds")}
    result.update(k_images=metrics["k_images"], prompt=concept_prompt)
    return result, base["drift"]["pairs"], after["pairs"]


def drift_stage(cfg: Config, force: bool = False, custom_path=None, base_path=None) -> dict:
    """measure_drift of the customized checkpoint (default: cfg's customization run), written to
    runs/<preset>/drift/<run>/metrics.json with pairs.png: one row per base class under the anchored template,
    the base model's images on the left, the customized model's (same seeds) on the right."""
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
        n, shown = cfg.drift.pairs, min(cfg.drift.pairs, 6)
        rows = [torch.cat([before[i * n:i * n + shown], after[i * n:i * n + shown]])
                for i in range(len(base_classes(cfg.data)))]
        save_grid(torch.cat(rows), run.folder / "pairs.png", nrow=2 * shown, scale=max(1, 64 // cfg.data.resolution))
        held, floor = result["semantic"]["heldout_classes"], result["semantic_floor"]["heldout_classes"]
        result["summary"] = (f"held-out classes: accuracy {held['accuracy_before']:.1%} -> "
                             f"{held['accuracy_after']:.1%}, flip rate {held['flip_rate']:.1%} "
                             f"(floor {floor['flip_rate']:.1%}); anchored flip rate "
                             f"{result['semantic']['anchored']['flip_rate']:.1%}; pairwise CDI (held-out classes) "
                             f"median {result['appearance']['heldout_classes']['cdi_median']:.1f}; concept picked by "
                             f"the diffusion classifier "
                             f"{result['fidelity']['diffusion_classifier_concept_accuracy']:.0%}")
        result["seconds"] = time.time() - start
        print(f"drift {name}: {result['summary']}")
        return run.finish(result)


def benchmark_classifier(cfg: Config, ckpt, device="cpu") -> dict:
    """Accuracy and UNet passes per image of the full timestep grid vs the adaptive schedule on the same
    test images (anchored template), with the tiny-CLIP zero-shot accuracy as a reference
    (`python evaluate.py classify`)."""
    model, diffusion, _, _ = load_diffusion(ckpt, device)
    classes = base_classes(cfg.data)
    template = templates(cfg)[0]
    prompts = [template.format(c) for c in classes]
    test, labels = test_images(cfg)
    clip, tokenizer = load_clip(clip_path(cfg), cfg, device)
    clip_pred = zero_shot_predict(clip, to_float(test.x), class_embeddings(clip, tokenizer, classes, [template]))
    result = {"checkpoint": str(ckpt), "n_images": len(labels), "n_classes": len(classes),
              "threads": torch.get_num_threads(), "device": str(device), "template": template,
              "clip_zero_shot_accuracy": (clip_pred == labels).double().mean().item(),
              "schedule": {k: getattr(cfg.classifier, k) for k in ("n_timesteps", "stages", "keep", "loss")}}
    for name, adaptive in (("full", False), ("adaptive", True)):
        start = time.time()
        out = classify(cfg, model, diffusion, prompts, test.x, seed=0, adaptive=adaptive)
        result[name] = {"accuracy": (out["pred"] == labels).double().mean().item(),
                        "unet_passes_per_image": out["unet_passes"], "seconds": time.time() - start}
    result["pass_reduction"] = result["full"]["unet_passes_per_image"] / result["adaptive"]["unet_passes_per_image"]
    result["accuracy_lost"] = result["full"]["accuracy"] - result["adaptive"]["accuracy"]
    return result
