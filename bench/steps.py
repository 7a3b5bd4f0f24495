"""One step of each stage, built with the project's own constructors at a config's widths on random
data, for counting and timing (bench/gpu_estimate.py, bench/roofline.py). Each *_step(cfg, b)
returns (step, params): a function running one step at batch b, and the parameters whose storage is
not an activation."""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F

from bench.counting import count
from core import captions
from core.config import Config
from core.data import ImageSet, base_classes, class_names
from core.presets import transfer_lr
from core.training import EMA, FUSED, weight_decay_groups
from eval.evalnet import Evaluator, fit
from minidiff.clip import TextEncoder, TinyClip
from minidiff.customize import prepare
from minidiff.diffusion import Diffusion
from minidiff.regularizers import anchor_prompts, prior_prompt
from minidiff.train_clip import build_tokenizer
from minidiff.train_customize import Regularizer, customization_loss
from minidiff.train_diffusion import build_model, training_step
from minigan.generator import ConditionalGenerator
from minigan.hypermod import HyperModulatedGenerator
from minigan.loop import GanTrainer
from minigan.pretrain import build_discriminator, build_generator, pretrain_spec
from minigan.selfinit import self_initialize
from minigan.transfer import transfer_spec


def images(cfg: Config, n: int) -> torch.Tensor:
    return torch.rand(n, 3, cfg.data.resolution, cfg.data.resolution) * 2 - 1


def fake_split(cfg: Config, n: int) -> ImageSet:
    """n random uint8 images labelled with the base classes (shapes: attributes 0), as a training
    split."""
    names, base, r = class_names(cfg.data), base_classes(cfg.data), cfg.data.resolution
    y = torch.tensor([names.index(base[i % len(base)]) for i in range(n)])
    attrs = torch.zeros(n, 3, dtype=torch.long) if cfg.data.dataset == "shapes" else None
    return ImageSet(torch.randint(256, (n, r, r, 3), dtype=torch.uint8), y, attrs, names)


def text_to_image(cfg: Config):
    tokenizer = build_tokenizer(cfg)
    return build_model(cfg, TextEncoder(len(tokenizer), cfg.clip), tokenizer)


# --------------------------------------------------------------------------- one step of each stage

def clip_step(cfg: Config, b: int):
    tokenizer = build_tokenizer(cfg)
    model = TinyClip(len(tokenizer), cfg.clip)
    opt = torch.optim.AdamW(weight_decay_groups(model, cfg.clip.weight_decay), lr=cfg.clip.lr,
                            **FUSED)
    base, template = base_classes(cfg.data), captions.TEMPLATES[cfg.data.dataset][0]
    tokens = tokenizer([captions.class_caption(template, base[i % len(base)]) for i in range(b)])
    ids, x = torch.unique(tokens, dim=0, return_inverse=True)[1], images(cfg, b)
    return (lambda: (opt.zero_grad(), model(x, tokens, ids).backward(), opt.step()),
            list(model.parameters()))


def evaluator_step(cfg: Config, b: int):
    model, split = Evaluator(cfg.evalnet, len(class_names(cfg.data))), fake_split(cfg, b)
    # fit(): exactly one step
    ec = dataclasses.replace(cfg.evalnet, batch_size=b, epochs=1, warmup_epochs=0)
    return (lambda: fit(model, split.x, lambda logits, i: F.cross_entropy(logits, split.y[i]),
                        ec, 0, "count"),
            list(model.parameters()))


def diffusion_step(cfg: Config, b: int):
    model, split = text_to_image(cfg), fake_split(cfg, 64)
    opt = torch.optim.AdamW(model.unet.parameters(), lr=cfg.diffusion.lr, **FUSED)
    ema = EMA(model.unet, cfg.diffusion.ema_decay)
    args = (cfg.updated("diffusion", batch_size=b), model, model.unet,
            Diffusion(cfg.diffusion.timesteps, cfg.diffusion.schedule), opt, ema, images(cfg, 64),
            split, 0)
    return lambda: training_step(*args), list(model.parameters()) + list(ema.model.parameters())


