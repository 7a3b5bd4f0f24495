"""Fidelity against drift: every regularizer at several weights,
so that they are compared at the concept fidelity they reach, not at the one weight each
happens to have.

    python -m bench.regularizer_curves --preset cifar10-cpu --bases 2 --seeds 1
    python -m bench.regularizer_curves --preset quick --bases 2 --method full

Each condition is a customization (method --method) with one regularizer setting, measured by the
drift protocol on every base model and seed; the runs land in the preset's run folder beside the
pipeline's (their names carry the setting: minidiff.train_customize.regularizer_name), so
`python evaluate.py table` and the report show them as rows, and the report draws each
regularizer's curve of held-out accuracy change against concept fidelity. CONDITIONS lists the
settings: today's functional regularizer, the ones meant to reach prompts they do not name (random
subjects, cross-paired anchors, classifier-score distillation), and the controls (no regularizer,
replay of the anchors, the empty prompt's share at 0 and 1, weight-space L2). At the end, every
condition is paired with today's regularizer and with the floor on the base models and seeds both
have (runs/<preset>/bench/regularizer_curves.json, and one line per condition), and a line fitted
over every run says how much of the held-out margin change the per-prompt split explains.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common import save
from core.cli import make_config
from eval.results import paper1_values
from eval.stats import line_fit, paired
from eval.verdicts import describe
from pipeline.command import user_errors
from pipeline.runs import stage_dir
from pipeline.scheduler import Unit, default_jobs, run_units

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = {  # name -> customize fields; the weights span weak to strong
    "none": {"reg": "none"},
    **{f"functional w{w:g}": {"reg": "functional", "lambda_fr": w} for w in (1.0, 3.0, 10.0)},
    **{f"functional+random w{w:g}": {"reg": "functional", "anchor_source": "random", "lambda_fr": w}
       for w in (1.0, 3.0, 10.0)},
    **{f"functional+cross w{w:g}": {"reg": "functional", "anchor_pairing": "cross", "lambda_fr": w}
       for w in (3.0,)},
    **{f"distill w{w:g}": {"reg": "distill", "lambda_distill": w} for w in (1e4, 1e5)},
    **{f"replay w{w:g}": {"reg": "replay", "lambda_replay": w} for w in (0.3, 1.0)},
    **{f"functional empty{p:g}": {"reg": "functional", "empty_anchor_prob": p} for p in (0.0, 1.0)},
    **{f"l2 w{w:g}": {"reg": "l2", "lambda_l2": w} for w in (1e-4, 1e-3)},
}


def curve_units(cfg, bases: int, seeds: int, method: str, names) -> list[Unit]:
    clip, evaluator = Unit("clip", cfg), Unit("eval-net", cfg)
    units = [clip, evaluator]
    for b in range(bases):
        bcfg = cfg.updated("diffusion", seed=b)
        base = Unit("diffusion", bcfg, (clip,))
        units.append(base)
        for s in range(seeds):
            scfg = bcfg.updated("customize", seed=s, method=method)
            floor = Unit("drift-floor", scfg, (base,))
            units.append(floor)
            for name in names:
                c = scfg.updated("customize", **CONDITIONS[name])
                custom = Unit("customize", c, (base, evaluator))
                units += [custom, Unit("drift", c, (custom, floor, evaluator))]
    return units


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--bases", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--method", default="full")
    parser.add_argument("--conditions", default=",".join(CONDITIONS),
                        help="names from CONDITIONS, comma-separated")
    parser.add_argument("--jobs", type=int, default=0)
    args, overrides = parser.parse_known_args()
    names = [n.strip() for n in args.conditions.split(",")]
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        parser.error(f"unknown conditions {unknown}; choose from {', '.join(CONDITIONS)}")
    cfg = make_config(args.preset, overrides)
    with user_errors(False):  # a failed unit or Ctrl-C: one line, finished units kept
        run_units(curve_units(cfg, args.bases, args.seeds, args.method, names), cfg,
                  args.jobs or default_jobs(cfg.run.device), False,
                  [sys.executable, str(ROOT / "train.py")], stage_dir(cfg, "logs", "bench"),
                  cfg.run.threads or 1)
    values = paper1_values(Path(cfg.run.out_dir, args.preset))[0]
    summary = against_today(values, args.method)
    fit = gap_explains_margin(values)
    save(stage_dir(cfg, "bench", "regularizer_curves.json"), {**summary, "gap_fit": fit})
    for name, row in summary.items():
        print(f"{name}: " + "; ".join(f"{what} {describe({'stat': stat}, 100)}"
                                       for what, stat in row.items() if stat))
    if fit:
        print(f"held-out margin change = {1000 * fit['intercept']:+.2f}e-3 + {fit['slope']:.2f} x "
              f"(held-out minus anchored prompts' own error change), r = {fit['r']:.2f} over "
              f"{fit['n_runs']} customizations")


def against_today(values: dict, method: str) -> dict:
    """Per condition of `method`, paired over the base models and seeds both have (eval.stats):
    its held-out flip rate minus today's regularizer's (functional at its default weight) and
    minus the floor, its held-out accuracy change minus the floor's, and its concept fidelity minus
    today's."""
    today = values.get(f"{method} / functional", {})
    out = {}
    for name, v in values.items():
        if not name.startswith(f"{method} / "):
            continue
        out[name] = {
            "held-out flips - today's": paired(v.get("heldout_flip", {}),
                                               today.get("heldout_flip", {})),
            "held-out flips - floor": paired(v.get("heldout_flip", {}),
                                             values.get("floor", {}).get("heldout_flip", {})),
            "held-out accuracy change - floor's": paired(
                v.get("heldout_change", {}), values.get("floor", {}).get("heldout_change", {})),
            "fidelity - today's": paired(v.get("fidelity", {}), today.get("fidelity", {}))}
    return out


def gap_explains_margin(values: dict) -> dict | None:
    """Least squares over every customization run (all conditions, the floor left out): each run's
    held-out margin change y against its gap x, the held-out prompts' own error change minus the
    anchored prompts' (the per-prompt split of the drift protocol). A slope near 1 with a high r
    says the held-out images lose their margin because their own prompts lost ground against the
    anchored prompts, not through per-image effects."""
    xs, ys = [], []
    for name, v in values.items():
        if name == "floor":
            continue
        for run, y in v.get("heldout_margin", {}).items():
            held, anchored = (v.get(k, {}).get(run) for k in ("heldout_specific",
                                                              "anchored_specific"))
            if None not in (y, held, anchored):
                xs.append(held - anchored)
                ys.append(y)
    fit = line_fit(xs, ys)
    return fit and {"n_runs": fit.pop("n"), **fit}


if __name__ == "__main__":
    main()
