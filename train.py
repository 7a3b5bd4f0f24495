"""Train the project's models: both papers' stages in order, or one stage.

    python train.py                       # every stage, quick preset (shapes, CPU), then runs/quick/report.html
    python train.py --preset cifar10      # the same at full scale on one GPU
    python train.py clip                  # one stage: clip | eval-net | diffusion | customize | gan-pretrain |
                                          #            gan-transfer
    python train.py diffusion --diffusion.lr=1e-4
    python train.py customize --method lora --reg functional
    python train.py gan-transfer --transfer.generator=finetune --transfer.selfinit=false
    python train.py --chain gan-curve --seeds 3   # GAN data efficiency: k = 3, 10, 30, 100 images per class

Any config field can be overridden with --section.field=value (core/config.py lists them); --method and --reg
are short for --customize.method and --customize.reg. A stage that finished before with the same settings is
skipped (it says so, with its figures); --force reruns it from scratch; an interrupted stage resumes from its
last checkpoint. The pipeline customizes with --methods (default full finetuning and LoRA; --all-methods: all
five), each with every regularizer of --regs (default none and functional; l2 is the weight-space baseline);
--seeds N repeats every customization and GAN transfer N times (the base models are shared; default: the
preset's, core.presets.DEFAULT_SEEDS) and the tables show mean +- standard deviation. On a multi-core CPU the
evaluator and the GAN chain run in a background process beside the diffusion chain (core/background.py;
--jobs 1 runs one chain after the other), and once that chain is done the background process takes
customizations from the end of the list while this one takes them from the start; --chain diffusion or
--chain gan runs one chain alone.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from core import background, distributed
from core.cli import make_config
from core.config import Config
from core.errors import UserError
from core.presets import DEFAULT_SEEDS, PRESETS
from core.runs import is_finished, stage_dir
from core.training import pick_device
from core.validate import validate
from eval.evalnet import evaluator_key, train_evaluator
from eval.report import write_report
from minidiff.open_world import drift_stage
from minidiff.train_clip import train_clip
from minidiff.train_customize import customize, run_name
from minidiff.train_diffusion import train_diffusion
from minigan.pretrain import pretrain_gan
from minigan.transfer import ABLATION, CURVE, CURVE_K, transfer_gan, with_switches

STAGES = {"clip": train_clip, "eval-net": train_evaluator, "diffusion": train_diffusion, "customize": customize,
          "gan-pretrain": pretrain_gan, "gan-transfer": transfer_gan}
TEXT_TO_IMAGE, GAN = ("clip", "evalnet", "unet"), ("evalnet", "gan")
MODELS = {"clip": ("clip",), "eval-net": ("evalnet",), "diffusion": TEXT_TO_IMAGE, "customize": TEXT_TO_IMAGE,
          "gan-pretrain": GAN, "gan-transfer": GAN, "all": TEXT_TO_IMAGE + ("gan",)}  # what the config is checked for
SHORTCUTS = {"--method": "customize.method", "--reg": "customize.reg"}
CLAIMS = ".claims"  # <out_dir>/<preset>/.claims/<run>: which process of a parallel pipeline runs which customization
DEFAULT_METHODS, DEFAULT_REGS = ("full", "lora"), ("none", "functional")
ALL_METHODS = ("full", "full+prior", "lora", "custom", "ti")


# ------------------------------------------------------------------------------------------ the two papers

def paper1(cfg: Config, methods=DEFAULT_METHODS, seeds: int = 1, regs=DEFAULT_REGS) -> list:
    """Open-world forgetting, in order: tiny CLIP, the base text-to-image model, then each customization
    (with each regularizer, by default none and functional, repeated with `seeds` seeds) and the drift it
    caused. A list of (stage, config)."""
    return base_models(cfg) + [step for unit in customizations(cfg, methods, seeds, regs) for step in unit]


def base_models(cfg: Config) -> list:
    """Paper 1's base: the tiny CLIP, then the text-to-image model conditioned on it."""
    return [(train_clip, cfg), (train_diffusion, cfg)]


