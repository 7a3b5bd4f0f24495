"""Train every model of the project: `python train.py [STAGE] [--preset quick|cifar10] [--section.key=value ...]`.

Stages: clip. With no stage, every stage runs in order for the preset.
"""
from __future__ import annotations

import argparse
import sys

from core.config import PRESETS, make_config

STAGES = ("clip",)


def run_stage(stage: str, cfg) -> dict:
    if stage == "clip":
        from minidiff.train_clip import train_clip
        return train_clip(cfg)
    raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default="all", help=f"one of: {', '.join(STAGES)}, all")
    parser.add_argument("--preset", default="quick", help=f"one of: {', '.join(PRESETS)}")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = make_config(args.preset, overrides)
    except ValueError as err:
        sys.exit(f"error: {err}")
    for stage in STAGES if args.stage == "all" else (args.stage,):
        run_stage(stage, cfg)


if __name__ == "__main__":
    main()
