"""Run keys say what a result depends on: the data's content (not its folder's name), every field a
stage reads (the test subset, the data root's files), a concept folder's images only, and a model's
weights (not the clock or config its file also holds)."""
import numpy as np
import torch
from PIL import Image

from core import checkpoint
from core.cli import make_config
from core.data import data_digest
from core.user_images import folder_digest
from minidiff.measure_drift import MEASURED
from pipeline.runs import differences, run_key


def test_the_drift_floor_key_follows_the_test_subset(tmp_path):
    cfg = make_config("quick", [f"--run.out_dir={tmp_path}", "--data.shapes_train_size=50",
                                "--data.shapes_test_size=40"])
    base = tmp_path / "base.pt"
    checkpoint.save(base, {"kind": "diffusion", "w": torch.ones(2)})
    key = run_key(cfg, MEASURED + ("customize.seed",), base=base)
    other = run_key(cfg.updated("data", test_subset=20), MEASURED + ("customize.seed",), base=base)
    assert "inputs.data" in differences(key, other)[0]


def write_cifar(root, shift: int):
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 20), ("test", 10)):
        x = (np.arange(n * 32 * 32 * 3).reshape(n, 32, 32, 3) + shift).astype(np.uint8)
        np.savez(root / f"{split}.npz", x=x, y=np.arange(n) % 10)


def test_the_data_enter_the_keys_by_content(tmp_path):
    """Two roots with other images: other digests;
    the same images under another folder name: the same."""
    for name, shift in (("a", 0), ("b", 1), ("c", 0)):
        write_cifar(tmp_path / name, shift)
    digest = {name: data_digest(make_config("cifar10-cpu", [f"--data.root={tmp_path / name}"]).data)
              for name in "abc"}
    assert digest["a"] != digest["b"] and digest["a"] == digest["c"]


def test_a_concept_folders_digest_is_its_images_only(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    before = folder_digest(tmp_path)
    (tmp_path / ".DS_Store").write_bytes(b"whatever the desktop wrote")
    assert folder_digest(tmp_path) == before                 # a hidden file the loader skips
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(tmp_path / "0.png")
    assert folder_digest(tmp_path) != before                 # an image it reads


def test_a_models_fingerprint_is_its_weights(tmp_path):
    """A bit-identical retrain under another config and clock keeps its fingerprint;
    other weights do not."""
    weights = {"model": {"w": torch.arange(6.0)}, "step": 10, "vocab": ["a", "b"]}
    checkpoint.save(tmp_path / "a.pt",
                    {**weights, "config": {"lr": 1}, "train_seconds": 12.5, "kind": "x"})
    checkpoint.save(tmp_path / "b.pt",
                    {**weights, "config": {"lr": 2}, "train_seconds": 99.0, "kind": "x"})
    checkpoint.save(tmp_path / "c.pt",
                    {**weights, "model": {"w": torch.arange(6.0) + 1}, "kind": "x"})
    a, b, c = (checkpoint.fingerprint(tmp_path / f"{n}.pt") for n in "abc")
    assert a == b and a != c
    (tmp_path / "plain.txt").write_text("not a checkpoint")
    assert len(checkpoint.fingerprint(tmp_path / "plain.txt")) == 12  # any other file: its bytes
