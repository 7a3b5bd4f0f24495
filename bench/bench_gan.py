"""Benchmark of the GAN side: training and sampling throughput of both presets' models.

For each preset (quick, cifar10) and each generator the stages train (the plain generator of
pretraining; hyper-modulation with the low-rank and the dense head, as in transfer) it times one
full training step of minigan/loop.py (D step with R1 + G step + EMA, the preset's augmentation; the
SSL loss on for the transfer generators) on random "real" images, and EMA sampling without
gradients. Numbers are images per second (training: the step's batch of real images; the G step's
fakes come on top). Runs on the CPU, and on CUDA too when present. Run from the repository root:

    python -m bench.bench_gan --threads 2 --out runs/bench/gan.json
"""
import argparse
import dataclasses
import json

import torch

from bench.common import hardware, save, seconds_per_call
from core.cli import make_config
from core.training import setup
from minigan.quality import sample_images
from minigan.hypermod import HyperModulatedGenerator
from minigan.loop import GanTrainer
from minigan.pretrain import build_discriminator, build_generator, pretrain_spec
from minigan.transfer import transfer_spec


def trainer_for(cfg, generator, device, batch_size):
    """A GanTrainer on random real images: unconditional for "plain", 5 classes for the heads."""
    G = build_generator(cfg).to(device)
    n_classes = 0 if generator == "plain" else len(cfg.data.target_classes)
    D = build_discriminator(cfg, n_classes).to(device)
    if generator == "plain":
        spec, labels = pretrain_spec(cfg), None
    else:
        G = HyperModulatedGenerator(G, n_classes, head=generator, rank=cfg.transfer.rank,
                                    embed_dim=cfg.transfer.embed_dim)
        spec = transfer_spec(cfg)
        labels = torch.randint(n_classes, (256,), device=device)
    spec = dataclasses.replace(spec, batch_size=batch_size)
    params = G.parameters() if generator == "plain" else G.trainable_parameters()
    real = torch.rand(256, 3, cfg.data.resolution, cfg.data.resolution, device=device) * 2 - 1
    return GanTrainer(G, D, params, cfg.gan.z_dim, real, labels, n_classes, spec, "bench")


def bench(preset, device, batch_size, iters):
    cfg = make_config(preset, ["--run.device=" + device.type])
    out = {}
    for generator in ("plain", "lowrank", "dense"):
        trainer = trainer_for(cfg, generator, device, batch_size)

        def train_step():
            trainer.d_step()
            trainer.g_step()
            trainer.step += 1

        t_train = seconds_per_call(train_step, iters, device)
        n_sample = 4 * batch_size
        labels = None if generator == "plain" else torch.zeros(n_sample, dtype=torch.long)
        t_sample = seconds_per_call(lambda: sample_images(trainer.ema.model, n_sample, labels),
                                    iters, device)
        out[generator] = {"train_images_per_s": batch_size / t_train, "train_step_s": t_train,
                          "sample_images_per_s": n_sample / t_sample, "batch_size": batch_size,
                          "trainable_g_parameters": sum(p.numel()
                                                        for group in trainer.opt_g.param_groups
                                                        for p in group["params"])}
        print(preset, device, generator, json.dumps(out[generator]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench/gan.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    result = {**hardware(devices[-1]), "results": {}}
    for device in devices:
        if device.type == "cuda":
            setup(make_config("cifar10"))                   # TF32 matmuls as in training
        for preset in ("quick", "cifar10"):
            batch = (make_config(preset).gan.batch_size
                     if device.type == "cuda" or preset == "quick" else 8)
            result["results"][f"{preset}/{device.type}"] = bench(preset, device, batch, args.iters)
    save(args.out, result)


if __name__ == "__main__":
    main()
