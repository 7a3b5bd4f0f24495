"""The drift protocol: what a customization changed outside the new concept
(stages: measure_drift.py).

Held out, or it does not count. The base classes are split into *anchored* ones, which the
functional regularizer's anchor prompts may name, and *held-out* ones (drift.heldout_classes), which
no anchor names; the caption templates likewise (the first drift.anchor_templates are anchored).
Drift is measured with one anchored template (drift.template) and one held-out template
(drift.heldout_template), in four groups:

    anchored            anchored classes, anchored template        (what the regularizer saw)
    heldout_classes     held-out classes, anchored template        (the open world: new classes)
    heldout_templates   anchored classes, held-out template        (the open world: new wordings)
    heldout_both        held-out classes, held-out template

  semantic    the diffusion classifier of the base and of the customized model on the same real test
              images of the base classes with the same noise bank; its floor: the base model again
              with a disjoint noise bank (eval.drift.semantic_drift, per group). From the same error
              tables: the paired change of each image's margin (a continuous measure beside the
              flips), and each prompt's mean error change split into the shift all prompts share and
              the prompt's own part.
  appearance  paired DDIM (eta = 0) generations of every group's prompts from the same initial
              noise, base vs customized: pairwise (Colour Drift Index, ...) and set-level (colour
              distributions, FD); the floor compares two base sets of disjoint seeds
              (eval.drift.appearance_drift, per group).
  attributes  (shapes) held-out prompts that name colours and texture: how often generations follow
              them (eval.attributes), before, after, and for base images of other seeds (the floor).
  fidelity    the concept's held-out real images classified among the base prompts plus the concept
              prompt (a user's own concept, customize.images, has no held-out images: its training
              images are), and the concept's samples recognised without guidance (guidance 1) beside
              the preset's guidance.
  leakage     the held-out classes' generations that the evaluator calls the concept: a drift of
              unnamed prompts towards what was learned.

Repeat k of a customization (customize.seed = k) uses noise and seed bank k, so repeats measure on
independent draws; every seed comes from its own range (minidiff.text2img.SEED_RANGES), disjoint
from the images the regularizer trained on. The base model's side of bank k (base_sides) is measured
once per base model and bank, by its own stage (drift-floor), and shared by every customization of
that base and seed.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from core import captions
from core.cache import cache_root
from core.config import Config
from core.data import base_classes, class_names, load_split, to_float
from core.training import mix_seed
from eval.attributes import attribute_reader, compliance, read_attributes
from eval.drift import appearance_drift, class_distances, semantic_drift
from eval.evalnet import extract_early_features, extract_features, load_evaluator, predict_logits
from minidiff.classifier import DiffusionClassifier, classify_images, margins
from minidiff.quality import concept_fidelity
from minidiff.regularizers import heldout_split
from minidiff.text2img import TextToImage, generate, seed_range
from minidiff.train_customize import (concept_images, concept_name, customization_name,
                                      regularizer_name)
from minidiff.train_diffusion import base_name

GROUPS = ("anchored", "heldout_classes", "heldout_templates", "heldout_both")


def templates(cfg: Config) -> tuple[str, str]:
    """(anchored template, held-out template) that drift is measured with."""
    every = captions.TEMPLATES[cfg.data.dataset]
    return every[cfg.drift.template], every[cfg.drift.heldout_template]


def group_of(cfg: Config, class_name: str, heldout_template: bool) -> str:
    held_class = class_name in heldout_split(cfg)[1]
    return GROUPS[held_class + 2 * heldout_template]


def test_images(cfg: Config):
    """cfg.classifier.n_images real test images, balanced over the base classes, and their labels
    (0..K-1)."""
    classes = base_classes(cfg.data)
    test = load_split(cfg.data, "test", cache_root(cfg)).only(classes)
    test = test.per_class(cfg.classifier.n_images // len(classes))
    return test, torch.tensor([classes.index(test.classes[int(y)]) for y in test.y])


def classify(cfg: Config, model: TextToImage, diffusion, prompts, images, seed: int,
             adaptive: bool | None = None, phase: str = "diffusion classifier") -> dict:
    """classify_images under `prompts` (adaptive: classifier.adaptive unless given)."""
    classifier = DiffusionClassifier(model, diffusion, prompts, cfg.classifier, cfg.data.resolution,
                                     seed, cfg.run.unet_batch)
    adaptive = cfg.classifier.adaptive if adaptive is None else adaptive
    with tqdm(total=len(images), desc=phase, leave=False) as bar:
        return classify_images(classifier, to_float(images), cfg.classifier.batch_size,
                               adaptive, bar)


def classify_both_templates(cfg: Config, model, diffusion, images, kind: str,
                            bank: int) -> list[dict]:
    """Classification among the base classes under the anchored and under the held-out template,
    with the noise bank of (kind: 'drift' or 'floor', bank)."""
    seed = mix_seed(cfg.run.seed, ("drift", "floor").index(kind), bank)
    return [classify(cfg, model, diffusion, [t.format(c) for c in base_classes(cfg.data)],
                     images, seed,
                     phase=f"{kind} side: diffusion classifier, "
                           f"{('anchored', 'held-out')[h]} wording")
            for h, t in enumerate(templates(cfg))]


def pair_prompts(cfg: Config) -> tuple[list[str], torch.Tensor, list[str]]:
    """Every base class under both templates, drift.pairs times each: prompts, class labels,
    groups."""
    classes, n = base_classes(cfg.data), cfg.drift.pairs
    rows = [(t.format(c), i, group_of(cfg, c, h))
            for h, t in enumerate(templates(cfg)) for i, c in enumerate(classes)]
    return ([p for p, _, _ in rows for _ in range(n)],
            torch.tensor([i for _, i, _ in rows]).repeat_interleave(n),
            [g for _, _, g in rows for _ in range(n)])


def attribute_prompts(cfg: Config) -> tuple[list[str], torch.Tensor]:
    """Held-out prompts that name colours and texture (held-out classes, held-out template),
    drift.attribute_pairs times each, and the attributes (colour, background, texture) each asks
    for."""
    rng = np.random.default_rng(cfg.run.seed)
    held = heldout_split(cfg)[1]
    prompts, wanted = [], []
    for i in range(cfg.drift.attribute_prompts):
        colour, background = (int(a) for a in rng.choice(len(captions.shapes.COLOURS), 2,
                                                          replace=False))
        texture = int(rng.integers(len(captions.shapes.TEXTURES)))
        prompt = captions.attribute_caption(templates(cfg)[1], held[i % len(held)], colour,
                                            background, texture)
        prompts += [prompt] * cfg.drift.attribute_pairs
        wanted += [(colour, background, texture)] * cfg.drift.attribute_pairs
    return prompts, torch.tensor(wanted, dtype=torch.long).view(-1, 3)


def generations(cfg: Config, model, diffusion, prompts, kind: str, bank: int,
                n_per_prompt: int) -> torch.Tensor:
    """DDIM (eta = 0) samples of the prompts, whose k-th repeat uses seed k of the kind's bank."""
    dc = cfg.diffusion
    seeds = seed_range(kind, n_per_prompt, bank) * (len(prompts) // n_per_prompt)
    return generate(model, diffusion, prompts, seeds, cfg.data.resolution, dc.sample_steps,
                    dc.guidance, 0.0, cfg.run.unet_batch,
                    phase=f"{kind} side: {len(prompts)} paired generations")


def model_side(cfg: Config, model, diffusion, images, kind: str, bank: int) -> dict:
    """What drift compares for one model: predictions on the test images (both templates), the
    paired generations and the attribute-prompt generations (kind: 'drift' or 'floor', which bank of
    seeds)."""
    classified = classify_both_templates(cfg, model, diffusion, images, kind, bank)
    side = {"pred": [c["pred"] for c in classified], "unet_passes": classified[0]["unet_passes"],
            "pairs": generations(cfg, model, diffusion, pair_prompts(cfg)[0], kind, bank,
                                 cfg.drift.pairs)}
    if "errors" in classified[0]:          # the error tables (N, K, n) of both wordings
        side["errors"] = [c["errors"] for c in classified]
    if cfg.data.dataset == "shapes" and cfg.drift.attribute_prompts:
        attr_kind = "attributes" if kind == "drift" else "attributes-floor"
        side["attributes"] = generations(cfg, model, diffusion, attribute_prompts(cfg)[0],
                                         attr_kind, bank, cfg.drift.attribute_pairs)
    return side


def base_sides(cfg: Config, model, diffusion, bank: int) -> dict:
    """The base model's side of drift bank `bank`, and its floor: the same measurements with another
    bank of noise and seeds (minidiff/measure_drift.py stores both as the drift-floor stage)."""
    test, _ = test_images(cfg)
    return {"drift": model_side(cfg, model, diffusion, test.x, "drift", bank),
            "floor": model_side(cfg, model, diffusion, test.x, "floor", bank)}


def appearance_by_group(cfg: Config, before, after, reference, evaluator, reader) -> dict:
    """appearance_drift of the paired generations (before, after) per group; set-level measures
    compare `after` with `reference`, base images of the same prompts from another seed bank."""
    _, labels, groups = pair_prompts(cfg)
    out = {}
    for g in GROUPS:
        pick = torch.tensor([x == g for x in groups])
        b, a, r = before[pick], after[pick], reference[pick]
        attrs = [read_attributes(reader, x) for x in (b, a)] if reader is not None else [None, None]
        out[g] = appearance_drift(b, a, labels[pick], base_classes(cfg.data),
                                  extract_features(evaluator, b), extract_features(evaluator, a),
                                  extract_early_features(evaluator, b),
                                  extract_early_features(evaluator, a), *attrs,
                                  reference=(r, extract_features(evaluator, r)))
    return out


def semantic_by_group(cfg: Config, labels, before: list, after: list, distances=None) -> dict:
    """semantic_drift of each group's test images under its template."""
    classes = base_classes(cfg.data)
    anchored = torch.tensor([c in heldout_split(cfg)[0] for c in classes])[labels]
    out = {}
    for g in GROUPS:
        h = g.endswith("templates") or g.endswith("both")
        pick = anchored if g in ("anchored", "heldout_templates") else ~anchored
        out[g] = semantic_drift(labels[pick], before[h][pick], after[h][pick], classes, distances)
    return out


def margin_change(cfg: Config, labels, before: list, after: list) -> dict:
    """Per group, the paired change of each image's classifier margin (minidiff.classifier.margins;
    negative margins are right answers, so a positive change is a loss of confidence in the true
    class): its mean, a 95% confidence interval over images (mean +- 1.96 sd / sqrt(n)), and the
    share of images that got worse."""
    anchored = torch.tensor([c in heldout_split(cfg)[0] for c in base_classes(cfg.data)])[labels]
    out = {}
    for g in GROUPS:
        h = g.endswith("templates") or g.endswith("both")
        pick = anchored if g in ("anchored", "heldout_templates") else ~anchored
        d = margins(after[h][pick], labels[pick]) - margins(before[h][pick], labels[pick])
        half = 1.96 * d.std().item() / len(d) ** 0.5 if len(d) > 1 else float("nan")
        out[g] = {"mean": d.mean().item(), "ci_low": d.mean().item() - half,
                  "ci_high": d.mean().item() + half,
                  "worse": (d > 0).double().mean().item(), "n": len(d)}
    return out


def prompt_error_change(cfg: Config, before: list, after: list) -> dict:
    """How each prompt's mean denoising error moved (over every test image and timestep), under the
    anchored wording and the held-out one: delta_c = mean error_after(c) - mean error_before(c).
    Split into the shift every prompt shares (the mean of delta_c over prompts) and each prompt's
    own part (delta_c - shared): a shared shift cancels in the classifier's comparison, the
    prompt-specific part decides which prompt wins."""
    anchored, held = heldout_split(cfg)
    classes = base_classes(cfg.data)
    out = {}
    for wording, b, a in zip(("anchored_wording", "heldout_wording"), before, after):
        delta = (a.double() - b.double()).mean(dim=(0, 2))  # (K,): one change per prompt
        shared = delta.mean().item()
        per = {c: delta[i].item() for i, c in enumerate(classes)}
        out[wording] = {"shared": shared, "per_prompt": per,
                        "anchored_specific": sum(per[c] - shared for c in anchored) / len(anchored),
                        "heldout_specific": sum(per[c] - shared for c in held) / len(held),
                        "anchored_mean": sum(per[c] for c in anchored) / len(anchored),
                        "heldout_mean": sum(per[c] for c in held) / len(held)}
    return out


def concept_leakage(cfg: Config, custom_cfg: Config, pairs_before, pairs_after,
                    evaluator) -> dict | None:
    """Share of the held-out classes' paired generations (anchored wording) that the evaluator calls
    the concept class, after and before customization (None for a user's concept, which the
    evaluator does not know)."""
    if custom_cfg.customize.images:
        return None
    _, labels, groups = pair_prompts(cfg)
    pick = torch.tensor([g == "heldout_classes" for g in groups])
    concept = class_names(cfg.data).index(cfg.data.concept_class)
    share = lambda x: (predict_logits(evaluator, x[pick]).argmax(1)  # noqa
                       == concept).double().mean().item()
    return {"after": share(pairs_after), "before": share(pairs_before), "n": int(pick.sum())}


def measure_drift(cfg: Config, model, diffusion, custom_cfg: Config, custom_metrics: dict,
                  base: dict, device="cpu") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Semantic drift, appearance drift, attribute compliance and concept fidelity of one customized
    model against its base model's side `base` (base_sides); also the paired generations
    (base, customized), uint8 (N, H, W, 3), prompt-major."""
    cc = custom_cfg.customize
    classes = base_classes(cfg.data)
    test, labels = test_images(cfg)
    after = model_side(cfg, model, diffusion, test.x, "drift", cc.seed)
    evaluator = load_evaluator(cfg, device)
    reader = attribute_reader(cfg, device) if cfg.data.dataset == "shapes" else None
    concept = concept_images(custom_cfg, "test")   # a user's folder: its (training) images
    distances = class_distances(extract_features(evaluator, test.x), labels, classes,
                                extract_features(evaluator, concept))
    anchored, _ = heldout_split(cfg)
    result = {
        "name": customization_name(custom_cfg), "base": base_name(custom_cfg), "method": cc.method,
        "reg": cc.reg, "regularizer": regularizer_name(custom_cfg), "seed": cc.seed,
        "concept_class": concept_name(custom_cfg), "class_names": list(class_names(cfg.data)),
        "base_classes": list(classes), "anchored_classes": anchored,
        "templates": list(templates(cfg)),
        "classifier": {"unet_passes_per_image": after["unet_passes"], "n_images": len(labels),
                       "schedule": {k: getattr(cfg.classifier, k)
                                    for k in ("n_timesteps", "stages", "keep", "loss")}}}
    result["semantic"] = semantic_by_group(cfg, labels, base["drift"]["pred"],
                                           after["pred"], distances)
    result["semantic_floor"] = semantic_by_group(cfg, labels, base["drift"]["pred"],
                                                 base["floor"]["pred"])
    if "errors" in after:
        result["margin"] = margin_change(cfg, labels, base["drift"]["errors"], after["errors"])
        result["margin_floor"] = margin_change(cfg, labels, base["drift"]["errors"],
                                               base["floor"]["errors"])
        result["prompt_error"] = prompt_error_change(cfg, base["drift"]["errors"], after["errors"])
        result["prompt_error_floor"] = prompt_error_change(cfg, base["drift"]["errors"],
                                                           base["floor"]["errors"])
    result["leakage"] = concept_leakage(cfg, custom_cfg, base["drift"]["pairs"],
                                        after["pairs"], evaluator)
    pairs, other_seeds = base["drift"]["pairs"], base["floor"]["pairs"]
    result["appearance"] = appearance_by_group(cfg, pairs, after["pairs"], other_seeds,
                                               evaluator, reader)
    result["appearance_floor"] = appearance_by_group(cfg, pairs, other_seeds, pairs,
                                                     evaluator, reader)
    if "attributes" in after:
        _, wanted = attribute_prompts(cfg)
        result["attributes"] = {name: compliance(read_attributes(reader, images), wanted)
                                for name, images in (("before", base["drift"]["attributes"]),
                                                     ("after", after["attributes"]),
                                                     ("floor", base["floor"]["attributes"]))}
        result["attribute_reader_accuracy"] = reader.test_accuracy
    concept_prompt = cc.prompt.format(cc.placeholder)
    concept_imgs = concept[:cfg.classifier.n_images // len(classes)]
    prompts = [templates(cfg)[0].format(c) for c in classes] + [concept_prompt]
    with_concept = classify(cfg, model, diffusion, prompts, concept_imgs,
                            mix_seed(cfg.run.seed, 2, cc.seed),
                            phase="concept images: diffusion classifier")
    label = None if cc.images else class_names(cfg.data).index(cfg.data.concept_class)
    unguided, _ = concept_fidelity(cfg.updated("diffusion", guidance=1.0), model, diffusion,
                                   concept_prompt, evaluator, concept, label)
    result["fidelity"] = {**custom_metrics["fidelity"],
                          "n_classified_concept_images": len(concept_imgs),
                          "recognised_guidance_1": unguided["recognised"],
                          "classified_images": ("training images" if cc.images
                                                else "held-out test images"),
                          "diffusion_classifier_concept_accuracy":
                              (with_concept["pred"] == len(classes)).double().mean().item()}
    result["customization"] = {k: custom_metrics[k] for k in ("steps", "lr", "trainable_parameters",
                                                              "train_seconds")}
    result.update(k_images=custom_metrics["k_images"], prompt=concept_prompt)
    return result, base["drift"]["pairs"], after["pairs"]
