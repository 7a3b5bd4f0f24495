"""Train the project's models: one stage, or the whole pipeline of both papers.

    python train.py                       # every stage, quick preset (shapes, CPU), then runs/quick/report.html
    python train.py --preset cifar10      # the same at full scale on one GPU
    python train.py clip                  # one stage
    python train.py diffusion --diffusion.lr=1e-4
    python train.py customize --method lora --reg functional

Any config field can be overridden with --section.field=value (see core/config.py). Shortcuts:
--method/--reg set customize.method/reg, --variant/--head set transfer.variant/head.
The pipeline skips steps whose outputs exist (--force reruns them); --all-methods runs every customization
method with and without functional regularization (default: full and LoRA).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import shlex
import sys
import time
from pathlib import Path

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
SHORTCUTS = {"--method": "customize.method", "--reg": "customize.reg", "--variant": "transfer.variant",
             "--head": "transfer.head"}
DEFAULT_METHODS = ("full", "lora")


@dataclasses.dataclass
class Step:
    name: str
    run: callable
    output: Path   # exists once the step has finished
    command: str   # how to rerun just this step


def run_stage(stage: str, cfg) -> dict:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}, all")
    module, function = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), function)(cfg)


def with_section(cfg, section: str, **values):
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})


def pipeline(cfg, overrides: list[str], all_methods: bool) -> list[Step]:
    """Both papers, in dependency order."""
    from minidiff.customize import METHODS, REGULARIZERS
    from minidiff.open_world import drift_stage
    from minidiff.train_customize import run_dir
    from minigan.transfer import ABLATION, run_name

    run = Path(cfg.run.out_dir) / cfg.run.preset
    extra = " ".join([f"--preset {cfg.run.preset}"] + [shlex.quote(o) for o in overrides])
    steps = [Step(stage, lambda s=stage: run_stage(s, cfg), run / stage / "metrics.json",
                  f"python train.py {stage} {extra}")
             for stage in ("clip", "eval-net", "diffusion")]
    for method in METHODS if all_methods else DEFAULT_METHODS:
        for reg in REGULARIZERS:
            c = with_section(cfg, "customize", method=method, reg=reg)
            steps.append(Step(f"customize {method}/{reg}", lambda c=c: run_stage("customize", c),
                              run_dir(c) / "metrics.json",
                              f"python train.py customize --method {method} --reg {reg} {extra}"))
            steps.append(Step(f"drift {method}/{reg}", lambda c=c: drift_stage(c, run_dir(c) / "custom.pt"),
                              run / "drift" / f"{method}-{reg}.json",
                              f"python evaluate.py drift --custom {run_dir(c) / 'custom.pt'} {extra}"))
    steps.append(Step("gan-pretrain", lambda: run_stage("gan-pretrain", cfg), run / "gan-pretrain" / "metrics.json",
                      f"python train.py gan-pretrain {extra}"))
    for variant, head in ABLATION:
        c = with_section(cfg, "transfer", variant=variant, head=head)
        steps.append(Step(f"gan-transfer {run_name(c)}", lambda c=c: run_stage("gan-transfer", c),
                          run / "gan-transfer" / run_name(c) / "metrics.json",
                          f"python train.py gan-transfer --variant {variant} --head {head} {extra}"))
    steps.append(Step("report", lambda: report(cfg), run / "report.html", f"python evaluate.py report {extra}"))
    return steps


def report(cfg) -> dict:
    import evaluate
    return evaluate.main(["report", "--preset", cfg.run.preset, f"--run.out_dir={cfg.run.out_dir}"])


def run_pipeline(steps: list[Step], force: bool, rerun_all: str) -> None:
    start = time.time()
    for i, step in enumerate(steps, 1):
        if step.output.exists() and not force and step.name != "report":
            print(f"[{i}/{len(steps)}] {step.name}: done before ({step.output}), skipped; --force reruns it")
            continue
        print(f"[{i}/{len(steps)}] {step.name} ({time.time() - start:.0f}s so far)", flush=True)
        try:
            step.run()
        except Exception as err:
            sys.exit(f"\nstep '{step.name}' failed: {type(err).__name__}: {err}\nfix the cause, then rerun "
                     f"just this step with:\n  {step.command}\nor the whole pipeline (finished steps are skipped) "
                     f"with:\n  {rerun_all}")
    print(f"pipeline finished in {time.time() - start:.0f}s")


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
    parser.add_argument("--force", action="store_true", help="all: rerun steps whose outputs exist")
    parser.add_argument("--all-methods", action="store_true", help="all: every customization method")
    args, overrides = parser.parse_known_args(argv)
    overrides = expand_shortcuts(overrides)
    try:
        cfg = make_config(args.preset, overrides)
        if args.stage != "all" and args.stage not in STAGES:
            raise ValueError(f"unknown stage {args.stage!r}; valid stages: {', '.join(STAGES)}, all")
    except ValueError as err:
        sys.exit(f"error: {err}")
    if args.stage == "all":
        rerun = " ".join(["python train.py", f"--preset {cfg.run.preset}"] + [shlex.quote(o) for o in overrides])
        run_pipeline(pipeline(cfg, overrides, args.all_methods), args.force, rerun)
    else:
        run_stage(args.stage, cfg)


if __name__ == "__main__":
    main()
