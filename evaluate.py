"""Evaluate images and models, one subcommand per measurement.

    python evaluate.py fid --images samples.npz --ref shapes:train
    python evaluate.py fid --images pngs/ --ref cifar10:test:cat,dog --out fid.json
    python evaluate.py fid --images samples.npz --ref cifar10:train --net inception --download
    python evaluate.py sample --ckpt runs/quick/diffusion/last.pt --prompt "a photo of a star" --n 64
    python evaluate.py classify --preset quick
    python evaluate.py drift --custom runs/quick/customize/full-none-s0/custom.pt
    python evaluate.py export --class heart --n 5 --out my_concept   # a class's test images as PNGs
    python evaluate.py report --preset quick        # writes only runs/quick/report.html (or --out)
    python evaluate.py table --preset quick         # prints the results tables; writes nothing

fid: FD, KID and precision/recall of a set of images against real images, in the feature space of the
project's evaluator (--net eval, "FD-eval"; train it with `python train.py eval-net`) or of torchvision's
Inception-v3 (--net inception; not the TF-FID network, so not the papers' numbers). --ref is
DATASET:SPLIT[:CLASS1,CLASS2,...]; the preset defaults to the one for DATASET.

Subcommands that read a preset's config (fid, classify, drift, export, report, table) take --section.field=value
overrides (core/config.py); sample uses the checkpoint's own config. Anything else is refused.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

from core.cache import cache_root
from core.cli import make_config, parse_overrides
from core.data import class_names, load_split
from core.errors import ConfigError, DataError, UserError
from core.files import atomic_write, write_json
from core.presets import PRESETS
from core.runs import stage_dir
from core.training import pick_device, setup

TEXT_TO_IMAGE = ("clip", "evalnet", "unet")  # the models a command builds: the config is checked against them


def read_images(path: str) -> np.ndarray:
    """uint8 (N, H, W, 3) from an .npz (key `x` or `images`) or a folder of .png files (sorted by name)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.png"))
        if not files:
            raise DataError(f"no .png files in {p}")
        images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        if len({im.shape for im in images}) > 1:
            raise DataError(f"the images in {p} do not all have the same size")
        x = np.stack(images)
    elif p.suffix == ".npz" and p.exists():
        with np.load(p) as f:
            key = next((k for k in ("x", "images") if k in f), None)
            if key is None:
                raise DataError(f"{p} has no array named 'x' or 'images' (it has {', '.join(f.files)})")
            x = f[key]
    else:
        raise DataError(f"--images {path!r} is neither a folder of .png files nor an existing .npz file")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise DataError(f"{p}: expected uint8 images (N, H, W, 3), got {x.dtype} {x.shape}")
    return x


def parse_ref(ref: str) -> tuple[str, str, tuple[str, ...] | None]:
    """'cifar10:test:cat,dog' -> ('cifar10', 'test', ('cat', 'dog')); no class list means every class."""
    parts = ref.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ConfigError(f"--ref {ref!r}: expected DATASET:SPLIT[:CLASS1,CLASS2,...], e.g. cifar10:train")
    classes = tuple(c.strip() for c in parts[2].split(",") if c.strip()) if len(parts) == 3 else None
    return parts[0], parts[1], classes


def preset_for(dataset: str) -> str:
    """The first preset whose data is `dataset`."""
    for name, make in PRESETS.items():
        if make().data.dataset == dataset:
            return name
    raise ConfigError(f"no preset uses dataset {dataset!r}; presets: {', '.join(PRESETS)}")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


# ------------------------------------------------------------------------------------------ subcommands

