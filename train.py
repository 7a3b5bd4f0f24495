"""Train the project's models: one stage, or the whole pipeline of both papers.

    python train.py                       # every stage, quick preset (shapes, CPU), then runs/quick/report.html
    python train.py --preset cifar10      # the same at full scale on one GPU
    python train.py clip                  # one stage
    python train.py diffusion --diffusion.lr=1e-4
    python train.py customize --method lora --reg functional
    python train.py --chain gan           # only the evaluator and the GAN chain (pretraining, ablation)

Any config field can be overridden with --section.field=value (see core/config.py). Shortcuts:
--method/--reg set customize.method/reg, --variant/--head set transfer.variant/head.
The pipeline skips steps whose outputs exist (--force reruns them); --all-methods runs every customization
method with and without functional regularization (default: full and LoRA). On a multi-core CPU the
evaluator and the GAN chain run in a background process beside the diffusion chain (--jobs 1 runs
everything in one process, one stage after the other).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import shlex
import sys
import time
from pathlib import Path

from core import distributed
from core.config import PRESETS, make_config
from core.pipeline import Step, StepFailed, run_steps, share_cores, start_background, wait_background, wait_for
from core.training import pick_device

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


def run_stage(stage: str, cfg) -> dict:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}, all")
    module, function = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), function)(cfg)


def with_section(cfg, section: str, **values):
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})


def pipeline(cfg, overrides: list[str], all_methods: bool) -> dict[str, list[Step]]:
    """Both papers as chains of steps: 'evaluator', 'diffusion' and 'gan', then 'report'. The diffusion chain
    needs the evaluator only once its first model is trained; the GAN chain needs it right away."""
    from minidiff.customize import METHODS, REGULARIZERS
    from minidiff.open_world import drift_stage
    from minidiff.train_customize import run_dir
    from minigan.transfer import ABLATION, run_name

    run = Path(cfg.run.out_dir) / cfg.run.preset
    extra = " ".join([f"--preset {cfg.run.preset}"] + [shlex.quote(o) for o in overrides])

    def stage(name, c=cfg, label=None, output=None, flags=""):
        return Step(label or name, lambda: run_stage(name, c), output or run / name / "metrics.json",
                    f"python train.py {name} {flags}{extra}")

    report_step = Step("report", lambda: report(cfg), run / "report.html", f"python evaluate.py report {extra}")
    chains = {"evaluator": [stage("eval-net")], "diffusion": [stage("clip"), stage("diffusion")], "gan": [],
              "report": [report_step]}
    for method in METHODS if all_methods else DEFAULT_METHODS:
        for reg in REGULARIZERS:
            c = with_section(cfg, "customize", method=method, reg=reg)
            chains["diffusion"] += [
                stage("customize", c, f"customize {method}/{reg}", run_dir(c) / "metrics.json",
                      f"--method {method} --reg {reg} "),
                Step(f"drift {method}/{reg}", lambda c=c: drift_stage(c, run_dir(c) / "custom.pt"),
                     run / "drift" / f"{method}-{reg}.json",
                     f"python evaluate.py drift --custom {run_dir(c) / 'custom.pt'} {extra}")]
    chains["gan"].append(stage("gan-pretrain"))
    for variant, head in ABLATION:
        c = with_section(cfg, "transfer", variant=variant, head=head)
        chains["gan"].append(stage("gan-transfer", c, f"gan-transfer {run_name(c)}",
                                   run / "gan-transfer" / run_name(c) / "metrics.json",
                                   f"--variant {variant} --head {head} "))
    return chains


def report(cfg) -> dict:
    import evaluate
    return evaluate.main(["report", "--preset", cfg.run.preset, f"--run.out_dir={cfg.run.out_dir}"])


def run_all(cfg, overrides: list[str], args) -> None:
    """The whole pipeline. On a multi-core CPU the evaluator and the GAN chain run in a background process
    with one thread (core/pipeline.py) while this process runs the diffusion chain: with one thread while
    the background process runs, with every core once it has finished."""
    parallel = args.jobs == 2 or (args.jobs == 0 and pick_device(cfg.run.device).type == "cpu"
                                  and (os.cpu_count() or 1) >= 2)
    chains = pipeline(cfg, overrides, args.all_methods)
    if args.chain:  # the background half of a parallel run
        run_steps(chains["evaluator"] + chains["gan"], args.force)
        return
    start = time.time()
    if not parallel:
        run_steps(chains["evaluator"] + chains["diffusion"] + chains["gan"], args.force, start)
    else:
        log = Path(cfg.run.out_dir) / cfg.run.preset / "gan-chain.log"
        pinned = cfg.run.threads > 0
        argv = [sys.executable, __file__, "all", "--chain", "gan", "--preset", cfg.run.preset, *overrides,
                *([] if pinned else ["--run.threads=1"]), *(["--force"] if args.force else [])]
        child = start_background(argv, log)
        print(f"[evaluator + gan chain] running in the background (log: {log})", flush=True)
        share = None if pinned else lambda: share_cores(child)
        clip, *rest = chains["diffusion"]
        run_steps([clip], args.force, start, before_each=share)
        wait_for(chains["evaluator"][0].output, child, log, since=start if args.force else 0)
        run_steps(rest, args.force, start, before_each=share)
        print("[evaluator + gan chain] waiting for it to finish", flush=True)
        wait_background(child, log, "evaluator + gan")
    run_steps(chains["report"], True, start)
    print(f"pipeline finished in {time.time() - start:.0f}s: {Path(cfg.run.out_dir) / cfg.run.preset / 'report.html'}")


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
    parser.add_argument("--jobs", type=int, default=0, choices=(0, 1, 2),
                        help="all: 2 runs the GAN chain beside the diffusion chain, 1 runs them one after the "
                             "other, 0 (default) picks 2 on a multi-core CPU")
    parser.add_argument("--chain", choices=("gan",),
                        help="all: only the evaluator and GAN chain, no report (what a parallel run starts "
                             "in the background)")
    args, overrides = parser.parse_known_args(argv)
    overrides = expand_shortcuts(overrides)
    try:
        cfg = make_config(args.preset, overrides)
        if args.stage != "all" and args.stage not in STAGES:
            raise ValueError(f"unknown stage {args.stage!r}; valid stages: {', '.join(STAGES)}, all")
    except ValueError as err:
        sys.exit(f"error: {err}")
    if args.stage != "all":
        try:
            run_stage(args.stage, cfg)
        finally:  # no barrier first: rank 0 may evaluate for longer than NCCL's timeout while the others exit
            distributed.shutdown()
        return
    try:
        run_all(cfg, overrides, args)
    except StepFailed as err:
        rerun = " ".join(["python train.py", f"--preset {cfg.run.preset}"] + [shlex.quote(o) for o in overrides])
        sys.exit(f"\n{err}\nor rerun the whole pipeline (finished steps are skipped) with:\n  {rerun}")


if __name__ == "__main__":
    main()
