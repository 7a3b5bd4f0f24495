"""Reading the attributes of a shapes image: the palette colour of the shape, the palette colour of
the background, and the background's texture (core/shapes.py draws them).

A classifier with the evaluator's architecture and three heads (8 colours, 8 background colours, 3
textures) trained on real shapes images, never on generated ones, so that it can tell whether a
generated image follows a prompt that names its colours ("a picture of a red star on a striped blue
background"), and whether a model drew a given seed with other attributes after customization. It is
trained once per data and evaluator setting and kept in the cache (core.cache); its test accuracy
per attribute comes with it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core import shapes
from core.cache import cache_root, cached
from core.config import Config
from core.data import load_split
from eval.evalnet import Evaluator, fit, predict_logits

ATTRIBUTES = {"colour": len(shapes.COLOURS), "background": len(shapes.COLOURS),
              "texture": len(shapes.TEXTURES)}


def split_logits(logits: torch.Tensor) -> list[torch.Tensor]:
    """(N, 19) -> [(N, 8) colour, (N, 8) background, (N, 3) texture] logits."""
    return list(logits.split(list(ATTRIBUTES.values()), dim=1))


def attribute_reader(cfg: Config, device="cpu") -> Evaluator:
    """The trained reader for cfg's shapes data (trained on first use, then from the cache),
    frozen."""
    if cfg.data.dataset != "shapes":
        raise ValueError("attributes are known only for the shapes dataset")
    d, ec = cfg.data, cfg.evalnet
    key = ["attribute-reader", d.resolution, d.seed, d.shapes_train_size, d.shapes_test_size,
           ec.__dict__, cfg.run.seed]
    state = cached(cache_root(cfg), "attribute-reader", key, lambda: _train(cfg, device))
    model = Evaluator(ec, sum(ATTRIBUTES.values()))
    model.load_state_dict(state["model"])
    model.test_accuracy = state["test_accuracy"]
    return model.to(device).eval().requires_grad_(False)


def _train(cfg: Config, device) -> dict:
    train = load_split(cfg.data, "train", cache_root(cfg))
    test = load_split(cfg.data, "test", cache_root(cfg))
    model = Evaluator(cfg.evalnet, sum(ATTRIBUTES.values())).to(device)
    targets = train.attrs.to(device)  # (N, 3): colour, background, texture

    def loss(logits, idx):
        return sum(F.cross_entropy(part, targets[idx, a])
                   for a, part in enumerate(split_logits(logits)))

    fit(model, train.x, loss, cfg.evalnet, cfg.run.seed, "attribute reader")
    accuracy = (read_attributes(model, test.x) == test.attrs).float().mean(dim=0)
    return {"model": {k: v.cpu() for k, v in model.state_dict().items()},
            "test_accuracy": dict(zip(ATTRIBUTES, accuracy.tolist()))}


def read_attributes(reader: Evaluator, images) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> predicted (colour, background, texture) indices, (N, 3)
    int64."""
    return torch.stack([part.argmax(dim=1)
                        for part in split_logits(predict_logits(reader, images))], dim=1)


def compliance(read: torch.Tensor, wanted: torch.Tensor) -> dict:
    """Share of images whose read attribute is the one their prompt asked for, per attribute and all
    three; read and wanted (N, 3)."""
    hit = read == wanted
    return {**{name: hit[:, a].double().mean().item() for a, name in enumerate(ATTRIBUTES)},
            "all": hit.all(dim=1).double().mean().item(), "n": len(read)}
