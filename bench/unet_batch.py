"""How the UNet's inference speed per image depends on how many images one call holds, on this CPU:
the measurement behind run.unet_batch, the bound on the UNet's batch when sampling and classifying.

    python -m bench.unet_batch [--presets quick,cifar10-cpu] [--batches 64,128,256,512,1024]
                               [--threads 1] [--compile] [--out runs/bench/unet_batch.json]
    python -m bench.unet_batch --drift-side --presets cifar10-cpu --batches 256,1024
        --run.out_dir=runs-c10s

For each preset and batch size: one UNet forward without gradients (torch.inference_mode, as
sampling and the diffusion classifier run it) on random images and text states, timed as the best of
--repeats means over --iters calls after a warm-up, reported as milliseconds per image and GFLOP/s
(FLOPs counted by bench/counting.py). Larger batches amortise per-call overhead until the
activations of one layer no longer fit in the CPU's caches; past that point every image costs more.

--compile also times torch.compile(unet) (Inductor, one graph per batch size): its first call, which
compiles (seconds; far less when Inductor's on-disk cache already holds the graph), and its speed
after. --drift-side times what the bound is for instead: one drift side of the preset's trained base
model (found under --run.out_dir), its diffusion classification of the test images under both
wordings and its paired generations (minidiff/open_world.py), with run.unet_batch set to each of
--batches.
"""
from __future__ import annotations

import argparse

import torch

from bench.common import hardware, save, seconds_per_call, timed
from bench.counting import count
from bench.steps import images, text_to_image
from core.cli import make_config
from minidiff import open_world
from minidiff.train_diffusion import base_model_path, load_diffusion


def per_image(cfg, batch: int, iters: int, repeats: int, compile_too: bool) -> dict:
    """Milliseconds per image and GFLOP/s of one UNet call on `batch` images, eager and
    (compile_too) compiled."""
    model = text_to_image(cfg).eval()
    x, t = images(cfg, batch), torch.randint(cfg.diffusion.timesteps, (batch,))
    with torch.inference_mode():
        cond = model.encode([""] * batch)
    def forward_of(unet):
        def forward():
            with torch.inference_mode():
                return unet(x, t, *cond)
        return forward
    flops = count(forward_of(model.unet), [])["flops"]

    def speed(unet) -> dict:
        forward = forward_of(unet)
        seconds = min(seconds_per_call(forward, iters, torch.device("cpu"), warmup=1)
                      for _ in range(repeats))
        return {"ms_per_image": 1000 * seconds / batch, "gflops": flops / seconds / 1e9,
                "seconds_per_call": seconds}

    row = speed(model.unet)
    if compile_too:
        compiled = torch.compile(model.unet, dynamic=False)
        with torch.inference_mode():
            _, first_call = timed(compiled, x, t, *cond)
        row["compiled"] = {**speed(compiled), "first_call_seconds": first_call}
    return row


def drift_side(cfg) -> dict:
    """Seconds of one drift side of cfg's trained base model: classification (both wordings), paired
    generations."""
    model, diffusion, _, _ = load_diffusion(base_model_path(cfg))
    test, _ = open_world.test_images(cfg)
    classified, classify_seconds = timed(open_world.classify_both_templates, cfg, model, diffusion,
                                         test.x, "drift", 0)
    pairs, pairs_seconds = timed(open_world.generations, cfg, model, diffusion,
                                 open_world.pair_prompts(cfg)[0], "drift", 0, cfg.drift.pairs)
    return {"classify_seconds": classify_seconds, "images": len(test.x),
            "unet_passes_per_image": classified[0]["unet_passes"], "pairs_seconds": pairs_seconds,
            "pair_images": len(pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--presets", default="quick,cifar10-cpu")
    parser.add_argument("--batches", default="64,128,256,512,1024")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(unet)")
    parser.add_argument("--drift-side", action="store_true",
                        help="time a drift side of the trained base model")
    parser.add_argument("--out", default=None,
                        help="default runs/bench/unet_batch.json (unet_batch_drift.json)")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    result = {**hardware(torch.device("cpu")), "by_preset": {}}
    for preset in args.presets.split(","):
        cfg = make_config(preset, overrides)
        rows = {}
        for b in (int(s) for s in args.batches.split(",")):
            if args.drift_side:
                rows[b] = drift_side(cfg.updated("run", unet_batch=b))
                print(f"{preset} unet_batch {b}: classification "
                      f"{rows[b]['classify_seconds']:.1f}s, paired generations "
                      f"{rows[b]['pairs_seconds']:.1f}s", flush=True)
                continue
            rows[b] = per_image(cfg, b, args.iters, args.repeats, args.compile)
            line = (f"{preset} batch {b}: {rows[b]['ms_per_image']:.2f} ms per image, "
                    f"{rows[b]['gflops']:.1f} GFLOP/s")
            if args.compile:
                c = rows[b]["compiled"]
                line += (f"; compiled {c['ms_per_image']:.2f} ms per image "
                         f"(first call {c['first_call_seconds']:.0f}s)")
            print(line, flush=True)
        result["by_preset"][preset] = {"default_unet_batch": cfg.run.unet_batch, "by_batch": rows}
    save(args.out or f"runs/bench/unet_batch{'_drift' * args.drift_side}.json", result)


if __name__ == "__main__":
    main()
