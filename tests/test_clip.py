"""Tiny CLIP: InfoNCE against a hand computation, encoder shapes, placeholder override, and
learning."""
import math

import torch

from core.cli import make_config
from core.data import base_classes, load_split, to_float
from minidiff.clip import TinyClip, clip_loss
from core.captions import random_captions
from minidiff.train_clip import build_tokenizer, zero_shot_accuracy


def test_infonce_matches_hand_computation():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cosines: [[1, 1/sqrt2], [0, 1/sqrt2]]
    scale = torch.tensor(math.log(2.0))           # logits = 2 * cos
    c = 1 / math.sqrt(2)
    e2, e2c = math.exp(2), math.exp(2 * c)
    # rows: image -> every caption
    l_i2t = -(math.log(e2 / (e2 + e2c)) + math.log(e2c / (1 + e2c)))
    # columns: caption -> every image
    l_t2i = -(math.log(e2 / (e2 + 1)) + math.log(e2c / (e2c + e2c)))
    expected = 0.5 * (l_i2t / 2 + l_t2i / 2)
    assert abs(clip_loss(img, txt, scale).item() - expected) < 1e-6


def test_duplicate_captions_are_positives_not_negatives():
    img = torch.randn(4, 8)
    txt = torch.cat([img[:2], img[:2]])  # rows 0/2 and 1/3 are the same caption
    ids = torch.tensor([0, 1, 0, 1])
    scale = torch.tensor(math.log(100.0))
    # uniform target over the two copies: loss equals log 2 when both copies score identically and
    # dominate
    assert (abs(clip_loss(torch.cat([img[:2], img[:2]]), txt, scale, ids).item() - math.log(2))
            < 1e-3)
    assert clip_loss(torch.cat([img[:2], img[:2]]), txt, scale).item() > clip_loss(
        torch.cat([img[:2], img[:2]]), txt, scale, ids).item() - 1e-6


def test_encode_text_shapes_and_placeholder_override():
    cfg = make_config()
    tok = build_tokenizer(cfg)
    clip = TinyClip(len(tok), cfg.clip).eval()
    tokens = tok(["a photo of a <new0>", "a photo of a star", ""])
    states, pooled = clip.encode_text(tokens)
    assert (states.shape == (3, cfg.clip.context_length, cfg.clip.width)
            and pooled.shape == (3, cfg.clip.embed_dim))
    vec = torch.randn(cfg.clip.width)
    states2, _ = clip.encode_text(tokens, {tok.placeholder_id("<new0>"): vec})
    assert not torch.allclose(states2[0], states[0])  # the prompt with the placeholder changes
    assert torch.equal(states2[1:], states[1:])             # the others do not


def test_tiny_clip_learns_shapes_in_seconds(tmp_path):
    cfg = make_config("quick", [f"--run.out_dir={tmp_path}", "--data.shapes_train_size=1800",
                                "--data.shapes_test_size=450", "--clip.attribute_prob=0.2"])
    classes = base_classes(cfg.data)
    train = load_split(cfg.data, "train").only(classes)
    test = load_split(cfg.data, "test").only(classes)
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    clip = TinyClip(len(tok), cfg.clip)
    opt = torch.optim.AdamW(clip.parameters(), lr=2e-3)
    rng = __import__("numpy").random.default_rng(0)
    x = to_float(train.x)
    for step in range(150):
        idx = torch.randint(len(train), (64,))
        tokens = tok(random_captions("shapes", train.classes, train.y[idx], train.attrs[idx], rng,
                                     0.2))
        loss = clip(x[idx], tokens, torch.unique(tokens, dim=0, return_inverse=True)[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clip.eval()
    labels = torch.tensor([classes.index(train.classes[int(y)]) for y in test.y])
    acc = zero_shot_accuracy(clip, tok, to_float(test.x), labels, classes, "shapes")["accuracy"]
    assert acc > 0.5, acc  # chance is 1/9
