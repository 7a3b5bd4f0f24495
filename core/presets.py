"""The presets: `quick` (shapes at 16x16, every stage on a 2-core CPU in minutes) and `cifar10`
(32x32 on one GPU), and the per-preset customization schedules. Every value is a field of
core/config.py, where its range and meaning are declared; docs/tuning.md says why these values.
"""
from __future__ import annotations

import dataclasses

from core.config import (AUGMENTATIONS, ClassifierConfig, ClipConfig, Config, DataConfig,
                         DiffusionConfig, DriftConfig, EvalNetConfig, GanConfig)


def quick() -> Config:
    """Shapes at 16x16 on a 2-core CPU: every stage in minutes."""
    return Config()


def cifar10() -> Config:
    """CIFAR-10 at 32x32 on one GPU."""
    cfg = Config()
    cfg.run.preset = "cifar10"
    cfg.run.unet_batch = 1024        # a GPU wants large batches
    cfg.data = DataConfig(dataset="cifar10", resolution=32, concept_class="cat",
                          source_classes=("bird", "cat", "deer", "dog", "frog", "horse"),
                          target_classes=("airplane", "automobile", "ship", "truck"),
                          k_per_target=100)
    cfg.clip = ClipConfig(width=256, layers=4, heads=8, embed_dim=256,
                          image_channels=(64, 128, 256), steps=3000, batch_size=512, lr=1e-3,
                          warmup=200)
    cfg.evalnet = EvalNetConfig(channels=(64, 128, 256, 512), blocks_per_stage=1, epochs=16,
                                batch_size=512, lr=0.2, warmup_epochs=2, label_smoothing=0.2,
                                max_shift=2)  # ResNet-9-like
    cfg.diffusion = DiffusionConfig(base_channels=128, channel_mults=(1, 2, 2), num_res_blocks=2,
                                    attention_resolutions=(16, 8), heads=8, dropout=0.1,
                                    steps=40000, batch_size=128, lr=2e-4, warmup=1000,
                                    ema_decay=0.9995, sample_every=5000, checkpoint_every=5000,
                                    sample_steps=50, guidance=3.0)
    cfg.classifier = ClassifierConfig(n_timesteps=100, stages=(20, 100), keep=(3, 1), n_images=900,
                                      batch_size=16)
    # drift measured with "a blurry photo of a {}" (Li et al.'s CIFAR-10 prompt), held out
    # "a low resolution ..."
    cfg.drift = DriftConfig(heldout_classes=("automobile", "deer", "frog", "ship"),
                            anchor_templates=4, template=1, heldout_template=4,
                            attribute_prompts=0)
    cfg.gan = GanConfig(z_dim=128, w_dim=128, channels=(128,), d_channels=(128,),
                        mapping_lr_mul=0.01, steps=20000, batch_size=64, r1_gamma=0.01,
                        ema_decay=0.999, augment=AUGMENTATIONS, checkpoint_every=2000,
                        eval_samples=5000)
    cfg.transfer = dataclasses.replace(cfg.transfer, embed_dim=64, selfinit_steps=1000,
                                       selfinit_batch=32, steps=2000, batch_size=64, d_lr=2e-3,
                                       r1_gamma=0.01, ema_decay=0.999, augment=AUGMENTATIONS,
                                       checkpoint_every=500, eval_samples=1000)
    return cfg


