"""Evaluate images and models, one subcommand per measurement.

    python evaluate.py fid --images samples.npz --ref shapes:train
    python evaluate.py fid --images pngs/ --ref cifar10:test:cat,dog --out fid.json
    python evaluate.py sample --ckpt runs/quick/diffusion/b0/last.pt --prompt "a photo of a star"
        --n 64
    python evaluate.py sample --ckpt runs/quick/gan-transfer/b0-finetune-k10-s0/checkpoint.pt
        --class star
    python evaluate.py classify --preset quick
    python evaluate.py drift --custom runs/quick/customize/b0-full-none-s0/custom.pt
    python evaluate.py export --class heart --n 5 --out my_concept   # a class's test images as PNGs
    python evaluate.py report --preset quick        # writes only runs/quick/report.html (or --out)
    python evaluate.py table --preset quick         # prints the results tables; writes nothing
    python evaluate.py verdicts --preset quick      # the verdict table, decided by the rules in
                                                    # eval/verdicts.py

fid: FD, KID and precision/recall of a set of images against real images, in the feature space of
the project's evaluator (--net eval, "FD-eval"; train it with `python train.py eval-net`) or of
torchvision's Inception-v3 (--net inception; not the TF-FID network, so not the papers' numbers).
--ref is DATASET:SPLIT[:CLASS1,CLASS2,...]; the preset defaults to the one for DATASET.

Every subcommand takes --section.field=value overrides (core/config.py); sample uses the
checkpoint's own config and takes only the run.* ones (threads, device, unet_batch). Anything else
is refused.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from core.cache import cache_root
from core.cli import make_config, parse_overrides, set_field
from core.config import Config
from core.data import class_names, load_split
from core.errors import ConfigError, DataError
from core.files import atomic_write, write_json
from core.images import read_images
from core.presets import PRESETS
from core.training import pick_device, setup
from core.validate import models_for, validate
from pipeline.command import (OneLineParser, non_negative, positive, split_overrides,
                              user_errors)
from pipeline.runs import stage_dir

SPLITS = ("train", "test")


def parse_ref(ref: str) -> tuple[str, str, tuple[str, ...] | None]:
    """'cifar10:test:cat,dog' -> ('cifar10', 'test', ('cat', 'dog')); no class list means every
    class."""
    parts = ref.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ConfigError(f"--ref {ref!r}: expected DATASET:SPLIT[:CLASS1,CLASS2,...], "
                          "e.g. cifar10:train")
    if parts[1] not in SPLITS:
        raise ConfigError(f"--ref {ref!r}: the split is one of {', '.join(SPLITS)}, "
                          f"got {parts[1]!r}")
    classes = (tuple(c.strip() for c in parts[2].split(",") if c.strip())
               if len(parts) == 3 else None)
    return parts[0], parts[1], classes


def preset_for(dataset: str) -> str:
    """The first preset whose data is `dataset`."""
    for name, make in PRESETS.items():
        if make().data.dataset == dataset:
            return name
    raise ConfigError(f"no preset uses dataset {dataset!r}; presets: {', '.join(PRESETS)}")


# ------------------------------------------------------------------------------------- subcommands

def run_fid(args, overrides) -> dict:
    from eval.evalnet import describe_evaluator, load_evaluator
    from eval.inception import load_inception
    from eval.reference import distances_to_reference

    dataset, split, classes = parse_ref(args.ref)
    cfg = make_config(args.preset or preset_for(dataset), overrides, models=("evalnet",))
    if cfg.data.dataset != dataset:
        raise ConfigError(f"--ref names {dataset} but preset {cfg.run.preset} uses "
                          f"{cfg.data.dataset}; use --preset {preset_for(dataset)}")
    unknown = [c for c in classes or () if c not in class_names(cfg.data)]
    if unknown or classes == ():   # checked before any images or evaluator are read
        raise ConfigError(f"--ref {args.ref!r}: unknown or no classes {unknown}; {dataset} has "
                          f"{', '.join(class_names(cfg.data))}")
    images = read_images(args.images)
    if images.shape[1:3] != (cfg.data.resolution,) * 2:
        raise ConfigError(f"images are {images.shape[1]}x{images.shape[2]} but the reference is at "
                          f"data.resolution={cfg.data.resolution}; set --data.resolution "
                          "or resize the images")
    device = pick_device(cfg.run.device)
    if args.net == "eval":
        net, network = load_evaluator(cfg, device), describe_evaluator(cfg)
    else:
        net = load_inception(device, download=args.download)
        network = {"name": "torchvision inception_v3 IMAGENET1K_V1 (not the TF-FID network)",
                   "hash": net.checkpoint_hash}
    result = distances_to_reference(cfg, net, images, split, classes, seed=cfg.run.seed)
    summary = {"command": "fid", "images": str(args.images), "ref": args.ref,
               "preset": cfg.run.preset, "classes": list(classes or class_names(cfg.data)),
               "net": args.net, "network": network, **result}
    out = Path(args.out) if args.out else stage_dir(cfg, "evaluate", "fid.json")
    write_json(out, summary)
    kid, pr = result["kid"], result["precision_recall"]
    label = "FD-eval" if args.net == "eval" else "FID (torchvision Inception)"
    print(f"{label} {result['fd']:.4g} ({result['n_images']} images vs {result['n_reference']} "
          f"{args.ref}) | "
          f"KID {kid['all']:.4g} (subsets: {kid['mean']:.4g} +- {kid['std']:.2g}, "
          f"{kid['n_subsets']} of {kid['subset_size']}) | "
          f"precision {pr['precision']:.3f} recall {pr['recall']:.3f} "
          f"(k={pr['k']}, {pr['n_fake']} vs {pr['n_real']}) -> {out}")
    return summary


def run_settings(overrides):
    """The run.* overrides applied to a checkpoint's own config (threads, device, unet_batch); any
    other override is refused: the checkpoint fixes the rest."""
    def apply(cfg):
        for key, value in parse_overrides(overrides):
            if not key.startswith("run."):
                raise ConfigError("sample uses the checkpoint's own config and takes only run.* "
                                  f"overrides, got --{key}")
            cfg = set_field(cfg, key, value)
        return validate(cfg, models=())
    return apply


def run_sample(args, overrides) -> dict:
    """DDIM samples of a prompt from a (customized) text-to-image model, or samples of a GAN: a PNG
    grid and an .npz."""
    from core import checkpoint

    settings = run_settings(overrides)
    kind = checkpoint.load(args.ckpt).get("kind")
    if kind in ("gan-pretrain", "gan-transfer"):
        return sample_gan(args, settings)
    if args.prompt is None:
        raise ConfigError(f"{args.ckpt} is a text-to-image checkpoint: give --prompt, "
                          "e.g. \"a photo of a star\"")
    from minidiff.text2img import generate
    from minidiff.train_customize import load_customized
    from minidiff.train_diffusion import load_diffusion

    stored = (checkpoint.load(args.custom, kind="customized") if args.custom
              else checkpoint.load(args.ckpt))
    if "config" not in stored:
        raise DataError(f"{args.custom or args.ckpt} holds no config: "
                        "it was not written by train.py")
    cfg = settings(Config.from_dict(stored["config"]))
    device = setup(cfg)
    if args.custom:
        model, diffusion, _ = load_customized(args.custom, args.ckpt, device)
    else:
        model, diffusion, _, _ = load_diffusion(args.ckpt, device)
    dc = cfg.diffusion
    steps, guidance = (args.steps or dc.sample_steps,
                       dc.guidance if args.guidance is None else args.guidance)
    if steps > dc.timesteps:
        raise ConfigError(f"--steps {steps} exceeds the model's {dc.timesteps} timesteps")
    validate(cfg.updated("diffusion", eta=args.eta, guidance=guidance), models=())   # eta in [0, 1]
    model.tokenizer.encode(args.prompt)  # an unknown word stops here, before any sampling
    images = generate(model, diffusion, [args.prompt] * args.n,
                      range(args.seed, args.seed + args.n), cfg.data.resolution, steps, guidance,
                      args.eta, cfg.run.unet_batch)
    out = write_samples(images, args.out, cfg.data.resolution, nrow=8)
    print(f"{args.n} samples of {args.prompt!r} "
          f"(DDIM {steps} steps, eta {args.eta}, guidance {guidance}) -> {out}")
    return {"png": out[0], "npz": out[1]}


def sample_gan(args, settings) -> dict:
    """A pretrained GAN's samples, or a transferred one's: one row per target class
    (--class: that one)."""
    import torch

    from minigan.quality import sample_images
    from minigan.transfer import load_generator

    if args.prompt or args.custom:
        raise ConfigError(f"{args.ckpt} is a GAN: it takes --class (or nothing), "
                          "not --prompt or --custom")
    G, cfg = load_generator(args.ckpt)
    cfg = settings(cfg)
    G = G.to(setup(cfg))
    if G.__class__.__name__ == "Generator":  # unconditional
        if args.class_name:
            raise ConfigError(f"{args.ckpt} is the unconditional pretrained GAN: "
                              "it takes no --class")
        images, nrow = sample_images(G, args.n, seed=args.seed), 8
    else:
        targets = cfg.data.target_classes
        if args.class_name and args.class_name not in targets:
            raise ConfigError(f"--class {args.class_name!r}: this GAN draws {', '.join(targets)}")
        classes = [targets.index(args.class_name)] if args.class_name else range(len(targets))
        labels = torch.tensor([c for c in classes for _ in range(args.n)])
        images, nrow = sample_images(G, len(labels), labels, seed=args.seed), args.n
    out = write_samples(images, args.out, cfg.data.resolution, nrow=min(nrow, 16))
    print(f"{len(images)} samples of {args.ckpt} "
          f"({args.class_name or 'every class, one row each'}) -> {out}")
    return {"png": out[0], "npz": out[1]}


def write_samples(images, out: str, resolution: int, nrow: int) -> tuple[str, str]:
    from core.images import save_grid
    out = Path(out)
    atomic_write(out.with_suffix(".npz"), lambda f: np.savez(f, x=images.numpy()))
    save_grid(images, out.with_suffix(".png"), nrow=nrow, scale=max(1, 64 // resolution))
    return str(out.with_suffix(".png")), str(out.with_suffix(".npz"))


def run_classify(args, overrides) -> dict:
    from minidiff.measure_drift import benchmark_classifier
    from minidiff.train_diffusion import base_model_path

    cfg = make_config(args.preset, overrides, models_for("diffusion"))
    result = benchmark_classifier(cfg, args.ckpt or base_model_path(cfg), setup(cfg))
    out = Path(args.out or Path(cfg.run.out_dir) / "bench" / f"classifier_{cfg.run.preset}.json")
    write_json(out, result)
    f, a = result["full"], result["adaptive"]
    print(f"diffusion classifier on {result['n_images']} test images: "
          f"full grid {f['accuracy']:.1%} "
          f"({f['unet_passes_per_image']} UNet passes/image, {f['seconds']:.0f}s), "
          f"adaptive {a['accuracy']:.1%} ({a['unet_passes_per_image']}, {a['seconds']:.0f}s): "
          f"{result['pass_reduction']:.1f}x fewer passes, "
          f"{100 * result['accuracy_lost']:.1f} points of accuracy lost; "
          f"tiny-CLIP zero-shot {result['clip_zero_shot_accuracy']:.1%} -> {out}")
    return result


def run_drift(args, overrides) -> dict:
    """Each customized checkpoint measured against its base model's drift-floor side (made first if
    missing), under the class split and base its checkpoint fixes."""
    from core import checkpoint
    from minidiff.measure_drift import drift_floor, drift_stage
    from minidiff.train_customize import customized_base

    cfg = make_config(args.preset, overrides, models_for("drift"))
    payloads = {path: checkpoint.load(path, kind="customized") for path in args.custom}
    for path, payload in payloads.items():   # every checkpoint and its base checked before any work
        if "config" not in payload:
            raise DataError(f"{path} holds no config: it was not written by train.py customize")
        customized_base(path, payload)
    results = {}
    for path, payload in payloads.items():
        custom = Config.from_dict(payload["config"])
        floor_cfg = (cfg.updated("customize", seed=custom.customize.seed)
                     .updated("diffusion", seed=custom.diffusion.seed))
        drift_floor(floor_cfg)
        results[path] = drift_stage(floor_cfg, args.force, path)
    return results


def run_export(args, overrides) -> dict:
    cfg = make_config(args.preset, overrides, models=())
    if args.class_name not in class_names(cfg.data):
        raise ConfigError(f"--class {args.class_name!r}; {cfg.data.dataset} has "
                          f"{', '.join(class_names(cfg.data))}")
    images = load_split(cfg.data, args.split, cache_root(cfg)).only([args.class_name]).x[:args.n]
    out = Path(args.out)
    for i, image in enumerate(images):
        atomic_write(out / f"{args.class_name}-{i:03d}.png",
                     lambda f: Image.fromarray(image.numpy()).save(f, "PNG"))
    print(f"{len(images)} {args.split} images of {args.class_name} -> {out}/")
    return {"folder": str(out), "n": len(images)}


def run_report(args, overrides) -> dict:
    from eval.report import write_report

    cfg = make_config(args.preset, overrides, models=())
    out = write_report(stage_dir(cfg),
                       Path(args.out) if args.out else stage_dir(cfg, "report.html"))
    print(f"report -> {out}")
    return {"report": str(out)}


def run_table(args, overrides) -> dict:
    from eval.report import markdown_tables
    from eval.results import results_json

    run = stage_dir(make_config(args.preset, overrides, models=()))
    text = markdown_tables(run)
    print(text)
    if args.json:
        write_json(args.json, results_json(run))
        print(f"per-run values -> {args.json}")
    return {"markdown": text}


def run_verdicts(args, overrides) -> dict:
    from eval.results import results_json
    from eval.tables import verdict_markdown

    run = stage_dir(make_config(args.preset, overrides, models=()))
    data = results_json(run)
    print(verdict_markdown(data["verdicts"]))
    if args.json:
        write_json(args.json, data)
        print(f"per-run values and verdicts -> {args.json}")
    return data


# ------------------------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=OneLineParser)

    def add(name, run, help, preset=True):
        p = sub.add_parser(name, help=help, description=help, allow_abbrev=False)
        p.set_defaults(run=run)
        p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
        if preset:
            p.add_argument("--preset", default=None if name == "fid" else "quick",
                           choices=list(PRESETS),
                           help="the preset whose runs and config to use (default: "
                                + ("the one for --ref's dataset)" if name == "fid" else "quick)"))
        return p

    p = add("fid", run_fid, "FD, KID, precision/recall of images against real images")
    p.add_argument("--images", required=True,
                   help="an .npz (x or images: uint8 N,H,W,3) or a folder of PNGs")
    p.add_argument("--ref", required=True,
                   help="DATASET:SPLIT[:CLASS1,CLASS2,...], e.g. cifar10:train")
    p.add_argument("--net", choices=("eval", "inception"), default="eval",
                   help="feature network: the project's evaluator (default) "
                        "or torchvision's Inception-v3")
    p.add_argument("--download", action="store_true",
                   help="--net inception: download the weights if missing")
    p.add_argument("--out", default=None,
                   help="JSON file (default: <out_dir>/<preset>/evaluate/fid.json)")
    p = add("sample", run_sample,
            "samples of a text-to-image model (a prompt) or of a GAN: a PNG grid and an .npz",
            preset=False)
    p.add_argument("--ckpt", required=True,
                   help="runs/<preset>/diffusion/b0/last.pt, or a GAN's checkpoint.pt "
                        "(gan-pretrain or gan-transfer)")
    p.add_argument("--custom", default=None,
                   help="a customized checkpoint (custom.pt) to load on top of --ckpt")
    p.add_argument("--prompt", default=None,
                   help='text-to-image: e.g. "a photo of a star" or "a photo of a <new0>"')
    p.add_argument("--class", dest="class_name", default=None,
                   help="GAN transfer: one target class (default: every class, one row each)")
    p.add_argument("--n", type=positive, default=16,
                   help="images (per class for a GAN; default 16)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i (default 0)")
    p.add_argument("--steps", type=positive, default=None,
                   help="DDIM steps (default: the checkpoint's config)")
    p.add_argument("--guidance", type=non_negative, default=None,
                   help="classifier-free guidance scale s "
                        "(default: the checkpoint's config; 1: none)")
    p.add_argument("--eta", type=non_negative, default=0.0,
                   help="DDIM eta in [0, 1] (default 0: deterministic; 1: as noisy as DDPM)")
    p.add_argument("--out", default="samples",
                   help="output path without extension (default: samples -> "
                        "samples.png, samples.npz)")
    p = add("classify", run_classify, "diffusion classifier accuracy: full grid vs adaptive")
    p.add_argument("--ckpt", default=None,
                   help="diffusion checkpoint (default: the preset's base model b0)")
    p.add_argument("--out", default=None,
                   help="JSON (default: <out_dir>/bench/classifier_<preset>.json)")
    p = add("drift", run_drift, "semantic and appearance drift of a customized model")
    p.add_argument("--custom", required=True, nargs="+",
                   help="customized checkpoint(s) (custom.pt)")
    p.add_argument("--force", action="store_true", help="measure again even if measured before")
    p = add("export", run_export,
            "write a class's real images as PNG files (e.g. to try customize.images)")
    p.add_argument("--class", dest="class_name", required=True,
                   help="a class of the preset's dataset")
    p.add_argument("--n", type=positive, default=5, help="how many (default 5)")
    p.add_argument("--split", choices=SPLITS, default="test", help="default: test")
    p.add_argument("--out", required=True, help="the folder to write")
    p = add("report", run_report, "one self-contained HTML page of a preset's results")
    p.add_argument("--out", default=None, help="HTML file (default: runs/<preset>/report.html)")
    p = add("table", run_table, "print the results tables of a preset's runs as markdown")
    p.add_argument("--json", default=None, help="also write every run's values to this JSON file")
    p = add("verdicts", run_verdicts,
            "print the verdict of each claim, decided by rules fixed before the runs")
    p.add_argument("--json", default=None,
                   help="also write the per-run values and verdicts to this JSON file")
    return parser


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    with user_errors("--debug" in argv, "rerun the same command"):
        options, overrides = split_overrides(argv)   # --section.field=value, spaces and all
        parser = build_parser()
        args, unknown = parser.parse_known_args(options)
        if unknown:  # refused before any work, with the closest option
            known = [o for a in parser._subparsers._group_actions[0].choices[args.command]._actions
                     for o in a.option_strings]
            close = difflib.get_close_matches(unknown[0].split("=")[0], known, n=1)
            raise ConfigError(f"unrecognized argument{'s' * (len(unknown) > 1)} "
                              f"for `{args.command}`: {' '.join(unknown)}"
                              + (f" (did you mean {close[0]}?)" if close else ""))
        return args.run(args, overrides)


if __name__ == "__main__":
    main()
