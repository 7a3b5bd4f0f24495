"""The evaluator: a small, fast ResNet classifier trained on real images of every class of the
dataset.

It is the project's offline stand-in for Inception-v3: its penultimate features (after global
average pooling) give FD-eval, KID and precision/recall (eval.metrics, eval.reference), its first
stage's feature maps give Gram-matrix texture distances (eval.colour), and its predictions judge
generated images ("does an image generated for class c look like a c?"). It is trained only on real
training images, never on generated ones, so it is an independent judge of the generators.

Architecture, after ResNet-9 (Page 2018, "How to train your ResNet", the DAWNBench CIFAR-10 entry):

    stem:   conv3x3(3 -> c0) - BN - ReLU                                 (H, W)
    stage:  conv3x3(c_in -> c) - maxpool 2 - BN - ReLU - residual block(s) (H/2^k, W/2^k)
    head:   global average pool -> features (B, c_last) -> linear -> logits

with residual block x + relu(bn(conv(relu(bn(conv(x)))))). `python train.py eval-net` calls
`train_evaluator(cfg)`, which writes runs/<preset>/eval-net/{evaluator.pt, metrics.json}.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from core import checkpoint
from core.cache import cache_root
from core.config import Config, EvalNetConfig
from core.errors import ConfigError
from core.data import class_names, load_split, to_float
from core.files import read_json
from core.training import (FUSED, autocast, check_finite, count_parameters, flip_and_shift, setup,
                           warmup_cosine, weight_decay_groups)
from pipeline.runs import require_finished, run_key, run_once, stage_dir


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    """conv3x3 -> [maxpool 2] -> BatchNorm -> ReLU (pooling before BN: same result, 4x less BN
    work)."""
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + f(x) with f two conv-BN-ReLU layers (the ResNet-9 residual block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class Evaluator(nn.Module):
    """ResNet-9-style classifier of (B, 3, H, W) images in [-1, 1] (core.data.to_float).

    cfg.channels = (c0, c1, ..., cK): a stem of c0 channels at full resolution, then K stages that
    each halve the resolution. No input normalisation is needed: the stem convolution has no bias
    and is followed by BatchNorm, so the [-1, 1] scale and any colour offset are absorbed there.
    `checkpoint_hash` is set when the weights come from a file (load_evaluator); reference
    statistics are cached under it.
    """

    def __init__(self, cfg: EvalNetConfig, n_classes: int):
        super().__init__()
        if len(cfg.channels) < 2:
            raise ValueError("evalnet.channels needs a stem and at least one stage, got "
                             f"{cfg.channels}")
        c = cfg.channels
        self.stem = conv_bn(3, c[0])
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn(c_in, c_out, pool=True),
                          *[Residual(c_out) for _ in range(cfg.blocks_per_stage)])
            for c_in, c_out in zip(c[:-1], c[1:]))
        self.head = nn.Linear(c[-1], n_classes)
        self.checkpoint_hash: str | None = None

    def early_features(self, x):
        """Output of the first stage: (B, 3, H, W) -> (B, c1, H/2, W/2), for Gram-matrix texture
        distances."""
        return self.stages[0](self.stem(x))

    def features(self, x):
        """Penultimate features, after global average pooling: (B, 3, H, W) -> (B, c_last)."""
        h = self.early_features(x)
        for stage in self.stages[1:]:
            h = stage(h)
        return h.mean(dim=(2, 3))  # (B, C, h, w) -> (B, C)

    def forward(self, x):
        """(B, 3, H, W) -> logits (B, n_classes)."""
        return self.head(self.features(x))


# -------------------------------------------------------------------------------------- checkpoints

def evaluator_path(cfg: Config) -> Path:
    """The finished evaluator of cfg's preset, runs/<preset>/eval-net/evaluator.pt, or an error
    saying how to train it."""
    return require_finished(stage_dir(cfg, "eval-net"), "evaluator.pt",
                            f"python train.py eval-net --preset {cfg.run.preset}")


def load_evaluator(cfg: Config, device="cpu") -> Evaluator:
    """The trained evaluator of cfg's preset, in eval mode and frozen (requires_grad False)."""
    path = evaluator_path(cfg)
    payload = checkpoint.load(path, kind="evaluator")
    checkpoint.check_arch(payload, {"data": cfg.data, "evalnet": cfg.evalnet}, str(path))
    model = Evaluator(cfg.evalnet, len(class_names(cfg.data)))
    model.load_state_dict(payload["model"])
    model.checkpoint_hash = checkpoint.fingerprint(path)
    return model.to(device).eval().requires_grad_(False)


