"""Stage gan-transfer: the pretrained unconditional GAN becomes a conditional GAN of the target
classes, from k real images per class (Laria et al. 2022, Sec. 3-4), with the paper's ablations in
one harness.

Three switches (cfg.transfer) make every variant:
    generator  scratch    a ConditionalGenerator (class embedding added to w) and a multi-head D,
                          both freshly initialised, trained on the k-shot target data
               finetune   the pretrained G with that class embedding added (zero-initialised, so
                          step 0 is the pretrained G for every class); every G parameter trains
               hypermod   hyper-modulation (hypermod.py) of the frozen pretrained G
    selfinit   hypermod only: self-initialize the hypernetwork first (selfinit.py), no real data
               involved
    ssl        none | barlow | ntxent: a self-supervised loss on D's features
and transfer.head (dense | lowrank) picks the hyper-modulation heads. Every generator but scratch
starts D from the pretrained one with fresh class heads (conditional_from_unconditional;
transfer.d_class_init) and trains all of it, the class heads with their own learning rate
(transfer.d_class_lr_mul). The hyper-modulated generator trains its heads at transfer.lr and its
class network at transfer.class_lr_mul times that (the official 0.001). Training is minigan/loop.py
with the transfer settings; the generator's loss and schedule are the same for every variant, so
only the switches separate them.

Repeats: transfer.seed (with run.seed and gan.seed) seeds everything random in a transfer (new
heads, self-init, training draws, evaluation samples), while the pretrained GAN (gan.seed) is shared
by every repeat and every variant. The rows that self-initialize the same heads from the same GAN
(with and without the SSL loss, at any k) share one self-initialization (a cache entry).

Writes runs/<preset>/gan-transfer/b<gan seed>-<variant>-k<k>-s<seed>/{checkpoint.pt, grid.png (one
row per class), real.png (up to 10 of the k training images per class), metrics.json}; <variant>
names the switches, e.g. "hypermod+selfinit+ssl-lowrank" or "finetune" (variant_name). ABLATION
lists the paper's ablation rows and CURVE the variants of the data-efficiency curve.
"""
from __future__ import annotations

import time

import torch

from core import checkpoint, distributed
from core.cache import cache_root, cached
from core.config import Config
from core.data import class_names, load_split, to_float
from core.images import save_grid
from core.presets import transfer_lr
from core.training import count_parameters, mix_seed, setup
from eval.evalnet import evaluator_path, load_evaluator
from minigan.discriminator import conditional_from_unconditional
from minigan.generator import ConditionalGenerator
from minigan.hypermod import HyperModulatedGenerator
from minigan.loop import GanTrainer, LoopSpec
from minigan.pretrain import (build_discriminator, build_generator, gan_name, load_pretrained,
                              pretrained_path)
from minigan.quality import sample_images, transfer_quality
from minigan.selfinit import self_initialize_and_check
from minigan.separation import class_separation
from pipeline.runs import RunFolder, run_key, run_once, stage_dir

KIND = "gan-transfer"
ABLATION = (  # (generator, selfinit, ssl, head): the rows of the paper's ablation, in order
    ("scratch", False, "none", "lowrank"),
    ("finetune", False, "none", "lowrank"),
    ("hypermod", False, "none", "lowrank"),
    ("hypermod", True, "none", "lowrank"),
    ("hypermod", True, "barlow", "lowrank"),
    ("hypermod", True, "barlow", "dense"),
)
# the data-efficiency curve: scratch, finetune, hypermod+all (2 heads)
CURVE = tuple(ABLATION[i] for i in (0, 1, 4, 5))
# its images per target class, per preset
CURVE_K = {"quick": (3, 10, 30, 100), "cifar10": (10, 30, 100), "cifar10-cpu": (10, 30, 100)}
# class separation measured this many times over a transfer (and at step 0)
MONITOR_POINTS = 8


def with_switches(cfg: Config, generator: str, selfinit: bool, ssl: str, head: str) -> Config:
    """cfg with one ablation row's switches."""
    return cfg.updated("transfer", generator=generator, selfinit=selfinit, ssl=ssl, head=head)


def transfer_seed(cfg: Config) -> int:
    """The seed of one repeat (transfer.seed) of a transfer from the pretrained GAN of gan.seed."""
    return mix_seed(cfg.run.seed, cfg.gan.seed, cfg.transfer.seed)


def transfer_name(cfg: Config) -> str:
    """'<base>-<variant>-k<k>-s<seed>', e.g. 'b0-finetune-k10-s0'."""
    return f"{gan_name(cfg)}-{variant_name(cfg)}-k{cfg.data.k_per_target}-s{cfg.transfer.seed}"


def variant_name(cfg: Config) -> str:
    """'hypermod+selfinit+ssl-lowrank', 'finetune', 'finetune-lr0.002' (ssl is the Barlow Twins
    loss; others say their name; a learning rate set with transfer.lr is in the name)."""
    t = cfg.transfer
    name = t.generator + "+selfinit" * t.selfinit
    if t.ssl != "none":
        name += "+" + ("ssl" if t.ssl == "barlow" else t.ssl)
    name = f"{name}-{t.head}" if t.generator == "hypermod" else name
    # a rate other than the preset's: a variant of its own
    return name + (f"-lr{t.lr:g}" if t.lr >= 0 else "")


