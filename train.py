"""Train both papers' models and measure them: the whole experiment, or one stage of it.

    # both papers, quick preset (shapes, 2 CPU cores, ~14 min), report
    python train.py
    # 3 base models and 3 pretrained GANs x 2 seeds each: the verdicts
    python train.py --bases 3 --seeds 2
    # the same on CIFAR-10 photos (about an hour and a half)
    python train.py --preset cifar10-cpu
    # one stage, with its config overrides
    python train.py customize --method lora --reg functional
    # every unit of work as a standalone command (for SLURM, parallel)
    python train.py --plan

Read paper1() and paper2(): each lists the units of its experiment in the order one would run them
by hand, each unit a stage (STAGES) with its config and the units it waits for.
pipeline/scheduler.py runs them on --jobs worker processes; a unit that finished before with the
same settings is skipped, an interrupted one resumes (pipeline/runs.py).
"""
from __future__ import annotations

import sys

from core import distributed
from core.cli import make_config
from core.training import pick_device
from core.validate import models_for
from eval.evalnet import train_evaluator
from eval.report import headline, write_report
from minidiff.measure_drift import drift_floor, drift_stage
from minidiff.train_clip import train_clip
from minidiff.train_customize import customize
from minidiff.train_diffusion import judge_diffusion, train_diffusion
from minigan.pretrain import judge_pretrained, pretrain_gan
from minigan.transfer import ABLATION, CURVE, transfer_gan, with_switches
from pipeline.command import parse_command, user_errors
from pipeline.runs import stage_dir
from pipeline.scheduler import Unit, default_jobs, plan, run_units
from pipeline.worker import serve

STAGES = {"clip": train_clip, "eval-net": train_evaluator,
          "diffusion": train_diffusion, "diffusion-judge": judge_diffusion,
          "drift-floor": drift_floor, "customize": customize, "drift": drift_stage,
          "gan-pretrain": pretrain_gan, "gan-pretrain-judge": judge_pretrained,
          "gan-transfer": transfer_gan}


def paper1(cfg, opts) -> list[Unit]:
    """Open-world forgetting in diffusion customization (Laria et al. 2024)."""
    clip = Unit("clip", cfg)           # tiny CLIP: its frozen text encoder will condition the UNet
    evaluator = Unit("eval-net", cfg)  # the project's Inception: it judges samples in both papers
    units = [clip, evaluator]
    for b in range(opts.bases):        # a base model is the most expensive draw of the experiment
        bcfg = cfg.updated("diffusion", seed=b)
        base = Unit("diffusion", bcfg, (clip,))  # text-to-image DDPM, every class but the concept
        # how recognisable its samples are
        units += [base, Unit("diffusion-judge", bcfg, (base, evaluator))]
        for seed in range(opts.seeds):
            scfg = bcfg.updated("customize", seed=seed)
            floor = Unit("drift-floor", scfg, (base,))  # the base model against itself: the floor
            units.append(floor)
            for method in opts.methods:
                for reg in opts.regs:
                    c = scfg.updated("customize", method=method, reg=reg)
                    custom = Unit("customize", c, (base, evaluator))  # learn <new0> from k images
                    # and what else moved
                    units += [custom, Unit("drift", c, (custom, floor, evaluator))]
    return units


def paper2(cfg, opts) -> list[Unit]:
    """Hyper-modulated transfer of an unconditional GAN to a conditional one (Laria et al. 2022)."""
    evaluator = Unit("eval-net", cfg)
    units = [evaluator]
    for b in range(opts.bases):  # each pretrained GAN is one more draw of the experiment
        gcfg = cfg.updated("gan", seed=b)
        gan = Unit("gan-pretrain", gcfg)               # unconditional GAN on the source classes
        units += [gan, Unit("gan-pretrain-judge", gcfg, (gan, evaluator))]
        for k in opts.k or (cfg.data.k_per_target,):  # real images per target class
            # the whole ablation at the preset's k
            rows = ABLATION if k == cfg.data.k_per_target else CURVE
            for row in rows:
                for seed in range(opts.seeds):
                    t = (with_switches(gcfg, *row).updated("transfer", seed=seed)
                         .updated("data", k_per_target=k))
                    after = (evaluator,) if row[0] == "scratch" else (gan, evaluator)
                    # conditional G from k images a class
                    units.append(Unit("gan-transfer", t, after))
    return units


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    with user_errors("--debug" in argv):  # anything a user can fix: one line, before any work
        opts, overrides = parse_command(argv, STAGES, __doc__)
        if opts.worker is not None:  # a worker of the pipeline below: units come from its parent
            return serve(STAGES, opts.worker)
        cfg = make_config(opts.preset, overrides, models_for(opts.stage))
        if opts.stage:
            try:
                STAGES[opts.stage](cfg, opts.force)
            finally:                 # under torchrun: leave the process group either way
                distributed.shutdown()
            return distributed.exit_rank()
        units = ((paper1(cfg, opts) if "1" in opts.papers else [])
                 + (paper2(cfg, opts) if "2" in opts.papers else []))
        # per worker, whatever --jobs is: the results do not depend on it
        threads = cfg.run.threads or 1
        if opts.plan:                # level, id, the ids it waits for, command: tab-separated
            for row in plan(units, cfg, ["python", "train.py", "--preset", opts.preset, *overrides],
                            threads):
                print(row["level"], row["id"], ",".join(row["after"]) or "-", row["command"],
                      sep="\t")
            return
        jobs = opts.jobs or default_jobs(pick_device(cfg.run.device).type)
        run_units(units, cfg, jobs, opts.force, [sys.executable, __file__],
                  stage_dir(cfg, "logs"), threads)
        report = write_report(stage_dir(cfg), stage_dir(cfg, "report.html"))
        print(f"{headline(stage_dir(cfg))}\nreport: {report}")


if __name__ == "__main__":
    main()