def describe_evaluator(cfg: Config) -> dict:
    """Which evaluator a number came from: checkpoint path and hash, and (from its metrics.json) the
    test accuracy, device and training time it had."""
    path = evaluator_path(cfg)
    metrics = read_json(path.with_name("metrics.json"))
    return {"path": str(path), "hash": checkpoint.fingerprint(path),
            "test_accuracy": metrics.get("test_accuracy"), "n_test": metrics.get("n_test"),
            "trained_on": metrics.get("device"), "train_seconds": metrics.get("train_seconds")}


# ---------------------------------------------------------------------------------------- inference

def _check_images(images) -> torch.Tensor:
    """uint8 (N, H, W, 3), numpy or torch -> torch uint8 tensor; anything else is refused, not
    guessed at."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError("expected uint8 images of shape (N, H, W, 3), got "
                         f"{getattr(x, 'dtype', type(x))} {shape}")
    return x


@torch.no_grad()
def _batched(model: nn.Module, method: str, images, batch_size: int) -> torch.Tensor:
    """model.<method> on float [-1, 1] batches of uint8 images, on the model's device; float32 on
    the CPU."""
    x = _check_images(images)
    device = next(model.parameters()).device
    starts = range(0, len(x), batch_size)
    out = [getattr(model, method)(to_float(x[s:s + batch_size].to(device))).float().cpu()
           for s in tqdm(starts, desc=method, leave=False, disable=len(starts) < 20)]
    return torch.cat(out) if out else torch.empty(0)


def predict_logits(evaluator: Evaluator, images, batch_size: int = 500) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> logits (N, n_classes), float32 on the CPU."""
    return _batched(evaluator, "forward", images, batch_size)


def extract_features(evaluator: Evaluator, images, batch_size: int = 500) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> penultimate features (N, F), float32 on the CPU.

    Works with any module that has a `features(x)` method taking [-1, 1] images (e.g.
    eval.inception).
    """
    return _batched(evaluator, "features", images, batch_size)


def extract_early_features(evaluator: Evaluator, images, batch_size: int = 500) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> first-stage feature maps (N, C, H/2, W/2): texture statistics
    (Gram)."""
    return _batched(evaluator, "early_features", images, batch_size)


def judge(evaluator: Evaluator, images, labels, class_names) -> dict:
    """How well images are recognised as the classes they were meant to show.

    labels (N,) index the full class list `class_names`; prediction is the argmax over all classes.
    accuracy = share with argmax == label; mean_confidence = mean softmax probability of the label;
    per_class = accuracy among the images of each class present. Returns those and n (the image
    count).
    """
    labels = torch.as_tensor(labels).long().flatten()
    logits = predict_logits(evaluator, images)
    if len(labels) != len(logits):
        raise ValueError(f"{len(logits)} images but {len(labels)} labels")
    correct = (logits.argmax(1) == labels).float()
    confidence = logits.softmax(1).gather(1, labels[:, None]).squeeze(1)
    per_class = {class_names[int(c)]: correct[labels == c].mean().item() for c in labels.unique()}
    return {"accuracy": correct.mean().item(), "mean_confidence": confidence.mean().item(),
            "per_class": per_class, "n": len(labels)}


# ----------------------------------------------------------------------------------------- training