def customize_step(cfg: Config, b: int):
    """customization_loss + backward + clipped step on b concept images, set up as _customize
    does."""
    cc, classes = cfg.customize, base_classes(cfg.data)
    model, diffusion = (text_to_image(cfg),
                        Diffusion(cfg.diffusion.timesteps, cfg.diffusion.schedule))
    anchors, reg = anchor_prompts(cfg), Regularizer()
    if cc.method == "full+prior":
        reg.prior = (prior_prompt(cfg), images(cfg, cc.n_prior_images))
    if cc.reg == "functional":                   # the frozen copy, and one base image per anchor
        reg.frozen = copy.deepcopy(model).requires_grad_(False).eval()
        one = torch.ones(len(anchors), dtype=torch.long)
        reg.anchor_images = (images(cfg, len(anchors)), torch.cumsum(one, 0) - one, one)
    params = prepare(model, cfg, classes)
    if cc.reg == "l2":
        reg.initial = {n: p.detach().clone()
                       for n, p in model.named_parameters() if p.requires_grad}
    opt, x0 = torch.optim.AdamW(params, **FUSED), images(cfg, b)
    prompt = cc.prompt.format(cc.placeholder)
    model.eval()

    def step():
        opt.zero_grad(set_to_none=True)
        customization_loss(cfg, model, diffusion, x0, prompt, anchors, reg)[0].backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.diffusion.grad_clip, foreach=True)
        opt.step()
    return (step, list(model.parameters())
            + (list(reg.frozen.parameters()) if reg.frozen is not None else []))


def gan_models(cfg: Config, transfer: bool):
    """(G, D, G's parameter groups, labels, classes) of pretraining or of a transfer row, fresh
    weights (as minigan.transfer.build_models; scratch and finetune have the same shapes)."""
    G, t, n = build_generator(cfg), cfg.transfer, len(cfg.data.target_classes)
    if not transfer:
        return G, build_discriminator(cfg), [{"params": list(G.parameters())}], None, 0
    if t.generator == "hypermod":
        G = HyperModulatedGenerator(G, n, head=t.head, rank=t.rank, embed_dim=t.embed_dim)
        groups = G.parameter_groups(transfer_lr(cfg), t.class_lr_mul)
    else:
        G = ConditionalGenerator(G, n)
        groups = [{"params": G.trainable_parameters()}]
    return G, build_discriminator(cfg, n), groups, torch.randint(n, (256,)), n


def gan_step(cfg: Config, b: int, transfer: bool, r1: bool):
    """D step (with or without the lazy R1 term) + G step of minigan/loop.py at batch b."""
    G, D, groups, labels, n = gan_models(cfg, transfer)
    spec = dataclasses.replace(transfer_spec(cfg) if transfer else pretrain_spec(cfg), batch_size=b)
    trainer = GanTrainer(G, D, groups, cfg.gan.z_dim, images(cfg, 256), labels, n, spec, "count")
    trainer.step = 0 if r1 else 1                 # R1 runs when step % r1_every == 0
    return lambda: (trainer.d_step(), trainer.g_step()), list(G.parameters()) + list(D.parameters())


def selfinit_step(cfg: Config, b: int):
    G, t = gan_models(cfg, transfer=True)[0], cfg.transfer
    return (lambda: self_initialize(G, 1, b, t.selfinit_lr, t.selfinit_class_lr_mul,
                                    progress=False),
            list(G.parameters()))


@torch.no_grad()
def unet_flops(cfg: Config, b: int = 2) -> float:
    """FLOPs per image of one UNet pass: a DDIM step costs 2 of them with guidance, a classifier
    score 1."""
    model, x = text_to_image(cfg).eval(), images(cfg, b)
    return count(lambda: model(x, torch.zeros(b, dtype=torch.long), model.encode([""] * b)),
                 [])["flops"] / b
