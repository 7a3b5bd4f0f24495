"""How sensitive is the Colour Drift Index to small changes of the model? A control for the drift
table.

Every UNet weight tensor W of the preset's base diffusion model gets Gaussian noise of relative size
r, W + r * std(W) * N(0, 1), and the perturbed model regenerates the drift measurement's paired
images (every base-class prompt under both drift templates x drift.pairs seeds, DDIM eta = 0, same
initial noise). The CDI between these and the base model's own images says how much colour drift a
change of that size causes: a smooth metric grows with r from 0, a chaotic one (sampling
trajectories that diverge at the first nudge) would jump to the unrelated-pairs level at once. Needs
the base model (`python train.py diffusion`). From the repository root:

    python -m bench.cdi_sensitivity [--preset quick] [--levels 0.001,0.01,0.03]
"""
from __future__ import annotations

import argparse

import torch

from bench.common import save
from core.cli import make_config
from core.training import pick_device
from eval.colour import colour_drift_index
from core import checkpoint
from minidiff.measure_drift import floor_dir
from minidiff.open_world import generations, pair_prompts
from minidiff.train_diffusion import base_model_path, load_diffusion
from pipeline.runs import require_finished


@torch.no_grad()
def perturb(module: torch.nn.Module, relative: float, seed: int = 0) -> None:
    """Add relative * std(W) * N(0, 1) to every parameter W with more than one element."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        if p.numel() > 1:
            p.add_(torch.randn(p.shape, generator=gen).to(p.device) * p.std() * relative)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--levels", default="0.001,0.01,0.03",
                        help="relative noise sizes, comma-separated")
    parser.add_argument("--out", default="runs/bench/cdi_sensitivity.json")
    args, overrides = parser.parse_known_args()
    cfg = make_config(args.preset, overrides)
    device = pick_device(cfg.run.device)
    base_path = base_model_path(cfg)
    reference = checkpoint.load(require_finished(floor_dir(cfg), "side.pt",
                                                 "python train.py drift-floor"))
    images, unrelated = reference["drift"]["pairs"], reference["floor"]["pairs"]
    results = {"base_checkpoint": str(base_path), "n_pairs": len(images),
               "unrelated_pairs_cdi": colour_drift_index(images, unrelated)["cdi"], "levels": {}}
    for level in (float(x) for x in args.levels.split(",")):
        model, diffusion, _, _ = load_diffusion(base_path, device)
        perturb(model.unet, level)
        perturbed = generations(cfg, model, diffusion, pair_prompts(cfg)[0], "drift", 0,
                                cfg.drift.pairs)
        results["levels"][str(level)] = colour_drift_index(images, perturbed)["cdi"]
        print(f"relative weight noise {level:g}: CDI {results['levels'][str(level)]:.2f}",
              flush=True)
    print(f"unrelated pairs (other seeds): CDI {results['unrelated_pairs_cdi']:.2f}")
    save(args.out, results)


if __name__ == "__main__":
    main()
