"""Stage gan-transfer: the pretrained unconditional GAN becomes a conditional GAN of the target classes,
from k real images per class (Laria et al. 2022, Sec. 3-4), with the paper's ablations in one harness.

cfg.transfer.variant:
    scratch                a ConditionalGenerator (class embedding added to w) and a multi-head D, both
                           freshly initialised, trained on the k-shot target data
    finetune               the pretrained G with that class embedding added (zero-initialised, so step 0
                           is the pretrained G for every class); every G parameter trains
    hypermod               hyper-modulation (hypermod.py) of the frozen pretrained G, random heads
    hypermod+selfinit      the same after self-initialization (selfinit.py), no real data involved
    hypermod+selfinit+ssl  the same plus a self-supervised loss on D's features (cfg.transfer.ssl)
cfg.transfer.head (dense | lowrank) picks the hyper-modulation heads. Every variant except scratch starts
D from the pretrained one (conditional_from_unconditional: every class head = the unconditional head)
and trains all of it, the class heads with a larger learning rate (transfer.d_class_lr_mul). Training is
minigan/loop.py with the transfer settings; the generator's loss and schedule are the same for every
variant, so only the listed difference separates them.

Writes runs/<preset>/gan-transfer/<run>/{checkpoint.pt, grid.png (one row per class), real.png (up to
10 of the k training images per class), metrics.json}; <run> is "<variant>-<head>" for the hyper-modulation variants
and "<variant>" for scratch and finetune. transfer_ablation(cfg) runs ABLATION; gan_table(cfg) turns
every finished run's metrics.json into runs/<preset>/gan-transfer/table.md.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from core import checkpoint, distributed
from core.config import Config
from core.data import check_splits, class_names, load_split, to_float
from core.images import save_grid
from core.training import cache_dir, count_parameters, read_json, setup, stage_dir, write_json
from eval.report import markdown_table
from minigan.discriminator import conditional_from_unconditional
from minigan.evaluate import load_evaluator_or_none, sample_images, selfinit_check, transfer_quality
from minigan.generator import ConditionalGenerator
from minigan.hypermod import HyperModulatedGenerator
from minigan.loop import SSL_LOSSES, GanTrainer, LoopSpec
from minigan.pretrain import build_discriminator, build_generator, load_pretrained
from minigan.selfinit import self_initialize

KIND = "gan-transfer"
VARIANTS = ("scratch", "finetune", "hypermod", "hypermod+selfinit", "hypermod+selfinit+ssl")
HEADS = ("dense", "lowrank")
ABLATION = (("scratch", "lowrank"), ("finetune", "lowrank"), ("hypermod", "lowrank"),
            ("hypermod+selfinit", "lowrank"), ("hypermod+selfinit+ssl", "lowrank"),
            ("hypermod+selfinit+ssl", "dense"))          # (variant, head); head only matters for hypermod


def check_transfer_config(cfg: Config) -> None:
    t = cfg.transfer
    for key, value, valid in (("variant", t.variant, VARIANTS), ("head", t.head, HEADS),
                              ("ssl", t.ssl, tuple(SSL_LOSSES))):
        if value not in valid:
            raise ValueError(f"transfer.{key}={value!r} is not one of: {', '.join(valid)}")


def run_name(cfg: Config) -> str:
    v = cfg.transfer.variant
    return f"{v}-{cfg.transfer.head}" if v.startswith("hypermod") else v


def few_shot_targets(cfg: Config):
    """k train images of each target class: (ImageSet, images (C*k, 3, H, W) in [-1, 1], labels
    (C*k,) in 0..C-1, the index into cfg.data.target_classes)."""
    names, targets, k = class_names(cfg.data), cfg.data.target_classes, cfg.data.k_per_target
    data = load_split(cfg.data, "train", cache_dir(cfg)).only(targets).per_class(k)
    counts = {c: int((data.y == names.index(c)).sum()) for c in targets}
    if any(n < k for n in counts.values()):
        raise ValueError(f"data.k_per_target={k} but the train split has only {counts} target images")
    local = torch.tensor([targets.index(names[int(y)]) for y in data.y])
    return data, to_float(data.x), local


def build_models(cfg: Config, device):
    """(G, D, trainable G parameters, the pretrained/fresh plain generator) for cfg.transfer.variant."""
    n, t = len(cfg.data.target_classes), cfg.transfer
    if t.variant == "scratch":
        base = build_generator(cfg).to(device)
        G = ConditionalGenerator(base, n)
        return G, build_discriminator(cfg, n).to(device), G.trainable_parameters(), base
    base, D = load_pretrained(cfg, device)
    D = conditional_from_unconditional(D, n, t.d_cond)
    if t.variant == "finetune":
        G = ConditionalGenerator(base, n)
    else:
        G = HyperModulatedGenerator(base, n, head=t.head, rank=t.rank, embed_dim=t.embed_dim)
    return G, D, G.trainable_parameters(), base


def transfer_spec(cfg: Config) -> LoopSpec:
    t = cfg.transfer
    return LoopSpec(steps=t.steps, batch_size=t.batch_size, lr_g=t.lr, lr_d=t.d_lr, r1_gamma=t.r1_gamma,
                    r1_every=cfg.gan.r1_every, ema_decay=t.ema_decay, augment=t.augment,
                    ssl=t.ssl if t.variant.endswith("+ssl") else "", ssl_weight=t.ssl_weight,
                    d_class_lr_mul=t.d_class_lr_mul,
                    checkpoint_every=t.checkpoint_every, seed=cfg.run.seed)


def start_check(cfg: Config, G: HyperModulatedGenerator, evaluator) -> dict:
    """Self-initialize G when the variant asks for it (class 0, then copied to every class), and measure
    how close the modulated generator starts to the base one: with the random heads, and after self-init."""
    t = cfg.transfer
    check = {"random_heads": None, "after_selfinit": None}
    if evaluator is not None:
        check["random_heads"] = selfinit_check(evaluator, G, cfg.gan.eval_samples, cfg.run.seed)
    if "selfinit" not in t.variant:
        return check
    gen = torch.Generator(device=G.base.const.device).manual_seed(cfg.run.seed)
    begin = time.time()
    losses = self_initialize(G, t.selfinit_steps, t.selfinit_batch, t.selfinit_lr, generator=gen)
    G.copy_embedding_to_all_classes(0)
    check.update(selfinit_steps=t.selfinit_steps, selfinit_seconds=time.time() - begin, l1_first=losses[0],
                 l1_last=losses[-1])
    if evaluator is not None:
        before = check["random_heads"]
        after = check["after_selfinit"] = selfinit_check(evaluator, G, cfg.gan.eval_samples, cfg.run.seed)
        print(f"self-init: block L1 {losses[0]:.3f} -> {losses[-1]:.3f}; FD-eval(modulated, base) "
              f"{before['fd_modulated_vs_base']:.2f} -> {after['fd_modulated_vs_base']:.2f} "
              f"(base vs base {after['fd_base_vs_base']:.2f}, ratio {after['ratio']:.2f})")
    return check


def transfer_gan(cfg: Config) -> dict:
    check_transfer_config(cfg)
    check_splits(cfg.data)
    device = distributed.init(setup(cfg))
    t, targets = cfg.transfer, cfg.data.target_classes
    out = stage_dir(cfg, KIND) / run_name(cfg)
    data, images, local = few_shot_targets(cfg)
    G, D, g_params, base = build_models(cfg, device)
    trainer = GanTrainer(G, D, g_params, cfg.gan.z_dim, images.to(device), local.to(device), len(targets),
                         transfer_spec(cfg), f"{KIND} {run_name(cfg)}")
    evaluator = load_evaluator_or_none(cfg, device) if distributed.is_main() else None
    path = out / "checkpoint.pt"
    sections = {"data": cfg.data, "gan": cfg.gan, "transfer": cfg.transfer}
    if path.exists():
        payload = checkpoint.load(path, kind=KIND)
        checkpoint.check_arch(payload, sections, str(path))
        if payload["variant"] != t.variant:
            raise checkpoint.CheckpointMismatch(f"{path} is a {payload['variant']!r} run, not {t.variant!r}")
        trainer.load_state(payload)
        start = payload["start_check"]
        if distributed.is_main():
            print(f"{KIND}: resuming {run_name(cfg)} from step {trainer.step}")
    else:
        start = start_check(cfg, G, evaluator) if isinstance(G, HyperModulatedGenerator) else None
        trainer.ema.model.load_state_dict(G.state_dict())   # the EMA starts from the (self-)initialised G
    extra = {"kind": KIND, "config": cfg.to_dict(), "variant": t.variant, "start_check": start}
    trainer.train(path, extra)
    distributed.barrier()
    if not distributed.is_main():
        return {}
    G_ema = trainer.ema.model
    per_row = 10
    grid_labels = torch.arange(len(targets)).repeat_interleave(per_row)
    save_grid(sample_images(G_ema, len(grid_labels), grid_labels, seed=cfg.run.seed), out / "grid.png",
              nrow=per_row, scale=4)
    shown = torch.cat([torch.nonzero(local == c).flatten()[:per_row] for c in range(len(targets))])
    save_grid(data.x[shown], out / "real.png", nrow=min(per_row, cfg.data.k_per_target), scale=4)
    metrics = {"stage": KIND, "variant": t.variant, "head": t.head, "run": run_name(cfg),
               "target_classes": list(targets), "k_per_target": cfg.data.k_per_target,
               "steps": trainer.step, "train_seconds": trainer.seconds, "device": str(device),
               "world_size": distributed.world_size(), "torch_threads": torch.get_num_threads(),
               "trainable_parameters": count_parameters(g_params),
               "base_g_parameters": count_parameters(base.parameters()),
               "d_parameters": count_parameters(D.parameters()), "start_check": start,
               "class_spread": G_ema.class_spread() if isinstance(G_ema, HyperModulatedGenerator) else None,
               "final_losses": trainer.log[-1], "loss_log": trainer.log}
    if evaluator is not None:
        metrics["quality"] = transfer_quality(cfg, evaluator, G_ema)
        q = metrics["quality"]
        print(f"{KIND} {run_name(cfg)}: accuracy {q['accuracy']:.1%} (among targets "
              f"{q['accuracy_among_targets']:.1%}), intra-class FD-eval {q['fd_eval_intra']:.2f}, "
              f"{metrics['trainable_parameters']:,} trainable parameters, {trainer.seconds:.0f}s")
    write_json(out / "metrics.json", metrics)
    return metrics


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


GAN_HEADER = ["variant", "head", "trainable params", "% of base G", "accuracy", "acc. among targets",
              "FD-eval (intra)", "FD-eval (all)", "KID (intra)", "start FD ratio", "class spread", "seconds"]
GAN_NOTE = ("Accuracy: the evaluator's argmax over all classes equals the requested class (among targets: argmax "
            "over the target classes only). Start FD ratio (hyper-modulation only): FD-eval(modulated G, base G) / "
            "FD-eval(base G, base G) when transfer starts, i.e. after self-initialization where the variant has it "
            "(1 = as close to the pretrained generator as a second sample set of it). Class spread (hyper-modulation "
            "only): mean distance between two classes' embeddings / mean embedding norm at the end (0: every class "
            "the same, as self-initialization leaves them; about 1.4 for independent random embeddings).")


def gan_results(cfg: Config) -> list[dict]:
    """The metrics.json of every finished transfer run of cfg's preset, in ablation order."""
    order = {v: i for i, v in enumerate(VARIANTS)}
    return sorted((read_json(p) for p in stage_dir(cfg, KIND).glob("*/metrics.json")),
                  key=lambda r: (order.get(r["variant"], len(order)), r["head"] != "lowrank"))


