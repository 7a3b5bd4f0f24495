"""Sanity numbers for FD-eval on real data, to calibrate its scale: how far apart are two real sets,
and how far are real images from blurred images and from noise?

Every set has n images (n = the test split size, at most --n) and is compared with the same
reference: n random train images. Sets: another n disjoint train images (the sampling floor), the
test images, the test images box-blurred (3x3, 5x5), and Gaussian noise images with the test images'
per-channel mean and std. Also FD of the test images against the full train split (what
`evaluate.py fid` computes). Needs a trained evaluator for the preset
(`python train.py eval-net --preset P`, same overrides). Run from the repository root:

    python -m bench.fd_sanity --preset quick
    python -m bench.fd_sanity --preset cifar10 --run.out_dir=runs/cpu-cifar
        --evalnet.channels=16,32,64,128
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench.common import hardware, save
from core.cache import cache_root
from core.cli import make_config
from core.data import load_split, to_float, to_uint8
from core.training import pick_device
from eval.evalnet import describe_evaluator, extract_features, judge, load_evaluator
from eval.metrics import fd_from_features, kernel_inception_distance
from eval.reference import distances_to_reference


def box_blur(images, k: int):
    """uint8 (N, H, W, 3) -> each channel averaged over a k x k window (reflection at the
    borders)."""
    x = F.pad(to_float(images), [k // 2] * 4, mode="reflect")
    return to_uint8(F.avg_pool2d(x, k, stride=1))


def gaussian_noise_like(images, gen: torch.Generator):
    """uint8 noise images with the per-channel pixel mean and std of `images`, no spatial
    structure."""
    x = images.float()
    mean, std = x.mean(dim=(0, 1, 2)), x.std(dim=(0, 1, 2))
    return (torch.randn(x.shape, generator=gen) * std + mean).round().clamp(0, 255).to(torch.uint8)


def compare(evaluator, reference_features, images, labels=None, class_names=None) -> dict:
    """FD-eval and KID of one image set against the reference features; evaluator accuracy when
    labelled."""
    features = extract_features(evaluator, images)
    kid = kernel_inception_distance(features, reference_features)
    out = {"fd": fd_from_features(features, reference_features), "kid": kid["all"],
           "kid_std": kid["std"], "kid_subset_size": kid["subset_size"], "n": len(features),
           "n_reference": len(reference_features)}
    if labels is not None:
        out["evaluator_accuracy"] = judge(evaluator, images, labels, class_names)["accuracy"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--out", default=None, help="default: runs/bench/fd_sanity_<dataset>.json")
    parser.add_argument("--n", type=int, default=10_000,
                        help="images per set, at most the test split size")
    args, overrides = parser.parse_known_args()
    cfg = make_config(args.preset, overrides)
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    start = time.time()
    device = pick_device(cfg.run.device)
    evaluator = load_evaluator(cfg, device)
    info = describe_evaluator(cfg)
    train = load_split(cfg.data, "train", cache_root(cfg))
    test = load_split(cfg.data, "test", cache_root(cfg))
    gen = torch.Generator().manual_seed(cfg.run.seed)
    n = min(args.n, len(test), len(train) // 2)
    order = torch.randperm(len(train), generator=gen)
    reference, other = train.take(order[:n]), train.take(order[n:2 * n])
    test = test.take(torch.randperm(len(test), generator=gen)[:n])
    ref_features = extract_features(evaluator, reference.x)
    sets = {"train_disjoint": compare(evaluator, ref_features, other.x, other.y, train.classes),
            "test": compare(evaluator, ref_features, test.x, test.y, train.classes)}
    for k in (3, 5):
        sets[f"test_blur{k}x{k}"] = compare(evaluator, ref_features, box_blur(test.x, k), test.y,
                                            train.classes)
    sets["gaussian_noise"] = compare(evaluator, ref_features, gaussian_noise_like(test.x, gen))
    full = distances_to_reference(cfg, evaluator, test.x, "train")
    result = {
        "dataset": cfg.data.dataset, "resolution": cfg.data.resolution, "preset": cfg.run.preset,
        "evaluator": {**info, "note": f"evaluator trained on {info['trained_on']}, test accuracy "
                                      f"{info['test_accuracy']:.2%}"
                      if info["test_accuracy"] is not None else ""},
        "reference": f"{n} random {cfg.data.dataset} train images (seed {cfg.run.seed})",
        "sets": sets,
        "test_vs_full_train": {"fd": full["fd"], "kid": full["kid"]["all"],
                               "kid_std": full["kid"]["std"], "n": full["n_images"],
                               "n_reference": full["n_reference"]},
        "feature_dim": ref_features.shape[1], **hardware(device), "seconds": time.time() - start,
    }
    out = args.out or f"runs/bench/fd_sanity_{cfg.data.dataset}.json"
    save(out, result)
    for name, r in sets.items():
        print(f"{name:>16}: FD-eval {r['fd']:10.4f}  KID {r['kid']:8.4f} +- {r['kid_std']:.4f}  "
              f"(n={r['n']} vs {r['n_reference']})")
    print(f"{'test/full train':>16}: FD-eval {full['fd']:10.4f}  (n={full['n_images']} vs "
          f"{full['n_reference']})")
    print(f"{result['evaluator']['note']}; written to {out}")


if __name__ == "__main__":
    main()