def run_fid(args, overrides) -> dict:
    from eval.evalnet import describe_evaluator, load_evaluator
    from eval.inception import load_inception
    from eval.reference import distances_to_reference

    dataset, split, classes = parse_ref(args.ref)
    cfg = make_config(args.preset or preset_for(dataset), overrides, models=("evalnet",))
    if cfg.data.dataset != dataset:
        raise ConfigError(f"--ref names {dataset} but preset {cfg.run.preset} uses {cfg.data.dataset}; "
                          f"use --preset {preset_for(dataset)}")
    images = read_images(args.images)
    if images.shape[1:3] != (cfg.data.resolution,) * 2:
        raise ConfigError(f"images are {images.shape[1]}x{images.shape[2]} but the reference is at "
                          f"data.resolution={cfg.data.resolution}; set --data.resolution or resize the images")
    device = pick_device(cfg.run.device)
    if args.net == "eval":
        net, network = load_evaluator(cfg, device), describe_evaluator(cfg)
    else:
        net = load_inception(device, download=args.download)
        network = {"name": "torchvision inception_v3 IMAGENET1K_V1 (not the TF-FID network)",
                   "hash": net.checkpoint_hash}
    result = distances_to_reference(cfg, net, images, split, classes, seed=cfg.run.seed)
    summary = {"command": "fid", "images": str(args.images), "ref": args.ref, "preset": cfg.run.preset,
               "classes": list(classes or class_names(cfg.data)), "net": args.net, "network": network, **result}
    out = Path(args.out) if args.out else stage_dir(cfg, "evaluate", "fid.json")
    write_json(out, summary)
    kid, pr = result["kid"], result["precision_recall"]
    label = "FD-eval" if args.net == "eval" else "FID (torchvision Inception)"
    print(f"{label} {result['fd']:.4g} ({result['n_images']} images vs {result['n_reference']} {args.ref}) | "
          f"KID {kid['mean']:.4g} +- {kid['std']:.2g} ({kid['n_subsets']} subsets of {kid['subset_size']}) | "
          f"precision {pr['precision']:.3f} recall {pr['recall']:.3f} (k={pr['k']}, {pr['n_fake']} vs "
          f"{pr['n_real']}) -> {out}")
    return summary