def gan_rows(runs: list[dict]) -> list[list[str]]:
    """One GAN_HEADER row per transfer run."""
    rows = []
    for r in runs:
        q = r.get("quality", {})
        start = r.get("start_check") or {}
        start = start.get("after_selfinit") or start.get("random_heads") or {}
        rows.append([r["variant"], r["head"] if r["variant"].startswith("hypermod") else "-",
                     f"{r['trainable_parameters']:,}",
                     f"{100 * r['trainable_parameters'] / r['base_g_parameters']:.0f}%",
                     _fmt(q.get("accuracy"), ".1%"), _fmt(q.get("accuracy_among_targets"), ".1%"),
                     _fmt(q.get("fd_eval_intra"), ".2f"), _fmt(q.get("overall", {}).get("fd_eval"), ".2f"),
                     _fmt(q.get("kid_intra"), ".4f"), _fmt(start.get("ratio"), ".2f"),
                     _fmt(r.get("class_spread"), ".2f"), f"{r['train_seconds']:.0f}"])
    return rows


def gan_table(cfg: Config) -> str:
    """Markdown ablation table of every finished transfer run of cfg's preset (also written to
    runs/<preset>/gan-transfer/table.md)."""
    runs = gan_results(cfg)
    if not runs:
        raise FileNotFoundError(f"no transfer runs under {stage_dir(cfg, KIND)}; run `python train.py gan-transfer`")
    intro = (f"GAN transfer, preset `{cfg.run.preset}`: {len(cfg.data.target_classes)} target classes, "
             f"k = {cfg.data.k_per_target} real images each, quality against the test split of the target classes; "
             f"every variant trains all of D ({runs[0]['d_parameters']:,} parameters).")
    table = f"{intro}\n\n{markdown_table(GAN_HEADER, gan_rows(runs))}\n\n{GAN_NOTE}\n"
    (stage_dir(cfg, KIND) / "table.md").write_text(table)
    return table


def transfer_ablation(cfg: Config) -> dict:
    """Every (variant, head) of ABLATION with cfg's other settings, then the markdown table."""
    results = {}
    for variant, head in ABLATION:
        run_cfg = dataclasses.replace(cfg, transfer=dataclasses.replace(cfg.transfer, variant=variant, head=head))
        results[run_name(run_cfg)] = transfer_gan(run_cfg)
    if distributed.is_main():
        print(gan_table(cfg))
    return results
