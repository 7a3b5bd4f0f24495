"""Quality of generated images on the GAN side, judged by the project's evaluator network
(eval/evalnet.py, the offline stand-in for Inception). Every figure is per target class against that
class's real images of the *test* split (never the k training images), then averaged over classes;
sample counts are stated.

  * distribution: KID (unbiased at any sample count: the headline), FD-eval (biased upwards at small
    N, the more so the more diverse the samples, so it is computed at 1000 samples per class where
    the reference set allows), and FD-eval's floor: the same FD between two sets of real images of
    the class (held-out train images against test images, at the same N);
  * fidelity and coverage: precision and recall (Kynkaanniemi et al. 2019, k = 3), density and
    coverage (Naeem et al. 2020, k = 5);
  * recognition: evaluator accuracy on generated images, 10-way (argmax over every dataset class
    must be the requested class) and among the target classes, next to the same accuracy on the real
    test images (its ceiling); accuracy alone rewards a generator that draws a narrow slice of each
    class;
  * memorization: for each sample, the distance to its nearest training image of its class, next to
    the same distance for the class's real test images (new real data, never trained on), in
    evaluator features:
        nn_ratio   = median over samples / median over test images    (1: samples as far from the
                     training images as new real images are, the ideal; -> 0 as samples collapse
                     onto the training images; above 1: farther than real data, i.e. off the class's
                     manifold)
        copy_share = share of samples nearer a training image than 95% of the test images are
                     (5% for a generator that draws like new real data; -> 1 for copies)
  * validation: FD-eval against held-out *train* images of the class (never the k used, never the
    test split), the criterion learning rates are chosen on (bench/gan_lr_sweep.py), so that no
    choice is made on the test metric.
Samples come from fixed seeds, so every number is reproducible.
"""
from __future__ import annotations

import torch

from core.cache import cache_root
from core.config import Config
from core.data import class_names, load_split, to_uint8
from eval.evalnet import extract_features, judge, predict_logits
from eval.metrics import (density_coverage, fd_from_features, kernel_inception_distance,
                          precision_recall)

REFERENCE_SPLIT = "test"


def base_generator(G):
    """The plain Generator inside G (G itself, or the .base of a conditional wrapper)."""
    return getattr(G, "base", G)


@torch.no_grad()
def sample_images(G, n, labels=None, seed=0, batch_size=500) -> torch.Tensor:
    """n uint8 images (n, H, W, 3) from G with z and noise drawn from `seed`; labels (n,) for a
    conditional G. Runs in eval mode and restores G's mode."""
    base = base_generator(G)
    device = base.const.device
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = G.training
    G.eval()
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        z = torch.randn(b, base.z_dim, generator=gen, device=device)
        noise = base.make_noise(b, generator=gen)
        if labels is None:
            x = G(z, noise=noise)
        else:
            x = G(z, labels[start:start + b].to(device), noise=noise)
        out.append(to_uint8(x.float()))
    G.train(was_training)
    return torch.cat(out)


def real_images(cfg: Config, classes, split=REFERENCE_SPLIT):
    return load_split(cfg.data, split, cache_root(cfg)).only(classes)


def set_distance(fake_feats, real_feats) -> dict:
    """FD-eval and KID between two feature sets, with their sizes (KID on all samples, and its
    spread over 50 subsets of half the smaller set)."""
    kid = kernel_inception_distance(fake_feats, real_feats, subset_size=1000, n_subsets=50)
    return {"fd_eval": fd_from_features(fake_feats, real_feats), "kid": kid["all"],
            "kid_std": kid["std"], "kid_subset": kid["subset_size"], "n_fake": len(fake_feats),
            "n_real": len(real_feats)}


def pretrain_quality(cfg: Config, evaluator, G) -> dict:
    """FD-eval / KID of the unconditional generator against the source classes' test images, and the
    share of its samples that the evaluator assigns to some source class."""
    names = class_names(cfg.data)
    real = real_images(cfg, cfg.data.source_classes)
    fake = sample_images(G, cfg.gan.eval_samples, seed=cfg.run.seed + 1)
    dist = set_distance(extract_features(evaluator, fake), extract_features(evaluator, real.x))
    source = torch.tensor([names.index(c) for c in cfg.data.source_classes])
    rate = torch.isin(predict_logits(evaluator, fake).argmax(1), source).float().mean().item()
    return {"fd_eval_vs_source": dist["fd_eval"], "kid_vs_source": dist["kid"],
            "kid_std": dist["kid_std"], "n_fake": dist["n_fake"], "n_real": dist["n_real"],
            "reference": f"{REFERENCE_SPLIT} split", "recognised_as_a_source_class": rate}


