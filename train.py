"""Train the project's models, one stage or all of them.

    python train.py                       # every stage, quick preset (shapes, CPU)
    python train.py clip                  # one stage
    python train.py diffusion --preset cifar10 --diffusion.lr=1e-4
    python train.py customize --method lora --reg functional

Any config field can be overridden with --section.field=value (see core/config.py). Shortcuts:
--method/--reg set customize.method/reg, --variant/--head set transfer.variant/head.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from core.config import PRESETS, make_config

# stage -> "module:function"; each function takes the Config and returns a dict of metrics
STAGES = {
    "clip": "minidiff.train_clip:train_clip",
    "eval-net": "eval.evaluator:train_evaluator",
    "diffusion": "minidiff.train_diffusion:train_diffusion",
    "customize": "minidiff.train_customize:customize",
    "gan-pretrain": "minigan.pretrain:pretrain_gan",
    "gan-transfer": "minigan.transfer:transfer_gan",
}
DEFAULT_ORDER = ("clip", "eval-net", "diffusion")
SHORTCUTS = {"--method": "customize.method", "--reg": "customize.reg", "--variant": "transfer.variant",
             "--head": "transfer.head"}


def run_stage(stage: str, cfg) -> dict:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}, all")
    module, function = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), function)(cfg)


def expand_shortcuts(args: list[str]) -> list[str]:
    """['--method', 'lora', '--reg=functional'] -> ['--customize.method=lora', '--customize.reg=functional']."""
    out, i = [], 0
    while i < len(args):
        name, has_value, value = args[i].partition("=")
        if name in SHORTCUTS:
            if not has_value:
                i += 1
                value = args[i] if i < len(args) else ""
            out.append(f"--{SHORTCUTS[name]}={value}")
        else:
            out.append(args[i])
        i += 1
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default="all", help=f"one of: {', '.join(STAGES)}, all")
    parser.add_argument("--preset", default="quick", help=f"one of: {', '.join(PRESETS)}")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = make_config(args.preset, expand_shortcuts(overrides))
    except ValueError as err:
        sys.exit(f"error: {err}")
    if args.stage != "all" and args.stage not in STAGES:
        sys.exit(f"error: unknown stage {args.stage!r}; valid stages: {', '.join(STAGES)}, all")
    for stage in DEFAULT_ORDER if args.stage == "all" else (args.stage,):
        run_stage(stage, cfg)


if __name__ == "__main__":
    main()