def customizations(cfg: Config, methods=DEFAULT_METHODS, seeds: int = 1, regs=DEFAULT_REGS) -> list[list]:
    """Paper 1's units of work once the base models exist: [(customize, c), (drift_stage, c)] for each method,
    regularizer and seed."""
    units = []
    for method in methods:
        for reg in regs:
            for seed in range(seeds):
                c = validate(cfg.updated("customize", method=method, reg=reg, seed=seed), models=())
                units.append([(customize, c), (drift_stage, c)])
    return units


def paper2(cfg: Config, seeds: int = 1, rows=ABLATION, ks=None) -> list:
    """The evaluator (both papers' metrics need it), then hyper-modulated transfer: pretraining and every row
    of the ablation, each repeated with `seeds` seeds; with ks, every row at each k images per target
    class (the data-efficiency curve). A list of (stage, config)."""
    ks = ks or (cfg.data.k_per_target,)
    return [(train_evaluator, cfg), (pretrain_gan, cfg)] + [
        (transfer_gan, with_switches(cfg, *row).updated("transfer", seed=seed).updated("data", k_per_target=k))
        for k in ks for row in rows for seed in range(seeds)]


def run(steps: list, force: bool, before_each=lambda stage: None) -> None:
    for stage, cfg in steps:
        before_each(stage)
        stage(cfg, force)


def run_shared(units: list[list], force: bool, claims: Path, from_end: bool = False,
               before_each=lambda stage: None) -> None:
    """Run each unit of work that this process claims first (core.background.claim) and leave the others to
    the process that did: the main process walks the list from the start, the helper from the end."""
    for unit in reversed(units) if from_end else units:
        if background.claim(claims, run_name(unit[0][1])):
            run(unit, force, before_each)


def help_with_customizations(cfg: Config, args) -> None:
    """In the background process, its own chain done: share paper 1's customizations with the main process,
    from the end of the list. Starts once the main process has claimed one (its base models exist by then);
    gives up if that process is gone."""
    claims, parent = stage_dir(cfg, CLAIMS), os.getppid()
    while not (claims.exists() and any(claims.iterdir())):
        if os.getppid() != parent:
            return
        time.sleep(1)
    print("[helper] taking customizations from the end of the list", flush=True)
    run_shared(customizations(cfg, args.methods, args.seeds, args.regs), args.force, claims, from_end=True)


def pipeline(cfg: Config, args, overrides: list[str]) -> None:
    """Both papers, then the report. On a multi-core CPU, paper 2 (evaluator first) runs in a background
    process with one thread, paper 1 here waits for the evaluator before the base model's metrics, and the
    two processes share paper 1's customizations once the background chain is done (two single-threaded
    processes do about twice the work of one on two cores, one process with two threads ~1.2x: README, "Speed")."""
    start = time.time()
    parallel = args.jobs == 2 or (args.jobs == 0 and pick_device(cfg.run.device).type == "cpu"
                                  and (os.cpu_count() or 1) >= 2)
    if not parallel:
        run(paper2(cfg, args.seeds) + paper1(cfg, args.methods, args.seeds, args.regs), args.force)
    else:
        log, claims = stage_dir(cfg, "gan-chain.log"), stage_dir(cfg, CLAIMS)
        shutil.rmtree(claims, ignore_errors=True)  # this run's claims only
        pinned = [] if cfg.run.threads else ["--run.threads=1"]
        child = background.start([sys.executable, __file__, "--chain", "gan", "--then-customize", "--preset",
                                  cfg.run.preset, f"--seeds={args.seeds}", f"--methods={','.join(args.methods)}",
                                  f"--regs={','.join(args.regs)}", *overrides, *pinned, *["--force"] * args.force],
                                 log)
        print(f"[evaluator + GAN chain] running in the background (log: {log})", flush=True)
        since = start if args.force else 0.0

        def before_each(stage):
            if stage is train_diffusion:
                background.wait_for(lambda: is_finished(stage_dir(cfg, "eval-net"), evaluator_key(cfg), since),
                                    child, log, "the evaluator was trained")
            if not cfg.run.threads:
                background.share_cores(child)  # every core once the background chain is done
        run(base_models(cfg), args.force, before_each)
        run_shared(customizations(cfg, args.methods, args.seeds, args.regs), args.force, claims,
                   before_each=before_each)
        print("[evaluator + GAN chain] waiting for it to finish", flush=True)
        background.wait(child, log)
    report = write_report(stage_dir(cfg), stage_dir(cfg, "report.html"))
    print(f"pipeline finished in {time.time() - start:.0f}s: {report}")


