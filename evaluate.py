"""Evaluate images and models, one subcommand per measurement.

    python evaluate.py fid --images samples.npz --ref shapes:train
    python evaluate.py fid --images pngs/ --ref cifar10:test:cat,dog --out fid.json
    python evaluate.py fid --images samples.npz --ref cifar10:train --net inception --download
    python evaluate.py sample --ckpt runs/quick/diffusion/last.pt --prompt "a photo of a star" --n 64
    python evaluate.py classify --preset quick
    python evaluate.py drift --custom runs/quick/customize/full-none/custom.pt
    python evaluate.py report --preset quick
    python evaluate.py table --preset quick

fid: FD, KID and precision/recall of a set of images against real images, in the feature space of the
project's evaluator (--net eval, "FD-eval"; train it with `python train.py eval-net`) or of torchvision's
Inception-v3 (--net inception; not the TF-FID network, so not the papers' numbers). --ref is
DATASET:SPLIT[:CLASS1,CLASS2,...]; the preset defaults to the one for DATASET.

Any config field can be overridden with --section.field=value (see core/config.py). To add a subcommand,
write add_<name>(subparsers) and run_<name>(args, overrides) -> dict, and list add_<name> in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from core.config import PRESETS, make_config
from core.data import class_names
from core.training import pick_device, write_json


def read_images(path: str) -> np.ndarray:
    """uint8 (N, H, W, 3) from an .npz (key `x` or `images`) or a folder of .png files (sorted by name)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.png"))
        if not files:
            raise ValueError(f"no .png files in {p}")
        images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        if len({im.shape for im in images}) > 1:
            raise ValueError(f"the images in {p} do not all have the same size")
        x = np.stack(images)
    elif p.suffix == ".npz" and p.exists():
        with np.load(p) as f:
            key = next((k for k in ("x", "images") if k in f), None)
            if key is None:
                raise ValueError(f"{p} has no array named 'x' or 'images' (it has {', '.join(f.files)})")
            x = f[key]
    else:
        raise ValueError(f"--images {path!r} is neither a folder of .png files nor an existing .npz file")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{p}: expected uint8 images (N, H, W, 3), got {x.dtype} {x.shape}")
    return x


def parse_ref(ref: str) -> tuple[str, str, tuple[str, ...] | None]:
    """'cifar10:test:cat,dog' -> ('cifar10', 'test', ('cat', 'dog')); no class list means every class."""
    parts = ref.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ValueError(f"--ref {ref!r}: expected DATASET:SPLIT[:CLASS1,CLASS2,...], e.g. cifar10:train")
    classes = tuple(c.strip() for c in parts[2].split(",") if c.strip()) if len(parts) == 3 else None
    return parts[0], parts[1], classes


def preset_for(dataset: str) -> str:
    """The first preset whose data is `dataset`."""
    for name, make in PRESETS.items():
        if make().data.dataset == dataset:
            return name
    raise ValueError(f"no preset uses dataset {dataset!r}; presets: {', '.join(PRESETS)}")


# ------------------------------------------------------------------------------------------ fid

def add_fid(subparsers) -> None:
    p = subparsers.add_parser("fid", help="FD, KID, precision/recall of images against real images",
                              allow_abbrev=False)
    p.add_argument("--images", required=True, help="an .npz (x or images: uint8 N,H,W,3) or a folder of PNGs")
    p.add_argument("--ref", required=True, help="DATASET:SPLIT[:CLASS1,CLASS2,...], e.g. cifar10:train")
    p.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default: the ref dataset's)")
    p.add_argument("--net", choices=("eval", "inception"), default="eval", help="feature network")
    p.add_argument("--download", action="store_true", help="--net inception: download the weights if missing")
    p.add_argument("--out", default=None, help="JSON file (default: <out_dir>/<preset>/evaluate/fid.json)")
    p.set_defaults(run=run_fid)


