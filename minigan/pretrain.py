"""Stage gan-pretrain: the unconditional GAN on the source classes (the "pretrained StyleGAN" of the
paper), and stage gan-pretrain-judge: how good it is, in the evaluator's eyes.

`python train.py gan-pretrain` calls `pretrain_gan(cfg)`: non-saturating loss + lazy R1, EMA
generator, DiffAugment, Adam (0, 0.99), on every train-split image of cfg.data.source_classes,
labels ignored. Each pretrained GAN has its own seed (gan.seed; `--bases N` trains N). It writes
runs/<preset>/gan-pretrain/b<seed>/{checkpoint.pt, grid.png, metrics.json}; an interrupted run
resumes from the checkpoint (pipeline/runs.py). The transfer stage starts from this checkpoint:
load_pretrained() gives its EMA generator and its discriminator. The judge
(runs/<preset>/gan-pretrain-judge/b<seed>/) measures FD-eval against the source classes' test
images; it is a stage of its own so that pretraining does not wait for the evaluator, and a
retrained evaluator re-judges without retraining.
"""
from __future__ import annotations

import time

import torch

from core import checkpoint, distributed
from core.cache import cache_root
from core.config import Config
from core.data import load_split, to_float
from core.images import save_grid
from core.training import count_parameters, mix_seed, setup
from eval.evalnet import evaluator_path, load_evaluator
from minigan.discriminator import Discriminator
from minigan.generator import Generator
from minigan.loop import GanTrainer, LoopSpec
from minigan.quality import pretrain_quality, sample_images
from pipeline.runs import RunFolder, require_finished, run_key, run_once, stage_dir

KIND = "gan-pretrain"


def widths(channels: tuple[int, ...]):
    """Config widths (4x4 upwards) -> what channels_per_resolution takes: one entry = the same
    everywhere."""
    return channels[0] if len(channels) == 1 else list(channels)


def build_generator(cfg: Config) -> Generator:
    g = cfg.gan
    return Generator(cfg.data.resolution, g.z_dim, g.w_dim, widths(g.channels), g.mapping_layers,
                     g.mapping_lr_mul)


def build_discriminator(cfg: Config, n_classes: int = 0) -> Discriminator:
    return Discriminator(cfg.data.resolution, widths(cfg.gan.d_channels), n_classes,
                         cfg.transfer.d_cond, arch=cfg.gan.d_arch)


def pretrain_spec(cfg: Config) -> LoopSpec:
    g = cfg.gan
    return LoopSpec(steps=g.steps, batch_size=g.batch_size, lr_g=g.lr, lr_d=g.lr,
                    r1_gamma=g.r1_gamma, r1_every=g.r1_every, ema_decay=g.ema_decay,
                    augment=g.augment, checkpoint_every=g.checkpoint_every, seed=gan_seed(cfg))


def gan_seed(cfg: Config) -> int:
    """The stream of one pretrained GAN: its initial weights and every draw of its training."""
    return mix_seed(cfg.run.seed, cfg.gan.seed)


def gan_name(cfg: Config) -> str:
    """'b0': the pretrained GAN of gan.seed 0."""
    return f"b{cfg.gan.seed}"


def pretrained_path(cfg: Config):
    """The finished pretraining run's checkpoint,
    runs/<preset>/gan-pretrain/b<seed>/checkpoint.pt."""
    return require_finished(stage_dir(cfg, KIND, gan_name(cfg)), "checkpoint.pt",
                            f"python train.py gan-pretrain --preset {cfg.run.preset} "
                            f"--gan.seed={cfg.gan.seed}")


def load_pretrained(cfg: Config, device) -> tuple[Generator, Discriminator]:
    """The finished pretraining run's EMA generator and its discriminator, on `device`."""
    path = pretrained_path(cfg)
    payload = checkpoint.load(path, kind=KIND)
    checkpoint.check_arch(payload, {"data": cfg.data, "gan": cfg.gan}, str(path))
    G, D = build_generator(cfg), build_discriminator(cfg)
    G.load_state_dict(payload["ema"]["model"])
    D.load_state_dict(payload["D"])
    return G.to(device).eval(), D.to(device)


