"""Train the base text-to-image DDPM on the base classes (`python train.py diffusion`), then judge
its samples with the evaluator (`python train.py diffusion-judge`).

Training is Algorithm 1 of Ho et al. (2020) on random captions of the base classes, a caption
dropped to the empty prompt with probability cond_drop_prob so that one model gives both halves of
classifier-free guidance. AdamW with warm-up and cosine decay, gradient clipping, EMA weights
(sampling and every measurement use them). Each base model has its own seed (diffusion.seed;
`--bases N` trains N of them on the same CLIP). The run folder is runs/<preset>/diffusion/b<seed>/
(last.pt, per-class sample grids); the judge's, runs/<preset>/diffusion-judge/b<seed>/, holds how
often the evaluator recognises the samples, so that retraining the evaluator re-judges the model
without retraining it.

Engineering around the loop: exact resume from last.pt (every random draw is seeded by (seed, rank,
step)), a clear stop on NaN/inf, bf16 autocast and channels_last on CUDA (optional torch.compile),
multi-GPU through torchrun (core/distributed.py).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from core import captions, checkpoint, distributed
from core.cache import cache_root
from core.config import Config
from core.data import base_classes, load_split, to_float
from core.images import save_grid
from core.training import (EMA, FUSED, autocast, check_finite, count_parameters, mix_seed,
                           random_flip, setup, warmup_cosine)
from eval.evalnet import evaluator_path
from minidiff.clip import TextEncoder
from minidiff.diffusion import Diffusion
from minidiff.quality import sample_quality
from minidiff.text2img import TextToImage, generate
from minidiff.tokenizer import Tokenizer
from minidiff.train_clip import clip_path, load_clip
from minidiff.unet import UNet
from pipeline.runs import RunFolder, fields_except, require_finished, run_key, run_once, stage_dir

SAMPLING = ("sample_steps", "guidance", "eta", "quality_samples")  # used after training, not by it


def training_step(cfg, model, unet, diffusion, opt, ema, images, train, step) -> torch.Tensor:
    """One optimizer step of Algorithm 1 on this rank's share of the batch, random (or dropped)
    captions.

    Every random draw of the step (images, captions, flips, t, noise) comes from a seed of (run
    seed, base seed, step, rank), so a resumed run replays exactly what an uninterrupted one does,
    and ranks draw different batches.
    """
    dc = cfg.diffusion
    seed = mix_seed(cfg.run.seed, dc.seed, step, distributed.rank())
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = images.device
    idx = torch.randint(len(train), (dc.batch_size // distributed.world_size(),))
    texts = captions.random_captions(cfg.data.dataset, train.classes, train.y[idx],
                                     None if train.attrs is None else train.attrs[idx], rng,
                                     dc.attribute_prob)
    # classifier-free guidance: some captions become the empty prompt, so the model also learns
    # eps(x_t, "")
    texts = ["" if drop else t
             for t, drop in zip(texts, rng.random(len(texts)) < dc.cond_drop_prob)]
    x0 = random_flip(images[idx.to(device)])
    if device.type == "cuda":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        cond = model.encode(texts)  # the frozen text encoder: token states (B, L, D), pooled (B, E)
    for group in opt.param_groups:
        group["lr"] = dc.lr * warmup_cosine(step, dc.steps, dc.warmup)
    with autocast(device):
        # || eps - eps_theta(x_t, t, c) ||^2
        loss = diffusion.loss(lambda x, t: unet(x, t, *cond), x0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.unet.parameters(), dc.grad_clip, foreach=True)
    opt.step()
    ema.update(model.unet)
    return loss.detach()


def _train(cfg: Config, run: RunFolder, device) -> dict:
    out, dc = run.folder, cfg.diffusion
    if dc.batch_size % distributed.world_size():
        raise ValueError(f"diffusion.batch_size={dc.batch_size} must divide among "
                         f"{distributed.world_size()} ranks")
    clip, tokenizer = load_clip(clip_path(cfg), cfg, device)
    classes = base_classes(cfg.data)
    train = load_split(cfg.data, "train", cache_root(cfg)).only(classes)
    images = to_float(train.x).to(device)

    torch.manual_seed(mix_seed(cfg.run.seed, dc.seed))   # this base model's initial weights
    model = build_model(cfg, clip.text, tokenizer).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    unet = torch.compile(model.unet) if cfg.run.compile and device.type == "cuda" else model.unet
    unet = distributed.wrap(unet, device)
    diffusion = Diffusion(dc.timesteps, dc.schedule)
    opt = torch.optim.AdamW(model.unet.parameters(), lr=dc.lr, weight_decay=dc.weight_decay,
                            **FUSED)
    ema = EMA(model.unet, dc.ema_decay)
    last = out / "last.pt"
    state = {"step": 0, "train_seconds": 0.0, "loss": None}   # what a resumed run continues from
    payload = run.resume(last, "diffusion")
    if payload is not None:
        model.unet.load_state_dict(payload["model"])
        ema.load_state_dict(payload["ema"])
        opt.load_state_dict(payload["optimizer"])
        state = {k: payload[k] for k in state}
        if distributed.is_main():
            print(f"diffusion: resuming from step {state['step']} ({last})")
    start_step, start_seconds = state["step"], state["train_seconds"]

    def save() -> None:
        run.save_checkpoint(last, {"kind": "diffusion", "config": cfg.to_dict(), **state,
                                   "model": model.unet.state_dict(), "ema": ema.state_dict(),
                                   "optimizer": opt.state_dict(), "text": clip.text.state_dict(),
                                   "vocab": tokenizer.words})

    prompts = class_prompts(cfg, classes)
    model.train()
    start = time.time() - state["train_seconds"]
    bar = tqdm(range(start_step, dc.steps), initial=start_step, total=dc.steps,
               desc=f"diffusion {base_name(cfg)}", disable=not distributed.is_main())
    for step in bar:
        loss = training_step(cfg, model, unet, diffusion, opt, ema, images, train, step)
        check_finite(loss, "diffusion", step)
        state.update(step=step + 1, train_seconds=time.time() - start, loss=loss.item())
        if step % 25 == 0:
            seen = (step + 1 - start_step) * dc.batch_size
            bar.set_postfix(loss=f"{state['loss']:.4f}",
                            img_s=f"{seen / (time.time() - start):.0f}")
        done = step + 1
        if done == dc.steps or dc.checkpoint_every and done % dc.checkpoint_every == 0:
            save()
        if (distributed.is_main() and dc.sample_every and done % dc.sample_every == 0
                and done < dc.steps):
            sample_grid(cfg, ema_model(model, ema), diffusion, prompts,
                        out / f"samples_{done:06d}.png")
    distributed.barrier()
    if not distributed.is_main():
        return {}
    sample_grid(cfg, ema_model(model, ema), diffusion, prompts, out / "samples.png")
    session = state["train_seconds"] - start_seconds
    summary = f"{dc.steps} steps in {state['train_seconds']:.0f}s, final loss {state['loss']:.4f}"
    print(f"diffusion {base_name(cfg)}: {summary}")
    return {"stage": "diffusion", "summary": summary, "base": base_name(cfg), "steps": dc.steps,
            "resumed_from": start_step, "train_seconds": state["train_seconds"],
            "final_loss": state["loss"],
            "train_images_per_second": ((dc.steps - start_step) * dc.batch_size / session
                                        if session > 0 else None),
            "unet_parameters": count_parameters(model.unet.parameters()), "device": str(device),
            "world_size": distributed.world_size(), "classes": list(classes)}


# ---------------------------------------------------------------------------------------- the model

def build_model(cfg: Config, text: TextEncoder, tokenizer: Tokenizer) -> TextToImage:
    unet = UNet(cfg.diffusion, cfg.data.resolution, context_dim=cfg.clip.width,
                pooled_dim=cfg.clip.embed_dim)
    return TextToImage(unet, text, tokenizer)


def load_diffusion(path, device="cpu",
                   ema: bool = True) -> tuple[TextToImage, Diffusion, Config, dict]:
    """The model stored in a diffusion checkpoint, built from the checkpoint's own config (EMA
    weights by default), with its Diffusion process, config and raw payload."""
    payload = checkpoint.load(path, kind="diffusion")
    cfg = Config.from_dict(payload["config"])
    tokenizer = Tokenizer(payload["vocab"], cfg.clip.context_length)
    text = TextEncoder(len(tokenizer), cfg.clip)
    text.load_state_dict(payload["text"])
    model = build_model(cfg, text, tokenizer)
    model.unet.load_state_dict(payload["ema"]["model"] if ema else payload["model"])
    return (model.to(device).eval(), Diffusion(cfg.diffusion.timesteps, cfg.diffusion.schedule),
            cfg, payload)


def ema_model(model: TextToImage, ema: EMA) -> TextToImage:
    """A TextToImage sharing the text encoder and tokenizer, with the EMA UNet."""
    return TextToImage(ema.model, model.text, model.tokenizer).eval()


def class_prompts(cfg: Config, classes) -> list[str]:
    """The plain prompt of each class, e.g. 'a photo of a star'."""
    return [captions.class_caption(captions.TEMPLATES[cfg.data.dataset][0], c) for c in classes]


def sample_grid(cfg: Config, model: TextToImage, diffusion: Diffusion, prompts: list[str], path,
                per_row: int = 8):
    """One row per class prompt, same seeds in every row: a PNG of the model's current samples."""
    dc = cfg.diffusion
    seeds = list(range(per_row)) * len(prompts)
    images = generate(model, diffusion, [p for p in prompts for _ in range(per_row)], seeds,
                      cfg.data.resolution, dc.sample_steps, dc.guidance, dc.eta, cfg.run.unet_batch,
                      progress=False)
    save_grid(images, path, nrow=per_row, scale=max(1, 64 // cfg.data.resolution))


# --------------------------------------------------------------------------------------- the stages

def base_name(cfg: Config) -> str:
    """'b0': the base model of diffusion.seed 0."""
    return f"b{cfg.diffusion.seed}"


def base_model_path(cfg: Config):
    """The finished base model of cfg's preset and diffusion.seed,
    runs/<preset>/diffusion/b<seed>/last.pt."""
    return require_finished(stage_dir(cfg, "diffusion", base_name(cfg)), "last.pt",
                            f"python train.py diffusion --preset {cfg.run.preset} "
                            f"--diffusion.seed={cfg.diffusion.seed}")


def train_diffusion(cfg: Config, force: bool = False) -> dict:
    """Train (resume, or if finished before with the same settings, skip) one base model; its
    metrics."""
    key = run_key(cfg, ("data.concept_class",) + fields_except(cfg, "diffusion", SAMPLING),
                  clip=clip_path(cfg))
    device = distributed.init(setup(cfg))  # before the run folder: rank 0 alone locks and writes it
    return run_once(stage_dir(cfg, "diffusion", base_name(cfg)), key, force,
                    f"diffusion {base_name(cfg)}", lambda run: _train(cfg, run, device))


def judge_diffusion(cfg: Config, force: bool = False) -> dict:
    """How often the evaluator recognises the base model's guided samples, and their FD-eval."""
    def work(run):
        start = time.time()
        model, diffusion, _, _ = load_diffusion(path, setup(cfg))
        quality = sample_quality(cfg, model, diffusion, base_classes(cfg.data), model.device)
        print(f"diffusion-judge {base_name(cfg)}: {quality['summary']}")
        return {"stage": "diffusion-judge", "base": base_name(cfg), "summary": quality["summary"],
                "samples": quality, "seconds": time.time() - start}
    path = base_model_path(cfg)
    key = run_key(cfg, ("data.concept_class", "diffusion"), base=path,
                  evaluator=evaluator_path(cfg))
    return run_once(stage_dir(cfg, "diffusion-judge", base_name(cfg)), key, force,
                    f"diffusion-judge {base_name(cfg)}", work)