def run_fid(args, overrides) -> dict:
    from eval.evaluator import describe_evaluator, load_evaluator
    from eval.inception import load_inception
    from eval.reference import distances_to_reference

    dataset, split, classes = parse_ref(args.ref)
    cfg = make_config(args.preset or preset_for(dataset), overrides)
    if cfg.data.dataset != dataset:
        raise ValueError(f"--ref names {dataset} but preset {cfg.run.preset} uses {cfg.data.dataset}; "
                         f"use --preset {preset_for(dataset)}")
    images = read_images(args.images)
    if images.shape[1:3] != (cfg.data.resolution,) * 2:
        raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} but the reference is at "
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
    out = Path(args.out) if args.out else Path(cfg.run.out_dir) / cfg.run.preset / "evaluate" / "fid.json"
    write_json(out, summary)
    kid, pr = result["kid"], result["precision_recall"]
    label = "FD-eval" if args.net == "eval" else "FID (torchvision Inception)"
    print(f"{label} {result['fd']:.4g} ({result['n_images']} images vs {result['n_reference']} {args.ref}) | "
          f"KID {kid['mean']:.4g} +- {kid['std']:.2g} ({kid['n_subsets']} subsets of {kid['subset_size']}) | "
          f"precision {pr['precision']:.3f} recall {pr['recall']:.3f} (k={pr['k']}, {pr['n_fake']} vs "
          f"{pr['n_real']}) -> {out}")
    return summary


# ------------------------------------------------------------------------------------------ sample

