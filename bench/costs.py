"""What one base model costs: the core-minutes of every unit built on it, from the run folders.

    python -m bench.costs --preset quick

Each unit runs on one thread (a pipeline worker), so its wall clock is its core time, or a
little more where it shared a core. Per base model (b0, b1, ...): for paper 1 the base model's
training, the floor measurements of its seeds, its customizations and their drift
measurements; for paper 2 the pretrained GAN and every transfer from it (scratch rows count
with the GAN whose seed they share). The shared models (CLIP, the evaluator) are counted once,
apart. Writes runs/<preset>/bench/costs.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import save
from core.cli import make_config
from core.files import read_json
from pipeline.runs import stage_dir

SECONDS = ("seconds", "train_seconds")   # what each stage's metrics.json calls its own time


def unit_seconds(metrics: dict) -> float:
    """A finished unit's own time (training stages: their training clock;
    measurement stages: theirs)."""
    for key in SECONDS:
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", default="quick")
    args, overrides = parser.parse_known_args()
    cfg = make_config(args.preset, overrides, models=())
    run = stage_dir(cfg)
    stages = {"paper 1": ("diffusion", "diffusion-judge", "drift-floor", "customize", "drift"),
              "paper 2": ("gan-pretrain", "gan-pretrain-judge", "gan-transfer")}
    result = {"preset": args.preset, "shared_minutes": {}, "per_base_minutes": {}}
    for stage in ("clip", "eval-net"):
        path = run / stage / "metrics.json"
        result["shared_minutes"][stage] = (unit_seconds(read_json(path)) / 60 if path.exists()
                                           else None)
    for paper, names in stages.items():
        costs: dict[str, float] = {}
        for stage in names:
            for path in sorted((run / stage).glob("*/metrics.json")):
                base = path.parent.name.split("-")[0]  # 'b0' from 'b0', 'b0-s1', 'b0-full-none-s0'
                costs[base] = costs.get(base, 0.0) + unit_seconds(read_json(path)) / 60
        result["per_base_minutes"][paper] = costs
        print(f"{paper}: " + ", ".join(f"{b} {m:.0f} core-min" for b, m in sorted(costs.items())))
    save(stage_dir(cfg, "bench", "costs.json"), result)


if __name__ == "__main__":
    main()