def cifar10_cpu() -> Config:
    """Both papers on real CIFAR-10 photos, downsampled to 16x16, on a 2-core CPU: the cifar10
    preset's data, splits and protocol with narrower models and fewer steps (its wall clock:
    docs/speed.md)."""
    cfg = cifar10()
    cfg.run.preset = "cifar10-cpu"
    # a CPU slows past the batch whose activations leave its cache (bench/unet_batch.py)
    cfg.run.unet_batch = 256
    cfg.data = dataclasses.replace(cfg.data, resolution=16, k_per_target=10)
    cfg.clip = ClipConfig(steps=800, batch_size=128, lr=2e-3, warmup=50)
    cfg.evalnet = EvalNetConfig(channels=(32, 64, 128), epochs=4, batch_size=128, lr=0.2,
                                warmup_epochs=0.5, label_smoothing=0.2, max_shift=1)
    cfg.diffusion = DiffusionConfig(base_channels=32, channel_mults=(1, 2, 2),
                                    attention_resolutions=(8, 4), steps=3000, batch_size=64,
                                    lr=1e-3, warmup=100, ema_decay=0.999, sample_every=1000,
                                    checkpoint_every=1000, guidance=3.0)
    cfg.classifier = ClassifierConfig(n_timesteps=40, stages=(5, 20), keep=(3, 1), n_images=180)
    cfg.drift = dataclasses.replace(cfg.drift, pairs=8)
    cfg.gan = GanConfig(channels=(64,), d_channels=(128, 64, 64), steps=3000, batch_size=32,
                        augment=("translation",), eval_samples=2000)
    cfg.transfer = dataclasses.replace(Config().transfer, embed_dim=32, steps=800)
    return cfg


PRESETS = {"quick": quick, "cifar10": cifar10, "cifar10-cpu": cifar10_cpu}

# customization and transfer seeds of a pipeline run without --seeds: cifar10-cpu's real-image drift
# and GAN figures move by more than their differences from one seed to the next, so its default run
# repeats them
DEFAULT_SEEDS = {"quick": 1, "cifar10": 1, "cifar10-cpu": 2}


# steps and learning rate of each customization method, per preset: tuned so that each learns the
# concept
METHOD_SCHEDULES = {
    "quick": {"full": (400, 3e-4), "full+prior": (400, 3e-4), "lora": (300, 3e-3),
              "custom": (500, 3e-3), "ti": (300, 5e-2)},
    "cifar10": {"full": (400, 1e-4), "full+prior": (400, 1e-4), "lora": (400, 1e-3),
                "custom": (400, 1e-3), "ti": (1000, 5e-3)},
    "cifar10-cpu": {"full": (300, 2e-4), "full+prior": (300, 2e-4), "lora": (300, 2e-3),
                    "custom": (400, 2e-3), "ti": (300, 5e-2)},
}


def customize_schedule(cfg: "Config") -> tuple[int, float]:
    """(steps, lr) of a customization run: customize.steps/lr where set, else the preset's table."""
    steps, lr = METHOD_SCHEDULES[cfg.run.preset][cfg.customize.method]
    cc = cfg.customize
    return (cc.steps if cc.steps >= 0 else steps), (cc.lr if cc.lr >= 0 else lr)


# the generator's learning rate in GAN transfer, per preset and variant (transfer.lr = -1 takes it
# from here): the rate with the lowest FD-eval against held-out train images of the target classes,
# among a sweep that includes the pretraining rate (bench/gan_lr_sweep.py; docs/results.md,
# "Fair baselines")
TRANSFER_LR = {
    "quick": {"scratch": 1e-2, "finetune": 1e-2, "hypermod-lowrank": 1e-2,
              "hypermod-dense": 3e-2},
    "cifar10": {"scratch": 2e-3, "finetune": 2e-3, "hypermod-lowrank": 2e-3,
                "hypermod-dense": 2e-3},
    "cifar10-cpu": {"scratch": 1e-2, "finetune": 1e-2, "hypermod-lowrank": 1e-2,
                    "hypermod-dense": 1e-2},
}


# the pretrained GANs (gan.seed) that TRANSFER_LR was chosen on: no table or verdict uses their runs
LR_SWEEP_GAN_SEEDS = (100, 101)


def transfer_lr(cfg: "Config") -> float:
    """The generator's learning rate of a transfer: transfer.lr where set, else the preset's for its
    variant."""
    t = cfg.transfer
    variant = f"hypermod-{t.head}" if t.generator == "hypermod" else t.generator
    return t.lr if t.lr >= 0 else TRANSFER_LR[cfg.run.preset][variant]
