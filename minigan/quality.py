"""Quality of generated images on the GAN side, judged by the project's evaluator network (eval/evalnet.py,
the offline stand-in for Inception).

  * quality per class and overall: FD-eval (Frechet distance of evaluator features) and KID against the
    real images of the *test* split (never the k training images), with every sample count stated;
  * recognition: evaluator accuracy on generated images, 10-way (argmax over every dataset class must be
    the requested class) and restricted to the target classes (argmax among them);
  * coverage: precision and recall (Kynkaanniemi et al. 2019, k = 3) of each class's samples against that
    class's test images, in evaluator features;
  * memorization: with k training images per class, recognisability and FD reward a generator that copies
    them. For each sample, the distance to its nearest training image of its class, next to the same
    distance for the class's real test images (new real data, never trained on), in evaluator features:
        nn_ratio   = median over samples / median over test images    (1: as novel as new real images;
                     -> 0 as samples collapse onto the training images)
        copy_share = share of samples nearer a training image than 95% of the test images are
                     (5% for a generator that draws like new real data; -> 1 for copies)
Samples come from fixed seeds, so every number is reproducible.
"""
from __future__ import annotations

import torch

from core.cache import cache_root
from core.config import Config
from core.data import class_names, load_split, to_uint8
from eval.evalnet import extract_features, judge, predict_logits
from eval.metrics import fd_from_features, kernel_inception_distance, precision_recall

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
    """FD-eval and KID between two feature sets, with their sizes."""
    kid = kernel_inception_distance(fake_feats, real_feats, subset_size=1000, n_subsets=50)
    return {"fd_eval": fd_from_features(fake_feats, real_feats), "kid": kid["mean"], "kid_std": kid["std"],
            "n_fake": len(fake_feats), "n_real": len(real_feats)}


def pretrain_quality(cfg: Config, evaluator, G) -> dict:
    """FD-eval / KID of the unconditional generator against the source classes' test images, and the
    share of its samples that the evaluator assigns to some source class."""
    names = class_names(cfg.data)
    real = real_images(cfg, cfg.data.source_classes)
    fake = sample_images(G, cfg.gan.eval_samples, seed=cfg.run.seed + 1)
    dist = set_distance(extract_features(evaluator, fake), extract_features(evaluator, real.x))
    source = torch.tensor([names.index(c) for c in cfg.data.source_classes])
    rate = torch.isin(predict_logits(evaluator, fake).argmax(1), source).float().mean().item()
    return {"fd_eval_vs_source": dist["fd_eval"], "kid_vs_source": dist["kid"], "kid_std": dist["kid_std"],
            "n_fake": dist["n_fake"], "n_real": dist["n_real"], "reference": f"{REFERENCE_SPLIT} split",
            "recognised_as_a_source_class": rate}


def nearest_distance(queries, references) -> torch.Tensor:
    """Euclidean distance from each query (Q, D) to its nearest reference (R, D) -> (Q,), float64."""
    return torch.cdist(queries.double(), references.double()).min(dim=1).values


def memorization(fake_f, test_f, train_f) -> dict:
    """nn_ratio and copy_share (module docstring) of one class: features of its samples, test images and
    training images."""
    fake_nn, test_nn = nearest_distance(fake_f, train_f), nearest_distance(test_f, train_f)
    return {"nn_ratio": (fake_nn.median() / test_nn.median()).item(),
            "copy_share": (fake_nn < test_nn.quantile(0.05)).double().mean().item()}


def transfer_quality(cfg: Config, evaluator, G, train, seed: int) -> dict:
    """Per-class and overall FD-eval / KID, precision / recall and memorization against the target classes'
    test images, and evaluator accuracy, on transfer.eval_samples images per class drawn from `seed` (G's
    labels index cfg.data.target_classes); train: the ImageSet G was trained on."""
    names, targets = class_names(cfg.data), cfg.data.target_classes
    n = cfg.transfer.eval_samples
    local = torch.arange(len(targets)).repeat_interleave(n)                      # (C * n,) 0..C-1
    fake = sample_images(G, len(local), local, seed=seed)
    global_labels = torch.tensor([names.index(c) for c in targets])[local]
    real = real_images(cfg, targets)
    fake_f, real_f = extract_features(evaluator, fake), extract_features(evaluator, real.x)
    train_f = extract_features(evaluator, train.x)
    per_class = {}
    for i, c in enumerate(targets):
        fake_c, real_c = fake_f[local == i], real_f[real.y == names.index(c)]
        per_class[c] = {**set_distance(fake_c, real_c), **precision_recall(real_c, fake_c, k=3),
                        **memorization(fake_c, real_c, train_f[train.y == names.index(c)])}
    mean = lambda key: sum(d[key] for d in per_class.values()) / len(targets)
    judged = judge(evaluator, fake, global_labels, names)
    target_logits = predict_logits(evaluator, fake)[:, [names.index(c) for c in targets]]
    real_judged = judge(evaluator, real.x, real.y, names)
    return {
        "reference": f"{REFERENCE_SPLIT} split images of the target classes",
        "accuracy": judged["accuracy"],
        "accuracy_among_targets": (target_logits.argmax(1) == local).float().mean().item(),
        "mean_confidence": judged["mean_confidence"], "per_class_accuracy": judged["per_class"],
        "evaluator_accuracy_on_real_targets": real_judged["accuracy"],
        "fd_eval_intra": mean("fd_eval"), "kid_intra": mean("kid"), "precision": mean("precision"),
        "recall": mean("recall"), "nn_ratio": mean("nn_ratio"), "copy_share": mean("copy_share"),
        "overall": set_distance(fake_f, real_f), "per_class": per_class,
        "samples_per_class": n,
    }