def _optimizer(model: nn.Module, cfg: EvalNetConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on conv/linear weights only (not BN or biases)."""
    return torch.optim.SGD(weight_decay_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=0.9,
                           nesterov=True, **FUSED)


def train_evaluator(cfg: Config, force: bool = False) -> dict:
    """Train (or, if finished before with the same settings, skip) the evaluator; returns its
    metrics."""
    def work(run):
        model, metrics = _train(cfg, setup(cfg))
        run.save_checkpoint(run.folder / "evaluator.pt",
                            {"kind": "evaluator", "config": cfg.to_dict(),
                             "step": metrics["steps"], "model": model.state_dict(),
                             "test_accuracy": metrics["test_accuracy"]})
        return metrics
    return run_once(stage_dir(cfg, "eval-net"), run_key(cfg, ("evalnet",)), force, "eval-net", work)


def fit(model: nn.Module, images: torch.Tensor, loss_fn, ec: EvalNetConfig, seed: int,
        name: str) -> float:
    """The evaluator's training loop, for any targets: SGD + Nesterov with warm-up then cosine
    learning rate, flips and shifts, ec.epochs over the uint8 images (N, H, W, 3);
    loss_fn(logits, index) is the loss of a batch of images[index]. Returns the last loss."""
    device = next(model.parameters()).device
    if len(images) < ec.batch_size:
        raise ConfigError(f"evalnet.batch_size={ec.batch_size} is larger than the train split "
                          f"({len(images)} images)")
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model.to(memory_format=memory_format)
    opt = _optimizer(model, ec)
    x_train = images.to(device)
    gen = torch.Generator().manual_seed(seed)
    # drop the last partial batch: BN wants full batches
    steps_per_epoch = len(images) // ec.batch_size
    total = ec.epochs * steps_per_epoch
    warmup = round(ec.warmup_epochs * steps_per_epoch)
    bar = tqdm(range(total), desc=name)
    model.train()
    for step in bar:
        if step % steps_per_epoch == 0:
            order = torch.randperm(len(images), generator=gen).to(device)
        idx = order[(step % steps_per_epoch) * ec.batch_size:][:ec.batch_size]
        for group in opt.param_groups:
            group["lr"] = ec.lr * warmup_cosine(step, total, warmup, final_fraction=0.0)
        x = flip_and_shift(to_float(x_train[idx]), ec.max_shift,
                           gen).contiguous(memory_format=memory_format)
        with autocast(device):
            loss = loss_fn(model(x), idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == total - 1:  # reading the loss syncs the GPU: not every step
            check_finite(loss, name, step)
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=step // steps_per_epoch)
    model.eval()
    return loss.item()


def _train(cfg: Config, device) -> tuple[Evaluator, dict]:
    """Train on every class of the train split (label smoothing) and report the test accuracy,
    overall and per class."""
    ec = cfg.evalnet
    train = load_split(cfg.data, "train", cache_root(cfg))
    test = load_split(cfg.data, "test", cache_root(cfg))
    model = Evaluator(ec, len(train.classes)).to(device)
    labels = train.y.to(device)
    start = time.time()
    final_loss = fit(model, train.x,
                     lambda logits, idx: F.cross_entropy(logits, labels[idx],
                                                         label_smoothing=ec.label_smoothing),
                     ec, cfg.run.seed, "eval-net")
    train_seconds = time.time() - start
    result = judge(model, test.x, test.y, test.classes)
    parameters = count_parameters(model.parameters())
    summary = (f"test accuracy {result['accuracy']:.2%} on {result['n']} {cfg.data.dataset} test "
               f"images ({parameters / 1e6:.2f}M params, {ec.epochs} epochs, {train_seconds:.0f}s "
               f"on {device})")
    print(f"eval-net: {summary}")
    return model, {"stage": "eval-net", "summary": summary, "dataset": cfg.data.dataset,
                   "resolution": cfg.data.resolution, "test_accuracy": result["accuracy"],
                   "test_per_class": result["per_class"],
                   "test_mean_confidence": result["mean_confidence"], "n_test": result["n"],
                   "n_train": len(train), "epochs": ec.epochs,
                   "steps": ec.epochs * (len(train) // ec.batch_size),
                   "train_seconds": train_seconds, "device": str(device),
                   "torch_threads": torch.get_num_threads(), "parameters": parameters,
                   "final_loss": final_loss}