# ------------------------------------------------------------------------------------------ command line

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


def names(text: str) -> tuple[str, ...]:
    """'full,lora' -> ('full', 'lora')."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("stage", nargs="?", default="all", choices=[*STAGES, "all"], help="default: all")
    parser.add_argument("--preset", default="quick", choices=list(PRESETS))
    parser.add_argument("--force", action="store_true", help="rerun finished stages from scratch")
    parser.add_argument("--methods", type=names, default=DEFAULT_METHODS,
                        help=f"all: customization methods, comma-separated (default: {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--all-methods", dest="methods", action="store_const", const=ALL_METHODS,
                        help="all: every customization method")
    parser.add_argument("--regs", type=names, default=DEFAULT_REGS,
                        help=f"all: regularizers, comma-separated (default: {','.join(DEFAULT_REGS)}; also l2)")
    parser.add_argument("--seeds", type=int, help="all: repeat every customization and transfer with this many "
                                                   "seeds (the tables show mean +- std; default: the preset's, "
                                                   + ", ".join(f"{p} {n}" for p, n in DEFAULT_SEEDS.items()) + ")")
    parser.add_argument("--jobs", type=int, default=0, choices=(0, 1, 2),
                        help="all: 2 runs the GAN chain beside the diffusion chain, 1 one after the other, "
                             "0 (default) picks 2 on a multi-core CPU")
    parser.add_argument("--chain", choices=("diffusion", "gan", "gan-curve"),
                        help="one chain, no report: diffusion (the evaluator, then paper 1), gan (the evaluator and "
                             "the GAN ablation), gan-curve (the data-efficiency curve: its variants at every --k)")
    parser.add_argument("--k", type=lambda s: tuple(int(k) for k in s.split(",")),
                        help="gan-curve: images per target class, e.g. 3,10,30,100 (default: the preset's)")
    parser.add_argument("--then-customize", action="store_true", help=argparse.SUPPRESS)  # the pipeline's helper
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    args, overrides = parser.parse_known_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    args.seeds = args.seeds or DEFAULT_SEEDS[args.preset]
    return args, expand_shortcuts(overrides)


def main(argv=None) -> None:
    args, overrides = parse_args(argv)
    try:
        chain_models = {"diffusion": MODELS["diffusion"], None: MODELS[args.stage]}
        if args.then_customize:
            chain_models["gan"] = MODELS["all"]
        cfg = make_config(args.preset, overrides, chain_models.get(args.chain, MODELS["gan-pretrain"]))
        if args.chain == "diffusion":
            run([(train_evaluator, cfg)] + paper1(cfg, args.methods, args.seeds, args.regs), args.force)
        elif args.chain == "gan":
            run(paper2(cfg, args.seeds), args.force)
            if args.then_customize:
                help_with_customizations(cfg, args)
        elif args.chain == "gan-curve":
            run(paper2(cfg, args.seeds, CURVE, args.k or CURVE_K[args.preset]), args.force)
        elif args.stage == "all":
            pipeline(cfg, args, overrides)
        else:
            STAGES[args.stage](cfg, args.force)
    except (UserError, OSError) as err:  # a problem the user can fix: one line (--debug: the traceback too)
        if args.debug:
            traceback.print_exc()
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        sys.exit("interrupted: rerun the same command to continue (finished stages are skipped, an interrupted "
                 "one resumes from its last checkpoint)")
    finally:  # no barrier first: rank 0 may evaluate for longer than NCCL's timeout while the others exit
        distributed.shutdown()


if __name__ == "__main__":
    main()