def few_shot_targets(cfg: Config):
    """k train images of each target class: (ImageSet, images (C*k, 3, H, W) in [-1, 1], labels
    (C*k,) in 0..C-1, the index into cfg.data.target_classes)."""
    names, targets, k = class_names(cfg.data), cfg.data.target_classes, cfg.data.k_per_target
    data = load_split(cfg.data, "train", cache_root(cfg)).only(targets).per_class(k)
    counts = {c: int((data.y == names.index(c)).sum()) for c in targets}
    if any(n < k for n in counts.values()):
        raise ValueError(f"data.k_per_target={k} but the train split has only {counts} "
                         f"target images")
    local = torch.tensor([targets.index(names[int(y)]) for y in data.y])
    return data, to_float(data.x), local


def build_models(cfg: Config, device):
    """(G, D, G's Adam parameter groups, the pretrained/fresh plain generator) for
    cfg.transfer.generator."""
    n, t, lr = len(cfg.data.target_classes), cfg.transfer, transfer_lr(cfg)
    if t.generator == "scratch":
        base = build_generator(cfg).to(device)
        G = ConditionalGenerator(base, n)
        return (G, build_discriminator(cfg, n).to(device),
                [{"params": G.trainable_parameters(), "lr": lr}], base)
    base, D = load_pretrained(cfg, device)
    D = conditional_from_unconditional(D, n, t.d_cond, t.d_class_init)
    if t.generator == "finetune":
        G = ConditionalGenerator(base, n)
        return G, D, [{"params": G.trainable_parameters(), "lr": lr}], base
    G = HyperModulatedGenerator(base, n, head=t.head, rank=t.rank, embed_dim=t.embed_dim)
    return G, D, G.parameter_groups(lr, t.class_lr_mul), base


