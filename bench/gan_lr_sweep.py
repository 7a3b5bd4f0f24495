"""Choose each GAN transfer variant's learning rate the same way,
on a criterion that is not the test metric.

    python -m bench.gan_lr_sweep   # quick preset: the sweep, then the chosen rates
    python -m bench.gan_lr_sweep --preset cifar10-cpu --bases 100

Every compared variant (finetuning, and hyper-modulation with either head) is transferred at each
rate of its grid, the finetuning grid including the pretraining rate, on pretrained GANs that no
verdict uses (gan.seed 100, 101: the verdicts use 0..N-1), at the preset's k. The criterion is
FD-eval against held-out *train* images of the target classes (minigan/quality.py,
`fd_eval_validation`): neither the k images a transfer trains on nor the test images every table is
measured on. The chosen rate, the lowest mean criterion over the bases, is what
core.presets.TRANSFER_LR should hold; the JSON (runs/<preset>/bench/gan_lr_sweep.json) keeps every
run's figures, test metrics included, for the record.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common import save
from core.cli import make_config
from core.config import as_override
from core.files import read_json
from core.presets import LR_SWEEP_GAN_SEEDS
from eval.results import transfer_metrics
from eval.stats import mean_sd
from minigan.transfer import transfer_name, with_switches
from pipeline.runs import stage_dir
from pipeline.command import user_errors
from pipeline.scheduler import Unit, default_jobs, run_units

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"finetune": ("finetune", False, "none", "lowrank"),
            "hypermod-lowrank": ("hypermod", True, "barlow", "lowrank"),
            "hypermod-dense": ("hypermod", True, "barlow", "dense")}
# a grid is widened where its best rate was at an end
GRIDS = {"finetune": (2e-3, 5e-3, 1e-2, 2e-2), "hypermod-lowrank": (3e-3, 1e-2, 3e-2),
         "hypermod-dense": (3e-3, 1e-2, 3e-2, 1e-1)}
CRITERION = "fd_eval_validation"


def sweep_units(cfg, bases) -> list[Unit]:
    evaluator = Unit("eval-net", cfg)
    units = [evaluator]
    for b in bases:
        gcfg = cfg.updated("gan", seed=b)
        gan = Unit("gan-pretrain", gcfg)
        units.append(gan)
        for variant, switches in VARIANTS.items():
            for lr in GRIDS[variant]:
                units.append(Unit("gan-transfer",
                                  with_switches(gcfg, *switches).updated("transfer", lr=lr),
                                  (gan, evaluator)))
    return units


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--bases", default=",".join(map(str, LR_SWEEP_GAN_SEEDS)),
                        help="gan.seed of each pretrained GAN swept on")
    parser.add_argument("--jobs", type=int, default=0)
    args, overrides = parser.parse_known_args()
    cfg = make_config(args.preset, overrides, ("evalnet", "gan"))
    bases = [int(b) for b in args.bases.split(",")]
    with user_errors(False):  # a failed unit or Ctrl-C: one line, finished units kept
        run_units(sweep_units(cfg, bases), cfg, args.jobs or default_jobs(cfg.run.device), False,
                  [sys.executable, str(ROOT / "train.py")], stage_dir(cfg, "logs", "bench"),
                  cfg.run.threads or 1)
    result = {"preset": args.preset, "k_per_target": cfg.data.k_per_target, "bases": bases,
              "criterion": CRITERION, "overrides": overrides, "variants": {}}
    for variant, switches in VARIANTS.items():
        rows = {}
        for lr in GRIDS[variant]:
            runs = [read_json(stage_dir(c, "gan-transfer", transfer_name(c), "metrics.json"))
                    for c in (with_switches(cfg.updated("gan", seed=b), *switches)
                              .updated("transfer", lr=lr) for b in bases)]
            figures = [transfer_metrics(r) for r in runs]
            rows[as_override(lr)] = {"runs": [r["name"] for r in runs], **{
                key: mean_sd([f[key] for f in figures])
                for key in (CRITERION, "kid", "fd_eval", "recall", "coverage", "acc_targets")}}
        best = min(rows, key=lambda lr: rows[lr][CRITERION][0])
        result["variants"][variant] = {"grid": rows, "chosen": float(best)}
        line = ", ".join(f"{lr}: {rows[lr][CRITERION][0]:.2f}" for lr in rows)
        print(f"{variant}: validation FD-eval by rate {line} -> {best}")
    save(stage_dir(cfg, "bench", "gan_lr_sweep.json"), result)


if __name__ == "__main__":
    main()
