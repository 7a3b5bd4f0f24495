"""Diffusion classifier: accuracy and cost of the full timestep grid vs the adaptive schedule, with the
tiny-CLIP zero-shot accuracy on the same images as a reference. Writes JSON.

    python -m bench.bench_classifier [--preset quick] [--ckpt runs/quick/diffusion/last.pt] [--section.key=value ...]
"""
from __future__ import annotations

import argparse
import time

import torch

from core.config import make_config
from core.training import setup, stage_dir, write_json
from core.data import base_classes
from minidiff.open_world import classify, test_images
from minidiff.train_diffusion import load_diffusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--ckpt", default=None, help="diffusion checkpoint (default: the preset's)")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/classifier_<preset>.json)")
    args, overrides = parser.parse_known_args()
    cfg = make_config(args.preset, overrides)
    device = setup(cfg)
    ckpt = args.ckpt or stage_dir(cfg, "diffusion") / "last.pt"
    model, diffusion, _, _ = load_diffusion(ckpt, device)
    classes = base_classes(cfg.data)
    prompts = [cfg.classifier.prompt.format(c) for c in classes]
    test, labels = test_images(cfg)
    results = {"checkpoint": str(ckpt), "n_images": len(labels), "n_classes": len(classes),
               "threads": torch.get_num_threads(), "device": str(device)}
    for name, adaptive in (("full", False), ("adaptive", True)):
        start = time.time()
        out = classify(cfg, model, diffusion, prompts, test.x, seed=0, adaptive=adaptive)
        results[name] = {"accuracy": (out["pred"] == labels).double().mean().item(),
                         "unet_passes_per_image": out["unet_passes"], "seconds": time.time() - start}
    c = cfg.classifier
    results["schedule"] = {"n_timesteps": c.n_timesteps, "stages": c.stages, "keep": c.keep, "loss": c.loss,
                           "prompt": c.prompt}
    results["pass_reduction"] = results["full"]["unet_passes_per_image"] / results["adaptive"]["unet_passes_per_image"]
    results["accuracy_lost"] = results["full"]["accuracy"] - results["adaptive"]["accuracy"]
    out_path = args.out or f"{cfg.run.out_dir}/bench/classifier_{cfg.run.preset}.json"
    write_json(out_path, results)
    f, a = results["full"], results["adaptive"]
    print(f"full grid: {f['accuracy']:.1%} with {f['unet_passes_per_image']} UNet passes/image ({f['seconds']:.0f}s); "
          f"adaptive: {a['accuracy']:.1%} with {a['unet_passes_per_image']} ({a['seconds']:.0f}s); "
          f"{results['pass_reduction']:.1f}x fewer passes, {100 * results['accuracy_lost']:+.1f} points lost "
          f"on {len(labels)} images; wrote {out_path}")


if __name__ == "__main__":
    main()
