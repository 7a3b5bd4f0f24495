"""Train tiny CLIP on the base classes (the held-out concept is never seen) and test it zero-shot.

`python train.py clip` calls `train_clip(cfg)`; it writes
runs/<preset>/clip/{clip.pt, metrics.json}.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from core import captions, checkpoint
from core.cache import cache_root
from core.config import Config
from core.errors import Diverged
from core.data import base_classes, class_names, load_split, to_float
from core.training import (FUSED, check_finite, flip_and_shift, random_batches, setup,
                           warmup_cosine, weight_decay_groups)
from minidiff.clip import TinyClip, class_embeddings, zero_shot_predict
from minidiff.tokenizer import Tokenizer
from pipeline.runs import require_finished, run_key, run_once, stage_dir


def build_tokenizer(cfg: Config) -> Tokenizer:
    return Tokenizer.for_dataset(cfg.data.dataset, class_names(cfg.data), cfg.clip.context_length)


def clip_path(cfg: Config):
    """The finished CLIP checkpoint of cfg's preset (an error with the command to make it, if
    none)."""
    return require_finished(stage_dir(cfg, "clip"), "clip.pt",
                            f"python train.py clip --preset {cfg.run.preset}")


def load_clip(path, cfg: Config, device="cpu") -> tuple[TinyClip, Tokenizer]:
    """A trained tiny CLIP (frozen, eval mode) and its tokenizer; refuses a checkpoint of another
    shape."""
    payload = checkpoint.load(path, kind="clip")
    checkpoint.check_arch(payload, {"data": cfg.data, "clip": cfg.clip}, str(path))
    tokenizer = Tokenizer(payload["vocab"], cfg.clip.context_length)
    clip = TinyClip(len(tokenizer), cfg.clip)
    clip.load_state_dict(payload["model"])
    return clip.to(device).eval().requires_grad_(False), tokenizer


@torch.no_grad()
def zero_shot_accuracy(clip: TinyClip, tokenizer: Tokenizer, images, labels, class_names,
                       dataset: str) -> dict:
    """Accuracy of CLIP zero-shot classification among `class_names`, overall and per class."""
    class_emb = class_embeddings(clip, tokenizer, class_names, captions.TEMPLATES[dataset])
    preds = zero_shot_predict(clip, images, class_emb)
    per_class = {name: (preds[labels == i] == i).float().mean().item()
                 for i, name in enumerate(class_names)}
    return {"accuracy": (preds == labels).float().mean().item(), "per_class": per_class}


def train_clip(cfg: Config, force: bool = False) -> dict:
    """Train (or, if finished before with the same settings, skip) tiny CLIP; returns its
    metrics."""
    def work(run):
        model, tokenizer, metrics = _train(cfg, setup(cfg))
        run.save_checkpoint(run.folder / "clip.pt", {"kind": "clip", "config": cfg.to_dict(),
                                                     "step": cfg.clip.steps,
                                                     "model": model.state_dict(),
                                                     "vocab": tokenizer.words})
        return metrics
    key = run_key(cfg, ("data.concept_class", "clip"))
    return run_once(stage_dir(cfg, "clip"), key, force, "clip", work)


def _train(cfg: Config, device) -> tuple[TinyClip, Tokenizer, dict]:
    classes = base_classes(cfg.data)
    train = load_split(cfg.data, "train", cache_root(cfg)).only(classes)
    test = load_split(cfg.data, "test", cache_root(cfg)).only(classes)
    tokenizer = build_tokenizer(cfg)
    model = TinyClip(len(tokenizer), cfg.clip).to(device)
    opt = torch.optim.AdamW(weight_decay_groups(model, cfg.clip.weight_decay), lr=cfg.clip.lr,
                            **FUSED)
    images = to_float(train.x)
    rng = np.random.default_rng(cfg.run.seed)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    names = train.classes
    start = time.time()
    bar = tqdm(enumerate(random_batches(len(train), cfg.clip.batch_size, gen, cfg.clip.steps)),
               total=cfg.clip.steps, desc="clip")
    model.train()
    for step, idx in bar:
        # a fresh caption and flip/shift per image each step, so no image is tied to one caption
        for group in opt.param_groups:
            group["lr"] = cfg.clip.lr * warmup_cosine(step, cfg.clip.steps, cfg.clip.warmup)
        x = flip_and_shift(images[idx], max_shift=2 if cfg.data.dataset == "cifar10" else 1,
                           generator=gen)
        texts = captions.random_captions(cfg.data.dataset, names, train.y[idx],
                                         None if train.attrs is None else train.attrs[idx], rng,
                                         cfg.clip.attribute_prob)
        tokens = tokenizer(texts)
        # equal captions share an id
        caption_ids = torch.unique(tokens, dim=0, return_inverse=True)[1]
        loss = model(x.to(device), tokens.to(device), caption_ids.to(device))
        check_finite(loss, "clip", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scale = model.logit_scale.detach()
        if not torch.isfinite(scale):
            raise Diverged(f"clip: the logit scale is {scale.item()} after step {step}: training "
                           "diverged. Lower the learning rate and start over with --force")
        # the temperature 1/exp(scale), without a division: inf or 0, never an error
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{(-scale).exp().item():.3f}")
    train_seconds = time.time() - start
    model.eval()
    test_labels = torch.tensor([classes.index(names[int(y)]) for y in test.y])
    accuracy = zero_shot_accuracy(model, tokenizer, to_float(test.x), test_labels, classes,
                                  cfg.data.dataset)
    summary = (f"zero-shot accuracy {accuracy['accuracy']:.1%} on {len(test)} test images of "
               f"{len(classes)} base classes ({train_seconds:.0f}s training)")
    print(f"clip: {summary}")
    return model, tokenizer, {
        "stage": "clip", "summary": summary, "steps": cfg.clip.steps,
        "train_seconds": train_seconds, "device": str(device),
        "parameters": sum(p.numel() for p in model.parameters()), "final_loss": loss.item(),
        "zero_shot_test": accuracy, "n_test_images": len(test), "classes": list(classes)}