def run_sample(args, overrides) -> dict:
    from core.images import save_grid
    from minidiff.customize import load_customized
    from minidiff.text2img import generate
    from minidiff.train_diffusion import load_diffusion

    device = pick_device(args.device)
    if args.custom:
        model, diffusion, cfg = load_customized(args.custom, args.ckpt, device)
    else:
        model, diffusion, cfg, _ = load_diffusion(args.ckpt, device)
    dc = cfg.diffusion
    steps, guidance = args.steps or dc.sample_steps, dc.guidance if args.guidance is None else args.guidance
    if steps > dc.timesteps:
        raise ConfigError(f"--steps {steps} exceeds the model's {dc.timesteps} timesteps")
    model.tokenizer.encode(args.prompt)  # an unknown word stops here, before any sampling
    images = generate(model, diffusion, [args.prompt] * args.n, range(args.seed, args.seed + args.n),
                      cfg.data.resolution, steps, guidance, args.eta, cfg.run.unet_batch)
    out = Path(args.out)
    atomic_write(out.with_suffix(".npz"), lambda f: np.savez(f, x=images.numpy()))
    save_grid(images, out.with_suffix(".png"), nrow=8, scale=max(1, 64 // cfg.data.resolution))
    print(f"{args.n} samples of {args.prompt!r} (DDIM {steps} steps, eta {args.eta}, guidance {guidance}) -> "
          f"{out.with_suffix('.png')}, {out.with_suffix('.npz')}")
    return {"png": str(out.with_suffix(".png")), "npz": str(out.with_suffix(".npz"))}


def run_classify(args, overrides) -> dict:
    from minidiff.open_world import benchmark_classifier
    from minidiff.train_diffusion import base_model_path

    cfg = make_config(args.preset, overrides, TEXT_TO_IMAGE)
    result = benchmark_classifier(cfg, args.ckpt or base_model_path(cfg), setup(cfg))
    out = Path(args.out or Path(cfg.run.out_dir) / "bench" / f"classifier_{cfg.run.preset}.json")
    write_json(out, result)
    f, a = result["full"], result["adaptive"]
    print(f"diffusion classifier on {result['n_images']} test images: full grid {f['accuracy']:.1%} "
          f"({f['unet_passes_per_image']} UNet passes/image, {f['seconds']:.0f}s), adaptive {a['accuracy']:.1%} "
          f"({a['unet_passes_per_image']}, {a['seconds']:.0f}s): {result['pass_reduction']:.1f}x fewer passes, "
          f"{100 * result['accuracy_lost']:.1f} points of accuracy lost; tiny-CLIP zero-shot "
          f"{result['clip_zero_shot_accuracy']:.1%} -> {out}")
    return result


def run_drift(args, overrides) -> dict:
    from minidiff.open_world import drift_stage

    cfg = make_config(args.preset, overrides, TEXT_TO_IMAGE)
    return {path: drift_stage(cfg, args.force, path, args.base) for path in args.custom}


def run_export(args, overrides) -> dict:
    cfg = make_config(args.preset, overrides, models=())
    if args.class_name not in class_names(cfg.data):
        raise ConfigError(f"--class {args.class_name!r}; {cfg.data.dataset} has {', '.join(class_names(cfg.data))}")
    images = load_split(cfg.data, args.split, cache_root(cfg)).only([args.class_name]).x[:args.n]
    out = Path(args.out)
    for i, image in enumerate(images):
        atomic_write(out / f"{args.class_name}-{i:03d}.png", lambda f: Image.fromarray(image.numpy()).save(f, "PNG"))
    print(f"{len(images)} {args.split} images of {args.class_name} -> {out}/")
    return {"folder": str(out), "n": len(images)}


def run_report(args, overrides) -> dict:
    from eval.report import write_report

    cfg = make_config(args.preset, overrides, models=())
    out = write_report(stage_dir(cfg), Path(args.out) if args.out else stage_dir(cfg, "report.html"))
    print(f"report -> {out}")
    return {"report": str(out)}


def run_table(args, overrides) -> dict:
    from eval.report import drift_summary, markdown_tables

    run = stage_dir(make_config(args.preset, overrides, models=()))
    text = markdown_tables(run)
    print(text)
    if args.json:
        write_json(args.json, {"drift": drift_summary(run)})
        print(f"per-repeat values -> {args.json}")
    return {"markdown": text}


# ------------------------------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, run, help, config=True):
        p = sub.add_parser(name, help=help, allow_abbrev=False)
        p.set_defaults(run=run, takes_config=config)
        if config:
            p.add_argument("--preset", default=None if name == "fid" else "quick", choices=list(PRESETS))
        return p

    p = add("fid", run_fid, "FD, KID, precision/recall of images against real images")
    p.add_argument("--images", required=True, help="an .npz (x or images: uint8 N,H,W,3) or a folder of PNGs")
    p.add_argument("--ref", required=True, help="DATASET:SPLIT[:CLASS1,CLASS2,...], e.g. cifar10:train")
    p.add_argument("--net", choices=("eval", "inception"), default="eval", help="feature network")
    p.add_argument("--download", action="store_true", help="--net inception: download the weights if missing")
    p.add_argument("--out", default=None, help="JSON file (default: <out_dir>/<preset>/evaluate/fid.json)")
    p = add("sample", run_sample, "DDIM samples of a prompt: a PNG grid and an .npz", config=False)
    p.add_argument("--ckpt", required=True, help="a diffusion checkpoint (runs/<preset>/diffusion/last.pt)")
    p.add_argument("--custom", default=None, help="a customized checkpoint to load on top of --ckpt")
    p.add_argument("--prompt", required=True, help='e.g. "a photo of a star" or "a photo of a <new0>"')
    p.add_argument("--n", type=positive, default=64)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--steps", type=positive, default=None, help="DDIM steps (default: the checkpoint's config)")
    p.add_argument("--guidance", type=non_negative, default=None)
    p.add_argument("--eta", type=non_negative, default=0.0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", default="samples", help="output path without extension (.png and .npz are written)")
    p = add("classify", run_classify, "diffusion classifier accuracy: full grid vs adaptive")
    p.add_argument("--ckpt", default=None, help="diffusion checkpoint (default: the preset's base model)")
    p.add_argument("--out", default=None, help="JSON (default: <out_dir>/bench/classifier_<preset>.json)")
    p = add("drift", run_drift, "semantic and appearance drift of a customized model")
    p.add_argument("--custom", required=True, nargs="+", help="customized checkpoint(s) (custom.pt)")
    p.add_argument("--base", default=None, help="base diffusion checkpoint (default: the one each was made from)")
    p.add_argument("--force", action="store_true", help="measure again even if measured before")
    p = add("export", run_export, "write a class's real images as PNG files (e.g. to try customize.images)")
    p.add_argument("--class", dest="class_name", required=True, help="a class of the preset's dataset")
    p.add_argument("--n", type=positive, default=5)
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--out", required=True, help="the folder to write")
    p = add("report", run_report, "one self-contained HTML page of a preset's results")
    p.add_argument("--out", default=None, help="HTML file (default: runs/<preset>/report.html)")
    p = add("table", run_table, "print the results tables of a preset's run as markdown (writes nothing)")
    p.add_argument("--json", default=None, help="also write every cell's per-repeat values to this JSON file")
    return parser


def main(argv=None) -> dict:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if extra and not args.takes_config:
            raise ConfigError(f"unrecognized arguments for `{args.command}`: {' '.join(extra)} (see "
                              f"`python evaluate.py {args.command} --help`; it uses the checkpoint's own config)")
        parse_overrides(extra)  # anything but --section.field=value is refused here, before any work
        return args.run(args, extra)
    except (UserError, OSError) as err:  # a problem the user can fix: one line (--debug: the traceback too)
        if args.debug:
            traceback.print_exc()
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