def add_sample(subparsers) -> None:
    p = subparsers.add_parser("sample", help="DDIM samples of a prompt: a PNG grid and an .npz", allow_abbrev=False)
    p.add_argument("--ckpt", required=True, help="a diffusion checkpoint (runs/<preset>/diffusion/last.pt)")
    p.add_argument("--custom", default=None, help="a customized checkpoint to load on top of --ckpt")
    p.add_argument("--prompt", required=True, help='e.g. "a photo of a star" or "a photo of a <new0>"')
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the checkpoint's config)")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", default="samples", help="output path without extension (.png and .npz are written)")
    p.set_defaults(run=run_sample)


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
    images = generate(model, diffusion, [args.prompt] * args.n, range(args.seed, args.seed + args.n),
                      cfg.data.resolution, steps, guidance, args.eta)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_suffix(".npz"), x=images.numpy())
    save_grid(images, out.with_suffix(".png"), nrow=8, scale=max(1, 64 // cfg.data.resolution))
    print(f"{args.n} samples of {args.prompt!r} (DDIM {steps} steps, eta {args.eta}, guidance {guidance}) -> "
          f"{out.with_suffix('.png')}, {out.with_suffix('.npz')}")
    return {"png": str(out.with_suffix(".png")), "npz": str(out.with_suffix(".npz"))}


# ------------------------------------------------------------------------------------------ classify

def add_classify(subparsers) -> None:
    p = subparsers.add_parser("classify", help="diffusion classifier accuracy: full grid vs adaptive",
                              allow_abbrev=False)
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--ckpt", default=None, help="diffusion checkpoint (default: the preset's base model)")
    p.add_argument("--out", default=None, help="JSON (default: <out_dir>/bench/classifier_<preset>.json)")
    p.set_defaults(run=run_classify)


def run_classify(args, overrides) -> dict:
    from core.training import setup, stage_dir
    from minidiff.open_world import benchmark_classifier

    cfg = make_config(args.preset, overrides)
    result = benchmark_classifier(cfg, args.ckpt or stage_dir(cfg, "diffusion") / "last.pt", setup(cfg))
    out = Path(args.out or Path(cfg.run.out_dir) / "bench" / f"classifier_{cfg.run.preset}.json")
    write_json(out, result)
    f, a = result["full"], result["adaptive"]
    print(f"diffusion classifier on {result['n_images']} test images: full grid {f['accuracy']:.1%} "
          f"({f['unet_passes_per_image']} UNet passes/image, {f['seconds']:.0f}s), adaptive {a['accuracy']:.1%} "
          f"({a['unet_passes_per_image']}, {a['seconds']:.0f}s): {result['pass_reduction']:.1f}x fewer passes, "
          f"{100 * result['accuracy_lost']:.1f} points of accuracy lost; tiny-CLIP zero-shot {result['clip_zero_shot_accuracy']:.1%}"
          f" -> {out}")
    return result


# ------------------------------------------------------------------------------------------ drift

def add_drift(subparsers) -> None:
    p = subparsers.add_parser("drift", help="semantic and appearance drift of a customized model",
                              allow_abbrev=False)
    p.add_argument("--custom", required=True, nargs="+", help="customized checkpoint(s) (custom.pt)")
    p.add_argument("--base", default=None, help="base diffusion checkpoint (default: the one each was made from)")
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)}")
    p.set_defaults(run=run_drift)


def run_drift(args, overrides) -> dict:
    from minidiff.open_world import drift_stage

    cfg = make_config(args.preset, overrides)
    return {path: drift_stage(cfg, path, args.base) for path in args.custom}


# ------------------------------------------------------------------------------------------ report

def add_report(subparsers) -> None:
    p = subparsers.add_parser("report", help="one self-contained HTML page of a preset's results",
                              allow_abbrev=False)
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--out", default=None, help="HTML file (default: runs/<preset>/report.html)")
    p.set_defaults(run=run_report)


def gan_section(cfg) -> str:
    from core.training import read_json
    from eval.report import results_section
    from minigan.transfer import GAN_HEADER, GAN_NOTE, gan_results, gan_rows

    run = Path(cfg.run.out_dir) / cfg.run.preset
    pretrain_json = run / "gan-pretrain" / "metrics.json"
    pretrain = read_json(pretrain_json) if pretrain_json.exists() else {}
    results = gan_results(cfg)
    intro = (f"A GAN pretrained unconditionally on {', '.join(cfg.data.source_classes)} becomes a conditional GAN of "
             f"{', '.join(cfg.data.target_classes)} from k = {cfg.data.k_per_target} images per class. ")
    if "fd_eval_vs_source" in pretrain:
        intro += (f"Pretraining: {pretrain['steps']} steps in {pretrain['train_seconds']:.0f} s, FD-eval vs the source "
                  f"test images {pretrain['fd_eval_vs_source']:.2f}.")
    images = [(run / "gan-pretrain" / "grid.png", "pretrained unconditional generator")]
    images += [(run / "gan-transfer" / r["run"] / "grid.png", f"{r['run']}: one row per target class") for r in results]
    return results_section("2. Hyper-modulated GAN transfer", intro, GAN_HEADER, gan_rows(results), GAN_NOTE, images)


def run_report(args, overrides) -> dict:
    from eval.report import diffusion_section, write_report

    cfg = make_config(args.preset, overrides)
    run = Path(cfg.run.out_dir) / cfg.run.preset
    out = write_report(run, Path(args.out or run / "report.html"), [diffusion_section(run), gan_section(cfg)])
    print(f"report -> {out}")
    return {"report": str(out)}


# ------------------------------------------------------------------------------------------ table

def add_table(subparsers) -> None:
    p = subparsers.add_parser("table", help="the results tables of a preset's run, as markdown", allow_abbrev=False)
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)}")
    p.set_defaults(run=run_table)


def run_table(args, overrides) -> dict:
    from eval.report import DRIFT_HEADER, drift_results, drift_rows, markdown_table

    cfg = make_config(args.preset, overrides)
    run = Path(cfg.run.out_dir) / cfg.run.preset
    from minigan.transfer import gan_results, gan_table

    text = "## Open-world forgetting\n\n" + markdown_table(DRIFT_HEADER, drift_rows(drift_results(run)))
    if gan_results(cfg):
        text += "\n\n## GAN transfer\n\n" + gan_table(cfg)
    print(text)
    return {"markdown": text}


# ------------------------------------------------------------------------------------------ main

SUBCOMMANDS = (add_fid, add_sample, add_classify, add_drift, add_report, add_table)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    args, overrides = parser.parse_known_args(argv)
    try:
        return args.run(args, overrides)
    except (ValueError, FileNotFoundError) as err:  # bad input: one clear line, no traceback
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
