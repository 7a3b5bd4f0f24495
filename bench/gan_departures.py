"""What each departure from the official hyper-modulation recipe costs (paper 2), measured by
putting it back.

A row (--variant: the paper's full method with the low-rank or the dense head, or finetuning, so
that the baseline gets the official settings too; at the preset's k) is transferred again with one
setting changed at a time, usually to the official code's value, with N transfer seeds each
from the same pretrained GAN and evaluator (those of --run.out_dir, trained first if missing). Every
control trains in its own folder, <out_dir>/departures/<control>/, which links to the shared
pretrained GAN (the default shares the ablation's runs in <out_dir> itself); finished runs are
skipped, so rerunning the command only adds what is missing. The JSON
(runs/<preset>/bench/gan_departures_<variant>-b<gan.seed>.json) holds each run's figures and, per
control, mean +- std over the seeds. From the repository root:

    python -m bench.gan_departures --seeds 3 --run.out_dir=runs/gan-q --run.threads=1
    python -m bench.gan_departures --variant finetune --seeds 2
        --controls r1_gamma=10,augment=none,default
    python -m bench.gan_departures --preset cifar10 --controls default,class_lr_mul=0.001
        <overrides>
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import save
from core.cli import make_config
from pipeline.runs import stage_dir
from eval.evalnet import train_evaluator
from eval.stats import mean_sd
from minigan.pretrain import pretrain_gan
from minigan.transfer import transfer_gan

# name -> overrides, in the order they run (the default, shared with the ablation, last)
CONTROLS = {
    "class_lr_mul=0.001": ["--transfer.class_lr_mul=0.001"],    # official transfer multiplier
    "class_lr_mul=0.001+noise=0.1": ["--transfer.class_lr_mul=0.001",
                                     "--transfer.selfinit_noise=0.1"],
    "selfinit_noise=0.1": ["--transfer.selfinit_noise=0.1"],    # symmetry breaking (official: none)
    # the class network at the full rate
    "selfinit_class_lr_mul=1": ["--transfer.selfinit_class_lr_mul=1"],
    "d_class_init=copy": ["--transfer.d_class_init=copy"],      # official: random class heads
    "d_class_lr_mul=1": ["--transfer.d_class_lr_mul=1"],        # official: one rate for all of D
    "r1_gamma=10": ["--transfer.r1_gamma=10"],                  # official (StyleGAN v1, 256 px)
    "augment=none": ["--transfer.augment="],                    # official: no DiffAugment
    "steps=2400": ["--transfer.steps=2400"],   # 3x the quick and cifar10-cpu budget (official 200k)
    "default": [],
}
FULL = ["--transfer.generator=hypermod", "--transfer.selfinit=true", "--transfer.ssl=barlow"]
VARIANTS = {  # the rows a control can be put back on (--variant)
    "hypermod+selfinit+ssl-lowrank": [*FULL, "--transfer.head=lowrank"],
    "hypermod+selfinit+ssl-dense": [*FULL, "--transfer.head=dense"],
    "finetune": ["--transfer.generator=finetune", "--transfer.selfinit=false",
                 "--transfer.ssl=none"],
}
FIGURES = {"kid": lambda r: r["quality"]["kid"],
           "accuracy_among_targets": lambda r: r["quality"]["accuracy_among_targets"],
           "accuracy": lambda r: r["quality"]["accuracy"],
           "fd_eval": lambda r: r["quality"]["fd_eval"], "recall": lambda r: r["quality"]["recall"],
           "coverage": lambda r: r["quality"]["coverage"],
           "nn_ratio": lambda r: r["quality"]["nn_ratio"],
           "class_separation": lambda r: r["class_separation"]["features"],
           # a row without self-initialization has none
           "start_fd_ratio": lambda r: ((r["start_check"] or {}).get("after_selfinit")
                                        or {}).get("ratio")}


def control_dir(out_dir: str, preset: str, name: str) -> str:
    """<out_dir>/departures/<name>/, with <preset>/{eval-net, gan-pretrain} and cache linked to
    out_dir's (out_dir itself for the default)."""
    if name == "default":
        return out_dir
    folder = Path(out_dir, "departures", name)
    for link, target in ((folder / preset / "eval-net", Path(out_dir, preset, "eval-net")),
                         (folder / preset / "gan-pretrain", Path(out_dir, preset, "gan-pretrain")),
                         (folder / "cache", Path(out_dir, "cache"))):
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target.resolve(), target_is_directory=True)
    return str(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--controls", default=",".join(CONTROLS),
                        help="names from CONTROLS, comma-separated")
    parser.add_argument("--variant", default="hypermod+selfinit+ssl-lowrank", choices=VARIANTS,
                        help="the row whose departures are put back")
    args, overrides = parser.parse_known_args()
    names = args.controls.split(",")
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        parser.error(f"unknown controls {unknown}; choose from {', '.join(CONTROLS)}")
    cfg = make_config(args.preset, overrides, ("evalnet", "gan"))
    train_evaluator(cfg)
    pretrain_gan(cfg)
    result = {"variant": args.variant, "k_per_target": cfg.data.k_per_target,
              "seeds": args.seeds, "overrides": overrides, "controls": {}}
    for name in names:
        out = control_dir(cfg.run.out_dir, args.preset, name)
        settings = [*overrides, *VARIANTS[args.variant], *CONTROLS[name], f"--run.out_dir={out}"]
        runs = [transfer_gan(make_config(args.preset, [*settings, f"--transfer.seed={seed}"],
                                         ("evalnet", "gan")))
                for seed in range(args.seeds)]
        result["controls"][name] = {"overrides": CONTROLS[name], **{
            key: {"mean_sd": mean_sd([f(r) for r in runs]), "per_seed": [f(r) for r in runs]}
            for key, f in FIGURES.items()}}
        # after each control: partial runs count
        save(stage_dir(cfg, "bench", f"gan_departures_{args.variant}-b{cfg.gan.seed}.json"), result)


if __name__ == "__main__":
    main()