def pretrain_gan(cfg: Config, force: bool = False) -> dict:
    """Pretrain (resume, or if finished before with the same settings, skip); returns the
    metrics."""
    key = run_key(cfg, ("data.source_classes", "gan"))
    device = distributed.init(setup(cfg))  # before the run folder: rank 0 alone locks and writes it
    return run_once(stage_dir(cfg, KIND, gan_name(cfg)), key, force, f"{KIND} {gan_name(cfg)}",
                    lambda run: _pretrain(cfg, run, device))


def judge_pretrained(cfg: Config, force: bool = False) -> dict:
    """FD-eval / KID of the pretrained generator against the source classes' test images, and how
    many of its samples the evaluator assigns to a source class."""
    def work(run):
        start, device = time.time(), setup(cfg)
        G, _ = load_pretrained(cfg, device)
        quality = pretrain_quality(cfg, load_evaluator(cfg, device), G)
        quality["summary"] = (f"FD-eval vs source test images {quality['fd_eval_vs_source']:.2f}, "
                              f"{quality['recognised_as_a_source_class']:.1%} recognised as a "
                              "source class")
        print(f"{KIND}-judge {gan_name(cfg)}: {quality['summary']}")
        return {"stage": f"{KIND}-judge", "base": gan_name(cfg), **quality,
                "seconds": time.time() - start}
    key = run_key(cfg, ("data.source_classes", "gan"), pretrained=pretrained_path(cfg),
                  evaluator=evaluator_path(cfg))
    return run_once(stage_dir(cfg, f"{KIND}-judge", gan_name(cfg)), key, force,
                    f"{KIND}-judge {gan_name(cfg)}", work)


def _pretrain(cfg: Config, run: RunFolder, device) -> dict:
    train = load_split(cfg.data, "train", cache_root(cfg)).only(cfg.data.source_classes)
    if len(train) < cfg.gan.batch_size:
        raise ValueError(f"only {len(train)} source images for gan.batch_size={cfg.gan.batch_size}")
    torch.manual_seed(gan_seed(cfg))  # this GAN's initial weights; its training draws follow
    G, D = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
    trainer = GanTrainer(G, D, G.parameters(), cfg.gan.z_dim, to_float(train.x).to(device), None, 0,
                         pretrain_spec(cfg), KIND)
    path = run.folder / "checkpoint.pt"
    payload = run.resume(path, KIND)
    if payload is not None:
        trainer.load_state(payload)
        if distributed.is_main():
            print(f"{KIND}: resuming from {path} at step {trainer.step}")
    trainer.train(lambda state: run.save_checkpoint(path, {"kind": KIND, "config": cfg.to_dict(),
                                                           **state}))
    distributed.barrier()
    if not distributed.is_main():
        return {}
    save_grid(sample_images(trainer.ema.model, 64, seed=gan_seed(cfg)), run.folder / "grid.png",
              nrow=8, scale=4)
    summary = f"{trainer.step} steps in {trainer.seconds:.0f}s, final losses " + ", ".join(
        f"{k} {v:.3f}" for k, v in trainer.log[-1].items() if k in ("d", "g", "r1"))
    print(f"{KIND} {gan_name(cfg)}: {summary}")
    return {"stage": KIND, "base": gan_name(cfg), "summary": summary, "steps": trainer.step,
            "train_seconds": trainer.seconds, "device": str(device),
            "world_size": distributed.world_size(), "torch_threads": torch.get_num_threads(),
            "g_parameters": count_parameters(G.parameters()),
            "d_parameters": count_parameters(D.parameters()), "n_train_images": len(train),
            "source_classes": list(cfg.data.source_classes), "final_losses": trainer.log[-1],
            "loss_log": trainer.log}
