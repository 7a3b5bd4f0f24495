"""Shapes determinism and balance, caption grammar, CIFAR loading from .npz (and refusing broken
files), class splits."""
import numpy as np
import pytest
import torch

from core import captions, shapes
from core.cli import make_config
from core.data import ImageSet, base_classes, load_split, to_float, to_uint8
from core.errors import ConfigError, DataError


def test_shapes_are_a_pure_function_of_seed_split_index():
    a = shapes.render(shapes.sample_attributes(3, "train", 17), 16)
    b = shapes.render(shapes.sample_attributes(3, "train", 17), 16)
    c = shapes.render(shapes.sample_attributes(3, "test", 17), 16)
    assert a.dtype == np.uint8 and a.shape == (16, 16, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_any_resolution_and_balanced_classes():
    x, y, attrs = shapes.render_split(0, "train", 50, 24)
    assert x.shape == (50, 24, 24, 3)
    assert np.bincount(y, minlength=10).tolist() == [5] * 10
    assert (attrs[:, 0] != attrs[:, 1]).all()  # shape colour never equals background colour


def test_shape_classes_differ_in_their_masks():
    """Same attributes but the class: every pair of classes draws a different image."""
    base = shapes.sample_attributes(0, "train", 0)
    imgs = [shapes.render(shapes.ShapeAttributes(**{**base.__dict__, "label": k}), 32)
            for k in range(10)]
    for i in range(10):
        for j in range(i + 1, 10):
            difference = np.abs(imgs[i].astype(int) - imgs[j].astype(int)).sum()
            assert difference > 1000, (shapes.CLASSES[i], shapes.CLASSES[j])


def test_load_split_caches_and_reloads_identically(tiny_cfg, tmp_path):
    first = load_split(tiny_cfg.data, "test", tmp_path)
    assert len(list(tmp_path.glob("shapes/*.pt"))) == 1
    again = load_split(tiny_cfg.data, "test", tmp_path)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert len(first) == tiny_cfg.data.shapes_test_size


def test_image_set_selection(tiny_cfg):
    data = load_split(tiny_cfg.data, "test")
    sub = data.only(["star", "ring"])
    assert set(sub.y.tolist()) == {shapes.CLASSES.index("star"), shapes.CLASSES.index("ring")}
    few = data.per_class(3)
    assert np.bincount(few.y.numpy(), minlength=10).tolist() == [3] * 10


def test_uint8_float_round_trip():
    x = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    f = to_float(x)
    assert f.shape == (4, 3, 8, 8) and f.min() >= -1 and f.max() <= 1
    assert torch.equal(to_uint8(f), x)


def test_attribute_captions():
    red, blue = list(shapes.COLOURS).index("red"), list(shapes.COLOURS).index("blue")
    striped = shapes.TEXTURES.index("striped")
    assert captions.attribute_caption("a photo of a {}", "star", red, blue, striped) == \
        "a photo of a red star on a striped blue background"
    assert (captions.attribute_caption("a photo of a {}", "star", None, None, None)
            == "a photo of a star")
    rng = np.random.default_rng(0)
    every = {captions.random_caption("shapes", "star", (red, blue, striped), rng, 0.5)
             for _ in range(200)}
    assert "a photo of a star" in every and any("red star on a striped blue" in c for c in every)


def test_splits_hold_out_the_concept_and_reject_bad_names():
    cfg = make_config()
    assert cfg.data.concept_class not in base_classes(cfg.data) and len(base_classes(cfg.data)) == 9
    with pytest.raises(ConfigError, match="unknown classes"):
        make_config("quick", ["--data.concept_class=dragon"])
    with pytest.raises(ConfigError, match="overlap"):
        make_config("quick", ["--data.target_classes=circle"])


def test_cifar_from_npz_folder(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    y = np.arange(20) % 10
    np.savez(tmp_path / "test.npz", x=x, y=y)
    cfg = make_config("cifar10", [f"--data.root={tmp_path}"])
    data = load_split(cfg.data, "test")
    assert (isinstance(data, ImageSet) and data.x.shape == (20, 32, 32, 3)
            and data.classes[3] == "cat")
    small = load_split(make_config("cifar10",
                                   [f"--data.root={tmp_path}", "--data.resolution=16"]).data,
                       "test")
    assert small.x.shape == (20, 16, 16, 3)
    np.savez(tmp_path / "train.npz", x=x[:, :16], y=y)
    with pytest.raises(DataError, match="expected x uint8"):
        load_split(cfg.data, "train")


def test_cifar_labels_outside_the_classes_are_refused(tmp_path):
    """An npz whose labels go past the 10 classes would silently drop images from every per-class
    split."""
    x = np.zeros((20, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "test.npz", x=x, y=np.arange(20) * 3)
    cfg = make_config("cifar10", [f"--data.root={tmp_path}"])
    with pytest.raises(DataError, match=r"test.npz: \d+ labels outside 0..9"):
        load_split(cfg.data, "test")


def test_truncated_cifar_file_names_the_file(tmp_path):
    np.savez(tmp_path / "test.npz", x=np.zeros((20, 32, 32, 3), dtype=np.uint8),
             y=np.arange(20) % 10)
    data = (tmp_path / "test.npz").read_bytes()
    (tmp_path / "test.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match="test.npz is not a readable CIFAR-10 file"):
        load_split(make_config("cifar10", [f"--data.root={tmp_path}"]).data, "test")


def test_missing_cifar_folder_says_where_data_comes_from(tmp_path, monkeypatch):
    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "CIFAR10",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(DataError, match="--data.root=DIR"):
        load_split(make_config("cifar10", [f"--data.root={tmp_path / 'none'}"]).data, "test")