def transfer_spec(cfg: Config) -> LoopSpec:
    t = cfg.transfer
    return LoopSpec(steps=t.steps, batch_size=t.batch_size, lr_g=transfer_lr(cfg), lr_d=t.d_lr,
                    r1_gamma=t.r1_gamma, r1_every=cfg.gan.r1_every, ema_decay=t.ema_decay,
                    augment=t.augment, ssl=t.ssl, ssl_weight=t.ssl_weight,
                    d_class_lr_mul=t.d_class_lr_mul, checkpoint_every=t.checkpoint_every,
                    monitor_every=max(1, t.steps // MONITOR_POINTS), seed=transfer_seed(cfg))


def transfer_gan(cfg: Config, force: bool = False) -> dict:
    """Transfer (resume, or if finished before with the same settings, skip); returns the run's
    metrics."""
    inputs = {"evaluator": evaluator_path(cfg)}
    if cfg.transfer.generator != "scratch":
        inputs["pretrained"] = pretrained_path(cfg)
    key = run_key(cfg, ("data.target_classes", "data.k_per_target", "gan", "transfer"), **inputs)
    # the preset's choice can change: the key holds the rate used
    key["transfer.lr_used"] = transfer_lr(cfg)
    device = distributed.init(setup(cfg))  # before the run folder: rank 0 alone locks and writes it
    return run_once(stage_dir(cfg, KIND, transfer_name(cfg)), key, force,
                    f"{KIND} {transfer_name(cfg)}", lambda run: _transfer(cfg, run, device))


def start_from_selfinit(cfg: Config, G: HyperModulatedGenerator, evaluator, seed: int) -> dict:
    """Self-initialize G (or, with random heads, only measure where it starts) and return the start
    check. Self-initialization depends on the pretrained GAN, the heads and the self-init settings,
    not on k, the SSL loss or the rest of the transfer: the rows that share those share one
    computation (core.cache)."""
    t = cfg.transfer
    if not t.selfinit:
        return self_initialize_and_check(G, evaluator, t, cfg.gan.eval_samples, seed)
    key = ["selfinit", checkpoint.fingerprint(pretrained_path(cfg)), evaluator.checkpoint_hash,
           seed, len(cfg.data.target_classes), cfg.gan.eval_samples,
           {k: getattr(t, k) for k in ("head", "rank", "embed_dim", "d_cond", "d_class_init",
                                       "selfinit_steps", "selfinit_batch", "selfinit_lr",
                                       "selfinit_class_lr_mul", "selfinit_noise")}]

    def compute() -> dict:
        start = self_initialize_and_check(G, evaluator, t, cfg.gan.eval_samples, seed)
        return {"G": {k: v.cpu() for k, v in G.state_dict().items()}, "start": start}
    done = cached(cache_root(cfg), "selfinit", key, compute)
    G.load_state_dict(done["G"])
    return done["start"]


def _transfer(cfg: Config, run: RunFolder, device) -> dict:
    # every draw below comes from `seed`: the self-init check samples from seed + 1..3, the quality
    # samples from seed + 10, the class separation from seed + 20 (during training) and seed + 30
    # (at the end)
    t, targets, out, seed = cfg.transfer, cfg.data.target_classes, run.folder, transfer_seed(cfg)
    begin = time.time()
    data, images, local = few_shot_targets(cfg)
    torch.manual_seed(seed)  # new heads (G and D); then the training draws
    G, D, g_groups, base = build_models(cfg, device)
    g_params = [p for group in g_groups for p in group["params"]]
    trainer = GanTrainer(G, D, g_groups, cfg.gan.z_dim, images.to(device), local.to(device),
                         len(targets), transfer_spec(cfg), f"{KIND} {variant_name(cfg)}")
    evaluator = load_evaluator(cfg, device)
    path = out / "checkpoint.pt"
    payload = run.resume(path, KIND)
    if payload is not None:
        trainer.load_state(payload)
        start = payload["start_check"]
        if distributed.is_main():
            print(f"{KIND}: resuming {variant_name(cfg)} from step {trainer.step}")
    else:
        start = None
        if isinstance(G, HyperModulatedGenerator):
            start = start_from_selfinit(cfg, G, evaluator, seed)
        # the EMA starts from the (self-)initialised G
        trainer.ema.model.load_state_dict(G.state_dict())
    extra = {"kind": KIND, "config": cfg.to_dict(), "run": variant_name(cfg), "start_check": start}

    def separation(G_ema):  # features of 64 shared z per class, the same z at every step
        return {"separation":
                class_separation(G_ema, len(targets), 64, seed + 20, evaluator)["features"]}
    trainer.train(lambda state: run.save_checkpoint(path, {**extra, **state}), monitor=separation)
    distributed.barrier()
    if not distributed.is_main():
        return {}
    G_ema = trainer.ema.model
    per_row = 10
    grid_labels = torch.arange(len(targets)).repeat_interleave(per_row)
    save_grid(sample_images(G_ema, len(grid_labels), grid_labels, seed=seed), out / "grid.png",
              nrow=per_row, scale=4)
    shown = torch.cat([torch.nonzero(local == c).flatten()[:per_row] for c in range(len(targets))])
    save_grid(data.x[shown], out / "real.png", nrow=min(per_row, cfg.data.k_per_target), scale=4)
    q = transfer_quality(cfg, evaluator, G_ema, data, seed + 10)
    sep = class_separation(G_ema, len(targets), 200, seed + 30, evaluator)
    summary = (f"per-class KID {q['kid']:.4f}, FD-eval {q['fd_eval']:.2f} "
               f"(floor {q['fd_eval_floor']:.2f}), recall {q['recall']:.2f}, "
               f"coverage {q['coverage']:.2f}, among targets {q['accuracy_among_targets']:.1%} "
               f"(real images {q['real_accuracy_among_targets']:.1%}), "
               f"class separation {sep['features']:.2f}, "
               f"{count_parameters(g_params):,} trainable parameters, {trainer.seconds:.0f}s")
    print(f"{KIND} {variant_name(cfg)}: {summary}")
    return {"stage": KIND, "summary": summary, "name": transfer_name(cfg), "base": gan_name(cfg),
            "variant": variant_name(cfg), "seed": t.seed, "generator": t.generator,
            "selfinit": t.selfinit, "ssl": t.ssl, "head": t.head,
            "target_classes": list(targets), "k_per_target": cfg.data.k_per_target,
            "steps": trainer.step, "train_seconds": trainer.seconds, "seconds": time.time() - begin,
            "device": str(device),
            "world_size": distributed.world_size(), "torch_threads": torch.get_num_threads(),
            "trainable_parameters": count_parameters(g_params),
            "base_g_parameters": count_parameters(base.parameters()),
            "d_parameters": count_parameters(D.parameters()), "start_check": start,
            "class_spread": (G_ema.class_spread() if isinstance(G_ema, HyperModulatedGenerator)
                             else None),
            "class_separation": sep,
            "separation_log": [(e["step"], e["separation"]) for e in trainer.log
                               if "separation" in e],
            "final_losses": trainer.log[-1], "loss_log": trainer.log, "quality": q}


def load_generator(path, device="cpu"):
    """(the EMA generator of a gan-pretrain or gan-transfer checkpoint, built from its own config,
    that config): unconditional for a pretrained GAN, G(z, label) with labels indexing
    data.target_classes for a transfer."""
    payload = checkpoint.load(path)
    if payload.get("kind") not in ("gan-pretrain", KIND):
        raise checkpoint.CheckpointMismatch(f"{path} holds a {payload.get('kind')!r} checkpoint, "
                                            f"not a GAN (gan-pretrain or gan-transfer)")
    cfg = Config.from_dict(payload["config"])
    G, n, t = build_generator(cfg), len(cfg.data.target_classes), cfg.transfer
    if payload["kind"] == KIND:
        G = HyperModulatedGenerator(G, n, head=t.head, rank=t.rank, embed_dim=t.embed_dim) \
            if t.generator == "hypermod" else ConditionalGenerator(G, n)
    G.load_state_dict(payload["ema"]["model"])
    return G.to(device).eval(), cfg
