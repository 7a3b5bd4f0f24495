"""The diffusion classifier's floor: how often the base model disagrees with itself under another
noise bank, against the number of timesteps it scores. Drift is a flip rate above this floor, so the
budget is chosen from this curve.

    python -m bench.classifier_floor --preset quick --bases 0,1
    python -m bench.classifier_floor --preset cifar10-cpu --bases 0 --max-timesteps 80

For each base model (diffusion.seed), the drift protocol's test images are scored under the anchored
wording for every class at every timestep of an n-timestep grid (--max-timesteps), once per noise
bank (--banks, disjoint from the drift and floor banks of the measurement). From these error tables,
with no further UNet pass: at each budget (a centred sub-grid of 5, 10, 20, ... timesteps) the
accuracy, and the flip rate between every two banks (the floor); the same within each quarter of the
timestep range (which range carries the class signal); and the floor of the continuous measure, the
change of each image's margin between two banks. One more row is the former adaptive schedule
(classifier.stages 5, 20; 85 UNet passes an image on 9 classes), measured directly on two banks.
Writes runs/<preset>/bench/classifier_floor_b<bases>.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from bench.common import hardware, save
from eval.svg import bar_chart
from core.cli import make_config
from core.data import base_classes, to_float
from core.training import mix_seed, setup
from minidiff.classifier import DiffusionClassifier, classify_images, margins, predict
from minidiff.open_world import templates, test_images
from minidiff.train_diffusion import base_model_path, load_diffusion
from pipeline.runs import stage_dir

# noise banks 50, 51, ...: apart from the measurement's banks (0.. for each kind)
FLOOR_BENCH_BANK = 50


def floor(tables: list[torch.Tensor], labels: torch.Tensor, budget: int | None = None,
          timesteps: slice | None = None) -> dict:
    """Accuracy (mean over banks) and flip rate between every two banks (mean, sd) at a budget, or
    on a range of the grid's timesteps."""
    if timesteps is not None:
        tables = [t[:, :, timesteps] for t in tables]
    preds = [predict(t, budget) for t in tables]
    flips = [(a != b).double().mean().item() for a, b in itertools.combinations(preds, 2)]
    acc = [(p == labels).double().mean().item() for p in preds]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    sd = lambda xs: (sum((x - mean(xs)) ** 2 for x in xs)  # noqa: E731
                     / max(1, len(xs) - 1)) ** 0.5
    return {"accuracy": mean(acc), "flip_rate": mean(flips), "flip_rate_sd": sd(flips),
            "pairs": len(flips)}


def margin_floor(tables, labels) -> dict:
    """The change of each image's margin between two banks: its mean (about 0) and sd over
    images."""
    changes = torch.cat([margins(b, labels) - margins(a, labels)
                         for a, b in itertools.combinations(tables, 2)])
    return {"mean_change": changes.mean().item(), "sd_change": changes.std().item()}


def chart(paths: list[str], out: str) -> None:
    """The floor curves of several bench outputs as one SVG (bars: floor per budget and base model,
    whiskers: sd over bank pairs), for the docs."""
    bases = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        bases.update({f"{data['preset']} {b}": r for b, r in data["bases"].items()})
    budgets = sorted({int(k) for r in bases.values() for k in r["budgets"]})
    series = {b: [100 * r["budgets"].get(str(k), {}).get("flip_rate", float("nan"))
                  for k in budgets]
              for b, r in bases.items()}
    errors = {b: [100 * r["budgets"].get(str(k), {}).get("flip_rate_sd", float("nan"))
                  for k in budgets]
              for b, r in bases.items()}
    svg = bar_chart([f"{k} timesteps" for k in budgets], series,
                    "Classifier floor: flips between two noise banks of one base model "
                    "(whisker: sd over pairs)",
                    "% of test images", errors=errors)
    Path(out).write_text(svg)
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--chart", default=None,
                        help="instead: draw the floor curves of these JSON files "
                             "(comma-separated) as an SVG at --out")
    parser.add_argument("--out", default="docs/classifier_floor.svg")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--bases", default="0",
                        help="diffusion.seed of each base model, comma-separated")
    parser.add_argument("--banks", type=int, default=4)
    parser.add_argument("--max-timesteps", type=int, default=80)
    args, overrides = parser.parse_known_args()
    if args.chart:
        return chart(args.chart.split(","), args.out)
    n = args.max_timesteps
    cfg = make_config(args.preset, overrides, ("clip", "evalnet", "unet"))
    cfg = cfg.updated("classifier", n_timesteps=n, stages=(n,), keep=(1,))
    device = setup(cfg)
    test, labels = test_images(cfg)
    images = to_float(test.x)
    classes = [templates(cfg)[0].format(c) for c in base_classes(cfg.data)]
    budgets = [b for b in (5, 10, 20, 40, 80, 160) if b <= n and n % b == 0]
    result = {"preset": args.preset, "n_images": len(labels), "n_classes": len(classes),
              "template": templates(cfg)[0], "max_timesteps": n, "banks": args.banks,
              **hardware(device), "bases": {}}
    for b in (int(x) for x in args.bases.split(",")):
        bcfg = cfg.updated("diffusion", seed=b)
        start = time.time()
        model, diffusion, _, _ = load_diffusion(base_model_path(bcfg), device)
        tables = []
        for bank in range(args.banks):
            seed = mix_seed(cfg.run.seed, FLOOR_BENCH_BANK + bank)
            clf = DiffusionClassifier(model, diffusion, classes, bcfg.classifier,
                                      cfg.data.resolution, seed, cfg.run.unet_batch)
            tables.append(classify_images(clf, images, bcfg.classifier.batch_size,
                                          adaptive=False)["errors"])
            print(f"base b{b}: bank {bank + 1}/{args.banks} scored ({time.time() - start:.0f}s)",
                  flush=True)
        quarter = n // 4
        old = cfg.updated("classifier", n_timesteps=40, stages=(5, 20), keep=(2, 1))
        adaptive = [
            classify_images(DiffusionClassifier(model, diffusion, classes, old.classifier,
                                                cfg.data.resolution,
                                                mix_seed(cfg.run.seed, FLOOR_BENCH_BANK + bank),
                                                cfg.run.unet_batch),
                            images, 32, adaptive=True)["pred"]
            for bank in range(2)]
        result["bases"][f"b{b}"] = {
            "budgets": {str(k): {**floor(tables, labels, k), "unet_passes": k * len(classes)}
                        for k in budgets},
            "ranges": {f"t in [{int(q * 1000 / 4)}, {int((q + 1) * 1000 / 4)})": floor(
                tables, labels, timesteps=slice(q * quarter, (q + 1) * quarter)) for q in range(4)},
            "margin_floor": margin_floor(tables, labels),
            "adaptive_5_20": {"flip_rate": (adaptive[0] != adaptive[1]).double().mean().item(),
                              "accuracy": (adaptive[0] == labels).double().mean().item(),
                              "unet_passes": 85},
            "seconds": time.time() - start}
        for k, r in result["bases"][f"b{b}"]["budgets"].items():
            print(f"  b{b}, {k:>3} timesteps ({r['unet_passes']} passes): "
                  f"accuracy {r['accuracy']:.1%}, "
                  f"floor {r['flip_rate']:.1%} +- {r['flip_rate_sd']:.1%}", flush=True)
    save(stage_dir(cfg, "bench", f"classifier_floor_b{args.bases.replace(',', '_b')}.json"), result)


if __name__ == "__main__":
    main()