def nearest_distance(queries, references) -> torch.Tensor:
    """Euclidean distance from each query (Q, D) to its nearest reference (R, D) -> (Q,),
    float64."""
    return torch.cdist(queries.double(), references.double()).min(dim=1).values


def memorization(fake_f, test_f, train_f) -> dict:
    """nn_ratio and copy_share (module docstring) of one class: features of its samples, test images
    and training images."""
    fake_nn, test_nn = nearest_distance(fake_f, train_f), nearest_distance(test_f, train_f)
    return {"nn_ratio": (fake_nn.median() / test_nn.median()).item(),
            "copy_share": (fake_nn < test_nn.quantile(0.05)).double().mean().item()}


def held_out_train(cfg: Config, classes, n: int):
    """Train images of each class that transfer never sees: the n after the first k (which it trains
    on)."""
    train = load_split(cfg.data, "train", cache_root(cfg)).only(classes)
    k = cfg.data.k_per_target
    index = torch.cat([torch.nonzero(train.y == c).flatten()[k:k + n] for c in train.y.unique()])
    return train.take(index)


def transfer_quality(cfg: Config, evaluator, G, train, seed: int) -> dict:
    """The module docstring's figures on transfer.eval_samples images per class drawn from `seed`
    (G's labels index cfg.data.target_classes); train: the ImageSet G was trained on."""
    names, targets = class_names(cfg.data), cfg.data.target_classes
    n = cfg.transfer.eval_samples
    local = torch.arange(len(targets)).repeat_interleave(n)                      # (C * n,) 0..C-1
    fake = sample_images(G, len(local), local, seed=seed)
    global_labels = torch.tensor([names.index(c) for c in targets])[local]
    real, val = real_images(cfg, targets), held_out_train(cfg, targets, n)
    fake_f, real_f, val_f, train_f = (extract_features(evaluator, x)
                                      for x in (fake, real.x, val.x, train.x))
    per_class = {}
    for i, c in enumerate(targets):
        label = names.index(c)
        fake_c, real_c, val_c = fake_f[local == i], real_f[real.y == label], val_f[val.y == label]
        per_class[c] = {**set_distance(fake_c, real_c), **precision_recall(real_c, fake_c, k=3),
                        **density_coverage(real_c, fake_c, k=5),
                        **memorization(fake_c, real_c, train_f[train.y == label]),
                        "fd_eval_validation": fd_from_features(fake_c, val_c),
                        "fd_eval_floor": fd_from_features(val_c, real_c),
                        "n_validation": len(val_c)}
    mean = lambda key: sum(d[key] for d in per_class.values()) / len(targets)
    judged = judge(evaluator, fake, global_labels, names)
    among = [names.index(c) for c in targets]
    real_local = torch.tensor([among.index(int(y)) for y in real.y])
    return {
        "reference": f"{REFERENCE_SPLIT} split images of the target classes",
        "accuracy": judged["accuracy"],
        "accuracy_among_targets":
            (predict_logits(evaluator, fake)[:, among].argmax(1) == local).float().mean().item(),
        "real_accuracy_among_targets":
            (predict_logits(evaluator, real.x)[:, among].argmax(1) == real_local)
            .float().mean().item(),
        "mean_confidence": judged["mean_confidence"], "per_class_accuracy": judged["per_class"],
        **{key: mean(key) for key in ("kid", "kid_std", "fd_eval", "fd_eval_floor",
                                      "fd_eval_validation", "precision", "recall", "density",
                                      "coverage", "nn_ratio", "copy_share")},
        "overall": set_distance(fake_f, real_f), "per_class": per_class,
        "samples_per_class": n, "real_per_class": min(d["n_real"] for d in per_class.values()),
    }
