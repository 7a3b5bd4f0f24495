"""How the UNet's inference speed per image depends on how many images one call holds, on this CPU: the
measurement behind run.unet_batch, the bound on the UNet's batch when sampling and classifying.

    python -m bench.unet_batch [--presets quick,cifar10-cpu] [--batches 64,128,256,512,1024] [--threads 1]
                               [--out runs/bench/unet_batch.json]

For each preset and batch size: one UNet forward without gradients (torch.inference_mode, as sampling and
the diffusion classifier run it) on random images and text states, timed as the best of --repeats means
over --iters calls after a warm-up, reported as milliseconds per image and GFLOP/s (FLOPs counted by
bench/counting.py). Larger batches amortise per-call overhead until the activations of one layer no longer
fit in the CPU's caches; past that point every image costs more.
"""
from __future__ import annotations

import argparse

import torch

from bench.common import hardware, save, seconds_per_call
from bench.counting import count
from bench.steps import images, text_to_image
from core.cli import make_config


def per_image(cfg, batch: int, iters: int, repeats: int) -> dict:
    model = text_to_image(cfg).eval()
    x, t = images(cfg, batch), torch.randint(cfg.diffusion.timesteps, (batch,))
    with torch.inference_mode():
        cond = model.encode([""] * batch)

    def forward():
        with torch.inference_mode():
            return model(x, t, cond)
    flops = count(forward, [])["flops"]
    seconds = min(seconds_per_call(forward, iters, torch.device("cpu"), warmup=1) for _ in range(repeats))
    return {"ms_per_image": 1000 * seconds / batch, "gflops": flops / seconds / 1e9, "seconds_per_call": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--presets", default="quick,cifar10-cpu")
    parser.add_argument("--batches", default="64,128,256,512,1024")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="runs/bench/unet_batch.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {**hardware(torch.device("cpu")), "by_preset": {}}
    for preset in args.presets.split(","):
        cfg = make_config(preset, [])
        rows = {}
        for b in (int(s) for s in args.batches.split(",")):
            rows[b] = per_image(cfg, b, args.iters, args.repeats)
            print(f"{preset} batch {b}: {rows[b]['ms_per_image']:.2f} ms per image, {rows[b]['gflops']:.1f} GFLOP/s",
                  flush=True)
        result["by_preset"][preset] = {"default_unet_batch": cfg.run.unet_batch, "by_batch": rows}
    save(args.out, result)


if __name__ == "__main__":
    main()
